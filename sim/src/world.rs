//! The simulated world: nodes built from the core replication state machines, a network of
//! ordered streams with delays, disks that lose what was not synced, clients writing unique
//! values, an operator who promotes and re-points nodes, and faults thrown at random moments,
//! all driven by one seeded generator and a virtual clock. The checker looks after every step.
//!
//! A run has two phases: **safety** (faults and operator actions at random) and **liveness**
//! (every fault healed; the operator makes sure a leader exists and every node follows it; the
//! cluster must take writes again).
//!
//! The operator is a person ([`Failover::Manual`]: guarded, sometimes forced, promotions and
//! re-pointing at random) or the controller ([`Failover::Automatic`], `failover.rs`): a model
//! of the Raft-replicated controller appoints a successor with
//! `strata_core::controller::plan_succession` when the data leader is lost, every member
//! carries out what the controller's log says, as `control/src/failover.rs` does, and each
//! new version of an in-sync set takes effect only once the controller recorded it.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use strata_core::cluster::{Membership, Now, Role as ClusterRole, FOLLOWERS_MAX, LEARNERS_MAX};
use strata_core::replication::mutations::Mutations;
use strata_core::replication::promotion::{plan_promotion, Guard, PromotionPlan};
use strata_core::replication::{
    InSyncSet, LeaderCommand, LeaderConfig, LeaderEvent, Moment, PartitionFacts, ReplicaCommand,
    ReplicaEvent, ReplicaKind, StartMode, StreamId, StreamPlan, Subscription,
};
use strata_core::{Epoch, Lsn, PartitionId};

use crate::checker::Checker;
use crate::controller::Controller;
use crate::node::{
    leader_machine, partition_id, replica_machine, Accepting, AppointedStatus, Entry, Machine,
    Node, PendingWrite, Role,
};
use crate::random::Random;

mod failover;

/// Milliseconds between a replica's heartbeats, and without one after which it times out.
const HEARTBEAT_MS: u64 = 100;
const TIMEOUT_MS: u64 = 400;
const TICK_US: u64 = 20_000;
const RECONNECT_US: u64 = 30_000;
const FLUSH_DELAY_US: u64 = 500;
/// A write held longer than this by a leader that takes writes is a liveness failure.
const STALL_LIMIT_US: u64 = (2 * TIMEOUT_MS + 1000) * 1000;
/// Under the controller, a leader's set changes take effect only once the controller recorded
/// them, and a request lost to a fault is made again this much later
/// (`CONTROLLER_RECORD_RETRY_MS` in core's leader): the limit grows by it.
const CONTROLLED_STALL_LIMIT_US: u64 = STALL_LIMIT_US + 1_000_000;
const TRACE_LINES_KEPT: usize = 400;
/// Events one run may take at most: far more than a run needs, so that a loop is caught.
const EVENTS_MAX: u64 = 50_000_000;

/// What a run simulates.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// Nodes that may lead, and learners.
    pub voters: usize,
    pub learners: usize,
    pub partitions: usize,
    pub min_insync: usize,
    /// Simulated milliseconds with faults, then after healing.
    pub safety_ms: u64,
    pub liveness_ms: u64,
    pub mutations: Mutations,
    /// Who replaces a lost leader: a person, or the controller.
    pub failover: Failover,
    /// Automatic failover: how long the data leader may go unconfirmed before the controller
    /// replaces it (`[cluster] failover_timeout`).
    pub failover_timeout_ms: u64,
    /// Automatic failover: check C3 (no leader serves under a lease once the controller
    /// appointed another). Off by default: the controller's timeout covers neither an
    /// appointee's first lease nor a lease confirmed while an `Appoint` waits to commit
    /// (`checker/controller.rs`), which some seeds show.
    pub check_leases: bool,
    /// Print every trace line as it happens.
    pub trace: bool,
}

/// Who promotes followers and re-points the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failover {
    /// A person, at random moments: guarded promotions (forced ones when refused, sometimes),
    /// re-pointing and removals.
    Manual,
    /// The controller: it appoints a successor when the data leader is lost, and every member
    /// follows what it decided.
    Automatic,
}

impl Config {
    /// A cluster shape drawn from the seed: 3 to 5 voters, at most one learner, one or two
    /// partitions, `min_insync_replicas` 2 (or 3 with five voters, sometimes); a person
    /// operates it.
    #[must_use]
    pub fn for_seed(seed: u64, mutations: Mutations) -> Config {
        Config::drawn(seed, mutations, Failover::Manual)
    }

    /// The cluster [`Config::for_seed`] draws, with the controller replacing lost leaders;
    /// `min_insync_replicas` is 1 in one run of three (drawn last): the controller records
    /// every shrink of a set before it takes effect, so a leader left alone is known to be.
    #[must_use]
    pub fn automatic(seed: u64, mutations: Mutations) -> Config {
        Config::drawn(seed, mutations, Failover::Automatic)
    }

