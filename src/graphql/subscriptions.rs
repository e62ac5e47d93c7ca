//! GraphQL subscriptions over `/graphql/ws`, fed by the event bus.
//!
//! Every stream ends, after one error item saying why, when its subscriber
//! lagged behind the bus, when events from other instances may have been
//! missed, when the access token expires, or when the user is deactivated or
//! loses the role the subscription needs; it ends silently at shutdown.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::{Context, ID, SimpleObject, Subscription};
use chrono::Utc;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::WaitForCancellationFutureOwned;
use uuid::Uuid;

use super::alerts::Alert;
use super::context::{gql, request, state};
use super::types::{AuditLog, Product, StockMovement, parse_id};
use super::uploads::UploadJob;
use crate::entity::user::Role;
use crate::error::AppError;
use crate::events::{DomainEvent, SubscriptionGuard};
use crate::service::require_role;

/// Per WebSocket connection: how many subscriptions are open on it.
pub struct SocketSubscriptions {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl SocketSubscriptions {
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    fn acquire(&self) -> Result<SocketSlot, AppError> {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        crate::metrics::subscriptions(1.0);
        let slot = SocketSlot(Arc::clone(&self.open));
        if prev >= self.max {
            return Err(AppError::LimitExceeded(format!(
                "too many subscriptions on this connection (at most {})",
                self.max
            )));
        }
        Ok(slot)
    }
}

/// Frees a subscription's place on its connection when its stream drops.
struct SocketSlot(Arc<AtomicUsize>);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::subscriptions(-1.0);
    }
}

type EventResult = async_graphql::Result<Arc<DomainEvent>>;

struct StreamState {
    rx: broadcast::Receiver<Arc<DomainEvent>>,
    user_id: Uuid,
    required: Role,
    expiry: Pin<Box<tokio::time::Sleep>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
    _slot: SocketSlot,
    _counted: SubscriptionGuard,
}

