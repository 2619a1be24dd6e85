//! `kiln compress` on a language model: int8 weights for its blocks' linear layers, with
//! what that changed measured (file size, validation loss, generation speed).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use kiln::artifact::{load_language_model, save_quantized_language_model, LanguageModel, LmCompression};
use kiln::lm::generate::{generate_with, Sampling};
use kiln::lm::int8::Int8Weights;
use kiln::quant::QuantMode;

use crate::compress::{CompressArgs, Quantize};
use crate::exit_code;
use crate::lm::score;

/// Tokens generated (greedy, after a one-token prompt) to time a single stream.
const TIMED_TOKENS: usize = 200;

pub fn compress(args: &CompressArgs) -> Result<()> {
    let plain_int8 = matches!(args.quantize, Some(Quantize::Int8(QuantMode::Static)));
    if !plain_int8 || args.prune.is_some() || args.structured || args.global || args.finetune_epochs > 0 {
        return Err(exit_code::usage(format!(
            "{}: a language model takes `--quantize int8` alone (int8 weights, float activations); \
             pruning, `dynamic` and f16/bf16 storage are for classifiers",
            args.model.display()
        )));
    }
    let mut model = load_language_model(args.model)?;
    if model.int8.is_some() {
        return Err(exit_code::bad_data(format!(
            "{}: is already int8; compress its float source instead",
            args.model.display()
        )));
    }
    let before = measure(args.model, &mut model)?;
    let weights = Int8Weights::quantize(&model.gpt);
    weights.apply_to(&mut model.gpt);
    model.int8 = Some(weights);
    let source = args.model.file_name().map_or_else(
        || args.model.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let compression = LmCompression {
        mode: "int8_weights".into(),
        source,
    };
    save_quantized_language_model(&model, &compression, args.out)?;
    let mut saved = load_language_model(args.out)?;
    let after = measure(args.out, &mut saved)?;
    print_table(&before, &after);
    Ok(())
}

struct Figures {
    file_bytes: u64,
    /// None for a model with no training text of its own (an imported one).
    validation_loss: Option<f32>,
    tokens_per_s: f64,
}

fn measure(path: &Path, model: &mut LanguageModel) -> Result<Figures> {
    let file_bytes = std::fs::metadata(path)?.len();
    // A model without its training text (imported, or the text moved) is still
    // compressed; the table says what could not be measured.
    let validation_loss = match model.info.imported_from {
        Some(_) => None,
        None => match score(path, model, None, None) {
            Ok(score) => Some(score.loss),
            Err(e) => {
                eprintln!("note: {}: validation loss not measured: {e:#}", path.display());
                None
            }
        },
    };
    let kernels = model.decode_kernels();
    let greedy = Sampling {
        temperature: 0.0,
        top_k: None,
        top_p: None,
        seed: 0,
    };
    let start = Instant::now();
    generate_with(
        &model.gpt,
        kernels.as_ref(),
        &[0],
        TIMED_TOKENS,
        &greedy,
        true,
        &mut |_| {},
    )?;
    Ok(Figures {
        file_bytes,
        validation_loss,
        tokens_per_s: TIMED_TOKENS as f64 / start.elapsed().as_secs_f64(),
    })
}

fn print_table(before: &Figures, after: &Figures) {
    println!("{:<28} {:>14} {:>14}", "", "float", "int8 weights");
    println!(
        "{:<28} {:>14} {:>14}  ({:.2}x smaller)",
        "file bytes",
        before.file_bytes,
        after.file_bytes,
        before.file_bytes as f64 / after.file_bytes as f64
    );
    if let (Some(b), Some(a)) = (before.validation_loss, after.validation_loss) {
        println!(
            "{:<28} {:>14.4} {:>14.4}  ({:+.4})",
            "validation loss",
            b,
            a,
            a - b
        );
    }
    println!(
        "{:<28} {:>14.0} {:>14.0}  ({:.2}x)",
        "generation, tokens/s",
        before.tokens_per_s,
        after.tokens_per_s,
        after.tokens_per_s / before.tokens_per_s
    );
}
