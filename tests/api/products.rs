use std::collections::HashSet;

use serde_json::json;

use crate::helpers::spawn_app;

const CREATE: &str = "mutation($i: CreateProductInput!) { createProduct(input: $i) { id sku name description category unit stock lowStockThreshold isLowStock version archivedAt } }";
const UPDATE: &str = "mutation($id: ID!, $i: UpdateProductInput!, $v: Int) { updateProduct(id: $id, input: $i, expectedVersion: $v) { id name category lowStockThreshold version } }";
const DELETE: &str = "mutation($id: ID!) { deleteProduct(id: $id) { id archivedAt version } }";
const LIST: &str = "query($first: Int, $after: String, $f: ProductFilter) { products(first: $first, after: $after, filter: $f) { totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id sku } } nodes { id sku stock } } }";

#[tokio::test]
async fn product_crud_round_trip() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let created = app
        .gql(
            Some(&admin),
            CREATE,
            json!({ "i": { "sku": "  WID-001 ", "name": "Widget", "description": "A widget", "category": "parts", "unit": "box", "lowStockThreshold": 5 } }),
        )
        .await;
    let p = &created.data()["createProduct"];
    assert_eq!(p["sku"], "WID-001", "sku is trimmed");
    assert_eq!(p["unit"], "box");
    assert_eq!(p["stock"], 0);
    assert_eq!(p["version"], 1);
    assert_eq!(p["isLowStock"], true);
    let id = p["id"].as_str().unwrap();

    let by_sku = app
        .gql(
            Some(&admin),
            "{ productBySku(sku: \"wid-001\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(by_sku.data()["productBySku"]["id"], id);

    let updated = app
        .gql(
            Some(&admin),
            UPDATE,
            json!({ "id": id, "i": { "name": "Widget v2", "category": "tools" }, "v": 1 }),
        )
        .await;
    let u = &updated.data()["updateProduct"];
    assert_eq!(u["name"], "Widget v2");
    assert_eq!(u["category"], "tools");
    assert_eq!(u["version"], 2);

    let deleted = app.gql(Some(&admin), DELETE, json!({ "id": id })).await;
    assert!(deleted.data()["deleteProduct"]["archivedAt"].is_string());

    let listed = app.gql(Some(&admin), LIST, json!({})).await;
    assert_eq!(
        listed.data()["products"]["totalCount"],
        0,
        "archived products are hidden"
    );
    let with_archived = app
        .gql(
            Some(&admin),
            LIST,
            json!({ "f": { "includeArchived": true } }),
        )
        .await;
    assert_eq!(with_archived.data()["products"]["totalCount"], 1);
    let still_there = app.product(&admin, id).await;
    assert!(still_there["archivedAt"].is_string());

    app.gql(Some(&admin), DELETE, json!({ "id": id }))
        .await
        .expect_code("NOT_FOUND");
}

#[tokio::test]
async fn duplicate_sku_in_another_case_is_a_conflict() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "ABC-1", 0).await;
    let r = app
        .gql(
            Some(&admin),
            CREATE,
            json!({ "i": { "sku": "abc-1", "name": "Other" } }),
        )
        .await;
    r.expect_code("CONFLICT");
    assert!(
        !r.error()["message"]
            .as_str()
            .unwrap()
            .contains("constraint"),
        "no SQL leaks: {}",
        r.body
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM products").await, 1);
}

