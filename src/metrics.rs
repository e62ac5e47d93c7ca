//! Prometheus metrics: the `metrics` facade, recorded where things happen,
//! and rendered in the text format by `GET /metrics` (on the API listener or
//! on `METRICS_ADDR`). Labels never carry user data, tokens or SQL: routes are
//! route patterns, operation names are bounded, codes are error codes.
//!
//! Figures kept in the database (the alert outbox, the upload queue) and the
//! pool and process figures are read when the endpoint is scraped.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Attempts an alert took to be sent or given up.
const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 13.0, 21.0];
/// Movements per group commit.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Distinct GraphQL operation names kept as label values; later ones are
/// folded into `other`, so a client cannot grow the series without bound.
const MAX_OPERATION_NAMES: usize = 200;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the process-wide recorder once (every later call returns the same
/// handle) and describes the metrics.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("stockroom_alert_attempts".into()),
                        ATTEMPT_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("stockroom_movement_batch_size".into()),
                        BATCH_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                // Only invalid (empty) bucket lists fail, and ours are fixed.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
            }
            describe();
            let process = metrics_process::Collector::default();
            process.describe();
            let _ = PROCESS.set(process);
            gauge!(
                "stockroom_build_info",
                "version" => env!("CARGO_PKG_VERSION"),
                "commit" => env!("STOCKROOM_COMMIT")
            )
            .set(1.0);
            register_zeroes();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "stockroom_http_requests_total",
        "HTTP requests by route pattern, method and status class"
    );
    describe_histogram!(
        "stockroom_http_request_duration_seconds",
        "HTTP request latency by route pattern and method"
    );
    describe_counter!(
        "stockroom_graphql_operations_total",
        "GraphQL operations by type and (bounded) operation name"
    );
    describe_histogram!(
        "stockroom_graphql_operation_duration_seconds",
        "GraphQL operation latency"
    );
    describe_counter!(
        "stockroom_graphql_errors_total",
        "GraphQL errors by extensions.code"
    );
    describe_histogram!(
        "stockroom_health_check_duration_seconds",
        "latency of a health check (database ping and queue figures)"
    );
    describe_gauge!(
        "stockroom_health_status",
        "1 when the last health check was OK, 0 when DEGRADED"
    );
    describe_gauge!(
        "stockroom_alerts",
        "alerts in the Telegram outbox by status (PENDING includes retrying)"
    );
    describe_counter!(
        "stockroom_pruned_rows_total",
        "rows deleted past their retention (ALERT_RETENTION_DAYS, REFRESH_TOKEN_RETENTION_DAYS), by table"
    );
    describe_counter!(
        "stockroom_graphql_document_cache_total",
        "GraphQL documents found parsed in the document cache (hit) or parsed anew (miss)"
    );
    describe_histogram!(
        "stockroom_movement_batch_size",
        "stock movements committed together by one group commit"
    );
    describe_histogram!(
        "stockroom_alert_attempts",
        "attempts an alert took when it was sent or went DEAD"
    );
    describe_gauge!(
        "stockroom_alert_oldest_unsent_age_seconds",
        "age of the oldest alert not sent yet; 0 when none"
    );
    describe_gauge!(
        "stockroom_alert_unsent_max_attempts",
        "most attempts among alerts not sent yet; 0 when none"
    );
    describe_counter!(
        "stockroom_telegram_responses_total",
        "Telegram Bot API answers by class: ok, 429, 4xx, 5xx, timeout, network"
    );
    describe_gauge!(
        "stockroom_upload_jobs",
        "upload jobs by status (QUEUED, PROCESSING)"
    );
    describe_gauge!(
        "stockroom_upload_oldest_queued_age_seconds",
        "age of the oldest queued upload job; 0 when none"
    );
    describe_counter!(
        "stockroom_upload_rows_total",
        "upload rows applied or failed"
    );
    describe_gauge!(
        "stockroom_db_pool_connections",
        "database pool connections by state (in_use, idle)"
    );
    describe_gauge!("stockroom_db_pool_max_connections", "DB_MAX_CONNECTIONS");
    describe_gauge!(
        "stockroom_db_pool_waiting",
        "tasks waiting to begin a write transaction (a pool connection, or SQLite's write lock)"
    );
    describe_counter!("stockroom_db_statements_total", "database statements run");
    describe_counter!(
        "stockroom_sqlite_wal_checkpoints_total",
        "SQLite: checkpoints run off the writer connection"
    );
    describe_gauge!(
        "stockroom_sqlite_wal_frames",
        "SQLite: pages in the WAL after the last checkpoint, and how many of them it copied back (state: total, copied)"
    );
    describe_counter!(
        "stockroom_db_slow_statements_total",
        "statements slower than DB_SLOW_QUERY_MS"
    );
    describe_counter!(
        "stockroom_db_statement_errors_total",
        "statements that failed"
    );
    describe_counter!(
        "stockroom_db_transaction_retries_total",
        "transactions run again after a transient failure, by reason"
    );
    describe_counter!("stockroom_login_failures_total", "failed logins by reason");
    describe_counter!(
        "stockroom_account_lockouts_total",
        "accounts locked after repeated failed logins"
    );
    describe_counter!(
        "stockroom_rate_limited_total",
        "requests refused by a rate limit, by limiter"
    );
    describe_gauge!(
        "stockroom_websocket_connections",
        "open GraphQL WebSocket connections"
    );
    describe_gauge!("stockroom_subscriptions", "open subscription streams");
    describe_gauge!(
        "stockroom_subscription_groups",
        "distinct live subscriptions (document, operation, variables, role), each executed once per event for all its subscribers"
    );
    describe_counter!(
        "stockroom_subscription_renders_total",
        "answers executed for subscription groups (one per event and group, however many subscribers it has)"
    );
    describe_counter!(
        "stockroom_subscriptions_lagged_total",
        "subscription streams ended because they fell behind"
    );
    describe_histogram!(
        "stockroom_subscription_delivery_seconds",
        "from an event's publication on this instance to its answer passed to a subscriber's connection (one observation per subscriber and event)"
    );
    describe_counter!(
        "stockroom_websocket_frames_written_total",
        "WebSocket messages written to clients (events, pings, protocol messages)"
    );
    describe_counter!(
        "stockroom_websocket_bytes_written_total",
        "payload bytes of the WebSocket messages written to clients"
    );
    describe_counter!(
        "stockroom_websocket_writes_total",
        "socket writes (flushes) to WebSocket clients; messages ready together share one"
    );
    describe_counter!(
        "stockroom_subscription_replayed_events_total",
        "events resumed streams replayed from the ledger (after: a cursor, or catching up after a listener reconnect)"
    );
    describe_gauge!(
        "stockroom_uptime_seconds",
        "seconds since this process started serving"
    );
    describe_gauge!("stockroom_build_info", "the running version and commit");
}

