//! What the WAL offers the archive (segments and snapshots in shared storage): the committed
//! and archived marks shared between the shards and the uploader, reading a sealed segment's
//! frames, checking a snapshot image, and writing a partition directory from archived objects.
//!
//! Segments and snapshots go to the archive exactly as they are on disk (a segment
//! without its trailing zeros), so an archived object is checked with the same rules as a
//! local file: the segment header and every frame's CRC32C, the snapshot's header and body
//! checksums.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use strata_core::frame::decode_frame;
use strata_core::{Epoch, Lsn, PartitionId};

use crate::config::{SEGMENT_BYTES_MAX, SEGMENT_BYTES_MULTIPLE};
use crate::error::WalError;
use crate::recovery::sync_directory;
use crate::segment::{
    segment_file_name, SegmentHeader, SEGMENT_HEADER_BLOCK_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::snapshot::{check_image, snapshot_file_name, LoadedSnapshot, TEMPORARY_SUFFIX};

/// Per partition: the last committed LSN (published by the owning shard) and the archive
/// floor (published by the uploader): every sealed segment whose records are all at or below
/// the floor is archived and covered by an archived snapshot, so its local file may go.
#[derive(Debug)]
pub struct ArchiveMarks {
    committed: Vec<AtomicU64>,
    floor: Vec<AtomicU64>,
}

impl ArchiveMarks {
    #[must_use]
    pub fn new(partition_count: u32) -> ArchiveMarks {
        let marks = || (0..partition_count).map(|_| AtomicU64::new(0)).collect();
        ArchiveMarks { committed: marks(), floor: marks() }
    }

    /// Raises the committed mark (it never goes back).
    pub fn set_committed(&self, partition: PartitionId, lsn: Lsn) {
        self.committed[partition.0 as usize].fetch_max(lsn.0, Ordering::AcqRel);
    }

    #[must_use]
    pub fn committed(&self, partition: PartitionId) -> Lsn {
        Lsn(self.committed[partition.0 as usize].load(Ordering::Acquire))
    }

    /// Sets the archive floor. It may go down: a node that stops uploading (a follower)
    /// publishes a floor without limit, and one that starts uploading again publishes what
    /// the archive really holds.
    pub fn set_floor(&self, partition: PartitionId, lsn: Lsn) {
        self.floor[partition.0 as usize].store(lsn.0, Ordering::Release);
    }

    #[must_use]
    pub fn floor(&self, partition: PartitionId) -> Lsn {
        Lsn(self.floor[partition.0 as usize].load(Ordering::Acquire))
    }
}

/// The valid part of a segment image: where its frames end and what they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentExtent {
    pub first_lsn: Lsn,
    /// LSN of the last record (`first_lsn - 1` when the segment holds no frame).
    pub last_lsn: Lsn,
    /// Epoch of the last frame (0 without frames).
    pub last_epoch: Epoch,
    /// Bytes of header block and frames; what follows is zeros.
    pub end_offset: u64,
    /// The segment size its header records.
    pub segment_bytes: u64,
}

/// Walks the header and frames of a segment image of `partition` (a whole local file, or an
/// archived object, which stops where the frames stop). Frames must chain from the header's
/// first LSN; the walk stops at the first header of zeros or the end of `bytes`.
///
/// # Errors
///
/// The byte offset and what is wrong: a bad header, a frame of another partition or out of
/// order, or a frame that does not validate (bytes that are neither a frame nor zeros).
pub fn segment_extent(
    bytes: &[u8],
    partition: PartitionId,
) -> Result<SegmentExtent, (u64, String)> {
    let header = SegmentHeader::decode(bytes).map_err(|reason| (0, reason))?;
    if header.partition != partition {
        return Err((
            8,
            format!("segment of partition {}, expected {partition}", header.partition),
        ));
    }
    let mut offset = SEGMENT_HEADER_BLOCK_BYTES;
    let mut next_lsn = header.first_lsn;
    let mut last_epoch = Epoch(0);
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let zeros = rest.iter().take(strata_core::frame::FRAME_HEADER_BYTES).all(|byte| *byte == 0);
        if zeros {
            break;
        }
        let frame = decode_frame(rest).map_err(|error| (offset as u64, error.to_string()))?;
        if frame.partition != partition {
            return Err((offset as u64, format!("frame of partition {}", frame.partition)));
        }
        if frame.first_lsn != next_lsn {
            let reason = format!("frame starts at LSN {}, expected {next_lsn}", frame.first_lsn);
            return Err((offset as u64, reason));
        }
        next_lsn = frame.last_lsn.next();
        last_epoch = frame.epoch;
        offset += frame.frame_bytes();
    }
    Ok(SegmentExtent {
        first_lsn: header.first_lsn,
        last_lsn: Lsn(next_lsn.0 - 1),
        last_epoch,
        end_offset: offset as u64,
        segment_bytes: header.segment_bytes,
    })
}

