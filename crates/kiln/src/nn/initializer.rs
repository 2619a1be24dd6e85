//! Weight initializers with Keras's formulas (VarianceScaling family).
//!
//! Uniform variants draw from ±√(3·scale/n); normal variants from a normal truncated at two
//! standard deviations, whose stddev is √(scale/n)/0.8796 so the *truncated* distribution
//! has variance scale/n, exactly as Keras does. n is fan_in, fan_out or their mean.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initializer {
    #[default]
    GlorotUniform,
    GlorotNormal,
    HeUniform,
    HeNormal,
    LecunNormal,
    LecunUniform,
    Zeros,
    Ones,
}

/// Standard deviation of a unit normal truncated to [−2, 2].
const TRUNCATED_NORMAL_STDDEV: f32 = 0.879_625_7;

impl Initializer {
    /// `count` values for a weight with the given fans.
    pub fn sample(self, fan_in: usize, fan_out: usize, count: usize, rng: &mut Rng) -> Vec<f32> {
        let (fan_in, fan_out) = (fan_in.max(1) as f32, fan_out.max(1) as f32);
        let (variance, uniform) = match self {
            Initializer::Zeros => return vec![0.0; count],
            Initializer::Ones => return vec![1.0; count],
            Initializer::GlorotUniform => (2.0 / (fan_in + fan_out), true),
            Initializer::GlorotNormal => (2.0 / (fan_in + fan_out), false),
            Initializer::HeUniform => (2.0 / fan_in, true),
            Initializer::HeNormal => (2.0 / fan_in, false),
            Initializer::LecunUniform => (1.0 / fan_in, true),
            Initializer::LecunNormal => (1.0 / fan_in, false),
        };
        if uniform {
            let limit = (3.0 * variance).sqrt();
            (0..count).map(|_| rng.uniform(-limit, limit)).collect()
        } else {
            let stddev = variance.sqrt() / TRUNCATED_NORMAL_STDDEV;
            (0..count).map(|_| truncated_normal(rng) * stddev).collect()
        }
    }
}

/// A unit normal restricted to [−2, 2] by rejection.
fn truncated_normal(rng: &mut Rng) -> f32 {
    loop {
        let z = rng.normal();
        if z.abs() <= 2.0 {
            return z;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(v: &[f32]) -> (f64, f64, f32) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        (mean, var, max)
    }

    #[test]
    fn variances_and_bounds_follow_keras() {
        let mut rng = Rng::new(0);
        let (fan_in, fan_out, n) = (784, 512, 200_000);
        // glorot_uniform: limit √(6/(784+512)) = 0.068041
        let (mean, var, max) = moments(&Initializer::GlorotUniform.sample(fan_in, fan_out, n, &mut rng));
        assert!(mean.abs() < 1e-3 && max <= 0.068_041_4);
        assert!((var - 2.0 / 1296.0).abs() / (2.0 / 1296.0) < 0.02, "{var}");
        // he_normal: variance 2/784, truncated at 2·stddev
        let (_, var, max) = moments(&Initializer::HeNormal.sample(fan_in, fan_out, n, &mut rng));
        assert!((var - 2.0 / 784.0).abs() / (2.0 / 784.0) < 0.02, "{var}");
        assert!(max <= 2.0 * (2.0f32 / 784.0).sqrt() / TRUNCATED_NORMAL_STDDEV + 1e-6);
        let (_, var, _) = moments(&Initializer::LecunNormal.sample(fan_in, fan_out, n, &mut rng));
        assert!((var - 1.0 / 784.0).abs() / (1.0 / 784.0) < 0.02, "{var}");
        let (_, var, _) = moments(&Initializer::GlorotNormal.sample(fan_in, fan_out, n, &mut rng));
        assert!((var - 2.0 / 1296.0).abs() / (2.0 / 1296.0) < 0.02, "{var}");
        let (_, var, max) = moments(&Initializer::HeUniform.sample(fan_in, fan_out, n, &mut rng));
        assert!((var - 2.0 / 784.0).abs() / (2.0 / 784.0) < 0.02 && max <= (6.0f32 / 784.0).sqrt());
        assert_eq!(Initializer::Zeros.sample(3, 3, 4, &mut rng), vec![0.0; 4]);
        assert_eq!(Initializer::Ones.sample(3, 3, 2, &mut rng), vec![1.0; 2]);
    }
}
