//! Test data and models shared by the integration tests.

use kiln::data::Dataset;
use kiln::nn::{Loss, LossKind, Model, Sequential};
use kiln::optim::OptimizerSpec;
use kiln::tensor::Tensor;
use kiln::train::{Callback, Checkpoint, FitOptions, History, TrainData, Trainer};

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

/// A model with the trainer that fits it, as the tests use them together.
pub struct Compiled {
    pub model: Sequential,
    pub trainer: Trainer,
}

#[allow(dead_code)] // each test binary uses its own subset
impl Compiled {
    pub fn fit(&mut self, data: &Dataset, options: &FitOptions) -> kiln::Result<History> {
        self.trainer
            .fit(&mut self.model, TrainData::Samples(data), options)
    }

    pub fn fit_with_callbacks(
        &mut self,
        data: &Dataset,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
    ) -> kiln::Result<History> {
        self.trainer
            .fit_with_callbacks(&mut self.model, TrainData::Samples(data), options, callbacks)
    }

    pub fn resume_fit(
        &mut self,
        data: &Dataset,
        options: &FitOptions,
        callbacks: &mut [Box<dyn Callback>],
        checkpoint: &Checkpoint,
    ) -> kiln::Result<History> {
        self.trainer.resume_fit(
            &mut self.model,
            TrainData::Samples(data),
            options,
            callbacks,
            checkpoint,
        )
    }

    pub fn weights(&self) -> Vec<Tensor> {
        self.model.weights()
    }
}

pub fn small_model(learning_rate: f32) -> Compiled {
    let layers = serde_json::from_str(
        r#"[{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 2}]"#,
    )
    .unwrap();
    let model = Sequential::new(&[4], layers, 1).unwrap();
    let mut sgd: OptimizerSpec = serde_json::from_str(r#"{"type": "sgd"}"#).unwrap();
    if let OptimizerSpec::Sgd(s) = &mut sgd {
        s.learning_rate = learning_rate;
    }
    let loss = Loss {
        kind: LossKind::SparseCategoricalCrossentropy,
        from_logits: true,
    };
    Compiled {
        model,
        trainer: Trainer::new(sgd, loss, 1),
    }
}
