#!/usr/bin/env bash
# benches/slowloris.sh: what SILENT connections that send nothing plus SLOW
# slowloris connections (a request head one byte per second, never finished)
# do to switchyard, nginx and HAProxy configured with the same client
# timeouts and the same connection limit. Not a test: figures.
#
# Per target, fresh: a wrk run without the attack, then the attack
# (benches/slowloris.py, reconnecting whatever the server closes) ramps up
# over RAMP seconds and holds for SETTLE more, then the same wrk run during the
# attack. Reported: req/s, p99, wrk errors (timeouts, connect/read errors,
# non-2xx) without and with the attack; the server's RSS at the end of the
# attacked run and its peak; what the attacker saw (connections the server
# closed, how long they lived, how many were still open at the end).
#
# Everything on loopback: wrk -t1 -cCONNS and the attacker on CPU 0; the
# server under test (1 worker) and one nginx origin on CPU 1. The same limits
# everywhere:
#
#   header   10s  switchyard header_timeout | nginx client_header_timeout | HAProxy timeout http-request
#   idle     60s  idle_timeout              | keepalive_timeout           | timeout http-keep-alive
#   send     60s  send_timeout              | send_timeout                | timeout client
#   body     60s  body_timeout              | client_body_timeout         | timeout client
#   conns  10000  max_connections           | worker_connections          | maxconn
#
# With the defaults the attack (11,000 connections) is above the connection
# limit (10,000, switchyard's default): the attacker keeps every slot taken,
# and normal clients get a slot only as the header timeout frees them.
# MAX_CONNS=20000 shows the cost of the attack below the limit instead.
#
# Usage: benches/slowloris.sh
#        SILENT=10000 SLOW=1000 DURATION=20 RAMP=10 SETTLE=5 MAX_CONNS=10000 benches/slowloris.sh
#        TARGETS="switchyard nginx haproxy" SWITCHYARD_BIN=/path/to/switchyard benches/slowloris.sh
# Output: a table on stdout and in bench-results/slowloris-<date>.txt.
#
# Needs nginx, haproxy, wrk, python3, taskset (scripts/setup.sh bench
# installs the first three), an open-files limit of SILENT + SLOW + 2000 (the
# script raises the soft limit to the hard one), and builds
# target/release/switchyard when missing or older than the sources.

set -euo pipefail

SILENT=${SILENT:-10000}
SLOW=${SLOW:-1000}
DURATION=${DURATION:-20}
RAMP=${RAMP:-10}
SETTLE=${SETTLE:-5}
MAX_CONNS=${MAX_CONNS:-10000}
CONNS=50
HOST=app.local

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}

die() {
    echo "slowloris.sh: $*" >&2
    exit 1
}

for v in SILENT SLOW DURATION RAMP SETTLE MAX_CONNS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((DURATION > 0)) || die "DURATION must be positive"
(($(nproc) >= 2)) || die "needs at least 2 CPUs (clients on CPU 0, servers on CPU 1)"
NEED=$((SILENT + SLOW + 2000))
ORIGIN_CONNS=4096
WRK_CONNS=$CONNS
WRK_TIMEOUT=2s
BENCH=slowloris
# shellcheck source=benches/peers.sh
source "$ROOT/benches/peers.sh"

json() { # FILE KEY.PATH
    python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v = v[k]
print("-" if v is None else v)' "$1" "$2"
}

# --- measuring --------------------------------------------------------------

read -r -a TARGETS <<<"${TARGETS:-switchyard nginx haproxy}"
STAMP=$(date +%Y%m%d-%H%M%S)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "slowloris: $SILENT silent + $SLOW slowloris connections (ramp ${RAMP}s, settle ${SETTLE}s); wrk -t1 -c$CONNS ${DURATION}s; limit $MAX_CONNS connections; open files $NOFILE"

start "$WORK/origin/log" "$NGINX" -p "$WORK/origin" -c "$WORK/origin/nginx.conf" -e "$WORK/origin/error.log" -g 'daemon off;'
ORIGIN_PID=$STARTED
wait_ready "$ORIGIN_PID" "$ORIGIN_PORT" "$WORK/origin/error.log"

