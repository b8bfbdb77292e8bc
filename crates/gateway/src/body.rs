//! Response bodies: [`ProxyBody`] (what the router answers with) and
//! [`TrackedBody`] (an engine's body passed through chunk by chunk, carrying
//! the request's [`InflightGuard`]).
//!
//! `TrackedBody` is tower's `TrackCompletion` for token streams: the guard
//! lives in the body, so the request's load is released when the *body*
//! ends, not when the headers go out. Every way a body can end is one
//! outcome, exactly once:
//!
//! | what happens | outcome |
//! |---|---|
//! | the engine's body ends, status 2xx | `Finished` |
//! | the engine's body ends, status not 2xx | `Failed` |
//! | the engine's body fails mid-way | `Failed`; an SSE stream gets `data: {"error": …}` and `data: [DONE]` appended, a plain body is cut |
//! | no chunk within the idle timeout (stream) / the request timeout (non-stream) | `Failed`, as above |
//! | the client goes away (hyper drops the body) | `Cancelled` (the guard's `Drop`) |
//!
//! The first data frame calls [`InflightGuard::first_token`] (the prompt's
//! prefill is no longer pending). Frames are passed on as they arrive: no
//! buffering, no copying.

use crate::metrics::RouterMetrics;
use crate::upstream::Upstream;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use kvroute_core::Outcome;
use kvroute_routing::InflightGuard;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The error type of [`ProxyBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body of the router.
#[derive(Debug)]
pub enum ProxyBody {
    /// A body the router wrote itself (errors, `/metrics`, admin, health).
    Full(Option<Bytes>),
    /// An engine's body for a routed request, with its accounting.
    Tracked(Box<TrackedBody>),
    /// An engine's body passed through without accounting (other paths).
    Plain(Incoming),
    /// A body holding an admission slot, freed when the body ends or is dropped.
    Admitted(Box<ProxyBody>, tokio::sync::OwnedSemaphorePermit),
}

impl ProxyBody {
    /// A body with these bytes.
    pub fn full(b: impl Into<Bytes>) -> ProxyBody {
        let b = b.into();
        ProxyBody::Full((!b.is_empty()).then_some(b))
    }

    /// An empty body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }
}

impl Default for ProxyBody {
    /// An empty body (what layers such as CORS answer preflights with).
    fn default() -> ProxyBody {
        ProxyBody::empty()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Tracked(t) => Pin::new(t.as_mut()).poll_frame(cx),
            ProxyBody::Plain(i) => Pin::new(i)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(Into::into))),
            ProxyBody::Admitted(b, _) => Pin::new(b.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Tracked(t) => t.is_end_stream(),
            ProxyBody::Plain(i) => i.is_end_stream(),
            ProxyBody::Admitted(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Tracked(t) => t.size_hint(),
            ProxyBody::Plain(i) => i.size_hint(),
            ProxyBody::Admitted(b, _) => b.size_hint(),
        }
    }
}

/// How long a tracked body may go without a chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BodyTimeout {
    /// At most this long between two chunks (streams).
    Idle(Duration),
    /// Done by this instant (non-streaming requests).
    Deadline(Instant),
}

/// An engine's response body that accounts for its request.
#[derive(Debug)]
pub struct TrackedBody {
    inner: Incoming,
    guard: Option<InflightGuard<Upstream>>,
    success: bool,
    sse: bool,
    timeout: BodyTimeout,
    timer: Pin<Box<Sleep>>,
    last_activity: Instant,
    ends_with_newline: bool,
    seen_data: bool,
    pending: Option<Bytes>,
    done: bool,
    metrics: Arc<RouterMetrics>,
    /// When the router received the request, and the engine's status code:
    /// the router-side TTFT and duration histograms.
    started: std::time::Instant,
    code: u16,
}

/// How a [`TrackedBody`] treats its engine's body.
#[derive(Debug)]
pub(crate) struct Tracking {
    /// The engine answered 2xx.
    pub(crate) success: bool,
    /// The body is an event stream an error event may be appended to.
    pub(crate) sse: bool,
    /// How long it may be silent.
    pub(crate) timeout: BodyTimeout,
    /// Data already read off the body (a stream's first token), passed on first.
    pub(crate) first: Option<Bytes>,
    /// When the router received the request.
    pub(crate) started: std::time::Instant,
    /// The engine's status code.
    pub(crate) code: u16,
}

impl TrackedBody {
    /// Wrap `inner`, accounting for its request with `guard`.
    pub(crate) fn new(
        inner: Incoming,
        mut guard: InflightGuard<Upstream>,
        t: Tracking,
        metrics: Arc<RouterMetrics>,
    ) -> TrackedBody {
        let Tracking {
            success,
            sse,
            timeout,
            first,
            started,
            code,
        } = t;
        let now = Instant::now();
        let first_deadline = match timeout {
            BodyTimeout::Idle(d) => now + d,
            BodyTimeout::Deadline(at) => at,
        };
        if first.is_some() {
            guard.first_token();
            if sse {
                metrics.ttft(code, started.elapsed().as_secs_f64());
            }
        }
        TrackedBody {
            inner,
            guard: Some(guard),
            success,
            sse,
            timeout,
            timer: Box::pin(tokio::time::sleep_until(first_deadline)),
            last_activity: now,
            ends_with_newline: first.as_ref().is_none_or(|b| b.ends_with(b"\n")),
            seen_data: first.is_some(),
            pending: first,
            done: false,
            metrics,
            started,
            code,
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(g) = self.guard.take() {
            g.finish(outcome);
        }
    }

    /// The engine's body ended normally.
    fn end_ok(&mut self) {
        let outcome = if self.success {
            Outcome::Finished
        } else {
            Outcome::Failed
        };
        self.finish(outcome);
        self.done = true;
        self.metrics
            .e2e(self.code, self.started.elapsed().as_secs_f64());
    }

    /// End the body after a failure: an SSE stream gets an error event, a
    /// plain body is cut with an error.
    fn fail(
        &mut self,
        kind: &'static str,
        message: String,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.metrics.error(kind);
        self.finish(Outcome::Failed);
        self.done = true;
        tracing::warn!(kind, %message, "upstream response body failed");
        if self.sse {
            Poll::Ready(Some(Ok(Frame::data(sse_error_event(
                &message,
                !self.ends_with_newline,
            )))))
        } else {
            Poll::Ready(Some(Err(message.into())))
        }
    }

    /// Whether the timer has really expired (an idle timer is pushed back
    /// lazily: chunks only record their arrival time).
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            match self.timeout {
                BodyTimeout::Deadline(_) => return true,
                BodyTimeout::Idle(d) => {
                    let due = self.last_activity + d;
                    if due <= Instant::now() {
                        return true;
                    }
                    self.timer.as_mut().reset(due);
                }
            }
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(b) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !data.is_empty() {
                        if !this.seen_data {
                            this.seen_data = true;
                            if let Some(g) = this.guard.as_mut() {
                                g.first_token();
                            }
                            if this.sse {
                                this.metrics
                                    .ttft(this.code, this.started.elapsed().as_secs_f64());
                            }
                        }
                        this.ends_with_newline = data.ends_with(b"\n");
                        if let BodyTimeout::Idle(_) = this.timeout {
                            this.last_activity = Instant::now();
                        }
                    }
                }
                if this.inner.is_end_stream() {
                    // The last frame of a length-delimited body: hyper stops
                    // polling once it has written Content-Length bytes, so
                    // the request ends here, not at the next poll.
                    this.end_ok();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail("stream", format!("upstream body failed: {e}")),
            Poll::Ready(None) => {
                this.end_ok();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.timed_out(cx) {
                    let what = match this.timeout {
                        BodyTimeout::Idle(d) => format!("no data from the engine for {d:?}"),
                        BodyTimeout::Deadline(_) => "request timed out".to_string(),
                    };
                    this.fail("stream_timeout", what)
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Never report the end before `poll_frame` has seen it: hyper would
        // drop the body without polling again, and the guard would count a
        // finished request as cancelled.
        self.done && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.sse {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

/// `data: {"error": {...}}\n\ndata: [DONE]\n\n`, after a blank line if the
/// stream was cut mid-event.
pub(crate) fn sse_error_event(message: &str, cut_mid_event: bool) -> Bytes {
    let err = crate::error::error_json(message, "server_error", "upstream_error", None);
    let mut out = Vec::with_capacity(err.len() + 32);
    if cut_mid_event {
        out.extend_from_slice(b"\n\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&err);
    out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    Bytes::from(out)
}
