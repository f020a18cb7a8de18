#!/usr/bin/env bash
# benches/many_conns.sh: what many concurrent keep-alive clients cost
# switchyard, nginx and HAProxy doing the same job (one worker each, the same
# timeouts and connection limit). Not a test: figures.
#
# Per target, fresh:
#   1. idle: CLIENTS keep-alive connections, each sends one GET, reads its
#      answer and stays open (benches/idle_clients.py); the server's RSS
#      with them open, minus its RSS before, over the connections answered =
#      KiB per idle keep-alive connection (one that has served a request:
#      its buffers, task and socket state in the server's memory);
#   2. busy: wrk -t1 -cCLIENTS for DURATION s (after a 2 s warm-up with the
#      same count): req/s, p99, errors, RSS at the end and peak.
#
# Layout as benches/slowloris.sh: clients on CPU 0; the server under test and
# one nginx origin on CPU 1. CLIENTS defaults to 9 900: under this machine's
# open-files hard limit of 20 000, HAProxy (two descriptors per connection)
# takes at most 9 950 connections, and every target gets the same count.
#
# Usage: benches/many_conns.sh       (CLIENTS=9900 DURATION=10)
#        TARGETS="switchyard nginx" SWITCHYARD_BIN=/path/to/switchyard benches/many_conns.sh
# Output: a table on stdout and in bench-results/many-conns-<date>.txt.
#
# Needs nginx, haproxy, wrk, python3, taskset (scripts/setup.sh bench
# installs the first three), and builds target/release/switchyard when
# missing or older than the sources.

set -euo pipefail

CLIENTS=${CLIENTS:-9900}
DURATION=${DURATION:-10}
MAX_CONNS=${MAX_CONNS:-12000}
HOST=app.local

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}

die() {
    echo "many_conns.sh: $*" >&2
    exit 1
}

for v in CLIENTS DURATION MAX_CONNS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((DURATION > 0)) || die "DURATION must be positive"
(($(nproc) >= 2)) || die "needs at least 2 CPUs (clients on CPU 0, servers on CPU 1)"
NEED=$((CLIENTS + 500))
# As many connections as the proxy may open: one per concurrent request.
ORIGIN_CONNS=$((CLIENTS + 1000))
WRK_CONNS=$CLIENTS
WRK_TIMEOUT=10s
BENCH=many-conns
# shellcheck source=benches/peers.sh
source "$ROOT/benches/peers.sh"

# --- measuring --------------------------------------------------------------

read -r -a TARGETS <<<"${TARGETS:-switchyard nginx haproxy}"
STAMP=$(date +%Y%m%d-%H%M%S)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "many_conns: $CLIENTS keep-alive clients; wrk -t1 -c$CLIENTS ${DURATION}s; limit $MAX_CONNS connections; open files $NOFILE"

start "$WORK/origin/log" "$NGINX" -p "$WORK/origin" -c "$WORK/origin/nginx.conf" -e "$WORK/origin/error.log" -g 'daemon off;'
ORIGIN_PID=$STARTED
wait_ready "$ORIGIN_PID" "$ORIGIN_PORT" "$WORK/origin/error.log"

ROWS=()
for target in "${TARGETS[@]}"; do
    start_target "$target"
    # A short run first, so that each server has its steady-state allocations.
    taskset -c 0 wrk -t1 -c50 -d1s -H "Host: $HOST" "http://127.0.0.1:$TARGET_PORT/" >/dev/null
    sleep 1
    before=$(rss_mib VmRSS "$TARGET_PID")
    ready=$WORK/$target/idle.ready
    taskset -c 0 python3 "$ROOT/benches/idle_clients.py" --port "$TARGET_PORT" --host-header "$HOST" \
        --clients "$CLIENTS" --ready "$ready" >"$WORK/$target/idle.log" 2>&1 &
    IDLE_PID=$!
    PIDS+=("$IDLE_PID")
    for ((i = 0; i < 1200; i++)); do
        [[ -s $ready ]] && break
        kill -0 "$IDLE_PID" 2>/dev/null || die "the idle clients exited: $(tail -n 20 "$WORK/$target/idle.log")"
        sleep 0.1
    done
    [[ -s $ready ]] || die "$CLIENTS idle clients not ready within 120 s"
    answered=$(cat "$ready")
    sleep 2
    with=$(rss_mib VmRSS "$TARGET_PID")
    per_conn=$(awk -v a="$before" -v b="$with" -v n="$answered" 'BEGIN { if (n > 0) printf "%.2f", (b - a) * 1024 / n; else print "-" }')
    stop_pid "$IDLE_PID"
    forget_pid "$IDLE_PID"
    echo "  $target: $answered/$CLIENTS idle keep-alive clients answered; RSS $before -> $with MiB ($per_conn KiB per connection)"
    sleep 2
    taskset -c 0 wrk -t1 -c"$CLIENTS" -d2s --timeout 10s -H "Host: $HOST" "http://127.0.0.1:$TARGET_PORT/" >/dev/null 2>&1 || true
    read -r rps p99 errs <<<"$(run_wrk "$TARGET_PORT")"
    rss=$(rss_mib VmRSS "$TARGET_PID")
    peak=$(rss_mib VmHWM "$TARGET_PID")
    kill -0 "$TARGET_PID" 2>/dev/null || die "$target died under $CLIENTS connections"
    echo "  $target with wrk -c$CLIENTS: $rps req/s, p99 $p99 ms, $errs errors; RSS $rss MiB (peak $peak)"
    ROWS+=("$(printf '| %-10s | %8s | %8s | %8s | %8s | %8s | %8s | %6s | %8s | %8s |' \
        "$target" "$answered" "$before" "$with" "$per_conn" "$rps" "$p99" "$errs" "$rss" "$peak")")
    stop_pid "$TARGET_PID"
    forget_pid "$TARGET_PID"
    sleep 2
done

# --- report -----------------------------------------------------------------

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
    COMMIT+=" (+ uncommitted changes in src/Cargo)"
fi
mkdir -p "$ROOT/bench-results"
RESULT=$ROOT/bench-results/many-conns-$STAMP.txt
{
    echo "# switchyard many connections, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT"
    echo "# $(nproc) CPUs; load average before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), HAProxy $("$HAPROXY" -v | awk 'NR == 1 { print $3 }'), $("$SWITCHYARD" --version)"
    echo "# clients on CPU 0; server (1 worker) + nginx origin on CPU 1; limits: header 10s, idle 60s, $MAX_CONNS connections (HAProxy maxconn $HAPROXY_MAXCONN)"
    echo "# idle: $CLIENTS connections that each served one GET and stay open; KiB per conn = (RSS with them - RSS before) / answered"
    echo "# busy: wrk -t1 -c$CLIENTS ${DURATION}s --timeout 10s"
    echo
    echo '| target     | idle answered | RSS before MiB | RSS with idle conns MiB | KiB per idle conn | busy req/s | busy p99 ms | errors | RSS busy MiB | peak RSS MiB |'
    echo '|------------|------:|------:|------:|------:|------:|------:|------:|------:|------:|'
    printf '%s\n' "${ROWS[@]}"
} | tee "$RESULT"
echo "saved to $RESULT"
