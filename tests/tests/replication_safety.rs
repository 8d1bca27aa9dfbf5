//! Replication safety between real node processes: what a failover may and may not lose.
//!
//! Each test tells one story where an acknowledged write could be lost or an unacknowledged one
//! served: a follower dropped while paused and then promoted, a paused leader that comes back
//! after a newer one took over, a divergent tail hidden behind a segment boundary, a follower
//! whose disk fills, a follower of a new leader whose log the archive would replace, a leader
//! alone below `min_insync_replicas`, a replica serving a new leader's records before they
//! commit, and heartbeats timed by a wall clock that jumps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Commands;
use strata_tests::admin::{role_body, set_role, wait_until, AdminReply};
use strata_tests::data::{assert_holds, write_numbered};
use strata_tests::disk::SmallDisk;
use strata_tests::raw::{self, Reply};
use strata_tests::{NodeSettings, TestNode};

/// The text a leader with too few members in sync refuses writes with (Redis's).
const NO_REPLICAS: &str = "NOREPLICAS Not enough good replicas to write.";

/// Asks `node` to lead as `name`; `force` overrides the promotion guard.
fn promote(node: &TestNode, name: &str, force: bool) -> AdminReply {
    let mut body = serde_json::json!({ "role": "leader", "name": name });
    if force {
        body["force"] = serde_json::Value::Bool(true);
    }
    node.admin("POST", "/admin/node/current", Some(&body.to_string()))
}

fn to_admin(node: &TestNode) {
    node.admin("POST", "/admin/node/current", Some(&role_body("admin", None, None))).assert_ok();
}

/// Points a replica at another leader: through admin mode, since setting the role a node
/// already has changes nothing.
fn repoint(node: &TestNode, role: &str, name: &str, leader: &TestNode) {
    to_admin(node);
    set_role(node, role, name, Some(leader));
}

/// The role `node` reports for itself.
fn role_of(node: &TestNode) -> String {
    let reply = node.admin("GET", "/admin/node/current", None);
    reply.json["node"]["role"].as_str().unwrap_or("").to_string()
}

fn status_on(leader: &TestNode, name: &str) -> String {
    let reply = leader.admin("GET", &format!("/admin/node/{name}"), None);
    reply.json["node"]["status"].as_str().unwrap_or("").to_string()
}

/// The records `name` has yet to acknowledge, as the leader lists it (None when unknown).
fn lag_on(leader: &TestNode, name: &str) -> Option<u64> {
    let listed = leader.admin("GET", "/admin/nodes", None);
    let nodes = listed.json["nodes"].as_array()?;
    let row = nodes.iter().find(|row| row["name"] == name)?;
    row["lag"].as_str()?.parse().ok()
}

fn signal(node: &TestNode, signal: libc::c_int) {
    let pid = node.pid().expect("running") as libc::pid_t;
    // SAFETY: a signal to a child process of this test.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "signal {signal} to {pid}");
}

/// SIGSTOP: the process hangs with its connections open, as a node stalled by the machine.
fn pause(node: &TestNode) {
    signal(node, libc::SIGSTOP);
}

fn resume(node: &TestNode) {
    signal(node, libc::SIGCONT);
}

/// A connection whose reads give up after `timeout`.
fn client_with_timeout(node: &TestNode, timeout: Duration) -> redis::Connection {
    let client = node.client();
    client.set_read_timeout(Some(timeout)).unwrap();
    client
}

/// Whether a SET of `key` on `node` succeeds within `timeout`, retried while the leader still
/// refuses writes (its followers not in sync yet).
fn becomes_writable(node: &TestNode, key: &str, timeout: Duration) -> bool {
    wait_until(timeout, || {
        let Ok(mut client) = strata_tests::try_connect(node.port) else { return false };
        let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
        client.set::<_, _, ()>(key, "probe").is_ok()
    })
}

/// `text` without its ANSI colour sequences (ESC, `[`, parameters, a final letter).
fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character == '\u{1b}' {
            characters.by_ref().find(char::is_ascii_alphabetic);
        } else {
            plain.push(character);
        }
    }
    plain
}

