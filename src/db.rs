//! Database connection and the write-transaction discipline shared by every
//! service.
//!
//! SQLite does not make a reader wait when it upgrades to a writer: a
//! transaction that reads first and writes later fails at once with
//! "database is locked" under concurrent writers, whatever the busy timeout.
//! Every write transaction therefore starts with `BEGIN IMMEDIATE` (safe
//! across processes), and within one process writers also queue on an async
//! mutex, so they wait in FIFO order instead of sleeping in SQLite's busy
//! handler, and run on one connection of their own whose page cache stays
//! warm. On PostgreSQL neither applies: writes run concurrently at READ
//! COMMITTED and rely on row locks and conditional updates.
//!
//! A write transaction also collects the domain events of what it changed
//! ([`WriteTxn::emit`]); [`WriteTxn::commit`] publishes them only once the
//! commit succeeded, in commit order per product.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::Config;
use crate::events::{DomainEvent, EventBus};

/// Stripes of the per-product commit-order lock (PostgreSQL).
const ORDER_STRIPES: usize = 64;

/// Bound values per multi-row statement, per database.
/// - SQLite: sqlx binds each parameter after a linear scan of the
///   statement's parameter names, so binding grows with the square of the
///   parameters (6,000 values in one INSERT spent more time there than in
///   SQLite itself), while every statement is a round trip to the
///   connection's worker thread. 1,000 values: 16.6k movement rows/s in
///   `benches/uploads.sh`, against 15.3k with 6,000 and 10.5k with 400.
/// - PostgreSQL: one round trip per statement dominates, so statements are
///   large. sqlx 0.9.0 did not set TCP_NODELAY (sqlx issue #4335), which
///   made any statement larger than about 20 KB wait out the server's
///   delayed ACK (40 ms); 0.9.1, which we require, sets it again.
const SQLITE_PARAMS_PER_STATEMENT: usize = 1000;
const POSTGRES_PARAMS_PER_STATEMENT: usize = 4000;

/// Rows per multi-row statement of `columns` values each.
pub fn rows_per_statement(backend: DbBackend, columns: usize) -> usize {
    let budget = match backend {
        DbBackend::Postgres => POSTGRES_PARAMS_PER_STATEMENT,
        _ => SQLITE_PARAMS_PER_STATEMENT,
    };
    (budget / columns.max(1)).max(1)
}

/// The current time as the database keeps it: to the microsecond. Rows made
/// in Rust take their times from here, so that what the service answers is
/// what a later read returns, whichever way the row is written (sqlx
/// truncates what it binds; PostgreSQL rounds the JSON text of
/// [`insert_all`]).
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6)
}

/// Inserts `rows` into the table of `E`, followed by `tail` (an
/// `ON CONFLICT` or `RETURNING` clause, or nothing), and returns the rows
/// that `RETURNING` gives.
/// - PostgreSQL: one statement however many rows. They travel as a single
///   JSON parameter that `json_populate_recordset` turns into rows of the
///   table's own type, so the text never changes (prepared once per
///   connection, planned once) and no statement binds thousands of values.
///   The JSON names are the columns': serde and sea-orm both name them after
///   the model's fields, and an enum serializes as the string it is stored
///   as (`tests::enums_serialize_as_they_are_stored`).
/// - SQLite: multi-row INSERTs of [`rows_per_statement`] rows.
pub async fn insert_all<E>(
    conn: &impl ConnectionTrait,
    rows: &[E::Model],
    tail: &str,
) -> Result<Vec<sea_orm::QueryResult>, DbErr>
where
    E: sea_orm::EntityTrait,
    E::Model: serde::Serialize + Clone + sea_orm::IntoActiveModel<E::ActiveModel>,
{
    use sea_orm::{IdenStatic, IntoActiveModel, Iterable, QueryTrait};
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let backend = conn.get_database_backend();
    if backend == DbBackend::Postgres {
        let table = E::default().table_name().to_owned();
        let columns = E::Column::iter()
            .map(|c| format!("\"{}\"", c.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let json = serde_json::to_string(rows)
            .map_err(|e| DbErr::Custom(format!("encoding {table} rows: {e}")))?;
        return conn
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "INSERT INTO \"{table}\" ({columns}) SELECT {columns} \
                     FROM json_populate_recordset(NULL::\"{table}\", $1::json){tail}"
                ),
                [sea_orm::Value::from(json)],
            ))
            .await;
    }
    let per_statement = rows_per_statement(backend, E::Column::iter().count());
    let mut returned = Vec::new();
    for chunk in rows.chunks(per_statement) {
        let insert =
            E::insert_many(chunk.iter().cloned().map(|m| m.into_active_model())).into_query();
        let mut statement = backend.build(&insert);
        statement.sql.push_str(tail);
        returned.extend(conn.query_all_raw(statement).await?);
    }
    Ok(returned)
}

