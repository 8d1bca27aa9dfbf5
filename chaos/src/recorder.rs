//! The shared history while a run goes on: every operation is entered when it is invoked (so
//! that indexes follow invocation order) and completed when its answer comes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::history::{Action, Operation, Outcome, Phase, Target};

/// What an operation with no answer yet (or never) records.
const NO_ANSWER: &str = "no answer";

/// Who sent an operation, and where.
#[derive(Clone, Debug)]
pub struct Sender {
    pub client: u32,
    pub node: String,
    pub target: Target,
    pub phase: Phase,
}

/// Operations by outcome so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub done: u64,
    pub refused: u64,
    pub unknown: u64,
}

/// The history of one run, shared by every client thread.
pub struct Recorder {
    start: Instant,
    operations: Mutex<Vec<Operation>>,
    done: AtomicU64,
    refused: AtomicU64,
    unknown: AtomicU64,
}

impl Recorder {
    /// A recorder whose times count from `start`.
    #[must_use]
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            operations: Mutex::new(Vec::new()),
            done: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
        }
    }

    /// Microseconds since the run started.
    #[must_use]
    pub fn elapsed_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn operations(&self) -> MutexGuard<'_, Vec<Operation>> {
        self.operations.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters an operation as invoked now; its index.
    pub fn invoke(&self, sender: &Sender, action: Action) -> u64 {
        let mut operations = self.operations();
        let index = operations.len() as u64;
        operations.push(Operation {
            index,
            client: sender.client,
            node: sender.node.clone(),
            target: sender.target,
            phase: sender.phase,
            invoked_us: self.elapsed_us(),
            completed_us: None,
            action,
            outcome: Outcome::Unknown { error: NO_ANSWER.into() },
        });
        index
    }

    /// Completes operation `index` with `outcome`, answered now (a timeout or lost connection
    /// leaves `completed_us` empty).
    pub fn complete(&self, index: u64, outcome: Outcome, answered: bool) {
        let counter = match outcome {
            Outcome::Done { .. } => &self.done,
            Outcome::Refused { .. } => &self.refused,
            Outcome::Unknown { .. } => &self.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let completed_us = answered.then(|| self.elapsed_us());
        let mut operations = self.operations();
        let Some(operation) = usize::try_from(index).ok().and_then(|i| operations.get_mut(i))
        else {
            return;
        };
        operation.completed_us = completed_us;
        operation.outcome = outcome;
    }

    /// Operations completed so far, by outcome.
    #[must_use]
    pub fn counts(&self) -> OutcomeCounts {
        OutcomeCounts {
            done: self.done.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
        }
    }

    /// Operations invoked so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.operations().len()
    }

    /// Whether nothing was invoked yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `read` with the history so far, in invocation order, without copying it.
    pub fn read<T>(&self, read: impl FnOnce(&[Operation]) -> T) -> T {
        read(&self.operations())
    }

    /// Takes the whole history out (for the end of a run: it leaves the recorder empty).
    #[must_use]
    pub fn take(&self) -> Vec<Operation> {
        std::mem::take(&mut *self.operations())
    }

    /// A copy of the whole history, in invocation order.
    #[must_use]
    pub fn snapshot(&self) -> Vec<Operation> {
        self.operations().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_is_unknown_until_completed() {
        let recorder = Recorder::new(Instant::now());
        let sender =
            Sender { client: 1, node: "n1".into(), target: Target::Leader, phase: Phase::Run };
        let first = recorder.invoke(&sender, Action::Incr { key: "c1".into() });
        let second = recorder.invoke(&sender, Action::Get { key: "c1".into() });
        assert_eq!((first, second), (0, 1));
        recorder.complete(second, Outcome::Refused { error: "READONLY".into() }, true);
        let history = recorder.snapshot();
        assert!(matches!(history[0].outcome, Outcome::Unknown { .. }));
        assert_eq!(history[0].completed_us, None);
        assert!(history[1].completed_us.is_some());
        assert_eq!(recorder.counts().refused, 1);
    }
}
