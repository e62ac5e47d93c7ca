//! The same SQLite work as `../sqlx` through sea-orm's in-thread driver
//! (rusqlite, sea-orm-sync): one connection, called in the caller's thread.
//! Its `DatabaseConnection` is neither `Send` nor `Sync` (it holds an
//! `Arc<dyn Fn>` metric callback), so async tasks on several threads can only
//! reach it through a thread that owns it: 32 tasks send their calls to that
//! thread and await the answer (what sqlx's driver does per connection). As
//! the driver's floor, the same calls also run in a loop on that thread
//! with nobody else.
//! Usage: sqlite-driver-rusqlite DB_FILE TASKS READS WRITES PRODUCTS

#[path = "../../common.rs"]
mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{READ, TAKE_ONE, in_tasks, movement_rows, report, sku, stmt};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

fn read(db: &DatabaseConnection, sku: String) -> anyhow::Result<()> {
    let row = db
        .query_one_raw(stmt(READ, vec![sku.into()]))?
        .ok_or_else(|| anyhow::anyhow!("no product"))?;
    let _: (String, i64) = (row.try_get("", "id")?, row.try_get("", "stock")?);
    Ok(())
}

fn write(db: &DatabaseConnection, sku: String) -> anyhow::Result<()> {
    let txn = db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })?;
    let row = txn
        .query_one_raw(stmt(TAKE_ONE, vec![sku.into()]))?
        .ok_or_else(|| anyhow::anyhow!("no stock"))?;
    let (movement, audit) = movement_rows(row.try_get("", "id")?, row.try_get("", "stock")?);
    txn.execute_raw(movement)?;
    txn.execute_raw(audit)?;
    txn.commit()?;
    Ok(())
}

fn op(db: &DatabaseConnection, work: &str, sku: String) -> anyhow::Result<()> {
    if work == "read" {
        read(db, sku)
    } else {
        write(db, sku)
    }
}

type Job = Box<dyn FnOnce(&DatabaseConnection) + Send>;

/// The thread that owns the connection, running the jobs it is sent.
fn connection_thread(path: String) -> anyhow::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let connected = (|| {
            let mut opt = ConnectOptions::new(format!("sqlite://{path}?mode=rw"));
            opt.sqlx_logging(false)
                .acquire_timeout(Duration::from_secs(60));
            let db = Database::connect(opt)?;
            db.execute_unprepared("PRAGMA journal_mode = WAL")?;
            db.execute_unprepared("PRAGMA synchronous = NORMAL")?;
            db.execute_unprepared("PRAGMA busy_timeout = 5000")?;
            anyhow::Ok(db)
        })();
        let db = match connected {
            Ok(db) => {
                let _ = ready_tx.send(Ok(()));
                db
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
        };
        for job in rx {
            job(&db);
        }
    });
    ready_rx.recv()?.map_err(anyhow::Error::msg)?;
    Ok(tx)
}

async fn call(tx: &mpsc::Sender<Job>, name: &'static str, sku: String) -> anyhow::Result<()> {
    let (done, answer) = tokio::sync::oneshot::channel();
    tx.send(Box::new(move |db: &DatabaseConnection| {
        let _ = done.send(op(db, name, sku).map_err(|e| e.to_string()));
    }))
    .map_err(|_| anyhow::anyhow!("the connection thread is gone"))?;
    answer.await?.map_err(anyhow::Error::msg)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (path, tasks, reads, writes, products) = common::args()?;
    let tx = connection_thread(path)?;
    for (name, total) in [("read", reads), ("write", writes)] {
        let calls = tx.clone();
        let (times, wall) = in_tasks(tasks, total, move |i| {
            let tx = calls.clone();
            async move { call(&tx, name, sku(name, i, products)).await }
        })
        .await?;
        report(
            &format!("rusqlite {name}, {tasks} tasks via its thread"),
            times,
            wall,
        );

        let (done, answer) = tokio::sync::oneshot::channel();
        tx.send(Box::new(move |db: &DatabaseConnection| {
            let start = Instant::now();
            let mut times = Vec::new();
            for i in 0..total {
                let began = Instant::now();
                if let Err(e) = op(db, name, sku(name, i, products)) {
                    let _ = done.send(Err(e.to_string()));
                    return;
                }
                times.push(began.elapsed());
            }
            let _ = done.send(Ok((times, start.elapsed())));
        }))
        .map_err(|_| anyhow::anyhow!("the connection thread is gone"))?;
        let (times, wall) = answer.await?.map_err(anyhow::Error::msg)?;
        report(&format!("rusqlite {name}, 1 thread, inline"), times, wall);
    }
    Ok(())
}
