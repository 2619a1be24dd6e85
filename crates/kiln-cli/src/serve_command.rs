//! `kiln serve`: the command-line face of the `kiln-serve` crate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::exit_code::usage;

/// Serve models over HTTP: classifiers by the Open Inference Protocol v2 (KServe, Triton
/// clients) and TF-Serving's `:predict`; language models by OpenAI's `/v1/completions`
/// (streamed with `stream: true`) and KServe's generate extension; a page at `/` and
/// Prometheus metrics at `/metrics`.
#[derive(Args)]
pub struct ServeArgs {
    /// Models to serve: PATH (named after the file stem) or NAME=PATH.
    #[arg(required = true, value_name = "MODEL")]
    models: Vec<String>,
    /// Address to listen on; the loopback default keeps the server private to this machine.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most samples per forward pass, and per request.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// How long a batch may wait for more requests to join it, in milliseconds.
    #[arg(long, default_value_t = 2)]
    max_delay_ms: u64,
    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(long, default_value_t = 4 << 20)]
    body_limit: usize,
    /// Answer 504 to a request not done within this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// File holding a bearer token that every request must carry as `Authorization: Bearer
    /// TOKEN`, except the health probes (/v2/health/live, /v2/health/ready) and the page at
    /// `/` (whose own requests then ask for the token).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Compute threads per model [default: one per CPU core].
    #[arg(long)]
    workers: Option<usize>,
    /// Close a connection that sends nothing for this many milliseconds between requests.
    #[arg(long, default_value_t = 60_000)]
    idle_timeout_ms: u64,
    /// Close a connection whose request headers are not complete this many milliseconds
    /// after their first byte (a client trickling bytes to hold the connection).
    #[arg(long, default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Most connections open at once; more get a 503 and are closed (keep it below the
    /// open-file limit, `ulimit -n`).
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Requests that may wait for a model (a classifier's compute threads, a language
    /// model's decoding loop) before new ones get 503.
    #[arg(long, default_value_t = 1024)]
    max_queue: usize,
    /// Sequences a language model decodes together, in one batched pass per token; more
    /// requests wait in the queue.
    #[arg(long, default_value_t = 64)]
    max_sequences: usize,
    /// The largest `max_tokens` a generation request may ask for (more: 400).
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
}

pub fn serve(args: ServeArgs) -> Result<()> {
    if args.max_batch == 0 {
        return Err(usage("--max-batch must be at least 1"));
    }
    if args.timeout_ms == 0 {
        return Err(usage("--timeout-ms must be at least 1"));
    }
    for (flag, value) in [
        ("--max-queue", args.max_queue),
        ("--max-sequences", args.max_sequences),
        ("--max-tokens", args.max_tokens),
    ] {
        if value == 0 {
            return Err(usage(format!("{flag} must be at least 1")));
        }
    }
    if args.workers == Some(0) {
        return Err(usage("--workers must be at least 1"));
    }
    for (flag, value) in [
        ("--idle-timeout-ms", args.idle_timeout_ms),
        ("--header-timeout-ms", args.header_timeout_ms),
    ] {
        if value == 0 {
            return Err(usage(format!("{flag} must be at least 1")));
        }
    }
    if args.max_connections == 0 || args.max_connections > u32::MAX as usize {
        return Err(usage(format!(
            "--max-connections {} must be between 1 and {}",
            args.max_connections,
            u32::MAX
        )));
    }
    let models = args
        .models
        .iter()
        .map(|m| kiln_serve::parse_model_arg(m))
        .collect::<Result<Vec<_>, _>>()?;
    let defaults = kiln_serve::Config::default();
    kiln_serve::run(kiln_serve::Config {
        models,
        host: args.host,
        port: args.port,
        max_batch: args.max_batch,
        max_delay: Duration::from_millis(args.max_delay_ms),
        body_limit: args.body_limit,
        timeout: Duration::from_millis(args.timeout_ms),
        token_file: args.token_file,
        workers: args.workers.unwrap_or(defaults.workers),
        queue_capacity: args.max_queue,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        max_connections: args.max_connections,
        max_sequences: args.max_sequences,
        max_tokens: args.max_tokens,
    })?;
    Ok(())
}
