//! The container builder: [`Writer`] appends blocks in order (CORE chunks, hashed into
//! VERI as they are written, their index entries kept in memory) and [`Writer::finish`]
//! writes the tail: SEEK, META, SAFE, HENC when encrypted, the index, the footer with
//! its structure root, and VERI.

use crate::crypto::{self, BlockContext, ContainerCrypto, ContentDigest, Henc, MasterKey};
use crate::engine::Engine;
use crate::error::{Error, Result, Tag};
use crate::format::h4fs::{self as hf, Footer, IndexEntry};
use crate::format::layout_a::{self as la, ChunkHeader, SeekEntry};
use crate::format::outboard::{self as ob, OutboardHeader};
use crate::integrity::tree::{Tree, TreeBuilder};
use crate::integrity::{self, VeriHasher};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Which h4fs layout a [`Writer`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Footer version 1: blocks checked by the SHA-256 in their index entry.
    #[default]
    V1,
    /// Footer version 2: also an `HB3T` BLAKE3 tree over the stored stream in hash
    /// groups of `2^group_log` bytes (docs/FORMAT.md §10).
    V2 { group_log: u8 },
}

impl Format {
    /// v2 with the default 16 KiB hash groups.
    pub const V2_DEFAULT: Format = Format::V2 {
        group_log: ob::DEFAULT_GROUP_LOG,
    };
}

/// Stored bytes handed to the tree thread at a time (whole blocks, at least this much).
const TREE_BATCH_BYTES: usize = 1 << 20;

/// The BLAKE3 tree of a v2 container, built on a thread of its own from the stored
/// bytes the writer has written, so it runs beside the writer's SHA-256 (VERI).
struct TreeThread {
    tx: Option<SyncSender<Vec<Vec<u8>>>>,
    batch: Vec<Vec<u8>>,
    batch_bytes: usize,
    handle: Option<JoinHandle<Tree>>,
}

impl TreeThread {
    fn spawn(group_log: u8) -> Result<TreeThread> {
        let mut builder = TreeBuilder::new(group_log)
            .map_err(|e| Error::BadInput(format!("--group-size: {e}")))?;
        let (tx, rx): (_, Receiver<Vec<Vec<u8>>>) = sync_channel(4);
        let handle = std::thread::Builder::new()
            .name("h4fs-tree".into())
            .spawn(move || {
                for batch in rx {
                    for b in batch {
                        builder.update(&b);
                    }
                }
                builder.finish()
            })
            .map_err(|e| Error::io("starting the hash tree thread", e))?;
        Ok(TreeThread {
            tx: Some(tx),
            batch: Vec::new(),
            batch_bytes: 0,
            handle: Some(handle),
        })
    }

    fn push(&mut self, stored: Vec<u8>) {
        self.batch_bytes += stored.len();
        self.batch.push(stored);
        if self.batch_bytes >= TREE_BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if let Some(tx) = &self.tx {
            // The thread only ends when the sender is dropped, so this cannot fail
            // unless it panicked, which `finish` reports.
            let _ = tx.send(batch);
        }
    }

    fn finish(mut self) -> Tree {
        self.flush();
        self.tx = None;
        self.handle
            .take()
            .expect("finished once")
            .join()
            .expect("the hash tree thread does not panic")
    }
}

impl Drop for TreeThread {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Largest decoded block h4fs writes (see [`crate::engine::MAX_BLOCK`]).
pub const MAX_BLOCK: u64 = crate::engine::MAX_BLOCK;

/// The reference's default SAFE scopes.
pub fn default_safe() -> Value {
    json!({
        "scope": "container+transport-only",
        "no_video_synthesis": true,
        "no_pixel_semantics": true,
        "no_visual_ml": true,
    })
}

/// META keys h4fs sets itself; users cannot override them.
pub const RESERVED_META_KEYS: &[&str] = &[
    "compression",
    "encryption",
    "source",
    "block_count",
    "duration_us",
    "start_time_us",
    "h4fs",
    "block_size",
    "fps_hint",
    "gop",
    "masked",
    "names",
];

/// Timing of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMeta {
    pub pts_us: u64,
    pub keyframe: bool,
}

