//! The static int8 path for convolutional networks built of Conv2D, MaxPooling2D, Dense
//! and shape-only layers (Reshape, Flatten, Dropout): the input is quantized once, and
//! codes flow from layer to layer. Each product's epilogue requantizes straight into the
//! next quantized layer's input mapping (activation folded in), max pooling compares codes
//! (a mapping with a positive scale keeps order), and shape-only layers cost nothing, as
//! channels-last images are already flat rows. Only the last layer's outputs become f32.
//!
//! Images run in blocks (one task each): convolutions image by image (im2col of the codes,
//! then the u8×i8 product), Dense layers over the block's rows at once.

use rayon::prelude::*;

use super::gemm_i8::gemm_u8i8;
use super::network::{activate, im2col_u8_into, quantize_into, simple_activation, QuantizedLayer, Rescale};
use super::params::AffineU8;
use crate::nn::{Activation, Layer, Network};
use crate::ops::conv2d::Window;

/// Images per task.
const BLOCK_IMAGES: usize = 16;

/// One step of the chain.
#[derive(Debug, Clone)]
pub(super) enum Stage {
    /// Quantized layer `layer` (an index into the network's quantized layers), requantizing
    /// into `out` (None: the last, f32 outputs).
    Product {
        layer: usize,
        out: Option<Epilogue>,
    },
    MaxPool(Window),
}

/// How a product's i32 sums become the next layer's codes: per column,
/// code = (sum − zero_sum) · multiplier + offset, floored at `floor` for a ReLU.
#[derive(Debug, Clone)]
pub(super) struct Epilogue {
    zero_sums: Vec<i32>,
    multipliers: Vec<f32>,
    offsets: Vec<f32>,
    /// The next mapping, for activations computed on real values.
    next: AffineU8,
    activation: Activation,
}

/// The chain for `network`, or None when it has a layer the chain does not run (batch
/// normalization that was not folded, average pooling, …), an activation other than the
/// simple ones before the last product, or a layer after the last product that changes
/// values, or when the model is not statically quantized.
pub(super) fn plan(network: &Network, input_size: usize, quantized: &[QuantizedLayer]) -> Option<Vec<Stage>> {
    if quantized.iter().any(|q| q.input.is_none()) {
        return None;
    }
    let mut stages = Vec::new();
    let mut next_product = 0;
    for (i, layer) in network.layers.iter().enumerate() {
        match layer {
            Layer::Dense { .. } | Layer::Conv2d(_) => {
                let q = quantized.get(next_product).filter(|q| q.layer == i)?;
                // A Dense layer here reads whole samples (after a Flatten); one applied to
                // each pixel of an image is left to the layer-by-layer path.
                let input = match i {
                    0 => input_size,
                    _ => network.shapes()[i - 1].numel(),
                };
                if q.window.is_none() && input != q.weights.k {
                    return None;
                }
                let out = match quantized.get(next_product + 1) {
                    Some(next) => {
                        if !simple_activation(q.activation) {
                            return None;
                        }
                        Some(Epilogue::new(q, next.input?))
                    }
                    None => None,
                };
                stages.push(Stage::Product {
                    layer: next_product,
                    out,
                });
                next_product += 1;
            }
            // Pooling before the first product compares the input's codes, as well.
            Layer::MaxPool2d(w) if next_product < quantized.len() => stages.push(Stage::MaxPool(*w)),
            Layer::Flatten | Layer::Dropout { .. } | Layer::Reshape(_) => {}
            _ => return None,
        }
    }
    // The chain ends in a Dense layer's rows (a convolution's outputs would be images).
    let ends_dense = quantized.last().is_some_and(|q| q.window.is_none());
    (next_product == quantized.len() && ends_dense).then_some(stages)
}

