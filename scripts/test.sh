#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and integration tests over real sockets (with curl
# Python and Chromium as independent clients), the Autobahn WebSocket suite, then a short fuzz
# smoke of every parser.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
scripts/autobahn.sh
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" scripts/fuzz-smoke.sh
