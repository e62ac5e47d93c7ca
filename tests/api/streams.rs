//! The streams of all products (`stockChanged` without a product), of
//! low stock (`lowStock`) and of the audit log (`auditLogAdded`) resume
//! from a cursor: every event carries
//! one, and `after:` it the stream replays what the database holds since,
//! then goes live, with no gap and no duplicate, also while many writers
//! race (their transactions commit in another order than they began on
//! PostgreSQL). The replay is bounded, and a stream catches up from the
//! database after its instance's listener reconnects (PostgreSQL).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, Ws, outbound_over_http, spawn_app, spawn_app_with, spawn_pair_on_one_database, uuid_eq,
};
use crate::subscriptions::set_threshold;

const ALL_STREAM: &str = "subscription($after: String) { stockChanged(after: $after) { cursor product { id } movement { id balanceAfter } } }";
const AUDIT_STREAM: &str =
    "subscription($after: String) { auditLogAdded(after: $after) { id summary cursor } }";
const LOW_STREAM: &str = "subscription($after: String) { lowStock(after: $after) { cursor stock threshold product { id } } }";

/// (cursor, stock, threshold) of a lowStock event.
fn low(event: &Value) -> (String, i64, i64) {
    let e = &event["data"]["lowStock"];
    assert!(e.is_object(), "expected an event, got {event}");
    (
        e["cursor"].as_str().unwrap().to_string(),
        e["stock"].as_i64().unwrap(),
        e["threshold"].as_i64().unwrap(),
    )
}

/// (cursor, movement id, product id, balanceAfter) of an all-products event.
fn moved(event: &Value) -> (String, String, String, i64) {
    let e = &event["data"]["stockChanged"];
    assert!(e.is_object(), "expected an event, got {event}");
    (
        e["cursor"].as_str().unwrap().to_string(),
        e["movement"]["id"].as_str().unwrap().to_string(),
        e["product"]["id"].as_str().unwrap().to_string(),
        e["movement"]["balanceAfter"].as_i64().unwrap(),
    )
}

async fn subscribe(app: &TestApp, token: &str, query: &str, after: Option<&str>) -> Ws {
    let mut ws = app.ws(token).await;
    ws.subscribe("s", query, json!({ "after": after })).await;
    ws
}

async fn outbound(app: &TestApp, token: &str, product: &str) {
    app.record_movement(
        token,
        json!({ "productId": product, "kind": "OUTBOUND", "quantity": 1 }),
    )
    .await
    .data();
}

/// Every movement id in the ledger.
async fn ledger_ids(app: &TestApp) -> HashSet<String> {
    let n = app.count("SELECT COUNT(*) FROM stock_movements").await;
    let mut ids = HashSet::new();
    let mut after: Option<String> = None;
    while (ids.len() as i64) < n {
        let r = app
            .gql(
                Some(&app.admin_token().await),
                "query($after: String) { stockMovements(first: 100, after: $after) { nodes { id } pageInfo { endCursor } } }",
                json!({ "after": after }),
            )
            .await;
        let page = &r.data()["stockMovements"];
        for node in page["nodes"].as_array().unwrap() {
            ids.insert(node["id"].as_str().unwrap().to_string());
        }
        after = page["pageInfo"]["endCursor"].as_str().map(String::from);
        assert!(after.is_some() || ids.len() as i64 == n);
    }
    ids
}

fn code(message: &Value) -> Option<&str> {
    message["payload"]["errors"][0]["extensions"]["code"].as_str()
}

#[tokio::test]
async fn the_stream_of_all_products_resumes_after_its_cursor_with_no_gap_or_duplicate() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let a = app.create_product(&admin, "ALL-1", 100).await;
    let b = app.create_product(&admin, "ALL-2", 100).await;
    let before = ledger_ids(&app).await;

    let mut ws = subscribe(&app, &admin, ALL_STREAM, None).await;
    app.wait_for_subscriptions(1).await;
    outbound(&app, &admin, &a).await;
    outbound(&app, &admin, &b).await;
    let (_, first, ..) = moved(&ws.event("s").await);
    let (cursor, second, ..) = moved(&ws.event("s").await);
    drop(ws);

    // Movements of both products while nobody listens.
    for p in [&a, &b, &a, &b, &a] {
        outbound(&app, &admin, p).await;
    }
    let mut ws = subscribe(&app, &admin, ALL_STREAM, Some(&cursor)).await;
    let mut replayed = Vec::new();
    for _ in 0..5 {
        let (_, id, product, balance) = moved(&ws.event("s").await);
        replayed.push((id, product, balance));
    }
    let balances: Vec<(bool, i64)> = replayed.iter().map(|(_, p, b)| (*p == a, *b)).collect();
    assert_eq!(
        balances,
        [(true, 98), (false, 98), (true, 97), (false, 97), (true, 96)],
        "replayed in order"
    );
    // Then live, once each.
    app.wait_for_subscriptions(1).await;
    outbound(&app, &admin, &b).await;
    let (_, live, product, balance) = moved(&ws.event("s").await);
    assert_eq!((product == b, balance), (true, 96));
    assert!(
        ws.drain(Duration::from_millis(300)).await.is_empty(),
        "an event came twice"
    );
    let mut all: Vec<String> = vec![first, second, live];
    all.extend(replayed.into_iter().map(|(id, ..)| id));
    let seen: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(seen.len(), all.len());
    let since: HashSet<String> = ledger_ids(&app)
        .await
        .difference(&before)
        .cloned()
        .collect();
    assert_eq!(seen, since);
}

