//! The operator: Strata's cluster is manual, so the harness does what a person would. It forms
//! the cluster, promotes a follower when the leader is dead or paused past the heartbeat
//! timeout (a checked promotion, never `force`: on a refusal it tries another follower, or
//! waits and tries again), points every other node at the current leader (admin mode, then
//! follower or learner), restarts a node that exited by itself (recording it as a problem),
//! and restarts a node whose log failed on a full disk once the disk has room again.
//! Promotions run on the caller's thread (bounded by [`PROMOTION_TIMEOUT`]); re-points run in
//! threads of their own, since a follower's set-role request returns only once it caught up.
//!
//! With automatic failover the controller promotes and re-points: the operator forms the
//! cluster with the same role calls (`leader` on the first voter, then `follower` or
//! `learner` naming a member's advertised peer address), gives such a role again to a node the
//! nemesis removed (it joins as a new member), and restarts what exited or whose log failed,
//! as above. It never promotes nor re-points; who leads it learns from the nodes
//! ([`Observer`]).

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::admin::{self, role_body};
use crate::client::{Reply, RespConnection};
use crate::cluster::{
    failed_partitions, Assignment, Cluster, Failover, Kind, PROMOTION_TIMEOUT, ROLE_TIMEOUT,
};
use crate::observer::Observer;
use crate::timeline::Timeline;

/// How long after a failed attempt the operator tries the same node again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How often the operator asks the leader whether it still leads.
const LEADER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How often the operator reads the leader's member list.
const MEMBER_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Member-list reads in a row that must miss a replica before it is pointed again.
const MEMBER_MISSES_MAX: u32 = 2;

/// How long a re-point to a leader that no longer leads may go on before another replaces it.
const SUPERSEDE_AFTER: Duration = Duration::from_secs(5);

/// How often the operator looks for partitions whose log failed.
const FAILED_LOG_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Extra time, past the heartbeat timeout, a paused leader gets before it is replaced.
const PROMOTION_GRACE: Duration = Duration::from_millis(500);

/// The role call that answers this code was made on a member of the cluster already (the
/// controller sets its role): the node is a member.
const CONTROLLED_CODE: i64 = 7036;

/// How long after a node joined (or said it is a member) the operator looks whether the
/// controller lists it.
const MEMBERSHIP_CHECK_DELAY: Duration = Duration::from_secs(5);

/// The operator's memory between ticks.
pub struct Operator {
    failover: Failover,
    /// With automatic failover: who leads, as the nodes say.
    pub observer: Observer,
    /// With automatic failover: role calls that made a node a member (answered success).
    pub joins: u64,
    /// With automatic failover: when to look whether the controller lists each node that
    /// joined.
    membership_checks: Vec<Option<Instant>>,
    /// How long the leader may be paused before a follower is promoted.
    promotion_delay: Duration,
    /// When each node was last given a role (or the promotion was last tried, for
    /// `promotion_attempt`).
    last_attempt: Vec<Option<Instant>>,
    promotion_attempt: Option<Instant>,
    leader_checked: Option<Instant>,
    failed_logs_checked: Option<Instant>,
    members_checked: Option<Instant>,
    /// Since when the leader has not answered the operator's status requests.
    leader_unreachable_since: Option<Instant>,
    /// Member-list reads in a row that did not show each node alive.
    member_misses: Vec<u32>,
    /// The leader last lost (dead or deposed): tried last until another leads (it may be the
    /// only member of the newest in-sync set, as when the others were out of it when it died).
    deposed: Option<usize>,
    /// Re-points under way, by node.
    pending: Vec<Option<PendingRepoint>>,
    pub promotions: u64,
    pub promotion_refusals: u64,
}

impl Operator {
    #[must_use]
    pub fn new(cluster: &Cluster) -> Operator {
        let timeout = Duration::from_millis(cluster.settings.heartbeat_timeout_ms);
        Operator {
            failover: cluster.settings.failover,
            observer: Observer::default(),
            joins: 0,
            membership_checks: vec![None; cluster.nodes.len()],
            promotion_delay: timeout + PROMOTION_GRACE,
            last_attempt: vec![None; cluster.nodes.len()],
            promotion_attempt: None,
            leader_checked: None,
            failed_logs_checked: None,
            members_checked: None,
            leader_unreachable_since: None,
            member_misses: vec![0; cluster.nodes.len()],
            deposed: None,
            pending: (0..cluster.nodes.len()).map(|_| None).collect(),
            promotions: 0,
            promotion_refusals: 0,
        }
    }

