//! Snapshots as files: the state machine's snapshot lives in `<data-dir>/snapshots/` as one
//! file written by [`SessionMap::encode`](crate::map::SessionMap::encode), never as a
//! value in sled, and openraft streams it to a follower straight from that file.
//!
//! A file is written under a temporary name, fsynced, renamed and its directory fsynced before
//! sled records it as the current snapshot; the previous file is deleted only after that
//! record is durable. A crash at any point leaves the old snapshot current and at most a stray
//! file, which the next start deletes.

use std::io::{self, BufWriter, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::direct_write::{self, DirectFile};
use super::write_behind::{self, WriteBehind};

/// The directory under a member's data dir that holds its snapshot files.
pub const SNAPSHOT_DIR: &str = "snapshots";
const SUFFIX: &str = ".snap";
/// The buffer a snapshot file is written and read through.
pub const FILE_BUFFER: usize = 1 << 20;

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
        write_behind::drop_cached(&self.file);
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

/// Creates the file `path` and writes a snapshot into it with `encode`, fsynced, without leaving
/// it in the page cache: written around the cache (see [`direct_write`]) where the file system
/// takes direct writes, else through it and out of it as it is written (see [`write_behind`]).
/// `encode` is called again from the start when the direct write is refused. On an error the
/// partial file is left for the caller to remove.
pub fn write_new(path: &Path, encode: impl Fn(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    write_new_with(path, &encode, |path| DirectFile::create(path, FILE_BUFFER))
}

/// [`write_new`] with the direct file opened by `create_direct`.
fn write_new_with(
    path: &Path,
    encode: &dyn Fn(&mut dyn Write) -> io::Result<()>,
    create_direct: impl FnOnce(&Path) -> io::Result<DirectFile>,
) -> io::Result<()> {
    let direct = create_direct(path).and_then(|mut file| {
        encode(&mut file)?;
        file.finish()
    });
    match direct {
        Err(e) if direct_write::is_unsupported(&e) => {
            if !BUFFERED_NOTED.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    dir = %path.parent().unwrap_or(path).display(),
                    error = %e,
                    "the file system refuses direct writes: snapshots are written through the page cache"
                );
            }
            write_behind_new(path, encode)
        }
        other => other,
    }
}

/// Creates the file `path` and writes it with `encode` through the page cache, written behind.
fn write_behind_new(
    path: &Path,
    encode: &dyn Fn(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut w = BufWriter::with_capacity(FILE_BUFFER, WriteBehind::new(file));
    encode(&mut w)?;
    w.into_inner().map_err(|e| e.into_error())?.finish()
}

/// Whether this process has said that snapshots go through the page cache.
static BUFFERED_NOTED: AtomicBool = AtomicBool::new(false);

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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::store::write_behind::WINDOW;

    /// Bytes of `path` in the page cache, as util-linux's `fincore` counts them.
    fn cached_bytes(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
            .arg(path)
            .output()
            .expect("fincore (util-linux) runs");
        assert!(out.status.success(), "fincore: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("fincore prints a byte count")
    }

    #[test]
    fn a_new_snapshot_file_is_durable_and_left_out_of_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        // A tmpfs keeps every page whatever it is told: this needs a disk-backed TMPDIR.
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        let fs = rustix::fs::statfs(dir.path()).unwrap();
        assert_ne!(
            fs.f_type as i64, TMPFS_MAGIC,
            "TMPDIR is a tmpfs: set a disk-backed one"
        );

        let path = dir.path().join("snapshot.tmp");
        let len = 6 * WINDOW + 12_345;
        let chunk: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
        write_new(&path, |w| {
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                w.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            Ok(())
        })
        .unwrap();

        let cached = cached_bytes(&path);
        assert!(
            cached <= 1 << 20,
            "{cached} of {len} bytes still in the page cache once written"
        );
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len() as u64, len);
        assert!(back.chunks(chunk.len()).all(|c| c == &chunk[..c.len()]));
    }

    /// What a test snapshot holds: 3 MiB and a bit, in pieces of several sizes.
    fn encode_test_snapshot(w: &mut dyn Write) -> io::Result<()> {
        for i in 0..3_000u32 {
            w.write_all(&i.to_le_bytes())?;
            w.write_all(&[(i % 251) as u8; 1_044])?;
        }
        Ok(())
    }

    fn test_snapshot() -> Vec<u8> {
        let mut v = Vec::new();
        encode_test_snapshot(&mut v).unwrap();
        v
    }

    #[test]
    fn a_file_system_that_refuses_direct_writes_gets_the_snapshot_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.tmp");
        // What tmpfs before Linux 6.6, and other file systems without direct I/O, answer.
        let refused = |_: &Path| Err(refusal());
        write_new_with(&path, &encode_test_snapshot, refused).unwrap();
        assert!(std::fs::read(&path).unwrap() == test_snapshot());

        // A failure that is not a refusal of direct writes is the caller's, as it was.
        let other = |_: &Path| Err(io::Error::from(io::ErrorKind::StorageFull));
        let e = write_new_with(&path, &encode_test_snapshot, other).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn a_refusal_after_the_first_bytes_starts_the_snapshot_again_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.tmp");
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let refuse_first = |w: &mut dyn Write| {
            if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                w.write_all(b"half a snapshot")?;
                return Err(refusal());
            }
            encode_test_snapshot(w)
        };
        write_new(&path, refuse_first).unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        assert!(std::fs::read(&path).unwrap() == test_snapshot());
    }

    /// A file system's refusal of direct writes (`EINVAL`).
    fn refusal() -> io::Error {
        io::Error::from_raw_os_error(rustix::io::Errno::INVAL.raw_os_error())
    }
}
