//! Automatic failover (`[cluster] failover = "automatic"`) between real node processes: the
//! leader killed under load again and again, every node restarted at once, a leader paused
//! past its lease. Every test checks that every acknowledged write is on the final leader.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Commands;
use strata_tests::admin::{role_body, set_role, try_request, wait_until};
use strata_tests::data::assert_holds;
use strata_tests::disk::SmallDisk;
use strata_tests::{NodeSettings, TestNode};

/// Three nodes in admin mode with automatic failover, `min_insync_replicas` = 2.
fn three_nodes() -> Vec<TestNode> {
    (0..3).map(|_| TestNode::start(settings())).collect()
}

/// A node of [`three_nodes`].
fn settings() -> NodeSettings {
    let mut settings = NodeSettings::cluster(1);
    settings.partitions = 4;
    settings.min_insync_replicas = 2;
    settings.failover = "automatic";
    settings.extra = "failover_timeout = 1500".into();
    if let Ok(directives) = std::env::var("STRATA_TEST_NODE_LOG") {
        settings.environment.push(("STRATA_LOG".into(), directives));
    }
    settings
}

const NAMES: [&str; 3] = ["harry", "hermione", "ron"];

/// harry leads (a new cluster); hermione and ron join it as followers.
fn form_cluster(nodes: &[TestNode]) {
    set_role(&nodes[0], "leader", NAMES[0], None);
    for index in 1..nodes.len() {
        set_role(&nodes[index], "follower", NAMES[index], Some(&nodes[0]));
    }
}

/// The node that says it leads, if exactly one answers so.
fn leader_of(nodes: &[TestNode]) -> Option<usize> {
    let leading: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| role_of(node).as_deref() == Some("leader"))
        .map(|(index, _)| index)
        .collect();
    (leading.len() == 1).then(|| leading[0])
}

/// The role a node reports, if it answers within a second.
fn role_of(node: &TestNode) -> Option<String> {
    role_at(node.http_port)
}

/// The role the node with admin port `http_port` reports, if it answers within a second.
fn role_at(http_port: u16) -> Option<String> {
    let timeout = Duration::from_secs(1);
    let reply = try_request(http_port, "GET", "/admin/node/current", None, timeout).ok()?;
    reply.json["node"]["role"].as_str().map(str::to_string)
}

/// Every node's client and admin ports, for a [`Writer`].
fn endpoints(nodes: &[TestNode]) -> Vec<(u16, u16)> {
    nodes.iter().map(|node| (node.port, node.http_port)).collect()
}

/// Writes unique keys to whichever node leads, remembering every acknowledged write and when
/// writes were acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeMap<String, String>>>,
    acknowledged_at: Arc<Mutex<Vec<Instant>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Writes to whichever of `nodes` (client port, admin port) says it leads.
    fn start(nodes: Vec<(u16, u16)>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
        let acknowledged_at = Arc::new(Mutex::new(Vec::new()));
        let (stopping, written, times) =
            (Arc::clone(&stop), Arc::clone(&acknowledged), Arc::clone(&acknowledged_at));
        let thread = std::thread::spawn(move || {
            let mut number = 0u64;
            let mut target = 0usize;
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
                // Only a node that says it leads: a paused node accepts connections and
                // never answers, not even the client's greeting.
                let (port, http_port) = nodes[target];
                if role_at(http_port).as_deref() != Some("leader") {
                    target = (target + 1) % nodes.len();
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
                    continue;
                };
                let Ok(mut connection) =
                    client.get_connection_with_timeout(Duration::from_millis(500))
                else {
                    target = (target + 1) % nodes.len();
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                // A paused node accepts connections and never answers: give up on it soon.
                let _ = connection.set_read_timeout(Some(Duration::from_secs(1)));
                while !stopping.load(Ordering::Relaxed) {
                    number += 1;
                    let (key, value) = (format!("key:{number}"), format!("{number}"));
                    match connection.set::<_, _, String>(&key, &value) {
                        Ok(_) => {
                            written.lock().unwrap().insert(key, value);
                            times.lock().unwrap().push(Instant::now());
                        }
                        Err(_) => {
                            // Not the leader (READONLY, LOADING, TRYAGAIN) or gone: try the
                            // next node.
                            target = (target + 1) % nodes.len();
                            std::thread::sleep(Duration::from_millis(10));
                            break;
                        }
                    }
                }
            }
        });
        Writer { stop, acknowledged, acknowledged_at, thread: Some(thread) }
    }

    fn acknowledged_count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// The longest time between two acknowledgements, the later one after `moment`.
    fn longest_pause_since(&self, moment: Instant) -> Duration {
        let times = self.acknowledged_at.lock().unwrap();
        let pauses = times.windows(2).filter(|pair| pair[1] > moment);
        pauses.map(|pair| pair[1] - pair[0]).max().unwrap_or_default()
    }

    /// The first acknowledgement after `moment`, if any yet.
    fn first_acknowledged_after(&self, moment: Instant) -> Option<Instant> {
        self.acknowledged_at.lock().unwrap().iter().copied().find(|at| *at > moment)
    }

    fn finish(mut self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("writer thread");
        }
        std::mem::take(&mut *self.acknowledged.lock().unwrap())
    }
}

/// Waits until some node other than `old` leads; answers it.
fn new_leader(nodes: &[TestNode], old: usize, logs: &dyn Fn() -> String) -> usize {
    let mut found = None;
    let elected = wait_until(Duration::from_secs(30), || {
        found = leader_of(nodes).filter(|index| *index != old);
        found.is_some()
    });
    assert!(elected, "no new leader was elected:\n{}", logs());
    found.expect("elected")
}

fn all_logs(nodes: &[TestNode]) -> String {
    nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            format!("----- {}:\n{}", NAMES.get(index).unwrap_or(&"neville"), node.log())
        })
        .collect()
}

