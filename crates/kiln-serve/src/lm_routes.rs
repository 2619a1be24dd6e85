//! The language-model routes: OpenAI's `POST /v1/completions` (streamed as server-sent
//! events with `stream: true`) and `GET /v1/models`, and KServe's generate extension
//! (`POST /v2/models/NAME/generate` and `generate_stream`).
//!
//! `--timeout-ms` bounds the time to a request's first token, not a completion's length:
//! these routes sit outside the deadline layer, wait for the first token themselves, and
//! then stream for as long as decoding takes.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::completion::{self, Finish, LmError, LmSignature, Params, TextAssembler};
use crate::decoder::{Decoded, Generation};
use crate::event_stream::{event, EventFormat, EventStream};
use crate::http::AppState;
use crate::models::LanguageModelEntry;

type Shared = Arc<AppState>;

/// The parameters both protocols share (`completion::read_params`, plus `stream`).
const SAMPLING_FIELDS: [&str; 7] = [
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stream",
];

/// Every field of OpenAI's completions request kiln reads; a field not listed is refused
/// by name. Some are accepted only with the value that means "off" (`refuse_unsupported`).
const OPENAI_FIELDS: [&str; 19] = [
    "model",
    "prompt",
    SAMPLING_FIELDS[0],
    SAMPLING_FIELDS[1],
    SAMPLING_FIELDS[2],
    SAMPLING_FIELDS[3],
    SAMPLING_FIELDS[4],
    SAMPLING_FIELDS[5],
    SAMPLING_FIELDS[6],
    "stream_options",
    "user",
    "n",
    "best_of",
    "echo",
    "logprobs",
    "suffix",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
];

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
pub struct OpenAiError(LmError);

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let kind = match self.0.status {
            StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::UNAUTHORIZED => "authentication_error",
            _ => "server_error",
        };
        let body = json!({ "error": {
            "message": self.0.message, "type": kind, "param": self.0.param, "code": Value::Null,
        }});
        (self.0.status, Json(body)).into_response()
    }
}

impl From<LmError> for OpenAiError {
    fn from(e: LmError) -> Self {
        OpenAiError(e)
    }
}

/// An error in KServe's shape, `{"error": "…"}`.
pub struct KServeError(LmError);

impl IntoResponse for KServeError {
    fn into_response(self) -> Response {
        (self.0.status, Json(json!({ "error": self.0.message }))).into_response()
    }
}

impl From<LmError> for KServeError {
    fn from(e: LmError) -> Self {
        KServeError(e)
    }
}

fn body_object(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, LmError> {
    let body = crate::http::body_bytes(body, state.config.body_limit)?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(other) => Err(LmError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body must be a JSON object, not {other}"),
        )),
        Err(e) => Err(LmError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

fn language_model<'s>(state: &'s AppState, name: &str) -> Result<&'s Arc<LanguageModelEntry>, LmError> {
    state.registry.language_model(name).ok_or_else(|| {
        let why = if state.registry.get(name).is_some() {
            format!("model `{name}` is a classifier; generation needs a language model")
        } else {
            format!("unknown model `{name}`")
        };
        LmError::new(StatusCode::NOT_FOUND, why)
    })
}

/// Queues the request and waits up to `--timeout-ms` for its first token.
async fn start(
    state: &AppState,
    model: &LanguageModelEntry,
    prompt: Vec<u32>,
    params: &Params,
) -> Result<(Decoded, UnboundedReceiver<Decoded>), LmError> {
    let mut tokens = model.decoder.submit(Generation {
        prompt,
        sampling: params.sampling.clone(),
        max_tokens: params.max_tokens,
    })?;
    let limit = state.config.timeout;
    match tokio::time::timeout(limit, tokens.recv()).await {
        Ok(Some(Decoded::Failed(why))) => Err(LmError::new(StatusCode::INTERNAL_SERVER_ERROR, why)),
        Ok(Some(first)) => Ok((first, tokens)),
        Ok(None) => Err(LmError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model's decoding thread stopped",
        )),
        // Dropping `tokens` here frees the request's place in the queue or the loop.
        Err(_) => Err(LmError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no first token within the server's {} ms timeout (--timeout-ms)",
                limit.as_millis()
            ),
        )),
    }
}

/// Reads every token of a completion that is not streamed.
async fn collect(
    first: Decoded,
    mut tokens: UnboundedReceiver<Decoded>,
    text: &mut TextAssembler,
) -> Result<String, LmError> {
    let mut out = String::new();
    let mut message = Some(first);
    loop {
        match message {
            Some(Decoded::Token(id)) => out.push_str(&text.push(id)),
            Some(Decoded::Failed(why)) => return Err(LmError::new(StatusCode::INTERNAL_SERVER_ERROR, why)),
            None => {
                out.push_str(&text.finish_length());
                return Ok(out);
            }
        }
        if text.finished.is_some() {
            return Ok(out);
        }
        message = tokens.recv().await;
    }
}

