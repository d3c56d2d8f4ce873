//! The replicated session map: live sessions, a node-URI index, the bounded memory of recent
//! removals that the Grid's 404 message quotes, and the ids of recently applied Grid events.
//!
//! Pure and deterministic: [`SessionMap::apply_entry`] reads no clock and does no I/O, so every
//! member that applies the same log holds the same map. The collections are persistent (`imbl`),
//! so a snapshot is an O(1) clone taken on the apply path and serialised elsewhere.
//!
//! Grid events: every member proposes every event it receives, so one event reaches the log up
//! to once per member, and a member that cannot commit retries for minutes. Each session
//! remembers the log index of the entry that added it, and an event's removal
//! ([`Op::RemoveAddedBy`], [`Op::RemoveByUriAddedBy`]) removes only sessions added at or before
//! both its own bound (the proposer's applied index when it received the event) and the index
//! of the entry that first carried the event id, if the id is still remembered. So a copy of an
//! event, whenever it is applied, never removes a session added after the event was received;
//! a later copy from a member that had applied more when it received the event still removes
//! what the first copy's member had not applied yet. Old entries' unbounded `Remove` and
//! `RemoveByUri` keep their exact old meaning (skipped when the event id is remembered) so
//! replaying a log written by an older version gives the same map.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::raft::MemberId;
use crate::session::{RemovalReason, Session};

pub use command::{
    now_nanos, oversized, Applied, Op, Proposal, ReconcileRemoval, MAX_PROPOSAL_BYTES,
};
pub use removals::{Removal, RemovalSource};

/// How long a removal is remembered for the 404 message (Selenium's `LocalSessionMap`: 60 min).
pub const TOMBSTONE_TTL_NANOS: i64 = 60 * 60 * 1_000_000_000;
/// Upper bound on remembered removals, so churn cannot grow memory without bound.
pub const MAX_TOMBSTONES: usize = 100_000;
/// Upper bound on the bytes of the ids and node URIs that remembered removals keep; past it the
/// oldest are forgotten first. A constant, not a setting: `apply` must give every member the
/// same map. With the API's limits (ids of 1 KiB, node URIs of 4 KiB) the count bound alone
/// would allow about 500 MB.
pub const MAX_TOMBSTONE_BYTES: usize = 64 << 20;
/// How many applied event ids are remembered (Selenium keeps 128). Unbounded removals from old
/// log entries are skipped for a remembered id, exactly as older versions did, so this must not
/// change: a member replaying those entries has to agree with the members that applied them.
pub const MAX_EVENT_IDS: usize = 1024;
/// How long the first log index of an event with a bounded removal is remembered, by the map's
/// clock: a copy of the event applied within this time, however many other events came
/// between, removes nothing added after the first copy's entry.
pub const EVENT_BOUND_TTL_NANOS: i64 = 60 * 60 * 1_000_000_000;
/// Upper bound on the event bounds remembered (about 40 bytes each).
pub const MAX_EVENT_BOUNDS: usize = 100_000;

/// A live session, held as the answers it gives: the complete `GET` body, in which the
/// capabilities and stereotype sit at known byte ranges, and the `/uri` body. A lookup copies
/// nothing, and the session itself is recovered from the body when a mirror or an export needs
/// it (see [`Record::session`]), so its capabilities are held once, not twice.
#[derive(Debug)]
pub struct Record {
    pub id: Arc<str>,
    pub uri: Arc<str>,
    pub start: Box<str>,
    /// Complete body of `GET /se/grid/session/{id}`.
    pub get_body: Bytes,
    /// Complete body of `GET /se/grid/session/{id}/uri`.
    pub uri_body: Bytes,
    /// Byte ranges of the capabilities and the stereotype inside `get_body`.
    capabilities: Span,
    stereotype: Span,
    /// Log index of the entry that added (or last replaced) the session; 0 when unknown (a
    /// session restored from a snapshot written before this was recorded).
    pub added: u64,
}

/// A byte range inside a record's `GET` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn of(r: std::ops::Range<usize>) -> Self {
        // Bodies are bounded by the request size limit, far below 4 GiB.
        Span {
            start: r.start as u32,
            end: r.end as u32,
        }
    }

    fn slice(self, body: &[u8]) -> Option<&[u8]> {
        body.get(self.start as usize..self.end as usize)
    }
}

/// A record whose stored form is inconsistent (a body range outside the body, or not UTF-8).
#[derive(Debug, thiserror::Error)]
#[error("session {id}: stored body ranges do not match the body")]
pub struct BadRecord {
    pub id: String,
}

