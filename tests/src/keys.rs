//! Where a key lives, computed independently of the node: CRC16 slot (with Redis hash tags),
//! then slot → partition as `docs/ARCHITECTURE.md` states (contiguous slot ranges).

/// Hash slots, as in Redis Cluster.
pub const SLOT_COUNT: u32 = 16384;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), bit by bit.
#[must_use]
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The hashed part of a key: the content of the first `{...}` if non-empty, else the key.
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
pub fn key_slot(key: &[u8]) -> u32 {
    u32::from(crc16(hash_tag(key))) % SLOT_COUNT
}

/// The partition that owns `key` among `partitions`.
#[must_use]
pub fn key_partition(key: &[u8], partitions: u32) -> u32 {
    key_slot(key) * partitions / SLOT_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(key_partition(b"foo", 8), 12182 * 8 / 16384);
    }
}
