//! The peer stream's wire format: one TCP connection from a member to another carries every
//! request the first sends to the second (Raft RPC, forwarded writes, ReadIndex, lookups), many
//! in flight at once, each answered on the same connection with its request's id.
//!
//! A connection opens with [`PREFACE`] from the connecting member, then a hello frame (id 0,
//! code [`HELLO`], a bincode [`Hello`] with the cluster secret and cluster id). The accepting
//! member answers with [`PREFACE`] and a frame of id 0 whose code is 200, or a refusal (401 for
//! the secret, 403 for another cluster) after which it closes. No request is read before the
//! hello is accepted.
//!
//! Every frame after that is `[u32 length][u64 id][u16 code][body]`, big-endian, `length`
//! counting what follows it. A request's code is its [`Rpc`]; an answer's code is an HTTP status
//! (200 with the same bincode body the HTTP route answers, otherwise the error text), so both
//! transports mean the same thing. The first byte of [`PREFACE`] is NUL, which no HTTP request
//! starts with: the peer port tells the two apart by it, and a member of an earlier version
//! answers the preface with HTTP's 400 and the connecting member falls back to HTTP.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

/// The first bytes on a peer stream, from both sides.
pub const PREFACE: &[u8; 16] = b"\0GRIDRAFT-PEER/1";

/// The hello frame's code.
pub const HELLO: u16 = 0xFFFF;

/// The largest frame either side accepts: the peer port's HTTP body limit and a header.
pub const MAX_FRAME: usize = 256 * 1024 * 1024 + HEADER;

/// Bytes of a frame's header after its length: the id and the code.
pub const HEADER: usize = 8 + 2;

/// The status of an answer that carries the request's result.
pub const OK: u16 = 200;

/// What a connecting member presents before any request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The cluster secret (see `api::peer`).
    pub secret: String,
    /// The connecting member's cluster id (see `crate::peer::CLUSTER_ID_HEADER`).
    pub cluster_id: Option<String>,
}

/// The requests a stream carries, each the body of one HTTP route of the peer port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Rpc {
    Append = 1,
    Vote = 2,
    Snapshot = 3,
    Write = 4,
    ReadIndex = 5,
    Lookup = 6,
    TimeoutNow = 7,
}

impl Rpc {
    pub fn from_code(code: u16) -> Option<Rpc> {
        Some(match code {
            1 => Rpc::Append,
            2 => Rpc::Vote,
            3 => Rpc::Snapshot,
            4 => Rpc::Write,
            5 => Rpc::ReadIndex,
            6 => Rpc::Lookup,
            7 => Rpc::TimeoutNow,
            _ => return None,
        })
    }

    /// The HTTP route that takes the same body (the transport of earlier versions).
    pub fn path(self) -> &'static str {
        use crate::raft::network::{APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
        match self {
            Rpc::Append => APPEND_PATH,
            Rpc::Vote => VOTE_PATH,
            Rpc::Snapshot => SNAPSHOT_PATH,
            Rpc::Write => super::WRITE_PATH,
            Rpc::ReadIndex => super::READ_INDEX_PATH,
            Rpc::Lookup => super::LOOKUP_PATH,
            Rpc::TimeoutNow => super::TIMEOUT_NOW_PATH,
        }
    }

    /// A label for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Append => "append",
            Rpc::Vote => "vote",
            Rpc::Snapshot => "snapshot",
            Rpc::Write => "write",
            Rpc::ReadIndex => "read_index",
            Rpc::Lookup => "lookup",
            Rpc::TimeoutNow => "timeout_now",
        }
    }
}

/// One frame, length prefix included, ready to write.
pub fn frame(id: u64, code: u16, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + HEADER + body.len());
    buf.put_u32((HEADER + body.len()) as u32);
    buf.put_u64(id);
    buf.put_u16(code);
    buf.put_slice(body);
    buf.freeze()
}

/// What each side sends first: [`PREFACE`] and the frame of id 0 (the hello, or the answer
/// to it).
pub fn opening(code: u16, body: &[u8]) -> Bytes {
    let mut bytes = BytesMut::with_capacity(PREFACE.len() + 4 + HEADER + body.len());
    bytes.put_slice(PREFACE);
    bytes.put_slice(&frame(0, code, body));
    bytes.freeze()
}

/// Splits a received frame (without its length prefix) into id, code and body; `None` when it
/// is shorter than its header.
pub fn split(mut frame: Bytes) -> Option<(u64, u16, Bytes)> {
    if frame.len() < HEADER {
        return None;
    }
    let id = frame.get_u64();
    let code = frame.get_u16();
    Some((id, code, frame))
}

