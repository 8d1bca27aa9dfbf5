//! Replication between real node processes: reads on every replica, refused writes on
//! replicas, a follower killed and brought back, a leader killed and a follower promoted, a
//! stopped learner, and garbage on the peer port.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Commands;
use strata_tests::admin::{role_body, set_role, wait_until};
use strata_tests::data::{assert_holds, write_numbered};
use strata_tests::peer::crc32c;
use strata_tests::{NodeSettings, TestNode};

fn status_on(leader: &TestNode, name: &str) -> String {
    let reply = leader.admin("GET", &format!("/admin/node/{name}"), None);
    reply.json["node"]["status"].as_str().unwrap_or("").to_string()
}

/// Whether `replica` comes to hold every write of `expected` within a minute (a learner
/// follows asynchronously, partition by partition).
fn converges(replica: &TestNode, expected: &BTreeMap<String, String>) -> bool {
    let mut client = replica.client();
    wait_until(Duration::from_secs(60), || {
        expected.iter().all(|(key, value)| {
            let found: Option<String> = client.get(key).unwrap_or(None);
            found.as_deref() == Some(value.as_str())
        })
    })
}

/// Waits until the leader reports no lag for its only replica, then checks that the replica
/// holds every write of `expected`. Until it has caught up, a replica's reads may be stale
/// (committed, but old).
fn assert_caught_up(
    leader: &TestNode,
    replica: &TestNode,
    expected: &BTreeMap<String, String>,
    what: &str,
) {
    let caught_up = wait_until(Duration::from_secs(20), || {
        let listed = leader.admin("GET", "/admin/nodes", None);
        listed.json["nodes"][1]["lag"] == "0"
    });
    assert!(caught_up, "{what}: the lag never dropped to zero");
    assert_holds(replica, expected, what);
}

/// Writes `key:<n>` = `<n>` on the leader until stopped, remembering every acknowledged write.
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeMap<String, String>>>,
    slowest: Arc<Mutex<Duration>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        let (flag, record, worst) =
            (Arc::clone(&stop), Arc::clone(&acknowledged), Arc::clone(&slowest));
        let thread = std::thread::spawn(move || {
            let Ok(mut client) = strata_tests::try_connect(port) else { return };
            for index in 0..200_000u64 {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let key = format!("key:{index}");
                let started = Instant::now();
                let result: redis::RedisResult<()> = client.set(&key, index.to_string());
                if result.is_err() {
                    return;
                }
                let elapsed = started.elapsed();
                let mut worst = worst.lock().unwrap();
                *worst = (*worst).max(elapsed);
                drop(worst);
                record.lock().unwrap().insert(key, index.to_string());
            }
        });
        Writer { stop, acknowledged, slowest, thread: Some(thread) }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Waits until `more` further writes were acknowledged (bounded).
    fn wait_for(&self, more: usize, timeout: Duration) -> bool {
        let target = self.count() + more;
        wait_until(timeout, || self.count() >= target)
    }

    fn finish(mut self) -> (BTreeMap<String, String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        let slowest = *self.slowest.lock().unwrap();
        (acknowledged, slowest)
    }
}

