//! Live subscriptions grouped by what decides their answer, so that an event
//! is executed once per group however many sockets watch it.
//!
//! A group is keyed by the document (the SHA-256 of its text), the operation,
//! the variables and the caller's visibility (role and restriction, which
//! the field guards read). Its one execution runs on a task of its own, with
//! the first subscriber's caller, and sends each answer, rendered and coded,
//! to a broadcast channel; every member reads the same answer from it.
//!
//! What belongs to one subscriber stays with its member, in this module
//! only: the fresh check of its token, active account and role (the role the
//! resolver asked for, reported through [`Opening`]), its place among the
//! connection's subscriptions, the token's expiry, a deactivation or a lost
//! role (one place told of every user change, [`UserWatch`]), and falling
//! behind (`SUBSCRIPTION_LAGGED`, with the cursor of the last answer it was
//! sent). Any of these ends that member's stream only; the group goes on
//! while it has members and stops with the last.
//!
//! A stream that starts from a position of its own (`after:`, `initial:`,
//! an upload job's current state) opens [`Share::Private`]: it is a group of
//! one, and a subscriber that joined it before it said so starts its own.
//! Resolvers reach the bus only through an [`Opening`]: executed without
//! one, a subscription is refused rather than run unchecked.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use async_graphql::{Data, Response};
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::codes;
use crate::entity::user::Role;
use crate::error::AppError;
use crate::events::{DomainEvent, Observer};
use crate::service::{Caller, Restriction, require_role};
use crate::state::AppState;

/// What decides a subscription's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub document: [u8; 32],
    pub operation: Option<String>,
    /// The variables as the client sent them, as JSON.
    pub variables: String,
    pub audience: Audience,
}

/// The caller as the field guards see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Audience {
    Anonymous,
    Invalid,
    User(Role, Option<Restriction>),
}

impl Audience {
    pub fn of(caller: &Caller) -> Self {
        match caller {
            Caller::Anonymous => Self::Anonymous,
            Caller::Invalid(_) => Self::Invalid,
            Caller::User(user) => Self::User(user.role, user.restriction),
        }
    }
}

/// Whether subscribers may share a stream's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// Events from now on: the same for every subscriber.
    Live,
    /// Starts from a position or a state of its own.
    Private,
}

/// What a subscription resolver reports to its group.
#[derive(Clone, Copy, Debug, Default)]
pub struct Setup {
    /// The role a subscriber needs, once the resolver has said it.
    pub required: Option<Role>,
    /// Set when the resolver returns its stream.
    pub opened: Option<Share>,
}

/// Given to a group's execution: its resolver says the role it needs before
/// it reads anything, and whether its stream may be shared once it is open.
pub struct Opening(watch::Sender<Setup>);

impl Opening {
    pub fn require(&self, role: Role) {
        self.0.send_modify(|setup| setup.required = Some(role));
    }

    pub fn open(&self, share: Share) {
        self.0.send_modify(|setup| setup.opened = Some(share));
    }
}

/// One answer of a group, for all its members: serialized once, and the
/// same bytes framed for every socket.
pub struct Rendered {
    /// The response as JSON (`data`, `errors`, `extensions`).
    pub json: Box<str>,
    /// When the event behind it was published on this instance.
    pub published: Option<Instant>,
    /// The stream's position after it, for a member that falls behind.
    pub cursor: Option<String>,
}

impl Rendered {
    pub fn new(response: &Response, published: Option<Instant>, cursor: Option<String>) -> Self {
        Self {
            json: to_json(response).into_boxed_str(),
            published,
            cursor,
        }
    }
}

/// One answer for one socket: its group's, shared by every member, or its
/// own (an error that ends only its stream, a query or mutation's result).
pub enum Payload {
    Shared(Arc<Rendered>),
    Own(Box<Response>),
}

impl Payload {
    pub fn own(response: Response) -> Self {
        Self::Own(Box::new(response))
    }

    /// About how long the answer's JSON is.
    pub fn size_hint(&self) -> usize {
        match self {
            Self::Shared(rendered) => rendered.json.len(),
            Self::Own(_) => 256,
        }
    }

    /// Appends the answer as JSON.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Self::Shared(rendered) => out.push_str(&rendered.json),
            Self::Own(response) => out.push_str(&to_json(response)),
        }
    }
}

