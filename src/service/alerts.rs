//! Alerts: the transactional outbox of Telegram messages.
//!
//! An alert row is inserted in the same transaction as the change that causes
//! it, one per configured chat, when Telegram is configured and its kind is
//! enabled; the message is rendered then (HTML, user text escaped, at most
//! 4096 characters). The notifier delivers them.

use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, Order, PaginatorTrait,
    QueryFilter, QuerySelect, Select, Statement,
};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::context::{Services, Txn};
use super::settings_cache::TelegramSettings;
use super::{Actor, Page, PageRequest, paginate};
use crate::entity::alert::{self, AlertKind, AlertStatus};
use crate::entity::audit_log::{self, AuditAction, EntityType};
use crate::entity::product;
use crate::entity::stock_movement;
use crate::error::{AppError, AppResult};
use crate::events::DomainEvent;

/// Telegram's limit on one message.
pub const MAX_MESSAGE_CHARS: usize = 4096;
pub const MAX_TEST_MESSAGE: usize = 1000;

/// Escapes text for Telegram's HTML parse mode.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts a rendered message to Telegram's limit, without splitting an entity.
pub fn clip(message: String) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message;
    }
    let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    if let Some(amp) = cut.rfind('&')
        && !cut[amp..].contains(';')
    {
        cut.truncate(amp);
    }
    cut.push('…');
    cut
}

