//! Concurrent lookups by key, coalesced into batched loads across requests.
//!
//! A lookup whose key is not in hand joins a queue. While fewer than
//! `max_loads` loads run, a new one starts at once (a lone request waits for
//! nothing); otherwise the keys that arrive meanwhile go together into the
//! next load, up to `max_batch` at a time. Under load, one statement and one
//! round trip answer many requests, which is where the time went: in a
//! profile of random `productBySku` reads over 100,000 products, most of the
//! server's CPU was the kernel's side of one database round trip per request.
//!
//! Loads run on the application's task tracker, not inside the request that
//! started them: a request that is dropped (a client gone, a timeout) does
//! not leave the others waiting.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

type Answer<V, E> = Result<Option<V>, E>;

/// Loads the values of some keys; a key it leaves out has no value.
pub type Load<K, V, E> =
    Box<dyn Fn(Vec<K>) -> BoxFuture<'static, Result<HashMap<K, V>, E>> + Send + Sync>;

pub struct Coalescer<K, V, E> {
    queue: Mutex<Queue<K, V, E>>,
    load: Load<K, V, E>,
    max_batch: usize,
    max_loads: usize,
    tasks: TaskTracker,
}

struct Queue<K, V, E> {
    waiting: Vec<(K, oneshot::Sender<Answer<V, E>>)>,
    loads: usize,
}

/// Why a lookup got no answer from its load.
#[derive(Debug, thiserror::Error)]
pub enum Unanswered<E> {
    #[error("{0}")]
    Failed(E),
    /// The load panicked or was stopped (shutdown).
    #[error("the batched load ended without an answer")]
    Lost,
}

impl<K, V, E> Coalescer<K, V, E>
where
    K: Clone + Eq + Hash + Send + 'static,
    V: Clone + Send + 'static,
    E: Clone + Send + 'static,
{
    pub fn new(
        load: Load<K, V, E>,
        max_batch: usize,
        max_loads: usize,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                loads: 0,
            }),
            load,
            max_batch: max_batch.max(1),
            max_loads: max_loads.max(1),
            tasks,
        })
    }

    /// The value of `key`, loaded with the others waiting.
    pub async fn get(self: &Arc<Self>, key: K) -> Result<Option<V>, Unanswered<E>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().map_err(|_| Unanswered::Lost)?;
            queue.waiting.push((key, tx));
            let start = queue.loads < self.max_loads;
            if start {
                queue.loads += 1;
            }
            start
        };
        if start {
            let this = Arc::clone(self);
            self.tasks.spawn(async move { this.drain().await });
        }
        match rx.await {
            Ok(answer) => answer.map_err(Unanswered::Failed),
            Err(_) => Err(Unanswered::Lost),
        }
    }

    /// Loads batches until the queue is empty.
    async fn drain(self: Arc<Self>) {
        // Gives the load's place back however this ends (a panic included).
        struct Slot<'a, K, V, E>(&'a Mutex<Queue<K, V, E>>);
        impl<K, V, E> Drop for Slot<'_, K, V, E> {
            fn drop(&mut self) {
                if let Ok(mut queue) = self.0.lock() {
                    queue.loads -= 1;
                }
            }
        }
        let _slot = Slot(&self.queue);
        loop {
            let batch: Vec<_> = match self.queue.lock() {
                Ok(mut queue) if !queue.waiting.is_empty() => {
                    let n = queue.waiting.len().min(self.max_batch);
                    queue.waiting.drain(..n).collect()
                }
                _ => return,
            };
            let keys: Vec<K> = {
                let mut seen = HashSet::with_capacity(batch.len());
                batch
                    .iter()
                    .filter(|(key, _)| seen.insert(key))
                    .map(|(key, _)| key.clone())
                    .collect()
            };
            match (self.load)(keys).await {
                Ok(found) => {
                    for (key, tx) in batch {
                        let _ = tx.send(Ok(found.get(&key).cloned()));
                    }
                }
                Err(err) => {
                    for (_, tx) in batch {
                        let _ = tx.send(Err(err.clone()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn concurrent_lookups_share_loads_and_each_gets_its_own_value() {
        let loads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&loads);
        let load: Load<u32, u32, String> = Box::new(move |keys| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                // Odd keys have no value.
                Ok(keys
                    .into_iter()
                    .filter(|k| k.is_multiple_of(2))
                    .map(|k| (k, k * 10))
                    .collect())
            }
            .boxed()
        });
        let coalescer = Coalescer::new(load, 64, 1, TaskTracker::new());
        let lookups = (0..100u32).map(|i| {
            let coalescer = Arc::clone(&coalescer);
            tokio::spawn(async move { coalescer.get(i % 10).await })
        });
        let answers = futures_util::future::join_all(lookups).await;
        for (i, answer) in answers.into_iter().enumerate() {
            let key = i as u32 % 10;
            let expected = key.is_multiple_of(2).then_some(key * 10);
            assert_eq!(answer.unwrap().unwrap(), expected);
        }
        let loads = loads.load(Ordering::SeqCst);
        assert!(loads < 10, "100 lookups took {loads} loads");
    }

    #[tokio::test]
    async fn a_failed_or_panicking_load_answers_every_waiter_and_frees_its_place() {
        let load: Load<u32, u32, String> = Box::new(|keys| {
            async move {
                match keys.first() {
                    Some(1 | 2) => Err("refused".to_string()),
                    Some(3) => panic!("a bug in a load"),
                    _ => Ok(keys.into_iter().map(|k| (k, k)).collect()),
                }
            }
            .boxed()
        });
        let coalescer = Coalescer::new(load, 64, 1, TaskTracker::new());
        let (a, b) = tokio::join!(coalescer.get(1), coalescer.get(2));
        assert!(matches!(a, Err(Unanswered::Failed(ref e)) if e == "refused"));
        assert!(matches!(b, Err(Unanswered::Failed(_))));
        assert!(matches!(coalescer.get(3).await, Err(Unanswered::Lost)));
        // The panicked load gave its place back: the next one runs.
        assert_eq!(coalescer.get(4).await.unwrap(), Some(4));
    }
}
