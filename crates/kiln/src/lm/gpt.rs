//! A GPT-style decoder-only transformer (Radford et al. 2018/2019; nanoGPT's layout):
//! token + learned position embeddings, `layers` pre-norm blocks of causal self-attention
//! and a GELU MLP, each added back to the residual stream, a final LayerNorm and a linear
//! head to vocabulary logits, optionally sharing the token embedding's weights.
//!
//! Training records the whole batch on the autograd tape ([`Gpt::loss`]). Generation runs
//! row by row outside the tape ([`super::generate`]) with the same weights.

use serde::{Deserialize, Serialize};

use crate::autograd::{Tape, Var, Workspace};
use crate::error::{Error, Result};
use crate::ops::unary::UnaryOp;
use crate::ops::Targets;
use crate::params::{ParamId, ParamStore};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// The architecture, as a spec's `[model]` section gives it (`type = "gpt"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads per block; must divide `width`.
    pub heads: usize,
    /// Width of the residual stream (the embedding size).
    pub width: usize,
    /// Longest sequence the model reads (positions it has embeddings for).
    pub context: usize,
    /// Dropout on the embeddings, attention weights and each block's outputs (training only).
    #[serde(default)]
    pub dropout: f32,
    /// Use the token embedding as the output layer's weights (Press & Wolf, 2017).
    #[serde(default)]
    pub tie_weights: bool,
    /// Hidden width of each block's MLP, as a multiple of `width`.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
    /// LayerNorm's ε (PyTorch's default).
    #[serde(default = "default_epsilon")]
    pub layer_norm_epsilon: f32,
    /// The MLP's activation: exact GELU, or GPT-2's tanh approximation (`gelu_new`).
    /// Left out of the saved spec when it is the default, so a run checkpointed before
    /// the field existed still resumes (resume compares the specs).
    #[serde(default, skip_serializing_if = "GptActivation::is_default")]
    pub activation: GptActivation,
}

/// The activation between each block's two MLP layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GptActivation {
    /// x·Φ(x), exact (PyTorch's `nn.GELU()`, Hugging Face's `gelu`).
    #[default]
    Gelu,
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): GPT-2's (Hugging Face's `gelu_new`).
    GeluNew,
}

impl GptActivation {
    fn is_default(&self) -> bool {
        *self == GptActivation::default()
    }

    pub fn op(self) -> UnaryOp {
        match self {
            GptActivation::Gelu => UnaryOp::Gelu,
            GptActivation::GeluNew => UnaryOp::GeluTanh,
        }
    }
}

fn default_mlp_ratio() -> usize {
    4
}

fn default_epsilon() -> f32 {
    1e-5
}

impl GptConfig {
    /// `layers` blocks of `heads` heads over a residual stream of `width`, reading up to
    /// `context` tokens; no dropout, untied head, MLP 4× wide, LayerNorm ε 1e-5.
    pub fn new(layers: usize, heads: usize, width: usize, context: usize) -> GptConfig {
        GptConfig {
            layers,
            heads,
            width,
            context,
            dropout: 0.0,
            tie_weights: false,
            mlp_ratio: default_mlp_ratio(),
            layer_norm_epsilon: default_epsilon(),
            activation: GptActivation::Gelu,
        }
    }

    pub fn dropout(self, dropout: f32) -> Self {
        GptConfig { dropout, ..self }
    }

    /// Shares the token embedding with the output layer (Press & Wolf, 2017).
    pub fn tie_weights(self, tie_weights: bool) -> Self {
        GptConfig { tie_weights, ..self }
    }

