//! The uploader thread: copies every partition's sealed segments and new snapshots to the
//! archive, keeps the manifests, and publishes the archive floor that lets the shards delete
//! local segments.
//!
//! It runs on its own thread with a single-threaded tokio runtime and never talks to a shard
//! directly: it reads the partition directories (a sealed segment is never written again; a
//! newer segment's existence proves it complete and durable) and the committed marks the
//! shards publish, and it publishes floors. An unreachable store only delays it: each failing
//! partition backs off (1 s doubling to 30 s) and tries again, while writes go on and local
//! segments wait on disk.
//!
//! Fencing: every manifest records the epoch of the leader that wrote it. Before it writes a
//! manifest the uploader reads the stored one; if a leader of a newer epoch wrote it, this node
//! has been replaced without noticing yet, and it stops writing that manifest (and uploading
//! its partition) until the process restarts, so it cannot put back an older view. The check
//! is read-then-write, not a compare-and-set: see [`manifest::check_writer`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use strata_core::{Epoch, Lsn, PartitionId};
use strata_wal::{ArchiveMarks, SegmentInfo};

use crate::error::ArchiveError;
use crate::layout::Layout;
use crate::manifest::{
    self, ClusterManifest, PartitionManifest, SegmentEntry, SnapshotEntry, MANIFEST_FORMAT,
};
use crate::restore::{read_cluster_manifest, read_partition_manifest};
use crate::Store;

/// Objects larger than this go up in parts.
const MULTIPART_THRESHOLD_BYTES: usize = 16 * 1024 * 1024;
/// Part size of multipart uploads (S3 needs at least 5 MiB for every part but the last).
const PART_BYTES: usize = 8 * 1024 * 1024;
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a persisting failure or an oversized backlog is logged again.
const WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// Scheduling priority of the uploader thread (0 is the shards' own).
const UPLOADER_NICE: i32 = 10;

const _: () = assert!(PART_BYTES >= 5 * 1024 * 1024);
const _: () = assert!(MULTIPART_THRESHOLD_BYTES >= PART_BYTES);

/// What the uploader is told to do.
#[derive(Clone)]
pub struct UploaderConfig {
    pub store: Store,
    /// Where this node's objects go; read at every pass (a replica adopts its leader's).
    pub layout: Arc<Mutex<Layout>>,
    pub data_dir: PathBuf,
    pub partition_count: u32,
    pub segment_bytes: u64,
    pub marks: Arc<ArchiveMarks>,
    /// Whether this node uploads now (it leads, or runs standalone). Asked at every pass.
    pub uploading: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The node's current leader epoch, asked before every manifest write and recorded in what
    /// it writes: a manifest a newer epoch wrote is not overwritten.
    pub epoch: Arc<dyn Fn() -> Epoch + Send + Sync>,
    /// Pause between passes over the partitions.
    pub scan_interval: Duration,
    /// A backlog above this many bytes is logged as a warning.
    pub backlog_warning_bytes: u64,
    /// Snapshots kept per partition; older ones, and the segments they cover, are deleted.
    pub snapshots_kept: usize,
}

/// Counters of the uploader, read by the admin API and logs.
#[derive(Debug, Default)]
pub struct UploaderMetrics {
    pub uploaded_objects: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    pub failures: AtomicU64,
    /// Sealed segments and snapshots waiting to go up, and their bytes.
    pub backlog_objects: AtomicU64,
    pub backlog_bytes: AtomicU64,
    /// Unix milliseconds of the last pass that uploaded everything it could (0: none yet).
    pub last_clean_pass_ms: AtomicU64,
    pub passes: AtomicU64,
    /// The newest writer epoch of a manifest this uploader refused to overwrite (0: none).
    pub fenced_epoch: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The manifests this uploader stopped writing, newer leaders having written them.
    fenced_manifests: Mutex<Vec<String>>,
}

