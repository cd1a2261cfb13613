//! The daemon: `h4fs mount` starts itself again in a new session with a readiness
//! pipe, and the child opens the containers, mounts, reports, and serves.

use super::log::{Logger, Sink};
use super::mountpoint::{absolute, check_mountpoint};
use super::options::Settings;
use crate::fs::{self, Fs, FsConfig, VerifyLevel};
use crate::fuse::FuseFs;
use crate::fuse::session::{self, MountConfig};
use anyhow::{Context, bail};
use std::ffi::CString;
use std::io::{BufRead, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// Start the daemon (this program, in the foreground, in a new session) and wait until
/// it reports the mount ready or failed.
pub(super) fn spawn(s: &Settings) -> anyhow::Result<u8> {
    check_mountpoint(&s.args.mountpoint, &s.args.source, s.args.allow_non_empty)?;
    if !crate::cli::remote::is_remote(&s.args.source) {
        let source = absolute(&s.args.source)?;
        match std::fs::metadata(&source) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("source {} does not exist", source.display())
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot use source {}", source.display()));
            }
        }
    }
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create a pipe");
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (rd, wr) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    let exe = std::env::current_exe()
        .context("cannot find the h4fs executable (reading /proc/self/exe)")?;
    // The daemon reads the same arguments (and environment, and working directory)
    // as this process did, so it arrives at the same settings; only where to report
    // readiness is added.
    let mut cmd = Command::new(&exe);
    cmd.args(&s.global)
        .arg("mount")
        .arg("--ready-fd")
        .arg("3")
        .args(&s.argv);
    let wr_raw = std::os::fd::AsRawFd::as_raw_fd(&wr);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (dup2, setsid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wr_raw, 3) < 0 || libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start the h4fs daemon {}", exe.display()))?;
    drop(wr);
    // Lines from the daemon: "WARN <text>" for each warning, then "OK" once the mount is
    // ready, or "ERR <code>" followed by the message and EOF on failure.
    let mut lines = std::io::BufReader::new(rd);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(w) = line.strip_prefix("WARN ") {
            eprintln!("h4fs: warning: {}", w.trim_end());
        } else if line == "OK\n" {
            return Ok(0);
        } else if let Some(code) = line.strip_prefix("ERR ") {
            let mut text = String::new();
            let _ = lines.read_to_string(&mut text);
            let _ = child.wait();
            eprintln!("h4fs: error: {}", text.trim_end());
            return Ok(code.trim().parse().unwrap_or(crate::cli::EXIT_ERROR));
        }
    }
    let status = child.wait().context("waiting for the h4fs daemon")?;
    bail!("the h4fs daemon exited ({status}) before the mount was ready");
}

/// Report to the parent, if there is one.
struct Ready(Option<std::fs::File>);

impl Ready {
    /// A warning for the user who ran `h4fs mount` (stderr in the foreground). Warnings
    /// are one line each on the pipe.
    fn warn(&mut self, text: &str) {
        let text = text.replace('\n', " ");
        match self.0.as_mut() {
            Some(f) => {
                let _ = writeln!(f, "WARN {text}");
            }
            None => eprintln!("h4fs: warning: {text}"),
        }
    }
    fn ok(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"OK\n");
        }
    }
    fn fail(&mut self, code: u8, e: &anyhow::Error) {
        if let Some(mut f) = self.0.take() {
            let _ = write!(f, "ERR {code}\n{}\n", crate::cli::chain_text(e));
        }
    }
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Make glibc serve block-sized buffers (up to 64 MiB) from its heap and keep freed
/// memory there. By default each buffer of a megabyte is a fresh `mmap`: the kernel
/// zeroes and faults in every page when the block is read into it and unmaps it again
/// when the cache drops the block. Measured on a first read of a 1 GiB `stream` in
/// 1 MiB blocks: daemon system time 1.0-1.2 s -> 0.3 s, throughput 0.75 -> 1.3 GB/s.
fn keep_block_buffers_in_the_heap() {
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// Open, mount and serve until unmounted or signalled.
pub(super) fn serve(s: Settings) -> anyhow::Result<u8> {
    // Before any thread exists, so every thread inherits the mask.
    let sigset = block_signals();
    keep_block_buffers_in_the_heap();
    if let Some(fd) = s.args.ready_fd {
        // Keep the pipe out of any helper we start (fusermount3), so the parent sees
        // EOF when we are done with it.
        // SAFETY: setting a flag on a descriptor we were given.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: the parent put a pipe on this descriptor for us alone.
    let mut ready = Ready(
        s.args
            .ready_fd
            .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) }),
    );
    let unmounter = Arc::new(Mutex::new(Phase::Opening));
    watch_signals(sigset, unmounter.clone(), &s.args.mountpoint)?;
    match mount_session(&s, &unmounter) {
        Ok((session, logger, core, warnings)) => {
            for w in &warnings {
                ready.warn(w);
            }
            ready.ok();
            let daemon = s.args.ready_fd.is_some();
            if daemon {
                detach_stdio(s.args.log_file.as_deref());
            }
            run_session(session, logger, core)
        }
        Err(e) => {
            let code = if e.chain().any(|c| {
                c.downcast_ref::<crate::Error>()
                    .is_some_and(|e| e.is_integrity())
            }) {
                crate::cli::EXIT_DAMAGED
            } else {
                crate::cli::EXIT_ERROR
            };
            if ready.0.is_some() {
                ready.fail(code, &e);
                Ok(code)
            } else {
                Err(e)
            }
        }
    }
}

