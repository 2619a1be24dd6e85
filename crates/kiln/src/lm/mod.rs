//! Language models: text tokenizers, a GPT-style decoder-only transformer, its training
//! loop and text generation.

pub mod artifact;
pub mod bpe;
pub mod generate;
pub mod gpt;
pub mod spec;
pub mod text;
pub mod tokenizer;
pub mod train;

pub use gpt::{Gpt, GptConfig};
pub use spec::LmSpec;
pub use tokenizer::Tokenizer;
