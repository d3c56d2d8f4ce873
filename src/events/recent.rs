//! The recently-seen event ids (docs/compatibility.md#receiving-rules): a FIFO by count with no
//! time limit, like Java's `EvictingQueue`. It only filters repeats the bus delivers to this
//! member; it is not the replicated idempotency set kept by the session map (`map`).

use std::collections::{HashSet, VecDeque};

use uuid::Uuid;

/// How many ids a member remembers (at least Java's 128). More is harmless and covers a burst of
/// re-sent events during a reconnect.
pub const RECENT_IDS: usize = 1024;
const _: () = assert!(RECENT_IDS >= 128);

/// The last `capacity` distinct event ids, oldest evicted first.
#[derive(Debug, Clone)]
pub struct RecentIds {
    order: VecDeque<Uuid>,
    members: HashSet<Uuid>,
    capacity: usize,
}

impl RecentIds {
    /// `capacity` is raised to 1 so `remember` always keeps the newest id.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            order: VecDeque::with_capacity(capacity),
            members: HashSet::with_capacity(capacity),
            capacity,
        }
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.members.contains(id)
    }

    /// Remembers `id`, evicting the oldest when full. Returns false if it was already known
    /// (its age is then left unchanged, as in a FIFO).
    pub fn remember(&mut self, id: Uuid) -> bool {
        if !self.members.insert(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.members.remove(&oldest);
            }
        }
        self.order.push_back(id);
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Default for RecentIds {
    fn default() -> Self {
        Self::new(RECENT_IDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_id_first() {
        let mut recent = RecentIds::new(2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(recent.remember(a));
        assert!(recent.remember(b));
        assert!(!recent.remember(a), "a repeat is not stored twice");
        assert!(recent.remember(c));
        assert!(!recent.contains(&a));
        assert!(recent.contains(&b) && recent.contains(&c));
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn zero_capacity_still_keeps_the_newest() {
        let mut recent = RecentIds::new(0);
        let a = Uuid::new_v4();
        recent.remember(a);
        assert!(recent.contains(&a));
    }

    #[test]
    fn default_remembers_at_least_what_java_does() {
        let mut recent = RecentIds::default();
        let ids: Vec<Uuid> = (0..RECENT_IDS).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            recent.remember(*id);
        }
        assert!(ids.iter().all(|id| recent.contains(id)));
    }
}
