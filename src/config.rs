//! Typed configuration, read once from the environment (and `.env`).
//!
//! Every variable is declared once, in [`Settings`]: that declaration
//! parses it, gives its default and bounds, and writes `check-config`'s
//! listing, `.env.example` and the README's table.

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

/// Every variable Stockroom reads, declared once: its name (`env`), default,
/// bounds and parser (`value_parser`), whether it is secret
/// (`hide_env_values`), its section (`help_heading`) and its meaning (the
/// first paragraph of the doc comment; the whole comment goes to
/// `.env.example`). Parsing, `check-config`, `.env.example` and the README's
/// table all come from here ([`variables`], [`env_template`],
/// [`markdown_table`]).
///
/// The variables are read as clap arguments built from the environment
/// ([`Config::from_vars`]); they are not options of the `stockroom` command.
/// An unset or empty variable takes its default; one without a default is
/// `None`.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "stockroom-settings",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct Settings {
    /// development | production; production refuses weak secrets
    #[arg(long, env = "APP_ENV", default_value = "development", value_parser = app_env, help_heading = "Application")]
    pub app_env: AppEnv,
    /// address to listen on
    #[arg(
        long,
        env = "HOST",
        default_value = "0.0.0.0",
        help_heading = "Application"
    )]
    pub host: String,
    /// port to listen on (0 picks a free one)
    #[arg(long, env = "PORT", default_value = "4000", value_parser = number::<u16, 0, 65_535>, help_heading = "Application")]
    pub port: u16,

    /// ISO 4217 code of the currency products' unit costs are kept in, in its smallest unit (won, cents)
    #[arg(long, env = "CURRENCY", default_value = "KRW", value_parser = currency, help_heading = "Application")]
    pub currency: String,

    /// sqlite://FILE?mode=rwc or postgres://USER:PASS@HOST:PORT/DB
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://stockroom.db?mode=rwc", value_parser = database_url, hide_env_values = true, help_heading = "Database")]
    pub database_url: Secret,
    /// connection pool size (SQLite: write transactions use one more connection of their own)
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value = "10", value_parser = number::<u32, 1, 1000>, help_heading = "Database")]
    pub db_max_connections: u32,
    /// how long a request waits for a pooled connection
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT_MS", default_value = "5000", value_parser = millis, help_heading = "Database")]
    pub db_acquire_timeout: Duration,
    /// SQLite only: how long a writer waits for the database lock
    #[arg(long, env = "DB_BUSY_TIMEOUT_MS", default_value = "5000", value_parser = millis, help_heading = "Database")]
    pub db_busy_timeout: Duration,
    /// statements slower than this are logged at WARN with their SQL (never their values)
    #[arg(long, env = "DB_SLOW_QUERY_MS", default_value = "500", value_parser = millis, help_heading = "Database")]
    pub db_slow_query: Duration,
    /// serve applies pending migrations and seeds the admin at start; false skips both
    ///
    /// serve applies pending migrations and seeds the admin at start; false:
    /// serve does neither (run `stockroom migrate up` and `stockroom seed`
    /// yourself)
    #[arg(long, env = "AUTO_MIGRATE", default_value = "true", value_parser = boolean, action = clap::ArgAction::Set, help_heading = "Database")]
    pub auto_migrate: bool,

    /// HS256 signing key, at least 32 bytes; generated per process in development when empty
    ///
    /// HS256 signing key. Development: leave empty and each process generates
    /// a random secret and logs a warning; tokens then stop working when the
    /// server restarts; a value shorter than 32 bytes is accepted with a
    /// warning. Production (APP_ENV=production): required, at least 32 bytes,
    /// or the server refuses to start. Generate one with: openssl rand -hex 32
    // The key in use is `Config::jwt_secret`.
    #[arg(long, env = "JWT_SECRET", value_parser = secret, hide_env_values = true, help_heading = "Access tokens")]
    pub configured_jwt_secret: Option<Secret>,
    /// the JWT_SECRET before a rotation: verifies tokens it signed, signs nothing; remove once they expired
    ///
    /// the JWT_SECRET before a rotation (secret): tokens it signed are still
    /// accepted, nothing new is signed with it; remove it once they have
    /// expired (JWT_ACCESS_TTL_SECONDS after the rotation). See
    /// docs/OPERATIONS.md 3.3.
    #[arg(long, env = "JWT_SECRET_PREVIOUS", value_parser = long_secret, hide_env_values = true, help_heading = "Access tokens")]
    pub jwt_secret_previous: Option<Secret>,
    /// iss claim of access tokens
    #[arg(
        long,
        env = "JWT_ISSUER",
        default_value = "stockroom",
        help_heading = "Access tokens"
    )]
    pub jwt_issuer: String,
    /// aud claim of access tokens
    #[arg(
        long,
        env = "JWT_AUDIENCE",
        default_value = "stockroom-api",
        help_heading = "Access tokens"
    )]
    pub jwt_audience: String,
    /// access token lifetime
    #[arg(long, env = "JWT_ACCESS_TTL_SECONDS", default_value = "900", value_parser = seconds, help_heading = "Access tokens")]
    pub jwt_access_ttl: Duration,
    /// refresh token lifetime
    #[arg(long, env = "JWT_REFRESH_TTL_SECONDS", default_value = "1209600", value_parser = seconds, help_heading = "Access tokens")]
    pub jwt_refresh_ttl: Duration,
    /// how long a verified user (role, active) is reused across requests; 0 reads it every request
    ///
    /// how long a verified user (role, active) is reused across requests; 0
    /// reads it every request. Changes made through this instance apply at
    /// once; other instances see them within this time.
    #[arg(long, env = "AUTH_CACHE_SECONDS", default_value = "5", value_parser = seconds_upto::<3600>, help_heading = "Access tokens")]
    pub auth_cache_ttl: Duration,

    /// consecutive failed logins that lock an account (kept in the database); 0 turns locking off
    ///
    /// consecutive failed logins that lock an account (kept in the database);
    /// 0 turns locking off. A locked account answers like a wrong password
    /// until the lock ends or an ADMIN runs unlockUser.
    #[arg(long, env = "LOGIN_LOCKOUT_THRESHOLD", default_value = "10", value_parser = number::<u32, 0, 1_000_000>, help_heading = "Account security")]
    pub login_lockout_threshold: u32,
    /// how long a locked account stays locked; an ADMIN's unlockUser ends it sooner
    #[arg(long, env = "LOGIN_LOCKOUT_SECONDS", default_value = "900", value_parser = seconds, help_heading = "Account security")]
    pub login_lockout: Duration,
    /// past this age a user must change their password before anything else; 0 is no limit
    #[arg(long, env = "PASSWORD_MAX_AGE_DAYS", default_value = "0", value_parser = number::<u32, 0, 36_500>, help_heading = "Account security")]
    pub password_max_age_days: u32,
    /// comma-separated roles (e.g. ADMIN,MANAGER) whose users must turn on two-factor login before anything else
    #[arg(long, env = "TWO_FACTOR_REQUIRED_ROLES", default_value = "", value_parser = roles, help_heading = "Account security")]
    pub two_factor_required_roles: List<crate::entity::user::Role>,

    /// seals the secrets stored in the database (two-factor secrets, the Telegram bot token), at least 32 bytes; required in production once one is stored
    ///
    /// seals the secrets stored in the database (two-factor secrets and the
    /// Telegram bot token, AES-256-GCM); at least 32 bytes. Required in
    /// production once one is stored; derived from JWT_SECRET in development
    /// when empty. Keep it with JWT_SECRET in your secret store: a restored
    /// database needs it. To rotate it, move it to
    /// DATA_ENCRYPTION_KEY_PREVIOUS and set a new one here on every instance,
    /// run `stockroom reseal`, then remove the previous key.
    #[arg(long, env = "DATA_ENCRYPTION_KEY", value_parser = long_secret, hide_env_values = true, help_heading = "Secrets at rest")]
    pub data_encryption_key: Option<Secret>,
    /// the DATA_ENCRYPTION_KEY before a rotation: opens what it sealed, seals nothing; remove it after `stockroom reseal`
    #[arg(long, env = "DATA_ENCRYPTION_KEY_PREVIOUS", value_parser = long_secret, hide_env_values = true, help_heading = "Secrets at rest")]
    pub data_encryption_key_previous: Option<Secret>,
    /// deprecated name of DATA_ENCRYPTION_KEY, read when that is empty
    ///
    /// deprecated name of DATA_ENCRYPTION_KEY (it sealed two-factor secrets
    /// only), read when DATA_ENCRYPTION_KEY is empty; set the same value as
    /// DATA_ENCRYPTION_KEY instead. When both are set they must be equal.
    #[arg(long, env = "TOTP_ENCRYPTION_KEY", value_parser = long_secret, hide_env_values = true, help_heading = "Secrets at rest")]
    pub totp_encryption_key: Option<Secret>,

    /// email of the admin seeded into an empty database
    ///
    /// email of the admin seeded into an empty database (first `serve` or
    /// `seed`); changing ADMIN_EMAIL or ADMIN_PASSWORD later changes no
    /// account
    #[arg(long, env = "ADMIN_EMAIL", default_value = "admin@stockroom.local", value_parser = email, help_heading = "Seeded admin")]
    pub admin_email: String,
    /// password of the seeded admin; required in production, generated and printed once in development
    ///
    /// password of the seeded admin (8 to 128 characters). Development: leave
    /// empty and a password is generated and printed once to stderr when the
    /// admin is created; it is not stored anywhere else. Production: required
    /// to seed the admin; without it `serve` and `seed` fail on an empty
    /// database. Use the changePassword mutation to change it later.
    #[arg(long, env = "ADMIN_PASSWORD", value_parser = password, hide_env_values = true, help_heading = "Seeded admin")]
    pub admin_password: Option<Secret>,

    /// window in seconds of the default per-IP rate limit
    ///
    /// window in seconds of the default per-IP rate limit. Each limit is a
    /// burst of LIMIT requests, refilled evenly over TTL seconds.
    #[arg(long, env = "THROTTLE_DEFAULT_TTL", default_value = "60", value_parser = seconds, help_heading = "Rate limits and client address")]
    pub throttle_default_ttl: Duration,
    /// requests per window per client IP, all routes
    #[arg(long, env = "THROTTLE_DEFAULT_LIMIT", default_value = "600", value_parser = number::<u32, 1, 4_294_967_295>, help_heading = "Rate limits and client address")]
    pub throttle_default_limit: u32,
    /// window in seconds of the login rate limit
    #[arg(long, env = "THROTTLE_LOGIN_TTL", default_value = "60", value_parser = seconds, help_heading = "Rate limits and client address")]
    pub throttle_login_ttl: Duration,
    /// login attempts per window, per client IP and per email
    #[arg(long, env = "THROTTLE_LOGIN_LIMIT", default_value = "10", value_parser = number::<u32, 1, 4_294_967_295>, help_heading = "Rate limits and client address")]
    pub throttle_login_limit: u32,
    /// take the client IP from X-Forwarded-For (only behind trusted proxies that append to it; see TRUST_PROXY_HOPS)
    #[arg(long, env = "TRUST_PROXY", default_value = "false", value_parser = boolean, action = clap::ArgAction::Set, help_heading = "Rate limits and client address")]
    pub trust_proxy: bool,
    /// with TRUST_PROXY: how many trusted proxies append to X-Forwarded-For (2 for a CDN in front of a load balancer); the client is that many entries from the end
    #[arg(long, env = "TRUST_PROXY_HOPS", default_value = "1", value_parser = number::<usize, 1, 16>, help_heading = "Rate limits and client address")]
    pub trust_proxy_hops: usize,
    /// test alerts (sendTestAlert, POST /api/v1/alerts/test) per window per client IP: the window in seconds
    #[arg(long, env = "THROTTLE_ALERTS_TTL", default_value = "60", value_parser = seconds, help_heading = "Rate limits and client address")]
    pub throttle_alerts_ttl: Duration,
    /// test alerts (sendTestAlert, POST /api/v1/alerts/test) per window per client IP
    #[arg(long, env = "THROTTLE_ALERTS_LIMIT", default_value = "5", value_parser = number::<u32, 1, 4_294_967_295>, help_heading = "Rate limits and client address")]
    pub throttle_alerts_limit: u32,
    /// window in seconds of the probes' rate limit
    #[arg(long, env = "THROTTLE_PROBE_TTL", default_value = "60", value_parser = seconds, help_heading = "Rate limits and client address")]
    pub throttle_probe_ttl: Duration,
    /// health probes and /metrics scrapes per window per client IP, a budget apart from THROTTLE_DEFAULT_* so that API traffic cannot starve a monitor and probes spend nothing of the API's
    #[arg(long, env = "THROTTLE_PROBE_LIMIT", default_value = "600", value_parser = number::<u32, 1, 4_294_967_295>, help_heading = "Rate limits and client address")]
    pub throttle_probe_limit: u32,

    /// comma-separated allowed origins; * for any; empty sends no CORS headers
    #[arg(long, env = "CORS_ORIGINS", default_value = "", value_parser = words, help_heading = "CORS")]
    pub cors_origins: List<String>,

    /// pretty | json (one JSON object per line, for log collectors)
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty", value_parser = log_format, help_heading = "Logging")]
    pub log_format: LogFormat,
    /// log filter, e.g. info,stockroom=debug
    #[arg(
        long,
        env = "RUST_LOG",
        default_value = "info",
        help_heading = "Logging"
    )]
    pub rust_log: String,

    /// largest accepted request body; larger gets 413
    #[arg(long, env = "REQUEST_BODY_LIMIT_BYTES", default_value = "1048576", value_parser = number::<usize, 1024, 1_073_741_824>, help_heading = "Request limits and health check")]
    pub request_body_limit: usize,
    /// requests running longer get 408
    #[arg(long, env = "REQUEST_TIMEOUT_SECONDS", default_value = "30", value_parser = seconds, help_heading = "Request limits and health check")]
    pub request_timeout: Duration,
    /// database ping timeout of the health check
    #[arg(long, env = "HEALTH_DB_TIMEOUT_MS", default_value = "1000", value_parser = millis, help_heading = "Request limits and health check")]
    pub health_db_timeout: Duration,

    /// deepest accepted GraphQL selection
    #[arg(long, env = "GRAPHQL_MAX_DEPTH", default_value = "12", value_parser = number::<usize, 2, 100>, help_heading = "GraphQL")]
    pub graphql_max_depth: usize,
    /// highest accepted GraphQL query complexity
    ///
    /// highest accepted GraphQL query complexity; a connection costs `first`
    /// times its selection, so nested pages multiply (products(first: 100) {
    /// nodes { movements(first: 100) ... } } > 10000)
    #[arg(long, env = "GRAPHQL_MAX_COMPLEXITY", default_value = "10000", value_parser = number::<usize, 10, 1_000_000>, help_heading = "GraphQL")]
    pub graphql_max_complexity: usize,
    /// who may introspect the schema (GraphiQL, codegen and IDEs need it): everyone | signed-in | nobody; empty means everyone in development, signed-in in production (true and false mean everyone and nobody)
    ///
    /// who may introspect the schema (GraphiQL, codegen, IDE plugins need it):
    /// everyone | signed-in | nobody; empty means everyone in development and
    /// signed-in in production (true and false still mean everyone and
    /// nobody). Introspection is bounded apart from GRAPHQL_MAX_DEPTH: its
    /// lists (fields, inputFields, interfaces, possibleTypes) may nest 3 deep,
    /// as in graphql-js.
    // The rule in effect is `Config::graphql_introspection`.
    #[arg(long, env = "GRAPHQL_INTROSPECTION", value_parser = introspection, help_heading = "GraphQL")]
    pub configured_introspection: Option<Introspection>,
    /// most root fields (aliases included) in one GraphQL operation
    #[arg(long, env = "GRAPHQL_MAX_ROOT_FIELDS", default_value = "50", value_parser = number::<usize, 1, 10_000>, help_heading = "GraphQL")]
    pub graphql_max_root_fields: usize,

    /// events a subscriber may fall behind before it is told it lagged and its stream ends
    ///
    /// events a subscriber may fall behind before it is told it lagged
    /// (SUBSCRIPTION_LAGGED) and its stream ends, so that the client
    /// re-fetches
    #[arg(long, env = "EVENT_BUS_CAPACITY", default_value = "1024", value_parser = number::<usize, 16, 1_048_576>, help_heading = "Subscriptions (WebSocket /graphql/ws)")]
    pub event_bus_capacity: usize,
    /// most movements a resumed stream replays from the ledger before it ends with EVENTS_MISSED
    ///
    /// most movements a stream resumed with `after:` (or catching up after
    /// the events listener reconnected) replays from the ledger; past it the
    /// stream ends with EVENTS_MISSED and the client re-fetches
    #[arg(long, env = "SUBSCRIPTION_REPLAY_LIMIT", default_value = "1000", value_parser = number::<usize, 1, 100_000>, help_heading = "Subscriptions (WebSocket /graphql/ws)")]
    pub subscription_replay_limit: usize,
    /// open subscriptions allowed on one WebSocket connection
    #[arg(long, env = "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value = "20", value_parser = number::<usize, 1, 10_000>, help_heading = "Subscriptions (WebSocket /graphql/ws)")]
    pub ws_max_subscriptions_per_connection: usize,
    /// open WebSocket connections allowed per client IP
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_IP", default_value = "200", value_parser = number::<usize, 1, 1_000_000>, help_heading = "Subscriptions (WebSocket /graphql/ws)")]
    pub ws_max_connections_per_ip: usize,
    /// a WebSocket that sends no connection_init within this time is closed (4408)
    #[arg(long, env = "WS_INIT_TIMEOUT_SECONDS", default_value = "5", value_parser = seconds, help_heading = "Subscriptions (WebSocket /graphql/ws)")]
    pub ws_init_timeout: Duration,
    /// interval of the server's keep-alive pings on WebSocket connections
    ///
    /// interval of the server's keep-alive pings ({"type":"ping"}, or "ka" on
    /// the legacy protocol); a graphql-transport-ws client silent for three is
    /// closed
    #[arg(long, env = "WS_KEEPALIVE_SECONDS", default_value = "15", value_parser = seconds, help_heading = "Subscriptions (WebSocket /graphql/ws)")]
    pub ws_keepalive: Duration,

    /// Telegram bot token; a token stored with updateNotificationSettings wins over it
    ///
    /// bot token (from @BotFather); a token stored with
    /// updateNotificationSettings wins over it
    /// (notificationSettings.botTokenSource says which is in effect)
    #[arg(long, env = "TELEGRAM_BOT_TOKEN", value_parser = secret, hide_env_values = true, help_heading = "Telegram alerts")]
    pub telegram_bot_token: Option<Secret>,
    /// comma-separated chat ids (or @channel names) alerts go to, unless set with updateNotificationSettings
    ///
    /// comma-separated chat ids (numbers; groups are negative) or @channel
    /// names; chat ids stored with updateNotificationSettings win over them
    #[arg(long, env = "TELEGRAM_CHAT_IDS", default_value = "", value_parser = words, help_heading = "Telegram alerts")]
    pub telegram_chat_ids: List<String>,
    /// Telegram Bot API base URL (tests point it at a fake)
    #[arg(long, env = "TELEGRAM_API_URL", default_value = "https://api.telegram.org", value_parser = base_url, help_heading = "Telegram alerts")]
    pub telegram_api_url: String,
    /// sends of one alert before it is DEAD on temporary errors (5xx, timeouts, network)
    ///
    /// sends of one alert before it is DEAD on temporary errors (5xx,
    /// timeouts, network); 400/401/403/404 are DEAD at once; 429 waits for
    /// retry_after
    #[arg(long, env = "ALERT_MAX_ATTEMPTS", default_value = "8", value_parser = number::<u32, 1, 1000>, help_heading = "Telegram alerts")]
    pub alert_max_attempts: u32,
    /// first retry delay; doubles per attempt, with jitter
    #[arg(long, env = "ALERT_RETRY_BASE_SECONDS", default_value = "5", value_parser = seconds, help_heading = "Telegram alerts")]
    pub alert_retry_base: Duration,
    /// longest retry delay
    #[arg(long, env = "ALERT_RETRY_MAX_SECONDS", default_value = "600", value_parser = seconds, help_heading = "Telegram alerts")]
    pub alert_retry_max: Duration,
    /// a SENDING alert whose notifier died is claimed again after this long
    ///
    /// a SENDING alert whose notifier died is claimed again after this long;
    /// must be more than twice ALERT_SEND_TIMEOUT_SECONDS (check-config
    /// refuses otherwise)
    #[arg(long, env = "ALERT_LEASE_SECONDS", default_value = "60", value_parser = seconds, help_heading = "Telegram alerts")]
    pub alert_lease: Duration,
    /// a Telegram request not answered within this time counts as a temporary failure
    #[arg(long, env = "ALERT_SEND_TIMEOUT_SECONDS", default_value = "10", value_parser = seconds, help_heading = "Telegram alerts")]
    pub alert_send_timeout: Duration,
    /// how often the notifier looks for due alerts when nothing wakes it
    #[arg(long, env = "ALERT_POLL_SECONDS", default_value = "5", value_parser = seconds, help_heading = "Telegram alerts")]
    pub alert_poll: Duration,
    /// messages per second to one chat (Telegram's limit is about 1)
    #[arg(long, env = "ALERT_CHAT_MESSAGES_PER_SECOND", default_value = "1", value_parser = number::<u32, 1, 1000>, help_heading = "Telegram alerts")]
    pub alert_chat_per_second: u32,
    /// messages per second in all (Telegram's limit is about 30)
    #[arg(long, env = "ALERT_GLOBAL_MESSAGES_PER_SECOND", default_value = "30", value_parser = number::<u32, 1, 10_000>, help_heading = "Telegram alerts")]
    pub alert_global_per_second: u32,
    /// more alerts than this due for one chat at once go out as digest messages
    #[arg(long, env = "ALERT_DIGEST_AFTER", default_value = "3", value_parser = number::<usize, 1, 1000>, help_heading = "Telegram alerts")]
    pub alert_digest_after: usize,
    /// failed logins for one account, or from one address, that raise a LOGIN_FAILURES alert
    #[arg(long, env = "ALERT_LOGIN_FAILURES", default_value = "5", value_parser = number::<u32, 1, 1_000_000>, help_heading = "Telegram alerts")]
    pub alert_login_failures: u32,
    /// window of ALERT_LOGIN_FAILURES; one alert per account or address per window
    #[arg(long, env = "ALERT_LOGIN_WINDOW_SECONDS", default_value = "300", value_parser = seconds, help_heading = "Telegram alerts")]
    pub alert_login_window: Duration,
    /// an unsent alert with this many attempts makes health's notifier degraded
    #[arg(long, env = "ALERT_STALE_ATTEMPTS", default_value = "5", value_parser = number::<u32, 1, 1000>, help_heading = "Telegram alerts")]
    pub alert_stale_attempts: u32,
    /// an alert unsent for this long makes health's notifier degraded
    #[arg(long, env = "ALERT_STALE_MINUTES", default_value = "30", value_parser = minutes, help_heading = "Telegram alerts")]
    pub alert_stale_age: Duration,
    /// SENT and DEAD alerts last changed longer ago than this are deleted (hourly, in batches of 500); the audit log keeps its ALERT_* rows
    #[arg(long, env = "ALERT_RETENTION_DAYS", default_value = "30", value_parser = days, help_heading = "Telegram alerts")]
    pub alert_retention: Duration,
    /// refresh tokens expired longer ago than this are deleted (hourly, in batches of 500); until then a reused one is still recognised as reused
    #[arg(long, env = "REFRESH_TOKEN_RETENTION_DAYS", default_value = "7", value_parser = days, help_heading = "Telegram alerts")]
    pub refresh_token_retention: Duration,

    /// largest uploaded file (CSV or .xlsx); larger gets 413 before it is buffered
    ///
    /// largest uploaded file (CSV or .xlsx); larger gets 413
    /// PAYLOAD_TOO_LARGE before it is buffered (REQUEST_BODY_LIMIT_BYTES still
    /// applies to every other request)
    #[arg(long, env = "UPLOAD_MAX_BYTES", default_value = "10485760", value_parser = number::<usize, 1024, 1_073_741_824>, help_heading = "Uploads (CSV and .xlsx imports)")]
    pub upload_max_bytes: usize,
    /// most data rows in one upload; more fails the job before anything is applied
    #[arg(long, env = "UPLOAD_MAX_ROWS", default_value = "100000", value_parser = number::<u32, 1, 10_000_000>, help_heading = "Uploads (CSV and .xlsx imports)")]
    pub upload_max_rows: u32,
    /// rows applied per transaction by the upload worker
    #[arg(long, env = "UPLOAD_BATCH_SIZE", default_value = "500", value_parser = number::<usize, 1, 10_000>, help_heading = "Uploads (CSV and .xlsx imports)")]
    pub upload_batch_size: usize,
    /// days a finished upload's file is kept (its job and row errors stay)
    #[arg(long, env = "UPLOAD_RETENTION_DAYS", default_value = "30", value_parser = days, help_heading = "Uploads (CSV and .xlsx imports)")]
    pub upload_retention: Duration,
    /// health reports uploads degraded when UPLOAD_QUEUE_ALERT_JOBS or more jobs have been queued this long
    #[arg(long, env = "UPLOAD_QUEUE_ALERT_SECONDS", default_value = "600", value_parser = seconds, help_heading = "Uploads (CSV and .xlsx imports)")]
    pub upload_queue_alert_age: Duration,
    /// how many jobs queued past UPLOAD_QUEUE_ALERT_SECONDS degrade health's uploads service
    #[arg(long, env = "UPLOAD_QUEUE_ALERT_JOBS", default_value = "10", value_parser = number::<u64, 1, 1_000_000>, help_heading = "Uploads (CSV and .xlsx imports)")]
    pub upload_queue_alert_jobs: u64,
    /// a worker's hold on a job, renewed every batch; an expired one is claimed again
    #[arg(long, env = "UPLOAD_LEASE_SECONDS", default_value = "60", value_parser = seconds, help_heading = "Uploads (CSV and .xlsx imports)")]
    pub upload_lease: Duration,
    /// run the upload worker in this instance (false: this instance only queues jobs)
    ///
    /// run the upload worker in this instance; false: this instance only
    /// queues jobs (workers on other instances, sharing the PostgreSQL
    /// database, take them)
    #[arg(long, env = "UPLOAD_WORKER_ENABLED", default_value = "true", value_parser = boolean, action = clap::ArgAction::Set, help_heading = "Uploads (CSV and .xlsx imports)")]
    pub upload_worker_enabled: bool,
    /// the upload worker looks for jobs at least this often (it is also woken on submit)
    #[arg(long, env = "UPLOAD_POLL_SECONDS", default_value = "5", value_parser = seconds, help_heading = "Uploads (CSV and .xlsx imports)")]
    pub upload_poll: Duration,

    /// PostgreSQL: productBySku and the catalogue's total count are served from memory, invalidated by every change any instance commits; this bounds an entry's age; 0 turns the cache off
    ///
    /// PostgreSQL: productBySku and the catalogue's total count are served
    /// from memory, invalidated by every change any instance commits (heard
    /// through LISTEN/NOTIFY; bypassed while that listener is down). This
    /// bounds an entry's age in seconds; 0 turns the cache off. SQLite has no
    /// read cache.
    #[arg(long, env = "READ_CACHE_SECONDS", default_value = "60", value_parser = seconds_upto::<86_400>, help_heading = "Read cache and metrics")]
    pub read_cache_ttl: Duration,
    /// serve Prometheus metrics at GET /metrics; empty means on in development, off in production
    ///
    /// serve Prometheus metrics at GET /metrics (see docs/monitoring/); empty
    /// means on in development, off in production.
    // Whether they are served is `Config::metrics_enabled`.
    #[arg(long, env = "METRICS_ENABLED", value_parser = boolean, action = clap::ArgAction::Set, help_heading = "Read cache and metrics")]
    pub configured_metrics: Option<bool>,
    /// serve /metrics on this address (e.g. 127.0.0.1:9464) instead of the API listener
    #[arg(long, env = "METRICS_ADDR", value_parser = socket_addr, help_heading = "Read cache and metrics")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The settings, with the values that depend on more than one variable
