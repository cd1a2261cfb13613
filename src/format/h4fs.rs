//! The h4fs extension of layout A: block index (`HIDX`) and footer (`HFTR`).
//!
//! An h4fs container is a valid layout-A file whose chunks are, in order:
//!
//! ```text
//! CORE × N | SEEK | META | SAFE | [HENC] | HIDX | HFTR | VERI
//! ```
//!
//! The reference parser skips `HIDX`, `HFTR` and `HENC` as unknown tags, and `VERI` is
//! still SHA-256 of every chunk before it. Because `HFTR` (108 bytes with its header) and
//! `VERI` (44 bytes) have fixed sizes, a reader finds the footer at `len - 152` without
//! visiting any block. All integers are big-endian, like the rest of layout A.
//!
//! ```text
//! HIDX payload = u32 version (1) | u32 entry_len (72) | u64 count | count × entry
//! entry        = u64 chunk_offset   file offset of the block's CORE chunk header
//!              | u32 stored_len     CORE payload length
//!              | u32 decoded_len    length after decryption and decompression
//!              | u64 stream_offset  offset of the decoded block in the stream
//!              | u64 pts_us
//!              | u32 track
//!              | u32 flags          bit 0 keyframe; other bits zero
//!              | [32] sha256        SHA-256 of the CORE payload (stored bytes)
//! HFTR payload = u32 version (1) | u32 flags (bit 0: encrypted)
//!              | u64 seek_offset | u64 meta_offset | u64 safe_offset
//!              | u64 index_offset | u64 henc_offset (0 = none)
//!              | u64 block_count | u64 stream_len
//!              | [32] root
//! ```
//!
//! `root` is SHA-256 over a domain label, the footer's own first 64 bytes, the SHA-256 of
//! the SEEK, META, SAFE and HENC payloads, and the index digest; the index digest hashes
//! the index header and the SHA-256 of each 1024-entry page, so opening can hash pages on
//! several cores. See `integrity::root_hash`.
//!
//! `docs/FORMAT.md` §3 specifies all of this byte by byte, with a worked example that
//! `tests/golden.rs` checks against a golden container, and gives the reasons for each
//! choice (fixed sizes for constant-time open, `stream_offset` in every entry so reads
//! binary-search without a prefix sum, pages so open hashes on all cores).

use super::{be32, be64};
use crate::error::{Error, Result, Tag};
use rayon::prelude::*;

/// Version in the HIDX header; others are refused.
pub const INDEX_VERSION: u32 = 1;
/// HIDX header: u32 version, u32 entry length, u64 count.
pub const INDEX_HEADER_LEN: usize = 16;
/// Size of one index entry; fixed, so entry `i` is at `16 + 72 * i`.
pub const ENTRY_LEN: usize = 72;
/// Entries per page of the index hash tree.
pub const PAGE_ENTRIES: usize = 1024;

/// Footer version of the v1 layout (blocks checked by their SHA-256 in the index).
pub const FOOTER_VERSION: u32 = 1;
/// Footer version of the v2 layout: an `HB3T` chunk (BLAKE3 tree over the stored stream
/// in hash groups, [`crate::format::outboard`]) lies between SAFE (or HENC) and HIDX, and
/// the CORE chunks are back to back. Other versions are refused.
pub const FOOTER_VERSION_V2: u32 = 2;
/// HFTR payload size; fixed, so the footer is always at `file_len - TAIL_LEN`.
pub const FOOTER_PAYLOAD_LEN: usize = 96;
/// Bytes of the footer covered by the root (everything but the root itself).
pub const FOOTER_PREFIX_LEN: usize = 64;
/// Footer chunk (header + payload) + VERI chunk (header + 32): the fixed tail.
pub const TAIL_LEN: u64 = (12 + FOOTER_PAYLOAD_LEN + 12 + 32) as u64;

