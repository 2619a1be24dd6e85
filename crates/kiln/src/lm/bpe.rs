//! A byte-level BPE (byte pair encoding) tokenizer.
//!
//! Every string is its UTF-8 bytes, so ids 0..256 cover any input and nothing is ever
//! "unknown"; training learns merges of adjacent ids on top of those bytes. Text is first
//! split into chunks (see [`Chunks`]) and merges never cross a chunk boundary, so tokens
//! stay word-like (" the", "ing", "\n\n") instead of gluing the end of one word to the
//! start of the next.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::error::{Error, Result};

/// Two adjacent ids, the unit a merge replaces.
pub(crate) type Pair = (u32, u32);

/// The number of ids that are raw bytes, before the first merge.
const BYTE_IDS: usize = 256;

/// Byte-level BPE: ids 0..256 are the raw bytes; id 256 + i is the i-th learned merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BytePairEncoding {
    merges: Vec<Pair>,
    /// Merge index by pair: encoding applies the lowest index first, as training did.
    ranks: HashMap<Pair, u32>,
    /// The bytes each id stands for, so decoding is a lookup per id.
    tokens: Vec<Vec<u8>>,
}

/// The longest token a merge may make: far past any word, and a bound on what a saved
/// tokenizer (a few bytes of JSON per merge) can make kiln allocate.
const MAX_TOKEN_BYTES: usize = 1024;

impl BytePairEncoding {
    /// Learns merges from `text` until the vocabulary has `vocab_size` ids (>= 256; error
    /// otherwise, naming the value). Stops early (fewer merges) if no pair occurs at least
    /// twice.
    pub fn train(text: &str, vocab_size: usize) -> Result<Self> {
        if vocab_size < BYTE_IDS {
            return Err(Error::setting(
                "data.tokenizer.vocab_size",
                vocab_size,
                format!("at least {BYTE_IDS}, the number of byte ids"),
            ));
        }
        let mut trainer = Trainer::new(text);
        let mut merges = Vec::with_capacity(vocab_size - BYTE_IDS);
        let mut lengths = vec![1usize; BYTE_IDS];
        while BYTE_IDS + merges.len() < vocab_size {
            // A pair seen once would add a token used exactly once: no compression.
            let Some(pair) = trainer.most_frequent_pair(2) else {
                break;
            };
            let length = lengths[pair.0 as usize] + lengths[pair.1 as usize];
            if length > MAX_TOKEN_BYTES {
                // A long run of one character would otherwise double its token each merge.
                trainer.forget(pair);
                continue;
            }
            trainer.merge(pair, id_of_merge(merges.len()));
            merges.push(pair);
            lengths.push(length);
        }
        Self::from_merges(merges)
    }

    /// Rebuilds from saved merges; errors (naming the merge index and ids) if a merge
    /// refers to an id not yet defined (>= 256 + its own index).
    pub fn from_merges(merges: Vec<(u32, u32)>) -> Result<Self> {
        let mut ranks = HashMap::with_capacity(merges.len());
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|byte| vec![byte]).collect();
        for (index, &(left, right)) in merges.iter().enumerate() {
            check_merge(index, left, right)?;
            // A repeated pair could never be produced by encoding: the file is corrupt.
            if let Some(first) = ranks.insert((left, right), index as u32) {
                return Err(Error::Corrupt {
                    what: "the BPE merges".into(),
                    message: format!("merge {index} ({left}, {right}) repeats merge {first}"),
                });
            }
            let length = tokens[left as usize].len() + tokens[right as usize].len();
            if length > MAX_TOKEN_BYTES {
                return Err(Error::Corrupt {
                    what: "the BPE merges".into(),
                    message: format!(
                        "merge {index} ({left}, {right}) makes a token of {length} bytes; tokens are at most {MAX_TOKEN_BYTES}"
                    ),
                });
            }
            let bytes = [tokens[left as usize].as_slice(), &tokens[right as usize]].concat();
            tokens.push(bytes);
        }
        Ok(Self {
            merges,
            ranks,
            tokens,
        })
    }

    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// 256 + the number of merges.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 2);
        // Natural text repeats the same words constantly; merging each only once pays off.
        let mut cache: HashMap<&str, Vec<u32>> = HashMap::new();
        for chunk in Chunks::new(text) {
            let chunk_ids = cache.entry(chunk).or_insert_with(|| self.encode_chunk(chunk));
            ids.extend_from_slice(chunk_ids);
        }
        ids
    }

    /// The bytes of the tokens (may end mid-way through a UTF-8 character).
    ///
    /// # Panics
    /// If an id is not below [`vocab_size`](Self::vocab_size).
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        bytes
    }

    /// The bytes of one token (for streaming output).
    ///
    /// # Panics
    /// If `id` is not below [`vocab_size`](Self::vocab_size).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        match self.tokens.get(id as usize) {
            Some(bytes) => bytes,
            None => panic!(
                "token id {id} is outside the BPE vocabulary of {} ids",
                self.vocab_size()
            ),
        }
    }

    /// Applies merges to one chunk's bytes, lowest merge index first, until none applies:
    /// the order training learned them in, so the same text gets the same tokens.
    fn encode_chunk(&self, chunk: &str) -> Vec<u32> {
        let mut symbols: Vec<u32> = chunk.bytes().map(u32::from).collect();
        while let Some((pair, rank)) = self.lowest_ranked_pair(&symbols) {
            symbols = merge_pair(&symbols, pair, id_of_merge(rank as usize));
        }
        symbols
    }

    fn lowest_ranked_pair(&self, symbols: &[u32]) -> Option<(Pair, u32)> {
        symbols
            .windows(2)
            .filter_map(|w| {
                let pair = (w[0], w[1]);
                self.ranks.get(&pair).map(|&rank| (pair, rank))
            })
            .min_by_key(|&(_, rank)| rank)
    }
}

