//! The cluster layer's one error type: why a write, a read or a membership change failed on
//! this member, with its cause attached as data (not text).
//!
//! The peer protocol's wire types ([`crate::peer::Reject`], [`crate::peer::ClientError`]) are
//! converted to and from this type where they cross the boundary: the peer server
//! (`api::peer`) and the calls to the peer client (`super::forward`). The HTTP status an error
//! becomes is chosen in `api::error`, nowhere here.
//!
//! Errors are `Clone`: one failed batch or ReadIndex round answers every request in it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::BasicNode;

use crate::peer::ClientError;
use crate::raft::MemberId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// This member does not lead; `leader` is who it believes does. Answered to a forwarded
    /// request, which the member that forwarded it retries.
    #[error("member is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<MemberId> },
    /// No leader is known (a membership change, which is not retried).
    #[error("no leader is known; try again after the election")]
    NoLeader,
    /// This member knows it cannot reach a majority (see `super::quorum`).
    #[error("no quorum: this member cannot reach a majority of the cluster")]
    NoQuorum,
    /// The request's deadline passed; `last` is why its last attempt failed, if one did.
    #[error("{op} within {after:?}")]
    Timeout {
        op: Op,
        after: Duration,
        #[source]
        last: Option<Box<Error>>,
    },
    #[error("too many pending {queue}s: the {queue} queue is full ({} = {limit})", queue.key())]
    QueueFull { queue: Queue, limit: usize },
    #[error("the write is {bytes} bytes, over the {limit} bytes one log entry may hold")]
    TooLarge { bytes: u64, limit: u64 },
    /// Raft no longer runs on this member (the cause is part of the message the Grid sees).
    #[error("raft has stopped: {0}")]
    Stopped(Stopped),
    /// A request to the leader got no usable answer: no connection, an HTTP error, an
    /// undecodable body.
    #[error("request to the leader (member {leader}) failed")]
    Peer {
        leader: MemberId,
        #[source]
        source: Arc<ClientError>,
    },
    /// The leader answered that the request failed there, for this reason.
    #[error("the leader (member {leader}) failed the request: {reason}")]
    AtLeader { leader: MemberId, reason: String },
    #[error("the cluster is already initialised")]
    AlreadyInitialized,
    #[error(transparent)]
    Initialize(Box<RaftError<MemberId, InitializeError<MemberId, BasicNode>>>),
    #[error(transparent)]
    Membership(Box<RaftError<MemberId, ClientWriteError<MemberId, BasicNode>>>),
    /// A member to add answered that it belongs to another cluster (a restored copy of this
    /// one, or its source): its cluster id, and ours (`None`: a cluster created by `serve`).
    #[error(
        "the member at {addr} belongs to another cluster (its cluster id {}, ours {}); \
         a restored copy and its source never mix",
        theirs.as_deref().unwrap_or("(none)"),
        ours.as_deref().unwrap_or("(none)")
    )]
    ForeignMember {
        addr: String,
        theirs: Option<String>,
        ours: Option<String>,
    },
}

/// What a [`Error::Timeout`] gave up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Write,
    Read,
    /// A read whose index was confirmed, waiting for this member to apply up to it.
    Apply,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Write => "no leader could commit the write",
            Op::Read => "no leader confirmed a read index",
            Op::Apply => "this member did not apply the log up to the confirmed read index",
        })
    }
}

/// Puts `item` on the bounded queue `tx` of kind `queue`: a full queue is counted on `full` and
/// refused with [`Error::QueueFull`], a closed one is the batcher stopped.
pub(crate) fn enqueue<T>(
    tx: &tokio::sync::mpsc::Sender<T>,
    item: T,
    queue: Queue,
    limit: usize,
    full: &prometheus::IntCounter,
) -> Result<(), Error> {
    use tokio::sync::mpsc::error::TrySendError;
    tx.try_send(item).map_err(|e| match e {
        TrySendError::Full(_) => {
            full.inc();
            Error::QueueFull { queue, limit }
        }
        TrySendError::Closed(_) => Error::Stopped(Stopped::Batcher(queue)),
    })
}

/// A bounded queue of this member's (see [`Error::QueueFull`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Write,
    Read,
}

impl Queue {
    /// The setting that bounds it.
    pub fn key(self) -> &'static str {
        match self {
            Queue::Write => "grid.max-pending-writes",
            Queue::Read => "grid.max-pending-reads",
        }
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Queue::Write => "write",
            Queue::Read => "read",
        })
    }
}

/// Why Raft (or a task serving it) no longer runs here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Stopped {
    /// The cause recorded when Raft stopped (see `super::health`).
    #[error("{0}")]
    Recorded(Arc<str>),
    /// openraft answered with its fatal error.
    #[error("{0}")]
    Fatal(Box<Fatal<MemberId>>),
    /// The state machine's applied-index channel closed.
    #[error("state machine closed")]
    StateMachine,
    /// The batching task of a queue ended.
    #[error("{0} batcher stopped")]
    Batcher(Queue),
}

impl Error {
    /// Whether the leader-retry loop gives up at once: retrying cannot help within the request.
    /// Everything else (no leader yet, a leader that moved or failed, a lost connection, a
    /// commit that took too long) is retried until the deadline.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Error::Stopped(_) | Error::QueueFull { .. } | Error::TooLarge { .. }
        )
    }

    /// A short stable name for the kind of failure (log fields, de-duplication of log lines).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotLeader { .. } => "not_leader",
            Error::NoLeader => "no_leader",
            Error::NoQuorum => "no_quorum",
            Error::Timeout { .. } => "timeout",
            Error::QueueFull { .. } => "queue_full",
            Error::TooLarge { .. } => "too_large",
            Error::Stopped(_) => "stopped",
            Error::Peer { .. } => "peer",
            Error::AtLeader { .. } => "at_leader",
            Error::AlreadyInitialized => "already_initialized",
            Error::Initialize(_) => "initialize",
            Error::Membership(_) => "membership",
            Error::ForeignMember { .. } => "foreign_member",
        }
    }

    pub(crate) fn fatal(e: Fatal<MemberId>) -> Self {
        Error::Stopped(Stopped::Fatal(Box::new(e)))
    }

    /// A failed request to the leader `leader`, converted from the peer client's error: the
    /// leader's typed refusals keep their meaning, anything else is a failed request.
    pub(crate) fn from_peer(leader: MemberId, e: ClientError) -> Self {
        use crate::peer::Reject;
        match e {
            ClientError::Rejected(Reject::NotLeader { leader }) => Error::NotLeader { leader },
            ClientError::Rejected(Reject::QueueFull { limit }) => Error::QueueFull {
                queue: Queue::Write,
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            },
            ClientError::Rejected(Reject::Failed(reason)) => Error::AtLeader { leader, reason },
            other => Error::Peer {
                leader,
                source: Arc::new(other),
            },
        }
    }
}
