//! Strata's benchmarks.
//!
//! [`load`] is the RESP load generator behind `strata bench`; it drives any RESP server (Strata
//! or Redis) with pipelined `SET`/`GET` traffic and reports throughput and latency percentiles.
//! The Criterion micro-benchmarks live in `benches/` beside this crate.

pub mod load;

use strata_core::record::Record;

/// `count` records setting `key:<n>` to `value_bytes` bytes: the batch the micro-benchmarks
/// encode and append.
#[must_use]
pub fn set_records(count: usize, value_bytes: usize) -> Vec<Record> {
    (0..count)
        .map(|index| Record::Set {
            key: format!("key:{index}").into_bytes(),
            value: vec![b'x'; value_bytes],
            expire_at_ms: 0,
        })
        .collect()
}
