//! Inode numbers: a pure function of where a node sits in the tree.
//!
//! Nothing is allocated per node, so a container of a million blocks costs no inode
//! table, and the same source mounted again gives every path the same inode number
//! (containers of a directory mount are numbered in sorted name order).
//!
//! ```text
//! bit 63 ........ 48 47 ...... 36 35 ....................... 0
//!     container slot   track slot   local
//! ```
//!
//! * container slot: in a one-container mount 0 is that container; in a directory
//!   mount 0 is the mount root and container `i` (in name order) is `i + 1`.
//! * track slot: 0 is the container's own directory; `t + 1` is the directory of track
//!   `t` of a multitrack (layout C) container.
//! * local: small constants for the directory itself and its generated files, then
//!   `BLOCK_BASE + n` for `blocks/n`, `LINK_BASE + n` for a `by-pts/` symlink whose
//!   target is block `n`, and `NAME_BASE + n` for the `by-name/` symlink of block `n`.
//!
//! The root is always inode 1 (FUSE requires it): container slot 0, track slot 0,
//! local [`Local::Dir`] = 1.

/// Bits for the local part.
const LOCAL_BITS: u32 = 36;
/// Bits for the track slot.
const TRACK_BITS: u32 = 12;
/// First local number of block files.
pub const BLOCK_BASE: u64 = 1 << 34;
/// First local number of `by-pts/` symlinks.
pub const LINK_BASE: u64 = 1 << 35;
/// Blocks per track that inode numbers can address.
pub const MAX_BLOCKS: u64 = LINK_BASE - BLOCK_BASE;
/// First local number of `by-name/` symlinks.
pub const NAME_BASE: u64 = LINK_BASE + MAX_BLOCKS;
/// Track slots per container (slot 0 is the container itself).
pub const MAX_TRACKS: usize = (1 << TRACK_BITS) - 1;
/// Container slots per mount.
pub const MAX_CONTAINERS: usize = (1 << 16) - 1;

/// The fixed nodes of a directory, by local number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Local {
    Dir = 1,
    Meta = 2,
    Safe = 3,
    SeekCsv = 4,
    IndexCsv = 5,
    Veri = 6,
    Manifest = 7,
    Stream = 8,
    Blocks = 9,
    ByPts = 10,
    /// Was the mount root's `stats.json` (the counters are now an extended attribute);
    /// kept so that the numbers after it do not move.
    Unused11 = 11,
    Tracks = 12,
    /// `by-name/`, the recorded file names of a directory pack.
    ByName = 13,
    /// `stream.EXT`, a symlink to `stream` named with the source's extension.
    StreamLink = 14,
}

impl Local {
    const ALL: [Local; 14] = [
        Local::Dir,
        Local::Meta,
        Local::Safe,
        Local::SeekCsv,
        Local::IndexCsv,
        Local::Veri,
        Local::Manifest,
        Local::Stream,
        Local::Blocks,
        Local::ByPts,
        Local::Unused11,
        Local::Tracks,
        Local::ByName,
        Local::StreamLink,
    ];

    fn from_u64(v: u64) -> Option<Local> {
        Local::ALL.into_iter().find(|l| *l as u64 == v)
    }
}

/// A node's place, decoded from an inode number (not yet checked to exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Place {
    pub container_slot: u16,
    pub track_slot: u16,
    pub what: What,
}

/// What a place holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum What {
    Fixed(Local),
    Block(u64),
    Link(u64),
    NameLink(u64),
}

impl Place {
    /// The inode number.
    pub fn ino(&self) -> u64 {
        let local = match self.what {
            What::Fixed(l) => l as u64,
            What::Block(n) => BLOCK_BASE + n,
            What::Link(n) => LINK_BASE + n,
            What::NameLink(n) => NAME_BASE + n,
        };
        ((self.container_slot as u64) << (LOCAL_BITS + TRACK_BITS))
            | ((self.track_slot as u64) << LOCAL_BITS)
            | local
    }

    /// Decode an inode number; `None` for numbers no node can have.
    pub fn from_ino(ino: u64) -> Option<Place> {
        let local = ino & ((1 << LOCAL_BITS) - 1);
        let track_slot = ((ino >> LOCAL_BITS) & ((1 << TRACK_BITS) - 1)) as u16;
        let container_slot = (ino >> (LOCAL_BITS + TRACK_BITS)) as u16;
        let what = if local >= NAME_BASE {
            What::NameLink(local - NAME_BASE)
        } else if local >= LINK_BASE {
            What::Link(local - LINK_BASE)
        } else if local >= BLOCK_BASE {
            What::Block(local - BLOCK_BASE)
        } else {
            What::Fixed(Local::from_u64(local)?)
        };
        Some(Place {
            container_slot,
            track_slot,
            what,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn root_is_one() {
        let root = Place {
            container_slot: 0,
            track_slot: 0,
            what: What::Fixed(Local::Dir),
        };
        assert_eq!(root.ino(), 1);
        assert_eq!(Place::from_ino(1), Some(root));
        assert_eq!(Place::from_ino(0), None);
        assert_eq!(Place::from_ino(15), None);
    }

    proptest! {
        #[test]
        fn round_trip(c in 0u16.., t in 0u16..4096, kind in 0u8..4, n in 0u64..MAX_BLOCKS, l in 0usize..14) {
            let what = match kind {
                0 => What::Fixed(Local::ALL[l]),
                1 => What::Block(n),
                2 => What::Link(n),
                _ => What::NameLink(n),
            };
            let p = Place { container_slot: c, track_slot: t, what };
            prop_assert_eq!(Place::from_ino(p.ino()), Some(p));
        }
    }
}