    /// One round: notice nodes that exited, ensure a leader, point the others at it (with
    /// automatic failover: learn who leads, and give a role to nodes not in the cluster).
    pub fn tick(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        restart_exited(cluster, timeline);
        self.restart_failed_logs(cluster, timeline);
        match self.failover {
            Failover::Manual => {
                if self.leader_needed(cluster, timeline) {
                    self.promote(cluster, timeline);
                }
                self.check_members(cluster, timeline);
                self.reconcile(cluster, timeline);
            }
            Failover::Automatic => {
                self.observer.observe(cluster, timeline);
                self.give_roles(cluster, timeline);
                self.check_membership(cluster, timeline);
            }
        }
        cluster.publish();
    }

    /// With automatic failover: gives every answering node that is not a member (never
    /// joined, or removed and added back) its role: `leader` to the first voter while nobody
    /// is a member, else `follower` or `learner` naming a member's peer address. One call at a
    /// time, in its own thread (it returns once the node has its role).
    fn give_roles(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        self.collect_joins(cluster, timeline);
        if self.pending.iter().any(Option::is_some) {
            // One at a time: the controller takes one membership change at once.
            return;
        }
        let anyone = (0..cluster.nodes.len()).any(|index| cluster.nodes[index].member);
        // The member a joining node names: the leader if it answers, else any that does.
        let answering_member = |index: usize| {
            let node = &cluster.nodes[index];
            node.member && node.available() && !node.isolated
        };
        let member = cluster
            .leader
            .filter(|&leader| answering_member(leader))
            .or_else(|| (0..cluster.nodes.len()).find(|&index| answering_member(index)));
        for index in 0..cluster.nodes.len() {
            let node = &cluster.nodes[index];
            let recent = self.last_attempt[index].is_some_and(|at| at.elapsed() < RETRY_INTERVAL);
            let busy = self.pending[index].is_some();
            if node.member || node.removed || !node.available() || recent || busy {
                continue;
            }
            let body = match (anyone, member) {
                (false, _) if node.kind == Kind::Voter => {
                    role_body("leader", Some(&node.name), None)
                }
                (false, _) | (true, None) => continue,
                (true, Some(member)) => {
                    let role = if node.kind == Kind::Voter { "follower" } else { "learner" };
                    let address = cluster.nodes[member].peer_address();
                    role_body(role, Some(&node.name), Some(&address))
                }
            };
            self.last_attempt[index] = Some(Instant::now());
            self.pending[index] = Some(start_join(cluster, timeline, index, body));
            return;
        }
    }

    /// Takes the results of the role calls of automatic failover that finished.
    fn collect_joins(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        for index in 0..cluster.nodes.len() {
            if !self.pending[index].as_ref().is_some_and(|pending| pending.thread.is_finished()) {
                continue;
            }
            let Some(pending) = self.pending[index].take() else { continue };
            let result = pending.thread.join().unwrap_or_else(|_| Err("thread panicked".into()));
            let already = result
                .as_ref()
                .is_err_and(|error| error.starts_with(&format!("refused {CONTROLLED_CODE}")));
            let detail = match &result {
                Ok(()) => "member",
                Err(_) if already => "refused 7036: it says it is a member already",
                Err(error) => error.as_str(),
            };
            timeline.end(pending.event, detail);
            let node = &mut cluster.nodes[index];
            if (result.is_ok() || already) && !node.removed {
                // A node that says it is a member is not asked again (a removed node that
                // was never told to leave says so too: the run then does not recover).
                node.member = true;
                self.joins += u64::from(result.is_ok());
                self.membership_checks[index] = Some(Instant::now() + MEMBERSHIP_CHECK_DELAY);
            }
        }
    }