/// A statement with `$1`-style placeholders, for either backend. On SQLite
/// the placeholders become anonymous `?`s, with the values in the order the
/// text names them (repeated where it repeats one): sqlx finds a named
/// parameter's value by asking SQLite its name, which SQLite looks up in a
/// list, so binding `n` named values costs `n²` steps. A statement of 1,000
/// values spent about a tenth of SQLite's time of an import there.
/// Placeholders inside quoted literals are left alone.
pub fn statement(backend: DbBackend, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    if backend != DbBackend::Sqlite {
        return Statement::from_sql_and_values(backend, sql, values);
    }
    let (mut text, mut ordered) = (
        String::with_capacity(sql.len()),
        Vec::with_capacity(values.len()),
    );
    let mut quoted = false;
    let mut chars = sql.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '$' || quoted {
            text.push(c);
            continue;
        }
        // `$` is one byte: the digits start right after it.
        let digits = sql[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
        match sql[i + 1..i + 1 + digits].parse::<usize>() {
            Ok(n) if (1..=values.len()).contains(&n) => {
                text.push('?');
                ordered.push(values[n - 1].clone());
                for _ in 0..digits {
                    chars.next();
                }
            }
            _ => text.push(c),
        }
    }
    Statement::from_sql_and_values(backend, text, ordered)
}

/// `$1, $2, ... $n`, for an `IN (...)` list of `n` bound values.
pub fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Advisory lock id for schema changes ("stockroom" in ASCII, truncated).
const SCHEMA_LOCK_KEY: i64 = 0x73746f636b726f6f;

/// The database: the pool, the write discipline (SQLite's writer queue,
/// PostgreSQL's commit order) and publishing what committed to the bus.
#[derive(Clone, Debug)]
pub struct Db {
    conn: DatabaseConnection,
    /// SQLite: the one connection write transactions run on.
    writer: Option<DatabaseConnection>,
    /// SQLite: the writer queue. It keeps the number of the last write
    /// transaction (0 until the first one reads where the tables stand).
    write_lock: Option<Arc<Mutex<i64>>>,
    /// PostgreSQL: held from commit to publish by transactions that emitted
    /// events about a product, so that one product's events are published in
    /// the order their transactions committed.
    order_locks: Arc<Vec<Arc<Mutex<()>>>>,
    statements: Arc<AtomicU64>,
    bus: EventBus,
    /// SQLite: tells [`checkpoints`] that a write transaction committed.
    committed: Option<tokio::sync::mpsc::Sender<()>>,
}

/// SQLite: how long the checkpointer lets a busy writer go on before it
/// copies the WAL back. Longer copies a page that every batch rewrites (a
/// product's row) back less often; shorter keeps the WAL smaller.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// SQLite: checkpoints the WAL on a pool connection of its own, a moment
/// after writes commit (`PRAGMA wal_checkpoint(PASSIVE)`, which waits for
/// no reader or writer). SQLite otherwise checkpoints inside the commit
/// that fills the WAL, on the one writer connection, so every write queued
/// behind it waited; in an import that was a sixth of the writer's time,
/// while the other core was idle. The writer still checkpoints for itself
/// past 160 MB of WAL, should this fall behind. Ends when the last [`Db`]
/// is dropped.
async fn checkpoints(mut committed: tokio::sync::mpsc::Receiver<()>, conn: DatabaseConnection) {
    while committed.recv().await.is_some() {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        while committed.try_recv().is_ok() {}
        let done = conn
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA wal_checkpoint(PASSIVE)",
            ))
            .await
            .and_then(|row| {
                let row = row.ok_or_else(|| DbErr::Custom("no checkpoint result".into()))?;
                Ok((
                    row.try_get_by_index::<i64>(1)?,
                    row.try_get_by_index::<i64>(2)?,
                ))
            });
        match done {
            Ok((frames, copied)) => crate::metrics::wal_checkpoint(frames, copied),
            // Closed by `Db::close` (a CLI command ending, a restore).
            Err(_) if conn.get_sqlite_connection_pool().is_closed() => break,
            Err(e) => tracing::warn!(error = %e, "SQLite WAL checkpoint failed"),
        }
    }
}

