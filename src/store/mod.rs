//! The storage engine under the Raft log store and state machine: the segment-file log with its
//! group commit, the durable records (vote, purge point, identity) in sled, and snapshot files.
//! It knows openraft's entry and log-id types but nothing of the session map.

pub mod background;
pub mod direct_write;
pub mod durable;
pub mod segment_log;
pub mod snapshot_file;
pub mod write_behind;
