//! A simulated node: its disk (a log with a durable prefix, the replication facts, a
//! snapshot), the replication state machine of each partition, and its place in the control
//! plane. Nothing here schedules anything; the world does.

use std::collections::VecDeque;

use strata_core::cluster::Membership;
use strata_core::replication::mutations::Mutations;
use strata_core::replication::promotion::{MemberReport, PartitionReport};
use strata_core::replication::{
    EpochHistory, Leader, LeaderConfig, LeaderStart, Member, Moment, PartitionFacts, Replica,
    ReplicaStart,
};
use strata_core::{Epoch, Lsn, PartitionId};

/// One record in a simulated log: the epoch of the leader that cut it, a value no other write
/// has, and the leader's commit point when it was cut (what recovery trusts as committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub epoch: Epoch,
    pub value: u64,
    pub commit_at_cut: u64,
}

/// A partition's disk. `log[i]` holds LSN `i + 1`; the first `durable` records survive a
/// crash, the rest do not. Frames up to `start` are gone from the log files (a snapshot
/// covers them), and the log cannot be cut back below `floor`, its newest snapshot.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub log: Vec<Entry>,
    pub durable: u64,
    pub facts: PartitionFacts,
    pub floor: u64,
    pub start: u64,
    /// Bumped whenever the log is cut back or replaced: completions of older writes are stale.
    pub generation: u64,
    pub failed: bool,
}

impl Disk {
    pub fn last(&self) -> u64 {
        self.log.len() as u64
    }

    pub fn epoch_at(&self, lsn: u64) -> Epoch {
        if lsn == 0 {
            return Epoch(0);
        }
        self.log[usize::try_from(lsn - 1).expect("fits")].epoch
    }

    /// The epoch history recovery would rebuild: the snapshot's epoch at its LSN, then each
    /// change of epoch among the records after it.
    pub fn history(&self) -> EpochHistory {
        let mut history = EpochHistory::default();
        let known_from = self.floor.max(self.start);
        if known_from > 0 {
            history.append(self.epoch_at(known_from), Lsn(known_from));
        }
        for (index, entry) in
            self.log.iter().enumerate().skip(usize::try_from(known_from).expect("fits"))
        {
            history.append(entry.epoch, Lsn(index as u64 + 1));
        }
        history
    }

    /// What recovery takes as committed: the newest commit point a frame carries.
    pub fn recovered_commit(&self) -> u64 {
        let durable = usize::try_from(self.durable).expect("fits");
        let most = self.log[..durable].iter().map(|entry| entry.commit_at_cut).max();
        most.unwrap_or(0).min(self.durable)
    }

    /// A crash: what was not durable is gone.
    pub fn crash(&mut self) {
        self.log.truncate(usize::try_from(self.durable).expect("fits"));
        self.generation += 1;
        self.failed = false;
    }
}

/// A partition's replication machine on this node.
#[derive(Clone, Debug)]
pub enum Machine {
    Leader(Box<Leader>),
    Replica(Box<Replica>),
}

/// A write a leader took and has not answered.
#[derive(Clone, Copy, Debug)]
pub struct PendingWrite {
    pub value: u64,
    pub lsn: u64,
    pub submitted_us: u64,
}

/// One partition on one node.
#[derive(Clone, Debug)]
pub struct Part {
    pub disk: Disk,
    pub machine: Machine,
    /// Leader: values taken and not yet cut into a frame (their LSNs follow the framed ones).
    pub open: Vec<u64>,
    pub flush_scheduled: bool,
    pub syncing: bool,
    pub facts_writing: bool,
    pub facts_queued: Option<PartitionFacts>,
    /// The newest facts asked to be written: `disk.facts` unless a write is on its way.
    pub facts_requested: PartitionFacts,
    pub pending: VecDeque<PendingWrite>,
    /// Replica: the stream it follows on, and when it may connect again.
    pub link: Option<u64>,
    pub reconnect_at_us: u64,
    /// When this partition's log failed, if it did.
    pub failed_at_us: Option<u64>,
    /// Leader: since when it has taken writes without a break (as its ticks saw it).
    pub accepting_since_us: Option<u64>,
    /// Cuts and snapshot installs asked of the disk and not done: the runtime's log is away
    /// meanwhile, so no snapshot is written.
    pub log_changes: u32,
}

