//! 2-D convolution over channels-last (NHWC) images, as Keras lays them out, with a kernel
//! shaped (kh, kw, in_channels, filters) — Keras's HWIO, so weights move between the two
//! unchanged. Strides, dilation and `valid` / `same` padding follow TensorFlow's rules.
//!
//! In general computed as im2col + one matrix product: each output pixel's receptive field
//! is copied into a row of a (B·OH·OW) × (kh·kw·C) matrix, which the tuned `gemm` kernel
//! multiplies by the (kh·kw·C) × filters kernel, giving the NHWC output directly. Backward
//! rebuilds the rows, then `dkernel = colsᵀ · g` and `dx` is `g · kernelᵀ` scattered back
//! (col2im). Both work in blocks of images whose matrix fits in L2, one block per thread at
//! a time.
//!
//! A 3×3 kernel with stride 1 over 8 or more channels, in a batch of 4 or more images, goes
//! by Winograd's F(4×4, 3×3) instead (see `winograd.rs`): the same blocks and epilogue, 36
//! smaller products with up to 4× fewer multiplies (MNIST CNN's second convolution per
//! batch of 128, forward + backward: 4.85 ms by im2col, 3.5 ms by F(2×2, 3×3), 2.9 ms by
//! F(4×4, 3×3)). A receptive field of at most 32 values (a grey or colour image's first
//! layer) is computed straight from the input (see `direct_conv.rs`).
//!
//! An epilogue runs on each block while it is in cache: bias and ReLU, and a max pooling
//! that follows the convolution (so a CNN's largest tensor, the convolution's output, is
//! never written out whole; backward rebuilds each block's share of its gradient).
//! Channels-last makes every copy a contiguous run of C values (kw·C without dilation).

use rayon::prelude::*;

use super::matmul::{gemm_single_thread, MatRef};
use super::{direct_conv, winograd};
use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::Shape;

pub use super::conv_geometry::{Axis, Padding, Window};

/// Target size of one block's working set (its im2col matrix and its output): small
/// enough to stay in a core's L2 cache between being written and being read again (a whole
/// batch's matrix, tens of MB, would stream through memory three times a step).
const BLOCK_FLOATS: usize = 1 << 17;

/// Images per block: as many as fit [`BLOCK_FLOATS`], but at least two blocks per thread
/// so both cores get work.
fn images_per_block(w: &Window, filters: usize, batch: usize) -> usize {
    let per_image = match Method::of(w, batch) {
        Method::Winograd => winograd::floats_per_image(w, filters),
        Method::Im2col => w.output_pixels() * (w.taps() * w.channels as usize + filters),
        Method::Direct => w.output_pixels() * filters,
    };
    let fit = (BLOCK_FLOATS / per_image.max(1)).max(1);
    let spread = batch.div_ceil(2 * rayon::current_num_threads()).max(1);
    fit.min(spread)
}

/// How a convolution's products are computed, chosen by its geometry and batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// Straight from the input, for a receptive field of few values (see `direct_conv.rs`).
    Direct,
    /// Winograd's F(4×4, 3×3), for 3×3 kernels with stride 1 (see `winograd.rs`).
    Winograd,
    /// im2col and one product of the matrix kernel: every other convolution.
    Im2col,
}

/// The fewest images worth Winograd's method: its kernel transform (36 matrices, 4× the
/// kernel) is made on every call, and for a single image that costs more than the
/// multiplies it saves (MNIST CNN batch-1 prediction: 50 µs by im2col, 70 by Winograd).
const MIN_WINOGRAD_BATCH: usize = 4;

impl Method {
    /// The method for a convolution of `batch` images with window `w`.
    fn of(w: &Window, batch: usize) -> Method {
        if winograd::applies(w) && batch >= MIN_WINOGRAD_BATCH {
            Method::Winograd
        } else if direct_conv::applies(w) {
            Method::Direct
        } else {
            Method::Im2col
        }
    }
}

/// What is applied to each block of the product while it is still in cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epilogue {
    /// ReLU on the output.
    pub relu: bool,
    /// Max pooling over the (activated) output, with this window: the convolution's full
    /// output is then never written to memory, only its pooled values.
    pub max_pool: Option<Window>,
}

