//! The snapshot form of a [`SessionMap`], written and read as a stream so that a map of a
//! million sessions never exists twice in memory.
//!
//! Layout (format version 3): the magic `GRSNAP` and the format version (2 bytes), the bincode
//! [`Header`] (length first), then each live session as its stored parts (the `GET` body as it
//! is served, so a restore renders nothing) ending with the log index that added it, then each
//! remembered removal as its id, node URI, time, reason, source (`event`, `delete`,
//! `reconciler`) and the reason's detail (how long the node was unreachable, in ms; else 0),
//! oldest first, then the log index of
//! the entry that first carried each remembered event id (one `u64` each, in the header's
//! order), then the sections, then a CRC-32 of every byte before it. A truncated or damaged file
//! is an error, never a partial map.
//!
//! Every field is at most [`MAX_FIELD`] bytes, and encoding fails rather than write a larger
//! one: a snapshot the decoder refuses would leave a member that never starts again, and every
//! member snapshots the same map. No field holds a collection that grows with the map (version
//! 1 held all removals in its header, which grew past the limit with long node URIs).
//!
//! Sections carry state that is neither a session nor a removal, each in its own record, so that
//! adding one changes nothing else: a count (`u32`), then per section a tag (`u32`) and its
//! bytes. A reader skips tags it does not know. Tag 1: the members low on disk space (bincode
//! `Vec<u64>`). Tag 2: the remembered event bounds, oldest first (bincode
//! `Vec<(Uuid, u64, i64)>`: event id, first log index, proposal time).
//!
//! Versions 1 and 2 are still read, so that a member upgraded in place starts. Their removals
//! have no source (read as `unknown`) and only Selenium's reasons. Version 1's sessions carry no add
//! index and its events no first index (both read as 0: such sessions may be removed by any copy
//! of any event, and such events bound their later copies to them), and it has no sections.

use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Record, RemovalSource, SessionMap, Span, Tombstone};
use crate::session::RemovalReason;

const MAGIC: &[u8; 6] = b"GRSNAP";
const VERSION: u16 = 3;
/// Version 2: removals without a source or a detail.
const VERSION_2: u16 = 2;
/// The first version whose removal records carry a source and a detail.
const SOURCE_SINCE: u16 = 3;
/// The first version recording add and event log indexes.
const ADDED_INDEX_SINCE: u16 = 2;
/// The first version with sections after the sessions; older snapshots have none.
const FIRST_WITH_SECTIONS: u16 = 2;
/// Section tag: the members low on disk space.
const SECTION_LOW_DISK: u32 = 1;
/// Section tag: the first log index of each event with a bounded removal, with its time.
const SECTION_EVENT_BOUNDS: u32 = 2;
/// No snapshot has more sections than this; more is damage.
const MAX_SECTIONS: u32 = 1024;
/// Version 1: the removals inside the header.
const VERSION_1: u16 = 1;
/// No stored string or body is larger than this; anything larger is damage.
const MAX_FIELD: u32 = 256 << 20;

/// Everything in the map except the live sessions and the removals, which follow it one by one.
#[derive(Serialize, Deserialize)]
struct Header {
    clock: i64,
    events: Vec<Uuid>,
    mirror_progress: Vec<(String, u64)>,
    sessions: u64,
    tombstones: u64,
}

/// A removal as the header of format version 1 held it (bincode: no field may change).
#[derive(Deserialize)]
struct TombstoneV1 {
    removed_at: i64,
    reason: RemovalReason,
    node: String,
}

/// The header of format version 1.
#[derive(Deserialize)]
struct HeaderV1 {
    clock: i64,
    /// Removals in the order they happened, oldest first.
    tombstones: Vec<(String, TombstoneV1)>,
    events: Vec<Uuid>,
    mirror_progress: Vec<(String, u64)>,
    sessions: u64,
}

