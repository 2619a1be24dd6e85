//! `kiln train`: a spec of either kind of model trained in a run folder, alone or as one
//! rank of a data-parallel group; the run's summary printed and its model saved.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use kiln::artifact;
use kiln::pipeline::{self, RunOptions};
use kiln::spec::{Spec, TrainSpec};
use kiln::train::{Callback, Collective};

use crate::progress::EpochProgressBar;
use crate::run_dirs::{check_writable, claim_run_dir, fresh_run_dir, rayon_threads};

pub struct TrainArgs<'a> {
    pub spec: Option<&'a Path>,
    pub out: Option<&'a Path>,
    pub data_dir: Option<&'a Path>,
    pub epochs: Option<usize>,
    /// A language model's optimizer steps (the total when resuming).
    pub steps: Option<usize>,
    pub quiet: bool,
    pub report: Option<&'a Path>,
    pub run_dir: Option<&'a Path>,
    pub resume: Option<&'a Path>,
    pub skip_nonfinite_batches: bool,
    pub no_checkpoint: bool,
    /// Start from this model's weights (layers matched by name).
    pub init: Option<&'a Path>,
}

/// The model file every run folder gets.
pub(crate) const RUN_MODEL: &str = "model.safetensors";

pub fn train(args: &TrainArgs) -> Result<()> {
    train_in(args, None, Vec::new())
}

/// The spec to train: the file given, the resumed run's own, or the built-in digits MLP;
/// with the command line's epoch or step count.
fn spec_to_train(args: &TrainArgs, is_root: bool) -> Result<Spec> {
    let mut spec = match (args.spec, args.resume) {
        (Some(p), _) => Spec::from_file(p)?,
        (None, Some(dir)) => pipeline::spec_of_run(dir)?,
        (None, None) => {
            if is_root {
                println!(
                    "No spec given: training the built-in MLP on the embedded UCI digits set (offline)."
                );
            }
            Spec::Sequential(TrainSpec::default_digits())
        }
    };
    match &mut spec {
        Spec::Sequential(s) => {
            ensure_usage!(
                args.steps.is_none(),
                "--steps is for language-model specs; use --epochs"
            );
            if let Some(e) = args.epochs {
                ensure_usage!(e > 0, "--epochs must be at least 1");
                s.training.epochs = e;
            }
        }
        Spec::Gpt(s) => {
            crate::lm::refuse_unsupported(args)?;
            // Recorded in the spec, so a resumed run starts from the same model's tokenizer.
            if let Some(init) = args.init {
                let absolute = std::path::absolute(init).map_err(|e| kiln::Error::io(init, e))?;
                s.training.init = Some(absolute);
            }
            if let Some(steps) = args.steps {
                ensure_usage!(steps > 0, "--steps must be at least 1");
                s.training.steps = steps;
            }
        }
    }
    Ok(spec)
}

/// What a finished run gives, by kind of model.
enum Trained {
    Sequential(Box<pipeline::TrainOutcome>),
    Gpt(Box<pipeline::LmOutcome>),
}

