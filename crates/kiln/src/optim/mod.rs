//! Optimizers with Keras's update rules and defaults. Each keeps its per-parameter state
//! (momentum, moment estimates) in buffers allocated once, on the first step.

mod adam;
mod clip;
mod rmsprop;
mod schedule;
mod sgd;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::ParamStore;

pub use adam::Adam;
pub use clip::GradientClipping;
pub use rmsprop::RmsProp;
pub use schedule::Schedule;
pub use sgd::Sgd;

/// An optimizer as a spec names it (`type = "adam"`), with Keras defaults for every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OptimizerSpec {
    Sgd(Sgd),
    Adam(Adam),
    #[serde(rename = "adamw")]
    AdamW(Adam),
    Rmsprop(RmsProp),
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec::Adam(Adam::default())
    }
}

impl From<Sgd> for OptimizerSpec {
    fn from(sgd: Sgd) -> Self {
        OptimizerSpec::Sgd(sgd)
    }
}

impl From<Adam> for OptimizerSpec {
    fn from(adam: Adam) -> Self {
        OptimizerSpec::Adam(adam)
    }
}

impl From<RmsProp> for OptimizerSpec {
    fn from(rmsprop: RmsProp) -> Self {
        OptimizerSpec::Rmsprop(rmsprop)
    }
}

impl Sgd {
    /// Keras's `SGD(learning_rate=…)`, no momentum.
    pub fn new(learning_rate: f32) -> Sgd {
        Sgd {
            learning_rate,
            ..Sgd::default()
        }
    }
}

impl Adam {
    /// Keras's `Adam(learning_rate=…)`, the other settings at their defaults.
    pub fn new(learning_rate: f32) -> Adam {
        Adam {
            learning_rate,
            ..Adam::default()
        }
    }

    /// The same settings as AdamW (decoupled weight decay, Keras's 0.004 unless set).
    pub fn decoupled(self) -> OptimizerSpec {
        OptimizerSpec::AdamW(self)
    }
}

impl RmsProp {
    /// Keras's `RMSprop(learning_rate=…)`.
    pub fn new(learning_rate: f32) -> RmsProp {
        RmsProp {
            learning_rate,
            ..RmsProp::default()
        }
    }
}

impl OptimizerSpec {
    pub fn build(&self) -> Optimizer {
        let rule = match self {
            OptimizerSpec::Sgd(s) => Rule::Sgd(*s),
            OptimizerSpec::Adam(a) => Rule::Adam(Adam {
                weight_decay: Some(a.weight_decay_or(0.0)),
                ..a.clone()
            }),
            OptimizerSpec::AdamW(a) => Rule::Adam(Adam {
                weight_decay: Some(a.weight_decay_or(0.004)),
                ..a.clone()
            }),
            OptimizerSpec::Rmsprop(r) => Rule::RmsProp(*r),
        };
        Optimizer {
            rule,
            state: Vec::new(),
            iterations: 0,
        }
    }

    /// Checks the settings an update rule needs: a positive, finite learning rate, decay
    /// rates (betas, rho, momentum) in [0, 1), positive epsilon, non-negative weight decay.
    /// Errors name the field as a spec writes it (`optimizer.learning_rate`).
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, v: f32| match v.is_finite() && v > 0.0 {
            true => Ok(()),
            false => Err(Error::setting(
                format!("optimizer.{name}"),
                v,
                "a positive number",
            )),
        };
        let rate = |name: &str, v: f32| match (0.0..1.0).contains(&v) {
            true => Ok(()),
            false => Err(Error::setting(format!("optimizer.{name}"), v, "a rate in [0, 1)")),
        };
        positive("learning_rate", self.learning_rate())?;
        match self {
            OptimizerSpec::Sgd(s) => rate("momentum", s.momentum),
            OptimizerSpec::Adam(a) | OptimizerSpec::AdamW(a) => {
                rate("beta_1", a.beta_1)?;
                rate("beta_2", a.beta_2)?;
                positive("epsilon", a.epsilon)?;
                match a.weight_decay {
                    Some(w) if !(w.is_finite() && w >= 0.0) => {
                        Err(Error::setting("optimizer.weight_decay", w, "a number ≥ 0"))
                    }
                    _ => Ok(()),
                }
            }
            OptimizerSpec::Rmsprop(r) => {
                rate("rho", r.rho)?;
                rate("momentum", r.momentum)?;
                positive("epsilon", r.epsilon)
            }
        }
    }

    pub fn learning_rate(&self) -> f32 {
        match self {
            OptimizerSpec::Sgd(s) => s.learning_rate,
            OptimizerSpec::Adam(a) | OptimizerSpec::AdamW(a) => a.learning_rate,
            OptimizerSpec::Rmsprop(r) => r.learning_rate,
        }
    }
}

