//! `fit`: the one training loop. Samples are visited in shuffled epochs; a token stream
//! has no epochs, so its run of `steps` updates is cut into periods of `eval_interval`
//! steps, each ending like an epoch (validation, callbacks, checkpoint). Callbacks, exact
//! resume, divergence handling and data parallelism work the same for both.

use std::path::Path;
use std::time::Instant;

use crate::data::{epoch_order, gather_batch, prefetch_batch, Augmentation, Dataset};
use crate::error::{Error, Result};
use crate::kernels::keep_awake::KeepAwake;
use crate::nn::{Batch, Model};
use crate::rng::Rng;

use super::distributed::{self, Collective};
use super::evaluate::{EvalData, ValidationWindows};
use super::trainer::GlobalBatch;
use super::{
    BatchProgress, Callback, Checkpoint, Control, EpochLog, FitState, FlushDenormals, History, Trainer,
};

/// Stream label of the windows a token stream's step draws (with the step's index).
const WINDOW_STREAM: u64 = 0x6b69_6c6e_5749_4e44; // "kilnWIND"

/// What a model trains on.
#[derive(Debug, Clone, Copy)]
pub enum TrainData<'a> {
    /// Samples with labels, visited in epochs.
    Samples(&'a Dataset),
    /// A token stream: each step draws `batch_size` random windows.
    Windows(TokenWindows<'a>),
}

/// Random windows of a token stream: `steps` updates in all, each on windows drawn from
/// (seed, step), so a run resumes exactly and does not depend on the number of ranks.
#[derive(Debug, Clone, Copy)]
pub struct TokenWindows<'a> {
    pub tokens: &'a [u32],
    /// Tokens per window; each position predicts the token after it.
    pub context: usize,
    /// Updates in the whole run (a resumed run's total, not the steps still to go).
    pub steps: usize,
    /// Validation, callbacks and a checkpoint every this many steps, and after the last.
    pub eval_interval: usize,
}

/// Where validation data comes from.
#[derive(Debug, Clone, Copy)]
pub enum Validation<'a> {
    None,
    /// Keras `validation_split`: the last fraction of the training data, before shuffling.
    Split(f32),
    Data(&'a Dataset),
    /// The same random windows of a held-out token stream at every evaluation.
    Windows(ValidationWindows<'a>),
}

#[derive(Debug, Clone, Copy)]
pub struct FitOptions<'a> {
    /// Passes over a data set of samples (a token stream counts steps instead).
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

/// Totals of one period of training (an epoch, or the steps between two evaluations).
struct PeriodTotals {
    loss: f32,
    accuracy: f32,
    skipped_batches: usize,
    /// Seconds spent in all-reduce (distributed training only).
    communication_seconds: f64,
}

/// The steps of one period: the global step it starts at and how many it takes.
#[derive(Debug, Clone, Copy)]
struct Period {
    /// 0-based epoch, or 0-based evaluation period of a token stream.
    index: usize,
    first_step: usize,
    steps: usize,
}

impl TrainData<'_> {
    /// The periods still to train after `done` periods and `steps_done` steps: one per
    /// epoch up to `epochs` for samples; for a stream, up to the next multiple of
    /// `eval_interval` or the last step.
    fn next_period(
        &self,
        done: usize,
        steps_done: usize,
        epochs: usize,
        batch_size: usize,
    ) -> Option<Period> {
        match self {
            TrainData::Samples(d) => (done < epochs).then(|| Period {
                index: done,
                first_step: 0,
                steps: d.len().div_ceil(batch_size),
            }),
            TrainData::Windows(w) => {
                let end = ((steps_done / w.eval_interval + 1) * w.eval_interval).min(w.steps);
                (steps_done < w.steps).then(|| Period {
                    index: done,
                    first_step: steps_done,
                    steps: end - steps_done,
                })
            }
        }
    }

    /// A token stream's steps in the whole run.
    fn total_steps(&self) -> Option<usize> {
        match self {
            TrainData::Samples(_) => None,
            TrainData::Windows(w) => Some(w.steps),
        }
    }

    /// Periods a fresh run has in all (shown as "Epoch k/N").
    fn periods(&self, epochs: usize) -> usize {
        match self {
            TrainData::Samples(_) => epochs,
            TrainData::Windows(w) => w.steps.div_ceil(w.eval_interval),
        }
    }

    /// What a resumed run must share with its checkpoint besides the trainer's settings.
    fn settings(&self) -> serde_json::Value {
        match self {
            TrainData::Samples(_) => serde_json::json!({}),
            TrainData::Windows(w) => serde_json::json!({
                "windows": { "context": w.context, "tokens": w.tokens.len(), "eval_interval": w.eval_interval }
            }),
        }
    }
}

