//! Prometheus metrics at /metrics.

use serde_json::json;

use crate::helpers::{ADMIN_EMAIL, TestApp, spawn_app, spawn_app_with};

async fn scrape(app: &TestApp, base: &str) -> (u16, String, String) {
    let resp = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, resp.text().await.unwrap())
}

/// The value of the first sample whose line starts with `prefix`.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_cover_requests_operations_errors_security_queues_pool_and_process() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "MET-1", 5).await;
    // A subscription is counted when it starts.
    let mut ws = app.ws(&admin).await;
    ws.subscribe(
        "w",
        "subscription Watch { stockChanged { product { id } } }",
        json!({}),
    )
    .await;
    // Open (its position read) before the movement, so the movement is live.
    app.wait_for_subscriptions(1).await;
    app.record_movement(
        &admin,
        json!({ "productId": product, "kind": "INBOUND", "quantity": 1 }),
    )
    .await
    .data();
    let event = ws.next().await;
    assert_eq!(event["type"], "next", "{event}");
    app.gql(
        Some(&admin),
        "query CatalogPage { products(first: 5) { totalCount } }",
        json!({}),
    )
    .await
    .data();
    app.gql(
        Some(&admin),
        "mutation Oversell($p: ID!) { recordStockMovement(input: { productId: $p, kind: OUTBOUND, quantity: 999 }) { id } }",
        json!({ "p": "00000000-0000-0000-0000-000000000000" }),
    )
    .await;
    app.login(ADMIN_EMAIL, "not-the-password").await;
    assert_eq!(app.get("/api/v1/health").await.status(), 200);

    let (status, content_type, body) = scrape(&app, &app.address).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    for needle in [
        "stockroom_http_requests_total{route=\"/graphql\",method=\"POST\",status_class=\"2xx\"}",
        "stockroom_http_request_duration_seconds_bucket{route=\"/api/v1/health\",method=\"GET\",le=\"0.005\"}",
        "stockroom_graphql_operations_total{type=\"query\",operation=\"CatalogPage\"}",
        "stockroom_graphql_operation_duration_seconds_count{type=\"query\",operation=\"CatalogPage\"}",
        "stockroom_graphql_operations_total{type=\"subscription\",operation=\"Watch\"} 1",
        // The event above: its delivery, and the frames written for it.
        "stockroom_subscription_delivery_seconds_count",
        "stockroom_subscription_delivery_seconds_bucket{le=\"0.005\"}",
        "stockroom_websocket_frames_written_total",
        "stockroom_websocket_bytes_written_total",
        "stockroom_websocket_writes_total",
        "stockroom_graphql_errors_total{type=\"mutation\",operation=\"Oversell\",code=\"NOT_FOUND\"}",
        "stockroom_login_failures_total{reason=\"wrong_password\"}",
        "stockroom_health_check_duration_seconds_count",
        "stockroom_health_status 1",
        "stockroom_alerts{status=\"PENDING\"}",
        "stockroom_alert_oldest_unsent_age_seconds",
        "stockroom_upload_jobs{status=\"QUEUED\"}",
        "stockroom_db_pool_connections{state=\"in_use\"}",
        "stockroom_db_pool_max_connections 10",
        "stockroom_db_statements_total",
        "stockroom_graphql_document_cache_total{result=\"hit\"}",
        "stockroom_build_info{version=\"",
        "stockroom_uptime_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(body.contains(needle), "missing {needle} in:\n{body}");
    }
    assert!(sample(&body, "stockroom_db_statements_total").unwrap() > 0.0);
    assert!(sample(&body, "stockroom_subscription_delivery_seconds_count").unwrap() >= 1.0);
    assert!(sample(&body, "stockroom_websocket_bytes_written_total").unwrap() > 0.0);
    assert!(
        sample(&body, "stockroom_websocket_frames_written_total").unwrap()
            >= sample(&body, "stockroom_websocket_writes_total").unwrap()
    );
    assert!(sample(&body, "process_resident_memory_bytes").unwrap() > 1e6);
    // No user data, token or SQL in any label or value.
    assert!(!body.contains(ADMIN_EMAIL));
    assert!(!body.contains(&admin));
    assert!(!body.contains("MET-1"));
    assert!(!body.to_uppercase().contains("SELECT "));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_operation_names_are_folded_and_metrics_can_be_off_or_on_their_own_listener() {
    let app = spawn_app().await;
    // A client inventing names cannot grow the series without bound.
    for i in 0..250 {
        app.gql(None, &format!("query Probe{i} {{ __typename }}"), json!({}))
            .await;
    }
    let (_, _, body) = scrape(&app, &app.address).await;
    let probes = body
        .lines()
        .filter(|l| l.starts_with("stockroom_graphql_operations_total{") && l.contains("Probe"))
        .count();
    assert!(probes <= 200, "{probes} operation names kept");
    assert!(body.contains("operation=\"other\""));
    app.shutdown().await.unwrap();

    let off = spawn_app_with(&[("METRICS_ENABLED", "false")]).await;
    assert_eq!(scrape(&off, &off.address).await.0, 404);
    off.shutdown().await.unwrap();

    let own = spawn_app_with(&[("METRICS_ADDR", "127.0.0.1:0")]).await;
    assert_eq!(
        scrape(&own, &own.address).await.0,
        404,
        "not on the API listener"
    );
    let metrics = own.metrics_address.clone().expect("a metrics listener");
    let (status, _, body) = scrape(&own, &metrics).await;
    assert_eq!(status, 200);
    assert!(body.contains("stockroom_build_info"));
    own.shutdown().await.unwrap();
}

/// SQLite: the WAL is copied back into the database file off the writer, a
/// moment after a write commits (it was copied only when a commit filled
/// 40 MB of WAL, inside that commit); each checkpoint shows in /metrics.
#[tokio::test]
#[cfg_attr(
    test_postgres,
    ignore = "SQLite only: runs when STOCKROOM_TEST_POSTGRES_URL is unset"
)]
async fn sqlite_copies_the_wal_back_soon_after_a_write() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let file = app
        .database_url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let in_file = |needle: &[u8]| {
        std::fs::read(&file)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    };
    app.create_product(&admin, "WAL-CHECKPOINT-1", 5).await;
    // Committed, so in the WAL; in the database file once checkpointed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !in_file(b"WAL-CHECKPOINT-1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the product is not in the database file 5 s after its commit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, _, body) = scrape(&app, &app.address).await;
    assert!(
        sample(&body, "stockroom_sqlite_wal_checkpoints_total").unwrap_or(0.0) >= 1.0,
        "{body}"
    );
    assert!(
        body.contains("stockroom_sqlite_wal_frames{state=\"copied\"}"),
        "{body}"
    );
    app.shutdown().await.unwrap();
}
