//! A completion streamed as server-sent events: one `data: {…}` event per piece of text as
//! the scheduler draws its tokens, in the wire format of the route that asked (OpenAI's
//! chunks ending in `data: [DONE]`, or KServe's `generate_stream` events).
//!
//! The body reads the scheduler's channel itself, so a client that disconnects drops the
//! body, which closes the channel, which frees the sequence at the scheduler's next step.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::Frame;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::completion::{Finish, TextAssembler};
use crate::decoder::Decoded;

/// How one route writes its events.
pub trait EventFormat: Send + Unpin + 'static {
    /// An event carrying a piece of the completion's text.
    fn piece(&self, text: &str) -> String;
    /// The events that end a completion: its last piece (possibly empty) with the reason,
    /// and whatever the protocol sends after it.
    fn end(&self, text: &str, finish: Finish, prompt_tokens: usize, completion_tokens: usize) -> String;
    /// An event saying decoding failed part-way.
    fn error(&self, message: &str) -> String;
}

/// `data: JSON` and the blank line that ends an event.
pub fn event(data: &serde_json::Value) -> String {
    format!("data: {data}\n\n")
}

pub struct EventStream<F: EventFormat> {
    format: F,
    tokens: UnboundedReceiver<Decoded>,
    /// The first event, received before the response started (to answer 504 in time).
    first: Option<Decoded>,
    text: TextAssembler,
    prompt_tokens: usize,
    done: bool,
}

impl<F: EventFormat> EventStream<F> {
    pub fn new(
        format: F,
        first: Decoded,
        tokens: UnboundedReceiver<Decoded>,
        text: TextAssembler,
        prompt_tokens: usize,
    ) -> Self {
        EventStream {
            format,
            tokens,
            first: Some(first),
            text,
            prompt_tokens,
            done: false,
        }
    }

    /// The events for one message from the scheduler (None: the stream has ended).
    fn events_for(&mut self, message: Option<Decoded>) -> Option<String> {
        match message {
            Some(Decoded::Token(id)) => {
                let piece = self.text.push(id);
                match self.text.finished {
                    Some(finish) => Some(self.end(&piece, finish)),
                    None if piece.is_empty() => None,
                    None => Some(self.format.piece(&piece)),
                }
            }
            Some(Decoded::Failed(why)) => {
                self.done = true;
                Some(self.format.error(&why))
            }
            None => {
                let rest = self.text.finish_length();
                Some(self.end(&rest, Finish::Length))
            }
        }
    }

    fn end(&mut self, text: &str, finish: Finish) -> String {
        self.done = true;
        self.format
            .end(text, finish, self.prompt_tokens, self.text.tokens)
    }
}

impl<F: EventFormat> http_body::Body for EventStream<F> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                // Dropping the receiver tells the scheduler this sequence is finished.
                this.tokens.close();
                return Poll::Ready(None);
            }
            let message = match this.first.take() {
                Some(first) => Some(first),
                None => match this.tokens.poll_recv(cx) {
                    Poll::Ready(message) => message,
                    Poll::Pending => return Poll::Pending,
                },
            };
            if let Some(events) = this.events_for(message) {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(events)))));
            }
        }
    }
}
