//! Reading a segment on open, and telling a torn tail from damage (the rule is in the parent
//! module's doc and docs/decisions/0005-log-damage-versus-torn-tail.md). Reads only; the caller
//! cuts what this reports as a torn tail.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{Inner, Loc, HEADER, MAX_RECORD};
use crate::raft::LogId;

const MARK_LEN: usize = 20;

/// The mark's bytes: the segment's first index, its durable length, a CRC of both.
pub(super) fn encode_mark(segment: u64, size: u64) -> [u8; MARK_LEN] {
    let mut b = [0; MARK_LEN];
    b[..8].copy_from_slice(&segment.to_le_bytes());
    b[8..16].copy_from_slice(&size.to_le_bytes());
    let crc = crc32fast::hash(&b[..16]);
    b[16..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The mark, if there is a whole one (an empty or torn mark only means the flushed end is not
/// known, so that nothing is taken as flushed).
pub(super) fn read_mark(file: &File) -> io::Result<Option<(u64, u64)>> {
    let mut b = [0; MARK_LEN];
    match file.read_exact_at(&mut b, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("eight bytes"));
    let crc = u32::from_le_bytes(b[16..].try_into().expect("four bytes"));
    Ok((crc32fast::hash(&b[..16]) == crc).then(|| (word(0), word(8))))
}

/// Why the record at some offset is not a whole, valid record.
#[derive(Debug, Clone, Copy)]
enum Bad {
    /// Fewer than a header's bytes before the end of the file.
    ShortHeader,
    /// A header of zero bytes (a block the file system allocated but never wrote).
    ZeroHeader,
    /// A length of zero, or over the limit and past the end of the file: no append writes it.
    Length(u32),
    /// The declared length runs past the end of the file.
    CutShort(u32),
    /// Whole, but its checksum fails.
    Checksum(u32),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::ShortHeader => write!(f, "header cut short"),
            Bad::ZeroHeader => write!(f, "zero header"),
            Bad::Length(n) => write!(f, "impossible length {n}"),
            Bad::CutShort(n) => write!(f, "length {n} runs past the end of the file"),
            Bad::Checksum(n) => write!(f, "checksum mismatch in a record of {n} bytes"),
        }
    }
}

fn damaged(path: &Path, offset: u64, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{}: damaged record at byte {offset} ({why}). This is not an interrupted write, so \
             entries this member acknowledged may be in or after it, and it must not start on \
             this log: remove the member from the cluster, delete its data directory and add it \
             back, so that it copies the log from its peers (docs/operations.md, \"Replace a \
             member whose data is lost or damaged\")",
            path.display()
        ),
    )
}

