//! Products: the catalogue side. Stock itself only changes through
//! [`super::stock`].

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use sea_orm::Order;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, IntoIden, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Select,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::context::{Services, Txn};
pub use super::product_reads::{select_in, sku_key};
use super::stock::{self, MovementInput};
use super::{Actor, Page, PageRequest, contains_ci, optional_text, paginate, required_text};
use crate::batch::Unanswered;
use crate::entity::audit_log::{AuditAction, EntityType};
use crate::entity::product;
use crate::entity::stock_movement::MovementKind;
use crate::error::{AppError, AppResult};
use crate::events::DomainEvent;

pub const MAX_SKU: usize = 64;
pub const MAX_NAME: usize = 200;
pub const MAX_DESCRIPTION: usize = 2000;
pub const MAX_CATEGORY: usize = 100;
pub const MAX_UNIT: usize = 20;
pub const DEFAULT_UNIT: &str = "ea";

/// SKUs are trimmed printable ASCII without spaces, so that "case-insensitive"
/// means the same thing on SQLite and PostgreSQL.
pub fn normalize_sku(field: &str, sku: &str) -> AppResult<String> {
    let sku = required_text(field, sku, MAX_SKU)?;
    if !sku.chars().all(|c| c.is_ascii_graphic()) {
        return Err(AppError::bad_input(
            field,
            format!("{field} may only contain printable ASCII characters without spaces"),
        ));
    }
    Ok(sku)
}

fn threshold(value: Option<i64>) -> AppResult<Option<i32>> {
    match value {
        None => Ok(None),
        Some(n) => i32::try_from(n)
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                AppError::bad_input(
                    "lowStockThreshold",
                    format!("lowStockThreshold must be between 0 and {}", i32::MAX),
                )
            }),
    }
}

#[derive(Clone, Debug, Default)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub unit: Option<String>,
    pub low_stock_threshold: Option<i64>,
    pub unit_cost: Option<i64>,
    pub initial_stock: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub unit: Option<String>,
    pub low_stock_threshold: Option<i64>,
    /// `Some(None)` clears it.
    pub unit_cost: Option<Option<i64>>,
}

/// The highest unit cost taken, in the currency's smallest unit: a
/// catalogue's value then stays far inside what a sum can hold.
pub const MAX_UNIT_COST: i64 = 1_000_000_000_000;

fn unit_cost(value: Option<i64>) -> AppResult<Option<i64>> {
    match value {
        Some(v) if !(0..=MAX_UNIT_COST).contains(&v) => Err(AppError::bad_input(
            "unitCost",
            format!("unitCost must be between 0 and {MAX_UNIT_COST}"),
        )),
        v => Ok(v),
    }
}

#[derive(Clone, Debug, Default)]
pub struct ProductFilter {
    pub search: Option<String>,
    pub category: Option<String>,
    pub low_stock_only: bool,
    pub include_archived: bool,
}

/// The order of a product list; ties go by id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProductOrder {
    pub key: ProductSortKey,
    pub descending: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProductSortKey {
    /// Creation order (ids are time-ordered).
    #[default]
    Created,
    /// Case-insensitive (the unique `lower(sku)` index).
    Sku,
    /// The `(name, id)` index.
    Name,
    /// No index (a movement rewrites the row; an index on stock would cost
    /// every movement more than this sort saves): a scan and a top-N sort.
    Stock,
}

impl ProductSortKey {
    /// The sort expression over the columns of `table`; none for creation
    /// order, which is the id's.
    fn expression<T: IntoIden + Clone>(self, table: T) -> Option<Expr> {
        let column = |c: product::Column| Expr::col((table.clone(), c));
        match self {
            Self::Created => None,
            Self::Sku => Some(Func::lower(column(product::Column::Sku)).into()),
            Self::Name => Some(column(product::Column::Name)),
            Self::Stock => Some(column(product::Column::Stock)),
        }
    }
}

