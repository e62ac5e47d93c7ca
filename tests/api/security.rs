//! Account security: two-factor login, lockout, password policy, the
//! security report and the CLI recovery commands.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use stockroom::entity::user;

use crate::helpers::{
    ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, TestApp, fresh_database, run_cli, spawn_app,
    spawn_app_with, stockroom_bin,
};

const LOGIN: &str = "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken passwordChangeRequired twoFactorEnrollmentRequired user { id twoFactorEnabled lockedUntil } } }";
const BEGIN: &str = "mutation { beginTwoFactorEnrollment { secret otpauthUri qrCodeSvg } }";
const CONFIRM: &str = "mutation($c: String!) { confirmTwoFactor(code: $c) { recoveryCodes user { twoFactorEnabled } } }";
const DISABLE: &str = "mutation($c: String!) { disableTwoFactor(code: $c) }";
const PASSWORD: &str = "user-password-123";

/// The code an authenticator shows for `secret`, `offset` steps from now.
pub(crate) fn code(secret: &str, offset: i64) -> String {
    let bytes = totp_rs::Secret::try_from_base32(secret)
        .unwrap()
        .as_bytes()
        .to_vec();
    let totp = totp_rs::Builder::new()
        .with_secret(bytes.into_boxed_slice())
        .build()
        .unwrap();
    let at = (Utc::now().timestamp() + offset * 30) as u64;
    totp.generate(at).to_string()
}

async fn login(
    app: &TestApp,
    email: &str,
    password: &str,
    otp: Option<&str>,
) -> crate::helpers::Gql {
    let mut input = json!({ "email": email, "password": password });
    if let Some(otp) = otp {
        input["otp"] = json!(otp);
    }
    app.gql(None, LOGIN, json!({ "i": input })).await
}

/// The cheapest read a signed-in VIEWER may make.
async fn products_page(app: &TestApp, token: &str) -> crate::helpers::Gql {
    app.gql(
        Some(token),
        "{ products(first: 1) { totalCount } }",
        json!({}),
    )
    .await
}

/// Runs the CLI on the app's database, `stdin` as its input.
async fn cli(app: &TestApp, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut command = stockroom_bin();
    command.args(args).env("DATABASE_URL", &app.database_url);
    run_cli(command, stdin.map(str::to_string)).await
}

