//! Unit tests of the partition state machine: exact answers, records and wait LSNs.

use super::*;
use crate::command::{parse, Command};

const NOW: u64 = 1_000_000;

fn run(partition: &mut Partition, line: &str) -> Execution {
    let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    let Ok(Command::Key(command)) = parse(&words) else { panic!("not a key command: {line}") };
    partition.execute(command, NOW)
}

fn new_partition() -> Partition {
    Partition::new(PartitionId(0), PartitionLimits::default())
}

fn bulk(text: &str) -> Answer {
    Answer::Bulk(Some(text.as_bytes().to_vec()))
}

#[test]
fn writes_wait_for_their_own_lsn_and_reads_for_the_write_they_see() {
    let mut partition = new_partition();
    let set = run(&mut partition, "SET a 1");
    assert_eq!(set, Execution { answer: Answer::Ok, wait_lsn: Lsn(1) });
    let read = run(&mut partition, "GET a");
    assert_eq!(read, Execution { answer: bulk("1"), wait_lsn: Lsn(1) });
    partition.take_batch().unwrap();
    partition.commit(Lsn(1));
    run(&mut partition, "SET b 2");
    // A read of `a` no longer depends on anything uncommitted.
    assert_eq!(run(&mut partition, "GET a").wait_lsn, Lsn(1));
    assert!(run(&mut partition, "GET a").wait_lsn <= partition.commit_lsn());
    assert_eq!(run(&mut partition, "GET b").wait_lsn, Lsn(2));
}

#[test]
fn deletes_leave_tombstones_until_committed() {
    let mut partition = new_partition();
    run(&mut partition, "SET a 1");
    partition.take_batch();
    partition.commit(Lsn(1));
    assert_eq!(run(&mut partition, "DEL a b").answer, Answer::Integer(1));
    let read = run(&mut partition, "GET a");
    assert_eq!(read, Execution { answer: Answer::Bulk(None), wait_lsn: Lsn(2) });
    partition.take_batch();
    partition.commit(Lsn(2));
    assert_eq!(run(&mut partition, "EXISTS a").wait_lsn, Lsn::ZERO);
}

#[test]
fn batches_hold_the_effects_in_lsn_order() {
    let mut partition = new_partition();
    run(&mut partition, "INCR n");
    run(&mut partition, "INCRBY n 41");
    run(&mut partition, "EXPIRE n 10");
    run(&mut partition, "APPEND n x");
    let batch = partition.take_batch().unwrap();
    assert_eq!(batch.first_lsn, Lsn(1));
    assert_eq!(batch.last_lsn(), Lsn(4));
    assert_eq!(
        batch.records,
        vec![
            Record::Set { key: b"n".to_vec(), value: b"1".to_vec(), expire_at_ms: 0 },
            Record::Set { key: b"n".to_vec(), value: b"42".to_vec(), expire_at_ms: 0 },
            Record::Expire { key: b"n".to_vec(), expire_at_ms: NOW + 10_000 },
            Record::Set { key: b"n".to_vec(), value: b"42x".to_vec(), expire_at_ms: NOW + 10_000 },
        ]
    );
    assert!(partition.take_batch().is_none());
}

