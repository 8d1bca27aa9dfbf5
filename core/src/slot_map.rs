//! The slot map a node shows cluster-aware clients when each shard has a client port of its
//! own (`shard_port_base`): every slot goes to the shard that owns its partition, so a client
//! that routes keys by `CLUSTER SLOTS` (or `NODES`, `SHARDS`) sends each command to the shard
//! that executes it, and no command crosses shards.
//!
//! The map follows from the node's settings alone: slot → partition is
//! [`slot_partition`] (contiguous ranges), partition → shard is
//! [`PartitionId::shard`] (round robin). A shard therefore serves several ranges when there
//! are more partitions than shards.

use crate::ids::{PartitionId, ShardId, Slot};
use crate::slot::{slot_partition, SLOT_COUNT};

/// Slots `first..=last`, served by `shard`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
    pub shard: ShardId,
}

/// Every slot in order, as the fewest ranges: adjacent slots of one shard form one range.
#[must_use]
pub fn slot_ranges(partition_count: u32, shard_count: u32) -> Vec<SlotRange> {
    assert!(shard_count > 0 && shard_count <= partition_count);
    let shard_of = |slot: u16| -> ShardId {
        let partition: PartitionId = slot_partition(Slot(slot), partition_count);
        partition.shard(shard_count)
    };
    let mut ranges: Vec<SlotRange> = Vec::with_capacity(partition_count as usize);
    for slot in 0..SLOT_COUNT {
        let shard = shard_of(slot);
        match ranges.last_mut() {
            Some(range) if range.shard == shard => range.last = slot,
            _ => ranges.push(SlotRange { first: slot, last: slot, shard }),
        }
    }
    ranges
}

/// A shard's 40-hex-digit node id, as Redis Cluster names its nodes: derived from the
/// address its port serves, so it stays the same across restarts at that address.
#[must_use]
pub fn node_id(address: &str) -> String {
    // Three FNV-1a hashes of the address with different seeds: 192 bits, 160 shown.
    let hash = |seed: u64| {
        let mut value = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
        for &byte in address.as_bytes() {
            value ^= u64::from(byte);
            value = value.wrapping_mul(0x0100_0000_01b3);
        }
        value
    };
    let text = format!("{:016x}{:016x}{:016x}", hash(1), hash(2), hash(3));
    text[..40].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::key_slot;

    #[test]
    fn the_ranges_cover_every_slot_once_each_at_the_shard_of_its_partition() {
        for (partitions, shards) in [(1, 1), (4, 1), (4, 2), (8, 3), (16, 4), (64, 2), (7, 7)] {
            let ranges = slot_ranges(partitions, shards);
            let mut next = 0u32;
            for range in &ranges {
                assert_eq!(u32::from(range.first), next, "{partitions}/{shards}: {ranges:?}");
                assert!(range.first <= range.last);
                for slot in range.first..=range.last {
                    let partition = slot_partition(Slot(slot), partitions);
                    assert_eq!(partition.shard(shards), range.shard);
                }
                next = u32::from(range.last) + 1;
            }
            assert_eq!(next, u32::from(SLOT_COUNT), "{partitions}/{shards}");
            for pair in ranges.windows(2) {
                assert_ne!(pair[0].shard, pair[1].shard, "adjacent ranges of a shard are one");
            }
        }
    }

    #[test]
    fn one_shard_serves_all_slots_and_more_partitions_give_a_shard_several_ranges() {
        assert_eq!(slot_ranges(4, 1), vec![SlotRange { first: 0, last: 16383, shard: ShardId(0) }]);
        let ranges = slot_ranges(4, 2);
        let shards: Vec<u32> = ranges.iter().map(|range| range.shard.0).collect();
        assert_eq!(shards, vec![0, 1, 0, 1]);
        assert_eq!((ranges[0].first, ranges[0].last), (0, 4095));
        assert_eq!((ranges[3].first, ranges[3].last), (12288, 16383));
        // A key goes where its slot's range says.
        let slot = key_slot(b"foo").0;
        let range = ranges.iter().find(|range| (range.first..=range.last).contains(&slot));
        assert_eq!(range.map(|range| range.shard), Some(ShardId(((12182 * 4) / 16384) % 2)));
    }

    #[test]
    fn node_ids_are_forty_hex_digits_stable_and_distinct_per_address() {
        let first = node_id("127.0.0.1:7400");
        assert_eq!(first.len(), 40);
        assert!(first.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()));
        assert_eq!(first, node_id("127.0.0.1:7400"));
        assert_ne!(first, node_id("127.0.0.1:7401"));
    }
}
