//! A shard: one pinned thread with its own monoio executor, owning a set of partitions (their
//! keyspaces, WALs and waiting replies) and the client connections the kernel gave it.
//!
//! Everything here is touched only by the shard's own thread. Other shards reach a partition
//! with a [`ShardRequest`] over their ring to this shard (`crate::hop`); the answer goes back
//! over the ring the other way, once the write it depends on is committed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_core::command::table::CommandId;

use strata_core::auth::Password;
use strata_core::command::KeyCommand;
use strata_core::frame::encode_batch_frame;
use strata_core::partition::{Answer, Partition, PartitionLimits, TakenBatch};
use strata_core::record::{Batch, Record};
use strata_core::{Epoch, Lsn, PartitionId, ShardId};
use strata_wal::{PartitionWal, WalActivity};

use strata_core::replication::{
    EpochHistory, LeaderEvent, PartitionFacts, Replica, ReplicaEvent, STATE_FILE_NAME,
};

use crate::cluster::{ClusterShared, ControlMessage, ServingMode};
use crate::events::{EventKind, EventLog};
use crate::hop::{Hop, Incoming, Outgoing, ReplyTo, RingEnds, ShardRequest, Tickets};
use crate::metrics::{NodeMetrics, ShardMetrics};
use crate::options::{Durability, NodeOptions};
use crate::replication::{ReplicaSide, Role};
use crate::signal::Signal;

/// Control messages queued for one shard at most; the control thread waits when it is full.
pub(crate) const SHARD_MESSAGES_MAX: usize = 4096;
/// How often active expiry looks for keys whose time has passed (Redis's default `hz` 10).
const ACTIVE_EXPIRY_INTERVAL: Duration = Duration::from_millis(100);
/// Expired keys deleted per partition per turn of active expiry: bounds the turn's work (and
/// its records); a partition with more left goes on at the next turn.
const ACTIVE_EXPIRY_KEYS_MAX: usize = 500;

/// What a connection round routes with: the client command whose parts it submits, which
/// requests to other shards carry (see [`ShardRequest`]).
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) command: Option<CommandId>,
}

/// Node-wide counters, shared by all shards.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connections_current: AtomicU32,
    pub(crate) connections_received: AtomicU64,
    pub(crate) connections_rejected: AtomicU64,
    pub(crate) commands_processed: AtomicU64,
    pub(crate) client_ids: AtomicU64,
    pub(crate) frames_written: AtomicU64,
    pub(crate) syncs: AtomicU64,
    /// fdatasync calls the flushers ran (one may cover several partitions' syncs).
    pub(crate) fdatasyncs: AtomicU64,
    /// Snapshots this node's partitions wrote to their logs.
    pub(crate) snapshots_written: AtomicU64,
    /// Records a replica cut from its log where it diverged from its leader's.
    pub(crate) records_discarded: AtomicU64,
    /// Logs a replica replaced whole with its leader's snapshot.
    pub(crate) snapshots_installed: AtomicU64,
    /// AUTH and HELLO AUTH refused for wrong credentials (INFO's `acl_access_denied_auth`).
    pub(crate) authentication_failures: AtomicU64,
    /// Snapshots a leader sent to replicas that could not continue from its log.
    pub(crate) snapshots_sent: AtomicU64,
    /// Keys active expiry deleted (INFO's `expired_keys`).
    pub(crate) expired_keys: AtomicU64,
}

/// What every shard shares: the channels to each other, the options, the counters.
pub(crate) struct Mesh {
    /// Each shard's announcement that it sleeps (`crate::hop`).
    pub(crate) doorbells: Vec<crate::hop::Doorbell>,
    pub(crate) options: NodeOptions,
    pub(crate) counters: Arc<Counters>,
    /// Per-shard and per-partition measurements (`crate::metrics`); `counters` among them.
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) started: Instant,
    pub(crate) shared: Arc<ClusterShared>,
    /// `options.requirepass` as its digest; `None`: connections start authenticated.
    pub(crate) password: Option<Password>,
    /// The one fdatasync per round that the flushers of every shard's partitions share.
    pub(crate) device_sync: Arc<strata_wal::DeviceSync>,
}

impl Mesh {
    pub(crate) fn partition_of(&self, key: &[u8]) -> PartitionId {
        strata_core::slot::key_partition(key, self.options.partition_count)
    }

    pub(crate) fn shard_of(&self, partition: PartitionId) -> ShardId {
        partition.shard(self.options.shard_count)
    }
}

/// An answer now, or one to wait for.
pub(crate) enum Pending {
    Ready(Answer),
    /// From this shard's own partition: the answer is here, sent once `lsn` commits.
    Local {
        partition: PartitionId,
        lsn: Lsn,
        answer: Answer,
        /// The partition's resynchronization count when the answer was computed.
        resyncs: u64,
    },
    /// From another shard, which sends it once committed.
    Remote(RemoteAnswer),
}

/// A ticket for an answer another shard sends. Dropped before the answer was taken, it tells
/// the tickets so that the answer is thrown away when it comes.
pub(crate) struct RemoteAnswer {
    ticket: u32,
    tickets: Rc<Tickets>,
    taken: bool,
}

impl RemoteAnswer {
    async fn take(mut self) -> Answer {
        let answer = std::future::poll_fn(|context| self.tickets.poll(self.ticket, context)).await;
        self.taken = true;
        answer
    }
}

impl Drop for RemoteAnswer {
    fn drop(&mut self) {
        if !self.taken {
            self.tickets.abandon(self.ticket);
        }
    }
}

impl Pending {
    pub(crate) async fn resolve(self, shard: &Shard) -> Answer {
        match self {
            Pending::Ready(answer) => answer,
            Pending::Local { partition, lsn, answer, resyncs } => {
                let mut answer = Some(answer);
                std::future::poll_fn(|context| {
                    shard.poll_commit(partition, (lsn, resyncs), &mut answer, context)
                })
                .await
            }
            Pending::Remote(remote) => remote.take().await,
        }
    }
}

