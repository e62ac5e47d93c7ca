use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with, spawn_app_without_database};

#[tokio::test]
async fn health_is_ok_with_database_latency() {
    let app = spawn_app().await;
    let resp = app.get("/api/v1/health").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["services"]["database"]["status"], "up");
    assert!(body["services"]["database"]["latencyMs"].as_f64().is_some());
    assert!(body["version"].is_string());
    assert!(body["uptimeSeconds"].is_u64());

    let live = app.get("/api/v1/health/live").await;
    assert_eq!(live.status(), 200);
}

#[tokio::test]
async fn health_is_degraded_quickly_when_the_database_is_unreachable() {
    let app = spawn_app_without_database().await;
    let started = Instant::now();
    let resp = app.get("/api/v1/health").await;
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["services"]["database"]["status"], "down");
    // Generous bound: the ping has a 500 ms timeout; this only guards against hanging.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    let gql = app
        .gql(
            None,
            "{ health { status database { status error } } }",
            json!({}),
        )
        .await;
    assert_eq!(gql.data()["health"]["status"], "DEGRADED");
    assert_eq!(gql.data()["health"]["database"]["status"], "DOWN");
    // The server itself keeps serving.
    assert_eq!(app.get("/api/v1/health/live").await.status(), 200);
}

#[tokio::test]
async fn oversized_body_is_refused_with_413() {
    let app = spawn_app_with(&[("REQUEST_BODY_LIMIT_BYTES", "2048")]).await;
    let query = format!("{{ health {{ status }} }} # {}", "x".repeat(4096));
    let resp = app
        .client
        .post(format!("{}/graphql", app.address))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn request_id_is_generated_or_propagated() {
    let app = spawn_app().await;
    let resp = app.get("/api/v1/health").await;
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!generated.is_empty());

    let resp = app
        .client
        .get(format!("{}/api/v1/health", app.address))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-abc-123");
}

