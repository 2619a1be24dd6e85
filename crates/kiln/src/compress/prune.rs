//! Magnitude pruning, two ways:
//!
//! - **Unstructured** (TensorFlow Model Optimization's semantics): Dense and Conv2D kernels
//!   keep only their largest-magnitude weights, each kernel to the target sparsity or all
//!   of them against one global threshold; a schedule raises the sparsity during fine-tuning
//!   (ConstantSparsity, PolynomialDecay), and a mask re-zeroes pruned weights after every
//!   optimizer step. The model gets sparser (and its file smaller), not faster.
//! - **Structured**: whole hidden units of Dense layers with the smallest weight norms are
//!   removed, with the matching inputs of the next Dense layer, giving a smaller dense
//!   model that runs faster.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::{Layer, LayerSpec, Sequential};
use crate::params::{ParamId, ParamStore};
use crate::tensor::Tensor;

/// When and how far to prune, by optimizer step (TFMOT's `pruning_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PruningSchedule {
    /// `target_sparsity` from `begin_step` on, masks refreshed every `frequency` steps
    /// until `end_step` (None: for ever).
    ConstantSparsity {
        target_sparsity: f32,
        begin_step: u64,
        end_step: Option<u64>,
        frequency: u64,
    },
    /// Sparsity rising from `initial_sparsity` to `final_sparsity` between `begin_step`
    /// and `end_step` as final + (initial − final)·(1 − progress)^power.
    PolynomialDecay {
        initial_sparsity: f32,
        final_sparsity: f32,
        begin_step: u64,
        end_step: u64,
        power: f32,
        frequency: u64,
    },
}

impl PruningSchedule {
    /// The sparsity to prune to at `step`, when the masks are due for an update then.
    pub fn update_at(&self, step: u64) -> Option<f32> {
        let due = |begin: u64, end: Option<u64>, frequency: u64| {
            step >= begin && end.is_none_or(|e| step <= e) && (step - begin).is_multiple_of(frequency.max(1))
        };
        match *self {
            PruningSchedule::ConstantSparsity {
                target_sparsity,
                begin_step,
                end_step,
                frequency,
            } => due(begin_step, end_step, frequency).then_some(target_sparsity),
            PruningSchedule::PolynomialDecay {
                initial_sparsity,
                final_sparsity,
                begin_step,
                end_step,
                power,
                frequency,
            } => {
                let progress = match end_step > begin_step {
                    true => {
                        ((step.saturating_sub(begin_step)) as f32 / (end_step - begin_step) as f32).min(1.0)
                    }
                    false => 1.0,
                };
                let sparsity =
                    final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress).powf(power);
                due(begin_step, Some(end_step), frequency).then_some(sparsity)
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, s: f32| {
            if (0.0..1.0).contains(&s) {
                Ok(())
            } else {
                Err(Error::setting(
                    format!("pruning {name}"),
                    s,
                    "a fraction in [0, 1)",
                ))
            }
        };
        match *self {
            PruningSchedule::ConstantSparsity { target_sparsity, .. } => {
                check("target_sparsity", target_sparsity)
            }
            PruningSchedule::PolynomialDecay {
                initial_sparsity,
                final_sparsity,
                ..
            } => {
                check("initial_sparsity", initial_sparsity)?;
                check("final_sparsity", final_sparsity)
            }
        }
    }
}

/// Pruning in progress on a model's Dense and Conv2D kernels: the schedule and each
/// kernel's mask.
#[derive(Debug, Clone)]
pub struct Pruning {
    pub schedule: PruningSchedule,
    /// One magnitude threshold for all kernels together (the smallest weights of the whole
    /// model go, so kernels end up unevenly sparse), rather than each kernel to the sparsity.
    pub global: bool,
    kernels: Vec<ParamId>,
    /// Per kernel, 1.0 where a weight is kept, 0.0 where pruned (empty until the first
    /// update).
    masks: Vec<Vec<f32>>,
}

impl Pruning {
    /// Pruning of every Dense and Conv2D kernel of `model` by `schedule`, each kernel to
    /// the sparsity (set [`Pruning::global`] for one threshold across them).
    pub fn new(model: &Sequential, schedule: PruningSchedule) -> Result<Pruning> {
        schedule.validate()?;
        let kernels: Vec<ParamId> = model
            .network()
            .layers
            .iter()
            .filter_map(|l| match l {
                Layer::Dense { kernel, .. } => Some(*kernel),
                Layer::Conv2d(c) => Some(c.kernel),
                _ => None,
            })
            .collect();
        if kernels.is_empty() {
            return Err(Error::unsupported(
                "pruning",
                "the model has no Dense or Conv2D kernel to prune",
            ));
        }
        Ok(Pruning {
            schedule,
            global: false,
            masks: vec![Vec::new(); kernels.len()],
            kernels,
        })
    }

