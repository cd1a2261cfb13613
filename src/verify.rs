//! Whole-container verification: every block against its hash or CRC, on all cores,
//! and optionally the reference VERI over the whole file.
//!
//! Blocks are read in spans of adjacent chunks (up to 16 MiB) so a container of many
//! small blocks costs few reads; each span is checked on a rayon worker.

use crate::engine::EngineChoice;
use crate::error::{Error, Result};
use crate::reader::{Archive, BlockEntry, Layout, check_block_bytes, read_vec};
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

/// Verify every block (and with `full`, the reference VERI and the index CRC).
/// `progress` receives byte counts as they are checked.
pub fn verify(a: &Archive, full: bool, progress: &(dyn Fn(u64) + Sync)) -> Report {
    let (mut report, extra) = rayon::join(
        || verify_blocks(a, progress),
        || {
            let mut extra = Vec::new();
            // Layout C has no VERI; its file CRC was checked when it was opened.
            if full && a.layout != Layout::MultitrackC {
                if let Err(e) = a.check_veri(progress) {
                    extra.push(e);
                }
                if let Err(e) = check_index_crc(a) {
                    extra.push(e);
                }
            }
            extra
        },
    );
    report.veri_checked = full && a.layout != Layout::MultitrackC;
    report.failures.extend(extra);
    report
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

fn verify_blocks(a: &Archive, progress: &(dyn Fn(u64) + Sync)) -> Report {
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
    let results: Vec<(u64, u64, Vec<Error>)> = spans
        .par_iter()
        .map(|span| {
            let start = span[0].chunk_offset;
            let last = span[span.len() - 1];
            let end = last.data_offset + last.stored_len;
            let mut failures = Vec::new();
            let check = |e: &BlockEntry, raw: &[u8], failures: &mut Vec<Error>| {
                if let Err(err) = check_block_bytes(e, raw) {
                    failures.push(err);
                } else if decrypt_check {
                    let stored = raw[(e.data_offset - e.chunk_offset) as usize..].to_vec();
                    if let Err(err) = a.decode_stored(e, stored) {
                        failures.push(err);
                    }
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
            match read_vec(a.source(), start, end - start, "blocks") {
                Ok(buf) => {
                    for e in span {
                        let lo = (e.chunk_offset - start) as usize;
                        let hi = (e.data_offset + e.stored_len - start) as usize;
                        check(e, &buf[lo..hi], &mut failures);
                    }
                }
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
                            Ok(raw) => check(e, &raw, &mut failures),
                            Err(err) => failures.push(err),
                        }
                    }
                }
            }
            progress(end - start);
            (span.len() as u64, end - start, failures)
        })
        .collect();
    let mut report = Report::default();
    for (n, bytes, f) in results {
        report.blocks_checked += n;
        report.bytes_checked += bytes;
        report.failures.extend(f);
    }
    report
}
