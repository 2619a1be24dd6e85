//! `kiln train` for language-model specs, `kiln generate`, and `kiln eval` on a language
//! model (validation loss and perplexity).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use kiln::lm::artifact::{load_language_model, save_language_model};
use kiln::lm::generate::{check_request, generate as generate_tokens, Sampling};
use kiln::lm::tokenizer::StreamDecoder;
use kiln::lm::train::{prepare_text, train_language_model, validation_loss, LmEvent};
use kiln::lm::LmSpec;

use crate::commands::{check_writable, claim_run_dir, fresh_run_dir, rayon_threads, TrainArgs};

/// The model file every run folder gets.
const MODEL_FILE: &str = "model.safetensors";

/// Options of `kiln train` that layer-stack models have and language models do not (yet).
fn refuse_unsupported(args: &TrainArgs) -> Result<()> {
    let unsupported = [
        ("--resume", args.resume.is_some()),
        ("--init", args.init.is_some()),
        ("--epochs (use --steps)", args.epochs.is_some()),
        (
            "--data-dir (the spec's `data.path` or $KILN_DATA)",
            args.data_dir.is_some(),
        ),
        ("--skip-nonfinite-batches", args.skip_nonfinite_batches),
    ];
    if let Some((flag, _)) = unsupported.iter().find(|(_, given)| *given) {
        anyhow::bail!("{flag} is not supported for language-model specs");
    }
    Ok(())
}

