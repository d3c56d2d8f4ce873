//! Raft RPC between members: bincode bodies to the peer port through the member's
//! [`PeerClient`] (a peer stream, or HTTP to a member of an earlier version), authenticated with
//! the cluster secret. The receiving side is `api::peer`.
//!
//! The peer port refuses a body over its limit (256 MiB) with 413. A leader's requests stay far
//! below it: an `AppendEntries` carries at most 1 MiB of entries or one entry
//! (`log_store::MAX_APPEND_BYTES`), an entry is at most the log's record limit (64 MiB,
//! `segment_log::MAX_RECORD`), and a snapshot goes in chunks of openraft's 3 MiB. A 413 all the
//! same (a peer with a smaller limit) is openraft's payload-too-large for an `AppendEntries` of
//! several entries, so that replication sends half as many; it is a plain error otherwise, as
//! retrying an unsplittable request at once (what openraft does with payload-too-large) would
//! loop without a pause.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{MemberId, TypeConfig};
use crate::peer::wire::Rpc;
use crate::peer::PeerClient;
use crate::telemetry::repeat::{RepeatState, REPEAT_EVERY};

/// Paths of the Raft RPC routes on the peer port (HTTP).
pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";

/// When each other member was last heard from (a Raft RPC it sent here, or its answer to one
/// sent from here), and whether requests to it are failing. Readiness uses the first to tell an
/// election among members that still see each other from a member cut off from the rest; the
/// ReadIndex rounds and the replication backoff use the second to stop sending to members that
/// cannot answer.
#[derive(Debug, Default)]
pub struct Contacts {
    peers: Mutex<HashMap<MemberId, Peer>>,
}

#[derive(Debug, Default)]
struct Peer {
    heard: Option<Instant>,
    /// The current run of failed requests to it (empty once it answers or calls).
    failures: RepeatState,
    /// Its connection was refused, or it has not answered [`TIMEOUTS_BEFORE_UNREACHABLE`]
    /// requests in a row: it is down or cut off, not merely slow.
    unreachable: bool,
}

impl Contacts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MemberId, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `id` answered a request or sent one: it is reachable.
    pub fn note(&self, id: MemberId) {
        let recovered = {
            let mut peers = self.lock();
            let peer = peers.entry(id).or_default();
            peer.heard = Some(Instant::now());
            peer.unreachable = false;
            peer.failures.succeeded()
        };
        if let Some(failures) = recovered {
            tracing::info!(peer = id, failures, "peer reachable again");
        }
    }

    /// A request to `id` failed without an answer (`refused`: its connection was refused).
    /// Returns whether `id` now counts as unreachable. Logged once and then every
    /// [`REPEAT_EVERY`] with a count, whatever the retry rate.
    pub fn failed(&self, id: MemberId, refused: bool, error: &str) -> bool {
        let (report, unreachable) = {
            let mut peers = self.lock();
            let peer = peers.entry(id).or_default();
            let report = peer.failures.failed(Instant::now(), REPEAT_EVERY);
            peer.unreachable |= refused || peer.failures.run() >= TIMEOUTS_BEFORE_UNREACHABLE;
            (report, peer.unreachable)
        };
        if let Some(failures) = report {
            tracing::warn!(peer = id, failures, error, "request to peer failed");
        }
        unreachable
    }

    /// How many of `members` were heard from within `window`.
    pub fn heard_within(
        &self,
        members: impl IntoIterator<Item = MemberId>,
        window: Duration,
    ) -> usize {
        let peers = self.lock();
        members
            .into_iter()
            .filter(|id| {
                peers
                    .get(id)
                    .and_then(|p| p.heard)
                    .is_some_and(|t| t.elapsed() <= window)
            })
            .count()
    }

    /// How many of `members` are unreachable: their connection was refused, or they have not
    /// answered several requests in a row, and they have not been heard from since.
    pub fn unreachable(&self, members: impl IntoIterator<Item = MemberId>) -> usize {
        let peers = self.lock();
        members
            .into_iter()
            .filter(|id| peers.get(id).is_some_and(|p| p.unreachable))
            .count()
    }

    /// Whether the members known here that answer, with this one, fall short of a majority of
    /// them all (used only to pick a backoff: the membership itself is openraft's).
    fn quorum_failing(&self) -> bool {
        let peers = self.lock();
        let failing = peers.values().filter(|p| p.unreachable).count();
        let reachable = peers.len() - failing;
        !peers.is_empty() && (reachable + 1) * 2 <= peers.len() + 1
    }
}

