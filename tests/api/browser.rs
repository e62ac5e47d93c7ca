//! The GraphiQL page as an admin uses it, in a real headless Chromium driven
//! over the DevTools protocol: sign in, run a query, watch a subscription,
//! and check that the page loads nothing from any other host.
//!
//! Needs Debian's `chromium`. `.ci/run` installs it; elsewhere the test says
//! it is skipped unless `CI` is set, where a missing browser fails it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, spawn_app, spawn_app_with};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
}

/// A headless browser with one page, spoken to over the DevTools protocol.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    page: Socket,
    next_id: u64,
    /// Every event received so far.
    events: Vec<Value>,
}

impl Browser {
    async fn launch(binary: &PathBuf) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Chromium writes the port it chose into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some(port) = text.lines().next().and_then(|l| l.parse::<u16>().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (page, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut browser = Self {
            child,
            _profile: profile,
            page,
            next_id: 0,
            events: Vec::new(),
        };
        for domain in ["Page.enable", "Network.enable", "Runtime.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Sends a command and waits for its answer, keeping the events that
    /// arrive meanwhile.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.page
            .send(Message::text(
                json!({ "id": id, "method": method, "params": params }).to_string(),
            ))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .unwrap()
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    /// Evaluates JavaScript in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(r["exceptionDetails"].is_null(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    async fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.eval(expression).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.eval("document.body.innerText").await;
                self.screenshot("failure").await;
                panic!("timed out waiting for {what}; the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG under target/browser/ (a CI artifact).
    async fn screenshot(&mut self, name: &str) -> PathBuf {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser");
        std::fs::create_dir_all(&dir).unwrap();
        let db = if crate::helpers::is_postgres() {
            "postgres"
        } else {
            "sqlite"
        };
        let path = dir.join(format!("graphiql-{name}-{db}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Every URL the page requested.
    fn requested(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(String::from))
            .chain(
                self.events
                    .iter()
                    .filter(|e| e["method"] == "Network.webSocketCreated")
                    .filter_map(|e| e["params"]["url"].as_str().map(String::from)),
            )
            .collect()
    }

    fn console_errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| {
                e["method"] == "Runtime.exceptionThrown"
                    || (e["method"] == "Runtime.consoleAPICalled" && e["params"]["type"] == "error")
            })
            .map(|e| e["params"].to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets the query editor's text.
fn set_query(query: &str) -> String {
    format!(
        "(() => {{ const cm = document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror; cm.setValue({}); return true; }})()",
        serde_json::to_string(query).unwrap()
    )
}

const RESULT_TEXT: &str = "((document.querySelector('.graphiql-response') || document.querySelector('.result-window') || {}).innerText || '')";
const RUN: &str =
    "(() => { document.querySelector('.graphiql-execute-button').click(); return true; })()";

#[tokio::test]
async fn an_admin_signs_in_queries_and_watches_a_subscription_in_graphiql_offline() {
    let Some(binary) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs Debian's chromium for the GraphiQL browser test (.ci/run installs it)"
        );
        eprintln!("skipped: no chromium on PATH (apt-get install chromium)");
        return;
    };
    // Short-lived access tokens, so that the page's refresh shows.
    let app = spawn_app_with(&[("JWT_ACCESS_TTL_SECONDS", "6")]).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "BROWSER-1", 40).await;
    // The admin has two-factor login on: the form asks for the code.
    let (secret, recovery) = crate::security::enroll(&app, &admin).await;

    let mut browser = Browser::launch(&binary).await;
    let page = format!("{}/graphql", app.address);
    browser.call("Page.navigate", json!({ "url": page })).await;
    browser
        .wait_for(
            "GraphiQL to render",
            "!!document.querySelector('.graphiql-execute-button') && !!document.querySelector('.graphiql-query-editor .CodeMirror')",
        )
        .await;

    // Sign in with the seeded admin through the page's form.
    browser
        .eval(&format!(
            "(() => {{ document.getElementById('login-email').value = {}; document.getElementById('login-password').value = {}; document.getElementById('login-submit').click(); return true; }})()",
            json!(ADMIN_EMAIL),
            json!(ADMIN_PASSWORD)
        ))
        .await;
    browser
        .wait_for(
            "the form to ask for the two-factor code",
            "!document.getElementById('login-otp').hidden",
        )
        .await;
    browser
        .eval(&format!(
            "(() => {{ document.getElementById('login-otp').value = {}; document.getElementById('login-submit').click(); return true; }})()",
            json!(crate::security::code(&secret, 0))
        ))
        .await;
    browser
        .wait_for(
            "the sign-in",
            &format!(
                "document.getElementById('login-status').textContent === 'Signed in as {ADMIN_EMAIL} (ADMIN)'"
            ),
        )
        .await;
    // The token reached GraphiQL's headers editor.
    browser
        .wait_for(
            "the token in the headers editor",
            "document.body.innerText.includes('\"Authorization\": \"Bearer ')",
        )
        .await;
    assert!(
        !browser
            .eval("JSON.stringify(Object.assign({}, localStorage))")
            .await
            .as_str()
            .unwrap()
            .contains("Bearer"),
        "no token in localStorage"
    );

    // A query, run from the editor, shows its result.
    browser
        .eval(&set_query(
            "{ productBySku(sku: \"BROWSER-1\") { sku stock } me { email role } }",
        ))
        .await;
    browser.eval(RUN).await;
    browser
        .wait_for(
            "the query result",
            &format!(
                "{RESULT_TEXT}.includes('\"stock\": 40') && {RESULT_TEXT}.includes('{ADMIN_EMAIL}')"
            ),
        )
        .await;

    // A subscription over /graphql/ws shows a movement recorded elsewhere.
    browser
        .eval(&set_query(
            "subscription { stockChanged { product { sku stock } movement { kind quantity } } }",
        ))
        .await;
    browser.eval(RUN).await;
    app.wait_for_subscriptions(1).await;
    let fresh = app
        .gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            json!({ "i": { "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "otp": recovery[0] } }),
        )
        .await;
    let admin = fresh.data()["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    app.record_movement(
        &admin,
        json!({ "productId": product, "kind": "OUTBOUND", "quantity": 3 }),
    )
    .await
    .data();
    browser
        .wait_for(
            "the subscription event",
            &format!(
                "{RESULT_TEXT}.includes('\"stock\": 37') && {RESULT_TEXT}.includes('OUTBOUND')"
            ),
        )
        .await;
    let shot = browser.screenshot("subscription").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // The page refreshes the token before it expires: the headers editor
    // gets a new one, and a query after the first token's expiry works.
    const HEADERS: &str = "document.body.innerText.match(/Bearer [A-Za-z0-9._-]+/)[0]";
    let first = browser.eval(HEADERS).await;
    browser
        .wait_for("a refreshed token", &format!("{HEADERS} !== {first}"))
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    browser.eval(&set_query("{ me { email } }")).await;
    browser.eval(RUN).await;
    browser
        .wait_for(
            "a query with the refreshed token",
            &format!("{RESULT_TEXT}.includes('\"email\": \"{ADMIN_EMAIL}\"')"),
        )
        .await;

    // Everything came from this server.
    let requested = browser.requested();
    let host = app.address.trim_start_matches("http://").to_string();
    assert!(
        requested
            .iter()
            .any(|u| u.contains("/graphql/assets/graphiql.min.js"))
    );
    assert!(
        requested
            .iter()
            .any(|u| u.starts_with("ws://") && u.contains("/graphql/ws"))
    );
    let foreign: Vec<&String> = requested
        .iter()
        .filter(|u| {
            !(u.starts_with("data:")
                || u.starts_with("about:")
                || u.starts_with(&format!("http://{host}/"))
                || u.starts_with(&format!("ws://{host}/")))
        })
        .collect();
    assert!(foreign.is_empty(), "requests to other hosts: {foreign:?}");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    drop(browser);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn graphiql_assets_are_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;
    let page = app.get("/graphql").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unpkg") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(!html.contains("https://"), "no external URL in the page");
    assert!(!html.contains("<script>"), "no inline script");
    let js = app.get("/graphql/assets/graphiql.min.js").await;
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    let again = app
        .client
        .get(format!("{}/graphql/assets/graphiql.min.js", app.address))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let licences = app.get("/graphql/assets/LICENSES").await;
    assert_eq!(licences.status(), 200);
    assert!(licences.text().await.unwrap().contains("MIT"));
    assert_eq!(app.get("/graphql/assets/fetch.sh").await.status(), 404);
    assert_eq!(
        app.get("/graphql/assets/..%2FCargo.toml").await.status(),
        404
    );
    app.shutdown().await.unwrap();
}
