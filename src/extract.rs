//! Copying decoded stream bytes out of a container, verified, on all cores.
//!
//! Blocks are checked one by one (SHA-256, CRC-32 or AES-GCM, or the BLAKE3 groups of a
//! v2 block) before their bytes are written; a plain v2 container (identity engine) is
//! read by hash groups instead, only those overlapping the range ([`write_stream`]). A reference layout-A file needs more: its blocks carry only CRC-32 and its
//! chunk walk is protected by nothing but the whole-file VERI
//! ([`Archive::needs_veri`]), so [`write_checked_stream`] hashes the file for VERI on a
//! second thread while the blocks are written, and fails when it does not match.
//!
//! Each block is read once, in order, so this goes through the reader's checked path
//! ([`Archive::read_block`]) directly: the block layer ([`crate::blocks`]) loads through
//! the same path, and its cache and prefetch would only cost memory for a single pass.

use crate::error::{Error, Result};
use crate::reader::{Archive, Segment};
use rayon::prelude::*;
use std::io::Write;

const BATCH_BYTES: u64 = 64 << 20;

/// Write stream bytes `[offset, offset + len)` of `track` to `out`, verifying and
/// decoding blocks in parallel batches and writing them in order. Returns the bytes
/// written. Stops at the first bad block, with nothing of it written.
pub fn write_stream(
    a: &Archive,
    track: usize,
    offset: u64,
    len: u64,
    out: &mut dyn Write,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    if a.stream_is_stored(track) {
        return write_groups(a, offset, len, out, progress);
    }
    let t = &a.tracks[track];
    let mut segs = t.segments(offset, len).peekable();
    let mut written = 0;
    while segs.peek().is_some() {
        let mut batch: Vec<Segment> = Vec::new();
        let mut bytes = 0;
        while let Some(s) = segs.peek() {
            if !batch.is_empty() && bytes + s.len > BATCH_BYTES {
                break;
            }
            bytes += s.len;
            batch.push(segs.next().expect("peeked"));
        }
        // One hint for the batch: a remote source fetches its blocks in a few large
        // coalesced requests instead of one (or two) per block.
        let ranges: Vec<(u64, u64)> = batch
            .iter()
            .filter_map(|s| t.blocks.get(s.block))
            .map(|e| {
                (
                    e.chunk_offset,
                    e.data_offset + e.stored_len - e.chunk_offset,
                )
            })
            .collect();
        a.source().will_read(&ranges);
        let blocks: Vec<Result<_>> = batch
            .par_iter()
            .map(|s| a.read_block(track, s.block))
            .collect();
        for (s, b) in batch.iter().zip(blocks) {
            let b = b?;
            let piece = &b.bytes()[s.start as usize..(s.start + s.len) as usize];
            out.write_all(piece)
                .map_err(|e| Error::io("writing decoded bytes", e))?;
            written += s.len;
            progress(s.len);
        }
    }
    Ok(written)
}

/// Bytes per verified piece of [`write_groups`] (whole hash groups).
const PIECE_BYTES: u64 = 4 << 20;

/// [`write_stream`] for a v2 container whose stream is its stored stream
/// ([`Archive::stream_is_stored`]): only the hash groups overlapping the range are read
/// and verified (a 4 KiB range reads one or two groups, whatever the block size), in
/// pieces of [`PIECE_BYTES`] verified in parallel batches and written in order.
fn write_groups(
    a: &Archive,
    offset: u64,
    len: u64,
    out: &mut dyn Write,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let shape = a.tree().expect("a stored stream has a tree").shape();
    let end = offset.saturating_add(len).min(shape.stream_len());
    let start = offset.min(end);
    let (_, span) = shape.groups_for(start..end);
    let piece = PIECE_BYTES.max(shape.group_len());
    let mut at = span.start;
    let mut written = 0;
    while at < span.end {
        let batch_end = (at + BATCH_BYTES.max(piece)).min(span.end);
        let pieces: Vec<_> = (at..batch_end)
            .step_by(piece as usize)
            .map(|p| p..(p + piece).min(batch_end))
            .collect();
        let verified: Vec<Result<_>> = pieces
            .par_iter()
            .map(|r| a.read_stored_groups(r.clone()))
            .collect();
        for (r, v) in pieces.iter().zip(verified) {
            let v = v?;
            let (lo, hi) = (r.start.max(start), r.end.min(end));
            out.write_all(v.slice(lo..hi))
                .map_err(|e| Error::io("writing decoded bytes", e))?;
            written += hi - lo;
            progress(hi - lo);
        }
        at = batch_end;
    }
    Ok(written)
}

