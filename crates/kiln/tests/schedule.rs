//! Learning-rate schedules drive the optimizer through `fit`, and the History records the
//! rate at each epoch's end.

use kiln::nn::Sequential;
use kiln::optim::Schedule;
use kiln::pipeline::{self, RunOptions};
use kiln::spec::TrainSpec;

fn quiet() -> RunOptions<'static> {
    RunOptions {
        data_dir: None,
        verbose: false,
        ..Default::default()
    }
}

#[test]
fn a_zero_rate_schedule_leaves_the_weights_untouched() {
    let mut spec = TrainSpec::default_digits();
    spec.training.epochs = 2;
    spec.training.learning_rate_schedule = Some(Schedule::PiecewiseConstant {
        boundaries: vec![],
        values: vec![0.0],
    });
    let trained = pipeline::train(&spec, &quiet()).unwrap();
    let initial = Sequential::new(&[8, 8], spec.model.layers.clone(), spec.training.seed).unwrap();
    for (a, b) in trained.model.params.iter().zip(initial.params.iter()) {
        assert_eq!(
            a.value.data(),
            b.value.data(),
            "{} moved with a zero learning rate",
            a.name
        );
    }
}

#[test]
fn history_records_the_scheduled_rate_at_each_epoch_end() {
    let schedule = Schedule::ExponentialDecay {
        initial_learning_rate: 0.01,
        decay_steps: 20,
        decay_rate: 0.5,
        staircase: false,
    };
    let mut spec = TrainSpec::default_digits();
    spec.training.epochs = 3;
    spec.training.learning_rate_schedule = Some(schedule.clone());
    let trained = pipeline::train(&spec, &quiet()).unwrap();
    // Updates per epoch: the training part left after the test and validation splits.
    let splits = spec.data.load(spec.training.seed, None).unwrap();
    let (train, _) = splits.train.split_tail(spec.training.validation_split).unwrap();
    let steps = train.len().div_ceil(spec.training.batch_size) as u64;
    for (i, epoch) in trained.history.epochs.iter().enumerate() {
        let expected = schedule.learning_rate(steps * (i as u64 + 1));
        assert_eq!(epoch.learning_rate, expected, "epoch {}", i + 1);
    }
    assert!(trained.history.epochs[2].learning_rate < trained.history.epochs[0].learning_rate);
    assert!(trained.test.accuracy > 0.9, "{}", trained.test.accuracy);
}

#[test]
fn a_spec_selects_a_schedule_and_rejects_bad_settings() {
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/spec/default_spec.toml")).unwrap();
    let with = |extra: &str| base.replace("[training]\n", &format!("[training]\n{extra}\n"));
    let spec = TrainSpec::parse(
        &with("learning_rate_schedule = { type = \"cosine_decay\", initial_learning_rate = 0.0, warmup_target = 0.002, warmup_steps = 40, decay_steps = 1000 }"),
        "s.toml".as_ref(),
    )
    .unwrap();
    assert!(matches!(
        spec.training.learning_rate_schedule,
        Some(Schedule::CosineDecay { warmup_steps: 40, .. })
    ));
    let err = TrainSpec::parse(
        &with("learning_rate_schedule = { type = \"exponential_decay\", initial_learning_rate = 0.1, decay_steps = 0, decay_rate = 0.5 }"),
        "s.toml".as_ref(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spec s.toml: training.learning_rate_schedule.decay_steps = 0: expected at least 1"),
        "{err}"
    );
    let err = TrainSpec::parse(
        &with("learning_rate_schedule = { type = \"cosine\" }"),
        "s.toml".as_ref(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown variant `cosine`"), "{err}");
}
