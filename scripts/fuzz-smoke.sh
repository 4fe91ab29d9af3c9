#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a short time and fails if any of them finds a crash.
#
#   scripts/fuzz-smoke.sh                 # 30 s per target
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh
#
# Installs cargo-fuzz when missing. cargo-fuzz passes nightly-only flags (-Zsanitizer, …): it uses
# the nightly toolchain when rustup has one, and otherwise stable with RUSTC_BOOTSTRAP=1, which
# lets stable accept them (FUZZ_TOOLCHAIN=stable forces that path). A crashing input is left in
# fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-30}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [[ "${FUZZ_TOOLCHAIN:-}" != stable ]] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
# FUZZ_ARGS adds cargo-fuzz options, e.g. FUZZ_ARGS="-s none" for no sanitizer.
read -r -a extra <<<"${FUZZ_ARGS:-}"

failed=()
for target in $("${fuzz[@]}" list); do
    echo "fuzz-smoke: $target for ${seconds}s (${fuzz[*]})"
    # corpus/ is not committed: it starts from the seeds/ inputs on a clean clone.
    mkdir -p "corpus/$target" "seeds/$target"
    if ! "${fuzz[@]}" run "${extra[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz-smoke: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: all targets ran ${seconds}s without a crash"
