//! One chaos run: start the cluster, form it, run the workloads while the nemesis throws
//! faults and the operator answers them, heal everything, read every key in the final phase,
//! write the history and the timeline, and check the history.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::check::{self, Report};
use crate::cluster::{Cluster, ClusterSettings, Failover};
use crate::explain;
use crate::history::{self, Action, Operation, Outcome, Phase, Target};
use crate::nemesis::{Fault, Nemesis, Scope};
use crate::operator::Operator;
use crate::recorder::{OutcomeCounts, Recorder};
use crate::report;
use crate::timeline::Timeline;
use crate::workload::{self, Session, Shared, WorkloadSettings};

/// How often the main loop looks at the cluster.
const TICK: Duration = Duration::from_millis(100);

/// Violations told in full at the end (operations and faults under way), and listed after
/// those.
const VIOLATIONS_EXPLAINED: usize = 5;
const VIOLATIONS_LISTED: usize = 15;

/// How often a progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// A round of the nemesis and the operator this long is reported: faults under way may last
/// that much longer than drawn.
const STALL_REPORTED: Duration = Duration::from_secs(2);

/// The size of each node's tmpfs, when the nemesis fills disks. tmpfs takes memory only for
/// what is written; the ballast of a disk-full fault takes the rest while it lasts.
const DISK_BYTES: u64 = 1 << 30;

/// How long the cluster may take to form, and to recover once every fault is healed.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the replicas may take to catch up before the final reads.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts of each final read, and how long all of them may take.
const FINAL_READ_ATTEMPTS: u32 = 5;
const FINAL_READS_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How long the workloads and the nemesis run.
    pub duration: Duration,
    pub seed: u64,
    pub out_dir: PathBuf,
    /// Faults thrown at most (the run ends once the last is healed).
    pub faults_max: Option<u64>,
    pub binary: PathBuf,
    pub workloads: WorkloadSettings,
    /// The kinds of fault the nemesis may throw; those this machine cannot (a full disk
    /// without root, clock steps without libfaketime) are left out with a line saying so.
    pub faults: Vec<Fault>,
    /// Shard threads per node: with more than one, commands also cross shards inside a node.
    pub shards: u32,
    /// Known replication bugs to put back in every node (`STRATA_MUTATIONS`, names as in
    /// `core/src/replication/mutations.rs`, comma-separated); empty for a true run.
    pub mutations: String,
    /// Who replaces a lost leader: the harness's operator, or the cluster's controller.
    pub failover: Failover,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub pass: bool,
    /// The last line: `chaos: PASS seed=… ops=… faults=…` or `chaos: FAIL …`.
    pub verdict: String,
    pub operations: usize,
    pub faults: u64,
    pub report: Report,
    pub problems: Vec<String>,
}

/// The `strata` binary: `STRATA_BIN`, or the workspace's debug build.
#[must_use]
pub fn strata_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STRATA_BIN") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("debug").join("strata")
}

/// The options of a schedule a test runs: every fault of `failover`'s mode, the default
/// workloads, output in a temporary directory named after `name`. `None`, with a message,
/// when there is no `strata` binary to run.
#[must_use]
pub fn test_options(
    name: &str,
    seed: u64,
    duration: Duration,
    failover: Failover,
) -> Option<RunOptions> {
    let binary = strata_binary();
    if !binary.is_file() {
        eprintln!("skipped: no strata binary at {binary:?} (build it or set STRATA_BIN)");
        return None;
    }
    let out_dir = std::env::temp_dir().join(format!("strata-{name}-{}", std::process::id()));
    let faults = match failover {
        Failover::Manual => Fault::MANUAL.to_vec(),
        Failover::Automatic => Fault::AUTOMATIC.to_vec(),
    };
    Some(RunOptions {
        duration,
        seed,
        out_dir,
        faults_max: None,
        binary,
        workloads: WorkloadSettings::default(),
        faults,
        mutations: String::new(),
        failover,
        shards: 1,
    })
}

