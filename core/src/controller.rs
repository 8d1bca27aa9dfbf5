//! The cluster controller's decisions (the high-availability work, first step): the state the
//! controller replicates and the pure function that applies one command to it. Nothing here
//! is wired yet: the Raft log that will order and keep the commands (openraft, at the control
//! thread's edge) and the runtime that will turn the effects into role changes come next.
//!
//! Every member applies the same commands in the same order and reaches the same state, so
//! [`ClusterState::apply`] must depend on nothing but the state and the command: no clock, no
//! randomness (a command carries what its proposer observed, such as durable LSNs).
//!
//! What it keeps true (checked in [`ClusterState::check_invariants`]):
//! - epochs come only from here and only grow: a new data leader gets `leader_epoch + 1`;
//! - the data leader is a voter in the in-sync set of every partition, and is not fenced;
//! - an in-sync set changes only by compare-and-set on its `isr_epoch`, asked by the leader of
//!   the current epoch, and a change that drops members keeps at least `min_insync` of them;
//! - an election picks only an unfenced voter in the in-sync set of every partition, the one
//!   with the most durable records first; nobody else, ever (no unclean election here);
//! - the last voter cannot be removed, nor the data leader before a transfer.

use std::collections::BTreeMap;
use std::fmt;

use crate::ids::{Epoch, Lsn, PartitionId};

mod jobs;
mod succession;
pub use jobs::{JobKind, JobRecord, JobState, FINISHED_JOBS_KEPT};
pub use succession::{plan_succession, NoSuccessor};

/// Followers (voters other than the data leader) a cluster admits, as the admin API does.
pub const FOLLOWERS_MAX: usize = crate::cluster::FOLLOWERS_MAX;

/// Which cluster a node belongs to: a name people read and an identifier made at init.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterTag {
    pub name: String,
    /// Written as 32 hexadecimal digits (JSON numbers do not carry 128 bits everywhere).
    #[serde(with = "hex_identifier")]
    pub id: u128,
}

/// A 128-bit identifier as 32 hexadecimal digits.
pub mod hex_identifier {
    use serde::{Deserialize, Deserializer, Serializer};

    /// # Errors
    ///
    /// The serializer's.
    pub fn serialize<S: Serializer>(id: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{id:032x}"))
    }

    /// # Errors
    ///
    /// The text is not 1 to 32 hexadecimal digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// Reads 1 to 32 hexadecimal digits.
    ///
    /// # Errors
    ///
    /// Anything else, said in words.
    pub fn parse(text: &str) -> Result<u128, String> {
        if text.is_empty() || text.len() > 32 {
            return Err(format!("{text:?} is not 1 to 32 hexadecimal digits"));
        }
        u128::from_str_radix(text, 16).map_err(|error| format!("{text:?}: {error}"))
    }
}

impl fmt::Display for ClusterTag {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ({:032x})", self.name, self.id)
    }
}

/// Whether a member may lead and vote, or only follows asynchronously.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MemberKind {
    Voter,
    Learner,
}

/// What a node says of itself when it joins.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applicant {
    pub name: String,
    pub peer_address: String,
    pub kind: MemberKind,
    /// Bumped by the node whenever it lost its data: a new incarnation is a new replica.
    pub incarnation: u64,
    /// Its product version, `major.minor.patch`.
    pub version: String,
    /// The newest state of a controller it applied (`ClusterState::metadata_version`; 0 for
    /// a node that never was in a cluster): a node that saw a newer state than the
    /// controller's comes from another history of the cluster and is refused.
    #[serde(default)]
    pub metadata_version: u64,
}

/// A member of the cluster, as the controller keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberRecord {
    pub peer_address: String,
    pub kind: MemberKind,
    pub incarnation: u64,
    pub version: String,
    /// Its session with the controller expired: not electable, not admitted to an in-sync set.
    pub fenced: bool,
}

/// One partition's in-sync set: the data leader and the followers that hold every
/// acknowledged record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionRecord {
    pub in_sync: Vec<String>,
    /// Bumped by every change of `in_sync` within one leader epoch, reset when the leader
    /// changes.
    pub isr_epoch: u64,
}