/// The id the merge at `index` creates.
fn id_of_merge(index: usize) -> u32 {
    (BYTE_IDS + index) as u32
}

/// Merge `index` may only use bytes and the tokens of earlier merges.
fn check_merge(index: usize, left: u32, right: u32) -> Result<()> {
    let defined = id_of_merge(index);
    for id in [left, right] {
        if id >= defined {
            return Err(Error::Corrupt {
                what: "the BPE merges".into(),
                message: format!(
                    "merge {index} ({left}, {right}) uses id {id}, \
                     but only ids below {defined} are defined before it"
                ),
            });
        }
    }
    Ok(())
}

/// Replaces each occurrence of `pair` in `symbols`, scanning left to right, with `id`.
pub(crate) fn merge_pair(symbols: &[u32], pair: Pair, id: u32) -> Vec<u32> {
    let mut merged = Vec::with_capacity(symbols.len());
    let mut i = 0;
    while i < symbols.len() {
        if i + 1 < symbols.len() && (symbols[i], symbols[i + 1]) == pair {
            merged.push(id);
            i += 2;
        } else {
            merged.push(symbols[i]);
            i += 1;
        }
    }
    merged
}

/// Training state: the corpus as unique chunks with their frequencies, and pair counts
/// kept up to date across merges so each merge only revisits the chunks it changes.
struct Trainer {
    /// Each unique chunk as its current ids.
    words: Vec<Vec<u32>>,
    /// How often each unique chunk occurs in the corpus.
    freqs: Vec<i64>,
    /// Occurrences of each pair across the corpus (a chunk's pairs times its frequency).
    counts: HashMap<Pair, i64>,
    /// The chunks each pair may occur in (entries can be stale; merging re-checks).
    occurs_in: HashMap<Pair, HashSet<usize>>,
    /// Candidates for the most frequent pair: (count, Reverse(pair)), so equal counts pop
    /// the smallest pair first and training never depends on hash order. An entry is
    /// pushed on every count change; entries whose count is out of date are skipped.
    heap: BinaryHeap<(i64, Reverse<Pair>)>,
}

impl Trainer {
    fn new(text: &str) -> Self {
        let mut chunk_freqs: HashMap<&str, i64> = HashMap::new();
        for chunk in Chunks::new(text) {
            *chunk_freqs.entry(chunk).or_insert(0) += 1;
        }
        let mut trainer = Trainer {
            words: Vec::with_capacity(chunk_freqs.len()),
            freqs: Vec::with_capacity(chunk_freqs.len()),
            counts: HashMap::new(),
            occurs_in: HashMap::new(),
            heap: BinaryHeap::new(),
        };
        for (chunk, freq) in chunk_freqs {
            trainer.add_word(chunk.bytes().map(u32::from).collect(), freq);
        }
        let initial: Vec<_> = trainer.counts.iter().map(|(&p, &c)| (c, Reverse(p))).collect();
        trainer.heap = BinaryHeap::from(initial);
        trainer
    }

