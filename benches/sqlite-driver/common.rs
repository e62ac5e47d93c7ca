//! What both driver benches share (included with `#[path]`: the two crates
//! cannot share a dependency graph). `sea_orm` is sea-orm in one and
//! sea-orm-sync in the other; both name their library `sea_orm`.

use std::future::Future;
use std::time::{Duration, Instant};

use sea_orm::{DbBackend, Statement, Value};

pub const READ: &str = "SELECT id, sku, name, stock, version FROM products WHERE sku = ?";
pub const TAKE_ONE: &str = "UPDATE products SET stock = stock - 1, version = version + 1 \
     WHERE sku = ? AND stock >= 1 RETURNING id, stock";
pub const INSERT_MOVEMENT: &str = "INSERT INTO stock_movements \
     (id, product_id, kind, quantity, balance_after, created_at) \
     VALUES (?, ?, 'OUTBOUND', 1, ?, strftime('%Y-%m-%dT%H:%M:%fZ'))";
pub const INSERT_AUDIT: &str = "INSERT INTO audit_logs \
     (id, action, entity_type, entity_id, payload, created_at) \
     VALUES (?, 'STOCK_MOVEMENT', 'product', ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ'))";

pub fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

/// The movement row and the audit row of a movement of product `id` that
/// left `stock`.
pub fn movement_rows(id: String, stock: i64) -> (Statement, Statement) {
    let movement = uuid::Uuid::new_v4().to_string();
    let audit = stmt(
        INSERT_AUDIT,
        vec![
            uuid::Uuid::new_v4().to_string().into(),
            id.clone().into(),
            format!("{{\"movement\":\"{movement}\",\"quantity\":1}}").into(),
        ],
    );
    let movement = stmt(
        INSERT_MOVEMENT,
        vec![movement.into(), id.into(), stock.into()],
    );
    (movement, audit)
}

/// The SKU of call `i`: reads spread over the catalogue, writes over the
/// first 100 products.
pub fn sku(work: &str, i: usize, products: usize) -> String {
    let n = if work == "read" {
        i * 7919 % products
    } else {
        i % 100
    };
    format!("BENCH-{n:05}")
}

/// DB_FILE TASKS READS WRITES PRODUCTS
pub fn args() -> anyhow::Result<(String, usize, usize, usize, usize)> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, tasks, reads, writes, products] = args.as_slice() else {
        anyhow::bail!("usage: {} DB_FILE TASKS READS WRITES PRODUCTS", args[0]);
    };
    Ok((
        path.clone(),
        tasks.parse()?,
        reads.parse()?,
        writes.parse()?,
        products.parse()?,
    ))
}

/// One line for benches/sqlite-driver.sh: name, calls/s, p50 and p99 in ms.
pub fn report(name: &str, mut times: Vec<Duration>, wall: Duration) {
    times.sort();
    let n = times.len();
    println!(
        "{name}\t{:.0}\t{:.3}\t{:.3}",
        n as f64 / wall.as_secs_f64(),
        times[n / 2].as_secs_f64() * 1e3,
        times[n * 99 / 100].as_secs_f64() * 1e3
    );
}

/// Runs calls `0..total` from `tasks` tasks at once (call `i` on task
/// `i % tasks`), each timed; the times and the wall time.
pub async fn in_tasks<F, Fut>(
    tasks: usize,
    total: usize,
    call: F,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let call = call.clone();
        handles.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for i in (t..total).step_by(tasks) {
                let began = Instant::now();
                call(i).await?;
                times.push(began.elapsed());
            }
            anyhow::Ok(times)
        }));
    }
    let mut times = Vec::new();
    for h in handles {
        times.extend(h.await??);
    }
    Ok((times, start.elapsed()))
}
