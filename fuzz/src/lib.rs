//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! kiln's model, spec and feature-row readers take paths, so the targets write each input
//! to a scratch file first: one folder per process (`kiln-fuzz-PID`) under `/dev/shm`
//! when it exists (memory, no disk writes), else the system's temporary folder.
//! `KILN_FUZZ_TMP` overrides the parent folder. `run.sh` removes the folders of
//! processes that have exited.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's scratch folder, made on first use.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = std::env::var_os("KILN_FUZZ_TMP")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
            .unwrap_or_else(std::env::temp_dir);
        let dir = parent.join(format!("kiln-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the fuzz scratch folder can be made");
        dir
    })
}

/// Writes `bytes` to the scratch file `name` (replacing it) and returns its path.
pub fn write_scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, bytes).expect("the fuzz scratch file can be written");
    path
}

/// Reads the model file at `path` every way kiln does: `kind_of`, `load_any`, and the two
/// loaders called directly (each checks the file on its own, whatever `kind_of` says). A
/// model that loads is then used (see [`exercise_classifier`], [`exercise_language_model`]).
pub fn load_every_way(path: &Path) {
    use kiln::artifact::{self, SavedModel};
    let _ = artifact::kind_of(path);
    let loaded = artifact::load_any(path);
    trace("load_any", &loaded);
    match loaded {
        Ok(SavedModel::Sequential(mut a)) => exercise_classifier(&mut a),
        Ok(SavedModel::LanguageModel(m)) => exercise_language_model(&m),
        Err(_) => {}
    }
    let _ = artifact::load(path);
    if let Ok(m) = artifact::load_language_model(path) {
        exercise_language_model(&m);
    }
}

/// With `KILN_FUZZ_TRACE` set, says on stderr how a call ended: for triage, and to see
/// which inputs get past the parsers (`model_metadata -runs=0 corpus/model_metadata`).
pub fn trace<T, E: std::fmt::Display>(what: &str, result: &Result<T, E>) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("KILN_FUZZ_TRACE").is_some()) {
        match result {
            Ok(_) => eprintln!("kiln-fuzz: {what}: ok"),
            Err(e) => eprintln!("kiln-fuzz: {what}: error: {e}"),
        }
    }
}

/// Runs the checks a loaded classifier must pass: a prediction on zeros (for inputs of a
/// bounded size) and a save that loads back.
pub fn exercise_classifier(artifact: &mut kiln::artifact::Artifact) {
    let input = artifact.model.input_shape().numel();
    if (1..=1 << 16).contains(&input) {
        let zeros = vec![0.0f32; input];
        let _ = artifact.model.predict(&zeros, 1);
    }
    // A file kiln writes itself must load back.
    let path = scratch_dir().join("resaved.safetensors");
    if kiln::artifact::save(&artifact.model, &artifact.info, &path).is_ok() {
        if let Err(e) = kiln::artifact::load(&path) {
            panic!("a model kiln saved does not load back: {e}");
        }
    }
}

/// Runs the checks a loaded language model must pass: greedy generation of a few tokens
/// from token 0, decoded with its tokenizer.
pub fn exercise_language_model(model: &kiln::artifact::LanguageModel) {
    use kiln::lm::generate::{generate, Sampling};
    let sampling = Sampling {
        temperature: 0.0,
        top_k: None,
        top_p: None,
        seed: 0,
    };
    if let Ok(ids) = generate(&model.gpt, &[0], 3, &sampling, true, &mut |_| {}) {
        let _ = model.tokenizer.decode(&ids);
    }
}
