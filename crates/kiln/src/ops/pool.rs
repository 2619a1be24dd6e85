//! Pooling over channels-last (NHWC) images: max and average over a window (TensorFlow's
//! `valid` / `same` rules; padded positions are ignored, not counted as zeros), and the
//! global average over all pixels.

use rayon::prelude::*;

use super::conv2d::Window;
use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::Shape;

impl Tape<'_> {
    /// Largest value in each window, per channel: (B, H, W, C) → (B, OH, OW, C). Records
    /// where each maximum came from, so backward routes the gradient there alone.
    pub fn max_pool2d(&mut self, x: Var, window: Window) -> Result<Var> {
        let (batch, shape) = pooled_shape(self.shape(x), &window)?;
        let len = shape.numel();
        if self.shape(x).numel() > u32::MAX as usize {
            return Err(Error::shape(
                "max_pool2d",
                format!("an input small enough to index (at most {} values)", u32::MAX),
                self.shape(x),
            ));
        }
        let mut y = self.alloc(len);
        let mut from = self.alloc(len);
        // At least 1, so an empty batch is an empty loop rather than a zero chunk size.
        let per_image = (len / batch.max(1)).max(1);
        let image_len = window.input_pixels() * window.channels as usize;
        let xs = self.value(x);
        y.par_chunks_mut(per_image)
            .zip(from.par_chunks_mut(per_image))
            .enumerate()
            .for_each(|(b, (y, from))| {
                max_image(
                    &xs[b * image_len..(b + 1) * image_len],
                    b * image_len,
                    &window,
                    y,
                    from,
                )
            });
        let out = self.push_op(shape, y, Op::MaxPool2d { x }, &[x]);
        if self.requires_grad(out) {
            self.set_saved(out, from);
        } else {
            self.recycle(from);
        }
        Ok(out)
    }

    /// Mean of each window's in-image values, per channel: (B, H, W, C) → (B, OH, OW, C).
    pub fn avg_pool2d(&mut self, x: Var, window: Window) -> Result<Var> {
        let (batch, shape) = pooled_shape(self.shape(x), &window)?;
        let mut y = self.alloc(shape.numel());
        let per_image = (shape.numel() / batch.max(1)).max(1);
        let image_len = window.input_pixels() * window.channels as usize;
        let xs = self.value(x);
        y.par_chunks_mut(per_image).enumerate().for_each(|(b, y)| {
            let image = &xs[b * image_len..(b + 1) * image_len];
            for_each_window(&window, |pixel, taps| {
                let out = &mut y[pixel * window.channels as usize..][..window.channels as usize];
                out.fill(0.0);
                for &at in taps {
                    out.iter_mut().zip(&image[at..]).for_each(|(o, v)| *o += v);
                }
                out.iter_mut().for_each(|o| *o /= taps.len() as f32);
            });
        });
        Ok(self.push_op(shape, y, Op::AvgPool2d { x, window }, &[x]))
    }

    /// Mean over all pixels, per channel: (B, H, W, C) → (B, C).
    pub fn global_avg_pool2d(&mut self, x: Var) -> Result<Var> {
        let s = self.shape(x);
        if s.rank() != 4 {
            return Err(Error::shape(
                "global_average_pooling2d",
                "(batch, height, width, channels)",
                s,
            ));
        }
        let (batch, pixels, c) = (s.dims()[0], s.dims()[1] * s.dims()[2], s.dims()[3]);
        let mut y = self.alloc(batch * c);
        let xs = self.value(x);
        for (b, out) in y.chunks_exact_mut(c).enumerate() {
            out.fill(0.0);
            for px in xs[b * pixels * c..(b + 1) * pixels * c].chunks_exact(c) {
                out.iter_mut().zip(px).for_each(|(o, v)| *o += v);
            }
            out.iter_mut().for_each(|o| *o /= pixels as f32);
        }
        Ok(self.push_op(Shape::new(&[batch, c]), y, Op::GlobalAvgPool2d { x }, &[x]))
    }
}

