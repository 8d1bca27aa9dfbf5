//! The epoll fallback driver and the durability modes other than FlushAtOnce, each on a real
//! node: writes are answered, the mode is reported, and acknowledged writes survive a kill -9
//! (a process crash leaves the page cache, so OnlyWrite and FlushPerSecond keep them too).

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
