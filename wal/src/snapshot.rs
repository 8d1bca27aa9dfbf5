//! Snapshot files: one partition's whole keyspace as of one LSN.
//!
//! A snapshot is written to a temporary file, synced, renamed into place and the directory
//! synced; only then are the segments it covers deleted. Recovery loads the newest snapshot
//! and replays the records after its LSN.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use strata_core::{Epoch, Lsn, PartitionId};

use crate::error::WalError;
use crate::segment::{parse_lsn_name, read_u16, read_u32, read_u64};

/// Bytes of the snapshot header; the body follows it.
pub const SNAPSHOT_HEADER_BYTES: usize = 64;
/// "STRC", little-endian. The bytes date from when snapshots were called checkpoints; they
/// are part of the format and stay as they are.
pub const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"STRC");
pub const SNAPSHOT_VERSION: u16 = 1;
const HEADER_CHECKSUM_OFFSET: usize = 60;
/// Where the epoch of the snapshot's last frame sits (0 in images older than the field).
const EPOCH_OFFSET: usize = 44;
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";
/// The name Strata 0.2 and earlier gave the same file (`checkpoint-<lsn>.ckpt`): still read,
/// so that a data directory they wrote recovers; never written.
const LEGACY_PREFIX: &str = "checkpoint-";
const LEGACY_SUFFIX: &str = ".ckpt";
/// Suffix of a snapshot being written; recovery removes such files.
pub(crate) const TEMPORARY_SUFFIX: &str = ".tmp";

const _: () = assert!(HEADER_CHECKSUM_OFFSET + 4 == SNAPSHOT_HEADER_BYTES);

/// Serializes `entries` (key, value, `expire_at_ms`) as a snapshot of `partition`: the
/// bytes of a snapshot file whose LSN is still to be filled in. Runs synchronously, so the
/// caller can take it at the moment its keyspace is exactly the state at some LSN and write it
/// with [`PartitionWal::write_snapshot`](crate::PartitionWal::write_snapshot) once that LSN
/// is durable.
///
/// # Panics
///
/// If a key or value is 4 GiB or larger.
pub fn encode_snapshot<'a, I>(partition: PartitionId, entries: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8], u64)>,
{
    let mut bytes = vec![0u8; SNAPSHOT_HEADER_BYTES];
    let mut entry_count = 0u64;
    for (key, value, expire_at_ms) in entries {
        push_field(&mut bytes, key);
        push_field(&mut bytes, value);
        bytes.extend_from_slice(&expire_at_ms.to_le_bytes());
        entry_count += 1;
    }
    let body_bytes = (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64;
    let body_checksum = crc32c::crc32c(&bytes[SNAPSHOT_HEADER_BYTES..]);
    bytes[0..4].copy_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
    bytes[4..6].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    bytes[8..12].copy_from_slice(&partition.0.to_le_bytes());
    bytes[24..32].copy_from_slice(&entry_count.to_le_bytes());
    bytes[32..40].copy_from_slice(&body_bytes.to_le_bytes());
    bytes[40..44].copy_from_slice(&body_checksum.to_le_bytes());
    bytes
}

/// Stamps `lsn` into bytes made by [`encode_snapshot`] and seals the header with its
/// checksum. Returns the entry count.
///
/// # Panics
///
/// If `bytes` is not an unsealed image of `partition` from [`encode_snapshot`].
pub fn seal_snapshot(bytes: &mut [u8], partition: PartitionId, lsn: Lsn) -> u64 {
    assert!(bytes.len() >= SNAPSHOT_HEADER_BYTES, "not an encoded snapshot");
    assert_eq!(read_u32(bytes, 0), SNAPSHOT_MAGIC, "not an encoded snapshot");
    assert_eq!(PartitionId(read_u32(bytes, 8)), partition, "snapshot of another partition");
    let body_bytes = read_u64(bytes, 32);
    assert_eq!(body_bytes, (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64, "snapshot resized");
    bytes[16..24].copy_from_slice(&lsn.0.to_le_bytes());
    let header_checksum = crc32c::crc32c(&bytes[..HEADER_CHECKSUM_OFFSET]);
    bytes[HEADER_CHECKSUM_OFFSET..SNAPSHOT_HEADER_BYTES]
        .copy_from_slice(&header_checksum.to_le_bytes());
    read_u64(bytes, 24)
}

/// Records in bytes made by [`encode_snapshot`] the epoch of the frame that wrote the
/// snapshot's LSN, so that a log continuing from the snapshot alone still knows its epoch.
/// Call it before the image is sealed.
///
/// # Panics
///
/// If `bytes` is not an image from [`encode_snapshot`].
pub fn stamp_snapshot_epoch(bytes: &mut [u8], epoch: Epoch) {
    assert!(bytes.len() >= SNAPSHOT_HEADER_BYTES, "not an encoded snapshot");
    assert_eq!(read_u32(bytes, 0), SNAPSHOT_MAGIC, "not an encoded snapshot");
    bytes[EPOCH_OFFSET..EPOCH_OFFSET + 8].copy_from_slice(&epoch.0.to_le_bytes());
}

fn push_field(bytes: &mut Vec<u8>, field: &[u8]) {
    let length = u32::try_from(field.len()).expect("snapshot keys and values are below 4 GiB");
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(field);
}

/// `snapshot-<lsn as 20 decimal digits>.snap`.
#[must_use]
pub fn snapshot_file_name(lsn: Lsn) -> String {
    format!("{SNAPSHOT_PREFIX}{:020}{SNAPSHOT_SUFFIX}", lsn.0)
}

/// Parses a name made by [`snapshot_file_name`], or the legacy name of a snapshot written by
/// Strata 0.2 and earlier (`checkpoint-<lsn as 20 decimal digits>.ckpt`); other names give
/// `None`.
#[must_use]
pub fn parse_snapshot_file_name(name: &str) -> Option<Lsn> {
    parse_lsn_name(name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX)
        .or_else(|| parse_lsn_name(name, LEGACY_PREFIX, LEGACY_SUFFIX))
}

/// The decoded snapshot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SnapshotHeader {
    partition: PartitionId,
    lsn: Lsn,
    epoch: Epoch,
    entry_count: u64,
    body_bytes: u64,
    body_checksum: u32,
}

impl SnapshotHeader {
    fn decode(bytes: &[u8]) -> Result<SnapshotHeader, String> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES {
            return Err(format!("snapshot truncated to {} bytes", bytes.len()));
        }
        let magic = read_u32(bytes, 0);
        if magic != SNAPSHOT_MAGIC {
            return Err(format!("bad snapshot magic {magic:#010x}"));
        }
        let version = read_u16(bytes, 4);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unsupported snapshot version {version}"));
        }
        let stored = read_u32(bytes, HEADER_CHECKSUM_OFFSET);
        let computed = crc32c::crc32c(&bytes[..HEADER_CHECKSUM_OFFSET]);
        if stored != computed {
            return Err(format!(
                "snapshot header checksum mismatch: \
                 stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        Ok(SnapshotHeader {
            partition: PartitionId(read_u32(bytes, 8)),
            lsn: Lsn(read_u64(bytes, 16)),
            epoch: Epoch(read_u64(bytes, EPOCH_OFFSET)),
            entry_count: read_u64(bytes, 24),
            body_bytes: read_u64(bytes, 32),
            body_checksum: read_u32(bytes, 40),
        })
    }
}

