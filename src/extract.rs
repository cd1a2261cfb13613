//! Copying decoded stream bytes out of a container, verified, on all cores.
//!
//! Blocks are checked one by one (SHA-256, CRC-32 or AES-GCM) before their bytes are
//! written. A reference layout-A file needs more: its blocks carry only CRC-32 and its
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