#[test]
fn killing_the_leader_under_load_elects_a_follower_and_loses_nothing() {
    let times = kill_rounds(5);
    eprintln!("kill to first acknowledged write: {times:?}");
}

/// Transfers the leadership to `nodes[to]`, asking `nodes[asked]`, and waits until that job
/// is done, as every member sees it, and `nodes[to]` leads. A transfer may fail under load
/// (the target did not catch up in time): the job says why, and it is tried again, three
/// times at most.
fn transfer(nodes: &[TestNode], asked: usize, to: usize) {
    for attempt in 1..=3 {
        let body = format!("{{\"to\": \"{}\"}}", NAMES[to]);
        let reply = nodes[asked].admin("POST", "/admin/leader/transfer", Some(&body));
        assert!(reply.is_ok(), "{} {}\n{}", reply.status, reply.text, all_logs(nodes));
        let job = reply.json["job_id"].as_u64().expect("a job id");
        let mut shown = serde_json::Value::Null;
        let finished = wait_until(Duration::from_secs(30), || {
            shown = nodes[to].admin("GET", &format!("/admin/jobs/{job}"), None).json;
            shown["job"]["state"] == "done" || shown["job"]["state"] == "failed"
        });
        assert!(finished, "job {job} never ended: {shown}\n{}", all_logs(nodes));
        assert_eq!(shown["job"]["kind"], "transfer", "{shown}");
        if shown["job"]["state"] == "done" {
            let moved = wait_until(Duration::from_secs(20), || leader_of(nodes) == Some(to));
            assert!(moved, "{} does not lead:\n{}", NAMES[to], all_logs(nodes));
            return;
        }
        eprintln!("transfer attempt {attempt} failed: {shown}");
        assert!(wait_until(Duration::from_secs(30), || all_in_sync_listed(nodes)));
    }
    panic!("three transfers to {} failed:\n{}", NAMES[to], all_logs(nodes));
}

/// Whether whichever node leads lists every member in sync.
fn all_in_sync_listed(nodes: &[TestNode]) -> bool {
    leader_of(nodes).is_some_and(|leader| all_in_sync(&nodes[leader]))
}

/// `kills` times: waits until every member is in sync and writes progress, kills the leader
/// (SIGKILL), waits for another to lead and take a write, restarts the killed node (it
/// rejoins by itself). Checks every acknowledged write on the final leader; answers the
/// times from each kill to the first write acknowledged after it, sorted.
fn kill_rounds(kills: usize) -> Vec<Duration> {
    let mut nodes = three_nodes();
    form_cluster(&nodes);
    let writer = Writer::start(endpoints(&nodes));
    let mut failover_times = Vec::new();
    for round in 0..kills {
        let before = writer.acknowledged_count();
        let progressed =
            wait_until(Duration::from_secs(30), || writer.acknowledged_count() > before + 200);
        assert!(progressed, "round {round}: writes do not progress:\n{}", all_logs(&nodes));
        let leader = new_or_same_leader(&nodes);
        let in_sync = wait_until(Duration::from_secs(30), || all_in_sync(&nodes[leader]));
        assert!(in_sync, "round {round}: members out of sync:\n{}", all_logs(&nodes));
        nodes[leader].kill();
        let killed_at = Instant::now();
        let logs = || String::new();
        let successor = new_leader(&nodes, leader, &logs);
        let acknowledged = wait_until(Duration::from_secs(30), || {
            writer.first_acknowledged_after(killed_at).is_some()
        });
        assert!(acknowledged, "round {round}: no write after the kill:\n{}", all_logs(&nodes));
        let first = writer.first_acknowledged_after(killed_at).expect("acknowledged");
        failover_times.push(first - killed_at);
        eprintln!("round {round}: {} killed, {} leads", NAMES[leader], NAMES[successor]);
        // The killed node comes back by itself with its own config and follows.
        nodes[leader].restart();
        let follows = wait_until(Duration::from_secs(30), || {
            role_of(&nodes[leader]).as_deref() == Some("follower")
        });
        assert!(
            follows,
            "round {round}: the restarted node does not follow:\n{}",
            all_logs(&nodes)
        );
    }
    let acknowledged = writer.finish();
    failover_times.sort();
    if std::env::var_os("STRATA_TEST_LOGS").is_some() {
        eprintln!("{}", all_logs(&nodes));
    }
    let leader = new_or_same_leader(&nodes);
    assert!(acknowledged.len() > 200 * kills, "only {} writes acknowledged", acknowledged.len());
    assert_holds(&nodes[leader], &acknowledged, "the final leader after the failovers");
    eprintln!("acknowledged writes: {}, all on the final leader (lost: 0)", acknowledged.len());
    failover_times
}

/// Whether `leader` lists every member of the cluster in sync (the controller's view).
fn all_in_sync(leader: &TestNode) -> bool {
    let timeout = Duration::from_secs(1);
    let Ok(reply) = try_request(leader.http_port, "GET", "/admin/nodes", None, timeout) else {
        return false;
    };
    let rows = reply.json["nodes"].as_array().cloned().unwrap_or_default();
    rows.len() == NAMES.len() && rows.iter().all(|row| row["in_sync"] == true)
}

