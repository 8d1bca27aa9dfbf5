//! The controller's decisions, one rule a test, and a property test over random commands.

use proptest::prelude::*;

use super::*;

const TAG_ID: u128 = 0x5eed;

fn tag() -> ClusterTag {
    ClusterTag { name: "hogwarts".into(), id: TAG_ID }
}

fn applicant(name: &str, kind: MemberKind) -> Applicant {
    Applicant {
        name: name.into(),
        peer_address: format!("10.0.0.{}:23852", name.len()),
        kind,
        incarnation: 1,
        version: "0.2.0".into(),
        metadata_version: 0,
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_string()).collect()
}

/// harry leads, hermione and ron follow (both in sync on both partitions), neville learns.
fn cluster() -> ClusterState {
    let mut state = ClusterState::default();
    let init = Command::Init {
        tag: tag(),
        leader: applicant("harry", MemberKind::Voter),
        partitions: 2,
        min_insync: 2,
    };
    state.apply(init).unwrap();
    for (name, kind) in [
        ("hermione", MemberKind::Voter),
        ("ron", MemberKind::Voter),
        ("neville", MemberKind::Learner),
    ] {
        let join = Command::Join { tag_id: Some(TAG_ID), applicant: applicant(name, kind) };
        state.apply(join).unwrap();
    }
    for partition in 0..2 {
        alter(&mut state, partition, &["harry", "hermione", "ron"]).unwrap();
    }
    state
}

fn alter(
    state: &mut ClusterState,
    partition: u32,
    members: &[&str],
) -> Result<Vec<Effect>, Refusal> {
    let index = partition as usize;
    let command = Command::AlterInSync {
        partition: PartitionId(partition),
        leader_epoch: state.leader_epoch,
        isr_epoch: state.partitions[index].isr_epoch,
        in_sync: names(members),
    };
    state.apply(command)
}

fn durable(list: &[(&str, u64)]) -> BTreeMap<String, Lsn> {
    list.iter().map(|(name, lsn)| ((*name).to_string(), Lsn(*lsn))).collect()
}

#[test]
fn init_makes_a_cluster_of_one_leader_and_only_once() {
    let mut state = ClusterState::default();
    let leader = applicant("harry", MemberKind::Voter);
    let init = Command::Init { tag: tag(), leader, partitions: 3, min_insync: 1 };
    let effects = state.apply(init.clone()).unwrap();
    assert_eq!(effects, vec![Effect::NewLeader { leader: "harry".into(), epoch: Epoch(1) }]);
    assert_eq!(state.partitions.len(), 3);
    assert!(state.partitions.iter().all(|partition| partition.in_sync == names(&["harry"])));
    assert_eq!(state.apply(init), Err(Refusal::AlreadyInitialised { tag: tag() }));
    let learner = applicant("neville", MemberKind::Learner);
    let mut fresh = ClusterState::default();
    let refused =
        fresh.apply(Command::Init { tag: tag(), leader: learner, partitions: 1, min_insync: 1 });
    assert!(matches!(refused, Err(Refusal::BadSettings { .. })));
}

#[test]
fn a_node_of_another_cluster_or_version_is_refused_and_named() {
    let mut state = cluster();
    let stranger =
        Command::Join { tag_id: Some(7), applicant: applicant("draco", MemberKind::Voter) };
    let refusal = state.apply(stranger).unwrap_err();
    let text = refusal.to_string();
    assert!(text.contains("hogwarts") && text.contains(&format!("{:032x}", 7)), "{text}");
    let mut old = applicant("draco", MemberKind::Voter);
    old.version = "0.1.9".into();
    let refusal = state.apply(Command::Join { tag_id: None, applicant: old }).unwrap_err();
    assert!(matches!(refusal, Refusal::VersionMismatch { .. }), "{refusal}");
    // A node that saw a newer state of the cluster than the controller has.
    let mut ahead = applicant("draco", MemberKind::Voter);
    ahead.metadata_version = state.metadata_version + 5;
    let refusal = state.apply(Command::Join { tag_id: None, applicant: ahead }).unwrap_err();
    assert!(matches!(refusal, Refusal::MetadataAhead { .. }), "{refusal}");
    assert!(refusal.to_string().contains("metadata version"), "{refusal}");
}

