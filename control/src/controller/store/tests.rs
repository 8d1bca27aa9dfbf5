//! Tests of the controller's files: openraft's own storage suite over [`LogStore`] and
//! [`StateMachine`], then what a restart must bring back, what a crash may leave (a torn tail,
//! cut off) and what it cannot (damage, refused), and the state machine's snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use futures_util::stream;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{
    IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, Membership, StorageError};
use strata_core::controller::{Applicant, ClusterState, ClusterTag, Command, MemberKind};
use tempfile::TempDir;

use super::{write_value_file, Entry, LogId, LogStore, StoreError, Vote, LOG_HEADER_BYTES};
use crate::controller::machine::{Applied, StateMachine};
use crate::controller::{ControllerNode, SnapshotBytes, Types};

/// Opens a log store and a state machine in a fresh directory for each test of the suite.
struct Builder;

impl StoreBuilder<Types, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<Types>> {
        let directory = TempDir::new().map_err(storage_error)?;
        let store =
            LogStore::open(directory.path()).map_err(|error| storage_error(error.into()))?;
        let opened = StateMachine::open(directory.path());
        let (machine, _applied) = opened.map_err(|error| storage_error(error.into()))?;
        Ok((directory, store, machine))
    }
}

/// An error of the builder as openraft's suite wants it.
fn storage_error(error: io::Error) -> StorageError<Types> {
    StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, error)
}

#[tokio::test]
async fn openraft_storage_suite_passes() {
    if let Err(error) = Suite::test_all(Builder).await {
        panic!("openraft's storage suite failed: {error}");
    }
}

/// The id of the entry at `index` proposed in `term` (by node 1).
fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(LeaderId { term, node_id: 1 }, index)
}

/// An entry without a command, as a new leader appends.
fn blank(term: u64, index: u64) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
}

/// An entry carrying `command`.
fn normal(term: u64, index: u64, command: Command) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(command) }
}

/// An entry making nodes 1 and 2 the voters.
fn membership(term: u64, index: u64) -> Entry {
    let node = |name: &str| ControllerNode {
        name: name.to_string(),
        peer_address: format!("{name}.example:7001"),
    };
    let nodes = BTreeMap::from([(1, node("alpha")), (2, node("beta"))]);
    let voters = Membership::new(vec![BTreeSet::from([1, 2])], nodes).expect("a valid membership");
    Entry { log_id: log_id(term, index), payload: EntryPayload::Membership(voters) }
}

/// The cluster every test uses; its id needs all 128 bits.
fn tag() -> ClusterTag {
    ClusterTag { name: "test".to_string(), id: u128::MAX - 7 }
}

/// A node named `name` asking to be a voter.
fn applicant(name: &str) -> Applicant {
    Applicant {
        name: name.to_string(),
        peer_address: format!("{name}.example:7001"),
        kind: MemberKind::Voter,
        incarnation: 1,
        version: "0.2.0".to_string(),
        metadata_version: 0,
    }
}

/// Initialises the cluster led by alpha.
fn init() -> Command {
    Command::Init { tag: tag(), leader: applicant("alpha"), partitions: 2, min_insync: 1 }
}

/// Beta joins the cluster.
fn join() -> Command {
    Command::Join { tag_id: Some(tag().id), applicant: applicant("beta") }
}

/// A mixed log: a membership, commands and blanks, at indexes `0..count`.
fn mixed_entries(count: u64) -> Vec<Entry> {
    let entry = |index: u64| match index % 4 {
        0 => blank(1, index),
        1 => membership(1, index),
        2 => normal(1, index, init()),
        _ => normal(1, index, join()),
    };
    (0..count).map(entry).collect()
}

/// Appends `entries` and waits for the store to report them durable.
async fn append(store: &mut LogStore, entries: Vec<Entry>) {
    let (sender, receiver) = Types::oneshot();
    store.append(entries, IOFlushed::signal(sender)).await.expect("the append");
    let flushed = receiver.await.expect("the store reports the append");
    flushed.expect("the append is durable");
}

/// Everything openraft can read back from a log store.
#[derive(Debug, PartialEq)]
struct Seen {
    log_state: LogState<Types>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    entries: Vec<Entry>,
}

/// Reads everything back from `store`, entries through a reader.
async fn seen(store: &mut LogStore) -> Seen {
    let log_state = store.get_log_state().await.expect("the log state");
    let committed = store.read_committed().await.expect("the committed log id");
    let mut reader = store.get_log_reader().await;
    let vote = reader.read_vote().await.expect("the vote");
    let entries = reader.try_get_log_entries(..).await.expect("the entries");
    Seen { log_state, vote, committed, entries }
}