    fn add_word(&mut self, symbols: Vec<u32>, freq: i64) {
        let index = self.words.len();
        for w in symbols.windows(2) {
            let pair = (w[0], w[1]);
            *self.counts.entry(pair).or_insert(0) += freq;
            self.occurs_in.entry(pair).or_default().insert(index);
        }
        self.words.push(symbols);
        self.freqs.push(freq);
    }

    /// The most frequent pair occurring at least `min_count` times (smallest pair on ties).
    fn most_frequent_pair(&mut self, min_count: i64) -> Option<Pair> {
        while let Some(&(count, Reverse(pair))) = self.heap.peek() {
            if count < min_count {
                return None;
            }
            if self.counts.get(&pair) == Some(&count) {
                return Some(pair);
            }
            self.heap.pop();
        }
        None
    }

    /// Never merges `pair` (its token would be too long).
    fn forget(&mut self, pair: Pair) {
        self.counts.remove(&pair);
        self.occurs_in.remove(&pair);
    }

    /// Replaces `pair` by `id` in every chunk holding it and updates the pair counts.
    fn merge(&mut self, pair: Pair, id: u32) {
        let holders = self.occurs_in.remove(&pair).unwrap_or_default();
        let mut deltas: HashMap<Pair, i64> = HashMap::new();
        for index in holders {
            self.merge_in_word(index, pair, id, &mut deltas);
        }
        for (changed, delta) in deltas {
            if delta != 0 {
                self.apply_delta(changed, delta);
            }
        }
    }

    /// Adjusts one pair's count, dropping pairs that no longer occur.
    fn apply_delta(&mut self, pair: Pair, delta: i64) {
        let count = self.counts.entry(pair).or_insert(0);
        *count += delta;
        let count = *count;
        if count > 0 {
            self.heap.push((count, Reverse(pair)));
        } else {
            self.counts.remove(&pair);
        }
    }

    /// Rewrites one chunk, recording how its pairs' counts change: all old pairs out, all
    /// new pairs in. Unchanged pairs cancel out, so only real changes reach the heap.
    fn merge_in_word(&mut self, index: usize, pair: Pair, id: u32, deltas: &mut HashMap<Pair, i64>) {
        let word = &self.words[index];
        if !word.windows(2).any(|w| (w[0], w[1]) == pair) {
            return; // a stale entry: an earlier merge already consumed the pair here
        }
        let freq = self.freqs[index];
        let merged = merge_pair(word, pair, id);
        for w in word.windows(2) {
            *deltas.entry((w[0], w[1])).or_insert(0) -= freq;
        }
        for w in merged.windows(2) {
            *deltas.entry((w[0], w[1])).or_insert(0) += freq;
            self.occurs_in.entry((w[0], w[1])).or_default().insert(index);
        }
        self.words[index] = merged;
    }
}

/// What a character contributes to a chunk, for pre-tokenization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Letter,
    Digit,
    Space,
    Other,
}

fn char_class(c: char) -> CharClass {
    if c.is_alphabetic() {
        CharClass::Letter
    } else if c.is_numeric() {
        CharClass::Digit
    } else if c.is_whitespace() {
        CharClass::Space
    } else {
        CharClass::Other
    }
}

/// Pre-tokenization in the manner of GPT-2 (without its English contraction rules): splits
/// text into chunks that BPE merges never cross. A chunk is one of
///
/// - a run of letters, a run of digits, or a run of other non-whitespace characters, each
///   optionally preceded by one space (U+0020), so " the" and " 42" and " --" are chunks;
/// - a run of whitespace. When it is followed by a non-whitespace character and ends in a
///   space, that last space is left to the next chunk (as GPT-2's `\s+(?!\S)` does), so
///   "a   b" splits as "a", "  ", " b". Newlines and tabs never join a word: "\n" followed
///   by "b" is a chunk of its own. Unlike GPT-2, a run ending in another whitespace
///   character stays whole ("\n\n" before a word is one chunk, not "\n", "\n").
///
/// The leading space belongs to the word after it because that is what recurs: " the"
/// appears mid-sentence thousands of times, "the " only before another space.
/// Concatenating the chunks gives back the text exactly.
struct Chunks<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Chunks<'a> {
    fn new(text: &'a str) -> Self {
        Chunks { text, pos: 0 }
    }

    /// The byte length of the chunk starting at the start of `rest` (which is not empty).
    fn chunk_len(rest: &str) -> usize {
        let mut chars = rest.chars();
        let first = chars.next().expect("chunk_len needs text");
        let second = chars.next().map(char_class);
        match (first, char_class(first), second) {
            // A single space leads the word after it.
            (' ', _, Some(class)) if class != CharClass::Space => 1 + run_len(&rest[1..], class),
            (_, CharClass::Space, _) => whitespace_len(rest),
            (_, class, _) => run_len(rest, class),
        }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = &self.text[self.pos..];
        if rest.is_empty() {
            return None;
        }
        let len = Self::chunk_len(rest);
        self.pos += len;
        Some(&rest[..len])
    }
}

