//! WAL configuration and the size limits that follow from it.

use strata_core::frame::{FRAME_ALIGNMENT_BYTES, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};

use crate::error::WalError;
use crate::segment::SEGMENT_HEADER_BYTES;

/// Default size of one segment file.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest segment: the header block and one more block for frames.
pub const SEGMENT_BYTES_MIN: u64 = 2 * SEGMENT_HEADER_BYTES;
/// Largest segment; recovery reads one whole segment into memory at a time.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Segment sizes are whole blocks, so that every segment ends on a block boundary.
pub const SEGMENT_BYTES_MULTIPLE: u64 = 4096;

const _: () = assert!(SEGMENT_BYTES_DEFAULT.is_multiple_of(SEGMENT_BYTES_MULTIPLE));
const _: () = assert!(SEGMENT_BYTES_MIN.is_multiple_of(SEGMENT_BYTES_MULTIPLE));
const _: () = assert!(SEGMENT_BYTES_MAX.is_multiple_of(SEGMENT_BYTES_MULTIPLE));
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(FRAME_ALIGNMENT_BYTES as u64));

/// Configuration of one partition's WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// Size of every new segment file, header included. Existing segments keep the size their
    /// header records, so this may change between restarts.
    pub segment_bytes: u64,
    /// Appends to the active segment with `O_DIRECT | O_DSYNC`: each append is one write that
    /// is durable when it completes, with no separate `fdatasync` (and no worker thread for
    /// it), so [`sync`](crate::PartitionWal::sync) has nothing left to do. Where the
    /// filesystem refuses `O_DIRECT`, the log warns and keeps buffered writes.
    pub direct_io: bool,
    /// With `direct_io`, on ext4 and XFS: appends are written with `O_DIRECT` alone and become
    /// durable at the next [`sync`](crate::PartitionWal::sync), which a log shares with every
    /// other log, on any thread, once it is attached to their
    /// [`DeviceSync`](crate::DeviceSync): one device flush per round instead of one per
    /// partition. Elsewhere direct appends stay `O_DSYNC`.
    pub shared_sync: bool,
    /// Sealed segments are kept until the archive holds them: one goes only when a
    /// snapshot covers it and its records are at or below the archive floor set with
    /// [`set_archive_floor`](crate::PartitionWal::set_archive_floor) (0 until then).
    /// Recovery keeps them too.
    pub keep_until_archived: bool,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            direct_io: false,
            shared_sync: false,
            keep_until_archived: false,
        }
    }
}

impl WalConfig {
    /// Checks that segments of this size can be created and hold at least one frame.
    ///
    /// # Errors
    ///
    /// [`WalError::Config`] naming the limit that `segment_bytes` breaks.
    pub fn validate(&self) -> Result<(), WalError> {
        let bytes = self.segment_bytes;
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&bytes) {
            return Err(WalError::Config {
                reason: format!(
                    "segment_bytes {bytes} outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"
                ),
            });
        }
        if !bytes.is_multiple_of(SEGMENT_BYTES_MULTIPLE) {
            return Err(WalError::Config {
                reason: format!(
                    "segment_bytes {bytes} is not a multiple of {SEGMENT_BYTES_MULTIPLE}"
                ),
            });
        }
        Ok(())
    }

    /// The largest buffer of frames one append accepts: see [`frame_bytes_max`].
    #[must_use]
    pub fn max_frame_bytes(&self) -> usize {
        usize::try_from(frame_bytes_max(self.segment_bytes)).unwrap_or(usize::MAX)
    }
}

/// The largest buffer of frames one append accepts with segments of `segment_bytes`: what fits
/// in an empty segment, and no more than one frame of the largest payload.
#[must_use]
pub fn frame_bytes_max(segment_bytes: u64) -> u64 {
    let segment_room = segment_bytes.saturating_sub(SEGMENT_HEADER_BYTES);
    segment_room.min((FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES_MAX) as u64)
}
