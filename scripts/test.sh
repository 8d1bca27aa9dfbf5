#!/usr/bin/env bash
# The whole test suite: what .ci/run runs, and what a developer runs before pushing.
# Installs what the tests need (scripts/setup.sh), starts a real S3 server on loopback
# (scripts/s3-server.sh), then: format, lints, docs, a smoke run of
# each micro-benchmark, and every unit and multi-process test (last, so its summary closes
# the output).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "== S3 server for the archive tests (Ceph RGW on 127.0.0.1)"
./scripts/s3-server.sh start
eval "$(./scripts/s3-server.sh env)"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== shellcheck"
shellcheck scripts/*.sh benches/*.sh .ci/run

echo "== cargo deny (bans, licenses, sources; the advisory database cannot be fetched here)"
cargo deny --log-level error --all-features check bans licenses sources

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== rustdoc (broken links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

echo "== micro-benchmark smoke run"
cargo bench --quiet -p strata-benches -- --test

echo "== build the strata binary for the multi-process tests"
cargo build --quiet -p strata --bin strata --features mutations
export STRATA_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/strata"

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --failure-output final
else
  cargo test --workspace --no-fail-fast
fi
