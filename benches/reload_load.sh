#!/usr/bin/env bash
# benches/reload_load.sh: what do reloads cost the requests being proxied, with
# a big config (ROUTES routes, ROUTES pools of two versions each)?
#
# One run on loopback (free ports picked here), every process in the
# background under this script, in a temp dir, stopped by pid on exit:
#
#   CPU 0: wrk -t1 -c$CONNS --latency, Host spread over every route
#          (app0.test .. app<N-1>.test, a lua script), and the admin clients
#   CPU 1: switchyard (1 worker, metrics listener on) + a 1-worker nginx
#          origin answering "ok\n"; every version of every pool points at it
#
# Two phases of PHASE seconds each, after a WARMUP s warm-up (5 s: long
# enough to hit every route once, so that (a) is steady state):
#   (a) no reloads
#   (b) POST /v1/reload every RELOAD_EVERY s (the next one starts at once if a
#       reload took longer) while GET /v1/state is polled every STATE_EVERY s
# Reported: req/s, p50/p99 of both phases and p99(b)/p99(a); how long each
# reload took (the admin call's round trip as curl measures it: the reply
# carries no timing) min/median/max and how many failed; the size of GET
# /v1/state and its time; the proxy's VmRSS after start, after phase (a) and
# after all reloads, and its peak (VmHWM); the start time from spawn to the
# first proxied 200 (Host app0.test); the proxy's CPU time in each phase; the
# size and time of one GET /metrics at the end.
#
# Usage: benches/reload_load.sh      (ROUTES=10000 PHASE=20 CONNS=20 WARMUP=5 WRK_TIMEOUT=30)
#        PHASE=15 benches/reload_load.sh
#        SWITCHYARD_BIN=/path/to/switchyard benches/reload_load.sh   (no build)
# Output: a table on stdout and in bench-results/reload-<date>.txt.
#
# Builds target/release/switchyard with `cargo build --release` (cargo decides
# whether anything needs rebuilding), and installs nginx-light and wrk with
# apt-get when missing (as root).

set -euo pipefail

ROUTES=${ROUTES:-10000}
PHASE=${PHASE:-20}
CONNS=${CONNS:-20}
RELOAD_EVERY=${RELOAD_EVERY:-1}
STATE_EVERY=${STATE_EVERY:-0.5}
WARMUP=${WARMUP:-5}
# wrk's own default (2 s) would drop slower answers from the latency figures.
WRK_TIMEOUT=${WRK_TIMEOUT:-30}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}

die() {
    echo "reload_load.sh: $*" >&2
    exit 1
}

