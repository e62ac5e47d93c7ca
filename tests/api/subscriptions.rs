//! GraphQL subscriptions over /graphql/ws: what is delivered, what is not,
//! who may subscribe, and what happens to slow, expired and cut-off
//! subscribers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    LEGACY_WS, TRANSPORT_WS, TestApp, is_postgres, spawn_app, spawn_app_with,
    spawn_pair_on_one_database,
};

const STOCK_CHANGED: &str = "subscription($p: ID) { stockChanged(productId: $p) { product { id sku stock version isLowStock } movement { id kind quantity balanceAfter product { id stock } createdBy { email } } } }";
const LOW_STOCK: &str = "subscription { lowStock { product { id sku } stock threshold } }";
/// A stream without a position (ADMIN).
const ALERT_UPDATED: &str = "subscription { alertUpdated { id status } }";
const AUDIT_ADDED: &str =
    "subscription { auditLogAdded { action entityType summary actor { email } } }";

async fn movement(app: &TestApp, token: &str, product: &str, kind: &str, quantity: i64) -> Value {
    let r = app
        .record_movement(
            token,
            json!({ "productId": product, "kind": kind, "quantity": quantity }),
        )
        .await;
    r.body.clone()
}

pub(crate) async fn set_threshold(app: &TestApp, token: &str, product: &str, threshold: i64) {
    app.gql(
        Some(token),
        "mutation($id: ID!, $i: UpdateProductInput!) { updateProduct(id: $id, input: $i) { id } }",
        json!({ "id": product, "i": { "lowStockThreshold": threshold } }),
    )
    .await
    .data();
}

async fn deactivate(app: &TestApp, admin: &str, user_id: &str) {
    app.gql(
        Some(admin),
        "mutation($id: ID!) { updateUser(id: $id, input: { isActive: false }) { id } }",
        json!({ "id": user_id }),
    )
    .await
    .data();
}

fn code(payload: &Value) -> Option<&str> {
    payload["errors"][0]["extensions"]["code"].as_str()
}

#[tokio::test]
async fn stock_changed_reaches_a_subscriber_within_a_second_with_the_new_balance() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "SUB-1", 10).await;
    let mut ws = app.ws(&admin).await;
    ws.subscribe("s", STOCK_CHANGED, json!({})).await;
    app.wait_for_subscriptions(1).await;

    let sent = Instant::now();
    let out = movement(&app, &admin, &product, "OUTBOUND", 3).await;
    let event = ws
        .next_within(Duration::from_secs(1))
        .await
        .expect("stockChanged within a second");
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert_eq!(event["type"], "next", "{event}");
    let e = &event["payload"]["data"]["stockChanged"];
    assert_eq!(
        e["movement"]["id"],
        out["data"]["recordStockMovement"]["id"]
    );
    assert_eq!(e["movement"]["kind"], "OUTBOUND");
    assert_eq!(e["movement"]["quantity"], -3);
    assert_eq!(e["movement"]["balanceAfter"], 7);
    assert_eq!(
        e["movement"]["createdBy"]["email"],
        crate::helpers::ADMIN_EMAIL
    );
    // The product as of the movement, the same on both paths to it.
    assert_eq!(e["product"]["stock"], 7);
    assert_eq!(e["product"]["version"], 3);
    assert_eq!(e["movement"]["product"]["stock"], 7);
}

#[tokio::test]
async fn stock_changed_for_one_product_receives_only_that_product() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let watched = app.create_product(&admin, "ONE-1", 10).await;
    let other = app.create_product(&admin, "ONE-2", 10).await;
    let mut ws = app.ws(&admin).await;
    ws.subscribe("s", STOCK_CHANGED, json!({ "p": watched }))
        .await;
    app.wait_for_subscriptions(1).await;

    movement(&app, &admin, &other, "INBOUND", 1).await;
    movement(&app, &admin, &watched, "INBOUND", 2).await;
    movement(&app, &admin, &other, "INBOUND", 3).await;
    movement(&app, &admin, &watched, "OUTBOUND", 4).await;

    let first = ws.event("s").await;
    let second = ws.event("s").await;
    for (e, balance) in [(&first, 12), (&second, 8)] {
        let e = &e["data"]["stockChanged"];
        assert_eq!(e["product"]["id"], watched);
        assert_eq!(e["movement"]["balanceAfter"], balance);
    }
    assert!(ws.drain(Duration::from_millis(300)).await.is_empty());
}

