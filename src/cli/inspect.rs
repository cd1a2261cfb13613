//! `h4fs inspect`.

use crate::reader::{Archive, Layout, OpenCheck};
use anyhow::Context;
use serde_json::{Value, json};
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
    pub file: PathBuf,
    /// Machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// List every CORE chunk too (one line per block).
    #[arg(long)]
    pub chunks: bool,
    #[command(flatten)]
    pub keys: super::keys::KeyArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut a = Archive::open_with(&args.file, OpenCheck::Structure)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    args.keys.apply(&mut a)?;
    let doc = describe(&a, args.chunks);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        print_human(&mut out, &a, &doc, &args.file)?;
    }
    Ok(0)
}

/// A JSON description of a container.
pub fn describe(a: &Archive, all_chunks: bool) -> Value {
    let mut chunks: Vec<Value> = a
        .chunks
        .iter()
        .map(|c| json!({"tag": c.tag.to_string(), "offset": c.offset, "payload_len": c.payload_len, "total_len": c.total_len}))
        .collect();
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
            if all_chunks {
                for i in 0..n {
                    let e = t.blocks.get(i).expect("i < n");
                    chunks.push(json!({"tag": "CORE", "offset": e.chunk_offset, "payload_len": e.data_offset + e.stored_len - e.chunk_offset - 12, "block": i, "track": t.id}));
                }
            }
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
    chunks.sort_by_key(|c| c["offset"].as_u64());
    let integrity = match a.layout {
        Layout::H4fs => {
            let (at, f) = a.footer.expect("h4fs has a footer");
            json!({
                "structure_root": hex::encode(f.root),
                "structure_root_checked": a.root_checked,
                "footer_offset": at,
                "per_block": "sha256",
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
            "  VERI            {} at offset {} (run `h4fs verify --full`)",
            hex::encode(v.expected),
            v.offset
        )?;
    }
    writeln!(out, "chunks")?;
    writeln!(out, "  {:>12}  {:<4}  {:>12}", "offset", "tag", "payload")?;
    // Non-CORE chunks one per line; CORE chunks as one summary row per track unless
    // --chunks listed them.
    let listed_cores = d["chunks"]
        .as_array()
        .is_some_and(|v| v.iter().any(|c| c["tag"] == "CORE"));
    let mut rows: Vec<(u64, String)> = Vec::new();
    for c in d["chunks"].as_array().into_iter().flatten() {
        let off = c["offset"].as_u64().unwrap_or(0);
        let tag = c["tag"].as_str().unwrap_or("");
        let plen = c["payload_len"].as_u64().unwrap_or(0);
        let extra = if tag == "CORE" {
            format!("  block {} track {}", c["block"], c["track"])
        } else {
            String::new()
        };
        rows.push((off, format!("  {off:>12}  {tag:<4}  {plen:>12}{extra}")));
    }
    if !listed_cores {
        for t in d["tracks"].as_array().into_iter().flatten() {
            if let Some(cc) = t["core_chunks"].as_object() {
                let first = cc["first_offset"].as_u64().unwrap_or(0);
                let end = cc["end_offset"].as_u64().unwrap_or(0);
                rows.push((first, format!(
                    "  {first:>12}  CORE  {:>12}  x {} blocks of track {} (bytes {first}..{end}; --chunks lists them)",
                    end - first, t["blocks"], t["id"]
                )));
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    for (_, line) in rows {
        writeln!(out, "{line}")?;
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