#[derive(Debug, Clone)]
enum Rule {
    Sgd(Sgd),
    Adam(Adam),
    RmsProp(RmsProp),
}

/// A built optimizer: the update rule and its state.
#[derive(Debug, Clone)]
pub struct Optimizer {
    rule: Rule,
    /// Per parameter, the rule's state buffers (momentum, moments), each parameter-sized.
    state: Vec<Vec<Vec<f32>>>,
    iterations: u64,
}

impl Optimizer {
    /// Number of steps taken so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// The per-parameter state buffers (momentum, moments), empty before the first step.
    pub fn state(&self) -> &[Vec<Vec<f32>>] {
        &self.state
    }

    /// State buffers each parameter needs under this rule.
    pub fn slots(&self) -> usize {
        match &self.rule {
            Rule::Sgd(s) if s.momentum == 0.0 => 0,
            Rule::Sgd(_) => 1,
            Rule::Adam(_) => 2,
            Rule::RmsProp(_) => 3,
        }
    }

    /// Continues from saved state: `iterations` steps taken, and the buffers
    /// [`Optimizer::state`] returned (empty if no step had been taken).
    pub fn restore(&mut self, iterations: u64, state: Vec<Vec<Vec<f32>>>) {
        self.iterations = iterations;
        self.state = state;
    }

    /// Applies one update from the gradients held in `params`, with learning rate `lr`
    /// (the spec's rate, or a schedule's value for this step). The gradients are kept.
    pub fn step(&mut self, params: &mut ParamStore, lr: f32) {
        self.update(params, lr, false);
    }

    /// [`Optimizer::step`], then leaves every gradient at zero for the next backward pass.
    /// Clearing each gradient in the pass that reads it saves the training loop a separate
    /// sweep over every parameter (and a thread hand-off) per step.
    pub fn step_and_clear(&mut self, params: &mut ParamStore, lr: f32) {
        self.update(params, lr, true);
    }

    fn update(&mut self, params: &mut ParamStore, lr: f32, clear: bool) {
        if self.state.len() != params.len() {
            let slots = self.slots();
            self.state = params
                .iter()
                .map(|p| vec![vec![0.0; p.value.numel()]; slots])
                .collect();
        }
        self.iterations += 1;
        let t = self.iterations;
        for (p, state) in params.iter_mut().zip(&mut self.state) {
            if p.frozen && clear {
                p.grad.fill(0.0);
            }
            if !p.learns() {
                continue;
            }
            let (w, g) = (
                p.value.data_mut(),
                Grad {
                    values: &mut p.grad,
                    clear,
                },
            );
            match &self.rule {
                Rule::Sgd(s) => s.update(w, g, state, lr),
                Rule::Adam(a) => a.update(w, g, state, lr, t, a.decays(&p.name)),
                Rule::RmsProp(r) => r.update(w, g, state, lr),
            }
        }
    }
}

/// Update loops compiled for the widest vectors the CPU has. The default x86-64 target
/// only assumes SSE2, where Adam's square root and division run four lanes at a time and
/// made the update a sixth of a reference-MLP step. Elementwise IEEE arithmetic rounds the
/// same at any width (Rust never fuses a·b + c on its own), so every path gives the same
/// weights bit for bit.
mod wide {
    /// The update of one chunk: `f(w, g, a, b)` per element, zeroing `g` when asked.
    #[inline(always)]
    fn body<F: Fn(&mut f32, f32, &mut f32, &mut f32)>(
        w: &mut [f32],
        g: &mut [f32],
        a: &mut [f32],
        b: &mut [f32],
        clear: bool,
        f: &F,
    ) {
        for (((w, g), a), b) in w.iter_mut().zip(g).zip(a).zip(b) {
            f(w, *g, a, b);
            if clear {
                *g = 0.0;
            }
        }
    }

