//! The Raft log's entries in append-only segment files.
//!
//! An entry is written once: appended to the active segment (`log/<first index>.seg`) and made
//! durable by the group-commit thread's `fdatasync` of that file (see [`LogSync`]). A purge
//! takes whole segments out of the log at once and deletes them in the background, a few
//! megabytes at a time (`reap.rs`); a truncation cuts the segment holding the first removed
//! entry and deletes the ones after it. Each entry's position is kept in memory, and the last
//! [`RECENT_BYTES`] of entries themselves as they were appended: replication and apply ask for
//! the newest entries right after their append, and get copies of those without reading and
//! decoding them again. Older entries are read back with `pread`.
//!
//! Once the first segment is half full, and from then on at each roll, the next segment is
//! zero-filled and synced ahead of need (`prealloc.rs`), so that appends overwrite blocks that
//! exist and the group commit's `fdatasync` writes only their data, not the file's growth. Such
//! a segment ends in zeros after its last record, which the reader takes for the end of the
//! log, and is cut to its records when the log leaves it before it is full.
//!
//! A record is `len: u32 LE`, `crc32(payload): u32 LE`, then the payload (the bincode entry).
//! An append of a record longer than [`MAX_RECORD`] is refused before anything is written, so
//! every record this log writes is one its reader accepts.
//!
//! # Damage versus a torn tail
//!
//! Never discard an acknowledged entry: an entry is acknowledged (to openraft, and through it
//! to a leader counting a quorum) only after an `fdatasync` covered it, so only bytes past the
//! last `fdatasync` may be the remains of an interrupted write, and only those may be cut on
//! open. Two facts make that end knowable without an extra fsync per append:
//!
//! - A segment is `fdatasync`ed before the next one is created, so every segment but the last
//!   is wholly durable: any bad record in it is damage.
//! - After each group commit the thread writes the segment and the length it made durable to
//!   `log/flushed` (a plain `pwrite`, not synced). After a process crash the page cache still
//!   holds it, so it is exact; after a power loss it may be older, which only makes it lower. A
//!   bad record below it is damage. A truncation empties the mark (durably) before it cuts.
//!
//! Past that mark, in the last segment, a bad record is a torn tail only if it looks like what
//! an interrupted write leaves and nothing valid follows it (see `scan.rs`): a header cut
//! short; a payload whose declared length runs past the end of the file; zero bytes to the end
//! of the file (blocks the file system allocated but never wrote); a whole record failing its
//! checksum with no valid record after it. A length of zero or over [`MAX_RECORD`] that fits
//! nowhere, or a bad record followed by a valid one, is damage: an interrupted append leaves a
//! prefix of what it wrote, never a record in the middle. A record over [`MAX_RECORD`] that
//! lies whole in the file with a good checksum (written by a version without the limit) is
//! read. Damage fails the open with the file, the byte offset and what to do: the member
//! refuses to start, and is replaced from its peers (docs/operations.md). Entries must follow
//! each other without a gap; a gap left by a crash during a truncation ends the log there.
//! docs/decisions/0005-log-damage-versus-torn-tail.md has the reasoning.
//!
//! A data directory written before decision 0004 keeps its log in a sled tree;
//! [`SegmentLog::open`] moves such a log here once.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::raft::{Entry, LogId};
use prealloc::Prealloc;
use reap::Reaper;
pub use sync::LogSync;

/// A segment is closed and a new one started once it holds this much.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record an append writes. Entries are far smaller: a batch of Grid writes is about
/// 96 KiB plus one write, a single write is bounded by the API's record limit and by
/// `cluster`'s check of every proposal's size, and a membership change is a few hundred bytes.
pub const MAX_RECORD: u32 = 64 << 20;
/// How much of the log's tail (in encoded bytes) is also kept decoded in memory: a few group
/// commits' worth, enough for apply and for replication to followers that keep up.
const RECENT_BYTES: u64 = 8 << 20;
const HEADER: u64 = 8;
pub const LOG_DIR: &str = "log";
/// The file holding the flushed end of the active segment (see the module doc).
const MARK: &str = "flushed";

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
    /// The newest entries as they were appended, with their record lengths: the last
    /// `recent.len()` of `locs`. At most `recent_limit` bytes of records, or the last entry
    /// alone when it is larger.
    recent: VecDeque<(Entry, u32)>,
    recent_bytes: u64,
    recent_limit: u64,
    /// The next segment, zero-filled ahead (see `prealloc.rs`); `None` when switched off.
    prealloc: Option<Prealloc>,
    /// Deletes purged segments off the append path (see `reap.rs`).
    reaper: Reaper,
}

