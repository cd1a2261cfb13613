//! Bytes <-> typed structs for the three H4MK layouts. No I/O, no policy.
//!
//! * [`layout_a`]: the reference's big-endian layout (`H4MK` u16 version 1), chunks
//!   `tag | u32 len | u32 crc(payload) | payload`.
//! * [`h4fs`]: what h4fs adds to layout A: the block index (`HIDX`) and a fixed-size
//!   footer (`HFTR`) just before the final `VERI` chunk, so a reader finds everything
//!   from the end of the file in constant time.
//! * [`layout_c`]: the reference's little-endian multitrack layout (`TRAK`/`TSEK`).
//! * [`outboard`]: the BLAKE3 outboard chunk (`HB3T`) of the v2 layout.
//!
//! Every parser takes a slice and checks each length against the bytes that exist
//! before using it; none allocates from an unchecked length.

pub mod h4fs;
pub mod layout_a;
pub mod layout_c;
pub mod outboard;

/// The four magic bytes that start every H4MK file.
pub const MAGIC: [u8; 4] = *b"H4MK";

/// Which on-disk layout a file uses, decided from its first 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// `H4MK 00 01 00 00`: big-endian layout A (reference export and h4fs).
    A,
    /// `H4MK 01 ..`: little-endian multitrack layout C.
    C,
}

/// Classify a file by its header. `head` is the file's first bytes (at least 8 unless the
/// file is shorter).
pub fn classify(head: &[u8], file_len: u64) -> crate::Result<HeaderKind> {
    use crate::Error;
    if head.len() < 4 || head[..4] != MAGIC {
        if !head.is_empty() && MAGIC.starts_with(head) {
            return Err(Error::Truncated {
                what: "H4MK header".into(),
                offset: 0,
                need: 8,
                file_len,
            });
        }
        if file_len == 0 {
            return Err(Error::NotContainer(
                "empty file: not an H4MK container (0 bytes)".into(),
            ));
        }
        return Err(Error::BadMagic {
            found: head[..head.len().min(4)].to_vec(),
        });
    }
    if head.len() < 8 {
        return Err(Error::Truncated {
            what: "H4MK header".into(),
            offset: 0,
            need: 8,
            file_len,
        });
    }
    match (head[4], head[5]) {
        (0, 1) => Ok(HeaderKind::A),
        (1, _) => Ok(HeaderKind::C),
        (0, v) => Err(Error::UnsupportedVersion {
            layout: 'A',
            version: v as u32,
            offset: 4,
        }),
        (v, _) => Err(Error::UnsupportedVersion {
            layout: 'C',
            version: v as u32,
            offset: 4,
        }),
    }
}

/// A bounds-checked big/little-endian cursor over a byte slice.
#[derive(Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }
    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    /// Take `n` bytes, or `None` when fewer remain.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.remaining() < n {
            return None;
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Some(s)
    }
    /// Take exactly `N` bytes as an array, or `None` when fewer remain.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|s| s.try_into().expect("length checked"))
    }
    /// A big-endian u16 (layout A and the h4fs extension).
    pub fn u16_be(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }
    /// A big-endian u32.
    pub fn u32_be(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    /// A big-endian u64.
    pub fn u64_be(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
    /// A little-endian u16 (layout C).
    pub fn u16_le(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }
    /// A little-endian u32.
    pub fn u32_le(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    /// A little-endian u64.
    pub fn u64_le(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Read a big-endian u32 at `at` of a slice known to be long enough.
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("caller checked length"))
}

/// Read a big-endian u64 at `at` of a slice known to be long enough.
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("caller checked length"))
}
