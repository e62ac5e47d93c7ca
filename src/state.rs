//! Shared application state: cheap to clone, one per running application.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::limits::{ConnectionCounter, Limiters};
use crate::notifier::Notifier;
use crate::service::auth::Auth;
use crate::service::context::Services;

/// Shared application state: one `Arc`, so that the clones every request
/// makes (middleware state, extractors) cost one atomic increment, not one
/// per field (a profile of the product lookup showed about a tenth of the CPU
/// in cloning and dropping the fields one by one).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    /// The services and the database under them.
    pub services: Services,
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
    /// The state over `services`, whose background work runs on `tasks`.
    pub fn new(
        config: Config,
        services: Services,
        tasks: TaskTracker,
    ) -> crate::error::AppResult<Self> {
        let limiters = Arc::new(Limiters::new(&config));
        let shutdown = CancellationToken::new();
        let notifier = Arc::new(Notifier::new(&config, services.clone(), shutdown.clone()));
        Ok(Self(Arc::new(AppStateInner {
            auth: Arc::new(Auth::new(
                &config,
                Arc::clone(&limiters),
                Arc::clone(services.sealer()),
            )?),
            limiters,
            sockets: Arc::new(ConnectionCounter::new(config.ws_max_connections_per_ip)),
            config: Arc::new(config),
            services,
            started_at: Instant::now(),
            shutdown,
            tasks,
            notifier,
        })))
    }
}
