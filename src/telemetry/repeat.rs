//! Logging a failure that repeats (a peer that stays unreachable, a round that keeps failing):
//! the first occurrence at once, then at most one line per interval carrying how many occurred
//! since the last line, and one line when it stops. A retry loop reports every attempt here and
//! logs only when told to, so an outage costs a few lines a minute, not one per attempt.
//!
//! This module decides when to log; the caller writes the line (its own message and fields).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a failure that keeps repeating is logged again.
pub const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// The bookkeeping of one repeating failure, for callers that already hold a lock.
#[derive(Debug, Clone, Default)]
pub struct RepeatState {
    /// Failures since the run started.
    total: u64,
    /// Failures not yet reported in a line.
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl RepeatState {
    /// Records one failure at `now`. `Some(n)`: log it now, saying `n` failures happened since
    /// the last line (this one included).
    pub fn failed(&mut self, now: Instant, every: Duration) -> Option<u64> {
        self.total += 1;
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= every);
        if !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Records a success. `Some(total)`: it ended a run of `total` failures; log the recovery.
    pub fn succeeded(&mut self) -> Option<u64> {
        let total = std::mem::take(&mut self.total);
        self.unlogged = 0;
        self.last_logged = None;
        (total > 0).then_some(total)
    }

    /// Whether the last outcome was a failure.
    pub fn failing(&self) -> bool {
        self.total > 0
    }

    /// Failures in a row so far (0 after a success).
    pub fn run(&self) -> u64 {
        self.total
    }
}

/// A [`RepeatState`] shared between tasks. A success while nothing failed costs one atomic load,
/// so it can sit on a request path.
#[derive(Debug)]
pub struct Repeated {
    every: Duration,
    failing: AtomicBool,
    state: Mutex<RepeatState>,
}

impl Repeated {
    pub fn new(every: Duration) -> Self {
        Repeated {
            every,
            failing: AtomicBool::new(false),
            state: Mutex::new(RepeatState::default()),
        }
    }

    /// See [`RepeatState::failed`].
    pub fn failed(&self) -> Option<u64> {
        self.failing.store(true, Ordering::Relaxed);
        self.lock().failed(Instant::now(), self.every)
    }

    /// See [`RepeatState::succeeded`].
    pub fn succeeded(&self) -> Option<u64> {
        if !self.failing.swap(false, Ordering::Relaxed) {
            return None;
        }
        self.lock().succeeded()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RepeatState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Repeated {
    fn default() -> Self {
        Self::new(REPEAT_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(10);

    #[test]
    fn a_repeating_failure_is_logged_once_then_once_per_interval_with_its_count() {
        let mut s = RepeatState::default();
        let t0 = Instant::now();
        assert_eq!(s.failed(t0, EVERY), Some(1), "the first failure is logged");
        for i in 1..1000 {
            let at = t0 + Duration::from_millis(i * 9);
            assert_eq!(s.failed(at, EVERY), None, "attempt {i} within the interval");
        }
        assert_eq!(
            s.failed(t0 + EVERY, EVERY),
            Some(1000),
            "the next line counts every failure since the last one"
        );
        assert_eq!(s.failed(t0 + EVERY + Duration::from_secs(1), EVERY), None);
        assert!(s.failing());
        assert_eq!(
            s.succeeded(),
            Some(1002),
            "the recovery reports the whole run"
        );
        assert!(!s.failing());
        assert_eq!(
            s.succeeded(),
            None,
            "a success after a success logs nothing"
        );
        assert_eq!(
            s.failed(t0 + EVERY + Duration::from_secs(2), EVERY),
            Some(1),
            "a new run of failures is logged at once"
        );
    }

    #[test]
    fn the_shared_form_logs_the_first_failure_and_one_recovery() {
        let r = Repeated::new(Duration::from_secs(3600));
        assert_eq!(r.succeeded(), None);
        assert_eq!(r.failed(), Some(1));
        assert_eq!(r.failed(), None);
        assert_eq!(r.failed(), None);
        assert_eq!(r.succeeded(), Some(3));
        assert_eq!(r.succeeded(), None);
    }
}
