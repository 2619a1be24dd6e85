//! The accept loop. Each connection is served by hyper's HTTP/1 and watched so that no
//! client can hold it forever: one that sends nothing for `--idle-timeout-ms` between
//! requests, or starts a request whose headers are not complete within
//! `--header-timeout-ms`, is closed; and past `--max-connections` new connections get a
//! 503 and are closed at once, so idle clients cannot use up the process's file descriptors.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// What one client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Accepts connections until `stop` turns true, then asks every open connection to finish
/// its request and close, and waits for them for at most `drain_limit`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    drain_limit: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: wait for connections to close rather than spin.
                    eprintln!("kiln serve: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|&s| s) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.observe_refused_connection();
            refuse_busy(stream, limits.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            serve_connection(stream, app, limits, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain_limit, slots.acquire_many(all))
        .await
        .is_err()
    {
        eprintln!("kiln serve: connections still open {drain_limit:?} after the signal; closing them");
    }
}

/// A best-effort 503 without waiting on the client: the socket is closed right after.
fn refuse_busy(stream: TcpStream, max_connections: usize) {
    let body = format!(
        "{{\"error\":\"the server holds its maximum of {max_connections} connections (--max-connections); try again later\"}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

async fn serve_connection(stream: TcpStream, app: Router, limits: Limits, mut stop: watch::Receiver<bool>) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = requests.begin_request();
        let app = app.clone();
        async move {
            // The request stays in progress until its body is sent: a streamed completion
            // may pause between tokens longer than the idle limit.
            let response = app.oneshot(req).await;
            response.map(|r| r.map(|body| axum::body::Body::new(UntilSent { body, _busy: busy })))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer starts when it waits for a request, idle time included; the
    // watch below times idle and header separately, so hyper's is turned off.
    http.timer(TokioTimer::new()).header_read_timeout(None);
    let connection = http.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            // Fires only while no request is under way, so nothing in progress is lost.
            _ = activity.expired(limits) => return,
            _ = stop.wait_for(|&s| s), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

const NOT_STARTED: u64 = u64::MAX;

/// What a connection has been doing, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_byte: AtomicU64,
    /// When the first byte of a request that has not yet reached the handler arrived.
    head_started: AtomicU64,
    requests_in_progress: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_byte: AtomicU64::new(0),
            head_started: AtomicU64::new(NOT_STARTED),
            requests_in_progress: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn bytes_read(&self) {
        let now = self.now();
        self.last_byte.store(now, Ordering::Relaxed);
        if self.requests_in_progress.load(Ordering::Acquire) == 0 {
            let _ = self
                .head_started
                .compare_exchange(NOT_STARTED, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn bytes_written(&self) {
        self.last_byte.store(self.now(), Ordering::Relaxed);
    }

    /// hyper calls the service once a request's headers are complete.
    fn begin_request(self: &Arc<Self>) -> RequestInProgress {
        self.requests_in_progress.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NOT_STARTED, Ordering::Release);
        RequestInProgress(self.clone())
    }

    /// How long until this connection may be closed, or `None` when it may be now.
    fn remaining(&self, limits: Limits) -> Option<Duration> {
        const WHILE_BUSY: Duration = Duration::from_millis(250);
        if self.requests_in_progress.load(Ordering::Acquire) > 0 {
            return Some(WHILE_BUSY);
        }
        let now = self.now();
        let head_started = self.head_started.load(Ordering::Acquire);
        let (since, limit) = if head_started == NOT_STARTED {
            (self.last_byte.load(Ordering::Relaxed), limits.idle_timeout)
        } else {
            (head_started, limits.header_timeout)
        };
        let elapsed = Duration::from_millis(now.saturating_sub(since));
        limit.checked_sub(elapsed).filter(|left| !left.is_zero())
    }

    /// Resolves when the connection has been idle, or has taken to send a request's
    /// headers, for longer than allowed.
    async fn expired(&self, limits: Limits) {
        while let Some(left) = self.remaining(limits) {
            tokio::time::sleep(left).await;
        }
    }
}

struct RequestInProgress(Arc<Activity>);

/// A response body that holds its request's place as "in progress" until it is sent or
/// dropped.
struct UntilSent {
    body: axum::body::Body,
    _busy: RequestInProgress,
}

impl http_body::Body for UntilSent {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.0.last_byte.store(self.0.now(), Ordering::Relaxed);
        self.0.requests_in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The TCP stream, noting when bytes move.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_written();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_written();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        idle_timeout: Duration::from_millis(1000),
        header_timeout: Duration::from_millis(300),
        max_connections: 4,
    };

    #[test]
    fn an_idle_connection_is_timed_by_the_idle_limit_and_a_started_request_by_the_header_limit() {
        let activity = Arc::new(Activity::new());
        let idle_left = activity.remaining(LIMITS).unwrap();
        assert!(idle_left > Duration::from_millis(500), "{idle_left:?}");
        activity.bytes_read();
        let header_left = activity.remaining(LIMITS).unwrap();
        assert!(header_left <= Duration::from_millis(300), "{header_left:?}");
        // Once the headers are complete the request is in progress and never timed here.
        let busy = activity.begin_request();
        activity.bytes_read();
        assert_eq!(activity.remaining(LIMITS), Some(Duration::from_millis(250)));
        drop(busy);
        assert!(activity.remaining(LIMITS).unwrap() > Duration::from_millis(500));
    }

    #[test]
    fn a_connection_past_its_limit_may_be_closed() {
        let activity = Activity::new();
        let limits = Limits {
            idle_timeout: Duration::ZERO,
            ..LIMITS
        };
        assert_eq!(activity.remaining(limits), None);
    }
}
