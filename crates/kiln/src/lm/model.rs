//! The GPT as the trainer sees it: batches of token windows in, next-token cross-entropy
//! and accuracy out.

use std::any::Any;

use crate::error::{Error, Result};
use crate::nn::{Batch, BatchLoss, Evaluate, Loss, Model};
use crate::params::ParamStore;
use crate::rng::Rng;

use super::Gpt;

impl Model for Gpt {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn train_batch(&mut self, batch: Batch, _loss: &Loss, dropout: &mut Rng) -> Result<BatchLoss> {
        let (inputs, targets, rows) = windows(batch)?;
        let dropout = (self.config().dropout > 0.0).then_some(dropout);
        let recorded = self.loss_and_hits(inputs, targets, rows, dropout, true);
        if recorded.is_err() {
            self.params.zero_grads();
        }
        let (loss, correct) = recorded?;
        Ok(BatchLoss { loss, correct })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Evaluate for Gpt {
    fn evaluate_batch(&mut self, batch: Batch, _loss: &Loss) -> Result<BatchLoss> {
        let (inputs, targets, rows) = windows(batch)?;
        let (loss, correct) = self.loss_and_hits(inputs, targets, rows, None, false)?;
        Ok(BatchLoss { loss, correct })
    }

    fn check_windows(&self, context: usize, vocab: usize) -> Result<()> {
        if context > self.config().context {
            return Err(Error::mismatch(
                "the data's windows",
                format!("at most the model's context of {} tokens", self.config().context),
                format!("{context} tokens"),
            ));
        }
        if vocab > self.vocab_size() {
            return Err(Error::TokenOutOfRange {
                token: vocab - 1,
                vocab: self.vocab_size(),
            });
        }
        Ok(())
    }
}

/// A batch of token windows, or an error naming what a GPT reads instead.
fn windows<'a>(batch: Batch<'a>) -> Result<(&'a [u32], &'a [u32], usize)> {
    match batch {
        Batch::Tokens {
            inputs,
            targets,
            rows,
        } => Ok((inputs, targets, rows)),
        Batch::Samples { .. } => Err(Error::mismatch(
            "the data",
            "token windows, which a GPT reads",
            "samples with labels",
        )),
    }
}
