//! A log's epoch history: where each epoch starts, so that two logs can find the last LSN on
//! which they agree (Kafka's leader-epoch snapshot, KIP-101 and KIP-279).
//!
//! An entry `(epoch, first)` says: from LSN `first` on, the log holds frames of `epoch`, up to
//! the next entry's first LSN (or the log's end). A log known only from a snapshot or a
//! snapshot at LSN `s` starts with `(epoch of s, s)`: what lies before `s` is not known, and
//! no answer depends on it.
//!
//! Why agreement follows: an epoch has one leader, which only appends to its log while it
//! leads, and every replica's log is a copy of a prefix of its leader's. So two logs that both
//! hold LSN `x` in epoch `e` hold the same frames up to `x` (the log matching property).

use crate::ids::{Epoch, Lsn};

/// Entries kept at most; older ones are dropped, which only makes answers about very old
/// epochs unknown (the replica then gets a snapshot).
pub const EPOCH_HISTORY_ENTRIES_MAX: usize = 64;

/// Epoch → first LSN, ascending in both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(Epoch, Lsn)>,
}

impl EpochHistory {
    /// A history from entries ascending in epoch and first LSN (as recovery or a peer reports
    /// them). Returns `None` when they are not ascending or too many.
    #[must_use]
    pub fn from_entries(entries: Vec<(Epoch, Lsn)>) -> Option<EpochHistory> {
        let ascending =
            entries.windows(2).all(|pair| pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1);
        let first_valid = entries.first().is_none_or(|(_, lsn)| lsn.0 > 0);
        if !ascending || !first_valid || entries.len() > EPOCH_HISTORY_ENTRIES_MAX {
            return None;
        }
        Some(EpochHistory { entries })
    }

    #[must_use]
    pub fn entries(&self) -> &[(Epoch, Lsn)] {
        &self.entries
    }

    /// The epoch of the log's last frame, or 0 for an empty history.
    #[must_use]
    pub fn last_epoch(&self) -> Epoch {
        self.entries.last().map_or(Epoch(0), |(epoch, _)| *epoch)
    }

    /// Records that a frame of `epoch` starting at `first` was added to the log.
    ///
    /// # Panics
    ///
    /// If `epoch` is older than the log's last epoch, or `first` does not come after the last
    /// entry's first LSN: the caller checks both before it appends.
    pub fn append(&mut self, epoch: Epoch, first: Lsn) {
        assert!(first.0 > 0, "LSN 0 holds no frame");
        if let Some(&(last_epoch, last_first)) = self.entries.last() {
            assert!(epoch >= last_epoch, "a log's epochs never go back");
            if epoch == last_epoch {
                return;
            }
            assert!(first > last_first, "a new epoch starts after the previous one");
        }
        if self.entries.len() == EPOCH_HISTORY_ENTRIES_MAX {
            self.entries.remove(0);
        }
        self.entries.push((epoch, first));
    }

    /// Forgets what lies after `lsn`: the log was cut back to it.
    pub fn truncate_after(&mut self, lsn: Lsn) {
        self.entries.retain(|(_, first)| *first <= lsn);
    }

    /// The log now starts with a snapshot at `lsn` whose last frame was of `epoch`.
    pub fn reset_to_snapshot(&mut self, epoch: Epoch, lsn: Lsn) {
        self.entries.clear();
        if lsn.0 > 0 {
            self.entries.push((epoch, lsn));
        }
    }

    /// The last LSN of `epoch` in a log that ends at `log_end`, when the history holds it.
    #[must_use]
    pub fn end_of(&self, epoch: Epoch, log_end: Lsn) -> Option<Lsn> {
        let index = self.entries.iter().position(|(entry, _)| *entry == epoch)?;
        Some(match self.entries.get(index + 1) {
            Some((_, next_first)) => Lsn(next_first.0 - 1),
            None => log_end,
        })
    }