impl Record {
    pub fn new(session: &Session) -> Self {
        let rendered = session.render_get_body_parts();
        Record {
            uri_body: Bytes::from(session.render_uri_body().into_bytes().into_boxed_slice()),
            id: Arc::from(session.id.as_str()),
            uri: Arc::from(session.uri.as_str()),
            start: Box::from(session.start.as_str()),
            // Exactly the body's size: the renderer's estimate leaves spare capacity, which a
            // `Bytes` made from a `Vec` would otherwise keep for the session's lifetime.
            get_body: Bytes::from(rendered.body.into_bytes().into_boxed_slice()),
            capabilities: Span::of(rendered.capabilities),
            stereotype: Span::of(rendered.stereotype),
            added: 0,
        }
    }

    /// Rebuilds a record from its stored parts (a snapshot), checking the ranges.
    pub fn from_parts(
        id: String,
        uri: String,
        start: String,
        get_body: Vec<u8>,
        capabilities: Span,
        stereotype: Span,
    ) -> Result<Self, BadRecord> {
        let ok = |span: Span| {
            span.slice(&get_body)
                .is_some_and(|b| std::str::from_utf8(b).is_ok())
        };
        if !ok(capabilities) || !ok(stereotype) {
            return Err(BadRecord { id });
        }
        let uri_body = crate::session::render_uri_body(&uri);
        Ok(Record {
            id: Arc::from(id),
            uri: Arc::from(uri),
            start: start.into_boxed_str(),
            get_body: Bytes::from(get_body),
            uri_body: Bytes::from(uri_body.into_bytes().into_boxed_slice()),
            capabilities,
            stereotype,
            added: 0,
        })
    }

    /// The byte ranges of the capabilities and the stereotype inside `get_body`.
    pub fn spans(&self) -> (Span, Span) {
        (self.capabilities, self.stereotype)
    }

    /// The session this record answers for.
    pub fn session(&self) -> Session {
        let level0 = |span: Span| {
            // Checked on construction: in range and UTF-8.
            let nested = span
                .slice(&self.get_body)
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default();
            crate::session::unnest(nested)
        };
        Session {
            id: self.id.to_string(),
            uri: self.uri.to_string(),
            start: self.start.to_string(),
            capabilities: level0(self.capabilities),
            stereotype: level0(self.stereotype),
        }
    }
}

/// The live sessions on one node: almost always one (a node runs a few sessions at a time), so
/// no set is allocated until there is a second.
#[derive(Debug, Clone)]
enum NodeSessions {
    One(Arc<str>),
    Many(imbl::HashSet<Arc<str>>),
}

/// What is remembered about a removed session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub removed_at: i64,
    pub reason: RemovalReason,
    pub node: String,
    /// What removed it; derived from the command at apply time, so old log entries get one too.
    pub source: RemovalSource,
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
    /// Node URI → the ids of its live sessions.
    by_uri: imbl::HashMap<Arc<str>, NodeSessions>,
    tombstones: imbl::HashMap<Arc<str>, Tombstone>,
    /// Removal order, oldest first, for expiry; an entry is stale when the id was removed again.
    tombstone_order: imbl::Vector<(i64, Arc<str>)>,
    /// Bytes of the ids and node URIs in `tombstones` (see [`MAX_TOMBSTONE_BYTES`]).
    tombstone_bytes: usize,
    /// Remembered event ids → the log index of the entry that first carried each (0: unknown,
    /// remembered by a snapshot written before this was recorded).
    events: imbl::HashMap<Uuid, u64>,
    event_order: imbl::Vector<Uuid>,
    /// Event ids of bounded removals → the log index of the entry that first carried each,
    /// for [`EVENT_BOUND_TTL_NANOS`] (far longer than the de-duplication window above, which
    /// older log entries fix at 1024 ids): the bound a late copy of the event acts within.
    event_bounds: imbl::HashMap<Uuid, u64>,
    /// `event_bounds` in the order they were first applied, with the proposal time.
    event_bound_order: imbl::Vector<(i64, Uuid)>,
    /// Log index of the entry being applied; new sessions are stamped with it.
    index: u64,
    /// The newest proposal time applied: the map's only clock.
    clock: i64,
    /// Last log index each write-through mirror has confirmed (see `crate::mirror`).
    mirror_progress: imbl::OrdMap<Arc<str>, u64>,
    /// Members whose data directory is low on free space (see `crate::cluster::disk`).
    low_disk: imbl::OrdSet<MemberId>,
}

