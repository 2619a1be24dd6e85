//! `kiln inspect` (a model file's architecture, tensors and lineage) and `kiln plot` (a run
//! folder's training curves).

use std::path::Path;

use anyhow::{Context, Result};
use kiln::artifact;

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
        let (params, details, out) = describe(spec, &shape, a.model.float(), i);
        shape = out;
        println!(
            "{i:<4} {:<24} {:<14} {params:>10}  {details}",
            spec.type_name(),
            format!("{shape:?}")
        );
    }
    println!("parameters: {}", a.model.float().params.count());
    let int8: Vec<String> = a
        .model
        .quantized()
        .map(|q| {
            q.network()
                .kernels()
                .map(|(i, ..)| format!("layers.{i}.kernel"))
                .collect()
        })
        .unwrap_or_default();
    println!("tensors:");
    for p in a.model.float().params.iter() {
        let dtype = match int8.contains(&p.name) {
            true => "i8 (a scale per column)",
            false => "f32",
        };
        println!("  {:<20} {:?} {dtype}", p.name, p.value.dims());
    }
    if let Some(q) = a.model.quantized() {
        let c = &q.network().compression;
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
    if !run_dir.is_dir() {
        let missing = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "is not a folder; expected a run folder written by `kiln train`",
        );
        return Err(kiln::Error::io(run_dir, missing).into());
    }
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
