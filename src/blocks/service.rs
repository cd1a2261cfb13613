//! [`Blocks`]: verified ranges and blocks of every container of a mount, through the
//! cache, single-flight loads, paired hashing and prefetch.
//!
//! Read path of a range ([`Blocks::read`]): decide once whether the container is served
//! ([`Served::check`]); cut the range into segments of blocks (each segment carries its
//! index entry, parsed once); for each block: the reader's handle when it holds it (a
//! block larger than the cache), else the cache (one lock on a hit), else a load: one
//! reader per block reads it through the reader's checked path while others wait
//! ([`Flights`]). A sequential reader's miss loads the next block too, the two hashes
//! interleaved on one core ([`Archive::read_block_entry_pair`]), and queues the blocks
//! that newly entered its prefetch window for the prefetch threads.
//!
//! Where a remote source plugs in: the reader below reads through
//! [`crate::source::ReadAt`], so an HTTP/S3 source needs nothing here beyond a larger
//! prefetch window (the window is per handle and in bytes).
//!
//! Hash groups: a track whose decoded stream is its stored stream (a plain v2 container
//! with the identity engine, [`Served::by_groups`]) is served by groups instead
//! (`Blocks::read_groups`): the cache, the flights and the prefetch queue
//! hold one entry per verified group (its [`BlockKey`] numbers the group), a miss loads
//! only the groups the read overlaps, and a sequential reader loads runs of
//! [`RUN_BYTES`]. Encrypted or encoded containers keep whole blocks (decoding needs
//! them).

use super::flight::Flights;
use super::handle::{Held, Progress, ReadHandle, find};
use super::state::Served;
use super::{BlockCache, BlockIndex, BlockKey, CacheStats, ContainerId, ReadError, TrackId};
use crate::error::Error;
use crate::integrity::tree::Shape;
use crate::reader::{Archive, BlockEntry, VerifiedBlock};
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

/// Most blocks ahead of a sequential reader queued for prefetch, whatever their size.
const WINDOW_BLOCKS: u64 = 64;

/// The first read-ahead hint to a remote source for a sequential reader, in stream
/// bytes; it doubles with each sequential read up to the prefetch window.
pub const HINT_MIN: u64 = 2 << 20;

/// Work for the prefetch threads: a block, or a run of hash groups (its first group's
/// key) queued for a reader whose progress tells whether it is still ahead of it.
enum Ahead {
    Block(BlockKey),
    Run(BlockKey, Option<Progress>),
}

/// Settings of the block layer.
#[derive(Clone)]
pub struct BlocksConfig {
    /// Byte bound of the cache.
    pub cache_bytes: u64,
    /// How far ahead of a sequential reader to load, in bytes (at most half the cache).
    pub prefetch_bytes: u64,
    /// Where warnings go (block failures, VERI mismatches).
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

/// Verified bytes: a range of a cached (or held) block, or bytes gathered from several.
#[derive(Debug)]
pub enum Data {
    Block(Arc<VerifiedBlock>, usize, usize),
    Owned(Vec<u8>),
}

impl Data {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Data::Block(b, lo, hi) => &b.bytes()[*lo..*hi],
            Data::Owned(v) => v,
        }
    }
}

/// What [`Blocks::load_pair`] did with one of its two blocks.
enum PairPart {
    /// Read and checked by this call (and cached when intact and small enough).
    Loaded(Result<Arc<VerifiedBlock>, ReadError>),
    /// Already in the cache.
    Cached,
    /// Another reader is loading it.
    Busy,
}