/// The codec that cuts a stream into frames (length prefix removed), refusing any longer than
/// [`MAX_FRAME`].
pub fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Turns on TCP keepalive for a stream's connection (both sides), so that a connection whose
/// other end vanished without closing it (a machine lost, a partition that outlived a restart)
/// is found dead within about half a minute even while nothing is sent on it.
pub fn keep_alive(tcp: &tokio::net::TcpStream) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(10))
        .with_interval(std::time::Duration::from_secs(5))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&probes) {
        tracing::debug!(error = %e, "TCP keepalive not set on a peer stream");
    }
}

/// Writes `bytes` and flushes them: a no-op on TCP, and what sends a TLS stream's buffered
/// records.
pub async fn write_out(
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    out.write_all(bytes).await?;
    out.flush().await
}

/// A connection split into a read half and a write half, for the reader and the writer task: a
/// TCP socket into its own halves, which share no lock, a TLS stream (one state for both
/// directions) through `tokio::io::split`.
pub trait IntoHalves: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn into_halves(self) -> (Self::Read, Self::Write);
}

impl IntoHalves for tokio::net::TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

macro_rules! tls_halves {
    ($stream:ty) => {
        impl<IO> IntoHalves for $stream
        where
            IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        {
            type Read = tokio::io::ReadHalf<Self>;
            type Write = tokio::io::WriteHalf<Self>;
            fn into_halves(self) -> (Self::Read, Self::Write) {
                tokio::io::split(self)
            }
        }
    };
}
tls_halves!(tokio_rustls::server::TlsStream<IO>);
tls_halves!(tokio_rustls::client::TlsStream<IO>);

/// Frames whose bytes are gathered into one write when several are queued.
const COALESCE_BYTES: usize = 64 * 1024;

/// A frame queued for a stream's writer.
#[derive(Debug)]
pub struct Outgoing {
    pub frame: Bytes,
    /// Whether the frame may wait for the tasks runnable now before it is written (see
    /// [`write_frames`]).
    pub defer: bool,
}

impl Outgoing {
    /// A frame of `rpc`, or answering one: forwarded writes, and their answers, may wait (a
    /// write waits for a group commit's `fdatasync` anyway); Raft's messages and ReadIndex
    /// rounds go at once.
    pub fn of(rpc: Option<Rpc>, frame: Bytes) -> Self {
        Outgoing {
            frame,
            defer: rpc == Some(Rpc::Write),
        }
    }
}

