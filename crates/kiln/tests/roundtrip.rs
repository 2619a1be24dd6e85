//! A model trained through the library, saved and loaded back, is the same model: the same
//! parameters and predictions bit for bit, the same metadata, and saving it again writes
//! the same tensors and the same header.
//!
//! The MNIST variant reads `$KILN_DATA/mnist`: it is `#[ignore]`d, and `.ci/run` runs it
//! (the committed MNIST subset covers the same path everywhere, in kiln-cli's tests).

use std::path::{Path, PathBuf};

use kiln::artifact::{self, ModelInfo};
use kiln::data::Normalization;
use kiln::nn::Sequential;
use kiln::pipeline::{self, RunOptions, TrainOutcome};
use kiln::spec::TrainSpec;

/// A fresh folder (temp dir + process id + test name), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kiln-roundtrip-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn train(spec: &TrainSpec, data_dir: Option<&Path>) -> TrainOutcome {
    pipeline::train(
        spec,
        &RunOptions {
            data_dir,
            verbose: false,
            ..Default::default()
        },
    )
    .expect("training succeeds")
}

fn assert_bits_eq(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}[{i}]: {x} vs {y}");
    }
}

fn assert_same_params(a: &Sequential, b: &Sequential) {
    let names = |m: &Sequential| m.params.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b));
    for (p, q) in a.params.iter().zip(b.params.iter()) {
        assert_eq!(p.value.dims(), q.value.dims(), "{}", p.name);
        assert_bits_eq(p.value.data(), q.value.data(), &p.name);
    }
}

/// A safetensors file split into (header JSON, tensor bytes).
fn split_safetensors(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).expect("UTF-8 header");
    (
        serde_json::from_str(header.trim_end()).expect("JSON header"),
        &bytes[8 + n..],
    )
}

/// Saves, loads and checks the round trip on the test split (up to `max_samples` of it).
fn check_round_trip(outcome: &mut TrainOutcome, dir: &TempDir, data_dir: Option<&Path>, max_samples: usize) {
    let first = dir.path("model.safetensors");
    artifact::save(&outcome.model, &outcome.info, &first).unwrap();
    assert_eq!(dir.entries(), ["model.safetensors"], "no temporary files left");

    let mut loaded = artifact::load(&first).unwrap();
    assert_eq!(loaded.info, outcome.info);
    assert_eq!(loaded.path, first);
    assert_eq!(loaded.file_bytes, std::fs::metadata(&first).unwrap().len());
    assert_eq!(loaded.model.input_shape(), outcome.model.input_shape());
    assert_eq!(loaded.model.output_shape(), outcome.model.output_shape());
    assert_eq!(loaded.model.float().specs(), outcome.model.specs());
    assert_same_params(loaded.model.float(), &outcome.model);

    // Predictions on the (preprocessed) test split, bit for bit.
    let test = pipeline::load_test_split(&loaded.info, data_dir).unwrap();
    let rows = test.len().min(max_samples);
    let x = &test.features[..rows * test.sample_size()];
    let original = outcome.model.predict(x, rows).unwrap();
    let reloaded = loaded.model.predict(x, rows).unwrap();
    assert_eq!(original.dims(), reloaded.dims());
    assert_eq!(original.dims()[0], rows);
    assert_bits_eq(original.data(), reloaded.data(), "predictions");

    // A sample predicted alone has the bits it has inside a batch: `kiln serve` batches
    // whatever requests arrive together, and its answers must equal `kiln predict`'s.
    let (size, width) = (test.sample_size(), original.dims()[1]);
    for row in [0, 1, rows / 2, rows - 1] {
        let alone = loaded.model.predict(&x[row * size..(row + 1) * size], 1).unwrap();
        let in_batch = &original.data()[row * width..(row + 1) * width];
        assert_bits_eq(alone.data(), in_batch, &format!("sample {row} alone"));
    }

    // Evaluating the loaded model on the whole test split reproduces the recorded metrics.
    if max_samples >= test.len() {
        let evaluation = loaded.evaluate(&test).unwrap();
        assert_eq!(evaluation, outcome.test);
        let metrics = &loaded.info.lineage.as_ref().unwrap().metrics;
        assert_eq!(metrics.test_accuracy, Some(outcome.test.accuracy));
        assert_eq!(metrics.test_loss, Some(outcome.test.loss));
    }

    // Saving the loaded model again writes the same file, byte for byte (the header's keys
    // are sorted, so artifacts are reproducible).
    let second = dir.path("again.safetensors");
    artifact::save(&loaded.model, &loaded.info, &second).unwrap();
    let (a, b) = (std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap());
    assert!(a == b, "a re-saved model differs from the original file");
    let ((header_a, data_a), (header_b, data_b)) = (split_safetensors(&a), split_safetensors(&b));
    assert_eq!(header_a, header_b);
    assert!(data_a == data_b, "tensor bytes differ");
    assert_eq!(header_a["__metadata__"]["format"], "kiln");
    let again = artifact::load(&second).unwrap();
    assert_eq!(again.info, outcome.info);
    assert_same_params(again.model.float(), &outcome.model);

    // Overwriting a model replaces it atomically, leaving no temporary file.
    artifact::save(&loaded.model, &loaded.info, &first).unwrap();
    assert_eq!(dir.entries(), ["again.safetensors", "model.safetensors"]);
    // A save into a missing folder fails, naming the path.
    let nowhere = dir.path("missing/model.safetensors");
    let err = artifact::save(&loaded.model, &loaded.info, &nowhere).unwrap_err();
    assert!(err.to_string().contains(&nowhere.display().to_string()), "{err}");
}

