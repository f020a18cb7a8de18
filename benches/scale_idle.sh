#!/usr/bin/env bash
# benches/scale_idle.sh: what does a big config cost at rest? ROUTES routes
# and ROUTES pools of two versions (the config benches/reload_load.sh
# generates: blue 90 / green 10, metrics on), nothing proxied.
#
#   start:   spawn -> the first answer on the proxy port for app0.test (the
#            backends point at a port nobody listens on: a 502/503 proves the
#            table is installed), and VmRSS a second later (after the trim)
#   reloads: RELOADS x `switchyard ctl reload`, one after the other; each
#            one's wall time (the ctl round trip) and VmRSS a second after it,
#            and the mean CPU time switchyard spent during the round trips
#            (steal time left out; work deferred past the answer too).
#            The file is the same each time, unless CHANGE=1: then before
#            reload N pool p<N>'s blue weight goes from 90 to 80 (and the
#            one changed before back to 90), so every reload reads a file
#            that differs from the running one. CHANGE=route: route N gets
#            path_prefix = "/v2" instead (the one before loses it).
#            CHANGE=far: pools p<N> and p<ROUTES-1-N> both change, two
#            edits too far apart for one region: walked.
#            CHANGE=part: pool p<N> and a route's sub-table (a last route
#            with [routes.headers], there in this mode only) change.
#            CHANGE=full: every pool's green weight changes (10 and 11 in
#            turn): an edit in place, walked (each section compared with
#            its old text, only the changed ones scanned and read).
#            CHANGE=grow: the same, and a pool added (then removed) at
#            the end: walked up to the last pool, the rest (the last pool
#            and the added one) indexed on its own and matched.
#            CHANGE=whole: as grow, and the server's shutdown_grace changed
#            (at the top: the walk stops there; not in place, too many
#            sections for the diff): every reload reads the whole file
#            (section by section when it can)
#   state:   GET /v1/state and GET /v1/state?pool=p0 through the admin socket
#            (size, time)
#
# Every process runs under this script in a temp dir and is stopped by pid on
# exit. Taskset: switchyard on CPU 1, the clients on CPU 0 (when there are 2).
#
# Usage: benches/scale_idle.sh                 (ROUTES=10000 RELOADS=10)
#        SWITCHYARD_BIN=/path/to/switchyard benches/scale_idle.sh   (no build)
#        CHANGE=1 benches/scale_idle.sh       (each reload changes one pool)
#        CHANGE=route benches/scale_idle.sh   (each reload changes one route)
#        CHANGE=far benches/scale_idle.sh     (each reload changes two pools far apart)
#        CHANGE=part benches/scale_idle.sh    (each reload changes a pool and a route's sub-table)
#        CHANGE=full benches/scale_idle.sh    (each reload changes every pool, in place)
#        CHANGE=grow benches/scale_idle.sh    (every pool, and a pool added or removed at the end)
#        CHANGE=whole benches/scale_idle.sh   (as grow, and [server] changed: a whole read)
#        ENV="MALLOC_ARENA_MAX=2" benches/scale_idle.sh   (extra environment for switchyard)
#        CALLGRIND=1 CHANGE=full RELOADS=4 benches/scale_idle.sh   (switchyard under
#            valgrind's callgrind: user-space instructions per reload, which
#            the VM's noise does not move; its times and RSS are valgrind's)
# Output: a summary on stdout and in bench-results/scale-idle-<date>.txt.

set -euo pipefail

ROUTES=${ROUTES:-10000}
RELOADS=${RELOADS:-10}
CHANGE=${CHANGE:-0}
case $CHANGE in
    0 | 1 | route | far | part | full | grow | whole) ;;
    *) echo "scale_idle.sh: CHANGE must be 0, 1, route, far, part, full, grow or whole (got '$CHANGE')" >&2 && exit 1 ;;
esac
EXTRA_ENV=${ENV:-}
CALLGRIND=${CALLGRIND:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}

die() {
    echo "scale_idle.sh: $*" >&2
    exit 1
}

