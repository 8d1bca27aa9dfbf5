//! The leader's decisions, step by step: exact commands for exact events.

use super::*;

const TIMEOUT_MS: u64 = 400;

fn member(name: &str) -> Member {
    Member { name: name.into(), address: format!("127.0.0.1:{}", name.len()) }
}

fn set(epoch: u64, version: u64, names: &[&str]) -> InSyncSet {
    InSyncSet::new(Epoch(epoch), version, "l", names.iter().map(|name| member(name)).collect())
}

fn leader(in_sync: &[&str], min_insync: usize) -> Leader {
    let config = LeaderConfig {
        me: member("l"),
        min_insync,
        progress_timeout_ms: TIMEOUT_MS,
        controlled: false,
        mutations: Mutations::NONE,
    };
    let start = LeaderStart {
        framed: Lsn(0),
        durable: Lsn(0),
        commit: Lsn(0),
        history: EpochHistory::default(),
        in_sync: set(2, 0, in_sync),
    };
    Leader::new(PartitionId(0), Epoch(2), config, start, Moment(0))
}

fn subscription(name: &str, kind: ReplicaKind, last: u64, history: &[(u64, u64)]) -> Subscription {
    let entries = history.iter().map(|(epoch, lsn)| (Epoch(*epoch), Lsn(*lsn))).collect();
    let history = EpochHistory::from_entries(entries).expect("valid");
    Subscription {
        member: member(name),
        kind,
        last_lsn: Lsn(last),
        last_epoch: history.last_epoch(),
        history,
        floor: Lsn(0),
        fence: Epoch(2),
    }
}

fn step(leader: &mut Leader, at: u64, event: LeaderEvent) -> Vec<LeaderCommand> {
    let mut out = Vec::new();
    leader.step(Moment(at), event, &mut out);
    out
}

/// Subscribes `name` from an empty log and brings its stream live.
fn attach(leader: &mut Leader, stream: u64, name: &str, kind: ReplicaKind) {
    let event = LeaderEvent::Subscribed {
        stream: StreamId(stream),
        subscription: subscription(name, kind, 0, &[]),
    };
    step(leader, 0, event);
    step(leader, 0, LeaderEvent::TailQueued { stream: StreamId(stream) });
}

fn frame(leader: &mut Leader, first: u64, last: u64) -> Vec<LeaderCommand> {
    step(leader, 0, LeaderEvent::FrameCut { first: Lsn(first), last: Lsn(last) })
}

