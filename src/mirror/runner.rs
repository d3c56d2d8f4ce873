//! One task per configured mirror on every member; it writes only while its member leads.
//!
//! The leader follows the committed log from the mirror's replicated progress: it reads the
//! entries with a clone of the log store, collects the sessions they touch, writes each one as
//! the applied map has it now, and every so often proposes `Op::MirrorProgress` so that a new
//! leader resumes there. When the entries it needs were purged behind a snapshot, or are too
//! old for the map's removal memory to resolve, it resynchronises the whole store instead.
//! Store failures are retried with exponential backoff; an incompatible store stops the mirror.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{EntryPayload, RaftLogReader, ServerState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::hub::{MirrorHandle, Mirrors, RunState};
use super::postgres::PostgresMirror;
use super::redis::RedisMirror;
use super::shadow::UriIndex;
use super::{Mirror, MirrorBatch, MirrorConfig, MirrorError, MirrorKind};
use crate::map::SessionMap;
use crate::map::{now_nanos, Lookup, Op, Proposal, SessionMapReader};
use crate::raft::log_store::LogStore;
use crate::raft::{Entry, Raft};

/// Entries read and written per batch.
const BATCH_ENTRIES: u64 = 1000;
/// Progress is proposed at most this often, and only after real writes.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What a runner needs from its member.
#[derive(Clone)]
pub struct RunnerContext {
    pub raft: Raft,
    pub reader: SessionMapReader,
    pub log: LogStore,
    pub applied: watch::Receiver<u64>,
}

/// Registers every configured mirror in `mirrors` and starts its runner.
pub fn spawn_all(
    configs: &[MirrorConfig],
    mirrors: &Mirrors,
    ctx: RunnerContext,
    stop: CancellationToken,
) {
    for cfg in configs {
        let handle = mirrors.register(cfg);
        let span = tracing::info_span!("mirror", mirror = cfg.kind.name());
        let (url, ctx, stop) = (
            (cfg.url.clone(), cfg.ca_file.clone()),
            ctx.clone(),
            stop.clone(),
        );
        match cfg.kind {
            MirrorKind::Postgres => {
                tokio::spawn(
                    Runner::<PostgresMirror>::new(handle, url, ctx)
                        .run(stop)
                        .instrument(span),
                );
            }
            MirrorKind::Redis => {
                tokio::spawn(
                    Runner::<RedisMirror>::new(handle, url, ctx)
                        .run(stop)
                        .instrument(span),
                );
            }
        }
    }
}

struct Runner<M> {
    handle: Arc<MirrorHandle>,
    url: String,
    ca_file: Option<std::path::PathBuf>,
    ctx: RunnerContext,
    _store: PhantomData<fn() -> M>,
}

/// Where a leader's mirroring stands during one term.
struct Follow {
    position: u64,
    shadow: UriIndex,
    /// Whether the shadow index was checked against the first entry replayed.
    checked: bool,
    /// The store restarted and may have lost data: resynchronise before following.
    force_resync: bool,
    /// A collected batch not written yet.
    pending: Option<Pending>,
    dirty: bool,
    last_proposed: Instant,
}

fn is_leader(raft: &Raft) -> bool {
    raft.metrics().borrow().state == ServerState::Leader
}

impl<M: Mirror> Runner<M> {
    /// `target`: the store's URL and its CA file (see `MirrorConfig`).
    fn new(
        handle: Arc<MirrorHandle>,
        target: (String, Option<std::path::PathBuf>),
        ctx: RunnerContext,
    ) -> Self {
        let (url, ca_file) = target;
        Runner {
            handle,
            url,
            ca_file,
            ctx,
            _store: PhantomData,
        }
    }

