//! Batched decoding of a language model: one scheduler thread runs one pass of the model
//! per step over every sequence in progress, each with its own key/value cache.
//!
//! A request joins at the next step (its prompt is fed in that step's pass, beside the
//! other sequences' single tokens) and leaves as soon as it has its tokens or its client
//! has gone, without waiting for the others. The pass computes each row as it would alone
//! (`kiln::lm::cached_forward`), so a completion is the same token for token whichever
//! requests it was decoded with, and equal to `kiln generate`'s for the same seed.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use axum::http::StatusCode;
use kiln::artifact::LanguageModel;
use kiln::lm::generate::{decode_step, DecodeKernels, Sampling, Sequence};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::error::{ApiError, ServeError};
use crate::metrics::{DecoderLoad, Metrics};

/// What a request receives from the scheduler: each token as it is drawn, or why decoding
/// failed. The channel closes after the last token.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Token(u32),
    Failed(String),
}

/// A checked request on its way to the scheduler.
pub struct Generation {
    pub prompt: Vec<u32>,
    pub sampling: Sampling,
    pub max_tokens: usize,
}

struct Queued {
    generation: Generation,
    events: UnboundedSender<Decoded>,
    received: Instant,
}

/// A sequence in the decoding loop.
struct Active {
    sequence: Sequence,
    events: UnboundedSender<Decoded>,
    left: usize,
    /// When its last token (or, before the first, its request) arrived.
    last: Instant,
    first: bool,
}

/// The queue to one language model's scheduler thread.
pub struct Decoder {
    queue: Mutex<Option<SyncSender<Queued>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    load: Arc<DecoderLoad>,
}

impl Decoder {
    /// Starts the scheduler thread for `model`: at most `max_sequences` decode together,
    /// `queue_capacity` more may wait.
    pub fn start(
        name: &str,
        model: LanguageModel,
        max_sequences: usize,
        queue_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Decoder, ServeError> {
        let (tx, rx) = mpsc::sync_channel::<Queued>(queue_capacity);
        let load = metrics.decoder_load(name);
        let scheduler = Scheduler {
            kernels: model
                .decode_kernels()
                .unwrap_or_else(|| DecodeKernels::panels(&model.gpt)),
            model,
            max_sequences: max_sequences.max(1),
            metrics,
            load: load.clone(),
            active: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("kiln-{name}-decoder"))
            .spawn(move || scheduler.run(rx))
            .map_err(|e| ServeError::Io("starting a decoding thread".into(), e))?;
        Ok(Decoder {
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            load,
        })
    }

    /// Queues a checked request; its tokens arrive on the returned channel. A full queue
    /// is 503, so an overload sheds requests instead of growing latency without bound.
    pub fn submit(&self, generation: Generation) -> Result<UnboundedReceiver<Decoded>, ApiError> {
        let (events, tokens) = unbounded_channel();
        let guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = guard.as_ref() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ));
        };
        self.load.queued.fetch_add(1, Ordering::AcqRel);
        let queued = Queued {
            generation,
            events,
            received: Instant::now(),
        };
        queue.try_send(queued).map_err(|e| {
            self.load.queued.fetch_sub(1, Ordering::AcqRel);
            match e {
                TrySendError::Full(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is overloaded (its generation queue is full); retry later",
                ),
                TrySendError::Disconnected(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the model's decoding thread has stopped",
                ),
            }
        })?;
        Ok(tokens)
    }

    /// Closes the queue; the thread finishes the sequences it holds, then exits.
    pub fn shut_down(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

struct Scheduler {
    model: LanguageModel,
    /// The block kernels as the passes read them: packed for many sequences, or int8.
    kernels: DecodeKernels,
    max_sequences: usize,
    metrics: Arc<Metrics>,
    load: Arc<DecoderLoad>,
    active: Vec<Active>,
}

impl Scheduler {
    fn run(mut self, rx: Receiver<Queued>) {
        let mut open = true;
        while open || !self.active.is_empty() {
            if self.active.is_empty() {
                match rx.recv() {
                    Ok(queued) => self.admit(queued),
                    Err(_) => break,
                }
            }
            while open && self.active.len() < self.max_sequences {
                match rx.try_recv() {
                    Ok(queued) => self.admit(queued),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            // A client that went away frees its place here, before the pass.
            self.active.retain(|a| !a.events.is_closed());
            self.load.active.store(self.active.len(), Ordering::Relaxed);
            if !self.active.is_empty() {
                self.step();
            }
        }
        self.load.active.store(0, Ordering::Relaxed);
    }

    fn admit(&mut self, queued: Queued) {
        self.load.queued.fetch_sub(1, Ordering::AcqRel);
        if queued.events.is_closed() || queued.generation.max_tokens == 0 {
            return;
        }
        let Generation {
            prompt,
            sampling,
            max_tokens,
        } = queued.generation;
        match Sequence::new(&self.model.gpt, &prompt, sampling) {
            Ok(sequence) => self.active.push(Active {
                sequence,
                events: queued.events,
                left: max_tokens,
                last: queued.received,
                first: true,
            }),
            Err(e) => {
                let _ = queued.events.send(Decoded::Failed(e.to_string()));
            }
        }
    }

    /// One pass over every active sequence; each gets its token, and those done leave.
    fn step(&mut self) {
        let gpt = &self.model.gpt;
        let mut sequences: Vec<&mut Sequence> = self.active.iter_mut().map(|a| &mut a.sequence).collect();
        let drawn = std::panic::catch_unwind(AssertUnwindSafe(|| {
            decode_step(gpt, Some(&self.kernels), &mut sequences)
        }));
        let tokens = match drawn {
            Ok(Ok(tokens)) => tokens,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the decoding pass panicked (a bug in kiln; please report it)".into(),
                };
                for active in self.active.drain(..) {
                    let _ = active.events.send(Decoded::Failed(why.clone()));
                }
                return;
            }
        };
        let now = Instant::now();
        for (active, token) in self.active.iter_mut().zip(tokens) {
            self.metrics
                .observe_token(active.first, (now - active.last).as_secs_f64());
            active.first = false;
            active.last = now;
            active.left -= 1;
            let _ = active.events.send(Decoded::Token(token));
        }
        // Dropping a finished sequence's sender ends its client's stream.
        self.active.retain(|a| a.left > 0);
        self.load.active.store(self.active.len(), Ordering::Relaxed);
    }
}
