//! `kiln compress`: a smaller, faster copy of a model, with what it cost measured.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use kiln::artifact::{self, Classifier};
use kiln::nn::Sequential;
use kiln::pipeline;
use kiln::prune::{self, PruningSchedule};
use kiln::quant::{Calibration, HalfFloat, QuantMode, QuantizedModel};
use kiln::train::EvalData;

use crate::exit_code;

/// What `--quantize` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantize {
    /// int8 kernels on the integer path (static or dynamic activation ranges).
    Int8(QuantMode),
    /// Float weights stored in 16 bits; the float path.
    Half(HalfFloat),
}

pub struct CompressArgs<'a> {
    pub model: &'a Path,
    pub out: &'a Path,
    /// Fraction of weights (or, structured, of hidden units) to prune.
    pub prune: Option<f32>,
    /// Unstructured pruning against one threshold across all kernels.
    pub global: bool,
    pub structured: bool,
    pub finetune_epochs: usize,
    pub quantize: Option<Quantize>,
    pub calibration: Calibration,
    pub calibration_samples: usize,
    pub data_dir: Option<&'a Path>,
}

/// What the before/after table shows of one model file.
struct Figures {
    file_bytes: u64,
    gzip_bytes: u64,
    nonzero_parameters: usize,
    test_accuracy: f32,
    batch1_p50_us: f64,
    batch1024_per_s: f64,
}

