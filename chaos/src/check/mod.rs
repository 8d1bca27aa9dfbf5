//! Checks a history: linearizability of the registers, loss of appended values, and the rules
//! of replica reads.
//!
//! One file per property:
//! - [`registers`]: per-key linearizability of `Get`/`Set`/`Incr` sent to the leader (Herlihy and
//!   Wing's definition, checked with Wing and Gong's search as improved by Lowe, per key and per
//!   independent stretch of a key's history);
//! - [`appends`]: every acknowledged append is in the final read, no element twice, none
//!   invented, and the leader's reads of one key only ever grow;
//! - [`replica_reads`]: a replica serves only committed counter values and never goes back in
//!   time on one connection.
//!
//! A record that cannot be a real operation (a `Done` without a completion time, a GET that
//! answered text) is reported as a violation of the `history` check, never a panic.

pub mod appends;
pub mod registers;
pub mod replica_reads;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt;
use std::io::BufReader;
use std::path::Path;

use crate::history::{read_history, HistoryError, Operation};

/// The name of the check for records that cannot be real operations.
pub const CHECK_HISTORY: &str = "history";

/// One broken rule, with the operations that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which check: `linearizable`, `appends`, `replica-reads`, or `history` (a record that
    /// cannot be a real operation).
    pub check: &'static str,
    /// The key whose operations break the rule.
    pub key: String,
    /// What is wrong, in a sentence.
    pub message: String,
    /// The smallest window of the history that shows it (indexes into the history), sorted.
    /// Each check's module doc says how it is chosen.
    pub window: Vec<u64>,
}

/// A key a check could not decide: not a violation, but worth a look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecided {
    /// Which check: `linearizable`, `appends`, `replica-reads`.
    pub check: &'static str,
    /// The key left undecided.
    pub key: String,
    /// Why, in a sentence.
    pub reason: String,
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Register operations checked for linearizability (unknown reads and refused operations
    /// are not counted: they constrain nothing).
    pub registers_checked: u64,
    /// Append and append-read operations checked.
    pub appends_checked: u64,
    /// Replica reads checked.
    pub replica_reads_checked: u64,
    /// Every broken rule found.
    pub violations: Vec<Violation>,
    /// Keys a check could not decide (search budget spent, no final read).
    pub undecided: Vec<Undecided>,
}

impl Report {
    /// True when no rule is broken (undecided keys do not count against it).
    #[must_use]
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.valid() { "VALID" } else { "INVALID" };
        writeln!(
            formatter,
            "{verdict}: {} violations, {} undecided keys; checked {} register, {} append, {} \
             replica-read operations",
            self.violations.len(),
            self.undecided.len(),
            self.registers_checked,
            self.appends_checked,
            self.replica_reads_checked,
        )?;
        for violation in &self.violations {
            let window: Vec<String> = violation.window.iter().map(u64::to_string).collect();
            writeln!(
                formatter,
                "  {} {}: {} [ops {}]",
                violation.check,
                violation.key,
                violation.message,
                window.join(", "),
            )?;
        }
        for undecided in &self.undecided {
            writeln!(
                formatter,
                "  undecided {} {}: {}",
                undecided.check, undecided.key, undecided.reason
            )?;
        }
        Ok(())
    }
}

/// Limits on the checker's work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Search steps the linearizability check may spend on one key before it calls the key
    /// undecided (a step is one partial order visited).
    pub search_steps_per_key_max: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { search_steps_per_key_max: 1_000_000 }
    }
}

/// Checks every rule over `history` (in invocation order, as written) with default limits.
#[must_use]
pub fn check(history: &[Operation]) -> Report {
    check_with(history, &Options::default())
}

/// Checks every rule over `history` with the given limits.
#[must_use]
pub fn check_with(history: &[Operation], options: &Options) -> Report {
    let mut report = Report::default();
    registers::check(history, options, &mut report);
    appends::check(history, &mut report);
    replica_reads::check(history, &mut report);
    report
}

/// Reads the JSON-lines history at `path` and checks it.
///
/// # Errors
///
/// The file cannot be opened or read, or a line is not an operation.
pub fn check_file(path: impl AsRef<Path>) -> Result<Report, HistoryError> {
    let file = std::fs::File::open(path)?;
    let history = read_history(BufReader::new(file))?;
    Ok(check(&history))
}

