//! Serving a request on any member: writes go to the leader (locally or forwarded over the peer
//! port), reads wait for a ReadIndex confirmed by a quorum and then use the local state machine.
//!
//! This layer knows openraft's client API but not sled; the API layer knows only this.

pub mod bootstrap;
pub mod disk;
pub mod event_sink;
pub mod health;
pub mod membership;
pub mod quorum;
pub mod read_index;
pub mod write_batch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::watch;

use crate::map::{Applied, Lookup, Proposal, SessionMapReader};
use crate::peer::{ClientError, LookupKind, PeerClient, PeerLookup, ReadIndexFrom, Reject};
use crate::raft::network::Contacts;
use crate::raft::{MemberId, Raft};
use crate::telemetry::repeat::Repeated;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no leader could commit the write within {0:?}")]
    WriteTimeout(Duration),
    #[error("no leader confirmed a read index within {0:?}")]
    ReadTimeout(Duration),
    #[error("raft has stopped: {0}")]
    Stopped(String),
    #[error("the write is {bytes} bytes, over the {limit} bytes one log entry may hold")]
    TooLarge { bytes: u64, limit: u64 },

    #[error("no quorum: this member cannot reach a majority of the cluster")]
    NoQuorum,
    #[error("too many pending {queue}s: the {queue} queue is full ({key} = {limit})")]
    QueueFull {
        queue: &'static str,
        key: &'static str,
        limit: usize,
    },
}

/// Where the leader is, as this member currently believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leader {
    Me,
    Other { id: MemberId, addr: String },
    Unknown,
}

pub use crate::config::ClusterSettings;

/// A member's view of the cluster, shared by all request handlers.
pub struct Cluster {
    pub settings: ClusterSettings,
    pub raft: Raft,
    pub reader: SessionMapReader,
    pub peers: PeerClient,
    /// When each other member was last heard from (see [`Contacts`]).
    pub contacts: Arc<Contacts>,
    /// Write-through mirrors configured on this member (see `crate::mirror`).
    pub mirrors: crate::mirror::Mirrors,
    /// Whether Raft still runs here and the data directory has room (see [`health`]).
    pub health: health::Health,
    applied: watch::Receiver<u64>,
    reads: read_index::ReadIndexBatcher,
    writes: write_batch::WriteBatcher,
    started: Instant,
    /// Milliseconds since `started` when a leader was last known; `u64::MAX` if never.
    leader_seen_ms: AtomicU64,
    /// Set by an orderly stop once this leader hands over: its probe rounds would send the
    /// heartbeats it has stopped, and keep the others from electing a successor.
    pub(crate) stepping_down: std::sync::atomic::AtomicBool,
    /// Milliseconds since `started` when this member, as leader, last heard from a quorum.
    quorum_seen_ms: AtomicU64,
    /// Requests refused for want of a quorum, logged once and then now and then.
    no_quorum_log: Repeated,
    /// Requests refused because a queue was full, for `/metrics`.
    pub queue_full: quorum::QueueFullCounters,
}

impl Cluster {
    pub fn new(
        settings: ClusterSettings,
        raft: Raft,
        reader: SessionMapReader,
        applied: watch::Receiver<u64>,
        peers: PeerClient,
        contacts: Arc<Contacts>,
    ) -> Arc<Self> {
        let queue_full = quorum::QueueFullCounters::new();
        let (max_reads, max_writes) = (settings.max_pending_reads, settings.max_pending_writes);
        Arc::new_cyclic(|weak| Cluster {
            reads: read_index::ReadIndexBatcher::spawn(
                weak.clone(),
                max_reads,
                queue_full.read.clone(),
            ),
            writes: write_batch::WriteBatcher::spawn(
                weak.clone(),
                max_writes,
                queue_full.write.clone(),
            ),
            settings,
            raft,
            reader,
            peers,
            contacts,
            mirrors: Default::default(),
            health: Default::default(),
            applied,
            started: Instant::now(),
            leader_seen_ms: AtomicU64::new(u64::MAX),
            stepping_down: Default::default(),
            quorum_seen_ms: AtomicU64::new(u64::MAX),
            no_quorum_log: Repeated::default(),
            queue_full,
        })
    }

