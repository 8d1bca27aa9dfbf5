//! A small blocking client of a node's admin HTTP API (ureq, one request a connection). Every
//! call is bounded by a timeout and reports failure as an error, never a panic: a paused or
//! dead node is an ordinary event in a chaos run.

use std::time::Duration;

use serde_json::Value;

/// How long connecting to an admin port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest response read (the node table of a few nodes is far smaller).
const RESPONSE_BYTES_MAX: u64 = 1 << 20;

/// An admin API answer: the HTTP status and the JSON body (`Null` when not JSON).
#[derive(Clone, Debug)]
pub struct AdminReply {
    pub status: u16,
    pub json: Value,
    pub text: String,
}

impl AdminReply {
    /// Whether the request succeeded (HTTP 200, error code 0).
    #[must_use]
    pub fn ok(&self) -> bool {
        self.status == 200 && self.code() == Some(0)
    }

    /// The body's `error_code`, when it has one.
    #[must_use]
    pub fn code(&self) -> Option<i64> {
        self.json["error_code"].as_i64()
    }
}

/// One request to 127.0.0.1:`port`; `timeout` bounds the whole exchange.
///
/// # Errors
///
/// A connection, I/O or HTTP problem, as text.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<AdminReply, String> {
    request_with(port, None, method, path, body, timeout)
}

/// One request with `Authorization: Bearer <token>` when a token is given (a node with
/// `[security] admin_token`).
///
/// # Errors
///
/// A connection, I/O or HTTP problem, as text.
pub fn request_with(
    port: u16,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<AdminReply, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("Accept", "application/json")
        .header("Content-Type", "application/json");
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let request =
        request.body(body.unwrap_or("").to_string()).map_err(|error| error.to_string())?;
    let mut response = agent.run(request).map_err(|error| format!("admin port {port}: {error}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(RESPONSE_BYTES_MAX)
        .read_to_string()
        .map_err(|error| format!("reading: {error}"))?;
    Ok(reply(status, text))
}

fn reply(status: u16, text: String) -> AdminReply {
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    AdminReply { status, json, text }
}

/// The body of a set-role request; `address` is the leader's peer address.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_read_as_json() {
        let reply = reply(500, "{\"error_code\": 7031}".into());
        assert_eq!(reply.status, 500);
        assert_eq!(reply.code(), Some(7031));
        assert!(!reply.ok());
    }

    #[test]
    fn a_role_body_names_only_what_is_given() {
        assert_eq!(role_body("admin", None, None), r#"{"role":"admin"}"#);
        let body = role_body("follower", Some("n2"), Some("127.0.0.1:1"));
        assert!(body.contains(r#""address":"127.0.0.1:1""#), "{body}");
    }
}
