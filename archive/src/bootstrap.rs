//! Bootstrap: a new follower or learner loads its partitions from the archive before it
//! streams the tail from its leader, so the leader sends only what the archive lacks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use strata_core::PartitionId;

use crate::error::ArchiveError;
use crate::layout::Layout;
use crate::restore::{read_partition_manifest, restore_partitions, PartitionRestore};
use crate::Store;

/// Where a bootstrap stands, for the admin API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BootstrapProgress {
    /// `idle`, `loading`, `installing`, `done` or `failed`.
    pub state: String,
    pub prefix: String,
    pub partitions: u32,
    pub partitions_loaded: u32,
    pub bytes_total: u64,
    pub bytes_loaded: u64,
    pub error: Option<String>,
}

/// Shared between the bootstrap and whoever reports it.
pub type SharedProgress = Arc<Mutex<BootstrapProgress>>;

fn update(progress: &SharedProgress, change: impl FnOnce(&mut BootstrapProgress)) {
    change(&mut progress.lock().unwrap_or_else(PoisonError::into_inner));
}

/// A partition loaded into a staging directory, ready to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedPartition {
    pub partition: PartitionId,
    pub staged: PathBuf,
}

/// Loads the newest snapshot and following segments of each of `partitions` into
/// `<data_dir>/bootstrap/p<N>` (cleared first). Partitions the archive holds nothing for are
/// left out. `on_bytes(loaded, total)` follows the download.
///
/// # Errors
///
/// Any [`ArchiveError`]; the staging directories are then removed.
pub async fn stage_partitions(
    store: &Store,
    layout: &Layout,
    data_dir: &Path,
    partitions: &[PartitionId],
    segment_bytes: u64,
    progress: &SharedProgress,
    on_bytes: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Vec<StagedPartition>, ArchiveError> {
    let staging = data_dir.join("bootstrap");
    let outcome =
        stage(store, layout, &staging, partitions, segment_bytes, progress, on_bytes).await;
    if outcome.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    outcome
}

async fn stage(
    store: &Store,
    layout: &Layout,
    staging: &Path,
    partitions: &[PartitionId],
    segment_bytes: u64,
    progress: &SharedProgress,
    on_bytes: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Vec<StagedPartition>, ArchiveError> {
    if staging.exists() {
        std::fs::remove_dir_all(staging).map_err(|error| ArchiveError::Local {
            path: staging.display().to_string(),
            reason: error.to_string(),
        })?;
    }
    let mut plans = Vec::new();
    for &partition in partitions {
        let plan = read_partition_manifest(store, layout, partition).await?.restore_plan();
        if plan.last_lsn > 0 {
            plans.push((partition, plan));
        }
    }
    let total: u64 = plans.iter().map(|(_, plan)| plan.bytes()).sum();
    update(progress, |progress| {
        progress.state = "loading".into();
        progress.prefix = layout.prefix().to_string();
        progress.partitions = u32::try_from(plans.len()).unwrap_or(u32::MAX);
        progress.bytes_total = total;
    });
    let mut count = |loaded: u64, total: u64| {
        update(progress, |progress| progress.bytes_loaded = loaded);
        on_bytes(loaded, total);
    };
    let mut written = |_: &PartitionRestore| update(progress, |p| p.partitions_loaded += 1);
    let reports =
        restore_partitions(store, layout, plans, staging, segment_bytes, &mut count, &mut written)
            .await?;
    Ok(reports
        .into_iter()
        .map(|report| {
            let partition = PartitionId(report.partition);
            StagedPartition { partition, staged: staging.join(format!("p{}", partition.0)) }
        })
        .collect())
}

/// Records the end of a bootstrap.
pub fn finish_progress(progress: &SharedProgress, error: Option<String>) {
    update(progress, |progress| {
        progress.state = if error.is_some() { "failed".into() } else { "done".into() };
        progress.error = error;
    });
}

/// Records that staged partitions are being installed.
pub fn installing(progress: &SharedProgress) {
    update(progress, |progress| progress.state = "installing".into());
}