#[test]
fn redis_semantics_of_string_commands() {
    let mut partition = new_partition();
    assert_eq!(run(&mut partition, "SET k v NX").answer, Answer::Ok);
    assert_eq!(run(&mut partition, "SET k w NX").answer, Answer::Bulk(None));
    assert_eq!(run(&mut partition, "SET k w NX GET").answer, bulk("v"));
    assert_eq!(run(&mut partition, "SET k w XX GET").answer, bulk("v"));
    assert_eq!(run(&mut partition, "GETSET k z").answer, bulk("w"));
    assert_eq!(run(&mut partition, "SETNX k q").answer, Answer::Integer(0));
    assert_eq!(run(&mut partition, "STRLEN k").answer, Answer::Integer(1));
    assert_eq!(run(&mut partition, "INCR k").answer, Answer::Error(CommandError::not_integer()));
    assert_eq!(run(&mut partition, "MSET a 1 b 2").answer, Answer::Ok);
    assert_eq!(
        run(&mut partition, "MGET a nope b").answer,
        Answer::Bulks(vec![Some(b"1".to_vec()), None, Some(b"2".to_vec())])
    );
    assert_eq!(run(&mut partition, "DECRBY a 3").answer, Answer::Integer(-2));
    run(&mut partition, "SET big 9223372036854775807");
    assert_eq!(
        run(&mut partition, "INCR big").answer,
        Answer::Error(CommandError("ERR increment or decrement would overflow".into()))
    );
    assert_eq!(run(&mut partition, "DBSIZE").answer, Answer::Integer(4));
    assert_eq!(run(&mut partition, "FLUSHALL").answer, Answer::Ok);
    assert_eq!(run(&mut partition, "DBSIZE").answer, Answer::Integer(0));
}

#[test]
fn expiry_follows_redis() {
    let mut partition = new_partition();
    assert_eq!(run(&mut partition, "TTL k").answer, Answer::Integer(-2));
    assert_eq!(run(&mut partition, "EXPIRE k 10").answer, Answer::Integer(0));
    run(&mut partition, "SET k v");
    assert_eq!(run(&mut partition, "TTL k").answer, Answer::Integer(-1));
    assert_eq!(run(&mut partition, "EXPIRE k 10 XX").answer, Answer::Integer(0));
    assert_eq!(run(&mut partition, "EXPIRE k 10 NX").answer, Answer::Integer(1));
    assert_eq!(run(&mut partition, "EXPIRE k 5 GT").answer, Answer::Integer(0));
    assert_eq!(run(&mut partition, "EXPIRE k 20 GT").answer, Answer::Integer(1));
    assert_eq!(run(&mut partition, "PTTL k").answer, Answer::Integer(20_000));
    assert_eq!(run(&mut partition, "PERSIST k").answer, Answer::Integer(1));
    assert_eq!(run(&mut partition, "PERSIST k").answer, Answer::Integer(0));
    run(&mut partition, "SET k v PX 1500");
    assert_eq!(run(&mut partition, "TTL k").answer, Answer::Integer(2));
    assert_eq!(run(&mut partition, "EXPIRE k 0").answer, Answer::Integer(1));
    assert_eq!(run(&mut partition, "EXISTS k").answer, Answer::Integer(0));
    run(&mut partition, "SET e v PX 5");
    let words: Vec<&[u8]> = vec![b"GET", b"e"];
    let Ok(Command::Key(get)) = parse(&words) else { panic!() };
    assert_eq!(partition.execute(get, NOW + 5).answer, Answer::Bulk(None));
}

#[test]
fn failure_refuses_writes_but_serves_committed_reads() {
    let mut partition = new_partition();
    run(&mut partition, "SET a 1");
    partition.take_batch();
    partition.commit(Lsn(1));
    partition.fail("fdatasync: EIO".into());
    assert!(matches!(run(&mut partition, "SET a 2").answer, Answer::Error(_)));
    assert_eq!(run(&mut partition, "GET a").answer, bulk("1"));
    assert_eq!(partition.last_lsn(), Lsn(1));
}

#[test]
fn batches_are_bounded_in_bytes() {
    let limits = PartitionLimits {
        record_bytes_max: 200,
        batch_bytes_max: 1000,
        ..PartitionLimits::default()
    };
    let mut partition = Partition::new(PartitionId(0), limits);
    let value = "x".repeat(100);
    for index in 0..30 {
        run(&mut partition, &format!("SET k{index} {value}"));
    }
    let too_big = "y".repeat(300);
    assert!(matches!(run(&mut partition, &format!("SET k {too_big}")).answer, Answer::Error(_)));
    let mut taken = 0;
    while let Some(batch) = partition.take_batch() {
        assert_eq!(batch.first_lsn, Lsn(taken + 1));
        let bytes: usize = batch.records.iter().map(Record::size_estimate).sum();
        assert!(bytes <= 1000);
        taken += batch.records.len() as u64;
    }
    assert_eq!(taken, 30);
}

