//! compile / fit / evaluate / predict on a [`Sequential`] model.

use std::path::Path;
use std::time::Instant;

use crate::autograd::Tape;
use crate::data::{epoch_order, gather_batch, prefetch_batch, Augmentation, Dataset};
use crate::error::{Error, Result};
use crate::nn::{Loss, Mode, Sequential};
use crate::ops::keep_awake::KeepAwake;
use crate::optim::{GradientClipping, Optimizer, OptimizerSpec, Schedule};
use crate::rng::Rng;
use crate::tensor::Tensor;

use super::distributed::{self, Collective};
use super::{BatchProgress, Callback, Checkpoint, Control, EpochLog, FlushDenormals, History};

/// Stream label for dropout masks, apart from the streams used for init and shuffles.
const DROPOUT_STREAM: u64 = 0x6b69_6c6e_4452_4f50; // "kilnDROP"

/// What `compile` fixes: the optimizer with its state, the loss, and reusable buffers.
pub struct Compiled {
    pub optimizer_spec: OptimizerSpec,
    optimizer: Optimizer,
    pub loss: Loss,
    /// Replaces the optimizer's constant learning rate when set.
    pub schedule: Option<Schedule>,
    /// Applied to the gradients before each update when set.
    pub clipping: Option<GradientClipping>,
    /// A rate set during training (ReduceLROnPlateau); wins over the optimizer's constant.
    learning_rate_override: Option<f32>,
    dropout_rng: Rng,
    batch_x: Vec<f32>,
    batch_y: Vec<u32>,
    /// What a distributed step all-reduces (see `distributed::pack_step`), reused.
    reduce_buffer: Vec<f32>,
    /// Magnitude pruning during training: masks applied after every update.
    pruning: Option<crate::prune::Pruning>,
}

impl Compiled {
    /// The learning rate for the next update: the schedule's value at the number of
    /// updates so far, or the optimizer's constant rate.
    pub fn learning_rate(&self) -> f32 {
        match (&self.schedule, self.learning_rate_override) {
            (Some(s), _) => s.learning_rate(self.optimizer.iterations()),
            (None, Some(lr)) => lr,
            (None, None) => self.optimizer_spec.learning_rate(),
        }
    }

    /// Steps taken and the optimizer's per-parameter buffers.
    pub fn optimizer_snapshot(&self) -> (u64, &[Vec<Vec<f32>>]) {
        (self.optimizer.iterations(), self.optimizer.state())
    }

    pub fn optimizer_slots(&self) -> usize {
        self.optimizer.slots()
    }

    pub fn learning_rate_override(&self) -> Option<f32> {
        self.learning_rate_override
    }

    pub fn dropout_rng_state(&self) -> [u64; 4] {
        self.dropout_rng.state()
    }

    pub(crate) fn restore_state(
        &mut self,
        iterations: u64,
        optimizer_state: Vec<Vec<Vec<f32>>>,
        learning_rate_override: Option<f32>,
        dropout_rng: Rng,
    ) {
        self.optimizer.restore(iterations, optimizer_state);
        self.learning_rate_override = learning_rate_override;
        self.dropout_rng = dropout_rng;
    }
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("optimizer", &self.optimizer_spec)
            .field("loss", &self.loss)
            .finish()
    }
}

/// Where validation data comes from.
#[derive(Debug, Clone, Copy)]
pub enum Validation<'a> {
    None,
    /// Keras `validation_split`: the last fraction of the training data, before shuffling.
    Split(f32),
    Data(&'a Dataset),
}

#[derive(Debug, Clone, Copy)]
pub struct FitOptions<'a> {
    pub epochs: usize,
    pub batch_size: usize,
    pub validation: Validation<'a>,
    pub shuffle: bool,
    pub seed: u64,
    /// Print one line per epoch (Keras `verbose=2`).
    pub verbose: bool,
    /// Where to save a training checkpoint after every epoch.
    pub checkpoint: Option<CheckpointTarget<'a>>,
    /// Skip a batch whose loss is NaN or infinite (no update) instead of stopping.
    pub skip_nonfinite_batches: bool,
    /// Train data-parallel with the other ranks of this group: each rank computes the
    /// gradient of its share of every global batch of `batch_size`, the shares are summed,
    /// and every rank applies the same update. Validation is split the same way.
    pub distributed: Option<&'a dyn Collective>,
    /// Random image transforms applied to every training batch.
    pub augmentation: Option<&'a Augmentation>,
}

