//! Raft RPC between members: bincode bodies over HTTP to the peer port, authenticated with the
//! cluster secret. The receiving side is `api::peer`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{NodeId, TypeConfig};
use crate::telemetry::repeat::{RepeatState, REPEAT_EVERY};

/// Paths of the Raft RPC routes on the peer port.
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
    peers: Mutex<HashMap<NodeId, Peer>>,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `id` answered a request or sent one: it is reachable.
    pub fn note(&self, id: NodeId) {
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
    pub fn failed(&self, id: NodeId, refused: bool, error: &str) -> bool {
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
        members: impl IntoIterator<Item = NodeId>,
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
    pub fn unreachable(&self, members: impl IntoIterator<Item = NodeId>) -> usize {
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

/// How long replication to an unreachable member waits between attempts: doubling from
/// `first`, up to `cap` while this member still reaches a quorum and up to `cap_alone` while it
/// does not. Reset by openraft on the first successful request.
///
/// The short cap keeps a member that comes back from campaigning before the leader's next
/// attempt reaches it (its election timer starts when it starts; `cap` is the lowest election
/// timeout). Without a quorum there is nothing to protect and every attempt is logged by
/// openraft, so the attempts thin out to one per `cap_alone`.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    pub first: Duration,
    pub cap: Duration,
    pub cap_alone: Duration,
}

/// The longest wait between replication attempts to a member while this one has no quorum.
pub const RETRY_CAP_WITHOUT_QUORUM: Duration = Duration::from_secs(5);

struct RetryDelays {
    next: Duration,
    settings: RetrySettings,
    contacts: Arc<Contacts>,
}

impl Iterator for RetryDelays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let cap = if self.contacts.quorum_failing() {
            self.settings.cap_alone
        } else {
            self.settings.cap
        };
        let delay = self.next.min(cap);
        self.next = (self.next * 2).min(self.settings.cap.max(self.settings.cap_alone));
        Some(delay)
    }
}

/// Creates connections to other members. One HTTP client (and connection pool) is shared.
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
    secret: Arc<str>,
    contacts: Arc<Contacts>,
    retry: RetrySettings,
}

impl Network {
    pub fn new(
        client: reqwest::Client,
        secret: Arc<str>,
        contacts: Arc<Contacts>,
        retry: RetrySettings,
    ) -> Self {
        Network {
            client,
            secret,
            contacts,
            retry,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            client: self.client.clone(),
            secret: self.secret.clone(),
            base: format!("http://{}", node.addr),
            target,
            contacts: self.contacts.clone(),
            retry: self.retry,
        }
    }
}

pub struct Connection {
    client: reqwest::Client,
    secret: Arc<str>,
    base: String,
    target: NodeId,
    contacts: Arc<Contacts>,
    retry: RetrySettings,
}

/// Failed requests in a row after which a member that does not answer in time counts as
/// unreachable (openraft then backs off instead of retrying at every heartbeat). One slow
/// answer under load is not that.
const TIMEOUTS_BEFORE_UNREACHABLE: u64 = 3;

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Connection {
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, ttl: Duration) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .bearer_auth(&*self.secret)
            // Below openraft's own deadline, so that a request that times out is seen here.
            .timeout(ttl * 3 / 4)
            .body(body)
            .send()
            .await
            .map_err(|e| self.send_failed(&e))?;
        let status = resp.status();
        self.contacts.note(self.target);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let e = std::io::Error::other(format!(
                "peer answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Classifies a request that got no answer. Connection failures, and timeouts that keep
    /// repeating, are `Unreachable`: openraft then waits for [`RaftNetwork::backoff`] before the
    /// next attempt. The error text is short: openraft logs it at every attempt.
    fn send_failed<E: std::error::Error>(
        &self,
        e: &reqwest::Error,
    ) -> RPCError<NodeId, BasicNode, E> {
        let error = std::io::Error::other(format!("{}: {}", self.base, root_cause(e)));
        let unreachable = self
            .contacts
            .failed(self.target, e.is_connect(), &error.to_string());
        if unreachable {
            RPCError::Unreachable(Unreachable::new(&error))
        } else {
            RPCError::Network(NetworkError::new(&error))
        }
    }
}

/// The innermost cause of a request error ("Connection refused (os error 111)", "timed out"),
/// without reqwest's and hyper's wrapping layers.
fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(APPEND_PATH, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(SNAPSHOT_PATH, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(VOTE_PATH, &rpc, option.hard_ttl()).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(RetryDelays {
            next: self.retry.first,
            settings: self.retry,
            contacts: self.contacts.clone(),
        })
    }
}
