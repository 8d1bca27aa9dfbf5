//! The nemesis: faults thrown one at a time at random moments, each healed after a random
//! time. The schedule (which fault, which node, how long the quiet before it, how long it
//! lasts, in what form) comes from a seeded [`StdRng`] and draws the same numbers whatever the
//! cluster does, so one seed and one set of fault kinds give one schedule. What the operator
//! does in reply depends on the cluster.
//!
//! Faults:
//! - **kill**: SIGKILL, restarted at the end of the fault (the operator then gives it its role
//!   again);
//! - **pause**: SIGSTOP, SIGCONT at the end; past the heartbeat timeout half the time;
//! - **partition**: the node's peer links ([`crate::links`]), all of them or only those with one
//!   other node, cut, blackholed, held one way or delayed; past the heartbeat timeout half
//!   the time;
//! - **isolate**: every TCP packet to or from the node dropped by nftables (clients and the
//!   operator cut off too; only as root with nftables, [`crate::firewall`]); lengths as
//!   pauses;
//! - **disk-full**: the node's tmpfs filled to the last byte by a ballast file, removed at
//!   the end (only when the harness could mount one, as root);
//! - **clock-step**: the node's wall clock stepped minutes forward or back through
//!   libfaketime, put back at the end (only when libfaketime is installed);
//! - **remove**: a follower or learner removed by the operator on the leader, added back
//!   (pointed at the leader again) at the end;
//! - **stale-promotion** (manual failover only): a follower paused past the heartbeat timeout
//!   (it drops out of the in-sync set while writes go on); at the end the leader is killed,
//!   the follower resumed, and the operator told to try promoting that follower first. The
//!   promotion guard must refuse it; with the guard taken out (`--mutation
//!   promote-out-of-sync`) the checker finds the writes it loses. The killed leader is
//!   restarted a few seconds later.
//! - **transfer** (automatic failover only): a planned transfer of the leadership to a
//!   follower (`POST /admin/leader/transfer`, sent to any member);
//! - **stale-appointment** (automatic failover only), the automatic form of a stale
//!   promotion: the follower leading the controller's Raft stops streaming from the leader
//!   (the connections it opens to the leader are cut; the controller keeps its majority and
//!   confirms the leader's lease) until it drops out of the in-sync set; at the end the
//!   leader is killed and the new connections the stale follower opens to the other
//!   follower are refused for 7 s (the controller's Raft goes on over the connection it
//!   holds, so it keeps its majority, but the other follower's replication report never
//!   comes). The controller must not appoint the stale follower, the only voter that
//!   answers, and waits for the other; with `--mutation promote-out-of-sync` it appoints
//!   it, and the checker finds the writes lost. The leader is restarted 10 s after its
//!   death, and no fault is thrown before then.
//!
//! With automatic failover, pauses, partitions and isolations are drawn shorter than ¾ of
//! `failover_timeout` or longer than it by 0.5 s or more (the heartbeat timeout with manual
//! failover), and partitions are nftables rules instead of proxies ([`crate::links`]): they
//! cut, blackhole or hold one way, never delay.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::{Cluster, Failover, Kind};
use crate::proxy::Mode;
use crate::timeline::Timeline;

/// Quiet time between two faults, in milliseconds.
const QUIET_MS: std::ops::Range<u64> = 1_000..4_000;

/// How long a killed node stays dead, in milliseconds.
const KILL_MS: std::ops::Range<u64> = 1_000..6_000;

/// How long a disk stays full, in milliseconds.
const DISK_FULL_MS: std::ops::Range<u64> = 1_000..8_000;

/// How long a clock stays stepped, in milliseconds.
const CLOCK_STEP_MS: std::ops::Range<u64> = 2_000..10_000;

/// How long a killed leader stays dead after a stale promotion, in milliseconds.
const STALE_LEADER_DEAD_MS: u64 = 3_000;

/// How long the stale follower's new connections to the in-sync one are refused after a
/// stale appointment's leader is killed: longer than a member waits for another's answer
/// (3 s) twice over, for the replication reports the controller decides on and those the
/// appointee's promotion asks for again.
const STALE_APPOINTMENT_REFUSAL_MS: u64 = 7_000;

/// How long a stale appointment's leader stays dead: past the refusal, so that the
/// controller decides between the two followers alone.
const STALE_APPOINTMENT_DEAD_MS: u64 = 10_000;

/// How far a clock is stepped, in seconds either way.
const CLOCK_STEP_SECONDS: std::ops::Range<u64> = 30..3_600;

/// How long a delayed link holds each chunk, in milliseconds.
const LINK_DELAY_MS: std::ops::Range<u64> = 20..500;