    /// After the optimizer's `step`-th update: refresh the masks if the schedule says so,
    /// then zero every pruned weight (so pruned weights stay pruned).
    pub fn after_update(&mut self, params: &mut ParamStore, step: u64) {
        if let Some(sparsity) = self.schedule.update_at(step) {
            match self.global {
                true => {
                    let all: Vec<f32> = self
                        .kernels
                        .iter()
                        .flat_map(|&id| params.get(id).value.data().iter().copied())
                        .collect();
                    let mut whole = magnitude_mask(&all, sparsity).into_iter();
                    for (mask, &id) in self.masks.iter_mut().zip(&self.kernels) {
                        *mask = whole.by_ref().take(params.get(id).value.numel()).collect();
                    }
                }
                false => {
                    for (mask, &id) in self.masks.iter_mut().zip(&self.kernels) {
                        *mask = magnitude_mask(params.get(id).value.data(), sparsity);
                    }
                }
            }
        }
        for (mask, &id) in self.masks.iter().zip(&self.kernels) {
            if !mask.is_empty() {
                let w = params.get_mut(id).value.data_mut();
                w.iter_mut().zip(mask).for_each(|(w, m)| *w *= m);
            }
        }
    }
}

/// 1.0 for the weights kept, 0.0 for the `sparsity` fraction with the smallest magnitude.
pub fn magnitude_mask(weights: &[f32], sparsity: f32) -> Vec<f32> {
    let prune = ((weights.len() as f64) * sparsity as f64).floor() as usize;
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Smallest magnitude first; ties broken by position so the mask is deterministic.
    order.sort_by(|&a, &b| weights[a].abs().total_cmp(&weights[b].abs()).then(a.cmp(&b)));
    let mut mask = vec![1.0; weights.len()];
    for &i in &order[..prune] {
        mask[i] = 0.0;
    }
    mask
}

/// Prunes every Dense and Conv2D kernel of `model` at once to `sparsity` (no fine-tuning),
/// each kernel alone or, `global`, all against one threshold.
pub fn prune_weights(model: &mut Sequential, sparsity: f32, global: bool) -> Result<()> {
    let mut pruning = Pruning::new(
        model,
        PruningSchedule::ConstantSparsity {
            target_sparsity: sparsity,
            begin_step: 0,
            end_step: Some(0),
            frequency: 1,
        },
    )?;
    pruning.global = global;
    pruning.after_update(&mut model.params, 0);
    Ok(())
}

/// What structured pruning did to one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitsRemoved {
    pub layer: usize,
    /// Dense units or convolution filters.
    pub before: usize,
    pub after: usize,
    pub filters: bool,
}

/// Where a pruned layer's outputs are consumed: the next Dense or Conv2D layer, how many
/// kernel rows each of its input channels has (1 for a Dense layer reading units or a
/// global average, height·width after a Flatten, the taps of a convolution), and the batch
/// normalizations on the way, whose per-channel parameters are sliced too.
struct Consumer {
    layer: usize,
    positions: usize,
    norms: Vec<usize>,
}