#[tokio::test]
async fn refused_replayed_and_rolled_back_writes_publish_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "NOPE-1", 5).await;
    let mut ws = app.ws(&admin).await;
    ws.subscribe("stock", STOCK_CHANGED, json!({})).await;
    ws.subscribe("audit", AUDIT_ADDED, json!({})).await;
    app.wait_for_subscriptions(2).await;

    // Refused: not enough stock.
    let r = movement(&app, &admin, &product, "OUTBOUND", 6).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "INSUFFICIENT_STOCK");
    // A key used once: its replay applies nothing, and a different request
    // reusing it is refused.
    let keyed =
        json!({ "productId": product, "kind": "INBOUND", "quantity": 1, "idempotencyKey": "k-1" });
    app.record_movement(&admin, keyed.clone()).await.data();
    let (a, b) = (ws.next().await, ws.next().await);
    let (stock, audit) = if a["id"] == "stock" { (a, b) } else { (b, a) };
    assert_eq!(
        stock["payload"]["data"]["stockChanged"]["movement"]["balanceAfter"],
        6
    );
    assert_eq!(
        audit["payload"]["data"]["auditLogAdded"]["action"],
        "STOCK_INBOUND"
    );
    app.record_movement(&admin, keyed).await.data();
    app.record_movement(
        &admin,
        json!({ "productId": product, "kind": "INBOUND", "quantity": 2, "idempotencyKey": "k-1" }),
    )
    .await
    .expect_code("CONFLICT");
    // Rolled back: the audit insert fails after the stock update.
    if is_postgres() {
        app.exec("CREATE FUNCTION fail_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit store down'; END $$ LANGUAGE plpgsql").await;
        app.exec("CREATE TRIGGER fail_audit BEFORE INSERT ON audit_logs FOR EACH ROW EXECUTE FUNCTION fail_audit()").await;
    } else {
        app.exec("CREATE TRIGGER fail_audit BEFORE INSERT ON audit_logs BEGIN SELECT RAISE(ABORT, 'audit store down'); END").await;
    }
    movement(&app, &admin, &product, "INBOUND", 1)
        .await
        .get("errors")
        .expect("the failing audit insert fails the movement");
    app.exec(if is_postgres() {
        "DROP TRIGGER fail_audit ON audit_logs"
    } else {
        "DROP TRIGGER fail_audit"
    })
    .await;

    assert!(
        ws.drain(Duration::from_millis(500)).await.is_empty(),
        "refused, replayed and rolled-back writes published an event"
    );
    movement(&app, &admin, &product, "INBOUND", 4).await;
    let next = ws.event("stock").await;
    assert_eq!(next["data"]["stockChanged"]["movement"]["balanceAfter"], 10);
}

#[tokio::test]
async fn low_stock_fires_once_per_crossing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "LOW-1", 10).await;
    set_threshold(&app, &admin, &product, 5).await;
    let mut ws = app.ws(&admin).await;
    ws.subscribe("low", LOW_STOCK, json!({})).await;
    app.wait_for_subscriptions(1).await;

    movement(&app, &admin, &product, "OUTBOUND", 3).await; // 7: above
    movement(&app, &admin, &product, "OUTBOUND", 3).await; // 4: crosses
    movement(&app, &admin, &product, "OUTBOUND", 1).await; // 3: still below
    movement(&app, &admin, &product, "ADJUSTMENT", -1).await; // 2: still below
    movement(&app, &admin, &product, "INBOUND", 10).await; // 12: above again
    movement(&app, &admin, &product, "OUTBOUND", 7).await; // 5: crosses (at the threshold)

    let mut events = ws.drain(Duration::from_millis(700)).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let second = events.pop().unwrap();
    let first = events.pop().unwrap();
    for (e, stock) in [(&first, 4), (&second, 5)] {
        let low = &e["payload"]["data"]["lowStock"];
        assert_eq!(low["product"]["id"], product);
        assert_eq!(low["stock"], stock);
        assert_eq!(low["threshold"], 5);
    }
}

#[tokio::test]
async fn sockets_without_a_valid_token_are_closed() {
    let app = spawn_app_with(&[("WS_INIT_TIMEOUT_SECONDS", "1")]).await;

    let mut no_token = app.ws_connect(TRANSPORT_WS, None).await.unwrap();
    no_token.init(json!({})).await;
    assert_eq!(no_token.closed().await.0, 4401);

    let mut bad_token = app.ws_connect(TRANSPORT_WS, None).await.unwrap();
    bad_token
        .init(json!({ "Authorization": "Bearer not-a-token" }))
        .await;
    assert_eq!(bad_token.closed().await.0, 4403);

    let mut subscribe_first = app.ws_connect(TRANSPORT_WS, None).await.unwrap();
    subscribe_first
        .subscribe("s", STOCK_CHANGED, json!({}))
        .await;
    assert_eq!(subscribe_first.closed().await.0, 4401);

    let mut silent = app.ws_connect(TRANSPORT_WS, None).await.unwrap();
    let (code, _) = silent.closed().await;
    assert_eq!(code, 4408, "no connection_init within the timeout");

    let mut legacy = app.ws_connect(LEGACY_WS, None).await.unwrap();
    legacy.init(json!({ "token": "not-a-token" })).await;
    let refused = legacy.next().await;
    assert_eq!(refused["type"], "connection_error", "{refused}");

    // The token may also come bare under `token`, or as `authorization`.
    let admin = app.admin_token().await;
    for payload in [
        json!({ "token": admin }),
        json!({ "authorization": format!("Bearer {admin}") }),
    ] {
        let mut ws = app.ws_connect(TRANSPORT_WS, None).await.unwrap();
        ws.init(payload).await;
        assert_eq!(ws.next().await["type"], "connection_ack");
    }
}

