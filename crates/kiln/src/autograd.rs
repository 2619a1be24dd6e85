//! The define-by-run tape: every op appends a node holding its output and what its backward
//! rule needs; [`Tape::backward`] sweeps the nodes in reverse recording order, which is a
//! topological order because an op can only consume values recorded before it.
//!
//! Buffers come from a [`Workspace`] pool and go back to it when the tape is dropped, so a
//! training loop that records the same graph every step stops allocating after the first.

use crate::ops::unary::UnaryOp;
use crate::params::{ParamId, ParamStore};
use crate::tensor::{Shape, Tensor};

/// A value recorded on a tape: an index, cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var(pub(crate) usize);

/// What produced a node, with the inputs its backward rule reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Leaf,
    MatMul {
        a: Var,
        b: Var,
    },
    AddBias {
        x: Var,
        bias: Var,
    },
    Add {
        a: Var,
        b: Var,
    },
    Mul {
        a: Var,
        b: Var,
    },
    Unary {
        x: Var,
        op: UnaryOp,
    },
    Softmax {
        x: Var,
    },
    LogSoftmax {
        x: Var,
    },
    /// `x`'s gradient is the saved buffer scaled by the (scalar) upstream gradient: used by
    /// losses that compute their gradient during the forward pass.
    SavedGrad {
        x: Var,
    },
    /// `x`'s gradient is the upstream gradient times the saved buffer, elementwise (dropout).
    MaskedBy {
        x: Var,
    },
    Reshape {
        x: Var,
    },
    Sum {
        x: Var,
    },
    /// With a fused max pooling, the saved buffer holds where each maximum came from.
    Conv2d(crate::ops::conv2d::ConvNode),
    /// The saved buffer holds each output's source index (as f32 bits).
    MaxPool2d {
        x: Var,
    },
    AvgPool2d {
        x: Var,
        window: crate::ops::conv2d::Window,
    },
    GlobalAvgPool2d {
        x: Var,
    },
    /// Training-mode batch normalization; saved: x̂ then 1/σ per channel.
    BatchNorm {
        x: Var,
        gamma: Option<Var>,
        beta: Option<Var>,
    },
    /// `y = x·scale + shift` per channel (inference batch normalization); saved: scale, shift.
    ChannelAffine {
        x: Var,
    },
    Mean {
        x: Var,
    },
    /// `x · kernel + bias` (a Dense/Linear layer).
    Linear {
        x: Var,
        kernel: Var,
        bias: Var,
    },
    /// `a[i] · b[i]` for each matrix of a batch.
    BatchMatMul {
        a: Var,
        b: Var,
    },
    /// `a · bᵀ`: a weight stored (out × in), as PyTorch's Linear and a tied embedding are.
    MatMulNt {
        a: Var,
        b: Var,
    },
    /// Saved: the token ids (as f32).
    Embedding {
        table: Var,
    },
    /// Saved: each row's mean and 1/σ.
    LayerNorm {
        x: Var,
        gamma: Var,
        beta: Var,
    },
    /// Saved: the attention weights, then the dropout mask if any.
    CausalAttention {
        qkv: Var,
        shape: crate::ops::attention::AttentionShape,
    },
}

pub(crate) struct Node {
    pub shape: Shape,
    /// The output; empty for parameter leaves, whose value stays in the [`ParamStore`].
    pub value: Vec<f32>,
    pub param: Option<ParamId>,
    /// Gradient of the final output with respect to this node; empty until first written.
    pub grad: Vec<f32>,
    /// Op-specific data kept for the backward rule (a mask, a precomputed gradient).
    pub saved: Vec<f32>,
    pub requires_grad: bool,
    pub op: Op,
}

/// Recycled f32 buffers. Best-fit by capacity, so the same sequence of requests each step
/// is served by the same buffers.
#[derive(Default)]
pub struct BufferPool {
    free: Vec<Vec<f32>>,
}

