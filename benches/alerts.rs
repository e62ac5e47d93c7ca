//! Alert delivery benchmark (release build): the real application against a
//! fake Bot API on loopback that answers at once.
//!
//! 1. Delay from a movement's commit to the fake receiving its alert, over 200
//!    movements (STOCK_MOVEMENT alerts to one chat, pacing raised to 50/s so
//!    that pacing does not dominate the figure).
//! 2. Drain rate with Telegram's pacing (1 message/s per chat, 30/s in all):
//!    3,000 alerts queued at once for 100 chats (digests), then 300 for 100
//!    chats (3 per chat: one message each).
//!
//! Run: `cargo bench --bench alerts` (SQLite in a temporary directory; set
//! `BENCH_DATABASE_URL` to a fresh PostgreSQL database to measure that).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use stockroom::config::Config;
use stockroom::entity::alert::AlertKind;
use stockroom::service::{Actor, products, settings, stock};
use stockroom::startup::Application;

type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

async fn send_message(State(seen): State<Seen>, Json(body): Json<Value>) -> Json<Value> {
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let mut seen = seen.lock().unwrap();
    seen.push((text, Instant::now()));
    let id = seen.len();
    Json(
        json!({ "ok": true, "result": { "message_id": id, "date": 0, "chat": { "id": 1, "type": "private" } } }),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn app(fake: &str, chats: &str, per_chat: &str, url: &str) -> Application {
    let vars: HashMap<String, String> = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_URL", url),
        ("JWT_SECRET", "bench-secret-bench-secret-bench-secret-1"),
        ("ADMIN_PASSWORD", "bench-password-1"),
        ("TELEGRAM_API_URL", fake),
        (
            "TELEGRAM_BOT_TOKEN",
            "123456:BENCH-token-for-the-fake-bot-api_0",
        ),
        ("TELEGRAM_CHAT_IDS", chats),
        ("ALERT_CHAT_MESSAGES_PER_SECOND", per_chat),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Application::build(Config::from_vars(vars).unwrap())
        .await
        .unwrap()
}

async fn wait_sent(db: &stockroom::db::Db, n: i64) {
    use sea_orm::ConnectionTrait;
    loop {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) FROM alerts WHERE status = 'SENT'",
            ))
            .await
            .unwrap()
            .unwrap();
        if row.try_get_by_index::<i64>(0).unwrap() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() {
    let seen: Seen = Arc::default();
    let fake = axum::Router::new()
        .route("/{bot}/sendMessage", post(send_message))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let url_for = |name: &str| {
        std::env::var("BENCH_DATABASE_URL")
            .unwrap_or_else(|_| format!("sqlite://{}/{name}.db?mode=rwc", dir.path().display()))
    };

    // 1. Delay from commit to delivery.
    let first = app(&fake_url, "111", "50", &url_for("delay")).await;
    let db = first.state().services.clone();
    let actor = Actor::system();
    settings::update(
        &db,
        first.state().notifier.telegram(),
        &actor,
        settings::SettingsPatch {
            enabled_kinds: Some(vec![AlertKind::StockMovement]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let state = first.state().clone();
    let server = tokio::spawn(first.run_until_stopped(std::future::pending()));
    let mut committed: HashMap<String, Instant> = HashMap::new();
    for i in 0..200 {
        let sku = format!("DELAY-{i:03}");
        let p = products::create(
            &db,
            &actor,
            products::NewProduct {
                sku: sku.clone(),
                name: "Bench".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        stockroom::service::group_commit::record(
            &db,
            &actor,
            stock::MovementInput {
                product_id: p.id,
                kind: stockroom::entity::stock_movement::MovementKind::Inbound,
                quantity: 1,
                note: None,
                reference: None,
                idempotency_key: None,
            },
        )
        .await
        .unwrap();
        committed.insert(sku, Instant::now());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    wait_sent(&db, 200).await;
    let mut delays: Vec<f64> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(text, at)| {
            let sku = committed.keys().find(|s| text.contains(s.as_str()))?;
            Some(at.duration_since(committed[sku]).as_secs_f64() * 1000.0)
        })
        .collect();
    delays.sort_by(|a, b| a.total_cmp(b));
    println!(
        "commit -> fake Bot API, {} alerts: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        percentile(&delays, 1.0)
    );
    state.shutdown.cancel();
    server.abort();

    // 2. Drain rates under Telegram's pacing.
    for (label, per_chat_alerts) in [("digests", 30), ("one message each", 3)] {
        seen.lock().unwrap().clear();
        let chats: Vec<String> = (0..100).map(|i| format!("{}", 1000 + i)).collect();
        let app = app(
            &fake_url,
            &chats.join(","),
            "1",
            &url_for(label.split(' ').next().unwrap()),
        )
        .await;
        let db = app.state().services.clone();
        let state = app.state().clone();
        let server = tokio::spawn(app.run_until_stopped(std::future::pending()));
        let started = Instant::now();
        let txn = db.begin_write().await.unwrap();
        for i in 0..per_chat_alerts {
            stockroom::service::alerts::enqueue(
                &txn,
                AlertKind::Test,
                format!("drain test alert {i}"),
                None,
            )
            .await
            .unwrap();
        }
        txn.commit().await.unwrap();
        let total = per_chat_alerts * 100;
        wait_sent(&db, total).await;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "drain, 100 chats x {per_chat_alerts} ({label}): {total} alerts in {secs:.2} s = {:.0} alerts/s, {} messages",
            total as f64 / secs,
            seen.lock().unwrap().len()
        );
        state.shutdown.cancel();
        server.abort();
    }
}
