//! The reconciler's decision, pure: what the map holds on one node, what the node answered (or
//! for how long it has not), and the time → the sessions to remove and why. No clock, no I/O:
//! times are milliseconds on the reconciler's own monotonic clock.

use std::collections::HashSet;
use std::sync::Arc;

use crate::map::ReconcileRemoval;
use crate::session::RemovalReason;

/// The reconciler's timing settings in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A session known for less than this is never removed.
    pub grace_ms: u64,
    /// A node that has answered nothing for this long loses its sessions.
    pub node_down_after_ms: u64,
}

/// A session of the map as the reconciler knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub id: Arc<str>,
    /// The log index of the entry that added it (a re-add is another session).
    pub added: u64,
    /// When the reconciler first saw it with this `added`.
    pub first_seen_ms: u64,
}

/// What the last check of a node found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// The node answered with the ids of the sessions it holds.
    Answered(HashSet<String>),
    /// No answer since `since_ms`: the node's last answer, or the first failed check when it
    /// has not answered this leader at all.
    Unreachable { since_ms: u64 },
    /// Not checked (a URI the reconciler cannot ask): nothing is decided.
    Unchecked,
}

/// One node's sessions and its state.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub node: Arc<str>,
    pub sessions: Vec<Known>,
    pub state: NodeState,
}

/// What one run decided, one entry per session, with the node it was on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Removals to propose.
    pub remove: Vec<(Arc<str>, ReconcileRemoval)>,
    /// In dry-run mode, what would have been removed (and nothing is).
    pub would_remove: Vec<(Arc<str>, ReconcileRemoval)>,
}

/// The removals for one node's sessions at `now_ms`.
pub fn decide(
    sessions: &[Known],
    state: &NodeState,
    now_ms: u64,
    limits: Limits,
) -> Vec<ReconcileRemoval> {
    let old_enough = |k: &&Known| now_ms.saturating_sub(k.first_seen_ms) >= limits.grace_ms;
    let removal = |k: &Known, reason| ReconcileRemoval {
        id: k.id.to_string(),
        added: k.added,
        reason,
    };
    match state {
        NodeState::Answered(held) => sessions
            .iter()
            .filter(old_enough)
            .filter(|k| !held.contains(&*k.id))
            .map(|k| removal(k, RemovalReason::NodeLostSession))
            .collect(),
        NodeState::Unreachable { since_ms } => {
            let for_ms = now_ms.saturating_sub(*since_ms);
            if for_ms < limits.node_down_after_ms {
                return Vec::new();
            }
            sessions
                .iter()
                .filter(old_enough)
                .map(|k| removal(k, RemovalReason::NodeUnreachable { for_ms }))
                .collect()
        }
        NodeState::Unchecked => Vec::new(),
    }
}

/// The plan of a run over every node: [`decide`] for each, kept aside in dry-run mode.
pub fn plan(nodes: &[NodeView], now_ms: u64, limits: Limits, dry_run: bool) -> Plan {
    let decided = nodes.iter().flat_map(|n| {
        decide(&n.sessions, &n.state, now_ms, limits)
            .into_iter()
            .map(|r| (n.node.clone(), r))
    });
    let decided: Vec<_> = decided.collect();
    if dry_run {
        Plan {
            remove: Vec::new(),
            would_remove: decided,
        }
    } else {
        Plan {
            remove: decided,
            would_remove: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        grace_ms: 60_000,
        node_down_after_ms: 300_000,
    };

    fn known(id: &str, first_seen_ms: u64) -> Known {
        Known {
            id: Arc::from(id),
            added: 7,
            first_seen_ms,
        }
    }

    fn held(ids: &[&str]) -> NodeState {
        NodeState::Answered(ids.iter().map(|s| s.to_string()).collect())
    }

    fn ids(removals: &[ReconcileRemoval]) -> Vec<&str> {
        removals.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn a_session_the_node_answers_without_is_removed_once_past_the_grace() {
        let sessions = [known("gone", 0), known("kept", 0)];
        let removed = decide(&sessions, &held(&["kept"]), 60_000, LIMITS);
        assert_eq!(
            removed,
            vec![ReconcileRemoval {
                id: "gone".into(),
                added: 7,
                reason: RemovalReason::NodeLostSession,
            }]
        );
    }

    #[test]
    fn a_session_younger_than_the_grace_is_never_touched() {
        let sessions = [known("young", 10_000)];
        assert!(decide(&sessions, &held(&[]), 69_999, LIMITS).is_empty());
        let down = NodeState::Unreachable { since_ms: 0 };
        assert!(decide(&sessions, &down, 69_999, LIMITS).is_empty());
        assert_eq!(
            ids(&decide(&sessions, &held(&[]), 70_000, LIMITS)),
            ["young"]
        );
    }

    #[test]
    fn a_node_down_for_less_than_node_down_after_keeps_its_sessions() {
        let sessions = [known("a", 0), known("b", 0)];
        let down = NodeState::Unreachable { since_ms: 100_000 };
        assert!(decide(&sessions, &down, 399_999, LIMITS).is_empty());
        let removed = decide(&sessions, &down, 400_000, LIMITS);
        assert_eq!(ids(&removed), ["a", "b"]);
        assert!(removed
            .iter()
            .all(|r| r.reason == RemovalReason::NodeUnreachable { for_ms: 300_000 }));
    }

    #[test]
    fn an_unchecked_node_and_a_node_holding_everything_lose_nothing() {
        let sessions = [known("a", 0)];
        assert!(decide(&sessions, &NodeState::Unchecked, 10_000_000, LIMITS).is_empty());
        assert!(decide(&sessions, &held(&["a", "other"]), 10_000_000, LIMITS).is_empty());
    }

    #[test]
    fn dry_run_keeps_every_decision_aside_and_removes_nothing() {
        let nodes = [
            NodeView {
                node: Arc::from("http://n1:5555"),
                sessions: vec![known("lost", 0)],
                state: held(&[]),
            },
            NodeView {
                node: Arc::from("http://n2:5555"),
                sessions: vec![known("down", 0)],
                state: NodeState::Unreachable { since_ms: 0 },
            },
        ];
        let dry = plan(&nodes, 400_000, LIMITS, true);
        assert!(dry.remove.is_empty());
        assert_eq!(dry.would_remove.len(), 2);
        let real = plan(&nodes, 400_000, LIMITS, false);
        assert!(real.would_remove.is_empty());
        assert_eq!(real.remove, dry.would_remove);
        assert_eq!(&*real.remove[1].0, "http://n2:5555");
    }
}
