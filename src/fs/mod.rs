//! The filesystem core: containers as a read-only tree, in plain Rust.
//!
//! Every operation the kernel can ask for (`lookup`, `getattr`, `readdir`, `open`,
//! `read`, `readlink`, `getxattr`, `listxattr`, `statfs`) is a method returning
//! `Result<_, FsError>`. Nothing here imports `fuser`: the adapter in `fuse/mod.rs` calls
//! these methods and replies, so the whole tree is unit-testable without a mount.
//!
//! Tree of one container (a multitrack container has one such directory per track,
//! beside its `meta.json`, `safe.json`, `veri.json`, `manifest.json`, `tracks.json`):
//!
//! ```text
//! meta.json safe.json seek.csv index.csv veri.json manifest.json stream
//! stream.EXT -> stream     (when the source file's name had an extension)
//! blocks/000000 ...        by-pts/<pts_us> -> ../blocks/NNNNNN
//! by-name/<file> -> ../blocks/NNNNNN   (directory packs: the recorded file names)
//! ```
//!
//! Invariants:
//! * Bytes of `stream` and `blocks/` come only from the block layer ([`crate::blocks`]):
//!   [`VerifiedBlock`](crate::reader::VerifiedBlock)s from its cache or freshly read
//!   and checked; a block that fails its check is logged with block and offset,
//!   recorded for `veri.json`, answered with EIO and never served.
//! * Reference containers (no per-block hashes) additionally pass their whole-file
//!   VERI, checked once when the first data file is opened; a mismatch refuses all
//!   their data with EIO.
//! * Inode numbers are computed from tree positions ([`inode`]), so they are stable.
//! * The tree is stable for mirrors: every file's bytes, size and mtime stay the same
//!   while nothing about its container changes, so a second `rsync -a` (or `-ac`) of the
//!   mount copies nothing. `veri.json` changes only when a verification result does
//!   (a block fails, the whole-file VERI is checked), and then with a new size and a
//!   later mtime. Live counters are not files: they are the value of the extended
//!   attribute [`STATS_XATTR`] of the mount root, which `listxattr` does not list (so
//!   `rsync -aX`, `cp -a` and `tar --xattrs` do not copy it) and `h4fs stats` reads.
//! * The containers of a prefix mount (`s3://BUCKET/PREFIX/`) are opened on the first
//!   lookup of their directory, or when an inode inside one is resolved
//!   (`Fs::ensure_open`); listing the root opens none. Every [`ContainerId`] past that
//!   point names an opened container. Where bytes come from (a file, S3, HTTP) is the
//!   [`crate::source::ReadAt`] under the archive's concern alone.
//! * The core holds no block logic: what can be served, caching, loading and prefetch
//!   are the block layer's. The core owns the tree and the open handles.
//!
//! Submodules: [`sources`] (SOURCE to opened containers), `tree` (inode numbers to
//! nodes, parents, children), `ops` (the operations), `status` (generated JSON files,
//! `veri.json`, counters), [`reply`] (what operations answer), [`inode`], `content`
//! (CSV tables and JSON builders), [`FsError`] and the errno map.

mod content;
mod error;
pub mod inode;
mod ops;
pub mod reply;
pub mod sources;
mod status;
mod tree;

pub use error::FsError;
pub use reply::{Attr, BLKSIZE, DirEntry, Kind, Opened, ReadData, StatFs, XattrReply};
pub use sources::{
    Attach, OpenedSources, Pending, RemoteOpened, SharedAttach, Source, SourceError, VerifyLevel,
    open_container, open_remote, open_remote_container, open_sources,
};
pub use status::STATS_XATTR;

use crate::blocks::{Blocks, BlocksConfig, CacheStats, ContainerId, ReadHandle, Served, TrackId};
use crate::reader::{Archive, Layout, Track};
use crate::remote::RemoteStats;
use content::{RowFile, Table};
use inode::Local;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tree::{CONTAINER_FILES, digits, valid_dir_name};

/// Settings of a mount that the core needs.
#[derive(Clone)]
pub struct FsConfig {
    /// Owner shown for every node.
    pub uid: u32,
    pub gid: u32,
    /// Byte bound of the block cache.
    pub cache_bytes: u64,
    /// How far ahead of a sequential `stream` reader to load, in bytes.
    pub prefetch_bytes: u64,
    /// Where warnings go (block failures, VERI mismatches).
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for FsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsConfig")
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("cache_bytes", &self.cache_bytes)
            .field("prefetch_bytes", &self.prefetch_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            uid: 0,
            gid: 0,
            cache_bytes: 256 << 20,
            prefetch_bytes: 8 << 20,
            log: Arc::new(|m| eprintln!("{m}")),
        }
    }
}
/// What the tree shows of one track.
struct TrackView {
    index_csv: RowFile,
    seek_csv: RowFile,
    /// Distinct (pts, block) of SEEK entries that resolve to a block: `by-pts/` listing.
    by_pts: OnceLock<Vec<(u64, u64)>>,
    generated: Mutex<HashMap<Local, Arc<Vec<u8>>>>,
    /// Digits of block file names.
    width: usize,
    /// Directory name (multitrack containers).
    dir_name: String,
    /// Recorded file names of a directory pack, per block ([`crate::naming`]).
    names: Option<Arc<Vec<Option<String>>>>,
    /// `by-name/`: (name, block), sorted by name.
    by_name: Vec<(String, u64)>,
    /// The source's extension, for `stream.EXT`.
    stream_ext: Option<String>,
}

