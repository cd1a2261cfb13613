//! Bounded reads from the source: every read is checked against the file length known
//! at open, and a file that shrank since is a [`Error::Truncated`], never a short buffer.

use super::JsonChunk;
use crate::error::{Error, Result, Tag};
use crate::format::h4fs as hf;
use crate::format::layout_a::{self as la, ChunkHeader};
use crate::integrity;
use crate::source::ReadAt;
use rayon::prelude::*;

pub(crate) fn read_vec(src: &dyn ReadAt, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    within(src, offset, len, what)?;
    let mut v = vec![0u8; len as usize];
    read_into(src, &mut v, offset, what)?;
    Ok(v)
}

/// [`read_vec`] into a buffer the caller keeps between reads (resized to `len`): a
/// large buffer reused is neither zeroed nor faulted in again for every read.
pub(crate) fn read_vec_reusing<'b>(
    src: &dyn ReadAt,
    offset: u64,
    len: u64,
    what: &str,
    buf: &'b mut Vec<u8>,
) -> Result<&'b [u8]> {
    within(src, offset, len, what)?;
    buf.resize(len as usize, 0);
    read_into(src, buf, offset, what)?;
    Ok(buf)
}

/// [`read_vec`] into a buffer from a small pool of recycled read buffers: a
/// sequential reader's next run is read into memory that is neither zeroed again nor
/// faulted in again (both showed in profiles of the mount's first read, about a tenth
/// of the daemon's time). The buffer goes back to the pool when dropped. With a
/// `phase` (`< PAGE`), the first byte sits at that offset within a memory page: the
/// CPU copies fastest between addresses aligned alike, so the caller picks which later
/// copy of these bytes gets matching alignment.
pub(crate) fn read_pooled(
    src: &dyn ReadAt,
    offset: u64,
    len: u64,
    what: &str,
    phase: Option<usize>,
) -> Result<PooledBuf> {
    within(src, offset, len, what)?;
    let mut buf = PooledBuf::take(len as usize, phase);
    read_into(src, &mut buf, offset, what)?;
    Ok(buf)
}

/// The size of a memory page, as far as copy alignment goes.
pub(crate) const PAGE: usize = 4096;

/// Bytes whose allocation goes back to the read-buffer pool when dropped (when its
/// size is one the pool keeps): `len` bytes from `start` of the allocation.
#[derive(Default)]
pub struct PooledBuf {
    v: Vec<u8>,
    start: usize,
    len: usize,
}

impl PooledBuf {
    /// Wrap bytes; their allocation joins the pool when these are dropped.
    pub(crate) fn new(v: Vec<u8>) -> PooledBuf {
        let len = v.len();
        PooledBuf { v, start: 0, len }
    }

    /// `len` bytes (contents unspecified) from the pool, the first at `phase` within a
    /// page when given.
    fn take(len: usize, phase: Option<usize>) -> PooledBuf {
        let slack = if phase.is_some() { PAGE - 1 } else { 0 };
        let v = pool::take(len + slack);
        let start = phase.map_or(0, |p| p.wrapping_sub(v.as_ptr() as usize) % PAGE);
        PooledBuf { v, start, len }
    }

    /// The bytes as a `Vec` (taken out of the pool's reach).
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.v);
        if self.start > 0 {
            v.copy_within(self.start..self.start + self.len, 0);
        }
        v.truncate(self.len);
        v
    }
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.v[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.start..self.start + self.len]
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.v));
    }
}

/// The read-buffer pool: allocations of [`pool::MIN`]..=[`pool::MAX`] bytes, at most
/// [`pool::IDLE_BYTES`] of them held idle.
mod pool {
    use std::sync::Mutex;

    pub const IDLE_BYTES: usize = 32 << 20;
    pub const MIN: usize = 256 << 10;
    pub const MAX: usize = 8 << 20;

    /// Idle allocations, the most recently given last, and their bytes.
    pub struct Pool(Mutex<(Vec<Vec<u8>>, usize)>);

    /// The process's pool.
    pub static POOL: Pool = Pool(Mutex::new((Vec::new(), 0)));

    pub fn take(len: usize) -> Vec<u8> {
        POOL.take(len)
    }

    pub fn give(v: Vec<u8>) {
        POOL.give(v)
    }

    impl Pool {
        #[cfg(test)]
        pub const fn new() -> Pool {
            Pool(Mutex::new((Vec::new(), 0)))
        }

        /// Allocations held idle.
        #[cfg(test)]
        pub fn idle(&self) -> usize {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).0.len()
        }

        /// `len` initialized bytes (their contents unspecified: the caller overwrites
        /// them), from the pool when it holds an allocation of `len` to `2 * len` bytes
        /// (the most recently given first: its pages are the likeliest in the cache).
        pub fn take(&self, len: usize) -> Vec<u8> {
            if (MIN..=MAX).contains(&len) {
                let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(i) =
                    p.0.iter()
                        .rposition(|v| (len..=2 * len).contains(&v.capacity()))
                {
                    let mut v = p.0.swap_remove(i);
                    p.1 -= v.capacity();
                    drop(p);
                    // Only bytes past the length it had are zeroed.
                    v.resize(len, 0);
                    return v;
                }
            }
            vec![0u8; len]
        }

