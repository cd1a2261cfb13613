//! Helpers shared by the integration tests (each test binary uses a subset), in the
//! manner of ripgrep's `tests/util.rs`: the binary under test, running it, building
//! containers in a temporary directory, patching their bytes, and mounting them.
//!
//! No helper measures time: a test asserts what happened, never how fast. The only
//! clocks here are hang guards ([`wait_for`], [`run_bounded`]) with limits far above
//! any normal run, so that a command that is stuck fails its test instead of stalling
//! the suite.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_h4fs");

/// How long a command or a condition may take before it counts as stuck. Generous: it
/// only separates "hangs" from "finished", on a machine busy with other builds.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Running the binary.

/// The binary under test as a [`Command`], with no `H4FS_KEY_FILE` inherited from the
/// environment of whoever runs the tests.
pub fn h4fs() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("H4FS_KEY_FILE");
    cmd
}

/// `h4fs ARGS` run to completion, whatever its exit status.
pub fn h4fs_run(args: &[&str]) -> Output {
    run(h4fs().args(args))
}

/// `h4fs ARGS`, failing the test with its output unless it succeeded.
#[track_caller]
pub fn h4fs_ok(args: &[&str]) -> Output {
    ok(h4fs().args(args))
}

/// Run a command to completion; a command that cannot start (a tool not installed) fails
/// the test saying so.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is the tool installed? .ci/run installs them)")
    })
}

/// [`run`], and fail the test with its stdout and stderr unless it succeeded.
#[track_caller]
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

/// Run a command with stdin closed; `None` when it had not finished after `limit` (it
/// is then killed), else its output. For commands that must not hang.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Read both pipes while waiting, so a chatty command cannot block on a full pipe.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    if !wait_for(limit, || matches!(child.try_wait(), Ok(Some(_)))) {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    let status = child.wait().expect("status of a finished child");
    Some(Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    })
}

/// Poll `done` until it is true (true) or `limit` has passed (false). A hang guard,
/// not a measurement.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t = std::time::Instant::now();
    while !done() {
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// The binary under test with its address space limited to `kib` KiB (`ulimit -v`), so
/// a test fails when memory grows with the input instead of staying bounded. One rayon
/// thread pool of 2 and at most 2 malloc arenas keep the baseline the same on machines
/// with many cores.
pub fn limited(kib: u64) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("ulimit -v {kib} && exec \"$0\" \"$@\""), BIN])
        .env("RAYON_NUM_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2")
        .env_remove("H4FS_KEY_FILE");
    cmd
}

/// A temporary path as a command-line argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

// ---------------------------------------------------------------------------------------
// Data and containers.

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

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// SHA-256 of `data`, as lowercase hex (how META, `index.csv` and the xattrs show it).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

/// Recompute the CRC-32 of the layout-A chunk whose 12-byte header (tag, big-endian
/// payload length, big-endian CRC) is at `at`, after its payload was edited, so that a
/// check behind the CRC is what sees the edit.
pub fn fix_crc(b: &mut [u8], at: usize) {
    let len = u32::from_be_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&b[at + 12..at + 12 + len]);
    b[at + 8..at + 12].copy_from_slice(&crc.to_be_bytes());
}

/// `h4fs pack INPUT ARGS -o OUT --quiet`; fails the test unless it succeeded.
#[track_caller]
pub fn pack(input: &Path, out: &Path, args: &[&str]) -> Output {
    ok(h4fs()
        .arg("pack")
        .arg(input)
        .args(args)
        .arg("-o")
        .arg(out)
        .arg("--quiet"))
}

/// Source bytes in a temporary directory and the container packed from them.
pub struct Packed {
    pub dir: tempfile::TempDir,
    /// `source.bin`: the input.
    pub source: PathBuf,
    /// `demo.h4mk`: the container.
    pub container: PathBuf,
    pub data: Vec<u8>,
}

/// Write `data` to a fresh temporary directory and [`pack`] it with `args`.
#[track_caller]
pub fn packed(data: Vec<u8>, args: &[&str]) -> Packed {
    let dir = tempfile::Builder::new()
        .prefix("h4fs-src-")
        .tempdir()
        .unwrap();
    let source = dir.path().join("source.bin");
    std::fs::write(&source, &data).unwrap();
    let container = dir.path().join("demo.h4mk");
    pack(&source, &container, args);
    Packed {
        dir,
        source,
        container,
        data,
    }
}

// ---------------------------------------------------------------------------------------
// Mounts.

/// Fail (never skip) when FUSE cannot be used here, saying what is missing.
pub fn require_fuse() {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse");
    if let Err(e) = dev {
        panic!(
            "FUSE is not available ({e} opening /dev/fuse): these tests mount for real and need \
             the fuse kernel module, /dev/fuse and fuse3 (run .ci/run, or modprobe fuse)"
        );
    }
}

/// The fields of the topmost mount at `mp` in /proc/self/mountinfo, if it is one.
fn mountinfo_line(mp: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = mp.to_str().unwrap().replace(' ', "\\040");
    text.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .map(|l| l.split(' ').map(str::to_string).collect())
}