/// What `search` matches against: SKU and name, lowercased with Unicode rules.
fn search_key(sku: &str, name: &str) -> String {
    super::fold_case(&format!("{sku}\n{name}"))
}

/// The audited fields of a product.
fn snapshot(p: &product::Model) -> Value {
    json!({
        "sku": p.sku,
        "name": p.name,
        "description": p.description,
        "category": p.category,
        "unit": p.unit,
        "stock": p.stock,
        "lowStockThreshold": p.low_stock_threshold,
        "unitCost": p.unit_cost,
        "version": p.version,
        "archivedAt": p.archived_at,
    })
}

/// Only the fields that changed, as (before, after).
fn diff(before: &product::Model, after: &product::Model) -> (Value, Value) {
    let (b, a) = (snapshot(before), snapshot(after));
    let (mut bm, mut am) = (Map::new(), Map::new());
    if let (Value::Object(b), Value::Object(a)) = (b, a) {
        for (k, av) in a {
            let bv = b.get(&k).cloned().unwrap_or(Value::Null);
            if bv != av {
                bm.insert(k.clone(), bv);
                am.insert(k, av);
            }
        }
    }
    (Value::Object(bm), Value::Object(am))
}

/// A new product that passed validation.
#[derive(Clone, Debug)]
pub struct ValidNewProduct {
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub unit: String,
    pub low_stock_threshold: i32,
    pub unit_cost: Option<i64>,
    pub initial_stock: Option<i64>,
}

pub fn validate_new(input: &NewProduct) -> AppResult<ValidNewProduct> {
    let sku = normalize_sku("sku", &input.sku)?;
    let name = required_text("name", &input.name, MAX_NAME)?;
    let description = optional_text("description", input.description.as_deref(), MAX_DESCRIPTION)?;
    let category = optional_text("category", input.category.as_deref(), MAX_CATEGORY)?;
    let unit = match input.unit.as_deref() {
        None => DEFAULT_UNIT.to_string(),
        Some(u) => required_text("unit", u, MAX_UNIT)?,
    };
    let low_stock_threshold = threshold(input.low_stock_threshold)?.unwrap_or(0);
    let unit_cost = unit_cost(input.unit_cost)?;
    let initial_stock = match input.initial_stock {
        None | Some(0) => None,
        Some(n) if n < 0 || n > i64::from(i32::MAX) => {
            return Err(AppError::bad_input(
                "initialStock",
                format!("initialStock must be between 0 and {}", i32::MAX),
            ));
        }
        Some(n) => Some(n),
    };
    Ok(ValidNewProduct {
        sku,
        name,
        description,
        category,
        unit,
        low_stock_threshold,
        unit_cost,
        initial_stock,
    })
}

/// Creates a product in its own transaction (see [`create_in`]).
#[tracing::instrument(skip_all, fields(sku = %input.sku))]
pub async fn create(db: &Services, actor: &Actor, input: NewProduct) -> AppResult<product::Model> {
    let valid = validate_new(&input)?;
    let txn = db.begin_write().await?;
    let product = create_in(&txn, actor, &valid).await?;
    txn.commit().await?;
    Ok(product)
}

/// Creates a product on the caller's transaction; `initial_stock` is
/// recorded as an INBOUND movement in it (see [`create_all`]).
pub async fn create_in(
    txn: &Txn,
    actor: &Actor,
    input: &ValidNewProduct,
) -> AppResult<product::Model> {
    create_all(txn, actor, std::slice::from_ref(input))
        .await?
        .pop()
        .unwrap_or_else(|| {
            Err(AppError::internal(anyhow::anyhow!(
                "a product was created without an outcome"
            )))
        })
}

