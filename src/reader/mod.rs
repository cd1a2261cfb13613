//! The archive view: open a container of any layout, look blocks up, read them verified.
//!
//! Opening is lazy for h4fs containers: header, footer, SEEK/META/SAFE and the block
//! index are read and the structure root is checked; no block is visited. Reference
//! layout-A files have no index, so opening scans their chunk headers once (and, for the
//! geometric-reference engine, each block's runs to learn its decoded length). Layout C
//! files are read whole once, checking every chunk CRC and the file CRC.
//!
//! Invariants after a successful open, relied on by `cache`, `fs` and the CLI:
//! * every block's stored bytes lie inside the file as it was at open;
//! * per track, `stream_offset`s are contiguous (`next = this + decoded_len`) and
//!   `pts_us` is non-decreasing, so both can be binary searched.
//!
//! Modules: one per layout's open (`h4fs`, `layout_a`, `layout_c`), bounded reads from
//! the source (`io`), the block table and its lookups ([`table`](BlockTable)), the one
//! block read path that checks and decodes (`read`, the only builder of a
//! [`VerifiedBlock`]), the whole-file VERI (`veri`) and keys (`keys`).

mod h4fs;
mod io;
mod keys;
mod layout_a;
mod layout_c;
mod read;
mod table;
#[cfg(test)]
pub(crate) mod tests;
mod veri;

pub(crate) use io::{read_vec, read_vec_reusing};
pub use read::{
    VerifiedBlock, VerifiedGroups, block_context, check_block_bytes, check_core_header,
};
pub use table::{BlockCheck, BlockEntry, BlockTable, SeekPoint, Segment, Segments, Track};

use crate::crypto::Decryptor;
use crate::engine::EngineChoice;
use crate::error::{Error, Result, Tag};
use crate::format::h4fs::Footer;
use crate::format::layout_a as la;
use crate::format::{self, HeaderKind};
use crate::integrity::tree::CheckedTree;
use crate::source::{FileSource, ReadAt};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// Which writer produced the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Layout {
    /// Layout A as the reference's export writes it (no index).
    #[serde(rename = "reference-a")]
    ReferenceA,
    /// Layout A with the h4fs index and footer.
    #[serde(rename = "h4fs")]
    H4fs,
    /// The reference's little-endian multitrack layout.
    #[serde(rename = "multitrack-c")]
    MultitrackC,
}

impl Layout {
    pub fn describe(&self) -> &'static str {
        match self {
            Layout::ReferenceA => "layout A (reference export, no index)",
            Layout::H4fs => {
                "layout A + h4fs index (constant-time open, per-block SHA-256; v2: BLAKE3 hash tree)"
            }
            Layout::MultitrackC => "layout C (reference multitrack, little-endian)",
        }
    }
}

/// What `open` checks before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenCheck {
    /// Chunk CRCs of everything read at open, and the h4fs structure root.
    #[default]
    Structure,
    /// Bounds and ordering only (still never reads outside the file).
    None,
}

/// One chunk as found in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ChunkInfo {
    #[serde(serialize_with = "ser_tag")]
    pub tag: Tag,
    /// File offset of the chunk header.
    pub offset: u64,
    pub payload_len: u64,
    /// Total bytes the chunk occupies (header, payload and, in layout C, its CRC).
    pub total_len: u64,
}

fn ser_tag<S: serde::Serializer>(t: &Tag, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_string())
}

/// A JSON chunk (META, SAFE, TRAK): raw payload and parsed value.
#[derive(Debug, Clone)]
pub struct JsonChunk {
    pub offset: u64,
    pub raw: Vec<u8>,
    pub value: Value,
}

/// Encryption as recorded in the container.
#[derive(Debug, Clone, PartialEq)]
pub struct EncryptionInfo {
    /// e.g. "living-cipher-v3" or "h4fs-aes-256-gcm-v1".
    pub cipher: String,
    /// The META `encryption` record (reference) or HENC payload (h4fs).
    pub record: Value,
}

