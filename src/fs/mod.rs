//! The filesystem core: containers as a read-only tree, in plain Rust.
//!
//! Every operation the kernel can ask for (`lookup`, `getattr`, `readdir`, `open`,
//! `read`, `readlink`, `getxattr`, `listxattr`, `statfs`) is a method returning
//! `Result<_, FsError>`. Nothing here imports `fuser`: the adapter in `fuse.rs` calls
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
//! * Bytes of `stream` and `blocks/` come only from [`VerifiedBlock`]s (from the cache
//!   or freshly read and checked); a block that fails its check is logged with block and
//!   offset, recorded for `veri.json`, answered with EIO and never served.
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
//! * Lock order: `loading` before the cache's lock; no lock is held while reading.

mod content;
mod error;
pub mod inode;

pub use error::FsError;

use crate::cache::{BlockCache, BlockKey, CacheStats};
use crate::engine::EngineChoice;
use crate::error::{Error, Result};
use crate::reader::VerifiedBlock;
use crate::reader::{Archive, Layout, OpenCheck, Track};
use content::{RowFile, Table};
use inode::{Local, MAX_BLOCKS, MAX_CONTAINERS, MAX_TRACKS, Place, What};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What is checked before a container is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyLevel {
    /// Chunk CRCs and the h4fs structure root (index, SEEK, META, SAFE).
    #[default]
    Structure,
    /// Structure, every block and the whole-file VERI.
    Full,
    /// Bounds only; blocks are still verified when read.
    None,
}

impl VerifyLevel {
    pub fn name(self) -> &'static str {
        match self {
            VerifyLevel::Structure => "structure",
            VerifyLevel::Full => "full",
            VerifyLevel::None => "none",
        }
    }
}

/// A container opened for mounting, with what was checked at open.
pub struct Source {
    /// Directory name in a directory mount (file name without `.h4mk`).
    pub name: String,
    pub path: PathBuf,
    pub archive: Archive,
    pub mtime: SystemTime,
    pub level: VerifyLevel,
    /// When the open checks ran.
    pub checked_at: SystemTime,
    /// With [`VerifyLevel::Full`]: blocks checked.
    pub full_blocks: Option<u64>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Open one container for mounting, running the checks of `level`. A container that
/// fails them is an error (unless `level` is `None`).
/// `attach` runs on the opened archive before the checks of [`VerifyLevel::Full`]: it
/// is where keys are attached to encrypted containers.
pub fn open_container(
    path: &Path,
    name: String,
    level: VerifyLevel,
    attach: &Attach,
) -> Result<Source> {
    let check = match level {
        VerifyLevel::None => OpenCheck::None,
        VerifyLevel::Structure | VerifyLevel::Full => OpenCheck::Structure,
    };
    let mut archive = Archive::open_with(path, check)?;
    attach(&mut archive)?;
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io_path("cannot stat", path, e))?;
    let mut full_blocks = None;
    if level == VerifyLevel::Full {
        let report = crate::verify::verify(&archive, true, &|_| {});
        if let Some(first) = report.failures.into_iter().next() {
            return Err(first);
        }
        full_blocks = Some(report.blocks_checked);
    }
    if archive.tracks.len() > MAX_TRACKS {
        return Err(Error::Limit(format!(
            "{} has {} tracks; a mount shows at most {MAX_TRACKS}",
            path.display(),
            archive.tracks.len()
        )));
    }
    if let Some(t) = archive.tracks.iter().find(|t| t.blocks.len() > MAX_BLOCKS) {
        return Err(Error::Limit(format!(
            "{} track {} has {} blocks; a mount shows at most {MAX_BLOCKS}",
            path.display(),
            t.id,
            t.blocks.len()
        )));
    }
    Ok(Source {
        name,
        path: path.to_path_buf(),
        archive,
        mtime,
        level,
        checked_at: SystemTime::now(),
        full_blocks,
    })
}

/// A hook run on each archive right after it is opened (e.g. to attach a key).
pub type Attach = dyn Fn(&mut Archive) -> Result<()>;

/// A container (or the source directory) that could not be opened; the library error
/// is its source, so callers can still tell damage from other failures.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
pub struct SourceError {
    pub path: PathBuf,
    #[source]
    pub error: Error,
}

/// What [`open_sources`] opened.
#[derive(Debug)]
pub struct OpenedSources {
    pub sources: Vec<Source>,
    /// SOURCE was a directory.
    pub multi: bool,
    /// Containers of a directory source left out because they failed to open or
    /// failed their checks (only without `strict`).
    pub skipped: Vec<SourceError>,
}

/// Open SOURCE: one container file, or a directory whose `*.h4mk` files (sorted by name)
/// each become a subdirectory.
///
/// In a directory, a container that fails to open or fails the checks of `level` is
/// left out and listed in [`OpenedSources::skipped`], so one damaged file does not take a whole
/// library offline; with `strict` it is an error instead. When no container of the
/// directory can be opened, the first one's error is returned.
pub fn open_sources(
    source: &Path,
    level: VerifyLevel,
    attach: &Attach,
    strict: bool,
) -> std::result::Result<OpenedSources, SourceError> {
    let at = |p: &Path| {
        let path = p.to_path_buf();
        move |error| SourceError { path, error }
    };
    let md = std::fs::metadata(source)
        .map_err(|e| Error::io("cannot open it", e))
        .map_err(at(source))?;
    if !md.is_dir() {
        let name = container_name(source);
        let c = open_container(source, name, level, attach).map_err(at(source))?;
        return Ok(OpenedSources {
            sources: vec![c],
            multi: false,
            skipped: Vec::new(),
        });
    }
    let rd = std::fs::read_dir(source)
        .map_err(|e| Error::io("cannot read the directory", e))
        .map_err(at(source))?;
    let mut files = Vec::new();
    for ent in rd {
        let ent = ent
            .map_err(|e| Error::io("cannot read the directory", e))
            .map_err(at(source))?;
        let p = ent.path();
        if p.extension().is_some_and(|x| x == "h4mk") && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(at(source)(Error::NotFound(
            "the directory contains no *.h4mk containers".into(),
        )));
    }
    if files.len() > MAX_CONTAINERS {
        return Err(at(source)(Error::Limit(format!(
            "the directory holds {} containers; one mount serves at most {MAX_CONTAINERS}",
            files.len()
        ))));
    }
    let mut sources = Vec::with_capacity(files.len());
    let mut skipped = Vec::new();
    for p in files {
        let name = container_name(&p);
        match open_container(&p, name, level, attach).map_err(at(&p)) {
            Ok(c) => sources.push(c),
            Err(e) if strict => return Err(e),
            Err(e) => skipped.push(e),
        }
    }
    if sources.is_empty() {
        return Err(skipped.swap_remove(0));
    }
    Ok(OpenedSources {
        sources,
        multi: true,
        skipped,
    })
}

fn container_name(p: &Path) -> String {
    let f = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match f.strip_suffix(".h4mk") {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => f,
    }
}

/// Extended attribute of the mount root whose value is the mount's live counters, as
/// JSON (read by `h4fs stats`). Readable by name only: `listxattr` leaves it out, so
/// tools that copy extended attributes do not copy it.
pub const STATS_XATTR: &str = "user.h4fs.stats";

/// Largest value of [`STATS_XATTR`]: the kernel's limit on one extended attribute
/// (`XATTR_SIZE_MAX`).
const STATS_XATTR_MAX: usize = 65536;

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

/// Kind of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// `stat` of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    /// 512-byte units.
    pub blocks: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub blksize: u32,
    /// Content can change while mounted (`veri.json`, when a verification result
    /// changes): zero attribute TTL and uncached reads, so the kernel sees each change.
    pub dynamic: bool,
}

/// `st_blksize` of every node: large, so `cp` and friends read in big requests.
pub const BLKSIZE: u32 = 1 << 20;

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    /// Cookie of the entry after this one.
    pub next: u64,
    pub kind: Kind,
    pub name: String,
}

