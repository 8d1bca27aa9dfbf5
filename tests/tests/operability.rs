//! What an operator's tools see of a real node: liveness and readiness through a node's life,
//! `strata ctl health`, the admin token, systemd's readiness notification, the config check,
//! JSON logs, completions and the manual page.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_tests::admin::{role_body, set_role, try_request_with, wait_until, AdminReply};
use strata_tests::{run_tool, strata_binary, NodeSettings, TestNode};

const TOKEN: &str = "test-admin-token";

fn get(node: &TestNode, path: &str) -> AdminReply {
    node.admin("GET", path, None)
}

/// `/readyz`'s reason, or "ready".
fn readiness(node: &TestNode) -> String {
    let reply = get(node, "/readyz");
    match reply.status {
        200 => "ready".into(),
        503 => reply.json["reason"].as_str().unwrap_or("?").to_string(),
        other => panic!("/readyz answered {other}: {}", reply.text),
    }
}

/// `strata ctl <arguments>` against `node`'s admin port: (exit code, stdout, stderr).
fn ctl(node: &TestNode, arguments: &[&str]) -> (i32, String, String) {
    let output = Command::new(strata_binary())
        .args(["ctl", "--http", &format!("127.0.0.1:{}", node.http_port)])
        .args(arguments)
        .env_remove("STRATA_ADMIN_TOKEN")
        .output()
        .expect("run strata ctl");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

fn signal(node: &TestNode, signal: i32) {
    let pid = node.pid().expect("running") as i32;
    // SAFETY: kill(2) on a child process of this test.
    unsafe { libc::kill(pid, signal) };
}

#[test]
fn health_follows_a_node_through_its_life() {
    let mut leader = TestNode::start(NodeSettings::cluster(1));
    let mut follower = TestNode::start(NodeSettings::cluster(1));
    assert_eq!(get(&follower, "/healthz").json["status"], "ok");
    assert!(readiness(&follower).contains("admin mode"), "{}", readiness(&follower));
    set_role(&leader, "leader", "boss", None);
    assert_eq!(readiness(&leader), "ready");
    {
        let mut client = leader.client();
        for index in 0..2000 {
            let _: () = redis::cmd("SET")
                .arg(format!("key:{index}"))
                .arg("x".repeat(512))
                .query(&mut client)
                .expect("SET");
        }
    }
    // The follower's readiness while it joins: each state seen is one the node may pass
    // through, in order, and it ends ready.
    let port = follower.http_port;
    let watcher = std::thread::spawn(move || {
        let mut seen: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let reply = strata_tests::admin::request(port, "GET", "/readyz", None);
            let state = if reply.status == 200 {
                "ready".to_string()
            } else {
                reply.json["reason"].as_str().unwrap_or("?").to_string()
            };
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if state == "ready" {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    });
    set_role(&follower, "follower", "f1", Some(&leader));
    let seen = watcher.join().expect("watcher");
    assert_eq!(seen.last().map(String::as_str), Some("ready"), "{seen:?}");
    for state in &seen {
        let allowed = ["admin mode", "no leader known", "catching up", "ready"];
        assert!(allowed.iter().any(|prefix| state.starts_with(prefix)), "{seen:?}");
    }
    println!("readiness while joining: {seen:?}");
    // The leader's shards publish the new follower's progress a moment later.
    let mut out = String::new();
    let healthy = wait_until(Duration::from_secs(10), || {
        let (code, text, _) = ctl(&leader, &["health"]);
        out = text;
        code == 0
    });
    assert!(healthy, "{out}");
    assert!(out.starts_with("healthy"), "{out}");
    assert!(out.contains("f1") && out.contains("yes"), "{out}");

    // The leader stops answering: the follower is alive but not ready.
    signal(&leader, libc::SIGSTOP);
    let lost = wait_until(Duration::from_secs(10), || {
        readiness(&follower).starts_with("the leader does not answer")
    });
    assert!(lost, "{}", readiness(&follower));
    let (code, out, _) = ctl(&follower, &["health"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("UNHEALTHY") && out.contains("boss"), "{out}");

    // The leader answers again, then stops answering just before the follower is told to
    // stop: the follower, which has not noticed yet, tries to say goodbye (at most 2 s) and
    // meanwhile answers that it shuts down.
    signal(&leader, libc::SIGCONT);
    let back = wait_until(Duration::from_secs(10), || readiness(&follower) == "ready");
    assert!(back, "{}", readiness(&follower));
    signal(&leader, libc::SIGSTOP);
    signal(&follower, libc::SIGTERM);
    let draining = wait_until(Duration::from_secs(2), || {
        let reply = strata_tests::admin::try_request(
            follower.http_port,
            "GET",
            "/readyz",
            None,
            Duration::from_secs(1),
        );
        reply.is_ok_and(|reply| reply.json["reason"] == "shutting down")
    });
    assert!(draining, "no 'shutting down' seen:\n{}", follower.log());
    assert!(follower.wait_exit(Duration::from_secs(10)).is_some(), "the follower did not stop");
    signal(&leader, libc::SIGCONT);
    leader.kill();
}

#[test]
fn a_leader_short_of_in_sync_members_is_not_ready_and_unhealthy() {
    let settings = || NodeSettings { min_insync_replicas: 2, ..NodeSettings::cluster(1) };
    let leader = TestNode::start(settings());
    let mut follower = TestNode::start(settings());
    set_role(&leader, "leader", "boss", None);
    set_role(&follower, "follower", "f1", Some(&leader));
    // The shards publish their in-sync sets a moment after the follower joins.
    let healthy = wait_until(Duration::from_secs(20), || {
        readiness(&leader) == "ready" && get(&leader, "/admin/health").json["healthy"] == true
    });
    let health = get(&leader, "/admin/health");
    assert!(healthy, "{}", health.text);
    assert_eq!(health.json["smallest_in_sync_set"], 2, "{}", health.text);

    follower.kill();
    let refused = wait_until(Duration::from_secs(15), || {
        let problems = get(&leader, "/admin/health").json["problems"].to_string();
        readiness(&leader).contains("refuse writes") && problems.contains("f1")
    });
    assert!(refused, "{}", get(&leader, "/admin/health").text);
    let health = get(&leader, "/admin/health");
    let problems = health.json["problems"].to_string();
    assert!(problems.contains("f1") && problems.contains("min_insync_replicas"), "{problems}");
    let (code, out, _) = ctl(&leader, &["--json", "health"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"healthy\":false"), "{out}");
}

fn with_token(settings: NodeSettings) -> NodeSettings {
    NodeSettings { admin_token: Some(TOKEN.into()), ..settings }
}

fn request(node: &TestNode, token: Option<&str>, method: &str, path: &str) -> AdminReply {
    try_request_with(node.http_port, token, method, path, None, Duration::from_secs(30))
        .expect("admin answer")
}

#[test]
fn the_admin_token_guards_every_admin_route() {
    let node = TestNode::start(with_token(NodeSettings::cluster(1)));
    for (method, path) in [
        ("GET", "/admin/node/current"),
        ("GET", "/admin/nodes"),
        ("GET", "/admin/configs"),
        ("GET", "/admin/health"),
        ("POST", "/admin/node/current"),
        ("DELETE", "/admin/node/anyone"),
    ] {
        for token in [None, Some("wrong"), Some("")] {
            let reply = request(&node, token, method, path);
            assert_eq!(reply.status, 401, "{method} {path} with {token:?}: {}", reply.text);
            assert_eq!(reply.code(), Some(7040), "{}", reply.text);
        }
    }
    // Nothing was done: the node is still in admin mode.
    let current = request(&node, Some(TOKEN), "GET", "/admin/node/current");
    assert_eq!(current.json["node"]["role"], "admin", "{}", current.text);
    // The health routes stay open to load balancers.
    assert_eq!(request(&node, None, "GET", "/healthz").status, 200);
    assert_eq!(request(&node, None, "GET", "/readyz").status, 503);
    // The listing never shows the token itself.
    let configs = request(&node, Some(TOKEN), "GET", "/admin/configs");
    assert_eq!(configs.json["admin_token"], "(set)", "{}", configs.text);
    assert!(!configs.text.contains(TOKEN));

    let (code, _, err) = ctl(&node, &["nodes"]);
    assert_eq!(code, 1);
    assert!(err.contains("7040") && err.contains("Bearer"), "{err}");
    let (code, out, err) = ctl(&node, &["--token", TOKEN, "set-role", "standalone"]);
    assert_eq!(code, 0, "{out}{err}");
    let token_file = node.directory.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let file_argument = token_file.display().to_string();
    let (code, out, err) = ctl(&node, &["--token-file", &file_argument, "health"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("standalone"), "{out}");
}

#[test]
fn cluster_init_passes_the_shared_admin_token_to_its_members() {
    let leader = TestNode::start(with_token(NodeSettings::cluster(1)));
    let follower = TestNode::start(with_token(NodeSettings::cluster(1)));
    let output = Command::new(strata_binary())
        .args(["ctl", "init", "--leader", &format!("boss@127.0.0.1:{}", leader.http_port)])
        .args(["--follower", &format!("f1@127.0.0.1:{}", follower.http_port)])
        .env("STRATA_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run strata ctl init");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{out}{err}");
    assert!(out.contains("f1: follower (ok)"), "{out}");
    let current = request(&follower, Some(TOKEN), "GET", "/admin/node/current");
    assert_eq!(current.json["node"]["role"], "follower", "{}", current.text);
    // A set-role body without the token changes nothing.
    let body = role_body("admin", None, None);
    let reply = try_request_with(
        follower.http_port,
        None,
        "POST",
        "/admin/node/current",
        Some(&body),
        Duration::from_secs(10),
    )
    .expect("answer");
    assert_eq!(reply.status, 401, "{}", reply.text);
}

#[test]
fn systemd_hears_ready_only_once_the_node_serves() {
    let mut node = TestNode::create(NodeSettings::default());
    let socket_path = node.directory.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    node.settings.environment.push(("NOTIFY_SOCKET".into(), socket_path.display().to_string()));
    node.spawn();
    let mut buffer = [0u8; 256];
    let length = socket.recv(&mut buffer).expect("a notification");
    let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
    assert!(message.contains("READY=1"), "{message}");
    // Ready means serving: the client port answers at once.
    assert!(strata_tests::ping(node.port), "READY=1 came before the node served");
    signal(&node, libc::SIGTERM);
    let length = socket.recv(&mut buffer).expect("a notification at stop");
    assert!(String::from_utf8_lossy(&buffer[..length]).contains("STOPPING=1"));
    assert!(node.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn check_config_names_what_is_wrong() {
    let node = TestNode::create(NodeSettings::default());
    let config = node.config_path().display().to_string();
    let (ok, out, err) = run_tool(
        strata_binary().to_str().expect("path"),
        &["node", "--config", &config, "--check-config"],
    );
    assert!(ok && out.contains("valid"), "{out}{err}");
    let broken = node.directory.path().join("broken.toml");
    std::fs::write(&broken, "[security]\nrequirepass_file = \"/nonexistent/pass\"\n")
        .expect("write");
    let output = Command::new(strata_binary())
        .args(["node", "--check-config"])
        .env("STRATA_CONFIG", &broken)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("security.requirepass_file"), "{err}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let settings =
        NodeSettings { extra: "[log]\nlog_format = \"json\"\n".into(), ..Default::default() };
    let mut node = TestNode::start(settings);
    node.kill();
    let log = node.log();
    let lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        assert!(value["level"].is_string() && value["timestamp"].is_string(), "{line}");
    }
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    let binary = strata_binary();
    let binary = binary.to_str().expect("path");
    let (ok, out, _) = run_tool(binary, &["completions", "bash"]);
    assert!(ok && out.contains("_strata") && out.contains("check-config"), "{out}");
    let (ok, out, _) = run_tool(binary, &["man"]);
    assert!(ok && out.contains(".TH strata") && out.contains("ctl"), "{out}");
}

/// The `Cpus_allowed_list` of each of `node`'s shard threads, by thread name.
fn shard_thread_cores(node: &TestNode) -> Vec<(String, String)> {
    let pid = node.pid().expect("the node runs");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the node's threads");
    let mut found: Vec<(String, String)> = tasks
        .flatten()
        .filter_map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let cores = status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
            let name = name.trim().to_string();
            name.starts_with("shard-").then(|| (name, cores.trim().to_string()))
        })
        .collect();
    found.sort();
    found
}

/// How many cores a `Cpus_allowed_list` (`0-1`, `0,2-3`) names.
fn allowed_core_count(list: &str) -> u32 {
    list.split(',')
        .map(|item| match item.split_once('-') {
            Some((first, last)) => {
                last.parse::<u32>().expect("a core") - first.parse::<u32>().expect("a core") + 1
            }
            None => 1,
        })
        .sum()
}

#[test]
fn cpu_affinity_pins_shards_to_the_cores_given_and_warns_of_a_shared_core() {
    let own = std::fs::read_to_string("/proc/self/status").expect("status");
    let allowed = own.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:")).unwrap();
    let loose = TestNode::start(NodeSettings { cpu_affinity: "none", ..Default::default() });
    let cores = shard_thread_cores(&loose);
    assert_eq!(cores.len(), 2, "{cores:?}");
    assert!(cores.iter().all(|(_, list)| list == allowed.trim()), "{cores:?} vs {allowed}");
    let pinned = TestNode::start(NodeSettings { cpu_affinity: "0", ..Default::default() });
    let expected = vec![("shard-0".to_string(), "0".to_string()), ("shard-1".into(), "0".into())];
    assert_eq!(shard_thread_cores(&pinned), expected);
    let second = TestNode::start(NodeSettings { cpu_affinity: "0", ..Default::default() });
    let warned = wait_until(Duration::from_secs(5), || {
        second.log().contains("another node's shard thread is pinned to a core")
    });
    assert!(warned, "{}", second.log());
    // `auto` pins only when the shards leave a core free: with as many shards as cores a
    // client on the same machine would have to preempt a pinned shard.
    let count = allowed_core_count(allowed.trim());
    let every_core = NodeSettings { cpu_affinity: "auto", shards: count, ..Default::default() };
    let every_core = TestNode::start(every_core);
    let cores = shard_thread_cores(&every_core);
    assert!(cores.iter().all(|(_, list)| list == allowed.trim()), "{cores:?} vs {allowed}");
    if count > 1 {
        let fewer = NodeSettings { cpu_affinity: "auto", shards: 1, ..Default::default() };
        let cores = shard_thread_cores(&TestNode::start(fewer));
        let first = allowed.trim().split([',', '-']).next().expect("a core").to_string();
        assert_eq!(cores, vec![("shard-0".to_string(), first)]);
    }
    // A core this process may not use is refused before anything starts.
    let refused = TestNode::create(NodeSettings { cpu_affinity: "1000", ..Default::default() });
    let config = refused.config_path().display().to_string();
    let (ok, out, err) = run_tool(
        strata_binary().to_str().expect("path"),
        &["node", "--config", &config, "--check-config"],
    );
    assert!(!ok && err.contains("general.cpu_affinity"), "{out}{err}");
}

/// `GET /debug/events` tells a load tool what the node did, and `strata bench --events-from`
/// puts it on its timeline: a leader with small segments and snapshots rolls and snapshots
/// under load, its follower streams from it, and both show their rounds per interval.
#[test]
fn the_bench_timeline_shows_each_nodes_rounds_and_events() {
    let small_logs = || NodeSettings {
        partitions: 2,
        segment_size: "64KB",
        snapshot_size: "256KB",
        ..NodeSettings::cluster(1)
    };
    let leader = TestNode::start(small_logs());
    set_role(&leader, "leader", "boss", None);
    let follower = TestNode::start(small_logs());
    set_role(&follower, "follower", "f1", Some(&leader));
    // The follower's stream started: an event on both sides.
    let kinds = |node: &TestNode| -> Vec<String> {
        let reply = node.admin("GET", "/debug/events?since=0", None);
        let events = reply.assert_ok()["events"].as_array().cloned().unwrap_or_default();
        events.iter().map(|event| event["kind"].as_str().unwrap_or("").to_owned()).collect()
    };
    assert!(wait_until(Duration::from_secs(10), || {
        kinds(&leader).contains(&"replica_connected".to_owned())
            && kinds(&follower).contains(&"leader_connected".to_owned())
    }));
    follower.admin("GET", "/debug/events?since=ten", None).assert_error(3067);
    let leader_events = format!("127.0.0.1:{}", leader.http_port);
    let follower_events = format!("127.0.0.1:{}", follower.http_port);
    let port = leader.port.to_string();
    let (ok, stdout, stderr) = run_tool(
        strata_binary().to_str().unwrap(),
        &[
            "bench",
            "--port",
            &port,
            "--connections",
            "8",
            "--pipeline",
            "16",
            "--value-bytes",
            "512",
            "--duration-seconds",
            "2",
            "--after-batch",
            "WAITAOF 1 1 0",
            "--events-from",
            &leader_events,
            "--events-from",
            &follower_events,
            "--json",
            "--quiet",
        ],
    );
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["errors"].as_u64(), Some(0), "{stdout}");
    let timeline = &report["timeline"];
    assert_eq!(timeline["interval_ms"].as_u64(), Some(100), "{timeline}");
    let intervals = timeline["intervals"].as_array().unwrap();
    let replies: u64 = intervals.iter().map(|interval| interval["replies"].as_u64().unwrap()).sum();
    assert_eq!(Some(replies), report["requests"].as_u64(), "every reply is in one interval");
    for node in timeline["nodes"].as_array().unwrap() {
        assert!(node["events_error"].is_null(), "{node}");
    }
    // Per node: the rounds of the run and the events of the leader's logs.
    let node_total = |node: usize, counter: &str| -> u64 {
        let counter_of =
            |interval: &serde_json::Value| interval["nodes"][node]["counters"][counter].as_u64();
        intervals.iter().filter_map(counter_of).sum()
    };
    assert!(node_total(0, "frames_written") > 0 && node_total(1, "frames_written") > 0);
    // Only the leader waits for acknowledgements, and it measures each round's wait.
    assert!(node_total(0, "replication_waits") > 0);
    assert_eq!(node_total(1, "replication_waits"), 0);
    let leader_kinds: Vec<&str> = intervals
        .iter()
        .flat_map(|interval| interval["nodes"][0]["events"].as_array().unwrap().iter())
        .filter_map(|event| event["kind"].as_str())
        .collect();
    for kind in ["segment_roll", "snapshot"] {
        assert!(leader_kinds.contains(&kind), "no {kind} in {leader_kinds:?}");
    }
}
