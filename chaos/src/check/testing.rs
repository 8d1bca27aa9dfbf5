//! Test helpers: a builder for hand-made histories, and a simulated register store with
//! concurrent clients whose histories are linearizable by construction.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::history::{Action, Operation, Outcome, Phase, Target, Value};

/// Builds a history one operation at a time; add them in invocation order.
#[derive(Default)]
pub(crate) struct Builder {
    pub(crate) operations: Vec<Operation>,
}

fn done(answer: Value) -> Outcome {
    Outcome::Done { answer }
}

fn answer(value: Option<i64>) -> Value {
    value.map_or(Value::Missing, Value::Integer)
}

impl Builder {
    pub(crate) fn push(
        &mut self,
        client: u32,
        action: Action,
        times_us: (u64, Option<u64>),
        outcome: Outcome,
    ) -> u64 {
        let index = self.operations.len() as u64;
        self.operations.push(Operation {
            index,
            client,
            node: "n1".to_owned(),
            target: Target::Leader,
            phase: Phase::Run,
            invoked_us: times_us.0,
            completed_us: times_us.1,
            action,
            outcome,
        });
        index
    }

    /// Sends the last operation to `target` in `phase`.
    pub(crate) fn on(&mut self, target: Target, phase: Phase) -> &mut Self {
        if let Some(last) = self.operations.last_mut() {
            last.target = target;
            last.phase = phase;
            last.node = if target == Target::Leader { "n1" } else { "n2" }.to_owned();
        }
        self
    }

    pub(crate) fn set(&mut self, client: u32, key: &str, value: i64, times: (u64, u64)) -> u64 {
        let action = Action::Set { key: key.to_owned(), value };
        self.push(client, action, (times.0, Some(times.1)), done(Value::Missing))
    }

    pub(crate) fn get(
        &mut self,
        client: u32,
        key: &str,
        value: Option<i64>,
        times: (u64, u64),
    ) -> u64 {
        let action = Action::Get { key: key.to_owned() };
        self.push(client, action, (times.0, Some(times.1)), done(answer(value)))
    }

    pub(crate) fn incr(&mut self, client: u32, key: &str, value: i64, times: (u64, u64)) -> u64 {
        let action = Action::Incr { key: key.to_owned() };
        self.push(client, action, (times.0, Some(times.1)), done(Value::Integer(value)))
    }

    /// An operation that got no answer.
    pub(crate) fn unknown(&mut self, client: u32, action: Action, invoked_us: u64) -> u64 {
        let outcome = Outcome::Unknown { error: "timeout".to_owned() };
        self.push(client, action, (invoked_us, None), outcome)
    }

    /// An operation the server refused.
    pub(crate) fn refused(&mut self, client: u32, action: Action, times: (u64, u64)) -> u64 {
        let outcome = Outcome::Refused { error: "READONLY".to_owned() };
        self.push(client, action, (times.0, Some(times.1)), outcome)
    }

    pub(crate) fn append(
        &mut self,
        client: u32,
        key: &str,
        element: &str,
        times: (u64, u64),
    ) -> u64 {
        let action = Action::Append { key: key.to_owned(), element: element.to_owned() };
        self.push(client, action, (times.0, Some(times.1)), done(Value::Integer(1)))
    }

    pub(crate) fn read_appends(
        &mut self,
        client: u32,
        key: &str,
        text: &str,
        times: (u64, u64),
    ) -> u64 {
        let action = Action::ReadAppends { key: key.to_owned() };
        self.push(client, action, (times.0, Some(times.1)), done(Value::Text(text.to_owned())))
    }
}

/// A small deterministic generator (SplitMix64).
pub(crate) struct Random(u64);

