//! First start of a cluster from the static member list: the member with the lowest id
//! initialises the group, once. Every restart finds the group initialised and does nothing;
//! a lowest member whose data was lost does not re-initialise a cluster that its peers
//! already run (it waits to be added back instead).

use std::collections::BTreeMap;

use openraft::BasicNode;

use super::{Cluster, Error};
use crate::raft::MemberId;

/// Runs once at start: initialises the group when this member is the one to do it.
pub async fn bootstrap(cluster: &Cluster) {
    let me = cluster.id();
    let members = &cluster.settings.members;
    match cluster.raft.is_initialized().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot tell whether the cluster is initialised");
            return;
        }
    }
    if !members.is_empty() {
        if members.keys().next() != Some(&me) {
            tracing::info!("waiting for the lowest member to initialise the cluster");
            return;
        }
        for (id, addr) in members.iter().filter(|(id, _)| **id != me) {
            if let Ok(info) = cluster.peers.info(addr).await {
                if info.initialized {
                    tracing::warn!(
                        peer = id,
                        "another member already runs this cluster; not initialising, waiting to be added"
                    );
                    return;
                }
            }
        }
    }
    if let Err(e) = initialize(cluster).await {
        tracing::warn!(error = %e, "cluster initialisation skipped");
    }
}

/// Initialises the group with the static member list, or this member alone.
pub async fn initialize(cluster: &Cluster) -> Result<(), Error> {
    let members = &cluster.settings.members;
    let nodes: BTreeMap<MemberId, BasicNode> = if members.is_empty() {
        BTreeMap::from([(
            cluster.id(),
            BasicNode::new(&cluster.settings.advertise_peer),
        )])
    } else {
        members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect()
    };
    cluster
        .raft
        .initialize(nodes)
        .await
        .map_err(|e| Error::Initialize(Box::new(e)))?;
    tracing::info!(members = members.len().max(1), "cluster initialised");
    Ok(())
}
