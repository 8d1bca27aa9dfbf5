use super::*;

/// Both clocks at `milliseconds`.
fn at(milliseconds: u64) -> Now {
    Now { wall_ms: milliseconds, moment: Moment(milliseconds) }
}

const ROLES: [Role; 5] =
    [Role::Admin, Role::Standalone, Role::Leader, Role::Follower, Role::Learner];

#[test]
fn every_transition_follows_the_reference_table() {
    use Role::{Admin as A, Follower as F, Leader as L, Learner as R, Standalone as S};
    let expect = |from: Role, to: Role| -> Result<Transition, (u32, &str)> {
        if from == to {
            return Ok(Transition::Unchanged);
        }
        match (from, to) {
            (A, _) | (S, A) | (L, A | F | R) | (F, A | L) | (R, A) => Ok(Transition::Change),
            (S, _) => Err((8007, "Can't switch from standalone to cluster mode")),
            (L, S) => Err((8007, "Can't switch role from leader to standalone")),
            (F, R) => Err((7026, "Can't switch node role: from follower to learner")),
            (R, F) => Err((7026, "Can't switch node role: from learner to follower")),
            (R, L) => Err((7026, "Can't switch from learner to leader")),
            (F | R, S) => Err((8007, "Can't switch follower role to standalone")),
            _ => unreachable!("{from:?} -> {to:?}"),
        }
    };
    for from in ROLES {
        for to in ROLES {
            let actual = check_transition(from, to).map_err(|error| (error.code, error.message));
            let wanted = expect(from, to).map_err(|(code, text)| (code, text.to_string()));
            assert_eq!(actual, wanted, "{from:?} -> {to:?}");
        }
    }
}

#[test]
fn roles_parse_ignoring_case() {
    assert_eq!(Role::parse("LeAdEr"), Ok(Role::Leader));
    let error = Role::parse("Boss").unwrap_err();
    assert_eq!((error.code, error.message.as_str()), (8007, "Invalid node role boss"));
    assert!(Role::Follower.is_replica() && !Role::Leader.is_replica());
    assert!(Role::Leader.is_cluster() && !Role::Admin.is_cluster());
    assert_eq!(NodeStatus::LostConnection.name(), "lost connection");
    assert_eq!(NodeStatus::from_name("lost connection"), NodeStatus::LostConnection);
}

#[test]
fn names_are_checked_like_identifiers() {
    assert_eq!(validate_name(""), Err(AdminError::empty_name()));
    assert_eq!(validate_name("").unwrap_err().code, 3042);
    assert_eq!(validate_name(&"a".repeat(NAME_BYTES_LIMIT)).unwrap_err().code, 3046);
    let invalid = validate_name("1node").unwrap_err();
    assert_eq!((invalid.code, invalid.message.as_str()), (3005, "1node is a invalid column name"));
    assert_eq!(validate_name("no-dash").unwrap_err().code, 3005);
    assert!(validate_name("_Node_2").is_ok());
    assert_eq!(normalize_name("Harry"), "harry");
}

#[test]
fn addresses_are_dotted_quads_with_a_port() {
    assert_eq!(parse_address("0.0.0.0:23851").unwrap().port, 23851);
    assert_eq!(parse_address("127.0.0.1:1").unwrap().octets, [127, 0, 0, 1]);
    assert_eq!(parse_address("10.0.0.2:80").unwrap().to_string(), "10.0.0.2:80");
    for bad in [
        "256.0.0.1:80",
        "1.2.3.4:65536",
        "1.2.3.4",
        "1.2.3:80",
        "a.b.c.d:80",
        "1.2.3.4:",
        "1.2.3.4:123456",
        "localhost:80",
        "1.2.3.4:80 ",
    ] {
        let error = parse_address(bad).unwrap_err();
        assert_eq!((error.code, error.message), (7016, format!("Invalid server address: {bad}")));
    }
}

fn leader() -> Membership {
    Membership::new("boss".into(), "127.0.0.1:100".into(), FOLLOWERS_MAX, 2)
}

#[test]
fn registration_checks_in_the_reference_order() {
    let mut table = leader();
    assert_eq!(
        table.register("boss", Role::Follower, "127.0.0.1:100", at(0)).unwrap_err().code,
        7020
    );
    let same = table.register("x", Role::Follower, "127.0.0.1:100", at(0)).unwrap_err();
    assert_eq!(
        same.message,
        "Invalid server address: Follower or learner peer server address 127.0.0.1: 100 \
         are same as leader"
    );
    assert_eq!(table.register("x", Role::Leader, "127.0.0.1:1", at(0)).unwrap_err().code, 8007);
    table.register("f1", Role::Follower, "127.0.0.1:1", at(0)).unwrap();
    let duplicate = table.register("f1", Role::Follower, "127.0.0.1:9", at(0)).unwrap_err();
    assert_eq!((duplicate.code, duplicate.message.as_str()), (7020, "Duplicate node: f1"));
}

