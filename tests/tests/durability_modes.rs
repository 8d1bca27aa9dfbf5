//! The epoll fallback driver, the durability modes other than FlushAtOnce, and FlushAtOnce with
//! and without shared syncs, each on a real node: writes are answered, the mode is reported,
//! and acknowledged writes survive a kill -9 (a process crash leaves the page cache, so
//! OnlyWrite and FlushPerSecond keep them too).

use redis::Commands;
use strata_tests::{NodeSettings, TestNode};

fn write_kill_restart_check(settings: NodeSettings, expected_mode: &str) -> TestNode {
    let mut node = TestNode::start(settings);
    let mut client = node.client();
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut client).unwrap();
    assert!(info.contains(&format!("wal_flush:{expected_mode}")), "{info}");
    for index in 0..500 {
        let _: () = client.set(format!("key:{index}"), index).unwrap();
    }
    let counter: i64 = client.incr("counter", 7).unwrap();
    assert_eq!(counter, 7);
    drop(client);
    node.kill();
    node.restart();
    let mut client = node.client();
    for index in 0..500 {
        let value: i64 = client.get(format!("key:{index}")).unwrap();
        assert_eq!(value, index);
    }
    let counter: i64 = client.get("counter").unwrap();
    assert_eq!(counter, 7);
    node
}

#[test]
fn the_epoll_driver_serves_and_recovers() {
    let settings = NodeSettings { io_driver: "epoll", ..NodeSettings::default() };
    let node = write_kill_restart_check(settings, "FlushAtOnce");
    assert!(node.log().contains("epoll driver"), "{}", node.log());
    assert!(!node.log().contains("io_uring driver"), "{}", node.log());
}

#[test]
fn only_write_mode_answers_after_write_and_keeps_data_over_a_process_crash() {
    let settings = NodeSettings { wal_flush: "OnlyWrite", ..NodeSettings::default() };
    write_kill_restart_check(settings, "OnlyWrite");
}

#[test]
fn flush_per_second_mode_answers_after_write_and_keeps_data_over_a_process_crash() {
    let settings = NodeSettings { wal_flush: "FlushPerSecond", ..NodeSettings::default() };
    write_kill_restart_check(settings, "FlushPerSecond");
}

/// Whether `dir` is on ext4 or XFS, read with `stat -f` (not with the node's own check).
fn filesystem_flushes_the_device(dir: &std::path::Path) -> bool {
    let output = std::process::Command::new("stat")
        .args(["-f", "-c", "%t"])
        .arg(dir)
        .output()
        .expect("stat -f");
    let filesystem = String::from_utf8_lossy(&output.stdout).trim().to_string();
    filesystem == "ef53" || filesystem == "58465342"
}

/// The `name:value` counter of an INFO text.
fn info_counter(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} missing from {info}"))
        .trim()
        .parse()
        .unwrap()
}

/// FlushAtOnce on ext4 or XFS: many writers over 8 partitions of one shard cost fewer
/// fdatasyncs than partition syncs, the partitions sharing them. With `shared_sync = false`
/// every append is O_DSYNC and no fdatasync runs. Acknowledged writes survive a kill -9 both
/// ways.
#[test]
fn the_partitions_of_a_shard_share_their_fdatasyncs() {
    const WRITERS: usize = 16;
    const WRITES: usize = 100;
    for shared in [true, false] {
        let wal = format!("shared_sync = {shared}");
        let mut node = TestNode::start(NodeSettings { shards: 1, wal, ..NodeSettings::default() });
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let mut client = node.client();
                std::thread::spawn(move || {
                    for index in 0..WRITES {
                        let _: () = client.set(format!("w{writer}:{index}"), index).unwrap();
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|writer| writer.join().unwrap());
        let mut client = node.client();
        let info: String = redis::cmd("INFO").arg("persistence").query(&mut client).unwrap();
        let syncs = info_counter(&info, "wal_syncs");
        let fdatasyncs = info_counter(&info, "wal_fdatasyncs");
        assert!(syncs >= 8, "{info}");
        assert_eq!(info_counter(&info, "wal_failed_partitions"), 0, "{info}");
        assert!(info.contains("aof_last_write_status:ok\r\n"), "{info}");
        if shared && filesystem_flushes_the_device(&node.data_dir()) {
            assert!(fdatasyncs > 0 && fdatasyncs < syncs, "shared: {info}");
        } else {
            assert_eq!(fdatasyncs, 0, "O_DSYNC appends: {info}");
        }
        drop(client);
        node.kill();
        node.restart();
        let mut client = node.client();
        for writer in 0..WRITERS {
            for index in 0..WRITES {
                let value: usize = client.get(format!("w{writer}:{index}")).unwrap();
                assert_eq!(value, index);
            }
        }
    }
}
