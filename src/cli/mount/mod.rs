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
//! The parts: [`args`] (the clap types), [`options`] (`-o` and the helper forms, read
//! through clap), [`mountpoint`] (checks before mounting), [`daemon`] (the background
//! process, its readiness pipe, signals and the serving loop), [`log`] (where the
//! daemon writes), [`umount`]. Mounting and serving themselves are the library's
//! [`crate::fuse::session`].
//!
//! Helper forms, for `mount -t fuse.h4fs SRC DIR -o OPTS` and /etc/fstab:
//! * `mount.fuse.h4fs SRC DIR [-o OPTS]...` (argv\[0\] starting with `mount.`): what
//!   mount(8) runs when that name is installed in /sbin;
//! * `h4fs SRC DIR [-o OPTS]...` (first argument not a subcommand): what mount(8)'s
//!   generic `mount.fuse3` runs (`/bin/sh -c 'h4fs SRC DIR -o OPTS'`).

mod args;
mod daemon;
mod log;
mod mountpoint;
mod options;
mod umount;

pub(super) use crate::fuse::session::find_mount;
pub use args::{MountArgs, UmountArgs, VerifyArg};
pub(super) use mountpoint::absolute;
pub use umount::run_umount;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

/// `h4fs mount`, with the arguments clap read from this process's command line
/// (`h4fs mount ARGS...`: the subcommand is always the first argument).
pub fn run_mount(args: MountArgs) -> anyhow::Result<u8> {
    // Global options (--endpoint, --region, ...) may come before `mount`: the daemon
    // gets them there too.
    let all: Vec<OsString> = std::env::args_os().skip(1).collect();
    let lead = super::remote::leading_global_args(&all);
    let global = all[..lead].to_vec();
    let argv = all.get(lead + 1..).unwrap_or_default().to_vec();
    mount(args, global, argv)
}

/// Mount with `args`, read from `argv` (the arguments after `mount`; `global`: the
/// global options given before it).
fn mount(args: MountArgs, global: Vec<OsString>, argv: Vec<OsString>) -> anyhow::Result<u8> {
    let mut s = options::apply_options(args, argv)?;
    s.global = global;
    if s.args.ready_fd.is_none() {
        for w in &s.warnings {
            eprintln!("h4fs: warning: {w}");
        }
    }
    if s.args.foreground || s.args.ready_fd.is_some() {
        return daemon::serve(s);
    }
    daemon::spawn(&s)
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
        && (Path::new(&rest[0]).exists() || rest[0].to_str().is_some_and(crate::remote::is_remote));
    if !as_helper && !as_fuse_program {
        return None;
    }
    Some(
        match options::helper_args(&rest).and_then(|(args, argv)| mount(args, Vec::new(), argv)) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("h4fs: error: {}", super::chain_text(&e));
                ExitCode::from(super::EXIT_ERROR)
            }
        },
    )
}
