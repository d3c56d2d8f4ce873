//! The two libzmq sockets of one subscriber: the SUB connected to the bus's XPUB with every
//! option that matters (heartbeats, reconnect, frame size, receive high-water mark), and the
//! PAIR reading its monitor. Owns socket setup and raw reads; it knows nothing about Selenium's
//! message format.
//!
//! The two limits bound what a hostile or broken publisher can make a member hold: libzmq
//! drops a connection that sends a frame over `max_frame_bytes` before buffering it (and then
//! abandons it: see the subscriber's `STALLED_AFTER`), and stops reading from the bus once
//! `receive_hwm` messages wait for us, so at most about `receive_hwm` × 4 × `max_frame_bytes`
//! is queued.

use zmq::SocketEvent;
/// Our own PINGs: they keep the Java bus's 180 s timeout satisfied and let us notice a bus that
/// vanished without closing TCP (power loss, partition) within the timeout.
const HEARTBEAT_IVL_MS: i32 = 10_000;
const HEARTBEAT_TIMEOUT_MS: i32 = 30_000;
/// Tells the bus to drop us if it hears nothing for this long (sent in our PINGs).
const HEARTBEAT_TTL_MS: i32 = 60_000;
/// Reconnect quickly after a bus restart, backing off to 5 s during a long outage.
const RECONNECT_IVL_MS: i32 = 100;
pub(super) const RECONNECT_IVL_MAX_MS: i32 = 5_000;
/// Bounds a TCP connect to a silent address, so a retry (and a monitor event) follows.
pub(super) const CONNECT_TIMEOUT_MS: i32 = 5_000;
const MONITOR_ENDPOINT: &str = "inproc://gridraft-event-bus-monitor";

/// Why the subscriber could not start; logged once, then the thread ends.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    #[error("endpoint {0:?} contains a nul byte")]
    NulInEndpoint(String),
    #[error("{step}: {source}")]
    Zmq {
        step: &'static str,
        source: zmq::Error,
    },
}

fn zmq_step(step: &'static str) -> impl FnOnce(zmq::Error) -> StartError {
    move |source| StartError::Zmq { step, source }
}

/// The limits applied to the SUB socket (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_frame_bytes: usize,
    pub(super) receive_hwm: u32,
}

/// The SUB socket and the PAIR socket reading its monitor events.
pub(super) struct Sockets {
    sub: zmq::Socket,
    monitor: zmq::Socket,
    endpoint: String,
}

impl Sockets {
    pub(super) fn open(
        context: &zmq::Context,
        endpoint: &str,
        limits: Limits,
    ) -> Result<Self, StartError> {
        // The zmq crate unwraps a CString conversion; refuse such input before it can panic.
        if endpoint.contains('\0') {
            return Err(StartError::NulInEndpoint(endpoint.to_owned()));
        }
        let sub = context.socket(zmq::SUB).map_err(zmq_step("create sub"))?;
        sub.set_linger(0).map_err(zmq_step("set linger"))?;
        // Settings validation keeps both within libzmq's types; saturate rather than wrap.
        sub.set_maxmsgsize(i64::try_from(limits.max_frame_bytes).unwrap_or(i64::MAX))
            .map_err(zmq_step("set maxmsgsize"))?;
        sub.set_rcvhwm(i32::try_from(limits.receive_hwm).unwrap_or(i32::MAX))
            .map_err(zmq_step("set rcvhwm"))?;
        sub.set_heartbeat_ivl(HEARTBEAT_IVL_MS)
            .map_err(zmq_step("set heartbeat ivl"))?;
        sub.set_heartbeat_timeout(HEARTBEAT_TIMEOUT_MS)
            .map_err(zmq_step("set heartbeat timeout"))?;
        sub.set_heartbeat_ttl(HEARTBEAT_TTL_MS)
            .map_err(zmq_step("set heartbeat ttl"))?;
        sub.set_reconnect_ivl(RECONNECT_IVL_MS)
            .map_err(zmq_step("set reconnect ivl"))?;
        sub.set_reconnect_ivl_max(RECONNECT_IVL_MAX_MS)
            .map_err(zmq_step("set reconnect ivl max"))?;
        sub.set_connect_timeout(CONNECT_TIMEOUT_MS)
            .map_err(zmq_step("set connect timeout"))?;
        sub.set_subscribe(b"").map_err(zmq_step("subscribe"))?;
        // The monitor is attached before connecting so the first handshake is seen too.
        let wanted = [
            SocketEvent::HANDSHAKE_SUCCEEDED,
            SocketEvent::DISCONNECTED,
            SocketEvent::CONNECTED,
            SocketEvent::CONNECT_DELAYED,
            SocketEvent::CONNECT_RETRIED,
            SocketEvent::HANDSHAKE_FAILED_NO_DETAIL,
            SocketEvent::HANDSHAKE_FAILED_PROTOCOL,
            SocketEvent::HANDSHAKE_FAILED_AUTH,
        ];
        let mask = wanted
            .iter()
            .fold(0, |mask, e| mask | i32::from(e.to_raw()));
        sub.monitor(MONITOR_ENDPOINT, mask)
            .map_err(zmq_step("monitor"))?;
        let monitor = context.socket(zmq::PAIR).map_err(zmq_step("create pair"))?;
        monitor.set_linger(0).map_err(zmq_step("set linger"))?;
        monitor
            .connect(MONITOR_ENDPOINT)
            .map_err(zmq_step("connect monitor"))?;
        sub.connect(endpoint).map_err(zmq_step("connect"))?;
        Ok(Self {
            sub,
            monitor,
            endpoint: endpoint.to_owned(),
        })
    }

