//! Exact GELU, `x·Φ(x)`, and its derivative `Φ(x) + x·φ(x)`, in a form the compiler
//! vectorizes: the libm `exp` the scalar formula calls runs one value at a time and made
//! GELU a quarter of a transformer's training step. Also GPT-2's tanh approximation
//! (`gelu_new`), `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`, whose libm `tanhf` was a tenth
//! of a GPT-2 fine-tuning step: tanh(u) = sign(u)·(1 − e)/(1 + e) with e = e^(−2|u|), the
//! same polynomial `exp` (absolute error of tanh below 2e-7).
//!
//! Φ(x) = ½(1 + erf(x/√2)) with erf from Abramowitz & Stegun 7.1.26 (absolute error
//! ≤ 1.5e-7), whose `e^(−x²/2)` factor is also the Gaussian density φ's, so the forward
//! and backward share one exponential. `exp` here is a range reduction to 2^k·e^r and a
//! degree-6 polynomial on |r| ≤ ln2/2 (relative error ~2e-7), built from plain float and
//! integer operations only. The same scalar code serves single values (generation), so a
//! value is bitwise the same whichever path computes it.

const P: f32 = 0.327_591_1;
const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `e^x` for x ≤ 0 (the only arguments used here), flushed to 0 below −87.
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    let x = x.max(-87.0);
    // k = round(x / ln 2) by the 1.5·2²³ trick: adding it pushes the fraction out of the
    // mantissa, and the integer k sits in the low bits.
    const SHIFT: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let k = t.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    let kf = t - SHIFT;
    // r = x − k·ln2 in two parts, so the subtraction is exact to f32 precision.
    let r = (x - kf * 0.693_145_75) - kf * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5 + r * (0.166_666_67 + r * (0.041_666_52 + r * (0.008_333_6 + r * 0.001_394_1)))));
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    p * scale
}

/// (Φ(x), φ(x)).
#[inline(always)]
fn cdf_and_density(x: f32) -> (f32, f32) {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let gauss = exp_non_positive(-0.5 * x * x);
    let erf_abs = 1.0 - poly * gauss;
    let erf = erf_abs.copysign(x);
    (0.5 * (1.0 + erf), gauss * INV_SQRT_2PI)
}

#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * cdf_and_density(x).0
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_TANH_C: f32 = 0.044_715;

/// tanh for the tanh GELU, through [`exp_non_positive`] so that it vectorizes.
#[inline(always)]
fn tanh(u: f32) -> f32 {
    let e = exp_non_positive(-2.0 * u.abs());
    ((1.0 - e) / (1.0 + e)).copysign(u)
}

/// (tanh of the inner term, the inner term's derivative) of the tanh GELU at `x`.
#[inline(always)]
fn tanh_parts(x: f32) -> (f32, f32) {
    let inner = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
    let d_inner = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * x * x);
    (tanh(inner), d_inner)
}

/// GPT-2's GELU (`gelu_new`): `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh_parts(x).0)
}

#[inline(always)]
pub fn gelu_tanh_derivative(x: f32) -> f32 {
    let (t, d_inner) = tanh_parts(x);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner
}

#[inline(always)]
pub fn gelu_derivative(x: f32) -> f32 {
    let (cdf, pdf) = cdf_and_density(x);
    cdf + x * pdf
}

#[inline(always)]
fn forward_body(y: &mut [f32], x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y = gelu(x));
}

#[inline(always)]
fn backward_body(dx: &mut [f32], g: &[f32], x: &[f32]) {
    for ((d, &g), &x) in dx.iter_mut().zip(g).zip(x) {
        *d += g * gelu_derivative(x);
    }
}

#[inline(always)]
fn tanh_forward_body(y: &mut [f32], x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y = gelu_tanh(x));
}

#[inline(always)]
fn tanh_backward_body(dx: &mut [f32], g: &[f32], x: &[f32]) {
    for ((d, &g), &x) in dx.iter_mut().zip(g).zip(x) {
        *d += g * gelu_tanh_derivative(x);
    }
}

super::simd::widest_simd! {
    /// `y = gelu_tanh(x)` over a slice.
    pub fn tanh_forward(y: &mut [f32], x: &[f32]) => tanh_forward_body
}

super::simd::widest_simd! {
    /// `dx += g · gelu_tanh'(x)` over a slice.
    pub fn tanh_backward(dx: &mut [f32], g: &[f32], x: &[f32]) => tanh_backward_body
}

