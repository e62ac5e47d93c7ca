use async_graphql::{Context, Enum, Object, SimpleObject};

use super::state;
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
    pub error: Option<String>,
}

#[derive(SimpleObject)]
pub struct Health {
    /// OK when the database answers; DEGRADED otherwise.
    pub status: HealthStatus,
    pub version: String,
    pub uptime_seconds: i64,
    pub database: ServiceHealth,
    pub events: EventsHealth,
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
                error: r.events.error,
            },
        }
    }
}

#[derive(Default)]
pub struct HealthQuery;

#[Object]
impl HealthQuery {
    /// Public: database status and ping latency.
    async fn health(&self, ctx: &Context<'_>) -> Health {
        let s = state(ctx);
        health::check(&s.db, s.config.health_db_timeout, s.started_at)
            .await
            .into()
    }
}