#[tokio::test]
async fn a_viewer_is_forbidden_audit_log_added_and_keeps_its_other_subscriptions() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (_, viewer) = app.user_with_role(&admin, "VIEWER").await;
    let product = app.create_product(&admin, "VIEW-1", 10).await;
    let mut ws = app.ws(&viewer).await;
    ws.subscribe("stock", STOCK_CHANGED, json!({})).await;
    ws.subscribe("audit", AUDIT_ADDED, json!({})).await;

    let denied = ws.next().await;
    assert_eq!(denied["id"], "audit", "{denied}");
    assert_eq!(code(&denied["payload"]), Some("FORBIDDEN"), "{denied}");
    let done = ws.next().await;
    assert_eq!(
        (done["id"].as_str(), done["type"].as_str()),
        (Some("audit"), Some("complete"))
    );

    app.wait_for_subscriptions(1).await;
    movement(&app, &admin, &product, "OUTBOUND", 1).await;
    let e = ws.event("stock").await;
    assert_eq!(e["data"]["stockChanged"]["movement"]["balanceAfter"], 9);
}

#[tokio::test]
async fn two_hundred_subscribers_receive_all_twenty_events_in_order() {
    let app = spawn_app_with(&[("WS_MAX_CONNECTIONS_PER_IP", "1000")]).await;
    let admin = app.admin_token().await;
    let a = app.create_product(&admin, "FAN-A", 1000).await;
    let b = app.create_product(&admin, "FAN-B", 1000).await;
    let mut sockets = Vec::new();
    for _ in 0..200 {
        let mut ws = app.ws(&admin).await;
        ws.subscribe("s", STOCK_CHANGED, json!({})).await;
        sockets.push(ws);
    }
    app.wait_for_subscriptions(200).await;

    for i in 0..20 {
        let p = if i % 2 == 0 { &a } else { &b };
        movement(&app, &admin, p, "OUTBOUND", 1).await;
    }
    let readers = sockets.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..20 {
                let e = ws.event("s").await;
                let e = &e["data"]["stockChanged"];
                seen.push((
                    e["product"]["id"].as_str().unwrap().to_string(),
                    e["movement"]["balanceAfter"].as_i64().unwrap(),
                ));
            }
            seen
        })
    });
    for seen in futures_util::future::join_all(readers).await {
        let seen = seen.unwrap();
        for p in [&a, &b] {
            let balances: Vec<i64> = seen
                .iter()
                .filter(|(id, _)| id == p)
                .map(|(_, b)| *b)
                .collect();
            assert_eq!(balances, (990..1000).rev().collect::<Vec<_>>());
        }
    }
}

#[tokio::test]
async fn a_slow_subscriber_is_told_it_lagged_and_does_not_delay_the_others() {
    let app = spawn_app_with(&[("EVENT_BUS_CAPACITY", "16")]).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "SLOW-1", 100_000).await;
    // Events whose answer is large: the slow reader's buffers fill quickly.
    let note = "n".repeat(500);
    for _ in 0..100 {
        app.record_movement(
            &admin,
            json!({ "productId": product, "kind": "INBOUND", "quantity": 1, "note": note }),
        )
        .await
        .data();
    }
    let heavy = "subscription { stockChanged { movement { id } product { movements(first: 100) { nodes { id note kind quantity balanceAfter createdAt } } } } }";
    let mut slow = app.ws_connect(TRANSPORT_WS, Some(4096)).await.unwrap();
    slow.init(json!({ "token": admin })).await;
    assert_eq!(slow.next().await["type"], "connection_ack");
    for i in 0..10 {
        slow.subscribe(&format!("h{i}"), heavy, json!({})).await;
    }
    let mut fast = app.ws(&admin).await;
    fast.subscribe("s", STOCK_CHANGED, json!({})).await;
    app.wait_for_subscriptions(11).await;

    // The slow client reads nothing while 150 movements are recorded; the
    // fast one keeps up with every event.
    let fast_reader = tokio::spawn(async move {
        let mut balances = Vec::new();
        for _ in 0..150 {
            let e = fast.event("s").await;
            balances.push(
                e["data"]["stockChanged"]["movement"]["balanceAfter"]
                    .as_i64()
                    .unwrap(),
            );
        }
        balances
    });
    for _ in 0..150 {
        movement(&app, &admin, &product, "OUTBOUND", 1).await;
    }
    let balances = tokio::time::timeout(Duration::from_secs(30), fast_reader)
        .await
        .expect("the fast subscriber was held up by the slow one")
        .unwrap();
    assert_eq!(balances, (99_950..100_100).rev().collect::<Vec<i64>>());

    // Now the slow one reads: some events, then the lag error, then complete.
    let mut lagged = None;
    for _ in 0..5000 {
        let Some(m) = slow.next_within(Duration::from_secs(10)).await else {
            break;
        };
        if code(&m["payload"]) == Some("SUBSCRIPTION_LAGGED") {
            lagged = Some(m);
            break;
        }
    }
    let lagged = lagged.expect("the slow subscriber was told it lagged");
    let id = lagged["id"].as_str().unwrap().to_string();
    loop {
        let m = slow.next().await;
        if m["id"] == id.as_str() {
            assert_eq!(m["type"], "complete", "the lagged stream ends: {m}");
            break;
        }
    }
}

