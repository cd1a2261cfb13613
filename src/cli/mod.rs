//! The `h4fs` command: clap types and one module per subcommand.
//!
//! Exit codes: 0 success; 1 the container is damaged (an integrity check failed);
//! 2 bad command line; 3 any other error (missing file, unknown engine, I/O, ...).
//!
//! Output goes through `writeln!` on a stdout handle and its errors propagate, so a
//! reader that closes the pipe early ends the command quietly with status 0, as ripgrep
//! does; `println!` would panic instead, and is denied here.
#![deny(clippy::print_stdout)]

use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;

mod cat;
mod inspect;
mod keys;
mod mount;
mod pack;
mod probe;
mod progress;
pub mod remote;
mod seek;
mod serve;
mod size;
mod stats;
mod upgrade;
mod verify;

/// Exit code for a damaged container.
pub const EXIT_DAMAGED: u8 = 1;
/// Exit code for usage errors (clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit code for every other error.
pub const EXIT_ERROR: u8 = 3;

const AFTER_HELP: &str = "\
Examples:
  h4fs pack movie.mp4 --media -o movie.h4mk
  h4fs inspect movie.h4mk
  h4fs verify --endpoint http://127.0.0.1:8333 s3://media/movie.h4mk
  h4fs cat https://cdn.example/movie.h4mk --range 0-1023 | xxd | head
  h4fs verify --ca-file our-ca.pem https://media.internal/movie.h4mk
  h4fs verify --full movie.h4mk
  h4fs seek movie.h4mk 5000000
  h4fs cat movie.h4mk --range 0-1023 | xxd | head
  h4fs extract movie.h4mk -o movie.copy.mp4
  h4fs mount movie.h4mk /mnt/movie && mpv /mnt/movie/stream.mp4
  h4fs umount /mnt/movie
  h4fs serve movie.h4mk --listen 127.0.0.1:8080

Exit codes: 0 ok, 1 container damaged, 2 bad usage, 3 other error.";

/// H4MK media containers as ordinary files and directories.
#[derive(Debug, Parser)]
#[command(name = "h4fs", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub remote: remote::RemoteArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Pack(pack::Args),
    Inspect(inspect::Args),
    Seek(seek::Args),
    Verify(verify::Args),
    Cat(cat::CatArgs),
    Extract(cat::ExtractArgs),
    Keygen(keys::KeygenArgs),
    Rekey(keys::RekeyArgs),
    Upgrade(upgrade::Args),
    Mount(mount::MountArgs),
    Umount(mount::UmountArgs),
    Stats(stats::Args),
    Serve(serve::ServeArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // `mount -t fuse.h4fs` runs `mount.fuse.h4fs SRC DIR -o OPTS` or `h4fs SRC DIR -o OPTS`.
    let subcommands: Vec<String> = <Cli as clap::CommandFactory>::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .chain(["help".to_string()])
        .collect();
    if let Some(code) = mount::helper_main(&subcommands) {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    remote::set(cli.remote.clone());
    let result = match cli.command {
        Command::Pack(a) => pack::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Seek(a) => seek::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Cat(a) => cat::run_cat(a),
        Command::Extract(a) => cat::run_extract(a),
        Command::Keygen(a) => keys::run_keygen(a),
        Command::Rekey(a) => keys::run_rekey(a),
        Command::Upgrade(a) => upgrade::run(a),
        Command::Mount(a) => mount::run_mount(a),
        Command::Umount(a) => mount::run_umount(a),
        Command::Stats(a) => stats::run(a),
        Command::Serve(a) => serve::run(a),
    };
    remote::report();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => report(&e),
    }
}

