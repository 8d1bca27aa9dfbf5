//! The properties the simulator checks, outside the code under test (the reference is
//! `../shared/reference/replication-safety.md`; `docs/ARCHITECTURE.md` lists them too):
//!
//! - **I2** every member of the newest in-sync set any node recorded holds every acknowledged
//!   write durably (so whoever the promotion guard lets lead has them all);
//! - **I3** a node serves (commits) only what its leader committed;
//! - **I5** one epoch has at most one leader (the state machines assert that fences never go
//!   back);
//! - **I6** logs agree with the committed log on every LSN a node committed;
//! - **timeouts** a member is declared timed out only after it was silent for the timeout;
//! - **liveness** a leader that takes writes does not hold one longer than twice the progress
//!   timeout plus a second (checked by the world, which knows when writes were taken); under
//!   the controller, a second more, counted only while the leader's lease runs and it reaches
//!   a controller's leader that can commit (changes of its sets wait for the controller);
//! - **C1–C3** under automatic failover, the controller's appointments (`controller.rs`).
//!
//! I1 (acknowledged means durable on every in-sync member) is what I2 checks from the outside.

use std::collections::{BTreeMap, BTreeSet};

use strata_core::replication::InSyncSet;
use strata_core::Epoch;

use crate::node::{Disk, Entry, Node};

mod controller;

/// What one partition's acknowledged history is.
#[derive(Clone, Debug, Default)]
struct Truth {
    /// The committed log: `committed[i]` at LSN `i + 1`, as the first leader to commit it cut it.
    committed: Vec<Entry>,
    /// The highest acknowledged LSN.
    acked: u64,
    /// Every (LSN, value) ever committed, across forced promotions that cut the committed log.
    ever: BTreeSet<(usize, u64)>,
}

/// The checker's view: what was committed and acknowledged, and what it already verified.
#[derive(Clone, Debug)]
pub struct Checker {
    truth: Vec<Truth>,
    leaders: BTreeMap<Epoch, usize>,
    /// Under automatic failover: who the controller appointed at each epoch.
    appointed: BTreeMap<Epoch, usize>,
    /// Per (node, partition): the disk generation and LSN up to which its log was compared
    /// with the committed log, for what it committed and for what it holds durably.
    served: BTreeMap<(usize, usize), (u64, u64)>,
    held: BTreeMap<(usize, usize), (u64, u64)>,
    /// Per (leader, member): when the leader last really heard from the member.
    heard: BTreeMap<(usize, usize), u64>,
    pub violation: Option<String>,
    pub acknowledged: u64,
    /// While a forced promotion is in flight, acknowledged writes may be lost (the operator's
    /// choice): I2 waits until it ends and the committed log is cut back again.
    pub forcing: bool,
}

impl Checker {
    pub fn new(partitions: usize) -> Checker {
        Checker {
            truth: vec![Truth::default(); partitions],
            leaders: BTreeMap::new(),
            appointed: BTreeMap::new(),
            served: BTreeMap::new(),
            held: BTreeMap::new(),
            heard: BTreeMap::new(),
            violation: None,
            acknowledged: 0,
            forcing: false,
        }
    }

    fn fail(&mut self, message: String) {
        if self.violation.is_none() {
            self.violation = Some(message);
        }
    }

    /// A leader's commit point moved to `lsn`: what it commits becomes the committed log
    /// where nothing was committed yet, and must agree with it where something was (I6).
    pub fn leader_committed(&mut self, node: usize, part: usize, lsn: u64, disk: &Disk) {
        self.compare(node, part, lsn, disk, "committed");
        let truth = &mut self.truth[part];
        while (truth.committed.len() as u64) < lsn {
            let next = truth.committed.len();
            truth.committed.push(disk.log[next]);
            truth.ever.insert((next, disk.log[next].value));
        }
    }

    /// A replica may now serve up to `lsn`: only what a leader committed (I3), and the same
    /// records (I6).
    pub fn replica_committed(&mut self, node: usize, part: usize, lsn: u64, disk: &Disk) {
        let committed = self.truth[part].committed.len() as u64;
        if lsn > committed {
            self.fail(format!(
                "I3: n{node} serves partition {part} up to LSN {lsn}, but only {committed} \
                 are committed"
            ));
        }
        self.compare(node, part, lsn, disk, "served");
    }

    fn compare(&mut self, node: usize, part: usize, lsn: u64, disk: &Disk, what: &str) {
        let truth = &self.truth[part];
        let key = (node, part);
        let (generation, done) = self.served.get(&key).copied().unwrap_or((disk.generation, 0));
        let done = if generation == disk.generation { done } else { 0 };
        let upto = lsn.min(truth.committed.len() as u64).min(disk.last());
        let mismatch = (done..upto).find(|index| {
            let index = usize::try_from(*index).expect("fits");
            disk.log[index] != truth.committed[index]
        });
        if let Some(index) = mismatch {
            let at = index + 1;
            let (own, committed) = (disk.log[index as usize], truth.committed[index as usize]);
            self.fail(format!(
                "I6: n{node} {what} partition {part} LSN {at} as {own:?}, but the committed \
                 record there is {committed:?}"
            ));
        }
        self.served.insert(key, (disk.generation, done.max(upto)));
    }

    /// A write was acknowledged to its client.
    pub fn acknowledged(&mut self, part: usize, lsn: u64, value: u64) {
        let index = usize::try_from(lsn - 1).expect("fits");
        let committed = self.truth[part].committed.get(index).map(|entry| entry.value);
        if committed != Some(value) {
            self.fail(format!(
                "acknowledged value {value} at partition {part} LSN {lsn}, committed {committed:?}"
            ));
        }
        let truth = &mut self.truth[part];
        truth.acked = truth.acked.max(lsn);
        self.acknowledged += 1;
    }