    crate::kernels::simd::widest_simd! {
        pub(super) fn update2<F: Fn(&mut f32, f32, &mut f32, &mut f32)>(
            w: &mut [f32],
            g: &mut [f32],
            a: &mut [f32],
            b: &mut [f32],
            clear: bool,
            f: &F,
        ) => body
    }
}

/// Below this size an update runs on one thread; above it, in chunks across the pool.
const CHUNK: usize = 1 << 14;

/// A gradient as an update rule sees it: the values, and whether to zero them once read.
pub(crate) struct Grad<'a> {
    pub values: &'a mut [f32],
    pub clear: bool,
}

/// `f(w[i], g[i], a[i])` over aligned chunks, in parallel for large tensors: the update is
/// memory-bound, so splitting it over both cores nearly halves it. Zeroes `g` as it goes
/// when asked to.
pub(crate) fn zip1(w: &mut [f32], g: Grad, a: &mut [f32], f: impl Fn(&mut f32, f32, &mut f32) + Sync) {
    use rayon::prelude::*;
    let clear = g.clear;
    let run = |w: &mut [f32], g: &mut [f32], a: &mut [f32]| {
        for ((w, g), a) in w.iter_mut().zip(g).zip(a) {
            f(w, *g, a);
            if clear {
                *g = 0.0;
            }
        }
    };
    if w.len() < crate::kernels::parallel::PAR_THRESHOLD {
        run(w, g.values, a);
    } else {
        w.par_chunks_mut(CHUNK)
            .zip(g.values.par_chunks_mut(CHUNK))
            .zip(a.par_chunks_mut(CHUNK))
            .for_each(|((w, g), a)| run(w, g, a));
    }
}

/// `f(w[i], g[i], a[i], b[i])`, as [`zip1`] with two state buffers.
pub(crate) fn zip2(
    w: &mut [f32],
    g: Grad,
    a: &mut [f32],
    b: &mut [f32],
    f: impl Fn(&mut f32, f32, &mut f32, &mut f32) + Sync,
) {
    use rayon::prelude::*;
    let clear = g.clear;
    let run = |w: &mut [f32], g: &mut [f32], a: &mut [f32], b: &mut [f32]| {
        wide::update2(w, g, a, b, clear, &f);
    };
    if w.len() < crate::kernels::parallel::PAR_THRESHOLD {
        run(w, g.values, a, b);
    } else {
        w.par_chunks_mut(CHUNK)
            .zip(g.values.par_chunks_mut(CHUNK))
            .zip(a.par_chunks_mut(CHUNK))
            .zip(b.par_chunks_mut(CHUNK))
            .for_each(|(((w, g), a), b)| run(w, g, a, b));
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::params::ParamStore;
    use crate::tensor::Tensor;

    /// The write-up's example: w = [1, 2, 3], L = (w1 + w2 + w3)², so ∂L/∂wi = 2·Σw.
    pub fn quadratic_problem() -> ParamStore {
        let mut p = ParamStore::new();
        p.add("w", Tensor::new(&[3], vec![1.0, 2.0, 3.0]).unwrap());
        p
    }

    pub fn set_quadratic_grad(p: &mut ParamStore) {
        let param = p.iter_mut().next().unwrap();
        let s: f32 = param.value.data().iter().sum();
        param.grad.iter_mut().for_each(|g| *g = 2.0 * s);
    }

    pub fn weights(p: &ParamStore) -> Vec<f32> {
        p.iter().next().unwrap().value.data().to_vec()
    }

    pub fn assert_close(actual: &[f32], expected: &[f64]) {
        for (a, e) in actual.iter().zip(expected) {
            assert!(
                (*a as f64 - e).abs() < 1e-6,
                "got {actual:?}, expected {expected:?}"
            );
        }
    }
}