/// How an open file is to be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// The content is immutable: keep the kernel's page cache across opens.
    pub keep_cache: bool,
    /// The content is a snapshot taken at open: bypass the page cache.
    pub direct_io: bool,
}

/// Bytes returned by a read, borrowed from a verified block where possible.
#[derive(Debug)]
pub enum ReadData {
    Owned(Vec<u8>),
    Block(Arc<VerifiedBlock>, usize, usize),
    Shared(Arc<Vec<u8>>, usize, usize),
}

impl ReadData {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Block(b, lo, hi) => &b.bytes()[*lo..*hi],
            ReadData::Shared(v, lo, hi) => &v[*lo..*hi],
        }
    }
}

/// Answer to getxattr/listxattr given the caller's buffer size.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// The caller asked for the size only.
    Size(u32),
    Data(Vec<u8>),
}

impl XattrReply {
    fn fit(value: Vec<u8>, size: u32) -> std::result::Result<XattrReply, FsError> {
        if size == 0 {
            Ok(XattrReply::Size(value.len() as u32))
        } else if value.len() > size as usize {
            Err(FsError::Range)
        } else {
            Ok(XattrReply::Data(value))
        }
    }
}

/// `statfs` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub files: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// A block that failed its check while mounted. `veri.json` shows all but `count`
/// (which grows with every failed read, and is a counter in [`STATS_XATTR`]).
#[derive(Debug, Clone)]
struct Failure {
    offset: u64,
    error: String,
    first_at: u64,
    count: u64,
}

/// Version of a container's `veri.json`: bumped whenever a verification result it
/// shows changes, with an mtime (whole seconds) that moves forward at every bump.
#[derive(Debug, Clone, Copy)]
struct VeriClock {
    generation: u64,
    mtime: u64,
}

/// Result of the once-per-mount whole-file VERI check of a reference container.
#[derive(Debug, Clone)]
struct VeriCheck {
    ok: bool,
    computed: Option<String>,
    detail: String,
    at: u64,
}

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

struct Container {
    src: Source,
    tracks: Vec<TrackView>,
    multitrack: bool,
    generated: Mutex<HashMap<Local, Arc<Vec<u8>>>>,
    /// Why data cannot be served at all (unknown engine, encrypted), if so.
    unreadable: Option<String>,
    veri: OnceLock<VeriCheck>,
    /// Lock order: `failures` before `veri_clock`.
    failures: Mutex<BTreeMap<(usize, u64), Failure>>,
    veri_clock: Mutex<VeriClock>,
    blocks_verified: AtomicU64,
}

impl Container {
    /// A verification result shown in `veri.json` changed: new generation, later mtime.
    fn veri_changed(&self) {
        let mut c = self.veri_clock.lock().unwrap_or_else(|p| p.into_inner());
        c.generation += 1;
        c.mtime = now_unix().max(c.mtime + 1);
    }

    fn veri_mtime(&self) -> SystemTime {
        let c = *self.veri_clock.lock().unwrap_or_else(|p| p.into_inner());
        UNIX_EPOCH + Duration::from_secs(c.mtime)
    }
}

/// What [`Fs::load_pair`] did with one of its two blocks.
enum PairPart {
    /// Read and checked by this call (and cached when intact).
    Loaded(std::result::Result<Arc<VerifiedBlock>, FsError>),
    /// Already in the cache.
    Cached,
    /// Another reader is loading it.
    Busy,
}

struct Flight {
    done: Mutex<Option<Option<Arc<VerifiedBlock>>>>,
    cv: Condvar,
}

/// The mounted tree.
pub struct Fs {
    containers: Vec<Container>,
    /// A directory mount: containers are subdirectories of the root.
    multi: bool,
    root_mtime: SystemTime,
    cfg: FsConfig,
    cache: BlockCache,
    loading: Mutex<HashMap<BlockKey, Arc<Flight>>>,
    handles: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    next_fh: AtomicU64,
    /// Per (container, track) stream: where the last read ended and how many reads in a
    /// row continued the one before, to spot sequential readers.
    streams: Mutex<HashMap<(usize, usize), (u64, u32)>>,
    prefetch_tx: Mutex<Option<SyncSender<BlockKey>>>,
    bytes_served: AtomicU64,
    read_requests: AtomicU64,
    largest_read: AtomicU64,
    started: SystemTime,
    /// Containers of a directory source left out of the mount: file name and why.
    skipped: Vec<(String, String)>,
}

