//! Domain events and the bus that carries them.
//!
//! Events are collected by the write transaction that makes them and
//! published only after it committed, so a refused or rolled-back write
//! publishes nothing. The bus is a tokio broadcast channel: a subscriber that
//! falls more than its capacity behind is told it lagged, and never slows the
//! publisher or the other subscribers.
//!
//! On PostgreSQL the committing transaction also sends its events with
//! `pg_notify` on [`CHANNEL`] (delivered only on commit), and every instance
//! runs [`run_listener`], which re-publishes the events of *other* instances
//! on its local bus. On SQLite the bus is in-process only.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sea_orm::sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sea_orm::{ConnectionTrait, EntityTrait, Statement, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::entity::user::Role;
use crate::entity::{alert, audit_log, product, stock_movement, upload_job};

/// The PostgreSQL NOTIFY channel every instance listens on.
pub const CHANNEL: &str = "stockroom_events";

/// NOTIFY refuses payloads of 8000 bytes or more; stay clear of the limit.
const MAX_PAYLOAD: usize = 7800;

/// Something that happened, published after the transaction that made it
/// committed. Carries what a subscriber needs to answer without a read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum DomainEvent {
    /// A movement was recorded; `product` is the product right after it.
    StockMoved {
        product: Arc<product::Model>,
        movement: Arc<stock_movement::Model>,
    },
    ProductCreated {
        product: Arc<product::Model>,
    },
    ProductUpdated {
        product: Arc<product::Model>,
    },
    ProductArchived {
        product: Arc<product::Model>,
    },
    AuditLogAdded {
        entry: Arc<audit_log::Model>,
    },
    /// A user's role or active flag changed: their open streams are re-checked.
    UserChanged {
        user_id: Uuid,
        role: Role,
        active: bool,
    },
    /// Alerts were queued: notifiers (on every instance) wake up.
    AlertsQueued,
    /// An alert was created or changed status.
    AlertChanged {
        alert: Arc<alert::Model>,
    },
    /// An upload job was queued, progressed a batch, or finished. A QUEUED
    /// one wakes the upload workers (on every instance).
    UploadJobChanged {
        job: Arc<upload_job::Model>,
    },
    /// Events of other instances may have been lost (the listener's connection
    /// dropped). Subscribers are told, so that clients re-fetch.
    EventsMissed,
}

impl DomainEvent {
    /// The products whose per-product order this event takes part in.
    pub fn product_id(&self) -> Option<Uuid> {
        match self {
            Self::StockMoved { product, .. }
            | Self::ProductCreated { product }
            | Self::ProductUpdated { product }
            | Self::ProductArchived { product } => Some(product.id),
            _ => None,
        }
    }

