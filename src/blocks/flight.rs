//! Single-flight loading: the first reader to miss a block loads it; readers missing the
//! same block meanwhile wait for that load and share its result.
//!
//! Lock order: the flights map before a flight's own lock is never needed (each is
//! taken alone); neither is held while reading.

use super::BlockKey;
use crate::reader::VerifiedBlock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// One load in progress: `None` until it lands, then the block (or `None` when the load
/// failed, and each waiter reads the block itself to get its own error).
pub struct Flight {
    done: Mutex<Option<Option<Arc<VerifiedBlock>>>>,
    cv: Condvar,
    /// Readers waiting for it.
    waiters: AtomicUsize,
}

impl Flight {
    /// Record the load's result and wake its waiters.
    fn finish(&self, block: Option<Arc<VerifiedBlock>>) {
        let mut g = self.done.lock().unwrap_or_else(|p| p.into_inner());
        *g = Some(block);
        self.cv.notify_all();
    }

    /// Wait for the load to land: the block, or `None` when it failed.
    pub fn wait(&self) -> Option<Arc<VerifiedBlock>> {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let mut g = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while g.is_none() {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.clone().flatten()
    }
}

/// The loads in progress, by block.
#[derive(Default)]
pub struct Flights {
    loading: Mutex<HashMap<BlockKey, Arc<Flight>>>,
}

impl Flights {
    /// Take the load of `key`: `Ok` with a new flight for this caller to
    /// [`land`](Self::land), or `Err` with the flight of the reader already loading it.
    pub fn lead(&self, key: BlockKey) -> Result<Arc<Flight>, Arc<Flight>> {
        self.lead_while([key]).map(|mut led| led.remove(0))
    }

    /// Finish a flight taken with [`lead`](Self::lead), waking its waiters.
    pub fn land(&self, key: BlockKey, flight: &Flight, block: Option<Arc<VerifiedBlock>>) {
        flight.finish(block);
        self.loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// Lead the loads of `keys` from the first, under one lock, stopping before the
    /// first key already being loaded: the flights taken, and the other reader's flight
    /// when the first key was already being loaded (then none is taken).
    pub fn lead_while(
        &self,
        keys: impl IntoIterator<Item = BlockKey>,
    ) -> Result<Vec<Arc<Flight>>, Arc<Flight>> {
        let mut m = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        let mut led = Vec::new();
        for key in keys {
            if let Some(f) = m.get(&key) {
                if led.is_empty() {
                    return Err(f.clone());
                }
                break;
            }
            let f = Arc::new(Flight {
                done: Mutex::new(None),
                cv: Condvar::new(),
                waiters: AtomicUsize::new(0),
            });
            m.insert(key, f.clone());
            led.push(f);
        }
        Ok(led)
    }

    /// Finish the flights of `keys` taken with [`lead_while`](Self::lead_while) (as
    /// [`land`](Self::land) each), removing them from the map under one lock.
    pub fn land_many(
        &self,
        keys: impl Iterator<Item = BlockKey>,
        landed: impl Iterator<Item = (Arc<Flight>, Option<Arc<VerifiedBlock>>)>,
    ) {
        for (flight, block) in landed {
            flight.finish(block);
        }
        let mut m = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            m.remove(&k);
        }
    }

    /// Readers waiting for the load of `key` (0 when it is not being loaded).
    pub fn waiters(&self, key: &BlockKey) -> usize {
        self.loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map_or(0, |f| f.waiters.load(Ordering::Relaxed))
    }

    /// Whether `key` is being loaded.
    pub fn in_flight(&self, key: &BlockKey) -> bool {
        self.loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }
}
