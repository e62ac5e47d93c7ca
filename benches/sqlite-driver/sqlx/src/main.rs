//! The server's SQLite hot paths through sea-orm on sqlx's driver, as the
//! server runs them: a pool whose connections each live on a worker thread,
//! writers queued on an async mutex and `BEGIN IMMEDIATE`.
//! Usage: sqlite-driver-sqlx DB_FILE TASKS READS WRITES PRODUCTS

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

async fn read(db: &DatabaseConnection, sku: String) -> anyhow::Result<()> {
    let row = db
        .query_one_raw(stmt(
            "SELECT id, sku, name, stock, version FROM products WHERE sku = ?",
            vec![sku.into()],
        ))
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
        .query_one_raw(stmt(
            "UPDATE products SET stock = stock - 1, version = version + 1 \
             WHERE sku = ? AND stock >= 1 RETURNING id, stock",
            vec![sku.into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no stock"))?;
    let (id, stock): (String, i64) = (row.try_get("", "id")?, row.try_get("", "stock")?);
    let movement = uuid::Uuid::new_v4().to_string();
    txn.execute_raw(stmt(
        "INSERT INTO stock_movements (id, product_id, kind, quantity, balance_after, created_at) \
         VALUES (?, ?, 'OUTBOUND', 1, ?, strftime('%Y-%m-%dT%H:%M:%fZ'))",
        vec![movement.clone().into(), id.clone().into(), stock.into()],
    ))
    .await?;
    txn.execute_raw(stmt(
        "INSERT INTO audit_logs (id, action, entity_type, entity_id, payload, created_at) \
         VALUES (?, 'STOCK_MOVEMENT', 'product', ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ'))",
        vec![
            uuid::Uuid::new_v4().to_string().into(),
            id.into(),
            format!("{{\"movement\":\"{movement}\",\"quantity\":1}}").into(),
        ],
    ))
    .await?;
    txn.commit().await?;
    Ok(())
}

fn report(name: &str, mut times: Vec<Duration>, wall: Duration) {
    times.sort();
    let n = times.len();
    println!(
        "{name}\t{:.0}\t{:.3}\t{:.3}",
        n as f64 / wall.as_secs_f64(),
        times[n / 2].as_secs_f64() * 1e3,
        times[n * 99 / 100].as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, tasks, reads, writes, products] = args.as_slice() else {
        anyhow::bail!("usage: sqlite-driver-sqlx DB_FILE TASKS READS WRITES PRODUCTS");
    };
    let (tasks, reads, writes, products): (usize, usize, usize, usize) = (
        tasks.parse()?,
        reads.parse()?,
        writes.parse()?,
        products.parse()?,
    );
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
    for (name, total) in [("read", reads), ("write", writes)] {
        let start = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (db, lock) = (db.clone(), Arc::clone(&lock));
            handles.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for i in (t..total).step_by(tasks) {
                    // Reads spread over the catalogue; writes over 100 products.
                    let sku = format!(
                        "BENCH-{:05}",
                        if name == "read" {
                            i * 7919 % products
                        } else {
                            i % 100
                        }
                    );
                    let began = Instant::now();
                    if name == "read" {
                        read(&db, sku).await?
                    } else {
                        write(&db, &lock, sku).await?
                    }
                    times.push(began.elapsed());
                }
                anyhow::Ok(times)
            }));
        }
        let mut times = Vec::new();
        for h in handles {
            times.extend(h.await??);
        }
        report(
            &format!("sqlx {name}, {tasks} tasks, pool of 8"),
            times,
            start.elapsed(),
        );

        let start = Instant::now();
        let mut times = Vec::new();
        for i in 0..total {
            let sku = format!(
                "BENCH-{:05}",
                if name == "read" {
                    i * 7919 % products
                } else {
                    i % 100
                }
            );
            let began = Instant::now();
            if name == "read" {
                read(&db, sku).await?
            } else {
                write(&db, &lock, sku).await?
            }
            times.push(began.elapsed());
        }
        report(&format!("sqlx {name}, 1 task"), times, start.elapsed());
    }
    Ok(())
}