    /// A small stand-in for an event too large for one NOTIFY payload; the
    /// receiving instance loads the rest from the database.
    fn reference(&self) -> Option<EventRef> {
        Some(match self {
            Self::StockMoved { movement, .. } => EventRef::StockMoved {
                movement_id: movement.id,
            },
            Self::ProductCreated { product } => EventRef::Product {
                change: ProductChange::Created,
                product_id: product.id,
                version: product.version,
            },
            Self::ProductUpdated { product } => EventRef::Product {
                change: ProductChange::Updated,
                product_id: product.id,
                version: product.version,
            },
            Self::ProductArchived { product } => EventRef::Product {
                change: ProductChange::Archived,
                product_id: product.id,
                version: product.version,
            },
            Self::AuditLogAdded { entry } => EventRef::AuditLogAdded { id: entry.id },
            Self::AlertChanged { alert } => EventRef::Alert { id: alert.id },
            Self::UploadJobChanged { job } => EventRef::UploadJob { id: job.id },
            Self::UserChanged { .. } | Self::AlertsQueued | Self::EventsMissed => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum ProductChange {
    Created,
    Updated,
    Archived,
}

/// What crosses instances in place of an oversized event.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
enum EventRef {
    StockMoved {
        movement_id: Uuid,
    },
    Product {
        change: ProductChange,
        product_id: Uuid,
        version: i32,
    },
    AuditLogAdded {
        id: Uuid,
    },
    Alert {
        id: Uuid,
    },
    UploadJob {
        id: Uuid,
    },
}

/// What loading a reference found.
enum Loaded {
    Event(DomainEvent),
    /// The row is gone.
    Gone,
    /// The row changed since the event: its state then is lost.
    Moved,
}

impl EventRef {
    async fn load(&self, conn: &impl ConnectionTrait) -> Result<Loaded, sea_orm::DbErr> {
        let product = |id| product::Entity::find_by_id(id).one(conn);
        // A product read now must be the version the event was about.
        let as_of = |p: Option<product::Model>, version: i32| match p {
            Some(p) if p.version == version => Ok(Arc::new(p)),
            Some(_) => Err(Loaded::Moved),
            None => Err(Loaded::Gone),
        };
        Ok(match *self {
            Self::StockMoved { movement_id } => {
                let Some(m) = stock_movement::Entity::find_by_id(movement_id)
                    .one(conn)
                    .await?
                else {
                    return Ok(Loaded::Gone);
                };
                match product(m.product_id).await? {
                    Some(p) => Loaded::Event(DomainEvent::StockMoved {
                        product: Arc::new(p.as_of(&m)),
                        movement: Arc::new(m),
                    }),
                    None => Loaded::Gone,
                }
            }
            Self::Product {
                change,
                product_id,
                version,
            } => match as_of(product(product_id).await?, version) {
                Ok(product) => Loaded::Event(match change {
                    ProductChange::Created => DomainEvent::ProductCreated { product },
                    ProductChange::Updated => DomainEvent::ProductUpdated { product },
                    ProductChange::Archived => DomainEvent::ProductArchived { product },
                }),
                Err(other) => other,
            },
            // Audit rows never change.
            Self::AuditLogAdded { id } => {
                match audit_log::Entity::find_by_id(id).one(conn).await? {
                    Some(a) => Loaded::Event(DomainEvent::AuditLogAdded { entry: Arc::new(a) }),
                    None => Loaded::Gone,
                }
            }
            // An alert may have moved on; its later changes follow as events.
            Self::Alert { id } => match alert::Entity::find_by_id(id).one(conn).await? {
                Some(a) => Loaded::Event(DomainEvent::AlertChanged { alert: Arc::new(a) }),
                None => Loaded::Gone,
            },
            // Likewise a job: its later progress follows as events.
            Self::UploadJob { id } => match upload_job::Entity::find_by_id(id).one(conn).await? {
                Some(job) => Loaded::Event(DomainEvent::UploadJobChanged { job: Arc::new(job) }),
                None => Loaded::Gone,
            },
        })
    }
}

/// One entry of a NOTIFY payload, in the order the transaction emitted them:
/// a whole event, or a reference to one too large to send whole.
#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    #[serde(rename = "w")]
    Whole(Box<serde_json::value::RawValue>),
    #[serde(rename = "r")]
    Ref(EventRef),
}

/// One NOTIFY payload: the sending instance and its entries, in order.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Envelope {
    #[serde(rename = "o")]
    origin: Uuid,
    /// The committing transaction's snapshot horizon (`xmin`), which the
    /// NOTIFY statement itself writes in (see [`EventBus::notify`]).
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    horizon: Option<i64>,
    #[serde(rename = "e", default)]
    entries: Vec<Entry>,
}

/// Splits `events` into NOTIFY payloads under the size limit, keeping their
/// order.
fn payloads(origin: Uuid, events: &[DomainEvent]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = Envelope {
        origin,
        ..Default::default()
    };
    let mut size = 64;
    let mut flush = |env: &mut Envelope, size: &mut usize| {
        if !env.entries.is_empty() {
            let full = std::mem::replace(
                env,
                Envelope {
                    origin,
                    ..Default::default()
                },
            );
            if let Ok(text) = serde_json::to_string(&full) {
                out.push(text);
            }
        }
        *size = 64;
    };
    for event in events {
        let Ok(json) = serde_json::to_string(event) else {
            continue;
        };
        let (entry, len) = if json.len() + 64 > MAX_PAYLOAD {
            let Some(reference) = event.reference() else {
                continue;
            };
            (Entry::Ref(reference), 160)
        } else {
            let len = json.len() + 8;
            match serde_json::value::RawValue::from_string(json) {
                Ok(raw) => (Entry::Whole(raw), len),
                Err(_) => continue,
            }
        };
        if size + len > MAX_PAYLOAD {
            flush(&mut current, &mut size);
        }
        size += len;
        current.entries.push(entry);
    }
    flush(&mut current, &mut size);
    out
}

/// The state of the cross-instance listener, for health.
#[derive(Clone, Debug)]
pub struct BusHealth {
    /// True on PostgreSQL, where events cross instances.
    pub cross_instance: bool,
    /// False while the listener's connection is down.
    pub listener_up: bool,
    pub error: Option<String>,
    pub subscriptions: usize,
    /// Distinct live subscriptions, each executed once per event.
    pub groups: usize,
    /// Answers executed for them since start.
    pub renders: u64,
}

/// One committed transaction's events, in the order transactions
/// committed: what the streams of all products and of the audit log read
/// ([`EventBus::subscribe_in_order`]).
#[derive(Debug)]
pub enum Sequenced {
    Transaction {
        /// Every transaction numbered below this had ended when this one
        /// committed, so its events came before these (the `xmin` of the
        /// committing transaction's snapshot on PostgreSQL; its own number
        /// on SQLite, whose writer commits one transaction at a time).
        horizon: i64,
        events: Vec<DomainEvent>,
        at: Instant,
    },
    /// Transactions may have been missed (the listener reconnected, or a
    /// notification could not be read): streams catch up from the database.
    Missed,
}

/// An event as the bus carries it, with when it was published here (for
/// the subscriptions' delivery latency).
#[derive(Debug)]
pub struct Published {
    pub event: DomainEvent,
    pub at: Instant,
}

impl std::ops::Deref for Published {
    type Target = DomainEvent;

    fn deref(&self) -> &DomainEvent {
        &self.event
    }
}

struct Inner {
    tx: broadcast::Sender<Arc<Published>>,
    in_order: broadcast::Sender<Arc<Sequenced>>,
    instance: Uuid,
    cross_instance: AtomicBool,
    listener_up: AtomicBool,
    listener_error: Mutex<Option<String>>,
    subscriptions: AtomicUsize,
    groups: AtomicUsize,
    renders: AtomicU64,
    /// Told of every event before subscribers are (see [`Observer`]).
    observers: RwLock<Vec<Arc<dyn Observer>>>,
}

/// Something kept coherent with what the bus publishes (a read cache):
/// told synchronously, on the publishing task, before any subscriber hears
/// of the event, so a writer's own request already sees its change.
pub trait Observer: Send + Sync {
    /// An event is being published on this instance.
    fn published(&self, event: &DomainEvent);
    /// The cross-instance listener connected (`true`) or was lost: what was
    /// heard before may be incomplete either way.
    fn listener_changed(&self, up: bool);
}

/// The in-process event bus, cheap to clone.
#[derive(Clone)]
pub struct EventBus(Arc<Inner>);

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("instance", &self.0.instance)
            .finish()
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let (in_order, _) = broadcast::channel(capacity.max(1));
        Self(Arc::new(Inner {
            tx,
            in_order,
            instance: Uuid::new_v4(),
            cross_instance: AtomicBool::new(false),
            listener_up: AtomicBool::new(true),
            listener_error: Mutex::new(None),
            subscriptions: AtomicUsize::new(0),
            groups: AtomicUsize::new(0),
            renders: AtomicU64::new(0),
            observers: RwLock::new(Vec::new()),
        }))
    }

