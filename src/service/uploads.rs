//! Upload jobs: submitting a file, reading jobs and their row errors,
//! cancelling, and the queue figures. The worker that applies them is
//! `crate::uploads`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, Order,
    QueryFilter, QueryOrder, QuerySelect, Statement,
};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::context::{Services, Txn};
use super::{Actor, Page, PageRequest, paginate};
use crate::digest::sha256_hex;
use crate::entity::audit_log::{AuditAction, EntityType};
use crate::entity::upload_job::{self, UploadKind, UploadStatus};
use crate::entity::{upload_job_error, upload_job_file};
use crate::error::{AppError, AppResult, UPLOAD_ACTIVE_FILE_KEY, on_unique_violation};
use crate::events::DomainEvent;

pub const MAX_FILENAME: usize = 255;
/// Row errors returned by `UploadJob.errors` at most per request.
pub const MAX_ERRORS_PAGE: u64 = 1000;

/// A file to import.
pub struct NewUpload {
    pub kind: UploadKind,
    pub filename: Option<String>,
    pub dry_run: bool,
    pub content: Vec<u8>,
}

/// The last path component, trimmed and clipped; "upload" when there is none.
fn clean_filename(name: Option<&str>) -> String {
    let base = name
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>();
    let base = base.trim();
    if base.is_empty() {
        "upload".into()
    } else {
        base.chars().take(MAX_FILENAME).collect()
    }
}

/// The job already queued or running for this file, kind and mode.
async fn active_for(
    conn: &impl ConnectionTrait,
    sha: &str,
    kind: UploadKind,
    dry_run: bool,
) -> AppResult<Option<upload_job::Model>> {
    Ok(upload_job::Entity::find()
        .filter(upload_job::Column::ContentSha256.eq(sha))
        .filter(upload_job::Column::Kind.eq(kind))
        .filter(upload_job::Column::DryRun.eq(dry_run))
        .filter(upload_job::Column::Status.is_in([UploadStatus::Queued, UploadStatus::Processing]))
        .one(conn)
        .await?)
}

/// Queues a file (its bytes and SHA-256 stored with the job, so that any
/// instance's worker can take it), audited as UPLOAD_CREATE. The same file
/// sent again while its job is queued or running answers that job.
#[tracing::instrument(skip_all, fields(kind = ?input.kind, bytes = input.content.len()))]
pub async fn submit(
    db: &Services,
    actor: &Actor,
    max_bytes: usize,
    input: NewUpload,
) -> AppResult<upload_job::Model> {
    if input.content.is_empty() {
        return Err(AppError::bad_input("file", "the file is empty"));
    }
    if input.content.len() > max_bytes {
        return Err(AppError::PayloadTooLarge(format!(
            "the file is larger than UPLOAD_MAX_BYTES ({max_bytes} bytes)"
        )));
    }
    let sha = sha256_hex(&input.content);
    let result = async {
        let txn = db.begin_write().await?;
        if let Some(existing) = active_for(&*txn, &sha, input.kind, input.dry_run).await? {
            return Ok(existing);
        }
        let now = Utc::now();
        let job = upload_job::Model {
            id: Uuid::now_v7(),
            kind: input.kind,
            filename: clean_filename(input.filename.as_deref()),
            status: UploadStatus::Queued,
            dry_run: input.dry_run,
            content_sha256: sha.clone(),
            content_bytes: input.content.len() as i64,
            total_rows: None,
            processed_rows: 0,
            succeeded_rows: 0,
            failed_rows: 0,
            resume_row: 1,
            error: None,
            cancel_requested: false,
            lease_token: None,
            lease_until: None,
            attempts: 0,
            created_by: actor.user_id,
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
        };
        upload_job::Entity::insert(upload_job::ActiveModel::from(job.clone()))
            .exec_without_returning(&*txn)
            .await
            .map_err(|e| {
                on_unique_violation(
                    e,
                    &UPLOAD_ACTIVE_FILE_KEY,
                    AppError::conflict("this file is already queued"),
                )
            })?;
        upload_job_file::Entity::insert(upload_job_file::ActiveModel {
            job_id: Set(job.id),
            content: Set(input.content),
        })
        .exec_without_returning(&*txn)
        .await?;
        audit::record(
            &txn,
            actor,
            AuditEntry::new(AuditAction::UploadCreate, EntityType::UploadJob, job.id)
                .summary(format!(
                    "uploaded {} ({} bytes) as {}{}",
                    job.filename,
                    job.content_bytes,
                    job.kind.as_str(),
                    if job.dry_run { ", dry run" } else { "" }
                ))
                .changes(
                    None,
                    Some(serde_json::json!({
                        "kind": job.kind,
                        "filename": job.filename,
                        "bytes": job.content_bytes,
                        "sha256": job.content_sha256,
                        "dryRun": job.dry_run,
                    })),
                ),
        )
        .await?;
        txn.emit(DomainEvent::UploadJobChanged {
            job: Arc::new(job.clone()),
        });
        txn.commit().await?;
        Ok(job)
    }
    .await;
    match result {
        // Submitted twice at once on PostgreSQL: the other one won.
        Err(AppError::Conflict(_)) => active_for(db.conn(), &sha, input.kind, input.dry_run)
            .await?
            .ok_or_else(|| AppError::conflict("this file was submitted twice at once; retry")),
        other => other,
    }
}

