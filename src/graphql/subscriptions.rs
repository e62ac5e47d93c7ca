//! GraphQL subscriptions over `/graphql/ws`, fed by the event bus.
//!
//! A resolver here runs once for a group of subscribers ([`super::fanout`],
//! which also ends one subscriber's stream when its token expires, its user
//! is deactivated or loses the role the resolver names, or it falls behind).
//! A resolver's stream ends, after one error item saying why, when it lagged
//! behind the bus; it ends silently at shutdown.
//!
//! When events from other instances may have been missed (the
//! listener reconnected), a stream that knows its position in the ledger
//! (`stockChanged(productId:)`) catches up from the database and goes on;
//! the others end with `EVENTS_MISSED`.
//!
//! `stockChanged(productId:)` is positioned by the product's version: every
//! event carries it as its `cursor`, and `after:` a cursor (or a version a
//! query answered) the stream first replays the ledger from there, then
//! goes live, with no gap and no duplicate.
//!
//! `stockChanged` without a product and `auditLogAdded` are positioned by
//! the transactions that wrote their rows ([`crate::service::positions`]),
//! and read the bus's in-order feed; they resume the same way, and catch up
//! from the database when the feed may have missed something.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_graphql::{Context, ID, SimpleObject, Subscription};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::WaitForCancellationFutureOwned;
use uuid::Uuid;

use super::alerts::Alert;
use super::context::{gql, state};
use super::fanout::{Opening, Share};
use super::types::{AuditLog, Product, StockMovement, parse_id};
use super::uploads::UploadJob;
use crate::entity::user::Role;
use crate::entity::{audit_log, product, stock_movement};
use crate::error::{AppError, AppResult};
use crate::events::{DomainEvent, Published, Sequenced};
use crate::service::context::Services;
use crate::service::positions::{Position, Positioned, StreamKind, Tail};

/// An event for a subscriber, or why its stream stops. Only
/// `EventsMissed` may be followed by more (see [`StreamState::next`]).
type Received = Result<Arc<Published>, AppError>;

/// Of a subscription's latest item: when the event behind it was published
/// on this instance (the delivery latency of `/metrics`), and the stream's
/// cursor after it, if it has one. The pipeline gives each group's execution
/// one and reads it once the item is rendered.
#[derive(Clone, Default)]
pub struct DeliveryClock(Arc<std::sync::Mutex<(Option<Instant>, Option<String>)>>);

impl DeliveryClock {
    fn set(&self, at: Instant) {
        if let Ok(mut slot) = self.0.lock() {
            slot.0 = Some(at);
        }
    }

    fn position(&self, cursor: String) {
        if let Ok(mut slot) = self.0.lock() {
            slot.1 = Some(cursor);
        }
    }

    pub fn take(&self) -> (Option<Instant>, Option<String>) {
        self.0
            .lock()
            .map(|mut slot| std::mem::take(&mut *slot))
            .unwrap_or_default()
    }
}

/// The subscription's clock, or one nobody reads (outside the pipeline).
fn clock(ctx: &Context<'_>) -> DeliveryClock {
    ctx.data_opt::<DeliveryClock>().cloned().unwrap_or_default()
}

