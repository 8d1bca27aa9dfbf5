//! Reading the archive back: manifests, checked objects, and a whole data directory.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use strata_core::{Lsn, PartitionId};
use strata_wal::PartitionWriter;

use crate::error::ArchiveError;
use crate::layout::Layout;
use crate::manifest::{self, ClusterManifest, PartitionManifest, RestorePlan};
use crate::Store;

/// Reads an object whole.
///
/// # Errors
///
/// [`ArchiveError::Missing`] when it is not there, [`ArchiveError::Store`] when the request
/// fails.
pub(crate) async fn get(
    store: &Store,
    path: &object_store::path::Path,
) -> Result<Vec<u8>, ArchiveError> {
    let result = store.get(path).await.map_err(|error| ArchiveError::store("get", path, error))?;
    let bytes = result.bytes().await.map_err(|error| ArchiveError::store("get", path, error))?;
    Ok(bytes.to_vec())
}

/// Reads an object and checks it against its manifest entry's size and CRC32C.
///
/// # Errors
///
/// [`ArchiveError::Missing`], [`ArchiveError::Store`], or [`ArchiveError::Corrupt`] naming the
/// object when its bytes differ from what the manifest recorded.
pub async fn fetch_checked(
    store: &Store,
    path: &object_store::path::Path,
    bytes: u64,
    crc32c: u32,
) -> Result<Vec<u8>, ArchiveError> {
    let data = get(store, path).await?;
    let corrupt = |reason: String| ArchiveError::Corrupt { object: path.to_string(), reason };
    if data.len() as u64 != bytes {
        return Err(corrupt(format!("{} bytes, the manifest records {bytes}", data.len())));
    }
    let computed = crc32c::crc32c(&data);
    if computed != crc32c {
        return Err(corrupt(format!(
            "checksum mismatch: the manifest records {crc32c:#010x}, \
             the object has {computed:#010x}"
        )));
    }
    Ok(data)
}

/// # Errors
///
/// [`ArchiveError::Missing`] when nothing was archived under the layout's prefix, or the
/// manifest's own errors.
pub async fn read_cluster_manifest(
    store: &Store,
    layout: &Layout,
) -> Result<ClusterManifest, ArchiveError> {
    let path = layout.cluster_manifest();
    let bytes = get(store, &path).await?;
    manifest::decode(&bytes, path.as_ref())
}

/// The partition's manifest, or an empty one when none was written yet.
///
/// # Errors
///
/// [`ArchiveError::Store`] or [`ArchiveError::Corrupt`].
pub async fn read_partition_manifest(
    store: &Store,
    layout: &Layout,
    partition: PartitionId,
) -> Result<PartitionManifest, ArchiveError> {
    let path = layout.partition_manifest(partition);
    match get(store, &path).await {
        Ok(bytes) => {
            let manifest = manifest::decode_partition(&bytes, path.as_ref())?;
            if manifest.partition != partition.0 {
                return Err(ArchiveError::Corrupt {
                    object: path.to_string(),
                    reason: format!("manifest of partition {}", manifest.partition),
                });
            }
            Ok(manifest)
        }
        Err(ArchiveError::Missing { .. }) => Ok(PartitionManifest::empty(partition.0)),
        Err(error) => Err(error),
    }
}

/// What restore wrote for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRestore {
    pub partition: u32,
    /// LSN of the snapshot loaded (0 without one).
    pub snapshot_lsn: u64,
    pub snapshot_entries: u64,
    pub segments: usize,
    pub records: u64,
    /// The last LSN restored.
    pub last_lsn: u64,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// What restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    pub cluster: ClusterManifest,
    pub partitions: Vec<PartitionRestore>,
    pub elapsed: Duration,
}

impl RestoreReport {
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|partition| partition.bytes).sum()
    }
}

