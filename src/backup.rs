//! `stockroom backup` and `stockroom restore`, for both databases.
//!
//! SQLite: a backup is a consistent copy of the live file (`VACUUM INTO`,
//! taken while the server keeps serving); a restore copies it into place.
//! PostgreSQL: `pg_dump --format=custom` and `pg_restore` in one transaction,
//! with the connection taken from `DATABASE_URL` and handed over in the
//! environment (never on the command line, where `ps` would show the
//! password). A restore goes into an empty database only, and ends with the
//! runbook's checks: pending migrations, the ledger, and row counts.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::config::{Config, mask_url};
use crate::db::Db;

/// The tables whose rows a restore reports.
const COUNTED: &[&str] = &[
    "users",
    "products",
    "stock_movements",
    "audit_logs",
    "alerts",
    "upload_jobs",
    "refresh_tokens",
];

const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
const PG_DUMP_MAGIC: &[u8] = b"PGDMP";

pub async fn backup(config: &Config, to: &Path) -> anyhow::Result<ExitCode> {
    if to.exists() {
        eprintln!("{} exists: choose a new file", to.display());
        return Ok(ExitCode::FAILURE);
    }
    let db = Db::connect(config).await?;
    if !is_stockroom(&db).await? {
        db.close().await?;
        eprintln!(
            "no Stockroom database at {}: nothing backed up",
            mask_url(config.database_url.expose())
        );
        return Ok(ExitCode::FAILURE);
    }
    let result = if config.is_sqlite() {
        sqlite_backup(&db, to).await
    } else {
        pg_backup(&db, config, to).await
    };
    db.close().await?;
    match result {
        Ok(()) => {
            println!("backup written to {}", to.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("backup failed: {err:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// True when the database holds Stockroom's schema: a wrong `DATABASE_URL`
/// (or cron in another directory) opens a new, empty database, which must
/// not be backed up as if it were the real one, nor restored over.
async fn is_stockroom(db: &Db) -> anyhow::Result<bool> {
    Ok(table_count(db, Some("seaql_migrations")).await? > 0)
}

/// Tables in the database (PostgreSQL: in its `public` schema), or whether
/// the one named exists.
async fn table_count(db: &Db, name: Option<&str>) -> anyhow::Result<i64> {
    let backend = db.backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
        }
        _ => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    };
    let sql = match name {
        Some(_) if backend == DbBackend::Postgres => format!("{sql} AND table_name = $1"),
        Some(_) => format!("{sql} AND name = $1"),
        None => sql.to_string(),
    };
    let values: Vec<sea_orm::Value> = name.map(|n| n.into()).into_iter().collect();
    let row = db
        .conn()
        .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?
        .context("no answer to a table count")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

async fn sqlite_backup(db: &Db, to: &Path) -> anyhow::Result<()> {
    let target = std::path::absolute(to)?
        .to_str()
        .map(|s| s.replace('\'', "''"))
        .context("the backup path must be valid UTF-8")?;
    // One consistent snapshot, taken while the server keeps serving (WAL).
    db.conn()
        .execute_unprepared(&format!("VACUUM INTO '{target}'"))
        .await?;
    if !to.is_file() {
        bail!(
            "VACUUM INTO reported success but {} is missing",
            to.display()
        );
    }
    Ok(())
}

/// libpq's environment for `DATABASE_URL`: host, port, user, password,
/// database and TLS mode.
fn pg_env(url: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let parsed = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|d| d.into_owned())
            .with_context(|| format!("DATABASE_URL: bad percent-encoding in {s:?}"))
    };
    let mut env = Vec::new();
    if let Some(host) = parsed.host_str() {
        env.push(("PGHOST", host.trim_matches(['[', ']']).to_string()));
    }
    if let Some(port) = parsed.port() {
        env.push(("PGPORT", port.to_string()));
    }
    if !parsed.username().is_empty() {
        env.push(("PGUSER", decode(parsed.username())?));
    }
    if let Some(password) = parsed.password() {
        env.push(("PGPASSWORD", decode(password)?));
    }
    let database = parsed.path().trim_start_matches('/');
    if database.is_empty() {
        bail!("DATABASE_URL names no database");
    }
    env.push(("PGDATABASE", decode(database)?));
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" => env.push(("PGSSLMODE", value.into_owned())),
            "sslrootcert" => env.push(("PGSSLROOTCERT", value.into_owned())),
            "host" => env.push(("PGHOST", value.into_owned())),
            _ => {}
        }
    }
    Ok(env)
}

