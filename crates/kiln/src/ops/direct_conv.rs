//! Convolution computed straight from the input, for inputs with few channels (an image's
//! first layer: one grey or three colour channels). There im2col's rows are a few values
//! long, so copying them costs as much as the product, and a product of depth 9 or 27 keeps
//! the matrix kernel's registers busy loading and storing its output instead of
//! multiplying. Here each output pixel's filters accumulate in vector registers, 16 at a
//! time, over the taps read in place; four neighbouring pixels share each kernel load.
//!
//! The kernel gradient is computed the same way (`dkernel[tap] += x[tap] · dy` over the
//! pixels); the input gradient, needed only when such a layer is not the first, goes
//! through the matrix kernel and col2im as before.
//!
//! MNIST CNN's first layer (28×28×1 → 32, with its fused pooling), per batch of 128
//! (`kiln-bench conv --only conv1`): forward 0.90 → 0.71 ms, backward 1.2 → 1.05 ms.
//! Multiplies and adds are separate operations, not `mul_add`: with it LLVM vectorized the
//! four pixels' accumulators across pixels and shuffled on every tap.

use super::conv2d::Window;

/// The deepest receptive field (taps × channels) computed directly: a 3×3 kernel over
/// three channels is 27. Deeper fields give the matrix kernel enough work per output.
const MAX_DEPTH: usize = 32;

/// Pixels that share each kernel load.
const PIXELS: usize = 4;

/// Whether `w`'s convolution is computed here (see [`MAX_DEPTH`]).
pub(super) fn applies(w: &Window) -> bool {
    w.taps() * w.channels as usize <= MAX_DEPTH
}

/// One tap of a kernel row that lies in the image for the output row at hand: its index in
/// the kernel's (tap, channel) rows, and its offset from the pixel's first column.
#[derive(Clone, Copy, Default)]
struct Tap {
    depth_index: usize,
    offset: usize,
    /// The kernel column, for pixels whose window reaches into the padding.
    column: usize,
}

/// The output row's geometry, shared by forward and the kernel gradient.
struct Rows<'w> {
    w: &'w Window,
    /// Output columns whose whole window lies inside the image.
    interior: std::ops::Range<usize>,
}

impl<'w> Rows<'w> {
    fn new(w: &'w Window) -> Self {
        let kw = w.width.kernel as usize;
        let inside = |ow: usize| w.width.source(ow, 0).is_some() && w.width.source(ow, kw - 1).is_some();
        let ow_n = w.width.output as usize;
        let start = (0..ow_n).find(|&ow| inside(ow)).unwrap_or(ow_n);
        let end = (start..ow_n).find(|&ow| !inside(ow)).unwrap_or(ow_n);
        Rows {
            w,
            interior: start..end,
        }
    }

    /// The taps of output row `oh` whose kernel row lies in the image, written into
    /// `taps` (a fixed array, so a block allocates nothing).
    #[inline(always)]
    fn taps<'t>(&self, oh: usize, taps: &'t mut [Tap; MAX_DEPTH]) -> &'t [Tap] {
        let w = self.w;
        let c = w.channels as usize;
        let line_len = w.width.input as usize * c;
        let mut count = 0;
        for i in 0..w.height.kernel as usize {
            let Some(ih) = w.height.source(oh, i) else {
                continue;
            };
            for j in 0..w.width.kernel as usize {
                for ch in 0..c {
                    taps[count] = Tap {
                        depth_index: (i * w.width.kernel as usize + j) * c + ch,
                        offset: ih * line_len + j * w.width.dilation as usize * c + ch,
                        column: j,
                    };
                    count += 1;
                }
            }
        }
        &taps[..count]
    }

    /// Where interior pixel `ow`'s window starts in its image row (its taps' offsets are
    /// added to this).
    #[inline(always)]
    fn start(&self, ow: usize) -> usize {
        let a = &self.w.width;
        (ow * a.stride as usize - a.pad_before as usize) * self.w.channels as usize
    }

    /// Where the windows of pixels ow..ow+PIXELS start ([`Rows::start`]), if all of them
    /// lie inside the image.
    #[inline(always)]
    fn group_at(&self, ow: usize) -> Option<[usize; PIXELS]> {
        if !self.interior.contains(&ow) || ow + PIXELS > self.interior.end {
            return None;
        }
        let mut starts = [0; PIXELS];
        for (p, start) in starts.iter_mut().enumerate() {
            *start = self.start(ow + p);
        }
        Some(starts)
    }

    /// The value tap `t` reads for pixel `ow`, which may lie at the image's edge (0 in
    /// the padding).
    #[inline(always)]
    fn value(&self, image: &[f32], t: &Tap, ow: usize) -> f32 {
        let c = self.w.channels as usize;
        let dilation_span = t.column * self.w.width.dilation as usize * c;
        match self.w.width.source(ow, t.column) {
            Some(iw) => image[t.offset - dilation_span + iw * c],
            None => 0.0,
        }
    }
}

