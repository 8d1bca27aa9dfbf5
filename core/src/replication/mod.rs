//! Replication of one partition, as state machines that do no I/O.
//!
//! Two sides, each fed events and answering with commands the runtime carries out:
//!
//! - [`Leader`]: the commit point, the in-sync set and its recorded changes, every replica
//!   stream's durable acknowledgement, where a subscribing replica starts (its log continues
//!   ours, or is cut back to where both agree, or gets a snapshot), and fencing by epochs.
//! - [`Replica`]: the checks on what a leader sends (epochs that never go back, LSNs that
//!   continue the log), truncation of a divergent tail, what is durable and what it reports,
//!   and the commit point it may serve reads up to.
//!
//! [`promotion`] decides whether a member may become leader, from what the members it reached
//! report. The invariants these machines keep are listed in `docs/ARCHITECTURE.md` and checked
//! by the simulator (`sim/`) after every step; the cheap ones are asserted here in release
//! builds too.
//!
//! Time comes in as [`Moment`]s of a monotonic clock the runtime owns; nothing here reads a
//! clock, a socket or a file.

mod facts;
mod history;
mod in_sync;
mod leader;
pub mod mutations;
pub mod promotion;
mod replica;

pub use facts::{PartitionFacts, StateFileError, STATE_FILE_NAME};
pub use history::{EpochHistory, EPOCH_HISTORY_ENTRIES_MAX};
pub use in_sync::{InSyncSet, InSyncSetError, Member, IN_SYNC_MEMBERS_MAX};
pub use leader::{
    Leader, LeaderCommand, LeaderConfig, LeaderEvent, LeaderStart, SnapshotReason, StreamPlan,
    Subscription, SUBSCRIPTION_REPEAT_LIMIT,
};
pub use replica::{
    Replica, ReplicaCommand, ReplicaError, ReplicaEvent, ReplicaStart, StartMode, SubscribeFrom,
};

/// A point on the runtime's monotonic clock, in milliseconds from a start it chose. Never a
/// wall-clock time: a clock stepped by an operator or NTP must not expire anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(pub u64);

impl Moment {
    /// Milliseconds from `earlier` to this moment; 0 if `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Moment) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// One replica stream on the leader: a number the runtime gives each subscription of one
/// partition, never reused while the leader runs, so that an event of a stream that ended is
/// recognised as stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

pub use crate::peer::ReplicaKind;
