//! `kiln eval` and `kiln predict` on a layer-stack model: test-split metrics, the
//! classification report and confusion matrix, predictions for new samples.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use kiln::metrics::argmax;
use kiln::{artifact, metrics, pipeline};

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
        ensure_usage!(
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
    ensure_usage!(
        width == 1 || args.threshold.is_none(),
        "--threshold applies to one-unit (binary) models; {} has {width} outputs and predicts the largest",
        args.model.display()
    );
    let threshold = args.threshold.unwrap_or(0.5);
    let (predicted, num_classes) = if width == 1 {
        let p = one_unit_probabilities(scores.data(), from_logits);
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
    let predicted = predicted_classes(&probs, a.info.training().is_ok_and(|t| t.from_logits));
    let classes = &a.info.classes;
    let class_name = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let rows: Vec<_> = probs
            .data()
            .chunks_exact(width)
            .zip(&predicted)
            .enumerate()
            .map(|(i, (p, &c))| serde_json::json!({ "row": i, "class": class_name(c), "probabilities": p }))
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        // A one-unit model's output is class 1's probability.
        let header: Vec<String> = match width {
            1 => vec![format!("p_{}", class_name(1))],
            _ => (0..width).map(|j| format!("p_{}", class_name(j))).collect(),
        };
        writeln!(out, "row,class,{}", header.join(","))?;
        for (i, (p, &c)) in probs.data().chunks_exact(width).zip(&predicted).enumerate() {
            let ps: Vec<String> = p.iter().map(|v| format!("{v:.6}")).collect();
            writeln!(out, "{i},{},{}", class_name(c), ps.join(","))?;
        }
    }
    out.flush().context("writing predictions")?;
    Ok(())
}

/// Each row's class: the largest output, or for a one-unit (binary) model class 1 where its
/// probability (the sigmoid of a logit output) is above 0.5, as `kiln eval` counts it.
fn predicted_classes(outputs: &kiln::Tensor, from_logits: bool) -> Vec<usize> {
    let width = outputs.dims()[1];
    if width != 1 {
        return outputs.data().chunks_exact(width).map(argmax).collect();
    }
    let probabilities = one_unit_probabilities(outputs.data(), from_logits);
    metrics::binary_predictions(&probabilities, 0.5)
        .into_iter()
        .map(|c| c as usize)
        .collect()
}

/// A one-unit model's outputs as class 1's probabilities: as they are, or the sigmoid of
/// logits when the model ends without its sigmoid.
fn one_unit_probabilities(outputs: &[f32], from_logits: bool) -> Vec<f32> {
    match from_logits {
        true => outputs.iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect(),
        false => outputs.to_vec(),
    }
}
