//! The stock ledger. Stock changes only here, and only through one conditional
//! UPDATE per movement: no read-modify-write, no negative stock, and a ledger
//! row with the balance after every change.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::Order;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter,
    QuerySelect, Select, Statement, Value,
};
use serde_json::json;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::{Actor, Page, PageRequest, optional_text, paginate};
use crate::db::{Db, WriteTxn};
use crate::entity::audit_log::{AuditAction, EntityType};
use crate::entity::product;
use crate::entity::stock_movement::{self, MovementKind};
use crate::error::{AppError, AppResult, MOVEMENTS_IDEMPOTENCY_KEY, on_unique_violation};
use crate::events::DomainEvent;

pub const MAX_NOTE: usize = 500;
pub const MAX_REFERENCE: usize = 100;
pub const MAX_IDEMPOTENCY_KEY: usize = 100;

#[derive(Clone, Debug)]
pub struct MovementInput {
    pub product_id: Uuid,
    pub kind: MovementKind,
    pub quantity: i64,
    pub note: Option<String>,
    pub reference: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A movement that passed validation, with its signed delta.
#[derive(Clone, Debug)]
pub struct ValidMovement {
    pub product_id: Uuid,
    pub kind: MovementKind,
    pub delta: i64,
    pub note: Option<String>,
    pub reference: Option<String>,
    pub idempotency_key: Option<String>,
}

impl ValidMovement {
    /// Fingerprint of what the request asks for, to tell a replay of an
    /// idempotency key from a different request reusing it.
    fn request_hash(&self) -> String {
        let canonical = json!([
            self.product_id,
            self.kind,
            self.delta,
            self.note,
            self.reference
        ]);
        crate::digest::sha256_hex(canonical.to_string())
    }
}

pub fn validate(input: &MovementInput) -> AppResult<ValidMovement> {
    let q = input.quantity;
    if q.unsigned_abs() > i32::MAX as u64 {
        return Err(AppError::bad_input(
            "quantity",
            format!("quantity must be between -{0} and {0}", i32::MAX),
        ));
    }
    let delta = match input.kind {
        MovementKind::Inbound | MovementKind::Return if q > 0 => q,
        MovementKind::Outbound if q > 0 => -q,
        MovementKind::Adjustment if q != 0 => q,
        MovementKind::Adjustment => {
            return Err(AppError::bad_input(
                "quantity",
                "quantity of an ADJUSTMENT must be a non-zero signed delta",
            ));
        }
        _ => {
            return Err(AppError::bad_input(
                "quantity",
                "quantity must be greater than zero",
            ));
        }
    };
    let idempotency_key = match input.idempotency_key.as_deref().map(str::trim) {
        None => None,
        Some("") => {
            return Err(AppError::bad_input(
                "idempotencyKey",
                "idempotencyKey must not be empty",
            ));
        }
        Some(k) => optional_text("idempotencyKey", Some(k), MAX_IDEMPOTENCY_KEY)?,
    };
    Ok(ValidMovement {
        product_id: input.product_id,
        kind: input.kind,
        delta,
        note: optional_text("note", input.note.as_deref(), MAX_NOTE)?,
        reference: optional_text("reference", input.reference.as_deref(), MAX_REFERENCE)?,
        idempotency_key,
    })
}

fn audit_action(kind: MovementKind) -> AuditAction {
    match kind {
        MovementKind::Inbound => AuditAction::StockInbound,
        MovementKind::Outbound => AuditAction::StockOutbound,
        MovementKind::Return => AuditAction::StockReturn,
        MovementKind::Adjustment => AuditAction::StockAdjustment,
    }
}

/// Records a movement. Without an idempotency key it joins the next group
/// commit ([`super::group_commit`]); with one, or alone in its batch, it
/// runs in a transaction of its own ([`record_one`]). Either way the answer
/// is the one a transaction of its own would give.
#[tracing::instrument(skip_all, fields(product_id = %input.product_id, kind = ?input.kind))]
pub async fn record(
    db: &Db,
    queue: &super::group_commit::MovementQueue,
    actor: &Actor,
    input: MovementInput,
) -> AppResult<stock_movement::Model> {
    let movement = validate(&input)?;
    if movement.idempotency_key.is_none() {
        return queue.submit(db, actor, movement).await;
    }
    record_one(db, actor, &movement).await
}

/// Records a movement in its own transaction. With an idempotency key, a
/// repeat of the same request returns the first movement and applies nothing;
/// the same key with a different request is a CONFLICT.
pub async fn record_one(
    db: &Db,
    actor: &Actor,
    movement: &ValidMovement,
) -> AppResult<stock_movement::Model> {
    let hash = movement.request_hash();

    // The transaction lives only inside this block: on any error it is
    // rolled back and its connection returned before the replay lookup below.
    let result = async {
        let txn = db.begin_write().await?;
        if let Some(key) = &movement.idempotency_key
            && let Some(existing) = find_by_key(&*txn, actor.user_id, key).await?
        {
            return replay(existing, &hash);
        }
        let (saved, _) = apply_hashed(&txn, actor, movement, Some(hash.clone())).await?;
        txn.commit().await?;
        Ok(saved)
    }
    .await;
    match (result, &movement.idempotency_key) {
        // On PostgreSQL a request racing one with the same key may have waited
        // on the product row and then failed (the unique key, or the stock the
        // first one used up): if the first one committed, answer with it.
        (
            Err(
                err @ (AppError::Conflict(_)
                | AppError::InsufficientStock { .. }
                | AppError::NotFound(_)),
            ),
            Some(key),
        ) => match find_by_key(db.conn(), actor.user_id, key).await {
            Ok(Some(existing)) => replay(existing, &hash),
            _ => Err(err),
        },
        (result, _) => result,
    }
}

fn replay(existing: stock_movement::Model, hash: &str) -> AppResult<stock_movement::Model> {
    if existing.request_hash.as_deref() == Some(hash) {
        Ok(existing)
    } else {
        Err(AppError::conflict(
            "idempotencyKey was already used for a different movement",
        ))
    }
}

async fn find_by_key(
    conn: &impl ConnectionTrait,
    user_id: Option<Uuid>,
    key: &str,
) -> AppResult<Option<stock_movement::Model>> {
    let mut q =
        stock_movement::Entity::find().filter(stock_movement::Column::IdempotencyKey.eq(key));
    q = match user_id {
        Some(id) => q.filter(stock_movement::Column::CreatedBy.eq(id)),
        None => q.filter(stock_movement::Column::CreatedBy.is_null()),
    };
    Ok(q.one(conn).await?)
}

/// Applies a validated movement on the caller's transaction: the conditional
/// stock update, the ledger row and the audit row, and the `stockChanged`
/// (and, on a crossing, `lowStock`) events published when it commits.
/// Returns the movement and the product as it is afterwards.
pub async fn apply(
    txn: &WriteTxn,
    actor: &Actor,
    movement: &ValidMovement,
) -> AppResult<(stock_movement::Model, product::Model)> {
    apply_hashed(txn, actor, movement, None).await
}

async fn apply_hashed(
    txn: &WriteTxn,
    actor: &Actor,
    movement: &ValidMovement,
    request_hash: Option<String>,
) -> AppResult<(stock_movement::Model, product::Model)> {
    let conn: &DatabaseTransaction = txn;
    let now = Utc::now();
    let backend = conn.get_database_backend();
    if backend == sea_orm::DbBackend::Postgres {
        return apply_in_one_statement(txn, actor, movement, request_hash, now).await;
    }
    let update = Statement::from_sql_and_values(
        backend,
        "UPDATE products SET stock = stock + $1, version = version + 1, updated_at = $2 \
         WHERE id = $3 AND archived_at IS NULL \
         AND stock + $1 >= 0 AND stock + $1 <= 2147483647 \
         RETURNING id, sku, name, description, category, unit, stock, \
         low_stock_threshold, version, archived_at, created_at, updated_at, search_key",
        [
            Value::from(movement.delta),
            Value::from(now),
            Value::from(movement.product_id),
        ],
    );
    let mut updated = conn.query_one_raw(update.clone()).await?;
    if updated.is_none() {
        // Find out why with the row locked, so the answer cannot be overtaken
        // by a concurrent movement; if the movement fits now, apply it.
        refusal(conn, movement).await?;
        updated = conn.query_one_raw(update).await?;
    }
    let product = match updated {
        Some(row) => <product::Model as sea_orm::FromQueryResult>::from_query_result(&row, "")?,
        None => {
            return Err(AppError::internal(anyhow::anyhow!(
                "stock update matched no row while the product was locked"
            )));
        }
    };

    let saved = movement_row(&product, movement, actor, request_hash, now);
    let row: stock_movement::ActiveModel = saved.clone().into();
    stock_movement::Entity::insert(row)
        .exec_without_returning(conn)
        .await
        .map_err(|e| {
            on_unique_violation(
                e,
                &MOVEMENTS_IDEMPOTENCY_KEY,
                AppError::conflict("idempotency key is in use"),
            )
        })?;
    let stock_before = i64::from(product.stock) - movement.delta;
    audit::record(
        txn,
        actor,
        movement_audit(movement, &product, &saved, stock_before),
    )
    .await?;
    after_movement(txn, actor, &product, &saved, stock_before).await?;
    Ok((saved, product))
}

/// PostgreSQL: the stock update, the ledger row and the audit row in one
/// statement (data-modifying CTEs), so a movement costs one round trip
/// between BEGIN and COMMIT instead of three. Everything the SQLite path
/// guarantees holds: the update is conditional on the stock staying in range
/// and the product not archived; the ledger and audit rows are written only
/// if it matched; the idempotency key's unique index refuses a reused key;
/// the audit text is built from the updated row and read back, so the event
/// carries exactly what was stored.
async fn apply_in_one_statement(
    txn: &WriteTxn,
    actor: &Actor,
    movement: &ValidMovement,
    request_hash: Option<String>,
    now: DateTime<Utc>,
) -> AppResult<(stock_movement::Model, product::Model)> {
    use sea_orm::ActiveEnum;
    let conn: &DatabaseTransaction = txn;
    let movement_id = Uuid::now_v7();
    // The audit row as `audit::row` makes it (id, actor, clipped request
    // fields); its summary and changes are built by the statement.
    let mut entry = audit::row(
        actor,
        AuditEntry::new(
            audit_action(movement.kind),
            EntityType::StockMovement,
            movement_id,
        ),
    );
    entry.occurred_at = now;
    let sql = "WITH p AS ( \
           UPDATE products SET stock = stock + $1, version = version + 1, updated_at = $2 \
           WHERE id = $3 AND archived_at IS NULL \
           AND stock + $1 >= 0 AND stock + $1 <= 2147483647 \
           RETURNING id, sku, name, description, category, unit, stock, \
           low_stock_threshold, version, archived_at, created_at, updated_at, search_key), \
         m AS ( \
           INSERT INTO stock_movements (id, product_id, kind, quantity, balance_after, \
             product_version, note, reference, idempotency_key, request_hash, created_by, created_at) \
           SELECT $4, p.id, $5, $6, p.stock, p.version, $7, $8, $9, $10, $11, $2 FROM p), \
         a AS ( \
           INSERT INTO audit_logs (id, occurred_at, actor_id, action, entity_type, entity_id, \
             summary, changes, request_id, ip, user_agent) \
           SELECT $12, $2, $11, $13, $14, $15, \
             left(format('%s %s of %s: stock %s -> %s', $16::text, $17::text, p.sku, \
               p.stock - $1, p.stock), 500), \
             jsonb_build_object('before', jsonb_build_object('stock', p.stock - $1), \
               'after', jsonb_build_object('productId', p.id, 'sku', p.sku, 'kind', $5::text, \
                 'quantity', $1, 'balanceAfter', p.stock, 'stock', p.stock, 'reference', $8::text)), \
             $18, $19, $20 \
           FROM p RETURNING summary, changes) \
         SELECT p.*, a.summary AS audit_summary, a.changes AS audit_changes FROM p, a";
    let statement = Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        sql,
        [
            Value::from(movement.delta),
            Value::from(now),
            Value::from(movement.product_id),
            Value::from(movement_id),
            Value::from(movement.kind.to_value()),
            Value::from(movement.delta as i32),
            Value::from(movement.note.clone()),
            Value::from(movement.reference.clone()),
            Value::from(movement.idempotency_key.clone()),
            Value::from(request_hash.clone()),
            Value::from(actor.user_id),
            Value::from(entry.id),
            Value::from(entry.action.to_value()),
            Value::from(entry.entity_type.to_value()),
            Value::from(entry.entity_id.clone()),
            Value::from(movement.kind.word()),
            Value::from(format!("{:+}", movement.delta)),
            Value::from(entry.request_id.clone()),
            Value::from(entry.ip.clone()),
            Value::from(entry.user_agent.clone()),
        ],
    );
    let run = |statement: Statement| async move {
        conn.query_one_raw(statement).await.map_err(|e| {
            on_unique_violation(
                e,
                &MOVEMENTS_IDEMPOTENCY_KEY,
                AppError::conflict("idempotency key is in use"),
            )
        })
    };
    let mut row = run(statement.clone()).await?;
    if row.is_none() {
        // As on SQLite: why, with the row locked; if it fits now, apply it.
        refusal(conn, movement).await?;
        row = run(statement).await?;
    }
    let Some(row) = row else {
        return Err(AppError::internal(anyhow::anyhow!(
            "stock update matched no row while the product was locked"
        )));
    };
    let product = <product::Model as sea_orm::FromQueryResult>::from_query_result(&row, "")?;
    let mut saved = movement_row(&product, movement, actor, request_hash, now);
    saved.id = movement_id;
    let stock_before = i64::from(product.stock) - movement.delta;
    entry.summary = row.try_get("", "audit_summary")?;
    entry.changes = row.try_get("", "audit_changes")?;
    txn.emit(DomainEvent::AuditLogAdded {
        entry: Arc::new(entry),
    });
    after_movement(txn, actor, &product, &saved, stock_before).await?;
    Ok((saved, product))
}

