//! Random sequences of supported commands, sent to Strata and to the real `redis-server`: every
//! reply must be the same. Keys are few (so commands meet each other's effects) and share one
//! hash slot (so RENAME, COPY and MSETNX are served); expiry times lie far in the future, and
//! no reply depends on the clock. A failure names its seed: `STRATA_PROPERTY_SEED=<n>` replays
//! it.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use strata_tests::raw::RawConnection;
use strata_tests::redis_server::RedisServer;
use strata_tests::{NodeSettings, TestNode};

/// Commands per sequence.
const COMMANDS_PER_SEED: usize = 1500;

const KEYS: &[&str] = &["{p}a", "{p}b", "{p}c", "{p}d", "{p}e"];
const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "42",
    "007",
    "3.5",
    "-0.25",
    "1e3",
    "abc",
    "hello world",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    " 1",
    "1 ",
    "inf",
    "nan",
    "0x10",
];
const INTEGERS: &[&str] = &["0", "1", "-1", "5", "100", "-100", "9223372036854775807", "x", "1.5"];
const FLOATS: &[&str] = &["0", "1.5", "-2.25", "10", "1e2", "-0", "x", "inf", "5.0e-1"];
const OFFSETS: &[&str] = &["0", "1", "3", "-1", "-3", "10", "100", "x"];
/// Far enough in the future that no reply depends on when it is read.
const EXPIRY_SECONDS: &[&str] = &["100000", "200000", "0", "-5", "x"];

fn pick<'a>(rng: &mut StdRng, choices: &[&'a str]) -> &'a str {
    choices.choose(rng).expect("choices are not empty")
}

/// One random command, as words.
fn command(rng: &mut StdRng) -> Vec<String> {
    let key = pick(rng, KEYS).to_string();
    let other = pick(rng, KEYS).to_string();
    let value = pick(rng, VALUES).to_string();
    let words: Vec<String> = match rng.gen_range(0..36) {
        0 => set_command(rng, key, value),
        1 | 2 => vec!["GET".into(), key],
        3 => vec!["GETSET".into(), key, value],
        4 => vec!["SETNX".into(), key, value],
        5 => vec!["DEL".into(), key, other],
        6 => vec!["EXISTS".into(), key, other, pick(rng, KEYS).into()],
        7 => vec!["MSET".into(), key, value, other, pick(rng, VALUES).into()],
        8 => vec!["MGET".into(), key, other],
        9 => vec![pick(rng, &["INCR", "DECR"]).into(), key],
        10 => vec![pick(rng, &["INCRBY", "DECRBY"]).into(), key, pick(rng, INTEGERS).into()],
        11 => vec!["APPEND".into(), key, value],
        12 => vec!["STRLEN".into(), key],
        13 => vec!["GETRANGE".into(), key, pick(rng, OFFSETS).into(), pick(rng, OFFSETS).into()],
        14 => vec!["SETRANGE".into(), key, pick(rng, OFFSETS).into(), value],
        15 => vec!["GETDEL".into(), key],
        16 => getex_command(rng, key),
        17 => vec!["INCRBYFLOAT".into(), key, pick(rng, FLOATS).into()],
        18 => vec!["TYPE".into(), key],
        19 => vec!["TOUCH".into(), key, other],
        20 => vec![pick(rng, &["RENAME", "RENAMENX"]).into(), key, other],
        21 => {
            let mut words = vec!["COPY".into(), key, other];
            if rng.gen_bool(0.5) {
                words.push("REPLACE".into());
            }
            words
        }
        22 => vec!["MSETNX".into(), key, value, other, pick(rng, VALUES).into()],
        23 => expire_command(rng, key),
        24 => vec!["PERSIST".into(), key],
        25 => vec!["DBSIZE".into()],
        26 => vec!["SETEX".into(), key, pick(rng, EXPIRY_SECONDS).into(), value],
        27 => vec!["SUBSTR".into(), key, pick(rng, OFFSETS).into(), pick(rng, OFFSETS).into()],
        28 => vec!["PTTL".into(), key, "extra".into()],
        29 => vec![
            "SETBIT".into(),
            key,
            pick(rng, OFFSETS).into(),
            pick(rng, &["0", "1", "2"]).into(),
        ],
        30 => vec!["GETBIT".into(), key, pick(rng, OFFSETS).into()],
        31 => range_command(rng, "BITCOUNT", key),
        32 => {
            let mut words = vec!["BITPOS".into(), key, pick(rng, &["0", "1"]).into()];
            words.extend(range_command(rng, "BITPOS", String::new()).into_iter().skip(2));
            words
        }
        33 => {
            let operator = pick(rng, &["AND", "OR", "XOR", "NOT"]);
            vec!["BITOP".into(), operator.into(), key, other, pick(rng, KEYS).into()]
        }
        34 => vec![
            "BITFIELD".into(),
            key,
            pick(rng, &["GET", "SET", "INCRBY"]).into(),
            pick(rng, &["u8", "i5", "u1", "i64", "x"]).into(),
            pick(rng, OFFSETS).into(),
            pick(rng, INTEGERS).into(),
        ],
        35 => {
            let mut words = vec!["LCS".into(), key, other];
            words
                .extend(["LEN", "IDX", "WITHMATCHLEN"].choose(rng).map(|word| (*word).to_string()));
            words
        }
        _ => vec!["EXISTS".into(), key],
    };
    words
}

