//! Domain logic, one module per area. Services own the rules and the
//! transactions; data-access helpers take `&impl ConnectionTrait` so they work
//! inside a caller's transaction.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod context;
pub mod credentials;
pub mod group_commit;
pub mod health;
pub mod housekeeping;
pub mod movement;
pub mod positions;
pub mod product_reads;
pub mod products;
pub mod secrets;
pub mod security;
pub mod settings;
pub mod settings_cache;
pub mod stock;
pub mod two_factor;
pub mod uploads;
pub mod users;

use sea_orm::sea_query::{Expr, ExprTrait, IntoColumnRef, LikeExpr, SimpleExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, Order, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select,
};
use uuid::Uuid;

use crate::entity::user::Role;
use crate::error::{AppError, AppResult};

/// Where a request came from, recorded with every audit row.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The authenticated user a command runs as.
#[derive(Clone, Debug)]
pub struct CurrentUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    /// What the user must do before anything else, if anything.
    pub restriction: Option<Restriction>,
}

impl CurrentUser {
    /// Refuses an operation the user's restriction does not allow.
    pub fn check_allowed(&self, operation: &str) -> AppResult<()> {
        match self.restriction {
            Some(r) if !r.allows(operation) => Err(r.error()),
            _ => Ok(()),
        }
    }
}

/// Who is calling, as resolved once per operation from its bearer token.
/// Resolving fails (an `Err`, which refuses the operation) only when the
/// check itself could not be made, say the database did not answer: an
/// error while checking is never taken for "not restricted".
#[derive(Clone, Debug)]
pub enum Caller {
    /// No token.
    Anonymous,
    /// A token that names no active user (expired, forged, revoked): public
    /// fields still answer, everything else is refused with this message.
    Invalid(String),
    User(CurrentUser),
}

impl Caller {
    /// The signed-in user, or UNAUTHENTICATED.
    pub fn user(&self) -> AppResult<&CurrentUser> {
        match self {
            Self::User(user) => Ok(user),
            Self::Anonymous => Err(AppError::Unauthenticated("authentication required".into())),
            Self::Invalid(message) => Err(AppError::Unauthenticated(message.clone())),
        }
    }

    /// The signed-in user when it has at least `role` (and, for REST
    /// endpoints and other ways in that are no way out of a restriction, no
    /// restriction: `entry` names the way in).
    pub fn require(&self, role: Role, entry: &str) -> AppResult<&CurrentUser> {
        let user = self.user()?;
        user.check_allowed(entry)?;
        require_role(user.role, role)?;
        Ok(user)
    }

    /// Refuses a root field that the caller's restriction closes. Anonymous
    /// and invalid callers have no restriction: the field's own guard
    /// answers them.
    pub fn permit(&self, root_field: &str) -> AppResult<()> {
        match self {
            Self::User(user) => user.check_allowed(root_field),
            Self::Anonymous | Self::Invalid(_) => Ok(()),
        }
    }
}

/// A signed-in user who must change their password, or turn on two-factor
/// login, before anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Restriction {
    PasswordChangeRequired,
    TwoFactorEnrollmentRequired,
}

impl Restriction {
    /// The root fields still open: public ones, `me`, introspection (so that
    /// GraphiQL works), and the way out of the restriction.
    pub fn allows(self, root_field: &str) -> bool {
        const ALWAYS: &[&str] = &[
            "me",
            "logout",
            "login",
            "refreshToken",
            "health",
            "__typename",
            "__schema",
            "__type",
        ];
        ALWAYS.contains(&root_field)
            || match self {
                Self::PasswordChangeRequired => root_field == "changePassword",
                Self::TwoFactorEnrollmentRequired => {
                    matches!(root_field, "beginTwoFactorEnrollment" | "confirmTwoFactor")
                }
            }
    }

    pub fn error(self) -> AppError {
        match self {
            Self::PasswordChangeRequired => AppError::PasswordChangeRequired(
                "your password has expired: change it with changePassword first".into(),
            ),
            Self::TwoFactorEnrollmentRequired => AppError::TwoFactorEnrollmentRequired(
                "your role requires two-factor login: turn it on with beginTwoFactorEnrollment and confirmTwoFactor first".into(),
            ),
        }
    }
}

/// The one role rule: `have` may do what `needed` may (FORBIDDEN otherwise).
/// Guards, REST endpoints and subscription streams all ask it.
pub fn require_role(have: Role, needed: Role) -> AppResult<()> {
    if have.includes(needed) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "this operation needs the {needed:?} role or higher"
        )))
    }
}

