//! `h4fs umount`: unmount an h4fs (or any FUSE) mount, also one whose daemon died.

use super::args::UmountArgs;
use super::mountpoint::{Target, resolve};
use crate::fuse::session::unmount;
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
///
/// The mount is found in /proc/self/mountinfo before its directory is touched (see
/// [`resolve`]), and unmounting needs no answer from the daemon, so a stopped or dead
/// daemon never makes this wait.
pub fn run_umount(args: UmountArgs) -> anyhow::Result<u8> {
    let m = match resolve(&args.mountpoint)? {
        Target::Mount(m) => m,
        Target::Entry(p, _) => bail!("{} is not a mount point", p.display()),
        Target::Missing(p) => bail!("{} does not exist", p.display()),
    };
    let real = m.point.clone();
    if !m.fstype.starts_with("fuse") {
        bail!(
            "{} is a {} mount, not a FUSE mount; use umount(8)",
            real.display(),
            m.fstype
        );
    }
    let lazy = args.lazy;
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
