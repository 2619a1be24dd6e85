//! `kiln import`: models trained elsewhere, as kiln model files.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use clap::ValueEnum;
use kiln::artifact::{self, save_language_model, ModelInfo};
use kiln::data::{FittedNormalization, Normalization};
use kiln::spec::TrainSpec;

use crate::exit_code::{bad_data, usage};
use crate::run_dirs::check_writable;

/// What `kiln import` reads.
#[derive(Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// A Hugging Face GPT-2 checkpoint folder: config.json, model.safetensors, vocab.json,
    /// merges.txt.
    Gpt2,
    /// A PyTorch state_dict saved with safetensors.torch.save_file, for the layer stack
    /// that --spec describes.
    Torch,
}

pub fn import(format: ImportFormat, source: &Path, spec: Option<&Path>, out: &Path) -> Result<()> {
    check_writable("--out", out)?;
    match (format, spec) {
        (ImportFormat::Gpt2, None) => import_gpt2(source, out),
        (ImportFormat::Torch, Some(spec)) => import_torch(source, spec, out),
        (ImportFormat::Gpt2, Some(_)) => Err(usage(
            "--spec is for `kiln import torch`; a GPT-2 folder has its config.json",
        )),
        (ImportFormat::Torch, None) => Err(usage(
            "`kiln import torch STATE.safetensors` needs --spec SPEC.toml, the model the state dict is for",
        )),
    }
}

/// A PyTorch state dict as the spec's layer stack, saved with the spec's preprocessing,
/// training settings and data source (so `eval` and `compress` find its test data).
fn import_torch(state: &Path, spec_path: &Path, out: &Path) -> Result<()> {
    let spec = TrainSpec::from_file(spec_path)?;
    let input_shape = spec.model.input_shape.clone().ok_or_else(|| {
        bad_data(format!(
            "spec {}: [model] needs input_shape, the shape of one sample the PyTorch model reads (e.g. [28, 28])",
            spec_path.display()
        ))
    })?;
    let preprocessing = match spec.preprocessing.normalization {
        Normalization::None => FittedNormalization::None,
        Normalization::Scale { max } => FittedNormalization::Scale { max },
        fitted @ (Normalization::ZScore | Normalization::MinMax) => {
            let kind = match fitted {
                Normalization::ZScore => "z_score",
                _ => "min_max",
            };
            return Err(bad_data(format!(
                "spec {}: preprocessing.normalization {kind} is fitted to kiln's training split, but the PyTorch \
                 model was trained on its own statistics: use none or {{ kind = \"scale\", max = … }}",
                spec_path.display()
            )));
        }
    };
    let (model, notes) =
        kiln::nn::import_state_dict(state, &input_shape, spec.model.layers.clone(), &spec.model.names)?;
    let name = spec.name.clone().unwrap_or_else(|| "imported".into());
    let mut info = ModelInfo::for_model(&name, &model);
    info.preprocessing = preprocessing;
    info.training = Some(spec.training.clone());
    info.data = Some(spec.data.without_folders());
    artifact::save(&model, &info, out)?;
    for note in notes {
        println!("{note}");
    }
    println!(
        "imported {} as {name}: {} parameters; wrote {}",
        state.display(),
        model.params.iter().map(|p| p.value.numel()).sum::<usize>(),
        out.display()
    );
    Ok(())
}

fn import_gpt2(source: &Path, out: &Path) -> Result<()> {
    let start = Instant::now();
    let model = kiln::artifact::import_gpt2(source)?;
    let read = start.elapsed().as_secs_f64();
    save_language_model(&model, out)?;
    let c = model.gpt.config();
    println!(
        "imported {}: a GPT of {} layers, {} heads, width {}, context {}, vocabulary {} ({} parameters) in {read:.2}s; wrote {}",
        source.display(),
        c.layers,
        c.heads,
        c.width,
        c.context,
        model.gpt.vocab_size(),
        c.parameter_count(model.gpt.vocab_size()),
        out.display()
    );
    Ok(())
}
