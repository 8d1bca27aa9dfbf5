#!/usr/bin/env bash
# Builds Strata (release) and runs `strata demo`: a local node on loopback with a temporary
# data directory, until Ctrl-C. Extra arguments go to `strata demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --quiet -p strata --bin strata
exec "${CARGO_TARGET_DIR:-$PWD/target}/release/strata" demo "$@"
