//! Raft's messages between members, on the peer port: a `RaftRequest` envelope (JSON of
//! [`RaftRequest`]) answered by a `RaftResponse` envelope (JSON of [`RaftResponse`]), one
//! exchange at a time on a connection each member keeps open to each other member. The
//! envelope is the peer protocol's (`docs/peer-protocol.md`): a checksum over the payload, a
//! bound on its length.

use std::future::Future;
use std::time::Duration;

use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::errors::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftNetworkFactory, RaftNetworkV2};
use serde::{Deserialize, Serialize};
use strata_core::peer::MessageKind;

use super::{ControllerNode, SnapshotBytes, Types};
use crate::wire::{self, WireError};

/// One Raft message to the member with Raft id `to`: another node at the same address (the
/// member came back with new data, as a new incarnation with a new id) refuses it, or it
/// would answer for a log it does not hold.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RaftEnvelope {
    pub to: u64,
    pub message: RaftRequest,
}

/// A Raft message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RaftRequest {
    Append(AppendEntriesRequest<Types>),
    Vote(VoteRequest<Types>),
    PreVote(VoteRequest<Types>),
    Snapshot { vote: VoteOf<Types>, meta: SnapshotMetaOf<Types>, data: SnapshotBytes },
    TransferLeader(TransferLeaderRequest<Types>),
}

/// A member's answer to a [`RaftRequest`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RaftResponse {
    Append(Result<AppendEntriesResponse<Types>, RaftError<Types>>),
    Vote(Result<VoteResponse<Types>, RaftError<Types>>),
    Snapshot(Result<SnapshotResponse<Types>, Fatal<Types>>),
    TransferLeader(Result<TransferLeaderResponse<Types>, RaftError<Types>>),
    /// The member runs no controller (it has not joined one yet, or is starting).
    NoController,
    /// The request could not be read.
    Refused(String),
}

/// Makes a [`Peer`] per member Raft talks to.
pub(crate) struct Network {
    pub(crate) dialer: wire::Dialer,
}

impl RaftNetworkFactory<Types> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &ControllerNode) -> Peer {
        let dialer = self.dialer.clone();
        Peer { target, address: node.peer_address.clone(), dialer, connection: None }
    }
}

/// The connection to one member, opened at the first message and again after a failure.
pub(crate) struct Peer {
    target: u64,
    address: String,
    /// Proves the cluster secret on every connection it opens.
    dialer: wire::Dialer,
    connection: Option<wire::PeerConnection>,
}

/// Why an exchange with a member failed, before any answer came.
enum ExchangeError {
    /// Nothing listens there, or it cannot be reached: back off.
    Unreachable(String),
    /// The connection broke or the answer was not understood: retry.
    Network(String),
    /// No answer within the time Raft gave.
    Timeout,
}

impl Peer {
    async fn exchange(
        &mut self,
        request: RaftRequest,
        ttl: Duration,
    ) -> Result<RaftResponse, ExchangeError> {
        let envelope = RaftEnvelope { to: self.target, message: request };
        let body = serde_json::to_vec(&envelope)
            .map_err(|error| ExchangeError::Network(format!("cannot encode: {error}")))?;
        let outcome = tokio::time::timeout(ttl, self.exchange_bytes(&body)).await;
        match outcome {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                self.connection = None;
                Err(error)
            }
            Err(_) => {
                self.connection = None;
                Err(ExchangeError::Timeout)
            }
        }
    }

    async fn exchange_bytes(&mut self, body: &[u8]) -> Result<RaftResponse, ExchangeError> {
        if self.connection.is_none() {
            let stream = self.dialer.connect(&self.address).await.map_err(|error| {
                ExchangeError::Unreachable(format!("{}: {error}", self.address))
            })?;
            self.connection = Some(stream);
        }
        let stream = self.connection.as_mut().expect("connected above");
        let network = |error: WireError| ExchangeError::Network(error.to_string());
        wire::send(stream, MessageKind::RaftRequest, body)
            .await
            .map_err(|error| network(error.into()))?;
        let mut input = Vec::new();
        match wire::receive(stream, &mut input).await.map_err(network)? {
            Some((MessageKind::RaftResponse, payload)) => serde_json::from_slice(&payload)
                .map_err(|error| ExchangeError::Network(format!("bad answer: {error}"))),
            Some((kind, _)) => Err(network(WireError::Unexpected(kind))),
            None => Err(ExchangeError::Network("the member closed the connection".into())),
        }
    }

    fn rpc_error<E: std::error::Error>(&self, error: ExchangeError) -> RPCError<Types, E> {
        match error {
            ExchangeError::Unreachable(reason) => {
                RPCError::Unreachable(Unreachable::new(&openraft::AnyError::error(reason)))
            }
            ExchangeError::Network(reason) => {
                RPCError::Network(NetworkError::new(&openraft::AnyError::error(reason)))
            }
            ExchangeError::Timeout => RPCError::Network(NetworkError::new(
                &openraft::AnyError::error(format!("no answer from {}", self.address)),
            )),
        }
    }

    /// An answer of the wrong kind, or a member that runs no controller.
    fn unexpected<E: std::error::Error>(&self, response: &RaftResponse) -> RPCError<Types, E> {
        let reason = match response {
            RaftResponse::NoController => format!("{} runs no controller yet", self.address),
            RaftResponse::Refused(reason) => format!("{} refused: {reason}", self.address),
            _ => format!("{} answered another message", self.address),
        };
        RPCError::Unreachable(Unreachable::new(&openraft::AnyError::error(reason)))
    }
}