/// Counters that alert rules watch are shown from the start, at 0, so that
/// their first increase is an increase.
fn register_zeroes() {
    for reason in [
        "unknown_email",
        "password_too_long",
        "wrong_password",
        "deactivated",
        "locked",
        "wrong_second_factor",
    ] {
        counter!("stockroom_login_failures_total", "reason" => reason).increment(0);
    }
    counter!("stockroom_account_lockouts_total").increment(0);
    for limiter in ["default", "login", "alerts", "probe"] {
        counter!("stockroom_rate_limited_total", "limiter" => limiter).increment(0);
    }
    for class in ["ok", "429", "4xx", "5xx", "timeout", "network"] {
        counter!("stockroom_telegram_responses_total", "class" => class).increment(0);
    }
    upload_rows(0, 0);
    counter!("stockroom_subscriptions_lagged_total").increment(0);
    counter!("stockroom_subscription_replayed_events_total").increment(0);
    counter!("stockroom_subscription_renders_total").increment(0);
    for result in ["hit", "miss"] {
        counter!("stockroom_graphql_document_cache_total", "result" => result).increment(0);
    }
    counter!("stockroom_db_slow_statements_total").increment(0);
    counter!("stockroom_db_statement_errors_total").increment(0);
    gauge!("stockroom_websocket_connections").increment(0.0);
    gauge!("stockroom_subscriptions").increment(0.0);
    gauge!("stockroom_subscription_groups").increment(0.0);
    gauge!("stockroom_db_pool_waiting").increment(0.0);
}