#[test]
fn the_fifth_follower_and_a_taken_name_are_refused() {
    let mut state = cluster();
    for name in ["ginny", "luna"] {
        let join = Command::Join { tag_id: None, applicant: applicant(name, MemberKind::Voter) };
        state.apply(join).unwrap();
    }
    let fifth = Command::Join { tag_id: None, applicant: applicant("fred", MemberKind::Voter) };
    assert_eq!(state.apply(fifth), Err(Refusal::TooManyFollowers));
    let mut impostor = applicant("ron", MemberKind::Voter);
    impostor.peer_address = "10.9.9.9:1".into();
    let taken = Command::Join { tag_id: None, applicant: impostor };
    assert_eq!(state.apply(taken), Err(Refusal::NameTaken { name: "ron".into() }));
}

#[test]
fn a_node_that_lost_its_data_comes_back_out_of_sync() {
    let mut state = cluster();
    let again =
        Command::Join { tag_id: Some(TAG_ID), applicant: applicant("ron", MemberKind::Voter) };
    state.apply(again).unwrap();
    assert!(state.partitions[0].in_sync.contains(&"ron".to_string()), "a restart keeps its place");
    let mut reborn = applicant("ron", MemberKind::Voter);
    reborn.incarnation = 2;
    state.apply(Command::Join { tag_id: Some(TAG_ID), applicant: reborn.clone() }).unwrap();
    assert!(state.partitions.iter().all(|partition| !partition.in_sync.contains(&reborn.name)));
    let mut leader_reborn = applicant("harry", MemberKind::Voter);
    leader_reborn.incarnation = 2;
    let refused = state.apply(Command::Join { tag_id: Some(TAG_ID), applicant: leader_reborn });
    assert!(matches!(refused, Err(Refusal::NotEligible { .. })), "{refused:?}");
    reborn.incarnation = 1;
    let stale = state.apply(Command::Join { tag_id: Some(TAG_ID), applicant: reborn }).unwrap_err();
    assert!(matches!(stale, Refusal::StaleIncarnation { known: 2, given: 1, .. }), "{stale}");
}

#[test]
fn the_in_sync_set_changes_only_by_compare_and_set_from_the_current_leader() {
    let mut state = cluster();
    let before = state.partitions[0].clone();
    let stale = Command::AlterInSync {
        partition: PartitionId(0),
        leader_epoch: state.leader_epoch,
        isr_epoch: before.isr_epoch - 1,
        in_sync: names(&["harry", "hermione"]),
    };
    assert!(matches!(state.apply(stale), Err(Refusal::StaleIsrEpoch { .. })));
    let old_leader = Command::AlterInSync {
        partition: PartitionId(0),
        leader_epoch: Epoch(0),
        isr_epoch: before.isr_epoch,
        in_sync: names(&["harry", "hermione"]),
    };
    assert!(matches!(state.apply(old_leader), Err(Refusal::StaleLeaderEpoch { .. })));
    assert_eq!(state.partitions[0], before, "refusals change nothing");
    let effects = alter(&mut state, 0, &["harry", "hermione"]).unwrap();
    let expected = Effect::InSyncChanged {
        partition: PartitionId(0),
        isr_epoch: before.isr_epoch + 1,
        in_sync: names(&["harry", "hermione"]),
    };
    assert_eq!(effects, vec![expected]);
}

#[test]
fn a_set_must_hold_the_leader_keep_min_insync_and_admit_no_learner_or_fenced_member() {
    let mut state = cluster();
    for (members, why) in [
        (&["hermione", "ron"][..], "leader"),
        (&["harry"][..], "keep 2"),
        (&["harry", "hermione", "neville"][..], "learner"),
        (&["harry", "hermione", "hermione"][..], "twice"),
    ] {
        let refusal = alter(&mut state, 1, members).unwrap_err();
        assert!(refusal.to_string().contains(why), "{members:?}: {refusal}");
    }
    alter(&mut state, 1, &["harry", "hermione"]).unwrap();
    let incarnation = state.members["ron"].incarnation;
    state.apply(Command::Fence { name: "ron".into(), incarnation }).unwrap();
    let refusal = alter(&mut state, 1, &["harry", "hermione", "ron"]).unwrap_err();
    assert!(refusal.to_string().contains("fenced"), "{refusal}");
    state.apply(Command::Unfence { name: "ron".into(), incarnation }).unwrap();
    alter(&mut state, 1, &["harry", "hermione", "ron"]).unwrap();
}

