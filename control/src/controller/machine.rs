//! The controller's state machine for openraft: it applies committed log entries to
//! [`ClusterState`] (the pure decisions of `strata_core::controller`), answers each command,
//! publishes the applied state on a watch channel, and keeps one snapshot on disk.
//!
//! The applied state lives in memory only. What survives a restart is the snapshot (this file)
//! and the log with its committed log id (`store`): on open the machine starts from the
//! snapshot, and openraft applies the committed entries after it again. Applying is
//! deterministic (`ClusterState::apply` depends on nothing but the state and the command), so
//! applying them again gives the same state.
//!
//! # The snapshot file: `snapshot`
//!
//! A value file of `store`'s format (magic "STRCTVAL", format version 1, payload length,
//! CRC32C, then JSON; replaced atomically through `snapshot.tmp`), whose payload is
//!
//! ```text
//! {"meta": openraft's SnapshotMeta:
//!          {"last_log_id": LogId or null, "last_membership": StoredMembership,
//!           "snapshot_id": ""},
//!  "machine": {"cluster": strata_core::controller::ClusterState,
//!              "last_applied": LogId or null,
//!              "membership": openraft's StoredMembership}}
//! ```
//!
//! where `LogId` is `{"leader_id":{"term":T,"node_id":N},"index":I}` and `StoredMembership` is
//! `{"log_id": LogId or null, "membership": {"configs": [[voter ids], ...], "nodes": {"<id>":
//! {"name": ..., "peer_address": ...}}}}`. `meta.last_log_id` equals `machine.last_applied`
//! and `meta.last_membership` equals `machine.membership`; anything else is damage. The
//! snapshot's data, as openraft streams it to a follower and hands it to `install_snapshot`,
//! is the JSON of `machine` alone.
//!
//! A snapshot is written when openraft builds one (from a copy of the state taken when the
//! build was asked, in another task) and when one is installed. A build never replaces a
//! snapshot at the same or a later log id, so a slow build cannot roll the file back behind
//! an installed snapshot whose entries the log has already purged.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::type_config::alias::{
    EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf,
};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use serde::{Deserialize, Serialize};
use strata_core::controller::ClusterState;
use tokio::sync::watch;

use super::store::{self, StoreError};
use super::{Answer, SnapshotBytes, Types};

/// An entry of the controller's log.
type Entry = EntryOf<Types>;
/// The id of a log entry.
type LogId = LogIdOf<Types>;
/// The Raft membership and the id of the entry that set it.
type Membership = StoredMembershipOf<Types>;
/// What openraft knows of a snapshot without reading its data.
type SnapshotMeta = SnapshotMetaOf<Types>;

/// The snapshot file's name in the controller directory.
const SNAPSHOT_FILE: &str = "snapshot";

/// The applied state as the machine publishes it after each batch of entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The cluster state after the last applied entry.
    pub state: ClusterState,
    /// The index of the last applied entry; None before the first.
    pub last_applied: Option<u64>,
    /// The last Raft membership applied (voters, learners and their addresses).
    pub membership: Membership,
}

/// The applied state: the machine's memory, and the data of its snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct MachineState {
    /// The cluster state the applied commands made.
    cluster: ClusterState,
    /// The id of the last applied entry.
    last_applied: Option<LogId>,
    /// The last membership entry applied.
    membership: Membership,
}

/// The snapshot file's payload.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    /// What openraft knows of the snapshot.
    meta: SnapshotMeta,
    /// The state it holds.
    machine: MachineState,
}

/// The snapshot on disk, as openraft reads it back.
#[derive(Clone)]
struct CurrentSnapshot {
    /// What openraft knows of the snapshot.
    meta: SnapshotMeta,
    /// The JSON of its [`MachineState`].
    data: SnapshotBytes,
}

/// The current snapshot, shared by the machine and its builders (which run in other tasks).
type SnapshotSlot = Arc<Mutex<Option<CurrentSnapshot>>>;

/// The controller's state machine (see the module documentation). Openraft owns it.
pub(crate) struct StateMachine {
    /// The controller directory, `<data_dir>/controller`.
    directory: PathBuf,
    /// The applied state.
    machine: MachineState,
    /// The snapshot on disk.
    current: SnapshotSlot,
    /// Where the applied state is published after each change.
    publisher: watch::Sender<Applied>,
}

