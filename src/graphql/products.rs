use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object, SimpleObject};

use super::context::{actor, gql, state};
use super::guards::RoleGuard;
use super::types::{Conn, Product, connection, connection_page, parse_id};
use crate::entity::user::Role;
use crate::service::products;

#[derive(InputObject)]
pub struct CreateProductInput {
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub unit: Option<String>,
    pub low_stock_threshold: Option<i64>,
    /// In the smallest unit of the currency (`currency`).
    pub unit_cost: Option<i64>,
    /// Recorded as an INBOUND movement, not written raw.
    pub initial_stock: Option<i64>,
}

#[derive(InputObject)]
pub struct UpdateProductInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub unit: Option<String>,
    pub low_stock_threshold: Option<i64>,
    /// In the smallest unit of the currency; null clears it.
    pub unit_cost: MaybeUndefined<i64>,
}

#[derive(InputObject, Default)]
pub struct ProductFilter {
    /// Matches SKU or name, case-insensitive.
    pub search: Option<String>,
    pub category: Option<String>,
    pub low_stock_only: Option<bool>,
    pub include_archived: Option<bool>,
}

/// The order of `products`.
#[derive(InputObject)]
pub struct ProductOrder {
    pub field: ProductOrderField,
    #[graphql(default)]
    pub direction: SortDirection,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Default)]
pub enum ProductOrderField {
    /// Creation order (the default).
    #[default]
    CreatedAt,
    /// Case-insensitive.
    Sku,
    Name,
    Stock,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Default)]
pub enum SortDirection {
    #[default]
    Asc,
    Desc,
}

impl From<ProductOrder> for products::ProductOrder {
    fn from(o: ProductOrder) -> Self {
        Self {
            key: match o.field {
                ProductOrderField::CreatedAt => products::ProductSortKey::Created,
                ProductOrderField::Sku => products::ProductSortKey::Sku,
                ProductOrderField::Name => products::ProductSortKey::Name,
                ProductOrderField::Stock => products::ProductSortKey::Stock,
            },
            descending: o.direction == SortDirection::Desc,
        }
    }
}

/// The catalogue's totals, archived products aside.
#[derive(SimpleObject)]
pub struct StockSummary {
    pub products: i64,
    /// Products at or below their low-stock threshold.
    pub low_stock: i64,
    /// Products with no stock.
    pub out_of_stock: i64,
    /// The units on hand, all products together.
    pub units_on_hand: i64,
    /// Products with a unit cost.
    pub costed_products: i64,
    /// Their stock at their unit cost, in the smallest unit of the
    /// currency (`currency`); products without a cost count as nothing.
    pub stock_value: f64,
}

/// Who may read products.
pub const PRODUCT_READER: Role = Role::Viewer;

#[derive(Default)]
pub struct ProductsQuery;

#[Object]
impl ProductsQuery {
    #[graphql(guard = "RoleGuard(PRODUCT_READER)")]
    async fn product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Product>> {
        let id = parse_id("id", &id).map_err(gql)?;
        let found = products::get(state(ctx)?.services.conn(), id)
            .await
            .map_err(gql)?;
        Ok(found.map(Product::from))
    }

    /// How many products there are, how many are low or out of stock, the
    /// units on hand and their value at unit cost: one scan of the catalogue (archived products
    /// aside), for dashboards.
    #[graphql(guard = "RoleGuard(PRODUCT_READER)")]
    async fn stock_summary(&self, ctx: &Context<'_>) -> async_graphql::Result<StockSummary> {
        let state = state(ctx)?;
        let s = products::summary(state.services.conn())
            .await
            .map_err(gql)?;
        Ok(StockSummary {
            products: s.products,
            low_stock: s.low_stock,
            out_of_stock: s.out_of_stock,
            units_on_hand: s.units,
            costed_products: s.costed,
            stock_value: s.value,
        })
    }

