//! A PyTorch `state_dict` (saved with `safetensors.torch.save_file`) as the weights of the
//! layer stack a kiln spec describes.
//!
//! PyTorch modules carry no order in the file, so their names are sorted naturally (`2`
//! before `10`, as `nn.Sequential` numbers them) and given, in that order, to the spec's
//! layers that hold weights (Dense, Conv2D, BatchNormalization; ReLU, Dropout, pooling and
//! Flatten hold none). Layouts differ: `Linear` weights are `[out, in]` (kiln: `[in, out]`),
//! `Conv2d` weights `[out, in, kh, kw]` (kiln: `[kh, kw, in, out]`), and PyTorch flattens
//! an image channels first while kiln flattens it channels last, so the first Linear after
//! a Flatten has its inputs reordered.

use std::collections::HashMap;
use std::path::Path;

use super::{LayerSpec, Sequential};
use crate::error::{Error, Result};
use crate::io::{map_file, read_f32_tensor};
use crate::tensor::Tensor;

/// PyTorch's BatchNorm defaults, for a spec that leaves kiln's (Keras's) in place.
const TORCH_BATCH_NORM_EPSILON: f32 = 1e-5;
const KILN_BATCH_NORM_EPSILON: f32 = 1e-3;

/// A model built from `layers` on samples shaped `input_shape`, with the weights of the
/// state dict at `path`. A layer named (`names`) after a module takes that module; the
/// others take the remaining modules in order. Returns the model with one line per layer
/// saying which module it took.
pub fn import_state_dict(
    path: &Path,
    input_shape: &[usize],
    mut layers: Vec<LayerSpec>,
    names: &[Option<String>],
) -> Result<(Sequential, Vec<String>)> {
    let mut notes = Vec::new();
    for (i, layer) in layers.iter_mut().enumerate() {
        if let LayerSpec::BatchNormalization(b) = layer {
            if b.epsilon == KILN_BATCH_NORM_EPSILON {
                b.epsilon = TORCH_BATCH_NORM_EPSILON;
                notes.push(format!(
                    "layer {i} (batch_normalization): epsilon 1e-5, PyTorch's"
                ));
            }
        }
    }
    let bytes = map_file(path)?;
    let fail = |message: String| Error::data(path, message);
    let (tensors, _) = crate::io::read_safetensors(&bytes, fail)?;
    let modules = modules(tensors.names().into_iter().map(String::as_str));
    // The layers' input shapes, from a model built the same way with throwaway weights.
    let probe = Sequential::new(input_shape, layers.clone(), 0)?;
    let inputs: Vec<Vec<usize>> = std::iter::once(probe.input_shape())
        .chain(probe.network.shapes().iter().copied())
        .map(|s| s.dims().to_vec())
        .collect();
    let weighted: Vec<usize> = (0..layers.len()).filter(|&i| holds_weights(&layers[i])).collect();
    if weighted.len() != modules.len() {
        return Err(fail(format!(
            "the spec has {} layers with weights ({}), the state dict {} modules ({})",
            weighted.len(),
            describe_layers(&layers, &weighted),
            modules.len(),
            describe_modules(&modules, &tensors)
        )));
    }
    refuse_flattened_batch_norm(&layers, &inputs).map_err(fail)?;
    let module_of = assign_modules(&weighted, names, &modules).map_err(fail)?;
    for &i in &weighted {
        notes.push(format!(
            "layer {i} ({}) ← `{}`",
            layers[i].type_name(),
            module_of[&i]
        ));
    }
    let model = Sequential::with_params(input_shape, layers.clone(), &mut |name, dims| {
        let (index, field) =
            kiln_param(name).ok_or_else(|| fail(format!("unexpected parameter `{name}`")))?;
        let module = module_of[&index];
        let (key, layout) = torch_tensor(&layers, index, field, module, &inputs);
        let torch_dims = layout.torch_dims(dims);
        let value = read_f32_tensor(&tensors, &key, &torch_dims).map_err(|message| {
            fail(format!(
                "layer {index} ({}) `{field}` {dims:?}: {message}",
                layers[index].type_name()
            ))
        })?;
        Ok(layout.to_kiln(value, dims))
    })?;
    let used: Vec<&str> = modules
        .iter()
        .flat_map(|(_, keys)| keys)
        .map(String::as_str)
        .filter(|key| !ignored(key))
        .filter(|key| {
            !model
                .params
                .iter()
                .any(|p| key_of(p.name.as_str(), &module_of, &layers, &inputs) == *key)
        })
        .collect();
    if let Some(first) = used.first() {
        return Err(fail(format!(
            "tensor `{first}` has no place in the spec's layers ({} unused)",
            used.len()
        )));
    }
    Ok((model, notes))
}

