//! Liveness and readiness, for load balancers, systemd and orchestrators: `GET /healthz`
//! answers while the process serves its admin port; `GET /readyz` answers 200 only when the
//! node can do its job in its role, and 503 with the reason otherwise.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strata_core::cluster::{NodeStatus, Role};
use strata_core::PartitionId;
use strata_shard::ReplicaProgress;

/// What readiness is decided from, read from the control thread and the shards at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    pub role: Role,
    /// The process was told to stop and is leaving its cluster.
    pub shutting_down: bool,
    /// A follower's or learner's view of its leader: `None` before it knows one.
    pub leader_status: Option<NodeStatus>,
    /// Partitions of this node, and how many of them stream from the leader and hold what it
    /// had when their stream started (replicas).
    pub partitions: usize,
    pub caught_up_partitions: usize,
    /// Leader: partitions refusing writes for lack of in-sync members.
    pub refusing_partitions: usize,
    /// Leader with automatic failover: its lease with the controller ran out, so it serves
    /// nothing until it is confirmed again.
    pub lease_expired: bool,
}

/// Why a node is not ready, in the words `/readyz` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NotReady {
    ShuttingDown,
    NoRole,
    NoLeader,
    LeaderLost(NodeStatus),
    CatchingUp { caught_up: usize, partitions: usize },
    WritesRefused { partitions: usize },
    LeaseExpired,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::ShuttingDown => formatter.write_str("shutting down"),
            NotReady::NoRole => formatter.write_str("admin mode: the node has no role yet"),
            NotReady::NoLeader => formatter.write_str("no leader known yet"),
            NotReady::LeaderLost(status) => {
                write!(formatter, "the leader does not answer (status {})", status.name())
            }
            NotReady::CatchingUp { caught_up, partitions } => write!(
                formatter,
                "catching up: {caught_up} of {partitions} partitions hold what the leader had"
            ),
            NotReady::WritesRefused { partitions } => write!(
                formatter,
                "{partitions} partitions refuse writes: fewer members in sync than \
                 min_insync_replicas"
            ),
            NotReady::LeaseExpired => {
                formatter.write_str("the leader's lease with the controller ran out")
            }
        }
    }
}

/// Ready, or the first reason it is not.
pub(crate) fn readiness(observed: &Observed) -> Result<(), NotReady> {
    if observed.shutting_down {
        return Err(NotReady::ShuttingDown);
    }
    match observed.role {
        Role::Admin => Err(NotReady::NoRole),
        Role::Standalone => Ok(()),
        Role::Leader if observed.lease_expired => Err(NotReady::LeaseExpired),
        Role::Leader if observed.refusing_partitions > 0 => {
            Err(NotReady::WritesRefused { partitions: observed.refusing_partitions })
        }
        Role::Leader => Ok(()),
        Role::Follower | Role::Learner => replica_readiness(observed),
    }
}

fn replica_readiness(observed: &Observed) -> Result<(), NotReady> {
    match observed.leader_status {
        None => return Err(NotReady::NoLeader),
        Some(NodeStatus::Alive) => {}
        Some(status) => return Err(NotReady::LeaderLost(status)),
    }
    if observed.caught_up_partitions < observed.partitions {
        return Err(NotReady::CatchingUp {
            caught_up: observed.caught_up_partitions,
            partitions: observed.partitions,
        });
    }
    Ok(())
}

/// `/readyz`'s body: `{"ready": bool, "role": …, "reason": …}` (no reason when ready).
pub(crate) fn readiness_json(observed: &Observed, outcome: &Result<(), NotReady>) -> Value {
    match outcome {
        Ok(()) => json!({ "ready": true, "role": observed.role.name() }),
        Err(reason) => json!({
            "ready": false,
            "role": observed.role.name(),
            "reason": reason.to_string(),
        }),
    }
}

/// A member as the cluster's health shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberHealth {
    pub name: String,
    pub role: Role,
    pub status: NodeStatus,
    /// The leader's view: in sync on every partition it streams. `None` elsewhere.
    pub in_sync: Option<bool>,
    /// Records the member has yet to acknowledge (the leader's view).
    pub lag: Option<u64>,
}

/// What one node knows of its cluster's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterHealth {
    pub observed: Observed,
    /// This node's name in the cluster (empty in admin and standalone mode).
    pub name: String,
    /// Every other member this node lists, the leader included.
    pub members: Vec<MemberHealth>,
    /// Leader: the smallest in-sync set over the partitions, the leader included.
    pub smallest_in_sync_set: Option<usize>,
    pub min_insync_replicas: usize,
}

impl ClusterHealth {
    /// The leader's name, as this node knows it.
    fn leader(&self) -> Option<&str> {
        if self.observed.role == Role::Leader {
            return Some(&self.name);
        }
        let leader = self.members.iter().find(|member| member.role == Role::Leader);
        leader.map(|member| member.name.as_str())
    }

