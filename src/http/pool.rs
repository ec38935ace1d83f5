//! Store connections for the HTTP handlers: each request takes one of its
//! own (reusing an idle one, or opening another), so a slow `/status` or
//! page never holds up another request, and `/healthz` needs none at all.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::store::{Store, StoreError};

/// Idle connections kept; more are opened while requests overlap and
/// closed when they end.
const KEEP_IDLE: usize = 2;

pub struct StorePool {
    path: PathBuf,
    idle: Mutex<Vec<Store>>,
}

/// A connection taken from the pool; back in it when dropped.
pub struct Pooled<'a> {
    pool: &'a StorePool,
    store: Option<Store>,
}

impl StorePool {
    /// Start with `first` (already opened and checked by the caller).
    pub fn new(first: Store) -> StorePool {
        StorePool {
            path: first.path().to_path_buf(),
            idle: Mutex::new(vec![first]),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Store>> {
        // A panic while the lock was held cannot leave the Vec broken.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection for one request (blocking: opens one if none is idle).
    pub fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let store = match self.idle().pop() {
            Some(s) => s,
            None => Store::open_unchecked(&self.path)?,
        };
        Ok(Pooled {
            pool: self,
            store: Some(store),
        })
    }
}

impl Deref for Pooled<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        // Only `drop` takes it out.
        self.store.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.store.take() {
            let mut idle = self.pool.idle();
            if idle.len() < KEEP_IDLE {
                idle.push(s);
            }
        }
    }
}
