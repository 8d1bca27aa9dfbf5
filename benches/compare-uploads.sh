#!/usr/bin/env bash
# What archiving to shared storage costs a node's writes: the same standalone node (FlushAtOnce,
# 16 MB segments so that they seal and upload during the run) without shared storage, and with
# uploads to a real S3 server (a Ceph RGW instance of its own, started here) and to a local
# directory. The client is `strata bench` (50 connections, 128-byte SETs, pipeline 16).
# Rounds alternate the setups; every round starts on empty data directories and an empty
# archive. The table shows medians of ops/s and p99, the node's CPU seconds, the S3 server's
# CPU seconds, the bytes uploaded during the test and the backlog left at its end.
#
# Usage: benches/compare-uploads.sh [--smoke]
#   --smoke           1 round of 3 seconds, for a quick check.
# Environment:
#   ROUNDS            rounds (default 3)
#   SECONDS_PER_TEST  seconds of load per test (default 8)
#   STRATA_BIN        Strata binary; default: cargo build --release -p strata
#   SHARDS            shard threads (default 1: the client, the node and S3 share two cores)
#   KEEP_WORK=1       keep the temporary directory for inspection
set -euo pipefail

readonly CLIENTS=50
readonly VALUE_BYTES=128
readonly KEYSPACE=1000000
readonly PIPELINE=16
# The benchmark's own S3 server, beside the tests' one.
export STRATA_S3_DIR=/var/tmp/strata-s3-bench STRATA_S3_PORT=7490 STRATA_S3_MON_PORT=6790
export STRATA_S3_MEMORY_BYTES=$((6 * 1024 * 1024 * 1024))
SHARDS=${SHARDS:-1}

log() { printf 'compare-uploads: %s\n' "$*" >&2; }
fail() { printf 'compare-uploads: error: %s\n' "$*" >&2; exit 1; }

SMOKE=0
for argument in "$@"; do
    case "$argument" in
        --smoke) SMOKE=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown argument: $argument (see --help)" ;;
    esac
done
if [ "$SMOKE" -eq 1 ]; then
    ROUNDS=1
    SECONDS_PER_TEST=${SECONDS_PER_TEST:-3}
fi
ROUNDS=${ROUNDS:-3}
SECONDS_PER_TEST=${SECONDS_PER_TEST:-8}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || fail "ROUNDS must be a positive integer"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/compare-uploads.XXXXXX")"
RESULTS="$WORK/results.tsv"
CLOCK_TICKS="$(getconf CLK_TCK)"
NODE_PID=""

stop_node() {
    if [ -n "$NODE_PID" ]; then
        kill "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
        NODE_PID=""
    fi
}

cleanup() {
    stop_node
    "$ROOT/scripts/s3-server.sh" stop >/dev/null 2>&1 || true
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in redis-cli python3 curl getconf; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (run scripts/setup.sh)"
done

ticks_of() {
    local total=0 pid fields
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        read -r -a fields <<<"$(sed 's/.*) //' "/proc/$pid/stat")"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

s3_pids() { pgrep -f -- "-c $STRATA_S3_DIR/ceph.conf" || true; }

storage_lines() {
    case "$1" in
        off) ;;
        dir) printf 'shared_dir = "%s/shared"\nupload_interval = 200\n' "$2" ;;
        s3)
            printf 'storage_type = "minio"\nupload_interval = 200\n[storage.object_storage]\n'
            printf 'url = "%s"\nbucket_name = "%s"\naccess_key = "%s"\nsecret_key = "%s"\n' \
                "$STRATA_S3_URL" "$STRATA_S3_BUCKET" "$STRATA_S3_ACCESS_KEY" \
                "$STRATA_S3_SECRET_KEY"
            ;;
    esac
}

start_node() {
    local setup="$1" directory="$2" port="$3"
    mkdir -p "$directory"
    cat >"$directory/strata.toml" <<EOF
[general]
shards = $SHARDS
[network]
server_address = "127.0.0.1"
client_port = $port
http_port = $(free_port)
peer_ip = "127.0.0.1"
peer_port = $(free_port)
[wal]
wal_flush = "FlushAtOnce"
segment_size = "16MB"
snapshot_size = "64MB"
[storage]
data_dir = "$directory/data"
$(storage_lines "$setup" "$directory")
EOF
    "$STRATA" node --config "$directory/strata.toml" >"$directory/strata.log" 2>&1 &
    NODE_PID=$!
    wait_ping "$port"
}

