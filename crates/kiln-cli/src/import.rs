//! `kiln import`: models trained elsewhere, as kiln model files.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use clap::ValueEnum;
use kiln::artifact::save_language_model;

use crate::run_dirs::check_writable;

/// What `kiln import` reads.
#[derive(Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// A Hugging Face GPT-2 checkpoint folder: config.json, model.safetensors, vocab.json,
    /// merges.txt.
    Gpt2,
}

pub fn import(format: ImportFormat, source: &Path, out: &Path) -> Result<()> {
    check_writable("--out", out)?;
    let start = Instant::now();
    let model = match format {
        ImportFormat::Gpt2 => kiln::lm::import_gpt2(source)?,
    };
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
