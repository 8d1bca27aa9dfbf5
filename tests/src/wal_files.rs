//! Reading a node's data directory from the outside, as `docs/wal-format.md` describes it:
//! partition directories, segment and snapshot file names, and frame headers. Only headers
//! are parsed (payloads are rkyv archives); this is enough to find frames and damage them.

use std::path::{Path, PathBuf};

/// Bytes of a segment's header block; frames start at this offset.
pub const SEGMENT_HEADER_BYTES: u64 = 4096;
/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: u64 = 64;
/// "STRS", little-endian: the first four bytes of a segment.
pub const SEGMENT_MAGIC: [u8; 4] = *b"STRS";
/// "STRF": the first four bytes of a frame.
pub const FRAME_MAGIC: [u8; 4] = *b"STRF";
/// "STRC": the first four bytes of a snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"STRC";

/// `<data_dir>/p<partition>`.
#[must_use]
pub fn partition_dir(data_dir: &Path, partition: u32) -> PathBuf {
    data_dir.join(format!("p{partition}"))
}

fn files_matching(directory: &Path, accept: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.file_name().and_then(|name| name.to_str()).is_some_and(&accept))
        .collect();
    files.sort();
    files
}

fn is_numbered(name: &str, prefix: &str, suffix: &str) -> bool {
    name.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(suffix)).is_some_and(|digits| {
        digits.len() == 20 && digits.bytes().all(|byte| byte.is_ascii_digit())
    })
}

/// The segments of a partition directory (`<first_lsn, 20 digits>.wal`), oldest first.
#[must_use]
pub fn segment_files(directory: &Path) -> Vec<PathBuf> {
    files_matching(directory, |name| is_numbered(name, "", ".wal"))
}

/// The snapshots of a partition directory (`snapshot-<lsn, 20 digits>.snap`), oldest first.
#[must_use]
pub fn snapshot_files(directory: &Path) -> Vec<PathBuf> {
    files_matching(directory, |name| is_numbered(name, "snapshot-", ".snap"))
}

/// The LSN in a segment's or snapshot's file name.
///
/// # Panics
/// If the name holds no 20-digit number.
#[must_use]
pub fn file_lsn(path: &Path) -> u64 {
    let name = path.file_name().and_then(|name| name.to_str()).expect("file name");
    let digits: String = name.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits.len(), 20, "no LSN in {name}");
    digits.parse().expect("LSN")
}

/// The header fields of one frame found in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Byte offset of the frame in the segment file.
    pub offset: u64,
    /// Whole length: header, payload and padding.
    pub bytes: u64,
    pub partition: u32,
    pub first_lsn: u64,
    pub last_lsn: u64,
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// The frames of a segment file, walking headers from offset 4096 until a header of zeros, a
/// header without the frame magic, or the end of the file.
///
/// # Panics
/// If the file cannot be read or does not start with a segment header.
#[must_use]
pub fn segment_frames(path: &Path) -> Vec<FrameInfo> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    assert_eq!(bytes[..4], SEGMENT_MAGIC, "{} is not a segment", path.display());
    let mut frames = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    while offset + FRAME_HEADER_BYTES as usize <= bytes.len() {
        let header = &bytes[offset..offset + FRAME_HEADER_BYTES as usize];
        if header[..4] != FRAME_MAGIC {
            break;
        }
        let payload_bytes = u64::from(u32_at(header, 12));
        let length = FRAME_HEADER_BYTES + payload_bytes.div_ceil(8) * 8;
        frames.push(FrameInfo {
            offset: offset as u64,
            bytes: length,
            partition: u32_at(header, 8),
            first_lsn: u64_at(header, 24),
            last_lsn: u64_at(header, 32),
        });
        offset += length as usize;
    }
    frames
}

/// Overwrites bytes of a file in place and syncs it.
///
/// # Panics
/// If the file cannot be written.
pub fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(path).expect("open for writing");
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(bytes).expect("overwrite");
    file.sync_all().expect("sync");
}

/// Reads `length` bytes of a file at `offset`.
///
/// # Panics
/// If the file is shorter or cannot be read.
#[must_use]
pub fn read_at(path: &Path, offset: u64, length: usize) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read file");
    bytes[offset as usize..offset as usize + length].to_vec()
}