impl Epilogue {
    fn new(q: &QuantizedLayer, next: AffineU8) -> Epilogue {
        let input = q.input.expect("static");
        let zero = input.zero_point as i32;
        let inverse = 1.0 / next.scale;
        let shift = next.zero_point as f32 + 0.5; // + ½ so that truncation rounds
        Epilogue {
            zero_sums: q.weights.column_sums.iter().map(|c| zero * c).collect(),
            multipliers: q.scales.iter().map(|s| input.scale * s * inverse).collect(),
            offsets: q.bias.iter().map(|b| b * inverse + shift).collect(),
            next,
            activation: q.activation,
        }
    }

    /// Rows of sums → rows of next-layer codes, vectorized for AVX-512 where the CPU has
    /// it (the crate is built for baseline x86-64, whose SSE2 does 4 lanes at a time).
    fn apply_rows(&self, sums: &[i32], codes: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512F and AVX-512BW (checked just above).
            unsafe { self.apply_rows_avx512(sums, codes) };
            return;
        }
        self.apply_rows_portable(sums, codes);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn apply_rows_avx512(&self, sums: &[i32], codes: &mut [u8]) {
        self.apply_rows_portable(sums, codes);
    }

    #[inline(always)]
    fn apply_rows_portable(&self, sums: &[i32], codes: &mut [u8]) {
        let n = self.zero_sums.len();
        for (row, to) in sums.chunks_exact(n).zip(codes.chunks_exact_mut(n)) {
            self.apply(row, to);
        }
    }

    /// One row of sums → one row of next-layer codes.
    #[inline(always)]
    fn apply(&self, sums: &[i32], codes: &mut [u8]) {
        let columns = codes
            .iter_mut()
            .zip(sums)
            .zip(&self.zero_sums)
            .zip(&self.multipliers)
            .zip(&self.offsets);
        match self.activation {
            // A linear layer or a ReLU needs no real value: ReLU's floor is the code of 0.
            Activation::Linear | Activation::Relu => {
                let floor = match self.activation {
                    Activation::Relu => self.next.zero_point as f32 + 0.5,
                    _ => 0.0,
                };
                for ((((c, &s), &z), &m), &o) in columns {
                    // Clamped by hand rather than by `as u8`'s saturation, which would
                    // keep this loop scalar; + ½ was in the offset, so truncation rounds.
                    #[allow(clippy::manual_clamp)] // clamp would keep a NaN; max/min send it to 0
                    let v = ((s - z) as f32 * m + o).max(floor).min(255.0);
                    // SAFETY: v is finite and within 0..=255 (max/min above).
                    *c = unsafe { v.to_int_unchecked::<i32>() } as u8;
                }
            }
            a => {
                let (scale, zero) = (self.next.scale, self.next.zero_point as f32);
                for ((((c, &s), &z), &m), &o) in columns {
                    let real = ((s - z) as f32 * m + o - zero - 0.5) * scale;
                    *c = self.next.quantize(activate(a, real));
                }
            }
        }
    }
}

/// Buffers one task reuses across its blocks.
#[derive(Default)]
struct Scratch {
    codes: Vec<u8>,
    next: Vec<u8>,
    cols: Vec<u8>,
    sums: Vec<i32>,
}

/// Runs the chain over `images` samples in `x`; returns the last product's outputs before
/// its activation (the caller applies it, as the Dense chain's caller does).
pub(super) fn run(
    stages: &[Stage],
    quantized: &[QuantizedLayer],
    input_size: usize,
    x: &[f32],
    images: usize,
) -> Vec<f32> {
    let last = quantized.last().expect("at least one product");
    let outputs = last.weights.n;
    let mut y = vec![0.0f32; images * outputs];
    x.par_chunks(BLOCK_IMAGES * input_size)
        .zip(y.par_chunks_mut(BLOCK_IMAGES * outputs))
        .for_each_init(Scratch::default, |s, (x, y)| {
            run_block(stages, quantized, input_size, x, y, s)
        });
    y
}

