//! Tearing a mount down: `h4fs umount` returning means the daemon will touch no mount
//! again (the next mount at the same path survives), and neither `umount` nor `mount`
//! waits on a stopped daemon. Real FUSE mounts; every command runs under a time limit.

mod common;

use common::{alive, daemon_pid, h4fs, mount_type, noise, ok, wait_for};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// A small container in a temp dir, and an empty mount point beside it.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix("h4fs-teardown-")
        .tempdir()
        .unwrap();
    let src = tmp.path().join("src.bin");
    std::fs::write(&src, noise(200_000, 7)).unwrap();
    let container = tmp.path().join("c.h4mk");
    ok(h4fs()
        .arg("pack")
        .arg(&src)
        .args(["--block-size", "65536", "-o"])
        .arg(&container));
    let mp = tmp.path().join("m");
    std::fs::create_dir(&mp).unwrap();
    (tmp, container, mp)
}

/// Unmounts whatever is left at a path on drop (lazily), so a failing test leaves
/// nothing mounted.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        while mount_type(&self.0).is_some() {
            // SAFETY: a NUL-terminated path.
            if unsafe { libc::umount2(cstr(&self.0).as_ptr(), libc::MNT_DETACH) } != 0 {
                break;
            }
        }
    }
}

/// `mount; umount; mount -t tmpfs` at one path, `cycles` times (H4FS_UMOUNT_CYCLES
/// overrides the count): the old daemon, on its way out, must not unmount the tmpfs.
/// The tmpfs is mounted with mount(2) right after `h4fs umount` returns, the tightest
/// window there is; then the test waits for the old daemon to exit and checks that
/// the tmpfs is still there.
#[test]
fn umount_returning_means_the_daemon_touches_no_later_mount() {
    let cycles: usize = std::env::var("H4FS_UMOUNT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (_tmp, container, mp) = setup();
    let _cleanup = Cleanup(mp.clone());
    let tmpfs = c"tmpfs";
    let mut lost = Vec::new();
    for i in 0..cycles {
        ok(h4fs().arg("mount").arg(&container).arg(&mp));
        let pid = daemon_pid(&mp).expect("the daemon serving the mount");
        ok(h4fs().arg("umount").arg(&mp));
        // SAFETY: NUL-terminated strings; mounting a tmpfs on a test directory.
        let r = unsafe {
            libc::mount(
                tmpfs.as_ptr(),
                cstr(&mp).as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        assert!(
            wait_for(Duration::from_secs(10), || !alive(pid)),
            "cycle {i}: the daemon did not exit within 10 s of its unmount"
        );
        match mount_type(&mp).as_deref() {
            Some("tmpfs") => {
                // SAFETY: a NUL-terminated path.
                assert_eq!(unsafe { libc::umount2(cstr(&mp).as_ptr(), 0) }, 0);
            }
            other => lost.push((i, other.map(str::to_string))),
        }
        assert_eq!(mount_type(&mp), None, "cycle {i}: something left mounted");
    }
    assert!(
        lost.is_empty(),
        "{} of {cycles} tmpfs mounts were removed by the exiting daemon: {lost:?}",
        lost.len()
    );
}
