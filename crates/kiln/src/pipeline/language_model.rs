//! Training a language model from its spec with the one trainer: the text tokenized and
//! split by position, random windows each step, validation windows, callbacks and a
//! checkpoint every `eval_interval` steps, in a run folder that `--resume` continues.

use std::path::Path;
use std::sync::Arc;

use crate::artifact::load_language_model;
use crate::artifact::{LanguageModel, LmInfo};
use crate::data::Corpus as TextCorpus;
use crate::error::{Error, Result};
use crate::lm::text::{load_tiny_shakespeare, read_text, split_by_position, Corpus};
use crate::lm::{Gpt, GptConfig, Tokenizer};
use crate::nn::Model;
use crate::spec::LmSpec;
use crate::tensor::Tensor;
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
    prepare_text_with(spec, None)
}

/// [`prepare_text`], encoding with `tokenizer` (a model's own) instead of fitting one.
pub fn prepare_text_with(spec: &LmSpec, tokenizer: Option<&Tokenizer>) -> Result<TokenizedCorpus> {
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
    let tokenizer = match tokenizer {
        Some(t) => t.clone(),
        None => Tokenizer::fit(text.tokenizer, &corpus.text, train_text)?,
    };
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

/// A copy of `init`'s weights for `config`, which must describe the same network except
/// for dropout and a context no longer than its own (positions past it are dropped).
fn start_from(init: &Gpt, config: GptConfig, path: &Path) -> Result<Gpt> {
    let have = init.config();
    let differ = |field: &str, spec: String, model: String| {
        Error::mismatch(
            format!("model.{field} with training.init = {}", path.display()),
            format!("{model}, as the model has"),
            spec,
        )
    };
    let same = GptConfig {
        context: have.context,
        dropout: have.dropout,
        ..config.clone()
    };
    if same != *have {
        let fields = [
            ("layers", config.layers.to_string(), have.layers.to_string()),
            ("heads", config.heads.to_string(), have.heads.to_string()),
            ("width", config.width.to_string(), have.width.to_string()),
            (
                "mlp_ratio",
                config.mlp_ratio.to_string(),
                have.mlp_ratio.to_string(),
            ),
            (
                "tie_weights",
                config.tie_weights.to_string(),
                have.tie_weights.to_string(),
            ),
            (
                "activation",
                format!("{:?}", config.activation),
                format!("{:?}", have.activation),
            ),
            (
                "layer_norm_epsilon",
                config.layer_norm_epsilon.to_string(),
                have.layer_norm_epsilon.to_string(),
            ),
        ];
        let (field, spec, model) = fields
            .into_iter()
            .find(|(_, a, b)| a != b)
            .expect("a field differs");
        return Err(differ(field, spec, model));
    }
    if config.context > have.context {
        return Err(differ(
            "context",
            config.context.to_string(),
            format!("at most {}", have.context),
        ));
    }
    let width = config.width;
    Gpt::with_values(config.clone(), init.vocab_size(), |name, dims| {
        let value = &init
            .params()
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::mismatch(format!("parameter `{name}`"), "one in the init model", "none"))?
            .value;
        match name {
            "pos_embedding" => Tensor::new(dims, value.data()[..config.context * width].to_vec()),
            _ => Ok(value.clone()),
        }
    })
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
    let t = &spec.training;
    let init = t.init.as_deref().map(load_language_model).transpose()?;
    let data = prepare_text_with(spec, init.as_ref().map(|m| &m.tokenizer))?;
    let config = spec.model.gpt().clone();
    let mut gpt = match &init {
        Some(start) => start_from(
            &start.gpt,
            config.clone(),
            t.init.as_deref().unwrap_or(Path::new("")),
        )?,
        None => Gpt::new(config.clone(), data.tokenizer.vocab_size(), t.seed)?,
    };
    let mut recorded = spec.clone();
    recorded.data = recorded.data.without_folders();
    // By file name, as the data: a model file records no folders.
    recorded.training.init = recorded
        .training
        .init
        .as_deref()
        .and_then(Path::file_name)
        .map(Into::into);
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
            int8: None,
        },
        resumed_evaluations: resumed,
        train_seconds: new.iter().map(|e| e.train_seconds).sum(),
        steps_run: steps_done.saturating_sub(resumed_steps),
        history,
    })
}
