//! The only place that reads openraft's internal state (`Raft::with_raft_state`): this
//! member's vote, its committed log id, and the follower ReadIndex check built on them.
//! openraft 0.9 offers no public API for these; keeping every such read here means an
//! upgrade of openraft has one file to check.

use openraft::error::Fatal;
use openraft::{ServerState, Vote};

use super::{MemberId, Raft};

/// This member's current vote.
pub async fn vote(raft: &Raft) -> Result<Vote<MemberId>, Fatal<MemberId>> {
    raft.with_raft_state(|st| *st.vote_ref()).await
}

/// The index of the last log entry this member knows to be committed.
pub async fn committed_index(raft: &Raft) -> Result<Option<u64>, Fatal<MemberId>> {
    raft.with_raft_state(|st| st.committed.map(|l| l.index))
        .await
}

/// A read index for a follower's batch of reads without a heartbeat round, when the
/// follower's request itself confirms this leader; `None` when it does not (then the leader
/// runs a full round).
///
/// Why this is safe. The follower (`follower`) read its vote `vote` after every read in its
/// batch arrived, and sent it with the request. If `vote` is this leader's own committed vote,
/// and this member still holds it now, then both members held the leader's term during the
/// whole interval from the reads' arrival to this moment. If the two of them make a quorum of
/// every configuration in effect (any three-voter cluster), a leader of any later term needs
/// the vote of one of them, so no later leader can have committed anything in that interval:
/// this leader's commit index covers every write acknowledged before the reads arrived. That
/// holds only once this leader has committed an entry of its own term (the blank entry a new
/// leader proposes); before that its commit index may lag what an earlier leader
/// acknowledged. This is the confirmation a heartbeat round would give, with the follower's
/// request as the round.
pub async fn read_index_by_vote(
    raft: &Raft,
    me: MemberId,
    follower: MemberId,
    vote: Vote<MemberId>,
) -> Result<Option<u64>, Fatal<MemberId>> {
    raft.with_raft_state(move |st| {
        let own = st.vote_ref();
        let leads = st.server_state == ServerState::Leader
            && own.is_committed()
            && own.leader_id().voted_for() == Some(me)
            && *own == vote;
        let committed = st.committed?;
        let quorum = st
            .membership_state
            .effective()
            .get_joint_config()
            .iter()
            .all(|voters| {
                let acks = voters.iter().filter(|v| **v == me || **v == follower);
                acks.count() * 2 > voters.len()
            });
        (leads && quorum && committed.leader_id.term == own.leader_id().term)
            .then_some(committed.index)
    })
    .await
}
