//! Cutting a partition's log back to an LSN: what a replica does when its log diverged from a
//! new leader's, at the last LSN on which both logs agree (found through their epoch
//! histories).
//!
//! Runs with blocking `std::fs` calls on a directory that no
//! [`PartitionWal`](crate::PartitionWal) has open; the caller recovers the log afterwards.
//! Every step leaves a log that recovery accepts: segments go newest first, and the frames of
//! the segment that is cut are zeroed last first, each durable before the one before it is
//! touched.

use std::fs;
use std::path::{Path, PathBuf};

use strata_core::frame::{decode_frame, FrameHeader, FRAME_HEADER_BYTES};
use strata_core::{Epoch, Lsn, PartitionId};

use crate::error::WalError;
use crate::recovery::{list_directory, segment_header_problem, sync_directory, write_zeros};
use crate::segment::{SegmentHeader, SegmentInfo, SEGMENT_HEADER_BYTES};
use crate::snapshot::read_snapshot_header;

/// What [`truncate_log`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TruncateSummary {
    /// Records cut from the log (0 when it already ended at or before the requested LSN).
    pub records_discarded: u64,
    /// Frames cut from the log.
    pub frames_discarded: u64,
    /// LSN of the log's last record now.
    pub last_lsn: Lsn,
    /// Epoch of the frame that ends at `last_lsn`; the snapshot's epoch when the log ends at
    /// the snapshot and no frame ending there is left; 0 for an empty log.
    pub last_epoch: Epoch,
}

/// Cuts the log in the partition directory `dir` so that its last record is `after`: every
/// segment whose frames all come after `after` is deleted, newest first, and in the segment
/// holding the first frame after `after`, the frames from that one on are overwritten with
/// zeros, where recovery then finds the end of the log. `after` at or beyond the log's last
/// LSN changes nothing.
///
/// The directory must not be open in a [`PartitionWal`](crate::PartitionWal): close the log
/// first, then recover it with [`PartitionWal::recover`](crate::PartitionWal::recover), whose
/// appends continue at `after + 1`. A crash part way leaves a log that recovers to a length
/// between the old one and `after`; truncating again finishes the work. Blocking file I/O.
///
/// # Errors
///
/// Before anything changes: [`WalError::BelowSnapshot`] when `after` is below the newest
/// snapshot's LSN (its state already holds those records); [`WalError::NotAFrameBoundary`]
/// when `after` falls inside a frame, or before the first frame the log holds without being
/// the snapshot's LSN; [`WalError::Corrupt`] for a segment that recovery would refuse too.
/// [`WalError::Io`] when a file cannot be read, removed, written or synced.
pub fn truncate_log(
    dir: &Path,
    partition: PartitionId,
    after: Lsn,
) -> Result<TruncateSummary, WalError> {
    let listing = list_directory(dir)?;
    let snapshot = newest_snapshot(partition, &listing.snapshots)?;
    if after < snapshot.lsn {
        return Err(WalError::BelowSnapshot { lsn: after, snapshot: snapshot.lsn });
    }
    let segments = segments_from_snapshot(listing.segments, snapshot.lsn);
    let survey = Survey::walk(&segments, partition, snapshot, after)?;
    let summary = survey.summary(snapshot)?;
    if summary.frames_discarded == 0 {
        return Ok(summary);
    }
    let doomed = segments.partition_point(|segment| segment.first_lsn <= after);
    remove_newest_first(dir, &segments[doomed..])?;
    if let Some(cut) = &survey.cut {
        zero_frames_last_first(cut)?;
    }
    sync_directory(dir)?;
    tracing::info!(
        partition = partition.0,
        after = after.0,
        records = summary.records_discarded,
        segments_removed = segments.len() - doomed,
        "truncated partition WAL"
    );
    Ok(summary)
}

/// The newest snapshot's LSN and epoch (both 0 without one).
#[derive(Clone, Copy, Debug, Default)]
struct SnapshotMark {
    lsn: Lsn,
    epoch: Epoch,
}

/// Reads the newest snapshot's header; recovery checks its body (and removes older ones).
fn newest_snapshot(
    partition: PartitionId,
    snapshots: &[(Lsn, PathBuf)],
) -> Result<SnapshotMark, WalError> {
    let Some((lsn, path)) = snapshots.last() else {
        return Ok(SnapshotMark::default());
    };
    let loaded = read_snapshot_header(path, partition, *lsn)?;
    Ok(SnapshotMark { lsn: loaded.lsn, epoch: loaded.epoch })
}

