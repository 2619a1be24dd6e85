//! Language models: text tokenizers, a GPT-style decoder-only transformer and text
//! generation. Training is the one trainer's (`crate::train`), on token windows.

pub mod bpe;
pub mod byte_level;
pub mod cached_forward;
pub mod generate;
pub mod gpt;
pub mod int8;
mod model;
pub mod text;
pub mod tokenizer;

pub use gpt::{Gpt, GptActivation, GptConfig};
pub use tokenizer::Tokenizer;
