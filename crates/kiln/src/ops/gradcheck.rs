//! Finite-difference gradient checks shared by every op's tests.
//!
//! The op's output `y` is projected onto fixed random weights `w` to get a scalar
//! `L = Σ w·y` (computed in f64), so every output element contributes. The analytic
//! gradient is backward seeded with `w`; the numeric one is the central difference
//! `(L(x+ε) − L(x−ε)) / 2ε`.
//!
//! Tolerance: the kernels run in f32. With ε = 1e-2 each L carries a rounding error of about
//! 1e-7·Σ|w·y| ≲ 1e-5 for these small inputs, i.e. ≲ 5e-4 in the difference quotient, and
//! the truncation error ε²·L'''/6 is ~1e-5 for smooth ops of unit scale. An absolute 5e-3
//! plus 1% relative bound therefore separates real mistakes (off by a factor, a sign, a
//! missing term: errors of order 1) from arithmetic noise.

use crate::autograd::{Tape, Var, Workspace};
use crate::params::ParamStore;
use crate::rng::Rng;
use crate::tensor::Shape;

const EPS: f32 = 1e-2;
const ATOL: f64 = 5e-3;
const RTOL: f64 = 1e-2;

/// Checks the gradient of `build` with respect to every input. `inputs` are (shape, values).
pub fn check(name: &str, inputs: &[(&[usize], Vec<f32>)], build: impl Fn(&mut Tape, &[Var]) -> Var) {
    check_with_params(name, ParamStore::new(), inputs, build);
}

/// [`check`] for ops that also read (or update) parameters held in `params`.
pub fn check_with_params(
    name: &str,
    mut params: ParamStore,
    inputs: &[(&[usize], Vec<f32>)],
    build: impl Fn(&mut Tape, &[Var]) -> Var,
) {
    let mut ws = Workspace::new();
    let projection = {
        let mut tape = Tape::new(&mut params, &mut ws);
        let vars = record_inputs(&mut tape, inputs);
        let y = build(&mut tape, &vars);
        let mut rng = Rng::new(99);
        (0..tape.value(y).len())
            .map(|_| rng.uniform(-1.0, 1.0))
            .collect::<Vec<_>>()
    };
    let scalar = |values: &[Vec<f32>], params: &mut ParamStore, ws: &mut Workspace| -> f64 {
        let mut tape = Tape::inference(params, ws);
        let vars: Vec<Var> = inputs
            .iter()
            .zip(values)
            .map(|((dims, _), v)| tape.input(v, Shape::new(dims)))
            .collect();
        let y = build(&mut tape, &vars);
        tape.value(y)
            .iter()
            .zip(&projection)
            .map(|(&y, &w)| y as f64 * w as f64)
            .sum()
    };

    let analytic: Vec<Vec<f32>> = {
        let mut tape = Tape::new(&mut params, &mut ws);
        let vars = record_inputs(&mut tape, inputs);
        let y = build(&mut tape, &vars);
        tape.backward_from(y, &projection);
        vars.iter()
            .zip(inputs)
            .map(|(&v, (_, x))| tape.grad(v).map_or(vec![0.0; x.len()], <[f32]>::to_vec))
            .collect()
    };

    let mut values: Vec<Vec<f32>> = inputs.iter().map(|(_, v)| v.clone()).collect();
    for input in 0..inputs.len() {
        for i in 0..values[input].len() {
            let original = values[input][i];
            values[input][i] = original + EPS;
            let plus = scalar(&values, &mut params, &mut ws);
            values[input][i] = original - EPS;
            let minus = scalar(&values, &mut params, &mut ws);
            values[input][i] = original;
            let numeric = (plus - minus) / (2.0 * EPS as f64);
            let exact = analytic[input][i] as f64;
            let bound = ATOL + RTOL * numeric.abs().max(exact.abs());
            assert!(
                (numeric - exact).abs() <= bound,
                "{name}: d/d input{input}[{i}]: analytic {exact:.6}, numeric {numeric:.6}"
            );
        }
    }
}

fn record_inputs(tape: &mut Tape, inputs: &[(&[usize], Vec<f32>)]) -> Vec<Var> {
    inputs
        .iter()
        .map(|(dims, v)| tape.leaf(v, Shape::new(dims), true))
        .collect()
}

/// Values uniform in [-1, 1) from a fixed seed.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

/// Values uniform in ±[0.1, 1): away from zero, for ops with a kink there (relu).
pub fn away_from_zero(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let magnitude = rng.uniform(0.1, 1.0);
            if rng.next_f32() < 0.5 {
                -magnitude
            } else {
                magnitude
            }
        })
        .collect()
}