/// Writes the frames queued on `queue` to `out` until the queue's senders are all gone or
/// `closed` is cancelled, gathering the frames queued meanwhile into one write. Cancels
/// `closed` when it stops, so the connection's reader stops too.
///
/// A task that queues a frame wakes the writer, and the runtime runs a woken task next: a
/// frame queued alone would leave in a write of its own while the tasks about to queue the
/// next ones are still waiting to run (the answers to one group commit's forwarded writes, the
/// writes a follower's connections forward). A deferrable frame found alone therefore waits
/// once for the tasks runnable now, then leaves with whatever they queued.
pub async fn write_frames(
    mut queue: tokio::sync::mpsc::Receiver<Outgoing>,
    mut out: impl tokio::io::AsyncWrite + Unpin,
    closed: tokio_util::sync::CancellationToken,
) {
    use tokio::io::AsyncWriteExt;
    let mut batch = BytesMut::new();
    loop {
        let first = tokio::select! {
            biased;
            f = queue.recv() => match f {
                Some(f) => f,
                None => break,
            },
            _ = closed.cancelled() => break,
        };
        if first.defer && queue.is_empty() {
            tokio::task::yield_now().await;
        }
        let written = match queue.try_recv() {
            // The common case under light load: one frame, written without a copy.
            Err(_) => write_out(&mut out, &first.frame).await,
            Ok(second) => {
                batch.clear();
                batch.extend_from_slice(&first.frame);
                batch.extend_from_slice(&second.frame);
                while batch.len() < COALESCE_BYTES {
                    match queue.try_recv() {
                        Ok(f) => batch.extend_from_slice(&f.frame),
                        Err(_) => break,
                    }
                }
                write_out(&mut out, &batch).await
            }
        };
        if written.is_err() {
            break;
        }
    }
    let _ = out.shutdown().await;
    closed.cancel();
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use futures::StreamExt;
    use tokio::sync::{mpsc, Semaphore};
    use tokio_util::codec::FramedRead;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A connection that records every write it is given.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<Vec<u8>>>>);

    impl tokio::io::AsyncWrite for Recorded {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Forwarded writes queued by tasks that became runnable together (a follower's connections
    /// forwarding, or the answers to one group commit) leave in one write, each frame whole.
    /// The runtime is a member's: one worker thread, which runs a task woken by
    /// the running one next, so without the wait each frame left alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn forwarded_writes_queued_together_leave_together() {
        const TASKS: u64 = 16;
        let conn = Recorded::default();
        let (queue, frames) = mpsc::channel(64);
        let writer = tokio::spawn(write_frames(frames, conn.clone(), CancellationToken::new()));
        let go = Arc::new(Semaphore::new(0));
        let mut tasks = Vec::new();
        for id in 0..TASKS {
            let (queue, go) = (queue.clone(), go.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = go.acquire().await.unwrap();
                let frame = frame(id, Rpc::Write as u16, b"session");
                queue
                    .send(Outgoing::of(Some(Rpc::Write), frame))
                    .await
                    .unwrap();
            }));
        }
        drop(queue);
        // Every task waits for its permit; then one task on the worker wakes them all.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tokio::spawn(async move { go.add_permits(TASKS as usize) })
            .await
            .unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        writer.await.unwrap();
        let writes = conn.0.lock().unwrap().clone();
        assert!(
            writes.len() <= 2,
            "{} writes for {TASKS} frames",
            writes.len()
        );
        let bytes = writes.concat();
        let mut read = FramedRead::new(&bytes[..], codec());
        let mut ids = Vec::new();
        while let Some(f) = read.next().await {
            let (id, code, body) = split(f.unwrap().freeze()).unwrap();
            assert_eq!((code, &body[..]), (Rpc::Write as u16, &b"session"[..]));
            ids.push(id);
        }
        assert_eq!(ids.len() as u64, TASKS);
    }

    /// Raft's messages and ReadIndex rounds are not held back, and neither is an answer to
    /// anything but a forwarded write.
    #[test]
    fn only_forwarded_writes_wait() {
        for rpc in [
            Rpc::Append,
            Rpc::Vote,
            Rpc::Snapshot,
            Rpc::ReadIndex,
            Rpc::Lookup,
        ] {
            assert!(!Outgoing::of(Some(rpc), Bytes::new()).defer, "{rpc:?}");
        }
        assert!(!Outgoing::of(None, Bytes::new()).defer);
        assert!(Outgoing::of(Some(Rpc::Write), Bytes::new()).defer);
    }

    #[tokio::test]
    async fn frames_written_back_to_back_are_read_whole_and_in_order() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&frame(7, Rpc::Append as u16, b"abc"));
        bytes.extend_from_slice(&frame(8, OK, b""));
        bytes.extend_from_slice(&frame(u64::MAX, 503, &[9; 70_000]));
        let mut read = FramedRead::new(&bytes[..], codec());
        let mut got = Vec::new();
        while let Some(f) = read.next().await {
            got.push(split(f.unwrap().freeze()).unwrap());
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (7, 1, Bytes::from_static(b"abc")));
        assert_eq!(got[1], (8, 200, Bytes::new()));
        assert_eq!(
            (got[2].0, got[2].1, got[2].2.len()),
            (u64::MAX, 503, 70_000)
        );
    }

    #[tokio::test]
    async fn a_frame_longer_than_the_limit_is_an_error_not_an_allocation() {
        let mut bytes = Vec::new();
        bytes.put_u32(u32::MAX);
        bytes.extend_from_slice(&[0; 64]);
        let mut read = FramedRead::new(&bytes[..], codec());
        assert!(read.next().await.unwrap().is_err());
    }

    #[test]
    fn a_frame_shorter_than_its_header_does_not_split() {
        assert!(split(Bytes::from_static(&[0; HEADER - 1])).is_none());
    }

    #[test]
    fn every_rpc_round_trips_through_its_code_and_no_other_code_is_one() {
        for rpc in [
            Rpc::Append,
            Rpc::Vote,
            Rpc::Snapshot,
            Rpc::Write,
            Rpc::ReadIndex,
            Rpc::Lookup,
            Rpc::TimeoutNow,
        ] {
            assert_eq!(Rpc::from_code(rpc as u16), Some(rpc));
        }
        assert_eq!(Rpc::from_code(0), None);
        assert_eq!(Rpc::from_code(HELLO), None);
        assert_eq!(Rpc::from_code(OK), None);
    }

    #[test]
    fn the_preface_is_not_the_start_of_an_http_request() {
        assert_eq!(PREFACE[0], 0);
    }
}