#[test]
fn an_election_picks_the_most_durable_member_in_sync_everywhere_and_bumps_the_epoch() {
    let mut state = cluster();
    // ron fell out of partition 1: however far ahead it claims to be, it is never elected.
    alter(&mut state, 1, &["harry", "hermione"]).unwrap();
    let effects = state
        .apply(Command::Elect { durable: durable(&[("ron", 900), ("hermione", 10)]) })
        .unwrap();
    assert_eq!(effects, vec![Effect::NewLeader { leader: "hermione".into(), epoch: Epoch(2) }]);
    assert_eq!(state.data_leader.as_deref(), Some("hermione"));
    // The lost leader leaves every set; the new epoch starts each set at isr_epoch 0.
    assert_eq!(state.partitions[0].in_sync, names(&["hermione", "ron"]));
    assert_eq!(state.partitions[1].in_sync, names(&["hermione"]));
    assert!(state.partitions.iter().all(|partition| partition.isr_epoch == 0));
}

#[test]
fn equal_durability_elects_the_first_name_and_fenced_members_never() {
    let mut state = cluster();
    let effects = state.apply(Command::Elect { durable: BTreeMap::new() }).unwrap();
    assert_eq!(effects, vec![Effect::NewLeader { leader: "hermione".into(), epoch: Epoch(2) }]);
    let mut state = cluster();
    let incarnation = state.members["hermione"].incarnation;
    state.apply(Command::Fence { name: "hermione".into(), incarnation }).unwrap();
    let effects = state.apply(Command::Elect { durable: durable(&[("hermione", 99)]) }).unwrap();
    assert_eq!(effects, vec![Effect::NewLeader { leader: "ron".into(), epoch: Epoch(2) }]);
}

#[test]
fn with_nobody_in_sync_nobody_is_elected() {
    let mut state = cluster();
    for partition in 0..2 {
        alter(&mut state, partition, &["harry", "hermione"]).unwrap();
    }
    let incarnation = state.members["hermione"].incarnation;
    state.apply(Command::Fence { name: "hermione".into(), incarnation }).unwrap();
    let before = state.clone();
    assert_eq!(
        state.apply(Command::Elect { durable: BTreeMap::new() }),
        Err(Refusal::NoEligibleLeader)
    );
    assert_eq!(state, before);
}

#[test]
fn a_transfer_goes_only_to_a_member_in_sync_everywhere_and_keeps_the_old_leader() {
    let mut state = cluster();
    alter(&mut state, 1, &["harry", "hermione"]).unwrap();
    let refused = state.apply(Command::Transfer { to: "ron".into() }).unwrap_err();
    assert!(refused.to_string().contains("in-sync set of every partition"), "{refused}");
    let refused = state.apply(Command::Transfer { to: "neville".into() }).unwrap_err();
    assert!(refused.to_string().contains("learner"), "{refused}");
    state.apply(Command::Transfer { to: "hermione".into() }).unwrap();
    assert_eq!(state.leader_epoch, Epoch(2));
    assert_eq!(state.partitions[0].in_sync, names(&["hermione", "harry", "ron"]));
    assert_eq!(state.partitions[1].in_sync, names(&["hermione", "harry"]));
}

#[test]
fn removal_spares_the_leader_the_last_voter_and_the_minimum_in_sync() {
    let mut state = cluster();
    let refused = state.apply(Command::Remove { name: "harry".into() }).unwrap_err();
    assert_eq!(refused, Refusal::TransferFirst { name: "harry".into() });
    alter(&mut state, 0, &["harry", "ron"]).unwrap();
    let refused = state.apply(Command::Remove { name: "ron".into() }).unwrap_err();
    assert!(refused.to_string().contains("fewer than 2"), "{refused}");
    let effects = state.apply(Command::Remove { name: "neville".into() }).unwrap();
    assert_eq!(effects, vec![Effect::Removed { name: "neville".into() }]);
    let effects = state.apply(Command::Remove { name: "hermione".into() }).unwrap();
    assert!(effects.contains(&Effect::Removed { name: "hermione".into() }));
    assert!(state
        .partitions
        .iter()
        .all(|partition| !partition.in_sync.contains(&"hermione".into())));
    // Two voters left and min_insync 2: neither may go, or no write could be acknowledged.
    alter(&mut state, 0, &["harry"]).unwrap_err();
    let refused = state.apply(Command::Remove { name: "ron".into() }).unwrap_err();
    assert!(refused.to_string().contains("would leave 1 voters"), "{refused}");
    let mut alone = ClusterState::default();
    let leader = applicant("harry", MemberKind::Voter);
    alone.apply(Command::Init { tag: tag(), leader, partitions: 1, min_insync: 1 }).unwrap();
    let learner = applicant("neville", MemberKind::Learner);
    alone.apply(Command::Join { tag_id: None, applicant: learner }).unwrap();
    assert_eq!(
        alone.apply(Command::Remove { name: "harry".into() }),
        Err(Refusal::TransferFirst { name: "harry".into() })
    );
}

