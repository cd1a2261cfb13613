//! Whole-container verification: every block against its hash or CRC, on all cores,
//! and the reference VERI over the whole file (always for reference files, on request
//! for h4fs containers).
//!
//! "ok" means the reference's parser reads the file too: for layout A, verify checks
//! everything that parser checks (magic, version, every chunk's bounds and CRC, CORE
//! chunks included) and also the reserved header bytes 6-7 and, for h4fs containers,
//! that the chunks tile the file from offset 8 to its end, so the parser's walk meets
//! exactly the chunks h4fs wrote.
//!
//! Blocks are read in spans of adjacent chunks (up to 16 MiB) so a container of many
//! small blocks costs few reads; each span is checked on a rayon worker. In a v2
//! container each span's hash groups are checked against the BLAKE3 tree in the same
//! pass (the groups it holds only in part once, at the end), and the per-block SHA-256
//! only with `full`.

use crate::engine::EngineChoice;
use crate::error::{Error, Result, Tag};
use crate::format::h4fs::stored_offset;
use crate::reader::{
    Archive, BlockCheck, BlockEntry, Layout, check_block_bytes, check_core_header, read_vec,
    read_vec_reusing,
};
use rayon::prelude::*;

const SPAN_BYTES: u64 = 16 << 20;
const SPAN_BLOCKS: usize = 4096;

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    /// Every failure, in block order (VERI and index last).
    pub failures: Vec<Error>,
    /// Whether the whole-file VERI was checked (and so passed unless in `failures`).
    pub veri_checked: bool,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Whether [`verify`] hashes the whole file for VERI: with `full` for h4fs containers
/// (whose blocks and structure have hashes of their own), always for reference layout-A
/// files (nothing else protects them), never for layout C (no VERI; its file CRC is
/// checked at open).
pub fn checks_veri(a: &Archive, full: bool) -> bool {
    a.needs_veri() || (full && a.layout == Layout::H4fs)
}

/// Verify every block, the layout-A header and, for h4fs containers, the index CRC and
/// the chunk walk; the whole-file VERI as [`checks_veri`] says. `progress` receives byte
/// counts as they are checked.
pub fn verify(a: &Archive, full: bool, progress: &(dyn Fn(u64) + Sync)) -> Report {
    let veri = checks_veri(a, full);
    // v2: the BLAKE3 tree vouches for every stored byte, so the per-block SHA-256 in the
    // index is checked only with `full`.
    let sha = a.tree().is_none() || full;
    let (mut report, extra) = rayon::join(
        || verify_blocks(a, sha, progress),
        || {
            let mut extra = Vec::new();
            if a.layout != Layout::MultitrackC {
                extra.extend(check_reserved_header(a).err());
            }
            if a.layout == Layout::H4fs {
                extra.extend(check_index_crc(a).err());
                extra.extend(check_chunk_walk(a).err());
            }
            if veri {
                extra.extend(a.check_veri(progress).err());
            }
            extra
        },
    );
    report.veri_checked = veri;
    report.failures.extend(extra);
    report
}

/// Layout A header bytes 6-7 are reserved and written as zero (by h4fs and by the
/// reference). Nothing reads them and VERI does not cover them, so this is their check.
fn check_reserved_header(a: &Archive) -> Result<()> {
    let head = read_vec(a.source(), 0, 8, "H4MK header")?;
    if head[6..8] != [0, 0] {
        return Err(Error::Chunk {
            tag: Tag(*b"H4MK"),
            offset: 6,
            msg: format!(
                "header bytes 6-7 (reserved) are {:02x} {:02x}, expected 00 00: the header \
                 was damaged",
                head[6], head[7]
            ),
        });
    }
    Ok(())
}