    /// A while after a node joined, looks whether the controller lists it (in the leader's
    /// `/admin/nodes`, which adds every member the controller has): a node that answers its
    /// role call as a member while the controller dropped it is a problem.
    fn check_membership(&mut self, cluster: &Cluster, timeline: &mut Timeline) {
        let Some(leader) = cluster.leader.filter(|&index| cluster.nodes[index].available()) else {
            return;
        };
        for index in 0..cluster.nodes.len() {
            let due = self.membership_checks[index].is_some_and(|at| at <= Instant::now());
            if !due || !cluster.nodes[index].member {
                continue;
            }
            let Ok(reply) = cluster.status(leader, "/admin/nodes") else { return };
            let Some(rows) = reply.json["nodes"].as_array().filter(|_| reply.ok()) else {
                return;
            };
            self.membership_checks[index] = None;
            let name = &cluster.nodes[index].name;
            if !rows.iter().any(|row| row["name"].as_str() == Some(name.as_str())) {
                let leader_name = &cluster.nodes[leader].name;
                let text = format!(
                    "{name} answered its role call as a member, but {leader_name}'s member list \
                     does not name it (was it removed without being told?)"
                );
                timeline.problem(name, text);
            }
        }
    }

    /// Reads the leader's member list, as a person watching the cluster would: a node believed
    /// to follow the leader that the list does not show `alive` twice in a row (its
    /// registration lost when the leader restarted, its catch-up given up after a minute) is
    /// pointed at the leader again.
    fn check_members(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        if self.members_checked.is_some_and(|at| at.elapsed() < MEMBER_CHECK_INTERVAL) {
            return;
        }
        self.members_checked = Some(Instant::now());
        let Some(leader) = cluster.leader.filter(|&index| cluster.nodes[index].available()) else {
            return;
        };
        let Ok(reply) = cluster.status(leader, "/admin/nodes") else { return };
        let Some(rows) = reply.json["nodes"].as_array().filter(|_| reply.ok()) else { return };
        let wanted = Assignment::Replica { leader: cluster.nodes[leader].name.clone() };
        for index in 0..cluster.nodes.len() {
            let node = &cluster.nodes[index];
            if node.assignment != wanted || !node.available() {
                self.member_misses[index] = 0;
                continue;
            }
            let alive = rows.iter().any(|row| {
                row["name"].as_str() == Some(node.name.as_str())
                    && row["status"].as_str() == Some("alive")
            });
            self.member_misses[index] = if alive { 0 } else { self.member_misses[index] + 1 };
            if self.member_misses[index] >= MEMBER_MISSES_MAX {
                self.member_misses[index] = 0;
                let name = node.name.clone();
                let text = format!("the leader does not list {name} as alive");
                let number = timeline.begin("follower-lost", &name, &text);
                timeline.end(number, "");
                cluster.nodes[index].assignment = Assignment::Unassigned;
            }
        }
    }

    /// Restarts every answering node that has partitions whose log failed once its disk has
    /// room again, as the runbook says (`wal_failed_partitions` in INFO; such a partition
    /// refuses writes until the node restarts: README, "Durability modes"). With automatic
    /// failover, every node whose disk was full: the controller's Raft stops for good when
    /// it cannot write its files, and the process goes on without it (chaos/README.md, "What
    /// it found").
    fn restart_failed_logs(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        if self.failed_logs_checked.is_some_and(|at| at.elapsed() < FAILED_LOG_CHECK_INTERVAL) {
            return;
        }
        self.failed_logs_checked = Some(Instant::now());
        for index in 0..cluster.nodes.len() {
            let node = &cluster.nodes[index];
            if !node.available() || node.disk_full || node.isolated {
                continue;
            }
            let failed = failed_partitions(node.client_port).filter(|&count| count > 0);
            let why = match failed {
                Some(failed) => format!("wal_failed_partitions:{failed}"),
                None if self.failover == Failover::Automatic && node.disk_was_full => {
                    "its disk was full".to_string()
                }
                None => continue,
            };
            cluster.kill(index);
            cluster.restart_recorded(index, timeline, &why);
        }
    }

    /// Whether the cluster has an answering leader and every answering node follows it.
    /// With automatic failover: every answering node is a member, the nodes agree who leads,
    /// the leader lists each of them alive and serves (no `-TRYAGAIN`).
    #[must_use]
    pub fn settled(&self, cluster: &Cluster) -> bool {
        self.unsettled(cluster).is_none()
    }

