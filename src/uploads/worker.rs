//! The upload worker: claims jobs with a lease and applies their rows in
//! batches.
//!
//! A job is claimed in a short transaction (QUEUED, or PROCESSING whose
//! lease expired; `FOR UPDATE SKIP LOCKED` on PostgreSQL, so two instances
//! never take the same job). Its file is read twice off the async runtime:
//! once to check the header and count the rows (a bad file FAILS before
//! anything is applied), then streamed in batches of `UPLOAD_BATCH_SIZE`.
//! Each batch is one transaction that first renews the lease (and stops if
//! it is no longer ours, or if a cancel was asked for), locks the batch's
//! products (PostgreSQL, in SKU order), applies the rows through the same
//! services as the mutations, records the row errors and moves the job's
//! counters and resume point. PRODUCTS rows go one by one through
//! `products::create_in` / `update_in`, each inside a savepoint (a refused
//! row does not spoil the batch); STOCK_MOVEMENTS rows go together through
//! `stock::apply_locked` (the same balance rule, ledger rows, audit rows,
//! events and alerts as `recordStockMovement`, written with one UPDATE and
//! multi-row INSERTs). A crash therefore resumes at the first unfinished
//! batch and applies no row twice.
//!
//! A dry run validates every row against the database and a running
//! simulation of the rows before it, and writes only its counters and row
//! errors.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use futures_util::FutureExt;
use sea_orm::sea_query::{LockBehavior, LockType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, Value,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::format::{self, FileError, RawRow, RowVisitor};
use super::rows::{
    MovementRow, ProductRow, Row, RowData, RowError, RowTyper, Scan, column_of_field,
};
use crate::config::Config;
use crate::entity::alert::AlertKind;
use crate::entity::upload_job::{self, UploadKind, UploadStatus};
use crate::entity::{product, upload_job_error, upload_job_file, user};
use crate::error::{AppError, AppResult, is_transient};
use crate::events::DomainEvent;
use crate::service::alerts::{self, escape_html};
use crate::service::context::{Services, Txn};
use crate::service::products::{self, NewProduct, ProductPatch};
use crate::service::stock::{self, MovementInput};
use crate::service::uploads::finish_in;
use crate::service::{Actor, RequestMeta};

/// Claims of one job before it is given up (the worker died each time).
const MAX_CLAIMS: i32 = 5;
/// Runs of a batch the database rolled back (a deadlock, a serialization
/// failure) before the job is left for a later claim.
const MAX_BATCH_RETRIES: u32 = 5;
/// How often finished jobs' files are looked at for purging.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug)]
pub struct Policy {
    pub batch_size: usize,
    pub max_rows: u32,
    pub lease: Duration,
    pub poll: Duration,
    pub retention: Duration,
}

impl Policy {
    pub fn from_config(config: &Config) -> Self {
        Self {
            batch_size: config.upload_batch_size,
            max_rows: config.upload_max_rows,
            lease: config.upload_lease,
            poll: config.upload_poll,
            retention: config.upload_retention,
        }
    }
}

pub struct UploadWorker {
    db: Services,
    policy: Policy,
    stop: CancellationToken,
    last_purge: Mutex<Option<Instant>>,
}

/// How a batch ended.
enum Step {
    Applied,
    /// The lease went to another worker, or the job was cancelled: stop.
    Stopped,
}

/// A product as the worker knows it: from the database, or (in a dry run)
/// as the rows before this one would have left it.
#[derive(Clone, Debug)]
struct Known {
    id: Uuid,
    stock: i64,
    archived: bool,
}

/// Products by lowercased SKU; `None` when no product has that SKU.
#[derive(Default)]
struct Catalogue {
    known: HashMap<String, Option<Known>>,
}

impl Catalogue {
    /// Looks up the SKUs not known yet, in one query per 500, and returns
    /// the products found. With `lock` (a real run on PostgreSQL) their rows
    /// are locked in SKU order, so that two batches touching the same
    /// products queue instead of deadlocking.
    async fn load<'a>(
        &mut self,
        conn: &impl ConnectionTrait,
        skus: impl Iterator<Item = &'a str>,
        lock: bool,
    ) -> AppResult<Vec<product::Model>> {
        let mut wanted: Vec<String> = skus
            .map(str::to_ascii_lowercase)
            .filter(|s| !self.known.contains_key(s))
            .collect();
        wanted.sort();
        wanted.dedup();
        let mut found = Vec::new();
        for chunk in wanted.chunks(500) {
            let values = chunk.iter().map(|s| Value::from(s.clone())).collect();
            let rows = products::select_in(conn, "lower(sku)", values, lock).await?;
            for sku in chunk {
                self.known.insert(sku.clone(), None);
            }
            for p in rows {
                self.known.insert(
                    p.sku.to_ascii_lowercase(),
                    Some(Known {
                        id: p.id,
                        stock: i64::from(p.stock),
                        archived: p.archived_at.is_some(),
                    }),
                );
                found.push(p);
            }
        }
        Ok(found)
    }

    fn get(&self, sku: &str) -> Option<Known> {
        self.known.get(&sku.to_ascii_lowercase()).cloned().flatten()
    }

    fn set(&mut self, sku: &str, known: Known) {
        self.known.insert(sku.to_ascii_lowercase(), Some(known));
    }
}

