//! Every example spec's model, written again through the builders, has exactly the
//! architecture that parsing the spec gives (what a trained model records as its
//! `kiln.architecture`), and builds to the same weights from the same seed.

use std::path::Path;

use kiln::lm::GptConfig;
use kiln::nn::{
    Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D, Model, ModelSpec, Reshape, Sequential,
    SequentialBuilder,
};
use kiln::spec::Spec;

fn example(name: &str) -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    Spec::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The reference MLP's body and head, shared by four examples.
fn reference_mlp(input: &[usize], hidden: usize, dropout: f32, classes: usize) -> SequentialBuilder {
    Sequential::builder(input)
        .add(Flatten::new())
        .add(Dense::new(hidden).activation(Activation::Relu))
        .add(Dropout::new(dropout))
        .add(Dense::new(classes).activation(Activation::Softmax))
}

fn assert_same_architecture(name: &str, input: &[usize], built: SequentialBuilder) {
    let Spec::Sequential(spec) = example(name) else {
        panic!("{name} is a layer-stack spec")
    };
    let parsed = ModelSpec {
        input_shape: Some(input.to_vec()),
        ..spec.model.clone()
    };
    assert_eq!(built.architecture(), &parsed, "{name}");
    let from_builder = built.build(spec.training.seed).unwrap();
    let from_spec = Sequential::new(input, spec.model.layers.clone(), spec.training.seed).unwrap();
    assert_eq!(
        from_builder.weights(),
        from_spec.weights(),
        "{name}: same initial weights"
    );
    assert_eq!(
        from_builder.architecture(),
        parsed,
        "{name}: what a saved model records"
    );
}

#[test]
fn layer_stack_examples_built_by_hand_match_their_specs() {
    let mnist = [28, 28];
    for name in [
        "mnist-mlp.toml",
        "mnist-mlp-augmented.toml",
        "mnist-mlp-early-stopping.toml",
    ] {
        assert_same_architecture(name, &mnist, reference_mlp(&mnist, 512, 0.2, 10));
    }
    assert_same_architecture(
        "digits-mlp-reference.toml",
        &[8, 8],
        reference_mlp(&[8, 8], 512, 0.2, 10),
    );
    let cnn = Sequential::builder(&mnist)
        .add(Reshape::new(&[28, 28, 1]))
        .add(Conv2D::new(32, 3).activation(Activation::Relu))
        .add(MaxPooling2D::new(2))
        .add(Conv2D::new(64, 3).activation(Activation::Relu))
        .add(MaxPooling2D::new(2))
        .add(Flatten::new())
        .add(Dropout::new(0.25))
        .add(Dense::new(128).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax));
    assert_same_architecture("mnist-cnn.toml", &mnist, cnn);
    let classic = Sequential::builder(&mnist)
        .add(Reshape::new(&[28, 28, 1]))
        .add(Conv2D::new(32, 3).activation(Activation::Relu))
        .add(Conv2D::new(64, 3).activation(Activation::Relu))
        .add(MaxPooling2D::new(2))
        .add(Dropout::new(0.25))
        .add(Flatten::new())
        .add(Dense::new(128).activation(Activation::Relu))
        .add(Dropout::new(0.5))
        .add(Dense::new(10).activation(Activation::Softmax));
    assert_same_architecture("mnist-cnn-classic.toml", &mnist, classic);
    // 13 measurements, one-hot encoded columns included.
    let wine = Sequential::builder(&[13])
        .add(Dense::new(32).activation(Activation::Relu))
        .add(Dropout::new(0.2))
        .add(Dense::new(3).activation(Activation::Softmax));
    assert_same_architecture("wine.toml", &[13], wine);
}

#[test]
fn language_model_examples_built_by_hand_match_their_specs() {
    let char_gpt = GptConfig::new(4, 4, 128, 64);
    for name in ["shakespeare-char-gpt.toml", "shakespeare-bpe-gpt.toml"] {
        let Spec::Gpt(spec) = example(name) else {
            panic!("{name} is a language-model spec")
        };
        assert_eq!(spec.model.gpt(), &char_gpt, "{name}");
    }
}