impl BufferPool {
    /// A buffer of `len` values whose contents are unspecified (callers overwrite them).
    pub fn take(&mut self, len: usize) -> Vec<f32> {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut buf = self.free.swap_remove(i);
                buf.resize(len, 0.0);
                buf
            }
            None => vec![0.0; len],
        }
    }

    pub fn take_zeroed(&mut self, len: usize) -> Vec<f32> {
        let mut buf = self.take(len);
        crate::kernels::parallel::fill(&mut buf, 0.0);
        buf
    }

    pub fn give(&mut self, buf: Vec<f32>) {
        if buf.capacity() > 0 {
            self.free.push(buf);
        }
    }
}

/// Storage that outlives one tape: the node list and the buffer pool.
#[derive(Default)]
pub struct Workspace {
    nodes: Vec<Node>,
    pub(crate) pool: BufferPool,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("nodes", &self.nodes.len())
            .field("pooled_buffers", &self.pool.free.len())
            .finish()
    }
}

impl Workspace {
    pub fn new() -> Self {
        Self::default()
    }

    fn recycle_nodes(&mut self) {
        for node in self.nodes.drain(..) {
            self.pool.give(node.value);
            self.pool.give(node.grad);
            self.pool.give(node.saved);
        }
    }
}

/// What an elementwise rule adds its contribution to under
/// [`Tape::accumulate_or_write`]: the gradient so far, or zero for a fresh buffer (whose
/// contents are not a gradient). Adding to `0.0` rather than writing the value keeps the
/// sign of zero the zero-filled path gave, so both paths produce the same bits.
#[inline(always)]
pub(crate) fn gradient_base(fresh: bool, so_far: f32) -> f32 {
    if fresh {
        0.0
    } else {
        so_far
    }
}

pub struct Tape<'a> {
    pub(crate) params: &'a mut ParamStore,
    ws: &'a mut Workspace,
    grad_enabled: bool,
}

impl Drop for Tape<'_> {
    fn drop(&mut self) {
        self.ws.recycle_nodes();
    }
}

impl<'a> Tape<'a> {
    /// A tape that records for backward (training).
    pub fn new(params: &'a mut ParamStore, ws: &'a mut Workspace) -> Self {
        ws.recycle_nodes();
        Tape {
            params,
            ws,
            grad_enabled: true,
        }
    }

    /// A tape for inference: ops compute values only.
    pub fn inference(params: &'a mut ParamStore, ws: &'a mut Workspace) -> Self {
        let mut tape = Tape::new(params, ws);
        tape.grad_enabled = false;
        tape
    }

    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// A constant input (no gradient), copied into a pooled buffer.
    pub fn input(&mut self, data: &[f32], shape: Shape) -> Var {
        self.leaf(data, shape, false)
    }

    /// A leaf that may collect a gradient (used by gradient checks and custom code).
    pub fn leaf(&mut self, data: &[f32], shape: Shape, requires_grad: bool) -> Var {
        assert_eq!(data.len(), shape.numel(), "leaf data does not fit {shape}");
        let mut value = self.alloc(data.len());
        value.copy_from_slice(data);
        let requires_grad = requires_grad && self.grad_enabled;
        self.push(shape, value, Op::Leaf, requires_grad)
    }

    /// A model parameter; its gradient accumulates into the [`ParamStore`].
    pub fn param(&mut self, id: ParamId) -> Var {
        let shape = self.params.get(id).value.shape();
        let requires_grad = self.grad_enabled;
        let var = self.push(shape, Vec::new(), Op::Leaf, requires_grad);
        self.ws.nodes[var.0].param = Some(id);
        var
    }

    pub fn value(&self, v: Var) -> &[f32] {
        let node = &self.ws.nodes[v.0];
        match node.param {
            Some(id) => self.params.get(id).value.data(),
            None => &node.value,
        }
    }

    pub fn shape(&self, v: Var) -> Shape {
        self.ws.nodes[v.0].shape
    }