/// A row's failure: the row is refused, or the batch cannot go on.
fn row_error(err: AppError) -> Result<RowError, AppError> {
    Ok(match err {
        AppError::BadInput { field, message } => RowError {
            column: Some(column_of_field(&field)),
            message,
        },
        e @ AppError::InsufficientStock { .. } => RowError::new(Some("quantity"), e.to_string()),
        AppError::NotFound(m) | AppError::Conflict(m) => RowError::new(Some("sku"), m),
        other => return Err(other),
    })
}

/// A row's outcome: Ok, refused (`Ok(Err(..))`), or an error that fails the
/// batch.
fn settle(outcome: AppResult<()>) -> Result<Result<(), RowError>, AppError> {
    match outcome {
        Ok(()) => Ok(Ok(())),
        Err(e) => row_error(e).map(Err),
    }
}

fn archived(sku: &str) -> AppError {
    AppError::NotFound(format!("product {sku} is archived"))
}

/// Reads rows from `resume` on into batches for the worker, typing every row
/// of the file (those before `resume` too, so that a repeated SKU is caught
/// across a resume).
struct Producer {
    kind: upload_job::UploadKind,
    typer: Option<RowTyper>,
    resume: u32,
    batch_size: usize,
    batch: Vec<Row>,
    tx: mpsc::Sender<Vec<Row>>,
}

impl RowVisitor for Producer {
    fn header(&mut self, columns: &[String]) -> Result<(), FileError> {
        self.typer = Some(RowTyper::new(self.kind, columns)?);
        Ok(())
    }

    fn row(&mut self, raw: RawRow) -> Result<bool, FileError> {
        let Some(typer) = self.typer.as_mut() else {
            return Err(FileError::new("a row came before the header"));
        };
        let row = typer.type_row(&raw);
        if raw.number < self.resume {
            return Ok(true);
        }
        self.batch.push(row);
        if self.batch.len() >= self.batch_size {
            let full = std::mem::take(&mut self.batch);
            // The worker stopped listening: stop reading.
            return Ok(self.tx.blocking_send(full).is_ok());
        }
        Ok(true)
    }
}

impl UploadWorker {
    pub fn new(config: &Config, db: Services, stop: CancellationToken) -> Self {
        Self::with_policy(Policy::from_config(config), db, stop)
    }

    pub fn with_policy(policy: Policy, db: Services, stop: CancellationToken) -> Self {
        Self {
            db,
            policy,
            stop,
            last_purge: Mutex::new(None),
        }
    }

    /// Runs until the application stops: takes jobs while there are any,
    /// wakes when one is queued (on any instance) and at least every
    /// `UPLOAD_POLL_SECONDS`.
    pub async fn run(self: Arc<Self>) {
        let mut events = self.db.bus().subscribe();
        loop {
            self.purge_if_due().await;
            loop {
                if self.stop.is_cancelled() {
                    return;
                }
                match AssertUnwindSafe(self.run_once()).catch_unwind().await {
                    Ok(Ok(Some(_))) => continue,
                    Ok(Ok(None)) => break,
                    Ok(Err(err)) => {
                        tracing::error!(error = %err, "upload worker: a job step failed");
                        break;
                    }
                    Err(_) => {
                        tracing::error!("upload worker: a job panicked; its lease will expire");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(self.policy.poll) => {}
                _ = job_queued(&mut events) => {}
            }
        }
    }

    async fn purge_if_due(&self) {
        let due = match self.last_purge.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= PURGE_EVERY);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if due {
            match crate::service::uploads::purge_files(&self.db, self.policy.retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "upload worker: dropped files past retention"),
                Err(err) => tracing::warn!(error = %err, "upload worker: purging files failed"),
            }
        }
    }

