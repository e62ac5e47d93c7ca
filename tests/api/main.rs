//! The one integration test binary: every test starts the real application on
//! 127.0.0.1:0 against a fresh, migrated database (SQLite by default,
//! PostgreSQL when STOCKROOM_TEST_POSTGRES_URL is set) and talks HTTP to it.
//! Tests of one database only are ignored on the other (chosen at compile time, build.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod telegram;

mod alerts;
mod audit;
mod auth;
mod browser;
mod cache;
mod cli;
mod clients;
mod console;
mod constraints;
mod contract;
mod graphql_http;
mod http;
mod layers;
mod metrics;
mod products;
mod resume;
mod roles;
mod secrets;
mod security;
mod stock;
mod streams;
mod subscriptions;
mod uploads;
