//! Data-parallel training over an in-process group of threads (the same code path MPI
//! ranks take, without MPI): N ranks × a share of each batch of B reach the weights one
//! process reaches with batch B, every rank ends with identical weights, and shares that
//! come out empty (a last batch smaller than the group) are handled.

use kiln::nn::{Loss, LossKind, Model, Sequential};

mod common;
use common::{blobs, small_model};
use kiln::optim::OptimizerSpec;
use kiln::pipeline::{self, RunOptions, TrainOutcome};
use kiln::spec::TrainSpec;
use kiln::tensor::Tensor;
use kiln::train::{Collective, FitOptions, History, InProcessGroup, TrainData, Trainer};

/// The offline digits MLP without dropout (so the runs draw no random masks), 2 epochs of
/// 41 steps each.
fn digits_spec() -> TrainSpec {
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/spec/default_spec.toml")).unwrap();
    let text = base
        .replace("epochs = 30", "epochs = 2")
        .replace("rate = 0.1", "rate = 0.0");
    TrainSpec::parse(&text, "digits.toml".as_ref()).unwrap()
}

/// Runs `job` once per rank of an in-process group of `ranks`, each on its own one-thread
/// pool (ranks on one shared pool could steal each other's blocked work and deadlock).
fn on_ranks<R: Send>(ranks: usize, job: impl Fn(&dyn Collective) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let handles: Vec<_> = InProcessGroup::new(ranks)
            .into_iter()
            .map(|group| {
                let job = &job;
                s.spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
                    pool.install(|| job(&group))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn train(spec: &TrainSpec, group: Option<&dyn Collective>) -> TrainOutcome {
    let options = RunOptions {
        distributed: group,
        ..Default::default()
    };
    pipeline::train(spec, &options).unwrap()
}

fn max_difference(a: &[Tensor], b: &[Tensor]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(a, b)| a.data().iter().zip(b.data()).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn two_and_three_ranks_reach_the_weights_of_one_process_on_the_same_global_batch() {
    let spec = digits_spec();
    let single = train(&spec, None);
    let reference = single.model.weights();
    for ranks in [2, 3] {
        let outcomes = on_ranks(ranks, |g| train(&spec, Some(g)));
        let weights: Vec<Vec<Tensor>> = outcomes.iter().map(|o| o.model.weights()).collect();
        for (rank, w) in weights.iter().enumerate() {
            assert_eq!(
                w, &weights[0],
                "{ranks} ranks: rank {rank}'s replica differs from rank 0's"
            );
        }
        // 82 Adam steps; the shares' gradients are summed in another order than one
        // process sums the whole batch, which moves weights by a few float roundings.
        let difference = max_difference(&weights[0], &reference);
        assert!(
            difference < 1e-4,
            "{ranks} ranks: weights differ from one process's by up to {difference}"
        );
        let (a, b) = (&outcomes[0], &single);
        assert!(
            (a.test.accuracy - b.test.accuracy).abs() <= 1.0 / 360.0,
            "{ranks} ranks"
        );
        assert!((a.test.loss - b.test.loss).abs() < 1e-4, "{ranks} ranks");
        assert_same_history(&a.history, &b.history, ranks);
    }
}

fn assert_same_history(a: &History, b: &History, ranks: usize) {
    assert_eq!(a.epochs.len(), b.epochs.len());
    for (x, y) in a.epochs.iter().zip(&b.epochs) {
        assert!(
            (x.loss - y.loss).abs() < 1e-4,
            "{ranks} ranks: loss {} vs {}",
            x.loss,
            y.loss
        );
        assert!(
            (x.accuracy - y.accuracy).abs() < 2e-3,
            "{ranks} ranks: training accuracy"
        );
        let (vx, vy) = (x.val_loss.unwrap(), y.val_loss.unwrap());
        assert!((vx - vy).abs() < 1e-4, "{ranks} ranks: val_loss {vx} vs {vy}");
        assert!(
            x.communication_seconds > 0.0,
            "{ranks} ranks: all-reduce time is counted"
        );
    }
}

#[test]
fn a_last_batch_smaller_than_the_group_leaves_some_ranks_without_samples() {
    // 33 samples in batches of 8: the last batch holds 1 sample, so 2 of 3 ranks get none.
    let data = blobs(33, &[]);
    let options = FitOptions {
        epochs: 3,
        batch_size: 8,
        ..Default::default()
    };
    let mut single = small_model(0.1);
    let expected = single.fit(&data, &options).unwrap();
    let results = on_ranks(3, |g| {
        let mut m = small_model(0.1);
        let h = m
            .fit(
                &data,
                &FitOptions {
                    distributed: Some(g),
                    ..options
                },
            )
            .unwrap();
        (m.weights(), h)
    });
    for (weights, history) in &results {
        assert_eq!(weights, &results[0].0, "replicas agree");
        assert!(max_difference(weights, &single.weights()) < 1e-5);
        for (x, y) in history.epochs.iter().zip(&expected.epochs) {
            assert!((x.loss - y.loss).abs() < 1e-5, "loss {} vs {}", x.loss, y.loss);
            assert_eq!(x.accuracy, y.accuracy);
        }
    }
}

#[test]
fn ranks_that_start_from_different_weights_train_rank_0s() {
    // Each rank seeds its model differently; joining the group broadcasts rank 0's.
    let data = blobs(16, &[]);
    let results = on_ranks(2, |g| {
        let layers = serde_json::from_str(r#"[{"type": "dense", "units": 2}]"#).unwrap();
        let mut m = Sequential::new(&[4], layers, 100 + g.rank() as u64).unwrap();
        let loss = Loss {
            kind: LossKind::SparseCategoricalCrossentropy,
            from_logits: true,
        };
        let options = FitOptions {
            distributed: Some(g),
            ..Default::default()
        };
        Trainer::new(OptimizerSpec::default(), loss, 1)
            .fit(&mut m, TrainData::Samples(&data), &options)
            .unwrap();
        m.weights()
    });
    assert_eq!(results[0], results[1]);
}