fn commits(commands: &[LeaderCommand]) -> Vec<u64> {
    commands
        .iter()
        .filter_map(|command| match command {
            LeaderCommand::Commit { lsn } => Some(lsn.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_write_commits_once_durable_here_and_on_every_follower_of_the_set_not_learners() {
    let mut leader = leader(&["a", "b", "l"], 2);
    attach(&mut leader, 1, "a", ReplicaKind::Follower);
    attach(&mut leader, 2, "b", ReplicaKind::Follower);
    attach(&mut leader, 3, "r", ReplicaKind::Learner);
    assert!(leader.accepts_writes());
    frame(&mut leader, 1, 5);
    assert_eq!(leader.recipients(Lsn(1)).count(), 3, "every live stream gets the frame");
    assert!(commits(&step(&mut leader, 1, LeaderEvent::LocalDurable { lsn: Lsn(5) })).is_empty());
    let acked =
        |stream: u64, lsn: u64| LeaderEvent::Acked { stream: StreamId(stream), lsn: Lsn(lsn) };
    assert!(commits(&step(&mut leader, 2, acked(1, 5))).is_empty(), "b has not acknowledged");
    assert!(commits(&step(&mut leader, 2, acked(3, 5))).is_empty(), "a learner counts for nothing");
    assert_eq!(commits(&step(&mut leader, 3, acked(2, 4))), [4]);
    assert_eq!(commits(&step(&mut leader, 3, acked(2, 5))), [5]);
    assert_eq!(leader.commit(), Lsn(5));
}

#[test]
fn a_lost_follower_leaves_only_once_the_others_recorded_the_smaller_set() {
    let mut leader = leader(&["a", "b", "l"], 2);
    attach(&mut leader, 1, "a", ReplicaKind::Follower);
    attach(&mut leader, 2, "b", ReplicaKind::Follower);
    frame(&mut leader, 1, 3);
    step(&mut leader, 1, LeaderEvent::LocalDurable { lsn: Lsn(3) });
    step(&mut leader, 1, LeaderEvent::Acked { stream: StreamId(1), lsn: Lsn(3) });
    let closed = step(&mut leader, 2, LeaderEvent::StreamClosed { stream: StreamId(2) });
    let smaller = set(2, 1, &["a", "l"]);
    assert_eq!(
        closed,
        [
            LeaderCommand::PersistInSyncSet { set: smaller.clone() },
            LeaderCommand::SendInSyncSet { stream: StreamId(1), set: smaller.clone() },
        ]
    );
    assert_eq!(leader.commit(), Lsn(0), "b is still waited for");
    let recorded = LeaderEvent::InSyncSetRecorded {
        stream: StreamId(1),
        leader_epoch: Epoch(2),
        isr_epoch: 1,
    };
    assert!(commits(&step(&mut leader, 3, recorded)).is_empty(), "the leader has not recorded it");
    let persisted = LeaderEvent::InSyncSetPersisted { leader_epoch: Epoch(2), isr_epoch: 1 };
    assert_eq!(commits(&step(&mut leader, 3, persisted)), [3]);
    assert_eq!(leader.in_sync(), &smaller);
}

#[test]
fn a_set_never_shrinks_below_the_minimum_and_writes_are_refused_meanwhile() {
    let mut leader = leader(&["a", "l"], 2);
    attach(&mut leader, 1, "a", ReplicaKind::Follower);
    assert!(leader.accepts_writes());
    let closed = step(&mut leader, 1, LeaderEvent::StreamClosed { stream: StreamId(1) });
    assert!(closed.is_empty(), "{closed:?}");
    assert!(!leader.accepts_writes());
    assert_eq!(leader.in_sync().len(), 2);
    assert!(leader.waits_for("a"));
}

#[test]
fn a_follower_that_stops_acknowledging_leaves_after_the_progress_timeout() {
    let mut leader = leader(&["a", "b", "l"], 2);
    attach(&mut leader, 1, "a", ReplicaKind::Follower);
    attach(&mut leader, 2, "b", ReplicaKind::Follower);
    frame(&mut leader, 1, 1);
    step(&mut leader, 0, LeaderEvent::Acked { stream: StreamId(1), lsn: Lsn(1) });
    for moment in (100..TIMEOUT_MS).step_by(100).chain([TIMEOUT_MS - 1]) {
        assert!(step(&mut leader, moment, LeaderEvent::Tick).is_empty(), "{moment}");
    }
    let late = step(&mut leader, TIMEOUT_MS, LeaderEvent::Tick);
    assert!(matches!(&late[0], LeaderCommand::Close { stream: StreamId(2), .. }), "{late:?}");
    assert_eq!(late[1], LeaderCommand::PersistInSyncSet { set: set(2, 1, &["a", "l"]) });
}

#[test]
fn a_leader_that_stood_still_gives_its_followers_the_whole_timeout_again() {
    let mut leader = leader(&["a", "b", "l"], 2);
    attach(&mut leader, 1, "a", ReplicaKind::Follower);
    attach(&mut leader, 2, "b", ReplicaKind::Follower);
    frame(&mut leader, 1, 1);
    assert!(step(&mut leader, 100, LeaderEvent::Tick).is_empty());
    // Paused for longer than the timeout: the acknowledgements sat unread, nobody leaves.
    let resumed = 100 + TIMEOUT_MS + 700;
    assert!(step(&mut leader, resumed, LeaderEvent::Tick).is_empty());
    for moment in (resumed + 100..resumed + TIMEOUT_MS).step_by(100) {
        assert!(step(&mut leader, moment, LeaderEvent::Tick).is_empty(), "{moment}");
    }
    // Silent for the timeout on a clock that ran: both leave (one shrink at a time).
    let late = step(&mut leader, resumed + TIMEOUT_MS, LeaderEvent::Tick);
    assert!(matches!(&late[0], LeaderCommand::Close { .. }), "{late:?}");
}

#[test]
fn a_replica_is_cut_back_to_where_logs_agree_or_sent_a_snapshot() {
    let mut leader = leader(&["l"], 1);
    // This leader's log: epoch 1 up to 10, then its own epoch 2.
    let mut history = EpochHistory::default();
    history.append(Epoch(1), Lsn(1));
    leader.history = history;
    leader.framed = Lsn(10);
    leader.durable = Lsn(10);
    frame(&mut leader, 11, 20);
    let start = |commands: &[LeaderCommand]| match &commands[0] {
        LeaderCommand::StartStream { plan, caught_up_at, .. } => (*plan, *caught_up_at),
        other => panic!("{other:?}"),
    };
    // Epoch 1 ran to 14 on the old leader: 11..=14 never reached this one.
    let diverged = subscription("a", ReplicaKind::Follower, 14, &[(1, 1)]);
    let commands = step(
        &mut leader,
        0,
        LeaderEvent::Subscribed { stream: StreamId(1), subscription: diverged },
    );
    assert_eq!(start(&commands), (StreamPlan::Tail { after: Lsn(10) }, Lsn(20)));
    // Behind in this leader's own epoch: continues from its end.
    let behind = subscription("b", ReplicaKind::Follower, 15, &[(1, 1), (2, 11)]);
    let commands =
        step(&mut leader, 0, LeaderEvent::Subscribed { stream: StreamId(2), subscription: behind });
    assert_eq!(start(&commands).0, StreamPlan::Tail { after: Lsn(15) });
    // Diverged below its snapshot, or sharing no epoch: a snapshot.
    let mut stuck = subscription("c", ReplicaKind::Follower, 14, &[(1, 1)]);
    stuck.floor = Lsn(12);
    let commands =
        step(&mut leader, 0, LeaderEvent::Subscribed { stream: StreamId(3), subscription: stuck });
    let below = StreamPlan::Snapshot { reason: SnapshotReason::BelowSnapshot };
    assert_eq!(start(&commands).0, below);
    let stranger = subscription("d", ReplicaKind::Follower, 9, &[(7, 1)]);
    let commands = step(
        &mut leader,
        0,
        LeaderEvent::Subscribed { stream: StreamId(4), subscription: stranger },
    );
    assert_eq!(start(&commands).0, StreamPlan::Snapshot { reason: SnapshotReason::NoAgreement });
}

#[test]
fn a_replica_that_saw_a_newer_epoch_fences_this_leader() {
    let mut leader = leader(&["a", "l"], 1);
    attach(&mut leader, 1, "a", ReplicaKind::Follower);
    frame(&mut leader, 1, 2);
    step(&mut leader, 0, LeaderEvent::LocalDurable { lsn: Lsn(2) });
    let mut newer = subscription("b", ReplicaKind::Follower, 0, &[]);
    newer.fence = Epoch(3);
    let commands =
        step(&mut leader, 0, LeaderEvent::Subscribed { stream: StreamId(2), subscription: newer });
    assert_eq!(commands[0], LeaderCommand::StepDown { epoch: Epoch(3) });
    assert!(matches!(&commands[1], LeaderCommand::Refuse { stream: StreamId(2), reason }
            if reason.contains("epoch 3")));
    assert!(!leader.accepts_writes());
    let acked = step(&mut leader, 1, LeaderEvent::Acked { stream: StreamId(1), lsn: Lsn(2) });
    assert!(commits(&acked).is_empty(), "a fenced leader commits nothing");
    assert_eq!(leader.fenced_by(), Some(Epoch(3)));
}

#[test]
fn a_follower_joins_once_caught_up_and_holding_everything_committed() {
    let mut leader = leader(&["l"], 1);
    frame(&mut leader, 1, 4);
    step(&mut leader, 0, LeaderEvent::LocalDurable { lsn: Lsn(4) });
    assert_eq!(leader.commit(), Lsn(4), "alone, as configured");
    let joining = subscription("a", ReplicaKind::Follower, 0, &[]);
    step(&mut leader, 0, LeaderEvent::Subscribed { stream: StreamId(1), subscription: joining });
    step(&mut leader, 0, LeaderEvent::TailQueued { stream: StreamId(1) });
    assert!(!leader.waits_for("a"), "not caught up with what was framed at its subscription");
    frame(&mut leader, 5, 6);
    step(&mut leader, 0, LeaderEvent::LocalDurable { lsn: Lsn(6) });
    assert_eq!(leader.commit(), Lsn(6));
    let caught_up = step(&mut leader, 0, LeaderEvent::Acked { stream: StreamId(1), lsn: Lsn(4) });
    assert!(caught_up.is_empty(), "{caught_up:?}");
    assert!(leader.waits_for("a"), "commits wait for it from now on");
    let joined = step(&mut leader, 0, LeaderEvent::Acked { stream: StreamId(1), lsn: Lsn(6) });
    let bigger = set(2, 1, &["a", "l"]);
    assert_eq!(
        joined,
        [
            LeaderCommand::PersistInSyncSet { set: bigger.clone() },
            LeaderCommand::SendInSyncSet { stream: StreamId(1), set: bigger },
        ]
    );
}

#[test]
fn the_fourth_subscription_from_one_place_gets_a_snapshot() {
    let mut leader = leader(&["l"], 1);
    frame(&mut leader, 1, 3);
    let plans: Vec<StreamPlan> = (0..5)
        .map(|index| {
            let from = subscription("a", ReplicaKind::Learner, 3, &[(2, 1)]);
            let event = LeaderEvent::Subscribed { stream: StreamId(index), subscription: from };
            match &step(&mut leader, index * 300, event)[..] {
                [.., LeaderCommand::StartStream { plan, .. }] => *plan,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let tail = StreamPlan::Tail { after: Lsn(3) };
    let repeated = StreamPlan::Snapshot { reason: SnapshotReason::Repeated };
    assert_eq!(plans, [tail, tail, tail, repeated, tail]);
}

mod properties;
