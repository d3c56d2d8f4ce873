//! The backup file: a consistent image of a cluster's whole session map, taken online by
//! `gridraft backup` and read by `gridraft restore` ([`command`]).
//!
//! Layout (format version 1): the magic `GRBACKUP` and the format version (`u16`), the
//! [`BackupHeader`] as JSON (length first, `u32`), the map's snapshot image exactly as a
//! member's snapshot file holds it (`SessionMap::encode`, which carries its own CRC-32), then
//! the trailer: the magic `GRBKEND1`, the image's length (`u64`) and a CRC-32 of every byte
//! before the trailer. All integers are little-endian. The trailer is what makes a truncated
//! file detectable before anything is decoded; the image's own checksum is checked again when
//! it is decoded.
//!
//! This module owns the format and its checks; it does no network I/O (the peer route that
//! serves a backup is in `api::peer`, the client in [`command`]).

pub mod command;

use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::map::{ImageError, SessionMap};
use crate::raft::MemberId;

const MAGIC: &[u8; 8] = b"GRBACKUP";
const END: &[u8; 8] = b"GRBKEND1";
/// The backup format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// The longest header any gridraft writes; a longer one is damage.
const MAX_HEADER: u32 = 64 * 1024;
/// Magic, image length and CRC.
const TRAILER_LEN: u64 = 8 + 8 + 4;

/// What a backup says about itself, readable with `head -c 4096 FILE | strings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format_version: u16,
    /// A random id of this backup; a cluster restored from it takes it as its cluster id.
    pub backup_id: String,
    /// The source cluster's name and id (none: a cluster created by `serve`).
    pub cluster_name: String,
    pub cluster_id: Option<String>,
    /// The member that served the backup.
    pub member: MemberId,
    /// The map holds every entry up to this log index (at or after a read barrier).
    pub index: u64,
    /// The source member's Raft term when it took the image.
    pub term: u64,
    pub sessions: u64,
    /// When the image was taken, UTC (`2026-01-31T12:00:00.123Z`).
    pub created: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} is not a gridraft backup (bad magic)")]
    Magic { path: String },
    #[error("{path}: backup format version {found} is not supported (this build reads {FORMAT_VERSION})")]
    Version { path: String, found: u16 },
    #[error("{path}: unreadable backup header: {detail}")]
    Header { path: String, detail: String },
    #[error("{path} is truncated: {detail}")]
    Truncated { path: String, detail: String },
    #[error(
        "{path} is corrupted: checksum mismatch (stored {stored:08x}, computed {computed:08x})"
    )]
    Checksum {
        path: String,
        stored: u32,
        computed: u32,
    },
    #[error("{path}: the session map in the backup does not decode: {source}")]
    Image { path: String, source: ImageError },
    #[error("{path}: the header says {expected} sessions, the image holds {found}")]
    Count {
        path: String,
        expected: u64,
        found: u64,
    },
}

/// A reader or writer that checksums what passes through it and counts the bytes.
struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<R: Read> Read for Summed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a whole backup of `map` to `w` (buffer it).
pub fn write(header: &BackupHeader, map: &SessionMap, w: impl Write) -> io::Result<()> {
    let mut w = Summed {
        inner: w,
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_le_bytes())?;
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    w.write_all(&(json.len() as u32).to_le_bytes())?;
    w.write_all(&json)?;
    let before_image = w.len;
    map.encode(&mut w)?;
    let image_len = w.len - before_image;
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(END)?;
    inner.write_all(&image_len.to_le_bytes())?;
    inner.write_all(&crc.to_le_bytes())?;
    inner.flush()
}

