//! The archive as the control thread uses it: the prefix a replica adopts from its leader,
//! and bootstrap, which loads a new replica's empty partitions from the archive before it
//! follows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use strata_archive::{Layout, SharedProgress, Store};
use strata_core::{Lsn, PartitionId};
use strata_shard::{ControlMessage, NodeHandle};

/// The file in the data directory that keeps the archive prefix a replica adopted.
pub const PREFIX_FILE: &str = "strata.archive";

/// The archive as the control thread uses it.
#[derive(Clone)]
pub struct ArchiveAccess {
    pub store: Store,
    /// This node's archive layout; the uploader reads it at every pass.
    pub layout: Arc<Mutex<Layout>>,
    pub segment_bytes: u64,
    pub progress: SharedProgress,
    pub data_dir: PathBuf,
}

impl ArchiveAccess {
    #[must_use]
    pub fn prefix(&self) -> String {
        self.layout.lock().unwrap_or_else(PoisonError::into_inner).prefix().to_string()
    }

    /// Makes the leader's prefix this node's own, now and after a restart, so that the
    /// cluster keeps one archive whoever leads it.
    fn adopt(&self, prefix: &str) -> Result<Layout, String> {
        let layout = Layout::new(prefix).map_err(|error| error.to_string())?;
        if self.prefix() != prefix {
            write_prefix(&self.data_dir, prefix)
                .map_err(|error| format!("cannot keep the archive prefix: {error}"))?;
            tracing::info!(prefix, "archive prefix taken from the leader");
            *self.layout.lock().unwrap_or_else(PoisonError::into_inner) = layout.clone();
        }
        Ok(layout)
    }
}

fn write_prefix(data_dir: &Path, prefix: &str) -> std::io::Result<()> {
    let path = data_dir.join(PREFIX_FILE);
    let temporary = data_dir.join(format!("{PREFIX_FILE}.tmp"));
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        writeln!(file, "{prefix}")?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// The prefix kept by [`PREFIX_FILE`], if a replica adopted one.
#[must_use]
pub fn stored_prefix(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(PREFIX_FILE)).ok()?;
    let prefix = text.trim();
    (!prefix.is_empty()).then(|| prefix.to_string())
}

/// Adopts the leader's prefix and loads every empty partition from the archive, then installs
/// them in their shards. A failure is logged and reported in the progress; the replica then
/// catches up from the leader alone.
pub async fn bootstrap(archive: &ArchiveAccess, handle: &NodeHandle, leader_prefix: &str) {
    let outcome = load_and_install(archive, handle, leader_prefix).await;
    match &outcome {
        Ok(0) => {}
        Ok(partitions) => tracing::info!(partitions, "bootstrap from the archive done"),
        Err(error) => {
            let what = "bootstrap from the archive failed; catching up from the leader";
            tracing::warn!(%error, "{what}");
        }
    }
    strata_archive::finish_progress(&archive.progress, outcome.err());
}

async fn load_and_install(
    archive: &ArchiveAccess,
    handle: &NodeHandle,
    leader_prefix: &str,
) -> Result<usize, String> {
    let layout = archive.adopt(leader_prefix)?;
    // Only partitions that hold no record: a replica's log may run past its commit mark and
    // past the archive (a member of the in-sync set holds every acknowledged record), and
    // replacing it with the archive's older image would lose what it acknowledged.
    let empty: Vec<PartitionId> = handle
        .report()
        .await
        .into_iter()
        .filter(|report| report.durable_lsn == Lsn::ZERO && report.failed.is_none())
        .map(|report| report.partition)
        .collect();
    if empty.is_empty() {
        return Ok(0);
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "bootstrap {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    let mut on_bytes = |loaded: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(loaded);
    };
    let staged = strata_archive::stage_partitions(
        &archive.store,
        &layout,
        &archive.data_dir,
        &empty,
        archive.segment_bytes,
        &archive.progress,
        &mut on_bytes,
    )
    .await
    .map_err(|error| error.to_string());
    bar.finish_and_clear();
    let staged = staged?;
    strata_archive::installing(&archive.progress);
    for partition in &staged {
        let (reply, answer) = flume::bounded(1);
        let message = ControlMessage::InstallArchived {
            partition: partition.partition,
            staged: partition.staged.clone(),
            reply,
        };
        if !handle.send_to_owner(partition.partition, message) {
            return Err("a shard is gone".into());
        }
        let installed = answer.recv_async().await.map_err(|_| "a shard is gone".to_string())??;
        tracing::info!(
            partition = partition.partition.0,
            lsn = installed.0,
            "partition loaded from the archive"
        );
    }
    let _ = std::fs::remove_dir_all(archive.data_dir.join("bootstrap"));
    Ok(staged.len())
}
