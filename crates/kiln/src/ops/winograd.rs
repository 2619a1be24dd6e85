//! Winograd's minimal filtering F(4×4, 3×3) for 3×3 convolutions with stride 1 and no
//! dilation: each 4×4 block ("tile") of output pixels is computed from the 6×6 input patch
//! under it with 36 multiplies per channel pair instead of 144.
//!
//! With `d` a 6×6 input patch and `g` a 3×3 kernel slice, the tile is `Aᵀ [(G g Gᵀ) ⊙
//! (Bᵀ d B)] A` (Lavin & Gray, 2015). Summed over channels, the elementwise product at each
//! of the 36 points ξ becomes a matrix product: `M_ξ (tiles × F) = V_ξ (tiles × C) · U_ξ
//! (C × F)`, 36 products of the tuned `gemm` kernel in place of one im2col product with 4×
//! the multiplies (3.4× for MNIST's 11×11 output, whose tiles overhang by a row and column).
//! F(2×2, 3×3) (16 points, 2.25× fewer multiplies) was tried first: F(4×4) made MNIST CNN's
//! second layer 17% faster again (`kiln-bench conv`), and its fp32 error stays within the
//! tests' tolerance against the definition computed in f64.
//!
//! Backward is the exact adjoint of that computation, so the gradients are those of what
//! forward computed: `dM = A dY Aᵀ` per tile, `dU_ξ = V_ξᵀ dM_ξ` (summed over blocks, then
//! `dkernel = Gᵀ dU G`), `dV_ξ = dM_ξ U_ξᵀ` and `dx += B dV Bᵀ`, added back patch by patch
//! (neighbouring patches overlap by two pixels).
//!
//! The transforms run 16 channels (or filters) at a time through fixed-size lanes, so they
//! compile to vector arithmetic; the transformed matrices of a block of images stay in
//! cache between the transforms and the products, as im2col's matrix does.

use super::conv2d::Window;
use super::matmul::{gemm_single_thread, MatRef};

/// Output pixels along each side of a tile.
const OUT: usize = 4;

/// Input pixels along each side of a tile's patch: OUT + 3 − 1.
const IN: usize = 6;

/// Points of a transformed 6×6 patch.
pub(super) const POINTS: usize = IN * IN;

/// The fewest input channels worth it: each of the 36 products has depth C, and below this
/// their fixed costs outweigh the multiplies saved (few-channel inputs go to
/// `direct_conv.rs`).
const MIN_CHANNELS: u32 = 8;

/// Whether `w` is a convolution this module computes: a 3×3 window, stride 1, dilation 1
/// (any padding), over at least [`MIN_CHANNELS`] channels.
pub(super) fn applies(w: &Window) -> bool {
    let axis_fits = |a: &super::conv2d::Axis| a.kernel == 3 && a.stride == 1 && a.dilation == 1;
    axis_fits(&w.height) && axis_fits(&w.width) && w.channels >= MIN_CHANNELS
}

/// Tiles per image: ⌈OH/4⌉ × ⌈OW/4⌉ (a tile that overhangs the edge computes pixels
/// that are not stored).
pub(super) fn tiles_per_image(w: &Window) -> usize {
    (w.height.output as usize).div_ceil(OUT) * (w.width.output as usize).div_ceil(OUT)
}

/// Floats a block holds per image: its transformed input and products, and its output.
pub(super) fn floats_per_image(w: &Window, filters: usize) -> usize {
    POINTS * tiles_per_image(w) * (w.channels as usize + filters) + w.output_pixels() * filters
}

/// One of the six one-axis transforms, applied to a column (or row) of a tile.
trait Transform<const I: usize, const O: usize> {
    fn apply(x: [f32; I]) -> [f32; O];
}

/// Bᵀ, the input transform (rows [4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0],
/// [0, 4, −4, −1, 1, 0], [0, −2, −1, 2, 1, 0], [0, 2, −1, −2, 1, 0], [0, 4, 0, −5, 0, 1]).
struct Bt;
/// B, the adjoint of Bᵀ.
struct B;
/// Aᵀ, the output transform (rows [1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, 0],
/// [0, 1, 1, 4, 4, 0], [0, 1, −1, 8, −8, 1]).
struct At;
/// A, the adjoint of Aᵀ.
struct A;
/// G, the kernel transform (rows [¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙],
/// [1⁄24, 1⁄12, ⅙], [1⁄24, −1⁄12, ⅙], [0, 0, 1]).
struct G;
/// Gᵀ, the adjoint of G, for the kernel's gradient.
struct Gt;

