//! `h4fs inspect`.

use crate::reader::{Archive, BlockEntry, ChunkInfo, Layout, OpenCheck};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::path::PathBuf;

/// Show a container's header, chunk table, META, SAFE, seek table and integrity summary.
///
/// Opening checks the structure (chunk CRCs; for h4fs containers the structure root over
/// SEEK, META, SAFE and the block index). Use `verify` to check every block.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  h4fs inspect movie.h4mk
  h4fs inspect --json movie.h4mk | jq .meta
  h4fs inspect --chunks reference.h4mk")]
pub struct Args {
    /// The container to inspect (.h4mk: h4fs or reference layout A/C): a path, an
    /// s3://BUCKET/KEY or an http(s):// URL.
    pub file: PathBuf,
    /// Machine-readable JSON. For an s3:// or http(s):// container, "remote_open" says
    /// what opening it cost: requests, bytes, retries, failed requests.
    #[arg(long)]
    pub json: bool,
    /// List every CORE chunk too (one line per block).
    #[arg(long)]
    pub chunks: bool,
    #[command(flatten)]
    pub keys: super::keys::KeyArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut a = super::remote::open(&args.file, OpenCheck::Structure)?;
    // What opening a remote container cost (requests, bytes), before anything else.
    let opened = super::remote::stats_of(&super::remote::shown(&args.file));
    args.keys.apply(&mut a)?;
    let mut doc = describe(&a);
    if let (Some(s), Some(obj)) = (opened, doc.as_object_mut()) {
        obj.insert("remote_open".into(), json!(s));
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if args.json {
        let doc = WithCoreChunks {
            doc: &doc,
            a: &a,
            all: args.chunks,
        };
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        print_human(&mut out, &a, &doc, &args.file, args.chunks)?;
    }
    out.flush()?;
    Ok(0)
}

/// One row of the chunk table.
enum Row<'a> {
    /// A chunk other than CORE, as found at open.
    Chunk(&'a ChunkInfo),
    /// One CORE chunk (`--chunks`).
    Core { track: u32, entry: BlockEntry },
}

impl Row<'_> {
    fn offset(&self) -> u64 {
        match self {
            Row::Chunk(c) => c.offset,
            Row::Core { entry, .. } => entry.chunk_offset,
        }
    }

    fn json(&self) -> Value {
        match self {
            Row::Chunk(c) => {
                json!({"tag": c.tag.to_string(), "offset": c.offset, "payload_len": c.payload_len, "total_len": c.total_len})
            }
            Row::Core { track, entry: e } => {
                json!({"tag": "CORE", "offset": e.chunk_offset, "payload_len": e.data_offset + e.stored_len - e.chunk_offset - 12, "block": e.number, "track": track})
            }
        }
    }
}

/// Every chunk in file order, CORE chunks included, produced one at a time: the chunks
/// other than CORE and each track's blocks are each in file order already, so this is
/// a merge of those lists (through a heap, for files with many tracks). Memory stays
/// the same whatever the number of blocks.
fn all_rows(a: &Archive) -> impl Iterator<Item = Row<'_>> {
    // Source 0 is the non-CORE chunk list, source 1 + i is track i.
    let head = |src: usize, k: u64| -> Option<Row<'_>> {
        match src {
            0 => a.chunks.get(k as usize).map(Row::Chunk),
            _ => {
                let t = &a.tracks[src - 1];
                t.blocks
                    .get(k)
                    .map(|entry| Row::Core { track: t.id, entry })
            }
        }
    };
    let mut next = vec![0u64; a.tracks.len() + 1];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..next.len())
        .filter_map(|src| head(src, 0).map(|r| Reverse((r.offset(), src))))
        .collect();
    std::iter::from_fn(move || {
        let Reverse((_, src)) = heap.pop()?;
        let row = head(src, next[src])?;
        next[src] += 1;
        if let Some(r) = head(src, next[src]) {
            heap.push(Reverse((r.offset(), src)));
        }
        Some(row)
    })
}

/// The description from [`describe`] with its `chunks` list replaced, when `all`, by
/// every chunk including CORE ones, written as it is produced rather than built first.
struct WithCoreChunks<'a> {
    doc: &'a Value,
    a: &'a Archive,
    all: bool,
}

impl Serialize for WithCoreChunks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let Some(obj) = self.doc.as_object() else {
            return self.doc.serialize(s);
        };
        let mut m = s.serialize_map(Some(obj.len()))?;
        for (k, v) in obj {
            if k == "chunks" && self.all {
                m.serialize_entry(k, &AllChunks(self.a))?;
            } else {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

struct AllChunks<'a>(&'a Archive);

impl Serialize for AllChunks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for row in all_rows(self.0) {
            match row {
                Row::Chunk(_) => seq.serialize_element(&row.json())?,
                // The same fields as `Row::json`, without building a map per block.
                Row::Core { track, entry: e } => seq.serialize_element(&CoreRow {
                    tag: "CORE",
                    offset: e.chunk_offset,
                    payload_len: e.data_offset + e.stored_len - e.chunk_offset - 12,
                    block: e.number,
                    track,
                })?,
            }
        }
        seq.end()
    }
}

