//! Every file h4fs writes goes through [`Output`]: `pack`, `extract`, `rekey`, `keygen`.
//!
//! The guarantees, in the order they are checked:
//!
//! * **`-` is standard output** (where the command allows it).
//! * **Devices, FIFOs and sockets are written directly**, streamed, never replaced: the
//!   destination is opened for writing as it is (a socket is connected to), so
//!   `-o /dev/null` stays the system's `/dev/null`. A symbolic link is followed only to
//!   such a destination (`-o /dev/stdout`); a link to anything else, or a dangling one,
//!   is refused, never written through and never replaced.
//! * **Nothing is replaced by accident.** An existing regular file is refused unless the
//!   caller allows it (`--force`); when it holds an H4MK container or looks like media
//!   the message says the arguments may be swapped. Directories and block devices are
//!   refused.
//! * **No output is one of the command's inputs** (same device and inode), nor lies
//!   inside an input directory.
//! * **A file appears only when complete, and an interrupted run leaves nothing.** The
//!   bytes go to an unnamed `O_TMPFILE` in the destination directory, created with the
//!   caller's mode (the umask applies), synced, and linked into place at the end: with
//!   `linkat`, which refuses to replace anything, for a new file; through a temporary
//!   name and an atomic `rename` for an allowed replacement. A process killed by any
//!   signal, even SIGKILL, leaves no file behind: the kernel frees an unnamed inode.
//!   Where the filesystem has no `O_TMPFILE`, a named temporary file (`.h4fs-out-*.tmp`)
//!   is used instead; it is removed on error, on drop and on SIGINT, SIGTERM and SIGHUP
//!   (a handler unlinks it and re-raises the signal), and it holds an exclusive `flock`
//!   while its writer lives, so the next run in that directory removes such files of
//!   runs that died by SIGKILL (their lock is gone) and leaves those of live runs alone.
//!
//! Dropping an [`Output`] without [`Output::commit`] discards what was written (nothing
//! can be taken back from a stream, of course).

use crate::error::{Error, Result};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};

/// How an [`Output`] may be created.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    /// Replace an existing regular file (`--force`). Never a directory, a device, a
    /// symbolic link or one of the inputs.
    pub force: bool,
    /// Whether the command has a `--force` to suggest when refusing.
    pub force_flag: bool,
    /// Permission bits of a new file; the process umask applies.
    pub mode: u32,
    /// Everything the command reads: the output may be none of these files, and may not
    /// lie inside any of them that is a directory.
    pub inputs: Vec<PathBuf>,
    /// Whether `-` means standard output.
    pub allow_stdout: bool,
    /// Whether only a regular file will do (an output written at offsets and read back).
    pub regular_only: bool,
}

impl Default for OutputOptions {
    fn default() -> Self {
        OutputOptions {
            force: false,
            force_flag: true,
            mode: 0o666,
            inputs: Vec::new(),
            allow_stdout: false,
            regular_only: false,
        }
    }
}

/// A destination being written; see the module documentation.
pub struct Output {
    path: PathBuf,
    sink: Sink,
}

enum Sink {
    Stdout(io::Stdout),
    Stream(Box<dyn Write + Send>),
    File(Pending),
}

/// A regular file being written, not yet in place.
struct Pending {
    file: File,
    dir: OwnedFd,
    dir_path: PathBuf,
    name: CString,
    replace: bool,
    /// The named temporary file (no `O_TMPFILE`), or `None` for an unnamed one.
    temp: Option<TempName>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.sink {
            Sink::Stdout(_) => "stdout",
            Sink::Stream(_) => "stream",
            Sink::File(_) => "file",
        };
        write!(f, "Output({kind}, {})", self.path.display())
    }
}

impl Output {
    /// Prepare to write `path` under `opts`. Fails, creating nothing, when the
    /// destination must not be written.
    pub fn create(path: &Path, opts: &OutputOptions) -> Result<Output> {
        Self::create_with(path, opts, true)
    }

