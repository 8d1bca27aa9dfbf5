//! The start gate: load threads connect, then wait until the coordinator starts (or aborts)
//! them all at once, so that connecting is not part of the measured time.
//!
//! Every wait is bounded: a thread that never arrives (it failed to spawn, or connecting hangs)
//! makes the coordinator give up after its timeout and abort the others.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::CONNECT_TIMEOUT;

/// The longest a thread waits at the gate for the coordinator's decision. The coordinator
/// decides within `CONNECT_TIMEOUT * 2` of spawning the threads; this adds a margin.
const DECISION_WAIT_MAX: Duration = Duration::from_secs(CONNECT_TIMEOUT.as_secs() * 4);

pub(super) struct StartGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

struct GateState {
    arrived: usize,
    decision: Decision,
}

/// What the coordinator decided for the threads.
#[derive(Clone, Copy, PartialEq)]
enum Decision {
    Pending,
    /// Run; the instant is the start of the measured run, shared by every thread.
    Start(Instant),
    Abort,
}

impl StartGate {
    pub(super) fn new() -> Self {
        StartGate {
            state: Mutex::new(GateState { arrived: 0, decision: Decision::Pending }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A load thread is ready (or failed and will not run). Returns the start of the measured
    /// run if the thread is to run, `None` if not.
    pub(super) fn arrive(&self) -> Option<Instant> {
        let mut state = self.lock();
        state.arrived += 1;
        self.changed.notify_all();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, DECISION_WAIT_MAX, |state| {
                state.decision == Decision::Pending
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match state.decision {
            Decision::Start(start) => Some(start),
            Decision::Pending | Decision::Abort => None,
        }
    }

    /// Waits until `expected` threads arrived; false if `timeout` passed first.
    pub(super) fn wait_ready(&self, expected: usize, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |state| state.arrived < expected)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.arrived >= expected
    }

    /// Decides for every thread, present and future. Returns the moment of the decision, which
    /// comes before any thread starts.
    pub(super) fn open(&self, start: bool) -> Instant {
        let mut state = self.lock();
        assert!(state.decision == Decision::Pending, "the gate opens once");
        let now = Instant::now();
        state.decision = if start { Decision::Start(now) } else { Decision::Abort };
        self.changed.notify_all();
        now
    }
}
