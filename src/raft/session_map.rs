//! The replicated session map: live sessions, a node-URI index, the bounded memory of recent
//! removals that the Grid's 404 message quotes, and the ids of recently applied Grid events.
//!
//! Pure and deterministic: [`SessionMap::apply`] reads no clock and does no I/O, so every member
//! that applies the same log holds the same map. The collections are persistent (`imbl`), so a
//! snapshot is an O(1) clone taken on the apply path and serialised elsewhere.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Applied, Op, Proposal};
use crate::session::{RemovalReason, Session};

/// How long a removal is remembered for the 404 message (Selenium's `LocalSessionMap`: 60 min).
pub const TOMBSTONE_TTL_NANOS: i64 = 60 * 60 * 1_000_000_000;
/// Upper bound on remembered removals, so churn cannot grow memory without bound.
pub const MAX_TOMBSTONES: usize = 100_000;
/// How many applied event ids are remembered for de-duplication (Selenium keeps 128).
pub const MAX_EVENT_IDS: usize = 1024;

/// A live session with its answers pre-rendered, so a lookup copies nothing.
#[derive(Debug)]
pub struct Record {
    pub session: Session,
    /// Complete body of `GET /se/grid/session/{id}`.
    pub get_body: Bytes,
    /// Complete body of `GET /se/grid/session/{id}/uri`.
    pub uri_body: Bytes,
}

impl Record {
    pub fn new(session: Session) -> Self {
        Record {
            get_body: Bytes::from(session.render_get_body()),
            uri_body: Bytes::from(session.render_uri_body()),
            session,
        }
    }
}

/// What is remembered about a removed session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub removed_at: i64,
    pub reason: RemovalReason,
    pub node: String,
}

/// The answer to a lookup by id.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<Record>),
    Removed(Tombstone),
    Missing,
}

#[derive(Debug, Clone, Default)]
pub struct SessionMap {
    sessions: imbl::HashMap<Arc<str>, Arc<Record>>,
    by_uri: imbl::HashMap<Arc<str>, imbl::HashSet<Arc<str>>>,
    tombstones: imbl::HashMap<Arc<str>, Tombstone>,
    /// Removal order, oldest first, for expiry; an entry is stale when the id was removed again.
    tombstone_order: imbl::Vector<(i64, Arc<str>)>,
    events: imbl::HashSet<Uuid>,
    event_order: imbl::Vector<Uuid>,
    /// The newest proposal time applied: the map's only clock.
    clock: i64,
    /// Last log index each write-through mirror has confirmed (see `crate::mirror`).
    mirror_progress: imbl::OrdMap<Arc<str>, u64>,
}

impl SessionMap {
    pub fn apply(&mut self, p: &Proposal) -> Applied {
        self.clock = self.clock.max(p.at);
        if let Some(event_id) = p.event_id {
            if !self.remember_event(event_id) {
                return Applied {
                    changed: 0,
                    duplicate: true,
                };
            }
        }
        let changed = match &p.op {
            Op::Add(session) => {
                self.insert(session.clone());
                1
            }
            Op::Remove { id, reason } => u32::from(self.remove(id, *reason, p.at)),
            Op::RemoveByUri { uri, reason } => {
                let ids: Vec<Arc<str>> = self
                    .by_uri
                    .get(uri.as_str())
                    .map(|set| set.iter().cloned().collect())
                    .unwrap_or_default();
                ids.iter()
                    .map(|id| u32::from(self.remove(id, *reason, p.at)))
                    .sum()
            }
            Op::Batch(proposals) => proposals.iter().map(|p| self.apply(p).changed).sum(),
            Op::MirrorProgress { mirror, index } => {
                // Progress only moves forward, even if proposals arrive out of order.
                let known = self
                    .mirror_progress
                    .get(mirror.as_str())
                    .copied()
                    .unwrap_or(0);
                self.mirror_progress
                    .insert(Arc::from(mirror.as_str()), known.max(*index));
                0
            }
        };
        self.expire_tombstones();
        Applied {
            changed,
            duplicate: false,
        }
    }