/// A response as JSON: what a client reads as the `payload` of a frame.
/// HTTP's cache control and headers are not serialized. A response that
/// cannot be serialized (never expected: strings, numbers and maps with
/// string keys) becomes the coded internal error, as on HTTP.
fn to_json(response: &Response) -> String {
    serde_json::to_string(response)
        .or_else(|err| {
            let error = AppError::internal(anyhow::anyhow!("serializing an answer: {err}"));
            serde_json::to_string(&codes::error_response(error, None))
        })
        .unwrap_or_else(|_| r#"{"data":null}"#.into())
}

type Registry = Mutex<HashMap<GroupKey, Weak<Group>>>;

struct Group {
    /// None once the execution has ended: nobody joins it any more.
    output: Arc<Mutex<Option<broadcast::Sender<Arc<Rendered>>>>>,
    setup: watch::Receiver<Setup>,
    stop: CancellationToken,
    key: Option<GroupKey>,
    registry: Weak<Registry>,
    _counted: crate::events::GroupGuard,
}

impl Group {
    fn receiver(&self) -> Option<broadcast::Receiver<Arc<Rendered>>> {
        if self.setup.borrow().opened == Some(Share::Private) {
            return None;
        }
        let output = self.output.lock().ok()?;
        output.as_ref().map(broadcast::Sender::subscribe)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop.cancel();
        if let (Some(key), Some(registry)) = (&self.key, self.registry.upgrade())
            && let Ok(mut groups) = registry.lock()
            && groups.get(key).is_some_and(|g| g.strong_count() == 0)
        {
            groups.remove(key);
        }
    }
}

/// The live groups of an instance.
pub struct Fanout {
    groups: Arc<Registry>,
    users: Arc<UserWatch>,
    state: AppState,
}

/// A subscriber, as the pipeline prepared it.
pub struct Subscriber {
    pub caller: Caller,
    /// The connection's token.
    pub bearer: String,
    /// The connection's data: its subscription count.
    pub session: Arc<Data>,
    /// The root field, for the path of an error that ends the stream.
    pub field: String,
}

impl Fanout {
    pub fn new(state: AppState) -> Self {
        let users = Arc::new(UserWatch::new(&state));
        state.services.bus().observe(users.clone());
        Self {
            groups: Arc::default(),
            users,
            state,
        }
    }

    /// The subscriber's stream: joins the group of `key` (or starts one
    /// with `execute`, which runs the subscription for the group), checks
    /// the subscriber, then passes on the group's answers.
    pub fn subscribe<F>(
        &self,
        subscriber: Subscriber,
        key: GroupKey,
        execute: F,
    ) -> BoxStream<'static, Payload>
    where
        F: FnOnce(Opening) -> BoxStream<'static, Rendered> + Send + 'static,
    {
        let groups = Arc::clone(&self.groups);
        let users = Arc::clone(&self.users);
        let state = self.state.clone();
        // The opening (the join and the fresh check, with its database read)
        // is boxed, so that its state is freed once it is done instead of
        // staying inline in the member's stream for its whole life.
        stream::once(Box::pin(async move {
            let field = subscriber.field.clone();
            match Joined::join(&groups, &state, key, execute).await {
                Some(joined) => match joined.admit(&users, &state, subscriber).await {
                    Ok(member) => stream::unfold(Box::new(member), Member::next).boxed(),
                    Err(error) => stream::once(std::future::ready(Payload::own(
                        codes::error_response(error, Some(&field)),
                    )))
                    .boxed(),
                },
                None => {
                    let error =
                        AppError::internal(anyhow::anyhow!("no subscription group to join"));
                    stream::once(std::future::ready(Payload::own(codes::error_response(
                        error,
                        Some(&field),
                    ))))
                    .boxed()
                }
            }
        }))
        .flatten()
        .boxed()
    }
}

/// The group of `key` when it takes members, else a new one (registered
/// under `key`, when there is one) running `execute`, if it is still here.
/// True when new.
fn join_or_start<F>(
    groups: &Arc<Registry>,
    state: &AppState,
    key: Option<&GroupKey>,
    execute: &mut Option<F>,
) -> Option<(Arc<Group>, broadcast::Receiver<Arc<Rendered>>, bool)>
where
    F: FnOnce(Opening) -> BoxStream<'static, Rendered> + Send + 'static,
{
    let mut registry = key.and_then(|_| groups.lock().ok());
    if let (Some(key), Some(registry)) = (key, registry.as_ref())
        && let Some(group) = registry.get(key).and_then(Weak::upgrade)
        && let Some(rx) = group.receiver()
    {
        return Some((group, rx, false));
    }
    let execute = execute.take()?;
    let (setup_tx, setup) = watch::channel(Setup::default());
    let (tx, rx) = broadcast::channel(state.config.event_bus_capacity.max(1));
    let output = Arc::new(Mutex::new(Some(tx)));
    let stop = CancellationToken::new();
    let group = Arc::new(Group {
        output: Arc::clone(&output),
        setup,
        stop: stop.clone(),
        key: key.cloned(),
        registry: Arc::downgrade(groups),
        _counted: state.services.bus().track_group(),
    });
    if let (Some(key), Some(registry)) = (key, registry.as_mut()) {
        registry.insert(key.clone(), Arc::downgrade(&group));
    }
    drop(registry);
    let mut answers = execute(Opening(setup_tx));
    let bus = state.services.bus().clone();
    state.tasks.spawn(async move {
        loop {
            let answer = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                answer = answers.next() => answer,
            };
            let Some(answer) = answer else { break };
            bus.rendered();
            let sender = output.lock().ok().and_then(|o| o.clone());
            match sender {
                // No member right now is not an error: they may be gone.
                Some(tx) => drop(tx.send(Arc::new(answer))),
                None => break,
            }
        }
        // Members read what was sent, then their streams end.
        if let Ok(mut output) = output.lock() {
            output.take();
        }
    });
    Some((group, rx, true))
}