/// What the nemesis can do to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL, then a restart.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// The node's peer links cut, blackholed, held one way or delayed.
    Partition,
    /// Every packet to or from the node dropped.
    Isolate,
    /// The node's data filesystem full.
    DiskFull,
    /// The node's wall clock stepped.
    ClockStep,
    /// A follower paused past the timeout, then the leader killed and the follower offered
    /// for promotion first.
    StalePromotion,
    /// A follower or learner removed by the operator (`DELETE /admin/node/<name>` on the
    /// leader), added back at the end. With automatic failover any node (the leader hands
    /// over first), removed through any member, given a role again at the end.
    Remove,
    /// A planned transfer of the leadership to a follower (automatic failover).
    Transfer,
    /// The follower leading the controller cut from the leader's stream until it is out of
    /// sync, then the other follower paused and the leader killed (automatic failover).
    StaleAppointment,
}

impl Fault {
    /// Every kind, those of one failover mode in the order its schedules draw from.
    pub const ALL: [Fault; 10] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Partition,
        Fault::Isolate,
        Fault::DiskFull,
        Fault::ClockStep,
        Fault::StalePromotion,
        Fault::Remove,
        Fault::Transfer,
        Fault::StaleAppointment,
    ];

    /// The kinds thrown with manual failover (the order of the schedules of earlier runs).
    pub const MANUAL: [Fault; 8] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Partition,
        Fault::Isolate,
        Fault::DiskFull,
        Fault::ClockStep,
        Fault::StalePromotion,
        Fault::Remove,
    ];

    /// The kinds thrown with automatic failover.
    pub const AUTOMATIC: [Fault; 9] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Partition,
        Fault::Isolate,
        Fault::DiskFull,
        Fault::ClockStep,
        Fault::Remove,
        Fault::Transfer,
        Fault::StaleAppointment,
    ];

    /// The kinds thrown with `failover` when none are asked for.
    #[must_use]
    pub fn defaults(failover: Failover) -> &'static [Fault] {
        match failover {
            Failover::Manual => &Fault::MANUAL,
            Failover::Automatic => &Fault::AUTOMATIC,
        }
    }

    /// Whether it can be thrown at a cluster with `failover`.
    #[must_use]
    pub fn fits(self, failover: Failover) -> bool {
        Fault::defaults(failover).contains(&self)
    }

    /// The name in the timeline and on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Isolate => "isolate",
            Fault::DiskFull => "disk-full",
            Fault::ClockStep => "clock-step",
            Fault::StalePromotion => "stale-promotion",
            Fault::Remove => "remove",
            Fault::Transfer => "transfer",
            Fault::StaleAppointment => "stale-appointment",
        }
    }

    #[must_use]
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|fault| fault.name() == name)
    }

    /// How often it is drawn, relative to the others.
    fn weight(self) -> u32 {
        match self {
            Fault::Kill | Fault::Pause | Fault::Partition => 3,
            Fault::Isolate | Fault::Transfer => 2,
            Fault::DiskFull
            | Fault::ClockStep
            | Fault::StalePromotion
            | Fault::Remove
            | Fault::StaleAppointment => 1,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The form a fault takes, drawn with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Plain,
    /// A partition: what the node's links do; with `peer`, only the links between the two
    /// (the others pass).
    Link {
        mode: Mode,
        peer: Option<usize>,
    },
    /// A clock step, in seconds (negative: back).
    Step(i64),
}

/// One fault of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub fault: Fault,
    pub form: Form,
    pub node: usize,
    /// Another node drawn with it: the member a removal or a transfer is asked of.
    pub other: usize,
    /// Quiet time before it.
    pub quiet: Duration,
    pub length: Duration,
}

impl Planned {
    /// What the timeline says of it; `name_of` names a node by its index.
    fn describe(&self, name_of: impl Fn(usize) -> String) -> String {
        let length = self.length.as_millis();
        match self.form {
            Form::Plain if self.fault == Fault::Transfer => "planned".into(),
            Form::Plain => format!("for {length} ms"),
            Form::Link { mode, peer: None } => format!("{} for {length} ms", link_name(mode)),
            Form::Link { mode, peer: Some(peer) } => {
                format!("{} from {} only, for {length} ms", link_name(mode), name_of(peer))
            }
            Form::Step(seconds) => format!("{seconds:+} s for {length} ms"),
        }
    }
}

