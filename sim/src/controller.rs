//! The controller the simulator drives in automatic mode: a model of the Raft group that
//! replicates `strata_core::controller::ClusterState`, small enough to reason about and
//! faithful where the failover decisions depend on it.
//!
//! - **One totally ordered log.** Commands are applied, in order, to the state the real code
//!   applies them to ([`ClusterState::apply`]); the state after every committed command is
//!   kept, so that each member can act on the prefix it has learned of.
//! - **Commits need a majority.** A command commits only while its proposer leads the
//!   controller (in the term it proposed in), runs, and reaches a majority of the voters (the
//!   data voters; learners follow the log without a vote). The world checks reachability.
//! - **Leadership.** The leader keeps its term while it runs and reaches a majority. Once it
//!   cannot for an election timeout, a voter that reaches a majority takes the next term with
//!   the whole committed log (Raft's leader completeness). A proposal of an earlier term may
//!   survive in the new leader's log and commit with its first entry, or be lost: the world
//!   draws which.
//! - **Members learn the log from the leader.** A member reachable from the leader learns
//!   every committed command; the others keep the prefix they had, across crashes (Raft's log
//!   is durable).

use std::collections::BTreeMap;

use strata_core::controller::Refusal;
use strata_core::controller::{Applicant, ClusterState, ClusterTag, Command, Effect, MemberKind};
use strata_core::Epoch;

/// The product version every simulated node runs.
const VERSION: &str = "1.0.0";

/// One member of the controller, as the world tells it at the start.
#[derive(Clone, Debug)]
pub struct Founder {
    pub node: usize,
    pub name: String,
    pub peer_address: String,
    pub learner: bool,
}

/// Why a command was proposed, and who waits for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// An appointment: the proposer's watch of the data leader waits for it.
    Appointment,
    /// An in-sync set the data leader mirrors: nobody waits.
    Mirror,
    /// A version of an in-sync set a controlled leader asked the controller to record
    /// (`LeaderCommand::RecordWithController`): partition `part` of `node`, in its life
    /// `incarnation`, hears back once it commits.
    Record { node: usize, incarnation: u64, part: usize, version: (Epoch, u64) },
}

/// A command on its way to commit.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The term its proposer led in when it proposed.
    pub term: u64,
    pub proposer: usize,
    pub command: Command,
    pub purpose: Purpose,
}

impl Proposal {
    /// Whether the proposer's watch of the data leader waits for it.
    pub fn watched(&self) -> bool {
        self.purpose == Purpose::Appointment
    }
}

/// The modeled controller (module doc).
#[derive(Clone, Debug)]
pub struct Controller {
    /// Node ids of the voters, and of every member (voters and learners).
    voters: Vec<usize>,
    members: Vec<usize>,
    /// `states[i]` is the state after the first `i` committed commands.
    states: Vec<ClusterState>,
    /// Per node id: how many committed commands the member has learned of.
    applied: BTreeMap<usize, usize>,
    /// The member leading the controller's Raft, and its term.
    leader: Option<usize>,
    term: u64,
    /// When the other voters start an election, once the leader could not lead (it is down,
    /// paused or cut from a majority).
    election_at_us: Option<u64>,
    /// When the leader took over; its failover timeout counts from here at the earliest.
    leading_since_us: u64,
    proposals: BTreeMap<u64, Proposal>,
    next_proposal: u64,
}

impl Controller {
    /// A controller made the way a cluster is made: `Init` led by the first founder, then a
    /// `Join` of every other; every founder has learned of them, and the first leads term 1.
    pub fn new(founders: &[Founder], tag_id: u128, partitions: usize, min_insync: usize) -> Self {
        assert!(!founders.is_empty(), "a controller has a member");
        assert!(!founders[0].learner, "a voter starts the cluster");
        let voters = founders.iter().filter(|founder| !founder.learner).map(|f| f.node).collect();
        let members = founders.iter().map(|founder| founder.node).collect();
        let mut controller = Controller {
            voters,
            members,
            states: vec![ClusterState::default()],
            applied: BTreeMap::new(),
            leader: Some(founders[0].node),
            term: 1,
            election_at_us: None,
            leading_since_us: 0,
            proposals: BTreeMap::new(),
            next_proposal: 1,
        };
        let tag = ClusterTag { name: "sim".into(), id: tag_id };
        let partitions = u32::try_from(partitions).expect("few partitions");
        let init = Command::Init { tag, leader: applicant(&founders[0]), partitions, min_insync };
        controller.apply(init).expect("a new cluster initialises");
        for founder in &founders[1..] {
            let join = Command::Join { tag_id: Some(tag_id), applicant: applicant(founder) };
            controller.apply(join).expect("a founder joins");
        }
        for node in controller.members.clone() {
            controller.catch_up(node);
        }
        controller
    }

    /// The committed state.
    pub fn committed(&self) -> &ClusterState {
        self.states.last().expect("the initial state is kept")
    }

    /// The state `node` has applied.
    pub fn view(&self, node: usize) -> &ClusterState {
        let applied = self.applied.get(&node).copied().unwrap_or(0);
        &self.states[applied]
    }

    /// Committed commands.
    pub fn length(&self) -> usize {
        self.states.len() - 1
    }

