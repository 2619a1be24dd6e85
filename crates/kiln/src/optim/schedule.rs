//! Learning-rate schedules, stepped once per optimizer update, with Keras's formulas.
//! `step` counts updates already applied (Keras's `optimizer.iterations`): the first update
//! uses step 0.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A schedule as a spec names it (`type = "cosine_decay"`); without one, the optimizer's
/// `learning_rate` is used unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// `values[i]` while `step ≤ boundaries[i]` (and after the previous boundary);
    /// `values.last()` after the last boundary.
    PiecewiseConstant { boundaries: Vec<u64>, values: Vec<f32> },
    /// `initial·rate^(step/decay_steps)`, the exponent floored with `staircase`.
    ExponentialDecay {
        initial_learning_rate: f32,
        decay_steps: u64,
        decay_rate: f32,
        #[serde(default)]
        staircase: bool,
    },
    /// `(initial − end)·(1 − step/decay_steps)^power + end`, held at `end` afterwards; with
    /// `cycle`, `decay_steps` grows to the next multiple of itself instead.
    PolynomialDecay {
        initial_learning_rate: f32,
        decay_steps: u64,
        #[serde(default = "default_end_learning_rate")]
        end_learning_rate: f32,
        #[serde(default = "one")]
        power: f32,
        #[serde(default)]
        cycle: bool,
    },
    /// Optional linear warm-up from `initial_learning_rate` to `warmup_target` over
    /// `warmup_steps`, then `peak·((1 − alpha)·½(1 + cos(π·t/decay_steps)) + alpha)`, where
    /// peak is `warmup_target` (or `initial_learning_rate` without warm-up) and t the steps
    /// since warm-up, held at `decay_steps`.
    CosineDecay {
        initial_learning_rate: f32,
        decay_steps: u64,
        #[serde(default)]
        alpha: f32,
        #[serde(default)]
        warmup_target: Option<f32>,
        #[serde(default)]
        warmup_steps: u64,
    },
}

fn default_end_learning_rate() -> f32 {
    0.0001
}

fn one() -> f32 {
    1.0
}

