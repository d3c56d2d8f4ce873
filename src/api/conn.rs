//! One accepted connection's timeouts: what a client may take to send a request's header, its
//! body, and how long a kept-alive connection may sit idle between requests.
//!
//! hyper's own `header_read_timeout` starts when the connection starts waiting for a request, so
//! it would also cut idle keep-alive connections after the header timeout, and hyper has neither
//! a body nor an idle timeout. So the three are enforced here, on the socket: [`TimedIo`] wraps
//! the stream and fails a read that waits past the deadline of the connection's current
//! [`Phase`]; [`ConnService`] and [`PhaseBody`] move the phase along as a request is read and
//! answered. One timer per connection, re-armed only when a read has to wait for an earlier
//! deadline than the one armed (a connection that keeps requests coming re-arms it rarely).
//!
//! This module owns no listener and no counting: `server.rs` accepts, caps and reclaims.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use bytes::Bytes;
use futures::task::AtomicWaker;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tower::Service as _;

use crate::config::HttpLimits;

/// Where a connection is in its request cycle. Stored as a `u8` in [`ConnShared`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Accepted, no byte received yet: the header timeout runs from the accept.
    Fresh = 0,
    /// Between two requests of a kept-alive connection: the idle timeout runs.
    Idle = 1,
    /// Part of a request's header received: the header timeout runs from its first byte.
    Head = 2,
    /// The header was parsed and the body is being read: the body timeout runs.
    Body = 3,
    /// The request is being answered: no read deadline (the Grid's own timeouts bound it).
    Busy = 4,
    /// Closed by the listener to make room for a new connection.
    Reclaimed = 5,
    /// The connection's task ended; nothing moves it any more.
    Closed = 6,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Fresh,
            1 => Phase::Idle,
            2 => Phase::Head,
            3 => Phase::Body,
            4 => Phase::Busy,
            5 => Phase::Reclaimed,
            _ => Phase::Closed,
        }
    }
}

/// What the listener and the connection's task share.
#[derive(Debug)]
pub(crate) struct ConnShared {
    phase: AtomicU8,
    /// Woken to close a reclaimed connection that waits for a read.
    waker: AtomicWaker,
}

