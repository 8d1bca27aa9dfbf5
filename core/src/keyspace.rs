//! The keyspace of one partition: string keys and values with absolute expiry times.
//!
//! Owned by the shard that owns the partition. Each entry remembers the LSN of the record that
//! last wrote it, so that a read can tell whether the value it sees is committed yet.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::command::ScanCursor;
use crate::ids::Lsn;
use crate::record::{ExpireAtMs, RecordView};

/// One key with its value: usually in a single allocation (key bytes, then value bytes), one
/// heap block per key instead of two, which is most of the per-key overhead for small values.
#[derive(Clone, Debug)]
struct Slot {
    bytes: SlotBytes,
    key_bytes: u32,
    /// Unix seconds of the last read or write (OBJECT IDLETIME); fits the struct's padding.
    accessed_s: Cell<u32>,
    expire_at_ms: ExpireAtMs,
    lsn: Lsn,
}

/// Where a slot's bytes are.
#[derive(Clone, Debug)]
enum SlotBytes {
    /// The key, then the value, in one allocation.
    Joined(Box<[u8]>),
    /// A large value moved in from its command ([`Keyspace::insert_owned`]) keeps its own
    /// allocation, beside the key's: it is not copied.
    Split(Box<SplitBytes>),
}

#[derive(Clone, Debug)]
struct SplitBytes {
    key: Box<[u8]>,
    value: Box<[u8]>,
}

/// A value for a new slot: copied, or moved in.
enum NewValue<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Slot {
    fn new(
        key: &[u8],
        value: NewValue<'_>,
        expire_at_ms: ExpireAtMs,
        lsn: Lsn,
        now_s: u32,
    ) -> Slot {
        let key_bytes = u32::try_from(key.len()).expect("keys are bounded by the RESP limits");
        let bytes = match value {
            NewValue::Borrowed(value) => {
                let mut bytes = Vec::with_capacity(key.len() + value.len());
                bytes.extend_from_slice(key);
                bytes.extend_from_slice(value);
                SlotBytes::Joined(bytes.into_boxed_slice())
            }
            NewValue::Owned(value) => SlotBytes::Split(Box::new(SplitBytes {
                key: Box::from(key),
                value: value.into_boxed_slice(),
            })),
        };
        let accessed_s = Cell::new(now_s);
        Slot { bytes, key_bytes, accessed_s, expire_at_ms, lsn }
    }

    fn key(&self) -> &[u8] {
        match &self.bytes {
            SlotBytes::Joined(bytes) => &bytes[..self.key_bytes as usize],
            SlotBytes::Split(split) => &split.key,
        }
    }

    fn value(&self) -> &[u8] {
        match &self.bytes {
            SlotBytes::Joined(bytes) => &bytes[self.key_bytes as usize..],
            SlotBytes::Split(split) => &split.value,
        }
    }

    /// Bytes of key and value.
    fn payload_bytes(&self) -> u64 {
        (self.key_bytes as usize + self.value().len()) as u64
    }

    fn entry(&self) -> Entry<'_> {
        Entry { value: self.value(), expire_at_ms: self.expire_at_ms, lsn: self.lsn }
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
    /// Keys with an expiry time.
    expiring: usize,
    /// (expiry time, key hash) of every key with an expiry time, soonest first: what active
    /// expiry looks at. Two keys with one hash and one expiry time share an entry, and both are
    /// found through it; if one of them then changes, the other is left to lazy expiry (reads
    /// hide it), a cost of a 64-bit hash collision at the same millisecond.
    deadlines: BTreeSet<(ExpireAtMs, u64)>,
    /// Changes each time the table may have moved its entries (it grew or rehashed): a SCAN
    /// position taken before is no longer a position in the same order.
    layout: u32,
    /// Unix seconds as last told (by reads and by [`Keyspace::set_clock`]): what writes record as
    /// their keys' access time.
    clock_s: u32,
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