/// The server speaks graphql-transport-ws itself (src/http/ws.rs): protocol
/// errors close with the codes the protocol names, a completed subscription
/// hears nothing more, and the socket goes on serving its other operations.
#[tokio::test]
async fn protocol_errors_close_with_the_codes_graphql_transport_ws_names() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "PROTO-1", 10).await;

    // A completed subscription ends without an answer; the socket goes on.
    let mut ws = app.ws(&admin).await;
    ws.subscribe("a", STOCK_CHANGED, json!({ "p": product }))
        .await;
    ws.subscribe("b", STOCK_CHANGED, json!({ "p": product }))
        .await;
    app.wait_for_subscriptions(2).await;
    ws.send(json!({ "id": "a", "type": "complete" })).await;
    app.wait_for_subscriptions_to_be(1).await;
    movement(&app, &admin, &product, "INBOUND", 1).await;
    let e = ws.next().await;
    assert_eq!((&e["id"], &e["type"]), (&json!("b"), &json!("next")), "{e}");
    assert_eq!(
        e["payload"]["data"]["stockChanged"]["movement"]["balanceAfter"],
        11
    );
    // A ping is answered with a pong; a query runs and completes.
    ws.send(json!({ "type": "ping" })).await;
    ws.subscribe("q", "{ me { email } }", json!({})).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = ws.raw_next().await;
        if m["type"] != "ping" {
            seen.push(m);
        }
    }
    if seen[0]["type"] != "pong" {
        seen.swap(0, 1);
    }
    assert_eq!(seen[0], json!({ "type": "pong" }));
    assert_eq!(seen[1]["id"], "q", "{}", seen[1]);
    assert_eq!(
        seen[1]["payload"]["data"]["me"]["email"],
        crate::helpers::ADMIN_EMAIL
    );
    assert_eq!(ws.next().await, json!({ "id": "q", "type": "complete" }));
    assert!(
        ws.drain(Duration::from_millis(300)).await.is_empty(),
        "nothing for `a`"
    );
    // A completed id may be used again at once.
    ws.subscribe("q", "{ me { email } }", json!({})).await;
    assert_eq!(
        ws.event("q").await["data"]["me"]["email"],
        crate::helpers::ADMIN_EMAIL
    );
    assert_eq!(ws.next().await, json!({ "id": "q", "type": "complete" }));

    // An id already subscribed: 4409, and the socket's streams end.
    ws.subscribe("b", STOCK_CHANGED, json!({ "p": product }))
        .await;
    assert_eq!(ws.closed().await.0, 4409);
    app.wait_for_subscriptions_to_be(0).await;

    // A message that is not one of the protocol's: 4400.
    let mut ws = app.ws(&admin).await;
    ws.send(json!({ "id": "x", "type": "next", "payload": {} }))
        .await;
    assert_eq!(ws.closed().await.0, 4400);
    let mut ws = app.ws(&admin).await;
    ws.raw_send("not json").await;
    assert_eq!(ws.closed().await.0, 4400);

    // A second connection_init: 4429.
    let mut ws = app.ws(&admin).await;
    ws.init(json!({ "token": admin })).await;
    assert_eq!(ws.closed().await.0, 4429);

    // None of it wrote anything: the one movement, and the product's creation.
    assert_eq!(app.count("SELECT COUNT(*) FROM stock_movements").await, 2);
}