fn who(actor: &Actor) -> String {
    escape_html(actor.name.as_deref().unwrap_or("system"))
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Queues `message` for every configured chat when `kind` is enabled, in the
/// caller's transaction. With a `dedupe_key`, a chat gets at most one alert
/// for that key, whatever the number of instances and retries. Returns the
/// alerts created.
pub async fn enqueue(
    txn: &Txn,
    kind: AlertKind,
    message: String,
    dedupe_key: Option<String>,
) -> AppResult<Vec<alert::Model>> {
    let settings = txn.services().settings().current(&**txn).await?;
    if !settings.sends(kind) {
        return Ok(Vec::new());
    }
    let message = clip(message);
    let now = Utc::now();
    let mut created = Vec::with_capacity(settings.chat_ids.len());
    for chat in &settings.chat_ids {
        let row = alert::Model {
            id: Uuid::now_v7(),
            kind,
            status: AlertStatus::Pending,
            chat_id: chat.clone(),
            message: message.clone(),
            attempts: 0,
            retry_at: Some(now),
            lease_until: None,
            last_error: None,
            dedupe_key: dedupe_key.clone(),
            telegram_message_id: None,
            created_at: now,
            sent_at: None,
            updated_at: now,
        };
        let inserted = alert::Entity::insert(alert::ActiveModel::from(row.clone()))
            .on_conflict(
                OnConflict::columns([alert::Column::DedupeKey, alert::Column::ChatId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&**txn)
            .await?;
        if inserted == 1 {
            txn.emit(DomainEvent::AlertChanged {
                alert: Arc::new(row.clone()),
            });
            created.push(row);
        }
    }
    if !created.is_empty() {
        txn.emit(DomainEvent::AlertsQueued);
    }
    Ok(created)
}

/// The alerts a committed movement raises: LOW_STOCK when it crossed the
/// threshold downward (the `lowStock` subscription's crossing), OUT_OF_STOCK
/// when it took the stock to zero (both, for a crossing that ends at zero),
/// and STOCK_MOVEMENT for every movement when that kind is enabled. Runs on
/// every movement, so nothing is rendered unless an alert will be written.
pub async fn on_movement(
    txn: &Txn,
    settings: &TelegramSettings,
    actor: &Actor,
    product: &product::Model,
    movement: &stock_movement::Model,
    stock_before: i64,
) -> AppResult<()> {
    let low = movement.crossed_threshold.is_some() && settings.sends(AlertKind::LowStock);
    let out = product.stock == 0 && stock_before > 0 && settings.sends(AlertKind::OutOfStock);
    let every = settings.sends(AlertKind::StockMovement);
    if !(low || out || every) {
        return Ok(());
    }
    let name = format!(
        "<b>{}</b> {}",
        escape_html(&product.sku),
        escape_html(&product.name)
    );
    let change = format!(
        "{} {:+} by {} at {}",
        movement.kind.word(),
        movement.quantity,
        who(actor),
        when(movement.created_at)
    );
    if low {
        let message = format!(
            "⚠️ Low stock: {name}\nStock {stock_before} → {} (threshold {}) after {change}",
            product.stock, product.low_stock_threshold
        );
        enqueue(txn, AlertKind::LowStock, message, None).await?;
    }
    if out {
        let message = format!("⛔ Out of stock: {name}\nStock {stock_before} → 0 after {change}");
        enqueue(txn, AlertKind::OutOfStock, message, None).await?;
    }
    if every {
        let message = format!(
            "📦 {name}: stock {stock_before} → {} after {change}",
            product.stock
        );
        enqueue(txn, AlertKind::StockMovement, message, None).await?;
    }
    Ok(())
}

/// Called in the transaction that records a failed login: when the account,
/// or the client address, has collected `threshold` failed logins within
/// `window`, one LOGIN_FAILURES alert per account or address and window.
pub async fn on_failed_login(
    txn: &Txn,
    user_id: Option<Uuid>,
    email: &str,
    ip: Option<&str>,
    threshold: u32,
    window: std::time::Duration,
) -> AppResult<()> {
    let now = Utc::now();
    let since = now - ChronoDuration::from_std(window).map_err(AppError::internal)?;
    let bucket = now.timestamp() / window.as_secs().max(1) as i64;
    let failed = || {
        audit_log::Entity::find()
            .filter(audit_log::Column::Action.eq(AuditAction::LoginFailed))
            .filter(audit_log::Column::OccurredAt.gte(since))
    };
    let minutes = window.as_secs().div_ceil(60);
    // Once per window: no second alert while one for the same key is younger
    // than the window (the unique dedupe key settles races between instances).
    let recent = |prefix: String| {
        alert::Entity::find()
            .filter(alert::Column::Kind.eq(AlertKind::LoginFailures))
            .filter(alert::Column::DedupeKey.starts_with(prefix))
            .filter(alert::Column::CreatedAt.gte(since))
            .count(&**txn)
    };
    if let Some(id) = user_id {
        let n = failed()
            .filter(audit_log::Column::EntityId.eq(id.to_string()))
            .count(&**txn)
            .await?;
        if n >= u64::from(threshold) && recent(format!("login-failures:account:{id}:")).await? == 0
        {
            enqueue(
                txn,
                AlertKind::LoginFailures,
                format!(
                    "🔐 Repeated failed logins: {n} for account <b>{}</b> within {minutes} min (latest from {})",
                    escape_html(email),
                    escape_html(ip.unwrap_or("an unknown address"))
                ),
                Some(format!("login-failures:account:{id}:{bucket}")),
            )
            .await?;
        }
    }
    if let Some(ip) = ip {
        let from_ip = || failed().filter(audit_log::Column::Ip.eq(ip));
        let n = from_ip().count(&**txn).await?;
        // Failures that all aim at one known account are that account's
        // alert (which names the address); the address gets its own when it
        // tries unknown emails or several accounts.
        let elsewhere = match user_id {
            None => n,
            Some(id) => {
                from_ip()
                    .filter(
                        sea_orm::Condition::any()
                            .add(audit_log::Column::EntityId.is_null())
                            .add(audit_log::Column::EntityId.ne(id.to_string())),
                    )
                    .count(&**txn)
                    .await?
            }
        };
        if n >= u64::from(threshold)
            && elsewhere > 0
            && recent(format!("login-failures:ip:{ip}:")).await? == 0
        {
            enqueue(
                txn,
                AlertKind::LoginFailures,
                format!(
                    "🔐 Repeated failed logins: {n} from address <b>{}</b> within {minutes} min (latest for {})",
                    escape_html(ip),
                    escape_html(email)
                ),
                Some(format!("login-failures:ip:{ip}:{bucket}")),
            )
            .await?;
        }
    }
    Ok(())
}

/// Queues a TEST alert for every chat (ADMIN), audited as ALERT_TEST.
/// BAD_USER_INPUT when Telegram is not configured or TEST is disabled.
#[tracing::instrument(skip_all)]
pub async fn send_test(
    db: &Services,
    actor: &Actor,
    message: Option<&str>,
) -> AppResult<Vec<alert::Model>> {
    let text = super::optional_text("message", message, MAX_TEST_MESSAGE)?
        .unwrap_or_else(|| "Stockroom can reach this chat.".to_string());
    let settings = db.settings().current(db.conn()).await?;
    if !settings.configured() {
        return Err(AppError::bad_input(
            "message",
            "Telegram is not configured: set a bot token and at least one chat id (TELEGRAM_BOT_TOKEN / TELEGRAM_CHAT_IDS or updateNotificationSettings)",
        ));
    }
    if !settings.sends(AlertKind::Test) {
        return Err(AppError::bad_input(
            "message",
            "TEST alerts are disabled in the notification settings (enabledKinds)",
        ));
    }
    let txn = db.begin_write().await?;
    let created = enqueue(
        &txn,
        AlertKind::Test,
        format!(
            "🧪 Test alert from Stockroom by {} at {}\n{}",
            who(actor),
            when(Utc::now()),
            escape_html(&text)
        ),
        None,
    )
    .await?;
    let Some(first) = created.first() else {
        return Err(AppError::internal(anyhow::anyhow!(
            "test alert created no row"
        )));
    };
    audit::record(
        &txn,
        actor,
        AuditEntry::new(AuditAction::AlertTest, EntityType::Alert, first.id)
            .summary(format!("sent a test alert to {} chat(s)", created.len())),
    )
    .await?;
    txn.commit().await?;
    Ok(created)
}

/// Puts a DEAD alert back in the queue with a fresh attempt count (ADMIN),
/// audited as ALERT_RETRY.
#[tracing::instrument(skip_all, fields(alert_id = %id))]
pub async fn retry(db: &Services, actor: &Actor, id: Uuid) -> AppResult<alert::Model> {
    let txn = db.begin_write().await?;
    let before = alert::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&*txn)
        .await?
        .ok_or_else(|| AppError::not_found("alert not found"))?;
    if before.status != AlertStatus::Dead {
        return Err(AppError::conflict(format!(
            "only a DEAD alert can be retried; this one is {:?}",
            before.status
        )));
    }
    let now = Utc::now();
    let mut after = before.clone();
    after.status = AlertStatus::Pending;
    after.attempts = 0;
    after.retry_at = Some(now);
    after.lease_until = None;
    after.updated_at = now;
    alert::Entity::update(alert::ActiveModel::from(after.clone()).reset_all())
        .exec(&*txn)
        .await?;
    audit::record(
        &txn,
        actor,
        AuditEntry::new(AuditAction::AlertRetry, EntityType::Alert, id)
            .summary(format!(
                "retried a DEAD {:?} alert after {} attempt(s)",
                before.kind, before.attempts
            ))
            .changes(
                Some(serde_json::json!({ "status": before.status, "attempts": before.attempts, "lastError": before.last_error })),
                Some(serde_json::json!({ "status": after.status, "attempts": 0 })),
            ),
    )
    .await?;
    txn.emit(DomainEvent::AlertChanged {
        alert: Arc::new(after.clone()),
    });
    txn.emit(DomainEvent::AlertsQueued);
    txn.commit().await?;
    Ok(after)
}

#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    pub status: Option<AlertStatus>,
    pub kind: Option<AlertKind>,
}

fn filtered(filter: &AlertFilter) -> Select<alert::Entity> {
    let mut q = alert::Entity::find();
    if let Some(s) = filter.status {
        q = q.filter(alert::Column::Status.eq(s));
    }
    if let Some(k) = filter.kind {
        q = q.filter(alert::Column::Kind.eq(k));
    }
    q
}

/// Newest first.
pub async fn list(
    conn: &impl ConnectionTrait,
    filter: &AlertFilter,
    page: PageRequest,
) -> AppResult<Page<alert::Model>> {
    paginate(conn, filtered(filter), alert::Column::Id, Order::Desc, page).await
}

/// The queue as the operator watches it.
#[derive(Clone, Debug, Default)]
pub struct QueueFigures {
    /// PENDING and never tried.
    pub pending: u64,
    /// PENDING after at least one failed attempt.
    pub retrying: u64,
    pub sending: u64,
    pub dead: u64,
    /// Age of the oldest alert not yet SENT (or DEAD).
    pub oldest_unsent_seconds: Option<i64>,
    /// Most attempts among alerts not yet SENT (DEAD included).
    pub max_attempts_unsent: i64,
}

pub async fn queue_figures(conn: &impl ConnectionTrait) -> AppResult<QueueFigures> {
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT status, CASE WHEN attempts > 0 THEN 1 ELSE 0 END AS tried, COUNT(*) AS n, \
             MIN(created_at) AS oldest, MAX(attempts) AS most \
             FROM alerts WHERE status <> 'SENT' GROUP BY status, CASE WHEN attempts > 0 THEN 1 ELSE 0 END",
        ))
        .await?;
    let mut f = QueueFigures::default();
    let mut oldest: Option<DateTime<Utc>> = None;
    for row in rows {
        let status: String = row.try_get("", "status")?;
        let tried: i32 = row.try_get("", "tried")?;
        let n: i64 = row.try_get("", "n")?;
        let most: i32 = row.try_get("", "most")?;
        let at: DateTime<Utc> = row.try_get("", "oldest")?;
        let n = u64::try_from(n).unwrap_or(0);
        match (status.as_str(), tried) {
            ("PENDING", 0) => f.pending += n,
            ("PENDING", _) => f.retrying += n,
            ("SENDING", _) => f.sending += n,
            _ => f.dead += n,
        }
        f.max_attempts_unsent = f.max_attempts_unsent.max(i64::from(most));
        if status != "DEAD" {
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
    }
    f.oldest_unsent_seconds = oldest.map(|o| (Utc::now() - o).num_seconds().max(0));
    Ok(f)
}