/// Runs a test's schedule to its end and prints the verdict.
///
/// # Panics
///
/// When the harness cannot set up.
#[must_use]
pub fn run_printing(options: &RunOptions) -> RunSummary {
    let interrupt = AtomicBool::new(false);
    let summary = run(options, &interrupt).expect("the harness runs");
    println!("{}", summary.verdict);
    summary
}

/// Runs a test's schedule and checks that it threw faults and passed; removes the run's
/// files when it did.
///
/// # Panics
///
/// When the schedule threw no fault or did not pass (its files are kept, and named).
pub fn assert_schedule_passes(options: &RunOptions) {
    let summary = run_printing(options);
    assert!(summary.faults > 0, "the nemesis threw no fault");
    let out = options.out_dir.display();
    assert!(summary.pass, "{} (history, report and logs in {out})", summary.verdict);
    let _ = std::fs::remove_dir_all(&options.out_dir);
}

/// Runs a test's schedule of two `fault`s with the known bug `mutation` put back in the
/// nodes, and checks that the checker finds the writes it loses; removes the run's files
/// when it did.
///
/// # Panics
///
/// When the run passes, or fails on something else than the checker.
pub fn assert_mutation_caught(mut options: RunOptions, fault: Fault, mutation: &str) {
    options.faults = vec![fault];
    options.faults_max = Some(2);
    options.mutations = mutation.to_string();
    let summary = run_printing(&options);
    let out = options.out_dir.display();
    assert!(!summary.pass, "the bug went unseen: {} (files in {out})", summary.verdict);
    assert!(
        !summary.report.violations.is_empty(),
        "the run failed, but not on the checker: {} {:?} (files in {out})",
        summary.verdict,
        summary.problems
    );
    let _ = std::fs::remove_dir_all(&options.out_dir);
}

/// Runs the whole schedule; `interrupt` (Ctrl-C) ends it early, without the final phase.
///
/// # Errors
///
/// When the harness cannot set up (output directory, binary, ports, a node that never
/// starts); a misbehaving cluster is a failed verdict instead.
pub fn run(options: &RunOptions, interrupt: &AtomicBool) -> Result<RunSummary, String> {
    prepare_out_dir(&options.out_dir)?;
    if !options.binary.is_file() {
        return Err(format!("no strata binary at {:?} (set STRATA_BIN)", options.binary));
    }
    let start = Instant::now();
    let mut timeline = Timeline::new(start);
    let recorder = Arc::new(Recorder::new(start));
    let mut settings = ClusterSettings::new(options.binary.clone(), options.out_dir.clone());
    settings.mutations.clone_from(&options.mutations);
    settings.failover = options.failover;
    settings.shards = options.shards;
    if !options.mutations.is_empty() {
        println!("chaos: known bugs put back in every node: {}", options.mutations);
    }
    let faults = usable_faults(options, &mut settings);
    if faults.is_empty() {
        return Err("no fault kind left to throw".into());
    }
    let mut cluster = Cluster::start(settings)?;
    let mut operator = Operator::new(&cluster);
    let names: Vec<&str> = faults.iter().map(|fault| fault.name()).collect();
    println!(
        "chaos: seed={} out={} failover={} faults={} nodes started",
        options.seed,
        options.out_dir.display(),
        options.failover,
        names.join(",")
    );
    let formed = settle(&mut cluster, &mut operator, &mut timeline, interrupt);
    let scope = Scope {
        node_count: cluster.nodes.len(),
        heartbeat_timeout_ms: cluster.settings.heartbeat_timeout_ms,
        failover: cluster.settings.failover,
        failover_timeout_ms: cluster.settings.failover_timeout_ms,
        faults,
    };
    let mut nemesis = Nemesis::new(options.seed, scope);
    if formed {
        println!("chaos: cluster formed, leader {}", cluster.leader_name());
        let parts =
            Parts { cluster: &mut cluster, operator: &mut operator, timeline: &mut timeline };
        run_faults(options, parts, &mut nemesis, &recorder, interrupt);
    } else {
        let why = operator.unsettled(&cluster).unwrap_or_default();
        timeline.problem("", format!("the cluster did not form within {SETTLE_TIMEOUT:?}: {why}"));
    }
    let interrupted = interrupt.load(Ordering::Relaxed);
    if formed && !interrupted {
        let parts =
            Parts { cluster: &mut cluster, operator: &mut operator, timeline: &mut timeline };
        final_phase(parts, &mut nemesis, &recorder, options);
    }
    drop(cluster);
    finish(options, &recorder, &timeline, &nemesis, &operator, interrupted)
}