/// resolved. Reads of a setting go through `Deref` to [`Settings`].
#[derive(Clone, Debug)]
pub struct Config {
    settings: Settings,
    /// The signing key: JWT_SECRET, or one generated for this process.
    pub jwt_secret: Secret,
    pub jwt_secret_source: SecretSource,
    /// GRAPHQL_INTROSPECTION, or the default for APP_ENV.
    pub graphql_introspection: Introspection,
    /// METRICS_ENABLED, or the default for APP_ENV.
    pub metrics_enabled: bool,
    /// Each variable's value as `check-config` shows it, secrets masked.
    shown: Vec<(String, String)>,
}

impl std::ops::Deref for Config {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

/// A comma-separated list: items trimmed, empty ones dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

impl<T> std::ops::Deref for List<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

/// One variable as [`Settings`] declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    /// As written in `.env.example`; empty when unset means "none".
    pub default: String,
    pub secret: bool,
    /// One line of meaning (README, `check-config`).
    pub meaning: String,
    /// The whole description (`.env.example`).
    pub description: String,
    pub section: String,
    /// The clap argument it is read as: its id and its option.
    arg_id: String,
    option: String,
}

/// Every variable, in declaration order (the order `check-config` prints).
pub fn variables() -> Vec<Variable> {
    use clap::CommandFactory;
    let command = Settings::command();
    command
        .get_arguments()
        .filter_map(|arg| {
            let name = arg.get_env()?.to_string_lossy().into_owned();
            let option = arg.get_long()?.to_string();
            let meaning = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            Some(Variable {
                name,
                default: arg
                    .get_default_values()
                    .first()
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                secret: arg.is_hide_env_values_set(),
                // The doc comment's later paragraphs, when it has them.
                description: arg
                    .get_long_help()
                    .and_then(|h| Some(h.to_string().split_once("\n\n")?.1.to_string()))
                    .unwrap_or_else(|| meaning.clone()),
                meaning,
                section: arg.get_help_heading().unwrap_or_default().to_string(),
                arg_id: arg.get_id().to_string(),
                option,
            })
        })
        .collect()
}

