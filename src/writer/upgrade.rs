//! `h4fs upgrade`: rewrite an h4fs v1 container as v2, blocks unchanged.
//!
//! Every block's stored bytes are read, checked against their SHA-256 in the index, and
//! handed to the same [`Writer`] that `pack` uses, with the same timing, the same META
//! (but its `h4fs` record says format 2, and its `source` record holds the BLAKE3 of the
//! decoded stream in place of its SHA-256, as `pack` writes for v2) and SAFE. The writer then builds SEEK, the
//! index, the BLAKE3 tree and the footer as `pack --format v2` would: the result is
//! byte-identical to packing the same source with the same options as v2.

use super::PackSummary;
use super::builder::{BlockMeta, Format, Prepared, Writer};
use crate::engine::EngineChoice;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::reader::{Archive, Layout};
use rayon::prelude::*;
use serde_json::{Value, json};
use std::io::{BufWriter, Write};

/// Blocks read and checked at a time (on all cores) before the writer takes them.
const BATCH_BLOCKS: u64 = 256;

/// Rewrite the v1 container `a` as v2 with hash groups of `2^group_log` bytes into
/// `out` (any `Write`). Refuses anything that is not a plain (unencrypted) h4fs v1
/// container with a known engine; a block failing its SHA-256 stops the upgrade.
pub fn upgrade_to<W: Write + Send>(
    a: &Archive,
    out: W,
    group_log: u8,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(W, PackSummary)> {
    let name = a.name();
    if a.layout != Layout::H4fs {
        return Err(Error::BadInput(format!(
            "{name} is a reference container, not an h4fs one: pack its decoded stream \
             (`h4fs extract`) with `h4fs pack --format v2` instead"
        )));
    }
    if a.format_version() != Some(1) {
        return Err(Error::BadInput(format!(
            "{name} is already an h4fs v{} container",
            a.format_version().unwrap_or(0)
        )));
    }
    if a.encryption.is_some() {
        return Err(Error::BadInput(format!(
            "{name} is encrypted: upgrading encrypted containers is not supported (its \
             HENC record binds the v1 structure); extract it with its key and pack it \
             again with --format v2"
        )));
    }
    let EngineChoice::Known(engine) = a.engine else {
        return Err(Error::BadInput(format!(
            "{name} uses a compression engine h4fs does not know; it cannot be rewritten"
        )));
    };
    let meta = a.meta.as_ref().map(|m| m.value.clone());
    let Some(Value::Object(mut meta)) = meta else {
        return Err(Error::BadInput(format!("{name} has no META object")));
    };
    let v1 = json!({"format": 1, "index": "HIDX", "footer": "HFTR"});
    if meta.get("h4fs") != Some(&v1) {
        return Err(Error::BadInput(format!(
            "{name}: META's \"h4fs\" record is not the one `h4fs pack` writes for v1 ({}); \
             refusing to rewrite a container h4fs did not write",
            meta.get("h4fs").map_or("missing".into(), |v| v.to_string())
        )));
    }
    meta.insert(
        "h4fs".into(),
        json!({"format": 2, "index": "HIDX", "footer": "HFTR", "tree": "HB3T"}),
    );
    let safe = a.safe.as_ref().map_or(Value::Null, |s| s.value.clone());
    // v2 records the source's BLAKE3 where v1 recorded its SHA-256 (pack does the same).
    let mut source = Box::new(blake3::Hasher::new());
    let mut w = Writer::new(out, engine)?;
    w.set_format(Format::V2 { group_log })?;
    let blocks = &a.tracks[0].blocks;
    let mut first = 0;
    while first < blocks.len() {
        let last = (first + BATCH_BLOCKS).min(blocks.len());
        let batch: Vec<(Option<Vec<u8>>, Prepared)> = (first..last)
            .into_par_iter()
            .map(|n| {
                let e = a.entry(0, n)?;
                let stored = a.read_stored_entry(&e)?;
                let decoded = match engine {
                    crate::engine::Engine::Identity => None,
                    _ => Some(
                        engine
                            .decode(stored.clone(), e.decoded_len)
                            .map_err(|msg| Error::Block {
                                block: n,
                                offset: e.chunk_offset,
                                msg,
                            })?,
                    ),
                };
                Ok((
                    decoded,
                    Prepared {
                        sha256: e.sha256(),
                        crc: crc32fast::hash(&stored),
                        stored,
                        decoded_len: e.decoded_len,
                        meta: BlockMeta {
                            pts_us: e.pts_us,
                            keyframe: e.keyframe,
                        },
                    },
                ))
            })
            .collect::<Result<_>>()?;
        for (decoded, p) in batch {
            source.update(decoded.as_deref().unwrap_or(&p.stored));
            let len = p.stored.len() as u64;
            w.add_prepared(p)?;
            progress(len);
        }
        first = last;
    }
    let Some(Value::Object(mut src)) = meta.get("source").cloned() else {
        return Err(Error::BadInput(format!(
            "{name}: META has no \"source\" record"
        )));
    };
    src.remove("sha256");
    src.insert("blake3".into(), json!(source.finalize().to_hex().as_str()));
    meta.insert("source".into(), Value::Object(src));
    // `finish` sets "compression" again, in its place, to the same value.
    w.finish(meta, &safe)
}

/// [`upgrade_to`] into an [`Output`], committed only when complete.
pub fn upgrade_into(
    a: &Archive,
    out: Output,
    group_log: u8,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackSummary> {
    let buf = BufWriter::with_capacity(1 << 20, out);
    let (buf, summary) = upgrade_to(a, buf, group_log, progress)?;
    let out = buf
        .into_inner()
        .map_err(|e| Error::io("writing the container", e.into_error()))?;
    out.commit()?;
    Ok(summary)
}
