//! `h4fs seek`.

use super::TrackArg;
use crate::reader::Archive;
use anyhow::Context;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// Find the keyframe block at or before PTS (where decoding starts) and the block
/// containing PTS (the last block whose pts is at or before it), by binary search.
///
/// A reference file (layout A without the h4fs index) has its whole-file VERI checked
/// first, since nothing else shows its blocks are the ones written: one read and
/// SHA-256 of the whole file.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  h4fs seek movie.h4mk 5000000
  h4fs seek --json --track 1 multitrack.h4mk 100000")]
pub struct Args {
    pub file: PathBuf,
    /// Presentation time in microseconds.
    pub pts_us: u64,
    #[command(flatten)]
    pub track: TrackArg,
    /// Machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    let a = Archive::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    super::check_veri_first(&a, &args.file, "it answers from the blocks")?;
    let t = &a.tracks[args.track.resolve(&a)?];
    let key = t.keyframe_at_or_before(args.pts_us);
    let containing = t.block_at(args.pts_us);
    let chain = t.decode_chain(args.pts_us);
    let entry = |n: u64| {
        let e = t.blocks.get(n).expect("resolved block exists");
        json!({"block": n, "pts_us": e.pts_us, "keyframe": e.keyframe, "stream_offset": e.stream_offset, "size": e.decoded_len, "chunk_offset": e.chunk_offset})
    };
    if args.json {
        let doc = json!({
            "pts_us": args.pts_us,
            "track": t.id,
            "keyframe": key.map(|(p, n)| { let mut v = entry(n); v["seek_entry"] = json!(p); v }),
            "containing": containing.map(entry),
            "decode_chain": chain,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        match key {
            Some((_, n)) => {
                let e = t.blocks.get(n).expect("exists");
                writeln!(
                    out,
                    "keyframe   block {n}  pts {} us  stream offset {}  size {}",
                    e.pts_us, e.stream_offset, e.decoded_len
                )?;
            }
            None => writeln!(out, "keyframe   none at or before {} us", args.pts_us)?,
        }
        match containing {
            Some(n) => {
                let e = t.blocks.get(n).expect("exists");
                writeln!(
                    out,
                    "containing block {n}  pts {} us  stream offset {}  size {}",
                    e.pts_us, e.stream_offset, e.decoded_len
                )?;
            }
            None => writeln!(
                out,
                "containing none: {} us is before the first block",
                args.pts_us
            )?,
        }
        if let Some(c) = chain
            && c.len() > 1
        {
            writeln!(
                out,
                "chain      blocks {}..={} ({} blocks to decode)",
                c[0],
                c[c.len() - 1],
                c.len()
            )?;
        }
    }
    if key.is_none() && containing.is_none() {
        return Ok(super::EXIT_ERROR);
    }
    Ok(0)
}
