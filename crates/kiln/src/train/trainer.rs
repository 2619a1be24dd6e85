//! The trainer: what Keras's `compile` fixes (optimizer with its state, loss, schedule,
//! clipping, pruning) and the training state around a model (the dropout generator, batch
//! buffers). A model holds only its layers and parameters; one trainer fits any [`Model`].

use crate::error::{Error, Result};
use crate::nn::{Batch, Loss, Model};
use crate::optim::{GradientClipping, Optimizer, OptimizerSpec, Schedule};
use crate::rng::Rng;

use super::distributed::{self, Collective};

/// Stream label for dropout masks, apart from the streams used for init and shuffles.
const DROPOUT_STREAM: u64 = 0x6b69_6c6e_4452_4f50; // "kilnDROP"

pub struct Trainer {
    pub optimizer_spec: OptimizerSpec,
    pub(super) optimizer: Optimizer,
    pub loss: Loss,
    /// Replaces the optimizer's constant learning rate when set.
    pub schedule: Option<Schedule>,
    /// Applied to the gradients before each update when set.
    pub clipping: Option<GradientClipping>,
    /// A rate set during training (ReduceLROnPlateau); wins over the optimizer's constant.
    pub(super) learning_rate_override: Option<f32>,
    pub(super) dropout_rng: Rng,
    pub(super) batch_x: Vec<f32>,
    pub(super) batch_y: Vec<u32>,
    pub(super) batch_tokens: Vec<u32>,
    /// What a distributed step all-reduces (see `distributed::pack_step`), reused.
    reduce_buffer: Vec<f32>,
    /// Magnitude pruning during training: masks applied after every update.
    pruning: Option<crate::compress::Pruning>,
}

/// The outcome of one training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult {
    pub loss: f32,
    /// Predictions of the batch the model got right (before the update).
    pub correct: usize,
    /// False when the loss was NaN or infinite; no update was applied then.
    pub finite: bool,
}

/// A distributed step's place in its global batch.
#[derive(Clone, Copy)]
pub(super) struct GlobalBatch<'a> {
    pub group: &'a dyn Collective,
    /// Predictions in the whole global batch (samples, or tokens).
    pub predictions: usize,
}

impl Trainer {
    /// A trainer with `optimizer` and `loss` (Keras `compile`); `seed` drives dropout.
    pub fn new(optimizer: impl Into<OptimizerSpec>, loss: Loss, seed: u64) -> Trainer {
        let optimizer = optimizer.into();
        Trainer {
            optimizer: optimizer.build(),
            optimizer_spec: optimizer,
            loss,
            schedule: None,
            clipping: None,
            learning_rate_override: None,
            dropout_rng: Rng::derive(seed, DROPOUT_STREAM),
            batch_x: Vec::new(),
            batch_y: Vec::new(),
            batch_tokens: Vec::new(),
            reduce_buffer: Vec::new(),
            pruning: None,
        }
    }

    /// A language model's trainer: next-token cross-entropy on logits.
    pub fn for_language_model(optimizer: impl Into<OptimizerSpec>, seed: u64) -> Trainer {
        Trainer::new(optimizer, Loss::next_token(), seed)
    }

    /// Steps the learning rate by `schedule` instead of the optimizer's constant rate.
    pub fn with_schedule(mut self, schedule: Option<Schedule>) -> Result<Trainer> {
        if let Some(s) = &schedule {
            s.validate()?;
        }
        self.schedule = schedule;
        Ok(self)
    }

    /// Clips gradients before every update.
    pub fn with_clipping(mut self, clipping: Option<GradientClipping>) -> Result<Trainer> {
        if let Some(c) = clipping {
            c.validate()?;
        }
        self.clipping = clipping;
        Ok(self)
    }

    /// Prunes kernels by `pruning`'s schedule as training goes; pruned weights are
    /// re-zeroed after every update.
    pub fn set_pruning(&mut self, pruning: Option<crate::compress::Pruning>) {
        self.pruning = pruning;
    }

    /// Sets the learning rate for the following updates (what ReduceLROnPlateau does).
    pub fn override_learning_rate(&mut self, lr: f32) {
        self.learning_rate_override = Some(lr);
    }

    /// The learning rate for the next update: the schedule's value at the number of
    /// updates so far, or the optimizer's constant rate.
    pub fn learning_rate(&self) -> f32 {
        match (&self.schedule, self.learning_rate_override) {
            (Some(s), _) => s.learning_rate(self.optimizer.iterations()),
            (None, Some(lr)) => lr,
            (None, None) => self.optimizer_spec.learning_rate(),
        }
    }

    /// Updates applied so far.
    pub fn iterations(&self) -> u64 {
        self.optimizer.iterations()
    }

    /// Steps taken and the optimizer's per-parameter buffers.
    pub fn optimizer_snapshot(&self) -> (u64, &[Vec<Vec<f32>>]) {
        (self.optimizer.iterations(), self.optimizer.state())
    }

