//! `kiln cv`, `kiln tune` and `kiln ensemble`: model selection from a spec.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use kiln::io::csv_record;
use kiln::pipeline::RunOptions;
use kiln::select::{self, Scoring, SearchSpace, Strategy, TrialOutcome};
use kiln::spec::{Spec, TrainSpec};

use crate::exit_code;
use crate::run_dirs::check_writable;

/// The spec at `path`, or the built-in digits spec, with `--epochs` applied.
fn load_spec(path: Option<&Path>, epochs: Option<usize>) -> Result<TrainSpec> {
    let mut spec = match path {
        Some(p) => TrainSpec::from_file(p)?,
        None => TrainSpec::default_digits(),
    };
    if let Some(e) = epochs {
        ensure_usage!(e > 0, "--epochs must be at least 1");
        spec.training.epochs = e;
    }
    Ok(spec)
}

pub struct CvArgs<'a> {
    pub spec: Option<&'a Path>,
    pub folds: usize,
    pub epochs: Option<usize>,
    pub data_dir: Option<&'a Path>,
}

pub fn cv(args: &CvArgs) -> Result<()> {
    let spec = load_spec(args.spec, args.epochs)?;
    let options = RunOptions {
        data_dir: args.data_dir,
        ..Default::default()
    };
    println!(
        "{}: {}-fold stratified cross-validation of the training split ({} epochs each)",
        spec.name.as_deref().unwrap_or("model"),
        args.folds,
        spec.training.epochs
    );
    let outcome = select::cross_validate(&spec, args.folds, &options, &mut |f| {
        println!(
            "fold {}/{}: loss {:.4} - accuracy {:.4} - trained on {}, held out {} - {} epochs - {:.1}s",
            f.fold, args.folds, f.loss, f.accuracy, f.train_samples, f.held_out_samples, f.epochs, f.seconds
        );
    })?;
    println!(
        "accuracy: {:.4} ± {:.4} - loss: {:.4} ± {:.4} (mean ± std over {} folds)",
        outcome.accuracy.0, outcome.accuracy.1, outcome.loss.0, outcome.loss.1, args.folds
    );
    Ok(())
}

pub struct TuneArgs<'a> {
    pub spec: Option<&'a Path>,
    pub space: &'a Path,
    pub trials: Option<usize>,
    pub random: bool,
    pub folds: Option<usize>,
    pub out_dir: Option<&'a Path>,
    pub epochs: Option<usize>,
    pub data_dir: Option<&'a Path>,
}

/// The spec to tune: a layer-stack spec as [`load_spec`] reads it, or a language model's.
fn load_any_spec(path: Option<&Path>, epochs: Option<usize>) -> Result<Spec> {
    match path.map(Spec::from_file).transpose()? {
        Some(Spec::Gpt(s)) => {
            ensure_usage!(
                epochs.is_none(),
                "--epochs is for layer-stack specs; a language model trains the spec's `steps`"
            );
            Ok(Spec::Gpt(s))
        }
        _ => load_spec(path, epochs).map(Spec::Sequential),
    }
}

pub fn tune(args: &TuneArgs) -> Result<()> {
    let spec = load_any_spec(args.spec, args.epochs)?;
    let space = SearchSpace::from_file(args.space)?;
    space.check_against(&spec)?;
    let strategy = match args.random || space.grid_size().is_none() {
        true => Strategy::Random,
        false => Strategy::Grid,
    };
    if let Some(0) = args.trials {
        return Err(crate::exit_code::usage("--trials must be at least 1"));
    }
    let trials = space.trials(strategy, args.trials, spec.seed())?;
    let scoring = match args.folds {
        Some(k) => Scoring::CrossValidation(k),
        None => Scoring::Validation,
    };
    let name = spec.name().unwrap_or("model").to_string();
    let by_loss = matches!(spec, Spec::Gpt(_));
    let measure = match (by_loss, scoring) {
        (true, _) => "validation loss".to_string(),
        (false, Scoring::Validation) => "validation accuracy".to_string(),
        (false, Scoring::CrossValidation(k)) => format!("{k}-fold cross-validated accuracy"),
    };
    let out_dir = args
        .out_dir
        .map_or_else(|| PathBuf::from(format!("tune-{name}")), Path::to_path_buf);
    std::fs::create_dir_all(&out_dir).map_err(|e| exit_code::output(&out_dir, e))?;
    let (csv_path, best_path) = (out_dir.join("trials.csv"), out_dir.join("best.toml"));
    for p in [&csv_path, &best_path] {
        check_writable("--out-dir", p)?;
    }
    let keys: Vec<&str> = space.dimensions.iter().map(|(k, ..)| k.as_str()).collect();
    println!(
        "{name}: {} search, {} trials plus the baseline, scored by {}",
        match strategy {
            Strategy::Grid => format!("grid ({} points)", space.grid_size().unwrap_or(0)),
            Strategy::Random => "random".to_string(),
        },
        trials.len(),
        measure
    );
    let options = RunOptions {
        data_dir: args.data_dir,
        ..Default::default()
    };
    let results = select::tune(&spec, &space, &trials, scoring, &options, &mut |t| {
        println!("{} - {:.1}s", describe_trial(t, &keys), t.seconds);
    })?;
    println!("\n{}", results_table(&results, &keys));
    std::fs::write(&csv_path, results_csv(&results, &keys)).map_err(|e| exit_code::output(&csv_path, e))?;
    let best = &results[0];
    let baseline = results.iter().find(|r| r.index == 0).expect("the baseline ran");
    // Data paths made absolute, so the spec trains from wherever it is written.
    let mut best_spec = best.spec.clone();
    best_spec.make_paths_absolute()?;
    best_spec.set_name(format!("{name}-tuned"));
    let (figure, best_score, baseline_score) = match by_loss {
        true => ("loss", best.loss, baseline.loss),
        false => ("accuracy", best.accuracy, baseline.accuracy),
    };
    let header = format!(
        "# Written by `kiln tune`: the best of {} trials by {measure}.\n# {figure} {best_score:.4} (the spec as given: {baseline_score:.4})\n",
        results.len(),
    );
    let toml = best_spec.to_toml()?;
    std::fs::write(&best_path, header + &toml).map_err(|e| exit_code::output(&best_path, e))?;
    println!(
        "best: {} {figure} {best_score:.4} vs {baseline_score:.4} for the spec as given\nwrote {} and {}",
        trial_name(best),
        csv_path.display(),
        best_path.display()
    );
    Ok(())
}

