#!/usr/bin/env bash
# The chaos harness (chaos/): a real cluster of `strata node` processes on loopback, client
# workloads recording every operation, a seeded nemesis (kill -9, SIGSTOP) with an operator that
# promotes and re-points by hand, and a checker of the whole history.
#   scripts/chaos.sh --seconds 60 --seed 1 --out /tmp/chaos-1
#   scripts/chaos.sh --minutes 30 [--faults 300]
# Writes history.jsonl, nemesis.jsonl and every node's files and log to --out. Exits non-zero
# unless the checker finds nothing; the last line is the verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p strata -p strata-chaos
target="${CARGO_TARGET_DIR:-target}"
export STRATA_BIN="${STRATA_BIN:-$PWD/$target/debug/strata}"
exec "$target/debug/chaos" "$@"