/// Checks a snapshot image of `partition` (header, body checksum, every entry) without
/// loading it.
///
/// # Errors
///
/// The byte offset and what is wrong.
pub fn inspect_snapshot(
    image: &[u8],
    partition: PartitionId,
) -> Result<LoadedSnapshot, (u64, String)> {
    check_image(image, partition, None, &mut |_, _, _| {})
}

/// Writes checked archived data into an empty partition directory, for restore and
/// bootstrap: an optional snapshot image, then frames appended to segments of
/// `segment_bytes` that are written whole (header, frames, zeros), synced, and named by their
/// first LSN. Recovering the directory afterwards loads exactly this state.
pub struct PartitionWriter {
    dir: PathBuf,
    partition: PartitionId,
    segment_bytes: u64,
    next_lsn: Lsn,
    open: Option<OpenSegment>,
}

struct OpenSegment {
    file: fs::File,
    temporary: PathBuf,
    first_lsn: Lsn,
    write_offset: u64,
}

impl PartitionWriter {
    /// Starts writing `dir`, which must hold no segment or snapshot.
    ///
    /// # Errors
    ///
    /// [`WalError::Config`] for an unusable segment size or a directory that already holds
    /// log files; [`WalError::Io`] when it cannot be created or read.
    pub fn new(dir: &Path, partition: PartitionId, segment_bytes: u64) -> Result<Self, WalError> {
        let config = crate::WalConfig { segment_bytes, ..Default::default() };
        config.validate()?;
        fs::create_dir_all(dir).map_err(|source| WalError::io("create directory", dir, source))?;
        if crate::install::file_names(dir)?.iter().any(|name| crate::install::is_log_file(name)) {
            let reason = format!("{} already holds log files", dir.display());
            return Err(WalError::Config { reason });
        }
        Ok(PartitionWriter {
            dir: dir.to_path_buf(),
            partition,
            segment_bytes,
            next_lsn: Lsn(1),
            open: None,
        })
    }

    /// The LSN the next frame must start at.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Writes `image` as the snapshot; frames must then continue after its LSN.
    ///
    /// # Errors
    ///
    /// [`WalError::Corrupt`] naming `name` when the image is damaged or of another partition;
    /// [`WalError::Config`] when frames were written already; [`WalError::Io`].
    pub fn write_snapshot(&mut self, name: &str, image: &[u8]) -> Result<LoadedSnapshot, WalError> {
        if self.next_lsn != Lsn(1) {
            return Err(WalError::Config { reason: "a snapshot must come first".into() });
        }
        let loaded = inspect_snapshot(image, self.partition)
            .map_err(|(offset, reason)| WalError::corrupt(name, offset, reason))?;
        let path = self.dir.join(snapshot_file_name(loaded.lsn));
        write_synced(&path, image)?;
        self.next_lsn = loaded.lsn.next();
        Ok(loaded)
    }

    /// Appends the frames of a checked segment image (from [`segment_extent`]) whose records
    /// continue the log; frames wholly before [`next_lsn`](Self::next_lsn) are skipped, so
    /// overlapping segments (archived by two leaders) join up. Returns the records written.
    ///
    /// # Errors
    ///
    /// [`WalError::Corrupt`] naming `name` when a frame does not validate or leaves a gap;
    /// [`WalError::Io`].
    pub fn append_segment(&mut self, name: &str, bytes: &[u8]) -> Result<u64, WalError> {
        let extent = segment_extent(bytes, self.partition)
            .map_err(|(offset, reason)| WalError::corrupt(name, offset, reason))?;
        let mut offset = SEGMENT_HEADER_BLOCK_BYTES;
        // The extent lies within `bytes`.
        let end = usize::try_from(extent.end_offset).unwrap_or(bytes.len());
        let mut records = 0;
        while offset < end {
            let frame = decode_frame(&bytes[offset..])
                .map_err(|error| WalError::corrupt(name, offset as u64, error.to_string()))?;
            let frame_bytes = &bytes[offset..offset + frame.frame_bytes()];
            offset += frame.frame_bytes();
            if frame.last_lsn < self.next_lsn {
                continue;
            }
            if frame.first_lsn != self.next_lsn {
                let reason = format!(
                    "frame starts at LSN {}, the restored log needs LSN {}",
                    frame.first_lsn, self.next_lsn
                );
                return Err(WalError::corrupt(name, (offset - frame_bytes.len()) as u64, reason));
            }
            self.write_frame(frame.first_lsn, frame_bytes)?;
            records += frame.last_lsn.0 - frame.first_lsn.0 + 1;
            self.next_lsn = frame.last_lsn.next();
        }
        Ok(records)
    }

