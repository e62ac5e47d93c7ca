//! Telegram alerts against a fake Bot API: what is queued, how it is
//! delivered, retried, paced and digested, and what operators see.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_EMAIL, TestApp, is_postgres, spawn_app, spawn_app_with, spawn_pair_with,
};
use crate::telegram::{FakeTelegram, Reply, TOKEN};

const ALERT_FIELDS: &str =
    "id kind status chatId message attempts retryAt lastError createdAt sentAt";

async fn app_with(fake: &FakeTelegram, chats: &str, extra: &[(&str, &str)]) -> TestApp {
    let vars = fake.vars(chats);
    spawn_app_with(&fake_settings(&vars, extra)).await
}

/// Queues TEST alerts with these messages in one transaction, as a burst of
/// changes would.
async fn queue(app: &TestApp, messages: impl IntoIterator<Item = String>) {
    let txn = app.state.services.begin_write().await.unwrap();
    for message in messages {
        stockroom::service::alerts::enqueue(
            &txn,
            stockroom::entity::alert::AlertKind::Test,
            message,
            None,
        )
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();
}

/// Waits (bounded) until `n` alerts are SENT.
async fn wait_sent(app: &TestApp, n: i64, wait: Duration) {
    let deadline = Instant::now() + wait;
    while app
        .count("SELECT COUNT(*) FROM alerts WHERE status = 'SENT'")
        .await
        < n
    {
        assert!(Instant::now() < deadline, "fewer than {n} alerts were sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Settings for an app that sends to `fake`, plus `extra`.
fn fake_settings<'a>(
    vars: &'a [(String, String)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra);
    all
}

async fn alerts(app: &TestApp, token: &str, filter: &str) -> Vec<Value> {
    let q = format!("{{ alerts(first: 100{filter}) {{ totalCount nodes {{ {ALERT_FIELDS} }} }} }}");
    let r = app.gql(Some(token), &q, json!({})).await;
    r.data()["alerts"]["nodes"].as_array().unwrap().clone()
}

async fn send_test(app: &TestApp, token: &str, message: &str) -> Value {
    let r = app
        .gql(
            Some(token),
            &format!("mutation($m: String) {{ sendTestAlert(message: $m) {{ {ALERT_FIELDS} }} }}"),
            json!({ "m": message }),
        )
        .await;
    r.data()["sendTestAlert"].clone()
}

/// Waits (bounded) until the alert reaches `status`, and returns it.
async fn wait_status(app: &TestApp, token: &str, id: &str, status: &str, wait: Duration) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let all = alerts(app, token, "").await;
        let a = all.iter().find(|a| a["id"] == id).cloned().unwrap();
        if a["status"] == status || Instant::now() >= deadline {
            assert_eq!(a["status"], status, "{a}");
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn movement(app: &TestApp, token: &str, product: &str, kind: &str, quantity: i64) -> Value {
    app.record_movement(
        token,
        json!({ "productId": product, "kind": kind, "quantity": quantity }),
    )
    .await
    .body
}

#[tokio::test]
async fn a_low_stock_crossing_sends_one_escaped_message_per_chat() {
    let fake = FakeTelegram::start().await;
    let app = app_with(&fake, "111,-100222", &[]).await;
    let admin = app.admin_token().await;
    let r = app
        .gql(
            Some(&admin),
            "mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }",
            json!({ "i": { "sku": "W-1", "name": "<b>&\"Widget\"</b>", "lowStockThreshold": 5, "initialStock": 10 } }),
        )
        .await;
    let product = r.data()["createProduct"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    movement(&app, &admin, &product, "OUTBOUND", 6).await; // 4: crosses
    let got = fake.wait_delivered(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2, "one message per chat");
    let mut chats: Vec<_> = got.iter().map(|m| m.chat_id.clone()).collect();
    chats.sort();
    assert_eq!(chats, ["-100222", "111"]);
    for m in &got {
        assert_eq!(m.token, TOKEN);
        assert_eq!(m.parse_mode.as_deref(), Some("HTML"));
        assert!(m.text.contains("Low stock"), "{}", m.text);
        assert!(
            m.text
                .contains("&lt;b&gt;&amp;&quot;Widget&quot;&lt;/b&gt;"),
            "{}",
            m.text
        );
        assert!(
            !m.text.contains("<b>&\"Widget\""),
            "user text unescaped: {}",
            m.text
        );
        assert!(m.text.contains("10 → 4 (threshold 5)"), "{}", m.text);
        assert!(m.text.contains(ADMIN_EMAIL), "{}", m.text);
    }

    // Further movements below the threshold raise nothing.
    movement(&app, &admin, &product, "OUTBOUND", 1).await;
    movement(&app, &admin, &product, "OUTBOUND", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.received().len(), 2);
    let low = alerts(&app, &admin, ", kind: LOW_STOCK").await;
    assert_eq!(low.len(), 2);
    assert!(
        low.iter()
            .all(|a| a["status"] == "SENT" && a["attempts"] == 1)
    );

    // Down to zero: OUT_OF_STOCK.
    movement(&app, &admin, &product, "OUTBOUND", 2).await;
    let got = fake.wait_delivered(4, Duration::from_secs(10)).await;
    assert!(got[2..].iter().all(|m| m.text.contains("Out of stock")));
}

#[tokio::test]
async fn refused_and_rolled_back_movements_create_no_alert() {
    let fake = FakeTelegram::start().await;
    let app = app_with(&fake, "111", &[]).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "R-1", 3).await;
    let r = movement(&app, &admin, &product, "OUTBOUND", 4).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "INSUFFICIENT_STOCK");
    if is_postgres() {
        app.exec("CREATE FUNCTION fail_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit store down'; END $$ LANGUAGE plpgsql").await;
        app.exec("CREATE TRIGGER fail_audit BEFORE INSERT ON audit_logs FOR EACH ROW EXECUTE FUNCTION fail_audit()").await;
    } else {
        app.exec("CREATE TRIGGER fail_audit BEFORE INSERT ON audit_logs BEGIN SELECT RAISE(ABORT, 'audit store down'); END").await;
    }
    // Would take the stock to zero (OUT_OF_STOCK), but the transaction fails.
    let r = movement(&app, &admin, &product, "OUTBOUND", 3).await;
    assert!(r.get("errors").is_some());
    assert_eq!(app.count("SELECT COUNT(*) FROM alerts").await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.received().is_empty());
}

#[tokio::test]
async fn a_429_is_obeyed_and_the_alert_is_sent_on_the_next_attempt() {
    let fake = FakeTelegram::start().await;
    fake.script([Reply::RateLimited(2)]);
    let app = app_with(&fake, "111", &[]).await;
    let admin = app.admin_token().await;
    let alert = send_test(&app, &admin, "hello").await;
    let sent = wait_status(
        &app,
        &admin,
        alert["id"].as_str().unwrap(),
        "SENT",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(sent["attempts"], 2);
    let tries = fake.received();
    assert_eq!(tries.len(), 2);
    let gap = tries[1].at - tries[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before retry_after"
    );
}

#[tokio::test]
async fn server_errors_back_off_with_growing_gaps_then_succeed() {
    let fake = FakeTelegram::start().await;
    fake.script([
        Reply::ServerError,
        Reply::BadGatewayHtml,
        Reply::ServerError,
    ]);
    let app = app_with(&fake, "111", &[("ALERT_RETRY_BASE_SECONDS", "1")]).await;
    let admin = app.admin_token().await;
    let alert = send_test(&app, &admin, "backoff").await;
    let id = alert["id"].as_str().unwrap();

    // While retrying, the queue state is visible.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = alerts(&app, &admin, "")
            .await
            .into_iter()
            .find(|a| a["id"] == id)
            .unwrap();
        if a["status"] == "PENDING" && a["attempts"].as_i64() >= Some(1) {
            assert!(a["retryAt"].is_string(), "{a}");
            assert!(a["lastError"].as_str().unwrap().contains("500"), "{a}");
            break;
        }
        assert!(Instant::now() < deadline, "never seen retrying: {a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sent = wait_status(&app, &admin, id, "SENT", Duration::from_secs(20)).await;
    assert_eq!(sent["attempts"], 4);
    let at: Vec<Instant> = fake.received().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 4);
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] < gaps[1] && gaps[1] < gaps[2],
        "gaps do not grow: {gaps:?}"
    );
}

#[tokio::test]
async fn exhausted_attempts_are_dead_and_retry_alert_brings_them_back() {
    let fake = FakeTelegram::start().await;
    fake.set_default(Some(Reply::ServerError));
    let app = app_with(
        &fake,
        "111",
        &[
            ("ALERT_RETRY_BASE_SECONDS", "1"),
            ("ALERT_MAX_ATTEMPTS", "2"),
        ],
    )
    .await;
    let admin = app.admin_token().await;
    let alert = send_test(&app, &admin, "doomed").await;
    let id = alert["id"].as_str().unwrap();
    let dead = wait_status(&app, &admin, id, "DEAD", Duration::from_secs(15)).await;
    assert_eq!(dead["attempts"], 2);
    assert!(
        dead["lastError"].as_str().unwrap().contains("500"),
        "{dead}"
    );

    fake.set_default(None);
    let r = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { retryAlert(id: $id) { status attempts } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(r.data()["retryAlert"]["status"], "PENDING");
    let sent = wait_status(&app, &admin, id, "SENT", Duration::from_secs(10)).await;
    assert_eq!(sent["attempts"], 1);
    let audit = app
        .gql(
            Some(&admin),
            "{ auditLogs(filter: {action: ALERT_RETRY}) { nodes { entityId actor { email } } } }",
            json!({}),
        )
        .await;
    assert_eq!(audit.data()["auditLogs"]["nodes"][0]["entityId"], id);

    // Only a DEAD alert can be retried; an unknown id is NOT_FOUND.
    let again = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { retryAlert(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    again.expect_code("CONFLICT");
    let missing = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { retryAlert(id: $id) { status } }",
            json!({ "id": uuid::Uuid::now_v7().to_string() }),
        )
        .await;
    missing.expect_code("NOT_FOUND");
}

#[tokio::test]
async fn a_403_is_dead_after_one_attempt() {
    let fake = FakeTelegram::start().await;
    fake.script([Reply::Forbidden]);
    let app = app_with(&fake, "111", &[]).await;
    let admin = app.admin_token().await;
    let alert = send_test(&app, &admin, "blocked").await;
    let dead = wait_status(
        &app,
        &admin,
        alert["id"].as_str().unwrap(),
        "DEAD",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(dead["attempts"], 1);
    assert!(
        dead["lastError"].as_str().unwrap().contains("403"),
        "{dead}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn an_alert_claimed_by_a_crashed_instance_is_delivered_after_its_lease() {
    let fake = FakeTelegram::start().await;
    fake.script([Reply::Hang]);
    // The send hangs past its timeout; the app dies before that.
    let settings = [
        ("ALERT_LEASE_SECONDS", "3"),
        ("ALERT_SEND_TIMEOUT_SECONDS", "1"),
    ];
    let vars = fake.vars("111");
    let overrides = fake_settings(&vars, &settings);
    let mut first = crate::helpers::spawn_crashable(&overrides).await;
    let client = reqwest::Client::new();
    let api = format!("{}/graphql", first.address);
    let login: Value = client
        .post(&api)
        .json(&json!({ "query": "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }",
                       "variables": { "e": ADMIN_EMAIL, "p": crate::helpers::ADMIN_PASSWORD } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["data"]["login"]["accessToken"].as_str().unwrap();
    let sent: Value = client
        .post(&api)
        .bearer_auth(token)
        .json(
            &json!({ "query": "mutation { sendTestAlert(message: \"survives a crash\") { id } }" }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sent["data"]["sendTestAlert"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The send is under way (SENDING, leased) when the process dies.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.received().is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.crash();

    let second = first.spawn_another(&overrides).await;
    let admin = second.admin_token().await;
    let sent = wait_status(&second, &admin, &id, "SENT", Duration::from_secs(20)).await;
    assert_eq!(sent["attempts"], 2);
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].text.contains("survives a crash"));
}

#[tokio::test]
async fn a_graceful_shutdown_mid_round_puts_unsent_alerts_back() {
    let fake = FakeTelegram::start().await;
    // One chat, one message a second, no digests: a round of 5 takes 4 s.
    let app = app_with(&fake, "111", &[("ALERT_DIGEST_AFTER", "100")]).await;
    queue(&app, (0..5).map(|i| format!("shutdown {i} end"))).await;
    fake.wait_delivered(1, Duration::from_secs(10)).await;
    let database_url = app.database_url.clone();
    let admin = app.admin_token().await;
    let before = alerts(&app, &admin, "").await;
    assert!(
        before.iter().any(|a| a["status"] == "SENDING"),
        "{before:?}"
    );
    let (stopped, _kept) = app.shutdown_keeping_database().await;
    stopped.expect("clean shutdown");
    // Nothing is left leased: what was sent is SENT, the rest PENDING.
    let db = sea_orm::Database::connect(&database_url).await.unwrap();
    use sea_orm::ConnectionTrait;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) FROM alerts WHERE status = 'SENDING'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 0);
    let sent = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) FROM alerts WHERE status = 'SENT'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(sent as usize, fake.delivered().len());
    assert!(sent < 5, "the shutdown did not wait for the whole round");
    db.close().await.ok();
}

#[tokio::test]
async fn a_backlog_for_one_chat_goes_out_as_few_digests() {
    let fake = FakeTelegram::start().await;
    let app = app_with(&fake, "111", &[]).await;
    // A hundred alerts committed at once, as a burst of changes would.
    queue(
        &app,
        (0..100).map(|i| format!("backlog alert number {i:03} {}", "x".repeat(100))),
    )
    .await;

    wait_sent(&app, 100, Duration::from_secs(20)).await;
    let messages = fake.delivered();
    assert!(
        messages.len() < 10,
        "{} messages for 100 alerts",
        messages.len()
    );
    for m in &messages {
        assert!(m.text.chars().count() <= 4096);
    }
    for i in 0..100 {
        let needle = format!("backlog alert number {i:03} ");
        let n = messages.iter().filter(|m| m.text.contains(&needle)).count();
        assert_eq!(n, 1, "alert {i} delivered {n} times");
    }
    // Each alert records the id of the message that carried it.
    assert_eq!(
        app.count("SELECT COUNT(DISTINCT telegram_message_id) FROM alerts")
            .await,
        messages.len() as i64
    );
}

#[tokio::test]
async fn six_failed_logins_for_one_account_raise_one_alert() {
    let fake = FakeTelegram::start().await;
    let app = app_with(&fake, "111", &[("ALERT_LOGIN_FAILURES", "5")]).await;
    for _ in 0..6 {
        app.login(ADMIN_EMAIL, "wrong-password")
            .await
            .expect_code("UNAUTHENTICATED");
    }
    let got = fake.wait_delivered(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.received().len(), 1, "{:?}", fake.received());
    assert!(
        got[0].text.contains("Repeated failed logins"),
        "{}",
        got[0].text
    );
    assert!(got[0].text.contains(ADMIN_EMAIL));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM alerts WHERE kind = 'LOGIN_FAILURES'")
            .await,
        1
    );
    // Failures spread over unknown emails from one address raise the address's alert.
    for i in 0..5 {
        app.login(&format!("nobody{i}@test.local"), "x-password")
            .await;
    }
    fake.wait_delivered(2, Duration::from_secs(10)).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM alerts WHERE kind = 'LOGIN_FAILURES'")
            .await,
        2
    );
}

#[tokio::test]
async fn settings_show_the_token_source_and_hint_but_never_the_token() {
    let fake = FakeTelegram::start().await;
    let app = app_with(&fake, "111", &[]).await;
    let admin = app.admin_token().await;
    let read = "{ notificationSettings { telegramEnabled chatIds botTokenConfigured botTokenSource botTokenHint enabledKinds updatedAt configured } }";
    let s = app.gql(Some(&admin), read, json!({})).await;
    let s = &s.data()["notificationSettings"];
    assert_eq!(s["botTokenSource"], "environment");
    assert_eq!(s["botTokenHint"], &TOKEN[TOKEN.len() - 4..]);
    assert_eq!(s["chatIds"], json!(["111"]));
    assert_eq!(
        s["enabledKinds"],
        json!([
            "LOW_STOCK",
            "OUT_OF_STOCK",
            "UPLOAD_FINISHED",
            "LOGIN_FAILURES",
            "TEST"
        ])
    );

    let stored = "987654:STORED-token-from-the-api-abcdefWXYZ";
    let update = "mutation($i: UpdateNotificationSettingsInput!) { updateNotificationSettings(input: $i) { botTokenSource botTokenHint chatIds enabledKinds } }";
    let r = app
        .gql(
            Some(&admin),
            update,
            json!({ "i": { "botToken": stored, "chatIds": ["222", "@stockroom_ops"], "enabledKinds": ["TEST", "LOW_STOCK"] } }),
        )
        .await;
    let u = &r.data()["updateNotificationSettings"];
    assert_eq!(u["botTokenSource"], "database");
    assert_eq!(u["botTokenHint"], "WXYZ");
    assert_eq!(u["chatIds"], json!(["222", "@stockroom_ops"]));

    // The stored token is the one used.
    send_test(&app, &admin, "with the stored token").await;
    let got = fake.wait_delivered(2, Duration::from_secs(10)).await;
    assert!(
        got.iter().all(|m| m.token == stored),
        "{:?}",
        got.iter()
            .map(|m| (m.token.clone(), m.chat_id.clone(), m.text.clone()))
            .collect::<Vec<_>>()
    );

    // Clearing it falls back to the environment's.
    let r = app
        .gql(Some(&admin), update, json!({ "i": { "botToken": "" } }))
        .await;
    assert_eq!(
        r.data()["updateNotificationSettings"]["botTokenSource"],
        "environment"
    );

    // Bad input names its field and changes nothing.
    for (input, field) in [
        (json!({ "chatIds": ["not a chat"] }), "chatIds"),
        (json!({ "botToken": "nope" }), "botToken"),
    ] {
        let r = app.gql(Some(&admin), update, json!({ "i": input })).await;
        assert_eq!(
            r.expect_code("BAD_USER_INPUT")["extensions"]["field"],
            field
        );
    }
    let s = app.gql(Some(&admin), read, json!({})).await;
    assert_eq!(
        s.data()["notificationSettings"]["chatIds"],
        json!(["222", "@stockroom_ops"])
    );

    // The token is in no answer and no audit row, only "replaced"/"cleared".
    let everything = [
        app.gql(Some(&admin), read, json!({})).await.body.to_string(),
        app.gql(
            Some(&admin),
            "{ auditLogs(first: 100, filter: {action: SETTINGS_UPDATE}) { nodes { summary changes } } }",
            json!({}),
        )
        .await
        .body
        .to_string(),
    ];
    for text in &everything {
        assert!(
            !text.contains(stored) && !text.contains(TOKEN),
            "token leaked: {text}"
        );
    }
    assert!(everything[1].contains("replaced") && everything[1].contains("cleared"));
    let raw = app.count("SELECT COUNT(*) FROM audit_logs WHERE CAST(changes AS TEXT) LIKE '%STORED-token%' OR summary LIKE '%STORED-token%'").await;
    assert_eq!(raw, 0);

    // Only an admin may read or change them.
    let (_, manager) = app.user_with_role(&admin, "MANAGER").await;
    app.gql(Some(&manager), read, json!({}))
        .await
        .expect_code("FORBIDDEN");
}

#[tokio::test]
async fn test_alerts_need_telegram_an_admin_and_respect_their_rate_limit() {
    // Not configured: a clear BAD_USER_INPUT, and nothing queued.
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let r = app
        .gql(Some(&admin), "mutation { sendTestAlert { id } }", json!({}))
        .await;
    let e = r.expect_code("BAD_USER_INPUT");
    assert!(
        e["message"].as_str().unwrap().contains("not configured"),
        "{e}"
    );
    let rest = app
        .client
        .post(format!("{}/api/v1/alerts/test", app.address))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 400);
    assert_eq!(app.count("SELECT COUNT(*) FROM alerts").await, 0);

    let fake = FakeTelegram::start().await;
    // An admin's sends spend the address's budget of 3; refused callers
    // spend none of it, so they cannot use it up before the admin.
    let app = app_with(&fake, "111,222", &[("THROTTLE_ALERTS_LIMIT", "3")]).await;
    let admin = app.admin_token().await;
    let post = |token: Option<String>| {
        let mut req = app
            .client
            .post(format!("{}/api/v1/alerts/test", app.address))
            .json(&json!({ "message": "from curl" }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let ok = post(Some(admin.clone())).await.unwrap();
    assert_eq!(ok.status(), 202);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["alerts"].as_array().unwrap().len(), 2, "one per chat");
    assert_eq!(
        app.gql(
            Some(&admin),
            "{ auditLogs(filter: {action: ALERT_TEST}) { totalCount } }",
            json!({})
        )
        .await
        .data()["auditLogs"]["totalCount"],
        1
    );
    let (_, manager) = app.user_with_role(&admin, "MANAGER").await;
    for _ in 0..5 {
        assert_eq!(post(None).await.unwrap().status(), 401);
        assert_eq!(
            post(Some("not.a.token".into())).await.unwrap().status(),
            401
        );
        assert_eq!(post(Some(manager.clone())).await.unwrap().status(), 403);
    }
    for _ in 0..2 {
        assert_eq!(post(Some(admin.clone())).await.unwrap().status(), 202);
    }
    let limited = post(Some(admin.clone())).await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    app.gql(
        Some(&manager),
        "mutation { sendTestAlert { id } }",
        json!({}),
    )
    .await
    .expect_code("FORBIDDEN");
}

#[tokio::test]
async fn health_shows_the_queue_and_degrades_the_notifier_past_the_thresholds() {
    let fake = FakeTelegram::start().await;
    fake.set_default(Some(Reply::ServerError));
    let app = app_with(
        &fake,
        "111",
        &[
            ("ALERT_RETRY_BASE_SECONDS", "1"),
            ("ALERT_STALE_ATTEMPTS", "2"),
        ],
    )
    .await;
    let admin = app.admin_token().await;
    let body: Value = app.get("/api/v1/health").await.json().await.unwrap();
    assert_eq!(body["services"]["notifier"]["status"], "up", "{body}");
    assert_eq!(body["services"]["notifier"]["telegramConfigured"], true);

    send_test(&app, &admin, "failing").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = app.get("/api/v1/health").await;
        assert_eq!(
            resp.status(),
            200,
            "the notifier alone never makes health 503"
        );
        let body: Value = resp.json().await.unwrap();
        let n = &body["services"]["notifier"];
        if n["status"] == "degraded" {
            assert!(n["maxAttemptsUnsent"].as_i64().unwrap() >= 2, "{n}");
            assert!(n["reason"].as_str().unwrap().contains("attempts"), "{n}");
            assert_eq!(body["status"], "ok");
            break;
        }
        assert!(Instant::now() < deadline, "never degraded: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let g = app
        .gql(
            None,
            "{ health { notifier { status retrying sending pending dead telegramConfigured } } }",
            json!({}),
        )
        .await;
    let n = &g.data()["health"]["notifier"];
    assert_eq!(n["status"], "DEGRADED");
    assert_eq!(n["telegramConfigured"], true);
    // The one alert is being retried: waiting on retryAt, or in a send.
    let in_flight = n["retrying"].as_i64().unwrap() + n["sending"].as_i64().unwrap();
    assert_eq!(in_flight, 1, "{n}");
    assert_eq!(
        (n["pending"].as_i64(), n["dead"].as_i64()),
        (Some(0), Some(0)),
        "{n}"
    );
}

#[tokio::test]
async fn an_alert_unsent_past_the_age_threshold_degrades_the_notifier() {
    let fake = FakeTelegram::start().await;
    fake.set_default(Some(Reply::ServerError));
    let app = app_with(
        &fake,
        "111",
        &[
            ("ALERT_STALE_MINUTES", "30"),
            ("ALERT_RETRY_BASE_SECONDS", "60"),
        ],
    )
    .await;
    let admin = app.admin_token().await;
    let alert = send_test(&app, &admin, "old").await;
    let body: Value = app.get("/api/v1/health").await.json().await.unwrap();
    assert_eq!(body["services"]["notifier"]["status"], "up", "{body}");
    // As if it had been queued 31 minutes ago.
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    stockroom::entity::alert::Entity::update_many()
        .col_expr(
            stockroom::entity::alert::Column::CreatedAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(31)),
        )
        .filter(
            stockroom::entity::alert::Column::Id
                .eq(uuid::Uuid::parse_str(alert["id"].as_str().unwrap()).unwrap()),
        )
        .exec(app.state.services.conn())
        .await
        .unwrap();
    let resp = app.get("/api/v1/health").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let n = &body["services"]["notifier"];
    assert_eq!(n["status"], "degraded", "{body}");
    assert!(
        n["reason"].as_str().unwrap().contains("unsent for 31 min"),
        "{n}"
    );
    assert!(n["oldestUnsentSeconds"].as_i64().unwrap() >= 31 * 60);
}

#[tokio::test]
async fn alert_updated_follows_an_alert_from_queued_to_sent() {
    let fake = FakeTelegram::start().await;
    let app = app_with(&fake, "111", &[]).await;
    let admin = app.admin_token().await;
    let mut ws = app.ws(&admin).await;
    ws.subscribe(
        "a",
        "subscription { alertUpdated { id kind status attempts } }",
        json!({}),
    )
    .await;
    app.wait_for_subscriptions(1).await;
    let alert = send_test(&app, &admin, "watched").await;
    let mut statuses = Vec::new();
    while statuses.last().map(String::as_str) != Some("SENT") {
        let e = ws.event("a").await;
        let a = &e["data"]["alertUpdated"];
        assert_eq!(a["id"], alert["id"]);
        statuses.push(a["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses, ["PENDING", "SENDING", "SENT"]);
}

/// Two instances on one PostgreSQL database: 300 alerts, each delivered once.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn two_instances_deliver_three_hundred_alerts_exactly_once() {
    let fake = FakeTelegram::start().await;
    let vars = fake.vars("111,222,333");
    let overrides = fake_settings(&vars, &[("ALERT_CHAT_MESSAGES_PER_SECOND", "50")]);
    let (a, b) = spawn_pair_with(&overrides).await;
    // Committed in small batches through both instances, so both claim work.
    for (i, app) in [&a, &b].iter().enumerate() {
        for batch in 0..5 {
            queue(
                app,
                (0..10).map(|n| format!("unique alert {i}-{batch}-{n} end")),
            )
            .await;
        }
    }
    wait_sent(&a, 300, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = fake.delivered();
    for i in 0..2 {
        for batch in 0..5 {
            for n in 0..10 {
                let needle = format!("unique alert {i}-{batch}-{n} end");
                for chat in ["111", "222", "333"] {
                    let count = messages
                        .iter()
                        .filter(|m| m.chat_id == chat && m.text.contains(&needle))
                        .count();
                    assert_eq!(count, 1, "{needle} to {chat} delivered {count} times");
                }
            }
        }
    }
}

struct PanickingSender;

#[async_trait::async_trait]
impl stockroom::notifier::telegram::AlertSender for PanickingSender {
    async fn send(
        &self,
        _token: &str,
        _chat_id: &str,
        _text: &str,
    ) -> Result<i64, stockroom::notifier::telegram::SendError> {
        panic!("a bug in the sender");
    }

    async fn bot_name(
        &self,
        _token: &str,
    ) -> Result<String, stockroom::notifier::telegram::SendError> {
        panic!("a bug in the sender");
    }
}

#[tokio::test]
async fn a_panic_while_sending_fails_that_alert_and_the_notifier_goes_on() {
    let fake = FakeTelegram::start().await;
    let app = app_with(&fake, "111", &[]).await;
    // Stop the app's own notifier; drive one with a sender that panics.
    app.state.shutdown.cancel();
    let config = stockroom::config::Config::from_vars(
        [("ALERT_RETRY_BASE_SECONDS", "60")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .unwrap();
    let notifier = stockroom::notifier::Notifier::with_sender(
        stockroom::notifier::Policy::from_config(&config),
        app.state.services.clone(),
        std::sync::Arc::new(PanickingSender),
        tokio_util::sync::CancellationToken::new(),
    );
    queue(&app, (0..2).map(|i| format!("panics {i}"))).await;
    assert_eq!(
        notifier.run_once().await.unwrap(),
        2,
        "both claimed, the round survives"
    );
    let admin = app.admin_token().await;
    for a in alerts(&app, &admin, "").await {
        assert_eq!(a["status"], "PENDING", "{a}");
        assert_eq!(a["attempts"], 1);
        assert!(
            a["lastError"]
                .as_str()
                .unwrap()
                .contains("failed while sending"),
            "{a}"
        );
    }
}

#[tokio::test]
async fn messages_to_one_chat_are_paced() {
    let fake = FakeTelegram::start().await;
    let app = app_with(&fake, "111", &[("ALERT_DIGEST_AFTER", "10")]).await;
    queue(&app, (0..3).map(|i| format!("paced {i}"))).await;
    let got = fake.wait_delivered(3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "three messages, not a digest");
    for w in got.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(900),
            "one chat got two messages {gap:?} apart"
        );
    }
}

#[tokio::test]
async fn a_round_longer_than_its_lease_puts_the_rest_back_instead_of_sending_twice() {
    let fake = FakeTelegram::start().await;
    // One chat, one message a second, a 3 s lease: a round cannot send all 5,
    // and a second instance takes over every lease that expires.
    let settings = [
        ("ALERT_LEASE_SECONDS", "3"),
        ("ALERT_SEND_TIMEOUT_SECONDS", "1"),
        ("ALERT_DIGEST_AFTER", "100"),
        ("ALERT_POLL_SECONDS", "1"),
    ];
    let app = app_with(&fake, "111", &settings).await;
    let vars = fake.vars("111");
    let overrides = fake_settings(&vars, &settings);
    let _other = app.spawn_another(&overrides).await;
    queue(&app, (0..5).map(|i| format!("lease {i} end"))).await;
    let got = fake.wait_delivered(5, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.received().len(), 5, "an alert went out twice");
    for i in 0..5 {
        let needle = format!("lease {i} end");
        assert_eq!(
            got.iter().filter(|m| m.text == needle).count(),
            1,
            "{needle}"
        );
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM alerts WHERE status = 'SENT'")
            .await,
        5
    );
}

/// The real binary, with DEBUG logs, Telegram failing (so delivery errors are
/// logged) and a token stored through the API: neither token appears in its
/// output.
#[tokio::test]
async fn the_bot_tokens_never_reach_the_logs() {
    let fake = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let db = format!("sqlite://{}/logs.db?mode=rwc", dir.path().display());
    let mut server = crate::helpers::stockroom_bin()
        .arg("serve")
        .env("RUST_LOG", "debug")
        .env("LOG_FORMAT", "json")
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DATABASE_URL", &db)
        .env("JWT_SECRET", crate::helpers::JWT_SECRET)
        .env("ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ADMIN_PASSWORD", crate::helpers::ADMIN_PASSWORD)
        .env("TELEGRAM_API_URL", &fake.url)
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_CHAT_IDS", "111")
        .env("ALERT_RETRY_BASE_SECONDS", "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // The port comes from the "listening" line.
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("listening")) {
            let after = &line[line.find("\"port\":").unwrap() + 7..];
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            break digits.parse::<u16>().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the server did not start:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let api = format!("http://127.0.0.1:{port}/graphql");
    let client = reqwest::Client::new();
    let gql = |token: Option<String>, query: &'static str, variables: Value| {
        let mut req = client
            .post(&api)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let login = gql(
        None,
        "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }",
        json!({ "e": ADMIN_EMAIL, "p": crate::helpers::ADMIN_PASSWORD }),
    )
    .await;
    let admin = login["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let stored = "987654:STORED-token-that-must-not-be-logged";
    let saved = gql(
        Some(admin.clone()),
        "mutation($t: String!) { updateNotificationSettings(input: {botToken: $t}) { botTokenSource } }",
        json!({ "t": stored }),
    )
    .await;
    assert_eq!(
        saved["data"]["updateNotificationSettings"]["botTokenSource"], "database",
        "{saved}"
    );
    // Every send now fails, and is logged.
    fake.set_default(Some(Reply::ServerError));
    let sent = gql(
        Some(admin.clone()),
        "mutation { sendTestAlert { id } }",
        json!({}),
    )
    .await;
    assert!(sent["data"]["sendTestAlert"]["id"].is_string(), "{sent}");
    // Two failed attempts, each logged.
    let deadline = Instant::now() + Duration::from_secs(15);
    while fake.received().len() < 2 {
        assert!(Instant::now() < deadline, "no retries seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("alert not delivered"),
        "delivery errors are logged:\n{text}"
    );
    assert!(fake.received().iter().all(|r| r.token == stored));
    for secret in [TOKEN, stored, "STORED-token", "TEST-token"] {
        assert!(!text.contains(secret), "{secret} is in the logs");
    }
}

#[tokio::test]
async fn a_429_pauses_every_instance_until_retry_after() {
    let fake = FakeTelegram::start().await;
    fake.script([Reply::RateLimited(3)]);
    let vars = fake.vars("111");
    let settings = fake_settings(&vars, &[("ALERT_POLL_SECONDS", "1")]);
    let a = spawn_app_with(&settings).await;
    let b = a.spawn_another(&settings).await;
    queue(&a, ["first".to_string()]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.received().is_empty() {
        assert!(Instant::now() < deadline, "nothing sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Queued through the other instance while the bot is paused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    queue(&b, ["second".to_string()]).await;
    wait_sent(&a, 2, Duration::from_secs(15)).await;
    let received = fake.received();
    let limited_at = received[0].at;
    for r in &received[1..] {
        assert!(
            r.at - limited_at >= Duration::from_secs(3),
            "{:?} sent {:?} after the 429",
            r.text,
            r.at - limited_at
        );
    }
}

#[tokio::test]
async fn alerts_and_refresh_tokens_past_their_retention_are_pruned_in_batches() {
    use stockroom::service::housekeeping::{BATCH, Pruned, prune};
    let fake = FakeTelegram::start().await;
    let app = app_with(&fake, "111", &[]).await;
    app.admin_token().await;
    queue(&app, (0..3).map(|i| format!("sent {i}"))).await;
    wait_sent(&app, 3, Duration::from_secs(10)).await;
    // One alert still being retried is not pruned, however old.
    fake.set_default(Some(Reply::ServerError));
    queue(&app, ["still trying".to_string()]).await;
    // More refresh tokens than one batch holds: copies of the admin's.
    let copies = 2 * BATCH + 7;
    app.exec(&if is_postgres() {
        format!(
            "INSERT INTO refresh_tokens (id, user_id, token_hash, created_at, expires_at) \
             SELECT gen_random_uuid(), user_id, md5(random()::text || g), created_at, expires_at \
             FROM (SELECT * FROM refresh_tokens LIMIT 1) t, generate_series(1, {copies}) g"
        )
    } else {
        format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {copies}) \
             INSERT INTO refresh_tokens (id, user_id, token_hash, created_at, expires_at) \
             SELECT randomblob(16), user_id, hex(randomblob(16)), created_at, expires_at \
             FROM (SELECT * FROM refresh_tokens LIMIT 1), g"
        )
    })
    .await;
    let tokens = app.count("SELECT COUNT(*) FROM refresh_tokens").await;
    assert_eq!(tokens, copies as i64 + 1);

    let (db, config) = (&app.state.services, &app.state.config);
    let now = chrono::Utc::now();
    assert_eq!(prune(db, config, now).await.unwrap(), Pruned::default());
    // Past both retentions (and the tokens' own lifetime).
    let later = now
        + chrono::Duration::from_std(config.jwt_refresh_ttl + config.refresh_token_retention)
            .unwrap()
        + chrono::Duration::days(31);
    let pruned = prune(db, config, later).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            alerts: 3,
            refresh_tokens: tokens as u64
        }
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM alerts WHERE status = 'SENT'")
            .await,
        0
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM alerts").await, 1);
    // The audit log keeps its rows.
    assert!(app.count("SELECT COUNT(*) FROM audit_logs").await > 0);
}

#[tokio::test]
async fn a_new_bot_token_is_checked_with_get_me_and_its_bot_named() {
    let fake = FakeTelegram::start().await;
    let app = app_with(&fake, "111", &[]).await;
    let admin = app.admin_token().await;
    let update = "mutation($i: UpdateNotificationSettingsInput!) { updateNotificationSettings(input: $i) { botTokenSource botTokenHint botName } }";
    let read = "{ notificationSettings { botTokenSource botName } }";
    // A token from the environment is not checked: no name.
    let s = app.gql(Some(&admin), read, json!({})).await;
    assert_eq!(s.data()["notificationSettings"]["botName"], Value::Null);

    // Telegram refuses the token: BAD_USER_INPUT, the token never echoed,
    // nothing saved or audited.
    let audits = "SELECT COUNT(*) FROM audit_logs WHERE action = 'SETTINGS_UPDATE'";
    let revoked = "987654:REVOKED-token-abcdefghijklmnopqrstu";
    let r = app
        .gql(
            Some(&admin),
            update,
            json!({ "i": { "botToken": revoked } }),
        )
        .await;
    let e = r.expect_code("BAD_USER_INPUT");
    assert_eq!(e["extensions"]["field"], "botToken");
    assert!(e["message"].as_str().unwrap().contains("401"), "{e}");
    assert!(!r.body.to_string().contains("REVOKED"), "{}", r.body);
    assert_eq!(app.count(audits).await, 0);
    let s = app.gql(Some(&admin), read, json!({})).await;
    assert_eq!(
        s.data()["notificationSettings"]["botTokenSource"],
        "environment"
    );

    // Telegram cannot be asked: refused too, nothing saved.
    fake.set_default(Some(Reply::ServerError));
    let good = "987654:GOOD-token-abcdefghijklmnopqrstuWXYZ";
    let r = app
        .gql(Some(&admin), update, json!({ "i": { "botToken": good } }))
        .await;
    r.expect_code("BAD_USER_INPUT");
    assert_eq!(app.count(audits).await, 0);
    fake.set_default(None);

    // A good token is saved with its bot's name, which the audit row shows.
    let r = app
        .gql(Some(&admin), update, json!({ "i": { "botToken": good } }))
        .await;
    let u = &r.data()["updateNotificationSettings"];
    assert_eq!(u["botTokenSource"], "database");
    assert_eq!(u["botName"], "stockroom_test_bot");
    assert_eq!(app.count(audits).await, 1);
    // Clearing it clears the name.
    let r = app
        .gql(Some(&admin), update, json!({ "i": { "botToken": "" } }))
        .await;
    assert_eq!(
        r.data()["updateNotificationSettings"]["botName"],
        Value::Null
    );
}