impl Trainer {
    /// Trains `model` on `data` (Keras `fit`).
    pub fn fit(&mut self, model: &mut dyn Model, data: TrainData, options: &FitOptions) -> Result<History> {
        self.fit_with_callbacks(model, data, options, &mut [])
    }

    /// [`Trainer::fit`], calling each callback at the start, after every epoch (any may
    /// stop training) and at the end.
    pub fn fit_with_callbacks(
        &mut self,
        model: &mut dyn Model,
        data: TrainData,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
    ) -> Result<History> {
        self.fit_from(model, data, options, callbacks, None)
    }

    /// Continues the training a [`Checkpoint`] captured, up to `options.epochs` (or the
    /// stream's `steps`) in all. With the same data, options and callbacks, the result is
    /// bit-identical to training without the interruption.
    pub fn resume_fit(
        &mut self,
        model: &mut dyn Model,
        data: TrainData,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
        checkpoint: &Checkpoint,
    ) -> Result<History> {
        self.fit_from(model, data, options, callbacks, Some(checkpoint))
    }

    fn fit_from(
        &mut self,
        model: &mut dyn Model,
        data: TrainData,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
        resume: Option<&Checkpoint>,
    ) -> Result<History> {
        if options.batch_size == 0 {
            return Err(Error::setting("batch_size", 0, "at least 1"));
        }
        let split;
        let (data, validation) = match (data, options.validation) {
            (_, Validation::None) => (data, None),
            (_, Validation::Data(v)) => (data, Some(EvalData::Samples(v))),
            (_, Validation::Windows(w)) => (data, Some(EvalData::Windows(w))),
            (TrainData::Samples(train), Validation::Split(fraction)) => {
                split = train.split_tail(fraction)?; // copies: `train` is borrowed
                (
                    TrainData::Samples(&split.0),
                    Some(&split.1).filter(|v| !v.is_empty()).map(EvalData::Samples),
                )
            }
            (TrainData::Windows(_), Validation::Split(_)) => {
                return Err(Error::unsupported(
                    "a validation split of a token stream",
                    "it has no samples to split off; give validation windows",
                ))
            }
        };
        check_data(model, data, validation)?;
        crate::kernels::parallel::on_pool(|| {
            self.fit_on_pool(model, data, validation, options, callbacks, resume)
        })
    }