[[ $ROUTES =~ ^[1-9][0-9]*$ ]] || die "ROUTES must be a positive integer (got '$ROUTES')"
[[ $PHASE =~ ^[1-9][0-9]*$ ]] || die "PHASE must be a positive number of seconds (got '$PHASE')"
[[ $WARMUP =~ ^[1-9][0-9]*$ ]] || die "WARMUP must be a positive number of seconds (got '$WARMUP')"
[[ $WRK_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "WRK_TIMEOUT must be a positive number of seconds (got '$WRK_TIMEOUT')"
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "CONNS must be a positive integer (got '$CONNS')"
[[ $RELOAD_EVERY =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "RELOAD_EVERY must be a number of seconds (got '$RELOAD_EVERY')"
[[ $STATE_EVERY =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "STATE_EVERY must be a number of seconds (got '$STATE_EVERY')"
[[ -r /proc/self/status ]] || die "needs Linux /proc"
(($(nproc) >= 2)) || die "needs at least 2 CPUs (clients on CPU 0, servers on CPU 1)"

# --- tools ------------------------------------------------------------------

install_missing() {
    local pkgs=()
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx-light)
    command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    command -v taskset >/dev/null 2>&1 || pkgs+=(util-linux)
    ((${#pkgs[@]} == 0)) && return 0
    ((EUID == 0)) || die "missing ${pkgs[*]}: run as root, or: sudo apt-get install -y ${pkgs[*]}"
    echo "installing ${pkgs[*]} ..."
    # Keep the packaged nginx from starting (and binding 0.0.0.0:80) during
    # the install: Debian's policy-rc.d hook, only if none is in place.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"; } || rc=$?
    ((made_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${pkgs[*]} failed"
}
install_missing
PATH=$PATH:/usr/sbin:/sbin
NGINX=$(command -v nginx)

if [[ -n ${SWITCHYARD_BIN:-} ]]; then
    [[ -x $SWITCHYARD ]] || die "SWITCHYARD_BIN=$SWITCHYARD is not an executable"
else
    (cd "$ROOT" && cargo build --release --bin switchyard) || die "cargo build --release failed"
    [[ -x $SWITCHYARD ]] || die "no $SWITCHYARD after the build"
fi

# --- processes --------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-reload.XXXXXX")
# nginx workers drop to an unprivileged user when started as root.
chmod 755 "$WORK"
PIDS=()

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

cleanup() {
    local p
    # The admin loops stop on their own at the flag (no curl left behind);
    # stop_pid covers an interrupted run.
    touch "$WORK/stop" 2>/dev/null || true
    for p in "${PIDS[@]}"; do
        stop_pid "$p"
    done
    PIDS=()
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Microseconds since the epoch, without a fork.
now_us() { echo "${EPOCHREALTIME/./}"; }

# free_port VAR: a loopback port that no socket uses (per /proc/net/tcp*),
# outside the kernel's ephemeral range, not handed out before.
read -r EPHEMERAL_LO EPHEMERAL_HI </proc/sys/net/ipv4/ip_local_port_range
if ((EPHEMERAL_LO > 11024)); then
    PORT_BASE=10000 PORT_SPAN=$((EPHEMERAL_LO - 10000))
elif ((EPHEMERAL_HI < 64511)); then
    PORT_BASE=$((EPHEMERAL_HI + 1)) PORT_SPAN=$((65535 - EPHEMERAL_HI))
else
    PORT_BASE=1024 PORT_SPAN=$((EPHEMERAL_LO - 1024))
fi
((PORT_SPAN >= 100)) || die "no room outside the ephemeral port range $EPHEMERAL_LO-$EPHEMERAL_HI"
TAKEN=" "
free_port() {
    local used=" " local_addr hex p i
    while read -r _ local_addr _; do
        hex=${local_addr##*:}
        [[ $hex =~ ^[0-9A-F]{4}$ ]] && used+="$((16#$hex)) "
    done < <(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null)
    for ((i = 0; i < 1000; i++)); do
        p=$((PORT_BASE + (RANDOM * 32768 + RANDOM) % PORT_SPAN))
        if [[ $used != *" $p "* && $TAKEN != *" $p "* ]]; then
            TAKEN+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# start LOG CMD...: runs CMD on CPU 1 in the background; sets STARTED.
STARTED=""
start() {
    local log=$1
    shift
    taskset -c 1 "$@" >"$log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

# status_kib FIELD PID: a /proc/PID/status field in KiB.
status_kib() {
    local key value _
    while read -r key value _; do
        [[ $key == "$1:" ]] && {
            echo "$value"
            return 0
        }
    done <"/proc/$2/status"
    echo 0
}
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

# cpu_ticks PID: utime + stime of the process (all threads), in clock ticks.
cpu_ticks() {
    local line
    local -a f
    read -r line <"/proc/$1/stat"
    read -r -a f <<<"${line##*) }"
    echo $((f[11] + f[12]))
}
CLK_TCK=$(getconf CLK_TCK)

# wrk's latency value ("245.00us", "1.23ms", "1.02s") in ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# min median max of the numbers on stdin, "- - -" when none.
min_med_max() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "- - -"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.1f %.1f %.1f\n", v[1], m, v[NR] }'
}

# --- configs ----------------------------------------------------------------

ORIGIN_PORT="" SY_PORT="" METRICS_PORT=""
free_port ORIGIN_PORT
free_port SY_PORT
free_port METRICS_PORT
SOCK=$WORK/sy/admin.sock
CONFIG=$WORK/sy/switchyard.toml
mkdir -p "$WORK/origin" "$WORK/sy"

cat >"$WORK/origin/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/origin/nginx.pid;
error_log $WORK/origin/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/origin/client_body;
    proxy_temp_path $WORK/origin/proxy;
    fastcgi_temp_path $WORK/origin/fastcgi;
    uwsgi_temp_path $WORK/origin/uwsgi;
    scgi_temp_path $WORK/origin/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
        location / {
            default_type text/plain;
            return 200 "ok\n";
        }
    }
}
EOF

# ROUTES routes appN.test -> pool pN, each pool blue 90 / green 10, both on
# the one origin.
{
    cat <<EOF
[server]
http = "127.0.0.1:$SY_PORT"
workers = 1
shutdown_grace = "1s"

[admin]
socket = "$SOCK"
state = "$WORK/sy/state.json"

[metrics]
listen = "127.0.0.1:$METRICS_PORT"
EOF
    awk -v n="$ROUTES" -v origin="127.0.0.1:$ORIGIN_PORT" 'BEGIN {
        for (i = 0; i < n; i++)
            printf "\n[[routes]]\nhost = \"app%d.test\"\npool = \"p%d\"\n", i, i
        for (i = 0; i < n; i++) {
            printf "\n[pools.p%d.versions.blue]\nweight = 90\nbackends = [\"%s\"]\n", i, origin
            printf "\n[pools.p%d.versions.green]\nweight = 10\nbackends = [\"%s\"]\n", i, origin
        }
    }'
} >"$CONFIG"
CONFIG_BYTES=$(stat -c %s "$CONFIG")
"$SWITCHYARD" check -c "$CONFIG" >"$WORK/check.out" || die "config rejected: $(head -n 5 "$WORK/check.out")"

# Every request a different host, stepping through all of them (a stride
# coprime with most route counts, so the whole table is visited).
cat >"$WORK/spread.lua" <<EOF
local n = $ROUTES
local i = 0
request = function()
    i = (i + 7919) % n
    return wrk.format("GET", "/", { ["Host"] = "app" .. i .. ".test" })
end
EOF

# --- start ------------------------------------------------------------------

STAMP=$(date +%Y%m%d-%H%M%S)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_BEFORE%% *}" 'BEGIN { exit !(l >= 1.0) }'; then
    echo "warning: load average is $LOAD_BEFORE; other jobs on this machine skew the figures" >&2
fi
echo "reload under load: $ROUTES routes and pools ($((CONFIG_BYTES / 1024)) KiB of TOML), wrk -t1 -c$CONNS on CPU 0, ${PHASE}s per phase"
echo "ports: origin $ORIGIN_PORT switchyard $SY_PORT metrics $METRICS_PORT"

start "$WORK/origin/stdout.log" "$NGINX" -p "$WORK/origin" -c "$WORK/origin/nginx.conf" -e "$WORK/origin/error.log" -g 'daemon off;'
ORIGIN_PID=$STARTED
for ((i = 0; ; i++)); do
    kill -0 "$ORIGIN_PID" 2>/dev/null || die "the origin exited at startup: $(tail -n 20 "$WORK/origin/error.log")"
    curl -s --noproxy '*' -o /dev/null --max-time 1 "http://127.0.0.1:$ORIGIN_PORT/" && break
    ((i < 100)) || die "the origin did not answer within 10 s"
    sleep 0.1
done

# Ready = the first proxied 200 (the routing table is built and served).
T0=$(now_us)
start "$WORK/sy/log" env RUST_LOG=info "$SWITCHYARD" run -c "$CONFIG"
SY_PID=$STARTED
# `env` execs switchyard: the pid is the proxy's own.
while :; do
    kill -0 "$SY_PID" 2>/dev/null || die "switchyard exited at startup: $(tail -n 20 "$WORK/sy/log")"
    code=$(taskset -c 0 curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 1 -H 'Host: app0.test' "http://127.0.0.1:$SY_PORT/" || true)
    [[ $code == 200 ]] && break
    (($(now_us) - T0 < 120000000)) || die "switchyard did not answer 200 for app0.test within 120 s: $(tail -n 20 "$WORK/sy/log")"
    sleep 0.01
done
START_MS=$(awk -v d="$(($(now_us) - T0))" 'BEGIN { printf "%.0f", d / 1000 }')
RSS_START=$(status_kib VmRSS "$SY_PID")
echo "switchyard ready in $START_MS ms, VmRSS $(mib "$RSS_START") MiB"

last=$((ROUTES - 1))
for host in app0.test "app$((ROUTES / 2)).test" "app$last.test"; do
    body=$(curl -s --noproxy '*' --max-time 5 -H "Host: $host" "http://127.0.0.1:$SY_PORT/") || true
    [[ $body == ok ]] || die "Host $host did not get the origin's answer: '$body'"
done
# The metrics listener is up (scraped once at the end: a scrape renders every
# series, which is not what this measures).
(exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT") 2>/dev/null || die "no metrics listener on 127.0.0.1:$METRICS_PORT"

# --- measuring --------------------------------------------------------------

# run_wrk SECONDS OUT: wrk on CPU 0 in the background (so that the trap can
# stop it), waited for.
run_wrk() {
    taskset -c 0 wrk -t1 -c"$CONNS" -d"$1s" --timeout "${WRK_TIMEOUT}s" --latency -s "$WORK/spread.lua" "http://127.0.0.1:$SY_PORT/" >"$2" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid" || die "wrk failed: $(cat "$2")"
    forget_pid "$pid"
}

# Loops on CPU 0 until $WORK/stop exists. Each line: the start (us), the
# HTTP code, the seconds curl took, the bytes of the answer.
reload_loop() {
    local t0 out took
    while [[ ! -e $WORK/stop ]]; do
        t0=$(now_us)
        out=$(curl -s --max-time 60 -o "$WORK/reload.last" --unix-socket "$SOCK" -X POST \
            -w '%{http_code} %{time_total} %{size_download}' http://switchyard/v1/reload 2>/dev/null) || true
        [[ -n $out ]] || out="000 0 0"
        echo "$t0 $out" >>"$WORK/reloads.txt"
        [[ ${out%% *} == 200 ]] || cp "$WORK/reload.last" "$WORK/reload.failed" 2>/dev/null || true
        took=$(($(now_us) - t0))
        sleep "$(awk -v e="$RELOAD_EVERY" -v t="$took" 'BEGIN { s = e - t / 1e6; printf "%.3f", (s > 0 ? s : 0) }')"
    done
}
state_loop() {
    local t0 out took
    while [[ ! -e $WORK/stop ]]; do
        t0=$(now_us)
        out=$(curl -s --max-time 60 -o /dev/null --unix-socket "$SOCK" \
            -w '%{http_code} %{time_total} %{size_download}' http://switchyard/v1/state 2>/dev/null) || true
        [[ -n $out ]] || out="000 0 0"
        echo "$t0 $out" >>"$WORK/states.txt"
        took=$(($(now_us) - t0))
        sleep "$(awk -v e="$STATE_EVERY" -v t="$took" 'BEGIN { s = e - t / 1e6; printf "%.3f", (s > 0 ? s : 0) }')"
    done
}

# Phase results: "req/s p50 p99 requests errors cpu_s"
phase_figures() { # WRK_OUT TICKS
    local out=$1 ticks=$2 requests rps p50 p99 non2xx sockerr
    requests=$(awk '/ requests in / { print $1 }' "$out")
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    [[ -n $requests && -n $rps ]] || die "could not read wrk's output: $(cat "$out")"
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    sockerr=$(awk -F'[ ,]+' '/Socket errors:/ { print $5 + $7 + $9 + $11 }' "$out")
    echo "$rps $p50 $p99 $requests $((${non2xx:-0} + ${sockerr:-0})) $(awk -v t="$ticks" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')"
}

echo "warm-up ${WARMUP}s ..."
run_wrk "$WARMUP" "$WORK/warmup.out"
WARMUP_REQ=$(awk '/ requests in / { print $1 }' "$WORK/warmup.out")
# The lua stride visits ROUTES distinct hosts before repeating one.
WARMED=no
((${WARMUP_REQ:-0} >= ROUTES)) && WARMED=yes
[[ $WARMED == yes ]] || echo "warning: the warm-up hit only $WARMUP_REQ of $ROUTES routes; raise WARMUP" >&2

echo "phase a: ${PHASE}s, no reloads ..."
c0=$(cpu_ticks "$SY_PID")
run_wrk "$PHASE" "$WORK/a.out"
c1=$(cpu_ticks "$SY_PID")
read -r A_RPS A_P50 A_P99 A_REQ A_ERR A_CPU <<<"$(phase_figures "$WORK/a.out" $((c1 - c0)))"
RSS_A=$(status_kib VmRSS "$SY_PID")
# Established connections to the origin's port (/proc/net/tcp: state 01).
UPSTREAM_CONNS=$(awk -v port="$(printf '%04X' "$ORIGIN_PORT")" '$4 == "01" { split($3, r, ":"); if (r[2] == port) n++ } END { print n + 0 }' /proc/net/tcp)

echo "phase b: ${PHASE}s, a reload every ${RELOAD_EVERY}s, GET /v1/state every ${STATE_EVERY}s ..."
: >"$WORK/reloads.txt"
: >"$WORK/states.txt"
rm -f "$WORK/stop"
c0=$(cpu_ticks "$SY_PID")
taskset -c 0 bash -c "$(declare -f now_us reload_loop); WORK='$WORK' SOCK='$SOCK' RELOAD_EVERY='$RELOAD_EVERY' reload_loop" &
RELOADER=$!
PIDS+=("$RELOADER")
taskset -c 0 bash -c "$(declare -f now_us state_loop); WORK='$WORK' SOCK='$SOCK' STATE_EVERY='$STATE_EVERY' state_loop" &
POLLER=$!
PIDS+=("$POLLER")
run_wrk "$PHASE" "$WORK/b.out"
touch "$WORK/stop"
# The loops finish their current call (a reload in progress is waited for).
wait "$RELOADER" 2>/dev/null || true
wait "$POLLER" 2>/dev/null || true
forget_pid "$RELOADER"
forget_pid "$POLLER"
c1=$(cpu_ticks "$SY_PID")
read -r B_RPS B_P50 B_P99 B_REQ B_ERR B_CPU <<<"$(phase_figures "$WORK/b.out" $((c1 - c0)))"
RSS_B=$(status_kib VmRSS "$SY_PID")
HWM=$(status_kib VmHWM "$SY_PID")
kill -0 "$SY_PID" 2>/dev/null || die "switchyard died during the run: $(tail -n 20 "$WORK/sy/log")"

# One scrape now that every series exists.
read -r METRICS_CODE METRICS_SECS METRICS_BYTES <<<"$(taskset -c 0 curl -s --noproxy '*' --max-time 120 -o /dev/null \
    -w '%{http_code} %{time_total} %{size_download}' "http://127.0.0.1:$METRICS_PORT/metrics" || true)"
METRICS_MS=$(awk -v s="${METRICS_SECS:-0}" 'BEGIN { printf "%.0f", s * 1000 }')

RELOADS=$(wc -l <"$WORK/reloads.txt")
RELOADS_OK=$(awk '$2 == 200' "$WORK/reloads.txt" | wc -l)
read -r R_MIN R_MED R_MAX <<<"$(awk '$2 == 200 { printf "%.1f\n", $3 * 1000 }' "$WORK/reloads.txt" | min_med_max)"
STATES=$(wc -l <"$WORK/states.txt")
STATES_OK=$(awk '$2 == 200' "$WORK/states.txt" | wc -l)
read -r S_MIN S_MED S_MAX <<<"$(awk '$2 == 200 { printf "%.1f\n", $3 * 1000 }' "$WORK/states.txt" | min_med_max)"
STATE_BYTES=$(awk '$2 == 200 { b = $4 } END { print b + 0 }' "$WORK/states.txt")
RATIO=$(awk -v a="$A_P99" -v b="$B_P99" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "-" }')

# --- report -----------------------------------------------------------------

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
    COMMIT+=" (+ uncommitted changes in src/Cargo)"
fi
mkdir -p "$ROOT/bench-results"
RESULT=$ROOT/bench-results/reload-$STAMP.txt

{
    echo "# switchyard reload under load, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT"
    echo "# $(nproc) CPUs; load average before $LOAD_BEFORE, after $LOAD_AFTER; $("$SWITCHYARD" --version), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }')"
    echo "# $ROUTES routes and $ROUTES pools (blue 90 / green 10, both on one nginx origin), $((CONFIG_BYTES / 1024)) KiB of TOML, metrics on"
    echo "# wrk -t1 -c$CONNS --latency on CPU 0, Host spread over all $ROUTES routes; switchyard (workers = 1) + origin on CPU 1"
    echo "# ${PHASE}s per phase after a ${WARMUP}s warm-up; (b): POST /v1/reload every ${RELOAD_EVERY}s, GET /v1/state every ${STATE_EVERY}s (curl on CPU 0)"
    echo
    printf '| %-38s | %8s | %7s | %8s | %9s | %6s | %11s |\n' phase "req/s" "p50 ms" "p99 ms" requests errors "proxy CPU s"
    echo '|----------------------------------------|---------:|--------:|---------:|----------:|-------:|------------:|'
    printf '| %-38s | %8s | %7.2f | %8.2f | %9s | %6s | %11s |\n' "(a) no reloads" "$A_RPS" "$A_P50" "$A_P99" "$A_REQ" "$A_ERR" "$A_CPU"
    printf '| %-38s | %8s | %7.2f | %8.2f | %9s | %6s | %11s |\n' "(b) reload ${RELOAD_EVERY}s + state ${STATE_EVERY}s" "$B_RPS" "$B_P50" "$B_P99" "$B_REQ" "$B_ERR" "$B_CPU"
    echo
    echo "p99(b) / p99(a):          $RATIO"
    echo "reloads in (b):           $RELOADS ($RELOADS_OK answered 200); took min $R_MIN / median $R_MED / max $R_MAX ms (admin round trip)"
    echo "GET /v1/state in (b):     $STATES ($STATES_OK answered 200); $STATE_BYTES bytes; took min $S_MIN / median $S_MED / max $S_MAX ms"
    echo "start (spawn -> first proxied 200): $START_MS ms"
    echo "GET /metrics once, after (b): HTTP ${METRICS_CODE:-none}, ${METRICS_BYTES:-0} bytes in $METRICS_MS ms"
    echo "warm-up: $WARMUP_REQ requests (every route had been hit before (a): $WARMED); upstream connections open after (a): $UPSTREAM_CONNS"
    echo "VmRSS: after start $(mib "$RSS_START") MiB, after (a) $(mib "$RSS_A") MiB, after all reloads $(mib "$RSS_B") MiB; peak (VmHWM) $(mib "$HWM") MiB"
    if [[ -e $WORK/reload.failed ]]; then
        echo "last failed reload answered: $(head -c 300 "$WORK/reload.failed")"
    fi
    echo "errors = non-2xx answers + socket errors as wrk counts them."
} >"$RESULT"

echo
cat "$RESULT"
echo
echo "written to ${RESULT#"$ROOT"/}"