/// The proof under concurrency: eight writers race on four products (on
/// PostgreSQL their transactions begin and commit in different orders,
/// group commit batches them), while a reader is cut off again and again
/// at random points and resumes after its last cursor each time. It sees
/// every movement of the ledger exactly once, and each product's movements
/// in order.
#[tokio::test]
async fn a_reader_of_all_products_cut_off_again_and_again_misses_nothing_while_writers_race() {
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut products = Vec::new();
    for i in 0..4 {
        products.push(app.create_product(&admin, &format!("RACE-{i}"), 1000).await);
    }
    let before = ledger_ids(&app).await;
    let ws = subscribe(&app, &admin, ALL_STREAM, None).await;
    app.wait_for_subscriptions(1).await;
    let mut ws = Some(ws);

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (address, client, admin) = (app.address.clone(), app.client.clone(), admin.clone());
        let products = products.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                // A mix of products per writer, so that transactions overlap.
                let product = &products[(w + i) % products.len()];
                outbound_over_http(&client, &address, &admin, product).await;
            }
        }));
    }

    let total = WRITERS * EACH;
    let mut seen: Vec<(String, String, i64)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut cuts = 0;
    let started = Instant::now();
    while seen.len() < total {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stuck after {} of {total}",
            seen.len()
        );
        let mut current = match ws.take() {
            Some(ws) => ws,
            None => subscribe(&app, &admin, ALL_STREAM, cursor.as_deref()).await,
        };
        let take = 1 + (cuts * 7) % 5;
        for _ in 0..take {
            let (c, id, product, balance) = moved(&current.event("s").await);
            cursor = Some(c);
            seen.push((id, product, balance));
            if seen.len() == total {
                break;
            }
        }
        cuts += 1;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(cuts > 50, "only {cuts} connections");
    // Nothing more: no duplicate arrives late.
    let mut last = subscribe(&app, &admin, ALL_STREAM, cursor.as_deref()).await;
    assert!(last.drain(Duration::from_millis(500)).await.is_empty());

    let ids: Vec<&String> = seen.iter().map(|(id, ..)| id).collect();
    let unique: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
    assert_eq!(unique.len(), total, "a movement came twice");
    let since: HashSet<String> = ledger_ids(&app)
        .await
        .difference(&before)
        .cloned()
        .collect();
    assert_eq!(unique, since, "a movement is missing");
    let mut balances: HashMap<&str, Vec<i64>> = HashMap::new();
    for (_, product, balance) in &seen {
        balances.entry(product).or_default().push(*balance);
    }
    for (product, list) in balances {
        let mut sorted = list.clone();
        sorted.sort_unstable_by(|x, y| y.cmp(x));
        assert_eq!(list, sorted, "{product}'s movements out of order");
    }
    app.ledger_is_clean().await;
}