    /// Rejects sizes the model cannot be built with, naming the field.
    pub fn validate(&self) -> Result<()> {
        let field = |name: &str| format!("model.{name}");
        for (name, v) in [
            ("layers", self.layers),
            ("heads", self.heads),
            ("width", self.width),
            ("context", self.context),
            ("mlp_ratio", self.mlp_ratio),
        ] {
            if v == 0 {
                return Err(Error::setting(field(name), v, "at least 1"));
            }
        }
        if self.mlp_ratio.checked_mul(self.width).is_none() {
            return Err(Error::setting(
                field("mlp_ratio"),
                self.mlp_ratio,
                format!(
                    "a ratio whose product with width {} fits in memory sizes",
                    self.width
                ),
            ));
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(Error::setting(
                field("width"),
                self.width,
                format!(
                    "a multiple of `heads` {h}, so each head gets an equal slice \
                     ({} is not divisible by `heads` {h})",
                    self.width,
                    h = self.heads
                ),
            ));
        }
        if self.context < 2 {
            return Err(Error::setting(field("context"), self.context, "at least 2"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::setting(field("dropout"), self.dropout, "a rate in [0, 1)"));
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return Err(Error::setting(
                field("layer_norm_epsilon"),
                self.layer_norm_epsilon,
                "a positive number",
            ));
        }
        Ok(())
    }

    /// The MLP's width (saturating: `validate` refuses a product that overflows).
    pub fn hidden(&self) -> usize {
        self.mlp_ratio.saturating_mul(self.width)
    }

    /// Trainable parameters for a vocabulary of `vocab` tokens.
    /// (Saturates rather than overflows, for sizes no machine holds.)
    pub fn parameter_count(&self, vocab: usize) -> usize {
        let [c, h, vocab, context, layers] =
            [self.width, self.hidden(), vocab, self.context, self.layers].map(|n| n as u128);
        let block = 2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * h + h) + (h * c + c);
        let head = if self.tie_weights { 0 } else { vocab * c };
        let total = vocab * c + context * c + layers * block + 2 * c + head;
        usize::try_from(total).unwrap_or(usize::MAX)
    }

    /// Multiply-adds ×2 per token for a forward pass at full context: the weight products
    /// (2 FLOPs per parameter touched, embeddings excluded) plus attention's scores and
    /// weighted sum (2·2·context·width per layer, counting the masked half as llm.c does).
    pub fn forward_flops_per_token(&self, vocab: usize) -> usize {
        let [c, h, vocab, layers, context] =
            [self.width, self.hidden(), vocab, self.layers, self.context].map(|n| n as u128);
        let weights = layers * (c * 3 * c + c * c + 2 * c * h) + c * vocab;
        usize::try_from(2 * weights + layers * 2 * 2 * context * c).unwrap_or(usize::MAX)
    }
}

/// The parameter ids of one block.
#[derive(Debug, Clone)]
pub(crate) struct BlockParams {
    pub ln_1: (ParamId, ParamId),
    pub qkv: (ParamId, ParamId),
    pub proj: (ParamId, ParamId),
    pub ln_2: (ParamId, ParamId),
    pub fc: (ParamId, ParamId),
    pub fc_out: (ParamId, ParamId),
}

/// A GPT with its parameters and the tape workspace reused across steps.
#[derive(Debug)]
pub struct Gpt {
    pub(crate) layout: Layout,
    pub(crate) vocab: usize,
    pub(crate) params: ParamStore,
    workspace: Workspace,
    /// Each input token's position (0..seq, once per sequence), kept across steps so a
    /// training step does not rebuild it.
    position_ids: Vec<u32>,
    /// The (batch, seq) that `position_ids` was built for.
    positions_for: (usize, usize),
}

/// The architecture and which parameter is which: what the forward pass reads besides the
/// parameter values (kept apart from the store, which a tape borrows mutably).
#[derive(Debug)]
pub(crate) struct Layout {
    pub config: GptConfig,
    pub tokens: ParamId,
    pub positions: ParamId,
    pub blocks: Vec<BlockParams>,
    pub ln_f: (ParamId, ParamId),
    /// The output layer (vocab × width): the token embedding itself when tied.
    pub head: ParamId,
}

/// Checks that the model's parameters, with their gradients and optimizer state, fit in the
/// memory this machine has left, before any is allocated.
fn check_memory(config: &GptConfig, vocab: usize) -> Result<()> {
    let count = config.parameter_count(vocab) as u64;
    let needed = count.saturating_mul(4 * crate::nn::memory::TRAINING_COPIES);
    let available = crate::nn::memory::available_bytes();
    if needed > available {
        return Err(Error::TooLarge {
            what: format!(
                "a GPT of {} layers, width {}, context {} and a vocabulary of {vocab} ({count} parameters, with gradients and optimizer state)",
                config.layers, config.width, config.context
            ),
            needed,
            available,
        });
    }
    Ok(())
}

