//! Layers built by hand, with Keras's defaults: `Dense::new(512).activation(Activation::Relu)`,
//! `Dropout::new(0.2)`, `Conv2D::new(32, 3)`, and a [`SequentialBuilder`] to `add` them to.
//! Each builder is (or wraps) the layer's spec type, so a model built here has exactly the
//! architecture metadata that the same layers written in a TOML spec give.

use super::{
    Activation, ActivationSpec, BatchNormSpec, Conv2dSpec, DenseSpec, DropoutSpec, FlattenSpec,
    GlobalPoolSpec, Initializer, LayerSpec, ModelSpec, PaddingSpec, Pair, PoolSpec, Regularizer, ReshapeSpec,
    Sequential,
};
use crate::error::Result;

/// A fully connected layer (Keras `Dense`): linear activation, a bias, glorot-uniform kernel.
pub type Dense = DenseSpec;
/// Inverted dropout (Keras `Dropout`).
pub type Dropout = DropoutSpec;
/// Flattens each sample to a vector (Keras `Flatten`).
pub type Flatten = FlattenSpec;
/// An activation on its own (Keras `Activation`).
pub type ActivationLayer = ActivationSpec;
/// A 2-D convolution, channels last (Keras `Conv2D`).
pub type Conv2D = Conv2dSpec;
/// Batch normalization (Keras `BatchNormalization`).
pub type BatchNormalization = BatchNormSpec;
/// Reshapes each sample (Keras `Reshape`; one -1 allowed).
pub type Reshape = ReshapeSpec;
/// The mean of each channel over the image (Keras `GlobalAveragePooling2D`).
pub type GlobalAveragePooling2D = GlobalPoolSpec;

impl DenseSpec {
    pub fn new(units: usize) -> DenseSpec {
        DenseSpec {
            units,
            activation: Activation::default(),
            use_bias: true,
            kernel_initializer: Initializer::default(),
            bias_initializer: Initializer::Zeros,
            kernel_regularizer: None,
            bias_regularizer: None,
        }
    }

    pub fn activation(self, activation: Activation) -> Self {
        DenseSpec { activation, ..self }
    }

    pub fn use_bias(self, use_bias: bool) -> Self {
        DenseSpec { use_bias, ..self }
    }

    pub fn kernel_initializer(self, kernel_initializer: Initializer) -> Self {
        DenseSpec {
            kernel_initializer,
            ..self
        }
    }

    pub fn bias_initializer(self, bias_initializer: Initializer) -> Self {
        DenseSpec {
            bias_initializer,
            ..self
        }
    }

    pub fn kernel_regularizer(self, regularizer: Regularizer) -> Self {
        DenseSpec {
            kernel_regularizer: Some(regularizer),
            ..self
        }
    }

    pub fn bias_regularizer(self, regularizer: Regularizer) -> Self {
        DenseSpec {
            bias_regularizer: Some(regularizer),
            ..self
        }
    }
}

impl DropoutSpec {
    pub fn new(rate: f32) -> DropoutSpec {
        DropoutSpec { rate }
    }
}

impl FlattenSpec {
    pub fn new() -> FlattenSpec {
        FlattenSpec {}
    }
}

impl ActivationSpec {
    pub fn new(activation: Activation) -> ActivationSpec {
        ActivationSpec { activation }
    }
}

impl Conv2dSpec {
    /// `filters` kernels of `kernel_size` × `kernel_size`, stride 1, `valid` padding.
    pub fn new(filters: usize, kernel_size: usize) -> Conv2dSpec {
        Conv2dSpec {
            filters,
            kernel_size: Pair::Both(kernel_size),
            strides: Pair::Both(1),
            padding: PaddingSpec::Valid,
            dilation_rate: Pair::Both(1),
            activation: Activation::default(),
            use_bias: true,
            kernel_initializer: Initializer::default(),
            bias_initializer: Initializer::Zeros,
            kernel_regularizer: None,
            bias_regularizer: None,
        }
    }

    pub fn activation(self, activation: Activation) -> Self {
        Conv2dSpec { activation, ..self }
    }

    pub fn strides(self, stride: usize) -> Self {
        Conv2dSpec {
            strides: Pair::Both(stride),
            ..self
        }
    }

