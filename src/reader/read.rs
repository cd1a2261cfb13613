//! The block read path, the one place that decides whether a block's bytes may be used:
//! read the stored bytes, check them (SHA-256 of an h4fs index entry, the CRC-32 of a
//! reference chunk, or AES-GCM for a sealed h4fs block with its key), decrypt and decode
//! them. Only this module builds a [`VerifiedBlock`], and only after that check passed.
//!
//! [`Archive::read_block_entry`] reads one block, [`Archive::read_block_entry_pair`] two
//! with their hashes computed in lockstep, [`Archive::check_stored`] checks and decodes
//! bytes the caller read itself (`verify` reads spans of blocks at once); all three end
//! in the same [`Archive::check_and_decode`]. [`Archive::read_stored_entry`] gives the
//! stored bytes, checked but not decoded (`cat --raw`).

use super::Archive;
use super::io::{PooledBuf, read_pooled, read_vec};
use super::table::{BlockCheck, BlockEntry};
use crate::crypto::{BlockContext, Decryptor};
use crate::error::{Error, Result, Tag};
use crate::format::h4fs::stored_offset;
use crate::format::layout_a::ChunkHeader;
use crate::integrity;
use std::ops::Range;
use std::sync::Arc;

/// Stored bytes of whole hash groups of a v2 container, built only by
/// [`Archive::read_stored_groups`] after they matched the container's BLAKE3 tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedGroups {
    offset: u64,
    groups: Range<u64>,
    data: Vec<u8>,
}

impl VerifiedGroups {
    /// Stored-stream offset of the first byte (a multiple of the group size).
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// The hash groups these bytes are.
    pub fn groups(&self) -> Range<u64> {
        self.groups.clone()
    }
    /// The verified stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
    /// The verified stored bytes of stream range `r`, which must lie inside these groups.
    pub fn slice(&self, r: Range<u64>) -> &[u8] {
        &self.data[(r.start - self.offset) as usize..(r.end - self.offset) as usize]
    }
}

/// A block's decoded bytes, built only after its stored bytes passed their check
/// (the BLAKE3 hash groups they lie in for h4fs v2 containers, SHA-256 for v1, CRC-32 for reference ones, AES-GCM when encrypted)
/// and decoding succeeded with the recorded length.
///
/// The bytes are a range of a buffer that several blocks may share: the hash groups of
/// one read of a v2 container are views of the bytes that read returned, so neither
/// splitting them into groups nor serving adjacent groups together copies them
/// ([`VerifiedBlock::join`]). [`VerifiedBlock::buffer_len`] is the memory the shared
/// buffer holds, which the block cache charges once per buffer.
#[derive(Clone)]
pub struct VerifiedBlock {
    buf: Arc<PooledBuf>,
    range: Range<usize>,
}

impl std::fmt::Debug for VerifiedBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedBlock")
            .field("len", &self.len())
            .field("buffer_len", &self.buffer_len())
            .finish()
    }
}