impl From<HeaderV1> for (Header, Vec<(String, Tombstone)>) {
    fn from(h: HeaderV1) -> Self {
        let header = Header {
            clock: h.clock,
            events: h.events,
            mirror_progress: h.mirror_progress,
            sessions: h.sessions,
            tombstones: 0,
        };
        let tombstones = h
            .tombstones
            .into_iter()
            .map(|(id, t)| {
                let t = Tombstone {
                    removed_at: t.removed_at,
                    reason: t.reason,
                    node: t.node,
                    source: RemovalSource::Unknown,
                };
                (id, t)
            })
            .collect();
        (header, tombstones)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading the snapshot: {0}")]
    Io(#[from] io::Error),
    #[error("not a gridraft snapshot (bad magic)")]
    Magic,
    #[error("snapshot format version {0} is not supported (this build reads 1 to {VERSION})")]
    Version(u16),
    #[error("snapshot header: {0}")]
    Header(#[from] bincode::Error),
    #[error("snapshot field of {0} bytes is larger than any gridraft writes")]
    Field(u32),
    #[error("snapshot record: {0}")]
    Record(#[from] super::BadRecord),
    #[error("snapshot removal record: unknown reason {0:?}")]
    Reason(String),
    #[error("snapshot removal record: unknown source {0:?}")]
    Source(String),
    #[error("snapshot checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
}

/// A writer that checksums what passes through it.
struct Crc<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes a field, or fails if it is one that [`get_bytes`] would refuse.
fn put_bytes(w: &mut impl Write, b: &[u8]) -> io::Result<()> {
    let len = u32::try_from(b.len())
        .ok()
        .filter(|l| *l <= MAX_FIELD)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "snapshot field of {} bytes is over the limit of {MAX_FIELD} that reading accepts",
                    b.len()
                ),
            )
        })?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(b)
}

fn put_u32(w: &mut impl Write, v: u32) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

fn put_u64(w: &mut impl Write, v: u64) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

fn get_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn get_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn get_bytes(r: &mut impl Read) -> Result<Vec<u8>, ImageError> {
    get_bytes_up_to(r, MAX_FIELD)
}

