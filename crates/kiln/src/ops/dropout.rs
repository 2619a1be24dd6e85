//! Inverted dropout: during training each element is zeroed with probability `rate` and the
//! survivors scaled by 1/(1 − rate), so inference needs no rescaling.

use crate::autograd::{gradient_base, Op, Tape, Var};
use crate::error::{Error, Result};
use crate::rng::Rng;

use super::parallel;

impl Tape<'_> {
    pub fn dropout(&mut self, x: Var, rate: f32, rng: &mut Rng) -> Result<Var> {
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::setting("dropout rate", rate, "a rate in [0, 1)"));
        }
        if rate == 0.0 {
            return Ok(x);
        }
        let shape = self.shape(x);
        let mut mask = self.alloc(shape.numel());
        fill_mask(&mut mask, rate, rng);
        let mut y = self.alloc(shape.numel());
        y.copy_from_slice(self.value(x));
        parallel::update1(&mut y, &mask, |v, m| v * m);
        let out = self.push_op(shape, y, Op::MaskedBy { x }, &[x]);
        self.set_saved(out, mask);
        Ok(out)
    }
}

/// Writes `1/(1 − rate)` (keep) or 0 (drop) to each element: dropped when the element's
/// 32-bit draw falls below rate·2³².
///
/// Each draw is a hash of (a per-call seed, the element's index) — murmur3's 32-bit
/// finaliser — rather than the next output of a sequential generator. With no state carried
/// from one element to the next the loop vectorises; xoshiro's serial state chain plus the
/// mask stores ran at ~4 ns per two elements, and dropout was 15% of a training step. The
/// keep decision is built from the borrow bit of `draw − threshold`, not a comparison,
/// because LLVM compiles the comparison to a jump that a random mask mispredicts.
pub(crate) fn fill_mask(mask: &mut [f32], rate: f32, rng: &mut Rng) {
    let seed = rng.next_u64();
    // The hash multiplies 32-bit integers, which the baseline x86-64 target (SSE2) cannot
    // do in vectors; compiled for AVX2 or AVX-512 the loop runs 8 or 16 lanes wide. Integer
    // arithmetic is exact, so every path draws the same mask.
    fill_mask_widest(mask, rate, seed)
}

super::simd::widest_simd! {
    fn fill_mask_widest(mask: &mut [f32], rate: f32, seed: u64) => fill_mask_with
}

#[inline(always)]
fn fill_mask_with(mask: &mut [f32], rate: f32, seed: u64) {
    let (seed_lo, seed_hi) = (seed as u32, (seed >> 32) as u32);
    let threshold = (rate as f64 * 4_294_967_296.0) as u64;
    let keep_bits = (1.0 / (1.0 - rate)).to_bits();
    for (i, m) in mask.iter_mut().enumerate() {
        let draw = fmix32((i as u32).wrapping_mul(0x9E37_79B9) ^ seed_lo).wrapping_add(seed_hi) as u64;
        // All ones when draw ≥ threshold (kept), zero when dropped; then the scale's bits.
        let keep = ((draw.wrapping_sub(threshold) >> 63) as u32).wrapping_sub(1);
        *m = f32::from_bits(keep_bits & keep);
    }
}

/// murmur3's 32-bit finaliser: every input bit affects every output bit.
#[inline(always)]
fn fmix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x85EB_CA6B);
    x ^= x >> 13;
    x = x.wrapping_mul(0xC2B2_AE35);
    x ^ (x >> 16)
}

/// `dx += g ⊙ mask`.
pub(crate) fn backward(tape: &mut Tape, x: Var, out: Var, g: &[f32]) {
    tape.accumulate_or_write(x, |t, dx, fresh| {
        parallel::update2(dx, g, t.saved(out), |d, g, m| gradient_base(fresh, d) + g * m)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck;
    use crate::tensor::Shape;

    #[test]
    fn drops_about_rate_and_scales_survivors() {
        let mut p = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = Tape::new(&mut p, &mut ws);
        let x = t.input(&vec![1.0; 10_000], Shape::new(&[100, 100]));
        let y = t.dropout(x, 0.2, &mut Rng::new(1)).unwrap();
        let zeros = t.value(y).iter().filter(|&&v| v == 0.0).count();
        assert!((1800..2200).contains(&zeros), "{zeros}");
        assert!(t.value(y).iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
        assert!(t.dropout(x, 1.0, &mut Rng::new(1)).is_err());
    }

    #[test]
    fn masks_are_unbiased_uncorrelated_and_fresh_each_call() {
        let mut rng = Rng::new(11);
        for rate in [0.1f32, 0.5, 0.9] {
            let n = 1 << 16;
            let mut a = vec![0.0; n];
            let mut b = vec![0.0; n];
            fill_mask(&mut a, rate, &mut rng);
            fill_mask(&mut b, rate, &mut rng);
            let kept = |m: &[f32]| m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
            // 65,536 Bernoulli draws: a standard deviation below 0.002.
            assert!(
                (kept(&a) - (1.0 - rate as f64)).abs() < 0.01,
                "rate {rate}: kept {}",
                kept(&a)
            );
            assert_ne!(a, b, "successive calls must draw new masks");
            // Neighbours are independent: P(both kept) ≈ (1 − rate)².
            let pairs = a.windows(2).filter(|w| w[0] != 0.0 && w[1] != 0.0).count() as f64 / (n - 1) as f64;
            assert!(
                (pairs - (1.0 - rate as f64).powi(2)).abs() < 0.01,
                "rate {rate}: pairs {pairs}"
            );
            // The two calls are independent of each other too.
            let both = a.iter().zip(&b).filter(|(x, y)| **x != 0.0 && **y != 0.0).count() as f64 / n as f64;
            assert!(
                (both - (1.0 - rate as f64).powi(2)).abs() < 0.01,
                "rate {rate}: both {both}"
            );
            assert!(a
                .iter()
                .all(|&v| v == 0.0 || (v - 1.0 / (1.0 - rate)).abs() < 1e-6));
        }
    }

    #[test]
    fn gradient_check() {
        // The same seed each evaluation gives the same mask, so the op is a fixed linear map.
        gradcheck::check("dropout", &[(&[4, 5], gradcheck::random(20, 1))], |t, v| {
            t.dropout(v[0], 0.3, &mut Rng::new(5)).unwrap()
        });
    }
}
