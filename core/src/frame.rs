//! The WAL frame: the unit written to segment files and sent to peers, byte for byte.
//!
//! Layout (all integers little-endian; see `docs/wal-format.md`):
//!
//! ```text
//! offset size field
//!      0    4 magic          "STRF" = 0x46525453
//!      4    2 version        1
//!      6    2 flags          0 (reserved)
//!      8    4 partition
//!     12    4 payload_bytes  length of the rkyv payload that follows the header
//!     16    8 epoch
//!     24    8 first_lsn
//!     32    8 last_lsn
//!     40    8 commit_lsn     leader's commit LSN when the frame was cut
//!     48    8 reserved       0
//!     56    4 checksum       CRC32C over bytes 0..56, then 60.. to the end of the padding
//!     60    4 reserved       0
//!     64    … payload, then zero padding up to a multiple of 8 bytes
//! ```

use crate::ids::{Epoch, Lsn, PartitionId};
use crate::record::{ArchivedBatch, ArchivedRecord, Batch, Record, RecordView};

pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"STRF");
pub const FRAME_VERSION: u16 = 1;
pub const FRAME_HEADER_BYTES: usize = 64;
pub const FRAME_ALIGNMENT_BYTES: usize = 8;
/// Upper bound of one frame's payload; a batch that would exceed it is split.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
const CHECKSUM_OFFSET: usize = 56;

const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGNMENT_BYTES));
const _: () = assert!(FRAME_PAYLOAD_BYTES_MAX.is_multiple_of(FRAME_ALIGNMENT_BYTES));
const _: () = assert!(CHECKSUM_OFFSET + 8 == FRAME_HEADER_BYTES);
// A payload at an address that is a multiple of the frame alignment can be read in place: no
// archived type of a batch needs more.
const _: () = assert!(std::mem::align_of::<ArchivedBatch>() <= FRAME_ALIGNMENT_BYTES);
const _: () = assert!(std::mem::align_of::<ArchivedRecord>() <= FRAME_ALIGNMENT_BYTES);

/// The decoded header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub partition: PartitionId,
    pub epoch: Epoch,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    pub commit_lsn: Lsn,
    pub payload_bytes: u32,
}

impl FrameHeader {
    /// Bytes of the whole frame: header, payload, padding.
    #[must_use]
    pub fn frame_bytes(&self) -> usize {
        frame_bytes_for_payload(self.payload_bytes as usize)
    }

