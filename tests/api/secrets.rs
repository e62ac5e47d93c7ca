//! Secrets at rest: the bot token and two-factor secrets are sealed under
//! the data-encryption key, which rotates (`DATA_ENCRYPTION_KEY_PREVIOUS`)
//! and re-seals (`stockroom reseal`) without anyone losing their login or
//! an alert.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, run_cli, spawn_app_with, stockroom_bin,
};
use crate::security::{code, enroll};
use crate::telegram::FakeTelegram;

const STORED: &str = "987654:STORED-token-sealed-at-rest-0000";

fn key(c: char) -> String {
    c.to_string().repeat(40)
}

async fn raw(app: &TestApp, sql: &str) -> String {
    app.scalar::<Option<String>>(sql).await.unwrap_or_default()
}

async fn stored_token(app: &TestApp) -> String {
    raw(app, "SELECT bot_token FROM notification_settings").await
}

async fn stored_totp(app: &TestApp) -> String {
    raw(
        app,
        &format!("SELECT totp_secret FROM users WHERE email = '{ADMIN_EMAIL}'"),
    )
    .await
}

/// The admin signs in with a code `step` steps from now.
async fn admin_login(app: &TestApp, secret: &str, step: i64) -> String {
    let r = app
        .gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            json!({ "i": { "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "otp": code(secret, step) } }),
        )
        .await;
    r.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A test alert, delivered to the fake with the stored token.
async fn test_alert_arrives(app: &TestApp, admin: &str, fake: &FakeTelegram, n: usize) {
    let r = app
        .gql(Some(admin), "mutation { sendTestAlert { id } }", json!({}))
        .await;
    assert!(r.data()["sendTestAlert"]["id"].is_string());
    let delivered = fake.wait_delivered(n, Duration::from_secs(15)).await;
    assert_eq!(delivered.len(), n);
    assert!(delivered.iter().all(|d| d.token == STORED));
}

/// Runs `stockroom reseal` on the app's database while the apps go on
/// serving.
async fn reseal(app: &TestApp, keys: &[(&str, &str)]) -> std::process::Output {
    let mut command = stockroom_bin();
    command.arg("reseal").env("DATABASE_URL", &app.database_url);
    for (name, value) in keys {
        command.env(name, value);
    }
    run_cli(command, None).await
}

fn as_pairs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test]
async fn secrets_are_sealed_and_survive_a_key_rotation_and_a_reseal() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("sqlx=debug,stockroom=debug")
        .with_test_writer()
        .try_init();
    let fake = FakeTelegram::start().await;
    let (a, b) = (key('a'), key('b'));
    let with = |keys: &[(&str, &str)]| {
        let mut all = fake.vars("111");
        all.push(("ALERT_POLL_SECONDS".into(), "1".into()));
        all.extend(keys.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        all
    };
    let app = spawn_app_with(&as_pairs(&with(&[("DATA_ENCRYPTION_KEY", &a)]))).await;
    let admin = app.admin_token().await;
    let (secret, _) = enroll(&app, &admin).await;
    let saved = app
        .gql(
            Some(&admin),
            "mutation($t: String!) { updateNotificationSettings(input: {botToken: $t}) { botTokenSource botTokenHint } }",
            json!({ "t": STORED }),
        )
        .await;
    assert_eq!(
        saved.data()["updateNotificationSettings"],
        json!({ "botTokenSource": "database", "botTokenHint": "0000" })
    );
    // Sealed at rest: neither secret is in the database as itself.
    let (token_at_rest, totp_at_rest) = (stored_token(&app).await, stored_totp(&app).await);
    for sealed in [&token_at_rest, &totp_at_rest] {
        assert!(sealed.starts_with("v1."), "{sealed}");
    }
    assert!(!token_at_rest.contains("STORED") && !token_at_rest.contains("987654"));
    test_alert_arrives(&app, &admin, &fake, 1).await;

    // A new key alone cannot open them: an instance refuses to start and
    // says which setting is missing, never a key.
    let refused = app
        .try_spawn_another(&[("DATA_ENCRYPTION_KEY", &b)])
        .await
        .err()
        .expect("refused");
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("DATA_ENCRYPTION_KEY_PREVIOUS"),
        "{refused}"
    );
    assert!(!refused.contains(&a) && !refused.contains(&b));

    // Rotated: every instance moves to the new key with the previous one,
    // which opens both secrets.
    let rotated_keys = [
        ("DATA_ENCRYPTION_KEY", b.as_str()),
        ("DATA_ENCRYPTION_KEY_PREVIOUS", a.as_str()),
    ];
    let rotated = app.spawn_another(&as_pairs(&with(&rotated_keys))).await;
    let (stopped, _database) = app.shutdown_keeping_database().await;
    stopped.unwrap();
    let admin = admin_login(&rotated, &secret, 0).await;
    test_alert_arrives(&rotated, &admin, &fake, 2).await;

    // Re-sealed under the new key, after which the previous key can go.
    let out = reseal(&rotated, &rotated_keys).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("resealed 1 two-factor secret(s) and 1 bot token(s)"),
        "{stdout}"
    );
    assert_ne!(stored_token(&rotated).await, token_at_rest);
    assert_ne!(stored_totp(&rotated).await, totp_at_rest);
    // A second run finds nothing to do.
    let again = reseal(&rotated, &rotated_keys).await;
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.contains("resealed 0 two-factor secret(s) and 0 bot token(s)"),
        "{again}"
    );
    let new_only = rotated
        .spawn_another(&as_pairs(&with(&[("DATA_ENCRYPTION_KEY", &b)])))
        .await;
    let admin = admin_login(&new_only, &secret, 1).await;
    test_alert_arrives(&new_only, &admin, &fake, 3).await;
    new_only.shutdown().await.unwrap();
    rotated.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bot_token_stored_in_plain_text_is_sealed_when_an_instance_starts() {
    let fake = FakeTelegram::start().await;
    let mut vars: Vec<(&str, &str)> = vec![
        ("TELEGRAM_API_URL", fake.url.as_str()),
        ("TELEGRAM_CHAT_IDS", "111"),
        ("ALERT_POLL_SECONDS", "1"),
    ];
    let app = spawn_app_with(&vars).await;
    let admin = app.admin_token().await;
    // The row as an earlier release left it: the token in plain text.
    app.gql(
        Some(&admin),
        "mutation { updateNotificationSettings(input: {chatIds: [\"111\"]}) { chatIds } }",
        json!({}),
    )
    .await
    .data();
    app.exec(&format!(
        "UPDATE notification_settings SET bot_token = '{STORED}'"
    ))
    .await;
    vars.push((
        "DATA_ENCRYPTION_KEY",
        "c-key-of-at-least-thirty-two-bytes-0000",
    ));
    let next = app.spawn_another(&vars).await;
    let sealed = stored_token(&next).await;
    assert!(
        sealed.starts_with("v1.") && !sealed.contains("STORED"),
        "{sealed}"
    );
    let settings: Value = next
        .gql(
            Some(&admin),
            "{ notificationSettings { botTokenSource botTokenHint } }",
            json!({}),
        )
        .await
        .data()["notificationSettings"]
        .clone();
    assert_eq!(
        settings,
        json!({ "botTokenSource": "database", "botTokenHint": "0000" })
    );
    test_alert_arrives(&next, &admin, &fake, 1).await;
    next.shutdown().await.unwrap();
    app.shutdown().await.unwrap();
}
