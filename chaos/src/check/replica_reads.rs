//! Rule 3: a replica serves only committed values and never goes back in time on one
//! connection.
//!
//! The keys checked are those read with `Get` on a replica: counters that are otherwise only
//! `INCR`ed on the leader. A missing key counts as 0. For each `Done` replica read:
//! - **monotonic**: on one client connection, values never decrease. Window: the two reads.
//! - **from the future**: the value is at most the number of `INCR`s of the key (any outcome but
//!   `Refused`) invoked before the read completed. Window: the read and the last such `INCR`.
//!   Skipped for a key that is also `SET` (it is then no counter).
//! - **committed**: the value is at most the key's final value (the last `Done` leader `Get` of
//!   phase `Final`): a replica that served a value the cluster later lost served an uncommitted
//!   one. Window: the read and the final read. A key without a final read is undecided.
//!
//! Each kind of violation is reported once per key (the first found), saying how many there
//! were.

use std::collections::{BTreeMap, HashMap};

use super::{malformed, Report, Tally, Undecided, Violation};
use crate::history::{Action, Operation, Outcome, Phase, Target, Value};

/// The name of this check in violations.
pub const CHECK: &str = "replica-reads";

/// Checks every counter key read on a replica and adds what it found to `report`.
pub fn check(history: &[Operation], report: &mut Report) {
    let mut keys: BTreeMap<&str, KeyHistory> = BTreeMap::new();
    for operation in history {
        if let Action::Get { key } = &operation.action {
            if operation.target == Target::Replica {
                keys.entry(key).or_default().replica_reads.push(operation);
            }
        }
    }
    for operation in history {
        let Some(key_history) = keys.get_mut(operation.action.key()) else {
            continue;
        };
        key_history.add_other(operation);
    }
    for (key, key_history) in keys {
        key_history.check(key, report);
    }
}

#[derive(Default)]
struct KeyHistory<'a> {
    replica_reads: Vec<&'a Operation>,
    /// (invoked, index) of every `INCR` that may have happened, sorted.
    incrs: Vec<(u64, u64)>,
    is_set: bool,
    /// The last final leader read: (value, index).
    final_read: Option<(i64, u64)>,
}

impl<'a> KeyHistory<'a> {
    fn add_other(&mut self, operation: &'a Operation) {
        if let Outcome::Refused { .. } = operation.outcome {
            return;
        }
        match &operation.action {
            Action::Incr { .. } => self.incrs.push((operation.invoked_us, operation.index)),
            Action::Set { .. } => self.is_set = true,
            Action::Get { .. }
                if operation.target == Target::Leader && operation.phase == Phase::Final =>
            {
                if let Outcome::Done { answer } = &operation.outcome {
                    if let Some(value) = counter(answer) {
                        self.final_read = Some((value, operation.index));
                    }
                }
            }
            _ => {}
        }
    }

    fn check(mut self, key: &str, report: &mut Report) {
        self.incrs.sort_unstable();
        if self.final_read.is_none() {
            report.undecided.push(Undecided {
                check: CHECK,
                key: key.to_owned(),
                reason: "no final leader read, so committed values could not be checked".to_owned(),
            });
        }
        let mut tallies = Tallies {
            went_back: Tally::new(),
            from_future: Tally::new(),
            uncommitted: Tally::new(),
        };
        // The last value read on each client connection: (value, index).
        let mut last_by_client: HashMap<u32, (i64, u64)> = HashMap::new();
        for &read in &self.replica_reads {
            let Some((value, completed_us)) = done_value(read, report) else {
                continue;
            };
            report.replica_reads_checked += 1;
            let previous = last_by_client.insert(read.client, (value, read.index));
            let seen = Seen { read, value, completed_us, previous };
            self.check_read(key, &seen, &mut tallies);
        }
        tallies.went_back.finish(report);
        tallies.from_future.finish(report);
        tallies.uncommitted.finish(report);
    }

    fn check_read(&self, key: &str, seen: &Seen, tallies: &mut Tallies) {
        let Seen { read, value, completed_us, previous } = *seen;
        let violation = |message: String, window: Vec<u64>| Violation {
            check: CHECK,
            key: key.to_owned(),
            message,
            window,
        };
        if let Some((previous, index)) = previous.filter(|&(previous, _)| value < previous) {
            tallies.went_back.add(|| {
                let message = format!(
                    "replica read op {} on client {} answered {value}, less than the {previous} \
                     of op {index} before it",
                    read.index, read.client
                );
                violation(message, vec![index, read.index])
            });
        }
        let invoked = self.incrs.partition_point(|&(invoked, _)| invoked <= completed_us);
        if !self.is_set && value > invoked as i64 {
            tallies.from_future.add(|| {
                let message = format!(
                    "replica read op {} answered {value}, but only {invoked} INCRs had been \
                     invoked when it completed",
                    read.index
                );
                let last_incr = invoked.checked_sub(1).map(|last| self.incrs[last].1);
                violation(message, last_incr.into_iter().chain([read.index]).collect())
            });
        }
        let Some((final_value, final_index)) = self.final_read else {
            return;
        };
        if value > final_value {
            tallies.uncommitted.add(|| {
                let message = format!(
                    "replica read op {} answered {value}, above the final value {final_value} \
                     (op {final_index}): it served an uncommitted value",
                    read.index
                );
                violation(message, vec![read.index, final_index])
            });
        }
    }
}

