//! Cross-entropy losses with Keras semantics, each reduced to the mean over the batch.
//!
//! Every loss computes its gradient during the forward pass (it costs one more pass over
//! the same numbers) and saves it; backward only scales it by the upstream gradient.
//!
//! - [`Tape::softmax_cross_entropy`]: from logits, softmax fused in (stable, exact).
//! - [`Tape::categorical_crossentropy`]: from probabilities, Keras-style: each row is
//!   renormalised to sum 1 and clipped to [ε, 1−ε] with ε = 1e-7 before the log.
//! - [`Tape::sigmoid_binary_crossentropy`] / [`Tape::binary_crossentropy`]: the same pair
//!   for independent binary targets, averaged over all elements.

use rayon::prelude::*;

use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::PAR_THRESHOLD;
use crate::tensor::Shape;

use super::{softmax, unary::sigmoid, Targets};

/// Keras's `backend.epsilon()`, the clip applied to probabilities.
pub const EPSILON: f32 = 1e-7;

/// Checks the targets against predictions of shape (rows, classes).
fn check_targets(targets: &Targets, rows: usize, classes: usize, shape: Shape) -> Result<()> {
    match targets {
        Targets::Classes(labels) => {
            if labels.len() != rows {
                return Err(Error::shape(
                    "cross-entropy labels",
                    format!("{rows}, one per prediction"),
                    labels.len(),
                ));
            }
            if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
                return Err(Error::LabelOutOfRange {
                    label: bad.into(),
                    classes,
                });
            }
        }
        Targets::Dense(t) => {
            if t.len() != shape.numel() {
                return Err(Error::shape(
                    "cross-entropy targets",
                    format!("{} values for predictions {shape}", shape.numel()),
                    t.len(),
                ));
            }
        }
    }
    Ok(())
}

/// One row's share of a sparse softmax cross-entropy: its gradient `(softmax(x) − onehot)
/// / rows` into `g_row`, and its loss `lse(x) − x[label]`.
fn class_row(x_row: &[f32], label: usize, inv_rows: f32, g_row: &mut [f32]) -> f32 {
    let lse = softmax::log_sum_exp(x_row);
    for (j, (g, &v)) in g_row.iter_mut().zip(x_row).enumerate() {
        let t = (j == label) as u8 as f32;
        *g = ((v - lse).exp() - t) * inv_rows;
    }
    lse - x_row[label]
}

/// Target probability of class `j` in row `r`.
#[inline]
fn target(targets: &Targets, r: usize, j: usize, classes: usize) -> f32 {
    match targets {
        Targets::Classes(labels) => (labels[r] as usize == j) as u8 as f32,
        Targets::Dense(t) => t[r * classes + j],
    }
}