/// The ledger row of `movement`, which left `product` as it is now.
fn movement_row(
    product: &product::Model,
    movement: &ValidMovement,
    actor: &Actor,
    request_hash: Option<String>,
    now: DateTime<Utc>,
) -> stock_movement::Model {
    stock_movement::Model {
        id: Uuid::now_v7(),
        product_id: product.id,
        kind: movement.kind,
        quantity: movement.delta as i32,
        balance_after: product.stock,
        product_version: product.version,
        note: movement.note.clone(),
        reference: movement.reference.clone(),
        idempotency_key: movement.idempotency_key.clone(),
        request_hash,
        created_by: actor.user_id,
        created_at: now,
    }
}

fn movement_audit(
    movement: &ValidMovement,
    product: &product::Model,
    saved: &stock_movement::Model,
    stock_before: i64,
) -> AuditEntry {
    AuditEntry::new(
        audit_action(movement.kind),
        EntityType::StockMovement,
        saved.id,
    )
    .summary(format!(
        "{} {:+} of {}: stock {} -> {}",
        movement.kind.word(),
        movement.delta,
        product.sku,
        stock_before,
        product.stock
    ))
    .changes(
        Some(json!({ "stock": stock_before })),
        Some(json!({
            "productId": product.id,
            "sku": product.sku,
            "kind": movement.kind,
            "quantity": movement.delta,
            "balanceAfter": product.stock,
            "stock": product.stock,
            "reference": movement.reference,
        })),
    )
}

