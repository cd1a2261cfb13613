//! The block layer: verified byte ranges of the containers a mount serves.
//!
//! Between the reader (which checks one block and alone builds a [`VerifiedBlock`](crate::reader::VerifiedBlock)) and
//! its users (the filesystem core, and through it the FUSE adapter), this layer answers
//! "verified bytes `offset..offset + len` of this container's track", with:
//!
//! * [`state`]: per container, what can be served, decided once (engine known, key
//!   attached, for reference files the whole-file VERI, checked on first use), and the
//!   verification results seen while serving (block failures, blocks verified);
//! * [`cache`]: the byte-bounded LRU of verified, decoded blocks (for a plain v2
//!   container, of verified 16 KiB hash groups of its stream: see [`service`]);
//! * [`flight`]: single-flight loading (two readers missing one block read it once);
//! * [`handle`]: the per-open-file state of a reader: its sequential-read detection and
//!   prefetch window, and the one block too large for the cache it is reading now;
//! * [`service`]: [`Blocks`], which puts these together: [`Blocks::read`] and
//!   [`Blocks::read_block`], the paired hashing of two blocks on one core, and the
//!   prefetch threads.
//!
//! Memory: the cache's bound (`--cache-size`, blocks plus a fixed overhead each), plus,
//! for a block whose decoded size exceeds that bound, one such block per open file
//! handle reading it (kept in the handle, dropped when the handle moves on or is
//! released), plus the blocks being loaded (at most one or two per reading thread).
//! So a block is read, checked and decoded about once per handle that reads it,
//! whatever the cache size.
//!
//! Ids are typed ([`ContainerId`], [`TrackId`], [`BlockIndex`]): a container is its
//! position in the mount, a track its position in the container.

pub mod cache;
pub mod flight;
pub mod handle;
pub mod service;
pub mod state;

pub use cache::{BlockCache, CacheStats};
pub use handle::ReadHandle;
pub use service::{Blocks, BlocksConfig, Data};
pub use state::{Failure, Served, VeriCheck};

use crate::error::Error;

#[cfg(test)]
mod tests;

/// A container: its position among the containers of a [`Blocks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub u32);

/// A track: its position in its container (not the track id recorded in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u32);

/// A block: its number within its track (for a track served by hash groups, the number
/// of a group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockIndex(pub u64);

impl ContainerId {
    /// Position as an index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl TrackId {
    /// Position as an index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Identifies a block across every container of a [`Blocks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub container: ContainerId,
    pub track: TrackId,
    pub block: BlockIndex,
}

impl BlockKey {
    /// The key of block `block` of track `track` of container `container`.
    pub fn new(container: u32, track: u32, block: u64) -> BlockKey {
        BlockKey {
            container: ContainerId(container),
            track: TrackId(track),
            block: BlockIndex(block),
        }
    }

    /// The block after this one in the same track.
    pub fn next(self) -> BlockKey {
        BlockKey {
            block: BlockIndex(self.block.0 + 1),
            ..self
        }
    }
}

/// Why verified bytes could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The container's whole-file VERI did not match, so no data of it is served.
    #[error("{path}: whole-file VERI mismatch ({detail}); data reads are refused")]
    VeriFailed { path: String, detail: String },
    /// A library error: the container cannot be decoded here (unknown engine, no key),
    /// or a block failed its check, or reading failed.
    #[error(transparent)]
    Archive(#[from] Error),
}