    #[must_use]
    pub fn record_count(&self) -> u64 {
        self.last_lsn.0 - self.first_lsn.0 + 1
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("bad frame magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("unsupported frame version {found}")]
    BadVersion { found: u16 },
    #[error("frame payload of {payload_bytes} bytes exceeds the limit")]
    PayloadTooLarge { payload_bytes: usize },
    #[error("frame LSN range {first}..={last} is invalid")]
    BadLsnRange { first: u64, last: u64 },
    #[error("frame checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("frame payload does not decode: {reason}")]
    BadPayload { reason: String },
    #[error("frame holds {decoded} records, header says {expected}")]
    RecordCountMismatch { decoded: u64, expected: u64 },
}

#[must_use]
pub fn frame_bytes_for_payload(payload_bytes: usize) -> usize {
    let unpadded = FRAME_HEADER_BYTES + payload_bytes;
    unpadded.div_ceil(FRAME_ALIGNMENT_BYTES) * FRAME_ALIGNMENT_BYTES
}

/// Encodes `records` as one frame appended to `output`. `first_lsn` is the LSN of the first record.
pub fn encode_frame(
    output: &mut Vec<u8>,
    partition: PartitionId,
    epoch: Epoch,
    first_lsn: Lsn,
    commit_lsn: Lsn,
    records: &[Record],
) {
    let batch = Batch { records: records.to_vec() };
    encode_batch_frame(output, partition, epoch, first_lsn, commit_lsn, &batch);
}

/// Like [`encode_frame`], for records already gathered in a [`Batch`] (no copy of them).
pub fn encode_batch_frame(
    output: &mut Vec<u8>,
    partition: PartitionId,
    epoch: Epoch,
    first_lsn: Lsn,
    commit_lsn: Lsn,
    batch: &Batch,
) {
    assert!(!batch.records.is_empty());
    assert!(first_lsn.0 > 0);
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(batch).expect("rkyv serialization");
    let count = batch.records.len();
    encode_frame_payload(output, partition, epoch, first_lsn, commit_lsn, count, &payload);
}

/// Like [`encode_frame`], for an already serialized payload of `record_count` records.
pub fn encode_frame_payload(
    output: &mut Vec<u8>,
    partition: PartitionId,
    epoch: Epoch,
    first_lsn: Lsn,
    commit_lsn: Lsn,
    record_count: usize,
    payload: &[u8],
) {
    assert!(record_count > 0);
    assert!(payload.len() <= FRAME_PAYLOAD_BYTES_MAX, "batch too large for one frame");
    let start = output.len();
    let last_lsn = first_lsn.0 + record_count as u64 - 1;
    output.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    output.extend_from_slice(&FRAME_VERSION.to_le_bytes());
    output.extend_from_slice(&0u16.to_le_bytes());
    output.extend_from_slice(&partition.0.to_le_bytes());
    output.extend_from_slice(&u32::try_from(payload.len()).expect("bounded").to_le_bytes());
    output.extend_from_slice(&epoch.0.to_le_bytes());
    output.extend_from_slice(&first_lsn.0.to_le_bytes());
    output.extend_from_slice(&last_lsn.to_le_bytes());
    output.extend_from_slice(&commit_lsn.0.to_le_bytes());
    output.extend_from_slice(&0u64.to_le_bytes());
    output.extend_from_slice(&[0u8; 8]);
    output.extend_from_slice(payload);
    output.resize(start + frame_bytes_for_payload(payload.len()), 0);
    let checksum = frame_checksum(&output[start..]);
    output[start + CHECKSUM_OFFSET..start + CHECKSUM_OFFSET + 4]
        .copy_from_slice(&checksum.to_le_bytes());
    debug_assert!(decode_frame(&output[start..]).is_ok());
}

fn frame_checksum(frame: &[u8]) -> u32 {
    let header = crc32c::crc32c(&frame[..CHECKSUM_OFFSET]);
    crc32c::crc32c_append(header, &frame[CHECKSUM_OFFSET + 4..])
}

fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().expect("length checked"))
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("length checked"))
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("length checked"))
}

/// The last LSN of the last frame in `frames`: frames back to back, already checked.
///
/// # Panics
///
/// If `frames` is empty or not frames: the caller checked them.
#[must_use]
pub fn last_lsn_of(frames: &[u8]) -> Lsn {
    let mut offset = 0;
    let mut last = None;
    while offset < frames.len() {
        let header = decode_header(&frames[offset..]).expect("checked frames");
        offset += header.frame_bytes();
        last = Some(header.last_lsn);
    }
    last.expect("at least one frame")
}

/// Decodes and checks the fixed header only (not the checksum, which needs the payload).
pub fn decode_header(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated { needed: FRAME_HEADER_BYTES, available: bytes.len() });
    }
    let magic = read_u32(bytes, 0);
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    let version = read_u16(bytes, 4);
    if version != FRAME_VERSION {
        return Err(FrameError::BadVersion { found: version });
    }
    let payload_bytes = read_u32(bytes, 12);
    if payload_bytes as usize > FRAME_PAYLOAD_BYTES_MAX {
        return Err(FrameError::PayloadTooLarge { payload_bytes: payload_bytes as usize });
    }
    let first = read_u64(bytes, 24);
    let last = read_u64(bytes, 32);
    if first == 0 || last < first {
        return Err(FrameError::BadLsnRange { first, last });
    }
    Ok(FrameHeader {
        partition: PartitionId(read_u32(bytes, 8)),
        epoch: Epoch(read_u64(bytes, 16)),
        first_lsn: Lsn(first),
        last_lsn: Lsn(last),
        commit_lsn: Lsn(read_u64(bytes, 40)),
        payload_bytes,
    })
}

