//! The one error type at the API edge, and its mapping to GraphQL
//! `extensions.code` and HTTP status codes.

use async_graphql::ErrorExtensions;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sea_orm::DbErr;
use serde_json::{Map, Value, json};

pub type AppResult<T> = Result<T, AppError>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    /// The password was right; the account has two-factor login on and the
    /// code is missing.
    #[error("{0}")]
    TwoFactorRequired(String),
    /// The user's role requires two-factor login and it is not on yet.
    #[error("{0}")]
    TwoFactorEnrollmentRequired(String),
    /// The password is older than PASSWORD_MAX_AGE_DAYS.
    #[error("{0}")]
    PasswordChangeRequired(String),
    #[error("{message}")]
    BadInput { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("insufficient stock: {available} available, {requested} requested")]
    InsufficientStock { available: i64, requested: i64 },
    #[error("too many requests, retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A request body in a content type the endpoint does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The client accepts no media type the endpoint answers in.
    #[error("{0}")]
    NotAcceptable(String),
    /// A bound on open resources (connections, subscriptions) was reached.
    #[error("{0}")]
    LimitExceeded(String),
    /// A subscriber fell so far behind that events were dropped for it; its
    /// stream ends. `cursor`, on a stream that can resume, is the last event
    /// it was sent: subscribing again `after:` it misses nothing.
    #[error(
        "subscription fell {missed} events behind and was ended; subscribe again after its last cursor, or re-fetch"
    )]
    SubscriptionLagged { missed: u64, cursor: Option<String> },
    /// Events may have been lost (another instance's, while this instance's
    /// listener was down), or more are missing than a stream replays; the
    /// stream ends. `cursor`, when given, is where a re-fetch stands: read
    /// the state anew, then subscribe `after:` it.
    #[error("events may have been missed; re-fetch, then subscribe again")]
    EventsMissed { cursor: Option<String> },
    /// An automatic persisted query whose hash this instance does not know:
    /// the client sends the query text with its hash again.
    #[error("{0}")]
    PersistedQueryNotFound(String),
    /// Anything the client cannot act on; the cause is logged, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadInput {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::TwoFactorRequired(_) => "TWO_FACTOR_REQUIRED",
            Self::TwoFactorEnrollmentRequired(_) => "TWO_FACTOR_ENROLLMENT_REQUIRED",
            Self::PasswordChangeRequired(_) => "PASSWORD_CHANGE_REQUIRED",
            Self::BadInput { .. } => "BAD_USER_INPUT",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Conflict(_) => "CONFLICT",
            Self::InsufficientStock { .. } => "INSUFFICIENT_STOCK",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Self::NotAcceptable(_) => "NOT_ACCEPTABLE",
            Self::LimitExceeded(_) => "LIMIT_EXCEEDED",
            Self::SubscriptionLagged { .. } => "SUBSCRIPTION_LAGGED",
            Self::EventsMissed { .. } => "EVENTS_MISSED",
            Self::PersistedQueryNotFound(_) => "PERSISTED_QUERY_NOT_FOUND",
            Self::Internal(_) => "INTERNAL",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) | Self::TwoFactorRequired(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_)
            | Self::TwoFactorEnrollmentRequired(_)
            | Self::PasswordChangeRequired(_) => StatusCode::FORBIDDEN,
            Self::BadInput { .. } | Self::PersistedQueryNotFound(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::InsufficientStock { .. } => StatusCode::CONFLICT,
            Self::RateLimited { .. } | Self::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::SubscriptionLagged { .. } | Self::EventsMissed { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Logs internal causes (inside the request's span, so with its request id).
    fn log_if_internal(&self) {
        if let Self::Internal(cause) = self {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
    }
}

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        Self::Internal(err.into())
    }
}

/// A unique index the code answers violations of with a domain error.
/// PostgreSQL names the violated constraint; SQLite names an index on an
/// expression, and the columns of any other index (`table.column`).
/// `tests/api/constraints.rs` checks each key against the migrated schema
/// of both databases.
pub struct UniqueKey {
    pub name: &'static str,
    /// The index's table and columns, in index order.
    pub table: &'static str,
    pub columns: &'static [&'static str],
    /// True for an index on an expression (`lower(sku)`), which SQLite
    /// reports by name.
    pub expression: bool,
}