impl Transform<IN, IN> for Bt {
    #[inline(always)]
    fn apply([d0, d1, d2, d3, d4, d5]: [f32; IN]) -> [f32; IN] {
        [
            4.0 * d0 - 5.0 * d2 + d4,
            -4.0 * (d1 + d2) + d3 + d4,
            4.0 * (d1 - d2) - d3 + d4,
            -2.0 * (d1 - d3) - d2 + d4,
            2.0 * (d1 - d3) - d2 + d4,
            4.0 * d1 - 5.0 * d3 + d5,
        ]
    }
}

impl Transform<IN, IN> for B {
    #[inline(always)]
    fn apply([v0, v1, v2, v3, v4, v5]: [f32; IN]) -> [f32; IN] {
        [
            4.0 * v0,
            4.0 * (v2 - v1 + v5) + 2.0 * (v4 - v3),
            -5.0 * v0 - 4.0 * (v1 + v2) - v3 - v4,
            v1 - v2 + 2.0 * (v3 - v4) - 5.0 * v5,
            v0 + v1 + v2 + v3 + v4,
            v5,
        ]
    }
}

impl Transform<IN, OUT> for At {
    #[inline(always)]
    fn apply([m0, m1, m2, m3, m4, m5]: [f32; IN]) -> [f32; OUT] {
        let (sum12, diff12, sum34, diff34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        [
            m0 + sum12 + sum34,
            diff12 + 2.0 * diff34,
            sum12 + 4.0 * sum34,
            diff12 + 8.0 * diff34 + m5,
        ]
    }
}

impl Transform<OUT, IN> for A {
    #[inline(always)]
    fn apply([y0, y1, y2, y3]: [f32; OUT]) -> [f32; IN] {
        [
            y0,
            y0 + y1 + y2 + y3,
            y0 - y1 + y2 - y3,
            y0 + 2.0 * y1 + 4.0 * y2 + 8.0 * y3,
            y0 - 2.0 * y1 + 4.0 * y2 - 8.0 * y3,
            y3,
        ]
    }
}

impl Transform<3, IN> for G {
    #[inline(always)]
    fn apply([a, b, c]: [f32; 3]) -> [f32; IN] {
        [
            a / 4.0,
            -(a + b + c) / 6.0,
            -(a - b + c) / 6.0,
            a / 24.0 + b / 12.0 + c / 6.0,
            a / 24.0 - b / 12.0 + c / 6.0,
            c,
        ]
    }
}

impl Transform<IN, 3> for Gt {
    #[inline(always)]
    fn apply([u0, u1, u2, u3, u4, u5]: [f32; IN]) -> [f32; 3] {
        [
            u0 / 4.0 - (u1 + u2) / 6.0 + (u3 + u4) / 24.0,
            (u2 - u1) / 6.0 + (u3 - u4) / 12.0,
            (u3 + u4 - u1 - u2) / 6.0 + u5,
        ]
    }
}

/// `T tile` lane by lane, for the matrix T that `Tr` applies: the transform down every
/// column of an I×I tile. Plain loops over fixed sizes (no closures, which would be
/// compiled without the caller's vector features), so each lane loop is vector adds.
#[inline(always)]
fn down_columns<Tr: Transform<I, O>, const L: usize, const I: usize, const O: usize>(
    tile: &[[[f32; L]; I]; I],
) -> [[[f32; L]; I]; O] {
    let mut down = [[[0.0; L]; I]; O];
    for s in 0..I {
        for l in 0..L {
            let mut column = [0.0; I];
            for r in 0..I {
                column[r] = tile[r][s][l];
            }
            let column = Tr::apply(column);
            for o in 0..O {
                down[o][s][l] = column[o];
            }
        }
    }
    down
}

/// Row `o` of `(T tile) Tᵀ`, from [`down_columns`]'s result: the transform along one row.
/// The caller stores each row as it comes, so no whole second tile is held.
#[inline(always)]
fn along_row<Tr: Transform<I, O>, const L: usize, const I: usize, const O: usize>(
    down: &[[[f32; L]; I]; O],
    o: usize,
) -> [[f32; L]; O] {
    let mut out = [[0.0; L]; O];
    for l in 0..L {
        let mut row = [0.0; I];
        for s in 0..I {
            row[s] = down[o][s][l];
        }
        let row = Tr::apply(row);
        for p in 0..O {
            out[p][l] = row[p];
        }
    }
    out
}

/// Where a tile's patch lies in its image, and which of its output pixels exist.
struct Tiles<'w> {
    w: &'w Window,
}

