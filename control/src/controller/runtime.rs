//! The controller as the control thread runs it: the node's identity in the controller, the
//! Raft instance over the files of `store` and `machine`, proposing commands (here when this
//! node leads the controller's Raft, else at the member that does), and answering Raft's
//! messages from other members.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ReadPolicy};
use serde::{Deserialize, Serialize};
use strata_core::controller::{ClusterState, Command};
use tokio::sync::watch;

use super::machine::{Applied, StateMachine};
use super::network::{Network, RaftRequest, RaftResponse};
use super::store::{self, LogStore};
use super::{Answer, ControllerNode, Types};

/// The controller's Raft.
pub(crate) type ControllerRaft = openraft::Raft<Types, StateMachine>;

/// Raft's heartbeat: the controller's leader tells every member it is alive this often.
const RAFT_HEARTBEAT_MS: u64 = 50;
/// Raft's election timeout, drawn between these: a member that heard nothing from the
/// controller's leader this long stands for election.
const ELECTION_TIMEOUT_MIN_MS: u64 = 200;
const ELECTION_TIMEOUT_MAX_MS: u64 = 400;
/// Commands applied between snapshots of the controller's state (the log before is dropped).
const SNAPSHOT_EVERY_ENTRIES: u64 = 1000;

/// The file naming the node in the controller, next to the log.
const IDENTITY_FILE: &str = "identity";

/// Who this node is to the controller: a random 64-bit Raft id made with the controller's
/// directory (a node that lost its data comes back with a new one: a new incarnation), and
/// its name in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub node_id: u64,
    pub name: String,
    /// When the identity was made (wall-clock milliseconds): a node that lost its data comes
    /// back with a higher one, and the controller takes it for a new replica.
    pub incarnation: u64,
}

/// The controller's directory in the data directory.
pub(crate) fn directory(data_dir: &Path) -> PathBuf {
    data_dir.join("controller")
}

/// The identity kept in the data directory, if the node ever joined a controller.
///
/// # Errors
///
/// The file exists and cannot be read or understood: the node must not start as someone else.
pub(crate) fn read_identity(data_dir: &Path) -> Result<Option<Identity>, String> {
    store::read_value_file(&directory(data_dir), IDENTITY_FILE).map_err(|error| error.to_string())
}

/// Makes and keeps (atomically, synced, with a checksum) a new identity named `name`.
///
/// # Errors
///
/// The directory or file cannot be written.
pub(crate) fn create_identity(data_dir: &Path, name: &str) -> Result<Identity, String> {
    let incarnation = crate::roles::now_ms().max(1);
    let identity = Identity { node_id: random_node_id(), name: name.to_string(), incarnation };
    let directory = directory(data_dir);
    store::create_directory(&directory)
        .and_then(|()| store::write_value_file(&directory, IDENTITY_FILE, &identity))
        .map_err(|error| error.to_string())?;
    Ok(identity)
}

/// A nonzero random id from the kernel's random source.
fn random_node_id() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let from_kernel =
        std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    let id = if from_kernel.is_ok() {
        u64::from_le_bytes(bytes)
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
    };
    id.max(1)
}

/// Why the controller could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// Its files are damaged: the node must not run on them.
    #[error("{0}")]
    Damaged(String),
    /// A file could not be read or written (a full disk, an I/O error), or Raft did not start:
    /// opening again later may work.
    #[error("{0}")]
    Unavailable(String),
}

impl From<store::StoreError> for OpenError {
    fn from(error: store::StoreError) -> OpenError {
        match error {
            store::StoreError::Damaged { .. } => OpenError::Damaged(error.to_string()),
            store::StoreError::Io { .. } => OpenError::Unavailable(error.to_string()),
        }
    }
}

/// Why a command was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProposeError {
    /// Another member leads the controller's Raft (its address, when known).
    #[error("this member does not lead the controller")]
    NotLeader { leader: Option<ControllerNode> },
    #[error("the controller cannot commit: {0}")]
    Failed(String),
}

/// Why the controller's files are being opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// The node starts, joins or makes a cluster: a member that led the controller's Raft
    /// before a restart leads it again at once.
    Start,
    /// Its Raft stopped because a file could not be written: it comes back as a follower,
    /// so a member whose disk is still full cannot lead (and stall) the others.
    AfterFailure,
}

