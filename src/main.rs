use std::process::ExitCode;

use clap::Parser;
use stockroom::cli::{Cli, run};

/// jemalloc rather than glibc's malloc. glibc raises its mmap threshold each
/// time it frees a mapped block, so after the first login Argon2's 19 MiB
/// block came from the heap and stayed resident: 44 MB idle after one login
/// against 23 MB before it. jemalloc returns it (28 MB after logins) and
/// spends less CPU per request: about a quarter of a cached lookup's time
/// went to glibc's malloc and free (`malloc_consolidate`, `unlink_chunk`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // jemalloc purges the pages a burst freed (10,000 subscribers' checks at
    // once, an import) only on later activity in the same arena: an instance
    // that went quiet after a burst kept them resident. A background thread
    // returns them after the decay time (10 s) whatever the load.
    #[cfg(not(target_env = "msvc"))]
    if let Err(err) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("jemalloc's background purging is off: {err}");
    }
    run(Cli::parse()).await
}
