//! Tokenizers: text to token ids and back. A character vocabulary (every distinct character
//! of the corpus, sorted, as char-rnn and nanoGPT's Shakespeare example build it) or
//! byte-level BPE ([`super::bpe`]). Either is saved inside the model artifact as JSON, so
//! a model always decodes with the vocabulary it was trained on.

use serde::{Deserialize, Serialize};

use super::bpe::BytePairEncoding;
use super::byte_level::{ByteLevelBpe, SavedByteLevel};
pub use crate::data::{BpeSpec, BpeTag, TokenizerName, TokenizerSpec};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum Tokenizer {
    /// Id i is the i-th character of the sorted vocabulary.
    Chars(Vec<char>),
    Bpe(BytePairEncoding),
    /// GPT-2's tokenizer, from a Hugging Face vocab.json and merges.txt.
    ByteLevel(ByteLevelBpe),
}

/// The saved form, stored in the artifact's metadata.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Saved {
    Char { chars: String },
    Bpe { merges: Vec<(u32, u32)> },
    ByteLevelBpe(SavedByteLevel),
}

impl Tokenizer {
    /// Builds the tokenizer a spec asks for. A character vocabulary covers the whole text
    /// (so validation text never holds an unknown character); BPE merges are learned from
    /// `training_text` only.
    pub fn fit(spec: &TokenizerSpec, text: &str, training_text: &str) -> Result<Tokenizer> {
        match spec {
            TokenizerSpec::Named(TokenizerName::Char) => {
                let mut chars: Vec<char> = text.chars().collect();
                chars.sort_unstable();
                chars.dedup();
                Ok(Tokenizer::Chars(chars))
            }
            TokenizerSpec::Bpe(b) => Ok(Tokenizer::Bpe(BytePairEncoding::train(
                training_text,
                b.vocab_size,
            )?)),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Tokenizer::Chars(_) => "char",
            Tokenizer::Bpe(_) => "bpe",
            Tokenizer::ByteLevel(_) => "byte_level_bpe",
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Chars(c) => c.len(),
            Tokenizer::Bpe(b) => b.vocab_size(),
            Tokenizer::ByteLevel(b) => b.vocab_size(),
        }
    }

    /// Token ids of `text`; a character outside a character vocabulary is an error naming
    /// it and where it is.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Chars(chars) => {
                let mut ids = Vec::with_capacity(text.len());
                for (position, ch) in text.chars().enumerate() {
                    match chars.binary_search(&ch) {
                        Ok(id) => ids.push(id as u32),
                        Err(_) => {
                            return Err(Error::unsupported(
                                format!(
                                    "character {ch:?} (U+{:04X}) at position {}",
                                    ch as u32,
                                    position + 1
                                ),
                                format!(
                                    "it is not in the model's vocabulary of {} characters",
                                    chars.len()
                                ),
                            ))
                        }
                    }
                }
                Ok(ids)
            }
            Tokenizer::Bpe(b) => Ok(b.encode(text)),
            Tokenizer::ByteLevel(b) => Ok(b.encode(text)),
        }
    }

    /// The bytes token `id` stands for (UTF-8; a BPE token may hold part of a character).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        match self {
            Tokenizer::Chars(chars) => chars[id as usize].to_string().into_bytes(),
            Tokenizer::Bpe(b) => b.token_bytes(id).to_vec(),
            Tokenizer::ByteLevel(b) => b.token_bytes(id).to_vec(),
        }
    }

    /// The text of `ids`; bytes that do not form UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn to_json(&self) -> String {
        let saved = match self {
            Tokenizer::Chars(chars) => Saved::Char {
                chars: chars.iter().collect(),
            },
            Tokenizer::Bpe(b) => Saved::Bpe {
                merges: b.merges().to_vec(),
            },
            Tokenizer::ByteLevel(b) => Saved::ByteLevelBpe(b.saved()),
        };
        serde_json::to_string(&saved).expect("a tokenizer serializes")
    }

    pub fn from_json(json: &str) -> Result<Tokenizer> {
        let saved: Saved = serde_json::from_str(json).map_err(|e| Error::Corrupt {
            what: "the saved tokenizer".into(),
            message: format!("it does not parse: {e}"),
        })?;
        Ok(match saved {
            Saved::Char { chars } => {
                let chars: Vec<char> = chars.chars().collect();
                if chars.is_empty() || chars.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(Error::Corrupt {
                        what: "the saved character vocabulary".into(),
                        message: "it must be non-empty, sorted and without repeats".into(),
                    });
                }
                Tokenizer::Chars(chars)
            }
            Saved::Bpe { merges } => Tokenizer::Bpe(BytePairEncoding::from_merges(merges)?),
            Saved::ByteLevelBpe(saved) => Tokenizer::ByteLevel(ByteLevelBpe::new(saved)?),
        })
    }
}

