//! The local disk cache of remote containers (`h4fs mount --cache-dir DIR`).
//!
//! # Layout
//! Fetched bytes are kept as fixed, aligned chunks of [`CHUNK`] bytes (the last chunk
//! of an object may be shorter), one file each, directly in DIR:
//! `<object key>-<chunk index, 10 hex digits>.chunk`. The object key is the first 128
//! bits of SHA-256 over the object's address (the URL shown in messages, which never
//! holds a secret or a query), its ETag (or, without one, its Last-Modified time) and
//! its length: a replaced object has another key, so it never reads the old files
//! (they age out by LRU).
//!
//! # Invariants
//! * A chunk file is whole or absent: it is written to `.tmp-PID-N` in DIR and renamed
//!   into place, so a crash leaves at most a temp file, removed at the next start. A
//!   file of the wrong length is dropped when read.
//! * Bytes read from here are never trusted: they go, like fetched bytes, through the
//!   block layer's verification, and a chunk whose bytes fail it is dropped
//!   ([`DiskCache::drop_range`], called through `ReadAt::invalidate`) and fetched again.
//! * The files hold at most the limit in bytes: writing past it removes the least
//!   recently used files first. Use is kept in memory and written to the file's mtime
//!   on a hit, so the order survives a remount (DIR is scanned at start, oldest mtime
//!   first out).
//! * One mount per DIR: the daemon holds an exclusive `flock` on `DIR/.lock` while it
//!   runs; a second mount on the same DIR is refused with an error naming it.
//! * DIR is created (mode 0700) when missing; chunk files are mode 0600.
//! * A full disk (or any write failure) is logged once; reads go on from the store.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Size of one chunk file (the last chunk of an object may be shorter).
pub const CHUNK: u64 = 1 << 20;
/// The default bound of `--cache-dir-size`.
pub const DEFAULT_SIZE: &str = "10G";
const LOCK_FILE: &str = ".lock";
const SUFFIX: &str = ".chunk";

/// Where a [`DiskCache`] logs (the mount's log).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// The chunk files of one directory, bounded in bytes.
pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    /// Holds the `flock` while the cache is open.
    _lock: File,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    corrupt: AtomicU64,
    write_errors: AtomicU64,
    /// Whether a write failure was logged already.
    warned: AtomicBool,
    temp_seq: AtomicU64,
    log: Mutex<Option<Log>>,
}

#[derive(Default)]
struct State {
    /// File name -> (bytes, last use).
    files: HashMap<String, (u64, u64)>,
    bytes: u64,
    tick: u64,
}

/// A snapshot of a [`DiskCache`]'s counters, for the mount's stats.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskStats {
    pub dir: String,
    pub limit: u64,
    /// Bytes of chunk files held now.
    pub bytes: u64,
    pub files: u64,
    /// Chunks read from DIR instead of the store.
    pub hits: u64,
    /// Chunks not in DIR, fetched from the store.
    pub misses: u64,
    /// Chunk files removed to stay within the limit.
    pub evictions: u64,
    /// Chunk files dropped because their bytes failed verification (or had the wrong
    /// length), then fetched again.
    pub dropped_corrupt: u64,
    /// Chunk files that could not be written (full disk, ...).
    pub write_errors: u64,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.dir)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// The key of an object's chunk files: see the module documentation.
pub fn object_key(name: &str, e_tag: Option<&str>, last_modified: &str, len: u64) -> String {
    let mut h = Sha256::new();
    h.update(b"h4fs cache-dir v1\0");
    h.update(name.as_bytes());
    h.update(b"\0");
    match e_tag {
        Some(t) => {
            h.update(b"etag\0");
            h.update(t.as_bytes());
        }
        None => {
            h.update(b"last-modified\0");
            h.update(last_modified.as_bytes());
        }
    }
    h.update(b"\0");
    h.update(len.to_le_bytes());
    hex::encode(&h.finalize()[..16])
}

fn file_name(key: &str, index: u64) -> String {
    format!("{key}-{index:010x}{SUFFIX}")
}

/// Whether `name` is a chunk file name this module writes.
fn is_chunk_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(SUFFIX) else {
        return false;
    };
    let Some((key, index)) = stem.split_once('-') else {
        return false;
    };
    key.len() == 32
        && index.len() == 10
        && key
            .chars()
            .chain(index.chars())
            .all(|c| c.is_ascii_hexdigit())
}