pub fn compress(args: &CompressArgs) -> Result<()> {
    if matches!(artifact::kind_of(args.model), Ok(artifact::ModelKind::Gpt)) {
        return crate::compress_lm::compress(args);
    }
    check(args)?;
    let original = artifact::load(args.model)?;
    if original.model.quantized().is_some() {
        return Err(exit_code::bad_data(format!(
            "{}: is already compressed; compress its float source instead",
            args.model.display()
        )));
    }
    if let Some(e) = original.model.ensemble() {
        return Err(exit_code::bad_data(format!(
            "{}: is an ensemble of {} models, which compress does not handle yet; compress a single model",
            args.model.display(),
            e.members().len()
        )));
    }
    // The test split the original and the compressed model are both judged on, loaded once.
    let test = pipeline::load_test_split(&original.info, args.data_dir)?;
    let before = measure(args.model, &test)?;
    let mut info = original.info;
    let mut model = original.model.into_float("compress")?;
    let mut steps = Vec::new();
    if let Some(fraction) = args.prune {
        model = prune(model, &info, fraction, args, &mut steps)?;
    }
    if let Some(Quantize::Half(h)) = args.quantize {
        kiln::quant::round_to_half(&mut model.params, h);
        info.storage = Some(h);
        steps.push(format!(
            "weights stored as {} (float inference)",
            h.dtype().to_lowercase()
        ));
    }
    info.architecture.layers = model.specs().to_vec();
    let mut model = Classifier::from(model);
    if let Some(Quantize::Int8(mode)) = args.quantize {
        let samples = match mode {
            QuantMode::Static => {
                pipeline::load_calibration_samples(&info, args.data_dir, args.calibration_samples)?.features
            }
            QuantMode::Dynamic => Vec::new(),
        };
        // By file name: a model file records no folders (as for its data).
        let source = args.model.file_name().map_or_else(
            || args.model.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let calibrated_on = samples.len() / model.input_shape().numel().max(1);
        let float = model.into_float("quantize")?;
        model = QuantizedModel::quantize(float, mode, args.calibration, &samples, &source)
            .with_context(|| format!("{}", args.model.display()))?
            .into();
        steps.push(describe_quantization(args, mode, calibrated_on));
    }
    // The recorded test figures become the compressed model's own.
    let loss = info.training()?.loss();
    let evaluation = kiln::train::evaluate(&mut model, &loss, EvalData::Samples(&test), None)?;
    let lineage = info.lineage_mut()?;
    lineage.compressed.extend(steps.iter().cloned());
    lineage.metrics.test_loss = Some(evaluation.loss);
    lineage.metrics.test_accuracy = Some(evaluation.accuracy);
    artifact::save(&model, &info, args.out)?;
    let after = measure(args.out, &test)?;
    print_table(args, &steps, &before, &after);
    Ok(())
}

/// Refuses option values that cannot work before anything is loaded or written.
fn check(args: &CompressArgs) -> Result<()> {
    ensure_usage!(
        args.model != args.out,
        "--out {}: is the model being compressed; choose another file",
        args.out.display()
    );
    ensure_usage!(
        !(args.global && args.structured),
        "--global ranks single weights across kernels; --structured removes whole units and filters per layer: choose one"
    );
    ensure_usage!(
        args.prune.is_some() || (!args.structured && !args.global && args.finetune_epochs == 0),
        "--structured, --global and --finetune-epochs apply to pruning; add --prune FRACTION"
    );
    ensure_usage!(
        args.prune.is_some() || args.quantize.is_some(),
        "nothing to do: give --prune FRACTION and/or --quantize int8|dynamic|f16|bf16"
    );
    if let Some(p) = args.prune {
        ensure_usage!(
            p > 0.0 && p < 1.0,
            "--prune {p}: expected the fraction to remove, between 0 and 1 (e.g. 0.8)"
        );
    }
    ensure_usage!(
        args.calibration_samples > 0 || args.quantize != Some(Quantize::Int8(QuantMode::Static)),
        "--calibration-samples must be at least 1 for static int8 quantization"
    );
    if let Calibration::Percentile(p) = args.calibration {
        ensure_usage!(
            p > 50.0 && p <= 100.0,
            "--percentile {p}: expected a value in (50, 100], such as 99.99"
        );
    }
    Ok(())
}

/// Prunes `model` (and fine-tunes it if asked); notes each step in `steps`.
fn prune(
    model: Sequential,
    info: &kiln::artifact::ModelInfo,
    fraction: f32,
    args: &CompressArgs,
    steps: &mut Vec<String>,
) -> Result<Sequential> {
    let epochs = args.finetune_epochs;
    let mut model = match args.structured {
        true => {
            let (pruned, removed) = prune::remove_units(&model, fraction)?;
            for r in removed {
                let what = if r.filters { "filters" } else { "units" };
                steps.push(format!(
                    "structured pruning: layer {} keeps {} of {} {what} (largest L2 norm)",
                    r.layer, r.after, r.before
                ));
            }
            pruned
        }
        false if epochs == 0 => {
            let mut model = model;
            prune::prune_weights(&mut model, fraction, args.global)?;
            steps.push(format!(
                "magnitude pruning: {:.0}% of {}, at once",
                100.0 * fraction,
                scope(args.global)
            ));
            model
        }
        false => {
            steps.push(format!(
                "magnitude pruning: {} to {:.0}% sparsity, polynomial decay (power 3) over the first {} of {epochs} fine-tuning epochs",
                scope(args.global),
                100.0 * fraction,
                (epochs - 1).max(1)
            ));
            model
        }
    };
    if epochs > 0 {
        let (structured, global) = (args.structured, args.global);
        pipeline::fine_tune(&mut model, info, args.data_dir, epochs, |m, steps_per_epoch| {
            if structured {
                return Ok(None);
            }
            // Reach the target a whole epoch before the end, so the last epoch recovers
            // accuracy at full sparsity (TFMOT's advice); masks refresh every 100 steps,
            // or ten times on the way on a small data set.
            let ramp = (steps_per_epoch * (epochs - 1).max(1)) as u64;
            let frequency = (ramp / 10).clamp(1, 100);
            let schedule = PruningSchedule::PolynomialDecay {
                initial_sparsity: 0.0,
                final_sparsity: fraction,
                begin_step: 0,
                end_step: (ramp / frequency * frequency).max(frequency),
                power: 3.0,
                frequency,
            };
            let mut pruning = prune::Pruning::new(m, schedule)?;
            pruning.global = global;
            Ok(Some(pruning))
        })?;
        if !structured {
            // The schedule ends at the target; this makes sure of it whatever the step count.
            prune::prune_weights(&mut model, fraction, global)?;
        }
        let plural = if epochs == 1 { "" } else { "s" };
        steps.push(format!(
            "fine-tuned {epochs} epoch{plural} on its training data and settings (a fresh optimizer at the spec's learning rate)"
        ));
    }
    Ok(model)
}

/// Which weights unstructured pruning ranks together.
fn scope(global: bool) -> &'static str {
    match global {
        true => "all Dense and Conv2D kernels together (one global threshold)",
        false => "each Dense and Conv2D kernel",
    }
}