/// A copy of `model` without the `fraction` of each hidden Dense layer's units and each
/// Conv2D layer's filters whose incoming weights have the smallest L2 norm; the layer that
/// reads them loses the matching inputs (and batch normalizations between, the matching
/// channels). Only layers whose outputs reach another Dense or Conv2D layer through
/// Dropout, Activation, BatchNormalization, pooling, or a Flatten or global average before
/// a Dense layer, are pruned; the output layer keeps its units.
pub fn remove_units(model: &Sequential, fraction: f32) -> Result<(Sequential, Vec<UnitsRemoved>)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::setting(
            "pruning fraction",
            fraction,
            "a fraction in [0, 1)",
        ));
    }
    let specs = model.specs().to_vec();
    let shapes: Vec<Vec<usize>> = model
        .layer_output_shapes()
        .iter()
        .map(|s| s.dims().to_vec())
        .collect();
    let mut kept: Vec<Option<Vec<usize>>> = vec![None; specs.len()];
    let mut consumers: Vec<Option<Consumer>> = (0..specs.len()).map(|_| None).collect();
    for (i, spec) in specs.iter().enumerate() {
        let outputs = match spec {
            LayerSpec::Dense(d) => d.units,
            LayerSpec::Conv2d(c) => c.filters,
            _ => continue,
        };
        let Some(consumer) = consumer_of(&specs, &shapes, i) else {
            continue;
        };
        let kernel = param(model, &format!("layers.{i}.kernel"))?;
        let rows = kernel.numel() / outputs;
        let norms: Vec<f32> = (0..outputs)
            .map(|u| {
                (0..rows)
                    .map(|r| kernel.data()[r * outputs + u].powi(2))
                    .sum::<f32>()
            })
            .collect();
        let keep = ((outputs as f64) * (1.0 - fraction as f64)).ceil().max(1.0) as usize;
        let mut order: Vec<usize> = (0..outputs).collect();
        order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
        let mut units = order[..keep].to_vec();
        units.sort_unstable();
        kept[i] = Some(units);
        consumers[i] = Some(consumer);
    }
    if kept.iter().all(Option::is_none) {
        return Err(Error::unsupported(
            "structured pruning",
            "nothing to prune: no Dense or Conv2D layer feeds another one",
        ));
    }
    let mut new_specs = specs.clone();
    let mut report = Vec::new();
    // Per layer: the kernel rows to keep (a consumer), and the channels to keep of a
    // per-channel parameter (a batch normalization on the way).
    let mut input_rows: Vec<Option<Vec<usize>>> = vec![None; specs.len()];
    let mut channels: Vec<Option<&Vec<usize>>> = vec![None; specs.len()];
    for (i, units) in kept.iter().enumerate() {
        let (Some(units), Some(consumer)) = (units, &consumers[i]) else {
            continue;
        };
        let (before, filters) = match &mut new_specs[i] {
            LayerSpec::Dense(d) => (std::mem::replace(&mut d.units, units.len()), false),
            LayerSpec::Conv2d(c) => (std::mem::replace(&mut c.filters, units.len()), true),
            _ => unreachable!("only Dense and Conv2D layers are pruned"),
        };
        report.push(UnitsRemoved {
            layer: i,
            before,
            after: units.len(),
            filters,
        });
        // Row p·before + c of the consumer's kernel reads channel c at position p.
        input_rows[consumer.layer] = Some(
            (0..consumer.positions)
                .flat_map(|p| units.iter().map(move |&c| p * before + c))
                .collect(),
        );
        for &n in &consumer.norms {
            channels[n] = Some(units);
        }
    }
    let mut take = |name: &str, dims: &[usize]| -> Result<Tensor> {
        let full = param(model, name)?;
        let layer: usize = name
            .strip_prefix("layers.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| Error::mismatch("a parameter name", "layers.N.kernel or layers.N.bias", name))?;
        let is_kernel = name.ends_with(".kernel");
        let columns = kept[layer].as_ref().or(channels[layer]);
        let rows = if is_kernel {
            input_rows[layer].as_ref()
        } else {
            None
        };
        Tensor::new(dims, select(full, rows, columns))
    };
    let input_shape = model.input_shape().dims().to_vec();
    let pruned = Sequential::with_params(&input_shape, new_specs, &mut take)?;
    Ok((pruned, report))
}

/// The layer that consumes layer `i`'s output channels, if the path to it is one pruning
/// can follow.
fn consumer_of(specs: &[LayerSpec], shapes: &[Vec<usize>], i: usize) -> Option<Consumer> {
    let mut norms = Vec::new();
    let mut positions = 1;
    for (j, spec) in specs.iter().enumerate().skip(i + 1) {
        match spec {
            LayerSpec::Dense(_) => {
                return Some(Consumer {
                    layer: j,
                    positions,
                    norms,
                })
            }
            LayerSpec::Conv2d(c) if positions == 1 => {
                let (kh, kw) = c.kernel_size.get();
                return Some(Consumer {
                    layer: j,
                    positions: kh * kw,
                    norms,
                });
            }
            LayerSpec::BatchNormalization(_) if positions == 1 => norms.push(j),
            LayerSpec::Dropout(_) | LayerSpec::Activation(_) => {}
            LayerSpec::MaxPooling2d(_) | LayerSpec::AveragePooling2d(_) if positions == 1 => {}
            LayerSpec::GlobalAveragePooling2d(_) if positions == 1 => {}
            // A Flatten of (height, width, channels): each channel at every pixel.
            LayerSpec::Flatten(_) if positions == 1 => {
                let input = &shapes[j - 1];
                positions = input[..input.len() - 1].iter().product();
            }
            _ => return None,
        }
    }
    None
}

