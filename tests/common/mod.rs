//! Helpers shared by the integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_h4fs");

/// Deterministic pseudo-random bytes (xorshift64), so tests need no RNG crate and every
/// run sees the same data.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A temporary path as a command-line argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Run a command to completion; a command that cannot start (a tool not installed) fails
/// the test saying so.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is the tool installed? .ci/run installs them)")
    })
}

/// [`run`], and fail the test with its stdout and stderr unless it succeeded.
pub fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The live counters of the h4fs mount at `mountpoint` (`h4fs stats --json`): cache
/// hits, misses, evictions, prefetches, bytes served, blocks verified, failures,
/// containers left out.
pub fn mount_stats(mountpoint: &Path) -> serde_json::Value {
    let out = ok(Command::new(BIN).arg("stats").arg("--json").arg(mountpoint));
    serde_json::from_slice(&out.stdout).expect("h4fs stats --json prints JSON")
}

/// The binary under test with its address space limited to `kib` KiB (`ulimit -v`), so
/// a test fails when memory grows with the input instead of staying bounded. One rayon
/// thread pool of 2 and at most 2 malloc arenas keep the baseline the same on machines
/// with many cores.
pub fn limited(kib: u64) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("ulimit -v {kib} && exec \"$0\" \"$@\""), BIN])
        .env("RAYON_NUM_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2");
    cmd
}

/// A container mounted with `h4fs mount` in a fresh temporary directory; unmounted on
/// drop (also when the test fails), so no mount outlives its test.
pub struct TestMount {
    dir: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl TestMount {
    /// Mount `source` (the command returns once the mount is ready).
    pub fn new(source: &Path) -> TestMount {
        let tmp = tempfile::Builder::new()
            .prefix("h4fs-mnt-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("m");
        std::fs::create_dir(&dir).unwrap();
        ok(Command::new(BIN).arg("mount").arg(source).arg(&dir));
        TestMount { dir, _tmp: tmp }
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let r = Command::new(BIN).arg("umount").arg(&self.dir).output();
        if !matches!(&r, Ok(o) if o.status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
