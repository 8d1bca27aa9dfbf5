//! The keyspace of one partition: string keys and values with absolute expiry times.
//!
//! Owned by the shard that owns the partition. Each entry remembers the LSN of the record that
//! last wrote it, so that a read can tell whether the value it sees is committed yet.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::ids::Lsn;
use crate::record::{ExpireAtMs, Record};

/// One key with its value in a single allocation (key bytes, then value bytes): one heap block
/// per key instead of two, which is most of the per-key overhead for small values.
#[derive(Clone, Debug)]
struct Slot {
    bytes: Box<[u8]>,
    key_bytes: u32,
    expire_at_ms: ExpireAtMs,
    lsn: Lsn,
}

impl Slot {
    fn new(key: &[u8], value: &[u8], expire_at_ms: ExpireAtMs, lsn: Lsn) -> Slot {
        let key_bytes = u32::try_from(key.len()).expect("keys are bounded by the RESP limits");
        let mut bytes = Vec::with_capacity(key.len() + value.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Slot { bytes: bytes.into_boxed_slice(), key_bytes, expire_at_ms, lsn }
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..self.key_bytes as usize]
    }

    fn entry(&self) -> Entry<'_> {
        Entry {
            value: &self.bytes[self.key_bytes as usize..],
            expire_at_ms: self.expire_at_ms,
            lsn: self.lsn,
        }
    }
}

/// A view of one key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub value: &'a [u8],
    /// Unix milliseconds; 0 means the key never expires.
    pub expire_at_ms: ExpireAtMs,
    /// The LSN of the record that produced this value.
    pub lsn: Lsn,
}

impl Entry<'_> {
    #[must_use]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at_ms != 0 && self.expire_at_ms <= now_ms
    }
}

/// A map from key to value, expiry and writing LSN, with byte accounting.
#[derive(Default)]
pub struct Keyspace {
    slots: HashTable<Slot>,
    hasher: foldhash::fast::RandomState,
    payload_bytes: u64,
    /// Keys with an expiry time: when none, the expiry sweep has nothing to look at.
    expiring: usize,
}

impl std::fmt::Debug for Keyspace {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Keyspace")
            .field("keys", &self.slots.len())
            .field("payload_bytes", &self.payload_bytes)
            .finish()
    }
}