/// What the controller replicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterState {
    /// None until the cluster is initialised.
    pub tag: Option<ClusterTag>,
    /// Bumped by every command applied; a joining node's view is checked against it.
    pub metadata_version: u64,
    pub members: BTreeMap<String, MemberRecord>,
    pub data_leader: Option<String>,
    pub leader_epoch: Epoch,
    pub min_insync: usize,
    pub partitions: Vec<PartitionRecord>,
    /// Long operations by id (transfers, removals, joins).
    #[serde(default)]
    pub jobs: BTreeMap<u64, JobRecord>,
    /// Room for the slot table of the scale-out work: which member serves which hash slots.
    /// No command sets it yet, so it stays empty; it travels in snapshots already, so that
    /// state written without it reads back (empty) and state with it is kept whole.
    #[serde(default)]
    pub slot_table: SlotTable,
}

/// Which member serves which ranges of hash slots, by version.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotTable {
    /// Bumped by every change of the table.
    pub version: u64,
    pub ranges: Vec<SlotRange>,
}

/// Hash slots `first..=last`, served by `member`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
    pub member: String,
}

/// One change the controller's log carries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Makes a cluster of one voter, which leads.
    Init { tag: ClusterTag, leader: Applicant, partitions: u32, min_insync: usize },
    /// Admits a node (a voter as a follower, out of every in-sync set until its leader adds
    /// it; or a learner). `tag_id` is the cluster the node believes it joins (None: a node
    /// that never was in one).
    Join { tag_id: Option<u128>, applicant: Applicant },
    /// Takes a member out (not the data leader: transfer first).
    Remove { name: String },
    /// The member's session expired: out of elections and of in-sync sets it may leave.
    Fence { name: String, incarnation: u64 },
    /// The member heartbeats again.
    Unfence { name: String, incarnation: u64 },
    /// The data leader changes one partition's in-sync set, if nothing changed it since it
    /// read `isr_epoch`.
    AlterInSync {
        partition: PartitionId,
        leader_epoch: Epoch,
        isr_epoch: u64,
        in_sync: Vec<String>,
    },
    /// The data leader is lost: elect a successor among the members in sync everywhere;
    /// `durable` is what the proposer knows of each member's durable records (summed over
    /// partitions).
    Elect { durable: BTreeMap<String, Lsn> },
    /// A planned change of leader to `to`, once it holds everything (checked by the caller
    /// before proposing; here only its eligibility).
    Transfer { to: String },
    /// The data leader is lost and the proposer checked `leader` against the in-sync sets the
    /// controller recorded (`plan_succession`): `leader` leads at the next epoch, at least
    /// `at_least` (above every epoch a member has seen), with `in_sync` (per partition, the
    /// leader first) as its first sets. Applies only if the leader epoch is still
    /// `previous_epoch` and every partition's set is still at the version in `basis` (what
    /// the choice was made on; empty: not checked), so two proposers racing appoint one
    /// leader, and a set changed meanwhile makes the proposer choose again.
    Appoint {
        leader: String,
        previous_epoch: Epoch,
        at_least: Epoch,
        in_sync: Vec<Vec<String>>,
        #[serde(default)]
        basis: Vec<u64>,
    },
    /// The data leader of `epoch` tells the set it recorded for `partition`, version
    /// `version` of that epoch (members recorded it first; the controller keeps the newest it
    /// was told, for the record and for display).
    RecordInSync { partition: PartitionId, epoch: Epoch, version: u64, in_sync: Vec<String> },
    /// A long operation starts (`id` from [`ClusterState::next_job_id`]); one at a time.
    StartJob { id: u64, record: JobRecord },
    /// A running job reached a step.
    AdvanceJob { id: u64, progress: String },
    /// A running job ended, with why it failed if it did.
    FinishJob { id: u64, error: Option<String>, at_ms: u64 },
}