/// A container as the tree shows it; its archive and verification state are the block
/// layer's ([`Fs::served`]).
struct Container {
    /// Directory name in a directory mount.
    name: String,
    path: PathBuf,
    mtime: SystemTime,
    level: VerifyLevel,
    /// When the open checks ran.
    checked_at: SystemTime,
    /// With [`VerifyLevel::Full`]: blocks checked.
    full_blocks: Option<u64>,
    tracks: Vec<TrackView>,
    multitrack: bool,
    generated: Mutex<HashMap<Local, Arc<Vec<u8>>>>,
    /// For a container on S3 or HTTP: requests, bytes, retries.
    remote: Option<Arc<RemoteStats>>,
}

/// A container's place in the mount: opened at once, or (a prefix mount) on the
/// first lookup of its directory.
struct Slot {
    /// Directory name in a directory mount.
    name: String,
    open: OnceLock<Container>,
    /// How to open it, when it was not opened at mount.
    pending: Option<Pending>,
    /// The last failed open: when, and why. Not tried again for [`RETRY_OPEN`].
    failed: Mutex<Option<(Instant, String)>>,
    /// Held while opening, so concurrent lookups open once.
    opening: Mutex<()>,
}

/// How long a container that failed to open is answered with that failure before it
/// is tried again (the store may be back).
pub const RETRY_OPEN: Duration = Duration::from_secs(5);

/// An open file's state.
enum Handle {
    /// `veri.json`: the snapshot taken at open.
    Snapshot(Arc<Vec<u8>>),
    /// `stream` or a block file: the reader's state in the block layer.
    Data(Arc<ReadHandle>),
}

/// A container as [`Fs::summaries`] describes it.
#[derive(Debug, Clone)]
pub struct ContainerSummary {
    /// Directory name under the root.
    pub name: String,
    pub path: PathBuf,
    pub layout: Layout,
    /// What identifies the container's content: the structure root of an h4fs
    /// container, the recorded VERI of a reference one, else a hash of path, length and
    /// mtime.
    pub identity: [u8; 32],
    /// META `source.name`: the file the container was packed from.
    pub source_name: Option<String>,
    pub mtime: SystemTime,
    /// Why data cannot be served at all (unknown engine, encrypted), if so.
    pub unreadable: Option<String>,
    /// Tracks are subdirectories (layout C).
    pub multitrack: bool,
    pub tracks: Vec<TrackSummary>,
}

/// One track of a [`ContainerSummary`].
#[derive(Debug, Clone)]
pub struct TrackSummary {
    /// Directory name of the track in a multitrack container.
    pub dir_name: String,
    pub id: u32,
    pub blocks: u64,
    pub stream_len: u64,
    /// SEEK entries.
    pub keyframes: u64,
}

/// The mounted tree.
pub struct Fs {
    containers: Vec<Slot>,
    /// A directory mount: containers are subdirectories of the root.
    multi: bool,
    root_mtime: SystemTime,
    cfg: FsConfig,
    blocks: Arc<Blocks>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    bytes_served: AtomicU64,
    read_requests: AtomicU64,
    largest_read: AtomicU64,
    started: SystemTime,
    /// Containers of a directory source left out of the mount: file name and why.
    skipped: Vec<(String, String)>,
    /// What listing a prefix cost.
    listing: Option<Arc<RemoteStats>>,
    /// The disk cache of remote sources (`--cache-dir`), for the stats.
    cache_dir: Option<Arc<crate::remote::disk::DiskCache>>,
}

impl Fs {
    /// Build the tree over opened containers. `multi`: SOURCE was a directory.
    pub fn new(sources: Vec<Source>, multi: bool, root_mtime: SystemTime, cfg: FsConfig) -> Fs {
        let slots = sources.into_iter().map(|s| (None, Some(s))).collect();
        Self::with_slots(slots, multi, root_mtime, cfg)
    }