impl StreamState {
    async fn next(mut self) -> Option<(EventResult, Self)> {
        if self.done {
            return None;
        }
        loop {
            let ending = tokio::select! {
                biased;
                _ = self.shutdown.as_mut() => return None,
                _ = self.expiry.as_mut() => AppError::Unauthenticated(
                    "the access token expired; reconnect with a new token".into(),
                ),
                received = self.rx.recv() => match received {
                    Ok(event) => match &*event {
                        DomainEvent::UserChanged { user_id, role, active }
                            if *user_id == self.user_id =>
                        {
                            if !active {
                                AppError::Unauthenticated("the account was deactivated".into())
                            } else if let Err(forbidden) = require_role(*role, self.required) {
                                forbidden
                            } else {
                                continue;
                            }
                        }
                        DomainEvent::EventsMissed => AppError::EventsMissed,
                        _ => return Some((Ok(event), self)),
                    },
                    Err(RecvError::Lagged(missed)) => {
                        crate::metrics::subscription_lagged();
                        AppError::SubscriptionLagged { missed }
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            self.done = true;
            return Some((Err(gql(ending)), self));
        }
    }
}

/// The bus as seen by one subscriber with at least `required`: committed
/// events from now on, ending as the module docs say.
async fn events(
    ctx: &Context<'_>,
    required: Role,
) -> async_graphql::Result<impl Stream<Item = EventResult> + use<>> {
    let state = state(ctx)?;
    // Subscribe first: a role change or deactivation committed after this
    // point reaches the stream; one committed before it shows in the fresh
    // read below.
    let bus = state.services.bus();
    let rx = bus.subscribe();
    let token = request(ctx)?.bearer().unwrap_or_default();
    let (user, expires) = state
        .auth
        .authenticate_fresh(&state.services, token)
        .await
        .map_err(gql)?;
    require_role(user.role, required).map_err(gql)?;
    let slot = match ctx.data_opt::<SocketSubscriptions>() {
        Some(subs) => subs.acquire().map_err(gql)?,
        None => {
            return Err(gql(AppError::bad_input(
                "subscription",
                "subscriptions are served over WebSocket at /graphql/ws",
            )));
        }
    };
    let left = (expires - Utc::now()).to_std().unwrap_or_default();
    let st = StreamState {
        rx,
        user_id: user.id,
        required,
        expiry: Box::pin(tokio::time::sleep(left)),
        shutdown: Box::pin(state.shutdown.clone().cancelled_owned()),
        done: false,
        _slot: slot,
        _counted: bus.track_subscription(),
    };
    Ok(stream::unfold(st, StreamState::next))
}

/// Keeps the events `pick` maps to an item, and every error.
fn select<T>(
    events: impl Stream<Item = EventResult>,
    pick: impl Fn(&DomainEvent) -> Option<T>,
) -> impl Stream<Item = async_graphql::Result<T>> {
    events.filter_map(move |item| {
        futures_util::future::ready(match item {
            Ok(event) => pick(&event).map(Ok),
            Err(err) => Some(Err(err)),
        })
    })
}

#[derive(SimpleObject)]
pub struct StockChangedEvent {
    /// The product right after the movement.
    pub product: Product,
    pub movement: StockMovement,
}

#[derive(SimpleObject)]
pub struct LowStockEvent {
    pub product: Product,
    pub stock: i32,
    pub threshold: i32,
}

#[derive(Default)]
pub struct Subscription;

// Roles are checked by `events` against a fresh read of the user (not the
// request's cached one), which is why these fields carry no `RoleGuard`.
#[Subscription]
impl Subscription {
    /// Every committed movement, of one product or of all. `movement.balanceAfter`
    /// and `product.version` let a client detect a gap.
    async fn stock_changed(
        &self,
        ctx: &Context<'_>,
        product_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<StockChangedEvent>> + use<>>
    {
        let only = product_id
            .map(|id| parse_id("productId", &id))
            .transpose()
            .map_err(gql)?;
        let events = events(ctx, Role::Viewer).await?;
        Ok(select(events, move |event| match event {
            DomainEvent::StockMoved { product, movement }
                if only.is_none_or(|id| id == product.id) =>
            {
                Some(StockChangedEvent {
                    product: Product::from(product.as_ref().clone()),
                    movement: StockMovement::with_product(
                        movement.as_ref().clone(),
                        Arc::clone(product),
                    ),
                })
            }
            _ => None,
        }))
    }

    /// A movement took a product from above its threshold to at or below it:
    /// once per crossing, not for every movement below the threshold.
    async fn low_stock(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<LowStockEvent>> + use<>>
    {
        let events = events(ctx, Role::Viewer).await?;
        Ok(select(events, |event| match event {
            DomainEvent::LowStockCrossed { product } => Some(LowStockEvent {
                stock: product.stock,
                threshold: product.low_stock_threshold,
                product: Product::from(product.as_ref().clone()),
            }),
            _ => None,
        }))
    }

    /// Every alert as it is queued and on every change of status (ADMIN).
    async fn alert_updated(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Alert>> + use<>> {
        let events = events(ctx, Role::Admin).await?;
        Ok(select(events, |event| match event {
            DomainEvent::AlertChanged { alert } => Some(Alert::from(alert.as_ref().clone())),
            _ => None,
        }))
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
        let events = events(ctx, Role::Manager).await?;
        let now = crate::service::uploads::get(state(ctx)?.services.conn(), id)
            .await
            .map_err(gql)?;
        // Events older than that read are already in it.
        let since = now.updated_at;
        let updates = select(events, move |event| match event {
            DomainEvent::UploadJobChanged { job } if job.id == id && job.updated_at >= since => {
                Some(job.as_ref().clone())
            }
            _ => None,
        });
        let stream = stream::once(futures_util::future::ready(Ok(now))).chain(updates);
        // Up to and including the first finished state: a marker after it
        // ends the stream without waiting for another event.
        Ok(stream
            .flat_map(|item| {
                let last = item.as_ref().is_ok_and(|job| job.status.is_finished());
                let mut out = vec![Some(item.map(UploadJob::from))];
                if last {
                    out.push(None);
                }
                stream::iter(out)
            })
            .take_while(|item| futures_util::future::ready(item.is_some()))
            .filter_map(futures_util::future::ready))
    }

    /// Every audit row, as it commits (ADMIN).
    async fn audit_log_added(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<AuditLog>> + use<>> {
        let events = events(ctx, Role::Admin).await?;
        Ok(select(events, |event| match event {
            DomainEvent::AuditLogAdded { entry } => Some(AuditLog::from(entry.as_ref().clone())),
            _ => None,
        }))
    }
}
