//! Losses as a spec names them, with Keras semantics: model outputs are probabilities
//! unless `from_logits`; a final softmax (or sigmoid) is fused into the cross-entropy.
//!
//! Data carries one class label per sample. The categorical losses expand it to one-hot
//! implicitly; mean squared error and binary cross-entropy compare against a one-hot row,
//! or against the label itself when the model has a single output.

use serde::{Deserialize, Serialize};

use super::Activation;
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::ops::Targets;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    MeanSquaredError,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    BinaryCrossentropy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    pub kind: LossKind,
    pub from_logits: bool,
}

impl Loss {
    /// Cross-entropy against integer class labels (Keras `SparseCategoricalCrossentropy`),
    /// on probabilities.
    pub fn sparse_categorical_crossentropy() -> Loss {
        Loss::of(LossKind::SparseCategoricalCrossentropy)
    }

    /// Cross-entropy against one-hot rows (Keras `CategoricalCrossentropy`).
    pub fn categorical_crossentropy() -> Loss {
        Loss::of(LossKind::CategoricalCrossentropy)
    }

    /// Keras `BinaryCrossentropy`.
    pub fn binary_crossentropy() -> Loss {
        Loss::of(LossKind::BinaryCrossentropy)
    }

    /// Keras `MeanSquaredError`.
    pub fn mean_squared_error() -> Loss {
        Loss::of(LossKind::MeanSquaredError)
    }

    /// The same loss on logits (Keras `from_logits=True`): the model ends without its
    /// softmax or sigmoid.
    pub fn on_logits(self) -> Loss {
        Loss {
            from_logits: true,
            ..self
        }
    }

    fn of(kind: LossKind) -> Loss {
        Loss {
            kind,
            from_logits: false,
        }
    }

    /// A language model's loss: next-token cross-entropy on its logits.
    pub fn next_token() -> Loss {
        Loss::sparse_categorical_crossentropy().on_logits()
    }

    /// True when the model should stop before its final activation and let this loss
    /// apply it in fused, numerically stable form.
    pub fn fuses(&self, final_activation: Activation) -> bool {
        !self.from_logits
            && match self.kind {
                LossKind::CategoricalCrossentropy | LossKind::SparseCategoricalCrossentropy => {
                    final_activation == Activation::Softmax
                }
                LossKind::BinaryCrossentropy => final_activation == Activation::Sigmoid,
                LossKind::MeanSquaredError => false,
            }
    }

    /// The mean loss of a batch. `output` is (batch, units); `fused` says the final
    /// activation was left out (see [`Loss::fuses`]).
    pub fn compute(&self, tape: &mut Tape, output: Var, fused: bool, labels: &[u32]) -> Result<Var> {
        let logits = fused || self.from_logits;
        match self.kind {
            LossKind::CategoricalCrossentropy | LossKind::SparseCategoricalCrossentropy => {
                if logits {
                    tape.softmax_cross_entropy(output, Targets::Classes(labels))
                } else {
                    tape.categorical_crossentropy(output, Targets::Classes(labels))
                }
            }
            LossKind::BinaryCrossentropy => {
                let targets = dense_targets(tape, output, labels, true)?;
                let loss = if logits {
                    tape.sigmoid_binary_crossentropy(output, &targets)
                } else {
                    tape.binary_crossentropy(output, &targets)
                };
                tape.recycle(targets);
                loss
            }
            LossKind::MeanSquaredError => {
                let targets = dense_targets(tape, output, labels, false)?;
                let loss = tape.mse(output, &targets);
                tape.recycle(targets);
                loss
            }
        }
    }
}

/// One-hot rows for `labels`, or the labels themselves for a single-unit output.
fn dense_targets(tape: &mut Tape, output: Var, labels: &[u32], binary: bool) -> Result<Vec<f32>> {
    let shape = tape.shape(output);
    let (rows, width) = (shape.rows(), shape.last());
    if labels.len() != rows {
        return Err(Error::shape(
            "loss labels",
            format!("{rows}, one per prediction"),
            labels.len(),
        ));
    }
    let mut targets = tape.alloc(rows * width);
    if width == 1 {
        if let Some(&bad) = labels.iter().find(|&&l| binary && l > 1) {
            // Binary cross-entropy on one output unit: two classes, 0 and 1.
            return Err(Error::LabelOutOfRange {
                label: bad.into(),
                classes: 2,
            });
        }
        targets.iter_mut().zip(labels).for_each(|(t, &l)| *t = l as f32);
        return Ok(targets);
    }
    targets.fill(0.0);
    for (row, &label) in targets.chunks_exact_mut(width).zip(labels) {
        let slot = row
            .get_mut(label as usize)
            .ok_or_else(|| Error::LabelOutOfRange {
                label: label.into(),
                classes: width,
            })?;
        *slot = 1.0;
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::Workspace;
    use crate::params::ParamStore;
    use crate::tensor::Shape;

    #[test]
    fn fusing_follows_the_final_activation() {
        let sparse = Loss {
            kind: LossKind::SparseCategoricalCrossentropy,
            from_logits: false,
        };
        assert!(sparse.fuses(Activation::Softmax));
        assert!(!sparse.fuses(Activation::Linear));
        assert!(!Loss {
            from_logits: true,
            ..sparse
        }
        .fuses(Activation::Softmax));
        let binary = Loss {
            kind: LossKind::BinaryCrossentropy,
            from_logits: false,
        };
        assert!(binary.fuses(Activation::Sigmoid));
    }

    #[test]
    fn mse_against_one_hot_rows() {
        let (mut p, mut ws) = (ParamStore::new(), Workspace::new());
        let mut t = Tape::new(&mut p, &mut ws);
        let y = t.input(&[0.5, 0.5, 0.0, 1.0], Shape::new(&[2, 2]));
        let mse = Loss {
            kind: LossKind::MeanSquaredError,
            from_logits: false,
        };
        let l = mse.compute(&mut t, y, false, &[0, 1]).unwrap();
        assert!((t.value(l)[0] - 0.125).abs() < 1e-7); // (0.25 + 0.25 + 0 + 0) / 4
        let err = mse.compute(&mut t, y, false, &[0, 2]).unwrap_err();
        assert!(
            matches!(err, Error::LabelOutOfRange { label: 2, classes: 2 }),
            "{err}"
        );
    }
}
