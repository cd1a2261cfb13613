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

use crate::crypto::{self, BlockContext, Decryptor, MasterKey, SharedSecret};
use crate::engine::EngineChoice;
use crate::error::{Error, Result, Tag};
use crate::format::h4fs::{self as hf, Footer, IndexEntry};
use crate::format::layout_a::{self as la, ChunkHeader};
use crate::format::layout_c::{self as lc, BlockType};
use crate::format::{self, HeaderKind};
use crate::integrity::{self, VerifiedBlock};
use crate::source::{FileSource, ReadAt};
use rayon::prelude::*;
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
            Layout::H4fs => "layout A + h4fs index (constant-time open, per-block SHA-256)",
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
    fn partition_point(&self, pred: impl Fn(&BlockEntry) -> bool) -> u64 {
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

fn entry_from_index(n: u64, e: &IndexEntry) -> BlockEntry {
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
    seek_is_file_offset: bool,
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

/// One piece of a stream read: bytes `[start, start + len)` of block `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub block: u64,
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
                start,
                len,
            });
        }
        None
    }
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

pub(crate) fn read_vec(src: &dyn ReadAt, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    let file_len = src.len();
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(Error::Truncated {
            what: what.to_string(),
            offset,
            need: len,
            file_len,
        });
    }
    let mut v = vec![0u8; len as usize];
    read_into(src, &mut v, offset, what)?;
    Ok(v)
}

/// Fill `buf` from `offset` (already bounds-checked against the length at open).
fn read_into(src: &dyn ReadAt, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
    src.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Truncated {
                what: format!("{what} (file shrank since open)"),
                offset,
                need: buf.len() as u64,
                file_len: src.len(),
            }
        } else {
            Error::io(
                format!("reading {what} at offset {offset} of {}", src.name()),
                e,
            )
        }
    })
}