/// An h4fs container's chunks, walked as the reference's parser walks them (each chunk
/// header's length leads to the next), must be exactly its blocks and then the chunks
/// the footer names, with no bytes between them and none after VERI. The CORE chunk
/// headers themselves are checked with each block; gaps are what this adds.
fn check_chunk_walk(a: &Archive) -> Result<()> {
    let mut pos = crate::format::layout_a::HEADER_LEN as u64;
    // `tag` at `next` is where the walk should have arrived from `pos`.
    let gap = |pos: u64, next: u64, tag: Tag, what: String| Error::Chunk {
        tag,
        offset: next,
        msg: format!(
            "the chunk before it ends at {pos}; the {} bytes between belong to no chunk \
             this container lists ({what} should follow at once: h4fs writes its chunks \
             back to back, and the reference's parser reads whatever lies there as chunks)",
            next - pos
        ),
    };
    for t in &a.tracks {
        for n in 0..t.blocks.len() {
            let e = t.blocks.get(n).expect("n < len");
            if e.chunk_offset != pos {
                return Err(gap(pos, e.chunk_offset, Tag::CORE, format!("block {n}")));
            }
            pos = e.data_offset + e.stored_len;
        }
    }
    for c in &a.chunks {
        if c.offset != pos {
            return Err(gap(pos, c.offset, c.tag, format!("chunk {}", c.tag)));
        }
        pos = c.offset + c.total_len;
    }
    if pos != a.file_len {
        return Err(Error::Chunk {
            tag: Tag::VERI,
            offset: a.veri.map_or(pos, |v| v.offset),
            msg: format!(
                "{} bytes follow this last chunk, up to the end of the file at {}",
                a.file_len - pos,
                a.file_len
            ),
        });
    }
    Ok(())
}

fn check_index_crc(a: &Archive) -> Result<()> {
    if a.layout != Layout::H4fs {
        return Ok(());
    }
    let Some((_, f)) = a.footer else {
        return Ok(());
    };
    let hb = read_vec(a.source(), f.index_offset, 12, "HIDX header")?;
    let h = crate::format::layout_a::ChunkHeader::parse(hb[..].try_into().expect("12"));
    let payload = read_vec(
        a.source(),
        f.index_offset + 12,
        h.len as u64,
        "HIDX payload",
    )?;
    crate::format::layout_a::check_crc(&h, f.index_offset, &payload)
}

/// The CRC-32 field of an h4fs block's CORE chunk header, which neither its SHA-256
/// nor the structure root covers, must be the CRC of the payload: the reference's parser
/// checks it. (Reference blocks are checked by exactly this CRC already.)
fn check_core_crc_field(e: &BlockEntry, raw: &[u8], sha: bool) -> Result<()> {
    if !matches!(e.check, BlockCheck::Sha256(_)) {
        return Ok(());
    }
    let skip = (e.data_offset - e.chunk_offset) as usize;
    let stored = u32::from_be_bytes(raw[8..12].try_into().expect("a 12-byte chunk header"));
    let computed = crc32fast::hash(&raw[skip..]);
    if stored != computed {
        return Err(Error::Block {
            block: e.number,
            offset: e.chunk_offset,
            msg: format!(
                "the CORE chunk's CRC-32 field is {stored:08x}, its payload's CRC-32 is \
                 {computed:08x} ({}; the reference's parser refuses the file)",
                if sha {
                    "the payload matches its SHA-256, the header was damaged"
                } else {
                    "the header or the payload was damaged"
                }
            ),
        });
    }
    Ok(())
}

/// v2: the hash groups that the stored bytes of `span` (blocks back to back, read as
/// `buf` from the first block's chunk header) hold whole, against the tree checked at
/// open. Returns the failures (each block sharing a bad group) and the groups at the
/// span's two edges, which it holds only in part: the caller checks those once all
/// spans are done.
fn verify_span_groups(
    a: &Archive,
    span: &[BlockEntry],
    buf: &[u8],
    failures: &mut Vec<Error>,
) -> Vec<u64> {
    let Some(tree) = a.tree() else {
        return Vec::new();
    };
    let start = span[0].chunk_offset;
    let s0 = stored_offset(span[0].chunk_offset, span[0].number);
    // The stored bytes of each block, where they lie in `buf` (between chunk headers):
    // hashed in place, never gathered.
    let stored: Vec<&[u8]> = span
        .iter()
        .map(|e| {
            let lo = (e.data_offset - start) as usize;
            &buf[lo..lo + e.stored_len as usize]
        })
        .collect();
    let len: u64 = stored.iter().map(|p| p.len() as u64).sum();
    let shape = tree.shape();
    let g = shape.group_len();
    let s1 = s0 + len;
    let lo = s0.next_multiple_of(g);
    let hi = if s1 == shape.stream_len() {
        s1
    } else {
        s1 / g * g
    };
    let mut edges = Vec::new();
    if s0 < s1 {
        if s0 % g != 0 || lo > hi {
            edges.push(s0 / g);
        }
        if hi < s1 && lo <= hi {
            edges.push(hi / g);
        }
    }
    if lo < hi
        && let Err(err) = tree.verify_parts(lo, &cut(&stored, lo - s0, hi - s0))
    {
        for r in err.bad_groups() {
            let (bs, be) = (r.start * g, (r.end * g).min(shape.stream_len()));
            for e in span {
                let o = stored_offset(e.chunk_offset, e.number);
                if o < be && o + e.stored_len > bs {
                    failures.extend(a.read_stored_entry(e).err());
                }
            }
        }
    }
    edges
}

