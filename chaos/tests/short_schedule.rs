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

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use strata_chaos::cluster::Failover;
use strata_chaos::nemesis::Fault;
use strata_chaos::run::{self, RunOptions, RunSummary};
use strata_chaos::workload::WorkloadSettings;

fn options(name: &str, seed: u64, duration: Duration) -> Option<RunOptions> {
    let binary = run::strata_binary();
    if !binary.is_file() {
        eprintln!("skipped: no strata binary at {binary:?} (build it or set STRATA_BIN)");
        return None;
    }
    let out_dir = std::env::temp_dir().join(format!("strata-{name}-{}", std::process::id()));
    Some(RunOptions {
        duration,
        seed,
        out_dir,
        faults_max: None,
        binary,
        workloads: WorkloadSettings::default(),
        faults: Fault::MANUAL.to_vec(),
        mutations: String::new(),
        failover: Failover::Manual,
    })
}

fn run_once(options: &RunOptions) -> RunSummary {
    let interrupt = AtomicBool::new(false);
    let summary = run::run(options, &interrupt).expect("the harness runs");
    println!("{}", summary.verdict);
    summary
}

fn remove(out_dir: &PathBuf) {
    let _ = std::fs::remove_dir_all(out_dir);
}

fn schedule_passes(seed: u64) {
    let Some(options) = options("chaos-short", seed, Duration::from_secs(60)) else { return };
    let summary = run_once(&options);
    assert!(summary.faults > 0, "the nemesis threw no fault");
    let out = options.out_dir.display();
    assert!(summary.pass, "{} (history, report and logs in {out})", summary.verdict);
    remove(&options.out_dir);
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
    let Some(mut options) = options("chaos-mutation", 1, Duration::from_secs(60)) else { return };
    options.faults = vec![Fault::StalePromotion];
    options.faults_max = Some(2);
    options.mutations = "promote-out-of-sync".into();
    let summary = run_once(&options);
    let out = options.out_dir.display();
    assert!(!summary.pass, "the bug went unseen: {} (files in {out})", summary.verdict);
    assert!(
        !summary.report.violations.is_empty(),
        "the run failed, but not on the checker: {} {:?} (files in {out})",
        summary.verdict,
        summary.problems
    );
    remove(&options.out_dir);
}