impl UploaderMetrics {
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// The manifests (object paths) this uploader stopped writing until restarted.
    #[must_use]
    pub fn fenced_manifests(&self) -> Vec<String> {
        self.fenced_manifests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn record_fence(&self, object: &str, stored_epoch: u64) {
        self.fenced_epoch.fetch_max(stored_epoch, Ordering::Relaxed);
        self.fenced_manifests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(object.to_string());
    }

    /// The counters as JSON, for the admin API.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "uploaded_objects": load(&self.uploaded_objects),
            "uploaded_bytes": load(&self.uploaded_bytes),
            "failures": load(&self.failures),
            "backlog_objects": load(&self.backlog_objects),
            "backlog_bytes": load(&self.backlog_bytes),
            "passes": load(&self.passes),
            "last_clean_pass_ms": load(&self.last_clean_pass_ms),
            "last_error": self.last_error(),
            "fenced_epoch": load(&self.fenced_epoch),
            "fenced_manifests": self.fenced_manifests(),
        })
    }
}

/// The running uploader.
pub struct UploaderHandle {
    pub metrics: Arc<UploaderMetrics>,
    pub thread: JoinHandle<()>,
}

/// Starts the uploader thread.
///
/// # Errors
///
/// When the thread or its runtime cannot start.
pub fn start_uploader(config: UploaderConfig) -> std::io::Result<UploaderHandle> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let metrics = Arc::new(UploaderMetrics::default());
    let shared = Arc::clone(&metrics);
    let thread = std::thread::Builder::new().name("uploader".into()).spawn(move || {
        lower_priority();
        runtime.block_on(Uploader::new(config, shared).run());
    })?;
    Ok(UploaderHandle { metrics, thread })
}

/// Uploads yield to the shards: the uploader thread runs at nice 10, so that on a busy machine
/// it takes the CPU the shards leave (its backlog waits on disk meanwhile).
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers; setpriority on this thread's id only
    // changes its own scheduling priority.
    let outcome = unsafe {
        let thread = libc::syscall(libc::SYS_gettid);
        libc::setpriority(libc::PRIO_PROCESS, u32::try_from(thread).unwrap_or(0), UPLOADER_NICE)
    };
    if outcome != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot lower the uploader thread's priority");
    }
}

/// Per partition: the manifest as the store has it, and when to try again after a failure.
struct PartitionState {
    manifest: Option<PartitionManifest>,
    retry_at: Instant,
    backoff: Duration,
    failing_since_warning: Option<Instant>,
    /// A newer leader wrote the manifest: nothing more is written until restart.
    fenced: bool,
}

/// What one pass over a partition left waiting.
#[derive(Clone, Copy, Debug, Default)]
struct Backlog {
    objects: u64,
    bytes: u64,
}

pub(crate) struct Uploader {
    config: UploaderConfig,
    /// The layout of the current pass.
    layout: Layout,
    pub(crate) metrics: Arc<UploaderMetrics>,
    partitions: Vec<PartitionState>,
    /// The epoch the cluster manifest was last written under, in this layout.
    cluster_written: Option<Epoch>,
    /// A newer leader wrote the cluster manifest: no partition is uploaded until restart.
    cluster_fenced: bool,
    last_backlog_warning: Option<Instant>,
}

impl Uploader {
    pub(crate) fn new(config: UploaderConfig, metrics: Arc<UploaderMetrics>) -> Uploader {
        let now = Instant::now();
        let partitions = (0..config.partition_count)
            .map(|_| PartitionState {
                manifest: None,
                retry_at: now,
                backoff: BACKOFF_FIRST,
                failing_since_warning: None,
                fenced: false,
            })
            .collect();
        let layout =
            config.layout.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Uploader {
            config,
            layout,
            metrics,
            partitions,
            cluster_written: None,
            cluster_fenced: false,
            last_backlog_warning: None,
        }
    }

    async fn run(mut self) {
        tracing::info!(prefix = self.layout.prefix(), "uploader started");
        loop {
            self.pass().await;
            tokio::time::sleep(self.config.scan_interval).await;
        }
    }