impl Tiles<'_> {
    fn rows(&self) -> usize {
        (self.w.height.output as usize).div_ceil(OUT)
    }

    fn cols(&self) -> usize {
        (self.w.width.output as usize).div_ceil(OUT)
    }

    /// The input row (or column) under patch position `k` of tile `t` along `axis`.
    #[inline(always)]
    fn source(axis: &super::conv2d::Axis, t: usize, k: usize) -> Option<usize> {
        (OUT * t + k)
            .checked_sub(axis.pad_before as usize)
            .filter(|&i| i < axis.input as usize)
    }

    /// Offsets in the image of the 36 patch pixels of tile (th, tw), None in the padding.
    #[inline(always)]
    fn patch(&self, th: usize, tw: usize) -> [[Option<usize>; IN]; IN] {
        let (w, c) = (self.w, self.w.channels as usize);
        let mut patch = [[None; IN]; IN];
        for (r, line) in patch.iter_mut().enumerate() {
            let Some(ih) = Self::source(&w.height, th, r) else {
                continue;
            };
            for (s, offset) in line.iter_mut().enumerate() {
                *offset = Self::source(&w.width, tw, s).map(|iw| (ih * w.width.input as usize + iw) * c);
            }
        }
        patch
    }

    /// The pixel index in the output image of each of tile (th, tw)'s OUT×OUT outputs, None
    /// past the edge.
    #[inline(always)]
    fn outputs(&self, th: usize, tw: usize) -> [[Option<usize>; OUT]; OUT] {
        let (oh, ow) = (self.w.height.output as usize, self.w.width.output as usize);
        let mut pixels = [[None; OUT]; OUT];
        for (i, line) in pixels.iter_mut().enumerate() {
            for (j, pixel) in line.iter_mut().enumerate() {
                let (y, x) = (OUT * th + i, OUT * tw + j);
                *pixel = (y < oh && x < ow).then_some(y * ow + x);
            }
        }
        pixels
    }
}

/// Runs `f::<16>(args…, lane)` over whole 16-lane chunks of `0..n`, then `f::<1>` over
/// the rest.
macro_rules! by_lanes {
    ($n:expr, $f:ident($($arg:expr),*)) => {{
        let n = $n;
        let mut lane = 0;
        while n - lane >= 16 {
            $f::<16>($($arg,)* lane);
            lane += 16;
        }
        while lane < n {
            $f::<1>($($arg,)* lane);
            lane += 1;
        }
    }};
}

/// `G g Gᵀ` for every (channel, filter) pair: the kernel (3, 3, C, F) as 36 matrices C × F,
/// into `u`. Computed on every forward call (the kernel changes every step), so it runs 16
/// pairs at a time like the other transforms: a scalar loop was a fifth of a batch-1
/// prediction.
pub(super) fn transform_kernel(kernel: &[f32], u: &mut [f32]) {
    assert_eq!(u.len(), kernel.len() / 9 * POINTS, "transformed kernel size");
    transform_kernel_into(kernel, u);
}

super::simd::widest_simd! {
    fn transform_kernel_into(kernel: &[f32], u: &mut [f32]) => transform_kernel_body
}

#[inline(always)]
fn transform_kernel_body(kernel: &[f32], u: &mut [f32]) {
    by_lanes!(kernel.len() / 9, kernel_pairs(kernel, u));
}

