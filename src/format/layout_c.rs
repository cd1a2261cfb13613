//! Layout C: the reference's little-endian multitrack layout.
//!
//! ```text
//! header = "H4MK" | u8 version=1 | u8 flags=0 | u16 reserved | u64 timestamp   (16 bytes)
//! chunk  = tag[4] | u32 flags | u32 len | payload | u32 crc32(chunk header + payload)
//! file   = header chunk* u32 crc32(everything before it)
//! CORE   flags: bits 0-27 pts in ms, bits 28-29 block type (0 I, 1 P, 2 B)
//!        payload: "H4TB" | u16 track_id | u16 0 | blob
//! TSEK   payload: "H4TS" | u16 track | u16 0 | "H4SK" | u16 count | u16 0
//!                 | count × (u32 pts_ms, u32 file offset of that I-block's CORE payload)
//! ```

use super::Cursor;
use crate::error::{Error, Result, Tag};

/// Size of the layout C file header.
pub const HEADER_LEN: usize = 16;
/// Size of a layout C chunk header: tag, u32 flags, u32 length (little-endian).
pub const CHUNK_HEADER_LEN: usize = 12;
/// The u32 CRC-32 after each payload, over chunk header and payload.
pub const CHUNK_TRAILER_LEN: usize = 4;
/// "H4TB" | u16 track | u16 0 before each CORE blob.
pub const BLOCK_PREFIX_LEN: usize = 8;

/// Block type carried in bits 28-29 of a CORE chunk's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BlockType {
    I,
    P,
    B,
}

/// The 16-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Always 1 (others are refused).
    pub version: u8,
    /// Header flags as written (the reference writes 0).
    pub flags: u8,
    /// The writer's timestamp, as recorded (the demo sample has 0).
    pub timestamp: u64,
}

/// Parse the 16-byte header; wrong magic, a short file and versions other than 1 are
/// errors.
pub fn parse_header(b: &[u8]) -> Result<Header> {
    let mut c = Cursor::new(b);
    let magic = c.take(4);
    if magic != Some(&super::MAGIC[..]) {
        return Err(Error::BadMagic {
            found: b[..b.len().min(4)].to_vec(),
        });
    }
    let (Some(version), Some(flags), Some(_), Some(timestamp)) =
        (c.array::<1>(), c.array::<1>(), c.u16_le(), c.u64_le())
    else {
        return Err(Error::Truncated {
            what: "layout C header".into(),
            offset: 0,
            need: HEADER_LEN as u64,
            file_len: b.len() as u64,
        });
    };
    if version[0] != 1 {
        return Err(Error::UnsupportedVersion {
            layout: 'C',
            version: version[0] as u32,
            offset: 4,
        });
    }
    Ok(Header {
        version: version[0],
        flags: flags[0],
        timestamp,
    })
}

/// A layout C chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Four-byte chunk type.
    pub tag: Tag,
    /// For CORE: pts in ms (bits 0-27) and block type (bits 28-29); unused by h4fs for
    /// other chunks.
    pub flags: u32,
    /// Payload length (header and trailing CRC not included).
    pub len: u32,
}

impl ChunkHeader {
    /// Split 12 header bytes into their little-endian fields.
    pub fn parse(b: &[u8; CHUNK_HEADER_LEN]) -> ChunkHeader {
        ChunkHeader {
            tag: Tag(b[..4].try_into().expect("4 bytes")),
            flags: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            len: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
        }
    }

    /// pts in milliseconds (CORE only).
    pub fn pts_ms(&self) -> u32 {
        self.flags & 0x0fff_ffff
    }

    /// Block type (CORE only); type 3 is invalid.
    pub fn block_type(&self) -> Option<BlockType> {
        match (self.flags >> 28) & 3 {
            0 => Some(BlockType::I),
            1 => Some(BlockType::P),
            2 => Some(BlockType::B),
            _ => None,
        }
    }
}

/// Parse the prefix of a CORE payload; returns the track id.
pub fn parse_block_prefix(payload: &[u8], at: u64) -> Result<u16> {
    let mut c = Cursor::new(payload);
    if c.take(4) != Some(b"H4TB") {
        return Err(Error::Chunk {
            tag: Tag::CORE,
            offset: at,
            msg: "payload does not start with \"H4TB\"".into(),
        });
    }
    let track = c.u16_le().ok_or_else(|| Error::Chunk {
        tag: Tag::CORE,
        offset: at,
        msg: "payload too short for its track id".into(),
    })?;
    c.u16_le().ok_or_else(|| Error::Chunk {
        tag: Tag::CORE,
        offset: at,
        msg: "payload too short for its 8-byte prefix".into(),
    })?;
    Ok(track)
}

/// A parsed TSEK chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSeek {
    /// Track the table belongs to.
    pub track: u16,
    /// (pts_ms, file offset of the I-block's CORE payload)
    pub entries: Vec<(u32, u32)>,
}

/// Parse a TSEK payload; the count must match the payload length exactly and entries
/// must be sorted by pts. `at` is the chunk's file offset, for messages.
pub fn parse_tsek(payload: &[u8], at: u64) -> Result<TrackSeek> {
    let bad = |msg: &str| Error::Chunk {
        tag: Tag::TSEK,
        offset: at,
        msg: msg.to_string(),
    };
    let mut c = Cursor::new(payload);
    if c.take(4) != Some(b"H4TS") {
        return Err(bad("payload does not start with \"H4TS\""));
    }
    let track = c.u16_le().ok_or_else(|| bad("truncated track id"))?;
    c.u16_le().ok_or_else(|| bad("truncated"))?;
    if c.take(4) != Some(b"H4SK") {
        return Err(bad("missing \"H4SK\" seek table marker"));
    }
    let count = c.u16_le().ok_or_else(|| bad("truncated count"))? as usize;
    c.u16_le().ok_or_else(|| bad("truncated"))?;
    if c.remaining() != count * 8 {
        return Err(bad(&format!(
            "count {count} needs {} bytes of entries, payload has {}",
            count * 8,
            c.remaining()
        )));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let pts = c.u32_le().expect("length checked");
        let off = c.u32_le().expect("length checked");
        entries.push((pts, off));
    }
    if entries.windows(2).any(|w| w[1].0 < w[0].0) {
        return Err(bad("entries are not sorted by pts"));
    }
    Ok(TrackSeek { track, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_flags_split_pts_and_type() {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(b"CORE");
        b[4..8].copy_from_slice(&0x2000_0042u32.to_le_bytes());
        let h = ChunkHeader::parse(&b);
        assert_eq!(h.pts_ms(), 66);
        assert_eq!(h.block_type(), Some(BlockType::B));
    }

    #[test]
    fn tsek_rejects_short_entries() {
        let mut p = b"H4TS\x01\x00\x00\x00H4SK\x02\x00\x00\x00".to_vec();
        p.extend_from_slice(&[0; 8]);
        assert!(parse_tsek(&p, 0).is_err());
        p.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_tsek(&p, 0).unwrap().entries, vec![(0, 0), (1, 0)]);
    }
}