/// A command drawn from small numbers, over the names of `cluster()` and two newcomers.
fn command_of(
    state: &ClusterState,
    (kind, who, partition, mask, lsn): (u8, usize, u32, u8, u64),
) -> Command {
    const NAMES: [&str; 6] = ["harry", "hermione", "ron", "neville", "ginny", "luna"];
    let name = NAMES[who % NAMES.len()].to_string();
    let incarnation = state.members.get(&name).map_or(1, |member| member.incarnation);
    match kind % 7 {
        0 => {
            let mut joining = applicant(&name, MemberKind::Voter);
            joining.incarnation = incarnation + u64::from(mask % 3 == 0);
            Command::Join { tag_id: Some(TAG_ID), applicant: joining }
        }
        1 => Command::Remove { name },
        2 => Command::Fence { name, incarnation },
        3 => Command::Unfence { name, incarnation },
        4 => {
            let index = (partition % 2) as usize;
            let chosen: Vec<String> = NAMES
                .iter()
                .enumerate()
                .filter(|(bit, _)| mask & (1 << bit) != 0)
                .map(|(_, name)| (*name).to_string())
                .collect();
            let mut in_sync: Vec<String> = state.data_leader.iter().cloned().collect();
            in_sync
                .extend(chosen.into_iter().filter(|name| Some(name) != state.data_leader.as_ref()));
            Command::AlterInSync {
                partition: PartitionId(index as u32),
                leader_epoch: state.leader_epoch,
                isr_epoch: state.partitions[index].isr_epoch,
                in_sync,
            }
        }
        5 => Command::Elect { durable: durable(&[(NAMES[who % 3], lsn)]) },
        _ => Command::Transfer { to: name },
    }
}

proptest! {
    /// Whatever commands come, in any order: every applied command leaves the invariants true
    /// (`apply` asserts them), a refused one changes nothing, epochs only grow, and a new
    /// leader was an unfenced voter in sync on every partition just before.
    #[test]
    fn random_commands_keep_the_controller_consistent(
        draws in proptest::collection::vec((0u8..7, 0usize..6, 0u32..2, 0u8..64, 0u64..100), 1..60)
    ) {
        let mut state = cluster();
        for draw in draws {
            let command = command_of(&state, draw);
            let command_copy = command.clone();
            let before = state.clone();
            match state.apply(command) {
                Ok(effects) => {
                    prop_assert!(state.leader_epoch >= before.leader_epoch);
                    prop_assert_eq!(state.metadata_version, before.metadata_version + 1);
                    for effect in effects {
                        if let Effect::NewLeader { leader, epoch } = effect {
                            prop_assert_eq!(epoch.0, before.leader_epoch.0 + 1);
                            let member = &before.members[&leader];
                            prop_assert!(!member.fenced && member.kind == MemberKind::Voter);
                            let in_sync = |partition: &PartitionRecord| {
                                partition.in_sync.contains(&leader)
                            };
                            prop_assert!(before.partitions.iter().all(in_sync));
                        }
                    }
                    // Within an epoch a set shrinks below min_insync only when a member
                    // that lost its data comes back (it no longer holds the records).
                    let data_lost = matches!(command_copy, Command::Join { .. });
                    if state.leader_epoch == before.leader_epoch && !data_lost {
                        for (index, partition) in state.partitions.iter().enumerate() {
                            let old = &before.partitions[index];
                            let floor = state.min_insync.min(old.in_sync.len());
                            prop_assert!(partition.in_sync.len() >= floor, "{:?}", partition);
                        }
                    }
                }
                Err(_) => prop_assert_eq!(&state, &before),
            }
        }
    }
}