/// Index entry flag bit 0: the block is a keyframe. Other bits must be zero.
pub const FLAG_KEYFRAME: u32 = 1;
/// Footer flag bit 0: blocks are encrypted and `henc_offset` names the HENC chunk.
pub const FOOTER_FLAG_ENCRYPTED: u32 = 1;

/// One block index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// File offset of the block's CORE chunk header (not of its payload).
    pub chunk_offset: u64,
    /// CORE payload length: the stored (compressed, maybe encrypted) bytes.
    pub stored_len: u32,
    /// Length after decryption and decompression.
    pub decoded_len: u32,
    /// Offset of the decoded block in the decoded stream; contiguous across entries.
    pub stream_offset: u64,
    /// Presentation time, microseconds; never decreases from entry to entry.
    pub pts_us: u64,
    /// Track number; h4fs writes 0.
    pub track: u32,
    /// Bit 0: keyframe ([`FLAG_KEYFRAME`]).
    pub flags: u32,
    /// SHA-256 of the CORE payload as stored.
    pub sha256: [u8; 32],
}

impl IndexEntry {
    /// Whether flag bit 0 is set.
    pub fn keyframe(&self) -> bool {
        self.flags & FLAG_KEYFRAME != 0
    }

    /// Parse entry from exactly [`ENTRY_LEN`] bytes.
    pub fn parse(b: &[u8]) -> IndexEntry {
        assert_eq!(b.len(), ENTRY_LEN, "caller slices whole entries");
        IndexEntry {
            chunk_offset: be64(b, 0),
            stored_len: be32(b, 8),
            decoded_len: be32(b, 12),
            stream_offset: be64(b, 16),
            pts_us: be64(b, 24),
            track: be32(b, 32),
            flags: be32(b, 36),
            sha256: b[40..72].try_into().expect("32 bytes"),
        }
    }

    /// Append the 72 big-endian bytes of this entry to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.chunk_offset.to_be_bytes());
        out.extend_from_slice(&self.stored_len.to_be_bytes());
        out.extend_from_slice(&self.decoded_len.to_be_bytes());
        out.extend_from_slice(&self.stream_offset.to_be_bytes());
        out.extend_from_slice(&self.pts_us.to_be_bytes());
        out.extend_from_slice(&self.track.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.sha256);
    }
}

/// Encode the 16-byte index header.
pub fn index_header(count: u64) -> [u8; INDEX_HEADER_LEN] {
    let mut h = [0u8; INDEX_HEADER_LEN];
    h[..4].copy_from_slice(&INDEX_VERSION.to_be_bytes());
    h[4..8].copy_from_slice(&(ENTRY_LEN as u32).to_be_bytes());
    h[8..].copy_from_slice(&count.to_be_bytes());
    h
}

/// Check an index payload's header against the footer's block count; returns the count.
pub fn check_index(payload: &[u8], at: u64, block_count: u64) -> Result<u64> {
    let bad = |msg: String| Error::Chunk {
        tag: Tag::HIDX,
        offset: at,
        msg,
    };
    if payload.len() < INDEX_HEADER_LEN {
        return Err(bad(format!(
            "payload of {} bytes is shorter than the 16-byte index header",
            payload.len()
        )));
    }
    let version = be32(payload, 0);
    if version != INDEX_VERSION {
        return Err(bad(format!("unsupported index version {version}")));
    }
    let entry_len = be32(payload, 4);
    if entry_len as usize != ENTRY_LEN {
        return Err(bad(format!(
            "entry length {entry_len}, expected {ENTRY_LEN}"
        )));
    }
    let count = be64(payload, 8);
    if count != block_count {
        return Err(bad(format!(
            "index holds {count} entries, footer says {block_count} blocks"
        )));
    }
    let need = count
        .checked_mul(ENTRY_LEN as u64)
        .and_then(|n| n.checked_add(INDEX_HEADER_LEN as u64));
    if need != Some(payload.len() as u64) {
        return Err(bad(format!(
            "{count} entries need {} bytes, payload has {}",
            need.map_or("more than 2^64".into(), |n| n.to_string()),
            payload.len()
        )));
    }
    Ok(count)
}