const ENV_TEMPLATE_PREAMBLE: &str = "\
# Stockroom configuration template, written by `stockroom check-config --template env`
# from the declaration of every setting (src/config.rs); do not edit it by hand.
#
# Copy to .env (read at start from the working directory, or the nearest parent
# directory that has one) or set these in the process environment; the
# environment wins over .env. Every variable is optional in development: an
# unset or empty value takes the default shown. `stockroom check-config` prints
# the effective value of each one (secrets masked) and exits 1 when one is
# invalid.
";

/// `.env.example`: every variable with its default, under its section,
/// after its description.
pub fn env_template() -> String {
    let mut out = String::from(ENV_TEMPLATE_PREAMBLE);
    let mut section = None;
    for v in variables() {
        if section.as_ref() != Some(&v.section) {
            let title = format!("# --- {} ", v.section);
            out.push_str(&format!("\n{title:-<79}\n\n"));
            section = Some(v.section.clone());
        }
        for line in wrap(&v.description, 77) {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&format!("{}={}\n", v.name, v.default));
    }
    out
}

/// The README's configuration table.
pub fn markdown_table() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for v in variables() {
        let default = if v.default.is_empty() {
            String::new()
        } else {
            format!("`{}`", v.default)
        };
        out.push_str(&format!(
            "| `{}` | {default} | {} |\n",
            v.name,
            v.meaning.replace('|', "\\|")
        ));
    }
    out
}

