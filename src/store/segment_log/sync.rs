//! The group commit's side of the log: which segment files the next `fdatasync` must cover,
//! whether the directory changed, and the flushed-end mark written after each sync (see the
//! parent module's doc).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The files the next group commit must `fdatasync`, and whether the directory changed.
pub struct LogSync {
    pub(super) state: Mutex<SyncState>,
    /// Fault injection for tests: while set, every append fails as on a full disk.
    pub(super) disk_full: AtomicBool,
    /// How long each group commit's `fdatasync` of the log's segments took.
    fsync_seconds: prometheus::Histogram,
}

impl Default for LogSync {
    fn default() -> Self {
        let opts = prometheus::HistogramOpts::new(
            "gridraft_log_fsync_duration_seconds",
            "Time each group commit took to fdatasync the Raft log's segments",
        )
        .buckets(vec![
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            0.5, 1.0, 2.5, 5.0,
        ]);
        LogSync {
            state: Mutex::default(),
            disk_full: AtomicBool::new(false),
            fsync_seconds: prometheus::Histogram::with_opts(opts).expect("valid metric"),
        }
    }
}

#[derive(Default)]
pub(super) struct SyncState {
    pub(super) files: Vec<Arc<File>>,
    pub(super) dir: Option<PathBuf>,
    /// The active segment (its first index) and its length after the newest append.
    end: Option<(u64, u64)>,
    /// `log/flushed`, once the log is open.
    mark: Option<Arc<File>>,
    /// Bumped by a truncation: a sync that started before it must not write its end.
    epoch: u64,
}

impl LogSync {
    /// Fault injection (in-process tests of a member whose disk filled up): while `on`, every
    /// append fails with `ENOSPC` before writing a byte, exactly as a full disk makes it fail.
    #[doc(hidden)]
    pub fn inject_disk_full(&self, on: bool) {
        self.disk_full.store(on, Ordering::Relaxed);
    }

    /// Adds the log's fsync latency to `registry`.
    pub fn register(&self, registry: &prometheus::Registry) {
        if let Err(e) = registry.register(Box::new(self.fsync_seconds.clone())) {
            tracing::warn!(error = %e, "log fsync metric not registered");
        }
    }

    pub(super) fn written(&self, file: &Arc<File>, segment: u64, size: u64) {
        let mut st = self.state.lock().expect("never poisoned");
        if !st.files.iter().any(|f| Arc::ptr_eq(f, file)) {
            st.files.push(file.clone());
        }
        st.end = Some((segment, size));
    }

    pub(super) fn dir_changed(&self, dir: &Path) {
        self.state.lock().expect("never poisoned").dir = Some(dir.to_owned());
    }

    pub(super) fn attach(&self, mark: File) {
        self.state.lock().expect("never poisoned").mark = Some(Arc::new(mark));
    }

    /// Empties the mark durably, before a truncation cuts below it.
    pub(super) fn clear_mark(&self) -> io::Result<()> {
        let mut st = self.state.lock().expect("never poisoned");
        st.epoch += 1;
        st.end = None;
        if let Some(mark) = &st.mark {
            mark.set_len(0)?;
            mark.sync_all()?;
        }
        Ok(())
    }

    /// Makes everything written before this call durable: each segment written to since the
    /// last call, then the directory if a segment was created. Then records the active
    /// segment's durable length in the mark. Called by the group-commit thread.
    pub fn sync(&self) -> io::Result<()> {
        let (files, dir, end, epoch) = {
            let mut st = self.state.lock().expect("never poisoned");
            (
                std::mem::take(&mut st.files),
                st.dir.take(),
                st.end,
                st.epoch,
            )
        };
        let result = (|| {
            if !files.is_empty() {
                let started = std::time::Instant::now();
                for f in &files {
                    f.sync_data()?;
                }
                self.fsync_seconds.observe(started.elapsed().as_secs_f64());
            }
            if let Some(d) = &dir {
                File::open(d)?.sync_all()?;
            }
            Ok(())
        })();
        let mut st = self.state.lock().expect("never poisoned");
        if result.is_err() {
            // Whatever was not synced stays due: the next flush tries again.
            for f in files {
                if !st.files.iter().any(|g| Arc::ptr_eq(g, &f)) {
                    st.files.push(f);
                }
            }
            if st.dir.is_none() {
                st.dir = dir;
            }
        } else if let (Some((segment, size)), Some(mark), true) = (end, &st.mark, st.epoch == epoch)
        {
            // Not synced: a lost update leaves an older, lower mark, which is still true.
            if let Err(e) = mark.write_all_at(&super::scan::encode_mark(segment, size), 0) {
                tracing::warn!(error = %e, "log flushed-end mark not written");
            }
        }
        result
    }
}
