//! Recovery of one partition directory: newest snapshot, then every frame after it.
//!
//! Runs with blocking `std::fs` calls, before the shard serves the partition. Damage is
//! classified here: a torn tail of the newest segment is cut, anything else is `Corrupt` with
//! the file and byte offset.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_core::frame::{
    decode_frame, read_records, FrameHeader, FrameRecords, FRAME_ALIGNMENT_BYTES,
    FRAME_HEADER_BYTES,
};
use strata_core::record::RecordView;
use strata_core::{Epoch, Lsn, PartitionId};

use crate::config::{WalConfig, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MULTIPLE};
use crate::error::WalError;
use crate::segment::{
    prewrite_segment_blocking, read_u32, scan_segments, segment_file_name, SegmentHeader,
    SegmentInfo, SEGMENT_HEADER_BYTES,
};
use crate::snapshot::{
    load_snapshot, parse_snapshot_file_name, EntrySink, LoadedSnapshot, TEMPORARY_SUFFIX,
};

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoverySummary {
    /// LSN of the snapshot loaded, or 0 without one.
    pub snapshot_lsn: Lsn,
    pub snapshot_entries: u64,
    /// LSN of the last record in the log (at least `snapshot_lsn`).
    pub last_lsn: Lsn,
    /// Epoch of the log's last frame (0 when the log holds no frame after the snapshot).
    pub last_epoch: Epoch,
    /// Segment files read.
    pub segments: usize,
    /// Frames holding at least one record after the snapshot, and their bytes.
    pub frames_replayed: u64,
    pub bytes_replayed: u64,
    /// Records passed to `on_record`: those after the snapshot.
    pub records_replayed: u64,
    /// Bytes of a torn tail zeroed in the newest segment (0 if it ended cleanly).
    pub torn_bytes: u64,
    pub elapsed: Duration,
    /// The log's epoch history, ascending in both: `(epoch, first LSN)` for each epoch among
    /// the frames after the snapshot, at the first LSN of its first frame, so that a replica
    /// can find where its log and a leader's agree. A snapshot stamped with an epoch starts
    /// it with `(snapshot epoch, snapshot LSN)`, which is all that is known of the part of
    /// the log the snapshot covers. Empty for an empty log.
    pub epochs: Vec<(Epoch, Lsn)>,
    /// The highest commit LSN a frame of the log carries (each frame carries its leader's
    /// commit point when it was cut): what a replica may take as committed after a restart,
    /// before its leader tells it more.
    pub commit_lsn: Lsn,
}

impl RecoverySummary {
    /// What the loaded snapshot says before any frame is read: its LSN, and its epoch as
    /// the start of the epoch history when it carries one (0 means it does not).
    fn start_from_snapshot(&mut self, loaded: &LoadedSnapshot) {
        self.snapshot_lsn = loaded.lsn;
        self.snapshot_entries = loaded.entry_count;
        self.last_epoch = loaded.epoch;
        if loaded.epoch.0 > 0 && loaded.lsn.0 > 0 {
            self.epochs.push((loaded.epoch, loaded.lsn));
        }
    }
}

/// A segment before the active one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SealedSegment {
    pub path: PathBuf,
    pub first_lsn: Lsn,
}

/// The newest segment, where appends continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecoveredTail {
    pub path: PathBuf,
    pub first_lsn: Lsn,
    pub segment_bytes: u64,
    pub write_offset: u64,
}

/// The state of the log after recovery.
#[derive(Clone, Debug)]
pub(crate) struct RecoveredLog {
    pub snapshot_lsn: Lsn,
    pub snapshot_path: Option<PathBuf>,
    pub sealed: Vec<SealedSegment>,
    pub tail: RecoveredTail,
    pub last_lsn: Lsn,
    pub bytes_since_snapshot: u64,
}

/// The files of a partition directory, by kind.
pub(crate) struct Listing {
    /// In LSN order.
    pub snapshots: Vec<(Lsn, PathBuf)>,
    /// In LSN order.
    pub segments: Vec<SegmentInfo>,
    pub temporaries: Vec<PathBuf>,
}

