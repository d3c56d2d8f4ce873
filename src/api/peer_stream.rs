//! The accepting side of peer streams (`crate::peer::wire`): the peer listener hands over a
//! connection that starts with the stream preface (or, over TLS, that negotiated
//! `crate::tls::PEER_ALPN`), and it is served here instead of by HTTP.
//!
//! The hello is read first, within the header timeout, and checked as the HTTP routes check a
//! request (the cluster secret, then the cluster id); a refused hello is answered with its
//! status, counted in `gridraft_peer_stream_refusals_total`, logged once per run with a count,
//! and the connection closed without reading further. After it, each request runs in a task of
//! its own through the same code as its HTTP route (`api::peer::answer`), at most
//! [`IN_FLIGHT`] per connection: past that the connection is not read until one finishes, so
//! a sender that outpaces this member is slowed by TCP rather than buffered here. Answers are
//! queued to one writer task that gathers them into few writes.
//!
//! When the listener stops, no further request is read; those in flight are answered, then the
//! connection closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::error::PeerError;
use super::peer::{answer, constant_time_eq, same_cluster};
use super::AppState;
use crate::peer::wire::{self, Hello, IntoHalves, Rpc, HELLO, OK, PREFACE};
use crate::telemetry::repeat::{Repeated, REPEAT_EVERY};

/// Requests of one connection being answered at once.
const IN_FLIGHT: usize = 1024;

/// The peer streams' metrics and the refusal log.
pub struct StreamMetrics {
    open: IntGauge,
    refusals: IntCounterVec,
    refusal_log: Repeated,
}

impl StreamMetrics {
    pub fn new(registry: &Registry) -> Self {
        let open = IntGauge::new(
            "gridraft_peer_streams_open",
            "Peer streams from other members open on this member's peer port",
        )
        .expect("valid metric");
        let refusals = IntCounterVec::new(
            Opts::new(
                "gridraft_peer_stream_refusals_total",
                "Peer streams refused at their hello, by reason (secret, cluster, hello)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(open.clone()))
            .expect("metric names are unique");
        registry
            .register(Box::new(refusals.clone()))
            .expect("metric names are unique");
        for reason in ["secret", "cluster", "hello"] {
            refusals.with_label_values(&[reason]);
        }
        StreamMetrics {
            open,
            refusals,
            refusal_log: Repeated::new(REPEAT_EVERY),
        }
    }
}

/// Whether a connection's first byte is the stream preface's (the rest is checked by
/// [`serve`]).
pub(super) fn starts_stream(first: u8) -> bool {
    first == PREFACE[0]
}

/// The longest hello accepted (a secret and a cluster id).
const MAX_HELLO: usize = 64 * 1024;

/// Serves one peer stream until it ends or `stop` is cancelled. `hello_timeout` bounds the
/// preface and the hello.
pub(super) async fn serve(
    mut io: impl IntoHalves,
    peer: Option<SocketAddr>,
    state: Arc<AppState>,
    stop: CancellationToken,
    hello_timeout: Duration,
) {
    let checked = match tokio::time::timeout(hello_timeout, read_hello(&mut io)).await {
        Ok(Ok(hello)) => check(&state, hello),
        Ok(Err(Some(e))) => Err(("hello", e)),
        // Not a whole hello in time: nothing to answer.
        Ok(Err(None)) | Err(_) => return,
    };
    if let Err((reason, e)) = checked {
        let metrics = &state.peer_streams;
        metrics.refusals.with_label_values(&[reason]).inc();
        if let Some(count) = metrics.refusal_log.failed() {
            let peer = peer.map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(%peer, reason, error = %e, count, "refused a peer stream");
        }
        let refusal = wire::opening(e.status().as_u16(), e.to_string().as_bytes());
        let _ = wire::write_out(&mut io, &refusal).await;
        let _ = io.shutdown().await;
        return;
    }
    if wire::write_out(&mut io, &wire::opening(OK, b""))
        .await
        .is_err()
    {
        return;
    }
    state.peer_streams.open.inc();
    run(io, state.clone(), stop).await;
    state.peer_streams.open.dec();
}

/// Reads the preface and the hello. `Err(None)`: not a peer stream, or cut short (closed
/// without an answer); `Err(Some(_))`: a hello that is not one (answered with the error).
async fn read_hello(tcp: &mut (impl AsyncRead + Unpin)) -> Result<Hello, Option<PeerError>> {
    let mut preface = [0u8; PREFACE.len()];
    tcp.read_exact(&mut preface).await.map_err(|_| None)?;
    if &preface != PREFACE {
        return Err(None);
    }
    // Read by hand rather than through the codec, so that nothing past the hello is buffered.
    let len = tcp.read_u32().await.map_err(|_| None)? as usize;
    if !(wire::HEADER..=MAX_HELLO).contains(&len) {
        return Err(Some(PeerError::BadQuery(format!(
            "a hello of {len} bytes (at most {MAX_HELLO})"
        ))));
    }
    let mut frame = vec![0u8; len];
    tcp.read_exact(&mut frame).await.map_err(|_| None)?;
    match wire::split(Bytes::from(frame)) {
        Some((0, HELLO, body)) => {
            bincode::deserialize(&body).map_err(|e| Some(PeerError::Undecodable(e)))
        }
        _ => Err(Some(PeerError::BadQuery(
            "the first frame is not a hello".into(),
        ))),
    }
}

/// The hello's secret, then its cluster id, as the HTTP routes check a request.
fn check(state: &AppState, hello: Hello) -> Result<(), (&'static str, PeerError)> {
    if !constant_time_eq(hello.secret.as_bytes(), state.secret.as_bytes()) {
        return Err(("secret", PeerError::Unauthorized));
    }
    same_cluster(state, hello.cluster_id, "peer stream").map_err(|e| ("cluster", e))
}

/// Reads requests and answers them until the stream ends or `stop` is cancelled; then answers
/// those in flight before returning.
async fn run(io: impl IntoHalves, state: Arc<AppState>, stop: CancellationToken) {
    let (read, write) = io.into_halves();
    let mut frames = FramedRead::new(read, wire::codec());
    let (answers, queue) = mpsc::channel::<wire::Outgoing>(IN_FLIGHT);
    let closed = CancellationToken::new();
    let writer = tokio::spawn(wire::write_frames(queue, write, closed.clone()).in_current_span());
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = closed.cancelled() => break,
            f = frames.next() => f,
        };
        let Some(Ok(frame)) = frame else { break };
        let Some((id, code, body)) = wire::split(frame.freeze()) else {
            break;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let state = state.clone();
        let answers = answers.clone();
        tokio::spawn(
            async move {
                let rpc = Rpc::from_code(code);
                let answer = match rpc {
                    Some(rpc) => match answer(&state, rpc, body).await {
                        Ok(bytes) => wire::frame(id, OK, &bytes),
                        Err(e) => wire::frame(id, e.status().as_u16(), e.to_string().as_bytes()),
                    },
                    None => wire::frame(id, 404, format!("no request has code {code}").as_bytes()),
                };
                let _ = answers.send(wire::Outgoing::of(rpc, answer)).await;
                drop(slot);
            }
            .in_current_span(),
        );
    }
    // The writer ends once every answer in flight is queued and written.
    drop(answers);
    let _ = writer.await;
}