    /// Why the cluster is not settled ([`Operator::settled`]), in a sentence; None when it
    /// is.
    #[must_use]
    pub fn unsettled(&self, cluster: &Cluster) -> Option<String> {
        match self.failover {
            Failover::Manual if Operator::settled_by_hand(cluster) => None,
            Failover::Manual => Some("no answering leader every answering node follows".into()),
            Failover::Automatic => unsettled_by_controller(cluster),
        }
    }

    /// [`Operator::settled`] with manual failover: the harness's own assignments.
    fn settled_by_hand(cluster: &Cluster) -> bool {
        let Some(leader) = cluster.leader.filter(|&index| cluster.nodes[index].available()) else {
            return false;
        };
        let name = &cluster.nodes[leader].name;
        cluster.nodes.iter().enumerate().all(|(index, node)| {
            index == leader
                || !node.available()
                || node.assignment == Assignment::Replica { leader: name.clone() }
        })
    }

    /// Whether a promotion is due: no leader, or a leader that is dead, no longer leads, or is
    /// paused past the promotion delay. A dead or deposed leader is forgotten at once (the
    /// clients then wait rather than talk to a node in admin mode) and is the last candidate.
    fn leader_needed(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) -> bool {
        let Some(leader) = cluster.leader else { return true };
        if self.leader_lost(cluster, leader, timeline) {
            self.leader_unreachable_since = None;
            cluster.leader = None;
            self.deposed = Some(leader);
            cluster.publish();
            return true;
        }
        let paused_since = cluster.nodes[leader].paused_since;
        let silent_since = paused_since.or(self.leader_unreachable_since);
        silent_since.is_some_and(|since| since.elapsed() >= self.promotion_delay)
    }

    /// Whether the leader died, or answers that it no longer leads (asked once a second).
    fn leader_lost(&mut self, cluster: &Cluster, leader: usize, timeline: &mut Timeline) -> bool {
        let node = &cluster.nodes[leader];
        if !node.running() {
            return true;
        }
        let due = self.leader_checked.is_none_or(|at| at.elapsed() >= LEADER_CHECK_INTERVAL);
        if node.paused_since.is_some() || !due {
            return false;
        }
        self.leader_checked = Some(Instant::now());
        // Only a clear answer deposes it; a leader that stops answering at all is replaced
        // once it was silent for the promotion delay, as a paused one is.
        let asked = Instant::now();
        let Ok(reply) = cluster.status(leader, "/admin/node/current") else {
            self.leader_unreachable_since.get_or_insert(asked);
            return false;
        };
        self.leader_unreachable_since = None;
        let role = reply.json["node"]["role"].as_str().unwrap_or("").to_string();
        if reply.ok() && role != "leader" {
            let text = format!("{} no longer leads (its role is {role:?})", node.name);
            let number = timeline.begin("leader-lost", &node.name, &text);
            timeline.end(number, "");
            return true;
        }
        false
    }

