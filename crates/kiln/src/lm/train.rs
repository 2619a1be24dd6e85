//! Training a language model: random windows of the training text, one optimizer update
//! per batch (AdamW with clipping and a warm-up + cosine schedule in the usual recipe), and
//! validation loss every `eval_interval` steps.

use std::path::Path;
use std::time::{Duration, Instant};

use super::artifact::save_language_model;
use super::gpt::Gpt;
use super::spec::LmSpec;
use super::text::{load_source, random_windows, read_text, split_by_position, Corpus};
use super::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::ops::parallel::on_pool;
use crate::rng::Rng;
use crate::train::FlushDenormals;

/// Random streams, one per purpose, so adding a use of randomness in one place leaves the
/// others' numbers unchanged.
const BATCH_STREAM: u64 = 1;
const DROPOUT_STREAM: u64 = 2;
const VALIDATION_STREAM: u64 = 3;

/// A trained (or loaded) language model: the network and the tokenizer it reads.
#[derive(Debug)]
pub struct LanguageModel {
    pub gpt: Gpt,
    pub tokenizer: Tokenizer,
    pub info: LmInfo,
}

/// What is saved with a language model besides its weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LmInfo {
    pub name: String,
    /// The spec it was trained from (data paths as given).
    pub spec: LmSpec,
    /// The corpus file and its SHA-256.
    pub corpus: String,
    pub corpus_sha256: String,
    pub train_tokens: usize,
    pub validation_tokens: usize,
    pub steps: usize,
    pub final_train_loss: Option<f32>,
    pub final_validation_loss: Option<f32>,
}

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
    let corpus = match (&spec.data.source, &spec.data.path) {
        (Some(source), _) => load_source(*source)?,
        (None, Some(path)) => read_text(path)?,
        (None, None) => return Err(Error::Value("data: no `source` or `path`".into())),
    };
    let (train_text, validation_text) = split_by_position(&corpus.text, spec.data.validation_fraction);
    let tokenizer = Tokenizer::fit(&spec.data.tokenizer, &corpus.text, train_text)?;
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

/// Progress reported while training.
#[derive(Debug, Clone, Copy)]
pub enum LmEvent {
    /// After each evaluation: the mean training loss since the last one, validation loss.
    Evaluated {
        step: usize,
        steps: usize,
        train_loss: f32,
        validation_loss: f32,
        learning_rate: f32,
        elapsed: Duration,
    },
}

/// A finished run: the model and how long its optimizer steps took.
#[derive(Debug)]
pub struct LmOutcome {
    pub model: LanguageModel,
    /// (step, mean training loss since the previous point, validation loss).
    pub history: Vec<(usize, f32, f32)>,
    /// Time in training steps only (batches, forward, backward, update), not evaluation.
    pub train_time: Duration,
}

impl LmOutcome {
    pub fn ms_per_step(&self) -> f64 {
        self.train_time.as_secs_f64() * 1000.0 / self.model.info.steps as f64
    }
}