    /// `node` starts leading at `epoch` (I5: one leader per epoch).
    pub fn new_leader(&mut self, epoch: Epoch, node: usize) {
        if let Some(earlier) = self.leaders.insert(epoch, node) {
            if earlier != node {
                self.fail(format!("I5: n{earlier} and n{node} both led epoch {epoch}"));
            }
        }
    }

    /// I2: every member of each partition's newest recorded set holds every acknowledged
    /// write durably.
    pub fn check_newest_sets(&mut self, nodes: &[Node]) {
        if self.forcing {
            return;
        }
        for part in 0..self.truth.len() {
            let acked = self.truth[part].acked;
            if acked == 0 {
                continue;
            }
            let Some(newest) = newest_set_ref(nodes, part) else { continue };
            for member in &newest.members {
                let Some(node) = nodes.iter().find(|node| node.member.name == member.name) else {
                    continue;
                };
                let disk = &node.parts[part].disk;
                let key = (node.id, part);
                let settled = self.held.get(&key) == Some(&(disk.generation, acked));
                if !settled || disk.durable < acked {
                    self.check_holds(node.id, part, disk, acked, newest);
                }
            }
        }
    }

    fn check_holds(&mut self, node: usize, part: usize, disk: &Disk, acked: u64, set: &InSyncSet) {
        if disk.durable < acked {
            self.fail(format!(
                "I2: n{node}, in the newest in-sync set {set} of partition {part}, holds LSNs up \
                 to {} durably, but writes up to {acked} were acknowledged",
                disk.durable
            ));
            return;
        }
        let key = (node, part);
        let (generation, done) = self.held.get(&key).copied().unwrap_or((disk.generation, 0));
        let done = if generation == disk.generation { done } else { 0 };
        let truth = &self.truth[part];
        let mismatch = (done..acked).find(|index| {
            let index = usize::try_from(*index).expect("fits");
            disk.log[index] != truth.committed[index]
        });
        if let Some(index) = mismatch {
            self.fail(format!(
                "I2: n{node}, in the newest in-sync set {set} of partition {part}, holds {:?} at \
                 LSN {}, not the acknowledged {:?}",
                disk.log[index as usize],
                index + 1,
                truth.committed[index as usize]
            ));
        }
        self.held.insert(key, (disk.generation, done.max(acked)));
    }

    /// The leader really received a heartbeat (or registration) of the member at `now_us`.
    pub fn heard(&mut self, leader: usize, member: usize, now_us: u64) {
        self.heard.insert((leader, member), now_us);
    }

    /// The leader declared the member timed out: it must have been silent that long.
    pub fn timed_out(&mut self, leader: usize, member: usize, now_us: u64, timeout_ms: u64) {
        let last = self.heard.get(&(leader, member)).copied().unwrap_or(0);
        let silent_ms = now_us.saturating_sub(last) / 1000;
        if silent_ms < timeout_ms {
            self.fail(format!(
                "timeout: n{leader} declared n{member} timed out after {silent_ms} ms of silence, \
                 less than the {timeout_ms} ms timeout"
            ));
        }
    }

    /// An operator forced a promotion: acknowledged writes the candidate's log lacks are lost,
    /// as the operator accepted. The committed log becomes the candidate's view of it: the
    /// prefix its log (which it frames and sends as a leader) shares with the committed log,
    /// then its own records up to the commit point it knows or its frames carry, or as far as
    /// they were committed once (before an earlier forced promotion cut them from the
    /// committed log: replicas that hold them may know them as committed). What it commits
    /// from now on extends that.
    pub fn forced(&mut self, part: usize, disk: &Disk, commit: u64) {
        let truth = &mut self.truth[part];
        let agree = truth
            .committed
            .iter()
            .zip(&disk.log)
            .take_while(|(committed, own)| committed == own)
            .count();
        truth.committed.truncate(agree);
        // What the candidate holds durably of them survives; the rest may still be lost.
        truth.acked = truth.acked.min(agree as u64).min(disk.durable);
        // Frames carry the commit point of the leader that cut them, and recovery trusts it:
        // what they say committed in this log stays committed.
        let carried = disk.log.iter().map(|entry| entry.commit_at_cut).max().unwrap_or(0);
        let mut known = usize::try_from(commit.max(carried)).expect("fits").min(disk.log.len());
        let once = (agree..disk.log.len())
            .take_while(|&index| truth.ever.contains(&(index, disk.log[index].value)))
            .last()
            .map_or(agree, |index| index + 1);
        known = known.max(once);
        if known > agree {
            truth.committed.extend_from_slice(&disk.log[agree..known]);
            truth.ever.extend((agree..known).map(|index| (index, disk.log[index].value)));
        }
        self.served.clear();
        self.held.clear();
    }

    /// A liveness failure the world found.
    pub fn stalled(&mut self, message: String) {
        self.fail(format!("liveness: {message}"));
    }
}

/// The newest set of a partition that any node recorded durably.
pub fn newest_set(nodes: &[Node], part: usize) -> Option<InSyncSet> {
    newest_set_ref(nodes, part).cloned()
}

fn newest_set_ref(nodes: &[Node], part: usize) -> Option<&InSyncSet> {
    nodes
        .iter()
        .filter_map(|node| node.parts[part].disk.facts.in_sync.as_ref())
        .max_by_key(|set| set.version())
}
