//! A generation request as clients send it (OpenAI's completions and KServe's generate
//! extension share the parameters), checked field by field so that a bad one is named, and
//! the text of its tokens as they arrive: whole UTF-8 characters only, cut at a stop string
//! or an end-of-text token, and never sending text that a stop string might still claim.

use std::sync::Arc;

use axum::http::StatusCode;
use kiln::lm::generate::Sampling;
use kiln::lm::tokenizer::StreamDecoder;
use kiln::lm::Tokenizer;
use serde_json::{Map, Value};

/// OpenAI's default when a request names no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: usize = 16;

/// The most stop strings a request may give, as in OpenAI's API.
const MAX_STOP_STRINGS: usize = 4;

/// A request that cannot be served: the status, what was wrong, and the parameter at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct LmError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
}

impl LmError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        LmError {
            status,
            message: message.into(),
            param: None,
        }
    }

    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        LmError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param.to_string()),
        }
    }
}

impl From<crate::error::ApiError> for LmError {
    fn from(e: crate::error::ApiError) -> Self {
        LmError::new(e.status, e.message)
    }
}

/// What a served language model needs to turn requests into tokens and tokens into text.
pub struct LmSignature {
    pub name: String,
    pub tokenizer: Arc<Tokenizer>,
    pub context: usize,
    pub vocab: usize,
    /// Tokens that end a completion (GPT-2's `<|endoftext|>`), with finish reason `stop`.
    pub end_tokens: Vec<u32>,
    /// The largest `max_tokens` the server allows (`--max-tokens`).
    pub max_tokens_cap: usize,
}

/// The sampling parameters of a request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub stop: Vec<String>,
}

/// Reads the shared parameters from `fields`; `seed` defaults to a fresh random one.
pub fn read_params(fields: &Map<String, Value>, cap: usize) -> Result<Params, LmError> {
    let max_tokens = match fields.get("max_tokens") {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENS.min(cap),
        Some(v) => {
            let n = whole_number(v, "max_tokens")?;
            if n == 0 || n > cap as u64 {
                return Err(LmError::bad(
                    "max_tokens",
                    format!("`max_tokens` is {n}; this server allows 1 to {cap} (--max-tokens)"),
                ));
            }
            n as usize
        }
    };
    let temperature = match number(fields, "temperature")? {
        None => 1.0,
        Some(t) if (0.0..=2.0).contains(&t) => t as f32,
        Some(t) => {
            return Err(LmError::bad(
                "temperature",
                format!("`temperature` is {t}; expected 0 to 2"),
            ))
        }
    };
    let top_p = match number(fields, "top_p")? {
        None => None,
        Some(p) if p > 0.0 && p < 1.0 => Some(p as f32),
        Some(1.0) => None,
        Some(p) => {
            return Err(LmError::bad(
                "top_p",
                format!("`top_p` is {p}; expected a number in (0, 1]"),
            ))
        }
    };
    let top_k = match fields.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => match whole_number(v, "top_k")? {
            0 => return Err(LmError::bad("top_k", "`top_k` is 0; expected at least 1")),
            k => Some(k as usize),
        },
    };
    let seed = match fields.get("seed") {
        None | Some(Value::Null) => random_seed(),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_i64().map(|s| s as u64))
            .ok_or_else(|| LmError::bad("seed", format!("`seed` is {v}; expected an integer")))?,
    };
    Ok(Params {
        max_tokens,
        sampling: Sampling {
            temperature,
            top_k,
            top_p,
            seed,
        },
        stop: stop_strings(fields.get("stop"))?,
    })
}

fn whole_number(v: &Value, name: &str) -> Result<u64, LmError> {
    v.as_u64()
        .ok_or_else(|| LmError::bad(name, format!("`{name}` is {v}; expected a whole number")))
}

fn number(fields: &Map<String, Value>, name: &str) -> Result<Option<f64>, LmError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| LmError::bad(name, format!("`{name}` is {v}; expected a number"))),
    }
}

fn stop_strings(value: Option<&Value>) -> Result<Vec<String>, LmError> {
    let bad = |why: String| LmError::bad("stop", why);
    let strings: Vec<String> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("`stop` must be a string or a list of strings".into()))?,
        Some(v) => {
            return Err(bad(format!(
                "`stop` is {v}; expected a string or a list of strings"
            )))
        }
    };
    if strings.len() > MAX_STOP_STRINGS {
        return Err(bad(format!(
            "`stop` has {} strings; at most {MAX_STOP_STRINGS} are allowed",
            strings.len()
        )));
    }
    if strings.iter().any(String::is_empty) {
        return Err(bad("`stop` holds an empty string".into()));
    }
    Ok(strings)
}