/// The fault kinds asked for that this machine can throw at a cluster of this failover mode;
/// sets up what they need (a tmpfs per node, an nftables table, libfaketime).
fn usable_faults(options: &RunOptions, settings: &mut ClusterSettings) -> Vec<Fault> {
    let mut faults = options.faults.clone();
    for fault in Fault::ALL {
        if faults.contains(&fault) && !fault.fits(options.failover) {
            println!("chaos: no {fault} faults: not with {} failover", options.failover);
            faults.retain(|kind| *kind != fault);
        }
    }
    // With automatic failover the firewall cuts the peer links, which no proxy carries.
    let automatic = options.failover == Failover::Automatic;
    let firewalled =
        |fault: &Fault| *fault == Fault::Isolate || (automatic && links_need_firewall(*fault));
    if faults.contains(&Fault::DiskFull) {
        if crate::cluster::can_mount(&options.out_dir) {
            settings.disk_bytes = Some(DISK_BYTES);
        } else {
            println!("chaos: no disk-full faults: mounting a tmpfs needs root");
            faults.retain(|fault| *fault != Fault::DiskFull);
        }
    }
    if faults.iter().any(firewalled) {
        use crate::firewall::Firewall;
        // With automatic failover the rules name connections by the group ids of the nodes.
        let probe = if automatic {
            Firewall::create_marking(&Firewall::groups(1))
        } else {
            Firewall::create()
        };
        match probe {
            Ok(_probe) => settings.firewall = true,
            Err(error) => {
                for fault in faults.iter().filter(|fault| firewalled(fault)) {
                    println!("chaos: no {fault} faults: {error}");
                }
                faults.retain(|fault| !firewalled(fault));
            }
        }
    }
    if faults.contains(&Fault::ClockStep) {
        match libfaketime() {
            Some(path) => settings.faketime = Some(path),
            None => {
                println!("chaos: no clock-step faults: libfaketime is not installed");
                faults.retain(|fault| *fault != Fault::ClockStep);
            }
        }
    }
    faults
}

/// Whether a fault cuts peer links, which the firewall does with automatic failover.
fn links_need_firewall(fault: Fault) -> bool {
    matches!(fault, Fault::Partition | Fault::StaleAppointment)
}

/// Debian's libfaketime (the `faketime` package, which `scripts/setup.sh` installs).
fn libfaketime() -> Option<PathBuf> {
    let path = PathBuf::from(format!(
        "/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1",
        std::env::consts::ARCH
    ));
    path.is_file().then_some(path)
}

/// The cluster and those who act on it.
struct Parts<'a> {
    cluster: &'a mut Cluster,
    operator: &'a mut Operator,
    timeline: &'a mut Timeline,
}

