//! Checks of the mount point before anything is mounted on it.

use crate::fuse::session::{MountInfo, find_mount};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// An absolute path without resolving its last component (which may be a dead mount
/// that cannot be stat'ed).
pub(in crate::cli) fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Ok(abs);
    };
    let parent = parent
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", parent.display()))?;
    Ok(parent.join(name))
}

/// What a path names, found without waiting on any FUSE daemon.
pub(in crate::cli) enum Target {
    /// The top mount at the path (after following symlinks).
    Mount(MountInfo),
    /// An ordinary directory entry: its resolved path and metadata.
    Entry(PathBuf, std::fs::Metadata),
    /// Nothing: the resolved path does not exist.
    Missing(PathBuf),
}

/// Follow `path` to what it names without touching a mount point: /proc/self/mountinfo
/// is consulted before each step of a symlink chain is stat'ed, so a mount whose daemon
/// is stopped (`kill -STOP`) or dead is found from the table alone, and nothing waits
/// on it. Only ordinary entries (never a mount's root) are `lstat`'ed.
pub(in crate::cli) fn resolve(path: &Path) -> anyhow::Result<Target> {
    let mut p = absolute(path)?;
    if p.file_name().is_none() {
        // "/" or a path ending in "..": resolve it in full.
        p = p
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", p.display()))?;
    }
    let mut hops = 0;
    loop {
        if let Some(m) = find_mount(&p) {
            return Ok(Target::Mount(m));
        }
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    bail!("{}: too many levels of symbolic links", path.display());
                }
                let target = std::fs::read_link(&p)
                    .with_context(|| format!("cannot read the symlink {}", p.display()))?;
                let parent = p.parent().unwrap_or(Path::new("/"));
                p = absolute(&parent.join(target))?;
            }
            Ok(md) => return Ok(Target::Entry(p, md)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::Missing(p)),
            Err(e) => return Err(e).with_context(|| format!("cannot use {}", p.display())),
        }
    }
}

/// Check the mount point: it exists, is a directory, is not already a mount, and is
/// empty (unless `allow_non_empty`: a mount hides what the directory holds).
///
/// The path is resolved with [`resolve`], so a mount point held by a stopped or dead
/// FUSE daemon is refused as "already a mount point" without waiting on that daemon;
/// only an ordinary directory is listed. `source` is only used for a hint when the two
/// arguments look swapped.
pub(super) fn check_mountpoint(
    mp: &Path,
    source: &Path,
    allow_non_empty: bool,
) -> anyhow::Result<PathBuf> {
    let (p, md) = match resolve(mp).context("cannot use the mount point")? {
        Target::Entry(p, md) => (p, md),
        Target::Missing(p) => bail!(
            "mount point {} does not exist (create it with mkdir first)",
            p.display()
        ),
        Target::Mount(m) => {
            // Whether a FUSE daemon there is alive, dead or stopped is not asked: asking
            // a stopped one would wait for it.
            let how = if m.fstype.starts_with("fuse") {
                format!(
                    " with `h4fs umount {}` (which also clears a mount whose daemon died)",
                    m.point.display()
                )
            } else {
                String::new()
            };
            bail!(
                "{} is already a mount point ({} from {}); unmount it first{how}",
                m.point.display(),
                m.fstype,
                m.source
            );
        }
    };
    if !md.is_dir() {
        let swapped = md.is_file() && source.is_dir();
        if swapped {
            bail!(
                "mount point {} is not a directory; the container comes first: \
                 `h4fs mount {} {}` (SOURCE, then MOUNTPOINT)",
                p.display(),
                mp.display(),
                source.display()
            );
        }
        bail!(
            "mount point {} is not a directory (usage: h4fs mount SOURCE MOUNTPOINT)",
            p.display()
        );
    }
    if !allow_non_empty {
        let mut entries = std::fs::read_dir(&p)
            .with_context(|| format!("cannot list mount point {}", p.display()))?;
        if let Some(first) = entries.next() {
            let first =
                first.with_context(|| format!("cannot list mount point {}", p.display()))?;
            bail!(
                "mount point {} is not empty (it holds {:?}{}); the mount would hide its \
                 files: use an empty directory, or --allow-non-empty (-o nonempty)",
                p.display(),
                first.file_name(),
                if entries.next().is_some() {
                    " and more"
                } else {
                    ""
                }
            );
        }
    }
    Ok(p)
}
