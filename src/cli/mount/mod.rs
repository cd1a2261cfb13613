//! `h4fs mount`, `h4fs umount`, and the mount helper entry points.
//!
//! Daemon protocol: without `-f`, `h4fs mount` checks its arguments, then starts itself
//! again in the foreground as a new session (`setsid`) with a pipe on descriptor 3
//! (`--ready-fd 3`). The child opens and checks the containers, mounts, completes the
//! FUSE handshake, and only then writes `OK` to the pipe, so the parent returns exactly
//! when the mount is ready; on failure the child writes `ERR <code>` and the message,
//! and the parent prints it and exits with that code. No fork after threads exist.
//!
//! Signals: SIGINT, SIGTERM and SIGHUP are blocked in every thread and taken by one
//! thread with `sigwait`, which unmounts (lazily if busy); the session loop then ends
//! and the process exits 0.
//!
//! Helper forms, for `mount -t fuse.h4fs SRC DIR -o OPTS` and /etc/fstab:
//! * `mount.fuse.h4fs SRC DIR [-o OPTS]...` (argv\[0\] starting with `mount.`): what
//!   mount(8) runs when that name is installed in /sbin;
//! * `h4fs SRC DIR [-o OPTS]...` (first argument not a subcommand): what mount(8)'s
//!   generic `mount.fuse3` runs (`/bin/sh -c 'h4fs SRC DIR -o OPTS'`).

use super::size::parse_size;
use crate::fs::{self, Fs, FsConfig, VerifyLevel};
use crate::fuse::FuseFs;
use anyhow::{Context, anyhow, bail};
use fuser::MountOption;
use std::ffi::{CString, OsString};
use std::io::{BufRead, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};

/// What is checked before the mount is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyArg {
    /// Chunk CRCs and the structure root: time proportional to the index.
    Structure,
    /// Also every block and the whole-file VERI: reads the whole file.
    Full,
    /// Bounds only; blocks are still verified before they are served.
    None,
}

impl From<VerifyArg> for VerifyLevel {
    fn from(v: VerifyArg) -> VerifyLevel {
        match v {
            VerifyArg::Structure => VerifyLevel::Structure,
            VerifyArg::Full => VerifyLevel::Full,
            VerifyArg::None => VerifyLevel::None,
        }
    }
}

/// Mount a container (or a directory of containers) read-only at MOUNTPOINT. Returns
/// once the mount is ready and keeps serving in the background (`-f`: in the
/// foreground). Unmount with `h4fs umount MOUNTPOINT`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  h4fs mount movie.h4mk /mnt/movie && mpv /mnt/movie/stream
  h4fs mount --cache-size 1G --threads 8 library/ /mnt/library
  h4fs mount -f --log-file /tmp/h4fs.log movie.h4mk /mnt/movie
  h4fs umount /mnt/movie

Options also work as -o key=value (cache_size=, threads=, verify=, strict, uid=,
gid=, log_file=, nonempty, allow_other, allow_root), as used by `mount -t fuse.h4fs` and
/etc/fstab. The mount is read-only, nosuid and nodev (-o suid,dev drop the last two).")]
pub struct MountArgs {
    /// A container file, or a directory whose *.h4mk files become subdirectories.
    pub source: PathBuf,
    /// An existing empty directory that is not already a mount point (see
    /// --allow-non-empty).
    pub mountpoint: PathBuf,
    /// Stay in the foreground (logs go to stderr unless --log-file).
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Bytes of verified, decoded blocks to keep in memory (suffixes K, M, G, T); a block
    /// larger than this is kept by the open file reading it instead.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256M")]
    pub cache_size: u64,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf
    /// when not root).
    #[arg(long)]
    pub allow_other: bool,
    /// Owner shown for every file (default: the user who mounts).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group shown for every file (default: the group of the user who mounts).
    #[arg(long)]
    pub gid: Option<u32>,
    /// FUSE worker threads serving requests concurrently.
    #[arg(long, default_value_t = default_threads())]
    pub threads: usize,
    /// What to check before the mount is served.
    #[arg(long, value_enum, default_value = "structure")]
    pub verify: VerifyArg,
    /// With a directory SOURCE, refuse to mount when any container in it fails to open
    /// or fails its checks. Without it, such a container is left out with a warning
    /// and listed under "skipped" by `h4fs stats`.
    #[arg(long)]
    pub strict: bool,
    /// Mount over a directory that is not empty (-o nonempty); its files are hidden
    /// while the mount lasts.
    #[arg(long)]
    pub allow_non_empty: bool,
    /// FUSE and mount options, comma-separated (repeatable).
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Append the daemon's log (block failures, signals) to this file.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Keys for encrypted containers (without one, their data files give EACCES).
    #[command(flatten)]
    pub keys: super::keys::KeyArgs,
    /// Internal: descriptor on which to report readiness to the parent.
    #[arg(long, hide = true)]
    pub ready_fd: Option<RawFd>,
}