impl PartialEq for VerifiedBlock {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for VerifiedBlock {}

impl VerifiedBlock {
    /// Only the read path below builds these, right after checking.
    fn new_checked(data: Vec<u8>) -> Self {
        let range = 0..data.len();
        VerifiedBlock {
            buf: Arc::new(PooledBuf::new(data)),
            range,
        }
    }
    /// Bytes `range` of a checked buffer, shared.
    fn view_checked(buf: &Arc<PooledBuf>, range: Range<usize>) -> Self {
        VerifiedBlock {
            buf: buf.clone(),
            range,
        }
    }
    /// A block of arbitrary bytes, for tests of the layers above the reader.
    #[cfg(test)]
    pub(crate) fn for_test(data: Vec<u8>) -> Self {
        Self::new_checked(data)
    }
    /// Blocks of arbitrary bytes that are views of one buffer, for tests.
    #[cfg(test)]
    pub(crate) fn views_for_test(data: Vec<u8>, ranges: &[Range<usize>]) -> Vec<Self> {
        let buf = Arc::new(PooledBuf::new(data));
        ranges
            .iter()
            .map(|r| Self::view_checked(&buf, r.clone()))
            .collect()
    }
    /// The verified, decoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
    /// Take the verified bytes (copied only when the buffer is shared or larger).
    pub fn into_bytes(self) -> Vec<u8> {
        if self.range == (0..self.buf.len()) {
            Arc::try_unwrap(self.buf).map_or_else(|b| b.to_vec(), PooledBuf::into_vec)
        } else {
            self.buf[self.range].to_vec()
        }
    }
    /// `self` and `next` as one block when `next`'s bytes directly follow these in the
    /// same buffer (both verified, so their union is), without copying.
    pub fn join(&self, next: &VerifiedBlock) -> Option<VerifiedBlock> {
        (Arc::ptr_eq(&self.buf, &next.buf) && self.range.end == next.range.start).then(|| {
            VerifiedBlock {
                buf: self.buf.clone(),
                range: self.range.start..next.range.end,
            }
        })
    }
    /// Bytes held by the buffer these bytes are part of.
    pub fn buffer_len(&self) -> usize {
        self.buf.len()
    }
    /// Identity of that buffer: blocks with the same id share one allocation.
    pub fn buffer_id(&self) -> usize {
        Arc::as_ptr(&self.buf) as usize
    }
    /// Decoded length.
    pub fn len(&self) -> usize {
        self.range.len()
    }
    /// True for an empty block.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// A block as read from the source: its chunk header bytes and its stored bytes,
/// not yet checked.
struct StoredParts {
    head: Vec<u8>,
    stored: Vec<u8>,
}

impl Archive {
    /// v2 containers: the stored-stream bytes `range` (the CORE payloads concatenated),
    /// rounded out to whole hash groups, read in one `pread` (the 12-byte chunk headers
    /// between blocks are checked and dropped) and verified against the BLAKE3 tree
    /// checked at open. A damaged group fails with an error naming the first block it
    /// touches and exactly the failing groups; no unverified byte is returned.
    pub fn read_stored_groups(&self, range: Range<u64>) -> Result<VerifiedGroups> {
        let Some(tree) = &self.tree else {
            return Err(Error::BadInput(format!(
                "{} has no hash tree (not an h4fs v2 container)",
                self.name()
            )));
        };
        let shape = tree.shape();
        if range.start > range.end || range.end > shape.stream_len() {
            return Err(Error::BadInput(format!(
                "stored bytes {}..{} lie outside the stored stream of {} bytes",
                range.start,
                range.end,
                shape.stream_len()
            )));
        }
        let (groups, span) = shape.groups_for(range);
        if span.is_empty() {
            return Ok(VerifiedGroups {
                offset: span.start,
                groups,
                data: Vec::new(),
            });
        }
        let (raw, pieces) = self.read_span(tree, groups.clone(), span.clone())?;
        let mut data = Vec::with_capacity((span.end - span.start) as usize);
        for p in pieces {
            data.extend_from_slice(&raw[p]);
        }
        Ok(VerifiedGroups {
            offset: span.start,
            groups,
            data,
        })
    }

    /// The stored-stream bytes `span` (whole hash groups `groups`) in one `pread`: the
    /// bytes read, and where in them each block's stored bytes lie, in stream order
    /// (the chunk headers between blocks are checked and skipped). Verified against
    /// the tree where they lie, without gathering them first. Bytes that fail are read
    /// once more when the source dropped a copy it kept of them
    /// ([`ReadAt::invalidate`](crate::source::ReadAt::invalidate)).
    fn read_span(
        &self,
        tree: &crate::integrity::tree::CheckedTree,
        groups: Range<u64>,
        span: Range<u64>,
    ) -> Result<(PooledBuf, Vec<Range<usize>>)> {
        match self.read_span_once(tree, groups.clone(), span.clone()) {
            Err((err, file)) if err.is_integrity() && self.src.invalidate(file.clone()) => self
                .read_span_once(tree, groups, span)
                .map_err(|(err, _)| err),
            r => r.map_err(|(err, _)| err),
        }
    }