impl fmt::Display for Command {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Init { tag, leader, .. } => {
                write!(formatter, "init {tag} led by {}", leader.name)
            }
            Command::Join { applicant, .. } => write!(formatter, "join {}", applicant.name),
            Command::Remove { name } => write!(formatter, "remove {name}"),
            Command::Fence { name, .. } => write!(formatter, "fence {name}"),
            Command::Unfence { name, .. } => write!(formatter, "unfence {name}"),
            Command::AlterInSync { partition, in_sync, .. } => {
                write!(formatter, "in-sync set of partition {partition}: {in_sync:?}")
            }
            Command::Elect { .. } => write!(formatter, "elect"),
            Command::Transfer { to } => write!(formatter, "transfer to {to}"),
            Command::Appoint { leader, .. } => write!(formatter, "appoint {leader}"),
            Command::StartJob { id, record } => {
                write!(formatter, "job {id}: {:?} of {}", record.kind, record.subject)
            }
            Command::RecordInSync { partition, in_sync, .. } => {
                write!(formatter, "recorded in-sync set of partition {partition}: {in_sync:?}")
            }
            Command::AdvanceJob { id, progress } => write!(formatter, "job {id}: {progress}"),
            Command::FinishJob { id, error, .. } => write!(formatter, "job {id} ends: {error:?}"),
        }
    }
}

/// What applying a command asks the members to do.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Effect {
    /// `leader` leads from `epoch` on; every other member follows it.
    NewLeader { leader: String, epoch: Epoch },
    /// A partition's in-sync set changed.
    InSyncChanged { partition: PartitionId, isr_epoch: u64, in_sync: Vec<String> },
    /// A member left the cluster and should go back to admin mode.
    Removed { name: String },
}

/// Why a command was not applied; the state is then unchanged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Refusal {
    NotInitialised,
    AlreadyInitialised {
        tag: ClusterTag,
    },
    OtherCluster {
        ours: ClusterTag,
        theirs: u128,
    },
    VersionMismatch {
        ours: String,
        theirs: String,
    },
    TooManyFollowers,
    MetadataAhead {
        ours: u64,
        theirs: u64,
    },
    NameTaken {
        name: String,
    },
    UnknownMember {
        name: String,
    },
    StaleIncarnation {
        name: String,
        known: u64,
        given: u64,
    },
    LastVoter,
    TransferFirst {
        name: String,
    },
    StaleLeaderEpoch {
        current: Epoch,
        given: Epoch,
    },
    StaleIsrEpoch {
        partition: PartitionId,
        current: u64,
        given: u64,
    },
    BadInSyncSet {
        partition: PartitionId,
        reason: String,
    },
    NoEligibleLeader,
    /// Another job is running: one at a time.
    Busy {
        job: u64,
    },
    NotEligible {
        name: String,
        reason: String,
    },
    BadSettings {
        reason: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotInitialised => write!(formatter, "the cluster is not initialised"),
            Refusal::AlreadyInitialised { tag } => {
                write!(formatter, "the cluster is already initialised as {tag}")
            }
            Refusal::OtherCluster { ours, theirs } => write!(
                formatter,
                "this node belongs to cluster {theirs:032x}, not to this cluster, {ours}"
            ),
            Refusal::VersionMismatch { ours, theirs } => {
                write!(formatter, "version {theirs} cannot join a cluster of version {ours}")
            }
            Refusal::TooManyFollowers => {
                write!(formatter, "the cluster has {FOLLOWERS_MAX} followers already")
            }
            Refusal::MetadataAhead { ours, theirs } => write!(
                formatter,
                "the node has seen metadata version {theirs}, newer than this cluster's {ours}: \
                 it comes from another history of the cluster"
            ),
            Refusal::NameTaken { name } => write!(formatter, "a member is named {name} already"),
            Refusal::UnknownMember { name } => write!(formatter, "no member is named {name}"),
            Refusal::StaleIncarnation { name, known, given } => {
                write!(formatter, "{name} is at incarnation {known}, not {given}")
            }
            Refusal::LastVoter => write!(formatter, "the last voter cannot be removed"),
            Refusal::TransferFirst { name } => {
                write!(formatter, "{name} leads: transfer the leadership before removing it")
            }
            Refusal::StaleLeaderEpoch { current, given } => {
                write!(formatter, "epoch {given} is not the current leader epoch {current}")
            }
            Refusal::StaleIsrEpoch { partition, current, given } => write!(
                formatter,
                "the in-sync set of partition {partition} is at isr_epoch {current}, not {given}"
            ),
            Refusal::BadInSyncSet { partition, reason } => {
                write!(formatter, "in-sync set of partition {partition}: {reason}")
            }
            Refusal::NoEligibleLeader => write!(
                formatter,
                "no unfenced voter is in the in-sync set of every partition: no leader can be \
                 elected without losing acknowledged writes"
            ),
            Refusal::NotEligible { name, reason } => {
                write!(formatter, "{name} cannot lead: {reason}")
            }
            Refusal::BadSettings { reason } => write!(formatter, "{reason}"),
            Refusal::Busy { job } => write!(formatter, "job {job} is running: one at a time"),
        }
    }
}

