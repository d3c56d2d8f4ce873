//! The Raft log's entries in append-only segment files.
//!
//! An entry is written once: appended to the active segment (`log/<first index>.seg`) and made
//! durable by the group-commit thread's `fdatasync` of that file (see [`LogSync`]). A purge
//! deletes whole segments; a truncation cuts the segment holding the first removed entry and
//! deletes the ones after it. Only each entry's position is kept in memory; entries are read
//! back with `pread`, which the page cache serves for the recent ones that replication and
//! apply ask for.
//!
//! A record is `len: u32 LE`, `crc32(payload): u32 LE`, then the payload (the bincode entry).
//! On open every segment is read: a record cut short or failing its checksum at the end of the
//! last segment is a write the crash interrupted (never acknowledged) and is cut off; anywhere
//! else it is damage, and the open fails. Entries must follow each other without a gap; a gap
//! left by a crash during a truncation ends the log there.
//!
//! The log used to live in a sled tree; [`SegmentLog::open`] moves such a log here once.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Entry, LogId};

/// A segment is closed and a new one started once it holds this much.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record accepted on reading; larger is damage (entries are at most a 96 KiB batch,
/// or a membership change).
const MAX_RECORD: u32 = 64 << 20;
const HEADER: u64 = 8;
pub const LOG_DIR: &str = "log";

/// Where an entry is, and its id (for the log state without reading it back).
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u32,
    log_id: LogId,
}

struct Segment {
    file: Arc<File>,
    /// Bytes written (the offset of the next record).
    size: u64,
}

struct Inner {
    dir: PathBuf,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: u64,
    /// Segments by the index of the first entry written to them.
    segments: BTreeMap<u64, Segment>,
    /// Positions of the entries `first..first + locs.len()`.
    locs: VecDeque<Loc>,
    first: u64,
}

/// The files the next group commit must `fdatasync`, and whether the directory changed.
#[derive(Default)]
pub struct LogSync {
    state: Mutex<SyncState>,
    /// Fault injection for tests: while set, every append fails as on a full disk.
    disk_full: AtomicBool,
}

#[derive(Default)]
struct SyncState {
    files: Vec<Arc<File>>,
    dir: Option<PathBuf>,
}

impl LogSync {
    /// Fault injection (in-process tests of a member whose disk filled up): while `on`, every
    /// append fails with `ENOSPC` before writing a byte, exactly as a full disk makes it fail.
    #[doc(hidden)]
    pub fn inject_disk_full(&self, on: bool) {
        self.disk_full.store(on, Ordering::Relaxed);
    }

    fn written(&self, file: &Arc<File>) {
        let mut st = self.state.lock().expect("never poisoned");
        if !st.files.iter().any(|f| Arc::ptr_eq(f, file)) {
            st.files.push(file.clone());
        }
    }

    fn dir_changed(&self, dir: &Path) {
        self.state.lock().expect("never poisoned").dir = Some(dir.to_owned());
    }

    /// Makes everything written before this call durable: each segment written to since the
    /// last call, then the directory if a segment was created. Called by the group-commit
    /// thread.
    pub fn sync(&self) -> io::Result<()> {
        let (files, dir) = {
            let mut st = self.state.lock().expect("never poisoned");
            (std::mem::take(&mut st.files), st.dir.take())
        };
        let result = (|| {
            for f in &files {
                f.sync_data()?;
            }
            if let Some(d) = &dir {
                File::open(d)?.sync_all()?;
            }
            Ok(())
        })();
        if result.is_err() {
            // Whatever was not synced stays due: the next flush tries again.
            let mut st = self.state.lock().expect("never poisoned");
            for f in files {
                if !st.files.iter().any(|g| Arc::ptr_eq(g, &f)) {
                    st.files.push(f);
                }
            }
            if st.dir.is_none() {
                st.dir = dir;
            }
        }
        result
    }
}

