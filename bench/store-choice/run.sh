#!/usr/bin/env bash
# redb vs fjall on Holdfast's history workload: builds (release, into /tmp/store-choice-target,
# never the repo's target/) and prints a Markdown table of medians.
#
#   bench/store-choice/run.sh                 # 3 runs of every measurement
#   bench/store-choice/run.sh --reps 5        # arguments go to the bench binary (--reps N, --only NAME)
#   BUILD_TIMES=1 bench/store-choice/run.sh   # also: clean release build time of each crate alone
#
# The databases live in fresh directories under $STORE_CHOICE_DIR (default: $TMPDIR or /tmp),
# removed after each measurement.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
export CARGO_TARGET_DIR=/tmp/store-choice-target

echo "## dependency trees (normal dependencies, unique crates including the crate itself)"
for c in redb fjall; do
    n=$(cargo tree -q -e normal -p "$c" --prefix none | sed 's/ (\*)//' | sort -u | wc -l)
    v=$(cargo tree -q -e normal -p "$c" --prefix none --depth 0)
    echo "  $v: $n crates"
done

if [[ "${BUILD_TIMES:-}" == 1 ]]; then
    echo "## clean release build, each crate alone (cargo clean between; $(nproc) cores)"
    for c in redb fjall; do
        cargo clean -q
        t0=$(date +%s.%N)
        cargo build -q --release --no-default-features --features "$c"
        t1=$(date +%s.%N)
        printf '  %s: %.1f s\n' "$c" "$(echo "$t1 - $t0" | bc)"
    done
fi

cargo build -q --release
echo "## bench ($(nproc) cores, databases under ${STORE_CHOICE_DIR:-${TMPDIR:-/tmp}}: $(df -h --output=source,fstype "${STORE_CHOICE_DIR:-${TMPDIR:-/tmp}}" 2>/dev/null | tail -1 || true))"
"$CARGO_TARGET_DIR/release/store-choice" "$@"