/// Whether `mp` is a mount point.
pub fn mountinfo_has(mp: &Path) -> bool {
    mountinfo_line(mp).is_some()
}

/// The filesystem type of the topmost mount at `mp` (`fuse.h4fs`), if it is one.
pub fn mount_type(mp: &Path) -> Option<String> {
    let f = mountinfo_line(mp)?;
    let dash = f.iter().position(|x| x == "-")?;
    f.get(dash + 1).cloned()
}

/// The per-mount flags of the mount at `mp` (mountinfo's field 6, e.g. `ro`, `nosuid`,
/// `nodev`, `relatime`).
pub fn mount_flags(mp: &Path) -> Vec<String> {
    let f = mountinfo_line(mp).unwrap_or_else(|| panic!("{} is not mounted", mp.display()));
    f[5].split(',').map(str::to_string).collect()
}

/// The pid of the `h4fs mount` daemon serving `mp` (found by its command line).
pub fn daemon_pid(mp: &Path) -> Option<u32> {
    let want = mp.to_str().unwrap();
    for ent in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = ent.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(ent.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.contains(&&b"--ready-fd"[..]) && args.contains(&want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// Whether a process is still running (a zombie waiting to be reaped is not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Unmount `dir` if it is mounted (`h4fs umount`, else `umount -l`) and wait until the
/// daemon has let go, so the temporary directory holding it can be removed.
pub fn unmount_dir(dir: &Path) {
    if !mountinfo_has(dir) {
        return;
    }
    let r = h4fs().arg("umount").arg(dir).output();
    if !matches!(&r, Ok(o) if o.status.success()) {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
    wait_for(HANG_LIMIT, || !mountinfo_has(dir));
}

/// Unmounts a directory mounted some other way (helper forms, `-f`) on drop, so a
/// failing test leaves no mount behind.
pub struct Guard(pub PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        unmount_dir(&self.0);
    }
}

/// A container mounted with `h4fs mount` in a fresh temporary directory; unmounted on
/// drop (also when the test fails), so no mount outlives its test.
pub struct TestMount {
    /// The mount point.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl TestMount {
    /// Mount `source` with extra `h4fs mount` arguments. The command returns only once
    /// the mount is ready, so the mount point must be in mountinfo when it does.
    #[track_caller]
    pub fn new(source: &Path, args: &[&str]) -> TestMount {
        Self::new_with(source, args, |_| {})
    }

    /// [`TestMount::new`] with the `h4fs mount` command adjusted first (environment,
    /// such as the AWS keys of a remote SOURCE).
    #[track_caller]
    pub fn new_with(source: &Path, args: &[&str], setup: impl FnOnce(&mut Command)) -> TestMount {
        require_fuse();
        let tmp = tempfile::Builder::new()
            .prefix("h4fs-mnt-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("m");
        std::fs::create_dir(&dir).unwrap();
        let mut cmd = h4fs();
        setup(&mut cmd);
        let out = run(cmd.arg("mount").arg(source).arg(&dir).args(args));
        assert!(
            out.status.success(),
            "h4fs mount {} failed ({}): {}",
            source.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            mountinfo_has(&dir),
            "h4fs mount returned but {} is not mounted",
            dir.display()
        );
        TestMount { dir, _tmp: tmp }
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The bytes of a file of the mount.
    pub fn read(&self, rel: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(rel))
    }

    /// A JSON file of the mount (`meta.json`, `veri.json`, ...).
    pub fn json(&self, rel: &str) -> serde_json::Value {
        serde_json::from_slice(&self.read(rel).unwrap()).unwrap()
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        unmount_dir(&self.dir);
    }
}

/// The live counters of the h4fs mount at `mountpoint` (`h4fs stats --json`): cache
/// hits, misses, evictions, prefetches, bytes served, blocks verified, failures,
/// containers left out.
pub fn mount_stats(mountpoint: &Path) -> serde_json::Value {
    let out = ok(h4fs().arg("stats").arg("--json").arg(mountpoint));
    serde_json::from_slice(&out.stdout).expect("h4fs stats --json prints JSON")
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
        Served::start_with(args, |_| {})
    }

    /// [`Served::start`] with the command prepared first (its environment).
    pub fn start_with(args: &[&str], prepare: impl FnOnce(&mut Command)) -> Served {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut cmd = Command::new(BIN);
        prepare(&mut cmd);
        let mut child = cmd
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

/// A container of `len` noise bytes in 64 KiB blocks (written in `dir`), and its input.
pub fn noise_container(dir: &Path, len: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let input = noise(len, seed);
    let inp = dir.join(format!("in-{seed}.bin"));
    std::fs::write(&inp, &input).unwrap();
    let out = dir.join(format!("c-{seed}.h4mk"));
    ok(h4fs()
        .args(["pack", "--block-size", "64K", "-o"])
        .arg(&out)
        .arg(&inp));
    (input, std::fs::read(&out).unwrap())
}

pub mod servers;
