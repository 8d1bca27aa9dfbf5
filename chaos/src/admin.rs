//! A small blocking client of a node's admin HTTP API (HTTP/1.1 over a std `TcpStream`, one
//! request a connection). Every call is bounded by a timeout and reports failure as an error,
//! never a panic: a paused or dead node is an ordinary event in a chaos run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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

/// One request to 127.0.0.1:`port`; `timeout` bounds every read and write.
///
/// # Errors
///
/// A connection, I/O or HTTP framing problem, as text.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<AdminReply, String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
        .map_err(|error| format!("admin port {port}: {error}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|error| error.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|error| error.to_string())?;
    let body = body.unwrap_or("");
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).map_err(|error| format!("sending: {error}"))?;
    let mut response = Vec::new();
    stream
        .take(RESPONSE_BYTES_MAX)
        .read_to_end(&mut response)
        .map_err(|error| format!("reading: {error}"))?;
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> Result<AdminReply, String> {
    let response = String::from_utf8_lossy(response);
    let (head, body) = response.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or("no HTTP status")?;
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    Ok(AdminReply { status, json, text: body.to_string() })
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
    fn a_response_is_split_into_status_and_json() {
        let reply =
            parse_response(b"HTTP/1.1 500 Err\r\nA: b\r\n\r\n{\"error_code\": 7031}").unwrap();
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
