//! Segment files: naming, the header block, pre-writing, and listing.
//!
//! A segment is a file of exactly `segment_bytes` bytes named after the LSN of its first
//! record: a 4096-byte header block, then frames back to back, then zeros. Segments are written
//! full of zeros before they are used, so appending a frame overwrites allocated blocks and a
//! data sync never has to change the file's size or extent map.

use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use monoio::buf::IoBuf;
use strata_core::{Lsn, PartitionId};

use crate::error::WalError;

/// Bytes of the segment header block; frames start at this offset.
pub const SEGMENT_HEADER_BYTES: u64 = 4096;
pub(crate) const SEGMENT_HEADER_BLOCK_BYTES: usize = 4096;
/// "STRS", little-endian.
pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"STRS");
pub const SEGMENT_VERSION: u16 = 1;
/// Bytes covered by the header checksum, which is stored right after them.
const SEGMENT_HEADER_FIELDS_BYTES: usize = 32;
const SEGMENT_HEADER_USED_BYTES: usize = SEGMENT_HEADER_FIELDS_BYTES + 4;
/// Zeros are written in chunks of this size when a segment is pre-written.
const PREWRITE_CHUNK_BYTES: usize = 1024 * 1024;
/// Pre-written bytes written back at a time, and the pause after each, so that preparing a
/// spare segment never floods the device the active segment's appends wait on.
const PREWRITE_SYNC_BYTES: usize = 4 * 1024 * 1024;
const PREWRITE_PAUSE: std::time::Duration = std::time::Duration::from_millis(40);
const SEGMENT_FILE_SUFFIX: &str = ".wal";
const LSN_DIGITS: usize = 20;

const _: () = assert!(SEGMENT_HEADER_BLOCK_BYTES as u64 == SEGMENT_HEADER_BYTES);
const _: () = assert!(SEGMENT_HEADER_USED_BYTES <= SEGMENT_HEADER_BLOCK_BYTES);
const _: () = assert!((PREWRITE_CHUNK_BYTES as u64).is_multiple_of(SEGMENT_HEADER_BYTES));

/// The fields of a segment header block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub partition: PartitionId,
    /// LSN of the first record in the segment (its first frame's `first_lsn`).
    pub first_lsn: Lsn,
    /// Size of the whole file, header included.
    pub segment_bytes: u64,
}

impl SegmentHeader {
    /// The whole header block: fields, checksum, then zeros.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut block = vec![0u8; SEGMENT_HEADER_BLOCK_BYTES];
        block[0..4].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
        block[4..6].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        block[8..12].copy_from_slice(&self.partition.0.to_le_bytes());
        block[16..24].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        block[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let checksum = crc32c::crc32c(&block[..SEGMENT_HEADER_FIELDS_BYTES]);
        block[SEGMENT_HEADER_FIELDS_BYTES..SEGMENT_HEADER_USED_BYTES]
            .copy_from_slice(&checksum.to_le_bytes());
        block
    }

    /// Decodes and checks a header block.
    ///
    /// # Errors
    ///
    /// A sentence saying what is wrong: short block, magic, version, checksum, or nonzero
    /// reserved bytes.
    pub fn decode(block: &[u8]) -> Result<SegmentHeader, String> {
        let block_bytes = SEGMENT_HEADER_BLOCK_BYTES;
        if block.len() < block_bytes {
            return Err(format!("header block truncated to {} bytes", block.len()));
        }
        let magic = read_u32(block, 0);
        if magic != SEGMENT_MAGIC {
            return Err(format!("bad segment magic {magic:#010x}"));
        }
        let version = read_u16(block, 4);
        if version != SEGMENT_VERSION {
            return Err(format!("unsupported segment version {version}"));
        }
        let stored = read_u32(block, SEGMENT_HEADER_FIELDS_BYTES);
        let computed = crc32c::crc32c(&block[..SEGMENT_HEADER_FIELDS_BYTES]);
        if stored != computed {
            return Err(format!(
                "segment header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let reserved_zero = read_u16(block, 6) == 0 && read_u32(block, 12) == 0;
        if !reserved_zero || block[SEGMENT_HEADER_USED_BYTES..block_bytes].iter().any(|b| *b != 0) {
            return Err("nonzero bytes in the reserved part of the segment header".to_string());
        }
        Ok(SegmentHeader {
            partition: PartitionId(read_u32(block, 8)),
            first_lsn: Lsn(read_u64(block, 16)),
            segment_bytes: read_u64(block, 24),
        })
    }
}

pub(crate) fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().expect("length checked"))
}

pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("length checked"))
}

pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("length checked"))
}

/// `<first_lsn as 20 decimal digits>.wal`: names sort in LSN order.
#[must_use]
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{:020}{SEGMENT_FILE_SUFFIX}", first_lsn.0)
}

/// Parses a name made by [`segment_file_name`]; other names give `None`.
#[must_use]
pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    parse_lsn_name(name, "", SEGMENT_FILE_SUFFIX)
}

/// Parses `<prefix><20 digits><suffix>`.
pub(crate) fn parse_lsn_name(name: &str, prefix: &str, suffix: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != LSN_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// A segment file found in a partition directory, by its name (not yet validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    /// The LSN in the file name.
    pub first_lsn: Lsn,
    /// The file's current length.
    pub file_bytes: u64,
}

/// Lists the segment files of a partition directory in LSN order. Reads names and lengths
/// only; recovery validates the contents. Blocking: not for use on a serving shard.
///
/// # Errors
///
/// [`WalError::Io`] if the directory cannot be read.
pub fn scan_segments(dir: &Path) -> Result<Vec<SegmentInfo>, WalError> {
    let entries =
        fs::read_dir(dir).map_err(|source| WalError::io("read directory", dir, source))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| WalError::io("read directory", dir, source))?;
        let name = entry.file_name();
        let Some(first_lsn) = name.to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        let path = entry.path();
        let metadata = entry.metadata().map_err(|source| WalError::io("stat", &path, source))?;
        segments.push(SegmentInfo { path, first_lsn, file_bytes: metadata.len() });
    }
    segments.sort_by_key(|segment| segment.first_lsn);
    Ok(segments)
}

/// Creates (or truncates) `path`, writes `segment_bytes` zeros into it and syncs it, on the
/// shard's `io_uring`. The caller writes the header block when it puts the file to use.
pub(crate) async fn prewrite_segment(
    path: PathBuf,
    segment_bytes: u64,
) -> io::Result<monoio::fs::File> {
    let file = monoio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .await?;
    let mut zeros = vec![0u8; PREWRITE_CHUNK_BYTES];
    let mut offset = 0;
    let mut unsynced = 0;
    while offset < segment_bytes {
        let chunk = chunk_bytes(segment_bytes - offset);
        let (result, slice) = file.write_all_at(zeros.slice(..chunk), offset).await;
        zeros = slice.into_inner();
        result?;
        offset += chunk as u64;
        unsynced += chunk;
        if unsynced >= PREWRITE_SYNC_BYTES {
            // Write back a little at a time, with a pause, instead of a whole segment at
            // once: a burst of tens of megabytes stalls the WAL's own durable writes.
            file.sync_data().await?;
            unsynced = 0;
            monoio::time::sleep(PREWRITE_PAUSE).await;
        }
    }
    // A full sync: the file's size changed.
    file.sync_all().await?;
    Ok(file)
}

/// Blocking form of [`prewrite_segment`] that also writes the header, for recovery.
pub(crate) fn prewrite_segment_blocking(path: &Path, header: &SegmentHeader) -> io::Result<()> {
    let file =
        fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    let zeros = vec![0u8; PREWRITE_CHUNK_BYTES];
    let mut offset = 0;
    while offset < header.segment_bytes {
        let chunk = chunk_bytes(header.segment_bytes - offset);
        file.write_all_at(&zeros[..chunk], offset)?;
        offset += chunk as u64;
    }
    file.write_all_at(&header.encode(), 0)?;
    file.sync_all()
}

