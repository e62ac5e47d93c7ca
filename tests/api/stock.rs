use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::helpers::{TestApp, is_postgres, spawn_app, stockroom_bin};

#[tokio::test]
async fn fifty_racing_outbounds_never_oversell() {
    let app = Arc::new(spawn_app().await);
    let admin = app.admin_token().await;
    let (_, staff) = app.user_with_role(&admin, "STAFF").await;
    let product = app.create_product(&admin, "RACE-1", 100).await;

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, staff, product) = (app.clone(), staff.clone(), product.clone());
        tasks.push(tokio::spawn(async move {
            app.record_movement(
                &staff,
                json!({ "productId": product, "kind": "OUTBOUND", "quantity": 3 }),
            )
            .await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.error_code() {
            None => ok += 1,
            Some("INSUFFICIENT_STOCK") => refused += 1,
            other => panic!("unexpected outcome {other:?}: {}", r.body),
        }
    }
    assert_eq!((ok, refused), (33, 17));
    assert_eq!(app.product(&admin, &product).await["stock"], 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements WHERE kind = 'OUTBOUND'")
            .await,
        33
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_logs WHERE action = 'STOCK_OUTBOUND'")
            .await,
        33
    );
    app.ledger_is_clean().await;
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test]
async fn two_hundred_mixed_racing_movements_keep_every_ledger_exact() {
    let app = Arc::new(spawn_app().await);
    let admin = app.admin_token().await;
    let (_, staff) = app.user_with_role(&admin, "STAFF").await;
    let mut products = Vec::new();
    for i in 0..5 {
        products.push(app.create_product(&admin, &format!("MIX-{i}"), 20).await);
    }
    let mut rng = Lcg(42);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let product = products[rng.next(5) as usize].clone();
        let (kind, quantity) = match rng.next(3) {
            0 => ("INBOUND", 1 + rng.next(5) as i64),
            1 => ("OUTBOUND", 1 + rng.next(8) as i64),
            _ => {
                let q = rng.next(13) as i64 - 8;
                ("ADJUSTMENT", if q == 0 { -1 } else { q })
            }
        };
        let (app, staff) = (app.clone(), staff.clone());
        tasks.push(tokio::spawn(async move {
            let r = app
                .record_movement(
                    &staff,
                    json!({ "productId": product, "kind": kind, "quantity": quantity }),
                )
                .await;
            (product, r)
        }));
    }
    let mut applied: HashMap<String, i64> = HashMap::new();
    let mut refused = 0;
    for t in tasks {
        let (product, r) = t.await.unwrap();
        match r.error_code() {
            None => {
                let q = r.data()["recordStockMovement"]["quantity"]
                    .as_i64()
                    .unwrap();
                *applied.entry(product).or_default() += q;
            }
            Some("INSUFFICIENT_STOCK") => refused += 1,
            other => panic!("unexpected outcome {other:?}: {}", r.body),
        }
    }
    assert!(refused > 0, "the mix should run some products dry");
    for product in &products {
        let stock = app.product(&admin, product).await["stock"]
            .as_i64()
            .unwrap();
        assert_eq!(
            stock,
            20 + applied.get(product).copied().unwrap_or(0),
            "product {product}"
        );
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements WHERE balance_after < 0")
            .await,
        0
    );
    app.ledger_is_clean().await;
}