/// A client offering both protocols is answered with the one the server then
/// speaks (graphql-transport-ws first); one offering neither is refused.
#[tokio::test]
async fn the_protocol_answered_in_the_handshake_is_the_one_spoken() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let url = app.address.replace("http://", "ws://") + "/graphql/ws";
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-ws, graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    let init = json!({ "type": "connection_init", "payload": { "token": admin } });
    ws.send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    let query =
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ me { email } }" } });
    ws.send(Message::Text(query.to_string().into()))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("the socket ended");
        };
        let m: Value = serde_json::from_str(&text).unwrap();
        kinds.push(m["type"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(kinds, ["connection_ack", "next", "complete"]);

    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-sse".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_delivers_events_too() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "LEG-1", 3).await;
    let mut ws = app.ws_with(LEGACY_WS, &admin).await;
    ws.subscribe("1", STOCK_CHANGED, json!({ "p": product }))
        .await;
    app.wait_for_subscriptions(1).await;
    movement(&app, &admin, &product, "RETURN", 2).await;
    let e = ws.event("1").await;
    assert_eq!(e["data"]["stockChanged"]["movement"]["balanceAfter"], 5);
    ws.send(json!({ "id": "1", "type": "stop" })).await;
    assert_eq!(ws.next().await["type"], "complete");
}

#[tokio::test]
async fn an_expired_token_and_a_deactivation_end_the_streams() {
    let app = spawn_app_with(&[("JWT_ACCESS_TTL_SECONDS", "2")]).await;
    let admin = app.admin_token().await;
    let (_, viewer) = app.user_with_role(&admin, "VIEWER").await;
    let mut ws = app.ws(&viewer).await;
    ws.subscribe("s", LOW_STOCK, json!({})).await;
    let ended = ws.next().await;
    assert_eq!(code(&ended["payload"]), Some("UNAUTHENTICATED"), "{ended}");
    assert_eq!(ws.next().await["type"], "complete");

    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (viewer_id, viewer) = app.user_with_role(&admin, "VIEWER").await;
    let mut ws = app.ws(&viewer).await;
    ws.subscribe("s", LOW_STOCK, json!({})).await;
    app.wait_for_subscriptions(1).await;
    deactivate(&app, &admin, &viewer_id).await;
    let ended = ws.next().await;
    assert_eq!(code(&ended["payload"]), Some("UNAUTHENTICATED"), "{ended}");
    assert_eq!(ws.next().await["type"], "complete");
}

#[tokio::test]
async fn subscriptions_per_connection_and_connections_per_ip_are_bounded() {
    let app = spawn_app_with(&[
        ("WS_MAX_SUBSCRIPTIONS_PER_CONNECTION", "2"),
        ("WS_MAX_CONNECTIONS_PER_IP", "2"),
    ])
    .await;
    let admin = app.admin_token().await;
    let mut ws = app.ws(&admin).await;
    ws.subscribe("a", LOW_STOCK, json!({})).await;
    ws.subscribe("b", LOW_STOCK, json!({})).await;
    app.wait_for_subscriptions(2).await;
    ws.subscribe("c", LOW_STOCK, json!({})).await;
    let refused = ws.next().await;
    assert_eq!(refused["id"], "c");
    assert_eq!(
        code(&refused["payload"]),
        Some("LIMIT_EXCEEDED"),
        "{refused}"
    );

    let _second = app.ws(&admin).await;
    let third = app.ws_connect(TRANSPORT_WS, None).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429);
        }
        other => panic!(
            "a third connection from one IP was not refused: {:?}",
            other.is_ok()
        ),
    }
}

#[tokio::test]
async fn graceful_shutdown_with_open_subscriptions_completes_promptly() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = app.ws(&admin).await;
        ws.subscribe("s", STOCK_CHANGED, json!({})).await;
        ws.subscribe("a", AUDIT_ADDED, json!({})).await;
        sockets.push(ws);
    }
    app.wait_for_subscriptions(6).await;
    let started = Instant::now();
    app.shutdown().await.expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for mut ws in sockets {
        assert_eq!(ws.closed().await.0, 1001);
    }
}

#[tokio::test]
async fn health_counts_open_subscriptions_and_reports_the_bus() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut ws = app.ws(&admin).await;
    ws.subscribe("s", LOW_STOCK, json!({})).await;
    app.wait_for_subscriptions(1).await;
    let body: Value = app.get("/api/v1/health").await.json().await.unwrap();
    let events = &body["services"]["events"];
    assert_eq!(events["status"], "up", "{body}");
    assert_eq!(events["subscriptions"], 1);
    assert_eq!(events["crossInstance"], is_postgres());
}

