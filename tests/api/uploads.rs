//! Uploads: CSV and Excel imports through the queue and its worker.

use std::time::Duration;

use serde_json::{Value, json};
use stockroom::uploads::UploadWorker;
use stockroom::uploads::worker::Policy;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, spawn_crashable, spawn_pair_with};

const JOB_FIELDS: &str = "id kind filename status dryRun totalRows processedRows succeededRows failedRows error cancelRequested createdBy { email } errors(first: 1000) { row column message }";

/// No worker of its own: a test drives one with `run_once`.
const NO_WORKER: (&str, &str) = ("UPLOAD_WORKER_ENABLED", "false");

impl TestApp {
    /// `createUploadJob` over the GraphQL multipart request spec.
    pub async fn upload(
        &self,
        token: &str,
        kind: &str,
        name: &str,
        bytes: Vec<u8>,
        dry_run: bool,
    ) -> Value {
        let operations = json!({
            "query": format!("mutation($k: UploadKind!, $f: Upload!, $d: Boolean) {{ createUploadJob(kind: $k, file: $f, dryRun: $d) {{ {JOB_FIELDS} }} }}"),
            "variables": { "k": kind, "f": null, "d": dry_run },
        });
        let form = reqwest::multipart::Form::new()
            .text("operations", operations.to_string())
            .text("map", json!({ "0": ["variables.f"] }).to_string())
            .part(
                "0",
                reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
            );
        self.client
            .post(format!("{}/graphql", self.address))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    }

    /// `POST /api/v1/uploads`.
    pub async fn upload_rest(&self, token: &str, query: &str, bytes: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/api/v1/uploads?{query}", self.address))
            .bearer_auth(token)
            .body(bytes)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    pub async fn job(&self, token: &str, id: &str) -> Value {
        let r = self
            .gql(
                Some(token),
                &format!("query($id: ID!) {{ uploadJob(id: $id) {{ {JOB_FIELDS} }} }}"),
                json!({ "id": id }),
            )
            .await;
        r.data()["uploadJob"].clone()
    }

    /// Polls the job until it has finished.
    pub async fn finished_job(&self, token: &str, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.job(token, id).await;
            if ["COMPLETED", "FAILED", "CANCELLED"]
                .contains(&job["status"].as_str().unwrap_or_default())
            {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job did not finish: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn worker(&self, batch_size: usize) -> UploadWorker {
        UploadWorker::with_policy(
            Policy {
                batch_size,
                max_rows: 100_000,
                lease: Duration::from_secs(60),
                poll: Duration::from_secs(60),
                retention: Duration::from_secs(86_400),
            },
            self.state.services.clone(),
            CancellationToken::new(),
        )
    }
}

fn id_of(job: &Value) -> String {
    job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job: {job}"))
        .to_string()
}

fn errors_of(job: &Value) -> Vec<(i64, Option<String>, String)> {
    job["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_i64().unwrap(),
                e["column"].as_str().map(String::from),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// 1,000 product rows, 7 of them bad, as (header, rows).
fn products_table() -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "SKU",
        "Name",
        "description",
        "category",
        "unit",
        "low_stock_threshold",
        "initial_stock",
    ];
    let mut rows = Vec::new();
    for i in 1..=1000 {
        let mut row = vec![
            format!("P-{i:04}"),
            format!("Product {i}"),
            String::new(),
            "bulk".to_string(),
            "ea".to_string(),
            "5".to_string(),
            if i % 10 == 0 {
                "20".to_string()
            } else {
                String::new()
            },
        ];
        match i {
            10 => row[0] = String::new(),    // sku missing
            100 => row[5] = "lots".into(),   // not a number
            200 => row[0] = "P-0001".into(), // a SKU twice
            300 => row[1] = String::new(),   // a new product needs a name
            400 => row[5] = "-5".into(),     // threshold below zero
            500 => row[6] = "1.5".into(),    // not a whole number
            999 => row[0] = "P 999".into(),  // a space in a SKU
            _ => {}
        }
        rows.push(row);
    }
    (header, rows)
}

fn expected_product_errors() -> Vec<(i64, Option<String>)> {
    [
        (10, "sku"),
        (100, "low_stock_threshold"),
        (200, "sku"),
        (300, "name"),
        (400, "low_stock_threshold"),
        (500, "initial_stock"),
        (999, "sku"),
    ]
    .into_iter()
    .map(|(r, c)| (r, Some(c.to_string())))
    .collect()
}

fn to_csv(header: &[&str], rows: &[Vec<String>], delimiter: u8) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(Vec::new());
    w.write_record(header).unwrap();
    for r in rows {
        w.write_record(r).unwrap();
    }
    w.into_inner().unwrap()
}

fn to_xlsx(header: &[&str], rows: &[Vec<String>]) -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in header.iter().enumerate() {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            // Numbers as numbers, as a spreadsheet holds them.
            match v.parse::<f64>() {
                Ok(n) => sheet.write_number(r as u32 + 1, c as u16, n).unwrap(),
                Err(_) => sheet.write_string(r as u32 + 1, c as u16, v).unwrap(),
            };
        }
    }
    book.save_to_buffer().unwrap()
}