/// A subscriber in its group, not yet checked.
struct Joined {
    group: Arc<Group>,
    rx: broadcast::Receiver<Arc<Rendered>>,
    /// An answer read while waiting for the resolver (its error).
    early: Option<Arc<Rendered>>,
    required: Role,
}

impl Joined {
    /// Joins (or starts) the group and waits for its resolver to open the
    /// stream, or fail.
    async fn join<F>(
        groups: &Arc<Registry>,
        state: &AppState,
        key: GroupKey,
        execute: F,
    ) -> Option<Self>
    where
        F: FnOnce(Opening) -> BoxStream<'static, Rendered> + Send + 'static,
    {
        let mut execute = Some(execute);
        let (mut group, mut rx, mut leader) =
            join_or_start(groups, state, Some(&key), &mut execute)?;
        let mut early = None;
        loop {
            let mut setup = group.setup.clone();
            tokio::select! {
                biased;
                opened = setup.wait_for(|s| s.opened.is_some()) => {
                    let private = opened.is_ok_and(|s| s.opened == Some(Share::Private));
                    if private && !leader {
                        // Joined before it said it starts from a position
                        // of its own: start ours.
                        (group, rx, leader) = join_or_start(groups, state, None, &mut execute)?;
                        continue;
                    }
                }
                item = rx.recv() => early = item.ok(),
            }
            break;
        }
        let required = group.setup.borrow().required.unwrap_or(Role::Viewer);
        Some(Self {
            group,
            rx,
            early,
            required,
        })
    }

    /// Checks the subscriber afresh (token, active account, role) and takes
    /// its place on the connection. The user's changes are watched before the
    /// read, so that one committed after it still reaches the stream.
    async fn admit(
        self,
        users: &Arc<UserWatch>,
        state: &AppState,
        subscriber: Subscriber,
    ) -> Result<Member, AppError> {
        let user = subscriber.caller.user()?;
        let standing = users.watch(user.id);
        let session = &subscriber.session;
        let (fresh, expires) = state
            .auth
            .authenticate_fresh(&state.services, &subscriber.bearer)
            .await?;
        let watched = Watched {
            required: self.required,
            audience: Audience::of(&subscriber.caller),
        };
        watched.check(fresh.role, true)?;
        let sockets = session
            .get(&TypeId::of::<SocketSubscriptions>())
            .and_then(|data| data.downcast_ref::<SocketSubscriptions>())
            .ok_or_else(|| {
                AppError::bad_input(
                    "subscription",
                    "subscriptions are served over WebSocket at /graphql/ws",
                )
            })?;
        let slot = sockets.acquire()?;
        let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
        Ok(Member {
            _group: self.group,
            rx: self.rx,
            early: self.early,
            watched,
            cursor: None,
            field: subscriber.field,
            standing,
            expiry: Box::pin(tokio::time::sleep(left)),
            delivery: crate::metrics::subscription_delivery(),
            _slot: slot,
            _counted: state.services.bus().track_subscription(),
            done: false,
        })
    }
}

/// What a member's user must keep to go on watching.
#[derive(Clone, Copy)]
struct Watched {
    required: Role,
    /// Whom its answers are rendered for.
    audience: Audience,
}