/// Creates products on the caller's transaction, in order, each as
/// [`create_in`] would: the product rows in multi-row INSERTs (a SKU that
/// exists already, in any case, is a CONFLICT for that product and the rest
/// go on), their audit rows, `productCreated` events, and the initial stock
/// of each as an INBOUND movement through the stock write path
/// ([`stock::apply_locked`]). The inputs must not repeat a SKU.
pub async fn create_all(
    txn: &Txn,
    actor: &Actor,
    inputs: &[ValidNewProduct],
) -> AppResult<Vec<AppResult<product::Model>>> {
    let now = crate::db::now();
    let models: Vec<product::Model> = inputs
        .iter()
        .map(|input| product::Model {
            id: Uuid::now_v7(),
            search_key: search_key(&input.sku, &input.name),
            sku: input.sku.clone(),
            name: input.name.clone(),
            description: input.description.clone(),
            category: input.category.clone(),
            unit: input.unit.clone(),
            stock: 0,
            low_stock_threshold: input.low_stock_threshold,
            unit_cost: input.unit_cost,
            version: 1,
            archived_at: None,
            created_at: now,
            updated_at: now,
        })
        .collect();
    // A SKU taken meanwhile (another request, another instance) is skipped
    // by the database and answered as a conflict below.
    let inserted: std::collections::HashSet<Uuid> = crate::db::insert_all::<product::Entity>(
        &**txn,
        &models,
        " ON CONFLICT DO NOTHING RETURNING id",
    )
    .await?
    .iter()
    .map(|row| row.try_get::<Uuid>("", "id"))
    .collect::<Result<_, _>>()?;
    let mut created: HashMap<Uuid, product::Model> = HashMap::with_capacity(inserted.len());
    let mut audits = Vec::with_capacity(inserted.len());
    let mut initial = Vec::new();
    for (model, input) in models.iter().zip(inputs) {
        if !inserted.contains(&model.id) {
            continue;
        }
        audits.push(audit::row(
            actor,
            AuditEntry::new(AuditAction::Create, EntityType::Product, model.id)
                .summary(format!("created product {}", model.sku))
                .changes(None, Some(snapshot(model))),
        ));
        txn.emit(DomainEvent::ProductCreated {
            product: Arc::new(model.clone()),
        });
        if let Some(quantity) = input.initial_stock {
            initial.push(stock::validate(&MovementInput {
                product_id: model.id,
                kind: MovementKind::Inbound,
                quantity,
                note: Some("initial stock".into()),
                reference: None,
                idempotency_key: None,
            })?);
        }
        created.insert(model.id, model.clone());
    }
    audit::record_all(txn, audits).await?;
    if !initial.is_empty() {
        // Created in `txn`, so locked for the rest of it.
        let movements: Vec<_> = initial.iter().map(|m| (actor, m)).collect();
        for result in stock::apply_locked(txn, &mut created, &movements).await? {
            result?;
        }
    }
    Ok(models
        .iter()
        .map(|model| match created.get(&model.id) {
            Some(product) => Ok(product.clone()),
            None => Err(AppError::conflict(format!(
                "a product with SKU {} already exists",
                model.sku
            ))),
        })
        .collect())
}

/// A catalogue change that passed validation; `None` leaves a field as it is
/// (`Some(None)` clears an optional one).
#[derive(Clone, Debug, Default)]
pub struct ValidPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub category: Option<Option<String>>,
    pub unit: Option<String>,
    pub low_stock_threshold: Option<i32>,
    pub unit_cost: Option<Option<i64>>,
}

pub fn validate_patch(patch: &ProductPatch) -> AppResult<ValidPatch> {
    Ok(ValidPatch {
        name: match &patch.name {
            Some(n) => Some(required_text("name", n, MAX_NAME)?),
            None => None,
        },
        description: match &patch.description {
            Some(d) => Some(optional_text("description", Some(d), MAX_DESCRIPTION)?),
            None => None,
        },
        category: match &patch.category {
            Some(c) => Some(optional_text("category", Some(c), MAX_CATEGORY)?),
            None => None,
        },
        unit: match &patch.unit {
            Some(u) => Some(required_text("unit", u, MAX_UNIT)?),
            None => None,
        },
        low_stock_threshold: threshold(patch.low_stock_threshold)?,
        unit_cost: match patch.unit_cost {
            Some(v) => Some(unit_cost(v)?),
            None => None,
        },
    })
}