#[test]
fn four_followers_fit_and_the_fifth_is_refused() {
    let mut table = leader();
    for index in 0..4 {
        table
            .register(
                &format!("f{index}"),
                Role::Follower,
                &format!("127.0.0.1:{}", index + 1),
                at(0),
            )
            .unwrap();
    }
    let fifth = table.register("f4", Role::Follower, "127.0.0.1:5", at(0)).unwrap_err();
    assert_eq!((fifth.code, fifth.message.as_str()), (7027, "Too many followers, limit: 4"));
    table.register("l0", Role::Learner, "127.0.0.1:6", at(0)).unwrap();
    table.register("l1", Role::Learner, "127.0.0.1:7", at(0)).unwrap();
    assert_eq!(table.register("l2", Role::Learner, "127.0.0.1:8", at(0)).unwrap_err().code, 7028);
    assert_eq!(table.followers().len(), 4);
}

#[test]
fn heartbeats_count_time_out_and_bring_members_back() {
    let mut table = leader();
    table.register("f", Role::Follower, "127.0.0.1:1", at(1_000)).unwrap();
    table.register("l", Role::Learner, "127.0.0.1:2", at(1_000)).unwrap();
    assert_eq!(
        table.heartbeat("f", "127.0.0.1:1", at(2_000)),
        Ok(HeartbeatOutcome { returned: false })
    );
    assert_eq!(table.get("f").unwrap().heartbeats, 1);
    assert_eq!(table.heartbeat("nobody", "127.0.0.1:1", at(2_000)).unwrap_err().code, 7025);
    assert_eq!(table.heartbeat("f", "127.0.0.1:9", at(2_000)).unwrap_err().code, 8009);
    // At 5 500 ms: "l" was silent 4 500 ms, "f" 3 500 ms; the timeout is 4 000 ms.
    assert_eq!(table.expire(at(5_500), 4_000, Mutations::NONE), vec!["l".to_string()]);
    assert_eq!(table.get("l").unwrap().status, NodeStatus::Timeout);
    assert_eq!(table.get("f").unwrap().status, NodeStatus::Alive);
    assert!(
        table.expire(at(5_500), 4_000, Mutations::NONE).is_empty(),
        "a timed-out member is reported once"
    );
    assert_eq!(
        table.heartbeat("l", "127.0.0.1:2", at(6_000)),
        Ok(HeartbeatOutcome { returned: true })
    );
    assert_eq!(table.get("l").unwrap().status, NodeStatus::Alive);
}

#[test]
fn a_member_that_came_back_registers_again() {
    let mut table = leader();
    table.register("f", Role::Follower, "127.0.0.1:1", at(0)).unwrap();
    table.mark("f", NodeStatus::Timeout);
    table.register("f", Role::Follower, "127.0.0.1:1", at(10)).unwrap();
    let member = table.get("f").unwrap();
    assert_eq!(
        (member.status, member.heartbeats, member.last_update_ms),
        (NodeStatus::Alive, 0, 10)
    );
    // Alive and from the same address: the node restarted before it timed out.
    table.register("f", Role::Follower, "127.0.0.1:1", at(20)).unwrap();
    assert_eq!(table.get("f").unwrap().last_update_ms, 20);
    assert_eq!(table.members().count(), 1);
    assert_eq!(table.remove("f").unwrap().name, "f");
    assert_eq!(table.remove("f").unwrap_err().code, 7019);
}

#[test]
fn expiry_follows_the_monotonic_clock_whatever_the_wall_clock_does() {
    let mut table = leader();
    table.register("f", Role::Follower, "127.0.0.1:1", at(1_000)).unwrap();
    // The wall clock jumps an hour ahead: nothing expires.
    let jumped = Now { wall_ms: 3_601_000, moment: Moment(1_500) };
    assert!(table.expire(jumped, 4_000, Mutations::NONE).is_empty());
    // The wall clock goes back an hour: silence still expires on time.
    for moment in [2_000, 3_000, 4_000, 5_000] {
        let back = Now { wall_ms: 0, moment: Moment(moment) };
        assert!(table.expire(back, 4_000, Mutations::NONE).is_empty());
    }
    let late = Now { wall_ms: 0, moment: Moment(5_001) };
    assert_eq!(table.expire(late, 4_000, Mutations::NONE), vec!["f".to_string()]);
}

#[test]
fn a_leader_that_stood_still_does_not_count_it_as_its_members_silence() {
    let mut table = leader();
    table.register("f", Role::Follower, "127.0.0.1:1", at(1_000)).unwrap();
    let check = |moment| Now { wall_ms: moment, moment: Moment(moment) };
    assert!(table.expire(check(1_200), 2_000, Mutations::NONE).is_empty());
    // Paused for 2.7 s: the follower's heartbeats sat unread; it gets a whole timeout again.
    assert!(table.expire(check(3_900), 2_000, Mutations::NONE).is_empty());
    assert_eq!(table.get("f").unwrap().status, NodeStatus::Alive);
    for moment in (4_100..=5_900).step_by(200) {
        assert!(table.expire(check(moment), 2_000, Mutations::NONE).is_empty(), "{moment}");
    }
    // Silent for the timeout on a clock that ran: it expires.
    assert_eq!(table.expire(check(6_000), 2_000, Mutations::NONE), vec!["f".to_string()]);
}