    /// Claims one job and takes it as far as it goes (to its end, a cancel,
    /// the loss of its lease, or the application's stop). Returns the job's
    /// id, or None when nothing was waiting.
    pub async fn run_once(&self) -> AppResult<Option<Uuid>> {
        let Some((job, token)) = self.claim().await? else {
            return Ok(None);
        };
        let id = job.id;
        let actor = self.actor_for(&job).await?;
        self.process(job, token, &actor).await?;
        Ok(Some(id))
    }

    /// The uploader, as the actor of every row (the worker as its agent).
    async fn actor_for(&self, job: &upload_job::Model) -> AppResult<Actor> {
        let name = match job.created_by {
            Some(id) => user::Entity::find_by_id(id)
                .one(self.db.conn())
                .await?
                .map(|u| u.email),
            None => None,
        };
        Ok(Actor {
            user_id: job.created_by,
            name,
            meta: RequestMeta {
                request_id: Some(format!("upload-{}", job.id)),
                ip: None,
                user_agent: Some("stockroom upload worker".into()),
            },
        })
    }

    /// Marks the oldest waiting job PROCESSING under a new lease.
    async fn claim(&self) -> AppResult<Option<(upload_job::Model, Uuid)>> {
        let now = Utc::now().trunc_subsecs(3);
        let txn = self.db.begin_write().await?;
        let mut query = upload_job::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(upload_job::Column::Status.eq(UploadStatus::Queued))
                    .add(
                        sea_orm::Condition::all()
                            .add(upload_job::Column::Status.eq(UploadStatus::Processing))
                            .add(upload_job::Column::LeaseUntil.lte(now)),
                    ),
            )
            .order_by_asc(upload_job::Column::CreatedAt)
            .limit(1);
        if self.db.backend() == DbBackend::Postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let Some(mut job) = query.one(&*txn).await? else {
            return Ok(None);
        };
        if job.attempts >= MAX_CLAIMS {
            let actor = self.actor_for(&job).await?;
            let message = format!(
                "gave up after {MAX_CLAIMS} attempts: the worker stopped each time (see the server log)"
            );
            finish_in(
                &txn,
                &actor,
                &job,
                UploadStatus::Failed,
                Some(message.clone()),
                format!("upload {} failed: {message}", job.filename),
            )
            .await?;
            txn.commit().await?;
            return Ok(None);
        }
        let token = Uuid::new_v4();
        if job.dry_run && job.processed_rows > 0 {
            // A dry run keeps its simulation in memory: start it again.
            upload_job_error::Entity::delete_many()
                .filter(upload_job_error::Column::JobId.eq(job.id))
                .exec(&*txn)
                .await?;
            job.processed_rows = 0;
            job.succeeded_rows = 0;
            job.failed_rows = 0;
            job.resume_row = 1;
        }
        job.status = UploadStatus::Processing;
        job.lease_token = Some(token);
        job.lease_until =
            Some(now + chrono::Duration::from_std(self.policy.lease).unwrap_or_default());
        job.attempts += 1;
        job.started_at = job.started_at.or(Some(now));
        job.updated_at = now;
        // Every column written: `from` alone marks none as changed.
        let active = upload_job::ActiveModel::from(job.clone()).reset_all();
        upload_job::Entity::update(active).exec(&*txn).await?;
        txn.emit(DomainEvent::UploadJobChanged {
            job: Arc::new(job.clone()),
        });
        txn.commit().await?;
        tracing::info!(job_id = %job.id, attempt = job.attempts, resume_row = job.resume_row, "upload job claimed");
        Ok(Some((job, token)))
    }

    async fn process(
        &self,
        mut job: upload_job::Model,
        token: Uuid,
        actor: &Actor,
    ) -> AppResult<()> {
        let file = upload_job_file::Entity::find_by_id(job.id)
            .one(self.db.conn())
            .await?;
        let Some(file) = file else {
            return self
                .finish(
                    &job,
                    token,
                    actor,
                    Err("the file of this job is no longer stored".into()),
                )
                .await;
        };
        let bytes = Arc::new(file.content);

        // The whole file first: its format, header and row count.
        let (kind, max_rows) = (job.kind, self.policy.max_rows);
        let scanned = {
            let bytes = Arc::clone(&bytes);
            tokio::task::spawn_blocking(move || {
                let mut scan = Scan {
                    kind,
                    max_rows,
                    rows: 0,
                };
                format::read(&bytes, &mut scan).map(|_| scan.rows)
            })
            .await
            .map_err(|e| AppError::internal(anyhow::anyhow!("reading the upload failed: {e}")))?
        };
        let total = match scanned {
            Ok(total) => total,
            Err(FileError(message)) => return self.finish(&job, token, actor, Err(message)).await,
        };
        job.total_rows = Some(total as i32);

        // Then the rows from the resume point, a batch at a time.
        let (tx, mut rx) = mpsc::channel::<Vec<Row>>(2);
        let mut producer = Producer {
            kind,
            typer: None,
            resume: job.resume_row.max(1) as u32,
            batch_size: self.policy.batch_size,
            batch: Vec::new(),
            tx,
        };
        let reader = tokio::task::spawn_blocking(move || {
            let result = format::read(&bytes, &mut producer);
            let rest = std::mem::take(&mut producer.batch);
            if result.is_ok() && !rest.is_empty() {
                let _ = producer.tx.blocking_send(rest);
            }
            result
        });
        let mut catalogue = Catalogue::default();
        let mut first = true;
        let mut statistics = Statistics::new(job.succeeded_rows);
        while let Some(batch) = rx.recv().await {
            if self.stop.is_cancelled() {
                drop(rx);
                return self.release(&job, token).await;
            }
            let mut retries = 0;
            let step = loop {
                match self
                    .apply_batch(&mut job, token, actor, &batch, &mut catalogue)
                    .await
                {
                    // Rolled back whole: run it again. (A dry run's simulation
                    // moved on, so it is left to a later claim, which starts
                    // it over.)
                    Err(e) if is_transient(&e) && !job.dry_run && retries < MAX_BATCH_RETRIES => {
                        retries += 1;
                        crate::metrics::transaction_retry(crate::error::transient_reason(&e));
                        tracing::warn!(job_id = %job.id, retries, error = %e, "upload batch rolled back; retrying");
                        tokio::time::sleep(Duration::from_millis(20 * retries as u64)).await;
                    }
                    other => break other?,
                }
            };
            match step {
                Step::Applied => first = false,
                Step::Stopped => return Ok(()),
            }
            // Only the catalogue: it is what the batches' look-ups read. A
            // movement import grows the ledger, which its statements only
            // insert into (its ANALYZEs cost 5 % of the import for nothing);
            // the ledger is analyzed at the end.
            if job.kind == UploadKind::Products
                && !job.dry_run
                && statistics.due(job.succeeded_rows)
            {
                self.analyze("products").await;
            }
        }
        let read = reader
            .await
            .map_err(|e| AppError::internal(anyhow::anyhow!("reading the upload failed: {e}")))?;
        if let Err(FileError(message)) = read {
            return self.finish(&job, token, actor, Err(message)).await;
        }
        if self.stop.is_cancelled() && first && total > 0 {
            return self.release(&job, token).await;
        }
        self.finish(&job, token, actor, Ok(())).await
    }

    /// Renews the lease inside `txn`; None when it is no longer ours, else
    /// whether a cancel was asked for.
    async fn hold(
        &self,
        txn: &Txn,
        job: &upload_job::Model,
        token: Uuid,
    ) -> AppResult<Option<bool>> {
        let now = Utc::now().trunc_subsecs(3);
        let until = now + chrono::Duration::from_std(self.policy.lease).unwrap_or_default();
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                txn.get_database_backend(),
                "UPDATE upload_jobs SET lease_until = $1, updated_at = $2 \
                 WHERE id = $3 AND lease_token = $4 AND status = 'PROCESSING' \
                 RETURNING cancel_requested",
                [until.into(), now.into(), job.id.into(), token.into()],
            ))
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<bool>("", "cancel_requested")?),
            None => None,
        })
    }

    async fn apply_batch(
        &self,
        job: &mut upload_job::Model,
        token: Uuid,
        actor: &Actor,
        rows: &[Row],
        catalogue: &mut Catalogue,
    ) -> AppResult<Step> {
        let txn = self.db.begin_write().await?;
        match self.hold(&txn, job, token).await? {
            None => {
                tracing::warn!(job_id = %job.id, "upload worker: lost the job's lease; stopping");
                return Ok(Step::Stopped);
            }
            Some(true) => {
                finish_in(
                    &txn,
                    actor,
                    job,
                    UploadStatus::Cancelled,
                    None,
                    format!(
                        "upload {} cancelled after {} of {} rows",
                        job.filename,
                        job.processed_rows,
                        job.total_rows.unwrap_or_default()
                    ),
                )
                .await?;
                txn.commit().await?;
                return Ok(Step::Stopped);
            }
            Some(false) => {}
        }
        if !job.dry_run {
            // Fresh for every batch: only the database decides a real run.
            *catalogue = Catalogue::default();
        }
        let lock = !job.dry_run && self.db.backend() == DbBackend::Postgres;
        let found = catalogue
            .load(
                &*txn,
                rows.iter()
                    .filter_map(|r| r.data.as_ref().ok().map(RowData::sku)),
                lock,
            )
            .await?;
        // Per row: applied, or refused with why; an error that is not the
        // row's fails the batch.
        let mut outcomes: Vec<(u32, Result<(), RowError>)> = Vec::with_capacity(rows.len());
        let mut movements = Vec::new();
        let mut creating = Creating::default();
        for row in rows {
            let outcome = match &row.data {
                Err(e) => Err(e.clone()),
                Ok(data) if job.dry_run => settle(simulate(data, catalogue))?,
                Ok(RowData::Movement(m)) => {
                    // Applied together below.
                    match live(catalogue, &m.sku)
                        .and_then(|known| stock::validate(&movement_input(known.id, m)))
                    {
                        Ok(valid) => {
                            movements.push((outcomes.len(), valid));
                            Ok(())
                        }
                        Err(e) => Err(row_error(e)?),
                    }
                }
                Ok(RowData::Product(p))
                    if catalogue.get(&p.sku).is_none() && !creating.contains(&p.sku) =>
                {
                    // Created together with the other new SKUs around it.
                    match new_product(p).and_then(|n| products::validate_new(&n)) {
                        Ok(valid) => {
                            creating.insert(&p.sku, outcomes.len(), valid);
                            Ok(())
                        }
                        Err(e) => Err(row_error(e)?),
                    }
                }
                Ok(RowData::Product(p)) => {
                    // An existing product, or one created earlier in this
                    // batch: the creations before it go first.
                    creating
                        .flush(&txn, actor, catalogue, &mut outcomes)
                        .await?;
                    let point = txn.savepoint().await?;
                    let applied = apply_product(&txn, actor, p, catalogue).await;
                    match applied {
                        Ok(()) => txn.release(point).await?,
                        Err(_) => txn.rollback_to(point).await?,
                    }
                    settle(applied)?
                }
            };
            outcomes.push((row.number, outcome));
        }
        creating
            .flush(&txn, actor, catalogue, &mut outcomes)
            .await?;
        if !movements.is_empty() {
            let mut products: HashMap<Uuid, product::Model> =
                found.into_iter().map(|p| (p.id, p)).collect();
            let valid: Vec<_> = movements.iter().map(|(_, v)| (actor, v)).collect();
            let results = stock::apply_locked(&txn, &mut products, &valid).await?;
            for ((slot, _), result) in movements.iter().zip(results) {
                outcomes[*slot].1 = settle(result.map(drop))?;
            }
        }
        let errors: Vec<(u32, RowError)> = outcomes
            .iter()
            .filter_map(|(n, o)| o.as_ref().err().map(|e| (*n, e.clone())))
            .collect();
        let succeeded = (outcomes.len() - errors.len()) as i32;
        let count = outcomes.len();
        let last = rows.last().map(|r| r.number).unwrap_or_default();
        if !errors.is_empty() {
            let models = errors.iter().map(|(n, e)| upload_job_error::ActiveModel {
                id: sea_orm::ActiveValue::Set(Uuid::now_v7()),
                job_id: sea_orm::ActiveValue::Set(job.id),
                row: sea_orm::ActiveValue::Set(*n as i32),
                column_name: sea_orm::ActiveValue::Set(e.column.clone()),
                message: sea_orm::ActiveValue::Set(e.message.chars().take(1000).collect()),
            });
            upload_job_error::Entity::insert_many(models)
                .exec_without_returning(&*txn)
                .await?;
        }
        // The job moves on only if this commits.
        let mut next = job.clone();
        next.processed_rows += count as i32;
        next.succeeded_rows += succeeded;
        next.failed_rows += errors.len() as i32;
        next.resume_row = last as i32 + 1;
        next.updated_at = Utc::now();
        let job_now = &next;
        txn.execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE upload_jobs SET total_rows = $1, processed_rows = $2, succeeded_rows = $3, \
             failed_rows = $4, resume_row = $5, updated_at = $6 WHERE id = $7",
            [
                job_now.total_rows.into(),
                job_now.processed_rows.into(),
                job_now.succeeded_rows.into(),
                job_now.failed_rows.into(),
                job_now.resume_row.into(),
                job_now.updated_at.into(),
                job_now.id.into(),
            ],
        ))
        .await?;
        txn.emit(DomainEvent::UploadJobChanged {
            job: Arc::new(next.clone()),
        });
        txn.commit().await?;
        if !job.dry_run {
            crate::metrics::upload_rows(succeeded.max(0) as u64, errors.len() as u64);
        }
        *job = next;
        Ok(Step::Applied)
    }

    /// COMPLETED (`Ok`) or FAILED with a file-level message, audited, with an
    /// UPLOAD_FINISHED alert for a real run; only if the lease is still ours.
    async fn finish(
        &self,
        job: &upload_job::Model,
        token: Uuid,
        actor: &Actor,
        outcome: Result<(), String>,
    ) -> AppResult<()> {
        let txn = self.db.begin_write().await?;
        // A cancel that came after the last batch changes nothing: the work
        // is done.
        if self.hold(&txn, job, token).await?.is_none() {
            return Ok(());
        }
        let name = escape_html(&job.filename);
        let who = escape_html(actor.name.as_deref().unwrap_or("system"));
        let (status, error, summary, message) = match outcome {
            Ok(()) => {
                let verb = if job.dry_run {
                    "would apply"
                } else {
                    "applied"
                };
                let summary = format!(
                    "{}upload {} finished: {} of {} rows {verb}, {} refused",
                    if job.dry_run { "dry run of " } else { "" },
                    job.filename,
                    job.succeeded_rows,
                    job.processed_rows,
                    job.failed_rows
                );
                let message = format!(
                    "📥 Upload <b>{name}</b> ({}) by {who} finished: {} rows applied, {} refused",
                    job.kind.as_str(),
                    job.succeeded_rows,
                    job.failed_rows
                );
                (UploadStatus::Completed, None, summary, message)
            }
            Err(error) => {
                let summary = format!("upload {} failed: {error}", job.filename);
                let message = format!(
                    "❌ Upload <b>{name}</b> ({}) by {who} failed: {}",
                    job.kind.as_str(),
                    escape_html(&error)
                );
                (UploadStatus::Failed, Some(error), summary, message)
            }
        };
        let done = finish_in(&txn, actor, job, status, error, summary).await?;
        if !job.dry_run {
            alerts::enqueue(
                &txn,
                AlertKind::UploadFinished,
                message,
                Some(format!("upload:{}", job.id)),
            )
            .await?;
        }
        txn.commit().await?;
        tracing::info!(
            job_id = %done.id,
            status = ?done.status,
            rows = done.processed_rows,
            failed = done.failed_rows,
            "upload job finished"
        );
        if !job.dry_run && i64::from(done.succeeded_rows) >= ANALYZE_AFTER_ROWS {
            self.analyze("products, stock_movements").await;
        }
        Ok(())
    }

    /// PostgreSQL: fresh planner statistics for the tables a large import
    /// changed. Autovacuum gets there too, but only after 10 % of a table
    /// changed and its next round; until then a catalogue that grew from
    /// nothing to 100,000 rows is planned as if empty, and the console's
    /// pages by cursor took 24 to 35 ms instead of 1 (`benches/console.sh`).
    /// The catalogue's also run while a PRODUCTS import grows it ([`Statistics`]).
    /// A failure is only logged: it changes no data.
    async fn analyze(&self, tables: &str) {
        let conn = self.db.conn();
        if conn.get_database_backend() != sea_orm::DbBackend::Postgres {
            return;
        }
        let started = Instant::now();
        match conn.execute_unprepared(&format!("ANALYZE {tables}")).await {
            Ok(_) => tracing::info!(
                tables,
                ms = started.elapsed().as_millis() as u64,
                "statistics refreshed after an import"
            ),
            Err(e) => tracing::warn!(tables, error = %e, "ANALYZE after an import failed"),
        }
    }

    /// Gives the job back at shutdown: its lease ends now, so the next start
    /// (or another instance) resumes it without waiting, and this claim does
    /// not count as an attempt.
    async fn release(&self, job: &upload_job::Model, token: Uuid) -> AppResult<()> {
        let txn = self.db.begin_write().await?;
        txn.execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE upload_jobs SET lease_until = $1, attempts = attempts - 1 \
             WHERE id = $2 AND lease_token = $3 AND status = 'PROCESSING'",
            [Utc::now().into(), job.id.into(), token.into()],
        ))
        .await?;
        txn.commit().await?;
        tracing::info!(job_id = %job.id, resume_row = job.resume_row, "upload job released at shutdown");
        Ok(())
    }
}