/// Turns a stream of token ids into text as soon as it is valid UTF-8: a BPE token can end
/// inside a multi-byte character, whose remaining bytes come with the next token.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// The text completed by this token (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.pending.extend(tokenizer.token_bytes(id));
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An error with no length is an incomplete character at the end: wait for more.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let done: Vec<u8> = self.pending.drain(..valid).collect();
        String::from_utf8_lossy(&done).into_owned()
    }

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_are_sorted_and_round_trip() {
        let t = Tokenizer::fit(&TokenizerSpec::default(), "hello world", "hello").unwrap();
        assert_eq!(t.vocab_size(), 8); // " dehlorw"
        let ids = t.encode("world hello").unwrap();
        assert_eq!(t.decode(&ids), "world hello");
        assert_eq!(t.encode(" ").unwrap(), vec![0]);
    }

    #[test]
    fn an_unknown_character_is_named_with_its_position() {
        let t = Tokenizer::fit(&TokenizerSpec::default(), "abc", "abc").unwrap();
        let err = t.encode("abZ").unwrap_err().to_string();
        assert!(
            err.contains("'Z'") && err.contains("U+005A") && err.contains("position 3"),
            "{err}"
        );
    }

    #[test]
    fn saved_vocabularies_load_back() {
        let t = Tokenizer::fit(&TokenizerSpec::default(), "ba\né", "").unwrap();
        assert_eq!(Tokenizer::from_json(&t.to_json()).unwrap(), t);
        let b = Tokenizer::fit(
            &TokenizerSpec::Bpe(BpeSpec {
                kind: BpeTag::Bpe,
                vocab_size: 260,
            }),
            "",
            "aaaa bbbb aaaa bbbb",
        )
        .unwrap();
        assert_eq!(Tokenizer::from_json(&b.to_json()).unwrap(), b);
        assert!(Tokenizer::from_json(r#"{"type":"char","chars":"ba"}"#).is_err());
    }

    #[test]
    fn specs_parse_from_toml() {
        #[derive(Deserialize)]
        struct S {
            tokenizer: TokenizerSpec,
        }
        let s: S = toml::from_str(r#"tokenizer = "char""#).unwrap();
        assert_eq!(s.tokenizer, TokenizerSpec::default());
        let s: S = toml::from_str(r#"tokenizer = { type = "bpe", vocab_size = 300 }"#).unwrap();
        assert_eq!(
            s.tokenizer,
            TokenizerSpec::Bpe(BpeSpec {
                kind: BpeTag::Bpe,
                vocab_size: 300
            })
        );
        assert!(toml::from_str::<S>(r#"tokenizer = "words""#).is_err());
    }

    #[test]
    fn the_stream_decoder_waits_for_whole_characters() {
        let b = BytePairEncoding::from_merges(Vec::new()).unwrap();
        let t = Tokenizer::Bpe(b);
        let mut d = StreamDecoder::default();
        let bytes = "é".as_bytes(); // two bytes, two byte tokens
        assert_eq!(d.push(&t, bytes[0] as u32), "");
        assert_eq!(d.push(&t, bytes[1] as u32), "é");
        assert_eq!(d.finish(), "");
    }
}
