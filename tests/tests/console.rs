//! The admin console at `/`: the state it polls (`GET /admin/console`) over HTTP, and the page
//! itself loaded in a real headless Chromium against a running three-node cluster.
//!
//! Chromium comes from Debian (`scripts/setup.sh` installs it). Without it the browser test
//! fails when `CI` is set and is skipped, loudly, otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_tests::admin::{role_body, try_request_with, wait_until, AdminReply};
use strata_tests::{NodeSettings, TestNode};

const TOKEN: &str = "console-test-token";
const NAMES: [&str; 3] = ["harry", "hermione", "ron"];
/// How long one browser run may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

fn settings() -> NodeSettings {
    NodeSettings { admin_token: Some(TOKEN.into()), ..NodeSettings::cluster(1) }
}

fn request(node: &TestNode, token: Option<&str>, method: &str, path: &str) -> AdminReply {
    request_with_body(node, token, method, path, None)
}

fn request_with_body(
    node: &TestNode,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> AdminReply {
    try_request_with(node.http_port, token, method, path, body, Duration::from_secs(30))
        .expect("admin answer")
}

/// Sets `node`'s role with the admin token, following `leader` if given.
fn set_role(node: &TestNode, role: &str, name: &str, leader: Option<&TestNode>) {
    let address = leader.map(TestNode::peer_address);
    let body = role_body(role, Some(name), address.as_deref());
    let reply = request_with_body(node, Some(TOKEN), "POST", "/admin/node/current", Some(&body));
    reply.assert_ok();
}

fn console(node: &TestNode) -> Value {
    let reply = request(node, Some(TOKEN), "GET", "/admin/console");
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

/// A GET without the token: status, content type, Content-Security-Policy, body.
fn get_page(node: &TestNode, path: &str) -> (u16, String, String, String) {
    let url = format!("http://127.0.0.1:{}{path}", node.http_port);
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.get(&url).call().expect("the admin port answers");
    let header = |name: &str| {
        let value = response.headers().get(name).and_then(|value| value.to_str().ok());
        value.unwrap_or_default().to_string()
    };
    let (content_type, policy) = (header("content-type"), header("content-security-policy"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("a text body");
    (status, content_type, policy, body)
}

#[test]
fn the_console_page_is_open_and_its_state_needs_the_token() {
    let node = TestNode::start(settings());
    let (status, content_type, policy, body) = get_page(&node, "/");
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"));
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(body.contains("/console.js") && body.contains("login-form"), "{body}");
    assert!(!body.contains("http://") && !body.contains("https://"), "no external address");
    let (status, content_type, _, script) = get_page(&node, "/console.js");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/javascript"), "{content_type}");
    assert!(!script.contains("innerHTML"), "data goes into the page as text only");
    let (status, content_type, _, _) = get_page(&node, "/console.css");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/css"), "{content_type}");

    for token in [None, Some("wrong")] {
        let reply = request(&node, token, "GET", "/admin/console");
        assert_eq!(reply.status, 401, "{}", reply.text);
        assert_eq!(reply.code(), Some(7040), "{}", reply.text);
    }
    set_role(&node, "leader", "boss", None);
    let refused = request_with_body(&node, Some(TOKEN), "POST", "/admin/node/current", Some("{}"));
    assert!(!refused.is_ok(), "{}", refused.text);
}

#[test]
fn the_console_state_has_members_health_series_and_events() {
    let node = TestNode::start(settings());
    set_role(&node, "leader", "boss", None);
    let transfer = request_with_body(
        &node,
        Some(TOKEN),
        "POST",
        "/admin/leader/transfer",
        Some(r#"{"to":"x"}"#),
    );
    assert!(!transfer.is_ok(), "{}", transfer.text);
    // Two samples make the first point of the series.
    let sampled = wait_until(Duration::from_secs(10), || {
        console(&node)["series"]["commands_per_second"].as_array().is_some_and(|p| !p.is_empty())
    });
    assert!(sampled, "{}", console(&node));
    let state = console(&node);
    assert_eq!(state["error_code"], 0);
    assert_eq!(state["node"]["name"], "boss", "{state}");
    assert_eq!(state["node"]["role"], "leader", "{state}");
    assert!(state["node"]["epoch"].as_u64().is_some_and(|epoch| epoch > 0), "{state}");
    let members = state["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{state}");
    assert_eq!(members[0]["name"], "boss");
    assert_eq!(members[0]["status"], "alive");
    assert_eq!(members[0]["in_sync"], true, "{state}");
    assert!(state["health"]["healthy"].is_boolean(), "{state}");
    assert!(state["health"]["problems"].is_array(), "{state}");
    assert!(state["upload"].is_object() || state["upload"].is_null(), "{state}");

    let series = &state["series"];
    assert_eq!(series["interval_ms"], 1000);
    assert_eq!(series["samples_max"], 600);
    let length = series["time_ms"].as_array().expect("times").len();
    for key in ["commands_per_second", "errors_per_second", "p99_ms"] {
        assert_eq!(series[key].as_array().expect(key).len(), length, "{key}: {series}");
    }
    assert!(length < 600, "the ring keeps 600 samples, 599 intervals");

    let events = state["events"].as_array().expect("events");
    let texts: Vec<String> = events.iter().map(|event| event["text"].to_string()).collect();
    assert!(
        events.iter().any(|event| event["kind"] == "role"
            && event["text"].as_str().is_some_and(|text| text.contains("leader \"boss\""))),
        "{texts:?}"
    );
    assert!(
        events.iter().any(|event| event["kind"] == "refusal"
            && event["text"].as_str().is_some_and(|text| text.contains("transfer to x"))),
        "{texts:?}"
    );
    assert!(events.iter().all(|event| event["time_ms"].as_u64().is_some()), "{texts:?}");
    let sequence = |index: usize| events[index]["sequence"].as_u64().unwrap_or(0);
    assert!(sequence(0) > sequence(events.len() - 1), "newest first: {texts:?}");
}

/// Debian's Chromium, if installed.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|directory| ["chromium", "chromium-browser"].map(|name| directory.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium, or `None` when the test may be skipped; under `CI` a missing browser fails.
fn browser_or_skip(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: chromium is not installed (scripts/setup.sh installs it)"
        );
        eprintln!("*** SKIPPED {test}: chromium is not installed; run scripts/setup.sh ***");
    }
    found
}

/// Runs headless Chromium on `url` with `arguments` and a fresh profile in `profile`; answers
/// its standard output (the DOM after the scripts ran, with `--dump-dom`).
fn run_browser(browser: &Path, profile: &Path, arguments: &[&str], url: &str) -> String {
    let mut child = Command::new(browser)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .args(["--disable-dev-shm-usage", "--virtual-time-budget=4000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(arguments)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let started = Instant::now();
    while child.try_wait().expect("chromium's status").is_none() {
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("the reader ends")
}

/// The DOM of the console page at `url`, each run in a new profile (no token kept).
fn dump_dom(browser: &Path, scratch: &Path, url: &str) -> String {
    let profile = tempfile::tempdir_in(scratch).expect("a profile directory");
    run_browser(browser, profile.path(), &["--dump-dom"], url)
}

/// Writes to `node` for `duration`, so that the chart has something to show.
fn write_for(node: &TestNode, duration: Duration) {
    let mut client = node.client();
    let started = Instant::now();
    let mut index = 0u64;
    while started.elapsed() < duration {
        let _: () = redis::cmd("SET")
            .arg(format!("key{index}"))
            .arg(index)
            .query(&mut client)
            .expect("the leader accepts writes");
        index += 1;
    }
}

/// The `<tr>` of `name` in the member table.
fn member_row<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find(&format!("data-member=\"{name}\""))?;
    let end = dom[start..].find("</tr>")?;
    Some(&dom[start..start + end])
}

fn status_of(node: &TestNode, name: &str) -> Option<String> {
    let reply = request(node, Some(TOKEN), "GET", "/admin/nodes");
    let nodes = reply.json["nodes"].as_array()?.clone();
    let row = nodes.into_iter().find(|row| row["name"] == name)?;
    row["status"].as_str().map(str::to_string)
}

#[test]
fn the_console_shows_the_cluster_and_its_changes_in_chromium() {
    let Some(browser) =
        browser_or_skip("the_console_shows_the_cluster_and_its_changes_in_chromium")
    else {
        return;
    };
    let mut nodes: Vec<TestNode> = (0..3).map(|_| TestNode::start(settings())).collect();
    set_role(&nodes[0], "leader", NAMES[0], None);
    for index in 1..3 {
        set_role(&nodes[index], "follower", NAMES[index], Some(&nodes[0]));
    }
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let url = format!("http://127.0.0.1:{}/?token={TOKEN}", nodes[0].http_port);

    let dom = dump_dom(&browser, scratch.path(), &url);
    assert!(dom.contains("data-state=\"connected\""), "{dom}");
    let expected = [(NAMES[0], "leader"), (NAMES[1], "follower"), (NAMES[2], "follower")];
    for (name, role) in expected {
        let row = member_row(&dom, name).unwrap_or_else(|| panic!("no row for {name}: {dom}"));
        assert!(row.contains(&format!("<td>{role}</td>")), "{name} as {role}: {row}");
        assert!(row.contains("data-status=\"alive\""), "{name} alive: {row}");
    }
    assert!(!dom.contains(TOKEN), "the token is shown nowhere in the page");

    nodes[2].kill();
    let timed_out = wait_until(Duration::from_secs(20), || {
        status_of(&nodes[0], NAMES[2]).is_some_and(|status| status != "alive")
    });
    assert!(timed_out, "{}", request(&nodes[0], Some(TOKEN), "GET", "/admin/nodes").text);
    write_for(&nodes[0], Duration::from_secs(3));
    let dom = dump_dom(&browser, scratch.path(), &url);
    let row = member_row(&dom, NAMES[2]).unwrap_or_else(|| panic!("no row for ron: {dom}"));
    assert!(!row.contains("data-status=\"alive\""), "ron is not alive: {row}");
    assert!(row.contains("<td>no</td>"), "ron is not in sync: {row}");
    assert!(dom.contains("ron timed out"), "an event tells ron timed out: {dom}");
    assert!(member_row(&dom, NAMES[1]).is_some_and(|row| row.contains("data-status=\"alive\"")));

    let screenshot = scratch.path().join("console.png");
    let profile = tempfile::tempdir_in(scratch.path()).expect("a profile directory");
    let argument = format!("--screenshot={}", screenshot.display());
    run_browser(&browser, profile.path(), &[&argument, "--window-size=1280,900"], &url);
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.len() > 1000, "a screenshot of {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    if let Some(copy) = std::env::var_os("STRATA_CONSOLE_SCREENSHOT") {
        std::fs::write(copy, &png).expect("the screenshot is copied");
    }

    let login_url = format!("http://127.0.0.1:{}/", nodes[0].http_port);
    let dom = dump_dom(&browser, scratch.path(), &login_url);
    assert!(dom.contains("<section id=\"login\">"), "the login form shows: {dom}");
    assert!(dom.contains("<main id=\"console\" hidden"), "the console stays hidden: {dom}");
    assert!(!dom.contains("data-member="), "no member data without the token: {dom}");
    assert!(!dom.contains(NAMES[1]), "no member names without the token: {dom}");
}

/// The events of `node`'s console whose kind is `kind`, as their texts.
fn events_of(node: &TestNode, kind: &str) -> Vec<String> {
    let Ok(reply) = try_request_with(
        node.http_port,
        Some(TOKEN),
        "GET",
        "/admin/console",
        None,
        Duration::from_secs(2),
    ) else {
        return Vec::new();
    };
    let events = reply.json["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .filter(|event| event["kind"] == kind)
        .filter_map(|event| event["text"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn writes_refused_for_lack_of_in_sync_members_are_an_event() {
    let settings = NodeSettings { min_insync_replicas: 2, ..settings() };
    let leader = TestNode::start(settings.clone());
    let mut follower = TestNode::start(settings);
    set_role(&leader, "leader", "boss", None);
    set_role(&follower, "follower", "f1", Some(&leader));
    let ready = wait_until(Duration::from_secs(20), || {
        request(&leader, None, "GET", "/readyz").status == 200
    });
    assert!(ready, "the leader takes writes with its follower in sync");
    // Two samples, so that the sampler has seen the leader take writes.
    std::thread::sleep(Duration::from_millis(2500));
    let before = events_of(&leader, "refusal");
    follower.kill();
    let refused = wait_until(Duration::from_secs(20), || {
        let refusals = events_of(&leader, "refusal");
        refusals.len() > before.len() && refusals[0].contains("refuse writes")
    });
    assert!(refused, "{:?}", events_of(&leader, "refusal"));
    let timed_out = wait_until(Duration::from_secs(20), || {
        events_of(&leader, "member").iter().any(|text| text == "f1 timed out: no heartbeat")
    });
    let members = events_of(&leader, "member");
    assert!(timed_out, "{members:?}");
    assert!(members.iter().any(|text| text.starts_with("f1 joined as follower")), "{members:?}");
}

#[test]
fn a_failover_is_an_event_of_the_controller_that_made_it() {
    let automatic = NodeSettings {
        partitions: 4,
        failover: "automatic",
        extra: "failover_timeout = 1500".into(),
        ..settings()
    };
    let mut nodes: Vec<TestNode> = (0..3).map(|_| TestNode::start(automatic.clone())).collect();
    set_role(&nodes[0], "leader", NAMES[0], None);
    for index in 1..3 {
        set_role(&nodes[index], "follower", NAMES[index], Some(&nodes[0]));
    }
    nodes[0].kill();
    let failover = |node: &TestNode| {
        events_of(node, "failover").into_iter().find(|text| text.starts_with("failover: harry"))
    };
    let recorded =
        wait_until(Duration::from_secs(30), || nodes[1..].iter().any(|n| failover(n).is_some()));
    assert!(
        recorded,
        "{:?}",
        nodes[1..].iter().map(|n| events_of(n, "failover")).collect::<Vec<_>>()
    );
    let text = nodes[1..].iter().find_map(failover).unwrap_or_default();
    assert!(text.contains("appointed leader"), "{text}");
    let promoted = wait_until(Duration::from_secs(30), || {
        nodes[1..].iter().any(|node| {
            events_of(node, "role").iter().any(|text| text.starts_with("this node is now leader"))
        })
    });
    assert!(promoted, "the new leader records its role change");
}
