//! Mounting the core over FUSE: the kernel mount options, the `fuser` session with its
//! worker threads, the readahead of the new mount, and unmounting.
//!
//! The daemon around it (the readiness pipe, signals, logging) is the CLI's
//! (`cli/mount/`); everything here works for any program that has an [`Fs`].
//!
//! Every mount is `ro`, `default_permissions` (the kernel checks the 0444 / 0555
//! modes), `nosuid` and `nodev` (nothing on it is set-user-ID or a device, and no
//! container should be able to make it so; `suid` / `dev` in
//! [`MountConfig::extra`] take those two away), of type `fuse.h4fs`.

use super::{FuseFs, MAX_READ};
use crate::error::{Error, Result};
use crate::fs::Fs;
use fuser::MountOption;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use fuser::{Session, SessionUnmounter};

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Shown as the mount's source (mountinfo, `df`): the container's path, or `-o
    /// fsname=`.
    pub fsname: String,
    /// FUSE worker threads serving requests concurrently (at least 1).
    pub threads: usize,
    /// Let other users access the mount.
    pub allow_other: bool,
    /// Further kernel mount flags (`noexec`, `noatime`, `suid`, `dev`, `allow_root`,
    /// `max_read=` ...).
    pub extra: Vec<MountOption>,
}

impl MountConfig {
    /// The kernel mount options: the fixed ones, `nosuid` and `nodev` unless `extra`
    /// asks for `suid` / `dev`, then `extra`.
    pub fn options(&self) -> Vec<MountOption> {
        let mut options = vec![
            MountOption::FSName(self.fsname.clone()),
            MountOption::CUSTOM("subtype=h4fs".into()),
            MountOption::RO,
            MountOption::DefaultPermissions,
        ];
        for (default, unless) in [
            (MountOption::NoSuid, MountOption::Suid),
            (MountOption::NoDev, MountOption::Dev),
        ] {
            if !self.extra.contains(&unless) {
                options.push(default);
            }
        }
        for o in &self.extra {
            if !options.contains(o) {
                options.push(o.clone());
            }
        }
        options
    }
}

/// Mount `core` at `mountpoint` and complete the FUSE handshake: when this returns,
/// the mount is in place and requests queue up until [`serve`] runs the session.
pub fn mount(core: Arc<Fs>, mountpoint: &Path, cfg: &MountConfig) -> Result<Session<FuseFs>> {
    let config = FuseFs::config(cfg.threads, cfg.options(), cfg.allow_other);
    let at = || format!("cannot mount at {}", mountpoint.display());
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::io(
            at(),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "FUSE is not available: /dev/fuse is missing (load the module with \
                 `modprobe fuse`, install fuse3)",
            ),
        ));
    }
    fuser::Session::new(FuseFs::new(core), mountpoint, &config).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied && !dev_fuse_usable() {
            let hint = format!(
                "/dev/fuse cannot be opened by this user ({e}); run as root, or let users \
                 open it (`chmod 0666 /dev/fuse`, the usual mode)"
            );
            Error::io(at(), std::io::Error::new(e.kind(), hint))
        } else {
            Error::io(at(), e)
        }
    })
}

/// Serve the mounted session until it is unmounted (by [`SessionUnmounter::unmount`],
/// `h4fs umount`, or `umount`), then stop the core's prefetch threads.
pub fn serve(session: Session<FuseFs>, core: &Fs) -> Result<()> {
    let r = session.run();
    core.stop_prefetch();
    r.map_err(|e| Error::io("the FUSE session ended with an error", e))
}

/// Whether this process may open /dev/fuse for reading and writing.
fn dev_fuse_usable() -> bool {
    // SAFETY: access(2) on a constant, NUL-terminated path.
    unsafe { libc::access(c"/dev/fuse".as_ptr(), libc::R_OK | libc::W_OK) == 0 }
}

/// Let the kernel read ahead up to [`MAX_READ`] on the mount at `mountpoint`, so
/// sequential readers get 1 MiB requests. The kernel starts a FUSE mount at 128 KiB and
/// the FUSE handshake can only lower that, so it is raised through sysfs (root only).
/// Uses mountinfo, not stat: a stat of the mount point would wait on this very daemon.
pub fn raise_readahead(mountpoint: &Path) -> Result<()> {
    let m = find_mount(mountpoint).ok_or_else(|| {
        Error::NotFound(format!("{} not found in mountinfo", mountpoint.display()))
    })?;
    let knob = Path::new("/sys/class/bdi")
        .join(&m.dev)
        .join("read_ahead_kb");
    let kb = MAX_READ / 1024;
    std::fs::write(&knob, format!("{kb}\n"))
        .map_err(|e| Error::io(format!("cannot write {}", knob.display()), e))
}

/// `umount2(2)` of `mountpoint`, detaching it at once when `lazy` (`MNT_DETACH`).
/// Needs the privilege to unmount (root); see `fusermount3 -u` otherwise.
pub fn unmount(mountpoint: &Path, lazy: bool) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct MountInfo {
    /// `major:minor` of the mounted filesystem (its backing-device-info name).
    pub dev: String,
    /// The mount point.
    pub point: PathBuf,
    /// The filesystem type (`fuse.h4fs`).
    pub fstype: String,
    /// The mount's source (the container's path for h4fs).
    pub source: String,
}

/// The topmost mount at exactly `point` in /proc/self/mountinfo, if any. Reads only
/// mountinfo: it never looks at the mount point, which a stopped FUSE daemon would
/// make wait forever.
pub fn find_mount(point: &Path) -> Option<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < dash + 3 || f.len() < 5 {
            continue;
        }
        let p = unescape_mountinfo(f[4]);
        if p == point {
            // The last match is the top of a stack of mounts.
            found = Some(MountInfo {
                dev: f[2].to_string(),
                point: p,
                fstype: f[dash + 1].to_string(),
                source: f[dash + 2].to_string(),
            });
        }
    }
    found
}

/// A path as mountinfo writes it, with `\040`-style octal escapes undone.
fn unescape_mountinfo(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            unescape_mountinfo("/mnt/a\\040b"),
            PathBuf::from("/mnt/a b")
        );
        assert_eq!(unescape_mountinfo("/x\\"), PathBuf::from("/x\\"));
    }

    fn cfg(extra: Vec<MountOption>) -> MountConfig {
        MountConfig {
            fsname: "/data/x.h4mk".into(),
            threads: 4,
            allow_other: false,
            extra,
        }
    }

    #[test]
    fn mounts_are_read_only_nosuid_nodev_unless_asked() {
        let o = cfg(vec![]).options();
        for want in [
            MountOption::RO,
            MountOption::DefaultPermissions,
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::FSName("/data/x.h4mk".into()),
            MountOption::CUSTOM("subtype=h4fs".into()),
        ] {
            assert!(o.contains(&want), "{want:?} missing from {o:?}");
        }
        let o = cfg(vec![MountOption::Suid, MountOption::NoExec]).options();
        assert!(o.contains(&MountOption::Suid) && o.contains(&MountOption::NoExec));
        assert!(!o.contains(&MountOption::NoSuid), "{o:?}");
        assert!(o.contains(&MountOption::NoDev) && o.contains(&MountOption::RO));
        let o = cfg(vec![MountOption::Dev, MountOption::NoDev]).options();
        assert_eq!(o.iter().filter(|x| **x == MountOption::NoDev).count(), 1);
    }
}