/// Where the daemon is, as the signal thread sees it.
enum Phase {
    /// Opening and verifying the sources: nothing is mounted, so a signal ends the
    /// process at once (a remote or large source may take a while to open).
    Opening,
    /// Mounted at the path: a signal unmounts, and the session then ends on its own.
    Mounted(Box<fuser::SessionUnmounter>, PathBuf, Arc<Logger>),
}

/// SIGINT, SIGTERM and SIGHUP (blocked in every thread) are taken by one thread from
/// the start: before the mount exists they end the daemon with exit status 128 + the
/// signal; after, they unmount, and the session ends on its own.
fn watch_signals(
    sigset: libc::sigset_t,
    phase: Arc<Mutex<Phase>>,
    mountpoint: &Path,
) -> anyhow::Result<()> {
    let fallback = absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    std::thread::Builder::new()
        .name("h4fs-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on a set blocked in every thread.
            if unsafe { libc::sigwait(&sigset, &mut sig) } != 0 {
                return;
            }
            let mut phase = phase.lock().unwrap_or_else(|e| e.into_inner());
            let Phase::Mounted(unmounter, mp, log) = &mut *phase else {
                eprintln!(
                    "h4fs: signal {sig} before {} was mounted: stopping",
                    fallback.display()
                );
                std::process::exit(128 + sig);
            };
            log.log(&format!("h4fs: signal {sig}: unmounting {}", mp.display()));
            if let Err(e) = unmounter.unmount() {
                log.log(&format!("h4fs: unmount failed ({e}); detaching lazily"));
                let _ = session::unmount(mp, true);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// The session, its logger and core, and warnings for the user.
type Mounted = (fuser::Session<FuseFs>, Arc<Logger>, Arc<Fs>, Vec<String>);

/// How far ahead of a sequential reader of a remote container blocks are fetched and
/// verified (at most a quarter of the cache).
const REMOTE_PREFETCH: u64 = 64 << 20;

fn mount_session(s: &Settings, phase: &Arc<Mutex<Phase>>) -> anyhow::Result<Mounted> {
    let a = &s.args;
    let mp = check_mountpoint(&a.mountpoint, &a.source, a.allow_non_empty)?;
    let logger = Arc::new(Logger {
        sink: match &a.log_file {
            Some(p) => Sink::File(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot open log file {}", p.display()))?,
            )),
            None if a.ready_fd.is_some() => {
                // SAFETY: a static identifier string; openlog keeps the pointer.
                unsafe { libc::openlog(c"h4fs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
                Sink::Syslog
            }
            None => Sink::Stderr,
        },
    });
    let attach = a.keys.attacher()?;
    let remote = crate::cli::remote::is_remote(&a.source);
    let cfg_for = |prefetch: u64| {
        let l2 = logger.clone();
        FsConfig {
            // SAFETY: getuid/getgid cannot fail.
            uid: a.uid.unwrap_or_else(|| unsafe { libc::getuid() }),
            gid: a.gid.unwrap_or_else(|| unsafe { libc::getgid() }),
            cache_bytes: a.cache_size,
            prefetch_bytes: prefetch.min(a.cache_size / 4),
            log: Arc::new(move |m| l2.log(m)),
        }
    };
    let mut warnings = Vec::new();
    let (core, shown) = if remote {
        let url = a.source.to_str().unwrap_or_default();
        let shown = crate::cli::remote::shown(&a.source);
        // Over a network, a sequential reader's window reaches further: the requests
        // for it are in flight while the blocks before it are verified and served.
        let cfg = cfg_for(REMOTE_PREFETCH);
        let mut opts = s.remote.clone();
        if let Some(dir) = &a.cache_dir {
            let dir = absolute(dir)?;
            let cache = crate::remote::disk::DiskCache::open(&dir, a.cache_dir_size)
                .context("cannot mount")?;
            let l2 = logger.clone();
            cache.set_log(Arc::new(move |m| l2.log(m)));
            opts.cache_dir = Some(cache);
        }
        let opened = fs::open_remote(url, &opts, a.verify.into(), Arc::new(attach), a.strict)
            .context("cannot mount")?;
        let mut core = match opened {
            fs::RemoteOpened::One(src) => {
                let mtime = src.mtime;
                Fs::new(vec![*src], false, mtime, cfg)
            }
            fs::RemoteOpened::Prefix {
                containers,
                root_mtime,
                listing,
            } => {
                logger.log(&format!(
                    "h4fs: {shown}: {} containers listed; each is opened on first lookup",
                    containers.len()
                ));
                Fs::new_lazy(containers, root_mtime, cfg, Some(listing))
            }
        };
        core.set_cache_dir(opts.cache_dir.clone());
        (Arc::new(core), shown)
    } else {
        if let Some(dir) = &a.cache_dir {
            let w = format!(
                "--cache-dir {} is for s3:// and http(s):// sources; a local SOURCE is \
                 read directly, so it is not used",
                dir.display()
            );
            logger.log(&format!("h4fs: warning: {w}"));
            warnings.push(w);
        }
        let source = absolute(&a.source)?;
        let opened = fs::open_sources(&source, a.verify.into(), &attach, a.strict)
            .context("cannot mount")?;
        for e in &opened.skipped {
            let w = format!(
                "{}: {}; left out of the mount (--strict refuses to mount instead)",
                e.path.display(),
                e.error
            );
            logger.log(&format!("h4fs: warning: {w}"));
            warnings.push(w);
        }
        let root_mtime = std::fs::metadata(&source)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        let cfg = cfg_for(16 << 20);
        let core =
            Fs::new(opened.sources, opened.multi, root_mtime, cfg).with_skipped(&opened.skipped);
        (Arc::new(core), source.display().to_string())
    };
    core.start_prefetch(2);
    let cfg = MountConfig {
        fsname: s.fsname.clone().unwrap_or_else(|| shown.clone()),
        threads: a.threads,
        allow_other: a.allow_other,
        extra: s.extra.clone(),
    };
    // A signal from here on waits for the mount to exist and then unmounts it, so none
    // leaves a mount without its daemon.
    let mut phase = phase.lock().unwrap_or_else(|e| e.into_inner());
    let mut session = session::mount(core.clone(), &mp, &cfg)?;
    *phase = Phase::Mounted(
        Box::new(session.unmount_callable()),
        mp.clone(),
        logger.clone(),
    );
    drop(phase);
    if let Err(e) = session::raise_readahead(&mp) {
        logger.log(&format!(
            "h4fs: note: kernel readahead stays at its default ({e}); reads arrive in smaller requests"
        ));
    }
    logger.log(&format!(
        "h4fs: mounted {} at {} ({} threads, cache {} bytes, verify {})",
        shown,
        mp.display(),
        a.threads,
        a.cache_size,
        VerifyLevel::from(a.verify).name()
    ));
    Ok((session, logger, core, warnings))
}

fn detach_stdio(log_file: Option<&Path>) {
    let null = CString::new("/dev/null").expect("no NUL");
    // SAFETY: opening /dev/null and duplicating descriptors onto 0..=2.
    unsafe {
        let fd = libc::open(null.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
        if let Some(p) = log_file
            && let Ok(c) = CString::new(p.as_os_str().as_bytes())
        {
            let lf = libc::open(
                c.as_ptr(),
                libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT,
                0o644,
            );
            if lf >= 0 {
                libc::dup2(lf, 2);
                libc::close(lf);
            }
        }
        let root = CString::new("/").expect("no NUL");
        libc::chdir(root.as_ptr());
    }
}

fn run_session(
    session: fuser::Session<FuseFs>,
    logger: Arc<Logger>,
    core: Arc<Fs>,
) -> anyhow::Result<u8> {
    let r = session::serve(session, &core);
    let s = core.cache_stats();
    logger.log(&format!(
        "h4fs: unmounted; cache hits {} misses {} evictions {} prefetches {}",
        s.hits, s.misses, s.evictions, s.prefetches
    ));
    r?;
    Ok(0)
}