/// Updates catalogue fields in its own transaction (see [`update_in`]).
#[tracing::instrument(skip_all, fields(product_id = %id))]
pub async fn update(
    db: &Services,
    actor: &Actor,
    id: Uuid,
    patch: ProductPatch,
    expected_version: Option<i64>,
) -> AppResult<product::Model> {
    let patch = validate_patch(&patch)?;
    let txn = db.begin_write().await?;
    let product = update_in(&txn, actor, id, &patch, expected_version).await?;
    txn.commit().await?;
    Ok(product)
}

/// Updates catalogue fields on the caller's transaction. With
/// `expected_version`, a stale version is a CONFLICT. A change that changes
/// nothing writes nothing and keeps the version.
pub async fn update_in(
    txn: &Txn,
    actor: &Actor,
    id: Uuid,
    patch: &ValidPatch,
    expected_version: Option<i64>,
) -> AppResult<product::Model> {
    let before = live_for_update(&**txn, id).await?;
    if let Some(expected) = expected_version
        && expected != i64::from(before.version)
    {
        return Err(AppError::conflict(format!(
            "product was changed by someone else (version {}, expected {expected})",
            before.version
        )));
    }
    let unchanged = patch.name.as_ref().is_none_or(|v| *v == before.name)
        && patch
            .description
            .as_ref()
            .is_none_or(|v| *v == before.description)
        && patch
            .category
            .as_ref()
            .is_none_or(|v| *v == before.category)
        && patch.unit.as_ref().is_none_or(|v| *v == before.unit)
        && patch
            .low_stock_threshold
            .is_none_or(|v| v == before.low_stock_threshold)
        && patch.unit_cost.is_none_or(|v| v == before.unit_cost);
    if unchanged {
        // Nothing to write: the version stays, so other clients' expectedVersion stays valid.
        return Ok(before);
    }
    let mut active: product::ActiveModel = before.clone().into();
    if let Some(v) = &patch.name {
        active.search_key = Set(search_key(&before.sku, v));
        active.name = Set(v.clone());
    }
    if let Some(v) = &patch.description {
        active.description = Set(v.clone());
    }
    if let Some(v) = &patch.category {
        active.category = Set(v.clone());
    }
    if let Some(v) = &patch.unit {
        active.unit = Set(v.clone());
    }
    if let Some(v) = patch.low_stock_threshold {
        active.low_stock_threshold = Set(v);
    }
    if let Some(v) = patch.unit_cost {
        active.unit_cost = Set(v);
    }
    active.version = Set(before.version + 1);
    active.updated_at = Set(Utc::now());
    let after = active.update(&**txn).await?;
    let (b, a) = diff(&before, &after);
    audit::record(
        txn,
        actor,
        AuditEntry::new(AuditAction::Update, EntityType::Product, after.id)
            .summary(format!("updated product {}", after.sku))
            .changes(Some(b), Some(a)),
    )
    .await?;
    txn.emit(DomainEvent::ProductUpdated {
        product: Arc::new(after.clone()),
    });
    Ok(after)
}

/// Archives a product in its own transaction (see [`archive_in`]).
#[tracing::instrument(skip_all, fields(product_id = %id))]
pub async fn archive(db: &Services, actor: &Actor, id: Uuid) -> AppResult<product::Model> {
    let txn = db.begin_write().await?;
    let product = archive_in(&txn, actor, id).await?;
    txn.commit().await?;
    Ok(product)
}

