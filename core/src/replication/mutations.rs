//! Switches that put back, one at a time, the replication bugs this code was written to fix,
//! so that the simulator can show it finds each of them (`sim/`, `scripts/sim.sh --mutation`).
//!
//! Only a build with the `mutations` feature can turn one on; in any other build
//! [`Mutations::has`] is a constant `false` and the checks fold away.

use std::fmt;

/// One reintroduced bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// A member out of the in-sync set is promoted: the promotion guard is skipped.
    PromoteOutOfSync,
    /// No fencing: a promotion takes the next epoch from what it saw without asking the
    /// members to accept it, and replicas take streams of any epoch.
    NoFencing,
    /// A replica subscribes from what it applied rather than what is durable.
    ReportApplied,
    /// A replica whose log failed keeps its stream and says nothing; the leader waits for a
    /// follower whose acknowledgements stopped for as long as its stream stays open.
    KeepFailedReplica,
    /// The leader trusts a replica's log position without comparing epoch histories.
    SkipDivergenceCheck,
    /// A replica keeps the previous leader's commit point when it follows a new stream.
    StaleCommit,
    /// Heartbeat expiry reads the wall clock.
    WallClockTimeouts,
}

impl Mutation {
    pub const ALL: [Mutation; 7] = [
        Mutation::PromoteOutOfSync,
        Mutation::NoFencing,
        Mutation::ReportApplied,
        Mutation::KeepFailedReplica,
        Mutation::SkipDivergenceCheck,
        Mutation::StaleCommit,
        Mutation::WallClockTimeouts,
    ];

    /// The name `--mutation` takes.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Mutation::PromoteOutOfSync => "promote-out-of-sync",
            Mutation::NoFencing => "no-fencing",
            Mutation::ReportApplied => "report-applied",
            Mutation::KeepFailedReplica => "keep-failed-replica",
            Mutation::SkipDivergenceCheck => "skip-divergence-check",
            Mutation::StaleCommit => "stale-commit",
            Mutation::WallClockTimeouts => "wall-clock-timeouts",
        }
    }

    #[must_use]
    pub fn parse(name: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|mutation| mutation.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Mutation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The set of mutations in force: always empty outside the `mutations` feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mutations {
    #[cfg_attr(not(feature = "mutations"), allow(dead_code))]
    bits: u8,
}

impl Mutations {
    pub const NONE: Mutations = Mutations { bits: 0 };

    /// This set with `mutation` turned on.
    #[cfg(feature = "mutations")]
    #[must_use]
    pub fn with(self, mutation: Mutation) -> Mutations {
        Mutations { bits: self.bits | mutation.bit() }
    }

    /// Whether `mutation` is on.
    #[must_use]
    #[inline]
    pub fn has(self, mutation: Mutation) -> bool {
        #[cfg(feature = "mutations")]
        {
            self.bits & mutation.bit() != 0
        }
        #[cfg(not(feature = "mutations"))]
        {
            let _ = mutation.bit();
            false
        }
    }
}