    pub fn padding(self, padding: PaddingSpec) -> Self {
        Conv2dSpec { padding, ..self }
    }

    pub fn dilation_rate(self, rate: usize) -> Self {
        Conv2dSpec {
            dilation_rate: Pair::Both(rate),
            ..self
        }
    }

    pub fn use_bias(self, use_bias: bool) -> Self {
        Conv2dSpec { use_bias, ..self }
    }

    pub fn kernel_regularizer(self, regularizer: Regularizer) -> Self {
        Conv2dSpec {
            kernel_regularizer: Some(regularizer),
            ..self
        }
    }
}

impl PoolSpec {
    /// A `size` × `size` window, strided by its size, `valid` padding.
    pub fn new(size: usize) -> PoolSpec {
        PoolSpec {
            pool_size: Pair::Both(size),
            strides: None,
            padding: PaddingSpec::Valid,
        }
    }

    pub fn strides(self, stride: usize) -> Self {
        PoolSpec {
            strides: Some(Pair::Both(stride)),
            ..self
        }
    }

    pub fn padding(self, padding: PaddingSpec) -> Self {
        PoolSpec { padding, ..self }
    }
}

/// Max pooling (Keras `MaxPooling2D`): `MaxPooling2D::new(2)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MaxPooling2D(pub PoolSpec);

/// Average pooling (Keras `AveragePooling2D`).
#[derive(Debug, Clone, PartialEq)]
pub struct AveragePooling2D(pub PoolSpec);

impl MaxPooling2D {
    pub fn new(size: usize) -> MaxPooling2D {
        MaxPooling2D(PoolSpec::new(size))
    }

    pub fn strides(self, stride: usize) -> Self {
        MaxPooling2D(self.0.strides(stride))
    }

    pub fn padding(self, padding: PaddingSpec) -> Self {
        MaxPooling2D(self.0.padding(padding))
    }
}

impl AveragePooling2D {
    pub fn new(size: usize) -> AveragePooling2D {
        AveragePooling2D(PoolSpec::new(size))
    }

    pub fn strides(self, stride: usize) -> Self {
        AveragePooling2D(self.0.strides(stride))
    }

    pub fn padding(self, padding: PaddingSpec) -> Self {
        AveragePooling2D(self.0.padding(padding))
    }
}

impl Default for BatchNormSpec {
    fn default() -> Self {
        BatchNormSpec::new()
    }
}

impl BatchNormSpec {
    /// Keras's defaults: momentum 0.99, epsilon 1e-3, centred and scaled.
    pub fn new() -> BatchNormSpec {
        BatchNormSpec {
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
        }
    }

    pub fn momentum(self, momentum: f32) -> Self {
        BatchNormSpec { momentum, ..self }
    }

    pub fn epsilon(self, epsilon: f32) -> Self {
        BatchNormSpec { epsilon, ..self }
    }
}

impl ReshapeSpec {
    pub fn new(target_shape: &[i64]) -> ReshapeSpec {
        ReshapeSpec {
            target_shape: target_shape.to_vec(),
        }
    }
}

impl GlobalPoolSpec {
    pub fn new() -> GlobalPoolSpec {
        GlobalPoolSpec {}
    }
}

macro_rules! into_layer {
    ($($builder:ty => $variant:ident),* $(,)?) => {
        $(impl From<$builder> for LayerSpec {
            fn from(layer: $builder) -> LayerSpec {
                LayerSpec::$variant(layer)
            }
        })*
    };
}

into_layer! {
    DenseSpec => Dense,
    DropoutSpec => Dropout,
    FlattenSpec => Flatten,
    ActivationSpec => Activation,
    Conv2dSpec => Conv2d,
    BatchNormSpec => BatchNormalization,
    ReshapeSpec => Reshape,
    GlobalPoolSpec => GlobalAveragePooling2d,
}

impl From<MaxPooling2D> for LayerSpec {
    fn from(layer: MaxPooling2D) -> LayerSpec {
        LayerSpec::MaxPooling2d(layer.0)
    }
}

impl From<AveragePooling2D> for LayerSpec {
    fn from(layer: AveragePooling2D) -> LayerSpec {
        LayerSpec::AveragePooling2d(layer.0)
    }
}

/// A model being put together layer by layer (Keras's `Sequential([...])` / `model.add`).
#[derive(Debug, Clone, PartialEq)]
pub struct SequentialBuilder {
    architecture: ModelSpec,
}

