//! The runner's node-URI index of what a mirror may hold, used to resolve `RemoveByUri` into
//! session ids for stores without an index of their own (Redis), without scanning the store.
//!
//! It over-approximates on purpose: an id may be listed under a URI it no longer has. That is
//! harmless, because every id a batch touches is written from the current map, so an extra id
//! is rewritten with its current value; missing an id would leave a stale session behind.

use std::collections::{HashMap, HashSet};

use crate::map::{SessionMap, MAX_TOMBSTONES, TOMBSTONE_TTL_NANOS};

#[derive(Debug, Default)]
pub struct UriIndex {
    by_uri: HashMap<String, HashSet<String>>,
    uris_of: HashMap<String, HashSet<String>>,
}

impl UriIndex {
    /// Seeds the index from the applied map: every live session under its URI, and every
    /// remembered removal under the URI it was removed from (so a replayed `RemoveByUri` of
    /// entries older than the map still finds the ids it removed).
    pub fn seed(map: &SessionMap) -> Self {
        let mut index = UriIndex::default();
        for (id, t) in map.tombstones() {
            index.add(id, &t.node);
        }
        for r in map.records() {
            index.add(&r.id, &r.uri);
        }
        index
    }

    /// Whether the seed covers every removal made after a log entry proposed at `entry_at`
    /// (nanoseconds): no tombstone of that age can have expired, and the bounded tombstone
    /// memory never overflowed (it drops the oldest first, so it stays full once it has).
    /// When it does not, the runner resynchronises the whole store instead of replaying.
    pub fn seed_covers(map: &SessionMap, entry_at: i64, now: i64) -> bool {
        let horizon = now.saturating_sub(TOMBSTONE_TTL_NANOS / 2);
        map.tombstones().count() < MAX_TOMBSTONES && entry_at > horizon
    }

    pub fn add(&mut self, id: &str, uri: &str) {
        self.by_uri
            .entry(uri.to_owned())
            .or_default()
            .insert(id.to_owned());
        self.uris_of
            .entry(id.to_owned())
            .or_default()
            .insert(uri.to_owned());
    }

    /// The ids listed under `uri`, which are then no longer listed there.
    pub fn take(&mut self, uri: &str) -> Vec<String> {
        let ids: Vec<String> = self
            .by_uri
            .remove(uri)
            .unwrap_or_default()
            .into_iter()
            .collect();
        for id in &ids {
            if let Some(uris) = self.uris_of.get_mut(id) {
                uris.remove(uri);
                if uris.is_empty() {
                    self.uris_of.remove(id);
                }
            }
        }
        ids
    }

    /// After `id` was written from the current map: listed only under `uri` if it is live
    /// there, not at all if it is gone (the store no longer holds it).
    pub fn settle(&mut self, id: &str, uri: Option<&str>) {
        for old in self.uris_of.remove(id).unwrap_or_default() {
            if let Some(ids) = self.by_uri.get_mut(&old) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_uri.remove(&old);
                }
            }
        }
        if let Some(uri) = uri {
            self.add(id, uri);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_move_and_leave_cleanly() {
        let mut ix = UriIndex::default();
        ix.add("a", "http://n1");
        ix.add("a", "http://n2");
        ix.add("b", "http://n1");
        let mut got = ix.take("http://n1");
        got.sort();
        assert_eq!(got, ["a", "b"]);
        assert_eq!(ix.take("http://n1"), Vec::<String>::new());
        ix.settle("a", Some("http://n3"));
        assert!(ix.take("http://n2").is_empty());
        assert_eq!(ix.take("http://n3"), ["a"]);
        ix.settle("a", None);
        assert!(ix.uris_of.is_empty() && ix.by_uri.is_empty());
    }
}
