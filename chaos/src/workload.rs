//! The client workloads: threads that each hold one connection and send one operation at a
//! time, recording every operation. After any answer but a normal one a client drops its
//! connection and opens a new one (under a new client number) to the node the harness then
//! believes leads, or to a replica for the replica readers. With automatic failover the
//! clients find those nodes themselves instead, as a client of such a cluster must: they ask
//! every node what it is ([`crate::probe`]) and take the newest leader, or any replica; and a
//! leader client keeps its connection until an answer but a normal one (a replaced leader
//! must answer `-TRYAGAIN` once its lease ran out).
//!
//! - registers: GET, SET and INCR of `r<k>` on the leader;
//! - appends: APPEND of run-unique elements `c<client>-<n>` to `a<k>`, and reads of them, on
//!   the leader; every 10 s the clients move on to the next few keys, so that no value grows
//!   without bound in a long run;
//! - replica reads: INCR of counters `c<k>` on the leader, GET of them on followers and
//!   learners.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::{classify, ClientError, RespConnection};
use crate::cluster::{Endpoint, View};
use crate::history::{Action, Outcome, Phase, Target};
use crate::probe::{self, Mode};
use crate::recorder::{Recorder, Sender};

/// How long a client waits for one answer.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest pause of a client between two operations, in microseconds: a little
/// randomness in the interleaving, and a history that stays a size the checker and memory
/// take for long runs.
const THINK_US_MAX: u64 = 4_000;

/// How long one set of append keys is written: then the clients move to the next set, so that
/// values (and every read of them) stay short however long the run.
const APPEND_KEYS_LIFETIME_US: u64 = 10_000_000;

/// How long a client waits before trying again when it has no node to talk to.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// The sizes of the workloads.
#[derive(Clone, Debug)]
pub struct WorkloadSettings {
    pub register_clients: u32,
    pub register_keys: u32,
    pub append_clients: u32,
    pub append_keys: u32,
    pub counter_writers: u32,
    pub replica_readers: u32,
    pub counter_keys: u32,
    /// Operations one client thread sends at most.
    pub operations_per_thread_max: u64,
    /// Operations a replica reader sends on one connection before it picks a replica again.
    pub replica_session_operations_max: u64,
}

impl Default for WorkloadSettings {
    fn default() -> Self {
        WorkloadSettings {
            register_clients: 10,
            register_keys: 200,
            append_clients: 4,
            append_keys: 8,
            counter_writers: 2,
            replica_readers: 3,
            counter_keys: 8,
            operations_per_thread_max: 1_000_000,
            replica_session_operations_max: 200,
        }
    }
}

/// What every client thread shares.
pub struct Shared {
    pub recorder: Arc<Recorder>,
    pub view: Arc<Mutex<View>>,
    pub stop: Arc<AtomicBool>,
    /// No operation is invoked after it.
    pub deadline: Instant,
    next_client: AtomicU32,
}

impl Shared {
    #[must_use]
    pub fn new(
        recorder: Arc<Recorder>,
        view: Arc<Mutex<View>>,
        stop: Arc<AtomicBool>,
        deadline: Instant,
    ) -> Shared {
        Shared { recorder, view, stop, deadline, next_client: AtomicU32::new(1) }
    }

