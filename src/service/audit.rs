//! The audit log: one row per state change or login attempt, written in the
//! transaction that made the change. Append-only: nothing here updates or
//! deletes a row.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::Order;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Select};
use serde_json::Value;
use uuid::Uuid;

use super::context::Txn;
use super::positions::{self, Position, Tail};
use super::{Actor, Page, PageRequest, paginate};
use crate::entity::audit_log::{self, AuditAction, EntityType};
use crate::error::AppResult;
use crate::events::DomainEvent;

const MAX_SUMMARY: usize = 500;

/// What happened, to be written by [`record`].
pub struct AuditEntry {
    pub action: AuditAction,
    pub entity_type: EntityType,
    pub entity_id: Option<String>,
    pub summary: String,
    /// `{ "before": {...}, "after": {...} }`; never secrets.
    pub changes: Option<Value>,
}

impl AuditEntry {
    pub fn new(action: AuditAction, entity_type: EntityType, entity_id: impl ToString) -> Self {
        Self {
            action,
            entity_type,
            entity_id: Some(entity_id.to_string()),
            summary: String::new(),
            changes: None,
        }
    }

    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = summary.into();
        self
    }

    pub fn changes(mut self, before: Option<Value>, after: Option<Value>) -> Self {
        self.changes = Some(serde_json::json!({ "before": before, "after": after }));
        self
    }
}

/// Writes one audit row in the caller's transaction; `auditLogAdded`
/// subscribers hear of it once that commits.
pub async fn record(txn: &Txn, actor: &Actor, entry: AuditEntry) -> AppResult<()> {
    record_all(txn, vec![row(actor, entry)]).await
}

/// The row `record` would write.
pub fn row(actor: &Actor, entry: AuditEntry) -> audit_log::Model {
    let clip = |s: &Option<String>, n: usize| s.as_ref().map(|v| v.chars().take(n).collect());
    audit_log::Model {
        id: Uuid::now_v7(),
        occurred_at: crate::db::now(),
        actor_id: actor.user_id,
        action: entry.action,
        entity_type: entry.entity_type,
        entity_id: entry.entity_id,
        summary: entry.summary.chars().take(MAX_SUMMARY).collect(),
        changes: entry.changes,
        request_id: clip(&actor.meta.request_id, 128),
        ip: clip(&actor.meta.ip, 64),
        user_agent: clip(&actor.meta.user_agent, 512),
        // Given by `record_all`, from the transaction that writes it.
        tx: 0,
    }
}

/// Audit rows at once ([`crate::db::insert_all`]), each heard of once `txn` commits.
pub async fn record_all(txn: &Txn, mut rows: Vec<audit_log::Model>) -> AppResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let tx = txn.tx().await?;
    for row in &mut rows {
        row.tx = tx;
    }
    crate::db::insert_all::<audit_log::Entity>(&**txn, &rows, "").await?;
    for row in rows {
        txn.emit(DomainEvent::AuditLogAdded {
            entry: Arc::new(row),
        });
    }
    Ok(())
}

/// The audit rows a stream at `position` has not been sent, in `(tx, id)`
/// order ([`positions::after`]).
pub async fn since(
    conn: &impl ConnectionTrait,
    position: &Position,
    limit: usize,
) -> AppResult<Tail<audit_log::Model>> {
    positions::after::<audit_log::Entity, _>(conn, position, limit, |q| q).await
}

/// The fields of an `AuditLogFilter`, already parsed.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    pub entity_type: Option<EntityType>,
    pub entity_id: Option<String>,
    pub actor_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

fn filtered(filter: &AuditFilter) -> Select<audit_log::Entity> {
    let mut q = audit_log::Entity::find();
    if let Some(a) = filter.action {
        q = q.filter(audit_log::Column::Action.eq(a));
    }
    if let Some(t) = filter.entity_type {
        q = q.filter(audit_log::Column::EntityType.eq(t));
    }
    if let Some(id) = &filter.entity_id {
        q = q.filter(audit_log::Column::EntityId.eq(id.clone()));
    }
    if let Some(id) = filter.actor_id {
        q = q.filter(audit_log::Column::ActorId.eq(id));
    }
    if let Some(from) = filter.from {
        q = q.filter(audit_log::Column::OccurredAt.gte(from));
    }
    if let Some(to) = filter.to {
        q = q.filter(audit_log::Column::OccurredAt.lt(to));
    }
    q
}

/// Newest first.
pub async fn list(
    conn: &impl ConnectionTrait,
    filter: &AuditFilter,
    page: PageRequest,
) -> AppResult<Page<audit_log::Model>> {
    paginate(
        conn,
        filtered(filter),
        audit_log::Column::Id,
        Order::Desc,
        page,
    )
    .await
}
