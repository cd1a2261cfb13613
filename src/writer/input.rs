//! What `pack` reads: one file cut into fixed blocks, one file cut at the rows of an
//! index CSV, or a directory of files (one block each).
//!
//! [`Input::open`] opens the file (or lists the directory) once and checks everything
//! that can be checked before reading: block size, that the index rows tile the file,
//! fps and gop, the names of a directory's files. The [`OpenInput`] it returns is what
//! every pass of a pack reads, by positioned reads of the one open file (or files
//! opened relative to the one directory fd), so the input is never looked up by path
//! again.

use super::PackOptions;
use super::builder::{BlockMeta, MAX_BLOCK};
use super::index_csv::IndexRow;
use crate::crypto;
use crate::error::{Error, Result};
use serde_json::{Map, Value, json};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What to pack.
#[derive(Debug, Clone)]
pub enum Input {
    /// One file cut into blocks of `block_size` bytes.
    Fixed {
        path: PathBuf,
        block_size: u64,
        fps: f64,
        gop: u64,
    },
    /// One file cut at the rows of an index.
    Indexed { path: PathBuf, rows: Vec<IndexRow> },
    /// A directory of files, one block each, in byte order of their names. Symbolic
    /// links are refused unless `follow_symlinks`.
    Directory {
        path: PathBuf,
        fps: f64,
        gop: u64,
        follow_symlinks: bool,
    },
}

/// Microseconds per frame as the reference computes it: `floor(1e6 / fps)`.
pub fn frame_us(fps: f64) -> Result<u64> {
    if !(fps.is_finite() && fps > 0.0) {
        return Err(Error::BadInput(format!(
            "fps must be a positive number, not {fps}"
        )));
    }
    Ok((1e6 / fps).floor() as u64)
}

/// Check the timing of fixed blocks and directory entries: a positive fps and a
/// keyframe every `gop` >= 1 blocks (the CLI refuses `--gop 0` the same way).
fn check_timing(fps: f64, gop: u64) -> Result<u64> {
    let frame = frame_us(fps)?;
    if gop == 0 {
        return Err(Error::BadInput(
            "gop must be at least 1 (a keyframe every gop blocks; block 0 is one)".into(),
        ));
    }
    Ok(frame)
}

fn fixed_meta(i: u64, frame: u64, gop: u64) -> BlockMeta {
    BlockMeta {
        pts_us: i.saturating_mul(frame),
        keyframe: i % gop == 0,
    }
}

/// A block source: yields blocks in order.
pub(super) type BlockIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, BlockMeta)>> + Send + 'a>;

fn open_input(path: &Path) -> Result<(File, u64)> {
    let (f, md) =
        crate::input::open_file(path).map_err(|e| Error::io_path("cannot open input", path, e))?;
    if md.is_dir() {
        return Err(Error::BadInput(format!(
            "{} is a directory; pass a file, or a directory with --fps for one block per file",
            path.display()
        )));
    }
    Ok((f, md.len()))
}

/// Read `len` bytes at `offset` of the open input `f`.
fn read_exact_block(f: &File, len: u64, path: &Path, offset: u64) -> Result<Vec<u8>> {
    // Room for the tag, so sealing in place does not reallocate.
    let mut buf = Vec::with_capacity(len as usize + crypto::container::TAG_LEN);
    buf.resize(len as usize, 0);
    f.read_exact_at(&mut buf, offset).map_err(|e| {
        Error::io(
            format!(
                "reading {len} bytes at offset {offset} of {} (did it shrink?)",
                path.display()
            ),
            e,
        )
    })?;
    Ok(buf)
}

/// A directory being packed: its fd (every file is opened relative to it, so a name
/// cannot lead out of it between listing and reading) and the regular files in it,
/// sorted by name bytes.
pub struct DirListing {
    dir: OwnedFd,
    follow_symlinks: bool,
    /// (path for messages, name in the directory, size).
    pub files: Vec<(PathBuf, CString, u64)>,
}

fn kind_of(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFDIR => "a directory",
        _ => "not a regular file",
    }
}