/// A node's role in the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Leader,
    Follower { leader: usize },
    Learner { leader: usize },
}

/// How the last promotion the controller appointed this node to went, as the node answers
/// the controller's probe (`control/src/failover.rs`, `LeaderStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppointedStatus {
    /// Its promotion runs (the controller's probe takes it as serving).
    Promoting,
    /// Its promotion was refused or failed half-way: the controller replaces it at once.
    Failed,
}

/// What a node keeps in memory for automatic failover; a crash loses all of it (the
/// controller's log it learned is kept by the controller model).
#[derive(Clone, Debug, Default)]
pub struct FailoverMemory {
    /// The epoch it last tried to lead at the controller's order.
    pub tried: Option<Epoch>,
    /// How its last appointed promotion goes; none once it leads.
    pub status: Option<AppointedStatus>,
    /// Until when it may serve as the data leader (0: no lease).
    pub lease_until_us: u64,
    /// On the controller's leader: when it last confirmed the data leader's lease.
    pub lease_confirmed_us: u64,
    /// On the controller's leader: when it last handed the controller's leadership over.
    pub handed_off_at_us: u64,
    /// When it next carries out the controller's state, and renews its lease.
    pub next_follow_us: u64,
    pub next_lease_us: u64,
    /// On the controller's leader: no look at the data leader before this (it waits after a
    /// failover that did not happen).
    pub watch_resumes_us: u64,
    /// Rounds of its lease renewal: the data leader mirrors its in-sync sets every few.
    pub lease_rounds: u64,
}

/// A node waiting to answer a promotion's request to accept its epoch.
#[derive(Clone, Debug)]
pub struct Accepting {
    pub promotion: u64,
    pub promoter: usize,
    pub epoch: Epoch,
    pub remaining: usize,
    pub refused: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub id: usize,
    pub member: Member,
    pub learner: bool,
    pub up: bool,
    pub paused: bool,
    /// Bumped at every crash: completions scheduled for an earlier life are dropped.
    pub incarnation: u64,
    /// Events that reached the node while it was paused, delivered when it resumes.
    pub stashed: Vec<crate::world::Event>,
    pub resumed_at_us: u64,
    pub role: Role,
    pub membership: Option<Membership>,
    pub wall_offset_ms: i64,
    pub slow_disk: bool,
    pub parts: Vec<Part>,
    pub accepting: Option<Accepting>,
    pub next_heartbeat_us: u64,
    pub failover: FailoverMemory,
}