/// The parsed footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// [`FOOTER_VERSION`] (1) or [`FOOTER_VERSION_V2`] (2).
    pub version: u32,
    /// Bit 0: encrypted ([`FOOTER_FLAG_ENCRYPTED`]).
    pub flags: u32,
    /// File offset of the SEEK chunk header; also the end of the block region.
    pub seek_offset: u64,
    /// File offset of the META chunk header.
    pub meta_offset: u64,
    /// File offset of the SAFE chunk header.
    pub safe_offset: u64,
    /// File offset of the HIDX chunk header.
    pub index_offset: u64,
    /// File offset of the HENC chunk header, 0 when the container is not encrypted.
    pub henc_offset: u64,
    /// Number of blocks; equals the HIDX count.
    pub block_count: u64,
    /// Length of the decoded stream; equals the end of the last block.
    pub stream_len: u64,
    /// The structure root ([`crate::integrity::root_hash`]).
    pub root: [u8; 32],
}

impl Footer {
    /// Whether footer flag bit 0 is set.
    pub fn encrypted(&self) -> bool {
        self.flags & FOOTER_FLAG_ENCRYPTED != 0
    }

    /// Whether this is a v2 footer: the container has an `HB3T` outboard.
    pub fn is_v2(&self) -> bool {
        self.version == FOOTER_VERSION_V2
    }

    /// Parse a footer payload; `at` is the footer chunk's file offset, for messages.
    pub fn parse(payload: &[u8], at: u64) -> Result<Footer> {
        if payload.len() != FOOTER_PAYLOAD_LEN {
            return Err(Error::Chunk {
                tag: Tag::HFTR,
                offset: at,
                msg: format!(
                    "payload is {} bytes, expected {FOOTER_PAYLOAD_LEN}",
                    payload.len()
                ),
            });
        }
        let version = be32(payload, 0);
        if version != FOOTER_VERSION && version != FOOTER_VERSION_V2 {
            return Err(Error::UnsupportedVersion {
                layout: 'A',
                version,
                offset: at + 12,
            });
        }
        Ok(Footer {
            version,
            flags: be32(payload, 4),
            seek_offset: be64(payload, 8),
            meta_offset: be64(payload, 16),
            safe_offset: be64(payload, 24),
            index_offset: be64(payload, 32),
            henc_offset: be64(payload, 40),
            block_count: be64(payload, 48),
            stream_len: be64(payload, 56),
            root: payload[64..96].try_into().expect("32 bytes"),
        })
    }

    /// The first [`FOOTER_PREFIX_LEN`] bytes: everything the root covers.
    pub fn prefix(&self) -> [u8; FOOTER_PREFIX_LEN] {
        let mut b = [0u8; FOOTER_PREFIX_LEN];
        b[0..4].copy_from_slice(&self.version.to_be_bytes());
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        for (i, v) in [
            self.seek_offset,
            self.meta_offset,
            self.safe_offset,
            self.index_offset,
            self.henc_offset,
            self.block_count,
            self.stream_len,
        ]
        .iter()
        .enumerate()
        {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_be_bytes());
        }
        b
    }

    /// The 96 payload bytes: the prefix, then the root.
    pub fn encode(&self) -> [u8; FOOTER_PAYLOAD_LEN] {
        let mut b = [0u8; FOOTER_PAYLOAD_LEN];
        b[..FOOTER_PREFIX_LEN].copy_from_slice(&self.prefix());
        b[FOOTER_PREFIX_LEN..].copy_from_slice(&self.root);
        b
    }
}