#[tokio::test]
async fn one_idempotency_key_applies_once_even_when_racing() {
    let app = Arc::new(spawn_app().await);
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "IDEM-1", 10).await;
    let input = json!({ "productId": product, "kind": "INBOUND", "quantity": 4, "idempotencyKey": "po-778" });
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app, admin, input) = (app.clone(), admin.clone(), input.clone());
        tasks.push(tokio::spawn(async move {
            app.record_movement(&admin, input).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        ids.push(
            r.data()["recordStockMovement"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every request returns the same movement");
    assert_eq!(app.product(&admin, &product).await["stock"], 14);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements WHERE idempotency_key = 'po-778'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_logs WHERE action = 'STOCK_INBOUND'")
            .await,
        2,
        "initial stock + one applied movement"
    );

    let different = json!({ "productId": product, "kind": "INBOUND", "quantity": 5, "idempotencyKey": "po-778" });
    app.record_movement(&admin, different)
        .await
        .expect_code("CONFLICT");
    assert_eq!(app.product(&admin, &product).await["stock"], 14);
}

#[tokio::test]
async fn refused_movements_write_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "REF-1", 10).await;
    let archived = app.create_product(&admin, "REF-ARCH", 5).await;
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { deleteProduct(id: $id) { id } }",
        json!({ "id": archived }),
    )
    .await
    .data();
    let movements_before = app.count("SELECT COUNT(*) FROM stock_movements").await;
    let audit_before = app.count("SELECT COUNT(*) FROM audit_logs").await;
    let version_before = app.product(&admin, &product).await["version"].clone();

    let bad: Vec<(Value, &str, Option<&str>)> = vec![
        (
            json!({ "productId": product, "kind": "INBOUND", "quantity": 0 }),
            "BAD_USER_INPUT",
            Some("quantity"),
        ),
        (
            json!({ "productId": product, "kind": "RETURN", "quantity": -2 }),
            "BAD_USER_INPUT",
            Some("quantity"),
        ),
        (
            json!({ "productId": product, "kind": "OUTBOUND", "quantity": -1 }),
            "BAD_USER_INPUT",
            Some("quantity"),
        ),
        (
            json!({ "productId": product, "kind": "ADJUSTMENT", "quantity": 0 }),
            "BAD_USER_INPUT",
            Some("quantity"),
        ),
        (
            json!({ "productId": product, "kind": "INBOUND", "quantity": 1, "note": "n".repeat(501) }),
            "BAD_USER_INPUT",
            Some("note"),
        ),
        (
            json!({ "productId": product, "kind": "INBOUND", "quantity": 1, "reference": "r".repeat(101) }),
            "BAD_USER_INPUT",
            Some("reference"),
        ),
        (
            json!({ "productId": product, "kind": "INBOUND", "quantity": 1, "idempotencyKey": " " }),
            "BAD_USER_INPUT",
            Some("idempotencyKey"),
        ),
        (
            json!({ "productId": product, "kind": "INBOUND", "quantity": 2147483647 }),
            "BAD_USER_INPUT",
            Some("quantity"),
        ),
        (
            json!({ "productId": "nope", "kind": "INBOUND", "quantity": 1 }),
            "BAD_USER_INPUT",
            Some("productId"),
        ),
        (
            json!({ "productId": uuid::Uuid::now_v7().to_string(), "kind": "INBOUND", "quantity": 1 }),
            "NOT_FOUND",
            None,
        ),
        (
            json!({ "productId": archived, "kind": "INBOUND", "quantity": 1 }),
            "NOT_FOUND",
            None,
        ),
        (
            json!({ "productId": product, "kind": "OUTBOUND", "quantity": 11 }),
            "INSUFFICIENT_STOCK",
            None,
        ),
        (
            json!({ "productId": product, "kind": "ADJUSTMENT", "quantity": -11 }),
            "INSUFFICIENT_STOCK",
            None,
        ),
    ];
    for (input, code, field) in bad {
        let r = app.record_movement(&admin, input.clone()).await;
        let err = r.expect_code(code);
        if let Some(field) = field {
            assert_eq!(err["extensions"]["field"], field, "input {input}");
        }
        if code == "INSUFFICIENT_STOCK" {
            assert_eq!(err["extensions"]["available"], 10);
            assert_eq!(err["extensions"]["requested"], 11);
        }
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements").await,
        movements_before
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_logs").await,
        audit_before
    );
    let after = app.product(&admin, &product).await;
    assert_eq!(after["version"], version_before);
    assert_eq!(after["stock"], 10);
}