#[derive(serde::Serialize)]
struct CoreRow {
    tag: &'static str,
    offset: u64,
    payload_len: u64,
    block: u64,
    track: u32,
}

/// A JSON description of a container; its `chunks` list holds the chunks other than
/// CORE (`--chunks` adds the CORE ones as it writes them).
pub fn describe(a: &Archive) -> Value {
    let chunks: Vec<Value> = a.chunks.iter().map(|c| Row::Chunk(c).json()).collect();
    let tracks: Vec<Value> = a
        .tracks
        .iter()
        .map(|t| {
            let n = t.blocks.len();
            let (first, last) = (t.blocks.get(0), n.checked_sub(1).and_then(|i| t.blocks.get(i)));
            let core_bytes = match (first, last) {
                (Some(f), Some(l)) => json!({"first_offset": f.chunk_offset, "end_offset": l.data_offset + l.stored_len}),
                _ => Value::Null,
            };
            let keyframes = if t.seek.is_empty() { Value::Null } else {
                json!({"count": t.seek.len(), "first_pts_us": t.seek[0].pts_us, "last_pts_us": t.seek[t.seek.len()-1].pts_us})
            };
            json!({
                "id": t.id,
                "name": t.name,
                "info": t.info,
                "blocks": n,
                "stream_len": t.stream_len(),
                "first_pts_us": first.map(|e| e.pts_us),
                "last_pts_us": last.map(|e| e.pts_us),
                "core_chunks": core_bytes,
                "seek": keyframes,
            })
        })
        .collect();
    let integrity = match a.layout {
        Layout::H4fs => {
            let (at, f) = a.footer.expect("h4fs has a footer");
            json!({
                "structure_root": hex::encode(f.root),
                "structure_root_checked": a.root_checked,
                "footer_offset": at,
                "per_block": "sha256",
                "format": f.version,
                "hash_tree": a.tree().map(|t| {
                    let s = t.shape();
                    json!({
                        "blake3": t.root().to_hex().to_string(),
                        "covers": if a.encryption.is_some() { "stored (encrypted) bytes" } else if a.engine.name() == "identity" { "the original file (b3sum)" } else { "stored (encoded) bytes" },
                        "group_size": s.group_len(),
                        "groups": s.group_count(),
                        "stored_len": s.stream_len(),
                        "outboard_len": s.outboard_len(),
                    })
                }),
                "veri": a.veri.map(|v| json!({"offset": v.offset, "sha256": hex::encode(v.expected)})),
            })
        }
        Layout::ReferenceA => json!({
            "per_block": "crc32",
            "veri": a.veri.map(|v| json!({"offset": v.offset, "sha256": hex::encode(v.expected)})),
        }),
        Layout::MultitrackC => json!({"per_block": "crc32 (chunk)", "file_crc": "checked"}),
    };
    json!({
        "file_len": a.file_len,
        "layout": a.layout,
        "layout_description": a.layout.describe(),
        "timestamp": a.timestamp,
        "blocks": a.block_count(),
        "start_time_us": a.start_time_us(),
        "engine": a.engine.name(),
        "engine_known": matches!(a.engine, crate::engine::EngineChoice::Known(_)),
        "sizes_exact": a.sizes_exact,
        "encryption": a.encryption.as_ref().map(|e| json!({"cipher": e.cipher, "record": e.record})),
        "chunks": chunks,
        "tracks": tracks,
        "meta": a.meta.as_ref().map(|m| m.value.clone()),
        "safe": a.safe.as_ref().map(|m| m.value.clone()),
        "integrity": integrity,
    })
}