impl Default for FitOptions<'_> {
    /// Keras's `fit` defaults: one epoch, batch 32, shuffled, no validation.
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            validation: Validation::None,
            shuffle: true,
            seed: 0,
            verbose: false,
            checkpoint: None,
            skip_nonfinite_batches: false,
            distributed: None,
            augmentation: None,
        }
    }
}

/// Where `fit` keeps its checkpoint, and what the caller wants stored with it.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointTarget<'a> {
    pub path: &'a Path,
    pub context: &'a serde_json::Value,
}

/// Totals of one pass over the training set.
struct EpochTotals {
    loss: f32,
    accuracy: f32,
    skipped_batches: usize,
    /// Seconds spent in all-reduce (distributed training only).
    communication_seconds: f64,
}

/// A distributed step's place in its global batch.
#[derive(Clone, Copy)]
struct GlobalBatch<'a> {
    group: &'a dyn Collective,
    samples: usize,
}

/// Loss and accuracy of a model on a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f32,
    pub accuracy: f32,
}

/// The outcome of one training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult {
    pub loss: f32,
    /// Samples of the batch the model classified correctly (before the update).
    pub correct: usize,
    /// False when the loss was NaN or infinite; no update was applied then.
    pub finite: bool,
}

impl Sequential {
    /// Fixes the optimizer and loss for training (Keras `compile`). Accuracy is always
    /// tracked as the metric.
    pub fn compile(&mut self, optimizer: OptimizerSpec, loss: Loss, seed: u64) {
        self.compiled = Some(Compiled {
            optimizer: optimizer.build(),
            optimizer_spec: optimizer,
            loss,
            schedule: None,
            learning_rate_override: None,
            clipping: None,
            dropout_rng: Rng::derive(seed, DROPOUT_STREAM),
            batch_x: Vec::new(),
            batch_y: Vec::new(),
            reduce_buffer: Vec::new(),
            pruning: None,
        });
    }

    /// Steps the learning rate by `schedule` instead of the optimizer's constant rate
    /// (call after `compile`).
    pub fn set_learning_rate_schedule(&mut self, schedule: Option<Schedule>) -> Result<()> {
        if let Some(s) = &schedule {
            s.validate()?;
        }
        self.require_compiled()?.schedule = schedule;
        Ok(())
    }

    /// Clips gradients before every update (call after `compile`).
    pub fn set_gradient_clipping(&mut self, clipping: Option<GradientClipping>) -> Result<()> {
        if let Some(c) = clipping {
            c.validate()?;
        }
        self.require_compiled()?.clipping = clipping;
        Ok(())
    }

    /// Prunes the Dense kernels by `pruning`'s schedule as training goes (call after
    /// `compile`); pruned weights are re-zeroed after every update.
    pub fn set_pruning(&mut self, pruning: Option<crate::prune::Pruning>) -> Result<()> {
        self.require_compiled()?.pruning = pruning;
        Ok(())
    }

    /// Sets the learning rate for the following updates (what ReduceLROnPlateau does).
    pub fn override_learning_rate(&mut self, lr: f32) -> Result<()> {
        self.require_compiled()?.learning_rate_override = Some(lr);
        Ok(())
    }