/// Which module each weighted layer takes: the one it is named after, else the next
/// remaining one in natural order, which must be the order PyTorch numbered them in.
fn assign_modules<'m>(
    weighted: &[usize],
    names: &[Option<String>],
    modules: &'m [(String, Vec<String>)],
) -> std::result::Result<HashMap<usize, &'m str>, String> {
    let mut remaining: Vec<&str> = modules.iter().map(|(m, _)| m.as_str()).collect();
    let mut module_of = HashMap::new();
    for &i in weighted {
        let Some(name) = names.get(i).and_then(|n| n.as_deref()) else {
            continue;
        };
        if let Some(at) = remaining.iter().position(|m| *m == name) {
            module_of.insert(i, remaining.remove(at));
        }
    }
    for pair in remaining.windows(2) {
        let (a, b) = (natural_key(pair[0]), natural_key(pair[1]));
        let first_difference = a.iter().zip(&b).find(|(x, y)| x != y);
        if let Some(((1, ..), _) | (_, (1, ..))) = first_difference {
            return Err(format!(
                "modules `{}` and `{}` are told apart by name, not by the order PyTorch built them in: \
                 give the spec's layers those names (`name = \"{}\"`) to say which is which",
                pair[0], pair[1], pair[0]
            ));
        }
    }
    let unnamed: Vec<usize> = weighted
        .iter()
        .copied()
        .filter(|i| !module_of.contains_key(i))
        .collect();
    for (i, module) in unnamed.into_iter().zip(remaining) {
        module_of.insert(i, module);
    }
    Ok(module_of)
}

/// Batch normalization of a flattened image: PyTorch orders those features channels first,
/// kiln channels last, and that reordering is not implemented for it.
fn refuse_flattened_batch_norm(
    layers: &[LayerSpec],
    inputs: &[Vec<usize>],
) -> std::result::Result<(), String> {
    for (i, layer) in layers.iter().enumerate() {
        if matches!(layer, LayerSpec::BatchNormalization(_)) && flattened_image(layers, i, inputs).is_some() {
            return Err(format!(
                "layer {i} (batch_normalization) normalizes a flattened image, whose features PyTorch orders \
                 channels first and kiln channels last: not supported yet; normalize before the flatten"
            ));
        }
    }
    Ok(())
}

/// The state-dict key a kiln parameter was read from.
fn key_of(
    name: &str,
    module_of: &HashMap<usize, &str>,
    layers: &[LayerSpec],
    inputs: &[Vec<usize>],
) -> String {
    kiln_param(name)
        .map(|(i, field)| torch_tensor(layers, i, field, module_of[&i], inputs).0)
        .unwrap_or_default()
}

fn holds_weights(layer: &LayerSpec) -> bool {
    matches!(
        layer,
        LayerSpec::Dense(_) | LayerSpec::Conv2d(_) | LayerSpec::BatchNormalization(_)
    )
}

/// Buffers PyTorch saves that kiln has no use for.
fn ignored(key: &str) -> bool {
    key.ends_with(".num_batches_tracked")
}

/// `layers.3.kernel` → (3, "kernel").
fn kiln_param(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("layers.")?;
    let (index, field) = rest.split_once('.')?;
    Some((index.parse().ok()?, field))
}

/// The state dict's modules (key prefixes) in natural order, each with its keys.
fn modules<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<(String, Vec<String>)> {
    let mut by_module: Vec<(String, Vec<String>)> = Vec::new();
    for key in keys {
        let module = key.rsplit_once('.').map_or("", |(m, _)| m).to_string();
        match by_module.iter_mut().find(|(m, _)| *m == module) {
            Some((_, keys)) => keys.push(key.to_string()),
            None => by_module.push((module, vec![key.to_string()])),
        }
    }
    by_module.sort_by_key(|(module, _)| natural_key(module));
    by_module
}