struct StreamState {
    rx: broadcast::Receiver<Arc<Published>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl StreamState {
    /// The next event, or why the stream must end. `EventsMissed` is passed
    /// on without ending: a stream that can catch up from the database goes
    /// on after it (the others stop, see [`select`]).
    async fn next(mut self) -> Option<(Received, Self)> {
        if self.done {
            return None;
        }
        let ending = tokio::select! {
            biased;
            _ = self.shutdown.as_mut() => return None,
            received = self.rx.recv() => match received {
                Ok(event) => match &event.event {
                    DomainEvent::EventsMissed => {
                        return Some((Err(AppError::EventsMissed { cursor: None }), self));
                    }
                    _ => return Some((Ok(event), self)),
                },
                Err(RecvError::Lagged(missed)) => {
                    crate::metrics::subscription_lagged();
                    AppError::SubscriptionLagged { missed, cursor: None }
                }
                Err(RecvError::Closed) => return None,
            },
        };
        self.done = true;
        Some((Err(ending), self))
    }
}

/// The group's [`Opening`]. A subscription executed without one would
/// reach no subscriber's checks: it is refused.
fn opening<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Opening> {
    ctx.data_opt::<Opening>().ok_or_else(|| {
        gql(AppError::bad_input(
            "subscription",
            "subscriptions are served over WebSocket at /graphql/ws",
        ))
    })
}

/// The bus for subscribers with at least `required` (which the group
/// checks for each of them): committed events from now on, ending as the
/// module docs say.
fn events(
    ctx: &Context<'_>,
    required: Role,
) -> async_graphql::Result<impl Stream<Item = Received> + Send + use<>> {
    opening(ctx)?.require(required);
    let state = state(ctx)?;
    let st = StreamState {
        rx: state.services.bus().subscribe(),
        shutdown: Box::pin(state.shutdown.clone().cancelled_owned()),
        done: false,
    };
    Ok(stream::unfold(st, StreamState::next))
}

/// Tells the group the stream is open, and whether it may be shared.
fn opened<S>(ctx: &Context<'_>, share: Share, stream: S) -> async_graphql::Result<S> {
    opening(ctx)?.open(share);
    Ok(stream)
}

/// Keeps the events `pick` maps to an item; the first error ends the
/// stream at once (such a stream cannot catch up).
fn select<T, S, P>(
    events: S,
    clock: DeliveryClock,
    pick: P,
) -> impl Stream<Item = async_graphql::Result<T>>
where
    S: Stream<Item = Received>,
    P: Fn(&DomainEvent) -> Option<T>,
{
    stream::unfold(
        (Box::pin(events), pick, false),
        move |(mut events, pick, ended)| {
            let clock = clock.clone();
            async move {
                if ended {
                    return None;
                }
                loop {
                    match events.next().await? {
                        Ok(published) => {
                            if let Some(item) = pick(&published.event) {
                                clock.set(published.at);
                                return Some((Ok(item), (events, pick, false)));
                            }
                        }
                        Err(err) => return Some((Err(gql(err)), (events, pick, true))),
                    }
                }
            }
        },
    )
}

/// One product's movements, positioned by its version: replayed from the
/// ledger after a cursor, then live.
///
/// Every change of a product adds one to its version and publishes one
/// event (a movement, or a product created, updated or archived), so live
/// events follow each other version by version. One that skips ahead means
/// that something in between has not arrived: overtaken by a later event
/// from another instance, or lost while this instance's listener was down.
/// The ledger holds it (the later event committed after it), so the stream
/// reads the ledger after its position instead of guessing; it does the same
/// after a listener reconnect, and drops what it has already sent.
struct ProductStream<S> {
    events: Pin<Box<S>>,
    clock: DeliveryClock,
    services: Services,
    product_id: Uuid,
    /// The product's version as of the last change this stream accounted
    /// for (sent, or read from the ledger): nothing at or before it is sent
    /// again.
    position: i32,
    /// Replayed events not sent yet.
    queue: VecDeque<StockChangedEvent>,
    replay_limit: usize,
    done: bool,
}

impl<S: Stream<Item = Received> + Send> ProductStream<S> {
    async fn next(mut self) -> Option<(async_graphql::Result<StockChangedEvent>, Self)> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                self.clock.position(event.cursor.clone());
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            let ending = match self.events.next().await? {
                Ok(published) => {
                    let (version, moved) = match &published.event {
                        DomainEvent::StockMoved { product, movement }
                            if product.id == self.product_id =>
                        {
                            (product.version, Some((product, movement)))
                        }
                        DomainEvent::ProductCreated { product }
                        | DomainEvent::ProductUpdated { product }
                        | DomainEvent::ProductArchived { product }
                            if product.id == self.product_id =>
                        {
                            (product.version, None)
                        }
                        _ => continue,
                    };
                    if version <= self.position {
                        continue;
                    }
                    if version == self.position + 1 {
                        self.position = version;
                        match moved {
                            Some((product, movement)) => {
                                let event = StockChangedEvent::new(
                                    Arc::clone(product),
                                    Arc::clone(movement),
                                );
                                self.clock.set(published.at);
                                self.clock.position(event.cursor.clone());
                                return Some((Ok(event), self));
                            }
                            None => continue,
                        }
                    }
                    match self.replay().await {
                        Ok(()) => continue,
                        Err(err) => err,
                    }
                }
                Err(AppError::EventsMissed { .. }) => match self.replay().await {
                    Ok(()) => continue,
                    Err(err) => err,
                },
                // The queue is empty here: everything up to the position was sent.
                Err(AppError::SubscriptionLagged { missed, .. }) => AppError::SubscriptionLagged {
                    missed,
                    cursor: Some(self.position.to_string()),
                },
                Err(other) => other,
            };
            self.done = true;
            return Some((Err(gql(ending)), self));
        }
    }

    /// Queues what the ledger holds after `position`, and moves the
    /// position to the product's version as read (every change up to it has
    /// committed, so its movements are in the read). More than the replay
    /// limit ends the stream with `EVENTS_MISSED` and the cursor of the
    /// product now, to re-fetch and subscribe after.
    async fn replay(&mut self) -> Result<(), AppError> {
        let tail = crate::service::stock::ledger_after(
            self.services.conn(),
            self.product_id,
            self.position,
            self.replay_limit,
        )
        .await?;
        if tail.truncated {
            return Err(AppError::EventsMissed {
                cursor: Some(tail.product.version.to_string()),
            });
        }
        crate::metrics::subscription_replayed(tail.movements.len());
        self.position = self.position.max(tail.product.version);
        for (product, movement) in tail.movements {
            self.position = self.position.max(movement.product_version);
            self.queue
                .push_back(StockChangedEvent::new(product, movement));
        }
        Ok(())
    }
}

