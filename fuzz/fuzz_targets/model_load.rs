//! Arbitrary bytes as a kiln model file: `kind_of`, `load_any`, `load` and
//! `load_language_model` (through a scratch file: they take paths). A model that loads is
//! then used: a prediction or a few generated tokens, and a save that must load back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = kiln_fuzz::write_scratch("model.safetensors", data);
    kiln_fuzz::load_every_way(&path);
});
