//! Callbacks with Keras semantics: early stopping (and restoring the best weights),
//! reducing the learning rate on a plateau, and CSV logging — on scripted epoch logs, and
//! through a real training run configured in a spec.

use kiln::nn::{Model, Sequential};
use kiln::pipeline::{self, RunOptions};
use kiln::spec::TrainSpec;
use kiln::train::{Callback, Control, CsvLogger, EarlyStopping, EpochLog, FitState};

fn log(epoch: usize, val_loss: f32) -> EpochLog {
    EpochLog {
        epoch,
        loss: 1.0,
        accuracy: 0.5,
        val_loss: Some(val_loss),
        val_accuracy: Some(0.5),
        seconds: 0.0,
        train_seconds: 0.0,
        learning_rate: 0.1,
        skipped_batches: 0,
        communication_seconds: 0.0,
        step: None,
    }
}

fn tiny_model() -> Sequential {
    let layers = serde_json::from_str(r#"[{"type": "dense", "units": 2}]"#).unwrap();
    Sequential::new(&[3], layers, 0).unwrap()
}

/// Marks the model's weights with the epoch number, so restored weights say where they came from.
fn stamp(model: &mut dyn Model, epoch: usize) {
    let marked: Vec<_> = model
        .weights()
        .into_iter()
        .map(|mut w| {
            w.data_mut().fill(epoch as f32);
            w
        })
        .collect();
    model.set_weights(&marked).unwrap();
}

#[test]
fn early_stopping_waits_patience_epochs_and_restores_the_best() {
    let mut model = tiny_model();
    let mut state = FitState::with_learning_rate(&mut model, 0.1);
    let mut stop = EarlyStopping::new("val_loss", 2, true);
    stop.on_train_begin(&mut state).unwrap();
    let losses = [1.0, 0.8, 0.9, 0.85, 0.7];
    let mut stopped_at = None;
    for (i, &l) in losses.iter().enumerate() {
        stamp(state.model, i + 1);
        if stop.on_epoch_end(&log(i + 1, l), &mut state).unwrap() == Control::Stop {
            stopped_at = Some(i + 1);
            break;
        }
    }
    // Best at epoch 2; epochs 3 and 4 do not improve: stop after epoch 4 (patience 2).
    assert_eq!(stopped_at, Some(4));
    assert_eq!((stop.best_epoch(), stop.stopped_epoch()), (Some(2), Some(4)));
    // As in Keras 3, the best weights come back when training ends, so callbacks after
    // this one in the stopping epoch still see (and checkpoint) that epoch's weights.
    assert!(state
        .model
        .weights()
        .iter()
        .all(|w| w.data().iter().all(|&v| v == 4.0)));
    stop.on_train_end(&mut state).unwrap();
    assert!(
        state
            .model
            .weights()
            .iter()
            .all(|w| w.data().iter().all(|&v| v == 2.0)),
        "weights of epoch 2 restored"
    );
}

#[test]
fn early_stopping_restores_the_best_weights_even_without_stopping() {
    let mut model = tiny_model();
    let mut state = FitState::with_learning_rate(&mut model, 0.1);
    let mut stop = EarlyStopping::new("val_loss", 5, true);
    stop.on_train_begin(&mut state).unwrap();
    for (i, &l) in [1.0, 0.5, 0.7].iter().enumerate() {
        stamp(state.model, i + 1);
        assert_eq!(
            stop.on_epoch_end(&log(i + 1, l), &mut state).unwrap(),
            Control::Continue
        );
    }
    stop.on_train_end(&mut state).unwrap();
    assert!(state
        .model
        .weights()
        .iter()
        .all(|w| w.data().iter().all(|&v| v == 2.0)));
}

#[test]
fn min_delta_and_max_mode_follow_keras() {
    let mut model = tiny_model();
    let mut state = FitState::with_learning_rate(&mut model, 0.1);
    // An improvement smaller than min_delta counts as none.
    let mut stop: EarlyStopping =
        serde_json::from_str(r#"{"monitor": "val_loss", "patience": 1, "min_delta": 0.1}"#).unwrap();
    stop.on_train_begin(&mut state).unwrap();
    assert_eq!(
        stop.on_epoch_end(&log(1, 1.0), &mut state).unwrap(),
        Control::Continue
    );
    assert_eq!(
        stop.on_epoch_end(&log(2, 0.95), &mut state).unwrap(),
        Control::Stop
    );
    // Accuracy is watched with higher-is-better.
    let mut stop: EarlyStopping = serde_json::from_str(r#"{"monitor": "accuracy", "patience": 1}"#).unwrap();
    stop.on_train_begin(&mut state).unwrap();
    let acc = |epoch, a| EpochLog {
        accuracy: a,
        ..log(epoch, 1.0)
    };
    assert_eq!(
        stop.on_epoch_end(&acc(1, 0.5), &mut state).unwrap(),
        Control::Continue
    );
    assert_eq!(
        stop.on_epoch_end(&acc(2, 0.6), &mut state).unwrap(),
        Control::Continue
    );
    assert_eq!(
        stop.on_epoch_end(&acc(3, 0.55), &mut state).unwrap(),
        Control::Stop
    );
}

#[test]
fn reduce_lr_on_plateau_scales_after_patience_then_cools_down() {
    let mut model = tiny_model();
    let mut state = FitState::with_learning_rate(&mut model, 0.1);
    let mut plateau: kiln::train::ReduceLrOnPlateau =
        serde_json::from_str(r#"{"patience": 2, "factor": 0.5, "cooldown": 1, "min_lr": 0.02}"#).unwrap();
    plateau.on_train_begin(&mut state).unwrap();
    let mut rates = vec![];
    for (i, l) in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0].iter().enumerate() {
        plateau.on_epoch_end(&log(i + 1, *l), &mut state).unwrap();
        rates.push(state.learning_rate());
    }
    // Keras's order within an epoch: a cooldown epoch first counts the cooldown down (and
    // resets wait), then, no longer in cooldown, already counts towards patience.
    // Epoch 1 sets the best; 2, 3 wait → halve after 3; 4 ends the cooldown and waits;
    // 5 → halve (0.025); 6 ends the cooldown and waits; 7 → max(0.0125, min_lr 0.02).
    let expected = [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02];
    for (r, e) in rates.iter().zip(expected) {
        assert!((r - e).abs() < 1e-7, "{rates:?}");
    }
}

#[test]
fn csv_logger_writes_keras_columns() {
    let path = std::env::temp_dir().join(format!("kiln-csv-{}.csv", std::process::id()));
    let mut model = tiny_model();
    let mut state = FitState::with_learning_rate(&mut model, 0.1);
    let mut logger = CsvLogger::new(&path, false);
    logger.on_train_begin(&mut state).unwrap();
    logger.on_epoch_end(&log(1, 0.75), &mut state).unwrap();
    logger.on_epoch_end(&log(2, 0.5), &mut state).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        text,
        "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n0,0.5,0.1,1,0.5,0.75\n1,0.5,0.1,1,0.5,0.5\n"
    );
}

#[test]
fn a_spec_with_early_stopping_and_cosine_warmup_stops_and_keeps_the_best_epoch() {
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/spec/default_spec.toml")).unwrap();
    let text = base.replace("epochs = 30", "epochs = 300").replace(
        "[training]\n",
        "[training]\nlearning_rate_schedule = { type = \"cosine_decay\", initial_learning_rate = 0.0, \
         warmup_target = 0.002, warmup_steps = 82, decay_steps = 12000 }\n\
         callbacks = [{ type = \"early_stopping\", patience = 2, restore_best_weights = true }]\n",
    );
    let spec = TrainSpec::parse(&text, "es.toml".as_ref()).unwrap();
    let mut trained = pipeline::train(
        &spec,
        &RunOptions {
            data_dir: None,
            verbose: false,
            ..Default::default()
        },
    )
    .unwrap();
    let epochs = trained.history.epochs.len();
    assert!(epochs < 300, "training should stop early");
    let (best_epoch, best) = trained
        .history
        .epochs
        .iter()
        .map(|e| (e.epoch, e.val_loss.unwrap()))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    // Stopped exactly `patience` epochs after the best one...
    assert_eq!(epochs, best_epoch + 2);
    // ...and the model holds the best epoch's weights: re-evaluating gives its val_loss exactly.
    let splits = spec.data.load(spec.training.seed, None).unwrap();
    let (_, mut validation) = splits.train.split_tail(spec.training.validation_split).unwrap();
    let size = validation.sample_size();
    trained
        .info
        .preprocessing
        .apply(&mut validation.features, size)
        .unwrap();
    let again = trained.evaluate(&validation).unwrap();
    assert_eq!(again.loss, best, "weights of epoch {best_epoch} expected");
    let err = TrainSpec::parse(
        &base.replace(
            "[training]\n",
            "[training]\ncallbacks = [{ type = \"early_stopping\", monitor = \"val_acc\" }]\n",
        ),
        "es.toml".as_ref(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("training.callbacks[0]: monitor = `val_acc`: expected a logged value"),
        "{err}"
    );
}

#[test]
fn a_validation_monitor_without_validation_data_is_refused_before_training() {
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/spec/default_spec.toml")).unwrap();
    let text = base.replace("validation_split = 0.1", "validation_split = 0.0").replace(
        "[training]\n",
        "[training]\ncallbacks = [{ type = \"csv_logger\", filename = \"/dev/null\" }, { type = \"early_stopping\", patience = 2 }]\n",
    );
    let spec = TrainSpec::parse(&text, "es.toml".as_ref()).unwrap();
    let err = pipeline::train(&spec, &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("training.callbacks[1].monitor = \"val_loss\": expected a value this run logs")
            && err.contains("needs validation data")
            && err.contains("\"loss\""),
        "{err}"
    );
}