    fn drawn(seed: u64, mutations: Mutations, failover: Failover) -> Config {
        let mut random = Random::new(seed ^ 0x5EED_C0FF_EE00_0001);
        let voters = usize::try_from(random.between(3, 5)).expect("small");
        let learners = usize::try_from(random.below(2)).expect("small");
        let partitions = usize::try_from(random.between(1, 2)).expect("small");
        let mut min_insync = if voters == 5 && random.chance(1, 2) { 3 } else { 2 };
        // Drawn last, so that the shapes drawn before stay what they were.
        let failover_timeout_ms = random.between(900, 2_000);
        if failover == Failover::Automatic && random.chance(1, 3) {
            min_insync = 1;
        }
        Config {
            seed,
            voters,
            learners,
            partitions,
            min_insync,
            safety_ms: 20_000,
            liveness_ms: 8_000,
            mutations,
            failover,
            failover_timeout_ms,
            check_leases: false,
            trace: false,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub config: Config,
    /// The first property broken, if any.
    pub violation: Option<String>,
    /// Simulated milliseconds at the end (or at the violation).
    pub at_ms: u64,
    pub events: u64,
    pub acknowledged: u64,
    pub promotions: u64,
    /// Leaders the controller appointed (automatic failover), the first one included.
    pub appointments: u64,
    /// The last lines of the trace.
    pub trace: Vec<String>,
}

/// A message on a replication stream.
#[derive(Clone, Debug)]
pub enum Message {
    Subscribe(Box<Subscription>),
    Ack(Lsn),
    Recorded { leader_epoch: Epoch, isr_epoch: u64 },
    Failure(String),
    Fenced(Epoch),
    Start { epoch: Epoch, mode: StartMode, caught_up_at: Lsn, in_sync: Box<InSyncSet> },
    Frames { first: u64, entries: Vec<Entry> },
    Commit(Lsn),
    Snapshot { lsn: u64, entries: Vec<Entry> },
    Set(Box<InSyncSet>),
    Refused(String),
}

/// A change of a replica's log that takes disk time.
#[derive(Clone, Debug)]
pub enum LogChange {
    Cut { after: Lsn },
    Install { lsn: Lsn, entries: Vec<Entry> },
}

/// Something that happens at a moment of simulated time.
#[derive(Clone, Debug)]
pub enum Event {
    ClientWrite,
    Flush {
        node: usize,
        incarnation: u64,
        part: usize,
    },
    SyncDone {
        node: usize,
        incarnation: u64,
        part: usize,
        generation: u64,
        lsn: u64,
    },
    FactsDone {
        node: usize,
        incarnation: u64,
        part: usize,
        facts: Box<PartitionFacts>,
    },
    /// A cut or snapshot install asked of the disk is done (they take disk time, as in the
    /// runtime, which runs them on a task of their own).
    LogChanged {
        node: usize,
        incarnation: u64,
        part: usize,
        change: LogChange,
    },
    Deliver {
        link: u64,
        to: usize,
        incarnation: u64,
        message: Message,
    },
    Closed {
        link: u64,
        to: usize,
        incarnation: u64,
    },
    Tick {
        node: usize,
        incarnation: u64,
    },
    StepDown {
        node: usize,
        incarnation: u64,
    },
    AcceptArrives {
        promotion: u64,
        node: usize,
        incarnation: u64,
    },
    InstallArrives {
        promotion: u64,
        node: usize,
        incarnation: u64,
    },
    AcceptAnswer {
        promotion: u64,
        node: usize,
        incarnation: u64,
        refusal: Option<String>,
    },
    PromotionDeadline {
        promotion: u64,
    },
    Nemesis,
    Resume {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Rejoin {
        first: usize,
        second: usize,
    },
    DiskNormal {
        node: usize,
    },
    Liveness,
    Repair,
    /// Automatic failover: the controller's leader looks after its leadership, the data
    /// leader and the log's replication.
    ControllerTick,
    /// A proposal to the controller commits, if its proposer can still commit it.
    ControllerCommit {
        proposal: u64,
    },
    /// The node carries out the controller's state as it learned it.
    Follow {
        node: usize,
        incarnation: u64,
    },
    /// The node asks the controller to record a version of a partition's set (a
    /// controlled leader's `RecordWithController`, or the runtime asking again while the
    /// controller has no leader), in a request it started at `started_us`.
    RecordInSync {
        node: usize,
        incarnation: u64,
        part: usize,
        set: Box<InSyncSet>,
        started_us: u64,
    },
    /// Such a request of partition `part` of `from` reaches `node`, which led the
    /// controller when it was sent (a paused node takes it when it resumes).
    RecordArrives {
        node: usize,
        incarnation: u64,
        from: usize,
        from_incarnation: u64,
        part: usize,
        set: Box<InSyncSet>,
    },
    /// The answer to such a request reaches the node: the controller recorded the version,
    /// or it did not (the node then looks at the controller's state as it learned it).
    RecordAnswer {
        node: usize,
        incarnation: u64,
        part: usize,
        version: (Epoch, u64),
        recorded: bool,
    },
}

impl Event {
    /// The node a scheduled event is for, with the life it was scheduled in.
    fn target(&self) -> Option<(usize, u64)> {
        match self {
            Event::Flush { node, incarnation, .. }
            | Event::SyncDone { node, incarnation, .. }
            | Event::FactsDone { node, incarnation, .. }
            | Event::LogChanged { node, incarnation, .. }
            | Event::Tick { node, incarnation }
            | Event::Follow { node, incarnation }
            | Event::RecordInSync { node, incarnation, .. }
            | Event::RecordArrives { node, incarnation, .. }
            | Event::RecordAnswer { node, incarnation, .. }
            | Event::StepDown { node, incarnation }
            | Event::AcceptArrives { node, incarnation, .. }
            | Event::InstallArrives { node, incarnation, .. } => Some((*node, *incarnation)),
            Event::Deliver { to, incarnation, .. } | Event::Closed { to, incarnation, .. } => {
                Some((*to, *incarnation))
            }
            Event::AcceptAnswer { .. } => None,
            _ => None,
        }
    }
}

struct Scheduled {
    at: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.sequence).cmp(&(self.at, self.sequence))
    }
}

/// A replication stream between a replica and a leader, for one partition.
#[derive(Clone, Debug)]
struct Link {
    replica: usize,
    leader: usize,
    part: usize,
    /// Whether each end (replica, leader) still has it open.
    open: [bool; 2],
    /// When the next message toward each end (replica, leader) may arrive at the earliest:
    /// messages of one direction arrive in order.
    next_at: [u64; 2],
    /// Messages for the replica held until its stream can take them.
    backlog: VecDeque<Message>,
    snapshot: Option<Vec<Entry>>,
}

#[derive(Clone, Debug)]
struct Promotion {
    id: u64,
    candidate: usize,
    plan: PromotionPlan,
    waiting: BTreeSet<usize>,
    /// Every member asked is fenced: the new set is being installed on them.
    installing: bool,
    asked: BTreeSet<usize>,
    /// The epoch the controller appointed the candidate at (automatic failover).
    appointed: Option<Epoch>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness,
}

/// The whole simulated cluster.
pub struct World {
    config: Config,
    random: Random,
    now: u64,
    sequence: u64,
    queue: BinaryHeap<Scheduled>,
    pub(crate) nodes: Vec<Node>,
    links: BTreeMap<u64, Link>,
    next_link: u64,
    /// Node pairs (lower id first) that cannot reach each other.
    cut: BTreeSet<(usize, usize)>,
    /// Promotions in flight by id: at most one by the person operating the cluster; the
    /// controller's appointees may race (each member accepts an epoch once).
    in_flight: BTreeMap<u64, Promotion>,
    next_promotion: u64,
    /// Automatic failover: the modeled controller.
    controller: Option<Controller>,
    appointments: u64,
    next_value: u64,
    wal_failures: u32,
    phase: Phase,
    liveness_started: u64,
    acknowledged_at_liveness: u64,
    pub(crate) checker: Checker,
    trace: VecDeque<String>,
    events: u64,
    promotions: u64,
}

/// Runs one simulation to its end or its first violation. A panic inside the state machines
/// counts as a violation.
#[must_use]
pub fn run(config: Config) -> Outcome {
    let shape = config.clone();
    let mut world = World::new(config);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        world.run_to_end();
    }));
    if let Err(panic) = outcome {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_string()))
            .unwrap_or_else(|| "a panic".into());
        world.checker.violation.get_or_insert(format!("panic: {text}"));
    }
    Outcome {
        config: shape,
        violation: world.checker.violation.clone(),
        at_ms: world.now / 1000,
        events: world.events,
        acknowledged: world.checker.acknowledged,
        promotions: world.promotions,
        appointments: world.appointments,
        trace: world.trace.iter().cloned().collect(),
    }
}

impl World {
    fn new(config: Config) -> World {
        let random = Random::new(config.seed);
        let nodes = (0..config.voters + config.learners)
            .map(|id| Node::new(id, id >= config.voters, config.partitions, config.mutations))
            .collect();
        let partitions = config.partitions;
        World {
            config,
            random,
            now: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            nodes,
            links: BTreeMap::new(),
            next_link: 1,
            cut: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            next_promotion: 1,
            controller: None,
            appointments: 0,
            next_value: 1,
            wal_failures: 0,
            phase: Phase::Safety,
            liveness_started: 0,
            acknowledged_at_liveness: 0,
            checker: Checker::new(partitions),
            trace: VecDeque::new(),
            events: 0,
            promotions: 0,
        }
    }

    fn run_to_end(&mut self) {
        for node in 0..self.nodes.len() {
            self.schedule(0, Event::Tick { node, incarnation: 0 });
        }
        match self.config.failover {
            Failover::Manual => {
                self.start_promotion(0);
                self.schedule(50_000, Event::Repair);
            }
            Failover::Automatic => self.start_controller(),
        }
        self.schedule(2_000, Event::ClientWrite);
        self.schedule(500_000, Event::Nemesis);
        self.schedule(self.config.safety_ms * 1000, Event::Liveness);
        let end = (self.config.safety_ms + self.config.liveness_ms) * 1000;
        while let Some(next) = self.queue.pop() {
            if next.at > end {
                break;
            }
            self.now = next.at;
            self.events += 1;
            if self.events > EVENTS_MAX {
                self.checker.stalled(format!("more than {EVENTS_MAX} events: something loops"));
                return;
            }
            self.dispatch(next.event);
            self.checker.check_newest_sets(&self.nodes);
            if let Some(violation) = &self.checker.violation {
                let line = format!("violation: {violation}");
                self.note(line);
                return;
            }
        }
        self.now = self.now.max(end);
        self.judge_liveness();
    }

    fn schedule(&mut self, delay_us: u64, event: Event) {
        self.sequence += 1;
        let at = self.now + delay_us;
        self.queue.push(Scheduled { at, sequence: self.sequence, event });
    }

