//! The connecting side of peer streams ([`super::wire`]): one persistent connection to each
//! other member, opened on first use and again after it is lost, carrying every request this
//! member sends there with many in flight.
//!
//! A caller frames its request, registers a one-shot slot under the request's id and queues the
//! frame; one writer task per connection writes whatever is queued in one `write` (requests
//! from many callers coalesce), and one reader task hands each answer to the slot of its id.
//! The queue is bounded ([`QUEUE`]): when the connection cannot keep up, callers wait (within
//! their own timeout) instead of buffering without limit.
//!
//! A request fails fast when it cannot be delivered: a refused connection, a connection lost
//! with requests in flight, or the caller's timeout. A connection on which several requests in
//! a row time out without any answer arriving is closed, so that a member that was paused or
//! cut off is reached on a fresh connection once it answers again. A member that does not speak
//! the stream protocol (an earlier version, during a rolling upgrade) is reached over HTTP, and
//! asked again after [`RETRY_STREAM_AFTER`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::wire::{self, Hello, IntoHalves, Rpc, HELLO, OK, PREFACE};

/// Frames queued on one connection before callers wait.
const QUEUE: usize = 1024;
/// The longest a connection and its hello may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests in a row that time out on a connection on which no answer arrived meanwhile,
/// after which the connection is closed and the next request opens a new one.
const SILENT_TIMEOUTS: u32 = 3;
/// How long a member found to speak only HTTP is reached over HTTP before it is asked again.
pub const RETRY_STREAM_AFTER: Duration = Duration::from_secs(10);

/// Why a request on a stream got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The member does not speak the stream protocol: send the request over HTTP.
    #[error("the member does not accept peer streams")]
    Unsupported,
    #[error("connect: {0}")]
    Refused(String),
    #[error("timed out")]
    TimedOut,
    #[error("connection lost: {0}")]
    Lost(String),
    /// The member refused the hello (401: the secret; 403: another cluster).
    #[error("{status}: {text}")]
    Hello { status: u16, text: String },
    /// The TLS handshake failed (a certificate refused on either side, a name that does not
    /// match, a plain peer port).
    #[error("TLS: {0}")]
    Tls(String),
}

impl LinkError {
    /// The member is down or cut off: its connection was refused.
    pub fn is_refused(&self) -> bool {
        matches!(self, LinkError::Refused(_))
    }
}

/// Every stream this member opens, by peer address. Cheap to clone.
#[derive(Clone)]
pub struct Links {
    /// The preface and hello frame every connection starts with.
    hello: Bytes,
    /// Mutual TLS around every connection, when the peer ports require it.
    tls: Option<TlsConnector>,
    links: Arc<Mutex<HashMap<String, Arc<Link>>>>,
    /// Closes every connection (the member stops); each connection's own token is a child.
    shutdown: CancellationToken,
}

