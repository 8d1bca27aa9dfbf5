//! Crash tests: writers run against a node in FlushAtOnce mode, the node is killed with SIGKILL
//! at a random moment, restarted on the same data directory, and every acknowledged write must
//! be there. Each writer has one request in flight, so beyond what was acknowledged at most its
//! next SET (and the INCR after the last acknowledged one) may have landed.
//!
//! The kill delay comes from a seeded generator; the seed is printed and `STRATA_TEST_SEED`
//! replays it.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_tests::wal_files::{file_lsn, segment_files, snapshot_files};
use strata_tests::{info_field, try_connect, NodeSettings, TestNode};

const WRITERS: usize = 8;
/// Bounds of one writer in one round: iterations and time.
const ITERATIONS_MAX: u64 = 100_000;
const WRITE_TIME_MAX: Duration = Duration::from_secs(20);
const MGET_CHUNK: u64 = 500;

/// What one writer has been told (or, after a restart, has seen) is durable.
#[derive(Clone, Debug)]
struct Writer {
    id: usize,
    /// Every `w{id}:{seq}` with seq below this was acknowledged; none at or above was.
    next_seq: u64,
    /// The last value an INCR of `counter:{id}` answered (0: none yet).
    counter: i64,
}

impl Writer {
    fn new(id: usize) -> Writer {
        Writer { id, next_seq: 0, counter: 0 }
    }

    fn key(&self, seq: u64) -> String {
        format!("w{}:{seq}", self.id)
    }

    fn counter_key(&self) -> String {
        format!("counter:{}", self.id)
    }
}

/// How a writer's round ended.
struct Outcome {
    writer: Writer,
    iterations: u64,
    error: Option<redis::RedisError>,
}

/// SET then INCR in a loop, one request in flight, until an error or a bound.
fn write_until_failure(port: u16, mut writer: Writer) -> Outcome {
    let started = Instant::now();
    let mut connection = match try_connect(port) {
        Ok(connection) => connection,
        Err(error) => return Outcome { writer, iterations: 0, error: Some(error) },
    };
    let mut iterations = 0;
    while iterations < ITERATIONS_MAX && started.elapsed() < WRITE_TIME_MAX {
        let seq = writer.next_seq;
        let set = redis::cmd("SET").arg(writer.key(seq)).arg(seq).query::<()>(&mut connection);
        if let Err(error) = set {
            return Outcome { writer, iterations, error: Some(error) };
        }
        writer.next_seq = seq + 1;
        match redis::cmd("INCR").arg(writer.counter_key()).query::<i64>(&mut connection) {
            Ok(value) => writer.counter = value,
            Err(error) => return Outcome { writer, iterations, error: Some(error) },
        }
        iterations += 1;
    }
    Outcome { writer, iterations, error: None }
}

/// Runs the writers, kills the node after `delay`, and returns what each writer saw
/// acknowledged.
fn write_and_kill(node: &mut TestNode, writers: Vec<Writer>, delay: Duration) -> Vec<Writer> {
    let port = node.port;
    let handles: Vec<_> = writers
        .into_iter()
        .map(|writer| thread::spawn(move || write_until_failure(port, writer)))
        .collect();
    thread::sleep(delay);
    node.kill();
    let mut writers = Vec::new();
    let mut total = 0;
    for handle in handles {
        let outcome = handle.join().expect("writer thread");
        if let Some(error) = &outcome.error {
            // Only the kill may stop a writer: a reply from the server is a failure.
            assert!(
                error.code().is_none(),
                "writer {} got a server error: {error}",
                outcome.writer.id
            );
        }
        total += outcome.iterations;
        writers.push(outcome.writer);
    }
    println!("killed after {delay:?}: {total} acknowledged iterations");
    writers
}

