//! The archive in the binary: starting the uploader for `strata node`, and
//! `strata restore`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_archive::{Layout, StoreLocation, UploaderConfig};
use strata_control::archive::ArchiveAccess;
use strata_shard::{ClusterShared, ServingMode};
use strata_wal::ArchiveMarks;

use crate::config::Config;

/// The node's prefix in the archive: the one it adopted from a leader, or
/// `<cluster name>-<cluster id>`.
pub fn prefix(config: &Config, cluster_id: &str) -> String {
    strata_control::archive::stored_prefix(&config.storage.data_dir)
        .unwrap_or_else(|| format!("{}-{cluster_id}", config.cluster.name))
}

/// Starts the uploader when the config names shared storage. Returns what the control
/// thread uses of the archive, and what the admin API reports of it.
pub fn start_uploader(
    config: &Config,
    location: &StoreLocation,
    cluster_id: &str,
    shared: &Arc<ClusterShared>,
    marks: Arc<ArchiveMarks>,
) -> Result<(ArchiveAccess, strata_control::StorageStatus), String> {
    let store = strata_archive::connect(location).map_err(|error| error.to_string())?;
    let layout = Layout::new(&prefix(config, cluster_id)).map_err(|error| error.to_string())?;
    let access = ArchiveAccess {
        store: Arc::clone(&store),
        layout: Arc::new(Mutex::new(layout.clone())),
        segment_bytes: config.wal.segment_size.0,
        progress: Arc::default(),
        data_dir: config.storage.data_dir.clone(),
    };
    let mode = Arc::clone(shared);
    let uploading =
        Arc::new(move || matches!(mode.mode(), ServingMode::Leader | ServingMode::Standalone));
    let epoch_source = Arc::clone(shared);
    let epoch = Arc::new(move || epoch_source.epoch());
    let uploader = UploaderConfig {
        store,
        layout: Arc::clone(&access.layout),
        data_dir: config.storage.data_dir.clone(),
        partition_count: config.cluster.partitions,
        segment_bytes: config.wal.segment_size.0,
        marks,
        uploading,
        epoch,
        scan_interval: Duration::from_millis(config.storage.upload_interval),
        backlog_warning_bytes: config.storage.upload_backlog_warning.0,
        snapshots_kept: config.storage.archive_snapshots_kept as usize,
    };
    let handle = strata_archive::start_uploader(uploader).map_err(|error| error.to_string())?;
    tracing::info!(location = %location, prefix = layout.prefix(), "archiving to shared storage");
    let metrics = Arc::clone(&handle.metrics);
    let location = location.to_string();
    let reported = access.clone();
    let status: strata_control::StorageStatus = Arc::new(move || {
        let mut status = metrics.to_json();
        status["location"] = serde_json::json!(location);
        status["prefix"] = serde_json::json!(reported.prefix());
        let bootstrap =
            reported.progress.lock().map(|progress| progress.clone()).unwrap_or_default();
        status["bootstrap"] = serde_json::to_value(bootstrap).unwrap_or_default();
        status
    });
    Ok((access, status))
}

#[derive(clap::Args)]
pub struct RestoreOptions {
    /// Config file naming the shared storage (`[storage]` storage_type, shared_dir or
    /// `[storage.object_storage]`); its data_dir is not touched.
    #[arg(long)]
    config: PathBuf,
    /// `<bucket>/<prefix>` in S3, or `<directory>/<prefix>` for local shared storage; the
    /// prefix is `<cluster name>-<cluster id>` (see `GET /admin/storage`).
    #[arg(long)]
    from: String,
    /// The data directory to build; it must not exist or be empty.
    #[arg(long)]
    data_dir: PathBuf,
}

/// `strata restore`: exit codes 2 bad arguments or config, 1 the restore failed.
pub fn run_restore(options: &RestoreOptions) -> ExitCode {
    let config = match Config::load(&options.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("strata restore: {error}");
            return ExitCode::from(2);
        }
    };
    crate::init_logging("warn", crate::config::LogFormat::Text);
    let (location, layout) = match source(&config, &options.from) {
        Ok(source) => source,
        Err(error) => {
            eprintln!("strata restore: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = check_empty(&options.data_dir) {
        eprintln!("strata restore: {error}");
        return ExitCode::from(2);
    }
    match restore(&location, &layout, &options.data_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("strata restore: {error}");
            ExitCode::from(1)
        }
    }
}

/// Splits `--from` into the store (bucket or directory) and the cluster prefix.
fn source(config: &Config, from: &str) -> Result<(StoreLocation, Layout), String> {
    let from = from.trim_end_matches('/');
    let (container, prefix) = from
        .rsplit_once('/')
        .ok_or_else(|| format!("--from {from:?} must be <bucket or directory>/<prefix>"))?;
    let layout = Layout::new(prefix).map_err(|error| error.to_string())?;
    let location = match config.archive_location() {
        Some(StoreLocation::S3 { endpoint, access_key, secret_key, .. }) => {
            StoreLocation::S3 { endpoint, bucket: container.to_string(), access_key, secret_key }
        }
        _ => StoreLocation::Directory(PathBuf::from(container)),
    };
    Ok((location, layout))
}

fn check_empty(data_dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty; restore builds a new data directory",
                    data_dir.display()
                ));
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(format!("cannot read {}: {error}", data_dir.display())),
    }
}

