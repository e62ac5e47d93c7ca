//! The notifier: delivers the `alerts` outbox to Telegram.
//!
//! It wakes when the bus says alerts were queued (on PostgreSQL, on any
//! instance) and on a timer for retries. Each round claims due alerts in one
//! short transaction (SENDING with a lease; `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, so instances never claim the same row), sends outside any
//! transaction, and records each outcome in another short one, only if its
//! lease is still ours. A notifier that dies mid-send leaves SENDING rows
//! whose lease expires, and any notifier claims them again: delivery is
//! at-least-once, and a duplicate happens only in that case.

pub mod telegram;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use futures_util::FutureExt;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType};
use sea_orm::{ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::telegram::{AlertSender, SendError, TelegramSender};
use crate::config::Config;
use crate::entity::alert::{self, AlertStatus};
use crate::error::AppResult;
use crate::events::DomainEvent;
use crate::service::alerts::{MAX_MESSAGE_CHARS, due_condition, next_due};
use crate::service::context::Services;

/// Alerts claimed in one round at most.
const CLAIM_LIMIT: u64 = 2000;

/// The retry policy and pacing, from the configuration.
#[derive(Clone, Debug)]
pub struct Policy {
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub lease: Duration,
    pub send_timeout: Duration,
    pub poll: Duration,
    pub digest_after: usize,
    pub chat_per_second: u32,
    pub global_per_second: u32,
}

impl Policy {
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_attempts: config.alert_max_attempts,
            retry_base: config.alert_retry_base,
            retry_max: config.alert_retry_max,
            lease: config.alert_lease,
            send_timeout: config.alert_send_timeout,
            poll: config.alert_poll,
            digest_after: config.alert_digest_after,
            chat_per_second: config.alert_chat_per_second,
            global_per_second: config.alert_global_per_second,
        }
    }

    /// The delay before attempt `attempts + 1`: doubling from the base,
    /// capped, with ±20% jitter (so the gaps still grow).
    fn backoff(&self, attempts: i32) -> Duration {
        let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
        let base = self
            .retry_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.retry_max);
        let jitter = 0.8 + (Uuid::new_v4().as_u128() % 401) as f64 / 1000.0;
        base.mul_f64(jitter)
    }
}

/// What became of one message.
#[derive(Debug)]
enum Outcome {
    Sent(i64),
    Failed(SendError),
    /// Not sent: due again then (the bot is paused by a 429, or the lease ran
    /// short).
    Deferred(DateTime<Utc>),
}

pub struct Notifier {
    db: Services,
    sender: Arc<dyn AlertSender>,
    policy: Policy,
    per_chat: DefaultKeyedRateLimiter<String>,
    overall: DefaultDirectRateLimiter,
    /// Set by a 429 (here, or on another instance through the settings
    /// row): nothing goes to the bot before then.
    paused_until: Mutex<Option<Instant>>,
    /// The application's shutdown: the send in flight finishes and is
    /// recorded, the rest of the round goes back to PENDING.
    stop: CancellationToken,
}

