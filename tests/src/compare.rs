//! Comparing Strata with the real `redis-server`: the same commands sent to both, on fresh
//! keys, and every reply compared whole (values, types and error texts). Each case is a short
//! sequence, so a write's effect is compared through the reads that follow it.

use crate::raw::RawConnection;
use crate::redis_server::RedisServer;
use crate::{NodeSettings, TestNode};

/// Sends every command of every case to both servers; answers the differences found.
pub fn differences(cases: &[&[&[&str]]]) -> Vec<String> {
    differences_with(&[], cases)
}

/// [`differences`] against a `redis-server` started with `options`.
pub fn differences_with(options: &[&str], cases: &[&[&[&str]]]) -> Vec<String> {
    let redis = RedisServer::start_with(options);
    let node = TestNode::start(NodeSettings::default());
    let mut theirs = RawConnection::connect(redis.port);
    let mut ours = node.raw();
    let mut found = Vec::new();
    for (number, case) in cases.iter().enumerate() {
        // Each case on keys of its own: `{k}` becomes `k:<case number>`.
        let key = format!("k:{number}");
        for command in *case {
            let words: Vec<String> = command.iter().map(|word| word.replace("{k}", &key)).collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let (expected, got) = (theirs.command_words(&words), ours.command_words(&words));
            if expected != got {
                found.push(format!("{words:?}: redis {expected:?}, strata {got:?}"));
            }
        }
    }
    found
}

pub fn assert_same(cases: &[&[&[&str]]]) {
    let found = differences(cases);
    assert!(found.is_empty(), "{} differences:\n{}", found.len(), found.join("\n"));
}

/// [`assert_same`] for cases built at run time.
pub fn assert_same_owned(cases: &[Vec<Vec<String>>]) {
    let words: Vec<Vec<Vec<&str>>> = cases
        .iter()
        .map(|case| {
            case.iter().map(|command| command.iter().map(String::as_str).collect()).collect()
        })
        .collect();
    let commands: Vec<Vec<&[&str]>> =
        words.iter().map(|case| case.iter().map(Vec::as_slice).collect()).collect();
    let all: Vec<&[&[&str]]> = commands.iter().map(Vec::as_slice).collect();
    assert_same(&all);
}
