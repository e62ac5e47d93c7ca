//! Stockroom: an inventory service behind a GraphQL API.

pub mod backup;
pub mod batch;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod digest;
pub mod entity;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod notifier;
pub mod sealing;
pub mod service;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod uploads;
pub mod validate;

/// The version and the commit the binary was built from (`build.rs`), as
/// `stockroom --version` prints it: `0.1.0 (commit 1a2b3c4d5e6f)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("STOCKROOM_COMMIT"),
    ")"
);