impl SessionMap {
    /// Applies the proposal of the log entry at `index`.
    pub fn apply_entry(&mut self, index: u64, p: &Proposal) -> Applied {
        self.index = index;
        self.clock = self.clock.max(p.at);
        // The newest state an event's removal may act on (see the module docs).
        let mut first = index;
        let mut duplicate = false;
        if let Some(event_id) = p.event_id {
            match self.events.get(&event_id).copied() {
                None => self.remember_event(event_id, index),
                Some(_) if !p.op.is_bounded() => {
                    return Applied {
                        changed: 0,
                        duplicate: true,
                    }
                }
                Some(at) => (first, duplicate) = (at, true),
            }
            if p.op.is_bounded() {
                first = first.min(self.event_bound(event_id, index, p.at));
            }
        }
        let changed = match &p.op {
            Op::Add(session) => {
                self.insert(session);
                1
            }
            Op::Remove { id, reason } => {
                // Only the Grid's DELETE proposes a removal without an event id.
                let source = match p.event_id {
                    Some(_) => RemovalSource::Event,
                    None => RemovalSource::Delete,
                };
                u32::from(self.remove(id, *reason, p.at, source))
            }
            Op::RemoveByUri { uri, reason } => self.remove_on(uri, *reason, p.at, u64::MAX),
            Op::RemoveAddedBy {
                id,
                reason,
                added_by,
            } => {
                let limit = first.min(*added_by);
                match self.sessions.get(id.as_str()) {
                    Some(record) if record.added <= limit => {
                        u32::from(self.remove(id, *reason, p.at, RemovalSource::Event))
                    }
                    _ => 0,
                }
            }
            Op::RemoveByUriAddedBy {
                uri,
                reason,
                added_by,
            } => self.remove_on(uri, *reason, p.at, first.min(*added_by)),
            Op::Batch(proposals) => proposals
                .iter()
                .map(|p| self.apply_entry(index, p).changed)
                .sum(),
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
            Op::DiskAlarm { member, low } => {
                if *low {
                    self.low_disk.insert(*member);
                } else {
                    self.low_disk.remove(member);
                }
                0
            }
            Op::Reconcile(removals) => removals.iter().map(|r| self.remove_judged(r, p.at)).sum(),
        };
        self.expire_tombstones();
        Applied { changed, duplicate }
    }

    /// Applies `p` as the entry after the last one applied.
    #[cfg(test)]
    pub fn apply(&mut self, p: &Proposal) -> Applied {
        self.apply_entry(self.index + 1, p)
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

    /// The log index of the last entry applied to this map (0 before any).
    pub fn index(&self) -> u64 {
        self.index
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

    /// Members whose data directory is low on free space, by their own last report.
    pub fn low_disk_members(&self) -> Vec<MemberId> {
        self.low_disk.iter().copied().collect()
    }

    /// Recently removed sessions with the node URI each was on (bounded, see [`Tombstone`]).
    pub fn tombstones(&self) -> impl Iterator<Item = (&str, &Tombstone)> {
        self.tombstones.iter().map(|(k, v)| (&**k, v))
    }

    /// Live sessions in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &Arc<Record>> {
        self.sessions.values()
    }

    /// Live sessions in no particular order, each rebuilt from its record.
    pub fn sessions(&self) -> impl Iterator<Item = Session> + '_ {
        self.sessions.values().map(|r| r.session())
    }

    fn insert(&mut self, session: &Session) {
        let mut record = Record::new(session);
        record.added = self.index;
        self.insert_record(record);
    }

    /// Inserts a record, replacing the session with its id if there is one.
    pub fn insert_record(&mut self, record: Record) {
        let id = record.id.clone();
        if let Some(old) = self.sessions.get(&id).cloned() {
            self.unindex(&old.uri, &id);
        }
        let uri = record.uri.clone();
        match self.by_uri.get_mut(&uri) {
            None => {
                self.by_uri.insert(uri, NodeSessions::One(id.clone()));
            }
            Some(NodeSessions::One(other)) if *other == id => {}
            Some(NodeSessions::One(other)) => {
                let set = imbl::HashSet::from_iter([other.clone(), id.clone()]);
                self.by_uri.insert(uri, NodeSessions::Many(set));
            }
            Some(NodeSessions::Many(set)) => {
                set.insert(id.clone());
            }
        }
        self.sessions.insert(id, Arc::new(record));
    }

    /// Removes a session the reconciler judged, only if it is still the record it judged (the
    /// same add entry): a session replaced since was not judged.
    fn remove_judged(&mut self, r: &ReconcileRemoval, at: i64) -> u32 {
        match self.sessions.get(r.id.as_str()) {
            Some(record) if record.added == r.added => {
                u32::from(self.remove(&r.id, r.reason, at, RemovalSource::Reconciler))
            }
            _ => 0,
        }
    }

    fn remove(&mut self, id: &str, reason: RemovalReason, at: i64, source: RemovalSource) -> bool {
        let Some(old) = self.sessions.remove(id) else {
            return false;
        };
        let id: Arc<str> = Arc::from(id);
        self.unindex(&old.uri, &id);
        self.put_tombstone(
            id,
            Tombstone {
                removed_at: at,
                reason,
                node: old.uri.to_string(),
                source,
            },
        );
        true
    }

