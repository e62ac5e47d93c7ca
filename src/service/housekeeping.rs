//! Retention: what the service keeps only for a while. SENT and DEAD alerts
//! last changed more than `ALERT_RETENTION_DAYS` ago, and refresh tokens
//! expired more than `REFRESH_TOKEN_RETENTION_DAYS` ago, are deleted in
//! batches of [`BATCH`] rows, each batch its own short write transaction, so
//! a writer never waits behind more than one batch. The audit log is kept
//! whole (docs/OPERATIONS.md says how to archive it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};

use super::context::Services;
use crate::config::Config;
use crate::error::{AppError, AppResult};

pub const BATCH: u64 = 500;

/// Rows deleted by one [`prune`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub alerts: u64,
    pub refresh_tokens: u64,
}

/// Deletes what is past its retention at `now`.
pub async fn prune(db: &Services, config: &Config, now: DateTime<Utc>) -> AppResult<Pruned> {
    let cutoff = |keep: Duration| {
        chrono::Duration::from_std(keep)
            .map(|keep| now - keep)
            .map_err(AppError::internal)
    };
    let alerts = in_batches(
        db,
        "alerts",
        "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts \
         WHERE status IN ('SENT', 'DEAD') AND updated_at < $1 ORDER BY updated_at LIMIT $2)",
        cutoff(config.alert_retention)?,
    )
    .await?;
    let refresh_tokens = in_batches(
        db,
        "refresh_tokens",
        "DELETE FROM refresh_tokens WHERE id IN (SELECT id FROM refresh_tokens \
         WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
        cutoff(config.refresh_token_retention)?,
    )
    .await?;
    Ok(Pruned {
        alerts,
        refresh_tokens,
    })
}

/// Runs `sql` (a batch of at most `$2` rows older than `$1`) until a batch
/// comes back short.
async fn in_batches(
    db: &Services,
    table: &'static str,
    sql: &str,
    before: DateTime<Utc>,
) -> AppResult<u64> {
    let mut total = 0;
    loop {
        let txn = db.begin_write().await?;
        let deleted = txn
            .execute_raw(Statement::from_sql_and_values(
                db.backend(),
                sql,
                [before.into(), (BATCH as i64).into()],
            ))
            .await?
            .rows_affected();
        txn.commit().await?;
        total += deleted;
        crate::metrics::pruned(table, deleted);
        if deleted < BATCH {
            return Ok(total);
        }
        // Writers go first between batches.
        tokio::task::yield_now().await;
    }
}
