//! `sim`: runs the deterministic simulator over many seeds, or replays one.
//!
//! ```text
//! sim --seeds 500                 # seeds 1..=500; prints the first failing seed
//! sim --seed 42 --trace           # replays seed 42, printing every step
//! sim --seeds 200 --mutation stale-commit   # shows the checker catches a reintroduced bug
//! sim --seeds 500 --automatic     # the controller replaces lost leaders (automatic failover)
//! ```

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use strata_core::replication::mutations::{Mutation, Mutations};
use strata_sim::{run, Config};

#[derive(Parser, Debug)]
#[command(about = "Strata's deterministic replication simulator")]
struct Arguments {
    /// Run seeds `first..first+seeds` (stops at the first failure).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of a range.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Replay exactly this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print every step of the run (with `--seed`).
    #[arg(long)]
    trace: bool,
    /// Simulated seconds with faults (default 20), then after healing (default 8).
    #[arg(long)]
    seconds: Option<u64>,
    #[arg(long)]
    liveness_seconds: Option<u64>,
    /// Reintroduce a known bug: promote-out-of-sync, no-fencing, report-applied,
    /// keep-failed-replica, skip-divergence-check, stale-commit, wall-clock-timeouts.
    #[arg(long)]
    mutation: Option<String>,
    /// Keep going after a failure and count the failing seeds.
    #[arg(long)]
    all: bool,
    /// Automatic failover: the modeled controller appoints a successor when the data leader
    /// is lost, instead of an operator promoting followers at random.
    #[arg(long)]
    automatic: bool,
    /// With `--automatic`: check that no leader serves under a lease once the controller
    /// appointed another (C3; a known gap, off by default).
    #[arg(long)]
    check_leases: bool,
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let mut mutations = Mutations::NONE;
    if let Some(name) = &arguments.mutation {
        let Some(mutation) = Mutation::parse(name) else {
            eprintln!("unknown mutation {name}");
            return ExitCode::from(2);
        };
        mutations = mutations.with(mutation);
    }
    let seeds: Vec<u64> = match arguments.seed {
        Some(seed) => vec![seed],
        None => (arguments.first..arguments.first + arguments.seeds).collect(),
    };
    let started = Instant::now();
    let (mut simulated_ms, mut failures, mut events) = (0u64, 0u64, 0u64);
    let (mut promotions, mut appointments) = (0u64, 0u64);
    for seed in &seeds {
        let mut config = if arguments.automatic {
            Config::automatic(*seed, mutations)
        } else {
            Config::for_seed(*seed, mutations)
        };
        config.check_leases = arguments.check_leases;
        config.trace = arguments.trace;
        if let Some(seconds) = arguments.seconds {
            config.safety_ms = seconds * 1000;
        }
        if let Some(seconds) = arguments.liveness_seconds {
            config.liveness_ms = seconds * 1000;
        }
        let outcome = run(config);
        simulated_ms += outcome.at_ms;
        events += outcome.events;
        promotions += outcome.promotions;
        appointments += outcome.appointments;
        if let Some(violation) = &outcome.violation {
            failures += 1;
            if !arguments.trace {
                for line in &outcome.trace {
                    println!("{line}");
                }
            }
            let shape = &outcome.config;
            println!(
                "seed {seed} FAILED at {} ms ({} voters, {} learners, {} partitions, \
                 min_insync {}): {violation}",
                outcome.at_ms, shape.voters, shape.learners, shape.partitions, shape.min_insync
            );
            println!("replay: scripts/sim.sh --seed {seed}{}", replay_flags(&arguments));
            if !arguments.all {
                break;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let simulated = simulated_ms as f64 / 1000.0;
    if arguments.automatic {
        println!("{promotions} promotions; the controller appointed {appointments} leaders");
    }
    println!(
        "{} seeds, {failures} failed; {simulated:.0} simulated s in {elapsed:.1} s \
         ({:.0}x real time, {:.0} events/s)",
        seeds.len(),
        simulated / elapsed,
        events as f64 / elapsed
    );
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The flags that replay a seed of this run.
fn replay_flags(arguments: &Arguments) -> String {
    let mut flags = String::new();
    if arguments.automatic {
        flags.push_str(" --automatic");
    }
    if arguments.check_leases {
        flags.push_str(" --check-leases");
    }
    if let Some(name) = &arguments.mutation {
        flags.push_str(&format!(" --mutation {name}"));
    }
    flags
}
