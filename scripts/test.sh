#!/usr/bin/env bash
# Runs every test: installs what tests need, checks formatting and lints, then
# the unit and end-to-end tests against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets -q -- -D warnings
cargo test --all-targets 2>&1
