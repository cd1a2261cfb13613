//! The block table of a track and the lookups on it: by number, by stream offset, by
//! pts, by seek point. Per track, `stream_offset`s are contiguous and `pts_us` is
//! non-decreasing (checked at open), so each lookup is a binary search.

use crate::format::h4fs::{self as hf, IndexEntry};
use crate::format::layout_a as la;
use crate::format::layout_c::{self as lc, BlockType};
use serde_json::Value;
use std::sync::Arc;

/// How a block's stored bytes are checked before use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCheck {
    /// SHA-256 of the stored bytes (h4fs index).
    Sha256([u8; 32]),
    /// Layout A chunk CRC: CRC-32 of the payload.
    CrcPayload(u32),
    /// Layout C chunk CRC: CRC-32 of chunk header and payload.
    CrcChunkC(u32),
}

/// Everything known about one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    /// Number within its track (the name under `blocks/`).
    pub number: u64,
    /// File offset of the block's CORE chunk header.
    pub chunk_offset: u64,
    /// File offset of the stored bytes.
    pub data_offset: u64,
    pub stored_len: u64,
    pub decoded_len: u64,
    /// Offset of the decoded bytes within the track's stream.
    pub stream_offset: u64,
    pub pts_us: u64,
    pub keyframe: bool,
    pub track: u32,
    pub check: BlockCheck,
    /// Layout C block type.
    pub block_type: Option<BlockType>,
}

impl BlockEntry {
    pub fn sha256(&self) -> Option<[u8; 32]> {
        match self.check {
            BlockCheck::Sha256(h) => Some(h),
            _ => None,
        }
    }
}

/// The blocks of one track: the raw h4fs index, or a list built by scanning.
#[derive(Debug, Clone)]
pub enum BlockTable {
    /// The HIDX payload, entries parsed on demand.
    Index {
        payload: Arc<Vec<u8>>,
        count: u64,
    },
    List(Vec<BlockEntry>),
}

