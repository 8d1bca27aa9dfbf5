#!/usr/bin/env bash
# Runs a one-node S3 server (Ceph RADOS Gateway from Debian) on 127.0.0.1 for tests and CI.
#   start   install and bootstrap if needed, start, create the user and bucket; idempotent
#   env     print `export STRATA_S3_...` lines, for: eval "$(scripts/s3-server.sh env)"
#   stop    stop the daemons started here (by pid file); keeps the state dir
#   status  exit 0 if the gateway answers HTTP
#
# State lives in $STRATA_S3_DIR (default /var/tmp/strata-s3); the gateway listens on
# $STRATA_S3_PORT (default 7480), the monitor on $STRATA_S3_MON_PORT (default 6789); the
# memstore holds $STRATA_S3_MEMORY_BYTES (default 2 GiB).
# The OSD uses memstore: objects live in memory and are not meant to outlive the daemons. So
# whenever `start` finds the cluster not healthy (first run, after `stop`, after a reboot) it
# wipes the state dir and bootstraps a fresh cluster (~3 s); when all is healthy it only verifies.
# Needs root only for apt-get (sudo is used when run as another user).
set -euo pipefail

DIR="${STRATA_S3_DIR:-/var/tmp/strata-s3}"
DIR="${DIR%/}"
PORT="${STRATA_S3_PORT:-7480}"
MON_PORT="${STRATA_S3_MON_PORT:-6789}"
MEMORY_BYTES="${STRATA_S3_MEMORY_BYTES:-2147483648}"  # memstore capacity
CONF="$DIR/ceph.conf"
URL="http://127.0.0.1:$PORT"
BUCKET=strata-test
ACCESS_KEY=strata-test
SECRET_KEY=strata-test-secret
RGW=client.rgw.strata    # the gateway's Ceph entity name
DAEMONS=(mon.a osd.0 "$RGW")
MARKER="# strata-s3 cluster"  # first line of our ceph.conf; guards the wipe
TIMEOUT=120                # seconds any single wait may take

log() { printf 's3-server: %s\n' "$*" >&2; }
fail() { printf 's3-server: error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/packages.sh
. "$(dirname "${BASH_SOURCE[0]}")/packages.sh"

ceph_() { ceph -c "$CONF" --connect-timeout 15 "$@"; }
rgw_admin() { radosgw-admin -c "$CONF" "$@"; }

# HTTP status of a SigV4-signed request without a body (000 when nothing answers). curl 7.88
# does not send x-amz-content-sha256 by itself and RGW rejects SigV4 without it (403
# SignatureDoesNotMatch); given the header, curl signs it and uses its value as payload hash.
s3() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 30 --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user "$ACCESS_KEY:$SECRET_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
        -X "$1" "$URL/$2" || true
}

gateway_answers() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/" || true)" != 000 ]
}

# True while pid $1 runs with our ceph.conf on its command line: a pid reused by another
# process after a reboot is never mistaken for (or killed as) ours, and a zombie counts as gone.
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$CONF"; }

# Pid of a daemon of ours that is alive, or nothing. (Daemons remove their pid file as soon
# as they begin to shut down, so waiting for an exit goes by the pid, not by the file.)
daemon_pid() {
    local pid
    pid="$(cat "$DIR/run/$1.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] && ours "$pid" && echo "$pid"
}

healthy() {
    local daemon
    for daemon in "${DAEMONS[@]}"; do daemon_pid "$daemon" >/dev/null || return 1; done
    [ "$(s3 HEAD "$BUCKET")" = 200 ]
}

# Runs a Ceph tool or daemon (daemons fork into the background) with its chatter in
# $DIR/log/$1.out, and without fd 9: a daemon inheriting the start lock would hold it forever.
run() {
    local name="$1"; shift
    "$@" >>"$DIR/log/$name.out" 2>&1 9>&- || fail "$* failed; see $DIR/log/$name.out"
}

# Runs "$@" twice a second until it succeeds; fails naming the daemon's log when the daemon
# $1 has exited or after $TIMEOUT seconds.
wait_for() {
    local daemon="$1" what="$2" deadline=$((SECONDS + TIMEOUT)) log_file="$DIR/log/$1.log"
    shift 2
    until "$@" >/dev/null 2>&1; do
        daemon_pid "$daemon" >/dev/null || fail "$daemon exited; see $log_file"
        [ "$SECONDS" -lt "$deadline" ] || fail "$what not ready after ${TIMEOUT}s; see $log_file"
        sleep 0.5
    done
}

# One at a time in reverse start order (each needs the next to shut down cleanly), SIGTERM
# then SIGKILL after $1 tenths of a second (default 10 s). Takes about 0.5 s in all.
stop_daemons() {
    local daemon pid grace="${1:-100}"
    for daemon in "$RGW" osd.0 mon.a; do
        pid="$(daemon_pid "$daemon")" || continue
        log "stopping $daemon (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq "$grace"); do ours "$pid" || break; sleep 0.1; done
        ! ours "$pid" || kill -9 "$pid" 2>/dev/null || true
    done
}

