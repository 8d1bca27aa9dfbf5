//! Control messages between nodes on the peer port: JSON inside the checksummed envelope of
//! `strata_core::peer`, one request and one response at a time on a connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_core::cluster::AdminError;
use strata_core::handshake::{
    ClusterSecret, Handshake, HandshakeError, HandshakeMessage, Nonce, Progress, Trust,
    HANDSHAKE_MESSAGE_BYTES, HANDSHAKE_TIMEOUT_MS,
};
use strata_core::peer::{decode_message, encode_message, MessageKind, ENVELOPE_HEADER_BYTES};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Largest control message accepted (they are a few hundred bytes).
pub(crate) const CONTROL_BYTES_MAX: usize = 1024 * 1024;
/// How long one control exchange may take.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(3);

/// A request from one node to another.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Replica → leader: join the cluster.
    Register {
        name: String,
        role: String,
        address: String,
        version: String,
        /// The replica's `[cluster] partitions`: it must be the leader's.
        partitions: u32,
        /// The highest epoch the replica has seen: a leader older than it steps down.
        #[serde(default)]
        epoch: u64,
    },
    /// Replica → leader, every heartbeat interval.
    Heartbeat {
        name: String,
        role: String,
        address: String,
        #[serde(default)]
        epoch: u64,
    },
    /// Replica → leader: leave the cluster.
    Unregister {
        name: String,
        #[serde(default)]
        epoch: u64,
    },
    /// Leader → replica: go back to admin mode (the node was removed).
    ChangeRole {
        role: String,
        /// The leader's epoch: a replica that has seen a newer one refuses.
        #[serde(default)]
        epoch: u64,
    },
    /// A member promoting itself → any member: what it knows of each partition (fence, newest
    /// in-sync set, durable LSN).
    ReplicationState {},
    /// Promotion, phase one: refuse anything older than `epoch` from now on, unless a
    /// partition recorded a newer in-sync set than its basis.
    AcceptEpoch { epoch: u64, basis: Vec<WireBasis>, candidate: String },
    /// Promotion, phase two: record the new leader's first sets.
    InstallSets { epoch: u64, sets: Vec<WirePartitionSet> },
    /// A node → any member of a cluster with a controller: admit me (forwarded to the
    /// member leading the controller).
    JoinController {
        name: String,
        address: String,
        role: String,
        version: String,
        node_id: u64,
        incarnation: u64,
        /// The newest controller state the node applied (0: never in a cluster).
        #[serde(default)]
        metadata_version: u64,
        /// The cluster the node belongs to already (its tag's id, 32 hexadecimal digits), if
        /// any: a node of another cluster is refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag_id: Option<String>,
        /// Times the request was passed on towards the controller's leader.
        #[serde(default)]
        hops: u8,
    },
    /// Any member → the data leader: remove the member `name` from the cluster.
    RemoveMember { name: String },
    /// Any member → the data leader: hand the leadership to `to` (planned transfer).
    TransferLeadership {
        to: String,
        /// Start a job and answer its id at once, rather than answer once committed.
        #[serde(default)]
        job: bool,
    },
    /// A member → the controller's leader: commit this command of the controller.
    ControllerPropose {
        command: strata_core::controller::Command,
        /// Times the request was passed on towards the controller's leader.
        #[serde(default)]
        hops: u8,
    },
    /// The controller's leader → the data leader: do you lead, and at which epoch?
    LeaderStatus {},
    /// The data leader → the controller's leader: confirm I still lead at `epoch` (renews
    /// the data leader's lease).
    ConfirmLease { name: String, epoch: u64 },
}

/// A member of an in-sync set, on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WireMember {
    pub name: String,
    pub address: String,
}

/// An in-sync set, on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WireSet {
    pub leader_epoch: u64,
    pub isr_epoch: u64,
    pub leader: String,
    pub members: Vec<WireMember>,
}

/// What a member reports of one partition.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WirePartition {
    pub partition: u32,
    pub fence: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync: Option<WireSet>,
    pub durable_lsn: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// The set version a promotion planned a partition on (absent: forced, or none known).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WireBasis {
    pub partition: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isr_epoch: Option<u64>,
}

/// A partition's first set under a new leader.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WirePartitionSet {
    pub partition: u32,
    pub set: WireSet,
}

/// One node as the leader describes it in a heartbeat response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PeerNode {
    pub name: String,
    pub role: String,
    pub status: String,
    pub address: String,
    pub heartbeats: u64,
}