    fn fit_on_pool(
        &mut self,
        model: &mut dyn Model,
        data: TrainData,
        validation: Option<EvalData>,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
        resume: Option<&Checkpoint>,
    ) -> Result<History> {
        let _flush = FlushDenormals::enable();
        // The peer worker polls between steps instead of sleeping (see keep_awake.rs).
        let awake = KeepAwake::start();
        let settings = self.fit_settings(data, options);
        if let Some(checkpoint) = resume {
            // Before any callback starts (a CSV logger truncates its file), so a checkpoint
            // that does not fit changes nothing.
            checkpoint.check_fits(model, &settings, callbacks)?;
        }
        self.each_callback(model, data, callbacks, |c, state| c.on_train_begin(state))?;
        let mut history = History::default();
        let (mut done, mut steps_done) = (0, 0);
        let mut stopped = false;
        if let Some(checkpoint) = resume {
            checkpoint.restore(model, self, callbacks)?;
            history = checkpoint.progress.history.clone();
            (done, steps_done) = (history.epochs.len(), checkpoint.progress.steps_done);
            stopped = checkpoint.progress.stopped;
        }
        if let Some(group) = options.distributed {
            self.join_group(model, group);
        }
        let is_root = options.distributed.is_none_or(|g| g.rank() == 0);
        let periods = data.periods(options.epochs).max(done);
        while let Some(period) = data
            .next_period(done, steps_done, options.epochs, options.batch_size)
            .filter(|_| !stopped)
        {
            for c in callbacks.iter_mut() {
                c.on_epoch_begin(period.index + 1, periods, period.steps);
            }
            let start = Instant::now();
            let totals = self.train_period(model, data, period, options, callbacks, &awake)?;
            steps_done = period.first_step + period.steps;
            let train_seconds = start.elapsed().as_secs_f64();
            let val = validation
                .map(|v| self.evaluate_in(model, v, options.distributed))
                .transpose()?;
            let log = EpochLog {
                epoch: period.index + 1,
                loss: totals.loss,
                accuracy: totals.accuracy,
                val_loss: val.map(|v| v.loss),
                val_accuracy: val.map(|v| v.accuracy),
                seconds: start.elapsed().as_secs_f64(),
                train_seconds,
                learning_rate: self.learning_rate(),
                skipped_batches: totals.skipped_batches,
                communication_seconds: totals.communication_seconds,
                step: matches!(data, TrainData::Windows(_)).then_some(steps_done),
            };
            if options.verbose && is_root {
                let steps = data.total_steps().unwrap_or(period.steps);
                println!("{}", log.progress_line(periods, steps));
            }
            let mut stop = false;
            for c in callbacks.iter_mut() {
                let mut state = FitState::new(model, self, data.total_steps());
                stop |= c.on_epoch_end(&log, &mut state)? == Control::Stop;
                state.apply(self);
            }
            if let Some(group) = options.distributed {
                // Every rank sees the same logs, so their callbacks agree; make sure of it.
                let mut votes = [stop as u8 as f64];
                group.all_reduce_sum_f64(&mut votes);
                stop = votes[0] > 0.0;
            }
            history.epochs.push(log);
            done += 1;
            if let Some(target) = options.checkpoint.filter(|_| is_root) {
                let context = target.context.clone();
                Checkpoint::capture(
                    model,
                    self,
                    &history,
                    steps_done,
                    callbacks,
                    stop,
                    context,
                    settings.clone(),
                )?
                .save(target.path)?;
            }
            stopped = stop;
        }
        self.each_callback(model, data, callbacks, |c, state| c.on_train_end(state))?;
        Ok(history)
    }

    /// Calls `f` on every callback with the trainer's view of the model, applying any
    /// learning rate a callback set.
    fn each_callback(
        &mut self,
        model: &mut dyn Model,
        data: TrainData,
        callbacks: &mut [Box<dyn Callback>],
        mut f: impl FnMut(&mut Box<dyn Callback>, &mut FitState) -> Result<()>,
    ) -> Result<()> {
        for c in callbacks.iter_mut() {
            let mut state = FitState::new(model, self, data.total_steps());
            f(c, &mut state)?;
            state.apply(self);
        }
        Ok(())
    }

    /// The settings a checkpoint records and a resumed run must share for the result to
    /// be the same as without the interruption.
    fn fit_settings(&self, data: TrainData, options: &FitOptions) -> serde_json::Value {
        let validation = match options.validation {
            Validation::None => serde_json::json!("none"),
            Validation::Split(f) => serde_json::json!({ "split": f }),
            Validation::Data(d) => serde_json::json!({ "samples": d.len() }),
            Validation::Windows(w) => serde_json::json!({
                "windows": { "tokens": w.tokens.len(), "batches": w.batches, "batch_size": w.batch_size, "seed": w.seed }
            }),
        };
        let mut settings = self.settings();
        let fields = settings.as_object_mut().expect("an object");
        fields.insert("batch_size".into(), options.batch_size.into());
        fields.insert("seed".into(), options.seed.into());
        fields.insert("shuffle".into(), options.shuffle.into());
        fields.insert("validation".into(), validation);
        if let serde_json::Value::Object(extra) = data.settings() {
            fields.extend(extra);
        }
        settings
    }

