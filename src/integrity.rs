//! Hashes that protect a container: the reference's VERI, h4fs's structure root
//! and per-block SHA-256. (The reader's read path checks blocks against them and is the
//! only builder of [`crate::reader::VerifiedBlock`].)
//!
//! Hash tree (h4fs containers):
//!
//! ```text
//! root         = SHA256("h4fs-root-v1\0" | footer[0..64] | H(SEEK) | H(META) | H(SAFE)
//!                       | H(HENC or empty) | index_digest)
//! index_digest = SHA256("h4fs-index-v1\0" | index header (16 bytes)
//!                       | H(page 0) | H(page 1) | ...)      page = 1024 entries
//! entry.sha256 = SHA256(CORE payload of that block)
//! ```
//!
//! The labels are their ASCII bytes followed by one zero byte. H(HENC) is SHA-256 of the
//! empty string when there is no HENC chunk; with zero blocks there are no pages.
//! `docs/FORMAT.md` §3.4 gives a worked example; `docs/SECURITY.md` what each hash
//! detects and what none can (a whole-file rewrite: pin the root).
//!
//! [`tree`] is the BLAKE3 hash tree of the v2 layout (hash groups of `2^k` bytes of the
//! stored stream); its root is bound by [`root_hash_v2`].
//!
//! Opening hashes the index (pages in parallel) and the JSON chunks: time proportional
//! to the index. A block is verified against its own entry when read, without hashing
//! anything else.

pub mod lanes;
pub mod tree;

use crate::format::h4fs::{ENTRY_LEN, FOOTER_PREFIX_LEN, INDEX_HEADER_LEN, PAGE_ENTRIES};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of `a` and of `b`, computed in lockstep on one core where the CPU allows
/// (see [`lanes`]): about 1.25 times the speed of two [`sha256`] calls.
pub fn sha256_pair(a: &[u8], b: &[u8]) -> ([u8; 32], [u8; 32]) {
    let (mut ha, mut hb) = (lanes::Sha256::new(), lanes::Sha256::new());
    lanes::update2(&mut ha, a, &mut hb, b);
    (ha.finalize(), hb.finalize())
}

/// Digest of an HIDX payload (header + entries), hashing pages in parallel.
pub fn index_digest(index_payload: &[u8]) -> [u8; 32] {
    let (head, entries) = index_payload.split_at(INDEX_HEADER_LEN.min(index_payload.len()));
    let pages: Vec<[u8; 32]> = entries
        .par_chunks(PAGE_ENTRIES * ENTRY_LEN)
        .map(sha256)
        .collect();
    index_digest_from_pages(head, &pages)
}

/// The index digest from the index header and the SHA-256 of each page, in order: for
/// callers that hash pages as they read them.
pub fn index_digest_from_pages(head: &[u8], pages: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"h4fs-index-v1\0");
    h.update(head);
    for p in pages {
        h.update(p);
    }
    h.finalize().into()
}

/// The structure root recorded in the footer.
pub fn root_hash(
    footer_prefix: &[u8; FOOTER_PREFIX_LEN],
    seek: &[u8],
    meta: &[u8],
    safe: &[u8],
    henc: &[u8],
    index_digest: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"h4fs-root-v1\0");
    h.update(footer_prefix);
    for part in [seek, meta, safe, henc] {
        h.update(sha256(part));
    }
    h.update(index_digest);
    h.finalize().into()
}

/// The structure root of a v2 container (footer version 2): as [`root_hash`] with the
/// label `h4fs-root-v2\0` and, after H(HENC or empty), the SHA-256 of the 56-byte HB3T
/// header, which records the BLAKE3 root of the stored stream. The nodes are not
/// hashed here: each is checked against that BLAKE3 root on the way down.
pub fn root_hash_v2(
    footer_prefix: &[u8; FOOTER_PREFIX_LEN],
    seek: &[u8],
    meta: &[u8],
    safe: &[u8],
    henc: &[u8],
    outboard_header: &[u8; crate::format::outboard::HEADER_LEN],
    index_digest: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"h4fs-root-v2\0");
    h.update(footer_prefix);
    for part in [seek, meta, safe, henc, &outboard_header[..]] {
        h.update(sha256(part));
    }
    h.update(index_digest);
    h.finalize().into()
}

/// Streaming computation of the reference's VERI: SHA-256 of every chunk before VERI.
#[derive(Default, Clone)]
pub struct VeriHasher(lanes::Sha256);

impl VeriHasher {
    /// A hasher with nothing hashed yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Hash the next bytes of the file (chunk headers and payloads, in file order).
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// Hash the next bytes of the file and, in lockstep, `other_bytes` into `other`
    /// (see [`lanes`]): the packer hashes each block this way as it adds it to VERI.
    pub fn update2(&mut self, bytes: &[u8], other: &mut lanes::Sha256, other_bytes: &[u8]) {
        lanes::update2(&mut self.0, bytes, other, other_bytes);
    }
    /// The VERI value of everything hashed.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_digest_depends_on_every_page() {
        let mut p = vec![0u8; INDEX_HEADER_LEN + 3 * PAGE_ENTRIES * ENTRY_LEN];
        let d0 = index_digest(&p);
        let last = p.len() - 1;
        p[last] ^= 1;
        assert_ne!(index_digest(&p), d0);
        p[last] ^= 1;
        p[3] ^= 1;
        assert_ne!(index_digest(&p), d0);
    }
}