pub(crate) fn recover_log(
    dir: &Path,
    partition: PartitionId,
    config: &WalConfig,
    on_entry: &mut EntrySink<'_>,
    on_record: &mut dyn FnMut(Lsn, RecordView<'_>),
) -> Result<(RecoveredLog, RecoverySummary), WalError> {
    let started = Instant::now();
    config.validate()?;
    fs::create_dir_all(dir).map_err(|source| WalError::io("create directory", dir, source))?;
    let listing = list_directory(dir)?;
    remove_files(&listing.temporaries)?;
    let mut summary = RecoverySummary::default();
    let snapshot = load_newest_snapshot(partition, &listing.snapshots, on_entry)?;
    if let Some((loaded, _)) = &snapshot {
        summary.start_from_snapshot(loaded);
    }
    let (kept, mut segments) =
        split_covered_segments(listing.segments, summary.snapshot_lsn, config)?;
    if segments.is_empty() {
        let first_lsn = summary.snapshot_lsn.next();
        segments.push(create_first_segment(dir, partition, config, first_lsn)?);
    }
    let mut replay = Replay::new(partition, summary.snapshot_lsn, on_record);
    let tail = replay.segments(&segments, &mut summary)?;
    sync_directory(dir)?;
    let last_lsn = Lsn(replay.next_lsn.0 - 1);
    if last_lsn < summary.snapshot_lsn {
        let reason = format!(
            "the log ends at LSN {last_lsn}, before the snapshot's LSN {}",
            summary.snapshot_lsn
        );
        return Err(WalError::corrupt(&tail.path, tail.write_offset, reason));
    }
    summary.last_lsn = last_lsn;
    summary.segments = segments.len();
    summary.elapsed = started.elapsed();
    let sealed = kept
        .iter()
        .chain(&segments[..segments.len() - 1])
        .map(|segment| SealedSegment { path: segment.path.clone(), first_lsn: segment.first_lsn })
        .collect();
    let log = RecoveredLog {
        snapshot_lsn: summary.snapshot_lsn,
        snapshot_path: snapshot.map(|(_, path)| path),
        sealed,
        tail,
        last_lsn,
        bytes_since_snapshot: summary.bytes_replayed,
    };
    Ok((log, summary))
}

pub(crate) fn list_directory(dir: &Path) -> Result<Listing, WalError> {
    let entries =
        fs::read_dir(dir).map_err(|source| WalError::io("read directory", dir, source))?;
    let mut listing =
        Listing { snapshots: Vec::new(), segments: Vec::new(), temporaries: Vec::new() };
    for entry in entries {
        let entry = entry.map_err(|source| WalError::io("read directory", dir, source))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(TEMPORARY_SUFFIX) {
            listing.temporaries.push(entry.path());
        } else if let Some(lsn) = parse_snapshot_file_name(&name) {
            listing.snapshots.push((lsn, entry.path()));
        }
    }
    listing.snapshots.sort();
    listing.segments = scan_segments(dir)?;
    Ok(listing)
}

fn remove_files(paths: &[PathBuf]) -> Result<(), WalError> {
    for path in paths {
        fs::remove_file(path).map_err(|source| WalError::io("remove", path, source))?;
    }
    Ok(())
}

/// Loads the newest snapshot and removes the older ones, which it supersedes.
fn load_newest_snapshot(
    partition: PartitionId,
    snapshots: &[(Lsn, PathBuf)],
    on_entry: &mut EntrySink<'_>,
) -> Result<Option<(LoadedSnapshot, PathBuf)>, WalError> {
    let Some((lsn, path)) = snapshots.last() else {
        return Ok(None);
    };
    let loaded = load_snapshot(path, partition, *lsn, on_entry)?;
    let older: Vec<PathBuf> =
        snapshots[..snapshots.len() - 1].iter().map(|(_, path)| path.clone()).collect();
    remove_files(&older)?;
    Ok(Some((loaded, path.clone())))
}

/// Splits off the segments whose every record is covered by the snapshot: those followed
/// by a segment that starts at or before `snapshot_lsn + 1`. They are removed, or kept
/// unread (the first list) when they wait for the archive. The newest segment always stays
/// in the second list, which replay reads.
fn split_covered_segments(
    mut segments: Vec<SegmentInfo>,
    snapshot_lsn: Lsn,
    config: &WalConfig,
) -> Result<(Vec<SegmentInfo>, Vec<SegmentInfo>), WalError> {
    let covered =
        segments.windows(2).take_while(|pair| pair[1].first_lsn.0 <= snapshot_lsn.0 + 1).count();
    let rest = segments.split_off(covered);
    if config.keep_until_archived {
        return Ok((segments, rest));
    }
    let paths: Vec<PathBuf> = segments.iter().map(|segment| segment.path.clone()).collect();
    remove_files(&paths)?;
    Ok((Vec::new(), rest))
}

fn create_first_segment(
    dir: &Path,
    partition: PartitionId,
    config: &WalConfig,
    first_lsn: Lsn,
) -> Result<SegmentInfo, WalError> {
    let header = SegmentHeader { partition, first_lsn, segment_bytes: config.segment_bytes };
    let path = dir.join(segment_file_name(first_lsn));
    let temporary = dir.join(format!("{}{TEMPORARY_SUFFIX}", segment_file_name(first_lsn)));
    prewrite_segment_blocking(&temporary, &header)
        .map_err(|source| WalError::io("prewrite segment", &temporary, source))?;
    fs::rename(&temporary, &path).map_err(|source| WalError::io("rename", &temporary, source))?;
    sync_directory(dir)?;
    Ok(SegmentInfo { path, first_lsn, file_bytes: config.segment_bytes })
}

pub(crate) fn sync_directory(dir: &Path) -> Result<(), WalError> {
    fs::File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| WalError::io("sync directory", dir, source))
}