[[ $ROUTES =~ ^[1-9][0-9]*$ ]] || die "ROUTES must be a positive integer (got '$ROUTES')"
[[ $RELOADS =~ ^[0-9]+$ ]] || die "RELOADS must be a number (got '$RELOADS')"
[[ -r /proc/self/status ]] || die "needs Linux /proc"
command -v curl >/dev/null 2>&1 || die "needs curl"

if [[ -n ${SWITCHYARD_BIN:-} ]]; then
    [[ -x $SWITCHYARD ]] || die "SWITCHYARD_BIN=$SWITCHYARD is not an executable"
else
    (cd "$ROOT" && cargo build --release --bin switchyard) || die "cargo build --release failed"
fi

CPU_SY=0 CPU_CLIENT=0
if (($(nproc) >= 2)); then
    CPU_SY=1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-idle.XXXXXX")
SY_PID=""
cleanup() {
    if [[ -n $SY_PID ]]; then
        kill -TERM "$SY_PID" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$SY_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SY_PID" 2>/dev/null || true
        wait "$SY_PID" 2>/dev/null || true
    fi
    [[ -n ${KEEP:-} ]] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_us() { echo "${EPOCHREALTIME/./}"; }
ms_since() { awk -v d="$(($(now_us) - $1))" 'BEGIN { printf "%.0f", d / 1000 }'; }
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
min_med_max() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "- - -"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.0f %.0f %.0f\n", v[1], m, v[NR] }'
}

# Loopback ports: bind-free ones picked by the kernel would race; these are
# checked against /proc/net/tcp like reload_load.sh does, simply.
pick_port() {
    local p used
    used=$(awk 'NR > 1 { split($2, a, ":"); print strtonum("0x" a[2]) }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
    for ((i = 0; i < 1000; i++)); do
        p=$((20000 + RANDOM % 20000))
        grep -qx "$p" <<<"$used" || {
            echo "$p"
            return 0
        }
    done
    die "no free port"
}
SY_PORT=$(pick_port)
METRICS_PORT=$(pick_port)
DEAD_PORT=$(pick_port)
[[ $SY_PORT != "$METRICS_PORT" ]] || METRICS_PORT=$((SY_PORT + 1))
SOCK=$WORK/admin.sock
CONFIG=$WORK/switchyard.toml

# gen_config CHANGED: the config, with pool pCHANGED's blue at weight 80
# (CHANGE=1; CHANGE=far: pool p(ROUTES-1-CHANGED)'s too; CHANGE=part: and a
# last route's [routes.headers] on CHANGED), or route CHANGED on path_prefix
# "/v2" (CHANGE=route), or every green at 10 + CHANGED % 2 (CHANGE=full;
# CHANGE=grow: and pool extra at the end when CHANGED is odd; CHANGE=whole:
# and shutdown_grace 2s instead of 1s then too).
gen_config() {
    local pool=-1 far=-1 route=-1 green=10 extra=0 grace=1
    case $CHANGE in
        1 | part) pool=$1 ;;
        route) route=$1 ;;
        far) pool=$1 far=$((ROUTES - 1 - $1)) ;;
        full) ((${1} < 0)) || green=$((10 + $1 % 2)) ;;
        grow) ((${1} < 0)) || green=$((10 + $1 % 2)) extra=$(($1 % 2)) ;;
        whole) ((${1} < 0)) || green=$((10 + $1 % 2)) extra=$(($1 % 2)) grace=$((1 + $1 % 2)) ;;
    esac
    cat <<EOF
[server]
http = "127.0.0.1:$SY_PORT"
workers = 1
shutdown_grace = "${grace}s"

[admin]
socket = "$SOCK"
state = "$WORK/state.json"

