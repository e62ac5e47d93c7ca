//! The `stockroom` command line: `serve` (the default) and the operator
//! subcommands. Output here is for people, so it is printed, not logged.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};

use crate::config::Config;
use crate::service::context::Services;
use crate::startup::{Application, migrate_and_seed, shutdown_signal};

#[derive(Parser, Debug)]
#[command(
    name = "stockroom",
    version = crate::VERSION,
    about = "Inventory backend with a GraphQL API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API (default): applies migrations and seeds the admin unless AUTO_MIGRATE=false.
    Serve,
    /// Manage the database schema.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Create the admin account (ADMIN_EMAIL / ADMIN_PASSWORD) in an empty database; safe to repeat.
    Seed,
    /// Print every effective setting with secrets masked; exit 1 when one is invalid.
    CheckConfig {
        /// Print the template of every variable instead, from their
        /// declaration: `env` is `.env.example`, `markdown` the README's table.
        #[arg(long, value_enum)]
        template: Option<Template>,
    },
    /// Write the GraphQL schema (SDL); with --check, exit 1 when the file is stale.
    ExportSchema {
        #[arg(long)]
        check: bool,
        #[arg(long, default_value = "schema.graphql")]
        path: PathBuf,
    },
    /// Check that every product's stock equals the sum of its movements; exit 1 on drift.
    VerifyLedger,
    /// Delete, now, the alerts and refresh tokens past their retention
    /// (ALERT_RETENTION_DAYS, REFRESH_TOKEN_RETENTION_DAYS), as the server
    /// does every hour; prints how many rows went.
    Prune,
    /// Seal every secret stored in the database (two-factor secrets, the bot
    /// token) under DATA_ENCRYPTION_KEY, opening each with it or with
    /// DATA_ENCRYPTION_KEY_PREVIOUS: the step of a key rotation after which
    /// the previous key can be removed. One transaction; safe to repeat.
    Reseal,
    /// Set a user's password (a locked-out sole admin): prints a generated one,
    /// or reads it from standard input with --stdin. Clears a lock and ends
    /// the user's sessions; audited with the command line as actor.
    ResetPassword {
        email: String,
        /// Read the new password from the first line of standard input.
        #[arg(long)]
        stdin: bool,
    },
    /// Turn a user's two-factor login off (a lost authenticator) and end their
    /// sessions; audited with the command line as actor.
    #[command(name = "reset-2fa")]
    ResetTwoFactor { email: String },
    /// The periodic security review: admins and managers without 2FA, expired
    /// passwords, locked accounts, repeated failed logins. Exit 1 when any
    /// finding is listed.
    SecurityReport {
        /// Count failed logins over this many hours.
        #[arg(long, default_value_t = 24)]
        hours: u32,
        /// List accounts and addresses with at least this many failures.
        #[arg(long, default_value_t = 3)]
        min_failures: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent backup of the live database to a new file: SQLite
    /// with VACUUM INTO, PostgreSQL with pg_dump in the custom format.
    Backup {
        /// The file to create; an existing file is never overwritten.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into an EMPTY database (refuses one with tables), then
    /// check migrations, the ledger and row counts; exit 1 on ledger drift.
    Restore {
        /// A file written by `stockroom backup` (or `pg_dump -Fc`).
        #[arg(long)]
        from: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum MigrateAction {
    /// Apply all pending migrations.
    Up,
    /// Roll back the most recent migrations.
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List every migration as applied or pending; exit 1 when any is pending.
    Status,
    /// Drop every table and apply all migrations again (destroys all data).
    Fresh {
        /// Required: confirms that all data is to be destroyed.
        #[arg(long)]
        yes: bool,
    },
}

/// What `check-config --template` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Template {
    Env,
    Markdown,
}

pub async fn run(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::ExportSchema { check, path } = &command {
        return export_schema(*check, path);
    }
    if let Command::CheckConfig {
        template: Some(template),
    } = command
    {
        print!(
            "{}",
            match template {
                Template::Env => crate::config::env_template(),
                Template::Markdown => crate::config::markdown_table(),
            }
        );
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::CheckConfig { .. } = command {
        return check_config(&config);
    }
    crate::telemetry::init(&config);
    match dispatch(command, config).await {
        Ok(code) => code,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "command failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => {
            let app = Application::build(config).await?;
            app.run_until_stopped(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { action } => migrate(action, &config).await,
        Command::Seed => {
            let db = Services::connect(&config).await?;
            migrate_and_seed(&db, &config).await?;
            println!("seed: done (admin {})", config.admin_email);
            db.close().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune => {
            let db = Services::connect(&config).await?;
            let pruned = crate::service::housekeeping::prune(&db, &config, chrono::Utc::now())
                .await
                .map_err(command_error)?;
            db.close().await?;
            println!(
                "pruned {} alert(s) and {} refresh token(s) past their retention",
                pruned.alerts, pruned.refresh_tokens
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Reseal => {
            let db = Services::connect(&config).await?;
            let done = crate::service::secrets::reseal(&db)
                .await
                .map_err(command_error)?;
            let kid = db.sealer().kid().to_string();
            db.close().await?;
            println!(
                "resealed {} two-factor secret(s) and {} bot token(s) under key {kid}; {} already under it",
                done.two_factor, done.bot_tokens, done.current
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyLedger => {
            let db = crate::db::Db::connect(&config).await?;
            let (products, drift) = crate::service::stock::verify_ledger(db.conn())
                .await
                .map_err(command_error)?;
            db.close().await?;
            if drift.is_empty() {
                println!("ledger ok: {products} product(s) checked, no drift");
                return Ok(ExitCode::SUCCESS);
            }
            println!("ledger DRIFT in {} of {products} product(s):", drift.len());
            for d in &drift {
                println!(
                    "  {} ({}): stock {} but movements sum to {}; {} broken balance link(s)",
                    d.sku, d.product_id, d.stock, d.ledger_sum, d.broken_links
                );
            }
            Ok(ExitCode::FAILURE)
        }
        Command::Backup { to } => crate::backup::backup(&config, &to).await,
        Command::Restore { from } => crate::backup::restore(&config, &from).await,
        Command::ResetPassword { email, stdin } => reset_password(&config, &email, stdin).await,
        Command::ResetTwoFactor { email } => reset_two_factor(&config, &email).await,
        Command::SecurityReport {
            hours,
            min_failures,
            json,
        } => security_report(&config, hours, min_failures, json).await,
        Command::CheckConfig { .. } | Command::ExportSchema { .. } => Ok(ExitCode::SUCCESS),
    }
}

async fn reset_password(config: &Config, email: &str, stdin: bool) -> anyhow::Result<ExitCode> {
    let (password, generated) = if stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        (line.trim_end_matches(['\r', '\n']).to_string(), false)
    } else {
        (crate::config::random_hex(12)?, true)
    };
    let db = Services::connect(config).await?;
    let result = crate::service::auth::reset_password(
        &db,
        &crate::service::Actor::cli("reset-password"),
        email,
        &password,
    )
    .await;
    db.close().await?;
    match result {
        Ok(user) => {
            println!(
                "password of {} reset; lock cleared; sessions ended",
                user.email
            );
            if generated {
                println!("new password: {password}");
                println!("give it to the user over a safe channel; they should change it at once");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("reset-password: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn reset_two_factor(config: &Config, email: &str) -> anyhow::Result<ExitCode> {
    let db = Services::connect(config).await?;
    let email = email.trim().to_lowercase();
    let found = crate::entity::user::Entity::find()
        .filter(crate::entity::user::Column::Email.eq(email.as_str()))
        .one(db.conn())
        .await?;
    let Some(user) = found else {
        db.close().await?;
        eprintln!("reset-2fa: no user with email {email}");
        return Ok(ExitCode::FAILURE);
    };
    let had = user.totp_secret.is_some();
    let result =
        crate::service::two_factor::reset(&db, &crate::service::Actor::cli("reset-2fa"), user.id)
            .await;
    db.close().await?;
    match result {
        Ok(user) if had => {
            println!(
                "two-factor login of {} turned off; sessions ended",
                user.email
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(user) => {
            println!("{} has no two-factor login: nothing to reset", user.email);
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("reset-2fa: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn security_report(
    config: &Config,
    hours: u32,
    min_failures: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let db = Services::connect(config).await?;
    let policy = crate::service::auth::AccountPolicy::new(config);
    let r = crate::service::security::report(db.conn(), &policy, hours, min_failures.max(1))
        .await
        .map_err(command_error);
    db.close().await?;
    let r = r?;
    let user = |u: &crate::entity::user::Model| {
        serde_json::json!({
            "email": u.email,
            "role": u.role,
            "twoFactorEnabled": u.two_factor_enabled(),
            "passwordChangedAt": u.password_set_at(),
            "lockedUntil": u.locked_until,
            "lastLoginAt": u.last_login_at,
        })
    };
    let users = |v: &[crate::entity::user::Model]| v.iter().map(user).collect::<Vec<_>>();
    let findings = r.privileged_without_two_factor.len()
        + r.expired_passwords.len()
        + r.locked.len()
        + r.failed_by_account.len()
        + r.failed_by_ip.len();
    if json {
        let doc = serde_json::json!({
            "generatedAt": r.generated_at,
            "since": r.since,
            "policy": {
                "passwordMaxAgeDays": policy.password_max_age_days,
                "lockoutThreshold": policy.lockout_threshold,
                "lockoutSeconds": policy.lockout.as_secs(),
                "twoFactorRequiredRoles": policy.two_factor_roles,
            },
            "activeUsers": r.active_users,
            "twoFactorUsers": r.two_factor_users,
            "privilegedWithoutTwoFactor": users(&r.privileged_without_two_factor),
            "expiredPasswords": users(&r.expired_passwords),
            "lockedAccounts": users(&r.locked),
            "failedLoginsByAccount": r.failed_by_account,
            "failedLoginsByIp": r.failed_by_ip,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let ts = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
        println!("security report, {}", ts(r.generated_at));
        println!(
            "policy: password max age {} day(s) (0 = none); lockout after {} failure(s) for {} s; 2FA required for {:?}",
            policy.password_max_age_days,
            policy.lockout_threshold,
            policy.lockout.as_secs(),
            policy.two_factor_roles
        );
        println!(
            "{} active user(s), {} with two-factor login",
            r.active_users, r.two_factor_users
        );
        let section = |title: &str, list: &[crate::entity::user::Model]| {
            println!("\n{title}: {}", list.len());
            for u in list {
                println!(
                    "  {} ({:?}) password set {}{}{}",
                    u.email,
                    u.role,
                    ts(u.password_set_at()),
                    if u.two_factor_enabled() {
                        ", 2FA on"
                    } else {
                        ", 2FA off"
                    },
                    u.locked_until
                        .map(|t| format!(", locked until {}", ts(t)))
                        .unwrap_or_default()
                );
            }
        };
        section(
            "admins and managers without 2FA",
            &r.privileged_without_two_factor,
        );
        section("passwords older than the policy", &r.expired_passwords);
        section("locked accounts", &r.locked);
        let groups = |title: &str, list: &[crate::service::security::FailedLogins]| {
            println!(
                "\n{title} with {}+ failed logins since {}: {}",
                r.min_failures,
                ts(r.since),
                list.len()
            );
            for g in list {
                println!("  {}: {} (last {})", g.key, g.count, ts(g.last_at));
            }
        };
        groups("accounts", &r.failed_by_account);
        groups("addresses", &r.failed_by_ip);
    }
    Ok(if findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn migrate(action: MigrateAction, config: &Config) -> anyhow::Result<ExitCode> {
    let db = Services::connect(config).await?;
    let code = match action {
        MigrateAction::Up => {
            db.with_schema_lock(async { Ok(Migrator::up(db.conn(), None).await?) })
                .await?;
            println!("migrations applied");
            ExitCode::SUCCESS
        }
        MigrateAction::Down { steps } => {
            Migrator::down(db.conn(), Some(steps)).await?;
            println!("rolled back {steps} migration(s)");
            ExitCode::SUCCESS
        }
        MigrateAction::Status => {
            let migrations = Migrator::get_migration_with_status(db.conn()).await?;
            let mut pending = 0;
            for m in &migrations {
                let status = m.status();
                if matches!(status, migration::MigrationStatus::Pending) {
                    pending += 1;
                }
                println!("{:<8} {}", status.to_string().to_lowercase(), m.name());
            }
            println!(
                "{} migration(s), {} applied, {pending} pending",
                migrations.len(),
                migrations.len() - pending
            );
            if pending == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        MigrateAction::Fresh { yes } => {
            if !yes {
                eprintln!("migrate fresh drops every table; run it again with --yes to confirm");
                return Ok(ExitCode::FAILURE);
            }
            Migrator::fresh(db.conn()).await?;
            println!("database recreated");
            ExitCode::SUCCESS
        }
    };
    db.close().await?;
    Ok(code)
}

fn check_config(config: &Config) -> ExitCode {
    let variables = crate::config::variables();
    for ((name, value), var) in config.effective_values().into_iter().zip(&variables) {
        println!("{name:<26} {value:<40} # {}", var.meaning);
    }
    if config.is_production() && config.admin_password.is_none() {
        println!(
            "note: ADMIN_PASSWORD is unset; serve and seed will refuse to seed an admin into an empty database"
        );
    }
    match (&config.telegram_bot_token, config.telegram_chat_ids.len()) {
        (Some(_), n) if n > 0 => {
            println!("telegram: configured from the environment ({n} chat(s))")
        }
        _ => println!(
            "telegram: not configured in the environment (needs TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_IDS); \
             settings stored with updateNotificationSettings win and show in the notificationSettings query"
        ),
    }
    println!("configuration ok");
    ExitCode::SUCCESS
}

fn export_schema(check: bool, path: &PathBuf) -> ExitCode {
    let sdl = crate::graphql::schema::sdl();
    if check {
        match std::fs::read_to_string(path) {
            Ok(current) if current == sdl => {
                println!("{} is up to date", path.display());
                ExitCode::SUCCESS
            }
            Ok(_) => {
                eprintln!(
                    "{} is stale: run `stockroom export-schema` and commit it",
                    path.display()
                );
                ExitCode::FAILURE
            }
            Err(err) => {
                eprintln!("cannot read {}: {err}", path.display());
                ExitCode::FAILURE
            }
        }
    } else {
        match std::fs::write(path, &sdl) {
            Ok(()) => {
                println!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("cannot write {}: {err}", path.display());
                ExitCode::FAILURE
            }
        }
    }
}

/// A service's error as the command line prints it: an internal error with
/// its cause (the operator is the one who must act on it).
fn command_error(e: crate::error::AppError) -> anyhow::Error {
    match e {
        crate::error::AppError::Internal(cause) => cause,
        other => anyhow::anyhow!("{other}"),
    }
}