#[test]
fn writes_on_the_leader_are_read_on_every_replica() {
    let leader = TestNode::start(NodeSettings::cluster(2));
    set_role(&leader, "leader", "boss", None);
    let mut client = leader.client();
    let mut expected = BTreeMap::new();
    // Before any replica joins: they get these through a snapshot.
    write_numbered(&mut client, "early", 300, &mut expected);
    let follower_one = TestNode::start(NodeSettings::cluster(1));
    let follower_two = TestNode::start(NodeSettings::cluster(2));
    let learner = TestNode::start(NodeSettings::cluster(1));
    set_role(&follower_one, "follower", "f1", Some(&leader));
    set_role(&follower_two, "follower", "f2", Some(&leader));
    set_role(&learner, "learner", "l1", Some(&leader));
    // After they joined: streamed frames, every kind of record.
    for index in 0..300 {
        let _: () = client.set(format!("late:{index}"), "x").unwrap();
        let _: i64 = client.incr(format!("late:{index}:n"), index).unwrap();
        expected.insert(format!("late:{index}:n"), index.to_string());
    }
    let pairs: Vec<(String, String)> =
        (0..50).map(|index| (format!("pair:{index}"), format!("v{index}"))).collect();
    let _: () = client.mset(&pairs).unwrap();
    expected.extend(pairs.iter().cloned());
    let _: i64 =
        client.del((0..300).map(|index| format!("late:{index}")).collect::<Vec<_>>()).unwrap();
    let _: () = redis::cmd("SET")
        .arg("expiring")
        .arg("soon")
        .arg("EX")
        .arg(1000)
        .query(&mut client)
        .unwrap();
    expected.insert("expiring".into(), "soon".into());
    for replica in [&follower_one, &follower_two] {
        // A follower holds every acknowledged write at once.
        assert_holds(replica, &expected, "follower");
        let mut replica_client = replica.client();
        let gone: Option<String> = replica_client.get("late:7").unwrap();
        assert_eq!(gone, None, "deletes replicate");
        let ttl: i64 = replica_client.ttl("expiring").unwrap();
        assert!(ttl > 990 && ttl <= 1000, "expiry replicates: {ttl}");
        let refused: redis::RedisResult<()> = replica_client.set("x", "y");
        let error = refused.unwrap_err();
        assert_eq!(error.code(), Some("READONLY"), "{error}");
        let size: i64 = redis::cmd("DBSIZE").query(&mut replica_client).unwrap();
        let leader_size: i64 = redis::cmd("DBSIZE").query(&mut client).unwrap();
        assert_eq!(size, leader_size);
    }
    // A learner follows asynchronously: it converges.
    assert!(converges(&learner, &expected), "the learner converges");
    let mut learner_client = learner.client();
    let refused: redis::RedisResult<()> = learner_client.set("x", "y");
    assert_eq!(refused.unwrap_err().code(), Some("READONLY"));
    let info: String = redis::cmd("INFO").arg("replication").query(&mut learner_client).unwrap();
    assert!(info.contains("role:slave") && info.contains("master_link_status:up"), "{info}");
    let leader_info: String = redis::cmd("INFO").arg("replication").query(&mut client).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let info: String =
                redis::cmd("INFO").arg("replication").query(&mut client).unwrap_or_default();
            info.contains("connected_slaves:3")
                && info.contains("name=f1,kind=follower,state=online")
                && info.contains("name=l1,kind=learner")
        }),
        "{leader_info}"
    );
    // Each replica shard streams the partitions of one leader shard over one connection: two
    // leader shards make two connections per replica, whatever its own shard count, plus its
    // heartbeat connection (one per partition would be 8 each).
    let connected = wait_until(Duration::from_secs(10), || connections_to(leader.peer_port) == 9);
    assert!(connected, "{} connections to the peer port", connections_to(leader.peer_port));
    // WAITAOF: every earlier write is already durable here and on both followers.
    assert!(wait_until(Duration::from_secs(5), || {
        let counts: Vec<i64> =
            redis::cmd("WAITAOF").arg(1).arg(2).arg(0).query(&mut client).unwrap();
        counts == [1, 2]
    }));
    let refused: redis::RedisResult<Vec<i64>> =
        redis::cmd("WAITAOF").arg(1).arg(0).arg(0).query(&mut learner_client);
    assert!(refused.is_err());
    // The comparison benchmark's client: SETs, each batch followed by WAITAOF.
    let (ok, stdout, stderr) = strata_tests::run_tool(
        strata_tests::strata_binary().to_str().unwrap(),
        &[
            "bench",
            "--port",
            &leader.port.to_string(),
            "--connections",
            "4",
            "--pipeline",
            "4",
            "--requests",
            "400",
            "--after-batch",
            "WAITAOF 1 2 0",
            "--json",
            "--quiet",
        ],
    );
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((report["requests"].as_u64(), report["errors"].as_u64()), (Some(400), Some(0)));
}

