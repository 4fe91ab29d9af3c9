//! The `holdfast` binary: `serve` runs the server; `bench` holds the clients the scripts in
//! `bench/` measure it with; `pub` and `sub` publish and subscribe with the client SDK.

mod cli;

use std::process::ExitCode;

/// jemalloc, with a background thread that returns freed pages after 1 s.
///
/// Why (bench/allocators.sh, bench/RESULTS.md; medians of 3 on 2 cores): server RSS per idle
/// keep-alive connection at 18,000 was glibc 837 B (runs from 146 to 1,308), jemalloc with its
/// defaults 1,148 B, mimalloc with THP off 466 B, and jemalloc configured as below 152 B;
/// keep-alive requests/s were equal within noise (180k–189k, bound by the wrk client). An idle
/// connection's cost is dominated by what its active phase freed: glibc keeps it (fragmentation),
/// jemalloc and mimalloc purge only when the allocator is next called, which an idle server no
/// longer does. The background thread purges anyway.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol (a `const char *`; `&u8` has the same
/// representation) before `main`, so no environment variable is needed. One background thread
/// serves every arena (the default started four on 2 cores, for the same RSS); `dirty_decay_ms`
/// is how long freed pages stay before going back to the OS.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &u8 = &b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000\0"[0];

fn main() -> ExitCode {
    cli::main()
}
