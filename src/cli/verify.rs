//! `h4fs verify`.

use crate::Error;
use crate::reader::OpenCheck;
use serde_json::{Value, json};
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
  h4fs verify --full movie.h4mk     # also the reference VERI over the whole file
  h4fs verify --json movie.h4mk | jq '.failures[].block'

--json prints one object: \"ok\", \"checks\" (structure, blocks, chunks, veri, each with \"ok\"),
\"failures\" (one per failing block or chunk: \"block\", \"offset\", \"kind\",
\"message\"). The exit code is the same as without it.")]
pub struct Args {
    /// The container to verify (.h4mk: h4fs or reference layout A/C): a path, s3://BUCKET/KEY
    /// or an http(s):// URL.
    pub file: PathBuf,
    /// Also check an h4fs container's VERI (SHA-256 over every chunk: one more read and
    /// hash of the whole file). Reference files have it checked without --full.
    #[arg(long)]
    pub full: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the result as JSON on stdout (per check, per failing block); same exit code.
    #[arg(long)]
    pub json: bool,
    /// With a key, every block of an encrypted container is also authenticated.
    #[command(flatten)]
    pub keys: super::keys::KeyArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    let file = super::remote::shown(&args.file);
    let mut a = match super::remote::open_lib(&args.file, OpenCheck::Structure) {
        Ok(a) => a,
        Err(e) if e.is_integrity() => {
            if args.json {
                let checks = vec![json!({"check": "structure", "ok": false})];
                print_json(&mut out, &file, checks, &[e], None)?;
            } else {
                writeln!(out, "DAMAGED {file}: {e}")?;
            }
            return Ok(super::EXIT_DAMAGED);
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot open {file}")));
        }
    };
    if let Err(e) = args.keys.apply(&mut a) {
        if let Some(err) = e.downcast_ref::<Error>().filter(|e| e.is_integrity()) {
            if args.json {
                let checks = vec![
                    json!({"check": "structure", "ok": true}),
                    json!({"check": "authentication", "ok": false}),
                ];
                print_json(&mut out, &file, checks, std::slice::from_ref(err), None)?;
            } else {
                writeln!(out, "BAD {err}")?;
                writeln!(out, "DAMAGED {file}: a block failed while decrypting")?;
            }
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
    let code = if report.ok() { 0 } else { super::EXIT_DAMAGED };
    if args.json {
        let block_failures = report
            .failures
            .iter()
            .filter(|f| block_of(f).is_some())
            .count();
        let mut checks = vec![
            json!({"check": "structure", "ok": true, "root_checked": a.root_checked}),
            json!({
                "check": "blocks",
                "ok": block_failures == 0,
                "checked": report.blocks_checked,
                "bytes": report.bytes_checked,
                "failed": block_failures,
                "authenticated": a.key_attached(),
            }),
        ];
        let is_veri = |f: &Error| matches!(f, Error::VeriMismatch { .. });
        // Everything else: chunk CRCs, the index CRC, the chunk sequence.
        let chunk_failures = report
            .failures
            .iter()
            .filter(|f| block_of(f).is_none() && !is_veri(f))
            .count();
        checks
            .push(json!({"check": "chunks", "ok": chunk_failures == 0, "failed": chunk_failures}));
        if report.veri_checked {
            let veri_ok = !report.failures.iter().any(is_veri);
            checks.push(json!({"check": "veri", "ok": veri_ok}));
        }
        let encrypted = a.encryption.is_some();
        print_json(&mut out, &file, checks, &report.failures, Some(encrypted))?;
        return Ok(code);
    }
    let structure = if a.root_checked {
        "structure root ok, "
    } else {
        ""
    };
    if report.ok() {
        writeln!(
            out,
            "ok {file}: {structure}{} blocks ({} bytes) verified{}{}",
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
    } else {
        for f in &report.failures {
            writeln!(out, "BAD {f}")?;
        }
        writeln!(
            out,
            "DAMAGED {file}: {} problem(s) in {} blocks checked",
            report.failures.len(),
            report.blocks_checked
        )?;
    }
    Ok(code)
}

/// The block a failure is about, if it is about one.
fn block_of(e: &Error) -> Option<u64> {
    match e {
        Error::BlockHash { block, .. }
        | Error::BlockCrc { block, .. }
        | Error::Block { block, .. }
        | Error::BlockAuth { block, .. }
        | Error::Index { block, .. } => Some(*block),
        _ => None,
    }
}

/// One failure as JSON: which block (or chunk), where, what kind, the message.
fn failure_json(e: &Error) -> Value {
    let (kind, offset) = match e {
        Error::BlockHash { offset, .. } => ("sha256", Some(*offset)),
        Error::BlockCrc { offset, .. } | Error::CrcMismatch { offset, .. } => {
            ("crc32", Some(*offset))
        }
        Error::BlockAuth { offset, .. } => ("authentication", Some(*offset)),
        Error::Block { offset, .. } => ("block", Some(*offset)),
        Error::Index { .. } => ("index", None),
        Error::VeriMismatch { offset, .. } => ("veri", Some(*offset)),
        Error::RootMismatch { offset, .. } => ("structure-root", Some(*offset)),
        Error::Chunk { offset, .. } | Error::Json { offset, .. } => ("chunk", Some(*offset)),
        Error::Truncated { offset, .. } => ("truncated", Some(*offset)),
        Error::Io { .. } => ("io", None),
        _ => ("other", None),
    };
    json!({
        "block": block_of(e),
        "offset": offset,
        "kind": kind,
        "message": e.to_string(),
    })
}

fn print_json(
    out: &mut impl Write,
    file: &str,
    checks: Vec<Value>,
    failures: &[Error],
    encrypted: Option<bool>,
) -> std::io::Result<()> {
    let ok = failures.is_empty() && checks.iter().all(|c| c["ok"] == true);
    let mut v = json!({
        "file": file,
        "ok": ok,
        "checks": checks,
        "failures": failures.iter().map(failure_json).collect::<Vec<_>>(),
    });
    if let Some(enc) = encrypted {
        v["encrypted"] = json!(enc);
    }
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&v).expect("JSON values serialize")
    )
}
