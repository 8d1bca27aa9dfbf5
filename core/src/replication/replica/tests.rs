//! The replica's checks and what it reports, step by step.

use super::*;
use crate::replication::in_sync::Member;

fn replica(last: u64, durable: u64, fence: u64) -> Replica {
    let mut history = EpochHistory::default();
    if last > 0 {
        history.append(Epoch(1), Lsn(1));
    }
    let facts = PartitionFacts { fence: Epoch(fence), in_sync: None };
    let start = ReplicaStart {
        last: Lsn(last),
        durable: Lsn(durable),
        commit: Lsn(0),
        floor: Lsn(0),
        history,
        facts: facts.clone(),
        durable_facts: facts,
    };
    Replica::new(PartitionId(0), start, Mutations::NONE)
}

fn step(replica: &mut Replica, event: ReplicaEvent) -> Vec<ReplicaCommand> {
    let mut out = Vec::new();
    replica.step(event, &mut out);
    out
}

fn start(stream: u64, epoch: u64, mode: StartMode) -> ReplicaEvent {
    ReplicaEvent::StreamStarted {
        stream,
        epoch: Epoch(epoch),
        mode,
        caught_up_at: Lsn(0),
        in_sync: None,
    }
}

fn tail(next: u64) -> StartMode {
    StartMode::Tail { next_lsn: Lsn(next) }
}

fn persisted(replica: &mut Replica, fence: u64) -> Vec<ReplicaCommand> {
    let facts = PartitionFacts { fence: Epoch(fence), in_sync: replica.facts.in_sync.clone() };
    step(replica, ReplicaEvent::FactsPersisted { facts })
}

#[test]
fn an_older_epoch_is_refused_naming_both_and_a_newer_one_is_recorded_before_any_ack() {
    let mut replica = replica(5, 5, 4);
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 1 });
    let refused = step(&mut replica, start(1, 3, tail(6)));
    let reason =
        "the leader's epoch 3 is older than epoch 4, which this replica has seen".to_string();
    assert_eq!(refused, [ReplicaCommand::Reject { stream: 1, reason, fence: Some(Epoch(4)) }]);
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 2 });
    let newer = step(&mut replica, start(2, 6, tail(6)));
    let facts = PartitionFacts { fence: Epoch(6), in_sync: None };
    assert_eq!(newer, [ReplicaCommand::PersistFacts { facts }], "nothing else until it is on disk");
    let acked = persisted(&mut replica, 6);
    assert_eq!(acked, [ReplicaCommand::Ack { stream: 2, lsn: Lsn(5) }, ReplicaCommand::CaughtUp]);
}

#[test]
fn a_tail_starting_before_the_log_end_cuts_the_log_back_first() {
    let mut replica = replica(9, 9, 2);
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 1 });
    let cut = step(&mut replica, start(1, 2, tail(7)));
    assert_eq!(cut, [ReplicaCommand::Truncate { after: Lsn(6), records: 3 }]);
    assert!(!replica.accepts_frames(1));
    let done = step(&mut replica, ReplicaEvent::Truncated { lsn: Lsn(6), epoch: Epoch(1) });
    assert_eq!(done, [ReplicaCommand::Ack { stream: 1, lsn: Lsn(6) }, ReplicaCommand::CaughtUp]);
    assert_eq!((replica.last(), replica.durable()), (Lsn(6), Lsn(6)));
    // A tail that starts after the log's end leaves a gap.
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 2 });
    let gap = step(&mut replica, start(2, 2, tail(9)));
    assert!(matches!(&gap[..], [ReplicaCommand::Reject { stream: 2, fence: None, .. }]), "{gap:?}");
}

#[test]
fn frames_must_continue_the_log_and_never_go_back_in_epoch() {
    let mut replica = replica(4, 4, 3);
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 1 });
    step(&mut replica, start(1, 3, tail(5)));
    let frame = |epoch: u64, first: u64, last: u64| ReplicaEvent::Frame {
        stream: 1,
        epoch: Epoch(epoch),
        first: Lsn(first),
        last: Lsn(last),
    };
    assert!(step(&mut replica, frame(3, 5, 6)).is_empty());
    assert_eq!(replica.last(), Lsn(6));
    assert_eq!(replica.history().entries(), [(Epoch(1), Lsn(1)), (Epoch(3), Lsn(5))]);
    let reject = |commands: Vec<ReplicaCommand>| match &commands[..] {
        [ReplicaCommand::Reject { reason, .. }] => reason.clone(),
        other => panic!("{other:?}"),
    };
    let mut again = replica.clone();
    assert!(reject(step(&mut again, frame(2, 7, 7))).contains("epoch 2 after one of epoch 3"));
    let mut again = replica.clone();
    assert!(reject(step(&mut again, frame(3, 8, 8))).contains("expected 7"));
    let mut again = replica.clone();
    assert!(reject(step(&mut again, frame(4, 7, 7))).contains("from a leader of epoch 3"));
}

