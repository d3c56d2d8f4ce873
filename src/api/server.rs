//! Serves one listener: accepts connections up to the listener's cap, runs each on hyper's
//! HTTP/1 server with the timeouts of `api::conn`, and stops gracefully.
//!
//! At the cap a new connection still gets a slot when some open connection is waiting for a
//! request (fresh or kept alive): the one found first in accept order is closed in its place, as
//! nginx reuses keep-alive connections when it runs out. When every open connection is reading
//! or answering a request, the new one is accepted and closed at once rather than left in the
//! kernel's backlog: the client (or the balancer) learns at once to go elsewhere, instead of
//! waiting for a connection that would be served late or never.
//!
//! Accept errors such as EMFILE back off (up to a second) and are logged once per streak with a
//! count, never per attempt. Connection tasks live in a `JoinSet`, so aborting the serving task
//! (a crash in tests) drops every connection with it.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::conn::{App, ConnService, ConnShared, TimedIo};
use crate::config::HttpLimits;
use crate::peer::wire;
use crate::telemetry::repeat::Repeated;
use crate::tls::PEER_ALPN;

/// The listen backlog asked for; Linux caps it at `net.core.somaxconn` (4096 on current kernels).
/// tokio's default of 1024 overflows when thousands of clients connect at once, and the kernel
/// then drops new SYNs, so a client arriving during the burst waits a full second for its SYN's
/// retransmission although the member would accept it at once.
const LISTEN_BACKLOG: u32 = 65_535;
/// Connections closed to make room keep their descriptor until their task runs; at most this
/// many may be closing at once, so a burst of new connections at the cap cannot take the
/// descriptors `fd_budget` keeps for storage (a new connection past it is refused instead).
const MAX_CLOSING: usize = 64;
/// Open connections are checked at most this many at a time for one to reclaim.
const RECLAIM_SCAN: usize = 256;
/// Ends a connection's task: counts a reclaimed connection out of [`Server::closing`] once its
/// socket is dropped (the guard is dropped after the connection, declared first in the task).
struct ClosedGuard {
    conn: Arc<ConnShared>,
    closing: Arc<AtomicUsize>,
}