/// `samples`: how many the activation ranges were calibrated on (at most
/// `--calibration-samples`, fewer when the training split is smaller).
fn describe_quantization(args: &CompressArgs, mode: QuantMode, samples: usize) -> String {
    match mode {
        QuantMode::Static => format!(
            "int8 weights and activations, calibrated on {samples} training samples ({})",
            args.calibration.describe()
        ),
        QuantMode::Dynamic => "int8 weights, activations quantized per sample at run time".into(),
    }
}

/// Loads `path` afresh (as eval and predict will) and measures it.
fn measure(path: &Path, test: &kiln::data::Dataset) -> Result<Figures> {
    let mut a = artifact::load(path)?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes)?;
    let gzip_bytes = gz.finish()?.len() as u64;
    let test_accuracy = a.evaluate(test)?.accuracy;
    let nonzero_parameters = a
        .model
        .float()
        .params
        .iter()
        .map(|p| p.value.data().iter().filter(|v| **v != 0.0).count())
        .sum();
    let (batch1_p50_us, batch1024_per_s) = speed(&mut a.model, &test.features)?;
    Ok(Figures {
        file_bytes: bytes.len() as u64,
        gzip_bytes,
        nonzero_parameters,
        test_accuracy,
        batch1_p50_us,
        batch1024_per_s,
    })
}

/// Median batch-1 latency (µs) and batch-1024 throughput (samples/s) on test samples.
fn speed(model: &mut Classifier, features: &[f32]) -> Result<(f64, f64)> {
    let size = model.input_shape().numel();
    let rows = features.len() / size;
    ensure_data!(rows > 0, "the test split is empty; nothing to time the model on");
    // 1024 test samples, repeated if the split has fewer.
    let batch: Vec<f32> = features.iter().copied().cycle().take(1024 * size).collect();
    let batch = &batch[..];
    kiln::ops::parallel::on_pool(|| -> Result<(f64, f64)> {
        let mut latencies = Vec::new();
        for i in 0..2000 {
            let one = &features[(i % rows) * size..][..size];
            let t = Instant::now();
            std::hint::black_box(model.predict(one, 1)?);
            latencies.push(t.elapsed().as_secs_f64());
        }
        latencies.sort_by(f64::total_cmp);
        model.predict(batch, 1024)?;
        let t = Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            std::hint::black_box(model.predict(batch, 1024)?);
        }
        let throughput = (rounds * 1024) as f64 / t.elapsed().as_secs_f64();
        Ok((latencies[latencies.len() / 2] * 1e6, throughput))
    })
}

fn print_table(args: &CompressArgs, steps: &[String], before: &Figures, after: &Figures) {
    println!("{} -> {}:", args.model.display(), args.out.display());
    for step in steps {
        println!("  - {step}");
    }
    println!();
    println!("| | before | after | after ÷ before |");
    println!("|---|---|---|---|");
    let row = |name: &str, b: f64, a: f64, unit: &str| {
        println!("| {name} | {b:.0}{unit} | {a:.0}{unit} | {:.2} |", a / b);
    };
    row(
        "file bytes",
        before.file_bytes as f64,
        after.file_bytes as f64,
        "",
    );
    row(
        "gzipped bytes",
        before.gzip_bytes as f64,
        after.gzip_bytes as f64,
        "",
    );
    row(
        "nonzero parameters",
        before.nonzero_parameters as f64,
        after.nonzero_parameters as f64,
        "",
    );
    println!(
        "| test accuracy | {:.4} | {:.4} | {:+.2} points |",
        before.test_accuracy,
        after.test_accuracy,
        100.0 * (after.test_accuracy - before.test_accuracy)
    );
    println!(
        "| batch-1 latency p50 | {:.1} µs | {:.1} µs | {:.2} |",
        before.batch1_p50_us,
        after.batch1_p50_us,
        after.batch1_p50_us / before.batch1_p50_us
    );
    row(
        "batch-1024 throughput",
        before.batch1024_per_s,
        after.batch1024_per_s,
        " samples/s",
    );
    println!();
    println!("saved {}", args.out.display());
}
