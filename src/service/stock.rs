//! The stock ledger. Stock changes only here, through one write path
//! ([`apply_locked`]) whether a movement comes alone, in a group commit or
//! in an upload batch: checked against the locked balance, no negative
//! stock, a ledger row with the balance after every change and its audit
//! row in the same transaction, idempotency keys honoured.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::Order;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Select, Statement,
    Value,
};
use serde_json::json;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::context::Txn;
use super::positions::{self, Position, Tail};
use super::settings_cache::TelegramSettings;
use super::{Actor, Page, PageRequest, paginate};
use crate::entity::audit_log::{AuditAction, EntityType};
use crate::entity::product;
use crate::entity::stock_movement::{self, MovementKind};
use crate::error::{AppError, AppResult, MOVEMENTS_IDEMPOTENCY_KEY, on_unique_violation};
use crate::events::DomainEvent;

pub use super::movement::{
    MAX_IDEMPOTENCY_KEY, MAX_NOTE, MAX_REFERENCE, MovementInput, ValidMovement, check_balance,
    validate,
};

fn audit_action(kind: MovementKind) -> AuditAction {
    match kind {
        MovementKind::Inbound => AuditAction::StockInbound,
        MovementKind::Outbound => AuditAction::StockOutbound,
        MovementKind::Return => AuditAction::StockReturn,
        MovementKind::Adjustment => AuditAction::StockAdjustment,
    }
}

pub(super) fn replay(
    existing: stock_movement::Model,
    hash: &str,
) -> AppResult<stock_movement::Model> {
    if existing.request_hash.as_deref() == Some(hash) {
        Ok(existing)
    } else {
        Err(AppError::conflict(
            "idempotencyKey was already used for a different movement",
        ))
    }
}

/// The movements `user_id` recorded under any of `keys`.
pub(super) async fn find_by_keys(
    conn: &impl ConnectionTrait,
    user_id: Option<Uuid>,
    keys: &[String],
) -> AppResult<Vec<stock_movement::Model>> {
    let mut q = stock_movement::Entity::find()
        .filter(stock_movement::Column::IdempotencyKey.is_in(keys.iter().map(String::as_str)));
    q = match user_id {
        Some(id) => q.filter(stock_movement::Column::CreatedBy.eq(id)),
        None => q.filter(stock_movement::Column::CreatedBy.is_null()),
    };
    Ok(q.all(conn).await?)
}

/// The movements already recorded under the idempotency keys of
/// `movements`, by actor and key: one query per actor with keys.
async fn recorded_keys(
    conn: &impl ConnectionTrait,
    movements: &[(&Actor, &ValidMovement)],
) -> AppResult<HashMap<(Option<Uuid>, String), stock_movement::Model>> {
    let mut wanted: HashMap<Option<Uuid>, Vec<String>> = HashMap::new();
    for (actor, movement) in movements {
        if let Some(key) = &movement.idempotency_key {
            wanted.entry(actor.user_id).or_default().push(key.clone());
        }
    }
    let mut found = HashMap::new();
    for (user_id, keys) in wanted {
        for chunk in keys.chunks(crate::db::rows_per_statement(
            conn.get_database_backend(),
            1,
        )) {
            for m in find_by_keys(conn, user_id, chunk).await? {
                if let Some(key) = m.idempotency_key.clone() {
                    found.insert((user_id, key), m);
                }
            }
        }
    }
    Ok(found)
}

/// The one write path of stock. Applies movements in order, as one by one,
/// to products the caller holds locked for the rest of `txn` (SQLite: any
/// write transaction; PostgreSQL: rows read `FOR UPDATE`, or created in
/// `txn`), given as they are now. For each movement, in order:
/// - a movement whose idempotency key its actor used already (before, or
///   earlier in this batch) is answered with the first movement if it asks
///   the same, and is a CONFLICT if not; it writes nothing;
/// - a movement to a missing or archived product is NOT_FOUND, and one that
///   would take the stock below zero or past its maximum is refused
///   ([`check_balance`] against the balance its predecessors left); a
///   refused movement changes nothing and the rest go on;
/// - otherwise its ledger row and audit row are made here, in Rust, and its
///   events (`stockChanged`, `lowStock` on a crossing) and alerts queued.
///
/// The writes then go out together: one UPDATE per few hundred products
/// (guarded by the version read under the lock), then the ledger and audit
/// rows, each as one statement on PostgreSQL and a few multi-row ones on
/// SQLite ([`crate::db::insert_all`]). The unique index on idempotency keys still guards
/// a key another transaction is committing: that fails the call (CONFLICT),
/// and the caller rolls back. `products` is left as the movements leave it.
pub async fn apply_locked(
    txn: &Txn,
    products: &mut HashMap<Uuid, product::Model>,
    movements: &[(&Actor, &ValidMovement)],
) -> AppResult<Vec<AppResult<stock_movement::Model>>> {
    let now = crate::db::now();
    let tx = txn.tx().await?;
    let settings = txn.services().settings().current(&**txn).await?;
    let mut recorded = recorded_keys(&**txn, movements).await?;
    let mut results = Vec::with_capacity(movements.len());
    let mut versions_before: HashMap<Uuid, i32> = HashMap::new();
    let mut ledger = Vec::new();
    let mut audits = Vec::new();
    for &(actor, movement) in movements {
        let hash = movement
            .idempotency_key
            .as_ref()
            .map(|_| movement.request_hash());
        if let (Some(key), Some(hash)) = (&movement.idempotency_key, &hash)
            && let Some(first) = recorded.get(&(actor.user_id, key.clone()))
        {
            results.push(replay(first.clone(), hash));
            continue;
        }
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
        let saved = movement_row(product, movement, actor, hash, now, tx);
        if let Some(key) = &movement.idempotency_key {
            recorded.insert((actor.user_id, key.clone()), saved.clone());
        }
        audits.push(audit::row(
            actor,
            movement_audit(movement, product, &saved, stock_before),
        ));
        after_movement(txn, &settings, actor, product, &saved, stock_before).await?;
        ledger.push(saved.clone());
        results.push(Ok(saved));
    }
    if versions_before.is_empty() {
        return Ok(results);
    }
    update_products(txn, products, &versions_before, now).await?;
    crate::db::insert_all::<stock_movement::Entity>(&**txn, &ledger, "")
        .await
        .map_err(|e| {
            on_unique_violation(
                e,
                &MOVEMENTS_IDEMPOTENCY_KEY,
                AppError::conflict("idempotency key is in use"),
            )
        })?;
    audit::record_all(txn, audits).await?;
    Ok(results)
}