    /// [`Output::create`]; `tmpfile: false` takes the path of filesystems without
    /// `O_TMPFILE` (for tests).
    fn create_with(path: &Path, opts: &OutputOptions, tmpfile: bool) -> Result<Output> {
        let shown = path.display();
        if opts.allow_stdout && path == Path::new("-") {
            if opts.regular_only {
                return Err(Error::Output(
                    "this output must be a file, not standard output".into(),
                ));
            }
            return Ok(Output {
                path: path.to_path_buf(),
                sink: Sink::Stdout(io::stdout()),
            });
        }
        let Some(name) = path.file_name() else {
            return Err(Error::Output(format!(
                "the output {shown} does not name a file"
            )));
        };
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        check_not_inside_inputs(path, &dir_path, &opts.inputs)?;
        let existing = match std::fs::symlink_metadata(path) {
            Ok(md) => Some(md),
            // A missing directory is reported when it is opened, below.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                None
            }
            Err(e) => return Err(Error::io_path("cannot examine the output", path, e)),
        };
        let mut replace = false;
        if let Some(md) = existing {
            // What the destination is once any symbolic link is followed.
            let target = if md.file_type().is_symlink() {
                std::fs::metadata(path).ok()
            } else {
                Some(md.clone())
            };
            if let Some(t) = &target {
                check_not_an_input(path, t, &opts.inputs)?;
            }
            let ft = md.file_type();
            let streamable = |t: &std::fs::Metadata| {
                let ft = t.file_type();
                ft.is_char_device() || ft.is_fifo() || ft.is_socket()
            };
            if ft.is_dir() {
                return Err(Error::Output(format!("the output {shown} is a directory")));
            } else if ft.is_symlink() {
                match &target {
                    Some(t) if streamable(t) && !opts.regular_only => {
                        return Self::stream(path, t);
                    }
                    _ => {
                        let to = std::fs::read_link(path)
                            .map(|t| t.display().to_string())
                            .unwrap_or_default();
                        return Err(Error::Output(format!(
                            "the output {shown} is a symbolic link (to {to}); h4fs does not \
                             write files through links: give the target's own path{}",
                            if opts.allow_stdout {
                                ", or -o - for standard output"
                            } else {
                                ""
                            }
                        )));
                    }
                }
            } else if streamable(&md) || (ft.is_block_device() && opts.force) {
                if opts.regular_only {
                    return Err(Error::Output(format!(
                        "the output {shown} is not a regular file; this command writes a file"
                    )));
                }
                return Self::stream(path, &md);
            } else if ft.is_block_device() {
                return Err(Error::Output(format!(
                    "the output {shown} is a block device; refusing to write to it{}",
                    if opts.force_flag {
                        " (pass --force to write the bytes onto the device)"
                    } else {
                        ""
                    }
                )));
            } else if !opts.force {
                return Err(refuse_existing(path, opts.force_flag));
            }
            replace = true;
        }
        let dir = open_dir(&dir_path)?;
        let name = CString::new(name.as_bytes())
            .map_err(|_| Error::Output(format!("the output {shown} has a NUL byte in its name")))?;
        let unnamed = if tmpfile {
            open_tmpfile(&dir, opts.mode)
        } else {
            Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
        };
        let (file, temp) = match unnamed {
            Ok(f) => (f, None),
            Err(e) if lacks_tmpfile(&e) => {
                remove_stale_temps(&dir, &dir_path);
                let (f, t) = create_named_temp(&dir, opts.mode).map_err(|e| {
                    Error::io_path("cannot create a temporary file in", &dir_path, e)
                })?;
                (f, Some(t))
            }
            Err(e) => {
                return Err(Error::io_path(
                    "cannot create a temporary file in",
                    &dir_path,
                    e,
                ));
            }
        };
        Ok(Output {
            path: path.to_path_buf(),
            sink: Sink::File(Pending {
                file,
                dir,
                dir_path,
                name,
                replace,
                temp,
            }),
        })
    }

    fn stream(path: &Path, md: &std::fs::Metadata) -> Result<Output> {
        let sink: Box<dyn Write + Send> = if md.file_type().is_socket() {
            Box::new(
                UnixStream::connect(path)
                    .map_err(|e| Error::io_path("cannot connect to the output socket", path, e))?,
            )
        } else {
            // No O_CREAT, no O_TRUNC: the destination is written as it is.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(path)
                .map_err(|e| Error::io_path("cannot open the output", path, e))?;
            let now = f
                .metadata()
                .map_err(|e| Error::io_path("cannot examine the output", path, e))?;
            if now.file_type().is_file() || now.file_type().is_dir() {
                return Err(Error::Changed(format!(
                    "the output {} changed while it was being opened; nothing was written",
                    path.display()
                )));
            }
            Box::new(f)
        };
        Ok(Output {
            path: path.to_path_buf(),
            sink: Sink::Stream(sink),
        })
    }

    /// The destination as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file being written, when the output is a regular file (for writing at
    /// offsets and reading back before [`Output::commit`]).
    pub fn file(&self) -> Option<&File> {
        match &self.sink {
            Sink::File(p) => Some(&p.file),
            _ => None,
        }
    }

    /// Finish: flush a stream; sync a file and put it in place.
    pub fn commit(self) -> Result<()> {
        match self.sink {
            Sink::Stdout(mut s) => s
                .flush()
                .map_err(|e| Error::io("writing to standard output", e)),
            Sink::Stream(mut s) => s
                .flush()
                .map_err(|e| Error::io_path("writing to", &self.path, e)),
            Sink::File(p) => p.commit(&self.path),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Stdout(s) => s.write(buf),
            Sink::Stream(s) => s.write(buf),
            Sink::File(p) => p.file.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Stdout(s) => s.flush(),
            Sink::Stream(s) => s.flush(),
            Sink::File(p) => p.file.flush(),
        }
    }
}