fn param<'m>(model: &'m Sequential, name: &str) -> Result<&'m Tensor> {
    model
        .params
        .iter()
        .find(|p| p.name == name)
        .map(|p| &p.value)
        .ok_or_else(|| Error::mismatch("the parameter to prune", "one the model has", name))
}

/// The chosen rows and columns of a tensor seen as (all axes but the last, the last axis);
/// a 1-D tensor is one row.
fn select(t: &Tensor, rows: Option<&Vec<usize>>, columns: Option<&Vec<usize>>) -> Vec<f32> {
    let c = *t.dims().last().expect("tensors have an axis");
    let r = t.numel() / c.max(1);
    let all_rows: Vec<usize> = (0..r).collect();
    let all_columns: Vec<usize> = (0..c).collect();
    let (rows, columns) = (rows.unwrap_or(&all_rows), columns.unwrap_or(&all_columns));
    let mut out = Vec::with_capacity(rows.len() * columns.len());
    for &i in rows {
        out.extend(columns.iter().map(|&j| t.data()[i * c + j]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_tfmot() {
        let constant = PruningSchedule::ConstantSparsity {
            target_sparsity: 0.5,
            begin_step: 10,
            end_step: Some(30),
            frequency: 10,
        };
        let at: Vec<_> = [0, 10, 15, 20, 30, 40]
            .iter()
            .map(|&s| constant.update_at(s))
            .collect();
        assert_eq!(at, [None, Some(0.5), None, Some(0.5), Some(0.5), None]);
        let poly = PruningSchedule::PolynomialDecay {
            initial_sparsity: 0.0,
            final_sparsity: 0.8,
            begin_step: 0,
            end_step: 100,
            power: 3.0,
            frequency: 50,
        };
        // Halfway: 0.8 + (0 − 0.8)·0.5³ = 0.7.
        assert_eq!(poly.update_at(50), Some(0.7));
        assert_eq!(poly.update_at(0), Some(0.0));
        assert_eq!(poly.update_at(100), Some(0.8));
        assert_eq!(poly.update_at(60), None);
        assert_eq!(poly.update_at(150), None);
    }

    /// A conv (3×3, 1 → 2 filters: 18 weights) then a Dense (8·8·2 → 3: 384 weights),
    /// every weight its own index + 1 so magnitudes are known, signs alternating.
    fn numbered_cnn() -> Sequential {
        let layers: Vec<LayerSpec> = serde_json::from_str(
            r#"[{"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": "same"},
                {"type": "flatten"}, {"type": "dense", "units": 3}]"#,
        )
        .unwrap();
        let mut model = Sequential::new(&[8, 8, 1], layers, 0).unwrap();
        let mut next = 0.0f32;
        for p in model.params.iter_mut().filter(|p| p.name.ends_with("kernel")) {
            for w in p.value.data_mut() {
                next += 1.0;
                *w = if (next as usize).is_multiple_of(2) {
                    next
                } else {
                    -next
                };
            }
        }
        model
    }

    fn zeros(model: &Sequential, name: &str) -> usize {
        model
            .params
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .value
            .data()
            .iter()
            .filter(|w| **w == 0.0)
            .count()
    }

    #[test]
    fn pruning_reaches_convolutions_per_kernel_or_against_one_global_threshold() {
        let mut per_kernel = numbered_cnn();
        prune_weights(&mut per_kernel, 0.5, false).unwrap();
        assert_eq!(
            (
                zeros(&per_kernel, "layers.0.kernel"),
                zeros(&per_kernel, "layers.2.kernel")
            ),
            (9, 192)
        );
        // Globally the conv's weights (1..=18) are the smallest of all 402: all of them go.
        let mut global = numbered_cnn();
        prune_weights(&mut global, 0.5, true).unwrap();
        assert_eq!(
            (
                zeros(&global, "layers.0.kernel"),
                zeros(&global, "layers.2.kernel")
            ),
            (18, 183)
        );
    }

    #[test]
    fn the_mask_drops_the_smallest_magnitudes() {
        let w = [0.5, -0.1, 0.3, -0.9, 0.0, 0.2];
        assert_eq!(magnitude_mask(&w, 0.5), [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(magnitude_mask(&w, 0.0), [1.0; 6]);
    }

    #[test]
    fn removing_units_slices_the_layer_and_the_next_ones_inputs() {
        let layers = serde_json::from_str(
            r#"[{"type": "dense", "units": 4, "activation": "relu"}, {"type": "dropout", "rate": 0.1},
                {"type": "dense", "units": 2}]"#,
        )
        .unwrap();
        let mut m = Sequential::new(&[3], layers, 1).unwrap();
        // Units 1 and 3 have the largest incoming weights.
        let kernel: Vec<f32> = (0..12)
            .map(|i| if i % 4 == 1 || i % 4 == 3 { 1.0 } else { 0.1 })
            .collect();
        m.params
            .iter_mut()
            .next()
            .unwrap()
            .value
            .data_mut()
            .copy_from_slice(&kernel);
        let next: Vec<f32> = (0..8).map(|i| i as f32).collect();
        m.params
            .iter_mut()
            .nth(2)
            .unwrap()
            .value
            .data_mut()
            .copy_from_slice(&next);
        let (p, report) = remove_units(&m, 0.5).unwrap();
        assert_eq!(
            report,
            [UnitsRemoved {
                layer: 0,
                before: 4,
                after: 2,
                filters: false
            }]
        );
        let w: Vec<_> = p
            .params
            .iter()
            .map(|p| (p.name.clone(), p.value.dims().to_vec()))
            .collect();
        assert_eq!(w[0], ("layers.0.kernel".to_string(), vec![3, 2]));
        assert_eq!(w[2], ("layers.2.kernel".to_string(), vec![2, 2]));
        // The next layer keeps rows 1 and 3 of its (4, 2) kernel.
        assert_eq!(
            p.params.iter().nth(2).unwrap().value.data(),
            &[2.0, 3.0, 6.0, 7.0]
        );
        // A model without a hidden Dense layer has nothing to prune.
        let single = Sequential::new(
            &[3],
            serde_json::from_str(r#"[{"type": "dense", "units": 2}]"#).unwrap(),
            1,
        )
        .unwrap();
        assert!(remove_units(&single, 0.5).is_err());
    }

    /// Zeroes the given output channels of a kernel (and its bias), so they are the ones
    /// pruned and contribute nothing.
    fn silence(m: &mut Sequential, layer: usize, channels: &[usize]) {
        for p in m.params.iter_mut() {
            let is_kernel = p.name == format!("layers.{layer}.kernel");
            if is_kernel || p.name == format!("layers.{layer}.bias") {
                let c = *p.value.dims().last().unwrap();
                for (i, v) in p.value.data_mut().iter_mut().enumerate() {
                    if channels.contains(&(i % c)) {
                        *v = 0.0;
                    }
                }
            }
        }
    }

    #[test]
    fn removing_filters_and_units_that_contribute_nothing_keeps_the_outputs() {
        let layers = serde_json::from_str(
            r#"[{"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"},
                {"type": "batch_normalization"}, {"type": "max_pooling2d", "pool_size": 2},
                {"type": "conv2d", "filters": 6, "kernel_size": 1, "activation": "relu"},
                {"type": "flatten"}, {"type": "dense", "units": 3, "activation": "relu"},
                {"type": "dense", "units": 2}]"#,
        )
        .unwrap();
        let mut m = Sequential::new(&[6, 6, 1], layers, 3).unwrap();
        // Batch normalization at its initial statistics maps 0 to 0 (mean 0, variance 1,
        // γ = 1, β = 0), so a silenced filter stays silent through it.
        silence(&mut m, 0, &[1, 3]);
        silence(&mut m, 3, &[0, 2, 4]);
        silence(&mut m, 5, &[1]);
        let x: Vec<f32> = (0..2 * 36).map(|i| ((i * 7) % 11) as f32 / 11.0).collect();
        let before = m.predict(&x, 2).unwrap();
        let (mut p, report) = remove_units(&m, 0.5).unwrap();
        let kept: Vec<_> = report
            .iter()
            .map(|r| (r.layer, r.before, r.after, r.filters))
            .collect();
        assert_eq!(kept, [(0, 4, 2, true), (3, 6, 3, true), (5, 3, 2, false)]);
        let dims = |name: &str| {
            p.params
                .iter()
                .find(|q| q.name == name)
                .unwrap()
                .value
                .dims()
                .to_vec()
        };
        assert_eq!(dims("layers.0.kernel"), [3, 3, 1, 2]);
        assert_eq!(dims("layers.1.gamma"), [2]);
        assert_eq!(dims("layers.3.kernel"), [1, 1, 2, 3]);
        // The flatten of (2, 2, 3): 12 inputs for the dense layer.
        assert_eq!(dims("layers.5.kernel"), [12, 2]);
        assert_eq!(dims("layers.6.kernel"), [2, 2]);
        let after = p.predict(&x, 2).unwrap();
        for (a, b) in after.data().iter().zip(before.data()) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", after.data(), before.data());
        }
    }
}
