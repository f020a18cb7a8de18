# benches/proc.sh: process accounting from /proc, sourced by
# benches/compare.sh and benches/tls_compare.sh (not run alone).

# The pid and all its descendants (reads /proc with builtins: no fork per process).
tree_pids() {
    local root=$1 f line pid cur
    local -a fields queue out
    local -A kids=()
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        pid=${line%% *}
        # After "pid (comm) ": state, ppid, ... (comm may hold spaces).
        read -r -a fields <<<"${line##*) }"
        kids[${fields[1]}]+="$pid "
    done
    queue=("$root")
    out=()
    while ((${#queue[@]})); do
        cur=${queue[0]}
        queue=("${queue[@]:1}")
        out+=("$cur")
        for pid in ${kids[$cur]:-}; do
            queue+=("$pid")
        done
    done
    echo "${out[@]}"
}

# tree_ticks PID: utime + stime (clock ticks, all threads) summed over the tree.
tree_ticks() {
    local total user
    read -r total user <<<"$(tree_ticks_split "$1")"
    echo "$total"
}

# tree_ticks_split PID: "TOTAL USER", utime + stime and utime alone (clock
# ticks, all threads) summed over the tree: the kernel's share is the rest.
tree_ticks_split() {
    local root=$1 total=0 user=0 pid line
    local -a fields
    for pid in $(tree_pids "$root"); do
        read -r line 2>/dev/null <"/proc/$pid/stat" || continue
        read -r -a fields <<<"${line##*) }"
        # fields[0] is stat's field 3 (state): utime (14) and stime (15) are 11 and 12.
        total=$((total + fields[11] + fields[12]))
        user=$((user + fields[11]))
    done
    echo "$total $user"
}
