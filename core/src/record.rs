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
pub struct Batch {
    pub records: Vec<Record>,
}

impl Record {
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
