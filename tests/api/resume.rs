//! Streams that resume: `stockChanged(productId:, after:)` replays the ledger
//! after a cursor, then goes live, with no gap and no duplicate; `initial`
//! starts from the current state; the replay is bounded; a stream catches up
//! after its instance's listener reconnects (PostgreSQL).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, Ws, is_postgres, outbound_over_http, spawn_app, spawn_app_with,
    spawn_pair_on_one_database, uuid_eq,
};

const PRODUCT_STREAM: &str = "subscription($p: ID, $after: String, $initial: Boolean) { stockChanged(productId: $p, after: $after, initial: $initial) { cursor product { id stock version } movement { id quantity balanceAfter } } }";

async fn outbound(app: &TestApp, token: &str, product: &str) -> Value {
    let r = app
        .record_movement(
            token,
            json!({ "productId": product, "kind": "OUTBOUND", "quantity": 1 }),
        )
        .await;
    r.data()["recordStockMovement"].clone()
}

/// (cursor, balanceAfter) of a stockChanged event.
fn position(event: &Value) -> (String, i64) {
    let e = &event["data"]["stockChanged"];
    assert!(e.is_object(), "expected an event, got {event}");
    (
        e["cursor"].as_str().unwrap().to_string(),
        e["movement"]["balanceAfter"].as_i64().unwrap(),
    )
}

async fn subscribe_after(app: &TestApp, token: &str, product: &str, after: Option<&str>) -> Ws {
    let mut ws = app.ws(token).await;
    ws.subscribe("s", PRODUCT_STREAM, json!({ "p": product, "after": after }))
        .await;
    ws
}

/// A movement of one unit out of `product` written behind the application's
/// back: in the ledger, with no event, as if its notification had been lost.
async fn movement_without_event(app: &TestApp, product: &str) {
    let id = uuid_eq("id", product);
    app.exec(&format!(
        "UPDATE products SET stock = stock - 1, version = version + 1 WHERE {id}"
    ))
    .await;
    let new_id = if is_postgres() {
        "gen_random_uuid()"
    } else {
        "randomblob(16)"
    };
    app.exec(&format!(
        "INSERT INTO stock_movements (id, product_id, kind, quantity, balance_after, product_version, created_at) \
         SELECT {new_id}, id, 'OUTBOUND', -1, stock, version, created_at FROM products WHERE {id}"
    ))
    .await;
}

fn code(message: &Value) -> Option<&str> {
    message["payload"]["errors"][0]["extensions"]["code"].as_str()
}

#[tokio::test]
async fn a_stream_resumed_after_its_cursor_replays_what_it_missed_then_goes_live() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "RES-1", 100).await;

    let mut ws = subscribe_after(&app, &admin, &product, None).await;
    app.wait_for_subscriptions(1).await;
    outbound(&app, &admin, &product).await;
    outbound(&app, &admin, &product).await;
    let (_, first) = position(&ws.event("s").await);
    let (cursor, second) = position(&ws.event("s").await);
    assert_eq!((first, second), (99, 98));
    // The cursor is the product's version after the movement.
    assert_eq!(
        cursor,
        app.product(&admin, &product).await["version"].to_string()
    );
    drop(ws);

    // Four movements while nobody listens.
    for _ in 0..4 {
        outbound(&app, &admin, &product).await;
    }
    let mut ws = subscribe_after(&app, &admin, &product, Some(&cursor)).await;
    let mut balances = Vec::new();
    for _ in 0..4 {
        balances.push(position(&ws.event("s").await).1);
    }
    assert_eq!(balances, [97, 96, 95, 94], "replayed in order");
    // Then live, once each.
    app.wait_for_subscriptions(1).await;
    outbound(&app, &admin, &product).await;
    assert_eq!(position(&ws.event("s").await).1, 93);
    assert!(
        ws.drain(Duration::from_millis(300)).await.is_empty(),
        "an event came twice"
    );
}

#[tokio::test]
async fn a_version_from_a_query_is_a_cursor_so_query_then_subscribe_misses_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "RES-2", 10).await;
    let seen = app.product(&admin, &product).await;
    // A movement commits between the query and the subscription.
    outbound(&app, &admin, &product).await;
    let mut ws = subscribe_after(&app, &admin, &product, Some(&seen["version"].to_string())).await;
    let (_, balance) = position(&ws.event("s").await);
    assert_eq!(balance, 9);
    assert!(ws.drain(Duration::from_millis(300)).await.is_empty());
}

