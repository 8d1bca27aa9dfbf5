//! A minimal blocking RESP client: one connection, one command at a time, every read and write
//! bounded by a timeout. It keeps the server's error text exactly as sent, which the outcome
//! classification ([`classify_error`]) depends on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::history::{Outcome, Value};

/// How long connecting to a client port may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest bulk string accepted in a reply (append keys stay far below it).
const BULK_BYTES_MAX: usize = 64 << 20;

/// One reply of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other simple strings.
    Status(String),
    /// `-ERR ...`: the text after the `-`.
    Error(String),
    Integer(i64),
    /// A bulk string, `None` for the nil bulk string.
    Bulk(Option<Vec<u8>>),
}

/// Why no reply came: the request may or may not have reached the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError(pub String);

/// A RESP connection to a node's client port.
pub struct RespConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RespConnection {
    /// Connects to 127.0.0.1:`port`; `timeout` bounds each read and write after that.
    ///
    /// # Errors
    ///
    /// When the connection cannot be made.
    pub fn connect(port: u16, timeout: Duration) -> Result<RespConnection, ClientError> {
        RespConnection::connect_within(port, CONNECT_TIMEOUT, timeout)
    }

    /// Connects to 127.0.0.1:`port` within `connect_timeout`; `timeout` bounds each read and
    /// write after that.
    ///
    /// # Errors
    ///
    /// When the connection cannot be made.
    pub fn connect_within(
        port: u16,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<RespConnection, ClientError> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&address, connect_timeout)
            .map_err(|error| ClientError(format!("connect: {error}")))?;
        let io = |error: std::io::Error| ClientError(format!("socket: {error}"));
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(RespConnection { reader: BufReader::new(stream), writer })
    }

    /// Sends one command and reads its reply.
    ///
    /// # Errors
    ///
    /// A timeout, a closed connection or a malformed reply.
    pub fn command(&mut self, arguments: &[&str]) -> Result<Reply, ClientError> {
        let mut request = format!("*{}\r\n", arguments.len()).into_bytes();
        for argument in arguments {
            request.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
            request.extend_from_slice(argument.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&request).map_err(|error| ClientError(format!("send: {error}")))?;
        self.read_reply()
    }

    fn read_line(&mut self) -> Result<String, ClientError> {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).map_err(receive_error)?;
        if read == 0 || !line.ends_with("\r\n") {
            return Err(ClientError("receive: connection closed".into()));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read_reply(&mut self) -> Result<Reply, ClientError> {
        let line = self.read_line()?;
        let malformed = || ClientError(format!("malformed reply {line:?}"));
        let (kind, rest) = line.split_at_checked(1).ok_or_else(malformed)?;
        match kind {
            "+" => Ok(Reply::Status(rest.to_string())),
            "-" => Ok(Reply::Error(rest.to_string())),
            ":" => rest.parse().map(Reply::Integer).map_err(|_| malformed()),
            "$" => {
                let length: i64 = rest.parse().map_err(|_| malformed())?;
                self.read_bulk(length)
            }
            _ => Err(malformed()),
        }
    }

    fn read_bulk(&mut self, length: i64) -> Result<Reply, ClientError> {
        if length < 0 {
            return Ok(Reply::Bulk(None));
        }
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        if length > BULK_BYTES_MAX {
            return Err(ClientError(format!("bulk string of {length} bytes")));
        }
        let mut bytes = vec![0; length + 2];
        self.reader.read_exact(&mut bytes).map_err(receive_error)?;
        bytes.truncate(length);
        Ok(Reply::Bulk(Some(bytes)))
    }
}

/// A failed read, with a timeout named as one (a socket read timeout reports `WouldBlock`).
fn receive_error(error: std::io::Error) -> ClientError {
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ClientError("receive: timed out".into())
        }
        _ => ClientError(format!("receive: {error}")),
    }
}

/// Error prefixes that mean the command did nothing. Everything else is `Unknown`.
///
/// `NOREPLICAS` is among them: `shard/src/shard.rs` (`write_refusal`, called from
/// `execute_owned` before `PartitionState::execute`) answers it before the write enters the
/// log. `ERR partition ... refuses writes after a WAL failure` is not: it may come after the
/// record was taken.
///
/// Of the two `TRYAGAIN`s only the lease's is a refusal: `shard/src/connection.rs` (`refusal`,
/// called from `route` before the command reaches a partition) answers it when the leader's
/// lease ran out or a transfer paused it. The other, `TRYAGAIN this node stopped leading`,
/// answers writes that were waiting for their commit when the leader stepped down
/// (`stepped_down` in `shard/src/shard.rs`, from `shard/src/replication/leader.rs` and
/// `phases.rs`): they may or may not have been applied.
const REFUSALS: &[&str] = &[
    "READONLY ",
    "NOREPLICAS ",
    "TRYAGAIN this leader lost touch with the controller",
    "WRONGTYPE ",
    "ERR syntax error",
    "ERR wrong number of arguments",
    "ERR unknown command",
    "ERR value is not an integer or out of range",
];

/// The outcome of an error reply.
#[must_use]
pub fn classify_error(text: &str) -> Outcome {
    if REFUSALS.iter().any(|prefix| text.starts_with(prefix)) {
        Outcome::Refused { error: text.to_string() }
    } else {
        Outcome::Unknown { error: text.to_string() }
    }
}

/// The outcome of a reply to a command whose normal answer is `answer`.
#[must_use]
pub fn classify(reply: Result<Reply, ClientError>, as_text: bool) -> Outcome {
    let answer = match reply {
        Err(ClientError(error)) => return Outcome::Unknown { error },
        Ok(Reply::Error(text)) => return classify_error(&text),
        Ok(Reply::Status(_) | Reply::Bulk(None)) => Value::Missing,
        Ok(Reply::Integer(integer)) => Value::Integer(integer),
        Ok(Reply::Bulk(Some(bytes))) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match text.parse() {
                Ok(integer) if !as_text => Value::Integer(integer),
                _ => Value::Text(text),
            }
        }
    };
    Outcome::Done { answer }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_refusals_are_refused() {
        let refused = classify_error("READONLY You can't write against a read only replica.");
        assert!(matches!(refused, Outcome::Refused { .. }));
        let noreplicas = classify_error("NOREPLICAS Not enough good replicas to write.");
        assert!(matches!(noreplicas, Outcome::Refused { .. }));
        for text in ["TRYAGAIN this node stopped leading", "LOADING admin", "ERR partition 3"] {
            assert!(matches!(classify_error(text), Outcome::Unknown { .. }), "{text}");
        }
        let lease = "TRYAGAIN this leader lost touch with the controller and may have been \
                     replaced";
        assert!(matches!(classify_error(lease), Outcome::Refused { .. }));
    }

    #[test]
    fn bulk_integers_are_integers_unless_text_is_asked_for() {
        let reply = || Ok(Reply::Bulk(Some(b"42".to_vec())));
        assert_eq!(classify(reply(), false), Outcome::Done { answer: Value::Integer(42) });
        let text = Value::Text("42".into());
        assert_eq!(classify(reply(), true), Outcome::Done { answer: text });
        let timeout = Err(ClientError("receive: timed out".into()));
        assert!(matches!(classify(timeout, false), Outcome::Unknown { .. }));
    }
}
