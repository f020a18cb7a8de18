# benches/callgrind_lib.sh: what benches/callgrind.sh and
# benches/callgrind_h2.sh share, sourced by both (not run alone).
#
# The sourcing script defines die MESSAGE, wait_ok PORT (until the port
# answers) and load PORT COUNT (COUNT requests, checked), and sets N and TOP.
# cg_setup gives it WORK (a temp dir, removed on exit unless KEEP is set)
# and PIDS (processes stopped on exit); cg_measure fills IR.

cg_setup() { # PREFIX: the work dir and the exit traps
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap cg_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cg_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [[ -n ${KEEP:-} ]] && echo "kept $WORK" || rm -rf "$WORK"
}

# cg_measure KEY PORT WARMUP TITLE CMD...: CMD runs under callgrind; after
# WARMUP requests its counters are zeroed, N requests are sent and the
# counters dumped: IR[KEY] = instructions / N. With TOP > 0, also CMD's top
# functions, under the heading TITLE.
declare -A IR
cg_measure() {
    local key=$1 port=$2 warmup=$3 title=$4 pid dump total
    shift 4
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$key.out.%p" "$@" >"$WORK/$key.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ok "$port"
    load "$port" "$warmup"
    callgrind_control -z "$pid" >/dev/null 2>&1
    load "$port" "$N"
    callgrind_control -d "$pid" >/dev/null 2>&1
    dump="$WORK/$key.out.$pid.1"
    for ((i = 0; i < 100; i++)); do
        [[ -s $dump ]] && break
        sleep 0.1
    done
    [[ -s $dump ]] || die "no callgrind dump for $key"
    total=$(awk -F': ' '/^summary:/ { print $2 }' "$dump")
    [[ $total =~ ^[0-9]+$ ]] || die "no instruction total in $dump"
    IR[$key]=$((total / N))
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if ((TOP > 0)); then
        echo "## $title: top $TOP functions (self instructions over the $N requests)"
        callgrind_annotate --auto=no --threshold=100 "$dump" 2>/dev/null |
            grep -E '^ *[0-9,]+ \( *[0-9.]+%\) ' | grep -v 'PROGRAM TOTALS' |
            grep -v -E '__rust_begin_short_backtrace|libc_start|below main|\?\?\?:main |0x0000' |
            awk -v n="$TOP" 'NR <= n' # reads it all: head would end the pipe early (SIGPIPE, and pipefail)
        echo
    fi
}
