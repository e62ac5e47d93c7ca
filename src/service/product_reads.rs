//! Reading products by SKU in batches, and the rows of many products in one
//! statement: the reads the services' context and the batch writers share.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt;
use sea_orm::ConnectionTrait;
use tokio_util::task::TaskTracker;

use crate::batch::Coalescer;
use crate::cache::ProductCache;
use crate::db::Db;
use crate::entity::product;
use crate::error::{AppError, AppResult};

/// The products whose `key` (a column expression: `id`, `lower(sku)`) is
/// one of `values`, in one statement. With `lock` (PostgreSQL) their rows
/// are locked for the rest of the transaction in SKU order: every batch that
/// locks several products (the upload worker, the movement group commit)
/// takes them in that order, so two batches queue instead of deadlocking.
pub async fn select_in(
    conn: &impl ConnectionTrait,
    key: &str,
    values: Vec<sea_orm::Value>,
    lock: bool,
) -> AppResult<Vec<product::Model>> {
    let lock = if lock {
        " ORDER BY lower(sku) FOR UPDATE"
    } else {
        ""
    };
    let placeholders = crate::db::placeholders(values.len());
    let rows = conn
        .query_all_raw(crate::db::statement(
            conn.get_database_backend(),
            &format!("SELECT * FROM products WHERE {key} IN ({placeholders}){lock}"),
            values,
        ))
        .await?;
    rows.iter()
        .map(|row| {
            <product::Model as sea_orm::FromQueryResult>::from_query_result(row, "")
                .map_err(Into::into)
        })
        .collect()
}

/// Products by SKU key, read in batches across requests (`crate::batch`).
pub type SkuReads = Coalescer<String, Arc<product::Model>, Arc<AppError>>;

/// The batched reads of products by SKU: at most 256 SKUs a statement, four
/// statements at a time.
pub fn sku_reads(db: Db, cache: Option<Arc<ProductCache>>, tasks: TaskTracker) -> Arc<SkuReads> {
    let load: crate::batch::Load<String, Arc<product::Model>, Arc<AppError>> =
        Box::new(move |keys| {
            let db = db.clone();
            let cache = cache.clone().filter(|c| c.trusted());
            async move {
                load_by_sku(&db, cache.as_deref(), keys)
                    .await
                    .map_err(Arc::new)
            }
            .boxed()
        });
    Coalescer::new(load, 256, 4, tasks)
}

/// One statement for many SKU keys; what it finds is offered to the read
/// cache under the tickets taken before the read.
async fn load_by_sku(
    db: &Db,
    cache: Option<&ProductCache>,
    keys: Vec<String>,
) -> AppResult<HashMap<String, Arc<product::Model>>> {
    let tickets: Vec<_> = cache
        .map(|c| keys.iter().map(|k| c.ticket(k)).collect())
        .unwrap_or_default();
    let values = keys
        .iter()
        .map(|k| sea_orm::Value::from(k.as_str()))
        .collect();
    let rows = select_in(db.conn(), "lower(sku)", values, false).await?;
    let found: HashMap<String, Arc<product::Model>> = rows
        .into_iter()
        .map(|row| (sku_key(&row.sku), Arc::new(row)))
        .collect();
    if let Some(cache) = cache {
        for (key, ticket) in keys.iter().zip(tickets) {
            if let Some(product) = found.get(key) {
                cache.put_by_sku(key, ticket, Arc::clone(product));
            }
        }
    }
    Ok(found)
}

/// The read cache's key of a SKU (SKUs are trimmed and case-insensitive).
pub fn sku_key(sku: &str) -> String {
    sku.trim().to_ascii_lowercase()
}
