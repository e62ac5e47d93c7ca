//! A stock movement as asked for and as validated, the balance rule, and the
//! queue movements wait in for their group commit: what the services'
//! context keeps and every writer of stock shares.

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

use super::{Actor, optional_text};
use crate::entity::stock_movement::{self, MovementKind};
use crate::error::{AppError, AppResult};

pub const MAX_NOTE: usize = 500;
pub const MAX_REFERENCE: usize = 100;
pub const MAX_IDEMPOTENCY_KEY: usize = 100;

#[derive(Clone, Debug)]
pub struct MovementInput {
    pub product_id: Uuid,
    pub kind: MovementKind,
    pub quantity: i64,
    pub note: Option<String>,
    pub reference: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A movement that passed validation, with its signed delta.
#[derive(Clone, Debug)]
pub struct ValidMovement {
    pub product_id: Uuid,
    pub kind: MovementKind,
    pub delta: i64,
    pub note: Option<String>,
    pub reference: Option<String>,
    pub idempotency_key: Option<String>,
}

impl ValidMovement {
    /// Fingerprint of what the request asks for, to tell a replay of an
    /// idempotency key from a different request reusing it.
    pub fn request_hash(&self) -> String {
        let canonical = json!([
            self.product_id,
            self.kind,
            self.delta,
            self.note,
            self.reference
        ]);
        crate::digest::sha256_hex(canonical.to_string())
    }
}

pub fn validate(input: &MovementInput) -> AppResult<ValidMovement> {
    let q = input.quantity;
    if q.unsigned_abs() > i32::MAX as u64 {
        return Err(AppError::bad_input(
            "quantity",
            format!("quantity must be between -{0} and {0}", i32::MAX),
        ));
    }
    let delta = match input.kind {
        MovementKind::Inbound | MovementKind::Return if q > 0 => q,
        MovementKind::Outbound if q > 0 => -q,
        MovementKind::Adjustment if q != 0 => q,
        MovementKind::Adjustment => {
            return Err(AppError::bad_input(
                "quantity",
                "quantity of an ADJUSTMENT must be a non-zero signed delta",
            ));
        }
        _ => {
            return Err(AppError::bad_input(
                "quantity",
                "quantity must be greater than zero",
            ));
        }
    };
    let idempotency_key = match input.idempotency_key.as_deref().map(str::trim) {
        None => None,
        Some("") => {
            return Err(AppError::bad_input(
                "idempotencyKey",
                "idempotencyKey must not be empty",
            ));
        }
        Some(k) => optional_text("idempotencyKey", Some(k), MAX_IDEMPOTENCY_KEY)?,
    };
    Ok(ValidMovement {
        product_id: input.product_id,
        kind: input.kind,
        delta,
        note: optional_text("note", input.note.as_deref(), MAX_NOTE)?,
        reference: optional_text("reference", input.reference.as_deref(), MAX_REFERENCE)?,
        idempotency_key,
    })
}

/// Whether `delta` fits a product holding `stock`: never below zero, never
/// above the largest stock a product can hold.
pub fn check_balance(stock: i64, delta: i64) -> AppResult<()> {
    let after = stock + delta;
    if after < 0 {
        Err(AppError::InsufficientStock {
            available: stock,
            requested: -delta,
        })
    } else if after > i64::from(i32::MAX) {
        Err(AppError::bad_input(
            "quantity",
            format!("stock would exceed the maximum of {}", i32::MAX),
        ))
    } else {
        Ok(())
    }
}

/// Batches in flight at once: one can be committing while the next applies
/// its statements. Three were measured too: smaller batches (6.6 movements
/// on average against 9.8 at 32 clients) and no more movements a second.
const BATCHES_IN_FLIGHT: usize = 2;

/// Where a movement's outcome is sent.
pub type Reply = oneshot::Sender<AppResult<stock_movement::Model>>;

/// A movement waiting for its batch.
pub struct Pending {
    pub actor: Actor,
    pub movement: ValidMovement,
    pub reply: Reply,
}

/// The queue of movements waiting for a batch, and the batch slots.
pub struct MovementQueue {
    pending: Mutex<Vec<Pending>>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for MovementQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MovementQueue")
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl Default for MovementQueue {
    fn default() -> Self {
        Self {
            pending: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(BATCHES_IN_FLIGHT)),
        }
    }
}

impl MovementQueue {
    /// Queues a movement; its outcome arrives on the receiver.
    pub fn push(
        &self,
        actor: &Actor,
        movement: ValidMovement,
    ) -> oneshot::Receiver<AppResult<stock_movement::Model>> {
        let (reply, answer) = oneshot::channel();
        self.lock().push(Pending {
            actor: actor.clone(),
            movement,
            reply,
        });
        answer
    }

    /// The batch slots: a batch runs while it holds one.
    pub fn slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.slots)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The oldest queued movements whose requests still wait, at most `max`.
    pub fn take(&self, max: usize) -> Vec<Pending> {
        let mut pending = self.lock();
        pending.retain(|p| !p.reply.is_closed());
        let n = pending.len().min(max);
        pending.drain(..n).collect()
    }
}
