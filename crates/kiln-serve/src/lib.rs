//! `kiln serve`: an HTTP inference server for kiln models.
//!
//! It speaks the Open Inference Protocol v2 (KServe, Triton, Seldon clients) and
//! TensorFlow-Serving's `:predict` for classifiers, OpenAI's completions and KServe's
//! generate extension for language models (streamed as server-sent events, every sequence
//! in progress decoded in one batched pass per step), batches requests that arrive
//! together, and runs the models on dedicated compute threads so a slow batch never blocks the async executor that
//! accepts connections. The library crate `kiln` stays free of tokio and HTTP; all of that
//! lives here.

mod batcher;
mod binary;
mod completion;
mod connections;
mod decoder;
mod error;
mod event_stream;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod lm_routes;
mod metrics;
mod models;
mod page;
mod protocol;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use error::ServeError;
pub use models::{parse_model_arg, ModelSource};

/// Everything `kiln serve` is told on its command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub models: Vec<ModelSource>,
    pub host: String,
    pub port: u16,
    /// Most samples one forward pass takes; also the largest batch one request may send.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others to join it.
    pub max_delay: Duration,
    pub body_limit: usize,
    /// Per-request deadline, queueing and compute included.
    pub timeout: Duration,
    /// A file holding the bearer token every request (bar the health probes) must carry.
    pub token_file: Option<PathBuf>,
    /// Compute threads per model.
    pub workers: usize,
    /// Requests that may wait for a compute thread before new ones get 503.
    pub queue_capacity: usize,
    /// A connection with no request under way that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A request whose headers are not complete this long after its first byte is cut off.
    pub header_timeout: Duration,
    /// Open connections beyond this many get a 503 and are closed at once.
    pub max_connections: usize,
    /// Sequences a language model decodes together; more requests wait in its queue.
    pub max_sequences: usize,
    /// The largest `max_tokens` a generation request may ask for.
    pub max_tokens: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            models: Vec::new(),
            host: "127.0.0.1".into(),
            port: 8080,
            max_batch: 64,
            max_delay: Duration::from_millis(2),
            body_limit: 4 << 20,
            timeout: Duration::from_secs(10),
            token_file: None,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue_capacity: 1024,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            // Below the usual soft limit of 1024 open files, with room for the model files,
            // the listener and the runtime's own descriptors.
            max_connections: 512,
            max_sequences: 64,
            max_tokens: 2048,
        }
    }
}

/// Loads the models, listens, and serves until SIGTERM or Ctrl-C, then lets the requests
/// already in flight finish before returning.
pub fn run(config: Config) -> Result<(), ServeError> {
    let token = read_token(config.token_file.as_deref())?;
    let metrics = Arc::new(metrics::Metrics::new(config.max_batch));
    let registry = models::Registry::load(&config, metrics.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Io("starting the async runtime".into(), e))?;
    runtime.block_on(serve(config, registry, metrics, token))
}

async fn serve(
    config: Config,
    registry: models::Registry,
    metrics: Arc<metrics::Metrics>,
    token: Option<String>,
) -> Result<(), ServeError> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| ServeError::Io(format!("listening on {addr}"), e))?;
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|e| ServeError::Io(addr.clone(), e))?;
    let names: Vec<&str> = registry.names().collect();
    // Tests and scripts wait for this line (and read the port from it when --port 0).
    println!(
        "kiln serve: listening on http://{local} (models: {})",
        names.join(", ")
    );
    // A request in flight gets at most --timeout-ms; past that (plus a grace period) a
    // connection still open after the signal is a stalled client, not work to finish.
    let drain_limit = config.timeout + Duration::from_secs(5);
    let limits = connections::Limits {
        idle_timeout: config.idle_timeout,
        header_timeout: config.header_timeout,
        max_connections: config.max_connections,
    };
    let state = Arc::new(http::AppState::new(config, registry, metrics.clone(), token));
    let app = http::router(state.clone());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let signal = shutdown_signal(state.clone());
    tokio::spawn(async move {
        signal.await;
        let _ = stop_tx.send(true);
    });
    connections::serve(listener, app, limits, metrics, stop, drain_limit).await;
    // No request is in flight now; closing the queues lets the compute threads exit.
    state.registry.shut_down();
    eprintln!("kiln serve: shut down cleanly");
    Ok(())
}

/// Resolves on SIGTERM (what Kubernetes and systemd send) or Ctrl-C. The listener closes
/// then; readiness reports 503 to probes still on an open keep-alive connection.
async fn shutdown_signal(state: Arc<http::AppState>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("kiln serve: shutting down, finishing requests in flight");
    state.begin_shutdown();
}

fn read_token(path: Option<&std::path::Path>) -> Result<Option<String>, ServeError> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| ServeError::Io(path.display().to_string(), e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ServeError::BadFile(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ServeError::BadFile(format!(
            "token file {} must hold one token without spaces",
            path.display()
        )));
    }
    Ok(Some(token.to_string()))
}
