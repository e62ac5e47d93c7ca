//! GraphQL output objects and shared scalars. Outputs are built from entity
//! models; they are never the entities themselves.

use std::sync::Arc;

use async_graphql::connection::{Connection, CursorType, Edge, EmptyFields};
use async_graphql::{ComplexObject, Context, ID, OutputType, SimpleObject};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::context::{current_user, gql, loaders};
use crate::entity::audit_log::{AuditAction, EntityType};
use crate::entity::stock_movement::MovementKind;
use crate::entity::user::Role;
use crate::entity::{audit_log, product, stock_movement, user};
use crate::error::{AppError, AppResult};
use crate::service::{Page, PageRequest};

/// Parses a GraphQL `ID` into a UUID; a malformed one names its field.
pub fn parse_id(field: &str, id: &ID) -> AppResult<Uuid> {
    Uuid::parse_str(id.as_str())
        .map_err(|_| AppError::bad_input(field, format!("{field} is not a valid id")))
}

/// An opaque cursor: the row's time-ordered id, base64url encoded.
#[derive(Clone, Copy, Debug)]
pub struct IdCursor(pub Uuid);

impl CursorType for IdCursor {
    type Error = String;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|bytes| Uuid::from_slice(&bytes).ok())
            .map(IdCursor)
            .ok_or_else(|| "invalid cursor".to_string())
    }

    fn encode_cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }
}

/// Complexity of a connection field: what one row costs, times the rows it
/// may return, so nested pages multiply (a page of 100 under a page of 100 is
/// 10,000 rows, not 200).
pub fn page_cost(first: Option<i64>, child_complexity: usize) -> usize {
    let rows = first
        .unwrap_or(crate::service::DEFAULT_PAGE_SIZE as i64)
        .clamp(1, crate::service::MAX_PAGE_SIZE as i64) as usize;
    rows.saturating_mul(child_complexity).saturating_add(1)
}

/// Validates `first` / `after` of a connection; `totalCount` is counted only
/// when the query selects it.
pub fn connection_page(
    ctx: &Context<'_>,
    first: Option<i64>,
    after: Option<String>,
) -> async_graphql::Result<PageRequest> {
    let mut page = page_request(first, after).map_err(gql)?;
    page.with_total = ctx.look_ahead().field("totalCount").exists();
    Ok(page)
}

/// Validates `first` / `after` of a connection.
pub fn page_request(first: Option<i64>, after: Option<String>) -> AppResult<PageRequest> {
    let after = match after {
        Some(s) => Some(
            IdCursor::decode_cursor(&s)
                .map_err(|_| AppError::bad_input("after", "after is not a valid cursor"))?
                .0,
        ),
        None => None,
    };
    PageRequest::new(first, after)
}

#[derive(SimpleObject)]
pub struct TotalCount {
    /// Rows matching the filter, across all pages.
    pub total_count: i64,
}

pub type Conn<N> = Connection<IdCursor, N, TotalCount, EmptyFields>;

/// Builds a Relay connection from a service page.
pub fn connection<M, N: OutputType>(
    page: Page<M>,
    id: impl Fn(&M) -> Uuid,
    node: impl Fn(M) -> N,
) -> Conn<N> {
    let mut conn = Connection::with_additional_fields(
        page.has_previous_page,
        page.has_next_page,
        TotalCount {
            total_count: i64::try_from(page.total_count).unwrap_or(i64::MAX),
        },
    );
    conn.edges.extend(
        page.items
            .into_iter()
            .map(|m| Edge::new(IdCursor(id(&m)), node(m))),
    );
    conn
}

#[derive(SimpleObject)]
pub struct User {
    pub id: ID,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    /// True once two-factor login is confirmed.
    pub two_factor_enabled: bool,
    /// When the password was last set (by the user, an admin or the CLI).
    pub password_changed_at: DateTime<Utc>,
    /// The end of a lock after repeated failed logins; null when not locked.
    pub locked_until: Option<DateTime<Utc>>,
}