fn link_name(mode: Mode) -> String {
    match mode {
        Mode::Pass => "pass".into(),
        Mode::Delay(delay) => format!("delay {} ms", delay.as_millis()),
        Mode::Blackhole => "blackhole".into(),
        Mode::HoldForward => "nothing out".into(),
        Mode::HoldBackward => "nothing in".into(),
        Mode::Cut => "cut".into(),
    }
}

enum State {
    Quiet { until: Instant },
    Active { until: Instant, event: usize },
}

/// What the schedule draws from.
#[derive(Clone, Debug)]
pub struct Scope {
    pub node_count: usize,
    pub heartbeat_timeout_ms: u64,
    /// Manual failover, or automatic with this `failover_timeout` (pauses, partitions and
    /// isolations are drawn around it instead of the heartbeat timeout; no delays).
    pub failover: Failover,
    pub failover_timeout_ms: u64,
    /// The kinds of fault it throws.
    pub faults: Vec<Fault>,
}

impl Scope {
    /// The timeout pauses, partitions and isolations are drawn shorter and longer than: the
    /// one after which the cluster replaces a silent leader (by its operator or controller).
    fn replacement_timeout_ms(&self) -> u64 {
        match self.failover {
            Failover::Manual => self.heartbeat_timeout_ms,
            Failover::Automatic => self.failover_timeout_ms,
        }
    }
}

/// The nodes of a stale appointment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StaleAppointment {
    /// The follower leading the controller, made stale.
    stale: usize,
    /// The other follower, in sync; the stale one cannot reach it anew at the end.
    in_sync: usize,
    /// The data leader, killed at the end.
    leader: usize,
}

/// What a fault leaves to do after it ended, when its time comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FollowUp {
    Restart(usize),
    /// Every link passes again.
    Reconnect,
}

/// The fault schedule and the fault in progress.
pub struct Nemesis {
    random: StdRng,
    scope: Scope,
    planned: Planned,
    state: State,
    /// Faults thrown so far, by kind.
    pub thrown: BTreeMap<Fault, u64>,
    /// Nodes killed by a stale promotion, restarted when their time comes.
    revivals: Vec<(usize, Instant)>,
    /// The nodes of the stale appointment under way.
    appointment: Option<StaleAppointment>,
    /// What a stale appointment left to do; no fault is thrown until it is done.
    aftermath: Vec<(FollowUp, Instant)>,
}

impl Nemesis {
    /// A schedule from `seed`; `scope.faults` must not be empty.
    #[must_use]
    pub fn new(seed: u64, scope: Scope) -> Nemesis {
        assert!(!scope.faults.is_empty(), "a nemesis needs a fault to throw");
        let mut random = StdRng::seed_from_u64(seed);
        let planned = plan(&mut random, &scope);
        let state = State::Quiet { until: Instant::now() + planned.quiet };
        Nemesis {
            random,
            scope,
            planned,
            state,
            thrown: BTreeMap::new(),
            revivals: Vec::new(),
            appointment: None,
            aftermath: Vec::new(),
        }
    }

    /// Faults thrown so far.
    #[must_use]
    pub fn thrown_total(&self) -> u64 {
        self.thrown.values().sum()
    }

    /// Whether a fault is in progress (or what one left to do).
    #[must_use]
    pub fn active(&self) -> bool {
        matches!(self.state, State::Active { .. }) || !self.aftermath.is_empty()
    }

    /// The fault in progress, for progress lines.
    #[must_use]
    pub fn describe(&self, cluster: &Cluster) -> String {
        match self.state {
            State::Quiet { .. } => "none".into(),
            State::Active { .. } => {
                let name = &cluster.nodes[self.planned.node].name;
                format!("{} {name}", self.planned.fault.name())
            }
        }
    }

    /// Heals the fault whose time is up, or throws the next one when its quiet time is over
    /// (unless `may_throw` is false).
    pub fn tick(&mut self, cluster: &mut Cluster, timeline: &mut Timeline, may_throw: bool) {
        self.revive(cluster, timeline, false);
        self.follow_up(cluster, timeline, false);
        let now = Instant::now();
        match self.state {
            State::Active { until, event } if now >= until => {
                self.heal(cluster, timeline, event);
            }
            State::Quiet { until } if now >= until && may_throw && self.aftermath.is_empty() => {
                self.throw(cluster, timeline);
            }
            _ => {}
        }
    }

