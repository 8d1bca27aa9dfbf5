//! Rule 1: the register workload is linearizable, key by key (Herlihy and Wing, "Linearizability:
//! a correctness condition for concurrent objects", 1990; a key's operations only touch that
//! key, so the history is linearizable exactly when each key's is).
//!
//! The model is a register over `Option<i64>`: missing is `None`, `SET v` makes it `v`, `INCR`
//! adds one (a missing key counts as 0) and answers the new value, `GET` answers the value or
//! missing. Only operations sent to the leader count, in both phases.
//!
//! # What each outcome means
//!
//! - `Done`: the operation took effect at one instant inside `[invoked_us, completed_us]`
//!   (both ends inclusive: two operations whose times touch count as concurrent, so the clock's
//!   granularity never makes a violation).
//! - `Refused`: it did not happen; dropped.
//! - `Unknown` read: constrains nothing; dropped.
//! - `Unknown` write (`SET` or `INCR`): it took effect at some instant after `invoked_us`, or
//!   never. These go to a *pool* instead of the search: moving such a write later in a
//!   linearization, up to just before the next operation that observes the register, changes
//!   nothing anyone saw, so every linearization can be rewritten with the unknown writes in
//!   bursts right before a `GET` or `INCR` that needs them (and a burst is only ever needed to
//!   reach the value that operation saw). A burst before an operation may use the pool's writes
//!   invoked no later than the latest instant that operation can take effect. Unknown `INCR`s are
//!   interchangeable, and so are unknown `SET`s of one value, so the search state counts used
//!   ones instead of naming them.
//!
//! # The search
//!
//! A key's `Done` operations, sorted by invocation, split into *stretches* where no operation
//! is pending across a boundary: every linearization orders the stretches by time, and most
//! stretches hold one operation, which keeps the check linear in practice.
//!
//! The search is Wing and Gong's, with Lowe's memoization ("Testing for linearizability",
//! 2017): a node is (the stretch, the set of its operations linearized so far, the register
//! state with the pool writes used); an operation can go next when no other pending one
//! completed before it was invoked. It goes depth first, from the first stretch to the last,
//! and stops at the first order that explains them all; it backtracks only where answers
//! leave a choice (concurrent writes, several ways to use the pool). It is iterative (an
//! explicit stack), visits each node once, and does not enter a stretch with a state that a
//! state which entered it before *dominates* (holds the same value having used no more of
//! the pool). Each key has a budget of nodes; a key that spends it is reported undecided.
//!
//! # The window of a violation
//!
//! When no order explains the history, the search failed in the furthest stretch it reached.
//! The window is taken at the *deepest* node there (the most operations linearized): the
//! operation that last wrote the state at that node, the last operation linearized, and every
//! operation that could have gone next there (the operations of that key pending at the point
//! where the search failed). After a violation the key goes on from the next stretch with a
//! state that matches anything, so later violations of the same key are found too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use super::{malformed, Options, Report, Undecided, Violation};
use crate::history::{Action, Operation, Outcome, Target, Value};

/// The name of this check in violations.
pub const CHECK: &str = "linearizable";

/// Checks every register key of `history` and adds what it found to `report`.
pub fn check(history: &[Operation], options: &Options, report: &mut Report) {
    let mut keys: BTreeMap<&str, KeyHistory> = BTreeMap::new();
    for operation in history {
        let Some(entry) = classify(operation) else {
            continue;
        };
        let key_history = keys.entry(operation.action.key()).or_default();
        key_history.add(entry, operation, report);
    }
    for (key, key_history) in keys {
        report.registers_checked += key_history.checked;
        check_key(key, key_history, options.search_steps_per_key_max, report);
    }
}

/// What the register held, as far as the search knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Held {
    /// Any value: the state after a violation, so that the search can go on.
    Anything,
    Missing,
    Integer(i64),
}

impl Held {
    fn from_answer(answer: Option<i64>) -> Held {
        answer.map_or(Held::Missing, Held::Integer)
    }
}

impl fmt::Display for Held {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Held::Anything => write!(formatter, "anything"),
            Held::Missing => write!(formatter, "missing"),
            Held::Integer(value) => write!(formatter, "{value}"),
        }
    }
}

/// A `Done` register operation and what it answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get(Option<i64>),
    Set(i64),
    Incr(i64),
}

impl fmt::Display for Kind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Get(answer) => write!(formatter, "GET answered {}", Held::from_answer(*answer)),
            Kind::Set(value) => write!(formatter, "SET {value}"),
            Kind::Incr(answer) => write!(formatter, "INCR answered {answer}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct KnownOperation {
    index: u64,
    invoked_us: u64,
    completed_us: u64,
    kind: Kind,
}