#[tokio::test]
async fn each_kind_moves_stock_by_its_signed_quantity() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "KIND-1", 10).await;
    for (kind, quantity, signed, balance) in [
        ("INBOUND", 5, 5, 15),
        ("OUTBOUND", 3, -3, 12),
        ("RETURN", 2, 2, 14),
        ("ADJUSTMENT", -4, -4, 10),
        ("ADJUSTMENT", 1, 1, 11),
    ] {
        let r = app
            .record_movement(&admin, json!({ "productId": product, "kind": kind, "quantity": quantity, "reference": "PO-1" }))
            .await;
        let m = &r.data()["recordStockMovement"];
        assert_eq!(m["quantity"], signed, "{kind}");
        assert_eq!(m["balanceAfter"], balance, "{kind}");
        assert_eq!(m["product"]["stock"], balance);
        assert!(m["createdBy"]["id"].is_string());
    }
    let outbound_to_zero = app
        .record_movement(
            &admin,
            json!({ "productId": product, "kind": "OUTBOUND", "quantity": 11 }),
        )
        .await;
    assert_eq!(
        outbound_to_zero.data()["recordStockMovement"]["balanceAfter"],
        0
    );
    app.ledger_is_clean().await;
}

#[tokio::test]
async fn initial_stock_is_an_inbound_movement_and_lists_newest_first() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "INIT-1", 7).await;
    app.record_movement(
        &admin,
        json!({ "productId": product, "kind": "OUTBOUND", "quantity": 2 }),
    )
    .await
    .data();
    let r = app
        .gql(
            Some(&admin),
            "query($id: ID!) { product(id: $id) { stock movements(first: 10) { totalCount nodes { kind quantity balanceAfter createdBy { email } product { id } } } } }",
            json!({ "id": product }),
        )
        .await;
    let p = &r.data()["product"];
    assert_eq!(p["stock"], 5);
    let nodes = p["movements"]["nodes"].as_array().unwrap();
    assert_eq!(p["movements"]["totalCount"], 2);
    assert_eq!(nodes[0]["kind"], "OUTBOUND");
    assert_eq!(nodes[1]["kind"], "INBOUND");
    assert_eq!(nodes[1]["quantity"], 7);
    assert_eq!(nodes[1]["balanceAfter"], 7);
    assert_eq!(nodes[1]["createdBy"]["email"], crate::helpers::ADMIN_EMAIL);
    assert_eq!(nodes[1]["product"]["id"], product.as_str());

    let filtered = app
        .gql(
            Some(&admin),
            "query($f: StockMovementFilter) { stockMovements(filter: $f) { totalCount nodes { kind } } }",
            json!({ "f": { "productId": product, "kind": "INBOUND" } }),
        )
        .await;
    assert_eq!(filtered.data()["stockMovements"]["totalCount"], 1);
}

#[tokio::test]
async fn a_failure_after_the_stock_update_rolls_everything_back() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "FAIL-1", 10).await;
    if is_postgres() {
        app.exec(
            "CREATE FUNCTION fail_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit store down'; END $$ LANGUAGE plpgsql",
        )
        .await;
        app.exec("CREATE TRIGGER fail_audit BEFORE INSERT ON audit_logs FOR EACH ROW EXECUTE FUNCTION fail_audit()")
            .await;
    } else {
        app.exec(
            "CREATE TRIGGER fail_audit BEFORE INSERT ON audit_logs BEGIN SELECT RAISE(ABORT, 'audit store down'); END",
        )
        .await;
    }
    let r = app
        .record_movement(
            &admin,
            json!({ "productId": product, "kind": "OUTBOUND", "quantity": 4 }),
        )
        .await;
    let err = r.expect_code("INTERNAL");
    assert!(
        !err["message"]
            .as_str()
            .unwrap()
            .contains("audit store down"),
        "cause is hidden"
    );
    app.exec(if is_postgres() {
        "DROP TRIGGER fail_audit ON audit_logs"
    } else {
        "DROP TRIGGER fail_audit"
    })
    .await;
    let p = app.product(&admin, &product).await;
    assert_eq!(p["stock"], 10);
    assert_eq!(p["version"], 2, "only the initial-stock movement bumped it");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements WHERE kind = 'OUTBOUND'")
            .await,
        0
    );
}