#[test]
fn expire_options_combine_as_in_redis() {
    let mut partition = new_partition();
    run(&mut partition, "SET k v");
    assert_eq!(run(&mut partition, "EXPIRE k 10 XX LT").answer, Answer::Integer(0));
    assert_eq!(run(&mut partition, "EXPIRE k 10 LT").answer, Answer::Integer(1));
    assert_eq!(run(&mut partition, "EXPIRE k 5 XX LT").answer, Answer::Integer(1));
    assert_eq!(run(&mut partition, "EXPIRE k 50 XX GT").answer, Answer::Integer(1));
    let error = |line: &str| {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        parse(&words).unwrap_err().0
    };
    assert_eq!(error("EXPIRE k 1 FOO"), "ERR Unsupported option FOO");
    assert_eq!(
        error("EXPIRE k 1 NX XX"),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        error("EXPIRE k 1 GT LT"),
        "ERR GT and LT options at the same time are not compatible"
    );
}

#[test]
fn set_with_an_absolute_expiry_in_the_past_deletes_the_key() {
    let mut partition = new_partition();
    run(&mut partition, "SET k v");
    assert_eq!(run(&mut partition, "SET k w PXAT 5").answer, Answer::Ok);
    assert_eq!(run(&mut partition, "EXISTS k").answer, Answer::Integer(0));
    assert_eq!(run(&mut partition, "SET n w EXAT 5").answer, Answer::Ok);
    assert_eq!(run(&mut partition, "EXISTS n").answer, Answer::Integer(0));
}

#[test]
fn status_counts_keys_without_waiting_and_names_a_failure() {
    let mut partition = new_partition();
    run(&mut partition, "SET a 1");
    run(&mut partition, "SET b 2");
    // DBSIZE waits for what it counts to commit; INFO's status must not, or it would hang
    // for as long as commits stall.
    assert_eq!(run(&mut partition, "DBSIZE").wait_lsn, Lsn(2));
    let status = partition.execute(KeyCommand::Status, NOW);
    let counts = Answer::Counts { keys: 2, expires: 0 };
    assert_eq!(status, Execution { answer: counts, wait_lsn: Lsn::ZERO });
    partition.fail("fdatasync: EIO".into());
    let failed = partition.execute(KeyCommand::Status, NOW).answer;
    let Answer::Error(error) = failed else { panic!("{failed:?}") };
    assert!(error.0.contains("WAL failure"), "{}", error.0);
}

#[test]
fn active_expiry_logs_a_delete_per_expired_key() {
    let mut partition = new_partition();
    run(&mut partition, "SET a 1 PX 100");
    run(&mut partition, "SET b 2 PX 50");
    run(&mut partition, "SET c 3");
    run(&mut partition, "SET d 4 PX 5000");
    partition.take_batch();
    partition.commit(Lsn(4));
    assert_eq!(partition.delete_expired(NOW + 49, 10), 0);
    assert_eq!(partition.delete_expired(NOW + 100, 1), 1);
    assert_eq!(partition.delete_expired(NOW + 100, 10), 1);
    let batch = partition.take_batch().unwrap();
    assert_eq!(batch.first_lsn, Lsn(5));
    let deleted = [Record::Delete { key: b"b".to_vec() }, Record::Delete { key: b"a".to_vec() }];
    assert_eq!(batch.records, deleted);
    assert_eq!(partition.keyspace().len(), 2);
    assert_eq!(partition.keyspace().expiring(), 1);
    // A partition whose log failed writes nothing, deletes included.
    partition.fail("fdatasync: EIO".into());
    assert_eq!(partition.delete_expired(NOW + 10_000, 10), 0);
}