/// Archives a product: it keeps its history and its SKU, and leaves the
/// default listing.
pub async fn archive_in(txn: &Txn, actor: &Actor, id: Uuid) -> AppResult<product::Model> {
    let before = live_for_update(&**txn, id).await?;
    let mut active: product::ActiveModel = before.clone().into();
    let now = Utc::now();
    active.archived_at = Set(Some(now));
    active.version = Set(before.version + 1);
    active.updated_at = Set(now);
    let after = active.update(&**txn).await?;
    let (b, a) = diff(&before, &after);
    audit::record(
        txn,
        actor,
        AuditEntry::new(AuditAction::Delete, EntityType::Product, after.id)
            .summary(format!("archived product {}", after.sku))
            .changes(Some(b), Some(a)),
    )
    .await?;
    txn.emit(DomainEvent::ProductArchived {
        product: Arc::new(after.clone()),
    });
    Ok(after)
}

/// The product row, locked for the rest of the transaction; archived counts
/// as not found.
async fn live_for_update(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<product::Model> {
    product::Entity::find_by_id(id)
        .filter(product::Column::ArchivedAt.is_null())
        .lock_exclusive()
        .one(conn)
        .await?
        .ok_or_else(|| AppError::not_found("product not found"))
}

pub async fn get(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<Option<product::Model>> {
    Ok(product::Entity::find_by_id(id).one(conn).await?)
}

/// Case-insensitive; uses the `lower(sku)` unique index.
pub async fn get_by_sku(
    conn: &impl ConnectionTrait,
    sku: &str,
) -> AppResult<Option<product::Model>> {
    let sku = sku.trim().to_ascii_lowercase();
    Ok(product::Entity::find()
        .filter(Expr::expr(Func::lower(Expr::col(product::Column::Sku))).eq(sku))
        .one(conn)
        .await?)
}

/// A product by SKU: from the read cache (PostgreSQL; see `crate::cache`),
/// or read with the other requests' SKUs in one statement.
pub async fn get_by_sku_cached(
    services: &Services,
    sku: &str,
) -> AppResult<Option<Arc<product::Model>>> {
    let key = sku_key(sku);
    if let Some(hit) = services.product_cache().and_then(|c| c.get_by_sku(&key)) {
        return Ok(Some(hit));
    }
    services.sku_reads().get(key).await.map_err(|e| match e {
        Unanswered::Failed(failed) => {
            AppError::internal(anyhow::anyhow!("reading products by SKU: {failed:#}"))
        }
        Unanswered::Lost => AppError::internal(anyhow::anyhow!(
            "reading products by SKU: the read was lost"
        )),
    })
}

/// [`list`], with the total of the unfiltered catalogue from the read cache
/// (PostgreSQL), and otherwise the page and its count read at once.
pub async fn list_cached(
    db: &Services,
    filter: &ProductFilter,
    order: ProductOrder,
    page: PageRequest,
) -> AppResult<Page<product::Model>> {
    let unfiltered = filter.search.as_deref().is_none_or(|s| s.trim().is_empty())
        && filter
            .category
            .as_deref()
            .is_none_or(|c| c.trim().is_empty())
        && !filter.low_stock_only
        && !filter.include_archived;
    let cache = db.product_cache().filter(|_| unfiltered && page.with_total);
    let Some(cache) = cache else {
        return list(db.conn(), filter, order, page).await;
    };
    let (generation, known) = cache.count_ticket();
    let rows_only = PageRequest {
        with_total: false,
        ..page
    };
    let (rows, total) = match known {
        Some(total) => (list(db.conn(), filter, order, rows_only).await?, total),
        None => {
            let (rows, total) =
                tokio::try_join!(list(db.conn(), filter, order, rows_only), async {
                    Ok::<u64, AppError>(filtered(filter).count(db.conn()).await?)
                })?;
            cache.put_count(generation, total);
            (rows, total)
        }
    };
    Ok(Page {
        total_count: total,
        ..rows
    })
}

fn filtered(filter: &ProductFilter) -> Select<product::Entity> {
    let mut q = product::Entity::find();
    if !filter.include_archived {
        q = q.filter(product::Column::ArchivedAt.is_null());
    }
    if let Some(search) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        q = q.filter(contains_ci(product::Column::SearchKey, search));
    }
    if let Some(category) = filter
        .category
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        q = q.filter(product::Column::Category.eq(category));
    }
    if filter.low_stock_only {
        q = q.filter(product::low_stock_condition());
    }
    q
}

