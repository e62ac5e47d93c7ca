//! Health: a database ping with a timeout, so a hung database reads as down.

use std::time::{Duration, Instant};

use crate::db::Db;
use crate::events::BusHealth;

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
}

pub async fn check(db: &Db, timeout: Duration, started: Instant) -> HealthReport {
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
    HealthReport {
        ok: database.up,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: started.elapsed().as_secs(),
        database,
        events: db.bus().health(),
    }
}