/// (batch, output shape) of pooling `input` with `window`, or why it does not fit.
pub(super) fn pooled_shape(input: Shape, window: &Window) -> Result<(usize, Shape)> {
    let expected = [
        window.height.input as usize,
        window.width.input as usize,
        window.channels as usize,
    ];
    if input.rank() != 4 || input.dims()[1..] != expected {
        return Err(Error::shape(
            "pooling",
            format!("(batch, {}, {}, {})", expected[0], expected[1], expected[2]),
            input,
        ));
    }
    let batch = input.dims()[0];
    let shape = Shape::new(&[
        batch,
        window.height.output as usize,
        window.width.output as usize,
        expected[2],
    ]);
    Ok((batch, shape))
}

/// Calls `f(output pixel, offsets of its in-image taps in the image)` for every output
/// pixel of one image. The taps are gathered into one reused buffer rather than handed out
/// as an iterator: the per-window work is a few vector-wide channel loops, and an iterator
/// behind `dyn` per tap cost more than they did.
fn for_each_window(w: &Window, mut f: impl FnMut(usize, &[usize])) {
    let mut taps = Vec::with_capacity(w.height.kernel as usize * w.width.kernel as usize);
    for oh in 0..w.height.output as usize {
        for ow in 0..w.width.output as usize {
            window_taps(w, oh, ow, &mut taps);
            f(oh * w.width.output as usize + ow, &taps);
        }
    }
}

/// The offsets in its image of output pixel (oh, ow)'s in-image taps, into `taps`.
#[inline(always)]
pub(super) fn window_taps(w: &Window, oh: usize, ow: usize, taps: &mut Vec<usize>) {
    let c = w.channels as usize;
    taps.clear();
    for ih in (0..w.height.kernel as usize).filter_map(|i| w.height.source(oh, i)) {
        for iw in (0..w.width.kernel as usize).filter_map(|j| w.width.source(ow, j)) {
            taps.push((ih * w.width.input as usize + iw) * c);
        }
    }
}

super::simd::widest_simd! {
    /// Max pooling of one image; `from` gets each maximum's index in the batch tensor (as
    /// the bits of an f32, since saved buffers are f32). Compiled for AVX-512 and AVX2 as
    /// well as the baseline: SSE2 has no vector blend, and there the selects ran one lane
    /// at a time.
    pub(super) fn max_image(image: &[f32], offset: usize, w: &Window, y: &mut [f32], from: &mut [f32]) => max_image_body
}

/// Channels go 16 at a time through fixed-size lanes, so the scan compiles to vector
/// selects with no library calls.
#[inline(always)]
fn max_image_body(image: &[f32], offset: usize, w: &Window, y: &mut [f32], from: &mut [f32]) {
    let c = w.channels as usize;
    let mut taps = Vec::with_capacity(w.taps());
    // The window loop is written out here rather than through `for_each_window`: a closure
    // is compiled on its own, without this function's target features.
    for oh in 0..w.height.output as usize {
        for ow in 0..w.width.output as usize {
            window_taps(w, oh, ow, &mut taps);
            if taps.is_empty() {
                continue; // every window holds a tap: `same` padding centres it on the image
            }
            let pixel = oh * w.width.output as usize + ow;
            let (best, index) = (&mut y[pixel * c..][..c], &mut from[pixel * c..][..c]);
            let mut ch = 0;
            while c - ch >= LANES {
                max_lanes::<LANES>(image, &taps, ch, offset, best, index);
                ch += LANES;
            }
            for ch in ch..c {
                max_lanes::<1>(image, &taps, ch, offset, best, index);
            }
        }
    }
}

const LANES: usize = 16;

