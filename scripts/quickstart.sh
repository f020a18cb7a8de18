#!/usr/bin/env bash
# One command from a fresh checkout: build, then serve the shipped example
# config (config/switchyard.toml) with built-in origins on its backends.
#   http://127.0.0.1:8080 with Host app.localhost; admin socket .run/admin.sock
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
exec target/release/switchyard demo -c config/switchyard.toml