async fn check_products_import(file: Vec<u8>, name: &str) {
    let app = spawn_app_with(&[("UPLOAD_BATCH_SIZE", "128")]).await;
    let admin = app.admin_token().await;
    let (_, manager) = app.user_with_role(&admin, "MANAGER").await;
    let created = app.upload(&manager, "PRODUCTS", name, file, false).await;
    let job = &created["data"]["createUploadJob"];
    assert_eq!(job["status"], "QUEUED", "{created}");
    assert_eq!(job["filename"], name);
    let job = app.finished_job(&manager, &id_of(job)).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(
        (
            &job["totalRows"],
            &job["processedRows"],
            &job["succeededRows"],
            &job["failedRows"]
        ),
        (&json!(1000), &json!(1000), &json!(993), &json!(7))
    );
    let errors = errors_of(&job);
    let got: Vec<(i64, Option<String>)> = errors.iter().map(|(r, c, _)| (*r, c.clone())).collect();
    assert_eq!(got, expected_product_errors(), "{errors:?}");
    assert!(errors[2].2.contains("first on row 1"), "{errors:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM products").await, 993);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_logs WHERE action = 'CREATE' AND entity_type = 'PRODUCT'"
        )
        .await,
        993
    );
    // Every tenth row had an initial stock (rows 10 to 500 of the bad ones
    // are among them).
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements WHERE kind = 'INBOUND'")
            .await,
        94
    );
    assert_eq!(
        app.count("SELECT COALESCE(SUM(stock), 0) FROM products")
            .await,
        94 * 20
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_logs WHERE action IN ('UPLOAD_CREATE', 'UPLOAD_FINISH')"
        )
        .await,
        2
    );
    assert_eq!(
        job["createdBy"]["email"]
            .as_str()
            .map(|e| e.starts_with("manager-")),
        Some(true)
    );
    app.ledger_is_clean().await;
}

#[tokio::test]
async fn a_products_csv_applies_good_rows_and_reports_bad_ones() {
    let (header, rows) = products_table();
    check_products_import(to_csv(&header, &rows, b';'), "catalogue.csv").await;
}

#[tokio::test]
async fn a_products_xlsx_gives_the_same_result_as_its_csv() {
    let (header, rows) = products_table();
    check_products_import(to_xlsx(&header, &rows), "catalogue.xlsx").await;
}

#[tokio::test]
async fn an_existing_sku_updates_only_the_given_fields() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let id = app.create_product(&admin, "UPD-1", 7).await;
    let file = b"sku,name,category,low_stock_threshold,initial_stock\nupd-1,,tools,3,50\n".to_vec();
    let job = app.upload(&admin, "PRODUCTS", "u.csv", file, false).await;
    let job = app
        .finished_job(&admin, &id_of(&job["data"]["createUploadJob"]))
        .await;
    assert_eq!(
        (&job["succeededRows"], &job["failedRows"]),
        (&json!(1), &json!(0)),
        "{job}"
    );
    let p = app.product(&admin, &id).await;
    // The name stays, initial_stock is for new products only.
    assert_eq!(
        (&p["name"], &p["stock"], &p["lowStockThreshold"]),
        (&json!("Product UPD-1"), &json!(7), &json!(3))
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_logs WHERE action = 'UPDATE' AND entity_type = 'PRODUCT'"
        )
        .await,
        1
    );
}

/// A product with stock 10 and a file whose outbound rows run out part way.
fn movements_file() -> Vec<u8> {
    b"sku,kind,quantity,note,reference\n\
      m-1,outbound,4,first pick,SO-1\n\
      M-1,OUTBOUND,4,,SO-2\n\
      M-1,outbound,4,,SO-3\n\
      M-1,Inbound,5,pallet,PO-9\n\
      M-1,outbound,7,,SO-4\n\
      M-1,outbound,1,,SO-5\n\
      M-1,adjustment,-1,stocktake,\n\
      NOPE-1,inbound,1,,\n\
      M-1,sideways,1,,\n\
      M-1,return,2,,RMA-1\n"
        .to_vec()
}

