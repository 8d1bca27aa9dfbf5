//! Strata's benchmarks.
//!
//! [`load`] is the RESP load generator behind `strata bench`; it drives any RESP server (Strata
//! or Redis) with pipelined `SET`/`GET` traffic and reports throughput and latency percentiles.
//! The Criterion micro-benchmarks live in `benches/` beside this crate.

pub mod load;