impl ClusterState {
    /// Applies `command`: the new state is in `self` and the effects are returned, or the
    /// refusal is returned and `self` is unchanged.
    ///
    /// # Errors
    ///
    /// The [`Refusal`] that says why the command does not apply to this state.
    pub fn apply(&mut self, command: Command) -> Result<Vec<Effect>, Refusal> {
        let mut next = self.clone();
        let effects = match command {
            Command::Init { tag, leader, partitions, min_insync } => {
                next.init(tag, leader, partitions, min_insync)?
            }
            Command::Join { tag_id, applicant } => next.join(tag_id, applicant)?,
            Command::Remove { name } => next.remove(&name)?,
            Command::Fence { name, incarnation } => next.set_fenced(&name, incarnation, true)?,
            Command::Unfence { name, incarnation } => next.set_fenced(&name, incarnation, false)?,
            Command::AlterInSync { partition, leader_epoch, isr_epoch, in_sync } => {
                next.alter_in_sync(partition, leader_epoch, isr_epoch, in_sync)?
            }
            Command::Elect { durable } => next.elect(&durable)?,
            Command::Transfer { to } => next.transfer(&to)?,
            Command::Appoint { leader, previous_epoch, at_least, in_sync, basis } => {
                next.check_basis(&basis)?;
                next.appoint(leader, previous_epoch, at_least, in_sync)?
            }
            Command::RecordInSync { partition, epoch, version, in_sync } => {
                next.record_in_sync(partition, epoch, version, in_sync)?
            }
            Command::StartJob { id, record } => next.start_job(id, record)?,
            Command::AdvanceJob { id, progress } => next.advance_job(id, progress)?,
            Command::FinishJob { id, error, at_ms } => next.finish_job(id, error, at_ms)?,
        };
        next.metadata_version += 1;
        next.check_invariants();
        *self = next;
        Ok(effects)
    }

    fn tag(&self) -> Result<&ClusterTag, Refusal> {
        self.tag.as_ref().ok_or(Refusal::NotInitialised)
    }

    fn member(&self, name: &str) -> Result<&MemberRecord, Refusal> {
        self.members.get(name).ok_or_else(|| Refusal::UnknownMember { name: name.to_string() })
    }

    fn voters(&self) -> impl Iterator<Item = (&String, &MemberRecord)> {
        self.members.iter().filter(|(_, member)| member.kind == MemberKind::Voter)
    }

    fn init(
        &mut self,
        tag: ClusterTag,
        leader: Applicant,
        partitions: u32,
        min_insync: usize,
    ) -> Result<Vec<Effect>, Refusal> {
        if let Some(tag) = &self.tag {
            return Err(Refusal::AlreadyInitialised { tag: tag.clone() });
        }
        if partitions == 0 || min_insync == 0 {
            let reason = "a cluster needs at least one partition and min_insync of 1".to_string();
            return Err(Refusal::BadSettings { reason });
        }
        if leader.kind != MemberKind::Voter {
            return Err(Refusal::BadSettings { reason: "a learner cannot start a cluster".into() });
        }
        let name = leader.name.clone();
        self.tag = Some(tag);
        self.min_insync = min_insync;
        self.members.insert(name.clone(), record_of(leader));
        let empty = PartitionRecord { in_sync: Vec::new(), isr_epoch: 0 };
        self.partitions = vec![empty; partitions as usize];
        Ok(vec![self.new_leader(name, Successor::Lost)])
    }