/// The segments that can hold a frame ending at or after the snapshot's LSN: those recovery
/// replays, and the one before them, whose last frame may end exactly at the snapshot.
fn segments_from_snapshot(mut segments: Vec<SegmentInfo>, snapshot_lsn: Lsn) -> Vec<SegmentInfo> {
    let reach = snapshot_lsn.0.saturating_add(1);
    let covered = segments.windows(2).take_while(|pair| pair[1].first_lsn.0 <= reach).count();
    segments.split_off(covered.saturating_sub(1))
}

/// What a walk over the log found about the truncation point.
struct Survey {
    after: Lsn,
    /// The log's last LSN and the epoch of the frame ending there.
    last_lsn: Lsn,
    last_epoch: Epoch,
    /// Epoch of the frame ending at `after`, when the log holds it.
    epoch_at_after: Option<Epoch>,
    /// Whether `after` falls inside a frame (not at its last LSN).
    inside_frame: bool,
    frames_after: u64,
    records_after: u64,
    /// The frames after `after` in a segment that starts at or before it, when there are any.
    cut: Option<Cut>,
}

/// Frames to zero: back to back, from `offsets[0]` to `end`, in the segment at `path`.
struct Cut {
    path: PathBuf,
    /// Where each frame starts, in order.
    offsets: Vec<u64>,
    end: u64,
}

impl Survey {
    /// Walks the frames of `segments` (in LSN order, chained as recovery requires them).
    fn walk(
        segments: &[SegmentInfo],
        partition: PartitionId,
        snapshot: SnapshotMark,
        after: Lsn,
    ) -> Result<Survey, WalError> {
        let mut survey = Survey {
            after,
            last_lsn: snapshot.lsn,
            last_epoch: snapshot.epoch,
            epoch_at_after: None,
            inside_frame: false,
            frames_after: 0,
            records_after: 0,
            cut: None,
        };
        let mut next_lsn = None;
        for segment in segments {
            let bytes = crate::mapped::map_file(&segment.path, "read segment")?;
            let first_lsn = check_segment(segment, &bytes, partition, next_lsn, snapshot.lsn)?;
            let kept = segment.first_lsn <= after;
            let mut offsets = Vec::new();
            let (end, next) =
                walk_frames(&segment.path, &bytes, partition, first_lsn, |at, frame| {
                    survey.visit(frame);
                    if kept && frame.first_lsn > after {
                        offsets.push(at);
                    }
                })?;
            next_lsn = Some(next);
            if !offsets.is_empty() {
                survey.cut = Some(Cut { path: segment.path.clone(), offsets, end });
            }
        }
        Ok(survey)
    }

    fn visit(&mut self, frame: &FrameHeader) {
        let after = self.after;
        if frame.first_lsn <= after && after < frame.last_lsn {
            self.inside_frame = true;
        }
        if frame.last_lsn == after {
            self.epoch_at_after = Some(frame.epoch);
        }
        if frame.first_lsn > after {
            self.frames_after += 1;
            self.records_after += frame.record_count();
        }
        if frame.last_lsn >= self.last_lsn {
            self.last_lsn = frame.last_lsn;
            self.last_epoch = frame.epoch;
        }
    }

    /// What cutting the log after `after` leaves, or why it cannot be cut there: inside a
    /// frame, or at an LSN before the log's first frame that is not the snapshot's.
    fn summary(&self, snapshot: SnapshotMark) -> Result<TruncateSummary, WalError> {
        if self.after >= self.last_lsn {
            return Ok(TruncateSummary {
                records_discarded: 0,
                frames_discarded: 0,
                last_lsn: self.last_lsn,
                last_epoch: self.last_epoch,
            });
        }
        let refused = WalError::NotAFrameBoundary { lsn: self.after };
        if self.inside_frame {
            return Err(refused);
        }
        let last_epoch = match self.epoch_at_after {
            Some(epoch) => epoch,
            None if self.after == snapshot.lsn => snapshot.epoch,
            None => return Err(refused),
        };
        Ok(TruncateSummary {
            records_discarded: self.records_after,
            frames_discarded: self.frames_after,
            last_lsn: self.after,
            last_epoch,
        })
    }
}

