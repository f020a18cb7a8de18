#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, default 60.
#
#   fuzz/run.sh                 # all targets, 60 s each
#   fuzz/run.sh 300 host        # one target, 5 minutes
#   PARALLEL=1 fuzz/run.sh 600  # every target at once (one process each),
#                               # output in fuzz/target/logs/<target>.log
#
# Works on the stable toolchain: cargo-fuzz needs nightly-only flags
# (-Zsanitizer=address), which RUSTC_BOOTSTRAP=1 unlocks on stable.
#
# libFuzzer reads the committed seeds in fuzz/corpus/<target>/ but writes what
# it discovers to fuzz/target/corpus/<target>/ (ignored by git), so a run never
# dirties the committed corpus. A crash is saved under fuzz/artifacts/<target>/;
# keep it as fuzz/corpus/<target>/crash-<what>-regression so that
# `cargo test --test fuzz_seeds` replays it on every CI run.
set -euo pipefail

cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(config config_plain config_reparse host admin_cmd h1_response h1_chunked request_head)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1

run_one() {
    mkdir -p "target/corpus/$1"
    cargo fuzz run "$1" "target/corpus/$1" "corpus/$1" -- -max_total_time="$seconds" -print_final_stats=1
}

failed=()
if [ -n "${PARALLEL:-}" ]; then
    cargo fuzz build
    mkdir -p target/logs
    pids=()
    for t in "${targets[@]}"; do
        echo "=== $t: ${seconds}s, log in fuzz/target/logs/$t.log" >&2
        run_one "$t" >"target/logs/$t.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!targets[@]}"; do
        wait "${pids[$i]}" || failed+=("${targets[$i]}")
    done
    for t in "${targets[@]}"; do
        echo "=== $t" >&2
        grep -E '^stat::|^Done [0-9]+ runs|^#[0-9]+ *DONE' "target/logs/$t.log" >&2 || true
    done
else
    for t in "${targets[@]}"; do
        echo "=== $t: ${seconds}s" >&2
        run_one "$t" || failed+=("$t")
    done
fi

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets that found a crash: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets ran ${seconds}s without a crash: ${targets[*]}" >&2