/// Checks every writer's keys after a restart and adopts what landed beyond the
/// acknowledgements. Returns the number of keys the writers own.
fn verify_writers(connection: &mut redis::Connection, writers: &mut [Writer]) -> u64 {
    let mut keys = 0;
    for writer in writers.iter_mut() {
        let acknowledged = writer.next_seq;
        let found = read_sequence(connection, writer, acknowledged + 2);
        for (seq, value) in found.iter().enumerate().take(acknowledged as usize) {
            assert_eq!(
                value.as_deref(),
                Some(seq.to_string().as_str()),
                "{} lost",
                writer.key(seq as u64)
            );
        }
        match &found[acknowledged as usize] {
            None => {}
            Some(value) => {
                assert_eq!(*value, acknowledged.to_string(), "{}", writer.key(acknowledged));
                writer.next_seq += 1;
            }
        }
        let beyond = &found[acknowledged as usize + 1];
        assert_eq!(
            *beyond,
            None,
            "{} exists: two writes beyond the acknowledged",
            writer.key(acknowledged + 1)
        );

        let counter: Option<i64> =
            redis::cmd("GET").arg(writer.counter_key()).query(connection).unwrap();
        let counter = counter.unwrap_or(0);
        assert!(
            counter == writer.counter || counter == writer.counter + 1,
            "{} is {counter}, acknowledged {}",
            writer.counter_key(),
            writer.counter
        );
        writer.counter = counter;
        keys += writer.next_seq + u64::from(counter > 0);
    }
    keys
}

/// The values of `w{id}:0` up to (not including) `end`, read with MGET in chunks.
fn read_sequence(
    connection: &mut redis::Connection,
    writer: &Writer,
    end: u64,
) -> Vec<Option<String>> {
    let mut values = Vec::with_capacity(end as usize);
    let mut start = 0;
    while start < end {
        let stop = (start + MGET_CHUNK).min(end);
        let mut mget = redis::cmd("MGET");
        for seq in start..stop {
            mget.arg(writer.key(seq));
        }
        let chunk: Vec<Option<String>> = mget.query(connection).expect("MGET after restart");
        values.extend(chunk);
        start = stop;
    }
    values
}

fn dbsize(connection: &mut redis::Connection) -> u64 {
    redis::cmd("DBSIZE").query(connection).expect("DBSIZE")
}

#[test]
fn acknowledged_writes_survive_three_kills() {
    let seed = strata_tests::test_seed("acknowledged_writes_survive_three_kills");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut node = TestNode::start(NodeSettings {
        shards: 2,
        wal_flush: "FlushAtOnce",
        ..NodeSettings::default()
    });
    let mut writers: Vec<Writer> = (0..WRITERS).map(Writer::new).collect();
    let mut acknowledged_total = 0;
    for round in 0..3 {
        let delay = Duration::from_millis(rng.gen_range(200..=1500));
        writers = write_and_kill(&mut node, writers, delay);
        acknowledged_total = writers.iter().map(|writer| writer.next_seq).sum::<u64>();
        node.restart();
        let mut connection = node.client();
        let keys = verify_writers(&mut connection, &mut writers);
        assert_eq!(dbsize(&mut connection), keys, "round {round}: keys nobody wrote");
    }
    assert!(acknowledged_total > 0, "no write was acknowledged in three rounds:\n{}", node.log());
}

/// Keys of the load phase: `load:{thread}:{n}` with a 100-byte value.
fn load_key(thread: usize, n: u64) -> String {
    format!("load:{thread}:{n}")
}

fn load_value(n: u64) -> String {
    format!("{n:0>100}")
}

const LOAD_THREADS: usize = 4;
const LOAD_PER_THREAD: u64 = 7_500;
const LOAD_PIPELINE: u64 = 100;