/// Unmount an h4fs (or any FUSE) mount, also one whose daemon died ("Transport
/// endpoint is not connected").
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  h4fs umount /mnt/movie
  h4fs umount --lazy /mnt/movie    # detach now even while files are open")]
pub struct UmountArgs {
    pub mountpoint: PathBuf,
    /// Detach now even when files are still open (they keep working until closed).
    #[arg(short = 'z', long)]
    pub lazy: bool,
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(4)
}

/// The mount settings after `-o` options are applied, and the arguments that give
/// them to the daemon.
#[derive(Debug)]
struct Settings {
    args: MountArgs,
    /// The arguments of `h4fs mount` (after the subcommand) as given: the daemon is
    /// started with the same ones, so it reads them exactly as this process did.
    argv: Vec<OsString>,
    fsname: Option<String>,
    extra: Vec<MountOption>,
    warnings: Vec<String>,
}

/// What one `-o` option means.
#[derive(Debug, PartialEq)]
enum MountOpt {
    /// An `h4fs mount` setting: the long flag it stands for, with its value.
    Flag(String),
    /// A flag for the kernel's mount.
    Kernel(MountOption),
    /// The name shown as the mount's source (`fsname=`).
    FsName(String),
    /// Accepted and without effect (h4fs is always read-only; options for mount(8)).
    Ignored,
    /// `rw`: ignored with a warning.
    ReadWrite,
}

/// The `-o` options that are settings of `h4fs mount`, and the long flag each stands
/// for. Their values are parsed by clap with that flag's own value parser.
const OPTION_FLAGS: &[(&str, &str)] = &[
    ("cache_size", "--cache-size"),
    ("threads", "--threads"),
    ("verify", "--verify"),
    ("uid", "--uid"),
    ("gid", "--gid"),
    ("strict", "--strict"),
    ("nonempty", "--allow-non-empty"),
    ("allow_other", "--allow-other"),
    ("log_file", "--log-file"),
    ("key_file", "--key-file"),
    ("shared_secret_file", "--shared-secret-file"),
];

/// What one `-o` option (`key` or `key=value`) means; an option h4fs does not know is
/// refused, naming it.
fn classify(o: &str) -> anyhow::Result<MountOpt> {
    let (k, v) = match o.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (o, None),
    };
    if let Some((_, flag)) = OPTION_FLAGS.iter().find(|(name, _)| *name == k) {
        return Ok(MountOpt::Flag(match v {
            Some(v) => format!("{flag}={v}"),
            None => flag.to_string(),
        }));
    }
    Ok(match k {
        "fsname" => MountOpt::FsName(
            v.ok_or_else(|| anyhow!("mount option fsname needs a value (fsname=NAME)"))?
                .to_string(),
        ),
        "max_read" | "allow_root" => MountOpt::Kernel(MountOption::CUSTOM(o.to_string())),
        "nosuid" => MountOpt::Kernel(MountOption::NoSuid),
        "nodev" => MountOpt::Kernel(MountOption::NoDev),
        "noexec" => MountOpt::Kernel(MountOption::NoExec),
        "exec" => MountOpt::Kernel(MountOption::Exec),
        "suid" => MountOpt::Kernel(MountOption::Suid),
        "dev" => MountOpt::Kernel(MountOption::Dev),
        "noatime" => MountOpt::Kernel(MountOption::NoAtime),
        "rw" => MountOpt::ReadWrite,
        "ro"
        | "default_permissions"
        | "subtype"
        | "atime"
        | "relatime"
        | "strictatime"
        | "nodiratime"
        | "sync"
        | "async"
        | "dirsync" => MountOpt::Ignored,
        // Options for mount(8) itself (fstab), not for the filesystem.
        "defaults" | "auto" | "noauto" | "user" | "users" | "nouser" | "owner" | "group"
        | "nofail" | "_netdev" | "comment" | "loop" => MountOpt::Ignored,
        k if k.starts_with("x-") => MountOpt::Ignored,
        _ => bail!(
            "unknown mount option \"{o}\" (h4fs takes ro, allow_other, allow_root, cache_size=, threads=, verify=, strict, nonempty, uid=, gid=, log_file=, key_file=, shared_secret_file=, fsname=, max_read=, noexec, noatime, suid, dev)"
        ),
    })
}