/// Validates a whole frame at the start of `bytes`: header, length and checksum.
/// Returns the header; the frame occupies `header.frame_bytes()` bytes.
pub fn decode_frame(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    let header = decode_header(bytes)?;
    let frame_bytes = header.frame_bytes();
    if bytes.len() < frame_bytes {
        return Err(FrameError::Truncated { needed: frame_bytes, available: bytes.len() });
    }
    let stored = read_u32(bytes, CHECKSUM_OFFSET);
    let computed = frame_checksum(&bytes[..frame_bytes]);
    if stored != computed {
        return Err(FrameError::ChecksumMismatch { stored, computed });
    }
    Ok(header)
}

/// The payload bytes of a frame whose header is `header` (validated by [`decode_frame`]).
#[must_use]
pub fn frame_payload<'a>(bytes: &'a [u8], header: &FrameHeader) -> &'a [u8] {
    &bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.payload_bytes as usize]
}

/// The records of a validated frame, as [`read_records`] found them.
#[derive(Debug)]
pub enum FrameRecords<'a> {
    /// Read in place from the frame's payload: nothing copied.
    InPlace(&'a ArchivedBatch),
    /// Copied out of a payload at an address the archive cannot be read at (not a multiple
    /// of [`FRAME_ALIGNMENT_BYTES`]).
    Copied(Vec<Record>),
}

impl FrameRecords<'_> {
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            FrameRecords::InPlace(batch) => batch.records.len(),
            FrameRecords::Copied(records) => records.len(),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records in LSN order, borrowed.
    #[must_use]
    pub fn iter(&self) -> RecordViews<'_> {
        match self {
            FrameRecords::InPlace(batch) => RecordViews::InPlace(batch.records.iter()),
            FrameRecords::Copied(records) => RecordViews::Copied(records.iter()),
        }
    }

    #[must_use]
    pub fn was_read_in_place(&self) -> bool {
        matches!(self, FrameRecords::InPlace(_))
    }
}

/// The iterator of [`FrameRecords::iter`].
pub enum RecordViews<'a> {
    InPlace(std::slice::Iter<'a, ArchivedRecord>),
    Copied(std::slice::Iter<'a, Record>),
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        match self {
            RecordViews::InPlace(archived) => archived.next().map(RecordView::from),
            RecordViews::Copied(records) => records.next().map(Record::view),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            RecordViews::InPlace(archived) => archived.size_hint(),
            RecordViews::Copied(records) => records.size_hint(),
        }
    }
}

/// Reads the records of a validated frame where they lie, after checking the whole payload
/// with bytecheck (nothing of a payload that fails the check is returned) and its record count
/// against the header. A payload at an address the archive cannot be read at is copied to an
/// aligned buffer and decoded into owned records instead: a frame that follows a message of
/// an odd length in a peer's receive buffer, never one of a WAL segment.
pub fn read_records<'a>(
    bytes: &'a [u8],
    header: &FrameHeader,
) -> Result<FrameRecords<'a>, FrameError> {
    let payload = frame_payload(bytes, header);
    let records = if payload.as_ptr().align_offset(FRAME_ALIGNMENT_BYTES) == 0 {
        FrameRecords::InPlace(access_batch(payload)?)
    } else {
        let mut aligned =
            rkyv::util::AlignedVec::<FRAME_ALIGNMENT_BYTES>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        let batch = rkyv::deserialize::<Batch, rkyv::rancor::Error>(access_batch(&aligned)?)
            .map_err(|error| FrameError::BadPayload { reason: error.to_string() })?;
        FrameRecords::Copied(batch.records)
    };
    let decoded = records.len() as u64;
    if decoded != header.record_count() {
        return Err(FrameError::RecordCountMismatch { decoded, expected: header.record_count() });
    }
    Ok(records)
}

/// The archived batch of a payload, checked with bytecheck (which refuses a misaligned one).
fn access_batch(payload: &[u8]) -> Result<&ArchivedBatch, FrameError> {
    rkyv::access::<ArchivedBatch, rkyv::rancor::Error>(payload)
        .map_err(|error| FrameError::BadPayload { reason: error.to_string() })
}