/// One kind of violation each.
struct Tallies {
    went_back: Tally,
    from_future: Tally,
    uncommitted: Tally,
}

/// A replica read and what it answered.
#[derive(Clone, Copy)]
struct Seen<'a> {
    read: &'a Operation,
    value: i64,
    completed_us: u64,
    /// The previous read on the same connection: (value, index).
    previous: Option<(i64, u64)>,
}

/// The counter value an answer means (missing is 0); `None` for text.
fn counter(answer: &Value) -> Option<i64> {
    match answer {
        Value::Missing => Some(0),
        Value::Integer(value) => Some(*value),
        Value::Text(_) => None,
    }
}

/// The value and completion time of a `Done` read; a record that cannot be one is reported.
fn done_value(read: &Operation, report: &mut Report) -> Option<(i64, u64)> {
    let Outcome::Done { answer } = &read.outcome else {
        return None;
    };
    let Some(completed_us) = read.completed_us.filter(|&completed| completed >= read.invoked_us)
    else {
        let message = "is done but has no completion time at or after its invocation";
        report.violations.push(malformed(read, message));
        return None;
    };
    let Some(value) = counter(answer) else {
        report.violations.push(malformed(read, "is a replica read that answered text"));
        return None;
    };
    Some((value, completed_us))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;
    use crate::check::testing::Builder;

    fn replica_get(
        history: &mut Builder,
        client: u32,
        value: Option<i64>,
        times: (u64, u64),
    ) -> u64 {
        let index = history.get(client, "c", value, times);
        history.on(Target::Replica, Phase::Run);
        index
    }

    fn final_get(history: &mut Builder, value: i64, times: (u64, u64)) -> u64 {
        let index = history.get(9, "c", Some(value), times);
        history.on(Target::Leader, Phase::Final);
        index
    }

    fn counter_history() -> Builder {
        let mut history = Builder::default();
        history.incr(1, "c", 1, (0, 10));
        history.incr(1, "c", 2, (20, 30));
        history.incr(1, "c", 3, (40, 50));
        history
    }

    fn replica_violations(history: &Builder) -> Vec<Violation> {
        let report = check(&history.operations);
        assert!(report.undecided.is_empty(), "{report}");
        report.violations.into_iter().filter(|v| v.check == CHECK).collect()
    }

    #[test]
    fn lagging_but_monotonic_reads_pass() {
        let mut history = counter_history();
        replica_get(&mut history, 2, None, (5, 6));
        replica_get(&mut history, 2, Some(1), (35, 36));
        replica_get(&mut history, 3, Some(3), (55, 56));
        replica_get(&mut history, 2, Some(1), (57, 58));
        final_get(&mut history, 3, (100, 110));
        let report = check(&history.operations);
        assert!(report.valid(), "{report}");
        assert_eq!(report.replica_reads_checked, 4);
    }

    #[test]
    fn a_replica_read_going_back_on_one_connection_fails() {
        let mut history = counter_history();
        let later = replica_get(&mut history, 2, Some(2), (35, 36));
        let earlier = replica_get(&mut history, 2, None, (55, 56));
        final_get(&mut history, 3, (100, 110));
        let violations = replica_violations(&history);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].window, vec![later, earlier]);
    }

    #[test]
    fn a_replica_read_above_the_final_value_fails() {
        let mut history = counter_history();
        let read = replica_get(&mut history, 2, Some(3), (55, 56));
        let last = final_get(&mut history, 2, (100, 110));
        let violations = replica_violations(&history);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].window, vec![read, last]);
        assert!(violations[0].message.contains("uncommitted"), "{}", violations[0].message);
    }

    #[test]
    fn a_replica_read_from_the_future_fails() {
        let mut history = counter_history();
        let incr = 1;
        let read = replica_get(&mut history, 2, Some(3), (31, 35));
        final_get(&mut history, 3, (100, 110));
        let violations = replica_violations(&history);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].window, vec![incr, read]);
    }

    #[test]
    fn an_unknown_incr_may_explain_a_replica_read() {
        let mut history = counter_history();
        history.unknown(4, Action::Incr { key: "c".to_owned() }, 60);
        replica_get(&mut history, 2, Some(4), (70, 80));
        final_get(&mut history, 4, (100, 110));
        assert!(check(&history.operations).valid());
    }

    #[test]
    fn a_counter_without_a_final_read_is_undecided() {
        let mut history = counter_history();
        replica_get(&mut history, 2, Some(1), (35, 36));
        let report = check(&history.operations);
        assert!(report.valid(), "{report}");
        assert_eq!(report.undecided.len(), 1, "{report}");
    }

    #[test]
    fn a_replica_read_of_text_is_malformed() {
        let mut history = counter_history();
        let action = Action::Get { key: "c".to_owned() };
        let outcome = Outcome::Done { answer: Value::Text("x".to_owned()) };
        history.push(2, action, (60, Some(70)), outcome);
        history.on(Target::Replica, Phase::Run);
        final_get(&mut history, 3, (100, 110));
        let report = check(&history.operations);
        assert_eq!(report.violations.len(), 1, "{report}");
        assert_eq!(report.violations[0].check, "history");
    }
}