impl DiskCache {
    /// Open (creating it, mode 0700, when missing) the cache directory `dir`, bounded
    /// by `limit` bytes; take its lock, remove temp files a crash left, and find the
    /// chunk files already there (trimmed to `limit`).
    pub fn open(dir: &Path, limit: u64) -> Result<Arc<DiskCache>> {
        let shown = dir.display();
        if limit == 0 {
            return Err(Error::BadInput(format!(
                "--cache-dir-size must be more than 0 (cache directory {shown})"
            )));
        }
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::BadInput(format!(
                    "cache directory {shown} exists and is not a directory"
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| Error::io(format!("cannot create cache directory {shown}"), e))?;
            }
            Err(e) => return Err(Error::io(format!("cannot use cache directory {shown}"), e)),
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| {
                Error::io(
                    format!(
                        "cache directory {shown} is not writable (cannot create its lock file)"
                    ),
                    e,
                )
            })?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(Error::BadInput(format!(
                    "cache directory {shown} is in use by another h4fs mount; give each \
                     mount its own --cache-dir"
                )));
            }
            return Err(Error::io(format!("cannot lock cache directory {shown}"), e));
        }
        let mut found: Vec<(SystemTime, String, u64)> = Vec::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("cannot read cache directory {shown}"), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if !is_chunk_name(&name) {
                continue;
            }
            let Ok(md) = entry.metadata() else { continue };
            if md.is_file() {
                let used = md.modified().unwrap_or(std::time::UNIX_EPOCH);
                found.push((used, name, md.len()));
            }
        }
        found.sort();
        let mut state = State::default();
        for (_, name, len) in found {
            state.tick += 1;
            state.bytes += len;
            state.files.insert(name, (len, state.tick));
        }
        let cache = DiskCache {
            dir: dir.to_path_buf(),
            limit,
            _lock: lock,
            state: Mutex::new(state),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            temp_seq: AtomicU64::new(0),
            log: Mutex::new(None),
        };
        cache.evict(&mut cache.lock());
        Ok(Arc::new(cache))
    }

    /// Where warnings (a full disk) go; stderr until set.
    pub fn set_log(&self, log: Log) {
        *self.log.lock().unwrap_or_else(|p| p.into_inner()) = Some(log);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, msg: &str) {
        match &*self.log.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(l) => l(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether chunk `index` of object `key` is held.
    pub fn contains(&self, key: &str, index: u64) -> bool {
        self.lock().files.contains_key(&file_name(key, index))
    }

    /// The bytes of chunk `index` of object `key`, when held with length `len`; a file
    /// of another length is dropped (counted as corrupt). Counts a hit when it gives
    /// bytes (misses are counted by the caller, [`DiskCache::count_misses`]).
    pub fn get(&self, key: &str, index: u64, len: u64) -> Option<Vec<u8>> {
        let name = file_name(key, index);
        if !self.lock().files.contains_key(&name) {
            return None;
        }
        let path = self.dir.join(&name);
        let read = || -> io::Result<Vec<u8>> {
            let mut f = File::open(&path)?;
            let mut buf = Vec::with_capacity(len as usize);
            Read::by_ref(&mut f).take(len + 1).read_to_end(&mut buf)?;
            // The mtime is the use order a later mount starts from.
            let _ = f.set_modified(SystemTime::now());
            Ok(buf)
        };
        match read() {
            Ok(buf) if buf.len() as u64 == len => {
                let mut s = self.lock();
                s.tick += 1;
                let tick = s.tick;
                if let Some(e) = s.files.get_mut(&name) {
                    e.1 = tick;
                }
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(buf)
            }
            Ok(_) => {
                self.remove(&name, true);
                None
            }
            Err(_) => {
                // Gone or unreadable: forget it, fetch from the store.
                self.remove(&name, false);
                None
            }
        }
    }

    /// Count `n` chunks that were not held and are fetched from the store.
    pub fn count_misses(&self, n: u64) {
        self.misses.fetch_add(n, Ordering::Relaxed);
    }

    /// Keep `data` as chunk `index` of object `key` (written to a temp file, then renamed
    /// into place), removing least recently used files to stay within the limit. A
    /// write that fails is logged once and otherwise ignored.
    pub fn put(&self, key: &str, index: u64, data: &[u8]) {
        let len = data.len() as u64;
        if len > self.limit || len == 0 {
            return;
        }
        let name = file_name(key, index);
        if self.lock().files.contains_key(&name) {
            return;
        }
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.temp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            std::fs::rename(&tmp, self.dir.join(&name))
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            self.write_errors.fetch_add(1, Ordering::Relaxed);
            if !self.warned.swap(true, Ordering::Relaxed) {
                let why = if e.raw_os_error() == Some(libc::ENOSPC) {
                    "the disk is full".to_string()
                } else {
                    e.to_string()
                };
                self.log(&format!(
                    "h4fs: cache directory {}: cannot write a chunk file ({why}); reads go \
                     on from the store (logged once)",
                    self.dir.display()
                ));
            }
            return;
        }
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        if s.files.insert(name, (len, tick)).is_none() {
            s.bytes += len;
        }
        self.evict(&mut s);
    }

    /// Remove least recently used files until the bytes held are within the limit.
    fn evict(&self, s: &mut State) {
        while s.bytes > self.limit {
            let Some(name) = s
                .files
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            let (len, _) = s.files.remove(&name).expect("just found");
            s.bytes -= len;
            let _ = std::fs::remove_file(self.dir.join(&name));
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&self, name: &str, corrupt: bool) -> bool {
        let mut s = self.lock();
        let Some((len, _)) = s.files.remove(name) else {
            return false;
        };
        s.bytes -= len;
        drop(s);
        let _ = std::fs::remove_file(self.dir.join(name));
        if corrupt {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Drop the chunk files of object `key` that hold bytes of `range` (their bytes
    /// failed verification); returns how many were dropped.
    pub fn drop_range(&self, key: &str, range: Range<u64>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        (range.start / CHUNK..=(range.end - 1) / CHUNK)
            .filter(|&i| self.remove(&file_name(key, i), true))
            .count() as u64
    }

    /// The counters, and what is held now.
    pub fn stats(&self) -> DiskStats {
        let s = self.lock();
        DiskStats {
            dir: self.dir.display().to_string(),
            limit: self.limit,
            bytes: s.bytes,
            files: s.files.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            dropped_corrupt: self.corrupt.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_chunks_across_opens_within_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cache");
        let k = object_key("s3://b/k", Some("\"e1\""), "", 10 << 20);
        {
            let c = DiskCache::open(&dir, 3 * CHUNK).unwrap();
            // A second open of the same directory is refused while this one holds it.
            let e = DiskCache::open(&dir, 3 * CHUNK).unwrap_err();
            assert!(
                e.to_string().contains("in use by another h4fs mount"),
                "{e}"
            );
            for i in 0..4u64 {
                c.put(&k, i, &vec![i as u8; CHUNK as usize]);
            }
            let s = c.stats();
            assert_eq!((s.bytes, s.files, s.evictions), (3 * CHUNK, 3, 1));
            assert!(c.get(&k, 0, CHUNK).is_none());
            assert_eq!(c.get(&k, 3, CHUNK).unwrap()[0], 3);
        }
        let c = DiskCache::open(&dir, 3 * CHUNK).unwrap();
        assert_eq!(c.stats().bytes, 3 * CHUNK);
        assert_eq!(c.get(&k, 2, CHUNK).unwrap()[7], 2);
        // Another version of the object has other files.
        let k2 = object_key("s3://b/k", Some("\"e2\""), "", 10 << 20);
        assert!(c.get(&k2, 2, CHUNK).is_none());
        // A wrong length is dropped as corrupt; a dropped range is gone.
        assert!(c.get(&k, 1, CHUNK - 1).is_none());
        assert_eq!(c.drop_range(&k, 3 * CHUNK..3 * CHUNK + 1), 1);
        let s = c.stats();
        assert_eq!((s.dropped_corrupt, s.files), (2, 1));
        // A smaller limit trims what a new open finds.
        drop(c);
        let c = DiskCache::open(&dir, CHUNK / 2).unwrap();
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn bad_directories_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        let e = DiskCache::open(&f, CHUNK).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(DiskCache::open(&d.path().join("new/deeper"), CHUNK).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("new/deeper"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
