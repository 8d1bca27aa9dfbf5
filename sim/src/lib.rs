//! Strata's deterministic simulator: clusters built from the real replication state machines
//! of `strata_core::replication`, on a simulated network, disks and clock, under faults and
//! operator actions drawn from one seed. After every step a checker verifies the safety
//! properties (`checker`); after the faults heal, the cluster must take writes again.
//!
//! One seed replays one run exactly: every choice comes from [`random::Random`], the event
//! queue orders ties by insertion, and nothing iterates a hash map.

pub mod checker;
mod controller;
mod node;
pub mod random;
mod world;

pub use world::{run, Config, Failover, Outcome};