/// Rows an import applies before the tables' statistics are refreshed.
const ANALYZE_AFTER_ROWS: i64 = 1000;

/// When to refresh the statistics of the catalogue a PRODUCTS import is
/// growing: after [`ANALYZE_AFTER_ROWS`] applied rows, then each time the job's applied
/// rows double. A statement the import repeats (the products looked up by
/// SKU) is planned from them; planned while the catalogue was small, it
/// kept scanning the whole table as it grew (on PostgreSQL, the look-up of
/// a batch of 500 SKUs took 0.3 ms at the start of a 20,000-product import
/// and 5 ms at its end, against under 1 ms by index). Doubling keeps the
/// statistics within half of the table's growth at a cost of a few
/// ANALYZEs per import.
struct Statistics {
    next: i64,
}

impl Statistics {
    /// For a job that has applied `applied` rows already (a resumed one).
    fn new(applied: i32) -> Self {
        Self {
            next: (2 * i64::from(applied)).max(ANALYZE_AFTER_ROWS),
        }
    }

    /// Whether `applied` rows call for a refresh now; moves the next one on.
    fn due(&mut self, applied: i32) -> bool {
        let applied = i64::from(applied);
        if applied < self.next {
            return false;
        }
        self.next = 2 * applied;
        true
    }
}

