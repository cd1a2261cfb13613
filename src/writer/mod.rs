//! The deterministic packer.
//!
//! Output is a function of the input bytes, the block plan (sizes, pts, keyframes) and
//! the options, nothing else: no wall-clock time (unless the caller passes `created`),
//! no thread-count dependence (blocks are prepared in parallel but written in order),
//! no host names or absolute paths (only the source's file name is recorded).
//!
//! Pipeline: a reader thread, a writer thread and (with more than two threads) helpers,
//! around one bounded queue of batches of blocks:
//!
//! ```text
//! reader: read blocks, hash the source stream, queue the batch ──┐
//!                                                                ▼
//!   queue of batches (oldest first): Raw → Claimed → Ready(encoded, SHA-256, CRC-32)
//!                                                                │
//! writer: take the oldest batch (preparing it itself if nobody ◀┘
//!         has), write its chunks in order, hash VERI, build the index
//! ```
//!
//! A batch is prepared (encoded, sealed, hashed) by whichever thread gets to it: the
//! writer takes the oldest, while the reader (when the queue is full, and after the end
//! of the input) and any helper threads take the newest. On two cores that keeps both
//! busy without more runnable threads than cores: the two serial hashes (source, VERI)
//! each own a thread and the per-block hashes fill the gaps. (A v2 pack whose stored
//! bytes are the input's has no source hash to take: the v2 tree's root is it.) Output
//! does not depend on which thread prepared what.
//!
//! [`pack`] and [`pack_into`] write through [`crate::output`]: the container appears only
//! after `finish` succeeded, so a failed or interrupted pack leaves nothing behind.
//!
//! Modules: [`input`] (what is packed, opened once: [`Input::open`]), [`index_csv`]
//! (the `--index` CSV), `pipeline` (the threads and queue above), [`builder`] (the
//! [`Writer`] that appends blocks and writes the tail), [`upgrade`] (v1 -> v2, through
//! the same writer).

pub mod builder;
pub mod index_csv;
pub mod input;
mod pipeline;
pub mod upgrade;

pub use builder::{
    BlockMeta, Format, MAX_BLOCK, PackSummary, RESERVED_META_KEYS, Writer, default_safe,
};
pub use index_csv::{IndexRow, index_csv_start_time, parse_index_csv};
pub use input::{DirListing, Input, OpenInput, directory_files, directory_names, frame_us};

use crate::crypto::{ContainerCrypto, ContentDigest, ContentHasher, MasterKey};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::{Output, OutputOptions};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Options of a pack that are not about the input.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub engine: Engine,
    pub project: String,
    pub domain: String,
    /// Extra META keys, in order, appended after h4fs's own.
    pub meta_extra: Map<String, Value>,
    pub safe: Value,
    /// A creation time to record (never taken from the clock).
    pub created: Option<String>,
    /// Encrypt every block under this master key (AES-256-GCM, see [`crate::crypto`]).
    pub key: Option<MasterKey>,
    /// Where the media's own clock starts (META `start_time_us`; block pts count from
    /// it). From an index CSV's `# start_time_us=` line ([`index_csv_start_time`]),
    /// or from ffprobe for `pack --media`.
    pub start_time_us: Option<i64>,
    /// The layout written: v1, or v2 with a BLAKE3 tree of the stored stream.
    pub format: Format,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            engine: Engine::Identity,
            project: "h4fs".into(),
            domain: "video-transport".into(),
            meta_extra: Map::new(),
            safe: default_safe(),
            created: None,
            key: None,
            start_time_us: None,
            format: Format::V1,
        }
    }
}