#[tokio::test]
async fn the_audit_stream_resumes_after_its_cursor_with_no_gap_or_duplicate() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut ws = subscribe(&app, &admin, AUDIT_STREAM, None).await;
    app.wait_for_subscriptions(1).await;
    app.create_product(&admin, "AUD-1", 0).await;
    let first = ws.event("s").await;
    let cursor = first["data"]["auditLogAdded"]["cursor"]
        .as_str()
        .expect("an audit event carries its cursor")
        .to_string();
    drop(ws);

    let before = app.count("SELECT COUNT(*) FROM audit_logs").await;
    // A product with initial stock: its creation and its first movement,
    // two rows of one transaction; then two more products.
    app.create_product(&admin, "AUD-2", 5).await;
    app.create_product(&admin, "AUD-3", 0).await;
    let missed = app.count("SELECT COUNT(*) FROM audit_logs").await - before;
    assert!(missed >= 3, "{missed} rows");

    let mut ws = subscribe(&app, &admin, AUDIT_STREAM, Some(&cursor)).await;
    let mut ids = HashSet::new();
    for _ in 0..missed {
        let e = ws.event("s").await;
        ids.insert(
            e["data"]["auditLogAdded"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(ids.len() as i64, missed);
    app.create_product(&admin, "AUD-4", 0).await;
    let live = ws.event("s").await;
    assert!(
        live["data"]["auditLogAdded"]["summary"]
            .as_str()
            .unwrap()
            .contains("AUD-4"),
        "{live}"
    );
    assert!(ws.drain(Duration::from_millis(300)).await.is_empty());
    // Every row written since the first event, exactly.
    ids.insert(
        live["data"]["auditLogAdded"]["id"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let since = app.count("SELECT COUNT(*) FROM audit_logs").await - before;
    assert_eq!(ids.len() as i64, since);
}

async fn move_stock(app: &TestApp, token: &str, product: &str, kind: &str, quantity: i64) {
    app.record_movement(
        token,
        json!({ "productId": product, "kind": kind, "quantity": quantity }),
    )
    .await
    .data();
}

/// The crossings missed while away are replayed with the threshold each
/// crossed (not the product's threshold now), then the stream goes live;
/// movements that did not cross are not in it.
#[tokio::test]
async fn the_low_stock_stream_resumes_after_its_cursor_with_each_crossing_once() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "LOW-R", 10).await;
    let other = app.create_product(&admin, "LOW-O", 10).await;
    set_threshold(&app, &admin, &product, 5).await;
    let mut ws = subscribe(&app, &admin, LOW_STREAM, None).await;
    app.wait_for_subscriptions(1).await;
    move_stock(&app, &admin, &product, "OUTBOUND", 6).await; // 4: crosses 5
    let (cursor, stock, threshold) = low(&ws.event("s").await);
    assert_eq!((stock, threshold), (4, 5));
    drop(ws);

    move_stock(&app, &admin, &product, "INBOUND", 10).await; // 14
    set_threshold(&app, &admin, &product, 8).await;
    move_stock(&app, &admin, &product, "OUTBOUND", 7).await; // 7: crosses 8
    move_stock(&app, &admin, &other, "OUTBOUND", 1).await; // 9: above 0
    set_threshold(&app, &admin, &product, 5).await;
    move_stock(&app, &admin, &product, "OUTBOUND", 1).await; // 6: above 5
    move_stock(&app, &admin, &product, "OUTBOUND", 1).await; // 5: crosses 5
    move_stock(&app, &admin, &product, "OUTBOUND", 1).await; // 4: still below

    let mut ws = subscribe(&app, &admin, LOW_STREAM, Some(&cursor)).await;
    let replayed: Vec<(i64, i64)> = [ws.event("s").await, ws.event("s").await]
        .iter()
        .map(|e| {
            let (_, stock, threshold) = low(e);
            (stock, threshold)
        })
        .collect();
    assert_eq!(replayed, [(7, 8), (5, 5)]);
    app.wait_for_subscriptions(1).await;
    move_stock(&app, &admin, &product, "INBOUND", 10).await; // 14
    move_stock(&app, &admin, &product, "OUTBOUND", 10).await; // 4: crosses 5
    let (_, stock, threshold) = low(&ws.event("s").await);
    assert_eq!((stock, threshold), (4, 5));
    assert!(
        ws.drain(Duration::from_millis(300)).await.is_empty(),
        "a crossing came twice, or a movement that crossed nothing came"
    );
}

#[tokio::test]
async fn a_replay_of_all_products_past_its_bound_ends_with_events_missed_and_a_cursor_from_now() {
    let app = spawn_app_with(&[("SUBSCRIPTION_REPLAY_LIMIT", "3")]).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "ALL-B", 100).await;
    let mut ws = subscribe(&app, &admin, ALL_STREAM, None).await;
    app.wait_for_subscriptions(1).await;
    outbound(&app, &admin, &product).await;
    let (cursor, ..) = moved(&ws.event("s").await);
    drop(ws);
    for _ in 0..4 {
        outbound(&app, &admin, &product).await;
    }
    let mut ws = subscribe(&app, &admin, ALL_STREAM, Some(&cursor)).await;
    let refused = ws.next().await;
    assert_eq!(code(&refused), Some("EVENTS_MISSED"), "{refused}");
    let now = refused["payload"]["errors"][0]["extensions"]["cursor"]
        .as_str()
        .expect("the cursor to re-read from")
        .to_string();
    // From that cursor: nothing old, only what comes next.
    let mut ws = subscribe(&app, &admin, ALL_STREAM, Some(&now)).await;
    assert!(ws.drain(Duration::from_millis(300)).await.is_empty());
    outbound(&app, &admin, &product).await;
    assert_eq!(moved(&ws.event("s").await).3, 94);
}

#[tokio::test]
async fn a_cursor_of_another_stream_or_none_at_all_is_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "ALL-C", 10).await;
    let mut ws = subscribe(&app, &admin, ALL_STREAM, None).await;
    app.wait_for_subscriptions(1).await;
    outbound(&app, &admin, &product).await;
    let (movements_cursor, ..) = moved(&ws.event("s").await);
    drop(ws);
    let audits = app.count("SELECT COUNT(*) FROM audit_logs").await;
    for (query, after) in [
        (AUDIT_STREAM, movements_cursor.as_str()),
        (LOW_STREAM, movements_cursor.as_str()),
        (ALL_STREAM, "bTE6LTE"),
        (ALL_STREAM, "not a cursor"),
    ] {
        let mut ws = subscribe(&app, &admin, query, Some(after)).await;
        let m = ws.next().await;
        assert_eq!(code(&m), Some("BAD_USER_INPUT"), "{after}: {m}");
        assert_eq!(m["payload"]["errors"][0]["extensions"]["field"], "after");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_logs").await, audits);
    // The initial stock and the one movement.
    assert_eq!(app.count("SELECT COUNT(*) FROM stock_movements").await, 2);
}