fn run_block(
    stages: &[Stage],
    quantized: &[QuantizedLayer],
    input_size: usize,
    x: &[f32],
    y: &mut [f32],
    s: &mut Scratch,
) {
    let images = x.len() / input_size;
    let first = quantized[0].input.expect("static");
    s.codes.resize(x.len(), 0);
    for (image, codes) in x
        .chunks_exact(input_size)
        .zip(s.codes.chunks_exact_mut(input_size))
    {
        quantize_into(image, first, codes);
    }
    let mut per_image = input_size; // code bytes per image in `s.codes`
    for stage in stages {
        match stage {
            Stage::MaxPool(w) => {
                let out_len = w.output_pixels() * w.channels as usize;
                s.next.resize(images * out_len, 0);
                for (image, out) in s
                    .codes
                    .chunks_exact(per_image)
                    .zip(s.next.chunks_exact_mut(out_len))
                {
                    max_pool_u8(image, w, out);
                }
                per_image = out_len;
            }
            Stage::Product { layer, out } => {
                let q = &quantized[*layer];
                let n = q.weights.n;
                match q.window {
                    Some(w) => {
                        let pixels = w.output_pixels();
                        s.next.resize(images * pixels * n, 0);
                        // `plan` ends every chain in a Dense layer: a convolution requantizes.
                        let e = out.as_ref().expect("a convolution is never last in the chain");
                        for (b, image) in s.codes.chunks_exact(per_image).enumerate() {
                            let zero = q.input.expect("static").zero_point;
                            im2col_u8_into(image, &w, q.weights.k_padded, zero, &mut s.cols);
                            s.sums.resize(pixels * n, 0);
                            gemm_u8i8(&s.cols, pixels, &q.weights, &mut s.sums);
                            e.apply_rows(&s.sums, &mut s.next[b * pixels * n..][..pixels * n]);
                        }
                        per_image = pixels * n;
                    }
                    None => {
                        // The block's rows, padded to the kernel's k.
                        let padded = q.weights.k_padded;
                        let zero = q.input.expect("static").zero_point;
                        s.cols.clear();
                        for image in s.codes.chunks_exact(per_image) {
                            s.cols.extend_from_slice(image);
                            s.cols.resize(s.cols.len() + padded - per_image, zero);
                        }
                        s.sums.resize(images * n, 0);
                        gemm_u8i8(&s.cols, images, &q.weights, &mut s.sums);
                        match out {
                            Some(e) => {
                                s.next.resize(images * n, 0);
                                e.apply_rows(&s.sums, &mut s.next);
                            }
                            None => finish(q, &s.sums, y),
                        }
                        per_image = n;
                    }
                }
                if out.is_none() {
                    return;
                }
            }
        }
        std::mem::swap(&mut s.codes, &mut s.next);
    }
}

/// The last product's real outputs, before its activation: rescaled sums plus bias.
fn finish(q: &QuantizedLayer, sums: &[i32], y: &mut [f32]) {
    let mut rescale = Rescale::default();
    rescale.prepare(q, q.input.expect("static"));
    let n = q.weights.n;
    for (row, out) in sums.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        rescale.apply(row, &q.bias, out);
    }
}

/// Max pooling of one channels-last image's codes; padding positions take no part.
fn max_pool_u8(image: &[u8], w: &Window, out: &mut [u8]) {
    let c = w.channels as usize;
    let (out_w, in_w) = (w.width.output as usize, w.width.input as usize);
    for oh in 0..w.height.output as usize {
        for ow in 0..out_w {
            let pixel = &mut out[(oh * out_w + ow) * c..][..c];
            pixel.fill(0);
            for i in 0..w.height.kernel as usize {
                let Some(ih) = w.height.source(oh, i) else {
                    continue;
                };
                for j in 0..w.width.kernel as usize {
                    let Some(iw) = w.width.source(ow, j) else { continue };
                    let from = &image[(ih * in_w + iw) * c..][..c];
                    pixel.iter_mut().zip(from).for_each(|(p, &v)| *p = (*p).max(v));
                }
            }
        }
    }
}