impl Inner {
    /// Reads one segment's records into `locs`; returns the length of its whole records and
    /// whether the log ends in it (a gap after it). `tail_from` is where a torn tail may begin
    /// (`None`: the segment is durable as a whole); a bad record before it is damage.
    pub(super) fn scan(
        &mut self,
        seg_first: u64,
        file: &File,
        last_purged: Option<u64>,
        tail_from: Option<u64>,
        path: &Path,
    ) -> io::Result<(u64, bool)> {
        let file_len = file.metadata()?.len();
        if let Some(flushed) = tail_from.filter(|f| *f > file_len) {
            return Err(damaged(
                path,
                file_len,
                format!("the file ends before its flushed end {flushed}"),
            ));
        }
        let mut r = io::BufReader::with_capacity(1 << 20, file);
        let mut offset = 0u64;
        let mut payload = Vec::new();
        loop {
            let mut header = [0u8; HEADER as usize];
            match read_full(&mut r, &mut header)? {
                0 => return Ok((offset, false)),
                n if n < header.len() => {
                    return tail(file, path, offset, file_len, tail_from, Bad::ShortHeader)
                }
                _ => {}
            }
            let len = u32::from_le_bytes(header[..4].try_into().expect("four bytes"));
            let crc = u32::from_le_bytes(header[4..].try_into().expect("four bytes"));
            let end = offset + HEADER + u64::from(len);
            let bad = if header == [0; HEADER as usize] {
                Some(Bad::ZeroHeader)
            } else if len == 0 || (len > MAX_RECORD && end > file_len) {
                Some(Bad::Length(len))
            } else if end > file_len {
                Some(Bad::CutShort(len))
            } else {
                // Whole in the file, so the allocation is bounded by what is on disk. A record
                // over the limit was written by a version without it; it is read like any other.
                payload.resize(len as usize, 0);
                r.read_exact(&mut payload)?;
                (crc32fast::hash(&payload) != crc).then_some(Bad::Checksum(len))
            };
            if let Some(bad) = bad {
                return tail(file, path, offset, file_len, tail_from, bad);
            }
            let log_id: LogId = bincode::deserialize(&payload)
                .map_err(|e| damaged(path, offset, format!("entry does not decode: {e}")))?;
            let index = log_id.index;
            if last_purged.is_some_and(|p| index <= p) {
                offset = end;
                continue;
            }
            if self.locs.is_empty() {
                self.first = index;
            } else if index != self.first + self.locs.len() as u64 {
                tracing::warn!(segment = %path.display(), index, "gap in the log: it ends before this entry");
                return Ok((offset, true));
            }
            if len > MAX_RECORD {
                tracing::warn!(segment = %path.display(), index, len, "log entry larger than this version writes; read anyway");
            }
            self.locs.push_back(Loc {
                segment: seg_first,
                offset,
                len,
                log_id,
            });
            offset = end;
        }
    }
}

/// The first bad record of a segment, at `offset`: the segment's whole records end there (a
/// torn tail, cut by the caller), or the open fails.
fn tail(
    file: &File,
    path: &Path,
    offset: u64,
    file_len: u64,
    tail_from: Option<u64>,
    bad: Bad,
) -> io::Result<(u64, bool)> {
    let Some(flushed) = tail_from else {
        return Err(damaged(path, offset, bad));
    };
    if offset < flushed {
        return Err(damaged(
            path,
            offset,
            format!("{bad}, before the flushed end {flushed}"),
        ));
    }
    let torn = match bad {
        Bad::ShortHeader | Bad::CutShort(_) => true,
        Bad::ZeroHeader => zeros_to_end(file, offset, file_len)?,
        Bad::Length(_) => false,
        Bad::Checksum(len) => {
            nothing_valid_after(file, offset + HEADER + u64::from(len), file_len)?
        }
    };
    if torn {
        Ok((offset, false))
    } else {
        Err(damaged(
            path,
            offset,
            format!("{bad}, with more after it than an interrupted write leaves"),
        ))
    }
}

/// Whether the records from `at` (after a whole record with a bad checksum) end without a
/// valid one. Only a valid record proves the bad one is not a torn tail: whatever cannot be
/// followed further (a bad header, a length past the end) could be the rest of the same write.
fn nothing_valid_after(file: &File, mut at: u64, file_len: u64) -> io::Result<bool> {
    loop {
        if file_len - at < HEADER {
            return Ok(true);
        }
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, at)?;
        if header == [0; HEADER as usize] {
            return zeros_to_end(file, at, file_len);
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("four bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("four bytes"));
        let end = at + HEADER + u64::from(len);
        if len == 0 || len > MAX_RECORD || end > file_len {
            return Ok(true);
        }
        let mut payload = vec![0; len as usize];
        file.read_exact_at(&mut payload, at + HEADER)?;
        if crc32fast::hash(&payload) == crc {
            return Ok(false);
        }
        at = end;
    }
}

/// Whether every byte from `at` to the end of the file is zero.
pub(super) fn zeros_to_end(file: &File, mut at: u64, file_len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 1 << 16];
    while at < file_len {
        let n = (file_len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
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