/// Builds a snapshot of the state as it was when openraft asked for the builder.
pub(crate) struct SnapshotBuilder {
    /// The controller directory, where the snapshot file goes.
    directory: PathBuf,
    /// The state to snapshot.
    machine: MachineState,
    /// The current snapshot, replaced by the built one if that is newer.
    current: SnapshotSlot,
}

impl StateMachine {
    /// Opens the state machine of the controller in `directory` (created if missing): from
    /// its snapshot if there is one, empty otherwise. The receiver sees the applied state now
    /// and after every change.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the snapshot cannot be read, [`StoreError::Damaged`] if it is not
    /// a snapshot this machine wrote.
    pub(crate) fn open(
        directory: &Path,
    ) -> Result<(StateMachine, watch::Receiver<Applied>), StoreError> {
        store::create_directory(directory)?;
        store::remove_leftover(directory, SNAPSHOT_FILE)?;
        let (machine, current) = match store::read_value_file(directory, SNAPSHOT_FILE)? {
            None => (MachineState::default(), None),
            Some(file) => load_snapshot(directory, file)?,
        };
        let (publisher, receiver) = watch::channel(machine.applied());
        let current = Arc::new(Mutex::new(current));
        let directory = directory.to_path_buf();
        Ok((StateMachine { directory, machine, current, publisher }, receiver))
    }

    /// Publishes the applied state to the watchers.
    fn publish(&self) {
        self.publisher.send_replace(self.machine.applied());
    }
}

impl MachineState {
    /// Applies one committed entry and gives the answer for the client that proposed it.
    fn apply(&mut self, entry: Entry) -> Answer {
        let log_id = entry.log_id;
        let previous = self.last_applied.map(|applied| applied.index);
        assert!(
            previous.is_none_or(|previous| log_id.index > previous),
            "applying entry {} after entry {previous:?}",
            log_id.index
        );
        self.last_applied = Some(log_id);
        match entry.payload {
            EntryPayload::Blank => Answer(Ok(Vec::new())),
            EntryPayload::Normal(command) => Answer(self.cluster.apply(command)),
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(log_id), membership);
                Answer(Ok(Vec::new()))
            }
        }
    }

    /// The state as published.
    fn applied(&self) -> Applied {
        Applied {
            state: self.cluster.clone(),
            last_applied: self.last_applied.map(|applied| applied.index),
            membership: self.membership.clone(),
        }
    }

    /// What openraft knows of a snapshot of this state.
    fn meta(&self) -> SnapshotMeta {
        SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone() }
    }

    /// The snapshot data of this state.
    fn encode(&self) -> io::Result<SnapshotBytes> {
        serde_json::to_vec(self).map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))
    }
}

impl RaftStateMachine<Types> for StateMachine {
    /// The JSON of the machine's state (see the module documentation).
    type SnapshotData = SnapshotBytes;
    /// Builds from a copy of the state, in its own task.
    type SnapshotBuilder = SnapshotBuilder;

    /// The last applied log id and membership.
    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, Membership)> {
        Ok((self.machine.last_applied, self.machine.membership.clone()))
    }

    /// Applies each entry in order and answers its client, if one waits; then publishes the
    /// new state once for the whole batch (also when the stream fails part way).
    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<Types>>> + Unpin + OptionalSend,
    {
        let mut outcome = Ok(());
        while let Some(item) = entries.next().await {
            let (entry, responder) = match item {
                Ok(item) => item,
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            };
            let answer = self.machine.apply(entry);
            if let Some(responder) = responder {
                responder.send(answer);
            }
        }
        self.publish();
        outcome
    }

    /// A builder holding a copy of the state now, so applying can go on while it builds.
    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            directory: self.directory.clone(),
            machine: self.machine.clone(),
            current: Arc::clone(&self.current),
        }
    }

    /// Checks that the data is a state matching `meta`, writes it as the snapshot file, then
    /// makes it the state and publishes it. Refused data leaves everything unchanged.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: SnapshotBytes,
    ) -> io::Result<()> {
        let machine: MachineState = serde_json::from_slice(&data).map_err(|error| {
            let reason = format!("a snapshot does not hold the controller's state: {error}");
            io::Error::new(io::ErrorKind::InvalidData, reason)
        })?;
        check_matches(meta, &machine)
            .map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, reason))?;
        let snapshot = CurrentSnapshot { meta: meta.clone(), data };
        save_snapshot(&self.directory, &self.current, snapshot, &machine, Replace::Always)?;
        self.machine = machine;
        self.publish();
        Ok(())
    }

    /// The snapshot last built or installed, from memory (it is also on disk).
    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<SnapshotOf<Types, SnapshotBytes>>> {
        let current = lock(&self.current)?.clone();
        Ok(current.map(|current| Snapshot { meta: current.meta, snapshot: current.data }))
    }
}