fn stat_at(dir: &OwnedFd, name: &CString, follow: bool) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: NUL-terminated name, open directory, valid out pointer.
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// The names in the directory open at `dir`, without `.` and `..`.
fn read_names(dir: &OwnedFd) -> std::io::Result<Vec<CString>> {
    // SAFETY: dup of an open fd; fdopendir takes ownership of the copy, closedir frees
    // it; readdir's entries are copied before the next call.
    unsafe {
        let fd = libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let d = libc::fdopendir(fd);
        if d.is_null() {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        let mut names = Vec::new();
        loop {
            *libc::__errno_location() = 0;
            let ent = libc::readdir(d);
            if ent.is_null() {
                let errno = *libc::__errno_location();
                libc::closedir(d);
                if errno != 0 {
                    return Err(std::io::Error::from_raw_os_error(errno));
                }
                return Ok(names);
            }
            let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr());
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
    }
}

/// List the files of a directory input: regular files become blocks, subdirectories are
/// left out, and anything else is refused with its path: FIFOs, sockets and devices
/// always, symbolic links unless `follow_symlinks` (then what they point to counts).
pub fn directory_files(dir: &Path, follow_symlinks: bool) -> Result<DirListing> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::BadInput(format!("{} has a NUL byte", dir.display())))?;
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io_path(
            "cannot open directory",
            dir,
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let names = read_names(&fd).map_err(|e| Error::io_path("cannot read directory", dir, e))?;
    let mut files = Vec::new();
    for name in names {
        let p = dir.join(OsStr::from_bytes(name.as_bytes()));
        let mut st =
            stat_at(&fd, &name, false).map_err(|e| Error::io_path("cannot stat", &p, e))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            if !follow_symlinks {
                return Err(Error::BadInput(format!(
                    "{} is a symbolic link; pack does not follow links out of the directory \
                     (pass --follow-symlinks to pack what they point to)",
                    p.display()
                )));
            }
            st = stat_at(&fd, &name, true)
                .map_err(|e| Error::io_path("cannot follow the symbolic link", &p, e))?;
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => continue,
            libc::S_IFREG => {}
            m => {
                return Err(Error::BadInput(format!(
                    "{} is {}; pack takes regular files only",
                    p.display(),
                    kind_of(m)
                )));
            }
        }
        let len = st.st_size as u64;
        if len > MAX_BLOCK {
            return Err(Error::Limit(format!(
                "{} is {len} bytes; one block holds at most {MAX_BLOCK}",
                p.display()
            )));
        }
        files.push((p, name, len));
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(DirListing {
        dir: fd,
        follow_symlinks,
        files,
    })
}

impl DirListing {
    /// Read file `i` whole: opened relative to the directory, never through a symbolic
    /// link unless links are followed, and only if it is still the regular file of the
    /// listed size.
    fn read(&self, i: usize) -> Result<Vec<u8>> {
        let (p, name, len) = &self.files[i];
        let nofollow = if self.follow_symlinks {
            0
        } else {
            libc::O_NOFOLLOW
        };
        // SAFETY: NUL-terminated name in an open directory; the fd is owned below.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY | nofollow,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ELOOP) {
                return Err(Error::Changed(format!(
                    "{} became a symbolic link while it was packed; pack does not follow \
                     links out of the directory",
                    p.display()
                )));
            }
            return Err(Error::io_path("cannot open input", p, e));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let f = unsafe { File::from_raw_fd(fd) };
        let md = f
            .metadata()
            .map_err(|e| Error::io_path("cannot stat input", p, e))?;
        if !md.is_file() {
            return Err(Error::Changed(format!(
                "{} is no longer a regular file; pack takes regular files only",
                p.display()
            )));
        }
        if md.len() != *len {
            return Err(Error::Changed(format!(
                "{} changed size while it was packed ({len} bytes, now {})",
                p.display(),
                md.len()
            )));
        }
        read_exact_block(&f, *len, p, 0)
    }
}

/// The names of a directory's files as recorded in META `"names"`: one per block, in
/// block order. A name that JSON cannot carry as it is (not UTF-8) or that a reader
/// would not accept (see [`crate::naming::valid_name`]) is refused, naming the file.
pub fn directory_names(listing: &DirListing) -> Result<Vec<String>> {
    listing
        .files
        .iter()
        .map(|(p, name, _)| {
            let name = OsStr::from_bytes(name.as_bytes());
            match name.to_str() {
                Some(n) if crate::naming::valid_name(n) => Ok(n.to_string()),
                _ => Err(Error::BadInput(format!(
                    "{}: the file name {:?} cannot be recorded (names must be UTF-8, at most \
                     {} bytes, without control characters); rename the file",
                    p.display(),
                    name,
                    crate::naming::MAX_NAME
                ))),
            }
        })
        .collect()
}

/// An [`Input`] opened once and checked: see the module docs.
pub struct OpenInput<'a> {
    input: &'a Input,
    opened: Opened<'a>,
    total_len: u64,
}