#[derive(Clone)]
pub struct SegmentLog {
    inner: Arc<Mutex<Inner>>,
    sync: Arc<LogSync>,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

fn damaged(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

fn open_segment(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

impl SegmentLog {
    /// Opens the log under `data_dir/log`, dropping entries at or below `last_purged`.
    /// `legacy` holds the entries of a log kept by an earlier version (oldest first): when it
    /// is not empty, they replace whatever segments exist, and are durable when this returns.
    pub fn open(
        data_dir: &Path,
        last_purged: Option<u64>,
        legacy: Vec<Vec<u8>>,
        sync: Arc<LogSync>,
    ) -> io::Result<Self> {
        Self::open_with(data_dir, last_purged, legacy, sync, SEGMENT_BYTES)
    }

    fn open_with(
        data_dir: &Path,
        last_purged: Option<u64>,
        legacy: Vec<Vec<u8>>,
        sync: Arc<LogSync>,
        segment_bytes: u64,
    ) -> io::Result<Self> {
        let dir = data_dir.join(LOG_DIR);
        fs::create_dir_all(&dir)?;
        if !legacy.is_empty() {
            // A crash during an earlier move left partial segments: the legacy log is whole.
            for (_, path) in list(&dir)? {
                fs::remove_file(path)?;
            }
        }
        let log = SegmentLog {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.clone(),
                segment_bytes,
                segments: BTreeMap::new(),
                locs: VecDeque::new(),
                first: 0,
            })),
            sync,
        };
        if !legacy.is_empty() {
            let mut entries = legacy
                .iter()
                .map(|raw| bincode::deserialize::<Entry>(raw).map_err(io::Error::other))
                .collect::<io::Result<Vec<_>>>()?;
            // A crash during a purge could leave purged entries in the old tree.
            entries.retain(|e| last_purged.is_none_or(|p| e.log_id.index > p));
            log.append(&entries)?;
            if let (Some(p), true) = (last_purged, entries.is_empty()) {
                log.inner.lock().expect("never poisoned").first = p + 1;
            }
            // The segment and the directory holding its new name.
            log.sync.sync()?;
            return Ok(log);
        }
        log.recover(last_purged)?;
        Ok(log)
    }

    fn recover(&self, last_purged: Option<u64>) -> io::Result<()> {
        let mut inner = self.inner.lock().expect("never poisoned");
        let files = list(&inner.dir)?;
        let count = files.len();
        let mut ended = false;
        for (n, (first, path)) in files.into_iter().enumerate() {
            if ended {
                tracing::warn!(segment = %path.display(), "log segment after a gap removed");
                fs::remove_file(&path)?;
                continue;
            }
            let file = open_segment(&path)?;
            let last_segment = n + 1 == count;
            let (size, gap) = inner.scan(first, &file, last_purged, last_segment, &path)?;
            if size < file.metadata()?.len() {
                tracing::warn!(segment = %path.display(), size, "log segment cut after its last whole entry");
                file.set_len(size)?;
                file.sync_all()?;
            }
            ended = gap;
            let holds_live = inner.locs.iter().any(|l| l.segment == first);
            if !holds_live && !last_segment {
                fs::remove_file(&path)?;
                continue;
            }
            inner.segments.insert(
                first,
                Segment {
                    file: Arc::new(file),
                    size,
                },
            );
        }
        if let Some(p) = last_purged {
            if inner.locs.is_empty() {
                inner.first = p + 1;
            }
        }
        Ok(())
    }