    pub fn id(&self) -> MemberId {
        self.settings.id
    }

    pub fn leader(&self) -> Leader {
        let m = self.raft.metrics();
        let m = m.borrow();
        match m.current_leader {
            Some(id) if id == self.settings.id => Leader::Me,
            Some(id) => match m.membership_config.membership().get_node(&id) {
                Some(node) => Leader::Other {
                    id,
                    addr: node.addr.clone(),
                },
                None => Leader::Unknown,
            },
            None => Leader::Unknown,
        }
    }

    /// Commits `p` through the leader, retrying across leader changes until the write timeout.
    /// Every operation is idempotent, so a retry after an unknown outcome is harmless.
    pub async fn write(&self, p: Proposal) -> Result<Applied, ProxyError> {
        self.check_running()?;
        if let Some(bytes) = crate::map::oversized(&p) {
            let limit = crate::map::MAX_PROPOSAL_BYTES;
            return Err(ProxyError::TooLarge { bytes, limit });
        }
        let timeout = self.settings.write_timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ProxyError::WriteTimeout(timeout));
            }
            match self.leader() {
                Leader::Me if self.quorum_lost() => {
                    self.refused_without_quorum();
                    return Err(ProxyError::NoQuorum);
                }
                Leader::Me => match self.write_here(p.clone(), remaining).await {
                    Ok(applied) => return Ok(applied),
                    Err(Reject::Failed(e)) if e == STOPPED => return Err(ProxyError::Stopped(e)),
                    Err(Reject::QueueFull { .. }) => return Err(self.writes_full()),
                    Err(e) => tracing::debug!(error = %e, "local write failed; retrying"),
                },
                Leader::Other { id, addr } => {
                    let call = self.peers.forward_write(&addr, &p, remaining);
                    match self.unless_leader_changes(id, call).await {
                        Some(Ok(applied)) => return Ok(applied),
                        Some(Err(ClientError::Rejected(Reject::QueueFull { limit }))) => {
                            return Err(ProxyError::QueueFull {
                                queue: "write",
                                key: "grid.max-pending-writes",
                                limit: limit as usize,
                            })
                        }
                        Some(Err(e)) => {
                            tracing::debug!(leader = id, error = %e, "forwarded write failed; retrying")
                        }
                        None => tracing::debug!(
                            leader = id,
                            "leader changed; forwarding the write again"
                        ),
                    }
                }
                Leader::Unknown if self.cut_off() => {
                    self.refused_without_quorum();
                    return Err(ProxyError::NoQuorum);
                }
                Leader::Unknown => {}
            }
            self.pause(backoff, deadline).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Proposes `p` on this member, which must be the leader (used by the forwarding route).
    /// Grid adds and removes share a log entry with the writes waiting at the same moment
    /// (group commit, see [`write_batch`]).
    pub async fn write_here(&self, p: Proposal, timeout: Duration) -> Result<Applied, Reject> {
        if let Some(bytes) = crate::map::oversized(&p) {
            let limit = crate::map::MAX_PROPOSAL_BYTES;
            return Err(Reject::Failed(
                ProxyError::TooLarge { bytes, limit }.to_string(),
            ));
        }
        if !write_batch::WriteBatcher::accepts(&p) {
            return self.propose(p, timeout).await;
        }
        match tokio::time::timeout(timeout, self.writes.submit(p)).await {
            Ok(result) => result,
            Err(_) => Err(Reject::Failed(format!("not committed within {timeout:?}"))),
        }
    }

    /// The error for a write refused by this member's full write queue.
    fn writes_full(&self) -> ProxyError {
        ProxyError::QueueFull {
            queue: "write",
            key: "grid.max-pending-writes",
            limit: self.settings.max_pending_writes,
        }
    }

    /// Proposes `p` as one log entry and waits until it is applied here.
    async fn propose(&self, p: Proposal, timeout: Duration) -> Result<Applied, Reject> {
        match tokio::time::timeout(timeout, self.raft.client_write(p)).await {
            Ok(Ok(resp)) => {
                // `sync` mirrors: committed, now wait (bounded) until they have it too.
                self.mirrors.wait_sync(resp.log_id.index).await;
                Ok(resp.data)
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(Reject::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(Reject::Failed(e.to_string())),
            Ok(Err(RaftError::Fatal(_))) => Err(Reject::Failed(STOPPED.into())),
            Err(_) => Err(Reject::Failed(format!("not committed within {timeout:?}"))),
        }
    }

    /// Waits until this member's state machine reflects every write acknowledged before the
    /// call: one ReadIndex round (shared with every other read waiting at that moment), then
    /// the local apply catching up to it.
    pub async fn read_barrier(&self) -> Result<(), ProxyError> {
        let timeout = self.settings.read_timeout;
        let deadline = Instant::now() + timeout;
        let index = self.reads.read_index(deadline).await.inspect_err(|e| {
            if matches!(e, ProxyError::NoQuorum) {
                self.refused_without_quorum();
            }
        })?;
        let mut applied = self.applied.clone();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let caught_up = tokio::time::timeout(remaining, applied.wait_for(|a| *a >= index))
            .await
            .map(|r| r.is_ok());
        match caught_up {
            Ok(true) => Ok(()),
            Ok(false) => Err(ProxyError::Stopped("state machine closed".into())),
            Err(_) => Err(ProxyError::ReadTimeout(timeout)),
        }
    }

    /// A read index confirmed by this member as leader, batched with its own reads.
    pub async fn leader_read_index(&self) -> Result<u64, ProxyError> {
        self.reads
            .read_index(Instant::now() + self.settings.read_timeout)
            .await
    }

    /// A read index for a follower's batch of reads. When this member and the follower make a
    /// quorum (three voters), the request itself is the confirmation a heartbeat round would
    /// give: the follower held this leader's vote after its reads arrived, this member holds it
    /// now, and a leader of any later term needs the vote of one of the two. The answer is then
    /// this leader's commit index, once it has committed an entry of its own term (the blank
    /// entry a new leader proposes; before that, and for larger clusters, a full round).
    pub async fn follower_read_index(&self, from: ReadIndexFrom) -> Result<u64, ProxyError> {
        let me = self.id();
        let confirmed = self
            .raft
            .with_raft_state(move |st| {
                let vote = st.vote_ref();
                let leads = st.server_state == openraft::ServerState::Leader
                    && vote.is_committed()
                    && vote.leader_id().voted_for() == Some(me)
                    && *vote == from.vote;
                let committed = st.committed?;
                let quorum = st
                    .membership_state
                    .effective()
                    .get_joint_config()
                    .iter()
                    .all(|voters| {
                        let acks = voters.iter().filter(|v| **v == me || **v == from.id);
                        acks.count() * 2 > voters.len()
                    });
                (leads && quorum && committed.leader_id.term == vote.leader_id().term)
                    .then_some(committed.index)
            })
            .await
            .map_err(|e| ProxyError::Stopped(e.to_string()))?;
        match confirmed {
            Some(index) => {
                self.note_quorum();
                self.reads.stats.by_request.inc();
                self.reads.stats.reads.inc();
                Ok(index)
            }
            None => self.leader_read_index().await,
        }
    }

    /// Counters of ReadIndex rounds, for `/metrics`.
    pub fn read_stats(&self) -> &read_index::RoundStats {
        &self.reads.stats
    }

    /// This member's id and current vote, for a read index request to the leader.
    pub async fn read_index_from(&self) -> Option<ReadIndexFrom> {
        let vote = self.raft.with_raft_state(|st| *st.vote_ref()).await.ok()?;
        Some(ReadIndexFrom {
            id: self.id(),
            vote,
        })
    }

    /// Initialises the group from the static member list (or as a single member).
    pub async fn initialize_from_static_members(&self) -> Result<(), String> {
        bootstrap::initialize(self).await
    }

    /// A linearizable lookup, answered by this member or (read mode `leader`) by the leader.
    pub async fn lookup(&self, id: &str, kind: LookupKind) -> Result<PeerLookup, ProxyError> {
        self.check_running()?;
        if self.settings.read_from_leader {
            let deadline = Instant::now() + self.settings.read_timeout;
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(ProxyError::ReadTimeout(self.settings.read_timeout));
                }
                match self.leader() {
                    Leader::Me => break,
                    Leader::Other { id: leader, addr } => {
                        let call = self.peers.lookup(&addr, id, kind, remaining);
                        match self.unless_leader_changes(leader, call).await {
                            Some(Ok(found)) => return Ok(found),
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "forwarded read failed; retrying")
                            }
                            None => {
                                tracing::debug!(leader, "leader changed; forwarding the read again")
                            }
                        }
                    }
                    Leader::Unknown if self.cut_off() => {
                        self.refused_without_quorum();
                        return Err(ProxyError::NoQuorum);
                    }
                    Leader::Unknown => {}
                }
                self.pause(Duration::from_millis(25), deadline).await;
            }
        }
        self.read_barrier().await?;
        Ok(self.lookup_here(id, kind))
    }

    /// Reads the local state machine; the caller has passed a read barrier.
    pub fn lookup_here(&self, id: &str, kind: LookupKind) -> PeerLookup {
        match self.reader.get(id) {
            Lookup::Found(record) => PeerLookup::Found(match kind {
                LookupKind::Session => record.get_body.clone(),
                LookupKind::Uri => record.uri_body.clone(),
            }),
            Lookup::Removed(t) => PeerLookup::Removed(t),
            Lookup::Missing => PeerLookup::Missing,
        }
    }

    /// Runs `call` (a request to the leader `leader`) unless this member stops believing that
    /// `leader` leads first; then `None`, so the caller retries with the new leader at once.
    /// A killed or paused leader's address swallows requests without an answer until their
    /// timeout; without this, a request sent just before the leader died would wait out the
    /// whole write or read timeout although a new leader was elected within a second. Giving
    /// up is safe: the old leader can no longer commit, and every operation is idempotent.
    pub(crate) async fn unless_leader_changes<T>(
        &self,
        leader: MemberId,
        call: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let mut metrics = self.raft.metrics();
        let changed = async move {
            loop {
                if metrics.changed().await.is_err() {
                    // Raft stopped: the call's own timeout decides.
                    std::future::pending::<()>().await;
                }
                if metrics.borrow().current_leader != Some(leader) {
                    return;
                }
            }
        };
        tokio::select! {
            result = call => Some(result),
            () = changed => None,
        }
    }

    async fn pause(&self, wait: Duration, deadline: Instant) {
        let until = (Instant::now() + wait).min(deadline);
        let mut metrics = self.raft.metrics();
        let leader = metrics.borrow_and_update().current_leader;
        // Wake early when the leader changes, and only then: openraft's metrics also change on
        // every failed heartbeat round, and waking on those turns a retry into a busy loop.
        let changed = metrics.wait_for(|m| m.current_leader != leader);
        let _ = tokio::time::timeout_at(until.into(), changed).await;
    }

    /// A request on a member whose Raft stopped fails at once instead of waiting out its timeout.
    fn check_running(&self) -> Result<(), ProxyError> {
        match self.health.stopped() {
            Some(cause) => Err(ProxyError::Stopped(cause.to_string())),
            None => Ok(()),
        }
    }

    /// Ready ([`Cluster::is_ready`]), or why not.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if let Some(cause) = self.health.stopped() {
            return Err(NotReady::RaftStopped(cause));
        }
        if self.health.disk_low() && self.nospace_alarm().is_none() {
            return Err(NotReady::DiskLow);
        }
        if self.serves_now() {
            Ok(())
        } else {
            Err(NotReady::NoLeader)
        }
    }

    /// Ready: Raft runs here, and this member can serve linearizable reads and writes now, or
    /// lost its leader less than the grace period ago (so an election never empties a load
    /// balancer). A member low on disk space leaves the balancer while the others can carry on,
    /// and stays while a quorum is low too, so lookups and removals are still served (see
    /// [`disk`]).
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    fn serves_now(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let now_ms = self.started.elapsed().as_millis() as u64;
        let in_grace = || {
            let seen = self.leader_seen_ms.load(Ordering::Relaxed);
            seen != u64::MAX
                && now_ms.saturating_sub(seen) < self.settings.ready_grace.as_millis() as u64
        };
        let voter_ids: Vec<MemberId> = m.membership_config.membership().voter_ids().collect();
        let voters = voter_ids.len();
        // A member without a leader that has heard from no quorum lately (counting itself) is
        // cut off: it can neither commit nor read, and no election will bring a leader to it
        // soon, so it takes no grace and leaves the balancer at once. Members electing a new
        // leader hear each other's vote requests well within the window.
        let window = self.settings.election_timeout_max * 2;
        let others = voter_ids
            .iter()
            .copied()
            .filter(|id| *id != self.settings.id);
        let heard = self.contacts.heard_within(others, window);
        let connected = voters <= 1 || (heard + 1) * 2 > voters;
        let ready = match m.current_leader {
            Some(id) if id == self.settings.id => {
                // openraft's own `millis_since_quorum_ack` is only refreshed when its metrics
                // change, so an isolated leader would look healthy forever; our ReadIndex rounds
                // (reads, plus the probe in `watch_leader`) measure it instead.
                let seen = self.quorum_seen_ms.load(Ordering::Relaxed);
                let quorum = voters <= 1
                    || (seen != u64::MAX
                        && now_ms.saturating_sub(seen)
                            <= self.settings.election_timeout_max.as_millis() as u64);
                if !quorum {
                    // No grace for a leader cut off from its quorum: it can commit nothing and
                    // serve no read, and the members that can will elect another leader.
                    return false;
                }
                true
            }
            Some(_) => {
                // Not "heard from the leader lately": while openraft still names a leader whose
                // heartbeats stopped, the followers have talked to no one else yet, and making
                // them all unready then would empty the balancer before the election starts.
                let last_log = m.last_log_index.unwrap_or(0);
                let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
                last_log.saturating_sub(applied) <= 1000
            }
            None => false,
        };
        if ready {
            self.leader_seen_ms.store(now_ms, Ordering::Relaxed);
            true
        } else {
            connected && in_grace()
        }
    }

    /// Records that a quorum just confirmed this member's leadership.
    pub(crate) fn note_quorum(&self) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        self.quorum_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Keeps readiness truthful while nobody reads: as leader, a ReadIndex round (shared with
    /// any reads in flight) every quarter election timeout proves a quorum still follows.
    pub async fn watch_leader(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut metrics = self.raft.metrics();
        let probe_every = self.settings.election_timeout_max / 4;
        let mut last_probe: Option<Instant> = None;
        let mut led = false;
        loop {
            // Winning an election is a quorum's confirmation too: until its first round, a new
            // leader must not look like one that lost its quorum.
            let leads = self.leader() == Leader::Me;
            if leads && !led {
                self.note_quorum();
            }
            led = leads;
            // Probe on a timer only: a round changes openraft's metrics, so probing on every
            // metrics change would run rounds back to back (measured: half a core at idle).
            let due = last_probe.is_none_or(|t| t.elapsed() >= probe_every)
                && !self.stepping_down.load(Ordering::Relaxed);
            if due && self.leader() == Leader::Me {
                let deadline = Instant::now() + self.settings.election_timeout_max;
                let _ = self.reads.read_index(deadline).await;
                last_probe = Some(Instant::now());
            }
            if self.is_ready() {
                if let Some(refused) = self.no_quorum_log.succeeded() {
                    tracing::info!(refused, "quorum regained: serving reads and writes");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = metrics.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(probe_every) => {}
            }
        }
    }
}

const STOPPED: &str = "raft has stopped";

/// Why a member is not ready (the `/status` message says it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReady {
    #[error("raft has stopped on this member ({0}); it must be restarted")]
    RaftStopped(Arc<str>),
    #[error("this member's data directory is low on free space")]
    DiskLow,
    #[error("no leader can serve linearizable reads and writes")]
    NoLeader,
}

impl From<ClientError> for ProxyError {
    fn from(e: ClientError) -> Self {
        ProxyError::Stopped(e.to_string())
    }
}
