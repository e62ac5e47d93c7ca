//! Group commit of stock movements.
//!
//! Every movement recorded (with or without an idempotency key) joins a
//! queue; whoever finds the queue non-empty and a batch slot free takes
//! everything queued (up to [`MAX_BATCH`]) and applies it in one write
//! transaction: the
//! products locked in SKU order (the order the upload worker locks them in,
//! so the two never deadlock), then [`stock::apply_locked`]: each movement
//! checked against the balance its predecessors left, one UPDATE for the
//! products, the ledger and audit rows as multi-row INSERTs, the events and
//! alerts of a single movement. A refused movement (insufficient stock, an
//! archived product) changes nothing and the rest go on, so every request
//! gets exactly the answer it would have got alone.
//!
//! Why: on PostgreSQL a transaction that sends NOTIFY takes a database-wide
//! lock from just before its commit until the commit is flushed, so
//! notifying transactions commit one at a time, each waiting for its own WAL
//! flush. One movement per transaction therefore topped out near 2,500 a
//! second here whatever the pool size (the same statement without
//! `pg_notify` ran at 9,000 a second). A batch pays that commit once.
//!
//! A batch that fails before its commit was rolled back as a whole (an
//! idempotency key another transaction was committing, a deadlock with
//! another writer); its movements then run one by one
//! ([`record_one`], the same write path), so such a failure costs
//! only time.
//! A failure of the commit itself is answered to every movement of the batch
//! as it is, since whether it committed is unknown (as for a lone movement).
//! A batch runs in a task of its own, on the application's task tracker
//! (awaited at shutdown): a request that goes away once its
//! movement was taken cannot cancel the batch (nor any other request's
//! movement); one that goes away before is dropped from the queue unwritten.

use std::collections::HashMap;

