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
    run(Cli::parse()).await
}