/// Writes the stock and version of the products in `versions_before` (by
/// id, the version read under the lock): one UPDATE from a VALUES list per
/// few hundred products. On PostgreSQL the ids are also listed as an
/// `id IN (...)` condition on `products`, so that the plan reads them by
/// primary key whatever the statistics say: without it, a table the import
/// grew faster than its statistics, or a guessed row count (100 for
/// `json_to_recordset`, tried first), made it scan every product and join.
async fn update_products(
    txn: &Txn,
    products: &HashMap<Uuid, product::Model>,
    versions_before: &HashMap<Uuid, i32>,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let backend = txn.get_database_backend();
    let postgres = backend == sea_orm::DbBackend::Postgres;
    let touched: Vec<(&Uuid, &i32)> = versions_before.iter().collect();
    let mut updated = 0;
    for chunk in touched.chunks(crate::db::rows_per_statement(backend, 4)) {
        let mut values = Vec::with_capacity(chunk.len() * 4 + 1);
        let mut tuples = Vec::with_capacity(chunk.len());
        let mut ids = Vec::with_capacity(chunk.len());
        values.push(Value::from(now));
        for (id, before) in chunk {
            let p = &products[*id];
            let n = values.len();
            let (a, b, c, d) = (n + 1, n + 2, n + 3, n + 4);
            ids.push(format!("${a}"));
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
        let by_key = if postgres {
            format!(" AND products.id IN ({})", ids.join(", "))
        } else {
            String::new()
        };
        updated += txn
            .execute_raw(crate::db::statement(
                backend,
                &format!(
                    "WITH v(id, stock, version, seen) AS (VALUES {}) \
                     UPDATE products SET stock = v.stock, version = v.version, updated_at = $1 \
                     FROM v WHERE products.id = v.id AND products.version = v.seen{by_key}",
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
    Ok(())
}

/// The ledger row of `movement`, which left `product` as it is now.
fn movement_row(
    product: &product::Model,
    movement: &ValidMovement,
    actor: &Actor,
    request_hash: Option<String>,
    now: DateTime<Utc>,
    tx: i64,
) -> stock_movement::Model {
    let stock_before = i64::from(product.stock) - movement.delta;
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
        tx,
        crossed_threshold: product::crossed_low_stock(stock_before, product)
            .then_some(product.low_stock_threshold),
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

/// The event (`stockChanged`, and `lowStock` when the row says it crossed
/// the threshold) and the alerts of a recorded movement.
async fn after_movement(
    txn: &Txn,
    settings: &TelegramSettings,
    actor: &Actor,
    product: &product::Model,
    saved: &stock_movement::Model,
    stock_before: i64,
) -> AppResult<()> {
    txn.emit(DomainEvent::StockMoved {
        product: Arc::new(product.clone()),
        movement: Arc::new(saved.clone()),
    });
    super::alerts::on_movement(txn, settings, actor, product, saved, stock_before).await
}

/// A product's ledger after a position in its stream (the product's
/// version), for a subscription that resumes or catches up.
#[derive(Debug)]
pub struct LedgerTail {
    /// The product now.
    pub product: product::Model,
    /// Its movements after the position, oldest first, each with the
    /// product as that movement left it; at most the limit asked for.
    pub movements: Vec<(Arc<product::Model>, Arc<stock_movement::Model>)>,
    /// More movements follow than the limit: the tail is incomplete.
    pub truncated: bool,
}

/// The movements of `product_id` after its version `after`, at most
/// `limit`. `NOT_FOUND` if there is no such product.
pub async fn ledger_after(
    conn: &impl ConnectionTrait,
    product_id: Uuid,
    after: i32,
    limit: usize,
) -> AppResult<LedgerTail> {
    use sea_orm::{QueryOrder, QuerySelect};
    let product = existing(conn, product_id).await?;
    let mut rows = stock_movement::Entity::find()
        .filter(stock_movement::Column::ProductId.eq(product_id))
        .filter(stock_movement::Column::ProductVersion.gt(after))
        .order_by_asc(stock_movement::Column::ProductVersion)
        .limit(limit as u64 + 1)
        .all(conn)
        .await?;
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    let movements = rows
        .into_iter()
        .map(|m| (Arc::new(product.clone().as_of(&m)), Arc::new(m)))
        .collect();
    Ok(LedgerTail {
        product,
        movements,
        truncated,
    })
}

/// The movements of every product a stream at `position` has not been
/// sent ([`positions::after`]), each with the product as it left it, whole
/// transactions at a time. A transaction goes after any other that moved
/// one of its products to an earlier version: PostgreSQL's transaction ids
/// (the `tx` order) can disagree with the order two transactions committed
/// in when one waited for the other's lock.
///
/// `crossings_only`: only the movements that took a product to or below its
/// threshold (the `lowStock` stream).
pub async fn ledger_since(
    conn: &impl ConnectionTrait,
    position: &Position,
    limit: usize,
    crossings_only: bool,
) -> AppResult<Tail<(Arc<product::Model>, Arc<stock_movement::Model>)>> {
    let tail = positions::after::<stock_movement::Entity, _>(conn, position, limit, |q| {
        if crossings_only {
            q.filter(stock_movement::Column::CrossedThreshold.is_not_null())
        } else {
            q
        }
    })
    .await?;
    let ids: HashSet<Uuid> = tail.rows.iter().map(|m| m.product_id).collect();
    let products: HashMap<Uuid, product::Model> = if ids.is_empty() {
        HashMap::new()
    } else {
        product::Entity::find()
            .filter(product::Column::Id.is_in(ids))
            .all(conn)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect()
    };
    let rows = commit_order(tail.rows)
        .into_iter()
        .filter_map(|m| {
            let product = products.get(&m.product_id)?.clone().as_of(&m);
            Some((Arc::new(product), Arc::new(m)))
        })
        .collect();
    Ok(Tail {
        horizon: tail.horizon,
        rows,
        truncated: tail.truncated,
    })
}

/// `rows` (in `(tx, id)` order) as whole transactions, ordered so that
/// every product's versions rise: by `tx`, except where a product says a
/// transaction must come later.
fn commit_order(rows: Vec<stock_movement::Model>) -> Vec<stock_movement::Model> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_tx: BTreeMap<i64, Vec<stock_movement::Model>> = BTreeMap::new();
    for row in rows {
        by_tx.entry(row.tx).or_default().push(row);
    }
    // For each product, its transactions in version order: each must wait
    // for the one before.
    let mut versions: HashMap<Uuid, Vec<(i32, i64)>> = HashMap::new();
    for (tx, rows) in &by_tx {
        for row in rows {
            versions
                .entry(row.product_id)
                .or_default()
                .push((row.product_version, *tx));
        }
    }
    let mut waits_for: HashMap<i64, usize> = HashMap::new();
    let mut then: HashMap<i64, BTreeSet<i64>> = HashMap::new();
    for list in versions.values_mut() {
        list.sort_unstable();
        for pair in list.windows(2) {
            let (before, after) = (pair[0].1, pair[1].1);
            if before != after && then.entry(before).or_default().insert(after) {
                *waits_for.entry(after).or_default() += 1;
            }
        }
    }
    let mut ready: BTreeSet<i64> = by_tx
        .keys()
        .filter(|tx| !waits_for.contains_key(tx))
        .copied()
        .collect();
    let mut out = Vec::new();
    while let Some(tx) = ready.pop_first() {
        out.extend(by_tx.remove(&tx).unwrap_or_default());
        for next in then.remove(&tx).unwrap_or_default() {
            if let Some(n) = waits_for.get_mut(&next) {
                *n -= 1;
                if *n == 0 {
                    waits_for.remove(&next);
                    ready.insert(next);
                }
            }
        }
    }
    // A cycle cannot happen (commit order is one such order); if the rows
    // said otherwise, the rest goes by `tx`.
    out.extend(by_tx.into_values().flatten());
    out
}

async fn existing(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<product::Model> {
    product::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or_else(|| AppError::not_found("product not found"))
}

/// The product now and its last movement (`None` if it never moved), for a
/// stream that starts from the current state. `NOT_FOUND` if there is no
/// such product.
pub async fn current(
    conn: &impl ConnectionTrait,
    product_id: Uuid,
) -> AppResult<(product::Model, Option<stock_movement::Model>)> {
    use sea_orm::{QueryOrder, QuerySelect};
    let product = existing(conn, product_id).await?;
    let last = stock_movement::Entity::find()
        .filter(stock_movement::Column::ProductId.eq(product_id))
        .order_by_desc(stock_movement::Column::ProductVersion)
        .limit(1)
        .one(conn)
        .await?;
    Ok((product, last))
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
        .query_all_raw(crate::db::statement(
            backend,
            &format!(
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