    /// One period's steps: mean loss weighted by predictions, and accuracy, over the
    /// batches that were applied.
    fn train_period(
        &mut self,
        model: &mut dyn Model,
        data: TrainData,
        period: Period,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
        awake: &KeepAwake,
    ) -> Result<PeriodTotals> {
        let mut sums = PeriodSums::default();
        let mut result = Ok(());
        let mut batches = Batches::new(data, period, options);
        while let Some((step, global)) = batches.next(self) {
            // A poller ends after a pause of a millisecond (an all-reduce wait, the end of
            // an epoch); start it again. One atomic load when all are running.
            awake.rearm();
            let (x, y, tokens) = (
                std::mem::take(&mut self.batch_x),
                std::mem::take(&mut self.batch_y),
                std::mem::take(&mut self.batch_tokens),
            );
            let batch = match data {
                TrainData::Samples(_) => Batch::Samples { x: &x, labels: &y },
                TrainData::Windows(w) => Batch::Tokens {
                    inputs: &tokens,
                    targets: &y,
                    rows: tokens.len() / w.context,
                },
            };
            let global_batch = options.distributed.map(|group| GlobalBatch {
                group,
                predictions: global,
            });
            let outcome = self.step_with(model, batch, global_batch, &mut sums.communication_seconds);
            (self.batch_x, self.batch_y, self.batch_tokens) = (x, y, tokens);
            match outcome {
                Ok(s) if s.finite => sums.add(s.loss, s.correct, global),
                Ok(_) if options.skip_nonfinite_batches => sums.skipped += 1,
                Ok(s) => {
                    result = Err(Error::Diverged {
                        epoch: period.index + 1,
                        step,
                        steps: period.steps,
                        loss: s.loss,
                    });
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            let progress = sums.progress(step, period.steps);
            for cb in callbacks.iter_mut() {
                cb.on_batch_end(&progress);
            }
        }
        result?;
        sums.totals(period)
    }
}

/// Running sums of a period.
#[derive(Default)]
struct PeriodSums {
    loss_sum: f64,
    correct: usize,
    seen: usize,
    skipped: usize,
    communication_seconds: f64,
}

impl PeriodSums {
    fn add(&mut self, loss: f32, correct: usize, predictions: usize) {
        self.loss_sum += loss as f64 * predictions as f64;
        self.correct += correct;
        self.seen += predictions;
    }

    fn progress(&self, step: usize, steps: usize) -> BatchProgress {
        BatchProgress {
            step,
            steps,
            loss: (self.loss_sum / self.seen.max(1) as f64) as f32,
            accuracy: (self.correct as f64 / self.seen.max(1) as f64) as f32,
        }
    }

    fn totals(self, period: Period) -> Result<PeriodTotals> {
        if self.seen == 0 {
            return Err(Error::too_few(
                format!(
                    "epoch {}: batches with a finite loss (every one of its {} batches had a non-finite loss and was skipped)",
                    period.index + 1,
                    period.steps
                ),
                0,
                1,
            ));
        }
        let n = self.seen as f64;
        Ok(PeriodTotals {
            loss: (self.loss_sum / n) as f32,
            accuracy: (self.correct as f64 / n) as f32,
            skipped_batches: self.skipped,
            communication_seconds: self.communication_seconds,
        })
    }
}

/// Fills the trainer's batch buffers step by step for one period.
struct Batches<'a, 'o> {
    data: TrainData<'a>,
    period: Period,
    options: &'o FitOptions<'o>,
    /// Samples: this epoch's order, cut into batches.
    order: Vec<usize>,
    step: usize,
}

impl<'a, 'o> Batches<'a, 'o> {
    fn new(data: TrainData<'a>, period: Period, options: &'o FitOptions<'o>) -> Self {
        let order = match data {
            TrainData::Samples(d) => epoch_order(d.len(), period.index, options.seed, options.shuffle),
            TrainData::Windows(_) => Vec::new(),
        };
        Batches {
            data,
            period,
            options,
            order,
            step: 0,
        }
    }

    /// Fills the next batch (this rank's share) into the trainer's buffers: its 1-based
    /// step within the period and the global batch's number of predictions.
    fn next(&mut self, trainer: &mut Trainer) -> Option<(usize, usize)> {
        if self.step == self.period.steps {
            return None;
        }
        self.step += 1;
        let (bs, group) = (self.options.batch_size, self.options.distributed);
        let global = match self.data {
            TrainData::Samples(train) => {
                let start = (self.step - 1) * bs;
                let batch = &self.order[start..(start + bs).min(self.order.len())];
                let mine = share(batch, group);
                gather_batch(train, mine, &mut trainer.batch_x, &mut trainer.batch_y);
                if let Some(next) = self.order.get(start + bs..(start + 2 * bs).min(self.order.len())) {
                    prefetch_batch(train, share(next, group));
                }
                if let Some(a) = self.options.augmentation {
                    let epoch = self.period.index;
                    a.apply(
                        &mut trainer.batch_x,
                        &train.sample_shape,
                        mine,
                        self.options.seed,
                        epoch,
                    );
                }
                batch.len()
            }
            TrainData::Windows(w) => {
                let step = self.period.first_step + self.step - 1;
                let mut rng = Rng::derive(self.options.seed ^ WINDOW_STREAM, step as u64);
                crate::lm::text::random_windows(
                    w.tokens,
                    bs,
                    w.context,
                    &mut rng,
                    &mut trainer.batch_tokens,
                    &mut trainer.batch_y,
                );
                if let Some(g) = group {
                    keep_rows(&mut trainer.batch_tokens, &mut trainer.batch_y, w.context, g);
                }
                bs * w.context
            }
        };
        Some((self.step, global))
    }
}

/// Keeps this rank's shard of a batch of windows (rows of `context` tokens).
fn keep_rows(inputs: &mut Vec<u32>, targets: &mut Vec<u32>, context: usize, group: &dyn Collective) {
    let rows = inputs.len() / context;
    let (start, end) = distributed::shard_bounds(rows, group.rank(), group.size());
    for buffer in [inputs, targets] {
        buffer.truncate(end * context);
        buffer.drain(..start * context);
    }
}

/// Checks that the training and validation data fit the model.
fn check_data(model: &dyn Model, data: TrainData, validation: Option<EvalData>) -> Result<()> {
    match data {
        TrainData::Samples(train) => {
            let classes = std::iter::once(train)
                .chain(match validation {
                    Some(EvalData::Samples(v)) => Some(v),
                    _ => None,
                })
                .map(Dataset::num_classes)
                .max()
                .unwrap_or(0);
            model.check_samples(&train.sample_shape, classes, "training")?;
            if train.is_empty() {
                return Err(Error::too_few("samples in the training set", 0, 1));
            }
        }
        TrainData::Windows(w) => {
            for (field, v) in [("steps", w.steps), ("eval_interval", w.eval_interval)] {
                if v == 0 {
                    return Err(Error::setting(field, v, "at least 1"));
                }
            }
            let vocab = w.tokens.iter().max().map_or(0, |&t| t as usize + 1);
            model.check_windows(w.context, vocab)?;
            if w.tokens.len() <= w.context {
                return Err(Error::too_few(
                    "training tokens for one window of context + 1",
                    w.tokens.len(),
                    w.context + 1,
                ));
            }
        }
    }
    match validation {
        Some(EvalData::Samples(v)) => model.check_samples(&v.sample_shape, v.num_classes(), "validation"),
        Some(EvalData::Windows(w)) => w.check(model),
        None => Ok(()),
    }
}

/// This process's share of a batch: all of it, or its rank's shard in distributed training.
fn share<'b>(batch: &'b [usize], group: Option<&dyn Collective>) -> &'b [usize] {
    match group {
        Some(group) => distributed::shard(batch, group.rank(), group.size()),
        None => batch,
    }
}