    /// The live entry for `key`, hiding expired ones. Counts as an access of the key.
    #[must_use]
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<Entry<'_>> {
        let slot = self.find(key)?;
        let entry = slot.entry();
        if entry.is_expired(now_ms) {
            return None;
        }
        slot.accessed_s.set(seconds(now_ms));
        Some(entry)
    }

    /// The time writes record as an access, from now on.
    pub fn set_clock(&mut self, now_ms: u64) {
        self.clock_s = seconds(now_ms);
    }

    /// Seconds since `key` was last read or written (OBJECT IDLETIME), without counting this
    /// question as an access.
    #[must_use]
    pub fn idle_seconds(&self, key: &[u8], now_ms: u64) -> Option<u64> {
        let slot = self.find(key).filter(|slot| !slot.entry().is_expired(now_ms))?;
        Some(u64::from(seconds(now_ms).saturating_sub(slot.accessed_s.get())))
    }

    /// The entry for `key`, expired or not.
    #[must_use]
    pub fn get_raw(&self, key: &[u8]) -> Option<Entry<'_>> {
        self.find(key).map(Slot::entry)
    }

    pub fn insert(&mut self, key: &[u8], value: &[u8], expire_at_ms: ExpireAtMs, lsn: Lsn) {
        self.put(key, NewValue::Borrowed(value), expire_at_ms, lsn);
    }

    /// Like [`insert`](Self::insert), keeping `value`'s allocation instead of copying it: for a
    /// large value that its command owns.
    pub fn insert_owned(&mut self, key: &[u8], value: Vec<u8>, expire_at_ms: ExpireAtMs, lsn: Lsn) {
        self.put(key, NewValue::Owned(value), expire_at_ms, lsn);
    }

    fn put(&mut self, key: &[u8], value: NewValue<'_>, expire_at_ms: ExpireAtMs, lsn: Lsn) {
        let hash = self.hash(key);
        if self.slots.len() == self.slots.capacity() {
            // A new key would make the table grow or rehash first.
            self.layout = self.layout.wrapping_add(1);
        }
        let hasher = &self.hasher;
        let entry =
            self.slots.entry(hash, |slot| slot.key() == key, |slot| hasher.hash_one(slot.key()));
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                forget_deadline(&mut self.deadlines, &mut self.expiring, slot.expire_at_ms, hash);
                match (&mut slot.bytes, value) {
                    (SlotBytes::Joined(bytes), NewValue::Borrowed(value))
                        if bytes.len() == key.len() + value.len() =>
                    {
                        // Same size (the common overwrite): reuse the allocation.
                        bytes[key.len()..].copy_from_slice(value);
                        slot.expire_at_ms = expire_at_ms;
                        slot.lsn = lsn;
                        slot.accessed_s.set(self.clock_s);
                    }
                    (_, value) => {
                        self.payload_bytes -= slot.payload_bytes();
                        *slot = Slot::new(key, value, expire_at_ms, lsn, self.clock_s);
                        self.payload_bytes += slot.payload_bytes();
                    }
                }
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let slot = Slot::new(key, value, expire_at_ms, lsn, self.clock_s);
                self.payload_bytes += slot.payload_bytes();
                vacant.insert(slot);
            }
        }
        remember_deadline(&mut self.deadlines, &mut self.expiring, expire_at_ms, hash);
    }

    /// Removes `key`; returns whether it was present (expired or not).
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let hash = self.hash(key);
        match self.slots.find_entry(hash, |slot| slot.key() == key) {
            Ok(occupied) => {
                let (slot, _) = occupied.remove();
                self.payload_bytes -= slot.payload_bytes();
                forget_deadline(&mut self.deadlines, &mut self.expiring, slot.expire_at_ms, hash);
                true
            }
            Err(_) => false,
        }
    }

    pub fn set_expiry(&mut self, key: &[u8], expire_at_ms: ExpireAtMs, lsn: Lsn) -> bool {
        let hash = self.hash(key);
        match self.slots.find_mut(hash, |slot| slot.key() == key) {
            Some(slot) => {
                forget_deadline(&mut self.deadlines, &mut self.expiring, slot.expire_at_ms, hash);
                slot.expire_at_ms = expire_at_ms;
                slot.lsn = lsn;
                remember_deadline(&mut self.deadlines, &mut self.expiring, expire_at_ms, hash);
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.payload_bytes = 0;
        self.expiring = 0;
        self.deadlines.clear();
    }

    /// Applies a record's effect, as replay and followers do. Idempotent.
    pub fn apply(&mut self, lsn: Lsn, record: RecordView<'_>) {
        match record {
            RecordView::Set { key, value, expire_at_ms } => {
                self.insert(key, value, expire_at_ms, lsn);
            }
            RecordView::Delete { key } => {
                self.remove(key);
            }
            RecordView::Expire { key, expire_at_ms } => {
                self.set_expiry(key, expire_at_ms, lsn);
            }
            RecordView::FlushAll => self.clear(),
        }
    }

    /// Up to `limit` keys whose expiry time is at or before `now_ms`, soonest first. The caller
    /// deletes them (as logged deletes), which takes them out of the deadlines.
    #[must_use]
    pub fn expired_keys(&mut self, now_ms: u64, limit: usize) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        let mut stale = Vec::new();
        for &(expire_at_ms, hash) in self.deadlines.range(..=(now_ms, u64::MAX)) {
            if keys.len() >= limit {
                break;
            }
            let before = keys.len();
            // The probe finds keys of other hashes too (a 7-bit tag matches): each key is
            // taken under its own deadline only, so none is deleted twice.
            let due = self.slots.iter_hash(hash).filter(|slot| {
                slot.expire_at_ms == expire_at_ms && self.hasher.hash_one(slot.key()) == hash
            });
            keys.extend(due.map(|slot| slot.key().to_vec()));
            if keys.len() == before {
                stale.push((expire_at_ms, hash));
            }
        }
        for deadline in stale {
            self.deadlines.remove(&deadline);
        }
        keys
    }

    /// Keys that have an expiry time.
    #[must_use]
    pub fn expiring(&self) -> usize {
        self.expiring
    }

    /// Every key that has not expired by `now_ms` (KEYS).
    pub fn iter_live(&self, now_ms: u64) -> impl Iterator<Item = &[u8]> {
        self.slots.iter().filter(move |slot| !slot.entry().is_expired(now_ms)).map(Slot::key)
    }

    /// Every entry, for snapshots: (key, value, expire_at_ms).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], u64)> {
        self.slots.iter().map(|slot| (slot.key(), slot.entry().value, slot.expire_at_ms))
    }

    /// The low bits of the count of the table's layout changes, as a SCAN cursor carries them.
    #[must_use]
    pub fn layout_tag(&self) -> u32 {
        self.layout & ScanCursor::LAYOUT_MASK
    }

    /// Visits live keys from `bucket` on, until `count` keys were seen (or ten times as many
    /// empty buckets, as Redis bounds a call). Returns the bucket to go on from (None once the
    /// table's end is reached) and how many keys were seen. A bucket of 0 starts over; so does
    /// one from another layout (the table moved its entries since), which may give keys twice
    /// but misses none.
    pub fn scan(
        &self,
        (bucket, layout): (u64, u32),
        count: usize,
        now_ms: u64,
        mut visit: impl FnMut(&[u8]),
    ) -> (Option<u64>, usize) {
        let buckets = self.slots.num_buckets();
        let mut bucket = if layout == self.layout_tag() { bucket as usize } else { 0 };
        let (mut seen, mut empty) = (0, 0);
        let empty_max = count.saturating_mul(10);
        while bucket < buckets && seen < count && empty < empty_max {
            match self.slots.get_bucket(bucket) {
                Some(slot) => {
                    seen += 1;
                    if !slot.entry().is_expired(now_ms) {
                        visit(slot.key());
                    }
                }
                None => empty += 1,
            }
            bucket += 1;
        }
        ((bucket < buckets).then_some(bucket as u64), seen)
    }

    /// A live key, from the first occupied bucket at or after one chosen by `seed`; None when
    /// no key is live.
    #[must_use]
    pub fn random_key(&self, seed: u64, now_ms: u64) -> Option<&[u8]> {
        let buckets = self.slots.num_buckets();
        if self.slots.is_empty() || buckets == 0 {
            return None;
        }
        let start = (seed % buckets as u64) as usize;
        (0..buckets)
            .filter_map(|offset| self.slots.get_bucket((start + offset) % buckets))
            .find(|slot| !slot.entry().is_expired(now_ms))
            .map(Slot::key)
    }

    pub fn reserve(&mut self, additional: usize) {
        self.layout = self.layout.wrapping_add(1);
        let hasher = &self.hasher;
        self.slots.reserve(additional, |slot| hasher.hash_one(slot.key()));
    }
}

