//! `h4fs cat` and `h4fs extract`. Both read each block (or, for a plain v2 container,
//! each hash group of the range) once, through the reader's checked path (see
//! [`crate::extract`]); the block layer's cache is for the mount.

use super::TrackArg;
use crate::extract::{write_checked_stream, write_stream};
use crate::output::{Output, OutputOptions};
use crate::reader::OpenCheck;
use anyhow::{Context, bail};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Write decoded bytes to stdout: one block, the block for a time, a byte range of the
/// stream, or the whole stream. Every block is verified before any of its bytes are
/// written; for a plain v2 container (identity engine) a range verifies only the 16 KiB
/// hash groups it overlaps, whatever the block size.
///
/// A reference file (layout A without the h4fs index) has its whole-file VERI checked
/// first, since its blocks carry only CRC-32: one read and SHA-256 of the whole file
/// before the first byte.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  h4fs cat movie.h4mk --block 12 > block12.bin
  h4fs cat movie.h4mk --pts 12.5s > keyframe.bin
  h4fs cat clip.h4mk --pts 5s --chain | ffprobe -   # MPEG-TS: a chain is a playable stream
  h4fs cat movie.h4mk --range 0-1048575 | sha256sum
  h4fs cat --raw --block 0 unknown-engine.h4mk | xxd")]
pub struct CatArgs {
    /// The container to read from (.h4mk: h4fs or reference layout A/C): a path, s3://BUCKET/KEY
    /// or an http(s):// URL.
    pub file: PathBuf,
    /// Block number (within the track).
    #[arg(long, group = "what")]
    pub block: Option<u64>,
    /// The keyframe block at or before this time, as by-pts/ does: microseconds, or
    /// 12s, 12.5s, 1500ms, 00:01:30.5 (from the start of the media; before the first
    /// keyframe gives the first keyframe).
    #[arg(long, group = "what", value_name = "TIME", value_parser = crate::time::parse_time_arg, allow_hyphen_values = true)]
    pub pts: Option<u64>,
    /// With --pts: the whole decode chain, from that keyframe to the block containing PTS.
    #[arg(long, requires = "pts")]
    pub chain: bool,
    /// With --pts: a time past the end of the media is an error, not a warning.
    #[arg(long, requires = "pts")]
    pub strict: bool,
    /// Stream bytes A through B inclusive ("A-B"), or from A to the end ("A-").
    #[arg(long, group = "what", value_name = "A-B")]
    pub range: Option<String>,
    /// With --block: the stored bytes (still checked against their hash or CRC), not
    /// decoded; works for unknown engines.
    #[arg(long, requires = "block")]
    pub raw: bool,
    #[command(flatten)]
    pub track: TrackArg,
    #[command(flatten)]
    pub keys: super::keys::KeyArgs,
}

/// Extract the whole decoded stream (the original media file) to OUT, verified. OUT
/// appears only when complete.
///
/// A reference file (layout A without the h4fs index) also has its whole-file VERI
/// checked, on a second thread while the blocks are written (before the first byte when
/// OUT is `-`, a FIFO or a device); on a mismatch nothing appears at OUT and the exit
/// code is 1.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  h4fs extract movie.h4mk -o movie.mp4
  h4fs extract movie.h4mk -o - | mpv -")]
pub struct ExtractArgs {
    /// The container to extract (.h4mk: h4fs or reference layout A/C): a path, s3://BUCKET/KEY
    /// or an http(s):// URL.
    pub file: PathBuf,
    /// Output file, or - for stdout. An existing file is replaced only with --force; a
    /// device, FIFO or socket is written directly; a symbolic link is refused unless it
    /// leads to one of those. The plaintext of an encrypted container is created 0600.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace an existing output file (never the container itself, a directory or a
    /// symbolic link).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub track: TrackArg,
    #[command(flatten)]
    pub keys: super::keys::KeyArgs,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_range(s: &str, stream_len: u64) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--range \"{s}\" must be A-B or A-"))?;
    let a: u64 = a
        .trim()
        .parse()
        .with_context(|| format!("--range start \"{a}\" is not a number"))?;
    if a >= stream_len && stream_len > 0 || (stream_len == 0 && a > 0) {
        bail!("--range starts at {a}, but the stream has {stream_len} bytes");
    }
    let end = if b.trim().is_empty() {
        stream_len
    } else {
        let b: u64 = b
            .trim()
            .parse()
            .with_context(|| format!("--range end \"{b}\" is not a number"))?;
        if b < a {
            bail!("--range end {b} is before its start {a}");
        }
        (b + 1).min(stream_len)
    };
    Ok((a, end - a))
}

