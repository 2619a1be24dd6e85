//! Compression: a trained model in, a smaller or faster one out. Magnitude and structured
//! pruning ([`prune`]) and int8 quantization with 16-bit weight storage ([`quant`]).

pub mod prune;
pub mod quant;

pub use prune::Pruning;
