use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::context::{actor, gql, state};
use super::guards::RoleGuard;
use super::types::{Conn, StockMovement, connection, connection_page, parse_id};
use crate::entity::stock_movement::MovementKind;
use crate::entity::user::Role;
use crate::service::{group_commit, stock};

#[derive(InputObject)]
pub struct StockMovementInput {
    pub product_id: ID,
    pub kind: MovementKind,
    /// > 0, except ADJUSTMENT: non-zero signed delta.
    pub quantity: i64,
    pub note: Option<String>,
    pub reference: Option<String>,
    /// The same key again returns the first movement and applies nothing.
    pub idempotency_key: Option<String>,
}

#[derive(InputObject, Default)]
pub struct StockMovementFilter {
    pub product_id: Option<ID>,
    pub kind: Option<MovementKind>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct StockQuery;

#[Object]
impl StockQuery {
    /// Newest first.
    #[graphql(
        guard = "RoleGuard(Role::Viewer)",
        complexity = "super::types::page_cost(first, child_complexity)"
    )]
    async fn stock_movements(
        &self,
        ctx: &Context<'_>,
        first: Option<i64>,
        after: Option<String>,
        filter: Option<StockMovementFilter>,
    ) -> async_graphql::Result<Conn<StockMovement>> {
        let page = connection_page(ctx, first, after)?;
        let f = filter.unwrap_or_default();
        let filter = stock::MovementFilter {
            product_id: f
                .product_id
                .as_ref()
                .map(|id| parse_id("filter.productId", id))
                .transpose()
                .map_err(gql)?,
            kind: f.kind,
            from: f.from,
            to: f.to,
        };
        let rows = stock::list(state(ctx)?.services.conn(), &filter, page)
            .await
            .map_err(gql)?;
        Ok(connection(rows, |m| m.id, StockMovement::from))
    }
}

#[derive(Default)]
pub struct StockMutation;

#[Object]
impl StockMutation {
    /// INSUFFICIENT_STOCK (with `available` and `requested`) when stock would
    /// go below zero; nothing is written then.
    #[graphql(guard = "RoleGuard(Role::Staff)")]
    async fn record_stock_movement(
        &self,
        ctx: &Context<'_>,
        input: StockMovementInput,
    ) -> async_graphql::Result<StockMovement> {
        let product_id = parse_id("productId", &input.product_id).map_err(gql)?;
        let actor = actor(ctx).map_err(gql)?;
        let state = state(ctx)?;
        let movement = group_commit::record(
            &state.services,
            &actor,
            stock::MovementInput {
                product_id,
                kind: input.kind,
                quantity: input.quantity,
                note: input.note,
                reference: input.reference,
                idempotency_key: input.idempotency_key,
            },
        )
        .await
        .map_err(gql)?;
        Ok(movement.into())
    }
}
