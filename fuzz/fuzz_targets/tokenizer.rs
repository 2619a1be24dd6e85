//! kiln's tokenizers on arbitrary text. The first byte picks the case (low 2 bits) and,
//! for BPE, the vocabulary size (256 + 8 × the other 6 bits, so up to 760); the rest is
//! text (invalid UTF-8 replaced). A NUL in the text splits it: before it, what the
//! tokenizer is built from; after it, text to encode (without a NUL, the same text).
//!
//! - 0: character vocabulary (`Tokenizer::fit` with `tokenizer = "char"`);
//! - 1: byte-level BPE trained on the text (`tokenizer = { type = "bpe", … }`);
//! - 2: a saved tokenizer, the text being its JSON (`Tokenizer::from_json`, as a model
//!   file's `kiln.tokenizer` holds it); it is then used on the text after the NUL;
//! - 3: saved BPE merges as bytes, so that long chains of merges are easy to reach: byte
//!   1 is the number of merges n, then n × 4 bytes, two little-endian u16 ids per merge,
//!   each taken modulo the ids defined before it (`BytePairEncoding::from_merges`); the
//!   rest is text to encode.
//!
//! What must hold: encode → decode gives the text back exactly for BPE (byte-level: every
//! string encodes) and for a character vocabulary whenever every character is in it (and
//! encoding fails exactly when one is not); ids are below the vocabulary size; the
//! streaming decoder gives the same text; the tokenizer's JSON loads back to the same one.
#![no_main]

use std::collections::BTreeSet;

use kiln::lm::bpe::BytePairEncoding;
use kiln::lm::tokenizer::{BpeSpec, BpeTag, StreamDecoder, TokenizerName, TokenizerSpec};
use kiln::lm::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&config, mut rest)) = data.split_first() else {
        return;
    };
    let mut merges = Vec::new();
    if config & 3 == 3 {
        let Some((&count, after)) = rest.split_first() else {
            return;
        };
        let count = usize::from(count).min(after.len() / 4);
        for (index, m) in after.chunks_exact(4).take(count).enumerate() {
            let defined = 256 + index as u32;
            let id = |lo: u8, hi: u8| u32::from(u16::from_le_bytes([lo, hi])) % defined;
            merges.push((id(m[0], m[1]), id(m[2], m[3])));
        }
        rest = &after[4 * count..];
    }
    let text = String::from_utf8_lossy(rest);
    let text: &str = &text;
    let (build, probe) = text.split_once('\0').unwrap_or((text, text));
    let tokenizer = match config & 3 {
        0 => Tokenizer::fit(&TokenizerSpec::Named(TokenizerName::Char), build, build),
        2 => match Tokenizer::from_json(build) {
            Ok(t) => Ok(t),
            Err(_) => return,
        },
        3 => match BytePairEncoding::from_merges(merges) {
            Ok(b) => Ok(Tokenizer::Bpe(b)),
            Err(_) => return, // a merge repeated
        },
        _ => {
            let vocab_size = 256 + 8 * usize::from(config >> 2);
            let spec = TokenizerSpec::Bpe(BpeSpec {
                kind: BpeTag::Bpe,
                vocab_size,
            });
            let t = Tokenizer::fit(&spec, "", build).expect("a BPE vocabulary of 256 or more trains");
            assert!(
                t.vocab_size() <= vocab_size,
                "{} ids, {vocab_size} asked",
                t.vocab_size()
            );
            Ok(t)
        }
    }
    .expect("fitting a tokenizer to text succeeds");

    let json = tokenizer.to_json();
    match Tokenizer::from_json(&json) {
        Ok(back) => assert_eq!(
            back, tokenizer,
            "the saved tokenizer loads back different: {json}"
        ),
        // An empty character vocabulary (from empty text) is refused on load by design.
        Err(e) => assert!(
            matches!(&tokenizer, Tokenizer::Chars(c) if c.is_empty()),
            "the saved tokenizer does not load back: {e}: {json}"
        ),
    }

    for sample in [probe, build] {
        round_trip(&tokenizer, sample);
    }
});

fn round_trip(tokenizer: &Tokenizer, text: &str) {
    let ids = match (tokenizer, tokenizer.encode(text)) {
        (_, Ok(ids)) => ids,
        (Tokenizer::Chars(chars), Err(e)) => {
            let known: BTreeSet<char> = chars.iter().copied().collect();
            assert!(
                text.chars().any(|c| !known.contains(&c)),
                "a text of known characters failed to encode: {e}"
            );
            return;
        }
        (Tokenizer::Bpe(_) | Tokenizer::ByteLevel(_), Err(e)) => {
            panic!("byte-level BPE failed to encode: {e}")
        }
    };
    let vocab = tokenizer.vocab_size();
    assert!(
        ids.iter().all(|&id| (id as usize) < vocab),
        "an id at or above {vocab}"
    );
    assert_eq!(tokenizer.decode(&ids), text, "encode → decode changed the text");
    let mut stream = StreamDecoder::default();
    let mut streamed: String = ids.iter().map(|&id| stream.push(tokenizer, id)).collect();
    streamed.push_str(&stream.finish());
    assert_eq!(streamed, text, "the stream decoder gave other text");
}
