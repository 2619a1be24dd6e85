//! A request body through `kiln serve`'s decoders (Open Inference Protocol v2 as JSON and
//! with Triton's binary tensor data, TF-Serving's `instances`), for an image model and a
//! tabular one: each must answer with samples or a 400, never panic, and samples it
//! returns must be whole and within the batch limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_serve::fuzzing::decode_request(data);
});