/// Two instances on one PostgreSQL database: events cross through
/// LISTEN/NOTIFY once each, and flow again after the listener is cut off.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn events_cross_instances_once_each_and_survive_a_lost_listener() {
    let (a, b) = spawn_pair_on_one_database().await;
    let admin_a = a.admin_token().await;
    let admin_b = b.admin_token().await;
    let product = b.create_product(&admin_b, "X-1", 100).await;
    let mut ws = a.ws(&admin_a).await;
    ws.subscribe("s", STOCK_CHANGED, json!({})).await;
    a.wait_for_subscriptions(1).await;
    a.wait_for_listeners(2).await;

    for _ in 0..10 {
        movement(&b, &admin_b, &product, "OUTBOUND", 1).await;
    }
    let mut balances = Vec::new();
    for _ in 0..10 {
        let e = ws.event("s").await;
        balances.push(
            e["data"]["stockChanged"]["movement"]["balanceAfter"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(balances, (90..100).rev().collect::<Vec<i64>>());
    assert!(
        ws.drain(Duration::from_millis(500)).await.is_empty(),
        "an event came twice"
    );

    // A stream with no position to resume from (alertUpdated) beside it.
    let mut alerts = a.ws(&admin_a).await;
    alerts.subscribe("l", ALERT_UPDATED, json!({})).await;
    a.wait_for_subscriptions(2).await;

    // Cut both instances' listener connections.
    let killed = a.kill_listeners().await;
    assert_eq!(killed, 2, "one listener per instance");
    // The positionless stream is told that events may have been missed,
    // and ends; the stream of all products catches up and goes on.
    let missed = alerts.next().await;
    assert_eq!(code(&missed["payload"]), Some("EVENTS_MISSED"), "{missed}");
    assert_eq!(alerts.next().await["type"], "complete");

    a.wait_for_listener_up().await;
    movement(&b, &admin_b, &product, "OUTBOUND", 1).await;
    let e = ws.event("s").await;
    assert_eq!(e["data"]["stockChanged"]["movement"]["balanceAfter"], 89);
    assert!(
        ws.drain(Duration::from_millis(500)).await.is_empty(),
        "an event came twice"
    );
}

/// A notification the listener cannot read may have carried events: open
/// streams without a position are told so (`EVENTS_MISSED`) instead of
/// going on as if nothing happened; positioned ones read the database and
/// go on.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn an_unreadable_notification_tells_open_streams_events_may_be_missing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "GARBLED-1", 10).await;
    let mut ws = app.ws(&admin).await;
    ws.subscribe("l", ALERT_UPDATED, json!({})).await;
    let mut all = app.ws(&admin).await;
    all.subscribe("s", STOCK_CHANGED, json!({})).await;
    app.wait_for_subscriptions(2).await;
    app.wait_for_listeners(1).await;
    assert_eq!(
        app.count("SELECT COUNT(pg_notify('stockroom_events', 'not an envelope'))")
            .await,
        1
    );
    let missed = ws.next().await;
    assert_eq!(code(&missed["payload"]), Some("EVENTS_MISSED"), "{missed}");
    assert_eq!(ws.next().await["type"], "complete");
    movement(&app, &admin, &product, "OUTBOUND", 1).await;
    let e = all.event("s").await;
    assert_eq!(e["data"]["stockChanged"]["movement"]["balanceAfter"], 9);
}

#[tokio::test]
async fn the_server_pings_and_closes_a_client_that_never_answers() {
    let app = spawn_app_with(&[("WS_KEEPALIVE_SECONDS", "1")]).await;
    let admin = app.admin_token().await;
    // A client that answers pings stays connected past three intervals
    // (drain panics on a close) and sees them.
    let mut alive = app.ws(&admin).await;
    assert!(alive.drain(Duration::from_millis(3500)).await.is_empty());
    assert!(alive.pings >= 2, "{} pings in 3.5 s", alive.pings);
    let mut legacy = app.ws_with(LEGACY_WS, &admin).await;
    legacy.drain(Duration::from_millis(1500)).await;
    assert!(legacy.pings >= 1, "the legacy protocol gets `ka` messages");
    // One that never answers is closed after three intervals.
    let mut silent = app.ws_connect(TRANSPORT_WS, None).await.unwrap();
    silent.init(json!({ "token": admin })).await;
    let (code, _) = silent.closed().await;
    assert_eq!(code, 3008);
}

#[tokio::test]
async fn operations_over_a_socket_spend_the_address_rate_limit() {
    let app = spawn_app_with(&[("THROTTLE_DEFAULT_LIMIT", "8")]).await;
    let admin = app.admin_token().await;
    let mut ws = app.ws(&admin).await;
    let mut answered = 0;
    for i in 0..10 {
        ws.send(json!({ "id": format!("q{i}"), "type": "subscribe", "payload": { "query": "{ me { email } }" } }))
            .await;
    }
    loop {
        use futures_util::StreamExt;
        match tokio::time::timeout(crate::helpers::WS_WAIT, ws.raw().next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                if t.contains("\"next\"") {
                    answered += 1;
                }
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame))))) => {
                assert_eq!(u16::from(frame.code), 4429, "{frame:?}");
                break;
            }
            other => panic!("expected a 4429 close, got {other:?}"),
        }
    }
    assert!(
        answered < 10,
        "all {answered} operations ran past the limit"
    );
}