    /// Build the tree over the containers of a prefix: each opened on the first lookup
    /// of its directory (or of anything under it), unless given opened. The root lists
    /// them without opening any.
    pub fn new_lazy(
        containers: Vec<(Pending, Option<Source>)>,
        root_mtime: SystemTime,
        cfg: FsConfig,
        listing: Option<Arc<RemoteStats>>,
    ) -> Fs {
        let slots = containers.into_iter().map(|(p, s)| (Some(p), s)).collect();
        let mut fs = Self::with_slots(slots, true, root_mtime, cfg);
        fs.listing = listing;
        fs
    }

    /// Show the disk cache the remote sources use (`--cache-dir`) in the stats.
    pub fn set_cache_dir(&mut self, cache: Option<Arc<crate::remote::disk::DiskCache>>) {
        self.cache_dir = cache;
    }

    fn with_slots(
        slots: Vec<(Option<Pending>, Option<Source>)>,
        multi: bool,
        root_mtime: SystemTime,
        cfg: FsConfig,
    ) -> Fs {
        let mut served = Vec::with_capacity(slots.len());
        let containers = slots
            .into_iter()
            .map(|(pending, src)| {
                let name = match (&src, &pending) {
                    (Some(s), _) => s.name.clone(),
                    (None, Some(p)) => p.name.clone(),
                    (None, None) => String::new(),
                };
                let open = OnceLock::new();
                match src.map(build) {
                    Some((c, s)) => {
                        let _ = open.set(c);
                        served.push(Some(s));
                    }
                    None => served.push(None),
                }
                Slot {
                    name,
                    open,
                    pending,
                    failed: Mutex::new(None),
                    opening: Mutex::new(()),
                }
            })
            .collect();
        let blocks = Blocks::with_slots(
            served,
            BlocksConfig {
                cache_bytes: cfg.cache_bytes,
                prefetch_bytes: cfg.prefetch_bytes,
                log: cfg.log.clone(),
            },
        );
        Fs {
            containers,
            multi,
            root_mtime,
            cfg,
            blocks: Arc::new(blocks),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            bytes_served: AtomicU64::new(0),
            read_requests: AtomicU64::new(0),
            largest_read: AtomicU64::new(0),
            started: SystemTime::now(),
            skipped: Vec::new(),
            listing: None,
            cache_dir: None,
        }
    }

