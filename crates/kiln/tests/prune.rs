//! Pruning a trained MLP: magnitude pruning during fine-tuning reaches exactly the target
//! sparsity, keeps the accuracy, and is stored sparsely (smaller file, same weights when
//! loaded); removing hidden units gives a smaller dense model that still classifies.

use kiln::artifact;
use kiln::nn::Model;
use kiln::pipeline::{self, RunOptions, TrainOutcome};
use kiln::prune::{self, Pruning, PruningSchedule};
use kiln::spec::TrainSpec;

fn trained_digits() -> TrainOutcome {
    pipeline::train(&TrainSpec::default_digits(), &RunOptions::default()).unwrap()
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("kiln-prune-{name}-{}.safetensors", std::process::id()))
}

fn kernels(model: &kiln::nn::Sequential) -> Vec<&[f32]> {
    model
        .params
        .iter()
        .filter(|p| p.name.ends_with(".kernel"))
        .map(|p| p.value.data())
        .collect()
}

#[test]
fn magnitude_pruning_while_fine_tuning_reaches_the_target_and_is_stored_sparsely() {
    let mut outcome = trained_digits();
    let float_accuracy = outcome.test.accuracy;
    let dense_path = temp_file("dense");
    artifact::save(&outcome.model, &outcome.info, &dense_path).unwrap();
    let test = pipeline::fine_tune(&mut outcome.model, &outcome.info, None, 4, |m, steps| {
        assert_eq!(steps, 41, "1,293 training digits in batches of 32, 10% held out");
        let schedule = PruningSchedule::PolynomialDecay {
            initial_sparsity: 0.0,
            final_sparsity: 0.8,
            begin_step: 0,
            end_step: 100,
            power: 3.0,
            frequency: 20,
        };
        Ok(Some(Pruning::new(m, schedule)?))
    })
    .unwrap();
    for k in kernels(&outcome.model) {
        let zeros = k.iter().filter(|w| **w == 0.0).count();
        assert_eq!(zeros, k.len() * 8 / 10, "exactly 80% of each kernel is zero");
    }
    assert!(
        test.accuracy > float_accuracy - 0.02,
        "{} vs {float_accuracy}",
        test.accuracy
    );

    let path = temp_file("sparse");
    artifact::save(&outcome.model, &outcome.info, &path).unwrap();
    let (dense, sparse) = (
        std::fs::metadata(&dense_path).unwrap().len(),
        std::fs::metadata(&path).unwrap().len(),
    );
    assert!(
        sparse * 3 < dense,
        "{sparse} bytes stored sparsely vs {dense} dense"
    );
    let loaded = artifact::load(&path).unwrap();
    assert_eq!(
        loaded.model.float().weights(),
        outcome.model.weights(),
        "the same weights, bit for bit"
    );
    for p in [path, dense_path] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn removing_half_the_hidden_units_keeps_a_working_smaller_model() {
    let outcome = trained_digits();
    let (mut pruned, removed) = prune::remove_units(&outcome.model, 0.5).unwrap();
    assert_eq!((removed[0].before, removed[0].after), (128, 64));
    assert_eq!(pruned.params.count(), 64 * 64 + 64 + 64 * 10 + 10);
    let test = pipeline::fine_tune(&mut pruned, &outcome.info, None, 3, |_, _| Ok(None)).unwrap();
    assert!(
        test.accuracy > outcome.test.accuracy - 0.02,
        "{} vs {}",
        test.accuracy,
        outcome.test.accuracy
    );
}