    /// What is wrong, in words; empty when the cluster is healthy as this node sees it.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(reason) = readiness(&self.observed) {
            problems.push(format!("this node is not ready: {reason}"));
        }
        if matches!(self.observed.role, Role::Follower | Role::Learner) && self.leader().is_none() {
            problems.push("no leader is known".into());
        }
        for member in &self.members {
            if member.status != NodeStatus::Alive {
                problems.push(format!("{} ({}) is {}", member.name, member.role.name(), {
                    member.status.name()
                }));
            } else if member.in_sync == Some(false) && member.role == Role::Follower {
                problems.push(format!("follower {} is not in sync", member.name));
            }
        }
        if let Some(smallest) = self.smallest_in_sync_set {
            if smallest < self.min_insync_replicas {
                problems.push(format!(
                    "an in-sync set holds {smallest} members, fewer than min_insync_replicas \
                     ({}): writes to it are refused",
                    self.min_insync_replicas
                ));
            }
        }
        problems
    }

    /// `GET /admin/health`'s fields.
    pub(crate) fn json(&self) -> serde_json::Map<String, Value> {
        let problems = self.problems();
        let outcome = readiness(&self.observed);
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|member| {
                json!({
                    "name": member.name,
                    "role": member.role.name(),
                    "status": member.status.name(),
                    "in_sync": member.in_sync,
                    "lag": member.lag,
                })
            })
            .collect();
        let mut fields = serde_json::Map::new();
        fields.insert("healthy".into(), json!(problems.is_empty()));
        fields.insert("problems".into(), json!(problems));
        fields.insert("name".into(), json!(self.name));
        fields.insert("role".into(), json!(self.observed.role.name()));
        fields.insert("ready".into(), json!(outcome.is_ok()));
        fields.insert("leader".into(), json!(self.leader()));
        fields.insert("members".into(), Value::Array(members));
        fields.insert("smallest_in_sync_set".into(), json!(self.smallest_in_sync_set));
        fields.insert("min_insync_replicas".into(), json!(self.min_insync_replicas));
        fields
    }
}

impl crate::roles::Control {
    /// `GET /admin/health`: this node's view of its cluster.
    pub(crate) fn cluster_health(&self) -> ClusterHealth {
        let observed = self.observed_health();
        let rows = self.rows().unwrap_or_default();
        let progress = self.handle.shared.progress();
        let leading = observed.role == Role::Leader;
        let in_sync_of = |name: &str| leading.then(|| streams_in_sync(&progress, name));
        let mut rows = rows.into_iter();
        let own = rows.next();
        let members = rows
            .map(|row| MemberHealth {
                // Learners are never waited for: no flag rather than a misleading "no".
                in_sync: if row.role == Role::Follower { in_sync_of(&row.name) } else { None },
                name: row.name,
                role: row.role,
                status: row.status,
                lag: row.lag,
            })
            .collect();
        let smallest_in_sync_set = leading.then(|| {
            (0..self.handle.partition_count)
                .map(|partition| {
                    let partition = strata_core::PartitionId(partition);
                    let followers = progress
                        .iter()
                        .filter(|((_, of), entry)| *of == partition && entry.in_sync)
                        .count();
                    followers + 1
                })
                .min()
                .unwrap_or(1)
        });
        ClusterHealth {
            observed,
            name: own.map(|row| row.name).unwrap_or_default(),
            members,
            smallest_in_sync_set,
            min_insync_replicas: self.config.min_insync_replicas,
        }
    }
}

