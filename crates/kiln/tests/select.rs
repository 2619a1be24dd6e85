//! Model selection end to end on the embedded digits: cross-validation, a search, and a
//! bagged ensemble whose saved file predicts what its members average to.

use std::path::Path;

use kiln::artifact::Classifier;
use kiln::data::Stage;
use kiln::nn::Predict;
use kiln::pipeline::{prepare_for_model, RunOptions};
use kiln::select::{self, SearchSpace, Strategy};
use kiln::spec::{Spec, TrainSpec};

fn digits_spec(epochs: usize) -> TrainSpec {
    let mut spec = TrainSpec::default_digits();
    spec.training.epochs = epochs;
    spec
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap()
}

#[test]
fn an_ensemble_predicts_its_members_average_and_survives_saving() {
    let spec = digits_spec(3);
    let mut seen = Vec::new();
    let mut outcome = select::train_ensemble(&spec, 3, &RunOptions::default(), &mut |m, run| {
        seen.push((m, run.test.accuracy))
    })
    .unwrap();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2]);
    let test = spec.data.load(spec.training.seed, None).unwrap().test;
    let test = prepare_for_model(&outcome.info, test, Stage::Evaluate).unwrap();
    let n = test.len();
    let ensemble = outcome.model.predict(&test.features, n).unwrap();
    // Each member alone, by saving and reloading it without the others.
    let dir = std::env::temp_dir().join(format!("kiln-select-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bag.safetensors");
    kiln::artifact::save(&outcome.model, &outcome.info, &path).unwrap();
    let mut reloaded = kiln::artifact::load(&path).unwrap();
    assert_eq!(reloaded.model.ensemble().unwrap().members().len(), 3);
    let again = reloaded.model.predict(&test.features, n).unwrap();
    assert_eq!(
        again.data(),
        ensemble.data(),
        "the saved ensemble predicts the same"
    );
    let Classifier::Ensemble(reloaded) = reloaded.model else {
        panic!("an ensemble loads as an ensemble")
    };
    let mut members = reloaded.into_members();
    let mut sum = vec![0.0; n * 10];
    let mut accuracies = vec![];
    let acc = |probs: &[f32]| {
        probs
            .chunks(10)
            .zip(&test.labels)
            .filter(|(p, &l)| argmax(p) == l as usize)
            .count() as f32
            / n as f32
    };
    for m in &mut members {
        let p = m.predict(&test.features, n).unwrap();
        accuracies.push(acc(p.data()));
        sum.iter_mut().zip(p.data()).for_each(|(s, v)| *s += v);
    }
    let mean: Vec<f32> = sum.iter().map(|s| s / 3.0).collect();
    for (a, b) in mean.iter().zip(ensemble.data()) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    let member_accuracy: Vec<f32> = outcome.members.iter().map(|e| e.accuracy).collect();
    for (a, b) in accuracies.iter().zip(&member_accuracy) {
        assert!((a - b).abs() < 1e-6, "member accuracy {a} vs {b} reported");
    }
    assert!((acc(&mean) - outcome.test.accuracy).abs() < 1e-6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cross_validation_reports_every_fold_and_their_spread() {
    let spec = digits_spec(2);
    let mut folds = Vec::new();
    let cv = select::cross_validate(&spec, 4, &RunOptions::default(), &mut |f| folds.push(f.fold)).unwrap();
    assert_eq!(folds, [1, 2, 3, 4]);
    let held_out: usize = cv.folds.iter().map(|f| f.held_out_samples).sum();
    let pool = spec.data.load(spec.training.seed, None).unwrap().train.len();
    assert_eq!(held_out, pool, "every training sample is held out exactly once");
    let accs: Vec<f64> = cv.folds.iter().map(|f| f64::from(f.accuracy)).collect();
    assert_eq!(cv.accuracy, select::mean_std(&accs));
    assert!(cv.accuracy.0 > 0.8 && cv.accuracy.1 > 0.0, "{:?}", cv.accuracy);
}

/// Every point of the grid `space` (TOML text), scored by validation accuracy.
fn grid_search(
    spec: &TrainSpec,
    space: &str,
    on_trial: &mut dyn FnMut(&select::TrialOutcome),
) -> Vec<select::TrialOutcome> {
    let space = SearchSpace::parse(space, Path::new("space.toml")).unwrap();
    let trials = space.trials(Strategy::Grid, None, 0).unwrap();
    select::tune(
        &Spec::Sequential(spec.clone()),
        &space,
        &trials,
        select::Scoring::Validation,
        &RunOptions::default(),
        on_trial,
    )
    .unwrap()
}

#[test]
fn a_search_runs_the_baseline_and_each_trial_best_first() {
    let spec = digits_spec(2);
    let mut order = Vec::new();
    let results = grid_search(
        &spec,
        r#""training.optimizer.learning_rate" = [0.0001, 0.01]"#,
        &mut |t| order.push(t.index),
    );
    assert_eq!(order, [0, 1, 2]);
    assert!(results.windows(2).all(|w| w[0].accuracy >= w[1].accuracy));
    // Two epochs at 1e-4 learn far less than at 1e-2.
    let by_index = |i: usize| results.iter().find(|r| r.index == i).unwrap();
    assert!(by_index(2).accuracy > by_index(1).accuracy + 0.1);
    let Spec::Sequential(best) = &by_index(2).spec else {
        panic!("a layer-stack trial")
    };
    assert_eq!(best.training.optimizer.learning_rate(), 0.01);
}

#[test]
fn a_trial_that_fails_is_recorded_and_ranked_last_not_fatal() {
    let spec = digits_spec(2);
    // Three output units cannot classify ten digits: that trial fails when it trains.
    let results = grid_search(&spec, r#""model.layers[3].units" = [3, 10]"#, &mut |_| {});
    let last = results.last().unwrap();
    assert_eq!(last.index, 1, "the failed trial ranks last");
    assert!(
        last.error.as_deref().is_some_and(|e| e.contains("3")),
        "{:?}",
        last.error
    );
    assert!(last.accuracy.is_nan());
    assert!(results[0].error.is_none() && results[0].accuracy > 0.5);
}

/// A language model's learning rate searched, each trial scored by its validation loss
/// (lowest first).
#[test]
fn a_language_model_is_tuned_by_validation_loss() {
    let dir = std::env::temp_dir().join(format!("kiln-tune-lm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("text.txt"),
        "to be or not to be, that is the question.\n".repeat(40),
    )
    .unwrap();
    let spec_path = dir.join("lm.toml");
    std::fs::write(
        &spec_path,
        r#"
[data]
path = "text.txt"
[model]
type = "gpt"
layers = 1
heads = 2
width = 16
context = 16
[training]
steps = 40
batch_size = 8
eval_interval = 40
eval_batches = 4
optimizer = { type = "adam", learning_rate = 0.01 }
"#,
    )
    .unwrap();
    let spec = Spec::from_file(&spec_path).unwrap();
    let space = SearchSpace::parse(
        r#""training.optimizer.learning_rate" = [0.00001, 0.003]
"model.dropout" = [0.0]"#,
        Path::new("space.toml"),
    )
    .unwrap();
    let trials = space.trials(Strategy::Grid, None, 0).unwrap();
    let results = select::tune(
        &spec,
        &space,
        &trials,
        select::Scoring::Validation,
        &RunOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(results.len(), 3);
    assert!(
        results.windows(2).all(|w| w[0].loss <= w[1].loss),
        "lowest loss first"
    );
    let learning_rate = |t: &select::TrialOutcome| match &t.spec {
        Spec::Gpt(s) => s.training.optimizer.learning_rate(),
        Spec::Sequential(_) => panic!("a language-model trial"),
    };
    assert_eq!(
        learning_rate(results.last().unwrap()),
        0.00001,
        "barely trains in 40 steps"
    );
    let err = select::tune(
        &spec,
        &space,
        &trials,
        select::Scoring::CrossValidation(3),
        &RunOptions::default(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--folds"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