#[tokio::test]
async fn bad_product_input_names_the_field_and_writes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let long = "x".repeat(201);
    let cases = [
        (json!({ "sku": "", "name": "N" }), "sku"),
        (json!({ "sku": "   ", "name": "N" }), "sku"),
        (json!({ "sku": "HAS SPACE", "name": "N" }), "sku"),
        (json!({ "sku": "x".repeat(65), "name": "N" }), "sku"),
        (json!({ "sku": "OK-1", "name": "" }), "name"),
        (json!({ "sku": "OK-1", "name": long }), "name"),
        (
            json!({ "sku": "OK-1", "name": "N", "lowStockThreshold": -1 }),
            "lowStockThreshold",
        ),
        (
            json!({ "sku": "OK-1", "name": "N", "initialStock": -5 }),
            "initialStock",
        ),
        (json!({ "sku": "OK-1", "name": "N", "unit": "" }), "unit"),
        (
            json!({ "sku": "OK-1", "name": "N", "initialStock": 3_000_000_000i64 }),
            "initialStock",
        ),
        (
            json!({ "sku": "OK-1", "name": "N", "lowStockThreshold": 3_000_000_000i64 }),
            "lowStockThreshold",
        ),
        (
            json!({ "sku": "OK-1", "name": "N", "description": "d".repeat(2001) }),
            "description",
        ),
    ];
    for (input, field) in cases {
        let r = app.gql(Some(&admin), CREATE, json!({ "i": input })).await;
        assert_eq!(
            r.expect_code("BAD_USER_INPUT")["extensions"]["field"],
            field,
            "input {input}"
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM products").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_logs WHERE entity_type = 'PRODUCT'")
            .await,
        0
    );
}

#[tokio::test]
async fn bad_update_input_and_unknown_ids_write_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let id = app.create_product(&admin, "UPD-1", 0).await;
    let r = app
        .gql(
            Some(&admin),
            UPDATE,
            json!({ "id": id, "i": { "lowStockThreshold": -3 } }),
        )
        .await;
    assert_eq!(
        r.expect_code("BAD_USER_INPUT")["extensions"]["field"],
        "lowStockThreshold"
    );
    let r = app
        .gql(
            Some(&admin),
            UPDATE,
            json!({ "id": id, "i": { "name": " " } }),
        )
        .await;
    assert_eq!(
        r.expect_code("BAD_USER_INPUT")["extensions"]["field"],
        "name"
    );
    let r = app
        .gql(
            Some(&admin),
            UPDATE,
            json!({ "id": "not-a-uuid", "i": { "name": "x" } }),
        )
        .await;
    assert_eq!(r.expect_code("BAD_USER_INPUT")["extensions"]["field"], "id");
    app.gql(
        Some(&admin),
        UPDATE,
        json!({ "id": uuid::Uuid::now_v7().to_string(), "i": { "name": "x" } }),
    )
    .await
    .expect_code("NOT_FOUND");
    let p = app.product(&admin, &id).await;
    assert_eq!(p["version"], 1);
    assert_eq!(p["lowStockThreshold"], 0);
}

#[tokio::test]
async fn stale_expected_version_is_a_conflict_and_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let id = app.create_product(&admin, "VER-1", 0).await;
    app.gql(
        Some(&admin),
        UPDATE,
        json!({ "id": id, "i": { "name": "First" }, "v": 1 }),
    )
    .await
    .data();
    let stale = app
        .gql(
            Some(&admin),
            UPDATE,
            json!({ "id": id, "i": { "name": "Second" }, "v": 1 }),
        )
        .await;
    stale.expect_code("CONFLICT");
    let p = app.product(&admin, &id).await;
    assert_eq!(p["name"], "First");
    assert_eq!(p["version"], 2);
}

#[tokio::test]
async fn pagination_walks_every_row_exactly_once() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut expected = HashSet::new();
    for i in 0..23 {
        expected.insert(app.create_product(&admin, &format!("PAGE-{i:02}"), 0).await);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let r = app
            .gql(Some(&admin), LIST, json!({ "first": 5, "after": after }))
            .await;
        let conn = &r.data()["products"];
        assert_eq!(conn["totalCount"], 23);
        assert_eq!(conn["pageInfo"]["hasPreviousPage"], after.is_some());
        for edge in conn["edges"].as_array().unwrap() {
            seen.push(edge["node"]["id"].as_str().unwrap().to_string());
        }
        assert_eq!(
            conn["edges"].as_array().unwrap().len(),
            conn["nodes"].as_array().unwrap().len()
        );
        pages += 1;
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(String::from);
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 23);
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), expected);
}

#[tokio::test]
async fn page_size_and_cursor_are_validated() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for first in [0, -1, 101, 1000] {
        let r = app.gql(Some(&admin), LIST, json!({ "first": first })).await;
        assert_eq!(
            r.expect_code("BAD_USER_INPUT")["extensions"]["field"],
            "first"
        );
    }
    let r = app
        .gql(Some(&admin), LIST, json!({ "after": "!!bogus!!" }))
        .await;
    assert_eq!(
        r.expect_code("BAD_USER_INPUT")["extensions"]["field"],
        "after"
    );
    let r = app.gql(Some(&admin), LIST, json!({ "first": 100 })).await;
    r.data();
}

