//! Post-training int8 quantization of a trained MLP: accuracy close to the float model's,
//! a file a quarter the size that loads back to bit-identical predictions, predictions
//! that do not depend on how samples are batched, and a clear error for what it does not
//! cover. (The int8 kernel itself is tested against its definition in quant/gemm_i8.rs;
//! the MNIST figures are in the README, from `kiln compress`.)

use kiln::artifact::{self, ModelInfo};
use kiln::data::Dataset;
use kiln::nn::{Evaluate, Model, Predict, Sequential};
use kiln::pipeline::{self, RunOptions, TrainOutcome};
use kiln::quant::{Calibration, QuantMode, QuantizedModel};
use kiln::spec::TrainSpec;
use kiln::train::EvalData;

fn trained_digits() -> TrainOutcome {
    pipeline::train(&TrainSpec::default_digits(), &RunOptions::default()).unwrap()
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("kiln-quant-{name}-{}.safetensors", std::process::id()))
}

/// Accuracy on `test` with the loss the model was trained with, whatever the model is.
fn accuracy(model: &mut dyn Evaluate, info: &ModelInfo, test: &Dataset) -> f32 {
    let loss = info.training().unwrap().loss();
    kiln::train::evaluate(model, &loss, EvalData::Samples(test), None)
        .unwrap()
        .accuracy
}

fn quantize(model: Sequential, mode: QuantMode, calibration: Calibration, samples: &[f32]) -> QuantizedModel {
    QuantizedModel::quantize(model, mode, calibration, samples, "float").unwrap()
}

fn calibration_rows(outcome: &TrainOutcome, rows: usize) -> Vec<f32> {
    pipeline::load_calibration_samples(&outcome.info, None, rows)
        .unwrap()
        .features
}

#[test]
fn int8_keeps_the_accuracy_shrinks_the_file_and_loads_back_bit_for_bit() {
    let mut outcome = trained_digits();
    let test = pipeline::load_test_split(&outcome.info, None).unwrap();
    let float_accuracy = outcome.test.accuracy;
    let float_probs = outcome.model.predict(&test.features, test.len()).unwrap();
    let float_path = temp_file("float");
    artifact::save(&outcome.model, &outcome.info, &float_path).unwrap();

    for (mode, calibration) in [
        (QuantMode::Static, Calibration::MinMax),
        (QuantMode::Static, Calibration::Percentile(99.99)),
        (QuantMode::Dynamic, Calibration::MinMax),
    ] {
        let samples = calibration_rows(&outcome, 500);
        let mut q = quantize(outcome.model, mode, calibration, &samples);
        let accuracy = accuracy(&mut q, &outcome.info, &test);
        // 360 test digits: one sample is 0.28 points.
        assert!(
            (accuracy - float_accuracy).abs() <= 0.0085,
            "{mode:?} {calibration:?}: accuracy {accuracy} vs float {float_accuracy}"
        );
        let probs = q.predict(&test.features, test.len()).unwrap();
        let largest_gap = probs
            .data()
            .iter()
            .zip(float_probs.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            largest_gap < 0.1,
            "{mode:?}: probabilities moved by {largest_gap}"
        );

        // One at a time or all together: the same bits.
        let size = test.sample_size();
        for i in [0, 17, test.len() - 1] {
            let one = q.predict(&test.features[i * size..(i + 1) * size], 1).unwrap();
            assert_eq!(
                one.data(),
                &probs.data()[i * 10..(i + 1) * 10],
                "{mode:?} sample {i}"
            );
        }

        let path = temp_file("int8");
        artifact::save(&q, &outcome.info, &path).unwrap();
        let mut loaded = artifact::load(&path).unwrap();
        let float_bytes = std::fs::metadata(&float_path).unwrap().len();
        assert!(
            loaded.file_bytes * 3 < float_bytes,
            "{} bytes, float {float_bytes}",
            loaded.file_bytes
        );
        let again = loaded.model.predict(&test.features, test.len()).unwrap();
        assert_eq!(again.data(), probs.data(), "{mode:?}: saved and loaded");
        assert_eq!(loaded.model.quantized().unwrap().mode(), mode);
        std::fs::remove_file(path).unwrap();
        outcome.model = q.into_float();
    }
    std::fs::remove_file(float_path).unwrap();
}

/// A small CNN on the 8×8 digits: convolution (with "same" padding, so the zero point
/// codes the padding), batch normalization, pooling, then Dense layers.
fn trained_digits_cnn() -> TrainOutcome {
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/spec/default_spec.toml")).unwrap();
    let start = base.find("layers = [").unwrap();
    let end = start + base[start..].find("]\n").unwrap() + 2;
    let layers = r#"layers = [
  { type = "reshape", target_shape = [8, 8, 1] },
  { type = "conv2d", filters = 8, kernel_size = 3, padding = "same", activation = "relu" },
  { type = "batch_normalization" },
  { type = "max_pooling2d", pool_size = 2 },
  { type = "conv2d", filters = 12, kernel_size = 3, activation = "relu" },
  { type = "flatten" },
  { type = "dense", units = 32, activation = "relu" },
  { type = "dense", units = 10, activation = "softmax" },
]
"#;
    let text = format!("{}{layers}{}", &base[..start], &base[end..]).replace("epochs = 30", "epochs = 12");
    let spec = TrainSpec::parse(&text, "cnn.toml".as_ref()).unwrap();
    pipeline::train(&spec, &RunOptions::default()).unwrap()
}