impl Watched {
    /// Whether the user, now of `role` (and `active`), may go on: the role
    /// the subscription needs, and no less than the role its answers are
    /// rendered for.
    fn check(self, role: Role, active: bool) -> Result<(), AppError> {
        if !active {
            return Err(AppError::Unauthenticated(
                "the account was deactivated".into(),
            ));
        }
        require_role(role, self.required)?;
        if let Audience::User(rendered_for, _) = self.audience
            && !role.includes(rendered_for)
        {
            return Err(AppError::Forbidden(
                "the account's role changed; subscribe again".into(),
            ));
        }
        Ok(())
    }
}

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

/// One checked subscriber of a group.
struct Member {
    /// Keeps the group running.
    _group: Arc<Group>,
    rx: broadcast::Receiver<Arc<Rendered>>,
    early: Option<Arc<Rendered>>,
    watched: Watched,
    /// The position of the last answer sent.
    cursor: Option<String>,
    field: String,
    standing: Standing,
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Where its delivery delays are recorded, looked up once.
    delivery: metrics::Histogram,
    _slot: SocketSlot,
    _counted: crate::events::SubscriptionGuard,
    done: bool,
}

impl Member {
    /// The next answer. The member moves from answer to answer boxed, so
    /// that a step moves a pointer, not the member.
    async fn next(mut self: Box<Self>) -> Option<(Payload, Box<Self>)> {
        if self.done {
            return None;
        }
        if let Some(answer) = self.early.take() {
            return Some((self.deliver(&answer), self));
        }
        // Shutdown is not watched here: the socket session, the one reader
        // of members, closes its connection with 1001 and drops them.
        loop {
            let ending = tokio::select! {
                biased;
                _ = self.expiry.as_mut() => AppError::Unauthenticated(
                    "the access token expired; reconnect with a new token".into(),
                ),
                changed = self.standing.changed() => match changed {
                    Some(Change::User { role, active }) => match self.watched.check(role, active) {
                        Ok(()) => continue,
                        Err(error) => error,
                    },
                    // Changes may have gone unheard and the user could not
                    // be read again: the client resumes from its cursor.
                    Some(Change::Unknown) => AppError::EventsMissed { cursor: self.cursor.clone() },
                    None => AppError::internal(anyhow::anyhow!("the user watch ended")),
                },
                received = self.rx.recv() => match received {
                    Ok(answer) => return Some((self.deliver(&answer), self)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        crate::metrics::subscription_lagged();
                        AppError::SubscriptionLagged { missed, cursor: self.cursor.clone() }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            self.done = true;
            let response = codes::error_response(ending, Some(&self.field));
            return Some((Payload::own(response), self));
        }
    }

    fn deliver(&mut self, answer: &Arc<Rendered>) -> Payload {
        if let Some(at) = answer.published {
            self.delivery.record(at.elapsed().as_secs_f64());
        }
        if answer.cursor.is_some() {
            self.cursor.clone_from(&answer.cursor);
        }
        Payload::Shared(Arc::clone(answer))
    }
}

/// What a member hears of its user.
#[derive(Clone, Copy, Debug)]
enum Change {
    User {
        role: Role,
        active: bool,
    },
    /// Events may have been missed and the user could not be read again:
    /// its standing is unknown, so the member ends (fail closed).
    Unknown,
}

/// Told of every published event (an [`Observer`]): passes a user's change
/// to the members that watch that user. When changes may have gone unheard
/// (the listener reconnected, a notification was unreadable), it reads every
/// watched user again, in a few queries for all members rather than one per
/// member, and passes on what it read.
struct UserWatch(Arc<WatchInner>);

struct WatchInner {
    users: Mutex<HashMap<Uuid, WatchedUser>>,
    conn: sea_orm::DatabaseConnection,
    tasks: tokio_util::task::TaskTracker,
    /// A re-read is running; `again` asks it for one more round.
    reading: std::sync::atomic::AtomicBool,
    again: std::sync::atomic::AtomicBool,
}

/// One watched user: its members' channel, and how many changes events
/// brought (a re-read that began before the latest one is older than it).
struct WatchedUser {
    tx: watch::Sender<Option<Change>>,
    heard: u64,
}

/// Users read again per query.
const REREAD_CHUNK: usize = 500;

impl UserWatch {
    fn new(state: &AppState) -> Self {
        Self(Arc::new(WatchInner {
            users: Mutex::default(),
            conn: state.services.conn().clone(),
            tasks: state.tasks.clone(),
            reading: Default::default(),
            again: Default::default(),
        }))
    }

    fn watch(&self, user_id: Uuid) -> Standing {
        let rx = match self.0.users.lock() {
            Ok(mut users) => users
                .entry(user_id)
                .or_insert_with(|| WatchedUser {
                    tx: watch::channel(None).0,
                    heard: 0,
                })
                .tx
                .subscribe(),
            // A poisoned map: the watch reports at once, and the member
            // ends (a check that cannot be made is a refusal).
            Err(_) => watch::channel(None).1,
        };
        Standing {
            rx: Some(rx),
            user_id,
            watch: Arc::clone(&self.0),
        }
    }

    /// Reads every watched user again, on a task of its own (one at a time;
    /// a request while one runs makes it run once more).
    fn reread(&self) {
        use std::sync::atomic::Ordering::AcqRel;
        self.0.again.store(true, Ordering::Release);
        if self.0.reading.swap(true, AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.0);
        self.0.tasks.spawn(async move {
            loop {
                while inner.again.swap(false, AcqRel) {
                    inner.reread().await;
                }
                inner.reading.store(false, Ordering::Release);
                // A request that came after the last round, and left
                // because this one was still marked as reading, is taken up.
                if !inner.again.load(Ordering::Acquire) || inner.reading.swap(true, AcqRel) {
                    break;
                }
            }
        });
    }
}

impl WatchInner {
    async fn reread(&self) {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
        let watched: Vec<(Uuid, u64)> = match self.users.lock() {
            Ok(users) => users.iter().map(|(id, w)| (*id, w.heard)).collect(),
            Err(_) => return,
        };
        for chunk in watched.chunks(REREAD_CHUNK) {
            let ids: Vec<Uuid> = chunk.iter().map(|(id, _)| *id).collect();
            let read = crate::entity::user::Entity::find()
                .select_only()
                .columns([
                    crate::entity::user::Column::Id,
                    crate::entity::user::Column::Role,
                    crate::entity::user::Column::IsActive,
                ])
                .filter(crate::entity::user::Column::Id.is_in(ids))
                .into_tuple::<(Uuid, Role, bool)>()
                .all(&self.conn)
                .await;
            let found: Option<HashMap<Uuid, (Role, bool)>> = match read {
                Ok(rows) => Some(rows.into_iter().map(|(id, r, a)| (id, (r, a))).collect()),
                Err(err) => {
                    tracing::warn!(error = %err, "reading subscribers' users again failed; their streams end");
                    None
                }
            };
            let Ok(users) = self.users.lock() else { return };
            for (id, heard) in chunk {
                let Some(entry) = users.get(id) else { continue };
                // An event heard since the read began is newer than it.
                if entry.heard != *heard {
                    continue;
                }
                let change = match found.as_ref().map(|found| found.get(id)) {
                    Some(Some((role, active))) => Change::User {
                        role: *role,
                        active: *active,
                    },
                    // Gone: no longer a user who may watch anything.
                    Some(None) => Change::User {
                        role: Role::Viewer,
                        active: false,
                    },
                    None => Change::Unknown,
                };
                entry.tx.send_replace(Some(change));
            }
        }
    }
}

impl Observer for UserWatch {
    fn published(&self, event: &DomainEvent) {
        match event {
            DomainEvent::UserChanged {
                user_id,
                role,
                active,
            } => {
                if let Ok(mut users) = self.0.users.lock()
                    && let Some(entry) = users.get_mut(user_id)
                {
                    entry.heard += 1;
                    entry.tx.send_replace(Some(Change::User {
                        role: *role,
                        active: *active,
                    }));
                }
            }
            DomainEvent::EventsMissed => self.reread(),
            _ => {}
        }
    }

    fn listener_changed(&self, up: bool) {
        // What went unheard while it was down is read once it is back.
        if up {
            self.reread();
        }
    }
}

/// A member's watch on its user; the last one of a user removes its entry.
struct Standing {
    rx: Option<watch::Receiver<Option<Change>>>,
    user_id: Uuid,
    watch: Arc<WatchInner>,
}

impl Standing {
    /// The user's next change; None when the watch cannot be read.
    async fn changed(&mut self) -> Option<Change> {
        let rx = self.rx.as_mut()?;
        rx.changed().await.ok()?;
        *rx.borrow_and_update()
    }
}

impl Drop for Standing {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Ok(mut users) = self.watch.users.lock()
            && users
                .get(&self.user_id)
                .is_some_and(|w| w.tx.receiver_count() == 0)
        {
            users.remove(&self.user_id);
        }
    }
}
