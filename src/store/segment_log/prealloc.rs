//! The next segment, zero-filled ahead of need.
//!
//! An append that grows its file makes the group commit's `fdatasync` write the file's new
//! size and block map as well as the data; into blocks that were written and synced before,
//! it writes the data alone, in less time and less CPU. So a thread of the log writes the next
//! segment's worth of zeros under `log/next.prealloc` and syncs it, and the roll renames it into
//! place. It is asked for once the first segment is half full, and from then on at each roll,
//! so that it has a whole segment's time to write the zeros a megabyte at a time. When it is
//! not ready (the thread is still writing it, or the disk had no room for it), the roll creates
//! an empty segment, as without this. PostgreSQL zero-fills its WAL segments and etcd
//! preallocates its WAL files for the same reason.
//!
//! A small log (a test's, a quiet cluster's) never asks for one. The thread writes zeros only
//! while the disk keeps [`RESERVE`] free beyond them, so that it never takes the last free
//! space from the appends or makes the member's disk watch report low space.
//!
//! The zeros past a preallocated segment's last record are what the reader already takes for
//! the end of a log (see `scan.rs`): a zero header followed by zeros to the end of the file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::telemetry::repeat::Repeated;

/// The file the thread fills; its name is not a segment's, so a reader never lists it.
pub(super) const NEXT: &str = "next.prealloc";
/// Zeros are written and synced in pieces of this size, so that the group commit's `fdatasync`
/// of the log never waits behind more than one piece of write-back on the same disk.
const PIECE: usize = 1 << 20;
/// After a failed fill (a full disk, most often), the next try waits this long, doubling up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Free space that must remain after the zeros are written: `[disk] min-free-bytes`' default.
const RESERVE: u64 = 256 << 20;

pub(super) struct Prealloc {
    shared: Arc<Shared>,
    /// Asks the thread for a file; dropped (so the thread ends) with the log.
    wake: Sender<()>,
    /// A file was asked for since the last [`Prealloc::take`].
    asked: AtomicBool,
}

struct Shared {
    path: PathBuf,
    bytes: u64,
    ready: Mutex<Option<File>>,
    stop: AtomicBool,
    failures: Repeated,
}

impl Prealloc {
    /// Starts the thread for segments of `bytes` under `dir`, removing what an earlier process
    /// left half written.
    pub(super) fn start(dir: &Path, bytes: u64) -> io::Result<Self> {
        let path = dir.join(NEXT);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let shared = Arc::new(Shared {
            path,
            bytes,
            ready: Mutex::new(None),
            stop: AtomicBool::new(false),
            failures: Repeated::default(),
        });
        let (wake, wakes) = mpsc::channel();
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("log-prealloc".into())
            .spawn(move || thread.run(wakes))?;
        Ok(Prealloc {
            shared,
            wake,
            asked: AtomicBool::new(false),
        })
    }

    /// Asks for the next segment (once per segment: later calls cost an atomic load).
    pub(super) fn ask(&self) {
        if !self.asked.load(Ordering::Relaxed) && !self.asked.swap(true, Ordering::Relaxed) {
            let _ = self.wake.send(());
        }
    }

    /// The ready file, renamed to `path`; `None` when no file is ready (the caller creates an
    /// empty segment).
    pub(super) fn take(&self, path: &Path) -> Option<File> {
        self.asked.store(false, Ordering::Relaxed);
        let file = self.shared.ready.lock().expect("never poisoned").take()?;
        if let Err(e) = fs::rename(&self.shared.path, path) {
            tracing::warn!(error = %e, segment = %path.display(), "a preallocated log segment could not be put in place; an empty one is used");
            let _ = fs::remove_file(&self.shared.path);
            return None;
        }
        Some(file)
    }

    /// Whether a file was asked for and not yet taken (for tests).
    #[cfg(test)]
    pub(super) fn asked_for(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// Whether a file is ready (for tests).
    #[cfg(test)]
    pub(super) fn is_ready(&self) -> bool {
        self.shared.ready.lock().expect("never poisoned").is_some()
    }
}

impl Drop for Prealloc {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Fills a file after each wake-up while none is ready, until the log is dropped. A failed
    /// fill is tried again after a back-off, as long as no file is ready. What the thread leaves
    /// when the log is dropped is removed by the next open.
    fn run(&self, wakes: Receiver<()>) {
        while wakes.recv().is_ok() {
            let mut retry = RETRY_FIRST;
            while !self.stopped() && self.ready.lock().expect("never poisoned").is_none() {
                match self.fill() {
                    Ok(file) => {
                        *self.ready.lock().expect("never poisoned") = Some(file);
                        if let Some(failures) = self.failures.succeeded() {
                            tracing::info!(failures, "the next log segment is preallocated again");
                        }
                    }
                    Err(e) => {
                        // Once the log is closed, a reopened one may own the path: left alone.
                        if self.stopped() {
                            return;
                        }
                        let _ = fs::remove_file(&self.path);
                        if let Some(count) = self.failures.failed() {
                            tracing::warn!(error = %e, count, retry_in = ?retry, "could not preallocate the next log segment; segments grow as they are written until it can");
                        }
                        // Waits out the back-off; a wake-up meanwhile changes nothing.
                        if let Err(RecvTimeoutError::Disconnected) = wakes.recv_timeout(retry) {
                            return;
                        }
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        }
    }

    /// Writes `bytes` of zeros to a new file at `path` and syncs it.
    fn fill(&self) -> io::Result<File> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let st = rustix::fs::statvfs(dir)?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < self.bytes.saturating_add(RESERVE) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "{free} bytes free, fewer than the segment's {} and {RESERVE} to spare",
                    self.bytes
                ),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)?;
        let zeros = vec![0u8; PIECE];
        let mut at = 0u64;
        while at < self.bytes {
            if self.stopped() {
                return Err(io::Error::other("the log was closed"));
            }
            let n = (self.bytes - at).min(PIECE as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            file.sync_data()?;
            at += n as u64;
        }
        file.sync_all()?;
        Ok(file)
    }
}
