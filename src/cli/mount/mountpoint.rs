//! Checks of the mount point before anything is mounted on it.

use crate::fuse::session::find_mount;
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

/// Check the mount point: it exists, is a directory, is not already a mount, and is
/// empty (unless `allow_non_empty`: a mount hides what the directory holds).
///
/// /proc/self/mountinfo is consulted before the directory itself is touched, at each
/// step of a symlink chain, so a mount point held by a stopped or dead FUSE daemon is
/// refused as "already a mount point" without waiting on that daemon; only then is the
/// directory stat'ed and listed. `source` is only used for a hint when the two
/// arguments look swapped.
pub(super) fn check_mountpoint(
    mp: &Path,
    source: &Path,
    allow_non_empty: bool,
) -> anyhow::Result<PathBuf> {
    let mut p = absolute(mp)?;
    if p.file_name().is_none() {
        // "/" or a path ending in "..": resolve it in full.
        p = p
            .canonicalize()
            .with_context(|| format!("cannot resolve mount point {}", p.display()))?;
    }
    let mut hops = 0;
    let md = loop {
        if let Some(m) = find_mount(&p) {
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
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() && hops < 40 => {
                hops += 1;
                let target = std::fs::read_link(&p)
                    .with_context(|| format!("cannot read the symlink {}", p.display()))?;
                let parent = p.parent().unwrap_or(Path::new("/"));
                p = absolute(&parent.join(target))?;
            }
            Ok(md) => break md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "mount point {} does not exist (create it with mkdir first)",
                p.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot use mount point {}", p.display()));
            }
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