/// `transfers` planned transfers under a writer at pipeline depth 1, each to the next
/// member; answers the longest pause between two acknowledged writes around each, sorted.
fn transfer_rounds(transfers: usize) -> Vec<Duration> {
    let nodes = three_nodes();
    form_cluster(&nodes);
    let writer = Writer::start(endpoints(&nodes));
    let mut pauses = Vec::new();
    for round in 0..transfers {
        let leader = new_or_same_leader(&nodes);
        let in_sync = wait_until(Duration::from_secs(30), || all_in_sync(&nodes[leader]));
        assert!(in_sync, "round {round}: members out of sync:\n{}", all_logs(&nodes));
        let before = writer.acknowledged_count();
        assert!(wait_until(Duration::from_secs(30), || writer.acknowledged_count() > before + 100));
        let target = (leader + 1) % nodes.len();
        let asked_at = Instant::now();
        transfer(&nodes, leader, target);
        let settled = writer.acknowledged_count();
        assert!(wait_until(Duration::from_secs(20), || writer.acknowledged_count() > settled + 50));
        pauses.push(writer.longest_pause_since(asked_at));
    }
    let acknowledged = writer.finish();
    let leader = new_or_same_leader(&nodes);
    assert_holds(&nodes[leader], &acknowledged, "the leader after the transfers");
    eprintln!("acknowledged writes: {}, all on the final leader (lost: 0)", acknowledged.len());
    pauses.sort();
    pauses
}

/// `benches/failover.sh`: 20 kills and 20 planned transfers (or as many as
/// `STRATA_FAILOVER_KILLS` and `STRATA_FAILOVER_TRANSFERS` say), with the distributions.
#[test]
#[ignore = "a benchmark: benches/failover.sh runs it on a release build"]
fn failover_benchmark() {
    let count = |name: &str| {
        std::env::var(name).ok().and_then(|text| text.parse::<usize>().ok()).unwrap_or(20)
    };
    let kills = match count("STRATA_FAILOVER_KILLS") {
        0 => Vec::new(),
        kills => kill_rounds(kills),
    };
    let transfers = match count("STRATA_FAILOVER_TRANSFERS") {
        0 => Vec::new(),
        transfers => transfer_rounds(transfers),
    };
    let summary = |what: &str, times: &[Duration]| {
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        let max = times.last().copied().unwrap_or_default();
        eprintln!("{what}: {} runs, p50 {median:?}, max {max:?}, all {times:?}", times.len());
    };
    summary("kill -9 of the leader to the first acknowledged write", &kills);
    summary("planned transfer, longest pause between acknowledged writes", &transfers);
}

#[test]
fn restarting_every_node_at_once_brings_the_cluster_back_by_itself() {
    let mut nodes = three_nodes();
    form_cluster(&nodes);
    let mut expected = BTreeMap::new();
    let mut client = nodes[0].client();
    for number in 0..300 {
        let (key, value) = (format!("before:{number}"), format!("{number}"));
        let _: String = client.set(&key, &value).expect("write on the first leader");
        expected.insert(key, value);
    }
    for node in &mut nodes {
        node.kill();
    }
    for node in &mut nodes {
        node.restart();
    }
    let mut leader = None;
    let elected = wait_until(Duration::from_secs(40), || {
        leader = leader_of(&nodes);
        leader.is_some()
    });
    assert!(elected, "no leader after a restart of every node:\n{}", all_logs(&nodes));
    let leader = leader.expect("a leader");
    // A new leader serves once the controller first confirmed its lease.
    let mut reader = nodes[leader].client();
    let serving =
        wait_until(Duration::from_secs(20), || reader.get::<_, Option<String>>("before:0").is_ok());
    assert!(serving, "the new leader does not serve:\n{}", all_logs(&nodes));
    assert_holds(&nodes[leader], &expected, "the leader after a restart of every node");
    let mut client = nodes[leader].client();
    let written = wait_until(Duration::from_secs(20), || {
        client.set::<_, _, String>("after", "restart").is_ok()
    });
    assert!(written, "the new leader does not take writes:\n{}", all_logs(&nodes));
}

#[test]
fn a_leader_paused_past_its_lease_acknowledges_nothing_when_it_wakes() {
    let nodes = three_nodes();
    form_cluster(&nodes);
    let mut client = nodes[0].client();
    let _: String = client.set("register", "old").expect("first write");
    let pid = nodes[0].pid().expect("running");
    let stop = std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status();
    assert!(stop.expect("kill -STOP").success());
    let logs = || all_logs(&nodes);
    let successor = new_leader(&nodes, 0, &logs);
    let mut fresh = nodes[successor].client();
    let written = wait_until(Duration::from_secs(20), || {
        fresh.set::<_, _, String>("register", "new").is_ok()
    });
    assert!(written, "the new leader does not take writes:\n{}", all_logs(&nodes));
    let resume = std::process::Command::new("kill").args(["-CONT", &pid.to_string()]).status();
    assert!(resume.expect("kill -CONT").success());
    // The old leader wakes with its lease run out: it neither serves the old value nor
    // acknowledges a write the new leader lacks.
    // INFO then GET in one pipeline: a GET answered "old" must not have been answered in
    // leader mode (a replica may serve the old, committed value until it catches up).
    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
    let answers: redis::RedisResult<(String, redis::Value)> =
        redis::pipe().cmd("INFO").arg("replication").cmd("GET").arg("register").query(&mut client);
    if let Ok((info, redis::Value::BulkString(value))) = answers {
        let leading = info.contains("strata_mode:Leader");
        assert!(!(leading && value == b"old"), "the paused leader served a stale read: {info}");
    }
    let late: redis::RedisResult<String> = client.set("late", "write");
    assert!(late.is_err(), "the deposed leader acknowledged a write");
    let value: Option<String> = fresh.get("register").expect("read on the new leader");
    assert_eq!(value.as_deref(), Some("new"));
    let found: Option<String> = fresh.get("late").expect("read on the new leader");
    assert_eq!(found, None);
}

