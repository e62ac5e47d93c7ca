//! The secrets stored in the database, sealed under the data-encryption key
//! ([`crate::sealing`]): two-factor secrets (`users.totp_secret`, bound to
//! the user's id) and the bot token (`notification_settings.bot_token`).
//!
//! At start an instance checks that every one of them opens with its keys
//! (so a missing `DATA_ENCRYPTION_KEY_PREVIOUS` after a rotation stops the
//! deploy, not a login or an alert later) and seals a bot token an earlier
//! release stored in plain text. `stockroom reseal` moves every secret under
//! the current key, after which the previous key can be removed.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::context::Services;
use super::settings_cache::{ROW_ID, open_bot_token, seal_bot_token};
use super::two_factor::SecretBox;
use crate::entity::{notification_settings, user};
use crate::error::{AppError, AppResult};
use crate::sealing::Sealer;

/// What `reseal` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    pub two_factor: u64,
    pub bot_tokens: u64,
    /// Secrets already under the current key, left as they were.
    pub current: u64,
}

/// Two-factor secrets: (user id, stored value).
async fn two_factor_secrets(
    conn: &impl sea_orm::ConnectionTrait,
) -> AppResult<Vec<(Uuid, String)>> {
    Ok(user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .column(user::Column::TotpSecret)
        .filter(user::Column::TotpSecret.is_not_null())
        .into_tuple::<(Uuid, Option<String>)>()
        .all(conn)
        .await?
        .into_iter()
        .filter_map(|(id, secret)| Some((id, secret?)))
        .collect())
}

async fn stored_bot_token(conn: &impl sea_orm::ConnectionTrait) -> AppResult<Option<String>> {
    Ok(notification_settings::Entity::find_by_id(ROW_ID)
        .one(conn)
        .await?
        .and_then(|row| row.bot_token)
        .filter(|token| !token.is_empty()))
}

/// Sets the bot token's stored value, unless it changed meanwhile.
async fn replace_bot_token(
    conn: &impl sea_orm::ConnectionTrait,
    old: &str,
    new: &str,
) -> AppResult<u64> {
    Ok(notification_settings::Entity::update_many()
        .col_expr(notification_settings::Column::BotToken, Expr::value(new))
        .filter(notification_settings::Column::Id.eq(ROW_ID))
        .filter(notification_settings::Column::BotToken.eq(old))
        .exec(conn)
        .await?
        .rows_affected)
}

/// The start-up check: in production a data-encryption key once any secret
/// is stored, and every stored secret opens with the configured keys, or
/// the instance refuses to start, naming what is missing (never a key or a
/// secret). A bot token in plain text is sealed. A database that cannot
/// be read now (unreachable, not migrated) is not a refusal: the server
/// starts degraded and recovers by itself, and a secret that does not open
/// later is refused where it is used.
pub async fn check_at_start(db: &Services) -> anyhow::Result<()> {
    let conn = db.conn();
    let (secrets, token) = match tokio::try_join!(two_factor_secrets(conn), stored_bot_token(conn))
    {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "the stored secrets could not be checked at start");
            return Ok(());
        }
    };
    let sealer = db.sealer();
    if !sealer.may_seal() && (!secrets.is_empty() || token.is_some()) {
        anyhow::bail!(
            "DATA_ENCRYPTION_KEY (formerly TOTP_ENCRYPTION_KEY): required when APP_ENV=production and secrets \
             are stored (two-factor logins, or a saved bot token); set it to the key they were sealed with"
        );
    }
    let two_factor = SecretBox::new(std::sync::Arc::clone(sealer));
    let mut unopened = Vec::new();
    for (id, stored) in secrets {
        match two_factor.open(id, &stored) {
            Ok(_) => {}
            Err(AppError::Internal(cause)) => unopened.push(format!("{cause:#}")),
            Err(other) => return Err(other.into()),
        }
    }
    if let Some(stored) = token {
        match open_bot_token(sealer, &stored) {
            Ok(token) if !Sealer::is_sealed(&stored) => {
                let txn = db.begin_write().await?;
                replace_bot_token(&*txn, &stored, &seal_bot_token(sealer, &token)?).await?;
                txn.commit().await?;
                db.settings().invalidate();
                tracing::info!("sealed the bot token stored in plain text by an earlier release");
            }
            Ok(_) => {}
            Err(e) => unopened.push(format!("the stored Telegram bot token: {e}")),
        }
    }
    if let Some(first) = unopened.first() {
        anyhow::bail!(
            "{} stored secret(s) cannot be opened with DATA_ENCRYPTION_KEY (or its deprecated name TOTP_ENCRYPTION_KEY) and DATA_ENCRYPTION_KEY_PREVIOUS; first: {first}",
            unopened.len()
        );
    }
    Ok(())
}

/// Seals every stored secret under the current key, in one transaction
/// (`stockroom reseal`). A secret that does not open stops it, and nothing
/// changes.
pub async fn reseal(db: &Services) -> AppResult<Resealed> {
    let sealer = db.sealer();
    let two_factor = SecretBox::new(std::sync::Arc::clone(sealer));
    let txn = db.begin_write().await?;
    let mut done = Resealed::default();
    for (id, stored) in two_factor_secrets(&*txn).await? {
        if sealer.is_current(&stored) {
            done.current += 1;
            continue;
        }
        let sealed = two_factor.seal(id, &two_factor.open(id, &stored)?)?;
        user::Entity::update_many()
            .col_expr(user::Column::TotpSecret, Expr::value(sealed))
            .filter(user::Column::Id.eq(id))
            .filter(user::Column::TotpSecret.eq(stored))
            .exec(&*txn)
            .await?;
        done.two_factor += 1;
    }
    if let Some(stored) = stored_bot_token(&*txn).await? {
        if sealer.is_current(&stored) {
            done.current += 1;
        } else {
            let token = open_bot_token(sealer, &stored).map_err(|e| {
                AppError::internal(anyhow::anyhow!("the stored Telegram bot token: {e}"))
            })?;
            done.bot_tokens +=
                replace_bot_token(&*txn, &stored, &seal_bot_token(sealer, &token)?).await?;
        }
    }
    txn.commit().await?;
    db.settings().invalidate();
    Ok(done)
}
