//! Dynamic batching on a pool of compute threads.
//!
//! Requests are queued; a compute thread takes the first one and gathers others that are
//! already on their way (up to `max_batch` samples, waiting at most `max_delay`), runs one
//! forward pass over all of them and hands each its rows back. One forward pass over 64
//! samples costs little more than over one, which is where the throughput under load comes
//! from. The threads are plain OS threads, so model work never runs on (or blocks) the
//! async executor's threads.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::oneshot;

use crate::error::{ApiError, ServeError};
use crate::metrics::Metrics;
use crate::Config;

/// Probabilities, row-major (rows × outputs), or why the batch failed.
pub type Reply = Result<Vec<f32>, String>;

/// Raw (not yet normalized) input values of `rows` samples and where to send the answer.
pub struct Job {
    pub values: Vec<f32>,
    pub rows: usize,
    pub reply: oneshot::Sender<Reply>,
}

/// The queue to one model's compute threads.
pub struct Batcher {
    queue: Mutex<Option<SyncSender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    load: Arc<Load>,
}

/// What a compute thread needs to decide whether waiting for more requests can pay.
#[derive(Default)]
struct Load {
    /// Requests for this model received and not yet answered.
    in_flight: AtomicUsize,
    /// Requests inside a forward pass right now.
    computing: AtomicUsize,
}

/// Counts a request as in flight until dropped (also when its client goes away).
pub struct InFlight(Arc<Load>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Settings {
    max_batch: usize,
    max_delay: Duration,
}

impl Batcher {
    /// Starts `config.workers` threads, each loading its own copy of the model (a model's
    /// forward pass reuses buffers, so copies cannot share one).
    pub fn start(
        name: &str,
        path: &Path,
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServeError> {
        let (tx, rx) = mpsc::sync_channel::<Job>(config.queue_capacity);
        let rx = Arc::new(Mutex::new(rx));
        let load = Arc::new(Load::default());
        let mut workers = Vec::new();
        for i in 0..config.workers.max(1) {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (rx, load, metrics, path) = (rx.clone(), load.clone(), metrics.clone(), path.to_path_buf());
            let settings = Settings {
                max_batch: config.max_batch,
                max_delay: config.max_delay,
            };
            let handle = std::thread::Builder::new()
                .name(format!("kiln-{name}-{i}"))
                .spawn(move || match kiln::artifact::load(&path) {
                    Ok(artifact) => {
                        let _ = ready_tx.send(Ok(()));
                        Worker::new(artifact, settings, load, metrics).run(&rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|e| ServeError::Io("starting a compute thread".into(), e))?;
            workers.push(handle);
            ready_rx.recv().map_err(|_| {
                ServeError::Internal(format!("compute thread for `{name}` died while loading"))
            })??;
        }
        Ok(Batcher {
            queue: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            load,
        })
    }

    /// Marks a request as in flight for the batching heuristic.
    pub fn enter(&self) -> InFlight {
        self.load.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.load.clone())
    }

    /// Queues a job without blocking; a full queue is 503 so an overload sheds requests
    /// instead of growing memory and latency without bound.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = guard.as_ref() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ));
        };
        queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is overloaded (its request queue is full); retry later",
            ),
            TrySendError::Disconnected(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the model's compute threads have stopped",
            ),
        })
    }

    /// Closes the queue; the threads finish the jobs already queued, then exit.
    pub fn shut_down(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

struct Worker {
    artifact: kiln::artifact::Artifact,
    settings: Settings,
    load: Arc<Load>,
    metrics: Arc<Metrics>,
    /// A job that did not fit in the previous batch; it heads the next one.
    carry: Option<Job>,
}

impl Worker {
    fn new(
        artifact: kiln::artifact::Artifact,
        settings: Settings,
        load: Arc<Load>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Worker {
            artifact,
            settings,
            load,
            metrics,
            carry: None,
        }
    }

    fn run(mut self, rx: &Mutex<Receiver<Job>>) {
        loop {
            // Only one thread gathers at a time; the others compute meanwhile.
            let batch = {
                let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                self.gather(&rx)
            };
            let Some(batch) = batch else { return };
            self.load.computing.fetch_add(batch.len(), Ordering::AcqRel);
            self.compute(batch);
        }
    }

    /// The next batch, or None once the queue is closed and empty.
    fn gather(&mut self, rx: &Receiver<Job>) -> Option<Vec<Job>> {
        let first = match self.carry.take() {
            Some(job) => job,
            None => rx.recv().ok()?,
        };
        let deadline = Instant::now() + self.settings.max_delay;
        let mut rows = first.rows;
        let mut batch = vec![first];
        while rows < self.settings.max_batch {
            let job = match rx.try_recv() {
                Ok(job) => job,
                // Wait only while more requests are known to be on their way: a lone
                // client should not pay max_delay on every call.
                Err(_) if !self.more_expected(batch.len()) => break,
                Err(_) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            };
            if rows + job.rows > self.settings.max_batch {
                self.carry = Some(job);
                break;
            }
            rows += job.rows;
            batch.push(job);
        }
        Some(batch)
    }

    fn more_expected(&self, gathered: usize) -> bool {
        let in_flight = self.load.in_flight.load(Ordering::Acquire);
        let computing = self.load.computing.load(Ordering::Acquire);
        in_flight > gathered + computing
    }

    fn compute(&mut self, batch: Vec<Job>) {
        let count = batch.len();
        // Jobs whose client has given up (timeout, disconnect) are not worth computing.
        let batch: Vec<Job> = batch.into_iter().filter(|j| !j.reply.is_closed()).collect();
        let rows: usize = batch.iter().map(|j| j.rows).sum();
        if rows > 0 {
            self.metrics.observe_batch(rows);
            let result = self.forward(&batch, rows);
            let width = self.artifact.model.output_shape().numel();
            let mut offset = 0;
            for job in batch {
                let reply = result
                    .as_ref()
                    .map(|p| p[offset * width..(offset + job.rows) * width].to_vec());
                offset += job.rows;
                let _ = job.reply.send(reply.map_err(Clone::clone));
            }
        }
        self.load.computing.fetch_sub(count, Ordering::AcqRel);
    }

    /// One forward pass over every job's rows: the model's fitted normalization, then
    /// `predict`, exactly as `kiln predict` does. A panic is turned into an error for this
    /// batch so one bad batch cannot take the thread (and the model) down.
    fn forward(&mut self, batch: &[Job], rows: usize) -> Result<Vec<f32>, String> {
        // A tabular model's requests carry one raw value per column (cleaning and one-hot
        // encoding come next); any other model's, its input.
        let size = match &self.artifact.info.table {
            Some(table) => table.schema.columns.len(),
            None => self.artifact.model.input_shape().numel(),
        };
        let mut x = Vec::with_capacity(rows * size);
        for job in batch {
            x.extend_from_slice(&job.values);
        }
        let artifact = &mut self.artifact;
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            let raw = kiln::data::Dataset::new(x, vec![size], vec![0; rows]).map_err(|e| e.to_string())?;
            let x = kiln::pipeline::prepare_for_model(&artifact.info, raw, kiln::data::Stage::Predict)
                .map_err(|e| e.to_string())?
                .features;
            let probs = artifact.model.predict(&x, rows).map_err(|e| e.to_string())?;
            Ok(probs.data().to_vec())
        }))
        .unwrap_or_else(|_| Err("the model failed on this batch (internal error)".into()))
    }
}
