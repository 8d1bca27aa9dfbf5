//! The uploader and restore against an in-memory object store or a local directory store, on
//! partition directories written with the WAL's own formats. (Integration tests run the same
//! against a real S3 server.)

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutPayload};
use strata_core::frame::encode_frame;
use strata_core::record::Record;
use strata_core::{Epoch, Lsn, PartitionId};
use strata_wal::{ArchiveMarks, PartitionWriter, SegmentHeader};

use crate::uploader::Uploader;
use crate::{
    read_cluster_manifest, read_partition_manifest, restore, ArchiveError, Layout, Store,
    StoreLocation, UploaderConfig,
};

const PARTITION: PartitionId = PartitionId(0);
const SEGMENT_BYTES: u64 = 8192;

fn record(lsn: u64) -> Record {
    Record::Set {
        key: format!("key-{lsn}").into_bytes(),
        value: format!("value-{lsn}").into_bytes(),
        expire_at_ms: 0,
    }
}

/// One segment image holding a frame per LSN in `lsns`.
fn segment_image(lsns: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    let first_lsn = Lsn(*lsns.start());
    let header = SegmentHeader { partition: PARTITION, first_lsn, segment_bytes: 1 << 20 };
    let mut image = header.encode();
    for lsn in lsns {
        encode_frame(&mut image, PARTITION, Epoch(1), Lsn(lsn), Lsn(lsn - 1), &[record(lsn)]);
    }
    image
}

/// A partition directory with `records` records in segments of 8 KiB.
fn write_partition(data_dir: &Path, records: u64) {
    let mut writer = PartitionWriter::new(&data_dir.join("p0"), PARTITION, SEGMENT_BYTES).unwrap();
    writer.append_segment("source", &segment_image(1..=records)).unwrap();
    writer.finish().unwrap();
}

fn write_snapshot(data_dir: &Path, lsn: Lsn) {
    let keys: Vec<(Vec<u8>, Vec<u8>)> = (1..=lsn.0)
        .map(|lsn| (format!("key-{lsn}").into_bytes(), format!("value-{lsn}").into_bytes()))
        .collect();
    let entries = keys.iter().map(|(key, value)| (key.as_slice(), value.as_slice(), 0));
    let mut image = strata_wal::encode_snapshot(PARTITION, entries);
    strata_wal::seal_snapshot(&mut image, PARTITION, lsn);
    let path = data_dir.join("p0").join(strata_wal::snapshot_file_name(lsn));
    std::fs::write(path, image).unwrap();
}

fn uploader(store: &Store, data_dir: &Path, marks: &Arc<ArchiveMarks>) -> Uploader {
    uploader_at(store, data_dir, marks, Epoch(1))
}

/// An uploader on a node whose leader epoch is `epoch`.
fn uploader_at(
    store: &Store,
    data_dir: &Path,
    marks: &Arc<ArchiveMarks>,
    epoch: Epoch,
) -> Uploader {
    let config = UploaderConfig {
        store: Arc::clone(store),
        layout: Arc::new(std::sync::Mutex::new(Layout::new("test-0001").unwrap())),
        data_dir: data_dir.to_path_buf(),
        partition_count: 1,
        segment_bytes: SEGMENT_BYTES,
        marks: Arc::clone(marks),
        uploading: Arc::new(|| true),
        epoch: Arc::new(move || epoch),
        scan_interval: Duration::from_millis(10),
        backlog_warning_bytes: u64::MAX,
        snapshots_kept: 2,
    };
    Uploader::new(config, Arc::default())
}

/// A store in a fresh directory, as `storage_type = "local"` has it.
fn directory_store() -> (tempfile::TempDir, Store) {
    let directory = tempfile::tempdir().unwrap();
    let store = crate::connect(&StoreLocation::Directory(directory.path().to_path_buf())).unwrap();
    (directory, store)
}

/// The first LSN of every local segment of the partition, oldest first.
fn segment_starts(data_dir: &Path) -> Vec<u64> {
    let segments = strata_wal::scan_segments(&data_dir.join("p0")).unwrap();
    segments.iter().map(|segment| segment.first_lsn.0).collect()
}

