//! GPT-2's byte-level BPE, read from a Hugging Face `vocab.json` + `merges.txt` and
//! encoding exactly as `GPT2TokenizerFast` does.
//!
//! It differs from kiln's own BPE ([`super::bpe`]) in three ways, all of which change ids:
//! a vocabulary file numbers the tokens (bytes are not ids 0–255 by value); text is split
//! by GPT-2's pre-tokenizer pattern; and special tokens (`<|endoftext|>`) are matched
//! whole before anything else.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;

use super::bpe::{merge_pair, Pair};
use crate::error::{Error, Result};

/// A GPT-2 style tokenizer: token strings by id (bytes written through GPT-2's
/// byte-to-character table), the merges in rank order, and the special tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteLevelBpe {
    /// Each id's token as GPT-2 writes it in vocab.json.
    vocab: Vec<String>,
    /// Merges as id pairs, lowest rank first.
    merges: Vec<Pair>,
    /// Ids matched whole in text and never merged into (tokens no merge makes).
    special: Vec<u32>,
    // Derived from the above.
    ranks: HashMap<Pair, (u32, u32)>,
    /// The id of each byte's token, by byte value.
    byte_ids: Vec<u32>,
    bytes: Vec<Vec<u8>>,
}

/// The saved form inside a kiln model (`kiln.tokenizer`, `"type": "byte_level_bpe"`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedByteLevel {
    pub vocab: Vec<String>,
    pub merges: Vec<Pair>,
    pub special: Vec<u32>,
}

impl ByteLevelBpe {
    /// Reads a Hugging Face GPT-2 tokenizer: `vocab.json` (token → id) and `merges.txt`
    /// (one `left right` pair per line, after a `#version` line). A token that is neither a
    /// byte nor made by a merge (`<|endoftext|>`) is special.
    pub fn from_files(vocab_json: &Path, merges_txt: &Path) -> Result<ByteLevelBpe> {
        let text = std::fs::read_to_string(vocab_json).map_err(|e| Error::io(vocab_json, e))?;
        let by_token: HashMap<String, u32> = serde_json::from_str(&text)
            .map_err(|e| Error::data(vocab_json, format!("is not a JSON object of token ids: {e}")))?;
        let mut vocab = vec![None; by_token.len()];
        for (token, &id) in &by_token {
            match vocab.get_mut(id as usize) {
                Some(slot @ None) => *slot = Some(token.clone()),
                Some(Some(other)) => {
                    return Err(Error::data(
                        vocab_json,
                        format!("id {id} is given to both {token:?} and {other:?}"),
                    ))
                }
                None => {
                    return Err(Error::data(
                        vocab_json,
                        format!(
                            "id {id} of {token:?} is past the {} tokens: ids must be 0..{}",
                            by_token.len(),
                            by_token.len()
                        ),
                    ))
                }
            }
        }
        let vocab: Vec<String> = vocab
            .into_iter()
            .map(|t| t.expect("ids are a permutation"))
            .collect();
        let text = std::fs::read_to_string(merges_txt).map_err(|e| Error::io(merges_txt, e))?;
        let mut merges = Vec::new();
        for (line_no, line) in text.lines().enumerate() {
            if line.starts_with("#version") || line.trim().is_empty() {
                continue;
            }
            let at = |message: String| Error::data(merges_txt, format!("line {}: {message}", line_no + 1));
            let (left, right) = line
                .split_once(' ')
                .ok_or_else(|| at(format!("{line:?} is not two tokens separated by a space")))?;
            let id = |token: &str| {
                by_token
                    .get(token)
                    .copied()
                    .ok_or_else(|| at(format!("token {token:?} is not in vocab.json")))
            };
            merges.push((id(left)?, id(right)?));
        }
        let made: std::collections::HashSet<String> = merges
            .iter()
            .map(|&(l, r)| format!("{}{}", vocab[l as usize], vocab[r as usize]))
            .collect();
        let table = byte_to_char();
        let special = (0..vocab.len() as u32)
            .filter(|&id| {
                let token = &vocab[id as usize];
                let is_byte = token.chars().count() == 1 && table.contains(&token.chars().next().unwrap());
                !is_byte && !made.contains(token)
            })
            .collect();
        Self::new(SavedByteLevel {
            vocab,
            merges,
            special,
        })
        .map_err(|e| match e {
            Error::Corrupt { message, .. } => Error::data(merges_txt, message),
            other => other,
        })
    }