fn trial_name(t: &TrialOutcome) -> String {
    match t.index {
        0 => "baseline".into(),
        i => format!("trial {i}"),
    }
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn describe_trial(t: &TrialOutcome, keys: &[&str]) -> String {
    let settings: Vec<String> = keys
        .iter()
        .zip(&t.values)
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect();
    if let Some(e) = &t.error {
        return format!("{:<9} failed: {e} - {}", trial_name(t), settings.join(" "));
    }
    let spread = t.accuracy_std.map_or(String::new(), |s| format!(" ± {s:.4}"));
    format!(
        "{:<9} accuracy {:.4}{spread} - loss {:.4} - {}",
        trial_name(t),
        t.accuracy,
        t.loss,
        settings.join(" ")
    )
}

/// Rank, trial, accuracy, loss, then one column per key; best first.
fn results_table(results: &[TrialOutcome], keys: &[&str]) -> String {
    let mut rows: Vec<Vec<String>> = vec![["rank", "trial", "accuracy", "loss"]
        .iter()
        .map(|s| s.to_string())
        .chain(keys.iter().map(|k| k.to_string()))
        .collect()];
    for (rank, t) in results.iter().enumerate() {
        let accuracy = match (t.accuracy_std, &t.error) {
            (_, Some(_)) => "failed".to_string(),
            (Some(s), None) => format!("{:.4} ± {s:.4}", t.accuracy),
            (None, None) => format!("{:.4}", t.accuracy),
        };
        rows.push(
            [
                (rank + 1).to_string(),
                trial_name(t),
                accuracy,
                format!("{:.4}", t.loss),
            ]
            .into_iter()
            .chain(t.values.iter().map(value_text))
            .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn results_csv(results: &[TrialOutcome], keys: &[&str]) -> String {
    let columns = [
        "rank",
        "trial",
        "accuracy",
        "accuracy_std",
        "loss",
        "seconds",
        "error",
    ];
    let header: Vec<&str> = columns.iter().chain(keys).copied().collect();
    let mut out = csv_record(&header);
    for (rank, t) in results.iter().enumerate() {
        let mut cells = vec![
            (rank + 1).to_string(),
            t.index.to_string(),
            t.accuracy.to_string(),
            t.accuracy_std.map_or(String::new(), |s| s.to_string()),
            t.loss.to_string(),
            format!("{:.3}", t.seconds),
            t.error.clone().unwrap_or_default(),
        ];
        cells.extend(t.values.iter().map(value_text));
        out += &csv_record(&cells);
    }
    out
}

pub struct EnsembleArgs<'a> {
    pub spec: Option<&'a Path>,
    pub members: usize,
    pub out: &'a Path,
    pub epochs: Option<usize>,
    pub data_dir: Option<&'a Path>,
}

pub fn ensemble(args: &EnsembleArgs) -> Result<()> {
    let spec = load_spec(args.spec, args.epochs)?;
    check_writable("--out", args.out)?;
    let options = RunOptions {
        data_dir: args.data_dir,
        ..Default::default()
    };
    println!(
        "{}: bagging {} members, each on a bootstrap sample of the training split",
        spec.name.as_deref().unwrap_or("model"),
        args.members
    );
    let outcome = select::train_ensemble(&spec, args.members, &options, &mut |m, run| {
        println!(
            "member {}/{}: test_loss {:.4} - test_accuracy {:.4} - {} epochs",
            m + 1,
            args.members,
            run.test.loss,
            run.test.accuracy,
            run.history.epochs.len()
        );
    })?;
    let best = outcome
        .members
        .iter()
        .map(|e| e.accuracy)
        .fold(f32::MIN, f32::max);
    let mean = outcome.members.iter().map(|e| e.accuracy).sum::<f32>() / outcome.members.len() as f32;
    println!(
        "ensemble: test_loss {:.4} - test_accuracy {:.4} (members: best {best:.4}, mean {mean:.4})",
        outcome.test.loss, outcome.test.accuracy
    );
    kiln::artifact::save(&outcome.model, &outcome.info, args.out)?;
    println!("saved {}", args.out.display());
    Ok(())
}