/// New products of a batch waiting to be created together
/// ([`products::create_all`]): a run of rows with SKUs the catalogue does
/// not know, each SKU once.
#[derive(Default)]
struct Creating {
    skus: std::collections::HashSet<String>,
    /// Each row's slot in the batch's outcomes, and the product.
    rows: Vec<(usize, products::ValidNewProduct)>,
}

impl Creating {
    fn contains(&self, sku: &str) -> bool {
        self.skus.contains(&sku.to_ascii_lowercase())
    }

    fn insert(&mut self, sku: &str, slot: usize, valid: products::ValidNewProduct) {
        self.skus.insert(sku.to_ascii_lowercase());
        self.rows.push((slot, valid));
    }

    /// Creates the waiting products and settles their rows' outcomes.
    async fn flush(
        &mut self,
        txn: &Txn,
        actor: &Actor,
        catalogue: &mut Catalogue,
        outcomes: &mut [(u32, Result<(), RowError>)],
    ) -> AppResult<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let (slots, valid): (Vec<usize>, Vec<products::ValidNewProduct>) =
            std::mem::take(&mut self.rows).into_iter().unzip();
        self.skus.clear();
        let results = products::create_all(txn, actor, &valid).await?;
        for (slot, result) in slots.into_iter().zip(results) {
            let result = result.map(|created| {
                catalogue.set(
                    &created.sku,
                    Known {
                        id: created.id,
                        stock: i64::from(created.stock),
                        archived: false,
                    },
                );
            });
            outcomes[slot].1 = settle(result)?;
        }
        Ok(())
    }
}