impl Gpt {
    /// A freshly initialized model, as PyTorch initializes the same modules: Linear weights
    /// and biases uniform in ±1/√fan_in, embeddings standard normal, LayerNorm γ = 1, β = 0.
    pub fn new(config: GptConfig, vocab: usize, seed: u64) -> Result<Gpt> {
        let mut rng = Rng::derive(seed, 0x0067_7074);
        Self::build(config, vocab, &mut |_, dims, init| {
            let n: usize = dims.iter().product();
            let values = match init {
                Init::Normal => (0..n).map(|_| rng.normal()).collect(),
                Init::Uniform(bound) => (0..n).map(|_| rng.uniform(-bound, bound)).collect(),
                Init::Constant(v) => vec![v; n],
            };
            Ok(Tensor::new(dims, values).expect("sized"))
        })
    }

    /// A model whose every parameter comes from `values(name, dims)` (as saved: a
    /// checkpoint, an imported model), with no random values drawn first.
    pub fn with_values(
        config: GptConfig,
        vocab: usize,
        mut values: impl FnMut(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<Gpt> {
        Self::build(config, vocab, &mut |name, dims, _| {
            let t = values(name, dims)?;
            if t.dims() != dims {
                return Err(Error::shape(
                    format!("parameter `{name}`"),
                    format!("{dims:?}, as the configuration needs"),
                    format!("{:?}", t.dims()),
                ));
            }
            Ok(t)
        })
    }

    /// The parameters in their fixed order (which fixes the random draws of [`Gpt::new`]),
    /// each from `source(name, dims, how a fresh one is initialized)`.
    fn build(config: GptConfig, vocab: usize, source: &mut ParamSource) -> Result<Gpt> {
        config.validate()?;
        if vocab == 0 {
            return Err(Error::too_few("tokens in a language model's vocabulary", 0, 1));
        }
        check_memory(&config, vocab)?;
        let mut params = ParamStore::new();
        let (c, h) = (config.width, config.hidden());
        let mut add = |name: &str, dims: &[usize], init: Init| -> Result<ParamId> {
            Ok(params.add(name, source(name, dims, init)?))
        };
        let tokens = add("tok_embedding", &[vocab, c], Init::Normal)?;
        let positions = add("pos_embedding", &[config.context, c], Init::Normal)?;
        let mut blocks = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let p = format!("blocks.{l}");
            blocks.push(BlockParams {
                ln_1: layer_norm(&mut add, &format!("{p}.ln_1"), c)?,
                qkv: linear(&mut add, &format!("{p}.attention.qkv"), c, 3 * c)?,
                proj: linear(&mut add, &format!("{p}.attention.proj"), c, c)?,
                ln_2: layer_norm(&mut add, &format!("{p}.ln_2"), c)?,
                fc: linear(&mut add, &format!("{p}.mlp.fc"), c, h)?,
                fc_out: linear(&mut add, &format!("{p}.mlp.proj"), h, c)?,
            });
        }
        let ln_f = layer_norm(&mut add, "ln_f", c)?;
        let head = match config.tie_weights {
            true => tokens,
            false => add("head.kernel", &[vocab, c], Init::Uniform(1.0 / (c as f32).sqrt()))?,
        };
        Ok(Gpt {
            layout: Layout {
                config,
                tokens,
                positions,
                blocks,
                ln_f,
                head,
            },
            vocab,
            params,
            workspace: Workspace::new(),
            position_ids: Vec::new(),
            positions_for: (0, 0),
        })
    }

    pub fn config(&self) -> &GptConfig {
        &self.layout.config
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    /// Replaces every parameter's values with `values` (by name, as saved), checking shapes.
    pub fn load_values(&mut self, mut values: impl FnMut(&str) -> Option<Tensor>) -> Result<()> {
        for p in self.params.iter_mut() {
            let what = format!("parameter `{}`", p.name);
            let t = values(&p.name).ok_or_else(|| Error::mismatch(&what, "a saved value", "none"))?;
            if t.dims() != p.value.dims() {
                return Err(Error::shape(
                    what,
                    format!("{:?}, as the configuration needs", p.value.dims()),
                    format!("{:?}", t.dims()),
                ));
            }
            p.value = t;
        }
        Ok(())
    }

    /// Mean cross-entropy of predicting `targets` from `inputs` (both batch × seq token ids,
    /// row-major), recorded on a tape for backward. `dropout` draws masks when the config
    /// has a rate (training); `None` runs deterministically (evaluation).
    pub fn loss(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        batch: usize,
        dropout: Option<&mut Rng>,
        backward: bool,
    ) -> Result<f32> {
        self.loss_and_hits(inputs, targets, batch, dropout, backward)
            .map(|(loss, _)| loss)
    }

    /// [`Gpt::loss`] and how many targets the logits rank first (next-token accuracy).
    pub fn loss_and_hits(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        batch: usize,
        dropout: Option<&mut Rng>,
        backward: bool,
    ) -> Result<(f32, usize)> {
        let seq = self.prepare(inputs, batch)?;
        if targets.len() != inputs.len() {
            return Err(Error::shape(
                "gpt targets",
                format!(
                    "{} targets, one per input: each input token needs the token that follows it",
                    inputs.len()
                ),
                format!("{} targets", targets.len()),
            ));
        }
        if let Some(&bad) = targets.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(Error::TokenOutOfRange {
                token: bad as usize,
                vocab: self.vocab,
            });
        }
        let layout = &self.layout;
        let mut tape = if backward {
            Tape::new(&mut self.params, &mut self.workspace)
        } else {
            Tape::inference(&mut self.params, &mut self.workspace)
        };
        let logits = layout.logits(&mut tape, inputs, &self.position_ids, batch, seq, dropout)?;
        let loss = tape.softmax_cross_entropy(logits, Targets::Classes(targets))?;
        if backward {
            tape.backward(loss);
        }
        let hits = crate::metrics::count_correct(tape.value(logits), targets, true);
        Ok((tape.value(loss)[0], hits))
    }

    /// Logits (batch·seq × vocab) for every position, computed on an inference tape.
    pub fn logits(&mut self, inputs: &[u32], batch: usize) -> Result<Vec<f32>> {
        let seq = self.prepare(inputs, batch)?;
        let layout = &self.layout;
        let mut tape = Tape::inference(&mut self.params, &mut self.workspace);
        let logits = layout.logits(&mut tape, inputs, &self.position_ids, batch, seq, None)?;
        Ok(tape.value(logits).to_vec())
    }

    /// Checks a batch of token ids and makes `position_ids` fit it; returns the sequence length.
    fn prepare(&mut self, inputs: &[u32], batch: usize) -> Result<usize> {
        let seq = self.check_batch(inputs, batch)?;
        if self.positions_for != (batch, seq) {
            self.position_ids = (0..batch).flat_map(|_| 0..seq as u32).collect();
            self.positions_for = (batch, seq);
        }
        Ok(seq)
    }

    fn check_batch(&self, inputs: &[u32], batch: usize) -> Result<usize> {
        if batch == 0 || inputs.is_empty() || !inputs.len().is_multiple_of(batch) {
            return Err(Error::shape(
                "gpt input",
                format!("token ids that split into {batch} equal sequences"),
                format!("{} token ids", inputs.len()),
            ));
        }
        let seq = inputs.len() / batch;
        if seq > self.layout.config.context {
            return Err(Error::shape(
                "gpt input",
                format!(
                    "sequences of at most the model's context of {}",
                    self.layout.config.context
                ),
                format!("a sequence of {seq} tokens"),
            ));
        }
        if let Some(&bad) = inputs.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(Error::TokenOutOfRange {
                token: bad as usize,
                vocab: self.vocab,
            });
        }
        Ok(seq)
    }
}