impl Schedule {
    /// Rejects settings the formulas cannot use; names the field at fault.
    pub fn validate(&self) -> Result<()> {
        let field = |name: &str| format!("learning_rate_schedule.{name}");
        match self {
            Schedule::PiecewiseConstant { boundaries, values } => {
                if values.len() != boundaries.len() + 1 {
                    return Err(Error::setting(
                        field("values"),
                        format!("{values:?}"),
                        format!(
                            "{} values, one more value than boundaries ({})",
                            boundaries.len() + 1,
                            boundaries.len()
                        ),
                    ));
                }
                if boundaries.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(Error::setting(
                        field("boundaries"),
                        format!("{boundaries:?}"),
                        "increasing steps",
                    ));
                }
            }
            Schedule::ExponentialDecay { decay_steps, .. }
            | Schedule::PolynomialDecay { decay_steps, .. }
            | Schedule::CosineDecay { decay_steps, .. } => {
                if *decay_steps == 0 {
                    return Err(Error::setting(field("decay_steps"), 0, "at least 1"));
                }
            }
        }
        Ok(())
    }

    /// The learning rate for the update after `step` updates. Computed in f64, as the
    /// formulas involve powers and cosines of step ratios.
    pub fn learning_rate(&self, step: u64) -> f32 {
        let s = step as f64;
        let rate = match *self {
            Schedule::PiecewiseConstant {
                ref boundaries,
                ref values,
            } => {
                let index = boundaries.iter().take_while(|&&b| step > b).count();
                values[index] as f64
            }
            Schedule::ExponentialDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                staircase,
            } => {
                let mut p = s / decay_steps as f64;
                if staircase {
                    p = p.floor();
                }
                initial_learning_rate as f64 * (decay_rate as f64).powf(p)
            }
            Schedule::PolynomialDecay {
                initial_learning_rate,
                decay_steps,
                end_learning_rate,
                power,
                cycle,
            } => {
                let (initial, end) = (initial_learning_rate as f64, end_learning_rate as f64);
                let mut horizon = decay_steps as f64;
                let t = if cycle {
                    horizon *= (s / horizon).ceil().max(1.0);
                    s
                } else {
                    s.min(horizon)
                };
                (initial - end) * (1.0 - t / horizon).powf(power as f64) + end
            }
            Schedule::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                let initial = initial_learning_rate as f64;
                let cosine = |t: f64, peak: f64| {
                    let t = t.min(decay_steps as f64);
                    let c = 0.5 * (1.0 + (std::f64::consts::PI * t / decay_steps as f64).cos());
                    peak * ((1.0 - alpha as f64) * c + alpha as f64)
                };
                match warmup_target {
                    None => cosine(s, initial),
                    Some(target) if step < warmup_steps => {
                        initial + (target as f64 - initial) * s / warmup_steps as f64
                    }
                    Some(target) => cosine(s - warmup_steps as f64, target as f64),
                }
            }
        };
        rate as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) {
        assert!(
            (a as f64 - b).abs() < 1e-7 * b.abs().max(1.0),
            "got {a}, expected {b}"
        );
    }

    #[test]
    fn exponential_decay_follows_the_formula() {
        let plain = Schedule::ExponentialDecay {
            initial_learning_rate: 0.1,
            decay_steps: 10,
            decay_rate: 0.1,
            staircase: false,
        };
        close(plain.learning_rate(0), 0.1);
        close(plain.learning_rate(10), 0.01); // 0.1·0.1^(10/10)
        close(plain.learning_rate(15), 0.1 * 0.1f64.powf(1.5)); // 0.0031623
        let stairs = Schedule::ExponentialDecay {
            initial_learning_rate: 0.1,
            decay_steps: 10,
            decay_rate: 0.1,
            staircase: true,
        };
        close(stairs.learning_rate(9), 0.1);
        close(stairs.learning_rate(15), 0.01);
    }

    #[test]
    fn piecewise_constant_switches_after_each_boundary() {
        let s = Schedule::PiecewiseConstant {
            boundaries: vec![100, 200],
            values: vec![1.0, 0.5, 0.1],
        };
        close(s.learning_rate(0), 1.0);
        close(s.learning_rate(100), 1.0);
        close(s.learning_rate(101), 0.5);
        close(s.learning_rate(200), 0.5);
        close(s.learning_rate(201), 0.1);
        let bad = Schedule::PiecewiseConstant {
            boundaries: vec![100],
            values: vec![1.0],
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("one more value than boundaries"));
    }

    #[test]
    fn polynomial_decay_linear_quadratic_and_cycling() {
        let linear = |power, cycle| Schedule::PolynomialDecay {
            initial_learning_rate: 0.1,
            decay_steps: 100,
            end_learning_rate: 0.01,
            power,
            cycle,
        };
        close(linear(1.0, false).learning_rate(50), 0.055); // 0.09·0.5 + 0.01
        close(linear(2.0, false).learning_rate(50), 0.0325); // 0.09·0.25 + 0.01
        close(linear(1.0, false).learning_rate(150), 0.01);
        close(linear(1.0, true).learning_rate(150), 0.0325); // horizon 200: 0.09·0.25 + 0.01
        close(linear(1.0, true).learning_rate(0), 0.1);
    }

    #[test]
    fn cosine_decay_with_and_without_warmup() {
        let plain = Schedule::CosineDecay {
            initial_learning_rate: 1.0,
            decay_steps: 100,
            alpha: 0.1,
            warmup_target: None,
            warmup_steps: 0,
        };
        close(plain.learning_rate(0), 1.0);
        close(plain.learning_rate(50), 0.55); // 0.9·0.5 + 0.1
        close(plain.learning_rate(100), 0.1);
        close(plain.learning_rate(500), 0.1);
        let warm = Schedule::CosineDecay {
            initial_learning_rate: 0.0,
            decay_steps: 100,
            alpha: 0.1,
            warmup_target: Some(1.0),
            warmup_steps: 10,
        };
        close(warm.learning_rate(0), 0.0);
        close(warm.learning_rate(5), 0.5);
        close(warm.learning_rate(10), 1.0);
        close(warm.learning_rate(60), 0.55);
        close(warm.learning_rate(110), 0.1);
    }

    #[test]
    fn specs_parse_and_reject_typos() {
        let s: Schedule =
            toml::from_str("type = \"cosine_decay\"\ninitial_learning_rate = 0.001\ndecay_steps = 1000")
                .unwrap();
        assert!(matches!(s, Schedule::CosineDecay { alpha, warmup_target: None, .. } if alpha == 0.0));
        let err = toml::from_str::<Schedule>(
            "type = \"cosine_decay\"\ninitial_learning_rate = 0.1\ndecay_step = 10",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `decay_step`"), "{err}");
        let zero = Schedule::ExponentialDecay {
            initial_learning_rate: 0.1,
            decay_steps: 0,
            decay_rate: 0.5,
            staircase: false,
        };
        assert!(matches!(
            zero.validate(),
            Err(Error::InvalidSetting { field, .. }) if field == "learning_rate_schedule.decay_steps"
        ));
    }
}