#[tokio::test]
async fn default_rate_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(&[
        ("THROTTLE_DEFAULT_LIMIT", "5"),
        ("THROTTLE_DEFAULT_TTL", "60"),
    ])
    .await;
    for _ in 0..5 {
        let ok = app.gql(None, "{ __typename }", json!({})).await;
        assert_eq!(ok.status, 200);
    }
    let limited = app
        .get("/api/v1/uploads/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");

    let gql = app.gql(None, "{ health { status } }", json!({})).await;
    assert_eq!(gql.status, 429);
    let err = gql.expect_code("RATE_LIMITED");
    assert!(err["extensions"]["retryAfterSeconds"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn probes_and_metrics_have_a_budget_of_their_own() {
    let app = spawn_app_with(&[
        ("THROTTLE_DEFAULT_LIMIT", "3"),
        ("THROTTLE_PROBE_LIMIT", "6"),
        ("THROTTLE_PROBE_TTL", "60"),
        ("METRICS_ENABLED", "true"),
    ])
    .await;
    // Probes spend nothing of the API's budget...
    for path in ["/api/v1/health/live", "/api/v1/health", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    for _ in 0..3 {
        assert_eq!(app.gql(None, "{ __typename }", json!({})).await.status, 200);
    }
    // ...and the API spent all of its own: probes still answer.
    assert_eq!(app.gql(None, "{ __typename }", json!({})).await.status, 429);
    for path in ["/api/v1/health/live", "/api/v1/health", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    // Their own budget holds.
    let limited = app.get("/api/v1/health/live").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn graphiql_is_served_on_get() {
    let app = spawn_app().await;
    let resp = app.get("/graphql").await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("graphiql"), "GraphiQL page");
}

#[tokio::test]
async fn graphql_errors_from_the_engine_carry_a_code() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let syntax = app.gql(Some(&admin), "{ products { ", json!({})).await;
    syntax.expect_code("BAD_USER_INPUT");
    let unknown = app.gql(Some(&admin), "{ noSuchField }", json!({})).await;
    unknown.expect_code("BAD_USER_INPUT");
}

#[tokio::test]
async fn depth_limit_refuses_deep_queries() {
    let app = spawn_app_with(&[("GRAPHQL_MAX_DEPTH", "4")]).await;
    let admin = app.admin_token().await;
    let deep =
        "{ stockMovements { nodes { product { movements { nodes { product { id } } } } } } }";
    let r = app.gql(Some(&admin), deep, json!({})).await;
    r.expect_code("BAD_USER_INPUT");
}

async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_authenticates_with_connection_init() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    let app = spawn_app().await;
    let token = app.admin_token().await;
    let url = app.address.replace("http://", "ws://") + "/graphql/ws";
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    ws.send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "connection_ack");

    let subscribe =
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ me { email } }" } });
    ws.send(Message::Text(subscribe.to_string().into()))
        .await
        .unwrap();
    let msg = next_json(&mut ws).await;
    assert_eq!(msg["type"], "next", "{msg}");
    assert_eq!(
        msg["payload"]["data"]["me"]["email"],
        crate::helpers::ADMIN_EMAIL
    );
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app = spawn_app_with(&[("CORS_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let denied = preflight("https://evil.example.com").await.unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn shutdown_stops_the_server_and_its_tasks() {
    let app = crate::helpers::spawn_app().await;
    let address = app.address.clone();
    let client = app.client.clone();
    assert_eq!(app.get("/api/v1/health/live").await.status(), 200);
    let stopped = app.shutdown().await;
    assert!(stopped.is_ok(), "run_until_stopped returned {stopped:?}");
    let after = client
        .get(format!("{address}/api/v1/health/live"))
        .send()
        .await;
    assert!(after.is_err(), "the listener is closed");
}

/// Several instances share a database only on PostgreSQL.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn instances_starting_together_migrate_and_seed_once() {
    let (a, b) = crate::helpers::spawn_pair_on_one_database().await;
    assert_eq!(a.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(a.get("/api/v1/health").await.status(), 200);
    assert_eq!(b.get("/api/v1/health").await.status(), 200);
    b.admin_token().await;
}

#[tokio::test]
async fn nested_pages_are_refused_by_the_complexity_limit() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (_, viewer) = app.user_with_role(&admin, "VIEWER").await;
    let fan_out = "{ products(first: 100) { nodes { movements(first: 100) { nodes { product { movements(first: 100) { nodes { id } } } } } } } }";
    app.gql(Some(&viewer), fan_out, json!({}))
        .await
        .expect_code("BAD_USER_INPUT");
    let full_page = "{ products(first: 100) { totalCount nodes { id sku name description category unit stock lowStockThreshold isLowStock version archivedAt createdAt updatedAt movements(first: 5) { nodes { id kind quantity balanceAfter } } } } }";
    app.gql(Some(&viewer), full_page, json!({})).await.data();
}

#[tokio::test]
async fn malformed_requests_get_a_coded_json_error() {
    let app = spawn_app().await;
    for body in ["{not json", r#"[{"query":"{ health { status } }"}]"#] {
        let resp = app
            .client
            .post(format!("{}/graphql", app.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let json: Value = resp.json().await.unwrap();
        assert_eq!(
            json["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
    }
}

/// The client IP the audit log recorded for the newest login.
async fn last_login_ip(app: &crate::helpers::TestApp, token: &str) -> String {
    let logins = app
        .gql(
            Some(token),
            "{ auditLogs(filter: { action: LOGIN }) { nodes { ip } } }",
            json!({}),
        )
        .await;
    logins.data()["auditLogs"]["nodes"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_ip_is_the_last_forwarded_entry() {
    let app = spawn_app_with(&[("TRUST_PROXY", "true")]).await;
    let r = app
        .post_graphql(
            None,
            "mutation { login(input: { email: \"admin@test.local\", password: \"admin-password-123\" }) { accessToken } }",
            json!({}),
            &[("x-forwarded-for", "6.6.6.6, 203.0.113.7")],
        )
        .await;
    let token = r.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(last_login_ip(&app, &token).await, "203.0.113.7");
}

#[tokio::test]
async fn trusted_proxy_hops_pick_the_client_address() {
    // A CDN appends the client (198.51.100.7), then the load balancer appends
    // the CDN's address (10.0.0.2); what the client sent itself comes first.
    let app = spawn_app_with(&[("TRUST_PROXY", "true"), ("TRUST_PROXY_HOPS", "2")]).await;
    let login = "mutation { login(input: { email: \"admin@test.local\", password: \"admin-password-123\" }) { accessToken } }";
    let r = app
        .post_graphql(
            None,
            login,
            json!({}),
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")],
        )
        .await;
    let token = r.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(last_login_ip(&app, &token).await, "198.51.100.7");
    // Two header lines count as one list.
    let resp = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.8")
        .header("x-forwarded-for", "10.0.0.2")
        .json(&json!({ "query": login }))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let token = body["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(last_login_ip(&app, &token).await, "198.51.100.8");
    // The rate limit keys on that address too: another client behind the
    // same CDN keeps its own budget.
    let limited = spawn_app_with(&[
        ("TRUST_PROXY", "true"),
        ("TRUST_PROXY_HOPS", "2"),
        ("THROTTLE_DEFAULT_LIMIT", "2"),
    ])
    .await;
    let health = |client_ip: &'static str| {
        limited
            .client
            .get(format!(
                "{}/graphql?query=%7B__typename%7D",
                limited.address
            ))
            .header("accept", "application/json")
            .header("x-forwarded-for", format!("{client_ip}, 10.0.0.2"))
            .send()
    };
    assert_eq!(health("198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(health("198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(health("198.51.100.1").await.unwrap().status(), 429);
    assert_eq!(health("198.51.100.2").await.unwrap().status(), 200);
}

/// PostgreSQL only: SQLite is a file in the process, there is no server to
/// lose.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn the_server_recovers_when_database_connections_are_cut() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "CUT-1", 1).await;
    // What a database restart does to every pooled connection.
    let name = app.database_url.rsplit('/').next().unwrap().to_string();
    let killer = sea_orm::Database::connect(std::env::var("STOCKROOM_TEST_POSTGRES_URL").unwrap())
        .await
        .unwrap();
    use sea_orm::ConnectionTrait;
    killer
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();
    assert_eq!(app.get("/api/v1/health").await.status(), 200);
    let r = app
        .gql(
            Some(&admin),
            "{ productBySku(sku: \"CUT-1\") { stock } }",
            json!({}),
        )
        .await;
    assert_eq!(r.data()["productBySku"]["stock"], 1);
}

#[tokio::test]
async fn a_second_forwarded_for_line_from_the_proxy_wins_over_the_clients() {
    let app = spawn_app_with(&[("TRUST_PROXY", "true")]).await;
    let resp = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({ "query": "mutation { login(input: { email: \"admin@test.local\", password: \"admin-password-123\" }) { accessToken } }" }))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let token = body["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(last_login_ip(&app, &token).await, "203.0.113.9");
}

#[tokio::test]
async fn graphql_posts_other_than_json_or_multipart_get_415_and_run_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mutation =
        r#"{"query":"mutation { createProduct(input: {sku: \"CSRF-1\", name: \"x\"}) { id } }"}"#;
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = app
            .client
            .post(format!("{}/graphql", app.address))
            .bearer_auth(&admin)
            .body(mutation);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 415, "{content_type:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNSUPPORTED_MEDIA_TYPE",
            "{content_type:?}"
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM products").await, 0);
    // JSON with a charset, and the GraphQL response type, are fine.
    for ct in [
        "application/json; charset=utf-8",
        "application/graphql-response+json",
    ] {
        let resp = app
            .client
            .post(format!("{}/graphql", app.address))
            .header("content-type", ct)
            .body(r#"{"query":"{ health { status } }"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{ct}");
    }
}

#[tokio::test]
async fn an_operation_with_too_many_root_fields_is_refused() {
    let app = spawn_app_with(&[("GRAPHQL_MAX_ROOT_FIELDS", "50")]).await;
    let aliases = |n: usize| {
        (0..n)
            .map(|i| format!("a{i}: health {{ status }}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let ok = app
        .gql(None, &format!("{{ {} }}", aliases(50)), json!({}))
        .await;
    assert_eq!(ok.data()["a49"]["status"], "OK");
    let r = app
        .gql(None, &format!("{{ {} }}", aliases(51)), json!({}))
        .await;
    let err = r.expect_code("BAD_USER_INPUT");
    assert!(
        err["message"].as_str().unwrap().contains("51 root fields"),
        "{err}"
    );
    assert!(r.body["data"].is_null(), "{}", r.body);
    // Fields reached through fragments count too.
    let fragment = format!(
        "query {{ ...Many ... on Query {{ x: health {{ status }} }} }} fragment Many on Query {{ {} }}",
        aliases(50)
    );
    app.gql(None, &fragment, json!({}))
        .await
        .expect_code("BAD_USER_INPUT");
}

#[tokio::test]
async fn answers_carry_the_security_headers() {
    let app = spawn_app().await;
    let check = |resp: &reqwest::Response, what: &str| {
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
        assert_eq!(h["cache-control"], "no-store", "{what}");
        h["content-security-policy"].to_str().unwrap().to_string()
    };
    let health = app.get("/api/v1/health").await;
    assert!(check(&health, "health").starts_with("default-src 'none'"));
    let login = app
        .client
        .post(format!("{}/graphql", app.address))
        .json(&json!({ "query": "mutation { login(input: {email: \"admin@test.local\", password: \"admin-password-123\"}) { accessToken } }" }))
        .send()
        .await
        .unwrap();
    assert!(check(&login, "login").contains("frame-ancestors 'none'"));
    let page = app.get("/graphql").await;
    let policy = check(&page, "graphiql");
    assert!(
        policy.contains("script-src") && policy.contains("connect-src 'self'"),
        "{policy}"
    );
    let refused = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    check(&refused, "415");
}

/// `POST /graphql` keeps parsed documents: the same text sent again with
/// other variables (a `@skip` condition, another SKU) answers by its own
/// variables, and a restricted account is still refused with that text.
#[tokio::test]
async fn a_kept_document_answers_each_request_by_its_own_variables() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "KEPT-1", 3).await;
    let q = "query($s: Boolean!, $sku: String!) { productBySku(sku: $sku) { sku stock @skip(if: $s) } }";
    for (skip, sku, want) in [
        (true, "KEPT-1", json!({ "sku": "KEPT-1" })),
        (false, "KEPT-1", json!({ "sku": "KEPT-1", "stock": 3 })),
        (true, "kept-1", json!({ "sku": "KEPT-1" })),
        (false, "NONE-1", Value::Null),
        (false, "kept-1", json!({ "sku": "KEPT-1", "stock": 3 })),
    ] {
        let r = app
            .gql(Some(&admin), q, json!({ "s": skip, "sku": sku }))
            .await;
        assert!(r.error_code().is_none(), "{}", r.body);
        assert_eq!(r.data()["productBySku"], want, "skip {skip}, sku {sku}");
    }
}
