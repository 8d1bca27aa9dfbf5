//! Strata's write-ahead log: one log per partition, in fixed-size segment files that are
//! written in full before use, appended to and synced through the shard's `io_uring`, with
//! periodic snapshots that bound replay and let old segments go.
//!
//! The byte layout, the recovery rules and the crash argument are in `docs/wal-format.md`.
//! A [`PartitionWal`] is owned by the shard thread that owns its partition. Beside the log, a
//! replica cuts a diverged tail back with [`truncate_log`] and keeps its replication state in
//! a file replaced atomically with [`write_state_file`].

#![warn(clippy::pedantic)]

mod aligned;
mod archive;
mod config;
mod device_sync;
mod direct;
mod error;
mod install;
mod mapped;
mod recovery;
mod segment;
mod snapshot;
mod state_file;
mod truncate;
mod wal;

#[cfg(test)]
mod tests;

pub use archive::{
    add_snapshot, inspect_snapshot, read_log_after, segment_extent, ArchiveMarks, LogTail,
    PartitionWriter, SegmentExtent,
};
pub use config::{
    frame_bytes_max, WalConfig, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
    SEGMENT_BYTES_MULTIPLE,
};
pub use device_sync::DeviceSync;
pub use error::WalError;
pub use install::{install_log, install_snapshot};
pub use recovery::RecoverySummary;
pub use segment::{
    parse_segment_file_name, scan_segments, segment_file_name, SegmentHeader, SegmentInfo,
    SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_VERSION,
};
pub use snapshot::{
    encode_snapshot, parse_snapshot_file_name, seal_snapshot, snapshot_file_name,
    stamp_snapshot_epoch, LoadedSnapshot, SNAPSHOT_HEADER_BYTES, SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
};
pub use state_file::{read_state_file, write_state_file, STATE_FILE_BYTES_MAX};
pub use truncate::{truncate_log, TruncateSummary};
pub use wal::{PartitionWal, SnapshotSummary, WalActivity};
