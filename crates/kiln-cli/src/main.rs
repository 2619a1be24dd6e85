//! The `kiln` command: train, evaluate, predict with and inspect models.

// First, for its `ensure_usage!`/`ensure_data!` macros.
#[macro_use]
mod exit_code;
mod compress;
mod compress_lm;
mod distributed;
mod evaluate;
mod export;
mod import;
mod inspect;
mod lm;
mod plot;
mod progress;
mod run_dirs;
mod select;
mod serve_command;
mod shell_docs;
mod train_command;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use exit_code::Failure;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "kiln: train, evaluate and run neural networks from a TOML spec",
    after_help = exit_code::HELP
)]
struct Cli {
    /// Never download data sets; say where to put missing files instead.
    ///
    /// KILN_OFFLINE: 0, false, no, off or empty mean online; anything else, offline.
    #[arg(long, global = true, env = "KILN_OFFLINE", value_parser = clap::builder::FalseyValueParser::new())]
    offline: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a spec; with no spec, an MLP on the embedded digits set.
    Train {
        /// The TOML spec (see examples/); omit for the built-in offline digits model.
        spec: Option<PathBuf>,
        /// Where to save the trained model (safetensors).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Folder holding the MNIST files (overrides the spec's data_dir, then $KILN_DATA/mnist).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Override the spec's number of epochs (with --resume, the total to reach).
        #[arg(long)]
        epochs: Option<usize>,
        /// Override a language-model spec's number of optimizer steps (with --resume, the
        /// total to reach).
        #[arg(long)]
        steps: Option<usize>,
        /// Print only the summary, not one line per epoch.
        #[arg(long)]
        quiet: bool,
        /// Also write the run's summary and per-epoch history as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Folder for the checkpoint, history.json/.csv and model.safetensors
        /// [default: runs/NAME, or runs/NAME-2, … if taken].
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue the run in this folder from its last checkpoint (same spec; --epochs
        /// may ask for more).
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<PathBuf>,
        /// Skip a batch whose loss is NaN or infinite instead of stopping.
        #[arg(long)]
        skip_nonfinite_batches: bool,
        /// Do not save a checkpoint after every epoch (the run cannot be resumed).
        #[arg(long, conflicts_with = "resume")]
        no_checkpoint: bool,
        /// Train data-parallel as one rank of an MPI job: `mpirun -np N kiln train SPEC
        /// --distributed`. The spec's batch size is the global batch, split across ranks.
        #[arg(long)]
        distributed: bool,
        /// Start from this model's weights: every layer whose name (and shape) the spec's
        /// layer shares; mark layers `trainable = false` in the spec to keep them fixed.
        #[arg(long, value_name = "MODEL", conflicts_with = "resume")]
        init: Option<PathBuf>,
    },
    /// Generate text with a trained language model, streaming it as it comes.
    Generate {
        model: PathBuf,
        /// Text to continue (every character must be in the model's vocabulary).
        #[arg(long)]
        prompt: String,
        /// How many tokens to generate.
        #[arg(long, default_value_t = 500)]
        tokens: usize,
        /// Softmax temperature; 0 always takes the most likely token.
        #[arg(long, default_value_t = 0.8)]
        temperature: f32,
        /// Draw only among the k most likely tokens.
        #[arg(long)]
        top_k: Option<usize>,
        /// Draw only among the most likely tokens covering this probability (nucleus).
        #[arg(long)]
        top_p: Option<f32>,
        /// Seed of the draws: the same seed gives the same text.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Recompute every position's keys and values for each token (slow; a reference).
        #[arg(long)]
        no_cache: bool,
    },
    /// Print a saved model's loss and accuracy on its test split; with --report, per-class
    /// precision, recall, F1 and the confusion matrix. A language model: loss and perplexity.
    Eval {
        model: PathBuf,
        /// Folder holding the model's data: MNIST's files, or its CSV files by name (before
        /// $KILN_DATA/mnist for MNIST, the working folder for CSV).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Per-class precision, recall, F1 and support, and the confusion matrix.
        #[arg(long)]
        report: bool,
        /// Print everything (metrics, report, confusion matrix) as JSON.
        #[arg(long)]
        json: bool,
        /// Draw the confusion matrix as a heat map to FILE.png and FILE.svg.
        #[arg(long, value_name = "FILE")]
        heatmap: Option<PathBuf>,
        /// For a one-unit (binary) model: probabilities above this are class 1 [default: 0.5].
        #[arg(long)]
        threshold: Option<f32>,
        /// Language models: score this UTF-8 file instead of the training text's
        /// validation part.
        #[arg(long, value_name = "FILE")]
        text: Option<PathBuf>,
        /// Language models: batches of random windows to average the loss over
        /// [default: the spec's eval_batches].
        #[arg(long)]
        batches: Option<usize>,
    },
    /// Draw a run folder's training curves (loss, accuracy, learning rate against epoch, or
    /// a language model's step) to RUN_DIR/curves.png and RUN_DIR/curves.svg.
    Plot {
        run_dir: PathBuf,
        /// Write the charts here instead of the run folder.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Print the predicted class and probabilities for each sample of a CSV or IDX file.
    Predict {
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
    },
    /// Print a saved model's architecture, parameter count and lineage.
    Inspect { model: PathBuf },
    /// Make a smaller, faster copy of a model (pruning, int8 quantization) and print a before/after
    /// table: file size, nonzero parameters, test accuracy, latency and throughput.
    Compress {
        model: PathBuf,
        /// Where to write the compressed model (safetensors).
        #[arg(long)]
        out: PathBuf,
        /// Remove this fraction of each Dense and Conv2D kernel's weights (smallest magnitude first),
        /// or with --structured of each hidden Dense layer's units and Conv2D layer's filters.
        #[arg(long, value_name = "FRACTION")]
        prune: Option<f32>,
        /// Prune whole hidden units and convolution filters (and the next layer's matching
        /// inputs): a smaller, faster dense model.
        #[arg(long)]
        structured: bool,
        /// Rank the weights of all Dense and Conv2D kernels together against one
        /// threshold, instead of pruning each kernel to the fraction.
        #[arg(long)]
        global: bool,
        /// Fine-tune the pruned model this many epochs on its own training data (pruning
        /// then rises gradually, TFMOT's polynomial decay).
        #[arg(long, default_value_t = 0)]
        finetune_epochs: usize,
        /// int8: weights and activations (activation ranges calibrated); dynamic: int8
        /// weights, each sample's activations quantized with its own range; f16, bf16:
        /// float weights stored in 16 bits.
        #[arg(long, value_enum)]
        quantize: Option<Quantize>,
        /// Training samples the int8 activation ranges are calibrated on.
        #[arg(long, default_value_t = 500)]
        calibration_samples: usize,
        /// Calibrate on this percentile of each activation's values (e.g. 99.99) instead of
        /// their minimum and maximum.
        #[arg(long)]
        percentile: Option<f32>,
        /// Folder holding the model's data, as for `kiln eval` (calibration and fine-tuning
        /// samples, the test split).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Cross-validate a spec: k stratified folds of its training split, each held out once;
    /// prints every fold and the mean ± std.
    Cv {
        /// The TOML spec; omit for the built-in digits model.
        spec: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// Override the spec's number of epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Folder holding the MNIST files (overrides the spec's data_dir, then $KILN_DATA/mnist).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Search hyper-parameters: the spec as given and each trial of a search space, scored by
    /// validation (or cross-validated) accuracy, a language model by validation loss; prints
    /// a sorted table and writes
    /// OUT_DIR/trials.csv and OUT_DIR/best.toml.
    Tune {
        spec: Option<PathBuf>,
        /// TOML: one quoted spec key per line, e.g. "model.layers[0].units" = [64, 128] or
        /// "training.optimizer.learning_rate" = { log_uniform = [1e-4, 1e-2] }.
        #[arg(long)]
        space: PathBuf,
        /// Trials to run [default: the whole grid; 10 random draws when a key is a range].
        #[arg(long)]
        trials: Option<usize>,
        /// Draw trials at random even when every key is a list.
        #[arg(long)]
        random: bool,
        /// Score each trial by K-fold cross-validation instead of the validation split.
        #[arg(long, value_name = "K")]
        folds: Option<usize>,
        /// Where trials.csv and best.toml go [default: tune-NAME].
        #[arg(long)]
        out_dir: Option<PathBuf>,
        #[arg(long)]
        epochs: Option<usize>,
        /// Folder holding the MNIST files (overrides the spec's data_dir, then $KILN_DATA/mnist).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Train a bagged ensemble: members on bootstrap samples, predictions averaged, saved as
    /// one model that eval, predict, inspect and serve accept.
    Ensemble {
        spec: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        members: usize,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        epochs: Option<usize>,
        /// Folder holding the MNIST files (overrides the spec's data_dir, then $KILN_DATA/mnist).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Serve models over HTTP (Open Inference Protocol v2, TF-Serving :predict, a page at /).
    Serve(serve_command::ServeArgs),
    /// Bring in a model trained elsewhere: `kiln import gpt2 DIR --out m.safetensors` reads
    /// a Hugging Face GPT-2 checkpoint folder (weights, config and tokenizer); `kiln import
    /// torch STATE.safetensors --spec SPEC.toml --out m.safetensors` a PyTorch state_dict.
    Import {
        #[arg(value_enum)]
        format: import::ImportFormat,
        /// The checkpoint folder (gpt2) or state-dict file (torch).
        source: PathBuf,
        /// torch: the kiln spec describing the same model, layer for layer.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Where to write the kiln model (safetensors).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a model for other runtimes: `kiln export m.safetensors --format onnx --out
    /// m.onnx` (the input is what `kiln predict` reads, normalization inside the graph;
    /// int8 models as QuantizeLinear/DequantizeLinear pairs).
    Export {
        model: PathBuf,
        #[arg(long, value_enum, default_value = "onnx")]
        format: export::ExportFormat,
        /// Where to write the exported model.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the token ids a language model reads for a text, as a JSON list.
    Tokenize {
        model: PathBuf,
        #[arg(long)]
        text: String,
    },
    /// Print a shell completion script: `kiln completions bash > /etc/bash_completion.d/kiln`,
    /// or `source <(kiln completions bash)` for this shell only.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print kiln's manual page (roff): `kiln man > kiln.1 && man -l kiln.1`; with --out-dir,
    /// write kiln.1 and a page per subcommand (kiln-train.1, …) there.
    Man {
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Quantize {
    Int8,
    Dynamic,
    F16,
    Bf16,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Json,
}

/// Rust ignores SIGPIPE, which turns `kiln predict … | head` into a panic on the first
/// write after the reader exits. Restore the default so kiln ends quietly, as Unix tools do.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL at start-up, before any thread is
    // spawned, has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A command line clap cannot parse: help and version print as usual; a usage error is one
/// line (what is wrong, clap's tips, and where to read more) and exit code 2, as
/// command-line tools use for usage errors.
fn usage_error(e: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let message = one_line_usage_error(&e.render().to_string());
    exit_code::print_error(Failure::Usage, message.trim_start_matches("error: "), json);
    Failure::Usage.exit()
}

/// clap's message (`error: …`, indented details, `tip: …`, usage) as one line, pointing
/// at the help of the subcommand that was named, if any.
fn one_line_usage_error(rendered: &str) -> String {
    use clap::CommandFactory;
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let subcommand = std::env::args_os()
        .nth(1)
        .and_then(|a| a.into_string().ok())
        .filter(|a| Cli::command().find_subcommand(a).is_some());
    let command = match subcommand {
        Some(sub) => format!("kiln {sub}"),
        None => "kiln".into(),
    };
    let mut message = String::new();
    for part in parts {
        if !message.is_empty() {
            message.push_str(if message.ends_with(':') { " " } else { "; " });
        }
        message.push_str(part);
    }
    format!("{message} (see `{command} --help`)")
}

/// Errors in what a spec asks for (a layer that cannot be built, a setting out of range, a
/// model too large for the machine) found after the spec was read: named with the spec
/// file, as the reading errors are. Data and I/O errors name their own files already.
fn blame_spec(err: anyhow::Error, spec: Option<&std::path::Path>) -> anyhow::Error {
    use kiln::Error as E;
    let Some(spec) = spec else { return err };
    match err.downcast_ref::<E>() {
        Some(
            E::Layer { .. }
            | E::InvalidSetting { .. }
            | E::TooLarge { .. }
            | E::Unsupported { .. }
            | E::TooFew { .. }
            | E::DataUnavailable { .. },
        ) => err.context(format!("spec {}", spec.display())),
        _ => err,
    }
}

/// Whether the file at `path` is a language model (an unreadable file, or one that is
/// not a kiln model, is left for the command's own loader to report).
fn is_language_model(path: &std::path::Path) -> bool {
    matches!(kiln::artifact::kind_of(path), Ok(kiln::artifact::ModelKind::Gpt))
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    // OsStrings: an argument that is not UTF-8 (a file name) must not panic here.
    let json = wants_json(std::env::args_os());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, json),
    };
    apply_offline(cli.offline);
    report_panics_as_internal_errors(json);
    match std::panic::catch_unwind(|| run(cli.command)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => exit_code::report(&err, json),
        // The panic hook has printed it.
        Err(_) => Failure::Internal.exit(),
    }
}

/// Whether the command line asks for JSON output (`--json`, `--format json`), so that an
/// error is printed as JSON too.
fn wants_json(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    let args: Vec<std::ffi::OsString> = args.collect();
    args.iter().enumerate().any(|(i, a)| {
        a == "--json"
            || a == "--format=json"
            || (a == "--format" && args.get(i + 1).is_some_and(|v| v == "json"))
    })
}

/// `--offline` (or `KILN_OFFLINE`, read by clap) for the library, which reads the variable:
/// one reading of its value for both.
fn apply_offline(offline: bool) {
    match offline {
        true => std::env::set_var("KILN_OFFLINE", "1"),
        false => std::env::remove_var("KILN_OFFLINE"),
    }
}

/// A panic anywhere (a compute thread included) is a bug in kiln: one `error:` line with
/// where it happened, and exit status 70, instead of Rust's default report.
fn report_panics_as_internal_errors(json: bool) {
    std::panic::set_hook(Box::new(move |info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        let place = info
            .location()
            .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        let message = format!("kiln panicked{place}: {what} (this is a bug in kiln; please report it)");
        exit_code::print_error(Failure::Internal, &message, json);
    }));
}

fn run(command: Command) -> anyhow::Result<()> {
    // A test hook: a bug inside a command, to check how one is reported.
    if std::env::var_os("KILN_FAULT_PANIC").is_some() {
        panic!("KILN_FAULT_PANIC is set");
    }
    match command {
        Command::Train {
            spec,
            out,
            data_dir,
            epochs,
            quiet,
            report,
            run_dir,
            resume,
            skip_nonfinite_batches,
            no_checkpoint,
            distributed,
            init,
            steps,
        } => {
            let args = train_command::TrainArgs {
                spec: spec.as_deref(),
                out: out.as_deref(),
                data_dir: data_dir.as_deref(),
                epochs,
                steps,
                quiet,
                report: report.as_deref(),
                run_dir: run_dir.as_deref(),
                resume: resume.as_deref(),
                skip_nonfinite_batches,
                no_checkpoint,
                init: init.as_deref(),
            };
            let trained = match distributed {
                true => distributed::train(&args),
                false => train_command::train(&args),
            };
            trained.map_err(|e| blame_spec(e, spec.as_deref()))
        }
        Command::Generate {
            model,
            prompt,
            tokens,
            temperature,
            top_k,
            top_p,
            seed,
            no_cache,
        } => lm::generate(&lm::GenerateArgs {
            model: &model,
            prompt: &prompt,
            tokens,
            temperature,
            top_k,
            top_p,
            seed,
            no_cache,
        }),
        Command::Eval {
            model,
            json,
            text,
            batches,
            ..
        } if is_language_model(&model) => lm::eval(&model, text.as_deref(), batches, json),
        Command::Eval {
            model,
            data_dir,
            report,
            json,
            heatmap,
            threshold,
            ..
        } => evaluate::eval(&evaluate::EvalArgs {
            model: &model,
            data_dir: data_dir.as_deref(),
            report,
            json,
            heatmap: heatmap.as_deref(),
            threshold,
        }),
        Command::Plot { run_dir, out_dir } => inspect::plot(&run_dir, out_dir.as_deref()),
        Command::Predict { model, input, format } => {
            evaluate::predict(&model, &input, matches!(format, Format::Json))
        }
        Command::Inspect { model } => inspect::inspect(&model),
        Command::Compress {
            model,
            out,
            prune,
            structured,
            global,
            finetune_epochs,
            quantize,
            calibration_samples,
            percentile,
            data_dir,
        } => compress::compress(&compress::CompressArgs {
            model: &model,
            out: &out,
            prune,
            global,
            structured,
            finetune_epochs,
            quantize: quantize.map(|q| {
                use compress::Quantize as Q;
                use kiln::quant::{HalfFloat, QuantMode};
                match q {
                    Quantize::Int8 => Q::Int8(QuantMode::Static),
                    Quantize::Dynamic => Q::Int8(QuantMode::Dynamic),
                    Quantize::F16 => Q::Half(HalfFloat::F16),
                    Quantize::Bf16 => Q::Half(HalfFloat::Bf16),
                }
            }),
            calibration: percentile.map_or(
                kiln::quant::Calibration::MinMax,
                kiln::quant::Calibration::Percentile,
            ),
            calibration_samples,
            data_dir: data_dir.as_deref(),
        }),
        Command::Serve(args) => serve_command::serve(args),
        Command::Cv {
            spec,
            folds,
            epochs,
            data_dir,
        } => select::cv(&select::CvArgs {
            spec: spec.as_deref(),
            folds,
            epochs,
            data_dir: data_dir.as_deref(),
        })
        .map_err(|e| blame_spec(e, spec.as_deref())),
        Command::Tune {
            spec,
            space,
            trials,
            random,
            folds,
            out_dir,
            epochs,
            data_dir,
        } => select::tune(&select::TuneArgs {
            spec: spec.as_deref(),
            space: &space,
            trials,
            random,
            folds,
            out_dir: out_dir.as_deref(),
            epochs,
            data_dir: data_dir.as_deref(),
        })
        .map_err(|e| blame_spec(e, spec.as_deref())),
        Command::Ensemble {
            spec,
            members,
            out,
            epochs,
            data_dir,
        } => select::ensemble(&select::EnsembleArgs {
            spec: spec.as_deref(),
            members,
            out: &out,
            epochs,
            data_dir: data_dir.as_deref(),
        })
        .map_err(|e| blame_spec(e, spec.as_deref())),
        Command::Import {
            format,
            source,
            spec,
            out,
        } => import::import(format, &source, spec.as_deref(), &out),
        Command::Export { model, format, out } => export::export(&model, format, &out),
        Command::Tokenize { model, text } => lm::tokenize(&model, &text),
        Command::Completions { shell } => {
            shell_docs::completions(shell, <Cli as clap::CommandFactory>::command())
        }
        Command::Man { out_dir } => {
            shell_docs::manual(<Cli as clap::CommandFactory>::command(), out_dir.as_deref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_error_is_one_line_naming_the_command() {
        let rendered = "error: the following required arguments were not provided:\n  --prompt <PROMPT>\n\nUsage: kiln generate --prompt <PROMPT> <MODEL>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_usage_error(rendered),
            "error: the following required arguments were not provided: --prompt <PROMPT> (see `kiln --help`)"
        );
    }
}
