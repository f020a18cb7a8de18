#!/usr/bin/env bash
# Runs every test: installs what tests need, checks formatting and lints, runs
# the unit and end-to-end tests against the real binary, then cross-builds for
# arm64 (Raspberry Pi) and runs the end-to-end tests again with that binary
# under qemu (scripts/arm64.sh; about 10 minutes from a fresh target dir).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets -q -- -D warnings
cargo test --all-targets 2>&1
scripts/arm64.sh