/// An answer to another shard's request, held until its LSN commits.
struct Waiter {
    lsn: Lsn,
    answer: Answer,
    reply_to: ReplyTo,
}

pub(crate) struct PartitionSlot {
    pub(crate) state: Partition,
    /// Taken by the flusher while it writes; always back between rounds.
    pub(crate) wal: Option<PartitionWal>,
    waiters: Vec<Waiter>,
    /// Where answers to other shards go (the shard's own, shared).
    outgoing: Rc<Outgoing>,
    /// Connections of this shard waiting for a commit of this partition.
    commit_wakers: Vec<std::task::Waker>,
    last_snapshot: Instant,
    last_sync: Instant,
    pub(crate) synced_lsn: Lsn,
    /// FlushPerSecond: housekeeping asks the flusher for a sync of writes left unsynced.
    sync_requested: bool,
    /// Housekeeping asks for a snapshot of a partition that had writes and went idle.
    snapshot_requested: bool,
    /// The last LSN written here as the durability mode asks (durable in FlushAtOnce).
    pub(crate) durable_lsn: Lsn,
    /// The last LSN cut into a frame (or received and queued for the WAL), and that frame's
    /// epoch.
    pub(crate) framed_lsn: Lsn,
    pub(crate) last_epoch: Epoch,
    /// What the partition does in replication, with the state machine that decides it.
    pub(crate) role: Role,
    /// The replication facts on disk (`p<N>/replication`), and writes of them in progress.
    pub(crate) facts: PartitionFacts,
    pub(crate) facts_writing: bool,
    pub(crate) facts_queued: Option<PartitionFacts>,
    /// The newest facts asked to be written: `facts` unless a write is on its way. A machine
    /// that takes over the partition starts from these, so that no write goes back.
    pub(crate) facts_requested: PartitionFacts,
    /// The newest snapshot's LSN: the log cannot be cut back below it.
    pub(crate) floor: Lsn,
    /// Replica: frames received and applied, not yet written to the WAL.
    pub(crate) inbound: VecDeque<Vec<u8>>,
    pub(crate) inbound_bytes: usize,
    /// Times the state was replaced (a leader's snapshot, a truncation) or a leader stepped
    /// down: an answer computed before that must not be sent; `interrupted` says why.
    pub(crate) resyncs: u64,
    pub(crate) interrupted: strata_core::command::CommandError,
}

/// Bytes of recent frames a leader keeps per partition for replicas that catch up.
pub(crate) const RECENT_FRAMES_BYTES_MAX: usize = 8 * 1024 * 1024;

/// A frame the leader cut, kept for replicas that catch up.
pub(crate) struct RecentFrame {
    pub(crate) last_lsn: Lsn,
    pub(crate) bytes: Rc<[u8]>,
}

pub(crate) struct Shard {
    pub(crate) id: ShardId,
    pub(crate) mesh: Arc<Mesh>,
    pub(crate) partitions: RefCell<Vec<Option<PartitionSlot>>>,
    /// One per partition (indexed by id): raised when the partition has work for its flusher.
    pub(crate) flush_signals: Vec<Signal>,
    /// Raised each time the shard starts or stops following a leader; streams of an older
    /// generation end.
    pub(crate) follow_generation: Cell<u64>,
    /// Numbers given to replication streams (see `next_stream_number`).
    pub(crate) stream_numbers: Cell<u64>,
    /// Set while one of the shard's partitions writes a snapshot: the others wait for their
    /// turn, so that snapshots do not pile up on the thread and the device at once.
    snapshot_in_flight: Cell<bool>,
    /// Requests and replies for other shards, staged until the sender task publishes them.
    pub(crate) outgoing: Rc<Outgoing>,
    /// This shard's ends of the rings to the others.
    producers: RefCell<Vec<Option<rtrb::Producer<Hop>>>>,
    /// The rings from the others.
    incoming: Incoming,
    /// Answers this shard's connections wait for from other shards.
    tickets: Rc<Tickets>,
    /// Free buffers for this shard's client connections to read into and write from.
    pub(crate) buffers: crate::buffers::BufferPool,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The largest record: a value of the largest bulk string (8 MiB) under a key of up to 64 KiB
/// (a record's size estimate adds 32 bytes).
const RECORD_BYTES_MAX: usize = strata_core::resp::BULK_BYTES_MAX_DEFAULT + (64 << 10) + 32;

/// The bytes of records one frame gathers, unless a single larger record goes alone. Every
/// frame in flight is held about three times while it is cut and written (records, encoded
/// frame, aligned write buffer), for each partition at once: small frames keep a large write
/// from holding tens of megabytes per partition, and 1 MiB appends still stream to disk.
const BATCH_BYTES_TARGET: usize = 1024 * 1024;

/// Limits of one record and one batch so that a frame always fits a segment: a record may
/// fill a frame alone, so that the default 64 MiB segments take the largest value a client
/// can send.
pub(crate) fn partition_limits(segment_bytes: u64) -> PartitionLimits {
    let frame_budget = strata_wal::frame_bytes_max(segment_bytes) as usize;
    let record_bytes_max = (frame_budget * 3 / 4).min(RECORD_BYTES_MAX);
    let batch_bytes_max = record_bytes_max.min(BATCH_BYTES_TARGET);
    PartitionLimits {
        record_bytes_max,
        batch_bytes_max,
        value_in_keyspace_bytes_min: strata_core::partition::VALUE_IN_KEYSPACE_BYTES_MIN,
    }
}

/// One batch on its way to disk.
struct FlushJob {
    partition: PartitionId,
    /// Encoded frames; None for a sync alone.
    frames: Option<Vec<u8>>,
    /// The last LSN this job makes durable.
    durable_lsn: Lsn,
    wal: PartitionWal,
    sync: bool,
    snapshot: Option<Vec<u8>>,
}

struct FlushOutcome {
    partition: PartitionId,
    wal: PartitionWal,
    durable_lsn: Lsn,
    synced: bool,
    result: Result<(), String>,
    /// The LSN of a snapshot written in this round.
    snapshot_written: Option<Lsn>,
}

impl Shard {
    /// This shard's measurements: written here only.
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        self.mesh.metrics.shard(self.id.0 as usize)
    }

