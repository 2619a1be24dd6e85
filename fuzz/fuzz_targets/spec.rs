//! UTF-8 input as a spec (TOML). `Spec::from_file` (through a scratch file: it picks the
//! kind from `[model] type`) and both kinds' text parsers; a spec that parses must pass
//! `check` again, and survive the two round trips kiln relies on: `to_toml` (documented
//! to read back to the same spec) and JSON (how checkpoints store it, read by
//! `Spec::from_json`).
#![no_main]

use std::path::Path;

use kiln::spec::{LmSpec, Spec, TrainSpec};
use kiln_fuzz::write_scratch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let name = Path::new("fuzz.toml");
    let _ = TrainSpec::parse(text, name);
    let _ = LmSpec::parse(text, name);
    let path = write_scratch("spec.toml", data);
    let Ok(spec) = Spec::from_file(&path) else {
        return;
    };
    if let Err(e) = spec.check(&path) {
        panic!("Spec::from_file accepted a spec that check rejects: {e}");
    }
    // Debug text, not ==, so that a NaN setting compares equal to itself.
    let same = |a: &Spec, b: &Spec| format!("{a:?}") == format!("{b:?}");
    let json = serde_json::to_value(&spec).expect("a spec serializes to JSON");
    match Spec::from_json(json, &path) {
        Ok(back) => assert!(
            same(&spec, &back),
            "JSON round trip changed the spec:\n{spec:?}\n{back:?}"
        ),
        Err(e) => panic!("a parsed spec does not read back from its JSON: {e}"),
    }
    if let Ok(toml) = spec.to_toml() {
        let again = write_scratch("spec-again.toml", toml.as_bytes());
        match Spec::from_file(&again) {
            Ok(back) => assert!(
                same(&spec, &back),
                "TOML round trip changed the spec:\n{toml}\n{spec:?}\n{back:?}"
            ),
            Err(e) => panic!("to_toml wrote a spec that does not read back: {e}\n{toml}"),
        }
    }
});
