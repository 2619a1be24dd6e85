//! kiln: a deep-learning toolkit in Rust.
//!
//! Tensors and a define-by-run autograd tape ([`autograd`], [`ops`]), layers and losses
//! ([`nn`]), optimizers ([`optim`]), data loading ([`data`]), training ([`train`]) and
//! model artifacts ([`artifact`]). No async runtime, HTTP or MPI here: those live in their
//! own crates so the core builds fast and embeds anywhere.

pub mod artifact;
pub mod autograd;
pub mod compress;
pub mod data;
pub mod error;
pub mod io;
pub mod kernels;
pub mod lm;
pub mod metrics;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod params;
pub mod pipeline;
pub mod rng;
pub mod select;
pub mod spec;
pub mod tensor;
pub mod train;

pub use autograd::{Tape, Var, Workspace};
/// Compression's two halves, also at the top level where they always were.
pub use compress::{prune, quant};
pub use error::{Error, Result};
pub use params::{ParamId, ParamStore};
pub use tensor::{Shape, Tensor};

/// The project README, whose library example runs as this crate's doc-test.
#[doc = include_str!("../../../README.md")]
pub mod readme {}
