//! One function per subcommand; each prints its results to stdout.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use kiln::metrics::argmax;
use kiln::pipeline::{self, RunOptions};
use kiln::spec::{Spec, TrainSpec};
use kiln::train::{Callback, Collective};
use kiln::{artifact, metrics};

use crate::progress::EpochProgressBar;

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
            anyhow::ensure!(
                args.steps.is_none(),
                "--steps is for language-model specs; use --epochs"
            );
            if let Some(e) = args.epochs {
                anyhow::ensure!(e > 0, "--epochs must be at least 1");
                s.training.epochs = e;
            }
        }
        Spec::Gpt(s) => {
            crate::lm::refuse_unsupported(args)?;
            if let Some(steps) = args.steps {
                anyhow::ensure!(steps > 0, "--steps must be at least 1");
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
    for path in [args.out, args.report].into_iter().flatten() {
        check_writable(path)?;
    }
    let (run_dir, created) = match (args.resume, args.run_dir) {
        (Some(_), Some(_)) => {
            anyhow::bail!("--resume DIR continues in DIR; it cannot be combined with --run-dir")
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
        init: args.init,
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
        init: args.init,
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
    anyhow::anyhow!("{error}{hint}")
}

/// `runs/NAME`, or `runs/NAME-2`, `-3`… if taken, created here so that two runs started
/// together never share a folder.
pub(crate) fn fresh_run_dir(name: &str) -> Result<PathBuf> {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = Path::new("runs");
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    for n in 1.. {
        let dir = match n {
            1 => base.join(&safe),
            n => base.join(format!("{safe}-{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    unreachable!("some suffix is free")
}

/// A run folder named with --run-dir for a fresh run: created if missing, refused if it
/// already holds files, so an earlier run's results are never overwritten.
pub(crate) fn claim_run_dir(dir: &Path) -> Result<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => anyhow::ensure!(
            entries.next().is_none(),
            "--run-dir {}: already holds files from an earlier run; choose another folder \
             (or `--resume {}` to continue it)",
            dir.display(),
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("--run-dir {}", dir.display())),
    }
    Ok(dir.to_path_buf())
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

/// Threads kiln computes with (RAYON_NUM_THREADS, or one per core).
pub(crate) fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Errors early if `path`'s folder does not exist or `path` names a folder.
pub fn check_writable(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    anyhow::ensure!(
        dir.is_dir(),
        "--out {}: folder {} does not exist",
        path.display(),
        dir.display()
    );
    anyhow::ensure!(
        !path.is_dir(),
        "--out {}: is a folder, expected a file name",
        path.display()
    );
    Ok(())
}

pub struct EvalArgs<'a> {
    pub model: &'a Path,
    pub data_dir: Option<&'a Path>,
    /// Per-class precision, recall, F1 and support, and the confusion matrix.
    pub report: bool,
    /// Everything as one JSON document instead of text.
    pub json: bool,
    /// Draw the confusion matrix as a heat map to FILE.png and FILE.svg.
    pub heatmap: Option<&'a Path>,
    /// For one-unit (binary) models: a probability above this is class 1 (default 0.5).
    pub threshold: Option<f32>,
}

pub fn eval(args: &EvalArgs) -> Result<()> {
    if let Some(t) = args.threshold {
        anyhow::ensure!(
            (0.0..=1.0).contains(&t),
            "--threshold {t} must be a probability in [0, 1]"
        );
    }
    let mut a = artifact::load(args.model)?;
    let test = pipeline::load_test_split(&a.info, args.data_dir)?;
    let e = a.evaluate(&test)?;
    let from_logits = a.info.training()?.from_logits;
    let scores = a.model.predict(&test.features, test.len())?;
    let width = scores.dims()[1];
    anyhow::ensure!(
        width == 1 || args.threshold.is_none(),
        "--threshold applies to one-unit (binary) models; {} has {width} outputs and predicts the largest",
        args.model.display()
    );
    let threshold = args.threshold.unwrap_or(0.5);
    let (predicted, num_classes) = if width == 1 {
        // Probabilities, or logits when the model ends without its sigmoid.
        let p: Vec<f32> = match from_logits {
            true => scores.data().iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect(),
            false => scores.data().to_vec(),
        };
        (metrics::binary_predictions(&p, threshold), 2)
    } else {
        (
            scores
                .data()
                .chunks_exact(width)
                .map(|r| argmax(r) as u32)
                .collect(),
            width,
        )
    };
    let matrix = metrics::ConfusionMatrix::new(&test.labels, &predicted, num_classes)?;
    let report = metrics::ClassificationReport::new(&matrix);
    // One-unit models: the accuracy at the chosen threshold, as the report counts it.
    let accuracy = if width == 1 {
        matrix.accuracy() as f32
    } else {
        e.accuracy
    };
    let top_k: Vec<(usize, f64)> = [3, 5]
        .into_iter()
        .filter(|&k| width > k)
        .map(|k| Ok((k, metrics::top_k_accuracy(scores.data(), width, &test.labels, k)?)))
        .collect::<Result<_>>()?;
    let names: Vec<String> = (0..num_classes)
        .map(|c| a.info.classes.get(c).cloned().unwrap_or_else(|| c.to_string()))
        .collect();
    if args.json {
        let doc = serde_json::json!({
            "model": args.model,
            "samples": test.len(),
            "loss": e.loss,
            "accuracy": accuracy,
            "top_k_accuracy": top_k.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "classes": names,
            "report": report,
            "confusion_matrix": matrix.counts().chunks(num_classes).collect::<Vec<_>>(),
            "threshold": (width == 1).then_some(threshold),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let top: String = top_k
            .iter()
            .map(|(k, v)| format!(" - top_{k}_accuracy: {v:.4}"))
            .collect();
        println!(
            "test_loss: {:.4} - test_accuracy: {:.4}{top} - samples: {}",
            e.loss,
            accuracy,
            test.len()
        );
        if args.report {
            println!("\n{}", report.render_text(&names));
            println!(
                "confusion matrix (rows: true class, columns: predicted)\n{}",
                render_matrix(&matrix, &names)
            );
        }
    }
    if let Some(stem) = args.heatmap {
        // `--heatmap cm.png` means cm.png and cm.svg, not cm.png.png.
        let is_image = matches!(stem.extension().and_then(|e| e.to_str()), Some("png" | "svg"));
        let stem = if is_image {
            stem.with_extension("")
        } else {
            stem.to_path_buf()
        };
        let files = crate::plot::plot_confusion_matrix(matrix.counts(), num_classes, &names, &stem)?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}

/// The confusion matrix as an aligned text table with class names on both axes.
fn render_matrix(matrix: &metrics::ConfusionMatrix, names: &[String]) -> String {
    let n = matrix.num_classes();
    let widest_count = matrix.counts().iter().max().map_or(1, |c| c.to_string().len());
    let cell = names.iter().map(String::len).max().unwrap_or(1).max(widest_count);
    let label = names.iter().map(String::len).max().unwrap_or(1);
    let mut out = format!("{:>label$} ", "");
    for name in names {
        out += &format!(" {name:>cell$}");
    }
    out.push('\n');
    for (t, name) in names.iter().enumerate().take(n) {
        out += &format!("{name:>label$} ");
        for p in 0..n {
            out += &format!(" {:>cell$}", matrix.get(t, p));
        }
        out.push('\n');
    }
    out
}

pub fn predict(model_path: &Path, input: &Path, json: bool) -> Result<()> {
    let mut a = artifact::load(model_path)?;
    let (x, rows) = pipeline::load_prediction_input(input, &a.info)?;
    let probs = a.model.predict(&x, rows)?;
    let width = probs.dims()[1];
    let classes = &a.info.classes;
    let class_name = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let rows: Vec<_> = probs
            .data()
            .chunks_exact(width)
            .enumerate()
            .map(|(i, p)| serde_json::json!({ "row": i, "class": class_name(argmax(p)), "probabilities": p }))
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        let header: Vec<String> = (0..width).map(|j| format!("p_{}", class_name(j))).collect();
        writeln!(out, "row,class,{}", header.join(","))?;
        for (i, p) in probs.data().chunks_exact(width).enumerate() {
            let ps: Vec<String> = p.iter().map(|v| format!("{v:.6}")).collect();
            writeln!(out, "{i},{},{}", class_name(argmax(p)), ps.join(","))?;
        }
    }
    out.flush().context("writing predictions")?;
    Ok(())
}

pub fn inspect(model_path: &Path) -> Result<()> {
    let a = match artifact::load_any(model_path)? {
        artifact::SavedModel::Sequential(a) => a,
        artifact::SavedModel::LanguageModel(lm) => return crate::lm::inspect(model_path, &lm),
    };
    let info = &a.info;
    println!(
        "model: {} ({}, {} bytes)",
        info.name,
        a.path.display(),
        a.file_bytes
    );
    println!("input shape: {}", a.model.input_shape());
    println!(
        "{:<4} {:<24} {:<14} {:>10}  details",
        "#", "layer", "output", "params"
    );
    let mut shape = a.model.input_shape().dims().to_vec();
    for (i, spec) in info.architecture.layers.iter().enumerate() {
        let (params, details, out) = describe(spec, &shape, &a.model, i);
        shape = out;
        println!(
            "{i:<4} {:<24} {:<14} {params:>10}  {details}",
            spec.type_name(),
            format!("{shape:?}")
        );
    }
    println!("parameters: {}", a.model.params.count());
    let int8: Vec<String> = a
        .model
        .quantized()
        .map(|q| q.kernels().map(|(i, ..)| format!("layers.{i}.kernel")).collect())
        .unwrap_or_default();
    println!("tensors:");
    for p in a.model.params.iter() {
        let dtype = match int8.contains(&p.name) {
            true => "i8 (a scale per column)",
            false => "f32",
        };
        println!("  {:<20} {:?} {dtype}", p.name, p.value.dims());
    }
    if let Some(q) = a.model.quantized() {
        let c = &q.compression;
        let how = match &c.calibration {
            Some(rule) => format!(
                "int8 weights and activations, calibrated ({rule}) on {} samples",
                c.calibration_samples
            ),
            None => "int8 weights, activations quantized per sample (dynamic range)".into(),
        };
        println!("compression: {how}; made from {}", c.source);
    }
    println!(
        "preprocessing: {}",
        serde_json::to_string(&summarise_preprocessing(&info.preprocessing))?
    );
    if let Some(table) = &info.table {
        println!("columns (label {:?}):", table.schema.label);
        for (c, column) in table.schema.columns.iter().enumerate() {
            let kind = match &column.kind {
                kiln::data::ColumnKind::Numeric {} => "numeric".to_string(),
                kiln::data::ColumnKind::Categorical { categories } => {
                    format!("categorical, one-hot over {}", categories.join(" | "))
                }
            };
            let fill = table
                .cleaning
                .fill
                .get(c)
                .map_or(String::new(), |v| format!("; gaps filled with {v}"));
            let bounds = match table.cleaning.bounds.get(c).copied().flatten() {
                Some([lo, hi]) => format!(
                    "; outliers outside [{lo}, {hi}] {:?}",
                    table.cleaning.outlier_action
                ),
                None => String::new(),
            };
            println!("  {:<20} {kind}{fill}{bounds}", column.name);
        }
    }
    println!("classes: {}", info.classes.join(", "));
    match (&info.training, &info.lineage) {
        (Some(training), Some(lineage)) => {
            println!("training: {}", serde_json::to_string(training)?);
            println!("lineage: {}", serde_json::to_string_pretty(lineage)?);
        }
        _ => println!("training: not recorded (built in memory through the library)"),
    }
    Ok(())
}

/// (parameter count, one-line details, output shape) of layer `index`.
fn describe(
    spec: &kiln::nn::LayerSpec,
    input: &[usize],
    model: &kiln::nn::Sequential,
    index: usize,
) -> (usize, String, Vec<usize>) {
    use kiln::nn::LayerSpec;
    let params: usize = model
        .params
        .iter()
        .filter(|p| p.name.starts_with(&format!("layers.{index}.")))
        .map(|p| p.value.numel())
        .sum();
    match spec {
        LayerSpec::Dense(d) => {
            let mut out = input.to_vec();
            if let Some(last) = out.last_mut() {
                *last = d.units;
            }
            (
                params,
                format!(
                    "units={} activation={:?} use_bias={}",
                    d.units, d.activation, d.use_bias
                ),
                out,
            )
        }
        LayerSpec::Dropout(d) => (0, format!("rate={}", d.rate), input.to_vec()),
        LayerSpec::Flatten(_) => (0, String::new(), vec![input.iter().product()]),
        LayerSpec::Activation(a) => (0, format!("activation={:?}", a.activation), input.to_vec()),
        LayerSpec::Conv2d(c) => (
            params,
            format!(
                "filters={} kernel={:?} strides={:?} padding={:?} dilation={:?} activation={:?}",
                c.filters,
                c.kernel_size.get(),
                c.strides.get(),
                c.padding,
                c.dilation_rate.get(),
                c.activation
            ),
            model_output_of(model, index),
        ),
        LayerSpec::MaxPooling2d(p) | LayerSpec::AveragePooling2d(p) => (
            0,
            format!("pool={:?} padding={:?}", p.pool_size.get(), p.padding),
            model_output_of(model, index),
        ),
        LayerSpec::BatchNormalization(b) => (
            params,
            format!("momentum={} epsilon={}", b.momentum, b.epsilon),
            input.to_vec(),
        ),
        LayerSpec::GlobalAveragePooling2d(_) | LayerSpec::Reshape(_) => {
            (0, String::new(), model_output_of(model, index))
        }
    }
}

/// Layer `index`'s per-sample output shape, from the model's own shape inference.
fn model_output_of(model: &kiln::nn::Sequential, index: usize) -> Vec<usize> {
    model
        .layer_output_shapes()
        .get(index)
        .map_or_else(Vec::new, |s| s.dims().to_vec())
}

/// The fitted normalization without its (possibly 784-long) statistics vectors.
fn summarise_preprocessing(p: &kiln::data::FittedNormalization) -> serde_json::Value {
    use kiln::data::FittedNormalization as F;
    match p {
        F::None => serde_json::json!({"kind": "none"}),
        F::Scale { max } => serde_json::json!({"kind": "scale", "max": max}),
        F::ZScore { mean, .. } => serde_json::json!({"kind": "z_score", "features": mean.len()}),
        F::MinMax { min, .. } => serde_json::json!({"kind": "min_max", "features": min.len()}),
    }
}

pub fn plot(run_dir: &Path, out_dir: Option<&Path>) -> Result<()> {
    let path = run_dir.join(kiln::train::HISTORY_JSON);
    anyhow::ensure!(
        run_dir.is_dir(),
        "{}: is not a folder; expected a run folder written by `kiln train`",
        run_dir.display()
    );
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: cannot read it; expected the history a `kiln train` run folder holds",
            path.display()
        )
    })?;
    let history: kiln::train::History = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a kiln training history", path.display()))?;
    for file in crate::plot::plot_history(&history, out_dir.unwrap_or(run_dir))? {
        println!("wrote {}", file.display());
    }
    Ok(())
}