/// The workloads with the nemesis, until the deadline, the fault limit or an interrupt.
fn run_faults(
    options: &RunOptions,
    parts: Parts<'_>,
    nemesis: &mut Nemesis,
    recorder: &Arc<Recorder>,
    interrupt: &AtomicBool,
) {
    let Parts { cluster, operator, timeline } = parts;
    let began = Instant::now();
    let deadline = began + options.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let shared =
        Arc::new(Shared::new(Arc::clone(recorder), cluster.view(), Arc::clone(&stop), deadline));
    let threads = workload::start(&shared, &options.workloads, options.seed);
    let mut last_progress = Instant::now();
    let limit = options.faults_max.unwrap_or(u64::MAX);
    while Instant::now() < deadline && !interrupt.load(Ordering::Relaxed) {
        let may_throw = nemesis.thrown_total() < limit;
        if !may_throw && !nemesis.active() {
            break;
        }
        let ticking = Instant::now();
        nemesis.tick(cluster, timeline, may_throw);
        let nemesis_time = ticking.elapsed();
        operator.tick(cluster, timeline);
        report_stall(began, nemesis_time, ticking.elapsed() - nemesis_time);
        if last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            print_progress(began, recorder, cluster, nemesis);
        }
        std::thread::sleep(TICK);
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        if thread.join().is_err() {
            timeline.problems.push("a client thread panicked (a harness bug)".into());
        }
    }
    print_progress(began, recorder, cluster, nemesis);
}

/// Says so when one round of the nemesis and the operator took long enough to stretch the
/// faults under way (a fault ends at the first round after its time).
fn report_stall(began: Instant, nemesis_time: Duration, operator_time: Duration) {
    if nemesis_time + operator_time >= STALL_REPORTED {
        println!(
            "chaos: {:>6.1}s the harness's round took {:.1} s (nemesis {:.1} s, operator {:.1} s)",
            began.elapsed().as_secs_f64(),
            (nemesis_time + operator_time).as_secs_f64(),
            nemesis_time.as_secs_f64(),
            operator_time.as_secs_f64(),
        );
    }
}

fn print_progress(began: Instant, recorder: &Recorder, cluster: &Cluster, nemesis: &Nemesis) {
    let OutcomeCounts { done, refused, unknown } = recorder.counts();
    println!(
        "chaos: {:>6.1}s ops={} (done {done}, refused {refused}, unknown {unknown}) leader={} \
         fault={} faults={}",
        began.elapsed().as_secs_f64(),
        recorder.len(),
        cluster.leader_name(),
        nemesis.describe(cluster),
        nemesis.thrown_total(),
    );
}

/// Runs the operator until the cluster has a leader every answering node follows.
fn settle(
    cluster: &mut Cluster,
    operator: &mut Operator,
    timeline: &mut Timeline,
    interrupt: &AtomicBool,
) -> bool {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline && !interrupt.load(Ordering::Relaxed) {
        operator.tick(cluster, timeline);
        if operator.settled(cluster) {
            return true;
        }
        std::thread::sleep(TICK);
    }
    false
}

/// Heals every fault, waits for the cluster to recover and the replicas to catch up, and
/// reads every key on the leader.
fn final_phase(
    parts: Parts<'_>,
    nemesis: &mut Nemesis,
    recorder: &Arc<Recorder>,
    options: &RunOptions,
) {
    let Parts { cluster, operator, timeline } = parts;
    println!("chaos: healing every fault");
    nemesis.heal_active(cluster, timeline);
    for index in 0..cluster.nodes.len() {
        cluster.resume(index);
        if !cluster.nodes[index].running() {
            if let Err(error) = cluster.restart(index) {
                let name = cluster.nodes[index].name.clone();
                timeline.problem(&name, format!("restart when healing: {error}"));
            }
        }
    }
    let never = AtomicBool::new(false);
    if !settle(cluster, operator, timeline, &never) {
        let why = operator.unsettled(cluster).unwrap_or_default();
        let text =
            format!("the cluster did not recover within {SETTLE_TIMEOUT:?} of healing: {why}");
        timeline.problem(cluster.leader_name().to_string().as_str(), text);
        return;
    }
    println!("chaos: recovered, leader {}; waiting for the replicas", cluster.leader_name());
    if !wait_caught_up(cluster) {
        println!("chaos: the replicas did not catch up within {CATCH_UP_TIMEOUT:?}");
    }
    final_reads(cluster, timeline, recorder, &options.workloads);
}