/// Where the frames of a segment stop, and why.
struct Stop {
    offset: u64,
    /// Why the frame at `offset` is not valid; `None` for a header of zeros (or the file end).
    reason: Option<String>,
}

/// Replays frames in LSN order across segments, checking that they chain.
struct Replay<'a> {
    partition: PartitionId,
    snapshot_lsn: Lsn,
    /// The LSN the next frame must start at.
    next_lsn: Lsn,
    /// Epoch of the last frame read, which the next may not be lower than.
    previous_epoch: Option<Epoch>,
    on_record: &'a mut dyn FnMut(Lsn, RecordView<'_>),
}

impl<'a> Replay<'a> {
    fn new(
        partition: PartitionId,
        snapshot_lsn: Lsn,
        on_record: &'a mut dyn FnMut(Lsn, RecordView<'_>),
    ) -> Self {
        Replay { partition, snapshot_lsn, next_lsn: Lsn::ZERO, previous_epoch: None, on_record }
    }

    /// Replays every segment; returns where appends continue.
    fn segments(
        &mut self,
        segments: &[SegmentInfo],
        summary: &mut RecoverySummary,
    ) -> Result<RecoveredTail, WalError> {
        let mut tail = None;
        for (index, segment) in segments.iter().enumerate() {
            let newest = index + 1 == segments.len();
            tail = Some(self.segment(segment, newest, summary)?);
        }
        Ok(tail.expect("at least one segment"))
    }

    fn segment(
        &mut self,
        segment: &SegmentInfo,
        newest: bool,
        summary: &mut RecoverySummary,
    ) -> Result<RecoveredTail, WalError> {
        let path = &segment.path;
        let bytes = crate::mapped::map_file(path, "read segment")?;
        let header = self.check_segment_header(segment, &bytes)?;
        let stop = self.frames(path, &bytes, summary)?;
        let torn_bytes = classify_stop(path, &bytes, &stop, self.partition, self.next_lsn, newest)?;
        if newest {
            cut_and_sync(path, stop.offset, torn_bytes)?;
            summary.torn_bytes = torn_bytes;
        }
        Ok(RecoveredTail {
            path: path.clone(),
            first_lsn: header.first_lsn,
            segment_bytes: header.segment_bytes,
            write_offset: stop.offset,
        })
    }

    fn check_segment_header(
        &mut self,
        segment: &SegmentInfo,
        bytes: &[u8],
    ) -> Result<SegmentHeader, WalError> {
        let path = &segment.path;
        let header =
            SegmentHeader::decode(bytes).map_err(|reason| WalError::corrupt(path, 0, reason))?;
        let problem = segment_header_problem(&header, segment, bytes.len() as u64, self.partition);
        if let Some(reason) = problem {
            return Err(WalError::corrupt(path, 0, reason));
        }
        let expected = if self.next_lsn == Lsn::ZERO {
            // The oldest segment: it must reach back to the snapshot (or to LSN 1).
            if header.first_lsn > self.snapshot_lsn.next() {
                let reason = format!(
                    "the oldest segment starts at LSN {}, but records after LSN {} are needed",
                    header.first_lsn, self.snapshot_lsn
                );
                return Err(WalError::corrupt(path, 0, reason));
            }
            header.first_lsn
        } else {
            self.next_lsn
        };
        if header.first_lsn != expected {
            let reason = format!(
                "segment starts at LSN {}, the previous segment ends before LSN {expected}",
                header.first_lsn
            );
            return Err(WalError::corrupt(path, 0, reason));
        }
        self.next_lsn = header.first_lsn;
        Ok(header)
    }

    /// Replays the valid frames at the start of a segment's frame area; returns where they stop.
    fn frames(
        &mut self,
        path: &Path,
        bytes: &[u8],
        summary: &mut RecoverySummary,
    ) -> Result<Stop, WalError> {
        let mut offset = usize::try_from(SEGMENT_HEADER_BYTES).expect("small");
        loop {
            let rest = &bytes[offset..];
            let header_zero = rest.iter().take(FRAME_HEADER_BYTES).all(|byte| *byte == 0);
            if header_zero {
                return Ok(Stop { offset: offset as u64, reason: None });
            }
            let header = match decode_frame(rest) {
                Ok(header) => header,
                Err(error) => {
                    return Ok(Stop { offset: offset as u64, reason: Some(error.to_string()) })
                }
            };
            let corrupt = |reason: String| WalError::corrupt(path, offset as u64, reason);
            if header.partition != self.partition {
                return Err(corrupt(format!("frame of partition {}", header.partition)));
            }
            if header.first_lsn != self.next_lsn {
                let reason = format!(
                    "frame starts at LSN {}, the log expects LSN {}",
                    header.first_lsn, self.next_lsn
                );
                return Err(corrupt(reason));
            }
            let records =
                read_records(rest, &header).map_err(|error| corrupt(error.to_string()))?;
            self.follow_epoch(&header, summary).map_err(corrupt)?;
            self.apply(header.first_lsn, &records, header.frame_bytes() as u64, summary);
            self.next_lsn = header.last_lsn.next();
            summary.last_epoch = header.epoch;
            summary.commit_lsn = summary.commit_lsn.max(header.commit_lsn.min(header.last_lsn));
            offset += header.frame_bytes();
        }
    }

    /// Checks that `frame` does not go back in epoch, and adds an entry to the epoch history
    /// when a frame after the snapshot starts a new epoch. A lower epoch is damage, not a
    /// torn write: the frame is whole, checksummed and continues the log, so the log was
    /// written wrongly or altered.
    fn follow_epoch(
        &mut self,
        frame: &FrameHeader,
        summary: &mut RecoverySummary,
    ) -> Result<(), String> {
        let covered = frame.last_lsn <= self.snapshot_lsn;
        let history_epoch = summary.epochs.last().map(|(epoch, _)| *epoch);
        // The snapshot's epoch, when stamped, also precedes the frames after it.
        let previous =
            if covered { self.previous_epoch } else { self.previous_epoch.max(history_epoch) };
        if let Some(previous) = previous.filter(|previous| frame.epoch < *previous) {
            return Err(format!(
                "frame of epoch {} follows epoch {previous}: epochs never go back",
                frame.epoch
            ));
        }
        self.previous_epoch = Some(frame.epoch);
        if covered || history_epoch == Some(frame.epoch) {
            return Ok(());
        }
        // A frame that also holds the snapshot's LSN starts its epoch after that entry.
        let first_lsn = summary
            .epochs
            .last()
            .map_or(frame.first_lsn, |(_, lsn)| frame.first_lsn.max(lsn.next()));
        summary.epochs.push((frame.epoch, first_lsn));
        Ok(())
    }

    fn apply(
        &mut self,
        first_lsn: Lsn,
        records: &FrameRecords<'_>,
        frame_bytes: u64,
        summary: &mut RecoverySummary,
    ) {
        let mut replayed_any = false;
        for (lsn, record) in (first_lsn.0..).map(Lsn).zip(records.iter()) {
            if lsn > self.snapshot_lsn {
                (self.on_record)(lsn, record);
                summary.records_replayed += 1;
                replayed_any = true;
            }
        }
        if replayed_any {
            summary.frames_replayed += 1;
            summary.bytes_replayed += frame_bytes;
        }
    }
}