    /// Seals the last segment and syncs the directory. Returns the last LSN written.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`].
    pub fn finish(mut self) -> Result<Lsn, WalError> {
        self.close_segment()?;
        sync_directory(&self.dir)?;
        Ok(Lsn(self.next_lsn.0 - 1))
    }

    fn write_frame(&mut self, first_lsn: Lsn, frame: &[u8]) -> Result<(), WalError> {
        let full = self
            .open
            .as_ref()
            .is_some_and(|open| open.write_offset + frame.len() as u64 > self.segment_bytes);
        if full {
            self.close_segment()?;
        }
        if self.open.is_none() {
            self.open_segment(first_lsn)?;
        }
        let open = self.open.as_mut().expect("opened above");
        if open.write_offset + frame.len() as u64 > self.segment_bytes {
            let reason = format!(
                "a frame of {} bytes does not fit in segments of {} bytes",
                frame.len(),
                self.segment_bytes
            );
            return Err(WalError::Config { reason });
        }
        open.file
            .write_all_at(frame, open.write_offset)
            .map_err(|source| WalError::io("write segment", &open.temporary, source))?;
        open.write_offset += frame.len() as u64;
        Ok(())
    }

    fn open_segment(&mut self, first_lsn: Lsn) -> Result<(), WalError> {
        assert!(self.segment_bytes.is_multiple_of(SEGMENT_BYTES_MULTIPLE));
        assert!(self.segment_bytes <= SEGMENT_BYTES_MAX);
        let header = SegmentHeader {
            partition: self.partition,
            first_lsn,
            segment_bytes: self.segment_bytes,
        };
        let temporary =
            self.dir.join(format!("{}{TEMPORARY_SUFFIX}", segment_file_name(first_lsn)));
        let io_error = |source| WalError::io("create segment", &temporary, source);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .map_err(io_error)?;
        file.set_len(self.segment_bytes).map_err(io_error)?;
        file.write_all_at(&header.encode(), 0).map_err(io_error)?;
        self.open =
            Some(OpenSegment { file, temporary, first_lsn, write_offset: SEGMENT_HEADER_BYTES });
        Ok(())
    }

    fn close_segment(&mut self) -> Result<(), WalError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        open.file.sync_all().map_err(|source| WalError::io("sync", &open.temporary, source))?;
        let path = self.dir.join(segment_file_name(open.first_lsn));
        fs::rename(&open.temporary, &path)
            .map_err(|source| WalError::io("rename", &open.temporary, source))
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), WalError> {
    let temporary = path.with_extension(format!("snap{TEMPORARY_SUFFIX}"));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|source| WalError::io("write snapshot", &temporary, source))?;
    fs::rename(&temporary, path).map_err(|source| WalError::io("rename", &temporary, source))
}

/// Frames read back from a live partition directory, for a replica that resumes from the
/// local log instead of a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogTail {
    /// Whole frames, in LSN order, the first starting right after the requested LSN.
    pub frames: Vec<Vec<u8>>,
    /// LSN and epoch of the last frame read (the requested LSN and 0 without frames).
    pub last_lsn: Lsn,
    pub last_epoch: Epoch,
    /// Epoch of the frame that ends at the requested LSN, when the log still holds it.
    pub epoch_at_start: Option<Epoch>,
}

