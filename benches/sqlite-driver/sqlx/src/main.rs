//! The server's SQLite hot paths through sea-orm on sqlx's driver, as the
//! server runs them: a pool whose connections each live on a worker thread,
//! writers queued on an async mutex and `BEGIN IMMEDIATE`.
//! Usage: sqlite-driver-sqlx DB_FILE TASKS READS WRITES PRODUCTS

#[path = "../../common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{READ, TAKE_ONE, in_tasks, movement_rows, report, sku, stmt};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

async fn read(db: &DatabaseConnection, sku: String) -> anyhow::Result<()> {
    let row = db
        .query_one_raw(stmt(READ, vec![sku.into()]))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no product"))?;
    let _: (String, i64) = (row.try_get("", "id")?, row.try_get("", "stock")?);
    Ok(())
}

async fn write(
    db: &DatabaseConnection,
    lock: &tokio::sync::Mutex<()>,
    sku: String,
) -> anyhow::Result<()> {
    let _turn = lock.lock().await;
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?;
    let row = txn
        .query_one_raw(stmt(TAKE_ONE, vec![sku.into()]))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no stock"))?;
    let (movement, audit) = movement_rows(row.try_get("", "id")?, row.try_get("", "stock")?);
    txn.execute_raw(movement).await?;
    txn.execute_raw(audit).await?;
    txn.commit().await?;
    Ok(())
}

async fn op(
    db: &DatabaseConnection,
    lock: &tokio::sync::Mutex<()>,
    work: &str,
    sku: String,
) -> anyhow::Result<()> {
    if work == "read" {
        read(db, sku).await
    } else {
        write(db, lock, sku).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (path, tasks, reads, writes, products) = common::args()?;
    let mut opt = ConnectOptions::new(format!("sqlite://{path}?mode=rw"));
    opt.max_connections(8)
        .min_connections(8)
        .sqlx_logging(false);
    opt.map_sqlx_sqlite_opts(|o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
    });
    let db = Database::connect(opt).await?;
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    for (work, total) in [("read", reads), ("write", writes)] {
        let (db2, lock2) = (db.clone(), Arc::clone(&lock));
        let (times, wall) = in_tasks(tasks, total, move |i| {
            let (db, lock) = (db2.clone(), Arc::clone(&lock2));
            async move { op(&db, &lock, work, sku(work, i, products)).await }
        })
        .await?;
        report(
            &format!("sqlx {work}, {tasks} tasks, pool of 8"),
            times,
            wall,
        );

        let start = Instant::now();
        let mut times = Vec::new();
        for i in 0..total {
            let began = Instant::now();
            op(&db, &lock, work, sku(work, i, products)).await?;
            times.push(began.elapsed());
        }
        report(&format!("sqlx {work}, 1 task"), times, start.elapsed());
    }
    Ok(())
}
