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

/// Stops a daemon with SIGSTOP; on drop it is killed and its mount detached, so a
/// failing test leaves neither a stopped process nor a mount behind.
struct Stopped {
    pid: u32,
    mp: PathBuf,
}

impl Stopped {
    fn new(mp: &Path) -> Stopped {
        let pid = daemon_pid(mp).expect("the daemon serving the mount");
        // SAFETY: signalling a process this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        assert!(
            wait_for(Duration::from_secs(10), || proc_state(pid) == Some('T')),
            "the daemon did not stop"
        );
        Stopped {
            pid,
            mp: mp.to_path_buf(),
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        drop(Cleanup(self.mp.clone()));
    }
}

/// The state letter of /proc/PID/stat (`T` for stopped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A command that must finish within 10 s; its output.
fn bounded(cmd: &mut std::process::Command) -> std::process::Output {
    common::run_bounded(cmd, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{cmd:?} was still waiting after 10 s"))
}

/// `h4fs mount` onto, and `h4fs umount` (plain, `--lazy`, through a symlink) of, a mount
/// point whose daemon is stopped answer at once: the mount is found in mountinfo and
/// its directory is never stat'ed. The daemon, continued, exits on its own.
#[test]
fn a_stopped_daemon_never_makes_mount_or_umount_wait() {
    let (tmp, container, mp) = setup();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&mp, &link).unwrap();
    for how in [&["umount"][..], &["umount", "--lazy"]] {
        let _cleanup = Cleanup(mp.clone());
        ok(h4fs().arg("mount").arg(&container).arg(&mp));
        let stopped = Stopped::new(&mp);
        for target in [&mp, &link] {
            let out = bounded(h4fs().arg("mount").arg(&container).arg(target));
            assert_eq!(out.status.code(), Some(3));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("{} is already a mount point", mp.display())),
                "{err}"
            );
        }
        let out = bounded(h4fs().args(how).arg(&link));
        assert!(
            out.status.success(),
            "h4fs {how:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(mount_type(&mp), None, "h4fs {how:?} left the mount");
        // SAFETY: signalling a process this test started.
        assert_eq!(unsafe { libc::kill(stopped.pid as i32, libc::SIGCONT) }, 0);
        assert!(
            wait_for(Duration::from_secs(10), || !alive(stopped.pid)),
            "the continued daemon did not exit after its unmount"
        );
    }
}

/// A daemon whose source cannot be read (it lies on a mount whose daemon is stopped)
/// still answers SIGTERM: it stops at once, mounting nothing.
#[test]
fn the_daemon_answers_sigterm_while_opening_its_source() {
    let (tmp, container, mp) = setup();
    let _cleanup = Cleanup(mp.clone());
    ok(h4fs().arg("mount").arg(&container).arg(&mp));
    let source = mp.join("stream");
    assert!(std::fs::metadata(&source).unwrap().is_file());
    let _stopped = Stopped::new(&mp);
    let mp2 = tmp.path().join("m2");
    std::fs::create_dir(&mp2).unwrap();
    let _cleanup2 = Cleanup(mp2.clone());
    let mut child = h4fs()
        .args(["mount", "-f"])
        .arg(&source)
        .arg(&mp2)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the daemon should still be waiting for its source"
    );
    // SAFETY: signalling a process this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    if !wait_for(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    }) {
        let _ = child.kill();
        panic!("the daemon ignored SIGTERM while opening its source");
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "h4fs: signal {} before {} was mounted: stopping",
            libc::SIGTERM,
            mp2.display()
        )),
        "{err}"
    );
    assert_eq!(mount_type(&mp2), None);
}