impl Db {
    /// Connects lazily: the server starts (and reports itself degraded) while
    /// the database is unreachable, and recovers without a restart.
    pub async fn connect(config: &Config) -> Result<Self, DbErr> {
        let mut opts = ConnectOptions::new(config.database_url.expose().to_string());
        opts.max_connections(config.db_max_connections)
            .min_connections(0)
            .acquire_timeout(config.db_acquire_timeout)
            .connect_timeout(config.db_acquire_timeout)
            .connect_lazy(true)
            .sqlx_logging(false);
        let sqlite = config.is_sqlite();
        if sqlite {
            let busy = config.db_busy_timeout;
            opts.map_sqlx_sqlite_opts(move |o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(busy)
                    .foreign_keys(true)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    // Checkpoint every 40 MB of WAL instead of 4 MB: a page
                    // that batch after batch rewrites (a product's row) is
                    // copied back once per checkpoint. 9.2k -> 11.5k movement
                    // rows/s in `benches/uploads.sh`.
                    .pragma("wal_autocheckpoint", "10000")
            });
        }
        let mut conn = Database::connect(opts).await?;
        // SQLite: write transactions queue for one writer anyway, so they
        // all run on one connection of their own. SQLite drops a
        // connection's page cache whenever another connection wrote, so on
        // the shared pool every write started cold and read its pages
        // again; the writer's cache stays warm, and larger (32 MB).
        let mut writer = if sqlite {
            let options = conn
                .get_sqlite_connection_pool()
                .connect_options()
                .as_ref()
                .clone()
                .pragma("cache_size", "-32768")
                // [`checkpoints`] copies the WAL back; past 160 MB the writer
                // does it itself.
                .pragma("wal_autocheckpoint", "40000");
            let pool = sea_orm::sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .acquire_timeout(config.db_acquire_timeout)
                .connect_lazy_with(options);
            Some(sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
        } else {
            None
        };
        let statements = Arc::new(AtomicU64::new(0));
        let slow = config.db_slow_query;
        let callback = {
            let counter = Arc::clone(&statements);
            move |info: &sea_orm::metric::Info<'_>| {
                counter.fetch_add(1, Ordering::Relaxed);
                crate::metrics::db_statement(info.elapsed, slow, info.failed);
                if info.elapsed >= slow {
                    let sql: String = info.statement.sql.chars().take(300).collect();
                    tracing::warn!(
                        elapsed_ms = info.elapsed.as_millis() as u64,
                        failed = info.failed,
                        sql,
                        "slow database statement"
                    );
                }
            }
        };
        if let Some(writer) = &mut writer {
            writer.set_metric_callback(callback.clone());
        }
        conn.set_metric_callback(callback);
        let committed = sqlite.then(|| {
            let (committed, waiting) = tokio::sync::mpsc::channel(1);
            tokio::spawn(checkpoints(waiting, conn.clone()));
            committed
        });
        Ok(Self {
            conn,
            writer,
            write_lock: sqlite.then(|| Arc::new(Mutex::new(0))),
            order_locks: Arc::new(
                (0..ORDER_STRIPES)
                    .map(|_| Arc::new(Mutex::new(())))
                    .collect(),
            ),
            statements,
            bus: EventBus::new(config.event_bus_capacity),
            committed,
        })
    }

    /// The bus committed events are published on.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Connections the pool holds, and how many of them are idle.
    pub fn pool_figures(&self) -> (u32, usize) {
        match self.backend() {
            DbBackend::Postgres => {
                let pool = self.conn.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => {
                let pool = self.conn.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
        }
    }

    /// Statements run through this pool so far, transactions included.
    pub fn statements_run(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// Starts a write transaction (see the module docs for why).
    pub async fn begin_write(&self) -> Result<WriteTxn, DbErr> {
        // Counted while it waits for the write lock or a pool connection.
        struct Waiting;
        impl Drop for Waiting {
            fn drop(&mut self) {
                crate::metrics::db_waiting(-1.0);
            }
        }
        crate::metrics::db_waiting(1.0);
        let waiting = Waiting;
        let mut permit = match &self.write_lock {
            Some(lock) => Some(Arc::clone(lock).lock_owned().await),
            None => None,
        };
        let conn = self.writer.as_ref().unwrap_or(&self.conn);
        let tx = tokio::sync::OnceCell::new();
        if let Some(last) = permit.as_deref_mut() {
            // SQLite commits one write transaction at a time, in the order
            // they hold the permit: numbered here, they are in commit order.
            if *last == 0 {
                *last = last_sqlite_tx(conn).await?;
            }
            *last += 1;
            let _ = tx.set(*last);
        }
        let txn = conn
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        drop(waiting);
        Ok(WriteTxn {
            txn,
            permit,
            events: StdMutex::new(Vec::new()),
            db: self.clone(),
            tx,
        })
    }

    /// Runs `work` (migrations, seeding) while holding a PostgreSQL advisory
    /// lock on its own connection, so instances starting together take turns
    /// instead of racing on the schema. On SQLite it just runs `work`.
    pub async fn with_schema_lock<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = anyhow::Result<T>>,
    {
        if self.backend() != DbBackend::Postgres {
            return work.await;
        }
        use sea_orm::sqlx::{Connection as _, PgConnection};
        let options = self.conn.get_postgres_connection_pool().connect_options();
        let mut lock = PgConnection::connect_with(&options).await?;
        sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(SCHEMA_LOCK_KEY)
            .execute(&mut lock)
            .await?;
        let result = work.await;
        // Closing the session releases the lock even if the unlock fails.
        let _ = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SCHEMA_LOCK_KEY)
            .execute(&mut lock)
            .await;
        let _ = lock.close().await;
        result
    }

    pub async fn close(self) -> Result<(), DbErr> {
        if let Some(writer) = self.writer {
            writer.close().await?;
        }
        self.conn.close().await
    }
}

impl Deref for Db {
    type Target = DatabaseConnection;

    fn deref(&self) -> &DatabaseConnection {
        &self.conn
    }
}

/// The highest transaction number the SQLite tables hold (0 when empty).
pub async fn last_sqlite_tx(conn: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT MAX((SELECT COALESCE(MAX(tx), 0) FROM stock_movements), \
                        (SELECT COALESCE(MAX(tx), 0) FROM audit_logs)) AS tx",
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64>("", "tx")?,
        None => 0,
    })
}