/// What one history record means to this check.
enum Entry {
    Known(KnownOperation),
    UnknownSet {
        value: i64,
        invoked_us: u64,
    },
    UnknownIncr {
        invoked_us: u64,
    },
    Dropped,
    /// Not a real operation: reported, then treated as `instead`.
    Malformed {
        message: &'static str,
        instead: Box<Entry>,
    },
}

enum Write {
    Set(i64),
    Incr,
}

/// What `operation` means to this check; `None` when it is no leader register operation.
fn classify(operation: &Operation) -> Option<Entry> {
    let write = match &operation.action {
        Action::Get { .. } => None,
        Action::Set { value, .. } => Some(Write::Set(*value)),
        Action::Incr { .. } => Some(Write::Incr),
        Action::Append { .. } | Action::ReadAppends { .. } => return None,
    };
    if operation.target != Target::Leader {
        return None;
    }
    let invoked_us = operation.invoked_us;
    let unknown = |write: Option<Write>| match write {
        None => Entry::Dropped,
        Some(Write::Set(value)) => Entry::UnknownSet { value, invoked_us },
        Some(Write::Incr) => Entry::UnknownIncr { invoked_us },
    };
    let answer = match &operation.outcome {
        Outcome::Refused { .. } => return Some(Entry::Dropped),
        Outcome::Unknown { .. } => return Some(unknown(write)),
        Outcome::Done { answer } => answer,
    };
    let Some(completed_us) = operation.completed_us.filter(|&completed| completed >= invoked_us)
    else {
        let message = "is done but has no completion time at or after its invocation";
        return Some(Entry::Malformed { message, instead: Box::new(unknown(write)) });
    };
    let kind = match (write, answer) {
        (None, Value::Missing) => Kind::Get(None),
        (None, Value::Integer(value)) => Kind::Get(Some(*value)),
        (Some(Write::Set(value)), _) => Kind::Set(value),
        (Some(Write::Incr), Value::Integer(value)) => Kind::Incr(*value),
        (None, Value::Text(_)) => {
            let message = "is a GET of a register that answered text";
            return Some(Entry::Malformed { message, instead: Box::new(Entry::Dropped) });
        }
        (Some(Write::Incr), _) => {
            let message = "is an INCR that answered something other than an integer";
            return Some(Entry::Malformed {
                message,
                instead: Box::new(unknown(Some(Write::Incr))),
            });
        }
    };
    let index = operation.index;
    Some(Entry::Known(KnownOperation { index, invoked_us, completed_us, kind }))
}

/// The writes of one key whose outcome is unknown: each may take effect once, after its
/// invocation, or never.
#[derive(Default)]
struct Pool {
    incr_invoked_us: Vec<u64>,
    set_invoked_us: BTreeMap<i64, Vec<u64>>,
}

impl Pool {
    fn sort(&mut self) {
        self.incr_invoked_us.sort_unstable();
        for invoked in self.set_invoked_us.values_mut() {
            invoked.sort_unstable();
        }
    }

    fn incrs_by(&self, deadline_us: u64) -> u64 {
        self.incr_invoked_us.partition_point(|&invoked| invoked <= deadline_us) as u64
    }

    fn sets_by(invoked: &[u64], deadline_us: u64) -> u64 {
        invoked.partition_point(|&invoked| invoked <= deadline_us) as u64
    }
}

#[derive(Default)]
struct KeyHistory {
    known: Vec<KnownOperation>,
    pool: Pool,
    checked: u64,
}

impl KeyHistory {
    fn add(&mut self, entry: Entry, operation: &Operation, report: &mut Report) {
        match entry {
            Entry::Known(known) => self.known.push(known),
            Entry::UnknownSet { value, invoked_us } => {
                self.pool.set_invoked_us.entry(value).or_default().push(invoked_us);
            }
            Entry::UnknownIncr { invoked_us } => self.pool.incr_invoked_us.push(invoked_us),
            Entry::Dropped => return,
            Entry::Malformed { message, instead } => {
                report.violations.push(malformed(operation, message));
                return self.add(*instead, operation, report);
            }
        }
        self.checked += 1;
    }
}

/// The search state apart from which operations are linearized: the register and the pool
/// writes used so far.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Config {
    held: Held,
    used_sets: UsedSets,
    used_incrs: u64,
}

impl Config {
    fn fresh(held: Held) -> Config {
        Config { held, used_sets: UsedSets::default(), used_incrs: 0 }
    }
}

/// The values of the unknown `SET`s used, as a sorted multiset. Shared between the search
/// nodes (it only grows along a path, and late in a long history it can hold hundreds), and
/// hashed by a digest kept up to date, so that copying and hashing a node stay cheap.
#[derive(Clone, Debug, Default)]
struct UsedSets {
    values: Rc<[i64]>,
    /// The sum of a mix of each value: the same for equal multisets, whatever the order.
    digest: u64,
}

impl UsedSets {
    fn count(&self, value: i64) -> u64 {
        let first = self.values.partition_point(|&used| used < value);
        let end = self.values.partition_point(|&used| used <= value);
        (end - first) as u64
    }