    /// Keeps `observer` told of everything published from now on.
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        if let Ok(mut observers) = self.0.observers.write() {
            observers.push(observer);
        }
    }

    fn observers(&self) -> Vec<Arc<dyn Observer>> {
        self.0
            .observers
            .read()
            .map(|o| o.clone())
            .unwrap_or_default()
    }

    /// This instance's id; its own events coming back through NOTIFY are dropped.
    pub fn instance(&self) -> Uuid {
        self.0.instance
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.0.tx.subscribe()
    }

    /// Every committed transaction's events, in commit order, from now on
    /// (see [`Sequenced`]). On PostgreSQL they come through the listener,
    /// this instance's own included; on SQLite from the committing writer.
    pub fn subscribe_in_order(&self) -> broadcast::Receiver<Arc<Sequenced>> {
        self.0.in_order.subscribe()
    }

    /// Publishes one committed transaction's events; with a `horizon`, also
    /// to the in-order feed (SQLite, and other instances' transactions
    /// heard through the listener).
    pub fn publish_committed(&self, events: Vec<DomainEvent>, horizon: Option<i64>) {
        match horizon {
            Some(horizon) if self.0.in_order.receiver_count() > 0 => {
                self.publish(events.iter().cloned());
                self.sequence(horizon, events);
            }
            _ => self.publish(events),
        }
    }

    fn sequence(&self, horizon: i64, events: Vec<DomainEvent>) {
        if events.is_empty() {
            return;
        }
        let _ = self.0.in_order.send(Arc::new(Sequenced::Transaction {
            horizon,
            events,
            at: Instant::now(),
        }));
    }

    /// Tells every stream that events may have been missed.
    fn missed(&self) {
        self.publish([DomainEvent::EventsMissed]);
        let _ = self.0.in_order.send(Arc::new(Sequenced::Missed));
    }

    /// Publishes committed events to this instance's subscribers.
    pub fn publish(&self, events: impl IntoIterator<Item = DomainEvent>) {
        let observers = self.observers();
        for event in events {
            for observer in &observers {
                observer.published(&event);
            }
            // No receiver is not an error: nobody is listening right now.
            let _ = self.0.tx.send(Arc::new(Published {
                event,
                at: Instant::now(),
            }));
        }
    }

    /// Sends `events` to the other instances from inside the committing
    /// transaction; PostgreSQL delivers them only if it commits.
    pub async fn notify(
        &self,
        conn: &impl ConnectionTrait,
        events: &[DomainEvent],
    ) -> Result<(), sea_orm::DbErr> {
        let payloads = payloads(self.0.instance, events);
        if payloads.is_empty() {
            return Ok(());
        }
        // All of them in one round trip, in order, one per line: compact
        // JSON never holds a raw newline (serde escapes it inside strings),
        // so the lines split back exactly, and neither side encodes or
        // parses the payloads again (a JSON array of them did both).
        debug_assert!(payloads.iter().all(|p| !p.contains('\n')));
        // Each payload gets the snapshot horizon written in as its first
        // field (`{"x":<xmin>,` + the rest of the object), taken inside
        // the committing transaction: see [`Sequenced`].
        conn.execute_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT pg_notify($1, '{\"x\":' || pg_snapshot_xmin(pg_current_snapshot())::text \
             || ',' || substr(p, 2)) FROM unnest(string_to_array($2, E'\\n')) AS p",
            [Value::from(CHANNEL), Value::from(payloads.join("\n"))],
        ))
        .await?;
        Ok(())
    }

    /// Counts an open subscription stream while the guard lives.
    pub fn track_subscription(&self) -> SubscriptionGuard {
        self.0.subscriptions.fetch_add(1, Ordering::Relaxed);
        SubscriptionGuard(self.clone())
    }

    /// Counts a subscription group while the guard lives.
    pub fn track_group(&self) -> GroupGuard {
        self.0.groups.fetch_add(1, Ordering::Relaxed);
        crate::metrics::subscription_groups(1.0);
        GroupGuard(self.clone())
    }

    /// One answer executed for a subscription group.
    pub fn rendered(&self) {
        self.0.renders.fetch_add(1, Ordering::Relaxed);
        crate::metrics::subscription_rendered();
    }

    pub fn health(&self) -> BusHealth {
        BusHealth {
            cross_instance: self.0.cross_instance.load(Ordering::Relaxed),
            listener_up: self.0.listener_up.load(Ordering::Relaxed),
            error: self.0.listener_error.lock().ok().and_then(|e| e.clone()),
            subscriptions: self.0.subscriptions.load(Ordering::Relaxed),
            groups: self.0.groups.load(Ordering::Relaxed),
            renders: self.0.renders.load(Ordering::Relaxed),
        }
    }

    fn set_listener(&self, up: bool, error: Option<String>) {
        self.0.listener_up.store(up, Ordering::Relaxed);
        // Whatever was heard may be incomplete (before this connection
        // listened, or while none did).
        for observer in self.observers() {
            observer.listener_changed(up);
        }
        if let Ok(mut e) = self.0.listener_error.lock() {
            *e = error;
        }
    }

    /// Takes an incoming NOTIFY payload. Events of other instances are
    /// published locally, exactly once; our own were published when they
    /// committed. Both go to the in-order feed, which only the listener
    /// sees in commit order, and only while someone reads it.
    async fn receive(&self, payload: &str, conn: &impl ConnectionTrait) {
        let envelope: Envelope = match serde_json::from_str(payload) {
            Ok(e) => e,
            Err(err) => {
                // Whatever it carried is lost: streams are told so.
                tracing::warn!(error = %err, "events: unreadable notification; events may be missing");
                self.missed();
                return;
            }
        };
        let own = envelope.origin == self.0.instance;
        let in_order = self.0.in_order.receiver_count() > 0;
        if own && !in_order {
            return;
        }
        let mut events = Vec::with_capacity(envelope.entries.len());
        let mut missed = false;
        for entry in envelope.entries {
            match entry {
                Entry::Whole(raw) => match serde_json::from_str::<DomainEvent>(raw.get()) {
                    Ok(event) => events.push(event),
                    Err(err) => {
                        tracing::warn!(error = %err, "events: unreadable event dropped");
                        missed = true;
                    }
                },
                Entry::Ref(reference) => match reference.load(conn).await {
                    Ok(Loaded::Event(event)) => events.push(event),
                    Ok(Loaded::Gone) => {}
                    Ok(Loaded::Moved) => missed = true,
                    Err(err) => {
                        tracing::warn!(error = %err, "events: loading a referenced event failed");
                        missed = true;
                    }
                },
            }
        }
        if !own {
            self.publish(events.iter().cloned());
        }
        if missed {
            self.missed();
        }
        match envelope.horizon {
            Some(horizon) if in_order => self.sequence(horizon, events),
            // From an instance that does not send its horizon (an older
            // release): the order cannot be vouched for.
            None if in_order => {
                let _ = self.0.in_order.send(Arc::new(Sequenced::Missed));
            }
            _ => {}
        }
    }
}

