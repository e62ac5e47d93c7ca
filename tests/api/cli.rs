use crate::helpers::{ADMIN_EMAIL, spawn_app, stockroom_bin};

#[test]
fn check_config_in_production_without_jwt_secret_exits_1() {
    let out = stockroom_bin()
        .args(["check-config"])
        .env("APP_ENV", "production")
        .env("ADMIN_PASSWORD", "a-long-admin-password")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"));
}

#[test]
fn check_config_prints_every_setting_with_secrets_masked() {
    let secret = "a-production-secret-of-at-least-32-bytes";
    let out = stockroom_bin()
        .args(["check-config"])
        .env("APP_ENV", "production")
        .env("JWT_SECRET", secret)
        .env("ADMIN_PASSWORD", "a-long-admin-password")
        .env("DATABASE_URL", "postgres://app:db-password@db:5432/stock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for v in stockroom::config::variables() {
        assert!(
            stdout.contains(&v.name),
            "{} missing from:\n{stdout}",
            v.name
        );
    }
    assert!(!stdout.contains(secret));
    assert!(!stdout.contains("a-long-admin-password"));
    assert!(!stdout.contains("db-password"));
    assert!(stdout.contains("telegram: not configured"), "{stdout}");
}

#[test]
fn check_config_says_whether_telegram_is_configured_and_masks_its_token() {
    let token = "123456:SECRET-bot-token-never-printed-0000";
    let out = stockroom_bin()
        .args(["check-config"])
        .env("TELEGRAM_BOT_TOKEN", token)
        .env("TELEGRAM_CHAT_IDS", "111,@ops_channel")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("telegram: configured from the environment (2 chat(s))"),
        "{stdout}"
    );
    assert!(!stdout.contains("SECRET-bot-token"), "{stdout}");
}

#[test]
fn check_config_reports_an_invalid_value() {
    let out = stockroom_bin()
        .args(["check-config"])
        .env("PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT"));
}