/// Applies one PRODUCTS row through the product service, on the batch's
/// transaction (inside a savepoint: a refused row leaves nothing).
async fn apply_product(
    txn: &Txn,
    actor: &Actor,
    p: &ProductRow,
    catalogue: &mut Catalogue,
) -> AppResult<()> {
    match catalogue.get(&p.sku) {
        Some(k) if k.archived => Err(archived(&p.sku)),
        Some(k) => {
            let Some(patch) = patch_of(p)? else {
                return Ok(());
            };
            products::update_in(txn, actor, k.id, &patch, None).await?;
            Ok(())
        }
        None => {
            let valid = products::validate_new(&new_product(p)?)?;
            let created = products::create_in(txn, actor, &valid).await?;
            catalogue.set(
                &p.sku,
                Known {
                    id: created.id,
                    stock: i64::from(created.stock),
                    archived: false,
                },
            );
            Ok(())
        }
    }
}

/// What a real run would do with the row (`apply_product`,
/// `stock::apply_locked`), against the catalogue as the rows before this one
/// would have left it; writes nothing.
fn simulate(data: &RowData, catalogue: &mut Catalogue) -> AppResult<()> {
    match data {
        RowData::Product(p) => match catalogue.get(&p.sku) {
            Some(k) if k.archived => Err(archived(&p.sku)),
            Some(_) => patch_of(p).map(drop),
            None => {
                let valid = products::validate_new(&new_product(p)?)?;
                catalogue.set(
                    &p.sku,
                    Known {
                        id: Uuid::nil(),
                        stock: valid.initial_stock.unwrap_or(0),
                        archived: false,
                    },
                );
                Ok(())
            }
        },
        RowData::Movement(m) => {
            let known = live(catalogue, &m.sku)?;
            let valid = stock::validate(&movement_input(known.id, m))?;
            stock::check_balance(known.stock, valid.delta)?;
            catalogue.set(
                &m.sku,
                Known {
                    stock: known.stock + valid.delta,
                    ..known
                },
            );
            Ok(())
        }
    }
}

