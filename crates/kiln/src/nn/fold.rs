//! Batch normalization folded into the convolution before it, for inference: with the
//! moving statistics fixed, `BN(conv(x)) = conv'(x)` where each filter's kernel is scaled by
//! `s = γ/√(σ² + ε)` and its bias becomes `(b − μ)·s + β`.

use super::{BatchNormLayer, ConvLayer};
use crate::autograd::{Tape, Var};
use crate::error::Result;

/// `norm(conv(x))` computed as one convolution with folded weights (inference only: the
/// folded weights are constants, so no gradient reaches the parameters).
pub(crate) fn conv_batch_norm(
    tape: &mut Tape,
    x: Var,
    conv: &ConvLayer,
    norm: &BatchNormLayer,
) -> Result<Var> {
    let kernel_shape = tape.params.get(conv.kernel).value.shape();
    let filters = kernel_shape.last();
    let scale: Vec<f32> = {
        let variance = tape.params.get(norm.moving.variance).value.data();
        let gamma = norm.gamma.map(|g| tape.params.get(g).value.data());
        (0..filters)
            .map(|f| gamma.map_or(1.0, |g| g[f]) / (variance[f] + norm.epsilon).sqrt())
            .collect()
    };
    let bias: Vec<f32> = {
        let mean = tape.params.get(norm.moving.mean).value.data();
        let beta = norm.beta.map(|b| tape.params.get(b).value.data());
        let b0 = conv.bias.map(|b| tape.params.get(b).value.data());
        (0..filters)
            .map(|f| (b0.map_or(0.0, |b| b[f]) - mean[f]) * scale[f] + beta.map_or(0.0, |b| b[f]))
            .collect()
    };
    let kernel: Vec<f32> = tape
        .params
        .get(conv.kernel)
        .value
        .data()
        .chunks_exact(filters)
        .flat_map(|row| row.iter().zip(&scale).map(|(w, s)| w * s))
        .collect();
    let k = tape.input(&kernel, kernel_shape);
    let b = tape.input(&bias, crate::tensor::Shape::new(&[filters]));
    tape.conv2d(x, k, Some(b), conv.window)
}

#[cfg(test)]
mod tests {
    use crate::nn::Sequential;
    use crate::rng::Rng;

    /// A conv → batch norm → relu model predicts the same with the fold as with each layer
    /// run on its own.
    #[test]
    fn folded_inference_equals_conv_then_batch_norm() {
        let layers = serde_json::from_str(
            r#"[{"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same"},
                {"type": "batch_normalization"},
                {"type": "activation", "activation": "relu"},
                {"type": "flatten"}, {"type": "dense", "units": 3}]"#,
        )
        .unwrap();
        let mut model = Sequential::new(&[5, 5, 2], layers, 4).unwrap();
        // Moving statistics and γ, β far from their initial 0 / 1.
        let mut rng = Rng::new(8);
        for p in model
            .params
            .iter_mut()
            .filter(|p| p.name.starts_with("layers.1."))
        {
            let positive = p.name.ends_with("variance") || p.name.ends_with("gamma");
            p.value.data_mut().iter_mut().for_each(|v| {
                *v = if positive {
                    rng.uniform(0.5, 2.0)
                } else {
                    rng.uniform(-1.0, 1.0)
                }
            });
        }
        let x: Vec<f32> = (0..2 * 50).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let folded = model.predict(&x, 2).unwrap();
        let unfolded = {
            let input_shape = model.input_shape();
            let (network, params, workspace) = model.parts();
            let mut tape = crate::Tape::new(params, workspace);
            let input = tape.input(&x, input_shape.with_batch(2));
            let mut mode = super::super::Mode::Infer;
            let mut h = input;
            for layer in &network.layers {
                h = layer.forward(&mut tape, h, &mut mode, false).unwrap();
            }
            tape.value(h).to_vec()
        };
        for (a, b) in folded.data().iter().zip(&unfolded) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