#[test]
fn a_node_of_another_cluster_is_refused_with_both_clusters_named() {
    let nodes = three_nodes();
    set_role(&nodes[0], "leader", "harry", None);
    set_role(&nodes[1], "leader", "draco", None);
    let body = role_body("follower", Some("draco"), Some(&nodes[0].peer_address()));
    let reply = nodes[1].admin("POST", "/admin/node/current", Some(&body));
    reply.assert_error(7034);
    let message = reply.message();
    assert!(message.contains("belongs to cluster"), "{message}");
    let identifiers: Vec<&str> = message
        .split(|character: char| !character.is_ascii_hexdigit())
        .filter(|word| word.len() == 32)
        .collect();
    assert_eq!(identifiers.len(), 2, "both cluster ids named: {message}");
    assert_ne!(identifiers[0], identifiers[1], "{message}");
    // Draco still leads its own cluster.
    assert_eq!(role_of(&nodes[1]).as_deref(), Some("leader"));
}

#[test]
fn a_damaged_controller_log_stops_the_node_at_start() {
    let mut nodes = three_nodes();
    form_cluster(&nodes);
    nodes[2].kill();
    let log = nodes[2].data_dir().join("controller").join("log");
    let mut bytes = std::fs::read(&log).expect("the controller's log");
    assert!(bytes.len() > 200, "a log of several records: {} bytes", bytes.len());
    // A byte inside the first record's payload (after the file and record headers): not a
    // torn tail, so the node must refuse to start rather than drop what follows.
    bytes[40] ^= 0x55;
    std::fs::write(&log, &bytes).expect("damage the log");
    nodes[2].spawn();
    let status = nodes[2].wait_exit(Duration::from_secs(30)).expect("the node stops");
    assert_eq!(status.code(), Some(5), "{}", nodes[2].log());
    assert!(nodes[2].log().contains("damaged"), "{}", nodes[2].log());
}