impl Inner {
    fn end(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    /// Forgets recent entries from the front until they fit the limit (or one is left).
    fn trim_recent(&mut self) {
        while self.recent_bytes > self.recent_limit && self.recent.len() > 1 {
            let (_, len) = self.recent.pop_front().expect("not empty");
            self.recent_bytes -= u64::from(len);
        }
    }

    /// Forgets recent entries past the log's last one (after a truncation) or before its first
    /// (after a purge).
    fn match_recent_to_locs(&mut self, dropped_from_end: usize) {
        for _ in 0..dropped_from_end.min(self.recent.len()) {
            let (_, len) = self.recent.pop_back().expect("not empty");
            self.recent_bytes -= u64::from(len);
        }
        while self.recent.len() > self.locs.len() {
            let (_, len) = self.recent.pop_front().expect("not empty");
            self.recent_bytes -= u64::from(len);
        }
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
        preallocate: bool,
    ) -> io::Result<Self> {
        Self::open_with(
            data_dir,
            last_purged,
            legacy,
            sync,
            SEGMENT_BYTES,
            preallocate,
        )
    }

    fn open_with(
        data_dir: &Path,
        last_purged: Option<u64>,
        legacy: Vec<Vec<u8>>,
        sync: Arc<LogSync>,
        segment_bytes: u64,
        preallocate: bool,
    ) -> io::Result<Self> {
        let dir = data_dir.join(LOG_DIR);
        fs::create_dir_all(&dir)?;
        let prealloc = if preallocate {
            Some(Prealloc::start(&dir, segment_bytes)?)
        } else {
            None
        };
        let reaper = Reaper::start(&dir)?;
        let mark = open_segment(&dir.join(MARK))?;
        if !legacy.is_empty() {
            // A crash during an earlier move left partial segments: the legacy log is whole.
            for (_, path) in list(&dir)? {
                fs::remove_file(path)?;
            }
            mark.set_len(0)?;
        }
        let log = SegmentLog {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.clone(),
                segment_bytes,
                segments: BTreeMap::new(),
                locs: VecDeque::new(),
                first: 0,
                recent: VecDeque::new(),
                recent_bytes: 0,
                recent_limit: RECENT_BYTES,
                prealloc,
                reaper,
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
            log.sync.attach(mark);
            let none = entries.is_empty();
            log.append(entries)?;
            if let (Some(p), true) = (last_purged, none) {
                log.inner.lock().expect("never poisoned").first = p + 1;
            }
            // The segment and the directory holding its new name.
            log.sync.sync()?;
            return Ok(log);
        }
        log.recover(last_purged, scan::read_mark(&mark)?)?;
        log.sync.attach(mark);
        Ok(log)
    }

    /// Reads every segment; `flushed` is the mark (a segment and its durable length).
    fn recover(&self, last_purged: Option<u64>, flushed: Option<(u64, u64)>) -> io::Result<()> {
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
            // Where a torn tail may begin: nowhere in a segment that was synced before the next
            // was created; past the mark in the last.
            let tail_from = match (last_segment, flushed) {
                (false, _) => None,
                (true, Some((segment, size))) if segment == first => Some(size),
                (true, _) => Some(0),
            };
            let (size, gap) = inner.scan(first, &file, last_purged, tail_from, &path)?;
            let file_len = file.metadata()?.len();
            // Zeros past the last record of the last segment (the scan lets them through only
            // there) are a preallocated rest: kept for the appends to come while preallocation
            // is on, cut without alarm once it has been turned off (zeros hold no record, so
            // nothing is lost either way).
            let zero_rest =
                last_segment && size < file_len && scan::zeros_to_end(&file, size, file_len)?;
            if size < file_len && !(zero_rest && inner.prealloc.is_some()) {
                if zero_rest {
                    tracing::info!(segment = %path.display(), size, "zeros after the log's last entry cut: a preallocated segment's rest (preallocation is off), or an append a crash left unwritten");
                } else {
                    tracing::warn!(segment = %path.display(), size, "log segment cut after its last whole entry: an append the crash interrupted");
                }
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
    pub fn append(&self, entries: Vec<Entry>) -> io::Result<u64> {
        let Some(head) = entries.first() else {
            return Ok(0);
        };
        if self.sync.disk_full.load(Ordering::Relaxed) {
            return Err(rustix::io::Errno::NOSPC.into());
        }
        // Encoded before anything changes: an entry over the limit fails the whole append.
        let (buf, records) = encode(&entries)?;
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
            // Every segment but the last is durable as a whole (see the module doc), and holds
            // nothing past its last record: a preallocated one closed before it filled (the log
            // restarting at another index) is cut to its records first.
            if let Some((_, s)) = inner.segments.iter().next_back() {
                if s.file.metadata()?.len() > s.size {
                    s.file.set_len(s.size)?;
                }
                s.file.sync_data()?;
            }
            let path = inner.dir.join(segment_name(head.log_id.index));
            let file = match inner.prealloc.as_ref().and_then(|p| p.take(&path)) {
                Some(file) => file,
                None => {
                    let file = open_segment(&path)?;
                    file.set_len(0)?;
                    file
                }
            };
            // A log that has filled a segment fills more: the next is prepared from now on, so
            // that the zeros can be written slowly and still be ready in time.
            if let (Some(p), false) = (&inner.prealloc, inner.segments.is_empty()) {
                p.ask();
            }
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
        let at = seg.size;
        seg.file.write_all_at(&buf, at)?;
        seg.size += buf.len() as u64;
        let (file, size) = (seg.file.clone(), seg.size);
        if size >= inner.segment_bytes / 2 {
            if let Some(p) = &inner.prealloc {
                p.ask();
            }
        }
        for (entry, r) in entries.into_iter().zip(records) {
            inner.locs.push_back(Loc {
                segment: seg_first,
                offset: at + r.start,
                len: r.len,
                log_id: r.log_id,
            });
            inner.recent.push_back((entry, r.len));
            inner.recent_bytes += u64::from(r.len);
        }
        inner.trim_recent();
        self.sync.written(&file, seg_first, size);
        Ok(buf.len() as u64)
    }

    /// The entries with indexes in `start..end` that the log holds.
    pub fn read(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.read_limited(start, end, u64::MAX)
    }

    /// The first of the entries in `start..end` that the log holds, as many as fit in
    /// `max_bytes` of records, and always at least one.
    pub fn read_limited(&self, start: u64, end: u64, max_bytes: u64) -> io::Result<Vec<Entry>> {
        enum Wanted {
            File(Arc<File>, Loc),
            Recent(Entry),
        }
        let wanted: Vec<Wanted> = {
            let inner = self.inner.lock().expect("never poisoned");
            let from = start.max(inner.first);
            let to = end.min(inner.end());
            let recent_from = inner.end() - inner.recent.len() as u64;
            let mut bytes = 0u64;
            let mut wanted = Vec::new();
            for i in from..to {
                let loc = inner.locs[(i - inner.first) as usize];
                bytes += u64::from(loc.len);
                if bytes > max_bytes && !wanted.is_empty() {
                    break;
                }
                wanted.push(match i.checked_sub(recent_from) {
                    Some(k) => Wanted::Recent(inner.recent[k as usize].0.clone()),
                    None => Wanted::File(inner.segments[&loc.segment].file.clone(), loc),
                });
            }
            wanted
        };
        let mut out = Vec::with_capacity(wanted.len());
        let mut buf = Vec::new();
        for wanted in wanted {
            match wanted {
                Wanted::Recent(entry) => out.push(entry),
                Wanted::File(file, loc) => {
                    buf.resize(loc.len as usize, 0);
                    file.read_exact_at(&mut buf, loc.offset + HEADER)?;
                    out.push(bincode::deserialize(&buf).map_err(io::Error::other)?);
                }
            }
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
        // The mark may lie past the cut, where new appends will go unsynced: it is emptied first.
        self.sync.clear_mark()?;
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
        let removed = end - index.max(inner.first);
        inner.match_recent_to_locs(removed as usize);
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
        inner.match_recent_to_locs(0);
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
            inner.reaper.delete(&inner.dir.join(segment_name(first)))?;
        }
        Ok(())
    }
}

/// One encoded record: its offset in the encoded bytes, its payload length and its entry's id.
struct Encoded {
    start: u64,
    len: u32,
    log_id: LogId,
}

/// The records of `entries`, one [`Encoded`] for each. Refuses an entry whose record the reader
/// would not accept.
fn encode(entries: &[Entry]) -> io::Result<(Vec<u8>, Vec<Encoded>)> {
    // Sized first (a walk over lengths, no copy), so that a batch of writes is encoded into one
    // allocation rather than a buffer doubled and copied as it grows.
    let mut size = 0;
    for entry in entries {
        size += HEADER + bincode::serialized_size(entry).map_err(io::Error::other)?;
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        let start = buf.len();
        buf.extend_from_slice(&[0; HEADER as usize]);
        bincode::serialize_into(&mut buf, entry).map_err(io::Error::other)?;
        let len = (buf.len() - start) as u64 - HEADER;
        let len = u32::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_RECORD)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "log entry {} is {len} bytes, over the log's record limit of {MAX_RECORD}",
                        entry.log_id.index
                    ),
                )
            })?;
        let crc = crc32fast::hash(&buf[start + HEADER as usize..]);
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        records.push(Encoded {
            start: start as u64,
            len,
            log_id: entry.log_id,
        });
    }
    Ok((buf, records))
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

mod prealloc;
mod reap;
mod scan;
mod sync;
#[cfg(test)]
mod tests;