fn expected_movement_errors() -> Vec<(i64, Option<String>)> {
    [
        (3, "quantity"),
        (6, "quantity"),
        (7, "quantity"),
        (8, "sku"),
        (9, "kind"),
    ]
    .into_iter()
    .map(|(r, c)| (r, Some(c.to_string())))
    .collect()
}

#[tokio::test]
async fn movements_that_exceed_stock_fail_alone_and_a_dry_run_predicts_them() {
    let app = spawn_app_with(&[
        NO_WORKER,
        ("TELEGRAM_BOT_TOKEN", "123:test"),
        ("TELEGRAM_CHAT_IDS", "42"),
        ("TELEGRAM_API_URL", "http://127.0.0.1:9"),
    ])
    .await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "M-1", 10).await;
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { updateProduct(id: $id, input: { lowStockThreshold: 3 }) { id } }",
        json!({ "id": product }),
    )
    .await;
    let count_all = async || {
        (
            app.count("SELECT COUNT(*) FROM products").await,
            app.count("SELECT COUNT(*) FROM stock_movements").await,
            app.count("SELECT COUNT(*) FROM audit_logs WHERE action NOT IN ('UPLOAD_CREATE', 'UPLOAD_FINISH')").await,
            app.count("SELECT COUNT(*) FROM alerts").await,
            app.count("SELECT COALESCE(SUM(stock), 0) FROM products").await,
        )
    };
    let before = count_all().await;

    // The dry run first, in batches of 2 so that its simulation carries over.
    let mut ws = app.ws(&admin).await;
    ws.subscribe(
        "s",
        "subscription { stockChanged { movement { id } } }",
        json!({}),
    )
    .await;
    app.wait_for_subscriptions(1).await;
    let dry = app
        .upload(&admin, "STOCK_MOVEMENTS", "m.csv", movements_file(), true)
        .await;
    let dry_id = id_of(&dry["data"]["createUploadJob"]);
    app.worker(2).run_once().await.unwrap();
    let dry = app.job(&admin, &dry_id).await;
    assert_eq!(
        (&dry["status"], &dry["dryRun"]),
        (&json!("COMPLETED"), &json!(true)),
        "{dry}"
    );
    assert_eq!(count_all().await, before, "a dry run wrote something");
    assert!(
        ws.drain(Duration::from_millis(300)).await.is_empty(),
        "a dry run published a stock event"
    );

    let real = app
        .upload(&admin, "STOCK_MOVEMENTS", "m.csv", movements_file(), false)
        .await;
    let real_id = id_of(&real["data"]["createUploadJob"]);
    app.worker(2).run_once().await.unwrap();
    let real = app.job(&admin, &real_id).await;
    assert_eq!(real["status"], "COMPLETED", "{real}");
    let got: Vec<(i64, Option<String>)> = errors_of(&real)
        .iter()
        .map(|(r, c, _)| (*r, c.clone()))
        .collect();
    assert_eq!(got, expected_movement_errors(), "{real}");
    assert_eq!(
        errors_of(&real)[0].2,
        "insufficient stock: 2 available, 4 requested"
    );
    for field in ["totalRows", "processedRows", "succeededRows", "failedRows"] {
        assert_eq!(dry[field], real[field], "{field}");
    }
    assert_eq!(errors_of(&dry), errors_of(&real));
    assert_eq!(
        (&real["succeededRows"], &real["failedRows"]),
        (&json!(5), &json!(5))
    );
    // 10 -4 -4 +5 -7 +2 = 2
    assert_eq!(app.product(&admin, &product).await["stock"], 2);
    let after = count_all().await;
    assert_eq!(after.1 - before.1, 5);
    assert_eq!(after.2 - before.2, 5, "one audit row per applied movement");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM alerts WHERE kind = 'UPLOAD_FINISHED'")
            .await,
        1
    );
    assert!(
        app.count("SELECT COUNT(*) FROM alerts WHERE kind IN ('LOW_STOCK', 'OUT_OF_STOCK')")
            .await
            >= 1
    );
    assert_eq!(
        ws.drain(Duration::from_millis(500)).await.len(),
        5,
        "one stock event per applied row"
    );
    app.ledger_is_clean().await;
}

