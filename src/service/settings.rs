//! Notification settings: the one `notification_settings` row, merged with
//! the environment into the Telegram settings in effect.
//!
//! A bot token stored through the API wins over `TELEGRAM_BOT_TOKEN`; chat ids
//! stored through the API win over `TELEGRAM_CHAT_IDS`. The token is
//! write-only: it is never returned, logged or audited (only its last four
//! characters are shown, as a hint).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, QuerySelect};
use serde_json::json;

use super::Actor;
use super::audit::{self, AuditEntry};
use super::context::Services;
use super::settings_cache::ROW_ID;
pub use super::settings_cache::{SettingsCache, TelegramSettings, TokenSource};
use crate::entity::alert::AlertKind;
use crate::entity::audit_log::{AuditAction, EntityType};
use crate::entity::notification_settings;
use crate::error::{AppError, AppResult};
use crate::notifier::telegram::{AlertSender, SendError};

const MAX_CHATS: usize = 50;

fn default_row() -> notification_settings::ActiveModel {
    notification_settings::ActiveModel {
        id: Set(ROW_ID),
        telegram_enabled: Set(true),
        chat_ids: Set(None),
        bot_token: Set(None),
        bot_name: Set(None),
        enabled_kinds: Set(json!(AlertKind::DEFAULTS).to_string()),
        paused_until: Set(None),
        updated_at: Set(None),
    }
}

