//! The nemesis: faults thrown one at a time at random moments, each healed after a random
//! time. The schedule (which fault, which node, how long the quiet before it, how long it
//! lasts) comes from a seeded [`StdRng`] and draws the same numbers whatever the cluster does,
//! so one seed gives one schedule. What the operator does in reply depends on the cluster.
//!
//! Faults today: kill -9 (restarted at the end of the fault, then the operator gives it its
//! role again) and SIGSTOP (SIGCONT at the end; paused past the heartbeat timeout half the
//! time). Network partitions, a full disk and clock steps are meant to become further
//! [`Fault`]s, each with its `apply` and `heal` arms.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::Cluster;
use crate::timeline::Timeline;

/// Quiet time between two faults, in milliseconds.
const QUIET_MS: std::ops::Range<u64> = 1_000..4_000;

/// How long a killed node stays dead, in milliseconds.
const KILL_MS: std::ops::Range<u64> = 1_000..6_000;

/// What the nemesis can do to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL, then a restart.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
}

impl Fault {
    /// The name in the timeline.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
        }
    }
}

/// One fault of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub fault: Fault,
    pub node: usize,
    /// Quiet time before it.
    pub quiet: Duration,
    pub length: Duration,
}

enum State {
    Quiet { until: Instant },
    Active { until: Instant, event: usize },
}

/// The fault schedule and the fault in progress.
pub struct Nemesis {
    random: StdRng,
    node_count: usize,
    heartbeat_timeout_ms: u64,
    planned: Planned,
    state: State,
    /// Faults thrown so far, by kind.
    pub thrown: BTreeMap<Fault, u64>,
}

impl Nemesis {
    #[must_use]
    pub fn new(seed: u64, node_count: usize, heartbeat_timeout_ms: u64) -> Nemesis {
        let mut random = StdRng::seed_from_u64(seed);
        let planned = plan(&mut random, node_count, heartbeat_timeout_ms);
        let state = State::Quiet { until: Instant::now() + planned.quiet };
        Nemesis {
            random,
            node_count,
            heartbeat_timeout_ms,
            planned,
            state,
            thrown: BTreeMap::new(),
        }
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
        let now = Instant::now();
        match self.state {
            State::Active { until, event } if now >= until => {
                self.heal(cluster, timeline, event);
            }
            State::Quiet { until } if now >= until && may_throw => {
                let Planned { fault, node, length, .. } = self.planned;
                let name = cluster.nodes[node].name.clone();
                let detail = format!("for {} ms", length.as_millis());
                let event = timeline.begin(fault.name(), &name, &detail);
                apply(cluster, fault, node);
                *self.thrown.entry(fault).or_default() += 1;
                self.state = State::Active { until: Instant::now() + length, event };
            }
            _ => {}
        }
    }

    /// Ends the fault in progress, if any, and draws the next.
    pub fn heal_active(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        if let State::Active { event, .. } = self.state {
            self.heal(cluster, timeline, event);
        }
    }

    fn heal(&mut self, cluster: &mut Cluster, timeline: &mut Timeline, event: usize) {
        let Planned { fault, node, .. } = self.planned;
        let detail = match fault {
            Fault::Kill => match cluster.restart(node) {
                Ok(()) => "restarted".to_string(),
                Err(error) => {
                    let name = cluster.nodes[node].name.clone();
                    timeline.problem(&name, format!("restart after kill: {error}"));
                    format!("restart failed: {error}")
                }
            },
            Fault::Pause => {
                cluster.resume(node);
                "resumed".to_string()
            }
        };
        timeline.end(event, &detail);
        self.planned = plan(&mut self.random, self.node_count, self.heartbeat_timeout_ms);
        self.state = State::Quiet { until: Instant::now() + self.planned.quiet };
    }
}

fn apply(cluster: &mut Cluster, fault: Fault, node: usize) {
    match fault {
        Fault::Kill => cluster.kill(node),
        Fault::Pause => cluster.pause(node),
    }
}

/// The next fault. It always draws the same five numbers, so the schedule depends on the seed
/// alone.
fn plan(random: &mut StdRng, node_count: usize, heartbeat_timeout_ms: u64) -> Planned {
    let quiet = Duration::from_millis(random.gen_range(QUIET_MS));
    let fault = if random.gen_ratio(2, 5) { Fault::Kill } else { Fault::Pause };
    let node = random.gen_range(0..node_count);
    let past_timeout = random.gen_bool(0.5);
    let fraction: f64 = random.gen_range(0.0..1.0);
    let range = match (fault, past_timeout) {
        (Fault::Kill, _) => KILL_MS,
        (Fault::Pause, false) => 200..heartbeat_timeout_ms * 3 / 4,
        (Fault::Pause, true) => heartbeat_timeout_ms + 500..heartbeat_timeout_ms * 3,
    };
    let span = (range.end - range.start) as f64;
    let length = Duration::from_millis(range.start + (span * fraction) as u64);
    Planned { fault, node, quiet, length }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(seed: u64) -> Vec<Planned> {
        let mut random = StdRng::seed_from_u64(seed);
        (0..50).map(|_| plan(&mut random, 4, 2000)).collect()
    }

    #[test]
    fn one_seed_gives_one_schedule() {
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
    }

    #[test]
    fn pauses_sometimes_outlast_the_heartbeat_timeout() {
        let pauses: Vec<Planned> =
            schedule(1).into_iter().filter(|planned| planned.fault == Fault::Pause).collect();
        assert!(pauses.iter().any(|planned| planned.length > Duration::from_millis(2000)));
        assert!(pauses.iter().any(|planned| planned.length < Duration::from_millis(2000)));
        assert!(schedule(1).iter().all(|planned| planned.node < 4));
    }
}
