//! Browser tests in a real headless Chromium (Debian's `chromium`), driven
//! over WebDriver by fantoccini through Debian's `chromedriver`: the GraphiQL
//! page here, the admin console in `console.rs`. [`Browser`] is shared.
//!
//! `.ci/run` installs both packages; elsewhere a test without them says it
//! is skipped unless `CI` is set, where a missing browser fails it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, spawn_app, spawn_app_with};

fn on_path(names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    })
}

/// Chromium's `browser` log (console messages, exceptions, failed loads),
/// which chromedriver keeps under `goog:loggingPrefs`.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// A headless Chromium session: chromedriver on a port of its own, and a
/// fresh profile. Screenshots go to `target/browser/<prefix>-<name>-<db>.png`.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: Child,
    _profile: tempfile::TempDir,
    prefix: &'static str,
    /// Every browser log entry read so far.
    log: Vec<Value>,
}

impl Browser {
    /// Starts a browser whose preferred language is `language`; `None`
    /// (the test is skipped) when chromium or chromedriver is missing
    /// outside CI.
    pub async fn launch(prefix: &'static str, language: &str) -> Option<Self> {
        let (Some(chromium), Some(chromedriver)) = (
            on_path(&["chromium", "chromium-browser", "google-chrome"]),
            on_path(&["chromedriver"]),
        ) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs Debian's chromium and chromium-driver for the browser tests (.ci/run installs them)"
            );
            eprintln!(
                "skipped: no chromium or chromedriver on PATH (apt-get install chromium chromium-driver)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let webdriver = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{webdriver}status")).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1400,1000",
                    format!("--lang={language}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": { "intl.accept_languages": language },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(capabilities)
        .connect(&webdriver)
        .await
        .expect("a WebDriver session");
        Some(Self {
            client,
            driver,
            _profile: profile,
            prefix,
            log: Vec::new(),
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigation");
    }

    /// Evaluates a JavaScript expression in the page (a promise is
    /// awaited) and returns its value.
    pub async fn eval(&self, expression: &str) -> Value {
        self.client
            .execute(&format!("return ({expression});"), Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// Waits until `expression` is true in the page.
    pub async fn wait_for(&mut self, what: &str, expression: &str) {
        self.wait_for_within(what, expression, Duration::from_secs(30))
            .await;
    }

    pub async fn wait_for_within(&mut self, what: &str, expression: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self
                .client
                .execute(&format!("return !!({expression});"), Vec::new())
                .await
                .ok()
                == Some(json!(true))
            {
                return;
            }
            if Instant::now() > deadline {
                let text = self.eval("document.body.innerText").await;
                self.screenshot("failure").await;
                let log = self.read_log().await;
                panic!("timed out waiting for {what}; the page shows:\n{text}\nlog: {log:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG under target/browser/ (a CI artifact).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser");
        std::fs::create_dir_all(&dir).unwrap();
        let db = if crate::helpers::is_postgres() {
            "postgres"
        } else {
            "sqlite"
        };
        let path = dir.join(format!("{}-{name}-{db}.png", self.prefix));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Every URL the current page loaded (the page and its resources).
    pub async fn requested(&self) -> Vec<String> {
        let urls = self
            .eval("[location.href, ...performance.getEntriesByType('resource').map(e => e.name)]")
            .await;
        serde_json::from_value(urls).unwrap()
    }

    /// The browser log entries since the last read, kept for
    /// [`Browser::console_errors`].
    async fn read_log(&mut self) -> Vec<Value> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("chromedriver's browser log");
        let entries: Vec<Value> = serde_json::from_value(entries).unwrap_or_default();
        self.log.extend(entries.iter().cloned());
        entries
    }

    /// Errors the pages printed or threw, and loads that failed, so far.
    pub async fn console_errors(&mut self) -> Vec<String> {
        self.read_log().await;
        self.log
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
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
    let Some(mut browser) = Browser::launch("graphiql", "en").await else {
        return;
    };
    // Short-lived access tokens, so that the page's refresh shows.
    let app = spawn_app_with(&[("JWT_ACCESS_TTL_SECONDS", "6")]).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "BROWSER-1", 40).await;
    // The admin has two-factor login on: the form asks for the code.
    let (secret, recovery) = crate::security::enroll(&app, &admin).await;

    browser.goto(&format!("{}/graphql", app.address)).await;
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

    // Everything came from this server (the subscription above came over
    // its WebSocket; the page's policy allows no other host to connect to).
    let requested = browser.requested().await;
    assert!(
        requested
            .iter()
            .any(|u| u.contains("/graphql/assets/graphiql.min.js"))
    );
    assert_only_from(&app.address, &requested);
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    app.shutdown().await.unwrap();
}

/// A page served from the binary: its scripts and connections are this
/// server's only, and it names no other host and has no inline script.
/// Returns its content policy.
pub async fn page_policy(app: &crate::helpers::TestApp, path: &str) -> String {
    let page = app.get(path).await;
    assert_eq!(page.status(), 200, "{path}");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "no external URL in {path}"
    );
    assert!(!html.contains("<script>"), "no inline script in {path}");
    csp
}

/// Every URL is this server's (or a `data:` URL).
pub fn assert_only_from(address: &str, requested: &[String]) {
    let foreign: Vec<&String> = requested
        .iter()
        .filter(|u| !(u.starts_with("data:") || u.starts_with(&format!("{address}/"))))
        .collect();
    assert!(foreign.is_empty(), "requests to other hosts: {foreign:?}");
}

#[tokio::test]
async fn graphiql_assets_are_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;
    let csp = page_policy(&app, "/graphql").await;
    assert!(
        !csp.contains("unpkg") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
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
    assert_eq!(app.get("/graphql/assets/packages").await.status(), 404);
    assert_eq!(
        app.get("/graphql/assets/..%2FCargo.toml").await.status(),
        404
    );
    app.shutdown().await.unwrap();
}
