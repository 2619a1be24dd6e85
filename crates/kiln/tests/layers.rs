//! The library's module layers, as the README draws them: no module uses one drawn above
//! it. Read from the source (outside test modules and comments), so a new wrong-way import
//! fails here.

use std::collections::BTreeSet;
use std::path::Path;

/// Each top-level module's layer, lowest first (same number: same layer).
const LAYERS: &[(&str, usize)] = &[
    ("error", 0),
    ("tensor", 0),
    ("rng", 0),
    ("io", 1),
    ("kernels", 1),
    ("params", 1),
    ("autograd", 2),
    ("ops", 2),
    ("optim", 3),
    ("data", 3),
    ("metrics", 3),
    ("nn", 4),
    ("lm", 4),
    ("compress", 5),
    ("prune", 5),
    ("quant", 5),
    ("train", 6),
    ("spec", 7),
    ("artifact", 7),
    ("pipeline", 8),
    ("select", 9),
    ("readme", 10),
];

/// Imports that still run the wrong way, each with why; the list may only shrink.
const KNOWN: &[(&str, &str, &str)] = &[];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The file's code without `#[cfg(test)]` modules and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut found = BTreeSet::new();
    for file in &files {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let top = relative
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" {
            continue;
        }
        let own = layer(&top).unwrap_or_else(|| panic!("{relative}: module `{top}` has no layer in LAYERS"));
        let text = code(&std::fs::read_to_string(file).unwrap());
        for used in text.split("crate::").skip(1) {
            let module: String = used
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if layer(&module).is_some_and(|l| l > own) {
                found.insert((relative.clone(), module));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(f, m, _)| (f.to_string(), m.to_string()))
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    assert!(new.is_empty(), "modules that use a layer above them: {new:?}");
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(gone.is_empty(), "fixed, so take them off KNOWN: {gone:?}");
}
