//! Trainable parameters: named tensors with a gradient buffer each, owned by a model and
//! read by the tape during the forward pass.

use crate::tensor::Tensor;

/// Index of a parameter in its [`ParamStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParamId(pub(crate) usize);

impl ParamId {
    pub fn index(self) -> usize {
        self.0
    }
}

#[derive(Debug, Clone)]
pub struct Parameter {
    /// Stable name, used as the tensor name in saved artifacts (e.g. `layers.1.kernel`).
    pub name: String,
    pub value: Tensor,
    /// Same length as `value`; accumulated by backward, cleared by [`ParamStore::zero_grads`].
    pub grad: Vec<f32>,
    /// False for state a layer updates itself (batch normalization's moving statistics):
    /// saved with the model, never touched by an optimizer.
    pub trainable: bool,
    /// A trainable weight held fixed for this run (its layer says `trainable = false`, as
    /// when fine-tuning a new head on a pretrained body): no update, no part in clipping
    /// norms or in the distributed all-reduce.
    pub frozen: bool,
}

impl Parameter {
    /// Whether the optimizer updates it.
    pub fn learns(&self) -> bool {
        self.trainable && !self.frozen
    }
}

#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    params: Vec<Parameter>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        self.push(name.into(), value, true)
    }

    /// A parameter the optimizer leaves alone (see [`Parameter::trainable`]).
    pub fn add_non_trainable(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        self.push(name.into(), value, false)
    }

    fn push(&mut self, name: String, value: Tensor, trainable: bool) -> ParamId {
        let grad = vec![0.0; value.numel()];
        self.params.push(Parameter {
            name,
            value,
            grad,
            trainable,
            frozen: false,
        });
        ParamId(self.params.len() - 1)
    }

    pub fn get(&self, id: ParamId) -> &Parameter {
        &self.params[id.0]
    }

    pub fn get_mut(&mut self, id: ParamId) -> &mut Parameter {
        &mut self.params[id.0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Parameter> {
        self.params.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Parameter> {
        self.params.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Total number of scalar parameters.
    pub fn count(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }

    pub fn zero_grads(&mut self) {
        for p in &mut self.params {
            crate::kernels::parallel::fill(&mut p.grad, 0.0);
        }
    }

    /// Moves a gradient buffer out so a kernel can write it while reading other values.
    pub(crate) fn take_grad(&mut self, id: ParamId) -> Vec<f32> {
        std::mem::take(&mut self.params[id.0].grad)
    }

    pub(crate) fn put_grad(&mut self, id: ParamId, grad: Vec<f32>) {
        self.params[id.0].grad = grad;
    }
}