impl Drop for ClosedGuard {
    fn drop(&mut self) {
        if self.conn.finish() {
            self.closing.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Accept errors back off from this delay, doubling up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// While accepting keeps failing, a line at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Connection metrics of both listeners, by `listener` (`public`, `peer`).
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: IntGaugeVec,
    refused: IntCounterVec,
    reclaimed: IntCounterVec,
    tls_failures: IntCounterVec,
}

impl ConnectionMetrics {
    pub fn new(registry: &Registry) -> Self {
        let m = ConnectionMetrics {
            open: IntGaugeVec::new(
                Opts::new("gridraft_connections_open", "Open connections by listener"),
                &["listener"],
            )
            .expect("valid metric"),
            refused: IntCounterVec::new(
                Opts::new(
                    "gridraft_connections_refused_total",
                    "Connections closed at once because the listener was at its cap",
                ),
                &["listener"],
            )
            .expect("valid metric"),
            reclaimed: IntCounterVec::new(
                Opts::new(
                    "gridraft_connections_reclaimed_total",
                    "Connections waiting for a request closed to make room at the cap",
                ),
                &["listener"],
            )
            .expect("valid metric"),
            tls_failures: IntCounterVec::new(
                Opts::new(
                    "gridraft_tls_handshake_failures_total",
                    "TLS handshakes that failed (no or a refused client certificate, plain HTTP \
                     on an HTTPS port, a client that gave up), by listener",
                ),
                &["listener"],
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.open.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.refused.clone()),
            Box::new(m.reclaimed.clone()),
            Box::new(m.tls_failures.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        m
    }
}

/// One listener's settings.
pub struct ListenerSettings {
    /// `public` or `peer` (logs and the metrics' `listener` label).
    pub name: &'static str,
    /// Most connections open at once.
    pub cap: usize,
    pub limits: HttpLimits,
    /// The peer listener's state: connections that start with the peer-stream preface are
    /// served by `api::peer_stream` instead of HTTP. `None` on the public listener.
    pub streams: Option<Arc<super::AppState>>,
    /// HTTPS: every connection's TLS handshake, within the header timeout, before HTTP.
    pub tls: Option<Arc<dyn crate::tls::Accepts>>,
}

/// Binds a listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// `TcpListener::bind` sets it, so a restarted member can bind at once).
pub fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `app` on `listener` until `stop` is cancelled, then drains its connections.
pub fn spawn(
    listener: TcpListener,
    app: App,
    settings: ListenerSettings,
    metrics: &ConnectionMetrics,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let name = settings.name;
    let mut http1 = http1::Builder::new();
    // A response's head and body go out as one vectored write, without a copy into one buffer:
    // on TCP one `writev`, through rustls one TLS record (rustls gathers the parts of a vectored
    // write into one record, encrypted once).
    http1.writev(true);
    let server = Server {
        app,
        open: metrics.open.with_label_values(&[name]),
        refused: metrics.refused.with_label_values(&[name]),
        reclaimed: metrics.reclaimed.with_label_values(&[name]),
        http1,
        tls_failures: Arc::new(TlsFailures {
            count: metrics.tls_failures.with_label_values(&[name]),
            log: Repeated::new(FAILURE_LOG_EVERY),
            listener: name,
        }),
        conns: JoinSet::new(),
        order: VecDeque::new(),
        closing: Arc::new(AtomicUsize::new(0)),
        settings,
    };
    tokio::spawn(server.run(listener, stop).in_current_span())
}

struct Server {
    app: App,
    settings: ListenerSettings,
    open: IntGauge,
    refused: IntCounter,
    reclaimed: IntCounter,
    http1: http1::Builder,
    tls_failures: Arc<TlsFailures>,
    conns: JoinSet<()>,
    /// Open connections in accept order (entries of closed ones are dropped lazily).
    order: VecDeque<Weak<ConnShared>>,
    /// Connections reclaimed whose task has not ended yet (see [`MAX_CLOSING`]).
    closing: Arc<AtomicUsize>,
}

impl Server {
    async fn run(mut self, listener: TcpListener, stop: CancellationToken) {
        let name = self.settings.name;
        let mut failures = AcceptFailures::default();
        let mut backoff = BACKOFF_MIN;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(_) = self.conns.join_next(), if !self.conns.is_empty() => self.open.dec(),
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        failures.recovered(name);
                        backoff = BACKOFF_MIN;
                        self.admit(tcp, &stop);
                    }
                    Err(e) if is_per_connection(&e) => {}
                    Err(e) => {
                        failures.failed(name, &e);
                        // A closing connection frees a descriptor: try again at once then.
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            Some(_) = self.conns.join_next(), if !self.conns.is_empty() => {
                                self.open.dec();
                            }
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        drop(listener);
        // Every connection saw `stop` too: idle ones close, busy ones finish their request.
        while self.conns.join_next().await.is_some() {
            self.open.dec();
        }
    }

    fn admit(&mut self, tcp: TcpStream, stop: &CancellationToken) {
        if self.conns.len() >= self.settings.cap {
            if self.reclaim_one() {
                self.reclaimed.inc();
            } else {
                self.refused.inc();
                tracing::debug!(
                    listener = self.settings.name,
                    "connection refused at the cap"
                );
                return;
            }
        }
        let _ = tcp.set_nodelay(true);
        self.forget_closed();
        let shared = ConnShared::new();
        self.order.push_back(Arc::downgrade(&shared));
        let closed = ClosedGuard {
            conn: shared.clone(),
            closing: self.closing.clone(),
        };
        let limits = self.settings.limits;
        let service = ConnService {
            app: self.app.clone(),
            conn: shared.clone(),
        };
        let http1 = self.http1.clone();
        let streams = self.settings.streams.clone();
        let tls = self.settings.tls.as_ref().map(|t| t.acceptor());
        let tls_failures = self.tls_failures.clone();
        let stop = stop.clone();
        self.open.inc();
        self.conns.spawn(
            async move {
                let _closed = closed;
                let timeout = limits.header_read_timeout;
                if let Some(state) = &streams {
                    wire::keep_alive(&tcp);
                    if tls.is_none() {
                        // Plain: a stream starts with the preface's NUL, HTTP never does.
                        let first = tokio::select! {
                            first = first_byte(&tcp, timeout) => first,
                            _ = stop.cancelled() => None,
                        };
                        match first {
                            Some(b) if super::peer_stream::starts_stream(b) => {
                                if shared.hold() {
                                    let peer = tcp.peer_addr().ok();
                                    super::peer_stream::serve(
                                        tcp,
                                        peer,
                                        state.clone(),
                                        stop,
                                        timeout,
                                    )
                                    .await;
                                }
                                return;
                            }
                            Some(_) => {}
                            None => return,
                        }
                    }
                }
                let peer = tcp.peer_addr().ok();
                // The handshake's reads are timed like a first request's header (from the accept).
                let io = TimedIo::new(tcp, shared.clone(), limits);
                let result = match tls {
                    None => serve_http(&http1, io, service, &stop).await,
                    Some(acceptor) => match acceptor.accept(io).await {
                        Ok(tls) => {
                            // Over TLS, ALPN tells a peer stream from HTTP.
                            let alpn = tls.get_ref().1.alpn_protocol();
                            if let Some(state) = streams.filter(|_| alpn == Some(PEER_ALPN)) {
                                if shared.hold() {
                                    super::peer_stream::serve(tls, peer, state, stop, timeout)
                                        .await;
                                }
                                return;
                            }
                            serve_http(&http1, tls, service, &stop).await
                        }
                        Err(e) => {
                            tls_failures.failed(&e, peer);
                            return;
                        }
                    },
                };
                if let Err(e) = result {
                    // Timeouts, resets and malformed requests are the client's business.
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            .in_current_span(),
        );
    }

    /// Closes one connection that is waiting for a request, oldest first; false if none is.
    fn reclaim_one(&mut self) -> bool {
        if self.closing.load(Ordering::Acquire) >= MAX_CLOSING {
            return false;
        }
        for _ in 0..self.order.len().min(RECLAIM_SCAN) {
            let Some(weak) = self.order.pop_front() else {
                return false;
            };
            let Some(conn) = weak.upgrade() else {
                continue;
            };
            // Counted before the connection can see it, so its task never counts it out first.
            self.closing.fetch_add(1, Ordering::AcqRel);
            if conn.reclaim() {
                return true;
            }
            self.closing.fetch_sub(1, Ordering::AcqRel);
            self.order.push_back(weak);
        }
        false
    }

    /// Drops the entries of closed connections from the front of the accept order, rotating
    /// live ones to the back, two per accept: the queue stays within about twice the open count.
    fn forget_closed(&mut self) {
        for _ in 0..2 {
            match self.order.pop_front() {
                Some(weak) if weak.strong_count() > 0 => self.order.push_back(weak),
                Some(_) => {}
                None => return,
            }
        }
    }
}

/// Failed TLS handshakes of one listener: counted, and logged once per run of failures with a
/// count (a scanner or a misconfigured client fails every attempt).
struct TlsFailures {
    count: IntCounter,
    log: Repeated,
    listener: &'static str,
}

impl TlsFailures {
    fn failed(&self, e: &io::Error, peer: Option<std::net::SocketAddr>) {
        self.count.inc();
        if let Some(count) = self.log.failed() {
            let peer = peer.map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(listener = self.listener, %peer, error = %e, count, "TLS handshake failed");
        }
    }
}

/// Serves HTTP/1.1 on `io` until the connection ends, or answers the request in progress and
/// closes once `stop` is cancelled.
async fn serve_http<I>(
    http1: &http1::Builder,
    io: I,
    service: ConnService,
    stop: &CancellationToken,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http1.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// The first byte a connection sends, without taking it; `None` if it closes or sends nothing
/// within `timeout`.
async fn first_byte(tcp: &TcpStream, timeout: Duration) -> Option<u8> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(timeout, tcp.peek(&mut byte)).await {
        Ok(Ok(1)) => Some(byte[0]),
        _ => None,
    }
}

/// Errors about one connection that was already gone; the next accept is unaffected.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// A streak of failed accepts, logged when it starts, every [`FAILURE_LOG_EVERY`] while it
/// lasts, and when it ends.
#[derive(Default)]
struct AcceptFailures {
    total: u64,
    since_log: u64,
    last_log: Option<Instant>,
}

impl AcceptFailures {
    fn failed(&mut self, listener: &str, e: &io::Error) {
        self.total += 1;
        self.since_log += 1;
        match self.last_log {
            None => {
                tracing::warn!(listener, error = %e, "accepting connections failed; backing off");
            }
            Some(at) if at.elapsed() >= FAILURE_LOG_EVERY => tracing::warn!(
                listener,
                error = %e,
                failures = self.since_log,
                "accepting connections still fails"
            ),
            Some(_) => return,
        }
        self.last_log = Some(Instant::now());
        self.since_log = 0;
    }

    fn recovered(&mut self, listener: &str) {
        if self.total > 0 {
            tracing::info!(
                listener,
                failures = self.total,
                "accepting connections again"
            );
            *self = AcceptFailures::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many connections the kernel may queue for a listener here (`net.core.somaxconn`).
    fn somaxconn() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096)
    }

    #[tokio::test]
    async fn a_burst_of_connections_past_tokios_default_backlog_is_queued_not_dropped() {
        // Nothing accepts: every handshake the kernel completes waits in the backlog. A SYN
        // past a full backlog is dropped, and its client waits a second for the retransmission.
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let burst = somaxconn().min(1500);
        let connects = (0..burst)
            .map(|_| tokio::time::timeout(Duration::from_millis(800), TcpStream::connect(addr)));
        let results = futures::future::join_all(connects).await;
        let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(
            connected, burst,
            "{connected} of {burst} connections completed within 800 ms"
        );
    }
}
