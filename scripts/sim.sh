#!/usr/bin/env bash
# The deterministic replication simulator (sim/): many seeds, or one replayed exactly.
#   scripts/sim.sh --seeds 10000            # seeds 1..=10000; prints the first failing seed
#   scripts/sim.sh --seed 42 --trace        # replays seed 42, printing every step
#   scripts/sim.sh --seeds 300 --mutation stale-commit
#   scripts/sim.sh --seeds 5000 --automatic  # the controller replaces lost leaders (failover)
#   scripts/sim.sh --seed 42 --automatic --trace
# Exits non-zero when a seed breaks an invariant; the last line is the verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p strata-sim --bin sim
exec "${CARGO_TARGET_DIR:-target}/release/sim" "$@"