/// The answer to a request. `error_code` 0 is success.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Response {
    pub error_code: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub leader_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sender_status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<PeerNode>,
    /// Register: the leader's prefix in the archive, which the replica adopts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub archive_prefix: String,
    /// Register: the leader's shard count; a replica streams the partitions one leader shard
    /// owns over one connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
    /// Register and heartbeat: the leader's epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Replication state: the member answering, and what it knows of each partition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub learner: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<WirePartition>,
    /// A job started for the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u64>,
}

impl Response {
    pub(crate) fn error(error: &AdminError) -> Response {
        Response {
            error_code: error.code,
            error_message: error.message.clone(),
            ..Response::default()
        }
    }

    pub(crate) fn into_result(self) -> Result<Response, AdminError> {
        if self.error_code == 0 {
            Ok(self)
        } else {
            Err(AdminError { code: self.error_code, message: self.error_message })
        }
    }
}

/// Why a control exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad message: {0}")]
    Peer(#[from] strata_core::peer::PeerError),
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unexpected {0:?} message")]
    Unexpected(MessageKind),
    #[error("control message larger than {CONTROL_BYTES_MAX} bytes")]
    TooLarge,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("peer handshake refused: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("peer handshake not done within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("peer TLS: {0}")]
    Tls(String),
    /// The peer closed the connection between two handshake messages (a node that refuses
    /// every peer closes it before its first).
    #[error("the peer closed the connection during the handshake")]
    HandshakeClosed,
}

/// How long a peer handshake may take, on either side.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);

/// A peer connection on the control thread: plain, or TLS (`[security] peer_tls`) from the
/// side that connected or the side that accepted.
pub(crate) enum PeerConnection {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl PeerConnection {
    /// The socket and, over TLS, the session made on it (for a shard to carry on with).
    pub(crate) fn into_parts(self) -> (TcpStream, Option<Box<rustls::ServerConnection>>) {
        match self {
            PeerConnection::Plain(socket) => (socket, None),
            PeerConnection::Tls(tls) => match *tls {
                tokio_rustls::TlsStream::Server(server) => {
                    let (socket, session) = server.into_inner();
                    (socket, Some(Box::new(session)))
                }
                tokio_rustls::TlsStream::Client(client) => (client.into_inner().0, None),
            },
        }
    }
}

impl AsyncRead for PeerConnection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerConnection::Plain(socket) => std::pin::Pin::new(socket).poll_read(context, buffer),
            PeerConnection::Tls(tls) => std::pin::Pin::new(tls).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for PeerConnection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerConnection::Plain(socket) => std::pin::Pin::new(socket).poll_write(context, bytes),
            PeerConnection::Tls(tls) => std::pin::Pin::new(tls).poll_write(context, bytes),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerConnection::Plain(socket) => std::pin::Pin::new(socket).poll_flush(context),
            PeerConnection::Tls(tls) => std::pin::Pin::new(tls).poll_flush(context),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerConnection::Plain(socket) => std::pin::Pin::new(socket).poll_shutdown(context),
            PeerConnection::Tls(tls) => std::pin::Pin::new(tls).poll_shutdown(context),
        }
    }
}

/// Opens peer connections: connects (over TLS when the peer port uses it), then proves the
/// cluster secret (`strata_core::handshake`) before the connection carries anything else.
#[derive(Clone)]
pub(crate) struct Dialer {
    secret: Option<ClusterSecret>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Dialer {
    pub(crate) fn new(
        secret: Option<ClusterSecret>,
        tls: Option<&strata_shard::PeerTls>,
    ) -> Dialer {
        let tls =
            tls.map(|tls| tokio_rustls::TlsConnector::from(std::sync::Arc::clone(&tls.client)));
        Dialer { secret, tls }
    }

    /// Connects to `address` (within [`EXCHANGE_TIMEOUT`]) and makes the handshakes, TLS's
    /// then the secret's (each within [`HANDSHAKE_TIMEOUT`]).
    pub(crate) async fn connect(&self, address: &str) -> Result<PeerConnection, WireError> {
        let connect = TcpStream::connect(address);
        let socket = tokio::time::timeout(EXCHANGE_TIMEOUT, connect)
            .await
            .map_err(|_| WireError::Timeout(EXCHANGE_TIMEOUT))??;
        let _ = socket.set_nodelay(true);
        let mut stream = match &self.tls {
            None => PeerConnection::Plain(socket),
            Some(connector) => {
                let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|error| WireError::Tls(error.to_string()))?;
                let work = connector.connect(name, socket);
                let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
                    .await
                    .map_err(|_| WireError::HandshakeTimeout)?
                    .map_err(|error| WireError::Tls(error.to_string()))?;
                PeerConnection::Tls(Box::new(tokio_rustls::TlsStream::Client(tls)))
            }
        };
        let (handshake, hello) = Handshake::connector(self.secret.clone(), nonce()?);
        let work = run_handshake(&mut stream, handshake, Some(hello));
        tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
            .await
            .map_err(|_| WireError::HandshakeTimeout)??;
        Ok(stream)
    }