#[test]
fn the_commit_point_comes_from_the_current_stream_only() {
    let mut replica = replica(3, 3, 2);
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 1 });
    step(&mut replica, start(1, 2, tail(4)));
    let commit = step(&mut replica, ReplicaEvent::LeaderCommit { stream: 1, lsn: Lsn(2) });
    assert_eq!(commit, [ReplicaCommand::Commit { lsn: Lsn(2) }]);
    step(
        &mut replica,
        ReplicaEvent::Frame { stream: 1, epoch: Epoch(2), first: Lsn(4), last: Lsn(6) },
    );
    step(&mut replica, ReplicaEvent::LeaderCommit { stream: 1, lsn: Lsn(6) });
    assert_eq!(replica.commit(), Lsn(3), "committed, but not durable here yet");
    step(&mut replica, ReplicaEvent::StreamClosed { stream: 1 });
    let durable = step(&mut replica, ReplicaEvent::LocalDurable { lsn: Lsn(6) });
    assert!(durable.is_empty(), "no stream: no ack, and no commit beyond what it learned");
    // A new leader's stream: what the old one said counts for nothing.
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 2 });
    step(&mut replica, start(2, 2, tail(7)));
    assert_eq!(replica.commit(), Lsn(3));
    step(&mut replica, ReplicaEvent::LeaderCommit { stream: 1, lsn: Lsn(6) });
    assert_eq!(replica.commit(), Lsn(3), "a commit of an earlier stream is ignored");
}

#[test]
fn it_subscribes_only_from_what_is_durable_and_never_after_its_log_failed() {
    let mut replica = replica(3, 3, 2);
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 1 });
    step(&mut replica, start(1, 2, tail(4)));
    step(
        &mut replica,
        ReplicaEvent::Frame { stream: 1, epoch: Epoch(2), first: Lsn(4), last: Lsn(5) },
    );
    step(&mut replica, ReplicaEvent::StreamClosed { stream: 1 });
    assert_eq!(replica.subscription(), None, "4 and 5 are applied, not durable");
    step(&mut replica, ReplicaEvent::LocalDurable { lsn: Lsn(5) });
    assert_eq!(replica.subscription().map(|from| from.last_lsn), Some(Lsn(5)));
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 2 });
    step(&mut replica, start(2, 2, tail(6)));
    let failed = step(&mut replica, ReplicaEvent::WalFailed { reason: "disk full".into() });
    assert_eq!(failed, [ReplicaCommand::ReportFailure { stream: 2, reason: "disk full".into() }]);
    assert_eq!(replica.subscription(), None);
}

#[test]
fn a_promotion_is_accepted_once_only_and_not_over_a_newer_set() {
    let mut replica = replica(3, 3, 2);
    let member = Member { name: "a".into(), address: "127.0.0.1:1".into() };
    let recorded = InSyncSet::new(Epoch(2), 5, "a", vec![member.clone()]);
    replica.facts.in_sync = Some(recorded.clone());
    replica.durable_facts.in_sync = Some(recorded);
    let stale = ReplicaEvent::AcceptEpoch { epoch: Epoch(3), basis: Some((Epoch(2), 4)) };
    let refused = step(&mut replica, stale);
    assert!(matches!(&refused[..], [ReplicaCommand::AcceptRefused { reason, .. }]
            if reason.contains("isr_epoch 5")));
    let fresh = ReplicaEvent::AcceptEpoch { epoch: Epoch(3), basis: Some((Epoch(2), 5)) };
    assert!(matches!(&step(&mut replica, fresh)[..], [ReplicaCommand::PersistFacts { .. }]));
    assert_eq!(persisted(&mut replica, 3), [ReplicaCommand::Accepted { epoch: Epoch(3) }]);
    let again = ReplicaEvent::AcceptEpoch { epoch: Epoch(3), basis: None };
    assert!(matches!(&step(&mut replica, again)[..], [ReplicaCommand::AcceptRefused { .. }]));
    let first = InSyncSet::new(Epoch(3), 0, "a", vec![member]);
    let install = step(&mut replica, ReplicaEvent::InstallInSyncSet { set: first.clone() });
    assert_eq!(
        install,
        [ReplicaCommand::PersistFacts {
            facts: PartitionFacts { fence: Epoch(3), in_sync: Some(first) }
        }]
    );
    assert_eq!(persisted(&mut replica, 3), [ReplicaCommand::Installed { epoch: Epoch(3) }]);
}

