//! What a partition keeps durably about replication, beside its log: the highest epoch it has
//! seen (its fence: anything from an older epoch is refused) and the newest in-sync set it
//! recorded. Written before the node acts on either (`p<N>/replication`, replaced atomically).
//!
//! Layout (little-endian): magic "STRR", u16 version 1, u16 flags (bit 0: a set follows), u64
//! fence epoch, the set ([`InSyncSet::encode`]) when flagged, then the CRC32C of everything
//! before it.

use crate::ids::Epoch;
use crate::replication::in_sync::InSyncSet;

/// The file's name in the partition directory.
pub const STATE_FILE_NAME: &str = "replication";
const MAGIC: u32 = u32::from_le_bytes(*b"STRR");
const VERSION: u16 = 1;
const HEADER_BYTES: usize = 16;

/// A partition's durable replication facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionFacts {
    /// The highest epoch this partition has seen: streams, sets and promotions of older
    /// epochs are refused.
    pub fence: Epoch,
    /// The newest in-sync set recorded here, if any.
    pub in_sync: Option<InSyncSet>,
}

/// Why a state file cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("replication state file: {0}")]
pub struct StateFileError(pub String);

impl PartitionFacts {
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&MAGIC.to_le_bytes());
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&u16::from(self.in_sync.is_some()).to_le_bytes());
        bytes.extend_from_slice(&self.fence.0.to_le_bytes());
        if let Some(set) = &self.in_sync {
            bytes.extend_from_slice(&set.encode());
        }
        let checksum = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// # Errors
    ///
    /// A wrong magic, version or checksum, a malformed set, or bytes left over.
    pub fn decode(bytes: &[u8]) -> Result<PartitionFacts, StateFileError> {
        let error = |reason: &str| StateFileError(reason.to_string());
        if bytes.len() < HEADER_BYTES + 4 {
            return Err(error("shorter than its header"));
        }
        let (body, stored) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(stored.try_into().expect("four bytes"));
        if crc32c::crc32c(body) != stored {
            return Err(error("checksum mismatch"));
        }
        if u32::from_le_bytes(body[0..4].try_into().expect("four bytes")) != MAGIC {
            return Err(error("bad magic"));
        }
        if u16::from_le_bytes([body[4], body[5]]) != VERSION {
            return Err(error("unknown version"));
        }
        let flags = u16::from_le_bytes([body[6], body[7]]);
        let fence = Epoch(u64::from_le_bytes(body[8..16].try_into().expect("eight bytes")));
        let rest = &body[HEADER_BYTES..];
        let in_sync = match flags {
            0 if rest.is_empty() => None,
            1 => {
                let (set, used) =
                    InSyncSet::decode(rest).map_err(|set| StateFileError(set.to_string()))?;
                if used != rest.len() {
                    return Err(error("bytes after the set"));
                }
                Some(set)
            }
            _ => return Err(error("unknown flags or bytes after the header")),
        };
        Ok(PartitionFacts { fence, in_sync })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::in_sync::Member;

    #[test]
    fn facts_round_trip_and_damage_is_refused() {
        let member = Member { name: "harry".into(), address: "127.0.0.1:1".into() };
        let set = InSyncSet::new(Epoch(4), 2, "harry", vec![member]);
        for facts in
            [PartitionFacts::default(), PartitionFacts { fence: Epoch(9), in_sync: Some(set) }]
        {
            let bytes = facts.encode();
            assert_eq!(PartitionFacts::decode(&bytes), Ok(facts.clone()));
            for index in 0..bytes.len() {
                let mut damaged = bytes.clone();
                damaged[index] ^= 0x40;
                assert!(PartitionFacts::decode(&damaged).is_err(), "byte {index}");
            }
            assert!(PartitionFacts::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }
}