/// What a notifier may claim now: PENDING alerts that are due, and SENDING
/// alerts whose notifier's lease expired (it died mid-send).
pub fn due_condition(now: DateTime<Utc>) -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(
            sea_orm::Condition::all()
                .add(alert::Column::Status.eq(AlertStatus::Pending))
                .add(alert::Column::RetryAt.lte(now)),
        )
        .add(
            sea_orm::Condition::all()
                .add(alert::Column::Status.eq(AlertStatus::Sending))
                .add(alert::Column::LeaseUntil.lte(now)),
        )
}

/// When the next PENDING alert falls due.
pub async fn next_due(conn: &impl ConnectionTrait) -> AppResult<Option<DateTime<Utc>>> {
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT MIN(retry_at) AS next FROM alerts WHERE status = 'PENDING'",
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<Option<DateTime<Utc>>>("", "next")?,
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped_and_messages_fit_telegram() {
        assert_eq!(
            escape_html("<b>&\"Widget\"</b>"),
            "&lt;b&gt;&amp;&quot;Widget&quot;&lt;/b&gt;"
        );
        let long = clip("&amp;".repeat(2000));
        assert!(long.chars().count() <= MAX_MESSAGE_CHARS);
        assert!(long.trim_end_matches('…').ends_with(';'), "no cut entity");
    }
}
