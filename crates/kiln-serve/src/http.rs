//! Routes, handlers and the middleware around them (metrics, bearer token, timeout, JSON
//! errors).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::oneshot;

use crate::batcher::Job;
use crate::binary;
use crate::error::ApiError;
use crate::lm_routes;
use crate::metrics::Metrics;
use crate::models::{Model, Registry};
use crate::protocol::{self, Samples};
use crate::Config;

pub struct AppState {
    pub config: Config,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    token: Option<String>,
    shutting_down: AtomicBool,
}

type Shared = Arc<AppState>;

impl AppState {
    pub fn new(config: Config, registry: Registry, metrics: Arc<Metrics>, token: Option<String>) -> Self {
        AppState {
            config,
            registry,
            metrics,
            token,
            shutting_down: AtomicBool::new(false),
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    fn model(&self, name: &str) -> Result<&Arc<Model>, ApiError> {
        self.registry.get(name).ok_or_else(|| {
            if self.registry.language_model(name).is_some() {
                ApiError::bad_request(format!(
                    "model `{name}` is a language model: POST /v2/models/{name}/generate or /v1/completions"
                ))
            } else {
                ApiError::unknown_model(name)
            }
        })
    }

    /// Queues samples for the model's compute threads and waits for their probabilities.
    async fn predict(&self, model: &Model, samples: Samples) -> Result<Vec<f32>, ApiError> {
        let (reply, answer) = oneshot::channel();
        model.batcher.submit(Job {
            values: samples.values,
            rows: samples.rows,
            reply,
        })?;
        match answer.await {
            Ok(Ok(probs)) => Ok(probs),
            Ok(Err(message)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)),
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the model's compute threads stopped",
            )),
        }
    }
}

pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/repository/index", get(index).post(index))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}", get(versioned_metadata))
        .route("/v2/models/{name}/versions/{version}/ready", get(versioned_ready))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(versioned_infer),
        )
        // TF-Serving's `/v1/models/NAME:predict`: the verb shares the segment with the name.
        .route("/v1/models/{target}", get(tf_status).post(tf_post))
        .route("/v1/models/{name}/metadata", get(tf_metadata))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), deadline));
    // Generation bounds its time to the first token itself, so a long stream is not cut.
    let generation = Router::new()
        .route("/v1/completions", post(lm_routes::completions))
        .route("/v1/models", get(lm_routes::openai_models))
        .route("/v2/models/{name}/generate", post(lm_routes::generate))
        .route(
            "/v2/models/{name}/generate_stream",
            post(lm_routes::generate_stream),
        )
        .layer(DefaultBodyLimit::max(state.config.body_limit));
    api.merge(generation)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Outermost layer: counts and times every answer, and gives any error response that is
/// not already JSON (axum's own 405, path rejections) the `{"error": …}` form.
async fn observe(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = json_errors(next.run(req).await).await;
    state
        .metrics
        .observe_request(&route, response.status().as_u16(), start.elapsed().as_secs_f64());
    response
}

async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_string();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_lowercase();
    }
    let mut fixed = ApiError::new(status, message).into_response();
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(n, _)| *n != header::CONTENT_TYPE && *n != header::CONTENT_LENGTH)
    {
        fixed.headers_mut().insert(name, value.clone());
    }
    fixed
}

/// With `--token-file`, every request but the health probes (which orchestrators send
/// without credentials) and the page's HTML at `/` must carry `Authorization: Bearer
/// TOKEN`. The page's own requests ask for the token.
async fn authorize(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if path == "/" || path.starts_with("/v2/health/") {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r =
                ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; HTTP auth schemes are
/// case-insensitive (RFC 9110, section 11.1), so `bearer` and `BEARER` count too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start())
}

/// Compares without stopping at the first differing byte, so response time does not tell
/// an attacker how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `--timeout-ms`: a request not answered in time gets 504; dropping its future also tells
/// the compute thread to skip its samples if they have not run yet.
async fn deadline(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let limit = state.config.timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no answer within the server's {} ms timeout (--timeout-ms)",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {} {}", req.method(), req.uri().path()),
    )
}

async fn page() -> Html<&'static str> {
    Html(crate::page::HTML)
}

async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(
        json!({ "name": "kiln", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data", "generate"] }),
    )
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

/// Ready while serving; 503 once shutdown has begun, so load balancers stop sending.
async fn ready(State(state): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.shutting_down.load(Ordering::Acquire) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ));
    }
    Ok(Json(json!({ "ready": true })))
}

/// The model repository extension's index: every model, all ready once the server is up.
async fn index(State(state): State<Shared>) -> Json<serde_json::Value> {
    let models: Vec<_> = state
        .registry
        .names()
        .map(|name| json!({ "name": name, "version": "1", "state": "READY", "reason": "" }))
        .collect();
    Json(json!(models))
}

