//! The archive against a real S3 server (Ceph RGW, started by `scripts/s3-server.sh`):
//! segments and snapshots in the bucket with their checksums, a learner bootstrapping from
//! them, an outage that never stops writes, restore from the bucket alone, and a corrupt
//! object refused by name.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use redis::Commands;
use strata_archive::{Layout, Store};
use strata_tests::admin::{role_body, wait_until};
use strata_tests::data::assert_holds;
use strata_tests::s3::{block_on, Proxy, S3};
use strata_tests::{run_tool, strata_binary, NodeSettings, TestNode};

/// A node archiving to `url` (the S3 server, or a proxy in front of it), with small segments
/// so that they seal quickly, and a snapshot every second of writes.
fn settings(s3: &S3, url: Option<&str>, cluster: &str, server_mode: &'static str) -> NodeSettings {
    NodeSettings {
        server_mode,
        partitions: 4,
        segment_size: "256KB",
        snapshot_size: "1MB",
        snapshot_interval: 1,
        heartbeat_interval: 200,
        heartbeat_timeout: 2000,
        storage: s3.storage_lines(url),
        extra: format!("name = \"{cluster}\""),
        ..NodeSettings::default()
    }
}

/// Writes `count` keys `<tag>:<n>` with distinct values of about 200 bytes, pipelined.
fn write_keys(node: &TestNode, tag: &str, count: usize) -> BTreeMap<String, String> {
    let mut client = node.client();
    let mut written = BTreeMap::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for index in chunk {
            let key = format!("{tag}:{index}");
            let value = format!("{index:08}-{}", "v".repeat(190));
            pipe.set(&key, &value).ignore();
            written.insert(key, value);
        }
        pipe.query::<()>(&mut client).expect("pipelined SETs");
    }
    written
}

fn storage(node: &TestNode) -> serde_json::Value {
    node.admin("GET", "/admin/storage", None).assert_ok().clone()
}

fn counter(status: &serde_json::Value, name: &str) -> u64 {
    status[name].as_u64().unwrap_or(0)
}

/// Waits until the uploader has nothing waiting and has uploaded something.
fn wait_for_uploads(node: &TestNode) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let drained = wait_until(Duration::from_secs(60), || {
        last = storage(node);
        counter(&last, "uploaded_objects") > 0
            && counter(&last, "backlog_objects") == 0
            && last["last_error"].is_null()
    });
    assert!(drained, "uploads never drained: {last}");
    last
}

fn layout_of(node: &TestNode) -> Layout {
    let status = storage(node);
    Layout::new(status["prefix"].as_str().expect("prefix")).expect("layout")
}

/// The last LSN the archive reaches, summed over partitions (each SET is one record, so once
/// every write is archived this is the number of writes).
fn archived_records(store: &Store, layout: &Layout, partitions: u32) -> u64 {
    block_on(async {
        let mut total = 0;
        for partition in 0..partitions {
            let partition = strata_core_partition(partition);
            let manifest = strata_archive::read_partition_manifest(store, layout, partition)
                .await
                .expect("manifest");
            total += manifest.restore_plan().last_lsn;
        }
        total
    })
}

fn strata_core_partition(index: u32) -> strata_core::PartitionId {
    strata_core::PartitionId(index)
}

/// Waits until the archive holds all of `records` writes (the tail comes with the next
/// snapshot, at most a snapshot interval after the last write).
fn wait_until_archived(store: &Store, layout: &Layout, records: u64) {
    let mut archived = 0;
    let complete = wait_until(Duration::from_secs(60), || {
        archived = archived_records(store, layout, 4);
        archived >= records
    });
    assert!(complete, "the archive reaches {archived} of {records} records");
}