/// A seed for a request that gives none: different on every request.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// The prompt's tokens: text through the model's tokenizer, or token ids as given (a list
/// of integers, as OpenAI's API also takes). `param` names the field in errors.
pub fn prompt_tokens(model: &LmSignature, prompt: &Value, param: &str) -> Result<Vec<u32>, LmError> {
    let bad = |why: String| LmError::bad(param, why);
    let tokens = match prompt {
        Value::String(text) => model
            .tokenizer
            .encode(text)
            .map_err(|e| bad(format!("`{param}`: {e}")))?,
        Value::Array(items) if items.iter().all(Value::is_number) => items
            .iter()
            .map(|v| match v.as_u64() {
                Some(id) if (id as usize) < model.vocab => Ok(id as u32),
                _ => Err(bad(format!(
                    "`{param}` holds token {v}, outside the vocabulary of {} tokens",
                    model.vocab
                ))),
            })
            .collect::<Result<_, _>>()?,
        Value::Array(items) if items.len() == 1 => return prompt_tokens(model, &items[0], param),
        Value::Array(items) => {
            return Err(bad(format!(
                "`{param}` is a list of {} prompts; this server takes one prompt per request",
                items.len()
            )))
        }
        v => {
            return Err(bad(format!(
                "`{param}` is {v}; expected a string or a list of token ids"
            )))
        }
    };
    if tokens.is_empty() {
        return Err(bad(format!("`{param}` is empty; give at least one token")));
    }
    if tokens.len() > model.context {
        return Err(bad(format!(
            "`{param}` is {} tokens long, longer than the model's context of {}",
            tokens.len(),
            model.context
        )));
    }
    Ok(tokens)
}

/// Why a completion ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop string or an end-of-text token.
    Stop,
    /// `max_tokens` were generated.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// Turns a completion's tokens into text as they arrive.
pub struct TextAssembler {
    tokenizer: Arc<Tokenizer>,
    end_tokens: Vec<u32>,
    stop: Vec<String>,
    decoder: StreamDecoder,
    /// Decoded text held back because it may be the start of a stop string.
    held: String,
    pub tokens: usize,
    pub finished: Option<Finish>,
}

impl TextAssembler {
    pub fn new(model: &LmSignature, stop: Vec<String>) -> Self {
        TextAssembler {
            tokenizer: model.tokenizer.clone(),
            end_tokens: model.end_tokens.clone(),
            stop,
            decoder: StreamDecoder::default(),
            held: String::new(),
            tokens: 0,
            finished: None,
        }
    }

