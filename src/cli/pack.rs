//! `h4fs pack`.

use super::size::parse_size;
use crate::engine::Engine;
use crate::output::{Output, OutputOptions};
use crate::writer::{self, Input, PackOptions};
use anyhow::{Context, bail};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::PathBuf;

/// Pack a media file (or a directory of files) into an h4fs container.
///
/// Four input forms:
///   * FILE --media: blocks at the packets of its first video stream (else its first
///     audio stream), with presentation times and keyframes from ffprobe.
///   * FILE --index CSV: blocks at the CSV's byte ranges, with its pts and keyframes
///     (scripts/ffprobe-index.sh writes one for a real MP4/MKV/TS).
///   * FILE --block-size SIZE: fixed-size blocks; pts = i * floor(1e6/fps), a keyframe
///     every --gop blocks.
///   * DIRECTORY: one block per regular file directly inside it, in byte order of the
///     names; the names are recorded (META "names", by-name/ in a mount).
///
/// The output is deterministic (same input and options give the same bytes) and appears
/// only when complete; an interrupted pack leaves nothing. A symbolic link, FIFO, socket
/// or device inside a directory input is refused (see --follow-symlinks).
#[derive(Debug, clap::Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Examples:
  h4fs pack movie.mp4 --media -o movie.h4mk
  h4fs pack capture.raw --block-size 1MiB --fps 25 --gop 25 -o capture.h4mk
  scripts/ffprobe-index.sh movie.mp4 > movie.csv
  h4fs pack movie.mp4 --index movie.csv -o movie.h4mk
  h4fs pack frames/ --fps 30 --gop 30 -o frames.h4mk --meta camera=\\\"cam-2\\\"
  h4fs pack movie.mp4 --media -o movie.h4mk --json | jq .root
  h4fs pack movie.mp4 --media --format v1 -o movie.v1.h4mk   # the previous layout"
)]
pub struct Args {
    /// Input file or directory.
    pub input: PathBuf,
    /// Output container, or - for stdout. An existing file is replaced only with --force;
    /// a device or FIFO is written directly.
    #[arg(short, long, value_name = "OUT.h4mk")]
    pub output: PathBuf,
    /// Replace an existing output file (never an input, a directory or a symbolic link).
    #[arg(long)]
    pub force: bool,
    /// For a directory input: pack the files that symbolic links in it point to
    /// (by default a symbolic link is refused, naming it).
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Block size for a file cut into fixed blocks (bytes; K, M, G suffixes, powers of
    /// 1024, also written KiB, MiB, GiB).
    #[arg(long, value_parser = parse_size, conflicts_with = "index")]
    pub block_size: Option<u64>,
    /// Block index CSV: header `offset,size,pts_us,keyframe[,duration_us]`, rows tiling
    /// the input; an optional `# start_time_us=N` line before the header records where
    /// the media's clock starts (scripts/ffprobe-index.sh writes both).
    #[arg(long, value_name = "FILE.csv")]
    pub index: Option<PathBuf>,
    /// Probe the input with ffprobe (must be installed) and cut it at the packets of its
    /// first video stream (else first audio stream), with presentation times relative to
    /// the media's start and real keyframes: what `scripts/ffprobe-index.sh` and --index do
    /// in one step. Refuses input that is not audio or video.
    #[arg(long, conflicts_with_all = ["index", "block_size"])]
    pub media: bool,
    /// Frames (blocks) per second, for pts of fixed blocks and directory entries.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// A keyframe every GOP blocks (block 0 is one).
    #[arg(long, default_value_t = 30)]
    pub gop: u64,
    /// Compression engine for the blocks.
    #[arg(long, default_value = "identity", value_parser = ["identity", "geometric-reference"])]
    pub engine: String,
    /// META "project".
    #[arg(long, default_value = "h4fs")]
    pub project: String,
    /// META "domain".
    #[arg(long, default_value = "video-transport")]
    pub domain: String,
    /// Extra META field KEY=VALUE (VALUE is JSON if it parses, else a string). Repeatable.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// A JSON object file of extra META fields.
    #[arg(long, value_name = "FILE.json")]
    pub meta_file: Option<PathBuf>,
    /// A creation timestamp to record in META (h4fs never reads the clock).
    #[arg(long, value_name = "TEXT")]
    pub created: Option<String>,
    /// Worker threads for hashing (default: all cores). Output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print what was written as JSON on stdout (output path, sizes, blocks, keyframes,
    /// root, VERI, engine, encryption) instead of the summary line on stderr.
    #[arg(long)]
    pub json: bool,
    /// Encrypt every block (AES-256-GCM under a per-container key) with the master key
    /// from --key-file or $H4FS_KEY_FILE (create one with `h4fs keygen -o FILE`).
    #[arg(long)]
    pub encrypt: bool,
    /// Master key file for --encrypt (default: $H4FS_KEY_FILE).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Container layout: v2 (a BLAKE3 hash tree over the stored bytes in --group-size
    /// groups: reads verify only the groups they touch, `verify` hashes on all cores, and
    /// for a plain container the tree's root is `b3sum` of the input, shown by
    /// `inspect`) or v1 (blocks checked by their SHA-256 only; `h4fs upgrade` turns it
    /// into v2).
    #[arg(long, default_value = "v2", value_parser = ["v1", "v2"])]
    pub format: String,
    /// Hash group size of a v2 container: a power of two from 1KiB to 16MiB.
    #[arg(long, value_parser = parse_group_size, default_value = "16KiB", value_name = "SIZE")]
    pub group_size: u8,
}

/// Parse a hash group size ("16KiB") into its base-2 logarithm.
pub fn parse_group_size(s: &str) -> Result<u8, String> {
    use crate::format::outboard::{MAX_GROUP_LOG, MIN_GROUP_LOG};
    let n = parse_size(s)?;
    if !n.is_power_of_two()
        || !(MIN_GROUP_LOG..=MAX_GROUP_LOG).contains(&(n.trailing_zeros() as u8))
    {
        return Err(format!(
            "\"{s}\" is not a hash group size: a power of two from 1KiB to 16MiB"
        ));
    }
    Ok(n.trailing_zeros() as u8)
}

fn extra_meta(args: &Args) -> anyhow::Result<Map<String, Value>> {
    let mut m = Map::new();
    if let Some(p) = &args.meta_file {
        let text = crate::input::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", p.display()))?;
        let Value::Object(obj) = v else {
            bail!("{} must hold a JSON object", p.display());
        };
        m.extend(obj);
    }
    for kv in &args.meta {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--meta \"{kv}\" must be KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--meta \"{kv}\" has an empty key");
        }
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        m.insert(k.to_string(), v);
    }
    Ok(m)
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        // Only fails if a pool already exists, which cannot happen this early.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    if !args.input.exists() {
        bail!("input {} does not exist", args.input.display());
    }
    if args.json && args.output.as_os_str() == "-" {
        bail!(
            "--json prints to standard output, which -o - uses for the container: write the \
             container to a file, or drop --json"
        );
    }
    let mut start_time_us = None;
    let mut media = serde_json::Value::Null;
    let input = if args.input.is_dir() {
        if args.block_size.is_some() || args.index.is_some() || args.media {
            bail!("a directory input takes one block per file: drop --block-size/--index/--media");
        }
        Input::Directory {
            path: args.input.clone(),
            fps: args.fps,
            gop: args.gop,
            follow_symlinks: args.follow_symlinks,
        }
    } else if args.media {
        let size = std::fs::metadata(&args.input)
            .with_context(|| format!("cannot stat {}", args.input.display()))?
            .len();
        let plan = super::probe::plan(&args.input, size)?;
        start_time_us = Some(plan.start_time_us);
        media = serde_json::json!({
            "codec_type": plan.codec_type,
            "codec_name": plan.codec_name,
            "start_time_us": plan.start_time_us,
        });
        Input::Indexed {
            path: args.input.clone(),
            rows: plan.rows,
        }
    } else if let Some(csv) = &args.index {
        let text = crate::input::read_to_string(csv)
            .with_context(|| format!("cannot read index {}", csv.display()))?;
        let rows = writer::parse_index_csv(&text, &csv.display().to_string())?;
        start_time_us = writer::index_csv_start_time(&text, &csv.display().to_string())?;
        Input::Indexed {
            path: args.input.clone(),
            rows,
        }
    } else {
        let Some(block_size) = args.block_size else {
            bail!("packing a file needs --media, --index FILE.csv or --block-size SIZE");
        };
        Input::Fixed {
            path: args.input.clone(),
            block_size,
            fps: args.fps,
            gop: args.gop,
        }
    };
    if args.gop == 0 {
        bail!("--gop must be at least 1");
    }
    writer::frame_us(args.fps)?;
    let key = if args.encrypt {
        let path = args
            .key_file
            .clone()
            .or_else(|| std::env::var_os("H4FS_KEY_FILE").map(PathBuf::from))
            .context(
                "--encrypt needs --key-file FILE (or H4FS_KEY_FILE); create a key with \
                 `h4fs keygen -o FILE`",
            )?;
        Some(super::keys::load_key(&path)?)
    } else if args.key_file.is_some() {
        bail!("--key-file encrypts only together with --encrypt");
    } else {
        None
    };
    let opts = PackOptions {
        engine: Engine::from_name(&args.engine).expect("clap checked the engine name"),
        project: args.project.clone(),
        domain: args.domain.clone(),
        meta_extra: extra_meta(&args)?,
        created: args.created.clone(),
        key,
        start_time_us,
        format: match args.format.as_str() {
            "v2" => writer::Format::V2 {
                group_log: args.group_size,
            },
            _ => writer::Format::V1,
        },
        ..PackOptions::default()
    };
    // The input is opened (or listed) once: that one open is sized here and packed.
    let input = input.open()?;
    let total = input.total_len();
    let read: Vec<PathBuf> = [
        Some(&args.input),
        args.index.as_ref(),
        args.meta_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .cloned()
    .chain(args.key_file.clone().or_else(|| {
        args.encrypt
            .then(|| std::env::var_os("H4FS_KEY_FILE").map(PathBuf::from))
            .flatten()
    }))
    .collect();
    let out = Output::create(
        &args.output,
        &OutputOptions {
            force: args.force,
            inputs: read,
            allow_stdout: true,
            ..OutputOptions::default()
        },
    )?;
    let bar = super::progress::bytes_bar(total, "pack", args.quiet);
    let summary = writer::pack_open_into(&input, out, &opts, &|done| bar.set_position(done))?;
    bar.finish_and_clear();
    let key_id = opts.key.as_ref().map(crate::crypto::container::key_id_hex);
    if args.json {
        let v = serde_json::json!({
            "output": args.output.display().to_string(),
            "file_size": summary.file_len,
            "stream_size": summary.stream_len,
            "blocks": summary.blocks,
            "keyframes": summary.keyframes,
            "root": hex::encode(summary.root),
            "veri": hex::encode(summary.veri),
            "format": args.format,
            "blake3": summary.blake3.map(hex::encode),
            "engine": args.engine,
            "encrypted": key_id.is_some(),
            "key_id": key_id,
            "media": media,
        });
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).expect("JSON values serialize")
        )?;
    } else if !args.quiet {
        eprintln!(
            "packed {} ({}, {} bytes) into {} ({} bytes), root {}{}",
            plural(summary.blocks, "block"),
            plural(summary.keyframes, "keyframe"),
            summary.stream_len,
            args.output.display(),
            summary.file_len,
            hex::encode(summary.root),
            match &key_id {
                Some(id) => format!(", encrypted (AES-256-GCM) with key id {id}"),
                None => String::new(),
            }
        );
    }
    Ok(0)
}

/// "1 block", "2 blocks".
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
