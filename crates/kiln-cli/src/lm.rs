//! Language models on the command line: what `kiln train` prints and saves for a GPT spec
//! (trained by the same trainer as every model), `kiln generate`, and `kiln eval` and
//! `kiln inspect` on a language model (validation loss and perplexity).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use kiln::artifact::{load_language_model, save_language_model, LanguageModel};
use kiln::lm::generate::{check_request, generate_with, Sampling};
use kiln::lm::tokenizer::StreamDecoder;
use kiln::pipeline::language_model::{prepare_text_with, validation_windows};
use kiln::pipeline::LmOutcome;
use kiln::spec::LmSpec;
use kiln::train::{EvalData, ValidationWindows};

use crate::run_dirs::rayon_threads;
use crate::train_command::{allreduce_share, TrainArgs, RUN_MODEL};

/// Options of `kiln train` that layer-stack models have and language models do not.
pub fn refuse_unsupported(args: &TrainArgs) -> Result<()> {
    let unsupported = [
        ("--epochs (use --steps)", args.epochs.is_some()),
        (
            "--data-dir (the spec's `data.path` or $KILN_DATA)",
            args.data_dir.is_some(),
        ),
    ];
    if let Some((flag, _)) = unsupported.iter().find(|(_, given)| *given) {
        return Err(crate::exit_code::usage(format!(
            "{flag} is not supported for language-model specs"
        )));
    }
    Ok(())
}

/// The architecture and run length, printed before training.
pub fn describe_run(spec: &LmSpec) {
    let config = spec.model.gpt();
    println!(
        "GPT: {} layers, {} heads, width {}, context {}; {} steps of {} windows",
        config.layers,
        config.heads,
        config.width,
        config.context,
        spec.training.steps,
        spec.training.batch_size
    );
}

/// Prints a language-model run's summary, writes `--report`, and saves the model (in the
/// run folder and `--out`).
pub fn report_training(
    args: &TrainArgs,
    spec: &LmSpec,
    outcome: &LmOutcome,
    run_dir: &Path,
    ranks: usize,
) -> Result<()> {
    let model = &outcome.model;
    let config = spec.model.gpt();
    let tokens_per_step = spec.training.batch_size * config.context;
    let ms = outcome.ms_per_step();
    let parameters = config.parameter_count(model.gpt.vocab_size());
    let new = &outcome.history.epochs[outcome.resumed_evaluations.min(outcome.history.epochs.len())..];
    let ranks_text = match ranks {
        1 => String::new(),
        n => format!(
            "; {n} ranks, {:.1}% of training in all-reduce",
            100.0 * allreduce_share(new)
        ),
    };
    println!(
        "{parameters} parameters, vocabulary {} ({}); {:.2} ms/step, {:.0} tokens/s{ranks_text}; final val loss {:.4}",
        model.tokenizer.vocab_size(),
        model.tokenizer.kind(),
        ms,
        tokens_per_step as f64 * 1000.0 / ms,
        model.info.final_validation_loss.unwrap_or(f32::NAN)
    );
    if let Some(report) = args.report {
        let summary = serde_json::json!({
            "name": model.info.name,
            "parameters": parameters,
            "vocab_size": model.tokenizer.vocab_size(),
            "steps": model.info.steps,
            "steps_run": outcome.steps_run,
            "batch_size": spec.training.batch_size,
            "context": config.context,
            "train_seconds": outcome.train_seconds,
            "ms_per_step": ms,
            "tokens_per_s": tokens_per_step as f64 * 1000.0 / ms,
            "val_loss": model.info.final_validation_loss,
            "threads": rayon_threads(),
            "ranks": ranks,
            "history": outcome.history.epochs,
        });
        let text = serde_json::to_string_pretty(&summary)? + "\n";
        kiln::io::write_atomically(report, text.as_bytes())?;
    }
    let run_model = run_dir.join(RUN_MODEL);
    save_language_model(model, &run_model)?;
    if let Some(out) = args.out {
        save_language_model(model, out)?;
        println!("saved {}", out.display());
    } else if !args.quiet {
        println!("saved {}", run_model.display());
    }
    Ok(())
}