fn per_second(n: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl Notifier {
    pub fn new(config: &Config, db: Services, stop: CancellationToken) -> Self {
        let sender = TelegramSender::new(&config.telegram_api_url, config.alert_send_timeout);
        Self::with_sender(Policy::from_config(config), db, Arc::new(sender), stop)
    }

    pub fn with_sender(
        policy: Policy,
        db: Services,
        sender: Arc<dyn AlertSender>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            stop,
            per_chat: RateLimiter::keyed(per_second(policy.chat_per_second)),
            overall: RateLimiter::direct(per_second(policy.global_per_second)),
            db,
            sender,
            policy,
            paused_until: Mutex::new(None),
        }
    }

    /// The Bot API client alerts go out through; settings check new tokens
    /// with it.
    pub fn telegram(&self) -> &dyn AlertSender {
        &*self.sender
    }

    fn paused(&self) -> Option<Instant> {
        let until = (*self.paused_until.lock().ok()?)?;
        (until > Instant::now()).then_some(until)
    }

    fn pause(&self, d: Duration) {
        if let Ok(mut p) = self.paused_until.lock() {
            let until = Instant::now() + d;
            *p = Some(p.map_or(until, |old| old.max(until)));
        }
    }

    /// Takes over a pause another instance recorded; true when paused.
    async fn check_shared_pause(&self) -> bool {
        if let Ok(Some(until)) = crate::service::settings::paused_until(self.db.conn()).await {
            self.pause((until - Utc::now()).to_std().unwrap_or_default());
        }
        self.paused().is_some()
    }

    /// Runs until the application stops: a round whenever alerts are queued
    /// (on any instance), when the next retry falls due, and at least every
    /// `ALERT_POLL_SECONDS`. At shutdown the round under way ends at a safe
    /// point (see `deliver_chat`).
    pub async fn run(self: Arc<Self>) {
        let stop = self.stop.clone();
        let mut events = self.db.bus().subscribe();
        loop {
            // Rounds until nothing more is due now.
            for _ in 0..100 {
                if stop.is_cancelled() {
                    return;
                }
                let round = AssertUnwindSafe(self.run_once()).catch_unwind().await;
                match round {
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => continue,
                    Ok(Err(err)) => {
                        tracing::error!(error = %err, "notifier round failed");
                        break;
                    }
                    Err(_) => {
                        tracing::error!("notifier round panicked");
                        break;
                    }
                }
            }
            let wait = self.next_wake().await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = alerts_queued(&mut events) => {}
            }
        }
    }

    async fn next_wake(&self) -> Duration {
        let mut wait = self.policy.poll;
        if let Ok(Some(next)) = next_due(self.db.conn()).await {
            let until = (next - Utc::now()).to_std().unwrap_or_default();
            wait = wait.min(until);
        }
        if let Some(until) = self.paused() {
            wait = wait.max(until - Instant::now());
        }
        wait.max(Duration::from_millis(20))
    }

    /// One round: claims what is due and delivers it, chats in parallel and
    /// each chat paced. Returns how many alerts it claimed.
    pub async fn run_once(&self) -> AppResult<usize> {
        let settings = self.db.settings().current(self.db.conn()).await?;
        if !settings.enabled || settings.token.is_none() {
            return Ok(0);
        }
        if self.check_shared_pause().await || self.stop.is_cancelled() {
            return Ok(0);
        }
        let (claimed, lease) = self.claim().await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        // The token as it is now, not as it was before the claim: a round
        // can wait on the pool, and the settings may change meanwhile.
        let settings = self.db.settings().current(self.db.conn()).await?;
        let Some(token) = settings.token.clone().filter(|_| settings.enabled) else {
            // Turned off meanwhile: back to PENDING, untried.
            self.record(&claimed, lease, Outcome::Deferred(Utc::now()))
                .await;
            return Ok(0);
        };
        let n = claimed.len();
        let mut by_chat: Vec<(String, Vec<alert::Model>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for a in claimed {
            let i = *index.entry(a.chat_id.clone()).or_insert_with(|| {
                by_chat.push((a.chat_id.clone(), Vec::new()));
                by_chat.len() - 1
            });
            by_chat[i].1.push(a);
        }
        let token = token.expose().to_string();
        futures_util::future::join_all(
            by_chat
                .into_iter()
                .map(|(chat, alerts)| self.deliver_chat(&token, chat, alerts, lease)),
        )
        .await;
        Ok(n)
    }

    /// Marks due alerts SENDING with a lease, in one short transaction.
    async fn claim(&self) -> AppResult<(Vec<alert::Model>, DateTime<Utc>)> {
        let now = Utc::now();
        let lease = (now + chrono::Duration::from_std(self.policy.lease).unwrap_or_default())
            .trunc_subsecs(3);
        let txn = self.db.begin_write().await?;
        let mut query = alert::Entity::find()
            .filter(due_condition(now))
            .order_by_asc(alert::Column::Id)
            .limit(CLAIM_LIMIT);
        if self.db.backend() == DbBackend::Postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let mut due = query.all(&*txn).await?;
        if due.is_empty() {
            return Ok((due, lease));
        }
        alert::Entity::update_many()
            .col_expr(alert::Column::Status, Expr::value(AlertStatus::Sending))
            .col_expr(alert::Column::LeaseUntil, Expr::value(lease))
            .col_expr(
                alert::Column::Attempts,
                Expr::col(alert::Column::Attempts).add(1),
            )
            .col_expr(alert::Column::UpdatedAt, Expr::value(now))
            .filter(alert::Column::Id.is_in(due.iter().map(|a| a.id)))
            .exec(&*txn)
            .await?;
        for a in &mut due {
            a.status = AlertStatus::Sending;
            a.lease_until = Some(lease);
            a.attempts += 1;
            a.updated_at = now;
            txn.emit(DomainEvent::AlertChanged {
                alert: Arc::new(a.clone()),
            });
        }
        txn.commit().await?;
        Ok((due, lease))
    }

    /// Sends one chat's alerts, one message each, or as digests when more
    /// than `ALERT_DIGEST_AFTER` are due at once.
    async fn deliver_chat(
        &self,
        token: &str,
        chat: String,
        alerts: Vec<alert::Model>,
        lease: DateTime<Utc>,
    ) {
        let messages = if alerts.len() > self.policy.digest_after {
            digests(alerts)
        } else {
            alerts
                .into_iter()
                .map(|a| (a.message.clone(), vec![a]))
                .collect()
        };
        let mut messages = messages.into_iter();
        while let Some((text, group)) = messages.next() {
            tokio::select! {
                _ = async {
                    self.per_chat.until_key_ready(&chat).await;
                    self.overall.until_ready().await;
                } => {}
                _ = self.stop.cancelled() => {}
            }
            // Stopping: leave the rest for the next start or another instance.
            if self.stop.is_cancelled() {
                let mut rest: Vec<alert::Model> = group;
                rest.extend(messages.flat_map(|(_, g)| g));
                self.record(&rest, lease, Outcome::Deferred(Utc::now()))
                    .await;
                return;
            }
            self.check_shared_pause().await;
            // A 429 paused the bot, or pacing ate the lease (another
            // notifier may claim these soon): put this and the rest back,
            // untried.
            let deferred_to = match self.paused() {
                Some(until) => Some(
                    Utc::now()
                        + chrono::Duration::from_std(until - Instant::now()).unwrap_or_default(),
                ),
                None => {
                    let margin = chrono::Duration::from_std(
                        self.policy.send_timeout.min(self.policy.lease / 2),
                    )
                    .unwrap_or_default();
                    (Utc::now() + margin >= lease).then(Utc::now)
                }
            };
            if let Some(at) = deferred_to {
                let mut rest: Vec<alert::Model> = group;
                rest.extend(messages.flat_map(|(_, g)| g));
                self.record(&rest, lease, Outcome::Deferred(at)).await;
                return;
            }
            let sent = AssertUnwindSafe(self.sender.send(token, &chat, &text))
                .catch_unwind()
                .await;
            let outcome = match sent {
                Ok(Ok(id)) => Outcome::Sent(id),
                Ok(Err(err)) => {
                    if let SendError::RateLimited { retry_after, .. } = &err {
                        self.pause(*retry_after);
                        let until = Utc::now()
                            + chrono::Duration::from_std(*retry_after).unwrap_or_default();
                        if let Err(e) =
                            crate::service::settings::pause_until(self.db.conn(), until).await
                        {
                            tracing::warn!(error = %e, "notifier: recording a 429 pause failed");
                        }
                    }
                    Outcome::Failed(err)
                }
                Err(_) => Outcome::Failed(SendError::Temporary(
                    "the notifier failed while sending this alert".into(),
                )),
            };
            self.record(&group, lease, outcome).await;
        }
    }

    /// Stores an outcome for each alert whose lease is still ours.
    async fn record(&self, alerts: &[alert::Model], lease: DateTime<Utc>, outcome: Outcome) {
        if let Err(err) = self.try_record(alerts, lease, &outcome).await {
            // The lease will expire and the alerts be claimed again.
            tracing::error!(error = %err, "notifier: recording an outcome failed");
        }
    }

    async fn try_record(
        &self,
        alerts: &[alert::Model],
        lease: DateTime<Utc>,
        outcome: &Outcome,
    ) -> AppResult<()> {
        let now = Utc::now();
        let txn = self.db.begin_write().await?;
        let mut finished = Vec::new();
        for a in alerts {
            let mut next = a.clone();
            next.lease_until = None;
            next.updated_at = now;
            match outcome {
                Outcome::Sent(id) => {
                    next.status = AlertStatus::Sent;
                    next.sent_at = Some(now);
                    next.telegram_message_id = Some(*id);
                    next.retry_at = None;
                }
                Outcome::Deferred(at) => {
                    next.status = AlertStatus::Pending;
                    next.attempts = Ord::max(a.attempts - 1, 0);
                    next.retry_at = Some(*at);
                }
                Outcome::Failed(err) => {
                    next.last_error = Some(err.detail().chars().take(500).collect());
                    match err {
                        SendError::RateLimited { retry_after, .. } => {
                            next.status = AlertStatus::Pending;
                            next.retry_at = Some(
                                now + chrono::Duration::from_std(*retry_after).unwrap_or_default(),
                            );
                        }
                        SendError::Permanent(_) => {
                            next.status = AlertStatus::Dead;
                            next.retry_at = None;
                        }
                        SendError::Temporary(_)
                            if a.attempts >= self.policy.max_attempts as i32 =>
                        {
                            next.status = AlertStatus::Dead;
                            next.retry_at = None;
                        }
                        SendError::Temporary(_) => {
                            next.status = AlertStatus::Pending;
                            next.retry_at = Some(
                                now + chrono::Duration::from_std(self.policy.backoff(a.attempts))
                                    .unwrap_or_default(),
                            );
                        }
                    }
                    tracing::warn!(
                        alert_id = %a.id,
                        attempts = a.attempts,
                        status = ?next.status,
                        error = err.detail(),
                        "alert not delivered"
                    );
                }
            }
            let res = alert::Entity::update_many()
                .col_expr(alert::Column::Status, Expr::value(next.status))
                .col_expr(alert::Column::Attempts, Expr::value(next.attempts))
                .col_expr(alert::Column::RetryAt, Expr::value(next.retry_at))
                .col_expr(alert::Column::LeaseUntil, Expr::value(next.lease_until))
                .col_expr(
                    alert::Column::LastError,
                    Expr::value(next.last_error.clone()),
                )
                .col_expr(
                    alert::Column::TelegramMessageId,
                    Expr::value(next.telegram_message_id),
                )
                .col_expr(alert::Column::SentAt, Expr::value(next.sent_at))
                .col_expr(alert::Column::UpdatedAt, Expr::value(now))
                .filter(alert::Column::Id.eq(a.id))
                .filter(alert::Column::Status.eq(AlertStatus::Sending))
                .filter(alert::Column::LeaseUntil.eq(lease))
                .exec(&*txn)
                .await?;
            if res.rows_affected == 1 {
                if matches!(next.status, AlertStatus::Sent | AlertStatus::Dead) {
                    finished.push(next.attempts);
                }
                txn.emit(DomainEvent::AlertChanged {
                    alert: Arc::new(next),
                });
            }
        }
        txn.commit().await?;
        for attempts in finished {
            crate::metrics::alert_finished(attempts);
        }
        Ok(())
    }
}