/// Creates the settings row with its defaults unless it exists; safe to repeat
/// and to race.
pub async fn ensure_row(conn: &impl ConnectionTrait) -> AppResult<()> {
    notification_settings::Entity::insert(default_row())
        .on_conflict(
            OnConflict::column(notification_settings::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// A change of settings; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct SettingsPatch {
    pub telegram_enabled: Option<bool>,
    pub chat_ids: Option<Vec<String>>,
    /// `Some("")` clears the stored token (the environment's applies again).
    pub bot_token: Option<String>,
    pub enabled_kinds: Option<Vec<AlertKind>>,
}

/// A chat id as Telegram takes it: a (negative for groups) number, or
/// `@channelname`.
fn valid_chat_id(id: &str) -> bool {
    let numeric = id.strip_prefix('-').unwrap_or(id);
    (!numeric.is_empty() && numeric.len() <= 20 && numeric.chars().all(|c| c.is_ascii_digit()))
        || id.strip_prefix('@').is_some_and(|name| {
            (5..=32).contains(&name.len())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// `123456:ABC-...`: the bot id, a colon, and the secret part.
fn valid_token(token: &str) -> bool {
    match token.split_once(':') {
        Some((id, secret)) => {
            !id.is_empty()
                && id.chars().all(|c| c.is_ascii_digit())
                && (20..=200).contains(&secret.len())
                && secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }
        None => false,
    }
}

fn validate(patch: &SettingsPatch) -> AppResult<SettingsPatch> {
    let mut patch = patch.clone();
    if let Some(ids) = &mut patch.chat_ids {
        let mut clean: Vec<String> = Vec::new();
        for id in ids.iter().map(|i| i.trim()) {
            if !valid_chat_id(id) {
                return Err(AppError::bad_input(
                    "chatIds",
                    format!("chatIds: {id:?} is not a Telegram chat id (a number or @channelname)"),
                ));
            }
            if !clean.iter().any(|c| c == id) {
                clean.push(id.to_string());
            }
        }
        if clean.len() > MAX_CHATS {
            return Err(AppError::bad_input(
                "chatIds",
                format!("chatIds: at most {MAX_CHATS} chats"),
            ));
        }
        *ids = clean;
    }
    if let Some(token) = &mut patch.bot_token {
        *token = token.trim().to_string();
        if !token.is_empty() && !valid_token(token) {
            // The value itself is never echoed.
            return Err(AppError::bad_input(
                "botToken",
                "botToken is not a Telegram bot token (digits, a colon, then the secret)",
            ));
        }
    }
    if let Some(kinds) = &mut patch.enabled_kinds {
        let mut clean = Vec::new();
        for k in kinds.iter() {
            if !clean.contains(k) {
                clean.push(*k);
            }
        }
        *kinds = clean;
    }
    Ok(patch)
}

/// What the audit row shows of the settings: never the token.
fn audited(settings: &TelegramSettings) -> serde_json::Value {
    json!({
        "telegramEnabled": settings.enabled,
        "chatIds": settings.chat_ids,
        "enabledKinds": settings.kinds,
        "botTokenSource": settings.token_source.as_str(),
        "botName": settings.bot_name,
    })
}

/// Applies a change (ADMIN), audited as SETTINGS_UPDATE; returns the settings
/// now in effect. A new bot token is first checked with Telegram's getMe
/// (through `telegram`): a token Telegram refuses, or cannot be asked about,
/// is not saved, and nothing changes.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: &Services,
    telegram: &dyn AlertSender,
    actor: &Actor,
    patch: SettingsPatch,
) -> AppResult<TelegramSettings> {
    let patch = validate(&patch)?;
    let new_token = patch.bot_token.as_deref().filter(|t| !t.is_empty());
    if new_token.is_some() && !db.sealer().may_seal() {
        return Err(AppError::conflict(
            "a bot token cannot be stored: the server has no DATA_ENCRYPTION_KEY to seal it with; ask an operator to set it (or to set TELEGRAM_BOT_TOKEN)",
        ));
    }
    // Sealed at rest (`secrets`); the value itself is never stored.
    let sealed_token = new_token
        .map(|t| super::settings_cache::seal_bot_token(db.sealer(), t))
        .transpose()?;
    let bot_name = match patch.bot_token.as_deref() {
        Some(token) if !token.is_empty() => Some(telegram.bot_name(token).await.map_err(|e| {
            // The detail is Telegram's answer, which never holds the token.
            AppError::bad_input(
                "botToken",
                match e {
                    SendError::Permanent(detail) => {
                        format!("Telegram refused the bot token (getMe: {detail})")
                    }
                    other => format!(
                        "the bot token could not be checked with Telegram's getMe ({}); nothing was saved, try again",
                        other.detail()
                    ),
                },
            )
        })?),
        _ => None,
    };
    let cache = db.settings();
    let txn = db.begin_write().await?;
    ensure_row(&*txn).await?;
    let row = notification_settings::Entity::find_by_id(ROW_ID)
        .lock_exclusive()
        .one(&*txn)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("settings row missing")))?;
    let before = cache.merge(Some(&row));
    let mut active: notification_settings::ActiveModel = row.into();
    if let Some(v) = patch.telegram_enabled {
        active.telegram_enabled = Set(v);
    }
    if let Some(ids) = &patch.chat_ids {
        active.chat_ids = Set(Some(json!(ids).to_string()));
    }
    let token_change = patch.bot_token.as_ref().map(|t| {
        active.bot_token = Set(sealed_token.clone());
        active.bot_name = Set(bot_name.clone());
        if t.is_empty() { "cleared" } else { "replaced" }
    });
    if let Some(kinds) = &patch.enabled_kinds {
        active.enabled_kinds = Set(json!(kinds).to_string());
    }
    active.updated_at = Set(Some(Utc::now()));
    let row = sea_orm::ActiveModelTrait::update(active, &*txn).await?;
    let after = cache.merge(Some(&row));
    let mut after_json = audited(&after);
    if let Some(change) = token_change {
        after_json["botToken"] = json!(change);
    }
    audit::record(
        &txn,
        actor,
        AuditEntry::new(
            AuditAction::SettingsUpdate,
            EntityType::NotificationSettings,
            ROW_ID,
        )
        .summary(match token_change {
            Some(change) => format!("updated notification settings; bot token {change}"),
            None => "updated notification settings".to_string(),
        })
        .changes(Some(audited(&before)), Some(after_json)),
    )
    .await?;
    txn.commit().await?;
    cache.invalidate();
    Ok(after)
}

/// Until when Telegram asked every instance to wait (a 429), if still ahead.
pub async fn paused_until(conn: &impl ConnectionTrait) -> AppResult<Option<DateTime<Utc>>> {
    let row = notification_settings::Entity::find_by_id(ROW_ID)
        .one(conn)
        .await?;
    Ok(row
        .and_then(|r| r.paused_until)
        .filter(|until| *until > Utc::now()))
}

/// Records a 429 for every instance: nothing goes to the bot before `until`.
pub async fn pause_until(conn: &impl ConnectionTrait, until: DateTime<Utc>) -> AppResult<()> {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, QueryFilter};
    notification_settings::Entity::update_many()
        .col_expr(
            notification_settings::Column::PausedUntil,
            Expr::value(until),
        )
        .filter(notification_settings::Column::Id.eq(ROW_ID))
        .filter(
            sea_orm::Condition::any()
                .add(notification_settings::Column::PausedUntil.is_null())
                .add(notification_settings::Column::PausedUntil.lt(until)),
        )
        .exec(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids_and_tokens_are_checked_for_shape() {
        assert!(valid_chat_id("123456"));
        assert!(valid_chat_id("-1001234567890"));
        assert!(valid_chat_id("@stockroom_ops"));
        assert!(!valid_chat_id("@x"));
        assert!(!valid_chat_id("12 34"));
        assert!(!valid_chat_id("-"));
        assert!(valid_token("123456:ABCdefGHIjklMNOpqrSTUvwxYZ-_0123"));
        assert!(!valid_token("123456:short"));
        assert!(!valid_token("no-colon-at-all-but-long-enough-to-pass"));
    }
}