/// A row a positioned stream sends: its place and its item.
struct Row<T> {
    tx: i64,
    id: Uuid,
    item: T,
}

/// What a stream positioned by transactions sends: the streams of all
/// products and of the audit log (see [`crate::service::positions`]).
trait Source: Send + 'static {
    type Item: Send + 'static;
    type Table: Positioned;
    const KIND: StreamKind;
    /// The row this event is about, if the stream shows it.
    fn pick(event: &DomainEvent) -> Option<Row<Self::Item>>;
    /// What the database holds after `position`, in the order to send it.
    fn since(
        services: Services,
        position: Position,
        limit: usize,
    ) -> impl std::future::Future<Output = AppResult<Tail<Row<Self::Item>>>> + Send;
    /// The item with its cursor.
    fn placed(item: Self::Item, cursor: String) -> Self::Item;
}

/// The items of a stream of the ledger, each made from a movement.
trait LedgerItem: Sized + Send + 'static {
    const KIND: StreamKind;
    /// Only the movements that took a product to or below its threshold.
    const CROSSINGS_ONLY: bool;
    /// The item of a movement, if the stream shows it.
    fn of(product: Arc<product::Model>, movement: Arc<stock_movement::Model>) -> Option<Self>;
    fn placed(self, cursor: String) -> Self;
}

impl LedgerItem for StockChangedEvent {
    const KIND: StreamKind = StreamKind::Movements;
    const CROSSINGS_ONLY: bool = false;

    fn of(product: Arc<product::Model>, movement: Arc<stock_movement::Model>) -> Option<Self> {
        Some(Self::new(product, movement))
    }

    fn placed(mut self, cursor: String) -> Self {
        self.cursor = cursor;
        self
    }
}

impl LedgerItem for LowStockEvent {
    const KIND: StreamKind = StreamKind::LowStock;
    const CROSSINGS_ONLY: bool = true;

    fn of(product: Arc<product::Model>, movement: Arc<stock_movement::Model>) -> Option<Self> {
        Self::new(product, movement)
    }

    fn placed(mut self, cursor: String) -> Self {
        self.cursor = cursor;
        self
    }
}

/// A stream of the ledger: every movement of every product
/// (`Ledger<StockChangedEvent>`), or the crossings of a threshold
/// (`Ledger<LowStockEvent>`).
struct Ledger<T>(std::marker::PhantomData<T>);

