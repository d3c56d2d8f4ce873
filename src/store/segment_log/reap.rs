//! Purged segments deleted off the append path, a few megabytes at a time.
//!
//! Deleting a 64 MiB segment frees all its blocks in one call, and on a file system mounted
//! with online `discard` that call trims them all before it returns: 20–43 ms per segment on
//! this project's benchmark host (docs/operations.md). A purge deleted every segment behind
//! the snapshot that way, on the thread serving requests and under the log's lock, so every
//! request on the member waited for the disk's trims. A purge now only renames each dead
//! segment to `<name>.deleting` (the reader lists `.seg` files only, so nothing it reads is
//! left behind by a crash), and the `log-reaper` thread cuts the file from its end by [`STEP`]
//! at a time, pausing [`PAUSE`] between steps, then removes it: each step trims a few
//! megabytes, so the log's own `fdatasync`s never wait behind a whole segment's. RocksDB's
//! `DeleteScheduler` deletes large files the same way (`bytes_max_delete_chunk`). An open hands
//! any `.deleting` file an earlier process left to the thread again.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use crate::telemetry::repeat::{Repeated, REPEAT_EVERY};

/// How much of a doomed segment one step frees.
const STEP: u64 = 4 << 20;
/// The pause between two steps: the disk serves the log's writes in between.
const PAUSE: Duration = Duration::from_millis(5);
/// The suffix a dead segment gets while it waits for the thread.
const DOOMED: &str = "deleting";

/// A handle to the thread that deletes purged segments. The thread ends once the log is dropped
/// and the files queued before are deleted.
pub(super) struct Reaper {
    queue: Sender<PathBuf>,
}

impl Reaper {
    /// Starts the thread for the log in `dir` and queues the files an earlier process left.
    pub(super) fn start(dir: &Path) -> io::Result<Self> {
        let (queue, doomed) = mpsc::channel();
        std::thread::Builder::new()
            .name("log-reaper".into())
            .spawn(move || run(doomed))?;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if is_doomed(&path) {
                let _ = queue.send(path);
            }
        }
        Ok(Reaper { queue })
    }

    /// Takes `segment` out of the log at once (a rename) and queues it for deletion.
    pub(super) fn delete(&self, segment: &Path) -> io::Result<()> {
        let mut doomed = segment.as_os_str().to_owned();
        doomed.push(".");
        doomed.push(DOOMED);
        let doomed = PathBuf::from(doomed);
        fs::rename(segment, &doomed)?;
        if let Err(mpsc::SendError(doomed)) = self.queue.send(doomed) {
            // The thread is gone (it never stops while the log is open): delete here.
            fs::remove_file(doomed)?;
        }
        Ok(())
    }
}

/// Whether `path` is a dead segment waiting for the thread.
pub(super) fn is_doomed(path: &Path) -> bool {
    path.extension() == Some(OsStr::new(DOOMED))
}

/// Polls `done` every 10 ms for up to 5 s: whether it came true (for tests).
#[cfg(test)]
pub(super) fn eventually(done: impl Fn() -> bool) -> bool {
    (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        done()
    })
}

fn run(doomed: Receiver<PathBuf>) {
    crate::store::background::lower_priority();
    let failures = Repeated::new(REPEAT_EVERY);
    while let Ok(path) = doomed.recv() {
        match reap(&path, STEP, PAUSE) {
            Ok(()) => {
                if let Some(failures) = failures.succeeded() {
                    tracing::info!(failures, "purged log segments are deleted again");
                }
            }
            Err(e) => {
                if let Some(count) = failures.failed() {
                    tracing::warn!(error = %e, count, file = %path.display(), "a purged log segment could not be deleted; the next start tries again");
                }
            }
        }
    }
}

/// Cuts `path` from its end by `step` bytes at a time, pausing between steps, then removes it.
/// A file already gone is not an error.
fn reap(path: &Path, step: u64, pause: Duration) -> io::Result<()> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut len = file.metadata()?.len();
    while len > step {
        len -= step;
        file.set_len(len)?;
        std::thread::sleep(pause);
    }
    drop(file);
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_cut_down_step_by_step_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.seg.deleting");
        fs::write(&path, vec![7u8; 10_000]).unwrap();
        reap(&path, 3_000, Duration::ZERO).unwrap();
        assert!(!path.exists());
        // Gone already: nothing to do, no error.
        reap(&path, 3_000, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_deleted_segment_leaves_the_log_at_once_and_the_disk_soon() {
        let dir = tempfile::tempdir().unwrap();
        let reaper = Reaper::start(dir.path()).unwrap();
        let segment = dir.path().join("00000000000000000001.seg");
        fs::write(&segment, vec![1u8; 9 << 20]).unwrap();
        reaper.delete(&segment).unwrap();
        assert!(
            !segment.exists(),
            "renamed out of the log before delete returns"
        );
        assert!(
            eventually(|| names(dir.path()).is_empty()),
            "{:?}",
            names(dir.path())
        );
    }

    #[test]
    fn files_an_earlier_process_left_are_deleted_by_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let left = dir.path().join("00000000000000000001.seg.deleting");
        fs::write(&left, b"half cut").unwrap();
        let kept = dir.path().join("00000000000000000002.seg");
        fs::write(&kept, b"live").unwrap();
        let _reaper = Reaper::start(dir.path()).unwrap();
        assert!(eventually(|| !left.exists()));
        assert!(kept.exists(), "only .deleting files are touched");
    }

    fn names(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}
