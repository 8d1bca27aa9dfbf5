//! A WAL write that fails is sticky: once a partition's disk is full, the partition refuses
//! writes with a clear error, the node keeps serving committed data, and nothing acknowledged
//! is lost. The data directory is a small filesystem mounted for the test (CI runs as root):
//! a tmpfs, where appends are O_DSYNC, and an ext4 image on a loop device, where the
//! partitions share their fdatasyncs.

use redis::Commands;
use strata_tests::disk::SmallDisk;
use strata_tests::{NodeSettings, TestNode};

fn small_node() -> TestNode {
    let settings = NodeSettings {
        segment_size: "64KB",
        snapshot_size: "64MB",
        partitions: 1,
        shards: 1,
        ..NodeSettings::default()
    };
    TestNode::create(settings)
}

#[test]
fn a_full_disk_makes_the_partition_refuse_writes_and_keeps_committed_data() {
    let mut node = small_node();
    let _disk = SmallDisk::mount(&node.data_dir(), "1m");
    node.restart();
    fill_until_refused(&node);
}

#[test]
fn a_full_ext4_disk_with_shared_syncs_refuses_writes_and_keeps_committed_data() {
    let mut node = small_node();
    let image = node.directory.path().join("disk.img");
    let _disk = SmallDisk::mount_ext4(&node.data_dir(), &image, "4M");
    node.restart();
    fill_until_refused(&node);
    let info = persistence_info(&node);
    let fdatasyncs = info
        .lines()
        .find_map(|line| line.strip_prefix("wal_fdatasyncs:"))
        .map(|count| count.trim().parse::<u64>().unwrap());
    assert!(fdatasyncs.is_some_and(|count| count > 0), "syncs were shared fdatasyncs: {info}");
}

fn persistence_info(node: &TestNode) -> String {
    let mut client = node.client();
    redis::cmd("INFO").arg("persistence").query(&mut client).expect("INFO answers")
}

/// Writes 1000-byte values until the disk is full, then checks the refusal is sticky and
/// every acknowledged write is still served.
fn fill_until_refused(node: &TestNode) {
    let mut client = node.client();
    let value = vec![b'v'; 1000];
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for index in 0..5000 {
        let key = format!("key:{index}");
        match client.set::<_, _, ()>(&key, &value) {
            Ok(()) => acknowledged.push(key),
            Err(error) => {
                refusal = Some(error.to_string());
                break;
            }
        }
    }
    let refusal = refusal.expect("a 1 MiB disk filled up within 5 MB of writes");
    assert!(refusal.contains("refuses writes after a WAL failure"), "{refusal}");
    assert!(!acknowledged.is_empty());
    // Sticky: later writes are refused too, even small ones.
    let again = client.set::<_, _, ()>("small", "x").unwrap_err().to_string();
    assert!(again.contains("refuses writes after a WAL failure"), "{again}");
    // Every acknowledged write is still served.
    for key in &acknowledged {
        let read: Vec<u8> = client.get(key).unwrap();
        assert_eq!(read, value, "{key}");
    }
    let pong: String = redis::cmd("PING").query(&mut client).unwrap();
    assert_eq!(pong, "PONG");
    // INFO still answers, and tells which partitions failed, as Redis's AOF status does.
    let info = persistence_info(node);
    assert!(info.contains("wal_failed_partitions:1\r\n"), "{info}");
    assert!(info.contains("aof_last_write_status:err\r\n"), "{info}");
    assert!(node.log().contains("WAL write failed"), "{}", node.log());
}