/// Channels ch..ch+L of one window: per channel, the first tap holding the largest value
/// (a later tap wins only if strictly greater, so a NaN in the first tap stays and later
/// NaNs are passed over), and that tap's index in the batch.
#[inline(always)]
fn max_lanes<const L: usize>(
    image: &[f32],
    taps: &[usize],
    ch: usize,
    offset: usize,
    best: &mut [f32],
    index: &mut [f32],
) {
    let lanes = |at: usize| -> &[f32; L] { image[at + ch..][..L].try_into().expect("L lanes") };
    let mut top = *lanes(taps[0]);
    let mut top_tap = [0u32; L];
    for (ordinal, &at) in (1u32..).zip(&taps[1..]) {
        for ((b, t), &v) in top.iter_mut().zip(top_tap.iter_mut()).zip(lanes(at)) {
            // Selects written as bit masks: as `if`s, LLVM turned them into a
            // conditional store per lane and the loop ran 4 lanes with branches.
            let take = ((v > *b) as u32).wrapping_neg();
            *b = f32::from_bits((v.to_bits() & take) | (b.to_bits() & !take));
            *t = (ordinal & take) | (*t & !take);
        }
    }
    best[ch..ch + L].copy_from_slice(&top);
    // Each lane's winning tap turned into its batch index by a compare per tap: looking
    // the tap up per lane compiled to a scalar extract and store per channel, which cost
    // more than the scan.
    let mut source = [0u32; L];
    for (ordinal, &at) in (0u32..).zip(taps) {
        let at = (offset + at + ch) as u32;
        for (s, &t) in source.iter_mut().zip(&top_tap) {
            *s |= at & ((t == ordinal) as u32).wrapping_neg();
        }
    }
    let index: &mut [f32; L] = (&mut index[ch..ch + L]).try_into().expect("L lanes");
    for lane in 0..L {
        index[lane] = f32::from_bits(source[lane] + lane as u32);
    }
}

/// Whether no two windows share an input pixel, and whether they also cover every pixel.
pub(super) fn tiling(w: &Window) -> (bool, bool) {
    let axes = [w.height, w.width];
    let disjoint = axes.iter().all(|a| a.stride >= a.kernel && a.dilation == 1);
    let covering = axes
        .iter()
        .all(|a| a.stride == a.kernel && a.pad_before == 0 && a.output * a.kernel == a.input);
    (disjoint, disjoint && covering)
}

super::simd::widest_simd! {
    /// Max pooling's input gradient for one image whose windows are disjoint (see
    /// [`tiling`]): every window pixel is written, `g` where the maximum came from and 0
    /// elsewhere. Pixels outside every window are left alone. `from` holds each maximum's
    /// index in the image, as [`max_image`] with offset 0 gives it (or an index past the
    /// image, for a gradient that goes nowhere).
    pub(super) fn max_image_gradient(g: &[f32], from: &[f32], w: &Window, dx: &mut [f32]) => max_image_gradient_body
}

/// A compare and select per channel, vector-wide: a scatter of `g` into a zeroed image was
/// a dependent load and store per value, and zeroing the image a second pass.
#[inline(always)]
fn max_image_gradient_body(g: &[f32], from: &[f32], w: &Window, dx: &mut [f32]) {
    let c = w.channels as usize;
    let mut taps = Vec::with_capacity(w.taps());
    for oh in 0..w.height.output as usize {
        for ow in 0..w.width.output as usize {
            window_taps(w, oh, ow, &mut taps);
            let pixel = (oh * w.width.output as usize + ow) * c;
            let (g, from) = (&g[pixel..][..c], &from[pixel..][..c]);
            for &at in &taps {
                let base = at as u32;
                for (ch, (d, (&g, &from))) in dx[at..at + c].iter_mut().zip(g.iter().zip(from)).enumerate() {
                    let hit = from.to_bits().wrapping_sub(base) == ch as u32;
                    // `+ 0.0` turns a -0.0 into 0.0, as adding it to a zeroed pixel would.
                    *d = if hit { g + 0.0 } else { 0.0 };
                }
            }
        }
    }
}