/// Test hook: peer addresses this member's outbound requests treat as unreachable, as
/// openraft's test router does with `set_unreachable`. A request to one of them fails at once,
/// as if its connection were refused: Raft RPCs here, and write forwarding, ReadIndex, lookups
/// and admin calls in `peer::client`. Empty, and so without effect, unless a test fills it
/// (through `member::Member::network_faults`); a partition is both sides marking each other.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct NetworkFaults {
    unreachable: Arc<RwLock<HashSet<String>>>,
}

impl NetworkFaults {
    /// Makes requests from this member to the peer address `addr` fail (`on`) or go out again.
    pub fn set_unreachable(&self, addr: &str, on: bool) {
        let mut set = self.unreachable.write().unwrap_or_else(|e| e.into_inner());
        if on {
            set.insert(addr.to_owned());
        } else {
            set.remove(addr);
        }
    }

    /// Whether requests to `addr` are to fail as refused.
    pub fn is_unreachable(&self, addr: &str) -> bool {
        let set = self.unreachable.read().unwrap_or_else(|e| e.into_inner());
        !set.is_empty() && set.contains(addr)
    }
}

/// How long replication to an unreachable member waits between attempts: doubling from
/// `first`, up to `cap` while this member still reaches a quorum and up to `cap_alone` while it
/// does not. Reset by openraft on the first successful request.
///
/// The short cap keeps a member that comes back from campaigning before the leader's next
/// attempt reaches it (its election timer starts when it starts; `cap` is the lowest election
/// timeout). Without a quorum there is nothing to protect and every attempt is logged by
/// openraft, so the attempts thin out, doubling from `cap` for as long as no quorum answers, to
/// one per `cap_alone`. The thinning starts over from `cap` each time the quorum answers again:
/// a moment without one (the last other member missing a few heartbeats under load) costs one
/// wait of `cap`, not a minute-long pause in reaching a member that is about to come back.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    pub first: Duration,
    pub cap: Duration,
    pub cap_alone: Duration,
}

/// The longest wait between replication attempts to a member while this one has no quorum.
pub const RETRY_CAP_WITHOUT_QUORUM: Duration = Duration::from_secs(60);

struct RetryDelays {
    next: Duration,
    settings: RetrySettings,
    contacts: Arc<Contacts>,
}

impl RetryDelays {
    fn new(settings: RetrySettings, contacts: Arc<Contacts>) -> Self {
        RetryDelays {
            next: settings.first,
            settings,
            contacts,
        }
    }
}

impl Iterator for RetryDelays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let RetrySettings { cap, cap_alone, .. } = self.settings;
        if self.contacts.quorum_failing() {
            let delay = self.next.max(cap).min(cap_alone);
            self.next = (delay * 2).min(cap_alone);
            Some(delay)
        } else {
            let delay = self.next.min(cap);
            self.next = (delay * 2).min(cap);
            Some(delay)
        }
    }
}

/// Creates connections to other members. One [`PeerClient`] (and its streams) is shared with
/// write forwarding and ReadIndex.
#[derive(Clone)]
pub struct Network {
    peers: PeerClient,
    contacts: Arc<Contacts>,
    retry: RetrySettings,
}