/// A violation of the `history` check: `operation` cannot be a real operation.
pub(crate) fn malformed(operation: &Operation, message: &str) -> Violation {
    Violation {
        check: CHECK_HISTORY,
        key: operation.action.key().to_owned(),
        message: format!("op {} {message}", operation.index),
        window: vec![operation.index],
    }
}

/// Counts violations of one kind on one key and keeps the first, so that a thousand lost
/// elements make one line of the report, not a thousand.
pub(crate) struct Tally {
    first: Option<Violation>,
    count: u64,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Tally { first: None, count: 0 }
    }

    /// Counts one violation; `build` runs only for the first.
    pub(crate) fn add(&mut self, build: impl FnOnce() -> Violation) {
        if self.first.is_none() {
            self.first = Some(build());
        }
        self.count += 1;
    }

    /// Moves the first violation (saying how many like it there were) into `report`.
    pub(crate) fn finish(self, report: &mut Report) {
        if let Some(mut violation) = self.first {
            if self.count > 1 {
                violation.message.push_str(&format!(" ({} like it on this key)", self.count));
            }
            violation.window.sort_unstable();
            violation.window.dedup();
            report.violations.push(violation);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::history::{Action, Outcome, Phase, Target, Value};

    fn testdata(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/check/testdata").join(name)
    }

    #[test]
    fn a_history_file_is_checked() {
        let report = check_file(testdata("out-of-sync-promotion.jsonl")).expect("it reads");
        assert!(!report.valid(), "{report}");
        assert_eq!(report.registers_checked, 5, "{report}");
        assert_eq!(report.appends_checked, 4, "{report}");
    }

    #[test]
    fn a_missing_history_file_is_an_error() {
        let error = check_file(testdata("no-such-history.jsonl")).unwrap_err();
        assert!(matches!(error, HistoryError::Io(_)), "{error}");
    }

    #[test]
    fn the_report_prints_a_verdict_and_each_violation() {
        let mut report = Report { registers_checked: 7, ..Report::default() };
        assert!(report.to_string().starts_with("VALID: 0 violations"), "{report}");
        report.violations.push(Violation {
            check: registers::CHECK,
            key: "r1".to_owned(),
            message: "a stale read".to_owned(),
            window: vec![3, 5],
        });
        let text = report.to_string();
        assert!(text.starts_with("INVALID: 1 violations"), "{text}");
        assert!(text.contains("\n  linearizable r1: a stale read [ops 3, 5]\n"), "{text}");
    }

    fn any_action() -> impl Strategy<Value = Action> {
        let key = prop_oneof![Just("k1".to_owned()), Just("k2".to_owned())];
        (key, 0_u8..5, -3_i64..3, 0_u8..4).prop_map(|(key, kind, value, element)| match kind {
            0 => Action::Get { key },
            1 => Action::Set { key, value },
            2 => Action::Incr { key },
            3 => Action::Append { key, element: format!("x{element}") },
            _ => Action::ReadAppends { key },
        })
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Missing),
            prop_oneof![Just(i64::MIN), Just(i64::MAX), -3_i64..4].prop_map(Value::Integer),
            "(x[0-3] ){0,4}".prop_map(Value::Text),
        ]
    }

    fn any_operation() -> impl Strategy<Value = Operation> {
        let outcome = prop_oneof![
            any_value().prop_map(|answer| Outcome::Done { answer }),
            Just(Outcome::Refused { error: "READONLY".to_owned() }),
            Just(Outcome::Unknown { error: "timeout".to_owned() }),
        ];
        let times = (prop_oneof![Just(u64::MAX), 0_u64..50], proptest::option::of(0_u64..60));
        (any_action(), outcome, times, 0_u32..4, any::<bool>(), any::<bool>()).prop_map(
            |(action, outcome, (invoked_us, completed_us), client, leader, run)| Operation {
                index: 0,
                client,
                node: "n1".to_owned(),
                target: if leader { Target::Leader } else { Target::Replica },
                phase: if run { Phase::Run } else { Phase::Final },
                invoked_us,
                completed_us,
                action,
                outcome,
            },
        )
    }

    proptest! {
        #[test]
        fn any_history_is_checked_without_a_panic(
            mut history in proptest::collection::vec(any_operation(), 0..40),
        ) {
            for (position, operation) in history.iter_mut().enumerate() {
                operation.index = position as u64;
            }
            let report = check_with(&history, &Options { search_steps_per_key_max: 20_000 });
            let _ = report.to_string();
            for violation in &report.violations {
                prop_assert!(!violation.window.is_empty(), "{report}");
            }
        }
    }
}