#[test]
fn sealed_segments_and_snapshots_land_in_the_bucket_with_their_checksums() {
    let s3 = S3::from_env();
    let node = TestNode::start(settings(&s3, None, "names", "standalone"));
    let written = write_keys(&node, "names", 12_000);
    wait_for_uploads(&node);
    let store = s3.store();
    let layout = layout_of(&node);
    wait_until_archived(&store, &layout, written.len() as u64);
    block_on(async {
        let cluster = strata_archive::read_cluster_manifest(&store, &layout).await.unwrap();
        assert_eq!((cluster.partitions, cluster.segment_bytes), (4, 256 * 1024));
        let prefix = object_store::path::Path::from(layout.prefix());
        let objects: Vec<object_store::ObjectMeta> =
            store.list(Some(&prefix)).try_collect().await.expect("list the bucket");
        let listed: Vec<(String, u64)> =
            objects.iter().map(|meta| (meta.location.to_string(), meta.size)).collect();
        let mut segments = 0;
        for partition in (0..4).map(strata_core_partition) {
            let manifest =
                strata_archive::read_partition_manifest(&store, &layout, partition).await.unwrap();
            assert!(!manifest.segments.is_empty(), "partition {partition} archived no segment");
            assert!(manifest.newest_snapshot().is_some(), "partition {partition}: no snapshot");
            // From LSN 1, or from within the oldest kept snapshot once older ones are pruned.
            let oldest_snapshot = manifest.snapshots[0].lsn;
            let mut next = manifest.segments[0].first_lsn;
            assert!(next == 1 || next <= oldest_snapshot + 1, "segments start at {next}");
            for segment in &manifest.segments {
                let name = Layout::segment_name(
                    strata_core::Epoch(segment.epoch),
                    strata_core::Lsn(segment.first_lsn),
                );
                assert_eq!(segment.object, name);
                assert_eq!(segment.first_lsn, next, "segments chain");
                next = segment.last_lsn + 1;
                let path = layout.object(partition, &segment.object);
                assert!(listed.contains(&(path.to_string(), segment.bytes)), "{path} listed");
                let bytes =
                    strata_archive::fetch_checked(&store, &path, segment.bytes, segment.crc32c)
                        .await
                        .expect("segment matches its manifest entry");
                assert_eq!(&bytes[..4], b"STRS", "a segment file's header");
                segments += 1;
            }
            for snapshot in &manifest.snapshots {
                assert_eq!(snapshot.object, Layout::snapshot_name(strata_core::Lsn(snapshot.lsn)));
                let path = layout.object(partition, &snapshot.object);
                strata_archive::fetch_checked(&store, &path, snapshot.bytes, snapshot.crc32c)
                    .await
                    .expect("snapshot matches its manifest entry");
            }
        }
        assert!(segments >= 8, "{segments} segments archived");
    });
}

#[test]
fn a_new_learner_bootstraps_from_s3_while_the_leader_takes_writes() {
    let s3 = S3::from_env();
    let leader = TestNode::start(settings(&s3, None, "bootstrap", "admin"));
    leader
        .admin("POST", "/admin/node/current", Some(&role_body("leader", Some("harry"), None)))
        .assert_ok();
    let mut expected = write_keys(&leader, "before", 15_000);
    let store = s3.store();
    wait_until_archived(&store, &layout_of(&leader), expected.len() as u64);
    // Writes go on while the learner joins.
    let writer_node_port = leader.port;
    let writer = std::thread::spawn(move || {
        let mut client = strata_tests::connect(writer_node_port);
        let mut written = BTreeMap::new();
        for index in 0..3_000 {
            let (key, value) = (format!("during:{index}"), format!("value-{index}"));
            let _: () = client.set(&key, &value).expect("SET during the join");
            written.insert(key, value);
        }
        written
    });
    let learner = TestNode::start(settings(&s3, None, "bootstrap-learner", "admin"));
    let body = role_body("learner", Some("ron"), Some(&leader.peer_address()));
    learner.admin("POST", "/admin/node/current", Some(&body)).assert_ok();
    expected.extend(writer.join().expect("writer"));
    let status = storage(&learner);
    let bootstrap = &status["bootstrap"];
    assert_eq!(bootstrap["state"], "done", "{status}");
    assert!(counter(bootstrap, "bytes_loaded") > 1_000_000, "{status}");
    assert_eq!(bootstrap["bytes_loaded"], bootstrap["bytes_total"]);
    assert_eq!(status["prefix"], storage(&leader)["prefix"], "the learner adopts the prefix");
    let caught_up = wait_until(Duration::from_secs(30), || {
        let listed = leader.admin("GET", "/admin/nodes", None);
        listed.json["nodes"][1]["lag"] == "0"
    });
    assert!(caught_up, "the learner never caught up");
    assert_holds(&learner, &expected, "learner after bootstrap");
    assert!(
        learner.log().contains("partition loaded from the archive"),
        "the learner loaded from S3"
    );
    assert!(!leader.log().contains("snapshot sent"), "the leader sent no snapshot");
}

