//! Online membership changes and the status report behind `gridraft cluster ...`.
//!
//! A change is executed by the leader; any other member forwards it there.

use std::collections::BTreeSet;

use openraft::{BasicNode, ChangeMembers};
use serde_json::{json, Value};

use super::{Cluster, Error, Leader};
use crate::peer::{AddMember, RemoveMember};

pub const ADD_PATH: &str = "/admin/add";
pub const REMOVE_PATH: &str = "/admin/remove";

impl Cluster {
    /// Leader, term, indexes and membership as this member sees them.
    pub fn status(&self) -> Value {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<_> = membership.voter_ids().collect();
        let learners: Vec<_> = membership.learner_ids().collect();
        let nodes: serde_json::Map<String, Value> = membership
            .nodes()
            .map(|(id, n)| (id.to_string(), json!(n.addr)))
            .collect();
        let replication: Option<serde_json::Map<String, Value>> = m.replication.as_ref().map(|r| {
            r.iter()
                .map(|(id, l)| (id.to_string(), json!(l.map(|l| l.index))))
                .collect()
        });
        json!({
            "id": m.id,
            "state": format!("{:?}", m.state),
            "term": m.current_term,
            "leader": m.current_leader,
            "last_log_index": m.last_log_index,
            "last_applied": m.last_applied.map(|l| l.index),
            "snapshot": m.snapshot.map(|l| l.index),
            "purged": m.purged.map(|l| l.index),
            "voters": voters,
            "learners": learners,
            "nodes": nodes,
            "replication": replication,
            "ready": self.is_ready(),
            "not_ready": self.readiness().err().map(|e| e.to_string()),
            "low_disk_members": self.reader.low_disk_members(),
            "live_sessions": self.reader.len(),
            "mirrors": self.mirrors.status(
                m.last_applied.map(|l| l.index).unwrap_or(0),
                &self.reader.snapshot(),
            ),
        })
    }

    /// Adds a member as a learner, waits until it has caught up, then promotes it to voter.
    pub async fn add_member(&self, req: &AddMember) -> Result<Value, Error> {
        match self.leader() {
            Leader::Me => {}
            Leader::Other { id, addr } => {
                return self
                    .peers
                    .admin(&addr, reqwest::Method::POST, ADD_PATH, Some(req))
                    .await
                    .map_err(|e| Error::from_peer(id, e));
            }
            Leader::Unknown => return Err(Error::NoLeader),
        }
        // A member that answers must be of this cluster; one that does not may still be
        // starting, and is left to Raft (which refuses to talk across clusters anyway).
        if let Ok(info) = self.peers.info(&req.addr).await {
            let ours = self.peers.cluster_id();
            if info.cluster_id.as_deref() != ours {
                return Err(Error::ForeignMember {
                    addr: req.addr.clone(),
                    theirs: info.cluster_id,
                    ours: ours.map(str::to_owned),
                });
            }
        }
        tracing::info!(member = req.id, addr = %req.addr, "adding member as learner");
        self.raft
            .add_learner(req.id, BasicNode::new(&req.addr), true)
            .await
            .map_err(|e| Error::Membership(Box::new(e)))?;
        tracing::info!(member = req.id, "learner caught up; promoting to voter");
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), false)
            .await
            .map_err(|e| Error::Membership(Box::new(e)))?;
        Ok(self.status())
    }

    /// Removes a member from the voters and the member list; the leader may remove itself.
    pub async fn remove_member(&self, req: &RemoveMember) -> Result<Value, Error> {
        match self.leader() {
            Leader::Me => {}
            Leader::Other { id, addr } => {
                return self
                    .peers
                    .admin(&addr, reqwest::Method::POST, REMOVE_PATH, Some(req))
                    .await
                    .map_err(|e| Error::from_peer(id, e));
            }
            Leader::Unknown => return Err(Error::NoLeader),
        }
        tracing::info!(member = req.id, "removing member");
        // `retain = false`: the removed voter leaves the member list too, not kept as a learner.
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([req.id])), false)
            .await
            .map_err(|e| Error::Membership(Box::new(e)))?;
        Ok(self.status())
    }
}