/// Receives snapshot entries: key, value, `expire_at_ms`.
pub(crate) type EntrySink<'a> = dyn FnMut(&[u8], &[u8], u64) + 'a;

/// What loading a snapshot found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedSnapshot {
    pub lsn: Lsn,
    /// Epoch of the frame that wrote `lsn` (0 when unknown).
    pub epoch: Epoch,
    pub entry_count: u64,
}

/// Reads and checks the snapshot at `path` (named for `name_lsn`), calling `on_entry` for
/// each entry. Any damage is an error naming the file: a snapshot is never skipped silently.
pub(crate) fn load_snapshot(
    path: &Path,
    partition: PartitionId,
    name_lsn: Lsn,
    on_entry: &mut EntrySink<'_>,
) -> Result<LoadedSnapshot, WalError> {
    let bytes = crate::mapped::map_file(path, "read snapshot")?;
    check_image(&bytes, partition, Some(name_lsn), on_entry)
        .map_err(|(offset, reason)| WalError::corrupt(path, offset, reason))
}

/// Reads and checks only the header of the snapshot at `path` (named for `name_lsn`): for
/// operations that need its LSN and epoch but not its entries, without reading a body as
/// large as the keyspace. The body is checked when recovery loads it.
pub(crate) fn read_snapshot_header(
    path: &Path,
    partition: PartitionId,
    name_lsn: Lsn,
) -> Result<LoadedSnapshot, WalError> {
    let mut bytes = [0u8; SNAPSHOT_HEADER_BYTES];
    let read = std::fs::File::open(path).and_then(|file| file.read_exact_at(&mut bytes, 0));
    match read {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            let reason = "snapshot shorter than its header";
            return Err(WalError::corrupt(path, 0, reason));
        }
        Err(source) => return Err(WalError::io("read snapshot", path, source)),
    }
    let header =
        SnapshotHeader::decode(&bytes).map_err(|reason| WalError::corrupt(path, 0, reason))?;
    check_header(&header, partition, Some(name_lsn))
        .map_err(|(offset, reason)| WalError::corrupt(path, offset, reason))?;
    Ok(LoadedSnapshot { lsn: header.lsn, epoch: header.epoch, entry_count: header.entry_count })
}

/// Whether a decoded header is of `partition` and (when given) at `expected_lsn`; an error
/// gives the offset of the field that disagrees and what it is.
fn check_header(
    header: &SnapshotHeader,
    partition: PartitionId,
    expected_lsn: Option<Lsn>,
) -> Result<(), (u64, String)> {
    if header.partition != partition {
        let reason = format!("snapshot of partition {}, expected {partition}", header.partition);
        return Err((8, reason));
    }
    if let Some(expected) = expected_lsn.filter(|expected| *expected != header.lsn) {
        let reason = format!("snapshot header says LSN {}, expected {expected}", header.lsn);
        return Err((16, reason));
    }
    Ok(())
}