        /// Keep `v`'s allocation for a later [`Pool::take`], if it has room for it.
        pub fn give(&self, v: Vec<u8>) {
            if (MIN..=MAX).contains(&v.capacity()) {
                let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
                if p.1 + v.capacity() <= IDLE_BYTES {
                    p.1 += v.capacity();
                    p.0.push(v);
                }
            }
        }
    }
}

/// `len` bytes at `offset` lie inside the source, else the error naming `what`.
fn within(src: &dyn ReadAt, offset: u64, len: u64, what: &str) -> Result<()> {
    let file_len = src.len();
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(Error::Truncated {
            what: what.to_string(),
            offset,
            need: len,
            file_len,
        });
    }
    Ok(())
}

/// Fill `buf` from `offset` (already bounds-checked against the length at open).
pub(super) fn read_into(src: &dyn ReadAt, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
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
pub(super) fn huge_page_buffer(len: usize) -> Vec<u8> {
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
pub(super) fn read_index_chunk(
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

pub(super) fn read_array<const N: usize>(
    src: &dyn ReadAt,
    offset: u64,
    what: &str,
) -> Result<[u8; N]> {
    let v = read_vec(src, offset, N as u64, what)?;
    Ok(v.try_into().expect("N bytes"))
}

/// Read the header of a layout-A chunk at `offset` that must carry `tag` and whose
/// payload must end by `end`; returns the header and the payload's offset.
pub(super) fn read_chunk_header_a(
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
pub(super) fn read_chunk_a(
    src: &dyn ReadAt,
    offset: u64,
    tag: Tag,
    end: u64,
    crc: bool,
) -> Result<Vec<u8>> {
    let (h, payload_at) = read_chunk_header_a(src, offset, tag, end)?;
    let payload = read_vec(src, payload_at, h.len as u64, &format!("{tag} payload"))?;
    if crc {
        la::check_crc(&h, offset, &payload)?;
    }
    Ok(payload)
}

pub(super) fn json_chunk(tag: Tag, offset: u64, raw: Vec<u8>) -> Result<JsonChunk> {
    let value = la::parse_json(tag, offset, &raw)?;
    Ok(JsonChunk { offset, raw, value })
}

#[cfg(test)]
mod pool_tests {
    use super::pool::{IDLE_BYTES, MAX, MIN, Pool};
    use super::*;

    /// An allocation given back is taken again for a read of its size or up to half
    /// of it (not zeroed, not faulted in again); other sizes are never kept, nor more
    /// than [`IDLE_BYTES`] in all.
    #[test]
    fn the_pool_keeps_bounded_allocations_and_reuses_them() {
        let pool = Pool::new();
        let a = pool.take(MIN);
        assert_eq!(a.len(), MIN);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(MIN / 2 + MIN / 4);
        assert_eq!(b.len(), MIN / 2 + MIN / 4);
        assert!(b.iter().all(|&x| x == 0));
        assert_ne!(b.as_ptr(), ptr, "below MIN: a new allocation");
        let c = pool.take(MIN);
        assert_eq!(c.as_ptr(), ptr, "the allocation was reused");
        pool.give(c);
        // Too large for a read of a quarter of it.
        let big = pool.take(MIN * 4 + 1);
        assert_ne!(big.as_ptr(), ptr);
        drop(big);
        pool.give(vec![0u8; MAX + 1]);
        pool.give(vec![0u8; 10]);
        let most = IDLE_BYTES / MIN;
        for _ in 0..most + 3 {
            pool.give(vec![0u8; MIN]);
        }
        assert_eq!(pool.idle(), most, "allocations up to IDLE_BYTES are kept");
        for _ in 0..most {
            assert_eq!(pool.take(MIN).capacity(), MIN);
        }
        assert_eq!(pool.idle(), 0);
    }

    /// A pooled read returns the source's bytes whatever the recycled buffer held.
    #[test]
    fn pooled_reads_return_the_sources_bytes() {
        const LEN: usize = MIN + 12_345;
        let src: Vec<u8> = (0..LEN * 2).map(|i| (i % 251) as u8).collect();
        for at in [0, 7, LEN as u64 - 1] {
            let b = read_pooled(&src, at, LEN as u64, "test", None).unwrap();
            assert_eq!(&b[..], &src[at as usize..at as usize + LEN]);
        }
        assert!(read_pooled(&src, LEN as u64 * 2 - 1, 2, "test", None).is_err());
        assert_eq!(
            read_pooled(&src, 3, 100, "test", None).unwrap().into_vec(),
            &src[3..103]
        );
    }

    /// A phased read puts its first byte at the asked place within a page, for any
    /// recycled buffer, and its bytes come out whole as a `Vec`.
    #[test]
    fn phased_reads_start_where_asked_within_a_page() {
        const LEN: usize = MIN + 999;
        let src: Vec<u8> = (0..LEN * 2).map(|i| (i % 253) as u8).collect();
        for phase in [0, 1, 16, PAGE - 1] {
            for at in [0u64, 5, 4095] {
                let b = read_pooled(&src, at, LEN as u64, "test", Some(phase)).unwrap();
                assert_eq!(b.as_ptr() as usize % PAGE, phase, "phase {phase} at {at}");
                assert_eq!(&b[..], &src[at as usize..at as usize + LEN]);
                assert_eq!(b.into_vec(), &src[at as usize..at as usize + LEN]);
            }
        }
        assert!(read_pooled(&src, LEN as u64 * 2 - 1, 2, "test", Some(0)).is_err());
    }
}
