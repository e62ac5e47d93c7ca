//! `POST /api/v1/alerts/test`: what `sendTestAlert` does, for scripts.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::graphql::{authorize, request_meta};
use super::{ClientIp, HttpState};
use crate::entity::user::Role;
use crate::error::AppError;
use crate::service::{Actor, alerts};

#[derive(Deserialize, Default)]
struct TestAlert {
    message: Option<String>,
}

/// Admin bearer token; body `{"message": "..."}` (optional). 202 with the
/// queued alerts (one per chat); 429 with `Retry-After` past
/// `THROTTLE_ALERTS_LIMIT` (counting only authorized sends); 400 when
/// Telegram is not configured.
pub async fn send_test(
    State(state): State<HttpState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match run(&state, &ip, &headers, &body).await {
        Ok(r) => r,
        Err(err) => err.into_response(),
    }
}

async fn run(
    state: &HttpState,
    ip: &ClientIp,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, AppError> {
    let app = &state.app;
    // Only an admin's sends spend the address's test-alert budget: anyone
    // could otherwise use it up before the admin's own send.
    let user = authorize(state, headers, Role::Admin).await?;
    app.limiters.check_alerts(&ip.0)?;
    let input: TestAlert = if body.iter().all(u8::is_ascii_whitespace) {
        TestAlert::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| AppError::bad_input("body", format!("malformed JSON body: {e}")))?
    };
    let actor = Actor::new(Some(&user), request_meta(headers, ip));
    let created = alerts::send_test(&app.services, &actor, input.message.as_deref()).await?;
    let alerts: Vec<_> = created
        .into_iter()
        .map(|a| {
            json!({
                "id": a.id, "kind": a.kind, "status": a.status, "chatId": a.chat_id,
                "attempts": a.attempts, "retryAt": a.retry_at, "createdAt": a.created_at,
            })
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "alerts": alerts }))).into_response())
}