/// Apply the `-o` options of `args`. Settings become their long flags and go through
/// clap, so `-o cache_size=1G` is read exactly as `--cache-size 1G` is (the same value
/// parser, the same message for a bad value); an `-o` setting wins over its flag.
fn apply_options(mut args: MountArgs, argv: Vec<OsString>) -> anyhow::Result<Settings> {
    let mut s = Settings {
        args: args.clone(),
        argv,
        fsname: None,
        extra: Vec::new(),
        warnings: Vec::new(),
    };
    let mut flags = Vec::new();
    for o in args
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .map(str::trim)
    {
        if o.is_empty() {
            continue;
        }
        match classify(o)? {
            MountOpt::Flag(f) => flags.push((o.to_string(), f)),
            MountOpt::Kernel(k) => s.extra.push(k),
            MountOpt::FsName(n) => s.fsname = Some(n),
            MountOpt::Ignored => {}
            MountOpt::ReadWrite => s
                .warnings
                .push("h4fs mounts are always read-only; ignoring the \"rw\" option".into()),
        }
    }
    for (o, flag) in flags {
        apply_flag(&mut args, &flag).with_context(|| format!("mount option \"{o}\""))?;
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    s.args = args;
    Ok(s)
}

/// Parse one long flag (`--cache-size=1G`) with the `h4fs mount` command's clap
/// definition and set it in `args`.
fn apply_flag(args: &mut MountArgs, flag: &str) -> anyhow::Result<()> {
    use clap::{Args, FromArgMatches, parser::ValueSource};
    let cmd = MountArgs::augment_args(clap::Command::new("h4fs mount"))
        .no_binary_name(true)
        .disable_help_flag(true);
    let argv = [
        args.source.as_os_str(),
        args.mountpoint.as_os_str(),
        flag.as_ref(),
    ];
    let m = cmd
        .try_get_matches_from(argv)
        .map_err(|e| anyhow!("{}", clap_message(&e)))?;
    let o = MountArgs::from_arg_matches(&m).map_err(|e| anyhow!("{}", clap_message(&e)))?;
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    if given("cache_size") {
        args.cache_size = o.cache_size;
    }
    if given("threads") {
        args.threads = o.threads;
    }
    if given("verify") {
        args.verify = o.verify;
    }
    if given("uid") {
        args.uid = o.uid;
    }
    if given("gid") {
        args.gid = o.gid;
    }
    if given("strict") {
        args.strict = o.strict;
    }
    if given("allow_non_empty") {
        args.allow_non_empty = o.allow_non_empty;
    }
    if given("allow_other") {
        args.allow_other = o.allow_other;
    }
    if given("log_file") {
        args.log_file = o.log_file;
    }
    if given("key_file") {
        args.keys.key_file = o.keys.key_file;
    }
    if given("shared_secret_file") {
        args.keys.shared_secret_file = o.keys.shared_secret_file;
    }
    Ok(())
}

/// A clap error as one line, without clap's "error: " prefix and usage hint.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// An absolute path without resolving its last component (which may be a dead mount
/// that cannot be stat'ed).
pub(super) fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Ok(abs);
    };
    let parent = parent
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", parent.display()))?;
    Ok(parent.join(name))
}