/// `kiln train`, alone or as one rank of a data-parallel group. Every rank trains; only
/// rank 0 picks the run folder, prints, and saves.
pub fn train_in(
    args: &TrainArgs,
    group: Option<&dyn Collective>,
    mut extra: Vec<Box<dyn Callback>>,
) -> Result<()> {
    let start = Instant::now();
    let is_root = group.is_none_or(|g| g.rank() == 0);
    let spec = spec_to_train(args, is_root)?;
    if let Some(group) = group.filter(|_| !is_root) {
        let run_dir = run_dir_of_root(group, None);
        crate::distributed::on_run_dir(group, &run_dir, !args.no_checkpoint);
        return train_as_follower(args, &spec, group, &run_dir, extra);
    }
    // Fail on an unwritable output before spending minutes training.
    for (flag, path) in [("--out", args.out), ("--report", args.report)] {
        if let Some(path) = path {
            check_writable(flag, path)?;
        }
    }
    let (run_dir, created) = match (args.resume, args.run_dir) {
        (Some(_), Some(_)) => {
            return Err(crate::exit_code::usage(
                "--resume DIR continues in DIR; it cannot be combined with --run-dir",
            ));
        }
        (Some(dir), None) => (dir.to_path_buf(), false),
        (None, Some(dir)) => (claim_run_dir(dir)?, true),
        (None, None) => (fresh_run_dir(spec.name().unwrap_or("model"))?, true),
    };
    if let Some(group) = group {
        run_dir_of_root(group, Some(&run_dir));
        crate::distributed::on_run_dir(group, &run_dir, !args.no_checkpoint);
    }
    if let Some(dir) = args.resume {
        // An unreadable checkpoint is reported by the training below.
        if let Ok(c) = kiln::train::Checkpoint::load(&dir.join(pipeline::CHECKPOINT_FILE)) {
            match &spec {
                Spec::Gpt(_) if c.progress.steps_done > 0 => {
                    println!("resuming after step {}", c.progress.steps_done)
                }
                Spec::Sequential(_) if c.progress.epochs_done > 0 => {
                    println!("resuming after epoch {}", c.progress.epochs_done)
                }
                _ => {}
            }
        }
    }
    let interactive = !args.quiet && std::io::stdout().is_terminal();
    if interactive {
        extra.push(Box::new(EpochProgressBar::new()));
    }
    let options = RunOptions {
        data_dir: args.data_dir,
        verbose: !args.quiet && !interactive,
        run_dir: Some(&run_dir),
        checkpoints: !args.no_checkpoint,
        resume: args.resume.is_some(),
        skip_nonfinite_batches: args.skip_nonfinite_batches,
        distributed: group,
        // A language model's --init is in its spec (`training.init`).
        init: args.init.filter(|_| matches!(spec, Spec::Sequential(_))),
        bootstrap: None,
    };
    if !args.quiet {
        println!("run folder: {}", run_dir.display());
        if let Spec::Gpt(s) = &spec {
            crate::lm::describe_run(s);
        }
    }
    let trained = match &spec {
        Spec::Sequential(s) => {
            pipeline::train_with(s, &options, extra).map(|o| Trained::Sequential(Box::new(o)))
        }
        Spec::Gpt(s) => pipeline::train_language_model(s, &options, extra).map(|o| Trained::Gpt(Box::new(o))),
    };
    let trained = trained.map_err(|e| {
        if created {
            // A run that failed before writing anything leaves no empty folder behind
            // (remove_dir only removes an empty one).
            let _ = std::fs::remove_dir(&run_dir);
        }
        explain_failure(e, &run_dir, !args.no_checkpoint)
    })?;
    let ranks = group.map_or(1, |g| g.size());
    match (&spec, trained) {
        (Spec::Sequential(s), Trained::Sequential(outcome)) => {
            report_sequential(args, s, &outcome, &run_dir, start, ranks)
        }
        (Spec::Gpt(s), Trained::Gpt(outcome)) => {
            crate::lm::report_training(args, s, &outcome, &run_dir, ranks)
        }
        _ => unreachable!("each kind of spec trains its kind of model"),
    }
}

/// Prints a layer-stack run's summary and saves its model (in the run folder and `--out`).
fn report_sequential(
    args: &TrainArgs,
    spec: &TrainSpec,
    outcome: &pipeline::TrainOutcome,
    run_dir: &Path,
    start: Instant,
    ranks: usize,
) -> Result<()> {
    if !args.quiet && !outcome.initialized.is_empty() {
        let frozen: Vec<String> = spec
            .model
            .frozen
            .iter()
            .map(|&i| spec.model.layer_names()[i].clone())
            .collect();
        println!(
            "started from {}: layers {} (frozen: {})",
            args.init.map_or(String::new(), |p| p.display().to_string()),
            outcome.initialized.join(", "),
            if frozen.is_empty() {
                "none".to_string()
            } else {
                frozen.join(", ")
            }
        );
    }
    if !args.quiet {
        for (split, report) in outcome.cleaning.iter().filter(|(_, r)| !r.changed_nothing()) {
            println!("cleaning ({split}): {report}");
        }
    }
    let h = &outcome.history;
    let new_epochs = &h.epochs[outcome.resumed_epochs.min(h.epochs.len())..];
    let val = outcome.validation.map_or(String::new(), |v| {
        format!(" - val_loss: {:.4} - val_accuracy: {:.4}", v.loss, v.accuracy)
    });
    let ranks_text = match ranks {
        1 => String::new(),
        n => format!(
            " - {n} ranks, {:.1}% of training in all-reduce",
            100.0 * allreduce_share(new_epochs)
        ),
    };
    println!(
        "test_loss: {:.4} - test_accuracy: {:.4}{val} - {:.3} s/epoch (median of {}){ranks_text} - data {:.2}s - total {:.1}s",
        outcome.test.loss,
        outcome.test.accuracy,
        median_seconds(new_epochs),
        new_epochs.len(),
        outcome.load_seconds,
        start.elapsed().as_secs_f64()
    );
    if let Some(report) = args.report {
        write_report(report, outcome, spec, ranks)?;
    }
    let run_model = run_dir.join(RUN_MODEL);
    artifact::save(&outcome.model, &outcome.info, &run_model)?;
    println!("saved {}", run_model.display());
    if let Some(out) = args.out {
        artifact::save(&outcome.model, &outcome.info, out)?;
        println!("saved {}", out.display());
    }
    Ok(())
}

