//! Test data and models shared by the integration tests.

use kiln::data::Dataset;
use kiln::nn::{Loss, LossKind, Sequential};
use kiln::optim::OptimizerSpec;

/// Two well-separated classes in 4 features; `poisoned` samples get a NaN feature.
pub fn blobs(n: usize, poisoned: &[usize]) -> Dataset {
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let label = (i % 2) as u32;
        let sign = if label == 1 { 1.0 } else { -1.0 };
        for j in 0..4 {
            features.push(sign * (1.0 + ((i * 7 + j * 3) % 5) as f32 * 0.1));
        }
        labels.push(label);
    }
    for &p in poisoned {
        features[p * 4] = f32::NAN;
    }
    Dataset {
        features,
        sample_shape: vec![4],
        labels,
    }
}

pub fn small_model(learning_rate: f32) -> Sequential {
    let layers = serde_json::from_str(
        r#"[{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 2}]"#,
    )
    .unwrap();
    let mut m = Sequential::new(&[4], layers, 1).unwrap();
    let mut sgd: OptimizerSpec = serde_json::from_str(r#"{"type": "sgd"}"#).unwrap();
    if let OptimizerSpec::Sgd(s) = &mut sgd {
        s.learning_rate = learning_rate;
    }
    m.compile(
        sgd,
        Loss {
            kind: LossKind::SparseCategoricalCrossentropy,
            from_logits: true,
        },
        1,
    );
    m
}