/// Pack `input` into an h4fs container written to `out` (any `Write`). `progress` is
/// called with the number of input bytes consumed so far, as they are.
pub fn pack_to<W: Write + Send>(
    input: &Input,
    out: W,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(W, PackSummary)> {
    check_meta_extra(opts)?;
    pack_open_to(&input.open()?, out, opts, progress)
}

/// Refuse extra META keys that h4fs sets itself.
fn check_meta_extra(opts: &PackOptions) -> Result<()> {
    for k in opts.meta_extra.keys() {
        if RESERVED_META_KEYS.contains(&k.as_str()) || k == "project" || k == "domain" {
            return Err(Error::BadInput(format!(
                "META key \"{k}\" is set by h4fs and cannot be given as an extra field"
            )));
        }
    }
    Ok(())
}

/// [`pack_to`] from an input already opened with [`Input::open`] (the CLI opens it
/// once, to size its progress bar and to pack it).
pub fn pack_open_to<W: Write + Send>(
    open: &OpenInput<'_>,
    out: W,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(W, PackSummary)> {
    check_meta_extra(opts)?;
    let input = open.input();
    let source_len = open.total_len();
    // An encrypted pack first reads the input once to learn its content digest: the
    // per-container key must be known before the first block is sealed.
    let (sealing, planned_sha) = match &opts.key {
        Some(key) => {
            let (digest, sha) = content_digest(open, opts.engine)?;
            (Some(ContainerCrypto::new(key, &digest)), Some(sha))
        }
        None => (None, None),
    };
    // v2 records the source's BLAKE3 (unencrypted), so the one SHA-256 pass is VERI's;
    // an encrypted pack compares the source's SHA-256 with its first pass instead.
    let blake3_source = matches!(opts.format, Format::V2 { .. }) && opts.key.is_none();
    let (mut w, source_hash) = pipeline::run(
        open.blocks(),
        out,
        opts.engine,
        opts.format,
        blake3_source,
        sealing,
        progress,
    )?;
    // Identity v2: the tree's root is the source's BLAKE3 (`b3sum` of the input).
    let source_hash = match source_hash {
        Some(h) => h,
        None => w
            .tree_root()
            .expect("the pipeline leaves the source hash to the tree only for v2"),
    };
    if planned_sha.is_some_and(|p| p != source_hash) {
        return Err(Error::Changed(
            "the input changed between the two passes of an encrypted pack".into(),
        ));
    }
    if w.stream_len() != source_len {
        return Err(Error::Changed(format!(
            "read {} bytes but the input had {source_len} when the pack began: it changed during the pack",
            w.stream_len()
        )));
    }
    let mut meta = input.meta_keys(opts, open.names());
    let name = input
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // An encrypted container does not record the source hash: it would let anyone
    // confirm a guess of the plaintext.
    let source = match (&opts.key, blake3_source) {
        (Some(_), _) => json!({"name": name, "size": source_len}),
        (None, true) => {
            json!({"name": name, "size": source_len, "blake3": hex::encode(source_hash)})
        }
        (None, false) => {
            json!({"name": name, "size": source_len, "sha256": hex::encode(source_hash)})
        }
    };
    meta.insert("source".into(), source);
    meta.insert("block_count".into(), json!(w.blocks()));
    let duration = input.duration_us(w.blocks(), w.first_pts, w.last_pts);
    meta.insert("duration_us".into(), json!(duration));
    if let Some(start) = opts.start_time_us {
        meta.insert("start_time_us".into(), json!(start));
    }
    if let Some(c) = &opts.created {
        meta.insert("created".into(), json!(c));
    }
    meta.insert(
        "h4fs".into(),
        match opts.format {
            Format::V1 => json!({"format": 1, "index": "HIDX", "footer": "HFTR"}),
            Format::V2 { .. } => {
                json!({"format": 2, "index": "HIDX", "footer": "HFTR", "tree": "HB3T"})
            }
        },
    );
    for (k, v) in &opts.meta_extra {
        meta.insert(k.clone(), v.clone());
    }
    w.finish(meta, &opts.safe)
}

/// Pack into the file `out` through [`crate::output`]: it appears only when complete,
/// an existing file is never replaced and the input is never overwritten. (The CLI
/// passes its own [`OutputOptions`] to [`pack_into`].)
pub fn pack(
    input: &Input,
    out: &Path,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackSummary> {
    let o = Output::create(
        out,
        &OutputOptions {
            inputs: vec![input.path().to_path_buf()],
            ..OutputOptions::default()
        },
    )?;
    pack_into(input, o, opts, progress)
}

/// Pack into `out`, committing it only after the container is complete.
pub fn pack_into(
    input: &Input,
    out: Output,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackSummary> {
    check_meta_extra(opts)?;
    pack_open_into(&input.open()?, out, opts, progress)
}

/// [`pack_into`] from an input already opened with [`Input::open`].
pub fn pack_open_into(
    open: &OpenInput<'_>,
    out: Output,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackSummary> {
    let buf = BufWriter::with_capacity(1 << 20, out);
    let (buf, summary) = pack_open_to(open, buf, opts, progress)?;
    let out = buf
        .into_inner()
        .map_err(|e| Error::io("writing the container", e.into_error()))?;
    out.commit()?;
    Ok(summary)
}

/// The first pass of an encrypted pack: the SHA-256 of the source stream and the
/// content digest (source hash, engine, block plan) the container id derives from.
fn content_digest(input: &OpenInput<'_>, engine: Engine) -> Result<(ContentDigest, [u8; 32])> {
    let mut source = Sha256::new();
    let mut plan: Vec<(u64, BlockMeta)> = Vec::new();
    for b in input.blocks() {
        let (data, meta) = b?;
        source.update(&data);
        plan.push((data.len() as u64, meta));
    }
    let sha: [u8; 32] = source.finalize().into();
    let mut h = ContentHasher::new(&sha, &engine.engine_id());
    for (len, m) in plan {
        h.block(0, len, m.pts_us, m.keyframe);
    }
    Ok((h.finish(), sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pack queue with 0, 1 and 2 helper threads, enough batches to fill it (so the
    /// reader prepares and hashes batches too), and an engine that encodes: the same
    /// bytes every time, and a container whose every hash checks.
    #[test]
    fn output_does_not_depend_on_the_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.bin");
        // 20,000 blocks of 256 bytes: 20 batches; the last block is short.
        let data: Vec<u8> = (0..20_000u32 * 256 - 100)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0xf0)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let input = Input::Fixed {
            path,
            block_size: 256,
            fps: 25.0,
            gop: 25,
        };
        for engine in [Engine::Identity, Engine::GeometricReference] {
            let opts = PackOptions {
                engine,
                ..PackOptions::default()
            };
            let packs: Vec<Vec<u8>> = [1, 3, 4]
                .into_iter()
                .map(|threads| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap()
                        .install(|| pack_to(&input, Vec::new(), &opts, &|_| {}).unwrap().0)
                })
                .collect();
            assert!(packs[0] == packs[1] && packs[0] == packs[2], "{engine:?}");
            let a = crate::reader::Archive::from_source(
                Box::new(packs[0].clone()),
                crate::reader::OpenCheck::Structure,
            )
            .unwrap();
            assert_eq!(a.tracks[0].blocks.len(), 20_000);
            let report = crate::verify::verify(&a, true, &|_| {});
            assert!(report.ok(), "{engine:?}: {:?}", report.failures);
        }
    }
}