/// `features.10.conv` → [Text("features"), Number(10), Text("conv")], so numbers compare
/// as numbers.
fn natural_key(module: &str) -> Vec<(u8, u64, String)> {
    module
        .split('.')
        .map(|part| match part.parse::<u64>() {
            Ok(n) => (0, n, String::new()),
            Err(_) => (1, 0, part.to_string()),
        })
        .collect()
}

/// How a PyTorch tensor's layout becomes kiln's.
enum Layout {
    Same,
    /// `Linear.weight` `[out, in]` → kernel `[in, out]`.
    Transposed,
    /// The first Linear after a Flatten of `[h, w, c]`: PyTorch's inputs in (c, h, w)
    /// order, kiln's in (h, w, c) order.
    FlattenedImage {
        h: usize,
        w: usize,
        c: usize,
    },
    /// `Conv2d.weight` `[out, in, kh, kw]` → kernel `[kh, kw, in, out]`.
    Conv,
}

impl Layout {
    fn torch_dims(&self, kiln: &[usize]) -> Vec<usize> {
        match self {
            Layout::Same => kiln.to_vec(),
            Layout::Transposed | Layout::FlattenedImage { .. } => vec![kiln[1], kiln[0]],
            Layout::Conv => vec![kiln[3], kiln[2], kiln[0], kiln[1]],
        }
    }

    fn to_kiln(&self, torch: Tensor, kiln: &[usize]) -> Tensor {
        let t = torch.data();
        let values: Vec<f32> = match *self {
            Layout::Same => return torch,
            Layout::Transposed => {
                let (inputs, outputs) = (kiln[0], kiln[1]);
                (0..inputs * outputs)
                    .map(|k| t[(k % outputs) * inputs + k / outputs])
                    .collect()
            }
            Layout::FlattenedImage { h, w, c } => {
                let (inputs, outputs) = (kiln[0], kiln[1]);
                (0..inputs * outputs)
                    .map(|k| {
                        let (row, o) = (k / outputs, k % outputs);
                        let (y, x, channel) = (row / (w * c), row / c % w, row % c);
                        t[o * inputs + (channel * h + y) * w + x]
                    })
                    .collect()
            }
            Layout::Conv => {
                let (kh, kw, inputs, outputs) = (kiln[0], kiln[1], kiln[2], kiln[3]);
                let mut values = vec![0.0; t.len()];
                for (k, v) in values.iter_mut().enumerate() {
                    let (y, x, i, o) = (
                        k / (kw * inputs * outputs),
                        k / (inputs * outputs) % kw,
                        k / outputs % inputs,
                        k % outputs,
                    );
                    *v = t[((o * inputs + i) * kh + y) * kw + x];
                }
                values
            }
        };
        Tensor::new(kiln, values).expect("same number of values")
    }
}

/// The state-dict key and layout behind parameter `field` of layer `index`; `inputs` are
/// the layers' input shapes.
fn torch_tensor(
    layers: &[LayerSpec],
    index: usize,
    field: &str,
    module: &str,
    inputs: &[Vec<usize>],
) -> (String, Layout) {
    let key = |name: &str| match module {
        "" => name.to_string(),
        m => format!("{m}.{name}"),
    };
    match (&layers[index], field) {
        (LayerSpec::Dense(_), "kernel") => match flattened_image(layers, index, inputs) {
            Some((h, w, c)) => (key("weight"), Layout::FlattenedImage { h, w, c }),
            None => (key("weight"), Layout::Transposed),
        },
        (LayerSpec::Conv2d(_), "kernel") => (key("weight"), Layout::Conv),
        (LayerSpec::BatchNormalization(_), "gamma") => (key("weight"), Layout::Same),
        (LayerSpec::BatchNormalization(_), "beta") => (key("bias"), Layout::Same),
        (LayerSpec::BatchNormalization(_), "moving_mean") => (key("running_mean"), Layout::Same),
        (LayerSpec::BatchNormalization(_), "moving_variance") => (key("running_var"), Layout::Same),
        (_, other) => (key(other), Layout::Same),
    }
}