#[test]
fn an_s3_outage_delays_uploads_and_never_writes() {
    let s3 = S3::from_env();
    let proxy = Proxy::start(&s3.url);
    let node = TestNode::start(settings(&s3, Some(&proxy.url()), "outage", "standalone"));
    let mut expected = write_keys(&node, "before", 4_000);
    wait_for_uploads(&node);
    let uploaded_before = counter(&storage(&node), "uploaded_objects");
    proxy.cut();
    expected.extend(write_keys(&node, "during", 12_000));
    let mut status = serde_json::Value::Null;
    let backed_up = wait_until(Duration::from_secs(30), || {
        status = storage(&node);
        counter(&status, "failures") > 0 && counter(&status, "backlog_objects") > 0
    });
    assert!(backed_up, "no failure or backlog seen during the outage: {status}");
    assert!(status["last_error"].as_str().is_some_and(|error| !error.is_empty()), "{status}");
    assert_holds(&node, &expected, "writes during the outage");
    proxy.mend();
    let drained = wait_for_uploads(&node);
    assert!(counter(&drained, "uploaded_objects") > uploaded_before);
    let store = s3.store();
    let layout = layout_of(&node);
    wait_until_archived(&store, &layout, expected.len() as u64);
}

/// `strata restore` into `data_dir`: (success, stdout, stderr).
fn restore(node: &TestNode, from: &str, data_dir: &std::path::Path) -> (bool, String, String) {
    let binary = strata_binary();
    let config = node.config_path();
    run_tool(
        &binary.display().to_string(),
        &[
            "restore",
            "--config",
            &config.display().to_string(),
            "--from",
            from,
            "--data-dir",
            &data_dir.display().to_string(),
        ],
    )
}

#[test]
fn restore_from_s3_alone_brings_back_every_archived_write() {
    let s3 = S3::from_env();
    let mut node = TestNode::start(settings(&s3, None, "restore", "standalone"));
    let expected = write_keys(&node, "restore", 10_000);
    let store = s3.store();
    let layout = layout_of(&node);
    wait_until_archived(&store, &layout, expected.len() as u64);
    node.kill();
    std::fs::remove_dir_all(node.data_dir()).expect("delete the data directory");
    let from = format!("{}/{}", s3.bucket, layout.prefix());
    let (ok, stdout, stderr) = restore(&node, &from, &node.data_dir());
    assert!(ok, "restore failed: {stdout}{stderr}");
    assert!(stdout.contains("restored 4 partitions"), "{stdout}");
    node.restart();
    assert_holds(&node, &expected, "after restore");
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut node.client()).unwrap();
    assert_eq!(dbsize, expected.len() as u64);
    assert_eq!(storage(&node)["prefix"], layout.prefix(), "the restored node keeps its prefix");
}

#[test]
fn a_corrupt_object_in_the_bucket_is_refused_by_name() {
    let s3 = S3::from_env();
    let node = TestNode::start(settings(&s3, None, "corrupt", "standalone"));
    write_keys(&node, "corrupt", 8_000);
    let store = s3.store();
    let layout = layout_of(&node);
    wait_until_archived(&store, &layout, 8_000);
    let victim = block_on(async {
        let partition = strata_core_partition(1);
        let manifest =
            strata_archive::read_partition_manifest(&store, &layout, partition).await.unwrap();
        // The first object restore loads: the snapshot, or the first segment without one.
        let plan = manifest.restore_plan();
        let object = match (&plan.snapshot, plan.segments.first()) {
            (Some(snapshot), _) => snapshot.object.clone(),
            (None, Some(segment)) => segment.object.clone(),
            (None, None) => panic!("partition 1 archived nothing"),
        };
        let path = layout.object(partition, &object);
        let mut bytes = store.get(&path).await.unwrap().bytes().await.unwrap().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        store.put(&path, PutPayload::from(bytes)).await.unwrap();
        path.to_string()
    });
    let target = tempfile::tempdir().unwrap();
    let data_dir = target.path().join("data");
    let from = format!("{}/{}", s3.bucket, layout.prefix());
    let (ok, stdout, stderr) = restore(&node, &from, &data_dir);
    assert!(!ok, "restore accepted a corrupt object: {stdout}");
    assert!(stderr.contains(&victim) && stderr.contains("corrupt"), "{stderr}");
}