    /// Connects to `address` and makes one exchange.
    pub(crate) async fn call(
        &self,
        address: &str,
        request: &Request,
    ) -> Result<Response, WireError> {
        let mut stream = self.connect(address).await?;
        exchange(&mut stream, request).await
    }
}

/// The acceptor's side of the handshake on a connection just accepted, within
/// [`HANDSHAKE_TIMEOUT`]: nothing else is read from the connection before it succeeds.
pub(crate) async fn accept_handshake(
    stream: &mut PeerConnection,
    secret: Option<ClusterSecret>,
) -> Result<Trust, WireError> {
    let handshake = Handshake::acceptor(secret, nonce()?);
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run_handshake(stream, handshake, None))
        .await
        .map_err(|_| WireError::HandshakeTimeout)?
}

/// Carries the handshake's messages: sends `first` (the connector's Hello), then reads one
/// message at a time, exactly, and sends what each step answers.
async fn run_handshake(
    stream: &mut PeerConnection,
    mut handshake: Handshake,
    first: Option<HandshakeMessage>,
) -> Result<Trust, WireError> {
    if let Some(hello) = first {
        stream.write_all(&hello).await?;
        stream.flush().await?;
    }
    let mut message = [0u8; HANDSHAKE_MESSAGE_BYTES];
    loop {
        read_message(stream, &mut message).await?;
        let step = handshake.step(&message);
        if let Some(answer) = step.send {
            stream.write_all(&answer).await?;
            stream.flush().await?;
        }
        match step.progress {
            Progress::Continue => {}
            Progress::Done(trust) => return Ok(trust),
            Progress::Failed(error) => return Err(error.into()),
        }
    }
}

/// Reads one whole handshake message; [`WireError::HandshakeClosed`] when the connection ends
/// before a byte of it came.
async fn read_message(
    stream: &mut PeerConnection,
    message: &mut HandshakeMessage,
) -> Result<(), WireError> {
    let mut filled = 0;
    while filled < message.len() {
        match stream.read(&mut message[filled..]).await? {
            0 if filled == 0 => return Err(WireError::HandshakeClosed),
            0 => return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            read => filled += read,
        }
    }
    Ok(())
}

/// A fresh nonce from the operating system's random source.
fn nonce() -> std::io::Result<Nonce> {
    use rand::RngCore;
    let mut nonce = [0u8; strata_core::handshake::NONCE_BYTES];
    rand::rngs::OsRng.try_fill_bytes(&mut nonce).map_err(std::io::Error::other)?;
    Ok(nonce)
}

/// Writes one message.
pub(crate) async fn send(
    stream: &mut PeerConnection,
    kind: MessageKind,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(ENVELOPE_HEADER_BYTES + payload.len());
    encode_message(&mut bytes, kind, payload);
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// Reads one whole message into `input` and returns its kind and payload, leaving any bytes
/// after it in `input`. `Ok(None)` at a clean end of stream.
pub(crate) async fn receive(
    stream: &mut PeerConnection,
    input: &mut Vec<u8>,
) -> Result<Option<(MessageKind, Vec<u8>)>, WireError> {
    loop {
        if let Some((message, length)) = decode_message(input)? {
            let taken = (message.kind, message.payload.to_vec());
            input.drain(..length);
            return Ok(Some(taken));
        }
        if input.len() > CONTROL_BYTES_MAX + ENVELOPE_HEADER_BYTES {
            return Err(WireError::TooLarge);
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            if input.is_empty() {
                return Ok(None);
            }
            return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        input.extend_from_slice(&chunk[..read]);
    }
}

/// Sends `request` on `stream` and waits for the response.
pub(crate) async fn exchange(
    stream: &mut PeerConnection,
    request: &Request,
) -> Result<Response, WireError> {
    let body = serde_json::to_vec(request)?;
    let work = async {
        send(stream, MessageKind::ControlRequest, &body).await?;
        let mut input = Vec::new();
        match receive(stream, &mut input).await? {
            Some((MessageKind::ControlResponse, payload)) => Ok(serde_json::from_slice(&payload)?),
            Some((kind, _)) => Err(WireError::Unexpected(kind)),
            None => Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, work)
        .await
        .map_err(|_| WireError::Timeout(EXCHANGE_TIMEOUT))?
}
