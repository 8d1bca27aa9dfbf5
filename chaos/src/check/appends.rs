//! Rule 2: no acknowledged append is lost, and reads of an append key show a log that only
//! grows (the zero-loss property: a committed entry is never lost or reordered).
//!
//! For each append key:
//! - **loss**: every `Append` answered `Done` has its element in the key's final read (the last
//!   `Done` `ReadAppends` of phase `Final`, in history order). A key without a final read is
//!   reported undecided, not as a violation. Window: the first lost append and the final read.
//! - **duplication**: no read holds an element twice. Window: the read and the append.
//! - **invention**: every element of every read was appended by a `Done` or `Unknown` append of
//!   that key (a `Refused` one did not happen). Window: the read (and the refused append, if
//!   that is where the element came from).
//! - **order**: the leader's reads (both phases) are all prefixes of one log: of any two, one
//!   is a prefix of the other; and a read that began after another completed is at least as
//!   long. Window: the two reads.
//!
//! Each kind of violation is reported once per key (the first found), saying how many there
//! were, so that a thousand lost elements make one line.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{malformed, Report, Tally, Undecided, Violation};
use crate::history::{Action, Operation, Outcome, Phase, Target, Value};

/// The name of this check in violations.
pub const CHECK: &str = "appends";

/// Checks every append key of `history` and adds what it found to `report`.
pub fn check(history: &[Operation], report: &mut Report) {
    let mut keys: BTreeMap<&str, KeyHistory> = BTreeMap::new();
    for operation in history {
        match &operation.action {
            Action::Append { key, element } => {
                report.appends_checked += 1;
                keys.entry(key).or_default().add_append(operation, element, report);
            }
            Action::ReadAppends { key } => {
                report.appends_checked += 1;
                keys.entry(key).or_default().add_read(operation, report);
            }
            Action::Get { .. } | Action::Set { .. } | Action::Incr { .. } => {}
        }
    }
    for (key, key_history) in keys {
        key_history.check(key, report);
    }
}

/// A `Done` read of an append key.
struct Read<'a> {
    index: u64,
    invoked_us: u64,
    completed_us: u64,
    on_leader: bool,
    final_phase: bool,
    elements: Vec<&'a str>,
}

#[derive(Default)]
struct KeyHistory<'a> {
    /// The append of each element that may have happened (`Done` or `Unknown`).
    appended: HashMap<&'a str, u64>,
    /// The acknowledged appends, in history order.
    acknowledged: Vec<(&'a str, u64)>,
    /// Elements only refused appends carried.
    refused: HashMap<&'a str, u64>,
    reads: Vec<Read<'a>>,
}

impl<'a> KeyHistory<'a> {
    fn add_append(&mut self, operation: &'a Operation, element: &'a str, report: &mut Report) {
        if let Outcome::Refused { .. } = operation.outcome {
            self.refused.insert(element, operation.index);
            return;
        }
        if self.appended.insert(element, operation.index).is_some() {
            report.violations.push(malformed(operation, "appends an element already appended"));
        }
        if let Outcome::Done { .. } = operation.outcome {
            self.acknowledged.push((element, operation.index));
        }
    }

    fn add_read(&mut self, operation: &'a Operation, report: &mut Report) {
        let Outcome::Done { answer } = &operation.outcome else {
            return;
        };
        let text = match answer {
            Value::Text(text) => text.as_str(),
            Value::Missing => "",
            Value::Integer(_) => {
                report
                    .violations
                    .push(malformed(operation, "is an append read that answered an integer"));
                return;
            }
        };
        let Some(completed_us) =
            operation.completed_us.filter(|&completed| completed >= operation.invoked_us)
        else {
            let message = "is done but has no completion time at or after its invocation";
            report.violations.push(malformed(operation, message));
            return;
        };
        self.reads.push(Read {
            index: operation.index,
            invoked_us: operation.invoked_us,
            completed_us,
            on_leader: operation.target == Target::Leader,
            final_phase: operation.phase == Phase::Final,
            elements: text.split_whitespace().collect(),
        });
    }

    fn check(&self, key: &str, report: &mut Report) {
        let mut duplicated = Tally::new();
        let mut invented = Tally::new();
        for read in &self.reads {
            self.check_elements(key, read, &mut duplicated, &mut invented);
        }
        duplicated.finish(report);
        invented.finish(report);
        self.check_loss(key, report);
        self.check_order(key, report);
    }

    fn check_elements(&self, key: &str, read: &Read, duplicated: &mut Tally, invented: &mut Tally) {
        let mut seen = HashSet::with_capacity(read.elements.len());
        for &element in &read.elements {
            let appended = self.appended.get(element).copied();
            if !seen.insert(element) {
                duplicated.add(|| Violation {
                    check: CHECK,
                    key: key.to_owned(),
                    message: format!("read op {} holds element {element} twice", read.index),
                    window: appended.into_iter().chain([read.index]).collect(),
                });
            }
            if appended.is_none() {
                let refused = self.refused.get(element).copied();
                let source = match refused {
                    Some(index) => format!("only op {index}, which was refused, appended it"),
                    None => "no operation appended it".to_owned(),
                };
                invented.add(|| Violation {
                    check: CHECK,
                    key: key.to_owned(),
                    message: format!(
                        "read op {} holds element {element}, but {source}",
                        read.index
                    ),
                    window: refused.into_iter().chain([read.index]).collect(),
                });
            }
        }
    }

