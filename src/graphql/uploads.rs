//! Upload jobs (MANAGER and above): CSV and Excel imports.

use async_graphql::{ComplexObject, Context, ID, Object, SimpleObject, Upload};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::context::{actor, gql, state};
use super::guards::RoleGuard;
use super::types::{Conn, User, connection, connection_page, load_user, parse_id};
use crate::entity::upload_job::{self, UploadKind, UploadStatus};
use crate::entity::upload_job_error;
use crate::entity::user::Role;
use crate::service::uploads::{self, NewUpload};

#[derive(SimpleObject)]
pub struct UploadRowError {
    /// 1-based data row (the header excluded).
    pub row: i32,
    /// The file's column at fault, when one is.
    pub column: Option<String>,
    pub message: String,
}

impl From<upload_job_error::Model> for UploadRowError {
    fn from(e: upload_job_error::Model) -> Self {
        Self {
            row: e.row,
            column: e.column_name,
            message: e.message,
        }
    }
}

// Also the JSON of the REST endpoints (`/api/v1/uploads`), with the same
// field names.
#[derive(SimpleObject, serde::Serialize)]
#[graphql(complex)]
#[serde(rename_all = "camelCase")]
pub struct UploadJob {
    pub id: ID,
    pub kind: UploadKind,
    pub filename: String,
    pub status: UploadStatus,
    pub dry_run: bool,
    /// Data rows in the file, once the worker has read it.
    pub total_rows: Option<i32>,
    pub processed_rows: i32,
    pub succeeded_rows: i32,
    pub failed_rows: i32,
    /// Why the file was refused, when FAILED.
    pub error: Option<String>,
    /// A cancel was asked for while PROCESSING; it stops after the batch under way.
    pub cancel_requested: bool,
    /// Size of the uploaded file.
    pub size_bytes: i64,
    /// SHA-256 of the uploaded file, hex.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[graphql(skip)]
    #[serde(skip)]
    pub uuid: Uuid,
    // The uploader's id (GraphQL resolves it to the user).
    #[graphql(skip)]
    pub created_by: Option<Uuid>,
}

impl From<upload_job::Model> for UploadJob {
    fn from(j: upload_job::Model) -> Self {
        Self {
            id: ID(j.id.to_string()),
            kind: j.kind,
            filename: j.filename,
            status: j.status,
            dry_run: j.dry_run,
            total_rows: j.total_rows,
            processed_rows: j.processed_rows,
            succeeded_rows: j.succeeded_rows,
            failed_rows: j.failed_rows,
            error: j.error,
            cancel_requested: j.cancel_requested,
            size_bytes: j.content_bytes,
            sha256: j.content_sha256,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            uuid: j.id,
            created_by: j.created_by,
        }
    }
}

#[ComplexObject]
impl UploadJob {
    /// Refused rows in row order (default 100, at most 1000).
    async fn errors(
        &self,
        ctx: &Context<'_>,
        first: Option<i64>,
    ) -> async_graphql::Result<Vec<UploadRowError>> {
        let rows = uploads::errors(state(ctx)?.services.conn(), self.uuid, first)
            .await
            .map_err(gql)?;
        Ok(rows.into_iter().map(UploadRowError::from).collect())
    }

    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        load_user(ctx, self.created_by).await
    }
}

#[derive(Default)]
pub struct UploadsQuery;

#[Object]
impl UploadsQuery {
    #[graphql(guard = "RoleGuard(Role::Manager)")]
    async fn upload_job(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<UploadJob>> {
        let id = parse_id("id", &id).map_err(gql)?;
        match uploads::get(state(ctx)?.services.conn(), id).await {
            Ok(job) => Ok(Some(job.into())),
            Err(crate::error::AppError::NotFound(_)) => Ok(None),
            Err(e) => Err(gql(e)),
        }
    }

    /// Newest first.
    #[graphql(
        guard = "RoleGuard(Role::Manager)",
        complexity = "super::types::page_cost(first, child_complexity)"
    )]
    async fn upload_jobs(
        &self,
        ctx: &Context<'_>,
        first: Option<i64>,
        after: Option<String>,
        status: Option<UploadStatus>,
    ) -> async_graphql::Result<Conn<UploadJob>> {
        let page = connection_page(ctx, first, after)?;
        let rows = uploads::list(state(ctx)?.services.conn(), status, page)
            .await
            .map_err(gql)?;
        Ok(connection(rows, |j| j.id, UploadJob::from))
    }
}

#[derive(Default)]
pub struct UploadsMutation;

#[Object]
impl UploadsMutation {
    /// Queues a CSV or .xlsx file (GraphQL multipart request) and returns the
    /// QUEUED job at once; the same file while its job is queued or running
    /// returns that job. Audited as UPLOAD_CREATE.
    #[graphql(guard = "RoleGuard(Role::Manager)")]
    async fn create_upload_job(
        &self,
        ctx: &Context<'_>,
        kind: UploadKind,
        file: Upload,
        #[graphql(default_with = "Some(false)")] dry_run: Option<bool>,
    ) -> async_graphql::Result<UploadJob> {
        let actor = actor(ctx).map_err(gql)?;
        let value = file.value(ctx).map_err(|e| {
            gql(crate::error::AppError::bad_input(
                "file",
                format!("file: {e}"),
            ))
        })?;
        let state = state(ctx)?;
        let job = uploads::submit(
            &state.services,
            &actor,
            state.config.upload_max_bytes,
            NewUpload {
                kind,
                filename: Some(value.filename),
                dry_run: dry_run.unwrap_or(false),
                content: value.content.to_vec(),
            },
        )
        .await
        .map_err(gql)?;
        Ok(job.into())
    }

    /// A QUEUED job becomes CANCELLED; a PROCESSING one stops after the batch
    /// under way (what was applied stays, the counts say how much).
    #[graphql(guard = "RoleGuard(Role::Manager)")]
    async fn cancel_upload_job(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<UploadJob> {
        let id = parse_id("id", &id).map_err(gql)?;
        let actor = actor(ctx).map_err(gql)?;
        let job = uploads::cancel(&state(ctx)?.services, &actor, id)
            .await
            .map_err(gql)?;
        Ok(job.into())
    }
}