fn live(catalogue: &Catalogue, sku: &str) -> AppResult<Known> {
    match catalogue.get(sku) {
        None => Err(AppError::NotFound(format!("unknown SKU {sku}"))),
        Some(k) if k.archived => Err(archived(sku)),
        Some(k) => Ok(k),
    }
}

fn movement_input(product_id: Uuid, m: &MovementRow) -> MovementInput {
    MovementInput {
        product_id,
        kind: m.kind,
        quantity: m.quantity,
        note: m.note.clone(),
        reference: m.reference.clone(),
        idempotency_key: None,
    }
}

fn new_product(p: &ProductRow) -> AppResult<NewProduct> {
    let name = p
        .name
        .clone()
        .ok_or_else(|| AppError::bad_input("name", "name is required for a new product"))?;
    Ok(NewProduct {
        sku: p.sku.clone(),
        name,
        description: p.description.clone(),
        category: p.category.clone(),
        unit: p.unit.clone(),
        low_stock_threshold: p.low_stock_threshold,
        unit_cost: p.unit_cost,
        initial_stock: p.initial_stock,
    })
}

/// The fields a row gives for an existing product (empty cells leave a field
/// as it is; `initial_stock` applies to new products only). None: nothing.
fn patch_of(p: &ProductRow) -> AppResult<Option<products::ValidPatch>> {
    let patch = ProductPatch {
        name: p.name.clone(),
        description: p.description.clone(),
        category: p.category.clone(),
        unit: p.unit.clone(),
        low_stock_threshold: p.low_stock_threshold,
        // An empty cell leaves the cost as it is.
        unit_cost: p.unit_cost.map(Some),
    };
    if patch.name.is_none()
        && patch.description.is_none()
        && patch.category.is_none()
        && patch.unit.is_none()
        && patch.low_stock_threshold.is_none()
        && patch.unit_cost.is_none()
    {
        return Ok(None);
    }
    products::validate_patch(&patch).map(Some)
}

/// Resolves when the bus says a job was queued (or may have been).
async fn job_queued(events: &mut tokio::sync::broadcast::Receiver<Arc<crate::events::Published>>) {
    loop {
        match events.recv().await {
            Ok(e) => match &e.event {
                DomainEvent::UploadJobChanged { job } if job.status == UploadStatus::Queued => {
                    return;
                }
                DomainEvent::EventsMissed => return,
                _ => {}
            },
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_refreshed_each_time_the_applied_rows_double() {
        let mut statistics = Statistics::new(0);
        let due: Vec<i32> = (1..=20)
            .map(|batch| batch * 500)
            .filter(|&applied| statistics.due(applied))
            .collect();
        assert_eq!(due, [1000, 2000, 4000, 8000]);
        // A resumed job waits for its rows to double from where it was.
        let mut resumed = Statistics::new(3000);
        assert!(!resumed.due(5500));
        assert!(resumed.due(6000));
    }
}