/// Reads the frames after `after` from the segment files in `dir`, stopping at the first
/// bytes that are not a valid frame (the unwritten or still-being-written end of the active
/// segment) or once `bytes_max` bytes of frames are gathered. `None` when the log no longer
/// holds LSN `after + 1` at a frame boundary (deleted, or never written), or more than
/// `bytes_max` bytes would be needed to reach the end of what is written. Blocking reads of
/// whole segment files.
///
/// The read starts at the segment holding the frame that ends at `after`, even when the next
/// segment starts at `after + 1`, so that [`LogTail::epoch_at_start`] tells that frame's
/// epoch whenever the log still holds it.
///
/// # Errors
///
/// [`WalError::Io`] when the directory or a segment cannot be read.
pub fn read_log_after(
    dir: &Path,
    partition: PartitionId,
    after: Lsn,
    bytes_max: usize,
) -> Result<Option<LogTail>, WalError> {
    let segments = crate::scan_segments(dir)?;
    let wanted = after.next();
    let start = segments
        .iter()
        .rposition(|segment| segment.first_lsn <= after)
        .or_else(|| segments.iter().rposition(|segment| segment.first_lsn <= wanted));
    let Some(start) = start else {
        return Ok(None);
    };
    // The first segment is read for the epoch alone when the next one starts at `after + 1`.
    let only_for_epoch = segments.get(start + 1).is_some_and(|next| next.first_lsn == wanted);
    let mut tail = LogTail { last_lsn: after, ..LogTail::default() };
    let mut gathered = 0usize;
    for (index, segment) in segments.iter().enumerate().skip(start) {
        let bytes = match fs::read(&segment.path) {
            Ok(bytes) => bytes,
            // Deleted under us by a snapshot: the epoch is unknown, the frames are not.
            Err(error)
                if error.kind() == ErrorKind::NotFound && index == start && only_for_epoch =>
            {
                continue;
            }
            // Deleted under us by a snapshot: the log moved on.
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(WalError::io("read segment", &segment.path, source)),
        };
        if SegmentHeader::decode(&bytes).is_err() {
            return Ok(None);
        }
        if !tail.take_frames(&bytes, partition, after, &mut gathered, bytes_max) {
            return Ok(None);
        }
    }
    Ok(Some(tail))
}

impl LogTail {
    /// Adds the frames of one segment image that come after `after`, up to the first bytes
    /// that are not a valid frame, and notes the epoch of the frame ending at `after`.
    /// `false` when the log cannot be resumed from there: a frame of another partition, a
    /// gap, `after` inside a frame, or more than `bytes_max` bytes gathered.
    fn take_frames(
        &mut self,
        bytes: &[u8],
        partition: PartitionId,
        after: Lsn,
        gathered: &mut usize,
        bytes_max: usize,
    ) -> bool {
        let mut offset = SEGMENT_HEADER_BLOCK_BYTES;
        while offset < bytes.len() {
            let Ok(frame) = decode_frame(&bytes[offset..]) else { break };
            if frame.partition != partition {
                return false;
            }
            let frame_bytes = frame.frame_bytes();
            if frame.last_lsn == after {
                self.epoch_at_start = Some(frame.epoch);
            }
            if frame.first_lsn > after {
                if frame.first_lsn != self.last_lsn.next() {
                    return false;
                }
                *gathered += frame_bytes;
                if *gathered > bytes_max {
                    return false;
                }
                self.frames.push(bytes[offset..offset + frame_bytes].to_vec());
                self.last_lsn = frame.last_lsn;
                self.last_epoch = frame.epoch;
            } else if frame.last_lsn > after {
                // `after` falls inside a frame: not a boundary this log can resume from.
                return false;
            }
            offset += frame_bytes;
        }
        true
    }
}

/// Adds a snapshot image (checked first) to the partition directory `dir` without touching
/// its segments: for a log whose head is gone from the local disk and comes back from the
/// archive. Recovery then loads it and replays the local segments after it.
///
/// # Errors
///
/// [`WalError::Corrupt`] naming `name` when the image is damaged or of another partition;
/// [`WalError::Io`] when a file operation fails.
pub fn add_snapshot(
    dir: &Path,
    partition: PartitionId,
    name: &str,
    image: &[u8],
) -> Result<LoadedSnapshot, WalError> {
    let loaded = inspect_snapshot(image, partition)
        .map_err(|(offset, reason)| WalError::corrupt(name, offset, reason))?;
    write_synced(&dir.join(snapshot_file_name(loaded.lsn)), image)?;
    sync_directory(dir)?;
    Ok(loaded)
}
