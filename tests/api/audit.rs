use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, spawn_app};

const AUDIT: &str = "query($f: AuditLogFilter, $first: Int) { auditLogs(filter: $f, first: $first) { totalCount nodes { id action entityType entityId summary changes requestId ip userAgent actor { id email } } } }";

async fn audit_rows(app: &TestApp, token: &str, filter: Value) -> Vec<Value> {
    let r = app
        .gql(Some(token), AUDIT, json!({ "f": filter, "first": 100 }))
        .await;
    r.data()["auditLogs"]["nodes"].as_array().unwrap().clone()
}

/// Runs one mutation with its own request id and returns that id.
async fn traced(
    app: &TestApp,
    token: Option<&str>,
    request_id: &str,
    query: &str,
    vars: Value,
) -> Value {
    let r = app
        .post_graphql(
            token,
            query,
            vars,
            &[
                ("x-request-id", request_id),
                ("user-agent", "audit-test/1.0"),
            ],
        )
        .await;
    r.data().clone()
}

#[tokio::test]
async fn every_change_writes_exactly_one_audit_row_with_actor_and_request_id() {
    let app = spawn_app().await;
    let login = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let admin = login.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let admin_id = login.data()["login"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let created = traced(
        &app,
        Some(&admin),
        "req-create",
        "mutation { createProduct(input: { sku: \"AUD-1\", name: \"Audited\" }) { id } }",
        json!({}),
    )
    .await;
    let product = created["createProduct"]["id"].as_str().unwrap().to_string();
    traced(
        &app,
        Some(&admin),
        "req-update",
        "mutation($id: ID!) { updateProduct(id: $id, input: { name: \"Renamed\" }) { id } }",
        json!({ "id": product }),
    )
    .await;
    let mut movement_ids = Vec::new();
    for (kind, q) in [
        ("INBOUND", 10),
        ("OUTBOUND", 3),
        ("RETURN", 1),
        ("ADJUSTMENT", -2),
    ] {
        let m = traced(
            &app,
            Some(&admin),
            &format!("req-{kind}"),
            "mutation($i: StockMovementInput!) { recordStockMovement(input: $i) { id } }",
            json!({ "i": { "productId": product, "kind": kind, "quantity": q } }),
        )
        .await;
        movement_ids.push((
            kind,
            m["recordStockMovement"]["id"].as_str().unwrap().to_string(),
        ));
    }
    traced(
        &app,
        Some(&admin),
        "req-delete",
        "mutation($id: ID!) { deleteProduct(id: $id) { id } }",
        json!({ "id": product }),
    )
    .await;
    let user = traced(
        &app,
        Some(&admin),
        "req-user",
        "mutation { createUser(input: { email: \"clerk@test.local\", displayName: \"Clerk\", password: \"clerk-password-1\", role: STAFF }) { id } }",
        json!({}),
    )
    .await;
    let user_id = user["createUser"]["id"].as_str().unwrap().to_string();
    traced(
        &app,
        Some(&admin),
        "req-user-update",
        "mutation($id: ID!) { updateUser(id: $id, input: { role: MANAGER }) { id } }",
        json!({ "id": user_id }),
    )
    .await;

    let expect = |action: &str, entity_type: &str, entity_id: &str, request_id: &str| {
        (
            action.to_string(),
            entity_type.to_string(),
            entity_id.to_string(),
            request_id.to_string(),
        )
    };
    let mut expectations = vec![
        expect("CREATE", "PRODUCT", &product, "req-create"),
        expect("UPDATE", "PRODUCT", &product, "req-update"),
        expect("DELETE", "PRODUCT", &product, "req-delete"),
        expect("CREATE", "USER", &user_id, "req-user"),
        expect("UPDATE", "USER", &user_id, "req-user-update"),
    ];
    for (kind, id) in &movement_ids {
        expectations.push(expect(
            &format!("STOCK_{kind}"),
            "STOCK_MOVEMENT",
            id,
            &format!("req-{kind}"),
        ));
    }
    for (action, entity_type, entity_id, request_id) in expectations {
        let rows = audit_rows(
            &app,
            &admin,
            json!({ "action": action, "entityType": entity_type, "entityId": entity_id }),
        )
        .await;
        assert_eq!(rows.len(), 1, "{action} {entity_type}: {rows:?}");
        let row = &rows[0];
        assert_eq!(row["requestId"], request_id.as_str());
        assert_eq!(row["actor"]["id"], admin_id.as_str());
        assert_eq!(row["userAgent"], "audit-test/1.0");
        assert_eq!(row["ip"], "127.0.0.1");
    }

    let update = &audit_rows(
        &app,
        &admin,
        json!({ "action": "UPDATE", "entityType": "PRODUCT" }),
    )
    .await[0];
    assert_eq!(update["changes"]["before"]["name"], "Audited");
    assert_eq!(update["changes"]["after"]["name"], "Renamed");
    let outbound = &audit_rows(&app, &admin, json!({ "action": "STOCK_OUTBOUND" })).await[0];
    assert_eq!(outbound["changes"]["after"]["quantity"], -3);
    assert_eq!(outbound["changes"]["after"]["balanceAfter"], 7);
    // The same text and shape on both databases (PostgreSQL builds them in SQL).
    assert_eq!(outbound["summary"], "outbound -3 of AUD-1: stock 10 -> 7");
    assert_eq!(outbound["changes"]["before"], json!({ "stock": 10 }));
    assert_eq!(outbound["changes"]["after"]["sku"], "AUD-1");
    assert_eq!(outbound["changes"]["after"]["kind"], "OUTBOUND");
    assert_eq!(outbound["changes"]["after"]["stock"], 7);
    assert!(outbound["changes"]["after"]["reference"].is_null());

    let by_actor = audit_rows(
        &app,
        &admin,
        json!({ "actorId": admin_id, "action": "LOGIN" }),
    )
    .await;
    assert_eq!(by_actor.len(), 1);
}

#[tokio::test]
async fn logins_logouts_and_password_changes_are_audited() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    app.login("ghost@test.local", "some-password")
        .await
        .expect_code("UNAUTHENTICATED");
    app.login(ADMIN_EMAIL, "wrong-password")
        .await
        .expect_code("UNAUTHENTICATED");

    let failed = audit_rows(&app, &admin, json!({ "action": "LOGIN_FAILED" })).await;
    assert_eq!(failed.len(), 2);
    let ghost = failed
        .iter()
        .find(|r| r["changes"]["after"]["email"] == "ghost@test.local")
        .expect("unknown email recorded");
    assert!(ghost["actor"].is_null());
    let wrong = failed
        .iter()
        .find(|r| r["changes"]["after"]["email"] == ADMIN_EMAIL)
        .unwrap();
    assert_eq!(wrong["actor"]["email"], ADMIN_EMAIL);

    let session = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let token = session.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let refresh = session.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    app.gql(
        Some(&token),
        "mutation($t: String!) { logout(refreshToken: $t) }",
        json!({ "t": refresh }),
    )
    .await
    .data();
    app.gql(
        Some(&token),
        "mutation { changePassword(currentPassword: \"admin-password-123\", newPassword: \"rotated-password-9\") }",
        json!({}),
    )
    .await
    .data();
    for action in ["LOGOUT", "PASSWORD_CHANGE"] {
        let rows = audit_rows(&app, &admin, json!({ "action": action })).await;
        assert_eq!(rows.len(), 1, "{action}");
        assert_eq!(rows[0]["actor"]["email"], ADMIN_EMAIL);
    }
    assert_eq!(
        audit_rows(&app, &admin, json!({ "action": "LOGIN" }))
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn no_secret_ever_reaches_the_audit_log() {
    let app = spawn_app().await;
    let session = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let admin = session.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let refresh = session.data()["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let staff_password = "staff-secret-password-77";
    app.gql(
        Some(&admin),
        "mutation($p: String!) { createUser(input: { email: \"s@test.local\", displayName: \"S\", password: $p, role: STAFF }) { id } }",
        json!({ "p": staff_password }),
    )
    .await
    .data();
    app.login("s@test.local", "guessed-password-1")
        .await
        .expect_code("UNAUTHENTICATED");
    app.gql(
        Some(&admin),
        "mutation { changePassword(currentPassword: \"admin-password-123\", newPassword: \"new-admin-secret-5\") }",
        json!({}),
    )
    .await
    .data();
    app.gql(
        None,
        "mutation($t: String!) { logout(refreshToken: $t) }",
        json!({ "t": refresh }),
    )
    .await;

    let rows = app
        .state
        .services
        .conn()
        .query_all_raw(sea_orm::Statement::from_string(
            app.state.services.backend(),
            "SELECT action, summary, changes FROM audit_logs",
        ))
        .await
        .unwrap();
    assert!(rows.len() >= 5);
    let relogin = app.login(ADMIN_EMAIL, "new-admin-secret-5").await;
    let admin = relogin.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let all = app.gql(Some(&admin), AUDIT, json!({ "first": 100 })).await;
    let text = all.body.to_string();
    let raw: String = rows
        .iter()
        .map(|r| {
            let summary: String = r.try_get("", "summary").unwrap();
            let changes: Option<serde_json::Value> = r.try_get("", "changes").unwrap();
            format!("{summary} {}", changes.unwrap_or_default())
        })
        .collect();
    for secret in [
        ADMIN_PASSWORD,
        staff_password,
        "guessed-password-1",
        "new-admin-secret-5",
        "$argon2",
        crate::helpers::JWT_SECRET,
        &refresh,
        &admin,
    ] {
        assert!(!text.contains(secret), "audit API shows a secret: {secret}");
        assert!(
            !raw.contains(secret),
            "audit table holds a secret: {secret}"
        );
    }
}

use sea_orm::ConnectionTrait as _;
