//! The client port over TLS: rustls's session (sans-IO) driven over a monoio socket. The
//! connection loop reads and writes plaintext through [`ClientIo`], the same for a plain
//! socket and a TLS one, so the plain path costs nothing more.

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Ciphertext read from the socket at once (a TLS record is at most 16 KiB plus overhead).
const CIPHERTEXT_CHUNK_BYTES: usize = 18 * 1024;

/// What a client connection reads its commands from and writes its replies to.
pub(crate) trait ClientIo {
    /// Appends what arrives to `input`: how many bytes, 0 at the end of the stream.
    async fn read_into(&mut self, input: Vec<u8>) -> (io::Result<usize>, Vec<u8>);
    /// Writes all of `output`, and hands the buffer back.
    async fn write_from(&mut self, output: Vec<u8>) -> (io::Result<()>, Vec<u8>);
}

impl ClientIo for TcpStream {
    async fn read_into(&mut self, input: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let length = input.len();
        let (result, slice) = self.read(input.slice_mut(length..)).await;
        (result, slice.into_inner())
    }

    async fn write_from(&mut self, output: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (result, output) = self.write_all(output).await;
        (result.map(drop), output)
    }
}

/// A client connection with a finished TLS handshake.
pub(crate) struct TlsClient {
    socket: TcpStream,
    session: ServerConnection,
    /// Ciphertext read from the socket; rustls takes it from here.
    ciphertext: Vec<u8>,
    /// Ciphertext for the socket, reused between writes.
    outgoing: Vec<u8>,
}

impl TlsClient {
    /// Runs the server side of the handshake on `socket` (at most 5 s).
    pub(crate) async fn accept(
        socket: TcpStream,
        config: Arc<ServerConfig>,
    ) -> io::Result<TlsClient> {
        let session = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut client = TlsClient {
            socket,
            session,
            ciphertext: Vec::with_capacity(CIPHERTEXT_CHUNK_BYTES),
            outgoing: Vec::new(),
        };
        let handshake = async {
            while client.session.is_handshaking() {
                client.flush().await?;
                if !client.session.is_handshaking() {
                    break;
                }
                if client.receive().await? == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
            }
            client.flush().await
        };
        match monoio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(outcome) => outcome.map(|()| client),
            Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut)),
        }
    }

    /// Reads ciphertext from the socket and gives it to rustls: the bytes read, 0 at the end.
    /// A record rustls refuses is an error, after its alert went out.
    async fn receive(&mut self) -> io::Result<usize> {
        self.ciphertext.clear();
        self.ciphertext.reserve(CIPHERTEXT_CHUNK_BYTES);
        let buffer = std::mem::take(&mut self.ciphertext);
        let (result, slice) = self.socket.read(buffer.slice_mut(0..CIPHERTEXT_CHUNK_BYTES)).await;
        self.ciphertext = slice.into_inner();
        let read = result?;
        let mut offered = &self.ciphertext[..read];
        while !offered.is_empty() {
            self.session.read_tls(&mut offered)?;
            if let Err(error) = self.session.process_new_packets() {
                let _ = self.flush().await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        }
        Ok(read)
    }

    /// Sends whatever rustls has for the peer (handshake messages, records, alerts).
    async fn flush(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            self.outgoing.clear();
            self.session.write_tls(&mut self.outgoing)?;
            let (result, buffer) = self.socket.write_all(std::mem::take(&mut self.outgoing)).await;
            self.outgoing = buffer;
            result?;
        }
        Ok(())
    }
}

impl ClientIo for TlsClient {
    async fn read_into(&mut self, mut input: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            // Plaintext rustls holds is copied straight from its buffer: no zero-filled
            // staging area per read.
            let mut reader = self.session.reader();
            match reader.fill_buf() {
                Ok(plaintext) if !plaintext.is_empty() => {
                    let read = plaintext.len();
                    input.extend_from_slice(plaintext);
                    reader.consume(read);
                    return (Ok(read), input);
                }
                // The peer closed the session cleanly.
                Ok(_) => return (Ok(0), input),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return (Err(error), input),
            }
            match self.receive().await {
                Ok(0) => return (Ok(0), input),
                Ok(_) => {}
                Err(error) => return (Err(error), input),
            }
        }
    }

    async fn write_from(&mut self, output: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        if let Err(error) = self.session.writer().write_all(&output) {
            return (Err(error), output);
        }
        (self.flush().await, output)
    }
}
