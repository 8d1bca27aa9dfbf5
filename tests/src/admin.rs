//! A blocking client of a node's admin HTTP API, for tests.

use std::time::{Duration, Instant};

use serde_json::Value;

/// An admin API answer: HTTP status, raw body, and the body parsed (Null if not JSON).
#[derive(Clone, Debug)]
pub struct AdminReply {
    pub status: u16,
    pub text: String,
    pub json: Value,
}

impl AdminReply {
    /// The `error_code` of the body (None when the body has none).
    #[must_use]
    pub fn code(&self) -> Option<i64> {
        self.json["error_code"].as_i64()
    }

    /// The `error_message` of the body, or "".
    #[must_use]
    pub fn message(&self) -> &str {
        self.json["error_message"].as_str().unwrap_or("")
    }

    /// Whether the request succeeded (200, error code 0).
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.status == 200 && self.code() == Some(0)
    }

    /// Panics with the body unless the request succeeded (200, error code 0).
    #[track_caller]
    pub fn assert_ok(&self) -> &Value {
        assert!(self.is_ok(), "admin request failed: {}", self.text);
        &self.json
    }

    /// Panics unless the request failed with HTTP 500 and `code`.
    #[track_caller]
    pub fn assert_error(&self, code: i64) {
        assert_eq!((self.status, self.code()), (500, Some(code)), "{}", self.text);
    }
}

/// One request to 127.0.0.1:`port`.
///
/// # Panics
/// When the node cannot be reached or does not answer HTTP.
#[must_use]
pub fn request(port: u16, method: &str, path: &str, body: Option<&str>) -> AdminReply {
    try_request(port, method, path, body, Duration::from_secs(90))
        .unwrap_or_else(|error| panic!("admin port {port}: {error}"))
}

/// One request, or why it got no answer within `timeout` (a node stopped or paused).
///
/// # Errors
/// The node cannot be reached, does not answer in time, or does not answer HTTP.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<AdminReply, String> {
    try_request_with(port, None, method, path, body, timeout)
}

/// One request with `Authorization: Bearer <token>` when a token is given.
///
/// # Errors
/// The node cannot be reached, does not answer in time, or does not answer HTTP.
pub fn try_request_with(
    port: u16,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<AdminReply, String> {
    let reply = strata_chaos::admin::request_with(port, token, method, path, body, timeout)?;
    Ok(AdminReply { status: reply.status, text: reply.text, json: reply.json })
}

/// The body of a set-role request.
#[must_use]
pub fn role_body(role: &str, name: Option<&str>, address: Option<&str>) -> String {
    let mut body = serde_json::Map::new();
    body.insert("role".into(), Value::from(role));
    if let Some(name) = name {
        body.insert("name".into(), Value::from(name));
    }
    if let Some(address) = address {
        body.insert("address".into(), Value::from(address));
    }
    Value::Object(body).to_string()
}

/// Sets `node`'s role through its admin API, as `name`, following `leader` if given; asserts
/// the node accepted it.
/// A leader (two shards) with a follower `f1` and a learner `l1` (one shard each), roles set.
#[must_use]
pub fn leader_follower_and_learner() -> (crate::TestNode, crate::TestNode, crate::TestNode) {
    let leader = crate::TestNode::start(crate::NodeSettings::cluster(2));
    set_role(&leader, "leader", "boss", None);
    let follower = crate::TestNode::start(crate::NodeSettings::cluster(1));
    let learner = crate::TestNode::start(crate::NodeSettings::cluster(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    set_role(&learner, "learner", "l1", Some(&leader));
    (leader, follower, learner)
}

pub fn set_role(node: &crate::TestNode, role: &str, name: &str, leader: Option<&crate::TestNode>) {
    let address = leader.map(crate::TestNode::peer_address);
    let body = role_body(role, Some(name), address.as_deref());
    node.admin("POST", "/admin/node/current", Some(&body)).assert_ok();
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
