//! `h4fs seek`.

use super::TrackArg;
use crate::reader::Archive;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// Find the keyframe block at or before a time (where decoding starts) and the block
/// containing it (the last block whose pts is at or before it), by binary search.
///
/// Times count from the start of the media as players do (time 0 is where `ffmpeg -ss 0`
/// starts, whatever the stream's own clock says; see `start_time_us` in META).
/// A time before the first keyframe answers with the first keyframe. A time past the end
/// of the media answers with the last keyframe and a warning, or fails with --strict.
///
/// A reference file (layout A without the h4fs index) has its whole-file VERI checked
/// first, since nothing else shows its blocks are the ones written: one read and
/// SHA-256 of the whole file.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  h4fs seek movie.h4mk 5000000
  h4fs seek movie.h4mk 12.5s
  h4fs seek movie.h4mk 00:01:30.5
  h4fs seek --json --track 1 multitrack.h4mk 100ms")]
pub struct Args {
    /// The container: a path, s3://BUCKET/KEY or an http(s):// URL.
    pub file: PathBuf,
    /// Presentation time: microseconds, or 12s, 12.5s, 1500ms, 00:01:30.5.
    #[arg(value_name = "TIME", value_parser = crate::time::parse_time_arg, allow_hyphen_values = true)]
    pub pts_us: u64,
    #[command(flatten)]
    pub track: TrackArg,
    /// Machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// A time past the end of the media is an error (exit 3), not a warning.
    #[arg(long)]
    pub strict: bool,
}

/// Warn about (or, with `strict`, refuse) a time past the end of track `ti`.
pub(crate) fn check_end(a: &Archive, ti: usize, pts: u64, strict: bool) -> anyhow::Result<bool> {
    if !a.is_past_end(ti, pts) {
        return Ok(false);
    }
    let msg = format!(
        "{pts} us is past the end of the media ({} us)",
        a.end_us(ti)
    );
    if strict {
        anyhow::bail!("{msg}");
    }
    eprintln!("h4fs: warning: {msg}; answering with the last keyframe");
    Ok(true)
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    let a = super::remote::open(&args.file, crate::reader::OpenCheck::Structure)?;
    super::check_veri_first(&a, &args.file, "it answers from the blocks")?;
    let ti = args.track.resolve(&a)?;
    let t = &a.tracks[ti];
    let past_end = check_end(&a, ti, args.pts_us, args.strict)?;
    let key = t.keyframe_at_or_before(args.pts_us);
    let containing = t.block_at(args.pts_us);
    let chain = t.decode_chain(args.pts_us);
    let before_first = key.is_some_and(|(p, _)| args.pts_us < p.pts_us);
    let entry = |n: u64| {
        let e = t.blocks.get(n).expect("resolved block exists");
        json!({"block": n, "pts_us": e.pts_us, "keyframe": e.keyframe, "stream_offset": e.stream_offset, "size": e.decoded_len, "chunk_offset": e.chunk_offset})
    };
    if args.json {
        let doc = json!({
            "pts_us": args.pts_us,
            "track": t.id,
            "start_time_us": a.start_time_us(),
            "before_first_keyframe": before_first,
            "past_end": past_end,
            "keyframe": key.map(|(p, n)| { let mut v = entry(n); v["seek_entry"] = json!(p); v }),
            "containing": containing.map(entry),
            "decode_chain": chain,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        match key {
            Some((_, n)) => {
                let e = t.blocks.get(n).expect("exists");
                let note = if before_first {
                    "  (the first keyframe: the time is before it)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "keyframe   block {n}  pts {} us  stream offset {}  size {}{note}",
                    e.pts_us, e.stream_offset, e.decoded_len
                )?;
            }
            None => writeln!(out, "keyframe   none: the seek table names no block")?,
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
    if key.is_none() {
        return Ok(super::EXIT_ERROR);
    }
    Ok(0)
}