/// For a layer fed (through layers without weights: dropout, activation) by a Flatten of
/// an image: that image's (h, w, c).
fn flattened_image(
    layers: &[LayerSpec],
    dense: usize,
    inputs: &[Vec<usize>],
) -> Option<(usize, usize, usize)> {
    for j in (0..dense).rev() {
        match &layers[j] {
            LayerSpec::Flatten(_) => {
                return match inputs[j][..] {
                    [h, w, c] => Some((h, w, c)),
                    _ => None,
                }
            }
            LayerSpec::Dropout(_) | LayerSpec::Activation(_) => continue,
            _ => return None,
        }
    }
    None
}

fn describe_layers(layers: &[LayerSpec], weighted: &[usize]) -> String {
    let names: Vec<String> = weighted
        .iter()
        .map(|&i| format!("{i} {}", layers[i].type_name()))
        .collect();
    names.join(", ")
}

fn describe_modules(modules: &[(String, Vec<String>)], tensors: &safetensors::SafeTensors) -> String {
    let names: Vec<String> = modules
        .iter()
        .map(|(module, keys)| {
            let shapes: Vec<String> = keys
                .iter()
                .filter(|k| !ignored(k))
                .map(|k| {
                    let field = k.rsplit('.').next().unwrap_or(k);
                    let shape = tensors
                        .tensor(k)
                        .map(|t| format!("{:?}", t.shape()))
                        .unwrap_or_default();
                    format!("{field} {shape}")
                })
                .collect();
            format!("`{module}` ({})", shapes.join(", "))
        })
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_sort_naturally_as_nn_sequential_numbers_them() {
        let keys = [
            "10.weight",
            "2.bias",
            "2.weight",
            "features.10.weight",
            "features.9.weight",
            "fc.bias",
        ];
        let order: Vec<String> = modules(keys.into_iter()).into_iter().map(|(m, _)| m).collect();
        assert_eq!(order, ["2", "10", "fc", "features.9", "features.10"]);
    }

    #[test]
    fn named_modules_go_by_the_spec_s_names_and_are_never_guessed() {
        let modules = modules(["fc_in.weight", "fc_hidden.weight", "3.weight"].into_iter());
        let names = [
            Some("fc_in".to_string()),
            None,
            Some("fc_hidden".to_string()),
            None,
        ];
        let assigned = assign_modules(&[0, 2, 3], &names, &modules).unwrap();
        assert_eq!(
            (assigned[&0], assigned[&2], assigned[&3]),
            ("fc_in", "fc_hidden", "3")
        );
        // Without the names, their order would be alphabetical, not PyTorch's: refused.
        let named = self::modules(["fc_in.weight", "fc_hidden.weight"].into_iter());
        let err = assign_modules(&[0, 1], &[None, None], &named).unwrap_err();
        assert!(
            err.contains("`fc_hidden` and `fc_in`") && err.contains("name = "),
            "{err}"
        );
    }

    #[test]
    fn layouts_move_each_value_where_kiln_reads_it() {
        // Linear [out 2, in 3] → kernel [3, 2].
        let linear = Tensor::new(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        assert_eq!(
            Layout::Transposed.to_kiln(linear, &[3, 2]).data(),
            [1., 4., 2., 5., 3., 6.]
        );
        // Conv2d [out 2, in 1, kh 1, kw 2] → [kh 1, kw 2, in 1, out 2].
        let conv = Tensor::new(&[2, 1, 1, 2], vec![1., 2., 3., 4.]).unwrap();
        assert_eq!(Layout::Conv.to_kiln(conv, &[1, 2, 1, 2]).data(), [1., 3., 2., 4.]);
        // After flattening a 1×2×2 image: PyTorch's inputs (c, h, w), kiln's (h, w, c). One
        // output whose weight on PyTorch's input i is i: kiln's row (h, w, c) holds c·2 + …
        let w = Tensor::new(&[1, 4], vec![0., 1., 2., 3.]).unwrap();
        let flat = Layout::FlattenedImage { h: 1, w: 2, c: 2 };
        assert_eq!(flat.to_kiln(w, &[4, 1]).data(), [0., 2., 1., 3.]);
    }
}