fn set_command(rng: &mut StdRng, key: String, value: String) -> Vec<String> {
    let mut words = vec!["SET".into(), key, value];
    for _ in 0..rng.gen_range(0..3) {
        match rng.gen_range(0..6) {
            0 => words.push("NX".into()),
            1 => words.push("XX".into()),
            2 => words.push("GET".into()),
            3 => words.push("KEEPTTL".into()),
            4 => words.extend(["EX".into(), pick(rng, EXPIRY_SECONDS).into()]),
            _ => words.push("BAD".into()),
        }
    }
    words
}

/// `name key [start end [BYTE|BIT]]`.
fn range_command(rng: &mut StdRng, name: &str, key: String) -> Vec<String> {
    let mut words = vec![name.to_string(), key];
    if rng.gen_bool(0.6) {
        words.extend([pick(rng, OFFSETS).into(), pick(rng, OFFSETS).into()]);
        if rng.gen_bool(0.5) {
            words.push(pick(rng, &["BYTE", "BIT", "bad"]).into());
        }
    }
    words
}

fn getex_command(rng: &mut StdRng, key: String) -> Vec<String> {
    let mut words = vec!["GETEX".into(), key];
    match rng.gen_range(0..3) {
        0 => words.push("PERSIST".into()),
        1 => words.extend(["EX".into(), pick(rng, EXPIRY_SECONDS).into()]),
        _ => {}
    }
    words
}

fn expire_command(rng: &mut StdRng, key: String) -> Vec<String> {
    let mut words = vec!["EXPIRE".into(), key, pick(rng, EXPIRY_SECONDS).into()];
    if rng.gen_bool(0.5) {
        words.push(pick(rng, &["NX", "XX", "GT", "LT", "BAD"]).into());
    }
    words
}

/// Runs one seed's sequence on both; the first difference, with the commands that led to it.
fn first_difference(
    seed: u64,
    theirs: &mut RawConnection,
    ours: &mut RawConnection,
) -> Option<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history: Vec<String> = Vec::new();
    for _ in 0..COMMANDS_PER_SEED {
        let words = command(&mut rng);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (expected, got) = (theirs.command_words(&words), ours.command_words(&words));
        history.push(words.join(" "));
        if expected != got {
            let recent = history[history.len().saturating_sub(12)..].join("\n  ");
            return Some(format!(
                "seed {seed}, command {}: redis {expected:?}, strata {got:?}\n  {recent}",
                history.len()
            ));
        }
    }
    None
}

#[test]
fn random_command_sequences_answer_as_redis_answers_them() {
    let seeds: Vec<u64> = match std::env::var("STRATA_PROPERTY_SEED") {
        Ok(seed) => vec![seed.parse().expect("STRATA_PROPERTY_SEED is a number")],
        Err(_) => vec![1, 2, 3, 4],
    };
    let redis = RedisServer::start();
    let node = TestNode::start(NodeSettings::default());
    let (mut theirs, mut ours) = (RawConnection::connect(redis.port), node.raw());
    for seed in seeds {
        for connection in [&mut theirs, &mut ours] {
            connection.command_words(&["FLUSHALL"]);
        }
        if let Some(difference) = first_difference(seed, &mut theirs, &mut ours) {
            panic!("{difference}");
        }
    }
}