#[inline(always)]
fn kernel_pairs<const L: usize>(kernel: &[f32], u: &mut [f32], e: usize) {
    let pairs = kernel.len() / 9;
    let mut g = [[[0.0; L]; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            g[i][j].copy_from_slice(&kernel[(i * 3 + j) * pairs + e..][..L]);
        }
    }
    let down = down_columns::<G, L, 3, IN>(&g);
    for r in 0..IN {
        for (s, lanes) in along_row::<G, L, 3, IN>(&down, r).iter().enumerate() {
            u[(r * IN + s) * pairs + e..][..L].copy_from_slice(lanes);
        }
    }
}

/// [`transform_kernel`] into `u`, then each of its 36 matrices transposed into `u_t`
/// (36 × F × C): the right-hand side of the input gradient's products.
pub(super) fn transposed_kernel(
    kernel: &[f32],
    (channels, filters): (usize, usize),
    u: &mut [f32],
    u_t: &mut [f32],
) {
    transform_kernel(kernel, u);
    let pairs = channels * filters;
    for (u, u_t) in u.chunks_exact(pairs).zip(u_t.chunks_exact_mut(pairs)) {
        super::matmul::transpose(u, channels, filters, u_t);
    }
}

super::simd::widest_simd! {
    /// `Gᵀ dU G`: the kernel gradient (3, 3, C, F) from the gradient of the transformed
    /// kernel (36 × C × F), added to `dkernel`.
    pub(super) fn kernel_gradient(du: &[f32], dkernel: &mut [f32]) => kernel_gradient_body
}

#[inline(always)]
fn kernel_gradient_body(du: &[f32], dkernel: &mut [f32]) {
    by_lanes!(dkernel.len() / 9, kernel_gradient_pairs(du, dkernel));
}

#[inline(always)]
fn kernel_gradient_pairs<const L: usize>(du: &[f32], dkernel: &mut [f32], e: usize) {
    let pairs = dkernel.len() / 9;
    let mut tile = [[[0.0; L]; IN]; IN];
    for r in 0..IN {
        for s in 0..IN {
            tile[r][s].copy_from_slice(&du[(r * IN + s) * pairs + e..][..L]);
        }
    }
    let down = down_columns::<Gt, L, IN, 3>(&tile);
    for i in 0..3 {
        for (j, lanes) in along_row::<Gt, L, IN, 3>(&down, i).iter().enumerate() {
            for (d, g) in dkernel[(i * 3 + j) * pairs + e..][..L].iter_mut().zip(lanes) {
                *d += g;
            }
        }
    }
}

/// A block's transformed matrices: 36 of them, `rows` × `cols` each, back to back.
#[derive(Clone, Copy)]
struct Points {
    rows: usize,
    cols: usize,
}

impl Points {
    fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Where `lanes` at column `col` of row `row` of point `p` start.
    #[inline(always)]
    fn at(&self, p: usize, row: usize, col: usize) -> usize {
        p * self.len() + row * self.cols + col
    }
}

super::simd::widest_simd! {
    /// `Bᵀ d B` of every tile of the images in `x` into `v` (36 matrices, tiles × C).
    fn input_transform(x: &[f32], w: &Window, v: &mut [f32]) => input_transform_body
}

#[inline(always)]
fn input_transform_body(x: &[f32], w: &Window, v: &mut [f32]) {
    let c = w.channels as usize;
    let tiles = Tiles { w };
    let image_len = w.input_pixels() * c;
    let points = Points {
        rows: v.len() / (POINTS * c),
        cols: c,
    };
    let mut row = 0;
    for image in x.chunks_exact(image_len) {
        for th in 0..tiles.rows() {
            for tw in 0..tiles.cols() {
                let patch = tiles.patch(th, tw);
                by_lanes!(c, input_tile(image, &patch, v, points, row));
                row += 1;
            }
        }
    }
}

#[inline(always)]
fn input_tile<const L: usize>(
    image: &[f32],
    patch: &[[Option<usize>; IN]; IN],
    v: &mut [f32],
    points: Points,
    row: usize,
    ch: usize,
) {
    let mut d = [[[0.0; L]; IN]; IN];
    for r in 0..IN {
        for s in 0..IN {
            if let Some(offset) = patch[r][s] {
                d[r][s].copy_from_slice(&image[offset + ch..][..L]);
            }
        }
    }
    let down = down_columns::<Bt, L, IN, IN>(&d);
    for r in 0..IN {
        let t = along_row::<Bt, L, IN, IN>(&down, r);
        for (s, lanes) in t.iter().enumerate() {
            v[points.at(r * IN + s, row, ch)..][..L].copy_from_slice(lanes);
        }
    }
}