/// A write transaction; dropping it without `commit` rolls it back and
/// discards its events.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    permit: Option<OwnedMutexGuard<i64>>,
    events: StdMutex<Vec<DomainEvent>>,
    db: Db,
    tx: tokio::sync::OnceCell<i64>,
}

impl WriteTxn {
    /// This transaction's number, which every ledger and audit row it
    /// writes carries (`tx`) to place it in the streams of all products and
    /// of the audit log (docs/ARCHITECTURE.md, "Streams of all products and
    /// of the audit log").
    /// - SQLite: given at `begin_write`, in commit order.
    /// - PostgreSQL: the transaction's id, asked for once. Ids are not in
    ///   commit order; a stream orders by the snapshots that travel with
    ///   the events (see [`crate::events::Sequenced`]).
    pub async fn tx(&self) -> Result<i64, DbErr> {
        self.tx
            .get_or_try_init(|| async {
                let row = self
                    .txn
                    .query_one_raw(Statement::from_string(
                        DbBackend::Postgres,
                        "SELECT pg_current_xact_id()::text::bigint AS tx",
                    ))
                    .await?
                    .ok_or_else(|| DbErr::Custom("no transaction id".into()))?;
                row.try_get::<i64>("", "tx")
            })
            .await
            .copied()
    }

    /// Queues an event, published only if this transaction commits.
    pub fn emit(&self, event: DomainEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }

    /// Marks a point this transaction can go back to (`SAVEPOINT`), so that
    /// one failed step of a batch does not spoil the rest of it (PostgreSQL
    /// refuses every statement after an error until the transaction, or a
    /// savepoint, is rolled back).
    pub async fn savepoint(&self) -> Result<Savepoint, DbErr> {
        self.txn.execute_unprepared("SAVEPOINT step").await?;
        Ok(Savepoint {
            events: self.events.lock().map(|e| e.len()).unwrap_or(0),
        })
    }

    /// Keeps what was done since the savepoint.
    pub async fn release(&self, _point: Savepoint) -> Result<(), DbErr> {
        self.txn
            .execute_unprepared("RELEASE SAVEPOINT step")
            .await
            .map(drop)
    }

    /// Undoes what was done since the savepoint, events included.
    pub async fn rollback_to(&self, point: Savepoint) -> Result<(), DbErr> {
        self.txn
            .execute_unprepared("ROLLBACK TO SAVEPOINT step")
            .await?;
        self.txn
            .execute_unprepared("RELEASE SAVEPOINT step")
            .await?;
        if let Ok(mut events) = self.events.lock() {
            events.truncate(point.events);
        }
        Ok(())
    }

