//! Serving a request on any member: writes go to the leader (locally or forwarded over the peer
//! port), reads wait for a ReadIndex confirmed by a quorum and then use the local state machine.
//!
//! This layer knows openraft's client API but not sled; the API layer knows only this. Its
//! errors are [`Error`]; which HTTP status each becomes is `api::error`'s business.
//!
//! # The write path, in order
//! 1. [`Cluster::propose`] (`write.rs`): a Grid handler or the event sink; refuses at once on
//!    a stopped Raft or a proposal too large for one entry.
//! 2. `Cluster::at_leader` (`forward.rs`): who leads? Retries across leader changes until
//!    `grid.write-timeout`, refuses at once without a quorum.
//! 3. Here: [`Cluster::commit`] (`write.rs`). Elsewhere: `PeerClient::forward_write`
//!    (`peer/client.rs`) to `/peer/write`, whose handler (`api/peer.rs`, `forward_write`)
//!    calls `commit` on the leader.
//! 4. `commit` joins the group-commit queue (`WriteBatcher::join`, `write_batch.rs`); one task
//!    proposes each batch with `Cluster::client_write` (`write.rs`), which returns once the
//!    entry is committed and applied here.
//!
//! # The read path, in order
//! 1. [`Cluster::lookup`] (`read.rs`); in read mode `leader`, first `Cluster::at_leader` with
//!    `PeerClient::lookup` to the leader's `/peer/lookup`, whose handler runs steps 2-5 there.
//! 2. [`Cluster::read_barrier`] (`read.rs`) joins the batch of reads (`ReadBatcher::join`,
//!    `read_batch.rs`); one task runs a round for every read waiting.
//! 3. The round goes through `Cluster::at_leader`: on the leader a heartbeat round
//!    (`confirm_leadership`, `read_batch.rs`); on a follower `Cluster::ask_read_index`
//!    (`read.rs`, `PeerClient::ask_read_index`) to `/peer/read-index`.
//! 4. The leader's handler (`api/peer.rs`, `answer_read_index`) calls
//!    [`Cluster::answer_read_index`] (`read.rs`): at once when the follower's vote confirms it
//!    (`raft::internals::read_index_by_vote`), else [`Cluster::read_index`], a round of its own.
//! 5. `read_barrier` waits until the local state machine applied the index;
//!    [`Cluster::lookup_here`] reads the local map.

pub mod bootstrap;
pub mod disk;
pub mod error;
pub mod event_sink;
mod forward;
pub mod health;
pub mod membership;
pub mod quorum;
mod read;
pub mod read_batch;
pub mod read_proof;
mod ready;
pub mod reconcile;
mod write;
pub mod write_batch;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

pub use error::Error;
pub use ready::NotReady;

use crate::map::SessionMapReader;
use crate::peer::PeerClient;
use crate::raft::network::Contacts;
use crate::raft::{MemberId, Raft};
use crate::telemetry::repeat::Repeated;

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
    reads: read_batch::ReadBatcher,
    /// Stamps on ReadIndex answers, which let followers' requests confirm this member's own
    /// reads as leader (see [`read_proof`]).
    proofs: read_proof::ReadProofs,
    writes: write_batch::WriteBatcher,
    started: Instant,
    /// Milliseconds since `started` when this member was last seen serving (or first seen not
    /// serving after it did), by `watch_leader`; `u64::MAX` if never. The grace runs from it.
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
            reads: read_batch::ReadBatcher::spawn(weak.clone(), max_reads, queue_full.read.clone()),
            writes: write_batch::WriteBatcher::spawn(
                weak.clone(),
                max_writes,
                queue_full.write.clone(),
            ),
            proofs: Default::default(),
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

    /// `Ok` while this member leads; else who it believes does (for a forwarded request).
    pub fn check_leader(&self) -> Result<(), Error> {
        match self.raft.metrics().borrow().current_leader {
            Some(id) if id == self.id() => Ok(()),
            leader => Err(Error::NotLeader { leader }),
        }
    }

    /// Initialises the group from the static member list (or as a single member), unless it
    /// already has voters.
    pub async fn initialize_from_static_members(&self) -> Result<(), Error> {
        let voters = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .count();
        if voters > 0 {
            return Err(Error::AlreadyInitialized);
        }
        bootstrap::initialize(self).await
    }
}
