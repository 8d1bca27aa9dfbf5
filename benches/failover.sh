#!/usr/bin/env bash
# Failover benchmark: 3 nodes with automatic failover on this machine (release build), a
# writer at pipeline depth 1; 20 kill -9 of the leader (time from the kill to the first
# acknowledged write on the new leader) and 20 planned transfers (longest pause between two
# acknowledged writes). Every acknowledged write is checked on the final leader.
#   benches/failover.sh [KILLS] [TRANSFERS]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
./scripts/s3-server.sh start >/dev/null
cargo build --release -p strata >/dev/null
export STRATA_BIN="$PWD/target/release/strata"
export STRATA_FAILOVER_KILLS="${1:-20}" STRATA_FAILOVER_TRANSFERS="${2:-20}"
cargo nextest run -p strata-tests --test failover --run-ignored only failover_benchmark \
    --no-capture 2>&1 | grep -E "runs, p50|lost|panicked|FAIL|PASS"