#[tokio::test]
async fn filters_match_search_category_and_low_stock() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for (sku, name, category, threshold, stock) in [
        ("BOLT-1", "Steel bolt", "hardware", 10, 5),
        ("NUT-1", "Steel nut", "hardware", 0, 50),
        ("TAPE-1", "Duct tape 50%", "supplies", 2, 20),
        ("OEL-1", "Ärger-Öl", "supplies", 0, 1),
    ] {
        app.gql(
            Some(&admin),
            CREATE,
            json!({ "i": { "sku": sku, "name": name, "category": category, "lowStockThreshold": threshold, "initialStock": stock } }),
        )
        .await
        .data();
    }
    let skus = |r: &crate::helpers::Gql| -> Vec<String> {
        r.data()["products"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["sku"].as_str().unwrap().to_string())
            .collect()
    };
    let r = app
        .gql(Some(&admin), LIST, json!({ "f": { "search": "STEEL" } }))
        .await;
    assert_eq!(skus(&r), ["BOLT-1", "NUT-1"]);
    let r = app
        .gql(Some(&admin), LIST, json!({ "f": { "search": "nut-" } }))
        .await;
    assert_eq!(skus(&r), ["NUT-1"]);
    let r = app
        .gql(Some(&admin), LIST, json!({ "f": { "search": "50%" } }))
        .await;
    assert_eq!(skus(&r), ["TAPE-1"], "% is literal");
    let r = app
        .gql(Some(&admin), LIST, json!({ "f": { "search": "%" } }))
        .await;
    assert_eq!(skus(&r), ["TAPE-1"], "% alone is literal too");
    let r = app
        .gql(Some(&admin), LIST, json!({ "f": { "search": "äRGER-öl" } }))
        .await;
    assert_eq!(
        skus(&r),
        ["OEL-1"],
        "Unicode case folding on both databases"
    );
    let r = app
        .gql(
            Some(&admin),
            LIST,
            json!({ "f": { "category": "hardware" } }),
        )
        .await;
    assert_eq!(skus(&r), ["BOLT-1", "NUT-1"]);
    let r = app
        .gql(Some(&admin), LIST, json!({ "f": { "lowStockOnly": true } }))
        .await;
    assert_eq!(skus(&r), ["BOLT-1"]);
    assert_eq!(r.data()["products"]["totalCount"], 1);
}

#[tokio::test]
async fn an_update_that_changes_nothing_keeps_the_version_and_writes_no_audit_row() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let id = app.create_product(&admin, "NOOP-1", 0).await;
    let audit_before = app.count("SELECT COUNT(*) FROM audit_logs").await;
    for input in [json!({}), json!({ "name": "Product NOOP-1" })] {
        let r = app
            .gql(
                Some(&admin),
                UPDATE,
                json!({ "id": id, "i": input, "v": 1 }),
            )
            .await;
        assert_eq!(r.data()["updateProduct"]["version"], 1);
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_logs").await,
        audit_before
    );
}

