//! Log records: the *effects* of write commands, so that replay is deterministic.
//!
//! `INCR` logs the resulting value as a `Set`; relative expiry logs an absolute time. Applying
//! the same record twice gives the same state, which is what lets a fuzzy snapshot be followed
//! by a replay that overlaps it.

use rkyv::{Archive, Deserialize, Serialize};

/// Absolute expiry in Unix milliseconds; 0 means "no expiry".
pub type ExpireAtMs = u64;

/// One effect on one partition's keyspace.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Record {
    /// The key now holds `value`, expiring at `expire_at_ms` (0: never).
    Set { key: Vec<u8>, value: Vec<u8>, expire_at_ms: ExpireAtMs },
    /// The key is gone.
    Delete { key: Vec<u8> },
    /// The key's expiry is now `expire_at_ms` (0: persist). No effect if the key is absent.
    Expire { key: Vec<u8>, expire_at_ms: ExpireAtMs },
    /// Every key of the partition is gone.
    FlushAll,
}

/// The payload of one frame: consecutive records, the first at the frame's `first_lsn`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Batch {
    pub records: Vec<Record>,
}

/// A record where it lies, borrowed: from an owned [`Record`], or read in place from a
/// received frame's archive ([`ArchivedRecord`]), so that applying it copies a value once, into
/// the keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordView<'a> {
    Set { key: &'a [u8], value: &'a [u8], expire_at_ms: ExpireAtMs },
    Delete { key: &'a [u8] },
    Expire { key: &'a [u8], expire_at_ms: ExpireAtMs },
    FlushAll,
}

impl RecordView<'_> {
    /// An owned copy of the record.
    #[must_use]
    pub fn to_record(self) -> Record {
        match self {
            RecordView::Set { key, value, expire_at_ms } => {
                Record::Set { key: key.to_vec(), value: value.to_vec(), expire_at_ms }
            }
            RecordView::Delete { key } => Record::Delete { key: key.to_vec() },
            RecordView::Expire { key, expire_at_ms } => {
                Record::Expire { key: key.to_vec(), expire_at_ms }
            }
            RecordView::FlushAll => Record::FlushAll,
        }
    }
}

impl<'a> From<&'a ArchivedRecord> for RecordView<'a> {
    fn from(archived: &'a ArchivedRecord) -> RecordView<'a> {
        match archived {
            ArchivedRecord::Set { key, value, expire_at_ms } => RecordView::Set {
                key: key.as_slice(),
                value: value.as_slice(),
                expire_at_ms: expire_at_ms.to_native(),
            },
            ArchivedRecord::Delete { key } => RecordView::Delete { key: key.as_slice() },
            ArchivedRecord::Expire { key, expire_at_ms } => {
                RecordView::Expire { key: key.as_slice(), expire_at_ms: expire_at_ms.to_native() }
            }
            ArchivedRecord::FlushAll => RecordView::FlushAll,
        }
    }
}

impl Record {
    /// The record, borrowed.
    #[must_use]
    pub fn view(&self) -> RecordView<'_> {
        match self {
            Record::Set { key, value, expire_at_ms } => {
                RecordView::Set { key, value, expire_at_ms: *expire_at_ms }
            }
            Record::Delete { key } => RecordView::Delete { key },
            Record::Expire { key, expire_at_ms } => {
                RecordView::Expire { key, expire_at_ms: *expire_at_ms }
            }
            Record::FlushAll => RecordView::FlushAll,
        }
    }

    /// Bytes this record adds to a frame payload, roughly; used to bound batch sizes.
    #[must_use]
    pub fn size_estimate(&self) -> usize {
        let body = match self {
            Record::Set { key, value, .. } => key.len() + value.len(),
            Record::Delete { key } | Record::Expire { key, .. } => key.len(),
            Record::FlushAll => 0,
        };
        body + 32
    }
}
