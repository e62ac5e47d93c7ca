//! The admin console (`/console`): its files and policy over HTTP, its two
//! catalogues, and the operations checklist's post-deploy steps walked in a
//! real Chromium (see `browser.rs`), with axe-core checking every page.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fantoccini::Locator;
use serde_json::{Value, json};

use crate::browser::{Browser, assert_only_from};
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, spawn_app, spawn_app_with};
use crate::telegram::{FakeTelegram, TOKEN};

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/console")
}

/// What a first visit loads: the page, its styles and scripts, both
/// catalogues and graphql-ws.
fn first_load() -> Vec<String> {
    let mut files = vec![
        "/console".to_string(),
        "/graphql/assets/graphql-ws.min.js".to_string(),
        "/console/i18n/en.json".to_string(),
        "/console/i18n/ko.json".to_string(),
    ];
    for dir in ["", "pages/"] {
        for entry in std::fs::read_dir(console_dir().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".js") || name.ends_with(".css") {
                files.push(format!("/console/{dir}{name}"));
            }
        }
    }
    files
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_gzipped_under_a_strict_policy() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // A browser asking `/` for a page goes to the console; other clients
    // get a coded 404 that says where the API is.
    let root = client
        .get(format!("{}/", app.address))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/console");
    let api = client
        .get(format!("{}/", app.address))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    let body: Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND", "{body}");
    assert_eq!(
        client
            .get(format!("{}/", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "curl and probes are not browsers"
    );

    let csp = crate::browser::page_policy(&app, "/console").await;
    assert!(!csp.contains("unsafe"), "{csp}");

    // Every file of the first load, gzipped, within the budget.
    let mut weight = 0;
    for path in first_load() {
        let r = client
            .get(format!("{}{path}", app.address))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        if !path.ends_with("/console") {
            assert_eq!(r.headers()["content-encoding"], "gzip", "{path}");
            assert_eq!(r.headers()["cache-control"], "no-cache", "{path}");
            assert!(r.headers().contains_key("etag"), "{path}");
        }
        weight += r.bytes().await.unwrap().len();
    }
    println!("console first load: {weight} bytes gzipped");
    assert!(weight <= 150 * 1024, "first load is {weight} bytes gzipped");

    let js = app.get("/console/pages/products.js").await;
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    let licences = app.get("/console/LICENSES").await;
    assert!(licences.text().await.unwrap().contains("MIT"));
    for hidden in [
        "/console/packages",
        "/console/README.md",
        "/console/index.html",
        "/console/..%2F..%2FCargo.toml",
        "/console/nothing.js",
    ] {
        assert_eq!(app.get(hidden).await.status(), 404, "{hidden}");
    }
    app.shutdown().await.unwrap();
}

/// The values of a GraphQL enum in the generated schema.
fn enum_values(schema: &str, name: &str) -> Vec<String> {
    let doc = async_graphql_parser::parse_schema(schema).unwrap();
    doc.definitions
        .iter()
        .find_map(|d| match d {
            async_graphql_parser::types::TypeSystemDefinition::Type(t)
                if t.node.name.node == name =>
            {
                match &t.node.kind {
                    async_graphql_parser::types::TypeKind::Enum(e) => Some(
                        e.values
                            .iter()
                            .map(|v| v.node.value.node.to_string())
                            .collect(),
                    ),
                    _ => None,
                }
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no enum {name} in schema.graphql"))
}

/// Every key the console can ask for is in both catalogues, and the two
/// catalogues have the same keys, none empty. Keys built at run time from a
/// prefix (`role.${...}`) are checked against the values they are built
/// from: the schema's enums and the server's error codes.
#[test]
fn every_console_string_is_in_both_catalogues() {
    let read = |lang: &str| -> BTreeMap<String, String> {
        serde_json::from_str(
            &std::fs::read_to_string(console_dir().join(format!("i18n/{lang}.json"))).unwrap(),
        )
        .unwrap()
    };
    let en = read("en");
    let ko = read("ko");
    let en_keys: BTreeSet<_> = en.keys().collect();
    let ko_keys: BTreeSet<_> = ko.keys().collect();
    assert_eq!(
        en_keys.symmetric_difference(&ko_keys).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "keys in one catalogue only"
    );
    for (lang, catalogue) in [("en", &en), ("ko", &ko)] {
        for (key, text) in catalogue {
            assert!(!text.trim().is_empty(), "{lang}: {key} is empty");
        }
    }
    // Korean text is Korean: most values hold Hangul.
    let hangul = ko
        .values()
        .filter(|v| v.chars().any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c)))
        .count();
    assert!(hangul * 10 >= ko.len() * 8, "{hangul} of {}", ko.len());

    let sections: BTreeSet<&str> = en.keys().filter_map(|k| k.split('.').next()).collect();
    let schema =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql"))
            .unwrap();
    let error_rs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/error.rs"))
            .unwrap();
    let codes: Vec<String> = error_rs
        .split("=> \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
        .map(String::from)
        .collect();
    assert!(
        codes.len() >= 15,
        "error codes read from src/error.rs: {codes:?}"
    );
    let dynamic: BTreeMap<&str, Vec<String>> = BTreeMap::from([
        ("action", enum_values(&schema, "AuditAction")),
        ("alert", enum_values(&schema, "AlertStatus")),
        ("alertKind", enum_values(&schema, "AlertKind")),
        ("entity", enum_values(&schema, "EntityType")),
        ("kind", enum_values(&schema, "MovementKind")),
        ("lang", vec!["en".into(), "ko".into()]),
        (
            "product.field",
            [
                "name",
                "category",
                "unit",
                "lowStockThreshold",
                "description",
            ]
            .map(String::from)
            .to_vec(),
        ),
        ("role", enum_values(&schema, "Role")),
        (
            "settings.source",
            ["database", "environment", "none"]
                .map(String::from)
                .to_vec(),
        ),
        (
            "status",
            [
                enum_values(&schema, "HealthStatus"),
                enum_values(&schema, "ServiceStatus"),
            ]
            .concat(),
        ),
        ("upload", enum_values(&schema, "UploadStatus")),
        ("uploads.kind", enum_values(&schema, "UploadKind")),
        ("error", [codes, vec!["NETWORK".into()]].concat()),
        (
            "products.order",
            enum_values(&schema, "ProductOrderField")
                .iter()
                .flat_map(|f| {
                    enum_values(&schema, "SortDirection")
                        .into_iter()
                        .map(move |d| format!("{f}.{d}"))
                })
                .collect(),
        ),
    ]);

    let mut missing = Vec::new();
    let mut check = |key: String, file: &str| {
        if !en.contains_key(&key) {
            missing.push(format!("{file}: {key}"));
        }
    };
    let mut sources = Vec::new();
    for dir in ["", "pages/"] {
        for entry in std::fs::read_dir(console_dir().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".js") && name != "preact-htm.js" {
                sources.push((
                    format!("{dir}{name}"),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }
    assert!(sources.len() >= 12, "{} console scripts", sources.len());
    for (file, source) in &sources {
        // Quoted keys: `t('nav.products')`, and keys handed to `t` later.
        for quoted in source.split('\'').skip(1).step_by(2) {
            let section = quoted.split('.').next().unwrap_or_default();
            if quoted.contains('.')
                && sections.contains(section)
                && quoted
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            {
                check(quoted.to_string(), file);
            }
        }
        // Keys built from a prefix: t(`role.${...}`).
        for built in source.split("t(`").skip(1) {
            let prefix = built.split("${").next().unwrap_or_default();
            let prefix = prefix.trim_end_matches('.');
            let values = dynamic
                .get(prefix)
                .unwrap_or_else(|| panic!("{file}: t(`{prefix}.${{...}}`) has no known values"));
            for value in values {
                check(format!("{prefix}.{value}"), file);
            }
        }
        // errorText builds `error.${code}`.
        if source.contains("`error.${") {
            for value in &dynamic["error"] {
                check(format!("error.{value}"), file);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "missing from the catalogues: {missing:#?}"
    );
}

/// axe-core, from npm, run on the page as it stands: serious or critical
/// violations, each with the elements it found.
async fn accessibility_violations(browser: &Browser, axe: &str) -> Vec<String> {
    let found = browser
        .client
        .execute(
            &format!(
                "{axe}\n;return axe.run(document, {{ resultTypes: ['violations'] }}).then(r => r.violations
                  .filter(v => v.impact === 'serious' || v.impact === 'critical')
                  .map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).join(', ')));"
            ),
            Vec::new(),
        )
        .await
        .expect("axe runs");
    serde_json::from_value(found).unwrap()
}

/// A screenshot of the page as it stands, and its axe-core violations.
async fn check_page(browser: &Browser, name: &str, axe: &str, violations: &mut Vec<String>) {
    browser.screenshot(name).await;
    violations.extend(accessibility_violations(browser, axe).await);
}

async fn axe_source() -> String {
    let dir = crate::clients::npm_clients().await;
    std::fs::read_to_string(dir.join("node_modules/axe-core/axe.min.js")).unwrap()
}

async fn fill(browser: &Browser, selector: &str, text: &str) {
    let input = browser
        .client
        .wait()
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"));
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

/// Picks an option of a `<select>`, as a user would.
async fn choose(browser: &Browser, selector: &str, value: &str) {
    browser
        .client
        .wait()
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("choose {value} in {selector}: {e}"));
}

async fn click(browser: &Browser, selector: &str) {
    browser
        .client
        .wait()
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

fn text_is(selector: &str, text: &str) -> String {
    format!(
        "(document.querySelector({}) || {{}}).textContent === {}",
        json!(selector),
        json!(text)
    )
}

fn body_has(text: &str) -> String {
    format!("document.body.innerText.includes({})", json!(text))
}

/// Signs in through the form; with `otp`, answers the code it asks for.
async fn sign_in(browser: &mut Browser, email: &str, password: &str, otp: Option<String>) {
    browser
        .wait_for("the sign-in form", "!!document.getElementById('signin')")
        .await;
    fill(browser, "#email", email).await;
    fill(browser, "#password", password).await;
    click(browser, "#signin button[type=submit]").await;
    if let Some(otp) = otp {
        browser
            .wait_for(
                "the two-factor code field",
                "!!document.getElementById('otp')",
            )
            .await;
        fill(browser, "#otp", &otp).await;
        click(browser, "#signin button[type=submit]").await;
    }
    browser
        .wait_for(
            "the navigation",
            "!!document.querySelector('header.top nav')",
        )
        .await;
}

/// Goes to a page of the console and waits for `ready` to show.
async fn open(browser: &mut Browser, hash: &str, ready: &str) {
    browser
        .eval(&format!("(location.hash = {}, true)", json!(hash)))
        .await;
    browser
        .wait_for(
            &format!("{hash} to render"),
            &format!("!!document.querySelector({})", json!(ready)),
        )
        .await;
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

#[tokio::test]
async fn an_admin_walks_the_post_deploy_checklist_in_the_console() {
    let fake = FakeTelegram::start().await;
    let app = spawn_app_with(&[("TELEGRAM_API_URL", &fake.url)]).await;
    let admin = app.admin_token().await;
    let (secret, recovery) = crate::security::enroll(&app, &admin).await;
    let Some(mut b) = Browser::launch("console", "en-US").await else {
        return;
    };
    let axe = axe_source().await;
    let mut violations = Vec::new();

    // A browser asking for `/` lands on the console's sign-in.
    b.goto(&format!("{}/", app.address)).await;
    b.wait_for("the sign-in form", "!!document.getElementById('signin')")
        .await;
    assert!(b.eval("location.pathname").await == json!("/console"));
    let interactive = b
        .eval("performance.getEntriesByName('stockroom:interactive')[0].startTime")
        .await;
    let weight = b
        .eval("performance.getEntriesByType('navigation')[0].transferSize + performance.getEntriesByType('resource').reduce((n, e) => n + e.transferSize, 0)")
        .await;
    println!("console: interactive at {interactive} ms; first load {weight} bytes transferred");
    assert!(weight.as_f64().unwrap() <= 150.0 * 1024.0, "{weight}");
    assert_eq!(b.eval("document.documentElement.lang").await, json!("en"));
    check_page(&b, "signin-en", &axe, &mut violations).await;

    // Sign in as the seeded admin with a two-factor code.
    sign_in(
        &mut b,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
        Some(crate::security::code(&secret, 0)),
    )
    .await;
    let stored = b
        .eval("JSON.stringify([Object.assign({}, localStorage), document.cookie])")
        .await;
    assert!(
        !stored.as_str().unwrap().contains("ccessToken"),
        "tokens in sessionStorage only: {stored}"
    );
    b.wait_for("the dashboard", "!!document.getElementById('health')")
        .await;

    // Create, edit and archive a product.
    open(&mut b, "#/products", "#products").await;
    click(&b, "#new-product").await;
    fill(&b, "#np-sku", "CON-1").await;
    fill(&b, "#np-name", "Console widget").await;
    fill(&b, "#np-threshold", "5").await;
    fill(&b, "#np-cost", "1500").await;
    fill(&b, "#np-initial", "20").await;
    click(&b, "#create-product button[type=submit]").await;
    b.wait_for("the new product's page", &text_is("#product-stock", "20"))
        .await;
    let product = b
        .eval("decodeURIComponent(location.hash.split('/')[2])")
        .await
        .as_str()
        .unwrap()
        .to_string();
    fill(&b, "#ep-name", "Console widget v2").await;
    click(&b, "#save-product").await;
    b.wait_for("the saved name", &body_has("Saved.")).await;
    assert_eq!(
        app.product(&admin, &product).await["name"],
        "Console widget v2"
    );

    // Someone else renames it meanwhile: the form shows both and keeps
    // the user's values only when asked to.
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { updateProduct(id: $id, input: { name: \"Renamed elsewhere\" }) { version } }",
        json!({ "id": product }),
    )
    .await
    .data();
    fill(&b, "#ep-category", "tools").await;
    click(&b, "#save-product").await;
    b.wait_for("the conflict", "!!document.getElementById('conflict')")
        .await;
    assert!(b.eval(&body_has("Renamed elsewhere")).await == json!(true));
    b.screenshot("conflict-en").await;
    click(&b, "#keep-mine").await;
    b.wait_for(
        "the conflict to be resolved",
        "!document.getElementById('conflict')",
    )
    .await;
    let stored = app
        .gql(
            Some(&admin),
            "query($id: ID!) { product(id: $id) { name category } }",
            json!({ "id": product }),
        )
        .await;
    assert_eq!(stored.data()["product"]["name"], "Console widget v2");
    assert_eq!(stored.data()["product"]["category"], "tools");

    // A second tab, signed in on its own (sessionStorage is per tab), shows
    // the stock change live while the first records the movements.
    let first_tab = b.client.window().await.unwrap();
    let second = b.client.new_window(true).await.unwrap();
    b.client
        .switch_to_window(second.handle.clone())
        .await
        .unwrap();
    b.goto(&format!("{}/console#/products/{product}", app.address))
        .await;
    sign_in(
        &mut b,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
        Some(recovery[0].clone()),
    )
    .await;
    b.wait_for(
        "the product in the second tab",
        &text_is("#product-stock", "20"),
    )
    .await;
    // The first tab's stream and the second's.
    app.wait_for_subscriptions(2).await;
    b.client.switch_to_window(first_tab.clone()).await.unwrap();
    for (kind, quantity, after) in [
        ("INBOUND", "5", "25"),
        ("OUTBOUND", "3", "22"),
        ("RETURN", "1", "23"),
    ] {
        click(&b, &format!("#movement-form input[value={kind}]")).await;
        fill(&b, "#mv-quantity", quantity).await;
        click(&b, "#record-movement").await;
        b.wait_for(
            &format!("{kind} recorded"),
            &text_is("#product-stock", after),
        )
        .await;
    }
    // A double click records once: both submissions carry one key.
    click(&b, "#movement-form input[value=INBOUND]").await;
    fill(&b, "#mv-quantity", "2").await;
    b.eval("(() => { const button = document.getElementById('record-movement'); button.click(); button.click(); return true; })()")
        .await;
    b.wait_for("the double click", &text_is("#product-stock", "25"))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = app
        .gql(
            Some(&admin),
            "query($id: ID!) { product(id: $id) { stock movements(first: 50) { totalCount } } }",
            json!({ "id": product }),
        )
        .await;
    assert_eq!(ledger.data()["product"]["stock"], 25);
    // The initial stock and the four movements.
    assert_eq!(ledger.data()["product"]["movements"]["totalCount"], 5);
    // A refusal, shown by its code in words; nothing recorded.
    click(&b, "#movement-form input[value=OUTBOUND]").await;
    fill(&b, "#mv-quantity", "1000").await;
    click(&b, "#record-movement").await;
    b.wait_for(
        "INSUFFICIENT_STOCK in words",
        &format!(
            "{} && !!document.querySelector('[data-code=INSUFFICIENT_STOCK]')",
            body_has("Not enough stock for this movement.")
        ),
    )
    .await;
    assert_eq!(app.product(&admin, &product).await["stock"], 25);
    check_page(&b, "product-en", &axe, &mut violations).await;

    b.client
        .switch_to_window(second.handle.clone())
        .await
        .unwrap();
    b.wait_for("the second tab to follow", &text_is("#product-stock", "25"))
        .await;
    // The live-update latency: another client's movement, from sending it
    // to the second tab's page showing it (the same machine's clock).
    let mut latencies = Vec::new();
    for round in 0..5 {
        b.eval("(() => { window.__seen = null; const el = document.getElementById('product-stock'); new MutationObserver(() => { if (window.__seen === null) window.__seen = Date.now(); }).observe(el, { childList: true, characterData: true, subtree: true }); return true; })()")
            .await;
        let sent = now_ms();
        app.record_movement(
            &admin,
            json!({ "productId": product, "kind": "INBOUND", "quantity": 1 }),
        )
        .await
        .data();
        let expected = (26 + round).to_string();
        b.wait_for(
            "another client's movement",
            &text_is("#product-stock", &expected),
        )
        .await;
        let seen = b.eval("window.__seen").await.as_f64().unwrap();
        latencies.push(seen - sent);
    }
    println!("console: from sending a movement to the second tab showing it (ms): {latencies:?}");
    b.client.close_window().await.unwrap();
    b.client.switch_to_window(first_tab).await.unwrap();

    // Archive it.
    click(&b, "#archive-product").await;
    click(&b, "#archive-confirm").await;
    b.wait_for("the archive", "!!document.getElementById('archived-note')")
        .await;
    assert!(app.product(&admin, &product).await["archivedAt"].is_string());

    // Upload a CSV and watch its progress.
    open(&mut b, "#/uploads", "#upload-form").await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("products.csv");
    std::fs::write(
        &csv,
        "sku,name,category,low_stock_threshold,unit_cost,initial_stock\nCSV-1,Csv one,tools,2,250,10\nCSV-2,Csv two,tools,10,,7\n",
    )
    .unwrap();
    b.client
        .find(Locator::Css("#up-file"))
        .await
        .unwrap()
        .send_keys(&csv.display().to_string())
        .await
        .unwrap();
    click(&b, "#upload-submit").await;
    b.wait_for(
        "the upload to complete",
        "!!document.querySelector('#upload-job[data-status=COMPLETED]')",
    )
    .await;
    assert!(
        b.eval(&body_has("2 of 2 rows read: 2 applied, 0 failed."))
            .await
            == json!(true)
    );
    let csv_product = app
        .gql(
            Some(&admin),
            "{ productBySku(sku: \"CSV-1\") { stock } }",
            json!({}),
        )
        .await;
    assert_eq!(csv_product.data()["productBySku"]["stock"], 10);
    // A dry run shows a bad row by its number and column, and applies nothing.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "sku,name,category,low_stock_threshold,initial_stock\nCSV-3,Csv three,tools,2,4\nCSV-4,Csv four,tools,-1,4\n",
    )
    .unwrap();
    click(&b, "#up-dry").await;
    b.client
        .find(Locator::Css("#up-file"))
        .await
        .unwrap()
        .send_keys(&bad.display().to_string())
        .await
        .unwrap();
    b.wait_for("the chosen file", &body_has("bad.csv")).await;
    click(&b, "#upload-submit").await;
    b.wait_for(
        "the dry run's row errors",
        "!!document.querySelector('#upload-job[data-status=COMPLETED] #upload-errors')",
    )
    .await;
    assert!(b.eval(&body_has("low_stock_threshold")).await == json!(true));
    let untouched = app
        .gql(
            Some(&admin),
            "{ productBySku(sku: \"CSV-3\") { id } }",
            json!({}),
        )
        .await;
    assert!(
        untouched.data()["productBySku"].is_null(),
        "a dry run applies nothing"
    );
    check_page(&b, "uploads-en", &axe, &mut violations).await;

    // Telegram: the token (write-only) and a chat, then the test send of
    // the checklist reaches the fake Bot API and shows SENT.
    open(&mut b, "#/alerts", "#settings-form").await;
    fill(&b, "#st-token", TOKEN).await;
    fill(&b, "#st-chats", "777").await;
    click(&b, "#settings-save").await;
    b.wait_for("the bot's name", &body_has("stockroom_test_bot"))
        .await;
    assert_eq!(
        b.eval("document.getElementById('st-token').value").await,
        json!("")
    );
    assert!(
        b.eval(&body_has(TOKEN)).await == json!(false),
        "the token is never shown"
    );
    click(&b, "#test-send").await;
    let delivered = fake.wait_delivered(1, Duration::from_secs(15)).await;
    assert_eq!(delivered[0].chat_id, "777");
    b.wait_for(
        "the test alert SENT in the queue",
        "!!document.querySelector('#alerts tr[data-status=SENT]')",
    )
    .await;
    check_page(&b, "alerts-en", &axe, &mut violations).await;

    // The audit rows of all of it, and a new one live.
    open(&mut b, "#/audit", "#audit").await;
    for action in [
        "LOGIN",
        "CREATE",
        "UPDATE",
        "DELETE",
        "STOCK_INBOUND",
        "STOCK_OUTBOUND",
        "STOCK_RETURN",
        "SETTINGS_UPDATE",
        "ALERT_TEST",
        "UPLOAD_CREATE",
    ] {
        b.wait_for(
            &format!("an audit row {action}"),
            &format!("!!document.querySelector('#audit tr[data-action={action}]')"),
        )
        .await;
    }
    let csv_two = app
        .gql(
            Some(&admin),
            "{ productBySku(sku: \"CSV-2\") { id } }",
            json!({}),
        )
        .await;
    app.record_movement(
        &admin,
        json!({ "productId": csv_two.data()["productBySku"]["id"], "kind": "ADJUSTMENT", "quantity": -2 }),
    )
    .await
    .data();
    b.wait_for(
        "a live audit row",
        "!!document.querySelector('#audit tr[data-action=STOCK_ADJUSTMENT]')",
    )
    .await;
    b.screenshot("audit-en").await;
    choose(&b, "#au-action", "STOCK_INBOUND").await;
    b.wait_for(
        "the action filter",
        "(() => { const rows = [...document.querySelectorAll('#audit tbody tr')]; return rows.length > 0 && rows.every(r => r.dataset.action === 'STOCK_INBOUND'); })()",
    )
    .await;
    violations.extend(accessibility_violations(&b, &axe).await);

    // The remaining pages render.
    open(&mut b, "#/users", "#security-report").await;
    b.wait_for("the user list", &body_has(ADMIN_EMAIL)).await;
    fill(&b, "#nu-email", "clerk@test.local").await;
    fill(&b, "#nu-name", "Clerk").await;
    fill(&b, "#nu-password", "clerk-password-123").await;
    click(&b, "#create-user button[type=submit]").await;
    b.wait_for(
        "the new user",
        "!!document.querySelector('#users tr[data-email=\"clerk@test.local\"]')",
    )
    .await;
    choose(
        &b,
        "#users tr[data-email=\"clerk@test.local\"] select",
        "MANAGER",
    )
    .await;
    b.wait_for("the role change", &body_has("Role of Clerk changed."))
        .await;
    click(
        &b,
        "#users tr[data-email=\"clerk@test.local\"] button.danger",
    )
    .await;
    b.wait_for("the deactivation", &body_has("Clerk deactivated."))
        .await;
    let clerk = app
        .gql(
            Some(&admin),
            "{ users(first: 10) { nodes { email role isActive } } }",
            json!({}),
        )
        .await;
    let clerk = clerk.data()["users"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "clerk@test.local")
        .cloned()
        .unwrap();
    assert_eq!(clerk["role"], "MANAGER");
    assert_eq!(clerk["isActive"], false);
    check_page(&b, "users-en", &axe, &mut violations).await;
    open(&mut b, "#/movements", "#find-product").await;
    fill(&b, "#mv-sku", "CSV-1").await;
    click(&b, "#find-product button[type=submit]").await;
    b.wait_for(
        "the movement form",
        "!!document.getElementById('movement-form')",
    )
    .await;
    check_page(&b, "movements-en", &axe, &mut violations).await;
    open(&mut b, "#/dashboard", "#health").await;
    b.wait_for("the low-stock list", &body_has("CSV-2")).await;
    // CON-1 is archived: CSV-1 (10) and CSV-2 (5, at or below 10) remain.
    b.wait_for("the totals", &text_is("#count-products", "2"))
        .await;
    assert!(b.eval(&body_has("15 units on hand")).await == json!(true));
    // The value at unit cost: CSV-1's 10 at 250 won; CSV-2 has no cost.
    assert!(b.eval(&text_is("#stock-value", "₩2,500")).await == json!(true));
    assert!(b.eval(&body_has("1 of 2 products costed")).await == json!(true));
    assert!(b.eval(&text_is("#count-low", "1")).await == json!(true));
    // Another client empties CSV-1: the totals follow.
    let csv_one = app
        .gql(
            Some(&admin),
            "{ productBySku(sku: \"CSV-1\") { id } }",
            json!({}),
        )
        .await;
    app.record_movement(
        &admin,
        json!({ "productId": csv_one.data()["productBySku"]["id"], "kind": "OUTBOUND", "quantity": 10 }),
    )
    .await
    .data();
    b.wait_for(
        "the totals after a movement",
        &text_is("#count-out", "1 out of stock"),
    )
    .await;
    assert!(b.eval(&text_is("#count-low", "2")).await == json!(true));
    assert!(b.eval(&body_has("5 units on hand")).await == json!(true));
    check_page(&b, "dashboard-en", &axe, &mut violations).await;
    open(&mut b, "#/products", "#products").await;
    fill(&b, "#search", "csv").await;
    b.wait_for("the search", &text_is("#products-count", "2 products"))
        .await;
    choose(&b, "#order", "STOCK.DESC").await;
    b.wait_for(
        "the order by stock",
        "[...document.querySelectorAll('#products tbody tr')].map(r => r.dataset.sku).join() === 'CSV-2,CSV-1'",
    )
    .await;
    check_page(&b, "products-en", &axe, &mut violations).await;

    // The same pages in Korean, picked in the header.
    choose(&b, ".lang select", "ko").await;
    b.wait_for("Korean", &body_has("대시보드")).await;
    assert_eq!(b.eval("document.documentElement.lang").await, json!("ko"));
    for (hash, ready, name) in [
        ("#/dashboard", "#health", "dashboard"),
        ("#/products", "#products", "products"),
        (&*format!("#/products/{product}"), "#ledger", "product"),
        ("#/movements", "#find-product", "movements"),
        ("#/uploads", "#upload-form", "uploads"),
        ("#/alerts", "#settings-form", "alerts"),
        ("#/audit", "#audit", "audit"),
        ("#/users", "#security-report", "users"),
    ] {
        open(&mut b, hash, ready).await;
        b.screenshot(&format!("{name}-ko")).await;
    }
    violations.extend(accessibility_violations(&b, &axe).await);

    assert!(violations.is_empty(), "axe: {violations:#?}");
    assert_only_from(&app.address, &b.requested().await);
    let errors = b.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.close().await;
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_viewer_is_offered_no_write_control_and_korean_shows_when_the_browser_asks() {
    // Short-lived access tokens, so that the page's refresh shows.
    let app = spawn_app_with(&[("JWT_ACCESS_TTL_SECONDS", "6")]).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "VIEW-1", 12).await;
    let email = "viewer@test.local";
    app.gql(
        Some(&admin),
        "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
        json!({ "i": { "email": email, "displayName": "Viewer", "password": "viewer-password-123", "role": "VIEWER" } }),
    )
    .await
    .data();
    let Some(mut b) = Browser::launch("console-viewer", "ko-KR").await else {
        return;
    };
    b.goto(&format!("{}/console", app.address)).await;
    b.wait_for("the Korean sign-in", &body_has("로그인")).await;
    assert_eq!(b.eval("document.documentElement.lang").await, json!("ko"));
    // By keyboard alone: type, Tab to the password, Enter to sign in.
    const TAB: &str = "\u{E004}";
    const ENTER: &str = "\u{E007}";
    click(&b, "#email").await;
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys(&format!("{email}{TAB}"))
        .await
        .unwrap();
    assert_eq!(b.eval("document.activeElement.id").await, json!("password"));
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys(&format!("viewer-password-123{ENTER}"))
        .await
        .unwrap();
    b.wait_for(
        "the navigation",
        "!!document.querySelector('header.top nav')",
    )
    .await;
    // The first Tab on a page reaches the skip link, which leads to the content.
    b.eval("(document.activeElement.blur(), true)").await;
    b.client
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys(TAB)
        .await
        .unwrap();
    assert_eq!(
        b.eval("document.activeElement.getAttribute('href')").await,
        json!("#main")
    );
    let route = b.eval("location.hash").await;
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys(ENTER)
        .await
        .unwrap();
    assert_eq!(b.eval("document.activeElement.id").await, json!("main"));
    assert_eq!(b.eval("location.hash").await, route, "the page stays");

    let nav = b
        .eval("[...document.querySelectorAll('header.top nav a')].map(a => a.getAttribute('href'))")
        .await;
    assert_eq!(nav, json!(["#/dashboard", "#/products"]), "{nav}");
    open(&mut b, "#/products", "#products").await;
    assert!(b.eval(&body_has("VIEW-1")).await == json!(true));
    assert_eq!(
        b.eval("!!document.getElementById('new-product')").await,
        json!(false)
    );
    b.screenshot("products-ko").await;
    open(&mut b, &format!("#/products/{product}"), "#ledger").await;
    for control in ["edit-product", "movement-form", "archive-product"] {
        assert_eq!(
            b.eval(&format!("!!document.getElementById('{control}')"))
                .await,
            json!(false),
            "{control}"
        );
    }
    assert_eq!(
        b.eval(
            "document.querySelectorAll('main button:not(.link), main input, main textarea').length"
        )
        .await,
        json!(0),
        "no write control on the product page"
    );
    b.screenshot("product-ko").await;

    // The tab refreshes its token before it expires; after the first one
    // expired, the live stock still follows (the stream moved to a socket
    // with the new token) and queries still work.
    const TOKEN_NOW: &str =
        "JSON.parse(sessionStorage.getItem('stockroom.console.session')).accessToken";
    let first = b.eval(TOKEN_NOW).await;
    b.wait_for("a refreshed token", &format!("{TOKEN_NOW} !== {first}"))
        .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let admin = app.admin_token().await;
    app.record_movement(
        &admin,
        json!({ "productId": product, "kind": "OUTBOUND", "quantity": 2 }),
    )
    .await
    .data();
    b.wait_for(
        "the live stock after the refresh",
        &text_is("#product-stock", "10"),
    )
    .await;
    b.eval("(() => { [...document.querySelectorAll('main button.link')].pop().click(); return true; })()")
        .await;
    b.wait_for(
        "a query after the refresh",
        "!!document.getElementById('ledger')",
    )
    .await;

    // Pages the role may not use are not offered, even by address.
    open(&mut b, "#/users", "main h1").await;
    assert!(b.eval(&body_has("페이지를 찾을 수 없습니다")).await == json!(true));
    let errors = b.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.close().await;
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_password_then_required_two_factor_are_asked_for_in_turn() {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use stockroom::entity::user;

    let app = spawn_app_with(&[
        ("PASSWORD_MAX_AGE_DAYS", "30"),
        ("TWO_FACTOR_REQUIRED_ROLES", "MANAGER"),
    ])
    .await;
    let admin = app.admin_token().await;
    let email = "manager@test.local";
    app.gql(
        Some(&admin),
        "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
        json!({ "i": { "email": email, "displayName": "Manager", "password": "manager-password-123", "role": "MANAGER" } }),
    )
    .await
    .data();
    user::Entity::update_many()
        .col_expr(
            user::Column::PasswordChangedAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::days(31)),
        )
        .filter(user::Column::Email.eq(email))
        .exec(app.state.services.conn())
        .await
        .unwrap();
    app.state.auth.users.invalidate_all();
    let Some(mut b) = Browser::launch("console-first-login", "en").await else {
        return;
    };
    b.goto(&format!("{}/console", app.address)).await;
    b.wait_for("the sign-in form", "!!document.getElementById('signin')")
        .await;
    fill(&b, "#email", email).await;
    fill(&b, "#password", "manager-password-123").await;
    click(&b, "#signin button[type=submit]").await;

    // First the expired password.
    b.wait_for(
        "the password change",
        "!!document.getElementById('password-change')",
    )
    .await;
    b.screenshot("password-en").await;
    fill(&b, "#pw-current", "manager-password-123").await;
    fill(&b, "#pw-new", "a-fresh-manager-passphrase").await;
    fill(&b, "#pw-repeat", "a-different-passphrase").await;
    click(&b, "#password-change button[type=submit]").await;
    b.wait_for("the mismatch", &body_has("The two new passwords differ."))
        .await;
    fill(&b, "#pw-repeat", "a-fresh-manager-passphrase").await;
    click(&b, "#password-change button[type=submit]").await;
    // Every session was revoked: sign in again with the new password.
    b.wait_for(
        "the sign-in notice",
        &body_has("Sign in with the new password."),
    )
    .await;
    fill(&b, "#email", email).await;
    fill(&b, "#password", "a-fresh-manager-passphrase").await;
    click(&b, "#signin button[type=submit]").await;

    // Then two-factor login, which the role requires.
    click(&b, "#twofactor-begin").await;
    b.wait_for(
        "the QR code",
        "!!document.querySelector('img.qr') && document.querySelector('img.qr').naturalWidth > 0",
    )
    .await;
    b.screenshot("enroll-en").await;
    let secret = b
        .eval("document.getElementById('totp-secret').textContent")
        .await
        .as_str()
        .unwrap()
        .to_string();
    fill(&b, "#tf-code", &crate::security::code(&secret, 0)).await;
    click(&b, "#twofactor-confirm button[type=submit]").await;
    b.wait_for(
        "the recovery codes",
        "document.querySelectorAll('#recovery-codes li').length >= 8",
    )
    .await;
    b.eval(
        "(() => { [...document.querySelectorAll('main button')].pop().click(); return true; })()",
    )
    .await;
    b.wait_for("the dashboard", "!!document.getElementById('health')")
        .await;
    // A manager is offered the manager's pages.
    let nav = b
        .eval("[...document.querySelectorAll('header.top nav a')].map(a => a.getAttribute('href'))")
        .await;
    assert_eq!(
        nav,
        json!([
            "#/dashboard",
            "#/products",
            "#/movements",
            "#/uploads",
            "#/audit"
        ]),
        "{nav}"
    );
    let me = app.login(email, "a-fresh-manager-passphrase").await;
    me.expect_code("TWO_FACTOR_REQUIRED");
    let errors = b.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.close().await;
    app.shutdown().await.unwrap();
}
