//! What the controller promises under automatic failover (`core/src/controller.rs`,
//! `core/src/controller/succession.rs`, `control/src/failover.rs`):
//!
//! - **C1** the epochs the controller appoints leaders at only grow (`apply(Appoint)` is a
//!   compare-and-set on `leader_epoch`, and a new leader gets a higher one);
//! - **C2** a member that leads at the controller's order does so at an epoch at least the one
//!   the controller appointed it at (`Guard::Appointed { at_least }`), and only at an epoch the
//!   controller gave it;
//! - **C3** when the controller appoints a leader, no other leader still serves under a lease
//!   (the lease is shorter than the failover timeout, counted from before the confirmation).
//!   Checked only with `Config::check_leases`: the runtime breaks it in two ways the
//!   simulator models as it does. An appointee takes a first lease when its promotion ends,
//!   which no confirmation of the controller's leader covers (appointed long before, after a
//!   restart say, it is replaced as soon as it is cut off: `scripts/sim.sh --automatic
//!   --check-leases --seed 829`); and the controller's leader confirms leases from its
//!   committed state while an `Appoint` it decided on still waits for a majority.

use strata_core::Epoch;

use super::Checker;

impl Checker {
    /// The controller's log named `node` data leader at `epoch` (C1).
    pub fn controller_appointed(&mut self, node: usize, epoch: Epoch) {
        if let Some((&last, &earlier)) = self.appointed.last_key_value() {
            if epoch <= last {
                self.fail(format!(
                    "C1: the controller appointed n{node} at epoch {epoch}, not above epoch \
                     {last} it appointed n{earlier} at"
                ));
            }
        }
        self.appointed.insert(epoch, node);
    }

    /// `node`, appointed at `appointed`, leads at `epoch` (C2).
    pub fn led_appointed(&mut self, node: usize, epoch: Epoch, appointed: Epoch) {
        match self.appointed.get(&appointed) {
            Some(&named) if named == node => {}
            named => self.fail(format!(
                "C2: n{node} leads at the controller's order of epoch {appointed}, which named \
                 {named:?}"
            )),
        }
        if epoch < appointed {
            self.fail(format!(
                "C2: n{node} leads at epoch {epoch}, below epoch {appointed} the controller \
                 appointed it at"
            ));
        }
    }

    /// When the controller appointed `appointee` at `epoch` (at `now_us`), `node` still led
    /// with a lease running until `until_us` (C3).
    pub fn lease_outlived(
        &mut self,
        node: usize,
        until_us: u64,
        now_us: u64,
        appointee: usize,
        epoch: Epoch,
    ) {
        let remaining_ms = until_us.saturating_sub(now_us) / 1000;
        self.fail(format!(
            "C3: the controller appointed n{appointee} at epoch {epoch} while n{node} led under \
             a lease for {remaining_ms} ms more"
        ));
    }
}