/// Bytes `from..to` of `parts` read back to back, as slices of them.
fn cut<'a>(parts: &[&'a [u8]], from: u64, to: u64) -> Vec<&'a [u8]> {
    let mut at = 0u64;
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let (lo, hi) = (at, at + p.len() as u64);
        at = hi;
        let (a, b) = (from.max(lo), to.min(hi));
        if a < b {
            out.push(&p[(a - lo) as usize..(b - lo) as usize]);
        }
    }
    out
}

/// v2: check the edge groups the spans held only in part (each once); a failing group
/// fails every block that shares it.
fn verify_edge_groups(a: &Archive, mut groups: Vec<u64>) -> Vec<Error> {
    let Some(tree) = a.tree() else {
        return Vec::new();
    };
    groups.sort_unstable();
    groups.dedup();
    let g = tree.shape().group_len();
    let bad: Vec<u64> = groups
        .par_iter()
        .copied()
        .filter(|&n| a.read_stored_groups(n * g..n * g + 1).is_err())
        .collect();
    let blocks = &a.tracks[0].blocks;
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for n in bad {
        let (bs, be) = (n * g, (n + 1) * g);
        for b in 0..blocks.len() {
            let e = blocks.get(b).expect("b < len");
            let o = stored_offset(e.chunk_offset, b);
            if o < be && o + e.stored_len > bs && seen.insert(b) {
                failures.extend(a.read_stored_entry(&e).err());
            }
        }
    }
    failures
}