#[tokio::test]
async fn verify_ledger_finds_drift_and_exits_1() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "LEDGER-OK", 3).await;
    let drifting = app.create_product(&admin, "LEDGER-BAD", 10).await;
    app.record_movement(
        &admin,
        json!({ "productId": drifting, "kind": "OUTBOUND", "quantity": 4 }),
    )
    .await
    .data();

    let clean = stockroom_bin()
        .arg("verify-ledger")
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );

    app.exec("UPDATE products SET stock = stock + 5 WHERE sku = 'LEDGER-BAD'")
        .await;
    let drift = stockroom_bin()
        .arg("verify-ledger")
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
    assert_eq!(drift.status.code(), Some(1));
    let out = String::from_utf8_lossy(&drift.stdout);
    assert!(out.contains("LEDGER-BAD"), "{out}");
    assert!(!out.contains("LEDGER-OK"), "{out}");

    // A broken balance chain is found even when the sum still matches.
    app.exec("UPDATE products SET stock = stock - 5 WHERE sku = 'LEDGER-BAD'")
        .await;
    app.exec(
        "UPDATE stock_movements SET balance_after = balance_after + 1 WHERE kind = 'OUTBOUND'",
    )
    .await;
    let (_, drift) = stockroom::service::stock::verify_ledger(app.state.services.conn())
        .await
        .unwrap();
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0].sku, "LEDGER-BAD");
    assert!(drift[0].broken_links > 0);
}

#[tokio::test]
async fn products_listed_with_their_movements_get_their_own_pages() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut expected = HashMap::new();
    for i in 0..4 {
        let id = app.create_product(&admin, &format!("LIST-{i}"), 10).await;
        for _ in 0..i {
            app.record_movement(
                &admin,
                json!({ "productId": id, "kind": "OUTBOUND", "quantity": 1 }),
            )
            .await
            .data();
        }
        expected.insert(id, i + 1);
    }
    let r = app
        .gql(
            Some(&admin),
            "{ products(first: 10) { nodes { id stock movements(first: 2) { totalCount pageInfo { hasNextPage } nodes { kind balanceAfter product { id } } } } } }",
            json!({}),
        )
        .await;
    for p in r.data()["products"]["nodes"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        let total = expected[id];
        let movements = &p["movements"];
        assert_eq!(movements["totalCount"], total, "{id}");
        assert_eq!(movements["pageInfo"]["hasNextPage"], total > 2);
        let nodes = movements["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), total.min(2) as usize);
        assert_eq!(nodes[0]["balanceAfter"], p["stock"], "newest first");
        assert!(nodes.iter().all(|n| n["product"]["id"] == id));
    }
}

