//! The short chaos schedule CI runs: two fixed seeds, 60 s each, every kind of fault this
//! machine can throw, against the real `strata` binary (`STRATA_BIN`, as `scripts/test.sh`
//! sets it, or the workspace's debug build; skipped, with a message, when neither exists).
//! A seed fails on any violation the checker finds and on any problem the harness sees (a node
//! exiting by itself, a cluster that does not recover).
//!
//! And the proof that the schedule finds a real bug: with the promotion guard taken out
//! (`STRATA_MUTATIONS=promote-out-of-sync`), two stale promotions (a follower paused past the
//! heartbeat timeout, the leader killed, that follower promoted) lose acknowledged writes, and
//! the checker says so.

use std::time::Duration;

use strata_chaos::cluster::Failover;
use strata_chaos::nemesis::Fault;
use strata_chaos::run;

fn schedule_passes(seed: u64) {
    let Some(options) =
        run::test_options("chaos-short", seed, Duration::from_secs(60), Failover::Manual)
    else {
        return;
    };
    run::assert_schedule_passes(&options);
}

#[test]
fn the_short_schedule_passes_with_seed_1() {
    schedule_passes(1);
}

#[test]
fn the_short_schedule_passes_with_seed_2() {
    schedule_passes(2);
}

#[test]
fn the_checker_finds_the_writes_an_out_of_sync_promotion_loses() {
    let Some(options) =
        run::test_options("chaos-mutation", 1, Duration::from_secs(60), Failover::Manual)
    else {
        return;
    };
    run::assert_mutation_caught(options, Fault::StalePromotion, "promote-out-of-sync");
}
