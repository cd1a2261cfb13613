//! Copying decoded stream bytes out of a container, verified, on all cores.

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
