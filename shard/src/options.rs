//! What a node is told to run, already checked by the binary's config loader.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use strata_core::resp::RespLimits;

/// When a write is answered, relative to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After fdatasync (Infinity's FlushAtOnce).
    SyncEachBatch,
    /// After write(2) (OnlyWrite).
    WriteOnly,
    /// After write(2); fdatasync once a second (FlushPerSecond).
    SyncEverySecond,
}

impl Durability {
    /// Infinity's name for the mode.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Durability::SyncEachBatch => "FlushAtOnce",
            Durability::WriteOnly => "OnlyWrite",
            Durability::SyncEverySecond => "FlushPerSecond",
        }
    }
}

#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub shard_count: u32,
    /// The cores shard `i` is pinned to in turn (`[general] cpu_affinity`); None pins nothing.
    pub shard_cores: Option<Vec<usize>>,
    pub partition_count: u32,
    pub client_address: SocketAddr,
    /// Shard `i` also serves clients on port `shard_port_base + i` (`[network]
    /// shard_port_base`), and CLUSTER shows the slot map over those ports; None: neither.
    pub shard_port_base: Option<u16>,
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub segment_bytes: u64,
    /// FlushAtOnce only: append with O_DIRECT; with O_DSYNC too (durable when the write
    /// completes, no separate fdatasync) unless `shared_sync` applies.
    pub direct_io: bool,
    /// With `direct_io`, on ext4 and XFS: the partitions of every shard share one fdatasync
    /// per round, their appends being O_DIRECT alone (see `strata_wal::DeviceSync`).
    pub shared_sync: bool,
    pub snapshot_bytes: u64,
    /// Bytes a leader queues for one replica connection at most (beyond the snapshots and
    /// catch-up frames in flight); a replica further behind is cut off and catches up when it
    /// reconnects.
    pub replica_window: usize,
    pub snapshot_interval: Duration,
    pub connections_max: u32,
    pub force_epoll: bool,
    pub resp_limits: RespLimits,
    /// Path of the config file, for INFO.
    pub config_file: String,
    /// Present when segments and snapshots go to the archive: each partition's committed
    /// LSN is published here for the uploader, and sealed segments wait for its floor.
    pub archive: Option<std::sync::Arc<strata_wal::ArchiveMarks>>,
    /// `[security] client_tls`: the client port is served over TLS with this configuration.
    pub client_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// `[security] requirepass`: the password a client connection gives (`AUTH`) before any
    /// other command; `None` asks for none.
    pub requirepass: Option<String>,
    /// `[security] cluster_secret`: proven on every peer connection this node opens or
    /// accepts; `None` proves nothing (`allow_insecure_peers`).
    pub cluster_secret: Option<strata_core::handshake::ClusterSecret>,
    /// `[security] peer_tls`: peer connections are TLS, both ways, with these configurations.
    pub peer_tls: Option<crate::tls::PeerTls>,
}