    /// Throws the planned fault, on the node it needs (drawing the next when there is none).
    fn throw(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        let Some(node) = self.target(cluster) else {
            // Nothing to do it to (no leader, or no answering follower).
            self.draw_next();
            return;
        };
        self.planned.node = node;
        let planned = self.planned;
        let name = cluster.nodes[planned.node].name.clone();
        let detail = planned.describe(|index| cluster.nodes[index].name.clone());
        let event = timeline.begin(planned.fault.name(), &name, &detail);
        match apply(cluster, &planned, self.appointment.as_ref()) {
            Ok(note) => timeline.note(event, &note),
            Err(error) => {
                timeline.end(event, &format!("could not be thrown: {error}"));
                self.appointment = None;
                self.draw_next();
                return;
            }
        }
        *self.thrown.entry(planned.fault).or_default() += 1;
        self.state = State::Active { until: Instant::now() + planned.length, event };
    }

    /// The node the planned fault hits: the one drawn, unless the fault needs a node of some
    /// kind (a follower, the follower leading the controller); None when there is none.
    fn target(&mut self, cluster: &Cluster) -> Option<usize> {
        let planned = self.planned;
        let automatic = self.scope.failover == Failover::Automatic;
        match planned.fault {
            Fault::StalePromotion => replica_to_hit(cluster, planned.node, true),
            Fault::Remove if !automatic => replica_to_hit(cluster, planned.node, false),
            Fault::Remove => any_other(cluster, planned.node, None),
            Fault::Transfer => replica_to_hit(cluster, planned.node, true),
            Fault::StaleAppointment => {
                self.appointment = stale_appointment(cluster);
                self.appointment.map(|appointment| appointment.stale)
            }
            _ => Some(planned.node),
        }
    }

    /// Ends the fault in progress, if any (a stale appointment only heals its links), restarts
    /// and resumes every node still to be, and draws the next.
    pub fn heal_active(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        if let State::Active { event, .. } = self.state {
            // A stale appointment cut short ends without killing anyone.
            self.appointment = None;
            self.heal(cluster, timeline, event);
        }
        self.revive(cluster, timeline, true);
        self.follow_up(cluster, timeline, true);
    }

    /// Carries out what a stale appointment left to do whose time came (all of it with
    /// `all`).
    fn follow_up(&mut self, cluster: &mut Cluster, timeline: &mut Timeline, all: bool) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) =
            self.aftermath.drain(..).partition(|(_, at)| all || *at <= now);
        self.aftermath = later;
        for (follow_up, _) in due {
            match follow_up {
                FollowUp::Restart(node) => {
                    let why = "leader killed by a stale appointment";
                    cluster.restart_recorded(node, timeline, why);
                }
                FollowUp::Reconnect => {
                    let event = timeline.begin("reconnect", "", "after a stale appointment");
                    if let Err(error) = cluster.heal_links() {
                        timeline.problem("", format!("healing a stale appointment: {error}"));
                    }
                    timeline.end(event, "");
                }
            }
        }
    }

    /// Restarts the nodes a stale promotion killed whose time came (all of them with `all`).
    fn revive(&mut self, cluster: &mut Cluster, timeline: &mut Timeline, all: bool) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) =
            self.revivals.drain(..).partition(|(_, at)| all || *at <= now);
        self.revivals = later;
        for (node, _) in due {
            cluster.restart_recorded(node, timeline, "leader killed by a stale promotion");
        }
    }

    fn heal(&mut self, cluster: &mut Cluster, timeline: &mut Timeline, event: usize) {
        let Planned { fault, node, .. } = self.planned;
        let name = cluster.nodes[node].name.clone();
        if let Some(appointment) = self.appointment.take() {
            match self.end_stale_appointment(cluster, appointment) {
                Ok(note) => timeline.note(event, &note),
                Err(error) => timeline.problem(&name, format!("ending {fault}: {error}")),
            }
            timeline.end(event, "");
            self.draw_next();
            return;
        }
        if fault == Fault::StalePromotion {
            if let Some(leader) = cluster.leader.filter(|&leader| leader != node) {
                cluster.kill(leader);
                let at = Instant::now() + Duration::from_millis(STALE_LEADER_DEAD_MS);
                self.revivals.push((leader, at));
            }
            cluster.preferred_candidate = Some(node);
        }
        let detail = match heal(cluster, fault, node) {
            Ok(detail) => detail.to_string(),
            Err(error) => {
                timeline.problem(&name, format!("healing {fault} of {name}: {error}"));
                format!("healing failed: {error}")
            }
        };
        timeline.end(event, &detail);
        self.draw_next();
    }

    /// Refuses the stale follower's new connections to the in-sync one, then kills the
    /// leader (in that order, so that no report of the in-sync follower reaches the
    /// controller after the leader's death); both end later.
    fn end_stale_appointment(
        &mut self,
        cluster: &mut Cluster,
        appointment: StaleAppointment,
    ) -> Result<String, String> {
        let StaleAppointment { stale, in_sync, leader } = appointment;
        cluster.heal_links().map_err(|error| error.to_string())?;
        cluster.refuse_new_connections(stale, in_sync).map_err(|error| error.to_string())?;
        let now = Instant::now();
        cluster.kill(leader);
        let reconnect_at = now + Duration::from_millis(STALE_APPOINTMENT_REFUSAL_MS);
        let restart_at = now + Duration::from_millis(STALE_APPOINTMENT_DEAD_MS);
        self.aftermath.push((FollowUp::Reconnect, reconnect_at));
        self.aftermath.push((FollowUp::Restart(leader), restart_at));
        let name = |index: usize| cluster.nodes[index].name.clone();
        Ok(format!(
            "leader {} killed; {}'s new connections to {} refused",
            name(leader),
            name(stale),
            name(in_sync)
        ))
    }

    fn draw_next(&mut self) {
        self.planned = plan(&mut self.random, &self.scope);
        self.state = State::Quiet { until: Instant::now() + self.planned.quiet };
    }
}