#[tokio::test]
async fn initial_starts_with_the_current_state_then_goes_live() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "RES-3", 10).await;
    outbound(&app, &admin, &product).await;
    // An edit after the last movement: the state now, not then.
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { updateProduct(id: $id, input: { name: \"Renamed\" }) { id } }",
        json!({ "id": product }),
    )
    .await
    .data();
    let now = app.product(&admin, &product).await;

    let mut ws = app.ws(&admin).await;
    ws.subscribe(
        "s",
        PRODUCT_STREAM,
        json!({ "p": product, "initial": true }),
    )
    .await;
    let first = ws.event("s").await;
    let (cursor, balance) = position(&first);
    assert_eq!(balance, 9);
    assert_eq!(first["data"]["stockChanged"]["product"]["stock"], 9);
    assert_eq!(
        cursor,
        now["version"].to_string(),
        "the product's version now"
    );
    app.wait_for_subscriptions(1).await;
    outbound(&app, &admin, &product).await;
    assert_eq!(position(&ws.event("s").await).1, 8);
    assert!(ws.drain(Duration::from_millis(300)).await.is_empty());

    // A product that never moved has no state to start with: live only.
    let still = app.create_product(&admin, "RES-3B", 0).await;
    let mut ws = app.ws(&admin).await;
    ws.subscribe("s", PRODUCT_STREAM, json!({ "p": still, "initial": true }))
        .await;
    app.wait_for_subscriptions(1).await;
    app.record_movement(
        &admin,
        json!({ "productId": still, "kind": "INBOUND", "quantity": 5 }),
    )
    .await
    .data();
    assert_eq!(position(&ws.event("s").await).1, 5);
}

#[tokio::test]
async fn a_replay_past_its_bound_ends_with_events_missed_and_the_cursor_to_refetch_from() {
    let app = spawn_app_with(&[("SUBSCRIPTION_REPLAY_LIMIT", "3")]).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "RES-4", 100).await;
    let start = app.product(&admin, &product).await["version"].to_string();
    for _ in 0..3 {
        outbound(&app, &admin, &product).await;
    }
    // Exactly the bound: replayed.
    let mut ws = subscribe_after(&app, &admin, &product, Some(&start)).await;
    for expected in [99, 98, 97] {
        assert_eq!(position(&ws.event("s").await).1, expected);
    }
    drop(ws);
    outbound(&app, &admin, &product).await;
    // One past it: refused, with where a re-fetch stands.
    let mut ws = subscribe_after(&app, &admin, &product, Some(&start)).await;
    let refused = ws.next().await;
    assert_eq!(code(&refused), Some("EVENTS_MISSED"), "{refused}");
    let now = app.product(&admin, &product).await["version"].to_string();
    let cursor = refused["payload"]["errors"][0]["extensions"]["cursor"].as_str();
    assert_eq!(cursor, Some(now.as_str()), "{refused}");
}

#[tokio::test]
async fn cursors_that_cannot_be_honoured_are_refused() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "RES-5", 10).await;
    let cases = [
        (
            json!({ "p": product, "after": "abc" }),
            "BAD_USER_INPUT",
            "after",
        ),
        (json!({ "after": "3" }), "BAD_USER_INPUT", "after"),
        (json!({ "initial": true }), "BAD_USER_INPUT", "initial"),
        (
            json!({ "p": product, "after": "3", "initial": true }),
            "BAD_USER_INPUT",
            "initial",
        ),
        (
            json!({ "p": "00000000-0000-4000-8000-000000000000", "after": "1" }),
            "NOT_FOUND",
            "",
        ),
    ];
    for (i, (variables, expected, field)) in cases.into_iter().enumerate() {
        let mut ws = app.ws(&admin).await;
        ws.subscribe(&format!("s{i}"), PRODUCT_STREAM, variables.clone())
            .await;
        let m = ws.next().await;
        assert_eq!(code(&m), Some(expected), "{variables}: {m}");
        if !field.is_empty() {
            assert_eq!(
                m["payload"]["errors"][0]["extensions"]["field"], field,
                "{m}"
            );
        }
        assert_eq!(ws.next().await["type"], "complete");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM stock_movements").await, 1);
}