/// A line of /proc/self/mountinfo: mount point and filesystem type.
#[derive(Debug)]
pub(super) struct MountInfo {
    /// `major:minor` of the mounted filesystem (its backing-device-info name).
    dev: String,
    pub(super) point: PathBuf,
    pub(super) fstype: String,
    source: String,
}

fn unescape_mountinfo(s: &str) -> PathBuf {
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

pub(super) fn find_mount(point: &Path) -> Option<MountInfo> {
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

/// Check the mount point: it exists, is a directory, is not already a mount, and is
/// empty (unless `allow_non_empty`: a mount hides what the directory holds).
///
/// /proc/self/mountinfo is consulted before the directory itself is touched, at each
/// step of a symlink chain, so a mount point held by a stopped or dead FUSE daemon is
/// refused as "already a mount point" without waiting on that daemon; only then is the
/// directory stat'ed and listed. `source` is only used for a hint when the two
/// arguments look swapped.
fn check_mountpoint(mp: &Path, source: &Path, allow_non_empty: bool) -> anyhow::Result<PathBuf> {
    let mut p = absolute(mp)?;
    if p.file_name().is_none() {
        // "/" or a path ending in "..": resolve it in full.
        p = p
            .canonicalize()
            .with_context(|| format!("cannot resolve mount point {}", p.display()))?;
    }
    let mut hops = 0;
    let md = loop {
        if let Some(m) = find_mount(&p) {
            // Whether a FUSE daemon there is alive, dead or stopped is not asked: asking
            // a stopped one would wait for it.
            let how = if m.fstype.starts_with("fuse") {
                format!(
                    " with `h4fs umount {}` (which also clears a mount whose daemon died)",
                    m.point.display()
                )
            } else {
                String::new()
            };
            bail!(
                "{} is already a mount point ({} from {}); unmount it first{how}",
                m.point.display(),
                m.fstype,
                m.source
            );
        }
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() && hops < 40 => {
                hops += 1;
                let target = std::fs::read_link(&p)
                    .with_context(|| format!("cannot read the symlink {}", p.display()))?;
                let parent = p.parent().unwrap_or(Path::new("/"));
                p = absolute(&parent.join(target))?;
            }
            Ok(md) => break md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "mount point {} does not exist (create it with mkdir first)",
                p.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot use mount point {}", p.display()));
            }
        }
    };
    if !md.is_dir() {
        let swapped = md.is_file() && source.is_dir();
        if swapped {
            bail!(
                "mount point {} is not a directory; the container comes first: \
                 `h4fs mount {} {}` (SOURCE, then MOUNTPOINT)",
                p.display(),
                mp.display(),
                source.display()
            );
        }
        bail!(
            "mount point {} is not a directory (usage: h4fs mount SOURCE MOUNTPOINT)",
            p.display()
        );
    }
    if !allow_non_empty {
        let mut entries = std::fs::read_dir(&p)
            .with_context(|| format!("cannot list mount point {}", p.display()))?;
        if let Some(first) = entries.next() {
            let first =
                first.with_context(|| format!("cannot list mount point {}", p.display()))?;
            bail!(
                "mount point {} is not empty (it holds {:?}{}); the mount would hide its \
                 files: use an empty directory, or --allow-non-empty (-o nonempty)",
                p.display(),
                first.file_name(),
                if entries.next().is_some() {
                    " and more"
                } else {
                    ""
                }
            );
        }
    }
    Ok(p)
}

/// Where the daemon's messages go.
enum Sink {
    Stderr,
    File(Mutex<std::fs::File>),
    Syslog,
}

struct Logger {
    sink: Sink,
}

