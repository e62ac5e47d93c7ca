//! HTTP surface: the GraphQL endpoints, REST health, and the middleware stack.

mod alerts;
mod graphql;
mod health;
mod middleware;
mod negotiate;
mod pages;
mod uploads;
mod ws;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::routing::get;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::graphql::pipeline::Pipeline;
use crate::state::AppState;

pub use middleware::ClientIp;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach.
#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    /// Every GraphQL operation, over HTTP and WebSocket, runs through it.
    pub pipeline: Pipeline,
}

pub fn router(app: AppState, pipeline: Pipeline) -> Router {
    let config = app.config.clone();
    let state = HttpState { app, pipeline };
    let mut router = Router::new()
        .route(
            "/graphql",
            get(graphql::graphql_get).post(graphql::graphql_post),
        )
        .route("/graphql/ws", get(ws::graphql_ws))
        .merge(pages::router())
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/health/live", get(health::live))
        .route(
            "/api/v1/alerts/test",
            axum::routing::post(alerts::send_test),
        )
        .route("/api/v1/uploads", axum::routing::post(uploads::create))
        .route("/api/v1/uploads/{id}", get(uploads::show));
    if config.metrics_enabled && config.metrics_addr.is_none() {
        router = router.route("/metrics", get(metrics));
    }
    let router = router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::rate_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::body_limit,
        ))
        .layer(axum::middleware::map_response(
            middleware::json_payload_too_large,
        ));
    // Metrics cost nothing per request when they are off.
    let router = if config.metrics_enabled {
        router.layer(axum::middleware::from_fn(middleware::record_metrics))
    } else {
        router
    };
    let router = router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(cors(&config.cors_origins))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(middleware::make_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
    security_headers(router).with_state(state)
}

/// Prometheus metrics in the text format.
async fn metrics(
    axum::extract::State(state): axum::extract::State<HttpState>,
) -> impl axum::response::IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(&scrape_figures(&state.app).await),
    )
}

/// What `/metrics` reads at a scrape: the queues through the health check,
/// the pool, the uptime.
async fn scrape_figures(app: &AppState) -> crate::metrics::Figures {
    let report = crate::service::health::check(&app.services, &app.config, app.started_at).await;
    let (pool_size, pool_idle) = app.services.pool_figures();
    crate::metrics::Figures {
        alerts: report.notifier.queue.as_ref().map(|q| {
            (
                (q.pending + q.retrying) as i64,
                q.sending as i64,
                q.dead as i64,
                q.oldest_unsent_seconds.unwrap_or(0),
                q.max_attempts_unsent,
            )
        }),
        uploads: report.uploads.queue.as_ref().map(|q| {
            (
                q.queued as i64,
                q.processing as i64,
                q.oldest_queued_seconds.unwrap_or(0),
            )
        }),
        pool_size,
        pool_idle,
        pool_max: app.config.db_max_connections,
        uptime: app.started_at.elapsed(),
    }
}

/// `/metrics` alone, for `METRICS_ADDR`: a listener that is not exposed with
/// the API.
pub fn metrics_router(app: AppState, pipeline: Pipeline) -> Router {
    let state = HttpState { app, pipeline };
    security_headers(Router::new().route("/metrics", get(metrics))).with_state(state)
}

/// Headers every answer carries unless its handler set its own: no MIME
/// sniffing, no referrer, a content policy that lets a JSON answer load
/// nothing and be framed by no one (the GraphiQL page sets a wider one), and
/// no caching, since answers carry tokens and inventory data.
fn security_headers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let set = |name, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        .layer(set(header::CONTENT_SECURITY_POLICY, API_CSP))
        .layer(set(header::CACHE_CONTROL, "no-store"))
}

/// The content policy of API answers.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

fn cors(origins: &[String]) -> CorsLayer {
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
        .expose_headers([REQUEST_ID])
}