impl Links {
    pub fn new(secret: &str, cluster_id: Option<&str>, tls: Option<TlsConnector>) -> Self {
        let hello = Hello {
            secret: secret.to_owned(),
            cluster_id: cluster_id.map(str::to_owned),
        };
        let body = bincode::serialize(&hello).expect("hellos always encode");
        Links {
            hello: wire::opening(HELLO, &body),
            tls,
            links: Arc::default(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Closes every stream and fails the requests in flight on them; a later request opens
    /// a new one. Called when the member stops.
    pub fn close_all(&self) {
        self.shutdown.cancel();
    }

    /// Sends `body` as `rpc` to the member at `addr` and returns its answer's status and body.
    pub async fn call(
        &self,
        addr: &str,
        rpc: Rpc,
        body: &[u8],
        timeout: Duration,
    ) -> Result<(u16, Bytes), LinkError> {
        let deadline = Instant::now() + timeout;
        let link = self.link(addr);
        if self.shutdown.is_cancelled() {
            return Err(LinkError::Lost("the member is stopping".into()));
        }
        let conn = match tokio::time::timeout_at(deadline, link.conn(self)).await {
            Ok(conn) => conn?,
            Err(_) => return Err(LinkError::TimedOut),
        };
        conn.call(rpc, body, deadline).await
    }

    /// Whether a stream to `addr` is open now (for tests and the status of a rolling upgrade).
    pub fn is_open(&self, addr: &str) -> bool {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.get(addr).is_some_and(|l| l.open().is_some())
    }

    fn link(&self, addr: &str) -> Arc<Link> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(addr) {
            return link.clone();
        }
        let link = Arc::new(Link {
            addr: addr.to_owned(),
            state: Mutex::new(State::Idle),
        });
        links.insert(addr.to_owned(), link.clone());
        link
    }
}

type Connecting = Shared<BoxFuture<'static, Result<Arc<Conn>, LinkError>>>;

/// The connection to one member, or the attempt to open it.
struct Link {
    addr: String,
    state: Mutex<State>,
}

enum State {
    Idle,
    /// One attempt at a time; every caller waits for it (each within its own timeout).
    Connecting(Connecting),
    Up(Arc<Conn>),
    /// The member speaks only HTTP, until then.
    Http(Instant),
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) -> Option<Arc<Conn>> {
        match &*self.lock() {
            State::Up(c) if !c.closed.is_cancelled() => Some(c.clone()),
            _ => None,
        }
    }

    /// The open connection, or the outcome of opening one.
    async fn conn(self: &Arc<Self>, links: &Links) -> Result<Arc<Conn>, LinkError> {
        let attempt = {
            let mut state = self.lock();
            match &*state {
                State::Up(c) if !c.closed.is_cancelled() => return Ok(c.clone()),
                State::Http(until) if Instant::now() < *until => {
                    return Err(LinkError::Unsupported)
                }
                State::Connecting(attempt) => attempt.clone(),
                other => {
                    let asked_before = matches!(other, State::Http(_));
                    let attempt = self.clone().connect(links, asked_before);
                    *state = State::Connecting(attempt.clone());
                    attempt
                }
            }
        };
        attempt.await
    }

    /// Starts opening a connection in a task of its own, so that it completes (and settles the
    /// link's state) even when every caller waiting for it gives up first. `asked_before`: the
    /// member was found to speak only HTTP, and this asks again (logged only when that changed).
    fn connect(self: Arc<Self>, links: &Links, asked_before: bool) -> Connecting {
        let hello = links.hello.clone();
        let tls = links.tls.clone();
        let closed = links.shutdown.child_token();
        let task = tokio::spawn(
            async move {
                let open = open(&self.addr, &hello, tls, closed);
                let outcome = tokio::time::timeout(CONNECT_TIMEOUT, open)
                    .await
                    .unwrap_or(Err(LinkError::TimedOut));
                *self.lock() = match &outcome {
                    Ok(conn) => {
                        if asked_before {
                            tracing::info!(peer = %self.addr, "peer accepts streams now");
                        }
                        State::Up(conn.clone())
                    }
                    Err(LinkError::Unsupported) => {
                        if !asked_before {
                            tracing::info!(
                                peer = %self.addr,
                                "peer does not accept streams (an earlier version): using HTTP"
                            );
                        }
                        State::Http(Instant::now() + RETRY_STREAM_AFTER)
                    }
                    Err(_) => State::Idle,
                };
                outcome
            }
            .in_current_span(),
        );
        async move {
            task.await
                .unwrap_or_else(|e| Err(LinkError::Lost(e.to_string())))
        }
        .boxed()
        .shared()
    }
}

/// Connects to `addr` (over TLS with `tls`), presents the hello and starts the connection's
/// reader and writer. `closed` is the connection's token, cancelled to close it.
async fn open(
    addr: &str,
    hello: &[u8],
    tls: Option<TlsConnector>,
    closed: CancellationToken,
) -> Result<Arc<Conn>, LinkError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| LinkError::Refused(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    wire::keep_alive(&tcp);
    let Some(tls) = tls else {
        return start(tcp, addr, hello, closed, false).await;
    };
    let name = crate::tls::server_name(addr).map_err(LinkError::Tls)?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| LinkError::Tls(e.to_string()))?;
    if stream.get_ref().1.alpn_protocol() != Some(crate::tls::PEER_ALPN) {
        return Err(LinkError::Tls(format!(
            "{addr} did not agree to the peer stream protocol"
        )));
    }
    start(stream, addr, hello, closed, true).await
}

