//! Strata's archive: the sealed WAL segments and snapshots of every partition in shared storage
//! (S3, `MinIO`, Ceph RGW, or a local directory, all through the `object_store` interface).
//! This crate holds the uploader thread that copies them there, the manifests that list them
//! with their checksums, and restore, which builds a node's data directory from the archive
//! alone.
//!
//! The object layout and the manifest format are in `docs/archive-format.md`.

#![warn(clippy::pedantic)]

mod bootstrap;
mod error;
mod layout;
mod manifest;
mod restore;
mod store;
mod uploader;

#[cfg(test)]
mod tests;

pub use bootstrap::{
    finish_progress, installing, stage_partitions, BootstrapProgress, SharedProgress,
    StagedPartition,
};
pub use error::ArchiveError;
pub use layout::Layout;
pub use manifest::{
    ClusterManifest, PartitionManifest, RestorePlan, SegmentEntry, SnapshotEntry, MANIFEST_FORMAT,
};
pub use restore::{
    fetch_checked, read_cluster_manifest, read_partition_manifest, restore, restore_partition,
    PartitionRestore, RestoreReport,
};
pub use store::{connect, StoreLocation};
pub use uploader::{start_uploader, UploaderConfig, UploaderHandle, UploaderMetrics};

/// A connection to shared storage (an `object_store` backend).
pub type Store = std::sync::Arc<dyn object_store::ObjectStore>;