impl Tape<'_> {
    /// `x` (B, H, W, C) convolved with `kernel` (kh, kw, C, F), plus `bias` (F) if given
    /// → (B, OH, OW, F).
    pub fn conv2d(&mut self, x: Var, kernel: Var, bias: Option<Var>, window: Window) -> Result<Var> {
        let epilogue = Epilogue {
            relu: false,
            max_pool: None,
        };
        self.conv2d_with(x, kernel, bias, window, epilogue)
    }

    /// [`Tape::conv2d`] followed by ReLU, applied to each block while it is in cache (and
    /// in backward, the ReLU mask applied the same way): two passes over the largest
    /// tensors of a CNN fewer than a separate activation.
    pub fn conv2d_relu(&mut self, x: Var, kernel: Var, bias: Option<Var>, window: Window) -> Result<Var> {
        let epilogue = Epilogue {
            relu: true,
            max_pool: None,
        };
        self.conv2d_with(x, kernel, bias, window, epilogue)
    }

    /// [`Tape::conv2d`], then ReLU if `relu`, then [`Tape::max_pool2d`] with `pool`, block
    /// by block → (B, PH, PW, F). Each block's convolution output is pooled while in cache
    /// and never stored; backward rebuilds a block's output gradient from the pooled
    /// gradient and where each maximum came from.
    pub fn conv2d_max_pool(
        &mut self,
        x: Var,
        kernel: Var,
        bias: Option<Var>,
        window: Window,
        relu: bool,
        pool: Window,
    ) -> Result<Var> {
        let epilogue = Epilogue {
            relu,
            max_pool: Some(pool),
        };
        self.conv2d_with(x, kernel, bias, window, epilogue)
    }

    fn conv2d_with(
        &mut self,
        x: Var,
        kernel: Var,
        bias: Option<Var>,
        window: Window,
        epilogue: Epilogue,
    ) -> Result<Var> {
        let (sx, sk) = (self.shape(x), self.shape(kernel));
        let c = window.channels as usize;
        let expected_input = [window.height.input as usize, window.width.input as usize, c];
        if sx.rank() != 4 || sx.dims()[1..] != expected_input {
            return Err(Error::shape(
                "conv2d input",
                format!("(batch, {}, {}, {c})", expected_input[0], expected_input[1]),
                sx,
            ));
        }
        let (kh, kw) = (window.height.kernel as usize, window.width.kernel as usize);
        if sk.rank() != 4 || sk.dims()[..3] != [kh, kw, c] {
            return Err(Error::shape(
                "conv2d kernel",
                format!("({kh}, {kw}, {c}, filters)"),
                sk,
            ));
        }
        let filters = sk.dims()[3];
        if let Some(b) = bias.filter(|&b| self.shape(b).dims() != [filters]) {
            return Err(Error::shape(
                "conv2d bias",
                format!("[{filters}] for {filters} filters"),
                self.shape(b),
            ));
        }
        let batch = sx.dims()[0];
        let conv_shape = Shape::new(&[
            batch,
            window.height.output as usize,
            window.width.output as usize,
            filters,
        ]);
        // With pooling: its window and the buffer for where each maximum came from.
        let (shape, mut y, mut pooling) = match epilogue.max_pool {
            None => (conv_shape, self.alloc(conv_shape.numel()), None),
            Some(pool) => {
                let (_, shape) = super::pool::pooled_shape(conv_shape, &pool)?;
                if conv_shape.numel() / batch.max(1) > u32::MAX as usize {
                    return Err(Error::shape(
                        "conv2d output",
                        format!("at most {} values per image to index for pooling", u32::MAX),
                        conv_shape,
                    ));
                }
                (
                    shape,
                    self.alloc(shape.numel()),
                    Some((pool, self.alloc(shape.numel()))),
                )
            }
        };
        // Winograd's transformed kernel, from the tape's buffers: a fresh 290 kB vector a
        // step came from mmap and was zeroed page by page.
        let method = Method::of(&window, batch);
        let transformed = (method == Method::Winograd).then(|| {
            let mut u = self.alloc(winograd::POINTS * c * filters);
            winograd::transform_kernel(self.value(kernel), &mut u);
            u
        });
        let product = Product {
            method,
            kernel: self.value(kernel),
            transformed: transformed.as_deref(),
            bias: bias.map(|b| self.value(b)),
            filters,
            relu: epilogue.relu,
        };
        let output = match &mut pooling {
            Some((pool, from)) => Output::Pooled {
                y: &mut y,
                from,
                pool: *pool,
            },
            None => Output::Full(&mut y),
        };
        forward_blocks(self.value(x), &product, &window, batch, output);
        if let Some(u) = transformed {
            self.recycle(u);
        }
        let inputs = [x, kernel, bias.unwrap_or(kernel)];
        let op = Op::Conv2d(ConvNode {
            x,
            kernel,
            bias,
            window,
            epilogue,
        });
        let out = self.push_op(shape, y, op, &inputs);
        match pooling {
            Some((_, from)) if self.requires_grad(out) => self.set_saved(out, from),
            Some((_, from)) => self.recycle(from),
            None => {}
        }
        Ok(out)
    }
}

/// A convolution recorded on the tape: its inputs and what its backward rule needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvNode {
    x: Var,
    kernel: Var,
    bias: Option<Var>,
    window: Window,
    epilogue: Epilogue,
}

/// What each block multiplies by, and what follows the product.
struct Product<'a> {
    method: Method,
    kernel: &'a [f32],
    /// The kernel as Winograd's 36 matrices, present exactly when `method` is Winograd.
    transformed: Option<&'a [f32]>,
    bias: Option<&'a [f32]>,
    filters: usize,
    relu: bool,
}

/// Where the forward pass puts its result.
enum Output<'a> {
    /// The convolution's output (B, OH, OW, F).
    Full(&'a mut [f32]),
    /// Its max-pooled values (B, PH, PW, F), and where in its image's convolution output
    /// each came from (the index, as the bits of an f32).
    Pooled {
        y: &'a mut [f32],
        from: &'a mut [f32],
        pool: Window,
    },
}

/// Per block of images, in parallel: im2col into a block buffer, one product, the
/// epilogue; pooled straight from a block buffer when the output is pooled.
fn forward_blocks(x: &[f32], p: &Product, w: &Window, batch: usize, output: Output) {
    let image_len = w.input_pixels() * w.channels as usize;
    let conv_len = w.output_pixels() * p.filters;
    let per_block = images_per_block(w, p.filters, batch);
    let x_blocks = x.par_chunks(per_block * image_len);
    match output {
        Output::Full(y) => y
            .par_chunks_mut(per_block * conv_len)
            .zip(x_blocks)
            .for_each(|(y, x)| {
                with_block_buffers(|cols, _| convolve_block(x, p, w, cols, y));
            }),
        Output::Pooled { y, from, pool } => {
            let pooled_len = pool.output_pixels() * p.filters;
            y.par_chunks_mut(per_block * pooled_len)
                .zip(from.par_chunks_mut(per_block * pooled_len))
                .zip(x_blocks)
                .for_each(|((y, from), x)| {
                    with_block_buffers(|cols, conv| {
                        conv.resize(x.len() / image_len * conv_len, 0.0);
                        convolve_block(x, p, w, cols, conv);
                        let images = conv.chunks_exact(conv_len).zip(y.chunks_exact_mut(pooled_len));
                        for ((conv, y), from) in images.zip(from.chunks_exact_mut(pooled_len)) {
                            super::pool::max_image(conv, 0, &pool, y, from);
                        }
                        if p.relu {
                            mark_dead_maxima(y, from);
                        }
                    })
                });
        }
    }
}

