//! The same SQLite work as `../sqlx` through sea-orm's in-thread driver
//! (rusqlite, sea-orm-sync): one connection, called in the caller's thread.
//! Its `DatabaseConnection` is neither `Send` nor `Sync` (it holds an
//! `Arc<dyn Fn>` metric callback), so async tasks on several threads can only
//! reach it through a thread that owns it: 32 tasks send their calls to that
//! thread and await the answer (what sqlx's driver does per connection). As
//! the driver's floor, the same calls also run in a loop on that thread
//! with nobody else.
//! Usage: sqlite-driver-rusqlite DB_FILE TASKS READS WRITES PRODUCTS

use std::sync::mpsc;
use std::time::{Duration, Instant};

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

fn read(db: &DatabaseConnection, sku: String) -> anyhow::Result<()> {
    let row = db
        .query_one_raw(stmt(
            "SELECT id, sku, name, stock, version FROM products WHERE sku = ?",
            vec![sku.into()],
        ))?
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
        .query_one_raw(stmt(
            "UPDATE products SET stock = stock - 1, version = version + 1 \
             WHERE sku = ? AND stock >= 1 RETURNING id, stock",
            vec![sku.into()],
        ))?
        .ok_or_else(|| anyhow::anyhow!("no stock"))?;
    let (id, stock): (String, i64) = (row.try_get("", "id")?, row.try_get("", "stock")?);
    let movement = uuid::Uuid::new_v4().to_string();
    txn.execute_raw(stmt(
        "INSERT INTO stock_movements (id, product_id, kind, quantity, balance_after, created_at) \
         VALUES (?, ?, 'OUTBOUND', 1, ?, strftime('%Y-%m-%dT%H:%M:%fZ'))",
        vec![movement.clone().into(), id.clone().into(), stock.into()],
    ))?;
    txn.execute_raw(stmt(
        "INSERT INTO audit_logs (id, action, entity_type, entity_id, payload, created_at) \
         VALUES (?, 'STOCK_MOVEMENT', 'product', ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ'))",
        vec![
            uuid::Uuid::new_v4().to_string().into(),
            id.into(),
            format!("{{\"movement\":\"{movement}\",\"quantity\":1}}").into(),
        ],
    ))?;
    txn.commit()?;
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

fn sku(name: &str, i: usize, products: usize) -> String {
    // Reads spread over the catalogue; writes over 100 products.
    format!(
        "BENCH-{:05}",
        if name == "read" {
            i * 7919 % products
        } else {
            i % 100
        }
    )
}

fn op(db: &DatabaseConnection, name: &str, sku: String) -> anyhow::Result<()> {
    if name == "read" {
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
    let args: Vec<String> = std::env::args().collect();
    let [_, path, tasks, reads, writes, products] = args.as_slice() else {
        anyhow::bail!("usage: sqlite-driver-rusqlite DB_FILE TASKS READS WRITES PRODUCTS");
    };
    let (tasks, reads, writes, products): (usize, usize, usize, usize) = (
        tasks.parse()?,
        reads.parse()?,
        writes.parse()?,
        products.parse()?,
    );
    let tx = connection_thread(path.clone())?;
    for (name, total) in [("read", reads), ("write", writes)] {
        let start = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let tx = tx.clone();
            handles.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for i in (t..total).step_by(tasks) {
                    let began = Instant::now();
                    call(&tx, name, sku(name, i, products)).await?;
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
            &format!("rusqlite {name}, {tasks} tasks via its thread"),
            times,
            start.elapsed(),
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
