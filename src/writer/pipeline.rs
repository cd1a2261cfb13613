//! The pack pipeline: a reader thread, a writer thread and (with more than two
//! threads) helpers around one bounded queue of batches of blocks; see the module docs
//! of [`crate::writer`].

use super::builder::BlockMeta;
use super::builder::{Format, Prepared, Writer, prepare};
use super::input::BlockIter;
use crate::crypto::{ContainerCrypto, Henc};
use crate::engine::Engine;
use crate::error::Result;
use crate::integrity;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Input bytes per batch of the pack pipeline: small enough that the two threads of a
/// two-core machine trade work finely, large enough that the queue is not the cost.
const BATCH_BYTES: u64 = 4 << 20;
const BATCH_BLOCKS: usize = 1024;
/// Batches queued at most (read and not yet written).
const MAX_PENDING: usize = 16;

/// Blocks as read: data and timing.
type RawBlocks = Vec<(Vec<u8>, BlockMeta)>;
/// What prepares a batch: (number of its first block, blocks) -> prepared blocks.
/// The flag says whether to hash the blocks too (the writer hashes its own alongside VERI).
type PrepFn<'a> = dyn Fn(u64, RawBlocks, bool) -> Result<Vec<Prepared>> + Sync + 'a;

/// One batch of blocks in the pack queue.
enum Slot {
    /// Read, not yet prepared; `base` is the number of its first block.
    Raw { base: u64, blocks: RawBlocks },
    /// Being prepared by a thread other than the writer.
    Claimed,
    /// Prepared (or failed to).
    Ready(Result<Vec<Prepared>>),
}

/// The pack queue; see the module docs.
#[derive(Default)]
struct Queue {
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    front_seq: u64,
    /// Set by the reader: `Ok` at the end of the input, `Err` on a read error.
    end: Option<Result<()>>,
    /// Set by the writer when it fails: everyone stops.
    abort: bool,
}

impl Queue {
    /// Take the newest raw batch, leaving the oldest for the writer.
    fn claim_newest(&mut self) -> Option<(u64, u64, RawBlocks)> {
        let i = (1..self.slots.len())
            .rev()
            .find(|&i| matches!(self.slots[i], Slot::Raw { .. }))?;
        match std::mem::replace(&mut self.slots[i], Slot::Claimed) {
            Slot::Raw { base, blocks } => Some((self.front_seq + i as u64, base, blocks)),
            _ => unreachable!("slot {i} was raw"),
        }
    }

    /// Record the result for a claimed batch (the writer waits for claimed batches, so
    /// it is still queued).
    fn store(&mut self, seq: u64, r: Result<Vec<Prepared>>) {
        let i = (seq - self.front_seq) as usize;
        self.slots[i] = Slot::Ready(r);
    }
}

#[derive(Default)]
struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// Prepare the newest raw batches while `more(queue)` holds and nobody aborted,
    /// waiting for one to be queued while none is left to claim, until the input ends.
    /// The one claim loop: helpers run it to the end, the reader while the queue is full.
    fn help_while<'a>(
        &'a self,
        mut q: MutexGuard<'a, Queue>,
        prep: &PrepFn<'_>,
        more: impl Fn(&Queue) -> bool,
    ) -> MutexGuard<'a, Queue> {
        while !q.abort && more(&q) {
            match q.claim_newest() {
                Some((seq, base, raw)) => {
                    drop(q);
                    let r = prep(base, raw, true);
                    q = self.lock();
                    q.store(seq, r);
                    self.cv.notify_all();
                }
                None if q.end.is_some() => break,
                None => q = self.wait(q),
            }
        }
        q
    }

    /// Prepare queued batches until the input has ended and none is left to claim.
    fn help(&self, prep: &PrepFn<'_>) {
        drop(self.help_while(self.lock(), prep, |_| true));
    }
}

/// The hash of the source stream the reader thread takes as it reads.
enum SourceHash {
    /// SHA-256, in lockstep with a block's SHA-256 when the reader hashes blocks too.
    Sha256(integrity::lanes::Sha256),
    /// BLAKE3 (v2, unencrypted: META records it, and SHA-256 stays the one pass VERI
    /// needs).
    Blake3(Box<blake3::Hasher>),
    /// None: the stored bytes are the source's and the v2 tree's root is its BLAKE3.
    FromTree,
}

impl SourceHash {
    fn update(&mut self, data: &[u8]) {
        match self {
            SourceHash::Sha256(h) => h.update(data),
            SourceHash::Blake3(h) => {
                h.update(data);
            }
            SourceHash::FromTree => {}
        }
    }

    /// Hash `data` into the source hash and return its own SHA-256.
    fn update_and_sha256(&mut self, data: &[u8]) -> [u8; 32] {
        match self {
            SourceHash::Sha256(h) => {
                let mut block = integrity::lanes::Sha256::new();
                integrity::lanes::update2(h, data, &mut block, data);
                block.finalize()
            }
            SourceHash::Blake3(h) => {
                h.update(data);
                integrity::sha256(data)
            }
            SourceHash::FromTree => integrity::sha256(data),
        }
    }

    fn finish(self) -> Option<[u8; 32]> {
        match self {
            SourceHash::Sha256(h) => Some(h.finalize()),
            SourceHash::Blake3(h) => Some(*h.finalize().as_bytes()),
            SourceHash::FromTree => None,
        }
    }
}