    /// Waits up to `timeout_ms` for input; returns (message ready, monitor event ready).
    pub(super) fn poll(&self, timeout_ms: i64) -> Result<(bool, bool), zmq::Error> {
        let mut items = [
            self.sub.as_poll_item(zmq::POLLIN),
            self.monitor.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, timeout_ms)?;
        Ok((items[0].is_readable(), items[1].is_readable()))
    }

    /// The next monitor event id, without waiting; `None` when none is queued.
    pub(super) fn next_socket_event(&self) -> Result<Option<u16>, zmq::Error> {
        loop {
            let frames = match self.monitor.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return Ok(None),
                Err(error) => return Err(error),
            };
            // Frame 1 is a native-endian u16 event id then a u32 value; frame 2 the endpoint.
            // Parsed by hand: `zmq::SocketEvent::from_raw` panics on ids it does not know.
            let head = frames.first().and_then(|head| head.get(0..2));
            if let Some(id) = head.and_then(|bytes| <[u8; 2]>::try_from(bytes).ok()) {
                return Ok(Some(u16::from_ne_bytes(id)));
            }
        }
    }

    /// Drops whatever libzmq still holds for the endpoint and connects afresh.
    pub(super) fn reconnect(&self) -> Result<(), zmq::Error> {
        // ENOENT here just means libzmq already forgot the endpoint.
        let _ = self.sub.disconnect(&self.endpoint);
        self.sub.connect(&self.endpoint)
    }

    /// Receives one whole multipart message without waiting, or `None` if none is queued.
    pub(super) fn recv_message(&self) -> Result<Option<Vec<Vec<u8>>>, zmq::Error> {
        let mut part = zmq::Message::new();
        match self.sub.recv(&mut part, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(error) => return Err(error),
        }
        let mut frames = vec![part.to_vec()];
        // The rest of a multipart message is delivered atomically, so these reads do not block.
        while part.get_more() {
            self.sub.recv(&mut part, 0)?;
            // Only the count of frames past the fourth matters (the message is rejected); don't
            // keep their bytes.
            frames.push(if frames.len() < 4 {
                part.to_vec()
            } else {
                Vec::new()
            });
        }
        Ok(Some(frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sub_socket_gets_the_configured_limits() {
        let context = zmq::Context::new();
        let limits = Limits {
            max_frame_bytes: 65_536,
            receive_hwm: 17,
        };
        // Nothing listens there; the socket keeps retrying, which does not matter here.
        let sockets = Sockets::open(&context, "tcp://127.0.0.1:1", limits).unwrap();
        assert_eq!(sockets.sub.get_maxmsgsize().unwrap(), 65_536);
        assert_eq!(sockets.sub.get_rcvhwm().unwrap(), 17);
    }
}