    /// Tries each answering follower in turn; the first that accepts leads.
    fn promote(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        if self.promotion_attempt.is_some_and(|at| at.elapsed() < RETRY_INTERVAL) {
            return;
        }
        self.promotion_attempt = Some(Instant::now());
        let mut candidates: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&index| cluster.leader != Some(index))
            .filter(|&index| cluster.nodes[index].kind == Kind::Voter)
            .filter(|&index| cluster.nodes[index].available())
            .collect();
        if let Some(deposed) = self.deposed {
            if let Some(position) = candidates.iter().position(|&index| index == deposed) {
                candidates.remove(position);
                candidates.push(deposed);
            }
        }
        // A stale promotion's follower goes first, once.
        if let Some(preferred) = cluster.preferred_candidate.take() {
            if let Some(position) = candidates.iter().position(|&index| index == preferred) {
                candidates.remove(position);
                candidates.insert(0, preferred);
            }
        }
        for index in candidates {
            let name = cluster.nodes[index].name.clone();
            let number = timeline.begin("promote", &name, "");
            let body = role_body("leader", Some(&name), None);
            let answer = cluster.set_role(index, &body, PROMOTION_TIMEOUT);
            match answer {
                Ok(reply) if reply.ok() => {
                    timeline.end(number, "leads");
                    cluster.leader = Some(index);
                    self.deposed = None;
                    self.leader_unreachable_since = None;
                    cluster.nodes[index].assignment = Assignment::Leader;
                    self.promotions += 1;
                    cluster.publish();
                    return;
                }
                Ok(reply) => {
                    self.promotion_refusals += 1;
                    let code = reply.code().unwrap_or(-1);
                    timeline.end(number, &format!("refused {code}: {}", reply.text.trim()));
                }
                Err(error) => timeline.end(number, &format!("no answer: {error}")),
            }
        }
    }

    /// Points every answering node that does not follow the current leader at it. Each
    /// re-point runs in its own thread (a follower's set-role request returns only once it
    /// caught up, which may take a while), so faults and progress go on meanwhile.
    fn reconcile(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        self.collect_repoints(cluster, timeline);
        let Some(leader) = cluster.leader.filter(|&index| cluster.nodes[index].available()) else {
            return;
        };
        let wanted = Assignment::Replica { leader: cluster.nodes[leader].name.clone() };
        for index in 0..cluster.nodes.len() {
            let node = &cluster.nodes[index];
            let recent = self.last_attempt[index].is_some_and(|at| at.elapsed() < RETRY_INTERVAL);
            self.supersede_stale_repoint(index, &cluster.nodes[leader].name, timeline);
            let busy = self.pending[index].is_some();
            let skip = index == leader || !node.available() || node.removed;
            if skip || node.assignment == wanted || recent || busy {
                continue;
            }
            self.last_attempt[index] = Some(Instant::now());
            self.pending[index] = Some(start_repoint(cluster, timeline, index, leader));
            cluster.nodes[index].assignment = Assignment::Unassigned;
            cluster.publish();
        }
    }

    /// Gives up waiting for a re-point to a node that no longer leads once it went on for a
    /// while (its set-role request waits up to a minute for a catch-up that cannot end): the
    /// next re-point supersedes it, and its thread ends unheeded.
    fn supersede_stale_repoint(&mut self, index: usize, leader: &str, timeline: &mut Timeline) {
        let stale = self.pending[index].as_ref().is_some_and(|pending| {
            pending.leader != leader && pending.started.elapsed() >= SUPERSEDE_AFTER
        });
        if let Some(pending) = self.pending[index].take_if(|_| stale) {
            timeline.end(pending.event, &format!("superseded: {leader} leads now"));
        }
    }

    /// Takes the results of the re-points that finished.
    fn collect_repoints(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        for index in 0..cluster.nodes.len() {
            if !self.pending[index].as_ref().is_some_and(|pending| pending.thread.is_finished()) {
                continue;
            }
            let Some(pending) = self.pending[index].take() else { continue };
            let result = pending.thread.join().unwrap_or_else(|_| Err("thread panicked".into()));
            timeline.end(pending.event, result.as_ref().map_or_else(String::as_str, |()| "done"));
            // A node restarted meanwhile is in admin mode whatever the answer said.
            let node = &mut cluster.nodes[index];
            if result.is_ok() && node.generation == pending.generation && node.available() {
                node.assignment = Assignment::Replica { leader: pending.leader };
                cluster.publish();
            }
        }
    }
}

/// A re-point running in its own thread.
struct PendingRepoint {
    /// The leader the node is pointed at.
    leader: String,
    /// The node's process generation when it began.
    generation: u64,
    started: Instant,
    /// Its timeline event.
    event: usize,
    thread: JoinHandle<Result<(), String>>,
}

/// Starts pointing node `index` at `leader`: admin mode, then follower or learner.
fn start_repoint(
    cluster: &Cluster,
    timeline: &mut Timeline,
    index: usize,
    leader: usize,
) -> PendingRepoint {
    let node = &cluster.nodes[index];
    let leader_node = &cluster.nodes[leader];
    let role = if node.kind == Kind::Voter { "follower" } else { "learner" };
    let detail = format!("{role} of {}", leader_node.name);
    let event = timeline.begin("repoint", &node.name, &detail);
    let address = cluster.leader_address(index, leader);
    let bodies =
        [role_body("admin", None, None), role_body(role, Some(&node.name), Some(&address))];
    let port = node.http_port;
    let thread = std::thread::spawn(move || set_roles(port, &bodies));
    PendingRepoint {
        leader: leader_node.name.clone(),
        generation: node.generation,
        started: Instant::now(),
        event,
        thread,
    }
}