use futures_util::future::join_all;
use sea_orm::{ConnectionTrait, DbBackend, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::Actor;
use super::context::Services;
use super::movement::{Pending, ValidMovement, validate};
use super::product_reads::select_in;
use super::stock::{self, MovementInput};
use crate::entity::{product, stock_movement};
use crate::error::{AppError, AppResult};

/// Movements applied together at most (each batch's statements stay under
/// the per-statement parameter budget by chunking).
pub const MAX_BATCH: usize = 256;

/// Records a movement: it joins the next group commit
/// ([`super::group_commit`]), where it is applied by [`stock::apply_locked`] with
/// the others queued beside it. The answer is the one a transaction of its
/// own would give: with an idempotency key, a repeat of the same request
/// returns the first movement and applies nothing, and the same key with a
/// different request is a CONFLICT.
#[tracing::instrument(skip_all, fields(product_id = %input.product_id, kind = ?input.kind))]
pub async fn record(
    db: &Services,
    actor: &Actor,
    input: MovementInput,
) -> AppResult<stock_movement::Model> {
    let movement = validate(&input)?;
    submit(db, actor, movement).await
}

/// Records a movement in a transaction of its own, through the same
/// [`stock::apply_locked`] as a batch: what a batch that failed as a whole falls
/// back to for each of its movements.
pub async fn record_one(
    db: &Services,
    actor: &Actor,
    movement: &ValidMovement,
) -> AppResult<stock_movement::Model> {
    // The transaction lives only inside this block: on any error it is
    // rolled back and its connection returned before the replay lookup below.
    let result = async {
        let txn = db.begin_write().await?;
        let postgres = txn.get_database_backend() == sea_orm::DbBackend::Postgres;
        let mut products: HashMap<Uuid, product::Model> = select_in(
            &*txn,
            "id",
            vec![Value::from(movement.product_id)],
            postgres,
        )
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
        let mut results = stock::apply_locked(&txn, &mut products, &[(actor, movement)]).await?;
        let result = results.pop().unwrap_or_else(|| {
            Err(AppError::internal(anyhow::anyhow!(
                "a movement was applied without an outcome"
            )))
        })?;
        txn.commit().await?;
        Ok(result)
    }
    .await;
    match (result, &movement.idempotency_key) {
        // On PostgreSQL a request racing one with the same key may have waited
        // on the product row and then failed (the unique key, or the stock the
        // first one used up): if the first one committed, answer with it.
        (
            Err(
                err @ (AppError::Conflict(_)
                | AppError::InsufficientStock { .. }
                | AppError::NotFound(_)),
            ),
            Some(key),
        ) => match stock::find_by_keys(db.conn(), actor.user_id, std::slice::from_ref(key)).await {
            Ok(found) => match found.into_iter().next() {
                Some(existing) => stock::replay(existing, &movement.request_hash()),
                None => Err(err),
            },
            Err(_) => Err(err),
        },
        (result, _) => result,
    }
}

/// Records `movement` (already validated) in the next batch, and answers as
/// [`record`] would.
pub async fn submit(
    db: &Services,
    actor: &Actor,
    movement: ValidMovement,
) -> AppResult<stock_movement::Model> {
    let queue = db.movements();
    let mut answer = queue.push(actor, movement);
    loop {
        tokio::select! {
            biased;
            answer = &mut answer => return answered(answer),
            slot = queue.slots().acquire_owned() => {
                let slot = slot.map_err(|_| AppError::internal(anyhow::anyhow!("movement queue closed")))?;
                let batch = queue.take(MAX_BATCH);
                if batch.is_empty() {
                    // Ours is in a batch already under way.
                    drop(slot);
                    return answered(answer.await);
                }
                let db = db.clone();
                db.tasks().clone().spawn(async move {
                    run(&db, batch).await;
                    drop(slot);
                });
            }
        }
    }
}

fn answered(
    answer: Result<AppResult<stock_movement::Model>, oneshot::error::RecvError>,
) -> AppResult<stock_movement::Model> {
    answer.unwrap_or_else(|_| {
        Err(AppError::internal(anyhow::anyhow!(
            "a movement batch ended without answering"
        )))
    })
}

/// Applies `batch` and answers each of its requests.
async fn run(db: &Services, batch: Vec<Pending>) {
    crate::metrics::movement_batch(batch.len());
    match apply(db, &batch).await {
        Ok(results) => {
            for (one, result) in batch.into_iter().zip(results) {
                let _ = one.reply.send(result);
            }
        }
        Err(Failed::BeforeCommit(error)) => {
            tracing::warn!(
                error = %error,
                movements = batch.len(),
                "movement batch rolled back; applying its movements one by one"
            );
            join_all(batch.into_iter().map(|one| async move {
                let result = record_one(db, &one.actor, &one.movement).await;
                let _ = one.reply.send(result);
            }))
            .await;
        }
        Err(Failed::Commit(error)) => {
            tracing::error!(error = %error, movements = batch.len(), "movement batch commit failed");
            for one in batch {
                let _ = one.reply.send(Err(AppError::internal(anyhow::anyhow!(
                    "commit failed: {error}"
                ))));
            }
        }
    }
}

enum Failed {
    BeforeCommit(AppError),
    Commit(sea_orm::DbErr),
}

async fn apply(
    db: &Services,
    batch: &[Pending],
) -> Result<Vec<AppResult<stock_movement::Model>>, Failed> {
    let before = |e: AppError| Failed::BeforeCommit(e);
    let txn = db.begin_write().await.map_err(|e| before(e.into()))?;
    let mut ids: Vec<Uuid> = batch.iter().map(|p| p.movement.product_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // One statement: a batch has at most MAX_BATCH products, within the
    // parameter budget of one statement on both databases.
    let postgres = txn.get_database_backend() == DbBackend::Postgres;
    let values = ids.into_iter().map(Value::from).collect();
    let mut products: HashMap<Uuid, product::Model> = select_in(&*txn, "id", values, postgres)
        .await
        .map_err(before)?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let movements: Vec<(&Actor, &ValidMovement)> =
        batch.iter().map(|p| (&p.actor, &p.movement)).collect();
    let results = stock::apply_locked(&txn, &mut products, &movements)
        .await
        .map_err(before)?;
    txn.commit().await.map_err(Failed::Commit)?;
    Ok(results)
}
