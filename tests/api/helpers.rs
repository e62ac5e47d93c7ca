use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use stockroom::config::Config;
use stockroom::startup::Application;
use stockroom::state::AppState;
use tokio::sync::oneshot;

pub const ADMIN_EMAIL: &str = "admin@test.local";
pub const ADMIN_PASSWORD: &str = "admin-password-123";
pub const JWT_SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

/// A stopped app's database, kept until this drops.
pub struct KeptDatabase(#[allow(dead_code)] TestDb);

/// Where a test's database lives; dropped with the test.
pub enum TestDb {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime: use a thread of our own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(db) = Database::connect(&admin_url).await {
                        let _ = db
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                        let _ = db.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// The database URL a new test gets, and the guard that removes it.
///
/// The server is read from STOCKROOM_TEST_POSTGRES_URL now, but the suite's
/// database was chosen when the tests were compiled (`is_postgres`): the two
/// must agree, or the tests of the other database would run.
pub async fn fresh_database() -> (String, TestDb) {
    let admin_url = std::env::var("STOCKROOM_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.is_empty());
    match (is_postgres(), admin_url.is_some()) {
        (false, true) => panic!(
            "STOCKROOM_TEST_POSTGRES_URL is set, but these tests were compiled for SQLite \
             (without it): rebuild them with it set, e.g. run `cargo test` with it"
        ),
        (true, false) => panic!(
            "STOCKROOM_TEST_POSTGRES_URL is not set, but these tests were compiled for \
             PostgreSQL (with it): rebuild them without it, e.g. run `cargo test` without it"
        ),
        _ => {}
    }
    match admin_url {
        Some(admin_url) => {
            let name = format!("stockroom_test_{}", uuid::Uuid::new_v4().simple());
            let db = Database::connect(&admin_url)
                .await
                .expect("STOCKROOM_TEST_POSTGRES_URL is set but PostgreSQL is unreachable");
            db.execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            db.close().await.ok();
            let base = admin_url
                .rsplit_once('/')
                .map(|(b, _)| b.to_string())
                .expect("database URL has a path");
            (
                format!("{base}/{name}"),
                TestDb::Postgres { admin_url, name },
            )
        }
        None => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}/test.db?mode=rwc", dir.path().display());
            (url, TestDb::Sqlite(dir))
        }
    }
}

/// Whether the suite runs on PostgreSQL: decided when the tests are compiled
/// (build.rs turns `cfg(test_postgres)` on when STOCKROOM_TEST_POSTGRES_URL
/// is set), as the tests of one database only are ignored on the other.
pub fn is_postgres() -> bool {
    cfg!(test_postgres)
}

/// One OUTBOUND movement of 1 over HTTP, asserted recorded: for writers on
/// tasks of their own, which hold no `TestApp`.
pub async fn outbound_over_http(
    client: &reqwest::Client,
    address: &str,
    token: &str,
    product: &str,
) {
    let r: Value = client
        .post(format!("{address}/graphql"))
        .bearer_auth(token)
        .json(&json!({
            "query": "mutation($i: StockMovementInput!) { recordStockMovement(input: $i) { id } }",
            "variables": { "i": { "productId": product, "kind": "OUTBOUND", "quantity": 1 } }
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["errors"].is_null(), "{r}");
}

/// SQL comparing a uuid column with `id` (PostgreSQL stores uuids as
/// `uuid`, SQLite as 16-byte blobs).
pub fn uuid_eq(column: &str, id: &str) -> String {
    let id = uuid::Uuid::parse_str(id).expect("a uuid");
    if is_postgres() {
        format!("{column} = '{id}'")
    } else {
        format!("{column} = X'{}'", id.simple())
    }
}

pub struct TestApp {
    pub address: String,
    /// The `METRICS_ADDR` listener, when the test asked for one.
    pub metrics_address: Option<String>,
    pub database_url: String,
    pub state: AppState,
    pub client: reqwest::Client,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: TestDb,
}

/// Settings every test app gets; a test overrides what it is about.
fn base_vars(database_url: &str) -> HashMap<String, String> {
    [
        ("APP_ENV", "development"),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_URL", database_url),
        ("JWT_SECRET", JWT_SECRET),
        ("ADMIN_EMAIL", ADMIN_EMAIL),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("THROTTLE_DEFAULT_LIMIT", "1000000"),
        ("THROTTLE_LOGIN_LIMIT", "100000"),
        ("DB_MAX_CONNECTIONS", "10"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let (database_url, guard) = fresh_database().await;
    let mut vars = base_vars(&database_url);
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    start(vars, database_url, guard).await
}

async fn start(vars: HashMap<String, String>, database_url: String, guard: TestDb) -> TestApp {
    try_start(vars, database_url, guard)
        .await
        .expect("app builds")
}

async fn try_start(
    vars: HashMap<String, String>,
    database_url: String,
    guard: TestDb,
) -> anyhow::Result<TestApp> {
    let config = Config::from_vars(vars).expect("test config is valid");
    let app = Application::build(config).await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app.metrics_port().map(|p| format!("http://127.0.0.1:{p}"));
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Ok(TestApp {
        address,
        metrics_address,
        database_url,
        state,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        stop,
        server,
        _db: guard,
    })
}

/// An app whose database cannot be reached (nothing listens on port 1).
pub async fn spawn_app_without_database() -> TestApp {
    let url = "postgres://postgres@127.0.0.1:1/none".to_string();
    let mut vars = base_vars(&url);
    vars.insert("AUTO_MIGRATE".into(), "false".into());
    vars.insert("DB_ACQUIRE_TIMEOUT_MS".into(), "500".into());
    vars.insert("HEALTH_DB_TIMEOUT_MS".into(), "500".into());
    let dir = tempfile::tempdir().unwrap();
    start(vars, url, TestDb::Sqlite(dir)).await
}

/// A GraphQL response, with helpers for the parts tests look at.
#[derive(Debug)]
pub struct Gql {
    pub status: StatusCode,
    pub body: Value,
}

impl Gql {
    pub fn data(&self) -> &Value {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected errors: {}",
            self.body
        );
        &self.body["data"]
    }

    pub fn error_code(&self) -> Option<&str> {
        self.body["errors"][0]["extensions"]["code"].as_str()
    }

    pub fn error(&self) -> &Value {
        &self.body["errors"][0]
    }

    /// Asserts the first error's code and returns the error.
    pub fn expect_code(&self, code: &str) -> &Value {
        assert_eq!(
            self.error_code(),
            Some(code),
            "expected {code}, got: {}",
            self.body
        );
        self.error()
    }
}

impl TestApp {
    /// Sends the shutdown signal and waits (bounded) for the server to stop.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .map_err(|_| anyhow::anyhow!("server did not stop within 10 s"))??
    }

    /// A second instance on this app's database (the first keeps owning it).
    pub async fn spawn_another(&self, overrides: &[(&str, &str)]) -> TestApp {
        self.try_spawn_another(overrides).await.expect("app builds")
    }

    /// [`Self::spawn_another`], or why the instance refused to start.
    pub async fn try_spawn_another(&self, overrides: &[(&str, &str)]) -> anyhow::Result<TestApp> {
        let mut vars = base_vars(&self.database_url);
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        let spare = TestDb::Sqlite(tempfile::tempdir().unwrap());
        try_start(vars, self.database_url.clone(), spare).await
    }

    /// Shuts down gracefully but keeps the database for inspection (it is
    /// removed when the returned value drops).
    pub async fn shutdown_keeping_database(self) -> (anyhow::Result<()>, KeptDatabase) {
        let TestApp {
            stop, server, _db, ..
        } = self;
        let _ = stop.send(());
        let result = match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(anyhow::anyhow!("server did not stop within 10 s")),
        };
        (result, KeptDatabase(_db))
    }

    pub async fn post_graphql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
        headers: &[(&str, &str)],
    ) -> Gql {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let body = resp.json::<Value>().await.expect("JSON body");
        Gql { status, body }
    }

    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Gql {
        self.post_graphql(token, query, variables, &[]).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Gql {
        self.gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken accessTokenExpiresAt refreshToken user { id email role } } }",
            json!({ "i": { "email": email, "password": password } }),
        )
        .await
    }

    pub async fn admin_token(&self) -> String {
        let r = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        r.data()["login"]["accessToken"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates a user with `role` (as the admin) and returns (id, token).
    pub async fn user_with_role(&self, admin: &str, role: &str) -> (String, String) {
        let email = format!(
            "{}-{}@test.local",
            role.to_lowercase(),
            uuid::Uuid::new_v4().simple()
        );
        let password = "user-password-123";
        let r = self
            .gql(
                Some(admin),
                "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                json!({ "i": { "email": email, "displayName": role, "password": password, "role": role } }),
            )
            .await;
        let id = r.data()["createUser"]["id"].as_str().unwrap().to_string();
        let token = self.login(&email, password).await.data()["login"]["accessToken"]
            .as_str()
            .unwrap()
            .to_string();
        (id, token)
    }

    /// Creates a product and returns its id.
    pub async fn create_product(&self, token: &str, sku: &str, initial_stock: i32) -> String {
        let r = self
            .gql(
                Some(token),
                "mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }",
                json!({ "i": { "sku": sku, "name": format!("Product {sku}"), "initialStock": initial_stock } }),
            )
            .await;
        r.data()["createProduct"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn record_movement(&self, token: &str, input: Value) -> Gql {
        self.gql(
            Some(token),
            "mutation($i: StockMovementInput!) { recordStockMovement(input: $i) { id kind quantity balanceAfter createdBy { id } product { id stock version } } }",
            json!({ "i": input }),
        )
        .await
    }

    pub async fn product(&self, token: &str, id: &str) -> Value {
        let r = self
            .gql(
                Some(token),
                "query($id: ID!) { product(id: $id) { id sku name stock version lowStockThreshold archivedAt } }",
                json!({ "id": id }),
            )
            .await;
        r.data()["product"].clone()
    }

    /// Waits until `n` instances' events listeners are listening on this
    /// database (PostgreSQL): a NOTIFY sent before LISTEN is not delivered.
    pub async fn wait_for_listeners(&self, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .count("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'stockroom-events' AND datname = current_database() AND query LIKE 'LISTEN%'")
            .await
            < n
        {
            assert!(Instant::now() < deadline, "the listeners did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Cuts every events listener's connection to this database
    /// (PostgreSQL); returns how many were cut.
    pub async fn kill_listeners(&self) -> i64 {
        self.count("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'stockroom-events' AND datname = current_database()")
            .await
    }

    /// Waits until this instance's events listener is back.
    pub async fn wait_for_listener_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.state.services.bus().health().listener_up {
            assert!(Instant::now() < deadline, "the listener did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a count over one table on the app's own database.
    pub async fn count(&self, sql: &str) -> i64 {
        self.scalar(sql).await
    }

    /// The first column of the one row `sql` returns, on the app's own
    /// database.
    pub async fn scalar<T: sea_orm::TryGetable>(&self, sql: &str) -> T {
        let db = self.state.services.conn();
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                sql.to_string(),
            ))
            .await
            .unwrap()
            .expect("a row");
        row.try_get_by_index::<T>(0).unwrap()
    }

    /// Every product's stock equals the sum of its movements, and every
    /// movement's balance follows from the one before.
    pub async fn ledger_is_clean(&self) {
        let (_, drift) = stockroom::service::stock::verify_ledger(self.state.services.conn())
            .await
            .unwrap();
        assert!(drift.is_empty(), "ledger drift: {drift:?}");
    }

    pub async fn exec(&self, sql: &str) {
        self.state
            .services
            .conn()
            .execute_unprepared(sql)
            .await
            .unwrap();
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.address, path))
            .send()
            .await
            .unwrap()
    }
}

/// The stockroom binary built for this test run.
pub fn stockroom_bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stockroom"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir());
    cmd
}

/// Runs a `stockroom` command to its end, with `stdin` as its standard
/// input, off the test's runtime thread: the apps it talks to need that
/// thread meanwhile, and a blocking wait there could hold an app's write
/// transaction open until the command's own wait for the lock gives up
/// ("database is locked" on SQLite).
pub async fn run_cli(
    mut command: std::process::Command,
    stdin: Option<String>,
) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        use std::process::Stdio;
        let Some(input) = stdin else {
            return command.output().unwrap();
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{input}").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// Two applications started at the same moment on one fresh database, as two
/// instances of a deployment would be.
pub async fn spawn_pair_on_one_database() -> (TestApp, TestApp) {
    spawn_pair_with(&[]).await
}

pub async fn spawn_pair_with(overrides: &[(&str, &str)]) -> (TestApp, TestApp) {
    let (database_url, guard) = fresh_database().await;
    let spare = TestDb::Sqlite(tempfile::tempdir().unwrap());
    let mut vars = base_vars(&database_url);
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    let (a, b) = tokio::join!(
        start(vars.clone(), database_url.clone(), spare),
        start(vars.clone(), database_url.clone(), guard),
    );
    (a, b)
}

/// A GraphQL-over-WebSocket client speaking graphql-transport-ws or, with
/// `legacy`, the older graphql-ws protocol. Pings are answered and skipped.
pub struct Ws {
    inner: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    pub legacy: bool,
    /// Keep-alive pings (or legacy `ka`) received so far.
    pub pings: usize,
}

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY_WS: &str = "graphql-ws";

/// How long a test waits for a message it expects.
pub const WS_WAIT: Duration = Duration::from_secs(10);

impl TestApp {
    /// Opens a WebSocket to /graphql/ws; `recv_buffer` shrinks the client's
    /// socket buffer (a slow reader fills up sooner).
    pub async fn ws_connect(
        &self,
        protocol: &str,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = self.address.replace("http://", "ws://") + "/graphql/ws";
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        let addr: std::net::SocketAddr =
            self.address.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let stream = socket.connect(addr).await.unwrap();
        let (inner, _) = tokio_tungstenite::client_async(request, stream).await?;
        Ok(Ws {
            inner,
            legacy: protocol == LEGACY_WS,
            pings: 0,
        })
    }

    /// A graphql-transport-ws connection, initialised with `token`.
    pub async fn ws(&self, token: &str) -> Ws {
        self.ws_with(TRANSPORT_WS, token).await
    }

    pub async fn ws_with(&self, protocol: &str, token: &str) -> Ws {
        let mut ws = self.ws_connect(protocol, None).await.unwrap();
        ws.init(json!({ "Authorization": format!("Bearer {token}") }))
            .await;
        let ack = ws.next().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        ws
    }

    /// Waits until exactly `n` subscription streams are open on this
    /// instance (after some ended).
    pub async fn wait_for_subscriptions_to_be(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WS_WAIT;
        while self.state.services.bus().health().subscriptions != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} subscriptions open, not {n}",
                self.state.services.bus().health().subscriptions
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until this instance has `n` open subscription streams, so that
    /// what a test does next is seen by them.
    pub async fn wait_for_subscriptions(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WS_WAIT;
        while self.state.services.bus().health().subscriptions < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} subscriptions opened",
                self.state.services.bus().health().subscriptions
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Ws {
    /// The underlying socket, for tests that read frames themselves.
    pub fn raw(&mut self) -> &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
        &mut self.inner
    }

    pub async fn send(&mut self, message: Value) {
        use futures_util::SinkExt;
        self.inner
            .send(tokio_tungstenite::tungstenite::Message::Text(
                message.to_string().into(),
            ))
            .await
            .unwrap();
    }

    /// Sends a text frame as it is, JSON or not.
    pub async fn raw_send(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.inner
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .unwrap();
    }

    /// The next text message, whatever its type (pings and pongs included).
    pub async fn raw_next(&mut self) -> Value {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match tokio::time::timeout(WS_WAIT, self.inner.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
                Ok(Some(Ok(Message::Close(frame)))) => panic!("socket closed: {frame:?}"),
                Ok(Some(Ok(_))) => {}
                other => panic!("no message within {WS_WAIT:?}: {other:?}"),
            }
        }
    }

    pub async fn init(&mut self, payload: Value) {
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.legacy { "start" } else { "subscribe" };
        self.send(json!({ "id": id, "type": kind, "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next protocol message, or None when nothing came within `wait`.
    /// Panics when the socket closes.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inner.next())
                .await
                .ok()?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    match v["type"].as_str() {
                        Some("ping") => {
                            self.pings += 1;
                            self.send(json!({ "type": "pong" })).await;
                        }
                        Some("ka") => self.pings += 1,
                        Some("pong") => {}
                        _ => return Some(v),
                    }
                }
                Some(Ok(Message::Close(frame))) => panic!("socket closed: {frame:?}"),
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        self.next_within(WS_WAIT)
            .await
            .expect("a WebSocket message within the wait")
    }

    /// The next `next` (or legacy `data`) payload of subscription `id`;
    /// messages of other subscriptions are skipped.
    pub async fn event(&mut self, id: &str) -> Value {
        loop {
            let m = self.next().await;
            if m["id"] == id {
                let kind = m["type"].as_str().unwrap_or_default();
                assert!(
                    kind == "next" || kind == "data",
                    "expected an event, got {m}"
                );
                return m["payload"].clone();
            }
        }
    }

    /// Everything that arrives until the socket is quiet for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(m) = self.next_within(quiet).await {
            out.push(m);
        }
        out
    }

    /// Waits for the server's close frame and returns its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match tokio::time::timeout(WS_WAIT, self.inner.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    return (frame.code.into(), frame.reason.to_string());
                }
                Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => {
                    return (0, String::new());
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert!(
                        matches!(
                            v["type"].as_str(),
                            Some("ping" | "ka" | "connection_error" | "connection_ack")
                        ),
                        "expected a close, got {v}"
                    );
                }
                Ok(Some(Ok(_))) => {}
                Err(_) => panic!("no close within {WS_WAIT:?}"),
            }
        }
    }
}