/// Throws a fault; what the timeline adds to its description (an answer), if anything.
fn apply(
    cluster: &mut Cluster,
    planned: &Planned,
    appointment: Option<&StaleAppointment>,
) -> Result<String, String> {
    let node = planned.node;
    let automatic = cluster.settings.failover == Failover::Automatic;
    match (planned.fault, planned.form) {
        (Fault::Kill, _) => cluster.kill(node),
        (Fault::Pause | Fault::StalePromotion, _) => cluster.pause(node),
        (Fault::Partition, Form::Link { mode, peer }) => {
            cluster.partition(node, peer, mode).map_err(|error| error.to_string())?;
        }
        (Fault::Isolate, _) => cluster.isolate(node)?,
        (Fault::Remove, _) if automatic => return remove_through_member(cluster, planned),
        (Fault::Remove, _) => cluster.remove(node)?,
        (Fault::Transfer, _) => return Ok(transfer(cluster, planned)),
        (Fault::StaleAppointment, _) => {
            let appointment = appointment.ok_or("no nodes chosen")?;
            let leader = appointment.leader;
            cluster.cut_connections(node, leader).map_err(|error| error.to_string())?;
            return Ok(format!("cut from leader {}", cluster.nodes[leader].name));
        }
        (Fault::DiskFull, _) => {
            fill_disk(cluster, node)?;
            cluster.nodes[node].disk_full = true;
            cluster.nodes[node].disk_was_full = true;
        }
        (Fault::ClockStep, Form::Step(seconds)) => set_clock(cluster, node, seconds)?,
        (fault, form) => return Err(format!("{fault} cannot take the form {form:?}")),
    }
    Ok(String::new())
}

/// Removes the planned node through another answering member (the one drawn if it can).
fn remove_through_member(cluster: &mut Cluster, planned: &Planned) -> Result<String, String> {
    let via = any_other(cluster, planned.other, Some(planned.node)).ok_or("no member to ask")?;
    cluster.remove_through(planned.node, via).map_err(|error| error.to_string())?;
    Ok(format!("through {}", cluster.nodes[via].name))
}

/// Hands the leadership over to the planned node, asking a member drawn at random; the
/// answer (a refusal is an answer too: the target may not be in sync).
fn transfer(cluster: &Cluster, planned: &Planned) -> String {
    let Some(via) = any_other(cluster, planned.other, None) else {
        return "no member to ask".into();
    };
    let via_name = &cluster.nodes[via].name;
    match cluster.transfer(planned.node, via) {
        Ok(leader) => format!("through {via_name}: {leader} leads"),
        Err(error) => format!("through {via_name}: {error}"),
    }
}

/// Ends a fault; what the timeline says of the end.
fn heal(cluster: &mut Cluster, fault: Fault, node: usize) -> Result<&'static str, String> {
    match fault {
        Fault::Kill => cluster.restart(node).map(|()| "restarted"),
        Fault::Pause => {
            cluster.resume(node);
            Ok("resumed")
        }
        Fault::StalePromotion => {
            cluster.resume(node);
            Ok("leader killed, follower resumed and offered for promotion first")
        }
        Fault::Partition | Fault::StaleAppointment => {
            cluster.heal_links().map_err(|error| error.to_string())?;
            Ok("healed")
        }
        Fault::Transfer => Ok(""),
        Fault::Isolate => cluster.reconnect().map(|()| "reconnected"),
        Fault::Remove => {
            cluster.nodes[node].removed = false;
            Ok("the operator adds it back")
        }
        Fault::DiskFull => {
            let ballast = cluster.nodes[node].ballast_path().ok_or("the node has no tmpfs")?;
            std::fs::remove_file(&ballast).map_err(|error| format!("{ballast:?}: {error}"))?;
            cluster.nodes[node].disk_full = false;
            Ok("space freed")
        }
        Fault::ClockStep => set_clock(cluster, node, 0).map(|()| "clock put back"),
    }
}

