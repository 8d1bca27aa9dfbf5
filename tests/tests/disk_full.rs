//! A WAL write that fails is sticky: once a partition's disk is full, the partition refuses
//! writes with a clear error, the node keeps serving committed data, and nothing acknowledged
//! is lost. The data directory is a small tmpfs mounted for the test (CI runs as root).

use std::process::Command;

use redis::Commands;
use strata_tests::{NodeSettings, TestNode};

/// A tmpfs mounted on a directory, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root (CI runs as root)");
        SmallDisk { path: path.to_path_buf() }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_makes_the_partition_refuse_writes_and_keeps_committed_data() {
    let settings = NodeSettings {
        segment_size: "64KB",
        checkpoint_size: "64MB",
        partitions: 1,
        shards: 1,
        ..NodeSettings::default()
    };
    let mut node = TestNode::create(settings);
    let _disk = SmallDisk::mount(&node.data_dir(), "1m");
    node.restart();
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
    assert!(node.log().contains("WAL write failed"), "{}", node.log());
}