#[tokio::test]
async fn racing_replays_of_an_outbound_that_empties_stock_all_get_the_first_movement() {
    // More racers than pooled connections, and an outbound that uses up the
    // stock: a replay must not see INSUFFICIENT_STOCK, nor starve the pool.
    // The race only exists on PostgreSQL (SQLite serializes writers, so the
    // lookup inside the transaction always sees the first movement there).
    let app = Arc::new(spawn_app().await);
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "IDEM-OUT", 3).await;
    let input = json!({ "productId": product, "kind": "OUTBOUND", "quantity": 3, "idempotencyKey": "so-1" });
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let (app, admin, input) = (app.clone(), admin.clone(), input.clone());
        tasks.push(tokio::spawn(async move {
            app.record_movement(&admin, input).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        ids.insert(
            r.data()["recordStockMovement"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(app.product(&admin, &product).await["stock"], 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements WHERE kind = 'OUTBOUND'")
            .await,
        1
    );
    app.ledger_is_clean().await;
}

#[tokio::test]
async fn a_quantity_beyond_32_bits_names_the_field() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "BIG-1", 0).await;
    let r = app
        .record_movement(
            &admin,
            json!({ "productId": product, "kind": "INBOUND", "quantity": 3_000_000_000i64 }),
        )
        .await;
    let err = r.expect_code("BAD_USER_INPUT");
    assert_eq!(err["extensions"]["field"], "quantity", "{err}");
    let inline = app
        .gql(
            Some(&admin),
            &format!("mutation {{ recordStockMovement(input: {{ productId: \"{product}\", kind: INBOUND, quantity: 3000000000 }}) {{ id }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(
        inline.expect_code("BAD_USER_INPUT")["extensions"]["field"],
        "quantity"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM stock_movements").await, 0);
}

/// Statements one query costs, read from the pool's own counter.
async fn statements_for(app: &TestApp, token: &str, query: &str) -> u64 {
    let before = app.state.services.statements_run();
    app.gql(Some(token), query, json!({})).await.data();
    app.state.services.statements_run() - before
}

#[tokio::test]
async fn relation_fields_cost_the_same_queries_for_5_rows_as_for_40() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    // Warm the user cache so authentication costs nothing in either count.
    app.gql(Some(&admin), "{ me { id } }", json!({}))
        .await
        .data();
    let movements =
        "{ stockMovements(first: 100) { nodes { id product { sku } createdBy { email } } } }";
    let products = "{ products(first: 100) { nodes { sku movements(first: 3) { totalCount nodes { createdBy { email } } } } } }";
    let audit = "{ auditLogs(first: 100) { nodes { id actor { email } } } }";

    for i in 0..5 {
        app.create_product(&admin, &format!("NPLUS-{i}"), 1).await;
    }
    let small = (
        statements_for(&app, &admin, movements).await,
        statements_for(&app, &admin, products).await,
        statements_for(&app, &admin, audit).await,
    );
    for i in 5..40 {
        app.create_product(&admin, &format!("NPLUS-{i}"), 1).await;
    }
    let large = (
        statements_for(&app, &admin, movements).await,
        statements_for(&app, &admin, products).await,
        statements_for(&app, &admin, audit).await,
    );
    // A loader batch splits when its rows resolve over more than its 1 ms
    // window, which a busy machine does (two nested loaders: a few extra
    // statements); a query per row would add 35 or more per listing.
    let grew = |s: u64, l: u64| l <= s + 5;
    assert!(
        grew(small.0, large.0) && grew(small.1, large.1) && grew(small.2, large.2),
        "statements for 5 rows {small:?} vs 40 rows {large:?}"
    );
    assert!(large.0 <= 8 && large.1 <= 10 && large.2 <= 6, "{large:?}");
}

/// Movements racing without idempotency keys are committed in groups: each
/// request still gets the answer it would get alone (its own movement, its
/// own refusal), written under its own user.
#[tokio::test]
async fn group_commits_answer_each_movement_as_if_it_ran_alone() {
    let app = Arc::new(spawn_app().await);
    let admin = app.admin_token().await;
    let (alice_id, alice) = app.user_with_role(&admin, "STAFF").await;
    let (bob_id, bob) = app.user_with_role(&admin, "STAFF").await;
    let scarce = app.create_product(&admin, "GROUP-SCARCE", 5).await;
    let plenty = app.create_product(&admin, "GROUP-PLENTY", 1000).await;
    let gone = app.create_product(&admin, "GROUP-GONE", 10).await;
    let r = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { deleteProduct(id: $id) { id } }",
            json!({ "id": gone }),
        )
        .await;
    assert!(r.error_code().is_none(), "{}", r.body);

    let mut tasks = Vec::new();
    for i in 0..90 {
        let (user, token) = if i % 2 == 0 {
            (alice_id.clone(), alice.clone())
        } else {
            (bob_id.clone(), bob.clone())
        };
        let (product, kind, quantity) = match i % 3 {
            0 => (scarce.clone(), "OUTBOUND", 1),
            1 => (plenty.clone(), "INBOUND", 2),
            _ => (gone.clone(), "OUTBOUND", 1),
        };
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let r = app
                .record_movement(
                    &token,
                    json!({ "productId": product, "kind": kind, "quantity": quantity, "reference": format!("req-{i}") }),
                )
                .await;
            (i, user, r)
        }));
    }
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let (i, user, r) = t.await.unwrap();
        let expected = match i % 3 {
            0 => None, // scarce: 5 of 30 get through
            1 => Some(None),
            _ => Some(Some("NOT_FOUND")),
        };
        match (expected, r.error_code()) {
            (Some(want), got) => assert_eq!(got, want, "request {i}: {}", r.body),
            (None, None | Some("INSUFFICIENT_STOCK")) => {}
            (None, other) => panic!("request {i}: unexpected {other:?}: {}", r.body),
        }
        *outcomes
            .entry(r.error_code().unwrap_or("ok").to_string())
            .or_default() += 1;
        if r.error_code().is_none() {
            let m = &r.data()["recordStockMovement"];
            assert_eq!(m["createdBy"]["id"], user.as_str(), "request {i}");
            let id = m["id"].as_str().unwrap();
            let written = app
                .count(&format!(
                    "SELECT COUNT(*) FROM stock_movements m JOIN audit_logs a ON a.entity_id = '{id}' \
                     WHERE m.reference = 'req-{i}' AND {} AND {} AND {}",
                    crate::helpers::uuid_eq("m.id", id),
                    crate::helpers::uuid_eq("m.created_by", &user),
                    crate::helpers::uuid_eq("a.actor_id", &user),
                ))
                .await;
            assert_eq!(
                written, 1,
                "request {i}: its own ledger and audit rows, under its user"
            );
        }
    }
    assert_eq!(outcomes.get("ok"), Some(&35), "{outcomes:?}");
    assert_eq!(
        outcomes.get("INSUFFICIENT_STOCK"),
        Some(&25),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.get("NOT_FOUND"), Some(&30), "{outcomes:?}");
    assert_eq!(app.product(&admin, &scarce).await["stock"], 0);
    assert_eq!(app.product(&admin, &plenty).await["stock"], 1060);
    // Nothing was written for the refusals: the initial stock of three
    // products plus the 35 that got through.
    assert_eq!(app.count("SELECT COUNT(*) FROM stock_movements").await, 38);
    // Grouped: movements of one transaction share their timestamp.
    let moments = app
        .count(
            "SELECT COUNT(DISTINCT created_at) FROM stock_movements WHERE reference LIKE 'req-%'",
        )
        .await;
    assert!(
        moments < 35,
        "no two movements were committed together ({moments} commits)"
    );
    app.ledger_is_clean().await;
}