    pub(crate) fn new(id: ShardId, mesh: Arc<Mesh>, rings: RingEnds) -> Shard {
        let count = mesh.options.partition_count as usize;
        let shard_count = mesh.options.shard_count as usize;
        Shard {
            outgoing: Rc::new(Outgoing::new(shard_count)),
            producers: RefCell::new(rings.producers),
            incoming: Incoming::new(rings.consumers),
            tickets: Rc::default(),
            id,
            mesh,
            partitions: RefCell::new((0..count).map(|_| None).collect()),
            flush_signals: (0..count).map(|_| Signal::default()).collect(),
            follow_generation: Cell::new(0),
            stream_numbers: Cell::new(0),
            snapshot_in_flight: Cell::new(false),
            buffers: crate::buffers::BufferPool::default(),
        }
    }

    /// The partitions this shard owns.
    /// The controller's answer about a set version, for the partition if this shard owns it.
    fn controller_answer(self: &Rc<Self>, partition: PartitionId, answer: LeaderEvent) {
        if self.owned_partitions().contains(&partition) {
            self.leader_step(partition, answer);
        }
    }

    pub(crate) fn owned_partitions(&self) -> Vec<PartitionId> {
        (0..self.mesh.options.partition_count)
            .map(PartitionId)
            .filter(|partition| self.mesh.shard_of(*partition) == self.id)
            .collect()
    }

    pub(crate) fn partition_directory(&self, partition: PartitionId) -> PathBuf {
        self.mesh.options.data_dir.join(format!("p{}", partition.0))
    }

    /// Recovers one partition's state and WAL from its directory. Snapshot entries are
    /// marked as written at `entry_lsn`.
    pub(crate) fn open_partition(
        &self,
        partition: PartitionId,
        entry_lsn: Lsn,
    ) -> Result<(Partition, PartitionWal, strata_wal::RecoverySummary), strata_wal::WalError> {
        let options = &self.mesh.options;
        let directory = self.partition_directory(partition);
        let mut state = Partition::new(partition, partition_limits(options.segment_bytes));
        let config = strata_wal::WalConfig {
            segment_bytes: options.segment_bytes,
            direct_io: options.direct_io,
            shared_sync: options.shared_sync,
            keep_until_archived: options.archive.is_some(),
        };
        let shared = RefCell::new(&mut state);
        let (mut wal, summary) = PartitionWal::recover(
            &directory,
            partition,
            &config,
            |key, value, expire_at_ms| {
                shared.borrow_mut().load_entry(key, value, expire_at_ms, entry_lsn);
            },
            |lsn, record| shared.borrow_mut().apply_committed(lsn, record),
        )?;
        state.recovered_through(wal.last_lsn());
        wal.attach_device_sync(Arc::clone(&self.mesh.device_sync));
        if let Some(marks) = &options.archive {
            marks.set_committed(partition, state.commit_lsn());
        }
        Ok((state, wal, summary))
    }

    /// Recovers one partition from its directory, before the shard serves.
    pub(crate) fn recover_partition(
        &self,
        partition: PartitionId,
    ) -> Result<(), strata_wal::WalError> {
        let (mut state, wal, summary) = self.open_partition(partition, Lsn::ZERO)?;
        let facts = self.read_facts(partition, summary.last_epoch)?;
        tracing::info!(
            partition = partition.0,
            keys = state.keyspace().len(),
            direct_io = wal.direct_io(),
            fence = facts.fence.0,
            ?summary,
            "partition recovered"
        );
        let now = Instant::now();
        let last_lsn = wal.last_lsn();
        let floor = summary.snapshot_lsn;
        let mut entries = summary.epochs.clone();
        entries.drain(
            ..entries.len().saturating_sub(strata_core::replication::EPOCH_HISTORY_ENTRIES_MAX),
        );
        let history = EpochHistory::from_entries(entries).unwrap_or_default();
        let standalone = self.mesh.shared.mode() == ServingMode::Standalone;
        if !standalone {
            // A replica may serve only what a leader said was committed: the commit point the
            // frames carry, not the whole log.
            state.recovered_as_replica(last_lsn, summary.commit_lsn.min(last_lsn));
        }
        let mut slot = PartitionSlot {
            synced_lsn: last_lsn,
            state,
            wal: Some(wal),
            waiters: Vec::new(),
            outgoing: Rc::clone(&self.outgoing),
            commit_wakers: Vec::new(),
            last_snapshot: now,
            last_sync: now,
            sync_requested: false,
            snapshot_requested: false,
            durable_lsn: last_lsn,
            framed_lsn: last_lsn,
            last_epoch: summary.last_epoch,
            role: Role::Standalone { history: history.clone() },
            facts_requested: facts.clone(),
            facts,
            facts_writing: false,
            facts_queued: None,
            floor,
            inbound: VecDeque::new(),
            inbound_bytes: 0,
            resyncs: 0,
            interrupted: resynchronized(),
        };
        if !standalone {
            let start = crate::replication::replica_start(&slot, slot.state.commit_lsn(), history);
            let machine = Replica::new(
                partition,
                start,
                strata_core::replication::mutations::Mutations::in_force(),
            );
            slot.role = Role::Replica(Box::new(ReplicaSide::new(machine)));
        }
        self.mesh.shared.observe_epoch(slot.facts.fence);
        self.partitions.borrow_mut()[partition.0 as usize] = Some(slot);
        Ok(())
    }