    fn note(&mut self, text: String) {
        let line = format!("{:>9.3} ms  {text}", self.now as f64 / 1000.0);
        if self.config.trace {
            println!("{line}");
        }
        if self.trace.len() == TRACE_LINES_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn latency(&mut self) -> u64 {
        if self.random.chance(1, 100) {
            self.random.between(20_000, 80_000)
        } else {
            self.random.between(50, 500)
        }
    }

    fn disk_latency(&mut self, node: usize) -> u64 {
        let base = self.random.between(100, 2_000);
        if self.nodes[node].slow_disk {
            base * 50
        } else {
            base
        }
    }

    fn reachable(&self, first: usize, second: usize) -> bool {
        let pair = (first.min(second), first.max(second));
        first == second
            || (self.nodes[first].running()
                && self.nodes[second].running()
                && !self.cut.contains(&pair))
    }

    fn node_now(&self, node: usize) -> Now {
        let moment = Moment(self.now / 1000);
        let wall = i128::from(self.now / 1000) + i128::from(self.nodes[node].wall_offset_ms);
        Now { wall_ms: u64::try_from(wall.max(0)).unwrap_or(0), moment }
    }

    fn moment(&self) -> Moment {
        Moment(self.now / 1000)
    }

    // ----- dispatch -----

    fn dispatch(&mut self, event: Event) {
        if let Some((node, incarnation)) = event.target() {
            let target = &mut self.nodes[node];
            if !target.up || target.incarnation != incarnation {
                return;
            }
            if target.paused {
                target.stashed.push(event);
                return;
            }
        }
        match event {
            Event::ClientWrite => self.client_write(),
            Event::Flush { node, part, .. } => self.flush(node, part),
            Event::SyncDone { node, part, generation, lsn, .. } => {
                self.sync_done(node, part, generation, lsn);
            }
            Event::FactsDone { node, part, facts, .. } => self.facts_done(node, part, *facts),
            Event::LogChanged { node, part, change, .. } => self.log_changed(node, part, change),
            Event::Deliver { link, to, message, .. } => self.deliver(link, to, message),
            Event::Closed { link, to, .. } => self.closed(link, to),
            Event::Tick { node, incarnation } => self.tick(node, incarnation),
            Event::StepDown { node, .. } => self.step_down(node),
            Event::AcceptArrives { promotion, node, .. } => self.accept_arrives(promotion, node),
            Event::InstallArrives { promotion, node, .. } => self.install_arrives(promotion, node),
            Event::AcceptAnswer { promotion, node, refusal, .. } => {
                self.accept_answer(promotion, node, refusal);
            }
            Event::PromotionDeadline { promotion } => {
                self.abort_promotion(promotion, "no answer from every member in time".into());
            }
            Event::Nemesis => self.nemesis(),
            Event::Resume { node } => self.resume(node),
            Event::Restart { node } => self.restart(node),
            Event::Rejoin { first, second } => {
                self.cut.remove(&(first.min(second), first.max(second)));
            }
            Event::DiskNormal { node } => self.nodes[node].slow_disk = false,
            Event::Liveness => self.start_liveness(),
            Event::Repair => self.repair(),
            Event::ControllerTick => self.controller_tick(),
            Event::ControllerCommit { proposal } => self.controller_commit(proposal),
            Event::Follow { node, .. } => self.follow_controller(node),
            Event::RecordInSync { node, part, set, started_us, .. } => {
                self.record_in_sync(node, part, *set, started_us);
            }
            Event::RecordArrives { node, from, from_incarnation, part, set, .. } => {
                self.record_arrives(node, (from, from_incarnation, part), *set);
            }
            Event::RecordAnswer { node, part, version, recorded, .. } => {
                self.record_answered(node, part, version, recorded);
            }
        }
    }

    // ----- clients and the write path -----

    fn client_write(&mut self) {
        let delay = self.random.between(1_000, 6_000);
        self.schedule(delay, Event::ClientWrite);
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|node| self.nodes[*node].running() && self.nodes[*node].role == Role::Leader)
            .filter(|node| self.serves_under_lease(*node))
            .collect();
        if leaders.is_empty() {
            return;
        }
        let node = leaders[self.random.index(leaders.len())];
        let part = self.random.index(self.config.partitions);
        let value = self.next_value;
        let now = self.now;
        let incarnation = self.nodes[node].incarnation;
        let target = &mut self.nodes[node].parts[part];
        if target.disk.failed {
            return;
        }
        let Some(leader) = target.leader() else { return };
        if !leader.accepts_writes() {
            return;
        }
        let lsn = leader.framed().0 + target.open.len() as u64 + 1;
        self.next_value += 1;
        target.open.push(value);
        target.pending.push_back(PendingWrite { value, lsn, submitted_us: now });
        if !target.flush_scheduled {
            target.flush_scheduled = true;
            self.schedule(FLUSH_DELAY_US, Event::Flush { node, incarnation, part });
        }
    }

    fn flush(&mut self, node: usize, part: usize) {
        let target = &mut self.nodes[node].parts[part];
        target.flush_scheduled = false;
        if target.open.is_empty() || target.disk.failed {
            return;
        }
        let Machine::Leader(leader) = &target.machine else { return };
        let (epoch, commit) = (leader.epoch(), leader.commit().0);
        let first = target.disk.last() + 1;
        for value in std::mem::take(&mut target.open) {
            target.disk.log.push(Entry { epoch, value, commit_at_cut: commit });
        }
        let last = target.disk.last();
        self.leader_step(node, part, LeaderEvent::FrameCut { first: Lsn(first), last: Lsn(last) });
        let target = &mut self.nodes[node].parts[part];
        let Some(leader) = target.leader() else { return };
        let recipients: Vec<StreamId> = leader.recipients(Lsn(first)).collect();
        let entries = target.disk.log[usize::try_from(first - 1).expect("fits")..].to_vec();
        for stream in recipients {
            self.send(stream.0, false, Message::Frames { first, entries: entries.clone() });
        }
        self.start_sync(node, part);
    }

    fn start_sync(&mut self, node: usize, part: usize) {
        let latency = self.disk_latency(node);
        let incarnation = self.nodes[node].incarnation;
        let target = &mut self.nodes[node].parts[part];
        if target.syncing || target.disk.failed || target.disk.last() <= target.disk.durable {
            return;
        }
        target.syncing = true;
        let (generation, lsn) = (target.disk.generation, target.disk.last());
        self.schedule(latency, Event::SyncDone { node, incarnation, part, generation, lsn });
    }

    fn sync_done(&mut self, node: usize, part: usize, generation: u64, lsn: u64) {
        if self.config.trace {
            self.note(format!("n{node} p{part}: sync done {lsn} (generation {generation})"));
        }
        let target = &mut self.nodes[node].parts[part];
        target.syncing = false;
        if target.disk.failed {
            return;
        }
        if generation == target.disk.generation {
            target.disk.durable = target.disk.durable.max(lsn.min(target.disk.last()));
            let durable = Lsn(target.disk.durable);
            match &target.machine {
                Machine::Leader(_) => {
                    self.leader_step(node, part, LeaderEvent::LocalDurable { lsn: durable });
                }
                Machine::Replica(_) => {
                    self.replica_step(node, part, ReplicaEvent::LocalDurable { lsn: durable });
                }
            }
        }
        self.start_sync(node, part);
    }

    fn write_facts(&mut self, node: usize, part: usize, facts: PartitionFacts) {
        let latency = self.disk_latency(node);
        let incarnation = self.nodes[node].incarnation;
        let target = &mut self.nodes[node].parts[part];
        assert!(facts.fence >= target.facts_requested.fence, "a write never lowers the fence");
        target.facts_requested = facts.clone();
        if target.facts_writing {
            target.facts_queued = Some(facts);
            return;
        }
        target.facts_writing = true;
        let facts = Box::new(facts);
        self.schedule(latency, Event::FactsDone { node, incarnation, part, facts });
    }

    /// A write of facts is on disk. As in the runtime, the machine hears of it while the
    /// partition still counts as writing (what it asks to write now waits in the queue), then
    /// the newest queued facts are written.
    fn facts_done(&mut self, node: usize, part: usize, facts: PartitionFacts) {
        let target = &mut self.nodes[node].parts[part];
        assert!(facts.fence >= target.disk.facts.fence, "the fence on disk never goes back");
        target.disk.facts = facts.clone();
        match &target.machine {
            Machine::Leader(leader) => {
                if let Some(set) = facts.in_sync.filter(|set| set.leader_epoch == leader.epoch()) {
                    let (leader_epoch, isr_epoch) = set.version();
                    let event = LeaderEvent::InSyncSetPersisted { leader_epoch, isr_epoch };
                    self.leader_step(node, part, event);
                }
            }
            Machine::Replica(_) => {
                self.replica_step(node, part, ReplicaEvent::FactsPersisted { facts });
            }
        }
        let target = &mut self.nodes[node].parts[part];
        if let Some(queued) = target.facts_queued.take() {
            let latency = self.disk_latency(node);
            let incarnation = self.nodes[node].incarnation;
            let facts = Box::new(queued);
            self.schedule(latency, Event::FactsDone { node, incarnation, part, facts });
        } else {
            target.facts_writing = false;
        }
        self.drain_backlog_of(node, part);
    }

    // ----- the network -----

    fn open_link(&mut self, replica: usize, leader: usize, part: usize) -> u64 {
        let id = self.next_link;
        self.next_link += 1;
        let link = Link {
            replica,
            leader,
            part,
            open: [true, true],
            next_at: [self.now, self.now],
            backlog: VecDeque::new(),
            snapshot: None,
        };
        self.links.insert(id, link);
        id
    }

    /// Sends on a link toward its leader end (`to_leader`) or its replica end.
    fn send(&mut self, id: u64, to_leader: bool, message: Message) {
        let Some(link) = self.links.get(&id) else { return };
        let (from_end, to_end) = if to_leader { (0, 1) } else { (1, 0) };
        if !link.open[from_end] {
            return;
        }
        let (sender, receiver) =
            if to_leader { (link.replica, link.leader) } else { (link.leader, link.replica) };
        if !self.reachable_or_paused(sender, receiver) {
            self.close_link(id, None);
            return;
        }
        let latency = self.latency();
        let link = self.links.get_mut(&id).expect("link");
        let at = (self.now + latency).max(link.next_at[to_end]);
        link.next_at[to_end] = at;
        let incarnation = self.nodes[receiver].incarnation;
        let event = Event::Deliver { link: id, to: receiver, incarnation, message };
        self.schedule(at - self.now, event);
    }