impl Pending {
    fn commit(mut self, path: &Path) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io_path("cannot sync", path, e))?;
        if self.replace {
            // A temporary name, then an atomic rename over the destination.
            if self.temp.is_none() {
                self.temp =
                    Some(link_tmpfile_named(&self.file, &self.dir).map_err(|e| {
                        Error::io_path("cannot link the output in", &self.dir_path, e)
                    })?);
            }
            let temp = self.temp.as_ref().expect("named above");
            match fstatat_nofollow(&self.dir, &self.name) {
                Ok(Some(m)) if m.st_mode & libc::S_IFMT != libc::S_IFREG => {
                    return Err(Error::Changed(format!(
                        "the output {} was replaced by something that is not a regular file \
                         while h4fs wrote; nothing was changed",
                        path.display()
                    )));
                }
                Ok(_) => {}
                Err(e) => return Err(Error::io_path("cannot examine the output", path, e)),
            }
            // SAFETY: both names are NUL-terminated and both fds are open directories.
            let r = unsafe {
                libc::renameat(
                    self.dir.as_raw_fd(),
                    temp.name.as_ptr(),
                    self.dir.as_raw_fd(),
                    self.name.as_ptr(),
                )
            };
            if r != 0 {
                return Err(Error::io_path(
                    "cannot move the output into place at",
                    path,
                    io::Error::last_os_error(),
                ));
            }
            self.temp.take().expect("named above").forget();
        } else {
            let linked = match &self.temp {
                None => link_tmpfile(&self.file, &self.dir, &self.name),
                Some(t) => rename_noreplace(&self.dir, &t.name, &self.name),
            };
            match linked {
                Ok(()) => {
                    if let Some(t) = self.temp.take() {
                        t.forget();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(Error::Changed(format!(
                        "the output {} appeared while h4fs wrote; it was not replaced",
                        path.display()
                    )));
                }
                Err(e) => {
                    return Err(Error::io_path(
                        "cannot move the output into place at",
                        path,
                        e,
                    ));
                }
            }
        }
        self.dir
            .as_fd_file()
            .sync_all()
            .map_err(|e| Error::io_path("cannot sync the directory", &self.dir_path, e))
    }
}

trait DirSync {
    fn as_fd_file(&self) -> std::mem::ManuallyDrop<File>;
}

impl DirSync for OwnedFd {
    /// A `File` view of the directory fd, for `fsync`, that does not close it.
    fn as_fd_file(&self) -> std::mem::ManuallyDrop<File> {
        // SAFETY: the fd stays open for as long as `self`; ManuallyDrop never closes it.
        std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(self.as_raw_fd()) })
    }
}

fn refuse_existing(path: &Path, force_flag: bool) -> Error {
    let what = sniff(path);
    let force = if force_flag {
        "pass --force to replace it"
    } else {
        "remove it first or choose another name"
    };
    match what {
        Some(kind) => Error::Output(format!(
            "the output {} already exists and is {kind}: did you swap the input and the \
             output? Refusing to overwrite it ({force})",
            path.display()
        )),
        None => Error::Output(format!(
            "the output {} already exists; refusing to overwrite it ({force})",
            path.display()
        )),
    }
}

