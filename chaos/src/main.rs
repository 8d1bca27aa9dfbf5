//! `chaos`: runs Strata's chaos harness once and prints the verdict as its last line.
//!
//! ```text
//! chaos --seconds 60 --seed 1 --out /tmp/chaos-1
//! chaos --minutes 30 [--faults 200]
//! chaos --failover automatic --minutes 10 --seed 3    # the cluster's controller fails over
//! chaos --check /tmp/chaos-1/history.jsonl    # checks a recorded history again
//! ```
//!
//! Exits 0 on PASS, 1 on FAIL, 2 when the harness could not run, 130 when interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use strata_chaos::cluster::Failover;
use strata_chaos::nemesis::Fault;
use strata_chaos::run::{self, RunOptions};
use strata_chaos::workload::WorkloadSettings;

/// Set by SIGINT or SIGTERM: the run stops, kills every node and writes what it has.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Real nodes, real clients, random faults, and a checker of the whole history.
#[derive(Parser, Debug)]
#[command(name = "chaos")]
struct Arguments {
    /// How long the workloads and the nemesis run, in minutes.
    #[arg(long, conflicts_with = "seconds")]
    minutes: Option<u64>,
    /// How long the workloads and the nemesis run, in seconds (60 when neither is given).
    #[arg(long)]
    seconds: Option<u64>,
    /// The seed of the fault schedule (from the clock when not given; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the history, the nemesis timeline and the nodes' files go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Faults thrown at most; the run ends once the last one is healed.
    #[arg(long)]
    faults: Option<u64>,
    /// The kinds of fault thrown, comma-separated: kill, pause, partition, isolate, disk-full,
    /// clock-step, remove, and stale-promotion (manual failover) or transfer and
    /// stale-appointment (automatic failover); all of the failover mode's when not given.
    #[arg(long, value_delimiter = ',', value_parser = parse_fault)]
    nemesis: Vec<Fault>,
    /// Who replaces a lost leader: `manual` (the harness's operator promotes followers and
    /// re-points the others, as a person would) or `automatic` (`[cluster] failover =
    /// "automatic"`: the cluster's controller does, and the operator only forms the cluster
    /// and restarts what died).
    #[arg(long, default_value = "manual", value_parser = parse_failover)]
    failover: Failover,
    /// Shard threads per node (1 to 4): with more than one, a node's commands also cross
    /// between its shards while the faults happen.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4))]
    shards: u32,
    /// Known replication bugs to put back in every node, comma-separated (e.g.
    /// promote-out-of-sync; needs a strata binary built with the `mutations` feature): the
    /// run should then FAIL, showing the checker finds the bug.
    #[arg(long, default_value = "")]
    mutation: String,
    /// Checks a history written by an earlier run (`<out>/history.jsonl`) and exits: no
    /// cluster, no nemesis. Prints the report and how fast the checker went.
    #[arg(long, value_name = "HISTORY")]
    check: Option<PathBuf>,
}

/// `--check`: reads and checks a history; 0 when valid, 1 when not, 2 when unreadable.
fn check_only(path: &std::path::Path) -> ExitCode {
    let reading = std::time::Instant::now();
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => {
            println!("chaos: FAIL cannot read {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    let history = match strata_chaos::history::read_history(std::io::BufReader::new(file)) {
        Ok(history) => history,
        Err(error) => {
            println!("chaos: FAIL {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    let read_seconds = reading.elapsed().as_secs_f64();
    let checking = std::time::Instant::now();
    let report = strata_chaos::check::check(&history);
    let seconds = checking.elapsed().as_secs_f64();
    print!("{report}");
    let count = history.len();
    println!(
        "chaos: {count} operations read in {read_seconds:.1} s, checked in {seconds:.1} s \
         ({:.0} operations/s)",
        count as f64 / seconds.max(1e-9)
    );
    if report.valid() {
        println!("chaos: PASS {count} operations");
        ExitCode::SUCCESS
    } else {
        println!("chaos: FAIL {count} operations, {} violations", report.violations.len());
        ExitCode::FAILURE
    }
}

fn parse_failover(name: &str) -> Result<Failover, String> {
    Failover::parse(name).ok_or_else(|| format!("no failover mode {name:?}: manual or automatic"))
}

fn parse_fault(name: &str) -> Result<Fault, String> {
    Fault::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Fault::ALL.iter().map(|fault| fault.name()).collect();
        format!("no fault {name:?}; the faults are {}", names.join(", "))
    })
}

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_interrupt_handler() {
    let handler = on_interrupt as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

fn clock_seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(1, |elapsed| elapsed.as_nanos() as u64 % 1_000_000_007)
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    if let Some(path) = &arguments.check {
        return check_only(path);
    }
    let seconds = arguments.minutes.map_or(arguments.seconds.unwrap_or(60), |minutes| minutes * 60);
    let seed = arguments.seed.unwrap_or_else(clock_seed);
    let out_dir =
        arguments.out.unwrap_or_else(|| std::env::temp_dir().join(format!("strata-chaos-{seed}")));
    let options = RunOptions {
        duration: Duration::from_secs(seconds),
        seed,
        out_dir,
        faults_max: arguments.faults,
        binary: run::strata_binary(),
        workloads: WorkloadSettings::default(),
        mutations: arguments.mutation,
        faults: if arguments.nemesis.is_empty() {
            Fault::defaults(arguments.failover).to_vec()
        } else {
            arguments.nemesis
        },
        failover: arguments.failover,
        shards: arguments.shards,
    };
    install_interrupt_handler();
    match run::run(&options, &INTERRUPTED) {
        Ok(summary) => {
            println!("{}", summary.verdict);
            if summary.pass {
                ExitCode::SUCCESS
            } else if INTERRUPTED.load(Ordering::Relaxed) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            println!("chaos: FAIL seed={seed} error: {error}");
            ExitCode::from(2)
        }
    }
}