/// Opens the segment at `path` for direct appends: `O_DIRECT`, so that each write bypasses the
/// page cache, and with `dsync` also `O_DSYNC`, so that it is on stable storage when it
/// completes (without, it is once a later sync ends). `None` when the
/// filesystem refuses `O_DIRECT` (`EINVAL`, as tmpfs before Linux 6.6 does), with a warning:
/// the caller then keeps buffered writes and `fdatasync`.
pub(crate) async fn open_direct(path: &Path, dsync: bool) -> io::Result<Option<monoio::fs::File>> {
    let opened = if direct_io_refused() {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    } else {
        monoio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(direct_flags(dsync))
            .open(path)
            .await
    };
    direct_or_fallback(path, opened)
}

/// Blocking form of [`open_direct`], for the end of recovery.
pub(crate) fn open_direct_blocking(path: &Path, dsync: bool) -> io::Result<Option<fs::File>> {
    let opened = if direct_io_refused() {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    } else {
        fs::OpenOptions::new().read(true).write(true).custom_flags(direct_flags(dsync)).open(path)
    };
    direct_or_fallback(path, opened)
}

fn direct_flags(dsync: bool) -> i32 {
    if dsync {
        libc::O_DIRECT | libc::O_DSYNC
    } else {
        libc::O_DIRECT
    }
}

/// The device holding `dir` (`st_dev`), when one `fdatasync` on that filesystem flushes the
/// whole device's write cache, as on ext4 and XFS: then the appends of every log on the
/// device may share one sync. `None` elsewhere (btrfs, for one, commits per file).
pub(crate) fn flushing_device(dir: &Path) -> io::Result<Option<u64>> {
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut statistics = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `statistics` is written in full on success.
    let status = unsafe { libc::statfs(path.as_ptr(), statistics.as_mut_ptr()) };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it filled `statistics`.
    let filesystem = unsafe { statistics.assume_init() }.f_type;
    #[allow(clippy::useless_conversion)]
    let filesystem = i64::from(filesystem);
    if filesystem != EXT4_SUPER_MAGIC && filesystem != XFS_SUPER_MAGIC {
        return Ok(None);
    }
    Ok(Some(std::os::unix::fs::MetadataExt::dev(&fs::metadata(dir)?)))
}

fn direct_or_fallback<F>(path: &Path, opened: io::Result<F>) -> io::Result<Option<F>> {
    match opened {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(
                path = %path.display(),
                "the filesystem refuses O_DIRECT: appends use buffered writes and fdatasync"
            );
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
use std::cell::Cell;

#[cfg(test)]
thread_local! {
    /// Makes this thread's `O_DIRECT` opens fail with `EINVAL`, as on a filesystem without it.
    pub(crate) static REFUSE_DIRECT_IO: Cell<bool> = const { Cell::new(false) };
}

fn direct_io_refused() -> bool {
    #[cfg(test)]
    if REFUSE_DIRECT_IO.with(Cell::get) {
        return true;
    }
    false
}

fn chunk_bytes(remaining: u64) -> usize {
    usize::try_from(remaining.min(PREWRITE_CHUNK_BYTES as u64)).expect("bounded by the chunk")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_every_flip() {
        let header =
            SegmentHeader { partition: PartitionId(7), first_lsn: Lsn(42), segment_bytes: 65536 };
        let block = header.encode();
        assert_eq!(block.len() as u64, SEGMENT_HEADER_BYTES);
        assert_eq!(SegmentHeader::decode(&block), Ok(header));
        for index in 0..block.len() {
            let mut damaged = block.clone();
            damaged[index] ^= 0x01;
            assert!(SegmentHeader::decode(&damaged).is_err(), "flip at {index} went unnoticed");
        }
    }

    #[test]
    fn names_sort_by_lsn_and_parse_back() {
        assert_eq!(segment_file_name(Lsn(17)), "00000000000000000017.wal");
        assert_eq!(parse_segment_file_name("00000000000000000017.wal"), Some(Lsn(17)));
        assert_eq!(parse_segment_file_name(&segment_file_name(Lsn(u64::MAX))), Some(Lsn(u64::MAX)));
        assert_eq!(parse_segment_file_name("0000000000000000017.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000001a.wal"), None);
        assert_eq!(parse_segment_file_name("00000000000000000017.wal.tmp"), None);
        assert!(segment_file_name(Lsn(9)) < segment_file_name(Lsn(10)));
    }
}