/// Starts a role call of automatic failover (`body`) on node `index`.
fn start_join(
    cluster: &Cluster,
    timeline: &mut Timeline,
    index: usize,
    body: String,
) -> PendingRepoint {
    let node = &cluster.nodes[index];
    let event = timeline.begin("join", &node.name, &body);
    let port = node.http_port;
    let thread = std::thread::spawn(move || set_roles(port, &[body]));
    PendingRepoint {
        leader: String::new(),
        generation: node.generation,
        started: Instant::now(),
        event,
        thread,
    }
}

/// [`Operator::unsettled`] with automatic failover.
fn unsettled_by_controller(cluster: &Cluster) -> Option<String> {
    let Some(leader) = cluster.leader.filter(|&index| cluster.nodes[index].available()) else {
        return Some("no answering node leads".into());
    };
    let name = &cluster.nodes[leader].name;
    let outsiders = names(cluster, |node| node.available() && !node.member);
    if !outsiders.is_empty() {
        return Some(format!("{} not a member yet", outsiders.join(", ")));
    }
    if !Observer::agreed(cluster, leader) {
        return Some(format!("the nodes do not all say {name} leads and they follow"));
    }
    let missing = not_listed_alive(cluster, leader);
    if !missing.is_empty() {
        return Some(format!("{name} does not list {} alive", missing.join(", ")));
    }
    if !serves(cluster, leader) {
        return Some(format!("{name} does not answer reads (-TRYAGAIN, or no answer)"));
    }
    None
}

/// The names of the nodes `select` picks.
fn names(cluster: &Cluster, select: impl Fn(&crate::cluster::Node) -> bool) -> Vec<String> {
    cluster.nodes.iter().filter(|node| select(node)).map(|node| node.name.clone()).collect()
}

/// The answering nodes `leader`'s member list does not show alive (all of them when it does
/// not answer).
fn not_listed_alive(cluster: &Cluster, leader: usize) -> Vec<String> {
    let others =
        |node: &crate::cluster::Node| node.available() && node.name != cluster.nodes[leader].name;
    let Ok(reply) = cluster.status(leader, "/admin/nodes") else { return names(cluster, others) };
    let Some(rows) = reply.json["nodes"].as_array().filter(|_| reply.ok()) else {
        return names(cluster, others);
    };
    names(cluster, |node| {
        others(node)
            && !rows.iter().any(|row| {
                row["name"].as_str() == Some(node.name.as_str())
                    && row["status"].as_str() == Some("alive")
            })
    })
}

/// Whether `leader` answers a read normally (its lease holds); the read is no operation of
/// the history (a key no workload uses).
fn serves(cluster: &Cluster, leader: usize) -> bool {
    let port = cluster.nodes[leader].client_port;
    let Ok(mut connection) = RespConnection::connect(port, Duration::from_secs(1)) else {
        return false;
    };
    matches!(connection.command(&["GET", "chaos-settled"]), Ok(Reply::Bulk(_)))
}

/// Set-role requests in turn; stops at the first that fails.
fn set_roles(port: u16, bodies: &[String]) -> Result<(), String> {
    for body in bodies {
        let path = "/admin/node/current";
        let reply = admin::request(port, "POST", path, Some(body), ROLE_TIMEOUT)
            .map_err(|error| format!("no answer: {error}"))?;
        if !reply.ok() {
            let code = reply.code().unwrap_or(-1);
            return Err(format!("refused {code}: {}", reply.text.trim()));
        }
    }
    Ok(())
}

/// Restarts every node whose process ended without the nemesis killing it: that is a problem
/// (a panic aborts the process; a damaged WAL exits with 5).
fn restart_exited(cluster: &mut Cluster, timeline: &mut Timeline) {
    for index in 0..cluster.nodes.len() {
        let Some(status) = cluster.exited(index) else { continue };
        let name = cluster.nodes[index].name.clone();
        timeline.problem(&name, format!("{name} exited by itself ({status}); see its node.log"));
        if let Err(error) = cluster.restart(index) {
            timeline.problem(&name, format!("restarting {name}: {error}"));
        }
    }
}
