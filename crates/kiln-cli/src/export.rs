//! `kiln export`: a kiln model in a format other runtimes execute (ONNX).

use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;
use kiln::artifact::{self, ModelKind};

use crate::exit_code::bad_data;
use crate::run_dirs::check_writable;

/// What `kiln export` writes.
#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// ONNX (opset 17): ONNX Runtime, TensorRT, OpenVINO, onnx.js and the rest.
    Onnx,
}

pub fn export(model_path: &Path, format: ExportFormat, out: &Path) -> Result<()> {
    check_writable("--out", out)?;
    if artifact::kind_of(model_path)? == ModelKind::Gpt {
        return Err(bad_data(format!(
            "{}: is a language model; ONNX export covers classifiers (Dense, Conv2D, pooling, batch normalization, reshape; float or int8) so far",
            model_path.display()
        )));
    }
    let saved = artifact::load(model_path)?;
    match format {
        ExportFormat::Onnx => artifact::onnx::save_onnx(&saved.model, &saved.info, out)
            .with_context(|| model_path.display().to_string())?,
    }
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    // A class per sample only where each sample's output is one vector of scores.
    let outputs = match saved.model.output_shape().rank() {
        1 => "`probabilities`, `class`",
        _ => "`probabilities`",
    };
    println!(
        "wrote {} ({:.1} KiB, ONNX opset {}): input `input` {:?} float32 with a batch axis first; outputs {outputs}",
        out.display(),
        size as f64 / 1024.0,
        artifact::onnx::OPSET,
        saved.model.input_shape().dims(),
    );
    Ok(())
}