async fn stored_bytes(store: &Store, path: &object_store::path::Path) -> Vec<u8> {
    store.get(path).await.unwrap().bytes().await.unwrap().to_vec()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn sealed_segments_and_snapshots_go_up_and_restore_brings_them_back() {
    let data_dir = tempfile::tempdir().unwrap();
    write_partition(data_dir.path(), 300);
    let sealed = strata_wal::scan_segments(&data_dir.path().join("p0")).unwrap().len() - 1;
    assert!(sealed >= 3, "{sealed} sealed segments");
    let store: Store = Arc::new(InMemory::new());
    let marks = Arc::new(ArchiveMarks::new(1));
    let layout = Layout::new("test-0001").unwrap();
    runtime().block_on(async {
        let mut uploader = uploader(&store, data_dir.path(), &marks);
        // Nothing is committed yet: nothing goes up.
        uploader.pass().await;
        let manifest = read_partition_manifest(&store, &layout, PARTITION).await.unwrap();
        assert!(manifest.segments.is_empty());
        assert_eq!(
            uploader.metrics.backlog_objects.load(std::sync::atomic::Ordering::Relaxed),
            sealed as u64
        );
        marks.set_committed(PARTITION, Lsn(300));
        uploader.pass().await;
        let manifest = read_partition_manifest(&store, &layout, PARTITION).await.unwrap();
        assert_eq!(manifest.segments.len(), sealed);
        assert_eq!(marks.floor(PARTITION), Lsn::ZERO, "no snapshot covers them yet");
        let snapshot_lsn = Lsn(manifest.segments[1].last_lsn);
        write_snapshot(data_dir.path(), snapshot_lsn);
        uploader.pass().await;
        let manifest = read_partition_manifest(&store, &layout, PARTITION).await.unwrap();
        assert_eq!(manifest.newest_snapshot().unwrap().lsn, snapshot_lsn.0);
        assert_eq!(marks.floor(PARTITION), snapshot_lsn);
        let last_archived = manifest.segments.last().unwrap().last_lsn;
        // Two more snapshots: the first one and the segments it alone covered go.
        let first_snapshot = layout.object(PARTITION, &manifest.snapshots[0].object);
        write_snapshot(data_dir.path(), Lsn(manifest.segments[2].last_lsn));
        uploader.pass().await;
        assert!(store.head(&first_snapshot).await.is_ok(), "two snapshots are kept");
        write_snapshot(data_dir.path(), Lsn(last_archived));
        uploader.pass().await;
        let pruned = read_partition_manifest(&store, &layout, PARTITION).await.unwrap();
        assert_eq!(pruned.snapshots.len(), 2);
        assert!(matches!(
            store.head(&first_snapshot).await,
            Err(object_store::Error::NotFound { .. })
        ));
        assert!(pruned.segments.iter().all(|segment| segment.last_lsn > pruned.snapshots[0].lsn));
        let snapshot_lsn = Lsn(pruned.newest_snapshot().unwrap().lsn);

        let target = tempfile::tempdir().unwrap();
        let report = restore(&store, &layout, target.path(), &mut |_, _| {}).await.unwrap();
        assert_eq!(report.partitions[0].snapshot_lsn, snapshot_lsn.0);
        assert_eq!(report.partitions[0].snapshot_entries, snapshot_lsn.0);
        assert_eq!(report.partitions[0].last_lsn, last_archived);
        assert_eq!(report.partitions[0].records, last_archived - snapshot_lsn.0);
    });
}

#[test]
fn a_corrupt_or_missing_object_is_named_and_nothing_of_it_is_applied() {
    let data_dir = tempfile::tempdir().unwrap();
    write_partition(data_dir.path(), 200);
    let store: Store = Arc::new(InMemory::new());
    let marks = Arc::new(ArchiveMarks::new(1));
    marks.set_committed(PARTITION, Lsn(200));
    let layout = Layout::new("test-0001").unwrap();
    runtime().block_on(async {
        uploader(&store, data_dir.path(), &marks).pass().await;
        let manifest = read_partition_manifest(&store, &layout, PARTITION).await.unwrap();
        let victim = layout.object(PARTITION, &manifest.segments[1].object);
        let mut bytes = store.get(&victim).await.unwrap().bytes().await.unwrap().to_vec();
        bytes[5000] ^= 0x40;
        store.put(&victim, PutPayload::from(bytes)).await.unwrap();
        let target = tempfile::tempdir().unwrap();
        let error = restore(&store, &layout, target.path(), &mut |_, _| {}).await.unwrap_err();
        assert!(
            matches!(&error, ArchiveError::Corrupt { object, .. } if *object == victim.to_string()),
            "{error}"
        );
        store.delete(&victim).await.unwrap();
        let target = tempfile::tempdir().unwrap();
        let error = restore(&store, &layout, target.path(), &mut |_, _| {}).await.unwrap_err();
        assert!(
            matches!(&error, ArchiveError::Missing { object } if *object == victim.to_string()),
            "{error}"
        );
    });
}

#[test]
fn objects_no_manifest_lists_are_deleted_when_the_manifest_is_read_again() {
    let data_dir = tempfile::tempdir().unwrap();
    write_partition(data_dir.path(), 300);
    let store: Store = Arc::new(InMemory::new());
    let marks = Arc::new(ArchiveMarks::new(1));
    let layout = Layout::new("test-0001").unwrap();
    runtime().block_on(async {
        marks.set_committed(PARTITION, Lsn(300));
        let mut uploader = uploader(&store, data_dir.path(), &marks);
        uploader.pass().await;
        let manifest = read_partition_manifest(&store, &layout, PARTITION).await.unwrap();
        assert!(!manifest.segments.is_empty());
        // Left by a crash between an upload and its manifest, and by one during pruning.
        let orphans = [
            layout.object(PARTITION, &Layout::segment_name(Epoch(1), Lsn(999_999))),
            layout.object(PARTITION, &Layout::snapshot_name(Lsn(77))),
        ];
        // Not this partition's data objects: left alone.
        let others = [
            object_store::path::Path::from("test-0001/p1/seg/00000000000000000001"),
            object_store::path::Path::from("test-0001/p0/notes.txt"),
        ];
        for path in orphans.iter().chain(&others) {
            store.put(path, PutPayload::from_static(b"left over")).await.unwrap();
        }
        // The running uploader keeps its manifest: its passes do not list the store.
        uploader.pass().await;
        for orphan in &orphans {
            assert!(store.head(orphan).await.is_ok());
        }
        // A restarted uploader reads the manifest again, and with it removes the orphans.
        uploader = self::uploader(&store, data_dir.path(), &marks);
        uploader.pass().await;
        for orphan in &orphans {
            let gone = store.head(orphan).await;
            assert!(matches!(gone, Err(object_store::Error::NotFound { .. })), "{orphan}");
        }
        for path in &others {
            assert!(store.head(path).await.is_ok(), "{path}");
        }
        assert!(store.head(&layout.partition_manifest(PARTITION)).await.is_ok());
        for segment in &manifest.segments {
            assert!(store.head(&layout.object(PARTITION, &segment.object)).await.is_ok());
        }
        let target = tempfile::tempdir().unwrap();
        let report = restore(&store, &layout, target.path(), &mut |_, _| {}).await.unwrap();
        assert_eq!(report.partitions[0].last_lsn, manifest.segments.last().unwrap().last_lsn);
    });
}

/// Failover: a new leader (epoch 3) takes over the archive while the old one (epoch 2) has not
/// noticed yet. The old leader must not put back its older manifest, and says why.
#[test]
fn a_manifest_written_under_a_newer_epoch_is_not_overwritten_by_an_older_one() {
    let data_dir = tempfile::tempdir().unwrap();
    write_partition(data_dir.path(), 300);
    let starts = segment_starts(data_dir.path());
    assert!(starts.len() >= 4, "{starts:?}");
    let (_directory, store) = directory_store();
    let marks = Arc::new(ArchiveMarks::new(1));
    let layout = Layout::new("test-0001").unwrap();
    let manifest_path = layout.partition_manifest(PARTITION);
    runtime().block_on(async {
        marks.set_committed(PARTITION, Lsn(starts[1] - 1));
        let mut old_leader = uploader_at(&store, data_dir.path(), &marks, Epoch(2));
        old_leader.pass().await;
        // The stored epoch 2 is older than the new leader's: it writes.
        marks.set_committed(PARTITION, Lsn(starts[2] - 1));
        let mut new_leader = uploader_at(&store, data_dir.path(), &marks, Epoch(3));
        new_leader.pass().await;
        let manifest = read_partition_manifest(&store, &layout, PARTITION).await.unwrap();
        assert_eq!(manifest.writer_epoch, 3);
        let writers: Vec<u64> = manifest.segments.iter().map(|entry| entry.writer_epoch).collect();
        assert_eq!(writers, [2, 3]);
        assert_eq!(read_cluster_manifest(&store, &layout).await.unwrap().writer_epoch, 3);

        // The old leader still holds its epoch-2 view and has a new segment to add to it.
        marks.set_committed(PARTITION, Lsn(starts[3] - 1));
        let before = stored_bytes(&store, &manifest_path).await;
        old_leader.pass().await;
        old_leader.pass().await;
        assert_eq!(stored_bytes(&store, &manifest_path).await, before, "epoch 3's manifest stays");
        let metrics = &old_leader.metrics;
        assert_eq!(metrics.failures.load(Ordering::Relaxed), 1, "fenced once, then left alone");
        assert_eq!(metrics.fenced_epoch.load(Ordering::Relaxed), 3);
        assert_eq!(metrics.fenced_manifests(), [manifest_path.to_string()]);
        let error = metrics.last_error().unwrap();
        for part in ["p0/manifest.json", "epoch 3", "epoch 2"] {
            assert!(error.contains(part), "{part}: {error}");
        }
        let status = metrics.to_json();
        assert_eq!(status["fenced_epoch"], 3);
        assert_eq!(status["last_error"], error.as_str());
        assert_eq!(marks.floor(PARTITION), Lsn::ZERO, "its segments stay on local disk");
    });
}

/// A stale node that restarts reads the newer manifests before it sweeps or writes anything;
/// the current leader, and a newer one, go on writing.
#[test]
fn a_stale_uploader_deletes_nothing_and_equal_or_newer_epochs_write() {
    let data_dir = tempfile::tempdir().unwrap();
    write_partition(data_dir.path(), 300);
    let starts = segment_starts(data_dir.path());
    let (_directory, store) = directory_store();
    let marks = Arc::new(ArchiveMarks::new(1));
    let layout = Layout::new("test-0001").unwrap();
    runtime().block_on(async {
        marks.set_committed(PARTITION, Lsn(starts[1] - 1));
        let mut leader = uploader_at(&store, data_dir.path(), &marks, Epoch(3));
        leader.pass().await;
        // Put by the leader, not listed yet: the stale node must not sweep it.
        let unlisted = layout.object(PARTITION, &Layout::segment_name(Epoch(3), Lsn(999_999)));
        store.put(&unlisted, PutPayload::from_static(b"in flight")).await.unwrap();
        let before = stored_bytes(&store, &layout.partition_manifest(PARTITION)).await;
        let mut stale = uploader_at(&store, data_dir.path(), &marks, Epoch(2));
        stale.pass().await;
        assert!(store.head(&unlisted).await.is_ok());
        let stored = stored_bytes(&store, &layout.partition_manifest(PARTITION)).await;
        assert_eq!(stored, before);
        assert_eq!(stale.metrics.fenced_manifests(), [layout.cluster_manifest().to_string()]);
        assert_eq!(read_cluster_manifest(&store, &layout).await.unwrap().writer_epoch, 3);

        marks.set_committed(PARTITION, Lsn(starts[2] - 1));
        leader.pass().await;
        let manifest = read_partition_manifest(&store, &layout, PARTITION).await.unwrap();
        assert_eq!((manifest.writer_epoch, manifest.segments.len()), (3, 2), "equal epoch");

        write_snapshot(data_dir.path(), Lsn(starts[2] - 1));
        let mut newer = uploader_at(&store, data_dir.path(), &marks, Epoch(4));
        newer.pass().await;
        let manifest = read_partition_manifest(&store, &layout, PARTITION).await.unwrap();
        assert_eq!(manifest.writer_epoch, 4);
        assert_eq!(manifest.newest_snapshot().unwrap().writer_epoch, 4);
        assert_eq!(read_cluster_manifest(&store, &layout).await.unwrap().writer_epoch, 4);
        let swept = store.head(&unlisted).await;
        assert!(matches!(swept, Err(object_store::Error::NotFound { .. })), "{swept:?}");
        assert!(newer.metrics.fenced_manifests().is_empty());
    });
}