fn event_stream_response<F: EventFormat>(stream: EventStream<F>) -> Response {
    let mut response = Body::new(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn completion_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "cmpl-{:x}-{}",
        unix_seconds(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// Refuses unknown fields, and features kiln does not have unless they are off.
fn refuse_unsupported(fields: &Map<String, Value>) -> Result<(), LmError> {
    if let Some(name) = fields.keys().find(|k| !OPENAI_FIELDS.contains(&k.as_str())) {
        return Err(LmError::bad(name, format!("unknown parameter `{name}`")));
    }
    for (name, value) in fields {
        let off = value.is_null()
            || match name.as_str() {
                "n" | "best_of" => value.as_u64() == Some(1),
                "echo" => value == &Value::Bool(false),
                "logprobs" | "suffix" => false,
                "logit_bias" => value.as_object().is_some_and(Map::is_empty),
                "presence_penalty" | "frequency_penalty" => value.as_f64() == Some(0.0),
                _ => true,
            };
        if !off {
            return Err(LmError::bad(
                name,
                format!("`{name}` = {value} is not supported by kiln"),
            ));
        }
    }
    Ok(())
}

struct OpenAiRequest {
    model: Arc<LanguageModelEntry>,
    prompt: Vec<u32>,
    params: Params,
    stream: bool,
    include_usage: bool,
}

fn read_openai(state: &AppState, fields: &Map<String, Value>) -> Result<OpenAiRequest, LmError> {
    refuse_unsupported(fields)?;
    let name = match fields.get("model") {
        Some(Value::String(name)) => name,
        _ => return Err(LmError::bad("model", "`model` must name a served language model")),
    };
    let model = language_model(state, name)?.clone();
    let prompt = fields
        .get("prompt")
        .ok_or_else(|| LmError::bad("prompt", "`prompt` is missing"))?;
    let prompt = completion::prompt_tokens(&model.signature, prompt, "prompt")?;
    let params = completion::read_params(fields, model.signature.max_tokens_cap)?;
    let stream = match fields.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(LmError::bad(
                "stream",
                format!("`stream` is {v}; expected true or false"),
            ))
        }
    };
    let include_usage = match fields.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => o.get("include_usage").and_then(Value::as_bool).unwrap_or(false),
        Some(v) => {
            return Err(LmError::bad(
                "stream_options",
                format!("`stream_options` is {v}; expected an object"),
            ))
        }
    };
    Ok(OpenAiRequest {
        model,
        prompt,
        params,
        stream,
        include_usage,
    })
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let fields = body_object(&state, body)?;
    let request = read_openai(&state, &fields)?;
    let prompt_tokens = request.prompt.len();
    let model = request.model.clone();
    let (first, tokens) = start(&state, &model, request.prompt, &request.params).await?;
    let mut text = TextAssembler::new(&model.signature, request.params.stop.clone());
    let format = OpenAiChunks {
        id: completion_id(),
        created: unix_seconds(),
        model: model.signature.name.clone(),
        include_usage: request.include_usage,
    };
    if request.stream {
        let stream = EventStream::new(format, first, tokens, text, prompt_tokens);
        return Ok(event_stream_response(stream));
    }
    let out = collect(first, tokens, &mut text).await?;
    let finish = text.finished.unwrap_or(Finish::Length);
    Ok(Json(json!({
        "id": format.id,
        "object": "text_completion",
        "created": format.created,
        "model": format.model,
        "choices": [{ "text": out, "index": 0, "logprobs": Value::Null, "finish_reason": finish.as_str() }],
        "usage": usage(prompt_tokens, text.tokens),
    }))
    .into_response())
}

/// OpenAI's streamed completion chunks.
struct OpenAiChunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl OpenAiChunks {
    fn chunk(&self, text: &str, finish: Option<Finish>) -> String {
        event(&json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "text": text, "index": 0, "logprobs": Value::Null,
                          "finish_reason": finish.map(Finish::as_str) }],
        }))
    }
}

impl EventFormat for OpenAiChunks {
    fn piece(&self, text: &str) -> String {
        self.chunk(text, None)
    }

    fn end(&self, text: &str, finish: Finish, prompt_tokens: usize, completion_tokens: usize) -> String {
        let mut out = self.chunk(text, Some(finish));
        if self.include_usage {
            out.push_str(&event(&json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [], "usage": usage(prompt_tokens, completion_tokens),
            })));
        }
        out.push_str("data: [DONE]\n\n");
        out
    }

    fn error(&self, message: &str) -> String {
        event(
            &json!({ "error": { "message": message, "type": "server_error", "param": Value::Null, "code": Value::Null } }),
        )
    }
}

