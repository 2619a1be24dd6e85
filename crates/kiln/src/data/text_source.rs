//! The text sources of a `[data]` section, for language models: how the text is split and
//! which tokenizer a spec asks for. (The tokenizers themselves are in `lm::tokenizer`.)

use std::path::Path;

use serde::{Deserialize, Serialize};

/// How a spec asks for its tokenizer: `tokenizer = "char"` or
/// `tokenizer = { type = "bpe", vocab_size = 512 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenizerSpec {
    Named(TokenizerName),
    Bpe(BpeSpec),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerName {
    Char,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BpeSpec {
    #[serde(rename = "type")]
    pub kind: BpeTag,
    /// 256 byte tokens plus learned merges.
    pub vocab_size: usize,
}

/// The `type = "bpe"` of a [`BpeSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BpeTag {
    Bpe,
}

impl Default for TokenizerSpec {
    fn default() -> Self {
        TokenizerSpec::Named(TokenizerName::Char)
    }
}

pub(super) fn default_validation_fraction() -> f32 {
    0.1
}

/// Where a text source's corpus is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Corpus<'a> {
    /// A UTF-8 file.
    File(&'a Path),
    /// The tiny Shakespeare corpus (`$KILN_DATA/shakespeare/input.txt`, the cache, or a
    /// download).
    TinyShakespeare,
}

/// What a language model reads of a text source: the corpus, the part held out (the last
/// `validation_fraction` of the text, by position) and the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextData<'a> {
    pub corpus: Corpus<'a>,
    pub validation_fraction: f32,
    pub tokenizer: &'a TokenizerSpec,
}

/// Specs and model files from before text sources joined `[data]` may give a text's `path`
/// without `source`: that meant a text file, and still does.
pub fn add_implied_text_source(data: &mut serde_json::Value) {
    if let Some(table) = data.as_object_mut() {
        if table.contains_key("path") && !table.contains_key("source") {
            table.insert("source".into(), "text".into());
        }
    }
}