/// The entries of a store.
async fn entries_of(store: &mut LogStore) -> Vec<Entry> {
    seen(store).await.entries
}

#[tokio::test]
async fn a_restart_brings_back_the_vote_the_log_and_its_bounds() {
    let directory = TempDir::new().expect("a temporary directory");
    let mut store = LogStore::open(directory.path()).expect("a new store");
    append(&mut store, mixed_entries(10)).await;
    store.save_vote(&Vote::new_committed(1, 1)).await.expect("the vote");
    store.save_committed(Some(log_id(1, 6))).await.expect("the committed log id");
    store.purge(log_id(1, 2)).await.expect("the purge");
    store.truncate_after(Some(log_id(1, 7))).await.expect("the truncation");
    append(&mut store, vec![blank(2, 8)]).await;
    let before = seen(&mut store).await;
    drop(store);

    let mut store = LogStore::open(directory.path()).expect("the store again");
    let after = seen(&mut store).await;
    assert_eq!(before, after);
    let mut expected = mixed_entries(8)[3..].to_vec();
    expected.push(blank(2, 8));
    assert_eq!(after.entries, expected);
    let bounds =
        LogState { last_purged_log_id: Some(log_id(1, 2)), last_log_id: Some(log_id(2, 8)) };
    assert_eq!(after.log_state, bounds);
    assert_eq!(after.vote, Some(Vote::new_committed(1, 1)));
    assert_eq!(after.committed, Some(log_id(1, 6)));
}

#[tokio::test]
async fn a_purge_past_the_last_entry_survives_a_restart() {
    let directory = TempDir::new().expect("a temporary directory");
    let mut store = LogStore::open(directory.path()).expect("a new store");
    append(&mut store, mixed_entries(3)).await;
    store.purge(log_id(2, 5)).await.expect("the purge");
    drop(store);

    let mut store = LogStore::open(directory.path()).expect("the store again");
    let state = store.get_log_state().await.expect("the log state");
    let bounds =
        LogState { last_purged_log_id: Some(log_id(2, 5)), last_log_id: Some(log_id(2, 5)) };
    assert_eq!(state, bounds);
    append(&mut store, vec![blank(2, 6)]).await;
    drop(store);
    let mut store = LogStore::open(directory.path()).expect("the store again");
    assert_eq!(entries_of(&mut store).await, vec![blank(2, 6)]);
}

/// A closed store of five entries in a fresh directory, the entries, and the log's path.
async fn five_entries() -> (TempDir, Vec<Entry>, PathBuf) {
    let directory = TempDir::new().expect("a temporary directory");
    let mut store = LogStore::open(directory.path()).expect("a new store");
    let entries = mixed_entries(5);
    append(&mut store, entries.clone()).await;
    let path = directory.path().join("log");
    (directory, entries, path)
}

/// The offsets of the records of a log file written by the store.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut offset = LOG_HEADER_BYTES;
    while offset < bytes.len() {
        offsets.push(offset);
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        offset += 8 + length as usize;
    }
    assert_eq!(offset, bytes.len(), "the log ends with a whole record");
    offsets
}

/// Opens the store in `directory` and expects it to refuse with damage.
fn expect_damaged(directory: &Path) -> (PathBuf, u64, String) {
    match LogStore::open(directory) {
        Err(StoreError::Damaged { file, offset, reason }) => (file, offset, reason),
        Err(error) => panic!("expected damage, got {error}"),
        Ok(_) => panic!("expected damage, the store opened"),
    }
}

#[tokio::test]
async fn a_last_record_cut_in_half_is_cut_off_and_the_log_goes_on() {
    let (directory, entries, path) = five_entries().await;
    let bytes = fs::read(&path).expect("the log");
    let last = record_offsets(&bytes)[4];
    fs::write(&path, &bytes[..last + (bytes.len() - last) / 2]).expect("a torn log");

    let mut store = LogStore::open(directory.path()).expect("a torn tail is no damage");
    assert_eq!(entries_of(&mut store).await, entries[..4]);
    assert_eq!(fs::metadata(&path).expect("the log").len(), last as u64);
    append(&mut store, vec![blank(3, 4)]).await;
    drop(store);

    let mut store = LogStore::open(directory.path()).expect("the store again");
    let mut expected = entries[..4].to_vec();
    expected.push(blank(3, 4));
    assert_eq!(entries_of(&mut store).await, expected);
}