    /// A copy of a value as a tensor (allocates; for results, not for the hot loop).
    pub fn to_tensor(&self, v: Var) -> Tensor {
        Tensor::from_shape(self.shape(v), self.value(v).to_vec())
    }

    /// The gradient collected by a non-parameter node, if backward reached it.
    pub fn grad(&self, v: Var) -> Option<&[f32]> {
        let node = &self.ws.nodes[v.0];
        match node.param {
            Some(id) => Some(&self.params.get(id).grad),
            None if node.grad.is_empty() => None,
            None => Some(&node.grad),
        }
    }

    pub(crate) fn requires_grad(&self, v: Var) -> bool {
        self.ws.nodes[v.0].requires_grad
    }

    pub(crate) fn saved(&self, v: Var) -> &[f32] {
        &self.ws.nodes[v.0].saved
    }

    /// A pooled buffer of `len` values with unspecified contents.
    pub(crate) fn alloc(&mut self, len: usize) -> Vec<f32> {
        self.ws.pool.take(len)
    }

    /// [`Tape::alloc`], zero-filled.
    pub(crate) fn alloc_zeroed(&mut self, len: usize) -> Vec<f32> {
        self.ws.pool.take_zeroed(len)
    }

    pub(crate) fn recycle(&mut self, buf: Vec<f32>) {
        self.ws.pool.give(buf);
    }

    /// Records an op's output. `inputs_need_grad` says whether any input wants a gradient;
    /// without one the node is a constant and its backward rule never runs.
    pub(crate) fn push_op(&mut self, shape: Shape, value: Vec<f32>, op: Op, inputs: &[Var]) -> Var {
        let requires_grad = self.grad_enabled && inputs.iter().any(|&v| self.requires_grad(v));
        let op = if requires_grad { op } else { Op::Leaf };
        self.push(shape, value, op, requires_grad)
    }

    pub(crate) fn set_saved(&mut self, v: Var, saved: Vec<f32>) {
        let old = std::mem::replace(&mut self.ws.nodes[v.0].saved, saved);
        self.recycle(old);
    }

    fn push(&mut self, shape: Shape, value: Vec<f32>, op: Op, requires_grad: bool) -> Var {
        debug_assert!(value.is_empty() || value.len() == shape.numel());
        self.ws.nodes.push(Node {
            shape,
            value,
            param: None,
            grad: Vec::new(),
            saved: Vec::new(),
            requires_grad,
            op,
        });
        Var(self.ws.nodes.len() - 1)
    }

    /// Adds to `v`'s gradient: `f` receives the tape (to read values) and the gradient
    /// buffer (zeroed on first use). Does nothing if `v` needs no gradient.
    pub(crate) fn accumulate(&mut self, v: Var, f: impl FnOnce(&Tape, &mut [f32])) {
        self.accumulate_or_write(v, |tape, grad, fresh| {
            if fresh {
                crate::kernels::parallel::fill(grad, 0.0);
            }
            f(tape, grad)
        });
    }

    /// [`Tape::accumulate`] for rules that can write a gradient as cheaply as add to one:
    /// `f(tape, grad, fresh)` gets, when `fresh`, a buffer of unspecified contents it must
    /// overwrite entirely (the node's first gradient), and otherwise one to add to. This
    /// saves a zeroing pass over the buffer, which for a CNN's largest activations is a
    /// separate trip through memory.
    pub(crate) fn accumulate_or_write(&mut self, v: Var, f: impl FnOnce(&Tape, &mut [f32], bool)) {
        if !self.requires_grad(v) {
            return;
        }
        let (param, len) = {
            let node = &self.ws.nodes[v.0];
            (node.param, node.shape.numel())
        };
        let (mut grad, fresh) = match param {
            Some(id) => (self.params.take_grad(id), false),
            None => {
                let existing = std::mem::take(&mut self.ws.nodes[v.0].grad);
                if existing.is_empty() {
                    (self.ws.pool.take(len), true)
                } else {
                    (existing, false)
                }
            }
        };
        f(self, &mut grad, fresh);
        match param {
            Some(id) => self.params.put_grad(id, grad),
            None => self.ws.nodes[v.0].grad = grad,
        }
    }

