//! Each role against each guarded operation.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

struct Op {
    name: &'static str,
    query: &'static str,
    /// The least powerful role allowed.
    min_role: &'static str,
}

const ROLES: [&str; 4] = ["ADMIN", "MANAGER", "STAFF", "VIEWER"];

fn rank(role: &str) -> usize {
    3 - ROLES.iter().position(|r| *r == role).unwrap()
}

const OPS: &[Op] = &[
    Op {
        name: "me",
        query: "{ me { id } }",
        min_role: "VIEWER",
    },
    Op {
        name: "users",
        query: "{ users { totalCount } }",
        min_role: "ADMIN",
    },
    Op {
        name: "product",
        query: "query($p: ID!) { product(id: $p) { id } }",
        min_role: "VIEWER",
    },
    Op {
        name: "productBySku",
        query: "{ productBySku(sku: \"X\") { id } }",
        min_role: "VIEWER",
    },
    Op {
        name: "products",
        query: "{ products { totalCount } }",
        min_role: "VIEWER",
    },
    Op {
        name: "stockMovements",
        query: "{ stockMovements { totalCount } }",
        min_role: "VIEWER",
    },
    Op {
        name: "auditLogs",
        query: "{ auditLogs { totalCount } }",
        min_role: "MANAGER",
    },
    Op {
        name: "createUser",
        query: "mutation($u: String!) { createUser(input: { email: $u, displayName: \"N\", password: \"password-123\", role: VIEWER }) { id } }",
        min_role: "ADMIN",
    },
    Op {
        name: "updateUser",
        query: "mutation($target: ID!) { updateUser(id: $target, input: { displayName: \"Renamed\" }) { id } }",
        min_role: "ADMIN",
    },
    Op {
        name: "createProduct",
        query: "mutation($u: String!) { createProduct(input: { sku: $u, name: \"N\" }) { id } }",
        min_role: "MANAGER",
    },
    Op {
        name: "updateProduct",
        query: "mutation($p: ID!) { updateProduct(id: $p, input: { name: \"Renamed\" }) { id } }",
        min_role: "MANAGER",
    },
    Op {
        name: "recordStockMovement",
        query: "mutation($p: ID!) { recordStockMovement(input: { productId: $p, kind: INBOUND, quantity: 1 }) { id } }",
        min_role: "STAFF",
    },
    Op {
        name: "deleteProduct",
        query: "mutation($spare: ID!) { deleteProduct(id: $spare) { id } }",
        min_role: "MANAGER",
    },
];

async fn variables(app: &TestApp, admin: &str, product: &str, target: &str) -> Value {
    let spare = app
        .create_product(
            admin,
            &format!("SPARE-{}", uuid::Uuid::new_v4().simple()),
            0,
        )
        .await;
    json!({
        "p": product,
        "u": format!("u{}@test.local", uuid::Uuid::new_v4().simple()),
        "target": target,
        "spare": spare,
    })
}

#[tokio::test]
async fn each_role_is_allowed_exactly_the_operations_of_its_rank() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "ROLE-1", 10).await;
    let mut tokens = vec![("ADMIN", admin.clone())];
    for role in ["MANAGER", "STAFF", "VIEWER"] {
        tokens.push((role, app.user_with_role(&admin, role).await.1));
    }
    let (target, _) = app.user_with_role(&admin, "VIEWER").await;

    let mut failures = Vec::new();
    for op in OPS {
        for (role, token) in &tokens {
            let vars = variables(&app, &admin, &product, &target).await;
            let r = app.gql(Some(token), op.query, vars).await;
            let allowed = rank(role) >= rank(op.min_role);
            let outcome = r.error_code();
            let ok = if allowed {
                outcome.is_none()
            } else {
                outcome == Some("FORBIDDEN")
            };
            if !ok {
                failures.push(format!("{} as {role}: {}", op.name, r.body));
            }
        }
        // And without any token at all.
        let vars = variables(&app, &admin, &product, &target).await;
        let r = app.gql(None, op.query, vars).await;
        if r.error_code() != Some("UNAUTHENTICATED") {
            failures.push(format!("{} anonymous: {}", op.name, r.body));
        }
    }
    assert!(
        failures.is_empty(),
        "role table mismatches:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn health_and_login_are_public() {
    let app = spawn_app().await;
    let r = app.gql(None, "{ health { status } }", json!({})).await;
    assert_eq!(r.data()["health"]["status"], "OK");
}