/// The catalogue's totals, archived products aside.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StockSummary {
    pub products: i64,
    /// At or below their threshold (the rule of [`product::low_stock_condition`]).
    pub low_stock: i64,
    pub out_of_stock: i64,
    pub units: i64,
    /// Products with a unit cost, and their stock at it (in the smallest
    /// unit of the currency; a double, exact to 2^53).
    pub costed: i64,
    pub value: f64,
}

/// One scan of the live products.
pub async fn summary(conn: &impl ConnectionTrait) -> AppResult<StockSummary> {
    let count_where = |condition: sea_orm::sea_query::SimpleExpr| {
        Func::coalesce([Expr::case(condition, 1).finally(0).sum(), Expr::val(0)]).cast_as("BIGINT")
    };
    let totals = product::Entity::find()
        .filter(product::Column::ArchivedAt.is_null())
        .select_only()
        .column_as(Expr::col(product::Column::Id).count(), "products")
        .column_as(count_where(product::low_stock_condition()), "low_stock")
        .column_as(
            count_where(Expr::col(product::Column::Stock).lte(0)),
            "out_of_stock",
        )
        .column_as(
            Func::coalesce([Expr::col(product::Column::Stock).sum(), Expr::val(0)])
                .cast_as("BIGINT"),
            "units",
        )
        .column_as(Expr::col(product::Column::UnitCost).count(), "costed")
        .column_as(
            Func::coalesce([
                Expr::col(product::Column::Stock)
                    .cast_as("DOUBLE PRECISION")
                    .mul(Expr::col(product::Column::UnitCost))
                    .sum(),
                Expr::val(0.0),
            ])
            .cast_as("DOUBLE PRECISION"),
            "value",
        )
        .into_tuple::<(i64, i64, i64, i64, i64, f64)>()
        .one(conn)
        .await?
        .unwrap_or_default();
    Ok(StockSummary {
        products: totals.0,
        low_stock: totals.1,
        out_of_stock: totals.2,
        units: totals.3,
        costed: totals.4,
        value: totals.5,
    })
}

/// One page in `order`; by default oldest first (ids are time-ordered), so
/// pages stay stable while rows are added. Any order is keyset-paginated:
/// the cursor is the last row's id, and the next page starts after that
/// row's (sort key, id), read from the row itself.
pub async fn list(
    conn: &impl ConnectionTrait,
    filter: &ProductFilter,
    order: ProductOrder,
    page: PageRequest,
) -> AppResult<Page<product::Model>> {
    let direction = if order.descending {
        Order::Desc
    } else {
        Order::Asc
    };
    // The cursor row, read in the same statement, under an alias of its own.
    let row = Alias::new("after");
    let (Some(key), Some(cursor_key)) = (
        order.key.expression(product::Entity),
        order.key.expression(row.clone()),
    ) else {
        return paginate(conn, filtered(filter), product::Column::Id, direction, page).await;
    };
    let total = page.total(filtered(filter).count(conn)).await?;
    let mut q = filtered(filter);
    if let Some(after) = page.after {
        // (key, id) beyond the cursor row's own (key, id).
        let bound = Query::select()
            .expr(cursor_key)
            .column((row.clone(), product::Column::Id))
            .from_as(product::Entity, row.clone())
            .and_where(Expr::col((row, product::Column::Id)).eq(after))
            .to_owned();
        let ours = Expr::tuple([
            key.clone(),
            Expr::col((product::Entity, product::Column::Id)),
        ]);
        let theirs = Expr::from(bound);
        q = q.filter(if order.descending {
            ours.lt(theirs)
        } else {
            ours.gt(theirs)
        });
    }
    let rows = q
        .order_by(key, direction.clone())
        .order_by(product::Column::Id, direction)
        .limit(page.first + 1)
        .all(conn)
        .await?;
    Ok(Page::from_rows(rows, page, total))
}
