//! A bagged ensemble: models of one architecture whose outputs are averaged (soft voting).

use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};

use super::model::{Batch, BatchLoss, Evaluate};
use super::{Loss, Predict, Sequential};

#[derive(Debug)]
pub struct Ensemble {
    members: Vec<Sequential>,
}

impl Ensemble {
    /// An ensemble of `members`, which must share one architecture (layers and input).
    pub fn new(members: Vec<Sequential>) -> Result<Self> {
        let first = members
            .first()
            .ok_or_else(|| Error::too_few("ensemble members", 0, 1))?;
        if let Some((i, m)) = members
            .iter()
            .enumerate()
            .find(|(_, m)| m.specs() != first.specs() || m.input_shape() != first.input_shape())
        {
            return Err(Error::mismatch(
                format!("ensemble member {}'s architecture", i + 1),
                format!(
                    "{} layers, input {} (as member 1)",
                    first.specs().len(),
                    first.input_shape()
                ),
                format!("{} layers, input {}", m.specs().len(), m.input_shape()),
            ));
        }
        Ok(Ensemble { members })
    }

    pub fn members(&self) -> &[Sequential] {
        &self.members
    }

    pub fn into_members(self) -> Vec<Sequential> {
        self.members
    }

    /// The first member: the architecture and class names every member shares.
    pub fn first(&self) -> &Sequential {
        &self.members[0]
    }
}

impl Evaluate for Ensemble {
    fn evaluate_batch(&mut self, batch: Batch, loss: &Loss) -> Result<BatchLoss> {
        let (x, labels) = batch.samples("an ensemble")?;
        let averaged = self.predict(x, labels.len())?;
        // The average has no weights of its own: no penalties.
        self.members[0].loss_of_outputs(averaged.data(), labels, loss, false)
    }

    fn check_samples(&self, sample_shape: &[usize], classes: usize, what: &str) -> Result<()> {
        self.first().check_samples(sample_shape, classes, what)
    }
}

impl Predict for Ensemble {
    fn input_shape(&self) -> Shape {
        self.first().input_shape()
    }

    fn output_shape(&self) -> Shape {
        self.first().output_shape()
    }

    /// The mean of the members' outputs.
    fn predict(&mut self, x: &[f32], count: usize) -> Result<Tensor> {
        let (first, rest) = self.members.split_first_mut().expect("an ensemble has members");
        let mut sum = first.predict(x, count)?;
        for m in rest {
            let y = m.predict(x, count)?;
            sum.data_mut().iter_mut().zip(y.data()).for_each(|(s, v)| *s += v);
        }
        let n = self.members.len() as f32;
        sum.data_mut().iter_mut().for_each(|s| *s /= n);
        Ok(sum)
    }
}