impl ConnShared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ConnShared {
            phase: AtomicU8::new(Phase::Fresh as u8),
            waker: AtomicWaker::new(),
        })
    }

    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves to `to` unless the connection was reclaimed (that is final).
    fn set(&self, to: Phase) {
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p != Phase::Reclaimed as u8 && p != to as u8).then_some(to as u8)
            });
    }

    /// Moves from `from` to `to`; false if the phase was something else.
    fn advance(&self, from: Phase, to: Phase) -> bool {
        self.phase
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Takes a new connection out of reclaiming and read deadlines for good (a peer stream: it
    /// is never idle in HTTP's sense); false if the listener reclaimed it first. Over TLS the
    /// handshake's bytes have moved it to `Head` already.
    pub(crate) fn hold(&self) -> bool {
        [Phase::Fresh, Phase::Head]
            .into_iter()
            .any(|from| self.advance(from, Phase::Busy))
    }

    /// Marks the connection's task ended; true if the listener had reclaimed it. After this it
    /// cannot be reclaimed, so a reclaim is either seen here or refused.
    pub(crate) fn finish(&self) -> bool {
        self.phase.swap(Phase::Closed as u8, Ordering::AcqRel) == Phase::Reclaimed as u8
    }

    /// Closes the connection if it is waiting for a request (fresh or idle); false if it is
    /// reading or answering one.
    pub(crate) fn reclaim(&self) -> bool {
        let done = [Phase::Idle, Phase::Fresh]
            .into_iter()
            .any(|from| self.advance(from, Phase::Reclaimed));
        if done {
            self.waker.wake();
        }
        done
    }
}

/// The socket of one connection, with the read deadlines of [`Phase`].
pub(crate) struct TimedIo<T> {
    inner: T,
    conn: Arc<ConnShared>,
    limits: HttpLimits,
    /// The phase the deadline was computed for, and when that phase began.
    seen: Phase,
    since: Instant,
    /// The timer and the instant it is armed for (`None`: disarmed).
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl<T> TimedIo<T> {
    pub(crate) fn new(inner: T, conn: Arc<ConnShared>, limits: HttpLimits) -> Self {
        let now = Instant::now();
        TimedIo {
            inner,
            conn,
            limits,
            seen: Phase::Fresh,
            since: now,
            timer: Box::pin(tokio::time::sleep_until(now + limits.header_read_timeout)),
            armed: Some(now + limits.header_read_timeout),
        }
    }

    /// The deadline of the current phase, if it has one.
    fn deadline(&mut self) -> Option<Instant> {
        let phase = self.conn.phase();
        if phase != self.seen {
            // A first request's header is timed from the accept, not from its first byte.
            if !(self.seen == Phase::Fresh && phase == Phase::Head) {
                self.since = Instant::now();
            }
            self.seen = phase;
        }
        let limit = match phase {
            Phase::Fresh | Phase::Head => self.limits.header_read_timeout,
            Phase::Idle => self.limits.idle_timeout,
            Phase::Body => self.limits.body_read_timeout,
            Phase::Busy | Phase::Reclaimed | Phase::Closed => return None,
        };
        Some(self.since + limit)
    }

    /// Makes sure the task is woken by the current phase's deadline (the armed timer may fire
    /// earlier; it is then re-armed). Returns the phase whose deadline has passed, if one has.
    fn arm(&mut self, cx: &mut Context<'_>) -> Option<Phase> {
        let deadline = self.deadline()?;
        if self.armed.is_none_or(|armed| armed > deadline) {
            self.timer.as_mut().reset(deadline);
            self.armed = Some(deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                self.armed = None;
                return Some(self.seen);
            }
            self.timer.as_mut().reset(deadline);
            self.armed = Some(deadline);
        }
        None
    }
}

fn timeout_message(phase: Phase) -> &'static str {
    match phase {
        Phase::Idle => "idle timeout",
        Phase::Body => "body read timeout",
        _ => "header read timeout",
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.waker.register(cx.waker());
        let phase = this.conn.phase();
        if phase == Phase::Reclaimed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && matches!(phase, Phase::Fresh | Phase::Idle) {
                    // The first byte of a request: it is no longer reclaimable. A reclaim that
                    // won the race closes the connection at the next read.
                    this.conn.advance(phase, Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.arm(cx) {
                Some(phase) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    timeout_message(phase),
                ))),
                None => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper flushes each response and then waits for the socket without reading again
        // (its read interest was registered while the request was answered): the idle
        // deadline that starts now is armed here, and a read fails once it has passed.
        if this.conn.phase() == Phase::Idle && this.arm(cx).is_some() {
            cx.waker().wake_by_ref();
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What a listener answers requests with.
#[derive(Clone)]
pub enum App {
    /// An axum router: the peer port (metrics, admin and member-to-member routes).
    Router(Router),
    /// The public port's Grid routes, called directly: they are routed by hand
    /// (`super::grid`), so an axum router would only add a path lookup that always misses, a
    /// boxed service clone and two future wrappers to every Grid request.
    Grid(Arc<super::AppState>),
}

/// The hyper service of one connection: the listener's [`App`], and the phase moves of a
/// request (header parsed, body read, answered).
#[derive(Clone)]
pub(crate) struct ConnService {
    pub(crate) app: App,
    pub(crate) conn: Arc<ConnShared>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answered;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // Requests without a body (most Grid calls) are not wrapped: the phase goes straight
        // to busy, and the handler gets an empty body, which needs no allocation.
        let req = if req.body().is_end_stream() {
            self.conn.set(Phase::Busy);
            req.map(|_| Body::empty())
        } else {
            self.conn.set(Phase::Body);
            let conn = self.conn.clone();
            req.map(|inner| Body::new(PhaseBody::new(inner, conn, Phase::Busy)))
        };
        let inner = match &self.app {
            App::Router(router) => AppFuture::Router(router.clone().call(req)),
            App::Grid(state) => AppFuture::Grid(Box::pin(super::grid::handle(state.clone(), req))),
        };
        Answered {
            inner,
            conn: self.conn.clone(),
        }
    }
}

/// The answer being computed by an [`App`]. hyper keeps one per connection, allocated once: the
/// router's future is held as it is (boxing it would allocate for every peer-port request).
#[allow(clippy::large_enum_variant)]
enum AppFuture {
    Router(<Router as tower::Service<Request<Body>>>::Future),
    Grid(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

/// The router's answer. The connection is idle once the answer's body is complete: at once for
/// an empty body, after its last frame for any other (a streamed body, such as a backup, may
/// take longer than the idle timeout, and hyper reads the socket while it writes).
pub(crate) struct Answered {
    inner: AppFuture,
    conn: Arc<ConnShared>,
}

impl Future for Answered {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = match &mut self.inner {
            AppFuture::Router(f) => {
                let Ok(resp) = ready!(Pin::new(f).poll(cx));
                resp
            }
            AppFuture::Grid(f) => ready!(f.as_mut().poll(cx)),
        };
        if resp.body().is_end_stream() {
            self.conn.set(Phase::Idle);
            return Poll::Ready(Ok(resp));
        }
        let conn = self.conn.clone();
        Poll::Ready(Ok(
            resp.map(|inner| Body::new(PhaseBody::new(inner, conn, Phase::Idle)))
        ))
    }
}

/// A request or response body that moves the connection to `then` once it has been read or
/// written to its end (or failed), once: a request body from [`Phase::Body`] to [`Phase::Busy`],
/// an answer's body from [`Phase::Busy`] to [`Phase::Idle`].
struct PhaseBody<B> {
    inner: B,
    conn: Arc<ConnShared>,
    then: Phase,
    done: bool,
}

impl<B> PhaseBody<B> {
    fn new(inner: B, conn: Arc<ConnShared>, then: Phase) -> Self {
        PhaseBody {
            inner,
            conn,
            then,
            done: false,
        }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for PhaseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if !self.done && (!matches!(frame, Some(Ok(_))) || self.inner.is_end_stream()) {
            self.done = true;
            self.conn.set(self.then);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
