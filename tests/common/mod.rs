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

/// An `h4fs serve` process on 127.0.0.1 with an ephemeral port; stopped (SIGTERM, then
/// SIGKILL) when dropped, also when the test fails.
pub struct Served {
    child: Option<std::process::Child>,
    /// Base URL, ending in `/`.
    pub url: String,
    /// `host:port`.
    pub addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    log_thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Start `h4fs serve ARGS... --listen 127.0.0.1:0` and wait for its URL.
    pub fn start(args: &[&str]) -> Served {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start h4fs serve");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let l2 = log.clone();
        let log_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = l2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let _ = out.read_line(&mut line);
        let mut served = Served {
            child: Some(child),
            url: String::new(),
            addr: String::new(),
            log,
            log_thread: Some(log_thread),
        };
        let url = line.trim().to_string();
        if !url.starts_with("http://") {
            let status = served.stop();
            panic!(
                "h4fs serve did not print its URL (got {url:?}, exit {status:?}); log:\n{}",
                served.log()
            );
        }
        served.addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        served.url = url;
        served
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the log contains `needle`, waiting up to 20 s for it to arrive (the log
    /// is read by a thread).
    pub fn log_has(&self, needle: &str) -> bool {
        for _ in 0..200 {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }

    /// SIGTERM, wait for the exit (SIGKILL after 20 s), and return the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let mut status = None;
        for _ in 0..200 {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(t) = self.log_thread.take() {
            let _ = t.join();
        }
        status
    }

    /// Send `sig` to the server.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Run curl (silent, with errors shown) and return its output.
pub fn curl(args: &[&str]) -> Output {
    run(Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args))
}

pub mod servers;
