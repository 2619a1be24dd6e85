//! A layer stack's architecture as data: its input shape, its layers' specs, their names
//! and which are frozen. The same type is a spec's `[model]` and a saved model's
//! `kiln.architecture` metadata, and what [`super::SequentialBuilder`] builds.

use serde::{Deserialize, Serialize};

use super::LayerSpec;

/// The architecture: the same type is saved in a model's metadata. Each layer may also
/// carry `name = "…"` (default: Keras-style `dense`, `dense_1`, …; used to match layers
/// when starting from another model) and `trainable = false` (its weights stay as they
/// are while training).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelSpecRepr", into = "ModelSpecRepr")]
pub struct ModelSpec {
    /// Shape of one sample; default: the data's sample shape. Must match the data if given.
    pub input_shape: Option<Vec<usize>>,
    pub layers: Vec<LayerSpec>,
    /// Per layer, the name the spec gave it (None: the default name).
    pub names: Vec<Option<String>>,
    /// Indices of the layers whose weights training leaves as they are.
    pub frozen: Vec<usize>,
}

impl ModelSpec {
    /// A spec of these layers, unnamed and all trainable.
    pub fn new(input_shape: Option<Vec<usize>>, layers: Vec<LayerSpec>) -> ModelSpec {
        let names = vec![None; layers.len()];
        ModelSpec {
            input_shape,
            layers,
            names,
            frozen: Vec::new(),
        }
    }

    /// Every layer's name: the given one, or its type with a count (`dense`, `dense_1`, …).
    pub fn layer_names(&self) -> Vec<String> {
        let mut seen: std::collections::HashMap<&'static str, usize> = Default::default();
        self.layers
            .iter()
            .zip(&self.names)
            .map(|(layer, given)| {
                let kind = layer.type_name();
                let n = seen.entry(kind).or_insert(0);
                let default = if *n == 0 {
                    kind.to_string()
                } else {
                    format!("{kind}_{n}")
                };
                *n += 1;
                given.clone().unwrap_or(default)
            })
            .collect()
    }
}

/// The TOML/JSON form of [`ModelSpec`]: `name` and `trainable` written inside each layer.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpecRepr {
    /// `type = "sequential"` may be written (it is the default kind of model).
    #[serde(default, rename = "type", skip_serializing)]
    _kind: Option<SequentialTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input_shape: Option<Vec<usize>>,
    layers: Vec<LayerEntry>,
}

/// The one value `[model] type` takes in a layer-stack spec.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SequentialTag {
    Sequential,
}

/// One layer as written: its spec plus `name` and `trainable`. A layer that does not parse
/// is kept as its error until the list is read, so the error can name its index.
struct LayerEntry {
    layer: std::result::Result<LayerSpec, String>,
    name: Option<String>,
    trainable: bool,
}

impl<'de> Deserialize<'de> for LayerEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        use serde_json::Value;
        let mut value = Value::deserialize(deserializer)?;
        let fields = value
            .as_object_mut()
            .ok_or_else(|| D::Error::custom("a layer must be a table"))?;
        let name = match fields.remove("name") {
            None => None,
            Some(Value::String(n)) if !n.is_empty() => Some(n),
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "layer name = {other} must be a non-empty string"
                )))
            }
        };
        let trainable = match fields.remove("trainable") {
            None => true,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "trainable = {other} must be true or false"
                )))
            }
        };
        let layer = match first_null(&value, String::new()) {
            // TOML has no null: a null here was a nan or inf, which JSON cannot hold.
            Some(field) => Err(format!("{field} is nan or infinite: expected a finite number")),
            None => serde_json::from_value(value).map_err(|e| e.to_string()),
        };
        Ok(LayerEntry {
            layer,
            name,
            trainable,
        })
    }
}

/// The path (`rate`, `kernel_size[1]`) of the first null inside a layer's settings.
fn first_null(value: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::Null => Some(path),
        Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            let inner = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            first_null(v, inner)
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| first_null(v, format!("{path}[{i}]"))),
        _ => None,
    }
}

impl Serialize for LayerEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let layer = self.layer.as_ref().map_err(serde::ser::Error::custom)?;
        let mut value = serde_json::to_value(layer).map_err(serde::ser::Error::custom)?;
        if let Some(fields) = value.as_object_mut() {
            if let Some(name) = &self.name {
                fields.insert("name".into(), name.clone().into());
            }
            if !self.trainable {
                fields.insert("trainable".into(), false.into());
            }
        }
        value.serialize(serializer)
    }
}

impl TryFrom<ModelSpecRepr> for ModelSpec {
    type Error = String;

    fn try_from(repr: ModelSpecRepr) -> std::result::Result<Self, String> {
        let mut spec = ModelSpec::new(repr.input_shape, Vec::new());
        spec.names.clear();
        for (i, entry) in repr.layers.into_iter().enumerate() {
            if !entry.trainable {
                spec.frozen.push(i);
            }
            spec.layers
                .push(entry.layer.map_err(|e| format!("model.layers[{i}]: {e}"))?);
            spec.names.push(entry.name);
        }
        let names = spec.layer_names();
        if let Some((i, name)) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)) {
            return Err(format!(
                "model.layers[{i}]: the name {name:?} is already another layer's"
            ));
        }
        Ok(spec)
    }
}

impl From<ModelSpec> for ModelSpecRepr {
    fn from(spec: ModelSpec) -> Self {
        let frozen = spec.frozen;
        let layers = spec
            .layers
            .into_iter()
            .zip(spec.names)
            .enumerate()
            .map(|(i, (layer, name))| LayerEntry {
                layer: Ok(layer),
                name,
                trainable: !frozen.contains(&i),
            })
            .collect();
        ModelSpecRepr {
            _kind: None,
            input_shape: spec.input_shape,
            layers,
        }
    }
}
