//! The write path: [`Cluster::propose`] on any member, [`Cluster::commit`] on the leader.
//!
//! `propose` checks what can be checked here (Raft runs, the proposal fits in a log entry) and
//! hands the proposal to the leader through [`Cluster::at_leader`]: `commit` when this member
//! leads, else `PeerClient::forward_write` to the leader's `/peer/write`, whose handler calls
//! `commit` there. `commit` joins the group-commit queue (`super::write_batch`) or, for
//! proposals that cannot share an entry, goes straight to [`Cluster::client_write`], the one
//! call of `Raft::client_write`.

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};

use super::error::{Error, Op, Stopped};
use super::forward::{Backoff, Deadline};
use super::write_batch::WriteBatcher;
use super::Cluster;
use crate::map::{Applied, Proposal};

const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(10),
    max: Duration::from_millis(200),
};

impl Cluster {
    /// Commits `p` through the leader, retrying across leader changes until the write timeout.
    /// Every operation is idempotent, so a retry after an unknown outcome is harmless.
    pub async fn propose(&self, p: Proposal) -> Result<Applied, Error> {
        self.check_running()?;
        check_size(&p)?;
        let p = &p;
        self.at_leader(
            Op::Write,
            Deadline::after(self.settings.write_timeout),
            BACKOFF,
            |remaining| Box::pin(self.commit(p.clone(), remaining)),
            |addr, remaining| {
                Box::pin(async move { self.peers.forward_write(&addr, p, remaining).await })
            },
        )
        .await
    }

    /// Commits `p` on this member, which must be the leader (the forwarding route calls it
    /// too). Grid adds and removes share a log entry with the writes waiting at the same moment
    /// (group commit, see [`super::write_batch`]).
    pub async fn commit(&self, p: Proposal, timeout: Duration) -> Result<Applied, Error> {
        check_size(&p)?;
        if !WriteBatcher::accepts(&p) {
            return self.client_write(p, timeout).await;
        }
        match tokio::time::timeout(timeout, self.writes.join(p)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                op: Op::Write,
                after: timeout,
                last: None,
            }),
        }
    }

    /// Proposes `p` as one log entry and waits until it is applied here (and, with `sync`
    /// mirrors, until they have it too, bounded).
    pub(crate) async fn client_write(
        &self,
        p: Proposal,
        timeout: Duration,
    ) -> Result<Applied, Error> {
        match tokio::time::timeout(timeout, self.raft.client_write(p)).await {
            Ok(Ok(resp)) => {
                self.mirrors.wait_sync(resp.log_id.index).await;
                Ok(resp.data)
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(Error::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(e @ RaftError::APIError(ClientWriteError::ChangeMembershipError(_)))) => {
                Err(Error::Membership(Box::new(e)))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(Error::fatal(e)),
            Err(_) => Err(Error::Timeout {
                op: Op::Write,
                after: timeout,
                last: None,
            }),
        }
    }

    /// A request on a member whose Raft stopped fails at once instead of waiting out its timeout.
    pub(crate) fn check_running(&self) -> Result<(), Error> {
        match self.health.stopped() {
            Some(cause) => Err(Error::Stopped(Stopped::Recorded(cause))),
            None => Ok(()),
        }
    }
}

/// Refuses before Raft a proposal too large for one log entry, so that no accepted write can
/// make the leader's append fail.
fn check_size(p: &Proposal) -> Result<(), Error> {
    match crate::map::oversized(p) {
        Some(bytes) => Err(Error::TooLarge {
            bytes,
            limit: crate::map::MAX_PROPOSAL_BYTES,
        }),
        None => Ok(()),
    }
}
