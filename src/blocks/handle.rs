//! Per open file: the state of one reader, as mountpoint-s3's prefetcher keeps it per
//! file handle rather than per file.
//!
//! * Sequential detection: two reads in a row that each start where the previous one
//!   ended (within the size of the readahead requests the kernel may have in flight on
//!   other FUSE threads), or a read from the start. Two readers of one file, each
//!   sequential, are each seen as sequential: their reads do not break each other's run.
//! * The prefetch window: how far ahead blocks were already queued for this reader, so
//!   each read queues only the blocks that newly entered the window.
//! * The blocks this reader is in when they are larger than the whole cache: the last
//!   two such blocks are kept here (two, because a sequential reader's requests around a
//!   block boundary arrive on several threads in any order), so the next read of the
//!   same block does not read, check and decode it again.
//!
//! The state sits behind its own short lock, taken once at the start of a read and
//! again only to keep an oversized block or advance the window; reads of one handle on
//! several FUSE threads still load blocks in parallel.

use super::BlockKey;
use crate::reader::VerifiedBlock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Distance from the previous read's end within which a read still counts as
/// continuing it: the readahead the kernel may have in flight on other threads.
const SLACK: u64 = 2 << 20;

#[derive(Debug, Default)]
struct State {
    /// Where the previous read ended and how many reads in a row continued the one
    /// before.
    last: Option<(u64, u32)>,
    /// Blocks before this number were already queued for prefetch for this reader.
    queued_to: u64,
    /// The blocks larger than the cache this reader read last, most recent first.
    held: Held,
    /// The read-ahead hint window for a remote source, in bytes (0: not reading in
    /// order), and the stream offset hints reached.
    hint: u64,
    hinted_to: u64,
}

/// Blocks kept by a handle, most recent first.
pub(super) type Held = [Option<(BlockKey, Arc<VerifiedBlock>)>; 2];

/// The block of `key` among `held`.
pub(super) fn find(held: &Held, key: BlockKey) -> Option<Arc<VerifiedBlock>> {
    held.iter()
        .flatten()
        .find(|(k, _)| *k == key)
        .map(|(_, b)| b.clone())
}

/// The state of one open file of the mount (one `open`, until its `release`).
#[derive(Debug, Default)]
pub struct ReadHandle {
    state: Mutex<State>,
    progress: Progress,
}

/// How far a reader has read (the furthest end of its reads, in stream bytes; all of
/// the stream once its file is closed), shared with the runs queued for prefetch on
/// its behalf: a run it has already read past is not loaded again.
#[derive(Debug, Default, Clone)]
pub(super) struct Progress(Arc<AtomicU64>);

impl Progress {
    /// Whether the reader has read up to `to` (or is gone).
    pub(super) fn passed(&self, to: u64) -> bool {
        self.0.load(Ordering::Relaxed) >= to
    }
}

impl Drop for ReadHandle {
    fn drop(&mut self) {
        self.progress.0.store(u64::MAX, Ordering::Relaxed);
    }
}

/// What [`ReadHandle::begin`] found.
pub(super) struct Begun {
    pub sequential: bool,
    /// The read starts the file or continues the one before (what a sequential reader
    /// has passed, it has read).
    pub continues: bool,
    pub held: Held,
    pub queued_to: u64,
}

impl ReadHandle {
    /// A handle with no reads yet.
    pub fn new() -> ReadHandle {
        ReadHandle::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a read of `[start, end)`: whether the reader looks sequential, the block it
    /// holds and how far its prefetch window reaches.
    pub(super) fn begin(&self, start: u64, end: u64) -> Begun {
        let mut s = self.lock();
        let streak = match s.last {
            Some((p, n))
                if start <= p.saturating_add(SLACK) && start.saturating_add(SLACK) >= p =>
            {
                n.saturating_add(1)
            }
            _ => 0,
        };
        s.last = Some((end, streak));
        self.progress.0.fetch_max(end, Ordering::Relaxed);
        if start != 0 && streak < 2 {
            s.hint = 0;
            s.hinted_to = 0;
        }
        Begun {
            sequential: start == 0 || streak >= 2,
            continues: start == 0 || streak >= 1,
            held: s.held.clone(),
            queued_to: s.queued_to,
        }
    }

    /// This reader's progress, for the prefetch queue.
    pub(super) fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// The kept block of `key`, if any.
    pub(super) fn held(&self, key: BlockKey) -> Option<Arc<VerifiedBlock>> {
        find(&self.lock().held, key)
    }

    /// Keep `block` (larger than the cache) as the one this reader is in, dropping the
    /// older of the two kept before.
    pub(super) fn hold(&self, key: BlockKey, block: Arc<VerifiedBlock>) {
        let mut s = self.lock();
        if find(&s.held, key).is_some() {
            return;
        }
        s.held[1] = s.held[0].take();
        s.held[0] = Some((key, block));
    }

    /// For a sequential reader now at stream offset `from`: the stream range to hint to
    /// a remote source next. The window starts at `min` and doubles with every call
    /// (every sequential read) up to `max`, as mountpoint-s3's prefetcher grows its
    /// requests; ranges hinted before are not returned again. While more than half of
    /// the window ahead is hinted already, nothing new is returned: the window is then
    /// topped up in one range, which the source fetches as a few large parts rather
    /// than one small request per read.
    pub(super) fn next_hint(&self, from: u64, min: u64, max: u64) -> std::ops::Range<u64> {
        let mut s = self.lock();
        s.hint = match s.hint {
            0 => min,
            h => h.saturating_mul(2).min(max.max(min)),
        };
        let to = from.saturating_add(s.hint);
        let start = from.max(s.hinted_to);
        if s.hinted_to > from && s.hinted_to - from > s.hint / 2 {
            return start..start;
        }
        if start < to {
            s.hinted_to = to;
        }
        start..to.max(start)
    }

    /// The blocks of this reader's window before `to` are queued for prefetch.
    pub(super) fn queued(&self, to: u64) {
        self.lock().queued_to = to;
    }

    /// Whether the last read looked sequential, and how far (in blocks) the prefetch
    /// window of this reader was queued.
    pub fn window(&self) -> (bool, u64) {
        let s = self.lock();
        (s.last.is_some_and(|(_, n)| n >= 2), s.queued_to)
    }

    /// Decoded bytes this handle keeps (blocks larger than the cache).
    pub fn held_bytes(&self) -> u64 {
        self.lock()
            .held
            .iter()
            .flatten()
            .map(|(_, b)| b.len() as u64)
            .sum()
    }
}
