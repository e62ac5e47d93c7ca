use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::HttpState;
use crate::service::health;

/// 200 `{"status":"ok",...}` or 503 `{"status":"degraded",...}`.
pub async fn health(State(state): State<HttpState>) -> impl IntoResponse {
    let app = &state.app;
    let report = health::check(&app.services, &app.config, app.started_at).await;
    let queue = report.notifier.queue.clone().unwrap_or_default();
    let uploads = report.uploads.queue.clone().unwrap_or_default();
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if report.ok { "ok" } else { "degraded" },
        "version": report.version,
        "uptimeSeconds": report.uptime_seconds,
        "services": {
            "database": {
                "status": if report.database.up { "up" } else { "down" },
                "latencyMs": report.database.latency_ms,
                "error": report.database.error,
            },
            "events": {
                "status": if report.events.listener_up { "up" } else { "degraded" },
                "crossInstance": report.events.cross_instance,
                "subscriptions": report.events.subscriptions,
                "subscriptionGroups": report.events.groups,
                "error": report.events.error,
            },
            "notifier": {
                "status": if report.notifier.degraded.is_some() { "degraded" } else { "up" },
                "reason": report.notifier.degraded,
                "telegramConfigured": report.notifier.configured,
                "pending": queue.pending,
                "retrying": queue.retrying,
                "sending": queue.sending,
                "dead": queue.dead,
                "oldestUnsentSeconds": queue.oldest_unsent_seconds,
                "maxAttemptsUnsent": queue.max_attempts_unsent,
            },
            "uploads": {
                "status": if report.uploads.degraded.is_some() { "degraded" } else { "up" },
                "reason": report.uploads.degraded,
                "queued": uploads.queued,
                "processing": uploads.processing,
                "oldestQueuedSeconds": uploads.oldest_queued_seconds,
                "queuedPastThreshold": uploads.queued_past_threshold,
            }
        }
    });
    (status, Json(body))
}

/// 200 while the process serves; no dependency is checked.
pub async fn live() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}