impl Network {
    pub fn new(peers: PeerClient, contacts: Arc<Contacts>, retry: RetrySettings) -> Self {
        Network {
            peers,
            contacts,
            retry,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: MemberId, node: &BasicNode) -> Connection {
        Connection {
            peers: self.peers.clone(),
            addr: node.addr.clone(),
            target,
            contacts: self.contacts.clone(),
            retry: self.retry,
        }
    }
}

pub struct Connection {
    peers: PeerClient,
    addr: String,
    target: MemberId,
    contacts: Arc<Contacts>,
    retry: RetrySettings,
}

/// Failed requests in a row after which a member that does not answer in time counts as
/// unreachable (openraft then backs off instead of retrying at every heartbeat). One slow
/// answer under load is not that.
const TIMEOUTS_BEFORE_UNREACHABLE: u64 = 3;

type RpcResult<T, E> = Result<T, RPCError<MemberId, BasicNode, RaftError<MemberId, E>>>;

impl Connection {
    /// Sends `req`; `entries` is how many log entries it carries (an `AppendEntries`), which
    /// a 413 asks openraft to halve.
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        ttl: Duration,
        entries: Option<usize>,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // Below openraft's own deadline, so that a request that times out is seen here.
        let (status, bytes) = self
            .peers
            .exchange(&self.addr, rpc, body, ttl * 3 / 4)
            .await
            .map_err(|e| self.send_failed(&e.cause, e.refused))?;
        if status == 403 {
            // A member of another cluster (see `api::peer`): as good as absent, and backed off.
            return Err(self.send_failed("member of another cluster (403)", true));
        }
        self.contacts.note(self.target);
        if !(200..300).contains(&status) {
            let e = std::io::Error::other(format!(
                "peer answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
            if status == 413 {
                if let Some(n) = entries.filter(|n| *n > 1) {
                    let hint = PayloadTooLarge::new_entries_hint(n as u64 / 2);
                    return Err(RPCError::PayloadTooLarge(hint.with_source_error(&e)));
                }
            }
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let result: Result<Resp, RaftError<MemberId, E>> =
            bincode::deserialize(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Classifies a request that got no answer. Connection failures, and timeouts that keep
    /// repeating, are `Unreachable`: openraft then waits for [`RaftNetwork::backoff`] before the
    /// next attempt. The error text is short: openraft logs it at every attempt.
    fn send_failed<E: std::error::Error>(
        &self,
        cause: &str,
        refused: bool,
    ) -> RPCError<MemberId, BasicNode, E> {
        let error = std::io::Error::other(format!("peer {}: {cause}", self.addr));
        let unreachable = self
            .contacts
            .failed(self.target, refused, &error.to_string());
        if unreachable {
            RPCError::Unreachable(Unreachable::new(&error))
        } else {
            RPCError::Network(NetworkError::new(&error))
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<MemberId>, openraft::error::Infallible> {
        let entries = rpc.entries.len();
        self.call(Rpc::Append, &rpc, option.hard_ttl(), Some(entries))
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<MemberId>, InstallSnapshotError> {
        self.call(Rpc::Snapshot, &rpc, option.hard_ttl(), None)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<MemberId>, openraft::error::Infallible> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl(), None).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(RetryDelays::new(self.retry, self.contacts.clone()))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, Vote};

    use super::*;
    use crate::raft::{Entry, LogId};

    /// A peer whose every Raft route answers 413, as the peer port does past its body limit.
    async fn refusing_peer() -> Connection {
        refusing_http_peer(PeerClient::new(reqwest::Client::new(), Arc::from("secret"))).await
    }

    /// [`refusing_peer`] reached through `peers`. Its server is plain HTTP (hyper, through
    /// axum), as the peer port of a member of an earlier version is.
    async fn refusing_http_peer(peers: PeerClient) -> Connection {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let too_large = || async {
            (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "length limit exceeded",
            )
        };
        let app = axum::Router::new()
            .route(APPEND_PATH, axum::routing::post(too_large))
            .route(SNAPSHOT_PATH, axum::routing::post(too_large));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let retry = RetrySettings {
            first: Duration::from_millis(50),
            cap: Duration::from_millis(500),
            cap_alone: RETRY_CAP_WITHOUT_QUORUM,
        };
        let mut net = Network::new(peers, Arc::default(), retry);
        net.new_client(2, &BasicNode::new(addr.to_string())).await
    }

    fn append(n: u64) -> AppendEntriesRequest<TypeConfig> {
        let leader = CommittedLeaderId::new(1, 1);
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: (1..=n)
                .map(|i| Entry {
                    log_id: LogId::new(leader, i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: None,
        }
    }

    fn option() -> RPCOption {
        RPCOption::new(Duration::from_secs(10))
    }

    #[tokio::test]
    async fn a_413_for_several_entries_asks_openraft_to_send_fewer() {
        let mut conn = refusing_peer().await;
        match conn.append_entries(append(8), option()).await {
            Err(RPCError::PayloadTooLarge(e)) => assert_eq!(e.entries_hint(), 4),
            other => panic!("expected payload too large, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_413_for_one_entry_is_an_error_not_a_retry_at_once() {
        // openraft retries a payload-too-large at once, without a backoff: one entry cannot be
        // split, so asking for fewer would loop.
        let mut conn = refusing_peer().await;
        match conn.append_entries(append(1), option()).await {
            Err(RPCError::Network(e)) => assert!(e.to_string().contains("413"), "{e}"),
            other => panic!("expected a network error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_member_that_speaks_only_http_is_reached_over_http_by_a_client_with_streams() {
        let peers = PeerClient::new(reqwest::Client::new(), Arc::from("secret")).with_streams();
        let mut conn = refusing_http_peer(peers).await;
        for _ in 0..2 {
            match conn.append_entries(append(8), option()).await {
                Err(RPCError::PayloadTooLarge(e)) => assert_eq!(e.entries_hint(), 4),
                other => panic!("expected the HTTP route's 413, got {other:?}"),
            }
        }
        assert!(!conn.peers.stream_open(&conn.addr));
    }

    #[tokio::test]
    async fn a_peer_marked_unreachable_is_refused_at_once_until_cleared() {
        // A peer that would answer every request (413), so only the fault can refuse.
        let mut conn = refusing_peer().await;
        let faults = NetworkFaults::default();
        conn.peers = conn.peers.clone().with_faults(faults.clone());
        faults.set_unreachable(&conn.addr, true);
        let started = Instant::now();
        match conn.append_entries(append(1), option()).await {
            Err(RPCError::Unreachable(e)) => assert!(e.to_string().contains("refused"), "{e}"),
            other => panic!("expected unreachable, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(conn.contacts.unreachable([2]), 1);
        faults.set_unreachable(&conn.addr, false);
        match conn.append_entries(append(1), option()).await {
            Err(RPCError::Network(e)) => assert!(e.to_string().contains("413"), "{e}"),
            other => panic!("expected the peer's 413, got {other:?}"),
        }
    }

    #[test]
    fn a_moment_without_a_quorum_does_not_put_off_a_long_unreachable_member_for_a_minute() {
        let contacts = Arc::new(Contacts::default());
        let settings = RetrySettings {
            first: Duration::from_millis(50),
            cap: Duration::from_millis(500),
            cap_alone: RETRY_CAP_WITHOUT_QUORUM,
        };
        let mut delays = RetryDelays::new(settings, contacts.clone());
        // Member 2 is down for a long run of attempts; member 3 answers.
        contacts.failed(2, true, "refused");
        contacts.note(3);
        for _ in 0..40 {
            assert!(delays.next().unwrap() <= settings.cap);
        }
        // Member 3 misses a few heartbeats under load: for a moment no quorum answers.
        for _ in 0..TIMEOUTS_BEFORE_UNREACHABLE {
            contacts.failed(3, false, "timed out");
        }
        assert!(contacts.quorum_failing());
        let delay = delays.next().unwrap();
        assert!(
            delay <= settings.cap * 2,
            "one attempt at a moment without a quorum waits {delay:?}"
        );
        // While the quorum stays lost, the attempts thin out to one per `cap_alone`.
        let alone: Vec<Duration> = (0..20).map(|_| delays.next().unwrap()).collect();
        assert!(alone.windows(2).all(|w| w[0] <= w[1]), "{alone:?}");
        assert_eq!(*alone.last().unwrap(), settings.cap_alone);
        // Member 3 answers again: back to the short cap at once.
        contacts.note(3);
        assert!(delays.next().unwrap() <= settings.cap);
    }
}