/// The replica a stale promotion pauses or a transfer leads (a voter), or a manual removal
/// removes (any): `wanted` when it is an answering replica of the kind asked, else the first
/// such; None without an answering leader.
fn replica_to_hit(cluster: &Cluster, wanted: usize, voters_only: bool) -> Option<usize> {
    let leader = cluster.leader.filter(|&leader| cluster.nodes[leader].available())?;
    let eligible = |index: usize| {
        let node = &cluster.nodes[index];
        let kind_fits = !voters_only || node.kind == Kind::Voter;
        index != leader && kind_fits && node.available()
    };
    if eligible(wanted) {
        return Some(wanted);
    }
    (0..cluster.nodes.len()).find(|&index| eligible(index))
}

/// An answering member of the cluster other than `excluded`: `wanted` if it is one, else the
/// first.
fn any_other(cluster: &Cluster, wanted: usize, excluded: Option<usize>) -> Option<usize> {
    let eligible = |index: usize| {
        let node = &cluster.nodes[index];
        Some(index) != excluded && node.available() && node.member && !node.isolated
    };
    if eligible(wanted) {
        return Some(wanted);
    }
    (0..cluster.nodes.len()).find(|&index| eligible(index))
}

/// The nodes of a stale appointment: the follower leading the controller's Raft (as the data
/// leader heard), another answering follower, and the answering data leader; None unless
/// there are such.
fn stale_appointment(cluster: &Cluster) -> Option<StaleAppointment> {
    let leader = cluster.leader.filter(|&leader| cluster.nodes[leader].available())?;
    let follower = |index: usize| {
        let node = &cluster.nodes[index];
        index != leader && node.kind == Kind::Voter && node.available() && node.member
    };
    let stale = cluster.controller_leader(leader).filter(|&index| follower(index))?;
    let in_sync = (0..cluster.nodes.len()).find(|&index| index != stale && follower(index))?;
    Some(StaleAppointment { stale, in_sync, leader })
}

/// Fills the node's tmpfs with a ballast file as large as the space left.
fn fill_disk(cluster: &Cluster, node: usize) -> Result<(), String> {
    use std::os::unix::io::AsRawFd;
    let ballast = cluster.nodes[node].ballast_path().ok_or("the node has no tmpfs")?;
    let file = std::fs::File::create(&ballast).map_err(|error| format!("{ballast:?}: {error}"))?;
    // Whatever fallocate leaves (it reserves whole pages) is taken by small writes.
    let mut free = free_bytes(&ballast)?;
    // SAFETY: fallocate(2) on a file descriptor this function owns.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, free as libc::off_t) };
    if result != 0 {
        free = 0;
    }
    let mut writer = std::io::BufWriter::new(file);
    use std::io::{Seek, Write};
    writer.seek(std::io::SeekFrom::Start(free)).map_err(|error| error.to_string())?;
    let page = [0u8; 4096];
    while writer.write_all(&page).and_then(|()| writer.flush()).is_ok() {}
    Ok(())
}

fn free_bytes(path: &std::path::Path) -> Result<u64, String> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed struct it fills.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(name.as_ptr(), &mut stat) } != 0 {
        return Err(format!("statvfs {path:?}: {}", std::io::Error::last_os_error()));
    }
    Ok(stat.f_bavail * stat.f_frsize)
}

/// Steps the node's wall clock `seconds` from the true time (0: the true time again).
fn set_clock(cluster: &Cluster, node: usize, seconds: i64) -> Result<(), String> {
    let path = cluster.nodes[node].clock_path();
    std::fs::write(&path, format!("{seconds:+}\n")).map_err(|error| format!("{path:?}: {error}"))
}

