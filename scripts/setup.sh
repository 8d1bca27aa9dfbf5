#!/usr/bin/env bash
# Installs what Strata's tests and benchmarks need on a fresh Debian machine.
#
# Idempotent: every step checks first and does nothing when its tool is already there.
# Needs root for apt-get; uses sudo when run as another user and sudo exists.
# Leaves no Redis service running: tests and benchmarks start their own redis-server
# on a free port, and a packaged one on 6379 would only get in the way.
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }
fail() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/packages.sh
. "$(dirname "${BASH_SOURCE[0]}")/packages.sh"

# Debian's packages enable and start their services: redis-server on 6379, prometheus on 9090.
# Stop one and keep it from coming back at boot. systemctl may be missing, or present without
# systemd running (containers).
disable_service() {
    local service="$1"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl stop "$service" >/dev/null 2>&1 || true
        as_root systemctl disable "$service" >/dev/null 2>&1 || true
    else
        if [ -x "/etc/init.d/$service" ]; then
            as_root "/etc/init.d/$service" stop >/dev/null 2>&1 || true
        fi
        if command -v systemctl >/dev/null 2>&1; then
            # Works offline: only removes the unit's symlinks.
            as_root systemctl disable "$service" >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            as_root update-rc.d "$service" disable >/dev/null 2>&1 || true
        fi
    fi
}

disable_redis_service() {
    disable_service redis-server
    stop_packaged_redis
}

# Catches a packaged server started some other way: it runs as user redis, or from the
# packaged config file. Servers started by tests (as the current user, with --port) are spared.
stop_packaged_redis() {
    local pid_file=/run/redis/redis-server.pid
    if [ -s "$pid_file" ]; then
        local pid
        pid="$(cat "$pid_file")"
        if [ -d "/proc/$pid" ]; then
            log "stopping the packaged redis-server (pid $pid)"
            as_root kill "$pid" || true
        fi
    fi
}

ensure_rust() {
    if command -v cargo >/dev/null 2>&1; then
        log "rust present: $(cargo --version)"
        return 0
    fi
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        fail "cargo is in ~/.cargo/bin but not on PATH; run: . \"\$HOME/.cargo/env\""
    fi
    fail "no Rust toolchain: install rustup (https://rustup.rs) with the stable toolchain," \
        "then run this script again"
}

ensure_nextest() {
    if cargo nextest --version >/dev/null 2>&1; then
        log "cargo-nextest present"
        return 0
    fi
    log "installing cargo-nextest (this compiles it, a few minutes)"
    cargo install --locked --quiet cargo-nextest
}

# A cargo subcommand installed from crates.io when missing: $1 the crate, $2 what it is for.
ensure_cargo_tool() {
    local crate="$1" purpose="$2" command="${1#cargo-}"
    if cargo "$command" --version >/dev/null 2>&1; then
        log "$crate present"
        return 0
    fi
    log "installing $crate for $purpose (this compiles it, a few minutes)"
    cargo install --locked --quiet "$crate"
}

main() {
    # python3-redis: redis-py, for the test that drives a node with it (Debian's python3).
    # faketime: libfaketime, which steps a node's wall clock in the replication safety tests
    # and the chaos harness. nftables: nft, with which the chaos harness isolates a node.
    # prometheus: promtool, which checks the text of GET /metrics (Debian ships it only in the
    # server's package, about 19 MB; the server's service is disabled, only promtool is used).
    # The shellcheck package: the test command checks the project's shell scripts with it.
    # chromium: the headless browser the admin console's test loads the page in.
    install_packages redis-server redis-tools python3-redis build-essential pkg-config faketime \
        nftables prometheus shellcheck chromium
    disable_redis_service
    disable_service prometheus
    command -v redis-server >/dev/null 2>&1 || fail "redis-server is not on PATH after install"
    command -v redis-benchmark >/dev/null 2>&1 \
        || fail "redis-benchmark is not on PATH after install"
    dpkg-query -L libfaketime 2>/dev/null | grep '/libfaketime\.so\.1$' >/dev/null \
        || fail "libfaketime.so.1 is not installed after install"
    command -v nft >/dev/null 2>&1 || fail "nft is not on PATH after install"
    command -v promtool >/dev/null 2>&1 || fail "promtool is not on PATH after install"
    command -v chromium >/dev/null 2>&1 || fail "chromium is not on PATH after install"
    ensure_rust
    ensure_nextest
    ensure_cargo_tool cargo-deb "the Debian package and its test"
    ensure_cargo_tool cargo-deny "the dependency check (bans, licenses, sources)"
    command -v shellcheck >/dev/null 2>&1 || fail "shellcheck is not on PATH after install"
    log "done"
}

main "$@"