/// Builds the partition directories `<data_dir>/p<N>` from the archive alone: per partition
/// the newest snapshot and every segment after it up to the last archived LSN. Every object is
/// checked (size and CRC32C against the manifest, then the segment and snapshot checksums)
/// before anything of it is written; a damaged or missing object stops the restore, naming it.
/// `progress(done, total)` is called with downloaded bytes.
///
/// # Errors
///
/// Any [`ArchiveError`]; the data directory may then hold part of the data and must be
/// cleared before trying again.
pub async fn restore(
    store: &Store,
    layout: &Layout,
    data_dir: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<RestoreReport, ArchiveError> {
    let started = Instant::now();
    let cluster = read_cluster_manifest(store, layout).await?;
    let mut plans = Vec::new();
    for partition in (0..cluster.partitions).map(PartitionId) {
        let manifest = read_partition_manifest(store, layout, partition).await?;
        plans.push((partition, manifest.restore_plan()));
    }
    let partitions = restore_partitions(
        store,
        layout,
        plans,
        data_dir,
        cluster.segment_bytes,
        progress,
        &mut |_| {},
    )
    .await?;
    Ok(RestoreReport { cluster, partitions, elapsed: started.elapsed() })
}

/// Writes each `(partition, plan)` into `<root>/p<N>`, one after another. `on_bytes(loaded,
/// total)` follows the download; `on_partition` is told of each partition written.
pub(crate) async fn restore_partitions(
    store: &Store,
    layout: &Layout,
    plans: Vec<(PartitionId, RestorePlan)>,
    root: &Path,
    segment_bytes: u64,
    on_bytes: &mut (dyn FnMut(u64, u64) + Send),
    on_partition: &mut (dyn FnMut(&PartitionRestore) + Send),
) -> Result<Vec<PartitionRestore>, ArchiveError> {
    let total: u64 = plans.iter().map(|(_, plan)| plan.bytes()).sum();
    let mut loaded = 0;
    on_bytes(loaded, total);
    let mut partitions = Vec::new();
    for (partition, plan) in plans {
        let directory = root.join(format!("p{}", partition.0));
        let mut count = |bytes: u64| {
            loaded += bytes;
            on_bytes(loaded, total);
        };
        let report = restore_partition(
            store,
            layout,
            partition,
            &plan,
            &directory,
            segment_bytes,
            &mut count,
        )
        .await?;
        on_partition(&report);
        partitions.push(report);
    }
    Ok(partitions)
}

/// Writes one partition's `plan` into `directory` (which must hold no log yet), calling
/// `on_bytes` with the bytes of each object once it is checked and written.
///
/// # Errors
///
/// As [`restore`].
pub async fn restore_partition(
    store: &Store,
    layout: &Layout,
    partition: PartitionId,
    plan: &RestorePlan,
    directory: &Path,
    segment_bytes: u64,
    on_bytes: &mut (dyn FnMut(u64) + Send),
) -> Result<PartitionRestore, ArchiveError> {
    let mut writer = PartitionWriter::new(directory, partition, segment_bytes)?;
    let mut report = PartitionRestore {
        partition: partition.0,
        snapshot_lsn: 0,
        snapshot_entries: 0,
        segments: plan.segments.len(),
        records: 0,
        last_lsn: 0,
        bytes: 0,
    };
    if let Some(snapshot) = &plan.snapshot {
        let path = layout.object(partition, &snapshot.object);
        let image = fetch_checked(store, &path, snapshot.bytes, snapshot.crc32c).await?;
        let loaded = writer
            .write_snapshot(path.as_ref(), &image)
            .map_err(|error| as_corrupt(error, &path))?;
        report.snapshot_lsn = loaded.lsn.0;
        report.snapshot_entries = loaded.entry_count;
        report.bytes += snapshot.bytes;
        on_bytes(snapshot.bytes);
    }
    // Downloads run ahead of the writes (which sync each segment) on the blocking pool.
    let downloads: Vec<_> = plan
        .segments
        .iter()
        .map(|segment| {
            let store = std::sync::Arc::clone(store);
            let path = layout.object(partition, &segment.object);
            let (size, crc32c) = (segment.bytes, segment.crc32c);
            async move {
                let bytes = fetch_checked(&store, &path, size, crc32c).await;
                (path, size, bytes)
            }
        })
        .collect();
    let mut fetched = futures::stream::iter(downloads).buffered(OBJECTS_AHEAD);
    while let Some((path, size, bytes)) = fetched.next().await {
        let bytes = bytes?;
        let (returned, appended) = tokio::task::spawn_blocking(move || {
            let appended = writer
                .append_segment(path.as_ref(), &bytes)
                .map_err(|error| as_corrupt(error, &path));
            (writer, appended)
        })
        .await
        .map_err(|error| ArchiveError::Local {
            path: directory.display().to_string(),
            reason: error.to_string(),
        })?;
        writer = returned;
        report.records += appended?;
        report.bytes += size;
        on_bytes(size);
    }
    let last = writer.finish()?;
    if last != Lsn(plan.last_lsn) {
        return Err(ArchiveError::Incomplete {
            reason: format!(
                "partition {partition}: the manifest reaches LSN {}, its objects LSN {last}",
                plan.last_lsn
            ),
        });
    }
    report.last_lsn = last.0;
    Ok(report)
}

/// Segment downloads in flight ahead of the one being written.
const OBJECTS_AHEAD: usize = 3;

/// A WAL error about an archived object is that object's corruption.
fn as_corrupt(error: strata_wal::WalError, path: &object_store::path::Path) -> ArchiveError {
    match error {
        strata_wal::WalError::Corrupt { reason, offset, .. } => ArchiveError::Corrupt {
            object: path.to_string(),
            reason: format!("at offset {offset}: {reason}"),
        },
        other => ArchiveError::Wal(other),
    }
}