    fn with(&self, value: i64) -> UsedSets {
        let mut values = self.values.to_vec();
        values.insert(values.partition_point(|&used| used < value), value);
        let mixed = FastHasher::mix(value as u64);
        UsedSets { values: values.into(), digest: self.digest.wrapping_add(mixed) }
    }

    /// True when every value of `self` is in `other`, as many times.
    fn is_within(&self, other: &UsedSets) -> bool {
        // Both sorted: a merge walk.
        let mut remaining = other.values.iter();
        self.values.iter().all(|value| remaining.any(|other| other == value))
    }
}

impl PartialEq for UsedSets {
    fn eq(&self, other: &UsedSets) -> bool {
        self.digest == other.digest
            && (Rc::ptr_eq(&self.values, &other.values) || self.values == other.values)
    }
}

impl Eq for UsedSets {}

impl std::hash::Hash for UsedSets {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

/// A cheap hasher for the memo (FxHash's mixing, with a final avalanche so that keys that
/// differ only in high bits do not share buckets); the memo's keys are not attacker-chosen.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn write_i64(&mut self, word: i64) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        FastHasher::mix(self.0)
    }
}

impl FastHasher {
    /// MurmurHash3's finalizer: every bit of `word` moves about half the bits of the result.
    fn mix(word: u64) -> u64 {
        let mut mixed = word;
        mixed = (mixed ^ (mixed >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        mixed ^ (mixed >> 33)
    }
}

type FastBuild = BuildHasherDefault<FastHasher>;

/// The set of linearized operations of a stretch, one bit each.
type Bits = Box<[u64]>;

fn bit_is_set(bits: &[u64], position: usize) -> bool {
    bits[position / 64] & (1 << (position % 64)) != 0
}

fn no_bits(stretch: &[KnownOperation]) -> Bits {
    vec![0; stretch.len().div_ceil(64)].into_boxed_slice()
}

/// One node of the search: the operations of stretch `stretch` linearized so far, and the
/// state they leave.
#[derive(Clone)]
struct Frame {
    stretch: usize,
    linearized: Bits,
    config: Config,
    depth: usize,
    last_writer: Option<u64>,
    last_linearized: Option<u64>,
}

/// Why the search stopped short of the end of a key's history.
enum Failure {
    /// No order explains stretch `stretch`.
    Violation { violation: Violation, stretch: usize },
    /// The budget ran out in the stretch that begins with op `at`.
    Budget { at: u64 },
}

fn check_key(key: &str, mut key_history: KeyHistory, budget: u64, report: &mut Report) {
    key_history.known.sort_unstable_by_key(|known| (known.invoked_us, known.index));
    key_history.pool.sort();
    let stretches = stretches(&key_history.known);
    let mut search = Search {
        key,
        pool: &key_history.pool,
        stretches: &stretches,
        steps: 0,
        budget,
        visited: HashSet::default(),
        entered: HashMap::default(),
        configs: Vec::new(),
    };
    let mut from = 0;
    let mut held = Held::Missing;
    while from < stretches.len() {
        match search.run(from, held) {
            Ok(()) => return,
            Err(Failure::Violation { violation, stretch }) => {
                report.violations.push(violation);
                from = stretch + 1;
                held = Held::Anything;
            }
            Err(Failure::Budget { at }) => {
                let reason = format!(
                    "the search spent its budget of {budget} steps in the stretch from op {at}"
                );
                report.undecided.push(Undecided { check: CHECK, key: key.to_owned(), reason });
                return;
            }
        }
    }
}

/// Splits operations sorted by invocation where no operation is pending across the boundary.
fn stretches(known: &[KnownOperation]) -> Vec<&[KnownOperation]> {
    let mut result = Vec::new();
    let mut begin = 0;
    let mut completed_max_us = 0;
    for (position, operation) in known.iter().enumerate() {
        if position > begin && operation.invoked_us > completed_max_us {
            result.push(&known[begin..position]);
            begin = position;
        }
        completed_max_us = completed_max_us.max(operation.completed_us);
    }
    if begin < known.len() {
        result.push(&known[begin..]);
    }
    result
}

/// The search over one key's stretches.
struct Search<'a> {
    key: &'a str,
    pool: &'a Pool,
    stretches: &'a [&'a [KnownOperation]],
    steps: u64,
    budget: u64,
    /// Nodes already taken: (stretch, linearized, state).
    visited: HashSet<(usize, Bits, Config), FastBuild>,
    /// The states each stretch was entered with.
    entered: HashMap<usize, Vec<Config>, FastBuild>,
    /// Room for the successors of one operation, kept to save allocations.
    configs: Vec<Config>,
}