/// `dx[argmax] += g`, image by image in parallel (each window's source lies in its own
/// image, so the images' slices of `dx` are disjoint). A fresh `dx` is zeroed image by
/// image just before its scatter, while the slice is in cache.
pub(crate) fn max_backward(tape: &mut Tape, x: Var, out: Var, g: &[f32]) {
    let s = tape.shape(x);
    let (batch, image_len) = (s.dims()[0], s.numel() / s.dims()[0].max(1));
    let per_image = g.len() / batch.max(1);
    tape.accumulate_or_write(x, |t, dx, fresh| {
        dx.par_chunks_mut(image_len.max(1))
            .zip(
                t.saved(out)
                    .par_chunks(per_image.max(1))
                    .zip(g.par_chunks(per_image.max(1))),
            )
            .enumerate()
            .for_each(|(b, (dx, (from, g)))| {
                if fresh {
                    dx.fill(0.0);
                }
                let offset = b * image_len;
                for (&from, &g) in from.iter().zip(g) {
                    dx[from.to_bits() as usize - offset] += g;
                }
            });
    });
}

/// Each window's gradient, split evenly over its in-image taps.
pub(crate) fn avg_backward(tape: &mut Tape, x: Var, window: Window, g: &[f32]) {
    let c = window.channels as usize;
    let per_image = (window.output_pixels() * c).max(1);
    let image_len = (window.input_pixels() * c).max(1);
    tape.accumulate(x, |_, dx| {
        dx.par_chunks_mut(image_len)
            .zip(g.par_chunks(per_image))
            .for_each(|(image, g)| {
                for_each_window(&window, |pixel, taps| {
                    let g = &g[pixel * c..][..c];
                    for &at in taps {
                        image[at..at + c]
                            .iter_mut()
                            .zip(g)
                            .for_each(|(d, g)| *d += g / taps.len() as f32);
                    }
                });
            });
    });
}

