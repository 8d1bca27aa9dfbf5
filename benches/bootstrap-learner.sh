#!/usr/bin/env bash
# How fast a new learner joins a leader that holds a lot of data, when it bootstraps from S3.
#
# A leader (FlushAtOnce, archiving to a Ceph RGW instance of its own, started here) is loaded
# with DATA_MIB of values (1 KiB each, written with redis-cli --pipe); once its uploads have
# drained, a learner is given its role. The role change returns once the learner has loaded
# its partitions from S3 and caught up with the leader. Printed: the time to serving, the bytes
# loaded from S3 and their rate, the time a raw download of the same objects takes (curl, one
# object after another, nothing checked or written), the leader's and the learner's key counts.
#
# Usage: benches/bootstrap-learner.sh [--smoke]
#   --smoke      64 MiB of data instead of 2 GiB.
# Environment:
#   DATA_MIB     MiB of values to load (default 2048)
#   STORE        s3 (default) or dir: a shared directory instead of S3 (the raw download then
#                reads the same files). Ceph's memstore keeps every object in RAM.
#   STRATA_BIN   Strata binary; default: cargo build --release -p strata
#   KEEP_WORK=1  keep the temporary directory for inspection
set -euo pipefail

readonly VALUE_BYTES=1024
export STRATA_S3_DIR=/var/tmp/strata-s3-bench STRATA_S3_PORT=7490 STRATA_S3_MON_PORT=6790
export STRATA_S3_MEMORY_BYTES=$((10 * 1024 * 1024 * 1024))

log() { printf 'bootstrap-learner: %s\n' "$*" >&2; }
fail() { printf 'bootstrap-learner: error: %s\n' "$*" >&2; exit 1; }

DATA_MIB=${DATA_MIB:-2048}
STORE=${STORE:-s3}
[[ "$STORE" =~ ^(s3|dir)$ ]] || fail "STORE must be s3 or dir"
for argument in "$@"; do
    case "$argument" in
        --smoke) DATA_MIB=64 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown argument: $argument (see --help)" ;;
    esac
done
[[ "$DATA_MIB" =~ ^[1-9][0-9]*$ ]] || fail "DATA_MIB must be a positive integer"
KEYS=$((DATA_MIB * 1024 * 1024 / VALUE_BYTES))

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bootstrap-learner.XXXXXX")"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    "$ROOT/scripts/s3-server.sh" stop >/dev/null 2>&1 || true
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in redis-cli python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (run scripts/setup.sh)"
done

# start_node NAME: a node in admin mode archiving to the benchmark's S3 server.
storage_lines() {
    if [ "$STORE" = dir ]; then
        printf 'shared_dir = "%s"\n' "$WORK/shared"
        return 0
    fi
    printf 'storage_type = "minio"\n[storage.object_storage]\nurl = "%s"\n' "$STRATA_S3_URL"
    printf 'bucket_name = "%s"\naccess_key = "%s"\nsecret_key = "%s"\n' \
        "$STRATA_S3_BUCKET" "$STRATA_S3_ACCESS_KEY" "$STRATA_S3_SECRET_KEY"
}

start_node() {
    local name="$1" directory="$WORK/$1"
    mkdir -p "$directory"
    cat >"$directory/strata.toml" <<EOF
[general]
server_mode = "admin"
cpu_affinity = "none"
[network]
server_address = "127.0.0.1"
client_port = $(free_port)
http_port = $(free_port)
peer_ip = "127.0.0.1"
peer_port = $(free_port)
[storage]
data_dir = "$directory/data"
# One snapshot per partition in the store: Ceph's memstore keeps every object in RAM.
archive_snapshots_kept = 1
$(storage_lines)
[wal]
wal_flush = "FlushAtOnce"
[cluster]
name = "bench"
failover = "manual"
[security]
cluster_secret_file = "$(cluster_secret_file)"
EOF
    "$STRATA" node --config "$directory/strata.toml" >"$directory/strata.log" 2>&1 &
    PIDS+=($!)
    wait_ping "$(setting "$name" client_port)"
}

setting() { sed -n "s/^$2 = //p" "$WORK/$1/strata.toml"; }
admin() { echo "127.0.0.1:$(setting "$1" http_port)"; }
# storage_field NODE KEY[.KEY]: a field of the node's GET /admin/storage.
storage_field() {
    curl -s "http://$(admin "$1")/admin/storage" | python3 -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value.get(key, 0)
print(value)' "$2"
}

load_leader() {
    log "loading $KEYS keys of $VALUE_BYTES bytes ($DATA_MIB MiB) into the leader"
    python3 - "$KEYS" "$VALUE_BYTES" <<'EOF' | redis-cli -p "$(setting leader client_port)" --pipe >&2
import sys
keys, size = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
value = b"v" * (size - 12)
for index in range(keys):
    key = b"key:%d" % index
    val = b"%012d" % index + value
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(val), val))
EOF
}

wait_for_uploads() {
    local attempt
    for attempt in $(seq 1 1200); do
        if [ "$(storage_field leader backlog_objects)" = 0 ] \
            && [ "$(storage_field leader uploaded_objects)" != 0 ]; then
            return 0
        fi
        sleep 0.5
    done
    fail "the leader's uploads never drained"
}