impl Search<'_> {
    /// Searches depth first for one order that explains every stretch from `from` on, starting
    /// with the register holding `held`.
    fn run(&mut self, from: usize, held: Held) -> Result<(), Failure> {
        self.visited.clear();
        self.entered.clear();
        let mut stack = vec![Frame {
            stretch: from,
            linearized: no_bits(self.stretches[from]),
            config: Config::fresh(held),
            depth: 0,
            last_writer: None,
            last_linearized: None,
        }];
        let mut deepest = stack[0].clone();
        while let Some(frame) = stack.pop() {
            let stretch = self.stretches[frame.stretch];
            // Nodes are marked visited when taken, not when pushed: most pushed ones are
            // never taken, because the first way tried usually explains everything. The first
            // and last node of a stretch need no mark: `enter_next` sees to both.
            if frame.depth > 0 && frame.depth < stretch.len() {
                let node = (frame.stretch, frame.linearized.clone(), frame.config.clone());
                if !self.visited.insert(node) {
                    continue;
                }
            }
            self.steps += 1;
            if self.steps > self.budget {
                return Err(Failure::Budget { at: stretch.first().map_or(0, |first| first.index) });
            }
            if frame.depth == stretch.len() {
                if frame.stretch + 1 == self.stretches.len() {
                    return Ok(());
                }
                self.enter_next(frame, &mut stack);
                continue;
            }
            if (frame.stretch, frame.depth) > (deepest.stretch, deepest.depth) {
                deepest = frame.clone();
            }
            self.expand(stretch, &frame, &mut stack);
        }
        let violation = self.violation(self.stretches[deepest.stretch], &deepest);
        Err(Failure::Violation { violation, stretch: deepest.stretch })
    }

    /// Pushes the start of the stretch after `frame`'s, unless a state that explains at least
    /// as much entered it before (then this one fails wherever that one fails).
    fn enter_next(&mut self, frame: Frame, stack: &mut Vec<Frame>) {
        let next = frame.stretch + 1;
        let entered = self.entered.entry(next).or_default();
        let dominated = entered
            .iter()
            .rev()
            .take(DOMINANCE_COMPARISONS_MAX)
            .any(|config| dominates(config, &frame.config));
        if dominated {
            return;
        }
        entered.push(frame.config.clone());
        stack.push(Frame {
            stretch: next,
            linearized: no_bits(self.stretches[next]),
            config: frame.config,
            depth: 0,
            last_writer: frame.last_writer,
            last_linearized: None,
        });
    }

    /// Pushes every node that `frame` leads to, the earliest invoked operation on top.
    fn expand(&mut self, stretch: &[KnownOperation], frame: &Frame, stack: &mut Vec<Frame>) {
        let (deadline_us, end) = frontier(stretch, &frame.linearized);
        for (position, operation) in stretch[..end].iter().enumerate().rev() {
            if bit_is_set(&frame.linearized, position) {
                continue;
            }
            let mut configs = std::mem::take(&mut self.configs);
            successors(operation.kind, &frame.config, self.pool, deadline_us, &mut configs);
            for config in configs.drain(..) {
                let mut linearized = frame.linearized.clone();
                linearized[position / 64] |= 1 << (position % 64);
                let writes = !matches!(operation.kind, Kind::Get(_));
                stack.push(Frame {
                    stretch: frame.stretch,
                    linearized,
                    config,
                    depth: frame.depth + 1,
                    last_writer: if writes { Some(operation.index) } else { frame.last_writer },
                    last_linearized: Some(operation.index),
                });
            }
            self.configs = configs;
        }
    }

    fn violation(&self, stretch: &[KnownOperation], deepest: &Frame) -> Violation {
        let (_, end) = frontier(stretch, &deepest.linearized);
        let pending: Vec<&KnownOperation> = (0..end)
            .filter(|&position| !bit_is_set(&deepest.linearized, position))
            .map(|position| &stretch[position])
            .collect();
        let mut window: Vec<u64> = pending.iter().map(|operation| operation.index).collect();
        window.extend(deepest.last_writer);
        window.extend(deepest.last_linearized);
        window.sort_unstable();
        window.dedup();
        let since = match (deepest.last_linearized, deepest.last_writer) {
            (Some(last), _) => format!("after op {last}"),
            (None, Some(writer)) => format!("after op {writer}"),
            (None, None) => "at the start".to_owned(),
        };
        let blocking = pending.iter().min_by_key(|operation| operation.completed_us);
        let blocked = blocking.map_or(String::new(), |operation| {
            format!(" (op {}: {})", operation.index, operation.kind)
        });
        let message = format!(
            "no order of the operations explains the answers: {since} the register holds {}, \
             and no operation that can go next fits{blocked}",
            deepest.config.held,
        );
        Violation { check: CHECK, key: self.key.to_owned(), message, window }
    }
}