    /// Remembers a removal as the newest (expiry is left to [`Self::expire_tombstones`]).
    fn put_tombstone(&mut self, id: Arc<str>, t: Tombstone) {
        self.tombstone_bytes += id.len() + t.node.len();
        self.tombstone_order.push_back((t.removed_at, id.clone()));
        if let Some(old) = self.tombstones.insert(id.clone(), t) {
            self.tombstone_bytes -= id.len() + old.node.len();
        }
    }

    fn unindex(&mut self, uri: &Arc<str>, id: &Arc<str>) {
        let emptied = match self.by_uri.get_mut(uri) {
            Some(NodeSessions::One(other)) => other == id,
            // A set holds two ids or more: one removal leaves at least one.
            Some(NodeSessions::Many(set)) => {
                set.remove(id);
                if set.len() == 1 {
                    let last = set.iter().next().cloned();
                    if let Some(last) = last {
                        self.by_uri.insert(uri.clone(), NodeSessions::One(last));
                    }
                }
                false
            }
            None => false,
        };
        if emptied {
            self.by_uri.remove(uri);
        }
    }

    /// Removes the sessions on the node `uri` added at or before log index `limit`.
    fn remove_on(&mut self, uri: &str, reason: RemovalReason, at: i64, limit: u64) -> u32 {
        let mut ids = self.ids_on(uri);
        ids.retain(|id| self.sessions.get(id).is_some_and(|r| r.added <= limit));
        ids.iter()
            .map(|id| u32::from(self.remove(id, reason, at, RemovalSource::Event)))
            .sum()
    }

    /// The ids of the live sessions on the node `uri`.
    fn ids_on(&self, uri: &str) -> Vec<Arc<str>> {
        match self.by_uri.get(uri) {
            Some(NodeSessions::One(id)) => vec![id.clone()],
            Some(NodeSessions::Many(set)) => set.iter().cloned().collect(),
            None => Vec::new(),
        }
    }

    /// The log index of the entry that first carried a bounded removal for `id`, remembering
    /// `index` (applied at `at`) as that entry if the id is new or forgotten.
    fn event_bound(&mut self, id: Uuid, index: u64, at: i64) -> u64 {
        let horizon = self.clock.saturating_sub(EVENT_BOUND_TTL_NANOS);
        while let Some((first_at, old)) = self.event_bound_order.front().copied() {
            if first_at >= horizon && self.event_bound_order.len() < MAX_EVENT_BOUNDS {
                break;
            }
            self.event_bound_order.pop_front();
            self.event_bounds.remove(&old);
        }
        if let Some(first) = self.event_bounds.get(&id) {
            return *first;
        }
        self.event_bounds.insert(id, index);
        self.event_bound_order.push_back((at, id));
        index
    }

    /// Remembers a new event id, first carried by the entry at `index`.
    fn remember_event(&mut self, id: Uuid, index: u64) {
        if self.events.insert(id, index).is_some() {
            return;
        }
        self.event_order.push_back(id);
        while self.event_order.len() > MAX_EVENT_IDS {
            if let Some(old) = self.event_order.pop_front() {
                self.events.remove(&old);
            }
        }
    }

    fn expire_tombstones(&mut self) {
        let horizon = self.clock.saturating_sub(TOMBSTONE_TTL_NANOS);
        while let Some((at, id)) = self.tombstone_order.front().cloned() {
            if at >= horizon
                && self.tombstone_order.len() <= MAX_TOMBSTONES
                && self.tombstone_bytes <= MAX_TOMBSTONE_BYTES
            {
                break;
            }
            self.tombstone_order.pop_front();
            if self.tombstones.get(&id).is_some_and(|t| t.removed_at == at) {
                if let Some(t) = self.tombstones.remove(&id) {
                    self.tombstone_bytes -= id.len() + t.node.len();
                }
            }
        }
    }
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

    /// Members whose data directory is low on free space (see `crate::cluster::disk`).
    pub fn low_disk_members(&self) -> Vec<MemberId> {
        self.read().low_disk_members()
    }

    /// The removal history, newest first (see [`SessionMap::removals`]); the map is copied
    /// (O(1)) so the lock is not held while it is read.
    pub fn removals(&self, since_ms: Option<i64>, node: Option<&str>) -> Vec<Removal> {
        self.snapshot().removals(since_ms, node)
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

pub mod command;
mod image;
mod removals;

pub use image::ImageError;

#[cfg(test)]
mod event_tests;
#[cfg(test)]
mod removal_tests;
#[cfg(test)]
mod tests;
