//! Who leads a cluster with automatic failover, as its nodes say: the harness no longer
//! decides it, so it asks every answering node what it is ([`crate::probe`]) a few times a
//! second, takes the newest leader for its view (the final reads, the nemesis's choice of
//! nodes, the progress lines) and enters every change of leader in the timeline (`leader`).

use std::time::{Duration, Instant};

use crate::cluster::{Assignment, Cluster};
use crate::probe::{self, Mode, Serving};
use crate::timeline::Timeline;

/// How often the nodes are asked.
const OBSERVE_INTERVAL: Duration = Duration::from_millis(300);

/// The observer's memory between ticks.
#[derive(Default)]
pub struct Observer {
    observed: Option<Instant>,
    /// The leader last seen and its epoch.
    leader: Option<(usize, u64)>,
    /// Changes of leader seen.
    pub changes: u64,
}

impl Observer {
    /// Asks every running, unpaused, reachable node what it is (once per interval) and
    /// updates the cluster's leader and assignments. A leader that stops answering stays the
    /// leader until another says it leads, as for a client that cannot tell a pause from a
    /// slow node; a dead one is forgotten at once.
    pub fn observe(&mut self, cluster: &mut Cluster, timeline: &mut Timeline) {
        if cluster.leader.is_some_and(|leader| !cluster.nodes[leader].running()) {
            cluster.leader = None;
        }
        if self.observed.is_some_and(|at| at.elapsed() < OBSERVE_INTERVAL) {
            return;
        }
        self.observed = Some(Instant::now());
        let answers = ask_every_node(cluster);
        if let Some(leader) = probe::newest_leader(&answers) {
            let epoch = answers.iter().find(|(index, _)| *index == leader).map(|(_, s)| s.epoch);
            self.note_leader(cluster, timeline, leader, epoch.unwrap_or(0));
        }
        assign(cluster, &answers);
    }

    /// Whether the answers name `leader` leading and every other answering node a replica.
    #[must_use]
    pub fn agreed(cluster: &Cluster, leader: usize) -> bool {
        let answers = ask_every_node(cluster);
        let leads = probe::newest_leader(&answers) == Some(leader);
        let others_follow = answers
            .iter()
            .filter(|(index, _)| *index != leader)
            .all(|(_, serving)| serving.mode == Mode::Replica);
        let everyone_answered = cluster
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.available())
            .all(|(index, _)| answers.iter().any(|(answered, _)| *answered == index));
        leads && others_follow && everyone_answered
    }

    fn note_leader(
        &mut self,
        cluster: &mut Cluster,
        timeline: &mut Timeline,
        leader: usize,
        epoch: u64,
    ) {
        if self.leader != Some((leader, epoch)) {
            self.leader = Some((leader, epoch));
            self.changes += 1;
            let name = cluster.nodes[leader].name.clone();
            let number = timeline.begin("leader", &name, &format!("{name} leads at epoch {epoch}"));
            timeline.end(number, "");
        }
        cluster.leader = Some(leader);
    }
}

/// What each running, unpaused node not cut off answers.
fn ask_every_node(cluster: &Cluster) -> Vec<(usize, Serving)> {
    cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| node.available() && !node.isolated)
        .filter_map(|(index, node)| Some((index, probe::ask(node.client_port)?)))
        .collect()
}

/// Each answering node's assignment from its mode: the leader's replicas follow it.
fn assign(cluster: &mut Cluster, answers: &[(usize, Serving)]) {
    let leader_name = cluster.leader.map(|leader| cluster.nodes[leader].name.clone());
    for (index, serving) in answers {
        let assignment = match (serving.mode, &leader_name) {
            (Mode::Leader, _) if cluster.leader == Some(*index) => Assignment::Leader,
            (Mode::Replica, Some(leader)) => Assignment::Replica { leader: leader.clone() },
            _ => Assignment::Unassigned,
        };
        cluster.nodes[*index].assignment = assignment;
    }
}
