//! The MNIST path on every machine, without `$KILN_DATA`: a committed subset of MNIST (the
//! first 600 training and 200 test images, gzip-compressed IDX, made by
//! `crates/kiln/tests/fixtures/mnist-subset/make_subset.py`, checked against its SHA256SUMS)
//! is read as IDX, trained on through the library as 28×28 images, saved, loaded back bit
//! for bit, and predicted from with `kiln predict` on the IDX test images, as a user would.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kiln::artifact::{self, ModelInfo};
use kiln::data::{read_idx, sha256_hex, Dataset, Normalization};
use kiln::nn::{Activation, Dense, Flatten, Loss, Sequential};
use kiln::optim::Adam;
use kiln::train::{EvalData, FitOptions, TrainData, Trainer};

fn subset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln/tests/fixtures/mnist-subset")
}

/// One part (`train` or `t10k`) of the subset as raw 0–255 images and labels, each file
/// checked against SHA256SUMS first.
fn read_part(part: &str) -> Dataset {
    let dir = subset_dir();
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let read = |kind: &str| {
        let name = format!("{part}-{kind}");
        let idx = read_idx(&dir.join(format!("{name}.gz"))).unwrap();
        let mut raw = Vec::new();
        for d in &idx.dims {
            raw.extend_from_slice(&(*d as u32).to_be_bytes());
        }
        let expected = sums
            .lines()
            .find_map(|l| l.strip_suffix(&format!("  {name}")))
            .unwrap_or_else(|| panic!("{name} is not in SHA256SUMS"));
        let header = [0u8, 0, 8, idx.dims.len() as u8];
        let content = [&header[..], &raw, &idx.data].concat();
        assert_eq!(
            sha256_hex(&content),
            expected,
            "{name} differs from the committed subset"
        );
        idx
    };
    let (images, labels) = (read("images-idx3-ubyte"), read("labels-idx1-ubyte"));
    assert_eq!(images.dims[1..], [28, 28]);
    Dataset::new(
        images.data.iter().map(|&v| v as f32).collect(),
        vec![28, 28],
        labels.data.iter().map(|&l| l as u32).collect(),
    )
    .unwrap()
}

#[test]
fn an_mnist_subset_trains_saves_loads_and_predicts_from_idx() {
    let (mut train, raw_test) = (read_part("train"), read_part("t10k"));
    assert_eq!((train.len(), raw_test.len()), (600, 200));
    let scale = Normalization::Scale { max: 255.0 }.fit(&train).unwrap();
    let mut test = raw_test.clone();
    for split in [&mut train, &mut test] {
        let size = split.sample_size();
        scale.apply(&mut split.features, size).unwrap();
    }
    let mut model = Sequential::builder(&[28, 28])
        .add(Flatten::new())
        .add(Dense::new(64).activation(Activation::Relu))
        .add(Dense::new(10).activation(Activation::Softmax))
        .build(3)
        .unwrap();
    let mut trainer = Trainer::new(Adam::new(0.003), Loss::sparse_categorical_crossentropy(), 3);
    let options = FitOptions {
        epochs: 8,
        batch_size: 32,
        seed: 3,
        ..FitOptions::default()
    };
    trainer
        .fit(&mut model, TrainData::Samples(&train), &options)
        .unwrap();
    let accuracy = trainer
        .evaluate(&mut model, EvalData::Samples(&test))
        .unwrap()
        .accuracy;
    // 600 images are enough to be far above chance (0.1) with a small MLP.
    assert!(accuracy > 0.7, "test accuracy {accuracy}");

    let s = Sandbox::new("mnist-subset");
    let path = s.path("subset.safetensors");
    let mut info = ModelInfo::for_model("mnist-subset", &model);
    info.preprocessing = scale;
    artifact::save(&model, &info, &path).unwrap();
    let mut loaded = artifact::load(&path).unwrap().model;
    let expected = model.predict(&test.features, test.len()).unwrap();
    assert_eq!(loaded.predict(&test.features, test.len()).unwrap(), expected);

    // `kiln predict` on the raw IDX test images: the model's own scaling, the same answers.
    let images = path_str(&subset_dir().join("t10k-images-idx3-ubyte.gz"));
    let out = s.kiln(&[
        "predict",
        &path_str(&path),
        "--input",
        &images,
        "--format",
        "json",
    ]);
    assert_success(&out);
    let answers: serde_json::Value = serde_json::from_str(&out.1).unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 200);
    for (i, answer) in answers.iter().enumerate() {
        let probs: Vec<f32> = answer["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(probs, expected.data()[i * 10..(i + 1) * 10], "image {i}");
    }
}