/// Folds the histogram samples recorded since the last call into their
/// buckets (the recorder keeps them until then).
pub fn upkeep() {
    if let Some(handle) = HANDLE.get() {
        handle.run_upkeep();
    }
}

/// `2xx`, `4xx`, ...
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Handles of one route's series, made on first use: a request then records
/// with an atomic add on a handle instead of building a labelled key and
/// looking it up in the registry (which cost about a third of a cached
/// lookup's CPU time).
#[derive(Default)]
struct RouteSeries {
    /// By method (GET, POST, OPTIONS, HEAD, other), then status class.
    requests: [[OnceLock<Counter>; 5]; 5],
    duration: [OnceLock<Histogram>; 5],
}

const METHODS: [&str; 5] = ["GET", "POST", "OPTIONS", "HEAD", "other"];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The handles for `key`, made by `make` (given how many entries there are)
/// the first time; `make` may refuse.
fn cached<V>(
    map: &RwLock<HashMap<String, Arc<V>>>,
    key: &str,
    make: impl FnOnce(usize) -> Option<Arc<V>>,
) -> Option<Arc<V>> {
    if let Ok(known) = map.read()
        && let Some(v) = known.get(key)
    {
        return Some(Arc::clone(v));
    }
    let mut known = map.write().ok()?;
    if let Some(v) = known.get(key) {
        return Some(Arc::clone(v));
    }
    let v = make(known.len())?;
    known.insert(key.to_string(), Arc::clone(&v));
    Some(v)
}

/// Counts and times a request by route pattern (a fixed set: the router's),
/// method and status class.
pub fn http_request(route: &str, method: &'static str, status: u16, elapsed: Duration) {
    static ROUTES: OnceLock<RwLock<HashMap<String, Arc<RouteSeries>>>> = OnceLock::new();
    let Some(series) = cached(ROUTES.get_or_init(Default::default), route, |_| {
        Some(Arc::default())
    }) else {
        return;
    };
    let m = METHODS.iter().position(|x| *x == method).unwrap_or(4);
    let class = status_class(status);
    let c = STATUS_CLASSES.iter().position(|x| *x == class).unwrap_or(4);
    series.requests[m][c]
        .get_or_init(|| {
            counter!("stockroom_http_requests_total", "route" => route.to_string(), "method" => METHODS[m], "status_class" => STATUS_CLASSES[c])
        })
        .increment(1);
    series.duration[m]
        .get_or_init(|| {
            histogram!("stockroom_http_request_duration_seconds", "route" => route.to_string(), "method" => METHODS[m])
        })
        .record(elapsed.as_secs_f64());
}

/// One GraphQL operation name's series, by operation type.
#[derive(Default)]
pub struct OperationSeries {
    label: String,
    /// query, mutation, subscription, invalid.
    by_type: [OnceLock<(Counter, Histogram)>; 4],
}

const OPERATION_TYPES: [&str; 4] = ["query", "mutation", "subscription", "invalid"];

impl OperationSeries {
    /// The label value: the name, `anonymous`, `other` or `invalid`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Counts one operation of type `kind`, and times it when `elapsed` is
    /// given (a subscription is counted when it starts, not timed).
    pub fn record(&self, kind: &'static str, elapsed: Option<Duration>) {
        let t = OPERATION_TYPES.iter().position(|x| *x == kind).unwrap_or(3);
        let (count, duration) = self.by_type[t].get_or_init(|| {
            let labels = [
                ("type", OPERATION_TYPES[t]),
                ("operation", self.label.as_str()),
            ];
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.to_string()))
                .collect();
            (
                counter!("stockroom_graphql_operations_total", labels.clone()),
                histogram!("stockroom_graphql_operation_duration_seconds", labels),
            )
        });
        count.increment(1);
        if let Some(elapsed) = elapsed {
            duration.record(elapsed.as_secs_f64());
        }
    }
}