/// Where a place lives, resolved against the containers.
#[derive(Debug, Clone, Copy)]
enum Node {
    /// The root of a directory mount.
    Top,
    /// A container or track directory.
    Dir(usize, Option<usize>),
    /// A generated file of a container (track `None`) or track.
    Gen(usize, Option<usize>, Local),
    Stream(usize, usize),
    BlocksDir(usize, usize),
    ByPtsDir(usize, usize),
    ByNameDir(usize, usize),
    Block(usize, usize, u64),
    Link(usize, usize, u64),
    NameLink(usize, usize, u64),
    StreamLink(usize, usize),
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn valid_dir_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// Files of a container directory of a multitrack container (besides track dirs).
const CONTAINER_FILES: [(&str, Local); 5] = [
    ("meta.json", Local::Meta),
    ("safe.json", Local::Safe),
    ("veri.json", Local::Veri),
    ("manifest.json", Local::Manifest),
    ("tracks.json", Local::Tracks),
];

/// Entries of a track directory (the container directory of a single-track container).
const TRACK_FILES: [(&str, Local); 9] = [
    ("meta.json", Local::Meta),
    ("safe.json", Local::Safe),
    ("seek.csv", Local::SeekCsv),
    ("index.csv", Local::IndexCsv),
    ("veri.json", Local::Veri),
    ("manifest.json", Local::Manifest),
    ("stream", Local::Stream),
    ("blocks", Local::Blocks),
    ("by-pts", Local::ByPts),
];

impl Fs {
    /// Build the tree over opened containers. `multi`: SOURCE was a directory.
    pub fn new(sources: Vec<Source>, multi: bool, root_mtime: SystemTime, cfg: FsConfig) -> Fs {
        let containers = sources
            .into_iter()
            .map(|src| {
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
                // An encrypted container is readable once its key is attached to the
                // archive (before `Fs::new`); without one its data files give EACCES.
                let locked = a.encryption.as_ref().filter(|_| !a.has_key());
                let unreadable = match (locked, &a.engine) {
                    (Some(enc), _) => Some(
                        Error::Encrypted {
                            cipher: enc.cipher.clone(),
                            what: "reading its data".into(),
                        }
                        .to_string(),
                    ),
                    (None, EngineChoice::Unknown(name)) => Some(
                        Error::UnknownEngine {
                            engine: name.clone(),
                        }
                        .to_string(),
                    ),
                    (None, EngineChoice::Known(_)) => None,
                };
                // `--verify=full` already checked the whole-file VERI at open.
                let veri = OnceLock::new();
                if let (VerifyLevel::Full, Some(v)) = (src.level, a.veri) {
                    let _ = veri.set(VeriCheck {
                        ok: true,
                        computed: Some(hex::encode(v.expected)),
                        detail: "match (checked at mount, --verify=full)".into(),
                        at: unix(src.checked_at),
                    });
                }
                // veri.json shows the state of the checks made at mount: it dates from then.
                let veri_clock = Mutex::new(VeriClock {
                    generation: 0,
                    mtime: unix(src.checked_at).max(unix(src.mtime)),
                });
                Container {
                    src,
                    tracks,
                    multitrack,
                    generated: Mutex::new(HashMap::new()),
                    unreadable,
                    veri,
                    failures: Mutex::new(BTreeMap::new()),
                    veri_clock,
                    blocks_verified: AtomicU64::new(0),
                }
            })
            .collect();
        Fs {
            containers,
            multi,
            root_mtime,
            cache: BlockCache::new(cfg.cache_bytes),
            cfg,
            loading: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            streams: Mutex::new(HashMap::new()),
            prefetch_tx: Mutex::new(None),
            bytes_served: AtomicU64::new(0),
            read_requests: AtomicU64::new(0),
            largest_read: AtomicU64::new(0),
            started: SystemTime::now(),
            skipped: Vec::new(),
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
        if threads == 0 {
            return;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<BlockKey>(256);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let fs = Arc::downgrade(self);
            let rx: Arc<Mutex<Receiver<BlockKey>>> = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("h4fs-prefetch-{i}"))
                .spawn(move || {
                    loop {
                        // Two keys at a time when two are queued: their hashes then share
                        // a core in lockstep.
                        let (key, next) = {
                            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                            match rx.recv() {
                                Ok(k) => (k, rx.try_recv().ok()),
                                Err(_) => return,
                            }
                        };
                        let Some(fs) = fs.upgrade() else { return };
                        match next {
                            Some(next) => fs.prefetch_pair(key, next),
                            None => fs.prefetch_one(key),
                        }
                    }
                });
        }
        *self.prefetch_tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// Stop the prefetch threads (they exit once the queue drains).
    pub fn stop_prefetch(&self) {
        self.prefetch_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn log(&self, msg: &str) {
        (self.cfg.log)(msg)
    }

    // ---- places and nodes -------------------------------------------------------

    fn cslot(&self, c: usize) -> u16 {
        (c + usize::from(self.multi)) as u16
    }

    fn place(&self, node: Node) -> Place {
        let (container_slot, track_slot, what) = match node {
            Node::Top => (0, 0, What::Fixed(Local::Dir)),
            Node::Dir(c, t) => (self.cslot(c), self.tslot(c, t), What::Fixed(Local::Dir)),
            Node::Gen(c, t, l) => (self.cslot(c), self.tslot(c, t), What::Fixed(l)),
            Node::Stream(c, t) => (
                self.cslot(c),
                self.tslot(c, Some(t)),
                What::Fixed(Local::Stream),
            ),
            Node::BlocksDir(c, t) => (
                self.cslot(c),
                self.tslot(c, Some(t)),
                What::Fixed(Local::Blocks),
            ),
            Node::ByPtsDir(c, t) => (
                self.cslot(c),
                self.tslot(c, Some(t)),
                What::Fixed(Local::ByPts),
            ),
            Node::ByNameDir(c, t) => (
                self.cslot(c),
                self.tslot(c, Some(t)),
                What::Fixed(Local::ByName),
            ),
            Node::StreamLink(c, t) => (
                self.cslot(c),
                self.tslot(c, Some(t)),
                What::Fixed(Local::StreamLink),
            ),
            Node::NameLink(c, t, n) => (self.cslot(c), self.tslot(c, Some(t)), What::NameLink(n)),
            Node::Block(c, t, n) => (self.cslot(c), self.tslot(c, Some(t)), What::Block(n)),
            Node::Link(c, t, n) => (self.cslot(c), self.tslot(c, Some(t)), What::Link(n)),
        };
        Place {
            container_slot,
            track_slot,
            what,
        }
    }

    fn tslot(&self, c: usize, t: Option<usize>) -> u16 {
        match t {
            Some(t) if self.containers[c].multitrack => (t + 1) as u16,
            _ => 0,
        }
    }

    fn ino(&self, node: Node) -> u64 {
        self.place(node).ino()
    }

    /// The node an inode number names, if it exists.
    fn node(&self, ino: u64) -> std::result::Result<Node, FsError> {
        let p = Place::from_ino(ino).ok_or(FsError::NotFound)?;
        let top_level = self.multi && p.container_slot == 0;
        if top_level {
            return match (p.track_slot, p.what) {
                (0, What::Fixed(Local::Dir)) => Ok(Node::Top),
                _ => Err(FsError::NotFound),
            };
        }
        let c = p.container_slot as usize - usize::from(self.multi);
        let cont = self.containers.get(c).ok_or(FsError::NotFound)?;
        // Which track the place's directory shows, if any.
        let track = if cont.multitrack {
            match p.track_slot {
                0 => None,
                s => {
                    let t = s as usize - 1;
                    if t >= cont.tracks.len() {
                        return Err(FsError::NotFound);
                    }
                    Some(t)
                }
            }
        } else if p.track_slot == 0 {
            Some(0)
        } else {
            return Err(FsError::NotFound);
        };
        let dir_t = if cont.multitrack { track } else { None };
        match (track, p.what) {
            (_, What::Fixed(Local::Dir)) => Ok(Node::Dir(c, dir_t)),
            (_, What::Fixed(l @ (Local::Meta | Local::Safe | Local::Veri | Local::Manifest))) => {
                Ok(Node::Gen(c, dir_t, l))
            }
            (None, What::Fixed(Local::Tracks)) => Ok(Node::Gen(c, None, Local::Tracks)),
            (Some(t), What::Fixed(Local::Tracks)) if cont.multitrack => {
                Ok(Node::Gen(c, Some(t), Local::Tracks))
            }
            (Some(t), What::Fixed(l @ (Local::SeekCsv | Local::IndexCsv))) => {
                Ok(Node::Gen(c, Some(t), l))
            }
            (Some(t), What::Fixed(Local::Stream)) => Ok(Node::Stream(c, t)),
            (Some(t), What::Fixed(Local::Blocks)) => Ok(Node::BlocksDir(c, t)),
            (Some(t), What::Fixed(Local::ByPts)) => Ok(Node::ByPtsDir(c, t)),
            (Some(t), What::Fixed(Local::ByName)) if cont.tracks[t].names.is_some() => {
                Ok(Node::ByNameDir(c, t))
            }
            (Some(t), What::Fixed(Local::StreamLink)) if cont.tracks[t].stream_ext.is_some() => {
                Ok(Node::StreamLink(c, t))
            }
            (Some(t), What::NameLink(n)) if self.block_file_name(c, t, n).is_some() => {
                Ok(Node::NameLink(c, t, n))
            }
            (Some(t), What::Block(n)) if n < self.track(c, t).blocks.len() => {
                Ok(Node::Block(c, t, n))
            }
            (Some(t), What::Link(n)) if n < self.track(c, t).blocks.len() => {
                Ok(Node::Link(c, t, n))
            }
            _ => Err(FsError::NotFound),
        }
    }

    fn track(&self, c: usize, t: usize) -> &Track {
        &self.containers[c].src.archive.tracks[t]
    }

    /// The track a generated file or directory of container `c` shows: the given one,
    /// or track 0 of a single-track container.
    fn data_track(&self, c: usize, t: Option<usize>) -> Option<usize> {
        match t {
            Some(t) => Some(t),
            None if !self.containers[c].multitrack && !self.containers[c].tracks.is_empty() => {
                Some(0)
            }
            None => None,
        }
    }

    fn parent(&self, node: Node) -> Node {
        match node {
            Node::Top => Node::Top,
            Node::Dir(c, None) => {
                if self.multi {
                    Node::Top
                } else {
                    Node::Dir(c, None)
                }
            }
            Node::Dir(c, Some(_)) => Node::Dir(c, None),
            Node::Gen(c, t, _) => Node::Dir(c, t),
            Node::Stream(c, t)
            | Node::StreamLink(c, t)
            | Node::BlocksDir(c, t)
            | Node::ByPtsDir(c, t)
            | Node::ByNameDir(c, t) => Node::Dir(c, self.dir_track(c, t)),
            Node::Block(c, t, _) => Node::BlocksDir(c, t),
            Node::Link(c, t, _) => Node::ByPtsDir(c, t),
            Node::NameLink(c, t, _) => Node::ByNameDir(c, t),
        }
    }

    fn dir_track(&self, c: usize, t: usize) -> Option<usize> {
        self.containers[c].multitrack.then_some(t)
    }

    /// Children of a directory other than blocks/ and by-pts/.
    fn small_children(&self, node: Node) -> Vec<(String, Node)> {
        let mut out = Vec::new();
        match node {
            Node::Top => {
                for (c, cont) in self.containers.iter().enumerate() {
                    out.push((cont.src.name.clone(), Node::Dir(c, None)));
                }
            }
            Node::Dir(c, t) => {
                let cont = &self.containers[c];
                if cont.multitrack && t.is_none() {
                    for (name, l) in CONTAINER_FILES {
                        out.push((name.to_string(), Node::Gen(c, None, l)));
                    }
                    for (i, tv) in cont.tracks.iter().enumerate() {
                        out.push((tv.dir_name.clone(), Node::Dir(c, Some(i))));
                    }
                } else if let Some(dt) = self.data_track(c, t) {
                    let tv = &cont.tracks[dt];
                    for (name, l) in TRACK_FILES {
                        let n = match l {
                            Local::Stream => Node::Stream(c, dt),
                            Local::Blocks => Node::BlocksDir(c, dt),
                            Local::ByPts => Node::ByPtsDir(c, dt),
                            l => Node::Gen(c, t, l),
                        };
                        out.push((name.to_string(), n));
                        if let (Local::Stream, Some(ext)) = (l, &tv.stream_ext) {
                            out.push((format!("stream.{ext}"), Node::StreamLink(c, dt)));
                        }
                        if l == Local::ByPts && tv.names.is_some() {
                            out.push(("by-name".to_string(), Node::ByNameDir(c, dt)));
                        }
                    }
                    if cont.multitrack {
                        out.push(("track.json".to_string(), Node::Gen(c, t, Local::Tracks)));
                    }
                }
            }
            _ => {}
        }
        out
    }

    fn root_node(&self) -> Node {
        if self.multi {
            Node::Top
        } else {
            Node::Dir(0, None)
        }
    }

    fn block_name(&self, c: usize, t: usize, n: u64) -> String {
        format!("{n:0w$}", w = self.containers[c].tracks[t].width)
    }

    fn link_target(&self, c: usize, t: usize, n: u64) -> String {
        format!("../blocks/{}", self.block_name(c, t, n))
    }

    /// The recorded file name of block `n` (directory packs), if it has one.
    fn block_file_name(&self, c: usize, t: usize, n: u64) -> Option<&str> {
        self.containers[c].tracks[t]
            .names
            .as_ref()?
            .get(usize::try_from(n).ok()?)?
            .as_deref()
    }

    /// Target of a symlink node.
    fn symlink_target(&self, node: Node) -> Option<String> {
        match node {
            Node::Link(c, t, n) | Node::NameLink(c, t, n) => Some(self.link_target(c, t, n)),
            Node::StreamLink(..) => Some("stream".to_string()),
            _ => None,
        }
    }

    fn by_pts(&self, c: usize, t: usize) -> &[(u64, u64)] {
        self.containers[c].tracks[t].by_pts.get_or_init(|| {
            let tr = self.track(c, t);
            let mut v: Vec<(u64, u64)> = Vec::with_capacity(tr.seek.len());
            for p in &tr.seek {
                if v.last().is_some_and(|l| l.0 == p.pts_us) {
                    continue;
                }
                if let Some(b) = tr.resolve_seek(p) {
                    v.push((p.pts_us, b));
                }
            }
            v
        })
    }

    // ---- operations ---------------------------------------------------------------

    /// Find `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> std::result::Result<Attr, FsError> {
        let node = self.node(parent)?;
        let child = match node {
            Node::BlocksDir(c, t) => {
                let n = parse_decimal(name).ok_or(FsError::NotFound)?;
                if n >= self.track(c, t).blocks.len() || self.block_name(c, t, n) != name {
                    return Err(FsError::NotFound);
                }
                Node::Block(c, t, n)
            }
            Node::ByPtsDir(c, t) => {
                // Any time people type (12s, 1500ms, 00:01:30.5, microseconds) up to the
                // end of the media; before the first keyframe means the first keyframe.
                let pts = crate::time::parse_time(name).map_err(|_| FsError::NotFound)?;
                if self.containers[c].src.archive.is_past_end(t, pts) {
                    return Err(FsError::NotFound);
                }
                let (_, n) = self
                    .track(c, t)
                    .keyframe_at_or_before(pts)
                    .ok_or(FsError::NotFound)?;
                Node::Link(c, t, n)
            }
            Node::ByNameDir(c, t) => {
                let list = &self.containers[c].tracks[t].by_name;
                let k = list
                    .binary_search_by(|(n, _)| n.as_str().cmp(name))
                    .map_err(|_| FsError::NotFound)?;
                Node::NameLink(c, t, list[k].1)
            }
            Node::Top | Node::Dir(..) => self
                .small_children(node)
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, n)| n)
                .ok_or(FsError::NotFound)?,
            _ => return Err(FsError::NotDir),
        };
        self.attr(child)
    }

