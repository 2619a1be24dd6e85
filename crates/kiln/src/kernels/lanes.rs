//! Short-vector kernels written so the compiler vectorizes them: a plain `iter().sum()`
//! is one chain of dependent additions (IEEE order forbids reassociating it), so these
//! keep eight partial sums instead. Every caller gets the same summation order, which is
//! what lets generation reproduce training's arithmetic bit for bit.

const LANES: usize = 8;

/// `Σ x` with eight partial sums.
#[inline]
pub fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..LANES {
            lanes[l] += c[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `a·b` with eight partial sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `dst += alpha · src`.
#[inline(always)]
pub fn axpy(dst: &mut [f32], alpha: f32, src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += alpha * s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_dots_match_f64_for_every_tail_length() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let s: f64 = a.iter().map(|&v| v as f64).sum();
            let d: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((sum(&a) as f64 - s).abs() < 1e-5, "sum of {n}");
            assert!((dot(&a, &b) as f64 - d).abs() < 1e-5, "dot of {n}");
        }
        let mut y = vec![1.0; 3];
        axpy(&mut y, 2.0, &[1.0, 2.0, 3.0]);
        assert_eq!(y, [3.0, 5.0, 7.0]);
    }
}