/// The series of an operation name: the name itself for the first
/// `MAX_OPERATION_NAMES` well-formed names seen, `anonymous` without one,
/// `other` for the rest, so a client cannot grow the series without bound.
pub fn operation_series(name: Option<&str>) -> Arc<OperationSeries> {
    static NAMES: OnceLock<RwLock<HashMap<String, Arc<OperationSeries>>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let new = |label: &str| {
        Arc::new(OperationSeries {
            label: label.to_string(),
            ..Default::default()
        })
    };
    let label = match name.filter(|n| !n.is_empty()) {
        None => "anonymous",
        Some(n) if n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => n,
        Some(_) => "other",
    };
    // `anonymous` and `other` on top of the names.
    cached(names, label, |len| {
        (len < MAX_OPERATION_NAMES + 2).then(|| new(label))
    })
    .or_else(|| cached(names, "other", |_| Some(new("other"))))
    .unwrap_or_else(|| new("other"))
}

/// The series of a request that never got to an operation (a parse or
/// validation failure before one was chosen).
pub fn invalid_operation() -> Arc<OperationSeries> {
    static INVALID: OnceLock<Arc<OperationSeries>> = OnceLock::new();
    Arc::clone(INVALID.get_or_init(|| {
        Arc::new(OperationSeries {
            label: "invalid".into(),
            ..Default::default()
        })
    }))
}

pub fn graphql_error(kind: &'static str, operation: &str, code: &str) {
    // Codes are ours (a fixed set), but bound them anyway.
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_uppercase() || *c == '_')
        .take(40)
        .collect();
    counter!("stockroom_graphql_errors_total", "type" => kind, "operation" => operation.to_string(), "code" => code).increment(1);
}

pub fn health_check(ok: bool, elapsed: Duration) {
    histogram!("stockroom_health_check_duration_seconds").record(elapsed.as_secs_f64());
    gauge!("stockroom_health_status").set(if ok { 1.0 } else { 0.0 });
}

pub fn alert_finished(attempts: i32) {
    histogram!("stockroom_alert_attempts").record(f64::from(attempts));
}

pub fn telegram_response(class: &'static str) {
    counter!("stockroom_telegram_responses_total", "class" => class).increment(1);
}

pub fn upload_rows(applied: u64, failed: u64) {
    counter!("stockroom_upload_rows_total", "result" => "applied").increment(applied);
    counter!("stockroom_upload_rows_total", "result" => "failed").increment(failed);
}

pub fn db_statement(elapsed: Duration, slow: Duration, failed: bool) {
    counter!("stockroom_db_statements_total").increment(1);
    if elapsed >= slow {
        counter!("stockroom_db_slow_statements_total").increment(1);
    }
    if failed {
        counter!("stockroom_db_statement_errors_total").increment(1);
    }
}

/// A SQLite checkpoint ran: the WAL held `frames` pages, `copied` of them
/// are now in the database file (-1 each when the WAL is not in use).
pub fn wal_checkpoint(frames: i64, copied: i64) {
    counter!("stockroom_sqlite_wal_checkpoints_total").increment(1);
    gauge!("stockroom_sqlite_wal_frames", "state" => "total").set(frames as f64);
    gauge!("stockroom_sqlite_wal_frames", "state" => "copied").set(copied as f64);
}

pub fn movement_batch(size: usize) {
    histogram!("stockroom_movement_batch_size").record(size as f64);
}

pub fn db_waiting(delta: f64) {
    gauge!("stockroom_db_pool_waiting").increment(delta);
}

pub fn transaction_retry(reason: &'static str) {
    counter!("stockroom_db_transaction_retries_total", "reason" => reason).increment(1);
}

pub fn login_failure(reason: &'static str) {
    counter!("stockroom_login_failures_total", "reason" => reason).increment(1);
}

pub fn account_locked() {
    counter!("stockroom_account_lockouts_total").increment(1);
}

pub fn rate_limited(limiter: &'static str) {
    counter!("stockroom_rate_limited_total", "limiter" => limiter).increment(1);
}

pub fn websocket_connections(delta: f64) {
    gauge!("stockroom_websocket_connections").increment(delta);
}

pub fn subscriptions(delta: f64) {
    gauge!("stockroom_subscriptions").increment(delta);
}

pub fn subscription_groups(delta: f64) {
    gauge!("stockroom_subscription_groups").increment(delta);
}

/// One answer executed for a subscription group.
pub fn subscription_rendered() {
    counter!("stockroom_subscription_renders_total").increment(1);
}