/// A block ready to be written: encoded and (unless `sha256` is `None`, which leaves
/// it to the writer to hash alongside VERI) hashed.
pub(super) struct Prepared {
    pub(super) stored: Vec<u8>,
    pub(super) sha256: Option<[u8; 32]>,
    pub(super) crc: u32,
    pub(super) decoded_len: u64,
    pub(super) meta: BlockMeta,
}

/// Encode `data` and, in an encrypted container, seal it as block number `seal.1`;
/// with `hash`, also take the SHA-256 of the stored bytes.
pub(super) fn prepare(
    engine: Engine,
    data: Vec<u8>,
    meta: BlockMeta,
    seal: Option<(&ContainerCrypto, u64)>,
    hash: bool,
) -> Result<Prepared> {
    let decoded_len = data.len() as u64;
    let mut stored = match engine {
        Engine::Identity => data,
        e => {
            let mut v = Vec::new();
            e.encode_into(&data, &mut v);
            v
        }
    };
    if let Some((c, index)) = seal {
        let ctx = BlockContext {
            index,
            track: 0,
            pts_us: meta.pts_us,
            keyframe: meta.keyframe,
            decoded_len,
            chunk_offset: 0,
        };
        c.seal_in_place(&ctx, &mut stored)?;
    }
    Ok(Prepared {
        sha256: hash.then(|| integrity::sha256(&stored)),
        crc: crc32fast::hash(&stored),
        stored,
        decoded_len,
        meta,
    })
}

/// Writes an h4fs container to any `Write`, one block at a time, in order.
pub struct Writer<W: Write> {
    out: W,
    pos: u64,
    veri: VeriHasher,
    engine: Engine,
    index: Vec<u8>,
    count: u64,
    stream: u64,
    seek: Vec<SeekEntry>,
    pub(super) last_pts: Option<u64>,
    pub(super) first_pts: Option<u64>,
    /// Block sealing and the HENC record, for an encrypted container.
    pub(super) crypto: Option<(ContainerCrypto, Henc)>,
    /// v2: the tree of the stored stream, built beside the writer.
    tree: Option<TreeThread>,
    /// v2: the tree, once [`Writer::tree_root`] has waited for it.
    tree_done: Option<Tree>,
}

