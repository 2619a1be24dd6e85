//! Training a language model from its spec with the one trainer: the text tokenized and
//! split by position, random windows each step, validation windows, callbacks and a
//! checkpoint every `eval_interval` steps, in a run folder that `--resume` continues.

use std::path::Path;
use std::sync::Arc;

use crate::artifact::{LanguageModel, LmInfo};
use crate::data::Corpus as TextCorpus;
use crate::error::{Error, Result};
use crate::lm::text::{load_tiny_shakespeare, read_text, split_by_position, Corpus};
use crate::lm::{Gpt, Tokenizer};
use crate::nn::Model;
use crate::spec::LmSpec;
use crate::train::{
    Callback, EpochLog, EvalData, FitOptions, History, ModelWriter, TokenWindows, TrainData, Trainer,
    Validation, ValidationWindows,
};

use super::run_dir::{callbacks_for_run, Goal};
use super::RunOptions;

/// The corpus as token ids, split by position.
#[derive(Debug)]
pub struct TokenizedCorpus {
    pub corpus: Corpus,
    pub tokenizer: Tokenizer,
    pub train: Vec<u32>,
    pub validation: Vec<u32>,
}

/// Reads the spec's text, fits its tokenizer and encodes both parts. Each part must hold
/// at least one window of context + 1 tokens.
pub fn prepare_text(spec: &LmSpec) -> Result<TokenizedCorpus> {
    let text = spec.data.text().ok_or_else(|| {
        Error::unsupported(
            format!(
                "training a language model on data.source = {:?}",
                spec.data.source_name()
            ),
            "a language model reads text: source = \"text\" with path, or \"tiny_shakespeare\"",
        )
    })?;
    let corpus = match text.corpus {
        TextCorpus::File(path) => read_text(path)?,
        TextCorpus::TinyShakespeare => load_tiny_shakespeare()?,
    };
    let (train_text, validation_text) = split_by_position(&corpus.text, text.validation_fraction);
    let tokenizer = Tokenizer::fit(text.tokenizer, &corpus.text, train_text)?;
    let train = tokenizer.encode(train_text)?;
    let validation = tokenizer.encode(validation_text)?;
    let needed = spec.model.gpt().context + 1;
    for (part, tokens) in [("training", &train), ("validation", &validation)] {
        if tokens.len() < needed {
            return Err(Error::data(
                &corpus.path,
                format!(
                    "its {part} part has {} tokens, fewer than one window of context + 1 = {needed}; \
                     use a longer text or a shorter context",
                    tokens.len()
                ),
            ));
        }
    }
    Ok(TokenizedCorpus {
        corpus,
        tokenizer,
        train,
        validation,
    })
}

/// The validation windows a spec evaluates on (the same at every evaluation).
pub fn validation_windows<'a>(spec: &LmSpec, tokens: &'a [u32]) -> ValidationWindows<'a> {
    let t = &spec.training;
    ValidationWindows {
        tokens,
        context: spec.model.gpt().context,
        batches: t.eval_batches,
        batch_size: t.batch_size,
        seed: t.seed,
    }
}

/// A finished run.
#[derive(Debug)]
pub struct LmOutcome {
    pub model: LanguageModel,
    /// One record per evaluation (its `step` set), the resumed run's earlier ones included.
    pub history: History,
    /// Evaluations that came from the checkpoint when resuming (0 for a fresh run).
    pub resumed_evaluations: usize,
    /// Seconds in this run's training steps only (batches, forward, backward, update).
    pub train_seconds: f64,
    /// Steps this run trained (not those of the checkpoint it resumed).
    pub steps_run: usize,
}

impl LmOutcome {
    pub fn ms_per_step(&self) -> f64 {
        self.train_seconds * 1000.0 / self.steps_run.max(1) as f64
    }
}

/// Writes the GPT being trained as a language-model file (for ModelCheckpoint).
#[derive(Debug)]
struct LmWriter {
    info: LmInfo,
    tokenizer: Tokenizer,
}

impl ModelWriter for LmWriter {
    fn write(&self, model: &dyn Model, log: &EpochLog, path: &Path) -> Result<()> {
        let gpt = model.as_any().downcast_ref::<Gpt>().ok_or_else(|| {
            Error::mismatch(
                "the model saved with GPT metadata",
                "a GPT",
                "another kind of model",
            )
        })?;
        let mut info = self.info.clone();
        info.steps = log.step.unwrap_or(0);
        info.final_train_loss = Some(log.loss);
        info.final_validation_loss = log.val_loss;
        let bytes = crate::artifact::language_model::encode(gpt, &self.tokenizer, &info, path)?;
        crate::io::write_atomically(path, &bytes)
    }
}