impl<T: LedgerItem> Source for Ledger<T> {
    type Item = T;
    type Table = stock_movement::Entity;
    const KIND: StreamKind = T::KIND;

    fn pick(event: &DomainEvent) -> Option<Row<T>> {
        match event {
            DomainEvent::StockMoved { product, movement } => Some(Row {
                tx: movement.tx,
                id: movement.id,
                item: T::of(Arc::clone(product), Arc::clone(movement))?,
            }),
            _ => None,
        }
    }

    async fn since(
        services: Services,
        position: Position,
        limit: usize,
    ) -> AppResult<Tail<Row<T>>> {
        let tail = crate::service::stock::ledger_since(
            services.conn(),
            &position,
            limit,
            T::CROSSINGS_ONLY,
        )
        .await?;
        Ok(Tail {
            horizon: tail.horizon,
            truncated: tail.truncated,
            rows: tail
                .rows
                .into_iter()
                .filter_map(|(product, movement)| {
                    Some(Row {
                        tx: movement.tx,
                        id: movement.id,
                        item: T::of(product, movement)?,
                    })
                })
                .collect(),
        })
    }

    fn placed(item: T, cursor: String) -> T {
        item.placed(cursor)
    }
}

/// Every audit row.
struct AuditRows;

impl Source for AuditRows {
    type Item = AuditLog;
    type Table = audit_log::Entity;
    const KIND: StreamKind = StreamKind::Audit;

    fn pick(event: &DomainEvent) -> Option<Row<AuditLog>> {
        match event {
            DomainEvent::AuditLogAdded { entry } => Some(Row {
                tx: entry.tx,
                id: entry.id,
                item: AuditLog::from(entry.as_ref().clone()),
            }),
            _ => None,
        }
    }

    async fn since(
        services: Services,
        position: Position,
        limit: usize,
    ) -> AppResult<Tail<Row<AuditLog>>> {
        let tail = crate::service::audit::since(services.conn(), &position, limit).await?;
        Ok(Tail {
            horizon: tail.horizon,
            truncated: tail.truncated,
            rows: tail
                .rows
                .into_iter()
                .map(|entry| Row {
                    tx: entry.tx,
                    id: entry.id,
                    item: AuditLog::from(entry),
                })
                .collect(),
        })
    }

    fn placed(mut item: AuditLog, cursor: String) -> AuditLog {
        item.cursor = Some(cursor);
        item
    }
}

/// A stream positioned by transactions: replayed from the database after a
/// position, then live from the in-order feed, with no gap and no
/// duplicate. When the feed may have missed transactions (the listener
/// reconnected, a notification could not be read) or this stream fell
/// behind it, the stream reads the database after its position instead of
/// ending; only a replay past the limit ends it (`EVENTS_MISSED`, with the
/// cursor of everything committed by then).
struct PositionedStream<S: Source> {
    rx: broadcast::Receiver<Arc<Sequenced>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    clock: DeliveryClock,
    services: Services,
    position: Position,
    queue: VecDeque<Row<S::Item>>,
    /// While a replay is sent: its rows left per transaction, and the
    /// database's horizon read before them.
    replaying: Option<(BTreeMap<i64, usize>, i64)>,
    /// When the live transaction being sent was published here.
    published: Option<Instant>,
    replay_limit: usize,
    done: bool,
}

impl<S: Source> PositionedStream<S> {
    /// Subscribed to the feed before anything is read, so nothing falls
    /// between the two.
    async fn open(ctx: &Context<'_>, after: Option<Position>) -> async_graphql::Result<Self> {
        let state = state(ctx)?;
        let services = state.services.clone();
        let rx = services.bus().subscribe_in_order();
        let mut stream = Self {
            rx,
            shutdown: Box::pin(state.shutdown.clone().cancelled_owned()),
            clock: clock(ctx),
            services,
            position: Position::default(),
            queue: VecDeque::new(),
            replaying: None,
            published: None,
            replay_limit: state.config.subscription_replay_limit,
            done: false,
        };
        match after {
            Some(after) => {
                stream.position = after;
                stream.replay().await.map_err(gql)?;
            }
            // From now on: everything committed so far counts as sent. The
            // horizon alone would not say it on PostgreSQL, where it is the
            // oldest transaction still running anywhere in the cluster, and
            // transactions above it may have committed already.
            None => {
                stream.position =
                    crate::service::positions::now::<S::Table>(stream.services.conn())
                        .await
                        .map_err(gql)?;
            }
        }
        Ok(stream)
    }