    /// The last LSN at which a log with this history ending at `own_end` and another with
    /// `other` ending at `other_end` surely hold the same frames: the end, in the log that
    /// ends it sooner, of the newest epoch both hold. `Some(0)` when either log is empty;
    /// `None` when they share no epoch the histories know of.
    #[must_use]
    pub fn agreement(&self, own_end: Lsn, other: &EpochHistory, other_end: Lsn) -> Option<Lsn> {
        if own_end == Lsn::ZERO || other_end == Lsn::ZERO {
            return Some(Lsn::ZERO);
        }
        let shared = self
            .entries
            .iter()
            .rev()
            .map(|(epoch, _)| *epoch)
            .find(|epoch| other.entries.iter().any(|(theirs, _)| theirs == epoch))?;
        let own = self.end_of(shared, own_end)?;
        let theirs = other.end_of(shared, other_end)?;
        Some(own.min(theirs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(u64, u64)]) -> EpochHistory {
        let entries = entries.iter().map(|(epoch, lsn)| (Epoch(*epoch), Lsn(*lsn))).collect();
        EpochHistory::from_entries(entries).expect("valid history")
    }

    #[test]
    fn append_adds_an_entry_per_new_epoch_only() {
        let mut log = EpochHistory::default();
        log.append(Epoch(1), Lsn(1));
        log.append(Epoch(1), Lsn(5));
        log.append(Epoch(3), Lsn(9));
        assert_eq!(log, history(&[(1, 1), (3, 9)]));
        assert_eq!(log.last_epoch(), Epoch(3));
        assert_eq!(log.end_of(Epoch(1), Lsn(20)), Some(Lsn(8)));
        assert_eq!(log.end_of(Epoch(3), Lsn(20)), Some(Lsn(20)));
        assert_eq!(log.end_of(Epoch(2), Lsn(20)), None);
    }

    #[test]
    #[should_panic(expected = "never go back")]
    fn an_older_epoch_is_a_bug_of_the_caller() {
        let mut log = history(&[(2, 1)]);
        log.append(Epoch(1), Lsn(4));
    }

    #[test]
    fn agreement_is_the_end_of_the_newest_shared_epoch_in_the_shorter_log() {
        // The old leader of epoch 2 cut 11..=15, which the new leader (epoch 3) never had.
        let replica = history(&[(1, 1), (2, 6)]);
        let leader = history(&[(1, 1), (2, 6), (3, 11)]);
        assert_eq!(leader.agreement(Lsn(20), &replica, Lsn(15)), Some(Lsn(10)));
        assert_eq!(replica.agreement(Lsn(15), &leader, Lsn(20)), Some(Lsn(10)));
        // A replica behind in the same epoch agrees up to its end.
        assert_eq!(leader.agreement(Lsn(20), &history(&[(1, 1)]), Lsn(3)), Some(Lsn(3)));
        // A replica that never saw epoch 2 but holds more of epoch 1 than the leader.
        let stale = history(&[(1, 1)]);
        assert_eq!(leader.agreement(Lsn(20), &stale, Lsn(9)), Some(Lsn(5)));
    }

    #[test]
    fn no_shared_epoch_means_no_answer_and_empty_logs_agree_at_zero() {
        let leader = history(&[(4, 100)]);
        let replica = history(&[(2, 1)]);
        assert_eq!(leader.agreement(Lsn(120), &replica, Lsn(50)), None);
        assert_eq!(leader.agreement(Lsn(120), &EpochHistory::default(), Lsn(0)), Some(Lsn(0)));
    }

    #[test]
    fn truncation_and_snapshots_reset_what_is_known() {
        let mut log = history(&[(1, 1), (2, 6), (3, 11)]);
        log.truncate_after(Lsn(8));
        assert_eq!(log, history(&[(1, 1), (2, 6)]));
        log.truncate_after(Lsn(6));
        assert_eq!(log, history(&[(1, 1), (2, 6)]));
        log.truncate_after(Lsn(5));
        assert_eq!(log, history(&[(1, 1)]));
        log.reset_to_snapshot(Epoch(7), Lsn(40));
        assert_eq!(log, history(&[(7, 40)]));
        log.reset_to_snapshot(Epoch(0), Lsn(0));
        assert_eq!(log, EpochHistory::default());
    }

    /// Logs built by leaders of rising epochs, each a copy of a prefix of the previous
    /// leader's log plus frames of its own: the agreement of any two is where they really
    /// stop holding the same (epoch, LSN) records, never beyond.
    mod agreement_property {
        use super::*;
        use proptest::prelude::*;

        /// A log as the epoch of each LSN's record (index 0 is LSN 1).
        fn history_of(log: &[u64]) -> EpochHistory {
            let mut history = EpochHistory::default();
            for (index, epoch) in log.iter().enumerate() {
                history.append(Epoch(*epoch), Lsn(index as u64 + 1));
            }
            history
        }

        /// Every leader's log: leader `e` keeps a prefix of leader `e - 1`'s (of length
        /// `kept[e]`) and appends `added[e]` records of epoch `e`.
        fn leaders(kept: &[usize], added: &[usize]) -> Vec<Vec<u64>> {
            let mut logs: Vec<Vec<u64>> = Vec::new();
            for (index, (keep, add)) in kept.iter().zip(added).enumerate() {
                let epoch = index as u64 + 1;
                let mut log = logs.last().cloned().unwrap_or_default();
                log.truncate(*keep % (log.len() + 1));
                log.extend(std::iter::repeat_n(epoch, *add));
                logs.push(log);
            }
            logs
        }

        proptest! {
            #[test]
            fn agreement_is_the_true_common_prefix(
                kept in proptest::collection::vec(0usize..20, 1..6),
                added in proptest::collection::vec(0usize..6, 6),
                pick in (0usize..6, 0usize..6, 0usize..30, 0usize..30),
            ) {
                let logs = leaders(&kept, &added[..kept.len()]);
                let (first, second) = (&logs[pick.0 % logs.len()], &logs[pick.1 % logs.len()]);
                // Replicas hold any prefix of a leader's log.
                let first = &first[..pick.2 % (first.len() + 1)];
                let second = &second[..pick.3 % (second.len() + 1)];
                let common = first.iter().zip(second).take_while(|(a, b)| a == b).count() as u64;
                let agreement = history_of(first).agreement(
                    Lsn(first.len() as u64), &history_of(second), Lsn(second.len() as u64));
                let symmetric = history_of(second).agreement(
                    Lsn(second.len() as u64), &history_of(first), Lsn(first.len() as u64));
                prop_assert_eq!(agreement, symmetric);
                match agreement {
                    Some(lsn) => prop_assert_eq!(lsn.0, common),
                    None => prop_assert!(common == 0 || first.is_empty() || second.is_empty()),
                }
            }
        }
    }

    #[test]
    fn invalid_entries_are_refused_and_the_history_is_bounded() {
        assert!(EpochHistory::from_entries(vec![(Epoch(2), Lsn(1)), (Epoch(1), Lsn(5))]).is_none());
        assert!(EpochHistory::from_entries(vec![(Epoch(1), Lsn(5)), (Epoch(2), Lsn(5))]).is_none());
        assert!(EpochHistory::from_entries(vec![(Epoch(1), Lsn(0))]).is_none());
        let mut log = EpochHistory::default();
        for epoch in 1..=(EPOCH_HISTORY_ENTRIES_MAX as u64 + 10) {
            log.append(Epoch(epoch), Lsn(epoch * 10));
        }
        assert_eq!(log.entries().len(), EPOCH_HISTORY_ENTRIES_MAX);
        assert_eq!(log.entries()[0], (Epoch(11), Lsn(110)));
    }
}