/// Check every index entry: inside the block region, contiguous stream offsets,
/// non-decreasing pts, known flags. Parallel over pages.
pub fn validate_index(index: &[u8], count: u64, region_end: u64, stream_len: u64) -> Result<()> {
    let entries = &index[INDEX_HEADER_LEN..];
    let page = PAGE_ENTRIES * ENTRY_LEN;
    let get = |i: u64| {
        let at = i as usize * ENTRY_LEN;
        IndexEntry::parse(&entries[at..at + ENTRY_LEN])
    };
    entries
        .par_chunks(page)
        .enumerate()
        .try_for_each(|(p, chunk)| {
            let first = (p * PAGE_ENTRIES) as u64;
            let mut prev = first.checked_sub(1).map(get);
            for (k, b) in chunk.chunks_exact(ENTRY_LEN).enumerate() {
                let i = first + k as u64;
                let e = IndexEntry::parse(b);
                let bad = |msg: String| Error::Index { block: i, msg };
                let end = e
                    .chunk_offset
                    .checked_add(12 + e.stored_len as u64)
                    .filter(|&end| e.chunk_offset >= super::layout_a::HEADER_LEN as u64 && end <= region_end);
                if end.is_none() {
                    return Err(bad(format!(
                        "chunk at offset {} with {} stored bytes lies outside the block region [8, {region_end})",
                        e.chunk_offset, e.stored_len
                    )));
                }
                if e.flags & !FLAG_KEYFRAME != 0 {
                    return Err(bad(format!("unknown flag bits {:#x}", e.flags)));
                }
                let (want_off, min_pts) = match &prev {
                    Some(p) => (p.stream_offset + p.decoded_len as u64, p.pts_us),
                    None => (0, 0),
                };
                if e.stream_offset != want_off {
                    return Err(bad(format!(
                        "stream offset {} should be {want_off} (the previous block's end)",
                        e.stream_offset
                    )));
                }
                if e.pts_us < min_pts {
                    return Err(bad(format!(
                        "pts {} is before the previous block's {min_pts}",
                        e.pts_us
                    )));
                }
                if let Some(p) = &prev
                    && e.chunk_offset < p.chunk_offset + 12 + p.stored_len as u64
                {
                    return Err(bad(format!(
                        "chunk at offset {} overlaps the previous block",
                        e.chunk_offset
                    )));
                }
                prev = Some(e);
            }
            Ok(())
        })?;
    let total = match count {
        0 => 0,
        n => {
            let e = get(n - 1);
            e.stream_offset + e.decoded_len as u64
        }
    };
    if total != stream_len {
        return Err(Error::Index {
            block: count.saturating_sub(1),
            msg: format!("blocks decode to {total} bytes, the footer says {stream_len}"),
        });
    }
    Ok(())
}

