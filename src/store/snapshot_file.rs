//! Snapshots as files: the state machine's snapshot lives in `<data-dir>/snapshots/` as one
//! file written by [`SessionMap::encode`](crate::map::SessionMap::encode), never as a
//! value in sled, and openraft streams it to a follower straight from that file.
//!
//! A file is written under a temporary name, fsynced, renamed and its directory fsynced before
//! sled records it as the current snapshot; the previous file is deleted only after that
//! record is durable. A crash at any point leaves the old snapshot current and at most a stray
//! file, which the next start deletes.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// The directory under a member's data dir that holds its snapshot files.
pub const SNAPSHOT_DIR: &str = "snapshots";
const SUFFIX: &str = ".snap";

/// A snapshot file, open for reading (the current snapshot) or for writing (one being received).
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
}

impl SnapshotFile {
    /// Opens an existing snapshot file for reading.
    pub async fn open(path: PathBuf) -> io::Result<Self> {
        let file = tokio::fs::File::open(&path).await?;
        Ok(SnapshotFile { file, path })
    }

    /// Creates a new, empty file in `dir` to receive a snapshot into.
    pub async fn create_incoming(dir: &Path) -> io::Result<Self> {
        let path = dir.join(format!("incoming-{}.tmp", uuid::Uuid::new_v4()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(SnapshotFile { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes and fsyncs the file, then closes it, returning where it is.
    pub async fn finish(mut self) -> io::Result<PathBuf> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.file.sync_all().await?;
        Ok(self.path)
    }
}

/// The file name of the snapshot covering the log up to `index`.
pub fn file_name(index: u64) -> String {
    format!("snapshot-{index:020}-{}{SUFFIX}", uuid::Uuid::new_v4())
}

/// Whether a file name in the snapshot directory is a complete snapshot (not a partial file).
pub fn is_complete(name: &str) -> bool {
    name.ends_with(SUFFIX)
}

/// Renames `from` to `dir/name` and makes the rename durable.
pub fn install(from: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    let to = dir.join(name);
    std::fs::rename(from, &to)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(to)
}

/// Deletes the snapshot files in `dir` other than `keep`, and with `partial` also files still
/// being written or received (only safe when nothing is writing: at start).
pub fn remove_others(dir: &Path, keep: Option<&str>, partial: bool) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let complete = name.ends_with(SUFFIX);
        if keep == Some(&*name) || !entry.file_type()?.is_file() || !(complete || partial) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}