/// What every pixel of a block multiplies by and applies: the kernel (taps × C × F), its
/// filter count, and the bias and ReLU applied as each pixel's filters are stored.
#[derive(Clone, Copy)]
struct Filters<'a> {
    kernel: &'a [f32],
    count: usize,
    bias: Option<&'a [f32]>,
    relu: bool,
}

impl Filters<'_> {
    /// The bias of filters f..f+L, or −0.0 (which changes no value) without a bias.
    #[inline(always)]
    fn bias<const L: usize>(&self, f: usize) -> [f32; L] {
        match self.bias {
            Some(b) => b[f..][..L].try_into().expect("L lanes"),
            None => [-0.0; L],
        }
    }

    #[inline(always)]
    fn activate(&self, v: f32) -> f32 {
        // `if v < 0` rather than max(0): NaN must reach the loss (see unary.rs).
        if self.relu && v < 0.0 {
            0.0
        } else {
            v
        }
    }

    /// Filters f..f+L of kernel row `depth_index`.
    #[inline(always)]
    fn weights<const L: usize>(&self, depth_index: usize, f: usize) -> &[f32; L] {
        self.kernel[depth_index * self.count + f..][..L]
            .try_into()
            .expect("L lanes")
    }
}

super::simd::widest_simd! {
    /// The convolution of the images in `x` with `kernel` (taps × C × F) into `y`
    /// (images × OH × OW × F), plus `bias` and then ReLU if `relu`.
    pub(super) fn convolve_block(x: &[f32], w: &Window, kernel: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) => convolve_block_body
}

#[inline(always)]
fn convolve_block_body(
    x: &[f32],
    w: &Window,
    kernel: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    let c = w.channels as usize;
    let filters = Filters {
        kernel,
        count: kernel.len() / (w.taps() * c),
        bias,
        relu,
    };
    let (image_len, ow_n) = (w.input_pixels() * c, w.width.output as usize);
    let rows = Rows::new(w);
    let mut tap_buffer = [Tap::default(); MAX_DEPTH];
    let row_len = ow_n * filters.count;
    for (image, out) in x
        .chunks_exact(image_len)
        .zip(y.chunks_exact_mut(w.output_pixels() * filters.count))
    {
        for (oh, out) in out.chunks_exact_mut(row_len).enumerate() {
            let taps = rows.taps(oh, &mut tap_buffer);
            let mut ow = 0;
            while ow < ow_n {
                let out = &mut out[ow * filters.count..];
                if let Some(starts) = rows.group_at(ow) {
                    let mut f = 0;
                    while filters.count - f >= 16 {
                        four_pixels::<16>(image, taps, starts, filters, out, f);
                        f += 16;
                    }
                    while f < filters.count {
                        four_pixels::<1>(image, taps, starts, filters, out, f);
                        f += 1;
                    }
                    ow += PIXELS;
                    continue;
                }
                // A pixel left over from the groups, or whose window reaches into the
                // padding: its receptive field gathered first, zeros in the padding.
                let mut field = [0.0; MAX_DEPTH];
                for (value, t) in field.iter_mut().zip(taps) {
                    *value = rows.value(image, t, ow);
                }
                let mut f = 0;
                while filters.count - f >= 16 {
                    one_pixel::<16>(&field, taps, filters, out, f);
                    f += 16;
                }
                while f < filters.count {
                    one_pixel::<1>(&field, taps, filters, out, f);
                    f += 1;
                }
                ow += 1;
            }
        }
    }
}

