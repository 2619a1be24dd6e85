//! One function per subcommand; each prints its results to stdout.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use kiln::artifact;
use kiln::pipeline::{self, RunOptions};
use kiln::spec::TrainSpec;
use kiln::train::argmax;

pub struct TrainArgs<'a> {
    pub spec: Option<&'a Path>,
    pub out: Option<&'a Path>,
    pub data_dir: Option<&'a Path>,
    pub epochs: Option<usize>,
    pub quiet: bool,
    pub report: Option<&'a Path>,
}

pub fn train(args: &TrainArgs) -> Result<()> {
    let TrainArgs {
        spec: spec_path,
        out,
        data_dir,
        epochs,
        quiet,
        report,
    } = *args;
    let start = Instant::now();
    let mut spec = match spec_path {
        Some(p) => TrainSpec::from_file(p)?,
        None => {
            println!("No spec given: training the built-in MLP on the embedded UCI digits set (offline).");
            TrainSpec::default_digits()
        }
    };
    if let Some(e) = epochs {
        anyhow::ensure!(e > 0, "--epochs must be at least 1");
        spec.training.epochs = e;
    }
    // Fail on an unwritable output before spending minutes training.
    for path in [out, report].into_iter().flatten() {
        check_writable(path)?;
    }
    let outcome = pipeline::train(
        &spec,
        &RunOptions {
            data_dir,
            verbose: !quiet,
        },
    )?;
    let h = &outcome.history;
    println!(
        "test_loss: {:.4} - test_accuracy: {:.4} - {:.3} s/epoch (median of {}) - data {:.2}s - total {:.1}s",
        outcome.test.loss,
        outcome.test.accuracy,
        h.median_epoch_seconds(),
        h.epochs.len(),
        outcome.load_seconds,
        start.elapsed().as_secs_f64()
    );
    if let Some(report) = report {
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
            "history": h.epochs,
        });
        let text = serde_json::to_string_pretty(&summary)? + "\n";
        artifact::write_atomically(report, text.as_bytes())?;
    }
    match out {
        Some(out) => {
            artifact::save(&outcome.model, &outcome.info, out)?;
            println!("saved {}", out.display());
        }
        None => println!("(model not saved; pass --out FILE.safetensors to keep it)"),
    }
    Ok(())
}

/// Threads kiln computes with (RAYON_NUM_THREADS, or one per core).
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Errors early if `path`'s folder does not exist or `path` names a folder.
fn check_writable(path: &Path) -> Result<()> {
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

pub fn eval(model_path: &Path, data_dir: Option<&Path>) -> Result<()> {
    let mut a = artifact::load(model_path)?;
    let test = pipeline::load_test_split(&a.info, data_dir)?;
    let t = &a.info.training;
    a.model.compile(t.optimizer.clone(), t.loss(), t.seed);
    let e = a.model.evaluate(&test, 1024)?;
    println!(
        "test_loss: {:.4} - test_accuracy: {:.4} - samples: {}",
        e.loss,
        e.accuracy,
        test.len()
    );
    Ok(())
}

pub fn predict(model_path: &Path, input: &Path, json: bool) -> Result<()> {
    let mut a = artifact::load(model_path)?;
    let size = a.model.input_shape().numel();
    let (x, rows) = pipeline::load_prediction_input(input, size, &a.info.preprocessing)?;
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
    let a = artifact::load(model_path)?;
    let info = &a.info;
    println!(
        "model: {} ({}, {} bytes)",
        info.name,
        a.path.display(),
        a.file_bytes
    );
    println!("input shape: {}", a.model.input_shape());
    println!(
        "{:<4} {:<11} {:<14} {:>10}  details",
        "#", "layer", "output", "params"
    );
    let mut shape = a.model.input_shape().dims().to_vec();
    for (i, spec) in info.architecture.layers.iter().enumerate() {
        let (params, details, out) = describe(spec, &shape, &a.model, i);
        shape = out;
        println!(
            "{i:<4} {:<11} {:<14} {params:>10}  {details}",
            spec.type_name(),
            format!("{shape:?}")
        );
    }
    println!("parameters: {}", a.model.params.count());
    println!("tensors:");
    for p in a.model.params.iter() {
        println!("  {:<20} {:?} f32", p.name, p.value.dims());
    }
    println!(
        "preprocessing: {}",
        serde_json::to_string(&summarise_preprocessing(&info.preprocessing))?
    );
    println!("classes: {}", info.classes.join(", "));
    println!("training: {}", serde_json::to_string(&info.training)?);
    println!("lineage: {}", serde_json::to_string_pretty(&info.lineage)?);
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
    }
}

/// The fitted normalization without its (possibly 784-long) statistics vectors.
fn summarise_preprocessing(p: &kiln::data::FittedNormalization) -> serde_json::Value {
    use kiln::data::FittedNormalization as F;
    match p {
        F::None => serde_json::json!({"kind": "none"}),
        F::Scale { max } => serde_json::json!({"kind": "scale", "max": max}),
        F::ZScore { mean, .. } => serde_json::json!({"kind": "z_score", "features": mean.len()}),
    }
}