/// The controller running on this node.
pub(crate) struct Controller {
    pub(crate) raft: ControllerRaft,
    pub(crate) identity: Identity,
    /// Opens peer connections for the controller's calls to other members.
    pub(crate) dialer: crate::wire::Dialer,
    applied: watch::Receiver<Applied>,
}

impl Controller {
    /// Opens the controller's files under `data_dir` and starts its Raft.
    ///
    /// # Errors
    ///
    /// A damaged log or snapshot (the node must not start on it), a file the system would not
    /// read or write, or Raft refusing to start.
    pub(crate) async fn open(
        data_dir: &Path,
        identity: Identity,
        dialer: crate::wire::Dialer,
        opening: Opening,
    ) -> Result<Controller, OpenError> {
        let directory = directory(data_dir);
        let log = LogStore::open(&directory)?;
        let (machine, applied) = StateMachine::open(&directory)?;
        let config = openraft::Config {
            cluster_name: "strata".into(),
            heartbeat_interval: RAFT_HEARTBEAT_MS,
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
            max_in_snapshot_log_to_keep: SNAPSHOT_EVERY_ENTRIES / 10,
            enable_pre_vote: Some(true),
            enable_leader_restore: Some(opening == Opening::Start),
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|error| OpenError::Unavailable(format!("controller settings: {error}")))?;
        let network = Network { dialer: dialer.clone() };
        let raft = ControllerRaft::new(identity.node_id, Arc::new(config), network, log, machine)
            .await
            .map_err(|error| {
                OpenError::Unavailable(format!("the controller's Raft cannot start: {error}"))
            })?;
        tracing::info!(node_id = identity.node_id, name = %identity.name, "controller started");
        Ok(Controller { raft, identity, dialer, applied })
    }