    fn name(&self) -> &'static str {
        self.handle.kind.name()
    }

    async fn run(self, stop: CancellationToken) {
        let mut metrics = self.ctx.raft.metrics();
        loop {
            let leading = async {
                metrics
                    .wait_for(|m| m.state == ServerState::Leader)
                    .await
                    .map(drop)
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                r = leading => if r.is_err() { return },
            }
            if matches!(self.handle.state(), RunState::Failed { .. }) {
                // Incompatible store: this member never writes to it again.
                stop.cancelled().await;
                return;
            }
            tracing::info!(url = %self.handle.redacted_url, "leading: mirroring starts");
            let lost = async {
                metrics
                    .wait_for(|m| m.state != ServerState::Leader)
                    .await
                    .map(drop)
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = lost => {
                    tracing::info!("no longer leading: mirroring stops here");
                    self.handle.set_state(RunState::Standby);
                }
                e = self.lead() => {
                    tracing::error!(error = %e, "mirror stopped: fix the store, then restart gridraft");
                    self.handle.set_state(RunState::Failed { error: e.to_string() });
                }
            }
        }
    }

    /// Mirrors while this member leads; returns only on a fatal error.
    async fn lead(&self) -> MirrorError {
        let map = self.ctx.reader.snapshot();
        let mut f = Follow {
            position: map.mirror_progress(self.name()),
            shadow: UriIndex::seed(&map),
            checked: false,
            force_resync: false,
            pending: None,
            dirty: false,
            last_proposed: Instant::now(),
        };
        drop(map);
        self.handle.set_position(f.position);
        self.handle.set_state(RunState::Connecting);
        let mut backoff = BACKOFF_MIN;
        let mut down_since: Option<Instant> = None;
        let mut instance: Option<String> = None;
        loop {
            let result = match M::connect(&self.url, self.ca_file.as_deref()).await {
                Ok(mut store) => {
                    let now = store.instance().map(str::to_owned);
                    if instance.is_some() && now != instance {
                        tracing::info!(
                            "the store restarted since the last connection: full resync"
                        );
                        f.force_resync = true;
                    }
                    instance = now;
                    if let Some(since) = down_since.take() {
                        tracing::info!(down_for = ?since.elapsed(), "mirror reconnected");
                    }
                    self.handle.set_state(RunState::Up);
                    backoff = BACKOFF_MIN;
                    self.follow(&mut store, &mut f).await
                }
                Err(e) => Err::<Infallible, _>(e),
            };
            let Err(e) = result;
            if e.is_fatal() {
                return e;
            }
            if down_since.is_none() {
                tracing::warn!(url = %self.handle.redacted_url, error = %e, "mirror is down; retrying with backoff");
                down_since = Some(Instant::now());
            }
            self.handle.set_state(RunState::Down {
                error: e.to_string(),
            });
            self.update_lag(f.position).await;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Follows the applied log into `store` until the store fails.
    async fn follow(&self, store: &mut M, f: &mut Follow) -> Result<Infallible, MirrorError> {
        let mut applied = self.ctx.applied.clone();
        if f.force_resync {
            self.resync(store, f).await?;
            f.force_resync = false;
        }
        loop {
            let end = *applied.borrow_and_update();
            if end <= f.position {
                self.handle.set_lag(Duration::ZERO);
                self.propose_progress(f, false).await;
                let wake = if f.dirty {
                    PROGRESS_EVERY
                } else {
                    Duration::from_secs(1)
                };
                let _ = tokio::time::timeout(wake, applied.changed()).await;
                continue;
            }
            if let Some(pending) = f.pending.take() {
                // A batch whose write failed or was held back: retried as it was collected
                // (its removals were already taken from the shadow), values resolved afresh.
                self.write_pending(store, f, pending).await?;
                continue;
            }
            let end = end.min(f.position + BATCH_ENTRIES);
            let entries = match self
                .ctx
                .log
                .clone()
                .try_get_log_entries(f.position + 1..=end)
                .await
            {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(error = %e, "read the log for the mirror");
                    tokio::time::sleep(BACKOFF_MIN).await;
                    continue;
                }
            };
            let contiguous = entries.first().map(|e| e.log_id.index) == Some(f.position + 1);
            let covered = f.checked || contiguous && self.seed_covers(&entries[0]);
            if !contiguous || !covered {
                self.resync(store, f).await?;
                continue;
            }
            f.checked = true;
            self.handle.set_lag(entry_age(&entries[0]));
            let last = entries.last().map(|e| e.log_id.index).unwrap_or(end);
            let pending = collect(&entries, last, &mut f.shadow);
            self.write_pending(store, f, pending).await?;
        }
    }

    /// Writes one collected batch and advances the position. If the write fails, or this
    /// member cannot confirm it still leads, the batch stays pending in `f` and is retried.
    async fn write_pending(
        &self,
        store: &mut M,
        f: &mut Follow,
        pending: Pending,
    ) -> Result<(), MirrorError> {
        let batch = resolve(&pending, &mut f.shadow, &self.ctx.reader.snapshot());
        if !batch.is_empty() {
            // Fencing: a deposed leader must not write; confirm with a quorum first.
            if !self.confirm_leadership().await {
                f.pending = Some(pending);
                tokio::time::sleep(BACKOFF_MIN).await;
                return Ok(());
            }
            let last = pending.last;
            f.pending = Some(pending);
            let skipped = store.apply(&batch).await?;
            f.pending = None;
            self.handle
                .skipped
                .fetch_add(skipped as u64, std::sync::atomic::Ordering::Relaxed);
            f.dirty = true;
            f.position = last;
        } else {
            f.position = pending.last;
        }
        self.handle.set_position(f.position);
        self.propose_progress(f, false).await;
        Ok(())
    }

    fn seed_covers(&self, first: &Entry) -> bool {
        match &first.payload {
            EntryPayload::Normal(p) => {
                UriIndex::seed_covers(&self.ctx.reader.snapshot(), p.at, now_nanos())
            }
            _ => true,
        }
    }

    /// Makes the store equal to the map, then follows from the index read before the copy
    /// (replaying entries the copy already holds is harmless).
    async fn resync(&self, store: &mut M, f: &mut Follow) -> Result<(), MirrorError> {
        let index = *self.ctx.applied.borrow();
        let map = self.ctx.reader.snapshot();
        let sessions: Vec<_> = map.sessions().collect();
        tracing::info!(
            from = f.position,
            to = index,
            sessions = sessions.len(),
            "mirror full resync"
        );
        let skipped = store.full_resync(&sessions).await?;
        self.handle
            .skipped
            .fetch_add(skipped as u64, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .full_resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f.shadow = UriIndex::seed(&map);
        f.pending = None;
        f.position = index;
        f.checked = true;
        f.dirty = true;
        self.handle.set_position(index);
        self.propose_progress(f, true).await;
        Ok(())
    }

    async fn confirm_leadership(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.ctx.raft.ensure_linearizable()).await,
            Ok(Ok(_))
        )
    }

    /// Replicates the position after real writes, at most every [`PROGRESS_EVERY`].
    async fn propose_progress(&self, f: &mut Follow, now: bool) {
        if !f.dirty
            || (!now && f.last_proposed.elapsed() < PROGRESS_EVERY)
            || !is_leader(&self.ctx.raft)
        {
            return;
        }
        let p = Proposal {
            at: now_nanos(),
            event_id: None,
            op: Op::MirrorProgress {
                mirror: self.name().to_owned(),
                index: f.position,
            },
        };
        f.last_proposed = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), self.ctx.raft.client_write(p)).await {
            Ok(Ok(_)) => f.dirty = false,
            Ok(Err(e)) => tracing::debug!(error = %e, "propose mirror progress"),
            Err(_) => tracing::debug!("mirror progress not committed in time"),
        }
    }

    /// The age of the oldest entry not yet mirrored (0 when caught up).
    async fn update_lag(&self, position: u64) {
        if *self.ctx.applied.borrow() <= position {
            self.handle.set_lag(Duration::ZERO);
            return;
        }
        if let Ok(entries) = self
            .ctx
            .log
            .clone()
            .try_get_log_entries(position + 1..=position + 1)
            .await
        {
            if let Some(e) = entries.first() {
                self.handle.set_lag(entry_age(e));
            }
        }
    }
}