impl Random {
    pub(crate) fn new(seed: u64) -> Self {
        Random(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// The shape of a simulated register workload.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    pub(crate) seed: u64,
    pub(crate) clients: u32,
    pub(crate) keys: u64,
    pub(crate) operations: usize,
    /// Operations out of 1,000 that get no answer.
    pub(crate) unknown_per_mille: u64,
    pub(crate) latency_us_max: u64,
    pub(crate) think_us_max: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Invoke {
        slot: u32,
    },
    Apply {
        slot: u32,
        position: usize,
    },
    Complete {
        slot: u32,
        position: usize,
    },
    /// An unknown write that takes effect long after its client gave up on it.
    ApplyLate {
        position: usize,
    },
}

/// Runs `workload` against one linearizable store: every operation takes effect at one
/// instant strictly inside its recorded interval. Unknown operations take effect at their
/// instant, later, or never, and their client goes on with a new connection.
pub(crate) fn simulate(workload: &Workload) -> Vec<Operation> {
    let mut simulator = Simulator {
        workload,
        random: Random::new(workload.seed),
        store: HashMap::new(),
        history: Vec::with_capacity(workload.operations),
        connections: (0..workload.clients).collect(),
        next_connection: workload.clients,
        queue: BinaryHeap::new(),
        sequence: 0,
        latency_us: workload.latency_us_max.max(2),
    };
    for slot in 0..workload.clients {
        let at = simulator.random.below(workload.think_us_max);
        simulator.schedule(at, Event::Invoke { slot });
    }
    while let Some(Reverse((now, _, event))) = simulator.queue.pop() {
        simulator.step(now, event);
    }
    simulator.history
}

struct Simulator<'a> {
    workload: &'a Workload,
    random: Random,
    store: HashMap<String, i64>,
    history: Vec<Operation>,
    /// The connection each client slot uses now.
    connections: Vec<u32>,
    next_connection: u32,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    sequence: u64,
    latency_us: u64,
}

impl Simulator<'_> {
    fn schedule(&mut self, time_us: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((time_us, self.sequence, event)));
    }

    fn step(&mut self, now: u64, event: Event) {
        match event {
            Event::Invoke { slot } => {
                if self.history.len() >= self.workload.operations {
                    return;
                }
                let position = self.history.len();
                let connection = self.connections[slot as usize];
                let mut operation = invent(&mut self.random, self.workload, connection, now);
                operation.index = position as u64;
                self.history.push(operation);
                let at = now + 1 + self.random.below(self.latency_us - 1);
                self.schedule(at, Event::Apply { slot, position });
            }
            Event::Apply { slot, position } => self.take_effect(now, slot, position),
            Event::Complete { slot, position } => {
                self.history[position].completed_us = Some(now);
                let at = now + self.random.below(self.workload.think_us_max);
                self.schedule(at, Event::Invoke { slot });
            }
            Event::ApplyLate { position } => {
                apply(&mut self.store, &self.history[position].action);
            }
        }
    }

    /// The linearization point of an operation; an unknown one may skip it or come later.
    fn take_effect(&mut self, now: u64, slot: u32, position: usize) {
        let unknown = self.random.below(1000) < self.workload.unknown_per_mille;
        let fate = self.random.below(3);
        if !unknown || fate == 0 {
            let answer = apply(&mut self.store, &self.history[position].action);
            self.history[position].outcome = Outcome::Done { answer };
        }
        if !unknown {
            let at = now + 1 + self.random.below(self.latency_us);
            self.schedule(at, Event::Complete { slot, position });
            return;
        }
        self.history[position].outcome = Outcome::Unknown { error: "timeout".to_owned() };
        if fate == 1 {
            let at = now + self.random.below(self.latency_us * 20);
            self.schedule(at, Event::ApplyLate { position });
        }
        self.connections[slot as usize] = self.next_connection;
        self.next_connection += 1;
        self.schedule(now + self.latency_us * 10, Event::Invoke { slot });
    }
}

/// A new register operation, invoked at `now_us`, not yet answered.
fn invent(random: &mut Random, workload: &Workload, client: u32, now_us: u64) -> Operation {
    let key = format!("r{}", random.below(workload.keys));
    let action = match random.below(100) {
        0..50 => Action::Get { key },
        50..75 => Action::Set { key, value: random.below(1000) as i64 },
        _ => Action::Incr { key },
    };
    Operation {
        index: 0,
        client,
        node: "n1".to_owned(),
        target: Target::Leader,
        phase: Phase::Run,
        invoked_us: now_us,
        completed_us: None,
        action,
        outcome: Outcome::Unknown { error: "not answered yet".to_owned() },
    }
}

/// Applies `action` to the store and returns its answer.
fn apply(store: &mut HashMap<String, i64>, action: &Action) -> Value {
    match action {
        Action::Get { key } => answer(store.get(key).copied()),
        Action::Set { key, value } => {
            store.insert(key.clone(), *value);
            Value::Missing
        }
        Action::Incr { key } => {
            let value = store.entry(key.clone()).or_insert(0);
            *value += 1;
            Value::Integer(*value)
        }
        Action::Append { .. } | Action::ReadAppends { .. } => Value::Missing,
    }
}
