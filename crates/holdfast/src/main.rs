//! The `holdfast` binary: `serve` runs the server; `bench` holds the clients the scripts in
//! `bench/` measure it with; further subcommands (pub, sub) come with the client SDK.

mod cli;

use std::process::ExitCode;

/// jemalloc, with a background thread that returns freed pages after 1 s.
///
/// Why (bench/allocators.sh, bench/RESULTS.md; medians of 3, 2 cores): server RSS per idle
/// keep-alive connection at 18,000 was glibc 1,282 B, jemalloc (defaults) 1,116 B, mimalloc
/// (THP off) 476 B, jemalloc with this configuration 206 B; keep-alive requests/s were the same
/// within noise (183.5k–186.1k, wrk-bound). The cost of an idle connection is dominated by what
/// its active phase freed: glibc keeps it (fragmentation), jemalloc and mimalloc purge only when
/// the allocator is called again, which an idle server no longer does. The background thread
/// purges anyway.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol (a `const char *`; `&u8` has the same
/// representation) before `main`, so no environment variable is needed. One background thread
/// is enough for 2–8 cores; `dirty_decay_ms` is the delay before freed pages go back to the OS.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &u8 = &b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000\0"[0];

fn main() -> ExitCode {
    cli::main()
}