impl Keyspace {
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes of keys and values held, without any overhead.
    #[must_use]
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &[u8]) -> Option<&Slot> {
        self.slots.find(self.hash(key), |slot| slot.key() == key)
    }

    /// The live entry for `key`, hiding expired ones.
    #[must_use]
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<Entry<'_>> {
        self.get_raw(key).filter(|entry| !entry.is_expired(now_ms))
    }

    /// The entry for `key`, expired or not.
    #[must_use]
    pub fn get_raw(&self, key: &[u8]) -> Option<Entry<'_>> {
        self.find(key).map(Slot::entry)
    }

    pub fn insert(&mut self, key: &[u8], value: &[u8], expire_at_ms: ExpireAtMs, lsn: Lsn) {
        let hash = self.hash(key);
        let hasher = &self.hasher;
        let entry =
            self.slots.entry(hash, |slot| slot.key() == key, |slot| hasher.hash_one(slot.key()));
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                self.expiring -= usize::from(slot.expire_at_ms != 0);
                if slot.bytes.len() == key.len() + value.len() {
                    // Same size (the common overwrite): reuse the allocation.
                    slot.bytes[key.len()..].copy_from_slice(value);
                    slot.expire_at_ms = expire_at_ms;
                    slot.lsn = lsn;
                } else {
                    self.payload_bytes -= slot.bytes.len() as u64;
                    *slot = Slot::new(key, value, expire_at_ms, lsn);
                    self.payload_bytes += slot.bytes.len() as u64;
                }
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let slot = Slot::new(key, value, expire_at_ms, lsn);
                self.payload_bytes += slot.bytes.len() as u64;
                vacant.insert(slot);
            }
        }
        self.expiring += usize::from(expire_at_ms != 0);
    }

    /// Removes `key`; returns whether it was present (expired or not).
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let hash = self.hash(key);
        match self.slots.find_entry(hash, |slot| slot.key() == key) {
            Ok(occupied) => {
                let (slot, _) = occupied.remove();
                self.payload_bytes -= slot.bytes.len() as u64;
                self.expiring -= usize::from(slot.expire_at_ms != 0);
                true
            }
            Err(_) => false,
        }
    }

    pub fn set_expiry(&mut self, key: &[u8], expire_at_ms: ExpireAtMs, lsn: Lsn) -> bool {
        let hash = self.hash(key);
        match self.slots.find_mut(hash, |slot| slot.key() == key) {
            Some(slot) => {
                let before = usize::from(slot.expire_at_ms != 0);
                slot.expire_at_ms = expire_at_ms;
                slot.lsn = lsn;
                self.expiring = self.expiring - before + usize::from(expire_at_ms != 0);
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.payload_bytes = 0;
        self.expiring = 0;
    }

    /// Applies a record's effect, as replay and followers do. Idempotent.
    pub fn apply(&mut self, lsn: Lsn, record: Record) {
        match record {
            Record::Set { key, value, expire_at_ms } => {
                self.insert(&key, &value, expire_at_ms, lsn);
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
        if self.expiring == 0 {
            return 0;
        }
        let mut removed = 0;
        let mut bytes = 0;
        self.slots.retain(|slot| {
            let expired =
                removed < limit && slot.entry().is_expired(now_ms) && slot.lsn <= commit_lsn;
            if expired {
                removed += 1;
                bytes += slot.bytes.len() as u64;
            }
            !expired
        });
        self.payload_bytes -= bytes;
        self.expiring -= removed;
        removed
    }

    /// Keys that have an expiry time.
    #[must_use]
    pub fn expiring(&self) -> usize {
        self.expiring
    }

    /// Every entry, for snapshots: (key, value, expire_at_ms).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], u64)> {
        self.slots.iter().map(|slot| (slot.key(), slot.entry().value, slot.expire_at_ms))
    }

    pub fn reserve(&mut self, additional: usize) {
        let hasher = &self.hasher;
        self.slots.reserve(additional, |slot| hasher.hash_one(slot.key()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bytes_follow_inserts_and_removes() {
        let mut keyspace = Keyspace::default();
        keyspace.insert(b"ab", b"xyz", 0, Lsn(1));
        assert_eq!(keyspace.payload_bytes(), 5);
        keyspace.insert(b"ab", b"x", 0, Lsn(2));
        assert_eq!(keyspace.payload_bytes(), 3);
        assert!(keyspace.remove(b"ab"));
        assert_eq!(keyspace.payload_bytes(), 0);
        assert!(!keyspace.remove(b"ab"));
    }

    #[test]
    fn expired_entries_are_hidden_and_swept_once_committed() {
        let mut keyspace = Keyspace::default();
        keyspace.insert(b"a", b"1", 100, Lsn(1));
        keyspace.insert(b"b", b"2", 100, Lsn(5));
        assert!(keyspace.get(b"a", 99).is_some());
        assert!(keyspace.get(b"a", 100).is_none());
        assert_eq!(keyspace.remove_expired(200, Lsn(4), 10), 1);
        assert!(keyspace.get_raw(b"b").is_some());
        assert_eq!(keyspace.remove_expired(200, Lsn(5), 10), 1);
        assert!(keyspace.is_empty());
        assert_eq!(keyspace.expiring(), 0);
    }

    #[test]
    fn the_count_of_expiring_keys_follows_every_change() {
        let mut keyspace = Keyspace::default();
        keyspace.insert(b"a", b"1", 100, Lsn(1));
        keyspace.insert(b"b", b"2", 0, Lsn(2));
        assert_eq!(keyspace.expiring(), 1);
        keyspace.insert(b"a", b"3", 0, Lsn(3));
        assert_eq!(keyspace.expiring(), 0);
        assert!(keyspace.set_expiry(b"b", 50, Lsn(4)));
        assert_eq!(keyspace.expiring(), 1);
        assert!(keyspace.remove(b"b"));
        assert_eq!(keyspace.expiring(), 0);
        keyspace.insert(b"c", b"4", 10, Lsn(5));
        keyspace.clear();
        assert_eq!(keyspace.expiring(), 0);
    }
}