impl SequentialBuilder {
    /// Appends a layer (Keras's `model.add`; not arithmetic).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Into<LayerSpec>) -> Self {
        self.architecture.layers.push(layer.into());
        self.architecture.names.push(None);
        self
    }

    /// Appends a layer under `name` (what transfer learning matches layers by).
    pub fn add_named(mut self, name: &str, layer: impl Into<LayerSpec>) -> Self {
        self.architecture.layers.push(layer.into());
        self.architecture.names.push(Some(name.to_string()));
        self
    }

    /// Keeps the last layer's weights as they are while training (Keras `trainable=False`).
    pub fn frozen(mut self) -> Self {
        if let Some(last) = self.architecture.layers.len().checked_sub(1) {
            self.architecture.frozen.push(last);
        }
        self
    }

    /// The architecture as data: what a spec's `[model]` says and a saved model records.
    pub fn architecture(&self) -> &ModelSpec {
        &self.architecture
    }

    /// The model, its weights initialized from `seed`; an error names the first layer
    /// whose shapes do not chain.
    pub fn build(&self, seed: u64) -> Result<Sequential> {
        let input_shape = self.architecture.input_shape.clone().unwrap_or_default();
        let mut model = Sequential::new(&input_shape, self.architecture.layers.clone(), seed)?;
        model.set_layer_names(self.architecture.names.clone())?;
        model.freeze_layers(&self.architecture.frozen);
        Ok(model)
    }
}

impl Sequential {
    /// Starts a model for samples shaped `input_shape` (Keras's `Input(shape=…)`), to
    /// `add` layers to and `build`.
    pub fn builder(input_shape: &[usize]) -> SequentialBuilder {
        SequentialBuilder {
            architecture: ModelSpec::new(Some(input_shape.to_vec()), Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every builder's defaults are the spec's defaults: a layer built by hand and the
    /// same layer written in TOML with only its required fields are equal.
    #[test]
    fn builders_have_the_spec_defaults() {
        let parsed = |text: &str| -> LayerSpec { toml::from_str(text).unwrap() };
        let pairs: [(LayerSpec, &str); 10] = [
            (Dense::new(8).into(), "type = \"dense\"\nunits = 8"),
            (Dropout::new(0.5).into(), "type = \"dropout\"\nrate = 0.5"),
            (Flatten::new().into(), "type = \"flatten\""),
            (
                ActivationLayer::new(Activation::Relu).into(),
                "type = \"activation\"\nactivation = \"relu\"",
            ),
            (
                Conv2D::new(4, 3).into(),
                "type = \"conv2d\"\nfilters = 4\nkernel_size = 3",
            ),
            (
                MaxPooling2D::new(2).into(),
                "type = \"max_pooling2d\"\npool_size = 2",
            ),
            (
                AveragePooling2D::new(2).into(),
                "type = \"average_pooling2d\"\npool_size = 2",
            ),
            (BatchNormalization::new().into(), "type = \"batch_normalization\""),
            (
                Reshape::new(&[8, 8, 1]).into(),
                "type = \"reshape\"\ntarget_shape = [8, 8, 1]",
            ),
            (
                GlobalAveragePooling2D::new().into(),
                "type = \"global_average_pooling2d\"",
            ),
        ];
        for (built, text) in pairs {
            assert_eq!(built, parsed(text), "{text}");
        }
    }

    #[test]
    fn a_builder_names_and_freezes_layers_and_reports_bad_shapes() {
        let builder = Sequential::builder(&[4])
            .add_named("hidden", Dense::new(3).activation(Activation::Relu))
            .frozen()
            .add(Dense::new(2));
        assert_eq!(builder.architecture().layer_names(), ["hidden", "dense_1"]);
        let model = builder.build(1).unwrap();
        assert_eq!(&model.architecture(), builder.architecture());
        assert_eq!(model.params.count(), 4 * 3 + 3 + 3 * 2 + 2);
        assert!(model
            .params
            .iter()
            .filter(|p| p.name.starts_with("layers.0."))
            .all(|p| p.frozen));
        let err = Sequential::builder(&[8, 8])
            .add(Conv2D::new(2, 9))
            .build(1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer 0"), "{err}");
    }
}