/// Trains a fresh model from a spec. With `checkpoint`, the model as it stands is saved
/// there after every evaluation, so a run that fails or is stopped keeps its progress.
pub fn train_language_model(
    spec: &LmSpec,
    checkpoint: Option<&Path>,
    on_event: &mut dyn FnMut(LmEvent),
) -> Result<LmOutcome> {
    let data = prepare_text(spec)?;
    let t = &spec.training;
    let config = spec.model.gpt().clone();
    let mut model = LanguageModel {
        gpt: Gpt::new(config.clone(), data.tokenizer.vocab_size(), t.seed)?,
        tokenizer: data.tokenizer.clone(),
        info: LmInfo {
            name: spec.name.clone().unwrap_or_else(|| "language-model".into()),
            spec: spec.clone(),
            corpus: data.corpus.path.display().to_string(),
            corpus_sha256: data.corpus.sha256.clone(),
            train_tokens: data.train.len(),
            validation_tokens: data.validation.len(),
            steps: 0,
            final_train_loss: None,
            final_validation_loss: None,
        },
    };
    // As for every kiln training run (and the PyTorch peer): denormals are flushed.
    let _flush = FlushDenormals::enable();
    let mut optimizer = t.optimizer.build();
    let mut batch_rng = Rng::derive(t.seed, BATCH_STREAM);
    let mut dropout_rng = Rng::derive(t.seed, DROPOUT_STREAM);
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    let (mut history, mut loss_sum, mut losses) = (Vec::new(), 0.0f64, 0usize);
    let (mut train_time, start) = (Duration::ZERO, Instant::now());
    for step in 0..t.steps {
        let step_start = Instant::now();
        let lr = t
            .learning_rate_schedule
            .as_ref()
            .map_or(t.optimizer.learning_rate(), |s| s.learning_rate(step as u64));
        random_windows(
            &data.train,
            t.batch_size,
            config.context,
            &mut batch_rng,
            &mut inputs,
            &mut targets,
        );
        let dropout = (config.dropout > 0.0).then_some(&mut dropout_rng);
        // On a pool thread, so the serial parts of a step run on a worker and the other
        // workers steal the parallel parts, instead of the caller parking between them.
        let loss = on_pool(|| -> Result<f32> {
            let loss = model.gpt.loss(&inputs, &targets, t.batch_size, dropout, true)?;
            if loss.is_finite() {
                if let Some(clip) = &t.gradient_clipping {
                    clip.apply(model.gpt.params_mut());
                }
                optimizer.step_and_clear(model.gpt.params_mut(), lr);
            }
            Ok(loss)
        })?;
        if !loss.is_finite() {
            return Err(Error::Diverged {
                epoch: 1,
                step: step + 1,
                steps: t.steps,
                loss,
            });
        }
        train_time += step_start.elapsed();
        loss_sum += loss as f64;
        losses += 1;
        let last = step + 1 == t.steps;
        if (step + 1) % t.eval_interval == 0 || last {
            let validation_loss = validation_loss(
                &mut model.gpt,
                &data.validation,
                t.eval_batches,
                t.batch_size,
                t.seed,
            )?;
            let train_loss = (loss_sum / losses as f64) as f32;
            history.push((step + 1, train_loss, validation_loss));
            model.info.steps = step + 1;
            model.info.final_train_loss = Some(train_loss);
            model.info.final_validation_loss = Some(validation_loss);
            if let Some(path) = checkpoint {
                save_language_model(&model, path)?;
            }
            on_event(LmEvent::Evaluated {
                step: step + 1,
                steps: t.steps,
                train_loss,
                validation_loss,
                learning_rate: lr,
                elapsed: start.elapsed(),
            });
            (loss_sum, losses) = (0.0, 0);
        }
    }
    Ok(LmOutcome {
        model,
        history,
        train_time,
    })
}

/// Mean loss over `batches` batches of random windows of `tokens`, drawn from a stream
/// fixed by `seed` so every evaluation of a run sees the same windows.
pub fn validation_loss(
    gpt: &mut Gpt,
    tokens: &[u32],
    batches: usize,
    batch_size: usize,
    seed: u64,
) -> Result<f32> {
    let mut rng = Rng::derive(seed, VALIDATION_STREAM);
    let seq = gpt.config().context;
    if tokens.len() <= seq {
        return Err(Error::Value(format!(
            "{} validation tokens are fewer than one window of context + 1 = {}",
            tokens.len(),
            seq + 1
        )));
    }
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    let mut total = 0.0f64;
    for _ in 0..batches {
        random_windows(tokens, batch_size, seq, &mut rng, &mut inputs, &mut targets);
        total += on_pool(|| gpt.loss(&inputs, &targets, batch_size, None, false))? as f64;
    }
    Ok((total / batches as f64) as f32)
}