    /// A connection survives a paused end (the kernel keeps it), not a cut or a dead one.
    fn reachable_or_paused(&self, first: usize, second: usize) -> bool {
        let pair = (first.min(second), first.max(second));
        self.nodes[first].up && self.nodes[second].up && !self.cut.contains(&pair)
    }

    /// Closes a link. The end `by` closed it itself and needs no notice; the other end (both,
    /// for `None`) learns of it after a network delay.
    fn close_link(&mut self, id: u64, by: Option<usize>) {
        let latency = self.latency();
        let Some(link) = self.links.get_mut(&id) else { return };
        let ends = [link.replica, link.leader];
        let mut notices = Vec::new();
        for (end, node) in ends.into_iter().enumerate() {
            if link.open[end] {
                link.open[end] = false;
                if by != Some(node) {
                    notices.push(node);
                }
            }
        }
        link.backlog.clear();
        for node in notices {
            let incarnation = self.nodes[node].incarnation;
            self.schedule(latency, Event::Closed { link: id, to: node, incarnation });
        }
    }

    fn closed(&mut self, id: u64, to: usize) {
        let Some(link) = self.links.get(&id).cloned() else { return };
        if to == link.replica {
            let part = &mut self.nodes[to].parts[link.part];
            if part.link == Some(id) {
                part.link = None;
                part.reconnect_at_us = self.now + RECONNECT_US;
                self.replica_step(to, link.part, ReplicaEvent::StreamClosed { stream: id });
            }
        } else if matches!(self.nodes[to].parts[link.part].machine, Machine::Leader(_)) {
            self.leader_step(to, link.part, LeaderEvent::StreamClosed { stream: StreamId(id) });
        }
    }

    fn deliver(&mut self, id: u64, to: usize, message: Message) {
        let Some(link) = self.links.get_mut(&id) else { return };
        let end = usize::from(to == link.leader && to != link.replica);
        if !link.open[end] {
            return;
        }
        if end == 1 {
            self.at_leader(id, message);
        } else {
            link.backlog.push_back(message);
            self.drain_backlog(id);
        }
    }

    fn at_leader(&mut self, id: u64, message: Message) {
        let link = self.links[&id].clone();
        let (node, part) = (link.leader, link.part);
        let is_leader = self.nodes[node].role == Role::Leader
            && matches!(self.nodes[node].parts[part].machine, Machine::Leader(_));
        if !is_leader {
            self.send(id, false, Message::Refused("not the leader".into()));
            self.close_link(id, Some(node));
            return;
        }
        let stream = StreamId(id);
        let event = match message {
            Message::Subscribe(subscription) => {
                let alive = self.nodes[node].membership.as_ref().is_some_and(|membership| {
                    membership.get(&subscription.member.name).is_some_and(|member| {
                        member.status == strata_core::cluster::NodeStatus::Alive
                    })
                });
                if !alive {
                    self.send(id, false, Message::Refused("not an alive member".into()));
                    self.close_link(id, Some(node));
                    return;
                }
                LeaderEvent::Subscribed { stream, subscription: *subscription }
            }
            Message::Ack(lsn) => LeaderEvent::Acked { stream, lsn },
            Message::Recorded { leader_epoch, isr_epoch } => {
                self.note(format!(
                    "n{node} p{part}: stream {id} recorded {leader_epoch}/{isr_epoch}"
                ));
                LeaderEvent::InSyncSetRecorded { stream, leader_epoch, isr_epoch }
            }
            Message::Failure(reason) => LeaderEvent::ReplicaFailed { stream, reason },
            Message::Fenced(epoch) => LeaderEvent::NewerEpoch { epoch },
            other => panic!("{other:?} toward a leader"),
        };
        self.leader_step(node, part, event);
    }

    fn drain_backlog_of(&mut self, node: usize, part: usize) {
        if let Some(id) = self.nodes[node].parts[part].link {
            self.drain_backlog(id);
        }
    }

    /// Hands the replica end its messages in order, holding frames while its stream waits for
    /// the disk.
    fn drain_backlog(&mut self, id: u64) {
        loop {
            let Some(link) = self.links.get_mut(&id) else { return };
            let (node, part) = (link.replica, link.part);
            if !link.open[0] {
                link.backlog.clear();
                return;
            }
            let Some(front) = link.backlog.front() else { return };
            let Machine::Replica(replica) = &self.nodes[node].parts[part].machine else {
                link.backlog.clear();
                return;
            };
            if !replica.is_current(id) {
                link.backlog.clear();
                return;
            }
            let holds = matches!(front, Message::Frames { .. } | Message::Snapshot { .. });
            if holds && replica.waiting_for_disk(id) {
                return;
            }
            let message = link.backlog.pop_front().expect("front exists");
            self.at_replica(id, node, part, message);
        }
    }

    fn at_replica(&mut self, id: u64, node: usize, part: usize, message: Message) {
        match message {
            Message::Start { epoch, mode, caught_up_at, in_sync } => {
                let event = ReplicaEvent::StreamStarted {
                    stream: id,
                    epoch,
                    mode,
                    caught_up_at,
                    in_sync: Some(*in_sync),
                };
                self.replica_step(node, part, event);
            }
            Message::Frames { first, entries } => {
                self.receive_frames(id, node, part, first, entries)
            }
            Message::Commit(lsn) => {
                self.replica_step(node, part, ReplicaEvent::LeaderCommit { stream: id, lsn });
            }
            Message::Snapshot { lsn, entries } => {
                if let Some(link) = self.links.get_mut(&id) {
                    link.snapshot = Some(entries);
                }
                let event = ReplicaEvent::SnapshotReceived { stream: id, lsn: Lsn(lsn) };
                self.replica_step(node, part, event);
            }
            Message::Set(set) => {
                self.note(format!("n{node} p{part}: offered {set} on stream {id}"));
                let event = ReplicaEvent::InSyncSetOffered { stream: id, set: *set };
                self.replica_step(node, part, event);
            }
            Message::Refused(reason) => {
                self.note(format!("n{node} p{part}: subscription refused: {reason}"));
                self.close_link(id, Some(node));
                self.replica_closed(node, part, id);
            }
            other => panic!("{other:?} toward a replica"),
        }
    }

    fn receive_frames(
        &mut self,
        id: u64,
        node: usize,
        part: usize,
        first: u64,
        entries: Vec<Entry>,
    ) {
        let mut start = 0;
        while start < entries.len() {
            let epoch = entries[start].epoch;
            let length = entries[start..].iter().take_while(|entry| entry.epoch == epoch).count();
            let frame_first = first + start as u64;
            let frame_last = frame_first + length as u64 - 1;
            let event = ReplicaEvent::Frame {
                stream: id,
                epoch,
                first: Lsn(frame_first),
                last: Lsn(frame_last),
            };
            self.replica_step(node, part, event);
            let target = &mut self.nodes[node].parts[part];
            let Machine::Replica(replica) = &target.machine else { return };
            if replica.last().0 != frame_last {
                return;
            }
            target.disk.log.extend_from_slice(&entries[start..start + length]);
            start += length;
        }
        self.start_sync(node, part);
    }

    fn replica_closed(&mut self, node: usize, part: usize, id: u64) {
        let target = &mut self.nodes[node].parts[part];
        if target.link == Some(id) {
            target.link = None;
            target.reconnect_at_us = self.now + RECONNECT_US;
            self.replica_step(node, part, ReplicaEvent::StreamClosed { stream: id });
        }
    }

    // ----- state machines -----

    fn leader_step(&mut self, node: usize, part: usize, event: LeaderEvent) {
        let now = self.moment();
        let mut commands = Vec::new();
        let Machine::Leader(leader) = &mut self.nodes[node].parts[part].machine else {
            return;
        };
        let before = leader.in_sync().version();
        leader.step(now, event, &mut commands);
        if leader.in_sync().version() != before {
            let set = leader.in_sync().to_string();
            self.note(format!("n{node} p{part}: {set} takes effect"));
        }
        for command in commands {
            self.leader_command(node, part, command);
        }
    }