fn verify_blocks(a: &Archive, sha: bool, progress: &(dyn Fn(u64) + Sync)) -> Report {
    let decode_check = match (&a.engine, &a.encryption) {
        (EngineChoice::Known(e), None) if a.sizes_exact => Some(*e),
        _ => None,
    };
    // With the key attached, every block of an encrypted container is authenticated
    // (AES-GCM) and decoded too.
    let decrypt_check =
        a.encryption.is_some() && a.key_attached() && matches!(a.engine, EngineChoice::Known(_));
    let mut spans: Vec<Vec<BlockEntry>> = Vec::new();
    for t in &a.tracks {
        let mut cur: Vec<BlockEntry> = Vec::new();
        let mut cur_bytes = 0;
        for n in 0..t.blocks.len() {
            let e = t.blocks.get(n).expect("n < len");
            let adjacent = cur.last().is_some_and(|p| {
                e.chunk_offset >= p.data_offset + p.stored_len
                    && e.chunk_offset - (p.data_offset + p.stored_len) <= 64
            });
            if !cur.is_empty() && (!adjacent || cur_bytes >= SPAN_BYTES || cur.len() >= SPAN_BLOCKS)
            {
                spans.push(std::mem::take(&mut cur));
                cur_bytes = 0;
            }
            cur_bytes += e.data_offset + e.stored_len - e.chunk_offset;
            cur.push(e);
        }
        if !cur.is_empty() {
            spans.push(cur);
        }
    }
    let results: Vec<(u64, u64, Vec<Error>, Vec<u64>)> = spans
        .par_iter()
        .map(|span| {
            let start = span[0].chunk_offset;
            let last = span[span.len() - 1];
            let end = last.data_offset + last.stored_len;
            let mut failures = Vec::new();
            let check = |e: &BlockEntry, raw: &[u8], failures: &mut Vec<Error>| {
                // With decryption asked for, the block is checked and decrypted in one
                // call of the reader's checked path (its bytes hashed once).
                let checked = match (decrypt_check, sha) {
                    (true, _) => a.check_stored(e, raw).map(drop),
                    (false, true) => check_block_bytes(e, raw),
                    (false, false) => check_core_header(e, raw),
                };
                if let Err(err) = checked {
                    failures.push(err);
                } else if let Err(err) = check_core_crc_field(e, raw, sha) {
                    failures.push(err);
                } else if let Some(engine) = decode_check {
                    let stored = &raw[(e.data_offset - e.chunk_offset) as usize..];
                    match engine.decoded_len(stored) {
                        Ok(n) if n == e.decoded_len => {}
                        Ok(n) => failures.push(Error::Block {
                            block: e.number,
                            offset: e.chunk_offset,
                            msg: format!(
                                "decodes to {n} bytes, the index records {}",
                                e.decoded_len
                            ),
                        }),
                        Err(msg) => failures.push(Error::Block {
                            block: e.number,
                            offset: e.chunk_offset,
                            msg,
                        }),
                    }
                }
            };
            let mut edges = Vec::new();
            // One read buffer per worker thread, kept between spans: a fresh 16 MiB
            // buffer per span would be zeroed (or faulted in) again every time. It is
            // taken out while in use, since hashing may run other spans on this thread
            // (rayon work stealing), which then start with a buffer of their own.
            thread_local! {
                static SPAN: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
            }
            let mut buf = SPAN.take();
            let read =
                read_vec_reusing(a.source(), start, end - start, "blocks", &mut buf).map(|buf| {
                    edges = verify_span_groups(a, span, buf, &mut failures);
                    for e in span {
                        let lo = (e.chunk_offset - start) as usize;
                        let hi = (e.data_offset + e.stored_len - start) as usize;
                        check(e, &buf[lo..hi], &mut failures);
                    }
                });
            SPAN.set(buf);
            match read {
                Ok(()) => {}
                Err(_) => {
                    // Read block by block so each failure names its own block.
                    for e in span {
                        let len = e.data_offset + e.stored_len - e.chunk_offset;
                        match read_vec(
                            a.source(),
                            e.chunk_offset,
                            len,
                            &format!("block {}", e.number),
                        ) {
                            Ok(raw) => {
                                check(e, &raw, &mut failures);
                                if a.tree().is_some() {
                                    failures.extend(a.read_stored_entry(e).err());
                                }
                            }
                            Err(err) => failures.push(err),
                        }
                    }
                }
            }
            progress(end - start);
            (span.len() as u64, end - start, failures, edges)
        })
        .collect();
    let mut report = Report::default();
    let mut edges = Vec::new();
    for (n, bytes, f, e) in results {
        report.blocks_checked += n;
        report.bytes_checked += bytes;
        report.failures.extend(f);
        edges.extend(e);
    }
    report.failures.extend(verify_edge_groups(a, edges));
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::reader::tests::{open, pack_encrypted, pack_h4fs};

    /// Flip one stored byte of block `n`.
    fn damage(bytes: &[u8], n: u64) -> Vec<u8> {
        let e = open(bytes).unwrap().entry(0, n).unwrap();
        let mut bad = bytes.to_vec();
        bad[(e.data_offset + e.stored_len / 2) as usize] ^= 1;
        bad
    }

    #[test]
    fn an_intact_container_verifies_and_a_damaged_block_is_named() {
        let good = pack_h4fs(&[40, 70_000, 0, 9, 300], 2, Engine::GeometricReference);
        let r = verify(&open(&good).unwrap(), true, &|_| {});
        assert!(r.ok() && r.veri_checked, "{:?}", r.failures);
        assert_eq!(r.blocks_checked, 5);
        for n in [0, 1, 4] {
            let bad = damage(&good, n);
            // Without `full`, only the block fails; with it, VERI too.
            let r = verify(&open(&bad).unwrap(), false, &|_| {});
            assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
            assert!(matches!(r.failures[0], Error::BlockHash { block, .. } if block == n));
            let r = verify(&open(&bad).unwrap(), true, &|_| {});
            assert!(matches!(
                r.failures[..],
                [Error::BlockHash { .. }, Error::VeriMismatch { .. }]
            ));
        }
    }

    #[test]
    fn with_the_key_every_block_is_hashed_and_authenticated() {
        let (good, key) = pack_encrypted(5);
        let mut a = open(&good).unwrap();
        a.attach_key(&key).unwrap();
        assert!(verify(&a, false, &|_| {}).ok());
        let mut b = open(&damage(&good, 3)).unwrap();
        b.attach_key(&key).unwrap();
        let r = verify(&b, false, &|_| {});
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert!(matches!(r.failures[0], Error::BlockHash { block: 3, .. }));
    }

    #[test]
    fn a_reference_file_is_checked_by_crc_and_veri() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/seed/a_small10.h4mk");
        let good = std::fs::read(path).unwrap();
        let r = verify(&open(&good).unwrap(), false, &|_| {});
        assert!(r.ok() && r.veri_checked, "{:?}", r.failures);
        let r = verify(&open(&damage(&good, 7)).unwrap(), false, &|_| {});
        assert!(
            matches!(
                r.failures[..],
                [Error::BlockCrc { block: 7, .. }, Error::VeriMismatch { .. }]
            ),
            "{:?}",
            r.failures
        );
    }

    #[test]
    fn v2_groups_at_the_edge_of_a_span_are_checked_once() {
        use crate::writer::{BlockMeta, Format, Writer, default_safe};
        // 5000 blocks of 1..3 bytes: the first span (4096 blocks) ends at stored byte
        // 8191, inside hash group 7 (7168..8192), which the next span finishes.
        let mut w = Writer::new(Vec::new(), Engine::Identity).unwrap();
        w.set_format(Format::V2 { group_log: 10 }).unwrap();
        for i in 0..5000u64 {
            let meta = BlockMeta {
                pts_us: i,
                keyframe: i == 0,
            };
            w.add_block(&vec![i as u8; 1 + (i % 3) as usize], meta)
                .unwrap();
        }
        let good = w.finish(serde_json::Map::new(), &default_safe()).unwrap().0;
        let r = verify(&open(&good).unwrap(), false, &|_| {});
        assert!(r.ok(), "{:?}", r.failures);
        // Stored byte 8000 (group 7) is in block 4000 - 1 + ... : find it.
        let a = open(&good).unwrap();
        let n = (0..5000)
            .find(|&n| {
                let e = a.entry(0, n).unwrap();
                let o = crate::format::h4fs::stored_offset(e.chunk_offset, n);
                o <= 8000 && 8000 < o + e.stored_len
            })
            .unwrap();
        let e = a.entry(0, n).unwrap();
        let mut bad = good.clone();
        let o = crate::format::h4fs::stored_offset(e.chunk_offset, n);
        bad[(e.data_offset + 8000 - o) as usize] ^= 1;
        let b = open(&bad).unwrap();
        let r = verify(&b, false, &|_| {});
        assert!(!r.ok());
        // Exactly the blocks sharing group 7, each once (and the CORE chunk's CRC field
        // of the damaged block no longer matches its payload).
        let want: Vec<u64> = (0..5000)
            .filter(|&n| {
                let e = b.entry(0, n).unwrap();
                let o = crate::format::h4fs::stored_offset(e.chunk_offset, n);
                o < 8192 && o + e.stored_len > 7168
            })
            .collect();
        let mut got = Vec::new();
        for f in &r.failures {
            let m = f.to_string();
            match f {
                Error::Block { block, .. } if m.contains("hash group 7 ") => got.push(*block),
                Error::Block { block, .. } if *block == n && m.contains("CRC-32 field") => {}
                other => panic!("{other}"),
            }
        }
        got.sort_unstable();
        assert_eq!(got, want);
        assert!(b.read_block(0, 0).is_ok() && b.read_block(0, n).is_err());
    }
}
