//! GraphQL over HTTP as clients expect it: the answer's media type follows
//! `Accept`, request errors are 4xx without `data` in
//! `application/graphql-response+json`, GET runs queries (and refuses
//! mutations), Apollo's persisted queries, and introspection by the
//! standard query under `GRAPHQL_INTROSPECTION`.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const INTROSPECTION: &str = include_str!("fixtures/introspection.graphql");

/// A POST with the given Accept (none when empty): status, content type, body.
async fn post(
    app: &TestApp,
    accept: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, String, Value) {
    let mut req = app
        .client
        .post(format!("{}/graphql", app.address))
        .json(&body);
    if !accept.is_empty() {
        req = req.header("accept", accept);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    answer(req.send().await.unwrap()).await
}

/// A GET of /graphql with `params` in the query string.
async fn get(
    app: &TestApp,
    accept: &str,
    token: Option<&str>,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let url = url::Url::parse_with_params(&format!("{}/graphql", app.address), params).unwrap();
    let mut req = app.client.get(url).header("accept", accept);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn answer(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let media = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, media, body)
}

const MODERN: &str = "application/graphql-response+json";
const LEGACY: &str = "application/json";

#[tokio::test]
async fn the_answer_media_type_and_status_follow_accept() {
    let app = spawn_app().await;
    let ok = json!({ "query": "{ __typename }" });
    let broken = json!({ "query": "{ __typename" });
    let invalid = json!({ "query": "{ nope }" });

    for (accept, media) in [
        (MODERN, MODERN),
        (LEGACY, LEGACY),
        ("*/*", LEGACY),
        ("", LEGACY),
    ] {
        let (status, got, body) = post(&app, accept, None, ok.clone()).await;
        assert_eq!(status, 200, "Accept {accept:?}");
        assert!(got.starts_with(media), "Accept {accept:?} answered {got}");
        assert_eq!(body["data"]["__typename"], "Query");
        assert!(body.get("errors").is_none(), "{body}");
    }
    // Named explicitly, with a lower quality than JSON: JSON.
    let (_, got, _) = post(
        &app,
        "application/graphql-response+json;q=0.5, application/json",
        None,
        ok.clone(),
    )
    .await;
    assert!(got.starts_with(LEGACY), "{got}");

    // Request errors: 4xx without `data` in the new media type, 200 with
    // errors in the old one; both coded.
    for body in [broken, invalid] {
        let (status, _, answer) = post(&app, MODERN, None, body.clone()).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.get("data").is_none(), "{answer}");
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        let (status, _, answer) = post(&app, LEGACY, None, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }

    // A request that is not GraphQL at all is 400 whatever the media type.
    let (status, _, answer) = post(&app, LEGACY, None, json!({ "qeury": "{ __typename }" })).await;
    assert_eq!(status, 400, "{answer}");

    // A field error is an executed answer: 200 with data, in both.
    let (status, _, answer) = post(&app, MODERN, None, json!({ "query": "{ me { id } }" })).await;
    assert_eq!(status, 200);
    assert!(answer.get("data").is_some(), "{answer}");
    assert_eq!(answer["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

    // Neither JSON type acceptable: 406, and nothing ran.
    let (status, _, answer) = post(&app, "text/html", None, ok).await;
    assert_eq!(status, 406, "{answer}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn get_runs_queries_and_refuses_mutations_while_a_browser_still_gets_graphiql() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "GET-1", 4).await;
    let query = "query Stock($s: String!) { productBySku(sku: $s) { sku stock } }";
    let resp = get(
        &app,
        MODERN,
        Some(&admin),
        &[
            ("query", query),
            ("variables", r#"{"s":"GET-1"}"#),
            ("operationName", "Stock"),
        ],
    )
    .await;
    let (status, media, body) = answer(resp).await;
    assert_eq!((status, media.starts_with(MODERN)), (200, true), "{body}");
    assert_eq!(body["data"]["productBySku"]["stock"], 4);

    // A mutation over GET does not run: 405 in both media types.
    let products = app.count("SELECT COUNT(*) FROM products").await;
    let mutation = "mutation { createProduct(input: { sku: \"GET-2\", name: \"x\" }) { id } }";
    for accept in [MODERN, LEGACY] {
        let resp = get(&app, accept, Some(&admin), &[("query", mutation)]).await;
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET, POST");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM products").await, products);

    // Variables that are not JSON: a clear error.
    let resp = get(
        &app,
        MODERN,
        Some(&admin),
        &[("query", query), ("variables", "{s:")],
    )
    .await;
    let (status, _, body) = answer(resp).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["extensions"]["field"], "variables");

    // A browser without a query gets the page; a JSON client gets an error.
    let page = get(&app, "text/html,application/xhtml+xml,*/*;q=0.8", None, &[]).await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let (status, _, body) = answer(get(&app, MODERN, None, &[]).await).await;
    assert_eq!(status, 400, "{body}");
    app.shutdown().await.unwrap();
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn persisted_queries_are_registered_by_hash_and_answered_from_it() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let query = "query PersistedHealth { health { status } me { email } }";
    let hash = sha256_hex(query);
    let persisted = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });

    // Unknown hash: the code Apollo's link retries on.
    let (status, _, body) = post(
        &app,
        LEGACY,
        Some(&admin),
        json!({ "extensions": persisted }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );

    // A hash that is not the text's: refused, nothing kept.
    let wrong =
        json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex("{ __typename }") } });
    let (status, _, body) = post(
        &app,
        MODERN,
        Some(&admin),
        json!({ "query": query, "extensions": wrong }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // Text and hash: run and kept; then the hash alone, by GET as well.
    let (status, _, body) = post(
        &app,
        MODERN,
        Some(&admin),
        json!({ "query": query, "extensions": persisted }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, _, body) = post(
        &app,
        MODERN,
        Some(&admin),
        json!({ "extensions": persisted }),
    )
    .await;
    assert_eq!(
        body["data"]["me"]["email"],
        crate::helpers::ADMIN_EMAIL,
        "{body}"
    );
    let extensions = persisted.to_string();
    let resp = get(
        &app,
        MODERN,
        Some(&admin),
        &[("extensions", extensions.as_str())],
    )
    .await;
    let (status, _, body) = answer(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["health"]["status"], "OK");
    // The hash still names only what its caller may see.
    let (_, _, body) = post(&app, MODERN, None, json!({ "extensions": persisted })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_standard_introspection_query_runs_while_other_documents_keep_their_bounds() {
    let app = spawn_app_with(&[("GRAPHQL_MAX_DEPTH", "6")]).await;
    let (status, _, body) = post(&app, MODERN, None, json!({ "query": INTROSPECTION })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Product"));

    // Ordinary documents still have the depth bound...
    let deep = "{ products(first: 1) { nodes { movements(first: 1) { nodes { product { movements(first: 1) { nodes { id } } } } } } } }";
    let (status, _, body) = post(&app, MODERN, None, json!({ "query": deep })).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("GRAPHQL_MAX_DEPTH")
    );
    // ...and introspection that nests its lists to blow up is refused.
    let hostile = "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }";
    let (status, _, body) = post(&app, MODERN, None, json!({ "query": hostile })).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn introspection_is_open_to_whom_the_setting_says() {
    // signed-in: anonymous callers and invalid tokens are refused.
    let app = spawn_app_with(&[("GRAPHQL_INTROSPECTION", "signed-in")]).await;
    let admin = app.admin_token().await;
    for token in [None, Some("not.a.token")] {
        let (status, _, body) = post(&app, MODERN, token, json!({ "query": INTROSPECTION })).await;
        assert_eq!(status, 200);
        assert!(body["data"].is_null(), "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
    let (_, _, body) = post(
        &app,
        MODERN,
        Some(&admin),
        json!({ "query": INTROSPECTION }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    // `__typename` is not introspection.
    let (_, _, body) = post(&app, MODERN, None, json!({ "query": "{ __typename }" })).await;
    assert_eq!(body["data"]["__typename"], "Query");
    app.shutdown().await.unwrap();

    // nobody: not even an admin; `__type` too.
    let app = spawn_app_with(&[("GRAPHQL_INTROSPECTION", "nobody")]).await;
    let admin = app.admin_token().await;
    for query in [INTROSPECTION, "{ __type(name: \"Product\") { name } }"] {
        let (_, _, body) = post(&app, MODERN, Some(&admin), json!({ "query": query })).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{body}"
        );
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn production_lets_only_signed_in_callers_introspect_by_default() {
    let config = stockroom::config::Config::from_vars(
        [
            ("APP_ENV", "production"),
            ("DATABASE_URL", "sqlite://x.db"),
            ("JWT_SECRET", crate::helpers::JWT_SECRET),
            ("ADMIN_PASSWORD", "a-long-admin-password-1"),
            (
                "TOTP_ENCRYPTION_KEY",
                "0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
    .expect("a production configuration");
    assert_eq!(
        config.graphql_introspection,
        stockroom::config::Introspection::SignedIn
    );
}