    async fn next(mut self) -> Option<(async_graphql::Result<S::Item>, Self)> {
        loop {
            if let Some(row) = self.queue.pop_front() {
                self.position.sent(row.tx, row.id);
                if let Some((left, horizon)) = &mut self.replaying {
                    if let Some(n) = left.get_mut(&row.tx) {
                        *n -= 1;
                        if *n == 0 {
                            left.remove(&row.tx);
                        }
                    }
                    // Every replayed transaction below the first one left
                    // has been sent whole.
                    let next = left.keys().next().copied().unwrap_or(*horizon);
                    self.position.raise(next.min(*horizon));
                    if left.is_empty() {
                        self.replaying = None;
                    }
                }
                let cursor = self.position.encode(S::KIND);
                if let Some(at) = self.published {
                    self.clock.set(at);
                }
                self.clock.position(cursor.clone());
                return Some((Ok(S::placed(row.item, cursor)), self));
            }
            if self.done {
                return None;
            }
            self.published = None;
            let caught_up = tokio::select! {
                biased;
                _ = self.shutdown.as_mut() => return None,
                received = self.rx.recv() => match received {
                    Ok(sequenced) => match sequenced.as_ref() {
                        Sequenced::Transaction { horizon, events, at } => {
                            // Everything below its horizon came before it.
                            self.position.raise(*horizon);
                            for event in events {
                                if let Some(row) = S::pick(event)
                                    && !self.position.covers(row.tx, row.id)
                                {
                                    self.queue.push_back(row);
                                }
                            }
                            self.published = Some(*at);
                            continue;
                        }
                        Sequenced::Missed => self.replay().await,
                    },
                    Err(RecvError::Lagged(_)) => {
                        crate::metrics::subscription_lagged();
                        self.replay().await
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            if let Err(err) = caught_up {
                self.done = true;
                return Some((Err(gql(err)), self));
            }
        }
    }

    /// Queues what the database holds after the position. Past the replay
    /// limit: `EVENTS_MISSED`, with the position of everything committed
    /// now, to re-read and subscribe after.
    async fn replay(&mut self) -> AppResult<()> {
        let tail = S::since(
            self.services.clone(),
            self.position.clone(),
            self.replay_limit,
        )
        .await?;
        if tail.truncated {
            let now = crate::service::positions::now::<S::Table>(self.services.conn()).await?;
            return Err(AppError::EventsMissed {
                cursor: Some(now.encode(S::KIND)),
            });
        }
        crate::metrics::subscription_replayed(tail.rows.len());
        if tail.rows.is_empty() {
            self.position.raise(tail.horizon);
            return Ok(());
        }
        let mut left = BTreeMap::new();
        for row in &tail.rows {
            *left.entry(row.tx).or_insert(0usize) += 1;
        }
        self.replaying = Some((left, tail.horizon));
        self.queue.extend(tail.rows);
        Ok(())
    }
}

/// Reads `after` as a cursor of `S`'s stream.
fn cursor_of(kind: StreamKind, after: Option<String>) -> async_graphql::Result<Option<Position>> {
    after
        .map(|cursor| Position::decode(kind, "after", &cursor))
        .transpose()
        .map_err(gql)
}

/// Opens a positioned stream (`after:` a cursor of it, or from now on) for
/// subscribers with at least `required`.
async fn positioned<S: Source>(
    ctx: &Context<'_>,
    required: Role,
    after: Option<Position>,
) -> async_graphql::Result<Pin<Box<dyn Stream<Item = async_graphql::Result<S::Item>> + Send>>> {
    opening(ctx)?.require(required);
    let share = if after.is_some() {
        Share::Private
    } else {
        Share::Live
    };
    let stream = PositionedStream::<S>::open(ctx, after).await?;
    opened(
        ctx,
        share,
        Box::pin(stream::unfold(stream, PositionedStream::next)),
    )
}

#[derive(SimpleObject)]
pub struct StockChangedEvent {
    /// The product right after the movement.
    pub product: Product,
    pub movement: StockMovement,
    /// Where this event stands in its product's stream: the product's
    /// version after the movement. `stockChanged(productId:, after:)` with it
    /// resumes right after this event.
    pub cursor: String,
}

impl StockChangedEvent {
    fn new(product: Arc<product::Model>, movement: Arc<stock_movement::Model>) -> Self {
        Self {
            cursor: product.version.to_string(),
            product: Product::from(product.as_ref().clone()),
            movement: StockMovement::with_product(movement.as_ref().clone(), product),
        }
    }
}

#[derive(SimpleObject)]
pub struct LowStockEvent {
    /// The product right after the movement that crossed its threshold.
    pub product: Product,
    /// Its stock right after that movement.
    pub stock: i32,
    /// Its threshold when the movement crossed it.
    pub threshold: i32,
    /// Where this event stands in the stream: `lowStock(after:)` with it
    /// resumes right after this event.
    pub cursor: String,
}

impl LowStockEvent {
    /// The event of a movement, if it crossed its product's threshold.
    fn new(product: Arc<product::Model>, movement: Arc<stock_movement::Model>) -> Option<Self> {
        let threshold = movement.crossed_threshold?;
        Some(Self {
            stock: movement.balance_after,
            threshold,
            product: Product::from(product.as_ref().clone()),
            cursor: String::new(),
        })
    }
}

#[derive(Default)]
pub struct Subscription;

// Roles are checked by `events` against a fresh read of the user (not the
// request's cached one), which is why these fields carry no `RoleGuard`.
#[Subscription]
impl Subscription {
    /// Every committed movement, of one product or of all. `movement.balanceAfter`
    /// and `product.version` let a client detect a gap.
    ///
    /// Every event carries a `cursor`, and the stream can start from one:
    /// `after:` a cursor first replays the movements since, at most
    /// SUBSCRIPTION_REPLAY_LIMIT of them (past it: `EVENTS_MISSED` with the
    /// cursor to re-fetch from), then goes live, with no gap and no
    /// duplicate. With `productId`, the product's `version` as a query
    /// answered it is a cursor too, and `initial: true` starts with the
    /// product's last movement, as it stands now. Without it, the cursor
    /// covers every product; a cursor of one stream is refused by another.
    async fn stock_changed(
        &self,
        ctx: &Context<'_>,
        product_id: Option<ID>,
        after: Option<String>,
        initial: Option<bool>,
    ) -> async_graphql::Result<
        Pin<Box<dyn Stream<Item = async_graphql::Result<StockChangedEvent>> + Send>>,
    > {
        let only = product_id
            .map(|id| parse_id("productId", &id))
            .transpose()
            .map_err(gql)?;
        let initial = initial.unwrap_or(false);
        let Some(product_id) = only else {
            if initial {
                return Err(gql(AppError::bad_input(
                    "initial",
                    "a stream of all products has no single state to start from; give \
                     productId, or the cursor of an event",
                )));
            }
            let after = cursor_of(StreamKind::Movements, after)?;
            return positioned::<Ledger<StockChangedEvent>>(ctx, Role::Viewer, after).await;
        };
        let after = after
            .map(|cursor| {
                cursor.trim().parse::<i32>().map_err(|_| {
                    AppError::bad_input("after", "not a cursor of this stream (a product version)")
                })
            })
            .transpose()
            .map_err(gql)?;
        if after.is_some() && initial {
            return Err(gql(AppError::bad_input(
                "initial",
                "give after or initial, not both",
            )));
        }
        // Subscribed before the ledger is read, so nothing falls between the
        // two; what both hold is sent once (live events at or before the
        // stream's position are dropped).
        let events = events(ctx, Role::Viewer)?;
        let state = state(ctx)?;
        // From a position of its own; else live, for anyone watching the
        // product from now on.
        let share = if after.is_some() || initial {
            Share::Private
        } else {
            Share::Live
        };
        let mut stream = ProductStream {
            events: Box::pin(events),
            clock: clock(ctx),
            services: state.services.clone(),
            product_id,
            position: 0,
            queue: VecDeque::new(),
            replay_limit: state.config.subscription_replay_limit,
            done: false,
        };
        match after {
            Some(after) => {
                stream.position = after;
                stream.replay().await.map_err(gql)?;
            }
            None => {
                let (product, last) =
                    crate::service::stock::current(stream.services.conn(), product_id)
                        .await
                        .map_err(gql)?;
                stream.position = product.version;
                if let (true, Some(last)) = (initial, last) {
                    // The current state: the product now, with the movement
                    // that left its stock as it is.
                    stream
                        .queue
                        .push_back(StockChangedEvent::new(Arc::new(product), Arc::new(last)));
                }
            }
        }
        opened(
            ctx,
            share,
            Box::pin(stream::unfold(stream, ProductStream::next)),
        )
    }

    /// A movement took a product from above its threshold to at or below it:
    /// once per crossing, not for every movement below the threshold.
    ///
    /// Every event carries a `cursor`; `after:` one first replays the
    /// crossings recorded since (at most SUBSCRIPTION_REPLAY_LIMIT; past it,
    /// `EVENTS_MISSED` with the cursor to re-fetch from), then goes live,
    /// with no gap and no duplicate.
    async fn low_stock(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
    ) -> async_graphql::Result<
        Pin<Box<dyn Stream<Item = async_graphql::Result<LowStockEvent>> + Send>>,
    > {
        let after = cursor_of(StreamKind::LowStock, after)?;
        positioned::<Ledger<LowStockEvent>>(ctx, Role::Viewer, after).await
    }

    /// Every alert as it is queued and on every change of status (ADMIN).
    async fn alert_updated(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Alert>> + use<>> {
        let events = events(ctx, Role::Admin)?;
        let stream = select(events, clock(ctx), |event| match event {
            DomainEvent::AlertChanged { alert } => Some(Alert::from(alert.as_ref().clone())),
            _ => None,
        });
        opened(ctx, Share::Live, stream)
    }

    /// One upload job (MANAGER and above): its state now, then after every
    /// batch and at the end; the stream ends once the job has finished.
    async fn upload_job_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<UploadJob>> + use<>> {
        let id = parse_id("id", &id).map_err(gql)?;
        // Subscribed before the read, so no change falls between the two.
        let events = events(ctx, Role::Manager)?;
        let now = crate::service::uploads::get(state(ctx)?.services.conn(), id)
            .await
            .map_err(gql)?;
        // Events older than that read are already in it.
        let since = now.updated_at;
        let updates = select(events, clock(ctx), move |event| match event {
            DomainEvent::UploadJobChanged { job } if job.id == id && job.updated_at >= since => {
                Some(job.as_ref().clone())
            }
            _ => None,
        });
        let stream = stream::once(futures_util::future::ready(Ok(now))).chain(updates);
        // Up to and including the first finished state: a marker after it
        // ends the stream without waiting for another event. It starts from
        // the job's state as read for this subscriber.
        let stream = stream
            .flat_map(|item| {
                let last = item.as_ref().is_ok_and(|job| job.status.is_finished());
                let mut out = vec![Some(item.map(UploadJob::from))];
                if last {
                    out.push(None);
                }
                stream::iter(out)
            })
            .take_while(|item| futures_util::future::ready(item.is_some()))
            .filter_map(futures_util::future::ready);
        opened(ctx, Share::Private, stream)
    }

    /// Every audit row, as it commits (ADMIN). Each carries its `cursor`;
    /// `after:` one, the stream first replays the rows since (at most
    /// SUBSCRIPTION_REPLAY_LIMIT; past it: `EVENTS_MISSED` with the cursor
    /// to re-read from), then goes live, with no gap and no duplicate.
    async fn audit_log_added(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
    ) -> async_graphql::Result<Pin<Box<dyn Stream<Item = async_graphql::Result<AuditLog>> + Send>>>
    {
        let after = cursor_of(StreamKind::Audit, after)?;
        positioned::<AuditRows>(ctx, Role::Admin, after).await
    }
}
