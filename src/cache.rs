//! A read cache of products for the hottest reads: `productBySku` and the
//! total count of the unfiltered catalogue.
//!
//! Coherence: every committed change to a product reaches
//! [`crate::events::EventBus::publish`], on the instance that wrote it right
//! after COMMIT and before the writer's request returns, and on the others
//! through LISTEN/NOTIFY; publishing invalidates the product here first. So a
//! client that wrote and then reads always sees its write, and no answer is
//! staler than the last committed change this instance has heard of. While
//! the cross-instance listener is down the cache is bypassed, and when events
//! may have been missed it is emptied. Entries also expire after
//! `READ_CACHE_SECONDS`.
//!
//! The cache is an [`Observer`] of the bus: it hears every event as it is
//! published, and whether the listener is up, without the bus knowing what
//! it keeps.
//!
//! A read that raced a change must not put the old row back: readers take a
//! ticket (the generation of the key's stripe) before reading the database
//! and store only if no invalidation of that stripe happened since; a stripe's
//! lock orders the check-and-store against invalidation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::entity::product;
use crate::events::{DomainEvent, Observer};

const STRIPES: usize = 64;
pub struct ProductCache {
    by_sku: moka::sync::Cache<String, Arc<product::Model>>,
    /// The SKU each cached product was stored under, so that a change known
    /// by id (a renamed SKU included) removes the right entry.
    sku_of: moka::sync::Cache<Uuid, String>,
    stripes: Vec<Mutex<u64>>,
    /// The count of products that are not archived, when known.
    active: Mutex<(u64, Option<u64>)>,
    /// Bumped by every invalidation: a ticket for "all stripes".
    epoch: AtomicU64,
    /// True while the listener that hears other instances' changes is up:
    /// only then may the cache be read.
    trusted: AtomicBool,
}

/// What a reader holds between its ticket and its store.
#[derive(Clone, Copy)]
pub struct Ticket {
    stripe: usize,
    generation: u64,
    epoch: u64,
}

fn stripe_of(sku: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sku.hash(&mut h);
    (h.finish() as usize) % STRIPES
}

impl ProductCache {
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            by_sku: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            sku_of: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            active: Mutex::new((0, None)),
            epoch: AtomicU64::new(0),
            trusted: AtomicBool::new(false),
        }
    }

    /// Whether the cache may be read now (see [`Observer::listener_changed`]).
    pub fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    pub fn get_by_sku(&self, sku: &str) -> Option<Arc<product::Model>> {
        self.by_sku.get(sku)
    }

    pub fn ticket(&self, sku: &str) -> Ticket {
        let stripe = stripe_of(sku);
        let generation = self.stripes[stripe].lock().map(|g| *g).unwrap_or(u64::MAX);
        Ticket {
            stripe,
            generation,
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    /// Stores what a read found, unless the stripe changed since its ticket.
    pub fn put_by_sku(&self, sku: &str, ticket: Ticket, product: Arc<product::Model>) {
        let Ok(generation) = self.stripes[ticket.stripe].lock() else {
            return;
        };
        if *generation == ticket.generation && self.epoch.load(Ordering::Acquire) == ticket.epoch {
            self.sku_of.insert(product.id, sku.to_string());
            self.by_sku.insert(sku.to_string(), product);
        }
    }

    /// Forgets a product that changed (by its id and its current SKU).
    pub fn invalidate(&self, product: &product::Model) {
        let current = product.sku.to_lowercase();
        let old = self.sku_of.remove(&product.id);
        for sku in std::iter::once(current).chain(old) {
            if let Ok(mut generation) = self.stripes[stripe_of(&sku)].lock() {
                *generation += 1;
                self.by_sku.invalidate(&sku);
            }
        }
    }

    /// A ticket for the active count.
    pub fn count_ticket(&self) -> (u64, Option<u64>) {
        self.active.lock().map(|a| *a).unwrap_or((u64::MAX, None))
    }

    pub fn put_count(&self, ticket_generation: u64, count: u64) {
        if let Ok(mut active) = self.active.lock()
            && active.0 == ticket_generation
        {
            active.1 = Some(count);
        }
    }

    /// The catalogue grew, shrank, or a product was archived or restored.
    pub fn invalidate_count(&self) {
        if let Ok(mut active) = self.active.lock() {
            active.0 += 1;
            active.1 = None;
        }
    }

    /// Forgets everything (events may have been missed).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for stripe in &self.stripes {
            if let Ok(mut g) = stripe.lock() {
                *g += 1;
            }
        }
        self.by_sku.invalidate_all();
        self.sku_of.invalidate_all();
        self.invalidate_count();
    }
}

impl Observer for ProductCache {
    fn published(&self, event: &DomainEvent) {
        match event {
            DomainEvent::StockMoved { product, .. } => self.invalidate(product),
            DomainEvent::ProductCreated { product }
            | DomainEvent::ProductUpdated { product }
            | DomainEvent::ProductArchived { product } => {
                self.invalidate(product);
                self.invalidate_count();
            }
            DomainEvent::EventsMissed => self.clear(),
            _ => {}
        }
    }

    fn listener_changed(&self, up: bool) {
        // Whatever was cached may have changed unheard.
        self.clear();
        self.trusted.store(up, Ordering::Release);
    }
}