/// The number after `field=` on the first log line that contains `message`.
fn logged_number(log: &str, message: &str, field: &str) -> Option<u64> {
    let log = without_colours(log);
    let line = log.lines().find(|line| line.contains(message))?;
    let start = line.find(&format!("{field}="))? + field.len() + 1;
    let digits: String = line[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A field of INFO's replication section on `node`.
fn replication_info(node: &TestNode, field: &str) -> Option<String> {
    let mut client = node.client();
    let info: String = redis::cmd("INFO").arg("replication").query(&mut client).ok()?;
    strata_tests::info_field(&info, field).map(|value| value.trim().to_string())
}

/// A leader `boss` with followers `a` and `b`, after `a` was paused past the heartbeat
/// timeout while writes went on (acknowledged by `boss` and `b` alone), then `boss` was killed
/// and `a` resumed.
struct DroppedFollower {
    a: TestNode,
    b: TestNode,
    /// Every write acknowledged to the client.
    acknowledged: BTreeMap<String, String>,
}

fn cluster_with_a_follower_dropped_while_paused() -> DroppedFollower {
    let quick = || NodeSettings { heartbeat_timeout: 1000, ..NodeSettings::cluster(1) };
    let mut leader = TestNode::start(quick());
    set_role(&leader, "leader", "boss", None);
    let a = TestNode::start(quick());
    let b = TestNode::start(quick());
    set_role(&a, "follower", "a", Some(&leader));
    set_role(&b, "follower", "b", Some(&leader));
    let mut client = leader.client();
    let mut acknowledged = BTreeMap::new();
    write_numbered(&mut client, "before", 100, &mut acknowledged);
    pause(&a);
    // The first writes wait for `a` until the leader drops it; then they go on without it.
    let started = Instant::now();
    write_numbered(&mut client, "while-paused", 200, &mut acknowledged);
    println!("200 writes with `a` paused took {:?}", started.elapsed());
    let dropped = wait_until(Duration::from_secs(10), || status_on(&leader, "a") == "timeout");
    assert!(dropped, "the leader timed the paused follower out:\n{}", leader.log());
    write_numbered(&mut client, "after-drop", 100, &mut acknowledged);
    // The leader dies before `a` wakes up: nobody tells `a` it was dropped.
    leader.kill();
    resume(&a);
    DroppedFollower { a, b, acknowledged }
}

/// A follower paused (SIGSTOP) past the heartbeat timeout is dropped from the in-sync sets
/// while the leader goes on acknowledging writes with the other follower. When it wakes up
/// after the leader died, its own records still show it in sync; promoting it would lose
/// every write acknowledged without it. The promotion asks the other members, finds a newer
/// set without it, and refuses (7031, naming the partition and that set); the member of that
/// set is promoted instead and holds every acknowledged write.
#[test]
fn a_follower_dropped_while_paused_is_not_promoted() {
    let DroppedFollower { a, b, acknowledged } = cluster_with_a_follower_dropped_while_paused();
    let refused = promote(&a, "a", false);
    refused.assert_error(7031);
    let message = refused.message();
    assert!(message.starts_with("Promotion refused:"), "{message}");
    assert!(message.contains("is not in the in-sync set of partition"), "{message}");
    assert!(message.contains("{b, boss} (leader boss at epoch "), "{message}");
    assert!(message.contains("\"force\": true"), "{message}");
    assert_eq!(role_of(&a), "follower", "a refusal changes nothing");
    promote(&b, "b", false).assert_ok();
    assert_eq!(role_of(&b), "leader");
    assert_holds(&b, &acknowledged, "the promoted member of the newest set");
    // The refused follower rejoins under the new leader and gets what it missed.
    repoint(&a, "follower", "a", &b);
    assert_holds(&a, &acknowledged, "the follower refused promotion, now following b");
    let mut client = b.client();
    let _: () = client.set("after-failover", "yes").unwrap();
    let found: Option<String> = a.client().get("after-failover").unwrap();
    assert_eq!(found.as_deref(), Some("yes"));
}

/// The same dropped follower, promoted with `"force": true`: the operator overrides the guard
/// and accepts the loss. The node leads and takes writes, and its log warns how many
/// acknowledged records the promotion may lose (those the other member holds beyond it).
#[test]
fn forcing_the_promotion_of_a_dropped_follower_leads_and_warns_of_the_loss() {
    let DroppedFollower { a, b: _b, acknowledged } = cluster_with_a_follower_dropped_while_paused();
    promote(&a, "a", false).assert_error(7031);
    promote(&a, "a", true).assert_ok();
    assert_eq!(role_of(&a), "leader");
    let warning = "forced promotion: up to this many acknowledged records may be lost";
    let log = a.log();
    let behind = logged_number(&log, warning, "records_behind");
    assert!(behind.is_some_and(|records| records > 0), "the warning counts the loss:\n{log}");
    println!("forced promotion: records_behind={behind:?} of {} writes", acknowledged.len());
    let mut client = a.client();
    let _: () = client.set("after-force", "yes").unwrap();
    let missing = acknowledged.keys().filter(|key| key.starts_with("after-drop:")).filter(|key| {
        let found: Option<String> = client.get(*key).unwrap();
        found.is_none()
    });
    assert_eq!(missing.count(), 100, "what `a` lacked is lost, as the warning said");
}

/// What one write sent to a node answered, and whether the client gave up waiting.
#[derive(Debug)]
struct Outcome {
    key: String,
    answer: Result<(), String>,
    timed_out: bool,
}

/// Sends `stale:<n>` writes to a node one after the other, each on a connection whose reads
/// give up after 20 s, reconnecting after any error, until stopped.
struct StaleWriter {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    thread: Option<JoinHandle<()>>,
}

impl StaleWriter {
    fn start(port: u16) -> StaleWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (flag, record) = (Arc::clone(&stop), Arc::clone(&outcomes));
        let thread = std::thread::spawn(move || {
            let mut connection = None;
            for index in 0.. {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                if connection.is_none() {
                    connection = strata_tests::try_connect(port).ok();
                }
                let Some(client) = connection.as_mut() else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let key = format!("stale:{index}");
                let result: redis::RedisResult<()> = client.set(&key, "from the old leader");
                let timed_out = result.as_ref().is_err_and(redis::RedisError::is_timeout);
                if result.is_err() {
                    connection = None;
                }
                let answer = result.map_err(|error| error.to_string());
                record.lock().unwrap().push(Outcome { key, answer, timed_out });
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        StaleWriter { stop, outcomes, thread: Some(thread) }
    }

    fn count(&self) -> usize {
        self.outcomes.lock().unwrap().len()
    }

    fn finish(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }
}

/// A leader paused (SIGSTOP) long enough for the operator to promote a follower, but shorter
/// than the heartbeat timeout, wakes up believing it still leads with its old in-sync set.
/// Nothing it is sent now may be acknowledged: the promotion fenced both followers at a newer
/// epoch, so they refuse its streams, and with `min_insync_replicas` 2 it cannot shrink its
/// set to itself. It learns of the newer epoch from them and steps down to admin mode; every
/// write sent to it fails (or its connection closes), and the new leader and its follower hold
/// every write the new leader acknowledged and none the old one was sent.
#[test]
fn a_paused_leader_is_fenced_and_steps_down() {
    let patient = || NodeSettings {
        min_insync_replicas: 2,
        heartbeat_timeout: 60_000,
        ..NodeSettings::cluster(1)
    };
    let old = TestNode::start(patient());
    set_role(&old, "leader", "boss", None);
    let first = TestNode::start(patient());
    let second = TestNode::start(patient());
    set_role(&first, "follower", "f1", Some(&old));
    set_role(&second, "follower", "f2", Some(&old));
    assert!(becomes_writable(&old, "probe:old", Duration::from_secs(20)), "{}", old.log());
    let mut acknowledged = BTreeMap::new();
    acknowledged.insert("probe:old".to_string(), "probe".to_string());
    write_numbered(&mut old.client(), "before", 100, &mut acknowledged);
    pause(&old);
    // f2 answers; the paused leader does not, and as the leader of the newest set it need not.
    promote(&first, "f1", false).assert_ok();
    repoint(&second, "follower", "f2", &first);
    assert!(becomes_writable(&first, "probe:new", Duration::from_secs(20)), "{}", first.log());
    acknowledged.insert("probe:new".to_string(), "probe".to_string());
    write_numbered(&mut first.client(), "after", 100, &mut acknowledged);
    assert_holds(&second, &acknowledged, "the new leader's follower");
    // The first write reaches the old leader while it is still paused: it reads it as it wakes
    // up, before or while it learns of the newer epoch.
    let writer = StaleWriter::start(old.port);
    std::thread::sleep(Duration::from_millis(300));
    resume(&old);
    let stepped_down = wait_until(Duration::from_secs(15), || role_of(&old) == "admin");
    assert!(stepped_down, "the old leader still leads after 15 s:\n{}", old.log());
    let attempts = writer.count();
    assert!(wait_until(Duration::from_secs(5), || writer.count() >= attempts + 3));
    let outcomes = writer.finish();
    println!("{} writes sent to the old leader: {outcomes:?}", outcomes.len());
    let answered: Vec<&Outcome> =
        outcomes.iter().filter(|outcome| outcome.answer.is_ok()).collect();
    assert!(answered.is_empty(), "the fenced leader acknowledged {answered:?}");
    let hung: Vec<&Outcome> = outcomes.iter().filter(|outcome| outcome.timed_out).collect();
    assert!(hung.is_empty(), "writes to the fenced leader hung: {hung:?}");
    assert!(old.log().contains("a member has seen a newer epoch"), "{}", old.log());
    let refused: redis::RedisResult<()> = old.client().set("late", "x");
    assert_eq!(refused.unwrap_err().code(), Some("LOADING"), "admin mode refuses key commands");
    for (node, what) in [(&first, "new leader"), (&second, "its follower")] {
        assert_holds(node, &acknowledged, what);
        let mut client = node.client();
        for outcome in &outcomes {
            let found: Option<String> = client.get(&outcome.key).unwrap();
            assert_eq!(found, None, "{what} has {} from the fenced leader", outcome.key);
        }
    }
}

/// One write whose frame fills most of a 64 KB segment: an MSET of two keys with 20 KB values
/// (a record may take at most 3/8 of a segment, a frame 3/4), so no two frames share a segment.
fn segment_sized_pair(prefix: &str, index: usize) -> Vec<(String, String)> {
    ["a", "b"]
        .iter()
        .map(|half| (format!("{prefix}:{index}:{half}"), format!("{index:08}").repeat(2500)))
        .collect()
}

/// Replicas may hold different tails after a leader dies: frames the leader sent before they
/// committed reach one follower and not another. Here follower f1 is paused while the leader
/// takes writes it can no longer acknowledge (f1 is in the set and silent), follower f2 gets
/// them durably, and the leader dies. f1 is promoted (it is in the newest set and f2 answers),
/// so f2's tail is divergent. f1 goes on taking writes, past the end of f2's tail, before f2
/// rejoins: f2 must find where its log parts from f1's by the epochs of their records and cut
/// its log back there before it follows, or the two serve different data. Every frame here
/// takes a 64 KB segment of its own, so the point where the logs part is a segment boundary,
/// where a reader of the log that missed the frame ending exactly there would find no
/// divergence. The unacknowledged writes
/// go on many connections at once, so more of them are in flight than the kernel buffers
/// toward the paused f1 hold: f1 cannot have them all when it wakes up.
#[test]
fn segment_boundaries_do_not_hide_a_divergent_tail() {
    // An archive that gets nothing but the first upload: a replica that joins a leader
    // loads the partitions it counts as empty from the archive, and this test is about the
    // log it keeps.
    let storage = format!(
        "shared_dir = \"{}\"\nupload_interval = 600000",
        strata_tests::shared_dir().display()
    );
    let small_segments = || NodeSettings {
        partitions: 1,
        segment_size: "64KB",
        heartbeat_timeout: 60_000,
        storage: storage.clone(),
        ..NodeSettings::cluster(1)
    };
    let mut leader = TestNode::start(small_segments());
    set_role(&leader, "leader", "boss", None);
    // Once it leads, f1 stops waiting for an absent f2 after 2 s.
    let first = TestNode::start(NodeSettings { heartbeat_timeout: 2000, ..small_segments() });
    let second = TestNode::start(small_segments());
    set_role(&first, "follower", "f1", Some(&leader));
    set_role(&second, "follower", "f2", Some(&leader));
    let mut acknowledged = BTreeMap::new();
    let mut client = leader.client();
    for index in 0..5 {
        let pair = segment_sized_pair("acked", index);
        let _: () = client.mset(&pair).unwrap();
        acknowledged.extend(pair);
    }
    pause(&first);
    let writes = 200;
    let mut unacknowledged = Vec::new();
    let mut connections: Vec<raw::RawConnection> = (0..writes)
        .map(|index| {
            let pair = segment_sized_pair("unacked", index);
            let mut command: Vec<&[u8]> = vec![b"MSET"];
            for (key, value) in &pair {
                command.extend([key.as_bytes(), value.as_bytes()]);
            }
            let mut connection = leader.raw();
            connection.send_command(&command).unwrap();
            unacknowledged.extend(pair.into_iter().map(|(key, _)| key));
            connection
        })
        .collect();
    // f1 acknowledged everything before the pause: once it lags by every record sent since,
    // the leader has them all, and f2 acknowledged them durable.
    let tail = unacknowledged.len() as u64;
    let second_has_all = wait_until(Duration::from_secs(30), || {
        lag_on(&leader, "f1") == Some(tail) && lag_on(&leader, "f2") == Some(0)
    });
    let listed = leader.admin("GET", "/admin/nodes", None).text;
    assert!(second_has_all, "f2 never acknowledged the tail: {listed}\n{}", leader.log());
    leader.kill();
    for connection in &mut connections {
        let (bytes, end) = connection.read_until_end(Duration::from_secs(5));
        assert_eq!(end, raw::End::Closed, "the killed leader's connection closed");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("+OK"), "a write was acknowledged without f1: {text}");
    }
    assert_one_frame_per_segment(&second);
    resume(&first);
    promote(&first, "f1", false).assert_ok();
    // f1 takes more writes than f2's tail holds before f2 rejoins: f2's last LSN is then
    // within f1's log, and only the epochs of their records tell where the logs part.
    let mut client = first.client();
    for index in 0..tail as usize + 100 {
        let (key, value) = (format!("new:{index}"), index.to_string());
        let _: () = client.set(&key, &value).unwrap();
        acknowledged.insert(key, value);
    }
    repoint(&second, "follower", "f2", &first);
    let cut = "log cut back to where it agrees with the leader's";
    let discarded = logged_number(&second.log(), cut, "records");
    assert!(discarded.is_some_and(|records| records > 0), "f2 kept its tail:\n{}", second.log());
    let counted = replication_info(&second, "records_discarded");
    assert_eq!(counted, discarded.map(|records| records.to_string()), "INFO counts the cut");
    // A write under the new leader commits what f1 holds of the old leader's tail.
    let _: () = first.client().set("after", "failover").unwrap();
    acknowledged.insert("after".into(), "failover".into());
    assert_holds(&first, &acknowledged, "new leader");
    assert_holds(&second, &acknowledged, "follower that cut its log back");
    let (mut first_client, mut second_client) = (first.client(), second.client());
    let mut kept = 0;
    for key in &unacknowledged {
        let on_first: Option<String> = first_client.get(key).unwrap();
        let on_second: Option<String> = second_client.get(key).unwrap();
        assert_eq!(on_first, on_second, "{key} differs between the replicas");
        kept += usize::from(on_first.is_some());
    }
    println!(
        "f2 cut back {discarded:?} records; {kept} of {} unacknowledged keys are on both",
        unacknowledged.len()
    );
    assert_eq!(kept as u64 + discarded.unwrap(), tail, "f2 discarded just what f1 lacked");
    let sizes: Vec<i64> = [&mut first_client, &mut second_client]
        .into_iter()
        .map(|client| redis::cmd("DBSIZE").query(client).unwrap())
        .collect();
    assert_eq!(sizes[0], sizes[1], "the replicas hold the same keys");
}

/// Every segment of `node`'s only partition that holds frames holds exactly one.
fn assert_one_frame_per_segment(node: &TestNode) {
    let segments = strata_tests::wal_files::segment_files(&node.partition_dir(0));
    let counts: Vec<usize> = segments
        .iter()
        .map(|segment| strata_tests::wal_files::segment_frames(segment).len())
        .filter(|frames| *frames > 0)
        .collect();
    assert!(counts.len() > 100, "{} segments hold frames", counts.len());
    assert!(counts.iter().all(|frames| *frames == 1), "frames per segment: {counts:?}");
}

/// A follower whose disk fills can make nothing durable any more. Were it to stay in the
/// in-sync set, silent, every write would wait for it; were it to acknowledge what it could
/// not write, a promotion could lose them. It tells the leader its log failed and leaves the
/// stream; the leader drops it and, with `min_insync_replicas` 2 still met by the other
/// follower, goes on acknowledging (each write within 10 s). The other follower holds every
/// acknowledged write.
#[test]
fn a_follower_whose_disk_fills_leaves_the_set() {
    let paired = || NodeSettings {
        partitions: 1,
        segment_size: "64KB",
        min_insync_replicas: 2,
        heartbeat_timeout: 60_000,
        ..NodeSettings::cluster(1)
    };
    let leader = TestNode::start(paired());
    set_role(&leader, "leader", "boss", None);
    let mut small = TestNode::create(paired());
    let _disk = SmallDisk::mount(&small.data_dir(), "1m");
    small.restart();
    let roomy = TestNode::start(paired());
    set_role(&small, "follower", "small", Some(&leader));
    set_role(&roomy, "follower", "roomy", Some(&leader));
    assert!(becomes_writable(&leader, "probe", Duration::from_secs(20)), "{}", leader.log());
    let mut acknowledged = BTreeMap::new();
    acknowledged.insert("probe".to_string(), "probe".to_string());
    let mut client = client_with_timeout(&leader, Duration::from_secs(10));
    let value = "v".repeat(4000);
    let failed = "the log failed; leaving the leader's stream";
    let mut slowest = Duration::ZERO;
    let mut failed_at = None;
    for index in 0..3000 {
        let key = format!("k:{index}");
        let started = Instant::now();
        let result: redis::RedisResult<()> = client.set(&key, &value);
        if let Err(error) = result {
            panic!("write {index} failed: {error}\nleader:\n{}", leader.log());
        }
        slowest = slowest.max(started.elapsed());
        acknowledged.insert(key, value.clone());
        if failed_at.is_none() && index % 20 == 0 && small.log().contains(failed) {
            failed_at = Some(index);
        }
        if failed_at.is_some_and(|at| index >= at + 200) {
            break;
        }
    }
    let failed_at =
        failed_at.unwrap_or_else(|| panic!("the 1 MiB disk never filled:\n{}", small.log()));
    println!("the small follower's log failed by write {failed_at}; slowest write {slowest:?}");
    assert!(slowest < Duration::from_secs(10), "a write waited {slowest:?}");
    assert!(acknowledged.len() > failed_at + 200, "writes went on after the follower left");
    let leader_log = without_colours(&leader.log());
    assert!(leader_log.contains("set={boss, roomy} (leader boss"), "{leader_log}");
    assert_holds(&roomy, &acknowledged, "the follower with room");
}

/// A follower that joins a leader adopts its archive prefix and loads its *empty* partitions
/// from the archive before it streams. A follower pointed at a newly promoted leader is not
/// empty: it holds every record it acknowledged (it is in the in-sync set for that), more
/// than the archive, which lags the log. Replacing its log with the archive's older image
/// would leave a member of the newest in-sync set without acknowledged writes until it caught
/// up again (a promotion in that window would lose them), and costs a snapshot. So the
/// follower keeps its log and continues it from the new leader's frames.
#[test]
fn a_follower_pointed_at_a_new_leader_keeps_its_log() {
    let small_segments =
        || NodeSettings { partitions: 1, segment_size: "64KB", ..NodeSettings::cluster(1) };
    let mut leader = TestNode::start(small_segments());
    set_role(&leader, "leader", "boss", None);
    let first = TestNode::start(small_segments());
    let second = TestNode::start(small_segments());
    set_role(&first, "follower", "f1", Some(&leader));
    set_role(&second, "follower", "f2", Some(&leader));
    let mut client = leader.client();
    let mut acknowledged = BTreeMap::new();
    let value = "v".repeat(4000);
    for index in 0..60 {
        let _: () = client.set(format!("k:{index}"), &value).unwrap();
        acknowledged.insert(format!("k:{index}"), value.clone());
    }
    // The archive holds some sealed segments, fewer than the followers' logs.
    let uploaded = wait_until(Duration::from_secs(20), || {
        let status = leader.admin("GET", "/admin/storage", None);
        status.json["uploaded_objects"].as_u64().is_some_and(|objects| objects > 0)
    });
    assert!(uploaded, "the leader uploaded nothing:\n{}", leader.log());
    for index in 60..80 {
        let _: () = client.set(format!("k:{index}"), &value).unwrap();
        acknowledged.insert(format!("k:{index}"), value.clone());
    }
    leader.kill();
    promote(&first, "f1", false).assert_ok();
    repoint(&second, "follower", "f2", &first);
    let log = without_colours(&second.log());
    assert!(
        !log.contains("archived log installed"),
        "f2's log was replaced by the archive:\n{log}"
    );
    assert_eq!(replication_info(&second, "snapshots_installed").as_deref(), Some("0"), "{log}");
    assert_eq!(replication_info(&second, "records_discarded").as_deref(), Some("0"), "{log}");
    assert_holds(&second, &acknowledged, "f2 under the new leader");
}

/// With `min_insync_replicas` 2 a leader never acknowledges a write only it holds: alone, it
/// refuses writes with Redis's NOREPLICAS; once a follower is in sync, writes succeed; when
/// that follower dies, the set cannot shrink below two, so new writes are refused again,
/// promptly rather than left hanging. A write taken just before the leader noticed waits for
/// the follower, and commits when it returns; then writes succeed again.
#[test]
fn a_leader_alone_below_the_minimum_refuses_writes() {
    let paired = || NodeSettings { min_insync_replicas: 2, ..NodeSettings::cluster(1) };
    let leader = TestNode::start(paired());
    set_role(&leader, "leader", "boss", None);
    let mut connection = leader.raw();
    let refused = connection.command_words(&["SET", "alone", "x"]);
    assert_eq!(refused, Reply::error(NO_REPLICAS));
    let mut follower = TestNode::start(paired());
    set_role(&follower, "follower", "f1", Some(&leader));
    assert!(becomes_writable(&leader, "paired", Duration::from_secs(10)), "{}", leader.log());
    let reply = connection.command_words(&["SET", "paired:2", "y"]);
    assert_eq!(reply, Reply::Simple("OK".into()));
    follower.kill();
    let started = Instant::now();
    let mut answers = Vec::new();
    let mut waiting = Vec::new();
    let refused_again = wait_until(Duration::from_secs(20), || {
        let mut attempt = leader.raw();
        attempt.stream().set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        attempt.send_command(&[b"SET", b"after-kill", b"z"]).unwrap();
        let answer = attempt.read_reply().map_err(|error| error.kind());
        let done = answer == Ok(Reply::error(NO_REPLICAS));
        if answer.is_err() {
            waiting.push(attempt);
        }
        answers.push(answer);
        done
    });
    println!("after the kill: {answers:?} in {:?}", started.elapsed());
    assert!(refused_again, "writes were not refused with NOREPLICAS: {answers:?}");
    let wrong: Vec<_> = answers
        .iter()
        .filter(|answer| matches!(answer, Ok(reply) if !matches!(reply, Reply::Error(_))))
        .collect();
    assert!(wrong.is_empty(), "a write was acknowledged with the follower dead: {wrong:?}");
    follower.restart();
    set_role(&follower, "follower", "f1", Some(&leader));
    assert!(becomes_writable(&leader, "back", Duration::from_secs(20)), "{}", leader.log());
    // A write the leader took before it noticed the loss waited; it commits now.
    for mut attempt in waiting {
        attempt.stream().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let late = attempt.read_reply().map_err(|error| error.kind());
        assert_eq!(late, Ok(Reply::Simple("OK".into())), "a write that waited for the follower");
    }
}

/// A replica serves only records its leader committed, and must learn the commit point from
/// its current leader alone. One that kept the commit point an earlier leader sent it would
/// serve the new leader's records that happen to lie below it before they commit. After a
/// checked promotion that cannot show: the new leader holds every record anyone saw
/// committed, so its new records lie above every old commit point. After a forced promotion
/// it can: the new leader lacks committed records, its new ones reuse their LSNs, and
/// replicas that saw the old commit point cut their logs back below it.
///
/// So: one partition, `min_insync_replicas` 2, leader boss, followers f1 and f2, a learner.
/// f1 is killed (dropped at once), 300 writes commit with boss and f2, and the learner sees
/// their commit point. boss dies; f1 restarts and is promoted by force; f2 and the learner
/// follow it and cut back their logs. Then f2 is paused: f1 can commit nothing (its set needs
/// f2), and a write of `k` on f1 reaches the learner uncommitted, at an LSN below the old
/// commit point. The learner must not return the new value until f2 resumes and f1 commits it.
#[test]
fn a_replica_of_a_new_leader_serves_only_what_it_committed() {
    let paired = || NodeSettings {
        partitions: 1,
        min_insync_replicas: 2,
        heartbeat_timeout: 60_000,
        ..NodeSettings::cluster(1)
    };
    let mut old = TestNode::start(paired());
    set_role(&old, "leader", "boss", None);
    let mut first = TestNode::start(paired());
    let second = TestNode::start(paired());
    let learner = TestNode::start(paired());
    set_role(&first, "follower", "f1", Some(&old));
    set_role(&second, "follower", "f2", Some(&old));
    set_role(&learner, "learner", "watcher", Some(&old));
    assert!(becomes_writable(&old, "probe", Duration::from_secs(20)), "{}", old.log());
    let mut client = old.client();
    let _: () = client.set("k", "old").unwrap();
    let mut kept = BTreeMap::from([("k".to_string(), "old".to_string())]);
    write_numbered(&mut client, "base", 20, &mut kept);
    first.kill();
    let mut lost = BTreeMap::new();
    write_numbered(&mut client, "gap", 300, &mut lost);
    let seen = wait_until(Duration::from_secs(20), || lag_on(&old, "watcher") == Some(0));
    assert!(seen, "the learner acknowledged every write");
    assert_holds(&learner, &lost, "learner before the failover");
    old.kill();
    first.restart();
    promote(&first, "f1", false).assert_error(7031);
    promote(&first, "f1", true).assert_ok();
    repoint(&second, "follower", "f2", &first);
    assert!(becomes_writable(&first, "probe", Duration::from_secs(20)), "{}", first.log());
    repoint(&learner, "learner", "watcher", &first);
    let cut = "log cut back to where it agrees with the leader's";
    for (node, what) in [(&second, "f2"), (&learner, "the learner")] {
        let records = logged_number(&node.log(), cut, "records");
        assert!(records.is_some_and(|records| records >= 300), "{what} cut back:\n{}", node.log());
        assert_holds(node, &kept, what);
    }
    pause(&second);
    let writer = std::thread::spawn({
        let port = first.port;
        move || {
            let mut client = strata_tests::connect(port);
            client.set::<_, _, ()>("k", "new").map_err(|error| error.to_string())
        }
    });
    let frame_arrived = wait_until(Duration::from_secs(10), || {
        lag_on(&first, "watcher") == Some(0) && lag_on(&first, "f2").is_some_and(|lag| lag > 0)
    });
    assert!(frame_arrived, "the learner acknowledged the uncommitted write:\n{}", first.log());
    let watched = Instant::now();
    let mut reads = Vec::new();
    while watched.elapsed() < Duration::from_secs(3) {
        let mut client = client_with_timeout(&learner, Duration::from_millis(500));
        let read: redis::RedisResult<Option<String>> = client.get("k");
        let read =
            read.map_err(
                |error| if error.is_timeout() { "waits".into() } else { error.to_string() },
            );
        assert_ne!(read, Ok(Some("new".to_string())), "the learner served an uncommitted write");
        reads.push(read);
    }
    println!("the learner's reads of k while it was uncommitted: {reads:?}");
    assert!(!writer.is_finished(), "the write was acknowledged without f2");
    resume(&second);
    assert_eq!(writer.join().unwrap(), Ok(()), "the write commits once f2 is back");
    let committed = wait_until(Duration::from_secs(20), || {
        let Ok(mut client) = strata_tests::try_connect(learner.port) else { return false };
        let found: redis::RedisResult<Option<String>> = client.get("k");
        found.is_ok_and(|found| found.as_deref() == Some("new"))
    });
    assert!(committed, "the learner serves the write once it committed");
    let on_second: Option<String> = second.client().get("k").unwrap();
    assert_eq!(on_second.as_deref(), Some("new"));
}

/// The libfaketime library of Debian's `libfaketime` package (`scripts/setup.sh` installs it).
fn libfaketime() -> String {
    let path = format!("/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1", std::env::consts::ARCH);
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: scripts/setup.sh installs the faketime package"
    );
    path
}

/// Seconds since the epoch of a `ctime` text ("Sun Dec  6 04:01:09 2026"), read as UTC: only
/// differences between two readings matter here.
fn ctime_seconds(text: &str) -> i64 {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words.len(), 5, "not a ctime text: {text:?}");
    let month = MONTHS.iter().position(|name| *name == words[1]).expect("a month") as i64 + 1;
    let day: i64 = words[2].parse().expect("a day");
    let year: i64 = words[4].parse().expect("a year");
    let clock: Vec<i64> = words[3].split(':').map(|part| part.parse().expect("hh:mm:ss")).collect();
    // Days from 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let year_of_era = shifted - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    days * 86_400 + clock[0] * 3600 + clock[1] * 60 + clock[2]
}

/// The wall clock of a node in a cluster role, as its admin API renders it.
fn wall_clock_of(node: &TestNode) -> i64 {
    let reply = node.admin("GET", "/admin/node/current", None);
    ctime_seconds(reply.json["node"]["update_time"].as_str().expect("update_time"))
}

/// Heartbeat expiry must not follow the wall clock, which NTP or an operator may step. The
/// leader runs under libfaketime, which moves only its wall clock (the monotonic clock is left
/// alone). Stepped an hour forward, a leader timing heartbeats by the wall clock would time
/// out every member at once and stop waiting for them; here the follower stays `alive` and
/// writes keep being acknowledged promptly. Stepped two hours back, such a leader would never
/// time out a member that went silent, and every write would wait for it forever; here the
/// follower, paused (so its connections stay open and only the heartbeat timeout can tell),
/// is marked `timeout` within the timeout plus a few seconds, and writes go on.
#[test]
fn a_wall_clock_step_neither_expires_nor_stops_timeouts() {
    let timeout = Duration::from_millis(2000);
    let mut leader = TestNode::create(NodeSettings::cluster(1));
    let clock_file = leader.directory.path().join("faketime.rc");
    std::fs::write(&clock_file, "+0\n").unwrap();
    leader.settings.environment = vec![
        ("LD_PRELOAD".into(), libfaketime()),
        ("FAKETIME_TIMESTAMP_FILE".into(), clock_file.display().to_string()),
        ("FAKETIME_NO_CACHE".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    leader.restart();
    set_role(&leader, "leader", "boss", None);
    let follower = TestNode::start(NodeSettings::cluster(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    let mut client = client_with_timeout(&leader, Duration::from_secs(30));
    let mut expected = BTreeMap::new();
    write_numbered(&mut client, "before", 50, &mut expected);
    let expired = "no heartbeat within the timeout: member marked timeout";
    let before_step = wall_clock_of(&leader);
    std::fs::write(&clock_file, "+1h\n").unwrap();
    let stepped = wall_clock_of(&leader) - before_step;
    assert!((3590..3660).contains(&stepped), "the leader's wall clock moved {stepped} s");
    let watched = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut index = 0;
    while watched.elapsed() < 2 * timeout {
        let status = status_on(&leader, "f1");
        assert_eq!(status, "alive", "the forward step timed the follower out:\n{}", leader.log());
        let started = Instant::now();
        let _: () = client.set(format!("forward:{index}"), index).unwrap();
        expected.insert(format!("forward:{index}"), index.to_string());
        slowest = slowest.max(started.elapsed());
        index += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("{index} writes after the forward step; slowest {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "a write waited {slowest:?} after the step");
    assert!(!leader.log().contains(expired), "a member expired:\n{}", leader.log());
    assert_holds(&follower, &expected, "follower after the forward step");
    std::fs::write(&clock_file, "-1h\n").unwrap();
    let stepped_back = wall_clock_of(&leader) - before_step;
    assert!((-3660..-3540).contains(&stepped_back), "the leader's clock is at {stepped_back} s");
    pause(&follower);
    let silenced = Instant::now();
    let timed_out =
        wait_until(timeout + Duration::from_secs(4), || status_on(&leader, "f1") == "timeout");
    assert!(timed_out, "the backward step kept the silent follower alive:\n{}", leader.log());
    println!("the paused follower timed out after {:?}", silenced.elapsed());
    assert!(leader.log().contains(expired), "{}", leader.log());
    let _: () = client.set("after-timeout", "yes").unwrap();
    resume(&follower);
}

/// A node that was just told to follow answers its operator once it caught up, up to a minute
/// later. It must not hold its role lock meanwhile: were the leader to die during that
/// catch-up, every promotion asks this node to accept the new epoch, and none could until its
/// wait ended, a minute without a leader. Here a learner joins a leader holding enough data
/// that catching up takes a while; the leader is paused while the learner still waits; a
/// follower's checked promotion succeeds at once, fencing the learner; re-pointing the learner
/// ends its old wait.
#[test]
fn a_replica_still_catching_up_does_not_hold_up_a_promotion() {
    let leader = TestNode::start(NodeSettings::cluster(1));
    set_role(&leader, "leader", "boss", None);
    let first = TestNode::start(NodeSettings::cluster(1));
    let second = TestNode::start(NodeSettings::cluster(1));
    set_role(&first, "follower", "f1", Some(&leader));
    set_role(&second, "follower", "f2", Some(&leader));
    let mut client = leader.client();
    let value = "v".repeat(1000);
    for batch in 0..60 {
        let pairs: Vec<(String, &str)> =
            (0..1000).map(|index| (format!("k:{batch}:{index}"), value.as_str())).collect();
        let _: () = client.mset(&pairs).unwrap();
    }
    let learner = TestNode::start(NodeSettings::cluster(1));
    let port = learner.http_port;
    let body = role_body("learner", Some("l1"), Some(&leader.peer_address()));
    let joining = std::thread::spawn(move || {
        strata_tests::admin::request(port, "POST", "/admin/node/current", Some(&body))
    });
    let registered = wait_until(Duration::from_secs(20), || status_on(&leader, "l1") == "alive");
    assert!(registered, "the learner never registered:\n{}", learner.log());
    pause(&leader);
    assert!(
        !joining.is_finished(),
        "the learner caught up before the leader was paused: the test needs more data"
    );
    let started = Instant::now();
    let mut answer = promote(&first, "f1", false);
    while !answer.is_ok() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        answer = promote(&first, "f1", false);
    }
    assert!(answer.is_ok(), "f1 was not promoted: {}\n{}", answer.text, learner.log());
    println!("promoted {:?} after the leader was paused", started.elapsed());
    assert!(!joining.is_finished(), "the learner still waits for its old leader");
    repoint(&learner, "learner", "l1", &first);
    let answered = joining.join().expect("the joining thread");
    println!("the learner's first role change answered: {}", answered.text);
    resume(&leader);
}
