//! Evaluation: the mean loss and accuracy of a model on held-out data, in batches, with no
//! dropout and no gradients (Keras `evaluate`); split across the ranks in distributed
//! training.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::nn::{Batch, Evaluate, Loss, Model};
use crate::rng::Rng;

use super::distributed::{self, Collective};
use super::Trainer;

/// Stream of the validation windows: the same windows at every evaluation of a run.
const VALIDATION_STREAM: u64 = 3;

/// Samples are evaluated in batches of this many.
const EVALUATION_BATCH: usize = 1024;

/// Loss and accuracy of a model on a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f32,
    pub accuracy: f32,
}

/// What a model is evaluated on.
#[derive(Debug, Clone, Copy)]
pub enum EvalData<'a> {
    Samples(&'a Dataset),
    Windows(ValidationWindows<'a>),
}

/// `batches` batches of `batch_size` random windows of a held-out token stream, drawn from
/// a stream fixed by `seed`, so successive evaluations of a run compare.
#[derive(Debug, Clone, Copy)]
pub struct ValidationWindows<'a> {
    pub tokens: &'a [u32],
    pub context: usize,
    pub batches: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl ValidationWindows<'_> {
    pub(super) fn check(&self, model: &dyn Evaluate) -> Result<()> {
        if self.tokens.len() <= self.context {
            return Err(Error::too_few(
                "validation tokens for one window of context + 1",
                self.tokens.len(),
                self.context + 1,
            ));
        }
        if self.batches == 0 || self.batch_size == 0 {
            let what = match self.batches {
                0 => "validation batches",
                _ => "windows in a validation batch",
            };
            return Err(Error::too_few(what, 0, 1));
        }
        let vocab = self.tokens.iter().max().map_or(0, |&t| t as usize + 1);
        model.check_windows(self.context, vocab)
    }
}

impl Trainer {
    /// Mean loss and accuracy over `data` with the trainer's loss (Keras `evaluate`).
    pub fn evaluate(&mut self, model: &mut dyn Model, data: EvalData) -> Result<Evaluation> {
        self.evaluate_in(model, data, None)
    }

    /// [`Trainer::evaluate`]; with a group, each rank evaluates its share of `data` and
    /// the sums are reduced, so every rank returns the figures for the whole set.
    pub fn evaluate_in(
        &mut self,
        model: &mut dyn Model,
        data: EvalData,
        group: Option<&dyn Collective>,
    ) -> Result<Evaluation> {
        evaluate(model, &self.loss, data, group)
    }
}

/// Mean loss (by `loss`) and accuracy of `model` over `data`, split across `group`'s ranks
/// when given.
pub fn evaluate(
    model: &mut dyn Evaluate,
    loss: &Loss,
    data: EvalData,
    group: Option<&dyn Collective>,
) -> Result<Evaluation> {
    let (rank, ranks) = group.map_or((0, 1), |g| (g.rank(), g.size()));
    let mut sums = match data {
        EvalData::Samples(d) => {
            if d.is_empty() {
                return Err(Error::too_few("samples to evaluate on", 0, 1));
            }
            model.check_samples(&d.sample_shape, d.num_classes(), "evaluation")?;
            let (start, end) = distributed::shard_bounds(d.len(), rank, ranks);
            let size = d.sample_size();
            let features = &d.features[start * size..end * size];
            let labels = &d.labels[start..end];
            let batches = features
                .chunks(EVALUATION_BATCH * size.max(1))
                .zip(labels.chunks(EVALUATION_BATCH))
                .map(|(x, labels)| Batch::Samples { x, labels });
            sums_over(model, loss, batches)?
        }
        EvalData::Windows(w) => {
            w.check(model)?;
            let (mut inputs, mut targets) = (Vec::new(), Vec::new());
            let mut rng = Rng::derive(w.seed, VALIDATION_STREAM);
            let mut sums = [0.0f64; 3];
            // Every rank draws every batch (the stream is shared) and scores its own.
            for b in 0..w.batches {
                crate::lm::text::random_windows(
                    w.tokens,
                    w.batch_size,
                    w.context,
                    &mut rng,
                    &mut inputs,
                    &mut targets,
                );
                if b % ranks == rank {
                    let batch = Batch::Tokens {
                        inputs: &inputs,
                        targets: &targets,
                        rows: w.batch_size,
                    };
                    let part = sums_over(model, loss, std::iter::once(batch))?;
                    sums.iter_mut().zip(part).for_each(|(s, p)| *s += p);
                }
            }
            sums
        }
    };
    if let Some(g) = group {
        g.all_reduce_sum_f64(&mut sums);
    }
    let n = sums[2].max(1.0);
    Ok(Evaluation {
        loss: (sums[0] / n) as f32,
        accuracy: (sums[1] / n) as f32,
    })
}

/// The loss summed over predictions, the correct count and the number of predictions.
fn sums_over<'b>(
    model: &mut dyn Evaluate,
    loss: &Loss,
    batches: impl Iterator<Item = Batch<'b>>,
) -> Result<[f64; 3]> {
    let mut sums = [0.0f64; 3];
    for batch in batches {
        let n = batch.predictions();
        let b = crate::kernels::parallel::on_pool(|| model.evaluate_batch(batch, loss))?;
        sums[0] += b.loss as f64 * n as f64;
        sums[1] += b.correct as f64;
        sums[2] += n as f64;
    }
    Ok(sums)
}