/// An application on a runtime of its own, so that a test can kill it as a
/// crash would: every task stops where it is, nothing more is recorded.
pub struct CrashableApp {
    pub address: String,
    pub database_url: String,
    runtime: Option<tokio::runtime::Runtime>,
    _db: TestDb,
}

pub async fn spawn_crashable(overrides: &[(&str, &str)]) -> CrashableApp {
    let (database_url, guard) = fresh_database().await;
    let mut vars = base_vars(&database_url);
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    let config = Config::from_vars(vars).expect("test config is valid");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = oneshot::channel();
    runtime.spawn(async move {
        let app = Application::build(config).await.expect("app builds");
        let _ = tx.send(app.port());
        let _ = app.run_until_stopped(std::future::pending()).await;
    });
    let port = rx.await.unwrap();
    CrashableApp {
        address: format!("http://127.0.0.1:{port}"),
        database_url,
        runtime: Some(runtime),
        _db: guard,
    }
}

impl CrashableApp {
    /// Kills the application: no task runs another step.
    pub fn crash(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// A new application on this one's database.
    pub async fn spawn_another(&self, overrides: &[(&str, &str)]) -> TestApp {
        let mut vars = base_vars(&self.database_url);
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        let spare = TestDb::Sqlite(tempfile::tempdir().unwrap());
        start(vars, self.database_url.clone(), spare).await
    }
}

impl Drop for CrashableApp {
    fn drop(&mut self) {
        self.crash();
    }
}