    /// Applies a command that commits now; the refusal, if it does not apply (the log
    /// carries it all the same, but it changes nothing).
    pub fn apply(&mut self, command: Command) -> Result<Vec<Effect>, Refusal> {
        let mut next = self.committed().clone();
        let outcome = next.apply(command);
        self.states.push(next);
        if let Some(leader) = self.leader {
            self.catch_up(leader);
        }
        outcome
    }

    /// `node` learns of every committed command; whether it learned anything.
    pub fn catch_up(&mut self, node: usize) -> bool {
        let length = self.length();
        let applied = self.applied.entry(node).or_insert(0);
        let changed = *applied != length;
        *applied = length;
        changed
    }

    pub fn voters(&self) -> &[usize] {
        &self.voters
    }

    pub fn members(&self) -> &[usize] {
        &self.members
    }

    /// How many voters make a majority.
    pub fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    pub fn leader(&self) -> Option<usize> {
        self.leader
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn leading_since_us(&self) -> u64 {
        self.leading_since_us
    }

    /// The leader cannot lead right now. The first call of a loss starts an election timeout
    /// (drawn by `timeout_us`); whether it ran out.
    pub fn leader_lost(&mut self, now_us: u64, timeout_us: impl FnOnce() -> u64) -> bool {
        let election_at = *self.election_at_us.get_or_insert_with(|| now_us + timeout_us());
        now_us >= election_at
    }

    /// The leader can lead (again) before an election.
    pub fn leader_holds(&mut self) {
        self.election_at_us = None;
    }

    /// `node` crashed: if it led the controller, it leads no more (a restarted member is a
    /// follower until it wins an election).
    pub fn crashed(&mut self, node: usize) {
        if self.leader == Some(node) {
            self.leader = None;
        }
    }

    /// `node` leads the next term from `now_us`, with the whole committed log. Returns the
    /// proposals of earlier terms, which the caller commits or drops.
    pub fn elect(&mut self, node: usize, now_us: u64) -> Vec<Proposal> {
        assert!(self.voters.contains(&node), "only a voter leads the controller");
        self.leader = Some(node);
        self.term += 1;
        self.election_at_us = None;
        self.leading_since_us = now_us;
        self.catch_up(node);
        std::mem::take(&mut self.proposals).into_values().collect()
    }

    /// Records a proposal of the current leader; its number.
    pub fn propose(&mut self, proposer: usize, command: Command, purpose: Purpose) -> u64 {
        assert_eq!(self.leader, Some(proposer), "only the leader proposes");
        let id = self.next_proposal;
        self.next_proposal += 1;
        self.proposals.insert(id, Proposal { term: self.term, proposer, command, purpose });
        id
    }

    /// The proposal `id`, if no election dropped it.
    pub fn proposal(&self, id: u64) -> Option<&Proposal> {
        self.proposals.get(&id)
    }

    /// The proposal `id`, taken out, if no election dropped it.
    pub fn take_proposal(&mut self, id: u64) -> Option<Proposal> {
        self.proposals.remove(&id)
    }

    /// Whether the watch of `node` waits for one of its proposals to commit.
    pub fn proposing(&self, node: usize) -> bool {
        self.proposals.values().any(|proposal| proposal.proposer == node && proposal.watched())
    }
}

fn applicant(founder: &Founder) -> Applicant {
    Applicant {
        name: founder.name.clone(),
        peer_address: founder.peer_address.clone(),
        kind: if founder.learner { MemberKind::Learner } else { MemberKind::Voter },
        incarnation: 1,
        version: VERSION.into(),
        metadata_version: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn founders() -> Vec<Founder> {
        (0..4)
            .map(|node| Founder {
                node,
                name: format!("n{node}"),
                peer_address: format!("10.0.0.{node}:7000"),
                learner: node == 3,
            })
            .collect()
    }

    #[test]
    fn a_new_controller_names_the_first_voter_and_every_member_knows() {
        let controller = Controller::new(&founders(), 7, 2, 2);
        let state = controller.committed();
        assert_eq!(state.data_leader.as_deref(), Some("n0"));
        assert_eq!(state.leader_epoch, Epoch(1));
        assert_eq!(state.members.len(), 4);
        assert_eq!(controller.voters(), &[0, 1, 2]);
        assert_eq!(controller.majority(), 2);
        assert_eq!(controller.view(3), state);
    }

    #[test]
    fn a_member_keeps_its_prefix_until_it_catches_up() {
        let mut controller = Controller::new(&founders(), 7, 1, 2);
        let before = controller.view(2).clone();
        let fence = Command::Fence { name: "n2".into(), incarnation: 1 };
        assert!(controller.apply(fence).is_ok());
        assert_eq!(controller.view(2), &before);
        assert!(controller.catch_up(2));
        assert!(controller.view(2).members["n2"].fenced);
        assert!(!controller.catch_up(2));
    }

    #[test]
    fn an_election_takes_the_next_term_and_hands_back_earlier_proposals() {
        let mut controller = Controller::new(&founders(), 7, 1, 2);
        let id = controller.propose(0, Command::Remove { name: "n3".into() }, Purpose::Appointment);
        assert!(controller.proposing(0));
        let earlier = controller.elect(1, 5_000);
        assert_eq!((controller.leader(), controller.term()), (Some(1), 2));
        assert_eq!(earlier.len(), 1);
        assert!(controller.take_proposal(id).is_none());
        assert_eq!(controller.leading_since_us(), 5_000);
    }
}