    /// `stat` of an inode.
    pub fn getattr(&self, ino: u64) -> std::result::Result<Attr, FsError> {
        self.attr(self.node(ino)?)
    }

    fn mtime(&self, node: Node) -> SystemTime {
        match node {
            Node::Top => self.root_mtime,
            Node::Gen(c, _, Local::Veri) => self.containers[c].veri_mtime(),
            Node::Dir(c, _)
            | Node::Gen(c, ..)
            | Node::Stream(c, _)
            | Node::BlocksDir(c, _)
            | Node::ByPtsDir(c, _)
            | Node::ByNameDir(c, _)
            | Node::StreamLink(c, _)
            | Node::Block(c, ..)
            | Node::Link(c, ..)
            | Node::NameLink(c, ..) => self.containers[c].src.mtime,
        }
    }

    fn attr(&self, node: Node) -> std::result::Result<Attr, FsError> {
        let (kind, size, dynamic, nlink) = match node {
            Node::Top => (Kind::Dir, 0, false, 2 + self.containers.len() as u32),
            Node::Dir(c, t) => {
                let subdirs = if self.containers[c].multitrack && t.is_none() {
                    self.containers[c].tracks.len() as u32
                } else {
                    2
                };
                (Kind::Dir, 0, false, 2 + subdirs)
            }
            Node::BlocksDir(..) | Node::ByPtsDir(..) | Node::ByNameDir(..) => {
                (Kind::Dir, 0, false, 2)
            }
            Node::Gen(c, _, Local::Veri) => (Kind::File, self.veri_json(c).len() as u64, true, 1),
            Node::Gen(c, t, l) => (Kind::File, self.gen_len(c, t, l), false, 1),
            Node::Stream(c, t) => (Kind::File, self.track(c, t).stream_len(), false, 1),
            Node::Block(c, t, n) => {
                let e = self.track(c, t).blocks.get(n).ok_or(FsError::NotFound)?;
                (Kind::File, e.decoded_len, false, 1)
            }
            Node::Link(..) | Node::NameLink(..) | Node::StreamLink(..) => {
                let len = self.symlink_target(node).map_or(0, |s| s.len() as u64);
                (Kind::Symlink, len, false, 1)
            }
        };
        let perm = match kind {
            Kind::Dir => 0o555,
            Kind::File => 0o444,
            Kind::Symlink => 0o777,
        };
        Ok(Attr {
            ino: self.ino(node),
            kind,
            size,
            blocks: size.div_ceil(512),
            perm,
            nlink,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            mtime: self.mtime(node),
            blksize: BLKSIZE,
            dynamic,
        })
    }