#[tokio::test]
async fn only_a_pong_is_free_of_the_rate_limit_told_by_its_type_not_its_text() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app_with(&[("THROTTLE_DEFAULT_LIMIT", "8")]).await;
    let admin = app.admin_token().await;
    let mut ws = app.ws(&admin).await;
    // Pongs answer the server's keep-alive: twenty of them spend nothing,
    // so an operation still runs after them.
    for _ in 0..20 {
        ws.send(json!({ "type": "pong" })).await;
    }
    ws.subscribe("first", "{ me { email } }", json!({})).await;
    let first = ws.event("first").await;
    assert_eq!(
        first["data"]["me"]["email"],
        crate::helpers::ADMIN_EMAIL,
        "{first}"
    );
    // Operations spend the budget, even when their text says "pong".
    for i in 0..10 {
        ws.send(json!({
            "id": format!("q{i}"),
            "type": "subscribe",
            "payload": { "query": "{ me { email } }", "variables": { "note": "pong" } }
        }))
        .await;
    }
    loop {
        match tokio::time::timeout(crate::helpers::WS_WAIT, ws.raw().next()).await {
            Ok(Some(Ok(Message::Text(_)))) => {}
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(u16::from(frame.code), 4429, "{frame:?}");
                break;
            }
            other => panic!("expected a 4429 close, got {other:?}"),
        }
    }
    app.shutdown().await.unwrap();
}

/// The data of the next `n` events on a socket, by subscription id.
async fn events_by_id(
    ws: &mut crate::helpers::Ws,
    n: usize,
) -> std::collections::BTreeMap<String, Vec<Value>> {
    let mut events: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for _ in 0..n {
        let m = ws.next().await;
        assert_eq!(m["type"], "next", "{m}");
        let id = m["id"].as_str().unwrap_or_default().to_string();
        events
            .entry(id)
            .or_default()
            .push(m["payload"]["data"].clone());
    }
    events
}

/// Live subscriptions on this instance grouped by what decides their answer,
/// and answers executed for them since start.
fn groups_and_renders(app: &TestApp) -> (usize, u64) {
    let health = app.state.services.bus().health();
    (health.groups, health.renders)
}