/// Packs one chat's alerts into as few messages as fit Telegram's limit.
fn digests(alerts: Vec<alert::Model>) -> Vec<(String, Vec<alert::Model>)> {
    const HEADER_ROOM: usize = 48;
    const SEPARATOR: &str = "\n\n";
    let mut out = Vec::new();
    let mut body = String::new();
    let mut group: Vec<alert::Model> = Vec::new();
    let mut flush = |body: &mut String, group: &mut Vec<alert::Model>| {
        if !group.is_empty() {
            let text = format!("🔔 Stockroom: {} alerts\n\n{body}", group.len());
            out.push((text, std::mem::take(group)));
            body.clear();
        }
    };
    for a in alerts {
        let len = body.chars().count();
        let add = a.message.chars().count() + SEPARATOR.len();
        if !group.is_empty() && len + add + HEADER_ROOM > MAX_MESSAGE_CHARS {
            flush(&mut body, &mut group);
        }
        if !body.is_empty() {
            body.push_str(SEPARATOR);
        }
        if a.message.chars().count() + HEADER_ROOM > MAX_MESSAGE_CHARS {
            // Alone in its digest: cut to fit.
            body.push_str(&crate::service::alerts::clip(
                a.message
                    .chars()
                    .take(MAX_MESSAGE_CHARS - HEADER_ROOM)
                    .collect(),
            ));
        } else {
            body.push_str(&a.message);
        }
        group.push(a);
    }
    flush(&mut body, &mut group);
    out
}

