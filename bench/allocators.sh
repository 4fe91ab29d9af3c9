#!/usr/bin/env bash
# Global allocator comparison for Holdfast: glibc (system) vs jemalloc vs mimalloc, on
#   (a) server RSS per idle keep-alive connection at 18,000 connections (bench/idle.sh), and
#   (b) keep-alive requests/s (bench/keepalive.sh, wrk -t1 -c50 -d10s).
#
# Each variant is built from a copy of this work tree whose `main.rs` declares that
# `#[global_allocator]` (the tree itself is not touched), into target/bench-allocators so that a
# second run only relinks. Repetitions are interleaved across variants; medians are reported.
#
# Environment (all optional):
#   VARIANTS="system jemalloc jemalloc-bg mimalloc"
#            (also: mimalloc-nothp, mimalloc-purge0, mimalloc-thp; see below)
#   REPS=3  N=18000  DURATION=10s
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

VARIANTS=${VARIANTS:-"system jemalloc jemalloc-bg mimalloc"}
REPS=${REPS:-3}
N=${N:-18000}
DURATION=${DURATION:-10s}

# Per variant: the dependency line, the declaration, and the server's extra environment.
declare -A DEP DECL ENVS
DEP[system]=''
DECL[system]=''
DEP[jemalloc]='tikv-jemallocator = "0.7"'
DECL[jemalloc]='#[global_allocator] static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;'
# jemalloc purges freed pages only as it is called (10 s dirty decay), so a server that has gone
# idle keeps what its connections used while active; a background thread and a 1 s decay return
# it. Set in the binary through jemalloc's `malloc_conf` symbol (no environment needed): this is
# what crates/holdfast/src/main.rs uses.
DEP[jemalloc-bg]=${DEP[jemalloc]}
DECL[jemalloc-bg]="${DECL[jemalloc]}
#[export_name = \"_rjem_malloc_conf\"]
static MALLOC_CONF: &u8 = &b\"background_thread:true,max_background_threads:1,dirty_decay_ms:1000\\0\"[0];"
# mimalloc 3 asks for transparent huge pages by default (RSS then moves in 2 MiB steps):
# `mimalloc` turns that off with the environment, `mimalloc-nothp` at build time, and
# `mimalloc-thp` leaves it on, for comparison.
MI_DECL='#[global_allocator] static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;'
DEP[mimalloc]='mimalloc = "0.1"'
DECL[mimalloc]=$MI_DECL
ENVS[mimalloc]='MIMALLOC_ALLOW_THP=0'
DEP[mimalloc-thp]='mimalloc = "0.1"'
DECL[mimalloc-thp]=$MI_DECL
DEP[mimalloc-nothp]='mimalloc = { version = "0.1", features = ["no_thp"] }'
DECL[mimalloc-nothp]=$MI_DECL
# The same, purging freed pages at once instead of after 1 s (mimalloc has no background thread:
# a delayed purge waits for the next call into the allocator, which an idle server never makes).
DEP[mimalloc-purge0]=${DEP[mimalloc-nothp]}
DECL[mimalloc-purge0]=$MI_DECL
ENVS[mimalloc-purge0]='MIMALLOC_PURGE_DELAY=0'

need cargo cargo
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
for v in $VARIANTS; do [ -n "${DECL[$v]+set}" ] || die "unknown variant $v"; done

# The work tree as it is (tracked and untracked files, not ignored ones; reading the index does
# not change it), or everything but target/ outside a git checkout.
SRC="$WORK/src"
mkdir -p "$SRC"
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -x -C "$SRC"
else
    tar -C "$ROOT" --exclude=./target -cf - . | tar -x -C "$SRC"
fi

declare -A BIN
for v in $VARIANTS; do
    log "building variant $v"
    sed -i -E '/^(tikv-jemallocator|mimalloc) *=/d' "$SRC/crates/holdfast/Cargo.toml"
    if [ -n "${DEP[$v]}" ]; then
        sed -i "s|^\[dependencies\]$|[dependencies]\n${DEP[$v]//|/\\|}|" "$SRC/crates/holdfast/Cargo.toml"
    fi
    cat >"$SRC/crates/holdfast/src/main.rs" <<EOF
//! bench/allocators.sh variant: $v
mod cli;
${DECL[$v]}
fn main() -> std::process::ExitCode {
    cli::main()
}
EOF
    (cd "$SRC" && CARGO_TARGET_DIR="$ROOT/target/bench-allocators" cargo build --release -q -p holdfast) >&2 ||
        die "build of variant $v failed"
    # Kept beside the build for a look afterwards (perf, longer holds).
    BIN[$v]="$ROOT/target/bench-allocators/holdfast-$v"
    rm -f "${BIN[$v]}" # a copy still running would make cp fail (text file busy)
    cp "$ROOT/target/bench-allocators/release/holdfast" "${BIN[$v]}"
done

declare -A IDLE RPS
printf '%-15s %4s %8s %10s\n' variant rep B/conn req/s
for rep in $(seq "$REPS"); do
    for v in $VARIANTS; do
        out=$(HOLDFAST_BIN="${BIN[$v]}" HOLDFAST_ENV="${ENVS[$v]:-}" SERVERS=holdfast NS="$N" REPS=1 \
            "$ROOT/bench/idle.sh")
        per=$(awk -v n="$N" '$1 == "holdfast" && $2 == n && $3 == 1 && NF == 6 { print $6 }' <<<"$out")
        out=$(HOLDFAST_BIN="${BIN[$v]}" HOLDFAST_ENV="${ENVS[$v]:-}" SERVERS=holdfast CLIENTS=wrk MODES=keepalive \
            REPS=1 DURATION="$DURATION" "$ROOT/bench/keepalive.sh")
        rps=$(awk '$1 == "wrk" && $2 == "holdfast" && $3 == "keepalive" && $4 == 1 { print $5 }' <<<"$out")
        if [ -z "$per" ] || [ -z "$rps" ]; then die "variant $v: no result"; fi
        printf '%-15s %4s %8s %10s\n' "$v" "$rep" "$per" "$rps"
        IDLE[$v]+="$per "
        RPS[$v]+="$rps "
    done
done

echo
echo "summary (medians of $REPS; idle: B of server RSS per idle connection at $N; keep-alive: wrk -t1 -c50 -d$DURATION)"
printf '%-15s %8s %10s  %s\n' variant B/conn req/s env
for v in $VARIANTS; do
    # shellcheck disable=SC2086 # word lists
    printf '%-15s %8s %10s  %s\n' "$v" "$(median ${IDLE[$v]})" "$(median ${RPS[$v]})" "${ENVS[$v]:--}"
done
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