/// The byte length of the leading run of characters of `class` in `text`.
fn run_len(text: &str, class: CharClass) -> usize {
    text.char_indices()
        .find(|&(_, c)| char_class(c) != class)
        .map_or(text.len(), |(i, _)| i)
}

/// The byte length of the leading whitespace run, less a final space that leads the
/// non-whitespace text after it.
fn whitespace_len(text: &str) -> usize {
    let len = run_len(text, CharClass::Space);
    let followed_by_text = len < text.len();
    if followed_by_text && len > 1 && text[..len].ends_with(' ') {
        len - 1
    } else {
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fuzzing finding: 31 saved merges, each of the last token with itself, once asked
    /// for a 2 GB token; tokens are capped, and training keeps to the same cap.
    #[test]
    fn merges_that_double_a_token_are_capped() {
        let mut merges = vec![(97, 97)];
        for i in 0..30 {
            merges.push((256 + i, 256 + i));
        }
        let err = BytePairEncoding::from_merges(merges).unwrap_err().to_string();
        assert!(err.contains("tokens are at most 1024"), "{err}");
        let run = "a".repeat(5000) + " " + &"a".repeat(5000);
        let bpe = BytePairEncoding::train(&run, 300).unwrap();
        assert!(bpe.tokens.iter().all(|t| t.len() <= MAX_TOKEN_BYTES));
        assert_eq!(bpe.decode_bytes(&bpe.encode(&run)), run.as_bytes());
        BytePairEncoding::from_merges(bpe.merges().to_vec()).unwrap();
    }

    use std::time::Instant;

    fn chunks(text: &str) -> Vec<&str> {
        Chunks::new(text).collect()
    }

    fn assert_round_trip(bpe: &BytePairEncoding, text: &str) {
        let ids = bpe.encode(text);
        assert_eq!(bpe.decode_bytes(&ids), text.as_bytes(), "round trip of {text:?}");
    }

    /// Tiny Shakespeare from `$KILN_DATA/shakespeare/input.txt`.
    fn shakespeare() -> String {
        let root = crate::data::test_support::shared_data();
        std::fs::read_to_string(root.join("shakespeare/input.txt")).expect("$KILN_DATA/shakespeare/input.txt")
    }

    #[test]
    fn chunks_follow_the_gpt2_rule() {
        assert_eq!(chunks("Hello world"), ["Hello", " world"]);
        assert_eq!(chunks("a   b"), ["a", "  ", " b"]);
        assert_eq!(chunks("it's 42 km!?"), ["it", "'", "s", " 42", " km", "!?"]);
        assert_eq!(chunks("end.\n\nNext"), ["end", ".", "\n\n", "Next"]);
        assert_eq!(chunks("x \ny"), ["x", " \n", "y"]);
        assert_eq!(chunks("x\n y"), ["x", "\n", " y"]);
        assert_eq!(chunks("trailing  "), ["trailing", "  "]);
        assert_eq!(chunks("café 日本語123"), ["café", " 日本語", "123"]);
        assert!(chunks("").is_empty());
    }

    #[test]
    fn chunks_concatenate_to_the_text() {
        let text = "  Mixed\t\tinput: 3.14, naïve 🙂🙂 \r\n\n  end  ";
        assert_eq!(chunks(text).concat(), text);
    }

    #[test]
    fn round_trips_any_text() {
        let bpe = BytePairEncoding::train("the theme of the thesis then thereafter", 300).unwrap();
        assert!(bpe.merges().len() > 2, "expected some merges");
        for text in [
            "",
            "the theme",
            "plain ASCII, with punctuation!",
            "café naïve résumé 日本語 🙂🎉👍🏽",
            "   \t\n\n  spaces   everywhere \r\n ",
            "\0\u{7f}\u{feff}",
        ] {
            assert_round_trip(&bpe, text);
        }
    }

    #[test]
    fn learns_the_hand_checked_merges() {
        // Pairs in "aaabdaaabac": aa ×4, then (aa,a) and ab tie at 2 (ab is smaller:
        // 97 < 256), then (aa,ab) ×2; after that every pair occurs once.
        let bpe = BytePairEncoding::train("aaabdaaabac", 1000).unwrap();
        let (a, b, c, d) = (97, 98, 99, 100);
        assert_eq!(bpe.merges(), [(a, a), (a, b), (256, 257)]);
        assert_eq!(bpe.vocab_size(), 259);
        assert_eq!(bpe.encode("aaabdaaabac"), [258, d, 258, a, c]);
        assert_eq!(bpe.token_bytes(258), b"aaab");
    }

    #[test]
    fn training_is_deterministic() {
        let text = "to be or not to be, that is the question: whether 'tis nobler \
                    in the mind to suffer the slings and arrows of outrageous fortune";
        let first = BytePairEncoding::train(text, 330).unwrap();
        for _ in 0..5 {
            assert_eq!(BytePairEncoding::train(text, 330).unwrap(), first);
        }
    }

    #[test]
    fn merges_never_cross_chunk_boundaries() {
        // "b " occurs 4 times in the text, yet must never be learned: it spans two words.
        let bpe = BytePairEncoding::train("ab ab ab ab, ab\n\nab  ab", 400).unwrap();
        assert_eq!(bpe.merges(), [(97, 98), (32, 256)], "ab, then \" ab\"");
        for id in 0..bpe.vocab_size() as u32 {
            let bytes = bpe.token_bytes(id);
            assert!(
                !bytes.windows(2).any(|w| w == b"b "),
                "token {bytes:?} joins words"
            );
            // A token is a piece of one chunk, so it is itself a single chunk.
            if let Ok(text) = std::str::from_utf8(bytes) {
                assert!(chunks(text).len() <= 1, "token {text:?} spans chunks");
            }
        }
    }

    #[test]
    fn vocab_below_the_byte_ids_is_an_error() {
        let err = BytePairEncoding::train("abc", 255).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSetting { field, value, .. }
                if field == "data.tokenizer.vocab_size" && value == "255"),
            "{err}"
        );
        let bytes_only = BytePairEncoding::train("abab", 256).unwrap();
        assert!(bytes_only.merges().is_empty());
        assert_eq!(bytes_only.encode("ab"), [97, 98]);
    }

    #[test]
    fn from_merges_rebuilds_and_validates() {
        let trained = BytePairEncoding::train("the theme of the thesis", 280).unwrap();
        let rebuilt = BytePairEncoding::from_merges(trained.merges().to_vec()).unwrap();
        assert_eq!(rebuilt, trained);

        let err = BytePairEncoding::from_merges(vec![(97, 98), (256, 257)]).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Corrupt { .. }));
        assert!(
            message.contains("merge 1") && message.contains("257"),
            "{message}"
        );

        let repeated = BytePairEncoding::from_merges(vec![(97, 98), (97, 98)]);
        assert!(repeated.is_err());
    }

    #[test]
    #[should_panic(expected = "outside the BPE vocabulary")]
    fn token_bytes_rejects_unknown_ids() {
        BytePairEncoding::from_merges(vec![]).unwrap().token_bytes(256);
    }

    #[test]
    #[ignore = "needs tiny Shakespeare in $KILN_DATA (../shared/data); .ci/run runs it"]
    fn compresses_shakespeare() {
        let text = shakespeare();
        for vocab_size in [512, 1024] {
            let start = Instant::now();
            let bpe = BytePairEncoding::train(&text, vocab_size).unwrap();
            let trained = start.elapsed();
            let start = Instant::now();
            let ids = bpe.encode(&text);
            let encoded = start.elapsed();
            let ratio = ids.len() as f64 / text.len() as f64;
            eprintln!(
                "vocab {vocab_size}: trained in {trained:.2?}, encoded in {encoded:.2?}, \
                 {ratio:.3} ids per byte"
            );
            assert_eq!(bpe.vocab_size(), vocab_size);
            assert_eq!(bpe.decode_bytes(&ids), text.as_bytes());
            if vocab_size == 512 {
                assert!(ratio < 0.6, "{ratio:.3} ids per byte at vocab 512");
                // Many counts tie on a real corpus: hash order must not pick among them.
                assert_eq!(BytePairEncoding::train(&text, vocab_size).unwrap(), bpe);
            }
        }
    }
}