super::simd::widest_simd! {
    /// `y = gelu(x)` over a slice, with the widest vectors this CPU has.
    pub fn forward(y: &mut [f32], x: &[f32]) => forward_body
}

super::simd::widest_simd! {
    /// `dx += g · gelu'(x)` over a slice.
    pub fn backward(dx: &mut [f32], g: &[f32], x: &[f32]) => backward_body
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GELU in f64 from libm's erf-free route: Φ via the complementary series is overkill;
    /// a high-precision erf by numerical integration of the Gaussian suffices here.
    fn gelu_f64(x: f64) -> f64 {
        // Φ(x) = ½ + ∫₀ˣ φ(t) dt by Simpson's rule with 2000 panels.
        let n = 2000;
        let h = x / n as f64;
        let phi = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let mut s = phi(0.0) + phi(x);
        for i in 1..n {
            s += phi(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        x * (0.5 + s * h / 3.0)
    }

    #[test]
    fn matches_a_high_precision_gelu() {
        for i in -800..=800 {
            let x = i as f32 / 100.0;
            let exact = gelu_f64(x as f64);
            let got = gelu(x) as f64;
            assert!(
                (got - exact).abs() <= 1e-6 * (1.0 + exact.abs()),
                "gelu({x}) = {got}, expected {exact}"
            );
        }
    }

    #[test]
    fn exp_is_accurate_and_flushes_far_below_zero() {
        for i in 0..=870 {
            let x = -(i as f32) / 10.0;
            let exact = (x as f64).exp();
            assert!(
                ((exp_non_positive(x) as f64) - exact).abs() <= 3e-7 * exact,
                "exp({x})"
            );
        }
        assert_eq!(exp_non_positive(-1000.0), exp_non_positive(-87.0));
    }

    #[test]
    fn the_tanh_gelu_matches_its_formula_in_f64() {
        for i in -1000..=1000 {
            let x = i as f32 / 100.0;
            let x64 = x as f64;
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3));
            let exact = 0.5 * x64 * (1.0 + inner.tanh());
            let d_inner = (2.0 / std::f64::consts::PI).sqrt() * (1.0 + 3.0 * 0.044715 * x64 * x64);
            let exact_d = 0.5 * (1.0 + inner.tanh()) + 0.5 * x64 * (1.0 - inner.tanh().powi(2)) * d_inner;
            let (got, got_d) = (gelu_tanh(x) as f64, gelu_tanh_derivative(x) as f64);
            assert!(
                (got - exact).abs() <= 1e-6 * (1.0 + exact.abs()),
                "gelu_tanh({x}) = {got}, expected {exact}"
            );
            assert!(
                (got_d - exact_d).abs() <= 2e-6,
                "gelu_tanh'({x}) = {got_d}, expected {exact_d}"
            );
        }
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert_eq!(gelu_tanh(50.0), 50.0);
        assert_eq!(gelu_tanh(-50.0), 0.0);
    }

    #[test]
    fn vector_paths_equal_the_scalar_one_bit_for_bit() {
        let x: Vec<f32> = (0..1037).map(|i| (i as f32 - 500.0) / 61.0).collect();
        let mut y = vec![0.0; x.len()];
        forward(&mut y, &x);
        let g: Vec<f32> = x.iter().map(|v| v.sin()).collect();
        let mut dx = vec![0.5; x.len()];
        backward(&mut dx, &g, &x);
        for i in 0..x.len() {
            assert_eq!(y[i].to_bits(), gelu(x[i]).to_bits());
            assert_eq!(dx[i].to_bits(), (0.5 + g[i] * gelu_derivative(x[i])).to_bits());
        }
        tanh_forward(&mut y, &x);
        let mut dx = vec![0.5; x.len()];
        tanh_backward(&mut dx, &g, &x);
        for i in 0..x.len() {
            assert_eq!(y[i].to_bits(), gelu_tanh(x[i]).to_bits());
            assert_eq!(
                dx[i].to_bits(),
                (0.5 + g[i] * gelu_tanh_derivative(x[i])).to_bits()
            );
        }
    }

    #[test]
    fn derivative_matches_finite_differences() {
        for i in -40..=40 {
            let x = i as f32 / 10.0 + 0.013;
            let h = 1e-3f64;
            let numeric = (gelu_f64(x as f64 + h) - gelu_f64(x as f64 - h)) / (2.0 * h);
            assert!((gelu_derivative(x) as f64 - numeric).abs() < 2e-6, "gelu'({x})");
        }
    }
}