/// The reference VERI chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Veri {
    /// File offset of the VERI chunk header; the hash covers `[8, offset)`.
    pub offset: u64,
    pub expected: [u8; 32],
}

/// An opened container.
pub struct Archive {
    src: Box<dyn ReadAt>,
    pub layout: Layout,
    pub file_len: u64,
    pub meta: Option<JsonChunk>,
    pub safe: Option<JsonChunk>,
    /// Layout C's TRAK record.
    pub trak: Option<JsonChunk>,
    /// Layout A SEEK chunk as recorded (also the single track's seek table).
    pub seek_raw: Option<(u64, Vec<u8>)>,
    pub veri: Option<Veri>,
    pub footer: Option<(u64, Footer)>,
    pub engine: EngineChoice,
    pub encryption: Option<EncryptionInfo>,
    /// Chunks other than CORE (CORE chunks are described by the block tables).
    pub chunks: Vec<ChunkInfo>,
    pub tracks: Vec<Track>,
    /// Layout C header timestamp.
    pub timestamp: Option<u64>,
    /// False when decoded sizes could not be learned (unknown engine, encrypted
    /// reference container without its key): sizes then show stored lengths.
    pub sizes_exact: bool,
    /// Whether the structure root was checked at open (h4fs only).
    pub root_checked: bool,
    /// Keys attached with [`Archive::attach_key`] or [`Archive::attach_shared_secret`].
    decryptor: Option<Decryptor>,
    /// v2: the BLAKE3 tree of the stored stream, every node checked against its root at
    /// open; blocks are verified by their hash groups against it.
    tree: Option<Arc<CheckedTree>>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("source", &self.src.name())
            .field("layout", &self.layout)
            .field("tracks", &self.tracks.len())
            .finish_non_exhaustive()
    }
}

impl Archive {
    /// Open a container file.
    pub fn open(path: &Path) -> Result<Archive> {
        Self::open_with(path, OpenCheck::Structure)
    }

    pub fn open_with(path: &Path, check: OpenCheck) -> Result<Archive> {
        Self::from_source(Box::new(FileSource::open(path)?), check)
    }