    /// One pass over every partition.
    pub(crate) async fn pass(&mut self) {
        let layout =
            self.config.layout.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if layout != self.layout {
            tracing::info!(prefix = layout.prefix(), "uploads go to a new prefix");
            self.layout = layout;
            self.cluster_written = None;
            for state in &mut self.partitions {
                state.manifest = None;
            }
        }
        let uploading = (self.config.uploading)();
        let mut backlog = Backlog::default();
        let mut clean = true;
        for index in 0..self.config.partition_count {
            let partition = PartitionId(index);
            if !uploading {
                // Not this node's job: its segments may go once a snapshot covers them.
                self.config.marks.set_floor(partition, Lsn(u64::MAX));
                self.partitions[index as usize].manifest = None;
                continue;
            }
            let waiting = self.partition_pass(partition).await;
            clean &= waiting.is_some();
            let waiting = waiting.unwrap_or_else(|| self.estimate_backlog(partition));
            backlog.objects += waiting.objects;
            backlog.bytes += waiting.bytes;
        }
        self.metrics.passes.fetch_add(1, Ordering::Relaxed);
        self.metrics.backlog_objects.store(backlog.objects, Ordering::Relaxed);
        self.metrics.backlog_bytes.store(backlog.bytes, Ordering::Relaxed);
        if uploading && clean {
            self.metrics.last_clean_pass_ms.store(now_ms(), Ordering::Relaxed);
            self.metrics.set_last_error(None);
        }
        self.warn_on_backlog(backlog);
    }

    /// One partition's pass; `None` when it failed, waits for its backoff, or is fenced.
    async fn partition_pass(&mut self, partition: PartitionId) -> Option<Backlog> {
        let state = &self.partitions[partition.0 as usize];
        if self.cluster_fenced || state.fenced || Instant::now() < state.retry_at {
            return None;
        }
        let outcome = self.upload_partition(partition).await;
        let state = &mut self.partitions[partition.0 as usize];
        match outcome {
            Ok(backlog) => {
                if state.failing_since_warning.take().is_some() {
                    tracing::info!(partition = partition.0, "uploads succeed again");
                }
                state.backoff = BACKOFF_FIRST;
                Some(backlog)
            }
            Err(error) => {
                self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                self.metrics.set_last_error(Some(error.to_string()));
                match &error {
                    ArchiveError::Fenced { object, partition: fenced, stored_epoch, own_epoch } => {
                        self.fence(object, *fenced, *stored_epoch, *own_epoch);
                    }
                    _ => self.back_off(partition, &error),
                }
                None
            }
        }
    }

    /// A failed partition tries again after its backoff, which doubles up to `BACKOFF_MAX`.
    fn back_off(&mut self, partition: PartitionId, error: &ArchiveError) {
        let state = &mut self.partitions[partition.0 as usize];
        let warn = state.failing_since_warning.is_none_or(|at| at.elapsed() >= WARNING_INTERVAL);
        if warn {
            state.failing_since_warning = Some(Instant::now());
            let retry_in_ms = u64::try_from(state.backoff.as_millis()).unwrap_or(u64::MAX);
            let what = "upload failed; writes go on and segments stay on local disk \
                        until it succeeds";
            tracing::warn!(partition = partition.0, %error, retry_in_ms, "{what}");
        }
        if matches!(error, ArchiveError::Corrupt { .. }) {
            // A damaged manifest in the store: start again from what is local.
            state.manifest = None;
        }
        state.retry_at = Instant::now() + state.backoff;
        state.backoff = (state.backoff * 2).min(BACKOFF_MAX);
    }