enum Opened<'a> {
    /// The one open file of a fixed-block input.
    Fixed {
        file: File,
        block_size: u64,
        frame: u64,
        gop: u64,
    },
    /// The one open file of an indexed input, and its rows.
    Indexed { file: File, rows: &'a [IndexRow] },
    /// The listing of a directory input and the names recorded for its files.
    Directory {
        listing: DirListing,
        names: Vec<String>,
        frame: u64,
        gop: u64,
    },
}

impl Input {
    pub fn path(&self) -> &Path {
        match self {
            Input::Fixed { path, .. }
            | Input::Indexed { path, .. }
            | Input::Directory { path, .. } => path,
        }
    }

    /// Open (or list) the input once and check it; see [`OpenInput`].
    pub fn open(&self) -> Result<OpenInput<'_>> {
        let (opened, total_len) = match self {
            Input::Fixed {
                path,
                block_size,
                fps,
                gop,
            } => {
                if *block_size == 0 || *block_size > MAX_BLOCK {
                    return Err(Error::BadInput(format!(
                        "block size must be 1..={MAX_BLOCK} bytes, not {block_size}"
                    )));
                }
                let (file, len) = open_input(path)?;
                let frame = check_timing(*fps, *gop)?;
                let opened = Opened::Fixed {
                    file,
                    block_size: *block_size,
                    frame,
                    gop: *gop,
                };
                (opened, len)
            }
            Input::Indexed { path, rows } => {
                let (file, len) = open_input(path)?;
                let covered = rows.last().map_or(0, |r| r.offset + r.size);
                if covered != len {
                    return Err(Error::BadInput(format!(
                        "the index covers {covered} bytes but {} has {len}: rows must tile the whole input",
                        path.display()
                    )));
                }
                (Opened::Indexed { file, rows }, len)
            }
            Input::Directory {
                path,
                fps,
                gop,
                follow_symlinks,
            } => {
                let listing = directory_files(path, *follow_symlinks)?;
                let names = directory_names(&listing)?;
                let frame = check_timing(*fps, *gop)?;
                let total = listing.files.iter().map(|f| f.2).sum();
                let gop = *gop;
                let opened = Opened::Directory {
                    listing,
                    names,
                    frame,
                    gop,
                };
                (opened, total)
            }
        };
        Ok(OpenInput {
            input: self,
            opened,
            total_len,
        })
    }

    /// Check the input and return its total size in bytes (opens it: a caller that
    /// goes on to pack it should [`open`](Self::open) it once instead).
    pub fn total_len(&self) -> Result<u64> {
        Ok(self.open()?.total_len())
    }
}

impl OpenInput<'_> {
    /// The input as described.
    pub fn input(&self) -> &Input {
        self.input
    }

    /// Total size of the input in bytes, as opened.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// For a directory, the names recorded for its files (META `names`), from the same
    /// listing the blocks are read by, so names and blocks cannot disagree.
    pub(super) fn names(&self) -> Option<&[String]> {
        match &self.opened {
            Opened::Directory { names, .. } => Some(names),
            Opened::Fixed { .. } | Opened::Indexed { .. } => None,
        }
    }

    /// The blocks in order; each call starts a new pass over the input.
    pub(super) fn blocks(&self) -> BlockIter<'_> {
        let path = self.input.path();
        match &self.opened {
            Opened::Fixed {
                file,
                block_size,
                frame,
                gop,
            } => {
                let (len, bs, frame, gop) = (self.total_len, *block_size, *frame, *gop);
                Box::new((0..len.div_ceil(bs)).map(move |i| {
                    let size = bs.min(len - i * bs);
                    let data = read_exact_block(file, size, path, i * bs)?;
                    Ok((data, fixed_meta(i, frame, gop)))
                }))
            }
            Opened::Indexed { file, rows } => Box::new(rows.iter().map(move |r| {
                let data = read_exact_block(file, r.size, path, r.offset)?;
                let meta = BlockMeta {
                    pts_us: r.pts_us,
                    keyframe: r.keyframe,
                };
                Ok((data, meta))
            })),
            Opened::Directory {
                listing,
                frame,
                gop,
                ..
            } => {
                let (frame, gop) = (*frame, *gop);
                Box::new((0..listing.files.len()).map(move |i| {
                    let data = listing.read(i)?;
                    Ok((data, fixed_meta(i as u64, frame, gop)))
                }))
            }
        }
    }
}

