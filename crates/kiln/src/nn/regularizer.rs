//! Weight regularizers as a Dense layer's `kernel_regularizer` / `bias_regularizer` name
//! them: `{ l2 = 1e-4 }`, `{ l1 = 1e-5 }` or both (Keras's L1, L2 and L1L2).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regularizer {
    #[serde(default)]
    pub l1: f32,
    #[serde(default)]
    pub l2: f32,
}