/// What an existing file looks like, for the "swapped arguments" hint.
fn sniff(path: &Path) -> Option<&'static str> {
    use std::io::Read;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let mut head = [0u8; 189];
    let mut n = 0;
    let mut r = f.take(head.len() as u64);
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let h = &head[..n];
    let at = |i: usize, s: &[u8]| h.len() >= i + s.len() && &h[i..i + s.len()] == s;
    if at(0, b"H4MK") {
        Some("an H4MK container")
    } else if at(4, b"ftyp") {
        Some("an MP4/QuickTime media file")
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("a Matroska/WebM media file")
    } else if h.len() == 189 && h[0] == 0x47 && h[188] == 0x47 {
        Some("an MPEG-TS media file")
    } else if at(0, b"RIFF") {
        Some("a RIFF (AVI/WAV) media file")
    } else if at(0, b"OggS") || at(0, b"fLaC") || at(0, b"ID3") {
        Some("an audio file")
    } else if at(0, &[0, 0, 1, 0xBA]) || at(0, &[0, 0, 0, 1]) {
        Some("an MPEG media file")
    } else {
        None
    }
}

fn check_not_an_input(out: &Path, md: &std::fs::Metadata, inputs: &[PathBuf]) -> Result<()> {
    for input in inputs {
        if let Ok(i) = std::fs::metadata(input)
            && i.dev() == md.dev()
            && i.ino() == md.ino()
        {
            return Err(Error::Output(format!(
                "the output {} is the input {} itself; refusing to overwrite an input",
                out.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// Refuse an output whose directory is, or lies below, an input directory.
fn check_not_inside_inputs(out: &Path, dir: &Path, inputs: &[PathBuf]) -> Result<()> {
    let dirs: Vec<(&PathBuf, std::fs::Metadata)> = inputs
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| (p, m)))
        .filter(|(_, m)| m.is_dir())
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    let Ok(real) = std::fs::canonicalize(dir) else {
        return Ok(()); // opening the directory fails later, with its own message
    };
    for anc in real.ancestors() {
        let Ok(m) = std::fs::metadata(anc) else {
            continue;
        };
        for (p, d) in &dirs {
            if d.dev() == m.dev() && d.ino() == m.ino() {
                return Err(Error::Output(format!(
                    "the output {} lies inside the input directory {}; write it outside \
                     the directory being read",
                    out.display(),
                    p.display()
                )));
            }
        }
    }
    Ok(())
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a path"))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    let c = cstr(dir).map_err(|e| Error::io_path("cannot create a temporary file in", dir, e))?;
    // SAFETY: a NUL-terminated path; the returned fd is owned below.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
    .map_err(|e| Error::io_path("cannot create a temporary file in", dir, e))?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_tmpfile(dir: &OwnedFd, mode: u32) -> io::Result<File> {
    // SAFETY: "." is NUL-terminated; the returned fd is owned below.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Errors of `open(O_TMPFILE)` that mean the kernel or the filesystem lacks it.
fn lacks_tmpfile(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS)
    )
}

/// Give the unnamed file `file` the name `name` in `dir`; fails with `AlreadyExists`
/// rather than replace anything.
fn link_tmpfile(file: &File, dir: &OwnedFd, name: &CString) -> io::Result<()> {
    let proc = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL");
    // SAFETY: NUL-terminated paths and open fds.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::AlreadyExists {
        return Err(e);
    }
    // No /proc: AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH on older kernels).
    // SAFETY: as above.
    cvt(unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Link the unnamed file under a fresh temporary name (registered for cleanup).
fn link_tmpfile_named(file: &File, dir: &OwnedFd) -> io::Result<TempName> {
    lock(file)?;
    loop {
        let t = TempName::new(dir);
        match link_tmpfile(file, dir, &t.name) {
            Ok(()) => return Ok(t),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                t.forget();
                continue;
            }
            Err(e) => {
                t.forget();
                return Err(e);
            }
        }
    }
}

fn rename_noreplace(dir: &OwnedFd, from: &CString, to: &CString) -> io::Result<()> {
    let d = dir.as_raw_fd();
    // SAFETY: NUL-terminated names in an open directory.
    let r = unsafe { libc::renameat2(d, from.as_ptr(), d, to.as_ptr(), libc::RENAME_NOREPLACE) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(e);
    }
    // The filesystem has no RENAME_NOREPLACE: a hard link refuses to replace too.
    // SAFETY: as above.
    cvt(unsafe { libc::linkat(d, from.as_ptr(), d, to.as_ptr(), 0) })?;
    // SAFETY: as above.
    unsafe { libc::unlinkat(d, from.as_ptr(), 0) };
    Ok(())
}

fn fstatat_nofollow(dir: &OwnedFd, name: &CString) -> io::Result<Option<libc::stat>> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated name, open directory, a valid out pointer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        return Ok(Some(st));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(e)
    }
}

fn lock(file: &File) -> io::Result<()> {
    // SAFETY: flock on an open fd.
    cvt(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }).map(drop)
}

const TEMP_PREFIX: &str = ".h4fs-out-";
const TEMP_SUFFIX: &str = ".tmp";

/// Create a named temporary file in `dir`, locked and registered for cleanup.
fn create_named_temp(dir: &OwnedFd, mode: u32) -> io::Result<(File, TempName)> {
    loop {
        let t = TempName::new(dir);
        // SAFETY: NUL-terminated name in an open directory; the fd is owned below.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                t.name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            t.forget();
            if e.kind() == io::ErrorKind::AlreadyExists {
                continue;
            }
            return Err(e);
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let f = unsafe { File::from_raw_fd(fd) };
        lock(&f)?;
        // Another run's cleanup may have taken it between create and lock.
        if f.metadata()?.nlink() == 0 {
            t.forget();
            continue;
        }
        return Ok((f, t));
    }
}

/// Remove `.h4fs-out-*.tmp` files whose writer is gone (no lock held on them).
fn remove_stale_temps(dir: &OwnedFd, dir_path: &Path) {
    let Ok(rd) = std::fs::read_dir(dir_path) else {
        return;
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let b = name.as_bytes();
        if !(b.starts_with(TEMP_PREFIX.as_bytes()) && b.ends_with(TEMP_SUFFIX.as_bytes())) {
            continue;
        }
        let Ok(c) = CString::new(b) else { continue };
        // SAFETY: NUL-terminated name in an open directory; the fd is owned below.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            continue;
        }
        // SAFETY: as above.
        let f = unsafe { File::from_raw_fd(fd) };
        if f.metadata().is_ok_and(|m| m.is_file()) && lock(&f).is_ok() {
            // SAFETY: as above.
            unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
        }
    }
}

