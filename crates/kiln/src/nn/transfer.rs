//! Transfer learning: starting a model from another's weights, layer by layer by name, and
//! holding chosen layers fixed while the rest train.

use std::path::Path;

use super::ModelSpec;
use crate::error::{Error, Result};

use super::Sequential;

/// The layer a parameter belongs to, from its name (`layers.3.kernel` → 3).
fn layer_of(param: &str) -> Option<(usize, &str)> {
    let rest = param.strip_prefix("layers.")?;
    let (index, field) = rest.split_once('.')?;
    Some((index.parse().ok()?, field))
}

impl Sequential {
    /// Holds the weights of the layers at `indices` fixed in training; every other layer
    /// learns. Batch normalization in a frozen layer still updates its moving statistics.
    pub fn freeze_layers(&mut self, indices: &[usize]) {
        for p in self.params.iter_mut() {
            // Layer state (batch normalization's moving statistics) keeps updating, and
            // keeps being averaged across ranks.
            p.frozen = p.trainable && layer_of(&p.name).is_some_and(|(i, _)| indices.contains(&i));
        }
    }

    /// Copies into this model (built from `spec`) the weights of every layer whose name
    /// `source` (built from `source_spec`, read from `origin`) also has. A layer of the same
    /// name but another type or shape is an error naming it. Returns the names of the layers
    /// whose weights were copied; none is an error too, as it is surely the wrong model.
    pub fn init_from(
        &mut self,
        spec: &ModelSpec,
        source: &Sequential,
        source_spec: &ModelSpec,
        origin: &Path,
    ) -> Result<Vec<String>> {
        let names = spec.layer_names();
        let source_names = source_spec.layer_names();
        let mut copied = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let Some(j) = source_names.iter().position(|n| n == name) else {
                continue;
            };
            let (mine, theirs) = (&spec.layers[i], &source_spec.layers[j]);
            if mine.type_name() != theirs.type_name() {
                return Err(Error::data(
                    origin,
                    format!(
                        "layer {name:?} is a {} there but a {} in the spec; rename one of them",
                        theirs.type_name(),
                        mine.type_name()
                    ),
                ));
            }
            let mut any = false;
            for p in self.params.iter_mut() {
                let Some((_, field)) = layer_of(&p.name).filter(|(at, _)| *at == i) else {
                    continue;
                };
                let wanted = format!("layers.{j}.{field}");
                let from = source.params.iter().find(|q| q.name == wanted).ok_or_else(|| {
                    Error::data(origin, format!("layer {name:?} has no `{field}` to start from"))
                })?;
                if from.value.dims() != p.value.dims() {
                    return Err(Error::data(
                        origin,
                        format!(
                            "layer {name:?}: {field} has shape {:?} there but {:?} in the spec",
                            from.value.dims(),
                            p.value.dims()
                        ),
                    ));
                }
                p.value.data_mut().copy_from_slice(from.value.data());
                any = true;
            }
            if any {
                copied.push(name.clone()); // layers without weights (flatten, …) carry nothing
            }
        }
        if copied.is_empty() {
            return Err(Error::data(
                origin,
                format!(
                    "has no layer with weights named like one of the spec's (its layers: {}; the spec's: {}); name the layers to carry over alike",
                    source_names.join(", "),
                    names.join(", ")
                ),
            ));
        }
        Ok(copied)
    }
}