super::simd::widest_simd! {
    /// `Aᵀ M A` of every tile in `m` (36 matrices, tiles × F) into the block's output `y`
    /// (images × OH × OW × F), plus `bias` and then ReLU if `relu`, as the im2col path's
    /// epilogue computes them.
    fn output_transform(m: &[f32], w: &Window, filters: usize, bias: Option<&[f32]>, relu: bool, y: &mut [f32]) => output_transform_body
}

#[inline(always)]
fn output_transform_body(
    m: &[f32],
    w: &Window,
    filters: usize,
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    let tiles = Tiles { w };
    let points = Points {
        rows: m.len() / (POINTS * filters),
        cols: filters,
    };
    let mut row = 0;
    for image in y.chunks_exact_mut(w.output_pixels() * filters) {
        for th in 0..tiles.rows() {
            for tw in 0..tiles.cols() {
                let outputs = tiles.outputs(th, tw);
                let epilogue = (bias, relu);
                by_lanes!(filters, output_tile(m, points, row, epilogue, &outputs, image));
                row += 1;
            }
        }
    }
}

#[inline(always)]
fn output_tile<const L: usize>(
    m: &[f32],
    points: Points,
    row: usize,
    (bias, relu): (Option<&[f32]>, bool),
    outputs: &[[Option<usize>; OUT]; OUT],
    image: &mut [f32],
    f: usize,
) {
    let mut tile = [[[0.0; L]; IN]; IN];
    for r in 0..IN {
        for s in 0..IN {
            tile[r][s].copy_from_slice(&m[points.at(r * IN + s, row, f)..][..L]);
        }
    }
    // Adding −0.0 changes no value (not even −0.0): the same loop serves without a bias.
    let bias: [f32; L] = match bias {
        Some(b) => b[f..][..L].try_into().expect("L lanes"),
        None => [-0.0; L],
    };
    let down = down_columns::<At, L, IN, OUT>(&tile);
    for (i, outputs) in outputs.iter().enumerate() {
        let y = along_row::<At, L, IN, OUT>(&down, i);
        for (&pixel, y) in outputs.iter().zip(&y) {
            let Some(pixel) = pixel else { continue };
            let out: &mut [f32; L] = (&mut image[pixel * points.cols + f..][..L])
                .try_into()
                .expect("L lanes");
            for l in 0..L {
                let v = y[l] + bias[l];
                // `if v < 0` rather than max(0): NaN must reach the loss (see unary.rs).
                out[l] = if relu && v < 0.0 { 0.0 } else { v };
            }
        }
    }
}

super::simd::widest_simd! {
    /// `A dY Aᵀ` of every tile of the output gradient `dy` (images × OH × OW × F) into
    /// `dm` (36 matrices, tiles × F); the pixels past the edge count as 0.
    fn output_gradient_transform(dy: &[f32], w: &Window, filters: usize, dm: &mut [f32]) => output_gradient_transform_body
}

#[inline(always)]
fn output_gradient_transform_body(dy: &[f32], w: &Window, filters: usize, dm: &mut [f32]) {
    let tiles = Tiles { w };
    let points = Points {
        rows: dm.len() / (POINTS * filters),
        cols: filters,
    };
    let mut row = 0;
    for image in dy.chunks_exact(w.output_pixels() * filters) {
        for th in 0..tiles.rows() {
            for tw in 0..tiles.cols() {
                let outputs = tiles.outputs(th, tw);
                by_lanes!(filters, output_gradient_tile(image, &outputs, dm, points, row));
                row += 1;
            }
        }
    }
}

