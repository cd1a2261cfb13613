//! `h4fs verify`.

use crate::reader::{Archive, OpenCheck};
use std::io::Write;
use std::path::PathBuf;

/// Verify a container: its structure, then every block against its SHA-256 (h4fs) or
/// CRC-32 (reference layouts), on all cores. Exit 0 when intact, 1 when not, naming each
/// bad chunk or block and its offset.
///
/// "ok" also means the reference's parser reads the file: every chunk CRC (CORE chunks
/// of h4fs containers included), the reserved header bytes, and no bytes between
/// chunks. A reference file (layout A without the h4fs index) always has its
/// whole-file VERI checked, since its blocks carry only CRC-32.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  h4fs verify movie.h4mk
  h4fs verify --full movie.h4mk     # also the reference VERI over the whole file")]
pub struct Args {
    pub file: PathBuf,
    /// Also check an h4fs container's VERI (SHA-256 over every chunk: one more read and
    /// hash of the whole file). Reference files have it checked without --full.
    #[arg(long)]
    pub full: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    /// With a key, every block of an encrypted container is also authenticated.
    #[command(flatten)]
    pub keys: super::keys::KeyArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    let mut a = match Archive::open_with(&args.file, OpenCheck::Structure) {
        Ok(a) => a,
        Err(e) if e.is_integrity() => {
            writeln!(out, "DAMAGED {}: {e}", args.file.display())?;
            return Ok(super::EXIT_DAMAGED);
        }
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("cannot open {}", args.file.display()))
            );
        }
    };
    if let Err(e) = args.keys.apply(&mut a) {
        if let Some(err) = e
            .downcast_ref::<crate::Error>()
            .filter(|e| e.is_integrity())
        {
            writeln!(out, "BAD {err}")?;
            writeln!(
                out,
                "DAMAGED {}: a block failed while decrypting",
                args.file.display()
            )?;
            return Ok(super::EXIT_DAMAGED);
        }
        return Err(e);
    }
    let total = a.file_len
        * if crate::verify::checks_veri(&a, args.full) {
            2
        } else {
            1
        };
    let bar = super::progress::bytes_bar(total, "verify", args.quiet);
    let report = crate::verify::verify(&a, args.full, &|n| bar.inc(n));
    bar.finish_and_clear();
    let structure = if a.root_checked {
        "structure root ok, "
    } else {
        ""
    };
    if report.ok() {
        writeln!(
            out,
            "ok {}: {structure}{} blocks ({} bytes) verified{}{}",
            args.file.display(),
            report.blocks_checked,
            report.bytes_checked,
            if report.veri_checked { ", VERI ok" } else { "" },
            if a.key_attached() {
                ", every block authenticated with the key"
            } else if a.encryption.is_some() {
                " (encrypted: integrity only; with --key-file every block is also authenticated)"
            } else {
                ""
            }
        )?;
        Ok(0)
    } else {
        for f in &report.failures {
            writeln!(out, "BAD {f}")?;
        }
        writeln!(
            out,
            "DAMAGED {}: {} problem(s) in {} blocks checked",
            args.file.display(),
            report.failures.len(),
            report.blocks_checked
        )?;
        Ok(super::EXIT_DAMAGED)
    }
}