/// Run the pipeline over `blocks`: returns the writer with every block added (its tail
/// not yet written) and the hash of the source stream: BLAKE3 when `blake3_source`,
/// else SHA-256; `None` when the stored bytes are the source's (identity engine, no
/// sealing) and `blake3_source`, as the v2 tree's root is then that hash and
/// [`Writer::tree_root`] gives it without a second BLAKE3 pass. Blocks are sealed with
/// `sealing` when given. `progress` is called with the input bytes consumed so far.
pub(super) fn run<W: Write + Send>(
    mut blocks: BlockIter<'_>,
    out: W,
    engine: Engine,
    format: Format,
    blake3_source: bool,
    sealing: Option<(ContainerCrypto, Henc)>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Writer<W>, Option<[u8; 32]>)> {
    let writer_crypto = sealing.clone();
    let prep = |base: u64, blocks: RawBlocks, hash: bool| -> Result<Vec<Prepared>> {
        blocks
            .into_iter()
            .enumerate()
            .map(|(k, (data, meta))| {
                let seal = sealing.as_ref().map(|(c, _)| (c, base + k as u64));
                prepare(engine, data, meta, seal, hash)
            })
            .collect()
    };
    // Stored bytes are the input bytes: the reader can hash blocks as it reads them.
    let stored_is_input = engine == Engine::Identity && sealing.is_none();
    let shared = Shared::default();
    let helpers = rayon::current_num_threads().saturating_sub(2);

    std::thread::scope(|s| -> Result<(Writer<W>, Option<[u8; 32]>)> {
        let (shared, prep) = (&shared, &prep);
        let reader = s.spawn(move || -> Option<[u8; 32]> {
            let mut source = match (blake3_source, stored_is_input) {
                (true, true) => SourceHash::FromTree,
                (true, false) => SourceHash::Blake3(Box::default()),
                (false, _) => SourceHash::Sha256(integrity::lanes::Sha256::new()),
            };
            let (mut done, mut next_block) = (0u64, 0u64);
            // Whether the writer was behind when the last batch was queued: then this
            // one is hashed here, in lockstep with the source hash, and queued ready.
            let mut writer_behind = false;
            loop {
                let mut batch = Vec::new();
                let mut ready = Vec::new();
                let hash_here = stored_is_input && writer_behind;
                let mut bytes = 0u64;
                let mut err = None;
                while bytes < BATCH_BYTES && batch.len() + ready.len() < BATCH_BLOCKS {
                    match blocks.next() {
                        None => break,
                        Some(Ok((data, meta))) if hash_here => {
                            let sha256 = source.update_and_sha256(&data);
                            bytes += data.len() as u64;
                            ready.push(Prepared {
                                sha256: Some(sha256),
                                crc: crc32fast::hash(&data),
                                decoded_len: data.len() as u64,
                                stored: data,
                                meta,
                            });
                        }
                        Some(Ok((data, meta))) => {
                            source.update(&data);
                            bytes += data.len() as u64;
                            batch.push((data, meta));
                        }
                        Some(Err(e)) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                done += bytes;
                let at_end = (batch.is_empty() && ready.is_empty()) || err.is_some();
                let mut q = shared.lock();
                if q.abort {
                    break;
                }
                if !batch.is_empty() {
                    let n = batch.len() as u64;
                    q.slots.push_back(Slot::Raw {
                        base: next_block,
                        blocks: batch,
                    });
                    next_block += n;
                } else if !ready.is_empty() {
                    next_block += ready.len() as u64;
                    q.slots.push_back(Slot::Ready(Ok(ready)));
                }
                writer_behind = q.slots.len() >= MAX_PENDING / 2;
                if at_end {
                    q.end = Some(err.map_or(Ok(()), Err));
                    shared.cv.notify_all();
                    drop(q);
                    // Help prepare what is still queued.
                    shared.help(prep);
                    break;
                }
                shared.cv.notify_all();
                // At most MAX_PENDING batches in flight; while full, prepare the newest.
                drop(shared.help_while(q, prep, |q| q.slots.len() >= MAX_PENDING));
                progress(done);
            }
            source.finish()
        });
        for _ in 0..helpers {
            s.spawn(move || shared.help(prep));
        }
        let writer = s.spawn(move || -> Result<Writer<W>> {
            let run = || -> Result<Writer<W>> {
                let mut w = Writer::new(out, engine)?;
                w.set_format(format)?;
                w.crypto = writer_crypto;
                loop {
                    let mut q = shared.lock();
                    let slot = loop {
                        match q.slots.front() {
                            None if q.end.is_some() => return Ok(w),
                            None | Some(Slot::Claimed) => q = shared.wait(q),
                            Some(_) => {
                                q.front_seq += 1;
                                let slot = q.slots.pop_front().expect("front exists");
                                shared.cv.notify_all();
                                break slot;
                            }
                        }
                    };
                    drop(q);
                    let prepared = match slot {
                        Slot::Ready(r) => r?,
                        Slot::Raw { base, blocks } => prep(base, blocks, false)?,
                        Slot::Claimed => unreachable!("claimed slots are waited for"),
                    };
                    for p in prepared {
                        w.add_prepared(p)?;
                    }
                }
            };
            let r = run();
            if r.is_err() {
                shared.lock().abort = true;
                shared.cv.notify_all();
            }
            r
        });
        let source_sha = reader.join().expect("reader thread does not panic");
        let w = writer.join().expect("writer thread does not panic")?;
        if let Some(Err(e)) = shared.lock().end.take() {
            return Err(e);
        }
        Ok((w, source_sha))
    })
}