/// Checks a segment's header as recovery does, and that the segment continues the one before
/// it (`next_lsn`) or, the oldest, reaches back to the snapshot. Returns its first LSN.
fn check_segment(
    segment: &SegmentInfo,
    bytes: &[u8],
    partition: PartitionId,
    next_lsn: Option<Lsn>,
    snapshot_lsn: Lsn,
) -> Result<Lsn, WalError> {
    let path = &segment.path;
    let header =
        SegmentHeader::decode(bytes).map_err(|reason| WalError::corrupt(path, 0, reason))?;
    if let Some(reason) = segment_header_problem(&header, segment, bytes.len() as u64, partition) {
        return Err(WalError::corrupt(path, 0, reason));
    }
    let first_lsn = header.first_lsn;
    let reason = match next_lsn {
        Some(next) if first_lsn != next => {
            format!(
                "segment starts at LSN {first_lsn}, the previous segment ends before LSN {next}"
            )
        }
        None if first_lsn.0 > snapshot_lsn.0.saturating_add(1) => format!(
            "the oldest segment starts at LSN {first_lsn}, but records after LSN \
             {snapshot_lsn} are needed"
        ),
        _ => return Ok(first_lsn),
    };
    Err(WalError::corrupt(path, 0, reason))
}

/// Walks a segment's frames from its header block on, calling `visit(offset, frame)` for each,
/// up to the first header of zeros or bytes that are not a valid frame: where recovery finds
/// the end of the log (what lies beyond is recovery's to judge, and is left as it is). Returns
/// that offset and the LSN after the last frame.
fn walk_frames(
    path: &Path,
    bytes: &[u8],
    partition: PartitionId,
    first_lsn: Lsn,
    mut visit: impl FnMut(u64, &FrameHeader),
) -> Result<(u64, Lsn), WalError> {
    let mut offset = usize::try_from(SEGMENT_HEADER_BYTES).expect("small");
    let mut next_lsn = first_lsn;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.iter().take(FRAME_HEADER_BYTES).all(|byte| *byte == 0) {
            break;
        }
        let Ok(frame) = decode_frame(rest) else { break };
        let corrupt = |reason: String| WalError::corrupt(path, offset as u64, reason);
        if frame.partition != partition {
            return Err(corrupt(format!("frame of partition {}", frame.partition)));
        }
        if frame.first_lsn != next_lsn {
            let reason =
                format!("frame starts at LSN {}, the log expects LSN {next_lsn}", frame.first_lsn);
            return Err(corrupt(reason));
        }
        visit(offset as u64, &frame);
        next_lsn = frame.last_lsn.next();
        offset += frame.frame_bytes();
    }
    Ok((offset as u64, next_lsn))
}

/// Deletes `segments` newest first, syncing the directory after each deletion: deletions
/// reach the disk in no promised order otherwise, and an older segment gone while a newer one
/// stays would be a gap that recovery refuses. So a crash at any point leaves the older
/// segments, a shorter log that still chains.
fn remove_newest_first(dir: &Path, segments: &[SegmentInfo]) -> Result<(), WalError> {
    for segment in segments.iter().rev() {
        let path = &segment.path;
        fs::remove_file(path).map_err(|source| WalError::io("remove", path, source))?;
        sync_directory(dir)?;
    }
    Ok(())
}

/// Zeros the frames of `cut`, the last first, each made durable (`fdatasync`) before the one
/// before it is touched. A crash then leaves whole frames followed by at most one partly
/// zeroed frame and zeros: a torn tail of the newest segment, which recovery cuts. Zeroing
/// them all with one write could leave an earlier frame zeroed and a later one whole on the
/// disk, which recovery rightly reports as damage.
fn zero_frames_last_first(cut: &Cut) -> Result<(), WalError> {
    let path = &cut.path;
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| WalError::io("open segment", path, source))?;
    let mut end = cut.end;
    for &offset in cut.offsets.iter().rev() {
        write_zeros(&file, offset, end - offset)
            .map_err(|source| WalError::io("zero frames", path, source))?;
        file.sync_data().map_err(|source| WalError::io("sync segment", path, source))?;
        end = offset;
    }
    Ok(())
}