pub const PRODUCTS_SKU_KEY: UniqueKey = UniqueKey {
    name: "products_sku_lower_key",
    table: "products",
    columns: &[],
    expression: true,
};
pub const USERS_EMAIL_KEY: UniqueKey = UniqueKey {
    name: "users_email_key",
    table: "users",
    columns: &["email"],
    expression: false,
};
pub const UPLOAD_ACTIVE_FILE_KEY: UniqueKey = UniqueKey {
    name: "upload_jobs_active_file_key",
    table: "upload_jobs",
    columns: &["content_sha256", "kind", "dry_run"],
    expression: false,
};
pub const MOVEMENTS_IDEMPOTENCY_KEY: UniqueKey = UniqueKey {
    name: "stock_movements_idempotency_key",
    table: "stock_movements",
    columns: &["created_by", "idempotency_key"],
    expression: false,
};

/// The unique index a refused write violated, as the driver tells it.
#[derive(Debug, PartialEq, Eq)]
pub enum Violated {
    /// By name: PostgreSQL's constraint (`DatabaseError::constraint`), or
    /// an index on an expression on SQLite.
    Index(String),
    /// By its `table.column` list (SQLite, an index on columns).
    Columns(Vec<String>),
}

impl UniqueKey {
    fn is(&self, violated: &Violated) -> bool {
        match violated {
            Violated::Index(name) => name == self.name,
            Violated::Columns(columns) => {
                !self.expression
                    && columns.len() == self.columns.len()
                    && columns
                        .iter()
                        .zip(self.columns)
                        .all(|(c, k)| c.split_once('.') == Some((self.table, k)))
            }
        }
    }
}

/// SQLite's extended result codes for a UNIQUE and a PRIMARY KEY failure.
const SQLITE_CONSTRAINT_UNIQUE: &str = "2067";
const SQLITE_CONSTRAINT_PRIMARYKEY: &str = "1555";
/// PostgreSQL's unique_violation.
const POSTGRES_UNIQUE_VIOLATION: &str = "23505";

/// The unique index `err` violated, if it is a unique violation: by the
/// error's code, then the constraint the driver names (PostgreSQL) or the
/// key SQLite reports with a UNIQUE failure (`index 'name'`, or
/// `table.column, ...`).
pub fn violated_unique(err: &DbErr) -> Option<Violated> {
    let db = sqlx_error(err)?.as_database_error()?;
    match db.code()?.as_ref() {
        POSTGRES_UNIQUE_VIOLATION => db.constraint().map(|c| Violated::Index(c.to_string())),
        SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY => {
            let key = db.message().split_once(": ")?.1.trim();
            Some(match key.strip_prefix("index '") {
                Some(named) => Violated::Index(named.trim_end_matches('\'').to_string()),
                None => Violated::Columns(key.split(", ").map(str::to_string).collect()),
            })
        }
        _ => None,
    }
}

/// Turns a violation of the unique index `key` into a domain error. A
/// violation of any other index, and any other database error, stays
/// internal: a clash on one constraint is never reported as another.
pub fn on_unique_violation(err: DbErr, key: &UniqueKey, domain: AppError) -> AppError {
    match violated_unique(&err) {
        Some(violated) if key.is(&violated) => domain,
        _ => AppError::from(err),
    }
}

fn sqlx_error(err: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match err {
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// True when the database refused a row because of a CHECK constraint
/// (SQLite extended code 275, PostgreSQL 23514); `sql_err()` does not classify these.
pub fn is_check_violation(err: &DbErr) -> bool {
    db_code(err).is_some_and(|code| code == "275" || code == "23514")
}

fn db_code(err: &DbErr) -> Option<String> {
    sqlx_error(err)?
        .as_database_error()?
        .code()
        .map(|c| c.into_owned())
}

/// True when the database gave up on a transaction that may succeed if run
/// again: a deadlock (PostgreSQL 40P01), a serialization failure (40001), or
/// SQLite's busy codes (5, 517).
pub fn is_transient(err: &AppError) -> bool {
    let AppError::Internal(inner) = err else {
        return false;
    };
    inner
        .downcast_ref::<DbErr>()
        .and_then(db_code)
        .is_some_and(|code| matches!(code.as_str(), "40P01" | "40001" | "5" | "517"))
}

/// Why a transient failure happened, for the retry metric: `deadlock`,
/// `serialization` or `busy` (SQLite); `other` for anything else.
pub fn transient_reason(err: &AppError) -> &'static str {
    let AppError::Internal(inner) = err else {
        return "other";
    };
    match inner.downcast_ref::<DbErr>().and_then(db_code).as_deref() {
        Some("40P01") => "deadlock",
        Some("40001") => "serialization",
        Some("5" | "517") => "busy",
        _ => "other",
    }
}

/// `AppError` is `Display`, so `?` would turn it into a GraphQL error without
/// extensions; resolvers convert through this instead (`graphql::gql`).
impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        self.log_if_internal();
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            for (key, value) in self.extensions() {
                if let Ok(value) = async_graphql::Value::from_json(value) {
                    ext.set(key, value);
                }
            }
        })
    }
}

