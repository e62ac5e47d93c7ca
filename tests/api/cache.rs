//! The product read cache (PostgreSQL): a write is seen by the next read on
//! the same instance, other instances see it once they hear of it, and reads
//! racing writes never leave an old row behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, is_postgres, spawn_app, spawn_pair_on_one_database};

const BY_SKU: &str = "query($s: String!) { productBySku(sku: $s) { id stock version } }";
const TOTAL: &str = "{ products(first: 1) { totalCount } }";

async fn stock(app: &TestApp, token: &str, sku: &str) -> i64 {
    let r = app.gql(Some(token), BY_SKU, json!({ "s": sku })).await;
    r.data()["productBySku"]["stock"].as_i64().unwrap()
}

async fn total(app: &TestApp, token: &str) -> i64 {
    let r = app.gql(Some(token), TOTAL, json!({})).await;
    r.data()["products"]["totalCount"].as_i64().unwrap()
}

async fn out(app: &TestApp, token: &str, product: &str, quantity: i64) {
    app.record_movement(
        token,
        json!({ "productId": product, "kind": "OUTBOUND", "quantity": quantity }),
    )
    .await
    .data();
}

#[tokio::test]
async fn a_write_is_seen_by_the_next_read_on_the_instance_that_made_it() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "CACHE-1", 100).await;
    assert_eq!(stock(&app, &admin, "CACHE-1").await, 100);
    for i in 1..=10 {
        out(&app, &admin, &product, 1).await;
        assert_eq!(stock(&app, &admin, "cache-1").await, 100 - i);
    }
    let before = total(&app, &admin).await;
    let second = app.create_product(&admin, "CACHE-2", 0).await;
    assert_eq!(total(&app, &admin).await, before + 1);
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { deleteProduct(id: $id) { id } }",
        json!({ "id": second }),
    )
    .await
    .data();
    assert_eq!(total(&app, &admin).await, before);
    // An update is seen too.
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { updateProduct(id: $id, input: { lowStockThreshold: 7 }) { id } }",
        json!({ "id": product }),
    )
    .await
    .data();
    let r = app
        .gql(
            Some(&admin),
            "query($s: String!) { productBySku(sku: $s) { lowStockThreshold } }",
            json!({ "s": "CACHE-1" }),
        )
        .await;
    assert_eq!(r.data()["productBySku"]["lowStockThreshold"], 7);
    app.shutdown().await.unwrap();
}

/// With the read cache on (SQLite keeps none), repeated reads run no
/// statement for the row or the count, and a write is still seen.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn repeated_reads_are_served_from_memory_and_a_write_is_still_seen() {
    let (app, admin) = app_with_read_cache(&[]).await;
    let product = app.create_product(&admin, "CACHE-1", 100).await;
    // Repeated reads are served from memory: no statement runs.
    stock(&app, &admin, "CACHE-1").await;
    total(&app, &admin).await;
    let statements = app.state.services.statements_run();
    for _ in 0..5 {
        stock(&app, &admin, "CACHE-1").await;
        total(&app, &admin).await;
    }
    // The page itself is read; the count is not.
    assert_eq!(app.state.services.statements_run() - statements, 5);
    // With the cache surely on, a write is still seen by the next read.
    out(&app, &admin, &product, 1).await;
    assert_eq!(stock(&app, &admin, "CACHE-1").await, 99);
    app.shutdown().await.unwrap();
}

/// A notification the listener cannot read may have been a change: the
/// cache is dropped, and the next read goes to the database.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn an_unreadable_notification_empties_the_read_cache() {
    let (app, admin) = app_with_read_cache(&[]).await;
    app.create_product(&admin, "CACHE-U", 10).await;
    assert_eq!(stock(&app, &admin, "CACHE-U").await, 10);
    // A change nobody is told of (as if its notification were the one
    // lost): the cache still answers what it holds.
    let changed = app
        .count("WITH u AS (UPDATE products SET stock = 42 WHERE sku = 'CACHE-U' RETURNING 1) SELECT COUNT(*) FROM u")
        .await;
    assert_eq!(changed, 1);
    assert_eq!(
        stock(&app, &admin, "CACHE-U").await,
        10,
        "served from the cache"
    );
    app.count("SELECT COUNT(pg_notify('stockroom_events', '{\"o\": 1}'))")
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while stock(&app, &admin, "CACHE-U").await != 42 {
        assert!(Instant::now() < deadline, "the cache was kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.shutdown().await.unwrap();
}

/// PostgreSQL only: SQLite instances cannot hear each other and keep no read
/// cache.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn another_instance_sees_a_change_as_soon_as_it_hears_of_it() {
    let (a, b) = spawn_pair_on_one_database().await;
    let admin = a.admin_token().await;
    let product = a.create_product(&admin, "CACHE-X", 50).await;
    wait_for_read_cache(&a).await;
    // Instance a caches the row.
    for _ in 0..3 {
        assert_eq!(stock(&a, &admin, "CACHE-X").await, 50);
    }
    let before = total(&a, &admin).await;
    out(&b, &admin, &product, 5).await;
    b.create_product(&admin, "CACHE-Y", 1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, t) = (stock(&a, &admin, "CACHE-X").await, total(&a, &admin).await);
        if s == 45 && t == before + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instance a still answers stock {s}, total {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn reads_racing_writes_never_leave_an_old_row_in_the_cache() {
    let app = Arc::new(spawn_app().await);
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "CACHE-RACE", 1000).await;
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (app, admin) = (app.clone(), admin.clone());
            tokio::spawn(async move {
                for _ in 0..60 {
                    stock(&app, &admin, "CACHE-RACE").await;
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (app, admin, product) = (app.clone(), admin.clone(), product.clone());
            tokio::spawn(async move {
                for _ in 0..15 {
                    out(&app, &admin, &product, 1).await;
                }
            })
        })
        .collect();
    for t in readers.into_iter().chain(writers) {
        t.await.unwrap();
    }
    // Every read from now on answers the committed stock.
    for _ in 0..5 {
        assert_eq!(stock(&app, &admin, "CACHE-RACE").await, 1000 - 60);
    }
    app.ledger_is_clean().await;
}

/// Until the instance listens for other instances' changes, the read cache
/// is bypassed.
async fn wait_for_read_cache(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.services.product_cache().is_none() {
        assert!(Instant::now() < deadline, "the read cache did not come on");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An app (PostgreSQL only: SQLite keeps no read cache) whose read cache is
/// on, and the admin's token.
async fn app_with_read_cache(overrides: &[(&str, &str)]) -> (TestApp, String) {
    assert!(is_postgres(), "SQLite keeps no read cache");
    let app = crate::helpers::spawn_app_with(overrides).await;
    wait_for_read_cache(&app).await;
    let admin = app.admin_token().await;
    (app, admin)
}