impl RaftSnapshotBuilder<Types> for SnapshotBuilder {
    /// The JSON of the machine's state.
    type SnapshotData = SnapshotBytes;

    /// Encodes the state, writes it as the snapshot file unless a snapshot at the same or a
    /// later log id is current already, and returns it.
    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<Types, SnapshotBytes>> {
        let meta = self.machine.meta();
        let data = self.machine.encode()?;
        let snapshot = CurrentSnapshot { meta: meta.clone(), data: data.clone() };
        save_snapshot(&self.directory, &self.current, snapshot, &self.machine, Replace::Older)?;
        Ok(Snapshot { meta, snapshot: data })
    }
}

/// Which current snapshot a new one replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Any: an installed snapshot replaces the state whatever it was.
    Always,
    /// Only one at an earlier log id: a build may finish after a newer snapshot landed.
    Older,
}

/// Writes `snapshot` of `machine` to the snapshot file and makes it the current one, unless
/// `replace` keeps a newer current one.
fn save_snapshot(
    directory: &Path,
    current: &Mutex<Option<CurrentSnapshot>>,
    snapshot: CurrentSnapshot,
    machine: &MachineState,
    replace: Replace,
) -> io::Result<()> {
    let mut current = lock(current)?;
    let newer_kept = current.as_ref().is_some_and(|current| {
        replace == Replace::Older && current.meta.last_log_id >= snapshot.meta.last_log_id
    });
    if newer_kept {
        return Ok(());
    }
    let file = SnapshotFile { meta: snapshot.meta.clone(), machine: machine.clone() };
    store::write_value_file(directory, SNAPSHOT_FILE, &file)?;
    *current = Some(snapshot);
    Ok(())
}

/// The state and the current snapshot from a snapshot file read on open.
fn load_snapshot(
    directory: &Path,
    file: SnapshotFile,
) -> Result<(MachineState, Option<CurrentSnapshot>), StoreError> {
    let path = directory.join(SNAPSHOT_FILE);
    check_matches(&file.meta, &file.machine).map_err(|reason| StoreError::Damaged {
        file: path.clone(),
        offset: store::VALUE_HEADER_BYTES as u64,
        reason,
    })?;
    let data = file.machine.encode().map_err(|source| StoreError::Io {
        operation: "encode the snapshot read from",
        path,
        source,
    })?;
    let current = CurrentSnapshot { meta: file.meta, data };
    Ok((file.machine, Some(current)))
}

/// Checks that a snapshot's metadata describes its state.
fn check_matches(meta: &SnapshotMeta, machine: &MachineState) -> Result<(), String> {
    if meta.last_log_id != machine.last_applied {
        return Err(format!(
            "the snapshot's metadata says it ends at {:?}, its state at {:?}",
            meta.last_log_id, machine.last_applied
        ));
    }
    if meta.last_membership != machine.membership {
        return Err("the snapshot's metadata and state give different memberships".into());
    }
    Ok(())
}

/// Locks the current snapshot; a panic while it was held leaves it unusable.
fn lock(
    current: &Mutex<Option<CurrentSnapshot>>,
) -> io::Result<MutexGuard<'_, Option<CurrentSnapshot>>> {
    current.lock().map_err(|_| {
        io::Error::other("the controller's current snapshot was left inconsistent by a panic")
    })
}