impl Logger {
    fn log(&self, msg: &str) {
        match &self.sink {
            Sink::Stderr => eprintln!("{msg}"),
            Sink::File(f) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(f, "{} {msg}", fs_time(now));
            }
            Sink::Syslog => {
                if let Ok(c) = CString::new(msg.replace('\0', " ")) {
                    // SAFETY: a constant format string and a NUL-terminated argument.
                    unsafe { libc::syslog(libc::LOG_WARNING, c"%s".as_ptr(), c.as_ptr()) };
                }
            }
        }
    }
}

fn fs_time(unix: u64) -> String {
    let days_secs = unix % 86400;
    format!(
        "[{}d {:02}:{:02}:{:02}]",
        unix / 86400,
        days_secs / 3600,
        days_secs / 60 % 60,
        days_secs % 60
    )
}

/// `h4fs mount`, with the arguments clap read from this process's command line
/// (`h4fs mount ARGS...`: the subcommand is always the first argument).
pub fn run_mount(args: MountArgs) -> anyhow::Result<u8> {
    mount(args, std::env::args_os().skip(2).collect())
}

/// Mount with `args`, read from `argv` (the arguments after `mount`).
fn mount(args: MountArgs, argv: Vec<OsString>) -> anyhow::Result<u8> {
    let s = apply_options(args, argv)?;
    if s.args.ready_fd.is_none() {
        for w in &s.warnings {
            eprintln!("h4fs: warning: {w}");
        }
    }
    if s.args.foreground || s.args.ready_fd.is_some() {
        return serve(s);
    }
    spawn_daemon(&s)
}

