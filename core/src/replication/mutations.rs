//! Switches that put back, one at a time, the replication bugs this code was written to fix,
//! so that the simulator can show it finds each of them (`sim/`, `scripts/sim.sh --mutation`).
//!
//! Only a build with the `mutations` feature can turn one on; in any other build
//! [`Mutations::has`] is a constant `false` and the checks fold away.
//!
//! The state machines take the set as a parameter. The node runtime passes
//! [`Mutations::in_force`]: the set `strata node` was started with (`STRATA_MUTATIONS`, read
//! once at start-up, only in a build with the feature), so that the chaos harness can show it
//! finds a bug put back in the real processes.

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

/// The set in force in this process: set at most once, at start-up.
#[cfg(feature = "mutations")]
static IN_FORCE: std::sync::OnceLock<Mutations> = std::sync::OnceLock::new();

impl Mutations {
    pub const NONE: Mutations = Mutations { bits: 0 };

    /// Whether this build can turn mutations on (the `mutations` feature).
    pub const AVAILABLE: bool = cfg!(feature = "mutations");

    /// The set in force in this process: none unless [`Mutations::put_in_force`] was called.
    #[must_use]
    #[inline]
    pub fn in_force() -> Mutations {
        #[cfg(feature = "mutations")]
        {
            IN_FORCE.get().copied().unwrap_or(Mutations::NONE)
        }
        #[cfg(not(feature = "mutations"))]
        {
            Mutations::NONE
        }
    }

    /// Puts `self` in force for the rest of the process; false when a set already was, or
    /// when this build has no mutations.
    pub fn put_in_force(self) -> bool {
        #[cfg(feature = "mutations")]
        {
            IN_FORCE.set(self).is_ok()
        }
        #[cfg(not(feature = "mutations"))]
        {
            false
        }
    }

    /// The set named by a comma-separated list of [`Mutation::name`]s (blank: none).
    ///
    /// # Errors
    ///
    /// The first name that is no mutation.
    pub fn parse_list(text: &str) -> Result<Mutations, String> {
        let mut bits = 0;
        for name in text.split(',').map(str::trim).filter(|name| !name.is_empty()) {
            let mutation = Mutation::parse(name).ok_or_else(|| {
                let names: Vec<&str> = Mutation::ALL.iter().map(|known| known.name()).collect();
                format!("no mutation {name:?}; the mutations are {}", names.join(", "))
            })?;
            bits |= mutation.bit();
        }
        Ok(Mutations { bits })
    }

    /// The names of the mutations on, comma-separated.
    #[must_use]
    pub fn names(self) -> String {
        let on: Vec<&str> = Mutation::ALL
            .into_iter()
            .filter(|mutation| self.has(*mutation))
            .map(Mutation::name)
            .collect();
        on.join(",")
    }

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

#[cfg(all(test, feature = "mutations"))]
mod tests {
    use super::*;

    #[test]
    fn a_list_names_a_set_and_back() {
        let set = Mutations::parse_list("promote-out-of-sync, stale-commit").unwrap();
        assert!(set.has(Mutation::PromoteOutOfSync) && set.has(Mutation::StaleCommit));
        assert!(!set.has(Mutation::NoFencing));
        assert_eq!(set.names(), "promote-out-of-sync,stale-commit");
        assert_eq!(Mutations::parse_list(" ").unwrap(), Mutations::NONE);
        let error = Mutations::parse_list("promote-out-of-sync,typo").unwrap_err();
        assert!(error.contains("\"typo\"") && error.contains("no-fencing"), "{error}");
    }
}