/// The LSN of `partition`'s newest snapshot in the archive.
fn newest_archived_snapshot(
    store: &Store,
    layout: &Layout,
    partition: strata_core::PartitionId,
) -> u64 {
    block_on(strata_archive::read_partition_manifest(store, layout, partition))
        .expect("manifest")
        .newest_snapshot()
        .expect("an archived snapshot")
        .lsn
}

/// The segment files of a partition directory with their first LSNs, oldest first.
fn segments_by_first_lsn(directory: &std::path::Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut segments: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(directory)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            segment_first_lsn(&name).map(|lsn| (lsn, entry.path()))
        })
        .collect();
    segments.sort();
    segments
}

/// The LSN in a segment file name (`<20 digits>.wal`).
fn segment_first_lsn(name: &str) -> Option<u64> {
    name.strip_suffix(".wal").and_then(|digits| digits.parse().ok())
}

#[test]
fn a_node_whose_disk_kept_only_the_tail_recovers_from_s3() {
    let s3 = S3::from_env();
    let mut node = TestNode::start(settings(&s3, None, "tail", "standalone"));
    let mut expected = write_keys(&node, "archived", 10_000);
    let store = s3.store();
    let layout = layout_of(&node);
    wait_until_archived(&store, &layout, expected.len() as u64);
    // Snapshots come every second with writes: wait for one recent enough that a segment
    // lies wholly before it on every partition (a busy machine may have taken the last one
    // early in the writes).
    let older_segments = |partition| {
        let snapshot = newest_archived_snapshot(&store, &layout, partition);
        segments_by_first_lsn(&node.partition_dir(partition.0))
            .windows(2)
            .filter(|pair| pair[1].0 <= snapshot + 1)
            .count()
    };
    let long_enough = wait_until(Duration::from_secs(30), || {
        (0..4).map(strata_core_partition).all(|partition| older_segments(partition) > 0)
    });
    assert!(long_enough, "no snapshot beyond a whole segment on every partition");
    expected.extend(write_keys(&node, "tail", 300));
    node.kill();
    // Keep only what follows each partition's newest archived snapshot: the segment holding
    // the LSN after it, and later ones. Snapshots and older segments are gone.
    let mut deleted = 0;
    for partition in (0..4).map(strata_core_partition) {
        let snapshot = newest_archived_snapshot(&store, &layout, partition);
        let directory = node.partition_dir(partition.0);
        for entry in std::fs::read_dir(&directory).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("snapshot-") {
                std::fs::remove_file(entry.path()).unwrap();
                deleted += 1;
            }
        }
        let segments = segments_by_first_lsn(&directory);
        let keep_from = segments.iter().rposition(|(first, _)| *first <= snapshot + 1).unwrap();
        for (_, path) in &segments[..keep_from] {
            std::fs::remove_file(path).unwrap();
            deleted += 1;
        }
    }
    assert!(deleted >= 8, "only {deleted} files deleted: the test needs a longer log");
    node.restart();
    assert!(node.log().contains("completed it with a snapshot from the archive"), "{}", node.log());
    assert_holds(&node, &expected, "after recovering from the tail and the archive");
}

#[test]
fn a_snapshot_larger_than_a_part_goes_up_in_parts_and_comes_back() {
    let s3 = S3::from_env();
    let one_partition = NodeSettings {
        partitions: 1,
        segment_size: "32MB",
        snapshot_size: "64MB",
        ..settings(&s3, None, "multipart", "standalone")
    };
    let mut node = TestNode::start(one_partition);
    let expected = write_keys(&node, "large", 100_000);
    let store = s3.store();
    let layout = layout_of(&node);
    wait_until_archived(&store, &layout, expected.len() as u64);
    let partition = strata_core_partition(0);
    let manifest =
        block_on(strata_archive::read_partition_manifest(&store, &layout, partition)).unwrap();
    let snapshot = manifest.newest_snapshot().expect("a snapshot");
    assert!(snapshot.bytes > 16 * 1024 * 1024, "snapshot of {} bytes", snapshot.bytes);
    node.kill();
    let target = tempfile::tempdir().unwrap();
    let data_dir = target.path().join("data");
    let (ok, stdout, stderr) =
        restore(&node, &format!("{}/{}", s3.bucket, layout.prefix()), &data_dir);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{:>14}", snapshot.lsn)), "{stdout}");
}