#[inline(always)]
fn output_gradient_tile<const L: usize>(
    image: &[f32],
    outputs: &[[Option<usize>; OUT]; OUT],
    dm: &mut [f32],
    points: Points,
    row: usize,
    f: usize,
) {
    let mut dy = [[[0.0; L]; OUT]; OUT];
    for i in 0..OUT {
        for j in 0..OUT {
            if let Some(pixel) = outputs[i][j] {
                dy[i][j].copy_from_slice(&image[pixel * points.cols + f..][..L]);
            }
        }
    }
    let down = down_columns::<A, L, OUT, IN>(&dy);
    for r in 0..IN {
        let t = along_row::<A, L, OUT, IN>(&down, r);
        for (s, lanes) in t.iter().enumerate() {
            dm[points.at(r * IN + s, row, f)..][..L].copy_from_slice(lanes);
        }
    }
}

super::simd::widest_simd! {
    /// `B dV Bᵀ` of every tile in `dv` (36 matrices, tiles × C), added onto the patches
    /// of the images in `dx` (the parts in the padding dropped).
    fn input_gradient_transform(dv: &[f32], w: &Window, dx: &mut [f32]) => input_gradient_transform_body
}

#[inline(always)]
fn input_gradient_transform_body(dv: &[f32], w: &Window, dx: &mut [f32]) {
    let c = w.channels as usize;
    let tiles = Tiles { w };
    let points = Points {
        rows: dv.len() / (POINTS * c),
        cols: c,
    };
    let mut row = 0;
    for image in dx.chunks_exact_mut(w.input_pixels() * c) {
        for th in 0..tiles.rows() {
            for tw in 0..tiles.cols() {
                let patch = tiles.patch(th, tw);
                by_lanes!(c, input_gradient_tile(dv, points, row, &patch, image));
                row += 1;
            }
        }
    }
}

#[inline(always)]
fn input_gradient_tile<const L: usize>(
    dv: &[f32],
    points: Points,
    row: usize,
    patch: &[[Option<usize>; IN]; IN],
    image: &mut [f32],
    ch: usize,
) {
    let mut tile = [[[0.0; L]; IN]; IN];
    for r in 0..IN {
        for s in 0..IN {
            tile[r][s].copy_from_slice(&dv[points.at(r * IN + s, row, ch)..][..L]);
        }
    }
    let down = down_columns::<B, L, IN, IN>(&tile);
    for (r, patch) in patch.iter().enumerate() {
        let d = along_row::<B, L, IN, IN>(&down, r);
        for (&offset, d) in patch.iter().zip(&d) {
            let Some(offset) = offset else { continue };
            for (x, g) in image[offset + ch..][..L].iter_mut().zip(d) {
                *x += g;
            }
        }
    }
}

/// The 36 products of a block, `out_p = lhs_p · rhs_p` (added to `out_p` if
/// `accumulate`), each point's matrices taken from the three buffers' p-th 36ths.
#[allow(clippy::too_many_arguments)] // the BLAS argument list, per point
fn products(
    (m, n, k): (usize, usize, usize),
    out: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_transposed: bool,
    rhs: &[f32],
) {
    let (lhs_len, rhs_len) = (lhs.len() / POINTS, rhs.len() / POINTS);
    for (p, out) in out.chunks_exact_mut(m * n).enumerate() {
        let data = &lhs[p * lhs_len..][..lhs_len];
        let lhs = match lhs_transposed {
            // `data` holds the k × m matrix whose transpose is the left operand.
            true => MatRef {
                data,
                row_stride: 1,
                col_stride: m,
            },
            false => MatRef::row_major(data, k),
        };
        let rhs = MatRef::row_major(&rhs[p * rhs_len..][..rhs_len], n);
        gemm_single_thread(m, n, k, out, accumulate, lhs, rhs);
    }
}

/// One block's convolution: `x` (images × H × W × C) with the transformed kernel `u`
/// (36 × C × F) into `y` (images × OH × OW × F), with bias and ReLU applied. `scratch`
/// holds the transformed input and products between calls.
pub(super) fn convolve_block(
    x: &[f32],
    w: &Window,
    u: &[f32],
    (filters, bias, relu): (usize, Option<&[f32]>, bool),
    scratch: &mut Vec<f32>,
    y: &mut [f32],
) {
    let c = w.channels as usize;
    let tiles = x.len() / (w.input_pixels() * c) * tiles_per_image(w);
    scratch.resize(POINTS * tiles * (c + filters), 0.0);
    let (v, m) = scratch.split_at_mut(POINTS * tiles * c);
    input_transform(x, w, v);
    products((tiles, filters, c), m, false, v, false, u);
    output_transform(m, w, filters, bias, relu, y);
}