    /// The partition's replication facts; a log without them (written before they existed)
    /// has seen at least the epoch of its last frame.
    fn read_facts(
        &self,
        partition: PartitionId,
        last_epoch: Epoch,
    ) -> Result<PartitionFacts, strata_wal::WalError> {
        let directory = self.partition_directory(partition);
        let Some(bytes) = strata_wal::read_state_file(&directory, STATE_FILE_NAME)? else {
            return Ok(PartitionFacts { fence: last_epoch, in_sync: None });
        };
        PartitionFacts::decode(&bytes).map_err(|error| strata_wal::WalError::Corrupt {
            path: directory.join(STATE_FILE_NAME),
            offset: 0,
            reason: error.to_string(),
        })
    }

    /// Runs `command` on its partition if this shard owns it; otherwise stages it for the
    /// owner, carrying `outbox`'s command. Returns the answer now, or what to wait for.
    pub(crate) fn submit(
        &self,
        outbox: &mut Outbox,
        partition: PartitionId,
        command: KeyCommand,
        now_ms: u64,
    ) -> Pending {
        let owner = self.mesh.shard_of(partition);
        if owner == self.id {
            return match self.execute_owned(partition, command, now_ms) {
                Ok(answer) => Pending::Ready(answer),
                Err((lsn, answer)) => {
                    let resyncs = self.partitions.borrow()[partition.0 as usize]
                        .as_ref()
                        .map_or(0, |slot| slot.resyncs);
                    Pending::Local { partition, lsn, answer, resyncs }
                }
            };
        }
        let ticket = self.tickets.issue();
        let reply_to = ReplyTo { shard: self.id, ticket };
        let command_id = outbox.command;
        let request = ShardRequest { partition, command, command_id, now_ms, reply_to };
        self.outgoing.stage(owner, Hop::Request(request));
        Pending::Remote(RemoteAnswer { ticket, tickets: Rc::clone(&self.tickets), taken: false })
    }