/// Checks a whole snapshot image of `partition` (at `expected_lsn`, when given), calling
/// `on_entry` for each entry. An error gives the offset of the damage and what it is.
pub(crate) fn check_image(
    bytes: &[u8],
    partition: PartitionId,
    expected_lsn: Option<Lsn>,
    on_entry: &mut EntrySink<'_>,
) -> Result<LoadedSnapshot, (u64, String)> {
    let header = SnapshotHeader::decode(bytes).map_err(|reason| (0, reason))?;
    check_header(&header, partition, expected_lsn)?;
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    let body_offset = SNAPSHOT_HEADER_BYTES as u64;
    if body.len() as u64 != header.body_bytes {
        let reason = format!("body of {} bytes, header says {}", body.len(), header.body_bytes);
        return Err((body_offset, reason));
    }
    let computed = crc32c::crc32c(body);
    if computed != header.body_checksum {
        let reason = format!(
            "snapshot body checksum mismatch: stored {:#010x}, computed {computed:#010x}",
            header.body_checksum
        );
        return Err((body_offset, reason));
    }
    let entry_count = decode_entries(body, on_entry)?;
    if entry_count != header.entry_count {
        return Err((
            body_offset,
            format!("{entry_count} entries, header says {}", header.entry_count),
        ));
    }
    Ok(LoadedSnapshot { lsn: header.lsn, epoch: header.epoch, entry_count })
}

/// Walks the body; an error gives the file offset of the entry that does not parse.
fn decode_entries(body: &[u8], on_entry: &mut EntrySink<'_>) -> Result<u64, (u64, String)> {
    let mut cursor = 0usize;
    let mut entry_count = 0u64;
    while cursor < body.len() {
        let entry_offset = (SNAPSHOT_HEADER_BYTES + cursor) as u64;
        let truncated = || (entry_offset, "snapshot entry truncated".to_string());
        let key = take_field(body, &mut cursor).ok_or_else(truncated)?;
        let value = take_field(body, &mut cursor).ok_or_else(truncated)?;
        let expire = body.get(cursor..cursor + 8).ok_or_else(truncated)?;
        cursor += 8;
        on_entry(key, value, u64::from_le_bytes(expire.try_into().expect("eight bytes")));
        entry_count += 1;
    }
    Ok(entry_count)
}

fn take_field<'a>(body: &'a [u8], cursor: &mut usize) -> Option<&'a [u8]> {
    let length = body.get(*cursor..cursor.checked_add(4)?)?;
    let length = u32::from_le_bytes(length.try_into().expect("four bytes")) as usize;
    let start = *cursor + 4;
    let field = body.get(start..start.checked_add(length)?)?;
    *cursor = start + length;
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn names_parse_back() {
        assert_eq!(snapshot_file_name(Lsn(5)), "snapshot-00000000000000000005.snap");
        assert_eq!(parse_snapshot_file_name(&snapshot_file_name(Lsn(5))), Some(Lsn(5)));
        assert_eq!(parse_snapshot_file_name("snapshot-00000000000000000005.snap.tmp"), None);
        let legacy = "checkpoint-00000000000000000005.ckpt";
        assert_eq!(parse_snapshot_file_name(legacy), Some(Lsn(5)), "the legacy name");
        assert_eq!(parse_snapshot_file_name(&format!("{legacy}.tmp")), None);
        assert_eq!(parse_snapshot_file_name("checkpoint-00000000000000000005.snap"), None);
    }

    #[test]
    fn image_round_trips_and_every_flip_is_caught() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join(snapshot_file_name(Lsn(9)));
        let entries: Vec<(&[u8], &[u8], u64)> = vec![(b"a", b"1", 0), (b"bb", b"", 77)];
        let mut bytes = encode_snapshot(PartitionId(2), entries.iter().copied());
        assert_eq!(seal_snapshot(&mut bytes, PartitionId(2), Lsn(9)), 2);
        fs::write(&path, &bytes).unwrap();
        let mut seen = Vec::new();
        let mut collect = |k: &[u8], v: &[u8], e: u64| seen.push((k.to_vec(), v.to_vec(), e));
        let loaded = load_snapshot(&path, PartitionId(2), Lsn(9), &mut collect).unwrap();
        assert_eq!(loaded, LoadedSnapshot { lsn: Lsn(9), epoch: Epoch(0), entry_count: 2 });
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], (b"bb".to_vec(), Vec::new(), 77));
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x10;
            fs::write(&path, &damaged).unwrap();
            let outcome = load_snapshot(&path, PartitionId(2), Lsn(9), &mut |_, _, _| {});
            assert!(matches!(outcome, Err(WalError::Corrupt { .. })), "flip at {index}");
        }
    }
}