impl AppError {
    /// The contract's `extensions`: `code`, plus `field` for BAD_USER_INPUT,
    /// `available`/`requested` for INSUFFICIENT_STOCK, `retryAfterSeconds`
    /// for RATE_LIMITED, and `cursor` for SUBSCRIPTION_LAGGED and
    /// EVENTS_MISSED where a stream can resume. GraphQL errors and REST bodies both use it.
    pub fn extensions(&self) -> Map<String, Value> {
        let mut ext = Map::new();
        ext.insert("code".into(), self.code().into());
        match self {
            AppError::BadInput { field, .. } => {
                ext.insert("field".into(), field.as_str().into());
            }
            AppError::InsufficientStock {
                available,
                requested,
            } => {
                ext.insert("available".into(), (*available).into());
                ext.insert("requested".into(), (*requested).into());
            }
            AppError::RateLimited { retry_after_secs } => {
                ext.insert("retryAfterSeconds".into(), (*retry_after_secs).into());
            }
            AppError::SubscriptionLagged {
                cursor: Some(cursor),
                ..
            }
            | AppError::EventsMissed {
                cursor: Some(cursor),
            } => {
                ext.insert("cursor".into(), cursor.as_str().into());
            }
            _ => {}
        }
        ext
    }

    /// A whole GraphQL response carrying only this error, for requests
    /// refused before GraphQL runs (rate limit, body limit, unparsable body).
    pub fn into_graphql_response(self) -> Response {
        self.log_if_internal();
        let body = json!({
            "errors": [{ "message": self.to_string(), "extensions": self.extensions() }]
        });
        self.respond(body)
    }

    /// Status, JSON body and, when rate limited, `Retry-After`.
    fn respond(&self, body: Value) -> Response {
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let AppError::RateLimited { retry_after_secs } = self {
            set_retry_after(response.headers_mut(), *retry_after_secs);
        }
        response
    }
}

pub fn set_retry_after(headers: &mut HeaderMap, seconds: u64) {
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
}

/// REST errors: `{"error": {"message": ..., "code": ..., <extensions>}}`.
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let mut error = self.extensions();
        error.insert("message".into(), self.to_string().into());
        self.respond(json!({ "error": error }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_keys_match_their_own_violations_and_no_other() {
        let columns =
            |list: &[&str]| Violated::Columns(list.iter().map(|c| c.to_string()).collect());
        let idem = columns(&[
            "stock_movements.created_by",
            "stock_movements.idempotency_key",
        ]);
        let version = columns(&[
            "stock_movements.product_id",
            "stock_movements.product_version",
        ]);
        assert!(MOVEMENTS_IDEMPOTENCY_KEY.is(&idem));
        assert!(!MOVEMENTS_IDEMPOTENCY_KEY.is(&version));
        assert!(
            MOVEMENTS_IDEMPOTENCY_KEY
                .is(&Violated::Index("stock_movements_idempotency_key".into()))
        );
        assert!(!MOVEMENTS_IDEMPOTENCY_KEY.is(&Violated::Index(
            "stock_movements_product_version_key".into()
        )));
        assert!(PRODUCTS_SKU_KEY.is(&Violated::Index("products_sku_lower_key".into())));
        assert!(!PRODUCTS_SKU_KEY.is(&columns(&["products.sku"])));
        assert!(USERS_EMAIL_KEY.is(&columns(&["users.email"])));
        assert!(!USERS_EMAIL_KEY.is(&columns(&["audit_logs.email"])));
        assert!(!USERS_EMAIL_KEY.is(&Violated::Index("products_sku_lower_key".into())));
    }
}