#[tokio::test]
async fn garbage_a_crash_can_leave_after_the_last_record_is_cut_off() {
    let mut torn_record = 200u32.to_le_bytes().to_vec();
    torn_record.extend_from_slice(&[0x5a; 4 + 50]);
    let tails = [vec![0xab; 5], torn_record, vec![0; 64]];
    for tail in tails {
        let (directory, entries, path) = five_entries().await;
        let bytes = fs::read(&path).expect("the log");
        fs::write(&path, [bytes.as_slice(), &tail].concat()).expect("a log with a tail");

        let mut store = LogStore::open(directory.path()).expect("a torn tail is no damage");
        assert_eq!(entries_of(&mut store).await, entries, "tail {tail:?}");
        assert_eq!(fs::metadata(&path).expect("the log").len(), bytes.len() as u64);
    }
}

#[tokio::test]
async fn a_last_record_failing_its_checksum_is_cut_off() {
    let (directory, entries, path) = five_entries().await;
    let mut bytes = fs::read(&path).expect("the log");
    let last = record_offsets(&bytes)[4];
    bytes[last + 8 + 2] ^= 0x01;
    fs::write(&path, &bytes).expect("a log with a bad last record");

    let mut store = LogStore::open(directory.path()).expect("a torn tail is no damage");
    assert_eq!(entries_of(&mut store).await, entries[..4]);
}

#[tokio::test]
async fn a_flipped_byte_inside_the_log_is_damage_at_its_record() {
    let (directory, _, path) = five_entries().await;
    let mut bytes = fs::read(&path).expect("the log");
    let offsets = record_offsets(&bytes);
    bytes[offsets[2] + 8 + 3] ^= 0x20;
    fs::write(&path, &bytes).expect("a damaged log");

    let (file, offset, reason) = expect_damaged(directory.path());
    assert_eq!(file, path);
    assert_eq!(offset, offsets[2] as u64);
    assert!(reason.contains("checksum"), "{reason}");
    assert_eq!(fs::read(&path).expect("the log"), bytes, "a damaged log is left as it is");
    let message = LogStore::open(directory.path()).err().map(|error| error.to_string());
    let message = message.expect("damage again");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(&format!("byte {}", offsets[2])), "{message}");
}

#[tokio::test]
async fn a_record_longer_than_the_limit_is_damage() {
    let (directory, _, path) = five_entries().await;
    let mut bytes = fs::read(&path).expect("the log");
    let offsets = record_offsets(&bytes);
    bytes[offsets[1]..offsets[1] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&path, &bytes).expect("a damaged log");

    let (_, offset, reason) = expect_damaged(directory.path());
    assert_eq!(offset, offsets[1] as u64);
    assert!(reason.contains("claims"), "{reason}");
}

#[tokio::test]
async fn a_bad_file_header_is_damage() {
    let (directory, _, path) = five_entries().await;
    let mut bytes = fs::read(&path).expect("the log");
    bytes[0] = b'X';
    fs::write(&path, &bytes).expect("a damaged log");
    assert_eq!(expect_damaged(directory.path()).1, 0);

    bytes[0] = b'S';
    bytes[8] = 2;
    fs::write(&path, &bytes).expect("a log of another version");
    let (_, offset, reason) = expect_damaged(directory.path());
    assert_eq!(offset, 8);
    assert!(reason.contains("version 2"), "{reason}");
}

#[tokio::test]
async fn an_index_that_does_not_follow_is_damage() {
    let (directory, _, path) = five_entries().await;
    let bytes = fs::read(&path).expect("the log");
    let last = record_offsets(&bytes)[4];
    fs::write(&path, [bytes.as_slice(), &bytes[last..]].concat()).expect("a repeated record");

    let (_, offset, reason) = expect_damaged(directory.path());
    assert_eq!(offset, bytes.len() as u64);
    assert!(reason.contains("entry 4 follows entry 4"), "{reason}");
}

