#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and integration tests over real sockets (with curl,
# Python and Chromium as independent clients), the Autobahn WebSocket suite, then a short fuzz
# smoke of every parser. Ends with one line: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
scripts/autobahn.sh
# 15 s per target (eight targets: two minutes); long runs are done by hand (fuzz/README.md).
FUZZ_SECONDS="${FUZZ_SECONDS:-15}" scripts/fuzz-smoke.sh

# cargo prints one "test result:" line per test binary; add them up for one closing line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
