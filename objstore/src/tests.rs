//! The uploader and restore against an in-memory object store, on partition directories
//! written with the WAL's own formats. (Integration tests run the same against a real S3
//! server.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutPayload};
use strata_core::frame::encode_frame;
use strata_core::record::Record;
use strata_core::{Epoch, Lsn, PartitionId};
use strata_wal::{ArchiveMarks, PartitionWriter, SegmentHeader};

use crate::uploader::Uploader;
use crate::{read_partition_manifest, restore, ArchiveError, Layout, Store, UploaderConfig};

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

fn write_checkpoint(data_dir: &Path, lsn: Lsn) {
    let keys: Vec<(Vec<u8>, Vec<u8>)> = (1..=lsn.0)
        .map(|lsn| (format!("key-{lsn}").into_bytes(), format!("value-{lsn}").into_bytes()))
        .collect();
    let entries = keys.iter().map(|(key, value)| (key.as_slice(), value.as_slice(), 0));
    let mut image = strata_wal::encode_checkpoint(PARTITION, entries);
    strata_wal::seal_checkpoint(&mut image, PARTITION, lsn);
    let path = data_dir.join("p0").join(strata_wal::checkpoint_file_name(lsn));
    std::fs::write(path, image).unwrap();
}

fn uploader(store: &Store, data_dir: &Path, marks: &Arc<ArchiveMarks>) -> Uploader {
    let config = UploaderConfig {
        store: Arc::clone(store),
        layout: Arc::new(std::sync::Mutex::new(Layout::new("test-0001").unwrap())),
        data_dir: data_dir.to_path_buf(),
        partition_count: 1,
        segment_bytes: SEGMENT_BYTES,
        marks: Arc::clone(marks),
        uploading: Arc::new(|| true),
        scan_interval: Duration::from_millis(10),
        backlog_warning_bytes: u64::MAX,
        snapshots_kept: 2,
    };
    Uploader::new(config, Arc::default())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn sealed_segments_and_checkpoints_go_up_and_restore_brings_them_back() {
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
        write_checkpoint(data_dir.path(), snapshot_lsn);
        uploader.pass().await;
        let manifest = read_partition_manifest(&store, &layout, PARTITION).await.unwrap();
        assert_eq!(manifest.newest_snapshot().unwrap().lsn, snapshot_lsn.0);
        assert_eq!(marks.floor(PARTITION), snapshot_lsn);
        let last_archived = manifest.segments.last().unwrap().last_lsn;
        // Two more snapshots: the first one and the segments it alone covered go.
        let first_snapshot = layout.object(PARTITION, &manifest.snapshots[0].object);
        write_checkpoint(data_dir.path(), Lsn(manifest.segments[2].last_lsn));
        uploader.pass().await;
        assert!(store.head(&first_snapshot).await.is_ok(), "two snapshots are kept");
        write_checkpoint(data_dir.path(), Lsn(last_archived));
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