/// Decrements the open-subscription count when dropped.
pub struct SubscriptionGuard(EventBus);

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.0.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct GroupGuard(EventBus);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.0.0.groups.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::subscription_groups(-1.0);
    }
}

/// Listens for other instances' events until `stop` is cancelled. A lost
/// connection is re-established with capped exponential backoff; while it is
/// down, health reports the bus degraded, and once it is back subscribers get
/// [`DomainEvent::EventsMissed`] (notifications sent meanwhile are gone).
pub async fn run_listener(
    bus: EventBus,
    pool: PgPool,
    conn: sea_orm::DatabaseConnection,
    stop: CancellationToken,
) {
    bus.0.cross_instance.store(true, Ordering::Relaxed);
    // A connection of its own, named so operators can tell it apart.
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .application_name("stockroom-events");
    let listener_pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .connect_lazy_with(options);
    let mut backoff = Duration::from_millis(100);
    let mut lost = false;
    'connect: while !stop.is_cancelled() {
        let mut listener = match connect(&listener_pool).await {
            Ok(l) => l,
            Err(err) => {
                let message = format!("listener cannot connect: {err}");
                if bus.health().listener_up {
                    tracing::error!(error = %err, "events: listener cannot connect; retrying");
                }
                bus.set_listener(false, Some(message));
                lost = true;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => break 'connect,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        bus.set_listener(true, None);
        backoff = Duration::from_millis(100);
        if std::mem::take(&mut lost) {
            tracing::info!("events: listener reconnected");
            bus.missed();
        }
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                _ = stop.cancelled() => break 'connect,
            };
            match next {
                Ok(Some(notification)) => bus.receive(notification.payload(), &conn).await,
                Ok(None) => {
                    tracing::warn!("events: listener connection lost; reconnecting");
                    bus.set_listener(false, Some("listener connection lost".into()));
                    lost = true;
                    continue 'connect;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "events: listener failed; reconnecting");
                    bus.set_listener(false, Some("listener connection lost".into()));
                    lost = true;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => break 'connect,
                    }
                    continue 'connect;
                }
            }
        }
    }
    listener_pool.close().await;
}