/// Resolves when the bus says alerts were queued (or may have been: a lag).
async fn alerts_queued(
    events: &mut tokio::sync::broadcast::Receiver<Arc<crate::events::Published>>,
) {
    loop {
        match events.recv().await {
            Ok(e)
                if matches!(
                    e.event,
                    DomainEvent::AlertsQueued | DomainEvent::EventsMissed
                ) =>
            {
                return;
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(message: &str) -> alert::Model {
        let now = Utc::now();
        alert::Model {
            id: Uuid::now_v7(),
            kind: crate::entity::alert::AlertKind::Test,
            status: AlertStatus::Sending,
            chat_id: "1".into(),
            message: message.into(),
            attempts: 1,
            retry_at: None,
            lease_until: None,
            last_error: None,
            dedupe_key: None,
            telegram_message_id: None,
            created_at: now,
            sent_at: None,
            updated_at: now,
        }
    }

    #[test]
    fn digests_fit_telegram_and_keep_every_alert() {
        let alerts: Vec<_> = (0..100)
            .map(|i| alert(&format!("alert {i}: {}", "x".repeat(150))))
            .collect();
        let out = digests(alerts);
        assert!(out.len() < 10, "{} messages", out.len());
        assert_eq!(out.iter().map(|(_, g)| g.len()).sum::<usize>(), 100);
        for (text, group) in &out {
            assert!(text.chars().count() <= MAX_MESSAGE_CHARS);
            for a in group {
                assert!(text.contains(&a.message));
            }
        }
        let huge = digests(vec![alert(&"y".repeat(MAX_MESSAGE_CHARS))]);
        assert!(huge[0].0.chars().count() <= MAX_MESSAGE_CHARS);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Policy {
            max_attempts: 8,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(30),
            lease: Duration::from_secs(60),
            send_timeout: Duration::from_secs(10),
            poll: Duration::from_secs(5),
            digest_after: 3,
            chat_per_second: 1,
            global_per_second: 30,
        };
        let gaps: Vec<Duration> = (1..=3).map(|n| p.backoff(n)).collect();
        assert!(gaps[0] < gaps[1] && gaps[1] < gaps[2], "{gaps:?}");
        assert!(p.backoff(20) <= Duration::from_secs(36));
    }
}