/// The next fault. It always draws the same seven numbers, so the schedule depends on the
/// seed and the scope alone.
fn plan(random: &mut StdRng, scope: &Scope) -> Planned {
    let quiet = Duration::from_millis(random.gen_range(QUIET_MS));
    let total: u32 = scope.faults.iter().map(|fault| fault.weight()).sum();
    let mut roll = random.gen_range(0..total);
    let fault = *scope
        .faults
        .iter()
        .find(|fault| {
            let hit = roll < fault.weight();
            roll = roll.saturating_sub(fault.weight());
            hit
        })
        .unwrap_or(&scope.faults[0]);
    let node = random.gen_range(0..scope.node_count);
    let past_timeout = random.gen_bool(0.5);
    let fraction: f64 = random.gen_range(0.0..1.0);
    let variant: f64 = random.gen_range(0.0..1.0);
    let forward = random.gen_bool(0.5);
    let other = random.gen_range(0..scope.node_count);
    let length = Duration::from_millis(within(length_range(fault, past_timeout, scope), fraction));
    let form = match fault {
        Fault::Kill
        | Fault::Pause
        | Fault::Isolate
        | Fault::DiskFull
        | Fault::StalePromotion
        | Fault::Remove
        | Fault::Transfer
        | Fault::StaleAppointment => Form::Plain,
        // Half the partitions (by `forward`) cut one pair of nodes only.
        Fault::Partition => {
            let peer = (forward && other != node).then_some(other);
            let delays = scope.failover == Failover::Manual;
            Form::Link { mode: link_mode(variant, delays), peer }
        }
        Fault::ClockStep => {
            let seconds = i64::try_from(within(CLOCK_STEP_SECONDS, variant)).unwrap_or(60);
            Form::Step(if forward { seconds } else { -seconds })
        }
    };
    Planned { fault, form, node, other, quiet, length }
}

/// How long a fault may last, in milliseconds: pauses, partitions and isolations shorter than
/// ¾ of the timeout after which the cluster replaces a silent leader, or longer by 0.5 s or
/// more (`past_timeout`); a stale node cut past the heartbeat timeout, so that it leaves the
/// in-sync set.
fn length_range(fault: Fault, past_timeout: bool, scope: &Scope) -> std::ops::Range<u64> {
    let timeout = scope.replacement_timeout_ms();
    let heartbeat_timeout = scope.heartbeat_timeout_ms;
    match (fault, past_timeout) {
        (Fault::Kill | Fault::Remove, _) => KILL_MS,
        (Fault::DiskFull, _) => DISK_FULL_MS,
        (Fault::ClockStep, _) => CLOCK_STEP_MS,
        (Fault::Transfer, _) => 0..1,
        (Fault::Pause | Fault::Partition | Fault::Isolate, false) => 200..timeout * 3 / 4,
        (Fault::Pause | Fault::Partition | Fault::Isolate, true) => timeout + 500..timeout * 3,
        (Fault::StalePromotion | Fault::StaleAppointment, _) => {
            heartbeat_timeout + 1_000..heartbeat_timeout + 3_000
        }
    }
}

/// What a partition does to the links, from a number in [0, 1); without `delays` (the
/// firewall's links), the share of delays goes to the others.
fn link_mode(variant: f64, delays: bool) -> Mode {
    if !delays {
        return match variant {
            v if v < 0.35 => Mode::Cut,
            v if v < 0.65 => Mode::Blackhole,
            v if v < 0.825 => Mode::HoldForward,
            _ => Mode::HoldBackward,
        };
    }
    match variant {
        v if v < 0.3 => Mode::Cut,
        v if v < 0.55 => Mode::Blackhole,
        v if v < 0.7 => Mode::HoldForward,
        v if v < 0.85 => Mode::HoldBackward,
        v => Mode::Delay(Duration::from_millis(within(LINK_DELAY_MS, (v - 0.85) / 0.15))),
    }
}

