//! The services' own context: the database, and what the services keep
//! beside it (the product read cache, the notification settings, batched
//! reads by SKU and the movement queue). The core under the services (`db`,
//! `events`, `cache`) knows none of these; the cache is an observer of the
//! bus, registered here.

use std::sync::Arc;

use sea_orm::{DatabaseTransaction, DbErr};
use tokio_util::task::TaskTracker;

use super::movement::MovementQueue;
use super::product_reads::{self, SkuReads};
use super::settings_cache::SettingsCache;
use crate::cache::ProductCache;
use crate::config::Config;
use crate::db::{Db, Savepoint, WriteTxn};
use crate::events::DomainEvent;
use crate::sealing::Sealer;

/// Products the read cache holds at most.
const PRODUCT_CACHE_CAPACITY: u64 = 200_000;

/// What every service runs with; cheap to clone. Derefs to [`Db`], so a
/// service reaches the pool and write transactions through it.
#[derive(Clone)]
pub struct Services(Arc<Inner>);

struct Inner {
    db: Db,
    sealer: Arc<Sealer>,
    settings: SettingsCache,
    products: Option<Arc<ProductCache>>,
    sku_reads: Arc<SkuReads>,
    movements: MovementQueue,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("db", &self.0.db)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Services {
    type Target = Db;

    fn deref(&self) -> &Db {
        &self.0.db
    }
}

impl Services {
    /// The services over `db`. Work they start in the background (batches,
    /// batched reads) runs on `tasks`, which the application awaits at
    /// shutdown. The product read cache exists on PostgreSQL only (on
    /// SQLite a read is as cheap as a cache lookup), unless
    /// `READ_CACHE_SECONDS` is 0.
    pub fn new(config: &Config, db: Db, tasks: TaskTracker) -> Self {
        let products = (!config.is_sqlite() && !config.read_cache_ttl.is_zero()).then(|| {
            let cache = Arc::new(ProductCache::new(
                config.read_cache_ttl,
                PRODUCT_CACHE_CAPACITY,
            ));
            db.bus().observe(Arc::clone(&cache) as _);
            cache
        });
        let sku_reads = product_reads::sku_reads(db.clone(), products.clone(), tasks.clone());
        let sealer = Arc::new(Sealer::new(config));
        Self(Arc::new(Inner {
            settings: SettingsCache::new(config, Arc::clone(&sealer)),
            sealer,
            db,
            products,
            sku_reads,
            movements: MovementQueue::default(),
            tasks,
        }))
    }

    /// The services of a one-off command (the command line), which starts
    /// no background work.
    pub async fn connect(config: &Config) -> Result<Self, DbErr> {
        Ok(Self::new(
            config,
            Db::connect(config).await?,
            TaskTracker::new(),
        ))
    }

    /// Closes the pool.
    pub async fn close(&self) -> Result<(), DbErr> {
        self.0.db.clone().close().await
    }

    pub fn db(&self) -> &Db {
        &self.0.db
    }

    /// Seals and opens the secrets stored in the database.
    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.0.sealer
    }

    /// The notification settings in effect (cached briefly).
    pub fn settings(&self) -> &SettingsCache {
        &self.0.settings
    }

    /// The product read cache, when it may be read now: there is one, and
    /// the listener that hears other instances' changes is up.
    pub fn product_cache(&self) -> Option<&ProductCache> {
        self.0.products.as_deref().filter(|c| c.trusted())
    }

    /// Products by SKU, read in batches across requests.
    pub fn sku_reads(&self) -> &Arc<SkuReads> {
        &self.0.sku_reads
    }

    /// Stock movements waiting for their group commit.
    pub fn movements(&self) -> &MovementQueue {
        &self.0.movements
    }

    /// The application's background tasks.
    pub fn tasks(&self) -> &TaskTracker {
        &self.0.tasks
    }
}

impl Services {
    /// Starts a write transaction ([`Db::begin_write`]) that also carries
    /// the services, for what the services read inside it (the settings
    /// that decide which alerts a change raises).
    pub async fn begin_write(&self) -> Result<Txn, DbErr> {
        Ok(Txn {
            inner: self.0.db.begin_write().await?,
            services: self.clone(),
        })
    }
}

/// A write transaction of the services: a [`WriteTxn`] and the services it
/// runs for. Derefs to the database transaction; dropping it without
/// `commit` rolls it back and discards its events.
pub struct Txn {
    inner: WriteTxn,
    services: Services,
}

impl std::ops::Deref for Txn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.inner
    }
}

impl Txn {
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// See [`WriteTxn::tx`].
    pub async fn tx(&self) -> Result<i64, DbErr> {
        self.inner.tx().await
    }

    /// See [`WriteTxn::emit`].
    pub fn emit(&self, event: DomainEvent) {
        self.inner.emit(event);
    }

    /// See [`WriteTxn::savepoint`].
    pub async fn savepoint(&self) -> Result<Savepoint, DbErr> {
        self.inner.savepoint().await
    }

    /// See [`WriteTxn::release`].
    pub async fn release(&self, point: Savepoint) -> Result<(), DbErr> {
        self.inner.release(point).await
    }

    /// See [`WriteTxn::rollback_to`].
    pub async fn rollback_to(&self, point: Savepoint) -> Result<(), DbErr> {
        self.inner.rollback_to(point).await
    }

    /// See [`WriteTxn::commit`].
    pub async fn commit(self) -> Result<(), DbErr> {
        self.inner.commit().await
    }
}
