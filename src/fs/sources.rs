//! Sources: the containers of a mount, opened from SOURCE (one file, a directory of
//! `*.h4mk` files, one remote container, or the `*.h4mk` objects under an S3 prefix)
//! with the checks of the chosen [`VerifyLevel`].
//!
//! A prefix is listed once, at mount; its containers are [`Pending`]: each is opened
//! (one GET of its end, then its metadata) on the first lookup of its directory, so
//! listing the mount root costs no request.

use super::inode::{MAX_BLOCKS, MAX_CONTAINERS, MAX_TRACKS};
use crate::error::{Error, Result};
use crate::reader::{Archive, OpenCheck};
use crate::remote::{Bucket, Location, RemoteOptions, RemoteSource, RemoteStats};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

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
    /// For a container on S3 or HTTP: what reading it costs (requests, bytes, retries).
    pub remote: Option<Arc<RemoteStats>>,
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
    let archive = Archive::open_with(path, open_check(level))?;
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io_path("cannot stat", path, e))?;
    checked(archive, path, name, mtime, level, attach, None)
}

/// Open one remote container for mounting, as [`open_container`] opens a file: its
/// mtime is the object's Last-Modified time.
pub fn open_remote_container(
    src: RemoteSource,
    name: String,
    level: VerifyLevel,
    attach: &Attach,
) -> Result<Source> {
    use crate::source::ReadAt;
    let path = PathBuf::from(src.name());
    let mtime = src.last_modified();
    let stats = src.stats();
    // Opening checks the index and metadata it reads; when they fail and the source
    // dropped copies it kept (the disk cache's files, which may be what was damaged),
    // the container is opened once more, from the store.
    let archive = match Archive::from_source(Box::new(src.clone()), open_check(level)) {
        Err(e) if e.is_integrity() && src.invalidate(0..src.len()) => {
            Archive::from_source(Box::new(src), open_check(level))?
        }
        r => r?,
    };
    checked(archive, &path, name, mtime, level, attach, Some(stats))
}

fn open_check(level: VerifyLevel) -> OpenCheck {
    match level {
        VerifyLevel::None => OpenCheck::None,
        VerifyLevel::Structure | VerifyLevel::Full => OpenCheck::Structure,
    }
}

/// Attach keys, run the checks of `level` and the mount's limits on an opened archive.
fn checked(
    mut archive: Archive,
    path: &Path,
    name: String,
    mtime: SystemTime,
    level: VerifyLevel,
    attach: &Attach,
    remote: Option<Arc<RemoteStats>>,
) -> Result<Source> {
    attach(&mut archive)?;
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
        remote,
    })
}

/// A hook run on each archive right after it is opened (e.g. to attach a key).
pub type Attach = dyn Fn(&mut Archive) -> Result<()>;

/// An [`Attach`] that containers opened later, on any thread, can share.
pub type SharedAttach = Arc<dyn Fn(&mut Archive) -> Result<()> + Send + Sync>;

/// A container of a prefix mount, opened on first use.
pub struct Pending {
    /// Directory name under the mount root.
    pub name: String,
    /// The container's address, as messages show it.
    pub shown: String,
    /// When the listing says the object was last modified.
    pub listed_mtime: SystemTime,
    /// Open it (one GET of its end, its metadata, the checks of the mount's level).
    pub open: Box<dyn Fn() -> Result<Source> + Send + Sync>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("name", &self.name)
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

/// What [`open_remote`] found: one container opened, or the containers of a prefix,
/// listed and not opened yet.
#[derive(Debug)]
pub enum RemoteOpened {
    One(Box<Source>),
    Prefix {
        /// Each container, with its [`Source`] when it was opened already (`strict`).
        containers: Vec<(Pending, Option<Source>)>,
        /// The newest Last-Modified of the listed containers (the root's mtime, the
        /// same on every mount of the same objects).
        root_mtime: SystemTime,
        /// What listing cost.
        listing: Arc<RemoteStats>,
    },
}

/// Open a remote SOURCE: `s3://BUCKET/KEY` or an `http(s)://` URL (one container,
/// opened and checked now), or `s3://BUCKET/PREFIX/` (listed now; each `*.h4mk`
/// object directly under the prefix becomes a [`Pending`] container, and other
/// objects are left out). With `strict`, a prefix's containers are all opened now and
/// any failure is the mount's.
pub fn open_remote(
    url: &str,
    opts: &RemoteOptions,
    level: VerifyLevel,
    attach: SharedAttach,
    strict: bool,
) -> std::result::Result<RemoteOpened, SourceError> {
    let at = |p: &str| {
        let path = PathBuf::from(p);
        move |error| SourceError { path, error }
    };
    let Some(prefix) = Location::parse_prefix(url).map_err(at(&crate::remote::redacted(url)))?
    else {
        let loc = Location::parse(url).map_err(at(&crate::remote::redacted(url)))?;
        let shown = loc.shown();
        let src = RemoteSource::open(&loc, opts).map_err(at(&shown))?;
        let name = container_name(Path::new(&shown));
        let c = open_remote_container(src, name, level, &*attach).map_err(at(&shown))?;
        return Ok(RemoteOpened::One(Box::new(c)));
    };
    let shown = prefix.shown();
    let bucket = Bucket::connect(&prefix.bucket, opts).map_err(at(&shown))?;
    let listed = bucket.list(&prefix.prefix).map_err(at(&shown))?;
    let mut pending: Vec<Pending> = Vec::new();
    for obj in listed {
        let Some(stem) = obj.file_name.strip_suffix(".h4mk") else {
            continue;
        };
        let name = stem.to_string();
        let ok_name = super::tree::valid_dir_name(&name)
            && !name.chars().any(char::is_control)
            && !pending.iter().any(|p| p.name == name);
        if !ok_name {
            continue;
        }
        let (bucket, attach, n) = (bucket.clone(), attach.clone(), name.clone());
        pending.push(Pending {
            shown: format!("s3://{}/{}", prefix.bucket, obj.key),
            name,
            listed_mtime: obj.last_modified,
            open: Box::new(move || {
                open_remote_container(bucket.open_listed(&obj)?, n.clone(), level, &*attach)
            }),
        });
    }
    if pending.is_empty() {
        return Err(at(&shown)(Error::NotFound(
            "no *.h4mk containers directly under this prefix".into(),
        )));
    }
    if pending.len() > MAX_CONTAINERS {
        return Err(at(&shown)(Error::Limit(format!(
            "the prefix holds {} containers; one mount serves at most {MAX_CONTAINERS}",
            pending.len()
        ))));
    }
    let root_mtime = pending
        .iter()
        .map(|p| p.listed_mtime)
        .max()
        .unwrap_or(std::time::UNIX_EPOCH);
    let mut containers = Vec::with_capacity(pending.len());
    for p in pending {
        let opened = match strict {
            true => Some((p.open)().map_err(at(&p.shown))?),
            false => None,
        };
        containers.push((p, opened));
    }
    Ok(RemoteOpened::Prefix {
        containers,
        root_mtime,
        listing: bucket.stats(),
    })
}

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
