//! The receiving thread: one libzmq SUB socket connected to the bus's XPUB, a monitor on it for
//! connection state, and the loop that decodes messages and hands events to the async side.
//!
//! libzmq does the hard parts on its own I/O thread: ZMTP 3.1 heartbeats (answering the Java
//! bus's PING, which the pure-Rust `zeromq` crate cannot), reconnecting after the bus restarts,
//! and re-sending our subscription. The one gap, a connection libzmq abandons after a protocol
//! error, is closed here (`STALLED_AFTER`). This thread must never block without a timeout, so
//! it notices shutdown within one poll interval; zmq sockets are not `Sync` and stay on it.

use std::collections::HashSet;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{error::TrySendError, Sender};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, trace, warn};
use zmq::SocketEvent;

use super::sockets::{Limits, Sockets, CONNECT_TIMEOUT_MS, RECONNECT_IVL_MAX_MS};
use super::{decode, Decoded, EventBusSettings, EventMetrics, Received, RecentIds};

/// How long one poll waits: the worst-case delay before shutdown is noticed.
const POLL_TIMEOUT_MS: i64 = 200;
/// libzmq 4.3.4 gives a connection up for good after a protocol error (an oversized frame, a
/// peer that is not ZMTP; `session_base_t::engine_error`) instead of reconnecting. While
/// disconnected, a live reconnect loop produces a monitor event at least every
/// `RECONNECT_IVL_MAX_MS` + `CONNECT_TIMEOUT_MS`; silence longer than this means nobody is
/// retrying, and we re-connect the endpoint ourselves.
const STALLED_AFTER: Duration = Duration::from_secs(15);
const _: () = assert!(
    STALLED_AFTER.as_millis() > (RECONNECT_IVL_MAX_MS + CONNECT_TIMEOUT_MS) as u128,
    "a live reconnect loop must never look stalled"
);
/// Messages handled per poll wake-up before shutdown and the monitor are looked at again.
const BATCH: usize = 256;
/// How often a full event channel is retried.
const CHANNEL_RETRY: Duration = Duration::from_millis(20);

/// Spawns the subscriber thread. It runs until `shutdown` is cancelled or `tx`'s receiver is
/// dropped; connection problems never end it (it keeps reconnecting), only an unusable endpoint
/// does, which is logged at error.
///
/// Each event is sent with the value `mark` holds when the event is decoded ([`Received`]):
/// read here, on the receiving thread, so that neither a full channel nor a slow consumer
/// makes an event look newer than it is.
pub fn spawn_subscriber(
    settings: EventBusSettings,
    tx: Sender<Received>,
    mark: watch::Receiver<u64>,
    shutdown: CancellationToken,
    metrics: EventMetrics,
) -> JoinHandle<()> {
    // Created here so it is a child of the caller's span (the member's node_id).
    let span = tracing::info_span!("event_bus", endpoint = %settings.publish_events);
    std::thread::Builder::new()
        .name("gridraft-event-bus".into())
        .spawn(move || {
            let _entered = span.enter();
            run(settings, tx, mark, shutdown, metrics);
        })
        .expect("the OS can start one more thread at startup")
}

