//! The `kiln` command: train, evaluate, predict with and inspect models.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "kiln: train, evaluate and run neural networks from a TOML spec"
)]
struct Cli {
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
        /// Folder holding the MNIST files (overrides the spec and $KILN_DATA).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Override the spec's number of epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Print only the summary, not one line per epoch.
        #[arg(long)]
        quiet: bool,
        /// Also write the run's summary and per-epoch history as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Print a saved model's loss and accuracy on its test split.
    Eval {
        model: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
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

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train {
            spec,
            out,
            data_dir,
            epochs,
            quiet,
            report,
        } => commands::train(&commands::TrainArgs {
            spec: spec.as_deref(),
            out: out.as_deref(),
            data_dir: data_dir.as_deref(),
            epochs,
            quiet,
            report: report.as_deref(),
        }),
        Command::Eval { model, data_dir } => commands::eval(&model, data_dir.as_deref()),
        Command::Predict { model, input, format } => {
            commands::predict(&model, &input, matches!(format, Format::Json))
        }
        Command::Inspect { model } => commands::inspect(&model),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