/// Who did something, and from where.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    /// The user's email, for messages (alerts); None for the system.
    pub name: Option<String>,
    pub meta: RequestMeta,
}

impl Actor {
    pub fn new(user: Option<&CurrentUser>, meta: RequestMeta) -> Self {
        Self {
            user_id: user.map(|u| u.id),
            name: user.map(|u| u.email.clone()),
            meta,
        }
    }

    /// The process itself (seeding, background work).
    pub fn system() -> Self {
        Self::default()
    }

    /// An operator at the command line: no user, named in the audit row's
    /// user agent with the OS user running it.
    pub fn cli(command: &str) -> Self {
        let os_user = std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            user_id: None,
            name: Some(format!("the command line ({os_user})")),
            meta: RequestMeta {
                request_id: None,
                ip: None,
                user_agent: Some(format!("stockroom-cli {command} (os user {os_user})")),
            },
        }
    }
}

pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 100;

/// A validated forward page request over rows keyed by time-ordered UUIDs.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub first: u64,
    pub after: Option<Uuid>,
    /// Whether the caller wants `totalCount` (it costs a COUNT query).
    pub with_total: bool,
}

impl PageRequest {
    pub fn new(first: Option<i64>, after: Option<Uuid>) -> AppResult<Self> {
        let first = match first {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if n >= 1 && (n as u64) <= MAX_PAGE_SIZE => n as u64,
            Some(n) => {
                return Err(AppError::bad_input(
                    "first",
                    format!("first must be between 1 and {MAX_PAGE_SIZE}, got {n}"),
                ));
            }
        };
        Ok(Self {
            first,
            after,
            with_total: true,
        })
    }
}

impl PageRequest {
    /// The total, counted only when it was asked for.
    pub async fn total<F>(&self, count: F) -> AppResult<u64>
    where
        F: std::future::Future<Output = Result<u64, sea_orm::DbErr>>,
    {
        if self.with_total {
            Ok(count.await?)
        } else {
            Ok(0)
        }
    }
}

/// Runs one page of `query`, keyed by the time-ordered id column: oldest
/// first with `Order::Asc`, newest first with `Order::Desc`.
pub async fn paginate<E, C>(
    conn: &impl ConnectionTrait,
    query: Select<E>,
    id: C,
    order: Order,
    page: PageRequest,
) -> AppResult<Page<E::Model>>
where
    E: EntityTrait,
    E::Model: Sync,
    C: ColumnTrait,
{
    let total = page.total(query.clone().count(conn)).await?;
    let mut q = query;
    if let Some(after) = page.after {
        q = q.filter(match order {
            Order::Desc => id.lt(after),
            _ => id.gt(after),
        });
    }
    let rows = q
        .order_by(id, order)
        .limit(page.first + 1)
        .all(conn)
        .await?;
    Ok(Page::from_rows(rows, page, total))
}

/// One page of rows, plus what a Relay connection needs.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub total_count: u64,
}

impl<T> Page<T> {
    /// Builds a page from `first + 1` fetched rows.
    pub fn from_rows(mut rows: Vec<T>, request: PageRequest, total_count: u64) -> Self {
        let has_next_page = rows.len() as u64 > request.first;
        rows.truncate(request.first as usize);
        Self {
            items: rows,
            has_next_page,
            has_previous_page: request.after.is_some(),
            total_count,
        }
    }
}

/// Checks a required text field: trimmed, non-empty, at most `max` characters,
/// no control characters.
pub fn required_text(field: &str, value: &str, max: usize) -> AppResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(AppError::bad_input(
            field,
            format!("{field} must not be empty"),
        ));
    }
    checked_text(field, value, max)
}

/// Checks an optional text field; blank becomes `None`.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> AppResult<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => checked_text(field, v, max).map(Some),
    }
}

fn checked_text(field: &str, value: &str, max: usize) -> AppResult<String> {
    if value.chars().count() > max {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(AppError::bad_input(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(value.to_string())
}

/// Lowercases character by character (no context rules such as a final
/// sigma), so a stored key and a search fold the same way.
pub fn fold_case(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

/// A substring match of `needle`, lowercased, against a column that holds
/// lowercased text; the user's `%`, `_` and `\` are taken literally.
pub fn contains_ci(column: impl IntoColumnRef, needle: &str) -> SimpleExpr {
    let escaped = fold_case(needle)
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Expr::col(column).like(LikeExpr::new(format!("%{escaped}%")).escape('\\'))
}