#[test]
fn the_default_digits_model_round_trips_bit_for_bit() {
    let mut spec = TrainSpec::default_digits();
    spec.training.epochs = 3;
    let mut outcome = train(&spec, None);
    assert_eq!(outcome.info.lineage.as_ref().unwrap().epochs_trained, 3);
    let dir = TempDir::new("digits");
    check_round_trip(&mut outcome, &dir, None, usize::MAX);
    let info: &ModelInfo = &outcome.info;
    assert_eq!(info.name, "digits-mlp");
    assert_eq!(info.classes.len(), 10);
    assert_eq!(info.architecture.input_shape.as_deref(), Some(&[8, 8][..]));
}

#[test]
fn a_z_score_model_with_logit_outputs_round_trips_bit_for_bit() {
    // z-score statistics are 64 f32 values each, saved as JSON: they must come back exact.
    let spec = TrainSpec::parse(
        r#"
        name = "digits-logits"
        [data]
        source = "digits"
        test_fraction = 0.25
        [preprocessing]
        normalization = { kind = "z_score" }
        [model]
        layers = [
          { type = "flatten" },
          { type = "dense", units = 32, activation = "tanh" },
          { type = "dense", units = 10, use_bias = false },
        ]
        [training]
        optimizer = { type = "sgd", learning_rate = 0.05 }
        loss = "sparse_categorical_crossentropy"
        from_logits = true
        epochs = 2
        batch_size = 16
        seed = 3
        "#,
        Path::new("inline.toml"),
    )
    .unwrap();
    assert_eq!(spec.preprocessing.normalization, Normalization::ZScore);
    let mut outcome = train(&spec, None);
    let dir = TempDir::new("z-score");
    check_round_trip(&mut outcome, &dir, None, usize::MAX);
    let loaded = artifact::load(&dir.path("model.safetensors")).unwrap();
    let names: Vec<&str> = loaded
        .model
        .float()
        .params
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["layers.1.kernel", "layers.1.bias", "layers.2.kernel"]);
}

#[test]
#[ignore = "needs MNIST in $KILN_DATA (../shared/data); .ci/run runs it"]
fn an_mnist_model_round_trips_bit_for_bit() {
    let data = std::env::var_os("KILN_DATA")
        .filter(|d| !d.is_empty())
        .expect("set KILN_DATA to the shared data folder (../shared/data)");
    let mnist = PathBuf::from(data).join("mnist");
    let spec = TrainSpec::parse(
        r#"
        [data]
        source = "mnist"
        [preprocessing]
        normalization = { kind = "z_score" }
        [model]
        layers = [{ type = "flatten" }, { type = "dense", units = 10, activation = "softmax" }]
        [training]
        loss = "sparse_categorical_crossentropy"
        epochs = 1
        batch_size = 256
        seed = 5
        "#,
        Path::new("mnist.toml"),
    )
    .unwrap();
    let mut outcome = train(&spec, Some(&mnist));
    assert!(outcome.test.accuracy > 0.85, "{:?}", outcome.test);
    let dir = TempDir::new("mnist");
    check_round_trip(&mut outcome, &dir, Some(&mnist), 2000);
    // The lineage names the MNIST files and their SHA-256, not the folder they were in.
    let path = dir.path("private.safetensors");
    artifact::save(&outcome.model, &outcome.info, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(mnist.to_str().unwrap()),
        "the model file names the data folder"
    );
    assert!(
        text.contains("train-images-idx3-ubyte"),
        "the file names are kept"
    );
}