#[test]
fn a_cnn_quantizes_its_convolutions_too() {
    let mut outcome = trained_digits_cnn();
    let test = pipeline::load_test_split(&outcome.info, None).unwrap();
    let float_accuracy = outcome.test.accuracy;
    assert!(float_accuracy > 0.9, "the float CNN trained: {float_accuracy}");
    for mode in [QuantMode::Static, QuantMode::Dynamic] {
        let samples = calibration_rows(&outcome, 300);
        let mut q = quantize(outcome.model, mode, Calibration::MinMax, &samples);
        let kernels: Vec<usize> = q.network().kernels().map(|(i, ..)| i).collect();
        assert_eq!(
            kernels,
            [1, 4, 6, 7],
            "both convolutions and both Dense layers in int8"
        );
        let accuracy = accuracy(&mut q, &outcome.info, &test);
        assert!(
            (accuracy - float_accuracy).abs() <= 0.015,
            "{mode:?}: accuracy {accuracy} vs float {float_accuracy}"
        );
        let probs = q.predict(&test.features, test.len()).unwrap();
        let one = q.predict(&test.features[64..128], 1).unwrap();
        assert_eq!(
            one.data(),
            &probs.data()[10..20],
            "{mode:?}: one sample alone, the same bits"
        );
        let path = temp_file("cnn");
        artifact::save(&q, &outcome.info, &path).unwrap();
        let mut loaded = artifact::load(&path).unwrap();
        assert_eq!(
            loaded.model.predict(&test.features, test.len()).unwrap().data(),
            probs.data(),
            "{mode:?}: saved and loaded"
        );
        std::fs::remove_file(path).unwrap();
        outcome.model = q.into_float();
    }
}

/// A model trained from spec text.
fn train_text(text: &str) -> TrainOutcome {
    let spec = TrainSpec::parse(text, "spec.toml".as_ref()).unwrap();
    pipeline::train(&spec, &RunOptions::default()).unwrap()
}

/// A CNN of convolutions, max pooling and Dense layers only, on the 8×8 digits.
fn trained_plain_cnn() -> TrainOutcome {
    let text = r#"
[data]
source = "digits"
[preprocessing]
normalization = { kind = "scale", max = 16.0 }
[model]
layers = [
  { type = "reshape", target_shape = [8, 8, 1] },
  { type = "conv2d", filters = 8, kernel_size = 3, padding = "same", activation = "relu" },
  { type = "max_pooling2d", pool_size = 2 },
  { type = "conv2d", filters = 16, kernel_size = 3, activation = "relu" },
  { type = "flatten" },
  { type = "dropout", rate = 0.1 },
  { type = "dense", units = 32, activation = "relu" },
  { type = "dense", units = 10, activation = "softmax" },
]
[training]
optimizer = { type = "adam", learning_rate = 0.003 }
loss = "sparse_categorical_crossentropy"
epochs = 10
seed = 3
"#;
    train_text(text)
}

