//! Layer regularizers join the reported loss and the gradients with Keras's formulas.

use kiln::data::Dataset;
use kiln::nn::{Batch, LayerSpec, Loss, LossKind, Model, Sequential};
use kiln::optim::{OptimizerSpec, Sgd};
use kiln::train::{EvalData, Trainer};

fn model(regularizer: &str) -> (Sequential, Trainer) {
    let layers: Vec<LayerSpec> = serde_json::from_str(&format!(
        r#"[{{"type": "dense", "units": 4, "activation": "tanh" {regularizer}}},
            {{"type": "dense", "units": 3, "activation": "softmax"}}]"#
    ))
    .unwrap();
    let m = Sequential::new(&[5], layers, 3).unwrap();
    let sgd = OptimizerSpec::Sgd(Sgd {
        learning_rate: 0.1,
        ..Sgd::default()
    });
    let loss = Loss {
        kind: LossKind::SparseCategoricalCrossentropy,
        from_logits: false,
    };
    (m, Trainer::new(sgd, loss, 3))
}

fn step(m: &mut (Sequential, Trainer), d: &Dataset) {
    let batch = Batch::Samples {
        x: &d.features,
        labels: &d.labels,
    };
    m.1.train_step(&mut m.0, batch).unwrap();
}

fn data() -> Dataset {
    let features = (0..30).map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.5).collect();
    Dataset::new(features, vec![5], vec![0, 1, 2, 1, 0, 2]).unwrap()
}

const L1: f32 = 0.01;
const L2: f32 = 0.05;

#[test]
fn the_penalty_joins_the_loss_and_the_gradient() {
    let regularized = r#", "kernel_regularizer": {"l1": 0.01, "l2": 0.05}"#;
    let (mut plain, mut reg) = (model(""), model(regularized));
    assert_eq!(
        plain.0.weights(),
        reg.0.weights(),
        "same seed, same initial weights"
    );
    let kernel = reg.0.weights()[0].clone();
    let penalty: f64 = kernel
        .data()
        .iter()
        .map(|&w| (L1 * w.abs() + L2 * w * w) as f64)
        .sum();

    // Reported loss: data loss + l1·Σ|w| + l2·Σw² (not ½·l2).
    let d = data();
    let evaluate = |m: &mut (Sequential, Trainer)| m.1.evaluate(&mut m.0, EvalData::Samples(&d)).unwrap();
    let (e_plain, e_reg) = (evaluate(&mut plain), evaluate(&mut reg));
    assert!(
        ((e_reg.loss - e_plain.loss) as f64 - penalty).abs() < 1e-5,
        "{} vs {penalty}",
        e_reg.loss - e_plain.loss
    );

    // One SGD step: the regularized kernel moves further by lr·(l1·sign(w) + 2·l2·w).
    step(&mut plain, &d);
    step(&mut reg, &d);
    let (wp, wr) = (plain.0.weights(), reg.0.weights());
    for ((a, b), w0) in wp[0].data().iter().zip(wr[0].data()).zip(kernel.data()) {
        let extra = 0.1 * (L1 * w0.signum() + 2.0 * L2 * w0);
        assert!((a - b - extra).abs() < 1e-6, "kernel: {a} − {b} ≠ {extra}");
    }
    // Unregularized parameters move identically.
    for i in 1..wp.len() {
        assert_eq!(wp[i], wr[i], "parameter {i}");
    }
}

#[test]
fn specs_name_regularizers_and_reject_typos() {
    let ok: Result<Vec<LayerSpec>, _> =
        serde_json::from_str(r#"[{"type": "dense", "units": 2, "bias_regularizer": {"l2": 0.001}}]"#);
    assert!(ok.is_ok());
    let err = serde_json::from_str::<Vec<LayerSpec>>(
        r#"[{"type": "dense", "units": 2, "kernel_regularizer": {"l3": 1}}]"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `l3`"), "{err}");
}

#[test]
fn clipping_bounds_every_update() {
    use kiln::optim::GradientClipping;
    // SGD with lr 0.1 and clipvalue 1e-4: no weight may move by more than 1e-5 a step.
    let (mut clipped, mut free) = (model(""), model(""));
    clipped.1 = clipped
        .1
        .with_clipping(Some(GradientClipping::Clipvalue(1e-4)))
        .unwrap();
    let before = clipped.0.weights();
    let d = data();
    step(&mut clipped, &d);
    step(&mut free, &d);
    let moved = |m: &(Sequential, Trainer)| {
        m.0.weights()
            .iter()
            .zip(&before)
            .flat_map(|(a, b)| {
                a.data()
                    .iter()
                    .zip(b.data())
                    .map(|(x, y)| (x - y).abs())
                    .collect::<Vec<_>>()
            })
            .fold(0.0f32, f32::max)
    };
    // 2% slack: a weight near 0.5 has an f32 spacing of 6e-8, 0.6% of a 1e-5 step.
    assert!(moved(&clipped) <= 1e-5 * 1.02, "{}", moved(&clipped));
    assert!(
        moved(&free) > 1e-3,
        "without clipping the step is larger: {}",
        moved(&free)
    );
    assert!(clipped
        .1
        .with_clipping(Some(GradientClipping::Clipnorm(-1.0)))
        .is_err());
}