/// The major version a PostgreSQL tool prints with `--version`
/// ("pg_dump (PostgreSQL) 15.20 (Debian ...)" is 15).
fn tool_major(tool: &str) -> anyhow::Result<u32> {
    let out = Command::new(tool).arg("--version").output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{tool} is not installed (not on PATH): install the PostgreSQL client tools \
                 of the server's major version or newer (Debian: postgresql-client-NN)"
            )
        } else {
            anyhow::anyhow!("running {tool} --version: {e}")
        }
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.split('.').next().and_then(|m| m.parse::<u32>().ok()))
        .with_context(|| format!("{tool} --version printed no version: {text:?}"))
}

async fn server_major(db: &Db) -> anyhow::Result<u32> {
    let row = db
        .conn()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_setting('server_version_num')::int",
        ))
        .await?
        .context("no server version")?;
    Ok(u32::try_from(row.try_get_by_index::<i32>(0)? / 10_000)?)
}

/// A file next to `to`, renamed into place only when complete, so a failed
/// run leaves no half-written backup behind.
fn partial(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    to.with_file_name(name)
}

async fn pg_backup(db: &Db, config: &Config, to: &Path) -> anyhow::Result<()> {
    let (tool, server) = (tool_major("pg_dump")?, server_major(db).await?);
    if tool < server {
        bail!(
            "pg_dump is version {tool} but the server is PostgreSQL {server}: pg_dump refuses newer servers; \
             install postgresql-client-{server} (or newer)"
        );
    }
    let tmp = partial(to);
    let out = Command::new("pg_dump")
        .args(["--format=custom", "--no-password", "--file"])
        .arg(&tmp)
        .envs(pg_env(config.database_url.expose())?)
        .output()
        .context("running pg_dump")?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "pg_dump failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::rename(&tmp, to)?;
    Ok(())
}

