//! The one leader-retry loop, shared by writes, ReadIndex rounds and leader-mode lookups: do
//! the request here when this member leads, else send it to the leader, and retry across
//! leader changes (with backoff, waking when the leader changes) until the deadline.
//!
//! It also owns the two refusals without a quorum (a leader nobody confirms, a member cut off
//! without a leader: see `super::quorum`), and the conversion of the peer client's errors into
//! [`Error`]. It must not decide what an attempt does; the caller's closures do.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use super::error::{Error, Op};
use super::{Cluster, Leader};
use crate::peer::ClientError;
use crate::raft::MemberId;

/// One attempt, here or at the leader.
pub(crate) type Attempt<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// When a request gives up, and the timeout it was given (for [`Error::Timeout`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
}

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Deadline {
            at: Instant::now() + timeout,
            timeout,
        }
    }
}

/// How long to wait between attempts: from `first`, doubling, up to `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Cluster {
    /// Runs a request on the leader until it succeeds, fails for good ([`Error::is_final`]),
    /// or the deadline passes ([`Error::Timeout`] for `op`, carrying the last attempt's
    /// error). `here(remaining)` runs it on this member as leader; `there(addr,
    /// remaining)` sends it to the leader's peer address. Every operation retried through here
    /// is idempotent, so a retry after an unknown outcome is harmless.
    pub(crate) async fn at_leader<'a, T>(
        &'a self,
        op: Op,
        deadline: Deadline,
        backoff: Backoff,
        mut here: impl FnMut(Duration) -> Attempt<'a, T, Error>,
        mut there: impl FnMut(String, Duration) -> Attempt<'a, T, ClientError>,
    ) -> Result<T, Error> {
        let mut wait = backoff.first;
        let mut last: Option<Error> = None;
        loop {
            let remaining = deadline.at.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let last = last.map(Box::new);
                return Err(Error::Timeout {
                    op,
                    after: deadline.timeout,
                    last,
                });
            }
            let failed = match self.leader() {
                Leader::Me if self.quorum_lost() => return Err(self.no_quorum()),
                Leader::Me => match here(remaining).await {
                    Ok(done) => return Ok(done),
                    Err(e) => e,
                },
                Leader::Other { id, addr } => {
                    match self.unless_leader_changes(id, there(addr, remaining)).await {
                        Some(Ok(done)) => return Ok(done),
                        Some(Err(e)) => Error::from_peer(id, e),
                        None => Error::NotLeader { leader: None },
                    }
                }
                Leader::Unknown if self.cut_off() => return Err(self.no_quorum()),
                Leader::Unknown => Error::NoLeader,
            };
            if failed.is_final() {
                return Err(failed);
            }
            tracing::debug!(?op, error = %failed, "attempt failed; retrying");
            last = Some(failed);
            self.pause(wait, deadline.at).await;
            wait = (wait * 2).min(backoff.max);
        }
    }

    /// Records a refusal for want of a quorum (logged once, then now and then with a count).
    fn no_quorum(&self) -> Error {
        if let Some(refused) = self.no_quorum_log.failed() {
            tracing::warn!(refused, "no quorum: refusing reads and writes");
        }
        Error::NoQuorum
    }

    /// Runs `call` (a request to the leader `leader`) unless this member stops believing that
    /// `leader` leads first; then `None`, so the caller retries with the new leader at once.
    /// A killed or paused leader's address swallows requests without an answer until their
    /// timeout; without this, a request sent just before the leader died would wait out the
    /// whole write or read timeout although a new leader was elected within a second. Giving
    /// up is safe: the old leader can no longer commit, and every operation is idempotent.
    async fn unless_leader_changes<T>(
        &self,
        leader: MemberId,
        call: impl Future<Output = T>,
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

    /// Waits `wait` (at most until `deadline`), waking early when the leader changes, and only
    /// then: openraft's metrics also change on every failed heartbeat round, and waking on
    /// those turned a retry into a busy loop.
    async fn pause(&self, wait: Duration, deadline: Instant) {
        let until = (Instant::now() + wait).min(deadline);
        let mut metrics = self.raft.metrics();
        let leader = metrics.borrow_and_update().current_leader;
        let changed = metrics.wait_for(|m| m.current_leader != leader);
        let _ = tokio::time::timeout_at(until.into(), changed).await;
    }
}
