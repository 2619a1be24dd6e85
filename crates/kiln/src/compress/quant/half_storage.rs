//! 16-bit weight storage: the float model rounded to f16 or bf16, so the model in memory
//! is the one the file will hold (loading widens the values back to f32 exactly).

use crate::params::ParamStore;

use super::HalfFloat;

/// Rounds every parameter to its nearest `storage` value.
pub fn round_to_half(params: &mut ParamStore, storage: HalfFloat) {
    for p in params.iter_mut() {
        let rounded = storage.decode(&storage.encode(p.value.data()));
        p.value.data_mut().copy_from_slice(&rounded);
    }
}