    pub fn get(&self, id: &str) -> Lookup {
        if let Some(record) = self.sessions.get(id) {
            return Lookup::Found(record.clone());
        }
        match self.tombstones.get(id) {
            Some(t) => Lookup::Removed(t.clone()),
            None => Lookup::Missing,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The last log index the mirror `name` has confirmed, 0 if none.
    pub fn mirror_progress(&self, name: &str) -> u64 {
        self.mirror_progress.get(name).copied().unwrap_or(0)
    }

    /// Every mirror's confirmed progress.
    pub fn mirror_progress_all(&self) -> impl Iterator<Item = (&str, u64)> {
        self.mirror_progress.iter().map(|(k, v)| (&**k, *v))
    }

    /// Recently removed sessions with the node URI each was on (bounded, see [`Tombstone`]).
    pub fn tombstones(&self) -> impl Iterator<Item = (&str, &Tombstone)> {
        self.tombstones.iter().map(|(k, v)| (&**k, v))
    }

    /// Live sessions in no particular order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().map(|r| &r.session)
    }

    fn insert(&mut self, session: Session) {
        let id: Arc<str> = Arc::from(session.id.as_str());
        if let Some(old) = self.sessions.get(&id).cloned() {
            self.unindex(&old.session.uri, &id);
        }
        let uri: Arc<str> = Arc::from(session.uri.as_str());
        self.by_uri.entry(uri).or_default().insert(id.clone());
        self.sessions.insert(id, Arc::new(Record::new(session)));
    }

    fn remove(&mut self, id: &str, reason: RemovalReason, at: i64) -> bool {
        let Some(old) = self.sessions.remove(id) else {
            return false;
        };
        let id: Arc<str> = Arc::from(id);
        self.unindex(&old.session.uri, &id);
        self.tombstones.insert(
            id.clone(),
            Tombstone {
                removed_at: at,
                reason,
                node: old.session.uri.clone(),
            },
        );
        self.tombstone_order.push_back((at, id));
        true
    }

    fn unindex(&mut self, uri: &str, id: &Arc<str>) {
        if let Some(set) = self.by_uri.get_mut(uri) {
            set.remove(id);
            if set.is_empty() {
                self.by_uri.remove(uri);
            }
        }
    }

    fn remember_event(&mut self, id: Uuid) -> bool {
        if self.events.insert(id).is_some() {
            return false;
        }
        self.event_order.push_back(id);
        while self.event_order.len() > MAX_EVENT_IDS {
            if let Some(old) = self.event_order.pop_front() {
                self.events.remove(&old);
            }
        }
        true
    }

    fn expire_tombstones(&mut self) {
        let horizon = self.clock.saturating_sub(TOMBSTONE_TTL_NANOS);
        while let Some((at, id)) = self.tombstone_order.front().cloned() {
            if at >= horizon && self.tombstone_order.len() <= MAX_TOMBSTONES {
                break;
            }
            self.tombstone_order.pop_front();
            if self.tombstones.get(&id).is_some_and(|t| t.removed_at == at) {
                self.tombstones.remove(&id);
            }
        }
    }

    pub fn to_image(&self) -> MapImage {
        MapImage {
            sessions: self.sessions().cloned().collect(),
            tombstones: self
                .tombstone_order
                .iter()
                .filter_map(|(at, id)| {
                    let t = self.tombstones.get(id)?;
                    (t.removed_at == *at).then(|| (id.to_string(), t.clone()))
                })
                .collect(),
            events: self.event_order.iter().copied().collect(),
            clock: self.clock,
            mirror_progress: self
                .mirror_progress
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }

    pub fn from_image(image: MapImage) -> Self {
        let mut map = SessionMap {
            clock: image.clock,
            ..Default::default()
        };
        for session in image.sessions {
            map.insert(session);
        }
        for (id, t) in image.tombstones {
            let id: Arc<str> = Arc::from(id);
            map.tombstone_order.push_back((t.removed_at, id.clone()));
            map.tombstones.insert(id, t);
        }
        for e in image.events {
            map.remember_event(e);
        }
        for (name, index) in image.mirror_progress {
            map.mirror_progress.insert(Arc::from(name), index);
        }
        map
    }
}

/// The serialised form of a [`SessionMap`], as stored in snapshots.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MapImage {
    pub sessions: Vec<Session>,
    pub tombstones: Vec<(String, Tombstone)>,
    pub events: Vec<Uuid>,
    pub clock: i64,
    /// Each mirror's confirmed log index, by mirror name.
    pub mirror_progress: Vec<(String, u64)>,
}

/// Read access to the applied session map, shared by the state machine and the API.
#[derive(Debug, Clone, Default)]
pub struct SessionMapReader {
    pub(super) inner: Arc<RwLock<SessionMap>>,
}

impl SessionMapReader {
    pub fn get(&self, id: &str) -> Lookup {
        self.read().get(id)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// A consistent copy of the whole map (O(1)).
    pub fn snapshot(&self) -> SessionMap {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SessionMap> {
        // A poisoned lock means a panic while applying; the map itself is still a valid value.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