#[tokio::test]
async fn entries_a_crash_left_below_the_purged_index_are_dropped() {
    let (directory, entries, _) = five_entries().await;
    write_value_file(directory.path(), "purged", &log_id(1, 2)).expect("a purged id");

    let mut store = LogStore::open(directory.path()).expect("the store again");
    assert_eq!(entries_of(&mut store).await, entries[3..]);
    let state = store.get_log_state().await.expect("the log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
}

#[tokio::test]
async fn a_purge_past_the_end_interrupted_by_a_crash_is_finished_on_open() {
    let (directory, _, path) = five_entries().await;
    write_value_file(directory.path(), "purged", &log_id(1, 7)).expect("a purged id");

    let mut store = LogStore::open(directory.path()).expect("the store again");
    assert!(entries_of(&mut store).await.is_empty());
    assert_eq!(fs::metadata(&path).expect("the log").len(), LOG_HEADER_BYTES as u64);
    append(&mut store, vec![blank(2, 8)]).await;
    drop(store);
    let mut store = LogStore::open(directory.path()).expect("the store again");
    assert_eq!(entries_of(&mut store).await, vec![blank(2, 8)]);
}

#[tokio::test]
async fn a_log_starting_past_the_purged_index_is_damage() {
    let (directory, _, _) = five_entries().await;
    let mut store = LogStore::open(directory.path()).expect("the store again");
    store.purge(log_id(1, 2)).await.expect("the purge");
    drop(store);
    write_value_file(directory.path(), "purged", &log_id(1, 0)).expect("an older purged id");

    let (_, offset, reason) = expect_damaged(directory.path());
    assert_eq!(offset, LOG_HEADER_BYTES as u64);
    assert!(reason.contains("missing"), "{reason}");
}

#[tokio::test]
async fn a_damaged_vote_is_refused() {
    let directory = TempDir::new().expect("a temporary directory");
    let mut store = LogStore::open(directory.path()).expect("a new store");
    store.save_vote(&Vote::new(3, 2)).await.expect("the vote");
    drop(store);
    let path = directory.path().join("vote");
    let mut bytes = fs::read(&path).expect("the vote file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&path, &bytes).expect("a damaged vote");

    let (file, offset, reason) = expect_damaged(directory.path());
    assert_eq!(file, path);
    assert_eq!(offset, 16);
    assert!(reason.contains("checksum"), "{reason}");
}

/// Applies `entries` to `machine` as openraft does, without clients waiting.
async fn apply(machine: &mut StateMachine, entries: Vec<Entry>) {
    let items = entries.into_iter().map(|entry| Ok((entry, None)));
    machine.apply(stream::iter(items)).await.expect("the entries apply");
}

/// The entries of a short history: a membership, an init, a join, a join of another cluster
/// (refused), a blank.
fn history() -> Vec<Entry> {
    let stranger = Command::Join { tag_id: Some(7), applicant: applicant("gamma") };
    vec![
        membership(1, 1),
        normal(1, 2, init()),
        normal(1, 3, join()),
        normal(1, 4, stranger),
        blank(2, 5),
    ]
}

/// The cluster state `history` leads to.
fn history_state() -> ClusterState {
    let mut state = ClusterState::default();
    state.apply(init()).expect("the init applies");
    state.apply(join()).expect("the join applies");
    state
}

/// A state machine that applied `history`, its directory and its watcher.
async fn machine_with_history() -> (TempDir, StateMachine, tokio::sync::watch::Receiver<Applied>) {
    let directory = TempDir::new().expect("a temporary directory");
    let (mut machine, applied) = StateMachine::open(directory.path()).expect("a new machine");
    apply(&mut machine, history()).await;
    (directory, machine, applied)
}

#[tokio::test]
async fn applied_commands_are_published() {
    let (_directory, _machine, applied) = machine_with_history().await;
    let applied = applied.borrow().clone();
    assert_eq!(applied.state, history_state());
    assert_eq!(applied.state.members.len(), 2);
    assert_eq!(applied.last_applied, Some(5));
    assert_eq!(applied.membership.log_id(), &Some(log_id(1, 1)));
    let voters: Vec<u64> = applied.membership.membership().voter_ids().collect();
    assert_eq!(voters, vec![1, 2]);
}

#[tokio::test]
async fn a_snapshot_installs_elsewhere_and_survives_a_restart() {
    let (_leader_directory, mut leader, leader_applied) = machine_with_history().await;
    let mut builder = leader.get_snapshot_builder().await;
    let built = builder.build_snapshot().await.expect("a snapshot");
    assert_eq!(built.meta.last_log_id, Some(log_id(2, 5)));

    let directory = TempDir::new().expect("a temporary directory");
    let (mut follower, follower_applied) = StateMachine::open(directory.path()).expect("a machine");
    follower.install_snapshot(&built.meta, built.snapshot.clone()).await.expect("the install");
    assert_eq!(*follower_applied.borrow(), *leader_applied.borrow());
    let leader_state = leader.applied_state().await.expect("the leader's applied state");
    assert_eq!(follower.applied_state().await.expect("the applied state"), leader_state);
    let current = follower.get_current_snapshot().await.expect("the current snapshot");
    assert_eq!(current.map(|current| current.meta), Some(built.meta.clone()));
    drop(follower);

    let (mut reopened, reopened_applied) = StateMachine::open(directory.path()).expect("again");
    assert_eq!(*reopened_applied.borrow(), *leader_applied.borrow());
    assert_eq!(reopened.applied_state().await.expect("the applied state"), leader_state);
    let current = reopened.get_current_snapshot().await.expect("the current snapshot");
    let current = current.expect("a snapshot after the restart");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot, built.snapshot);
}

#[tokio::test]
async fn a_slow_build_does_not_replace_a_newer_snapshot() {
    let (directory, mut machine, _applied) = machine_with_history().await;
    let mut slow = machine.get_snapshot_builder().await;
    apply(&mut machine, vec![blank(2, 6)]).await;
    let newer = machine.get_snapshot_builder().await.build_snapshot().await.expect("a snapshot");
    let older = slow.build_snapshot().await.expect("the slow snapshot");
    assert_eq!(older.meta.last_log_id, Some(log_id(2, 5)));

    let current = machine.get_current_snapshot().await.expect("the current snapshot");
    assert_eq!(current.map(|current| current.meta), Some(newer.meta.clone()));
    drop(machine);
    let (mut reopened, _) = StateMachine::open(directory.path()).expect("the machine again");
    let (last_applied, _) = reopened.applied_state().await.expect("the applied state");
    assert_eq!(last_applied, Some(log_id(2, 6)));
}

#[tokio::test]
async fn a_snapshot_that_does_not_match_its_metadata_is_not_installed() {
    let (_directory, mut machine, _applied) = machine_with_history().await;
    let built = machine.get_snapshot_builder().await.build_snapshot().await.expect("a snapshot");
    let other = TempDir::new().expect("a temporary directory");
    let (mut follower, applied) = StateMachine::open(other.path()).expect("a machine");

    let empty: SnapshotBytes = b"{}".to_vec();
    let refused = follower.install_snapshot(&built.meta, empty).await;
    assert_eq!(refused.map_err(|error| error.kind()), Err(io::ErrorKind::InvalidData));
    let mut meta = built.meta.clone();
    meta.last_log_id = Some(log_id(2, 9));
    let refused = follower.install_snapshot(&meta, built.snapshot.clone()).await;
    assert_eq!(refused.map_err(|error| error.kind()), Err(io::ErrorKind::InvalidData));

    assert_eq!(applied.borrow().last_applied, None);
    assert!(follower.get_current_snapshot().await.expect("no snapshot").is_none());
    assert!(!other.path().join("snapshot").exists());
}

#[tokio::test]
async fn a_damaged_snapshot_file_is_refused() {
    let (directory, mut machine, _applied) = machine_with_history().await;
    machine.get_snapshot_builder().await.build_snapshot().await.expect("a snapshot");
    drop(machine);
    let path = directory.path().join("snapshot");
    let mut bytes = fs::read(&path).expect("the snapshot file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    fs::write(&path, &bytes).expect("a damaged snapshot");

    match StateMachine::open(directory.path()) {
        Err(StoreError::Damaged { file, .. }) => assert_eq!(file, path),
        Err(error) => panic!("expected damage, got {error}"),
        Ok(_) => panic!("expected damage, the machine opened"),
    }
}

#[test]
fn the_slot_table_is_kept_in_snapshots_and_absent_reads_as_empty() {
    use strata_core::controller::{ClusterState, SlotRange, SlotTable};
    let mut state = ClusterState::default();
    state
        .apply(Command::Init {
            tag: strata_core::controller::ClusterTag { name: "hogwarts".into(), id: 7 },
            leader: applicant("harry"),
            partitions: 2,
            min_insync: 1,
        })
        .unwrap();
    let older = serde_json::to_value(&state).unwrap();
    let mut older = older.as_object().cloned().unwrap();
    assert!(older.remove("slot_table").is_some(), "the table is written");
    let read: ClusterState = serde_json::from_value(older.into()).unwrap();
    assert_eq!(read.slot_table, SlotTable::default(), "state written without it");
    assert_eq!(read, state);
    let range = SlotRange { first: 0, last: 16383, member: "harry".into() };
    state.slot_table = SlotTable { version: 1, ranges: vec![range] };
    let again: ClusterState = serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(again, state);
}
