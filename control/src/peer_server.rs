//! The peer port: control requests from other nodes, and replication subscriptions, which are
//! handed to the shard owning their partitions. Every connection starts with TLS when
//! `[security] peer_tls` is on (the peer's certificate must chain to the cluster's CA), then
//! the handshake (`strata_core::handshake`): nothing else is read from a peer that has not
//! proven the cluster secret, and a node with no secret that does not allow insecure peers
//! takes no peer connection at all.

use std::net::SocketAddr;
use std::sync::Arc;

use strata_core::peer::{MessageKind, Subscribe};
use strata_shard::ControlMessage;
use tokio::net::{TcpListener, TcpStream};

use crate::roles::Control;
use crate::wire::{self, PeerConnection, Request, Response};

/// Peer connections served at once, at most; more wait in the kernel's backlog.
const PEER_CONNECTIONS_MAX: usize = 1024;
/// A control connection silent this long is closed (replicas heartbeat every second or so),
/// so idle or stuck peers cannot hold every connection slot.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) async fn serve(control: Arc<Control>, listener: TcpListener) {
    let permits = Arc::new(tokio::sync::Semaphore::new(PEER_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "peer accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let control = Arc::clone(&control);
        tokio::spawn(async move {
            if let Some(stream) = authenticate(&control, stream, peer).await {
                if let Err(error) = serve_connection(&control, stream).await {
                    tracing::debug!(%peer, %error, "peer connection closed");
                }
            }
            drop(permit);
        });
    }
}

/// The handshake on a connection just accepted: the connection if the peer proved the
/// secret (or neither side has one and insecure peers are allowed), `None` once it is closed.
async fn authenticate(
    control: &Control,
    socket: TcpStream,
    peer: SocketAddr,
) -> Option<PeerConnection> {
    let secret = control.config.cluster_secret.clone();
    if secret.is_none() && !control.config.allow_insecure_peers {
        tracing::warn!(
            %peer,
            "peer connection refused: this node has no [security] cluster_secret and \
             allow_insecure_peers is off"
        );
        return None;
    }
    let mut stream = match &control.config.peer_tls {
        None => PeerConnection::Plain(socket),
        Some(tls) => accept_tls(tls, socket, peer).await?,
    };
    match wire::accept_handshake(&mut stream, secret).await {
        Ok(trust) => {
            tracing::debug!(%peer, ?trust, "peer handshake done");
            Some(stream)
        }
        // Closed between messages: a port probe, or a connector that refused this node.
        Err(error @ wire::WireError::HandshakeClosed) => {
            tracing::debug!(%peer, %error, "peer connection closed");
            None
        }
        Err(error) => {
            tracing::warn!(%peer, %error, "peer connection refused");
            None
        }
    }
}

/// The server side of TLS on a peer connection, the peer's certificate required: the
/// connection, or `None` once it is closed (a peer without a certificate the CA signed).
async fn accept_tls(
    tls: &strata_shard::PeerTls,
    socket: TcpStream,
    peer: SocketAddr,
) -> Option<PeerConnection> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server));
    match tokio::time::timeout(wire::HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => {
            Some(PeerConnection::Tls(Box::new(tokio_rustls::TlsStream::Server(stream))))
        }
        Ok(Err(error)) => {
            tracing::warn!(%peer, %error, "peer connection refused: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::warn!(%peer, "peer connection refused: no TLS handshake in time");
            None
        }
    }
}

/// Serves one peer connection: control requests until it closes, or one subscription.
async fn serve_connection(
    control: &Arc<Control>,
    mut stream: PeerConnection,
) -> Result<(), wire::WireError> {
    let mut input = Vec::new();
    loop {
        let received = tokio::time::timeout(IDLE_TIMEOUT, wire::receive(&mut stream, &mut input));
        let Some((kind, payload)) =
            received.await.map_err(|_| wire::WireError::Timeout(IDLE_TIMEOUT))??
        else {
            return Ok(());
        };
        match kind {
            MessageKind::ControlRequest => {
                let response = match serde_json::from_slice::<Request>(&payload) {
                    Ok(request) => control.answer(request).await,
                    Err(error) => Response {
                        error_code: 3067,
                        error_message: format!("bad control request: {error}"),
                        ..Response::default()
                    },
                };
                let body = serde_json::to_vec(&response)?;
                wire::send(&mut stream, MessageKind::ControlResponse, &body).await?;
            }
            MessageKind::RaftRequest => {
                let response = control.answer_raft(&payload).await;
                let body = serde_json::to_vec(&response)?;
                wire::send(&mut stream, MessageKind::RaftResponse, &body).await?;
            }
            MessageKind::Subscribe if input.is_empty() => {
                return subscribe(control, stream, &payload).await;
            }
            other => return Err(wire::WireError::Unexpected(other)),
        }
    }
}

async fn subscribe(
    control: &Arc<Control>,
    mut stream: PeerConnection,
    payload: &[u8],
) -> Result<(), wire::WireError> {
    let subscribe = Subscribe::decode(payload)?;
    let partitions = || subscribe.streams.iter().map(|from| from.partition);
    let first = partitions().next().expect("a subscription names a partition");
    let shards = control.handle.shard_count();
    let refusal = if control.role() != strata_core::cluster::Role::Leader {
        Some("this node is not the leader".to_string())
    } else if let Some(missing) =
        partitions().find(|partition| partition.0 >= control.handle.partition_count)
    {
        Some(format!("no partition {missing}"))
    } else if partitions().any(|partition| partition.shard(shards) != first.shard(shards)) {
        Some(format!("partitions {:?} are not all on one shard of the leader", subscribe.streams))
    } else if !control.may_stream(&subscribe.name) {
        Some(format!("{} is not an alive member of this cluster", subscribe.name))
    } else {
        None
    };
    if let Some(reason) = refusal {
        wire::send(&mut stream, MessageKind::Refused, reason.as_bytes()).await?;
        return Ok(());
    }
    let (socket, tls) = stream.into_parts();
    let stream = socket.into_std()?;
    stream.set_nonblocking(false)?;
    if !control.handle.send_to_owner(first, ControlMessage::Attach { stream, tls, subscribe }) {
        tracing::warn!(partition = first.0, "the shard owning the partitions is gone");
    }
    Ok(())
}