/// Words of `text` in lines of at most `width` characters (a longer word
/// stands alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

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

    /// Parses a set of variables; unset or empty ones take their default.
    /// Every invalid variable is reported, not only the first.
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        use clap::{CommandFactory, FromArgMatches};
        // The variables become the arguments of the settings' command; the
        // process environment is read by `from_env` only, so that a test's
        // variables are exactly its own.
        let declared = variables();
        let command = Settings::command().mut_args(|arg| arg.env(None::<&'static str>));
        // (option, variable, value, whether the value may be repeated)
        let mut given: Vec<(String, String, String, bool)> = Vec::new();
        for v in &declared {
            if let Some(value) = vars.get(&v.name).map(|v| v.trim())
                && !value.is_empty()
            {
                given.push((
                    v.option.clone(),
                    v.name.clone(),
                    value.to_string(),
                    !v.secret,
                ));
            }
        }
        let mut errors = Vec::new();
        let matches = loop {
            let argv = given
                .iter()
                .map(|(long, _, value, _)| format!("--{long}={value}"));
            match command.clone().try_get_matches_from(argv) {
                Ok(matches) => break matches,
                Err(err) => {
                    // Report the variable and go on without it, to find the
                    // others.
                    let culprit = invalid_long(&err)
                        .and_then(|long| given.iter().position(|(l, ..)| *l == long));
                    let Some(at) = culprit else {
                        errors.push(err.to_string());
                        return Err(ConfigError(errors));
                    };
                    let (_, env, value, shown) = given.remove(at);
                    let cause = std::error::Error::source(&err)
                        .map_or_else(|| err.kind().to_string(), |cause| cause.to_string());
                    errors.push(if shown {
                        format!("{env}: {cause}, got {value:?}")
                    } else {
                        // A secret's value is never repeated.
                        format!("{env}: {cause}")
                    });
                }
            }
        };
        let settings = Settings::from_arg_matches(&matches)
            .map_err(|e| ConfigError(vec![format!("settings: {e}")]))?;
        let shown = shown_values(declared, &matches);
        Self::resolve(settings, shown, errors)
    }

    /// Settles what depends on more than one variable, and checks across them.
    fn resolve(
        settings: Settings,
        shown: Vec<(String, String)>,
        mut errors: Vec<String>,
    ) -> Result<Self, ConfigError> {
        let production = settings.app_env == AppEnv::Production;
        let (jwt_secret, jwt_secret_source) = match &settings.configured_jwt_secret {
            None => {
                if production {
                    errors.push("JWT_SECRET: required when APP_ENV=production".to_string());
                }
                (Secret::new(generate_secret()), SecretSource::Generated)
            }
            Some(secret) => {
                if secret.expose().len() < MIN_JWT_SECRET_BYTES {
                    let msg = format!(
                        "JWT_SECRET: must be at least {MIN_JWT_SECRET_BYTES} bytes (got {})",
                        secret.expose().len()
                    );
                    if production {
                        errors.push(msg);
                    } else {
                        eprintln!("warning: {msg}; accepted because APP_ENV=development");
                    }
                }
                (secret.clone(), SecretSource::Configured)
            }
        };
        if settings.jwt_secret_previous.as_ref() == Some(&jwt_secret) {
            errors.push(
                "JWT_SECRET_PREVIOUS: is the same as JWT_SECRET; set it to the secret being replaced"
                    .to_string(),
            );
        }
        if let (Some(key), Some(old_name)) =
            (&settings.data_encryption_key, &settings.totp_encryption_key)
            && key != old_name
        {
            errors.push(
                "TOTP_ENCRYPTION_KEY: is the deprecated name of DATA_ENCRYPTION_KEY and differs from it; \
                 remove it (to rotate, set the old key as DATA_ENCRYPTION_KEY_PREVIOUS)"
                    .to_string(),
            );
        }
        let data_key = settings
            .data_encryption_key
            .as_ref()
            .or(settings.totp_encryption_key.as_ref());
        match (&settings.data_encryption_key_previous, data_key) {
            (Some(_), None) => errors.push(
                "DATA_ENCRYPTION_KEY_PREVIOUS: set DATA_ENCRYPTION_KEY, the key that replaces it"
                    .to_string(),
            ),
            (Some(previous), Some(key)) if previous == key => errors.push(
                "DATA_ENCRYPTION_KEY_PREVIOUS: is the same as DATA_ENCRYPTION_KEY; set it to the key being replaced"
                    .to_string(),
            ),
            _ => {}
        }
        if settings.alert_lease <= settings.alert_send_timeout * 2 {
            errors.push(format!(
                "ALERT_LEASE_SECONDS ({}) must be more than twice ALERT_SEND_TIMEOUT_SECONDS ({}), or a slow send could be claimed and sent again by another instance",
                settings.alert_lease.as_secs(),
                settings.alert_send_timeout.as_secs()
            ));
        }
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Config {
            graphql_introspection: settings.configured_introspection.unwrap_or(if production {
                Introspection::SignedIn
            } else {
                Introspection::Everyone
            }),
            metrics_enabled: settings.configured_metrics.unwrap_or(!production),
            jwt_secret,
            jwt_secret_source,
            settings,
            shown,
        })
    }

    pub fn is_production(&self) -> bool {
        self.app_env == AppEnv::Production
    }

    /// The key that seals stored secrets: DATA_ENCRYPTION_KEY, or its
    /// deprecated name TOTP_ENCRYPTION_KEY.
    pub fn data_key(&self) -> Option<&Secret> {
        self.data_encryption_key
            .as_ref()
            .or(self.totp_encryption_key.as_ref())
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.expose().starts_with("sqlite:")
    }

    /// Each variable with its value, secrets masked, for `check-config`;
    /// an unset one shows as `(unset)`, and the settings decided from
    /// others say what they came to.
    pub fn effective_values(&self) -> Vec<(String, String)> {
        self.shown
            .iter()
            .map(|(name, value)| {
                let resolved = match name.as_str() {
                    "JWT_SECRET" if self.jwt_secret_source == SecretSource::Generated => {
                        Some("generated per process".to_string())
                    }
                    "GRAPHQL_INTROSPECTION" => Some(self.graphql_introspection.label().to_string()),
                    "METRICS_ENABLED" => Some(self.metrics_enabled.to_string()),
                    _ => None,
                };
                let value = match resolved {
                    Some(resolved) if value == UNSET => format!("{UNSET}: {resolved}"),
                    _ => value.clone(),
                };
                (name.clone(), value)
            })
            .collect()
    }
}

