use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, spawn_app, spawn_app_with};

const ME: &str = "{ me { id email role isActive } }";

#[tokio::test]
async fn login_returns_tokens_and_me_is_the_user() {
    let app = spawn_app().await;
    let r = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let login = &r.data()["login"];
    assert_eq!(login["user"]["email"], ADMIN_EMAIL);
    assert_eq!(login["user"]["role"], "ADMIN");
    assert!(login["refreshToken"].as_str().unwrap().len() > 40);
    let token = login["accessToken"].as_str().unwrap();

    let me = app.gql(Some(token), ME, json!({})).await;
    assert_eq!(me.data()["me"]["email"], ADMIN_EMAIL);
}

#[tokio::test]
async fn login_email_is_case_insensitive() {
    let app = spawn_app().await;
    let r = app.login(&ADMIN_EMAIL.to_uppercase(), ADMIN_PASSWORD).await;
    assert_eq!(r.data()["login"]["user"]["email"], ADMIN_EMAIL);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_error() {
    let app = spawn_app().await;
    let wrong = app.login(ADMIN_EMAIL, "not-the-password").await;
    let unknown = app.login("nobody@test.local", "not-the-password").await;
    let a = wrong.expect_code("UNAUTHENTICATED");
    let b = unknown.expect_code("UNAUTHENTICATED");
    assert_eq!(a["message"], b["message"]);
}

#[tokio::test]
async fn requests_without_a_token_are_unauthenticated() {
    let app = spawn_app().await;
    app.gql(None, ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    app.gql(Some("garbage"), ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
}

fn claims(sub: &str, exp_offset: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "sub": sub, "role": "ADMIN", "iss": "stockroom", "aud": "stockroom-api",
        "iat": now, "exp": now + exp_offset, "jti": "x"
    })
}

async fn admin_id(app: &crate::helpers::TestApp) -> String {
    let r = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    r.data()["login"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_correctly_signed_token_is_accepted_but_an_expired_one_is_not() {
    let app = spawn_app().await;
    let sub = admin_id(&app).await;
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let valid =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(&sub, 300), &key).unwrap();
    app.gql(Some(&valid), ME, json!({})).await.data();

    let expired =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(&sub, -120), &key).unwrap();
    app.gql(Some(&expired), ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
}

#[tokio::test]
async fn tampered_signature_and_wrong_secret_are_refused() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let sig = parts[2].clone();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    parts[2] = format!("{flipped}{}", &sig[1..]);
    app.gql(Some(&parts.join(".")), ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");

    let sub = admin_id(&app).await;
    let other = EncodingKey::from_secret(b"another-secret-that-is-32-bytes-long!!");
    let forged =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(&sub, 300), &other).unwrap();
    app.gql(Some(&forged), ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
}

#[tokio::test]
async fn alg_none_token_is_refused() {
    use base64::Engine;
    let app = spawn_app().await;
    let sub = admin_id(&app).await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64.encode(claims(&sub, 300).to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        app.gql(Some(&token), ME, json!({}))
            .await
            .expect_code("UNAUTHENTICATED");
    }
}

const REFRESH: &str =
    "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }";
const LOGOUT: &str = "mutation($t: String!) { logout(refreshToken: $t) }";

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_session() {
    let app = spawn_app_with(&[
        ("TELEGRAM_BOT_TOKEN", "123:test"),
        ("TELEGRAM_CHAT_IDS", "42"),
        ("TELEGRAM_API_URL", "http://127.0.0.1:9"),
    ])
    .await;
    let first = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let old = first.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();

    let rotated = app.gql(None, REFRESH, json!({ "t": old })).await;
    let new = rotated.data()["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, old);
    let access = rotated.data()["refreshToken"]["accessToken"]
        .as_str()
        .unwrap();
    app.gql(Some(access), ME, json!({})).await.data();

    // The old token is spent; presenting it again looks like theft, so the
    // token it was rotated into stops working too.
    app.gql(None, REFRESH, json!({ "t": old }))
        .await
        .expect_code("UNAUTHENTICATED");
    app.gql(None, REFRESH, json!({ "t": new }))
        .await
        .expect_code("UNAUTHENTICATED");
    // The theft is audited and raises one LOGIN_FAILURES alert, however often
    // the stolen token comes back; the token itself is recorded nowhere.
    app.gql(None, REFRESH, json!({ "t": old }))
        .await
        .expect_code("UNAUTHENTICATED");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_logs WHERE action = 'LOGIN_FAILED' AND summary LIKE '%possible token theft%'")
            .await,
        2
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM alerts WHERE kind = 'LOGIN_FAILURES' AND message LIKE '%token theft%'")
            .await,
        1
    );
    let leaked = format!(
        "SELECT COUNT(*) FROM audit_logs WHERE summary LIKE '%{0}%' OR CAST(changes AS TEXT) LIKE '%{0}%'",
        &old[4..20]
    );
    assert_eq!(app.count(&leaked).await, 0);
}

#[tokio::test]
async fn unknown_refresh_token_is_refused() {
    let app = spawn_app().await;
    app.gql(None, REFRESH, json!({ "t": "srt_not-a-token" }))
        .await
        .expect_code("UNAUTHENTICATED");
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = spawn_app().await;
    let r = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let refresh = r.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let out = app.gql(None, LOGOUT, json!({ "t": refresh })).await;
    assert_eq!(out.data()["logout"], true);
    app.gql(None, REFRESH, json!({ "t": refresh }))
        .await
        .expect_code("UNAUTHENTICATED");
}

const CHANGE_PASSWORD: &str =
    "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";

#[tokio::test]
async fn change_password_checks_the_current_one_and_revokes_refresh_tokens() {
    let app = spawn_app().await;
    let r = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let access = r.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let refresh = r.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let other_session = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let other_refresh = other_session.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();

    let wrong = app
        .gql(
            Some(&access),
            CHANGE_PASSWORD,
            json!({ "c": "wrong-password", "n": "new-password-456" }),
        )
        .await;
    assert_eq!(
        wrong.expect_code("BAD_USER_INPUT")["extensions"]["field"],
        "currentPassword"
    );
    let short = app
        .gql(
            Some(&access),
            CHANGE_PASSWORD,
            json!({ "c": ADMIN_PASSWORD, "n": "short" }),
        )
        .await;
    assert_eq!(
        short.expect_code("BAD_USER_INPUT")["extensions"]["field"],
        "newPassword"
    );

    let ok = app
        .gql(
            Some(&access),
            CHANGE_PASSWORD,
            json!({ "c": ADMIN_PASSWORD, "n": "new-password-456" }),
        )
        .await;
    assert_eq!(ok.data()["changePassword"], true);

    for t in [refresh, other_refresh] {
        app.gql(None, REFRESH, json!({ "t": t }))
            .await
            .expect_code("UNAUTHENTICATED");
    }
    app.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect_code("UNAUTHENTICATED");
    app.login(ADMIN_EMAIL, "new-password-456").await.data();
}

#[tokio::test]
async fn a_deactivated_user_is_refused_at_once() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let email = "staff@test.local";
    let created = app
        .gql(
            Some(&admin),
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({ "i": { "email": email, "displayName": "Staff", "password": "staff-password-1", "role": "STAFF" } }),
        )
        .await;
    let id = created.data()["createUser"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let session = app.login(email, "staff-password-1").await;
    let access = session.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let refresh = session.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    app.gql(Some(&access), ME, json!({})).await.data();

    let off = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { updateUser(id: $id, input: { isActive: false }) { isActive } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(off.data()["updateUser"]["isActive"], false);

    app.gql(Some(&access), ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    app.gql(None, REFRESH, json!({ "t": refresh }))
        .await
        .expect_code("UNAUTHENTICATED");
    app.login(email, "staff-password-1")
        .await
        .expect_code("UNAUTHENTICATED");
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let id = admin_id(&app).await;
    let r = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { updateUser(id: $id, input: { role: VIEWER }) { role } }",
            json!({ "id": id }),
        )
        .await;
    r.expect_code("CONFLICT");
    let me = app.gql(Some(&admin), ME, json!({})).await;
    assert_eq!(me.data()["me"]["role"], "ADMIN");
}

#[tokio::test]
async fn create_user_validates_input_and_writes_nothing_on_error() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let q = "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }";
    let cases = [
        (
            json!({ "email": "not-an-email", "displayName": "X", "password": "long-enough-1", "role": "STAFF" }),
            "email",
        ),
        (
            json!({ "email": "x@test.local", "displayName": "  ", "password": "long-enough-1", "role": "STAFF" }),
            "displayName",
        ),
        (
            json!({ "email": "x@test.local", "displayName": "X", "password": "short", "role": "STAFF" }),
            "password",
        ),
    ];
    for (input, field) in cases {
        let r = app.gql(Some(&admin), q, json!({ "i": input })).await;
        assert_eq!(
            r.expect_code("BAD_USER_INPUT")["extensions"]["field"],
            field
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);

    let ok = json!({ "email": "dup@test.local", "displayName": "X", "password": "long-enough-1", "role": "STAFF" });
    app.gql(Some(&admin), q, json!({ "i": ok })).await.data();
    let dup = json!({ "email": "DUP@test.local", "displayName": "Y", "password": "long-enough-1", "role": "VIEWER" });
    app.gql(Some(&admin), q, json!({ "i": dup }))
        .await
        .expect_code("CONFLICT");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 2);
}

#[tokio::test]
async fn login_is_rate_limited_per_email() {
    let app = spawn_app_with(&[("THROTTLE_LOGIN_LIMIT", "3"), ("THROTTLE_LOGIN_TTL", "60")]).await;
    for _ in 0..3 {
        app.login(ADMIN_EMAIL, "wrong-password")
            .await
            .expect_code("UNAUTHENTICATED");
    }
    let limited = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let err = limited.expect_code("RATE_LIMITED");
    let retry = err["extensions"]["retryAfterSeconds"].as_u64().unwrap();
    assert!((1..=60).contains(&retry), "retryAfterSeconds = {retry}");
    // Only audited attempts count: the refused one wrote nothing.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_logs WHERE action = 'LOGIN_FAILED'")
            .await,
        3
    );
}

#[tokio::test]
async fn login_is_rate_limited_per_client_ip_across_emails() {
    let app = spawn_app_with(&[("THROTTLE_LOGIN_LIMIT", "3"), ("THROTTLE_LOGIN_TTL", "60")]).await;
    for i in 0..3 {
        app.login(&format!("user{i}@test.local"), "wrong-password")
            .await
            .expect_code("UNAUTHENTICATED");
    }
    app.login("user9@test.local", "wrong-password")
        .await
        .expect_code("RATE_LIMITED");
}

#[tokio::test]
async fn login_is_rate_limited_per_email_across_client_ips() {
    let app = spawn_app_with(&[
        ("THROTTLE_LOGIN_LIMIT", "3"),
        ("THROTTLE_LOGIN_TTL", "60"),
        ("TRUST_PROXY", "true"),
    ])
    .await;
    let q = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";
    let attempt = |ip: String| {
        let app = &app;
        async move {
            app.post_graphql(
                None,
                q,
                json!({ "i": { "email": ADMIN_EMAIL, "password": "wrong-password" } }),
                &[("x-forwarded-for", ip.as_str())],
            )
            .await
        }
    };
    for i in 0..3 {
        attempt(format!("198.51.100.{i}"))
            .await
            .expect_code("UNAUTHENTICATED");
    }
    let limited = attempt("198.51.100.77".into()).await;
    limited.expect_code("RATE_LIMITED");
}

#[tokio::test]
async fn absurd_login_emails_are_refused_without_bloating_the_audit_log() {
    let app = spawn_app().await;
    let huge = format!("{}@test.local", "a".repeat(20_000));
    app.login(&huge, "whatever-password")
        .await
        .expect_code("UNAUTHENTICATED");
    app.login("nul\u{0}byte@test.local", "whatever-password")
        .await
        .expect_code("UNAUTHENTICATED");
    let admin = app.admin_token().await;
    let rows = app
        .gql(
            Some(&admin),
            "{ auditLogs(filter: { action: LOGIN_FAILED }) { nodes { changes } } }",
            json!({}),
        )
        .await;
    let nodes = rows.data()["auditLogs"]["nodes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(nodes.len(), 2);
    for n in nodes {
        let email = n["changes"]["after"]["email"].as_str().unwrap();
        assert!(email.chars().count() <= 254 && !email.contains('\u{0}'));
    }
}

#[tokio::test]
async fn an_overlong_password_is_refused_and_audited_against_the_account() {
    let app = spawn_app().await;
    app.login(ADMIN_EMAIL, &"p".repeat(600))
        .await
        .expect_code("UNAUTHENTICATED");
    let admin = app.admin_token().await;
    let rows = app
        .gql(
            Some(&admin),
            "{ auditLogs(filter: { action: LOGIN_FAILED }) { nodes { changes actor { email } } } }",
            json!({}),
        )
        .await;
    let row = &rows.data()["auditLogs"]["nodes"][0];
    assert_eq!(row["changes"]["after"]["reason"], "password too long");
    assert_eq!(row["actor"]["email"], ADMIN_EMAIL);
}

fn kid_of(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    json["kid"].as_str().map(String::from)
}

#[tokio::test]
async fn a_rotated_secret_keeps_its_tokens_valid_only_while_it_is_the_previous_one() {
    let old = "old-secret-old-secret-old-secret-0001";
    let new = "new-secret-new-secret-new-secret-0002";
    let app = crate::helpers::spawn_app_with(&[("JWT_SECRET", old)]).await;
    let token = app.admin_token().await;
    let old_kid = kid_of(&token).expect("tokens carry a kid");
    let me = "{ me { email } }";

    // Rotated: the new secret signs, the old one still verifies.
    let rotated = app
        .spawn_another(&[("JWT_SECRET", new), ("JWT_SECRET_PREVIOUS", old)])
        .await;
    let r = rotated.gql(Some(&token), me, json!({})).await;
    assert_eq!(r.data()["me"]["email"], "admin@test.local", "{}", r.body);
    let fresh = rotated.admin_token().await;
    let new_kid = kid_of(&fresh).unwrap();
    assert_ne!(new_kid, old_kid);
    assert!(
        !new_kid.contains("secret"),
        "a kid names the key, never shows it"
    );

    // Once the previous secret is removed, its tokens are refused; the new
    // ones are not.
    let after = app.spawn_another(&[("JWT_SECRET", new)]).await;
    after
        .gql(Some(&token), me, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    let r = after.gql(Some(&fresh), me, json!({})).await;
    assert_eq!(r.data()["me"]["email"], "admin@test.local");
    // And the old instance never accepted the new key.
    app.gql(Some(&fresh), me, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
}

#[test]
fn the_previous_secret_must_differ_and_be_long_enough() {
    use std::collections::HashMap;
    let base = |previous: &str| -> HashMap<String, String> {
        [
            ("DATABASE_URL", "sqlite::memory:"),
            ("JWT_SECRET", "current-secret-current-secret-000001"),
            ("JWT_SECRET_PREVIOUS", previous),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let err = |previous: &str| {
        stockroom::config::Config::from_vars(base(previous))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(err("current-secret-current-secret-000001").contains("same as JWT_SECRET"));
    assert!(err("short").contains("at least 32 bytes"));
    assert_eq!(err("previous-secret-previous-secret-0001"), "");
}
