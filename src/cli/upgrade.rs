//! `h4fs upgrade`.

use crate::output::{Output, OutputOptions};
use crate::reader::Archive;
use anyhow::Context;
use std::path::PathBuf;

/// Rewrite an h4fs v1 container as v2 (a BLAKE3 hash tree over its stored bytes; see
/// `h4fs pack --format`), blocks unchanged.
///
/// Every block is checked against its SHA-256 as it is copied. The result is
/// deterministic and byte-identical to packing the same source with the same options
/// and `--format v2`; it appears only when complete. Encrypted containers and reference
/// files are refused (extract and pack them again).
#[derive(Debug, clap::Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Examples:
  h4fs upgrade movie.h4mk -o movie.v2.h4mk
  h4fs upgrade movie.h4mk -o movie.v2.h4mk --group-size 64KiB
  h4fs inspect movie.v2.h4mk | grep blake3     # b3sum of the original file"
)]
pub struct Args {
    /// The v1 container.
    pub input: PathBuf,
    /// The v2 container to write, or - for stdout. An existing file is replaced only
    /// with --force; it is never the input.
    #[arg(short, long, value_name = "NEW.h4mk")]
    pub output: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Hash group size: a power of two from 1KiB to 16MiB.
    #[arg(long, value_parser = super::pack::parse_group_size, default_value = "16KiB", value_name = "SIZE")]
    pub group_size: u8,
    /// No summary line.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let a = Archive::open(&args.input)?;
    let out = Output::create(
        &args.output,
        &OutputOptions {
            force: args.force,
            inputs: vec![args.input.clone()],
            allow_stdout: true,
            ..OutputOptions::default()
        },
    )?;
    let s = crate::writer::upgrade::upgrade_into(&a, out, args.group_size, &|_| {})
        .with_context(|| format!("cannot upgrade {}", args.input.display()))?;
    if !args.quiet {
        eprintln!(
            "upgraded {} to v2: {} ({} bytes), root {}, blake3 {}",
            args.input.display(),
            args.output.display(),
            s.file_len,
            hex::encode(s.root),
            s.blake3.map(hex::encode).unwrap_or_default()
        );
    }
    Ok(0)
}
