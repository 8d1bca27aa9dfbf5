//! Newtypes for identifiers and positions, so that an LSN is never mistaken for an epoch.

use std::fmt;

macro_rules! newtype {
    ($(#[$meta:meta])* $name:ident($inner:ty)) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, formatter)
            }
        }
    };
}

newtype!(
    /// Log sequence number of one record within one partition. The first record is LSN 1;
    /// LSN 0 means "nothing".
    Lsn(u64)
);
newtype!(
    /// Data epoch: bumped when leadership changes; frames of a lower epoch are refused.
    Epoch(u64)
);
newtype!(
    /// A partition: the unit of log, replication, snapshot and upload.
    PartitionId(u32)
);
newtype!(
    /// A shard: one pinned executor thread.
    ShardId(u32)
);
newtype!(
    /// A Redis Cluster hash slot, 0..16384.
    Slot(u16)
);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    #[must_use]
    pub fn next(self) -> Lsn {
        Lsn(self.0.checked_add(1).expect("LSN overflow"))
    }
}

impl PartitionId {
    /// The shard that owns this partition when a node runs `shard_count` shards.
    #[must_use]
    pub fn shard(self, shard_count: u32) -> ShardId {
        assert!(shard_count > 0);
        ShardId(self.0 % shard_count)
    }
}