impl Node {
    pub fn new(id: usize, learner: bool, partitions: usize, mutations: Mutations) -> Node {
        let member = Member { name: format!("n{id}"), address: format!("10.0.0.{id}:7000") };
        let parts = (0..partitions)
            .map(|index| {
                let disk = Disk::default();
                let machine = replica_machine(index, &disk, &disk.facts, 0, mutations);
                Part::new(disk, machine)
            })
            .collect();
        Node {
            id,
            member,
            learner,
            up: true,
            paused: false,
            incarnation: 0,
            stashed: Vec::new(),
            resumed_at_us: 0,
            role: Role::Admin,
            membership: None,
            wall_offset_ms: 0,
            slow_disk: false,
            parts,
            accepting: None,
            next_heartbeat_us: 0,
            failover: FailoverMemory::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.member.name
    }

    /// Whether it runs: up and not paused.
    pub fn running(&self) -> bool {
        self.up && !self.paused
    }

    /// The epoch it leads at, if it leads.
    pub fn leader_epoch(&self) -> Option<Epoch> {
        if self.role != Role::Leader {
            return None;
        }
        match &self.parts.first()?.machine {
            Machine::Leader(leader) => Some(leader.epoch()),
            Machine::Replica(_) => None,
        }
    }

    /// The highest fence any partition reports: a node that led an epoch, or accepted one,
    /// has it.
    pub fn highest_fence(&self) -> Epoch {
        let fences = self.report().partitions.into_iter().map(|partition| partition.fence);
        fences.max().unwrap_or_default()
    }

    /// What it reports to a promotion: its facts and durable log end, per partition.
    pub fn report(&self) -> MemberReport {
        let partitions = self
            .parts
            .iter()
            .enumerate()
            .map(|(index, part)| PartitionReport {
                partition: partition_id(index),
                fence: part.disk.facts.fence.max(part.fence_seen()),
                in_sync: part.disk.facts.in_sync.clone(),
                durable_lsn: Lsn(part.disk.durable),
                failed: part.disk.failed.then(|| "injected write failure".to_string()),
            })
            .collect();
        MemberReport { member: self.member.clone(), learner: self.learner, partitions }
    }
}

impl Part {
    pub fn new(disk: Disk, machine: Machine) -> Part {
        let facts_requested = disk.facts.clone();
        Part {
            disk,
            machine,
            open: Vec::new(),
            flush_scheduled: false,
            syncing: false,
            facts_writing: false,
            facts_queued: None,
            facts_requested,
            pending: VecDeque::new(),
            link: None,
            reconnect_at_us: 0,
            failed_at_us: None,
            accepting_since_us: None,
            log_changes: 0,
        }
    }

    /// The highest epoch the machine has seen, recorded or not.
    pub fn fence_seen(&self) -> Epoch {
        match &self.machine {
            Machine::Leader(leader) => leader.epoch().max(leader.fenced_by().unwrap_or_default()),
            Machine::Replica(replica) => replica.fence(),
        }
    }

    /// The commit point the machine knows.
    pub fn commit(&self) -> u64 {
        match &self.machine {
            Machine::Leader(leader) => leader.commit().0,
            Machine::Replica(replica) => replica.commit().0,
        }
    }

    pub fn leader(&mut self) -> Option<&mut Leader> {
        match &mut self.machine {
            Machine::Leader(leader) => Some(leader),
            Machine::Replica(_) => None,
        }
    }

    pub fn replica(&mut self) -> Option<&mut Replica> {
        match &mut self.machine {
            Machine::Replica(replica) => Some(replica),
            Machine::Leader(_) => None,
        }
    }
}

pub fn partition_id(index: usize) -> PartitionId {
    PartitionId(u32::try_from(index).expect("few partitions"))
}

/// A replica machine over what the disk holds, committed up to `commit`.
/// A replica machine over `disk`; `requested` is the newest facts asked to be written.
pub fn replica_machine(
    index: usize,
    disk: &Disk,
    requested: &PartitionFacts,
    commit: u64,
    mutations: Mutations,
) -> Machine {
    let start = ReplicaStart {
        last: Lsn(disk.last()),
        durable: Lsn(disk.durable),
        commit: Lsn(commit.min(disk.durable)),
        floor: Lsn(disk.floor),
        history: disk.history(),
        facts: requested.clone(),
        durable_facts: disk.facts.clone(),
    };
    Machine::Replica(Box::new(Replica::new(partition_id(index), start, mutations)))
}

/// A leader machine taking over from a replica machine at `epoch` with its first set.
pub fn leader_machine(
    index: usize,
    replica: &Replica,
    epoch: Epoch,
    set: strata_core::replication::InSyncSet,
    config: LeaderConfig,
    now: Moment,
) -> Machine {
    let start = LeaderStart {
        framed: replica.last(),
        durable: replica.durable(),
        commit: replica.commit(),
        history: replica.history().clone(),
        in_sync: set,
    };
    Machine::Leader(Box::new(Leader::new(partition_id(index), epoch, config, start, now)))
}