/// Whether the leader's member `name` is in sync: on every partition it streams, and
/// streaming at all (a member whose streams are gone, killed or timed out, is not, even while
/// an in-sync set still names it).
fn streams_in_sync(
    progress: &BTreeMap<(String, PartitionId), ReplicaProgress>,
    name: &str,
) -> bool {
    let mut streams = progress.iter().filter(|((member, _), _)| member == name).peekable();
    let streaming = streams.peek().is_some();
    streaming && streams.all(|(_, progress)| progress.in_sync)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(role: Role) -> Observed {
        Observed {
            role,
            shutting_down: false,
            leader_status: None,
            partitions: 8,
            caught_up_partitions: 0,
            refusing_partitions: 0,
            lease_expired: false,
        }
    }

    #[test]
    fn a_member_is_in_sync_only_while_it_streams_every_partition_in_sync() {
        let entry = |in_sync| ReplicaProgress {
            kind: strata_core::peer::ReplicaKind::Follower,
            acked_lsn: strata_core::Lsn(10),
            leader_lsn: strata_core::Lsn(10),
            in_sync,
        };
        let mut progress = BTreeMap::new();
        progress.insert(("hermione".to_string(), PartitionId(0)), entry(true));
        progress.insert(("hermione".to_string(), PartitionId(1)), entry(true));
        progress.insert(("ron".to_string(), PartitionId(0)), entry(true));
        progress.insert(("ron".to_string(), PartitionId(1)), entry(false));
        assert!(streams_in_sync(&progress, "hermione"));
        // One partition behind: not in sync.
        assert!(!streams_in_sync(&progress, "ron"));
        // No stream at all (killed, timed out), whatever an in-sync set still says: not.
        assert!(!streams_in_sync(&progress, "neville"));
        progress.retain(|(name, _), _| name != "hermione");
        assert!(!streams_in_sync(&progress, "hermione"));
    }

    #[test]
    fn a_node_without_a_role_is_alive_but_not_ready() {
        assert_eq!(readiness(&observed(Role::Admin)), Err(NotReady::NoRole));
        assert_eq!(readiness(&observed(Role::Standalone)), Ok(()));
    }

    #[test]
    fn shutting_down_comes_first() {
        let stopping = Observed { shutting_down: true, ..observed(Role::Standalone) };
        assert_eq!(readiness(&stopping), Err(NotReady::ShuttingDown));
        let json = readiness_json(&stopping, &readiness(&stopping));
        assert_eq!(json["ready"], false);
        assert_eq!(json["reason"], "shutting down");
    }

    #[test]
    fn a_replica_is_ready_once_it_follows_a_live_leader_and_caught_up() {
        let follower = observed(Role::Follower);
        assert_eq!(readiness(&follower), Err(NotReady::NoLeader));
        let following = Observed { leader_status: Some(NodeStatus::Alive), ..follower };
        assert_eq!(
            readiness(&following),
            Err(NotReady::CatchingUp { caught_up: 0, partitions: 8 })
        );
        let caught_up = Observed { caught_up_partitions: 8, ..following };
        assert_eq!(readiness(&caught_up), Ok(()));
        let lost = Observed { leader_status: Some(NodeStatus::Timeout), ..caught_up.clone() };
        assert_eq!(readiness(&lost), Err(NotReady::LeaderLost(NodeStatus::Timeout)));
        let learner = Observed { role: Role::Learner, ..caught_up };
        assert_eq!(readiness(&learner), Ok(()));
    }

    fn member(name: &str, role: Role, status: NodeStatus, in_sync: Option<bool>) -> MemberHealth {
        MemberHealth { name: name.into(), role, status, in_sync, lag: Some(0) }
    }

    #[test]
    fn a_leader_with_its_followers_in_sync_is_healthy() {
        let health = ClusterHealth {
            observed: observed(Role::Leader),
            name: "boss".into(),
            members: vec![
                member("f1", Role::Follower, NodeStatus::Alive, Some(true)),
                member("l1", Role::Learner, NodeStatus::Alive, Some(false)),
            ],
            smallest_in_sync_set: Some(2),
            min_insync_replicas: 2,
        };
        assert_eq!(health.problems(), Vec::<String>::new());
        let json = health.json();
        assert_eq!(json["healthy"], true);
        assert_eq!(json["leader"], "boss");
        assert_eq!(json["members"][0]["in_sync"], true);
    }

    #[test]
    fn a_lost_member_and_a_small_in_sync_set_are_problems() {
        let health = ClusterHealth {
            observed: observed(Role::Leader),
            name: "boss".into(),
            members: vec![
                member("f1", Role::Follower, NodeStatus::Timeout, Some(false)),
                member("f2", Role::Follower, NodeStatus::Alive, Some(false)),
            ],
            smallest_in_sync_set: Some(1),
            min_insync_replicas: 2,
        };
        let problems = health.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("f1") && problems[0].contains("timeout"), "{problems:?}");
        assert!(problems[1].contains("f2 is not in sync"), "{problems:?}");
        assert!(problems[2].contains("min_insync_replicas (2)"), "{problems:?}");
        assert_eq!(health.json()["healthy"], false);
    }

    #[test]
    fn a_follower_without_a_leader_is_unhealthy() {
        let health = ClusterHealth {
            observed: Observed {
                leader_status: Some(NodeStatus::Timeout),
                caught_up_partitions: 8,
                ..observed(Role::Follower)
            },
            name: "f1".into(),
            members: vec![member("boss", Role::Leader, NodeStatus::Timeout, None)],
            smallest_in_sync_set: None,
            min_insync_replicas: 1,
        };
        let problems = health.problems();
        assert!(problems[0].contains("leader does not answer"), "{problems:?}");
        assert!(problems[1].contains("boss (leader) is timeout"), "{problems:?}");
    }

    #[test]
    fn a_leader_is_ready_while_it_accepts_writes() {
        let leader = observed(Role::Leader);
        assert_eq!(readiness(&leader), Ok(()));
        let refusing = Observed { refusing_partitions: 3, ..leader.clone() };
        assert_eq!(readiness(&refusing), Err(NotReady::WritesRefused { partitions: 3 }));
        let unconfirmed = Observed { lease_expired: true, ..leader };
        assert_eq!(readiness(&unconfirmed), Err(NotReady::LeaseExpired));
        let json = readiness_json(&unconfirmed, &readiness(&unconfirmed));
        assert_eq!(json["role"], "leader");
        assert!(json["reason"].as_str().unwrap().contains("lease"));
    }
}
