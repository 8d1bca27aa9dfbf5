//! Key → slot → partition, as Redis Cluster maps keys (CRC16/XMODEM, `{hash tag}`).

use crate::ids::{PartitionId, Slot};

/// Number of hash slots, as in Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

const CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = (index as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
}

/// CRC16 with the XMODEM parameters (polynomial 0x1021, initial value 0), as Redis uses.
#[must_use]
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc = (crc << 8) ^ CRC16_TABLE[usize::from(((crc >> 8) as u8) ^ byte)];
    }
    crc
}

/// The part of a key that is hashed: the content of the first non-empty `{...}`, else the key.
#[must_use]
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&byte| byte == b'{') {
        if let Some(length) = key[open + 1..].iter().position(|&byte| byte == b'}') {
            if length > 0 {
                return &key[open + 1..open + 1 + length];
            }
        }
    }
    key
}

#[must_use]
pub fn key_slot(key: &[u8]) -> Slot {
    Slot(crc16(hash_tag(key)) % SLOT_COUNT)
}

/// Slot → partition: slots are split into `partition_count` contiguous ranges.
#[must_use]
pub fn slot_partition(slot: Slot, partition_count: u32) -> PartitionId {
    assert!(partition_count > 0 && partition_count <= u32::from(SLOT_COUNT));
    assert!(slot.0 < SLOT_COUNT);
    PartitionId(u32::from(slot.0) * partition_count / u32::from(SLOT_COUNT))
}

#[must_use]
pub fn key_partition(key: &[u8], partition_count: u32) -> PartitionId {
    slot_partition(key_slot(key), partition_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis_reference_vector() {
        // The check value of CRC16/XMODEM, also quoted in the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on a real Redis.
        assert_eq!(key_slot(b"foo").0, 12182);
        assert_eq!(key_slot(b"bar").0, 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
    }

    #[test]
    fn partitions_cover_all_slots_in_order() {
        assert_eq!(slot_partition(Slot(0), 8), PartitionId(0));
        assert_eq!(slot_partition(Slot(SLOT_COUNT - 1), 8), PartitionId(7));
        assert_eq!(slot_partition(Slot(2048), 8), PartitionId(1));
        assert_eq!(slot_partition(Slot(2047), 8), PartitionId(0));
    }
}