#[test]
fn the_image_chain_agrees_with_the_layer_by_layer_path() {
    let outcome = trained_plain_cnn();
    let test = pipeline::load_test_split(&outcome.info, None).unwrap();
    let samples = calibration_rows(&outcome, 300);
    let mut q = quantize(outcome.model, QuantMode::Static, Calibration::MinMax, &samples);
    assert!(
        q.network().runs_image_chain(),
        "convolutions, pooling and Dense layers only: the chain"
    );
    let chained = q.predict(&test.features, test.len()).unwrap();
    let one = q.predict(&test.features[64..128], 1).unwrap();
    assert_eq!(
        one.data(),
        &chained.data()[10..20],
        "one sample alone, the same bits"
    );
    let chained_accuracy = accuracy(&mut q, &outcome.info, &test);
    q.set_image_chain(false);
    assert!(!q.network().runs_image_chain());
    let layerwise = q.predict(&test.features, test.len()).unwrap();
    // The same codes up to the rounding of a requantization done in one step rather than
    // two: probabilities within a few codes' worth, the same class almost everywhere.
    let largest = chained
        .data()
        .iter()
        .zip(layerwise.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(largest < 0.05, "largest probability difference {largest}");
    let argmax = |r: &[f32]| (0..r.len()).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap();
    let same = chained
        .data()
        .chunks(10)
        .zip(layerwise.data().chunks(10))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    assert!(
        same as f32 >= 0.99 * test.len() as f32,
        "{same} of {} classes agree",
        test.len()
    );
    let mut float = q.into_float();
    let float_accuracy = accuracy(&mut float, &outcome.info, &test);
    assert!(
        (chained_accuracy - float_accuracy).abs() <= 0.015,
        "int8 {chained_accuracy} vs float {float_accuracy}"
    );
}

#[test]
fn a_pruned_int8_model_stores_its_codes_sparsely_and_loads_back_bit_for_bit() {
    let outcome = trained_digits();
    let test = pipeline::load_test_split(&outcome.info, None).unwrap();
    let samples = calibration_rows(&outcome, 300);
    let info = &outcome.info;
    let dense_int8 = |model: Sequential, name: &str| {
        let q = quantize(model, QuantMode::Static, Calibration::MinMax, &samples);
        let path = temp_file(name);
        artifact::save(&q, info, &path).unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        (q.into_float(), path, bytes)
    };
    let (mut model, plain, plain_bytes) = dense_int8(outcome.model, "sparse-test-dense");
    kiln::prune::prune_weights(&mut model, 0.8, false).unwrap();
    let (model, pruned, pruned_bytes) = dense_int8(model, "sparse-test-pruned");
    // 80% zero codes: a bitmap (1/8 byte) and one byte per nonzero instead of one per code
    // (the metadata, a few KB, is the same in both files).
    assert!(
        (pruned_bytes as f64) < 0.6 * plain_bytes as f64,
        "pruned int8 {pruned_bytes} bytes vs dense int8 {plain_bytes}"
    );
    let mut q = quantize(model, QuantMode::Static, Calibration::MinMax, &samples);
    let before = q.predict(&test.features, test.len()).unwrap();
    let mut loaded = artifact::load(&pruned).unwrap();
    assert_eq!(
        loaded.model.predict(&test.features, test.len()).unwrap().data(),
        before.data()
    );
    for path in [plain, pruned] {
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn a_dense_layer_on_each_pixel_runs_layer_by_layer_not_in_the_chain() {
    let text = r#"
[data]
source = "digits"
[preprocessing]
normalization = { kind = "scale", max = 16.0 }
[model]
layers = [
  { type = "reshape", target_shape = [8, 8, 1] },
  { type = "conv2d", filters = 4, kernel_size = 3, activation = "relu" },
  { type = "dense", units = 3, activation = "relu" },
  { type = "flatten" },
  { type = "dense", units = 10, activation = "softmax" },
]
[training]
loss = "sparse_categorical_crossentropy"
epochs = 1
"#;
    let outcome = train_text(text);
    let samples = calibration_rows(&outcome, 100);
    let mut q = quantize(outcome.model, QuantMode::Static, Calibration::MinMax, &samples);
    assert!(!q.network().runs_image_chain());
    let test = pipeline::load_test_split(&outcome.info, None).unwrap();
    let probs = q.predict(&test.features, test.len()).unwrap();
    assert_eq!(probs.dims(), &[test.len(), 10]);
    let int8 = accuracy(&mut q, &outcome.info, &test);
    let float = accuracy(&mut q.into_float(), &outcome.info, &test);
    assert!((int8 - float).abs() <= 0.03, "int8 {int8} vs float {float}");
}

#[test]
fn static_quantization_without_calibration_samples_says_so() {
    let outcome = trained_digits();
    let err = QuantizedModel::quantize(outcome.model, QuantMode::Static, Calibration::MinMax, &[], "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("calibration samples"), "{err}");
}

#[test]
fn sixteen_bit_storage_halves_the_file_and_loads_back_the_rounded_weights() {
    use kiln::quant::HalfFloat;
    let outcome = trained_digits();
    let float_path = temp_file("f32");
    artifact::save(&outcome.model, &outcome.info, &float_path).unwrap();
    let test = pipeline::load_test_split(&outcome.info, None).unwrap();
    for h in [HalfFloat::F16, HalfFloat::Bf16] {
        let mut model = artifact::load(&float_path)
            .unwrap()
            .model
            .into_float("test")
            .unwrap();
        kiln::quant::round_to_half(&mut model.params, h);
        let info = ModelInfo {
            storage: Some(h),
            ..outcome.info.clone()
        };
        let path = temp_file("half");
        artifact::save(&model, &info, &path).unwrap();
        let loaded = artifact::load(&path).unwrap();
        assert_eq!(
            loaded.model.float().weights(),
            model.weights(),
            "{h:?}: what was saved is loaded"
        );
        assert_eq!(
            loaded.info.storage,
            Some(h),
            "and would be saved in 16 bits again"
        );
        let (full, half) = (std::fs::metadata(&float_path).unwrap().len(), loaded.file_bytes);
        // The kernels and biases halve; the JSON metadata stays.
        assert!(half + 9610 * 2 <= full, "{h:?}: {half} vs {full}");
        let mut loaded = loaded;
        let accuracy = loaded.evaluate(&test).unwrap().accuracy;
        assert!(
            (accuracy - outcome.test.accuracy).abs() <= 0.0056,
            "{h:?}: {accuracy}"
        );
        std::fs::remove_file(path).unwrap();
    }
    std::fs::remove_file(float_path).unwrap();
}