#[test]
fn an_appointment_applies_once_per_epoch_to_an_unfenced_voter_with_the_planned_sets() {
    let mut state = cluster();
    let before = state.leader_epoch;
    let appoint = |leader: &str, previous: Epoch, floor: u64, sets: &[&[&str]]| Command::Appoint {
        leader: leader.into(),
        previous_epoch: previous,
        at_least: Epoch(floor),
        in_sync: sets.iter().map(|set| names(set)).collect(),
        basis: Vec::new(),
    };
    let learner = state.apply(appoint("neville", before, 0, &[&["neville"], &["neville"]]));
    assert!(matches!(learner, Err(Refusal::NotEligible { .. })), "{learner:?}");
    let not_first = state.apply(appoint("ron", before, 0, &[&["hermione", "ron"], &["ron"]]));
    assert!(matches!(not_first, Err(Refusal::BadInSyncSet { .. })), "{not_first:?}");
    let short = state.apply(appoint("ron", before, 0, &[&["ron"]]));
    assert!(matches!(short, Err(Refusal::BadSettings { .. })), "{short:?}");
    let effects =
        state.apply(appoint("ron", before, 7, &[&["ron", "hermione"], &["ron"]])).unwrap();
    assert_eq!(effects, vec![Effect::NewLeader { leader: "ron".into(), epoch: Epoch(7) }]);
    assert_eq!(state.partitions[0].in_sync, names(&["ron", "hermione"]));
    assert_eq!(state.partitions[1].in_sync, names(&["ron"]));
    // A second proposer that read the old epoch appoints nobody.
    let late = state.apply(appoint("hermione", before, 0, &[&["hermione"], &["hermione"]]));
    assert_eq!(late, Err(Refusal::StaleLeaderEpoch { current: Epoch(7), given: before }));
    let next = state.apply(appoint("hermione", Epoch(7), 0, &[&["hermione"], &["hermione"]]));
    assert_eq!(
        next.unwrap(),
        vec![Effect::NewLeader { leader: "hermione".into(), epoch: Epoch(8) }]
    );
    let incarnation = state.members["ron"].incarnation;
    state.apply(Command::Fence { name: "ron".into(), incarnation }).unwrap();
    let fenced = state.apply(appoint("ron", Epoch(8), 0, &[&["ron"], &["ron"]]));
    assert!(matches!(fenced, Err(Refusal::NotEligible { .. })), "{fenced:?}");
}

mod succession {
    use super::*;
    use crate::replication::mutations::Mutations;
    use crate::replication::promotion::{MemberReport, PartitionReport};
    use crate::replication::{InSyncSet, Member};

    fn member(name: &str) -> Member {
        Member { name: name.into(), address: format!("10.0.0.{}:23852", name.len()) }
    }

    /// A report of both partitions of `cluster()`: each recorded `set` (leader harry at
    /// epoch 1, version 2) and holds `durable` records of each.
    fn report(name: &str, set: &[&str], durable: u64) -> MemberReport {
        let recorded =
            InSyncSet::new(Epoch(1), 2, "harry", set.iter().map(|name| member(name)).collect());
        let partitions = (0..2)
            .map(|partition| PartitionReport {
                partition: PartitionId(partition),
                fence: Epoch(1),
                in_sync: Some(recorded.clone()),
                durable_lsn: Lsn(durable),
                failed: None,
            })
            .collect();
        MemberReport { member: member(name), learner: name == "neville", partitions }
    }

    #[test]
    fn the_most_durable_member_the_guard_accepts_is_appointed() {
        let state = cluster();
        let everyone = ["harry", "hermione", "ron"];
        let reports = [report("hermione", &everyone, 10), report("ron", &everyone, 12)];
        let appoint = plan_succession(&state, &reports, Mutations::NONE).unwrap();
        let Command::Appoint { leader, previous_epoch, at_least, in_sync, .. } = appoint.clone()
        else {
            panic!("{appoint:?}");
        };
        assert_eq!((leader.as_str(), previous_epoch, at_least), ("ron", Epoch(1), Epoch(2)));
        assert_eq!(in_sync, vec![names(&["ron", "hermione"]); 2]);
        let mut applied = state.clone();
        assert_eq!(
            applied.apply(appoint).unwrap(),
            vec![Effect::NewLeader { leader: "ron".into(), epoch: Epoch(2) }]
        );
    }

