//! Positions in the streams of all products (the ledger) and of the audit
//! log: what a client has been sent, so that it can resume (`after:`) with
//! no gap and no duplicate.
//!
//! Every ledger and audit row carries `tx`, the number of the transaction
//! that wrote it ([`crate::db::WriteTxn::tx`]). On SQLite the numbers follow
//! commit order. On PostgreSQL they are transaction ids, which do not: a
//! transaction that began earlier can commit later. So a position is
//! - a `horizon`: every row of a transaction numbered below it was sent;
//! - `done`: transactions at or above the horizon whose rows were all sent;
//! - `partial`: the transaction being sent, and its last row sent (rows of
//!   one transaction go out together, in id order).
//!
//! A stream learns its horizon from the transactions it is sent: each comes
//! with the horizon of its own snapshot ([`crate::events::Sequenced`]), and
//! arrives after every transaction below it (PostgreSQL delivers
//! notifications in commit order). A replay reads the database's horizon
//! first, then the rows above the position: every transaction below that
//! horizon has ended, so whatever it wrote is in the read. `done` stays as
//! small as the transactions that overlap in time.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};
use uuid::Uuid;

use crate::entity::{audit_log, stock_movement};
use crate::error::{AppError, AppResult};

/// Which stream a position belongs to; a cursor of one is refused by the
/// other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// Every movement of every product (`stockChanged` without a product).
    Movements,
    /// Movements that took a product to or below its threshold (`lowStock`).
    LowStock,
    /// Every audit row (`auditLogAdded`).
    Audit,
}

impl StreamKind {
    fn tag(self) -> &'static str {
        match self {
            Self::Movements => "m1",
            Self::LowStock => "l1",
            Self::Audit => "a1",
        }
    }
}

/// What a stream has sent; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    horizon: i64,
    done: BTreeSet<i64>,
    partial: Option<(i64, Uuid)>,
}

impl Position {
    /// Everything below `horizon` sent, nothing at or above it.
    pub fn at(horizon: i64) -> Self {
        Self {
            horizon,
            ..Self::default()
        }
    }

    /// Whether the row (`tx`, `id`) was already sent.
    pub fn covers(&self, tx: i64, id: Uuid) -> bool {
        tx < self.horizon
            || self.done.contains(&tx)
            || self
                .partial
                .is_some_and(|(ptx, pid)| ptx == tx && id <= pid)
    }

    /// Records the row (`tx`, `id`) as sent: the next of its transaction,
    /// or the first of a new one (the one before is then whole).
    pub fn sent(&mut self, tx: i64, id: Uuid) {
        if let Some((ptx, _)) = self.partial
            && ptx != tx
        {
            self.done.insert(ptx);
        }
        self.partial = Some((tx, id));
    }

    /// Every transaction below `horizon` is known to be sent.
    pub fn raise(&mut self, horizon: i64) {
        if horizon > self.horizon {
            self.horizon = horizon;
            self.prune();
        }
    }

    fn prune(&mut self) {
        self.done = self.done.split_off(&self.horizon);
        if let Some((ptx, _)) = self.partial
            && ptx < self.horizon
        {
            self.partial = None;
        }
    }

    /// The cursor a client resumes with.
    pub fn encode(&self, kind: StreamKind) -> String {
        use std::fmt::Write as _;
        let mut text = format!("{}:{}", kind.tag(), self.horizon);
        for tx in &self.done {
            let _ = write!(text, ",{}", tx - self.horizon);
        }
        if let Some((tx, id)) = self.partial {
            let _ = write!(text, ";{}:{}", tx - self.horizon, id.simple());
        }
        B64.encode(text)
    }

    /// Reads a cursor of `kind`'s stream; anything else is `BAD_USER_INPUT`
    /// on `field`.
    pub fn decode(kind: StreamKind, field: &str, cursor: &str) -> AppResult<Self> {
        let bad = || AppError::bad_input(field, "not a cursor of this stream");
        let bytes = B64.decode(cursor.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let rest = text
            .strip_prefix(kind.tag())
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(bad)?;
        let (head, partial) = match rest.split_once(';') {
            Some((head, partial)) => (head, Some(partial)),
            None => (rest, None),
        };
        let mut numbers = head.split(',');
        let horizon: i64 = numbers
            .next()
            .and_then(|h| h.parse().ok())
            .filter(|h| *h >= 0)
            .ok_or_else(bad)?;
        let offset = |d: &str| -> AppResult<i64> {
            d.parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .and_then(|d| horizon.checked_add(d))
                .ok_or_else(bad)
        };
        let mut done = BTreeSet::new();
        for d in numbers {
            done.insert(offset(d)?);
        }
        let partial = match partial {
            Some(p) => {
                let (tx, id) = p.split_once(':').ok_or_else(bad)?;
                Some((offset(tx)?, Uuid::try_parse(id).map_err(|_| bad())?))
            }
            None => None,
        };
        // Written by `encode`, a cursor is small; a huge one is not ours.
        if done.len() > MAX_DONE {
            return Err(bad());
        }
        Ok(Self {
            horizon,
            done,
            partial,
        })
    }
}

/// More transactions at once than a cursor can name.
const MAX_DONE: usize = 10_000;

/// The database's horizon now: every transaction numbered below it has
/// ended. Read it before the rows it is to vouch for.
pub async fn horizon(conn: &impl ConnectionTrait) -> AppResult<i64> {
    let backend = conn.get_database_backend();
    if backend != DbBackend::Postgres {
        // SQLite numbers its transactions in commit order, one at a time.
        return Ok(crate::db::last_sqlite_tx(conn).await? + 1);
    }
    let sql = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS h";
    let row = conn
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("no horizon")))?;
    Ok(row.try_get::<i64>("", "h")?)
}