/// Every pixel gets its channel's gradient divided by the pixel count.
pub(crate) fn global_avg_backward(tape: &mut Tape, x: Var, g: &[f32]) {
    let s = tape.shape(x);
    let (pixels, c) = (s.dims()[1] * s.dims()[2], s.dims()[3]);
    tape.accumulate(x, |_, dx| {
        for (image, g) in dx.chunks_exact_mut(pixels * c).zip(g.chunks_exact(c)) {
            for px in image.chunks_exact_mut(c) {
                px.iter_mut().zip(g).for_each(|(d, g)| *d += g / pixels as f32);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv2d::{Axis, Padding};
    use crate::ops::gradcheck;

    fn window(input: (usize, usize, usize), pool: usize, stride: usize, padding: Padding) -> Window {
        Window {
            height: Axis::new(input.0, pool, stride, 1, padding).unwrap(),
            width: Axis::new(input.1, pool, stride, 1, padding).unwrap(),
            channels: input.2 as u32,
        }
    }

    fn run(x: &[f32], dims: &[usize], f: impl Fn(&mut Tape, Var) -> Var) -> Vec<f32> {
        let mut p = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = Tape::inference(&mut p, &mut ws);
        let v = t.input(x, Shape::new(dims));
        let y = f(&mut t, v);
        t.value(y).to_vec()
    }

    /// An empty batch (a split that rounded to no samples) pools to nothing; it once
    /// panicked on a zero chunk size.
    #[test]
    fn an_empty_batch_pools_to_an_empty_output() {
        let valid = window((3, 3, 1), 2, 1, Padding::Valid);
        assert!(run(&[], &[0, 3, 3, 1], |t, v| t.max_pool2d(v, valid).unwrap()).is_empty());
        assert!(run(&[], &[0, 3, 3, 1], |t, v| t.avg_pool2d(v, valid).unwrap()).is_empty());
    }

    #[test]
    fn pools_by_hand() {
        // One 3×3 single-channel image; 2×2 windows.
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let valid = window((3, 3, 1), 2, 1, Padding::Valid);
        assert_eq!(
            run(&x, &[1, 3, 3, 1], |t, v| t.max_pool2d(v, valid).unwrap()),
            [5.0, 6.0, 8.0, 9.0]
        );
        assert_eq!(
            run(&x, &[1, 3, 3, 1], |t, v| t.avg_pool2d(v, valid).unwrap()),
            [3.0, 4.0, 6.0, 7.0]
        );
        // same, stride 2: windows [1,2,4,5], [3,6], [7,8], [9]; padding is not averaged in.
        let same = window((3, 3, 1), 2, 2, Padding::Same);
        assert_eq!(
            run(&x, &[1, 3, 3, 1], |t, v| t.max_pool2d(v, same).unwrap()),
            [5.0, 6.0, 8.0, 9.0]
        );
        assert_eq!(
            run(&x, &[1, 3, 3, 1], |t, v| t.avg_pool2d(v, same).unwrap()),
            [3.0, 4.5, 7.5, 9.0]
        );
        assert_eq!(
            run(&x, &[1, 3, 3, 1], |t, v| t.global_avg_pool2d(v).unwrap()),
            [5.0]
        );
    }

    #[test]
    fn max_pooling_and_its_gradient_match_a_scan_by_hand_on_wide_channels_ties_and_nans() {
        // 37 channels: two 16-lane groups and a 5-channel tail. Values repeat (ties keep
        // the first tap) and a few are NaN (a first-tap NaN stays, later ones are skipped).
        let (h, w, c) = (5, 4, 37);
        let x: Vec<f32> = (0..2 * h * w * c)
            .map(|i| match i % 23 {
                7 => f32::NAN,
                k => (k % 5) as f32 - (i % 3) as f32,
            })
            .collect();
        let window = window((h, w, c), 2, 2, Padding::Same);
        let mut p = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = Tape::new(&mut p, &mut ws);
        let v = t.leaf(&x, Shape::new(&[2, h, w, c]), true);
        let y = t.max_pool2d(v, window).unwrap();
        let got = t.value(y).to_vec();
        let total = t.sum(y);
        t.backward(total);
        let routed = t.grad(v).unwrap().to_vec();
        let (mut want, mut want_routed) = (Vec::new(), vec![0.0; x.len()]);
        for (b, image) in x.chunks(h * w * c).enumerate() {
            for oh in 0..window.height.output as usize {
                for ow in 0..window.width.output as usize {
                    let mut taps = Vec::new();
                    window_taps(&window, oh, ow, &mut taps);
                    for ch in 0..c {
                        let (mut best, mut from) = (image[taps[0] + ch], taps[0]);
                        for &at in &taps[1..] {
                            if image[at + ch] > best {
                                (best, from) = (image[at + ch], at);
                            }
                        }
                        want.push(best);
                        want_routed[b * h * w * c + from + ch] += 1.0;
                    }
                }
            }
        }
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
        // Backward sends each window's gradient to the tap the maximum came from.
        assert_eq!(routed, want_routed);
    }

    #[test]
    fn gradient_checks() {
        // Distinct values a step apart, so no finite-difference nudge changes a maximum.
        let distinct: Vec<f32> = {
            let mut v: Vec<f32> = (0..2 * 5 * 4 * 3).map(|i| i as f32 * 0.05).collect();
            crate::rng::Rng::new(5).shuffle(&mut v);
            v
        };
        for (name, pool, stride, padding) in [
            ("max_pool2d valid", 2, 2, Padding::Valid),
            ("max_pool2d same overlapping", 3, 2, Padding::Same),
        ] {
            let w = window((5, 4, 3), pool, stride, padding);
            gradcheck::check(name, &[(&[2, 5, 4, 3], distinct.clone())], |t, v| {
                t.max_pool2d(v[0], w).unwrap()
            });
        }
        for (name, pool, stride, padding) in [
            ("avg_pool2d valid", 2, 2, Padding::Valid),
            ("avg_pool2d same overlapping", 3, 2, Padding::Same),
        ] {
            let w = window((5, 4, 3), pool, stride, padding);
            gradcheck::check(name, &[(&[2, 5, 4, 3], gradcheck::random(120, 6))], |t, v| {
                t.avg_pool2d(v[0], w).unwrap()
            });
        }
        gradcheck::check(
            "global_avg_pool2d",
            &[(&[2, 3, 2, 4], gradcheck::random(48, 7))],
            |t, v| t.global_avg_pool2d(v[0]).unwrap(),
        );
    }
}