/// A model built in memory saves and loads, predicts the same, and the commands that need
/// the training data it does not record say so instead of guessing.
#[test]
fn a_model_built_in_memory_saves_loads_and_names_what_it_lacks() {
    let mut model = Sequential::builder(&[4])
        .add(Dense::new(3).activation(Activation::Relu))
        .add(Dense::new(2).activation(Activation::Softmax))
        .build(5)
        .unwrap();
    let path = std::env::temp_dir().join(format!("kiln-in-memory-{}.safetensors", std::process::id()));
    let info = kiln::artifact::ModelInfo::for_model("tiny", &model);
    kiln::artifact::save(&model, &info, &path).unwrap();
    let mut loaded = kiln::artifact::load(&path).unwrap();
    let x = [0.5, -1.0, 2.0, 0.25];
    assert_eq!(
        loaded.model.predict(&x, 1).unwrap(),
        model.predict(&x, 1).unwrap()
    );
    assert_eq!(loaded.info.classes, ["0", "1"]);
    assert_eq!(loaded.model.float().architecture(), model.architecture());
    let data = kiln::data::Dataset::new(x.to_vec(), vec![4], vec![1]).unwrap();
    let err = loaded.evaluate(&data).unwrap_err().to_string();
    assert!(
        err.contains("model `tiny`") && err.contains("built in memory") && err.contains("training settings"),
        "{err}"
    );
    let err = kiln::pipeline::load_test_split(&loaded.info, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data source"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn library_errors_carry_the_field_value_and_shape_to_match_on() {
    let err = Sequential::builder(&[4])
        .add(Dropout::new(1.5))
        .add(Dense::new(2))
        .build(0)
        .unwrap_err();
    match err {
        kiln::Error::InvalidSetting { field, value, .. } => {
            assert!(field.contains("dropout"), "{field}");
            assert_eq!(value, "1.5");
        }
        other => panic!("expected InvalidSetting, got {other:?}"),
    }
    let mut model = Sequential::builder(&[4]).add(Dense::new(2)).build(0).unwrap();
    match model.predict(&[1.0; 3], 1).unwrap_err() {
        kiln::Error::ShapeMismatch { expected, found, .. } => {
            assert!(expected.contains("[4]"), "{expected}");
            assert_eq!(found, "3 values");
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let err = Sequential::builder(&[4]).add(Dense::new(0)).build(0).unwrap_err();
    assert!(
        matches!(&err, kiln::Error::Layer { index: 0, kind, .. } if kind == "dense"),
        "{err:?}"
    );
}

/// A parameter-free model file whose metadata claims a 10^10-value input is refused when
/// it loads (the server would otherwise size buffers from it).
#[test]
fn a_model_file_claiming_an_absurd_input_shape_is_refused_at_load() {
    let model = Sequential::builder(&[4]).add(Flatten::new()).build(0).unwrap();
    let path = std::env::temp_dir().join(format!("kiln-absurd-{}.safetensors", std::process::id()));
    kiln::artifact::save(
        &model,
        &kiln::artifact::ModelInfo::for_model("absurd", &model),
        &path,
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + len]).unwrap();
    let tampered = header.replace(r#"\"input_shape\":[4]"#, r#"\"input_shape\":[100000,100000]"#);
    assert_ne!(tampered, header, "the architecture names its input shape");
    let mut text = tampered.trim_end().as_bytes().to_vec();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + len..]);
    std::fs::write(&path, out).unwrap();
    let err = kiln::artifact::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("input_shape = [100000, 100000]") && err.contains("values per sample"),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
}

/// A model file missing a tensor says so once, prefixed by its path once (it once said
/// `model P: model P: …`).
#[test]
fn a_missing_tensor_is_named_once_with_the_file() {
    let model = Sequential::builder(&[4]).add(Dense::new(2)).build(0).unwrap();
    let path = std::env::temp_dir().join(format!("kiln-missing-{}.safetensors", std::process::id()));
    kiln::artifact::save(&model, &kiln::artifact::ModelInfo::for_model("m", &model), &path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // Rename the tensor in the header, in place (same length, same offsets).
    let name = b"\"layers.0.kernel\":{";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    bytes[at + name.len() - 4] = b'x';
    std::fs::write(&path, &bytes).unwrap();
    let err = kiln::artifact::load(&path).unwrap_err().to_string();
    let prefix = format!("model {}:", path.display());
    assert!(err.starts_with(&prefix), "{err}");
    assert_eq!(err.matches(&prefix).count(), 1, "{err}");
    assert!(err.contains("`layers.0.kernel` is missing"), "{err}");
    std::fs::remove_file(&path).unwrap();
}