/// v2: the CORE chunks must be back to back from the end of the 8-byte header to the
/// SEEK chunk, so block `i`'s stored bytes start at stream offset
/// `chunk_offset - 8 - 12·(i + 1) + 12` of the stored stream ([`stored_offset`]) and the
/// stored stream is `seek_offset - 8 - 12·count` bytes. Returns that length.
pub fn check_back_to_back(index: &[u8], count: u64, seek_offset: u64) -> Result<u64> {
    let entries = &index[INDEX_HEADER_LEN..];
    entries
        .par_chunks(PAGE_ENTRIES * ENTRY_LEN)
        .enumerate()
        .try_for_each(|(p, chunk)| {
            let first = (p * PAGE_ENTRIES) as u64;
            let mut want = None;
            for (k, b) in chunk.chunks_exact(ENTRY_LEN).enumerate() {
                let i = first + k as u64;
                let e = IndexEntry::parse(b);
                if i == 0 && e.chunk_offset != super::layout_a::HEADER_LEN as u64 {
                    return Err(Error::Index {
                        block: 0,
                        msg: format!(
                            "chunk at offset {}: in a v2 container block 0 starts right after the 8-byte header",
                            e.chunk_offset
                        ),
                    });
                }
                if let Some(w) = want
                    && e.chunk_offset != w
                {
                    return Err(Error::Index {
                        block: i,
                        msg: format!(
                            "chunk at offset {}: in a v2 container it must follow the previous block at once, at {w}",
                            e.chunk_offset
                        ),
                    });
                }
                want = Some(e.chunk_offset + 12 + e.stored_len as u64);
            }
            Ok(())
        })?;
    // Page boundaries: each page's first entry against the previous page's last.
    let get = |i: u64| {
        let at = i as usize * ENTRY_LEN;
        IndexEntry::parse(&entries[at..at + ENTRY_LEN])
    };
    let mut i = PAGE_ENTRIES as u64;
    while i < count {
        let (p, e) = (get(i - 1), get(i));
        if e.chunk_offset != p.chunk_offset + 12 + p.stored_len as u64 {
            return Err(Error::Index {
                block: i,
                msg: format!(
                    "chunk at offset {}: in a v2 container it must follow the previous block at once, at {}",
                    e.chunk_offset,
                    p.chunk_offset + 12 + p.stored_len as u64
                ),
            });
        }
        i += PAGE_ENTRIES as u64;
    }
    let end = match count {
        0 => super::layout_a::HEADER_LEN as u64,
        n => {
            let e = get(n - 1);
            e.chunk_offset + 12 + e.stored_len as u64
        }
    };
    if end != seek_offset {
        return Err(Error::Index {
            block: count.saturating_sub(1),
            msg: format!(
                "the blocks end at offset {end}, but SEEK is at {seek_offset}: in a v2 container nothing lies between them"
            ),
        });
    }
    Ok(seek_offset - super::layout_a::HEADER_LEN as u64 - 12 * count)
}

/// v2: where block `number`'s stored bytes start in the stored stream (the CORE payloads
/// concatenated), given its chunk offset; valid once [`check_back_to_back`] passed.
pub fn stored_offset(chunk_offset: u64, number: u64) -> u64 {
    chunk_offset - super::layout_a::HEADER_LEN as u64 - 12 * number
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip() {
        let e = IndexEntry {
            chunk_offset: 8,
            stored_len: 3,
            decoded_len: 4,
            stream_offset: 5,
            pts_us: 6,
            track: 7,
            flags: 1,
            sha256: [9; 32],
        };
        let mut v = Vec::new();
        e.encode(&mut v);
        assert_eq!(v.len(), ENTRY_LEN);
        assert_eq!(IndexEntry::parse(&v), e);
    }

    #[test]
    fn footer_round_trip() {
        let f = Footer {
            version: FOOTER_VERSION,
            flags: 1,
            seek_offset: 2,
            meta_offset: 3,
            safe_offset: 4,
            index_offset: 5,
            henc_offset: 0,
            block_count: 7,
            stream_len: 8,
            root: [1; 32],
        };
        assert_eq!(Footer::parse(&f.encode(), 0).unwrap(), f);
        assert!(Footer::parse(&f.encode()[..95], 0).is_err());
        let v2 = Footer {
            version: FOOTER_VERSION_V2,
            ..f
        };
        assert_eq!(Footer::parse(&v2.encode(), 0).unwrap(), v2);
        let mut v3 = v2.encode();
        v3[3] = 3;
        assert!(matches!(
            Footer::parse(&v3, 0),
            Err(Error::UnsupportedVersion { version: 3, .. })
        ));
    }

    #[test]
    fn index_header_checks_count_against_length() {
        let mut p = index_header(2).to_vec();
        p.resize(INDEX_HEADER_LEN + ENTRY_LEN, 0);
        assert!(check_index(&p, 0, 2).is_err());
        p.resize(INDEX_HEADER_LEN + 2 * ENTRY_LEN, 0);
        assert_eq!(check_index(&p, 0, 2).unwrap(), 2);
        let mut huge = index_header(u64::MAX).to_vec();
        huge.resize(64, 0);
        assert!(check_index(&huge, 0, u64::MAX).is_err());
    }
}