fn entry_age(e: &Entry) -> Duration {
    match &e.payload {
        EntryPayload::Normal(p) => {
            Duration::from_nanos(now_nanos().saturating_sub(p.at).max(0) as u64)
        }
        _ => Duration::ZERO,
    }
}

/// The sessions `entries` touch, as `map` (applied at or after the last entry) has them now.
pub fn build_batch(entries: &[Entry], shadow: &mut UriIndex, map: &SessionMap) -> MirrorBatch {
    let last = entries.last().map(|e| e.log_id.index).unwrap_or(0);
    let pending = collect(entries, last, shadow);
    resolve(&pending, shadow, map)
}

/// What a run of entries touches, before it is resolved against the map.
#[derive(Debug)]
pub struct Pending {
    /// The index of the last entry collected.
    pub last: u64,
    pub touched: BTreeSet<String>,
    pub remove_uris: Vec<String>,
}

/// Collects the sessions `entries` touch. Removals by URI take their ids from `shadow` here,
/// once; the result must be kept until it is written.
pub fn collect(entries: &[Entry], last: u64, shadow: &mut UriIndex) -> Pending {
    let mut pending = Pending {
        last,
        touched: BTreeSet::new(),
        remove_uris: Vec::new(),
    };
    for e in entries {
        let EntryPayload::Normal(p) = &e.payload else {
            continue;
        };
        // A group-committed entry carries several Grid writes, in order.
        let ops: Vec<&Op> = match &p.op {
            Op::Batch(proposals) => proposals.iter().map(|p| &p.op).collect(),
            op => vec![op],
        };
        for op in ops {
            match op {
                Op::Add(s) => {
                    shadow.add(&s.id, &s.uri);
                    pending.touched.insert(s.id.clone());
                }
                Op::Remove { id, .. } | Op::RemoveAddedBy { id, .. } => {
                    pending.touched.insert(id.clone());
                }
                // Sessions the bound spared are touched too: resolved against the map, they
                // are written back after the store's delete by URI.
                Op::RemoveByUri { uri, .. } | Op::RemoveByUriAddedBy { uri, .. } => {
                    pending.touched.extend(shadow.take(uri));
                    pending.remove_uris.push(uri.clone());
                }
                Op::Reconcile(removals) => {
                    pending
                        .touched
                        .extend(removals.iter().map(|r| r.id.clone()));
                }
                Op::MirrorProgress { .. } | Op::Batch(_) | Op::DiskAlarm { .. } => {}
            }
        }
    }
    pending
}

/// The batch that makes the store hold, for every touched session, what `map` holds now.
pub fn resolve(pending: &Pending, shadow: &mut UriIndex, map: &SessionMap) -> MirrorBatch {
    let mut batch = MirrorBatch {
        remove_uris: pending.remove_uris.clone(),
        ..Default::default()
    };
    for id in &pending.touched {
        match map.get(id) {
            Lookup::Found(record) => {
                shadow.settle(id, Some(&record.uri));
                batch.upserts.push(record.session());
            }
            Lookup::Removed(_) | Lookup::Missing => {
                shadow.settle(id, None);
                batch.deletes.push(id.clone());
            }
        }
    }
    batch
}

#[cfg(test)]
mod tests;
