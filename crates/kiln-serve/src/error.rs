//! Errors: `ServeError` stops the server from starting; `ApiError` answers one request with
//! a status and `{"error": "..."}`, the shape KServe and Triton clients expect.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    // The cause is in the message, not chained as a source, so `{:#}` says it once.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The command line asks for something impossible (a bad model name, two models with
    /// one name).
    #[error("{0}")]
    Config(String),
    /// A file the server was pointed at holds something it cannot use (an empty token file).
    #[error("{0}")]
    BadFile(String),
    /// The server itself failed (a compute thread died): a bug to report.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Model(#[from] kiln::Error),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unknown_model(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("unknown model `{name}`"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}