    fn join(&mut self, tag_id: Option<u128>, applicant: Applicant) -> Result<Vec<Effect>, Refusal> {
        let ours = self.tag()?.clone();
        if let Some(theirs) = tag_id.filter(|theirs| *theirs != ours.id) {
            return Err(Refusal::OtherCluster { ours, theirs });
        }
        if applicant.metadata_version > self.metadata_version {
            let (ours, theirs) = (self.metadata_version, applicant.metadata_version);
            return Err(Refusal::MetadataAhead { ours, theirs });
        }
        if let Some(leader) = self.data_leader.as_ref().and_then(|name| self.members.get(name)) {
            if major_minor(&leader.version) != major_minor(&applicant.version) {
                let ours = leader.version.clone();
                return Err(Refusal::VersionMismatch { ours, theirs: applicant.version });
            }
        }
        if let Some(known) = self.members.get(&applicant.name) {
            // The same node again (a restart) keeps its place; another node may not take the
            // name, nor may an older incarnation come back.
            if known.peer_address != applicant.peer_address || known.kind != applicant.kind {
                return Err(Refusal::NameTaken { name: applicant.name });
            }
            if applicant.incarnation < known.incarnation {
                let (name, known) = (applicant.name, known.incarnation);
                return Err(Refusal::StaleIncarnation {
                    name,
                    known,
                    given: applicant.incarnation,
                });
            }
            if applicant.incarnation > known.incarnation {
                if self.data_leader.as_ref() == Some(&applicant.name) {
                    let reason = "it lost its data: elect another leader first".to_string();
                    return Err(Refusal::NotEligible { name: applicant.name, reason });
                }
                // It lost its data: a new replica, out of every in-sync set until caught up.
                self.drop_from_every_set(&applicant.name);
            }
            self.members.insert(applicant.name.clone(), record_of(applicant));
            return Ok(Vec::new());
        }
        let leader = self.data_leader.as_ref();
        let followers = self.voters().filter(|(name, _)| Some(*name) != leader).count();
        if applicant.kind == MemberKind::Voter && followers >= FOLLOWERS_MAX {
            return Err(Refusal::TooManyFollowers);
        }
        self.members.insert(applicant.name.clone(), record_of(applicant));
        Ok(Vec::new())
    }

    fn remove(&mut self, name: &str) -> Result<Vec<Effect>, Refusal> {
        let member = self.member(name)?;
        if self.data_leader.as_deref() == Some(name) {
            return Err(Refusal::TransferFirst { name: name.to_string() });
        }
        if member.kind == MemberKind::Voter && self.voters().count() == 1 {
            return Err(Refusal::LastVoter);
        }
        let voters_left = self.voters().count() - usize::from(member.kind == MemberKind::Voter);
        if member.kind == MemberKind::Voter && voters_left < self.min_insync {
            let reason = format!(
                "removing {name} would leave {voters_left} voters, fewer than \
                 min_insync_replicas = {}: no write could be acknowledged",
                self.min_insync
            );
            return Err(Refusal::BadSettings { reason });
        }
        let mut effects = Vec::new();
        for (index, partition) in self.partitions.iter_mut().enumerate() {
            if partition.in_sync.iter().any(|member| member == name) {
                if partition.in_sync.len() <= self.min_insync {
                    let reason = format!(
                        "removing {name} would leave fewer than {} members in sync",
                        self.min_insync
                    );
                    let partition = PartitionId(index as u32);
                    return Err(Refusal::BadInSyncSet { partition, reason });
                }
                partition.in_sync.retain(|member| member != name);
                partition.isr_epoch += 1;
                effects.push(changed(index, partition));
            }
        }
        self.members.remove(name);
        effects.push(Effect::Removed { name: name.to_string() });
        Ok(effects)
    }

