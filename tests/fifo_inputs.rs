//! A FIFO, socket or device given where a file is required is refused at once, naming
//! the path: nothing waits for a writer that never comes. Every command runs under a
//! time limit, so a hang fails the test instead of stalling the suite.

mod common;

use common::{mount_type, noise, ok, run_bounded};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path in a temp dir.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Run `h4fs ARGS` bounded; it must fail with exit 3 and name the FIFO.
fn refused(args: &[&std::ffi::OsStr], fifo: &Path) -> Output {
    let mut cmd = Command::new(common::BIN);
    cmd.args(args);
    let out = run_bounded(&mut cmd, LIMIT)
        .unwrap_or_else(|| panic!("{cmd:?} was still running after {LIMIT:?}: it hangs"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{cmd:?}: {err}");
    let want = format!(
        "{} is a FIFO (named pipe), not a regular file",
        fifo.display()
    );
    assert!(
        err.contains(&want),
        "{cmd:?}: expected \"{want}\" in: {err}"
    );
    out
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if mount_type(&self.0).is_some() {
            let _ = Command::new(common::BIN)
                .args(["umount", "--lazy"])
                .arg(&self.0)
                .status();
        }
    }
}

struct Setup {
    tmp: tempfile::TempDir,
    fifo: PathBuf,
    container: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("x.h4mk");
    mkfifo(&fifo);
    let src = tmp.path().join("s.bin");
    std::fs::write(&src, noise(100_000, 3)).unwrap();
    let container = tmp.path().join("c.h4mk");
    ok(Command::new(common::BIN)
        .arg("pack")
        .arg(&src)
        .args(["--block-size", "10000", "-o"])
        .arg(&container));
    Setup {
        tmp,
        fifo,
        container,
    }
}

#[test]
fn inspect_verify_cat_and_extract_of_a_fifo_are_refused() {
    let s = setup();
    let f = s.fifo.as_os_str();
    refused(&["inspect".as_ref(), f], &s.fifo);
    refused(&["verify".as_ref(), f], &s.fifo);
    refused(&["seek".as_ref(), f, "0".as_ref()], &s.fifo);
    refused(
        &["cat".as_ref(), f, "--block".as_ref(), "0".as_ref()],
        &s.fifo,
    );
    let out = s.tmp.path().join("out.bin");
    refused(
        &["extract".as_ref(), f, "-o".as_ref(), out.as_os_str()],
        &s.fifo,
    );
    assert!(!out.exists());
}

#[test]
fn pack_of_a_fifo_and_pack_options_naming_a_fifo_are_refused() {
    let s = setup();
    let out = s.tmp.path().join("p.h4mk");
    let o = out.as_os_str();
    let f = s.fifo.as_os_str();
    refused(
        &[
            "pack".as_ref(),
            f,
            "--block-size".as_ref(),
            "4096".as_ref(),
            "-o".as_ref(),
            o,
        ],
        &s.fifo,
    );
    let src = s.tmp.path().join("s.bin");
    refused(
        &[
            "pack".as_ref(),
            src.as_os_str(),
            "--index".as_ref(),
            f,
            "-o".as_ref(),
            o,
        ],
        &s.fifo,
    );
    refused(
        &[
            "pack".as_ref(),
            src.as_os_str(),
            "--block-size".as_ref(),
            "4096".as_ref(),
            "--meta-file".as_ref(),
            f,
            "-o".as_ref(),
            o,
        ],
        &s.fifo,
    );
    assert!(!out.exists(), "no output after a refused input");
}

#[test]
fn key_file_fifo_is_refused() {
    let s = setup();
    let key = s.tmp.path().join("k.key");
    ok(Command::new(common::BIN).arg("keygen").arg("-o").arg(&key));
    let enc = s.tmp.path().join("e.h4mk");
    ok(Command::new(common::BIN)
        .arg("pack")
        .arg(s.tmp.path().join("s.bin"))
        .args(["--block-size", "10000", "--encrypt", "--key-file"])
        .arg(&key)
        .arg("-o")
        .arg(&enc));
    let f = s.fifo.as_os_str();
    let e = enc.as_os_str();
    refused(&["inspect".as_ref(), "--key-file".as_ref(), f, e], &s.fifo);
    refused(
        &[
            "cat".as_ref(),
            "--key-file".as_ref(),
            f,
            e,
            "--block".as_ref(),
            "0".as_ref(),
        ],
        &s.fifo,
    );
}

#[test]
fn mount_of_a_fifo_container_or_with_a_fifo_key_is_refused_and_mounts_nothing() {
    let s = setup();
    let mp = s.tmp.path().join("m");
    std::fs::create_dir(&mp).unwrap();
    let _guard = Unmount(mp.clone());
    let f = s.fifo.as_os_str();
    refused(&["mount".as_ref(), f, mp.as_os_str()], &s.fifo);
    assert_eq!(mount_type(&mp), None);
    refused(
        &[
            "mount".as_ref(),
            "--key-file".as_ref(),
            f,
            s.container.as_os_str(),
            mp.as_os_str(),
        ],
        &s.fifo,
    );
    assert_eq!(mount_type(&mp), None);
    // In a directory source, a FIFO named *.h4mk is no container: the real one beside
    // it is served.
    let out = run_bounded(
        Command::new(common::BIN).args([
            "mount".as_ref(),
            s.tmp.path().as_os_str(),
            mp.as_os_str(),
        ]),
        LIMIT,
    )
    .expect("mount of a directory holding a FIFO hangs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let mut listed: Vec<String> = std::fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    ok(Command::new(common::BIN).arg("umount").arg(&mp));
    assert_eq!(listed, ["c"]);
}