[metrics]
listen = "127.0.0.1:$METRICS_PORT"
EOF
    awk -v n="$ROUTES" -v origin="127.0.0.1:$DEAD_PORT" -v changed="$pool" -v far="$far" -v route="$route" -v green="$green" 'BEGIN {
        for (i = 0; i < n; i++)
            printf "\n[[routes]]\nhost = \"app%d.test\"\npool = \"p%d\"\n%s", i, i, (i == route ? "path_prefix = \"/v2\"\n" : "")
        for (i = 0; i < n; i++) {
            printf "\n[pools.p%d.versions.blue]\nweight = %d\nbackends = [\"%s\"]\n", i, (i == changed || i == far ? 80 : 90), origin
            printf "\n[pools.p%d.versions.green]\nweight = %d\nbackends = [\"%s\"]\n", i, green, origin
        }
    }'
    if ((extra)); then
        printf '\n[pools.extra.versions.v]\nweight = 1\nbackends = ["127.0.0.1:%s"]\n' "$DEAD_PORT"
    fi
    if [[ $CHANGE == part ]]; then
        printf '\n[[routes]]\nhost = "canary.test"\npool = "p0"\n[routes.headers]\nX-Canary = "%s"\n' "$1"
    fi
}
gen_config -1 >"$CONFIG"
CONFIG_BYTES=$(stat -c %s "$CONFIG")

T0=$(now_us)
# shellcheck disable=SC2086 # EXTRA_ENV is a list of NAME=VALUE words
RUNNER=()
if [[ -n $CALLGRIND ]]; then
    # Instructions inside the reloads only (every thread's share of
    # Control::reload_file: the read, the table build, the swap).
    RUNNER=(valgrind --tool=callgrind "--callgrind-out-file=$WORK/callgrind.out"
        --collect-atstart=no "--toggle-collect=*reload_file*")
fi
taskset -c "$CPU_SY" env RUST_LOG=info $EXTRA_ENV "${RUNNER[@]}" "$SWITCHYARD" run -c "$CONFIG" >"$WORK/log" 2>&1 &
SY_PID=$!
while :; do
    kill -0 "$SY_PID" 2>/dev/null || die "switchyard exited at startup: $(tail -n 20 "$WORK/log")"
    code=$(taskset -c "$CPU_CLIENT" curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 1 \
        -H 'Host: app0.test' "http://127.0.0.1:$SY_PORT/" || true)
    [[ $code == 50[23] ]] && break
    (($(now_us) - T0 < 120000000)) || die "no answer for app0.test within 120 s: $(tail -n 20 "$WORK/log")"
    sleep 0.01
done
START_MS=$(ms_since "$T0")
sleep 1
RSS_START=$(status_kib VmRSS "$SY_PID")
echo "$ROUTES routes ($((CONFIG_BYTES / 1024)) KiB of TOML): ready in $START_MS ms, VmRSS $(mib "$RSS_START") MiB"

: >"$WORK/reloads.txt"
RSS_LIST=""
# The CPU time switchyard's threads spent between the ctl's start and its
# answer (utime + stime, in clock ticks): unlike the round trip, it leaves
# out the time the VM's CPU was taken by other guests (steal).
CPU_TICKS=0
TICK_HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
for ((r = 1; r <= RELOADS; r++)); do
    if [[ $CHANGE != 0 ]]; then
        gen_config "$r" >"$CONFIG.new" && mv "$CONFIG.new" "$CONFIG"
    fi
    c0=$(cpu_ticks "$SY_PID")
    t=$(now_us)
    taskset -c "$CPU_CLIENT" "$SWITCHYARD" ctl -s "$SOCK" reload >/dev/null 2>"$WORK/ctl.err" ||
        die "reload $r failed: $(cat "$WORK/ctl.err")"
    took=$(ms_since "$t")
    CPU_TICKS=$((CPU_TICKS + $(cpu_ticks "$SY_PID") - c0))
    echo "$took" >>"$WORK/reloads.txt"
    sleep 1
    rss=$(status_kib VmRSS "$SY_PID")
    RSS_LIST+="$(mib "$rss") "
    echo "reload $r: $took ms, VmRSS $(mib "$rss") MiB"
done
RSS_END=$(status_kib VmRSS "$SY_PID")
HWM=$(status_kib VmHWM "$SY_PID")
read -r R_MIN R_MED R_MAX <<<"$(min_med_max <"$WORK/reloads.txt")"
# The proxy's own account of its last reloads (read = parse + validate).
LOGGED=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/log" | grep -o 'read_ms=[0-9]* overrides_ms=[0-9]* total_ms=[0-9]* incremental=[a-z]*' | tail -n 3 | tr '\n' ';' || true)