# The objects a bootstrap loads (newest snapshot and the segment chain after it, per
# partition), downloaded raw with curl one after another: seconds and bytes.
raw_download() {
    local prefix="$1"
    python3 - "$STRATA_S3_URL" "$STRATA_S3_BUCKET" "$prefix" \
        "$STRATA_S3_ACCESS_KEY:$STRATA_S3_SECRET_KEY" "$STORE" "$WORK/shared" <<'EOF'
import json, pathlib, subprocess, sys, time
url, bucket, prefix, user, store, shared = sys.argv[1:]
def get(path, output="-"):
    if store == "dir":
        data = (pathlib.Path(shared) / path).read_bytes()
        return data if output == "-" else b""
    command = ["curl", "-sf", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", user,
               "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-o", output,
               f"{url}/{bucket}/{path}"]
    return subprocess.run(command, check=True, capture_output=True).stdout
cluster = json.loads(get(f"{prefix}/cluster.json"))["manifest"]
objects = []
for partition in range(cluster["partitions"]):
    manifest = json.loads(get(f"{prefix}/p{partition}/manifest.json"))["manifest"]
    snapshots = manifest["snapshots"]
    reached = snapshots[-1]["lsn"] if snapshots else 0
    if snapshots:
        objects.append((partition, snapshots[-1]["object"], snapshots[-1]["bytes"]))
    while True:
        fitting = [s for s in manifest["segments"] if s["first_lsn"] <= reached + 1 <= s["last_lsn"]]
        if not fitting:
            break
        best = max(fitting, key=lambda s: s["last_lsn"])
        objects.append((partition, best["object"], best["bytes"]))
        reached = best["last_lsn"]
started = time.monotonic()
for partition, name, _ in objects:
    get(f"{prefix}/p{partition}/{name}", "/dev/null")
elapsed = time.monotonic() - started
print(f"{elapsed:.2f} {sum(size for _, _, size in objects)}")
EOF
}

main() {
    STRATA="$(strata_binary)"
    eval "$("$ROOT/scripts/s3-server.sh" env)"
    if [ "$STORE" = s3 ]; then
        "$ROOT/scripts/s3-server.sh" stop >/dev/null 2>&1 || true
        "$ROOT/scripts/s3-server.sh" start >&2 || fail "cannot start the S3 server"
    fi
    start_node leader
    "$STRATA" ctl --http "$(admin leader)" set-role leader --name harry >/dev/null
    local started loaded_at
    started=$(date +%s.%N)
    load_leader
    loaded_at=$(date +%s.%N)
    log "loaded in $(awk -v a="$started" -v b="$loaded_at" 'BEGIN { printf "%.1f", b - a }') s; waiting for uploads"
    wait_for_uploads
    start_node learner
    log "the learner joins"
    local join_started join_done
    join_started=$(date +%s.%N)
    "$STRATA" ctl --http "$(admin learner)" set-role learner --name ron \
        --address "127.0.0.1:$(setting leader peer_port)" >/dev/null
    redis-cli -p "$(setting learner client_port)" get key:1 >/dev/null
    join_done=$(date +%s.%N)
    local seconds loaded state prefix raw raw_seconds raw_bytes
    seconds=$(awk -v a="$join_started" -v b="$join_done" 'BEGIN { printf "%.1f", b - a }')
    loaded="$(storage_field learner bootstrap.bytes_loaded)"
    state="$(storage_field learner bootstrap.state)"
    prefix="$(storage_field learner prefix)"
    raw="$(raw_download "$prefix")"
    raw_seconds="${raw% *}"
    raw_bytes="${raw#* }"
    local leader_keys learner_keys
    sleep 1
    leader_keys="$(redis-cli -p "$(setting leader client_port)" dbsize)"
    learner_keys="$(redis-cli -p "$(setting learner client_port)" dbsize)"
    printf '\ndata: %s MiB of values (%s keys of %s bytes)\n' "$DATA_MIB" "$KEYS" "$VALUE_BYTES"
    printf 'learner serving after   %s s (role change incl. bootstrap and catch-up)\n' "$seconds"
    printf 'bootstrap               %s, %.0f MiB loaded from the archive, %.1f MiB/s over the join\n' \
        "$state" "$(awk -v b="$loaded" 'BEGIN { print b / 2^20 }')" \
        "$(awk -v b="$loaded" -v s="$seconds" 'BEGIN { print b / 2^20 / s }')"
    printf 'raw download            %.0f MiB in %s s, %.1f MiB/s (%s, same objects)\n' \
        "$(awk -v b="$raw_bytes" 'BEGIN { print b / 2^20 }')" "$raw_seconds" \
        "$(awk -v b="$raw_bytes" -v s="$raw_seconds" 'BEGIN { print b / 2^20 / s }')" \
        "$([ "$STORE" = dir ] && echo "file reads" || echo curl)"
    printf 'keys                    leader %s, learner %s\n' "$leader_keys" "$learner_keys"
}

main
