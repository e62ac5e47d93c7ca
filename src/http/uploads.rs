//! `POST /api/v1/uploads` and `GET /api/v1/uploads/{id}`: what
//! `createUploadJob` and `uploadJob` do, for scripts and cron jobs.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::graphql::{authorize, request_meta};
use super::{ClientIp, HttpState};
use crate::entity::upload_job::UploadKind;
use crate::entity::user::Role;
use crate::error::AppError;
use crate::graphql::uploads::UploadJob;
use crate::service::Actor;
use crate::service::uploads::{self, NewUpload};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadParams {
    kind: Option<String>,
    dry_run: Option<String>,
    filename: Option<String>,
}

fn parse_kind(kind: Option<&str>) -> Result<UploadKind, AppError> {
    match kind.map(|k| k.trim().to_ascii_uppercase()).as_deref() {
        Some("PRODUCTS") => Ok(UploadKind::Products),
        Some("STOCK_MOVEMENTS") => Ok(UploadKind::StockMovements),
        None | Some("") => Err(AppError::bad_input(
            "kind",
            "kind is required: ?kind=PRODUCTS or ?kind=STOCK_MOVEMENTS",
        )),
        Some(other) => Err(AppError::bad_input(
            "kind",
            format!("kind must be PRODUCTS or STOCK_MOVEMENTS, not {other}"),
        )),
    }
}

fn parse_flag(value: Option<&str>) -> Result<bool, AppError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(AppError::bad_input(
            "dryRun",
            format!("dryRun must be true or false, not {other}"),
        )),
    }
}

/// MANAGER bearer token; the body is the file. 202 with the QUEUED job (or
/// the job already queued for the same file); 413 past `UPLOAD_MAX_BYTES`,
/// refused while the body streams.
pub async fn create(
    State(state): State<HttpState>,
    Extension(ip): Extension<ClientIp>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        // Who and what first, so that a refused request reads no body.
        let user = authorize(&state, &headers, Role::Manager).await?;
        let kind = parse_kind(params.kind.as_deref())?;
        let dry_run = parse_flag(params.dry_run.as_deref())?;
        let max = state.app.config.upload_max_bytes;
        let content = axum::body::to_bytes(body, max).await.map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                AppError::PayloadTooLarge(format!(
                    "the file is larger than UPLOAD_MAX_BYTES ({max} bytes)"
                ))
            } else {
                AppError::bad_input("body", format!("the upload could not be read: {e}"))
            }
        })?;
        let actor = Actor::new(Some(&user), request_meta(&headers, &ip));
        let job = uploads::submit(
            &state.app.services,
            &actor,
            max,
            NewUpload {
                kind,
                filename: params.filename.clone(),
                dry_run,
                content: content.to_vec(),
            },
        )
        .await?;
        Ok::<_, AppError>((StatusCode::ACCEPTED, Json(UploadJob::from(job))).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// MANAGER bearer token: the job and its first 100 row errors.
pub async fn show(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        authorize(&state, &headers, Role::Manager).await?;
        let id = uuid::Uuid::parse_str(&id)
            .map_err(|_| AppError::bad_input("id", "id is not a valid id"))?;
        let conn = state.app.services.conn();
        let job = uploads::get(conn, id).await?;
        let errors: Vec<_> = uploads::errors(conn, id, None)
            .await?
            .into_iter()
            .map(|e| serde_json::json!({ "row": e.row, "column": e.column_name, "message": e.message }))
            .collect();
        let mut body = serde_json::to_value(UploadJob::from(job))
            .map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
        if let Some(map) = body.as_object_mut() {
            map.insert("errors".into(), errors.into());
        }
        Ok::<_, AppError>(Json(body).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