    /// Commits, then publishes the queued events. On PostgreSQL the events
    /// also go out with `pg_notify` inside the transaction, so that other
    /// instances hear of them exactly when (and only if) it commits. On
    /// SQLite a checkpoint is then due ([`checkpoints`]).
    pub async fn commit(self) -> Result<(), DbErr> {
        let checkpoint = self.db.committed.clone();
        self.commit_and_publish().await?;
        if let Some(checkpoint) = checkpoint {
            // Full: a checkpoint is already due.
            let _ = checkpoint.try_send(());
        }
        Ok(())
    }

    async fn commit_and_publish(self) -> Result<(), DbErr> {
        let WriteTxn {
            txn,
            permit,
            events,
            db,
            tx,
        } = self;
        let events = events.into_inner().unwrap_or_default();
        if events.is_empty() {
            return txn.commit().await;
        }
        let postgres = db.backend() == DbBackend::Postgres;
        if postgres {
            db.bus.notify(&txn, &events).await?;
        }
        // Stripes in ascending order, so two transactions never wait on each
        // other's stripes; SQLite's writer permit already orders everything.
        let stripes: BTreeSet<usize> = if postgres {
            events
                .iter()
                .filter_map(DomainEvent::product_id)
                .map(|id| (id.as_u128() % ORDER_STRIPES as u128) as usize)
                .collect()
        } else {
            BTreeSet::new()
        };
        // Commit and publish together in a task of their own: a caller that
        // is cancelled while COMMIT is under way (a request timeout, a client
        // gone) cannot commit without publishing.
        let locks = Arc::clone(&db.order_locks);
        let bus = db.bus.clone();
        tokio::spawn(async move {
            let mut order = Vec::with_capacity(stripes.len());
            for i in stripes {
                order.push(Arc::clone(&locks[i]).lock_owned().await);
            }
            txn.commit().await?;
            // SQLite: every transaction before this one has committed, so
            // its number is also the stream's horizon. PostgreSQL's order
            // comes through the listener (`events::run_listener`).
            bus.publish_committed(events, if postgres { None } else { tx.get().copied() });
            drop(order);
            drop(permit);
            Ok::<(), DbErr>(())
        })
        .await
        .map_err(|e| DbErr::Custom(format!("commit task failed: {e}")))??;
        Ok(())
    }
}

/// A point inside a [`WriteTxn`]; see [`WriteTxn::savepoint`].
#[must_use]
pub struct Savepoint {
    events: usize,
}

impl Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_statements_bind_anonymous_placeholders_in_text_order() {
        use sea_orm::{DbBackend, Value};
        let values = vec![Value::from(1), Value::from("b"), Value::from(3)];
        let sql = "UPDATE t SET a = $3, note = '$1 ₩' WHERE b IN ($2, $1) AND c = $1";
        let sqlite = super::statement(DbBackend::Sqlite, sql, values.clone());
        assert_eq!(
            sqlite.sql,
            "UPDATE t SET a = ?, note = '$1 ₩' WHERE b IN (?, ?) AND c = ?"
        );
        assert_eq!(
            sqlite.values.map(|v| v.0),
            Some(vec![
                Value::from(3),
                Value::from("b"),
                Value::from(1),
                Value::from(1)
            ])
        );
        let postgres = super::statement(DbBackend::Postgres, sql, values.clone());
        assert_eq!(
            (postgres.sql.as_str(), postgres.values.map(|v| v.0)),
            (sql, Some(values))
        );
    }

    use sea_orm::{ActiveEnum, Iterable};

    use crate::entity::audit_log::{AuditAction, EntityType};
    use crate::entity::stock_movement::MovementKind;

    fn serialize_as_stored<E>()
    where
        E: ActiveEnum<Value = String> + Iterable + serde::Serialize + std::fmt::Debug,
    {
        for value in E::iter() {
            assert_eq!(
                serde_json::to_value(&value).ok(),
                Some(serde_json::Value::String(value.to_value())),
                "{value:?}"
            );
        }
    }

    /// `insert_all` sends rows to PostgreSQL as JSON, which must carry each
    /// enum exactly as the column stores it.
    #[test]
    fn enums_serialize_as_they_are_stored() {
        serialize_as_stored::<MovementKind>();
        serialize_as_stored::<AuditAction>();
        serialize_as_stored::<EntityType>();
    }
}
