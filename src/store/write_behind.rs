//! Writing a file far larger than the working set without leaving it in the page cache.
//!
//! A snapshot is the whole session map: hundreds of megabytes to gigabytes, written once and read
//! again only at the next start or when a follower needs it. Written through the page cache as
//! is, all of it stays there: dirty until the final fsync, which then writes it out at once while
//! the log's own fsyncs queue behind it, then clean and cached beside the previous snapshot's
//! pages until that file is deleted, so every snapshot takes pages the kernel has to find anew
//! (on a virtual machine, pages the host has to back: `dd` of 256 MiB into a new file cost
//! 0.58–0.76 s of system time there against 0.05 s into pages freed a moment before).
//!
//! As PostgreSQL's checkpointer (`checkpoint_flush_after`) and RocksDB (`bytes_per_sync`) do,
//! [`WriteBehind`] asks the kernel to write each window of [`WINDOW`] bytes back as soon as it is
//! full, and drops from the cache what is already written back: a file being written holds about
//! two windows of page cache whatever its size, and the pages it frees are the next window's.
//! [`WriteBehind::finish`] fsyncs the file and drops the rest. Nothing here changes what is
//! durable: the fsync at the end is what a snapshot's installation waits for, as before, and a
//! write-back error is reported by that fsync (`posix_fadvise` starts write-back without
//! consuming its errors).

use std::fs::File;
use std::io::{self, Write};

use rustix::fs::{fadvise, Advice};

/// Bytes written between two write-back requests.
pub const WINDOW: u64 = 8 << 20;

/// A file written front to back, started on its way to disk and out of the page cache as it
/// goes. Put a `BufWriter` in front of it: it passes each write straight to the file.
#[derive(Debug)]
pub struct WriteBehind {
    file: File,
    /// Bytes written since write-back was last requested.
    unrequested: u64,
}

impl WriteBehind {
    pub fn new(file: File) -> Self {
        WriteBehind {
            file,
            unrequested: 0,
        }
    }

    /// Fsyncs the file, then drops it from the page cache.
    pub fn finish(self) -> io::Result<()> {
        self.file.sync_all()?;
        drop_cached(&self.file);
        Ok(())
    }
}

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unrequested += n as u64;
        if self.unrequested >= WINDOW {
            // Over the whole file: the window just filled is dirty, and this starts its
            // write-back; the windows before it are clean by now (their write-back was started
            // one request ago or earlier), and this drops them. A page still being written is
            // left for the next request.
            drop_cached(&self.file);
            self.unrequested = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// `POSIX_FADV_DONTNEED` over all of `file`: Linux starts write-back of its dirty pages and
/// drops its clean ones. Only a hint: a file system that ignores it changes nothing written.
pub fn drop_cached(file: &impl std::os::fd::AsFd) {
    if let Err(e) = fadvise(file, 0, None, Advice::DontNeed) {
        tracing::debug!(error = %e, "posix_fadvise(DONTNEED) refused");
    }
}
