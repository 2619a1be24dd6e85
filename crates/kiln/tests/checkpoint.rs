//! Checkpoint and resume: 6 epochs in one go equal 3 + resume + 3 bit for bit; a run
//! that diverges stops naming the epoch and step and keeps its last good checkpoint; a
//! flag skips non-finite batches instead.

use std::path::PathBuf;

mod common;
use common::{blobs, small_model};

use kiln::pipeline::{self, RunOptions, CHECKPOINT_FILE};
use kiln::spec::TrainSpec;
use kiln::train::{Checkpoint, CheckpointTarget, EpochLog, FitOptions};
use kiln::Error;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The digits MLP with dropout (so the generator's state matters), a warm-up + cosine
/// schedule (so the step count matters) and stateful callbacks.
fn resumable_spec(epochs: usize, csv: &std::path::Path) -> TrainSpec {
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/spec/default_spec.toml")).unwrap();
    let text = base.replace("epochs = 30", &format!("epochs = {epochs}")).replace(
        "[training]\n",
        &format!(
            "[training]\nlearning_rate_schedule = {{ type = \"cosine_decay\", initial_learning_rate = 0.0, \
             warmup_target = 0.002, warmup_steps = 60, decay_steps = 400 }}\n\
             callbacks = [\n  {{ type = \"early_stopping\", patience = 50, restore_best_weights = true }},\n  \
             {{ type = \"csv_logger\", filename = {:?} }},\n]\n",
            csv.display().to_string()
        ),
    );
    TrainSpec::parse(&text, "resume.toml".as_ref()).unwrap()
}

fn run(spec: &TrainSpec, dir: &std::path::Path, resume: bool) -> pipeline::TrainOutcome {
    pipeline::train(
        spec,
        &RunOptions {
            run_dir: Some(dir),
            checkpoints: true,
            resume,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The error message of a run expected to fail.
fn failure(spec: &TrainSpec, dir: &std::path::Path, resume: bool) -> String {
    let options = RunOptions {
        run_dir: Some(dir),
        checkpoints: true,
        resume,
        ..Default::default()
    };
    pipeline::train(spec, &options).unwrap_err().to_string()
}

/// Everything of an epoch's log but its timings.
fn without_timings(epochs: &[EpochLog]) -> Vec<EpochLog> {
    epochs
        .iter()
        .map(|e| EpochLog {
            seconds: 0.0,
            train_seconds: 0.0,
            ..e.clone()
        })
        .collect()
}

#[test]
fn resuming_gives_bit_identical_weights_history_and_logs() {
    let (one, split) = (temp_dir("one"), temp_dir("split"));
    let (csv_one, csv_split) = (one.with_extension("csv"), split.with_extension("csv"));
    let straight = run(&resumable_spec(6, &csv_one), &one, false);

    let first = run(&resumable_spec(3, &csv_split), &split, false);
    assert_eq!(first.history.epochs.len(), 3);
    let resumed = run(&resumable_spec(6, &csv_split), &split, true);
    assert_eq!(resumed.resumed_epochs, 3);

    for (a, b) in straight.model.params.iter().zip(resumed.model.params.iter()) {
        let bits = |t: &kiln::Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&a.value),
            bits(&b.value),
            "{} differs after resuming",
            a.name
        );
    }
    assert_eq!(
        without_timings(&straight.history.epochs),
        without_timings(&resumed.history.epochs)
    );
    assert_eq!(straight.test, resumed.test);
    // The CSV log of the resumed run holds each epoch once, as the straight run's does.
    assert_eq!(
        std::fs::read_to_string(&csv_one).unwrap(),
        std::fs::read_to_string(&csv_split).unwrap()
    );
    // The run folder's history holds all six epochs.
    let history: kiln::train::History =
        serde_json::from_str(&std::fs::read_to_string(split.join("history.json")).unwrap()).unwrap();
    assert_eq!(
        without_timings(&history.epochs),
        without_timings(&straight.history.epochs)
    );
    let csv_rows = std::fs::read_to_string(split.join("history.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(csv_rows, 7, "header and six epochs");

    // Asking for no more epochs than are done, or changing the spec, is refused by name.
    let err = failure(&resumable_spec(6, &csv_split), &split, true);
    assert!(err.contains("already holds 6 trained epochs of the 6"), "{err}");
    let mut other = resumable_spec(8, &csv_split);
    other.training.batch_size = 16;
    let err = failure(&other, &split, true);
    assert!(err.contains("different `spec.training.batch_size`"), "{err}");
    // A fresh run never overwrites a folder holding a checkpoint.
    let err = failure(&resumable_spec(6, &csv_split), &split, false);
    assert!(err.contains("already holds a training checkpoint"), "{err}");
    for d in [one, split] {
        std::fs::remove_dir_all(d).unwrap();
    }
    for f in [csv_one, csv_split] {
        std::fs::remove_file(f).unwrap();
    }
}

#[test]
fn a_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint() {
    let dir = temp_dir("diverge");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(CHECKPOINT_FILE);
    let context = serde_json::json!({});
    let options = FitOptions {
        epochs: 2,
        batch_size: 8,
        shuffle: false,
        checkpoint: Some(CheckpointTarget {
            path: &path,
            context: &context,
        }),
        ..Default::default()
    };
    let mut model = small_model(0.1);
    model
        .fit_with_callbacks(&blobs(64, &[]), &options, &mut [])
        .unwrap();
    let good = std::fs::read(&path).unwrap();

    // Sample 21 sits in the third batch of 8 (unshuffled).
    let err = model
        .resume_fit(
            &blobs(64, &[21]),
            &FitOptions { epochs: 4, ..options },
            &mut [],
            &Checkpoint::load(&path).unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Diverged {
                epoch: 3,
                step: 3,
                steps: 8,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("epoch 3, step 3 of 8"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "the checkpoint of epoch 2 is kept"
    );
    assert_eq!(Checkpoint::load(&path).unwrap().progress.epochs_done, 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_fit_refuses_other_training_settings_before_touching_anything() {
    let dir = temp_dir("settings");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(CHECKPOINT_FILE);
    let context = serde_json::json!({});
    let options = FitOptions {
        epochs: 1,
        batch_size: 8,
        checkpoint: Some(CheckpointTarget {
            path: &path,
            context: &context,
        }),
        ..Default::default()
    };
    small_model(0.1).fit(&blobs(32, &[]), &options).unwrap();
    let checkpoint = Checkpoint::load(&path).unwrap();
    let mut model = small_model(0.1);
    let before = model.weights();
    let other = FitOptions {
        epochs: 2,
        batch_size: 16,
        ..options
    };
    let err = model
        .resume_fit(&blobs(32, &[]), &other, &mut [], &checkpoint)
        .unwrap_err()
        .to_string();
    assert!(err.contains("different `batch_size`"), "{err}");
    let err = small_model(0.5)
        .resume_fit(
            &blobs(32, &[]),
            &FitOptions { epochs: 2, ..options },
            &mut [],
            &checkpoint,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("different `optimizer.learning_rate`"), "{err}");
    assert_eq!(model.weights(), before, "a refused resume changes nothing");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn skipping_non_finite_batches_trains_on_the_rest() {
    let options = FitOptions {
        epochs: 3,
        batch_size: 8,
        shuffle: false,
        skip_nonfinite_batches: true,
        ..Default::default()
    };
    let mut model = small_model(0.1);
    let history = model.fit(&blobs(64, &[5, 40]), &options).unwrap();
    for e in &history.epochs {
        assert_eq!(e.skipped_batches, 2, "batches 1 and 6 hold the NaN samples");
        assert!(e.loss.is_finite());
    }
    assert!(history.last().unwrap().accuracy > 0.9);
    assert!(model
        .weights()
        .iter()
        .all(|w| w.data().iter().all(|v| v.is_finite())));
    // Every batch poisoned: an error, not an empty epoch.
    let all: Vec<usize> = (0..64).step_by(8).collect();
    let err = small_model(0.1)
        .fit(&blobs(64, &all), &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("every one of its 8 batches"), "{err}");
}

#[test]
fn a_file_that_is_not_a_checkpoint_is_refused_by_name() {
    let dir = temp_dir("notckpt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("x.safetensors");
    std::fs::write(&path, b"garbage").unwrap();
    let err = Checkpoint::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("x.safetensors") && err.contains("not a safetensors file"),
        "{err}"
    );
    // A checkpoint from another format version is named, not misread.
    let context = serde_json::json!({});
    let options = FitOptions {
        checkpoint: Some(CheckpointTarget {
            path: &path,
            context: &context,
        }),
        ..Default::default()
    };
    small_model(0.1).fit(&blobs(16, &[]), &options).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (version, other) = (br#""format_version":"1""#, br#""format_version":"9""#);
    let at = bytes.windows(version.len()).position(|w| w == version).unwrap();
    let mut changed = bytes.clone();
    changed[at..at + version.len()].copy_from_slice(other);
    std::fs::write(&path, changed).unwrap();
    let err = Checkpoint::load(&path).unwrap_err().to_string();
    assert!(err.contains("checkpoint format version 9"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