fn print_human(
    out: &mut impl Write,
    a: &Archive,
    d: &Value,
    path: &std::path::Path,
    all_chunks: bool,
) -> std::io::Result<()> {
    writeln!(out, "file      {} ({} bytes)", path.display(), a.file_len)?;
    writeln!(out, "layout    {}", a.layout.describe())?;
    let engine_note = if d["engine_known"].as_bool() == Some(true) {
        ""
    } else {
        "  (UNKNOWN: blocks cannot be decoded)"
    };
    writeln!(out, "engine    {}{engine_note}", a.engine.name())?;
    match &a.encryption {
        Some(e) if a.key_attached() => writeln!(out, "encrypted yes ({}); key ok", e.cipher)?,
        Some(e) => match e.record.get("key_id").and_then(Value::as_str) {
            Some(id) => writeln!(
                out,
                "encrypted yes ({}); decoding needs the key with id {id}",
                e.cipher
            )?,
            None => writeln!(out, "encrypted yes ({}); decoding needs the key", e.cipher)?,
        },
        None => writeln!(out, "encrypted no")?,
    }
    writeln!(out, "blocks    {}", a.block_count())?;
    writeln!(
        out,
        "start     {} us (the media's clock at pts 0; pts count from the start of the media)",
        a.start_time_us()
    )?;
    for t in d["tracks"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "track {}   \"{}\": {} blocks, {} bytes decoded{}, pts {}..{} us, {} seek entries",
            t["id"],
            t["name"].as_str().unwrap_or(""),
            t["blocks"],
            t["stream_len"],
            if a.sizes_exact {
                ""
            } else {
                " (stored sizes; decoded sizes unknown)"
            },
            t["first_pts_us"],
            t["last_pts_us"],
            t["seek"]["count"].as_u64().unwrap_or(0)
        )?;
    }
    writeln!(out, "integrity")?;
    let i = &d["integrity"];
    match a.layout {
        Layout::H4fs => {
            writeln!(
                out,
                "  structure root  {} ({})",
                i["structure_root"].as_str().unwrap_or(""),
                if a.root_checked {
                    "verified at open"
                } else {
                    "not checked"
                }
            )?;
            writeln!(
                out,
                "  per block       SHA-256 in the index (run `h4fs verify`)"
            )?;
            if let Some(t) = i.get("hash_tree").filter(|t| !t.is_null()) {
                writeln!(
                    out,
                    "  blake3          {} (BLAKE3 of {}; tree of {} groups of {} bytes, checked at open)",
                    t["blake3"].as_str().unwrap_or(""),
                    t["covers"].as_str().unwrap_or(""),
                    t["groups"],
                    t["group_size"],
                )?;
            }
        }
        Layout::ReferenceA => writeln!(
            out,
            "  per block       CRC-32 of each CORE chunk (run `h4fs verify`)"
        )?,
        Layout::MultitrackC => writeln!(out, "  chunk CRCs and file CRC checked at open")?,
    }
    if let Some(v) = a.veri {
        writeln!(
            out,
            "  VERI            {} at offset {} ({})",
            hex::encode(v.expected),
            v.offset,
            if a.needs_veri() {
                "run `h4fs verify`; checked before any byte is output"
            } else {
                "run `h4fs verify --full`"
            }
        )?;
    }
    writeln!(out, "chunks")?;
    writeln!(out, "  {:>12}  {:<4}  {:>12}", "offset", "tag", "payload")?;
    // Non-CORE chunks one per line; CORE chunks as one summary row per track, or with
    // --chunks one line each, written as they are produced.
    if all_chunks {
        for row in all_rows(a) {
            match row {
                Row::Chunk(c) => print_chunk(out, c)?,
                Row::Core { track, entry: e } => writeln!(
                    out,
                    "  {:>12}  CORE  {:>12}  block {} track {track}",
                    e.chunk_offset,
                    e.data_offset + e.stored_len - e.chunk_offset - 12,
                    e.number
                )?,
            }
        }
    } else {
        let mut rows: Vec<(u64, Option<&ChunkInfo>, String)> = Vec::new();
        for c in &a.chunks {
            rows.push((c.offset, Some(c), String::new()));
        }
        for t in d["tracks"].as_array().into_iter().flatten() {
            if let Some(cc) = t["core_chunks"].as_object() {
                let first = cc["first_offset"].as_u64().unwrap_or(0);
                let end = cc["end_offset"].as_u64().unwrap_or(0);
                rows.push((first, None, format!(
                    "  {first:>12}  CORE  {:>12}  x {} blocks of track {} (bytes {first}..{end}; --chunks lists them)",
                    end - first, t["blocks"], t["id"]
                )));
            }
        }
        rows.sort_by_key(|r| r.0);
        for (_, c, line) in rows {
            match c {
                Some(c) => print_chunk(out, c)?,
                None => writeln!(out, "{line}")?,
            }
        }
    }
    for (name, v) in [("META", &d["meta"]), ("SAFE", &d["safe"])] {
        if !v.is_null() {
            writeln!(out, "{name}")?;
            for line in serde_json::to_string_pretty(v).unwrap_or_default().lines() {
                writeln!(out, "  {line}")?;
            }
        }
    }
    Ok(())
}

fn print_chunk(out: &mut impl Write, c: &ChunkInfo) -> std::io::Result<()> {
    writeln!(
        out,
        "  {:>12}  {:<4}  {:>12}",
        c.offset,
        c.tag.to_string(),
        c.payload_len
    )
}