impl BlockTable {
    pub fn len(&self) -> u64 {
        match self {
            BlockTable::Index { count, .. } => *count,
            BlockTable::List(v) => v.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `n`; `None` past the end.
    pub fn get(&self, n: u64) -> Option<BlockEntry> {
        match self {
            BlockTable::Index { payload, count } => {
                if n >= *count {
                    return None;
                }
                let at = hf::INDEX_HEADER_LEN + n as usize * hf::ENTRY_LEN;
                let e = IndexEntry::parse(&payload[at..at + hf::ENTRY_LEN]);
                Some(entry_from_index(n, &e))
            }
            BlockTable::List(v) => v.get(n as usize).copied(),
        }
    }

    /// First block `n` for which `pred(entry)` is false, given `pred` is monotone.
    pub(super) fn partition_point(&self, pred: impl Fn(&BlockEntry) -> bool) -> u64 {
        let (mut lo, mut hi) = (0u64, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.get(mid).expect("mid < len")) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The block holding stream byte `offset` (skipping empty blocks); `None` at or past
    /// the end of the stream.
    pub fn find_stream_offset(&self, offset: u64) -> Option<u64> {
        let n = self.partition_point(|e| e.stream_offset + e.decoded_len <= offset);
        (n < self.len()).then_some(n)
    }

    /// The last block with `pts_us <= pts`.
    pub fn find_pts(&self, pts: u64) -> Option<u64> {
        self.partition_point(|e| e.pts_us <= pts).checked_sub(1)
    }

    /// Total decoded length.
    pub fn stream_len(&self) -> u64 {
        match self.len() {
            0 => 0,
            n => {
                let e = self.get(n - 1).expect("n-1 < len");
                e.stream_offset + e.decoded_len
            }
        }
    }
}

pub(super) fn entry_from_index(n: u64, e: &IndexEntry) -> BlockEntry {
    BlockEntry {
        number: n,
        chunk_offset: e.chunk_offset,
        data_offset: e.chunk_offset + la::CHUNK_HEADER_LEN as u64,
        stored_len: e.stored_len as u64,
        decoded_len: e.decoded_len as u64,
        stream_offset: e.stream_offset,
        pts_us: e.pts_us,
        keyframe: e.keyframe(),
        track: e.track,
        check: BlockCheck::Sha256(e.sha256),
        block_type: None,
    }
}

/// A seek point: a keyframe's pts and the offset the file records for it (the stream
/// offset in layout A, the CORE payload's file offset in layout C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SeekPoint {
    pub pts_us: u64,
    pub offset: u64,
}

/// One track: its blocks and seek table.
#[derive(Debug, Clone)]
pub struct Track {
    pub id: u32,
    pub name: String,
    /// The TRAK record of layout C, `Null` otherwise.
    pub info: Value,
    pub blocks: BlockTable,
    pub seek: Vec<SeekPoint>,
    pub(super) seek_is_file_offset: bool,
}

impl Track {
    /// The block a seek point refers to.
    pub fn resolve_seek(&self, p: &SeekPoint) -> Option<u64> {
        if self.seek_is_file_offset {
            let n = self
                .blocks
                .partition_point(|e| e.data_offset - (lc::BLOCK_PREFIX_LEN as u64) < p.offset);
            let e = self.blocks.get(n)?;
            return (e.data_offset - lc::BLOCK_PREFIX_LEN as u64 == p.offset).then_some(n);
        }
        // Blocks are in (pts, stream offset) order: find the first block at this pts and
        // offset by binary search, then prefer a keyframe among the empty blocks that
        // share both. (However many blocks share one pts.)
        let first = self
            .blocks
            .partition_point(|e| (e.pts_us, e.stream_offset) < (p.pts_us, p.offset));
        let mut fallback = None;
        let mut n = first;
        while let Some(e) = self.blocks.get(n) {
            if e.pts_us != p.pts_us || e.stream_offset != p.offset {
                break;
            }
            if e.keyframe {
                return Some(n);
            }
            fallback.get_or_insert(n);
            n += 1;
        }
        fallback
    }

    /// The seek point for `pts` and the keyframe block it names: the last SEEK entry at
    /// or before `pts` (the first of the entries sharing that time, so that every block
    /// at that time follows it), or the first entry when `pts` is before it (a time
    /// before the first keyframe starts at the first keyframe). `None` only when no
    /// entry names a block.
    pub fn keyframe_at_or_before(&self, pts: u64) -> Option<(SeekPoint, u64)> {
        let i = match self.seek.partition_point(|s| s.pts_us <= pts) {
            0 => 0,
            k => {
                let t = self.seek[k - 1].pts_us;
                self.seek.partition_point(|s| s.pts_us < t)
            }
        };
        let at = self.seek.get(i)?.pts_us;
        self.seek[i..]
            .iter()
            .take_while(|s| s.pts_us == at)
            .find_map(|p| Some((*p, self.resolve_seek(p)?)))
    }

    /// The block containing `pts`: the last block whose pts is at or before it.
    pub fn block_at(&self, pts: u64) -> Option<u64> {
        self.blocks.find_pts(pts)
    }

    /// The blocks to decode to present time `pts`, in file order: from the keyframe of
    /// [`Track::keyframe_at_or_before`] through the block containing `pts` (just the
    /// keyframe when `pts` is before it).
    pub fn decode_chain(&self, pts: u64) -> Option<Vec<u64>> {
        let (_, key) = self.keyframe_at_or_before(pts)?;
        let last = self.block_at(pts).filter(|&l| l > key).unwrap_or(key);
        Some((key..=last).collect())
    }

    /// The pts of the track's last block.
    pub fn last_pts(&self) -> Option<u64> {
        let n = self.blocks.len().checked_sub(1)?;
        Some(self.blocks.get(n)?.pts_us)
    }

    pub fn stream_len(&self) -> u64 {
        self.blocks.stream_len()
    }

    /// The pieces of blocks that make up stream bytes `[offset, offset + len)`, in
    /// order, clipped to the end of the stream. Empty blocks are skipped.
    pub fn segments(&self, offset: u64, len: u64) -> Segments<'_> {
        let end = offset.saturating_add(len).min(self.stream_len());
        Segments {
            blocks: &self.blocks,
            next: self.blocks.find_stream_offset(offset).unwrap_or(u64::MAX),
            pos: offset,
            end,
        }
    }
}

/// One piece of a stream read: bytes `[start, start + len)` of block `block`, whose
/// entry comes along so that a read parses each index entry once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub block: u64,
    pub entry: BlockEntry,
    pub start: u64,
    pub len: u64,
}

/// Iterator returned by [`Track::segments`].
pub struct Segments<'a> {
    blocks: &'a BlockTable,
    next: u64,
    pos: u64,
    end: u64,
}

impl Iterator for Segments<'_> {
    type Item = Segment;
    fn next(&mut self) -> Option<Segment> {
        while self.pos < self.end {
            let e = self.blocks.get(self.next)?;
            self.next += 1;
            let block_end = e.stream_offset + e.decoded_len;
            if block_end <= self.pos {
                continue;
            }
            let start = self.pos - e.stream_offset;
            let len = block_end.min(self.end) - self.pos;
            self.pos += len;
            return Some(Segment {
                block: e.number,
                entry: e,
                start,
                len,
            });
        }
        None
    }
}
