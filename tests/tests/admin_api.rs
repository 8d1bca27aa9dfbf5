//! The admin HTTP API against real node processes: every endpoint in every mode, and every
//! refusal with its reference error code, with nothing changed by a refused request.

use std::time::Duration;

use strata_tests::admin::{role_body, wait_until, AdminReply};
use strata_tests::raw::Reply;
use strata_tests::{NodeSettings, TestNode};

fn admin_node() -> TestNode {
    TestNode::start(NodeSettings { shards: 1, server_mode: "admin", ..NodeSettings::default() })
}

fn post_role(node: &TestNode, role: &str, name: Option<&str>, address: Option<&str>) -> AdminReply {
    node.admin("POST", "/admin/node/current", Some(&role_body(role, name, address)))
}

fn current_role(node: &TestNode) -> String {
    let reply = node.admin("GET", "/admin/node/current", None);
    reply.assert_ok()["node"]["role"].as_str().unwrap_or_default().to_string()
}

#[test]
fn admin_mode_answers_what_the_reference_answers() {
    let node = admin_node();
    let current = node.admin("GET", "/admin/node/current", None);
    assert_eq!(
        current.assert_ok()["node"],
        serde_json::json!({"role": "admin", "status": "started"})
    );
    assert_eq!(node.admin("GET", "/admin/variables", None).assert_ok()["role"], "admin");
    assert_eq!(node.admin("GET", "/admin/variables/role", None).assert_ok()["role"], "admin");
    assert_eq!(node.admin("GET", "/admin/variables/ROLE", None).assert_ok()["ROLE"], "admin");
    let missing = node.admin("GET", "/admin/variables/nope", None);
    missing.assert_error(3027);
    assert_eq!(missing.message(), "No such system variable: nope");
    let configs = node.admin("GET", "/admin/configs", None);
    assert_eq!(configs.assert_ok()["client_port"], node.port.to_string());
    assert_eq!(configs.json["wal_flush"], "FlushAtOnce");
    node.admin("GET", "/admin/nodes", None).assert_error(2007);
    node.admin("GET", "/admin/node/somebody", None).assert_error(3032);
    let remove = node.admin("DELETE", "/admin/node/somebody", None);
    remove.assert_error(8007);
    assert_eq!(remove.message(), "Can't remove node in admin mode");
    // Clients wait for a role: key commands get LOADING, node commands work.
    let mut raw = node.raw();
    assert_eq!(raw.command(&[b"PING"]), Reply::Simple("PONG".into()));
    let refused = raw.command(&[b"GET", b"k"]);
    assert!(matches!(&refused, Reply::Error(text) if text.starts_with("LOADING")), "{refused:?}");
}

