//! Layers, activations, initializers, losses and the Sequential model.
//!
//! Configuration is data (burn's lesson): a [`LayerSpec`] is a serde struct, the same type
//! in a TOML spec and in a saved model's metadata, and [`LayerSpec::build`] turns it into a
//! [`Layer`] holding parameter ids.

mod activation;
mod fold;
mod initializer;
mod layer;
mod loss;
mod regularizer;
mod sequential;
mod spatial;
mod transfer;

pub use activation::Activation;
pub use initializer::Initializer;
pub use layer::{ActivationSpec, DenseSpec, DropoutSpec, FlattenSpec, Layer, LayerSpec};
pub use loss::{Loss, LossKind};
pub use regularizer::Regularizer;
pub use sequential::{Mode, Network, Sequential};
pub use spatial::{
    BatchNormLayer, BatchNormSpec, Conv2dSpec, ConvLayer, GlobalPoolSpec, PaddingSpec, Pair, PoolSpec,
    ReshapeSpec,
};
