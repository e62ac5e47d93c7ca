use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::context::{gql, state};
use super::guards::RoleGuard;
use super::types::{AuditLog, Conn, connection, connection_page, parse_id};
use crate::entity::audit_log::{AuditAction, EntityType};
use crate::entity::user::Role;
use crate::service::audit;

#[derive(InputObject, Default)]
pub struct AuditLogFilter {
    pub action: Option<AuditAction>,
    pub entity_type: Option<EntityType>,
    pub entity_id: Option<String>,
    pub actor_id: Option<ID>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Newest first. Read-only: nothing in the API edits or deletes audit rows.
    #[graphql(
        guard = "RoleGuard(Role::Manager)",
        complexity = "super::types::page_cost(first, child_complexity)"
    )]
    async fn audit_logs(
        &self,
        ctx: &Context<'_>,
        first: Option<i64>,
        after: Option<String>,
        filter: Option<AuditLogFilter>,
    ) -> async_graphql::Result<Conn<AuditLog>> {
        let page = connection_page(ctx, first, after)?;
        let f = filter.unwrap_or_default();
        let filter = audit::AuditFilter {
            action: f.action,
            entity_type: f.entity_type,
            entity_id: f.entity_id,
            actor_id: f
                .actor_id
                .as_ref()
                .map(|id| parse_id("filter.actorId", id))
                .transpose()
                .map_err(gql)?,
            from: f.from,
            to: f.to,
        };
        let rows = audit::list(state(ctx)?.services.conn(), &filter, page)
            .await
            .map_err(gql)?;
        Ok(connection(rows, |a| a.id, AuditLog::from))
    }
}
