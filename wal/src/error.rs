//! The errors of every WAL operation, each with the context an operator needs to act on it.

use std::io;
use std::path::PathBuf;

use strata_core::frame::FrameError;
use strata_core::{Lsn, PartitionId};

/// An error of a WAL operation.
///
/// `Io` and `Corrupt` carry the file (and for damage, the byte offset) they concern. After an
/// `Io` error from [`append`](crate::PartitionWal::append), [`sync`](crate::PartitionWal::sync)
/// or a snapshot, the partition's WAL is poisoned: every later call returns `Poisoned` until
/// the process restarts and recovers the partition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Damage that is not a torn tail of the newest segment; the node must not start.
    #[error("corrupt WAL data in {} at byte offset {offset}: {reason}", path.display())]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// An earlier write or sync failed; the partition refuses writes until restart.
    #[error("partition WAL is poisoned by an earlier failure, restart to recover: {cause}")]
    Poisoned { cause: String },
    /// An appended frame does not continue the log.
    #[error("frame starts at LSN {found}, the log expects LSN {expected}")]
    Gap { expected: Lsn, found: Lsn },
    /// An appended buffer cannot fit in one segment.
    #[error("{frame_bytes} bytes of frames exceed the limit of {max_frame_bytes} bytes")]
    FrameTooLarge { frame_bytes: usize, max_frame_bytes: usize },
    /// An appended buffer does not hold whole, valid frames.
    #[error("invalid frame at byte {offset} of the appended buffer: {source}")]
    InvalidFrame {
        offset: usize,
        #[source]
        source: FrameError,
    },
    /// An appended frame belongs to another partition.
    #[error("frame of partition {found} appended to the WAL of partition {expected}")]
    WrongPartition { expected: PartitionId, found: PartitionId },
    /// The configuration cannot work.
    #[error("invalid WAL configuration: {reason}")]
    Config { reason: String },
    /// A truncation point falls inside a frame, or before the log's first frame: the log can
    /// only be cut where a frame ends.
    #[error("LSN {lsn} is not where a frame of the log ends")]
    NotAFrameBoundary { lsn: Lsn },
    /// A truncation point lies before the newest snapshot, whose state already holds the
    /// records that would be cut.
    #[error("LSN {lsn} lies before the newest snapshot at LSN {snapshot}")]
    BelowSnapshot { lsn: Lsn, snapshot: Lsn },
    /// A state file name that is not a plain file name of its own: empty, with a path
    /// separator, `.` or `..`, or a name the log uses (a segment, a snapshot, `*.tmp`).
    #[error("invalid state file name {name:?}")]
    StateFileName { name: String },
    /// State file contents over the limit ([`STATE_FILE_BYTES_MAX`](crate::STATE_FILE_BYTES_MAX)).
    #[error("state file of {bytes} bytes exceeds the limit of {bytes_max} bytes")]
    StateFileTooLarge { bytes: u64, bytes_max: u64 },
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io { op, path: path.into(), source }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        WalError::Corrupt { path: path.into(), offset, reason: reason.into() }
    }
}