    #[test]
    fn a_proposal_the_controller_never_recorded_blocks_nobody() {
        let state = cluster();
        // Hermione stored a newer set without herself, which the lost leader proposed and the
        // controller never recorded: it never took effect, and she is appointed.
        let newer = InSyncSet::new(Epoch(1), 3, "harry", vec![member("harry"), member("ron")]);
        let mut hermione = report("hermione", &["harry", "hermione", "ron"], 50);
        hermione.partitions[0].in_sync = Some(newer);
        let appoint = plan_succession(&state, &[hermione], Mutations::NONE).unwrap();
        assert!(matches!(appoint, Command::Appoint { ref leader, .. } if leader == "hermione"));
    }

    #[test]
    fn an_appointment_chosen_before_a_set_changed_is_refused() {
        let state = cluster();
        let everyone = ["harry", "hermione", "ron"];
        let appoint = plan_succession(&state, &[report("ron", &everyone, 5)], Mutations::NONE);
        let mut changed = state.clone();
        let shrink = Command::RecordInSync {
            partition: PartitionId(0),
            epoch: state.leader_epoch,
            version: 2,
            in_sync: names(&["harry", "hermione"]),
        };
        changed.apply(shrink).unwrap();
        let refused = changed.apply(appoint.unwrap());
        assert!(matches!(refused, Err(Refusal::StaleIsrEpoch { .. })), "{refused:?}");
    }

    #[test]
    fn learners_and_fenced_voters_are_never_appointed() {
        // Learners and fenced voters are never candidates.
        let mut fenced = cluster();
        let incarnation = fenced.members["ron"].incarnation;
        fenced.apply(Command::Fence { name: "ron".into(), incarnation }).unwrap();
        let everyone = ["harry", "hermione", "ron"];
        let reports = [report("neville", &everyone, 99), report("ron", &everyone, 99)];
        let nobody = plan_succession(&fenced, &reports, Mutations::NONE).unwrap_err();
        assert!(nobody.reasons.is_empty(), "{nobody}");
    }

    #[test]
    fn a_member_the_controller_recorded_out_of_a_set_is_never_appointed() {
        // The leader shrank partition 1 to {harry, hermione} through the controller; ron,
        // the most durable, never heard of it and hermione, who did, does not answer.
        let mut state = cluster();
        let shrink = Command::RecordInSync {
            partition: PartitionId(1),
            epoch: state.leader_epoch,
            version: 2,
            in_sync: names(&["harry", "hermione"]),
        };
        state.apply(shrink).unwrap();
        let everyone = ["harry", "hermione", "ron"];
        let refused =
            plan_succession(&state, &[report("ron", &everyone, 99)], Mutations::NONE).unwrap_err();
        assert!(refused.to_string().contains("controller recorded for partition 1"), "{refused}");
        // Hermione answers: she is appointed, though ron holds more.
        let reports = [report("ron", &everyone, 99), report("hermione", &everyone, 10)];
        let appoint = plan_succession(&state, &reports, Mutations::NONE).unwrap();
        assert!(matches!(appoint, Command::Appoint { ref leader, .. } if leader == "hermione"));
    }
}