impl Layout {
    fn logits(
        &self,
        tape: &mut Tape,
        inputs: &[u32],
        positions: &[u32],
        batch: usize,
        seq: usize,
        mut rng: Option<&mut Rng>,
    ) -> Result<Var> {
        let rate = self.config.dropout;
        let (tok, pos) = (tape.param(self.tokens), tape.param(self.positions));
        let tok = tape.embedding(tok, inputs)?;
        let pos = tape.embedding(pos, positions)?;
        let mut x = tape.add(tok, pos)?;
        x = dropout(tape, x, rate, rng.as_deref_mut())?;
        for block in &self.blocks {
            let h = norm(tape, x, block.ln_1, self.config.layer_norm_epsilon)?;
            let qkv = linear_on_tape(tape, h, block.qkv)?;
            let attention_dropout = rng.as_deref_mut().map(|r| (rate, r));
            let a = tape.causal_self_attention(qkv, batch, seq, self.config.heads, attention_dropout)?;
            let a = linear_on_tape(tape, a, block.proj)?;
            let a = dropout(tape, a, rate, rng.as_deref_mut())?;
            x = tape.add(x, a)?;
            let h = norm(tape, x, block.ln_2, self.config.layer_norm_epsilon)?;
            let h = linear_on_tape(tape, h, block.fc)?;
            let h = tape.unary(h, self.config.activation.op());
            let h = linear_on_tape(tape, h, block.fc_out)?;
            let h = dropout(tape, h, rate, rng.as_deref_mut())?;
            x = tape.add(x, h)?;
        }
        let x = norm(tape, x, self.ln_f, self.config.layer_norm_epsilon)?;
        let head = tape.param(self.head);
        tape.matmul_nt(x, head)
    }
}