fn get_bytes_up_to(r: &mut impl Read, limit: u32) -> Result<Vec<u8>, ImageError> {
    let len = get_u32(r)?;
    if len > limit {
        return Err(ImageError::Field(len));
    }
    // Read into spare capacity: zeroing the buffer first cost a fifth of a restart's time. Only
    // what a field can hold is reserved ahead; a longer one grows as it arrives.
    let mut v = Vec::with_capacity(len.min(MAX_FIELD) as usize);
    r.take(u64::from(len)).read_to_end(&mut v)?;
    if v.len() != len as usize {
        return Err(ImageError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(v)
}

fn get_string(r: &mut impl Read) -> Result<String, ImageError> {
    String::from_utf8(get_bytes(r)?)
        .map_err(|e| ImageError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

impl SessionMap {
    /// Writes the map's snapshot form to `w` (buffer it: this makes many small writes).
    pub fn encode(&self, w: impl Write) -> io::Result<()> {
        let mut w = Crc {
            inner: w,
            hasher: crc32fast::Hasher::new(),
        };
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        let tombstones: Vec<(&Arc<str>, &Tombstone)> = self
            .tombstone_order
            .iter()
            .filter_map(|(at, id)| {
                let t = self.tombstones.get(id)?;
                (t.removed_at == *at).then_some((id, t))
            })
            .collect();
        let header = Header {
            clock: self.clock,
            events: self.event_order.iter().copied().collect(),
            mirror_progress: self
                .mirror_progress
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            sessions: self.sessions.len() as u64,
            tombstones: tombstones.len() as u64,
        };
        let header = bincode::serialize(&header).map_err(io::Error::other)?;
        put_bytes(&mut w, &header)?;
        for record in self.sessions.values() {
            let (caps, stereo) = record.spans();
            put_bytes(&mut w, record.id.as_bytes())?;
            put_bytes(&mut w, record.uri.as_bytes())?;
            put_bytes(&mut w, record.start.as_bytes())?;
            put_bytes(&mut w, &record.get_body)?;
            for v in [caps.start, caps.end, stereo.start, stereo.end] {
                put_u32(&mut w, v)?;
            }
            put_u64(&mut w, record.added)?;
        }
        for (id, t) in tombstones {
            put_bytes(&mut w, id.as_bytes())?;
            put_bytes(&mut w, t.node.as_bytes())?;
            w.write_all(&t.removed_at.to_le_bytes())?;
            put_bytes(&mut w, t.reason.name().as_bytes())?;
            put_bytes(&mut w, t.source.name().as_bytes())?;
            put_u64(&mut w, t.reason.detail_ms())?;
        }
        for id in &self.event_order {
            put_u64(&mut w, self.events.get(id).copied().unwrap_or(0))?;
        }
        let low_disk: Vec<u64> = self.low_disk.iter().copied().collect();
        let bounds: Vec<(Uuid, u64, i64)> = self
            .event_bound_order
            .iter()
            .filter_map(|(at, id)| Some((*id, *self.event_bounds.get(id)?, *at)))
            .collect();
        let sections = [
            (
                SECTION_LOW_DISK,
                bincode::serialize(&low_disk).map_err(io::Error::other)?,
            ),
            (
                SECTION_EVENT_BOUNDS,
                bincode::serialize(&bounds).map_err(io::Error::other)?,
            ),
        ];
        put_u32(&mut w, sections.len() as u32)?;
        for (tag, bytes) in &sections {
            put_u32(&mut w, *tag)?;
            put_bytes(&mut w, bytes)?;
        }
        let crc = w.hasher.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes())?;
        w.flush()
    }

    /// Reads a map written by [`SessionMap::encode`] (buffer `r`).
    ///
    /// Two threads: this one builds the map while another reads, checks and allocates the
    /// records ahead of it, handing them over in chunks. At a million sessions each half is
    /// about half of a restart.
    pub fn decode(r: impl Read + Send) -> Result<SessionMap, ImageError> {
        let mut r = Crc {
            inner: r,
            hasher: crc32fast::Hasher::new(),
        };
        let mut magic = [0; 6];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(ImageError::Magic);
        }
        let mut version = [0; 2];
        r.read_exact(&mut version)?;
        let version = u16::from_le_bytes(version);
        let (header, old_tombstones) = match version {
            VERSION | VERSION_2 => (
                bincode::deserialize::<Header>(&get_bytes(&mut r)?)?,
                Vec::new(),
            ),
            // Its header held every removal, and may be larger than any field of version 2.
            VERSION_1 => {
                bincode::deserialize::<HeaderV1>(&get_bytes_up_to(&mut r, u32::MAX)?)?.into()
            }
            other => return Err(ImageError::Version(other)),
        };
        let indexed = version >= ADDED_INDEX_SINCE;
        let mut map = SessionMap {
            clock: header.clock,
            ..Default::default()
        };
        let sessions = header.sessions;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(CHUNKS_AHEAD);
        let read = std::thread::scope(|scope| {
            let reader = std::thread::Builder::new()
                .name("snapshot-read".into())
                .spawn_scoped(scope, move || {
                    read_records(&mut r, sessions, indexed, tx).map(|()| r)
                });
            let reader = reader.map_err(|e| {
                ImageError::Io(io::Error::other(format!("start the snapshot reader: {e}")))
            })?;
            for chunk in rx {
                for record in chunk {
                    map.insert_record(record);
                }
            }
            reader.join().expect("the snapshot reader does not panic")
        });
        let mut r = read?;
        let mut tombstones = old_tombstones;
        for _ in 0..header.tombstones {
            tombstones.push(read_tombstone(&mut r, version >= SOURCE_SINCE)?);
        }
        let mut first_indexes = Vec::with_capacity(header.events.len());
        for _ in &header.events {
            first_indexes.push(if indexed { get_u64(&mut r)? } else { 0 });
        }
        if version >= FIRST_WITH_SECTIONS {
            read_sections(&mut r, &mut map)?;
        }
        let computed = r.hasher.clone().finalize();
        let stored = get_u32(&mut r.inner)?;
        if stored != computed {
            return Err(ImageError::Checksum { stored, computed });
        }
        for (id, t) in tombstones {
            map.put_tombstone(Arc::from(id), t);
        }
        for (e, index) in header.events.into_iter().zip(first_indexes) {
            map.remember_event(e, index);
        }
        for (name, index) in header.mirror_progress {
            map.mirror_progress.insert(Arc::from(name), index);
        }
        Ok(map)
    }
}

/// Reads the sections after the sessions into `map`, skipping unknown tags.
fn read_sections(r: &mut impl Read, map: &mut SessionMap) -> Result<(), ImageError> {
    let count = get_u32(r)?;
    if count > MAX_SECTIONS {
        return Err(ImageError::Field(count));
    }
    for _ in 0..count {
        let tag = get_u32(r)?;
        let bytes = get_bytes(r)?;
        match tag {
            SECTION_LOW_DISK => {
                let low: Vec<u64> = bincode::deserialize(&bytes)?;
                map.low_disk = low.into_iter().collect();
            }
            SECTION_EVENT_BOUNDS => {
                let bounds: Vec<(Uuid, u64, i64)> = bincode::deserialize(&bytes)?;
                for (id, index, at) in bounds {
                    map.event_bounds.insert(id, index);
                    map.event_bound_order.push_back((at, id));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Records handed from the reader to the map builder at a time.
const CHUNK: u64 = 256;
/// Chunks the reader may be ahead of the builder.
const CHUNKS_AHEAD: usize = 16;

/// Reads `sessions` records from `r` and sends them to `tx` in chunks. Stops early (without an
/// error of its own) only if the receiver is gone.
fn read_records(
    r: &mut impl Read,
    sessions: u64,
    indexed: bool,
    tx: std::sync::mpsc::SyncSender<Vec<Record>>,
) -> Result<(), ImageError> {
    let mut left = sessions;
    while left > 0 {
        let n = left.min(CHUNK);
        let mut chunk = Vec::with_capacity(n as usize);
        for _ in 0..n {
            chunk.push(read_record(r, indexed)?);
        }
        left -= n;
        if tx.send(chunk).is_err() {
            break;
        }
    }
    Ok(())
}

fn read_tombstone(r: &mut impl Read, with_source: bool) -> Result<(String, Tombstone), ImageError> {
    let id = get_string(r)?;
    let node = get_string(r)?;
    let mut at = [0; 8];
    r.read_exact(&mut at)?;
    let reason = get_string(r)?;
    let (source, detail) = if with_source {
        let source = get_string(r)?;
        let source = RemovalSource::from_name(&source).ok_or(ImageError::Source(source))?;
        (source, get_u64(r)?)
    } else {
        (RemovalSource::Unknown, 0)
    };
    let reason = RemovalReason::from_stored(&reason, detail).ok_or(ImageError::Reason(reason))?;
    let t = Tombstone {
        removed_at: i64::from_le_bytes(at),
        reason,
        node,
        source,
    };
    Ok((id, t))
}

fn read_record(r: &mut impl Read, indexed: bool) -> Result<Record, ImageError> {
    let id = get_string(r)?;
    let uri = get_string(r)?;
    let start = get_string(r)?;
    let body = get_bytes(r)?;
    let mut v = [0u32; 4];
    for x in &mut v {
        *x = get_u32(r)?;
    }
    let added = if indexed { get_u64(r)? } else { 0 };
    let span = |start, end| Span { start, end };
    let mut record = Record::from_parts(id, uri, start, body, span(v[0], v[1]), span(v[2], v[3]))?;
    record.added = added;
    Ok(record)
}

#[cfg(test)]
mod tests;
