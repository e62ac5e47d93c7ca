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
    for name in stockroom::config::VARIABLES.iter().map(|v| v.name) {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
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

#[tokio::test]
async fn a_backup_restores_whole_and_passes_the_checks() {
    if crate::helpers::is_postgres() {
        // PostgreSQL is backed up with pg_dump; `backup` says so and exits 1.
        return;
    }
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "BACKUP-1", 12).await;
    app.record_movement(
        &admin,
        serde_json::json!({ "productId": product, "kind": "OUTBOUND", "quantity": 5 }),
    )
    .await
    .data();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("copy.db");
    let out = stockroom_bin()
        .args(["backup", "--to"])
        .arg(&file)
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
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

    let restored = format!("sqlite://{}?mode=rw", file.display());
    for args in [["migrate", "status"], ["verify-ledger", ""]] {
        let out = stockroom_bin()
            .args(args.iter().filter(|a| !a.is_empty()))
            .env("DATABASE_URL", &restored)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let db = sea_orm::Database::connect(&restored).await.unwrap();
    use sea_orm::{EntityTrait, PaginatorTrait};
    assert_eq!(
        stockroom::entity::product::Entity::find()
            .count(&db)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        stockroom::entity::stock_movement::Entity::find()
            .count(&db)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        stockroom::entity::audit_log::Entity::find()
            .count(&db)
            .await
            .unwrap() as i64,
        app.count("SELECT COUNT(*) FROM audit_logs").await
    );
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
fn env_example_and_readme_list_every_variable_with_its_default() {
    let env_example = include_str!("../../.env.example");
    let readme = include_str!("../../README.md");
    for v in stockroom::config::VARIABLES {
        let line = format!("\n{}={}\n", v.name, v.default);
        assert!(
            env_example.contains(&line),
            ".env.example lacks `{}`",
            line.trim()
        );
        let row = format!("| `{}` |", v.name);
        assert!(
            readme.contains(&row),
            "README configuration table lacks {}",
            v.name
        );
    }
}