async fn connect(pool: &PgPool) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnection is ours to do, so that a loss is always noticed.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(description: &str) -> product::Model {
        let now = chrono::Utc::now();
        product::Model {
            id: Uuid::now_v7(),
            sku: "SKU-1".into(),
            name: "Widget".into(),
            description: Some(description.into()),
            category: None,
            unit: "ea".into(),
            stock: 5,
            low_stock_threshold: 2,
            version: 3,
            archived_at: None,
            created_at: now,
            updated_at: now,
            search_key: "sku-1\nwidget".into(),
            unit_cost: None,
        }
    }

    #[test]
    fn payloads_stay_under_the_notify_limit_and_refer_to_oversized_events() {
        let origin = Uuid::new_v4();
        let small: Vec<DomainEvent> = (0..40)
            .map(|_| DomainEvent::ProductUpdated {
                product: Arc::new(product("short")),
            })
            .collect();
        let big = DomainEvent::ProductUpdated {
            product: Arc::new(product(&"😀".repeat(2000))),
        };
        let mut all = small.clone();
        all.push(big);
        let out = payloads(origin, &all);
        assert!(out.len() > 1, "40 events need more than one payload");
        let mut kinds = Vec::new();
        for p in &out {
            assert!(p.len() < 8000, "payload of {} bytes", p.len());
            // `notify` sends them one per line.
            assert!(!p.contains('\n'), "a raw newline in {p}");
            let env: Envelope = serde_json::from_str(p).unwrap();
            assert_eq!(env.origin, origin);
            kinds.extend(env.entries.iter().map(|e| matches!(e, Entry::Whole(_))));
        }
        // 40 whole events, then the reference: in the order emitted.
        assert_eq!(kinds.len(), 41);
        assert!(kinds[..40].iter().all(|w| *w) && !kinds[40]);
    }
}