/// What [`Writer::finish`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSummary {
    pub blocks: u64,
    pub keyframes: u64,
    pub stream_len: u64,
    pub file_len: u64,
    pub root: [u8; 32],
    pub veri: [u8; 32],
    /// v2: the BLAKE3 root of the stored stream (`b3sum` of the source for a plain
    /// identity container).
    pub blake3: Option<[u8; 32]>,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, engine: Engine) -> Result<Self> {
        out.write_all(&la::header())
            .map_err(|e| Error::io("writing the container header", e))?;
        Ok(Writer {
            out,
            pos: la::HEADER_LEN as u64,
            veri: VeriHasher::new(),
            engine,
            index: hf::index_header(0).to_vec(),
            count: 0,
            stream: 0,
            seek: Vec::new(),
            last_pts: None,
            first_pts: None,
            crypto: None,
            tree: None,
            tree_done: None,
        })
    }

    /// Write `format` (call before the first block; [`Writer::new`] writes v1).
    pub fn set_format(&mut self, format: Format) -> Result<()> {
        assert_eq!(self.count, 0, "the format is set before any block");
        self.tree = match format {
            Format::V1 => None,
            Format::V2 { group_log } => Some(TreeThread::spawn(group_log)?),
        };
        Ok(())
    }

    /// A writer that encrypts every block under `key` (see [`crate::crypto::container`]).
    /// `content` must describe exactly the blocks that will be added — source stream
    /// hash, engine and plan, built with [`crate::crypto::ContentHasher`] — since the per-container key
    /// and so the uniqueness of nonces rest on it.
    pub fn new_encrypted(
        out: W,
        engine: Engine,
        key: &MasterKey,
        content: &ContentDigest,
    ) -> Result<Self> {
        let mut w = Writer::new(out, engine)?;
        w.crypto = Some(ContainerCrypto::new(key, content));
        Ok(w)
    }

    fn write_chunk_parts(&mut self, header: &[u8; 12], payload: &[u8]) -> Result<()> {
        self.veri.update(header);
        self.veri.update(payload);
        self.write_unhashed(header, payload)
    }

    /// Write a chunk whose bytes the caller has already added to VERI.
    fn write_unhashed(&mut self, header: &[u8; 12], payload: &[u8]) -> Result<()> {
        self.out
            .write_all(header)
            .and_then(|_| self.out.write_all(payload))
            .map_err(|e| Error::io(format!("writing chunk at offset {}", self.pos), e))?;
        self.pos += 12 + payload.len() as u64;
        Ok(())
    }

    fn write_chunk(&mut self, tag: Tag, payload: &[u8]) -> Result<u64> {
        let at = self.pos;
        let len = u32::try_from(payload.len()).map_err(|_| {
            Error::Limit(format!(
                "{tag} chunk of {} bytes exceeds 4 GiB",
                payload.len()
            ))
        })?;
        let h = ChunkHeader::encode_with_crc(tag, len, crc32fast::hash(payload));
        self.write_chunk_parts(&h, payload)?;
        Ok(at)
    }

    /// Encode and append one block.
    pub fn add_block(&mut self, data: &[u8], meta: BlockMeta) -> Result<()> {
        let seal = self.crypto.as_ref().map(|(c, _)| (c, self.count));
        let p = prepare(self.engine, data.to_vec(), meta, seal, false)?;
        self.add_prepared(p)
    }

    pub(super) fn add_prepared(&mut self, p: Prepared) -> Result<()> {
        let n = self.count;
        if p.decoded_len > MAX_BLOCK {
            return Err(Error::Limit(format!(
                "block {n} is {} bytes; the largest block h4fs writes is {MAX_BLOCK} bytes",
                p.decoded_len
            )));
        }
        if let Some(last) = self.last_pts
            && p.meta.pts_us < last
        {
            return Err(Error::BadInput(format!(
                "block {n} has pts {} us, before the previous block's {last} us: pts must not decrease",
                p.meta.pts_us
            )));
        }
        if n == 0 && !p.meta.keyframe {
            return Err(Error::BadInput(
                "block 0 is not a keyframe: a stream must start with one".into(),
            ));
        }
        let stored_len = u32::try_from(p.stored.len())
            .map_err(|_| Error::Limit(format!("block {n} encodes to more than 4 GiB")))?;
        assert!(
            self.tree_done.is_none(),
            "a block added after Writer::tree_root would be missing from the tree"
        );
        let chunk_offset = self.pos;
        let h = ChunkHeader::encode_with_crc(Tag::CORE, stored_len, p.crc);
        let sha256 = match p.sha256 {
            Some(sha) => {
                self.write_chunk_parts(&h, &p.stored)?;
                sha
            }
            None => {
                // The block's own hash and VERI over it, in lockstep (integrity::lanes).
                let mut block = integrity::lanes::Sha256::new();
                self.veri.update(&h);
                self.veri.update2(&p.stored, &mut block, &p.stored);
                self.write_unhashed(&h, &p.stored)?;
                block.finalize()
            }
        };
        let stored = p.stored;
        IndexEntry {
            chunk_offset,
            stored_len,
            decoded_len: p.decoded_len as u32,
            stream_offset: self.stream,
            pts_us: p.meta.pts_us,
            track: 0,
            flags: if p.meta.keyframe {
                hf::FLAG_KEYFRAME
            } else {
                0
            },
            sha256,
        }
        .encode(&mut self.index);
        if p.meta.keyframe {
            self.seek.push(SeekEntry {
                pts_us: p.meta.pts_us,
                offset: self.stream,
            });
        }
        self.first_pts.get_or_insert(p.meta.pts_us);
        self.last_pts = Some(p.meta.pts_us);
        self.stream += p.decoded_len;
        self.count += 1;
        if let Some(t) = &mut self.tree {
            t.push(stored);
        }
        Ok(())
    }

    pub fn blocks(&self) -> u64 {
        self.count
    }

    pub fn stream_len(&self) -> u64 {
        self.stream
    }

    /// v2: the BLAKE3 root of the stored stream of the blocks added so far, waiting for
    /// the tree thread (call it after the last block: no block may be added after it;
    /// `None` for v1).
    pub fn tree_root(&mut self) -> Option<[u8; 32]> {
        if let Some(t) = self.tree.take() {
            self.tree_done = Some(t.finish());
        }
        self.tree_done.as_ref().map(|t| *t.root.as_bytes())
    }

    /// Write SEEK, META (with the compression section appended), SAFE, index, footer and
    /// VERI. `meta` holds the caller's keys in the order they should appear.
    pub fn finish(
        mut self,
        mut meta: Map<String, Value>,
        safe: &Value,
    ) -> Result<(W, PackSummary)> {
        meta.insert("compression".into(), self.engine.compression_meta());
        if self.crypto.is_some() {
            meta.insert(
                "encryption".into(),
                json!({"cipher": crypto::container::CIPHER, "mode": crypto::container::MODE}),
            );
        }
        let meta_bytes = serde_json::to_vec(&Value::Object(meta)).expect("JSON values serialize");
        let safe_bytes = serde_json::to_vec(safe).expect("JSON values serialize");
        let seek_bytes = la::encode_seek(&self.seek);
        let seek_offset = self.write_chunk(Tag::SEEK, &seek_bytes)?;
        let meta_offset = self.write_chunk(Tag::META, &meta_bytes)?;
        let safe_offset = self.write_chunk(Tag::SAFE, &safe_bytes)?;
        let mut index = std::mem::take(&mut self.index);
        index[..hf::INDEX_HEADER_LEN].copy_from_slice(&hf::index_header(self.count));
        let digest = integrity::index_digest(&index);
        let henc_bytes = match &self.crypto {
            Some((c, henc)) => {
                let structure = crypto::container::structure_digest(
                    hf::FOOTER_FLAG_ENCRYPTED,
                    self.count,
                    self.stream,
                    &seek_bytes,
                    &meta_bytes,
                    &safe_bytes,
                    &index,
                );
                let mut henc = henc.clone();
                c.seal_structure(&mut henc, &structure);
                henc.to_bytes()
            }
            None => Vec::new(),
        };
        let henc_offset = match self.crypto {
            Some(_) => self.write_chunk(Tag::HENC, &henc_bytes)?,
            None => 0,
        };
        let tree = match self.tree.take() {
            Some(t) => Some(t.finish()),
            None => self.tree_done.take(),
        };
        let outboard_header = match &tree {
            Some(t) => {
                let shape = t.outboard.shape();
                let header = OutboardHeader {
                    group_log: shape.group_log(),
                    stream_len: shape.stream_len(),
                    node_count: shape.node_count(),
                    root: *t.root.as_bytes(),
                };
                self.write_chunk(Tag::HB3T, &ob::encode(&header, t.outboard.as_bytes()))?;
                Some(header.encode())
            }
            None => None,
        };
        let index_offset = self.write_chunk(Tag::HIDX, &index)?;
        let mut footer = Footer {
            version: match tree {
                Some(_) => hf::FOOTER_VERSION_V2,
                None => hf::FOOTER_VERSION,
            },
            flags: match self.crypto {
                Some(_) => hf::FOOTER_FLAG_ENCRYPTED,
                None => 0,
            },
            seek_offset,
            meta_offset,
            safe_offset,
            index_offset,
            henc_offset,
            block_count: self.count,
            stream_len: self.stream,
            root: [0; 32],
        };
        footer.root = match &outboard_header {
            Some(oh) => integrity::root_hash_v2(
                &footer.prefix(),
                &seek_bytes,
                &meta_bytes,
                &safe_bytes,
                &henc_bytes,
                oh,
                &digest,
            ),
            None => integrity::root_hash(
                &footer.prefix(),
                &seek_bytes,
                &meta_bytes,
                &safe_bytes,
                &henc_bytes,
                &digest,
            ),
        };
        self.write_chunk(Tag::HFTR, &footer.encode())?;
        let veri = self.veri.clone().finish();
        self.write_chunk(Tag::VERI, &veri)?;
        self.out
            .flush()
            .map_err(|e| Error::io("flushing the container", e))?;
        let summary = PackSummary {
            blocks: self.count,
            keyframes: self.seek.len() as u64,
            stream_len: self.stream,
            file_len: self.pos,
            root: footer.root,
            veri,
            blake3: tree.map(|t| *t.root.as_bytes()),
        };
        Ok((self.out, summary))
    }
}