    fn set_fenced(
        &mut self,
        name: &str,
        incarnation: u64,
        fenced: bool,
    ) -> Result<Vec<Effect>, Refusal> {
        let known = self.member(name)?.incarnation;
        if incarnation != known {
            let name = name.to_string();
            return Err(Refusal::StaleIncarnation { name, known, given: incarnation });
        }
        if let Some(member) = self.members.get_mut(name) {
            member.fenced = fenced;
        }
        Ok(Vec::new())
    }

    fn alter_in_sync(
        &mut self,
        partition: PartitionId,
        leader_epoch: Epoch,
        isr_epoch: u64,
        in_sync: Vec<String>,
    ) -> Result<Vec<Effect>, Refusal> {
        if leader_epoch != self.leader_epoch {
            return Err(Refusal::StaleLeaderEpoch {
                current: self.leader_epoch,
                given: leader_epoch,
            });
        }
        let index = partition.0 as usize;
        let bad = |reason: String| Refusal::BadInSyncSet { partition, reason };
        let current = self.partitions.get(index).ok_or_else(|| bad("no such partition".into()))?;
        if current.isr_epoch != isr_epoch {
            let current = current.isr_epoch;
            return Err(Refusal::StaleIsrEpoch { partition, current, given: isr_epoch });
        }
        let leader = self.data_leader.clone().ok_or(Refusal::NoEligibleLeader)?;
        if !in_sync.contains(&leader) {
            return Err(bad(format!("it must hold the leader, {leader}")));
        }
        let mut seen = Vec::new();
        for name in &in_sync {
            let member = self.member(name)?;
            if seen.contains(name) {
                return Err(bad(format!("{name} appears twice")));
            }
            if member.kind != MemberKind::Voter {
                return Err(bad(format!("{name} is a learner")));
            }
            let joins = !current.in_sync.contains(name);
            if joins && member.fenced {
                return Err(bad(format!("{name} is fenced")));
            }
            seen.push(name.clone());
        }
        let kept = in_sync.iter().filter(|name| current.in_sync.contains(name)).count();
        let drops = kept < current.in_sync.len();
        if drops && kept < self.min_insync {
            return Err(bad(format!("a shrink must keep {} members", self.min_insync)));
        }
        let record = &mut self.partitions[index];
        record.in_sync = in_sync;
        record.isr_epoch += 1;
        Ok(vec![changed(index, record)])
    }

    /// A set the leader and its members recorded: taken as told (each of the versions in
    /// between kept the leader's rules; this copy may skip some), if newer than the one kept.
    fn record_in_sync(
        &mut self,
        partition: PartitionId,
        leader_epoch: Epoch,
        version: u64,
        in_sync: Vec<String>,
    ) -> Result<Vec<Effect>, Refusal> {
        if leader_epoch != self.leader_epoch {
            let (current, given) = (self.leader_epoch, leader_epoch);
            return Err(Refusal::StaleLeaderEpoch { current, given });
        }
        let leader = self.data_leader.clone().ok_or(Refusal::NoEligibleLeader)?;
        let bad = |reason: String| Refusal::BadInSyncSet { partition, reason };
        let index = partition.0 as usize;
        let current = self.partitions.get(index).ok_or_else(|| bad("no such partition".into()))?;
        if version == current.isr_epoch && in_sync == current.in_sync {
            // Recorded already (a retry, or the leader's mirror came first).
            return Ok(Vec::new());
        }
        if version <= current.isr_epoch {
            let current = current.isr_epoch;
            return Err(Refusal::StaleIsrEpoch { partition, current, given: version });
        }
        if in_sync.first() != Some(&leader) {
            return Err(bad(format!("it must start with the leader, {leader}")));
        }
        for (position, name) in in_sync.iter().enumerate() {
            if self.member(name)?.kind != MemberKind::Voter {
                return Err(bad(format!("{name} is a learner")));
            }
            if in_sync[..position].contains(name) {
                return Err(bad(format!("{name} appears twice")));
            }
        }
        let record = &mut self.partitions[index];
        record.in_sync = in_sync;
        record.isr_epoch = version;
        Ok(vec![changed(index, record)])
    }