    /// A client number never used before in the run.
    pub fn next_client(&self) -> u32 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }

    fn view(&self) -> View {
        self.view.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// One client connection and who it is.
pub struct Session {
    connection: RespConnection,
    pub sender: Sender,
    /// Operations sent on this connection.
    pub operations: u64,
}

impl Session {
    /// Opens a connection to `endpoint` under a new client number.
    ///
    /// # Errors
    ///
    /// When the connection cannot be made.
    pub fn open(
        shared: &Shared,
        endpoint: &Endpoint,
        target: Target,
        phase: Phase,
    ) -> Result<Session, ClientError> {
        let connection = RespConnection::connect(endpoint.port, OPERATION_TIMEOUT)?;
        let client = shared.next_client();
        let sender = Sender { client, node: endpoint.name.clone(), target, phase };
        Ok(Session { connection, sender, operations: 0 })
    }

    /// Sends `action`, recording it; its outcome.
    pub fn perform(&mut self, recorder: &Recorder, action: Action) -> Outcome {
        let (arguments, as_text) = command_of(&action);
        let index = recorder.invoke(&self.sender, action);
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        let reply = self.connection.command(&arguments);
        let answered = reply.is_ok();
        let outcome = classify(reply, as_text);
        recorder.complete(index, outcome.clone(), answered);
        self.operations += 1;
        outcome
    }
}

/// The command of `action`, and whether its bulk answer is text (not an integer).
fn command_of(action: &Action) -> (Vec<String>, bool) {
    let words = |words: &[&str]| words.iter().map(|word| (*word).to_string()).collect();
    match action {
        Action::Get { key } => (words(&["GET", key]), false),
        Action::Set { key, value } => (words(&["SET", key, &value.to_string()]), false),
        Action::Incr { key } => (words(&["INCR", key]), false),
        Action::Append { key, element } => (words(&["APPEND", key, &format!("{element} ")]), false),
        Action::ReadAppends { key } => (words(&["GET", key]), true),
    }
}

/// Which workload a thread runs.
#[derive(Clone, Copy, Debug)]
enum Role {
    Registers,
    Appends,
    CounterWriter,
    ReplicaReader,
}

/// Starts every client thread; each ends at the deadline, on `stop`, or after its operation
/// limit.
#[must_use]
pub fn start(shared: &Arc<Shared>, settings: &WorkloadSettings, seed: u64) -> Vec<JoinHandle<()>> {
    let roles = [
        (Role::Registers, settings.register_clients),
        (Role::Appends, settings.append_clients),
        (Role::CounterWriter, settings.counter_writers),
        (Role::ReplicaReader, settings.replica_readers),
    ];
    let mut threads = Vec::new();
    for (role, count) in roles {
        for _ in 0..count {
            let worker_seed = seed.wrapping_mul(6_364_136_223_846_793_005) ^ threads.len() as u64;
            let shared = Arc::clone(shared);
            let settings = settings.clone();
            threads.push(std::thread::spawn(move || {
                run_thread(&shared, &settings, role, worker_seed);
            }));
        }
    }
    threads
}

fn run_thread(shared: &Shared, settings: &WorkloadSettings, role: Role, seed: u64) {
    let mut random = StdRng::seed_from_u64(seed);
    let target = match role {
        Role::ReplicaReader => Target::Replica,
        _ => Target::Leader,
    };
    let mut session: Option<Session> = None;
    let mut sent = 0;
    let discover = shared.view().discover;
    while sent < settings.operations_per_thread_max && !shared.over() {
        // A leader client follows the harness's view: once another node leads, it reconnects
        // (unless it finds the leader itself).
        let stale = |current: &Session| {
            target == Target::Leader
                && !discover
                && shared.view().leader.is_none_or(|leader| leader.name != current.sender.node)
        };
        let kept = session.take().filter(|current| !stale(current));
        let Some(mut current) = kept.or_else(|| connect(shared, target, &mut random)) else {
            std::thread::sleep(RECONNECT_DELAY);
            continue;
        };
        let generation = shared.recorder.elapsed_us() / APPEND_KEYS_LIFETIME_US;
        let action = next_action(role, settings, &mut random, &current, generation);
        let outcome = current.perform(&shared.recorder, action);
        sent += 1;
        std::thread::sleep(Duration::from_micros(random.gen_range(0..=THINK_US_MAX)));
        let rotate = target == Target::Replica
            && current.operations >= settings.replica_session_operations_max;
        if !matches!(outcome, Outcome::Done { .. }) {
            // A node in admin mode or a replica answers at once: do not spin on it.
            std::thread::sleep(RECONNECT_DELAY);
        } else if !rotate {
            session = Some(current);
        }
    }
}

fn connect(shared: &Shared, target: Target, random: &mut StdRng) -> Option<Session> {
    let view = shared.view();
    let endpoint = match target {
        _ if view.discover => discover(&view.nodes, target, random)?,
        Target::Leader => view.leader?,
        Target::Replica if view.replicas.is_empty() => return None,
        Target::Replica => view.replicas[random.gen_range(0..view.replicas.len())].clone(),
    };
    Session::open(shared, &endpoint, target, Phase::Run).ok()
}

/// Asks every node what it is: the newest leader, or a replica drawn at random.
fn discover(nodes: &[Endpoint], target: Target, random: &mut StdRng) -> Option<Endpoint> {
    let answers: Vec<(usize, probe::Serving)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(index, node)| Some((index, probe::ask(node.port)?)))
        .collect();
    let index = match target {
        Target::Leader => probe::newest_leader(&answers)?,
        Target::Replica => {
            let replicas: Vec<usize> = answers
                .iter()
                .filter(|(_, serving)| serving.mode == Mode::Replica)
                .map(|(index, _)| *index)
                .collect();
            if replicas.is_empty() {
                return None;
            }
            replicas[random.gen_range(0..replicas.len())]
        }
    };
    Some(nodes[index].clone())
}

fn next_action(
    role: Role,
    settings: &WorkloadSettings,
    random: &mut StdRng,
    session: &Session,
    generation: u64,
) -> Action {
    match role {
        Role::Registers => {
            let key = format!("r{}", random.gen_range(0..settings.register_keys));
            match random.gen_range(0..10) {
                0..=3 => Action::Get { key },
                4..=6 => Action::Set { key, value: random.gen_range(0..1000) },
                _ => Action::Incr { key },
            }
        }
        Role::Appends => {
            let first = generation * u64::from(settings.append_keys);
            let key = format!("a{}", first + u64::from(random.gen_range(0..settings.append_keys)));
            if random.gen_ratio(1, 10) {
                Action::ReadAppends { key }
            } else {
                let element = format!("c{}-{}", session.sender.client, session.operations);
                Action::Append { key, element }
            }
        }
        Role::CounterWriter => {
            Action::Incr { key: format!("c{}", random.gen_range(0..settings.counter_keys)) }
        }
        Role::ReplicaReader => {
            Action::Get { key: format!("c{}", random.gen_range(0..settings.counter_keys)) }
        }
    }
}