state() { # QUERY -> "ms bytes"
    taskset -c "$CPU_CLIENT" curl -s --max-time 60 -o /dev/null --unix-socket "$SOCK" \
        -w '%{time_total} %{size_download}' "http://switchyard/v1/state$1" |
        awk '{ printf "%.0f %d\n", $1 * 1000, $2 }'
}
read -r ST_MS ST_BYTES <<<"$(state "")"
read -r SP_MS SP_BYTES <<<"$(state "?pool=p0")"
kill -0 "$SY_PID" 2>/dev/null || die "switchyard died: $(tail -n 20 "$WORK/log")"
IR_PER_RELOAD=""
if [[ -n $CALLGRIND ]] && ((RELOADS > 0)); then
    # Stopped here so that callgrind writes its counts.
    kill -TERM "$SY_PID"
    wait "$SY_PID" 2>/dev/null || true
    SY_PID=""
    IR=$(grep -o 'Collected : [0-9]*' "$WORK/log" | tail -n 1 | awk '{ print $3 }')
    [[ -n $IR ]] || die "no callgrind count in the log: $(tail -n 20 "$WORK/log")"
    IR_PER_RELOAD=$((IR / RELOADS))
fi

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
    COMMIT+=" (+ uncommitted changes in src/Cargo)"
fi
mkdir -p "$ROOT/bench-results"
RESULT=$ROOT/bench-results/scale-idle-$(date +%Y%m%d-%H%M%S).txt
{
    echo "# switchyard at rest with $ROUTES routes and pools, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT"
    echo "# $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $((CONFIG_BYTES / 1024)) KiB of TOML${EXTRA_ENV:+; env $EXTRA_ENV}"
    if [[ $CHANGE == 1 ]]; then
        echo "# each reload: the file changed (one pool's weight)"
    elif [[ $CHANGE == route ]]; then
        echo "# each reload: the file changed (one route's path_prefix)"
    elif [[ $CHANGE == far ]]; then
        echo "# each reload: the file changed (two pools far apart: walked)"
    elif [[ $CHANGE == part ]]; then
        echo "# each reload: the file changed (a pool and a route's sub-table: sections matched)"
    elif [[ $CHANGE == full ]]; then
        echo "# each reload: the file changed (every pool's green weight: an edit in place)"
    elif [[ $CHANGE == grow ]]; then
        echo "# each reload: the file changed (every pool's green weight, a pool added or removed at the end: walked, the rest matched)"
    elif [[ $CHANGE == whole ]]; then
        echo "# each reload: the file changed (every pool's green weight, a pool added or removed, [server] changed: a whole read)"
    else
        echo "# each reload: the same file"
    fi
    echo "start (spawn -> first answer):  $START_MS ms"
    echo "VmRSS after start:              $(mib "$RSS_START") MiB"
    echo "VmRSS after each reload:        $RSS_LIST"
    echo "VmRSS after $RELOADS reloads:          $(mib "$RSS_END") MiB (peak VmHWM $(mib "$HWM") MiB)"
    echo "a reload (ctl round trip):      min $R_MIN / median $R_MED / max $R_MAX ms"
    if ((RELOADS > 0)); then
        echo "CPU during a reload (mean):     $(awk -v t="$CPU_TICKS" -v hz="$TICK_HZ" -v n="$RELOADS" 'BEGIN { printf "%.0f", t * 1000 / hz / n }') ms (utime + stime while the ctl waited)"
    fi
    echo "logged (last 3):                $LOGGED"
    echo "GET /v1/state:                  $ST_BYTES bytes in $ST_MS ms"
    echo "GET /v1/state?pool=p0:          $SP_BYTES bytes in $SP_MS ms"
    if [[ -n $IR_PER_RELOAD ]]; then
        echo "instructions per reload:        $IR_PER_RELOAD (callgrind, inside Control::reload_file; times and RSS above are valgrind's)"
    fi
} >"$RESULT"
echo
cat "$RESULT"
echo "written to ${RESULT#"$ROOT"/}"