thread_local! {
    /// Each thread's two block buffers (im2col's or Winograd's matrices, and a block's
    /// output or output gradient), kept from call to call: they are hundreds of kB, and
    /// fresh ones came from mmap and were faulted in page by page every step.
    static BLOCK_BUFFERS: std::cell::Cell<(Vec<f32>, Vec<f32>)> = const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// `f` with this thread's block buffers. They are taken out while `f` runs, so a nested
/// call (none is made today) would get fresh ones rather than share them.
fn with_block_buffers<R>(f: impl FnOnce(&mut Vec<f32>, &mut Vec<f32>) -> R) -> R {
    let (mut first, mut second) = BLOCK_BUFFERS.take();
    let result = f(&mut first, &mut second);
    BLOCK_BUFFERS.set((first, second));
    result
}

/// Where a ReLU made a window's maximum 0 (or it is NaN), its gradient must not reach
/// the convolution (the ReLU's mask); its source index becomes [`NO_SOURCE`] so backward
/// needs only the indices, not the pooled values too.
fn mark_dead_maxima(pooled: &[f32], from: &mut [f32]) {
    for (&max, from) in pooled.iter().zip(from) {
        // A select on the bits, not an `if`: as a branch it mispredicted on every other
        // value and cost more than the pooling.
        let keep = ((max > 0.0) as u32).wrapping_neg();
        *from = f32::from_bits((from.to_bits() & keep) | (NO_SOURCE.to_bits() & !keep));
    }
}

/// The source index of a maximum whose gradient goes nowhere: never a pixel's index, since
/// an image's output is checked to be indexable below `u32::MAX`.
const NO_SOURCE: f32 = f32::from_bits(u32::MAX);

/// One block: im2col of the images in `x` into `cols`, the product into `y`, then bias and
/// ReLU in one pass while `y` is in cache (or all of that by Winograd's method, which
/// keeps its transformed matrices in `cols`).
fn convolve_block(x: &[f32], p: &Product, w: &Window, cols: &mut Vec<f32>, y: &mut [f32]) {
    match p.method {
        Method::Winograd => {
            let u = p
                .transformed
                .expect("the kernel is transformed before the blocks");
            return winograd::convolve_block(x, w, u, (p.filters, p.bias, p.relu), cols, y);
        }
        Method::Direct => return direct_conv::convolve_block(x, w, p.kernel, p.bias, p.relu, y),
        Method::Im2col => {}
    }
    let depth = w.taps() * w.channels as usize;
    let rows = y.len() / p.filters;
    cols.resize(rows * depth, 0.0);
    im2col(x, w, cols);
    let (lhs, rhs) = (
        MatRef::row_major(cols, depth),
        MatRef::row_major(p.kernel, p.filters),
    );
    gemm_single_thread(rows, p.filters, depth, y, false, lhs, rhs);
    add_bias_relu(y, p.bias, p.filters, p.relu);
}

super::simd::widest_simd! {
    /// `y += bias` per row and ReLU if `relu`, in one pass.
    fn add_bias_relu(y: &mut [f32], bias: Option<&[f32]>, filters: usize, relu: bool) => add_bias_relu_body
}

/// Loops written out, no closures: a closure would be compiled without the target features.
#[inline(always)]
fn add_bias_relu_body(y: &mut [f32], bias: Option<&[f32]>, filters: usize, relu: bool) {
    // `if v < 0` rather than max(0): NaN must reach the loss (see unary.rs).
    match (bias, relu) {
        (Some(b), true) => {
            for row in y.chunks_exact_mut(filters) {
                for (v, b) in row.iter_mut().zip(b) {
                    let sum = *v + b;
                    *v = if sum < 0.0 { 0.0 } else { sum };
                }
            }
        }
        (Some(b), false) => {
            for row in y.chunks_exact_mut(filters) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
        (None, true) => {
            for v in y.iter_mut() {
                *v = if *v < 0.0 { 0.0 } else { *v };
            }
        }
        (None, false) => {}
    }
}

/// Copies each output pixel's receptive field into a row of `cols` (zeros in the padding),
/// for every image in `x`.
fn im2col(x: &[f32], w: &Window, cols: &mut [f32]) {
    let c = w.channels as usize;
    let (kh, kw, depth) = (w.height.kernel as usize, w.width.kernel as usize, w.taps() * c);
    let (image_len, line_len) = (w.input_pixels() * c, w.width.input as usize * c);
    let per_image = w.output_pixels() * depth;
    // Where each kernel row's input line starts (None in the padding), for one output row.
    let mut lines: Vec<Option<usize>> = vec![None; kh];
    for (image, dst) in x.chunks_exact(image_len).zip(cols.chunks_exact_mut(per_image)) {
        // Rows and columns counted out, and each kernel row's line found once per output
        // row: per-pixel index arithmetic cost as much as copying a one-channel pixel's
        // 9 values.
        let mut rows = dst.chunks_exact_mut(depth);
        for oh in 0..w.height.output as usize {
            for (i, line) in lines.iter_mut().enumerate() {
                *line = w.height.source(oh, i).map(|ih| ih * line_len);
            }
            for ow in 0..w.width.output as usize {
                let row = rows.next().expect("one im2col row per output pixel");
                let span = contiguous_span(w, ow);
                for (kernel_row, &line) in row.chunks_exact_mut(kw * c).zip(&lines) {
                    let Some(line) = line else {
                        kernel_row.fill(0.0);
                        continue;
                    };
                    if let Some(first) = span {
                        copy_run(kernel_row, &image[line + first..][..kw * c]);
                        continue;
                    }
                    for (j, field) in kernel_row.chunks_exact_mut(c).enumerate() {
                        match w.width.source(ow, j) {
                            Some(iw) => copy_run(field, &image[line + iw * c..][..c]),
                            None => field.fill(0.0),
                        }
                    }
                }
            }
        }
    }
}

/// Where, in a line of the input, output column `ow`'s kernel row starts, if it reads kw·c
/// consecutive values (no dilation, no tap in the padding): then it is copied at once.
#[inline(always)]
fn contiguous_span(w: &Window, ow: usize) -> Option<usize> {
    let c = w.channels as usize;
    let kw = w.width.kernel as usize;
    match (
        w.width.dilation,
        w.width.source(ow, 0),
        w.width.source(ow, kw - 1),
    ) {
        (1, Some(first), Some(_)) => Some(first * c),
        _ => None,
    }
}

/// `dst.copy_from_slice(src)` for the short runs a few-channel input gives (3 floats for a
/// 3×3 kernel over one channel): `copy_from_slice` calls `memmove`, whose call cost more
/// than such a copy and made im2col of MNIST's first layer a fifth of a training step.
/// With the length known at compile time the copy is a couple of register moves. (Whole
/// 16-float chunks for longer runs measured no faster than `memmove`.)
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
        dst[..N].copy_from_slice(&src[..N]);
    }
    match dst.len() {
        1 => fixed::<1>(dst, src),
        2 => fixed::<2>(dst, src),
        3 => fixed::<3>(dst, src),
        4 => fixed::<4>(dst, src),
        5 => fixed::<5>(dst, src),
        6 => fixed::<6>(dst, src),
        7 => fixed::<7>(dst, src),
        8 => fixed::<8>(dst, src),
        9 => fixed::<9>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// Adds each row of `dcols` back onto the input pixels it was copied from (im2col's
/// adjoint), for every image in `dx`.
fn col2im(dcols: &[f32], w: &Window, dx: &mut [f32]) {
    let c = w.channels as usize;
    let (kw, depth) = (w.width.kernel as usize, w.taps() * c);
    let per_image = w.output_pixels() * depth;
    let (image_len, line_len) = (w.input_pixels() * c, w.width.input as usize * c);
    let add = |dst: &mut [f32], src: &[f32]| dst.iter_mut().zip(src).for_each(|(d, g)| *d += g);
    for (image, src) in dx.chunks_exact_mut(image_len).zip(dcols.chunks_exact(per_image)) {
        let mut rows = src.chunks_exact(depth);
        for oh in 0..w.height.output as usize {
            for ow in 0..w.width.output as usize {
                let row = rows.next().expect("one im2col row per output pixel");
                let span = contiguous_span(w, ow);
                for (i, kernel_row) in row.chunks_exact(kw * c).enumerate() {
                    let Some(ih) = w.height.source(oh, i) else {
                        continue;
                    };
                    let line = &mut image[ih * line_len..][..line_len];
                    if let Some(first) = span {
                        add(&mut line[first..first + kw * c], kernel_row);
                        continue;
                    }
                    for (j, field) in kernel_row.chunks_exact(c).enumerate() {
                        if let Some(iw) = w.width.source(ow, j) {
                            add(&mut line[iw * c..(iw + 1) * c], field);
                        }
                    }
                }
            }
        }
    }
}

/// `dkernel += colsᵀ · dy`; `dx += col2im(dy · kernelᵀ)`, block by block, where `dy` is
/// the gradient of the convolution's output, rebuilt per block from `g` (the gradient of
/// `out`, after the epilogue). Each block's im2col matrix is rebuilt in cache rather than
/// kept from the forward pass.
pub(crate) fn backward(tape: &mut Tape, node: ConvNode, out: Var, g: &[f32]) {
    let ConvNode {
        x,
        kernel,
        bias,
        window,
        ..
    } = node;
    let (kh, kw, c, filters) = {
        let d = tape.shape(kernel);
        (d.dims()[0], d.dims()[1], d.dims()[2], d.dims()[3])
    };
    let depth = kh * kw * c;
    // gemm is slow on a transposed right-hand side; the kernel is small, transpose it once
    // (with Winograd, each of its 36 transformed matrices).
    let method = Method::of(&window, tape.shape(x).dims()[0]);
    let kernel_t = match method {
        Method::Winograd => {
            let (mut u, mut u_t) = (
                tape.alloc(winograd::POINTS * c * filters),
                tape.alloc(winograd::POINTS * c * filters),
            );
            winograd::transposed_kernel(tape.value(kernel), (c, filters), &mut u, &mut u_t);
            tape.recycle(u);
            u_t
        }
        Method::Direct | Method::Im2col => {
            let mut kernel_t = tape.alloc(depth * filters);
            super::matmul::transpose(tape.value(kernel), depth, filters, &mut kernel_t);
            kernel_t
        }
    };
    // Each summation group's kernel and bias gradients, from the tape's buffers (with
    // Winograd they are 290 kB each, which fresh came from mmap every step).
    let kernel_len = kernel_gradient_len(&window, filters, method);
    let mut partials: [Vec<f32>; SUM_GROUPS] =
        std::array::from_fn(|_| tape.alloc_zeroed(kernel_len + filters));
    if tape.requires_grad(x) {
        tape.accumulate_or_write(x, |t, dx, fresh| {
            let up = Upstream::of(t, &node, out, g);
            let dx = Some((dx, fresh));
            let product = (method, filters, &up);
            backward_blocks(t.value(x), &kernel_t, &window, product, dx, &mut partials);
        });
    } else {
        let up = Upstream::of(tape, &node, out, g);
        let product = (method, filters, &up);
        backward_blocks(tape.value(x), &kernel_t, &window, product, None, &mut partials);
    }
    tape.recycle(kernel_t);
    let (dk_sum, db_sum) = partials[0].split_at(kernel_len);
    match method {
        Method::Winograd => tape.accumulate(kernel, |_, dk| winograd::kernel_gradient(dk_sum, dk)),
        Method::Direct | Method::Im2col => {
            tape.accumulate(kernel, |_, dk| super::parallel::axpy(dk, 1.0, dk_sum))
        }
    }
    if let Some(b) = bias {
        tape.accumulate(b, |_, db| super::parallel::axpy(db, 1.0, db_sum));
    }
    for partial in partials {
        tape.recycle(partial);
    }
}

/// The gradient reaching the convolution's output, image by image.
enum Upstream<'a> {
    /// `g` is its gradient (per image `conv_len` values), masked where a fused ReLU's
    /// output is 0.
    Direct {
        g: &'a [f32],
        relu_output: Option<&'a [f32]>,
        conv_len: usize,
    },
    /// `g` is the gradient of its max pooling: each value goes to where its maximum came
    /// from (nowhere where a fused ReLU made that maximum 0: see [`mark_dead_maxima`]).
    Pooled {
        g: &'a [f32],
        from: &'a [f32],
        pool: Window,
        conv_len: usize,
    },
}

impl<'a> Upstream<'a> {
    /// What `node`'s epilogue makes of `g`, the gradient of its output `out`.
    fn of(t: &'a Tape<'_>, node: &ConvNode, out: Var, g: &'a [f32]) -> Upstream<'a> {
        let filters = t.shape(node.kernel).dims()[3];
        let conv_len = node.window.output_pixels() * filters;
        match node.epilogue.max_pool {
            None => Upstream::Direct {
                g,
                relu_output: node.epilogue.relu.then(|| t.value(out)),
                conv_len,
            },
            Some(pool) => Upstream::Pooled {
                g,
                from: t.saved(out),
                pool,
                conv_len,
            },
        }
    }

    /// The output gradient of `images` images from `first` on: a slice of `g` itself when
    /// nothing is to be done to it, else built in `scratch`.
    fn block<'s>(&'s self, first: usize, images: usize, scratch: &'s mut Vec<f32>) -> &'s [f32] {
        match *self {
            Upstream::Direct {
                g,
                relu_output,
                conv_len,
            } => {
                let g = &g[first * conv_len..][..images * conv_len];
                let Some(y) = relu_output else { return g };
                scratch.resize(g.len(), 0.0);
                let y = &y[first * conv_len..][..images * conv_len];
                for ((m, &g), &y) in scratch.iter_mut().zip(g).zip(y) {
                    *m = if y > 0.0 { g } else { 0.0 };
                }
                scratch
            }
            Upstream::Pooled {
                g,
                from,
                pool,
                conv_len,
            } => {
                let pooled_len = pool.output_pixels() * pool.channels as usize;
                let span = first * pooled_len..(first + images) * pooled_len;
                let per_image = g[span.clone()]
                    .chunks_exact(pooled_len)
                    .zip(from[span].chunks_exact(pooled_len));
                let (disjoint, covering) = super::pool::tiling(&pool);
                if !covering {
                    scratch.clear();
                }
                scratch.resize(images * conv_len, 0.0);
                for (dy, (g, from)) in scratch.chunks_exact_mut(conv_len).zip(per_image) {
                    if disjoint {
                        super::pool::max_image_gradient(g, from, &pool, dy);
                        continue;
                    }
                    for (&g, &from) in g.iter().zip(from) {
                        if from.to_bits() != NO_SOURCE.to_bits() {
                            dy[from.to_bits() as usize] += g;
                        }
                    }
                }
                scratch
            }
        }
    }
}

/// The kernel gradient followed by the bias gradient, summed over blocks, into
/// `partials[0]` (the others, like it, zeroed by the caller, hold the other groups' sums),
/// and, when `dx` is given, the input gradient of each block. A fresh `dx` holds no gradient
/// yet (nor zeros): each block zeroes its part just before adding to it, while it is in cache.
fn backward_blocks(
    x: &[f32],
    kernel_t: &[f32],
    w: &Window,
    (method, filters, upstream): (Method, usize, &Upstream),
    dx: Option<(&mut [f32], bool)>,
    partials: &mut [Vec<f32>],
) {
    let image_len = w.input_pixels() * w.channels as usize;
    let batch = x.len() / image_len.max(1);
    let per_block = images_per_block(w, filters, batch);
    let blocks = batch.div_ceil(per_block);
    // A fixed number of groups, each summing its blocks in order, then the groups summed in
    // order: the result does not depend on which thread ran what (a work-stealing reduce
    // would change the summation order, and so the bits, from run to run).
    let per_group = blocks.div_ceil(SUM_GROUPS) * per_block;
    let groups = batch.div_ceil(per_group.max(1));
    let fresh_dx = dx.as_ref().is_some_and(|(_, fresh)| *fresh);
    let dx_groups: Vec<Option<&mut [f32]>> = match dx {
        Some((dx, _)) => dx.chunks_mut(per_group * image_len).map(Some).collect(),
        None => (0..groups).map(|_| None).collect(),
    };
    dx_groups
        .into_par_iter()
        .zip(x.par_chunks(per_group * image_len))
        .zip(partials.par_iter_mut())
        .enumerate()
        .for_each(|(i, ((dx, x), sums))| {
            let group = Group {
                x,
                first_image: i * per_group,
                fresh_dx,
                method,
            };
            with_block_buffers(|cols, scratch| {
                let buffers = (cols, scratch);
                group.backward(kernel_t, w, (filters, per_block), upstream, dx, sums, buffers)
            })
        });
    let (total, rest) = partials.split_first_mut().expect("SUM_GROUPS > 0");
    for partial in rest.iter().take(groups.saturating_sub(1)) {
        total.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
    }
}

/// Groups the kernel gradient's partial sums are split into (see [`backward_blocks`]).
const SUM_GROUPS: usize = 4;

/// One group's images (the batch's from `first_image` on); whether its `dx` must be zeroed
/// before the first addition.
struct Group<'a> {
    x: &'a [f32],
    first_image: usize,
    fresh_dx: bool,
    method: Method,
}

impl Group<'_> {
    /// Block by block in order: the kernel and bias gradients added to `sums` (zeroed by
    /// the caller), and each block's input gradient when `dx` is given. `cols` and
    /// `scratch` are the thread's block buffers.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        kernel_t: &[f32],
        w: &Window,
        (filters, per_block): (usize, usize),
        upstream: &Upstream,
        mut dx: Option<&mut [f32]>,
        sums: &mut [f32],
        (cols, scratch): (&mut Vec<f32>, &mut Vec<f32>),
    ) {
        let image_len = w.input_pixels() * w.channels as usize;
        let kernel_len = kernel_gradient_len(w, filters, self.method);
        for (b, x) in self.x.chunks(per_block * image_len).enumerate() {
            let images = x.len() / image_len;
            let g = upstream.block(self.first_image + b * per_block, images, scratch);
            let (dk, db) = sums.split_at_mut(kernel_len);
            for row in g.chunks_exact(filters) {
                db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
            }
            let block_dx = dx.as_deref_mut().map(|dx| {
                let block = &mut dx[b * per_block * image_len..][..images * image_len];
                if self.fresh_dx {
                    block.fill(0.0);
                }
                block
            });
            match self.method {
                Method::Winograd => winograd::backward_block(x, w, kernel_t, g, cols, dk, block_dx),
                Method::Direct | Method::Im2col => {
                    im2col_backward_block(x, w, (kernel_t, self.method), g, cols, dk, block_dx)
                }
            }
        }
    }
}