#[tokio::test]
async fn subscribers_of_one_query_share_one_execution_per_event() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (_, other_admin) = app.user_with_role(&admin, "ADMIN").await;
    let product = app.create_product(&admin, "GRP-1", 100).await;
    // Four subscribers, three connections, two users of one role: one group.
    let mut a = app.ws(&admin).await;
    let mut b = app.ws(&admin).await;
    let mut c = app.ws(&other_admin).await;
    a.subscribe("1", STOCK_CHANGED, json!({})).await;
    a.subscribe("2", STOCK_CHANGED, json!({})).await;
    b.subscribe("1", STOCK_CHANGED, json!({})).await;
    c.subscribe("x", STOCK_CHANGED, json!({})).await;
    app.wait_for_subscriptions(4).await;
    let (groups, before) = groups_and_renders(&app);
    assert_eq!(groups, 1);

    for _ in 0..5 {
        movement(&app, &admin, &product, "OUTBOUND", 1).await;
    }
    let expected: Vec<Value> = (95..100).rev().map(Value::from).collect();
    for (ws, ids) in [
        (&mut a, &["1", "2"][..]),
        (&mut b, &["1"]),
        (&mut c, &["x"]),
    ] {
        let events = events_by_id(ws, 5 * ids.len()).await;
        for id in ids {
            let balances: Vec<Value> = events[*id]
                .iter()
                .map(|e| e["stockChanged"]["movement"]["balanceAfter"].clone())
                .collect();
            assert_eq!(balances, expected, "subscription {id}");
        }
    }
    let (_, after) = groups_and_renders(&app);
    assert_eq!(
        after - before,
        5,
        "one execution per event for the four subscribers"
    );

    // The group stops with its last subscriber.
    drop((a, b, c));
    let deadline = Instant::now() + Duration::from_secs(10);
    while groups_and_renders(&app).0 != 0 {
        assert!(
            Instant::now() < deadline,
            "the group outlived its subscribers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn subscribers_with_different_roles_or_variables_never_share_an_answer() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (_, viewer) = app.user_with_role(&admin, "VIEWER").await;
    let first = app.create_product(&admin, "GRP-A", 10).await;
    let second = app.create_product(&admin, "GRP-B", 10).await;
    let mut by_admin = app.ws(&admin).await;
    let mut by_viewer = app.ws(&viewer).await;
    by_admin.subscribe("all", STOCK_CHANGED, json!({})).await;
    by_viewer.subscribe("all", STOCK_CHANGED, json!({})).await;
    by_admin
        .subscribe("a", STOCK_CHANGED, json!({ "p": first }))
        .await;
    by_viewer
        .subscribe("b", STOCK_CHANGED, json!({ "p": second }))
        .await;
    app.wait_for_subscriptions(4).await;
    // One document: a group per role for all products, one per product.
    assert_eq!(groups_and_renders(&app).0, 4);

    let before = groups_and_renders(&app).1;
    movement(&app, &admin, &first, "INBOUND", 1).await;
    movement(&app, &admin, &second, "INBOUND", 2).await;
    for (ws, own, product) in [(&mut by_admin, "a", &first), (&mut by_viewer, "b", &second)] {
        let events = events_by_id(ws, 3).await;
        let skus: Vec<Value> = events["all"]
            .iter()
            .map(|e| e["stockChanged"]["product"]["sku"].clone())
            .collect();
        assert_eq!(skus, [json!("GRP-A"), json!("GRP-B")]);
        assert_eq!(events[own].len(), 1);
        assert_eq!(events[own][0]["stockChanged"]["product"]["id"], *product);
    }
    assert!(by_admin.drain(Duration::from_millis(300)).await.is_empty());
    assert!(by_viewer.drain(Duration::from_millis(300)).await.is_empty());
    // Two role groups for each movement, and the one product's group.
    assert_eq!(groups_and_renders(&app).1 - before, 6);
}

#[tokio::test]
async fn a_deactivated_subscriber_leaves_the_rest_of_its_group_running() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (leaving_id, leaving) = app.user_with_role(&admin, "VIEWER").await;
    let (_, staying) = app.user_with_role(&admin, "VIEWER").await;
    let product = app.create_product(&admin, "GRP-D", 10).await;
    // The one who leaves subscribed first: the group runs as its caller.
    let mut gone = app.ws(&leaving).await;
    gone.subscribe("s", STOCK_CHANGED, json!({})).await;
    app.wait_for_subscriptions(1).await;
    let mut kept = app.ws(&staying).await;
    kept.subscribe("s", STOCK_CHANGED, json!({})).await;
    app.wait_for_subscriptions(2).await;
    assert_eq!(groups_and_renders(&app).0, 1);

    deactivate(&app, &admin, &leaving_id).await;
    let ended = gone.next().await;
    assert_eq!(code(&ended["payload"]), Some("UNAUTHENTICATED"), "{ended}");
    assert_eq!(gone.next().await["type"], "complete");

    movement(&app, &admin, &product, "OUTBOUND", 4).await;
    let e = kept.event("s").await;
    assert_eq!(e["data"]["stockChanged"]["movement"]["balanceAfter"], 6);
    assert_eq!(groups_and_renders(&app).0, 1);
}

/// A change no event told of (here made behind the service's back) is found
/// when the listener comes back: every subscriber's user is read again, and
/// only the one no longer allowed ends.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn after_a_listener_reconnect_every_subscriber_is_checked_again() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (gone_id, gone) = app.user_with_role(&admin, "VIEWER").await;
    let (_, kept) = app.user_with_role(&admin, "VIEWER").await;
    let product = app.create_product(&admin, "RECHECK-1", 10).await;
    let mut gone_ws = app.ws(&gone).await;
    let mut kept_ws = app.ws(&kept).await;
    // A product's stream goes on across a reconnect (it catches up).
    gone_ws
        .subscribe("s", STOCK_CHANGED, json!({ "p": product }))
        .await;
    kept_ws
        .subscribe("s", STOCK_CHANGED, json!({ "p": product }))
        .await;
    app.wait_for_subscriptions(2).await;
    app.wait_for_listeners(1).await;

    app.exec(&format!(
        "UPDATE users SET is_active = false WHERE {}",
        crate::helpers::uuid_eq("id", &gone_id)
    ))
    .await;
    assert_eq!(app.kill_listeners().await, 1);
    let ended = gone_ws.next().await;
    assert_eq!(code(&ended["payload"]), Some("UNAUTHENTICATED"), "{ended}");
    assert_eq!(gone_ws.next().await["type"], "complete");

    app.wait_for_listener_up().await;
    movement(&app, &admin, &product, "OUTBOUND", 3).await;
    let e = kept_ws.event("s").await;
    assert_eq!(e["data"]["stockChanged"]["movement"]["balanceAfter"], 7);
}