uploader_field() {
    local directory="$1" field="$2" http
    http="$(sed -n 's/^http_port = //p' "$directory/strata.toml")"
    curl -s "http://127.0.0.1:$http/admin/storage" \
        | python3 -c "import json,sys; print(json.load(sys.stdin).get('$field', 0))"
}

run_test() {
    local setup="$1" round="$2" directory="$WORK/$1-$2" port output node_before s3_before
    port="$(free_port)"
    if [ "$setup" = s3 ]; then
        "$ROOT/scripts/s3-server.sh" stop >/dev/null 2>&1 || true
        "$ROOT/scripts/s3-server.sh" start >/dev/null 2>&1 || fail "cannot start the S3 server"
    fi
    start_node "$setup" "$directory" "$port"
    output="$directory/bench.json"
    node_before="$(ticks_of "$NODE_PID")"
    # shellcheck disable=SC2046 # one argument per process id
    s3_before="$(ticks_of $(s3_pids))"
    timeout $((SECONDS_PER_TEST + 120)) "$STRATA" bench --port "$port" \
        --connections "$CLIENTS" --pipeline "$PIPELINE" --value-bytes "$VALUE_BYTES" \
        --keyspace "$KEYSPACE" --duration-seconds "$SECONDS_PER_TEST" --json --quiet \
        >"$output" || fail "strata bench failed against $setup"
    local node_ticks s3_ticks uploaded=0 backlog=0
    node_ticks=$(($(ticks_of "$NODE_PID") - node_before))
    # shellcheck disable=SC2046
    s3_ticks=$(($(ticks_of $(s3_pids)) - s3_before))
    if [ "$setup" != off ]; then
        uploaded="$(uploader_field "$directory" uploaded_bytes)"
        backlog="$(uploader_field "$directory" backlog_bytes)"
    fi
    [ "$setup" = s3 ] || s3_ticks=0
    python3 - "$output" "$setup" "$round" "$node_ticks" "$s3_ticks" "$CLOCK_TICKS" \
        "$uploaded" "$backlog" >>"$RESULTS" <<'EOF'
import json, sys
path, setup, round_, node, s3, hz, uploaded, backlog = sys.argv[1:]
report = json.load(open(path))
if report["errors"]:
    sys.exit(f"{setup}: {report['errors']} errors, first: {report['first_error']}")
print(f"{setup}\t{round_}\t{report['ops_per_second']:.0f}\t{report['latency_ms']['p99']:.3f}\t"
      f"{int(node) / int(hz):.2f}\t{int(s3) / int(hz):.2f}\t{int(uploaded) / 2**20:.0f}\t"
      f"{int(backlog) / 2**20:.0f}")
EOF
    log "round $round $setup: $(tail -n 1 "$RESULTS" | cut -f3) ops/s"
    stop_node
    rm -rf "$directory/data" "$directory/shared"
}

median() {
    awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$RESULTS" \
        | sort -g | awk -v format="$3" '{ v[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf format "\n", m }'
}

print_table() {
    printf '\n%d round(s) of %ss, %d connections, pipeline %d, %d-byte SETs, FlushAtOnce\n' \
        "$ROUNDS" "$SECONDS_PER_TEST" "$CLIENTS" "$PIPELINE" "$VALUE_BYTES"
    local format='%-9s %10s %9s %8s %9s %7s %12s %11s\n'
    # shellcheck disable=SC2059
    printf "$format" uploads ops/s vs_off p99_ms node_cpu s3_cpu uploaded_MiB backlog_MiB
    local setup off ops
    off="$(median off 3 %.0f)"
    for setup in off dir s3; do
        ops="$(median "$setup" 3 %.0f)"
        # shellcheck disable=SC2059
        printf "$format" "$setup" "$ops" \
            "$(awk -v o="$off" -v s="$ops" 'BEGIN { printf "%.3f", s / o }')" \
            "$(median "$setup" 4 %.3f)" "$(median "$setup" 5 %.2f)" "$(median "$setup" 6 %.2f)" \
            "$(median "$setup" 7 %.0f)" "$(median "$setup" 8 %.0f)"
    done
    printf '\nvs_off = ops/s with uploads / ops/s without; the target is >= 0.90.\n'
}

main() {
    STRATA="$(strata_binary)"
    eval "$("$ROOT/scripts/s3-server.sh" env)"
    : >"$RESULTS"
    local setups=(off dir s3) round index
    for round in $(seq 1 "$ROUNDS"); do
        for index in 0 1 2; do
            run_test "${setups[$(((index + round) % 3))]}" "$round"
        done
    done
    print_table
}

main