pub fn subscription_lagged() {
    counter!("stockroom_subscriptions_lagged_total").increment(1);
}

/// The handle a subscriber records its delivery delays on (each one, from
/// the event's publication to its answer's hand-over to the socket), taken
/// once per subscriber rather than looked up per delivery.
pub fn subscription_delivery() -> Histogram {
    histogram!("stockroom_subscription_delivery_seconds")
}

/// What one WebSocket connection writes: frames, payload bytes and writes,
/// on handles looked up once per connection.
pub struct WebsocketWrites {
    frames: Counter,
    bytes: Counter,
    writes: Counter,
}

impl Default for WebsocketWrites {
    fn default() -> Self {
        Self {
            frames: counter!("stockroom_websocket_frames_written_total"),
            bytes: counter!("stockroom_websocket_bytes_written_total"),
            writes: counter!("stockroom_websocket_writes_total"),
        }
    }
}

impl WebsocketWrites {
    /// Frames and payload bytes written in one write.
    pub fn written(&self, frames: u64, bytes: u64) {
        self.frames.increment(frames);
        self.bytes.increment(bytes);
        self.writes.increment(1);
    }
}

/// Events a resumed or catching-up stream replayed from the ledger.
pub fn subscription_replayed(events: usize) {
    counter!("stockroom_subscription_replayed_events_total").increment(events as u64);
}

/// What the metrics read from elsewhere at a scrape: the queues (through a
/// health check), the pool, the uptime. The HTTP layer gathers them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    /// PENDING (with retrying), SENDING, DEAD, oldest unsent age, most
    /// attempts of an unsent alert; None when the queue could not be read.
    pub alerts: Option<(i64, i64, i64, i64, i64)>,
    /// QUEUED, PROCESSING, oldest queued age.
    pub uploads: Option<(i64, i64, i64)>,
    pub pool_size: u32,
    pub pool_idle: usize,
    pub pool_max: u32,
    pub uptime: std::time::Duration,
}

/// Sets the figures read at a scrape and renders every metric.
pub fn render(figures: &Figures) -> String {
    let handle = install();
    if let Some((pending, sending, dead, oldest, attempts)) = figures.alerts {
        gauge!("stockroom_alerts", "status" => "PENDING").set(pending as f64);
        gauge!("stockroom_alerts", "status" => "SENDING").set(sending as f64);
        gauge!("stockroom_alerts", "status" => "DEAD").set(dead as f64);
        gauge!("stockroom_alert_oldest_unsent_age_seconds").set(oldest.max(0) as f64);
        gauge!("stockroom_alert_unsent_max_attempts").set(attempts.max(0) as f64);
    }
    if let Some((queued, processing, oldest)) = figures.uploads {
        gauge!("stockroom_upload_jobs", "status" => "QUEUED").set(queued as f64);
        gauge!("stockroom_upload_jobs", "status" => "PROCESSING").set(processing as f64);
        gauge!("stockroom_upload_oldest_queued_age_seconds").set(oldest.max(0) as f64);
    }
    gauge!("stockroom_db_pool_connections", "state" => "in_use")
        .set((figures.pool_size as usize).saturating_sub(figures.pool_idle) as f64);
    gauge!("stockroom_db_pool_connections", "state" => "idle").set(figures.pool_idle as f64);
    gauge!("stockroom_db_pool_max_connections").set(f64::from(figures.pool_max));
    gauge!("stockroom_uptime_seconds").set(figures.uptime.as_secs_f64());
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    handle.run_upkeep();
    handle.render()
}

/// A GraphQL document was found parsed (`hit`) or parsed anew.
pub fn document_cache(hit: bool) {
    static COUNTERS: OnceLock<[Counter; 2]> = OnceLock::new();
    let [hits, misses] = COUNTERS.get_or_init(|| {
        [
            counter!("stockroom_graphql_document_cache_total", "result" => "hit"),
            counter!("stockroom_graphql_document_cache_total", "result" => "miss"),
        ]
    });
    if hit { hits } else { misses }.increment(1);
}

/// Rows deleted past their retention, by table.
pub fn pruned(table: &'static str, rows: u64) {
    counter!("stockroom_pruned_rows_total", "table" => table).increment(rows);
}
