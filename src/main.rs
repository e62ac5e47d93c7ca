use std::process::ExitCode;

use clap::Parser;
use stockroom::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    stockroom::alloc::tune();
    run(Cli::parse()).await
}