/// `kiln train SPEC` where the spec's model is a GPT.
pub fn train(args: &TrainArgs, spec_path: &Path, steps: Option<usize>) -> Result<()> {
    refuse_unsupported(args)?;
    let mut spec = LmSpec::from_file(spec_path)?;
    if let Some(steps) = steps {
        anyhow::ensure!(steps > 0, "--steps must be at least 1");
        spec.training.steps = steps;
    }
    for path in [args.out, args.report].into_iter().flatten() {
        check_writable(path)?;
    }
    let run_dir: PathBuf = match args.run_dir {
        Some(dir) => claim_run_dir(dir)?,
        None => fresh_run_dir(spec.name.as_deref().unwrap_or("language-model"))?,
    };
    let config = spec.model.gpt();
    if !args.quiet {
        println!("run folder: {}", run_dir.display());
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
    let quiet = args.quiet;
    let mut log = |event: LmEvent| {
        let LmEvent::Evaluated {
            step,
            steps,
            train_loss,
            validation_loss,
            learning_rate,
            elapsed,
        } = event;
        if !quiet {
            println!(
                "step {step:>6}/{steps}: train loss {train_loss:.4}, val loss {validation_loss:.4}, lr {learning_rate:.2e}, {:.1} s",
                elapsed.as_secs_f64()
            );
        }
    };
    let in_run = run_dir.join(MODEL_FILE);
    // The model is saved into the run folder at every evaluation; a failed run keeps the
    // last one (and an empty folder is removed).
    let outcome = train_language_model(&spec, Some(&in_run), &mut log).inspect_err(|_| {
        let _ = std::fs::remove_dir(&run_dir);
    })?;
    let model = &outcome.model;
    let tokens_per_step = spec.training.batch_size * config.context;
    let ms = outcome.ms_per_step();
    println!(
        "{} parameters, vocabulary {} ({}); {:.2} ms/step, {:.0} tokens/s; final val loss {:.4}",
        model.gpt.config().parameter_count(model.gpt.vocab_size()),
        model.tokenizer.vocab_size(),
        model.tokenizer.kind(),
        ms,
        tokens_per_step as f64 * 1000.0 / ms,
        model.info.final_validation_loss.unwrap_or(f32::NAN)
    );
    let history: Vec<_> = outcome
        .history
        .iter()
        .map(|(step, train, val)| serde_json::json!({"step": step, "train_loss": train, "val_loss": val}))
        .collect();
    let summary = serde_json::json!({
        "name": model.info.name,
        "parameters": model.gpt.config().parameter_count(model.gpt.vocab_size()),
        "vocab_size": model.tokenizer.vocab_size(),
        "steps": model.info.steps,
        "batch_size": spec.training.batch_size,
        "context": config.context,
        "train_seconds": outcome.train_time.as_secs_f64(),
        "ms_per_step": ms,
        "tokens_per_s": tokens_per_step as f64 * 1000.0 / ms,
        "val_loss": model.info.final_validation_loss,
        "threads": rayon_threads(),
        "history": history,
    });
    let text = serde_json::to_string_pretty(&summary)? + "\n";
    kiln::artifact::write_atomically(&run_dir.join("history.json"), text.as_bytes())?;
    if let Some(report) = args.report {
        kiln::artifact::write_atomically(report, text.as_bytes())?;
    }
    if let Some(out) = args.out {
        save_language_model(model, out)?;
        println!("saved {}", out.display());
    } else if !args.quiet {
        println!("saved {}", in_run.display());
    }
    Ok(())
}

/// `kiln eval MODEL` for a language model: loss and perplexity on the validation part of
/// the text it was trained on (or on another UTF-8 file).
pub fn eval(model_path: &Path, text: Option<&Path>, batches: Option<usize>, json: bool) -> Result<()> {
    let mut model = load_language_model(model_path)?;
    let tokens = match text {
        Some(path) => {
            let corpus = kiln::lm::text::read_text(path)?;
            model
                .tokenizer
                .encode(&corpus.text)
                .with_context(|| format!("{}", path.display()))?
        }
        None => {
            let data = prepare_text(&model.info.spec)?;
            anyhow::ensure!(
                data.corpus.sha256 == model.info.corpus_sha256 && data.tokenizer == model.tokenizer,
                "{}: the text this model was trained on has changed (SHA-256 {}, the model recorded {}); \
                 pass --text FILE to score another text",
                data.corpus.path.display(),
                data.corpus.sha256,
                model.info.corpus_sha256
            );
            data.validation
        }
    };
    let batches = batches.unwrap_or(model.info.spec.training.eval_batches);
    anyhow::ensure!(batches > 0, "--batches must be at least 1");
    let batch = model.info.spec.training.batch_size;
    let loss = validation_loss(
        &mut model.gpt,
        &tokens,
        batches,
        batch,
        model.info.spec.training.seed,
    )?;
    let perplexity = (loss as f64).exp();
    if json {
        println!(
            "{}",
            serde_json::json!({"loss": loss, "perplexity": perplexity, "tokens": tokens.len(), "batches": batches})
        );
    } else {
        println!("loss {loss:.4}, perplexity {perplexity:.3} ({batches} batches of {batch} windows from {} tokens)", tokens.len());
    }
    std::io::stdout().flush()?;
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
    generate_tokens(
        &model.gpt,
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
pub fn inspect(model_path: &Path) -> Result<()> {
    let model = load_language_model(model_path)?;
    let (c, info) = (model.gpt.config(), &model.info);
    let vocab = model.gpt.vocab_size();
    println!("language model: {} ({})", info.name, model_path.display());
    println!(
        "GPT: {} layers, {} heads, width {}, MLP {}, context {}, dropout {}, weights tied: {}",
        c.layers,
        c.heads,
        c.width,
        c.hidden(),
        c.context,
        c.dropout,
        c.tie_weights
    );
    println!(
        "parameters: {}; forward FLOPs per token at full context: {}",
        c.parameter_count(vocab),
        c.forward_flops_per_token(vocab)
    );
    println!("tokenizer: {} with {vocab} tokens", model.tokenizer.kind());
    println!(
        "trained: {} steps on {} ({} training, {} validation tokens; SHA-256 {})",
        info.steps, info.corpus, info.train_tokens, info.validation_tokens, info.corpus_sha256
    );
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