/// The block layer of a mount.
pub struct Blocks {
    /// Set when the container is opened: at once, or (a prefix mount) on first use.
    containers: Vec<OnceLock<Served>>,
    cache: BlockCache,
    flights: Flights,
    prefetch_tx: Mutex<Option<SyncSender<Ahead>>>,
    cfg: BlocksConfig,
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocks")
            .field("containers", &self.containers)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Blocks {
    /// The layer over `containers`, in the order their [`ContainerId`]s number them.
    pub fn new(containers: Vec<Served>, cfg: BlocksConfig) -> Blocks {
        Self::with_slots(containers.into_iter().map(Some).collect(), cfg)
    }

    /// The layer over containers some of which are opened later ([`Blocks::install`]).
    pub fn with_slots(containers: Vec<Option<Served>>, cfg: BlocksConfig) -> Blocks {
        Blocks {
            containers: containers
                .into_iter()
                .map(|s| match s {
                    Some(s) => OnceLock::from(s),
                    None => OnceLock::new(),
                })
                .collect(),
            cache: BlockCache::new(cfg.cache_bytes),
            flights: Flights::default(),
            prefetch_tx: Mutex::new(None),
            cfg,
        }
    }

    /// Container `c`, opened now; returns false when it was opened already.
    pub fn install(&self, c: ContainerId, served: Served) -> bool {
        self.containers[c.index()].set(served).is_ok()
    }

    /// A container. Every [`ContainerId`] handed to the block layer names an opened
    /// container: the tree opens a container before it names anything inside it.
    pub fn container(&self, c: ContainerId) -> &Served {
        self.containers[c.index()]
            .get()
            .expect("a container is opened before the block layer reads it")
    }

    /// Container `c`, if it was opened.
    pub fn opened(&self, c: ContainerId) -> Option<&Served> {
        self.containers.get(c.index())?.get()
    }

    fn archive(&self, c: ContainerId) -> &Archive {
        &self.container(c).archive
    }

    fn log(&self, msg: &str) {
        (self.cfg.log)(msg)
    }

    /// Cache counters.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Whether block `key` is in the cache (no counting, no reordering).
    pub fn is_cached(&self, key: &BlockKey) -> bool {
        self.cache.contains(key)
    }

    /// Readers waiting for the load of `key` in progress.
    pub fn waiters(&self, key: &BlockKey) -> usize {
        self.flights.waiters(key)
    }

    /// Whether data of container `c` may be served (see [`Served::check`]).
    pub fn check(&self, c: ContainerId) -> Result<(), ReadError> {
        self.container(c).check(&*self.cfg.log)
    }

    /// Verified bytes `[offset, offset + len)` of the stream of track `t` of container
    /// `c` (fewer at the end of the stream). `handle`: the reader's open file, for
    /// sequential detection, its prefetch window and an oversized block.
    pub fn read(
        &self,
        c: ContainerId,
        t: TrackId,
        offset: u64,
        len: u64,
        handle: Option<&ReadHandle>,
    ) -> Result<Data, ReadError> {
        self.check(c)?;
        if self.container(c).by_groups(t.index()) {
            let whole = 0..self.shape(c).stream_len();
            return self.read_groups(c, t, offset, len, handle, whole);
        }
        let track = &self.archive(c).tracks[t.index()];
        let segs: Vec<_> = track.segments(offset, len).collect();
        let Some(last) = segs.last().map(|s| s.block) else {
            return Ok(Data::Owned(Vec::new()));
        };
        let end = offset + segs.iter().map(|s| s.len).sum::<u64>();
        let (sequential, held, queued_to) = match handle {
            Some(h) => {
                let b = h.begin(offset, end);
                (b.sequential, b.held, Some(b.queued_to))
            }
            None => (offset == 0, Default::default(), None),
        };
        let key = |n| BlockKey {
            container: c,
            track: t,
            block: BlockIndex(n),
        };
        let data = match segs.as_slice() {
            [s] => {
                let b = self.block(key(s.block), &s.entry, sequential, &held, handle)?;
                Data::Block(b, s.start as usize, (s.start + s.len) as usize)
            }
            many => {
                let total: u64 = many.iter().map(|s| s.len).sum();
                let mut out = Vec::with_capacity(total as usize);
                for s in many {
                    let b = self.block(key(s.block), &s.entry, false, &held, handle)?;
                    out.extend_from_slice(&b.bytes()[s.start as usize..(s.start + s.len) as usize]);
                }
                Data::Owned(out)
            }
        };
        if sequential {
            self.queue_prefetch(key(last), queued_to, handle);
            let _ = self.hint_ahead(c, t, end, handle);
        }
        Ok(data)
    }

    /// For a sequential reader of a remote container now at stream offset `from`: tell
    /// the source which stored bytes come next (the handle's growing window), so it
    /// fetches them in coalesced parts, several in flight, while the blocks before are
    /// verified and served. Local sources take no hints.
    ///
    /// Returns where the hinted window ends (stream offset), `None` for a local source.
    fn hint_ahead(
        &self,
        c: ContainerId,
        t: TrackId,
        from: u64,
        handle: Option<&ReadHandle>,
    ) -> Option<u64> {
        let h = handle?;
        let a = self.archive(c);
        if !a.source().wants_hints() {
            return None;
        }
        let max = self.cfg.prefetch_bytes.min(self.cache.capacity() / 2);
        let r = h.next_hint(from, HINT_MIN, max);
        if r.is_empty() {
            return Some(r.end);
        }
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut last_block = u64::MAX;
        for s in a.tracks[t.index()].segments(r.start, r.end - r.start) {
            if s.block == last_block {
                continue;
            }
            last_block = s.block;
            let e = &s.entry;
            let end = e.data_offset.saturating_add(e.stored_len);
            ranges.push((e.chunk_offset, end.saturating_sub(e.chunk_offset)));
        }
        a.source().will_read(&ranges);
        Some(r.end)
    }

    /// Like [`Blocks::read`] without a handle, but only when it needs no I/O and no
    /// hashing: `None` unless whether the container may be served is already decided
    /// (a reference file's whole-file VERI checked) and every block of the range is in
    /// the cache (so already verified). A hit counts and reorders like a read; a `None`
    /// changes nothing (no miss counted, no prefetch). For callers that must not block,
    /// such as an async server thread, which then falls back to [`Blocks::read`].
    pub fn try_read_cached(
        &self,
        c: ContainerId,
        t: TrackId,
        offset: u64,
        len: u64,
    ) -> Option<Result<Data, ReadError>> {
        let served = self.container(c);
        if served.unreadable().is_none() && served.archive.needs_veri() && served.veri().is_none() {
            // The first check of a reference file reads and hashes the whole file.
            return None;
        }
        if let Err(e) = self.check(c) {
            return Some(Err(e));
        }
        if self.container(c).by_groups(t.index()) {
            // The cache holds this track's verified hash groups, keyed by group number.
            let shape = self.shape(c);
            let end = offset.saturating_add(len).min(shape.stream_len());
            if offset >= end {
                return Some(Ok(Data::Owned(Vec::new())));
            }
            let (groups, span) = shape.groups_for(offset..end);
            let mut parts = Vec::with_capacity((groups.end - groups.start) as usize);
            for g in groups {
                parts.push(self.cache.get_held(&group_key(c, t, g))?);
            }
            return Some(Ok(join_parts(
                &parts,
                offset - span.start,
                end - span.start,
            )));
        }
        let track = &self.archive(c).tracks[t.index()];
        let key = |n| BlockKey {
            container: c,
            track: t,
            block: BlockIndex(n),
        };
        let mut segs = track.segments(offset, len);
        let Some(first) = segs.next() else {
            return Some(Ok(Data::Owned(Vec::new())));
        };
        let Some(second) = segs.next() else {
            let b = self.cache.get_held(&key(first.block))?;
            return Some(Ok(Data::Block(
                b,
                first.start as usize,
                (first.start + first.len) as usize,
            )));
        };
        let many: Vec<_> = [first, second].into_iter().chain(segs).collect();
        if !many.iter().all(|s| self.cache.contains(&key(s.block))) {
            return None;
        }
        let total: u64 = many.iter().map(|s| s.len).sum();
        let mut out = Vec::with_capacity(total as usize);
        for s in &many {
            // Evicted since the probe above: leave it to a blocking read.
            let b = self.cache.get_held(&key(s.block))?;
            out.extend_from_slice(&b.bytes()[s.start as usize..(s.start + s.len) as usize]);
        }
        Some(Ok(Data::Owned(out)))
    }

    /// Verified bytes `[offset, offset + len)` of block `n` of track `t` of container
    /// `c` (fewer at the block's end).
    pub fn read_block(
        &self,
        c: ContainerId,
        t: TrackId,
        n: BlockIndex,
        offset: u64,
        len: u64,
        handle: Option<&ReadHandle>,
    ) -> Result<Data, ReadError> {
        self.check(c)?;
        let e = self.archive(c).entry(t.index(), n.0)?;
        let lo = offset.min(e.decoded_len);
        let hi = offset.saturating_add(len).min(e.decoded_len);
        if lo == hi {
            return Ok(Data::Owned(Vec::new()));
        }
        if self.container(c).by_groups(t.index()) {
            let file = e.stream_offset..e.stream_offset + e.decoded_len;
            return self.read_groups(c, t, e.stream_offset + lo, hi - lo, handle, file);
        }
        let held = handle.map(|h| h.begin(offset, offset + len).held);
        let held = held.unwrap_or_default();
        let key = BlockKey {
            container: c,
            track: t,
            block: n,
        };
        let b = self.block(key, &e, false, &held, handle)?;
        Ok(Data::Block(b, lo as usize, hi as usize))
    }

    /// A block, verified: held by the reader's handle, cached, or read, checked and
    /// cached (or, when larger than the cache, kept in the handle). With `with_next` (a
    /// sequential reader, which will ask for the next block soon), a miss reads the next
    /// block too when it is not cached, so that the two hashes share this core in
    /// lockstep ([`load_pair`](Self::load_pair)).
    fn block(
        &self,
        key: BlockKey,
        e: &BlockEntry,
        with_next: bool,
        held: &Held,
        handle: Option<&ReadHandle>,
    ) -> Result<Arc<VerifiedBlock>, ReadError> {
        if let Some(b) = find(held, key) {
            return Ok(b);
        }
        if let Some(b) = self.cache.get(&key) {
            return Ok(b);
        }
        self.load_missed(key, e, with_next, handle)
    }

    /// Load a block that was not cached, with its successor when `with_next` allows.
    fn load_missed(
        &self,
        key: BlockKey,
        e: &BlockEntry,
        with_next: bool,
        handle: Option<&ReadHandle>,
    ) -> Result<Arc<VerifiedBlock>, ReadError> {
        if with_next && self.archive(key.container).hashes_blocks_in_pairs() {
            let next = key.next();
            let track = &self.archive(key.container).tracks[key.track.index()];
            let next_fits = track
                .blocks
                .get(next.block.0)
                .is_some_and(|ne| self.cache.fits(ne.decoded_len));
            // A pair is for blocks the cache keeps: a block too large for it is kept by
            // the handle reading it, a successor too large would be dropped unread.
            if next_fits && self.cache.fits(e.decoded_len) && !self.cache.contains(&next) {
                if let [PairPart::Loaded(r), _] = self.load_pair([key, next], false) {
                    return r;
                }
            }
        }
        self.load(key, Some(e), false, handle).map(|(b, _)| b)
    }

    /// Read and verify a block, once even when several readers miss at the same time.
    /// The flag says whether this call did the reading (rather than waiting for another
    /// reader or finding it cached). A block larger than the cache is kept in `handle`
    /// before the load lands, so a later read of the same handle finds it there.
    fn load(
        &self,
        key: BlockKey,
        e: Option<&BlockEntry>,
        prefetch: bool,
        handle: Option<&ReadHandle>,
    ) -> Result<(Arc<VerifiedBlock>, bool), ReadError> {
        let keep = |b: &Arc<VerifiedBlock>| {
            if let Some(h) = handle.filter(|_| !self.cache.fits(b.len() as u64)) {
                h.hold(key, b.clone());
            }
        };
        let flight = match self.flights.lead(key) {
            Ok(f) => f,
            Err(other) => {
                if let Some(b) = other.wait() {
                    keep(&b);
                    return Ok((b, false));
                }
                // The leader failed: read it ourselves, so this reader gets the error too.
                return self.load_uncoordinated(key, e, prefetch).map(|b| (b, true));
            }
        };
        // A previous leader may have filled the cache (or this handle) just before we
        // took the flight.
        let earlier = handle
            .and_then(|h| h.held(key))
            .or_else(|| self.cache.get_held(&key));
        let r = match earlier {
            Some(b) => Ok((b, false)),
            None => self.load_uncoordinated(key, e, prefetch).map(|b| {
                keep(&b);
                (b, true)
            }),
        };
        self.flights
            .land(key, &flight, r.as_ref().ok().map(|(b, _)| b.clone()));
        r
    }

    /// Read and check a block through the reader's checked path, without coordination.
    fn load_uncoordinated(
        &self,
        key: BlockKey,
        e: Option<&BlockEntry>,
        prefetch: bool,
    ) -> Result<Arc<VerifiedBlock>, ReadError> {
        let a = self.archive(key.container);
        let parsed;
        let e = match e {
            Some(e) => e,
            None => {
                parsed = a.entry(key.track.index(), key.block.0)?;
                &parsed
            }
        };
        let r = a.read_block_entry(e);
        self.loaded(key, e, r, prefetch)
    }

    /// Load two blocks. When this call gets to load both and they are in one container,
    /// it reads both and hashes them in lockstep on this core
    /// ([`Archive::read_block_entry_pair`]); otherwise each is left alone when cached or
    /// being loaded by another reader, or loaded by itself. Never waits for another
    /// reader.
    fn load_pair(&self, keys: [BlockKey; 2], prefetch: bool) -> [PairPart; 2] {
        let [fa, fb] = keys.map(|k| self.take_load(k));
        let (ra, rb) = match (&fa, &fb) {
            (Ok(_), Ok(_)) if keys[0].container == keys[1].container => {
                let [ra, rb] = self.read_pair(keys, prefetch);
                (Some(ra), Some(rb))
            }
            _ => (None, None),
        };
        [
            self.finish_load(keys[0], fa, ra, prefetch),
            self.finish_load(keys[1], fb, rb, prefetch),
        ]
    }

    /// Take the load of `key` unless it is cached or another reader is loading it.
    fn take_load(&self, key: BlockKey) -> Result<Arc<super::flight::Flight>, PairPart> {
        if self.cache.contains(&key) {
            return Err(PairPart::Cached);
        }
        let f = self.flights.lead(key).map_err(|_| PairPart::Busy)?;
        // A leader may have cached it between the check and taking the flight.
        if let Some(b) = self.cache.get_held(&key) {
            self.flights.land(key, &f, Some(b));
            return Err(PairPart::Cached);
        }
        Ok(f)
    }

    /// Read and verify two blocks of one container, their hashes in lockstep.
    fn read_pair(
        &self,
        keys: [BlockKey; 2],
        prefetch: bool,
    ) -> [Result<Arc<VerifiedBlock>, ReadError>; 2] {
        let archive = self.archive(keys[0].container);
        match keys.map(|k| archive.entry(k.track.index(), k.block.0)) {
            [Ok(ea), Ok(eb)] => {
                let [ra, rb] = archive.read_block_entry_pair(&ea, &eb);
                [
                    self.loaded(keys[0], &ea, ra, prefetch),
                    self.loaded(keys[1], &eb, rb, prefetch),
                ]
            }
            _ => keys.map(|k| self.load_uncoordinated(k, None, prefetch)),
        }
    }

    /// Land a load taken with [`take_load`](Self::take_load), with its result `r`, read
    /// here if not given.
    fn finish_load(
        &self,
        key: BlockKey,
        flight: Result<Arc<super::flight::Flight>, PairPart>,
        r: Option<Result<Arc<VerifiedBlock>, ReadError>>,
        prefetch: bool,
    ) -> PairPart {
        match flight {
            Err(part) => part,
            Ok(f) => {
                let r = r.unwrap_or_else(|| self.load_uncoordinated(key, None, prefetch));
                self.flights.land(key, &f, r.as_ref().ok().cloned());
                PairPart::Loaded(r)
            }
        }
    }

    /// Cache a block just read, or record and log its failure.
    fn loaded(
        &self,
        key: BlockKey,
        e: &BlockEntry,
        r: crate::Result<VerifiedBlock>,
        prefetch: bool,
    ) -> Result<Arc<VerifiedBlock>, ReadError> {
        let (t, n) = (key.track.index(), key.block.0);
        let cont = self.container(key.container);
        match r {
            Ok(b) => {
                let b = Arc::new(b);
                cont.verified();
                self.cache.insert(key, b.clone());
                Ok(b)
            }
            Err(err) if unanswered(&cont.archive, &err) => {
                // The store did not answer (or the object changed): not a result about
                // the block, which is read again by the next reader that asks.
                if !prefetch {
                    self.log(&format!(
                        "h4fs: {}: track {} block {n} at file offset {}: {err}; returning EIO",
                        cont.path.display(),
                        cont.archive.tracks[t].id,
                        e.chunk_offset,
                    ));
                }
                Err(err.into())
            }
            Err(err) => {
                let msg = err.to_string();
                let first = cont.failed(t, n, e.chunk_offset, msg.clone());
                if first || !prefetch {
                    self.log(&format!(
                        "h4fs: {}: track {} block {n} at file offset {}: {msg}; returning EIO{}",
                        cont.path.display(),
                        cont.archive.tracks[t].id,
                        e.chunk_offset,
                        if prefetch { " (prefetch)" } else { "" }
                    ));
                }
                Err(err.into())
            }
        }
    }

    // ---- prefetch ---------------------------------------------------------------------

    /// Start `threads` background threads that load blocks ahead of sequential readers.
    pub fn start_prefetch(self: &Arc<Self>, threads: usize) {
        if threads == 0 {
            return;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Ahead>(256);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let blocks = Arc::downgrade(self);
            let rx: Arc<Mutex<Receiver<Ahead>>> = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("h4fs-prefetch-{i}"))
                .spawn(move || {
                    loop {
                        // Two keys at a time when two are queued: their hashes then share
                        // a core in lockstep.
                        let (ahead, next) = {
                            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                            match rx.recv() {
                                Ok(k) => (k, rx.try_recv().ok()),
                                Err(_) => return,
                            }
                        };
                        let Some(blocks) = blocks.upgrade() else {
                            return;
                        };
                        match (ahead, next) {
                            (Ahead::Block(key), Some(Ahead::Block(next))) => {
                                blocks.prefetch_pair(key, next)
                            }
                            (first, next) => {
                                for a in std::iter::once(first).chain(next) {
                                    match a {
                                        Ahead::Block(key) => blocks.prefetch_one(key),
                                        Ahead::Run(key, reader) => {
                                            blocks.prefetch_run(key, reader.as_ref())
                                        }
                                    }
                                }
                            }
                        }
                    }
                });
        }
        *self.prefetch_tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// Stop the prefetch threads (they exit once the queue drains).
    pub fn stop_prefetch(&self) {
        self.prefetch_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Prefetch one block unless it is cached or being loaded.
    fn prefetch_one(&self, key: BlockKey) {
        if self.container(key.container).by_groups(key.track.index()) {
            return self.prefetch_run(key, None);
        }
        if !self.cache.contains(&key) && matches!(self.load(key, None, true, None), Ok((_, true))) {
            self.cache.record_prefetch();
        }
    }

    /// Prefetch two blocks, together where possible (see [`load_pair`](Self::load_pair)).
    pub(crate) fn prefetch_pair(&self, a: BlockKey, b: BlockKey) {
        if [a, b]
            .iter()
            .any(|k| self.container(k.container).by_groups(k.track.index()))
        {
            self.prefetch_one(a);
            self.prefetch_one(b);
            return;
        }
        for part in self.load_pair([a, b], true) {
            if matches!(part, PairPart::Loaded(Ok(_))) {
                self.cache.record_prefetch();
            }
        }
    }

    /// For a sequential reader whose read ended in block `last`: queue the blocks after
    /// it, up to `prefetch_bytes` (and half the cache), for the prefetch threads. With a
    /// handle, only blocks not queued for it before (`queued_to`) are queued. Blocks
    /// larger than the cache are not prefetched: they could not be kept.
    fn queue_prefetch(&self, last: BlockKey, queued_to: Option<u64>, handle: Option<&ReadHandle>) {
        let guard = self.prefetch_tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else { return };
        let blocks = &self.archive(last.container).tracks[last.track.index()].blocks;
        let budget = self.cfg.prefetch_bytes.min(self.cache.capacity() / 2);
        let first = last.block.0 + 1;
        let window_end = last.block.0 + WINDOW_BLOCKS;
        // A window queued before and still ahead of this read starts where it ended.
        let skip_to = queued_to.filter(|q| (first..=window_end + 1).contains(q));
        let mut bytes = 0;
        let mut n = first;
        let mut sent_to = first;
        while bytes < budget && n < blocks.len() && n <= window_end {
            let Some(e) = blocks.get(n) else { break };
            bytes += e.decoded_len;
            let key = BlockKey {
                block: BlockIndex(n),
                ..last
            };
            let wanted = skip_to.is_none_or(|q| n >= q)
                && self.cache.fits(e.decoded_len)
                && !self.flights.in_flight(&key)
                && !self.cache.contains(&key);
            if wanted {
                match tx.try_send(Ahead::Block(key)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => break,
                }
            }
            n += 1;
            sent_to = n;
        }
        if let Some(h) = handle {
            h.queued(sent_to.max(skip_to.unwrap_or(0)));
        }
    }

    // ---- hash groups (v2 containers whose stream is their stored stream) -------------

    /// [`read`](Self::read) for a track served by hash groups: the groups overlapping
    /// `[offset, offset + len)`, each from the cache or loaded (a miss loads the groups
    /// from there to the end of the read; for a sequential reader a whole run of
    /// [`RUN_BYTES`], hashed on the loading thread), then the runs ahead of
    /// a sequential reader queued for prefetch. `file`: the stream bytes of the file
    /// being read (the whole stream, or one block), beyond which nothing is loaded ahead.
    fn read_groups(
        &self,
        c: ContainerId,
        t: TrackId,
        offset: u64,
        len: u64,
        handle: Option<&ReadHandle>,
        file: Range<u64>,
    ) -> Result<Data, ReadError> {
        let shape = self.shape(c);
        let end = offset.saturating_add(len).min(shape.stream_len());
        if offset >= end {
            return Ok(Data::Owned(Vec::new()));
        }
        let (groups, span) = shape.groups_for(offset..end);
        let (sequential, continues, queued_to) = match handle {
            Some(h) => {
                let b = h.begin(offset, end);
                (b.sequential, b.continues, Some(b.queued_to))
            }
            None => (offset == 0, false, None),
        };
        let run = run_groups(shape);
        let file_end = shape.groups_for(file).0.end.max(groups.end);
        let mut parts: Vec<Arc<VerifiedBlock>> = Vec::new();
        let mut g = groups.start;
        while g < groups.end {
            let hits = self
                .cache
                .get_while((g..groups.end).map(|g| group_key(c, t, g)), &mut parts);
            g += hits as u64;
            if g == groups.end {
                break;
            }
            let want = if sequential {
                groups.end.max(g + run).min(file_end)
            } else {
                groups.end
            };
            let loaded = if want > groups.end {
                match self.load_groups(c, t, g..want, Report::No) {
                    Ok(v) => v,
                    // The run failed, and the damage may lie beyond what this read
                    // touches: its groups are loaded one by one (the good ones cached,
                    // so later reads do not retry the run), and only a failure among
                    // this read's own groups is reported and fails it.
                    Err(_) => self.load_each(c, t, g..want, groups.end)?,
                }
            } else {
                self.load_groups(c, t, g..groups.end, Report::Read)?
            };
            let take = loaded.len().min((groups.end - g) as usize);
            parts.extend(loaded.into_iter().take(take));
            g += take as u64;
        }
        if continues {
            // An open file of the mount, read in order: the kernel's page cache now holds
            // what this read returns, so the groups it covered whole leave the cache and
            // their buffers are recycled for the runs ahead (drop-behind).
            // The first group's bytes before this read were read before it; the last
            // group stays unless this read reached its end.
            let to = groups.end - u64::from(shape.group_bytes(groups.end - 1).end > end);
            if groups.start < to {
                self.cache
                    .remove_many((groups.start..to).map(|g| group_key(c, t, g)));
            }
        }
        if sequential {
            // A remote source is told the window ahead first, and the prefetch threads
            // load no further than it: what they load then comes out of the source's
            // coalesced parts (several MiB per request), not out of one request per run,
            // and a short forward read after a seek fetches only the growing window.
            let hinted = self.hint_ahead(c, t, end, handle);
            let ahead_end =
                hinted.map_or(file_end, |h| file_end.min(h.div_ceil(shape.group_len())));
            self.queue_prefetch_groups(c, t, groups.end..ahead_end, queued_to, handle);
        }
        Ok(join_parts(&parts, offset - span.start, end - span.start))
    }

    /// The tree shape of a container served by groups.
    fn shape(&self, c: ContainerId) -> Shape {
        self.archive(c)
            .tree()
            .expect("a track served by groups has a tree")
            .shape()
    }

    /// Load the groups of `groups` one by one, from its start up to the first that
    /// fails; a failure before `needed` (the end of the groups a read touches) is
    /// reported and returned, one after it only ends the list.
    fn load_each(
        &self,
        c: ContainerId,
        t: TrackId,
        groups: Range<u64>,
        needed: u64,
    ) -> Result<Vec<Arc<VerifiedBlock>>, ReadError> {
        let mut out = Vec::new();
        for g in groups {
            let report = if g < needed { Report::Read } else { Report::No };
            match self.load_groups(c, t, g..g + 1, report) {
                Ok(v) => out.extend(v),
                Err(e) if g < needed => return Err(e),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Load groups from `groups.start`, at most to `groups.end`, once even when several
    /// readers miss at the same time: the groups this call takes the load of (stopping
    /// at the first one cached or being loaded by another reader) are read and verified
    /// together. When another reader is loading the first group, waits for it instead.
    /// Returns at least the first group.
    fn load_groups(
        &self,
        c: ContainerId,
        t: TrackId,
        groups: Range<u64>,
        report: Report,
    ) -> Result<Vec<Arc<VerifiedBlock>>, ReadError> {
        let key = |g: u64| group_key(c, t, g);
        let first = groups.start;
        // The groups after the first up to the next one cached, then (in one lock of the
        // flights) up to the next one another reader is loading.
        let missing = self.cache.count_missing((first + 1..groups.end).map(key));
        let flights = match self
            .flights
            .lead_while((first..first + 1 + missing as u64).map(key))
        {
            Ok(f) => f,
            Err(other) => {
                return match other.wait() {
                    Some(b) => Ok(vec![b]),
                    // The leader failed: read it ourselves, so this reader gets the
                    // error too.
                    None => self.read_groups_uncoordinated(c, t, first..first + 1, report),
                };
            }
        };
        let to = first + flights.len() as u64;
        // A leader may have cached the first group between our miss and taking the
        // flights (it caches before it lands); the others' waiters then read their
        // groups themselves.
        if let Some(b) = self.cache.get_held(&key(first)) {
            let blocks = std::iter::once(Some(b.clone())).chain(std::iter::repeat(None));
            self.flights
                .land_many((first..to).map(key), flights.into_iter().zip(blocks));
            return Ok(vec![b]);
        }
        let r = self.read_groups_uncoordinated(c, t, first..to, report);
        let blocks = (0..flights.len()).map(|i| r.as_ref().ok().map(|v| v[i].clone()));
        self.flights
            .land_many((first..to).map(key), flights.into_iter().zip(blocks));
        r
    }

    /// Read and verify groups, without coordination; cache them, or (when `report`
    /// says so) record and log the failure against the block holding the first bad
    /// group.
    fn read_groups_uncoordinated(
        &self,
        c: ContainerId,
        t: TrackId,
        groups: Range<u64>,
        report: Report,
    ) -> Result<Vec<Arc<VerifiedBlock>>, ReadError> {
        let cont = self.container(c);
        match cont.archive.read_stream_groups(groups.clone()) {
            Ok(v) => {
                cont.groups_verified_add(v.len() as u64);
                let v: Vec<_> = v.into_iter().map(Arc::new).collect();
                self.cache.insert_many(
                    v.iter()
                        .enumerate()
                        .map(|(i, b)| (group_key(c, t, groups.start + i as u64), b.clone())),
                );
                Ok(v)
            }
            Err(err) if report == Report::No => Err(err.into()),
            Err(err) if unanswered(&cont.archive, &err) => {
                self.log(&format!(
                    "h4fs: {}: track {} hash groups {}..{}: {err}; returning EIO",
                    cont.path.display(),
                    cont.archive.tracks[t.index()].id,
                    groups.start,
                    groups.end,
                ));
                Err(err.into())
            }
            Err(err) => {
                let (n, at) = match &err {
                    Error::Block { block, offset, .. } => (*block, *offset),
                    _ => {
                        let first = self.shape(c).group_bytes(groups.start).start;
                        let track = &cont.archive.tracks[t.index()];
                        track
                            .segments(first, 1)
                            .next()
                            .map_or((0, 0), |s| (s.block, s.entry.chunk_offset))
                    }
                };
                let msg = err.to_string();
                cont.failed(t.index(), n, at, msg.clone());
                self.log(&format!(
                    "h4fs: {}: track {} hash groups {}..{} (block {n} at file offset {at}): {msg}; returning EIO",
                    cont.path.display(),
                    cont.archive.tracks[t.index()].id,
                    groups.start,
                    groups.end,
                ));
                Err(err.into())
            }
        }
    }

    /// Prefetch the run of groups starting at `key`'s group: its groups from the first
    /// one not cached, up to the next one cached or being loaded; nothing when the
    /// reader it was queued for has read past the run already (its groups may have left
    /// the cache behind it) or closed its file.
    pub(super) fn prefetch_run(&self, key: BlockKey, reader: Option<&Progress>) {
        let shape = self.shape(key.container);
        let end = (key.block.0 + run_groups(shape)).min(shape.group_count());
        if end > key.block.0 && reader.is_some_and(|r| r.passed(shape.group_bytes(end - 1).end)) {
            return;
        }
        let Some(from) = (key.block.0..end)
            .find(|&g| !self.cache.contains(&group_key(key.container, key.track, g)))
        else {
            return;
        };
        if self
            .flights
            .in_flight(&group_key(key.container, key.track, from))
        {
            return;
        }
        // A failure is not reported here: the reader that reaches the bad group is.
        if let Ok(v) = self.load_groups(key.container, key.track, from..end, Report::No) {
            if !v.is_empty() {
                self.cache.record_prefetch();
            }
        }
    }

    /// For a sequential reader whose read ended before group `ahead.start`: queue the
    /// aligned runs of groups ahead of it (before `ahead.end`, the end of its file), up
    /// to `prefetch_bytes` (and half the cache), for the prefetch threads; with a
    /// handle, only runs not queued for it before.
    fn queue_prefetch_groups(
        &self,
        c: ContainerId,
        t: TrackId,
        ahead: Range<u64>,
        queued_to: Option<u64>,
        handle: Option<&ReadHandle>,
    ) {
        let next = ahead.start;
        let guard = self.prefetch_tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else { return };
        let shape = self.shape(c);
        let run = run_groups(shape);
        let budget = self.cfg.prefetch_bytes.min(self.cache.capacity() / 2);
        let runs = (budget / (run * shape.group_len())).max(1);
        let first = next.div_ceil(run) * run;
        let window_end = first + runs * run;
        // Runs queued before and still ahead of this read are not queued again.
        let skip_to = queued_to.filter(|q| (first..=window_end).contains(q));
        let mut g = skip_to.unwrap_or(first);
        while g < window_end && g < ahead.end {
            let key = group_key(c, t, g);
            if !self.flights.in_flight(&key) && !self.cache.contains(&key) {
                match tx.try_send(Ahead::Run(key, handle.map(|h| h.progress()))) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => break,
                }
            }
            g += run;
        }
        if let Some(h) = handle {
            h.queued(g);
        }
    }
}

/// Whether a read of a remote container failed for want of bytes (the store did not
/// answer, or the object changed on it) rather than in a check of the bytes: such a
/// failure is logged and answered with EIO, but is no verification result (not listed
/// in `veri.json`), and the next read tries the store again.
fn unanswered(a: &Archive, err: &Error) -> bool {
    matches!(err, Error::Io { .. }) && a.source().wants_hints()
}

/// Whether a failed group load is a verification result (recorded for `veri.json` and
/// the stats, and logged): for the groups a read touches, not for a run loaded ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    Read,
    No,
}

/// What a sequential reader of a track served by groups verifies per load: a run of
/// groups of this many bytes, hashed on the thread that loads them.
pub const RUN_BYTES: u64 = 2 << 20;

/// Groups in a run (at least one).
fn run_groups(shape: Shape) -> u64 {
    (RUN_BYTES / shape.group_len()).max(1)
}

/// The cache and flight key of hash group `g` of track `t` of container `c`.
/// Bytes `[lo, hi)` of consecutive verified groups `parts`, counted from the first.
fn join_parts(parts: &[Arc<VerifiedBlock>], lo: u64, hi: u64) -> Data {
    match parts {
        [one] => Data::Block(one.clone(), lo as usize, hi as usize),
        [first, rest @ ..] if !rest.is_empty() => {
            // Views of one buffer, back to back (the groups of one read): one view of
            // them all, no copy.
            let mut all = Some((**first).clone());
            for p in rest {
                all = all.and_then(|a| a.join(p));
            }
            match all {
                Some(a) => Data::Block(Arc::new(a), lo as usize, hi as usize),
                None => copy_parts(parts, lo, hi),
            }
        }
        _ => copy_parts(parts, lo, hi),
    }
}

/// Bytes `lo..hi` of `parts` read back to back, copied into one buffer.
fn copy_parts(parts: &[Arc<VerifiedBlock>], lo: u64, hi: u64) -> Data {
    let mut out = Vec::with_capacity((hi - lo) as usize);
    let mut at = 0u64;
    for p in parts {
        let plen = p.len() as u64;
        let (a, b) = (lo.max(at), hi.min(at + plen));
        if a < b {
            out.extend_from_slice(&p.bytes()[(a - at) as usize..(b - at) as usize]);
        }
        at += plen;
    }
    Data::Owned(out)
}

fn group_key(c: ContainerId, t: TrackId, g: u64) -> BlockKey {
    BlockKey {
        container: c,
        track: t,
        block: BlockIndex(g),
    }
}
