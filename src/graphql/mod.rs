//! The GraphQL API. Arrows point one way: `schema` assembles the resolver
//! modules, which read their context through `context`; `pipeline` runs
//! every operation of every transport on the schema; nothing below imports
//! the pipeline.

pub mod alerts;
pub mod audit;
pub mod codes;
pub mod context;
pub mod document;
pub mod fanout;
pub mod guards;
pub mod health;
pub mod loaders;
pub mod observe;
pub mod pipeline;
pub mod products;
pub mod schema;
pub mod stock;
pub mod subscriptions;
pub mod types;
pub mod uploads;
pub mod users;