    /// Open from any positioned-read source (files, bytes in memory, fuzz input).
    pub fn from_source(src: Box<dyn ReadAt>, check: OpenCheck) -> Result<Archive> {
        let file_len = src.len();
        let head_len = file_len.min(16) as usize;
        let mut head = vec![0u8; head_len];
        src.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io(format!("reading the header of {}", src.name()), e))?;
        match format::classify(&head, file_len)? {
            HeaderKind::A => match Self::try_h4fs(src, check)? {
                Ok(a) => Ok(a),
                Err(src) => Self::scan_reference(src, check),
            },
            HeaderKind::C => Self::scan_layout_c(src),
        }
    }

    fn blank(src: Box<dyn ReadAt>, layout: Layout) -> Archive {
        Archive {
            file_len: src.len(),
            src,
            layout,
            meta: None,
            safe: None,
            trak: None,
            seek_raw: None,
            veri: None,
            footer: None,
            engine: EngineChoice::Known(crate::engine::Engine::Identity),
            encryption: None,
            chunks: Vec::new(),
            tracks: Vec::new(),
            timestamp: None,
            sizes_exact: true,
            root_checked: false,
            decryptor: None,
            tree: None,
        }
    }

    /// Engine and encryption from META (and HENC for h4fs).
    fn finish_meta(&mut self, henc: Option<Vec<u8>>) -> Result<()> {
        let meta = self.meta.as_ref().map(|m| &m.value);
        if let Some(m) = meta {
            if !m.is_object() {
                return Err(Error::Json {
                    tag: Tag::META,
                    offset: self.meta.as_ref().map_or(0, |m| m.offset),
                    msg: "META is not a JSON object".into(),
                });
            }
            self.engine = EngineChoice::from_meta(m);
        }
        if let Some(henc) = henc {
            let record = la::parse_json(Tag::HENC, 0, &henc).unwrap_or(Value::Null);
            let cipher = record
                .get("cipher")
                .and_then(Value::as_str)
                .unwrap_or("h4fs-aes-256-gcm")
                .to_string();
            self.encryption = Some(EncryptionInfo { cipher, record });
        } else if let Some(enc) = meta.and_then(|m| m.get("encryption")) {
            let cipher = enc
                .get("cipher")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string();
            self.encryption = Some(EncryptionInfo {
                cipher,
                record: enc.clone(),
            });
        }
        Ok(())
    }

    /// v2 containers: the checked BLAKE3 tree of the stored stream (its root is `b3sum`
    /// of the stored bytes; of the original file for a plain identity container).
    pub fn tree(&self) -> Option<&CheckedTree> {
        self.tree.as_deref()
    }

    /// v2 containers: the 56-byte HB3T header as recorded (what the structure root
    /// covers of the outboard), rebuilt from the checked tree.
    pub fn outboard_header(&self) -> Option<[u8; crate::format::outboard::HEADER_LEN]> {
        let t = self.tree.as_deref()?;
        let s = t.shape();
        Some(
            crate::format::outboard::OutboardHeader {
                group_log: s.group_log(),
                stream_len: s.stream_len(),
                node_count: s.node_count(),
                root: *t.root().as_bytes(),
            }
            .encode(),
        )
    }

    /// The h4fs layout version from the footer (1 or 2); `None` for reference files.
    pub fn format_version(&self) -> Option<u32> {
        self.footer.map(|(_, f)| f.version)
    }

    /// The source's name (path) for messages.
    pub fn name(&self) -> String {
        self.src.name()
    }

    pub fn source(&self) -> &dyn ReadAt {
        &*self.src
    }

    /// Where the media's own clock starts, in microseconds (META `start_time_us`, written
    /// by `h4fs pack --index` from the CSV's `# start_time_us=` line; 0 when absent).
    /// Block pts are relative to it: pts 0 is the start of the media as players count it.
    pub fn start_time_us(&self) -> i64 {
        self.meta_value("start_time_us")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    fn meta_value(&self, key: &str) -> Option<&Value> {
        self.meta.as_ref()?.value.get(key)
    }

    /// The end of track `track`'s media in microseconds, as far as the container tells:
    /// the later of its last block's pts and (single-track containers) the first block's
    /// pts plus META `duration_us`, or else the last pts plus one frame of META
    /// `fps_hint`.
    pub fn end_us(&self, track: usize) -> u64 {
        let Some(t) = self.tracks.get(track) else {
            return 0;
        };
        let last = t.last_pts().unwrap_or(0);
        if self.tracks.len() != 1 {
            return last;
        }
        let first = t.blocks.get(0).map_or(0, |e| e.pts_us);
        if let Some(d) = self.meta_value("duration_us").and_then(Value::as_u64) {
            return last.max(first.saturating_add(d));
        }
        match self.meta_value("fps_hint").and_then(Value::as_f64) {
            Some(fps) if fps.is_finite() && fps > 0.0 => last.saturating_add((1e6 / fps) as u64),
            _ => last,
        }
    }

    /// Whether `pts` lies past the end of track `track`'s media: after its last block
    /// and at or after [`Archive::end_us`].
    pub fn is_past_end(&self, track: usize, pts: u64) -> bool {
        let Some(t) = self.tracks.get(track) else {
            return false;
        };
        pts > t.last_pts().unwrap_or(0) && pts >= self.end_us(track)
    }

    /// Total number of blocks over all tracks.
    pub fn block_count(&self) -> u64 {
        self.tracks.iter().map(|t| t.blocks.len()).sum()
    }

    /// Entry `n` of `track`, or an error naming what is missing.
    pub fn entry(&self, track: usize, n: u64) -> Result<BlockEntry> {
        let t = self
            .tracks
            .get(track)
            .ok_or_else(|| Error::NotFound(format!("no track {track}")))?;
        t.blocks.get(n).ok_or_else(|| {
            Error::NotFound(format!(
                "no block {n}: the track has {} blocks (0..{})",
                t.blocks.len(),
                t.blocks.len().saturating_sub(1)
            ))
        })
    }
}