impl Input {
    /// META keys describing the input, in the reference's order.
    pub(super) fn meta_keys(
        &self,
        opts: &PackOptions,
        names: Option<&[String]>,
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("project".into(), json!(opts.project));
        m.insert("domain".into(), json!(opts.domain));
        match self {
            Input::Fixed {
                block_size,
                fps,
                gop,
                ..
            } => {
                m.insert("block_size".into(), json!(block_size));
                m.insert("fps_hint".into(), json!(fps));
                m.insert("gop".into(), json!(gop));
            }
            Input::Directory { fps, gop, .. } => {
                m.insert("fps_hint".into(), json!(fps));
                m.insert("gop".into(), json!(gop));
            }
            Input::Indexed { .. } => {}
        }
        m.insert("masked".into(), json!(false));
        if let Some(names) = names {
            m.insert("names".into(), json!(names));
        }
        m
    }

    pub(super) fn duration_us(&self, blocks: u64, first: Option<u64>, last: Option<u64>) -> u64 {
        match self {
            Input::Fixed { fps, .. } | Input::Directory { fps, .. } => {
                blocks.saturating_mul(frame_us(*fps).unwrap_or(0))
            }
            Input::Indexed { rows, .. } => {
                let end = rows
                    .iter()
                    .map(|r| r.pts_us.saturating_add(r.duration_us.unwrap_or(0)))
                    .max()
                    .unwrap_or(0);
                end.max(last.unwrap_or(0))
                    .saturating_sub(first.unwrap_or(0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file swapped for a symbolic link (or a FIFO, or resized) between listing and
    /// reading is not read through: every file is opened relative to the directory fd
    /// with O_NOFOLLOW and checked again.
    #[test]
    fn a_directory_file_swapped_after_listing_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("secret");
        std::fs::write(&outside, b"secret!").unwrap();
        let lib = d.path().join("lib");
        std::fs::create_dir(&lib).unwrap();
        let b = lib.join("b.bin");
        for swap in ["link", "fifo", "size"] {
            let _ = std::fs::remove_file(&b);
            std::fs::write(&b, b"public!").unwrap();
            let listing = directory_files(&lib, false).unwrap();
            assert_eq!(listing.read(0).unwrap(), b"public!");
            std::fs::remove_file(&b).unwrap();
            match swap {
                "link" => std::os::unix::fs::symlink(&outside, &b).unwrap(),
                "fifo" => {
                    let c = CString::new(b.as_os_str().as_bytes()).unwrap();
                    // SAFETY: a NUL-terminated path.
                    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
                }
                _ => std::fs::write(&b, b"longer than listed").unwrap(),
            }
            let e = listing.read(0).unwrap_err().to_string();
            let want = match swap {
                "link" => "became a symbolic link",
                "fifo" => "no longer a regular file",
                _ => "changed size",
            };
            assert!(e.contains(want) && e.contains("b.bin"), "{swap}: {e}");
        }
    }

    /// `gop` 0 is an error in the library as in the CLI (it used to be clamped to 1).
    #[test]
    fn gop_zero_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("in.bin");
        std::fs::write(&file, [7u8; 10]).unwrap();
        let fixed = Input::Fixed {
            path: file,
            block_size: 4,
            fps: 25.0,
            gop: 0,
        };
        let dir = Input::Directory {
            path: d.path().to_path_buf(),
            fps: 25.0,
            gop: 0,
            follow_symlinks: false,
        };
        for input in [fixed, dir] {
            let e = input.open().err().expect("gop 0 must be refused");
            assert!(matches!(e, Error::BadInput(_)), "{e:?}");
            assert!(e.to_string().contains("gop must be at least 1"), "{e}");
        }
    }

    /// Every pass reads the file opened once: a file renamed over the input's path
    /// after `open` is not read.
    #[test]
    fn an_opened_input_is_read_from_its_one_open_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("in.bin");
        std::fs::write(&path, b"original").unwrap();
        let input = Input::Fixed {
            path: path.clone(),
            block_size: 3,
            fps: 25.0,
            gop: 2,
        };
        let open = input.open().unwrap();
        let other = d.path().join("other.bin");
        std::fs::write(&other, b"REPLACED").unwrap();
        std::fs::rename(&other, &path).unwrap();
        for _pass in 0..2 {
            let blocks: Vec<_> = open.blocks().map(|b| b.unwrap()).collect();
            let bytes: Vec<u8> = blocks.iter().flat_map(|(d, _)| d.clone()).collect();
            assert_eq!(bytes, b"original");
            let keys: Vec<bool> = blocks.iter().map(|(_, m)| m.keyframe).collect();
            assert_eq!(keys, [true, false, true]);
        }
        assert_eq!(open.total_len(), 8);
    }
}