/// `GET /v1/models`: the language models, as OpenAI lists models.
pub async fn openai_models(State(state): State<Shared>) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .language_models()
        .map(|m| json!({ "id": m.signature.name, "object": "model", "created": 0, "owned_by": "kiln" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// KServe's generate request: `text_input` and the parameters, in `parameters` or beside it.
fn read_generate(
    model: &LanguageModelEntry,
    mut fields: Map<String, Value>,
) -> Result<(Vec<u32>, Params), LmError> {
    let input = fields
        .remove("text_input")
        .ok_or_else(|| LmError::bad("text_input", "`text_input` is missing"))?;
    let mut params = match fields.remove("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(v) => {
            return Err(LmError::bad(
                "parameters",
                format!("`parameters` is {v}; expected an object"),
            ))
        }
    };
    for (name, value) in fields {
        params.entry(name).or_insert(value);
    }
    if let Some(name) = params.keys().find(|k| !SAMPLING_FIELDS.contains(&k.as_str())) {
        return Err(LmError::bad(name, format!("unknown parameter `{name}`")));
    }
    let prompt = completion::prompt_tokens(&model.signature, &input, "text_input")?;
    let params = completion::read_params(&params, model.signature.max_tokens_cap)?;
    Ok((prompt, params))
}

/// A KServe generate request read, queued and started: the model, the prompt's length,
/// its first token, the rest to come, and the text assembler for them.
struct Started {
    model: Arc<LanguageModelEntry>,
    prompt_tokens: usize,
    first: Decoded,
    tokens: UnboundedReceiver<Decoded>,
    text: TextAssembler,
}

async fn start_generate(
    state: &AppState,
    name: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Started, LmError> {
    let model = language_model(state, name)?.clone();
    let (prompt, params) = read_generate(&model, body_object(state, body)?)?;
    let prompt_tokens = prompt.len();
    let (first, tokens) = start(state, &model, prompt, &params).await?;
    let text = TextAssembler::new(&model.signature, params.stop);
    Ok(Started {
        model,
        prompt_tokens,
        first,
        tokens,
        text,
    })
}

/// `POST /v2/models/NAME/generate`.
pub async fn generate(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, KServeError> {
    let mut started = start_generate(&state, &name, body).await?;
    let out = collect(started.first, started.tokens, &mut started.text).await?;
    let finish = started.text.finished.unwrap_or(Finish::Length);
    Ok(Json(json!({
        "model_name": started.model.signature.name,
        "model_version": "1",
        "text_output": out,
        "finish_reason": finish.as_str(),
        "usage": usage(started.prompt_tokens, started.text.tokens),
    }))
    .into_response())
}

/// `POST /v2/models/NAME/generate_stream`.
pub async fn generate_stream(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, KServeError> {
    let started = start_generate(&state, &name, body).await?;
    let format = KServeEvents {
        model: started.model.signature.name.clone(),
    };
    let stream = EventStream::new(
        format,
        started.first,
        started.tokens,
        started.text,
        started.prompt_tokens,
    );
    Ok(event_stream_response(stream))
}

/// KServe's `generate_stream` events.
struct KServeEvents {
    model: String,
}

impl EventFormat for KServeEvents {
    fn piece(&self, text: &str) -> String {
        event(&json!({ "model_name": self.model, "model_version": "1", "text_output": text }))
    }

    fn end(&self, text: &str, finish: Finish, prompt_tokens: usize, completion_tokens: usize) -> String {
        event(&json!({
            "model_name": self.model, "model_version": "1", "text_output": text,
            "finish_reason": finish.as_str(), "usage": usage(prompt_tokens, completion_tokens),
        }))
    }

    fn error(&self, message: &str) -> String {
        event(&json!({ "error": message }))
    }
}

/// `GET /v2/models/NAME` for a language model: text in, text out.
pub fn metadata(state: &AppState, model: &LmSignature) -> Value {
    json!({
        "name": model.name,
        "versions": ["1"],
        "platform": "kiln",
        "inputs": [{ "name": "text_input", "datatype": "BYTES", "shape": [1] }],
        "outputs": [{ "name": "text_output", "datatype": "BYTES", "shape": [-1] }],
        "parameters": {
            "kind": "language_model",
            "context": model.context,
            "vocab_size": model.vocab,
            "tokenizer": model.tokenizer.kind(),
            "max_tokens": model.max_tokens_cap,
            "max_sequences": state.config.max_sequences,
        },
    })
}
