//! The keyspace of one partition: string keys and values with absolute expiry times.
//!
//! Owned by the shard that owns the partition. Each entry remembers the LSN of the record that
//! last wrote it, so that a read can tell whether the value it sees is committed yet.

use std::collections::HashMap;

use crate::ids::Lsn;
use crate::record::{ExpireAtMs, Record};

type Map<V> = HashMap<Box<[u8]>, V, foldhash::fast::RandomState>;

/// One key's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Box<[u8]>,
    /// Unix milliseconds; 0 means the key never expires.
    pub expire_at_ms: ExpireAtMs,
    /// The LSN of the record that produced this value.
    pub lsn: Lsn,
}

impl Entry {
    #[must_use]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at_ms != 0 && self.expire_at_ms <= now_ms
    }
}

/// A map from key to [`Entry`], with byte accounting.
#[derive(Default, Debug)]
pub struct Keyspace {
    entries: Map<Entry>,
    payload_bytes: u64,
}

impl Keyspace {
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys and values held, without any overhead.
    #[must_use]
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// The live entry for `key`, hiding expired ones.
    #[must_use]
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.entries.get(key).filter(|entry| !entry.is_expired(now_ms))
    }

    /// The entry for `key`, expired or not.
    #[must_use]
    pub fn get_raw(&self, key: &[u8]) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn insert(&mut self, key: &[u8], value: Box<[u8]>, expire_at_ms: ExpireAtMs, lsn: Lsn) {
        let added = (key.len() + value.len()) as u64;
        let entry = Entry { value, expire_at_ms, lsn };
        if let Some(slot) = self.entries.get_mut(key) {
            self.payload_bytes -= (key.len() + slot.value.len()) as u64;
            *slot = entry;
        } else {
            self.entries.insert(key.into(), entry);
        }
        self.payload_bytes += added;
    }

    /// Removes `key`; returns whether it was present (expired or not).
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.payload_bytes -= (key.len() + entry.value.len()) as u64;
                true
            }
            None => false,
        }
    }

    pub fn set_expiry(&mut self, key: &[u8], expire_at_ms: ExpireAtMs, lsn: Lsn) -> bool {
        match self.entries.get_mut(key) {
            Some(entry) => {
                entry.expire_at_ms = expire_at_ms;
                entry.lsn = lsn;
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.payload_bytes = 0;
    }

    /// Applies a record's effect, as replay and followers do. Idempotent.
    pub fn apply(&mut self, lsn: Lsn, record: Record) {
        match record {
            Record::Set { key, value, expire_at_ms } => {
                self.insert(&key, value.into_boxed_slice(), expire_at_ms, lsn);
            }
            Record::Delete { key } => {
                self.remove(&key);
            }
            Record::Expire { key, expire_at_ms } => {
                self.set_expiry(&key, expire_at_ms, lsn);
            }
            Record::FlushAll => self.clear(),
        }
    }

    /// Removes up to `limit` entries that expired before `now_ms` and whose writes are
    /// committed (LSN at most `commit_lsn`). Returns how many were removed. Expiry is not
    /// logged: the expiry time itself is in the log, so replay reaches the same state.
    pub fn remove_expired(&mut self, now_ms: u64, commit_lsn: Lsn, limit: usize) -> usize {
        let expired: Vec<Box<[u8]>> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.is_expired(now_ms) && entry.lsn <= commit_lsn)
            .take(limit)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &expired {
            self.remove(key);
        }
        expired.len()
    }

    /// Every entry, for checkpoints: (key, value, expire_at_ms).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], u64)> {
        self.entries.iter().map(|(key, entry)| (&key[..], &entry.value[..], entry.expire_at_ms))
    }

    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bytes_follow_inserts_and_removes() {
        let mut keyspace = Keyspace::default();
        keyspace.insert(b"ab", b"xyz".to_vec().into(), 0, Lsn(1));
        assert_eq!(keyspace.payload_bytes(), 5);
        keyspace.insert(b"ab", b"x".to_vec().into(), 0, Lsn(2));
        assert_eq!(keyspace.payload_bytes(), 3);
        assert!(keyspace.remove(b"ab"));
        assert_eq!(keyspace.payload_bytes(), 0);
        assert!(!keyspace.remove(b"ab"));
    }

    #[test]
    fn expired_entries_are_hidden_and_swept_once_committed() {
        let mut keyspace = Keyspace::default();
        keyspace.insert(b"a", b"1".to_vec().into(), 100, Lsn(1));
        keyspace.insert(b"b", b"2".to_vec().into(), 100, Lsn(5));
        assert!(keyspace.get(b"a", 99).is_some());
        assert!(keyspace.get(b"a", 100).is_none());
        assert_eq!(keyspace.remove_expired(200, Lsn(4), 10), 1);
        assert!(keyspace.get_raw(b"b").is_some());
        assert_eq!(keyspace.remove_expired(200, Lsn(5), 10), 1);
        assert!(keyspace.is_empty());
    }
}