/// `kiln eval MODEL` for a language model: loss and perplexity on the validation part of
/// the text it was trained on (or on another UTF-8 file).
pub fn eval(model_path: &Path, text: Option<&Path>, batches: Option<usize>, json: bool) -> Result<()> {
    let mut model = load_language_model(model_path)?;
    let Score {
        loss,
        tokens,
        batches,
    } = score(model_path, &mut model, text, batches)?;
    let spec = &model.info.spec;
    let perplexity = (loss as f64).exp();
    let batch = spec.training.batch_size;
    if json {
        println!(
            "{}",
            serde_json::json!({"loss": loss, "perplexity": perplexity, "tokens": tokens, "batches": batches})
        );
    } else {
        println!("loss {loss:.4}, perplexity {perplexity:.3} ({batches} batches of {batch} windows from {tokens} tokens)");
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// A language model's loss on validation windows, as `kiln eval` reports it.
pub struct Score {
    pub loss: f32,
    /// Tokens of the text scored.
    pub tokens: usize,
    pub batches: usize,
}

/// The loss on the validation part of the text `model` was trained on (or on `text`).
pub fn score(
    model_path: &Path,
    model: &mut LanguageModel,
    text: Option<&Path>,
    batches: Option<usize>,
) -> Result<Score> {
    let spec = model.info.spec.clone();
    let tokens = match text {
        Some(path) => {
            let corpus = kiln::lm::text::read_text(path)?;
            model
                .tokenizer
                .encode(&corpus.text)
                .with_context(|| format!("{}", path.display()))?
        }
        None => {
            if let Some(source) = &model.info.imported_from {
                return Err(crate::exit_code::usage(format!(
                    "{}: imported from a {source}, it has no training text of its own; pass --text FILE",
                    model_path.display()
                )));
            }
            let data = prepare_text_with(&spec, Some(&model.tokenizer))?;
            ensure_data!(
                data.corpus.sha256 == model.info.corpus_sha256,
                "{}: the text this model was trained on has changed (SHA-256 {}, the model recorded {}); \
                 pass --text FILE to score another text",
                data.corpus.path.display(),
                data.corpus.sha256,
                model.info.corpus_sha256
            );
            data.validation
        }
    };
    let batches = batches.unwrap_or(spec.training.eval_batches);
    ensure_usage!(batches > 0, "--batches must be at least 1");
    let windows = ValidationWindows {
        batches,
        ..validation_windows(&spec, &tokens)
    };
    let loss = kiln::train::evaluate(
        &mut model.gpt,
        &kiln::nn::Loss::next_token(),
        EvalData::Windows(windows),
        None,
    )?
    .loss;
    Ok(Score {
        loss,
        tokens: tokens.len(),
        batches,
    })
}

/// `kiln tokenize MODEL --text TEXT`: the ids, as a JSON list on one line.
pub fn tokenize(model_path: &Path, text: &str) -> Result<()> {
    let model = load_language_model(model_path)?;
    let ids = model.tokenizer.encode(text).context("--text")?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

pub struct GenerateArgs<'a> {
    pub model: &'a Path,
    pub prompt: &'a str,
    pub tokens: usize,
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: u64,
    pub no_cache: bool,
}

/// `kiln generate MODEL --prompt TEXT`: streams the prompt and the generated text to
/// stdout as each token is drawn, then the speed to stderr.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    let model = load_language_model(args.model)?;
    let prompt = model.tokenizer.encode(args.prompt).context("--prompt")?;
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    check_request(&model.gpt, &prompt, &sampling).context("--prompt")?;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", args.prompt)?;
    let mut decoder = StreamDecoder::default();
    let mut write_error = None;
    let start = Instant::now();
    let mut on_token = |id: u32| {
        let text = decoder.push(&model.tokenizer, id);
        if let Err(e) = write!(stdout, "{text}").and_then(|()| stdout.flush()) {
            write_error.get_or_insert(e);
        }
    };
    let kernels = model.decode_kernels();
    generate_with(
        &model.gpt,
        kernels.as_ref(),
        &prompt,
        args.tokens,
        &sampling,
        !args.no_cache,
        &mut on_token,
    )
    .context("--prompt")?;
    let seconds = start.elapsed().as_secs_f64();
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    writeln!(stdout, "{}", decoder.finish())?;
    eprintln!(
        "{} tokens in {seconds:.2} s ({:.0} tokens/s, {})",
        args.tokens,
        args.tokens as f64 / seconds,
        if args.no_cache { "no KV cache" } else { "KV cache" }
    );
    Ok(())
}

/// `kiln inspect MODEL` for a language model: architecture, sizes, tokenizer, training.
pub fn inspect(model_path: &Path, model: &LanguageModel) -> Result<()> {
    let (c, info) = (model.gpt.config(), &model.info);
    let vocab = model.gpt.vocab_size();
    println!("language model: {} ({})", info.name, model_path.display());
    println!(
        "GPT: {} layers, {} heads, width {}, MLP {} ({:?}), context {}, dropout {}, LayerNorm ε {}, weights tied: {}",
        c.layers,
        c.heads,
        c.width,
        c.hidden(),
        c.activation,
        c.context,
        c.dropout,
        c.layer_norm_epsilon,
        c.tie_weights
    );
    println!(
        "parameters: {}; forward FLOPs per token at full context: {}",
        c.parameter_count(vocab),
        c.forward_flops_per_token(vocab)
    );
    println!("tokenizer: {} with {vocab} tokens", model.tokenizer.kind());
    if model.int8.is_some() {
        println!("weights: block kernels in int8 (a scale per output column), activations f32");
    }
    match &info.imported_from {
        Some(source) => println!("imported from a {source}"),
        None => println!(
            "trained: {} steps on {} ({} training, {} validation tokens; SHA-256 {})",
            info.steps, info.corpus, info.train_tokens, info.validation_tokens, info.corpus_sha256
        ),
    }
    if let Some(loss) = info.final_validation_loss {
        println!(
            "validation loss: {loss:.4} (perplexity {:.3})",
            (loss as f64).exp()
        );
    }
    println!("tensors:");
    for p in model.gpt.params().iter() {
        println!("  {:<36} {:?}", p.name, p.value.dims());
    }
    Ok(())
}