    pub fn learning_rate_override(&self) -> Option<f32> {
        self.learning_rate_override
    }

    pub fn dropout_rng_state(&self) -> [u64; 4] {
        self.dropout_rng.state()
    }

    /// Continues from a checkpoint's optimizer step count and buffers (one list per
    /// parameter of `parameters`), learning-rate override and dropout generator.
    pub(crate) fn restore_state(
        &mut self,
        parameters: usize,
        iterations: u64,
        optimizer_state: Vec<Vec<Vec<f32>>>,
        learning_rate_override: Option<f32>,
        dropout_rng: [u64; 4],
    ) -> Result<()> {
        let slots = self.optimizer.slots();
        let stored = optimizer_state.first().map_or(slots, Vec::len);
        if !optimizer_state.is_empty() && (optimizer_state.len() != parameters || stored != slots) {
            return Err(Error::mismatch(
                "the checkpoint's optimizer state",
                format!(
                    "{slots} buffers per parameter for {parameters} parameters, as the spec's optimizer keeps \
                     (resume with the optimizer the run started with)"
                ),
                format!("{stored} buffers per parameter for {}", optimizer_state.len()),
            ));
        }
        self.optimizer.restore(iterations, optimizer_state);
        self.learning_rate_override = learning_rate_override;
        self.dropout_rng = Rng::from_state(dropout_rng);
        Ok(())
    }

    /// One optimizer step on one batch. Allocates nothing once the first step has sized
    /// the model's buffers.
    pub fn train_step(&mut self, model: &mut dyn Model, batch: Batch) -> Result<StepResult> {
        self.step_with(model, batch, None, &mut 0.0)
    }

    /// One update from `batch`; in distributed training that batch is this rank's share of
    /// `global`, the gradients are summed over the ranks, and the result reports the
    /// global batch's mean loss and correct count.
    pub(super) fn step_with(
        &mut self,
        model: &mut dyn Model,
        batch: Batch,
        global: Option<GlobalBatch>,
        communication_seconds: &mut f64,
    ) -> Result<StepResult> {
        let lr = self.learning_rate();
        let predictions = batch.predictions();
        let (mut loss_value, mut correct) = match predictions {
            // A rank whose share of a short final batch is empty contributes nothing.
            0 => (0.0, 0),
            _ => {
                let b = model.train_batch(batch, &self.loss, &mut self.dropout_rng)?;
                (b.loss, b.correct)
            }
        };
        let params = model.params_mut();
        if let Some(g) = global {
            let share = predictions as f32 / g.predictions as f32;
            let local_sum = loss_value * predictions as f32;
            let buffer = &mut self.reduce_buffer;
            distributed::pack_step(buffer, params, local_sum, correct, share, g.group.size());
            distributed::all_reduce_timed(g.group, buffer, communication_seconds);
            let (loss_sum, global_correct) = distributed::unpack_step(buffer, params);
            (loss_value, correct) = (loss_sum / g.predictions as f32, global_correct);
        }
        if !loss_value.is_finite() {
            // Gradients of a non-finite loss would poison every weight: apply none.
            params.zero_grads();
            return Ok(StepResult {
                loss: loss_value,
                correct,
                finite: false,
            });
        }
        if let Some(clip) = self.clipping {
            clip.apply(params);
        }
        self.optimizer.step_and_clear(params, lr);
        if let Some(pruning) = &mut self.pruning {
            pruning.after_update(params, self.optimizer.iterations());
        }
        Ok(StepResult {
            loss: loss_value,
            correct,
            finite: true,
        })
    }

    /// The settings a checkpoint records and a resumed run must share for the result to
    /// be the same as without the interruption (with the data's own, from `fit`).
    pub(super) fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "optimizer": self.optimizer_spec,
            "loss": { "kind": self.loss.kind, "from_logits": self.loss.from_logits },
            "learning_rate_schedule": self.schedule,
            "gradient_clipping": self.clipping,
        })
    }

    /// Starts every rank from rank 0's weights, and gives each rank its own dropout
    /// stream (derived from rank 0's, so a resumed run draws the same masks again).
    pub(super) fn join_group(&mut self, model: &mut dyn Model, group: &dyn Collective) {
        distributed::broadcast_parameters(group, model.params_mut());
        let mut bytes: Vec<u8> = self
            .dropout_rng
            .state()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        group.broadcast_bytes(&mut bytes);
        if group.rank() > 0 {
            let seed = bytes.chunks_exact(8).fold(0u64, |h, w| {
                h.rotate_left(17) ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))
            });
            self.dropout_rng = Rng::derive(seed, group.rank() as u64);
        }
    }
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("optimizer", &self.optimizer_spec)
            .field("loss", &self.loss)
            .field("schedule", &self.schedule)
            .field("clipping", &self.clipping)
            .finish()
    }
}