/// One block's backward: `du` (36 × C × F) += the gradient of the transformed kernel, and
/// `dx` (images × H × W × C), when given, += the input gradient, from `dy`, the gradient of
/// the block's output. `u_t` is the transformed kernel transposed per point (36 × F × C).
pub(super) fn backward_block(
    x: &[f32],
    w: &Window,
    u_t: &[f32],
    dy: &[f32],
    scratch: &mut Vec<f32>,
    du: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let c = w.channels as usize;
    let filters = u_t.len() / (POINTS * c);
    let tiles = x.len() / (w.input_pixels() * c) * tiles_per_image(w);
    scratch.resize(POINTS * tiles * (c + filters), 0.0);
    let (v, dm) = scratch.split_at_mut(POINTS * tiles * c);
    input_transform(x, w, v);
    output_gradient_transform(dy, w, filters, dm);
    products((c, filters, tiles), du, true, v, true, dm);
    if let Some(dx) = dx {
        // V is no longer needed: its buffer takes dV.
        products((tiles, c, filters), v, false, dm, false, u_t);
        input_gradient_transform(v, w, dx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{Tape, Var, Workspace};
    use crate::ops::conv2d::{Axis, Padding};
    use crate::ops::gradcheck;
    use crate::params::ParamStore;
    use crate::tensor::Shape;

    fn window(h: usize, w: usize, c: usize, padding: Padding) -> Window {
        Window {
            height: Axis::new(h, 3, 1, 1, padding).unwrap(),
            width: Axis::new(w, 3, 1, 1, padding).unwrap(),
            channels: c as u32,
        }
    }

    /// Output and the gradients of x, kernel and bias for a random seed, by the definition:
    /// y[b,oh,ow,f] = bias[f] + Σ x[b,ih,iw,c]·k[i,j,c,f], and its adjoint looped directly.
    fn by_definition(
        w: &Window,
        batch: usize,
        filters: usize,
        (x, k, bias, seed): (&[f32], &[f32], &[f32], &[f32]),
    ) -> [Vec<f32>; 4] {
        let c = w.channels as usize;
        let (oh_n, ow_n) = (w.height.output as usize, w.width.output as usize);
        let (h, wi) = (w.height.input as usize, w.width.input as usize);
        let mut y = vec![0.0f64; batch * oh_n * ow_n * filters];
        let (mut dx, mut dk, mut db) = (
            vec![0.0f64; x.len()],
            vec![0.0f64; k.len()],
            vec![0.0f64; filters],
        );
        for b in 0..batch {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    for f in 0..filters {
                        let yi = ((b * oh_n + oh) * ow_n + ow) * filters + f;
                        y[yi] = bias[f] as f64;
                        db[f] += seed[yi] as f64;
                        for i in 0..3 {
                            for j in 0..3 {
                                let (Some(ih), Some(iw)) = (w.height.source(oh, i), w.width.source(ow, j))
                                else {
                                    continue;
                                };
                                for ch in 0..c {
                                    let xi = ((b * h + ih) * wi + iw) * c + ch;
                                    let ki = ((i * 3 + j) * c + ch) * filters + f;
                                    y[yi] += x[xi] as f64 * k[ki] as f64;
                                    dx[xi] += k[ki] as f64 * seed[yi] as f64;
                                    dk[ki] += x[xi] as f64 * seed[yi] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        [y, dx, dk, db].map(|v| v.into_iter().map(|v| v as f32).collect())
    }

    /// conv2d's output and gradients on the tape (which takes the Winograd path here).
    fn on_tape(
        w: &Window,
        batch: usize,
        filters: usize,
        (x, k, bias, seed): (&[f32], &[f32], &[f32], &[f32]),
    ) -> [Vec<f32>; 4] {
        let (mut p, mut ws) = (ParamStore::new(), Workspace::new());
        let mut t = Tape::new(&mut p, &mut ws);
        let c = w.channels as usize;
        let dims = [batch, w.height.input as usize, w.width.input as usize, c];
        let v: Vec<Var> = [
            (x, &dims[..]),
            (k, &[3, 3, c, filters][..]),
            (bias, &[filters][..]),
        ]
        .iter()
        .map(|(data, dims)| t.leaf(data, Shape::new(dims), true))
        .collect();
        let y = t.conv2d(v[0], v[1], Some(v[2]), *w).unwrap();
        t.backward_from(y, seed);
        [
            t.value(y).to_vec(),
            t.grad(v[0]).unwrap().to_vec(),
            t.grad(v[1]).unwrap().to_vec(),
            t.grad(v[2]).unwrap().to_vec(),
        ]
    }

    /// Output, dx, dkernel and dbias equal the definition's within f32 rounding, for both
    /// paddings, odd and even output sizes, channel and filter counts that leave a partial
    /// 16-lane chunk, and batches of several blocks (at least 4 images, the fewest conv2d
    /// computes this way).
    #[test]
    fn matches_the_definition_forward_and_backward() {
        let cases = [
            // (height, width, channels, filters, padding, batch)
            (13, 13, 32, 64, Padding::Valid, 3),
            (8, 7, 8, 5, Padding::Same, 4),
            (6, 9, 20, 17, Padding::Valid, 5),
            (5, 5, 16, 3, Padding::Same, 40),
            (3, 4, 9, 2, Padding::Valid, 4),
        ];
        for (i, &(h, wd, c, filters, padding, batch)) in cases.iter().enumerate() {
            let w = window(h, wd, c, padding);
            assert!(applies(&w));
            let seed = 40 + 5 * i as u64;
            let x = gradcheck::random(batch * h * wd * c, seed);
            let k = gradcheck::random(9 * c * filters, seed + 1);
            let bias = gradcheck::random(filters, seed + 2);
            let out_len = batch * w.output_pixels() * filters;
            let upstream = gradcheck::random(out_len, seed + 3);
            let args = (&x[..], &k[..], &bias[..], &upstream[..]);
            let expected = by_definition(&w, batch, filters, args);
            let got = on_tape(&w, batch, filters, args);
            for (which, (got, expected)) in ["output", "dx", "dkernel", "dbias"]
                .iter()
                .zip(got.iter().zip(&expected))
            {
                assert_eq!(got.len(), expected.len(), "case {i} {which}");
                let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                for (n, (a, e)) in got.iter().zip(expected).enumerate() {
                    assert!(
                        (a - e).abs() <= 1e-5 * scale * (c as f32).sqrt() * 4.0,
                        "case {i} {which}[{n}]: {a} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn gradient_checks_valid_and_same() {
        for (name, padding) in [
            ("winograd valid", Padding::Valid),
            ("winograd same", Padding::Same),
        ] {
            let w = window(5, 4, 8, padding);
            gradcheck::check(
                name,
                &[
                    // Four images: fewer go by im2col (see conv2d's MIN_WINOGRAD_BATCH).
                    (&[4, 5, 4, 8], gradcheck::random(4 * 5 * 4 * 8, 60)),
                    (&[3, 3, 8, 3], gradcheck::random(9 * 8 * 3, 61)),
                    (&[3], gradcheck::random(3, 62)),
                ],
                |t, v| t.conv2d(v[0], v[1], Some(v[2]), w).unwrap(),
            );
        }
    }

    #[test]
    fn applies_only_to_unit_stride_undilated_3x3_over_enough_channels() {
        let axis = |k, s, d| Axis::new(12, k, s, d, Padding::Same).unwrap();
        let with = |height, width, channels| Window {
            height,
            width,
            channels,
        };
        assert!(applies(&with(axis(3, 1, 1), axis(3, 1, 1), 8)));
        assert!(!applies(&with(axis(3, 1, 1), axis(3, 1, 1), 7)));
        assert!(!applies(&with(axis(3, 2, 1), axis(3, 1, 1), 32)));
        assert!(!applies(&with(axis(3, 1, 1), axis(3, 1, 2), 32)));
        assert!(!applies(&with(axis(5, 1, 1), axis(3, 1, 1), 32)));
    }
}