/// The share of training time spent in all-reduce over these epochs.
pub(crate) fn allreduce_share(epochs: &[kiln::train::EpochLog]) -> f64 {
    epochs.iter().map(|e| e.communication_seconds).sum::<f64>()
        / epochs.iter().map(|e| e.train_seconds).sum::<f64>().max(1e-9)
}

/// A rank other than 0: trains its share in step with the others, keeps no run folder
/// (rank 0 sends it the checkpoint to resume from), prints and saves nothing.
fn train_as_follower(
    args: &TrainArgs,
    spec: &Spec,
    group: &dyn Collective,
    run_dir: &Path,
    extra: Vec<Box<dyn Callback>>,
) -> Result<()> {
    let options = RunOptions {
        data_dir: args.data_dir,
        run_dir: Some(run_dir),
        checkpoints: !args.no_checkpoint,
        resume: args.resume.is_some(),
        skip_nonfinite_batches: args.skip_nonfinite_batches,
        distributed: Some(group),
        init: args.init.filter(|_| matches!(spec, Spec::Sequential(_))),
        ..Default::default()
    };
    match spec {
        Spec::Sequential(s) => pipeline::train_with(s, &options, extra).map(drop)?,
        Spec::Gpt(s) => pipeline::train_language_model(s, &options, extra).map(drop)?,
    }
    Ok(())
}

/// The run folder rank 0 chose (`Some` on rank 0, `None` on the others), on every rank.
fn run_dir_of_root(group: &dyn Collective, mine: Option<&Path>) -> PathBuf {
    let mut bytes = mine.map_or(Vec::new(), |p| p.as_os_str().as_encoded_bytes().to_vec());
    group.broadcast_bytes(&mut bytes);
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

/// Adds to a training failure where the run's last good checkpoint is and how to go on.
fn explain_failure(error: kiln::Error, run_dir: &Path, checkpoints: bool) -> anyhow::Error {
    let checkpoint = run_dir.join(pipeline::CHECKPOINT_FILE);
    let hint = match (&error, checkpoints, checkpoint.exists()) {
        // Resuming replays the same batches, so it needs the skip flag to get past this one.
        (kiln::Error::Diverged { .. }, true, true) => format!(
            " (--skip-nonfinite-batches skips them) — the last good checkpoint is kept in {}; \
             continue past the bad batch with `--resume {} --skip-nonfinite-batches`, or start again with a lower learning rate",
            checkpoint.display(),
            run_dir.display()
        ),
        (kiln::Error::Diverged { .. }, true, false) => {
            " (--skip-nonfinite-batches skips them) — no checkpoint was written: it diverged in the first epoch".into()
        }
        (kiln::Error::Diverged { .. }, false, _) => {
            " (--skip-nonfinite-batches skips them) — checkpoints were off (--no-checkpoint)".into()
        }
        _ => String::new(),
    };
    match hint.is_empty() {
        // Kept typed, so the caller can tell a spec's error from a data file's.
        true => error.into(),
        // Only a diverged run gets a hint: bad data or settings, not a bug.
        false => crate::exit_code::bad_data(format!("{error}{hint}")),
    }
}

fn median_seconds(epochs: &[kiln::train::EpochLog]) -> f64 {
    kiln::train::History {
        epochs: epochs.to_vec(),
    }
    .median_epoch_seconds()
}

fn write_report(
    report: &Path,
    outcome: &pipeline::TrainOutcome,
    spec: &TrainSpec,
    ranks: usize,
) -> Result<()> {
    let h = &outcome.history;
    let fit_seconds: f64 = h.epochs.iter().map(|e| e.seconds).sum();
    let summary = serde_json::json!({
        "name": outcome.info.name,
        "epochs": h.epochs.len(),
        "batch_size": spec.training.batch_size,
        "median_epoch_seconds": h.median_epoch_seconds(),
        "fit_seconds": fit_seconds,
        "s_per_epoch": fit_seconds / h.epochs.len().max(1) as f64,
        "test_loss": outcome.test.loss,
        "test_accuracy": outcome.test.accuracy,
        "data_seconds": outcome.load_seconds,
        "threads": rayon_threads(),
        "ranks": ranks,
        "cleaning": outcome.cleaning.iter().map(|(split, r)| (split.clone(), serde_json::json!(r))).collect::<serde_json::Map<_, _>>(),
        "history": h.epochs,
    });
    let text = serde_json::to_string_pretty(&summary)? + "\n";
    artifact::write_atomically(report, text.as_bytes())?;
    Ok(())
}
