//! Convolutional models end to end on the embedded 8×8 digits: they train, batch
//! normalization's moving statistics are saved and used at inference, a saved-and-loaded
//! model predicts bit-identically, and impossible layer stacks are errors naming the layer.

use kiln::artifact;
use kiln::pipeline::{self, RunOptions};
use kiln::spec::TrainSpec;

fn digits_spec(layers: &str, epochs: usize) -> Result<TrainSpec, kiln::Error> {
    let text = format!(
        r#"
        name = "digits-cnn"
        [data]
        source = "digits"
        test_fraction = 0.2
        [preprocessing]
        normalization = {{ kind = "scale", max = 16.0 }}
        [model]
        layers = [{layers}]
        [training]
        optimizer = {{ type = "adam", learning_rate = 0.003 }}
        loss = "sparse_categorical_crossentropy"
        epochs = {epochs}
        batch_size = 32
        validation_split = 0.1
        seed = 3
        "#
    );
    TrainSpec::parse(&text, "digits-cnn.toml".as_ref())
}

const CNN: &str = r#"
    { type = "reshape", target_shape = [8, 8, 1] },
    { type = "conv2d", filters = 16, kernel_size = 3, padding = "same", activation = "relu" },
    { type = "batch_normalization" },
    { type = "max_pooling2d", pool_size = 2 },
    { type = "conv2d", filters = 32, kernel_size = [3, 3], activation = "relu" },
    { type = "average_pooling2d", pool_size = 2 },
    { type = "flatten" },
    { type = "dropout", rate = 0.2 },
    { type = "dense", units = 10, activation = "softmax" },
"#;

#[test]
fn a_small_cnn_learns_digits_and_survives_saving() {
    let spec = digits_spec(CNN, 12).unwrap();
    let mut trained = pipeline::train(&spec, &RunOptions::default()).unwrap();
    assert!(
        trained.test.accuracy > 0.93,
        "test accuracy {}",
        trained.test.accuracy
    );
    // The moving statistics moved away from their initial 0 / 1 and are not trained.
    let moving = trained
        .model
        .params
        .iter()
        .find(|p| p.name == "layers.2.moving_mean")
        .unwrap();
    assert!(!moving.trainable && moving.value.data().iter().any(|&m| m.abs() > 1e-3));

    let dir = std::env::temp_dir().join(format!("kiln-cnn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cnn.safetensors");
    artifact::save(&trained.model, &trained.info, &path).unwrap();
    let mut loaded = artifact::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let test = pipeline::load_test_split(&trained.info, None).unwrap();
    let before = trained.model.predict(&test.features, test.len()).unwrap();
    let after = loaded.model.predict(&test.features, test.len()).unwrap();
    let bits = |t: &kiln::Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&before),
        bits(&after),
        "predictions change after save + load"
    );
}

#[test]
fn a_global_pooling_cnn_with_strides_and_dilation_trains() {
    let layers = r#"
        { type = "reshape", target_shape = [8, 8, 1] },
        { type = "conv2d", filters = 8, kernel_size = 3, strides = 1, dilation_rate = 2, padding = "same", activation = "relu" },
        { type = "conv2d", filters = 16, kernel_size = 3, strides = 2, padding = "same", activation = "relu" },
        { type = "batch_normalization", momentum = 0.9 },
        { type = "global_average_pooling2d" },
        { type = "dense", units = 10, activation = "softmax" },
    "#;
    let trained = pipeline::train(&digits_spec(layers, 8).unwrap(), &RunOptions::default()).unwrap();
    assert!(
        trained.test.accuracy > 0.5,
        "test accuracy {}",
        trained.test.accuracy
    );
    let shapes: Vec<Vec<usize>> = trained
        .model
        .layer_output_shapes()
        .iter()
        .map(|s| s.dims().to_vec())
        .collect();
    assert_eq!(shapes[1], [8, 8, 8]);
    assert_eq!(shapes[2], [4, 4, 16]);
    assert_eq!(shapes[4], [16]);
}

fn build_error(layers: &str) -> String {
    let spec = digits_spec(layers, 1).unwrap();
    match pipeline::train(&spec, &RunOptions::default()) {
        Ok(_) => panic!("{layers} should not build"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn impossible_stacks_are_errors_naming_the_layer() {
    let err = build_error(
        r#"{ type = "conv2d", filters = 4, kernel_size = 3 }, { type = "flatten" }, { type = "dense", units = 10 }"#,
    );
    assert!(
        err.contains("layer 0 (conv2d)") && err.contains("target_shape = [8, 8, 1]"),
        "{err}"
    );
    let err = build_error(
        r#"{ type = "reshape", target_shape = [8, 8, 1] },
           { type = "conv2d", filters = 4, kernel_size = 5 },
           { type = "conv2d", filters = 4, kernel_size = 5 },
           { type = "flatten" }, { type = "dense", units = 10 }"#,
    );
    assert!(
        err.contains("layer 2 (conv2d)") && err.contains("shrinks below 1"),
        "{err}"
    );
    let err = build_error(
        r#"{ type = "reshape", target_shape = [8, 8, 1] },
           { type = "max_pooling2d", pool_size = 3, strides = 3 },
           { type = "max_pooling2d", pool_size = 3 },
           { type = "flatten" }, { type = "dense", units = 10 }"#,
    );
    assert!(
        err.contains("layer 2 (max_pooling2d)") && err.contains("shrinks below 1"),
        "{err}"
    );
    let err = build_error(
        r#"{ type = "reshape", target_shape = [8, 9, 1] }, { type = "flatten" }, { type = "dense", units = 10 }"#,
    );
    assert!(
        err.contains("layer 0 (reshape)") && err.contains("same number of values"),
        "{err}"
    );
    // An image fed to Dense layers without a Flatten.
    let err = build_error(r#"{ type = "dense", units = 32 }, { type = "dense", units = 10 }"#);
    assert!(
        err.contains("layer 0 (dense)") && err.contains("flatten"),
        "{err}"
    );
}

/// The same spec and seed give the same weights bit for bit, however the threads divided
/// the work (the kernel gradient's partial sums are added in a fixed order).
#[test]
fn training_a_cnn_is_reproducible() {
    let spec = digits_spec(CNN, 2).unwrap();
    let bits = |m: &kiln::nn::Sequential| -> Vec<u32> {
        m.params
            .iter()
            .flat_map(|p| p.value.data().iter().map(|v| v.to_bits()))
            .collect()
    };
    let a = pipeline::train(&spec, &RunOptions::default()).unwrap();
    let b = pipeline::train(&spec, &RunOptions::default()).unwrap();
    assert_eq!(bits(&a.model), bits(&b.model));
}
