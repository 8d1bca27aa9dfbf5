#!/usr/bin/env bash
# The chaos harness (chaos/): a real cluster of `strata node` processes on loopback, client
# workloads recording every operation, a seeded nemesis (kill -9, SIGSTOP, partitions of the
# peer links, a full disk, clock steps, stale promotions) with an operator that promotes and
# re-points by hand, and a checker of the whole history. With `--failover automatic` the
# cluster's controller fails over instead of the operator (and the nemesis adds planned
# transfers and stale appointments).
#   scripts/chaos.sh --seconds 60 --seed 1 --out /tmp/chaos-1
#   scripts/chaos.sh --minutes 30 [--faults 300] [--nemesis kill,partition]
#   scripts/chaos.sh --seconds 60 --nemesis stale-promotion --mutation promote-out-of-sync
#   scripts/chaos.sh --failover automatic --minutes 10 --seed 3
#   scripts/chaos.sh --failover automatic --seconds 60 --nemesis stale-appointment \
#       --mutation promote-out-of-sync
# Writes history.jsonl, nemesis.jsonl, report.html and every node's files and log to --out.
# Exits non-zero unless the checker finds nothing; the last line is the verdict. The strata
# binary is the debug build with the `mutations` feature, so that --mutation can put a known
# bug back (a release build refuses to start with one).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p strata -p strata-chaos --features strata/mutations
target="${CARGO_TARGET_DIR:-target}"
export STRATA_BIN="${STRATA_BIN:-$PWD/$target/debug/strata}"
exec "$target/debug/chaos" "$@"