/// Start the daemon (this program, in the foreground, in a new session) and wait until
/// it reports the mount ready or failed.
fn spawn_daemon(s: &Settings) -> anyhow::Result<u8> {
    check_mountpoint(&s.args.mountpoint, &s.args.source, s.args.allow_non_empty)?;
    let source = absolute(&s.args.source)?;
    match std::fs::metadata(&source) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("source {} does not exist", source.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot use source {}", source.display())),
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
    cmd.arg("mount").arg("--ready-fd").arg("3").args(&s.argv);
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
            return Ok(code.trim().parse().unwrap_or(super::EXIT_ERROR));
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
            let _ = write!(f, "ERR {code}\n{}\n", super::chain_text(e));
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
fn serve(s: Settings) -> anyhow::Result<u8> {
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
    match mount_session(&s) {
        Ok((session, logger, core, warnings)) => {
            for w in &warnings {
                ready.warn(w);
            }
            ready.ok();
            let daemon = s.args.ready_fd.is_some();
            if daemon {
                detach_stdio(s.args.log_file.as_deref());
            }
            run_session(session, logger, core, sigset, &s.args.mountpoint)
        }
        Err(e) => {
            let code = if e.chain().any(|c| {
                c.downcast_ref::<crate::Error>()
                    .is_some_and(|e| e.is_integrity())
            }) {
                super::EXIT_DAMAGED
            } else {
                super::EXIT_ERROR
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

/// The session, its logger and core, and warnings for the user.
type Mounted = (fuser::Session<FuseFs>, Arc<Logger>, Arc<Fs>, Vec<String>);

fn mount_session(s: &Settings) -> anyhow::Result<Mounted> {
    let a = &s.args;
    let mp = check_mountpoint(&a.mountpoint, &a.source, a.allow_non_empty)?;
    let source = absolute(&a.source)?;
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
    let opened =
        fs::open_sources(&source, a.verify.into(), &attach, a.strict).context("cannot mount")?;
    let mut warnings = Vec::new();
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
    let l2 = logger.clone();
    let cfg = FsConfig {
        // SAFETY: getuid/getgid cannot fail.
        uid: a.uid.unwrap_or_else(|| unsafe { libc::getuid() }),
        gid: a.gid.unwrap_or_else(|| unsafe { libc::getgid() }),
        cache_bytes: a.cache_size,
        prefetch_bytes: (16u64 << 20).min(a.cache_size / 4),
        log: Arc::new(move |m| l2.log(m)),
    };
    let core = Arc::new(
        Fs::new(opened.sources, opened.multi, root_mtime, cfg).with_skipped(&opened.skipped),
    );
    core.start_prefetch(2);
    let mut options = vec![
        MountOption::FSName(
            s.fsname
                .clone()
                .unwrap_or_else(|| source.display().to_string()),
        ),
        MountOption::CUSTOM("subtype=h4fs".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
    ];
    // Nothing on the mount is set-user-ID or a device, and a media container should not
    // be able to make it so: nosuid and nodev unless `-o suid` / `-o dev` ask otherwise.
    for (default, unless) in [
        (MountOption::NoSuid, MountOption::Suid),
        (MountOption::NoDev, MountOption::Dev),
    ] {
        if !s.extra.contains(&unless) {
            options.push(default);
        }
    }
    for o in &s.extra {
        if !options.contains(o) {
            options.push(o.clone());
        }
    }
    let config = FuseFs::config(a.threads, options, a.allow_other);
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "FUSE is not available: /dev/fuse is missing (load the module with `modprobe fuse`, install fuse3)"
        );
    }
    let session = match fuser::Session::new(FuseFs::new(core.clone()), &mp, &config) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !dev_fuse_usable() => {
            bail!(
                "cannot mount at {}: /dev/fuse cannot be opened by this user ({e}); \
                 run as root, or let users open it (`chmod 0666 /dev/fuse`, the usual mode)",
                mp.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot mount at {}", mp.display())),
    };
    if let Err(e) = raise_readahead(&mp) {
        logger.log(&format!(
            "h4fs: note: kernel readahead stays at its default ({e}); reads arrive in smaller requests"
        ));
    }
    logger.log(&format!(
        "h4fs: mounted {} at {} ({} threads, cache {} bytes, verify {})",
        source.display(),
        mp.display(),
        a.threads,
        a.cache_size,
        VerifyLevel::from(a.verify).name()
    ));
    Ok((session, logger, core, warnings))
}

/// Whether this process may open /dev/fuse for reading and writing.
fn dev_fuse_usable() -> bool {
    // SAFETY: access(2) on a constant, NUL-terminated path.
    unsafe { libc::access(c"/dev/fuse".as_ptr(), libc::R_OK | libc::W_OK) == 0 }
}

/// Let the kernel read ahead up to [`crate::fuse::MAX_READ`] on this mount, so
/// sequential readers get 1 MiB requests. The kernel starts a FUSE mount at 128 KiB and
/// the FUSE handshake can only lower that, so it is raised through sysfs (root only).
/// Uses mountinfo, not stat: a stat of the mount point would wait on this very daemon.
fn raise_readahead(mp: &Path) -> anyhow::Result<()> {
    let m = find_mount(mp).ok_or_else(|| anyhow!("{} not found in mountinfo", mp.display()))?;
    let knob = Path::new("/sys/class/bdi")
        .join(&m.dev)
        .join("read_ahead_kb");
    let kb = crate::fuse::MAX_READ / 1024;
    std::fs::write(&knob, format!("{kb}\n"))
        .with_context(|| format!("cannot write {}", knob.display()))
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
    mut session: fuser::Session<FuseFs>,
    logger: Arc<Logger>,
    core: Arc<Fs>,
    sigset: libc::sigset_t,
    mountpoint: &Path,
) -> anyhow::Result<u8> {
    let mut unmounter = session.unmount_callable();
    let mp = absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let l2 = logger.clone();
    std::thread::Builder::new()
        .name("h4fs-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on a set blocked in every thread.
            if unsafe { libc::sigwait(&sigset, &mut sig) } != 0 {
                return;
            }
            l2.log(&format!("h4fs: signal {sig}: unmounting {}", mp.display()));
            if let Err(e) = unmounter.unmount() {
                l2.log(&format!("h4fs: unmount failed ({e}); detaching lazily"));
                let _ = umount2(&mp, libc::MNT_DETACH);
            }
        })
        .context("cannot start the signal thread")?;
    let r = session.run();
    core.stop_prefetch();
    let s = core.cache_stats();
    logger.log(&format!(
        "h4fs: unmounted; cache hits {} misses {} evictions {} prefetches {}",
        s.hits, s.misses, s.evictions, s.prefetches
    ));
    r.context("the FUSE session ended with an error")?;
    Ok(0)
}

fn umount2(p: &Path, flags: libc::c_int) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

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
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    match umount2(&real, flags) {
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

/// The mount helper forms. Returns `None` when argv is an ordinary `h4fs` command line.
pub fn helper_main(subcommands: &[String]) -> Option<ExitCode> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let prog = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest: Vec<OsString> = argv.iter().skip(1).cloned().collect();
    let as_helper = prog.starts_with("mount.");
    let is_flag = |a: &OsString| a.as_bytes().starts_with(b"-");
    let as_fuse_program = !as_helper
        && rest.len() >= 2
        && !is_flag(&rest[0])
        && !is_flag(&rest[1])
        && !subcommands.iter().any(|c| rest[0] == c.as_str())
        && Path::new(&rest[0]).exists();
    if !as_helper && !as_fuse_program {
        return None;
    }
    Some(
        match helper_args(&rest).and_then(|(args, argv)| mount(args, argv)) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("h4fs: error: {}", super::chain_text(&e));
                ExitCode::from(super::EXIT_ERROR)
            }
        },
    )
}

/// The command line mount(8) and `mount.fuse3` give a mount helper:
/// `SOURCE MOUNTPOINT [-o OPTS]... [-t TYPE] [-f] [-s] [-n] [-v] [-r] [-w] [-N NS]`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "mount.fuse.h4fs",
    no_binary_name = true,
    disable_help_flag = true
)]
struct HelperArgs {
    source: OsString,
    mountpoint: OsString,
    /// Mount options, comma-separated, as `h4fs mount -o` takes them.
    #[arg(short = 'o', value_name = "OPTS")]
    options: Vec<OsString>,
    /// Stay in the foreground.
    #[arg(short = 'f')]
    foreground: bool,
    /// The filesystem type (`fuse.h4fs`); ignored.
    #[arg(short = 't', value_name = "TYPE")]
    _fstype: Option<String>,
    /// A mount namespace; ignored.
    #[arg(short = 'N', value_name = "NS")]
    _namespace: Option<String>,
    /// Sloppy, no mtab, verbose, read-only, read-write: mount(8)'s flags; ignored.
    #[arg(short = 's')]
    _sloppy: bool,
    #[arg(short = 'n')]
    _no_mtab: bool,
    #[arg(short = 'v')]
    _verbose: bool,
    #[arg(short = 'r')]
    _read_only: bool,
    #[arg(short = 'w')]
    _read_write: bool,
}

/// A mount helper's command line as the `h4fs mount` arguments it stands for, read by
/// clap into [`MountArgs`] like any `h4fs mount` command line.
fn helper_args(rest: &[OsString]) -> anyhow::Result<(MountArgs, Vec<OsString>)> {
    use clap::{FromArgMatches, Parser};
    let h = HelperArgs::try_parse_from(rest).map_err(|e| anyhow!("{}", clap_message(&e)))?;
    let mut argv = vec![h.source, h.mountpoint];
    if h.foreground {
        argv.push("-f".into());
    }
    for o in h.options {
        argv.push("-o".into());
        argv.push(o);
    }
    let cmd = <MountArgs as clap::Args>::augment_args(clap::Command::new("h4fs mount"))
        .no_binary_name(true);
    let m = cmd
        .try_get_matches_from(&argv)
        .map_err(|e| anyhow!("{}", clap_message(&e)))?;
    let args = MountArgs::from_arg_matches(&m).map_err(|e| anyhow!("{}", clap_message(&e)))?;
    Ok((args, argv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_argv_and_options() {
        let helper = |args: &[&str]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            helper_args(&args).and_then(|(a, argv)| apply_options(a, argv))
        };
        let s = helper(&[
            "/data/x.h4mk",
            "/mnt/x",
            "-t",
            "fuse.h4fs",
            "-o",
            "ro,allow_other,cache_size=1G,noauto,x-systemd.automount,verify=full",
            "-n",
        ])
        .unwrap();
        assert_eq!(s.args.source, PathBuf::from("/data/x.h4mk"));
        assert_eq!(s.args.mountpoint, PathBuf::from("/mnt/x"));
        assert!(s.args.allow_other);
        assert_eq!(s.args.cache_size, 1 << 30);
        assert_eq!(s.args.verify, VerifyArg::Full);
        assert!(!s.args.foreground);
        // The daemon is started with the `h4fs mount` arguments the helper stands for.
        assert_eq!(
            s.argv,
            [
                "/data/x.h4mk",
                "/mnt/x",
                "-o",
                "ro,allow_other,cache_size=1G,noauto,x-systemd.automount,verify=full"
            ]
        );
        let bad = helper(&["a", "b", "-o", "frobnicate"]).unwrap_err();
        assert!(bad.to_string().contains("frobnicate"), "{bad}");
        assert!(helper(&["only-one"]).is_err());
        assert!(helper(&["a", "b", "c"]).is_err());
        assert!(helper(&["a", "b", "-x"]).is_err());
        let rw = helper(&["a", "b", "-orw", "-f"]).unwrap();
        assert_eq!(rw.warnings.len(), 1);
        assert!(rw.args.foreground);
    }

    fn mount_args(args: &[&str]) -> anyhow::Result<Settings> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: MountArgs,
        }
        let cli = Cli::try_parse_from(std::iter::once("mount").chain(args.iter().copied()))?;
        apply_options(cli.args, args.iter().map(OsString::from).collect())
    }

    /// `-o` settings are read by clap with the value parser of the flag they stand for:
    /// the same forms, the same messages; they win over the flag; the flags given
    /// without -o are kept; kernel flags and ignored ones are sorted out.
    #[test]
    fn o_settings_go_through_the_flags_parsers() {
        let s = mount_args(&[
            "s",
            "m",
            "--threads",
            "7",
            "--strict",
            "--cache-size",
            "1M",
            "-o",
            "cache_size=2G,uid=12,nonempty,noexec,fsname=movie",
            "-o",
            "log_file=/tmp/x.log,key_file=k,defaults",
        ])
        .unwrap();
        let a = &s.args;
        assert_eq!((a.threads, a.strict, a.cache_size), (7, true, 2 << 30));
        assert_eq!((a.uid, a.gid), (Some(12), None));
        assert!(a.allow_non_empty && !a.allow_other);
        assert_eq!(a.log_file.as_deref(), Some(Path::new("/tmp/x.log")));
        assert_eq!(a.keys.key_file.as_deref(), Some(Path::new("k")));
        assert_eq!(s.extra, [MountOption::NoExec]);
        assert_eq!(s.fsname.as_deref(), Some("movie"));
        assert!(s.warnings.is_empty());

        let err = |args: &[&str]| format!("{:#}", mount_args(args).unwrap_err());
        let flag = err(&["s", "m", "--cache-size", "12Q"]);
        let opt = err(&["s", "m", "-o", "cache_size=12Q"]);
        let want = "\"12Q\": unknown size suffix \"q\" (use K, M, G or T)";
        assert!(flag.contains(want) && opt.contains(want), "{flag}\n{opt}");
        assert!(
            opt.starts_with("mount option \"cache_size=12Q\": "),
            "{opt}"
        );
        assert!(err(&["s", "m", "-o", "verify=most"]).contains("most"));
        assert!(err(&["s", "m", "-o", "uid=me"]).contains("uid=me"));
        assert!(err(&["s", "m", "-o", "strict=1"]).contains("strict=1"));
        assert!(err(&["s", "m", "-o", "cache_size"]).contains("--cache-size"));
        assert!(err(&["s", "m", "-o", "threads=0"]).contains("at least 1"));
        assert!(err(&["s", "m", "-o", "fsname"]).contains("needs a value"));
        assert!(err(&["s", "m", "-o", "foreground"]).contains("unknown mount option"));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            unescape_mountinfo("/mnt/a\\040b"),
            PathBuf::from("/mnt/a b")
        );
        assert_eq!(unescape_mountinfo("/x\\"), PathBuf::from("/x\\"));
    }
}