/// The point `fraction` of the way through `range`.
fn within(range: std::ops::Range<u64>, fraction: f64) -> u64 {
    let span = (range.end - range.start) as f64;
    range.start + (span * fraction.clamp(0.0, 1.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(faults: &[Fault], failover: Failover) -> Scope {
        Scope {
            node_count: 4,
            heartbeat_timeout_ms: 2000,
            failover,
            failover_timeout_ms: 1500,
            faults: faults.to_vec(),
        }
    }

    fn schedule_of(seed: u64, scope: &Scope) -> Vec<Planned> {
        let mut random = StdRng::seed_from_u64(seed);
        (0..200).map(|_| plan(&mut random, scope)).collect()
    }

    fn schedule(seed: u64, faults: &[Fault]) -> Vec<Planned> {
        schedule_of(seed, &scope(faults, Failover::Manual))
    }

    fn lengths_of(all: &[Planned], fault: Fault) -> Vec<Duration> {
        all.iter().filter(|planned| planned.fault == fault).map(|planned| planned.length).collect()
    }

    #[test]
    fn automatic_schedules_draw_around_the_failover_timeout_and_never_delay() {
        let all = schedule_of(4, &scope(&Fault::AUTOMATIC, Failover::Automatic));
        for fault in Fault::AUTOMATIC {
            assert!(all.iter().any(|planned| planned.fault == fault), "{fault} never drawn");
        }
        for fault in [Fault::Pause, Fault::Partition, Fault::Isolate] {
            let lengths = lengths_of(&all, fault);
            let short = Duration::from_millis(1125);
            let long = Duration::from_millis(2000);
            assert!(lengths.iter().all(|length| *length < short || *length >= long));
            assert!(lengths.iter().any(|length| *length < short), "{fault}");
            assert!(lengths.iter().any(|length| *length >= long), "{fault}");
        }
        let delayed = all
            .iter()
            .any(|planned| matches!(planned.form, Form::Link { mode: Mode::Delay(_), .. }));
        assert!(!delayed, "a delay drawn for the firewall's links");
        for planned in all.iter().filter(|planned| planned.fault == Fault::StaleAppointment) {
            assert!(planned.length > Duration::from_millis(2000), "still in sync at the end");
        }
    }

    #[test]
    fn each_mode_throws_its_own_kinds() {
        assert!(Fault::StalePromotion.fits(Failover::Manual));
        assert!(!Fault::StalePromotion.fits(Failover::Automatic));
        for fault in [Fault::Transfer, Fault::StaleAppointment] {
            assert!(fault.fits(Failover::Automatic) && !fault.fits(Failover::Manual));
        }
        assert_eq!(&Fault::ALL[..8], &Fault::MANUAL, "manual schedules drawn as before");
    }

    #[test]
    fn one_seed_gives_one_schedule() {
        assert_eq!(schedule(7, &Fault::MANUAL), schedule(7, &Fault::MANUAL));
        assert_ne!(schedule(7, &Fault::MANUAL), schedule(8, &Fault::MANUAL));
    }

    #[test]
    fn pauses_and_partitions_sometimes_outlast_the_heartbeat_timeout() {
        let all = schedule(1, &Fault::MANUAL);
        for fault in [Fault::Pause, Fault::Partition, Fault::Isolate] {
            let lengths = lengths_of(&all, fault);
            assert!(lengths.iter().any(|length| *length > Duration::from_millis(2000)));
            assert!(lengths.iter().any(|length| *length < Duration::from_millis(2000)));
        }
        assert!(all.iter().all(|planned| planned.node < 4));
    }

    #[test]
    fn only_the_kinds_in_scope_are_thrown_and_each_is() {
        let some = schedule(3, &[Fault::Kill, Fault::Partition]);
        assert!(some.iter().all(|planned| matches!(planned.fault, Fault::Kill | Fault::Partition)));
        let all = schedule(3, &Fault::MANUAL);
        for fault in Fault::MANUAL {
            assert!(all.iter().any(|planned| planned.fault == fault), "{fault} never drawn");
        }
    }

    #[test]
    fn partitions_take_every_form_and_clock_steps_go_both_ways() {
        let all = schedule(5, &Fault::MANUAL);
        let modes: Vec<Mode> = all
            .iter()
            .filter_map(|planned| match planned.form {
                Form::Link { mode, .. } => Some(mode),
                _ => None,
            })
            .collect();
        for wanted in [Mode::Cut, Mode::Blackhole, Mode::HoldForward, Mode::HoldBackward] {
            assert!(modes.contains(&wanted), "{wanted:?} never drawn");
        }
        assert!(modes.iter().any(|mode| matches!(mode, Mode::Delay(_))));
        let peers: Vec<(usize, Option<usize>)> = all
            .iter()
            .filter_map(|planned| match planned.form {
                Form::Link { peer, .. } => Some((planned.node, peer)),
                _ => None,
            })
            .collect();
        assert!(peers.iter().any(|(_, peer)| peer.is_none()), "no whole-node partition");
        assert!(peers.iter().any(|(_, peer)| peer.is_some()), "no partition of one pair");
        assert!(peers.iter().all(|(node, peer)| *peer != Some(*node)), "a node cut from itself");
        let steps: Vec<i64> = all
            .iter()
            .filter_map(|planned| match planned.form {
                Form::Step(seconds) => Some(seconds),
                _ => None,
            })
            .collect();
        assert!(steps.iter().any(|seconds| *seconds >= 30));
        assert!(steps.iter().any(|seconds| *seconds <= -30));
    }

    #[test]
    fn fault_names_read_back() {
        for fault in Fault::ALL {
            assert_eq!(Fault::parse(fault.name()), Some(fault));
        }
        assert_eq!(Fault::parse("flood"), None);
    }
}