/// Decodes the records of a validated frame into owned records, checking them with bytecheck.
pub fn decode_records(bytes: &[u8], header: &FrameHeader) -> Result<Vec<Record>, FrameError> {
    let records = read_records(bytes, header)?;
    Ok(records.iter().map(RecordView::to_record).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_records() -> Vec<Record> {
        vec![
            Record::Set { key: b"a".to_vec(), value: b"1".to_vec(), expire_at_ms: 0 },
            Record::Delete { key: b"b".to_vec() },
            Record::Expire { key: b"c".to_vec(), expire_at_ms: 1_700_000_000_000 },
            Record::FlushAll,
        ]
    }

    #[test]
    fn frame_round_trips() {
        let mut bytes = Vec::new();
        let records = sample_records();
        encode_frame(&mut bytes, PartitionId(3), Epoch(2), Lsn(10), Lsn(9), &records);
        assert_eq!(bytes.len() % FRAME_ALIGNMENT_BYTES, 0);
        let header = decode_frame(&bytes).unwrap();
        assert_eq!(header.partition, PartitionId(3));
        assert_eq!(header.epoch, Epoch(2));
        assert_eq!(header.first_lsn, Lsn(10));
        assert_eq!(header.last_lsn, Lsn(13));
        assert_eq!(header.commit_lsn, Lsn(9));
        assert_eq!(header.frame_bytes(), bytes.len());
        assert_eq!(decode_records(&bytes, &header).unwrap(), records);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, PartitionId(0), Epoch(1), Lsn(1), Lsn(0), &sample_records());
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x40;
            let outcome = decode_frame(&damaged)
                .and_then(|header| decode_records(&damaged, &header).map(|_| header));
            // Flips in reserved header bytes outside the checksum do not exist: all are covered.
            assert!(outcome.is_err(), "flip at {index} went unnoticed");
        }
    }

    /// `frame` copied to an address `misalignment` bytes past a multiple of 16.
    fn placed_at(frame: &[u8], misalignment: usize) -> (rkyv::util::AlignedVec<16>, usize) {
        let mut buffer = rkyv::util::AlignedVec::<16>::with_capacity(frame.len() + misalignment);
        buffer.extend_from_slice(&vec![0; misalignment]);
        buffer.extend_from_slice(frame);
        (buffer, misalignment)
    }

    #[test]
    fn an_aligned_payload_is_read_in_place_and_a_misaligned_one_copied() {
        let mut frame = Vec::new();
        let records = sample_records();
        encode_frame(&mut frame, PartitionId(0), Epoch(1), Lsn(1), Lsn(0), &records);
        for (misalignment, in_place) in [(0, true), (8, true), (4, false), (1, false)] {
            let (buffer, start) = placed_at(&frame, misalignment);
            let bytes = &buffer[start..];
            let header = decode_frame(bytes).unwrap();
            let read = read_records(bytes, &header).unwrap();
            assert_eq!(read.was_read_in_place(), in_place, "payload {misalignment} bytes off");
            let owned: Vec<Record> = read.iter().map(RecordView::to_record).collect();
            assert_eq!(owned, records);
        }
    }

    #[test]
    fn a_checksummed_payload_that_is_no_batch_is_refused_in_place_and_copied() {
        let garbage = [0xA5u8; 40];
        let mut frame = Vec::new();
        encode_frame_payload(&mut frame, PartitionId(0), Epoch(1), Lsn(1), Lsn(0), 1, &garbage);
        for misalignment in [0, 4] {
            let (buffer, start) = placed_at(&frame, misalignment);
            let header = decode_frame(&buffer[start..]).unwrap();
            let refused = read_records(&buffer[start..], &header).unwrap_err();
            assert!(matches!(refused, FrameError::BadPayload { .. }), "{refused}");
        }
    }

    #[test]
    fn a_record_count_other_than_the_header_says_is_refused() {
        let batch = Batch { records: sample_records() };
        let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&batch).unwrap();
        let mut frame = Vec::new();
        encode_frame_payload(&mut frame, PartitionId(0), Epoch(1), Lsn(1), Lsn(0), 3, &payload);
        let (buffer, start) = placed_at(&frame, 0);
        let header = decode_frame(&buffer[start..]).unwrap();
        let refused = read_records(&buffer[start..], &header).unwrap_err();
        assert_eq!(refused, FrameError::RecordCountMismatch { decoded: 4, expected: 3 });
    }

    fn any_record() -> impl Strategy<Value = Record> {
        let key = || proptest::collection::vec(0u8..4, 0..3);
        prop_oneof![
            (key(), proptest::collection::vec(any::<u8>(), 0..64), 0u64..3)
                .prop_map(|(key, value, expire_at_ms)| Record::Set { key, value, expire_at_ms }),
            key().prop_map(|key| Record::Delete { key }),
            (key(), 0u64..3).prop_map(|(key, expire_at_ms)| Record::Expire { key, expire_at_ms }),
            Just(Record::FlushAll),
        ]
    }

    /// Every entry of a partition's keyspace, sorted: (key, value, expiry, LSN).
    fn entries(partition: &crate::partition::Partition) -> Vec<(Vec<u8>, Vec<u8>, u64, Lsn)> {
        let keyspace = partition.keyspace();
        let mut entries: Vec<_> = keyspace
            .iter()
            .map(|(key, value, expire_at_ms)| {
                let lsn = keyspace.get_raw(key).expect("listed").lsn;
                (key.to_vec(), value.to_vec(), expire_at_ms, lsn)
            })
            .collect();
        entries.sort();
        entries
    }

    proptest! {
        #[test]
        fn applying_in_place_gives_the_keyspace_owned_records_give(
            frames in proptest::collection::vec(
                proptest::collection::vec(any_record(), 1..12), 1..6),
            misalignment in prop_oneof![Just(0usize), Just(8), Just(4)],
        ) {
            use crate::partition::{Partition, PartitionLimits};
            let mut in_place = Partition::new(PartitionId(0), PartitionLimits::default());
            let mut owned = Partition::new(PartitionId(0), PartitionLimits::default());
            let mut next = Lsn(1);
            for records in &frames {
                let mut frame = Vec::new();
                encode_frame(&mut frame, PartitionId(0), Epoch(1), next, Lsn(0), records);
                let (buffer, start) = placed_at(&frame, misalignment);
                let header = decode_frame(&buffer[start..]).unwrap();
                let read = read_records(&buffer[start..], &header).unwrap();
                prop_assert_eq!(read.was_read_in_place(), misalignment % 8 == 0);
                for (lsn, record) in (next.0..).map(Lsn).zip(read.iter()) {
                    in_place.apply_replicated(lsn, record);
                }
                for (lsn, record) in (next.0..).map(Lsn).zip(records) {
                    owned.apply_replicated(lsn, record.view());
                }
                next = Lsn(header.last_lsn.0 + 1);
            }
            prop_assert_eq!(in_place.last_lsn(), owned.last_lsn());
            prop_assert_eq!(entries(&in_place), entries(&owned));
        }

        #[test]
        fn corrupt_frames_are_refused_before_anything_is_read(
            records in proptest::collection::vec(any_record(), 1..8),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
            misalignment in prop_oneof![Just(0usize), Just(4)],
        ) {
            let mut frame = Vec::new();
            encode_frame(&mut frame, PartitionId(0), Epoch(1), Lsn(1), Lsn(0), &records);
            let (mut buffer, start) = placed_at(&frame, misalignment);
            for (index, mask) in &flips {
                buffer[start + index.index(frame.len())] ^= mask;
            }
            let bytes = &buffer[start..];
            if bytes == frame.as_slice() {
                return Ok(());
            }
            let outcome = decode_frame(bytes).and_then(|header| read_records(bytes, &header));
            prop_assert!(outcome.is_err());
        }

        #[test]
        fn any_bytes_decode_or_error_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            if let Ok(header) = decode_frame(&bytes) {
                let _ = decode_records(&bytes, &header);
            }
        }

        #[test]
        fn random_batches_round_trip(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..20),
            first in 1u64..1_000_000,
        ) {
            let records: Vec<Record> = keys
                .iter()
                .map(|key| Record::Set {
                    key: key.clone(),
                    value: key.repeat(3),
                    expire_at_ms: first,
                })
                .collect();
            let mut bytes = Vec::new();
            encode_frame(&mut bytes, PartitionId(1), Epoch(1), Lsn(first), Lsn(0), &records);
            let header = decode_frame(&bytes).unwrap();
            prop_assert_eq!(decode_records(&bytes, &header).unwrap(), records);
        }
    }
}