/// Floats in the kernel's gradient as backward sums it: the kernel's own size, or with
/// Winograd its 16 transformed matrices (turned into the kernel's gradient at the end).
fn kernel_gradient_len(w: &Window, filters: usize, method: Method) -> usize {
    let per_pair = match method {
        Method::Winograd => winograd::POINTS,
        Method::Direct | Method::Im2col => w.taps(),
    };
    per_pair * w.channels as usize * filters
}

/// One block's backward through im2col: `dk += colsᵀ · dy` (computed directly instead for
/// [`Method::Direct`]), and when `dx` is given, `dx += col2im(dy · kernelᵀ)`.
fn im2col_backward_block(
    x: &[f32],
    w: &Window,
    (kernel_t, method): (&[f32], Method),
    dy: &[f32],
    cols: &mut Vec<f32>,
    dk: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let depth = w.taps() * w.channels as usize;
    let filters = kernel_t.len() / depth;
    let rows = dy.len() / filters;
    if method == Method::Direct {
        direct_conv::kernel_gradient(x, w, dy, dk);
    } else {
        cols.resize(rows * depth, 0.0);
        im2col(x, w, cols);
        let cols_t = MatRef {
            data: cols,
            row_stride: 1,
            col_stride: depth,
        };
        let dy = MatRef::row_major(dy, filters);
        gemm_single_thread(depth, filters, rows, dk, true, cols_t, dy);
    }
    if let Some(dx) = dx {
        // The im2col buffer is free again: reuse it for this block's dcols.
        cols.resize(rows * depth, 0.0);
        let (lhs, rhs) = (MatRef::row_major(dy, filters), MatRef::row_major(kernel_t, depth));
        gemm_single_thread(rows, depth, filters, cols, false, lhs, rhs);
        col2im(cols, w, dx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck;

    fn window(
        input: (usize, usize, usize),
        kernel: (usize, usize),
        stride: usize,
        dilation: usize,
        padding: Padding,
    ) -> Window {
        Window {
            height: Axis::new(input.0, kernel.0, stride, dilation, padding).unwrap(),
            width: Axis::new(input.1, kernel.1, stride, dilation, padding).unwrap(),
            channels: input.2 as u32,
        }
    }

    /// The definition, looped directly: y[b,oh,ow,f] = Σ x[b, ih, iw, c]·k[i, j, c, f].
    fn naive(x: &[f32], k: &[f32], w: &Window, batch: usize, filters: usize) -> Vec<f32> {
        let c = w.channels as usize;
        let (oh_n, ow_n) = (w.height.output as usize, w.width.output as usize);
        let mut y = vec![0.0; batch * oh_n * ow_n * filters];
        for b in 0..batch {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    for f in 0..filters {
                        let mut s = 0.0;
                        for i in 0..w.height.kernel as usize {
                            for j in 0..w.width.kernel as usize {
                                let (Some(ih), Some(iw)) = (w.height.source(oh, i), w.width.source(ow, j))
                                else {
                                    continue;
                                };
                                for ch in 0..c {
                                    let xi = ((b * w.height.input as usize + ih) * w.width.input as usize
                                        + iw)
                                        * c
                                        + ch;
                                    let ki = ((i * w.width.kernel as usize + j) * c + ch) * filters + f;
                                    s += x[xi] * k[ki];
                                }
                            }
                        }
                        y[((b * oh_n + oh) * ow_n + ow) * filters + f] = s;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn output_sizes_follow_tensorflow() {
        // valid: ⌊(in − span) / stride⌋ + 1; same: ⌈in / stride⌉ with the odd pad after.
        assert_eq!(Axis::new(28, 3, 1, 1, Padding::Valid).unwrap().output, 26);
        assert_eq!(Axis::new(28, 3, 2, 1, Padding::Valid).unwrap().output, 13);
        assert_eq!(Axis::new(28, 3, 1, 2, Padding::Valid).unwrap().output, 24);
        let same = Axis::new(28, 3, 2, 1, Padding::Same).unwrap();
        assert_eq!((same.output, same.pad_before), (14, 0)); // total pad 1: all after
        let same = Axis::new(7, 4, 1, 1, Padding::Same).unwrap();
        assert_eq!((same.output, same.pad_before), (7, 1)); // total pad 3: 1 before, 2 after
        assert!(Axis::new(2, 3, 1, 1, Padding::Valid).is_none());
        assert!(Axis::new(5, 3, 1, 3, Padding::Valid).is_none()); // span 7 > 5
    }

    #[test]
    fn matches_the_definition_for_strides_padding_and_dilation() {
        for (stride, dilation, padding) in [
            (1, 1, Padding::Valid),
            (2, 1, Padding::Same),
            (1, 2, Padding::Same),
            (2, 2, Padding::Valid),
        ] {
            let w = window((7, 6, 3), (3, 2), stride, dilation, padding);
            let x = gradcheck::random(2 * 7 * 6 * 3, 1);
            let k = gradcheck::random(3 * 2 * 3 * 4, 2);
            let mut p = crate::params::ParamStore::new();
            let mut ws = crate::autograd::Workspace::new();
            let mut t = Tape::inference(&mut p, &mut ws);
            let xv = t.input(&x, Shape::new(&[2, 7, 6, 3]));
            let kv = t.input(&k, Shape::new(&[3, 2, 3, 4]));
            let y = t.conv2d(xv, kv, None, w).unwrap();
            let expected = naive(&x, &k, &w, 2, 4);
            for (a, e) in t.value(y).iter().zip(&expected) {
                assert!(
                    (a - e).abs() < 1e-4,
                    "{stride} {dilation} {padding:?}: {a} vs {e}"
                );
            }
        }
    }

    /// Each way a convolution is computed, chosen by its geometry, against the definition
    /// and gradient-checked: direct (one and three channels, with padding, stride and
    /// dilation), im2col (a deeper field with stride or dilation) and Winograd.
    #[test]
    fn every_method_matches_the_definition_and_checks_its_gradients() {
        let cases = [
            (window((7, 6, 1), (3, 3), 1, 1, Padding::Same), Method::Direct),
            (window((7, 6, 3), (3, 3), 2, 2, Padding::Same), Method::Direct),
            (window((6, 5, 4), (3, 3), 2, 1, Padding::Same), Method::Im2col),
            (window((6, 5, 4), (3, 3), 1, 2, Padding::Valid), Method::Im2col),
            (window((6, 5, 8), (3, 3), 1, 1, Padding::Same), Method::Winograd),
        ];
        // Too few images for Winograd's kernel transform to pay: im2col.
        assert_eq!(Method::of(&cases[4].0, MIN_WINOGRAD_BATCH - 1), Method::Im2col);
        for (i, (w, method)) in cases.into_iter().enumerate() {
            let batch = 4;
            assert_eq!(Method::of(&w, batch), method, "case {i}");
            let (h, wd, c) = (
                w.height.input as usize,
                w.width.input as usize,
                w.channels as usize,
            );
            // 17 filters for the direct cases: a whole 16-lane chunk and a remainder.
            let filters = if method == Method::Direct { 17 } else { 3 };
            let seed = 70 + 4 * i as u64;
            let x = gradcheck::random(batch * h * wd * c, seed);
            let k = gradcheck::random(9 * c * filters, seed + 1);
            let mut p = crate::params::ParamStore::new();
            let mut ws = crate::autograd::Workspace::new();
            let mut t = Tape::inference(&mut p, &mut ws);
            let xv = t.input(&x, Shape::new(&[batch, h, wd, c]));
            let kv = t.input(&k, Shape::new(&[3, 3, c, filters]));
            let y = t.conv2d(xv, kv, None, w).unwrap();
            for (a, e) in t.value(y).iter().zip(naive(&x, &k, &w, batch, filters)) {
                assert!((a - e).abs() < 1e-4, "case {i} ({method:?}): {a} vs {e}");
            }
            gradcheck::check(
                &format!("conv2d {method:?} case {i}"),
                &[
                    (&[batch, h, wd, c], x),
                    (&[3, 3, c, filters], k),
                    (&[filters], gradcheck::random(filters, seed + 2)),
                ],
                |t, v| t.conv2d(v[0], v[1], Some(v[2]), w).unwrap(),
            );
        }
    }

    #[test]
    fn gradient_checks_strided_padded_and_dilated() {
        for (name, stride, dilation, padding) in [
            ("conv2d valid", 1, 1, Padding::Valid),
            ("conv2d same stride 2", 2, 1, Padding::Same),
            ("conv2d dilated same", 1, 2, Padding::Same),
            ("conv2d strided dilated valid", 2, 2, Padding::Valid),
        ] {
            let w = window((6, 5, 2), (3, 2), stride, dilation, padding);
            gradcheck::check(
                name,
                &[
                    (&[2, 6, 5, 2], gradcheck::random(2 * 6 * 5 * 2, 3)),
                    (&[3, 2, 2, 3], gradcheck::random(3 * 2 * 2 * 3, 4)),
                    (&[3], gradcheck::random(3, 5)),
                ],
                |t, v| t.conv2d(v[0], v[1], Some(v[2]), w).unwrap(),
            );
        }
    }

    /// The fused ReLU against conv2d then relu, each gradient-checked on its own: values
    /// and every gradient must agree (a finite-difference check of the fused op would trip
    /// over outputs near the kink).
    #[test]
    fn fused_relu_equals_conv_then_relu() {
        let w = window((6, 5, 2), (3, 2), 1, 1, Padding::Same);
        let inputs = [
            (vec![2, 6, 5, 2], gradcheck::random(2 * 6 * 5 * 2, 8)),
            (vec![3, 2, 2, 3], gradcheck::random(3 * 2 * 2 * 3, 9)),
            (vec![3], gradcheck::random(3, 10)),
        ];
        let run = |fused: bool| {
            values_and_gradients(&inputs, |t, v| match fused {
                true => t.conv2d_relu(v[0], v[1], Some(v[2]), w).unwrap(),
                false => {
                    let y = t.conv2d(v[0], v[1], Some(v[2]), w).unwrap();
                    t.relu(y)
                }
            })
        };
        for (a, b) in run(true).iter().zip(run(false)) {
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
        }
    }

    /// The output of `build` over `inputs` (leaves), and each input's gradient after a
    /// random seed is backpropagated.
    fn values_and_gradients(
        inputs: &[(Vec<usize>, Vec<f32>)],
        build: impl Fn(&mut Tape, &[Var]) -> Var,
    ) -> Vec<Vec<f32>> {
        let mut p = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = Tape::new(&mut p, &mut ws);
        let v: Vec<Var> = inputs
            .iter()
            .map(|(d, x)| t.leaf(x, Shape::new(d), true))
            .collect();
        let y = build(&mut t, &v);
        let seed = gradcheck::random(t.value(y).len(), 11);
        t.backward_from(y, &seed);
        let mut out = vec![t.value(y).to_vec()];
        out.extend(v.iter().map(|&v| t.grad(v).unwrap().to_vec()));
        out
    }

    /// Conv2d with ReLU (if `relu`) and max pooling, fused or as separate ops: the output
    /// and every input's gradient.
    fn conv_then_pool(
        fused: bool,
        relu: bool,
        conv: Window,
        pool: Window,
        inputs: &[(Vec<usize>, Vec<f32>)],
    ) -> Vec<Vec<f32>> {
        values_and_gradients(inputs, |t, v| {
            if fused {
                return t
                    .conv2d_max_pool(v[0], v[1], Some(v[2]), conv, relu, pool)
                    .unwrap();
            }
            let y = match relu {
                true => t.conv2d_relu(v[0], v[1], Some(v[2]), conv).unwrap(),
                false => t.conv2d(v[0], v[1], Some(v[2]), conv).unwrap(),
            };
            t.max_pool2d(y, pool).unwrap()
        })
    }

    /// The fused convolution + ReLU + max pooling gives the separate ops' values and
    /// gradients bit for bit: the same blocks, products and sums, with the pooling's
    /// scatter and the ReLU's mask applied to each block in cache. Covers pools that drop
    /// the last row and column, overlapping windows, `same` padding, and enough images
    /// for several blocks and summation groups.
    #[test]
    fn fused_max_pool_equals_separate_ops() {
        let cases = [
            // (input, kernel, conv padding, pool size, pool stride, pool padding, batch)
            ((7, 6, 3), (3, 2), Padding::Valid, 2, 2, Padding::Valid, 3),
            ((6, 5, 2), (3, 3), Padding::Same, 3, 1, Padding::Valid, 2),
            ((6, 5, 2), (2, 2), Padding::Same, 2, 2, Padding::Same, 2),
            ((12, 12, 1), (3, 3), Padding::Valid, 2, 2, Padding::Valid, 37),
        ];
        for (i, (input, k, conv_padding, size, stride, pool_padding, batch)) in cases.into_iter().enumerate()
        {
            let conv = window(input, k, 1, 1, conv_padding);
            let filters = 5;
            let pooled_input = (conv.height.output as usize, conv.width.output as usize, filters);
            let pool = window(pooled_input, (size, size), stride, 1, pool_padding);
            let seed = 20 + 3 * i as u64;
            let inputs = [
                (
                    vec![batch, input.0, input.1, input.2],
                    gradcheck::random(batch * input.0 * input.1 * input.2, seed),
                ),
                (
                    vec![k.0, k.1, input.2, filters],
                    gradcheck::random(k.0 * k.1 * input.2 * filters, seed + 1),
                ),
                (vec![filters], gradcheck::random(filters, seed + 2)),
            ];
            for relu in [true, false] {
                let fused = conv_then_pool(true, relu, conv, pool, &inputs);
                let separate = conv_then_pool(false, relu, conv, pool, &inputs);
                for (which, (a, b)) in ["output", "dx", "dkernel", "dbias"]
                    .iter()
                    .zip(fused.iter().zip(&separate))
                {
                    let same = a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "case {i} relu {relu}: {which} differs");
                }
            }
        }
    }

    #[test]
    fn gradient_check_of_fused_max_pool() {
        let conv = window((6, 5, 2), (3, 2), 1, 1, Padding::Same);
        let pool = window((6, 5, 3), (2, 2), 2, 1, Padding::Valid);
        gradcheck::check(
            "conv2d + max pool fused",
            &[
                (&[2, 6, 5, 2], gradcheck::random(2 * 6 * 5 * 2, 13)),
                (&[3, 2, 2, 3], gradcheck::random(3 * 2 * 2 * 3, 14)),
                (&[3], gradcheck::random(3, 15)),
            ],
            |t, v| {
                t.conv2d_max_pool(v[0], v[1], Some(v[2]), conv, false, pool)
                    .unwrap()
            },
        );
    }

    #[test]
    fn a_pool_that_does_not_fit_the_output_is_an_error() {
        let conv = window((6, 5, 2), (3, 3), 1, 1, Padding::Valid);
        let pool = window((6, 5, 4), (2, 2), 2, 1, Padding::Valid); // conv gives 4×3×4
        let mut p = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = Tape::inference(&mut p, &mut ws);
        let x = t.input(&[0.0; 6 * 5 * 2], Shape::new(&[1, 6, 5, 2]));
        let k = t.input(&[0.0; 3 * 3 * 2 * 4], Shape::new(&[3, 3, 2, 4]));
        let err = t
            .conv2d_max_pool(x, k, None, conv, true, pool)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(batch, 6, 5, 4)") && err.contains("[1, 4, 3, 4]"),
            "{err}"
        );
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let w = window((6, 5, 2), (3, 3), 1, 1, Padding::Valid);
        let mut p = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = Tape::inference(&mut p, &mut ws);
        let x = t.input(&[0.0; 6 * 5 * 3], Shape::new(&[1, 6, 5, 3]));
        let k = t.input(&[0.0; 3 * 3 * 2 * 4], Shape::new(&[3, 3, 2, 4]));
        let err = t.conv2d(x, k, None, w).unwrap_err().to_string();
        assert!(err.contains("(batch, 6, 5, 2)"), "{err}");
    }
}