    /// [`read_span`](Self::read_span) without the second read; a failure comes with the
    /// file range read.
    #[allow(clippy::type_complexity)]
    fn read_span_once(
        &self,
        tree: &crate::integrity::tree::CheckedTree,
        groups: Range<u64>,
        span: Range<u64>,
    ) -> std::result::Result<(PooledBuf, Vec<Range<usize>>), (Error, Range<u64>)> {
        let shape = tree.shape();
        let blocks = &self.tracks[0].blocks;
        let so = |n: u64| -> (u64, BlockEntry) {
            let e = blocks.get(n).expect("n < count");
            (stored_offset(e.chunk_offset, n), e)
        };
        // The first block holding span.start, the last holding span.end - 1.
        let first_ending_after = |x: u64| {
            let (mut lo, mut hi) = (0, blocks.len());
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let (o, e) = so(mid);
                if o + e.stored_len > x {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo
        };
        let k = first_ending_after(span.start);
        let m = first_ending_after(span.end - 1);
        let (ok_, ek) = so(k);
        let (om, em) = so(m);
        let file_start = ek.data_offset + (span.start - ok_);
        let file_end = em.data_offset + (span.end - om);
        // The stream bytes start on a page boundary of the buffer: a reply to a
        // page-aligned read (the kernel's page cache asks for those) is then copied
        // page to page into the kernel's pages, the copy that measured fastest.
        let raw = read_pooled(
            &*self.src,
            file_start,
            file_end - file_start,
            &format!("hash groups {}..{}", groups.start, groups.end),
            Some(0),
        )
        .map_err(|e| (e, file_start..file_end))?;
        let mut pieces = Vec::with_capacity((m - k + 1) as usize);
        for n in k..=m {
            let (o, e) = so(n);
            if n > k {
                let at = (e.chunk_offset - file_start) as usize;
                check_core_header(&e, &raw[at..at + 12])
                    .map_err(|err| (err, file_start..file_end))?;
            }
            let from = o.max(span.start);
            let to = (o + e.stored_len).min(span.end);
            if from < to {
                let at = (e.data_offset + (from - o) - file_start) as usize;
                pieces.push(at..at + (to - from) as usize);
            }
        }
        let slices: Vec<&[u8]> = pieces.iter().map(|p| &raw[p.clone()]).collect();
        if let Err(err) = tree.verify_parts_here(span.start, &slices) {
            let bad_at = err
                .bad_groups()
                .first()
                .map_or(span.start, |g| g.start << shape.group_log());
            let n = first_ending_after(bad_at.max(span.start)).min(m);
            let e = so(n).1;
            return Err((
                Error::Block {
                    block: e.number,
                    offset: e.chunk_offset,
                    msg: format!("stored bytes do not match the container's hash tree: {err}"),
                },
                file_start..file_end,
            ));
        }
        Ok((raw, pieces))
    }

    /// Whether the decoded stream of `track` is the stored stream the v2 tree covers,
    /// byte for byte: a v2 container, not encrypted, with the identity engine and one
    /// track whose blocks decode to their stored length at their stored offset. Then
    /// stream bytes `A..B` are verified by the hash groups overlapping `A..B` alone
    /// ([`read_stream_groups`](Self::read_stream_groups)), without reading whole blocks.
    /// Walks the block table once (the caller keeps the answer).
    pub fn stream_is_stored(&self, track: usize) -> bool {
        let Some(tree) = &self.tree else { return false };
        if track != 0
            || self.tracks.len() != 1
            || self.encryption.is_some()
            || self.engine != crate::engine::EngineChoice::Known(crate::engine::Engine::Identity)
        {
            return false;
        }
        let t = &self.tracks[0];
        let mut at = 0;
        for n in 0..t.blocks.len() {
            let Some(e) = t.blocks.get(n) else {
                return false;
            };
            if e.stored_len != e.decoded_len
                || e.stream_offset != at
                || stored_offset(e.chunk_offset, n) != at
                || !matches!(e.check, BlockCheck::Sha256(_))
            {
                return false;
            }
            at += e.stored_len;
        }
        at == tree.shape().stream_len()
    }

    /// For a container whose [stream is stored](Self::stream_is_stored): the stream
    /// bytes of hash groups `groups` (the last one may be short), read in one `pread`
    /// and verified against the tree as [`read_stored_groups`](Self::read_stored_groups)
    /// does, one [`VerifiedBlock`] per group. Groups are hashed on the calling thread
    /// (the mount's readers and prefetch threads run side by side already), into a
    /// recycled read buffer (`reader::io::read_pooled`).
    pub fn read_stream_groups(&self, groups: Range<u64>) -> Result<Vec<VerifiedBlock>> {
        let Some(tree) = &self.tree else {
            return Err(Error::BadInput(format!(
                "{} has no hash tree (not an h4fs v2 container)",
                self.name()
            )));
        };
        let shape = tree.shape();
        if groups.start > groups.end || groups.end > shape.group_count() {
            return Err(Error::BadInput(format!(
                "hash groups {}..{} lie outside the {} groups of the stream",
                groups.start,
                groups.end,
                shape.group_count()
            )));
        }
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let lo = shape.group_bytes(groups.start).start;
        let hi = shape.group_bytes(groups.end - 1).end;
        let (raw, pieces) = self.read_span(tree, groups.clone(), lo..hi)?;
        // Each group is a view of the bytes read where it lies within one block's stored
        // bytes (no copy); only a group that straddles two blocks is copied together.
        let raw = Arc::new(raw);
        let group_len = shape.group_len() as usize;
        let mut left = (hi - lo) as usize;
        let mut pieces = pieces.into_iter();
        let mut cur = pieces.next().unwrap_or(0..0);
        let mut out = Vec::with_capacity((groups.end - groups.start) as usize);
        while left > 0 {
            let need = group_len.min(left);
            if cur.len() >= need {
                out.push(VerifiedBlock::view_checked(
                    &raw,
                    cur.start..cur.start + need,
                ));
                cur.start += need;
            } else {
                let mut joined = Vec::with_capacity(need);
                while joined.len() < need {
                    if cur.is_empty() {
                        cur = pieces.next().expect("the pieces hold every group");
                    }
                    let take = cur.len().min(need - joined.len());
                    joined.extend_from_slice(&raw[cur.start..cur.start + take]);
                    cur.start += take;
                }
                out.push(VerifiedBlock::new_checked(joined));
            }
            if cur.is_empty()
                && let Some(next) = pieces.next()
            {
                cur = next;
            }
            left -= need;
        }
        Ok(out)
    }

    /// v2: the stored bytes of `e`, verified by the hash groups they lie in.
    fn read_stored_v2(&self, e: &BlockEntry) -> Result<Vec<u8>> {
        let s = stored_offset(e.chunk_offset, e.number);
        let r = s..s + e.stored_len;
        let g = self
            .read_stored_groups(r.clone())
            .map_err(|err| match err {
                // Name this block, even when the first bad group lies in a neighbour.
                Error::Block { msg, .. } => Error::Block {
                    block: e.number,
                    offset: e.chunk_offset,
                    msg,
                },
                other => other,
            })?;
        Ok(g.slice(r).to_vec())
    }

    /// Whether blocks are verified by the v2 tree (and `e` is one of its blocks).
    fn by_groups(&self, e: &BlockEntry) -> bool {
        self.tree.is_some() && matches!(e.check, BlockCheck::Sha256(_)) && e.track == 0
    }

    /// The stored bytes of block `n` of `track`, checked against its hash or CRC.
    pub fn read_stored(&self, track: usize, n: u64) -> Result<Vec<u8>> {
        let e = self.entry(track, n)?;
        self.read_stored_entry(&e)
    }

    /// Stored bytes of `e`, checked against its hash or CRC (never decrypted or decoded).
    pub fn read_stored_entry(&self, e: &BlockEntry) -> Result<Vec<u8>> {
        if self.by_groups(e) {
            return self.read_stored_v2(e);
        }
        self.reread_on_damage(e, || {
            let p = self.read_parts(e)?;
            check_parts(e, &p.head, &p.stored, None)?;
            Ok(p.stored)
        })
    }

    /// A block's decoded bytes, verified.
    pub fn read_block(&self, track: usize, n: u64) -> Result<VerifiedBlock> {
        let e = self.entry(track, n)?;
        self.read_block_entry(&e)
    }

    /// Decoded bytes of `e`, verified.
    pub fn read_block_entry(&self, e: &BlockEntry) -> Result<VerifiedBlock> {
        self.check_decodable(e)?;
        if self.by_groups(e) {
            let stored = self.read_stored_v2(e)?;
            return self.decode(e, stored);
        }
        self.reread_on_damage(e, || self.check_and_decode(e, self.read_parts(e)?, None))
    }

    /// `read` (which reads block `e` and checks it) and, when its bytes fail and the
    /// source dropped a copy it kept of them
    /// ([`ReadAt::invalidate`](crate::source::ReadAt::invalidate)), once more.
    fn reread_on_damage<T>(&self, e: &BlockEntry, read: impl Fn() -> Result<T>) -> Result<T> {
        match read() {
            Err(err) if err.is_integrity() && self.src.invalidate(block_bytes(e)) => read(),
            r => r,
        }
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
                && !self.by_groups(e)
                && !self.authenticates_blocks()
                && self.check_decodable(e).is_ok()
        };
        if !(hashed(a) && hashed(b)) {
            return [self.read_block_entry(a), self.read_block_entry(b)];
        }
        let [ra, rb] = match (self.read_parts(a), self.read_parts(b)) {
            (Ok(pa), Ok(pb)) => {
                let (ha, hb) = integrity::sha256_pair(&pa.stored, &pb.stored);
                [
                    self.check_and_decode(a, pa, Some(ha)),
                    self.check_and_decode(b, pb, Some(hb)),
                ]
            }
            (ra, rb) => [
                ra.and_then(|p| self.check_and_decode(a, p, None)),
                rb.and_then(|p| self.check_and_decode(b, p, None)),
            ],
        };
        // Bytes that failed are read once more when the source dropped a copy of them.
        let again = |e: &BlockEntry, r: Result<VerifiedBlock>| match r {
            Err(err) if err.is_integrity() && self.src.invalidate(block_bytes(e)) => {
                self.check_and_decode(e, self.read_parts(e)?, None)
            }
            r => r,
        };
        [again(a, ra), again(b, rb)]
    }