    fn check_loss(&self, key: &str, report: &mut Report) {
        let Some(last) = self.reads.iter().rev().find(|read| read.final_phase) else {
            if !self.acknowledged.is_empty() {
                report.undecided.push(Undecided {
                    check: CHECK,
                    key: key.to_owned(),
                    reason: "no final read, so loss could not be checked".to_owned(),
                });
            }
            return;
        };
        let survived: HashSet<&str> = last.elements.iter().copied().collect();
        let mut lost = Tally::new();
        for &(element, index) in &self.acknowledged {
            if survived.contains(element) {
                continue;
            }
            lost.add(|| Violation {
                check: CHECK,
                key: key.to_owned(),
                message: format!(
                    "acknowledged append op {index} of element {element} is missing from the \
                     final read op {}",
                    last.index
                ),
                window: vec![index, last.index],
            });
        }
        lost.finish(report);
    }

    fn check_order(&self, key: &str, report: &mut Report) {
        let mut leader: Vec<&Read> = self.reads.iter().filter(|read| read.on_leader).collect();
        // Comparable in pairs exactly when each is a prefix of the next longer one.
        leader.sort_by_key(|read| (read.elements.len(), read.index));
        let mut diverged = Tally::new();
        for pair in leader.windows(2) {
            let (shorter, longer) = (pair[0], pair[1]);
            if longer.elements.starts_with(&shorter.elements) {
                continue;
            }
            diverged.add(|| Violation {
                check: CHECK,
                key: key.to_owned(),
                message: format!(
                    "leader reads op {} and op {} disagree: neither is a prefix of the other",
                    shorter.index, longer.index
                ),
                window: vec![shorter.index, longer.index],
            });
        }
        diverged.finish(report);
        check_shrinking(key, &leader, report);
    }
}