#[test]
fn bad_requests_get_their_reference_codes_and_change_nothing() {
    let node = admin_node();
    let post = |body: &str| node.admin("POST", "/admin/node/current", Some(body));
    post("{not json").assert_error(3067);
    post("").assert_error(3067);
    post("{}").assert_error(3076);
    post(r#"{"role": 3}"#).assert_error(3076);
    let unknown = post(r#"{"role": "Boss"}"#);
    unknown.assert_error(8007);
    assert_eq!(unknown.message(), "Invalid node role boss");
    post(r#"{"role": "leader"}"#).assert_error(3076);
    post(r#"{"role": "leader", "name": ""}"#).assert_error(3042);
    post(r#"{"role": "leader", "name": "9lives"}"#).assert_error(3005);
    post(r#"{"role": "follower", "name": "f"}"#).assert_error(3076);
    post(r#"{"role": "follower", "name": "f", "address": "localhost:1"}"#).assert_error(7016);
    let unreachable = format!("127.0.0.1:{}", strata_tests::free_port());
    let refused = post_role(&node, "follower", Some("f"), Some(&unreachable));
    refused.assert_error(7018);
    assert!(refused.message().starts_with(&format!("Can't connect server: {unreachable}")));
    assert_eq!(current_role(&node), "admin", "no refused request changed the role");
    // The curl example of Infinity's guide, trailing comma included, works as written.
    let guide = "{\n \"role\" : \"leader\",\n \"name\" : \"Harry\",\n }";
    post(guide).assert_ok();
    let current = node.admin("GET", "/admin/node/current", None);
    let shown = &current.assert_ok()["node"];
    assert_eq!((shown["role"].as_str(), shown["name"].as_str()), (Some("leader"), Some("harry")));
    assert!(shown["update_time"].as_str().is_some_and(|time| time.ends_with('\n')));
    // The same role again is a no-op success; leader -> standalone is refused.
    post_role(&node, "leader", Some("someone_else"), None).assert_ok();
    let refused = post_role(&node, "standalone", None, None);
    refused.assert_error(8007);
    assert_eq!(current_role(&node), "leader");
    node.admin("GET", "/admin/variables", None).assert_error(2005);
    // A leader pointed at its own peer address stays leader.
    let own_address = post_role(&node, "follower", Some("harry"), Some(&node.peer_address()));
    own_address.assert_error(7016);
    assert_eq!(current_role(&node), "leader");
    let own = node.admin("DELETE", "/admin/node/harry", None);
    own.assert_error(8007);
    assert_eq!(own.message(), "Can't remove current node: harry");
    node.admin("DELETE", "/admin/node/nobody", None).assert_error(7019);
    node.admin("GET", "/admin/node/nobody", None).assert_error(7019);
}

#[test]
fn standalone_mode_gates_like_the_reference() {
    let node = TestNode::start(NodeSettings { shards: 1, ..NodeSettings::default() });
    assert_eq!(current_role(&node), "standalone");
    node.admin("GET", "/admin/nodes", None).assert_error(3032);
    node.admin("GET", "/admin/variables", None).assert_error(2005);
    node.admin("GET", "/admin/variables/server_role", None).assert_error(3027);
    post_role(&node, "leader", Some("x"), None).assert_error(8007);
    let mut client = node.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut client).unwrap();
    // Standalone -> admin is allowed; the data stays and clients wait for a role.
    post_role(&node, "admin", None, None).assert_ok();
    let refused: redis::RedisResult<Option<String>> = redis::cmd("GET").arg("k").query(&mut client);
    assert!(refused.is_err());
    post_role(&node, "standalone", None, None).assert_ok();
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut client).unwrap();
    assert_eq!(value.as_deref(), Some("v"));
}

#[test]
fn membership_listing_removal_and_limits() {
    let leader = admin_node();
    post_role(&leader, "leader", Some("boss"), None).assert_ok();
    let followers: Vec<TestNode> = (0..5).map(|_| admin_node()).collect();
    let address = leader.peer_address();
    for (index, follower) in followers.iter().take(4).enumerate() {
        post_role(follower, "follower", Some(&format!("f{index}")), Some(&address)).assert_ok();
    }
    let fifth = post_role(&followers[4], "follower", Some("f4"), Some(&address));
    fifth.assert_error(7027);
    assert_eq!(fifth.message(), "From leader: Too many followers, limit: 4");
    assert_eq!(current_role(&followers[4]), "admin");
    let duplicate = post_role(&followers[4], "learner", Some("f0"), Some(&address));
    duplicate.assert_error(7020);
    assert_eq!(duplicate.message(), "From leader: Duplicate node: f0");
    let own_address =
        post_role(&followers[4], "learner", Some("l"), Some(&followers[4].peer_address()));
    own_address.assert_error(8007);
    post_role(&followers[4], "learner", Some("l"), Some(&address)).assert_ok();

    let listed = leader.admin("GET", "/admin/nodes", None);
    let nodes = listed.assert_ok()["nodes"].as_array().unwrap().clone();
    let names: Vec<&str> = nodes.iter().map(|node| node["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["boss", "f0", "f1", "f2", "f3", "l"], "self first, then by name");
    for node in &nodes {
        assert_eq!(node["status"], "alive", "{node}");
        for key in ["address", "heartbeat", "last_update", "name", "role", "status"] {
            assert!(node[key].is_string(), "{key} of {node}");
        }
    }
    // On a follower: itself first, then the leader, then the others (from heartbeats).
    assert!(wait_until(Duration::from_secs(10), || {
        let listed = followers[0].admin("GET", "/admin/nodes", None);
        let names: Vec<String> = listed.json["nodes"].as_array().map_or_else(Vec::new, |nodes| {
            nodes.iter().map(|node| node["name"].as_str().unwrap_or("").to_string()).collect()
        });
        names == ["f0", "boss", "f1", "f2", "f3", "l"]
    }));
    let shown = followers[0].admin("GET", "/admin/node/boss", None);
    assert_eq!(shown.assert_ok()["node"]["role"], "leader");
    let refused = followers[0].admin("DELETE", "/admin/node/f1", None);
    refused.assert_error(8007);
    assert_eq!(refused.message(), "Can't remove node in follower mode");

    // Removal: the node goes back to admin and may register again.
    let removed = leader.admin("DELETE", "/admin/node/F1", None);
    assert_eq!(removed.assert_ok()["message"], "Node F1 removed successfully.");
    leader.admin("GET", "/admin/node/f1", None).assert_error(7019);
    assert!(wait_until(Duration::from_secs(10), || current_role(&followers[1]) == "admin"));
    post_role(&followers[1], "follower", Some("f1"), Some(&address)).assert_ok();
    assert_eq!(leader.admin("GET", "/admin/node/f1", None).assert_ok()["node"]["status"], "alive");
    // A follower may not become a learner.
    let switch = post_role(&followers[2], "learner", Some("f2"), Some(&address));
    switch.assert_error(7026);
    assert_eq!(current_role(&followers[2]), "follower");
}

#[test]
fn a_garbage_body_and_unknown_paths_do_not_hurt() {
    let node = admin_node();
    let binary = "\u{0}\u{1}\u{2}garbage";
    node.admin("POST", "/admin/node/current", Some(binary)).assert_error(3067);
    assert_eq!(node.admin("GET", "/admin/nothing", None).status, 404);
    assert_eq!(current_role(&node), "admin");
}