/// The whole stream of `track` to `out`, as [`write_stream`] writes it; for a container
/// that [needs its VERI](Archive::needs_veri), the whole-file VERI is checked on another
/// thread while the blocks are written (one extra read of the file, hashed alongside
/// the decoding), and a mismatch is this function's error once everything was written.
/// So on any error the caller must discard what `out` received: this is for outputs
/// that only appear when complete (a temporary file renamed into place). For an output
/// that cannot be taken back (stdout, a pipe, a device), check
/// [`Archive::check_veri`] first instead.
pub fn write_checked_stream(
    a: &Archive,
    track: usize,
    out: &mut dyn Write,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let len = a.tracks[track].stream_len();
    if !a.needs_veri() {
        return write_stream(a, track, 0, len, out, progress);
    }
    std::thread::scope(|s| {
        let veri = std::thread::Builder::new()
            .name("h4fs-veri".into())
            .spawn_scoped(s, || a.check_veri(&|_| {}))
            .map_err(|e| Error::io("starting the VERI check", e))?;
        let written = write_stream(a, track, 0, len, out, progress);
        let veri = veri.join().unwrap_or_else(|_| {
            Err(Error::Internal(
                "the VERI check stopped unexpectedly".into(),
            ))
        });
        let written = written?;
        veri?;
        Ok(written)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::reader::OpenCheck;
    use crate::source::ReadAt;
    use crate::writer::{BlockMeta, Format, Writer};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Bytes in memory counting the bytes read from them.
    struct Counting(Vec<u8>, AtomicU64);

    impl ReadAt for Arc<Counting> {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            self.1.fetch_add(buf.len() as u64, Ordering::SeqCst);
            self.0.as_slice().read_exact_at(buf, offset)
        }
        fn name(&self) -> String {
            "<counting>".into()
        }
    }

    fn pack(blocks: &[Vec<u8>], format: Format) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), Engine::Identity).unwrap();
        w.set_format(format).unwrap();
        for (i, b) in blocks.iter().enumerate() {
            let meta = BlockMeta {
                pts_us: i as u64,
                keyframe: true,
            };
            w.add_block(b, meta).unwrap();
        }
        w.finish(serde_json::Map::new(), &crate::writer::default_safe())
            .unwrap()
            .0
    }

    fn open(bytes: Vec<u8>) -> (Archive, Arc<Counting>) {
        let src = Arc::new(Counting(bytes, AtomicU64::new(0)));
        let a = Archive::from_source(Box::new(src.clone()), OpenCheck::Structure).unwrap();
        src.1.store(0, Ordering::SeqCst);
        (a, src)
    }

    fn blocks() -> Vec<Vec<u8>> {
        (0..3u8)
            .map(|i| (0..1 << 20).map(|k: u32| (k % 251) as u8 ^ i).collect())
            .collect()
    }

    #[test]
    fn a_small_range_of_a_v2_container_reads_only_its_groups() {
        let data = blocks();
        let all = data.concat();
        let (a, src) = open(pack(&data, Format::V2 { group_log: 14 }));
        assert!(a.stream_is_stored(0));
        let mut out = Vec::new();
        let at = (1 << 20) + 5000;
        assert_eq!(
            write_stream(&a, 0, at, 4096, &mut out, &|_| {}).unwrap(),
            4096
        );
        assert_eq!(out, &all[at as usize..at as usize + 4096]);
        assert_eq!(src.1.load(Ordering::SeqCst), 16 << 10);
        // The whole stream, in pieces, equals the blocks.
        out.clear();
        write_stream(&a, 0, 0, all.len() as u64, &mut out, &|_| {}).unwrap();
        assert_eq!(out, all);
        // v1 reads the whole block.
        let (a, src) = open(pack(&data, Format::V1));
        assert!(!a.stream_is_stored(0));
        out.clear();
        write_stream(&a, 0, at, 4096, &mut out, &|_| {}).unwrap();
        assert_eq!(out, &all[at as usize..at as usize + 4096]);
        assert!(src.1.load(Ordering::SeqCst) >= 1 << 20);
    }

    #[test]
    fn a_damaged_group_fails_only_ranges_that_touch_it() {
        let data = blocks();
        let mut bytes = pack(&data, Format::V2 { group_log: 14 });
        let probe = Archive::from_source(Box::new(bytes.clone()), OpenCheck::Structure).unwrap();
        let e = probe.entry(0, 1).unwrap();
        bytes[(e.data_offset + 40_000) as usize] ^= 1;
        let (a, _) = open(bytes);
        let mut out = Vec::new();
        let at = (1 << 20) + 40_000;
        let err = write_stream(&a, 0, at, 10, &mut out, &|_| {}).unwrap_err();
        assert!(matches!(err, Error::Block { block: 1, .. }), "{err}");
        assert!(out.is_empty());
        // The same block, another group.
        write_stream(&a, 0, at + 20_000, 10, &mut out, &|_| {}).unwrap();
        assert_eq!(out, &data[1][60_000..60_010]);
    }
}
