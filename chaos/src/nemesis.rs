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
//! - **partition**: the node's peer links ([`crate::proxy`]), all of them or only those with one
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
//! - **stale-promotion**: a follower paused past the heartbeat timeout (it drops out of the
//!   in-sync set while writes go on); at the end the leader is killed, the follower resumed,
//!   and the operator told to try promoting that follower first. The promotion guard must
//!   refuse it; with the guard taken out (`--mutation promote-out-of-sync`) the checker finds
//!   the writes it loses. The killed leader is restarted a few seconds later.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::Cluster;
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
    /// leader), added back at the end.
    Remove,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Partition,
        Fault::Isolate,
        Fault::DiskFull,
        Fault::ClockStep,
        Fault::StalePromotion,
        Fault::Remove,
    ];

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
            Fault::Isolate => 2,
            Fault::DiskFull | Fault::ClockStep | Fault::StalePromotion | Fault::Remove => 1,
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
    /// Quiet time before it.
    pub quiet: Duration,
    pub length: Duration,
}

impl Planned {
    /// What the timeline says of it; `name_of` names a node by its index.
    fn describe(&self, name_of: impl Fn(usize) -> String) -> String {
        let length = self.length.as_millis();
        match self.form {
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
    /// The kinds of fault it throws.
    pub faults: Vec<Fault>,
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
}

impl Nemesis {
    /// A schedule from `seed`; `scope.faults` must not be empty.
    #[must_use]
    pub fn new(seed: u64, scope: Scope) -> Nemesis {
        assert!(!scope.faults.is_empty(), "a nemesis needs a fault to throw");
        let mut random = StdRng::seed_from_u64(seed);
        let planned = plan(&mut random, &scope);
        let state = State::Quiet { until: Instant::now() + planned.quiet };
        Nemesis { random, scope, planned, state, thrown: BTreeMap::new(), revivals: Vec::new() }
    }

    /// Faults thrown so far.
    #[must_use]
    pub fn thrown_total(&self) -> u64 {
        self.thrown.values().sum()
    }

    /// Whether a fault is in progress.
    #[must_use]
    pub fn active(&self) -> bool {
        matches!(self.state, State::Active { .. })
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
        let now = Instant::now();
        match self.state {
            State::Active { until, event } if now >= until => {
                self.heal(cluster, timeline, event);
            }
            State::Quiet { until } if now >= until && may_throw => {
                let needs_follower =
                    matches!(self.planned.fault, Fault::StalePromotion | Fault::Remove);
                if needs_follower {
                    let voters_only = self.planned.fault == Fault::StalePromotion;
                    match replica_to_hit(cluster, self.planned.node, voters_only) {
                        Some(node) => self.planned.node = node,
                        None => {
                            // Nothing to do it to (no leader, or no answering follower).
                            self.draw_next();
                            return;
                        }
                    }
                }
                let planned = self.planned;
                let name = cluster.nodes[planned.node].name.clone();
                let detail = planned.describe(|index| cluster.nodes[index].name.clone());
                let event = timeline.begin(planned.fault.name(), &name, &detail);
                if let Err(error) = apply(cluster, &planned) {
                    timeline.end(event, &format!("could not be thrown: {error}"));
                    self.draw_next();
                    return;
                }
                *self.thrown.entry(planned.fault).or_default() += 1;
                self.state = State::Active { until: Instant::now() + planned.length, event };
            }
            _ => {}
        }
    }

    /// Ends the fault in progress, if any, restarts every node still to be restarted, and
    /// draws the next.
    pub fn heal_active(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        if let State::Active { event, .. } = self.state {
            self.heal(cluster, timeline, event);
        }
        self.revive(cluster, timeline, true);
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

    fn draw_next(&mut self) {
        self.planned = plan(&mut self.random, &self.scope);
        self.state = State::Quiet { until: Instant::now() + self.planned.quiet };
    }
}

/// Throws a fault.
fn apply(cluster: &mut Cluster, planned: &Planned) -> Result<(), String> {
    let node = planned.node;
    match (planned.fault, planned.form) {
        (Fault::Kill, _) => cluster.kill(node),
        (Fault::Pause | Fault::StalePromotion, _) => cluster.pause(node),
        (Fault::Partition, Form::Link { mode, peer: None }) => cluster.network.isolate(node, mode),
        (Fault::Partition, Form::Link { mode, peer: Some(peer) }) => {
            cluster.network.cut_between(node, peer, mode);
        }
        (Fault::Isolate, _) => cluster.isolate(node)?,
        (Fault::Remove, _) => cluster.remove(node)?,
        (Fault::DiskFull, _) => {
            fill_disk(cluster, node)?;
            cluster.nodes[node].disk_full = true;
        }
        (Fault::ClockStep, Form::Step(seconds)) => set_clock(cluster, node, seconds)?,
        (fault, form) => return Err(format!("{fault} cannot take the form {form:?}")),
    }
    Ok(())
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
        Fault::Partition => {
            cluster.network.heal();
            Ok("healed")
        }
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

/// The replica a stale promotion pauses (a voter) or a removal removes (any): `wanted` when
/// it is an answering replica of the kind asked, else the first such; None without an
/// answering leader.
fn replica_to_hit(cluster: &Cluster, wanted: usize, voters_only: bool) -> Option<usize> {
    let leader = cluster.leader.filter(|&leader| cluster.nodes[leader].available())?;
    let eligible = |index: usize| {
        let node = &cluster.nodes[index];
        let kind_fits = !voters_only || node.kind == crate::cluster::Kind::Voter;
        index != leader && kind_fits && node.available()
    };
    if eligible(wanted) {
        return Some(wanted);
    }
    (0..cluster.nodes.len()).find(|&index| eligible(index))
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
    let peer = random.gen_range(0..scope.node_count);
    let timeout = scope.heartbeat_timeout_ms;
    let range = match (fault, past_timeout) {
        (Fault::Kill | Fault::Remove, _) => KILL_MS,
        (Fault::DiskFull, _) => DISK_FULL_MS,
        (Fault::ClockStep, _) => CLOCK_STEP_MS,
        (Fault::Pause | Fault::Partition | Fault::Isolate, false) => 200..timeout * 3 / 4,
        (Fault::Pause | Fault::Partition | Fault::Isolate, true) => timeout + 500..timeout * 3,
        (Fault::StalePromotion, _) => timeout + 1_000..timeout + 3_000,
    };
    let length = Duration::from_millis(within(range, fraction));
    let form = match fault {
        Fault::Kill
        | Fault::Pause
        | Fault::Isolate
        | Fault::DiskFull
        | Fault::StalePromotion
        | Fault::Remove => Form::Plain,
        // Half the partitions (by `forward`) cut one pair of nodes only.
        Fault::Partition => {
            let peer = (forward && peer != node).then_some(peer);
            Form::Link { mode: link_mode(variant), peer }
        }
        Fault::ClockStep => {
            let seconds = i64::try_from(within(CLOCK_STEP_SECONDS, variant)).unwrap_or(60);
            Form::Step(if forward { seconds } else { -seconds })
        }
    };
    Planned { fault, form, node, quiet, length }
}

/// What a partition does to the links, from a number in [0, 1).
fn link_mode(variant: f64) -> Mode {
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

    fn scope(faults: &[Fault]) -> Scope {
        Scope { node_count: 4, heartbeat_timeout_ms: 2000, faults: faults.to_vec() }
    }

    fn schedule(seed: u64, faults: &[Fault]) -> Vec<Planned> {
        let mut random = StdRng::seed_from_u64(seed);
        let scope = scope(faults);
        (0..200).map(|_| plan(&mut random, &scope)).collect()
    }

    #[test]
    fn one_seed_gives_one_schedule() {
        assert_eq!(schedule(7, &Fault::ALL), schedule(7, &Fault::ALL));
        assert_ne!(schedule(7, &Fault::ALL), schedule(8, &Fault::ALL));
    }

    #[test]
    fn pauses_and_partitions_sometimes_outlast_the_heartbeat_timeout() {
        let all = schedule(1, &Fault::ALL);
        for fault in [Fault::Pause, Fault::Partition, Fault::Isolate] {
            let lengths: Vec<Duration> = all
                .iter()
                .filter(|planned| planned.fault == fault)
                .map(|planned| planned.length)
                .collect();
            assert!(lengths.iter().any(|length| *length > Duration::from_millis(2000)));
            assert!(lengths.iter().any(|length| *length < Duration::from_millis(2000)));
        }
        assert!(all.iter().all(|planned| planned.node < 4));
    }

    #[test]
    fn only_the_kinds_in_scope_are_thrown_and_each_is() {
        let some = schedule(3, &[Fault::Kill, Fault::Partition]);
        assert!(some.iter().all(|planned| matches!(planned.fault, Fault::Kill | Fault::Partition)));
        let all = schedule(3, &Fault::ALL);
        for fault in Fault::ALL {
            assert!(all.iter().any(|planned| planned.fault == fault), "{fault} never drawn");
        }
    }

    #[test]
    fn partitions_take_every_form_and_clock_steps_go_both_ways() {
        let all = schedule(5, &Fault::ALL);
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
