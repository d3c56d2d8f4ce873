//! A fake free-space reading for members' data directories, so tests decide when a disk is low
//! (and the host's own disk never makes a member unready).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gridraft::cluster::disk::{FreeSpace, FreeSpaceProbe};

/// Total size of every fake filesystem.
pub const TOTAL: u64 = 100 << 30;

/// Free space by data directory; a directory not listed has plenty.
#[derive(Debug, Default)]
pub struct FakeDisk {
    free: Mutex<BTreeMap<PathBuf, u64>>,
}

impl FakeDisk {
    /// Sets the free bytes of the filesystem holding `dir`.
    pub fn set_free(&self, dir: &Path, free: u64) {
        self.free.lock().unwrap().insert(dir.to_owned(), free);
    }
}

impl FreeSpaceProbe for FakeDisk {
    fn free_space(&self, dir: &Path) -> io::Result<FreeSpace> {
        let free = self
            .free
            .lock()
            .unwrap()
            .get(dir)
            .copied()
            .unwrap_or(TOTAL / 2);
        Ok(FreeSpace { free, total: TOTAL })
    }
}