async fn model_metadata(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(lm) = state.registry.language_model(&name) {
        return Ok(Json(lm_routes::metadata(&state, &lm.signature)));
    }
    let model = state.model(&name)?;
    let mut input_shape = vec![-1i64];
    input_shape.extend(model.input_dims.iter().map(|&d| d as i64));
    Ok(Json(json!({
        "name": model.name,
        "versions": ["1"],
        "platform": "kiln",
        "inputs": [{ "name": protocol::INPUT_NAME, "datatype": "FP32", "shape": input_shape }],
        "outputs": [
            { "name": protocol::PROBABILITIES, "datatype": "FP32", "shape": [-1, model.outputs] },
            { "name": protocol::CLASS, "datatype": "BYTES", "shape": [-1] },
        ],
        "parameters": model_parameters(&state, model),
    })))
}

/// The classes, the batch limit and, for a tabular model, its columns in input order.
fn model_parameters(state: &AppState, model: &Model) -> serde_json::Value {
    let mut parameters = json!({ "classes": model.classes, "max_batch_size": state.config.max_batch });
    if let Some(table) = &model.table {
        parameters["columns"] = table.describe();
    }
    parameters
}

async fn model_ready(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if state.registry.language_model(&name).is_some() {
        return Ok(Json(json!({ "name": name, "ready": true })));
    }
    let model = state.model(&name)?;
    Ok(Json(json!({ "name": model.name, "ready": true })))
}

/// A body that could not be read: 413 when it is over `--body-limit`.
pub fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                format!("request body is larger than the server's limit of {limit} bytes (--body-limit)"),
            )
        } else {
            ApiError::new(status, rejection.body_text())
        }
    })
}

async fn infer(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let model = state.model(&name)?;
    // Counted from arrival, so a compute thread knows to wait for this request's samples.
    let _in_flight = model.batcher.enter();
    let body = body_bytes(body, state.config.body_limit)?;
    let (json, binary_data) = binary::split_body(&body, &headers)?;
    let req: protocol::InferRequest = protocol::parse_json(json, "inference request")?;
    protocol::requested_outputs(&req)?;
    let samples = protocol::v2_samples(&req, binary_data, model, state.config.max_batch)?;
    let rows = samples.rows;
    let probs = state.predict(model, samples).await?;
    protocol::v2_response(&req, model, rows, probs)
}

/// Every model has one version, "1", as its metadata says; the versioned v2 routes accept
/// that one and answer 404 for any other.
fn check_version(state: &AppState, name: &str, version: &str) -> Result<(), ApiError> {
    if state.registry.language_model(name).is_none() {
        state.model(name)?;
    }
    if version != "1" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model `{name}` has no version `{version}` (its only version is 1)"),
        ));
    }
    Ok(())
}

type Versioned = Path<(String, String)>;

async fn versioned_metadata(
    State(state): State<Shared>,
    Path((name, version)): Versioned,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_version(&state, &name, &version)?;
    model_metadata(State(state), Path(name)).await
}

async fn versioned_ready(
    State(state): State<Shared>,
    Path((name, version)): Versioned,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_version(&state, &name, &version)?;
    model_ready(State(state), Path(name)).await
}

async fn versioned_infer(
    State(state): State<Shared>,
    Path((name, version)): Versioned,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_version(&state, &name, &version)?;
    infer(State(state), Path(name), headers, body).await
}

/// TF-Serving's model status, for `GET /v1/models/NAME`.
async fn tf_status(
    State(state): State<Shared>,
    Path(target): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.model(&target)?;
    Ok(Json(json!({ "model_version_status": [
        { "version": "1", "state": "AVAILABLE", "status": { "error_code": "OK", "error_message": "" } }
    ]})))
}

/// TF-Serving's `GET /v1/models/NAME/metadata`: kiln's model has one signature, whose
/// input and outputs are listed as the v2 metadata lists them.
async fn tf_metadata(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let model = state.model(&name)?;
    Ok(Json(json!({
        "model_spec": { "name": model.name, "signature_name": "", "version": "1" },
        "metadata": {
            "input_shape": model.input_dims,
            "outputs": { protocol::PROBABILITIES: model.outputs, protocol::CLASS: 1 },
            "parameters": model_parameters(&state, model),
        },
    })))
}

async fn tf_post(
    State(state): State<Shared>,
    Path(target): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Some((name, verb)) = target.rsplit_once(':') else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: POST /v1/models/{target} (did you mean /v1/models/{target}:predict?)"),
        ));
    };
    let model = state.model(name)?;
    if verb != "predict" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("`:{verb}` is not supported; kiln serves `/v1/models/{name}:predict`"),
        ));
    }
    let _in_flight = model.batcher.enter();
    let body = body_bytes(body, state.config.body_limit)?;
    let req: protocol::PredictRequest = protocol::parse_json(&body, "predict request")?;
    let samples = protocol::tf_samples(&req, model, state.config.max_batch)?;
    let probs = state.predict(model, samples).await?;
    Ok(Json(protocol::tf_response(model, &probs)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for header in ["Bearer abc", "bearer abc", "BEARER abc", "  bEaReR   abc"] {
            assert_eq!(bearer_token(header), Some("abc"), "{header:?}");
        }
        for header in ["Basic abc", "Bearerabc", "Bearer", ""] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }
}