#[tokio::test]
async fn a_missing_or_unknown_column_fails_the_job_and_applies_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for (file, needle) in [
        (
            &b"name,category\nWidget,x\n"[..],
            "missing required column \"sku\"",
        ),
        (
            &b"sku,name,colour\nW-1,Widget,red\n"[..],
            "unknown column \"colour\"",
        ),
    ] {
        let (status, job) = app
            .upload_rest(&admin, "kind=PRODUCTS", file.to_vec())
            .await;
        assert_eq!(status, 202, "{job}");
        let job = app.finished_job(&admin, &id_of(&job)).await;
        assert_eq!(job["status"], "FAILED");
        assert!(job["error"].as_str().unwrap().contains(needle), "{job}");
        assert_eq!(
            (&job["processedRows"], &job["errors"]),
            (&json!(0), &json!([]))
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM products").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_logs WHERE action = 'UPLOAD_FINISH'")
            .await,
        2
    );
}

#[tokio::test]
async fn oversized_garbage_and_unauthorised_uploads_are_refused() {
    let app = spawn_app_with(&[("UPLOAD_MAX_BYTES", "4096")]).await;
    let admin = app.admin_token().await;
    let big = vec![b'a'; 5000];

    // Too large: refused with no job row, on both ways in, also when streamed
    // without a declared length.
    let r = app
        .upload(&admin, "PRODUCTS", "big.csv", big.clone(), false)
        .await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE",
        "{r}"
    );
    let (status, body) = app.upload_rest(&admin, "kind=PRODUCTS", big.clone()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &json!("PAYLOAD_TOO_LARGE"))
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let resp = app
        .client
        .post(format!("{}/api/v1/uploads?kind=PRODUCTS", app.address))
        .bearer_auth(&admin)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(app.count("SELECT COUNT(*) FROM upload_jobs").await, 0);

    // Bad parameters.
    let (status, body) = app
        .upload_rest(&admin, "kind=WIDGETS", b"sku\nA\n".to_vec())
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("BAD_USER_INPUT"))
    );
    let (status, _) = app.upload_rest(&admin, "kind=PRODUCTS", Vec::new()).await;
    assert_eq!(status, 400);

    // Roles: MANAGER and above.
    for role in ["VIEWER", "STAFF"] {
        let (_, token) = app.user_with_role(&admin, role).await;
        let r = app
            .upload(
                &token,
                "PRODUCTS",
                "p.csv",
                b"sku,name\nA,a\n".to_vec(),
                false,
            )
            .await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN", "{r}");
        let (status, body) = app
            .upload_rest(&token, "kind=PRODUCTS", b"sku,name\nA,a\n".to_vec())
            .await;
        assert_eq!((status, &body["error"]["code"]), (403, &json!("FORBIDDEN")));
        let r = app
            .gql(Some(&token), "{ uploadJobs { totalCount } }", json!({}))
            .await;
        r.expect_code("FORBIDDEN");
    }
    let (status, _) = app
        .upload_rest("not-a-token", "kind=PRODUCTS", b"sku\nA\n".to_vec())
        .await;
    assert_eq!(status, 401);
    assert_eq!(app.count("SELECT COUNT(*) FROM upload_jobs").await, 0);

    // Binary garbage: queued, then FAILED with a reason.
    let garbage: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let (status, job) = app
        .upload_rest(&admin, "kind=STOCK_MOVEMENTS&filename=x.bin", garbage)
        .await;
    assert_eq!(status, 202);
    let job = app.finished_job(&admin, &id_of(&job)).await;
    assert_eq!(
        (&job["status"], &job["filename"]),
        (&json!("FAILED"), &json!("x.bin"))
    );
    assert!(
        job["error"].as_str().unwrap().contains("neither CSV"),
        "{job}"
    );
    // A legacy .xls is named as such.
    let mut xls = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    xls.extend([0u8; 100]);
    let (_, job) = app.upload_rest(&admin, "kind=PRODUCTS", xls).await;
    let job = app.finished_job(&admin, &id_of(&job)).await;
    assert!(job["error"].as_str().unwrap().contains(".xls"), "{job}");
}