/// Waits until the leader reports every other member alive with nothing to acknowledge.
fn wait_caught_up(cluster: &Cluster) -> bool {
    let Some(leader) = cluster.leader else { return false };
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(reply) = cluster.status(leader, "/admin/nodes") {
            let rows = reply.json["nodes"].as_array().cloned().unwrap_or_default();
            let leader_name = &cluster.nodes[leader].name;
            let caught_up = rows.len() == cluster.nodes.len()
                && rows.iter().filter(|row| row["name"].as_str() != Some(leader_name)).all(|row| {
                    let lag = row["lag"].as_u64().or_else(|| row["lag"].as_str()?.parse().ok());
                    row["status"].as_str() == Some("alive") && lag == Some(0)
                });
            if caught_up {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Reads every key once on the leader (phase `Final`), retrying a read that gets no answer.
fn final_reads(
    cluster: &Cluster,
    timeline: &mut Timeline,
    recorder: &Arc<Recorder>,
    settings: &WorkloadSettings,
) {
    let actions = recorder.read(|history| final_actions(history, settings));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + FINAL_READS_TIMEOUT;
    let shared = Shared::new(Arc::clone(recorder), cluster.view(), stop, deadline);
    let Some(endpoint) = shared.view.lock().ok().and_then(|view| view.leader.clone()) else {
        timeline.problem("", "no leader for the final reads".into());
        return;
    };
    let mut session = None;
    for action in actions {
        let key = action.key().to_string();
        let mut last_error = String::new();
        let done = (0..FINAL_READ_ATTEMPTS).any(|_| {
            if Instant::now() >= deadline {
                return false;
            }
            let current = session.take().map_or_else(
                || Session::open(&shared, &endpoint, Target::Leader, Phase::Final),
                Ok,
            );
            let mut current = match current {
                Ok(current) => current,
                Err(error) => {
                    last_error = error.0;
                    std::thread::sleep(Duration::from_millis(200));
                    return false;
                }
            };
            match current.perform(recorder, action.clone()) {
                Outcome::Done { .. } => {
                    session = Some(current);
                    true
                }
                Outcome::Refused { error } | Outcome::Unknown { error } => {
                    last_error = error;
                    false
                }
            }
        });
        if !done {
            timeline.problem(&endpoint.name, format!("final read of {key} failed: {last_error}"));
        }
    }
}

/// A read of every key: each append key the history wrote or read, and each counter and
/// register key (those of the settings and any other the history names).
fn final_actions(history: &[Operation], settings: &WorkloadSettings) -> Vec<Action> {
    let mut append_keys = BTreeSet::new();
    let mut integer_keys = BTreeSet::new();
    for key in 0..settings.counter_keys {
        integer_keys.insert(format!("c{key}"));
    }
    for key in 0..settings.register_keys {
        integer_keys.insert(format!("r{key}"));
    }
    for operation in history {
        let key = operation.action.key().to_string();
        match operation.action {
            Action::Append { .. } | Action::ReadAppends { .. } => append_keys.insert(key),
            Action::Get { .. } | Action::Set { .. } | Action::Incr { .. } => {
                integer_keys.insert(key)
            }
        };
    }
    let appends = append_keys.into_iter().map(|key| Action::ReadAppends { key });
    appends.chain(integer_keys.into_iter().map(|key| Action::Get { key })).collect()
}

/// Writes the files, checks the history, prints the summary and the verdict.
fn finish(
    options: &RunOptions,
    recorder: &Recorder,
    timeline: &Timeline,
    nemesis: &Nemesis,
    operator: &Operator,
    interrupted: bool,
) -> Result<RunSummary, String> {
    let counts = recorder.counts();
    let operations = recorder.take();
    let history_path = options.out_dir.join("history.jsonl");
    let file = std::fs::File::create(&history_path)
        .map_err(|error| format!("{history_path:?}: {error}"))?;
    history::write_history(&operations, std::io::BufWriter::new(file))
        .map_err(|error| format!("{history_path:?}: {error}"))?;
    let timeline_path = options.out_dir.join("nemesis.jsonl");
    let file = std::fs::File::create(&timeline_path)
        .map_err(|error| format!("{timeline_path:?}: {error}"))?;
    timeline
        .write(std::io::BufWriter::new(file))
        .map_err(|error| format!("{timeline_path:?}: {error}"))?;
    let checking = Instant::now();
    let report = check::check(&operations);
    let check_time = checking.elapsed();
    let faults = nemesis.thrown_total();
    let mut summary = summary_lines(&operations, counts, timeline, nemesis, operator, &report);
    summary.push(format!("chaos: the checker took {:.1} s", check_time.as_secs_f64()));
    if let Some((from_us, gap_us)) = longest_write_gap(&operations) {
        summary.push(format!(
            "chaos: availability: longest time without an acknowledged write {:.1} s \
             (from {:.1} s)",
            gap_us as f64 / 1e6,
            from_us as f64 / 1e6
        ));
    }
    for line in &summary {
        println!("{line}");
    }
    let mut reasons = Vec::new();
    if interrupted {
        reasons.push("interrupted".to_string());
    }
    if !report.valid() {
        reasons.push(format!("violations={}", report.violations.len()));
    }
    if !timeline.problems.is_empty() {
        reasons.push(format!("problems={}", timeline.problems.len()));
    }
    let pass = reasons.is_empty();
    let seed = options.seed;
    let count = operations.len();
    let verdict = if pass {
        format!("chaos: PASS seed={seed} ops={count} faults={faults}")
    } else {
        format!("chaos: FAIL seed={seed} ops={count} faults={faults} {}", reasons.join(" "))
    };
    let page = report::Page {
        verdict: &verdict,
        summary: &summary,
        operations: &operations,
        events: &timeline.events,
    };
    let report_path = options.out_dir.join("report.html");
    report::write_html(&report_path, &page).map_err(|error| format!("{report_path:?}: {error}"))?;
    println!("chaos: report {}", report_path.display());
    Ok(RunSummary {
        pass,
        verdict,
        operations: count,
        faults,
        report,
        problems: timeline.problems.clone(),
    })
}

/// The longest stretch of the run phase between two acknowledged writes: where it began and
/// how long it lasted, in microseconds.
fn longest_write_gap(operations: &[Operation]) -> Option<(u64, u64)> {
    let mut completions: Vec<u64> = operations
        .iter()
        .filter(|operation| operation.phase == Phase::Run)
        .filter(|operation| matches!(operation.outcome, Outcome::Done { .. }))
        .filter(|operation| {
            !matches!(operation.action, Action::Get { .. } | Action::ReadAppends { .. })
        })
        .filter_map(|operation| operation.completed_us)
        .collect();
    completions.sort_unstable();
    completions.windows(2).map(|pair| (pair[0], pair[1] - pair[0])).max_by_key(|&(_, gap)| gap)
}

/// What the operator did (with automatic failover: the leaders the controller chose, and
/// the role calls and restarts), for the summary.
fn operator_actions(operator: &Operator, timeline: &Timeline) -> String {
    if operator.observer.changes > 0 || operator.joins > 0 {
        // Automatic failover: the controller chose every leader.
        format!(
            "leaders seen {} (the controller's), role calls {} ({} made members), restarts {}",
            operator.observer.changes,
            timeline.count("join"),
            operator.joins,
            timeline.count("restart"),
        )
    } else {
        format!(
            "promotions {} (refused {}), re-points {}, restarts {}",
            operator.promotions,
            operator.promotion_refusals,
            timeline.count("repoint"),
            timeline.count("restart"),
        )
    }
}

/// What the run did and what the checker found, in lines printed at the end and shown on the
/// report page.
fn summary_lines(
    operations: &[Operation],
    counts: OutcomeCounts,
    timeline: &Timeline,
    nemesis: &Nemesis,
    operator: &Operator,
    report: &Report,
) -> Vec<String> {
    let OutcomeCounts { done, refused, unknown } = counts;
    let count = operations.len();
    let mut lines = vec![format!(
        "chaos: operations: {count} (done {done}, refused {refused}, unknown {unknown})"
    )];
    let faults: Vec<String> =
        nemesis.thrown.iter().map(|(fault, count)| format!("{} {count}", fault.name())).collect();
    let actions = operator_actions(operator, timeline);
    lines.push(format!(
        "chaos: faults: {} ({}); {actions}",
        nemesis.thrown_total(),
        faults.join(", "),
    ));
    lines.push(format!(
        "chaos: checker: {} register, {} append, {} replica-read operations checked; \
         {} violations",
        report.registers_checked,
        report.appends_checked,
        report.replica_reads_checked,
        report.violations.len(),
    ));
    // The first few told in full: their operations and the faults under way then.
    for violation in report.violations.iter().take(VIOLATIONS_EXPLAINED) {
        lines.extend(explain::violation_lines(violation, operations, &timeline.events));
    }
    for violation in report.violations.iter().skip(VIOLATIONS_EXPLAINED).take(VIOLATIONS_LISTED) {
        lines.push(format!(
            "chaos: violation [{}] {}: {} (operations {:?})",
            violation.check, violation.key, violation.message, violation.window
        ));
    }
    if report.violations.len() > VIOLATIONS_EXPLAINED + VIOLATIONS_LISTED {
        lines.push(format!(
            "chaos: … {} more violations",
            report.violations.len() - VIOLATIONS_EXPLAINED - VIOLATIONS_LISTED
        ));
    }
    for problem in &timeline.problems {
        lines.push(format!("chaos: problem: {problem}"));
    }
    lines
}

/// Creates the output directory and removes what an earlier run with the same directory
/// left: the node directories, shared storage and the two history files.
fn prepare_out_dir(out_dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out_dir).map_err(|error| format!("{out_dir:?}: {error}"))?;
    let entries = std::fs::read_dir(out_dir).map_err(|error| format!("{out_dir:?}: {error}"))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let node_directory = name.strip_prefix('n').is_some_and(|rest| rest.parse::<u32>().is_ok());
        let path = entry.path();
        if node_directory {
            crate::cluster::unmount_disk(&path.join("disk"));
        }
        let removed = if node_directory || name == "shared" {
            std::fs::remove_dir_all(&path)
        } else if ["history.jsonl", "nemesis.jsonl", "report.html"].contains(&name.as_str()) {
            std::fs::remove_file(&path)
        } else {
            Ok(())
        };
        removed.map_err(|error| format!("removing {path:?}: {error}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Operation, Value};

    fn operation(action: Action) -> Operation {
        Operation::sample(action, Outcome::Done { answer: Value::Missing }, (1, 2))
    }

    #[test]
    fn the_final_reads_cover_every_key_the_history_names() {
        let settings = WorkloadSettings { counter_keys: 1, register_keys: 2, ..Default::default() };
        let history = [
            operation(Action::Append { key: "a9".into(), element: "c1-0".into() }),
            operation(Action::ReadAppends { key: "a3".into() }),
            operation(Action::Incr { key: "c7".into() }),
        ];
        let actions = final_actions(&history, &settings);
        let expected = vec![
            Action::ReadAppends { key: "a3".into() },
            Action::ReadAppends { key: "a9".into() },
            Action::Get { key: "c0".into() },
            Action::Get { key: "c7".into() },
            Action::Get { key: "r0".into() },
            Action::Get { key: "r1".into() },
        ];
        assert_eq!(actions, expected);
    }
}