    fn leader_command(&mut self, node: usize, part: usize, command: LeaderCommand) {
        match command {
            LeaderCommand::StartStream { stream, plan, epoch, caught_up_at, in_sync } => {
                self.start_stream(node, part, stream, plan, epoch, caught_up_at, in_sync);
            }
            LeaderCommand::Refuse { stream, reason } => {
                self.note(format!("n{node} p{part}: refuses stream {}: {reason}", stream.0));
                self.send(stream.0, false, Message::Refused(reason));
                self.close_link(stream.0, Some(node));
            }
            LeaderCommand::Close { stream, reason } => {
                self.note(format!("n{node} p{part}: closes stream {}: {reason}", stream.0));
                self.close_link(stream.0, Some(node));
            }
            LeaderCommand::Commit { lsn } => self.leader_commit(node, part, lsn),
            LeaderCommand::SendInSyncSet { stream, set } => {
                self.send(stream.0, false, Message::Set(Box::new(set)));
            }
            LeaderCommand::PersistInSyncSet { set } => {
                self.note(format!("n{node} p{part}: proposes {set}"));
                let requested = &self.nodes[node].parts[part].facts_requested;
                let fence = requested.fence.max(set.leader_epoch);
                self.write_facts(node, part, PartitionFacts { fence, in_sync: Some(set) });
            }
            LeaderCommand::RecordWithController { set } => {
                self.record_in_sync(node, part, set, self.now);
            }
            LeaderCommand::StepDown { epoch } => {
                self.note(format!("n{node} p{part}: learns of epoch {epoch}; steps down"));
                let incarnation = self.nodes[node].incarnation;
                self.schedule(0, Event::StepDown { node, incarnation });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_stream(
        &mut self,
        node: usize,
        part: usize,
        stream: StreamId,
        plan: StreamPlan,
        epoch: Epoch,
        caught_up_at: Lsn,
        in_sync: InSyncSet,
    ) {
        self.note(format!("n{node} p{part}: starts stream {} with {plan:?}", stream.0));
        let disk = &self.nodes[node].parts[part].disk;
        let framed = disk.last();
        let start = |mode| Message::Start { epoch, mode, caught_up_at, in_sync: Box::new(in_sync) };
        match plan {
            StreamPlan::Tail { after } if after.0 < disk.start => {
                self.leader_step(node, part, LeaderEvent::TailUnavailable { stream });
            }
            StreamPlan::Tail { after } => {
                let entries = disk.log[usize::try_from(after.0).expect("fits")..].to_vec();
                self.send(stream.0, false, start(StartMode::Tail { next_lsn: after.next() }));
                if !entries.is_empty() {
                    self.send(stream.0, false, Message::Frames { first: after.0 + 1, entries });
                }
                self.leader_step(node, part, LeaderEvent::TailQueued { stream });
                self.send_commit(node, part, stream);
            }
            StreamPlan::Snapshot { .. } => {
                let entries = disk.log.clone();
                self.send(stream.0, false, start(StartMode::Snapshot));
                self.send(stream.0, false, Message::Snapshot { lsn: framed, entries });
                let event = LeaderEvent::SnapshotQueued { stream, lsn: Lsn(framed) };
                self.leader_step(node, part, event);
                self.send_commit(node, part, stream);
            }
        }
    }

    fn send_commit(&mut self, node: usize, part: usize, stream: StreamId) {
        if let Machine::Leader(leader) = &self.nodes[node].parts[part].machine {
            let commit = leader.commit();
            self.send(stream.0, false, Message::Commit(commit));
        }
    }

    fn leader_commit(&mut self, node: usize, part: usize, lsn: Lsn) {
        if self.config.trace {
            self.note(format!("n{node} p{part}: commits {lsn}"));
        }
        let target = &self.nodes[node].parts[part];
        self.checker.leader_committed(node, part, lsn.0, &target.disk);
        loop {
            let target = &mut self.nodes[node].parts[part];
            let Some(front) = target.pending.front().copied() else { break };
            if front.lsn > lsn.0 {
                break;
            }
            target.pending.pop_front();
            self.checker.acknowledged(part, front.lsn, front.value);
        }
        let Machine::Leader(leader) = &self.nodes[node].parts[part].machine else { return };
        let streams: Vec<StreamId> = leader.live_streams().collect();
        for stream in streams {
            self.send(stream.0, false, Message::Commit(lsn));
        }
    }

    fn replica_step(&mut self, node: usize, part: usize, event: ReplicaEvent) {
        let mut commands = Vec::new();
        let Machine::Replica(replica) = &mut self.nodes[node].parts[part].machine else {
            return;
        };
        replica.step(event, &mut commands);
        for command in commands {
            self.replica_command(node, part, command);
        }
    }

    fn replica_command(&mut self, node: usize, part: usize, command: ReplicaCommand) {
        match command {
            ReplicaCommand::Reject { stream, reason, fence } => {
                self.note(format!("n{node} p{part}: rejects stream {stream}: {reason}"));
                if let Some(fence) = fence {
                    self.send(stream, true, Message::Fenced(fence));
                }
                self.close_link(stream, Some(node));
                let target = &mut self.nodes[node].parts[part];
                if target.link == Some(stream) {
                    target.link = None;
                    target.reconnect_at_us = self.now + RECONNECT_US;
                }
            }
            ReplicaCommand::PersistFacts { facts } => self.write_facts(node, part, facts),
            ReplicaCommand::Truncate { after, records } => {
                self.truncate(node, part, after, records)
            }
            ReplicaCommand::InstallSnapshot { lsn } => self.install(node, part, lsn),
            ReplicaCommand::Ack { stream, lsn } => self.send(stream, true, Message::Ack(lsn)),
            ReplicaCommand::SendRecorded { stream, leader_epoch, isr_epoch } => {
                self.send(stream, true, Message::Recorded { leader_epoch, isr_epoch });
            }
            ReplicaCommand::ReportFailure { stream, reason } => {
                self.send(stream, true, Message::Failure(reason));
                self.close_link(stream, Some(node));
                self.nodes[node].parts[part].link = None;
            }
            ReplicaCommand::Commit { lsn } => {
                let disk = &self.nodes[node].parts[part].disk;
                self.checker.replica_committed(node, part, lsn.0, disk);
            }
            ReplicaCommand::CaughtUp => {}
            ReplicaCommand::Accepted { epoch } => self.partition_accepted(node, epoch, None),
            ReplicaCommand::AcceptRefused { epoch, reason }
            | ReplicaCommand::InstallRefused { epoch, reason } => {
                self.partition_accepted(node, epoch, Some(reason));
            }
            ReplicaCommand::Installed { epoch } => self.partition_accepted(node, epoch, None),
        }
    }

    fn truncate(&mut self, node: usize, part: usize, after: Lsn, records: u64) {
        self.note(format!(
            "n{node} p{part}: starts cutting its log back to {after}, {records} records"
        ));
        self.change_log(node, part, LogChange::Cut { after });
    }

    fn install(&mut self, node: usize, part: usize, lsn: Lsn) {
        let link = self.nodes[node].parts[part].link;
        let entries = link.and_then(|id| self.links.get_mut(&id)?.snapshot.take());
        let Some(entries) = entries else { return };
        self.note(format!("n{node} p{part}: starts installing a snapshot at {lsn}"));
        self.change_log(node, part, LogChange::Install { lsn, entries });
    }

    fn change_log(&mut self, node: usize, part: usize, change: LogChange) {
        let latency = self.disk_latency(node);
        let incarnation = self.nodes[node].incarnation;
        self.nodes[node].parts[part].log_changes += 1;
        self.schedule(latency, Event::LogChanged { node, incarnation, part, change });
    }

    /// The cut or install is on disk, whatever became of the stream that asked (and even if
    /// the partition leads by now: the runtime's task finishes all the same).
    fn log_changed(&mut self, node: usize, part: usize, change: LogChange) {
        let target = &mut self.nodes[node].parts[part];
        target.log_changes -= 1;
        let disk = &mut target.disk;
        disk.generation += 1;
        let event = match change {
            LogChange::Cut { after } => {
                disk.log.truncate(usize::try_from(after.0).expect("fits"));
                disk.durable = disk.durable.min(after.0);
                ReplicaEvent::Truncated { lsn: after, epoch: disk.epoch_at(after.0) }
            }
            LogChange::Install { lsn, entries } => {
                disk.log = entries;
                disk.log.truncate(usize::try_from(lsn.0).expect("fits"));
                disk.durable = lsn.0;
                disk.floor = lsn.0;
                disk.start = lsn.0;
                ReplicaEvent::SnapshotInstalled { lsn, epoch: disk.epoch_at(lsn.0) }
            }
        };
        self.note(format!("n{node} p{part}: log changed: {event:?}"));
        self.replica_step(node, part, event);
        self.drain_backlog_of(node, part);
    }

    // ----- the control plane -----

    fn tick(&mut self, node: usize, incarnation: u64) {
        self.schedule(TICK_US, Event::Tick { node, incarnation });
        if self.config.failover == Failover::Automatic {
            self.failover_tick(node);
        }
        match self.nodes[node].role {
            Role::Leader => self.leader_tick(node),
            Role::Follower { leader } | Role::Learner { leader } => {
                self.heartbeat(node, leader);
                self.connect(node, leader);
            }
            Role::Admin => {}
        }
    }

    fn leader_tick(&mut self, node: usize) {
        let now = self.node_now(node);
        let mutations = self.config.mutations;
        let expired = self.nodes[node]
            .membership
            .as_mut()
            .map(|membership| membership.expire(now, TIMEOUT_MS, mutations))
            .unwrap_or_default();
        for name in expired {
            self.note(format!("n{node}: {name} timed out"));
            if let Some(member) = self.node_named(&name) {
                self.checker.timed_out(node, member, self.now, TIMEOUT_MS);
            }
            for part in 0..self.config.partitions {
                self.leader_step(node, part, LeaderEvent::MemberTimedOut { name: name.clone() });
            }
        }
        for part in 0..self.config.partitions {
            self.leader_step(node, part, LeaderEvent::Tick);
            self.check_stall(node, part);
        }
    }

    /// Liveness: a leader that takes writes holds none of them too long. Under the controller
    /// the clock runs only while the leader's lease runs (it takes writes) and it reaches a
    /// controller's leader that can commit: without one, no change of its sets can take
    /// effect, and it waits for the followers it lost.
    fn check_stall(&mut self, node: usize, part: usize) {
        let resumed = self.nodes[node].resumed_at_us;
        let now = self.now;
        let served = self.serves_under_lease(node) && self.controller_answers(node);
        let limit =
            if self.controller.is_some() { CONTROLLED_STALL_LIMIT_US } else { STALL_LIMIT_US };
        let target = &mut self.nodes[node].parts[part];
        let Machine::Leader(leader) = &target.machine else { return };
        if !leader.accepts_writes() || !served {
            target.accepting_since_us = None;
            return;
        }
        let since = *target.accepting_since_us.get_or_insert(now);
        let Some(oldest) = target.pending.front().copied() else { return };
        let waited = now - oldest.submitted_us.max(resumed).max(since);
        if waited > limit {
            let message = format!(
                "n{node} takes writes on partition {part} but has held LSN {} for {} ms \
                 (commit {})",
                oldest.lsn,
                waited / 1000,
                leader.commit()
            );
            self.checker.stalled(message);
        }
    }

    fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.member.name == name)
    }

    fn heartbeat(&mut self, node: usize, leader: usize) {
        if self.now < self.nodes[node].next_heartbeat_us {
            return;
        }
        self.nodes[node].next_heartbeat_us = self.now + HEARTBEAT_MS * 1000;
        if !self.reachable(node, leader) || self.nodes[leader].role != Role::Leader {
            return;
        }
        let now = self.node_now(leader);
        let member = self.nodes[node].member.clone();
        let Some(membership) = self.nodes[leader].membership.as_mut() else { return };
        if membership.heartbeat(&member.name, &member.address, now).is_ok() {
            self.checker.heard(leader, node, self.now);
        }
    }

    /// Opens a stream for every partition without one, when its log allows a subscription.
    fn connect(&mut self, node: usize, leader: usize) {
        let kind =
            if self.nodes[node].learner { ReplicaKind::Learner } else { ReplicaKind::Follower };
        for part in 0..self.config.partitions {
            let target = &self.nodes[node].parts[part];
            if target.link.is_some() || self.now < target.reconnect_at_us {
                continue;
            }
            let Machine::Replica(replica) = &target.machine else { continue };
            if !self.reachable(node, leader) || self.nodes[leader].role != Role::Leader {
                continue;
            }
            let Some(from) = replica.subscription() else { continue };
            let subscription = Subscription {
                member: self.nodes[node].member.clone(),
                kind,
                last_lsn: from.last_lsn,
                last_epoch: from.last_epoch,
                history: from.history,
                floor: from.floor,
                fence: from.fence,
            };
            let id = self.open_link(node, leader, part);
            self.nodes[node].parts[part].link = Some(id);
            self.replica_step(node, part, ReplicaEvent::StreamOpened { stream: id });
            self.send(id, true, Message::Subscribe(Box::new(subscription)));
        }
    }

    /// The node stops leading: its partitions become replicas of nothing, its streams close,
    /// and the writes it had not answered fail.
    fn step_down(&mut self, node: usize) {
        if self.nodes[node].role == Role::Leader {
            self.note(format!("n{node}: no longer leads"));
        }
        self.nodes[node].role = Role::Admin;
        self.nodes[node].membership = None;
        let mutations = self.config.mutations;
        for part in 0..self.config.partitions {
            let target = &mut self.nodes[node].parts[part];
            if let Machine::Leader(leader) = &target.machine {
                let commit = leader.commit().0;
                let requested = &target.facts_requested;
                target.machine = replica_machine(part, &target.disk, requested, commit, mutations);
                target.open.clear();
                target.pending.clear();
            }
        }
        let led: Vec<u64> =
            self.links.iter().filter(|(_, link)| link.leader == node).map(|(id, _)| *id).collect();
        for id in led {
            self.close_link(id, Some(node));
        }
    }

    /// The operator points `node` at the leader `leader`.
    fn repoint(&mut self, node: usize, leader: usize) {
        if node == leader
            || !self.reachable(node, leader)
            || self.nodes[leader].role != Role::Leader
        {
            return;
        }
        if self.nodes[node].role == Role::Leader {
            self.step_down(node);
        }
        let learner = self.nodes[node].learner;
        let role = if learner { ClusterRole::Learner } else { ClusterRole::Follower };
        let now = self.node_now(leader);
        let member = self.nodes[node].member.clone();
        let Some(membership) = self.nodes[leader].membership.as_mut() else { return };
        if let Err(error) = membership.register(&member.name, role, &member.address, now) {
            self.note(format!("n{node}: registration with n{leader} refused: {}", error.message));
            return;
        }
        self.checker.heard(leader, node, self.now);
        self.note(format!("n{node}: follows n{leader}"));
        self.nodes[node].role =
            if learner { Role::Learner { leader } } else { Role::Follower { leader } };
        self.nodes[node].next_heartbeat_us = self.now + HEARTBEAT_MS * 1000;
        for part in 0..self.config.partitions {
            if let Some(id) = self.nodes[node].parts[part].link {
                self.close_link(id, Some(node));
                self.replica_closed(node, part, id);
            }
            self.nodes[node].parts[part].reconnect_at_us = self.now;
        }
    }

    /// The leader removes `member` from its membership; the member goes back to admin.
    fn remove(&mut self, leader: usize, member: usize) {
        let name = self.nodes[member].member.name.clone();
        let Some(membership) = self.nodes[leader].membership.as_mut() else { return };
        if membership.remove(&name).is_err() {
            return;
        }
        self.note(format!("n{leader}: removes {name}"));
        for part in 0..self.config.partitions {
            self.leader_step(leader, part, LeaderEvent::MemberTimedOut { name: name.clone() });
        }
        if self.reachable(leader, member) && self.nodes[member].role != Role::Leader {
            self.nodes[member].role = Role::Admin;
            for part in 0..self.config.partitions {
                if let Some(id) = self.nodes[member].parts[part].link {
                    self.close_link(id, Some(member));
                    self.replica_closed(member, part, id);
                }
            }
        }
    }

    /// The running leader with the newest epoch, if any is not fenced.
    fn current_leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|node| self.nodes[*node].running() && self.nodes[*node].role == Role::Leader)
            .filter_map(|node| match &self.nodes[node].parts[0].machine {
                Machine::Leader(leader) if leader.fenced_by().is_none() => {
                    Some((leader.epoch(), node))
                }
                _ => None,
            })
            .max()
            .map(|(_, node)| node)
    }

    // ----- promotion -----

    fn plan_for(&mut self, candidate: usize, force: bool) -> Result<PromotionPlan, String> {
        let guard =
            if force { Guard::Forced { salt: self.random.next_u64() } } else { Guard::Checked };
        self.plan_with(candidate, guard)
    }

    /// The candidate's promotion plan from the reports of every node it reaches.
    fn plan_with(&self, candidate: usize, guard: Guard) -> Result<PromotionPlan, String> {
        let own = self.nodes[candidate].report();
        let others: Vec<_> = (0..self.nodes.len())
            .filter(|other| *other != candidate && self.reachable(candidate, *other))
            .map(|other| self.nodes[other].report())
            .collect();
        plan_promotion(&own, &others, guard, self.config.min_insync, self.config.mutations)
            .map_err(|refusal| refusal.to_string())
    }

    /// A forced promotion loses writes by the operator's choice; the operator forces only
    /// when every other node answers (as `docs/admin-api.md` asks of operators): a member that
    /// did not hear of the forced epoch could later lead the old history again.
    fn may_force(&self, candidate: usize) -> bool {
        (0..self.nodes.len()).all(|node| node == candidate || self.reachable(candidate, node))
    }

    fn start_promotion(&mut self, candidate: usize) {
        self.promote(candidate, false);
    }

    fn promote(&mut self, candidate: usize, force: bool) {
        if !self.in_flight.is_empty()
            || !self.nodes[candidate].running()
            || self.nodes[candidate].learner
        {
            return;
        }
        let plan = match self.plan_for(candidate, force) {
            Ok(plan) => plan,
            Err(refusal) => {
                self.note(format!("n{candidate}: promotion refused: {refusal}"));
                if !force && self.random.chance(1, 6) && self.may_force(candidate) {
                    self.note(format!("n{candidate}: the operator forces it"));
                    self.promote(candidate, true);
                }
                return;
            }
        };
        if plan.forced {
            self.checker.forcing = true;
        }
        self.launch_promotion(candidate, plan, None);
    }

    /// Asks every member the plan requires to accept its epoch (phase one).
    fn launch_promotion(
        &mut self,
        candidate: usize,
        plan: PromotionPlan,
        appointed: Option<Epoch>,
    ) {
        let id = self.next_promotion;
        self.next_promotion += 1;
        self.note(format!(
            "n{candidate}: promotion {id} to epoch {} asks {:?}",
            plan.epoch, plan.required
        ));
        let mut waiting: BTreeSet<usize> =
            plan.required.iter().filter_map(|name| self.node_named(name)).collect();
        waiting.insert(candidate);
        for node in waiting.clone() {
            let delay = if node == candidate { 0 } else { self.latency() };
            let incarnation = self.nodes[node].incarnation;
            self.schedule(delay, Event::AcceptArrives { promotion: id, node, incarnation });
        }
        let asked = waiting.clone();
        let promotion =
            Promotion { id, candidate, plan, waiting, installing: false, asked, appointed };
        self.in_flight.insert(id, promotion);
        self.schedule(1_000_000, Event::PromotionDeadline { promotion: id });
    }

    fn accept_arrives(&mut self, promotion: u64, node: usize) {
        let Some(current) = self.in_flight.get(&promotion).cloned() else { return };
        if self.nodes[node].accepting.is_some() {
            self.answer(node, promotion, current.candidate, Some("busy with another".into()));
            return;
        }
        let epoch = current.plan.epoch;
        if let Err(reason) = self.leader_yields(node, epoch, &current.plan.basis) {
            self.answer(node, promotion, current.candidate, Some(reason));
            return;
        }
        if self.nodes[node].role == Role::Leader {
            for part in 0..self.config.partitions {
                self.leader_step(node, part, LeaderEvent::NewerEpoch { epoch });
            }
            self.step_down(node);
        }
        self.nodes[node].accepting = Some(Accepting {
            promotion,
            promoter: current.candidate,
            epoch,
            remaining: self.config.partitions,
            refused: None,
        });
        for part in 0..self.config.partitions {
            let basis = current.plan.basis.get(&partition_id(part)).copied().flatten();
            let event = ReplicaEvent::AcceptEpoch { epoch, basis };
            self.replica_step(node, part, event);
        }
    }

    /// Whether every partition `node` leads yields to a promotion at `epoch` (as the runtime
    /// checks before any partition steps down).
    fn leader_yields(
        &self,
        node: usize,
        epoch: Epoch,
        basis: &BTreeMap<PartitionId, Option<(Epoch, u64)>>,
    ) -> Result<(), String> {
        for (part, slot) in self.nodes[node].parts.iter().enumerate() {
            if let Machine::Leader(leader) = &slot.machine {
                let partition_basis = basis.get(&partition_id(part)).copied().flatten();
                leader.yields_to(epoch, partition_basis)?;
            }
        }
        Ok(())
    }

    /// Phase two: every member asked is fenced; `node` records the new leader's first sets.
    fn install_arrives(&mut self, promotion: u64, node: usize) {
        let Some(current) = self.in_flight.get(&promotion).cloned() else { return };
        if self.nodes[node].accepting.is_some() {
            self.answer(node, promotion, current.candidate, Some("busy with another".into()));
            return;
        }
        self.nodes[node].accepting = Some(Accepting {
            promotion,
            promoter: current.candidate,
            epoch: current.plan.epoch,
            remaining: self.config.partitions,
            refused: None,
        });
        for part in 0..self.config.partitions {
            let set = current.plan.sets[&partition_id(part)].clone();
            self.replica_step(node, part, ReplicaEvent::InstallInSyncSet { set });
        }
    }

    /// One partition of `node` accepted (or refused) the promotion's epoch.
    fn partition_accepted(&mut self, node: usize, epoch: Epoch, refusal: Option<String>) {
        let Some(accepting) = self.nodes[node].accepting.as_mut() else { return };
        if accepting.epoch != epoch {
            return;
        }
        if let Some(refusal) = refusal {
            let (promotion, promoter) = (accepting.promotion, accepting.promoter);
            self.nodes[node].accepting = None;
            self.answer(node, promotion, promoter, Some(refusal));
            return;
        }
        accepting.remaining -= 1;
        if accepting.remaining == 0 {
            let (promotion, promoter) = (accepting.promotion, accepting.promoter);
            self.nodes[node].accepting = None;
            self.answer(node, promotion, promoter, None);
        }
    }

    fn answer(&mut self, node: usize, promotion: u64, promoter: usize, refusal: Option<String>) {
        if !self.reachable(node, promoter) {
            return;
        }
        let delay = if node == promoter { 0 } else { self.latency() };
        let incarnation = self.nodes[promoter].incarnation;
        self.schedule(delay, Event::AcceptAnswer { promotion, node, incarnation, refusal });
        let _ = incarnation;
    }

    fn accept_answer(&mut self, promotion: u64, node: usize, refusal: Option<String>) {
        let Some(current) = self.in_flight.get_mut(&promotion) else { return };
        if let Some(refusal) = refusal {
            self.abort_promotion(promotion, format!("n{node}: {refusal}"));
            return;
        }
        current.waiting.remove(&node);
        if !current.waiting.is_empty() {
            return;
        }
        if current.installing {
            let current = self.in_flight.remove(&promotion).expect("in flight");
            self.become_leader(current);
            return;
        }
        current.installing = true;
        current.waiting = current.asked.clone();
        let (candidate, asked) = (current.candidate, current.asked.clone());
        for node in asked {
            let delay = if node == candidate { 0 } else { self.latency() };
            let incarnation = self.nodes[node].incarnation;
            self.schedule(delay, Event::InstallArrives { promotion, node, incarnation });
        }
    }

    fn abort_promotion(&mut self, promotion: u64, reason: String) {
        if let Some(current) = self.in_flight.remove(&promotion) {
            self.note(format!(
                "promotion {} of n{} fails: {reason}",
                current.id, current.candidate
            ));
            if current.plan.forced {
                self.rebase_on(current.candidate);
            }
            if current.appointed.is_some() {
                self.nodes[current.candidate].failover.status = Some(AppointedStatus::Failed);
            }
        }
    }

    /// After a forced promotion of `node`, the acknowledged history is what its log agrees
    /// with: the rest was given up.
    fn rebase_on(&mut self, node: usize) {
        for part in 0..self.config.partitions {
            let target = &self.nodes[node].parts[part];
            self.checker.forced(part, &target.disk, target.commit());
        }
        self.checker.forcing = false;
    }

    fn become_leader(&mut self, promotion: Promotion) {
        let node = promotion.candidate;
        if promotion.appointed.is_some() {
            // Until it leads: an appointee that returns half-way answers that it failed.
            self.nodes[node].failover.status = Some(AppointedStatus::Failed);
        }
        if !self.nodes[node].running() {
            return;
        }
        let epoch = promotion.plan.epoch;
        let followed: Vec<u64> =
            self.links.iter().filter(|(_, link)| link.replica == node).map(|(id, _)| *id).collect();
        for id in followed {
            let part = self.links[&id].part;
            self.close_link(id, Some(node));
            self.replica_closed(node, part, id);
        }
        let now = self.moment();
        for part in 0..self.config.partitions {
            let set = promotion.plan.sets[&partition_id(part)].clone();
            let config = LeaderConfig {
                me: self.nodes[node].member.clone(),
                min_insync: self.config.min_insync,
                progress_timeout_ms: TIMEOUT_MS,
                controlled: self.config.failover == Failover::Automatic,
                mutations: self.config.mutations,
            };
            let target = &mut self.nodes[node].parts[part];
            let Machine::Replica(replica) = &target.machine else { return };
            target.machine = leader_machine(part, replica, epoch, set, config, now);
        }
        for part in 0..self.config.partitions {
            let target = &self.nodes[node].parts[part];
            let (last, durable, commit) =
                (target.disk.last(), target.disk.durable, target.commit());
            self.note(format!(
                "n{node} p{part}: leads with log {last}, durable {durable}, commit {commit}"
            ));
        }
        if promotion.plan.forced {
            let behind = promotion.plan.records_behind;
            self.note(format!("n{node}: forced to lead; up to {behind} records may be lost"));
            self.rebase_on(node);
        }
        let member = self.nodes[node].member.clone();
        self.nodes[node].role = Role::Leader;
        self.nodes[node].membership =
            Some(Membership::new(member.name, member.address, FOLLOWERS_MAX, LEARNERS_MAX));
        self.checker.new_leader(epoch, node);
        self.promotions += 1;
        self.note(format!("n{node}: leads at epoch {epoch}"));
        if let Some(appointed) = promotion.appointed {
            self.led_appointed(node, epoch, appointed);
        }
    }

    // ----- faults and the operator -----

    fn nemesis(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        let delay = self.random.between(100_000, 600_000);
        self.schedule(delay, Event::Nemesis);
        if self.checker.forcing {
            // The operator lets a forced promotion finish before anything else happens.
            return;
        }
        let node = self.random.index(self.nodes.len());
        let heal = self.random.between(50_000, 3_000_000);
        match self.random.below(30) {
            0..=2 => self.crash(node, heal),
            3..=5 => self.pause(node, heal),
            6..=7 => self.isolate(node, heal),
            8..=10 => self.drop_a_link(),
            11 => {
                self.nodes[node].slow_disk = true;
                self.schedule(heal, Event::DiskNormal { node });
            }
            12 => self.fail_a_log(node),
            13 => {
                let step = i64::try_from(self.random.between(1_000, 3_600_000)).expect("small");
                let sign = if self.random.chance(1, 2) { 1 } else { -1 };
                self.nodes[node].wall_offset_ms += sign * step;
                self.note(format!("n{node}: wall clock steps {} ms", sign * step));
            }
            14..=15 => self.write_snapshot(node),
            choice @ 16..=29 if self.config.failover == Failover::Automatic => {
                self.controller_nemesis(choice - 16, heal);
            }
            16..=20 => {
                let candidate = self.random.index(self.config.voters);
                self.start_promotion(candidate);
            }
            21..=27 => {
                if let Some(leader) = self.current_leader() {
                    self.repoint(node, leader);
                }
            }
            _ => {
                if let Some(leader) = self.current_leader().filter(|leader| *leader != node) {
                    if self.random.chance(1, 3) {
                        self.remove(leader, node);
                    }
                }
            }
        }
    }

    fn crash(&mut self, node: usize, heal: u64) {
        if !self.nodes[node].up {
            return;
        }
        self.note(format!("n{node}: crashes"));
        let target = &mut self.nodes[node];
        target.up = false;
        target.paused = false;
        target.incarnation += 1;
        target.stashed.clear();
        target.role = Role::Admin;
        target.membership = None;
        target.accepting = None;
        for part in &mut target.parts {
            part.disk.crash();
            part.open.clear();
            part.pending.clear();
            part.flush_scheduled = false;
            part.syncing = false;
            part.facts_writing = false;
            part.facts_queued = None;
            part.facts_requested = part.disk.facts.clone();
            part.link = None;
            part.failed_at_us = None;
            part.log_changes = 0;
        }
        let touching: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, link)| link.replica == node || link.leader == node)
            .map(|(id, _)| *id)
            .collect();
        for id in touching {
            self.close_link(id, Some(node));
        }
        let candidate_of: Vec<u64> = self
            .in_flight
            .values()
            .filter(|promotion| promotion.candidate == node)
            .map(|promotion| promotion.id)
            .collect();
        for promotion in candidate_of {
            self.abort_promotion(promotion, "the candidate crashed".into());
        }
        self.nodes[node].failover = crate::node::FailoverMemory::default();
        if let Some(controller) = self.controller.as_mut() {
            controller.crashed(node);
        }
        self.schedule(heal, Event::Restart { node });
    }

    fn restart(&mut self, node: usize) {
        if self.nodes[node].up {
            return;
        }
        self.note(format!("n{node}: restarts"));
        let mutations = self.config.mutations;
        let target = &mut self.nodes[node];
        target.up = true;
        target.resumed_at_us = self.now;
        for (index, part) in target.parts.iter_mut().enumerate() {
            let commit = part.disk.recovered_commit();
            part.machine = replica_machine(index, &part.disk, &part.disk.facts, commit, mutations);
        }
        let incarnation = target.incarnation;
        self.schedule(0, Event::Tick { node, incarnation });
    }

    fn pause(&mut self, node: usize, heal: u64) {
        if !self.nodes[node].running() {
            return;
        }
        self.note(format!("n{node}: paused"));
        self.nodes[node].paused = true;
        self.schedule(heal, Event::Resume { node });
    }

    fn resume(&mut self, node: usize) {
        let target = &mut self.nodes[node];
        if !target.paused {
            return;
        }
        target.paused = false;
        target.resumed_at_us = self.now;
        let stashed = std::mem::take(&mut target.stashed);
        self.note(format!("n{node}: resumes"));
        for event in stashed {
            self.schedule(0, event);
        }
    }

    fn isolate(&mut self, node: usize, heal: u64) {
        self.note(format!("n{node}: cut off from the others"));
        for other in 0..self.nodes.len() {
            if other != node {
                let pair = (node.min(other), node.max(other));
                self.cut.insert(pair);
                self.schedule(heal, Event::Rejoin { first: pair.0, second: pair.1 });
            }
        }
        let crossing: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, link)| {
                (link.open[0] || link.open[1]) && (link.replica == node || link.leader == node)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in crossing {
            self.close_link(id, None);
        }
    }

    fn drop_a_link(&mut self) {
        let open: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, link)| link.open[0] && link.open[1])
            .map(|(id, _)| *id)
            .collect();
        if !open.is_empty() {
            let id = open[self.random.index(open.len())];
            self.note(format!("stream {id} breaks"));
            self.close_link(id, None);
        }
    }

    /// A replica partition's log fails (at most once a run).
    fn fail_a_log(&mut self, node: usize) {
        let replica = matches!(self.nodes[node].role, Role::Follower { .. } | Role::Learner { .. });
        if self.wal_failures > 0 || !replica || !self.nodes[node].running() {
            return;
        }
        let part = self.random.index(self.config.partitions);
        self.wal_failures += 1;
        self.note(format!("n{node} p{part}: its log fails"));
        let target = &mut self.nodes[node].parts[part];
        target.disk.failed = true;
        target.failed_at_us = Some(self.now);
        let reason = "injected write failure".to_string();
        self.replica_step(node, part, ReplicaEvent::WalFailed { reason });
    }

    fn write_snapshot(&mut self, node: usize) {
        if !self.nodes[node].running() {
            return;
        }
        let part = self.random.index(self.config.partitions);
        let target = &mut self.nodes[node].parts[part];
        let lsn = target.disk.durable;
        // The runtime writes a snapshot with the log in hand, which a cut or an install in
        // flight holds.
        if lsn <= target.disk.floor || target.disk.failed || target.log_changes > 0 {
            return;
        }
        target.disk.floor = lsn;
        target.disk.start = lsn;
        if let Machine::Replica(replica) = &mut target.machine {
            replica.snapshot_written(Lsn(lsn));
        }
    }

    fn start_liveness(&mut self) {
        self.note("every fault heals".into());
        self.phase = Phase::Liveness;
        self.liveness_started = self.now;
        self.acknowledged_at_liveness = self.checker.acknowledged;
        self.cut.clear();
        for node in 0..self.nodes.len() {
            self.nodes[node].slow_disk = false;
            if self.nodes[node].parts.iter().any(|part| part.disk.failed) {
                self.crash(node, 0);
            }
            if !self.nodes[node].up {
                self.restart(node);
            }
            self.resume(node);
        }
    }

    /// The operator's round: a leader exists, and every other node follows it.
    fn repair(&mut self) {
        self.schedule(300_000, Event::Repair);
        let Some(leader) = self.current_leader() else {
            if self.phase == Phase::Liveness && self.in_flight.is_empty() {
                let candidate = (0..self.config.voters).find(|node| {
                    self.nodes[*node].running() && self.plan_for(*node, false).is_ok()
                });
                if let Some(candidate) = candidate {
                    self.start_promotion(candidate);
                }
            }
            return;
        };
        if self.phase == Phase::Safety && self.now > 100_000 {
            return;
        }
        for node in 0..self.nodes.len() {
            let name = &self.nodes[node].member.name;
            let registered = self.nodes[leader]
                .membership
                .as_ref()
                .is_some_and(|membership| membership.get(name).is_some());
            let following = registered
                && matches!(self.nodes[node].role,
                    Role::Follower { leader: of } | Role::Learner { leader: of } if of == leader);
            if node != leader && !following && self.nodes[node].running() {
                self.repoint(node, leader);
            }
        }
    }

    fn judge_liveness(&mut self) {
        if self.checker.violation.is_some() {
            return;
        }
        if self.current_leader().is_none() {
            self.checker.stalled("no leader after every fault healed".into());
            return;
        }
        if self.checker.acknowledged == self.acknowledged_at_liveness {
            self.checker.stalled("no write acknowledged after every fault healed".into());
        }
    }
}