/// The `stockChanged` (and, on a crossing, `lowStock`) events and the alerts
/// of a recorded movement.
async fn after_movement(
    txn: &WriteTxn,
    actor: &Actor,
    product: &product::Model,
    saved: &stock_movement::Model,
    stock_before: i64,
) -> AppResult<()> {
    let shared = Arc::new(product.clone());
    if product::crossed_low_stock(stock_before, product) {
        txn.emit(DomainEvent::LowStockCrossed {
            product: Arc::clone(&shared),
        });
    }
    txn.emit(DomainEvent::StockMoved {
        product: shared,
        movement: Arc::new(saved.clone()),
    });
    super::alerts::on_movement(txn, actor, product, saved, stock_before).await
}

/// Applies movements in order, as [`apply`] would one by one, to products
/// the caller holds locked for the rest of `txn` (SQLite: any write
/// transaction; PostgreSQL: rows read `FOR UPDATE`), given as they are now.
/// Each movement is checked against the balance its predecessors left
/// ([`check_balance`]); a refused one changes nothing and the rest go on.
/// The writes go out together: one UPDATE for every product touched
/// (guarded by the version read under the lock), the ledger rows and the
/// audit rows as multi-row INSERTs. The events and alerts are those of
/// [`apply`], each movement's by its own actor. `products` is left as the
/// movements leave it.
pub async fn apply_locked(
    txn: &WriteTxn,
    products: &mut HashMap<Uuid, product::Model>,
    movements: &[(&Actor, &ValidMovement)],
) -> AppResult<Vec<AppResult<stock_movement::Model>>> {
    let now = Utc::now();
    let mut results = Vec::with_capacity(movements.len());
    let mut versions_before: HashMap<Uuid, i32> = HashMap::new();
    let mut ledger = Vec::new();
    let mut audits = Vec::new();
    for &(actor, movement) in movements {
        let Some(product) = products
            .get_mut(&movement.product_id)
            .filter(|p| p.archived_at.is_none())
        else {
            results.push(Err(AppError::not_found("product not found")));
            continue;
        };
        let stock_before = i64::from(product.stock);
        if let Err(refused) = check_balance(stock_before, movement.delta) {
            results.push(Err(refused));
            continue;
        }
        versions_before.entry(product.id).or_insert(product.version);
        product.stock = (stock_before + movement.delta) as i32;
        product.version += 1;
        product.updated_at = now;
        let saved = movement_row(product, movement, actor, None, now);
        audits.push(audit::row(
            actor,
            movement_audit(movement, product, &saved, stock_before),
        ));
        after_movement(txn, actor, product, &saved, stock_before).await?;
        ledger.push(saved.clone());
        results.push(Ok(saved));
    }
    if versions_before.is_empty() {
        return Ok(results);
    }
    // One UPDATE per few hundred products: (id, stock, version, version
    // read) each.
    let backend = txn.get_database_backend();
    let postgres = backend == sea_orm::DbBackend::Postgres;
    let touched: Vec<(&Uuid, &i32)> = versions_before.iter().collect();
    let mut updated = 0;
    for chunk in touched.chunks(crate::db::rows_per_statement(backend, 4)) {
        let mut values = Vec::with_capacity(chunk.len() * 4 + 1);
        let mut tuples = Vec::with_capacity(chunk.len());
        values.push(Value::from(now));
        for (id, before) in chunk {
            let p = &products[*id];
            let n = values.len();
            let (a, b, c, d) = (n + 1, n + 2, n + 3, n + 4);
            tuples.push(if postgres {
                format!("(${a}::uuid, ${b}::int, ${c}::int, ${d}::int)")
            } else {
                format!("(${a}, ${b}, ${c}, ${d})")
            });
            values.extend([
                Value::from(p.id),
                Value::from(p.stock),
                Value::from(p.version),
                Value::from(**before),
            ]);
        }
        updated += txn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "WITH v(id, stock, version, seen) AS (VALUES {}) \
                     UPDATE products SET stock = v.stock, version = v.version, updated_at = $1 \
                     FROM v WHERE products.id = v.id AND products.version = v.seen",
                    tuples.join(", ")
                ),
                values,
            ))
            .await?
            .rows_affected();
    }
    if updated != versions_before.len() as u64 {
        return Err(AppError::internal(anyhow::anyhow!(
            "products changed under a batch's lock ({updated} of {} updated)",
            versions_before.len()
        )));
    }
    let per_statement = crate::db::rows_per_statement(
        backend,
        <stock_movement::Column as sea_orm::Iterable>::iter().count(),
    );
    for chunk in ledger.chunks(per_statement) {
        stock_movement::Entity::insert_many(
            chunk.iter().cloned().map(stock_movement::ActiveModel::from),
        )
        .exec_without_returning(&**txn)
        .await?;
    }
    audit::record_all(txn, audits).await?;
    Ok(results)
}