fn dropout(tape: &mut Tape, x: Var, rate: f32, rng: Option<&mut Rng>) -> Result<Var> {
    match rng {
        Some(rng) if rate > 0.0 => tape.dropout(x, rate, rng),
        _ => Ok(x),
    }
}

fn norm(tape: &mut Tape, x: Var, (gamma, beta): (ParamId, ParamId), eps: f32) -> Result<Var> {
    let (gamma, beta) = (tape.param(gamma), tape.param(beta));
    tape.layer_norm(x, gamma, beta, eps)
}

fn linear_on_tape(tape: &mut Tape, x: Var, (kernel, bias): (ParamId, ParamId)) -> Result<Var> {
    let (kernel, bias) = (tape.param(kernel), tape.param(bias));
    tape.linear(x, kernel, bias)
}

/// How a fresh parameter is initialized.
#[derive(Clone, Copy)]
enum Init {
    Normal,
    Uniform(f32),
    Constant(f32),
}

/// Gives each parameter its values: (name, dims, how a fresh one is initialized).
type ParamSource<'a> = dyn FnMut(&str, &[usize], Init) -> Result<Tensor> + 'a;

/// A Linear layer's kernel (inputs × outputs) and bias, uniform in ±1/√inputs.
fn linear(
    add: &mut impl FnMut(&str, &[usize], Init) -> Result<ParamId>,
    name: &str,
    inputs: usize,
    outputs: usize,
) -> Result<(ParamId, ParamId)> {
    let bound = Init::Uniform(1.0 / (inputs as f32).sqrt());
    Ok((
        add(&format!("{name}.kernel"), &[inputs, outputs], bound)?,
        add(&format!("{name}.bias"), &[outputs], bound)?,
    ))
}