    /// Backpropagates from a scalar output (seed gradient 1).
    pub fn backward(&mut self, output: Var) {
        assert_eq!(self.shape(output).numel(), 1, "backward needs a scalar output");
        self.backward_from(output, &[1.0]);
    }

    /// Backpropagates from any output with the given seed gradient (same size as it).
    pub fn backward_from(&mut self, output: Var, seed: &[f32]) {
        assert!(self.grad_enabled, "backward on an inference tape");
        assert_eq!(seed.len(), self.shape(output).numel());
        self.accumulate(output, |_, g| {
            for (g, s) in g.iter_mut().zip(seed) {
                *g += s;
            }
        });
        for i in (0..=output.0).rev() {
            let node = &mut self.ws.nodes[i];
            if !node.requires_grad || node.grad.is_empty() || matches!(node.op, Op::Leaf) {
                continue;
            }
            let op = node.op;
            let grad = std::mem::take(&mut node.grad);
            self.backward_op(Var(i), op, &grad);
            self.ws.nodes[i].grad = grad;
        }
    }

    fn backward_op(&mut self, out: Var, op: Op, g: &[f32]) {
        use crate::ops::*;
        match op {
            Op::Leaf => {}
            Op::MatMul { a, b } => matmul::backward(self, a, b, g),
            Op::AddBias { x, bias } => bias::backward(self, x, bias, g),
            Op::Add { a, b } => elementwise::add_backward(self, a, b, g),
            Op::Mul { a, b } => elementwise::mul_backward(self, a, b, g),
            Op::Unary { x, op } => unary::backward(self, x, out, op, g),
            Op::Softmax { x } => softmax::softmax_backward(self, x, out, g),
            Op::LogSoftmax { x } => softmax::log_softmax_backward(self, x, out, g),
            Op::SavedGrad { x } => saved_grad_backward(self, x, out, g),
            Op::MaskedBy { x } => dropout::backward(self, x, out, g),
            Op::Reshape { x } => reshape::backward(self, x, g),
            Op::Sum { x } => reduce::sum_backward(self, x, g),
            Op::Mean { x } => reduce::mean_backward(self, x, g),
            Op::Conv2d(node) => conv2d::backward(self, node, out, g),
            Op::MaxPool2d { x } => pool::max_backward(self, x, out, g),
            Op::AvgPool2d { x, window } => pool::avg_backward(self, x, window, g),
            Op::GlobalAvgPool2d { x } => pool::global_avg_backward(self, x, g),
            Op::BatchNorm { x, gamma, beta } => batch_norm::backward(self, x, gamma, beta, out, g),
            Op::ChannelAffine { x } => batch_norm::affine_backward(self, x, out, g),
            Op::Linear { x, kernel, bias } => matmul::linear_backward(self, x, kernel, bias, g),
            Op::BatchMatMul { a, b } => batch_matmul::backward(self, a, b, g),
            Op::MatMulNt { a, b } => matmul::backward_nt(self, a, b, g),
            Op::Embedding { table } => embedding::backward(self, table, out, g),
            Op::LayerNorm { x, gamma, beta } => layer_norm::backward(self, x, gamma, beta, out, g),
            Op::CausalAttention { qkv, shape } => attention::backward(self, qkv, out, shape, g),
        }
    }
}

/// `dx += g · saved`, where `g` is the scalar upstream gradient of a loss.
fn saved_grad_backward(tape: &mut Tape, x: Var, out: Var, g: &[f32]) {
    let scale = g[0];
    tape.accumulate(x, |t, dx| {
        crate::kernels::parallel::axpy(dx, scale, t.saved(out));
    });
}