pub async fn get(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<upload_job::Model> {
    upload_job::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or_else(|| AppError::not_found("upload job not found"))
}

/// Newest first.
pub async fn list(
    conn: &impl ConnectionTrait,
    status: Option<UploadStatus>,
    page: PageRequest,
) -> AppResult<Page<upload_job::Model>> {
    let mut query = upload_job::Entity::find();
    if let Some(status) = status {
        query = query.filter(upload_job::Column::Status.eq(status));
    }
    paginate(conn, query, upload_job::Column::Id, Order::Desc, page).await
}

/// A job's row errors in row order, at most `first`.
pub async fn errors(
    conn: &impl ConnectionTrait,
    job_id: Uuid,
    first: Option<i64>,
) -> AppResult<Vec<upload_job_error::Model>> {
    let first = match first {
        None => 100,
        Some(n) if (0..=MAX_ERRORS_PAGE as i64).contains(&n) => n as u64,
        Some(_) => {
            return Err(AppError::bad_input(
                "first",
                format!("first must be between 0 and {MAX_ERRORS_PAGE}"),
            ));
        }
    };
    Ok(upload_job_error::Entity::find()
        .filter(upload_job_error::Column::JobId.eq(job_id))
        .order_by_asc(upload_job_error::Column::Row)
        .order_by_asc(upload_job_error::Column::Id)
        .limit(first)
        .all(conn)
        .await?)
}

/// Finishes a job on the caller's transaction: its status, the audit row
/// (UPLOAD_FINISH) and the event; the caller adds the alert.
pub async fn finish_in(
    txn: &Txn,
    actor: &Actor,
    job: &upload_job::Model,
    status: UploadStatus,
    error: Option<String>,
    summary: String,
) -> AppResult<upload_job::Model> {
    let now = Utc::now();
    let mut done = job.clone();
    done.status = status;
    done.error = error;
    done.finished_at = Some(now);
    done.updated_at = now;
    done.lease_token = None;
    done.lease_until = None;
    // Every column written: `from` alone marks none as changed.
    let active = upload_job::ActiveModel::from(done.clone()).reset_all();
    upload_job::Entity::update(active).exec(&**txn).await?;
    audit::record(
        txn,
        actor,
        AuditEntry::new(AuditAction::UploadFinish, EntityType::UploadJob, done.id)
            .summary(summary)
            .changes(
                Some(serde_json::json!({ "status": job.status })),
                Some(serde_json::json!({
                    "status": done.status,
                    "totalRows": done.total_rows,
                    "processedRows": done.processed_rows,
                    "succeededRows": done.succeeded_rows,
                    "failedRows": done.failed_rows,
                    "error": done.error,
                    "dryRun": done.dry_run,
                })),
            ),
    )
    .await?;
    txn.emit(DomainEvent::UploadJobChanged {
        job: Arc::new(done.clone()),
    });
    Ok(done)
}

/// A QUEUED job is CANCELLED at once; a PROCESSING one is marked and its
/// worker stops after the batch under way (what was applied stays). A
/// finished job is a CONFLICT.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn cancel(db: &Services, actor: &Actor, id: Uuid) -> AppResult<upload_job::Model> {
    let txn = db.begin_write().await?;
    let job = upload_job::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&*txn)
        .await?
        .ok_or_else(|| AppError::not_found("upload job not found"))?;
    let job = match job.status {
        UploadStatus::Queued => {
            let who = actor.name.as_deref().unwrap_or("system");
            finish_in(
                &txn,
                actor,
                &job,
                UploadStatus::Cancelled,
                None,
                format!(
                    "upload {} cancelled by {who} before it started",
                    job.filename
                ),
            )
            .await?
        }
        UploadStatus::Processing if job.cancel_requested => job,
        UploadStatus::Processing => {
            let mut marked = job.clone();
            marked.cancel_requested = true;
            marked.updated_at = Utc::now();
            upload_job::Entity::update_many()
                .col_expr(
                    upload_job::Column::CancelRequested,
                    sea_orm::sea_query::Expr::value(true),
                )
                .filter(upload_job::Column::Id.eq(id))
                .exec(&*txn)
                .await?;
            audit::record(
                &txn,
                actor,
                AuditEntry::new(AuditAction::Update, EntityType::UploadJob, id)
                    .summary(format!(
                        "cancel of upload {} requested after {} rows",
                        job.filename, job.processed_rows
                    ))
                    .changes(
                        Some(serde_json::json!({ "cancelRequested": false })),
                        Some(serde_json::json!({ "cancelRequested": true })),
                    ),
            )
            .await?;
            txn.emit(DomainEvent::UploadJobChanged {
                job: Arc::new(marked.clone()),
            });
            marked
        }
        finished => {
            return Err(AppError::conflict(format!(
                "the upload job is already {finished:?}"
            )));
        }
    };
    txn.commit().await?;
    Ok(job)
}