    /// Appends `entries` (contiguous, following the last) to the active segment. Durable after
    /// the next [`LogSync::sync`].
    pub fn append(&self, entries: &[Entry]) -> io::Result<u64> {
        let Some(head) = entries.first() else {
            return Ok(0);
        };
        if self.sync.disk_full.load(Ordering::Relaxed) {
            return Err(rustix::io::Errno::NOSPC.into());
        }
        let mut inner = self.inner.lock().expect("never poisoned");
        let next = inner.first + inner.locs.len() as u64;
        if !inner.locs.is_empty() && head.log_id.index != next {
            return Err(io::Error::other(format!(
                "append at {} does not follow the last entry {}",
                head.log_id.index,
                next - 1
            )));
        }
        if inner.locs.is_empty() {
            inner.first = head.log_id.index;
        }
        // A new segment when the active one is full, or when the log restarts at another index
        // (after a snapshot was installed past its end): records in a file follow each other.
        let roll = match inner.segments.iter().next_back() {
            None => true,
            Some((_, s)) => {
                s.size >= inner.segment_bytes
                    || (inner.locs.is_empty() && s.size > 0)
                    || inner
                        .locs
                        .back()
                        .is_some_and(|l| l.log_id.index + 1 != head.log_id.index)
            }
        };
        if roll {
            let path = inner.dir.join(segment_name(head.log_id.index));
            let file = open_segment(&path)?;
            file.set_len(0)?;
            inner.segments.insert(
                head.log_id.index,
                Segment {
                    file: Arc::new(file),
                    size: 0,
                },
            );
            self.sync.dir_changed(&inner.dir);
        }
        let (&seg_first, seg) = inner
            .segments
            .iter_mut()
            .next_back()
            .expect("a segment exists");
        let mut buf = Vec::new();
        let mut locs = Vec::with_capacity(entries.len());
        for entry in entries {
            let start = buf.len();
            buf.extend_from_slice(&[0; HEADER as usize]);
            bincode::serialize_into(&mut buf, entry).map_err(io::Error::other)?;
            let len = (buf.len() - start) as u64 - HEADER;
            let crc = crc32fast::hash(&buf[start + HEADER as usize..]);
            buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
            buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
            locs.push(Loc {
                segment: seg_first,
                offset: seg.size + start as u64,
                len: len as u32,
                log_id: entry.log_id,
            });
        }
        seg.file.write_all_at(&buf, seg.size)?;
        seg.size += buf.len() as u64;
        let file = seg.file.clone();
        inner.locs.extend(locs);
        self.sync.written(&file);
        Ok(buf.len() as u64)
    }

    /// The entries with indexes in `start..end` that the log holds.
    pub fn read(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.read_limited(start, end, u64::MAX)
    }

    /// The first of the entries in `start..end` that the log holds, as many as fit in
    /// `max_bytes` of records, and always at least one.
    pub fn read_limited(&self, start: u64, end: u64, max_bytes: u64) -> io::Result<Vec<Entry>> {
        let wanted: Vec<(Arc<File>, Loc)> = {
            let inner = self.inner.lock().expect("never poisoned");
            let from = start.max(inner.first);
            let to = end.min(inner.first + inner.locs.len() as u64);
            let mut bytes = 0u64;
            let mut wanted = Vec::new();
            for i in from..to {
                let loc = inner.locs[(i - inner.first) as usize];
                bytes += u64::from(loc.len);
                if bytes > max_bytes && !wanted.is_empty() {
                    break;
                }
                wanted.push((inner.segments[&loc.segment].file.clone(), loc));
            }
            wanted
        };
        let mut out = Vec::with_capacity(wanted.len());
        let mut buf = Vec::new();
        for (file, loc) in wanted {
            buf.resize(loc.len as usize, 0);
            file.read_exact_at(&mut buf, loc.offset + HEADER)?;
            out.push(bincode::deserialize(&buf).map_err(io::Error::other)?);
        }
        Ok(out)
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        let inner = self.inner.lock().expect("never poisoned");
        inner.locs.back().map(|l| l.log_id)
    }

    /// Removes the entries from `index` on, durably.
    pub fn truncate(&self, index: u64) -> io::Result<()> {
        let mut inner = self.inner.lock().expect("never poisoned");
        let end = inner.first + inner.locs.len() as u64;
        if index >= end {
            return Ok(());
        }
        let keep = index.saturating_sub(inner.first) as usize;
        let cut = inner.locs[keep];
        // The segment holding the first removed entry is cut first, then the later ones are
        // deleted: a crash in between leaves a gap, which ends the log on the next open.
        let seg = inner
            .segments
            .get_mut(&cut.segment)
            .expect("every entry's segment is open");
        seg.file.set_len(cut.offset)?;
        seg.file.sync_all()?;
        seg.size = cut.offset;
        let later: Vec<u64> = inner
            .segments
            .range(cut.segment + 1..)
            .map(|(k, _)| *k)
            .collect();
        for first in later {
            inner.segments.remove(&first);
            fs::remove_file(inner.dir.join(segment_name(first)))?;
        }
        File::open(&inner.dir)?.sync_all()?;
        inner.locs.truncate(keep);
        Ok(())
    }

