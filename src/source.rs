//! Positioned reads over a container: a file (pread) or bytes in memory.
//!
//! h4fs reads containers with `pread`, not `mmap`: a container truncated or rewritten
//! while mounted must turn into an I/O error on the next read, never a SIGBUS in the
//! daemon. The page cache still serves repeated reads, so nothing is lost in speed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Something h4fs can read containers from.
pub trait ReadAt: Send + Sync {
    /// Length in bytes, as seen when the source was opened.
    fn len(&self) -> u64;
    /// True when `len() == 0`.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fill `buf` from `offset`; `UnexpectedEof` when the source has fewer bytes.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// A name for messages (a path, a URL, or `<memory>`).
    fn name(&self) -> String;
    /// A hint: the caller is about to read these `(offset, len)` ranges. A remote source
    /// fetches them at once, coalesced into few requests; local sources ignore it.
    fn will_read(&self, _ranges: &[(u64, u64)]) {}
    /// The bytes `range` failed verification: drop any copy of them this source keeps
    /// (a remote source's memory and disk caches), so that reading them again asks
    /// where they came from. True when something was dropped, so a new read may give
    /// other bytes; a file (the default) keeps nothing and says false.
    fn invalidate(&self, _range: std::ops::Range<u64>) -> bool {
        false
    }
    /// Whether [`ReadAt::will_read`] does anything (a remote source): callers skip
    /// working out hints otherwise.
    fn wants_hints(&self) -> bool {
        false
    }
}

/// A container file read with `pread`.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
    path: PathBuf,
}

impl FileSource {
    pub fn open(path: &Path) -> crate::Result<FileSource> {
        let (file, md) = crate::input::open_file(path)
            .map_err(|e| crate::Error::io_path("cannot open", path, e))?;
        if md.is_dir() {
            return Err(crate::Error::NotContainer(format!(
                "{} is a directory, not a container file",
                path.display()
            )));
        }
        Ok(FileSource {
            file,
            len: md.len(),
            path: path.to_path_buf(),
        })
    }

    /// Read an open file (named `path` in messages).
    pub fn from_file(file: File, path: &Path) -> crate::Result<FileSource> {
        let md = file
            .metadata()
            .map_err(|e| crate::Error::io_path("cannot stat", path, e))?;
        Ok(FileSource {
            file,
            len: md.len(),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ReadAt for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
    fn name(&self) -> String {
        "<memory>".into()
    }
}

impl ReadAt for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= <[u8]>::len(self))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
    fn name(&self) -> String {
        "<memory>".into()
    }
}
