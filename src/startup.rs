//! Building and running the application: database, migrations, seeding, the
//! HTTP listener, background tasks and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::DbBackend;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;

use crate::config::{Config, SecretSource};
use crate::db::Db;
use crate::events::{self, DomainEvent};
use crate::graphql::pipeline::Pipeline;
use crate::service::context::Services;
use crate::service::users::{self, Seeded};
use crate::state::AppState;

pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
    router: axum::Router,
    /// `METRICS_ADDR`: `/metrics` on a listener of its own.
    metrics: Option<(TcpListener, axum::Router)>,
}

impl Application {
    /// Connects, migrates and seeds (unless `AUTO_MIGRATE=false`), and binds
    /// the listener; port 0 picks a free port, reported by [`Self::port`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        if config.jwt_secret_source == SecretSource::Generated {
            tracing::warn!(
                "JWT_SECRET is not set: using a random secret for this process; tokens will not survive a restart"
            );
        }
        let tasks = TaskTracker::new();
        let db = Services::new(&config, Db::connect(&config).await?, tasks.clone());
        if config.auto_migrate {
            migrate_and_seed(&db, &config).await?;
        }
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        let port = listener.local_addr()?.port();
        if config.totp_encryption_key.is_some() {
            tracing::warn!(
                "TOTP_ENCRYPTION_KEY is deprecated: set the same value as DATA_ENCRYPTION_KEY instead"
            );
        }
        crate::service::secrets::check_at_start(&db).await?;
        if config.metrics_enabled {
            crate::metrics::install();
        }
        let metrics_listener = match config.metrics_addr.filter(|_| config.metrics_enabled) {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let state = AppState::new(config, db, tasks)?;
        let pipeline = Pipeline::new(state.clone());
        let router = crate::http::router(state.clone(), pipeline.clone());
        let metrics =
            metrics_listener.map(|l| (l, crate::http::metrics_router(state.clone(), pipeline)));
        Ok(Self {
            listener,
            port,
            state,
            router,
            metrics,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the `METRICS_ADDR` listener, when there is one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting, cancels every
    /// background task and open subscription (WebSockets are closed with
    /// 1001), awaits them all, and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        spawn_background_tasks(&state);

        if let Some((listener, router)) = self.metrics {
            let stop = state.shutdown.clone();
            tracing::info!(addr = ?listener.local_addr().ok(), "metrics listening");
            state.tasks.spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(err) = served {
                    tracing::error!(error = %err, "the metrics listener failed");
                }
            });
        }
        tracing::info!(port = self.port, "listening");
        let cancel = state.shutdown.clone();
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await;

        state.shutdown.cancel();
        state.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), state.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                open = state.tasks.len(),
                "background tasks did not stop within 10 s"
            );
        }
        state.services.close().await?;
        tracing::info!("stopped");
        served.map_err(Into::into)
    }
}

/// How often expired account locks are ended and audited.
const LOCK_SWEEP_INTERVAL: Duration = Duration::from_secs(15);
/// How often alerts and refresh tokens past their retention are deleted.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(3600);

/// The tasks that run beside the server, each tracked and stopped by the
/// application's cancellation token.
fn spawn_background_tasks(state: &AppState) {
    let stop = state.shutdown.clone();
    let limiters = state.limiters.clone();
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => limiters.retain_recent(),
                _ = stop.cancelled() => break,
            }
        }
    });

    // Histogram samples wait in the recorder until they are folded into
    // their buckets; fold them every few seconds, so memory stays bounded
    // when nobody scrapes (or scrapes rarely).
    if state.config.metrics_enabled {
        let stop = state.shutdown.clone();
        state.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => crate::metrics::upkeep(),
                    _ = stop.cancelled() => break,
                }
            }
        });
    }

    // Locks whose time is over are ended and audited, also when nobody logs
    // in again.
    let stop = state.shutdown.clone();
    let db = state.services.clone();
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(LOCK_SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = crate::service::auth::end_expired_locks(&db).await {
                        tracing::warn!(error = %err, "ending expired account locks failed; retrying later");
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
    });

    // Alerts and refresh tokens past their retention, hourly.
    let stop = state.shutdown.clone();
    let (db, config) = (state.services.clone(), state.config.clone());
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match crate::service::housekeeping::prune(&db, &config, chrono::Utc::now()).await {
                        Ok(pruned) => tracing::debug!(?pruned, "housekeeping"),
                        Err(err) => tracing::warn!(error = %err, "housekeeping failed; retrying later"),
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
    });

    // A role change or deactivation made on any instance drops the cached user.
    let stop = state.shutdown.clone();
    let auth = state.auth.clone();
    let mut events = state.services.bus().subscribe();
    state.tasks.spawn(async move {
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = stop.cancelled() => break,
            };
            match event {
                Ok(e) => match e.event {
                    DomainEvent::UserChanged { user_id, .. } => auth.users.invalidate(user_id),
                    // Other instances' changes may have been lost.
                    DomainEvent::EventsMissed => auth.users.invalidate_all(),
                    _ => {}
                },
                // Missed events may have held a user change: forget everyone.
                Err(broadcast::error::RecvError::Lagged(_)) => auth.users.invalidate_all(),
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    state.tasks.spawn(state.notifier.clone().run());
    if state.config.upload_worker_enabled {
        state.tasks.spawn(
            std::sync::Arc::new(crate::uploads::UploadWorker::new(
                &state.config,
                state.services.clone(),
                state.shutdown.clone(),
            ))
            .run(),
        );
    }

    if state.services.backend() == DbBackend::Postgres {
        let db = state.services.clone();
        state.tasks.spawn(events::run_listener(
            db.bus().clone(),
            db.conn().get_postgres_connection_pool().clone(),
            db.conn().clone(),
            state.shutdown.clone(),
        ));
    }
}

/// Applies pending migrations and seeds the admin, one instance at a time.
pub async fn migrate_and_seed(db: &Services, config: &Config) -> anyhow::Result<()> {
    db.with_schema_lock(async {
        Migrator::up(db.conn(), None).await?;
        seed(db, config).await
    })
    .await
}

/// Seeds the admin into an empty database, printing a generated password once.
pub async fn seed(db: &Services, config: &Config) -> anyhow::Result<()> {
    crate::service::settings::ensure_row(db.conn())
        .await
        .map_err(|e| anyhow::anyhow!("creating the notification settings failed: {e}"))?;
    let password = config.admin_password.as_ref().map(|s| s.expose());
    match users::seed_admin(db, &config.admin_email, password, !config.is_production()).await {
        Ok(Seeded::Created {
            email,
            generated_password: Some(pw),
        }) => {
            // Printed, not logged: shown once to the operator who started it.
            eprintln!(
                "\n  Seeded admin account {email} with generated password: {pw}\n  \
                 Set ADMIN_PASSWORD to choose it; change it after first login.\n"
            );
            Ok(())
        }
        Ok(Seeded::Created { email, .. }) => {
            tracing::info!(%email, "seeded admin account");
            Ok(())
        }
        Ok(Seeded::AlreadySeeded) => Ok(()),
        Err(err) => Err(anyhow::anyhow!("seeding the admin failed: {err}")),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