const UNSET: &str = "(unset)";

/// The long option a clap error is about (`--port <PORT>` gives `port`).
fn invalid_long(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    match err.get(ContextKind::InvalidArg)? {
        ContextValue::String(arg) => arg
            .trim_start_matches("--")
            .split([' ', '='])
            .next()
            .map(str::to_string),
        _ => None,
    }
}

/// Each variable's value as given or defaulted: secrets masked, URLs
/// without their password.
fn shown_values(declared: Vec<Variable>, matches: &clap::ArgMatches) -> Vec<(String, String)> {
    declared
        .into_iter()
        .map(|v| {
            let raw = matches
                .get_raw(&v.arg_id)
                .map(|values| {
                    values
                        .map(|value| value.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let shown = if raw.is_empty() {
                UNSET.to_string()
            } else if v.name == "DATABASE_URL" {
                mask_url(&raw)
            } else if v.secret {
                "***".to_string()
            } else {
                raw
            };
            (v.name, shown)
        })
        .collect()
}

// Parsers of the values; each error reads after the variable's name.

fn number<T: TryFrom<u64>, const MIN: u64, const MAX: u64>(raw: &str) -> Result<T, String> {
    raw.parse::<u64>()
        .ok()
        .filter(|n| (MIN..=MAX).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("expected a whole number from {MIN} to {MAX}"))
}

const TEN_YEARS_SECONDS: u64 = 10 * 365 * 24 * 3600;

fn seconds(raw: &str) -> Result<Duration, String> {
    number::<u64, 1, TEN_YEARS_SECONDS>(raw).map(Duration::from_secs)
}

fn seconds_upto<const MAX: u64>(raw: &str) -> Result<Duration, String> {
    number::<u64, 0, MAX>(raw).map(Duration::from_secs)
}

fn millis(raw: &str) -> Result<Duration, String> {
    number::<u64, 1, 3_600_000>(raw).map(Duration::from_millis)
}

fn minutes(raw: &str) -> Result<Duration, String> {
    number::<u64, 1, 525_600>(raw).map(|m| Duration::from_secs(60 * m))
}

fn days(raw: &str) -> Result<Duration, String> {
    number::<u64, 1, 36_500>(raw).map(|d| Duration::from_secs(86_400 * d))
}

fn boolean(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

fn app_env(raw: &str) -> Result<AppEnv, String> {
    match raw.to_ascii_lowercase().as_str() {
        "development" | "dev" => Ok(AppEnv::Development),
        "production" | "prod" => Ok(AppEnv::Production),
        _ => Err("expected development or production".to_string()),
    }
}

fn log_format(raw: &str) -> Result<LogFormat, String> {
    match raw.to_ascii_lowercase().as_str() {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected pretty or json".to_string()),
    }
}

fn introspection(raw: &str) -> Result<Introspection, String> {
    match raw.to_ascii_lowercase().as_str() {
        "everyone" | "true" => Ok(Introspection::Everyone),
        "signed-in" => Ok(Introspection::SignedIn),
        "nobody" | "false" => Ok(Introspection::Nobody),
        _ => Err("expected everyone, signed-in or nobody".to_string()),
    }
}

fn secret(raw: &str) -> Result<Secret, String> {
    Ok(Secret::new(raw))
}

/// A key: at least as long as a JWT secret must be.
fn long_secret(raw: &str) -> Result<Secret, String> {
    if raw.len() < MIN_JWT_SECRET_BYTES {
        return Err(format!(
            "must be at least {MIN_JWT_SECRET_BYTES} bytes (got {})",
            raw.len()
        ));
    }
    Ok(Secret::new(raw))
}

fn password(raw: &str) -> Result<Secret, String> {
    crate::validate::check_password_policy(raw)?;
    Ok(Secret::new(raw))
}

fn database_url(raw: &str) -> Result<Secret, String> {
    if ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| raw.starts_with(scheme))
    {
        Ok(Secret::new(raw))
    } else {
        // The value is not repeated: it may hold a password.
        Err("must start with sqlite:, postgres:// or postgresql://".to_string())
    }
}

fn email(raw: &str) -> Result<String, String> {
    let email = raw.to_ascii_lowercase();
    crate::validate::check_email(&email)
        .map(|_| email)
        .map_err(|_| "not an email address".to_string())
}

fn currency(raw: &str) -> Result<String, String> {
    let code = raw.trim().to_ascii_uppercase();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err("expected a three-letter ISO 4217 code such as KRW or USD".to_string())
    }
}

fn base_url(raw: &str) -> Result<String, String> {
    Ok(raw.trim_end_matches('/').to_string())
}

fn socket_addr(raw: &str) -> Result<std::net::SocketAddr, String> {
    raw.parse()
        .map_err(|_| "expected an address like 127.0.0.1:9464".to_string())
}

fn words(raw: &str) -> Result<List<String>, String> {
    Ok(List(
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    ))
}

fn roles(raw: &str) -> Result<List<crate::entity::user::Role>, String> {
    use crate::entity::user::Role;
    let mut roles = Vec::new();
    for name in words(raw)?.0 {
        let role = match name.to_ascii_uppercase().as_str() {
            "ADMIN" => Role::Admin,
            "MANAGER" => Role::Manager,
            "STAFF" => Role::Staff,
            "VIEWER" => Role::Viewer,
            _ => {
                return Err(format!(
                    "unknown role {name:?}; expected ADMIN, MANAGER, STAFF or VIEWER"
                ));
            }
        };
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(List(roles))
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
    fn every_invalid_variable_is_reported_at_once_by_its_name() {
        let err = Config::from_vars(vars(&[
            ("PORT", "http"),
            ("DB_MAX_CONNECTIONS", "0"),
            ("LOG_FORMAT", "xml"),
            ("TWO_FACTOR_REQUIRED_ROLES", "ADMIN,OWNER"),
            ("DATABASE_URL", "mysql://root:hunter2@db/x"),
        ]))
        .expect_err("refused");
        let text = err.to_string();
        assert_eq!(err.0.len(), 5, "{text}");
        assert!(text.contains("PORT: expected a whole number from 0 to 65535, got \"http\""));
        assert!(text.contains("DB_MAX_CONNECTIONS: expected a whole number from 1 to 1000"));
        assert!(text.contains("LOG_FORMAT: expected pretty or json"));
        assert!(text.contains("TWO_FACTOR_REQUIRED_ROLES: unknown role \"OWNER\""));
        assert!(text.contains("DATABASE_URL: must start with"));
        // A secret's value is never repeated.
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn values_are_parsed_as_declared_and_empty_means_the_default() {
        let config = Config::from_vars(vars(&[
            ("PORT", " 8080 "),
            ("HOST", ""),
            ("AUTH_CACHE_SECONDS", "0"),
            ("ALERT_STALE_MINUTES", "2"),
            ("CORS_ORIGINS", "https://a.example, ,https://b.example"),
            ("TWO_FACTOR_REQUIRED_ROLES", "admin,MANAGER,admin"),
            ("TELEGRAM_API_URL", "http://127.0.0.1:9/"),
            ("METRICS_ENABLED", "off"),
            ("TRUST_PROXY", "yes"),
            ("AUTO_MIGRATE", "false"),
            ("APP_ENV", "prod"),
            ("JWT_SECRET", &"s".repeat(40)),
        ]))
        .expect("valid");
        assert_eq!(config.port, 8080);
        assert_eq!(config.host, "0.0.0.0");
        assert_eq!(config.auth_cache_ttl, Duration::ZERO);
        assert_eq!(config.alert_stale_age, Duration::from_secs(120));
        assert_eq!(
            &*config.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        use crate::entity::user::Role;
        assert_eq!(
            &*config.two_factor_required_roles,
            [Role::Admin, Role::Manager]
        );
        assert_eq!(config.telegram_api_url, "http://127.0.0.1:9");
        assert!(!config.metrics_enabled);
        assert!(config.trust_proxy && !config.auto_migrate && config.upload_worker_enabled);
        assert_eq!(config.graphql_introspection, Introspection::SignedIn);
        assert_eq!(config.jwt_secret_source, SecretSource::Configured);
    }

    #[test]
    fn every_setting_is_a_named_variable_and_shown_by_check_config() {
        use clap::CommandFactory;
        let declared = Settings::command().get_arguments().count();
        let variables = variables();
        assert_eq!(variables.len(), declared, "a setting without env");
        let config = Config::from_vars(HashMap::new()).expect("defaults parse");
        let shown = config.effective_values();
        assert_eq!(
            shown.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            variables
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
        );
        for v in &variables {
            assert!(!v.meaning.is_empty(), "{} has no meaning", v.name);
            assert!(!v.section.is_empty(), "{} has no section", v.name);
        }
        let get = |name: &str| {
            shown
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("PORT").as_deref(), Some("4000"));
        assert_eq!(
            get("JWT_SECRET").as_deref(),
            Some("(unset): generated per process")
        );
        assert_eq!(
            get("GRAPHQL_INTROSPECTION").as_deref(),
            Some("(unset): everyone")
        );
        let secret = "a-production-secret-of-at-least-32-bytes";
        let config = Config::from_vars(vars(&[("JWT_SECRET", secret)])).expect("valid");
        assert!(
            config
                .effective_values()
                .iter()
                .all(|(_, v)| !v.contains(secret))
        );
    }

    #[test]
    fn the_data_key_keeps_its_old_name_and_rotates_to_a_different_key() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let old = Config::from_vars(vars(&[("TOTP_ENCRYPTION_KEY", &a)])).expect("valid");
        assert_eq!(old.data_key().map(Secret::expose), Some(a.as_str()));
        let both = Config::from_vars(vars(&[
            ("TOTP_ENCRYPTION_KEY", &a),
            ("DATA_ENCRYPTION_KEY", &a),
        ]))
        .expect("the same key under both names");
        assert_eq!(both.data_key().map(Secret::expose), Some(a.as_str()));
        for refused in [
            vec![("TOTP_ENCRYPTION_KEY", &a), ("DATA_ENCRYPTION_KEY", &b)],
            vec![("DATA_ENCRYPTION_KEY_PREVIOUS", &a)],
            vec![
                ("DATA_ENCRYPTION_KEY", &a),
                ("DATA_ENCRYPTION_KEY_PREVIOUS", &a),
            ],
        ] {
            let pairs: Vec<(&str, &str)> = refused.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let err = Config::from_vars(vars(&pairs)).expect_err("refused");
            assert!(!err.to_string().contains(&a), "{err}");
        }
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