#[test]
fn a_killed_follower_times_out_then_catches_up() {
    let leader = TestNode::start(NodeSettings::cluster(2));
    set_role(&leader, "leader", "boss", None);
    let mut follower = TestNode::start(NodeSettings::cluster(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    let writer = Writer::start(leader.port);
    assert!(writer.wait_for(200, Duration::from_secs(30)), "writes flow with the follower");
    follower.kill();
    // Writes stall at most about the heartbeat timeout, then go on without it.
    assert!(wait_until(Duration::from_secs(20), || status_on(&leader, "f1") == "timeout"));
    assert!(writer.wait_for(500, Duration::from_secs(30)), "writes go on without the follower");
    follower.restart();
    set_role(&follower, "follower", "f1", Some(&leader));
    assert!(writer.wait_for(200, Duration::from_secs(30)), "writes flow after it returned");
    let (acknowledged, slowest) = writer.finish();
    println!("{} writes acknowledged; slowest {slowest:?}", acknowledged.len());
    assert!(slowest < Duration::from_secs(15), "a write waited {slowest:?}");
    assert_eq!(status_on(&leader, "f1"), "alive");
    assert_caught_up(&leader, &follower, &acknowledged, "returned follower");
}

#[test]
fn a_hung_follower_holds_writes_at_most_the_timeout_then_returns() {
    let leader = TestNode::start(NodeSettings::cluster(2));
    set_role(&leader, "leader", "boss", None);
    let follower = TestNode::start(NodeSettings::cluster(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    let writer = Writer::start(leader.port);
    assert!(writer.wait_for(200, Duration::from_secs(30)));
    // A hung node keeps its connections open: only the heartbeat timeout (2 s) frees writes.
    let pid = follower.pid().expect("running") as libc::pid_t;
    // SAFETY: signals to a child process of this test.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    assert!(wait_until(Duration::from_secs(20), || status_on(&leader, "f1") == "timeout"));
    assert!(writer.wait_for(300, Duration::from_secs(30)), "writes go on without it");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(wait_until(Duration::from_secs(20), || status_on(&leader, "f1") == "alive"));
    assert!(writer.wait_for(300, Duration::from_secs(30)), "writes flow after it returned");
    let (acknowledged, slowest) = writer.finish();
    println!("{} writes; slowest {slowest:?}", acknowledged.len());
    assert!(slowest < Duration::from_secs(10), "a write waited {slowest:?}");
    assert_caught_up(&leader, &follower, &acknowledged, "follower back from SIGSTOP");
}

#[test]
fn a_follower_back_after_a_short_absence_catches_up_without_a_snapshot() {
    let leader = TestNode::start(NodeSettings::cluster(2));
    set_role(&leader, "leader", "boss", None);
    let mut follower = TestNode::start(NodeSettings::cluster(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    let mut client = leader.client();
    let mut expected = BTreeMap::new();
    write_numbered(&mut client, "before", 200, &mut expected);
    follower.kill();
    write_numbered(&mut client, "during", 200, &mut expected);
    let snapshots_before = leader.log().matches("snapshot sent").count();
    follower.restart();
    set_role(&follower, "follower", "f1", Some(&leader));
    assert_holds(&follower, &expected, "follower back");
    let _: () = client.set("after", "return").unwrap();
    let value: Option<String> = follower.client().get("after").unwrap();
    assert_eq!(value.as_deref(), Some("return"));
    assert_eq!(
        leader.log().matches("snapshot sent").count(),
        snapshots_before,
        "the follower's log continued from the leader's recent frames"
    );
}

/// A follower away for longer than the leader's recent frames reach (8 MiB per partition)
/// catches up from the leader's segment files, read off the shard, with no snapshot; its role
/// change returns only once it has caught up, so reads right after it see every write.
#[test]
fn a_follower_far_behind_catches_up_from_the_leaders_log_files() {
    let one_partition = |shards| NodeSettings { partitions: 1, ..NodeSettings::cluster(shards) };
    let leader = TestNode::start(one_partition(1));
    set_role(&leader, "leader", "boss", None);
    let mut follower = TestNode::start(one_partition(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    let mut client = leader.client();
    let mut expected = BTreeMap::new();
    let _: () = client.set("before", "away").unwrap();
    expected.insert("before".to_string(), "away".to_string());
    follower.kill();
    // 12 MiB: beyond the recent frames, within what the log files may serve.
    let value = "v".repeat(4096);
    for index in 0..3_000 {
        let key = format!("during:{index}");
        let _: () = client.set(&key, &value).unwrap();
        expected.insert(key, value.clone());
    }
    let snapshots_before = leader.log().matches("snapshot sent").count();
    follower.restart();
    set_role(&follower, "follower", "f1", Some(&leader));
    let info: String = redis::cmd("INFO").arg("replication").query(&mut follower.client()).unwrap();
    assert!(info.contains("master_sync_in_progress:0\r\n"), "{info}");
    assert!(info.contains("caught_up_partitions:1\r\n"), "{info}");
    assert_holds(&follower, &expected, "follower far behind, as its role change returns");
    assert_caught_up(&leader, &follower, &expected, "follower far behind");
    assert!(leader.log().contains("replica resumes from the local log"), "{}", leader.log());
    assert_eq!(leader.log().matches("snapshot sent").count(), snapshots_before);
    let _: () = client.set("after", "return").unwrap();
    let found: Option<String> = follower.client().get("after").unwrap();
    assert_eq!(found.as_deref(), Some("return"));
}

#[test]
fn a_follower_restarted_after_a_snapshot_continues_without_another() {
    // A small window and small segments: the ~150 KB of log per partition the late follower
    // misses is more than the leader replays from its log files (half the window or two
    // segments), so it sends snapshots. The leader uploads once at start only, so the
    // follower finds nothing to bootstrap from in the archive.
    let storage = format!(
        "shared_dir = \"{}\"\nupload_interval = 600000",
        strata_tests::shared_dir().display()
    );
    let small_window = NodeSettings {
        segment_size: "64KB",
        storage,
        extra: "replica_window = \"64KB\"".into(),
        ..NodeSettings::cluster(1)
    };
    let leader = TestNode::start(small_window.clone());
    set_role(&leader, "leader", "boss", None);
    let mut client = leader.client();
    let mut expected = BTreeMap::new();
    for index in 0..2000 {
        let value = format!("{index:0600}");
        let _: () = client.set(format!("k:{index}"), &value).unwrap();
        expected.insert(format!("k:{index}"), value);
    }
    let mut follower = TestNode::start(small_window);
    set_role(&follower, "follower", "f1", Some(&leader));
    let snapshots = leader.log().matches("snapshot sent").count();
    assert!(snapshots > 0, "the follower joined late: it got snapshots");
    follower.kill();
    follower.restart();
    set_role(&follower, "follower", "f1", Some(&leader));
    assert_holds(&follower, &expected, "follower restarted");
    assert_eq!(
        leader.log().matches("snapshot sent").count(),
        snapshots,
        "the installed snapshot recorded its epoch, so the log continued"
    );
}

#[test]
fn a_promoted_follower_has_every_acknowledged_write() {
    let mut leader = TestNode::start(NodeSettings::cluster(2));
    set_role(&leader, "leader", "boss", None);
    let first = TestNode::start(NodeSettings::cluster(2));
    let second = TestNode::start(NodeSettings::cluster(1));
    set_role(&first, "follower", "first", Some(&leader));
    set_role(&second, "follower", "second", Some(&leader));
    let writer = Writer::start(leader.port);
    assert!(writer.wait_for(1000, Duration::from_secs(60)));
    leader.kill();
    let (acknowledged, _) = writer.finish();
    // The operator promotes a follower by hand and points the other at it.
    set_role(&first, "leader", "first", None);
    second.admin("POST", "/admin/node/current", Some(&role_body("admin", None, None))).assert_ok();
    set_role(&second, "follower", "second", Some(&first));
    assert_holds(&first, &acknowledged, "new leader");
    assert_holds(&second, &acknowledged, "remaining follower");
    let mut client = first.client();
    // Writes wait for a follower once it is in sync: until then it may still be catching up.
    let in_sync = wait_until(Duration::from_secs(20), || {
        let counts: Vec<i64> =
            redis::cmd("WAITAOF").arg(1).arg(1).arg(0).query(&mut client).unwrap_or_default();
        counts == [1, 1]
    });
    assert!(in_sync, "the remaining follower came in sync with the new leader");
    let _: () = client.set("after", "promotion").unwrap();
    let value: Option<String> = second.client().get("after").unwrap();
    assert_eq!(value.as_deref(), Some("promotion"));
    let listed = first.admin("GET", "/admin/nodes", None);
    assert_eq!(listed.json["nodes"][1]["name"], "second", "{}", listed.text);
}

/// A replica behind the promoted leader by frames the old leader cut catches up from them:
/// they are older than the new leader's epoch, but continue the replica's log.
#[test]
fn a_replica_behind_a_promoted_leader_catches_up_on_the_old_leaders_frames() {
    // With two members kept in sync, the follower may be promoted with nobody else to ask.
    let paired = || NodeSettings { min_insync_replicas: 2, ..NodeSettings::cluster(1) };
    let mut leader = TestNode::start(paired());
    set_role(&leader, "leader", "boss", None);
    let first = TestNode::start(paired());
    let mut learner = TestNode::start(paired());
    set_role(&first, "follower", "first", Some(&leader));
    set_role(&learner, "learner", "late", Some(&leader));
    let mut client = leader.client();
    let mut expected = BTreeMap::new();
    write_numbered(&mut client, "before", 100, &mut expected);
    assert!(converges(&learner, &expected), "the learner has the first writes");
    learner.kill();
    write_numbered(&mut client, "missed", 100, &mut expected);
    leader.kill();
    set_role(&first, "leader", "first", None);
    learner.restart();
    set_role(&learner, "learner", "late", Some(&first));
    let info: String = redis::cmd("INFO").arg("replication").query(&mut learner.client()).unwrap();
    assert!(info.contains("caught_up_partitions:8\r\n"), "{info}\n{}", learner.log());
    assert_holds(&learner, &expected, "learner behind the promoted leader");
    assert!(!learner.log().contains("after one of epoch"), "{}", learner.log());
    assert!(first.log().contains("replica resumes from the local log"), "{}", first.log());
}

#[test]
fn leader_and_follower_swap_roles_by_hand() {
    let first = TestNode::start(NodeSettings::cluster(2));
    let second = TestNode::start(NodeSettings::cluster(1));
    set_role(&first, "leader", "first", None);
    set_role(&second, "follower", "second", Some(&first));
    let mut expected = BTreeMap::new();
    let mut client = first.client();
    write_numbered(&mut client, "a", 100, &mut expected);
    // Infinity's test_cluster_leader_follower_change: leader -> admin, follower -> leader,
    // old leader -> follower of the new one.
    first.admin("POST", "/admin/node/current", Some(&role_body("admin", None, None))).assert_ok();
    set_role(&second, "leader", "second", None);
    let mut client = second.client();
    write_numbered(&mut client, "b", 100, &mut expected);
    set_role(&first, "follower", "first", Some(&second));
    assert_holds(&first, &expected, "old leader, now follower");
    assert_holds(&second, &expected, "new leader");
    let _: () = client.set("c", "after the swap").unwrap();
    let value: Option<String> = first.client().get("c").unwrap();
    assert_eq!(value.as_deref(), Some("after the swap"));
    let refused: redis::RedisResult<()> = first.client().set("x", "y");
    assert_eq!(refused.unwrap_err().code(), Some("READONLY"));
}

#[test]
fn a_follower_stopped_with_sigterm_leaves_the_cluster() {
    let leader = TestNode::start(NodeSettings::cluster(1));
    set_role(&leader, "leader", "boss", None);
    let mut follower = TestNode::start(NodeSettings::cluster(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    let pid = follower.pid().expect("running") as libc::pid_t;
    // SAFETY: a signal to a child process of this test.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = follower.wait_exit(Duration::from_secs(10)).expect("it stops");
    assert!(status.success(), "{status}");
    // It unregistered: gone from the leader's table at once, not timed out later.
    leader.admin("GET", "/admin/node/f1", None).assert_error(7019);
    let mut client = leader.client();
    let _: () = client.set("k", "v").unwrap();
}

#[test]
fn a_stopped_learner_never_holds_writes() {
    let leader =
        TestNode::start(NodeSettings { heartbeat_timeout: 60_000, ..NodeSettings::cluster(2) });
    set_role(&leader, "leader", "boss", None);
    let follower = TestNode::start(NodeSettings::cluster(1));
    let learner = TestNode::start(NodeSettings::cluster(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    set_role(&learner, "learner", "l1", Some(&leader));
    let pid = learner.pid().expect("running") as libc::pid_t;
    // SAFETY: signals to a child process of this test.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut client = leader.client();
    let started = Instant::now();
    let mut expected = BTreeMap::new();
    for index in 0..2000 {
        let value = "v".repeat(512);
        let _: () = client.set(format!("k{index}"), &value).unwrap();
        expected.insert(format!("k{index}"), value);
    }
    let elapsed = started.elapsed();
    assert_eq!(status_on(&leader, "l1"), "alive", "the learner was not timed out meanwhile");
    println!("2000 writes with the learner stopped: {elapsed:?}");
    assert_holds(&follower, &expected, "follower");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(converges(&learner, &expected), "the learner caught up after SIGCONT");
}

/// A replica whose streams keep ending where they started gets a snapshot on its fourth
/// subscription from the same place within 10 s: whatever in its tail failed, it starts
/// afresh.
#[test]
fn a_replica_that_keeps_subscribing_from_the_same_place_gets_a_snapshot() {
    let leader =
        TestNode::start(NodeSettings { heartbeat_timeout: 60_000, ..NodeSettings::cluster(1) });
    set_role(&leader, "leader", "boss", None);
    let learner = TestNode::start(NodeSettings::cluster(1));
    set_role(&learner, "learner", "l1", Some(&leader));
    let mut client = leader.client();
    let mut expected = BTreeMap::new();
    write_numbered(&mut client, "k", 50, &mut expected);
    let pid = learner.pid().expect("running") as libc::pid_t;
    // SAFETY: signals to a child process of this test.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Subscriptions in the stopped learner's name, each from an empty log, each closed as
    // soon as its stream starts.
    let mut modes = Vec::new();
    for _ in 0..4 {
        let mut stream = authenticated(&leader);
        stream.write_all(&stream_envelope(3, 0, &subscribe_payload(&[0], "l1"))).unwrap();
        let start = read_envelope(&mut stream).expect("a stream start");
        assert_eq!(start.0, 4, "a StreamStart");
        modes.push(start.1[0]);
    }
    // The learner's own subscription when it joined, from its empty log, counts as the first;
    // after the snapshot the count starts again.
    assert_eq!(modes, [1, 1, 2, 1], "tails, a snapshot (mode 2) on the fourth, a tail");
    assert!(leader.log().contains("replica keeps subscribing from the same place"));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(converges(&learner, &expected), "the learner follows again");
}

#[test]
fn a_learner_beyond_its_window_is_cut_off_and_catches_up() {
    // One partition: one stream, whose socket buffers the writes below overflow.
    let leader = TestNode::start(NodeSettings {
        heartbeat_timeout: 60_000,
        partitions: 1,
        extra: "replica_window = \"64KB\"".into(),
        ..NodeSettings::cluster(1)
    });
    set_role(&leader, "leader", "boss", None);
    let learner = TestNode::start(NodeSettings { partitions: 1, ..NodeSettings::cluster(1) });
    set_role(&learner, "learner", "l1", Some(&leader));
    let pid = learner.pid().expect("running") as libc::pid_t;
    // SAFETY: signals to a child process of this test.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Far more than the socket buffers and the 64 KB window hold.
    let mut client = leader.client();
    let value = "v".repeat(4096);
    let mut expected = BTreeMap::new();
    for round in 0..75 {
        let mut pipe = redis::pipe();
        for index in 0..100 {
            let key = format!("k:{round}:{index}");
            pipe.set(&key, &value).ignore();
            expected.insert(key, value.clone());
        }
        let _: () = pipe.query(&mut client).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(10), || leader.log().contains("cutting the link")),
        "the leader cut the stopped learner off"
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(converges(&learner, &expected), "the learner caught up after it was cut off");
}

#[test]
fn garbage_on_the_peer_port_is_refused_without_harm() {
    let leader = TestNode::start(NodeSettings::cluster(2));
    set_role(&leader, "leader", "boss", None);
    let follower = TestNode::start(NodeSettings::cluster(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    let seed = strata_tests::test_seed("garbage_on_the_peer_port");
    let mut state = seed | 1;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let envelope = |kind: u8, payload: &[u8], checksum: Option<u32>| {
        let mut bytes = b"STRP".to_vec();
        bytes.extend_from_slice(&[kind, 0, 0, 0]);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = checksum.unwrap_or_else(|| crc32c(payload));
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    };
    let mut inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        envelope(1, b"{not json", None),
        envelope(1, br#"{"type":"register","name":"x"}"#, None),
        envelope(1, IMPOSTOR.as_bytes(), None),
        envelope(3, b"short", None),
        envelope(3, &subscribe_payload(&[0], "nobody"), None),
        envelope(3, &subscribe_payload(&[99], "f1"), None),
        // Partitions of two different leader shards on one connection.
        envelope(3, &subscribe_payload(&[0, 1], "f1"), None),
        // Partitions out of order, and none at all.
        envelope(3, &subscribe_payload(&[2, 0], "f1"), None),
        envelope(3, &subscribe_payload(&[], "f1"), None),
        envelope(10, &[0u8; 100], None),
        envelope(14, &[1, 2, 3], Some(7)),
        envelope(1, &[], None)[..10].to_vec(),
        b"STRP\xff\0\0\0".to_vec(),
    ];
    for _ in 0..20 {
        let length = (random() % 200) as usize;
        inputs.push((0..length).map(|_| random() as u8).collect());
    }
    // Each input once where the handshake should be, once after a good handshake.
    for input in &inputs {
        let unauthenticated = TcpStream::connect(("127.0.0.1", leader.peer_port)).unwrap();
        for mut stream in [unauthenticated, authenticated(&leader)] {
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = stream.write_all(input);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut answer = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
        }
    }
    // An acknowledgement for a partition the connection does not stream closes it.
    let mut stream = authenticated(&leader);
    stream.write_all(&envelope(3, &subscribe_payload(&[0], "f1"), None)).unwrap();
    let start = read_envelope(&mut stream).map(|(kind, _)| kind);
    assert_eq!(start, Some(4), "the leader started the stream");
    stream.write_all(&stream_envelope(14, 1, &[0u8; 16])).unwrap();
    let mut answer = Vec::new();
    let closed = std::io::Read::read_to_end(&mut stream, &mut answer);
    assert!(closed.is_ok(), "the leader closed the connection: {closed:?}");
    // The impostor did not replace the real follower, and replication still works.
    assert_eq!(status_on(&leader, "f1"), "alive");
    let mut client = leader.client();
    let _: () = client.set("still", "fine").unwrap();
    let value: Option<String> = follower.client().get("still").unwrap();
    assert_eq!(value.as_deref(), Some("fine"));
}

/// What the fake leader sends on partition 0's stream after a valid start, one per connection.
fn bad_stream_inputs() -> Vec<Vec<u8>> {
    let mut wrong_partition = vec![0u8; 72];
    wrong_partition[0..4].copy_from_slice(b"STRF");
    wrong_partition[4..6].copy_from_slice(&1u16.to_le_bytes());
    wrong_partition[8..12].copy_from_slice(&5u32.to_le_bytes());
    wrong_partition[12..16].copy_from_slice(&8u32.to_le_bytes());
    wrong_partition[16..24].copy_from_slice(&1u64.to_le_bytes());
    wrong_partition[24..32].copy_from_slice(&1u64.to_le_bytes());
    wrong_partition[32..40].copy_from_slice(&1u64.to_le_bytes());
    let mut covered = wrong_partition[..56].to_vec();
    covered.extend_from_slice(&wrong_partition[60..]);
    let checksum = crc32c(&covered);
    wrong_partition[56..60].copy_from_slice(&checksum.to_le_bytes());
    let mut bad_checksum = stream_envelope(10, 0, &frames_of(1, &[7u8; 80]));
    bad_checksum[12] ^= 0xff;
    let mut control_with_partition = stream_envelope(2, 0, b"{}");
    control_with_partition[6] = 1;
    let commit = |lsn: u64, epoch: u64| {
        let mut payload = lsn.to_le_bytes().to_vec();
        payload.extend_from_slice(&epoch.to_le_bytes());
        payload
    };
    vec![
        stream_envelope(10, 0, &frames_of(1, b"not a frame at all, just bytes of garbage ....")),
        stream_envelope(10, 0, &frames_of(1, &wrong_partition)),
        bad_checksum,
        stream_envelope(11, 0, &[1, 2, 3]),
        // A commit for a partition this connection does not stream.
        stream_envelope(11, 5, &commit(1, 1)),
        control_with_partition,
        // Frames and a commit of another epoch than the stream's.
        stream_envelope(10, 0, &frames_of(2, &[0u8; 72])),
        stream_envelope(11, 0, &commit(0, 9)),
        // Frames shorter than the epoch they must name.
        stream_envelope(10, 0, &[1, 2, 3]),
    ]
}

/// A message of `partition`'s stream (or of none, with 0).
fn stream_envelope(kind: u8, partition: u16, payload: &[u8]) -> Vec<u8> {
    let mut bytes = b"STRP".to_vec();
    bytes.extend_from_slice(&[kind, 0]);
    bytes.extend_from_slice(&partition.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads one envelope (kind, payload) from `stream`.
fn read_envelope(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 16];
    std::io::Read::read_exact(stream, &mut header).ok()?;
    let length = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
    let mut payload = vec![0u8; length];
    std::io::Read::read_exact(stream, &mut payload).ok()?;
    Some((header[4], payload))
}

/// A leader impostor with one shard: answers control requests with success, starts every
/// stream of a subscription as a tail, and when partition 0 is among them sends one bad input
/// per connection. Records, per bad input, whether the follower closed that connection.
fn fake_leader(listener: TcpListener, outcomes: Arc<Mutex<Vec<bool>>>) {
    let bad = Arc::new(bad_stream_inputs());
    let sent = Arc::new(Mutex::new(0usize));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        let (bad, sent, outcomes) = (Arc::clone(&bad), Arc::clone(&sent), Arc::clone(&outcomes));
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let secret = strata_tests::test_cluster_secret();
            if strata_tests::peer::accept(&mut stream, Some(&secret)).is_err() {
                return;
            }
            while let Some((kind, payload)) = read_envelope(&mut stream) {
                if kind == 1 {
                    let answer = concat!(
                        r#"{"error_code":0,"leader_name":"fake","heartbeat_interval_ms":200,"#,
                        r#""shards":1}"#
                    );
                    let _ = stream.write_all(&stream_envelope(2, 0, answer.as_bytes()));
                    continue;
                }
                let partitions = subscribed_partitions(&payload);
                for partition in &partitions {
                    let envelope = stream_envelope(4, *partition as u16, &tail_start());
                    let _ = stream.write_all(&envelope);
                }
                let index = if partitions.contains(&0) {
                    let mut sent = sent.lock().unwrap();
                    *sent += 1;
                    Some(*sent - 1)
                } else {
                    None
                };
                if let Some(index) = index.filter(|index| *index < bad.len()) {
                    let _ = stream.write_all(&bad[index]);
                    // The follower must close the stream: read until it does (or time out).
                    let mut rest = Vec::new();
                    let closed = std::io::Read::read_to_end(&mut stream, &mut rest).is_ok();
                    outcomes.lock().unwrap().push(closed);
                    return;
                }
                // A good stream: keep it open, drain acknowledgements.
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut stream, &mut sink);
                return;
            }
        });
    }
}

#[test]
fn a_follower_refuses_bad_frames_from_its_leader() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&outcomes);
    std::thread::spawn(move || fake_leader(listener, recorded));
    let follower = TestNode::start(NodeSettings { partitions: 2, ..NodeSettings::cluster(1) });
    let body = role_body("follower", Some("f1"), Some(&address));
    follower.admin("POST", "/admin/node/current", Some(&body)).assert_ok();
    let expected = bad_stream_inputs().len();
    let complete =
        wait_until(Duration::from_secs(30), || outcomes.lock().unwrap().len() == expected);
    assert!(complete, "outcomes {:?}; follower log:\n{}", outcomes.lock().unwrap(), follower.log());
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![true; expected],
        "every bad input closed the stream"
    );
    let mut client = follower.client();
    let size: i64 = redis::cmd("DBSIZE").query(&mut client).unwrap();
    assert_eq!(size, 0, "nothing was applied");
    assert!(follower.log().contains("replication stream ended"), "the follower logged it");
}

/// A connection to `node`'s peer port that proved the test's cluster secret.
fn authenticated(node: &TestNode) -> TcpStream {
    let secret = strata_tests::test_cluster_secret();
    strata_tests::peer::connect(node.peer_port, Some(&secret)).expect("the handshake succeeds")
}

/// A registration under the name of an alive follower.
const IMPOSTOR: &str = concat!(
    r#"{"type":"register","name":"f1","role":"follower","address":"1.2.3.4:5","#,
    r#""version":"0.2.0","partitions":8}"#
);

/// Established TCP connections to `port` on this machine, from /proc/net/tcp and tcp6.
fn connections_to(port: u16) -> usize {
    let remote_port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| {
            let established = |line: &&str| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[2].ends_with(&remote_port) && fields[3] == "01"
            };
            table.lines().skip(1).filter(established).count()
        })
        .sum()
}

/// A follower's subscription to `partitions`, each with an empty log (format 2, as
/// `docs/peer-protocol.md` writes it: kind, format, count, per partition its last LSN and
/// epoch, snapshot floor, fence and an empty epoch history, then the name and address).
fn subscribe_payload(partitions: &[u32], name: &str) -> Vec<u8> {
    let mut payload = vec![1u8, 2];
    payload.extend_from_slice(&(partitions.len() as u16).to_le_bytes());
    for partition in partitions {
        payload.extend_from_slice(&partition.to_le_bytes());
        for _ in 0..4 {
            payload.extend_from_slice(&0u64.to_le_bytes());
        }
        payload.extend_from_slice(&0u16.to_le_bytes());
    }
    payload.extend_from_slice(&(name.len() as u16).to_le_bytes());
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(b"127.0.0.1:1");
    payload
}

/// The partitions of a format-2 subscription, in order.
fn subscribed_partitions(payload: &[u8]) -> Vec<u32> {
    let count = usize::from(u16::from_le_bytes([payload[2], payload[3]]));
    let mut offset = 4;
    let mut partitions = Vec::new();
    for _ in 0..count {
        partitions.push(u32::from_le_bytes(payload[offset..offset + 4].try_into().unwrap()));
        let entries = usize::from(u16::from_le_bytes([payload[offset + 36], payload[offset + 37]]));
        offset += 38 + 16 * entries;
    }
    partitions
}

/// A stream start of a tail from LSN 1 at epoch 1, with an in-sync set of the fake leader
/// alone.
fn tail_start() -> Vec<u8> {
    let mut start = vec![1u8];
    for value in [1u64, 1, 0, 1, 0] {
        start.extend_from_slice(&value.to_le_bytes());
    }
    start.extend_from_slice(&0u16.to_le_bytes());
    start.extend_from_slice(&1u16.to_le_bytes());
    for text in ["fake", "127.0.0.1:2"] {
        start.extend_from_slice(&(text.len() as u16).to_le_bytes());
        start.extend_from_slice(text.as_bytes());
    }
    start
}

/// A Frames payload: the stream's epoch (1), then `frames`.
fn frames_of(epoch: u64, frames: &[u8]) -> Vec<u8> {
    let mut payload = epoch.to_le_bytes().to_vec();
    payload.extend_from_slice(frames);
    payload
}