    /// A leader of a newer epoch wrote the manifest: this node was replaced and has not noticed
    /// yet. Retrying cannot help and writing would put back an older view, so the partition
    /// (every partition, for the cluster manifest) stays stopped until the process restarts.
    /// Its local segments wait on disk meanwhile, as for any failing upload.
    fn fence(&mut self, object: &str, partition: Option<u32>, stored_epoch: u64, own_epoch: u64) {
        self.metrics.record_fence(object, stored_epoch);
        let stopped = if let Some(index) = partition {
            self.partitions[index as usize].fenced = true;
            format!("partition {index}")
        } else {
            self.cluster_fenced = true;
            "every partition".to_string()
        };
        tracing::error!(
            manifest = object,
            stored_epoch,
            own_epoch,
            "{object} was written at epoch {stored_epoch}, newer than this node's epoch \
             {own_epoch}: a newer leader archives now, so {stopped} is no longer uploaded until \
             this node restarts"
        );
    }

    async fn upload_partition(&mut self, partition: PartitionId) -> Result<Backlog, ArchiveError> {
        self.write_cluster_manifest().await?;
        let mut manifest =
            if let Some(manifest) = self.partitions[partition.0 as usize].manifest.take() {
                manifest
            } else {
                let manifest =
                    read_partition_manifest(&self.config.store, &self.layout, partition).await?;
                // Before the sweep: objects a newer leader has put but not listed yet are not
                // this node's to delete.
                self.check_partition_writer(partition, &manifest)?;
                self.remove_orphans(partition, &manifest).await?;
                manifest
            };
        let outcome = self.upload_new_objects(partition, &mut manifest).await;
        self.partitions[partition.0 as usize].manifest = Some(manifest);
        outcome
    }

    async fn upload_new_objects(
        &mut self,
        partition: PartitionId,
        manifest: &mut PartitionManifest,
    ) -> Result<Backlog, ArchiveError> {
        let directory = self.partition_directory(partition);
        let sealed = sealed_segments(&directory)?;
        let committed = self.config.marks.committed(partition);
        let mut backlog = Backlog::default();
        for (segment, last_lsn) in &sealed {
            if manifest.covers_segment(segment.first_lsn, *last_lsn) {
                continue;
            }
            if *last_lsn > committed {
                backlog.objects += 1;
                backlog.bytes += segment.file_bytes;
                continue;
            }
            let entry = self.upload_segment(partition, segment, *last_lsn).await?;
            manifest.add_segment(entry);
            self.put_manifest(partition, manifest).await?;
        }
        if let Some((lsn, path)) = newest_local_snapshot(&directory)? {
            let archived =
                manifest.newest_snapshot().map_or(Lsn::ZERO, |snapshot| Lsn(snapshot.lsn));
            if lsn > archived && lsn <= committed {
                if let Some(entry) = self.upload_snapshot(partition, lsn, &path).await? {
                    manifest.add_snapshot(entry);
                    self.put_manifest(partition, manifest).await?;
                    self.prune(partition, manifest).await?;
                }
            }
        }
        self.config.marks.set_floor(partition, archive_floor(manifest, &sealed));
        Ok(backlog)
    }