    /// Entries of directory `ino` from cookie `offset`: `add` returns true when its
    /// buffer is full.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> std::result::Result<(), FsError> {
        let node = self.node(ino)?;
        let parent = self.ino(self.parent(node));
        let dot = [
            (".".to_string(), ino, Kind::Dir),
            ("..".to_string(), parent, Kind::Dir),
        ];
        let mut i = offset;
        while i < 2 {
            let (name, ino, kind) = dot[i as usize].clone();
            if add(DirEntry {
                ino,
                next: i + 1,
                kind,
                name,
            }) {
                return Ok(());
            }
            i += 1;
        }
        match node {
            Node::BlocksDir(c, t) => {
                let count = self.track(c, t).blocks.len();
                let mut n = i - 2;
                while n < count {
                    let e = DirEntry {
                        ino: self.ino(Node::Block(c, t, n)),
                        next: n + 3,
                        kind: Kind::File,
                        name: self.block_name(c, t, n),
                    };
                    if add(e) {
                        break;
                    }
                    n += 1;
                }
            }
            Node::ByPtsDir(c, t) => {
                let list = self.by_pts(c, t);
                for (k, &(pts, n)) in list.iter().enumerate().skip((i - 2) as usize) {
                    let e = DirEntry {
                        ino: self.ino(Node::Link(c, t, n)),
                        next: k as u64 + 3,
                        kind: Kind::Symlink,
                        name: pts.to_string(),
                    };
                    if add(e) {
                        break;
                    }
                }
            }
            Node::ByNameDir(c, t) => {
                let list = &self.containers[c].tracks[t].by_name;
                for (k, (name, n)) in list.iter().enumerate().skip((i - 2) as usize) {
                    let e = DirEntry {
                        ino: self.ino(Node::NameLink(c, t, *n)),
                        next: k as u64 + 3,
                        kind: Kind::Symlink,
                        name: name.clone(),
                    };
                    if add(e) {
                        break;
                    }
                }
            }
            Node::Top | Node::Dir(..) => {
                let kids = self.small_children(node);
                for (k, (name, child)) in kids.into_iter().enumerate().skip((i - 2) as usize) {
                    let kind = match child {
                        Node::Top
                        | Node::Dir(..)
                        | Node::BlocksDir(..)
                        | Node::ByPtsDir(..)
                        | Node::ByNameDir(..) => Kind::Dir,
                        Node::Link(..) | Node::NameLink(..) | Node::StreamLink(..) => Kind::Symlink,
                        Node::Gen(..) | Node::Stream(..) | Node::Block(..) => Kind::File,
                    };
                    let e = DirEntry {
                        ino: self.ino(child),
                        next: k as u64 + 3,
                        kind,
                        name,
                    };
                    if add(e) {
                        break;
                    }
                }
            }
            _ => return Err(FsError::NotDir),
        }
        Ok(())
    }

    /// Check a directory can be opened.
    pub fn opendir(&self, ino: u64) -> std::result::Result<(), FsError> {
        match self.node(ino)? {
            Node::Top
            | Node::Dir(..)
            | Node::BlocksDir(..)
            | Node::ByPtsDir(..)
            | Node::ByNameDir(..) => Ok(()),
            _ => Err(FsError::NotDir),
        }
    }

    /// Open a file for reading (`write`: the caller asked for write access).
    pub fn open(&self, ino: u64, write: bool) -> std::result::Result<Opened, FsError> {
        let node = self.node(ino)?;
        if write {
            return Err(FsError::ReadOnly);
        }
        let snapshot = match node {
            Node::Top
            | Node::Dir(..)
            | Node::BlocksDir(..)
            | Node::ByPtsDir(..)
            | Node::ByNameDir(..) => {
                return Err(FsError::IsDir);
            }
            Node::Link(..) | Node::NameLink(..) | Node::StreamLink(..) => {
                return Err(FsError::NotFound);
            }
            Node::Gen(c, _, Local::Veri) => self.veri_json(c),
            Node::Gen(..) => {
                return Ok(Opened {
                    fh: 0,
                    keep_cache: true,
                    direct_io: false,
                });
            }
            Node::Stream(c, _) | Node::Block(c, ..) => {
                self.data_gate(c)?;
                return Ok(Opened {
                    fh: 0,
                    keep_cache: true,
                    direct_io: false,
                });
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(snapshot));
        Ok(Opened {
            fh,
            keep_cache: false,
            direct_io: true,
        })
    }

    /// Forget a handle from [`Fs::open`].
    pub fn release(&self, fh: u64) {
        if fh != 0 {
            self.handles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&fh);
        }
    }

    /// Whether the data of container `c` may be served; runs the reference VERI check
    /// the first time it is asked for a reference container.
    fn data_gate(&self, c: usize) -> std::result::Result<(), FsError> {
        let cont = &self.containers[c];
        let a = &cont.src.archive;
        if let Some(enc) = a.encryption.as_ref().filter(|_| !a.has_key()) {
            return Err(Error::Encrypted {
                cipher: enc.cipher.clone(),
                what: "reading its data".into(),
            }
            .into());
        }
        a.engine.known()?;
        if a.needs_veri() {
            let check = cont.veri.get_or_init(|| {
                let r = a.check_veri(&|_| {});
                let at = now_unix();
                // veri.json goes from "unchecked" to the result.
                cont.veri_changed();
                match r {
                    Ok(()) => VeriCheck {
                        ok: true,
                        computed: a.veri.map(|v| hex::encode(v.expected)),
                        detail: "match".into(),
                        at,
                    },
                    Err(e) => {
                        let computed = match &e {
                            Error::VeriMismatch { computed, .. } => Some(computed.clone()),
                            _ => None,
                        };
                        let detail = e.to_string();
                        self.log(&format!(
                            "h4fs: {}: whole-file VERI check failed: {detail}; its data files return EIO",
                            cont.src.path.display()
                        ));
                        VeriCheck {
                            ok: false,
                            computed,
                            detail,
                            at,
                        }
                    }
                }
            });
            if !check.ok {
                return Err(FsError::VeriFailed {
                    path: cont.src.path.display().to_string(),
                    detail: check.detail.clone(),
                });
            }
        }
        Ok(())
    }

    /// Read `size` bytes at `offset` of file `ino` opened as `fh`.
    pub fn read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> std::result::Result<ReadData, FsError> {
        let node = self.node(ino)?;
        self.read_requests.fetch_add(1, Ordering::Relaxed);
        self.largest_read.fetch_max(size as u64, Ordering::Relaxed);
        let size = size as usize;
        let data = match node {
            Node::Top
            | Node::Dir(..)
            | Node::BlocksDir(..)
            | Node::ByPtsDir(..)
            | Node::ByNameDir(..) => {
                return Err(FsError::IsDir);
            }
            Node::Link(..) | Node::NameLink(..) | Node::StreamLink(..) => {
                return Err(FsError::NotFound);
            }
            Node::Gen(_, _, Local::Veri) => {
                let snap = self
                    .handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&fh)
                    .cloned()
                    .ok_or(FsError::BadHandle(fh))?;
                let (lo, hi) = clip(offset, size, snap.len() as u64);
                ReadData::Shared(snap, lo, hi)
            }
            Node::Gen(c, t, l @ (Local::IndexCsv | Local::SeekCsv)) => {
                let dt = self.data_track(c, t).ok_or(FsError::NotFound)?;
                let tv = &self.containers[c].tracks[dt];
                let rf = if l == Local::IndexCsv {
                    &tv.index_csv
                } else {
                    &tv.seek_csv
                };
                ReadData::Owned(rf.read(self.track(c, dt), offset, size))
            }
            Node::Gen(c, t, l) => {
                let v = self.generated(c, t, l);
                let (lo, hi) = clip(offset, size, v.len() as u64);
                ReadData::Shared(v, lo, hi)
            }
            Node::Block(c, t, n) => {
                self.data_gate(c)?;
                let e = self.track(c, t).blocks.get(n).ok_or(FsError::NotFound)?;
                let (lo, hi) = clip(offset, size, e.decoded_len);
                if lo == hi {
                    return Ok(ReadData::Owned(Vec::new()));
                }
                let b = self.block(c, t, n, false)?;
                ReadData::Block(b, lo, hi)
            }
            Node::Stream(c, t) => {
                self.data_gate(c)?;
                self.read_stream(c, t, offset, size)?
            }
        };
        self.bytes_served
            .fetch_add(data.as_slice().len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    fn read_stream(
        &self,
        c: usize,
        t: usize,
        offset: u64,
        size: usize,
    ) -> std::result::Result<ReadData, FsError> {
        let track = self.track(c, t);
        let segs: Vec<_> = track.segments(offset, size as u64).collect();
        let Some(last) = segs.last().map(|s| s.block) else {
            return Ok(ReadData::Owned(Vec::new()));
        };
        let end = offset + segs.iter().map(|s| s.len).sum::<u64>();
        let sequential = self.note_stream_read(c, t, offset, end);
        let data = match segs.as_slice() {
            [s] => {
                let b = self.block(c, t, s.block, sequential)?;
                ReadData::Block(b, s.start as usize, (s.start + s.len) as usize)
            }
            many => {
                let total: u64 = many.iter().map(|s| s.len).sum();
                let mut out = Vec::with_capacity(total as usize);
                for s in many {
                    let b = self.block(c, t, s.block, false)?;
                    out.extend_from_slice(&b.bytes()[s.start as usize..(s.start + s.len) as usize]);
                }
                ReadData::Owned(out)
            }
        };
        if sequential {
            self.queue_prefetch(c, t, last);
        }
        Ok(data)
    }

    /// Record a `stream` read of `[start, end)` and say whether the reader looks
    /// sequential: two reads in a row that each start where the previous one ended
    /// (within the size of the readahead requests the kernel may have in flight on other
    /// FUSE threads), or a read from the start of the stream. Random readers, whose
    /// kernel readahead produces an occasional adjacent pair, do not count.
    fn note_stream_read(&self, c: usize, t: usize, start: u64, end: u64) -> bool {
        const SLACK: u64 = 2 << 20;
        let mut m = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let streak = match m.get(&(c, t)) {
            Some(&(p, n))
                if start <= p.saturating_add(SLACK) && start.saturating_add(SLACK) >= p =>
            {
                n.saturating_add(1)
            }
            _ => 0,
        };
        m.insert((c, t), (end, streak));
        start == 0 || streak >= 2
    }

    /// For a sequential reader whose read ended in block `last`: queue the blocks after
    /// it, up to `prefetch_bytes`, for the prefetch threads.
    fn queue_prefetch(&self, c: usize, t: usize, last: u64) {
        let guard = self.prefetch_tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else { return };
        let blocks = &self.track(c, t).blocks;
        let budget = self.cfg.prefetch_bytes.min(self.cache.capacity() / 2);
        let mut bytes = 0;
        let mut n = last + 1;
        while bytes < budget && n < blocks.len() && n <= last + 64 {
            let Some(e) = blocks.get(n) else { break };
            bytes += e.decoded_len;
            let key = self.key(c, t, n);
            let in_flight = self
                .loading
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&key);
            if !in_flight && !self.cache.contains(&key) {
                match tx.try_send(key) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => break,
                }
            }
            n += 1;
        }
    }

    fn key(&self, c: usize, t: usize, n: u64) -> BlockKey {
        BlockKey {
            container: c as u32,
            track: t as u32,
            block: n,
        }
    }

    /// A block, verified: from the cache, or read, checked and cached. With `with_next`
    /// (a sequential `stream` reader, which will ask for block `n + 1` soon), a miss
    /// reads block `n + 1` too when it is not cached, so that the two hashes share this
    /// core in lockstep ([`load_pair`](Self::load_pair)).
    fn block(
        &self,
        c: usize,
        t: usize,
        n: u64,
        with_next: bool,
    ) -> std::result::Result<Arc<VerifiedBlock>, FsError> {
        let key = self.key(c, t, n);
        if let Some(b) = self.cache.get(&key) {
            return Ok(b);
        }
        let next = self.key(c, t, n + 1);
        if with_next
            && self.containers[c].src.archive.hashes_blocks_in_pairs()
            && n + 1 < self.track(c, t).blocks.len()
            && !self.cache.contains(&next)
        {
            if let [PairPart::Loaded(r), _] = self.load_pair([key, next], false) {
                return r;
            }
        }
        self.load(key, false).map(|(b, _)| b)
    }

    /// Read and verify a block, once even when several readers miss at the same time.
    /// The flag says whether this call did the reading (rather than waiting for another
    /// reader or finding it cached).
    fn load(
        &self,
        key: BlockKey,
        prefetch: bool,
    ) -> std::result::Result<(Arc<VerifiedBlock>, bool), FsError> {
        let flight = match self.lead(key) {
            Ok(f) => f,
            Err(other) => {
                let mut g = other.done.lock().unwrap_or_else(|p| p.into_inner());
                while g.is_none() {
                    g = other.cv.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                if let Some(Some(b)) = g.as_ref() {
                    return Ok((b.clone(), false));
                }
                drop(g);
                // The leader failed: read it ourselves, so this reader gets the error too.
                return self.load_uncoordinated(key, prefetch).map(|b| (b, true));
            }
        };
        // A previous leader may have filled the cache just before we took the flight.
        let r = match self.cached_no_miss(&key) {
            Some(b) => Ok((b, false)),
            None => self.load_uncoordinated(key, prefetch).map(|b| (b, true)),
        };
        self.land(key, &flight, r.as_ref().ok().map(|(b, _)| b.clone()));
        r
    }

    /// The cached block for `key`, without counting a miss when it is not there (the
    /// caller has already counted one, or is the prefetcher).
    fn cached_no_miss(&self, key: &BlockKey) -> Option<Arc<VerifiedBlock>> {
        self.cache
            .contains(key)
            .then(|| self.cache.get(key))
            .flatten()
    }

    /// Take the load of `key`: `Ok` with a new flight for this caller to land, or `Err`
    /// with the flight of the reader already loading it.
    fn lead(&self, key: BlockKey) -> std::result::Result<Arc<Flight>, Arc<Flight>> {
        let mut m = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(&key) {
            Some(f) => Err(f.clone()),
            None => {
                let f = Arc::new(Flight {
                    done: Mutex::new(None),
                    cv: Condvar::new(),
                });
                m.insert(key, f.clone());
                Ok(f)
            }
        }
    }

    /// Finish a flight taken with [`lead`](Self::lead), waking its waiters.
    fn land(&self, key: BlockKey, flight: &Flight, block: Option<Arc<VerifiedBlock>>) {
        {
            let mut g = flight.done.lock().unwrap_or_else(|p| p.into_inner());
            *g = Some(block);
            flight.cv.notify_all();
        }
        self.loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// Prefetch two blocks, together where possible (see [`load_pair`](Self::load_pair)).
    fn prefetch_pair(&self, a: BlockKey, b: BlockKey) {
        for part in self.load_pair([a, b], true) {
            if matches!(part, PairPart::Loaded(Ok(_))) {
                self.cache.record_prefetch();
            }
        }
    }

    /// Load two blocks. When this call gets to load both and they are in one container,
    /// it reads both and hashes them in lockstep on this core
    /// ([`Archive::read_block_entry_pair`]); otherwise each is left alone when cached or
    /// being loaded by another reader, or loaded by itself. Never waits for another
    /// reader.
    fn load_pair(&self, keys: [BlockKey; 2], prefetch: bool) -> [PairPart; 2] {
        let [fa, fb] = keys.map(|k| self.take_load(k));
        let (ra, rb) = match (&fa, &fb) {
            (Ok(_), Ok(_)) if keys[0].container == keys[1].container => {
                let [ra, rb] = self.read_pair(keys, prefetch);
                (Some(ra), Some(rb))
            }
            _ => (None, None),
        };
        [
            self.finish_load(keys[0], fa, ra, prefetch),
            self.finish_load(keys[1], fb, rb, prefetch),
        ]
    }

    /// Take the load of `key` unless it is cached or another reader is loading it.
    fn take_load(&self, key: BlockKey) -> std::result::Result<Arc<Flight>, PairPart> {
        if self.cache.contains(&key) {
            return Err(PairPart::Cached);
        }
        let f = self.lead(key).map_err(|_| PairPart::Busy)?;
        // A leader may have cached it between the check and taking the flight.
        if let Some(b) = self.cached_no_miss(&key) {
            self.land(key, &f, Some(b));
            return Err(PairPart::Cached);
        }
        Ok(f)
    }

    /// Read and verify two blocks of one container, their hashes in lockstep.
    fn read_pair(
        &self,
        keys: [BlockKey; 2],
        prefetch: bool,
    ) -> [std::result::Result<Arc<VerifiedBlock>, FsError>; 2] {
        let archive = &self.containers[keys[0].container as usize].src.archive;
        match keys.map(|k| archive.entry(k.track as usize, k.block)) {
            [Ok(ea), Ok(eb)] => {
                let [ra, rb] = archive.read_block_entry_pair(&ea, &eb);
                [
                    self.loaded(keys[0], &ea, ra, prefetch),
                    self.loaded(keys[1], &eb, rb, prefetch),
                ]
            }
            _ => keys.map(|k| self.load_uncoordinated(k, prefetch)),
        }
    }

    /// Land a load taken with [`take_load`](Self::take_load), with its result `r`, read
    /// here if not given.
    fn finish_load(
        &self,
        key: BlockKey,
        flight: std::result::Result<Arc<Flight>, PairPart>,
        r: Option<std::result::Result<Arc<VerifiedBlock>, FsError>>,
        prefetch: bool,
    ) -> PairPart {
        match flight {
            Err(part) => part,
            Ok(f) => {
                let r = r.unwrap_or_else(|| self.load_uncoordinated(key, prefetch));
                self.land(key, &f, r.as_ref().ok().cloned());
                PairPart::Loaded(r)
            }
        }
    }

    /// Prefetch one block unless it is cached or being loaded.
    fn prefetch_one(&self, key: BlockKey) {
        if !self.cache.contains(&key) && matches!(self.load(key, true), Ok((_, true))) {
            self.cache.record_prefetch();
        }
    }

    fn load_uncoordinated(
        &self,
        key: BlockKey,
        prefetch: bool,
    ) -> std::result::Result<Arc<VerifiedBlock>, FsError> {
        let (c, t, n) = (key.container as usize, key.track as usize, key.block);
        let a = &self.containers[c].src.archive;
        let e = a.entry(t, n)?;
        let r = a.read_block_entry(&e);
        self.loaded(key, &e, r, prefetch)
    }

    /// Cache a block just read, or record and log its failure.
    fn loaded(
        &self,
        key: BlockKey,
        e: &crate::reader::BlockEntry,
        r: crate::Result<VerifiedBlock>,
        prefetch: bool,
    ) -> std::result::Result<Arc<VerifiedBlock>, FsError> {
        let (c, t, n) = (key.container as usize, key.track as usize, key.block);
        let cont = &self.containers[c];
        match r {
            Ok(b) => {
                let b = Arc::new(b);
                cont.blocks_verified.fetch_add(1, Ordering::Relaxed);
                self.cache.insert(key, b.clone());
                Ok(b)
            }
            Err(err) => {
                let msg = err.to_string();
                let first = {
                    let mut f = cont.failures.lock().unwrap_or_else(|p| p.into_inner());
                    let entry = f.entry((t, n)).or_insert_with(|| Failure {
                        offset: e.chunk_offset,
                        error: msg.clone(),
                        first_at: now_unix(),
                        count: 0,
                    });
                    entry.count += 1;
                    let first = entry.count == 1;
                    if first {
                        // A new entry in veri.json (under the failures lock, so the
                        // generations follow the order of the entries).
                        cont.veri_changed();
                    }
                    first
                };
                if first || !prefetch {
                    self.log(&format!(
                        "h4fs: {}: track {} block {n} at file offset {}: {msg}; returning EIO{}",
                        cont.src.path.display(),
                        self.track(c, t).id,
                        e.chunk_offset,
                        if prefetch { " (prefetch)" } else { "" }
                    ));
                }
                Err(err.into())
            }
        }
    }

    /// Target of a `by-pts/` symlink.
    pub fn readlink(&self, ino: u64) -> std::result::Result<String, FsError> {
        self.symlink_target(self.node(ino)?)
            .ok_or(FsError::NotSymlink)
    }

    fn xattrs(&self, node: Node) -> Vec<(&'static str, Vec<u8>)> {
        match node {
            Node::Block(c, t, n) => {
                let Some(e) = self.track(c, t).blocks.get(n) else {
                    return Vec::new();
                };
                let mut v = vec![
                    ("user.h4mk.pts_us", e.pts_us.to_string().into_bytes()),
                    (
                        "user.h4mk.keyframe",
                        if e.keyframe {
                            b"1".to_vec()
                        } else {
                            b"0".to_vec()
                        },
                    ),
                ];
                if let Some(h) = e.sha256() {
                    v.push(("user.h4mk.sha256", hex::encode(h).into_bytes()));
                }
                v.push(("user.h4mk.offset", e.stream_offset.to_string().into_bytes()));
                if let Some(name) = self.block_file_name(c, t, n) {
                    v.push(("user.h4mk.name", name.as_bytes().to_vec()));
                }
                v
            }
            Node::Stream(c, t) => match &self.containers[c].tracks[t].stream_ext {
                Some(ext) => vec![(
                    "user.h4mk.mime",
                    crate::naming::mime_type(ext).as_bytes().to_vec(),
                )],
                None => Vec::new(),
            },
            Node::Dir(c, None) => vec![("user.h4mk.veri", self.veri_summary(c).into_bytes())],
            _ => Vec::new(),
        }
    }

    /// Extended attribute `name` of `ino`, fitted to a buffer of `size` bytes.
    pub fn getxattr(
        &self,
        ino: u64,
        name: &str,
        size: u32,
    ) -> std::result::Result<XattrReply, FsError> {
        let node = self.node(ino)?;
        if name == STATS_XATTR && ino == self.root_ino() {
            return XattrReply::fit(self.stats_xattr(), size);
        }
        let value = self
            .xattrs(node)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or(FsError::NoXattr)?;
        XattrReply::fit(value, size)
    }

    /// Names of the extended attributes of `ino`, NUL-terminated.
    pub fn listxattr(&self, ino: u64, size: u32) -> std::result::Result<XattrReply, FsError> {
        let node = self.node(ino)?;
        let mut list = Vec::new();
        for (n, _) in self.xattrs(node) {
            list.extend_from_slice(n.as_bytes());
            list.push(0);
        }
        XattrReply::fit(list, size)
    }

    /// Filesystem numbers: size of all decoded data, node count.
    pub fn statfs(&self) -> StatFs {
        let bsize = 4096u32;
        let mut bytes = 0u64;
        let mut files = 2u64;
        for c in &self.containers {
            for (t, tv) in c.src.archive.tracks.iter().zip(&c.tracks) {
                bytes += t.stream_len();
                files += 2 * t.blocks.len() + TRACK_FILES.len() as u64 + 1;
                files += tv.by_name.len() as u64 + 2;
            }
            files += CONTAINER_FILES.len() as u64 + 1;
        }
        StatFs {
            blocks: bytes.div_ceil(bsize as u64),
            files,
            bsize,
            namelen: 255,
        }
    }

    /// Inode of the root.
    pub fn root_ino(&self) -> u64 {
        self.ino(self.root_node())
    }

    // ---- generated content ----------------------------------------------------------

    fn gen_len(&self, c: usize, t: Option<usize>, l: Local) -> u64 {
        match l {
            Local::IndexCsv | Local::SeekCsv => {
                let Some(dt) = self.data_track(c, t) else {
                    return 0;
                };
                let tv = &self.containers[c].tracks[dt];
                let rf = if l == Local::IndexCsv {
                    &tv.index_csv
                } else {
                    &tv.seek_csv
                };
                rf.len(self.track(c, dt))
            }
            _ => self.generated(c, t, l).len() as u64,
        }
    }

    /// Immutable generated JSON, built on first use.
    fn generated(&self, c: usize, t: Option<usize>, l: Local) -> Arc<Vec<u8>> {
        let cont = &self.containers[c];
        let dt = self.data_track(c, t);
        let slot = match t {
            Some(t) => &cont.tracks[t].generated,
            None => &cont.generated,
        };
        if let Some(v) = slot.lock().unwrap_or_else(|p| p.into_inner()).get(&l) {
            return v.clone();
        }
        let a = &cont.src.archive;
        let bytes = match l {
            Local::Meta => content::meta_json(a, cont.unreadable.as_deref()),
            Local::Safe => content::safe_json(a),
            Local::Manifest => match dt {
                Some(dt) => content::manifest_json(a, &cont.src.name, self.track(c, dt)),
                None => {
                    let per: Vec<Value> = a
                        .tracks
                        .iter()
                        .map(|tr| {
                            serde_json::from_slice(&content::manifest_json(a, &cont.src.name, tr))
                                .unwrap_or(Value::Null)
                        })
                        .collect();
                    content::pretty(&json!({"container": cont.src.name, "tracks": per}))
                }
            },
            Local::Tracks => content::tracks_json(a, t.map(|t| self.track(c, t))),
            // veri.json changes while mounted: snapshot per open, never kept here.
            Local::Veri
            | Local::Dir
            | Local::SeekCsv
            | Local::IndexCsv
            | Local::Stream
            | Local::Blocks
            | Local::ByPts
            | Local::Unused11
            | Local::ByName
            | Local::StreamLink => Vec::new(),
        };
        let v = Arc::new(bytes);
        slot.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(l, v.clone());
        v
    }

    fn veri_value(&self, c: usize) -> Value {
        let cont = &self.containers[c];
        let a = &cont.src.archive;
        let src = &cont.src;
        let checked_at = unix(src.checked_at);
        let structure = match a.layout {
            Layout::H4fs => json!({
                "algorithm": "sha256 structure root over footer, SEEK, META, SAFE and the block index",
                "expected": a.footer.map(|(_, f)| hex::encode(f.root)),
                "status": if a.root_checked { "ok" } else { "unchecked" },
                "checked_at": a.root_checked.then(|| content::iso8601(checked_at)),
            }),
            Layout::ReferenceA => json!({
                "algorithm": "crc32 of every chunk read at mount",
                "status": if src.level == VerifyLevel::None { "unchecked" } else { "ok" },
                "checked_at": (src.level != VerifyLevel::None).then(|| content::iso8601(checked_at)),
            }),
            Layout::MultitrackC => json!({
                "algorithm": "crc32 of every chunk and of the whole file",
                "status": "ok",
                "checked_at": content::iso8601(checked_at),
            }),
        };
        let veri = match (a.veri, a.layout) {
            (None, Layout::ReferenceA) => json!({
                "status": "absent",
                "detail": "a reference file has no other check of its chunks: its data files return EIO",
            }),
            (None, _) => json!({"status": "absent"}),
            (Some(v), Layout::ReferenceA) => match cont.veri.get() {
                None => json!({
                    "algorithm": "sha256 of every chunk before VERI",
                    "expected": hex::encode(v.expected),
                    "computed": null,
                    "status": "unchecked",
                    "when": "on the first open of a data file",
                }),
                Some(chk) => json!({
                    "algorithm": "sha256 of every chunk before VERI",
                    "expected": hex::encode(v.expected),
                    "computed": chk.computed,
                    "status": if chk.ok { "ok" } else { "mismatch" },
                    "detail": chk.detail,
                    "checked_at": content::iso8601(chk.at),
                }),
            },
            (Some(v), _) => json!({
                "algorithm": "sha256 of every chunk before VERI",
                "expected": hex::encode(v.expected),
                "status": if src.level == VerifyLevel::Full { "ok" } else { "unchecked" },
                "checked_at": (src.level == VerifyLevel::Full).then(|| content::iso8601(checked_at)),
            }),
        };
        let algorithm = match a.layout {
            Layout::H4fs => "sha256 of stored bytes, against the block index",
            Layout::ReferenceA => "crc32 of the CORE payload",
            Layout::MultitrackC => "crc32 of the CORE chunk",
        };
        let failures: Vec<Value> = cont
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&(t, n), f)| {
                json!({
                    "track": a.tracks[t].id,
                    "block": n,
                    "file_offset": f.offset,
                    "error": f.error,
                    "first_seen": content::iso8601(f.first_at),
                })
            })
            .collect();
        json!({
            "container": src.path.display().to_string(),
            "layout": a.layout,
            "verify": src.level.name(),
            "structure": structure,
            "veri": veri,
            "blocks": {
                "algorithm": algorithm,
                "when": "each block before its bytes are first served",
                "verified_full_at_mount": src.full_blocks,
                "failures": failures,
            },
            "data": {
                "readable": cont.unreadable.is_none(),
                "reason": cont.unreadable,
            },
        })
    }

    fn veri_json(&self, c: usize) -> Vec<u8> {
        content::pretty(&self.veri_value(c))
    }

    fn veri_summary(&self, c: usize) -> String {
        let v = self.veri_value(c);
        let failures = v["blocks"]["failures"].as_array().map_or(0, Vec::len);
        json!({
            "structure": v["structure"]["status"],
            "veri": v["veri"]["status"],
            "block_failures": failures,
            "data_readable": v["data"]["readable"],
        })
        .to_string()
    }

    /// The mount's live counters (the value of [`STATS_XATTR`]).
    pub fn stats(&self) -> Value {
        let s = self.cache.stats();
        let per_container: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let failures = c.failures.lock().unwrap_or_else(|p| p.into_inner());
                json!({
                    "name": c.src.name,
                    "blocks_verified": c.blocks_verified.load(Ordering::Relaxed),
                    "verification_failures": failures.len(),
                    "failed_reads": failures.values().map(|f| f.count).sum::<u64>(),
                })
            })
            .collect();
        let sum = |key: &str| {
            per_container
                .iter()
                .map(|c| c[key].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        json!({
            "cache": {
                "hits": s.hits,
                "misses": s.misses,
                "evictions": s.evictions,
                "prefetches": s.prefetches,
                "blocks": s.blocks,
                "bytes": s.bytes,
                "capacity": s.capacity,
            },
            "bytes_served": self.bytes_served.load(Ordering::Relaxed),
            "read_requests": self.read_requests.load(Ordering::Relaxed),
            "largest_read_request": self.largest_read.load(Ordering::Relaxed),
            "blocks_verified": sum("blocks_verified"),
            "verification_failures": sum("verification_failures"),
            "failed_reads": sum("failed_reads"),
            "containers": self.containers.len(),
            "per_container": per_container,
            "skipped": self.skipped.iter().map(|(file, error)| json!({"file": file, "error": error})).collect::<Vec<_>>(),
            "uptime_s": SystemTime::now().duration_since(self.started).unwrap_or(Duration::ZERO).as_secs(),
        })
    }

    /// [`Fs::stats`] as compact JSON within the kernel's limit for one extended
    /// attribute: with very many containers, the per-container list and then the
    /// skipped list are cut, and `"omitted"` says how many entries of each were left out.
    fn stats_xattr(&self) -> Vec<u8> {
        let mut v = self.stats();
        let mut bytes = v.to_string().into_bytes();
        for list in ["per_container", "skipped"] {
            let mut omitted = 0u64;
            while bytes.len() > STATS_XATTR_MAX {
                let Some(items) = v[list].as_array_mut() else {
                    break;
                };
                if items.is_empty() {
                    break;
                }
                // Halve until it fits: a bounded number of passes.
                let keep = items.len() / 2;
                omitted += (items.len() - keep) as u64;
                items.truncate(keep);
                v["omitted"][list] = json!(omitted);
                bytes = v.to_string().into_bytes();
            }
        }
        bytes
    }
}

fn clip(offset: u64, size: usize, len: u64) -> (usize, usize) {
    let lo = offset.min(len);
    let hi = offset.saturating_add(size as u64).min(len);
    (lo as usize, hi as usize)
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// A non-negative decimal integer, digits only.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests;
