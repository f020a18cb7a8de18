#!/usr/bin/env bash
# benches/callgrind.sh: user-space instructions per proxied request, counted
# by valgrind's callgrind (deterministic, unlike the CPU time of a VM that
# shares its host): switchyard and nginx doing the same job as in
# benches/compare.sh (a 90/10 pool of two nginx origins, Host kept,
# X-Forwarded-For/-Proto/-Host set, upstream keep-alive).
#
# Each proxy runs under callgrind; 2 000 warm-up requests, then the counters
# are zeroed, N requests are sent (h2load --h1, 10 keep-alive connections),
# and the counters dumped: instructions / N is the figure. The origins run
# natively. Instructions are not time (a `rep movsb` memcpy counts as one,
# a syscall's kernel work not at all), so this tells where user-space work
# goes and whether a change removed some, not how fast a proxy is.
#
# Usage: benches/callgrind.sh                       (N=20000, builds switchyard)
#        SWITCHYARD_BIN=/path/to/switchyard benches/callgrind.sh
#        TOP=30 benches/callgrind.sh               (also each proxy's top functions)
# Needs valgrind, nginx and h2load (scripts/setup.sh bench installs them).

set -euo pipefail

N=${N:-20000}
TOP=${TOP:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}

die() {
    echo "callgrind.sh: $*" >&2
    exit 1
}

[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer (got '$N')"
[[ $TOP =~ ^[0-9]+$ ]] || die "TOP must be a number (got '$TOP')"
for tool in valgrind callgrind_control callgrind_annotate h2load curl; do
    command -v "$tool" >/dev/null 2>&1 || die "needs $tool (scripts/setup.sh bench installs it)"
done
[[ -x $NGINX ]] || die "needs nginx (scripts/setup.sh bench installs it)"
if [[ -n ${SWITCHYARD_BIN:-} ]]; then
    [[ -x $SWITCHYARD ]] || die "SWITCHYARD_BIN=$SWITCHYARD is not an executable"
else
    (cd "$ROOT" && cargo build --release --bin switchyard) || die "cargo build --release failed"
fi

# shellcheck source=benches/callgrind_lib.sh
source "$ROOT/benches/callgrind_lib.sh"
cg_setup switchyard-callgrind

pick_port() {
    local p used
    used=$(awk 'NR > 1 { split($2, a, ":"); print strtonum("0x" a[2]) }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
    for ((i = 0; i < 1000; i++)); do
        p=$((20000 + RANDOM % 20000))
        if ! grep -qx "$p" <<<"$used" && [[ " ${TAKEN:-} " != *" $p "* ]]; then
            TAKEN="${TAKEN:-} $p"
            echo "$p"
            return 0
        fi
    done
    die "no free port"
}
TAKEN=""
BLUE_PORT=$(pick_port)
GREEN_PORT=$(pick_port)
SY_PORT=$(pick_port)
NGINX_PORT=$(pick_port)
HOST=app.local
WORKERS=1

# The job, as benches/compare.sh configures it.
# shellcheck source=benches/jobs.sh
source "$ROOT/benches/jobs.sh"
origin_conf blue "$BLUE_PORT"
origin_conf green "$GREEN_PORT"
nginx_proxy_conf
mkdir -p "$WORK/switchyard"
switchyard_base "$WORK/switchyard" "$SY_PORT" >"$WORK/switchyard/switchyard.toml"

for origin in blue green; do
    "$NGINX" -p "$WORK/$origin" -c "$WORK/$origin/nginx.conf" -e "$WORK/$origin/error.log" -g 'daemon off;' &
    PIDS+=($!)
done

# wait_ok PORT: until the port answers 200 for $HOST (valgrind starts slowly).
wait_ok() {
    for ((i = 0; i < 300; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -H "Host: $HOST" "http://127.0.0.1:$1/" 2>/dev/null) == 200 ]] && return 0
        sleep 0.2
    done
    die "nothing answers 200 on port $1"
}
wait_ok "$BLUE_PORT"
wait_ok "$GREEN_PORT"

load() { # PORT COUNT
    local out
    out=$(h2load --h1 -n "$2" -c 10 -H ":authority: $HOST" "http://127.0.0.1:$1/")
    grep -q "status codes: $2 2xx" <<<"$out" || die "not every request got a 2xx: $(grep 'status codes' <<<"$out")"
}

cg_measure switchyard "$SY_PORT" 2000 switchyard "$SWITCHYARD" run --config "$WORK/switchyard/switchyard.toml"
# One process under callgrind: no master.
cg_measure nginx "$NGINX_PORT" 2000 nginx "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off; master_process off;'

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
echo "# callgrind, $(date -u '+%Y-%m-%d %H:%M') UTC, commit $commit, $N requests (h2load --h1 -c 10) after 2 000 warm-up"
printf '%-12s %12s\n' "target" "instr/req"
printf '%-12s %12s\n' switchyard "${IR[switchyard]}" nginx "${IR[nginx]}"
awk -v a="${IR[switchyard]}" -v b="${IR[nginx]}" 'BEGIN { printf "switchyard / nginx instructions per request: %.2f\n", a / b }'