/// Why the conditional update matched no row, judged on the locked row.
/// `Ok` means the movement fits now (a concurrent movement changed the stock
/// between the update and this read).
async fn refusal(conn: &impl ConnectionTrait, movement: &ValidMovement) -> AppResult<()> {
    let current = product::Entity::find_by_id(movement.product_id)
        .lock_exclusive()
        .one(conn)
        .await?;
    let p = match current {
        Some(p) if p.archived_at.is_none() => p,
        _ => return Err(AppError::not_found("product not found")),
    };
    check_balance(i64::from(p.stock), movement.delta)
}

/// Whether `delta` fits a product holding `stock`: never below zero, never
/// above the largest stock a product can hold.
pub fn check_balance(stock: i64, delta: i64) -> AppResult<()> {
    let after = stock + delta;
    if after < 0 {
        Err(AppError::InsufficientStock {
            available: stock,
            requested: -delta,
        })
    } else if after > i64::from(i32::MAX) {
        Err(AppError::bad_input(
            "quantity",
            format!("stock would exceed the maximum of {}", i32::MAX),
        ))
    } else {
        Ok(())
    }
}

#[derive(Clone, Debug, Default)]
pub struct MovementFilter {
    pub product_id: Option<Uuid>,
    pub kind: Option<MovementKind>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

fn filtered(filter: &MovementFilter) -> Select<stock_movement::Entity> {
    let mut q = stock_movement::Entity::find();
    if let Some(id) = filter.product_id {
        q = q.filter(stock_movement::Column::ProductId.eq(id));
    }
    if let Some(kind) = filter.kind {
        q = q.filter(stock_movement::Column::Kind.eq(kind));
    }
    if let Some(from) = filter.from {
        q = q.filter(stock_movement::Column::CreatedAt.gte(from));
    }
    if let Some(to) = filter.to {
        q = q.filter(stock_movement::Column::CreatedAt.lt(to));
    }
    q
}

/// Newest first.
pub async fn list(
    conn: &impl ConnectionTrait,
    filter: &MovementFilter,
    page: PageRequest,
) -> AppResult<Page<stock_movement::Model>> {
    paginate(
        conn,
        filtered(filter),
        stock_movement::Column::Id,
        Order::Desc,
        page,
    )
    .await
}

/// The first page of movements of several products at once (newest first),
/// in two queries whatever the number of products: what `Product.movements`
/// needs when a list of products is shown with their movements.
pub async fn list_for_products(
    conn: &impl ConnectionTrait,
    product_ids: &[Uuid],
    page: PageRequest,
) -> AppResult<HashMap<Uuid, Page<stock_movement::Model>>> {
    if product_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let backend = conn.get_database_backend();
    let mut values: Vec<Value> = product_ids.iter().map(|id| Value::from(*id)).collect();
    let placeholders = crate::db::placeholders(product_ids.len());
    let mut after_clause = String::new();
    if let Some(after) = page.after {
        values.push(Value::from(after));
        after_clause = format!(" AND id < ${}", values.len());
    }
    values.push(Value::from(page.first as i64 + 1));
    let limit = values.len();
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT * FROM ( \
                   SELECT m.*, ROW_NUMBER() OVER (PARTITION BY product_id ORDER BY id DESC) AS rn \
                   FROM stock_movements m WHERE product_id IN ({placeholders}){after_clause} \
                 ) ranked WHERE rn <= ${limit} ORDER BY product_id, id DESC"
            ),
            values,
        ))
        .await?;
    let counts = conn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT product_id, COUNT(*) AS n FROM stock_movements \
                 WHERE product_id IN ({placeholders}) GROUP BY product_id"
            ),
            product_ids.iter().map(|id| Value::from(*id)),
        ))
        .await?;
    let mut totals: HashMap<Uuid, u64> = HashMap::new();
    for row in counts {
        let id: Uuid = row.try_get("", "product_id")?;
        let n: i64 = row.try_get("", "n")?;
        totals.insert(id, u64::try_from(n).unwrap_or(0));
    }
    let mut grouped: HashMap<Uuid, Vec<stock_movement::Model>> = HashMap::new();
    for row in rows {
        let m = <stock_movement::Model as sea_orm::FromQueryResult>::from_query_result(&row, "")?;
        grouped.entry(m.product_id).or_default().push(m);
    }
    Ok(product_ids
        .iter()
        .map(|id| {
            let rows = grouped.remove(id).unwrap_or_default();
            let total = totals.get(id).copied().unwrap_or(0);
            (*id, Page::from_rows(rows, page, total))
        })
        .collect())
}