#[test]
fn jobs_run_one_at_a_time_end_once_and_old_ones_are_forgotten() {
    let mut state = cluster();
    let record = |subject: &str| JobRecord {
        kind: JobKind::Transfer,
        subject: subject.into(),
        runner: "harry".into(),
        state: JobState::Done,
        progress: "started".into(),
        error: Some("ignored".into()),
        started_ms: 10,
        finished_ms: None,
        token: 7,
    };
    let id = state.next_job_id();
    assert_eq!(id, 1);
    state.apply(Command::StartJob { id, record: record("hermione") }).unwrap();
    assert_eq!(state.jobs[&1].state, JobState::Running, "a job starts running");
    assert_eq!(state.jobs[&1].error, None);
    assert_eq!(state.running_jobs_of("harry"), vec![1]);
    // The same start proposed again (its runner never learned that it committed) is the
    // same job; another start under that id is refused.
    let before = state.jobs.clone();
    state.apply(Command::StartJob { id, record: record("hermione") }).unwrap();
    assert_eq!(state.jobs, before, "a repeated start changes nothing");
    for other in [
        JobRecord { started_ms: 11, ..record("hermione") },
        JobRecord { token: 8, ..record("hermione") },
        JobRecord { token: 0, ..record("hermione") },
    ] {
        let other = state.apply(Command::StartJob { id, record: other });
        assert!(matches!(other, Err(Refusal::BadSettings { .. })), "{other:?}");
    }
    let busy = state.apply(Command::StartJob { id: 2, record: record("ron") });
    assert_eq!(busy, Err(Refusal::Busy { job: 1 }));
    // A join runs beside a transfer, one per member; a transfer waits for no join.
    let join = |subject: &str| JobRecord { kind: JobKind::Join, ..record(subject) };
    state.apply(Command::StartJob { id: 2, record: join("neville") }).unwrap();
    let twice = state.apply(Command::StartJob { id: 3, record: join("neville") });
    assert_eq!(twice, Err(Refusal::Busy { job: 2 }));
    state.apply(Command::StartJob { id: 3, record: join("ginny") }).unwrap();
    for id in [2, 3] {
        state.apply(Command::FinishJob { id, error: None, at_ms: 15 }).unwrap();
    }
    let taken = state.apply(Command::StartJob { id: 1, record: record("ron") });
    assert!(matches!(taken, Err(Refusal::BadSettings { .. })), "{taken:?}");
    state.apply(Command::AdvanceJob { id: 1, progress: "caught up".into() }).unwrap();
    let failed = Command::FinishJob { id: 1, error: Some("lost".into()), at_ms: 20 };
    state.apply(failed.clone()).unwrap();
    assert_eq!(state.jobs[&1].state, JobState::Failed);
    assert_eq!(state.jobs[&1].progress, "caught up");
    let ended = state.jobs.clone();
    state.apply(failed).unwrap();
    assert_eq!(state.jobs, ended, "the same end proposed again changes nothing");
    let otherwise = Command::FinishJob { id: 1, error: None, at_ms: 20 };
    assert!(state.apply(otherwise).is_err(), "a job ends once");
    let later = Command::FinishJob { id: 1, error: Some("lost".into()), at_ms: 21 };
    assert!(state.apply(later).is_err(), "a job ends once");
    for _ in 0..FINISHED_JOBS_KEPT + 3 {
        let id = state.next_job_id();
        state.apply(Command::StartJob { id, record: record("ron") }).unwrap();
        state.apply(Command::FinishJob { id, error: None, at_ms: 30 }).unwrap();
    }
    assert_eq!(state.jobs.len(), FINISHED_JOBS_KEPT);
    assert!(!state.jobs.contains_key(&1), "the oldest went first");
    assert_eq!(state.next_job_id(), FINISHED_JOBS_KEPT as u64 + 7);
}

#[test]
fn recorded_sets_are_taken_as_told_when_newer_even_skipping_versions() {
    let mut state = cluster();
    let epoch = state.leader_epoch;
    let record = |version: u64, set: &[&str]| Command::RecordInSync {
        partition: PartitionId(0),
        epoch,
        version,
        in_sync: names(set),
    };
    // cluster() left isr_epoch 1 after its AlterInSync; version 5 skips some: taken, though
    // it drops two members at once (each version between kept min_insync).
    state.apply(record(5, &["harry"])).unwrap();
    assert_eq!(state.partitions[0].in_sync, names(&["harry"]));
    assert_eq!(state.partitions[0].isr_epoch, 5);
    let stale = state.apply(record(4, &["harry", "ron"]));
    assert!(matches!(stale, Err(Refusal::StaleIsrEpoch { .. })), "{stale:?}");
    let learner = state.apply(record(6, &["harry", "neville"]));
    assert!(matches!(learner, Err(Refusal::BadInSyncSet { .. })), "{learner:?}");
    let leaderless = state.apply(record(6, &["ron", "harry"]));
    assert!(matches!(leaderless, Err(Refusal::BadInSyncSet { .. })), "{leaderless:?}");
    let old_epoch = Command::RecordInSync {
        partition: PartitionId(0),
        epoch: Epoch(epoch.0 + 1),
        version: 9,
        in_sync: names(&["harry"]),
    };
    assert!(matches!(state.apply(old_epoch), Err(Refusal::StaleLeaderEpoch { .. })));
    state.apply(record(6, &["harry", "hermione", "ron"])).unwrap();
    assert_eq!(state.partitions[0].in_sync, names(&["harry", "hermione", "ron"]));
    // The same version again (a retry, or the mirror came first) is taken, changing nothing;
    // the same version with other members is not.
    let version = state.metadata_version;
    assert_eq!(state.apply(record(6, &["harry", "hermione", "ron"])).unwrap(), vec![]);
    assert_eq!(state.metadata_version, version + 1);
    let other = state.apply(record(6, &["harry", "ron"]));
    assert!(matches!(other, Err(Refusal::StaleIsrEpoch { .. })), "{other:?}");
}