    /// Forgets the entries up to `index` and deletes the segments that hold nothing else. The
    /// caller has recorded the purge point durably first.
    pub fn purge(&self, index: u64) -> io::Result<()> {
        let mut inner = self.inner.lock().expect("never poisoned");
        let end = inner.first + inner.locs.len() as u64;
        let drop = (index + 1)
            .saturating_sub(inner.first)
            .min(inner.locs.len() as u64);
        inner.locs.drain(..drop as usize);
        inner.first = if inner.locs.is_empty() {
            (index + 1).max(end)
        } else {
            inner.first + drop
        };
        // Every segment before the one holding the first live entry (or, with none left, every
        // segment but the active one) holds only purged entries.
        let active = inner.segments.keys().next_back().copied();
        let live = inner.locs.front().map(|l| l.segment).or(active);
        let dead: Vec<u64> = match live {
            Some(live) => inner.segments.range(..live).map(|(k, _)| *k).collect(),
            None => Vec::new(),
        };
        for first in dead {
            inner.segments.remove(&first);
            fs::remove_file(inner.dir.join(segment_name(first)))?;
        }
        Ok(())
    }
}

impl Inner {
    /// Reads one segment's records into `locs`; returns the length of its whole records and
    /// whether the log ends in it (a gap after it).
    fn scan(
        &mut self,
        seg_first: u64,
        file: &File,
        last_purged: Option<u64>,
        last_segment: bool,
        path: &Path,
    ) -> io::Result<(u64, bool)> {
        let mut r = io::BufReader::with_capacity(1 << 20, file);
        let mut offset = 0u64;
        let mut payload = Vec::new();
        loop {
            let mut header = [0u8; HEADER as usize];
            match read_full(&mut r, &mut header)? {
                0 => return Ok((offset, false)),
                n if n < header.len() => return torn(last_segment, path, offset),
                _ => {}
            }
            let len = u32::from_le_bytes(header[..4].try_into().expect("four bytes"));
            let crc = u32::from_le_bytes(header[4..].try_into().expect("four bytes"));
            if len > MAX_RECORD {
                return torn(last_segment, path, offset);
            }
            payload.resize(len as usize, 0);
            if read_full(&mut r, &mut payload)? < payload.len() || crc32fast::hash(&payload) != crc
            {
                return torn(last_segment, path, offset);
            }
            let log_id: LogId = bincode::deserialize(&payload)
                .map_err(|e| damaged(format!("{}: entry at {offset}: {e}", path.display())))?;
            let index = log_id.index;
            if last_purged.is_some_and(|p| index <= p) {
                offset += HEADER + u64::from(len);
                continue;
            }
            if self.locs.is_empty() {
                self.first = index;
            } else if index != self.first + self.locs.len() as u64 {
                tracing::warn!(segment = %path.display(), index, "gap in the log: it ends before this entry");
                return Ok((offset, true));
            }
            self.locs.push_back(Loc {
                segment: seg_first,
                offset,
                len,
                log_id,
            });
            offset += HEADER + u64::from(len);
        }
    }
}

/// A record cut short at the end of the last segment is an interrupted write; elsewhere, damage.
fn torn(last_segment: bool, path: &Path, offset: u64) -> io::Result<(u64, bool)> {
    if last_segment {
        Ok((offset, false))
    } else {
        Err(damaged(format!(
            "{}: damaged record at byte {offset}",
            path.display()
        )))
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The segment files in `dir`, by first index.
fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((first, entry.path()));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests;