/// Unix seconds of `now_ms`, as an access time holds them (good until 2106).
fn seconds(now_ms: u64) -> u32 {
    u32::try_from(now_ms / 1000).unwrap_or(u32::MAX)
}

fn remember_deadline(
    deadlines: &mut BTreeSet<(ExpireAtMs, u64)>,
    expiring: &mut usize,
    expire_at_ms: ExpireAtMs,
    hash: u64,
) {
    if expire_at_ms != 0 {
        deadlines.insert((expire_at_ms, hash));
        *expiring += 1;
    }
}

fn forget_deadline(
    deadlines: &mut BTreeSet<(ExpireAtMs, u64)>,
    expiring: &mut usize,
    expire_at_ms: ExpireAtMs,
    hash: u64,
) {
    if expire_at_ms != 0 {
        deadlines.remove(&(expire_at_ms, hash));
        *expiring -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_value_keeps_its_allocation_and_slots_stay_small() {
        // The enum takes no room beside the boxed bytes: a slot is as small as before.
        assert_eq!(std::mem::size_of::<Slot>(), 40);
        let mut keyspace = Keyspace::default();
        let value = vec![7u8; 20_000];
        let address = value.as_ptr();
        keyspace.insert_owned(b"big", value, 0, Lsn(1));
        let entry = keyspace.get_raw(b"big").unwrap();
        assert_eq!((entry.value.as_ptr(), entry.value.len(), entry.lsn), (address, 20_000, Lsn(1)));
        assert_eq!(keyspace.payload_bytes(), 20_003);
        assert_eq!(keyspace.iter().map(|(key, _, _)| key.to_vec()).collect::<Vec<_>>(), [b"big"]);
        // Overwritten by a copied value of the same size, or expired, it stays right.
        keyspace.insert(b"big", &[8u8; 20_000], 5, Lsn(2));
        assert_eq!(keyspace.get_raw(b"big").unwrap().value, &[8u8; 20_000][..]);
        assert!(keyspace.set_expiry(b"big", 9, Lsn(3)));
        keyspace.insert_owned(b"big", vec![9u8; 3], 0, Lsn(4));
        assert_eq!(keyspace.payload_bytes(), 6);
        assert_eq!(keyspace.expiring(), 0);
        assert!(keyspace.remove(b"big"));
        assert_eq!(keyspace.payload_bytes(), 0);
    }

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
    fn expired_keys_are_hidden_and_found_soonest_first() {
        let mut keyspace = Keyspace::default();
        keyspace.insert(b"a", b"1", 100, Lsn(1));
        keyspace.insert(b"b", b"2", 50, Lsn(2));
        keyspace.insert(b"c", b"3", 300, Lsn(3));
        keyspace.insert(b"d", b"4", 0, Lsn(4));
        assert!(keyspace.get(b"a", 99).is_some());
        assert!(keyspace.get(b"a", 100).is_none());
        assert!(keyspace.expired_keys(49, 10).is_empty());
        assert_eq!(keyspace.expired_keys(200, 1), vec![b"b".to_vec()]);
        assert_eq!(keyspace.expired_keys(200, 10), vec![b"b".to_vec(), b"a".to_vec()]);
        // A new expiry time replaces the old one in the deadlines.
        keyspace.set_expiry(b"a", 400, Lsn(5));
        keyspace.insert(b"b", b"5", 0, Lsn(6));
        assert!(keyspace.expired_keys(200, 10).is_empty());
        assert_eq!(keyspace.expired_keys(500, 10), vec![b"c".to_vec(), b"a".to_vec()]);
        assert!(keyspace.remove(b"c"));
        assert_eq!(keyspace.expired_keys(500, 10), vec![b"a".to_vec()]);
        keyspace.clear();
        assert!(keyspace.expired_keys(500, 10).is_empty());
    }

    #[test]
    fn keys_expiring_at_one_moment_are_each_found_once() {
        let mut keyspace = Keyspace::default();
        for number in 0..5000 {
            keyspace.insert(format!("k{number}").as_bytes(), b"v", 100, Lsn(1));
        }
        let mut keys = keyspace.expired_keys(100, usize::MAX);
        assert_eq!(keys.len(), 5000);
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 5000, "a key was found twice");
    }

    /// Every key present from a scan's start to its end is visited, while the table grows
    /// several times over and other keys come and go between the steps; once the growth stops,
    /// the scan ends.
    #[test]
    fn a_scan_visits_every_lasting_key_while_the_table_grows() {
        let mut keyspace = Keyspace::default();
        let lasting: Vec<Vec<u8>> = (0..300).map(|n| format!("l{n}").into_bytes()).collect();
        for key in &lasting {
            keyspace.insert(key, b"v", 0, Lsn(1));
        }
        let mut visited = std::collections::HashSet::new();
        let mut position = (0, keyspace.layout_tag());
        for step in 0.. {
            let (next, _) = keyspace.scan(position, 3, 0, |key| {
                visited.insert(key.to_vec());
            });
            // The position belongs to the layout the table had when it was given.
            let Some(bucket) = next else { break };
            position = (bucket, keyspace.layout_tag());
            if step < 200 {
                for number in 0..20 {
                    keyspace.insert(format!("n{step}:{number}").as_bytes(), b"v", 0, Lsn(2));
                }
            }
            keyspace.remove(format!("n{}:{}", step.max(1) - 1, step % 20).as_bytes());
            assert!(step < 50_000, "the scan did not end");
        }
        assert!(keyspace.len() > 4 * lasting.len());
        assert!(lasting.iter().all(|key| visited.contains(key)));
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
