//! A short chaos schedule (60 s, fixed seed) against the real `strata` binary: `STRATA_BIN`, as
//! `scripts/test.sh` sets it for CI, or the workspace's debug build. Skipped, with a message,
//! when neither exists. It fails on any violation the checker finds and on any problem the
//! harness sees (a node exiting by itself, a cluster that does not recover). Every kind of
//! fault this machine can throw is in it.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use strata_chaos::nemesis::Fault;
use strata_chaos::run::{self, RunOptions};
use strata_chaos::workload::WorkloadSettings;

#[test]
fn a_short_schedule_of_every_fault_passes() {
    let binary = run::strata_binary();
    if !binary.is_file() {
        eprintln!("skipped: no strata binary at {binary:?} (build it or set STRATA_BIN)");
        return;
    }
    let out_dir = std::env::temp_dir().join(format!("strata-chaos-test-{}", std::process::id()));
    let options = RunOptions {
        duration: Duration::from_secs(60),
        seed: 1,
        out_dir: out_dir.clone(),
        faults_max: None,
        binary,
        workloads: WorkloadSettings::default(),
        faults: Fault::ALL.to_vec(),
        mutations: String::new(),
    };
    let interrupt = AtomicBool::new(false);
    let summary = run::run(&options, &interrupt).expect("the harness runs");
    println!("{}", summary.verdict);
    assert!(summary.faults > 0, "the nemesis threw no fault");
    assert!(summary.pass, "{} (history and logs in {})", summary.verdict, out_dir.display());
    let _ = std::fs::remove_dir_all(&out_dir);
}