    /// True when [`read_block_entry_pair`](Self::read_block_entry_pair) gains anything:
    /// plain h4fs blocks, checked by SHA-256 (encrypted blocks are authenticated by
    /// AES-GCM instead, reference blocks by CRC-32).
    pub fn hashes_blocks_in_pairs(&self) -> bool {
        self.layout == super::Layout::H4fs && self.encryption.is_none() && self.tree.is_none()
    }

    /// Check and decode the bytes of `e` that the caller read itself, from its chunk
    /// header to the end of its stored bytes (`data_offset + stored_len - chunk_offset`
    /// bytes): the same check and decode as [`read_block_entry`](Self::read_block_entry),
    /// except that the stored bytes are always hashed (or CRC-checked), with the key
    /// attached too.
    pub fn check_stored(&self, e: &BlockEntry, raw: &[u8]) -> Result<VerifiedBlock> {
        check_block_bytes(e, raw)?;
        let skip = (e.data_offset - e.chunk_offset) as usize;
        self.decode(e, raw[skip..].to_vec())
    }

    /// The one check before decoding: with an h4fs key attached, AES-GCM authenticates
    /// the block (its bytes, position and index entry) more strongly than its unkeyed
    /// SHA-256, so only the chunk header is checked here and the hash is skipped;
    /// otherwise the stored bytes are checked against their hash (`computed` when the
    /// caller already hashed them) or CRC.
    fn check_and_decode(
        &self,
        e: &BlockEntry,
        p: StoredParts,
        computed: Option<[u8; 32]>,
    ) -> Result<VerifiedBlock> {
        if self.authenticates_blocks() {
            check_core_header(e, &p.head)?;
        } else {
            check_parts(e, &p.head, &p.stored, computed)?;
        }
        self.decode(e, p.stored)
    }