ROWS=()
for target in "${TARGETS[@]}"; do
    start_target "$target"
    idle=$(rss_mib VmRSS "$TARGET_PID")
    taskset -c 0 wrk -t1 -c"$CONNS" -d2s -H "Host: $HOST" "http://127.0.0.1:$TARGET_PORT/" >/dev/null
    read -r rps0 p990 err0 <<<"$(run_wrk "$TARGET_PORT")"
    echo "  $target without the attack: $rps0 req/s, p99 $p990 ms, $err0 errors"
    stats=$WORK/$target/attack.json
    taskset -c 0 python3 "$ROOT/benches/slowloris.py" --port "$TARGET_PORT" --host-header "$HOST" \
        --silent "$SILENT" --slow "$SLOW" --ramp "$RAMP" --out "$stats" >"$WORK/$target/attack.log" 2>&1 &
    ATTACK_PID=$!
    PIDS+=("$ATTACK_PID")
    sleep $((RAMP + SETTLE))
    kill -0 "$ATTACK_PID" 2>/dev/null || die "the attacker exited: $(tail -n 20 "$WORK/$target/attack.log")"
    read -r rps1 p991 err1 <<<"$(run_wrk "$TARGET_PORT")"
    rss=$(rss_mib VmRSS "$TARGET_PID")
    peak=$(rss_mib VmHWM "$TARGET_PID")
    kill -0 "$TARGET_PID" 2>/dev/null || die "$target died during the attack"
    stop_pid "$ATTACK_PID"
    forget_pid "$ATTACK_PID"
    [[ -s $stats ]] || die "the attacker wrote no summary: $(tail -n 20 "$WORK/$target/attack.log")"
    echo "  $target during the attack: $rps1 req/s, p99 $p991 ms, $err1 errors; RSS $rss MiB (peak $peak, idle $idle)"
    echo "    attacker: $(cat "$stats")"
    ROWS+=("$(printf '| %-10s | %7s | %8s | %6s | %7s | %8s | %6s | %6s | %6s | %9s | %9s | %9s | %9s | %7s |' \
        "$target" "$rps0" "$p990" "$err0" "$rps1" "$p991" "$err1" "$rss" "$peak" \
        "$(json "$stats" silent.closed_by_server)/$(json "$stats" silent.opened)" \
        "$(json "$stats" silent.lifetime_median_s)" \
        "$(json "$stats" slow.closed_by_server)/$(json "$stats" slow.opened)" \
        "$(json "$stats" slow.lifetime_median_s)" \
        "$(json "$stats" connect_errors)")")
    stop_pid "$TARGET_PID"
    forget_pid "$TARGET_PID"
    # Let the attack's TIME_WAIT sockets and the backlog drain before the next target.
    sleep 2
done

# --- report -----------------------------------------------------------------

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
    COMMIT+=" (+ uncommitted changes in src/Cargo)"
fi
mkdir -p "$ROOT/bench-results"
RESULT=$ROOT/bench-results/slowloris-$STAMP.txt
{
    echo "# switchyard slowloris, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT"
    echo "# $(nproc) CPUs; load average before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), HAProxy $("$HAPROXY" -v | awk 'NR == 1 { print $3 }'), $("$SWITCHYARD" --version)"
    echo "# attack: $SILENT silent + $SLOW slowloris (1 byte/s) connections, reconnecting when closed, ramped over ${RAMP}s, ${SETTLE}s settle"
    echo "# wrk -t1 -c$CONNS ${DURATION}s (2 s timeout) and the attacker on CPU 0; server (1 worker) + nginx origin on CPU 1"
    echo "# limits everywhere: header 10s, idle 60s, send 60s, body 60s, $MAX_CONNS connections (HAProxy: maxconn $HAPROXY_MAXCONN, what $NOFILE open files allow)"
    echo "# closed x/y: connections the server closed / opened during the whole attack; life: median seconds until closed"
    echo
    echo '| target     | req/s before | p99 ms before | errors before | req/s during | p99 ms during | errors during | RSS MiB during | peak RSS MiB | silent closed/opened | silent life s | slowloris closed/opened | slowloris life s | connect errors |'
    echo '|------------|-------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|'
    printf '%s\n' "${ROWS[@]}"
} | tee "$RESULT"
echo "saved to $RESULT"
