//! `h4fs umount`: unmount an h4fs (or any FUSE) mount, also one whose daemon died.

use super::args::UmountArgs;
use super::mountpoint::absolute;
use crate::fuse::session::{find_mount, unmount};
use anyhow::{Context, bail};
use std::path::Path;
use std::process::Command;

/// Unmount through the setuid `fusermount3 -u [-z]`, for mounts this user may not
/// unmount with `umount2` (a non-root user's own FUSE mounts).
fn fusermount_u(mp: &Path, lazy: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd
        .arg(mp)
        .output()
        .context("cannot run fusermount3 (is the fuse3 package installed?)")?;
    if !out.status.success() {
        bail!(
            "fusermount3 -u{} {}: {}",
            if lazy { " -z" } else { "" },
            mp.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `h4fs umount`.
pub fn run_umount(args: UmountArgs) -> anyhow::Result<u8> {
    let mp = absolute(&args.mountpoint)?;
    let dead = matches!(std::fs::metadata(&mp), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN));
    let real = if dead {
        mp.clone()
    } else {
        mp.canonicalize().unwrap_or(mp.clone())
    };
    let Some(m) = find_mount(&real) else {
        // Not a mount point, so looking at it cannot wait on a FUSE daemon.
        if std::fs::symlink_metadata(&real).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            bail!("{} does not exist", real.display());
        }
        bail!("{} is not a mount point", real.display());
    };
    if !m.fstype.starts_with("fuse") {
        bail!(
            "{} is a {} mount, not a FUSE mount; use umount(8)",
            real.display(),
            m.fstype
        );
    }
    let lazy = args.lazy || dead;
    match unmount(&real, lazy) {
        Ok(()) => Ok(0),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            fusermount_u(&real, lazy)?;
            Ok(0)
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => bail!(
            "{} is busy: files or directories under it are open; close them, or use `h4fs umount --lazy`",
            real.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot unmount {}", real.display())),
    }
}