pub fn run_cat(args: CatArgs) -> anyhow::Result<u8> {
    let mut a = super::remote::open(&args.file, OpenCheck::Structure)?;
    super::check_veri_first(&a, &args.file, "any of its bytes is output")?;
    args.keys.apply(&mut a)?;
    let ti = args.track.resolve(&a)?;
    let t = &a.tracks[ti];
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    if let Some(n) = args.block {
        let e = a.entry(ti, n)?;
        if args.raw {
            out.write_all(&a.read_stored_entry(&e)?)?;
        } else {
            out.write_all(a.read_block_entry(&e)?.bytes())?;
        }
    } else if let Some(pts) = args.pts {
        super::seek::check_end(&a, ti, pts, args.strict)?;
        let Some((_, key)) = t.keyframe_at_or_before(pts) else {
            bail!("no keyframe for {pts} us: the seek table names no block");
        };
        let last = if args.chain {
            t.decode_chain(pts)
                .and_then(|c| c.last().copied())
                .unwrap_or(key)
        } else {
            key
        };
        for n in key..=last {
            out.write_all(a.read_block(ti, n)?.bytes())?;
        }
    } else {
        let (offset, len) = match &args.range {
            Some(r) => parse_range(r, t.stream_len())?,
            None => (0, t.stream_len()),
        };
        write_stream(&a, ti, offset, len, &mut out, &|_| {})?;
    }
    out.flush()?;
    Ok(0)
}

pub fn run_extract(args: ExtractArgs) -> anyhow::Result<u8> {
    let mut a = super::remote::open(&args.file, OpenCheck::Structure)?;
    args.keys.apply(&mut a)?;
    let ti = args.track.resolve(&a)?;
    let len = a.tracks[ti].stream_len();
    let out = Output::create(
        &args.output,
        &OutputOptions {
            force: args.force,
            mode: output_mode(&args.file, a.encryption.is_some())?,
            inputs: args
                .keys
                .files()
                .chain(Some(args.file.clone()).filter(|f| !super::remote::is_remote(f)))
                .collect(),
            allow_stdout: true,
            ..OutputOptions::default()
        },
    )?;
    let to_stdout = args.output == Path::new("-");
    // A reference container's VERI: bytes on stdout, a pipe or a device cannot be taken
    // back, so it is checked before the first one; a file is only put in place by
    // `commit`, so there it is checked while the blocks are written, and on a mismatch
    // the file is dropped and nothing appears at OUT.
    let retractable = out.file().is_some();
    if !retractable {
        super::check_veri_first(&a, &args.file, "any of its bytes is output")?;
    }
    let bar = super::progress::bytes_bar(len, "extract", args.quiet || to_stdout);
    let mut w = BufWriter::with_capacity(1 << 20, out);
    if retractable {
        write_checked_stream(&a, ti, &mut w, &|n| bar.inc(n))
            .with_context(|| format!("nothing was written to {}", args.output.display()))?;
    } else {
        write_stream(&a, ti, 0, len, &mut w, &|n| bar.inc(n))?;
    }
    let out = w.into_inner().map_err(|e| e.into_error())?;
    bar.finish_and_clear();
    out.commit()?;
    Ok(0)
}

/// Permission bits for a new output file: 0666 (less the umask) for a plain container;
/// for the plaintext of an encrypted one 0600, and never wider than the container's own
/// permissions.
fn output_mode(container: &Path, encrypted: bool) -> anyhow::Result<u32> {
    if !encrypted {
        return Ok(0o666);
    }
    if super::remote::is_remote(container) {
        return Ok(0o600);
    }
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(container)
        .with_context(|| format!("cannot examine {}", container.display()))?;
    Ok(0o600 & md.mode())
}
