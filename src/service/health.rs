//! Health: a database ping with a timeout, so a hung database reads as down.

use std::time::{Duration, Instant};

use super::context::Services;
use crate::config::Config;
use crate::events::BusHealth;
use crate::service::alerts::{self, QueueFigures};
use crate::service::uploads::{self, UploadQueueFigures};

/// The upload queue against the checklist's threshold ("10 or more queued
/// for a sustained time": `UPLOAD_QUEUE_ALERT_JOBS` past
/// `UPLOAD_QUEUE_ALERT_SECONDS`).
#[derive(Clone, Debug)]
pub struct UploadsHealth {
    /// None when the database could not be asked.
    pub queue: Option<UploadQueueFigures>,
    pub degraded: Option<String>,
}

async fn uploads_queue(db: &Services, config: &Config, timeout: Duration) -> UploadsHealth {
    let queue = match tokio::time::timeout(
        timeout,
        uploads::queue_figures(db.conn(), config.upload_queue_alert_age),
    )
    .await
    {
        Ok(Ok(q)) => Some(q),
        _ => None,
    };
    let degraded = match &queue {
        None => Some("the upload queue could not be read".to_string()),
        Some(q) if q.queued_past_threshold >= config.upload_queue_alert_jobs => Some(format!(
            "{} upload jobs have been queued for more than {} s (threshold {} jobs)",
            q.queued_past_threshold,
            config.upload_queue_alert_age.as_secs(),
            config.upload_queue_alert_jobs,
        )),
        Some(_) => None,
    };
    UploadsHealth { queue, degraded }
}

/// The alert queue against the checklist's thresholds.
#[derive(Clone, Debug)]
pub struct NotifierHealth {
    /// Telegram has a token and at least one chat, and is enabled.
    pub configured: bool,
    /// None when the database could not be asked.
    pub queue: Option<QueueFigures>,
    /// Why the notifier is degraded, if it is.
    pub degraded: Option<String>,
}

async fn notifier(db: &Services, config: &Config, timeout: Duration) -> NotifierHealth {
    let configured = match tokio::time::timeout(timeout, db.settings().current(db.conn())).await {
        Ok(Ok(s)) => s.configured(),
        _ => false,
    };
    let queue = match tokio::time::timeout(timeout, alerts::queue_figures(db.conn())).await {
        Ok(Ok(q)) => Some(q),
        _ => None,
    };
    let degraded = match &queue {
        None => Some("the alert queue could not be read".to_string()),
        Some(q) if q.max_attempts_unsent >= i64::from(config.alert_stale_attempts) => {
            Some(format!(
                "an unsent alert has {} attempts (threshold {})",
                q.max_attempts_unsent, config.alert_stale_attempts
            ))
        }
        Some(q) => q
            .oldest_unsent_seconds
            .filter(|age| *age >= config.alert_stale_age.as_secs() as i64)
            .map(|age| {
                format!(
                    "an alert has been unsent for {} min (threshold {} min)",
                    age / 60,
                    config.alert_stale_age.as_secs() / 60
                )
            }),
    };
    NotifierHealth {
        configured,
        queue,
        degraded,
    }
}

#[derive(Clone, Debug)]
pub struct DatabaseHealth {
    pub up: bool,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct HealthReport {
    pub ok: bool,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub database: DatabaseHealth,
    /// The event bus: degraded while the cross-instance listener is down.
    /// Only the database decides `ok` (and the HTTP status).
    pub events: BusHealth,
    /// The alert queue; degraded past the thresholds, without changing `ok`.
    pub notifier: NotifierHealth,
    /// The upload queue; degraded past its threshold, without changing `ok`.
    pub uploads: UploadsHealth,
}

pub async fn check(db: &Services, config: &Config, started: Instant) -> HealthReport {
    let timeout = config.health_db_timeout;
    let start = Instant::now();
    let database = match tokio::time::timeout(timeout, db.ping()).await {
        Ok(Ok(())) => DatabaseHealth {
            up: true,
            latency_ms: Some(start.elapsed().as_secs_f64() * 1000.0),
            error: None,
        },
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "health: database ping failed");
            DatabaseHealth {
                up: false,
                latency_ms: None,
                error: Some("database unreachable".into()),
            }
        }
        Err(_) => DatabaseHealth {
            up: false,
            latency_ms: None,
            error: Some(format!("no answer within {} ms", timeout.as_millis())),
        },
    };
    // A database that just failed its ping is not asked again.
    let (notifier, uploads) = if database.up {
        tokio::join!(
            notifier(db, config, timeout),
            uploads_queue(db, config, timeout)
        )
    } else {
        let down = || Some("the database is down".to_string());
        (
            NotifierHealth {
                configured: false,
                queue: None,
                degraded: down(),
            },
            UploadsHealth {
                queue: None,
                degraded: down(),
            },
        )
    };
    crate::metrics::health_check(database.up, start.elapsed());
    HealthReport {
        ok: database.up,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: started.elapsed().as_secs(),
        database,
        events: db.bus().health(),
        notifier,
        uploads,
    }
}
