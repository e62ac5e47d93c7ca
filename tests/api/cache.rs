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

    if is_postgres() {
        // Repeated reads are served from memory: no statement runs.
        stock(&app, &admin, "CACHE-1").await;
        total(&app, &admin).await;
        let statements = app.state.db.statements_run();
        for _ in 0..5 {
            stock(&app, &admin, "CACHE-1").await;
            total(&app, &admin).await;
        }
        // The page itself is read; the count is not.
        assert_eq!(app.state.db.statements_run() - statements, 5);
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn another_instance_sees_a_change_as_soon_as_it_hears_of_it() {
    if !is_postgres() {
        // SQLite instances cannot hear each other and keep no read cache.
        return;
    }
    let (a, b) = spawn_pair_on_one_database().await;
    let admin = a.admin_token().await;
    let product = a.create_product(&admin, "CACHE-X", 50).await;
    wait_for_read_cache(&a).await;
    // Instance a caches the row, keeps the answer and gives it again.
    for _ in 0..3 {
        assert_eq!(stock(&a, &admin, "CACHE-X").await, 50);
    }
    assert_eq!(answers_reused(&a), 1);
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

/// Kept answers given again by this instance so far.
fn answers_reused(app: &TestApp) -> u64 {
    app.state
        .db
        .bus()
        .product_cache()
        .expect("the read cache is on")
        .answers_reused()
}

/// Until the instance listens for other instances' changes, the read cache
/// is bypassed.
async fn wait_for_read_cache(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.db.bus().product_cache().is_none() {
        assert!(Instant::now() < deadline, "the read cache did not come on");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An app (PostgreSQL only: SQLite keeps no read cache, so no answer is
/// kept) whose read cache is on, and the admin's token.
async fn app_with_read_cache(overrides: &[(&str, &str)]) -> Option<(TestApp, String)> {
    if !is_postgres() {
        return None;
    }
    let app = crate::helpers::spawn_app_with(overrides).await;
    wait_for_read_cache(&app).await;
    let admin = app.admin_token().await;
    Some((app, admin))
}

async fn by_sku(app: &TestApp, token: Option<&str>, sku: &str) -> crate::helpers::Gql {
    app.gql(token, BY_SKU, json!({ "s": sku })).await
}

#[tokio::test]
async fn a_one_product_answer_is_given_again_only_while_its_row_is_the_cached_one() {
    let Some((app, admin)) = app_with_read_cache(&[]).await else {
        return;
    };
    let product = app.create_product(&admin, "ANSWER-1", 10).await;
    // The first read caches the row, the second keeps its answer, the
    // third is given that answer.
    let first = by_sku(&app, Some(&admin), "ANSWER-1").await;
    assert_eq!(first.data()["productBySku"]["stock"], 10);
    by_sku(&app, Some(&admin), "ANSWER-1").await.data();
    assert_eq!(answers_reused(&app), 0);
    let third = by_sku(&app, Some(&admin), "ANSWER-1").await;
    assert_eq!(answers_reused(&app), 1);
    assert_eq!(third.data(), first.data());

    // A change replaces the row: the old answer is not given again.
    out(&app, &admin, &product, 3).await;
    assert_eq!(stock(&app, &admin, "ANSWER-1").await, 7);
    assert_eq!(answers_reused(&app), 1);
    assert_eq!(stock(&app, &admin, "ANSWER-1").await, 7);
    assert_eq!(stock(&app, &admin, "ANSWER-1").await, 7);
    assert_eq!(answers_reused(&app), 2);
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { updateProduct(id: $id, input: { name: \"Renamed\" }) { id } }",
        json!({ "id": product }),
    )
    .await
    .data();
    let named = "query($s: String!) { productBySku(sku: $s) { name version } }";
    for _ in 0..3 {
        let r = app
            .gql(Some(&admin), named, json!({ "s": "answer-1" }))
            .await;
        assert_eq!(r.data()["productBySku"]["name"], "Renamed");
    }
    assert_eq!(answers_reused(&app), 3);

    // Other variables, another answer: each gets its own. ANSWER-2's row
    // is cached by the first read, its answer kept by the second and given
    // by the third; ANSWER-1's kept answer is of the row before the rename,
    // so the first read keeps a new one, given by the next two.
    app.create_product(&admin, "ANSWER-2", 20).await;
    for _ in 0..3 {
        assert_eq!(stock(&app, &admin, "ANSWER-2").await, 20);
        assert_eq!(stock(&app, &admin, "ANSWER-1").await, 7);
    }
    assert_eq!(answers_reused(&app), 3 + 1 + 2);

    // Answers that depend on more than the row are never kept: other rows,
    // or the read of another root field.
    let reused = answers_reused(&app);
    for query in [
        "query($s: String!) { productBySku(sku: $s) { stock movements(first: 1) { totalCount } } }",
        "query($s: String!) { productBySku(sku: $s) { stock } products(first: 1) { totalCount } }",
        "query($s: String!) { productBySku(sku: $s) { ...F } } fragment F on Product { stock }",
        "query($s: String!, $x: Boolean!) { productBySku(sku: $s) { stock @include(if: $x) } }",
    ] {
        for _ in 0..3 {
            let r = app
                .gql(Some(&admin), query, json!({ "s": "ANSWER-1", "x": true }))
                .await;
            assert_eq!(r.data()["productBySku"]["stock"], 7, "{query}");
        }
    }
    assert_eq!(answers_reused(&app), reused);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_kept_answer_is_given_only_to_a_caller_allowed_to_read_it() {
    let Some((app, admin)) = app_with_read_cache(&[("PASSWORD_MAX_AGE_DAYS", "30")]).await else {
        return;
    };
    app.create_product(&admin, "ANSWER-SEC", 5).await;
    let (viewer_id, viewer) = app.user_with_role(&admin, "VIEWER").await;
    let (expired_id, expired) = app.user_with_role(&admin, "STAFF").await;
    for _ in 0..3 {
        by_sku(&app, Some(&admin), "ANSWER-SEC").await.data();
    }
    assert_eq!(answers_reused(&app), 1);

    // A viewer may read products: it is given the kept answer.
    let r = by_sku(&app, Some(&viewer), "ANSWER-SEC").await;
    assert_eq!(r.data()["productBySku"]["stock"], 5);
    assert_eq!(answers_reused(&app), 2);

    // Nobody, a forged token, a deactivated user, and a restricted one
    // get their errors, not the answer.
    by_sku(&app, None, "ANSWER-SEC")
        .await
        .expect_code("UNAUTHENTICATED");
    by_sku(&app, Some("not.a.token"), "ANSWER-SEC")
        .await
        .expect_code("UNAUTHENTICATED");
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { updateUser(id: $id, input: { isActive: false }) { isActive } }",
        json!({ "id": viewer_id }),
    )
    .await
    .data();
    by_sku(&app, Some(&viewer), "ANSWER-SEC")
        .await
        .expect_code("UNAUTHENTICATED");
    app.exec(&format!(
        "UPDATE users SET password_changed_at = now() - interval '31 days' WHERE id = '{expired_id}'"
    ))
    .await;
    app.state.auth.users.invalidate_all();
    by_sku(&app, Some(&expired), "ANSWER-SEC")
        .await
        .expect_code("PASSWORD_CHANGE_REQUIRED");
    assert_eq!(answers_reused(&app), 2);
    app.shutdown().await.unwrap();
}

/// The raw answer: status, content type and body text.
async fn raw(app: &TestApp, token: &str, body: serde_json::Value) -> (u16, String, String) {
    let resp = app
        .client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        resp.status().as_u16(),
        content_type,
        resp.text().await.unwrap(),
    )
}

#[tokio::test]
async fn a_kept_answer_is_the_same_http_answer_and_only_for_the_same_request() {
    let Some((app, admin)) = app_with_read_cache(&[]).await else {
        return;
    };
    app.create_product(&admin, "ANSWER-RAW", 3).await;

    // Rendered by the resolver, then kept, then given again: the same bytes
    // and content type each time.
    let request = json!({ "query": BY_SKU, "variables": { "s": "ANSWER-RAW" } });
    let fresh = raw(&app, &admin, request.clone()).await;
    let kept = raw(&app, &admin, request.clone()).await;
    let reused = raw(&app, &admin, request.clone()).await;
    assert_eq!(answers_reused(&app), 1);
    assert_eq!(fresh.0, 200);
    assert_eq!(fresh, kept);
    assert_eq!(fresh, reused);

    // A literal SKU is kept too (the row is cached already: the first read
    // keeps, the next two are given the answer).
    let literal = "{ productBySku(sku: \"answer-raw\") { stock } }";
    for _ in 0..3 {
        let r = app.gql(Some(&admin), literal, json!({})).await;
        assert_eq!(r.data()["productBySku"]["stock"], 3);
    }
    assert_eq!(answers_reused(&app), 3);

    // An operation name for an anonymous operation is refused, as it is
    // without a kept answer; a named operation has its own answer.
    for name in ["", "Other"] {
        let r = raw(
            &app,
            &admin,
            json!({ "query": BY_SKU, "variables": { "s": "ANSWER-RAW" }, "operationName": name }),
        )
        .await;
        assert!(r.2.contains("Unknown operation named"), "{name:?}: {}", r.2);
    }
    let named = "query Probe($s: String!) { productBySku(sku: $s) { id stock version } }";
    for _ in 0..3 {
        let r = raw(
            &app,
            &admin,
            json!({ "query": named, "variables": { "s": "ANSWER-RAW" }, "operationName": "Probe" }),
        )
        .await;
        assert!(r.2.contains("\"stock\":3"), "{}", r.2);
    }
    assert_eq!(answers_reused(&app), 5);

    // A SKU taken from a variable's default is not kept (the key holds the
    // variables sent); unused variables make another key.
    let defaulted = "query($s: String! = \"ANSWER-RAW\") { productBySku(sku: $s) { stock } }";
    for _ in 0..3 {
        let r = app.gql(Some(&admin), defaulted, json!({})).await;
        assert_eq!(r.data()["productBySku"]["stock"], 3);
    }
    assert_eq!(answers_reused(&app), 5);
    for _ in 0..3 {
        let r = app
            .gql(
                Some(&admin),
                BY_SKU,
                json!({ "s": "ANSWER-RAW", "unused": 1 }),
            )
            .await;
        assert_eq!(r.data()["productBySku"]["stock"], 3);
    }
    assert_eq!(answers_reused(&app), 7);
    app.shutdown().await.unwrap();
}
