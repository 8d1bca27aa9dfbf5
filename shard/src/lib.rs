//! Strata's shard runtime: thread-per-core executors that own partitions, serve RESP clients,
//! route commands between shards, and group-commit each partition's WAL.
//!
//! Each shard owns its partitions outright: no locks on the data path. A command for a key
//! owned elsewhere hops to the owning shard over a bounded ring and its answer hops back
//! (`hop`).

mod buffers;
mod cluster;
mod config;
mod connection;
pub mod events;
#[doc(hidden)]
pub mod hop;
mod link;
pub mod memory;
pub mod metrics;
mod node;
mod options;
mod peer_stream;
mod replication;
mod reply;
mod shard;
mod signal;
mod slots;
mod tls;
mod walk;

pub use cluster::{
    monotonic_ms, ClusterShared, ControlMessage, LeaderSettings, NodeEvent, NodeHandle,
    ReplicaProgress, ServingMode,
};
pub use node::{start, NodeError, RunningNode};
pub use options::{Durability, NodeOptions};
pub use tls::PeerTls;