    /// The ISO 4217 code of the currency unit costs are kept in (the
    /// CURRENCY setting), in its smallest unit: KRW in won, USD in cents.
    #[graphql(guard = "RoleGuard(PRODUCT_READER)")]
    async fn currency(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        Ok(state(ctx)?.config.currency.clone())
    }

    /// Case-insensitive.
    #[graphql(guard = "RoleGuard(PRODUCT_READER)")]
    async fn product_by_sku(
        &self,
        ctx: &Context<'_>,
        sku: String,
    ) -> async_graphql::Result<Option<Product>> {
        let state = state(ctx)?;
        let found = products::get_by_sku_cached(&state.services, &sku)
            .await
            .map_err(gql)?;
        Ok(found.map(|p| Product::from(Arc::unwrap_or_clone(p))))
    }

    /// Oldest first unless `orderBy` says otherwise (ties by creation);
    /// archived products only with `includeArchived`. The cursor of a page
    /// holds only for the order it was read in.
    #[graphql(
        guard = "RoleGuard(PRODUCT_READER)",
        complexity = "super::types::page_cost(first, child_complexity)"
    )]
    async fn products(
        &self,
        ctx: &Context<'_>,
        first: Option<i64>,
        after: Option<String>,
        filter: Option<ProductFilter>,
        order_by: Option<ProductOrder>,
    ) -> async_graphql::Result<Conn<Product>> {
        let page = connection_page(ctx, first, after)?;
        let f = filter.unwrap_or_default();
        let filter = products::ProductFilter {
            search: f.search,
            category: f.category,
            low_stock_only: f.low_stock_only.unwrap_or(false),
            include_archived: f.include_archived.unwrap_or(false),
        };
        let order = order_by.map(Into::into).unwrap_or_default();
        let rows = products::list_cached(&state(ctx)?.services, &filter, order, page)
            .await
            .map_err(gql)?;
        Ok(connection(rows, |p| p.id, Product::from))
    }
}

#[derive(Default)]
pub struct ProductsMutation;

#[Object]
impl ProductsMutation {
    #[graphql(guard = "RoleGuard(Role::Manager)")]
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        input: CreateProductInput,
    ) -> async_graphql::Result<Product> {
        let actor = actor(ctx).map_err(gql)?;
        let created = products::create(
            &state(ctx)?.services,
            &actor,
            products::NewProduct {
                sku: input.sku,
                name: input.name,
                description: input.description,
                category: input.category,
                unit: input.unit,
                low_stock_threshold: input.low_stock_threshold,
                unit_cost: input.unit_cost,
                initial_stock: input.initial_stock,
            },
        )
        .await
        .map_err(gql)?;
        Ok(created.into())
    }

    /// CONFLICT when `expectedVersion` is stale.
    #[graphql(guard = "RoleGuard(Role::Manager)")]
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateProductInput,
        expected_version: Option<i64>,
    ) -> async_graphql::Result<Product> {
        let id = parse_id("id", &id).map_err(gql)?;
        let actor = actor(ctx).map_err(gql)?;
        let updated = products::update(
            &state(ctx)?.services,
            &actor,
            id,
            products::ProductPatch {
                name: input.name,
                description: input.description,
                category: input.category,
                unit: input.unit,
                low_stock_threshold: input.low_stock_threshold,
                unit_cost: match input.unit_cost {
                    MaybeUndefined::Undefined => None,
                    MaybeUndefined::Null => Some(None),
                    MaybeUndefined::Value(v) => Some(Some(v)),
                },
            },
            expected_version,
        )
        .await
        .map_err(gql)?;
        Ok(updated.into())
    }

    /// Archives: the product keeps its history.
    #[graphql(guard = "RoleGuard(Role::Manager)")]
    async fn delete_product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Product> {
        let id = parse_id("id", &id).map_err(gql)?;
        let actor = actor(ctx).map_err(gql)?;
        let archived = products::archive(&state(ctx)?.services, &actor, id)
            .await
            .map_err(gql)?;
        Ok(archived.into())
    }
}