    /// Drops the snapshots beyond the number kept and the segments they cover: first from the
    /// manifest, then from the store.
    async fn prune(
        &self,
        partition: PartitionId,
        manifest: &mut PartitionManifest,
    ) -> Result<(), ArchiveError> {
        let dropped = manifest.prune(self.config.snapshots_kept);
        if dropped.is_empty() {
            return Ok(());
        }
        self.put_manifest(partition, manifest).await?;
        for name in &dropped {
            let path = self.layout.object(partition, name);
            match self.config.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(ArchiveError::store("delete", &path, error)),
            }
        }
        tracing::debug!(partition = partition.0, objects = dropped.len(), "old objects deleted");
        Ok(())
    }

    /// Deletes the partition's segments and snapshots that its manifest does not list: left
    /// by a crash between an upload and the manifest that records it, or during pruning
    /// between the manifest and the deletions. Only the manifest's objects are ever read, and
    /// this uploader is the prefix's one writer, so nothing else can be using them. Runs when
    /// the uploader (re)reads the manifest: at start, after a new prefix, after damage. A
    /// manifest that lists nothing (or is missing) is no evidence: nothing is deleted then.
    async fn remove_orphans(
        &self,
        partition: PartitionId,
        manifest: &PartitionManifest,
    ) -> Result<(), ArchiveError> {
        if manifest.segments.is_empty() && manifest.snapshots.is_empty() {
            return Ok(());
        }
        let folder = self.layout.partition_folder(partition);
        let listed: Vec<object_store::ObjectMeta> = self
            .config
            .store
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(|error| ArchiveError::store("list", &folder, error))?;
        let folder_prefix = format!("{folder}/");
        let mut removed = 0;
        for object in listed {
            let Some(name) = object.location.as_ref().strip_prefix(&folder_prefix) else {
                continue;
            };
            let data = name.starts_with("seg/") || name.starts_with("snap/");
            if !data || manifest.lists(name) {
                continue;
            }
            match self.config.store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                Err(error) => return Err(ArchiveError::store("delete", &object.location, error)),
            }
        }
        if removed > 0 {
            let what = "objects no manifest lists were deleted";
            tracing::info!(partition = partition.0, objects = removed, "{what}");
        }
        Ok(())
    }

    async fn upload_segment(
        &self,
        partition: PartitionId,
        segment: &SegmentInfo,
        last_lsn: Lsn,
    ) -> Result<SegmentEntry, ArchiveError> {
        let file = &segment.path;
        let mut bytes = std::fs::read(file).map_err(|error| local_error(file, &error))?;
        let extent =
            strata_wal::segment_extent(&bytes, partition).map_err(|(offset, reason)| {
                ArchiveError::Corrupt {
                    object: format!("{} at offset {offset}", file.display()),
                    reason,
                }
            })?;
        if extent.last_lsn != last_lsn || extent.first_lsn != segment.first_lsn {
            return Err(ArchiveError::Corrupt {
                object: file.display().to_string(),
                reason: format!(
                    "sealed segment holds LSNs {}..={}, \
                     the next segment says it ends at {last_lsn}",
                    extent.first_lsn, extent.last_lsn
                ),
            });
        }
        bytes.truncate(usize::try_from(extent.end_offset).expect("fits memory"));
        let object_bytes = bytes.len() as u64;
        let name = Layout::segment_name(extent.last_epoch, extent.first_lsn);
        let crc32c = crc32c::crc32c(&bytes);
        self.put_object(&self.layout.object(partition, &name), bytes).await?;
        tracing::debug!(partition = partition.0, object = name, object_bytes, "segment archived");
        Ok(SegmentEntry {
            object: name,
            epoch: extent.last_epoch.0,
            first_lsn: extent.first_lsn.0,
            last_lsn: extent.last_lsn.0,
            bytes: object_bytes,
            crc32c,
            writer_epoch: (self.config.epoch)().0,
        })
    }

    /// Uploads the snapshot at `path`; `None` when it was replaced by a newer one meanwhile.
    async fn upload_snapshot(
        &self,
        partition: PartitionId,
        lsn: Lsn,
        path: &Path,
    ) -> Result<Option<SnapshotEntry>, ArchiveError> {
        let image = match std::fs::read(path) {
            Ok(image) => image,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(local_error(path, &error)),
        };
        let loaded =
            strata_wal::inspect_snapshot(&image, partition).map_err(|(offset, reason)| {
                ArchiveError::Corrupt {
                    object: format!("{} at offset {offset}", path.display()),
                    reason,
                }
            })?;
        assert_eq!(loaded.lsn, lsn, "snapshot named for another LSN passed inspection");
        let name = Layout::snapshot_name(lsn);
        let crc32c = crc32c::crc32c(&image);
        let image_bytes = image.len() as u64;
        self.put_object(&self.layout.object(partition, &name), image).await?;
        tracing::info!(partition = partition.0, lsn = lsn.0, image_bytes, "snapshot archived");
        Ok(Some(SnapshotEntry {
            object: name,
            lsn: lsn.0,
            epoch: loaded.epoch.0,
            entries: loaded.entry_count,
            bytes: image_bytes,
            crc32c,
            writer_epoch: (self.config.epoch)().0,
        }))
    }

    async fn put_object(
        &self,
        path: &object_store::path::Path,
        data: Vec<u8>,
    ) -> Result<(), ArchiveError> {
        let store = &self.config.store;
        let length = data.len() as u64;
        // Handed over without a copy: parts are slices of the one buffer.
        let bytes = bytes::Bytes::from(data);
        if bytes.len() <= MULTIPART_THRESHOLD_BYTES {
            let payload = PutPayload::from(bytes);
            store
                .put(path, payload)
                .await
                .map_err(|error| ArchiveError::store("put", path, error))?;
        } else {
            let upload = store
                .put_multipart(path)
                .await
                .map_err(|error| ArchiveError::store("start multipart", path, error))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            writer.put(bytes);
            if let Err(error) = writer.finish().await {
                return Err(ArchiveError::store("multipart upload", path, error));
            }
        }
        self.metrics.uploaded_objects.fetch_add(1, Ordering::Relaxed);
        self.metrics.uploaded_bytes.fetch_add(length, Ordering::Relaxed);
        Ok(())
    }

    /// Stores the partition's manifest under this node's epoch, unless the stored one was
    /// written by a newer epoch. Read-then-write: a newer leader's manifest stored between the
    /// read and the put is overwritten once (see [`manifest::check_writer`]).
    async fn put_manifest(
        &self,
        partition: PartitionId,
        manifest: &mut PartitionManifest,
    ) -> Result<(), ArchiveError> {
        let stored = read_partition_manifest(&self.config.store, &self.layout, partition).await?;
        manifest.writer_epoch = self.check_partition_writer(partition, &stored)?.0;
        let path = self.layout.partition_manifest(partition);
        let payload = PutPayload::from(manifest::encode(manifest));
        self.config
            .store
            .put(&path, payload)
            .await
            .map_err(|error| ArchiveError::store("put", &path, error))?;
        Ok(())
    }

    /// This node's epoch, when it may write over `stored`.
    fn check_partition_writer(
        &self,
        partition: PartitionId,
        stored: &PartitionManifest,
    ) -> Result<Epoch, ArchiveError> {
        let epoch = (self.config.epoch)();
        let object = self.layout.partition_manifest(partition);
        manifest::check_writer(object.as_ref(), Some(partition.0), stored.writer_epoch, epoch)?;
        Ok(epoch)
    }

    /// Writes the cluster manifest once per layout and epoch (a node promoted again records
    /// its new epoch), unless the stored one was written by a newer epoch.
    async fn write_cluster_manifest(&mut self) -> Result<(), ArchiveError> {
        let epoch = (self.config.epoch)();
        if self.cluster_written == Some(epoch) {
            return Ok(());
        }
        self.check_cluster_writer(epoch).await?;
        let cluster = ClusterManifest {
            format: MANIFEST_FORMAT,
            cluster: self.layout.prefix().to_string(),
            partitions: self.config.partition_count,
            segment_bytes: self.config.segment_bytes,
            writer_epoch: epoch.0,
        };
        let path = self.layout.cluster_manifest();
        let payload = PutPayload::from(manifest::encode(&cluster));
        self.config
            .store
            .put(&path, payload)
            .await
            .map_err(|error| ArchiveError::store("put", &path, error))?;
        self.cluster_written = Some(epoch);
        Ok(())
    }

    /// Reads the stored cluster manifest and applies the fencing rule to it. A missing one
    /// fences nothing; a damaged one carries no epoch to trust and is replaced, as before
    /// epochs were recorded.
    async fn check_cluster_writer(&self, epoch: Epoch) -> Result<(), ArchiveError> {
        let object = self.layout.cluster_manifest();
        match read_cluster_manifest(&self.config.store, &self.layout).await {
            Ok(stored) => manifest::check_writer(object.as_ref(), None, stored.writer_epoch, epoch),
            Err(ArchiveError::Missing { .. }) => Ok(()),
            Err(error @ ArchiveError::Corrupt { .. }) => {
                tracing::warn!(%error, "the stored cluster manifest is damaged; rewriting it");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// The backlog of a partition that could not be checked this pass: its sealed segments
    /// not in the last manifest read.
    fn estimate_backlog(&self, partition: PartitionId) -> Backlog {
        let directory = self.partition_directory(partition);
        let manifest = self.partitions[partition.0 as usize].manifest.as_ref();
        let mut backlog = Backlog::default();
        for (segment, last_lsn) in sealed_segments(&directory).unwrap_or_default() {
            if !manifest
                .is_some_and(|manifest| manifest.covers_segment(segment.first_lsn, last_lsn))
            {
                backlog.objects += 1;
                backlog.bytes += segment.file_bytes;
            }
        }
        backlog
    }

    fn warn_on_backlog(&mut self, backlog: Backlog) {
        if backlog.bytes <= self.config.backlog_warning_bytes {
            return;
        }
        if self.last_backlog_warning.is_some_and(|at| at.elapsed() < WARNING_INTERVAL) {
            return;
        }
        self.last_backlog_warning = Some(Instant::now());
        tracing::warn!(
            backlog_bytes = backlog.bytes,
            backlog_objects = backlog.objects,
            limit = self.config.backlog_warning_bytes,
            last_error = self.metrics.last_error().unwrap_or_default(),
            "UPLOAD BACKLOG: segments wait on local disk for the archive; if the disk fills, \
             partitions refuse writes (nothing acknowledged is lost) until shared storage \
             returns or space is freed"
        );
    }

    fn partition_directory(&self, partition: PartitionId) -> PathBuf {
        self.config.data_dir.join(format!("p{}", partition.0))
    }
}

/// The sealed segments of a partition directory (all but the newest), each with its last LSN
/// (the next segment's first LSN minus one).
fn sealed_segments(directory: &Path) -> Result<Vec<(SegmentInfo, Lsn)>, ArchiveError> {
    if !directory.exists() {
        return Ok(Vec::new());
    }
    let segments = strata_wal::scan_segments(directory)?;
    Ok(segments
        .windows(2)
        .map(|pair| (pair[0].clone(), Lsn(pair[1].first_lsn.0.saturating_sub(1))))
        .filter(|(segment, last_lsn)| *last_lsn >= segment.first_lsn)
        .collect())
}

fn newest_local_snapshot(directory: &Path) -> Result<Option<(Lsn, PathBuf)>, ArchiveError> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Ok(None);
    };
    let mut newest: Option<(Lsn, PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(|error| local_error(directory, &error))?;
        let name = entry.file_name();
        if let Some(lsn) = name.to_str().and_then(strata_wal::parse_snapshot_file_name) {
            if newest.as_ref().is_none_or(|(newest, _)| lsn > *newest) {
                newest = Some((lsn, entry.path()));
            }
        }
    }
    Ok(newest)
}

/// The highest LSN at or below which every local sealed segment is archived and covered by an
/// archived snapshot.
fn archive_floor(manifest: &PartitionManifest, sealed: &[(SegmentInfo, Lsn)]) -> Lsn {
    let snapshot = manifest.newest_snapshot().map_or(Lsn::ZERO, |snapshot| Lsn(snapshot.lsn));
    let mut archived = Lsn(u64::MAX);
    for (segment, last_lsn) in sealed {
        if !manifest.covers_segment(segment.first_lsn, *last_lsn) {
            archived = Lsn(segment.first_lsn.0.saturating_sub(1));
            break;
        }
    }
    snapshot.min(archived)
}

fn local_error(path: &Path, error: &std::io::Error) -> ArchiveError {
    ArchiveError::Local { path: path.display().to_string(), reason: error.to_string() }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}