/// Found by the chaos run: events of one product from several instances can
/// arrive out of order, or one can be lost, and a stream that only dropped
/// what it had passed skipped the overtaken or lost movement for good. A live
/// event that skips a version now sends the stream to the ledger.
#[tokio::test]
async fn a_live_event_that_skips_a_version_brings_the_missing_movement_from_the_ledger() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "RES-8", 10).await;
    let mut ws = subscribe_after(&app, &admin, &product, None).await;
    app.wait_for_subscriptions(1).await;
    movement_without_event(&app, &product).await;
    outbound(&app, &admin, &product).await;
    let first = position(&ws.event("s").await);
    let second = position(&ws.event("s").await);
    assert_eq!(
        (first.1, second.1),
        (9, 8),
        "the lost one first, then the live one"
    );
    assert!(first.0.parse::<i64>().unwrap() < second.0.parse::<i64>().unwrap());
    assert!(ws.drain(Duration::from_millis(300)).await.is_empty());
    app.ledger_is_clean().await;
}

/// A reader that drops its connection a hundred times, at random points of
/// a stream of movements, and resumes each time after its last cursor, sees
/// every movement of its product exactly once and in order.
#[tokio::test]
async fn a_client_cut_off_a_hundred_times_sees_every_movement_once_in_order() {
    const MOVEMENTS: i64 = 300;
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "RES-6", MOVEMENTS as i32).await;
    let mut cursor = app.product(&admin, &product).await["version"].to_string();

    let writer = {
        let app_address = app.address.clone();
        let client = app.client.clone();
        let admin = admin.clone();
        let product = product.clone();
        tokio::spawn(async move {
            for _ in 0..MOVEMENTS {
                outbound_over_http(&client, &app_address, &admin, &product).await;
            }
        })
    };

    let mut balances = Vec::new();
    let mut cuts = 0;
    let started = Instant::now();
    while balances.last() != Some(&0) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stuck at {balances:?}"
        );
        let mut ws = subscribe_after(&app, &admin, &product, Some(&cursor)).await;
        // A few events, then the connection is cut (while a hundred cuts
        // remain to be made); the last connection reads to the end.
        let take = if cuts < 100 { 1 + cuts % 3 } else { usize::MAX };
        for _ in 0..take {
            let (c, balance) = position(&ws.event("s").await);
            cursor = c;
            balances.push(balance);
            if balance == 0 {
                break;
            }
        }
        cuts += 1;
    }
    writer.await.unwrap();
    assert!(cuts > 100, "only {cuts} connections");
    let expected: Vec<i64> = (0..MOVEMENTS).rev().collect();
    assert_eq!(balances, expected, "each movement once, in order");
}

#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn after_a_listener_reconnect_a_product_stream_catches_up_from_the_ledger() {
    let (a, b) = spawn_pair_on_one_database().await;
    let admin_a = a.admin_token().await;
    let admin_b = b.admin_token().await;
    let product = b.create_product(&admin_b, "RES-7", 100).await;
    let mut ws = subscribe_after(&a, &admin_a, &product, None).await;
    a.wait_for_subscriptions(1).await;
    a.wait_for_listeners(2).await;
    outbound(&b, &admin_b, &product).await;
    assert_eq!(position(&ws.event("s").await).1, 99);

    // A movement whose notification never reaches instance a: written
    // behind the application's back, as if its NOTIFY had been lost while
    // a's listener was down. Then a's listener is cut and reconnects.
    let before = replayed(&a).await;
    movement_without_event(&a, &product).await;
    a.kill_listeners().await;
    // The stream reads the lost movement back from the ledger, and goes on.
    assert_eq!(position(&ws.event("s").await).1, 98);
    a.wait_for_listener_up().await;
    for _ in 0..3 {
        outbound(&b, &admin_b, &product).await;
    }
    let mut balances = Vec::new();
    for _ in 0..3 {
        balances.push(position(&ws.event("s").await).1);
    }
    assert_eq!(balances, [97, 96, 95], "live again, once each, in order");
    assert!(
        ws.drain(Duration::from_millis(500)).await.is_empty(),
        "an event came twice"
    );
    assert!(
        replayed(&a).await >= before + 1.0,
        "the catch-up is counted"
    );
    a.ledger_is_clean().await;
}

async fn replayed(app: &TestApp) -> f64 {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("stockroom_subscription_replayed_events_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