/// Trains a language model from `spec`: a fresh one, or (with `options.resume`) the run
/// in `options.run_dir` continued to `spec.training.steps` in all.
pub fn train_language_model(
    spec: &LmSpec,
    options: &RunOptions,
    extra_callbacks: Vec<Box<dyn Callback>>,
) -> Result<LmOutcome> {
    if options.init.is_some() || options.bootstrap.is_some() {
        return Err(Error::unsupported(
            "starting from another model's layers, or bagging, for a language model",
            "both are for layer-stack models",
        ));
    }
    let data = prepare_text(spec)?;
    let t = &spec.training;
    let config = spec.model.gpt().clone();
    let mut gpt = Gpt::new(config.clone(), data.tokenizer.vocab_size(), t.seed)?;
    let mut recorded = spec.clone();
    recorded.data = recorded.data.without_folders();
    let corpus_name = data
        .corpus
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let mut info = LmInfo {
        name: spec.name.clone().unwrap_or_else(|| "language-model".into()),
        spec: recorded,
        corpus: corpus_name.unwrap_or_else(|| data.corpus.path.display().to_string()),
        corpus_sha256: data.corpus.sha256.clone(),
        train_tokens: data.train.len(),
        validation_tokens: data.validation.len(),
        steps: 0,
        final_train_loss: None,
        final_validation_loss: None,
        imported_from: None,
    };
    let mut trainer = Trainer::for_language_model(t.optimizer.clone(), t.seed)
        .with_schedule(t.learning_rate_schedule.clone())?
        .with_clipping(t.gradient_clipping)?;
    let writer: Arc<dyn ModelWriter> = Arc::new(LmWriter {
        info: info.clone(),
        tokenizer: data.tokenizer.clone(),
    });
    let context = serde_json::json!({ "spec": spec, "data_sha256": data.corpus.sha256 });
    let mut run = callbacks_for_run(&t.callbacks, writer, options, &context, Goal::Steps(t.steps))?;
    let (mut callbacks, resume_from) = (std::mem::take(&mut run.callbacks), run.resume_from.take());
    callbacks.extend(extra_callbacks);
    let fit = FitOptions {
        epochs: 0,
        batch_size: t.batch_size,
        validation: Validation::Windows(validation_windows(spec, &data.validation)),
        shuffle: false,
        seed: t.seed,
        verbose: options.verbose,
        checkpoint: run.checkpoint_target(&context),
        skip_nonfinite_batches: options.skip_nonfinite_batches,
        distributed: options.distributed,
        augmentation: None,
    };
    let windows = TrainData::Windows(TokenWindows {
        tokens: &data.train,
        context: config.context,
        steps: t.steps,
        eval_interval: t.eval_interval,
    });
    let history = match &resume_from {
        Some(checkpoint) => trainer.resume_fit(&mut gpt, windows, &fit, &mut callbacks, checkpoint)?,
        None => trainer.fit_with_callbacks(&mut gpt, windows, &fit, &mut callbacks)?,
    };
    let resumed = resume_from.as_ref().map_or(0, |c| c.progress.epochs_done);
    let resumed_steps = resume_from.as_ref().map_or(0, |c| c.progress.steps_done);
    let new = &history.epochs[resumed.min(history.epochs.len())..];
    // A callback may have restored earlier weights: the final model's own figure.
    let validation = validation_windows(spec, &data.validation);
    let final_validation =
        trainer.evaluate_in(&mut gpt, EvalData::Windows(validation), options.distributed)?;
    let last = history.last();
    let steps_done = last.and_then(|l| l.step).unwrap_or(resumed_steps);
    info.steps = steps_done;
    info.final_train_loss = last.map(|l| l.loss);
    info.final_validation_loss = Some(final_validation.loss);
    Ok(LmOutcome {
        model: LanguageModel {
            gpt,
            tokenizer: data.tokenizer,
            info,
        },
        resumed_evaluations: resumed,
        train_seconds: new.iter().map(|e| e.train_seconds).sum(),
        steps_run: steps_done.saturating_sub(resumed_steps),
        history,
    })
}