fn token_of(session: &crate::helpers::Gql) -> String {
    session.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A new user with `role`; returns (id, email, token).
async fn user(app: &TestApp, admin: &str, role: &str) -> (String, String, String) {
    let email = format!(
        "{}-{}@test.local",
        role.to_lowercase(),
        uuid::Uuid::new_v4().simple()
    );
    let r = app
        .gql(
            Some(admin),
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({ "i": { "email": email, "displayName": role, "password": PASSWORD, "role": role } }),
        )
        .await;
    let id = r.data()["createUser"]["id"].as_str().unwrap().to_string();
    let token = token_of(&login(app, &email, PASSWORD, None).await);
    (id, email, token)
}

/// Enrolls the user and returns (secret, recovery codes).
pub(crate) async fn enroll(app: &TestApp, token: &str) -> (String, Vec<String>) {
    let e = app.gql(Some(token), BEGIN, json!({})).await;
    let secret = e.data()["beginTwoFactorEnrollment"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    // One step back: the later logins of a test use this step and later ones.
    let r = app
        .gql(Some(token), CONFIRM, json!({ "c": code(&secret, -1) }))
        .await;
    let codes = r.data()["confirmTwoFactor"]["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (secret, codes)
}

async fn row(app: &TestApp, id: &str) -> user::Model {
    user::Entity::find_by_id(uuid::Uuid::parse_str(id).unwrap())
        .one(app.state.services.conn())
        .await
        .unwrap()
        .unwrap()
}

async fn recovery_hashes(app: &TestApp, id: &str) -> Vec<String> {
    use stockroom::entity::recovery_code;
    recovery_code::Entity::find()
        .filter(recovery_code::Column::UserId.eq(uuid::Uuid::parse_str(id).unwrap()))
        .all(app.state.services.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.code_hash)
        .collect()
}

async fn audit_count(app: &TestApp, action: &str, entity: &str) -> i64 {
    app.count(&format!(
        "SELECT COUNT(*) FROM audit_logs WHERE action = '{action}' AND entity_id = '{entity}'"
    ))
    .await
}

async fn all_text(app: &TestApp, sql: &str) -> String {
    use sea_orm::ConnectionTrait;
    let db = app.state.services.conn();
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql.to_string(),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            r.try_get_by_index::<Option<String>>(0)
                .unwrap()
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn two_factor_enrollment_login_replay_recovery_codes_and_disable() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (id, email, token) = user(&app, &admin, "STAFF").await;

    let e = app.gql(Some(&token), BEGIN, json!({})).await;
    let e = &e.data()["beginTwoFactorEnrollment"];
    let secret = e["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32, "160 bits in base32: {secret}");
    let uri = e["otpauthUri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Stockroom:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(e["qrCodeSvg"].as_str().unwrap().contains("<svg"));
    // Not on until confirmed: a login needs no code yet.
    login(&app, &email, PASSWORD, None).await.data();

    // Stored encrypted, never as the secret itself.
    let stored = row(&app, &id).await.totp_secret.unwrap();
    assert!(stored.starts_with("v1."), "{stored}");
    assert!(!stored.contains(&secret));

    let wrong = app
        .gql(Some(&token), CONFIRM, json!({ "c": "000000" }))
        .await;
    wrong.expect_code("BAD_USER_INPUT");
    let confirmed = app
        .gql(Some(&token), CONFIRM, json!({ "c": code(&secret, -1) }))
        .await;
    let codes: Vec<String> = confirmed.data()["confirmTwoFactor"]["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    assert_eq!(
        confirmed.data()["confirmTwoFactor"]["user"]["twoFactorEnabled"],
        true
    );
    let hashes = recovery_hashes(&app, &id).await.join("\n");
    assert_eq!(hashes.lines().count(), 10);
    assert!(codes.iter().all(|c| !hashes.contains(c.as_str())));

    // Without a code: a distinct answer, and no session.
    let logins = audit_count(&app, "LOGIN", &id).await;
    login(&app, &email, PASSWORD, None)
        .await
        .expect_code("TWO_FACTOR_REQUIRED");
    assert_eq!(audit_count(&app, "LOGIN", &id).await, logins);

    // A wrong code is a failed login.
    let failed = audit_count(&app, "LOGIN_FAILED", &id).await;
    login(&app, &email, PASSWORD, Some("123456"))
        .await
        .expect_code("UNAUTHENTICATED");
    assert_eq!(audit_count(&app, "LOGIN_FAILED", &id).await, failed + 1);

    // The code the confirmation used cannot be used again.
    login(&app, &email, PASSWORD, Some(&code(&secret, -1)))
        .await
        .expect_code("UNAUTHENTICATED");
    // A later code works once.
    let now_code = code(&secret, 0);
    let ok = login(&app, &email, PASSWORD, Some(&now_code)).await;
    let token = token_of(&ok);
    assert_eq!(ok.data()["login"]["user"]["twoFactorEnabled"], true);
    login(&app, &email, PASSWORD, Some(&now_code))
        .await
        .expect_code("UNAUTHENTICATED");

    // A recovery code works once, typed in any case.
    login(&app, &email, PASSWORD, Some(&codes[0].to_lowercase()))
        .await
        .data();
    login(&app, &email, PASSWORD, Some(&codes[0]))
        .await
        .expect_code("UNAUTHENTICATED");
    // A wrong password with a right code is still refused.
    login(&app, &email, "not-the-password", Some(&codes[1]))
        .await
        .expect_code("UNAUTHENTICATED");

    // The secret never comes back, nor lands in the audit log.
    let me = app
        .gql(
            Some(&token),
            "{ me { id email twoFactorEnabled passwordChangedAt lockedUntil lastLoginAt } }",
            json!({}),
        )
        .await;
    assert!(!me.body.to_string().contains(&secret));
    let audit = all_text(&app, "SELECT summary FROM audit_logs").await
        + &all_text(&app, "SELECT CAST(changes AS TEXT) FROM audit_logs").await;
    assert!(!audit.contains(&secret));
    assert!(codes.iter().all(|c| !audit.contains(c.as_str())));
    assert!(audit_count(&app, "TWO_FACTOR_ENROLL", &id).await == 1);
    assert!(audit_count(&app, "TWO_FACTOR_ENABLE", &id).await == 1);

    // Turning it off takes a valid code; a recovery code does.
    app.gql(Some(&token), DISABLE, json!({ "c": "999999" }))
        .await
        .expect_code("BAD_USER_INPUT");
    let off = app
        .gql(Some(&token), DISABLE, json!({ "c": codes[2] }))
        .await;
    assert_eq!(off.data()["disableTwoFactor"], true);
    assert_eq!(audit_count(&app, "TWO_FACTOR_DISABLE", &id).await, 1);
    assert!(recovery_hashes(&app, &id).await.is_empty());
    let plain = login(&app, &email, PASSWORD, None).await;
    assert_eq!(plain.data()["login"]["user"]["twoFactorEnabled"], false);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_totp_secret_and_codes_never_reach_the_logs() {
    // The real binary at debug level, its whole output kept.
    let (url, _guard) = fresh_database().await;
    /// Kills the server however the test ends.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = stockroom_bin()
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("JWT_SECRET", JWT_SECRET)
        .env("ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("PORT", "0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Server(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut output = String::new();
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server starts");
        output.push_str(&line);
        output.push('\n');
        if line.contains("listening") {
            let v: Value = serde_json::from_str(&line).unwrap();
            break v["port"].as_u64().unwrap();
        }
    };
    let client = reqwest::Client::new();
    let address = format!("http://127.0.0.1:{port}/graphql");
    let gql = |token: Option<String>, query: &'static str, vars: Value| {
        let client = client.clone();
        let address = address.clone();
        async move {
            let mut req = client
                .post(&address)
                .json(&json!({ "query": query, "variables": vars }));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send().await.unwrap().json::<Value>().await.unwrap()
        }
    };
    let r = gql(
        None,
        LOGIN,
        json!({ "i": { "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD } }),
    )
    .await;
    let token = r["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let e = gql(Some(token.clone()), BEGIN, json!({})).await;
    let secret = e["data"]["beginTwoFactorEnrollment"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let first = code(&secret, -1);
    let c = gql(Some(token.clone()), CONFIRM, json!({ "c": first })).await;
    let codes: Vec<String> = c["data"]["confirmTwoFactor"]["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let second = code(&secret, 0);
    let ok = gql(
        None,
        LOGIN,
        json!({ "i": { "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "otp": second } }),
    )
    .await;
    assert!(ok["data"]["login"]["accessToken"].is_string(), "{ok}");
    let rec = gql(
        None,
        LOGIN,
        json!({ "i": { "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "otp": codes[0] } }),
    )
    .await;
    assert!(rec["data"]["login"]["accessToken"].is_string(), "{rec}");

    drop(child);
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        output.push_str(&line);
        output.push('\n');
    }
    assert!(output.contains("graphql"), "debug logs were captured");
    for needle in [&secret, &first, &second, &codes[0], &codes[1]] {
        assert!(!output.contains(needle.as_str()), "{needle} in the logs");
    }
    assert!(!output.contains(ADMIN_PASSWORD));
}

#[tokio::test]
async fn a_role_that_requires_two_factor_can_only_enroll_until_it_is_on() {
    let app = spawn_app_with(&[("TWO_FACTOR_REQUIRED_ROLES", "MANAGER")]).await;
    let admin = app.admin_token().await;
    let (_, email, _) = user(&app, &admin, "MANAGER").await;
    let session = login(&app, &email, PASSWORD, None).await;
    assert_eq!(session.data()["login"]["twoFactorEnrollmentRequired"], true);
    assert_eq!(session.data()["login"]["passwordChangeRequired"], false);
    let token = token_of(&session);

    products_page(&app, &token)
        .await
        .expect_code("TWO_FACTOR_ENROLLMENT_REQUIRED");
    let products = app.count("SELECT COUNT(*) FROM products").await;
    app.gql(
        Some(&token),
        "mutation { createProduct(input: { sku: \"NO-2FA\", name: \"x\" }) { id } }",
        json!({}),
    )
    .await
    .expect_code("TWO_FACTOR_ENROLLMENT_REQUIRED");
    // An alias does not hide the field.
    app.gql(
        Some(&token),
        "{ me: products(first: 1) { totalCount } }",
        json!({}),
    )
    .await
    .expect_code("TWO_FACTOR_ENROLLMENT_REQUIRED");
    assert_eq!(app.count("SELECT COUNT(*) FROM products").await, products);
    let rest = app
        .client
        .post(format!("{}/api/v1/uploads?kind=PRODUCTS", app.address))
        .bearer_auth(&token)
        .body("sku,name\nA,B\n")
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 403);
    let body: Value = rest.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "TWO_FACTOR_ENROLLMENT_REQUIRED",
        "{body}"
    );
    let mut ws = app.ws(&token).await;
    ws.subscribe(
        "s",
        "subscription { stockChanged { product { id } } }",
        json!({}),
    )
    .await;
    let msg = ws.next().await;
    assert_eq!(
        msg["payload"]["errors"][0]["extensions"]["code"], "TWO_FACTOR_ENROLLMENT_REQUIRED",
        "{msg}"
    );
    // me, enrollment and introspection stay open.
    app.gql(Some(&token), "{ me { email } __typename }", json!({}))
        .await
        .data();

    let (_, _) = enroll(&app, &token).await;
    let r = products_page(&app, &token).await;
    assert!(r.data()["products"]["totalCount"].is_number());
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn repeated_failures_lock_the_account_on_every_instance_until_unlocked() {
    let settings = [
        ("LOGIN_LOCKOUT_THRESHOLD", "3"),
        ("LOGIN_LOCKOUT_SECONDS", "900"),
        ("TRUST_PROXY", "true"),
        ("TELEGRAM_BOT_TOKEN", "123:test"),
        ("TELEGRAM_CHAT_IDS", "42"),
        ("TELEGRAM_API_URL", "http://127.0.0.1:9"),
    ];
    let app = spawn_app_with(&settings).await;
    let other = app.spawn_another(&settings).await;
    let admin = app.admin_token().await;
    let (id, email, _) = user(&app, &admin, "STAFF").await;

    let wrong = login(&app, &email, "wrong-password-1", None).await;
    wrong.expect_code("UNAUTHENTICATED");
    // Failures on two instances count together.
    login(&other, &email, "wrong-password-2", None)
        .await
        .expect_code("UNAUTHENTICATED");
    login(&app, &email, "wrong-password-3", None)
        .await
        .expect_code("UNAUTHENTICATED");
    assert_eq!(audit_count(&app, "ACCOUNT_LOCK", &id).await, 1);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM alerts WHERE kind = 'LOGIN_FAILURES' AND dedupe_key LIKE 'lock:%'"
        )
        .await,
        1
    );

    // The right password now gets exactly the wrong password's answer, on
    // both instances; a restart (a new instance after the first stops) too.
    let locked = login(&other, &email, PASSWORD, None).await;
    assert_eq!(locked.status, wrong.status);
    assert_eq!(locked.body, wrong.body);
    other.shutdown().await.unwrap();
    let restarted = app.spawn_another(&settings).await;
    let locked = login(&restarted, &email, PASSWORD, None).await;
    assert_eq!(locked.body, wrong.body);
    let unknown = login(&restarted, "nobody@test.local", PASSWORD, None).await;
    assert_eq!(unknown.body, wrong.body);
    // No more locks or counting while locked.
    assert_eq!(audit_count(&restarted, "ACCOUNT_LOCK", &id).await, 1);

    let admin = token_of(&login(&restarted, ADMIN_EMAIL, ADMIN_PASSWORD, None).await);
    let listed = restarted
        .gql(
            Some(&admin),
            "{ users(first: 100) { nodes { email lockedUntil } } }",
            json!({}),
        )
        .await;
    let row = listed.data()["users"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == email.as_str())
        .unwrap()
        .clone();
    assert!(row["lockedUntil"].is_string());
    let (_, _, staff) = user(&restarted, &admin, "STAFF").await;
    restarted
        .gql(
            Some(&staff),
            "mutation($id: ID!) { unlockUser(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await
        .expect_code("FORBIDDEN");
    let unlocked = restarted
        .gql(
            Some(&admin),
            "mutation($id: ID!) { unlockUser(id: $id) { lockedUntil } }",
            json!({ "id": id }),
        )
        .await;
    assert!(unlocked.data()["unlockUser"]["lockedUntil"].is_null());
    assert_eq!(audit_count(&restarted, "ACCOUNT_UNLOCK", &id).await, 1);
    login(&app, &email, PASSWORD, None).await.data();
    restarted.shutdown().await.unwrap();
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lock_ends_by_itself_and_its_end_is_audited() {
    let app = spawn_app_with(&[
        ("LOGIN_LOCKOUT_THRESHOLD", "2"),
        ("LOGIN_LOCKOUT_SECONDS", "1"),
    ])
    .await;
    let admin = app.admin_token().await;
    let (id, email, _) = user(&app, &admin, "VIEWER").await;
    for _ in 0..2 {
        login(&app, &email, "wrong-password", None)
            .await
            .expect_code("UNAUTHENTICATED");
    }
    login(&app, &email, PASSWORD, None)
        .await
        .expect_code("UNAUTHENTICATED");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Ended by the sweep or by this login, audited once either way.
    login(&app, &email, PASSWORD, None).await.data();
    assert_eq!(audit_count(&app, "ACCOUNT_LOCK", &id).await, 1);
    assert_eq!(audit_count(&app, "ACCOUNT_UNLOCK", &id).await, 1);
    assert_eq!(row(&app, &id).await.failed_login_count, 0);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_password_must_be_changed_to_a_new_uncommon_one_first() {
    let app = spawn_app_with(&[("PASSWORD_MAX_AGE_DAYS", "30")]).await;
    let admin = app.admin_token().await;
    let (id, email, _) = user(&app, &admin, "STAFF").await;
    user::Entity::update_many()
        .col_expr(
            user::Column::PasswordChangedAt,
            Expr::value(Utc::now() - chrono::Duration::days(31)),
        )
        .filter(user::Column::Email.eq(email.as_str()))
        .exec(app.state.services.conn())
        .await
        .unwrap();
    app.state.auth.users.invalidate_all();

    let session = login(&app, &email, PASSWORD, None).await;
    assert_eq!(session.data()["login"]["passwordChangeRequired"], true);
    let token = token_of(&session);
    // The same text answered for an unrestricted caller first (and kept
    // parsed by the HTTP fast path) is still refused.
    products_page(&app, &admin).await.data();
    products_page(&app, &token)
        .await
        .expect_code("PASSWORD_CHANGE_REQUIRED");
    app.gql(Some(&token), "{ me { passwordChangedAt } }", json!({}))
        .await
        .data();

    let change = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";
    let hash = row(&app, &id).await.password_hash;
    let same = app
        .gql(
            Some(&token),
            change,
            json!({ "c": PASSWORD, "n": PASSWORD }),
        )
        .await;
    same.expect_code("BAD_USER_INPUT");
    let common = app
        .gql(
            Some(&token),
            change,
            json!({ "c": PASSWORD, "n": "Password123" }),
        )
        .await;
    common.expect_code("BAD_USER_INPUT");
    assert!(
        common.error()["message"]
            .as_str()
            .unwrap()
            .contains("common")
    );
    assert_eq!(row(&app, &id).await.password_hash, hash, "nothing written");
    app.gql(
        Some(&token),
        change,
        json!({ "c": PASSWORD, "n": "a-fresh-passphrase-9" }),
    )
    .await
    .data();
    let fresh = login(&app, &email, "a-fresh-passphrase-9", None).await;
    assert_eq!(fresh.data()["login"]["passwordChangeRequired"], false);
    let token = token_of(&fresh);
    products_page(&app, &token).await.data();

    // Creating a user with a common password writes nothing either.
    let users = app.count("SELECT COUNT(*) FROM users").await;
    app.gql(
        Some(&admin),
        "mutation { createUser(input: { email: \"c@test.local\", displayName: \"C\", password: \"iloveyou2\", role: STAFF }) { id } }",
        json!({}),
    )
    .await
    .expect_code("BAD_USER_INPUT");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, users);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_security_report_lists_what_the_review_needs() {
    let app = spawn_app_with(&[
        ("LOGIN_LOCKOUT_THRESHOLD", "3"),
        ("PASSWORD_MAX_AGE_DAYS", "90"),
        ("TRUST_PROXY", "true"),
    ])
    .await;
    let admin = app.admin_token().await;
    let (_, manager, manager_token) = user(&app, &admin, "MANAGER").await;
    let (_, staff, _) = user(&app, &admin, "STAFF").await;
    for _ in 0..3 {
        app.post_graphql(
            None,
            LOGIN,
            json!({ "i": { "email": staff, "password": "wrong-password" } }),
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await
        .expect_code("UNAUTHENTICATED");
    }
    let (_, _) = enroll(&app, &manager_token).await;
    let query = "{ securityReport { passwordMaxAgeDays lockoutThreshold activeUsers twoFactorUsers privilegedWithoutTwoFactor { email } expiredPasswords { email } lockedAccounts { email } failedLoginsByAccount { key count user { email } } failedLoginsByIp { key count } } }";
    app.gql(Some(&manager_token), query, json!({}))
        .await
        .expect_code("FORBIDDEN");
    let r = app.gql(Some(&admin), query, json!({})).await;
    let r = &r.data()["securityReport"];
    assert_eq!(r["passwordMaxAgeDays"], 90);
    assert_eq!(r["lockoutThreshold"], 3);
    assert_eq!(r["twoFactorUsers"], 1);
    let emails = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(emails(&r["privilegedWithoutTwoFactor"]), vec![ADMIN_EMAIL]);
    assert!(!emails(&r["privilegedWithoutTwoFactor"]).contains(&manager));
    assert_eq!(emails(&r["lockedAccounts"]), vec![staff.clone()]);
    assert_eq!(r["failedLoginsByAccount"][0]["key"], staff.as_str());
    assert_eq!(r["failedLoginsByAccount"][0]["count"], 3);
    assert_eq!(
        r["failedLoginsByAccount"][0]["user"]["email"],
        staff.as_str()
    );
    assert_eq!(r["failedLoginsByIp"][0]["key"], "203.0.113.9");
    assert_eq!(r["failedLoginsByIp"][0]["count"], 3);
    assert!(emails(&r["expiredPasswords"]).is_empty());

    // The same review from the command line, as JSON; findings exit 1.
    let out = stockroom_bin()
        .args(["security-report", "--json"])
        .env("DATABASE_URL", &app.database_url)
        .env("LOGIN_LOCKOUT_THRESHOLD", "3")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["privilegedWithoutTwoFactor"][0]["email"], ADMIN_EMAIL);
    assert_eq!(doc["lockedAccounts"][0]["email"], staff.as_str());
    assert_eq!(doc["failedLoginsByIp"][0]["key"], "203.0.113.9");
    let text = cli(&app, &["security-report"], None).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("admins and managers without 2FA: 1"),
        "{text}"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_cli_resets_a_password_and_two_factor_login_audited() {
    let app = spawn_app_with(&[("LOGIN_LOCKOUT_THRESHOLD", "2")]).await;
    let admin = app.admin_token().await;
    let (admin_secret, _) = enroll(&app, &admin).await;
    let admin_id = user::Entity::find()
        .filter(user::Column::Email.eq(ADMIN_EMAIL))
        .one(app.state.services.conn())
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string();
    // The sole admin locks themselves out.
    for _ in 0..2 {
        login(&app, ADMIN_EMAIL, "forgotten-password", None)
            .await
            .expect_code("UNAUTHENTICATED");
    }

    // A generated password, printed once.
    let out = cli(&app, &["reset-password", ADMIN_EMAIL], None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let generated = stdout
        .lines()
        .find_map(|l| l.strip_prefix("new password: "))
        .unwrap()
        .to_string();
    app.state.auth.users.invalidate_all();
    // The lock is gone, but 2FA still holds.
    login(&app, ADMIN_EMAIL, &generated, None)
        .await
        .expect_code("TWO_FACTOR_REQUIRED");
    login(&app, ADMIN_EMAIL, &generated, Some(&code(&admin_secret, 0)))
        .await
        .data();

    // A chosen password from standard input; a common one is refused.
    let reset = ["reset-password", "--stdin", ADMIN_EMAIL];
    let refused = cli(&app, &reset, Some("qwerty123")).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("common"));
    let chosen = cli(&app, &reset, Some("chosen-admin-passphrase")).await;
    assert!(chosen.status.success());
    assert!(!String::from_utf8_lossy(&chosen.stdout).contains("chosen-admin-passphrase"));

    let out = cli(&app, &["reset-2fa", ADMIN_EMAIL], None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.state.auth.users.invalidate_all();
    let back = login(&app, ADMIN_EMAIL, "chosen-admin-passphrase", None).await;
    assert_eq!(back.data()["login"]["user"]["twoFactorEnabled"], false);

    let agents = all_text(
        &app,
        &format!("SELECT user_agent FROM audit_logs WHERE entity_id = '{admin_id}' AND action IN ('PASSWORD_RESET', 'TWO_FACTOR_DISABLE') ORDER BY occurred_at"),
    )
    .await;
    let agents: Vec<&str> = agents.lines().collect();
    assert_eq!(agents.len(), 3, "{agents:?}");
    assert!(agents[0].starts_with("stockroom-cli reset-password"));
    assert!(agents[2].starts_with("stockroom-cli reset-2fa"));
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM audit_logs WHERE entity_id = '{admin_id}' AND action = 'PASSWORD_RESET' AND actor_id IS NULL")).await,
        2
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_admin_resets_another_users_two_factor_login() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (id, email, token) = user(&app, &admin, "STAFF").await;
    let (_, _) = enroll(&app, &token).await;
    let q = "mutation($id: ID!) { resetTwoFactor(id: $id) { twoFactorEnabled } }";
    app.gql(Some(&token), q, json!({ "id": id }))
        .await
        .expect_code("FORBIDDEN");
    let r = app.gql(Some(&admin), q, json!({ "id": id })).await;
    assert_eq!(r.data()["resetTwoFactor"]["twoFactorEnabled"], false);
    assert_eq!(audit_count(&app, "TWO_FACTOR_DISABLE", &id).await, 1);
    login(&app, &email, PASSWORD, None).await.data();
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn production_refuses_to_start_without_the_totp_key_once_a_user_has_two_factor() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let vars = |key: Option<&str>| {
        let mut v: std::collections::HashMap<String, String> = [
            ("APP_ENV", "production"),
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("DATABASE_URL", app.database_url.as_str()),
            ("JWT_SECRET", JWT_SECRET),
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(key) = key {
            v.insert("TOTP_ENCRYPTION_KEY".into(), key.into());
        }
        stockroom::config::Config::from_vars(v).unwrap()
    };
    // Nobody has 2FA yet: production starts without the key.
    let first = stockroom::startup::Application::build(vars(None)).await;
    assert!(first.is_ok());
    drop(first);
    // In development the key derives from JWT_SECRET; once a user has 2FA,
    // production insists on a key of its own.
    enroll(&app, &admin).await;
    let refused = stockroom::startup::Application::build(vars(None)).await;
    let err = refused.err().expect("refused").to_string();
    assert!(err.contains("DATA_ENCRYPTION_KEY"), "{err}");
    // A key that did not seal the secret is refused too, naming the setting
    // that would open it.
    let wrong = stockroom::startup::Application::build(vars(Some(&"k".repeat(40)))).await;
    let err = format!("{:#}", wrong.err().expect("refused"));
    assert!(err.contains("DATA_ENCRYPTION_KEY_PREVIOUS"), "{err}");
    // The key it was sealed with (development derives it from JWT_SECRET),
    // under the deprecated name, opens it.
    let with_key = stockroom::startup::Application::build(vars(Some(JWT_SECRET))).await;
    assert!(with_key.is_ok(), "{:#}", with_key.err().unwrap());
    drop(with_key);
    app.shutdown().await.unwrap();
}

/// Every connection of the app's pool, held in open transactions until
/// dropped (as many as it hands out before its acquire timeout).
async fn hold_pool(app: &TestApp) -> Vec<sea_orm::DatabaseTransaction> {
    use sea_orm::TransactionTrait;
    let mut held = Vec::new();
    while let Ok(txn) = app.state.services.conn().begin().await {
        held.push(txn);
    }
    assert!(!held.is_empty(), "no connection could be held");
    held
}

#[tokio::test]
async fn a_restricted_caller_is_refused_when_the_first_read_of_its_account_fails() {
    let app = spawn_app_with(&[
        ("TWO_FACTOR_REQUIRED_ROLES", "MANAGER"),
        ("DB_MAX_CONNECTIONS", "2"),
        ("DB_ACQUIRE_TIMEOUT_MS", "300"),
        // Every request reads the account afresh.
        ("AUTH_CACHE_SECONDS", "0"),
    ])
    .await;
    let admin = app.admin_token().await;
    let (_, _, token) = user(&app, &admin, "MANAGER").await;
    let products = app.count("SELECT COUNT(*) FROM products").await;
    let create = "mutation { createProduct(input: { sku: \"FAIL-OPEN\", name: \"x\" }) { id } }";

    // The first read of the account times out waiting for a connection;
    // the pool is free again before a second read would time out. A check
    // that took the failure for "not restricted" would let the resolver's
    // own read succeed and the product be created.
    let held = hold_pool(&app).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(450)).await;
        drop(held);
    });
    let refused = app.gql(Some(&token), create, json!({})).await;
    release.await.unwrap();
    assert_eq!(refused.error_code(), Some("INTERNAL"), "{}", refused.body);
    assert!(refused.body["data"].is_null(), "{}", refused.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM products").await, products);

    // With the database back, the restriction itself refuses it.
    app.gql(Some(&token), create, json!({}))
        .await
        .expect_code("TWO_FACTOR_ENROLLMENT_REQUIRED");
    assert_eq!(app.count("SELECT COUNT(*) FROM products").await, products);
    app.shutdown().await.unwrap();
}