#[tokio::test]
async fn the_same_file_twice_while_queued_answers_the_same_job_and_cancel_works() {
    let app = spawn_app_with(&[NO_WORKER]).await;
    let admin = app.admin_token().await;
    let file = b"sku,name\nA-1,Apple\n".to_vec();
    let first = app
        .upload(&admin, "PRODUCTS", "a.csv", file.clone(), false)
        .await;
    let (_, second) = app.upload_rest(&admin, "kind=PRODUCTS", file.clone()).await;
    let id = id_of(&first["data"]["createUploadJob"]);
    assert_eq!(id_of(&second), id);
    // Another mode is another job.
    let dry = app
        .upload(&admin, "PRODUCTS", "a.csv", file.clone(), true)
        .await;
    assert_ne!(id_of(&dry["data"]["createUploadJob"]), id);
    assert_eq!(app.count("SELECT COUNT(*) FROM upload_jobs").await, 2);

    let cancel = "mutation($id: ID!) { cancelUploadJob(id: $id) { status finishedAt } }";
    let r = app.gql(Some(&admin), cancel, json!({ "id": id })).await;
    assert_eq!(r.data()["cancelUploadJob"]["status"], "CANCELLED");
    app.gql(Some(&admin), cancel, json!({ "id": id }))
        .await
        .expect_code("CONFLICT");
    app.gql(
        Some(&admin),
        cancel,
        json!({ "id": uuid::Uuid::now_v7().to_string() }),
    )
    .await
    .expect_code("NOT_FOUND");
    // Once cancelled, the file may be queued again.
    let (_, again) = app.upload_rest(&admin, "kind=PRODUCTS", file).await;
    assert_ne!(id_of(&again), id);

    let jobs = app
        .gql(
            Some(&admin),
            "{ uploadJobs(status: CANCELLED) { totalCount nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(jobs.data()["uploadJobs"]["totalCount"], 1);
    let health = app
        .get("/api/v1/health")
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(health["services"]["uploads"]["queued"], 2, "{health}");
    assert_eq!(health["services"]["uploads"]["status"], "up");
    // The cancelled job is not applied by a worker.
    while app.worker(100).run_once().await.unwrap().is_some() {}
    assert_eq!(app.count("SELECT COUNT(*) FROM products").await, 1);
}

/// `rows` inbound movements over `products` products (quantities 1 to 7).
fn inbound_rows(rows: usize, products: usize, tag: &str) -> (Vec<u8>, Vec<i64>) {
    let mut file = "sku,kind,quantity,reference\n".to_string();
    let mut sums = vec![0i64; products];
    for i in 0..rows {
        let q = (i % 7 + 1) as i64;
        sums[i % products] += q;
        file.push_str(&format!("S-{},inbound,{q},{tag}-{i}\n", i % products));
    }
    (file.into_bytes(), sums)
}

#[tokio::test]
async fn progress_is_published_and_a_running_job_can_be_cancelled() {
    let app = spawn_app_with(&[NO_WORKER]).await;
    let admin = app.admin_token().await;
    app.create_product(&admin, "S-0", 0).await;
    let (file, _) = inbound_rows(600, 1, "p");
    let job = app
        .upload(&admin, "STOCK_MOVEMENTS", "p.csv", file, false)
        .await;
    let id = id_of(&job["data"]["createUploadJob"]);

    let mut ws = app.ws(&admin).await;
    ws.subscribe(
        "u",
        "subscription($id: ID!) { uploadJobUpdated(id: $id) { status processedRows totalRows } }",
        json!({ "id": id }),
    )
    .await;
    let first = ws.event("u").await;
    assert_eq!(first["data"]["uploadJobUpdated"]["status"], "QUEUED");
    app.worker(100).run_once().await.unwrap();
    let mut seen = Vec::new();
    loop {
        let m = ws
            .next_within(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("stuck after {seen:?}"));
        if m["type"] == "complete" {
            break;
        }
        let job = m["payload"]["data"]["uploadJobUpdated"].clone();
        seen.push((
            job["status"].as_str().unwrap().to_string(),
            job["processedRows"].as_i64().unwrap(),
        ));
    }
    let progress: Vec<i64> = seen
        .iter()
        .filter(|(s, _)| s == "PROCESSING")
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(progress, vec![0, 100, 200, 300, 400, 500, 600], "{seen:?}");
    assert_eq!(seen.last().cloned(), Some(("COMPLETED".to_string(), 600)));

    // A running job stops after the batch under way; what was applied stays.
    let (file, _) = inbound_rows(5000, 1, "c");
    let job = app
        .upload(&admin, "STOCK_MOVEMENTS", "c.csv", file, false)
        .await;
    let id = id_of(&job["data"]["createUploadJob"]);
    let worker = app.worker(25);
    let run = tokio::spawn(async move { worker.run_once().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.job(&admin, &id).await["processedRows"]
        .as_i64()
        .unwrap_or(0)
        < 50
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { cancelUploadJob(id: $id) { status cancelRequested } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        r.data()["cancelUploadJob"],
        json!({ "status": "PROCESSING", "cancelRequested": true })
    );
    run.await.unwrap().unwrap();
    let job = app.job(&admin, &id).await;
    assert_eq!(job["status"], "CANCELLED", "{job}");
    let applied = job["processedRows"].as_i64().unwrap();
    assert!(applied < 5000 && applied % 25 == 0, "{job}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements").await,
        600 + applied
    );
    app.ledger_is_clean().await;
}

#[tokio::test]
async fn a_crashed_worker_is_resumed_by_another_instance_without_applying_a_row_twice() {
    let lease = [("UPLOAD_LEASE_SECONDS", "2"), ("UPLOAD_BATCH_SIZE", "50")];
    let mut crashing = spawn_crashable(&lease).await;
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{}/graphql", crashing.address))
        .json(&json!({ "query": "mutation { login(input: { email: \"admin@test.local\", password: \"admin-password-123\" }) { accessToken } }" }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let token = login["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{login}"))
        .to_string();
    for p in 0..10 {
        client
            .post(format!("{}/graphql", crashing.address))
            .bearer_auth(&token)
            .json(&json!({ "query": format!("mutation {{ createProduct(input: {{ sku: \"S-{p}\", name: \"s\" }}) {{ id }} }}") }))
            .send()
            .await
            .unwrap();
    }
    let (file, sums) = inbound_rows(5000, 10, "k");
    let job = client
        .post(format!(
            "{}/api/v1/uploads?kind=STOCK_MOVEMENTS",
            crashing.address
        ))
        .bearer_auth(&token)
        .body(file)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let id = id_of(&job);

    // Crash once a few batches are in.
    let db = sea_orm::Database::connect(&crashing.database_url)
        .await
        .unwrap();
    let processed = async || {
        use sea_orm::ConnectionTrait;
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT processed_rows FROM upload_jobs".to_string(),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i32>(0).unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while processed().await < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker made no progress"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    crashing.crash();
    let at_crash = processed().await;
    assert!(
        at_crash < 5000,
        "the job finished before the crash; make it longer"
    );
    db.close().await.unwrap();

    let app = crashing.spawn_another(&lease).await;
    let admin = app.admin_token().await;
    let job = app.finished_job(&admin, &id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(
        (
            &job["processedRows"],
            &job["succeededRows"],
            &job["failedRows"]
        ),
        (&json!(5000), &json!(5000), &json!(0))
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements").await,
        5000
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_logs WHERE action = 'STOCK_INBOUND'")
            .await,
        5000
    );
    for (p, sum) in sums.iter().enumerate() {
        let stock = app
            .count(&format!(
                "SELECT CAST(stock AS BIGINT) FROM products WHERE sku = 'S-{p}'"
            ))
            .await;
        assert_eq!(stock, *sum, "S-{p}");
    }
    assert!(
        app.count("SELECT CAST(attempts AS BIGINT) FROM upload_jobs")
            .await
            >= 2
    );
    app.ledger_is_clean().await;
}

/// Instances share a database only on PostgreSQL.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn two_instances_process_each_job_once() {
    let (a, b) = spawn_pair_with(&[("UPLOAD_BATCH_SIZE", "20")]).await;
    let admin = a.admin_token().await;
    for p in 0..3 {
        a.create_product(&admin, &format!("S-{p}"), 0).await;
    }
    let mut expected = [0i64; 3];
    let mut ids = Vec::new();
    for j in 0..6 {
        let (file, sums) = inbound_rows(200 + j, 3, &format!("j{j}"));
        for (e, s) in expected.iter_mut().zip(sums) {
            *e += s;
        }
        let app = if j % 2 == 0 { &a } else { &b };
        let (status, job) = app.upload_rest(&admin, "kind=STOCK_MOVEMENTS", file).await;
        assert_eq!(status, 202, "{job}");
        ids.push(id_of(&job));
    }
    for id in &ids {
        let job = a.finished_job(&admin, id).await;
        assert_eq!(
            (&job["status"], &job["failedRows"]),
            (&json!("COMPLETED"), &json!(0)),
            "{job}"
        );
    }
    let rows: i64 = (0..6).map(|j| 200 + j).sum();
    assert_eq!(a.count("SELECT COUNT(*) FROM stock_movements").await, rows);
    assert_eq!(
        a.count("SELECT COUNT(*) FROM upload_jobs WHERE attempts = 1")
            .await,
        6
    );
    for (p, sum) in expected.iter().enumerate() {
        let stock = a
            .count(&format!(
                "SELECT CAST(stock AS BIGINT) FROM products WHERE sku = 'S-{p}'"
            ))
            .await;
        assert_eq!(stock, *sum);
    }
    a.ledger_is_clean().await;
}

#[tokio::test]
async fn finished_jobs_lose_their_file_after_retention_but_keep_their_record() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (_, job) = app
        .upload_rest(
            &admin,
            "kind=PRODUCTS",
            b"sku,name\nR-1,r\nR-1,again\n".to_vec(),
        )
        .await;
    let id = id_of(&job);
    app.finished_job(&admin, &id).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM upload_job_files").await, 1);
    let purged =
        stockroom::service::uploads::purge_files(&app.state.services, Duration::from_secs(3600))
            .await
            .unwrap();
    assert_eq!(purged, 0, "a fresh job keeps its file");
    app.exec("UPDATE upload_jobs SET finished_at = '2020-01-01T00:00:00+00:00'")
        .await;
    let purged =
        stockroom::service::uploads::purge_files(&app.state.services, Duration::from_secs(3600))
            .await
            .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM upload_job_files").await, 0);
    let job = app.job(&admin, &id).await;
    assert_eq!(
        (&job["status"], &job["failedRows"]),
        (&json!("COMPLETED"), &json!(1))
    );
    assert_eq!(errors_of(&job).len(), 1);
    let rest = app
        .client
        .get(format!("{}/api/v1/uploads/{id}", app.address))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        (&rest["status"], &rest["errors"][0]["row"]),
        (&json!("COMPLETED"), &json!(2))
    );
}

#[tokio::test]
async fn the_documented_example_files_import_cleanly() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples");
    for ext in ["csv", "xlsx"] {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        for (kind, name) in [
            ("PRODUCTS", "products"),
            ("STOCK_MOVEMENTS", "stock_movements"),
        ] {
            let file = std::fs::read(examples.join(format!("{name}.{ext}"))).unwrap();
            let job = app
                .upload(&admin, kind, &format!("{name}.{ext}"), file, false)
                .await;
            let job = app
                .finished_job(&admin, &id_of(&job["data"]["createUploadJob"]))
                .await;
            assert_eq!(
                (&job["status"], &job["succeededRows"], &job["failedRows"]),
                (&json!("COMPLETED"), &json!(5), &json!(0)),
                "{name}.{ext}: {job}"
            );
        }
        let r = app
            .gql(
                Some(&admin),
                "{ products(first: 10) { nodes { sku name stock } } }",
                json!({}),
            )
            .await;
        let stock: std::collections::BTreeMap<String, i64> = r.data()["products"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["sku"].as_str().unwrap().to_string(),
                    p["stock"].as_i64().unwrap(),
                )
            })
            .collect();
        let expected = [
            ("BOX-S", 504),
            ("GLV-M", 0),
            ("TAPE-48", 36),
            ("WID-100", 315),
            ("WID-200", 58),
        ];
        assert_eq!(
            stock,
            expected.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            "{ext}"
        );
        assert_eq!(
            r.data()["products"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["name"] == "Widget, small")
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn ten_jobs_queued_past_the_threshold_degrade_the_uploads_service() {
    let app = spawn_app_with(&[NO_WORKER, ("UPLOAD_QUEUE_ALERT_SECONDS", "1")]).await;
    let admin = app.admin_token().await;
    for i in 0..9 {
        let (status, _) = app
            .upload_rest(
                &admin,
                "kind=PRODUCTS",
                format!("sku,name\nQ-{i},q\n").into_bytes(),
            )
            .await;
        assert_eq!(status, 202);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let uploads = async || uploads_health(&app).await;
    let nine = uploads().await;
    assert_eq!(
        (
            &nine["status"],
            &nine["queued"],
            &nine["queuedPastThreshold"]
        ),
        (&json!("up"), &json!(9), &json!(9)),
        "{nine}"
    );
    assert!(nine["oldestQueuedSeconds"].as_i64().unwrap() >= 1);
    app.upload_rest(&admin, "kind=PRODUCTS", b"sku,name\nQ-9,q\n".to_vec())
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ten = uploads().await;
    assert_eq!(
        (&ten["status"], &ten["queuedPastThreshold"]),
        (&json!("degraded"), &json!(10)),
        "{ten}"
    );
    assert!(
        ten["reason"].as_str().unwrap().contains("10 upload jobs"),
        "{ten}"
    );
    let r = app
        .gql(
            None,
            "{ health { status uploads { status queued reason } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r.data()["health"]["uploads"]["status"],
        "DEGRADED",
        "{}",
        r.body
    );
    // The service's state does not change the overall status.
    assert_eq!(r.data()["health"]["status"], "OK");
    assert_eq!(app.get("/api/v1/health").await.status().as_u16(), 200);
}

#[tokio::test]
async fn an_import_racing_api_movements_on_the_same_product_keeps_the_ledger_exact() {
    let app = std::sync::Arc::new(spawn_app_with(&[("UPLOAD_BATCH_SIZE", "50")]).await);
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "HOT-1", 1000).await;
    // 1,000 rows on the one product: outbound 3, inbound 2, in turn.
    let mut file = "sku,kind,quantity\n".to_string();
    for i in 0..1000 {
        file.push_str(if i % 2 == 0 {
            "HOT-1,outbound,3\n"
        } else {
            "HOT-1,inbound,2\n"
        });
    }
    let (_, job) = app
        .upload_rest(&admin, "kind=STOCK_MOVEMENTS", file.into_bytes())
        .await;
    let id = id_of(&job);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, admin, product) = (app.clone(), admin.clone(), product.clone());
        tasks.push(tokio::spawn(async move {
            app.record_movement(
                &admin,
                json!({ "productId": product, "kind": "OUTBOUND", "quantity": 7 }),
            )
            .await
        }));
    }
    let mut api_out = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.error_code() {
            None => api_out += 7,
            Some("INSUFFICIENT_STOCK") => {}
            other => panic!("{other:?}: {}", r.body),
        }
    }
    let job = app.finished_job(&admin, &id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let stock = app.product(&admin, &product).await["stock"]
        .as_i64()
        .unwrap();
    let ledger = app
        .count("SELECT COALESCE(SUM(quantity), 0) FROM stock_movements")
        .await;
    assert!(stock >= 0);
    assert_eq!(stock, ledger);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM stock_movements").await,
        1 + job["succeededRows"].as_i64().unwrap() + api_out / 7
    );
    app.ledger_is_clean().await;
}