#[tokio::test]
async fn concurrent_reads_by_sku_batched_together_each_get_their_own_product() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            app.create_product(&admin, &format!("BATCH-{i:02}"), i)
                .await,
        );
    }
    // 400 reads at once: the same SKUs many times, in other cases, and SKUs
    // that do not exist, so that batches hold repeats, misses and hits.
    let reads = (0..400).map(|n| {
        let (client, address, admin) = (app.client.clone(), app.address.clone(), admin.clone());
        tokio::spawn(async move {
            let i = n % 25;
            let sku = if n % 2 == 0 {
                format!("BATCH-{i:02}")
            } else {
                format!("batch-{i:02}")
            };
            let body: serde_json::Value = client
                .post(format!("{address}/graphql"))
                .bearer_auth(&admin)
                .json(&json!({
                    "query": "query($s: String!) { productBySku(sku: $s) { id sku stock } }",
                    "variables": { "s": sku }
                }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (i, body)
        })
    });
    for read in futures_util::future::join_all(reads).await {
        let (i, body) = read.unwrap();
        assert!(body.get("errors").is_none(), "{body}");
        let product = &body["data"]["productBySku"];
        if i < 20 {
            assert_eq!(product["id"], ids[i], "{body}");
            assert_eq!(product["sku"], format!("BATCH-{i:02}"));
            assert_eq!(product["stock"], i as i64);
        } else {
            assert!(product.is_null(), "BATCH-{i:02} does not exist: {body}");
        }
    }
    app.shutdown().await.unwrap();
}

/// Every order the console offers, page by page in both directions: the
/// pages join into the whole list sorted by the key, ties by creation,
/// with no row twice or missing, also under a filter.
#[tokio::test]
async fn products_sort_by_sku_name_and_stock_page_by_page_both_ways() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    // (sku, name, stock), created in this order; stock ties on purpose.
    let rows = [
        ("b-2", "pear", 5),
        ("A-3", "apple", 9),
        ("c-1", "melon", 5),
        ("a-1", "kiwi", 0),
        ("B-1", "banana", 9),
        ("d-9", "cherry", 5),
        ("C-7", "grape", 2),
    ];
    let mut ids = Vec::new();
    for (sku, name, stock) in rows {
        let r = app
            .gql(
                Some(&admin),
                "mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }",
                json!({ "i": { "sku": sku, "name": name, "initialStock": stock, "category": if stock == 5 { "five" } else { "other" } } }),
            )
            .await;
        ids.push(
            r.data()["createProduct"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let page_through = |order: serde_json::Value, filter: serde_json::Value| {
        let app = &app;
        let admin = &admin;
        async move {
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let r = app
                    .gql(
                        Some(admin),
                        "query($after: String, $o: ProductOrder, $f: ProductFilter) {
                           products(first: 2, after: $after, orderBy: $o, filter: $f) {
                             totalCount pageInfo { hasNextPage endCursor } nodes { sku } } }",
                        json!({ "after": after, "o": order, "f": filter }),
                    )
                    .await;
                let page = &r.data()["products"];
                for n in page["nodes"].as_array().unwrap() {
                    seen.push(n["sku"].as_str().unwrap().to_string());
                }
                if page["pageInfo"]["hasNextPage"] != true {
                    break;
                }
                after = page["pageInfo"]["endCursor"].as_str().map(String::from);
            }
            seen
        }
    };
    // The expected order: by key, then by creation.
    let expected =
        |key: &dyn Fn(usize) -> String, descending: bool, only: &dyn Fn(usize) -> bool| {
            let mut order: Vec<usize> = (0..rows.len()).filter(|i| only(*i)).collect();
            order.sort_by(|a, b| {
                let by_key = key(*a).cmp(&key(*b)).then(a.cmp(b));
                if descending { by_key.reverse() } else { by_key }
            });
            order
                .iter()
                .map(|i| rows[*i].0.to_string())
                .collect::<Vec<_>>()
        };
    let all = |_: usize| true;
    let sku = |i: usize| rows[i].0.to_lowercase();
    let name = |i: usize| rows[i].1.to_string();
    let stock = |i: usize| format!("{:05}", rows[i].2);
    let created = |_: usize| String::new();
    for (field, key) in [
        ("CREATED_AT", &created as &dyn Fn(usize) -> String),
        ("SKU", &sku),
        ("NAME", &name),
        ("STOCK", &stock),
    ] {
        for (direction, descending) in [("ASC", false), ("DESC", true)] {
            let got = page_through(
                json!({ "field": field, "direction": direction }),
                json!(null),
            )
            .await;
            assert_eq!(got, expected(key, descending, &all), "{field} {direction}");
        }
    }
    // The default direction is ascending; a filter keeps the order.
    let five = |i: usize| rows[i].2 == 5;
    assert_eq!(
        page_through(json!({ "field": "STOCK" }), json!({ "category": "five" })).await,
        expected(&stock, false, &five)
    );
    assert_eq!(
        page_through(
            json!({ "field": "NAME", "direction": "DESC" }),
            json!({ "category": "five" })
        )
        .await,
        expected(&name, true, &five)
    );
    // An unknown order is refused with a code, not ignored.
    app.gql(
        Some(&admin),
        "{ products(orderBy: { field: PRICE }) { totalCount } }",
        json!({}),
    )
    .await
    .expect_code("BAD_USER_INPUT");
    assert_eq!(ids.len(), rows.len());
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn stock_summary_counts_live_products_low_and_empty_ones_and_units() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    const SUMMARY: &str = "{ stockSummary { products lowStock outOfStock unitsOnHand costedProducts stockValue } currency }";
    let empty = app.gql(Some(&admin), SUMMARY, json!({})).await;
    assert_eq!(
        empty.data()["stockSummary"],
        json!({ "products": 0, "lowStock": 0, "outOfStock": 0, "unitsOnHand": 0, "costedProducts": 0, "stockValue": 0.0 })
    );
    assert_eq!(empty.data()["currency"], "KRW");
    // (sku, threshold, stock, unit cost): empty and low; low; fine; then
    // one archived.
    for (sku, threshold, stock, cost) in [
        ("S-0", 0, 0, Some(100)),
        ("S-3", 5, 3, Some(1_500)),
        ("S-10", 2, 10, None),
        ("S-ARCH", 1, 7, Some(9)),
    ] {
        let r = app
            .gql(
                Some(&admin),
                "mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }",
                json!({ "i": { "sku": sku, "name": sku, "lowStockThreshold": threshold, "initialStock": stock, "unitCost": cost } }),
            )
            .await;
        if sku == "S-ARCH" {
            let id = r.data()["createProduct"]["id"]
                .as_str()
                .unwrap()
                .to_string();
            app.gql(
                Some(&admin),
                "mutation($id: ID!) { deleteProduct(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await
            .data();
        }
    }
    let summary = app.gql(Some(&admin), SUMMARY, json!({})).await;
    assert_eq!(
        summary.data()["stockSummary"],
        json!({ "products": 3, "lowStock": 2, "outOfStock": 1, "unitsOnHand": 13, "costedProducts": 2, "stockValue": 4500.0 })
    );
    // A cost is changed, cleared, or refused when negative (nothing written).
    let s3 = app
        .gql(
            Some(&admin),
            "{ productBySku(sku: \"S-3\") { id version } }",
            json!({}),
        )
        .await;
    let s3_id = s3.data()["productBySku"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let update = "mutation($id: ID!, $c: Int) { updateProduct(id: $id, input: { unitCost: $c }) { unitCost version } }";
    let refused = app
        .gql(Some(&admin), update, json!({ "id": s3_id, "c": -1 }))
        .await;
    assert_eq!(
        refused.expect_code("BAD_USER_INPUT")["extensions"]["field"],
        "unitCost"
    );
    let changed = app
        .gql(Some(&admin), update, json!({ "id": s3_id, "c": 2_000 }))
        .await;
    assert_eq!(changed.data()["updateProduct"]["unitCost"], 2_000);
    let cleared = app
        .gql(Some(&admin), update, json!({ "id": s3_id, "c": null }))
        .await;
    assert!(cleared.data()["updateProduct"]["unitCost"].is_null());
    let after = app.gql(Some(&admin), SUMMARY, json!({})).await;
    assert_eq!(after.data()["stockSummary"]["costedProducts"], 1);
    assert_eq!(
        after.data()["stockSummary"]["stockValue"],
        0.0,
        "S-0 has no stock"
    );
    let audited = app
        .gql(
            Some(&admin),
            "query($id: String) { auditLogs(first: 5, filter: { entityId: $id, action: UPDATE }) { nodes { changes } } }",
            json!({ "id": s3_id }),
        )
        .await;
    assert_eq!(
        audited.data()["auditLogs"]["nodes"][0]["changes"],
        json!({ "before": { "unitCost": 2000, "version": 3 }, "after": { "unitCost": null, "version": 4 } })
    );
    // Anyone who may read products may read it; nobody else.
    let (_, viewer) = app.user_with_role(&admin, "VIEWER").await;
    assert_eq!(
        app.gql(Some(&viewer), SUMMARY, json!({})).await.data()["stockSummary"]["products"],
        3
    );
    app.gql(None, SUMMARY, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    app.shutdown().await.unwrap();
}