/// A product whose stock does not match its ledger.
#[derive(Clone, Debug)]
pub struct Drift {
    pub product_id: Uuid,
    pub sku: String,
    pub stock: i64,
    pub ledger_sum: i64,
    /// Movements whose balance_after does not follow from the one before.
    pub broken_links: i64,
}

/// Checks, for every product, that stock equals the sum of its movements and
/// that each movement's balance_after follows from the previous one.
pub async fn verify_ledger(conn: &impl ConnectionTrait) -> AppResult<(u64, Vec<Drift>)> {
    let backend = conn.get_database_backend();
    let products = product::Entity::find().count(conn).await?;
    let rows = conn
        .query_all_raw(Statement::from_string(
            backend,
            "WITH sums AS ( \
               SELECT product_id, SUM(quantity) AS total FROM stock_movements GROUP BY product_id \
             ), chain AS ( \
               SELECT product_id, balance_after, quantity, \
                 LAG(balance_after, 1, 0) OVER (PARTITION BY product_id ORDER BY product_version) AS prev \
               FROM stock_movements \
             ), broken AS ( \
               SELECT product_id, COUNT(*) AS n FROM chain \
               WHERE balance_after <> prev + quantity GROUP BY product_id \
             ) \
             SELECT p.id, p.sku, p.stock, COALESCE(s.total, 0) AS total, COALESCE(b.n, 0) AS broken \
             FROM products p \
             LEFT JOIN sums s ON s.product_id = p.id \
             LEFT JOIN broken b ON b.product_id = p.id \
             WHERE p.stock <> COALESCE(s.total, 0) OR COALESCE(b.n, 0) > 0 \
             ORDER BY p.sku",
        ))
        .await?;
    let mut drift = Vec::with_capacity(rows.len());
    for row in rows {
        drift.push(Drift {
            product_id: row.try_get("", "id")?,
            sku: row.try_get("", "sku")?,
            stock: i64::from(row.try_get::<i32>("", "stock")?),
            ledger_sum: row.try_get("", "total")?,
            broken_links: row.try_get("", "broken")?,
        });
    }
    Ok((products, drift))
}
