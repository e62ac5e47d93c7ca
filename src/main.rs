use std::process::ExitCode;

use clap::Parser;
use stockroom::cli::{Cli, run};

/// glibc malloc showed up as a tenth of the CPU time under load, and kept
/// per-thread arenas resident after it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    run(Cli::parse()).await
}
