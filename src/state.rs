//! Shared application state: cheap to clone, one per running application.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::Db;
use crate::limits::{ConnectionCounter, Limiters};
use crate::notifier::Notifier;
use crate::service::auth::Auth;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    pub limiters: Arc<Limiters>,
    /// Open WebSocket connections per client IP.
    pub sockets: Arc<ConnectionCounter>,
    pub started_at: Instant,
    /// Cancelled when the application shuts down: every task and stream stops.
    pub shutdown: CancellationToken,
    /// Every background task and WebSocket connection, awaited at shutdown.
    pub tasks: TaskTracker,
    /// Delivers the alert outbox; `run_once` is public for tests.
    pub notifier: Arc<Notifier>,
}

impl AppState {
    pub fn new(config: Config, db: Db) -> crate::error::AppResult<Self> {
        let limiters = Arc::new(Limiters::new(&config));
        let shutdown = CancellationToken::new();
        let notifier = Arc::new(Notifier::new(&config, db.clone(), shutdown.clone()));
        Ok(Self {
            auth: Arc::new(Auth::new(&config, Arc::clone(&limiters))?),
            limiters,
            sockets: Arc::new(ConnectionCounter::new(config.ws_max_connections_per_ip)),
            config: Arc::new(config),
            db,
            started_at: Instant::now(),
            shutdown,
            tasks: TaskTracker::new(),
            notifier,
        })
    }
}
