//! TLS on the shard's sockets: rustls's session (sans-IO) driven over monoio. A client
//! connection reads and writes plaintext through [`StreamIo`], the same for a plain socket and
//! a TLS one, so the plain path costs nothing more. A peer connection is split in two halves
//! ([`crate::peer_stream`]) that share one session; the functions here move bytes between the
//! session and buffers, and never hold it across an `await`.

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::{ClientConfig, Connection, ServerConfig, ServerConnection};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Ciphertext read from the socket at once (a TLS record is at most 16 KiB plus overhead).
pub(crate) const CIPHERTEXT_CHUNK_BYTES: usize = 18 * 1024;
/// Ciphertext rustls may hold unsent: what one socket write carries at most, for a large
/// reply or a batch of frames (rustls's default is 64 KiB).
const SENDABLE_BYTES_MAX: usize = 1024 * 1024;

/// The configurations of the peer port's TLS (`[security] peer_tls`): the node's certificate
/// on both sides, and the cluster's CA that every other node's certificate must chain to.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// Accepting a peer: presents the node's certificate, requires the peer's.
    pub server: Arc<ServerConfig>,
    /// Connecting to a peer: presents the node's certificate, verifies the peer's against
    /// the CA for the host of the address it dials.
    pub client: Arc<ClientConfig>,
}

/// What a connection reads plaintext from and writes it to: a client's commands and replies,
/// a peer's handshake.
pub(crate) trait StreamIo {
    /// Appends what arrives to `input`: how many bytes, 0 at the end of the stream.
    async fn read_into(&mut self, input: Vec<u8>) -> (io::Result<usize>, Vec<u8>);
    /// Writes all of `output`, and hands the buffer back.
    async fn write_from(&mut self, output: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    /// Waits until a read would find something (bytes, the end of the stream or an error),
    /// without lending a buffer meanwhile: an idle connection then holds none. By default
    /// ready at once, and the read waits.
    async fn wait_readable(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl StreamIo for TcpStream {
    async fn read_into(&mut self, input: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let length = input.len();
        let (result, slice) = self.read(input.slice_mut(length..)).await;
        (result, slice.into_inner())
    }

    async fn write_from(&mut self, output: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (result, output) = self.write_all(output).await;
        (result.map(drop), output)
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        // Not relaxed: on the epoll driver a stale readiness would send the read to wait with
        // the buffer. On io_uring this is one poll request.
        self.readable(false).await
    }
}

/// A socket with a finished TLS handshake, whole (a client connection, or a peer connection
/// before it is split).
pub(crate) struct TlsSocket {
    pub(crate) socket: TcpStream,
    pub(crate) session: Connection,
    /// Ciphertext read from the socket; rustls takes it from here.
    ciphertext: Vec<u8>,
    /// Ciphertext for the socket, reused between writes.
    outgoing: Vec<u8>,
}

impl TlsSocket {
    /// Runs the server side of a client's handshake on `socket` (at most 5 s).
    pub(crate) async fn accept(
        socket: TcpStream,
        config: Arc<ServerConfig>,
    ) -> io::Result<TlsSocket> {
        let session = ServerConnection::new(config).map_err(io::Error::other)?;
        TlsSocket::handshake(socket, session.into()).await
    }

    /// Runs the client side of a handshake with the peer at `host` (at most 5 s).
    pub(crate) async fn connect(
        socket: TcpStream,
        config: Arc<ClientConfig>,
        host: &str,
    ) -> io::Result<TlsSocket> {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let session = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        TlsSocket::handshake(socket, session.into()).await
    }

    /// Takes `session` on `socket`: one whose handshake is still to run, or one made
    /// elsewhere (the control thread's, on a peer connection it hands to this shard).
    pub(crate) fn resume(socket: TcpStream, mut session: Connection) -> TlsSocket {
        session.set_buffer_limit(Some(SENDABLE_BYTES_MAX));
        TlsSocket {
            socket,
            session,
            ciphertext: Vec::with_capacity(CIPHERTEXT_CHUNK_BYTES),
            outgoing: Vec::new(),
        }
    }

    async fn handshake(socket: TcpStream, session: Connection) -> io::Result<TlsSocket> {
        let mut tls = TlsSocket::resume(socket, session);
        let handshake = async {
            while tls.session.is_handshaking() {
                tls.flush().await?;
                if !tls.session.is_handshaking() {
                    break;
                }
                if tls.receive().await? == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
            }
            tls.flush().await
        };
        match monoio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(outcome) => outcome.map(|()| tls),
            Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut)),
        }
    }

    /// Reads ciphertext from the socket and gives it to rustls: the bytes read, 0 at the end.
    /// A record rustls refuses is an error, after its alert went out.
    async fn receive(&mut self) -> io::Result<usize> {
        let (result, buffer) =
            read_ciphertext(&mut self.socket, std::mem::take(&mut self.ciphertext)).await;
        self.ciphertext = buffer;
        let read = result?;
        if let Err(error) = absorb(&mut self.session, &self.ciphertext[..read]) {
            let _ = self.flush().await;
            return Err(error);
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

impl StreamIo for TlsSocket {
    async fn read_into(&mut self, mut input: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            match take_plaintext(&mut self.session, &mut input) {
                Ok(Some(read)) => return (Ok(read), input),
                Ok(None) => {}
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
        let mut offset = 0;
        while offset < output.len() {
            match self.session.writer().write(&output[offset..]) {
                Ok(accepted) => offset += accepted,
                Err(error) => return (Err(error), output),
            }
            if let Err(error) = self.flush().await {
                return (Err(error), output);
            }
        }
        (Ok(()), output)
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        if has_plaintext(&mut self.session)? {
            return Ok(());
        }
        // Idle: the ciphertext buffers are made again by the next read or write.
        self.ciphertext = Vec::new();
        self.outgoing = Vec::new();
        self.socket.readable(false).await
    }
}

/// Whether rustls holds decrypted bytes (or the end of the session) for the next read.
fn has_plaintext(session: &mut Connection) -> io::Result<bool> {
    match session.reader().fill_buf() {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(error) => Err(error),
    }
}

/// Reads one chunk of ciphertext from `socket` into `buffer` (replacing what it held).
pub(crate) async fn read_ciphertext<S: AsyncReadRent>(
    socket: &mut S,
    mut buffer: Vec<u8>,
) -> (io::Result<usize>, Vec<u8>) {
    buffer.clear();
    buffer.reserve(CIPHERTEXT_CHUNK_BYTES);
    let (result, slice) = socket.read(buffer.slice_mut(0..CIPHERTEXT_CHUNK_BYTES)).await;
    (result, slice.into_inner())
}

/// Gives `ciphertext` to rustls and decrypts what it completes. A record rustls refuses is an
/// error (its alert is then queued for the peer).
pub(crate) fn absorb(session: &mut Connection, ciphertext: &[u8]) -> io::Result<()> {
    let mut offered = ciphertext;
    while !offered.is_empty() {
        session.read_tls(&mut offered)?;
        session
            .process_new_packets()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    }
    Ok(())
}

/// Appends the plaintext rustls holds to `input`, copied straight from its buffer: `Some` of
/// the bytes taken (0 when the peer closed the session cleanly), `None` when it holds none.
pub(crate) fn take_plaintext(
    session: &mut Connection,
    input: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    let mut reader = session.reader();
    match reader.fill_buf() {
        Ok(plaintext) => {
            let read = plaintext.len();
            input.extend_from_slice(plaintext);
            reader.consume(read);
            Ok(Some(read))
        }
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(error) => Err(error),
    }
}