/// A group whose transaction fails is rolled back whole and its movements
/// are retried one by one: only the movement that fails on its own fails.
#[tokio::test]
async fn a_failed_group_commit_retries_its_movements_one_by_one() {
    let app = Arc::new(spawn_app().await);
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "GROUP-RETRY", 1000).await;
    if is_postgres() {
        app.exec(
            "CREATE FUNCTION fail_seven() RETURNS trigger AS $$ BEGIN \
             IF NEW.quantity = 7 THEN RAISE EXCEPTION 'ledger store down'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
        )
        .await;
        app.exec("CREATE TRIGGER fail_seven BEFORE INSERT ON stock_movements FOR EACH ROW EXECUTE FUNCTION fail_seven()")
            .await;
    } else {
        app.exec(
            "CREATE TRIGGER fail_seven BEFORE INSERT ON stock_movements WHEN NEW.quantity = 7 \
             BEGIN SELECT RAISE(ABORT, 'ledger store down'); END",
        )
        .await;
    }
    let mut tasks = Vec::new();
    for i in 0..40 {
        let quantity = if i % 10 == 3 { 7 } else { 1 };
        let (app, admin, product) = (app.clone(), admin.clone(), product.clone());
        tasks.push(tokio::spawn(async move {
            let r = app
                .record_movement(
                    &admin,
                    json!({ "productId": product, "kind": "INBOUND", "quantity": quantity }),
                )
                .await;
            (quantity, r)
        }));
    }
    for t in tasks {
        let (quantity, r) = t.await.unwrap();
        if quantity == 7 {
            r.expect_code("INTERNAL");
        } else {
            assert!(r.error_code().is_none(), "{}", r.body);
        }
    }
    assert_eq!(app.product(&admin, &product).await["stock"], 1036);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements WHERE quantity = 7")
            .await,
        0
    );
    app.ledger_is_clean().await;
}