    /// Why this controller's Raft stopped by itself (a file it could not write), once it has;
    /// `None` while it runs or after it was shut down on purpose.
    pub(crate) async fn stopped(&self) -> Option<String> {
        let mut metrics = self.raft.metrics();
        loop {
            match &metrics.borrow_watched().running_state {
                Ok(()) => {}
                Err(openraft::errors::Fatal::Stopped) => return None,
                Err(fatal) => return Some(fatal.to_string()),
            }
            if metrics.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The state as applied here (it may lag the controller's leader by a heartbeat or so).
    pub(crate) fn state(&self) -> ClusterState {
        self.applied.borrow().state.clone()
    }

    /// Changes of the applied state.
    pub(crate) fn watch(&self) -> watch::Receiver<Applied> {
        self.applied.clone()
    }

    /// This member as Raft addresses it.
    pub(crate) fn node(&self, peer_address: &str) -> ControllerNode {
        ControllerNode { name: self.identity.name.clone(), peer_address: peer_address.into() }
    }

    /// Whether this member leads the controller's Raft now.
    pub(crate) fn leads(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.identity.node_id)
    }

    /// The member leading the controller's Raft, as this member last heard.
    pub(crate) fn leader(&self) -> Option<(u64, ControllerNode)> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.get_node(&id)?.clone();
        Some((id, node))
    }

    /// Hands the leadership of the controller's Raft to another voter that holds the whole
    /// log, if there is one: the data leader should not also lead the controller, or its death
    /// costs a Raft election before anyone can replace it. Answers whether it asked.
    pub(crate) async fn hand_off_leadership(&self) -> bool {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let Some(replication) = metrics.replication.as_ref() else { return false };
        let last = metrics.last_log_index;
        let voters: BTreeSet<u64> = metrics.membership_config.membership().voter_ids().collect();
        let target = replication.iter().find(|(id, matched)| {
            **id != self.identity.node_id
                && voters.contains(id)
                && matched.as_ref().map(|log_id| log_id.index) == last
        });
        let Some((target, _)) = target else { return false };
        match self.raft.trigger().transfer_leader(*target).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot hand the controller's leadership over");
                false
            }
        }
    }

    /// The index of the last command applied here (0 before any).
    pub(crate) fn applied_index(&self) -> u64 {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics.last_applied.map_or(0, |log_id| log_id.index)
    }

    /// How far the member `node_id` holds this leader's log (0 when unknown or not leading).
    pub(crate) fn matched_index(&self, node_id: u64) -> u64 {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let replication = metrics.replication.as_ref();
        let matched = replication.and_then(|replication| replication.get(&node_id).cloned());
        matched.flatten().map_or(0, |log_id| log_id.index)
    }

    /// Raft's voters and learners by id.
    pub(crate) fn raft_members(&self) -> (BTreeSet<u64>, BTreeMap<u64, ControllerNode>) {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters = membership.voter_ids().collect();
        let nodes = membership.nodes().map(|(id, node)| (*id, node.clone())).collect();
        (voters, nodes)
    }

    /// Makes a controller of this one member (a new cluster).
    ///
    /// # Errors
    ///
    /// Raft refused (it was initialised already).
    pub(crate) async fn initialize(&self, node: ControllerNode) -> Result<(), String> {
        let members = BTreeMap::from([(self.identity.node_id, node)]);
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(error) => Err(format!("cannot initialise the controller: {error}")),
        }
    }

    /// Commits `command` if this member leads the controller's Raft, and answers what
    /// applying it gave.
    ///
    /// # Errors
    ///
    /// Another member leads (`NotLeader`), or the command could not be committed.
    pub(crate) async fn propose(&self, command: Command) -> Result<Answer, ProposeError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(error) => Err(write_error(error)),
        }
    }

    /// Adds a member to Raft: as a learner first (it receives the log), then, for a voter, to
    /// the voters. Only on the controller's leader.
    ///
    /// # Errors
    ///
    /// As [`Controller::propose`].
    pub(crate) async fn admit(
        &self,
        node_id: u64,
        node: ControllerNode,
        voter: bool,
    ) -> Result<(), ProposeError> {
        let (voters, nodes) = self.raft_members();
        if !nodes.contains_key(&node_id) {
            self.raft.add_learner(node_id, node, true).await.map_err(write_error)?;
        }
        if voter && !voters.contains(&node_id) {
            let add = ChangeMembers::AddVoterIds(BTreeSet::from([node_id]));
            self.raft.change_membership(add, false).await.map_err(write_error)?;
        }
        Ok(())
    }

    /// Takes the Raft member `node_id` out (voter or learner). Only on the controller's leader.
    ///
    /// # Errors
    ///
    /// As [`Controller::propose`].
    pub(crate) async fn dismiss(&self, node_id: u64) -> Result<(), ProposeError> {
        let (voters, nodes) = self.raft_members();
        if voters.contains(&node_id) {
            let remove = ChangeMembers::RemoveVoters(BTreeSet::from([node_id]));
            self.raft.change_membership(remove, false).await.map_err(write_error)?;
        }
        if nodes.contains_key(&node_id) {
            let remove = ChangeMembers::RemoveNodes(BTreeSet::from([node_id]));
            self.raft.change_membership(remove, false).await.map_err(write_error)?;
        }
        Ok(())
    }

    /// Confirms with a majority of the controller that this member still leads it, and
    /// answers the state applied up to that point: what a lease is renewed on.
    ///
    /// # Errors
    ///
    /// This member does not lead, or a majority did not answer.
    pub(crate) async fn confirmed_state(&self) -> Result<ClusterState, String> {
        let read = self
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|error| error.to_string())?;
        let index = Some(read.index());
        let mut applied = self.watch();
        let reached = async {
            applied
                .wait_for(|applied| applied.last_applied >= index)
                .await
                .map(|applied| applied.state.clone())
        };
        match tokio::time::timeout(Duration::from_millis(500), reached).await {
            Ok(Ok(state)) => Ok(state),
            _ => Err("the controller's state did not catch up in time".into()),
        }
    }

    /// Answers one Raft message from another member.
    pub(crate) async fn answer(&self, request: RaftRequest) -> RaftResponse {
        match request {
            RaftRequest::Append(rpc) => RaftResponse::Append(self.raft.append_entries(rpc).await),
            RaftRequest::Vote(rpc) => RaftResponse::Vote(self.raft.vote(rpc).await),
            RaftRequest::PreVote(rpc) => RaftResponse::Vote(self.raft.pre_vote(rpc).await),
            RaftRequest::Snapshot { vote, meta, data } => {
                let snapshot = openraft::Snapshot { meta, snapshot: data };
                RaftResponse::Snapshot(self.raft.install_full_snapshot(vote, snapshot).await)
            }
            RaftRequest::TransferLeader(request) => {
                let answer = self.raft.handle_transfer_leader(request).await;
                RaftResponse::TransferLeader(answer.map_err(RaftError::Fatal))
            }
        }
    }
}

fn write_error(error: RaftError<Types, ClientWriteError<Types>>) -> ProposeError {
    if let Some(forward) = error.forward_to_leader() {
        return ProposeError::NotLeader { leader: forward.leader_node.clone() };
    }
    ProposeError::Failed(error.to_string())
}