    /// Ready with the answer once `lsn` of `partition` commits (or with the partition's error
    /// once it failed); otherwise waits to be woken by the next commit.
    fn poll_commit(
        &self,
        partition: PartitionId,
        (lsn, resyncs): (Lsn, u64),
        answer: &mut Option<Answer>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Answer> {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        if slot.resyncs != resyncs {
            return std::task::Poll::Ready(Answer::Error(slot.interrupted.clone()));
        }
        if slot.state.commit_lsn() >= lsn {
            return std::task::Poll::Ready(answer.take().expect("polled after completion"));
        }
        if let Some(error) = slot.state.failure_error() {
            return std::task::Poll::Ready(Answer::Error(error));
        }
        slot.commit_wakers.push(context.waker().clone());
        std::task::Poll::Pending
    }

    /// Runs a request from another shard.
    pub(crate) fn execute_request(&self, request: ShardRequest) {
        let ShardRequest { partition, command, now_ms, reply_to, .. } = request;
        match self.execute_owned(partition, command, now_ms) {
            Ok(answer) => self.outgoing.reply(reply_to, answer),
            Err(parked) => self.park(partition, parked, reply_to),
        }
    }

    /// Executes on an owned partition. Returns the answer if it may be sent now, or the LSN to
    /// wait for with the answer to send then.
    fn execute_owned(
        &self,
        partition: PartitionId,
        command: KeyCommand,
        now_ms: u64,
    ) -> Result<Answer, (Lsn, Answer)> {
        let mut partitions = self.partitions.borrow_mut();
        let slot =
            partitions[partition.0 as usize].as_mut().expect("partition owned by this shard");
        if command.is_write() {
            if let Some(refusal) = write_refusal(&slot.role) {
                return Ok(Answer::Error(refusal));
            }
        }
        let execution = slot.state.execute(command, now_ms);
        if slot.state.has_open_records() {
            self.flush_signals[partition.0 as usize].raise();
        }
        if execution.wait_lsn <= slot.state.commit_lsn() {
            Ok(execution.answer)
        } else if let Some(error) = slot.state.failure_error() {
            Ok(Answer::Error(error))
        } else {
            Err((execution.wait_lsn, execution.answer))
        }
    }

    /// Holds an answer until its LSN commits. Must follow `execute_owned` with no await between.
    fn park(&self, partition: PartitionId, (lsn, answer): (Lsn, Answer), reply_to: ReplyTo) {
        let mut partitions = self.partitions.borrow_mut();
        let slot =
            partitions[partition.0 as usize].as_mut().expect("partition owned by this shard");
        assert!(lsn > slot.state.commit_lsn());
        slot.waiters.push(Waiter { lsn, answer, reply_to });
    }

    /// Runs the requests waiting in the rings and delivers the replies; the requests' time,
    /// split evenly among them, joins the commandstats of the commands they are parts of.
    /// Returns how many hops there were.
    fn handle_hops(&self, ids: &mut Vec<CommandId>) -> usize {
        let started = Instant::now();
        ids.clear();
        let mut requests = 0u64;
        let handled = self.incoming.drain(|hop| match hop {
            Hop::Request(request) => {
                requests += 1;
                ids.extend(request.command_id);
                self.execute_request(request);
            }
            Hop::Reply { ticket, answer } => self.tickets.deliver(ticket, answer),
        });
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if let Some(share) = nanos.checked_div(requests) {
            for id in ids.iter() {
                self.metrics().add_command_time(*id, share);
            }
        }
        handled
    }

    /// Serves requests and replies from other shards: drains every ring each turn while there
    /// is traffic, and sleeps (announcing it, so that a sender wakes it) once there is none.
    pub(crate) async fn serve_hops(self: Rc<Self>) {
        let doorbell = &self.mesh.doorbells[self.id.0 as usize];
        let mut ids = Vec::new();
        loop {
            if self.handle_hops(&mut ids) == 0 {
                self.incoming.wait(doorbell).await;
            } else {
                crate::hop::yield_turn().await;
            }
        }
    }

    /// Publishes what the shard's tasks staged for other shards, once per turn in which
    /// something was staged; a full ring is retried until it has room.
    pub(crate) async fn send_hops(self: Rc<Self>) {
        loop {
            self.outgoing.signal.wait().await;
            loop {
                let published =
                    self.outgoing.publish(&mut self.producers.borrow_mut(), &self.mesh.doorbells);
                self.metrics().count_hops(published.hops, published.messages, published.wakeups);
                if published.left == 0 {
                    break;
                }
                monoio::time::sleep(crate::hop::RING_FULL_RETRY).await;
            }
        }
    }

    /// Serves orders from the control thread until it is gone.
    pub(crate) async fn serve_control(self: Rc<Self>, receiver: flume::Receiver<ControlMessage>) {
        while let Ok(message) = receiver.recv_async().await {
            self.control(message);
        }
    }

    fn control(self: &Rc<Self>, message: ControlMessage) {
        match message {
            ControlMessage::Attach { stream, tls, subscribe } => {
                self.attach_replica(subscribe, stream, tls);
            }
            ControlMessage::MemberGone { name } => self.member_gone(&name),
            ControlMessage::Idle => self.go_idle(),
            ControlMessage::Standalone => self.become_standalone(),
            ControlMessage::InSyncRecorded { partition, leader_epoch, isr_epoch } => {
                let recorded = LeaderEvent::ControllerRecorded { leader_epoch, isr_epoch };
                self.controller_answer(partition, recorded);
            }
            ControlMessage::InSyncRefused { partition, leader_epoch, isr_epoch, recorded } => {
                let refused = LeaderEvent::ControllerRefused { leader_epoch, isr_epoch, recorded };
                self.controller_answer(partition, refused);
            }
            ControlMessage::Follow { leader, member, kind, leader_shards } => {
                self.follow(leader, member, kind, leader_shards);
            }
            ControlMessage::Unfollow => self.unfollow(),
            ControlMessage::InstallArchived { partition, staged, reply } => {
                monoio::spawn(Rc::clone(self).install_archived(partition, staged, reply));
            }
            ControlMessage::Report { reply } => {
                let _ = reply.send(self.report());
            }
            ControlMessage::AcceptEpoch { epoch, basis, check_only: true, reply } => {
                let _ = reply.send(self.would_accept(epoch, &basis));
            }
            ControlMessage::AcceptEpoch { epoch, basis, check_only: false, reply } => {
                self.accept_epoch(epoch, &basis, reply);
            }
            ControlMessage::InstallSets { sets, reply } => self.install_sets(&sets, reply),
            ControlMessage::Lead { epoch, sets, settings, reply } => {
                self.lead(epoch, &sets, &settings, reply);
            }
            ControlMessage::StepDown { epoch } => self.step_down(epoch),
        }
    }

    /// Group commit for one partition: while one batch is written and synced, the next
    /// gathers. Each partition has its own flusher, so a slow sync of one does not hold up the
    /// replies of another.
    pub(crate) async fn run_flusher(self: Rc<Self>, partition: PartitionId) {
        loop {
            self.flush_signals[partition.0 as usize].wait().await;
            loop {
                let (job, commands) = self.take_job(partition);
                self.run_leader_commands(commands);
                let Some(job) = job else { break };
                let outcome = self.flush(job).await;
                self.finish(outcome);
            }
        }
    }

    /// The partition's next frames (received from the leader, or cut from the open batch and
    /// pushed to the replicas) and a snapshot when due, or a lone sync FlushPerSecond asked
    /// for.
    fn take_job(
        self: &Rc<Self>,
        partition: PartitionId,
    ) -> (Option<FlushJob>, crate::replication::LeaderCommands) {
        let durability = self.mesh.options.durability;
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let now = Instant::now();
        let sync_due = match durability {
            Durability::SyncEachBatch => true,
            Durability::WriteOnly => false,
            Durability::SyncEverySecond => {
                slot.sync_requested || now.duration_since(slot.last_sync) >= Duration::from_secs(1)
            }
        };
        let (frames, commands) = match take_inbound(slot) {
            Some(frames) => (Some(frames), Vec::new()),
            None => self.cut_frame(slot, partition),
        };
        let sync_requested = std::mem::take(&mut slot.sync_requested);
        let snapshot_requested = std::mem::take(&mut slot.snapshot_requested);
        let snapshot_allowed = !self.snapshot_in_flight.get();
        let snapshot = if (frames.is_some() || snapshot_requested) && snapshot_allowed {
            self.snapshot_if_due(slot, now)
        } else {
            None
        };
        self.snapshot_in_flight.set(snapshot.is_some() || !snapshot_allowed);
        if frames.is_none() && snapshot.is_none() && !sync_requested {
            return (None, commands);
        }
        let wal = slot.wal.take().expect("the WAL is home between flushes");
        let job = FlushJob {
            partition,
            durable_lsn: slot.framed_lsn,
            frames,
            wal,
            sync: sync_due || snapshot.is_some(),
            snapshot,
        };
        (Some(job), commands)
    }

    /// Cuts the open batch into a frame; when leading, hands it to the machine and the live
    /// streams, and sends the snapshots that waited for this clean point. Returns the frame
    /// and the leader's commands, to carry out once the partition is no longer borrowed.
    fn cut_frame(
        &self,
        slot: &mut PartitionSlot,
        partition: PartitionId,
    ) -> (Option<Vec<u8>>, crate::replication::LeaderCommands) {
        let Some(batch) = slot.state.take_batch() else { return (None, Vec::new()) };
        let epoch = match &slot.role {
            Role::Leader(side) => side.machine.epoch(),
            _ => self.mesh.shared.epoch(),
        };
        let first_lsn = batch.first_lsn;
        let last_lsn = batch.last_lsn();
        self.metrics().batch_records.record(batch.records.len() as u64, 1);
        let frame = encode_frame_of(partition, epoch, slot.state.commit_lsn(), batch);
        slot.framed_lsn = last_lsn;
        slot.last_epoch = epoch;
        let mut commands = Vec::new();
        match &mut slot.role {
            Role::Leader(_) => {
                commands = self.leader_frame_cut(slot, first_lsn, last_lsn, &frame);
                if !slot.state.has_open_records() && slot.inbound.is_empty() {
                    commands.extend(self.send_snapshots(slot));
                }
            }
            Role::Standalone { history } => history.append(epoch, first_lsn),
            Role::Replica(_) => {}
        }
        (Some(frame), commands)
    }

    /// When a snapshot is due and the batch just taken emptied the open records, the
    /// keyspace is exactly the state at the batch's last LSN: serialize it now, write it once
    /// the batch is durable. Due by size once the log grew by the partition's share of
    /// `snapshot_bytes` ([`snapshot_threshold`]), or by time.
    fn snapshot_if_due(&self, slot: &mut PartitionSlot, now: Instant) -> Option<Vec<u8>> {
        if slot.state.has_open_records() || !slot.inbound.is_empty() {
            return None;
        }
        let options = &self.mesh.options;
        let wal = slot.wal.as_ref().expect("WAL is home between rounds");
        let threshold = snapshot_threshold(options.snapshot_bytes, slot.state.id());
        let by_bytes = wal.bytes_since_snapshot() >= threshold;
        let by_time = now.duration_since(slot.last_snapshot) >= options.snapshot_interval
            && wal.bytes_since_snapshot() > 0;
        if !by_bytes && !by_time {
            return None;
        }
        slot.last_snapshot = now;
        let started = Instant::now();
        let mut image = strata_wal::encode_snapshot(slot.state.id(), slot.state.keyspace().iter());
        strata_wal::stamp_snapshot_epoch(&mut image, slot.last_epoch);
        let detail = format!("{} keys, {} bytes", slot.state.keyspace().len(), image.len());
        let partition = Some(slot.state.id());
        let events = &self.mesh.metrics.events;
        events.record(EventKind::SnapshotEncoded, partition, started.elapsed(), detail);
        Some(image)
    }

    async fn flush(&self, job: FlushJob) -> FlushOutcome {
        let FlushJob { partition, frames, durable_lsn, mut wal, sync, snapshot } = job;
        let snapshot_taken = snapshot.is_some();
        let counters = &self.mesh.counters;
        let metrics = self.metrics();
        let events = &self.mesh.metrics.events;
        let mut result = Ok(());
        if let Some(frames) = frames {
            let bytes = frames.len() as u64;
            let before = wal.activity();
            let started = Instant::now();
            result = wal.append(frames).await.map(drop).map_err(|error| error.to_string());
            let took = started.elapsed();
            metrics.wal_append_us.record(crate::metrics::micros(took), 1);
            metrics.count_wal_bytes(bytes);
            counters.frames_written.fetch_add(1, Ordering::Relaxed);
            record_append_events(events, partition, before, wal.activity(), took);
        }
        if result.is_ok() && sync {
            let started = Instant::now();
            match wal.sync().await {
                Ok(ran) => {
                    let took = started.elapsed();
                    counters.fdatasyncs.fetch_add(u64::from(ran), Ordering::Relaxed);
                    metrics.wal_sync_us.record(crate::metrics::micros(took), 1);
                    // Partitions that shared this fdatasync waited for the same flush: the one
                    // that ran it tells.
                    if ran {
                        events.record_if_slow(EventKind::SlowSync, partition, took, String::new);
                    }
                }
                Err(error) => result = Err(error.to_string()),
            }
            counters.syncs.fetch_add(1, Ordering::Relaxed);
        }
        let mut snapshot_written = None;
        if let (Ok(()), Some(image)) = (&result, snapshot) {
            if let Some(marks) = &self.mesh.options.archive {
                wal.set_archive_floor(marks.floor(partition));
            }
            let started = Instant::now();
            match wal.write_snapshot(durable_lsn, image).await {
                Ok(summary) => {
                    counters.snapshots_written.fetch_add(1, Ordering::Relaxed);
                    let detail = format!("lsn {}", durable_lsn.0);
                    events.record(EventKind::Snapshot, Some(partition), started.elapsed(), detail);
                    tracing::info!(partition = partition.0, ?summary, "snapshot written");
                    snapshot_written = Some(durable_lsn);
                }
                Err(error) => tracing::warn!(partition = partition.0, %error, "snapshot failed"),
            }
        }
        if snapshot_taken {
            self.snapshot_in_flight.set(false);
            self.request_deferred_snapshots(partition);
        }
        FlushOutcome { partition, wal, durable_lsn, synced: sync, result, snapshot_written }
    }

    /// A flush round ended: what is durable now moves the partition's machine (or, alone,
    /// commits); a failure makes the partition refuse writes until restart.
    fn finish(self: &Rc<Self>, outcome: FlushOutcome) {
        let partition = outcome.partition;
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        slot.wal = Some(outcome.wal);
        if let Err(reason) = outcome.result {
            let what = "WAL write failed; partition refuses writes until restart";
            tracing::error!(partition = partition.0, %reason, "{what}");
            slot.state.fail(reason.clone());
            fail_waiters(slot);
            let commands =
                crate::replication::replica_step_in(slot, ReplicaEvent::WalFailed { reason });
            drop(partitions);
            let _ = self.run_replica_commands(commands);
            return;
        }
        if outcome.synced {
            slot.synced_lsn = outcome.durable_lsn;
            slot.last_sync = Instant::now();
        }
        slot.durable_lsn = slot.durable_lsn.max(outcome.durable_lsn);
        if let Some(lsn) = outcome.snapshot_written {
            slot.floor = slot.floor.max(lsn);
        }
        let durable = slot.durable_lsn;
        match &mut slot.role {
            Role::Standalone { .. } => {
                commit_alone(slot, &self.mesh);
            }
            Role::Leader(side) => {
                side.durable_at(durable, Instant::now());
                let commands =
                    self.leader_step_in(slot, LeaderEvent::LocalDurable { lsn: durable });
                drop(partitions);
                self.run_leader_commands(commands);
            }
            Role::Replica(_) => {
                let event = ReplicaEvent::LocalDurable { lsn: durable };
                let commands = crate::replication::replica_step_in(slot, event);
                if let (Some(lsn), Some(side)) = (outcome.snapshot_written, slot.role.replica()) {
                    side.machine.snapshot_written(lsn);
                }
                drop(partitions);
                let _ = self.run_replica_commands(commands);
            }
        }
    }

    /// Once a second: sync in FlushPerSecond mode, start due snapshots, publish gauges.
    pub(crate) async fn run_housekeeping(self: Rc<Self>) {
        loop {
            monoio::time::sleep(Duration::from_secs(1)).await;
            self.request_idle_syncs();
            self.request_idle_snapshots();
            self.publish_progress();
            self.publish_gauges();
        }
    }

    /// Publishes each owned partition's committed and durable LSN and key count for
    /// `GET /metrics`.
    fn publish_gauges(&self) {
        for slot in self.partitions.borrow().iter().flatten() {
            let gauges = self.mesh.metrics.partition(slot.state.id());
            gauges.committed_lsn.store(slot.state.commit_lsn().0, Ordering::Relaxed);
            gauges.durable_lsn.store(slot.durable_lsn.0, Ordering::Relaxed);
            gauges.keys.store(slot.state.keyspace().len() as u64, Ordering::Relaxed);
        }
    }

    /// Ten times a second: deletes keys whose expiry time has passed, in the partitions that
    /// take writes, as logged deletes (replicas apply them like any other write).
    pub(crate) async fn run_active_expiry(self: Rc<Self>) {
        loop {
            monoio::time::sleep(ACTIVE_EXPIRY_INTERVAL).await;
            self.delete_expired_keys(now_ms());
        }
    }

    fn delete_expired_keys(&self, now_ms: u64) {
        let writes_allowed = match self.mesh.shared.mode() {
            ServingMode::Standalone => true,
            ServingMode::Leader => !self.mesh.shared.lease_expired(),
            ServingMode::Replica | ServingMode::Admin => false,
        };
        if !writes_allowed {
            return;
        }
        let mut deleted = 0;
        for slot in self.partitions.borrow_mut().iter_mut().flatten() {
            if write_refusal(&slot.role).is_some() {
                continue;
            }
            let count = slot.state.delete_expired(now_ms, ACTIVE_EXPIRY_KEYS_MAX);
            if count > 0 {
                self.flush_signals[slot.state.id().0 as usize].raise();
                deleted += count as u64;
            }
        }
        self.mesh.counters.expired_keys.fetch_add(deleted, Ordering::Relaxed);
    }

    /// A partition that had writes and then none for a snapshot interval gets its
    /// snapshot anyway (snapshots are otherwise cut with a batch): recovery stays short and
    /// the archive receives its tail as a snapshot.
    fn request_idle_snapshots(&self) {
        let now = Instant::now();
        let interval = self.mesh.options.snapshot_interval;
        let mut partitions = self.partitions.borrow_mut();
        for slot in partitions.iter_mut().flatten() {
            let Some(wal) = slot.wal.as_ref() else { continue };
            let idle = !slot.state.has_open_records() && slot.inbound.is_empty();
            let due = now.duration_since(slot.last_snapshot) >= interval;
            if idle && due && wal.bytes_since_snapshot() > 0 {
                slot.snapshot_requested = true;
                self.flush_signals[slot.state.id().0 as usize].raise();
            }
        }
    }

    /// A snapshot was written: the shard's other partitions check whether theirs is due (one
    /// may have waited for its turn), at once or at the end of the round they are in.
    fn request_deferred_snapshots(&self, written: PartitionId) {
        let mut partitions = self.partitions.borrow_mut();
        for slot in partitions.iter_mut().flatten() {
            let partition = slot.state.id();
            if partition != written {
                slot.snapshot_requested = true;
                self.flush_signals[partition.0 as usize].raise();
            }
        }
    }

    /// In FlushPerSecond mode, a partition with no new writes still needs its last writes
    /// synced: ask its flusher.
    fn request_idle_syncs(&self) {
        if self.mesh.options.durability != Durability::SyncEverySecond {
            return;
        }
        let mut partitions = self.partitions.borrow_mut();
        for slot in partitions.iter_mut().flatten() {
            if slot.synced_lsn < slot.state.commit_lsn() {
                slot.sync_requested = true;
                self.flush_signals[slot.state.id().0 as usize].raise();
            }
        }
    }
}

/// Received frames, as many as one WAL append takes. A lone run of frames is moved, not
/// copied.
fn take_inbound(slot: &mut PartitionSlot) -> Option<Vec<u8>> {
    let limit = slot.wal.as_ref().expect("the WAL is home between flushes").max_frame_bytes();
    let mut bytes = slot.inbound.front()?.len();
    let mut runs = 1;
    for next in slot.inbound.iter().skip(1) {
        if bytes + next.len() > limit {
            break;
        }
        bytes += next.len();
        runs += 1;
    }
    let frames = if runs == 1 {
        slot.inbound.pop_front().expect("front exists")
    } else {
        let mut frames = Vec::with_capacity(bytes);
        slot.inbound.drain(..runs).for_each(|run| frames.extend_from_slice(&run));
        frames
    };
    assert_eq!(frames.len(), bytes);
    slot.inbound_bytes -= bytes;
    let last = strata_core::frame::last_lsn_of(&frames);
    slot.framed_lsn = last;
    Some(frames)
}

/// Why a partition in `role` takes no write now: a leader without enough members in sync
/// (Redis's text for it), or a partition that does not lead.
fn write_refusal(role: &Role) -> Option<strata_core::command::CommandError> {
    let text = match role {
        Role::Standalone { .. } => return None,
        Role::Leader(side) if side.machine.accepts_writes() => return None,
        Role::Leader(_) => "NOREPLICAS Not enough good replicas to write.",
        Role::Replica(_) => "READONLY You can't write against a read only replica.",
    };
    Some(strata_core::command::CommandError(text.into()))
}

/// One frame holding the batch's records, moved, not copied.
fn encode_frame_of(
    partition: PartitionId,
    epoch: Epoch,
    commit_lsn: Lsn,
    batch: TakenBatch,
) -> Vec<u8> {
    let estimate: usize = batch.records.iter().map(Record::size_estimate).sum();
    let mut frame = Vec::with_capacity(estimate + 128);
    let first_lsn = batch.first_lsn;
    let records = Batch { records: batch.records };
    encode_batch_frame(&mut frame, partition, epoch, first_lsn, commit_lsn, &records);
    frame
}

/// Alone, what is durable is committed.
fn commit_alone(slot: &mut PartitionSlot, mesh: &Mesh) {
    let candidate = slot.durable_lsn.min(slot.state.last_lsn());
    if candidate <= slot.state.commit_lsn() {
        return;
    }
    slot.state.commit(candidate);
    if let Some(marks) = &mesh.options.archive {
        marks.set_committed(slot.state.id(), candidate);
    }
    release_waiters(slot);
}

pub(crate) fn release_waiters(slot: &mut PartitionSlot) {
    for waker in slot.commit_wakers.drain(..) {
        waker.wake();
    }
    let commit = slot.state.commit_lsn();
    let mut index = 0;
    while index < slot.waiters.len() {
        if slot.waiters[index].lsn <= commit {
            let waiter = slot.waiters.swap_remove(index);
            slot.outgoing.reply(waiter.reply_to, waiter.answer);
        } else {
            index += 1;
        }
    }
}

/// Answers every waiting reply: the partition replaced its state with a leader's snapshot,
/// so what they read may belong to a log that is gone.
pub(crate) fn fail_waiters_resynchronized(slot: &mut PartitionSlot) {
    interrupt_waiters(slot, resynchronized());
}

/// Answers every waiting reply, on this shard and others, with `error`.
pub(crate) fn interrupt_waiters(
    slot: &mut PartitionSlot,
    error: strata_core::command::CommandError,
) {
    slot.resyncs += 1;
    slot.interrupted = error.clone();
    fail_waiters_with(slot, error);
}

fn resynchronized() -> strata_core::command::CommandError {
    strata_core::command::CommandError(
        "ERR the replica resynchronized with its leader; retry".into(),
    )
}

pub(crate) fn fail_waiters(slot: &mut PartitionSlot) {
    let error = slot.state.failure_error().expect("partition failed");
    fail_waiters_with(slot, error);
}

/// Answers every waiting reply with `error`. Local waiters see the partition's new state when
/// woken: a resynchronization count or failure tells them, and a leader that stepped down
/// bumps the count too.
pub(crate) fn fail_waiters_with(
    slot: &mut PartitionSlot,
    error: strata_core::command::CommandError,
) {
    for waker in slot.commit_wakers.drain(..) {
        waker.wake();
    }
    for waiter in slot.waiters.drain(..) {
        slot.outgoing.reply(waiter.reply_to, Answer::Error(error.clone()));
    }
}

/// What writes waiting on a leader that stepped down are answered: they may or may not be
/// committed by the new leader.
pub(crate) fn stepped_down() -> strata_core::command::CommandError {
    strata_core::command::CommandError(
        "TRYAGAIN this node stopped leading (a newer leader exists); the write may or may not \
         have been applied"
            .into(),
    )
}

/// Events of one WAL append that took `took`: a slow append, the roll to a new segment, a
/// spare segment begun, or written (noticed at the first append after it ended).
fn record_append_events(
    events: &EventLog,
    partition: PartitionId,
    before: WalActivity,
    after: WalActivity,
    took: Duration,
) {
    if after.rolls != before.rolls {
        events.record(EventKind::SegmentRoll, Some(partition), took, "");
    } else {
        events.record_if_slow(EventKind::SlowAppend, partition, took, String::new);
    }
    if after.spares_started != before.spares_started {
        events.record(EventKind::SegmentPrewrite, Some(partition), Duration::ZERO, "started");
    }
    if after.spares_finished != before.spares_finished {
        let took = Duration::from_micros(after.last_spare_micros);
        events.record(EventKind::SegmentPrewrite, Some(partition), took, "written");
    }
}

/// The log growth after which `partition` snapshots: between 9/16 of `snapshot_bytes` and all of
/// it, each partition at its own point. Partitions written at the same rate would otherwise all
/// snapshot in the same moment, and their serializing and writing, one after the other on the
/// shard and together on the device, would stall every write for that long.
fn snapshot_threshold(snapshot_bytes: u64, partition: PartitionId) -> u64 {
    let sixteenths = 16 - u64::from(partition.0 % 8);
    snapshot_bytes / 16 * sixteenths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_snapshot_at_their_own_share_of_the_snapshot_size() {
        let size = 256 << 20;
        let thresholds: Vec<u64> =
            (0..16).map(|partition| snapshot_threshold(size, PartitionId(partition))).collect();
        assert_eq!(thresholds[0], size);
        assert_eq!(thresholds[7], size / 16 * 9);
        assert_eq!(thresholds[8], size, "the pattern repeats every 8 partitions");
        // Eight distinct points, none above the configured size nor below half of it.
        let mut distinct = thresholds[..8].to_vec();
        distinct.dedup();
        assert_eq!(distinct.len(), 8);
        assert!(thresholds.iter().all(|threshold| (size / 2..=size).contains(threshold)));
    }
}