impl Tape<'_> {
    /// Mean over rows of `−Σ_j t_j log softmax(x)_j`; gradient `(softmax(x)·Σt − t) / rows`.
    pub fn softmax_cross_entropy(&mut self, logits: Var, targets: Targets) -> Result<Var> {
        let shape = self.shape(logits);
        let (rows, classes) = (shape.rows(), shape.last());
        check_targets(&targets, rows, classes, shape)?;
        let mut grad = self.alloc(shape.numel());
        let inv_rows = 1.0 / rows as f32;
        let total = match &targets {
            Targets::Classes(labels) => {
                // Each row's loss, kept apart (a pooled buffer: training steps allocate
                // nothing) and added in row order, so the sum does not depend on threads.
                let mut losses = self.alloc(rows);
                let x = self.value(logits);
                let per_row = |(r, (g_row, loss)): (usize, (&mut [f32], &mut f32))| {
                    let x_row = &x[r * classes..][..classes];
                    *loss = class_row(x_row, labels[r] as usize, inv_rows, g_row);
                };
                // A language model's rows span its whole vocabulary: rows on the threads.
                if grad.len() >= PAR_THRESHOLD {
                    grad.par_chunks_mut(classes)
                        .zip(losses.par_iter_mut())
                        .enumerate()
                        .for_each(per_row);
                } else {
                    grad.chunks_mut(classes)
                        .zip(losses.iter_mut())
                        .enumerate()
                        .for_each(per_row);
                }
                let total = losses.iter().map(|&l| l as f64).sum();
                self.recycle(losses);
                total
            }
            Targets::Dense(t) => {
                let x = self.value(logits);
                let mut total = 0.0f64;
                for (r, g_row) in grad.chunks_exact_mut(classes).enumerate() {
                    let (x_row, t_row) = (&x[r * classes..][..classes], &t[r * classes..][..classes]);
                    let lse = softmax::log_sum_exp(x_row);
                    let t_sum: f32 = t_row.iter().sum();
                    for ((g, &v), &t) in g_row.iter_mut().zip(x_row).zip(t_row) {
                        if t != 0.0 {
                            total += (t * (lse - v)) as f64;
                        }
                        *g = ((v - lse).exp() * t_sum - t) * inv_rows;
                    }
                }
                total
            }
        };
        let loss = (total / rows as f64) as f32;
        self.finish_loss(logits, loss, grad)
    }

    /// Keras `categorical_crossentropy(from_logits=False)` on probabilities.
    pub fn categorical_crossentropy(&mut self, probs: Var, targets: Targets) -> Result<Var> {
        let shape = self.shape(probs);
        let (rows, classes) = (shape.rows(), shape.last());
        check_targets(&targets, rows, classes, shape)?;
        let mut grad = self.alloc(shape.numel());
        let p = self.value(probs);
        let mut total = 0.0f64;
        for (r, g_row) in grad.chunks_exact_mut(classes).enumerate() {
            let row = &p[r * classes..][..classes];
            let s: f32 = row.iter().sum();
            // dL/dq_j for q = clip(p/s): zero where the clip is active.
            let mut weighted = 0.0f32;
            for (j, g) in g_row.iter_mut().enumerate() {
                let q = row[j] / s;
                let t = target(&targets, r, j, classes);
                let qc = q.clamp(EPSILON, 1.0 - EPSILON);
                total -= (t * qc.ln()) as f64;
                *g = if q > EPSILON && q < 1.0 - EPSILON {
                    -t / q
                } else {
                    0.0
                };
                weighted += *g * q;
            }
            // dq_j/dp_i = (δ_ij − q_j)/s  ⇒  dL/dp_i = (dL/dq_i − Σ_j dL/dq_j q_j)/s
            g_row
                .iter_mut()
                .for_each(|g| *g = (*g - weighted) / s / rows as f32);
        }
        let loss = (total / rows as f64) as f32;
        self.finish_loss(probs, loss, grad)
    }

    /// Mean over all elements of `max(x,0) − x·t + log(1 + e^−|x|)`; gradient `σ(x) − t`.
    pub fn sigmoid_binary_crossentropy(&mut self, logits: Var, targets: &[f32]) -> Result<Var> {
        let shape = self.shape(logits);
        check_targets(&Targets::Dense(targets), shape.rows(), shape.last(), shape)?;
        let n = shape.numel() as f32;
        let mut grad = self.alloc(shape.numel());
        let mut total = 0.0f64;
        for ((g, &x), &t) in grad.iter_mut().zip(self.value(logits)).zip(targets) {
            total += (x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()) as f64;
            *g = (sigmoid(x) - t) / n;
        }
        self.finish_loss(logits, (total / n as f64) as f32, grad)
    }

    /// Keras `binary_crossentropy(from_logits=False)`: probabilities clipped to [ε, 1−ε].
    pub fn binary_crossentropy(&mut self, probs: Var, targets: &[f32]) -> Result<Var> {
        let shape = self.shape(probs);
        check_targets(&Targets::Dense(targets), shape.rows(), shape.last(), shape)?;
        let n = shape.numel() as f32;
        let mut grad = self.alloc(shape.numel());
        let mut total = 0.0f64;
        for ((g, &p), &t) in grad.iter_mut().zip(self.value(probs)).zip(targets) {
            let pc = p.clamp(EPSILON, 1.0 - EPSILON);
            total -= (t * pc.ln() + (1.0 - t) * (1.0 - pc).ln()) as f64;
            *g = if p > EPSILON && p < 1.0 - EPSILON {
                (-t / p + (1.0 - t) / (1.0 - p)) / n
            } else {
                0.0
            };
        }
        self.finish_loss(probs, (total / n as f64) as f32, grad)
    }

    /// Records a scalar loss whose gradient with respect to `x` is `grad`.
    pub(crate) fn finish_loss(&mut self, x: Var, loss: f32, grad: Vec<f32>) -> Result<Var> {
        let mut value = self.alloc(1);
        value[0] = loss;
        let out = self.push_op(Shape::scalar(), value, Op::SavedGrad { x }, &[x]);
        self.set_saved(out, grad);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::Workspace;
    use crate::ops::gradcheck;
    use crate::params::ParamStore;

    fn loss_value(build: impl Fn(&mut Tape) -> Var) -> f32 {
        let (mut p, mut ws) = (ParamStore::new(), Workspace::new());
        let mut t = Tape::new(&mut p, &mut ws);
        let l = build(&mut t);
        t.value(l)[0]
    }

    #[test]
    fn values_match_hand_computation() {
        // logits [1, 2, 3], label 2: −log softmax = log(e¹+e²+e³) − 3 = 0.40760596
        let v = loss_value(|t| {
            let x = t.input(&[1.0, 2.0, 3.0], Shape::new(&[1, 3]));
            t.softmax_cross_entropy(x, Targets::Classes(&[2])).unwrap()
        });
        assert!((v - 0.407_605_96).abs() < 1e-6);
        // probabilities [0.2, 0.3, 0.5] (already normalised), label 1: −ln 0.3
        let v = loss_value(|t| {
            let x = t.input(&[0.2, 0.3, 0.5], Shape::new(&[1, 3]));
            t.categorical_crossentropy(x, Targets::Classes(&[1])).unwrap()
        });
        assert!((v - 1.203_972_8).abs() < 1e-6);
        // Keras renormalises: [0.4, 0.6, 1.0] is the same distribution
        let v = loss_value(|t| {
            let x = t.input(&[0.4, 0.6, 1.0], Shape::new(&[1, 3]));
            t.categorical_crossentropy(x, Targets::Dense(&[0.0, 1.0, 0.0]))
                .unwrap()
        });
        assert!((v - 1.203_972_8).abs() < 1e-6);
        // a zero probability is clipped to 1e-7: −ln(1e-7) = 16.118095
        let v = loss_value(|t| {
            let x = t.input(&[1.0, 0.0], Shape::new(&[1, 2]));
            t.categorical_crossentropy(x, Targets::Classes(&[1])).unwrap()
        });
        assert!((v - 16.118_095).abs() < 1e-4);
        // binary: p = 0.8, t = 1 and p = 0.4, t = 0: mean(−ln 0.8, −ln 0.6) = 0.36698
        let v = loss_value(|t| {
            let x = t.input(&[0.8, 0.4], Shape::new(&[2, 1]));
            t.binary_crossentropy(x, &[1.0, 0.0]).unwrap()
        });
        assert!((v - 0.366_985_2).abs() < 1e-6);
        // from logits: x = 0 gives ln 2 whatever the target
        let v = loss_value(|t| {
            let x = t.input(&[0.0, 0.0], Shape::new(&[1, 2]));
            t.sigmoid_binary_crossentropy(x, &[1.0, 0.0]).unwrap()
        });
        assert!((v - std::f32::consts::LN_2).abs() < 1e-6);
    }

    #[test]
    fn fused_softmax_matches_softmax_then_crossentropy() {
        let logits = gradcheck::random(12, 3);
        let labels = [0u32, 3, 1];
        let fused = loss_value(|t| {
            let x = t.input(&logits, Shape::new(&[3, 4]));
            t.softmax_cross_entropy(x, Targets::Classes(&labels)).unwrap()
        });
        let unfused = loss_value(|t| {
            let x = t.input(&logits, Shape::new(&[3, 4]));
            let p = t.softmax(x);
            t.categorical_crossentropy(p, Targets::Classes(&labels)).unwrap()
        });
        assert!((fused - unfused).abs() < 1e-5);
    }

    #[test]
    fn gradient_checks() {
        let labels = [2u32, 0, 1];
        let dense = [0.1, 0.7, 0.2, 1.0, 0.0, 0.0, 0.3, 0.3, 0.4];
        let logits = [(&[3, 3][..], gradcheck::random(9, 11))];
        gradcheck::check("softmax_ce sparse", &logits, |t, v| {
            t.softmax_cross_entropy(v[0], Targets::Classes(&labels)).unwrap()
        });
        gradcheck::check("softmax_ce dense", &logits, |t, v| {
            t.softmax_cross_entropy(v[0], Targets::Dense(&dense)).unwrap()
        });
        // probabilities in (0.2, 1): inside the clip range
        let probs: Vec<f32> = gradcheck::random(9, 12).iter().map(|v| 0.6 + 0.4 * v).collect();
        gradcheck::check("categorical_ce", &[(&[3, 3], probs.clone())], |t, v| {
            t.categorical_crossentropy(v[0], Targets::Dense(&dense)).unwrap()
        });
        let bin_targets = [1.0, 0.0, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 0.0];
        let probs_01: Vec<f32> = probs.iter().map(|p| p * 0.9).collect();
        gradcheck::check("binary_ce", &[(&[3, 3], probs_01)], |t, v| {
            t.binary_crossentropy(v[0], &bin_targets).unwrap()
        });
        gradcheck::check("sigmoid_binary_ce", &logits, |t, v| {
            t.sigmoid_binary_crossentropy(v[0], &bin_targets).unwrap()
        });
    }

    #[test]
    fn out_of_range_label_is_an_error() {
        let (mut p, mut ws) = (ParamStore::new(), Workspace::new());
        let mut t = Tape::new(&mut p, &mut ws);
        let x = t.input(&[0.0; 6], Shape::new(&[2, 3]));
        let err = t.softmax_cross_entropy(x, Targets::Classes(&[1, 3])).unwrap_err();
        assert!(
            matches!(err, Error::LabelOutOfRange { label: 3, classes: 3 }),
            "{err}"
        );
    }
}
