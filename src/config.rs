//! Typed configuration, read once from the environment (and `.env`).
//!
//! Every variable is described in [`VARIABLES`]; `stockroom check-config` prints
//! the effective value of each one with secrets masked.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// A value that must never reach a log, an error message or an audit record:
/// `secrecy`'s string, zeroed when dropped, printed as `***`.
#[derive(Clone)]
pub struct Secret(secrecy::SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(secrecy::SecretString::from(value.into()))
    }

    /// The secret itself; call only where it is used, never to print it.
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl Default for Secret {
    fn default() -> Self {
        Self::new(String::new())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// Who may run schema introspection (`__schema`, `__type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Introspection {
    Everyone,
    /// Callers with a valid access token (restricted accounts included:
    /// GraphiQL needs the schema to show them their way out).
    SignedIn,
    Nobody,
}

impl Introspection {
    pub fn label(self) -> &'static str {
        match self {
            Self::Everyone => "everyone",
            Self::SignedIn => "signed-in",
            Self::Nobody => "nobody",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Where the JWT secret came from: generated secrets are per process, so tokens
/// do not survive a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Configured,
    Generated,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub app_env: AppEnv,
    pub host: String,
    pub port: u16,
    pub database_url: Secret,
    pub db_max_connections: u32,
    pub db_acquire_timeout: Duration,
    pub db_busy_timeout: Duration,
    pub db_slow_query: Duration,
    pub auto_migrate: bool,
    pub jwt_secret: Secret,
    pub jwt_secret_source: SecretSource,
    /// The signing key before the last rotation: accepted for verification
    /// only, so that tokens it signed stay valid until they expire.
    pub jwt_secret_previous: Option<Secret>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_access_ttl: Duration,
    pub jwt_refresh_ttl: Duration,
    pub auth_cache_ttl: Duration,
    /// Consecutive failed logins that lock an account; 0 turns locking off.
    pub login_lockout_threshold: u32,
    pub login_lockout: Duration,
    /// Days a password stays valid; 0 is no limit.
    pub password_max_age_days: u32,
    /// Roles whose users must turn on two-factor login before doing anything.
    pub two_factor_required_roles: Vec<crate::entity::user::Role>,
    /// Encrypts TOTP secrets at rest; derived from JWT_SECRET when unset in
    /// development.
    pub totp_encryption_key: Option<Secret>,
    pub admin_email: String,
    pub admin_password: Option<Secret>,
    pub throttle_default_ttl: Duration,
    pub throttle_default_limit: u32,
    pub throttle_login_ttl: Duration,
    pub throttle_login_limit: u32,
    pub trust_proxy: bool,
    /// Proxies in front of the service that append to X-Forwarded-For (a CDN
    /// and a load balancer are two); used when `trust_proxy` is on.
    pub trust_proxy_hops: usize,
    pub cors_origins: Vec<String>,
    pub log_format: LogFormat,
    pub rust_log: String,
    pub request_body_limit: usize,
    pub request_timeout: Duration,
    pub health_db_timeout: Duration,
    pub graphql_max_depth: usize,
    pub graphql_max_complexity: usize,
    pub graphql_introspection: Introspection,
    pub graphql_max_root_fields: usize,
    pub event_bus_capacity: usize,
    pub ws_max_subscriptions_per_connection: usize,
    pub ws_max_connections_per_ip: usize,
    pub ws_init_timeout: Duration,
    pub ws_keepalive: Duration,
    pub telegram_bot_token: Option<Secret>,
    pub telegram_chat_ids: Vec<String>,
    pub telegram_api_url: String,
    pub alert_max_attempts: u32,
    pub alert_retry_base: Duration,
    pub alert_retry_max: Duration,
    pub alert_lease: Duration,
    pub alert_send_timeout: Duration,
    pub alert_poll: Duration,
    pub alert_chat_per_second: u32,
    pub alert_global_per_second: u32,
    pub alert_digest_after: usize,
    pub alert_login_failures: u32,
    pub alert_login_window: Duration,
    pub alert_stale_attempts: u32,
    pub alert_stale_age: Duration,
    pub alert_retention: Duration,
    pub refresh_token_retention: Duration,
    pub throttle_alerts_ttl: Duration,
    pub throttle_alerts_limit: u32,
    pub throttle_probe_ttl: Duration,
    pub throttle_probe_limit: u32,
    pub upload_max_bytes: usize,
    pub upload_max_rows: u32,
    pub upload_batch_size: usize,
    pub upload_retention: Duration,
    pub upload_queue_alert_age: Duration,
    pub upload_queue_alert_jobs: u64,
    pub upload_lease: Duration,
    pub upload_poll: Duration,
    pub upload_worker_enabled: bool,
    /// PostgreSQL: how long a product read may be served from memory at
    /// most (it is invalidated by every change heard of first); 0 is off.
    pub read_cache_ttl: Duration,
    /// `GET /metrics` is served (on `metrics_addr` when set, otherwise on the
    /// API listener).
    pub metrics_enabled: bool,
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// One documented variable: its name, default (as written in `.env.example`),
/// whether it is secret, and one line of meaning.
pub struct Variable {
    pub name: &'static str,
    pub default: &'static str,
    pub secret: bool,
    pub meaning: &'static str,
}

const fn var(
    name: &'static str,
    default: &'static str,
    secret: bool,
    meaning: &'static str,
) -> Variable {
    Variable {
        name,
        default,
        secret,
        meaning,
    }
}

/// Every variable Stockroom reads, in the order `check-config` prints them.
pub const VARIABLES: &[Variable] = &[
    var(
        "APP_ENV",
        "development",
        false,
        "development | production; production refuses weak secrets",
    ),
    var("HOST", "0.0.0.0", false, "address to listen on"),
    var(
        "PORT",
        "4000",
        false,
        "port to listen on (0 picks a free one)",
    ),
    var(
        "DATABASE_URL",
        "sqlite://stockroom.db?mode=rwc",
        true,
        "sqlite://FILE?mode=rwc or postgres://USER:PASS@HOST:PORT/DB",
    ),
    var("DB_MAX_CONNECTIONS", "10", false, "connection pool size"),
    var(
        "DB_ACQUIRE_TIMEOUT_MS",
        "5000",
        false,
        "how long a request waits for a pooled connection",
    ),
    var(
        "DB_BUSY_TIMEOUT_MS",
        "5000",
        false,
        "SQLite only: how long a writer waits for the database lock",
    ),
    var(
        "DB_SLOW_QUERY_MS",
        "500",
        false,
        "statements slower than this are logged at WARN with their SQL (never their values)",
    ),
    var(
        "AUTO_MIGRATE",
        "true",
        false,
        "serve applies pending migrations and seeds the admin at start; false skips both",
    ),
    var(
        "JWT_SECRET",
        "",
        true,
        "HS256 signing key, at least 32 bytes; generated per process in development when empty",
    ),
    var(
        "JWT_SECRET_PREVIOUS",
        "",
        true,
        "the JWT_SECRET before a rotation: verifies tokens it signed, signs nothing; remove once they expired",
    ),
    var(
        "JWT_ISSUER",
        "stockroom",
        false,
        "iss claim of access tokens",
    ),
    var(
        "JWT_AUDIENCE",
        "stockroom-api",
        false,
        "aud claim of access tokens",
    ),
    var(
        "JWT_ACCESS_TTL_SECONDS",
        "900",
        false,
        "access token lifetime",
    ),
    var(
        "JWT_REFRESH_TTL_SECONDS",
        "1209600",
        false,
        "refresh token lifetime",
    ),
    var(
        "AUTH_CACHE_SECONDS",
        "5",
        false,
        "how long a verified user (role, active) is reused across requests; 0 reads it every request",
    ),
    var(
        "LOGIN_LOCKOUT_THRESHOLD",
        "10",
        false,
        "consecutive failed logins that lock an account (kept in the database); 0 turns locking off",
    ),
    var(
        "LOGIN_LOCKOUT_SECONDS",
        "900",
        false,
        "how long a locked account stays locked; an ADMIN's unlockUser ends it sooner",
    ),
    var(
        "PASSWORD_MAX_AGE_DAYS",
        "0",
        false,
        "past this age a user must change their password before anything else; 0 is no limit",
    ),
    var(
        "TWO_FACTOR_REQUIRED_ROLES",
        "",
        false,
        "comma-separated roles (e.g. ADMIN,MANAGER) whose users must turn on two-factor login before anything else",
    ),
    var(
        "TOTP_ENCRYPTION_KEY",
        "",
        true,
        "encrypts two-factor secrets at rest (at least 32 bytes); required in production once a user has 2FA; derived from JWT_SECRET in development when empty",
    ),
    var(
        "ADMIN_EMAIL",
        "admin@stockroom.local",
        false,
        "email of the admin seeded into an empty database",
    ),
    var(
        "ADMIN_PASSWORD",
        "",
        true,
        "password of the seeded admin; required in production, generated and printed once in development",
    ),
    var(
        "THROTTLE_DEFAULT_TTL",
        "60",
        false,
        "window in seconds of the default per-IP rate limit",
    ),
    var(
        "THROTTLE_DEFAULT_LIMIT",
        "600",
        false,
        "requests per window per client IP, all routes",
    ),
    var(
        "THROTTLE_LOGIN_TTL",
        "60",
        false,
        "window in seconds of the login rate limit",
    ),
    var(
        "THROTTLE_LOGIN_LIMIT",
        "10",
        false,
        "login attempts per window, per client IP and per email",
    ),
    var(
        "TRUST_PROXY",
        "false",
        false,
        "take the client IP from X-Forwarded-For (only behind trusted proxies that append to it; see TRUST_PROXY_HOPS)",
    ),
    var(
        "TRUST_PROXY_HOPS",
        "1",
        false,
        "with TRUST_PROXY: how many trusted proxies append to X-Forwarded-For (2 for a CDN in front of a load balancer); the client is that many entries from the end",
    ),
    var(
        "CORS_ORIGINS",
        "",
        false,
        "comma-separated allowed origins; * for any; empty sends no CORS headers",
    ),
    var(
        "LOG_FORMAT",
        "pretty",
        false,
        "pretty | json (one JSON object per line, for log collectors)",
    ),
    var(
        "RUST_LOG",
        "info",
        false,
        "log filter, e.g. info,stockroom=debug",
    ),
    var(
        "REQUEST_BODY_LIMIT_BYTES",
        "1048576",
        false,
        "largest accepted request body; larger gets 413",
    ),
    var(
        "REQUEST_TIMEOUT_SECONDS",
        "30",
        false,
        "requests running longer get 408",
    ),
    var(
        "HEALTH_DB_TIMEOUT_MS",
        "1000",
        false,
        "database ping timeout of the health check",
    ),
    var(
        "GRAPHQL_MAX_DEPTH",
        "12",
        false,
        "deepest accepted GraphQL selection",
    ),
    var(
        "GRAPHQL_MAX_COMPLEXITY",
        "10000",
        false,
        "highest accepted GraphQL query complexity",
    ),
    var(
        "GRAPHQL_INTROSPECTION",
        "",
        false,
        "who may introspect the schema (GraphiQL, codegen and IDEs need it): everyone | signed-in | nobody; empty means everyone in development, signed-in in production (true and false mean everyone and nobody)",
    ),
    var(
        "GRAPHQL_MAX_ROOT_FIELDS",
        "50",
        false,
        "most root fields (aliases included) in one GraphQL operation",
    ),
    var(
        "EVENT_BUS_CAPACITY",
        "1024",
        false,
        "events a subscriber may fall behind before it is told it lagged and its stream ends",
    ),
    var(
        "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        "20",
        false,
        "open subscriptions allowed on one WebSocket connection",
    ),
    var(
        "WS_MAX_CONNECTIONS_PER_IP",
        "200",
        false,
        "open WebSocket connections allowed per client IP",
    ),
    var(
        "WS_INIT_TIMEOUT_SECONDS",
        "5",
        false,
        "a WebSocket that sends no connection_init within this time is closed (4408)",
    ),
    var(
        "WS_KEEPALIVE_SECONDS",
        "15",
        false,
        "interval of the server's keep-alive pings on WebSocket connections",
    ),
    var(
        "TELEGRAM_BOT_TOKEN",
        "",
        true,
        "Telegram bot token; a token stored with updateNotificationSettings wins over it",
    ),
    var(
        "TELEGRAM_CHAT_IDS",
        "",
        false,
        "comma-separated chat ids (or @channel names) alerts go to, unless set with updateNotificationSettings",
    ),
    var(
        "TELEGRAM_API_URL",
        "https://api.telegram.org",
        false,
        "Telegram Bot API base URL (tests point it at a fake)",
    ),
    var(
        "ALERT_MAX_ATTEMPTS",
        "8",
        false,
        "sends of one alert before it is DEAD on temporary errors (5xx, timeouts, network)",
    ),
    var(
        "ALERT_RETRY_BASE_SECONDS",
        "5",
        false,
        "first retry delay; doubles per attempt, with jitter",
    ),
    var(
        "ALERT_RETRY_MAX_SECONDS",
        "600",
        false,
        "longest retry delay",
    ),
    var(
        "ALERT_LEASE_SECONDS",
        "60",
        false,
        "a SENDING alert whose notifier died is claimed again after this long",
    ),
    var(
        "ALERT_SEND_TIMEOUT_SECONDS",
        "10",
        false,
        "a Telegram request not answered within this time counts as a temporary failure",
    ),
    var(
        "ALERT_POLL_SECONDS",
        "5",
        false,
        "how often the notifier looks for due alerts when nothing wakes it",
    ),
    var(
        "ALERT_CHAT_MESSAGES_PER_SECOND",
        "1",
        false,
        "messages per second to one chat (Telegram's limit is about 1)",
    ),
    var(
        "ALERT_GLOBAL_MESSAGES_PER_SECOND",
        "30",
        false,
        "messages per second in all (Telegram's limit is about 30)",
    ),
    var(
        "ALERT_DIGEST_AFTER",
        "3",
        false,
        "more alerts than this due for one chat at once go out as digest messages",
    ),
    var(
        "ALERT_LOGIN_FAILURES",
        "5",
        false,
        "failed logins for one account, or from one address, that raise a LOGIN_FAILURES alert",
    ),
    var(
        "ALERT_LOGIN_WINDOW_SECONDS",
        "300",
        false,
        "window of ALERT_LOGIN_FAILURES; one alert per account or address per window",
    ),
    var(
        "ALERT_STALE_ATTEMPTS",
        "5",
        false,
        "an unsent alert with this many attempts makes health's notifier degraded",
    ),
    var(
        "ALERT_STALE_MINUTES",
        "30",
        false,
        "an alert unsent for this long makes health's notifier degraded",
    ),
    var(
        "ALERT_RETENTION_DAYS",
        "30",
        false,
        "SENT and DEAD alerts last changed longer ago than this are deleted (hourly, in batches of 500); the audit log keeps its ALERT_* rows",
    ),
    var(
        "REFRESH_TOKEN_RETENTION_DAYS",
        "7",
        false,
        "refresh tokens expired longer ago than this are deleted (hourly, in batches of 500); until then a reused one is still recognised as reused",
    ),
    var(
        "THROTTLE_ALERTS_TTL",
        "60",
        false,
        "window in seconds of the test-alert rate limit",
    ),
    var(
        "THROTTLE_ALERTS_LIMIT",
        "5",
        false,
        "test alerts (sendTestAlert, POST /api/v1/alerts/test) per window per client IP",
    ),
    var(
        "THROTTLE_PROBE_TTL",
        "60",
        false,
        "window in seconds of the probes' rate limit",
    ),
    var(
        "THROTTLE_PROBE_LIMIT",
        "600",
        false,
        "health probes and /metrics scrapes per window per client IP, a budget apart from THROTTLE_DEFAULT_* so that API traffic cannot starve a monitor and probes spend nothing of the API's",
    ),
    var(
        "UPLOAD_MAX_BYTES",
        "10485760",
        false,
        "largest uploaded file (CSV or .xlsx); larger gets 413 before it is buffered",
    ),
    var(
        "UPLOAD_MAX_ROWS",
        "100000",
        false,
        "most data rows in one upload; more fails the job before anything is applied",
    ),
    var(
        "UPLOAD_BATCH_SIZE",
        "500",
        false,
        "rows applied per transaction by the upload worker",
    ),
    var(
        "UPLOAD_RETENTION_DAYS",
        "30",
        false,
        "days a finished upload's file is kept (its job and row errors stay)",
    ),
    var(
        "UPLOAD_QUEUE_ALERT_SECONDS",
        "600",
        false,
        "health reports uploads degraded when UPLOAD_QUEUE_ALERT_JOBS or more jobs have been queued this long",
    ),
    var(
        "UPLOAD_QUEUE_ALERT_JOBS",
        "10",
        false,
        "how many jobs queued past UPLOAD_QUEUE_ALERT_SECONDS degrade health's uploads service",
    ),
    var(
        "UPLOAD_LEASE_SECONDS",
        "60",
        false,
        "a worker's hold on a job, renewed every batch; an expired one is claimed again",
    ),
    var(
        "UPLOAD_WORKER_ENABLED",
        "true",
        false,
        "run the upload worker in this instance (false: this instance only queues jobs)",
    ),
    var(
        "UPLOAD_POLL_SECONDS",
        "5",
        false,
        "the upload worker looks for jobs at least this often (it is also woken on submit)",
    ),
    var(
        "READ_CACHE_SECONDS",
        "60",
        false,
        "PostgreSQL: productBySku and the catalogue's total count are served from memory, invalidated by every change any instance commits; this bounds an entry's age; 0 turns the cache off",
    ),
    var(
        "METRICS_ENABLED",
        "",
        false,
        "serve Prometheus metrics at GET /metrics; empty means on in development, off in production",
    ),
    var(
        "METRICS_ADDR",
        "",
        false,
        "serve /metrics on this address (e.g. 127.0.0.1:9464) instead of the API listener",
    ),
];

/// Everything wrong with the configuration, one line per variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

const MIN_JWT_SECRET_BYTES: usize = 32;

impl Config {
    /// Reads `.env` (when present) and the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is worth a warning.
        if let Err(err) = dotenvy::dotenv()
            && !err.not_found()
        {
            eprintln!("warning: .env could not be read: {err}");
        }
        Self::from_vars(std::env::vars().collect())
    }

    /// Parses a set of variables; unset ones take their documented default.
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut p = Parser {
            vars,
            errors: Vec::new(),
        };
        let app_env = match p.raw("APP_ENV").to_ascii_lowercase().as_str() {
            "development" | "dev" => AppEnv::Development,
            "production" | "prod" => AppEnv::Production,
            other => {
                p.errors.push(format!(
                    "APP_ENV: expected development or production, got {other:?}"
                ));
                AppEnv::Development
            }
        };
        let production = app_env == AppEnv::Production;

        let jwt_raw = p.raw("JWT_SECRET");
        let (jwt_secret, jwt_secret_source) = if jwt_raw.is_empty() {
            if production {
                p.errors
                    .push("JWT_SECRET: required when APP_ENV=production".to_string());
            }
            (Secret::new(generate_secret()), SecretSource::Generated)
        } else {
            if jwt_raw.len() < MIN_JWT_SECRET_BYTES {
                let msg = format!(
                    "JWT_SECRET: must be at least {MIN_JWT_SECRET_BYTES} bytes (got {})",
                    jwt_raw.len()
                );
                if production {
                    p.errors.push(msg);
                } else {
                    eprintln!("warning: {msg}; accepted because APP_ENV=development");
                }
            }
            (Secret::new(jwt_raw), SecretSource::Configured)
        };
        let previous_raw = p.raw("JWT_SECRET_PREVIOUS");
        let jwt_secret_previous = if previous_raw.is_empty() {
            None
        } else {
            if previous_raw.len() < MIN_JWT_SECRET_BYTES {
                p.errors.push(format!(
                    "JWT_SECRET_PREVIOUS: must be at least {MIN_JWT_SECRET_BYTES} bytes (got {})",
                    previous_raw.len()
                ));
            }
            if previous_raw == jwt_secret.expose() {
                p.errors.push(
                    "JWT_SECRET_PREVIOUS: is the same as JWT_SECRET; set it to the secret being replaced"
                        .to_string(),
                );
            }
            Some(Secret::new(previous_raw))
        };

        let metrics_addr = match p.raw("METRICS_ADDR") {
            a if a.is_empty() => None,
            a => match a.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    p.errors.push(format!(
                        "METRICS_ADDR: expected an address like 127.0.0.1:9464, got {a:?}"
                    ));
                    None
                }
            },
        };
        let mut two_factor_required_roles = Vec::new();
        for name in p.raw("TWO_FACTOR_REQUIRED_ROLES").split(',').map(str::trim) {
            use crate::entity::user::Role;
            let role = match name.to_ascii_uppercase().as_str() {
                "" => continue,
                "ADMIN" => Role::Admin,
                "MANAGER" => Role::Manager,
                "STAFF" => Role::Staff,
                "VIEWER" => Role::Viewer,
                _ => {
                    p.errors.push(format!(
                        "TWO_FACTOR_REQUIRED_ROLES: unknown role {name:?}; expected ADMIN, MANAGER, STAFF or VIEWER"
                    ));
                    continue;
                }
            };
            if !two_factor_required_roles.contains(&role) {
                two_factor_required_roles.push(role);
            }
        }
        let totp_raw = p.raw("TOTP_ENCRYPTION_KEY");
        let totp_encryption_key = if totp_raw.is_empty() {
            None
        } else {
            if totp_raw.len() < MIN_JWT_SECRET_BYTES {
                p.errors.push(format!(
                    "TOTP_ENCRYPTION_KEY: must be at least {MIN_JWT_SECRET_BYTES} bytes (got {})",
                    totp_raw.len()
                ));
            }
            Some(Secret::new(totp_raw))
        };

        let admin_password = Some(p.raw("ADMIN_PASSWORD"))
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        if let Some(pw) = &admin_password
            && let Err(msg) = crate::validate::check_password_policy(pw.expose())
        {
            p.errors.push(format!("ADMIN_PASSWORD: {msg}"));
        }

        let log_format = match p.raw("LOG_FORMAT").to_ascii_lowercase().as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                p.errors.push(format!(
                    "LOG_FORMAT: expected pretty or json, got {other:?}"
                ));
                LogFormat::Pretty
            }
        };

        let database_url = p.raw("DATABASE_URL");
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            p.errors.push(
                "DATABASE_URL: must start with sqlite:, postgres:// or postgresql://".to_string(),
            );
        }

        let admin_email = p.raw("ADMIN_EMAIL").trim().to_ascii_lowercase();
        if crate::validate::check_email(&admin_email).is_err() {
            p.errors.push(format!(
                "ADMIN_EMAIL: not an email address: {admin_email:?}"
            ));
        }

        let config = Config {
            app_env,
            host: p.raw("HOST"),
            port: p.number("PORT", 0, u16::MAX as u64) as u16,
            database_url: Secret::new(database_url),
            db_max_connections: p.number("DB_MAX_CONNECTIONS", 1, 1000) as u32,
            db_acquire_timeout: p.millis("DB_ACQUIRE_TIMEOUT_MS"),
            db_busy_timeout: p.millis("DB_BUSY_TIMEOUT_MS"),
            db_slow_query: p.millis("DB_SLOW_QUERY_MS"),
            auto_migrate: p.boolean("AUTO_MIGRATE"),
            jwt_secret,
            jwt_secret_source,
            jwt_secret_previous,
            jwt_issuer: p.raw("JWT_ISSUER"),
            jwt_audience: p.raw("JWT_AUDIENCE"),
            jwt_access_ttl: p.seconds("JWT_ACCESS_TTL_SECONDS"),
            jwt_refresh_ttl: p.seconds("JWT_REFRESH_TTL_SECONDS"),
            auth_cache_ttl: Duration::from_secs(p.number("AUTH_CACHE_SECONDS", 0, 3600)),
            login_lockout_threshold: p.number("LOGIN_LOCKOUT_THRESHOLD", 0, 1_000_000) as u32,
            login_lockout: p.seconds("LOGIN_LOCKOUT_SECONDS"),
            password_max_age_days: p.number("PASSWORD_MAX_AGE_DAYS", 0, 36_500) as u32,
            two_factor_required_roles,
            totp_encryption_key,
            admin_email,
            admin_password,
            throttle_default_ttl: p.seconds("THROTTLE_DEFAULT_TTL"),
            throttle_default_limit: p.number("THROTTLE_DEFAULT_LIMIT", 1, u32::MAX as u64) as u32,
            throttle_login_ttl: p.seconds("THROTTLE_LOGIN_TTL"),
            throttle_login_limit: p.number("THROTTLE_LOGIN_LIMIT", 1, u32::MAX as u64) as u32,
            trust_proxy: p.boolean("TRUST_PROXY"),
            trust_proxy_hops: p.number("TRUST_PROXY_HOPS", 1, 16) as usize,
            cors_origins: p
                .raw("CORS_ORIGINS")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            log_format,
            rust_log: p.raw("RUST_LOG"),
            request_body_limit: p.number("REQUEST_BODY_LIMIT_BYTES", 1024, 1 << 30) as usize,
            request_timeout: p.seconds("REQUEST_TIMEOUT_SECONDS"),
            health_db_timeout: p.millis("HEALTH_DB_TIMEOUT_MS"),
            graphql_max_depth: p.number("GRAPHQL_MAX_DEPTH", 2, 100) as usize,
            graphql_max_complexity: p.number("GRAPHQL_MAX_COMPLEXITY", 10, 1_000_000) as usize,
            graphql_introspection: match p
                .raw("GRAPHQL_INTROSPECTION")
                .to_ascii_lowercase()
                .as_str()
            {
                "" if production => Introspection::SignedIn,
                "" | "everyone" | "true" => Introspection::Everyone,
                "signed-in" => Introspection::SignedIn,
                "nobody" | "false" => Introspection::Nobody,
                other => {
                    p.errors.push(format!(
                        "GRAPHQL_INTROSPECTION: expected everyone, signed-in or nobody, got {other:?}"
                    ));
                    Introspection::Nobody
                }
            },
            graphql_max_root_fields: p.number("GRAPHQL_MAX_ROOT_FIELDS", 1, 10_000) as usize,
            event_bus_capacity: p.number("EVENT_BUS_CAPACITY", 16, 1 << 20) as usize,
            ws_max_subscriptions_per_connection: p.number(
                "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
                1,
                10_000,
            ) as usize,
            ws_max_connections_per_ip: p.number("WS_MAX_CONNECTIONS_PER_IP", 1, 1_000_000) as usize,
            ws_init_timeout: p.seconds("WS_INIT_TIMEOUT_SECONDS"),
            ws_keepalive: p.seconds("WS_KEEPALIVE_SECONDS"),
            telegram_bot_token: Some(p.raw("TELEGRAM_BOT_TOKEN"))
                .filter(|s| !s.is_empty())
                .map(Secret::new),
            telegram_chat_ids: p
                .raw("TELEGRAM_CHAT_IDS")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            telegram_api_url: p.raw("TELEGRAM_API_URL").trim_end_matches('/').to_string(),
            alert_max_attempts: p.number("ALERT_MAX_ATTEMPTS", 1, 1000) as u32,
            alert_retry_base: p.seconds("ALERT_RETRY_BASE_SECONDS"),
            alert_retry_max: p.seconds("ALERT_RETRY_MAX_SECONDS"),
            alert_lease: p.seconds("ALERT_LEASE_SECONDS"),
            alert_send_timeout: p.seconds("ALERT_SEND_TIMEOUT_SECONDS"),
            alert_poll: p.seconds("ALERT_POLL_SECONDS"),
            alert_chat_per_second: p.number("ALERT_CHAT_MESSAGES_PER_SECOND", 1, 1000) as u32,
            alert_global_per_second: p.number("ALERT_GLOBAL_MESSAGES_PER_SECOND", 1, 10_000) as u32,
            alert_digest_after: p.number("ALERT_DIGEST_AFTER", 1, 1000) as usize,
            alert_login_failures: p.number("ALERT_LOGIN_FAILURES", 1, 1_000_000) as u32,
            alert_login_window: p.seconds("ALERT_LOGIN_WINDOW_SECONDS"),
            alert_stale_attempts: p.number("ALERT_STALE_ATTEMPTS", 1, 1000) as u32,
            alert_stale_age: Duration::from_secs(60 * p.number("ALERT_STALE_MINUTES", 1, 525_600)),
            alert_retention: Duration::from_secs(
                86_400 * p.number("ALERT_RETENTION_DAYS", 1, 36_500),
            ),
            refresh_token_retention: Duration::from_secs(
                86_400 * p.number("REFRESH_TOKEN_RETENTION_DAYS", 1, 36_500),
            ),
            throttle_alerts_ttl: p.seconds("THROTTLE_ALERTS_TTL"),
            throttle_alerts_limit: p.number("THROTTLE_ALERTS_LIMIT", 1, u32::MAX as u64) as u32,
            throttle_probe_ttl: p.seconds("THROTTLE_PROBE_TTL"),
            throttle_probe_limit: p.number("THROTTLE_PROBE_LIMIT", 1, u32::MAX as u64) as u32,
            upload_max_bytes: p.number("UPLOAD_MAX_BYTES", 1024, 1 << 30) as usize,
            upload_max_rows: p.number("UPLOAD_MAX_ROWS", 1, 10_000_000) as u32,
            upload_batch_size: p.number("UPLOAD_BATCH_SIZE", 1, 10_000) as usize,
            upload_retention: Duration::from_secs(
                24 * 3600 * p.number("UPLOAD_RETENTION_DAYS", 1, 36_500),
            ),
            upload_queue_alert_age: p.seconds("UPLOAD_QUEUE_ALERT_SECONDS"),
            upload_queue_alert_jobs: p.number("UPLOAD_QUEUE_ALERT_JOBS", 1, 1_000_000),
            upload_lease: p.seconds("UPLOAD_LEASE_SECONDS"),
            upload_poll: p.seconds("UPLOAD_POLL_SECONDS"),
            upload_worker_enabled: p.boolean("UPLOAD_WORKER_ENABLED"),
            read_cache_ttl: Duration::from_secs(p.number("READ_CACHE_SECONDS", 0, 86_400)),
            metrics_enabled: if p.raw("METRICS_ENABLED").is_empty() {
                !production
            } else {
                p.boolean("METRICS_ENABLED")
            },
            metrics_addr,
        };
        if config.alert_lease <= config.alert_send_timeout * 2 {
            p.errors.push(format!(
                "ALERT_LEASE_SECONDS ({}) must be more than twice ALERT_SEND_TIMEOUT_SECONDS ({}), or a slow send could be claimed and sent again by another instance",
                config.alert_lease.as_secs(),
                config.alert_send_timeout.as_secs()
            ));
        }
        if p.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(p.errors))
        }
    }

    pub fn is_production(&self) -> bool {
        self.app_env == AppEnv::Production
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.expose().starts_with("sqlite:")
    }

    /// Each variable with its effective value, secrets masked, for `check-config`.
    pub fn effective_values(&self) -> Vec<(&'static str, String)> {
        let masked = |s: &Secret| {
            if s.is_empty() {
                "(unset)".to_string()
            } else {
                "***".to_string()
            }
        };
        let secs = |d: Duration| d.as_secs().to_string();
        let millis = |d: Duration| d.as_millis().to_string();
        VARIABLES
            .iter()
            .map(|v| {
                let value = match v.name {
                    "APP_ENV" => format!("{:?}", self.app_env).to_lowercase(),
                    "HOST" => self.host.clone(),
                    "PORT" => self.port.to_string(),
                    "DATABASE_URL" => mask_url(self.database_url.expose()),
                    "DB_MAX_CONNECTIONS" => self.db_max_connections.to_string(),
                    "DB_ACQUIRE_TIMEOUT_MS" => millis(self.db_acquire_timeout),
                    "DB_BUSY_TIMEOUT_MS" => millis(self.db_busy_timeout),
                    "DB_SLOW_QUERY_MS" => millis(self.db_slow_query),
                    "AUTO_MIGRATE" => self.auto_migrate.to_string(),
                    "JWT_SECRET" => match self.jwt_secret_source {
                        SecretSource::Configured => masked(&self.jwt_secret),
                        SecretSource::Generated => "(generated per process)".to_string(),
                    },
                    "JWT_SECRET_PREVIOUS" => self
                        .jwt_secret_previous
                        .as_ref()
                        .map(masked)
                        .unwrap_or_default(),
                    "JWT_ISSUER" => self.jwt_issuer.clone(),
                    "JWT_AUDIENCE" => self.jwt_audience.clone(),
                    "JWT_ACCESS_TTL_SECONDS" => secs(self.jwt_access_ttl),
                    "JWT_REFRESH_TTL_SECONDS" => secs(self.jwt_refresh_ttl),
                    "AUTH_CACHE_SECONDS" => secs(self.auth_cache_ttl),
                    "LOGIN_LOCKOUT_THRESHOLD" => self.login_lockout_threshold.to_string(),
                    "LOGIN_LOCKOUT_SECONDS" => secs(self.login_lockout),
                    "PASSWORD_MAX_AGE_DAYS" => self.password_max_age_days.to_string(),
                    "TWO_FACTOR_REQUIRED_ROLES" => self
                        .two_factor_required_roles
                        .iter()
                        .map(|r| format!("{r:?}").to_uppercase())
                        .collect::<Vec<_>>()
                        .join(","),
                    "TOTP_ENCRYPTION_KEY" => match &self.totp_encryption_key {
                        Some(s) => masked(s),
                        None => "(unset: derived from JWT_SECRET in development)".to_string(),
                    },
                    "ADMIN_EMAIL" => self.admin_email.clone(),
                    "ADMIN_PASSWORD" => match &self.admin_password {
                        Some(s) => masked(s),
                        None => "(unset: generated when the admin is seeded)".to_string(),
                    },
                    "THROTTLE_DEFAULT_TTL" => secs(self.throttle_default_ttl),
                    "THROTTLE_DEFAULT_LIMIT" => self.throttle_default_limit.to_string(),
                    "THROTTLE_LOGIN_TTL" => secs(self.throttle_login_ttl),
                    "THROTTLE_LOGIN_LIMIT" => self.throttle_login_limit.to_string(),
                    "TRUST_PROXY" => self.trust_proxy.to_string(),
                    "TRUST_PROXY_HOPS" => self.trust_proxy_hops.to_string(),
                    "CORS_ORIGINS" => self.cors_origins.join(","),
                    "LOG_FORMAT" => format!("{:?}", self.log_format).to_lowercase(),
                    "RUST_LOG" => self.rust_log.clone(),
                    "REQUEST_BODY_LIMIT_BYTES" => self.request_body_limit.to_string(),
                    "REQUEST_TIMEOUT_SECONDS" => secs(self.request_timeout),
                    "HEALTH_DB_TIMEOUT_MS" => millis(self.health_db_timeout),
                    "GRAPHQL_MAX_DEPTH" => self.graphql_max_depth.to_string(),
                    "GRAPHQL_MAX_COMPLEXITY" => self.graphql_max_complexity.to_string(),
                    "GRAPHQL_INTROSPECTION" => self.graphql_introspection.label().to_string(),
                    "GRAPHQL_MAX_ROOT_FIELDS" => self.graphql_max_root_fields.to_string(),
                    "EVENT_BUS_CAPACITY" => self.event_bus_capacity.to_string(),
                    "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION" => {
                        self.ws_max_subscriptions_per_connection.to_string()
                    }
                    "WS_MAX_CONNECTIONS_PER_IP" => self.ws_max_connections_per_ip.to_string(),
                    "WS_INIT_TIMEOUT_SECONDS" => secs(self.ws_init_timeout),
                    "WS_KEEPALIVE_SECONDS" => secs(self.ws_keepalive),
                    "TELEGRAM_BOT_TOKEN" => match &self.telegram_bot_token {
                        Some(s) => masked(s),
                        None => "(unset)".to_string(),
                    },
                    "TELEGRAM_CHAT_IDS" => self.telegram_chat_ids.join(","),
                    "TELEGRAM_API_URL" => self.telegram_api_url.clone(),
                    "ALERT_MAX_ATTEMPTS" => self.alert_max_attempts.to_string(),
                    "ALERT_RETRY_BASE_SECONDS" => secs(self.alert_retry_base),
                    "ALERT_RETRY_MAX_SECONDS" => secs(self.alert_retry_max),
                    "ALERT_LEASE_SECONDS" => secs(self.alert_lease),
                    "ALERT_SEND_TIMEOUT_SECONDS" => secs(self.alert_send_timeout),
                    "ALERT_POLL_SECONDS" => secs(self.alert_poll),
                    "ALERT_CHAT_MESSAGES_PER_SECOND" => self.alert_chat_per_second.to_string(),
                    "ALERT_GLOBAL_MESSAGES_PER_SECOND" => self.alert_global_per_second.to_string(),
                    "ALERT_DIGEST_AFTER" => self.alert_digest_after.to_string(),
                    "ALERT_LOGIN_FAILURES" => self.alert_login_failures.to_string(),
                    "ALERT_LOGIN_WINDOW_SECONDS" => secs(self.alert_login_window),
                    "ALERT_STALE_ATTEMPTS" => self.alert_stale_attempts.to_string(),
                    "ALERT_STALE_MINUTES" => (self.alert_stale_age.as_secs() / 60).to_string(),
                    "ALERT_RETENTION_DAYS" => (self.alert_retention.as_secs() / 86_400).to_string(),
                    "REFRESH_TOKEN_RETENTION_DAYS" => {
                        (self.refresh_token_retention.as_secs() / 86_400).to_string()
                    }
                    "THROTTLE_ALERTS_TTL" => secs(self.throttle_alerts_ttl),
                    "THROTTLE_ALERTS_LIMIT" => self.throttle_alerts_limit.to_string(),
                    "THROTTLE_PROBE_TTL" => secs(self.throttle_probe_ttl),
                    "THROTTLE_PROBE_LIMIT" => self.throttle_probe_limit.to_string(),
                    "UPLOAD_MAX_BYTES" => self.upload_max_bytes.to_string(),
                    "UPLOAD_MAX_ROWS" => self.upload_max_rows.to_string(),
                    "UPLOAD_BATCH_SIZE" => self.upload_batch_size.to_string(),
                    "UPLOAD_RETENTION_DAYS" => {
                        (self.upload_retention.as_secs() / 86_400).to_string()
                    }
                    "UPLOAD_QUEUE_ALERT_SECONDS" => secs(self.upload_queue_alert_age),
                    "UPLOAD_QUEUE_ALERT_JOBS" => self.upload_queue_alert_jobs.to_string(),
                    "UPLOAD_LEASE_SECONDS" => secs(self.upload_lease),
                    "UPLOAD_POLL_SECONDS" => secs(self.upload_poll),
                    "UPLOAD_WORKER_ENABLED" => self.upload_worker_enabled.to_string(),
                    "READ_CACHE_SECONDS" => secs(self.read_cache_ttl),
                    "METRICS_ENABLED" => self.metrics_enabled.to_string(),
                    "METRICS_ADDR" => self.metrics_addr.map(|a| a.to_string()).unwrap_or_default(),
                    _ => String::new(),
                };
                (v.name, value)
            })
            .collect()
    }
}