/// Presents the hello on a connected `io` (`encrypted`: over TLS) and starts its reader and
/// writer.
async fn start(
    mut io: impl IntoHalves,
    addr: &str,
    hello: &[u8],
    closed: CancellationToken,
    encrypted: bool,
) -> Result<Arc<Conn>, LinkError> {
    wire::write_out(&mut io, hello)
        .await
        .map_err(|e| LinkError::Lost(e.to_string()))?;
    // An earlier version's HTTP server answers the preface with a 400 (or closes): anything
    // but the preface back means HTTP.
    let mut preface = [0u8; PREFACE.len()];
    match io.read_exact(&mut preface).await {
        Ok(_) if &preface == PREFACE => {}
        // Under TLS 1.3 the server checks this member's certificate after the client's side
        // of the handshake is done: a refusal arrives as the first read's error.
        Err(e) if encrypted => return Err(LinkError::Tls(e.to_string())),
        _ => return Err(LinkError::Unsupported),
    }
    let (read, write) = io.into_halves();
    let mut frames = FramedRead::new(read, wire::codec());
    let answer = match frames.next().await {
        Some(Ok(f)) => wire::split(f.freeze()),
        Some(Err(e)) => return Err(LinkError::Lost(e.to_string())),
        None => None,
    };
    match answer {
        Some((0, OK, _)) => {}
        Some((_, status, text)) => {
            return Err(LinkError::Hello {
                status,
                text: String::from_utf8_lossy(&text).into_owned(),
            })
        }
        None => return Err(LinkError::Lost("closed during the hello".into())),
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let conn = Arc::new(Conn {
        queue: tx,
        pending: Mutex::default(),
        next_id: AtomicU64::new(1),
        closed,
        received: AtomicU64::new(0),
        silent_timeouts: AtomicU32::new(0),
    });
    tokio::spawn(wire::write_frames(rx, write, conn.closed.clone()).in_current_span());
    tokio::spawn(conn.clone().read_answers(frames).in_current_span());
    tracing::debug!(peer = addr, "peer stream open");
    Ok(conn)
}

type Slot = oneshot::Sender<(u16, Bytes)>;

/// One open stream.
struct Conn {
    queue: mpsc::Sender<wire::Outgoing>,
    /// Requests sent and not answered, by id.
    pending: Mutex<HashMap<u64, Slot>>,
    next_id: AtomicU64,
    /// Cancelled when the connection ends, from either task or a caller.
    closed: CancellationToken,
    /// Answers received so far.
    received: AtomicU64,
    silent_timeouts: AtomicU32,
}

impl Conn {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn call(
        self: &Arc<Self>,
        rpc: Rpc,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(u16, Bytes), LinkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (slot, answer) = oneshot::channel();
        self.pending().insert(id, slot);
        let _forget = Forget { conn: self, id };
        // After the insert: a reader that ended before it has cancelled `closed` already.
        if self.closed.is_cancelled() {
            return Err(LinkError::Lost("closed".into()));
        }
        let heard = self.received.load(Ordering::Acquire);
        let exchange = async {
            let lost = |_| LinkError::Lost("closed".into());
            self.queue
                .send(wire::Outgoing::of(
                    Some(rpc),
                    wire::frame(id, rpc as u16, body),
                ))
                .await
                .map_err(lost)?;
            answer
                .await
                .map_err(|_| LinkError::Lost("closed with the request in flight".into()))
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(outcome) => {
                self.silent_timeouts.store(0, Ordering::Relaxed);
                outcome
            }
            Err(_) => {
                if self.received.load(Ordering::Acquire) == heard
                    && self.silent_timeouts.fetch_add(1, Ordering::Relaxed) + 1 >= SILENT_TIMEOUTS
                {
                    tracing::debug!("no answer on a peer stream: closing it");
                    self.closed.cancel();
                }
                Err(LinkError::TimedOut)
            }
        }
    }

    /// Hands every answer to its caller until the connection ends, then fails the rest.
    async fn read_answers<R: AsyncRead + Unpin>(
        self: Arc<Self>,
        mut frames: FramedRead<R, tokio_util::codec::LengthDelimitedCodec>,
    ) {
        loop {
            let frame = tokio::select! {
                _ = self.closed.cancelled() => break,
                f = frames.next() => f,
            };
            let Some(Ok(frame)) = frame else { break };
            let Some((id, status, body)) = wire::split(frame.freeze()) else {
                break;
            };
            self.received.fetch_add(1, Ordering::Release);
            if let Some(slot) = self.pending().remove(&id) {
                let _ = slot.send((status, body));
            }
        }
        self.closed.cancel();
        // Dropping the slots fails every request still waiting.
        self.pending().clear();
    }
}

/// Removes a request's slot when its caller stops waiting (answered, timed out or dropped).
struct Forget<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.conn.pending().remove(&self.id);
    }
}