fn layer_norm(
    add: &mut impl FnMut(&str, &[usize], Init) -> Result<ParamId>,
    name: &str,
    width: usize,
) -> Result<(ParamId, ParamId)> {
    Ok((
        add(&format!("{name}.gamma"), &[width], Init::Constant(1.0))?,
        add(&format!("{name}.beta"), &[width], Init::Constant(0.0))?,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fuzzing finding: `mlp_ratio × width` past usize once overflowed in `hidden`.
    #[test]
    fn an_mlp_ratio_whose_product_overflows_is_refused() {
        let config = GptConfig {
            mlp_ratio: 1 << 62,
            ..tiny_config()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("model.mlp_ratio"), "{err}");
        assert_eq!(config.hidden(), usize::MAX);
        assert!(config.forward_flops_per_token(100) > 0);
    }

    /// Two layers of width 8 and a context of 6: big enough for every code path.
    pub(crate) fn tiny_config() -> GptConfig {
        GptConfig {
            layers: 2,
            heads: 2,
            width: 8,
            context: 6,
            dropout: 0.0,
            tie_weights: false,
            mlp_ratio: 4,
            layer_norm_epsilon: 1e-5,
            activation: GptActivation::Gelu,
        }
    }

    #[test]
    fn parameter_count_matches_the_store_tied_or_not() {
        for tie_weights in [false, true] {
            let config = GptConfig {
                tie_weights,
                ..tiny_config()
            };
            let model = Gpt::new(config.clone(), 13, 1).unwrap();
            let stored: usize = model.params().iter().map(|p| p.value.numel()).sum();
            assert_eq!(config.parameter_count(13), stored);
        }
        // The peer's configuration: 818,176 parameters with 65 characters.
        let peer = GptConfig {
            layers: 4,
            heads: 4,
            width: 128,
            context: 64,
            ..tiny_config()
        };
        assert_eq!(peer.parameter_count(65), 818_176);
    }

    /// The whole model's gradient against finite differences, on a few parameters of each
    /// kind (embedding rows, attention and MLP weights, a LayerNorm gain, the head).
    #[test]
    fn model_gradient_matches_finite_differences() {
        for tie_weights in [false, true] {
            let mut model = Gpt::new(
                GptConfig {
                    tie_weights,
                    ..tiny_config()
                },
                7,
                5,
            )
            .unwrap();
            let (inputs, targets) = ([1u32, 4, 2, 6, 0, 3], [4u32, 2, 6, 0, 3, 5]);
            model.loss(&inputs, &targets, 2, None, true).unwrap();
            let analytic: Vec<Vec<f32>> = model.params().iter().map(|p| p.grad.clone()).collect();
            let names = [
                "tok_embedding",
                "pos_embedding",
                "blocks.0.attention.qkv.kernel",
                "blocks.1.mlp.proj.kernel",
                "blocks.1.ln_2.gamma",
                "ln_f.beta",
                "head.kernel",
            ];
            for (index, name) in names.iter().enumerate() {
                let Some(id) = model.params().iter().position(|p| &p.name == name) else {
                    assert!(tie_weights && *name == "head.kernel", "{name} missing");
                    continue;
                };
                for k in [0, 5 + index, 17] {
                    let k = k % model.params().iter().nth(id).unwrap().value.numel();
                    let eps = 1e-2f32;
                    let mut at = |delta: f32| {
                        let p = model.params_mut().iter_mut().nth(id).unwrap();
                        p.value.data_mut()[k] += delta;
                        let loss = model.loss(&inputs, &targets, 2, None, false).unwrap() as f64;
                        model.params_mut().iter_mut().nth(id).unwrap().value.data_mut()[k] -= delta;
                        loss
                    };
                    let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                    let exact = analytic[id][k] as f64;
                    assert!(
                        (numeric - exact).abs() < 2e-3 + 2e-2 * exact.abs(),
                        "{name}[{k}] (tied {tie_weights}): {exact} vs {numeric}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_batches_are_errors() {
        let mut model = Gpt::new(tiny_config(), 7, 5).unwrap();
        let mut err = |inputs: &[u32], targets: &[u32], batch| {
            model
                .loss(inputs, targets, batch, None, false)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[1; 14], &[1; 14], 2).contains("at most the model's context of 6, got a sequence of 7"));
        assert!(err(&[1; 5], &[1; 5], 2).contains("split into 2 equal sequences, got 5 token ids"));
        assert!(err(&[1, 9], &[1, 1], 1).contains("token id 9"));
        assert!(err(&[1, 1], &[1], 1).contains("got 1 targets"));
        assert!(Gpt::new(
            GptConfig {
                heads: 3,
                ..tiny_config()
            },
            7,
            0
        )
        .unwrap_err()
        .to_string()
        .contains("divisible"));
    }
}