    /// Open container `c` if it is not open yet (a prefix mount's first lookup of it).
    /// A failure is logged, answered with EIO, and answered so again without a request
    /// for [`RETRY_OPEN`]; then the next lookup tries again.
    pub(super) fn ensure_open(&self, c: ContainerId) -> std::result::Result<(), FsError> {
        let slot = self.containers.get(c.index()).ok_or(FsError::NotFound)?;
        if slot.open.get().is_some() {
            return Ok(());
        }
        let Some(p) = &slot.pending else {
            return Err(FsError::NotFound);
        };
        let _one = slot.opening.lock().unwrap_or_else(|e| e.into_inner());
        if slot.open.get().is_some() {
            return Ok(());
        }
        let failed = |v| *slot.failed.lock().unwrap_or_else(|e| e.into_inner()) = v;
        let recent = slot
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < RETRY_OPEN)
            .map(|(_, why)| why.clone());
        if let Some(why) = recent {
            return Err(FsError::Archive(crate::Error::io(
                format!("cannot open {}", p.shown),
                std::io::Error::other(why),
            )));
        }
        // Not under the `failed` lock: the stats read it while this waits on the store.
        match (p.open)() {
            Ok(src) => {
                failed(None);
                let (cont, served) = build(src);
                self.blocks.install(c, served);
                let _ = slot.open.set(cont);
                Ok(())
            }
            Err(e) => {
                (self.cfg.log)(&format!(
                    "h4fs: warning: {}: {e}; its directory gives EIO (tried again after {} s)",
                    p.shown,
                    RETRY_OPEN.as_secs()
                ));
                failed(Some((Instant::now(), e.to_string())));
                Err(FsError::Archive(e))
            }
        }
    }

    /// Record the containers of a directory source that were left out (shown in
    /// [`STATS_XATTR`]).
    pub fn with_skipped(mut self, skipped: &[SourceError]) -> Fs {
        self.skipped = skipped
            .iter()
            .map(|e| {
                let file = e.path.file_name().map_or_else(
                    || e.path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                (file, e.error.to_string())
            })
            .collect();
        self
    }

    /// Start `threads` background threads that load blocks ahead of sequential readers.
    pub fn start_prefetch(self: &Arc<Self>, threads: usize) {
        self.blocks.start_prefetch(threads);
    }

    /// Stop the prefetch threads (they exit once the queue drains).
    pub fn stop_prefetch(&self) {
        self.blocks.stop_prefetch();
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.blocks.stats()
    }

    /// The block layer under the tree.
    pub fn blocks(&self) -> &Blocks {
        &self.blocks
    }

    /// What a front end other than FUSE (the HTTP server) needs to know about each
    /// container, in the order of the root directory.
    pub fn summaries(&self) -> Vec<ContainerSummary> {
        self.containers
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| Some((i, slot.open.get()?)))
            .map(|(i, cont)| {
                let served = self.served(ContainerId(i as u32));
                let a = &served.archive;
                let identity = match (a.footer, a.veri) {
                    (Some((_, f)), _) => f.root,
                    (None, Some(v)) => v.expected,
                    (None, None) => {
                        let mtime = cont
                            .mtime
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos());
                        let id = format!("{}\0{}\0{mtime}", cont.path.display(), a.file_len);
                        crate::integrity::sha256(id.as_bytes())
                    }
                };
                let source_name = a
                    .meta
                    .as_ref()
                    .and_then(|m| m.value.get("source")?.get("name")?.as_str())
                    .map(str::to_string);
                ContainerSummary {
                    name: cont.name.clone(),
                    path: cont.path.clone(),
                    layout: a.layout,
                    identity,
                    source_name,
                    mtime: cont.mtime,
                    unreadable: served.unreadable(),
                    multitrack: cont.multitrack,
                    tracks: cont
                        .tracks
                        .iter()
                        .zip(&a.tracks)
                        .map(|(tv, t)| TrackSummary {
                            dir_name: tv.dir_name.clone(),
                            id: t.id,
                            blocks: t.blocks.len(),
                            stream_len: t.stream_len(),
                            keyframes: t.seek.len() as u64,
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Container `c` as the tree shows it.
    /// Every [`ContainerId`] the tree hands out names an opened container: a node
    /// inside a container is only made after [`Fs::ensure_open`].
    fn container(&self, c: ContainerId) -> &Container {
        self.containers[c.index()]
            .open
            .get()
            .expect("a container is opened before a node inside it is made")
    }

    /// The opened containers, with their ids.
    fn opened(&self) -> impl Iterator<Item = (ContainerId, &Container)> {
        self.containers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((ContainerId(i as u32), s.open.get()?)))
    }

    /// Container `c` as the block layer serves it (its archive, its verification state).
    fn served(&self, c: ContainerId) -> &Served {
        self.blocks.container(c)
    }

    fn archive(&self, c: ContainerId) -> &Archive {
        &self.served(c).archive
    }

    fn track(&self, c: ContainerId, t: TrackId) -> &Track {
        &self.archive(c).tracks[t.index()]
    }
}

/// The tree's view of an opened container, and the block layer's.
fn build(src: Source) -> (Container, Served) {
    let a = &src.archive;
    let multitrack = a.layout == Layout::MultitrackC;
    let mut names: Vec<String> = Vec::new();
    let tracks = a
        .tracks
        .iter()
        .map(|t| {
            let mut name = t.name.clone();
            let clash = !valid_dir_name(&name)
                || names.contains(&name)
                || CONTAINER_FILES.iter().any(|(f, _)| *f == name);
            if clash {
                name = format!("track-{}", t.id);
            }
            names.push(name.clone());
            let width = digits(t.blocks.len().saturating_sub(1)).max(6);
            let names = (!multitrack)
                .then(|| crate::naming::block_names(a))
                .flatten()
                .map(Arc::new);
            let mut by_name: Vec<(String, u64)> = names
                .iter()
                .flat_map(|v| v.iter().enumerate())
                .filter_map(|(n, name)| Some((name.clone()?, n as u64)))
                .collect();
            by_name.sort();
            let stream_ext = (!multitrack)
                .then(|| crate::naming::stream_extension(a))
                .flatten();
            TrackView {
                index_csv: RowFile::new(Table::Index(names.clone())),
                names,
                by_name,
                stream_ext,
                seek_csv: RowFile::new(Table::Seek),
                by_pts: OnceLock::new(),
                generated: Mutex::new(HashMap::new()),
                width,
                dir_name: name,
            }
        })
        .collect();
    // An encrypted container is readable once its key is attached to the archive
    // (before `Fs::new`); without one its data files give EACCES. `--verify=full`
    // already checked the whole-file VERI at open; veri.json shows the state of the
    // checks made at mount: it dates from then.
    let Source {
        name,
        path,
        archive,
        mtime,
        level,
        checked_at,
        full_blocks,
        remote,
    } = src;
    let served = Served::new(
        archive,
        path.clone(),
        (level == VerifyLevel::Full).then_some(checked_at),
        checked_at.max(mtime),
    );
    let container = Container {
        name,
        path,
        mtime,
        level,
        checked_at,
        full_blocks,
        tracks,
        multitrack,
        generated: Mutex::new(HashMap::new()),
        remote,
    };
    (container, served)
}

#[cfg(test)]
mod tests;
