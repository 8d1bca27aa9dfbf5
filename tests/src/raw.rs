//! A bare RESP client over `std::net::TcpStream`: exact reply bytes, malformed input, and
//! connections that misbehave on purpose. Every read has a timeout, so a server that hangs
//! fails the test instead of stalling it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a raw read waits before the test counts the server as hung.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A bulk reply holding `text`.
    #[must_use]
    pub fn bulk(text: &str) -> Reply {
        Reply::Bulk(Some(text.as_bytes().to_vec()))
    }

    /// An error reply with exactly `text` (without the leading `-`).
    #[must_use]
    pub fn error(text: &str) -> Reply {
        Reply::Error(text.to_string())
    }
}

/// How reading until the end of a connection finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Nothing more arrived within the timeout; the connection is still open.
    TimedOut,
}

/// The RESP encoding of a command: an array of bulk strings.
#[must_use]
pub fn encode_command(arguments: &[&[u8]]) -> Vec<u8> {
    let mut output = format!("*{}\r\n", arguments.len()).into_bytes();
    for argument in arguments {
        output.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
        output.extend_from_slice(argument);
        output.extend_from_slice(b"\r\n");
    }
    output
}

/// A connection that writes exactly the bytes it is given.
pub struct RawConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawConnection {
    /// Connects to 127.0.0.1:`port` with [`READ_TIMEOUT`] on reads and writes.
    ///
    /// # Panics
    /// If the connection cannot be made.
    #[must_use]
    pub fn connect(port: u16) -> RawConnection {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the node");
        stream.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(READ_TIMEOUT)).expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        RawConnection { stream, buffer: Vec::new() }
    }

    /// The underlying stream, e.g. to shut it down half-way.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends bytes as they are.
    ///
    /// # Errors
    /// When the write fails (the server may have closed the connection).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one command as a RESP array.
    ///
    /// # Errors
    /// When the write fails.
    pub fn send_command(&mut self, arguments: &[&[u8]]) -> io::Result<()> {
        self.send(&encode_command(arguments))
    }

    /// Reads one whole reply.
    ///
    /// # Errors
    /// `UnexpectedEof` when the server closed the connection, `WouldBlock`/`TimedOut` when
    /// nothing complete arrived in time, `InvalidData` when the bytes are not RESP.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            match parse_reply(&self.buffer) {
                Ok(Some((reply, consumed))) => {
                    self.buffer.drain(..consumed);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(reason) => return Err(io::Error::new(io::ErrorKind::InvalidData, reason)),
            }
            let mut chunk = [0u8; 64 * 1024];
            let length = self.stream.read(&mut chunk)?;
            if length == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..length]);
        }
    }

    /// Sends a command and reads its reply.
    ///
    /// # Panics
    /// When the connection fails or times out.
    pub fn command(&mut self, arguments: &[&[u8]]) -> Reply {
        self.send_command(arguments).expect("send command");
        self.read_reply().expect("read reply")
    }

    /// [`command`](Self::command) with the arguments given as text words.
    pub fn command_words(&mut self, words: &[&str]) -> Reply {
        let arguments: Vec<&[u8]> = words.iter().map(|word| word.as_bytes()).collect();
        self.command(&arguments)
    }

    /// Reads until the server closes the connection or `timeout` passes without new bytes.
    /// Returns every byte not yet consumed as a reply, and how reading ended.
    ///
    /// # Panics
    /// On a read error other than a reset or a timeout.
    pub fn read_until_end(&mut self, timeout: Duration) -> (Vec<u8>, End) {
        self.stream.set_read_timeout(Some(timeout)).expect("read timeout");
        let mut bytes = std::mem::take(&mut self.buffer);
        let end = loop {
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => break End::Closed,
                Ok(length) => bytes.extend_from_slice(&chunk[..length]),
                Err(error) if is_timeout(&error) => break End::TimedOut,
                Err(error) if is_reset(&error) => break End::Closed,
                Err(error) => panic!("read failed: {error}"),
            }
        };
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
        (bytes, end)
    }
}

/// Whether a read error is a timeout of the socket's read deadline.
#[must_use]
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Whether an I/O error means the peer closed the connection.
#[must_use]
pub fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Parses one reply from the start of `bytes`: `Ok(None)` if it is not complete yet.
///
/// # Errors
/// When the bytes are not a RESP2 reply.
pub fn parse_reply(bytes: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(line_end) = find_crlf(bytes) else {
        return Ok(None);
    };
    let Some((&kind, line)) = bytes[..line_end].split_first() else {
        return Err("empty reply line".into());
    };
    let text = String::from_utf8_lossy(line).into_owned();
    let after_line = line_end + 2;
    match kind {
        b'+' => Ok(Some((Reply::Simple(text), after_line))),
        b'-' => Ok(Some((Reply::Error(text), after_line))),
        b':' => Ok(Some((Reply::Integer(parse_number(&text)?), after_line))),
        b'$' => parse_bulk(bytes, parse_number(&text)?, after_line),
        b'*' => parse_array(bytes, parse_number(&text)?, after_line),
        other => Err(format!("unknown reply type byte {other:#04x}")),
    }
}

fn parse_number(text: &str) -> Result<i64, String> {
    text.parse().map_err(|_| format!("not a number: {text:?}"))
}

fn parse_bulk(bytes: &[u8], length: i64, start: usize) -> Result<Option<(Reply, usize)>, String> {
    if length < 0 {
        return Ok(Some((Reply::Bulk(None), start)));
    }
    let end = start + usize::try_from(length).map_err(|_| "bulk length")?;
    if bytes.len() < end + 2 {
        return Ok(None);
    }
    if &bytes[end..end + 2] != b"\r\n" {
        return Err("bulk string not followed by CRLF".into());
    }
    Ok(Some((Reply::Bulk(Some(bytes[start..end].to_vec())), end + 2)))
}

fn parse_array(bytes: &[u8], count: i64, start: usize) -> Result<Option<(Reply, usize)>, String> {
    if count < 0 {
        return Ok(Some((Reply::Array(None), start)));
    }
    let mut items = Vec::new();
    let mut offset = start;
    for _ in 0..count {
        match parse_reply(&bytes[offset..])? {
            Some((item, consumed)) => {
                items.push(item);
                offset += consumed;
            }
            None => return Ok(None),
        }
    }
    Ok(Some((Reply::Array(Some(items)), offset)))
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|pair| pair == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_whole_or_not_at_all() {
        let bytes = b"*3\r\n$3\r\nabc\r\n:-7\r\n$-1\r\n+OK\r\n";
        let (reply, consumed) = parse_reply(bytes).unwrap().unwrap();
        assert_eq!(
            reply,
            Reply::Array(Some(vec![Reply::bulk("abc"), Reply::Integer(-7), Reply::Bulk(None)]))
        );
        assert_eq!(&bytes[consumed..], b"+OK\r\n");
        for cut in 0..consumed {
            assert_eq!(parse_reply(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse_reply(b"?x\r\n").is_err());
        assert_eq!(encode_command(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
