//! Layers, activations, initializers, losses and the Sequential model.
//!
//! Configuration is data (burn's lesson): a [`LayerSpec`] is a serde struct, the same type
//! in a TOML spec and in a saved model's metadata, and [`LayerSpec::build`] turns it into a
//! [`Layer`] holding parameter ids.

mod activation;
mod architecture;
mod builders;
mod ensemble;
mod fold;
mod initializer;
mod layer;
mod loss;
pub mod memory;
mod model;
mod predict;
mod regularizer;
mod sequential;
mod sequential_passes;
mod spatial;
mod torch_state;
mod transfer;

pub use activation::Activation;
pub use architecture::ModelSpec;
pub use builders::{
    ActivationLayer, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
    GlobalAveragePooling2D, MaxPooling2D, Reshape, SequentialBuilder,
};
pub use ensemble::Ensemble;
pub use initializer::Initializer;
pub use layer::{ActivationSpec, DenseSpec, DropoutSpec, FlattenSpec, Layer, LayerSpec};
pub use loss::{Loss, LossKind};
pub use model::{Batch, BatchLoss, Evaluate, Model};
pub use predict::Predict;
pub use regularizer::Regularizer;
pub use sequential::{Mode, Network, Sequential};
pub use spatial::{
    BatchNormLayer, BatchNormSpec, Conv2dSpec, ConvLayer, GlobalPoolSpec, PaddingSpec, Pair, PoolSpec,
    ReshapeSpec,
};
pub use torch_state::import_state_dict;