impl From<user::Model> for User {
    fn from(u: user::Model) -> Self {
        Self {
            id: ID(u.id.to_string()),
            two_factor_enabled: u.two_factor_enabled(),
            password_changed_at: u.password_set_at(),
            locked_until: u.locked_at(Utc::now()),
            email: u.email,
            display_name: u.display_name,
            role: u.role,
            is_active: u.is_active,
            created_at: u.created_at,
            last_login_at: u.last_login_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct AuthPayload {
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub user: User,
    /// The password expired: everything but changePassword, me and logout
    /// answers PASSWORD_CHANGE_REQUIRED until it is changed.
    pub password_change_required: bool,
    /// The user's role requires two-factor login: everything but enrollment,
    /// me and logout answers TWO_FACTOR_ENROLLMENT_REQUIRED until it is on.
    pub two_factor_enrollment_required: bool,
}

impl From<crate::service::auth::Session> for AuthPayload {
    fn from(s: crate::service::auth::Session) -> Self {
        use crate::service::Restriction;
        Self {
            access_token: s.access_token,
            access_token_expires_at: s.access_token_expires_at,
            refresh_token: s.refresh_token,
            user: s.user.into(),
            password_change_required: s.restriction == Some(Restriction::PasswordChangeRequired),
            two_factor_enrollment_required: s.restriction
                == Some(Restriction::TwoFactorEnrollmentRequired),
        }
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Product {
    pub id: ID,
    /// Unique, case-insensitive, trimmed.
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub unit: String,
    /// Current on-hand quantity, never negative.
    pub stock: i32,
    /// LOW_STOCK alert when stock falls to or below it.
    pub low_stock_threshold: i32,
    /// What one unit cost, in the smallest unit of the currency
    /// (`currency`: won, cents); null when not known.
    pub unit_cost: Option<i64>,
    /// Optimistic concurrency token, +1 on every change.
    pub version: i32,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[graphql(skip)]
    pub uuid: Uuid,
    #[graphql(skip)]
    pub low_stock: bool,
}

impl From<product::Model> for Product {
    fn from(p: product::Model) -> Self {
        Self {
            low_stock: p.is_low_stock(),
            id: ID(p.id.to_string()),
            uuid: p.id,
            sku: p.sku,
            name: p.name,
            description: p.description,
            category: p.category,
            unit: p.unit,
            stock: p.stock,
            low_stock_threshold: p.low_stock_threshold,
            unit_cost: p.unit_cost,
            version: p.version,
            archived_at: p.archived_at,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[ComplexObject]
impl Product {
    async fn is_low_stock(&self) -> bool {
        self.low_stock
    }

    /// This product's movements, newest first.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn movements(
        &self,
        ctx: &Context<'_>,
        first: Option<i64>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<StockMovement>> {
        let page = page_request(first, after).map_err(gql)?;
        let key = super::loaders::MovementPageKey {
            product_id: self.uuid,
            first: page.first,
            after: page.after,
        };
        let rows = loaders(ctx)?
            .movements
            .load_one(key)
            .await
            .map_err(|e| {
                gql(AppError::internal(anyhow::anyhow!(
                    "loading movements: {e:?}"
                )))
            })?
            .unwrap_or_else(|| Page::from_rows(Vec::new(), page, 0));
        Ok(connection(rows, |m| m.id, StockMovement::from))
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct StockMovement {
    pub id: ID,
    pub kind: MovementKind,
    /// Signed delta applied to stock.
    pub quantity: i32,
    /// Product stock right after this movement.
    pub balance_after: i32,
    pub note: Option<String>,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    #[graphql(skip)]
    pub product_id: Uuid,
    #[graphql(skip)]
    pub created_by: Option<Uuid>,
    /// The product as of this movement, when the caller already has it (an
    /// event): `product` then answers with it instead of reading.
    #[graphql(skip)]
    pub product: Option<Arc<product::Model>>,
}

impl StockMovement {
    pub fn with_product(m: stock_movement::Model, product: Arc<product::Model>) -> Self {
        Self {
            product: Some(product),
            ..Self::from(m)
        }
    }
}

impl From<stock_movement::Model> for StockMovement {
    fn from(m: stock_movement::Model) -> Self {
        Self {
            product: None,
            id: ID(m.id.to_string()),
            kind: m.kind,
            quantity: m.quantity,
            balance_after: m.balance_after,
            note: m.note,
            reference: m.reference,
            created_at: m.created_at,
            product_id: m.product_id,
            created_by: m.created_by,
        }
    }
}

pub(super) async fn load_user(
    ctx: &Context<'_>,
    id: Option<Uuid>,
) -> async_graphql::Result<Option<User>> {
    let Some(id) = id else { return Ok(None) };
    let loaders = loaders(ctx)?;
    let user = loaders
        .users
        .load_one(id)
        .await
        .map_err(|e| gql(AppError::internal(anyhow::anyhow!("loading user: {e:?}"))))?;
    Ok(user.map(User::from))
}

#[ComplexObject]
impl StockMovement {
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Product> {
        if let Some(p) = &self.product {
            return Ok(Product::from(p.as_ref().clone()));
        }
        let loaders = loaders(ctx)?;
        loaders
            .products
            .load_one(self.product_id)
            .await
            .map_err(|e| {
                gql(AppError::internal(anyhow::anyhow!(
                    "loading product: {e:?}"
                )))
            })?
            .map(Product::from)
            .ok_or_else(|| gql(AppError::not_found("product not found")))
    }

    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        load_user(ctx, self.created_by).await
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct AuditLog {
    pub id: ID,
    pub occurred_at: DateTime<Utc>,
    pub action: AuditAction,
    pub entity_type: EntityType,
    pub entity_id: Option<String>,
    pub summary: String,
    /// `{ "before": {...}, "after": {...} }`; secrets are never included.
    pub changes: Option<async_graphql::Json<serde_json::Value>>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// In `auditLogAdded`: where the stream stands after this row;
    /// `auditLogAdded(after:)` with it resumes right after. Null elsewhere.
    pub cursor: Option<String>,
    #[graphql(skip)]
    pub actor_id: Option<Uuid>,
}

impl From<audit_log::Model> for AuditLog {
    fn from(a: audit_log::Model) -> Self {
        Self {
            id: ID(a.id.to_string()),
            occurred_at: a.occurred_at,
            action: a.action,
            entity_type: a.entity_type,
            entity_id: a.entity_id,
            summary: a.summary,
            changes: a.changes.map(async_graphql::Json),
            request_id: a.request_id,
            ip: a.ip,
            user_agent: a.user_agent,
            cursor: None,
            actor_id: a.actor_id,
        }
    }
}

#[ComplexObject]
impl AuditLog {
    async fn actor(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        load_user(ctx, self.actor_id).await
    }
}

/// For resolvers that only need the caller to be signed in.
pub async fn signed_in(ctx: &Context<'_>) -> async_graphql::Result<()> {
    current_user(ctx).map(|_| ()).map_err(gql)
}