    /// True when an h4fs key is attached: AES-GCM then authenticates every block.
    fn authenticates_blocks(&self) -> bool {
        matches!(self.decryptor, Some(Decryptor::H4fs(_)))
    }

    /// A block's chunk header bytes and stored bytes, unchecked. Small blocks take one
    /// read and a short move; large ones two reads, so the payload lands in a buffer of
    /// its own without a megabyte-sized copy.
    fn read_parts(&self, e: &BlockEntry) -> Result<StoredParts> {
        let what = format!("block {}", e.number);
        let head_len = e.data_offset - e.chunk_offset;
        if e.stored_len < 1 << 16 {
            let mut stored = read_vec(&*self.src, e.chunk_offset, head_len + e.stored_len, &what)?;
            let head = stored.drain(..head_len as usize).collect();
            return Ok(StoredParts { head, stored });
        }
        let head = read_vec(&*self.src, e.chunk_offset, head_len, &what)?;
        // From the pool that the buffers of dropped blocks go back to (a v1 block's
        // stored bytes are its verified bytes for the identity engine).
        let stored = read_pooled(&*self.src, e.data_offset, e.stored_len, &what, None)?.into_vec();
        Ok(StoredParts { head, stored })
    }

    /// An error when blocks cannot be decoded at all: encrypted without the key, or an
    /// unknown engine. Checked before reading, so nothing is read in vain.
    fn check_decodable(&self, e: &BlockEntry) -> Result<()> {
        if let (Some(enc), None) = (&self.encryption, &self.decryptor) {
            return Err(Error::Encrypted {
                cipher: enc.cipher.clone(),
                what: format!("decoding block {}", e.number),
            });
        }
        self.engine.known().map(|_| ())
    }

    /// Decrypt (when encrypted) and decode the stored bytes of `e`, which the caller
    /// checked (private: this is what turns checked bytes into a [`VerifiedBlock`]).
    fn decode(&self, e: &BlockEntry, stored: Vec<u8>) -> Result<VerifiedBlock> {
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
}

/// The file bytes of block `e`: its chunk header and stored bytes.
fn block_bytes(e: &BlockEntry) -> Range<u64> {
    e.chunk_offset..e.data_offset + e.stored_len
}

/// Check a block's bytes, read from its chunk header to the end of its stored bytes
/// (`data_offset + stored_len - chunk_offset` bytes), against its entry, without
/// decoding them.
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
    check_parts(e, &raw[..skip], &raw[skip..], None)
}

/// Check that an h4fs index entry points at a CORE chunk of its recorded length.
/// `head` is the 12-byte chunk header as read (or more: the rest is ignored).
pub fn check_core_header(e: &BlockEntry, head: &[u8]) -> Result<()> {
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
/// its stored bytes, with the SHA-256 of `payload` already `computed` (or `None` to
/// compute it here when the entry needs it).
fn check_parts(
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