/// A read that began after another completed must hold at least as many elements.
fn check_shrinking(key: &str, leader: &[&Read], report: &mut Report) {
    let mut by_completion: Vec<&Read> = leader.to_vec();
    by_completion.sort_by_key(|read| (read.completed_us, read.index));
    // longest[i]: the longest read among the first i + 1 to complete.
    let mut longest: Vec<&Read> = Vec::with_capacity(by_completion.len());
    for &read in &by_completion {
        match longest.last() {
            Some(&best) if best.elements.len() >= read.elements.len() => longest.push(best),
            _ => longest.push(read),
        }
    }
    let mut shrank = Tally::new();
    for &read in leader {
        let before = by_completion.partition_point(|other| other.completed_us < read.invoked_us);
        let Some(&earlier) = before.checked_sub(1).and_then(|last| longest.get(last)) else {
            continue;
        };
        if earlier.elements.len() <= read.elements.len() {
            continue;
        }
        shrank.add(|| Violation {
            check: CHECK,
            key: key.to_owned(),
            message: format!(
                "leader read op {} holds {} elements, fewer than the {} of op {}, which completed \
                 before it began",
                read.index,
                read.elements.len(),
                earlier.elements.len(),
                earlier.index
            ),
            window: vec![earlier.index, read.index],
        });
    }
    shrank.finish(report);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;
    use crate::check::testing::Builder;

    fn append_violations(history: &Builder) -> Vec<Violation> {
        let report = check(&history.operations);
        assert!(report.undecided.is_empty(), "{report}");
        report.violations
    }

    fn final_read(history: &mut Builder, text: &str, times: (u64, u64)) -> u64 {
        let index = history.read_appends(9, "a", text, times);
        history.on(Target::Leader, Phase::Final);
        index
    }

    fn unknown_append(history: &mut Builder, element: &str, invoked_us: u64) -> u64 {
        let action = Action::Append { key: "a".to_owned(), element: element.to_owned() };
        history.unknown(2, action, invoked_us)
    }

    #[test]
    fn a_log_that_keeps_every_acknowledged_append_passes() {
        let mut history = Builder::default();
        history.append(1, "a", "x1", (0, 10));
        history.read_appends(3, "a", "x1 ", (15, 20));
        history.append(1, "a", "x2", (20, 30));
        unknown_append(&mut history, "x3", 40);
        unknown_append(&mut history, "x4", 41);
        history.read_appends(3, "a", "x1 x2 x3 ", (50, 60));
        final_read(&mut history, "x1 x2 x3 ", (100, 110));
        let report = check(&history.operations);
        assert!(report.valid(), "{report}");
        assert_eq!(report.appends_checked, 7);
    }

    #[test]
    fn a_lost_acknowledged_append_fails() {
        let mut history = Builder::default();
        history.append(1, "a", "x1", (0, 10));
        let lost = history.append(1, "a", "x2", (20, 30));
        let last = final_read(&mut history, "x1 ", (100, 110));
        let violations = append_violations(&history);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].window, vec![lost, last]);
        assert!(violations[0].message.contains("x2"), "{}", violations[0].message);
    }

    #[test]
    fn a_thousand_lost_appends_make_one_violation() {
        let mut history = Builder::default();
        for number in 0..1_000 {
            history.append(1, "a", &format!("x{number}"), (number * 10, number * 10 + 5));
        }
        final_read(&mut history, "", (20_000, 20_010));
        let violations = append_violations(&history);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].message.contains("1000 like it"), "{}", violations[0].message);
    }

    #[test]
    fn a_duplicated_element_fails() {
        let mut history = Builder::default();
        let append = history.append(1, "a", "x1", (0, 10));
        let read = history.read_appends(3, "a", "x1 x1 ", (20, 30));
        final_read(&mut history, "x1 ", (100, 110));
        let violations = append_violations(&history);
        assert!(violations.iter().any(|v| v.window == vec![append, read]), "{violations:?}");
    }

    #[test]
    fn an_invented_or_refused_element_fails() {
        let mut history = Builder::default();
        let action = Action::Append { key: "a".to_owned(), element: "x9".to_owned() };
        let refused = history.refused(1, action, (0, 10));
        let read = history.read_appends(3, "a", "x9 ", (20, 30));
        // x9 in both reads, x7 in the final one: three inventions, one line.
        final_read(&mut history, "x9 x7 ", (100, 110));
        let violations = append_violations(&history);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].window, vec![refused, read]);
        assert!(violations[0].message.contains("3 like it"), "{}", violations[0].message);
    }

    #[test]
    fn leader_reads_that_fork_fail() {
        let mut history = Builder::default();
        history.append(1, "a", "x1", (0, 10));
        history.append(2, "a", "x2", (0, 10));
        let first = history.read_appends(3, "a", "x1 x2 ", (20, 30));
        let second = history.read_appends(3, "a", "x2 x1 ", (40, 50));
        final_read(&mut history, "x1 x2 ", (100, 110));
        let violations = append_violations(&history);
        assert!(violations.iter().any(|v| v.window == vec![first, second]), "{violations:?}");
    }

    #[test]
    fn a_leader_read_that_shrinks_after_another_completed_fails() {
        let mut history = Builder::default();
        history.append(1, "a", "x1", (0, 10));
        unknown_append(&mut history, "x2", 11);
        let longer = history.read_appends(3, "a", "x1 x2 ", (20, 30));
        let shorter = history.read_appends(3, "a", "x1 ", (40, 50));
        final_read(&mut history, "x1 x2 ", (100, 110));
        let violations = append_violations(&history);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].window, vec![longer, shorter]);
    }

    #[test]
    fn concurrent_leader_reads_may_complete_in_either_order() {
        let mut history = Builder::default();
        history.append(1, "a", "x1", (0, 10));
        history.append(1, "a", "x2", (12, 40));
        history.read_appends(3, "a", "x1 x2 ", (20, 30));
        history.read_appends(4, "a", "x1 ", (15, 35));
        final_read(&mut history, "x1 x2 ", (100, 110));
        let report = check(&history.operations);
        assert!(report.valid(), "{report}");
    }

    #[test]
    fn a_replica_read_may_lag() {
        let mut history = Builder::default();
        history.append(1, "a", "x1", (0, 10));
        history.append(1, "a", "x2", (12, 20));
        history.read_appends(3, "a", "x1 ", (30, 40));
        history.on(Target::Replica, Phase::Run);
        final_read(&mut history, "x1 x2 ", (100, 110));
        assert!(check(&history.operations).valid());
    }

    #[test]
    fn a_key_without_a_final_read_is_undecided() {
        let mut history = Builder::default();
        history.append(1, "a", "x1", (0, 10));
        let report = check(&history.operations);
        assert!(report.valid(), "{report}");
        assert_eq!(report.undecided.len(), 1, "{report}");
        assert_eq!(report.undecided[0].check, CHECK);
    }

    #[test]
    fn malformed_append_records_are_reported() {
        let mut history = Builder::default();
        history.append(1, "a", "x1", (0, 10));
        history.append(1, "a", "x1", (20, 30));
        let action = Action::ReadAppends { key: "a".to_owned() };
        let outcome = Outcome::Done { answer: Value::Integer(3) };
        history.push(3, action.clone(), (40, Some(50)), outcome.clone());
        history.push(3, action, (60, None), outcome);
        final_read(&mut history, "x1 ", (100, 110));
        let report = check(&history.operations);
        let malformed = report.violations.iter().filter(|v| v.check == "history").count();
        assert_eq!(malformed, 3, "{report}");
    }
}