/// Encodes a backup of `map` on a blocking thread and yields it in chunks, at most a few
/// chunks ahead of the reader: the map is an O(1) copy, the file is never held in memory. An
/// encoding error ends the stream with that error (the client's file then lacks its trailer).
pub fn stream(
    header: BackupHeader,
    map: SessionMap,
) -> impl futures::Stream<Item = io::Result<bytes::Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut w = io::BufWriter::with_capacity(CHUNK, ChunkSender { tx: tx.clone() });
        let done = write(&header, &map, &mut w).and_then(|()| w.flush());
        drop(map);
        if let Err(e) = done {
            tracing::warn!(error = %e, "backup stream ended early");
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// Bytes per streamed chunk.
const CHUNK: usize = 256 * 1024;

/// Hands each write to the stream; fails once the receiver (the connection) is gone.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<io::Result<bytes::Bytes>>,
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads the file at `path` completely and checks it: header, trailer, checksum, then the
/// decoded map against the header's count. Nothing of a bad file is returned.
pub fn read(path: &Path) -> Result<(BackupHeader, SessionMap), BackupError> {
    let header = verify(path)?;
    let name = path.display().to_string();
    let io = |source| BackupError::Io {
        path: name.clone(),
        source,
    };
    let mut r = io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(io)?);
    read_header(&mut r, &name)?;
    let map = SessionMap::decode(&mut r).map_err(|source| BackupError::Image {
        path: name.clone(),
        source,
    })?;
    if map.len() as u64 != header.sessions {
        return Err(BackupError::Count {
            path: name,
            expected: header.sessions,
            found: map.len() as u64,
        });
    }
    Ok((header, map))
}

/// Checks the file's structure and checksum without decoding the map (bounded memory).
pub fn verify(path: &Path) -> Result<BackupHeader, BackupError> {
    let name = path.display().to_string();
    let io = |source| BackupError::Io {
        path: name.clone(),
        source,
    };
    let truncated = |detail: String| BackupError::Truncated {
        path: name.clone(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut r = Summed {
        inner: io::BufReader::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    let (header, header_len) = read_header(&mut r, &name)?;
    let body = size
        .checked_sub(header_len + TRAILER_LEN)
        .ok_or_else(|| truncated(format!("{size} bytes, no room for the end marker")))?;
    io::copy(&mut (&mut r).take(body), &mut io::sink()).map_err(io)?;
    let computed = r.crc.clone().finalize();
    let mut r = r.inner;
    let mut trailer = [0u8; TRAILER_LEN as usize];
    r.read_exact(&mut trailer).map_err(io)?;
    if &trailer[..8] != END {
        return Err(truncated(format!(
            "{size} bytes, the end marker is missing (the copy stopped early?)"
        )));
    }
    let image_len = u64::from_le_bytes(trailer[8..16].try_into().expect("8 bytes"));
    if image_len != body {
        return Err(truncated(format!(
            "the end marker says the image is {image_len} bytes, the file holds {body}"
        )));
    }
    let stored = u32::from_le_bytes(trailer[16..20].try_into().expect("4 bytes"));
    if stored != computed {
        return Err(BackupError::Checksum {
            path: name,
            stored,
            computed,
        });
    }
    Ok(header)
}

/// Reads magic, version and header; returns the header and the bytes they took.
fn read_header(r: &mut impl Read, name: &str) -> Result<(BackupHeader, u64), BackupError> {
    let short = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => BackupError::Truncated {
            path: name.into(),
            detail: "it ends inside the header".into(),
        },
        _ => BackupError::Io {
            path: name.into(),
            source: e,
        },
    };
    let mut magic = [0; 8];
    r.read_exact(&mut magic).map_err(short)?;
    if &magic != MAGIC {
        return Err(BackupError::Magic { path: name.into() });
    }
    let mut b2 = [0; 2];
    r.read_exact(&mut b2).map_err(short)?;
    let found = u16::from_le_bytes(b2);
    if found != FORMAT_VERSION {
        return Err(BackupError::Version {
            path: name.into(),
            found,
        });
    }
    let mut b4 = [0; 4];
    r.read_exact(&mut b4).map_err(short)?;
    let len = u32::from_le_bytes(b4);
    let bad = |detail: String| BackupError::Header {
        path: name.into(),
        detail,
    };
    if len > MAX_HEADER {
        return Err(bad(format!("{len} bytes, more than any gridraft writes")));
    }
    let mut json = vec![0; len as usize];
    r.read_exact(&mut json).map_err(short)?;
    let header: BackupHeader = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    Ok((header, 8 + 2 + 4 + u64::from(len)))
}

#[cfg(test)]
mod tests;