/// The position of a stream that has been sent everything committed so
/// far in `E`: for a client that re-reads what it shows, then subscribes
/// `after:` it (what commits in between is sent, perhaps again).
pub async fn now<E: Positioned>(conn: &impl ConnectionTrait) -> AppResult<Position> {
    let mut position = Position::at(horizon(conn).await?);
    let above: Vec<i64> = E::find()
        .select_only()
        .column(E::TX)
        .distinct()
        .filter(E::TX.gte(position.horizon))
        .limit(MAX_DONE as u64)
        .into_tuple()
        .all(conn)
        .await?;
    position.done.extend(above);
    Ok(position)
}

/// Rows after a position, in `(tx, id)` order, at most `limit` of them.
pub struct Tail<M> {
    /// The database's horizon, read before the rows.
    pub horizon: i64,
    pub rows: Vec<M>,
    /// There were more than `limit`.
    pub truncated: bool,
}

/// A table whose rows are positioned by `tx`.
pub trait Positioned: EntityTrait {
    const TX: Self::Column;
    const ID: Self::Column;
    fn place(model: &Self::Model) -> (i64, Uuid);
}

impl Positioned for stock_movement::Entity {
    const TX: Self::Column = stock_movement::Column::Tx;
    const ID: Self::Column = stock_movement::Column::Id;
    fn place(m: &stock_movement::Model) -> (i64, Uuid) {
        (m.tx, m.id)
    }
}

impl Positioned for audit_log::Entity {
    const TX: Self::Column = audit_log::Column::Tx;
    const ID: Self::Column = audit_log::Column::Id;
    fn place(m: &audit_log::Model) -> (i64, Uuid) {
        (m.tx, m.id)
    }
}

/// The rows of `E` (narrowed by `filter`) a stream at `position` has not
/// been sent.
pub async fn after<E, F>(
    conn: &impl ConnectionTrait,
    position: &Position,
    limit: usize,
    filter: F,
) -> AppResult<Tail<E::Model>>
where
    E: Positioned,
    F: FnOnce(sea_orm::Select<E>) -> sea_orm::Select<E>,
{
    let horizon = horizon(conn).await?;
    let mut query = E::find().filter(E::TX.gte(position.horizon));
    if !position.done.is_empty() {
        query = query.filter(E::TX.is_not_in(position.done.iter().copied()));
    }
    if let Some((tx, id)) = position.partial {
        query = query.filter(Expr::col(E::TX).ne(tx).or(Expr::col(E::ID).gt(id)));
    }
    let mut rows = filter(query)
        .order_by_asc(E::TX)
        .order_by_asc(E::ID)
        .limit(limit as u64 + 1)
        .all(conn)
        .await?;
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    Ok(Tail {
        horizon,
        rows,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written_and_only_for_its_stream() {
        let mut p = Position::at(1000);
        p.sent(1003, Uuid::nil());
        p.sent(1001, Uuid::max());
        p.sent(1001, Uuid::max());
        let cursor = p.encode(StreamKind::Movements);
        assert_eq!(
            Position::decode(StreamKind::Movements, "after", &cursor).unwrap(),
            p
        );
        assert!(Position::decode(StreamKind::Audit, "after", &cursor).is_err());
        assert!(Position::decode(StreamKind::Movements, "after", "12").is_err());
        assert!(Position::decode(StreamKind::Movements, "after", "").is_err());
    }

    #[test]
    fn a_position_covers_what_was_sent_and_nothing_else() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let mut p = Position::at(10);
        assert!(p.covers(9, b) && !p.covers(10, a));
        p.sent(12, a);
        assert!(
            p.covers(12, a) && !p.covers(12, b),
            "the rest of 12 is to come"
        );
        p.sent(11, b);
        assert!(p.covers(12, b), "12 is whole once 11 began");
        assert!(!p.covers(10, a) && !p.covers(13, a));
        p.raise(12);
        assert!(p.covers(10, a) && p.covers(11, a) && p.covers(11, b));
        assert!(p.covers(12, b) && !p.covers(13, a));
        assert_eq!(p.done.len(), 1, "only 12 is above the horizon: {p:?}");
    }
}