write_conf() {
    cat >"$CONF" <<EOF
$MARKER (scripts/s3-server.sh); wiped and rebuilt by \`start\` when unhealthy
[global]
fsid = $(uuidgen)
mon_host = v1:127.0.0.1:$MON_PORT
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr2 = false
keyring = $DIR/keyring
run_dir = $DIR/run
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
crash_dir = $DIR/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
# The monitor batches map changes for 1 s by default; radosgw's startup creates pools one after
# another and waited ~9 s on these batches. With these two, a whole bootstrap takes ~3 s.
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
[mon]
mon_data = $DIR/\$name
[osd]
osd_data = $DIR/\$name
osd_objectstore = memstore
memstore_device_bytes = $MEMORY_BYTES
[$RGW]
rgw_data = $DIR/$RGW
rgw_frontends = beast endpoint=127.0.0.1:$PORT
EOF
}

# A fresh one-node cluster: mon.a, osd.0 (memstore) and the gateway, all keys in one keyring
# that the monitor imports at mkfs, so no `ceph auth add` is needed afterwards.
bootstrap() {
    if [ -e "$DIR" ]; then
        [ -z "$(ls -A "$DIR")" ] || head -n1 "$CONF" 2>/dev/null | grep -qF "$MARKER" \
            || fail "$DIR exists but is not a strata-s3 state dir; refusing to wipe it"
        rm -rf "$DIR"
    fi
    log "bootstrapping a one-node Ceph cluster in $DIR"
    mkdir -p "$DIR"/{run,log,crash,mon.a,osd.0,"$RGW"}
    write_conf
    local keyring="$DIR/keyring"
    {
        ceph-authtool --create-keyring "$keyring" --gen-key -n mon. --cap mon 'allow *'
        ceph-authtool "$keyring" --gen-key -n client.admin \
            --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *'
        ceph-authtool "$keyring" --gen-key -n osd.0 \
            --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *'
        ceph-authtool "$keyring" --gen-key -n "$RGW" --cap mon 'allow rw' --cap osd 'allow rwx'
    } >/dev/null
    monmaptool -c "$CONF" --create --fsid "$(sed -n 's/^fsid = //p' "$CONF")" \
        --addv a "v1:127.0.0.1:$MON_PORT" "$DIR/monmap" >/dev/null
    run mon.a ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" --keyring "$keyring"
    run mon.a ceph-mon -c "$CONF" -i a
    wait_for mon.a "ceph-mon" ceph_ mon stat

    local osd_uuid
    osd_uuid="$(uuidgen)"
    [ "$(ceph_ osd new "$osd_uuid")" = 0 ] || fail "ceph osd new did not return id 0"
    run osd.0 ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid"
    run osd.0 ceph-osd -c "$CONF" -i 0
    wait_for osd.0 "ceph-osd" osd_up
}

osd_up() { ceph_ osd dump | grep -q '^osd\.0 up'; }

start_gateway() {
    run "$RGW" radosgw -c "$CONF" -n "$RGW"
    wait_for "$RGW" "radosgw on $URL" gateway_answers
}

ensure_user_and_bucket() {
    if ! rgw_admin user info --uid="$ACCESS_KEY" >/dev/null 2>&1; then
        rgw_admin user create --uid="$ACCESS_KEY" --display-name="Strata tests" \
            --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >/dev/null
    fi
    local code
    code="$(s3 PUT "$BUCKET")"
    # RGW answers 200 when the owner re-creates a bucket; AWS-like servers answer 409.
    case "$code" in
        200|409) [ "$(s3 HEAD "$BUCKET")" = 200 ] || fail "bucket $BUCKET not usable (PUT $code)" ;;
        *) fail "creating bucket $BUCKET answered HTTP $code; see $DIR/log/$RGW.log" ;;
    esac
}

cmd_start() {
    install_packages ceph-mon ceph-osd radosgw curl uuid-runtime
    # One `start` at a time per state dir (the lock sits beside it: the dir itself gets wiped).
    mkdir -p "$(dirname "$DIR")"
    exec 9>"$DIR.lock"
    flock -w 300 9 || fail "another start holds $DIR.lock"
    if healthy; then
        log "already running and healthy at $URL"
        return 0
    fi
    if gateway_answers && ! daemon_pid "$RGW" >/dev/null; then
        fail "something else answers on $URL; stop it or set STRATA_S3_PORT"
    fi
    stop_daemons 30  # what is left of an unhealthy cluster; its data is wiped anyway
    bootstrap
    start_gateway
    ensure_user_and_bucket
    healthy || fail "started, but the bucket does not answer; see $DIR/log"
    log "running at $URL (bucket $BUCKET); logs in $DIR/log"
}

cmd_env() {
    cat <<EOF
export STRATA_S3_URL=$URL
export STRATA_S3_BUCKET=$BUCKET
export STRATA_S3_ACCESS_KEY=$ACCESS_KEY
export STRATA_S3_SECRET_KEY=$SECRET_KEY
EOF
}

case "${1:-}" in
    start) cmd_start ;;
    env) cmd_env ;;
    stop) stop_daemons ;;
    status)
        if gateway_answers; then log "gateway answers at $URL"; else
            log "no gateway at $URL"; exit 1; fi ;;
    *) fail "usage: $0 start|env|stop|status" ;;
esac