/// The upload queue, for health and monitoring.
#[derive(Clone, Debug, Default)]
pub struct UploadQueueFigures {
    pub queued: u64,
    pub processing: u64,
    /// Age of the oldest QUEUED job.
    pub oldest_queued_seconds: Option<i64>,
    /// QUEUED jobs waiting longer than the alert threshold.
    pub queued_past_threshold: u64,
}

pub async fn queue_figures(
    conn: &impl ConnectionTrait,
    threshold: std::time::Duration,
) -> AppResult<UploadQueueFigures> {
    let cutoff = Utc::now() - chrono::Duration::from_std(threshold).unwrap_or_default();
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT status, COUNT(*) AS n, MIN(created_at) AS oldest, \
             SUM(CASE WHEN created_at <= $1 THEN 1 ELSE 0 END) AS stale \
             FROM upload_jobs WHERE status IN ('QUEUED', 'PROCESSING') GROUP BY status",
            [cutoff.into()],
        ))
        .await?;
    let mut f = UploadQueueFigures::default();
    for row in rows {
        let status: String = row.try_get("", "status")?;
        let n = u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0);
        if status == "QUEUED" {
            let oldest: DateTime<Utc> = row.try_get("", "oldest")?;
            f.queued = n;
            f.oldest_queued_seconds = Some((Utc::now() - oldest).num_seconds().max(0));
            f.queued_past_threshold = u64::try_from(row.try_get::<i64>("", "stale")?).unwrap_or(0);
        } else {
            f.processing = n;
        }
    }
    Ok(f)
}

/// Drops the files of jobs finished more than `retention` ago; their jobs
/// and row errors stay. Returns how many files were dropped.
pub async fn purge_files(db: &Services, retention: std::time::Duration) -> AppResult<u64> {
    let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
    let txn = db.begin_write().await?;
    let result = txn
        .execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "DELETE FROM upload_job_files WHERE job_id IN ( \
               SELECT id FROM upload_jobs WHERE finished_at IS NOT NULL AND finished_at < $1)",
            [cutoff.into()],
        ))
        .await?;
    txn.commit().await?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_their_path_and_control_characters() {
        assert_eq!(clean_filename(Some("C:\\stock\\april.csv")), "april.csv");
        assert_eq!(clean_filename(Some("../../etc/x.csv")), "x.csv");
        assert_eq!(clean_filename(Some("  a\u{0}b.csv ")), "ab.csv");
        assert_eq!(clean_filename(None), "upload");
        assert_eq!(clean_filename(Some("dir/")), "upload");
    }
}