pub(crate) fn segment_header_problem(
    header: &SegmentHeader,
    segment: &SegmentInfo,
    file_bytes: u64,
    partition: PartitionId,
) -> Option<String> {
    let size = header.segment_bytes;
    if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&size)
        || !size.is_multiple_of(SEGMENT_BYTES_MULTIPLE)
    {
        return Some(format!("segment header gives an impossible size {size}"));
    }
    if file_bytes != size {
        return Some(format!("segment file has {file_bytes} bytes, its header says {size}"));
    }
    if header.partition != partition {
        return Some(format!("segment of partition {}, expected {partition}", header.partition));
    }
    if header.first_lsn != segment.first_lsn {
        return Some(format!(
            "segment header says LSN {}, its name {}",
            header.first_lsn, segment.first_lsn
        ));
    }
    None
}

/// Decides what the bytes from `stop.offset` on are. Returns the length of a torn tail to cut
/// (0 for a clean end), or `Corrupt` when the damage cannot be a torn tail: a valid frame
/// follows it, or the segment is not the newest.
fn classify_stop(
    path: &Path,
    bytes: &[u8],
    stop: &Stop,
    partition: PartitionId,
    next_lsn: Lsn,
    newest: bool,
) -> Result<u64, WalError> {
    let start = usize::try_from(stop.offset).expect("within the segment");
    let what = stop.reason.clone().unwrap_or_else(|| "a region of zeros".to_string());
    if let Some(found) = find_valid_frame(bytes, start + FRAME_ALIGNMENT_BYTES, partition, next_lsn)
    {
        let reason = format!("{what}, yet a valid frame follows at offset {found}");
        return Err(WalError::corrupt(path, stop.offset, reason));
    }
    let Some(last_nonzero) = bytes[start..].iter().rposition(|byte| *byte != 0) else {
        return Ok(0);
    };
    if !newest {
        let reason = format!("{what} in a segment that is not the newest");
        return Err(WalError::corrupt(path, stop.offset, reason));
    }
    Ok(last_nonzero as u64 + 1)
}