/// Hides the password of a database URL: `postgres://user:***@host/db`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_string(),
    }
}

/// 256 random bits from the operating system's CSPRNG, hex encoded.
pub fn generate_secret() -> String {
    // uuid draws on the same source: the fallback only shapes the failure.
    random_hex(32).unwrap_or_else(|_| {
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
    })
}

/// `bytes` random bytes from the operating system's CSPRNG, hex encoded.
pub fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)?;
    Ok(crate::digest::hex(&buf))
}

struct Parser {
    vars: HashMap<String, String>,
    errors: Vec<String>,
}

impl Parser {
    fn default_of(name: &str) -> &'static str {
        VARIABLES
            .iter()
            .find(|v| v.name == name)
            .map_or("", |v| v.default)
    }

    fn raw(&self, name: &str) -> String {
        match self.vars.get(name) {
            Some(v) if !v.trim().is_empty() => v.trim().to_string(),
            _ => Self::default_of(name).to_string(),
        }
    }

    fn number(&mut self, name: &str, min: u64, max: u64) -> u64 {
        let raw = self.raw(name);
        match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.errors.push(format!(
                    "{name}: expected a whole number from {min} to {max}, got {raw:?}"
                ));
                Self::default_of(name).parse().unwrap_or(min)
            }
        }
    }

    fn seconds(&mut self, name: &str) -> Duration {
        Duration::from_secs(self.number(name, 1, 10 * 365 * 24 * 3600))
    }

    fn millis(&mut self, name: &str) -> Duration {
        Duration::from_millis(self.number(name, 1, 3_600_000))
    }

    fn boolean(&mut self, name: &str) -> bool {
        let raw = self.raw(name);
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                self.errors
                    .push(format!("{name}: expected true or false, got {raw:?}"));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_256_random_bits_and_secrets_never_print()
    -> Result<(), getrandom::Error> {
        let (a, b) = (random_hex(32)?, random_hex(32)?);
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let secret = Secret::new(a.clone());
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        assert_eq!(secret.expose(), a);
        Ok(())
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_in_development() {
        let config = Config::from_vars(HashMap::new()).expect("defaults parse");
        assert_eq!(config.port, 4000);
        assert_eq!(config.jwt_secret_source, SecretSource::Generated);
        assert!(config.is_sqlite());
    }

    #[test]
    fn production_requires_a_long_jwt_secret() {
        let err = Config::from_vars(vars(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET", "short"),
            ("ADMIN_PASSWORD", "a-long-enough-password"),
        ]))
        .expect_err("short secret refused");
        assert!(err.to_string().contains("JWT_SECRET"));
    }

    #[test]
    fn bad_numbers_are_reported_by_name() {
        let err = Config::from_vars(vars(&[("PORT", "http")])).expect_err("refused");
        assert!(err.to_string().contains("PORT"));
    }

    #[test]
    fn an_alert_lease_shorter_than_two_send_timeouts_is_refused() {
        let err = Config::from_vars(vars(&[
            ("ALERT_LEASE_SECONDS", "10"),
            ("ALERT_SEND_TIMEOUT_SECONDS", "5"),
        ]))
        .expect_err("refused");
        assert!(err.to_string().contains("ALERT_LEASE_SECONDS"));
    }

    #[test]
    fn database_passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://app:hunter2@db:5432/stock"),
            "postgres://app:***@db:5432/stock"
        );
        assert_eq!(mask_url("sqlite://x.db?mode=rwc"), "sqlite://x.db?mode=rwc");
    }
}
