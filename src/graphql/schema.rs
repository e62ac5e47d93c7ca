//! The one schema every GraphQL operation runs on, over every transport.

use async_graphql::{MergedObject, Schema};

use super::{alerts, audit, health, products, stock, subscriptions, uploads, users};
use crate::state::AppState;

#[derive(MergedObject, Default)]
pub struct Query(
    health::HealthQuery,
    users::UsersQuery,
    products::ProductsQuery,
    stock::StockQuery,
    audit::AuditQuery,
    alerts::AlertsQuery,
    uploads::UploadsQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    users::AuthMutation,
    users::UsersMutation,
    products::ProductsMutation,
    stock::StockMutation,
    alerts::AlertsMutation,
    uploads::UploadsMutation,
);

pub type AppSchema = Schema<Query, Mutation, subscriptions::Subscription>;

/// The schema with `state` for every resolver. It has no extensions: with
/// any installed, async-graphql sends every field of every answer through
/// the extension chain. What they would do per request (documents kept,
/// limits, the caller, metrics, error codes) the pipeline does once, around
/// the execution (`pipeline.rs`). The depth bound is the pipeline's
/// too, since it treats introspection apart; complexity is the schema's.
pub fn build(state: AppState) -> AppSchema {
    let max_complexity = state.config.graphql_max_complexity;
    Schema::build(
        Query::default(),
        Mutation::default(),
        subscriptions::Subscription,
    )
    .limit_complexity(max_complexity)
    .data(state)
    .finish()
}

/// The SDL that `export-schema` writes to `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(
        Query::default(),
        Mutation::default(),
        subscriptions::Subscription,
    )
    .finish()
    .sdl()
}