    /// A copy of every parameter's values, in order (Keras `get_weights`).
    pub fn weights(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.value.clone()).collect()
    }

    /// Replaces every parameter's values; shapes must match (Keras `set_weights`).
    pub fn set_weights(&mut self, weights: &[Tensor]) -> Result<()> {
        if weights.len() != self.params.len() {
            return Err(Error::Shape(format!(
                "{} weights for {} parameters",
                weights.len(),
                self.params.len()
            )));
        }
        for (p, w) in self.params.iter().zip(weights) {
            if p.value.dims() != w.dims() {
                return Err(Error::Shape(format!(
                    "{}: weight {:?} for a parameter {:?}",
                    p.name,
                    w.dims(),
                    p.value.dims()
                )));
            }
        }
        for (p, w) in self.params.iter_mut().zip(weights) {
            p.value.data_mut().copy_from_slice(w.data());
        }
        Ok(())
    }

    /// The learning rate the next update will use.
    pub fn current_learning_rate(&self) -> Option<f32> {
        self.compiled.as_ref().map(Compiled::learning_rate)
    }

    pub fn compiled(&self) -> Option<&Compiled> {
        self.compiled.as_ref()
    }

    fn require_compiled(&mut self) -> Result<&mut Compiled> {
        self.compiled.as_mut().ok_or_else(|| {
            Error::Value(
                "the model must be compiled (optimizer and loss) before training or evaluating".into(),
            )
        })
    }

    /// One optimizer step on a batch of `labels.len()` samples stored back to back in `x`.
    /// Allocates nothing once the first step has sized the buffers.
    pub fn train_step(&mut self, x: &[f32], labels: &[u32]) -> Result<StepResult> {
        let input_shape = self.input_shape();
        let batch = labels.len();
        if x.len() != batch * input_shape.numel() {
            return Err(Error::Shape(format!(
                "{} values for {batch} samples of shape {input_shape}",
                x.len()
            )));
        }
        let mut compiled = self
            .compiled
            .take()
            .ok_or_else(|| Error::Value("the model must be compiled before training".into()))?;
        let result = self.step_with(&mut compiled, x, labels, None, &mut 0.0);
        self.compiled = Some(compiled);
        result
    }

    /// One update from the batch `x`/`labels`; in distributed training that batch is this
    /// rank's share of `global`, the gradients are summed over the ranks, and the result
    /// reports the global batch's loss and correct count.
    fn step_with(
        &mut self,
        c: &mut Compiled,
        x: &[f32],
        labels: &[u32],
        global: Option<GlobalBatch>,
        communication_seconds: &mut f64,
    ) -> Result<StepResult> {
        let lr = c.learning_rate();
        let (mut loss_value, mut correct) = match labels.is_empty() {
            // A rank whose share of a short final batch is empty contributes nothing.
            true => (0.0, 0),
            false => self.forward_backward(c, x, labels)?,
        };
        let (_, params, _) = self.parts();
        if let Some(g) = global {
            let share = labels.len() as f32 / g.samples as f32;
            let local_sum = loss_value * labels.len() as f32;
            let buffer = &mut c.reduce_buffer;
            distributed::pack_step(buffer, params, local_sum, correct, share, g.group.size());
            distributed::all_reduce_timed(g.group, buffer, communication_seconds);
            let (loss_sum, global_correct) = distributed::unpack_step(buffer, params);
            (loss_value, correct) = (loss_sum / g.samples as f32, global_correct);
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
        if let Some(clip) = c.clipping {
            clip.apply(params);
        }
        c.optimizer.step_and_clear(params, lr);
        if let Some(pruning) = &mut c.pruning {
            pruning.after_update(params, c.optimizer.iterations());
        }
        Ok(StepResult {
            loss: loss_value,
            correct,
            finite: true,
        })
    }

    /// The forward and backward pass of one batch: its loss and correct count, with the
    /// gradients accumulated in the parameters (cleared again on an error).
    fn forward_backward(&mut self, c: &mut Compiled, x: &[f32], labels: &[u32]) -> Result<(f32, usize)> {
        let shape = self.input_shape().with_batch(labels.len());
        let (network, params, workspace) = self.parts();
        let fused = c.loss.fuses(network.final_activation());
        // Gradients are zero here: fresh, or cleared by the previous step's update (or by
        // the error path below).
        let recorded = (|| {
            let mut tape = Tape::new(params, workspace);
            let input = tape.input(x, shape);
            let output = network.forward(&mut tape, input, &mut Mode::Train(&mut c.dropout_rng), fused)?;
            let data_loss = c.loss.compute(&mut tape, output, fused, labels)?;
            let loss = with_penalties(network, &mut tape, data_loss)?;
            tape.backward(loss);
            let correct = count_correct(tape.value(output), labels, fused || c.loss.from_logits);
            Ok((tape.value(loss)[0], correct))
        })();
        if recorded.is_err() {
            params.zero_grads();
        }
        recorded
    }

    /// Trains for `options.epochs` epochs (Keras `fit`).
    pub fn fit(&mut self, train: &Dataset, options: &FitOptions) -> Result<History> {
        self.fit_with_callbacks(train, options, &mut [])
    }

    /// [`Sequential::fit`], calling each callback at the start, after every epoch (any may
    /// stop training) and at the end.
    pub fn fit_with_callbacks(
        &mut self,
        train: &Dataset,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
    ) -> Result<History> {
        self.fit_from(train, options, callbacks, None)
    }

    /// Continues the training a [`Checkpoint`] captured, up to `options.epochs` in all.
    /// With the same data, options and callbacks, the result is bit-identical to training
    /// without the interruption.
    pub fn resume_fit(
        &mut self,
        train: &Dataset,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
        checkpoint: &Checkpoint,
    ) -> Result<History> {
        self.fit_from(train, options, callbacks, Some(checkpoint))
    }

    fn fit_from(
        &mut self,
        train: &Dataset,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
        resume: Option<&Checkpoint>,
    ) -> Result<History> {
        self.require_compiled()?;
        if options.batch_size == 0 {
            return Err(Error::Value("batch_size must be at least 1".into()));
        }
        let split;
        let (train, validation) = match options.validation {
            Validation::None => (train, None),
            Validation::Data(v) => (train, Some(v)),
            Validation::Split(fraction) => {
                split = train.split_tail(fraction)?; // copies: `train` is borrowed
                (&split.0, Some(&split.1).filter(|v| !v.is_empty()))
            }
        };
        self.check_data(train, "training")?;
        if let Some(v) = validation {
            self.check_data(v, "validation")?;
        }
        if train.is_empty() {
            return Err(Error::Value("the training set is empty".into()));
        }
        crate::ops::parallel::on_pool(|| self.fit_on_pool(train, validation, options, callbacks, resume))
    }

    fn fit_on_pool(
        &mut self,
        train: &Dataset,
        validation: Option<&Dataset>,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
        resume: Option<&Checkpoint>,
    ) -> Result<History> {
        let _flush = FlushDenormals::enable();
        // The peer worker polls between steps instead of sleeping (see keep_awake.rs).
        let awake = KeepAwake::start();
        let settings = self.training_settings(options);
        if let Some(checkpoint) = resume {
            // Before any callback starts (a CSV logger truncates its file), so a checkpoint
            // that does not fit changes nothing.
            checkpoint.check_fits(self, &settings, callbacks)?;
        }
        for c in callbacks.iter_mut() {
            c.on_train_begin(self)?;
        }
        let mut history = History::default();
        let mut first_epoch = 0;
        if let Some(checkpoint) = resume {
            checkpoint.restore(self, callbacks)?;
            history = checkpoint.progress.history.clone();
            first_epoch = match checkpoint.progress.stopped {
                true => options.epochs.max(history.epochs.len()),
                false => history.epochs.len(),
            };
        }
        if let Some(group) = options.distributed {
            self.join_group(group);
        }
        let is_root = options.distributed.is_none_or(|g| g.rank() == 0);
        let steps = train.len().div_ceil(options.batch_size);
        for epoch in first_epoch..options.epochs {
            for c in callbacks.iter_mut() {
                c.on_epoch_begin(epoch + 1, options.epochs, steps);
            }
            let start = Instant::now();
            let totals = self.train_epoch(train, epoch, options, callbacks, &awake)?;
            let train_seconds = start.elapsed().as_secs_f64();
            let val = validation
                .map(|v| self.evaluate_in(v, 1024, options.distributed))
                .transpose()?;
            let log = EpochLog {
                epoch: epoch + 1,
                loss: totals.loss,
                accuracy: totals.accuracy,
                val_loss: val.map(|v| v.loss),
                val_accuracy: val.map(|v| v.accuracy),
                seconds: start.elapsed().as_secs_f64(),
                train_seconds,
                learning_rate: self.current_learning_rate().unwrap_or(0.0),
                skipped_batches: totals.skipped_batches,
                communication_seconds: totals.communication_seconds,
            };
            if options.verbose && is_root {
                println!("{}", log.progress_line(options.epochs, steps));
            }
            let mut stop = false;
            for c in callbacks.iter_mut() {
                stop |= c.on_epoch_end(&log, self)? == Control::Stop;
            }
            if let Some(group) = options.distributed {
                // Every rank sees the same logs, so their callbacks agree; make sure of it.
                let mut votes = [stop as u8 as f64];
                group.all_reduce_sum_f64(&mut votes);
                stop = votes[0] > 0.0;
            }
            history.epochs.push(log);
            if let Some(target) = options.checkpoint.filter(|_| is_root) {
                let context = target.context.clone();
                Checkpoint::capture(self, &history, callbacks, stop, context, settings.clone())?
                    .save(target.path)?;
            }
            if stop {
                break;
            }
        }
        for c in callbacks.iter_mut() {
            c.on_train_end(self)?;
        }
        Ok(history)
    }

    /// The settings a checkpoint records and a resumed run must share for the result to
    /// be the same as without the interruption.
    fn training_settings(&self, options: &FitOptions) -> serde_json::Value {
        let c = self.compiled.as_ref().expect("checked by fit");
        let validation = match options.validation {
            Validation::None => serde_json::json!("none"),
            Validation::Split(f) => serde_json::json!({ "split": f }),
            Validation::Data(d) => serde_json::json!({ "samples": d.len() }),
        };
        serde_json::json!({
            "optimizer": c.optimizer_spec,
            "loss": { "kind": c.loss.kind, "from_logits": c.loss.from_logits },
            "learning_rate_schedule": c.schedule,
            "gradient_clipping": c.clipping,
            "batch_size": options.batch_size,
            "seed": options.seed,
            "shuffle": options.shuffle,
            "validation": validation,
        })
    }

    /// Starts every rank from rank 0's weights, and gives each rank its own dropout
    /// stream (derived from rank 0's, so a resumed run draws the same masks again).
    fn join_group(&mut self, group: &dyn Collective) {
        distributed::broadcast_parameters(group, &mut self.params);
        let c = self.compiled.as_mut().expect("checked by fit");
        let mut bytes: Vec<u8> = c
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
            c.dropout_rng = Rng::derive(seed, group.rank() as u64);
        }
    }

    /// One pass over the training set: mean loss weighted by batch size, and accuracy, over
    /// the batches that were applied.
    fn train_epoch(
        &mut self,
        train: &Dataset,
        epoch: usize,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
        awake: &KeepAwake,
    ) -> Result<EpochTotals> {
        let order = epoch_order(train.len(), epoch, options.seed, options.shuffle);
        let mut c = self.compiled.take().expect("checked by fit");
        let (mut loss_sum, mut correct, mut seen, mut skipped) = (0.0f64, 0usize, 0usize, 0usize);
        let mut communication_seconds = 0.0;
        let steps = order.len().div_ceil(options.batch_size);
        let mut result = Ok(());
        let mut batches = order.chunks(options.batch_size).peekable();
        let mut step = 0;
        while let Some(batch) = batches.next() {
            step += 1;
            // A poller ends after a pause of a millisecond (an all-reduce wait, the end of
            // an epoch); start it again. One atomic load when all are running.
            awake.rearm();
            let (mut x, mut y) = (std::mem::take(&mut c.batch_x), std::mem::take(&mut c.batch_y));
            let mine = share(batch, options.distributed);
            let global = options.distributed.map(|group| GlobalBatch {
                group,
                samples: batch.len(),
            });
            gather_batch(train, mine, &mut x, &mut y);
            if let Some(next) = batches.peek() {
                prefetch_batch(train, share(next, options.distributed));
            }
            if let Some(a) = options.augmentation {
                a.apply(&mut x, &train.sample_shape, mine, options.seed, epoch);
            }
            let outcome = self.step_with(&mut c, &x, &y, global, &mut communication_seconds);
            (c.batch_x, c.batch_y) = (x, y);
            match outcome {
                Ok(s) if s.finite => {
                    loss_sum += s.loss as f64 * batch.len() as f64;
                    correct += s.correct;
                    seen += batch.len();
                }
                Ok(_) if options.skip_nonfinite_batches => skipped += 1,
                Ok(s) => {
                    result = Err(Error::Diverged {
                        epoch: epoch + 1,
                        step,
                        steps,
                        loss: s.loss,
                    });
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            let progress = BatchProgress {
                step,
                steps,
                loss: (loss_sum / seen.max(1) as f64) as f32,
                accuracy: (correct as f64 / seen.max(1) as f64) as f32,
            };
            for cb in callbacks.iter_mut() {
                cb.on_batch_end(&progress);
            }
        }
        self.compiled = Some(c);
        result?;
        if seen == 0 {
            return Err(Error::Value(format!(
                "epoch {}: every one of its {steps} batches had a non-finite loss and was skipped",
                epoch + 1
            )));
        }
        let n = seen as f64;
        Ok(EpochTotals {
            loss: (loss_sum / n) as f32,
            accuracy: (correct as f64 / n) as f32,
            skipped_batches: skipped,
            communication_seconds,
        })
    }

    /// Checks that the data fits the model: sample shape and labels within the outputs.
    pub fn check_data(&self, data: &Dataset, what: &str) -> Result<()> {
        if data.sample_shape != self.input_shape().dims() {
            return Err(Error::Shape(format!(
                "{what} samples have shape {:?}, the model's input is {}",
                data.sample_shape,
                self.input_shape()
            )));
        }
        self.check_classifier_output(data.num_classes())
    }

    /// Mean loss and accuracy over `data`, in batches, without dropout (Keras `evaluate`).
    pub fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Evaluation> {
        self.evaluate_in(data, batch_size, None)
    }

    /// [`Sequential::evaluate`]; with a group, each rank evaluates its share of `data` and
    /// the sums are reduced, so every rank returns the figures for the whole set.
    pub fn evaluate_in(
        &mut self,
        data: &Dataset,
        batch_size: usize,
        group: Option<&dyn Collective>,
    ) -> Result<Evaluation> {
        self.check_data(data, "evaluation")?;
        let mut c = self
            .compiled
            .take()
            .ok_or_else(|| Error::Value("the model must be compiled before evaluating".into()))?;
        let (start, end) = group.map_or((0, data.len()), |g| {
            distributed::shard_bounds(data.len(), g.rank(), g.size())
        });
        let size = data.sample_size();
        let features = &data.features[start * size..end * size];
        let result = self.evaluation_sums(&mut c, features, &data.labels[start..end], batch_size.max(1));
        self.compiled = Some(c);
        let mut sums = result?;
        if let Some(g) = group {
            g.all_reduce_sum_f64(&mut sums);
        }
        let n = data.len().max(1) as f64;
        Ok(Evaluation {
            loss: (sums[0] / n) as f32,
            accuracy: (sums[1] / n) as f32,
        })
    }

    /// The loss summed over samples, and the number classified correctly.
    fn evaluation_sums(
        &mut self,
        c: &mut Compiled,
        features: &[f32],
        labels: &[u32],
        batch_size: usize,
    ) -> Result<[f64; 2]> {
        if !self.members.is_empty() {
            let averaged = self.predict(features, labels.len())?;
            return self.sums_of_outputs(c, averaged.data(), labels, batch_size);
        }
        let input_shape = self.input_shape();
        let output_shape = self.output_shape();
        let size = input_shape.numel();
        let quantized = self.quantized.take();
        let (network, params, workspace) = self.parts();
        // A compressed model's outputs come from its int8 layers, already activated.
        let fused = quantized.is_none() && c.loss.fuses(network.final_activation());
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let mut sums = || -> Result<()> {
            for (x, labels) in features.chunks(batch_size * size).zip(labels.chunks(batch_size)) {
                let rows = labels.len();
                let int8_outputs = match &quantized {
                    Some(q) => Some(q.run(network, params, workspace, x, rows)?),
                    None => None,
                };
                let mut tape = Tape::inference(params, workspace);
                let output = match int8_outputs {
                    Some(y) => tape.input(&y, output_shape.with_batch(rows)),
                    None => {
                        let input = tape.input(x, input_shape.with_batch(rows));
                        network.forward(&mut tape, input, &mut Mode::Infer, fused)?
                    }
                };
                let data_loss = c.loss.compute(&mut tape, output, fused, labels)?;
                let loss = with_penalties(network, &mut tape, data_loss)?;
                loss_sum += tape.value(loss)[0] as f64 * rows as f64;
                correct += count_correct(tape.value(output), labels, fused || c.loss.from_logits);
            }
            Ok(())
        };
        let result = sums();
        self.quantized = quantized;
        result.map(|()| [loss_sum, correct as f64])
    }

    /// The loss summed over samples and the number classified correctly, for outputs
    /// already computed (an ensemble's average): no weight penalties, nothing fused.
    fn sums_of_outputs(
        &mut self,
        c: &mut Compiled,
        outputs: &[f32],
        labels: &[u32],
        batch_size: usize,
    ) -> Result<[f64; 2]> {
        let output_shape = self.output_shape();
        let width = output_shape.numel();
        let (_, params, workspace) = self.parts();
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for (y, labels) in outputs.chunks(batch_size * width).zip(labels.chunks(batch_size)) {
            let rows = labels.len();
            let mut tape = Tape::inference(params, workspace);
            let output = tape.input(y, output_shape.with_batch(rows));
            let loss = c.loss.compute(&mut tape, output, false, labels)?;
            loss_sum += tape.value(loss)[0] as f64 * rows as f64;
            correct += count_correct(tape.value(output), labels, c.loss.from_logits);
        }
        Ok([loss_sum, correct as f64])
    }

    /// The model's outputs (class probabilities for a softmax model) for `count` samples
    /// stored back to back in `x`, as a (count, outputs) tensor (Keras `predict`); for an
    /// ensemble, the mean of its members' outputs (soft voting).
    pub fn predict(&mut self, x: &[f32], count: usize) -> Result<Tensor> {
        if !self.members.is_empty() {
            let mut members = std::mem::take(&mut self.members);
            let result = self.average_with(&mut members, x, count);
            self.members = members;
            return result;
        }
        let input_shape = self.input_shape();
        if x.len() != count * input_shape.numel() {
            return Err(Error::Shape(format!(
                "{} input values do not make {count} samples of shape {input_shape}",
                x.len()
            )));
        }
        let outputs = self.output_shape().numel();
        if let Some(q) = self.quantized.take() {
            let (network, params, workspace) = self.parts();
            let y = q.run(network, params, workspace, x, count);
            self.quantized = Some(q);
            return Ok(Tensor::from_shape(
                crate::tensor::Shape::new(&[count, outputs]),
                y?,
            ));
        }
        let mut result = Vec::with_capacity(count * outputs);
        const BATCH: usize = 1024;
        let (network, params, workspace) = self.parts();
        for chunk in x.chunks(BATCH * input_shape.numel().max(1)) {
            let rows = chunk.len() / input_shape.numel().max(1);
            let mut tape = Tape::inference(params, workspace);
            let input = tape.input(chunk, input_shape.with_batch(rows));
            let output = network.forward(&mut tape, input, &mut Mode::Infer, false)?;
            result.extend_from_slice(tape.value(output));
        }
        Ok(Tensor::from_shape(
            crate::tensor::Shape::new(&[count, outputs]),
            result,
        ))
    }
}

impl Sequential {
    /// The mean of this model's outputs and `members'`.
    fn average_with(&mut self, members: &mut [Sequential], x: &[f32], count: usize) -> Result<Tensor> {
        let mut sum = self.predict(x, count)?;
        for m in members.iter_mut() {
            let y = m.predict(x, count)?;
            sum.data_mut().iter_mut().zip(y.data()).for_each(|(s, v)| *s += v);
        }
        let n = (members.len() + 1) as f32;
        sum.data_mut().iter_mut().for_each(|s| *s /= n);
        Ok(sum)
    }
}

/// The data loss plus the layers' weight penalties, as Keras reports and differentiates it.
fn with_penalties(
    network: &crate::nn::Network,
    tape: &mut Tape,
    loss: crate::autograd::Var,
) -> Result<crate::autograd::Var> {
    match network.regularization(tape)? {
        Some(p) => tape.add(loss, p),
        None => Ok(loss),
    }
}

/// Correct predictions in a batch: argmax per row, or a threshold for one output unit
/// (0 on logits, 0.5 on probabilities).
fn count_correct(output: &[f32], labels: &[u32], logits: bool) -> usize {
    let width = output.len() / labels.len().max(1);
    if width == 1 {
        let threshold = if logits { 0.0 } else { 0.5 };
        return output
            .iter()
            .zip(labels)
            .filter(|(&o, &l)| (o > threshold) as u32 == l)
            .count();
    }
    output
        .chunks_exact(width.max(1))
        .zip(labels)
        .filter(|(row, &label)| argmax(row) == label as usize)
        .count()
}

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// This process's share of a batch: all of it, or its rank's shard in distributed training.
fn share<'b>(batch: &'b [usize], group: Option<&dyn Collective>) -> &'b [usize] {
    match group {
        Some(group) => distributed::shard(batch, group.rank(), group.size()),
        None => batch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_argmax_and_threshold_hits() {
        assert_eq!(count_correct(&[0.1, 0.9, 0.8, 0.2], &[1, 1], false), 1);
        assert_eq!(count_correct(&[0.7, 0.2], &[1, 1], false), 1);
        assert_eq!(count_correct(&[-0.5, 0.3], &[0, 1], true), 2);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