    /// The text that token `id` completes and that no stop string can still claim
    /// (possibly empty); after a stop, nothing more.
    pub fn push(&mut self, id: u32) -> String {
        if self.finished.is_some() {
            return String::new();
        }
        self.tokens += 1;
        if self.end_tokens.contains(&id) {
            self.finished = Some(Finish::Stop);
            return self.flush();
        }
        let text = self.decoder.push(&self.tokenizer, id);
        self.held.push_str(&text);
        if let Some(at) = self.stop.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.finished = Some(Finish::Stop);
            self.held.truncate(at);
            return std::mem::take(&mut self.held);
        }
        let keep = self.held.len() - self.stop_prefix_start();
        let rest = self.held.split_off(self.held.len() - keep);
        std::mem::replace(&mut self.held, rest)
    }

    /// The end of the token stream after `max_tokens`: whatever is held back.
    pub fn finish_length(&mut self) -> String {
        if self.finished.is_some() {
            return String::new();
        }
        self.finished = Some(Finish::Length);
        self.flush()
    }

    fn flush(&mut self) -> String {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(&self.decoder.finish());
        text
    }

    /// Where the longest tail of the held text that begins some stop string starts
    /// (the held text's length when none does).
    fn stop_prefix_start(&self) -> usize {
        let held = &self.held;
        (0..held.len())
            .filter(|&i| held.is_char_boundary(i))
            .find(|&i| self.stop.iter().any(|s| s.starts_with(&held[i..])))
            .unwrap_or(held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chars_model(text: &str) -> LmSignature {
        let spec = kiln::lm::tokenizer::TokenizerSpec::default();
        let tokenizer = Tokenizer::fit(&spec, text, text).unwrap();
        LmSignature {
            name: "m".into(),
            vocab: tokenizer.vocab_size(),
            tokenizer: Arc::new(tokenizer),
            context: 8,
            end_tokens: Vec::new(),
            max_tokens_cap: 100,
        }
    }

    fn params(v: Value) -> Result<Params, LmError> {
        read_params(v.as_object().unwrap(), 100)
    }

    #[test]
    fn parameters_default_as_openai_and_bad_ones_are_named() {
        let p = params(json!({"seed": 3})).unwrap();
        assert_eq!(p.max_tokens, DEFAULT_MAX_TOKENS);
        assert_eq!(
            p.sampling,
            Sampling {
                temperature: 1.0,
                top_k: None,
                top_p: None,
                seed: 3
            }
        );
        let p = params(json!({"max_tokens": 5, "temperature": 0, "top_p": 0.5, "top_k": 7, "stop": "x"}))
            .unwrap();
        assert_eq!(
            (p.max_tokens, p.sampling.top_k, p.stop),
            (5, Some(7), vec!["x".to_string()])
        );
        for (body, param, says) in [
            (json!({"max_tokens": 101}), "max_tokens", "1 to 100"),
            (json!({"max_tokens": 0}), "max_tokens", "1 to 100"),
            (json!({"max_tokens": "a"}), "max_tokens", "whole number"),
            (json!({"temperature": 2.5}), "temperature", "0 to 2"),
            (json!({"top_p": 0}), "top_p", "(0, 1]"),
            (json!({"top_k": 0}), "top_k", "at least 1"),
            (json!({"seed": 1.5}), "seed", "integer"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop", "at most 4"),
            (json!({"stop": [""]}), "stop", "empty"),
            (json!({"stop": 3}), "stop", "string"),
        ] {
            let e = params(body.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
            assert!(e.message.contains(says), "{body}: {}", e.message);
        }
    }

    #[test]
    fn prompts_are_text_or_token_ids_and_must_fit() {
        let m = chars_model("abcdef");
        assert_eq!(prompt_tokens(&m, &json!("bad"), "prompt").unwrap(), vec![1, 0, 3]);
        assert_eq!(
            prompt_tokens(&m, &json!(["bad"]), "prompt").unwrap(),
            vec![1, 0, 3]
        );
        assert_eq!(prompt_tokens(&m, &json!([5, 0]), "prompt").unwrap(), vec![5, 0]);
        for (prompt, says) in [
            (json!("xyz"), "U+0078"),
            (json!([6]), "outside the vocabulary of 6"),
            (json!(""), "empty"),
            (json!("abcdefabc"), "context of 8"),
            (json!(["a", "b"]), "one prompt per request"),
            (json!({"a": 1}), "expected a string"),
        ] {
            let e = prompt_tokens(&m, &prompt, "prompt").unwrap_err();
            assert!(e.message.contains(says), "{prompt}: {}", e.message);
        }
    }

    fn assemble(model: &LmSignature, stop: &[&str], text: &str) -> (Vec<String>, Option<Finish>) {
        let mut a = TextAssembler::new(model, stop.iter().map(|s| s.to_string()).collect());
        let mut pieces = Vec::new();
        for id in model.tokenizer.encode(text).unwrap() {
            pieces.push(a.push(id));
        }
        pieces.push(a.finish_length());
        (pieces, a.finished)
    }

    #[test]
    fn stop_strings_cut_the_text_and_their_beginnings_are_held_back() {
        let m = chars_model("abcdef");
        let (pieces, finish) = assemble(&m, &["cde"], "abcdcdef");
        // "cd" is held until the next character shows it is not "cde"; then "cde" stops.
        assert_eq!(pieces, ["a", "b", "", "", "cd", "", "", "", ""]);
        assert_eq!(finish, Some(Finish::Stop));
        let (pieces, finish) = assemble(&m, &["fa"], "abcf");
        assert_eq!(pieces.concat(), "abcf");
        assert_eq!(finish, Some(Finish::Length));
    }

    #[test]
    fn an_end_token_stops_and_split_characters_wait() {
        let mut m = chars_model("ab");
        m.end_tokens = vec![1];
        let mut a = TextAssembler::new(&m, Vec::new());
        assert_eq!(a.push(0), "a");
        assert_eq!(a.push(1), "");
        assert_eq!(a.finished, Some(Finish::Stop));
        assert_eq!(a.push(0), "");
        // Byte tokens: a two-byte character arrives whole or not at all.
        let bytes = Tokenizer::Bpe(kiln::lm::bpe::BytePairEncoding::from_merges(Vec::new()).unwrap());
        let m = LmSignature {
            tokenizer: Arc::new(bytes),
            vocab: 256,
            ..chars_model("a")
        };
        let mut a = TextAssembler::new(&m, vec!["é!".into()]);
        let [first, second] = [0xc3u32, 0xa9];
        assert_eq!(a.push(first), "");
        assert_eq!(a.push(second), "");
        assert_eq!(a.push(b'?' as u32), "é?");
    }
}