impl RaftNetworkV2<Types> for Peer {
    type SnapshotData = SnapshotBytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Types>, RPCError<Types>> {
        let response = self
            .exchange(RaftRequest::Append(rpc), option.soft_ttl())
            .await
            .map_err(|error| self.rpc_error(error))?;
        match response {
            RaftResponse::Append(Ok(answer)) => Ok(answer),
            RaftResponse::Append(Err(error)) => Err(self.remote(error)),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Types>,
        option: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        self.ask_vote(RaftRequest::Vote(rpc), option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<Types>,
        option: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        self.ask_vote(RaftRequest::PreVote(rpc), option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<Types>,
        snapshot: SnapshotOf<Types, SnapshotBytes>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<Types>, StreamingError<Types>> {
        let request = RaftRequest::Snapshot { vote, meta: snapshot.meta, data: snapshot.snapshot };
        let response = self.exchange(request, option.hard_ttl()).await.map_err(|error| {
            match self.rpc_error::<std::convert::Infallible>(error) {
                RPCError::Unreachable(unreachable) => StreamingError::Unreachable(unreachable),
                RPCError::Network(network) => StreamingError::Network(network),
                other => StreamingError::Network(NetworkError::new(&other)),
            }
        })?;
        match response {
            RaftResponse::Snapshot(Ok(answer)) => Ok(answer),
            RaftResponse::Snapshot(Err(fatal)) => {
                Err(StreamingError::Network(NetworkError::new(&fatal)))
            }
            other => {
                let reason = format!("{:?}", self.unexpected::<std::convert::Infallible>(&other));
                Err(StreamingError::Unreachable(Unreachable::new(&openraft::AnyError::error(
                    reason,
                ))))
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<Types>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<Types>, RPCError<Types>> {
        let response = self
            .exchange(RaftRequest::TransferLeader(request), option.soft_ttl())
            .await
            .map_err(|error| self.rpc_error(error))?;
        match response {
            RaftResponse::TransferLeader(Ok(answer)) => Ok(answer),
            RaftResponse::TransferLeader(Err(error)) => Err(self.remote(error)),
            other => Err(self.unexpected(&other)),
        }
    }
}

impl Peer {
    async fn ask_vote(
        &mut self,
        request: RaftRequest,
        option: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        let response = self
            .exchange(request, option.soft_ttl())
            .await
            .map_err(|error| self.rpc_error(error))?;
        match response {
            RaftResponse::Vote(Ok(answer)) => Ok(answer),
            RaftResponse::Vote(Err(error)) => Err(self.remote(error)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The member answered with an error of its Raft (only a fatal one can come back for a
    /// replication message): Raft here treats it as a failure to reach that member.
    fn remote(&self, error: RaftError<Types>) -> RPCError<Types> {
        let reason = format!("{}: {error}", self.address);
        RPCError::Network(NetworkError::new(&openraft::AnyError::error(reason)))
    }
}