    /// Builds from the saved parts, checking that they fit together.
    pub fn new(saved: SavedByteLevel) -> Result<ByteLevelBpe> {
        let SavedByteLevel {
            vocab,
            merges,
            special,
        } = saved;
        let corrupt = |message: String| Error::Corrupt {
            what: "the byte-level BPE tokenizer".into(),
            message,
        };
        let index: HashMap<&str, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        if index.len() != vocab.len() {
            return Err(corrupt("a token appears twice in the vocabulary".into()));
        }
        let unicode_of_byte = byte_to_char();
        let mut byte_ids = vec![0u32; 256];
        for (byte, ch) in unicode_of_byte.iter().enumerate() {
            byte_ids[byte] = *index
                .get(ch.to_string().as_str())
                .ok_or_else(|| corrupt(format!("byte {byte:#04x} ({ch:?}) has no token")))?;
        }
        for &id in &special {
            match vocab.get(id as usize) {
                None => {
                    return Err(corrupt(format!(
                        "special token id {id} is past the vocabulary of {}",
                        vocab.len()
                    )))
                }
                Some(token) if token.is_empty() => {
                    return Err(corrupt(format!("special token {id} is empty")))
                }
                Some(_) => {}
            }
        }
        let special_set: std::collections::HashSet<u32> = special.iter().copied().collect();
        let bytes: Vec<Vec<u8>> = vocab
            .iter()
            .enumerate()
            .map(|(id, token)| match special_set.contains(&(id as u32)) {
                true => Ok(token.as_bytes().to_vec()),
                false => token_bytes(token)
                    .ok_or_else(|| corrupt(format!("token {id} {token:?} is not byte-level text"))),
            })
            .collect::<Result<_>>()?;
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, &(left, right)) in merges.iter().enumerate() {
            let name = |id: u32| {
                vocab.get(id as usize).ok_or_else(|| {
                    corrupt(format!(
                        "merge {rank} uses id {id}, past the vocabulary of {}",
                        vocab.len()
                    ))
                })
            };
            let merged = format!("{}{}", name(left)?, name(right)?);
            let id = *index.get(merged.as_str()).ok_or_else(|| {
                corrupt(format!(
                    "merge {rank} makes {merged:?}, which is not in the vocabulary"
                ))
            })?;
            ranks.entry((left, right)).or_insert((rank as u32, id));
        }
        Ok(ByteLevelBpe {
            vocab,
            merges,
            special,
            ranks,
            byte_ids,
            bytes,
        })
    }

    pub fn saved(&self) -> SavedByteLevel {
        SavedByteLevel {
            vocab: self.vocab.clone(),
            merges: self.merges.clone(),
            special: self.special.clone(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The special tokens' ids (`<|endoftext|>`).
    pub fn special_ids(&self) -> &[u32] {
        &self.special
    }

    /// The bytes token `id` stands for.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        &self.bytes[id as usize]
    }

    /// Writes `vocab.json` and `merges.txt` into `dir`, as Hugging Face reads them.
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        let vocab: serde_json::Map<String, serde_json::Value> = self
            .vocab
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), serde_json::Value::from(id)))
            .collect();
        let vocab_path = dir.join("vocab.json");
        let json = serde_json::to_string(&vocab).expect("strings and numbers serialize");
        crate::io::write_atomically(&vocab_path, json.as_bytes())?;
        let mut merges = String::from("#version: 0.2\n");
        for &(left, right) in &self.merges {
            merges += &format!("{} {}\n", self.vocab[left as usize], self.vocab[right as usize]);
        }
        crate::io::write_atomically(&dir.join("merges.txt"), merges.as_bytes())
    }

    /// Token ids of `text`: special tokens whole, the rest split by GPT-2's pattern and
    /// each piece's bytes merged lowest rank first.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut cache: HashMap<&str, Vec<u32>> = HashMap::new();
        for segment in self.split_special(text) {
            match segment {
                Segment::Special(id) => ids.push(id),
                Segment::Text(text) => {
                    for piece in pre_tokenize(text) {
                        let encoded = cache.entry(piece).or_insert_with(|| self.encode_piece(piece));
                        ids.extend_from_slice(encoded);
                    }
                }
            }
        }
        ids
    }

    fn encode_piece(&self, piece: &str) -> Vec<u32> {
        let mut symbols: Vec<u32> = piece.bytes().map(|b| self.byte_ids[b as usize]).collect();
        loop {
            let best = symbols
                .windows(2)
                .filter_map(|w| {
                    self.ranks
                        .get(&(w[0], w[1]))
                        .map(|&(rank, id)| (rank, (w[0], w[1]), id))
                })
                .min_by_key(|&(rank, ..)| rank);
            let Some((_, pair, id)) = best else { return symbols };
            symbols = merge_pair(&symbols, pair, id);
        }
    }

    /// `text` cut at every occurrence of a special token (the earliest, then the longest).
    fn split_special<'t>(&self, mut text: &'t str) -> Vec<Segment<'t>> {
        let mut segments = Vec::new();
        loop {
            let next = self
                .special
                .iter()
                .filter_map(|&id| {
                    let token = &self.vocab[id as usize];
                    text.find(token.as_str())
                        .map(|at| (at, std::cmp::Reverse(token.len()), id))
                })
                .min();
            let Some((at, std::cmp::Reverse(len), id)) = next else {
                if !text.is_empty() {
                    segments.push(Segment::Text(text));
                }
                return segments;
            };
            if at > 0 {
                segments.push(Segment::Text(&text[..at]));
            }
            segments.push(Segment::Special(id));
            text = &text[at + len..];
        }
    }
}