#[test]
fn bit_writes_are_logged_as_the_whole_new_value() {
    let mut partition = new_partition();
    run(&mut partition, "SET k v PX 5000");
    assert_eq!(run(&mut partition, "SETBIT k 15 1").answer, Answer::Integer(0));
    // Setting a bit to what it is writes nothing; the answer waits for what it read.
    let unchanged = run(&mut partition, "SETBIT k 15 1");
    assert_eq!(unchanged, Execution { answer: Answer::Integer(1), wait_lsn: Lsn(2) });
    let field = run(&mut partition, "BITFIELD k OVERFLOW FAIL INCRBY u8 0 200 GET u4 #3");
    let integers = vec![Answer::Bulk(None), Answer::Integer(1)];
    assert_eq!(field.answer, Answer::Array(integers));
    run(&mut partition, "SET {t}a ab");
    assert_eq!(run(&mut partition, "BITOP NOT {t}d {t}a").answer, Answer::Integer(2));
    assert_eq!(run(&mut partition, "BITOP AND {t}d {t}x {t}y").answer, Answer::Integer(0));
    let batch = partition.take_batch().unwrap();
    let expire_at_ms = NOW + 5000;
    assert_eq!(
        batch.records[1..],
        [
            Record::Set { key: b"k".to_vec(), value: b"v\x01".to_vec(), expire_at_ms },
            Record::Set { key: b"{t}a".to_vec(), value: b"ab".to_vec(), expire_at_ms: 0 },
            Record::Set { key: b"{t}d".to_vec(), value: vec![!b'a', !b'b'], expire_at_ms: 0 },
            Record::Delete { key: b"{t}d".to_vec() },
        ]
    );
}

#[test]
fn bit_reads_answer_before_their_ranges_on_missing_keys() {
    let mut partition = new_partition();
    assert_eq!(run(&mut partition, "BITCOUNT k a b").answer, Answer::Integer(0));
    assert_eq!(run(&mut partition, "BITPOS k 0 a").answer, Answer::Integer(0));
    run(&mut partition, "SET k foobar");
    let not_integer = Answer::Error(CommandError::not_integer());
    assert_eq!(run(&mut partition, "BITCOUNT k a b").answer, not_integer);
    assert_eq!(run(&mut partition, "BITPOS k 1 2 -1 BIT").answer, Answer::Integer(2));
    let matches = run(&mut partition, "LCS k k IDX MINMATCHLEN 7").answer;
    let length = Answer::Integer(6);
    let expected = vec![bulk("matches"), Answer::Array(Vec::new()), bulk("len"), length];
    assert_eq!(matches, Answer::Array(expected));
}

#[test]
fn answers_stay_small_as_they_move_with_every_command() {
    // Every command's answer is moved through the shard's queues; a large variant would make
    // every move a call to memmove.
    assert!(std::mem::size_of::<Answer>() <= 32, "{}", std::mem::size_of::<Answer>());
}

#[test]
fn commands_stay_small_as_they_move_with_every_command() {
    assert!(std::mem::size_of::<KeyCommand>() <= 72, "{}", std::mem::size_of::<KeyCommand>());
}

/// What a partition gives out over a run: every answer, and every batch taken.
#[derive(Debug, Default, PartialEq)]
struct Outputs {
    answers: Vec<Answer>,
    batches: Vec<(Lsn, Vec<Record>)>,
    open_bytes: Vec<usize>,
}

/// Runs `steps` (a command line, or `take` to take a batch) against a partition with
/// `limits`, then takes what is left. (Active expiry is left out: the order in which it finds
/// keys follows the keyspace's random hasher, which differs between two partitions.)
fn outputs_of(limits: PartitionLimits, steps: &[String]) -> (Outputs, Partition) {
    let mut partition = Partition::new(PartitionId(0), limits);
    let mut outputs = Outputs::default();
    for step in steps {
        match step.as_str() {
            "take" => {
                if let Some(batch) = partition.take_batch() {
                    outputs.batches.push((batch.first_lsn, batch.records));
                }
            }
            line => outputs.answers.push(run(&mut partition, line).answer),
        }
        outputs.open_bytes.push(partition.open_bytes);
    }
    while let Some(batch) = partition.take_batch() {
        outputs.batches.push((batch.first_lsn, batch.records));
    }
    (outputs, partition)
}