/// Filters f..f+L of four neighbouring interior pixels, whose windows start at `starts`,
/// into `out` (the first pixel's output onwards). Four named accumulators updated in one
/// lane loop: as an array indexed by pixel, LLVM vectorized across the pixels instead and
/// shuffled every tap.
#[inline(always)]
fn four_pixels<const L: usize>(
    image: &[f32],
    taps: &[Tap],
    starts: [usize; PIXELS],
    filters: Filters,
    out: &mut [f32],
    f: usize,
) {
    let bias = filters.bias::<L>(f);
    let (mut a0, mut a1, mut a2, mut a3) = (bias, bias, bias, bias);
    for t in taps {
        let weights = filters.weights::<L>(t.depth_index, f);
        let x0 = image[starts[0] + t.offset];
        let x1 = image[starts[1] + t.offset];
        let x2 = image[starts[2] + t.offset];
        let x3 = image[starts[3] + t.offset];
        for l in 0..L {
            a0[l] += x0 * weights[l];
            a1[l] += x1 * weights[l];
            a2[l] += x2 * weights[l];
            a3[l] += x3 * weights[l];
        }
    }
    for (p, acc) in [a0, a1, a2, a3].iter().enumerate() {
        let out = &mut out[p * filters.count + f..][..L];
        for l in 0..L {
            out[l] = filters.activate(acc[l]);
        }
    }
}

/// Filters f..f+L of one pixel whose receptive field (one value per tap) is `field`.
#[inline(always)]
fn one_pixel<const L: usize>(field: &[f32], taps: &[Tap], filters: Filters, out: &mut [f32], f: usize) {
    let mut acc = filters.bias::<L>(f);
    for (t, &x) in taps.iter().zip(field) {
        let weights = filters.weights::<L>(t.depth_index, f);
        for l in 0..L {
            acc[l] += x * weights[l];
        }
    }
    for (o, &v) in out[f..][..L].iter_mut().zip(&acc) {
        *o = filters.activate(v);
    }
}

super::simd::widest_simd! {
    /// `dkernel` (taps × C × F) += the kernel gradient of the images in `x` given `dy`,
    /// their output's gradient (images × OH × OW × F).
    pub(super) fn kernel_gradient(x: &[f32], w: &Window, dy: &[f32], dkernel: &mut [f32]) => kernel_gradient_body
}

#[inline(always)]
fn kernel_gradient_body(x: &[f32], w: &Window, dy: &[f32], dkernel: &mut [f32]) {
    let c = w.channels as usize;
    let filters = dkernel.len() / (w.taps() * c);
    let (image_len, ow_n) = (w.input_pixels() * c, w.width.output as usize);
    let rows = Rows::new(w);
    let mut tap_buffer = [Tap::default(); MAX_DEPTH];
    let row_len = ow_n * filters;
    for (image, dy) in x
        .chunks_exact(image_len)
        .zip(dy.chunks_exact(w.output_pixels() * filters))
    {
        for (oh, dy) in dy.chunks_exact(row_len).enumerate() {
            let taps = rows.taps(oh, &mut tap_buffer);
            let mut ow = 0;
            while ow < ow_n {
                let dy = &dy[ow * filters..];
                if let Some(starts) = rows.group_at(ow) {
                    let mut f = 0;
                    while filters - f >= 16 {
                        pixels_gradient::<PIXELS, 16>(image, taps, starts, (dy, filters), dkernel, f);
                        f += 16;
                    }
                    while f < filters {
                        pixels_gradient::<PIXELS, 1>(image, taps, starts, (dy, filters), dkernel, f);
                        f += 1;
                    }
                    ow += PIXELS;
                } else {
                    for t in taps {
                        let x = rows.value(image, t, ow);
                        let dk = &mut dkernel[t.depth_index * filters..][..filters];
                        for (d, g) in dk.iter_mut().zip(&dy[..filters]) {
                            *d += x * g;
                        }
                    }
                    ow += 1;
                }
            }
        }
    }
}

/// `dkernel[tap][f..f+L] += Σ_p x_p[tap] · dy_p[f..f+L]` over P neighbouring interior
/// pixels: one load and store of each kernel row per P pixels.
#[inline(always)]
fn pixels_gradient<const P: usize, const L: usize>(
    image: &[f32],
    taps: &[Tap],
    starts: [usize; P],
    (dy, filters): (&[f32], usize),
    dkernel: &mut [f32],
    f: usize,
) {
    let mut g = [[0.0; L]; P];
    for (p, g) in g.iter_mut().enumerate() {
        g.copy_from_slice(&dy[p * filters + f..][..L]);
    }
    for t in taps {
        let dk: &mut [f32; L] = (&mut dkernel[t.depth_index * filters + f..][..L])
            .try_into()
            .expect("L lanes");
        let mut acc = *dk;
        for p in 0..P {
            let x = image[starts[p] + t.offset];
            for l in 0..L {
                acc[l] += x * g[p][l];
            }
        }
        *dk = acc;
    }
}