enum Segment<'t> {
    Text(&'t str),
    Special(u32),
}

/// GPT-2's pre-tokenizer: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
/// The `regex` crate has no look-ahead, so `\s+(?!\S)` is done by hand: a run of
/// whitespace followed by more text gives up its last character, which then starts the
/// next piece (as ` word` when it is a space, or alone).
pub fn pre_tokenize(text: &str) -> Vec<&str> {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+")
            .expect("a valid pattern")
    });
    let mut pieces = Vec::new();
    let mut at = 0;
    while let Some(found) = pattern.find_at(text, at) {
        let piece = found.as_str();
        let followed = found.end() < text.len();
        let whitespace = piece.chars().all(char::is_whitespace);
        let last = piece.char_indices().last().map_or(0, |(i, _)| i);
        if whitespace && followed && last > 0 {
            pieces.push(&piece[..last]);
            at = found.start() + last;
        } else {
            pieces.push(piece);
            at = found.end();
        }
    }
    pieces
}

/// GPT-2's table from bytes to printable characters: the printable Latin-1 bytes stand
/// for themselves, the others for U+0100 onwards in byte order.
fn byte_to_char() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable =
            |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let mut table = ['\0'; 256];
        let mut next = 256u32;
        for b in 0..256u32 {
            table[b as usize] = match printable(b) {
                true => char::from_u32(b).expect("Latin-1"),
                false => {
                    next += 1;
                    char::from_u32(next - 1).expect("below the surrogates")
                }
            };
        }
        table
    })
}

/// The bytes a token string stands for, or None if it has a character outside the table.
fn token_bytes(token: &str) -> Option<Vec<u8>> {
    static BACK: OnceLock<HashMap<char, u8>> = OnceLock::new();
    let back = BACK.get_or_init(|| {
        byte_to_char()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    });
    token.chars().map(|c| back.get(&c).copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_table_is_gpt2s() {
        let table = byte_to_char();
        assert_eq!(table[b'!' as usize], '!');
        assert_eq!(table[b' ' as usize], 'Ġ'); // U+0120
        assert_eq!(table[b'\n' as usize], 'Ċ'); // U+010A
        assert_eq!(token_bytes("Ġthe").unwrap(), b" the");
    }

    #[test]
    fn special_tokens_must_be_in_the_vocabulary_and_not_empty() {
        let vocab: Vec<String> = byte_to_char().iter().map(|c| c.to_string()).collect();
        let with = |extra: Vec<String>, special: Vec<u32>| {
            let vocab = vocab.iter().cloned().chain(extra).collect();
            ByteLevelBpe::new(SavedByteLevel {
                vocab,
                merges: vec![],
                special,
            })
        };
        assert!(with(vec!["<|endoftext|>".into()], vec![256]).is_ok());
        let past = with(vec![], vec![999]).unwrap_err().to_string();
        assert!(past.contains("999"), "{past}");
        let empty = with(vec![String::new()], vec![256]).unwrap_err().to_string();
        assert!(empty.contains("empty"), "{empty}");
    }

    #[test]
    fn pre_tokenizes_as_gpt2s_pattern() {
        let cases: [(&str, &[&str]); 7] = [
            ("Hello world", &["Hello", " world"]),
            ("it's  fine", &["it", "'s", " ", " fine"]),
            ("a\t\tb", &["a", "\t", "\t", "b"]),
            (
                "x = 1234;\n\nend  ",
                &["x", " =", " 1234", ";", "\n", "\n", "end", "  "],
            ),
            ("...'s", &["...'", "s"]),
            ("  \n word", &["  \n", " word"]),
            ("Ⅻth 42", &["Ⅻ", "th", " 42"]),
        ];
        for (text, pieces) in cases {
            assert_eq!(pre_tokenize(text), pieces, "{text:?}");
        }
    }
}