#[test]
fn a_replica_taking_over_a_pending_write_waits_for_its_own_facts_before_it_answers() {
    // A leader stepped down with its set at isr_epoch 6 on its way to disk (fence 2); the
    // replica that takes over starts from those facts, not from the older ones on disk.
    let member = Member { name: "a".into(), address: "127.0.0.1:1".into() };
    let on_disk = InSyncSet::new(Epoch(2), 5, "a", vec![member.clone()]);
    let on_the_way = InSyncSet::new(Epoch(2), 6, "a", vec![member]);
    let start = ReplicaStart {
        last: Lsn(3),
        durable: Lsn(3),
        commit: Lsn(0),
        floor: Lsn(0),
        history: EpochHistory::default(),
        facts: PartitionFacts { fence: Epoch(2), in_sync: Some(on_the_way.clone()) },
        durable_facts: PartitionFacts { fence: Epoch(2), in_sync: Some(on_disk) },
    };
    let mut replica = Replica::new(PartitionId(0), start, Mutations::NONE);
    let accept = ReplicaEvent::AcceptEpoch { epoch: Epoch(4), basis: Some((Epoch(2), 6)) };
    assert_eq!(step(&mut replica, accept), [], "one write at a time: the pending one first");
    let pending = PartitionFacts { fence: Epoch(2), in_sync: Some(on_the_way.clone()) };
    let after = step(&mut replica, ReplicaEvent::FactsPersisted { facts: pending });
    let fenced = PartitionFacts { fence: Epoch(4), in_sync: Some(on_the_way) };
    assert_eq!(
        after,
        [ReplicaCommand::PersistFacts { facts: fenced.clone() }],
        "the old write is not the new fence: no answer yet, and no older facts written"
    );
    let done = step(&mut replica, ReplicaEvent::FactsPersisted { facts: fenced });
    assert_eq!(done, [ReplicaCommand::Accepted { epoch: Epoch(4) }]);
}

/// A promotion ends the stream whose cut is still running. Were the node to follow the new
/// leader at once, from the log as it was before the cut, it would acknowledge records the cut
/// then removes while the new stream stays current. The shard runtime cuts the log on a task
/// of its own and subscribes as soon as `subscription()` answers: so it answers nothing until
/// the cut is reported, and then from the cut log.
#[test]
fn no_subscription_while_a_cut_from_an_ended_stream_runs() {
    let mut replica = replica(5, 5, 2);
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 1 });
    let cut = step(&mut replica, start(1, 2, tail(4)));
    assert_eq!(cut, [ReplicaCommand::Truncate { after: Lsn(3), records: 2 }]);
    let promotion = step(&mut replica, ReplicaEvent::AcceptEpoch { epoch: Epoch(3), basis: None });
    assert!(matches!(&promotion[1], ReplicaCommand::Reject { stream: 1, .. }), "{promotion:?}");
    assert_eq!(persisted(&mut replica, 3), [ReplicaCommand::Accepted { epoch: Epoch(3) }]);
    assert_eq!(replica.subscription(), None, "the cut still runs");
    assert_eq!(step(&mut replica, ReplicaEvent::Truncated { lsn: Lsn(3), epoch: Epoch(1) }), []);
    let from = replica.subscription().expect("the cut is done");
    assert_eq!((from.last_lsn, from.last_epoch), (Lsn(3), Epoch(1)), "from the cut log");
    // The new leader's log holds LSNs 4 and 5 of epoch 1 again: the replica takes them anew.
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 2 });
    let started = step(&mut replica, start(2, 3, tail(4)));
    assert_eq!(started[0], ReplicaCommand::Ack { stream: 2, lsn: Lsn(3) }, "no more than held");
    let frame = ReplicaEvent::Frame { stream: 2, epoch: Epoch(1), first: Lsn(4), last: Lsn(5) };
    assert_eq!(step(&mut replica, frame), []);
    let durable = step(&mut replica, ReplicaEvent::LocalDurable { lsn: Lsn(5) });
    assert!(durable.contains(&ReplicaCommand::Ack { stream: 2, lsn: Lsn(5) }), "{durable:?}");
}

/// The same order with a snapshot install: a promotion ends the stream whose install still
/// runs. A new stream started before the install is reported could ask for a cut below the
/// installed snapshot, which the replica must refuse to believe (its release-build assertion
/// would end the process). No subscription is given until the install is reported; then it
/// starts after the snapshot.
#[test]
fn no_subscription_while_a_snapshot_from_an_ended_stream_installs() {
    let mut replica = replica(5, 5, 2);
    step(&mut replica, ReplicaEvent::StreamOpened { stream: 1 });
    assert_eq!(step(&mut replica, start(1, 2, StartMode::Snapshot)), []);
    let install = step(&mut replica, ReplicaEvent::SnapshotReceived { stream: 1, lsn: Lsn(6) });
    assert_eq!(install, [ReplicaCommand::InstallSnapshot { lsn: Lsn(6) }]);
    step(&mut replica, ReplicaEvent::AcceptEpoch { epoch: Epoch(3), basis: None });
    assert_eq!(persisted(&mut replica, 3), [ReplicaCommand::Accepted { epoch: Epoch(3) }]);
    assert_eq!(replica.subscription(), None, "the install still runs");
    step(&mut replica, ReplicaEvent::SnapshotInstalled { lsn: Lsn(6), epoch: Epoch(2) });
    let from = replica.subscription().expect("the install is done");
    assert_eq!((from.last_lsn, from.floor), (Lsn(6), Lsn(6)), "after the snapshot");
}

mod properties;