/// Writes 30k small keys in pipelines; every one is acknowledged before this returns.
fn load(node: &TestNode) {
    let port = node.port;
    let handles: Vec<_> = (0..LOAD_THREADS)
        .map(|thread| {
            thread::spawn(move || {
                let mut connection = strata_tests::connect(port);
                for start in (0..LOAD_PER_THREAD).step_by(LOAD_PIPELINE as usize) {
                    let mut pipe = redis::pipe();
                    for n in start..(start + LOAD_PIPELINE).min(LOAD_PER_THREAD) {
                        pipe.cmd("SET").arg(load_key(thread, n)).arg(load_value(n)).ignore();
                    }
                    pipe.query::<()>(&mut connection).expect("load pipeline");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("load thread");
    }
}

fn verify_load(connection: &mut redis::Connection) {
    for thread in 0..LOAD_THREADS {
        for start in (0..LOAD_PER_THREAD).step_by(MGET_CHUNK as usize) {
            let stop = (start + MGET_CHUNK).min(LOAD_PER_THREAD);
            let mut mget = redis::cmd("MGET");
            for n in start..stop {
                mget.arg(load_key(thread, n));
            }
            let values: Vec<Option<String>> = mget.query(connection).expect("MGET");
            for (n, value) in (start..stop).zip(values) {
                assert_eq!(value, Some(load_value(n)), "{} lost", load_key(thread, n));
            }
        }
    }
}

/// For each partition: (newest snapshot LSN, first LSN of the oldest segment, snapshots).
fn partition_files(node: &TestNode, partitions: u32) -> Vec<(Option<u64>, u64, usize)> {
    (0..partitions)
        .map(|partition| {
            let directory = node.partition_dir(partition);
            let snapshots = snapshot_files(&directory);
            let segments = segment_files(&directory);
            assert!(!segments.is_empty(), "{} holds no segment", directory.display());
            let newest = snapshots.last().map(|path| file_lsn(path));
            (newest, file_lsn(&segments[0]), snapshots.len())
        })
        .collect()
}

fn temporary_files(directory: &Path) -> Vec<String> {
    std::fs::read_dir(directory)
        .expect("list partition directory")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".tmp") && !name.starts_with("spare-"))
        .collect()
}

#[test]
fn acknowledged_writes_survive_a_kill_after_snapshots() {
    let seed = strata_tests::test_seed("acknowledged_writes_survive_a_kill_after_snapshots");
    let mut rng = StdRng::seed_from_u64(seed);
    let settings =
        NodeSettings { segment_size: "64KB", snapshot_size: "256KB", ..NodeSettings::default() };
    let partitions = settings.partitions;
    let mut node = TestNode::start(settings);
    load(&node);
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut node.client()).unwrap();
    let snapshots: u64 =
        info_field(&info, "snapshots_written").expect("snapshots_written in INFO").parse().unwrap();
    assert!(snapshots > 0, "no snapshot after 30k writes:\n{info}");

    // Kill while writers run, possibly in the middle of a snapshot or a roll.
    let writers: Vec<Writer> = (0..4).map(Writer::new).collect();
    let delay = Duration::from_millis(rng.gen_range(200..=1500));
    let mut writers = write_and_kill(&mut node, writers, delay);

    let files = partition_files(&node, partitions);
    println!("per partition (newest snapshot, oldest segment, snapshots): {files:?}");
    assert!(
        files.iter().any(|(snapshot, _, _)| snapshot.is_some()),
        "no snapshot file in any partition"
    );
    assert!(
        files.iter().any(|&(_, oldest, _)| oldest > 1),
        "no segment was ever deleted: {files:?}"
    );
    for (partition, &(snapshot, oldest, _)) in files.iter().enumerate() {
        if let Some(lsn) = snapshot {
            assert!(oldest <= lsn + 1, "p{partition}: the segment after snapshot {lsn} is gone");
        }
    }

    node.restart();
    let mut connection = node.client();
    verify_load(&mut connection);
    let writer_keys = verify_writers(&mut connection, &mut writers);
    let loaded = LOAD_THREADS as u64 * LOAD_PER_THREAD;
    assert_eq!(dbsize(&mut connection), loaded + writer_keys);
    assert!(
        node.log().contains("snapshot"),
        "the node log never mentions a snapshot:\n{}",
        node.log()
    );
    for (partition, &(_, _, count)) in partition_files(&node, partitions).iter().enumerate() {
        assert!(count <= 1, "p{partition} keeps {count} snapshots after recovery");
        let leftovers = temporary_files(&node.partition_dir(partition as u32));
        assert!(leftovers.is_empty(), "p{partition} keeps {leftovers:?} after recovery");
    }
}
