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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train {
            spec,
            out,
            data_dir,
            epochs,
            quiet,
        } => commands::train(
            spec.as_deref(),
            out.as_deref(),
            data_dir.as_deref(),
            epochs,
            quiet,
        ),
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