/// Print an error with its cause chain; choose the exit code. A broken pipe on stdout
/// (`h4fs inspect --json X | head -1`) is not an error: exit 0 quietly, as ripgrep does.
fn report(e: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    let _ = std::io::stdout().flush();
    eprintln!("h4fs: error: {}", chain_text(e));
    let damaged = e.chain().any(|c| {
        c.downcast_ref::<h4fs_error::Error>()
            .is_some_and(|e| e.is_integrity())
    });
    ExitCode::from(if damaged { EXIT_DAMAGED } else { EXIT_ERROR })
}

use crate::error as h4fs_error;

/// An error and its causes, `: `-separated, each said once: a context that the next
/// cause repeats ("cannot open X" above "cannot open X: No such file ...") and a cause
/// whose text the message above already ends with are left out.
pub(crate) fn chain_text(e: &anyhow::Error) -> String {
    let msgs: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    let mut kept: Vec<&str> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let repeated_below = msgs
            .get(i + 1)
            .is_some_and(|next| next.contains(m.as_str()));
        let said_above = kept.last().is_some_and(|prev| prev.ends_with(m.as_str()));
        if m.is_empty() || repeated_below || said_above {
            continue;
        }
        kept.push(m);
    }
    kept.join(": ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let broken = |k: Option<std::io::ErrorKind>| k == Some(std::io::ErrorKind::BrokenPipe);
    e.chain().any(|c| {
        broken(c.downcast_ref::<std::io::Error>().map(|io| io.kind()))
            || broken(
                c.downcast_ref::<serde_json::Error>()
                    .and_then(|j| j.io_error_kind()),
            )
            || c.downcast_ref::<h4fs_error::Error>().is_some_and(
                |e| matches!(e, h4fs_error::Error::Io { cause, .. } if broken(Some(cause.kind()))),
            )
    })
}

/// For a reference layout-A container ([`Archive::needs_veri`](crate::Archive::needs_veri)),
/// check its whole-file VERI before anything `what` describes reaches the user: its
/// blocks have no hash of their own, and a damaged chunk tag would silently drop one.
/// Costs one read and SHA-256 of the whole file (about 1.5 GB/s here).
pub(crate) fn check_veri_first(
    a: &crate::Archive,
    file: &std::path::Path,
    what: &str,
) -> anyhow::Result<()> {
    if a.needs_veri() {
        a.check_veri(&|_| {}).map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "{} is a reference container, which only its whole-file VERI protects; \
                 VERI is checked before {what}",
                file.display()
            ))
        })?;
    }
    Ok(())
}

/// Options shared by commands that read a container.
#[derive(Debug, Clone, clap::Args)]
pub struct TrackArg {
    /// Track to read (layout C multitrack files: a track id from `inspect`; default the
    /// first track).
    #[arg(long, value_name = "ID")]
    pub track: Option<u32>,
}

impl TrackArg {
    /// The index into `archive.tracks` of the chosen track.
    pub fn resolve(&self, a: &crate::Archive) -> anyhow::Result<usize> {
        match self.track {
            None if a.tracks.is_empty() => anyhow::bail!("the container has no tracks"),
            None => Ok(0),
            Some(id) => a.tracks.iter().position(|t| t.id == id).ok_or_else(|| {
                let ids: Vec<String> = a.tracks.iter().map(|t| t.id.to_string()).collect();
                anyhow::anyhow!("no track {id}; tracks: {}", ids.join(", "))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        // A context repeated by the error below it.
        let e = anyhow::Error::new(h4fs_error::Error::io("cannot open x.h4mk", io()))
            .context("cannot open x.h4mk");
        assert_eq!(chain_text(&e), format!("cannot open x.h4mk: {}", io()));
        // A cause whose text the message above already ends with.
        let e = anyhow::Error::new(io()).context(format!("reading y: {}", io()));
        assert_eq!(chain_text(&e), format!("reading y: {}", io()));
        // Different parts are all kept, in order.
        let e = anyhow::anyhow!("block 3 failed")
            .context("file z")
            .context("cannot mount");
        assert_eq!(chain_text(&e), "cannot mount: file z: block 3 failed");
    }
}