/// A zeroed buffer for a large read, backed by transparent huge pages where the kernel
/// offers them (`madvise` mode): filling a 72 MB index then takes ~36 page faults
/// instead of ~18,000, a third of the time to open a 1,000,000-block container.
fn huge_page_buffer(len: usize) -> Vec<u8> {
    // calloc maps fresh zero pages for a buffer this large and does not touch them, so
    // the advice applies before the first fault.
    let v = vec![0u8; len];
    const HUGE: usize = 2 << 20;
    #[cfg(target_os = "linux")]
    if len >= 2 * HUGE {
        let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (v.as_ptr() as usize + len) & !(HUGE - 1);
        if end > start {
            // SAFETY: [start, end) lies inside `v`'s allocation, which we own, and is page
            // aligned. MADV_HUGEPAGE only advises how the kernel backs those pages; it
            // never changes their contents or validity. A failure (THP disabled) is
            // harmless and ignored.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}

/// Read the HIDX chunk at `offset` (its payload must end by `end`) and, when `hash`, the
/// index digest, in one parallel pass: each worker reads a run of whole hash pages and
/// hashes them while they are still in its cache. Opening a big container then costs
/// about one read of the index spread over all cores, instead of a read then a hash.
fn read_index_chunk(
    src: &dyn ReadAt,
    offset: u64,
    end: u64,
    hash: bool,
) -> Result<(Vec<u8>, Option<[u8; 32]>)> {
    const PAGE: usize = hf::PAGE_ENTRIES * hf::ENTRY_LEN;
    const PIECE: usize = 16 * PAGE;
    let (h, payload_at) = read_chunk_header_a(src, offset, Tag::HIDX, end.min(src.len()))?;
    let len = h.len as u64;
    let mut v = huge_page_buffer(len as usize);
    let head_len = hf::INDEX_HEADER_LEN.min(v.len());
    let (head, entries) = v.split_at_mut(head_len);
    read_into(src, head, payload_at, "HIDX payload")?;
    let entries_at = payload_at + head_len as u64;
    let pages: Vec<Vec<[u8; 32]>> = entries
        .par_chunks_mut(PIECE)
        .enumerate()
        .map(|(i, piece)| {
            read_into(src, piece, entries_at + (i * PIECE) as u64, "HIDX payload")?;
            Ok(match hash {
                true => piece.chunks(PAGE).map(integrity::sha256).collect(),
                false => Vec::new(),
            })
        })
        .collect::<Result<_>>()?;
    let digest = hash.then(|| integrity::index_digest_from_pages(head, &pages.concat()));
    Ok((v, digest))
}

fn read_array<const N: usize>(src: &dyn ReadAt, offset: u64, what: &str) -> Result<[u8; N]> {
    let v = read_vec(src, offset, N as u64, what)?;
    Ok(v.try_into().expect("N bytes"))
}

/// Read the header of a layout-A chunk at `offset` that must carry `tag` and whose
/// payload must end by `end`; returns the header and the payload's offset.
fn read_chunk_header_a(
    src: &dyn ReadAt,
    offset: u64,
    tag: Tag,
    end: u64,
) -> Result<(ChunkHeader, u64)> {
    let h = ChunkHeader::parse(&read_array(src, offset, &format!("{tag} chunk header"))?);
    if h.tag != tag {
        return Err(Error::Chunk {
            tag,
            offset,
            msg: format!("expected a {tag} chunk here, found tag {}", h.tag),
        });
    }
    let payload_at = offset + la::CHUNK_HEADER_LEN as u64;
    if payload_at + h.len as u64 > end {
        return Err(Error::Chunk {
            tag,
            offset,
            msg: format!(
                "payload length {} runs past {end} (the end of the region it must lie in)",
                h.len
            ),
        });
    }
    Ok((h, payload_at))
}

/// Read a layout-A chunk at `offset` that must carry `tag`; checks bounds and (when asked)
/// its CRC. Returns the payload.
fn read_chunk_a(src: &dyn ReadAt, offset: u64, tag: Tag, end: u64, crc: bool) -> Result<Vec<u8>> {
    let (h, payload_at) = read_chunk_header_a(src, offset, tag, end)?;
    let payload = read_vec(src, payload_at, h.len as u64, &format!("{tag} payload"))?;
    if crc {
        la::check_crc(&h, offset, &payload)?;
    }
    Ok(payload)
}

/// An h4fs chunk (or META's `h4fs` record) found by the reference scan: the file is an
/// h4fs container whose fixed tail is missing.
fn broken_h4fs_tail(tag: Tag, offset: u64, file_len: u64) -> Error {
    Error::Chunk {
        tag,
        offset,
        msg: format!(
            "this is an h4fs container, but it does not end with the h4fs tail (HFTR at \
             offset {}, VERI at {}): it was truncated or has bytes appended",
            file_len.saturating_sub(hf::TAIL_LEN),
            file_len.saturating_sub(44)
        ),
    }
}

fn json_chunk(tag: Tag, offset: u64, raw: Vec<u8>) -> Result<JsonChunk> {
    let value = la::parse_json(tag, offset, &raw)?;
    Ok(JsonChunk { offset, raw, value })
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
        }
    }

    /// Open an h4fs container from its footer; gives the source back when the tail is
    /// not an h4fs tail (a reference file).
    fn try_h4fs(
        src: Box<dyn ReadAt>,
        check: OpenCheck,
    ) -> Result<std::result::Result<Archive, Box<dyn ReadAt>>> {
        let len = src.len();
        if len < la::HEADER_LEN as u64 + hf::TAIL_LEN {
            return Ok(Err(src));
        }
        let tail_at = len - hf::TAIL_LEN;
        let tail: [u8; hf::TAIL_LEN as usize] = read_array(&*src, tail_at, "file tail")?;
        let fh = ChunkHeader::parse(tail[..12].try_into().expect("12"));
        let veri_at = 12 + hf::FOOTER_PAYLOAD_LEN;
        let vh = ChunkHeader::parse(tail[veri_at..veri_at + 12].try_into().expect("12"));
        if fh.tag != Tag::HFTR || vh.tag != Tag::VERI || vh.len != 32 {
            return Ok(Err(src));
        }
        let fpayload = &tail[12..12 + hf::FOOTER_PAYLOAD_LEN];
        if fh.len as usize != hf::FOOTER_PAYLOAD_LEN {
            return Err(Error::Chunk {
                tag: Tag::HFTR,
                offset: tail_at,
                msg: format!("length {}, expected {}", fh.len, hf::FOOTER_PAYLOAD_LEN),
            });
        }
        la::check_crc(&fh, tail_at, fpayload)?;
        let footer = Footer::parse(fpayload, tail_at)?;
        let mut a = Archive::blank(src, Layout::H4fs);
        let src = &*a.src;
        let veri_offset = len - 44;
        la::check_crc(&vh, veri_offset, &tail[veri_at + 12..])?;
        a.veri = Some(Veri {
            offset: veri_offset,
            expected: tail[veri_at + 12..].try_into().expect("32"),
        });
        let crc = check == OpenCheck::Structure;
        let seek = read_chunk_a(src, footer.seek_offset, Tag::SEEK, tail_at, crc)?;
        let meta = read_chunk_a(src, footer.meta_offset, Tag::META, tail_at, crc)?;
        let safe = read_chunk_a(src, footer.safe_offset, Tag::SAFE, tail_at, crc)?;
        let henc = if footer.henc_offset != 0 {
            read_chunk_a(src, footer.henc_offset, Tag::HENC, tail_at, crc)?
        } else {
            Vec::new()
        };
        // The index is covered by the root hash, which is stronger than its CRC; `verify`
        // checks the CRC too.
        let (index, digest) = read_index_chunk(
            src,
            footer.index_offset,
            tail_at,
            check == OpenCheck::Structure,
        )?;
        let count = hf::check_index(&index, footer.index_offset, footer.block_count)?;
        if let Some(digest) = digest {
            let root = integrity::root_hash(&footer.prefix(), &seek, &meta, &safe, &henc, &digest);
            if root != footer.root {
                return Err(Error::RootMismatch {
                    offset: tail_at,
                    expected: hex::encode(footer.root),
                    computed: hex::encode(root),
                });
            }
            a.root_checked = true;
        }
        validate_index(&index, count, footer.seek_offset, footer.stream_len)?;

        for (tag, off, plen) in [
            (Tag::SEEK, footer.seek_offset, seek.len()),
            (Tag::META, footer.meta_offset, meta.len()),
            (Tag::SAFE, footer.safe_offset, safe.len()),
            (Tag::HENC, footer.henc_offset, henc.len()),
            (Tag::HIDX, footer.index_offset, index.len()),
            (Tag::HFTR, tail_at, hf::FOOTER_PAYLOAD_LEN),
            (Tag::VERI, veri_offset, 32),
        ] {
            if tag == Tag::HENC && off == 0 {
                continue;
            }
            a.chunks.push(ChunkInfo {
                tag,
                offset: off,
                payload_len: plen as u64,
                total_len: plen as u64 + 12,
            });
        }
        a.chunks.sort_by_key(|c| c.offset);
        let seek_entries = la::parse_seek(&seek, footer.seek_offset)?;
        a.meta = Some(json_chunk(Tag::META, footer.meta_offset, meta)?);
        a.safe = Some(json_chunk(Tag::SAFE, footer.safe_offset, safe)?);
        a.seek_raw = Some((footer.seek_offset, seek));
        a.footer = Some((tail_at, footer));
        // An HENC chunk means encrypted even if the flag was cleared: never serve
        // ciphertext as data.
        let encrypted = footer.encrypted() || footer.henc_offset != 0;
        a.finish_meta(if encrypted { Some(henc) } else { None })?;
        a.tracks.push(Track {
            id: 0,
            name: "main".into(),
            info: Value::Null,
            blocks: BlockTable::Index {
                payload: Arc::new(index),
                count,
            },
            seek: seek_entries
                .iter()
                .map(|e| SeekPoint {
                    pts_us: e.pts_us,
                    offset: e.offset,
                })
                .collect(),
            seek_is_file_offset: false,
        });
        Ok(Ok(a))
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

    /// Scan a reference layout-A file: every chunk header once.
    fn scan_reference(src: Box<dyn ReadAt>, check: OpenCheck) -> Result<Archive> {
        let len = src.len();
        let mut a = Archive::blank(src, Layout::ReferenceA);
        let src = &*a.src;
        let mut pos = la::HEADER_LEN as u64;
        // (chunk offset, payload len, crc)
        let mut cores: Vec<(u64, u32, u32)> = Vec::new();
        // The first chunk only h4fs writes (HIDX, HFTR, HENC), if any.
        let mut h4fs_chunk: Option<(Tag, u64)> = None;
        // The reference ignores 1-11 trailing bytes after the last whole chunk.
        while len - pos >= la::CHUNK_HEADER_LEN as u64 {
            let h = ChunkHeader::parse(&read_array(src, pos, "chunk header")?);
            let end = pos + la::CHUNK_HEADER_LEN as u64 + h.len as u64;
            if end > len {
                return Err(Error::Truncated {
                    what: format!("chunk {} (payload length {})", h.tag, h.len),
                    offset: pos,
                    need: la::CHUNK_HEADER_LEN as u64 + h.len as u64,
                    file_len: len,
                });
            }
            let payload_at = pos + la::CHUNK_HEADER_LEN as u64;
            let dup = |first: u64| Error::Chunk {
                tag: h.tag,
                offset: pos,
                msg: format!("duplicate chunk (the first is at offset {first})"),
            };
            let read_checked = || -> Result<Vec<u8>> {
                let p = read_vec(src, payload_at, h.len as u64, &format!("{} payload", h.tag))?;
                if check == OpenCheck::Structure {
                    la::check_crc(&h, pos, &p)?;
                }
                Ok(p)
            };
            match h.tag {
                Tag::CORE => cores.push((pos, h.len, h.crc)),
                // Only h4fs writes these, and always with the fixed tail; without it the
                // file was cut or appended to, and must not pass as a reference file.
                // Reported after the scan, so a cut inside a later chunk is named exactly.
                Tag::HIDX | Tag::HFTR | Tag::HENC => {
                    h4fs_chunk.get_or_insert((h.tag, pos));
                }
                Tag::SEEK => {
                    if let Some((first, _)) = a.seek_raw {
                        return Err(dup(first));
                    }
                    a.seek_raw = Some((pos, read_checked()?));
                }
                Tag::META | Tag::SAFE => {
                    let slot = if h.tag == Tag::META {
                        &mut a.meta
                    } else {
                        &mut a.safe
                    };
                    if let Some(first) = slot.as_ref().map(|j| j.offset) {
                        return Err(dup(first));
                    }
                    *slot = Some(json_chunk(h.tag, pos, read_checked()?)?);
                }
                Tag::VERI => {
                    if let Some(v) = a.veri {
                        return Err(dup(v.offset));
                    }
                    let p = read_checked()?;
                    let expected: [u8; 32] = p.as_slice().try_into().map_err(|_| Error::Chunk {
                        tag: Tag::VERI,
                        offset: pos,
                        msg: format!("payload is {} bytes, expected 32", p.len()),
                    })?;
                    a.veri = Some(Veri {
                        offset: pos,
                        expected,
                    });
                }
                _ => {}
            }
            if h.tag != Tag::CORE {
                a.chunks.push(ChunkInfo {
                    tag: h.tag,
                    offset: pos,
                    payload_len: h.len as u64,
                    total_len: end - pos,
                });
            }
            pos = end;
        }
        // 1-11 bytes after the last whole chunk are a cut chunk header unless the file
        // is complete (the reference writes VERI last); say so before anything is missed.
        let cut = pos < len && a.chunks.last().is_none_or(|c| c.tag != Tag::VERI);
        if cut || (cores.is_empty() && a.chunks.is_empty()) {
            return Err(Error::Truncated {
                what: match cut {
                    true => "chunk header".into(),
                    false => "empty container (an H4MK header and no chunk): chunk header".into(),
                },
                offset: pos,
                need: la::CHUNK_HEADER_LEN as u64,
                file_len: len,
            });
        }
        if let Some((tag, at)) = h4fs_chunk {
            return Err(broken_h4fs_tail(tag, at, len));
        }
        let missing = |tag: Tag, why: &str| Error::Chunk {
            tag,
            offset: pos,
            msg: format!("not found: the chunks end at this offset without one; {why}"),
        };
        let Some((seek_offset, seek_payload)) = &a.seek_raw else {
            return Err(missing(
                Tag::SEEK,
                "a layout A container needs its seek table",
            ));
        };
        let seek = la::parse_seek(seek_payload, *seek_offset)?;
        if a.meta.is_none() {
            return Err(missing(
                Tag::META,
                "without it the engine that wrote the blocks is unknown",
            ));
        }
        // h4fs's writer marks META (`pack` adds an "h4fs" record; every h4fs engine id
        // starts "h4fs-") and always ends the file with its tail.
        let h4fs_meta = |v: &Value| {
            v.get("h4fs").is_some()
                || v.pointer("/compression/engine_id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.starts_with("h4fs-"))
        };
        if let Some(m) = a.meta.as_ref().filter(|m| h4fs_meta(&m.value)) {
            return Err(broken_h4fs_tail(Tag::META, m.offset, len));
        }
        a.finish_meta(None)?;
        let meta = a
            .meta
            .as_ref()
            .map(|m| m.value.clone())
            .unwrap_or(Value::Null);

        // Decoded lengths: known without reading for identity, by scanning runs for the
        // geometric-reference engine, unknown for other engines or encrypted blocks.
        let engine = match (&a.engine, &a.encryption) {
            (EngineChoice::Known(e), None) => Some(*e),
            _ => None,
        };
        a.sizes_exact = engine.is_some();
        let decoded: Vec<u64> = match engine {
            Some(crate::engine::Engine::Identity) | None => {
                cores.iter().map(|c| c.1 as u64).collect()
            }
            Some(e) => cores
                .par_iter()
                .enumerate()
                .map(|(i, &(off, plen, _))| {
                    let p = read_vec(&*a.src, off + 12, plen as u64, "CORE payload")?;
                    e.decoded_len(&p).map_err(|msg| Error::Block {
                        block: i as u64,
                        offset: off,
                        msg,
                    })
                })
                .collect::<Result<_>>()?,
        };

        // Per-block pts and keyframes: from META's fps_hint/gop as the reference's
        // export computes them, else from SEEK.
        let frame_us = meta
            .get("fps_hint")
            .and_then(Value::as_f64)
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(|fps| (1e6 / fps).floor() as u64);
        let gop = meta.get("gop").and_then(Value::as_u64).filter(|g| *g > 0);
        let mut blocks = Vec::with_capacity(cores.len());
        let mut stream = 0u64;
        let mut seek_i = 0usize;
        let mut cur_pts = 0u64;
        for (i, &(off, plen, crc)) in cores.iter().enumerate() {
            let mut on_seek = false;
            while seek_i < seek.len() && seek[seek_i].offset <= stream {
                on_seek = seek[seek_i].offset == stream;
                cur_pts = seek[seek_i].pts_us;
                seek_i += 1;
            }
            let pts_us = match frame_us {
                Some(f) => f.saturating_mul(i as u64),
                None => cur_pts,
            };
            let keyframe = match gop {
                Some(g) => i as u64 % g == 0,
                None => on_seek,
            };
            blocks.push(BlockEntry {
                number: i as u64,
                chunk_offset: off,
                data_offset: off + 12,
                stored_len: plen as u64,
                decoded_len: decoded[i],
                stream_offset: stream,
                pts_us,
                keyframe,
                track: 0,
                check: BlockCheck::CrcPayload(crc),
                block_type: None,
            });
            stream += decoded[i];
        }
        a.tracks.push(Track {
            id: 0,
            name: "main".into(),
            info: Value::Null,
            blocks: BlockTable::List(blocks),
            seek: seek
                .iter()
                .map(|e| SeekPoint {
                    pts_us: e.pts_us,
                    offset: e.offset,
                })
                .collect(),
            seek_is_file_offset: false,
        });
        Ok(a)
    }

    /// Read a layout C file whole, checking every chunk CRC and the file CRC.
    fn scan_layout_c(src: Box<dyn ReadAt>) -> Result<Archive> {
        let len = src.len();
        let mut a = Archive::blank(src, Layout::MultitrackC);
        let src = &*a.src;
        let head: [u8; lc::HEADER_LEN] = read_array(src, 0, "layout C header")?;
        let header = lc::parse_header(&head)?;
        a.timestamp = Some(header.timestamp);
        if len < (lc::HEADER_LEN + 4) as u64 {
            return Err(Error::Truncated {
                what: "layout C file CRC".into(),
                offset: lc::HEADER_LEN as u64,
                need: 4,
                file_len: len,
            });
        }
        let body_end = len - 4;
        let mut file_crc = crc32fast::Hasher::new();
        file_crc.update(&head);
        let mut pos = lc::HEADER_LEN as u64;
        // (chunk offset, header, crc) of CORE chunks
        let mut cores: Vec<(u64, lc::ChunkHeader, u32, u16)> = Vec::new();
        // (chunk offset, parsed TSEK)
        let mut tseks: Vec<(u64, lc::TrackSeek)> = Vec::new();
        while pos < body_end {
            let hb: [u8; 12] = read_array(src, pos, "layout C chunk header")?;
            let h = lc::ChunkHeader::parse(&hb);
            let total = 12 + h.len as u64 + 4;
            if pos + total > body_end {
                return Err(Error::Truncated {
                    what: format!("chunk {} (payload length {})", h.tag, h.len),
                    offset: pos,
                    need: total,
                    file_len: len,
                });
            }
            let payload = read_vec(src, pos + 12, h.len as u64, &format!("{} payload", h.tag))?;
            let crc_bytes: [u8; 4] = read_array(src, pos + 12 + h.len as u64, "chunk CRC")?;
            let stored = u32::from_le_bytes(crc_bytes);
            let mut c = crc32fast::Hasher::new();
            c.update(&hb);
            c.update(&payload);
            let computed = c.finalize();
            if stored != computed {
                return Err(Error::CrcMismatch {
                    tag: h.tag,
                    offset: pos,
                    stored,
                    computed,
                });
            }
            file_crc.update(&hb);
            file_crc.update(&payload);
            file_crc.update(&crc_bytes);
            match h.tag {
                Tag::CORE => {
                    let track = lc::parse_block_prefix(&payload, pos)?;
                    if h.block_type().is_none() {
                        return Err(Error::Chunk {
                            tag: Tag::CORE,
                            offset: pos,
                            msg: "block type 3 in flags bits 28-29 is not defined".into(),
                        });
                    }
                    cores.push((pos, h, stored, track));
                }
                Tag::TSEK => tseks.push((pos, lc::parse_tsek(&payload, pos)?)),
                Tag::TRAK => a.trak = Some(json_chunk(h.tag, pos, payload)?),
                Tag::META => a.meta = Some(json_chunk(h.tag, pos, payload)?),
                Tag::SAFE => a.safe = Some(json_chunk(h.tag, pos, payload)?),
                _ => {}
            }
            if h.tag != Tag::CORE {
                a.chunks.push(ChunkInfo {
                    tag: h.tag,
                    offset: pos,
                    payload_len: h.len as u64,
                    total_len: total,
                });
            }
            pos += total;
        }
        let stored: [u8; 4] = read_array(src, body_end, "file CRC")?;
        let stored = u32::from_le_bytes(stored);
        let computed = file_crc.finalize();
        if stored != computed {
            return Err(Error::Chunk {
                tag: Tag(*b"FCRC"),
                offset: body_end,
                msg: format!("file CRC-32 mismatch (stored {stored:08x}, computed {computed:08x})"),
            });
        }
        a.finish_meta(None)?;
        a.sizes_exact = matches!(a.engine, EngineChoice::Known(_));
        let trak = a.trak.as_ref().ok_or_else(|| Error::Chunk {
            tag: Tag::TRAK,
            offset: lc::HEADER_LEN as u64,
            msg:
                "not found: a layout C file lists its tracks in a TRAK chunk, and this one has none"
                    .into(),
        })?;
        let list = trak
            .value
            .get("tracks")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Json {
                tag: Tag::TRAK,
                offset: trak.offset,
                msg: "no \"tracks\" array".into(),
            })?;
        let mut tracks = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let id = t
                .get("track_id")
                .and_then(Value::as_u64)
                .filter(|id| *id <= u16::MAX as u64)
                .ok_or_else(|| Error::Json {
                    tag: Tag::TRAK,
                    offset: trak.offset,
                    msg: format!("track {i} has no valid \"track_id\""),
                })? as u32;
            if tracks.iter().any(|t: &Track| t.id == id) {
                return Err(Error::Json {
                    tag: Tag::TRAK,
                    offset: trak.offset,
                    msg: format!("track_id {id} listed twice"),
                });
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("track{id}"));
            let mut blocks = Vec::new();
            let mut stream = 0;
            for &(off, h, crc, track) in cores.iter().filter(|c| c.3 as u32 == id) {
                let stored_len = h.len as u64 - lc::BLOCK_PREFIX_LEN as u64;
                blocks.push(BlockEntry {
                    number: blocks.len() as u64,
                    chunk_offset: off,
                    data_offset: off + 12 + lc::BLOCK_PREFIX_LEN as u64,
                    stored_len,
                    decoded_len: stored_len,
                    stream_offset: stream,
                    pts_us: h.pts_ms() as u64 * 1000,
                    keyframe: h.block_type() == Some(BlockType::I),
                    track: track as u32,
                    check: BlockCheck::CrcChunkC(crc),
                    block_type: h.block_type(),
                });
                stream += stored_len;
            }
            // Each seek entry must name the payload of one of this track's blocks.
            let seek = match tseks.iter().find(|(_, s)| s.track as u32 == id) {
                None => Vec::new(),
                Some((at, s)) => s
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(i, &(pts, off))| {
                        let off = off as u64;
                        let prefix_at = |b: &BlockEntry| b.data_offset - lc::BLOCK_PREFIX_LEN as u64;
                        if blocks.binary_search_by_key(&off, prefix_at).is_err() {
                            return Err(Error::Chunk {
                                tag: Tag::TSEK,
                                offset: *at,
                                msg: match off >= len {
                                    true => format!(
                                        "entry {i} (pts {pts} ms) points at file offset {off}, past the end of the file ({len} bytes)"
                                    ),
                                    false => format!(
                                        "entry {i} (pts {pts} ms) points at file offset {off}, which is not the payload of a CORE chunk of track {id}"
                                    ),
                                },
                            });
                        }
                        Ok(SeekPoint {
                            pts_us: pts as u64 * 1000,
                            offset: off,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            };
            tracks.push(Track {
                id,
                name,
                info: t.clone(),
                blocks: BlockTable::List(blocks),
                seek,
                seek_is_file_offset: true,
            });
        }
        if let Some(&(off, _, _, track)) = cores
            .iter()
            .find(|c| !tracks.iter().any(|t| t.id == c.3 as u32))
        {
            return Err(Error::Chunk {
                tag: Tag::CORE,
                offset: off,
                msg: format!("block names track {track}, which TRAK does not list"),
            });
        }
        a.tracks = tracks;
        Ok(a)
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

    /// The stored bytes of a block, checked against its hash or CRC.
    pub fn read_stored(&self, track: usize, n: u64) -> Result<Vec<u8>> {
        let e = self.entry(track, n)?;
        self.read_stored_entry(&e)
    }

    /// Entry `n` of `track`, or an error naming what is missing.
    pub fn entry(&self, track: usize, n: u64) -> Result<BlockEntry> {
        let t = self
            .tracks
            .get(track)
            .ok_or_else(|| Error::Invalid(format!("no track {track}")))?;
        t.blocks.get(n).ok_or_else(|| {
            Error::Invalid(format!(
                "no block {n}: the track has {} blocks (0..{})",
                t.blocks.len(),
                t.blocks.len().saturating_sub(1)
            ))
        })
    }

    /// Stored bytes of `e`, checked.
    pub fn read_stored_entry(&self, e: &BlockEntry) -> Result<Vec<u8>> {
        let (head, payload) = self.read_block_parts(e)?;
        check_block_parts(e, &head, &payload)?;
        Ok(payload)
    }

    /// A block's chunk header bytes and stored bytes, unchecked. Small blocks take one
    /// read and a short move; large ones two reads, so the payload lands in a buffer of
    /// its own without a megabyte-sized copy.
    fn read_block_parts(&self, e: &BlockEntry) -> Result<(Vec<u8>, Vec<u8>)> {
        let what = format!("block {}", e.number);
        let head_len = e.data_offset - e.chunk_offset;
        if e.stored_len < 1 << 16 {
            let mut raw = read_vec(&*self.src, e.chunk_offset, head_len + e.stored_len, &what)?;
            let head = raw.drain(..head_len as usize).collect();
            return Ok((head, raw));
        }
        let head = read_vec(&*self.src, e.chunk_offset, head_len, &what)?;
        let payload = read_vec(&*self.src, e.data_offset, e.stored_len, &what)?;
        Ok((head, payload))
    }

    /// A block's decoded bytes, verified.
    pub fn read_block(&self, track: usize, n: u64) -> Result<VerifiedBlock> {
        let e = self.entry(track, n)?;
        self.read_block_entry(&e)
    }

    /// Decoded bytes of `e`, verified.
    pub fn read_block_entry(&self, e: &BlockEntry) -> Result<VerifiedBlock> {
        self.check_decodable(e)?;
        // AES-GCM authenticates an h4fs block (its bytes, position and index entry) more
        // strongly than its unkeyed SHA-256, so with the key the hash pass is skipped.
        let stored = match &self.decryptor {
            Some(Decryptor::H4fs(_)) => self.read_stored_sealed(e)?,
            _ => self.read_stored_entry(e)?,
        };
        self.decode_stored(e, stored)
    }

    /// Decoded bytes of `a` and of `b`, verified, as two [`read_block_entry`] calls
    /// would give them. When both are checked by SHA-256 (plain h4fs blocks), the two
    /// hashes run in lockstep on one core ([`integrity::sha256_pair`]), which is what
    /// bounds a sequential read.
    ///
    /// [`read_block_entry`]: Self::read_block_entry
    pub fn read_block_entry_pair(
        &self,
        a: &BlockEntry,
        b: &BlockEntry,
    ) -> [Result<VerifiedBlock>; 2] {
        let hashed = |e: &BlockEntry| {
            matches!(e.check, BlockCheck::Sha256(_))
                && !matches!(self.decryptor, Some(Decryptor::H4fs(_)))
                && self.check_decodable(e).is_ok()
        };
        if !(hashed(a) && hashed(b)) {
            return [self.read_block_entry(a), self.read_block_entry(b)];
        }
        let (pa, pb) = match (self.read_block_parts(a), self.read_block_parts(b)) {
            (Ok(pa), Ok(pb)) => (pa, pb),
            (ra, rb) => {
                let one = |e, r: Result<(Vec<u8>, Vec<u8>)>| {
                    let (head, stored) = r?;
                    check_block_parts(e, &head, &stored)?;
                    self.decode_stored(e, stored)
                };
                return [one(a, ra), one(b, rb)];
            }
        };
        let (ha, hb) = integrity::sha256_pair(&pa.1, &pb.1);
        let one = |e, (head, stored): (Vec<u8>, Vec<u8>), computed| {
            check_block_parts_hashed(e, &head, &stored, Some(computed))?;
            self.decode_stored(e, stored)
        };
        [one(a, pa, ha), one(b, pb, hb)]
    }

    /// True when [`read_block_entry_pair`](Self::read_block_entry_pair) gains anything:
    /// plain h4fs blocks, checked by SHA-256 (encrypted blocks are authenticated by
    /// AES-GCM instead, reference blocks by CRC-32).
    pub fn hashes_blocks_in_pairs(&self) -> bool {
        self.layout == Layout::H4fs && self.encryption.is_none()
    }

    /// An error when blocks cannot be decoded at all: encrypted without the key, or an
    /// unknown engine.
    fn check_decodable(&self, e: &BlockEntry) -> Result<()> {
        if let (Some(enc), None) = (&self.encryption, &self.decryptor) {
            return Err(Error::Encrypted {
                cipher: enc.cipher.clone(),
                what: format!("decoding block {}", e.number),
            });
        }
        self.engine.known().map(|_| ())
    }

    /// Decrypt (when encrypted) and decode the stored bytes of `e`, already checked
    /// against its hash or CRC (as [`read_stored_entry`](Self::read_stored_entry) and
    /// `verify` do).
    pub fn decode_stored(&self, e: &BlockEntry, stored: Vec<u8>) -> Result<VerifiedBlock> {
        let plain = match (&self.encryption, &self.decryptor) {
            (None, _) => stored,
            (Some(_), Some(d)) => d.open(&block_context(e), stored)?,
            (Some(enc), None) => {
                return Err(Error::Encrypted {
                    cipher: enc.cipher.clone(),
                    what: format!("decoding block {}", e.number),
                });
            }
        };
        let data = self
            .engine
            .known()?
            .decode(plain, e.decoded_len)
            .map_err(|msg| Error::Block {
                block: e.number,
                offset: e.chunk_offset,
                msg,
            })?;
        Ok(VerifiedBlock::new_checked(data))
    }

    /// True when no byte of this container may be output (or called intact) before its
    /// whole-file VERI was checked: a reference layout-A file, whose blocks carry only
    /// CRC-32 and whose chunk walk nothing else protects (a CORE chunk whose tag was
    /// damaged is skipped as an unknown chunk, and its block silently disappears). `cat`,
    /// `seek` and `verify` check VERI first, `extract` while it writes, the mount on the
    /// first open of a data file.
    pub fn needs_veri(&self) -> bool {
        self.layout == Layout::ReferenceA
    }

    /// Check the reference VERI over the whole file (every chunk before VERI), which must
    /// be the file's last chunk: a chunk after it would be covered by nothing.
    /// `progress` is called with byte counts as they are hashed.
    pub fn check_veri(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
        let v = self.veri.ok_or_else(|| Error::Chunk {
            tag: Tag::VERI,
            offset: self.chunks_end(),
            msg: "not found: the file ends here without the whole-file hash the reference \
                  writes as its last chunk, so nothing shows that its chunks are the ones \
                  written"
                .into(),
        })?;
        let veri_end = v.offset + la::CHUNK_HEADER_LEN as u64 + 32;
        if self.chunks_end() > veri_end {
            let (tag, at) = self
                .chunks
                .iter()
                .find(|c| c.offset >= veri_end)
                .map(|c| (c.tag, c.offset))
                .unwrap_or((Tag::CORE, veri_end));
            return Err(Error::Chunk {
                tag,
                offset: at,
                msg: format!(
                    "follows the VERI chunk at offset {}, which covers only the bytes before \
                     it; the reference writes VERI last",
                    v.offset
                ),
            });
        }
        let computed = self.hash_range(la::HEADER_LEN as u64, v.offset, progress)?;
        if computed != v.expected {
            return Err(Error::VeriMismatch {
                offset: v.offset,
                expected: hex::encode(v.expected),
                computed: hex::encode(computed),
            });
        }
        Ok(())
    }

    /// Where the last chunk ends (CORE chunks included); trailing bytes too short to be
    /// a chunk header are not counted.
    fn chunks_end(&self) -> u64 {
        let chunks = self.chunks.iter().map(|c| c.offset + c.total_len);
        let blocks = self.tracks.iter().filter_map(|t| {
            let e = t.blocks.get(t.blocks.len().checked_sub(1)?)?;
            Some(e.data_offset + e.stored_len)
        });
        chunks.chain(blocks).max().unwrap_or(la::HEADER_LEN as u64)
    }

    /// SHA-256 of the file bytes `[start, end)`, reading ahead on a second thread.
    pub fn hash_range(
        &self,
        start: u64,
        end: u64,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<[u8; 32]> {
        const BUF: u64 = 4 << 20;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(2);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut pos = start;
                while pos < end {
                    let n = BUF.min(end - pos);
                    let mut buf = free_rx.try_recv().unwrap_or_default();
                    buf.resize(n as usize, 0);
                    let r = self
                        .src
                        .read_exact_at(&mut buf, pos)
                        .map(|_| buf)
                        .map_err(|e| {
                            Error::io(format!("reading {} at offset {pos}", self.name()), e)
                        });
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        return;
                    }
                    pos += n;
                }
            });
            let mut h = integrity::VeriHasher::new();
            for buf in rx {
                let buf = buf?;
                h.update(&buf);
                progress(buf.len() as u64);
                let _ = free_tx.send(buf);
            }
            Ok(h.finish())
        })
    }
}

/// Check a block's bytes, read from its chunk header to the end of its stored bytes
/// (`data_offset + stored_len - chunk_offset` bytes), against its entry.
pub fn check_block_bytes(e: &BlockEntry, raw: &[u8]) -> Result<()> {
    let skip = (e.data_offset - e.chunk_offset) as usize;
    if raw.len() as u64 != skip as u64 + e.stored_len {
        return Err(Error::Block {
            block: e.number,
            offset: e.chunk_offset,
            msg: format!(
                "expected {} bytes, got {}",
                skip as u64 + e.stored_len,
                raw.len()
            ),
        });
    }
    check_block_parts(e, &raw[..skip], &raw[skip..])
}

/// Check that an h4fs index entry points at a CORE chunk of its recorded length.
/// `head` is the 12-byte chunk header as read.
fn check_core_header(e: &BlockEntry, head: &[u8]) -> Result<()> {
    let h = ChunkHeader::parse(head[..12].try_into().expect("caller read 12 bytes"));
    if h.tag != Tag::CORE || h.len as u64 != e.stored_len {
        return Err(Error::Block {
            block: e.number,
            offset: e.chunk_offset,
            msg: format!(
                "index points at a {} chunk of {} bytes, expected CORE of {}",
                h.tag, h.len, e.stored_len
            ),
        });
    }
    Ok(())
}

/// Check a block given its chunk header bytes (`data_offset - chunk_offset` of them) and
/// its stored bytes.
pub fn check_block_parts(e: &BlockEntry, head: &[u8], payload: &[u8]) -> Result<()> {
    check_block_parts_hashed(e, head, payload, None)
}

/// [`check_block_parts`], with the SHA-256 of `payload` already `computed` (or `None`
/// to compute it here when the entry needs it).
fn check_block_parts_hashed(
    e: &BlockEntry,
    head: &[u8],
    payload: &[u8],
    computed: Option<[u8; 32]>,
) -> Result<()> {
    if head.len() as u64 != e.data_offset - e.chunk_offset || payload.len() as u64 != e.stored_len {
        return Err(Error::Block {
            block: e.number,
            offset: e.chunk_offset,
            msg: format!(
                "expected {} header and {} stored bytes, got {} and {}",
                e.data_offset - e.chunk_offset,
                e.stored_len,
                head.len(),
                payload.len()
            ),
        });
    }
    match e.check {
        BlockCheck::Sha256(expected) => {
            check_core_header(e, head)?;
            let computed = computed.unwrap_or_else(|| integrity::sha256(payload));
            if computed != expected {
                return Err(Error::BlockHash {
                    block: e.number,
                    offset: e.chunk_offset,
                    expected: hex::encode(expected),
                    computed: hex::encode(computed),
                });
            }
        }
        BlockCheck::CrcPayload(stored) | BlockCheck::CrcChunkC(stored) => {
            let mut crc = crc32fast::Hasher::new();
            if matches!(e.check, BlockCheck::CrcChunkC(_)) {
                crc.update(head);
            }
            crc.update(payload);
            let computed = crc.finalize();
            if computed != stored {
                return Err(Error::BlockCrc {
                    block: e.number,
                    offset: e.chunk_offset,
                    stored,
                    computed,
                });
            }
        }
    }
    Ok(())
}

/// Check every index entry: inside the block region, contiguous stream offsets,
/// non-decreasing pts, known flags. Parallel over pages.
fn validate_index(index: &[u8], count: u64, region_end: u64, stream_len: u64) -> Result<()> {
    let entries = &index[hf::INDEX_HEADER_LEN..];
    let page = hf::PAGE_ENTRIES * hf::ENTRY_LEN;
    let get = |i: u64| {
        let at = i as usize * hf::ENTRY_LEN;
        IndexEntry::parse(&entries[at..at + hf::ENTRY_LEN])
    };
    entries
        .par_chunks(page)
        .enumerate()
        .try_for_each(|(p, chunk)| {
            let first = (p * hf::PAGE_ENTRIES) as u64;
            let mut prev = first.checked_sub(1).map(get);
            for (k, b) in chunk.chunks_exact(hf::ENTRY_LEN).enumerate() {
                let i = first + k as u64;
                let e = IndexEntry::parse(b);
                let bad = |msg: String| Error::Index { block: i, msg };
                let end = e
                    .chunk_offset
                    .checked_add(12 + e.stored_len as u64)
                    .filter(|&end| e.chunk_offset >= la::HEADER_LEN as u64 && end <= region_end);
                if end.is_none() {
                    return Err(bad(format!(
                        "chunk at offset {} with {} stored bytes lies outside the block region [8, {region_end})",
                        e.chunk_offset, e.stored_len
                    )));
                }
                if e.flags & !hf::FLAG_KEYFRAME != 0 {
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

/// What a block's authenticated data binds: its position and its index entry.
pub fn block_context(e: &BlockEntry) -> BlockContext {
    BlockContext {
        index: e.number,
        track: e.track,
        pts_us: e.pts_us,
        keyframe: e.keyframe,
        decoded_len: e.decoded_len,
        chunk_offset: e.chunk_offset,
    }
}

/// Keys: attaching them checks them before any data is served.
impl Archive {
    /// The stored bytes of a sealed h4fs block, for AES-GCM to authenticate: the chunk
    /// header is checked (tag and length), the SHA-256 is not computed.
    fn read_stored_sealed(&self, e: &BlockEntry) -> Result<Vec<u8>> {
        let (head, stored) = self.read_block_parts(e)?;
        check_core_header(e, &head)?;
        Ok(stored)
    }

    /// True when blocks can be decoded as far as keys go: the container is not
    /// encrypted, or its key is attached.
    pub fn has_key(&self) -> bool {
        self.encryption.is_none() || self.decryptor.is_some()
    }

    /// True when a key or secret is attached.
    pub fn key_attached(&self) -> bool {
        self.decryptor.is_some()
    }

    /// Attach the master key of an h4fs-encrypted container. A different key gives
    /// [`Error::WrongKey`] ("the key does not match this container") here, before any
    /// block is read.
    pub fn attach_key(&mut self, key: &MasterKey) -> Result<()> {
        let Some(enc) = &self.encryption else {
            return Err(Error::Invalid(
                "the container is not encrypted: it needs no key".into(),
            ));
        };
        let henc_offset = match (self.layout, self.footer) {
            (Layout::H4fs, Some((_, f))) if f.henc_offset != 0 => f.henc_offset,
            (Layout::H4fs, Some((at, _))) => {
                return Err(Error::Chunk {
                    tag: Tag::HFTR,
                    offset: at,
                    msg: format!(
                        "META says the blocks are encrypted ({}), but the footer names no \
                         HENC chunk holding their key: the container was altered",
                        enc.cipher
                    ),
                });
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "the container is encrypted with {}, not with an h4fs key; a reference \
                     file needs its shared secret (--shared-secret-file)",
                    enc.cipher
                )));
            }
        };
        let henc = crypto::Henc::from_value(&enc.record, henc_offset)?;
        let c = crypto::ContainerCrypto::open(key, &henc)?;
        // With the key, the structure is authenticated too, not just hashed.
        let (Some(BlockTable::Index { payload, .. }), Some((_, footer))) =
            (self.tracks.first().map(|t| &t.blocks), self.footer)
        else {
            return Err(Error::Invalid(
                "an h4fs container has a footer and one indexed track".into(),
            ));
        };
        fn raw(j: &Option<JsonChunk>) -> &[u8] {
            j.as_ref().map_or(&[][..], |j| &j.raw[..])
        }
        let structure = crypto::container::structure_digest(
            footer.flags,
            footer.block_count,
            footer.stream_len,
            self.seek_raw.as_ref().map_or(&[][..], |s| &s.1[..]),
            raw(&self.meta),
            raw(&self.safe),
            payload,
        );
        c.check_structure(&henc, &structure, henc_offset)?;
        self.decryptor = Some(Decryptor::H4fs(Box::new(c)));
        Ok(())
    }

    /// Attach the shared secret of a container written by the reference's encrypted
    /// export (Living Cipher v3). Decrypts every block once (in parallel) to learn the
    /// decoded sizes and check the transcript chain; a secret that does not
    /// authenticate block 0 gives [`Error::WrongKey`], any other bad block an error
    /// naming it. Whether the secret is the reference's public default is
    /// [`SharedSecret::is_reference_default`].
    pub fn attach_shared_secret(&mut self, secret: &SharedSecret) -> Result<()> {
        let cipher = self.encryption.as_ref().map(|e| e.cipher.as_str());
        if self.layout != Layout::ReferenceA || cipher != Some(crypto::living::CIPHER) {
            return Err(Error::Invalid(format!(
                "a shared secret opens reference files encrypted with {}; this container is {}",
                crypto::living::CIPHER,
                match cipher {
                    None => "not encrypted".to_string(),
                    Some(c) => format!("encrypted with {c} (use --key-file)"),
                }
            )));
        }
        let lc = crypto::LivingCipher::new(secret);
        let Some(BlockTable::List(blocks)) = self.tracks.first().map(|t| &t.blocks) else {
            return Err(Error::Invalid(
                "a reference container has one listed track".into(),
            ));
        };
        if let Some(e0) = blocks.first() {
            let stored = self.read_stored_entry(e0)?;
            if let Err(Error::BlockAuth { .. }) = lc.decrypt_block(0, e0.chunk_offset, &stored) {
                return Err(Error::WrongKey {
                    detail: " (the shared secret does not authenticate block 0)".into(),
                });
            }
        }
        let engine = self.engine.known().ok();
        let hdr = crypto::living::HEADER_LEN;
        // Decoded length, recorded transcript, SHA-256 of header and of the rest.
        type Scanned = (Option<u64>, [u8; 32], [u8; 32], [u8; 32]);
        let found: Vec<Result<Scanned>> = blocks
            .par_iter()
            .map(|e| {
                let stored = self.read_stored_entry(e)?;
                let h = crypto::living::parse_header(&stored, e.number, e.chunk_offset)?;
                let plain = lc.decrypt_block(e.number, e.chunk_offset, &stored)?;
                let decoded = match engine {
                    Some(en) => Some(en.decoded_len(&plain).map_err(|msg| Error::Block {
                        block: e.number,
                        offset: e.chunk_offset,
                        msg,
                    })?),
                    None => None,
                };
                Ok((
                    decoded,
                    h.transcript,
                    integrity::sha256(&stored[..hdr]),
                    integrity::sha256(&stored[hdr..]),
                ))
            })
            .collect();
        let mut transcript = crypto::living::Transcript::new();
        let mut relaid = blocks.clone();
        let mut stream = 0u64;
        for (e, r) in relaid.iter_mut().zip(found) {
            let (decoded, recorded, hh, bh) = r?;
            transcript.advance(e.number, e.chunk_offset, &recorded, &hh, &bh)?;
            if let Some(n) = decoded {
                e.decoded_len = n;
                e.stream_offset = stream;
                stream += n;
            }
        }
        if engine.is_some() {
            self.tracks[0].blocks = BlockTable::List(relaid);
            self.sizes_exact = true;
        }
        self.decryptor = Some(Decryptor::Living(lc));
        Ok(())
    }
}