#[test]
fn export_schema_check_passes_on_the_committed_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let out = stockroom_bin()
        .args(["export-schema", "--check", "--path", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stale = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(stale.path(), "type Query { old: Int }").unwrap();
    let out = stockroom_bin()
        .args(["export-schema", "--check", "--path"])
        .arg(stale.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn seed_twice_creates_one_admin() {
    // The app seeds on start; seeding twice more from the CLI changes nothing.
    let app = spawn_app().await;
    for _ in 0..2 {
        let out = stockroom_bin()
            .arg("seed")
            .env("DATABASE_URL", &app.database_url)
            .env("ADMIN_EMAIL", "other-admin@test.local")
            .env("ADMIN_PASSWORD", "another-password-1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM users WHERE email = '{ADMIN_EMAIL}'"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn seed_on_an_empty_database_creates_the_admin_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/seed.db?mode=rwc", dir.path().display());
    for _ in 0..2 {
        let out = stockroom_bin()
            .arg("seed")
            .env("DATABASE_URL", &url)
            .env("ADMIN_PASSWORD", "seeded-password-1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = stockroom_bin()
        .args(["migrate", "status"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("0 pending"));
    let db = sea_orm::Database::connect(&url).await.unwrap();
    use sea_orm::{EntityTrait, PaginatorTrait};
    let users = stockroom::entity::user::Entity::find()
        .count(&db)
        .await
        .unwrap();
    assert_eq!(users, 1);
}

#[test]
fn seed_in_production_without_admin_password_fails() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/prod.db?mode=rwc", dir.path().display());
    let out = stockroom_bin()
        .arg("seed")
        .env("APP_ENV", "production")
        .env("JWT_SECRET", "a-production-secret-of-at-least-32-bytes")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ADMIN_PASSWORD"));
}

/// The restore drill of the runbook, on the database the suite runs on: a
/// backup of a live server under write load, restored into a new, empty
/// database, must pass the checks and hold a consistent snapshot.
#[tokio::test]
async fn the_restore_drill_backs_up_under_write_load_and_restores_whole() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let app = Arc::new(spawn_app().await);
    let admin = app.admin_token().await;
    let mut products = Vec::new();
    for i in 0..4 {
        products.push(
            app.create_product(&admin, &format!("DRILL-{i}"), 1000)
                .await,
        );
    }
    // Writers keep recording movements while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let recorded = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (app, admin, stop, recorded) =
            (app.clone(), admin.clone(), stop.clone(), recorded.clone());
        let products = products.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let kind = if n.is_multiple_of(2) { "OUTBOUND" } else { "INBOUND" };
                let r = app
                    .record_movement(
                        &admin,
                        serde_json::json!({ "productId": products[(n + w) % products.len()], "kind": kind, "quantity": 1 }),
                    )
                    .await;
                if r.body["errors"].is_null() {
                    recorded.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    while recorded.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.backup");
    let url = app.database_url.clone();
    let file_for_backup = file.clone();
    let out = tokio::task::spawn_blocking(move || {
        stockroom_bin()
            .args(["backup", "--to"])
            .arg(&file_for_backup)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let during = recorded.load(Ordering::Relaxed);
    // Keep writing a little after the backup, then stop.
    while recorded.load(Ordering::Relaxed) < during + 20 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = stockroom_bin()
        .args(["backup", "--to"])
        .arg(&file)
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "never overwrites");

    // Into a new, empty database.
    let (target, _guard) = crate::helpers::fresh_database().await;
    let restore = |url: &str| {
        stockroom_bin()
            .args(["restore", "--from"])
            .arg(&file)
            .env("DATABASE_URL", url)
            .output()
            .unwrap()
    };
    let out = restore(&target);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("migrations: all applied"), "{stdout}");
    assert!(
        stdout.contains("ledger ok: 4 product(s) checked, no drift"),
        "{stdout}"
    );
    // A database that is not empty is refused, and left as it is.
    let refused = restore(&target);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));

    // The restored rows are one consistent moment of the live database:
    // every movement has its audit row, stock equals the movements, and no
    // more was restored than the live database holds.
    let db = sea_orm::Database::connect(&target).await.unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            use sea_orm::ConnectionTrait;
            db.query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                sql.to_string(),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap()
        }
    };
    let movements = count("SELECT COUNT(*) FROM stock_movements").await;
    let movement_audits =
        count("SELECT COUNT(*) FROM audit_logs WHERE action LIKE 'STOCK_%'").await;
    assert_eq!(movements, movement_audits);
    assert!(
        movements >= 4 + 20,
        "the backup holds the writes before it: {movements}"
    );
    let live = app.count("SELECT COUNT(*) FROM stock_movements").await;
    assert!(movements <= live, "{movements} restored, {live} live");
    let rows_line = stdout.lines().find(|l| l.starts_with("rows: ")).unwrap();
    assert!(
        rows_line.contains(&format!("stock_movements={movements}")),
        "{rows_line}"
    );
    assert!(rows_line.contains("products=4"), "{rows_line}");
    let (_, drift) = stockroom::service::stock::verify_ledger(&db).await.unwrap();
    assert!(drift.is_empty(), "{drift:?}");
    db.close().await.unwrap();

    // A backup of the other database's kind is refused with a clear message.
    let other = dir.path().join("other.backup");
    std::fs::write(&other, b"not a backup at all").unwrap();
    let (empty, _guard2) = crate::helpers::fresh_database().await;
    let out = stockroom_bin()
        .args(["restore", "--from"])
        .arg(&other)
        .env("DATABASE_URL", &empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither"));
}

#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "PostgreSQL only: set STOCKROOM_TEST_POSTGRES_URL"
)]
async fn a_postgres_backup_says_clearly_when_pg_dump_is_missing_or_too_old() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.dump");
    let backup_with_path = |path: &std::path::Path| {
        stockroom_bin()
            .args(["backup", "--to"])
            .arg(&file)
            .env("DATABASE_URL", &app.database_url)
            .env("PATH", path)
            .output()
            .unwrap()
    };
    let empty = tempfile::tempdir().unwrap();
    let missing = backup_with_path(empty.path());
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("pg_dump is not installed"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let old = tempfile::tempdir().unwrap();
    let fake = old.path().join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let too_old = backup_with_path(old.path());
    assert_eq!(too_old.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&too_old.stderr);
    assert!(stderr.contains("pg_dump is version 9"), "{stderr}");
    assert!(!file.exists(), "nothing written");
    assert!(!stderr.contains("postgres://"), "no URL in the message");
}

#[tokio::test]
async fn migrate_status_reports_pending_after_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/m.db?mode=rwc", dir.path().display());
    let run = |args: &[&str]| {
        stockroom_bin()
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    assert!(run(&["migrate", "up"]).status.success());
    assert!(run(&["migrate", "down", "--steps", "1"]).status.success());
    let pending = run(&["migrate", "status"]);
    assert_eq!(pending.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&pending.stdout).contains("1 pending"));
    assert_eq!(
        run(&["migrate", "fresh"]).status.code(),
        Some(1),
        "fresh needs --yes"
    );
    assert!(run(&["migrate", "up"]).status.success());
    assert!(run(&["migrate", "status"]).status.success());
}

#[test]
fn backup_refuses_a_database_that_is_not_stockroom() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/wrong.db?mode=rwc", dir.path().display());
    let target = dir.path().join("copy.db");
    let out = stockroom_bin()
        .args(["backup", "--to"])
        .arg(&target)
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!target.exists());
}

#[test]
fn env_example_and_readme_table_are_written_from_the_declaration() {
    // Both are generated (`stockroom check-config --template env|markdown`);
    // a declaration changed without them fails here.
    let env_example = include_str!("../../.env.example");
    let readme = include_str!("../../README.md");
    assert_eq!(
        env_example,
        stockroom::config::env_template(),
        ".env.example is stale: run `cargo run -- check-config --template env > .env.example`"
    );
    assert!(
        readme.contains(&stockroom::config::markdown_table()),
        "README's configuration table is stale: replace it with `cargo run -- check-config --template markdown`"
    );
    let out = stockroom_bin()
        .args(["check-config", "--template", "env"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), env_example);
    // Every variable with its default, secrets without one.
    for v in stockroom::config::variables() {
        assert!(env_example.contains(&format!("\n{}={}\n", v.name, v.default)));
        assert!(!v.secret || v.default.is_empty() || v.name == "DATABASE_URL");
    }
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = stockroom_bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim(), format!("stockroom {}", stockroom::VERSION));
    // Built from a git checkout: the commit is the checkout's.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    assert!(
        printed.contains(&format!(
            "{} (commit {})",
            env!("CARGO_PKG_VERSION"),
            head.trim()
        )),
        "{printed}"
    );
}