#[test]
fn the_node_list_shows_the_controllers_view() {
    let nodes = three_nodes();
    form_cluster(&nodes);
    let mut listed = serde_json::Value::Null;
    let complete = wait_until(Duration::from_secs(20), || {
        listed = nodes[0].admin("GET", "/admin/nodes", None).json;
        let rows = listed["nodes"].as_array().cloned().unwrap_or_default();
        rows.len() == 3 && rows.iter().all(|row| row["in_sync"] == true)
    });
    assert!(complete, "every member in sync, as the controller sees it: {listed}");
    let id = listed["cluster"]["id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 32, "{listed}");
    assert!(listed["leader_epoch"].as_u64() >= Some(1), "{listed}");
    let controller_leader = listed["controller_leader"].as_str().expect("a controller leader");
    let rows = listed["nodes"].as_array().expect("rows");
    let voters = rows.iter().filter(|row| row["controller"] == "voter").count();
    let leading = rows.iter().filter(|row| row["controller"] == "leader").count();
    assert_eq!((voters, leading), (2, 1), "{listed}");
    assert!(NAMES.contains(&controller_leader), "{listed}");
}

/// Only the controller's members register with a leader it controls: a node that never
/// joined (here one in manual mode, which registers straight away) is refused and never
/// listed, as a removed member that wakes after its removal is.
#[test]
fn a_node_the_controller_does_not_know_cannot_register_with_its_leader() {
    let nodes: Vec<TestNode> = (0..2).map(|_| TestNode::start(settings())).collect();
    form_cluster(&nodes);
    let mut manual = settings();
    manual.failover = "manual";
    let stranger = TestNode::start(manual);
    let body = role_body("follower", Some("neville"), Some(&nodes[0].peer_address()));
    let reply = stranger.admin("POST", "/admin/node/current", Some(&body));
    reply.assert_error(7034);
    assert!(reply.message().contains("neville is no member of this cluster"), "{}", reply.text);
    let listed = nodes[0].admin("GET", "/admin/nodes", None).json;
    let rows = listed["nodes"].as_array().cloned().unwrap_or_default();
    assert!(rows.iter().all(|row| row["name"] != "neville"), "{listed}");
    assert_eq!(role_of(&stranger).as_deref(), Some("admin"));
}

#[test]
fn a_planned_transfer_under_load_moves_the_leadership_and_loses_nothing() {
    let nodes = three_nodes();
    form_cluster(&nodes);
    let writer = Writer::start(endpoints(&nodes));
    assert!(wait_until(Duration::from_secs(20), || writer.acknowledged_count() > 300));
    assert!(wait_until(Duration::from_secs(30), || all_in_sync(&nodes[0])));
    let asked_at = Instant::now();
    transfer(&nodes, 0, 1);
    nodes[2].admin("GET", "/admin/jobs/12345", None).assert_error(7037);
    let before = writer.acknowledged_count();
    assert!(wait_until(Duration::from_secs(20), || writer.acknowledged_count() > before + 300));
    // Asked of a follower, the transfer goes through the leader, once harry is in sync again.
    assert!(wait_until(Duration::from_secs(30), || all_in_sync(&nodes[1])));
    transfer(&nodes, 2, 0);
    let pause = writer.longest_pause_since(asked_at);
    eprintln!("longest pause between acknowledged writes during the transfers: {pause:?}");
    let acknowledged = writer.finish();
    assert_holds(&nodes[0], &acknowledged, "the leader after two transfers");
    // A learner, an unknown member or the leader itself are refused.
    let unknown = nodes[0].admin("POST", "/admin/leader/transfer", Some(r#"{"to": "voldemort"}"#));
    unknown.assert_error(7019);
    let itself = nodes[0].admin("POST", "/admin/leader/transfer", Some(r#"{"to": "harry"}"#));
    itself.assert_error(7034);
    let garbage = nodes[0].admin("POST", "/admin/leader/transfer", Some("{\"to\": 3}"));
    garbage.assert_error(3076);
}

#[test]
fn members_join_and_leave_at_runtime_under_load_and_it_survives_a_restart_of_every_node() {
    let mut nodes = three_nodes();
    let mut settings = nodes[0].settings.clone();
    settings.server_mode = "admin";
    nodes.push(TestNode::start(settings));
    form_cluster(&nodes[..3]);
    let writer = Writer::start(endpoints(&nodes));
    assert!(wait_until(Duration::from_secs(20), || writer.acknowledged_count() > 200));
    set_role(&nodes[3], "learner", "neville", Some(&nodes[1]));
    let listed = |node: &TestNode| node.admin("GET", "/admin/nodes", None).json;
    let learner_listed = wait_until(Duration::from_secs(20), || {
        let listed = listed(&nodes[0]);
        let rows = listed["nodes"].as_array().cloned().unwrap_or_default();
        rows.iter().any(|row| row["name"] == "neville" && row["controller"] == "learner")
    });
    assert!(learner_listed, "{}", listed(&nodes[0]));
    assert!(wait_until(Duration::from_secs(30), || all_in_sync_but_learners(&nodes[0])));
    // The leader removed under load, asked of the learner: it hands over first, then goes
    // back to admin mode.
    nodes[3].admin("DELETE", "/admin/node/harry", None).assert_ok();
    let mut leader = None;
    assert!(wait_until(Duration::from_secs(20), || {
        leader = leader_of(&nodes).filter(|index| *index != 0);
        leader.is_some()
    }));
    let leader = leader.expect("a new leader");
    assert!(wait_until(Duration::from_secs(20), || role_of(&nodes[0]).as_deref() == Some("admin")));
    // Two voters are left and min_insync_replicas is 2: neither may go.
    let other = if leader == 1 { 2 } else { 1 };
    let refused = nodes[leader].admin("DELETE", &format!("/admin/node/{}", NAMES[other]), None);
    refused.assert_error(7034);
    let before = writer.acknowledged_count();
    let going_on =
        wait_until(Duration::from_secs(30), || writer.acknowledged_count() > before + 200);
    assert!(going_on, "writes stopped after the removal:\n{}", all_logs(&nodes));
    let acknowledged = writer.finish();
    // Every node restarted at once: the two voters and the learner come back in their roles,
    // the removed node stays out.
    for node in &mut nodes {
        node.kill();
    }
    for node in &mut nodes {
        node.restart();
    }
    let mut leader = None;
    assert!(wait_until(Duration::from_secs(40), || {
        leader = leader_of(&nodes);
        leader.is_some()
    }));
    let leader = leader.expect("a leader after the restart");
    assert_ne!(leader, 0, "the removed node leads");
    let learns =
        wait_until(Duration::from_secs(30), || role_of(&nodes[3]).as_deref() == Some("learner"));
    assert!(learns, "{}", all_logs(&nodes));
    assert_eq!(role_of(&nodes[0]).as_deref(), Some("admin"));
    assert_holds(&nodes[leader], &acknowledged, "the leader after a removal and a restart");
}

/// Whether `leader` lists every voter in sync (learners never are).
fn all_in_sync_but_learners(leader: &TestNode) -> bool {
    let timeout = Duration::from_secs(1);
    let Ok(reply) = try_request(leader.http_port, "GET", "/admin/nodes", None, timeout) else {
        return false;
    };
    let rows = reply.json["nodes"].as_array().cloned().unwrap_or_default();
    rows.iter().filter(|row| row["controller"] != "learner").all(|row| row["in_sync"] == true)
}

#[test]
fn a_follower_out_of_sync_when_the_leader_dies_is_never_elected() {
    let mut nodes = three_nodes();
    form_cluster(&nodes);
    let writer = Writer::start(endpoints(&nodes));
    assert!(wait_until(Duration::from_secs(20), || all_in_sync(&nodes[0])));
    let ron = nodes[2].pid().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &ron]).status().unwrap().success());
    // Harry stops waiting for ron, who makes no progress, and records sets without him.
    let dropped = wait_until(Duration::from_secs(30), || {
        let listed = nodes[0].admin("GET", "/admin/nodes", None).json;
        let rows = listed["nodes"].as_array().cloned().unwrap_or_default();
        rows.iter().any(|row| row["name"] == "ron" && row["in_sync"] == false)
    });
    assert!(dropped, "ron never left the in-sync sets:\n{}", all_logs(&nodes));
    let before = writer.acknowledged_count();
    let going_on =
        wait_until(Duration::from_secs(20), || writer.acknowledged_count() > before + 200);
    assert!(going_on, "writes stopped without ron:\n{}", all_logs(&nodes));
    assert!(std::process::Command::new("kill").args(["-CONT", &ron]).status().unwrap().success());
    nodes[0].kill();
    let logs = || all_logs(&nodes);
    let successor = new_leader(&nodes, 0, &logs);
    assert_eq!(NAMES[successor], "hermione", "an out-of-sync member was elected:\n{}", logs());
    let after = writer.acknowledged_count();
    assert!(wait_until(Duration::from_secs(30), || writer.acknowledged_count() > after + 100));
    let acknowledged = writer.finish();
    assert_holds(&nodes[1], &acknowledged, "hermione after the failover");
}

#[test]
fn ctl_makes_a_cluster_in_one_go_and_waits_on_a_transfer_job() {
    let nodes: Vec<TestNode> = (0..3)
        .map(|_| {
            let mut settings = NodeSettings::cluster(1);
            settings.partitions = 2;
            settings.min_insync_replicas = 2;
            settings.failover = "automatic";
            TestNode::start(settings)
        })
        .collect();
    let strata = strata_tests::strata_binary().to_str().expect("UTF-8 path").to_string();
    let http = |index: usize| format!("127.0.0.1:{}", nodes[index].http_port);
    let ctl = |arguments: &[&str]| {
        strata_tests::run_tool_with(&strata, arguments, b"", Duration::from_secs(60))
    };
    let (leader, follower, learner) =
        (format!("harry@{}", http(0)), format!("hermione@{}", http(1)), format!("ron@{}", http(2)));
    let init =
        ctl(&["ctl", "init", "--leader", &leader, "--follower", &follower, "--learner", &learner]);
    assert!(init.success(), "{init:?}");
    assert_eq!(role_of(&nodes[2]).as_deref(), Some("learner"));
    assert!(wait_until(Duration::from_secs(30), || all_in_sync_but_learners(&nodes[0])));
    let transfer = ctl(&["ctl", "--http", &http(2), "transfer", "hermione"]);
    assert!(transfer.success(), "{transfer:?}\n{}", all_logs(&nodes));
    assert!(wait_until(Duration::from_secs(20), || leader_of(&nodes) == Some(1)));
    let jobs = ctl(&["ctl", "--http", &http(0), "jobs"]);
    let row = jobs.stdout.lines().find(|row| row.contains("transfer")).unwrap_or_default();
    assert!(row.contains("hermione") && row.contains("done"), "{jobs:?}");
    // The members' joins are jobs too, done once each is in sync (the learner: caught up).
    let joined = wait_until(Duration::from_secs(30), || {
        let jobs = ctl(&["ctl", "--http", &http(0), "jobs"]).stdout;
        jobs.lines().filter(|row| row.contains("join") && row.contains("done")).count() == 2
    });
    let jobs = ctl(&["ctl", "--http", &http(0), "jobs"]);
    assert!(joined, "{jobs:?}\n{}", all_logs(&nodes));
    // A learner cannot lead: the job is refused before it starts.
    let refused = ctl(&["ctl", "--http", &http(0), "transfer", "ron"]);
    assert_eq!(refused.status.and_then(|status| status.code()), Some(1), "{refused:?}");
    assert!(refused.stderr.contains("learner"), "{refused:?}");
}

#[test]
fn a_node_that_lost_its_data_comes_back_as_a_new_member_and_catches_up() {
    let mut nodes = three_nodes();
    form_cluster(&nodes);
    let mut client = nodes[0].client();
    let mut expected = BTreeMap::new();
    for number in 0..200 {
        let (key, value) = (format!("before:{number}"), format!("{number}"));
        let _: String = client.set(&key, &value).expect("write");
        expected.insert(key, value);
    }
    assert!(wait_until(Duration::from_secs(30), || all_in_sync(&nodes[0])));
    // The node that loses its data is the one leading the controller's Raft (the data leader
    // hands that over to a follower): its join then meets an election.
    let lost = controller_leader_among_followers(&nodes);
    let name = NAMES[lost];
    let other = 3 - lost;
    nodes[lost].kill();
    std::fs::remove_dir_all(nodes[lost].data_dir()).expect("lose the node's data");
    nodes[lost].restart();
    // Without its identity it waits in admin mode for a role, as any new node.
    assert_eq!(role_of(&nodes[lost]).as_deref(), Some("admin"));
    let body = role_body("follower", Some(name), Some(&nodes[other].peer_address()));
    let joined = nodes[lost].admin("POST", "/admin/node/current", Some(&body));
    assert!(joined.is_ok(), "{}\n{}", joined.text, all_logs(&nodes));
    assert!(wait_until(Duration::from_secs(30), || all_in_sync(&nodes[0])), "{}", all_logs(&nodes));
    // The controller has one Raft member of that name (the new one) among three voters.
    let listed = nodes[0].admin("GET", "/admin/nodes", None).json;
    let rows = listed["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.iter().filter(|row| row["name"] == name).count(), 1, "{listed}");
    // It holds everything: the leader can die and a follower takes over with it all.
    nodes[0].kill();
    let logs = || all_logs(&nodes);
    let successor = new_leader(&nodes, 0, &logs);
    assert_holds(&nodes[successor], &expected, "the new leader after the node came back");
    // It reads what it holds durably up to what its leader told it committed: it converges.
    let mut reader = nodes[lost].client();
    let converged = wait_until(Duration::from_secs(20), || {
        expected.iter().all(|(key, value)| {
            reader.get::<_, Option<String>>(key).ok().flatten().as_deref() == Some(value.as_str())
        })
    });
    assert!(converged, "{name} lacks writes it acknowledged before:\n{}", all_logs(&nodes));
}

/// The follower (index 1 or 2) leading the controller's Raft, once harry handed it over.
fn controller_leader_among_followers(nodes: &[TestNode]) -> usize {
    let mut listed = serde_json::Value::Null;
    let mut found = None;
    let handed_over = wait_until(Duration::from_secs(20), || {
        listed = nodes[0].admin("GET", "/admin/nodes", None).json;
        let leader = listed["controller_leader"].as_str().unwrap_or_default();
        found = NAMES[1..].iter().position(|name| *name == leader).map(|index| index + 1);
        found.is_some()
    });
    assert!(handed_over, "harry kept the controller's leadership: {listed}");
    found.expect("a follower leads the controller")
}

#[test]
fn a_voter_whose_disk_filled_opens_its_controller_again_and_still_votes() {
    // Each follower's controller directory is a small filesystem of its own, mounted before
    // it starts: its controller can run out of room, its partitions do not.
    let mut nodes = vec![TestNode::start(settings())];
    let mut disks = Vec::new();
    for _ in 1..3 {
        let mut node = TestNode::create(settings());
        disks.push(SmallDisk::mount(&node.data_dir().join("controller"), "8m"));
        node.spawn();
        nodes.push(node);
    }
    form_cluster(&nodes);
    let mut writer = Writer::start(endpoints(&nodes));
    assert!(wait_until(Duration::from_secs(20), || writer.acknowledged_count() > 100));
    // The disk that fills is that of the follower leading the controller's Raft (harry hands
    // that over): it cannot write, its Raft stops, and opened again it must not lead the
    // others (its first write would fail again, its heartbeats holding off their election).
    let full = controller_leader_among_followers(&nodes);
    let other = 3 - full;
    let ballast = nodes[full].data_dir().join("controller").join("ballast");
    fill(&ballast);
    // Have the controller commit something (a transfer's job): it fails with 7035 until
    // the other two elect a leader without the full member; ask again meanwhile.
    let body = format!(r#"{{"to": "{}"}}"#, NAMES[other]);
    let mut reply = nodes[0].admin("POST", "/admin/leader/transfer", Some(&body));
    let accepted = wait_until(Duration::from_secs(30), || {
        if !reply.is_ok() {
            reply = nodes[0].admin("POST", "/admin/leader/transfer", Some(&body));
        }
        reply.is_ok()
    });
    assert!(accepted, "{}\n{}", reply.text, all_logs(&nodes));
    // The job ends (a transfer may fail under load: the target did not catch up in time),
    // and once it is done the target leads: harry passes through admin mode on the way.
    let job = reply.json["job_id"].as_u64().expect("a job id");
    let mut shown = serde_json::Value::Null;
    let ended = wait_until(Duration::from_secs(30), || {
        shown = nodes[0].admin("GET", &format!("/admin/jobs/{job}"), None).json;
        shown["job"]["state"] == "done" || shown["job"]["state"] == "failed"
    });
    assert!(ended, "job {job} never ended: {shown}\n{}", all_logs(&nodes));
    if shown["job"]["state"] == "done" {
        let moved = wait_until(Duration::from_secs(20), || leader_of(&nodes) == Some(other));
        assert!(moved, "{} does not lead:\n{}", NAMES[other], all_logs(&nodes));
    }
    let stopped = wait_until(Duration::from_secs(30), || {
        nodes[full].log().contains("the controller stopped; opening it again")
    });
    assert!(stopped, "the full member's controller never failed:\n{}", all_logs(&nodes));
    std::fs::remove_file(&ballast).expect("remove the ballast");
    let reopened = wait_until(Duration::from_secs(30), || {
        nodes[full].log().contains("the controller runs again")
    });
    assert!(reopened, "the controller was not opened again:\n{}", all_logs(&nodes));
    // With the leader gone, the other two are the controller's majority: without the once
    // full member's controller nobody could be appointed.
    writer = finish_and_restart(writer, &nodes);
    let leader = new_or_same_leader(&nodes);
    nodes[leader].kill();
    let logs = || all_logs(&nodes);
    let successor = new_leader(&nodes, leader, &logs);
    let acknowledged = writer.finish();
    assert_holds(&nodes[successor], &acknowledged, "every acknowledged write");
}

/// Stops `writer`, checks what it wrote is on the leader, and starts another one.
fn finish_and_restart(writer: Writer, nodes: &[TestNode]) -> Writer {
    let acknowledged = writer.finish();
    let leader = new_or_same_leader(nodes);
    assert_holds(&nodes[leader], &acknowledged, "every acknowledged write");
    Writer::start(endpoints(nodes))
}

/// Writes zeros to `path` until its filesystem is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create the ballast");
    let block = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        if file.write_all(&block).and_then(|()| file.sync_all()).is_err() {
            return;
        }
    }
    panic!("the disk never filled");
}

#[test]
fn removed_members_leave_when_they_lead_the_controller_or_were_paused_when_removed() {
    let mut nodes = three_nodes();
    nodes.push(TestNode::start(settings()));
    set_role(&nodes[0], "leader", NAMES[0], None);
    for (index, name) in [(1, NAMES[1]), (2, NAMES[2]), (3, "neville")] {
        set_role(&nodes[index], "follower", name, Some(&nodes[0]));
    }
    let names = [NAMES[0], NAMES[1], NAMES[2], "neville"];
    let writer = Writer::start(endpoints(&nodes));
    assert!(wait_until(Duration::from_secs(20), || writer.acknowledged_count() > 100));
    // The member leading the controller's Raft removed: it hands that over and leaves.
    let mut listed = serde_json::Value::Null;
    let known = wait_until(Duration::from_secs(20), || {
        listed = nodes[0].admin("GET", "/admin/nodes", None).json;
        listed["controller_leader"].is_string()
    });
    assert!(known, "no controller leader: {listed}");
    let controller_leader = listed["controller_leader"].as_str().expect("a controller leader");
    let first = names.iter().position(|name| *name == controller_leader).expect("a member");
    let leader = new_or_same_leader(&nodes);
    let reply = nodes[leader].admin("DELETE", &format!("/admin/node/{controller_leader}"), None);
    assert!(reply.is_ok(), "{}\n{}", reply.text, all_logs(&nodes));
    let left =
        wait_until(Duration::from_secs(20), || role_of(&nodes[first]).as_deref() == Some("admin"));
    assert!(left, "{controller_leader} did not leave:\n{}", all_logs(&nodes));
    let dismissed = wait_until(Duration::from_secs(20), || {
        let named = format!("\"{controller_leader}\"");
        nodes.iter().any(|node| {
            let log = node.log();
            let mut lines = log.lines();
            lines.any(|line| line.contains("a removed member leaves the") && line.contains(&named))
        })
    });
    assert!(dismissed, "{controller_leader} stays in Raft:\n{}", all_logs(&nodes));
    // A follower paused past the removal's message: it learns its removal when it wakes.
    // Neither the data leader nor the controller's: a plain follower.
    let leader = new_or_same_leader(&nodes);
    let listed = nodes[leader].admin("GET", "/admin/nodes", None).json;
    let controller_leader = listed["controller_leader"].as_str().unwrap_or_default().to_string();
    let second = (0..4)
        .find(|index| ![first, leader].contains(index) && names[*index] != controller_leader)
        .expect("a follower");
    // One job at a time: the first removal's job ends after its member left.
    let idle = wait_until(Duration::from_secs(20), || {
        let jobs = nodes[leader].admin("GET", "/admin/jobs", None).json;
        jobs["jobs"].as_array().is_some_and(|jobs| jobs.iter().all(|job| job["state"] != "running"))
    });
    assert!(idle, "{}", nodes[leader].admin("GET", "/admin/jobs", None).text);
    let pid = nodes[second].pid().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let path = format!("/admin/node/{}", names[second]);
    let reply = nodes[leader].admin("DELETE", &path, None);
    assert!(reply.is_ok(), "{}\n{}", reply.text, all_logs(&nodes));
    std::thread::sleep(Duration::from_secs(2));
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let left = wait_until(Duration::from_secs(20), || {
        role_of(&nodes[second]).as_deref() == Some("admin")
            && !nodes[second].data_dir().join("controller").exists()
    });
    assert!(left, "{} did not leave:\n{}", names[second], all_logs(&nodes));
    let rows = |node: &TestNode| node.admin("GET", "/admin/nodes", None).json;
    let two = wait_until(Duration::from_secs(20), || {
        rows(&nodes[leader])["nodes"].as_array().is_some_and(|rows| rows.len() == 2)
    });
    assert!(two, "{}", rows(&nodes[leader]));
    let before = writer.acknowledged_count();
    let going_on =
        wait_until(Duration::from_secs(30), || writer.acknowledged_count() > before + 100);
    assert!(going_on, "writes stopped after the removals:\n{}", all_logs(&nodes));
    let acknowledged = writer.finish();
    let leader = new_or_same_leader(&nodes);
    assert_holds(&nodes[leader], &acknowledged, "every acknowledged write");
}

/// The node that leads once exactly one says so.
fn new_or_same_leader(nodes: &[TestNode]) -> usize {
    let mut found = None;
    let elected = wait_until(Duration::from_secs(30), || {
        found = leader_of(nodes);
        found.is_some()
    });
    assert!(elected, "no leader:\n{}", all_logs(nodes));
    found.expect("a leader")
}

#[test]
fn with_min_insync_one_every_shrink_is_recorded_by_the_controller_before_it_takes_effect() {
    let mut nodes: Vec<TestNode> = (0..3)
        .map(|_| {
            let mut settings = settings();
            settings.min_insync_replicas = 1;
            TestNode::start(settings)
        })
        .collect();
    form_cluster(&nodes);
    let writer = Writer::start(endpoints(&nodes));
    assert!(wait_until(Duration::from_secs(20), || writer.acknowledged_count() > 100));
    // Ron dies: the leader's sets shrink to {harry, hermione}, through the controller.
    nodes[2].kill();
    let listed = |node: &TestNode| node.admin("GET", "/admin/nodes", None).json;
    let shrunk = wait_until(Duration::from_secs(20), || {
        let rows = listed(&nodes[0])["nodes"].as_array().cloned().unwrap_or_default();
        let in_sync =
            |name: &str| rows.iter().any(|row| row["name"] == name && row["in_sync"] == true);
        in_sync("harry") && in_sync("hermione") && !in_sync("ron")
    });
    assert!(shrunk, "{}\n{}", listed(&nodes[0]), all_logs(&nodes));
    let before = writer.acknowledged_count();
    assert!(wait_until(Duration::from_secs(20), || writer.acknowledged_count() > before + 100));
    // Harry dies too, with ron down: hermione, in the set the controller recorded, takes
    // over with ron's vote once ron is back, and holds every acknowledged write.
    nodes[0].kill();
    nodes[2].restart();
    let logs = || all_logs(&nodes);
    let successor = new_leader(&nodes, 0, &logs);
    assert_eq!(successor, 1, "only hermione is in the recorded set:\n{}", all_logs(&nodes));
    let acknowledged = writer.finish();
    assert_holds(&nodes[1], &acknowledged, "every acknowledged write");
}

#[test]
fn a_join_answers_a_job_that_ends_once_the_member_is_in_sync_or_caught_up() {
    let nodes = three_nodes();
    set_role(&nodes[0], "leader", NAMES[0], None);
    let leader = nodes[0].peer_address();
    let joins = [(1, "follower", NAMES[1]), (2, "learner", NAMES[2])];
    for (index, role, name) in joins {
        if role == "learner" {
            // Something to catch up on (min_insync_replicas = 2: writes need the follower).
            let mut client = nodes[0].client();
            for number in 0..200 {
                let _: String = client.set(format!("key:{number}"), number).expect("a write");
            }
        }
        let body = role_body(role, Some(name), Some(&leader));
        let reply = nodes[index].admin("POST", "/admin/node/current", Some(&body));
        let id = reply.assert_ok()["job_id"].as_u64().expect("a job id");
        let mut job = serde_json::Value::Null;
        let done = wait_until(Duration::from_secs(30), || {
            job = nodes[0].admin("GET", &format!("/admin/jobs/{id}"), None).json["job"].clone();
            job["state"] == "done"
        });
        assert!(done, "{job}\n{}", all_logs(&nodes));
        assert_eq!((job["kind"].as_str(), job["subject"].as_str()), (Some("join"), Some(name)));
    }
    // The follower is in sync everywhere once its job is done.
    let rows = nodes[0].admin("GET", "/admin/nodes", None).json;
    let rows = rows["nodes"].as_array().cloned().unwrap_or_default();
    let follower = rows.iter().find(|row| row["name"] == NAMES[1]).expect("hermione listed");
    assert_eq!(follower["in_sync"], true, "{rows:?}");
}