pub async fn restore(config: &Config, from: &Path) -> anyhow::Result<ExitCode> {
    let mut magic = [0u8; 16];
    let read = {
        use std::io::Read;
        let mut f =
            std::fs::File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
        f.read(&mut magic)?
    };
    let head = &magic[..read];
    let sqlite = config.is_sqlite();
    match (
        sqlite,
        head.starts_with(SQLITE_MAGIC),
        head.starts_with(PG_DUMP_MAGIC),
    ) {
        (true, true, _) | (false, _, true) => {}
        (true, _, true) => {
            eprintln!(
                "{} is a PostgreSQL dump but DATABASE_URL is SQLite",
                from.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        (false, true, _) => {
            eprintln!(
                "{} is a SQLite database but DATABASE_URL is PostgreSQL",
                from.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        _ => {
            eprintln!(
                "{} is neither a Stockroom SQLite backup nor a pg_dump custom-format archive",
                from.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    }

    let db = Db::connect(config).await?;
    let tables = table_count(&db, None).await?;
    if tables > 0 {
        db.close().await?;
        eprintln!(
            "the database at {} is not empty ({tables} tables): restore only into an empty database",
            mask_url(config.database_url.expose())
        );
        return Ok(ExitCode::FAILURE);
    }
    let restored = if sqlite {
        db.close().await?;
        sqlite_restore(config, from)
    } else {
        let mut r = pg_restore(config, from);
        if r.is_ok() {
            r = reposition(&db).await;
        }
        db.close().await?;
        r
    };
    if let Err(err) = restored {
        eprintln!("restore failed: {err:#}");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "restored {} into {}",
        from.display(),
        mask_url(config.database_url.expose())
    );
    checks(config).await
}

/// Rows restored from another PostgreSQL cluster carry transaction ids of
/// that cluster (`tx`), which may lie ahead of this one's: they are set to
/// 0, before every stream position (older backups have no such column;
/// migrating adds it, 0 everywhere), so that the streams of all products and
/// of the audit log do not take them for rows still to come. A restore into
/// the same cluster changes nothing.
async fn reposition(db: &Db) -> anyhow::Result<()> {
    for table in ["stock_movements", "audit_logs"] {
        // A backup older than the column gets it, 0 everywhere, when
        // migrated.
        db.execute_unprepared(&format!(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = '{table}' \
             AND column_name = 'tx') THEN \
             UPDATE {table} SET tx = 0 WHERE tx >= pg_current_xact_id()::text::bigint; \
             END IF; END $$"
        ))
        .await
        .with_context(|| format!("resetting the stream positions of {table}"))?;
    }
    Ok(())
}

/// The file a SQLite `DATABASE_URL` names.
fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .context("not a SQLite URL")?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        bail!("DATABASE_URL names no SQLite file");
    }
    Ok(PathBuf::from(path))
}

fn sqlite_restore(config: &Config, from: &Path) -> anyhow::Result<()> {
    let target = sqlite_path(config.database_url.expose())?;
    // Connecting created an empty file (mode=rwc): replace it whole, with
    // any journal it left.
    let tmp = partial(&target);
    std::fs::copy(from, &tmp).with_context(|| format!("copying to {}", tmp.display()))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = target.clone().into_os_string();
        side.push(suffix);
        let _ = std::fs::remove_file(side);
    }
    std::fs::rename(&tmp, &target)?;
    Ok(())
}

fn pg_restore(config: &Config, from: &Path) -> anyhow::Result<()> {
    tool_major("pg_restore")?;
    let env = pg_env(config.database_url.expose())?;
    let database = env
        .iter()
        .find(|(k, _)| *k == "PGDATABASE")
        .map(|(_, v)| v.clone())
        .context("no database name")?;
    let out = Command::new("pg_restore")
        .args([
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            "--dbname",
        ])
        .arg(database)
        .arg(from)
        .envs(env)
        .output()
        .context("running pg_restore")?;
    if !out.status.success() {
        bail!(
            "pg_restore failed ({}), nothing was restored: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The runbook's checks after a restore: migrations, ledger, row counts.
/// Exit 1 when the ledger drifted.
async fn checks(config: &Config) -> anyhow::Result<ExitCode> {
    let db = Db::connect(config).await?;
    let pending = Migrator::get_pending_migrations(db.conn()).await?.len();
    if pending == 0 {
        println!("migrations: all applied");
    } else {
        println!(
            "migrations: {pending} pending (the backup is from an older version): run `stockroom migrate up`"
        );
    }
    let (products, drift) = crate::service::stock::verify_ledger(db.conn())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut counts = Vec::new();
    for table in COUNTED {
        let row = db
            .conn()
            .query_one_raw(Statement::from_string(
                db.backend(),
                format!("SELECT COUNT(*) FROM {table}"),
            ))
            .await?
            .context("no count")?;
        counts.push(format!("{table}={}", row.try_get_by_index::<i64>(0)?));
    }
    db.close().await?;
    println!("rows: {}", counts.join(" "));
    if drift.is_empty() {
        println!("ledger ok: {products} product(s) checked, no drift");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("ledger DRIFT in {} of {products} product(s)", drift.len());
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_goes_to_libpq_in_the_environment() -> anyhow::Result<()> {
        let env = pg_env("postgres://app:p%40ss%2Fword@db.internal:6543/stock?sslmode=require")?;
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGHOST"), Some("db.internal"));
        assert_eq!(get("PGPORT"), Some("6543"));
        assert_eq!(get("PGUSER"), Some("app"));
        assert_eq!(get("PGPASSWORD"), Some("p@ss/word"));
        assert_eq!(get("PGDATABASE"), Some("stock"));
        assert_eq!(get("PGSSLMODE"), Some("require"));
        assert!(pg_env("postgres://u@h/").is_err());
        Ok(())
    }

    #[test]
    fn sqlite_urls_name_their_file() -> anyhow::Result<()> {
        assert_eq!(
            sqlite_path("sqlite://data/s.db?mode=rwc")?,
            PathBuf::from("data/s.db")
        );
        assert_eq!(
            sqlite_path("sqlite:/var/lib/s.db")?,
            PathBuf::from("/var/lib/s.db")
        );
        assert!(sqlite_path("sqlite::memory:").is_err());
        Ok(())
    }
}