/// A transaction left open elsewhere in the cluster holds PostgreSQL's
/// horizon (the oldest running transaction) below what has committed since.
/// A stream opened from now on still counts everything already committed
/// as sent, so a cursor it gives never replays what came before it.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn a_stream_from_now_on_never_replays_what_committed_before_it_while_an_old_transaction_runs()
{
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let app = spawn_app().await;
    let holder = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let old = holder.begin().await.unwrap();
    old.execute_unprepared("SELECT pg_current_xact_id()")
        .await
        .unwrap();
    let admin = app.admin_token().await;
    let a = app.create_product(&admin, "OLD-1", 100).await;
    let b = app.create_product(&admin, "OLD-2", 100).await;

    let mut ws = subscribe(&app, &admin, ALL_STREAM, None).await;
    app.wait_for_subscriptions(1).await;
    outbound(&app, &admin, &a).await;
    let (cursor, _, product, balance) = moved(&ws.event("s").await);
    assert_eq!((product == a, balance), (true, 99));
    drop(ws);
    outbound(&app, &admin, &b).await;

    let mut ws = subscribe(&app, &admin, ALL_STREAM, Some(&cursor)).await;
    let (_, _, product, balance) = moved(&ws.event("s").await);
    assert_eq!(
        (product == b, balance),
        (true, 99),
        "replayed a movement from before the stream began"
    );
    assert!(ws.drain(Duration::from_millis(300)).await.is_empty());
    old.rollback().await.unwrap();
}

/// Two instances on one PostgreSQL: a reader of instance a sees what b
/// writes, and a movement whose notification a never heard (written behind
/// the application's back, in a transaction of its own) is read back from
/// the ledger once a's listener reconnects.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn after_a_listener_reconnect_the_stream_of_all_products_catches_up_from_the_ledger() {
    let (a, b) = spawn_pair_on_one_database().await;
    let admin_a = a.admin_token().await;
    let admin_b = b.admin_token().await;
    let product = b.create_product(&admin_b, "ALL-L", 100).await;
    let mut ws = subscribe(&a, &admin_a, ALL_STREAM, None).await;
    a.wait_for_subscriptions(1).await;
    a.wait_for_listeners(2).await;
    outbound(&b, &admin_b, &product).await;
    assert_eq!(moved(&ws.event("s").await).3, 99);

    let id = uuid_eq("id", &product);
    a.exec(&format!(
        "WITH p AS (UPDATE products SET stock = stock - 1, version = version + 1 WHERE {id} RETURNING id, stock, version, created_at) \
         INSERT INTO stock_movements (id, product_id, kind, quantity, balance_after, product_version, created_at, tx) \
         SELECT gen_random_uuid(), id, 'OUTBOUND', -1, stock, version, created_at, pg_current_xact_id()::text::bigint FROM p"
    ))
    .await;
    a.kill_listeners().await;
    assert_eq!(
        moved(&ws.event("s").await).3,
        98,
        "read back from the ledger"
    );
    a.wait_for_listener_up().await;
    for _ in 0..3 {
        outbound(&b, &admin_b, &product).await;
    }
    let mut balances = Vec::new();
    for _ in 0..3 {
        balances.push(moved(&ws.event("s").await).3);
    }
    assert_eq!(balances, [97, 96, 95], "live again, once each, in order");
    assert!(ws.drain(Duration::from_millis(500)).await.is_empty());
}
