//! The mirrors configured on a member and what each is doing: shared by its runner (which
//! updates it), the leader's write path (the `sync` wait), `/metrics` and `cluster status`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::{redact_url, MirrorConfig, MirrorKind, MirrorMode};
use crate::map::SessionMap;
use crate::telemetry::Metrics;

/// Every mirror configured on this member (empty when none is).
#[derive(Clone, Default)]
pub struct Mirrors {
    inner: Arc<RwLock<Vec<Arc<MirrorHandle>>>>,
}

/// What a mirror's runner on this member is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// This member is not the leader; another member mirrors.
    Standby,
    Connecting,
    Up,
    Down {
        error: String,
    },
    /// The store's layout is incompatible; this member will not write to it again.
    Failed {
        error: String,
    },
}

impl RunState {
    fn name(&self) -> &'static str {
        match self {
            RunState::Standby => "standby",
            RunState::Connecting => "connecting",
            RunState::Up => "up",
            RunState::Down { .. } => "down",
            RunState::Failed { .. } => "failed",
        }
    }
}

/// One mirror's shared state.
pub struct MirrorHandle {
    pub kind: MirrorKind,
    pub mode: MirrorMode,
    pub sync_timeout: Duration,
    pub redacted_url: String,
    /// The last log index this member's runner has written (only moves while it leads).
    position: watch::Sender<u64>,
    state: Mutex<(RunState, Instant)>,
    lag_millis: AtomicU64,
    pub sync_timeouts: AtomicU64,
    pub full_resyncs: AtomicU64,
    pub skipped: AtomicU64,
}

impl Mirrors {
    pub fn register(&self, cfg: &MirrorConfig) -> Arc<MirrorHandle> {
        let handle = Arc::new(MirrorHandle {
            kind: cfg.kind,
            mode: cfg.mode,
            sync_timeout: cfg.sync_timeout,
            redacted_url: redact_url(&cfg.url),
            position: watch::channel(0).0,
            state: Mutex::new((RunState::Standby, Instant::now())),
            lag_millis: AtomicU64::new(0),
            sync_timeouts: AtomicU64::new(0),
            full_resyncs: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        });
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle.clone());
        handle
    }

    pub fn all(&self) -> Vec<Arc<MirrorHandle>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The leader's `sync` wait after committing `index`: for each `sync` mirror that is up
    /// here, wait until it has written `index`, at most its timeout. A mirror that is down is
    /// not waited for (an outage must not add the timeout to every Grid write); both cases
    /// are counted in `sync_timeouts`.
    pub async fn wait_sync(&self, index: u64) {
        for m in self
            .all()
            .into_iter()
            .filter(|m| m.mode == MirrorMode::Sync)
        {
            if m.state() != RunState::Up {
                m.sync_timeouts.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut rx = m.position.subscribe();
            let done = tokio::time::timeout(m.sync_timeout, rx.wait_for(|p| *p >= index)).await;
            if !matches!(done, Ok(Ok(_))) {
                m.sync_timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The `mirrors` section of `cluster status`.
    pub fn status(&self, applied: u64, map: &SessionMap) -> Value {
        let mirrors: serde_json::Map<String, Value> = self
            .all()
            .iter()
            .map(|m| {
                let (state, since) = m.state_since();
                let error = match &state {
                    RunState::Down { error } | RunState::Failed { error } => Some(error.clone()),
                    _ => None,
                };
                let active = state != RunState::Standby;
                let replicated = map.mirror_progress(m.kind.name());
                let mirrored = if active { m.position() } else { replicated };
                let v = json!({
                    "url": m.redacted_url,
                    "mode": m.mode.name(),
                    "state": state.name(),
                    "state_for_seconds": since.elapsed().as_secs(),
                    "error": error,
                    "mirrored_index": mirrored,
                    "replicated_progress": replicated,
                    "lag_entries": applied.saturating_sub(mirrored),
                    "lag_seconds": active.then(|| m.lag_seconds()),
                    "sync_timeouts": m.sync_timeouts.load(Ordering::Relaxed),
                    "full_resyncs": m.full_resyncs.load(Ordering::Relaxed),
                    "skipped_sessions": m.skipped.load(Ordering::Relaxed),
                });
                (m.kind.name().to_owned(), v)
            })
            .collect();
        Value::Object(mirrors)
    }

    /// Refreshes the mirror gauges before a scrape. `up` is exported only by the member that
    /// runs the mirror (the leader); lag is exported everywhere (from the replicated progress on
    /// members that do not run it).
    pub fn update_metrics(&self, metrics: &Metrics, applied: u64, map: &SessionMap) {
        for m in self.all() {
            let name = m.kind.name();
            let state = m.state();
            let active = state != RunState::Standby;
            let mirrored = if active {
                m.position()
            } else {
                map.mirror_progress(name)
            };
            metrics
                .mirror_lag_entries
                .with_label_values(&[name])
                .set(applied.saturating_sub(mirrored) as i64);
            let timeouts = metrics.mirror_sync_timeouts.with_label_values(&[name]);
            let total = m.sync_timeouts.load(Ordering::Relaxed);
            timeouts.inc_by(total.saturating_sub(timeouts.get()));
            if active {
                metrics
                    .mirror_lag_seconds
                    .with_label_values(&[name])
                    .set(m.lag_seconds());
                metrics
                    .mirror_up
                    .with_label_values(&[name])
                    .set(i64::from(state == RunState::Up));
            } else {
                let _ = metrics.mirror_lag_seconds.remove_label_values(&[name]);
                let _ = metrics.mirror_up.remove_label_values(&[name]);
            }
        }
    }
}

impl MirrorHandle {
    pub fn state(&self) -> RunState {
        self.state_since().0
    }

    fn state_since(&self) -> (RunState, Instant) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a new state; returns the previous one.
    pub fn set_state(&self, state: RunState) -> RunState {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if guard.0 == state {
            return state;
        }
        std::mem::replace(&mut *guard, (state, Instant::now())).0
    }

    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    pub fn set_position(&self, index: u64) {
        self.position.send_replace(index);
    }

    /// Waits until this member's runner has written `index` (tests, `sync` mode).
    pub fn subscribe_position(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    pub fn lag_seconds(&self) -> f64 {
        self.lag_millis.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn set_lag(&self, lag: Duration) {
        self.lag_millis
            .store(lag.as_millis() as u64, Ordering::Relaxed);
    }
}
