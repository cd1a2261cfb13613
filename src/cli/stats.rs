//! `h4fs stats`: the live counters of a mount, asked of its daemon.
//!
//! The counters are the value of the extended attribute [`STATS_XATTR`] of the mount
//! root, which the daemon computes when asked and `listxattr` does not list: they are
//! not a file in the tree, so a mirror of the mount (`rsync -a`, `cp -a`) never copies
//! them and never sees the tree change as files are read.

use crate::fs::STATS_XATTR;
use anyhow::{Context, bail};
use serde_json::Value;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Show the live counters of an h4fs mount: cache hits, misses, evictions and
/// prefetches, bytes served, blocks and hash groups verified (v2), verification failures, and the
/// containers of a directory SOURCE that were left out.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  h4fs stats /mnt/movie
  h4fs stats --json /mnt/library | jq .cache.hits
  getfattr -n user.h4fs.stats --only-values /mnt/movie    # the same, compact JSON

The counters come from the daemon (the extended attribute user.h4fs.stats of the
mount root, not listed by listxattr), not from a file in the tree, so copies of the
mount made with rsync, cp or tar stay stable.")]
pub struct Args {
    /// Where the h4fs mount is (its root directory).
    pub mountpoint: PathBuf,
    /// Print the counters as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mp = mount_root(&args.mountpoint)?;
    let stats = read_stats(&mp)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &stats)?;
        writeln!(out)?;
    } else {
        print_human(&mut out, &mp, &stats)?;
    }
    Ok(0)
}

/// The mount point `p` names, checked in /proc/self/mountinfo to be an h4fs mount
/// before anything reads from it.
fn mount_root(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = super::mount::absolute(p)?;
    let found = match super::mount::find_mount(&abs) {
        Some(m) => Some(m),
        None => match std::fs::symlink_metadata(&abs) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{} does not exist", abs.display())
            }
            // Not a mount point itself: safe to resolve (a symlink to one, say).
            _ => abs
                .canonicalize()
                .ok()
                .and_then(|real| super::mount::find_mount(&real)),
        },
    };
    let Some(m) = found else {
        bail!(
            "{} is not a mount point (give the directory an h4fs mount is mounted on)",
            abs.display()
        );
    };
    if m.fstype != "fuse.h4fs" {
        bail!(
            "{} is a {} mount, not an h4fs mount",
            m.point.display(),
            m.fstype
        );
    }
    Ok(m.point)
}

/// Ask the daemon serving `mp` for its counters.
fn read_stats(mp: &Path) -> anyhow::Result<Value> {
    let path = std::ffi::CString::new(mp.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", mp.display()))?;
    let name = std::ffi::CString::new(STATS_XATTR).expect("no NUL");
    // The daemon keeps the value within the kernel's limit for one attribute.
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated path and name; the buffer is valid for its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTCONN) => bail!(
                "the daemon of the h4fs mount {} is gone (Transport endpoint is not connected); \
                 clear the mount with `h4fs umount {}`",
                mp.display(),
                mp.display()
            ),
            Some(libc::ENODATA) => bail!(
                "the h4fs mount {} does not report counters (its daemon predates `h4fs stats`)",
                mp.display()
            ),
            _ => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot read the counters of {} (extended attribute {STATS_XATTR})",
                        mp.display()
                    )
                });
            }
        }
    }
    buf.truncate(n as usize);
    serde_json::from_slice(&buf).with_context(|| {
        format!(
            "the counters of {} (extended attribute {STATS_XATTR}) are not JSON",
            mp.display()
        )
    })
}

fn print_human(out: &mut impl Write, mp: &Path, s: &Value) -> std::io::Result<()> {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let c = &s["cache"];
    writeln!(
        out,
        "mount        {} ({} container(s), up {} s)",
        mp.display(),
        n(&s["containers"]),
        n(&s["uptime_s"])
    )?;
    writeln!(
        out,
        "cache        {} hits, {} misses, {} evictions, {} prefetches; {} blocks, {} of {} bytes",
        n(&c["hits"]),
        n(&c["misses"]),
        n(&c["evictions"]),
        n(&c["prefetches"]),
        n(&c["blocks"]),
        n(&c["bytes"]),
        n(&c["capacity"])
    )?;
    writeln!(
        out,
        "served       {} bytes in {} read requests (largest {} bytes)",
        n(&s["bytes_served"]),
        n(&s["read_requests"]),
        n(&s["largest_read_request"])
    )?;
    writeln!(
        out,
        "verified     {} blocks, {} hash groups; {} failed their check ({} failed reads)",
        n(&s["blocks_verified"]),
        n(&s["groups_verified"]),
        n(&s["verification_failures"]),
        n(&s["failed_reads"])
    )?;
    let r = &s["remote"];
    if r.is_object() {
        writeln!(
            out,
            "remote       {} requests, {} bytes fetched, {} retries, {} failed requests; {} of {} containers opened",
            n(&r["requests"]),
            n(&r["bytes_fetched"]),
            n(&r["retries"]),
            n(&r["failed_requests"]),
            n(&s["containers_opened"]),
            n(&s["containers"])
        )?;
        let d = &r["cache_dir"];
        if d.is_object() {
            writeln!(
                out,
                "cache dir    {}: {} of {} bytes held ({} files); {} hits, {} misses, {} evictions, {} dropped as damaged, {} failed writes",
                d["dir"].as_str().unwrap_or("?"),
                n(&d["bytes"]),
                n(&d["limit"]),
                n(&d["files"]),
                n(&d["hits"]),
                n(&d["misses"]),
                n(&d["evictions"]),
                n(&d["dropped_corrupt"]),
                n(&d["write_errors"])
            )?;
        }
    }
    if s["containers"].as_u64().unwrap_or(0) > 1 {
        for p in s["per_container"].as_array().into_iter().flatten() {
            let pr = &p["remote"];
            let fetched = match pr.is_object() {
                true => format!(
                    "; {} requests, {} bytes fetched, {} retries",
                    n(&pr["requests"]),
                    n(&pr["bytes_fetched"]),
                    n(&pr["retries"])
                ),
                false => String::new(),
            };
            writeln!(
                out,
                "  {}: {} blocks, {} hash groups verified, {} failed{fetched}",
                p["name"].as_str().unwrap_or("?"),
                n(&p["blocks_verified"]),
                n(&p["groups_verified"]),
                n(&p["verification_failures"])
            )?;
        }
    }
    for k in s["failed_to_open"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "not opened   {}: {}",
            k["name"].as_str().unwrap_or("?"),
            k["error"].as_str().unwrap_or("?")
        )?;
    }
    for k in s["skipped"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "left out     {}: {}",
            k["file"].as_str().unwrap_or("?"),
            k["error"].as_str().unwrap_or("?")
        )?;
    }
    if let Some(o) = s["omitted"].as_object() {
        writeln!(
            out,
            "(lists cut to fit: {} entries omitted)",
            Value::Object(o.clone())
        )?;
    }
    Ok(())
}
