//! Alerts and notification settings (ADMIN).

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::context::{actor, gql, request, state};
use super::guards::RoleGuard;
use super::types::{Conn, connection, connection_page, parse_id};
use crate::entity::alert::{self, AlertKind, AlertStatus};
use crate::entity::user::Role;
use crate::service::alerts;
use crate::service::settings::{self, TelegramSettings};

#[derive(SimpleObject)]
pub struct Alert {
    pub id: ID,
    pub kind: AlertKind,
    pub status: AlertStatus,
    pub chat_id: String,
    pub message: String,
    pub attempts: i32,
    /// Next attempt, when PENDING after a failure.
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// Telegram's id of the message that carried it.
    pub telegram_message_id: Option<i64>,
    pub updated_at: DateTime<Utc>,
}

impl From<alert::Model> for Alert {
    fn from(a: alert::Model) -> Self {
        Self {
            id: ID(a.id.to_string()),
            kind: a.kind,
            status: a.status,
            chat_id: a.chat_id,
            message: a.message,
            attempts: a.attempts,
            retry_at: a.retry_at,
            last_error: a.last_error,
            created_at: a.created_at,
            sent_at: a.sent_at,
            telegram_message_id: a.telegram_message_id,
            updated_at: a.updated_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct NotificationSettings {
    pub telegram_enabled: bool,
    pub chat_ids: Vec<String>,
    pub bot_token_configured: bool,
    /// "database", "environment" or "none".
    pub bot_token_source: String,
    /// The token's last 4 characters, never the token.
    pub bot_token_hint: Option<String>,
    /// The bot's username, as Telegram's getMe answered when the token was
    /// saved through the API (null for a token from the environment).
    pub bot_name: Option<String>,
    pub enabled_kinds: Vec<AlertKind>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Enabled, with a token and at least one chat: alerts are created.
    pub configured: bool,
}

impl From<&TelegramSettings> for NotificationSettings {
    fn from(s: &TelegramSettings) -> Self {
        Self {
            telegram_enabled: s.enabled,
            chat_ids: s.chat_ids.clone(),
            bot_token_configured: s.token.is_some(),
            bot_token_source: s.token_source.as_str().to_string(),
            bot_token_hint: s.token_hint(),
            bot_name: s.bot_name.clone(),
            enabled_kinds: s.kinds.clone(),
            updated_at: s.updated_at,
            configured: s.configured(),
        }
    }
}

#[derive(InputObject)]
pub struct UpdateNotificationSettingsInput {
    pub telegram_enabled: Option<bool>,
    pub chat_ids: Option<Vec<String>>,
    /// Write-only; "" clears the database token (the environment's applies).
    pub bot_token: Option<String>,
    pub enabled_kinds: Option<Vec<AlertKind>>,
}

#[derive(Default)]
pub struct AlertsQuery;

#[Object]
impl AlertsQuery {
    /// Newest first.
    #[graphql(
        guard = "RoleGuard(Role::Admin)",
        complexity = "super::types::page_cost(first, child_complexity)"
    )]
    async fn alerts(
        &self,
        ctx: &Context<'_>,
        first: Option<i64>,
        after: Option<String>,
        status: Option<AlertStatus>,
        kind: Option<AlertKind>,
    ) -> async_graphql::Result<Conn<Alert>> {
        let page = connection_page(ctx, first, after)?;
        let rows = alerts::list(
            state(ctx)?.services.conn(),
            &alerts::AlertFilter { status, kind },
            page,
        )
        .await
        .map_err(gql)?;
        Ok(connection(rows, |a| a.id, Alert::from))
    }

    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn notification_settings(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<NotificationSettings> {
        let db = &state(ctx)?.services;
        let current = db.settings().current(db.conn()).await.map_err(gql)?;
        Ok(NotificationSettings::from(current.as_ref()))
    }
}

#[derive(Default)]
pub struct AlertsMutation;

#[Object]
impl AlertsMutation {
    /// Audited as SETTINGS_UPDATE (the token only as "replaced" or "cleared").
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn update_notification_settings(
        &self,
        ctx: &Context<'_>,
        input: UpdateNotificationSettingsInput,
    ) -> async_graphql::Result<NotificationSettings> {
        let actor = actor(ctx).map_err(gql)?;
        let state = state(ctx)?;
        let updated = settings::update(
            &state.services,
            state.notifier.telegram(),
            &actor,
            settings::SettingsPatch {
                telegram_enabled: input.telegram_enabled,
                chat_ids: input.chat_ids,
                bot_token: input.bot_token,
                enabled_kinds: input.enabled_kinds,
            },
        )
        .await
        .map_err(gql)?;
        Ok(NotificationSettings::from(&updated))
    }

    /// Queues a TEST alert for every configured chat and returns the first;
    /// rate limited per client (THROTTLE_ALERTS_*), audited as ALERT_TEST.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn send_test_alert(
        &self,
        ctx: &Context<'_>,
        message: Option<String>,
    ) -> async_graphql::Result<Alert> {
        let actor = actor(ctx).map_err(gql)?;
        let state = state(ctx)?;
        let ip = request(ctx)?.meta.ip.clone().unwrap_or_default();
        state.limiters.check_alerts(&ip).map_err(gql)?;
        let created = alerts::send_test(&state.services, &actor, message.as_deref())
            .await
            .map_err(gql)?;
        created.into_iter().next().map(Alert::from).ok_or_else(|| {
            gql(crate::error::AppError::internal(anyhow::anyhow!(
                "no alert"
            )))
        })
    }

    /// DEAD -> PENDING with a fresh attempt count; audited as ALERT_RETRY.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn retry_alert(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Alert> {
        let id = parse_id("id", &id).map_err(gql)?;
        let actor = actor(ctx).map_err(gql)?;
        let alert = alerts::retry(&state(ctx)?.services, &actor, id)
            .await
            .map_err(gql)?;
        Ok(alert.into())
    }
}
