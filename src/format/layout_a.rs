//! Layout A: the reference export's big-endian chunk layout.
//!
//! ```text
//! file   = header chunk*
//! header = "H4MK" | u16 version = 1 | u16 reserved = 0          (8 bytes)
//! chunk  = tag[4] | u32 payload_len | u32 crc32(payload) | payload
//! SEEK   = u32 count | count × (u64 pts_us | u64 stream_offset)
//! VERI   = SHA-256 of every chunk before it, as written (header not included)
//! ```

use super::{Cursor, MAGIC, be32};
use crate::error::{Error, Result, Tag};

/// Size of the file header: `"H4MK"`, u16 version 1, u16 reserved.
pub const HEADER_LEN: usize = 8;
/// Size of a chunk header: tag, u32 payload length, u32 CRC-32 of the payload.
pub const CHUNK_HEADER_LEN: usize = 12;
/// Size of one SEEK entry.
pub const SEEK_ENTRY_LEN: usize = 16;

/// The 8-byte file header of layout A.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&1u16.to_be_bytes());
    h
}

/// A parsed chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Four-byte chunk type.
    pub tag: Tag,
    /// Payload length in bytes (the 12 header bytes not included).
    pub len: u32,
    /// CRC-32 (IEEE, as zlib) of the payload only.
    pub crc: u32,
}

impl ChunkHeader {
    /// Split 12 header bytes into their fields; any values are accepted here, the caller
    /// checks them against the file.
    pub fn parse(b: &[u8; CHUNK_HEADER_LEN]) -> ChunkHeader {
        ChunkHeader {
            tag: Tag(b[..4].try_into().expect("4 bytes")),
            len: be32(b, 4),
            crc: be32(b, 8),
        }
    }

    /// The header for `payload`: its length and CRC-32. The caller ensures it fits a u32.
    pub fn encode(tag: Tag, payload: &[u8]) -> [u8; CHUNK_HEADER_LEN] {
        Self::encode_with_crc(tag, payload.len() as u32, crc32fast::hash(payload))
    }

    /// A header from a length and a CRC computed elsewhere (the packer hashes blocks in
    /// parallel).
    pub fn encode_with_crc(tag: Tag, len: u32, crc: u32) -> [u8; CHUNK_HEADER_LEN] {
        let mut h = [0u8; CHUNK_HEADER_LEN];
        h[..4].copy_from_slice(&tag.0);
        h[4..8].copy_from_slice(&len.to_be_bytes());
        h[8..12].copy_from_slice(&crc.to_be_bytes());
        h
    }
}

/// Check a chunk's CRC against its payload.
pub fn check_crc(h: &ChunkHeader, offset: u64, payload: &[u8]) -> Result<()> {
    let computed = crc32fast::hash(payload);
    if computed != h.crc {
        return Err(Error::CrcMismatch {
            tag: h.tag,
            offset,
            stored: h.crc,
            computed,
        });
    }
    Ok(())
}

/// One SEEK entry: a keyframe's pts and the byte offset of its block in the decoded stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct SeekEntry {
    /// Presentation time of the keyframe, microseconds.
    pub pts_us: u64,
    /// Offset of the keyframe block in the decoded stream (not a file offset, not a block
    /// number).
    pub offset: u64,
}

/// Parse a SEEK payload; `at` is the chunk's file offset, for messages. Entries must be
/// sorted by pts (the reference writes them so, and lookups depend on it).
pub fn parse_seek(payload: &[u8], at: u64) -> Result<Vec<SeekEntry>> {
    let bad = |msg: String| Error::Chunk {
        tag: Tag::SEEK,
        offset: at,
        msg,
    };
    let mut c = Cursor::new(payload);
    let count =
        c.u32_be()
            .ok_or_else(|| bad("payload shorter than its 4-byte count".into()))? as usize;
    let need = count as u64 * SEEK_ENTRY_LEN as u64;
    if need != c.remaining() as u64 {
        return Err(bad(format!(
            "count {count} needs {need} bytes of entries, payload has {}",
            c.remaining()
        )));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let pts_us = c.u64_be().expect("length checked");
        let offset = c.u64_be().expect("length checked");
        if let Some(prev) = out.last().map(|e: &SeekEntry| e.pts_us)
            && pts_us < prev
        {
            return Err(bad(format!(
                "entry {i} has pts {pts_us} after pts {prev}: SEEK is not sorted"
            )));
        }
        out.push(SeekEntry { pts_us, offset });
    }
    Ok(out)
}

/// Encode a SEEK payload.
pub fn encode_seek(entries: &[SeekEntry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + entries.len() * SEEK_ENTRY_LEN);
    v.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        v.extend_from_slice(&e.pts_us.to_be_bytes());
        v.extend_from_slice(&e.offset.to_be_bytes());
    }
    v
}

/// Index of the last entry with `pts_us <= target` (binary search).
pub fn seek_lookup(entries: &[SeekEntry], target: u64) -> Option<usize> {
    entries
        .partition_point(|e| e.pts_us <= target)
        .checked_sub(1)
}

/// Parse a JSON chunk payload (META, SAFE, TRAK). Must be UTF-8 JSON.
pub fn parse_json(tag: Tag, at: u64, payload: &[u8]) -> Result<serde_json::Value> {
    let text = std::str::from_utf8(payload).map_err(|e| Error::Json {
        tag,
        offset: at,
        msg: format!("not UTF-8: {e}"),
    })?;
    serde_json::from_str(text).map_err(|e| Error::Json {
        tag,
        offset: at,
        msg: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_round_trip_and_lookup() {
        let e = vec![
            SeekEntry {
                pts_us: 0,
                offset: 0,
            },
            SeekEntry {
                pts_us: 166_665,
                offset: 1280,
            },
        ];
        let p = encode_seek(&e);
        assert_eq!(parse_seek(&p, 0).unwrap(), e);
        assert_eq!(seek_lookup(&e, 0), Some(0));
        assert_eq!(seek_lookup(&e, 166_664), Some(0));
        assert_eq!(seek_lookup(&e, 166_665), Some(1));
        assert_eq!(seek_lookup(&e[1..], 5), None);
    }

    #[test]
    fn seek_rejects_bad_count_and_order() {
        let mut p = encode_seek(&[SeekEntry {
            pts_us: 5,
            offset: 0,
        }]);
        p[3] = 200;
        assert!(
            parse_seek(&p, 9)
                .unwrap_err()
                .to_string()
                .contains("count 200")
        );
        let p = encode_seek(&[
            SeekEntry {
                pts_us: 5,
                offset: 0,
            },
            SeekEntry {
                pts_us: 4,
                offset: 1,
            },
        ]);
        assert!(
            parse_seek(&p, 9)
                .unwrap_err()
                .to_string()
                .contains("not sorted")
        );
        assert!(parse_seek(&[0, 0], 9).is_err());
    }

    #[test]
    fn huge_count_does_not_allocate() {
        let p = [0xff, 0xff, 0xff, 0xff];
        assert!(parse_seek(&p, 0).is_err());
    }
}