fn run(
    settings: EventBusSettings,
    tx: Sender<Received>,
    mark: watch::Receiver<u64>,
    shutdown: CancellationToken,
    metrics: EventMetrics,
) {
    let context = zmq::Context::new();
    let limits = Limits {
        max_frame_bytes: settings.max_frame_bytes,
        receive_hwm: settings.receive_hwm,
    };
    let sockets = match Sockets::open(&context, &settings.publish_events, limits) {
        Ok(sockets) => sockets,
        Err(error) => {
            error!(%error, "event bus subscriber failed to start");
            return;
        }
    };
    info!(
        subscribe_events = ?settings.subscribe_events,
        max_frame_bytes = settings.max_frame_bytes,
        receive_hwm = settings.receive_hwm,
        "event bus subscriber started"
    );
    let mut receiver = Receiver {
        secret: settings.registration_secret,
        tx,
        mark,
        shutdown,
        metrics,
        seen: RecentIds::default(),
        logged: HashSet::new(),
        connected: false,
        ever_connected: false,
        last_socket_event: Instant::now(),
    };
    receiver.run(&sockets);
    receiver.metrics.set_connected(false);
    info!("event bus subscriber stopped");
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Everything the receive loop keeps between messages.
struct Receiver {
    secret: String,
    tx: Sender<Received>,
    mark: watch::Receiver<u64>,
    shutdown: CancellationToken,
    metrics: EventMetrics,
    seen: RecentIds,
    /// Kinds of trouble already logged at warn; repeats go to debug so a misconfigured
    /// publisher cannot flood the log.
    logged: HashSet<&'static str>,
    connected: bool,
    ever_connected: bool,
    /// When the monitor last reported anything; see `STALLED_AFTER`.
    last_socket_event: Instant,
}

impl Receiver {
    fn run(&mut self, sockets: &Sockets) {
        while !self.shutdown.is_cancelled() {
            let (message_ready, monitor_ready) = match sockets.poll(POLL_TIMEOUT_MS) {
                Ok(ready) => ready,
                Err(zmq::Error::EINTR) => continue,
                Err(error) => {
                    error!(%error, "event bus poll failed");
                    return;
                }
            };
            if monitor_ready {
                self.drain_monitor(sockets);
            }
            if message_ready && self.drain_messages(sockets) == Flow::Stop {
                return;
            }
            self.rescue_if_stalled(sockets);
        }
    }

    /// Re-connects when libzmq has stopped trying (see `STALLED_AFTER`).
    fn rescue_if_stalled(&mut self, sockets: &Sockets) {
        if self.connected || self.last_socket_event.elapsed() < STALLED_AFTER {
            return;
        }
        self.last_socket_event = Instant::now();
        if self.first_time("stalled") {
            warn!("event bus connection abandoned by libzmq, reconnecting");
        } else {
            debug!("event bus connection abandoned by libzmq, reconnecting");
        }
        if let Err(error) = sockets.reconnect() {
            if self.first_time("reconnect") {
                warn!(%error, "event bus reconnect failed");
            } else {
                debug!(%error, "event bus reconnect failed");
            }
        }
    }

    fn drain_messages(&mut self, sockets: &Sockets) -> Flow {
        for _ in 0..BATCH {
            let frames = match sockets.recv_message() {
                Ok(Some(frames)) => frames,
                Ok(None) => break,
                Err(error) => {
                    if self.first_time("recv") {
                        warn!(%error, "event bus receive failed");
                    } else {
                        debug!(%error, "event bus receive failed");
                    }
                    break;
                }
            };
            let decoded = decode(&frames, &self.secret, &mut self.seen);
            self.metrics.record(&decoded);
            match decoded {
                Decoded::Event(event) => {
                    let mark = *self.mark.borrow();
                    debug!(event = event.name(), event_id = %event.event_id(), mark, "event received");
                    if self.forward(Received { event, mark }) == Flow::Stop {
                        return Flow::Stop;
                    }
                }
                Decoded::Ignored(kind) => trace!(kind, "event ignored"),
                Decoded::Duplicate(event_id) => debug!(%event_id, "duplicate event dropped"),
                Decoded::Rejected(rejection) => {
                    let (kind, name) = (rejection.kind(), frame_name(&frames));
                    if self.first_time(kind) {
                        warn!(kind, %rejection, event = ?name, "event bus message rejected; repeats of this kind at debug");
                    } else {
                        debug!(kind, %rejection, event = ?name, "event bus message rejected");
                    }
                }
            }
        }
        Flow::Continue
    }

    /// Hands one event to the async side. Waits while the channel is full (libzmq buffers
    /// meanwhile) rather than dropping it, but gives up on shutdown.
    fn forward(&mut self, mut event: Received) -> Flow {
        loop {
            match self.tx.try_send(event) {
                Ok(()) => return Flow::Continue,
                Err(TrySendError::Closed(_)) => {
                    if !self.shutdown.is_cancelled() {
                        warn!("event channel closed, subscriber stopping");
                    }
                    return Flow::Stop;
                }
                Err(TrySendError::Full(back)) => {
                    if self.shutdown.is_cancelled() {
                        return Flow::Stop;
                    }
                    if self.first_time("channel_full") {
                        warn!("event channel full, waiting");
                    }
                    event = back;
                    std::thread::sleep(CHANNEL_RETRY);
                }
            }
        }
    }

    fn drain_monitor(&mut self, sockets: &Sockets) {
        loop {
            match sockets.next_socket_event() {
                Ok(Some(event)) => self.on_socket_event(event),
                Ok(None) => return,
                Err(error) => {
                    debug!(%error, "event bus monitor read failed");
                    return;
                }
            }
        }
    }

    fn on_socket_event(&mut self, event: u16) {
        self.last_socket_event = Instant::now();
        if event == SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
            self.set_connected(true);
        } else if event == SocketEvent::DISCONNECTED.to_raw() {
            self.set_connected(false);
        } else if event == SocketEvent::CONNECTED.to_raw()
            || event == SocketEvent::CONNECT_DELAYED.to_raw()
        {
            trace!(event, "event bus connecting");
        } else if event == SocketEvent::CONNECT_RETRIED.to_raw() {
            if !self.ever_connected && self.first_time("unreachable") {
                warn!("event bus not reachable yet, retrying");
            }
            trace!("event bus connect retried");
        } else {
            if self.first_time("handshake") {
                warn!(event, "event bus handshake failed");
            } else {
                debug!(event, "event bus handshake failed");
            }
        }
    }

    fn set_connected(&mut self, connected: bool) {
        if connected == self.connected {
            return;
        }
        self.connected = connected;
        self.metrics.set_connected(connected);
        if connected {
            if self.ever_connected {
                self.metrics.count_reconnect();
            }
            self.ever_connected = true;
            info!(
                reconnects = self.metrics.reconnects(),
                "event bus connected"
            );
        } else {
            warn!("event bus disconnected");
        }
    }

    /// True the first time a kind of trouble is seen: log it at warn then, at debug after.
    fn first_time(&mut self, kind: &'static str) -> bool {
        self.logged.insert(kind)
    }
}

/// Frame 1 for log lines: lossy, escaped by `?`, and short, since it is untrusted input.
fn frame_name(frames: &[Vec<u8>]) -> String {
    frames
        .first()
        .map(|name| String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned())
        .unwrap_or_default()
}
