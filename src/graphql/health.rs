use async_graphql::{Context, Enum, Object, SimpleObject};

use super::context::state;
use crate::service::health::{self, HealthReport};

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Ok,
    Degraded,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ServiceStatus {
    Up,
    Down,
}

#[derive(SimpleObject)]
pub struct ServiceHealth {
    pub status: ServiceStatus,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

/// The event bus behind subscriptions.
#[derive(SimpleObject)]
pub struct EventsHealth {
    /// DEGRADED while the PostgreSQL listener that carries other instances'
    /// events is down (subscribers then miss them); does not change `status`.
    pub status: HealthStatus,
    /// True on PostgreSQL: events cross instances through LISTEN/NOTIFY.
    pub cross_instance: bool,
    /// Open subscription streams on this instance.
    pub subscriptions: i64,
    /// Distinct live subscriptions among them (by document, variables and
    /// role): each is executed once per event for all its subscribers.
    pub subscription_groups: i64,
    pub error: Option<String>,
}

/// The alert queue (the checklist's "alerts waiting on retryAt, retry counts").
#[derive(SimpleObject)]
pub struct NotifierHealth {
    /// DEGRADED when an unsent alert has ALERT_STALE_ATTEMPTS attempts or is
    /// older than ALERT_STALE_MINUTES; does not change `status`.
    pub status: HealthStatus,
    pub reason: Option<String>,
    /// Telegram is enabled, with a token and at least one chat.
    pub telegram_configured: bool,
    pub pending: i64,
    /// PENDING after at least one failed attempt, waiting on retryAt.
    pub retrying: i64,
    pub sending: i64,
    pub dead: i64,
    pub oldest_unsent_seconds: Option<i64>,
    pub max_attempts_unsent: i64,
}

/// The upload queue (the checklist's `upload_jobs` by status).
#[derive(SimpleObject)]
pub struct UploadsHealth {
    /// DEGRADED when 10 or more jobs have been QUEUED for longer than
    /// UPLOAD_QUEUE_ALERT_SECONDS; does not change `status`.
    pub status: HealthStatus,
    pub reason: Option<String>,
    pub queued: i64,
    pub processing: i64,
    pub oldest_queued_seconds: Option<i64>,
    /// QUEUED jobs older than UPLOAD_QUEUE_ALERT_SECONDS.
    pub queued_past_threshold: i64,
}

#[derive(SimpleObject)]
pub struct Health {
    /// OK when the database answers; DEGRADED otherwise.
    pub status: HealthStatus,
    pub version: String,
    pub uptime_seconds: i64,
    pub database: ServiceHealth,
    pub events: EventsHealth,
    pub notifier: NotifierHealth,
    pub uploads: UploadsHealth,
}

impl From<HealthReport> for Health {
    fn from(r: HealthReport) -> Self {
        Self {
            status: if r.ok {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            version: r.version.to_string(),
            uptime_seconds: i64::try_from(r.uptime_seconds).unwrap_or(i64::MAX),
            database: ServiceHealth {
                status: if r.database.up {
                    ServiceStatus::Up
                } else {
                    ServiceStatus::Down
                },
                latency_ms: r.database.latency_ms,
                error: r.database.error,
            },
            events: EventsHealth {
                status: if r.events.listener_up {
                    HealthStatus::Ok
                } else {
                    HealthStatus::Degraded
                },
                cross_instance: r.events.cross_instance,
                subscriptions: i64::try_from(r.events.subscriptions).unwrap_or(i64::MAX),
                subscription_groups: i64::try_from(r.events.groups).unwrap_or(i64::MAX),
                error: r.events.error,
            },
            notifier: {
                let q = r.notifier.queue.unwrap_or_default();
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                NotifierHealth {
                    status: if r.notifier.degraded.is_some() {
                        HealthStatus::Degraded
                    } else {
                        HealthStatus::Ok
                    },
                    reason: r.notifier.degraded,
                    telegram_configured: r.notifier.configured,
                    pending: n(q.pending),
                    retrying: n(q.retrying),
                    sending: n(q.sending),
                    dead: n(q.dead),
                    oldest_unsent_seconds: q.oldest_unsent_seconds,
                    max_attempts_unsent: q.max_attempts_unsent,
                }
            },
            uploads: {
                let q = r.uploads.queue.unwrap_or_default();
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                UploadsHealth {
                    status: if r.uploads.degraded.is_some() {
                        HealthStatus::Degraded
                    } else {
                        HealthStatus::Ok
                    },
                    reason: r.uploads.degraded,
                    queued: n(q.queued),
                    processing: n(q.processing),
                    oldest_queued_seconds: q.oldest_queued_seconds,
                    queued_past_threshold: n(q.queued_past_threshold),
                }
            },
        }
    }
}

#[derive(Default)]
pub struct HealthQuery;

#[Object]
impl HealthQuery {
    /// Public: database status and ping latency.
    async fn health(&self, ctx: &Context<'_>) -> async_graphql::Result<Health> {
        let s = state(ctx)?;
        Ok(health::check(&s.services, &s.config, s.started_at)
            .await
            .into())
    }
}