/// A temporary name in a directory, unlinked on drop and by the signal handler.
struct TempName {
    name: CString,
    dir: RawFd,
    slot: usize,
}

/// Temporary names the signal handler removes. A slot holds a leaked `Registered`;
/// whoever swaps it out (the owner on drop, or the handler) owns it, so the handler
/// never reads freed memory.
struct Registered {
    dir: RawFd,
    name: CString,
}

const SLOTS: usize = 32;
static TEMPS: [AtomicPtr<Registered>; SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];

impl TempName {
    fn new(dir: &OwnedFd) -> TempName {
        install_handlers();
        let name = CString::new(format!(
            "{TEMP_PREFIX}{}-{:016x}{TEMP_SUFFIX}",
            std::process::id(),
            random()
        ))
        .expect("no NUL");
        let reg = Box::into_raw(Box::new(Registered {
            dir: dir.as_raw_fd(),
            name: name.clone(),
        }));
        let mut slot = SLOTS;
        for (i, s) in TEMPS.iter().enumerate() {
            if s.compare_exchange(
                std::ptr::null_mut(),
                reg,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
            {
                slot = i;
                break;
            }
        }
        if slot == SLOTS {
            // More live outputs than slots: this one is still removed on drop.
            // SAFETY: `reg` came from Box::into_raw above and was not shared.
            drop(unsafe { Box::from_raw(reg) });
        }
        TempName {
            name,
            dir: dir.as_raw_fd(),
            slot,
        }
    }

    /// Stop tracking the name (it was renamed into place, or never created).
    fn forget(mut self) {
        self.unregister();
        std::mem::forget(self);
    }

    fn unregister(&mut self) {
        if self.slot < SLOTS {
            let p = TEMPS[self.slot].swap(std::ptr::null_mut(), Ordering::SeqCst);
            if !p.is_null() {
                // SAFETY: the pointer came from Box::into_raw and we swapped it out.
                drop(unsafe { Box::from_raw(p) });
            }
            self.slot = SLOTS;
        }
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        self.unregister();
        // SAFETY: NUL-terminated name; `dir` is still open (Pending drops it later).
        unsafe { libc::unlinkat(self.dir, self.name.as_ptr(), 0) };
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // The temporary name must go while `dir` is open: drop it first.
        self.temp.take();
    }
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

extern "C" fn on_signal(sig: libc::c_int) {
    for s in &TEMPS {
        let p = s.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: we own `p` now (swapped out); unlinkat is async-signal-safe. The
            // allocation is leaked: freeing is not async-signal-safe, and the process
            // is about to end.
            unsafe { libc::unlinkat((*p).dir, (*p).name.as_ptr(), 0) };
        }
    }
    // SAFETY: restore the default action and deliver the signal again, so the process
    // ends as it would have without this handler.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Install [`on_signal`] for SIGINT, SIGTERM and SIGHUP where their action is the
/// default (an ignored signal, as under `nohup`, stays ignored).
fn install_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: sigaction with valid, zero-initialised structs.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                    || old.sa_sigaction != libc::SIG_DFL
                {
                    continue;
                }
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn opts() -> OutputOptions {
        OutputOptions::default()
    }

    /// Both ways of writing a file: unnamed (O_TMPFILE) and the named fallback.
    #[test]
    fn a_file_appears_only_complete_and_a_dropped_output_leaves_nothing() {
        for tmpfile in [true, false] {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("out.bin");
            let mut o = Output::create_with(&p, &opts(), tmpfile).unwrap();
            o.write_all(b"hello").unwrap();
            assert!(!p.exists(), "tmpfile={tmpfile}");
            o.commit().unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), b"hello");
            assert_eq!(names(d.path()), ["out.bin"], "tmpfile={tmpfile}");

            let q = d.path().join("dropped.bin");
            let mut o = Output::create_with(&q, &opts(), tmpfile).unwrap();
            o.write_all(b"partial").unwrap();
            drop(o);
            assert_eq!(names(d.path()), ["out.bin"], "tmpfile={tmpfile}");
        }
    }

    #[test]
    fn an_existing_file_is_replaced_only_when_allowed_and_never_one_that_appeared() {
        for tmpfile in [true, false] {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("out.bin");
            std::fs::write(&p, b"old").unwrap();
            let e = Output::create_with(&p, &opts(), tmpfile).unwrap_err();
            assert!(e.to_string().contains("already exists"), "{e}");
            assert!(e.to_string().contains("--force"), "{e}");
            let force = OutputOptions {
                force: true,
                ..opts()
            };
            let mut o = Output::create_with(&p, &force, tmpfile).unwrap();
            o.write_all(b"new").unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), b"old");
            o.commit().unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), b"new");
            assert_eq!(names(d.path()), ["out.bin"], "tmpfile={tmpfile}");

            // A file that appears while the output is written is not replaced.
            let q = d.path().join("late.bin");
            let mut o = Output::create_with(&q, &opts(), tmpfile).unwrap();
            o.write_all(b"mine").unwrap();
            std::fs::write(&q, b"theirs").unwrap();
            let e = o.commit().unwrap_err();
            assert!(e.to_string().contains("appeared"), "{e}");
            assert_eq!(std::fs::read(&q).unwrap(), b"theirs");
            assert_eq!(names(d.path()), ["late.bin", "out.bin"]);
        }
    }

    #[test]
    fn swapped_arguments_are_named() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("movie.h4mk");
        std::fs::write(&c, b"H4MK\0\x01\0\0rest").unwrap();
        let m = d.path().join("movie.mp4");
        std::fs::write(&m, b"\0\0\0\x20ftypisom\0\0\0\0").unwrap();
        for (p, kind) in [(&c, "an H4MK container"), (&m, "MP4")] {
            let e = Output::create(p, &opts()).unwrap_err().to_string();
            assert!(e.contains(kind) && e.contains("swap"), "{e}");
        }
    }

    #[test]
    fn inputs_and_input_directories_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in.bin");
        std::fs::write(&input, b"data").unwrap();
        let link = d.path().join("hard.bin");
        std::fs::hard_link(&input, &link).unwrap();
        let o = OutputOptions {
            force: true,
            inputs: vec![input.clone(), d.path().join("frames")],
            ..opts()
        };
        for p in [&input, &link] {
            let e = Output::create(p, &o).unwrap_err().to_string();
            assert!(e.contains("is the input"), "{e}");
        }
        std::fs::create_dir_all(d.path().join("frames/sub")).unwrap();
        for p in ["frames/out.h4mk", "frames/sub/out.h4mk", "frames/sub/../x"] {
            let e = Output::create(&d.path().join(p), &o)
                .unwrap_err()
                .to_string();
            assert!(e.contains("inside the input directory"), "{p}: {e}");
        }
        assert_eq!(std::fs::read(&input).unwrap(), b"data");
        assert_eq!(names(&d.path().join("frames")), ["sub"]);
    }

    #[test]
    fn links_are_followed_only_to_streams() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target.bin");
        std::fs::write(&target, b"keep").unwrap();
        let force = OutputOptions {
            force: true,
            ..opts()
        };
        for (name, to) in [("l1", target.as_path()), ("l2", Path::new("missing"))] {
            let l = d.path().join(name);
            std::os::unix::fs::symlink(to, &l).unwrap();
            let e = Output::create(&l, &force).unwrap_err().to_string();
            assert!(e.contains("symbolic link"), "{e}");
            assert!(std::fs::symlink_metadata(&l).unwrap().is_symlink());
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let null = d.path().join("null");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        let mut o = Output::create(&null, &opts()).unwrap();
        assert!(o.file().is_none());
        o.write_all(b"gone").unwrap();
        o.commit().unwrap();
        assert!(std::fs::symlink_metadata(&null).unwrap().is_symlink());
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
        let only_files = OutputOptions {
            regular_only: true,
            ..opts()
        };
        let e = Output::create(Path::new("/dev/null"), &only_files).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    /// Run by [`a_signal_removes_the_named_temp`] in a child process: write part of an
    /// output through a named temporary file, then receive a signal.
    #[test]
    #[ignore = "run by a_signal_removes_the_named_temp in a child process"]
    fn signalled_child() {
        let dir = std::env::var_os("H4FS_TEST_DIR").expect(
            "H4FS_TEST_DIR: this test runs only as the child of a_signal_removes_the_named_temp",
        );
        let sig: i32 = std::env::var("H4FS_TEST_SIGNAL").unwrap().parse().unwrap();
        // The signal's default action, whatever the test runner inherited (under
        // `nohup`, SIGHUP is ignored, and an ignored signal is left ignored).
        // SAFETY: setting a signal's action to its default is always sound.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        let mut o = Output::create_with(&Path::new(&dir).join("out"), &opts(), false).unwrap();
        o.write_all(&vec![7u8; 1 << 20]).unwrap();
        // SAFETY: raise is always safe to call.
        unsafe { libc::raise(sig) };
        unreachable!("signal {sig} did not end the process");
    }

    /// SIGINT, SIGTERM and SIGHUP remove the named temporary file of the fallback path
    /// (a child process, which dies of the signal); after SIGKILL, which no handler sees,
    /// the next run in the directory removes it.
    #[test]
    fn a_signal_removes_the_named_temp() {
        use std::os::unix::process::ExitStatusExt;
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGKILL] {
            let d = tempfile::tempdir().unwrap();
            let st = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "output::tests::signalled_child"])
                .env("H4FS_TEST_DIR", d.path())
                .env("H4FS_TEST_SIGNAL", sig.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert_eq!(st.signal(), Some(sig), "signal {sig}: {st}");
            if sig == libc::SIGKILL {
                let left = names(d.path());
                assert!(
                    left.len() == 1 && left[0].starts_with(TEMP_PREFIX),
                    "{left:?}"
                );
                drop(Output::create_with(&d.path().join("next"), &opts(), false).unwrap());
            }
            assert!(
                names(d.path()).is_empty(),
                "signal {sig}: {:?}",
                names(d.path())
            );
        }
    }

    /// Named temporary files of runs that died (no lock) are removed by the next run in
    /// the directory; those of live writers (locked) are left alone.
    #[test]
    fn stale_named_temps_are_removed_and_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let stale = d.path().join(".h4fs-out-1-dead.tmp");
        std::fs::write(&stale, b"partial").unwrap();
        let other = d.path().join(".h4fs-pack-x.tmp");
        std::fs::write(&other, b"not ours").unwrap();
        let live = Output::create_with(&d.path().join("a"), &opts(), false).unwrap();
        assert!(!stale.exists());
        assert!(other.exists());
        let live_names: Vec<String> = names(d.path())
            .into_iter()
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect();
        assert_eq!(live_names.len(), 1);
        let second = Output::create_with(&d.path().join("b"), &opts(), false).unwrap();
        assert!(
            d.path().join(&live_names[0]).exists(),
            "a live temp survives"
        );
        drop((live, second));
        assert_eq!(names(d.path()), [".h4fs-pack-x.tmp"]);
    }
}