/// The offset of the first valid frame of `partition` at or after `from` (8-byte aligned)
/// that starts at or after `next_lsn`.
fn find_valid_frame(
    bytes: &[u8],
    from: usize,
    partition: PartitionId,
    next_lsn: Lsn,
) -> Option<u64> {
    let end = bytes.len().saturating_sub(FRAME_HEADER_BYTES);
    (from..=end).step_by(FRAME_ALIGNMENT_BYTES).find_map(|offset| {
        if read_u32(bytes, offset) != strata_core::frame::FRAME_MAGIC {
            return None;
        }
        let header = decode_frame(&bytes[offset..]).ok()?;
        (header.partition == partition && header.first_lsn >= next_lsn).then_some(offset as u64)
    })
}

/// Zeros `torn_bytes` from `offset` and makes the segment durable as recovery read it: a
/// crashed process's writes may still sit unsynced in the page cache.
fn cut_and_sync(path: &Path, offset: u64, torn_bytes: u64) -> Result<(), WalError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| WalError::io("open segment", path, source))?;
    if torn_bytes > 0 {
        let shown = path.display();
        tracing::warn!(path = %shown, offset, torn_bytes, "cutting a torn tail");
        write_zeros(&file, offset, torn_bytes)
            .map_err(|source| WalError::io("cut torn tail", path, source))?;
    }
    file.sync_data().map_err(|source| WalError::io("sync segment", path, source))
}

pub(crate) fn write_zeros(file: &fs::File, offset: u64, length: u64) -> io::Result<()> {
    const CHUNK_BYTES: u64 = 1024 * 1024;
    let zeros = vec![0u8; usize::try_from(length.min(CHUNK_BYTES)).expect("bounded")];
    let mut written = 0;
    while written < length {
        let chunk = (length - written).min(CHUNK_BYTES);
        file.write_all_at(&zeros[..usize::try_from(chunk).expect("bounded")], offset + written)?;
        written += chunk;
    }
    Ok(())
}