#[tokio::test]
async fn the_queue_threshold_of_jobs_is_a_setting() {
    let app = spawn_app_with(&[
        NO_WORKER,
        ("UPLOAD_QUEUE_ALERT_SECONDS", "1"),
        ("UPLOAD_QUEUE_ALERT_JOBS", "2"),
    ])
    .await;
    let admin = app.admin_token().await;
    let uploads = async || uploads_health(&app).await;
    app.upload_rest(&admin, "kind=PRODUCTS", b"sku,name\nT-1,t\n".to_vec())
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(uploads().await["status"], "up");
    app.upload_rest(&admin, "kind=PRODUCTS", b"sku,name\nT-2,t\n".to_vec())
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let two = uploads().await;
    assert_eq!(two["status"], "degraded", "{two}");
    assert!(
        two["reason"].as_str().unwrap().contains("threshold 2 jobs"),
        "{two}"
    );
}

/// `services.uploads` of the REST health answer.
async fn uploads_health(app: &TestApp) -> Value {
    app.get("/api/v1/health")
        .await
        .json::<Value>()
        .await
        .unwrap()["services"]["uploads"]
        .clone()
}

/// After a large import, PostgreSQL's planner statistics are refreshed at
/// once (a catalogue that grew from nothing is otherwise planned as empty
/// until autovacuum's next round), and while it grows the table, each time
/// its applied rows double; a small one or a dry run leaves them.
#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn a_large_import_refreshes_the_planner_statistics_on_postgres() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let analyzed = "SELECT COUNT(*) FROM pg_stat_user_tables \
                    WHERE relname IN ('products', 'stock_movements') AND last_analyze IS NOT NULL";
    let file = |n: usize, prefix: &str| {
        let mut csv = String::from("sku,name,initial_stock\n");
        for i in 0..n {
            csv.push_str(&format!("{prefix}-{i:05},Item {i},3\n"));
        }
        csv.into_bytes()
    };
    for (rows, dry_run) in [(999, false), (1500, true)] {
        let job = app
            .upload(
                &admin,
                "PRODUCTS",
                "small.csv",
                file(rows, &format!("S{rows}")),
                dry_run,
            )
            .await;
        let done = app
            .finished_job(&admin, &id_of(&job["data"]["createUploadJob"]))
            .await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        // Long enough for a statistics report to show, had there been one.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert_eq!(
            app.count(analyzed).await,
            0,
            "{rows} rows, dry run {dry_run}"
        );
    }
    let job = app
        .upload(&admin, "PRODUCTS", "large.csv", file(1000, "L"), false)
        .await;
    let done = app
        .finished_job(&admin, &id_of(&job["data"]["createUploadJob"]))
        .await;
    assert_eq!(done["succeededRows"], 1000, "{done}");
    // The statistics are read after the job's commit: wait for them. The
    // products were analyzed twice: once the import had applied 1,000 rows
    // (its second batch of 500), and again with the ledger at its end.
    let analyzed = "SELECT COUNT(*) FROM pg_stat_user_tables \
                    WHERE (relname = 'products' AND analyze_count = 2) \
                    OR (relname = 'stock_movements' AND analyze_count = 1)";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.count(analyzed).await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no ANALYZE after the import"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.shutdown().await.unwrap();
}