/// The latest instant the next operation can take effect (the earliest completion among the
/// pending operations), and the end of the prefix of `stretch` that holds every pending
/// operation invoked by then (the candidates to go next).
fn frontier(stretch: &[KnownOperation], linearized: &[u64]) -> (u64, usize) {
    let mut deadline_us = u64::MAX;
    for (position, operation) in stretch.iter().enumerate() {
        if bit_is_set(linearized, position) {
            continue;
        }
        // Sorted by invocation: no later operation can go next or complete earlier.
        if operation.invoked_us > deadline_us {
            return (deadline_us, position);
        }
        deadline_us = deadline_us.min(operation.completed_us);
    }
    (deadline_us, stretch.len())
}

/// The states after `kind` takes effect in `config`, with bursts of pool writes invoked by
/// `deadline_us` placed right before it when they are needed.
fn successors(kind: Kind, config: &Config, pool: &Pool, deadline_us: u64, out: &mut Vec<Config>) {
    let (needed, after) = match kind {
        Kind::Set(value) => {
            out.push(Config { held: Held::Integer(value), ..config.clone() });
            return;
        }
        Kind::Get(answer) => (Held::from_answer(answer), Held::from_answer(answer)),
        Kind::Incr(answer) => match answer.checked_sub(1) {
            Some(before) => (Held::Integer(before), Held::Integer(answer)),
            None => return,
        },
    };
    let fits = match (config.held, needed) {
        (Held::Anything, _) => true,
        (Held::Missing, Held::Integer(0)) => matches!(kind, Kind::Incr(_)),
        (held, needed) => held == needed,
    };
    if fits {
        out.push(Config { held: after, ..config.clone() });
        return;
    }
    if let Held::Integer(target) = needed {
        let first = out.len();
        bursts(config, target, pool, deadline_us, out);
        for config in &mut out[first..] {
            config.held = after;
        }
    }
}

/// The ways pool writes invoked by `deadline_us` can bring `config` to `target`: `INCR`s
/// alone, or one `SET` followed by `INCR`s (more than one `SET`, or `INCR`s before it, would
/// only use up the pool).
fn bursts(config: &Config, target: i64, pool: &Pool, deadline_us: u64, out: &mut Vec<Config>) {
    let incrs_free = pool.incrs_by(deadline_us).saturating_sub(config.used_incrs);
    let base = match config.held {
        Held::Anything => return,
        Held::Missing => 0,
        Held::Integer(value) => value,
    };
    if let Some(steps) = target.checked_sub(base).and_then(|steps| u64::try_from(steps).ok()) {
        if steps >= 1 && steps <= incrs_free {
            out.push(Config { used_incrs: config.used_incrs + steps, ..config.clone() });
        }
    }
    let lowest = target.saturating_sub(i64::try_from(incrs_free).unwrap_or(i64::MAX));
    for (&value, invoked) in pool.set_invoked_us.range(lowest..=target) {
        if Pool::sets_by(invoked, deadline_us) <= config.used_sets.count(value) {
            continue;
        }
        let Some(steps) = target.checked_sub(value).and_then(|s| u64::try_from(s).ok()) else {
            continue;
        };
        let used_sets = config.used_sets.with(value);
        out.push(Config { held: config.held, used_sets, used_incrs: config.used_incrs + steps });
    }
}

/// The states that entered a stretch before that a new one is compared with.
const DOMINANCE_COMPARISONS_MAX: usize = 256;