fn restore(location: &StoreLocation, layout: &Layout, data_dir: &Path) -> Result<(), String> {
    let store = strata_archive::connect(location).map_err(|error| error.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a runtime: {error}"))?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .map_err(|error| error.to_string())?,
    );
    println!("restoring {} from {location} into {}", layout.prefix(), data_dir.display());
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let report = runtime
        .block_on(strata_archive::restore(&store, layout, data_dir, &mut progress))
        .map_err(|error| error.to_string())?;
    bar.finish_and_clear();
    let cluster_id = layout.prefix().rsplit_once('-').map(|(_, id)| id.to_string());
    crate::meta::prepare_data_dir(data_dir, report.cluster.partitions, cluster_id.as_deref())?;
    print_report(&report);
    Ok(())
}

fn print_report(report: &strata_archive::RestoreReport) {
    println!(
        "{:>9} {:>14} {:>10} {:>9} {:>10} {:>12}",
        "partition", "snapshot_lsn", "keys", "segments", "records", "last_lsn"
    );
    for partition in &report.partitions {
        println!(
            "{:>9} {:>14} {:>10} {:>9} {:>10} {:>12}",
            partition.partition,
            partition.snapshot_lsn,
            partition.snapshot_entries,
            partition.segments,
            partition.records,
            partition.last_lsn
        );
    }
    let seconds = report.elapsed.as_secs_f64();
    let megabytes = report.bytes() as f64 / (1024.0 * 1024.0);
    println!(
        "restored {} partitions, {megabytes:.1} MiB in {seconds:.2} s ({:.1} MiB/s)",
        report.partitions.len(),
        if seconds > 0.0 { megabytes / seconds } else { 0.0 }
    );
}

/// Before recovery: a partition whose local log lost its head (no snapshot, and the oldest
/// segment starts after LSN 1) gets the archived snapshot that joins up with its oldest local
/// segment, so the node recovers fully from the local tail plus the archive.
pub fn complete_local_logs(
    config: &Config,
    location: &StoreLocation,
    cluster_id: &str,
) -> Result<(), String> {
    let mut incomplete = Vec::new();
    for index in 0..config.cluster.partitions {
        let directory = config.storage.data_dir.join(format!("p{index}"));
        if let Some(gap) = missing_head(&directory, index)? {
            incomplete.push(gap);
        }
    }
    if incomplete.is_empty() {
        return Ok(());
    }
    let store = strata_archive::connect(location).map_err(|error| error.to_string())?;
    let layout = Layout::new(&prefix(config, cluster_id)).map_err(|error| error.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a runtime: {error}"))?;
    for gap in incomplete {
        runtime.block_on(fetch_head(&store, &layout, &gap))?;
    }
    Ok(())
}

/// A partition directory whose log starts after LSN 1 without a snapshot.
struct MissingHead {
    partition: strata_core::PartitionId,
    directory: PathBuf,
    /// First LSN of the oldest local segment, and last LSN of the local log.
    first_lsn: strata_core::Lsn,
    last_lsn: strata_core::Lsn,
}

fn missing_head(directory: &Path, index: u32) -> Result<Option<MissingHead>, String> {
    if !directory.exists() {
        return Ok(None);
    }
    let names = std::fs::read_dir(directory)
        .map_err(|error| format!("cannot read {}: {error}", directory.display()))?;
    let has_snapshot = names.flatten().any(|entry| {
        entry.file_name().to_str().and_then(strata_wal::parse_snapshot_file_name).is_some()
    });
    let segments = strata_wal::scan_segments(directory).map_err(|error| error.to_string())?;
    let (Some(oldest), Some(newest)) = (segments.first(), segments.last()) else {
        return Ok(None);
    };
    if has_snapshot || oldest.first_lsn.0 <= 1 {
        return Ok(None);
    }
    let partition = strata_core::PartitionId(index);
    let bytes = std::fs::read(&newest.path)
        .map_err(|error| format!("cannot read {}: {error}", newest.path.display()))?;
    let last_lsn = strata_wal::segment_extent(&bytes, partition)
        .map_or(strata_core::Lsn(newest.first_lsn.0 - 1), |extent| extent.last_lsn);
    Ok(Some(MissingHead {
        partition,
        directory: directory.to_path_buf(),
        first_lsn: oldest.first_lsn,
        last_lsn,
    }))
}

async fn fetch_head(
    store: &strata_archive::Store,
    layout: &Layout,
    gap: &MissingHead,
) -> Result<(), String> {
    let manifest = strata_archive::read_partition_manifest(store, layout, gap.partition)
        .await
        .map_err(|error| error.to_string())?;
    let snapshot = manifest
        .snapshots
        .iter()
        .rev()
        .find(|snapshot| snapshot.lsn + 1 >= gap.first_lsn.0 && snapshot.lsn <= gap.last_lsn.0)
        .ok_or_else(|| {
            format!(
                "partition {}: the local log starts at LSN {} without a snapshot, and the \
                 archive ({}) holds no snapshot between LSN {} and {} to complete it",
                gap.partition,
                gap.first_lsn,
                layout.prefix(),
                gap.first_lsn.0 - 1,
                gap.last_lsn
            )
        })?;
    let path = layout.object(gap.partition, &snapshot.object);
    let image = strata_archive::fetch_checked(store, &path, snapshot.bytes, snapshot.crc32c)
        .await
        .map_err(|error| error.to_string())?;
    strata_wal::add_snapshot(&gap.directory, gap.partition, path.as_ref(), &image)
        .map_err(|error| error.to_string())?;
    tracing::warn!(
        partition = gap.partition.0,
        local_first_lsn = gap.first_lsn.0,
        snapshot_lsn = snapshot.lsn,
        object = %path,
        "the local log lacked its head; completed it with a snapshot from the archive"
    );
    Ok(())
}
