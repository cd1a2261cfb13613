//! The clap types of `h4fs mount` and `h4fs umount`.

use super::super::size::parse_size;
use crate::fs::VerifyLevel;
use std::os::fd::RawFd;
use std::path::PathBuf;

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
  h4fs mount --endpoint http://127.0.0.1:8333 s3://media/movie.h4mk /mnt/movie
  h4fs mount --endpoint http://127.0.0.1:8333 s3://media/films/ /mnt/films
  h4fs mount https://cdn.example/movie.h4mk /mnt/movie
  h4fs mount --cache-dir ~/.cache/h4fs --cache-dir-size 20G s3://media/films/ /mnt/films
  h4fs umount /mnt/movie

SOURCE may be s3://BUCKET/KEY, an http(s):// URL, or s3://BUCKET/PREFIX/ (every *.h4mk
directly under the prefix, each opened on the first lookup of its directory). Keys
come from the AWS environment or profile (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_PROFILE), never from the command line.

With --cache-dir DIR, fetched ranges of remote containers are kept as 1 MiB files in
DIR, at most --cache-dir-size bytes (default 10G), least recently used removed first;
a new mount on the same DIR reads them instead of asking the store. They are keyed by
the object's URL and ETag, so a replaced object never uses them, and verified like
bytes from the store: a damaged file is dropped and fetched again.

Options also work as -o key=value (cache_size=, cache_dir=, cache_dir_size=,
threads=, verify=, strict, uid=, gid=, log_file=, nonempty, allow_other, allow_root,
endpoint=, region=, ca_file=, no_sign_request, path_style), as used by `mount -t fuse.h4fs`
and /etc/fstab. The mount is read-only, nosuid and nodev (-o suid,dev drop the last two).")]
pub struct MountArgs {
    /// A container file, or a directory whose *.h4mk files become subdirectories; or
    /// s3://BUCKET/KEY, s3://BUCKET/PREFIX/, an http(s):// URL.
    pub source: PathBuf,
    /// An existing empty directory that is not already a mount point (see
    /// --allow-non-empty).
    pub mountpoint: PathBuf,
    /// Stay in the foreground (logs go to stderr unless --log-file).
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Bytes of verified, decoded blocks to keep in memory (suffixes K, M, G, T); a block
    /// larger than this is kept by the open file reading it instead. What a file read in
    /// order was served leaves it: the kernel's page cache keeps that.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256M")]
    pub cache_size: u64,
    /// For s3:// and http(s):// sources: keep fetched byte ranges of the containers as
    /// files in DIR (created, mode 0700, when missing), kept across mounts and checked
    /// again on every use. One mount at a time per DIR.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the files in --cache-dir hold (suffixes K, M, G, T); the least
    /// recently used go first.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = crate::remote::disk::DEFAULT_SIZE)]
    pub cache_dir_size: u64,
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
    pub keys: crate::cli::keys::KeyArgs,
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

pub(super) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(4)
}