/// True when `better` holds what `worse` holds having used a sub-multiset of its pool writes.
fn dominates(better: &Config, worse: &Config) -> bool {
    if better.held != worse.held || better.used_incrs > worse.used_incrs {
        return false;
    }
    // Both sorted: a merge walk checks the sub-multiset.
    better.used_sets.is_within(&worse.used_sets)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::check::testing::{simulate, Builder, Workload};
    use crate::check::{check, check_with};
    use crate::history::{read_history, Phase};

    fn register_violations(history: &[Operation]) -> Vec<Violation> {
        let report = check(history);
        assert!(report.undecided.is_empty(), "{report}");
        report.violations
    }

    fn set_action(value: i64) -> Action {
        Action::Set { key: "r".to_owned(), value }
    }

    fn incr_action() -> Action {
        Action::Incr { key: "r".to_owned() }
    }

    #[test]
    fn a_sequential_history_passes() {
        let mut history = Builder::default();
        history.get(1, "r", None, (0, 5));
        history.set(1, "r", 3, (10, 15));
        history.incr(2, "r", 4, (20, 25));
        history.get(1, "r", Some(4), (30, 35));
        history.incr(1, "s", 1, (30, 35));
        let report = check(&history.operations);
        assert!(report.valid(), "{report}");
        assert_eq!(report.registers_checked, 5);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_fails() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (0, 10));
        let second = history.set(1, "r", 2, (20, 30));
        let read = history.get(2, "r", Some(1), (40, 50));
        let violations = register_violations(&history.operations);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].check, CHECK);
        assert_eq!(violations[0].key, "r");
        assert_eq!(violations[0].window, vec![second, read]);
        assert!(violations[0].message.contains("holds 2"), "{}", violations[0].message);
    }

    #[test]
    fn concurrent_writes_read_in_either_order_pass() {
        for last in [1, 2] {
            let mut history = Builder::default();
            history.set(1, "r", 1, (0, 100));
            history.set(2, "r", 2, (10, 90));
            history.get(3, "r", Some(last), (120, 130));
            history.get(3, "r", Some(last), (140, 150));
            assert!(check(&history.operations).valid());
        }
    }

    #[test]
    fn reads_that_disagree_on_the_order_of_concurrent_writes_fail() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (0, 100));
        history.set(2, "r", 2, (10, 90));
        history.get(3, "r", Some(2), (120, 130));
        history.get(3, "r", Some(1), (140, 150));
        assert_eq!(register_violations(&history.operations).len(), 1);
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in [Some(1), Some(2)] {
            let mut history = Builder::default();
            history.set(1, "r", 1, (0, 10));
            history.set(1, "r", 2, (20, 60));
            history.get(2, "r", seen, (30, 40));
            assert!(check(&history.operations).valid());
        }
    }

    #[test]
    fn an_unknown_write_that_shows_up_later_passes() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (0, 10));
        history.unknown(1, set_action(7), 20);
        history.get(2, "r", Some(1), (30, 40));
        history.get(2, "r", Some(7), (1_000, 1_010));
        history.get(2, "r", Some(7), (1_020, 1_030));
        assert!(check(&history.operations).valid());
    }

    #[test]
    fn an_unknown_write_that_never_shows_up_passes() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (0, 10));
        history.unknown(1, set_action(7), 20);
        history.unknown(3, incr_action(), 25);
        history.get(2, "r", Some(1), (30, 40));
        history.get(2, "r", Some(1), (1_000, 1_010));
        assert!(check(&history.operations).valid());
    }

    #[test]
    fn an_unknown_write_takes_effect_at_most_once() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (0, 10));
        history.unknown(1, set_action(7), 20);
        history.get(2, "r", Some(7), (30, 40));
        history.set(2, "r", 1, (50, 60));
        history.get(2, "r", Some(7), (70, 80));
        assert_eq!(register_violations(&history.operations).len(), 1);
    }

    #[test]
    fn an_unknown_write_cannot_take_effect_before_it_was_invoked() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (0, 10));
        history.get(2, "r", Some(7), (20, 30));
        history.unknown(1, set_action(7), 40);
        assert_eq!(register_violations(&history.operations).len(), 1);
    }

    #[test]
    fn unknown_incrs_explain_a_jump_of_as_many() {
        let mut history = Builder::default();
        history.incr(1, "r", 1, (0, 10));
        history.unknown(1, incr_action(), 20);
        history.unknown(2, incr_action(), 21);
        history.incr(3, "r", 4, (30, 40));
        assert!(check(&history.operations).valid());
        history.incr(3, "r", 6, (50, 60));
        assert_eq!(register_violations(&history.operations).len(), 1);
    }

    #[test]
    fn an_unknown_set_then_unknown_incrs_explain_a_read() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (0, 10));
        history.unknown(1, set_action(50), 20);
        history.unknown(2, incr_action(), 21);
        history.get(3, "r", Some(51), (30, 40));
        assert!(check(&history.operations).valid());
    }

    #[test]
    fn an_incr_that_skips_a_value_fails() {
        let mut history = Builder::default();
        history.incr(1, "r", 1, (0, 10));
        history.incr(1, "r", 2, (20, 30));
        let skipping = history.incr(2, "r", 4, (40, 50));
        let violations = register_violations(&history.operations);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].window.contains(&skipping));
    }

    #[test]
    fn refused_writes_did_not_happen() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (0, 10));
        history.refused(1, set_action(9), (20, 30));
        history.get(2, "r", Some(9), (40, 50));
        assert_eq!(register_violations(&history.operations).len(), 1);
    }

    #[test]
    fn a_read_of_a_missing_key_after_a_write_fails() {
        let mut history = Builder::default();
        history.incr(1, "r", 1, (0, 10));
        history.get(2, "r", None, (20, 30));
        assert_eq!(register_violations(&history.operations).len(), 1);
    }

    #[test]
    fn checking_goes_on_after_a_violation() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (0, 10));
        history.get(2, "r", Some(5), (20, 30));
        history.get(2, "r", Some(5), (40, 50));
        history.set(1, "r", 2, (60, 70));
        history.get(2, "r", Some(3), (80, 90));
        assert_eq!(register_violations(&history.operations).len(), 2);
    }

    #[test]
    fn replica_reads_are_no_register_operations() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (0, 10));
        history.get(2, "r", None, (20, 30));
        history.on(Target::Replica, Phase::Run);
        assert!(check(&history.operations).violations.iter().all(|v| v.check != CHECK));
    }

    #[test]
    fn malformed_records_are_reported_not_panicked_on() {
        let mut history = Builder::default();
        history.set(1, "r", 1, (10, 5));
        let action = Action::Get { key: "r".to_owned() };
        let text = Outcome::Done { answer: Value::Text("x".to_owned()) };
        history.push(1, action.clone(), (20, Some(30)), text);
        history.push(1, incr_action(), (40, None), Outcome::Done { answer: Value::Integer(2) });
        history.push(
            1,
            incr_action(),
            (i64::MAX as u64, Some(u64::MAX)),
            Outcome::Done { answer: Value::Integer(i64::MIN) },
        );
        let report = check(&history.operations);
        let malformed = report.violations.iter().filter(|v| v.check == "history").count();
        assert_eq!(malformed, 3, "{report}");
        assert_eq!(report.violations.len(), 4, "{report}");
    }

    #[test]
    fn a_key_that_spends_its_budget_is_undecided() {
        let mut history = Builder::default();
        for client in 0..12 {
            history.set(client, "r", i64::from(client), (0, 1_000));
        }
        history.get(99, "r", Some(100), (2_000, 2_010));
        let options = crate::check::Options { search_steps_per_key_max: 500 };
        let report = check_with(&history.operations, &options);
        assert!(report.valid(), "{report}");
        assert_eq!(report.undecided.len(), 1, "{report}");
        assert!(report.to_string().contains("undecided linearizable r"), "{report}");
    }

    /// The out-of-sync promotion of issue 13, as recorded: writes acknowledged while follower
    /// n3 was paused, the leader n1 killed, n3 promoted, and a later read that misses them.
    const PROMOTION: &str = include_str!("testdata/out-of-sync-promotion.jsonl");

    #[test]
    fn the_out_of_sync_promotion_is_caught() {
        let history = read_history(PROMOTION.as_bytes()).expect("the recorded history reads");
        let report = check(&history);
        assert!(!report.valid());
        let register: Vec<&Violation> =
            report.violations.iter().filter(|v| v.check == CHECK).collect();
        assert_eq!(register.len(), 1, "{report}");
        assert_eq!(register[0].window, vec![4, 7], "{report}");
        let appends: Vec<&Violation> =
            report.violations.iter().filter(|v| v.check == "appends").collect();
        assert!(appends.iter().any(|v| v.window == vec![3, 8]), "{report}");
        assert!(report.to_string().starts_with("INVALID"), "{report}");
    }

    fn small_workload() -> impl Strategy<Value = Workload> {
        (any::<u64>(), 1_u32..6, 1_u64..4, 1_usize..80, 0_u64..200, 2_u64..400, 1_u64..400)
            .prop_map(|(seed, clients, keys, operations, unknown, latency, think)| Workload {
                seed,
                clients,
                keys,
                operations,
                unknown_per_mille: unknown,
                latency_us_max: latency,
                think_us_max: think,
            })
    }

    /// A reference checker by brute force, with none of the search's shortcuts: unknown writes
    /// are ordinary operations that may go at any point after their invocation or never.
    fn linearizable_by_brute_force(history: &[Operation]) -> bool {
        let operations: Vec<&Operation> = history
            .iter()
            .filter(|operation| {
                !matches!(
                    (&operation.action, &operation.outcome),
                    (_, Outcome::Refused { .. }) | (Action::Get { .. }, Outcome::Unknown { .. })
                )
            })
            .collect();
        let mut stack = vec![(vec![false; operations.len()], None::<i64>)];
        while let Some((done, held)) = stack.pop() {
            let pending = |position: usize| {
                !done[position] && matches!(operations[position].outcome, Outcome::Done { .. })
            };
            if !(0..operations.len()).any(pending) {
                return true;
            }
            let deadline = (0..operations.len())
                .filter(|&position| pending(position))
                .filter_map(|position| operations[position].completed_us)
                .min()
                .unwrap_or(u64::MAX);
            for (position, operation) in operations.iter().enumerate() {
                if done[position] || operation.invoked_us > deadline {
                    continue;
                }
                let known = matches!(operation.outcome, Outcome::Done { .. });
                let next = match (&operation.action, &operation.outcome) {
                    (Action::Set { value, .. }, _) => Some(Some(*value)),
                    (Action::Incr { .. }, Outcome::Done { answer: Value::Integer(answer) }) => {
                        (held.unwrap_or(0).checked_add(1) == Some(*answer)).then_some(Some(*answer))
                    }
                    (Action::Incr { .. }, _) if !known => {
                        held.unwrap_or(0).checked_add(1).map(Some)
                    }
                    (Action::Get { .. }, Outcome::Done { answer }) => {
                        let read = match answer {
                            Value::Integer(value) => Some(*value),
                            _ => None,
                        };
                        (read == held).then_some(held)
                    }
                    _ => None,
                };
                if let Some(next) = next {
                    let mut done = done.clone();
                    done[position] = true;
                    stack.push((done, next));
                }
            }
        }
        false
    }

    fn small_register_history() -> impl Strategy<Value = Vec<Operation>> {
        let operation = (0_u8..3, 0_u64..30, 0_u64..12, 0_u8..4, -1_i64..4, any::<bool>());
        proptest::collection::vec(operation, 1..10).prop_map(|operations| {
            let mut history = Builder::default();
            let mut sorted = operations;
            sorted.sort_by_key(|operation| operation.1);
            for (kind, invoked, duration, outcome, value, missing) in sorted {
                let action = match kind {
                    0 => Action::Get { key: "r".to_owned() },
                    1 => set_action(value),
                    _ => incr_action(),
                };
                let answer =
                    if missing && kind == 0 { Value::Missing } else { Value::Integer(value) };
                let client = history.operations.len() as u32;
                if outcome == 0 {
                    history.unknown(client, action, invoked);
                } else {
                    let done = Outcome::Done { answer };
                    history.push(client, action, (invoked, Some(invoked + duration)), done);
                }
            }
            history.operations
        })
    }

    proptest! {
        // Cheap cases, and the strongest evidence that the shortcuts (stretches, the pool of
        // unknown writes, pruning) lose nothing: many of them.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn the_search_agrees_with_brute_force(history in small_register_history()) {
            let report = check(&history);
            prop_assert!(report.undecided.is_empty(), "{report}");
            let expected = linearizable_by_brute_force(&history);
            prop_assert_eq!(report.valid(), expected, "{}\n{:#?}", report, history);
        }
    }

    proptest! {
        #[test]
        fn a_linearizable_history_is_accepted(workload in small_workload()) {
            let history = simulate(&workload);
            let report = check(&history);
            prop_assert!(report.valid(), "{report}");
            prop_assert!(report.undecided.is_empty(), "{report}");
        }

        #[test]
        fn a_read_of_a_value_never_written_is_rejected(
            workload in small_workload(),
            choice in any::<u64>(),
        ) {
            let mut history = simulate(&workload);
            // Values written are 0..1000 and only ever grow by INCR: a negative one is
            // impossible.
            let answered: Vec<usize> = (0..history.len())
                .filter(|&position| {
                    matches!(history[position].action, Action::Get { .. } | Action::Incr { .. })
                        && matches!(history[position].outcome, Outcome::Done { .. })
                })
                .collect();
            prop_assume!(!answered.is_empty());
            let position = answered[(choice % answered.len() as u64) as usize];
            history[position].outcome = Outcome::Done { answer: Value::Integer(-5) };
            let report = check(&history);
            prop_assert!(!report.valid(), "{report}");
            let index = history[position].index;
            prop_assert!(report.violations.iter().any(|v| v.window.contains(&index)), "{report}");
        }
    }

    #[test]
    fn a_busy_workload_is_accepted() {
        for seed in 0..20 {
            let workload = Workload {
                seed,
                clients: 30,
                keys: 20,
                operations: 5_000,
                unknown_per_mille: 30,
                latency_us_max: 2_000,
                think_us_max: 300,
            };
            let report = check(&simulate(&workload));
            assert!(report.valid(), "{report}");
            assert!(report.undecided.is_empty(), "{report}");
        }
    }

    /// Checker speed on a realistic history: 1,000,000 operations, 300 keys, 30 clients, 3%
    /// unknown. Run with `cargo test --release -p strata-chaos -- --ignored speed --nocapture`.
    #[test]
    #[ignore = "a speed measurement: run it in a release build"]
    fn speed_of_a_million_operations() {
        measure_speed(300);
    }

    /// The same on 30 keys, beyond the workload's few hundred: about one operation of a key
    /// pending at any time, and a thousand unknown writes a key (the search's worst case is
    /// many unknown writes that stay usable: every read then has many explanations).
    #[test]
    #[ignore = "a speed measurement: run it in a release build"]
    fn speed_of_a_million_operations_on_busy_keys() {
        measure_speed(30);
    }

    fn measure_speed(keys: u64) {
        let workload = Workload {
            seed: 7,
            clients: 30,
            keys,
            operations: 1_000_000,
            unknown_per_mille: 30,
            latency_us_max: 2_000,
            think_us_max: 500,
        };
        let history = simulate(&workload);
        let started = std::time::Instant::now();
        let report = check(&history);
        let elapsed = started.elapsed();
        assert!(report.valid(), "{report}");
        assert!(report.undecided.is_empty(), "{report}");
        let per_second = report.registers_checked as f64 / elapsed.as_secs_f64();
        println!(
            "{keys} keys: checked {} register operations in {elapsed:?}: {per_second:.0} \
             operations/s",
            report.registers_checked
        );
        assert!(per_second >= 100_000.0, "{per_second:.0} operations/s");
    }
}
