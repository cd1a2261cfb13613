//! The block cache: an LRU of verified, decoded blocks, bounded in bytes.
//!
//! Only [`VerifiedBlock`]s go in, so anything served from the cache has passed its hash
//! (or CRC) check and decoded to its recorded length: the cache can never hand out bytes
//! that were not checked. Entries are `Arc`s, so a reader copying out of a block does
//! not hold the lock and an eviction never invalidates bytes being copied.
//!
//! Counters (hits, misses, evictions, prefetches, ...) are atomics read by `h4fs stats` (the mount root's `user.h4fs.stats` attribute).
//! Lock order: the cache has one `Mutex`; nothing is called while it is held.
//! The hit path takes it once ([`BlockCache::get`]).

use super::BlockKey;
use crate::reader::VerifiedBlock;
use lru::LruCache;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counter values at one moment, as `h4fs stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to read and verify the block.
    pub misses: u64,
    /// Blocks dropped to stay within the byte bound.
    pub evictions: u64,
    /// Blocks loaded ahead of a sequential reader.
    pub prefetches: u64,
    /// Blocks currently held.
    pub blocks: u64,
    /// Decoded bytes currently held.
    pub bytes: u64,
    /// The byte bound.
    pub capacity: u64,
}

struct Inner {
    lru: LruCache<BlockKey, Arc<VerifiedBlock>>,
    /// Bytes of the buffers the held blocks are part of, each buffer counted once.
    bytes: u64,
    /// `bytes` plus [`ENTRY_OVERHEAD`] per block: what the bound applies to.
    charged: u64,
    /// Held blocks per shared buffer ([`VerifiedBlock::buffer_id`]), and its length.
    buffers: HashMap<usize, (u64, u32)>,
}

impl Inner {
    fn add(&mut self, b: &VerifiedBlock) {
        let e = self
            .buffers
            .entry(b.buffer_id())
            .or_insert((b.buffer_len() as u64, 0));
        if e.1 == 0 {
            self.bytes += e.0;
            self.charged += e.0;
        }
        e.1 += 1;
        self.charged += ENTRY_OVERHEAD;
    }

    fn remove(&mut self, b: &VerifiedBlock) {
        self.charged -= ENTRY_OVERHEAD;
        let id = b.buffer_id();
        if let Some(e) = self.buffers.get_mut(&id) {
            e.1 -= 1;
            if e.1 == 0 {
                let len = e.0;
                self.buffers.remove(&id);
                self.bytes -= len;
                self.charged -= len;
            }
        }
    }
}

/// Memory one cached block costs beyond its bytes (the LRU node, the `Arc` and the
/// buffer's header), so that `--cache-size` bounds memory even for tiny blocks. The
/// bytes are charged per buffer: blocks that are views of one buffer (the hash groups
/// of one read) cost its length once, for as long as any of them is held, so a few
/// groups kept hot cannot hold more memory than the bound.
pub const ENTRY_OVERHEAD: u64 = 192;

fn charge(len: u64) -> u64 {
    len + ENTRY_OVERHEAD
}

/// An LRU of verified blocks whose buffers plus [`ENTRY_OVERHEAD`] per block stay within
/// `capacity`.
pub struct BlockCache {
    inner: Mutex<Inner>,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    prefetches: AtomicU64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl BlockCache {
    /// A cache that holds at most `capacity` bytes (blocks plus their overhead). A block
    /// larger than the whole capacity is never held (it is served and dropped).
    pub fn new(capacity: u64) -> BlockCache {
        BlockCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                charged: 0,
                buffers: HashMap::new(),
            }),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            prefetches: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` inconsistent in a way that
        // serves unverified bytes, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a block of `len` decoded bytes can be held at all (with its overhead it
    /// is within the whole capacity).
    pub fn fits(&self, len: u64) -> bool {
        charge(len) <= self.capacity
    }

    /// The block, marking it most recently used; counts a hit or a miss.
    pub fn get(&self, key: &BlockKey) -> Option<Arc<VerifiedBlock>> {
        let found = self.lock().lru.get(key).cloned();
        match found {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        found
    }

    /// The block if held, marking it most recently used and counting a hit; its absence
    /// is not counted (the caller already counted that miss, or is the prefetcher).
    pub fn get_held(&self, key: &BlockKey) -> Option<Arc<VerifiedBlock>> {
        let found = self.lock().lru.get(key).cloned();
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Whether the block is held, without counting or reordering.
    pub fn contains(&self, key: &BlockKey) -> bool {
        self.lock().lru.contains(key)
    }

    /// The blocks of `keys` in order, up to the first one not held, each marked most
    /// recently used, under one lock (the groups of one read): a hit counted for each
    /// block found, and a miss when one was not.
    pub fn get_while(
        &self,
        keys: impl IntoIterator<Item = BlockKey>,
        out: &mut Vec<Arc<VerifiedBlock>>,
    ) -> usize {
        let (found, missed) = {
            let mut g = self.lock();
            let mut found = 0;
            let mut missed = false;
            for k in keys {
                match g.lru.get(&k) {
                    Some(b) => {
                        out.push(b.clone());
                        found += 1;
                    }
                    None => {
                        missed = true;
                        break;
                    }
                }
            }
            (found, missed)
        };
        self.hits.fetch_add(found as u64, Ordering::Relaxed);
        if missed {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// How many of `keys`, from the first, are not held (stopping at the first held),
    /// under one lock, without counting or reordering.
    pub fn count_missing(&self, keys: impl IntoIterator<Item = BlockKey>) -> usize {
        let g = self.lock();
        keys.into_iter().take_while(|k| !g.lru.contains(k)).count()
    }

    /// Insert a block, evicting least recently used blocks until it fits.
    pub fn insert(&self, key: BlockKey, block: Arc<VerifiedBlock>) {
        self.insert_many([(key, block)]);
    }

    /// Insert blocks under one lock (the groups of one load), evicting least recently
    /// used blocks until they fit.
    pub fn insert_many(&self, blocks: impl IntoIterator<Item = (BlockKey, Arc<VerifiedBlock>)>) {
        let mut evicted = 0;
        // Dropped after the lock is released: the last reference to a buffer returns it
        // to the read-buffer pool, which has a lock of its own.
        let mut gone = Vec::new();
        {
            let mut g = self.lock();
            for (key, block) in blocks {
                if !self.fits(block.buffer_len() as u64) {
                    continue;
                }
                g.add(&block);
                if let Some(old) = g.lru.put(key, block) {
                    g.remove(&old);
                    gone.push(old);
                }
                while g.charged > self.capacity {
                    match g.lru.pop_lru() {
                        Some((_, b)) => {
                            g.remove(&b);
                            gone.push(b);
                            evicted += 1;
                        }
                        None => break,
                    }
                }
            }
        }
        drop(gone);
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    /// Drop the blocks of `keys` that are held, under one lock, without counting them as
    /// evictions: a sequential reader of the mount is done with them (the kernel's page
    /// cache holds what it was served), and their buffers go back to the read-buffer
    /// pool for the reads ahead instead of fresh memory being faulted in.
    pub fn remove_many(&self, keys: impl IntoIterator<Item = BlockKey>) {
        let mut gone = Vec::new();
        {
            let mut g = self.lock();
            for k in keys {
                if let Some(b) = g.lru.pop(&k) {
                    g.remove(&b);
                    gone.push(b);
                }
            }
        }
        drop(gone);
    }

    /// Count a block loaded by the prefetcher.
    pub fn record_prefetch(&self) {
        self.prefetches.fetch_add(1, Ordering::Relaxed);
    }

    /// The byte bound.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Current counter values.
    pub fn stats(&self) -> CacheStats {
        let (blocks, bytes) = {
            let g = self.lock();
            (g.lru.len() as u64, g.bytes)
        };
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            prefetches: self.prefetches.load(Ordering::Relaxed),
            blocks,
            bytes,
            capacity: self.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(block: u64) -> BlockKey {
        BlockKey::new(0, 0, block)
    }

    fn blk(len: usize, fill: u8) -> Arc<VerifiedBlock> {
        Arc::new(VerifiedBlock::for_test(vec![fill; len]))
    }

    #[test]
    fn hit_miss_and_byte_bound() {
        // Room for two 40-byte blocks with their overhead, not three.
        let c = BlockCache::new(2 * charge(40) + 10);
        assert!(c.get(&key(0)).is_none());
        c.insert(key(0), blk(40, 0));
        c.insert(key(1), blk(40, 1));
        assert_eq!(c.get(&key(0)).unwrap().bytes()[0], 0);
        // Block 1 is now least recently used; inserting 40 more bytes evicts it.
        c.insert(key(2), blk(40, 2));
        assert!(!c.contains(&key(1)));
        assert!(c.contains(&key(0)) && c.contains(&key(2)));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.evictions), (1, 1, 1));
        assert_eq!(
            (s.blocks, s.bytes, s.capacity),
            (2, 80, 2 * charge(40) + 10)
        );
    }

    #[test]
    fn oversized_block_is_not_held_and_replacement_keeps_count() {
        let c = BlockCache::new(charge(10));
        c.insert(key(0), blk(11, 0));
        assert!(!c.contains(&key(0)));
        c.insert(key(1), blk(6, 0));
        c.insert(key(1), blk(8, 0));
        let s = c.stats();
        assert_eq!((s.blocks, s.bytes, s.evictions), (1, 8, 0));
        c.record_prefetch();
        assert_eq!(c.stats().prefetches, 1);
    }

    #[test]
    fn overhead_bounds_many_tiny_blocks() {
        let c = BlockCache::new(10 * charge(1));
        for i in 0..100 {
            c.insert(key(i), blk(1, 0));
        }
        assert_eq!(c.stats().blocks, 10);
    }

    /// Views of one buffer (the hash groups of one read) cost the buffer once, for as
    /// long as any of them is held: a group kept hot keeps its whole buffer charged.
    #[test]
    fn views_of_one_buffer_are_charged_once_while_any_is_held() {
        let views = VerifiedBlock::views_for_test(vec![7; 100], &[0..40, 40..80, 80..100]);
        let c = BlockCache::new(100 + 3 * ENTRY_OVERHEAD + 50);
        for (i, v) in views.into_iter().enumerate() {
            c.insert(key(i as u64), Arc::new(v));
        }
        let s = c.stats();
        assert_eq!((s.blocks, s.bytes, s.evictions), (3, 100, 0));
        // A separate 50-byte block does not fit beside the buffer and the three entries'
        // overhead plus its own: the least recently used view goes, the buffer stays
        // charged for the two left.
        c.get(&key(2));
        c.insert(key(9), blk(50, 1));
        let s = c.stats();
        assert!(!c.contains(&key(0)));
        assert_eq!((s.blocks, s.bytes), (3, 150));
        // Keep view 2 hot; the buffer is released only with the last of its views.
        for i in 10..13 {
            c.get(&key(2));
            c.insert(key(i), blk(50, 1));
        }
        assert!(!c.contains(&key(1)) && c.contains(&key(2)));
        let s = c.stats();
        // View 2 (20 bytes) still costs its whole 100-byte buffer.
        assert_eq!((s.blocks, s.bytes), (2, 150), "{s:?}");
        assert!(s.bytes + 2 * ENTRY_OVERHEAD <= c.capacity());
    }

    #[test]
    fn batched_lookups_inserts_and_removals() {
        let c = BlockCache::new(10 * charge(10));
        c.insert_many((0..4).map(|i| (key(i), blk(10, i as u8))));
        let mut out = Vec::new();
        // Hits up to the first missing key, one miss for it.
        assert_eq!(c.get_while([0, 1, 5, 2].map(key), &mut out), 2);
        assert_eq!(out.iter().map(|b| b.bytes()[0]).collect::<Vec<_>>(), [0, 1]);
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (2, 1));
        assert_eq!(c.count_missing([7, 8, 2, 9].map(key)), 2);
        assert_eq!(c.count_missing([2].map(key)), 0);
        // Removal is not eviction; missing keys are skipped.
        c.remove_many([1, 3, 6].map(key));
        let s = c.stats();
        assert_eq!((s.blocks, s.bytes, s.evictions), (2, 20, 0));
        assert!(c.contains(&key(0)) && c.contains(&key(2)) && !c.contains(&key(1)));
        // insert_many evicts as inserts do, and skips blocks that can never fit.
        c.insert_many(
            (10..20)
                .map(|i| (key(i), blk(10, 0)))
                .chain([(key(99), blk(3000, 0))]),
        );
        let s = c.stats();
        assert_eq!((s.blocks, s.evictions), (10, 2));
        assert!(!c.contains(&key(99)));
    }

    #[test]
    fn empty_blocks_are_cached() {
        let c = BlockCache::new(ENTRY_OVERHEAD);
        c.insert(key(5), blk(0, 0));
        assert!(c.get(&key(5)).is_some_and(|b| b.is_empty()));
    }
}