    fn elect(&mut self, durable: &BTreeMap<String, Lsn>) -> Result<Vec<Effect>, Refusal> {
        self.tag()?;
        let durable_of = |name: &String| durable.get(name).copied().unwrap_or_default();
        // The most durable records first; among equals, the first name, so that every member
        // applying the command picks the same.
        let leader = self
            .eligible()
            .filter(|name| Some(*name) != self.data_leader.as_ref())
            .max_by(|one, other| durable_of(one).cmp(&durable_of(other)).then(other.cmp(one)))
            .cloned()
            .ok_or(Refusal::NoEligibleLeader)?;
        Ok(vec![self.new_leader(leader, Successor::Lost)])
    }

    fn transfer(&mut self, to: &str) -> Result<Vec<Effect>, Refusal> {
        let member = self.member(to)?;
        let not_eligible = |reason: &str| Refusal::NotEligible {
            name: to.to_string(),
            reason: reason.to_string(),
        };
        if member.kind != MemberKind::Voter {
            return Err(not_eligible("it is a learner"));
        }
        if member.fenced {
            return Err(not_eligible("its session expired"));
        }
        if self.data_leader.as_deref() == Some(to) {
            return Err(not_eligible("it leads already"));
        }
        if !self.eligible().any(|name| name == to) {
            return Err(not_eligible("it is not in the in-sync set of every partition"));
        }
        Ok(vec![self.new_leader(to.to_string(), Successor::Transfer)])
    }

    /// The in-sync sets recorded, per partition, as members with their peer addresses, each
    /// without `without` (a lost leader).
    #[must_use]
    pub fn recorded_members(
        &self,
        without: Option<&str>,
    ) -> BTreeMap<PartitionId, Vec<crate::replication::Member>> {
        let member = |name: &String| crate::replication::Member {
            name: name.clone(),
            address: self
                .members
                .get(name)
                .map(|record| record.peer_address.clone())
                .unwrap_or_default(),
        };
        let partitions = self.partitions.iter().enumerate();
        partitions
            .map(|(index, partition)| {
                let kept = partition.in_sync.iter().filter(|name| Some(name.as_str()) != without);
                (PartitionId(index as u32), kept.map(member).collect())
            })
            .collect()
    }

    /// Every partition's set is still at the version an appointment was chosen on.
    fn check_basis(&self, basis: &[u64]) -> Result<(), Refusal> {
        if basis.is_empty() {
            return Ok(());
        }
        for (index, record) in self.partitions.iter().enumerate() {
            let given = basis.get(index).copied().unwrap_or(u64::MAX);
            if given != record.isr_epoch {
                let partition = PartitionId(index as u32);
                return Err(Refusal::StaleIsrEpoch { partition, current: record.isr_epoch, given });
            }
        }
        Ok(())
    }

    fn appoint(
        &mut self,
        leader: String,
        previous_epoch: Epoch,
        at_least: Epoch,
        in_sync: Vec<Vec<String>>,
    ) -> Result<Vec<Effect>, Refusal> {
        self.tag()?;
        if previous_epoch != self.leader_epoch {
            let (current, given) = (self.leader_epoch, previous_epoch);
            return Err(Refusal::StaleLeaderEpoch { current, given });
        }
        let member = self.member(&leader)?;
        let not_eligible =
            |reason: &str| Refusal::NotEligible { name: leader.clone(), reason: reason.into() };
        if member.kind != MemberKind::Voter {
            return Err(not_eligible("it is a learner"));
        }
        if member.fenced {
            return Err(not_eligible("its session expired"));
        }
        if in_sync.len() != self.partitions.len() {
            let reason =
                format!("{} in-sync sets for {} partitions", in_sync.len(), self.partitions.len());
            return Err(Refusal::BadSettings { reason });
        }
        for (index, set) in in_sync.iter().enumerate() {
            let partition = PartitionId(index as u32);
            let bad = |reason: String| Refusal::BadInSyncSet { partition, reason };
            if set.first() != Some(&leader) {
                return Err(bad(format!("it must start with the new leader, {leader}")));
            }
            for (position, name) in set.iter().enumerate() {
                if self.member(name)?.kind != MemberKind::Voter {
                    return Err(bad(format!("{name} is a learner")));
                }
                if set[..position].contains(name) {
                    return Err(bad(format!("{name} appears twice")));
                }
            }
        }
        self.new_leader(leader.clone(), Successor::Lost);
        self.leader_epoch = self.leader_epoch.max(at_least);
        for (record, set) in self.partitions.iter_mut().zip(in_sync) {
            record.in_sync = set;
        }
        Ok(vec![Effect::NewLeader { leader, epoch: self.leader_epoch }])
    }