#[test]
fn a_large_value_is_held_once_until_its_batch_is_taken() {
    let mut partition = new_partition();
    let value = "v".repeat(VALUE_IN_KEYSPACE_BYTES_MIN);
    run(&mut partition, &format!("SET big {value}"));
    run(&mut partition, "SET small 1");
    assert!(matches!(&partition.open[0].record, Record::Set { value, .. } if value.is_empty()));
    assert_eq!(partition.open[0].value_in_keyspace, value.len());
    assert!(matches!(&partition.open[1].record, Record::Set { value, .. } if value == b"1"));
    // Overwriting the key first gives the old value back to its record.
    run(&mut partition, "APPEND big w");
    assert!(matches!(&partition.open[0].record, Record::Set { value: held, .. }
        if held == value.as_bytes()));
    let batch = partition.take_batch().unwrap();
    let Record::Set { value: appended, .. } = &batch.records[2] else { panic!("not a SET") };
    assert_eq!(appended.len(), value.len() + 1);
    assert_eq!(run(&mut partition, "STRLEN big").answer, Answer::Integer(value.len() as i64 + 1));
}

proptest::proptest! {
    /// Leaving large values in the keyspace changes nothing a partition gives out: the same
    /// answers, the same records in the same batches, the same byte accounting, whatever
    /// overwrites, deletes, expiry changes, renames and flushes come between a write and its
    /// batch.
    #[test]
    fn values_left_in_the_keyspace_change_no_record(
        steps in proptest::collection::vec(
            (0usize..16, 0usize..4, 0usize..4, 0usize..10),
            1..60,
        ),
    ) {
        let keys = ["a", "b", "{a}c", "d"];
        let steps: Vec<String> = steps
            .into_iter()
            .map(|(kind, first, second, length)| {
                let (key, other) = (keys[first], keys[second]);
                let value: String = "xyz".chars().cycle().skip(first).take(length).collect();
                let value = if value.is_empty() { "0".to_string() } else { value };
                match kind {
                    0 | 1 => format!("SET {key} {value}"),
                    2 => format!("APPEND {key} {value}"),
                    3 => format!("DEL {key}"),
                    4 => format!("EXPIRE {key} 10"),
                    5 => format!("PERSIST {key}"),
                    6 => format!("GETSET {key} {value}"),
                    7 => format!("SETRANGE {key} {length} {value}"),
                    8 => format!("MSET {key} {value} {other} {value}{value}"),
                    9 => "RENAME a {a}c".to_string(),
                    10 => "COPY {a}c a REPLACE".to_string(),
                    11 => "FLUSHALL".to_string(),
                    12 => format!("SET {key} {value} PX 5"),
                    13 => format!("GETDEL {key}"),
                    14 => format!("INCR {key}"),
                    _ => "take".to_string(),
                }
            })
            .collect();
        let limits = |minimum| PartitionLimits {
            value_in_keyspace_bytes_min: minimum,
            ..PartitionLimits::default()
        };
        let (whole, left) = (limits(usize::MAX), limits(3));
        let (expected, whole) = outputs_of(whole, &steps);
        let (outputs, left) = outputs_of(left, &steps);
        proptest::prop_assert_eq!(outputs, expected);
        let entries = |partition: &Partition| {
            let mut entries: Vec<(Vec<u8>, Vec<u8>, u64)> = partition
                .keyspace()
                .iter()
                .map(|(key, value, expiry)| (key.to_vec(), value.to_vec(), expiry))
                .collect();
            entries.sort();
            entries
        };
        proptest::prop_assert_eq!(entries(&left), entries(&whole));
    }
}