    /// Unfenced voters in the in-sync set of every partition.
    fn eligible(&self) -> impl Iterator<Item = &String> {
        self.voters()
            .filter(|(_, member)| !member.fenced)
            .map(|(name, _)| name)
            .filter(|name| self.partitions.iter().all(|partition| partition.in_sync.contains(name)))
    }

    /// Makes `leader` lead at the next epoch. Every in-sync set starts the epoch afresh at
    /// `isr_epoch` 0 with the new leader first and the followers it had. A lost leader leaves
    /// them (it may hold records never committed, and must catch up before it is in sync
    /// again); after a transfer the old leader, which holds everything, stays.
    fn new_leader(&mut self, leader: String, successor: Successor) -> Effect {
        let previous = self.data_leader.take();
        self.leader_epoch = Epoch(self.leader_epoch.0 + 1);
        for partition in &mut self.partitions {
            partition.in_sync.retain(|name| {
                name != &leader
                    && (successor == Successor::Transfer || previous.as_ref() != Some(name))
            });
            partition.in_sync.insert(0, leader.clone());
            partition.isr_epoch = 0;
        }
        self.data_leader = Some(leader.clone());
        Effect::NewLeader { leader, epoch: self.leader_epoch }
    }

    fn drop_from_every_set(&mut self, name: &str) {
        for partition in &mut self.partitions {
            if partition.in_sync.iter().any(|member| member == name) {
                partition.in_sync.retain(|member| member != name);
                partition.isr_epoch += 1;
            }
        }
    }

    /// What every applied command leaves true (module doc).
    pub fn check_invariants(&self) {
        let Some(leader) = &self.data_leader else {
            assert!(self.partitions.iter().all(|partition| partition.in_sync.is_empty()));
            return;
        };
        let record = self.members.get(leader).expect("the leader is a member");
        assert_eq!(record.kind, MemberKind::Voter, "the leader is a voter");
        assert!(self.leader_epoch > Epoch(0), "a leader has an epoch");
        for partition in &self.partitions {
            assert!(partition.in_sync.contains(leader), "the leader is in every in-sync set");
            for name in &partition.in_sync {
                let member = self.members.get(name).expect("in-sync members are members");
                assert_eq!(member.kind, MemberKind::Voter, "only voters are in sync");
            }
        }
    }
}

/// Why the data leader changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Successor {
    /// The leader was lost (or there was none).
    Lost,
    /// A planned transfer from a leader that holds everything.
    Transfer,
}

fn record_of(applicant: Applicant) -> MemberRecord {
    MemberRecord {
        peer_address: applicant.peer_address,
        kind: applicant.kind,
        incarnation: applicant.incarnation,
        version: applicant.version,
        fenced: false,
    }
}

fn changed(index: usize, partition: &PartitionRecord) -> Effect {
    Effect::InSyncChanged {
        partition: PartitionId(index as u32),
        isr_epoch: partition.isr_epoch,
        in_sync: partition.in_sync.clone(),
    }
}

fn major_minor(version: &str) -> (&str, &str) {
    let mut parts = version.split('.');
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

#[cfg(test)]
mod tests;
