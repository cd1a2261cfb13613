//! Opening files that must be files: containers, pack inputs, index and metadata files,
//! key files.
//!
//! A FIFO given where a file is required would block `open(2)` until a writer appears,
//! forever with no timeout; a device or socket is no container either. So the path is
//! `stat`ed first and anything other than a regular file or a directory is refused,
//! naming the path and what it is, without opening it (opening a device can have side
//! effects). What passed is opened with `O_NONBLOCK | O_CLOEXEC`, so a path swapped for
//! a FIFO in between cannot block either, and checked again on the open descriptor
//! (`fstat`) before `O_NONBLOCK` is cleared. Directories are returned as they are: each
//! caller words its own message for them. Only `std` and `libc` are used here, so every
//! layer may call it.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a non-regular, non-directory file is, for messages.
fn kind(md: &Metadata) -> Option<&'static str> {
    let t = md.file_type();
    if t.is_file() || t.is_dir() {
        None
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else {
        Some("not a regular file")
    }
}

fn refuse(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is {what}, not a regular file", path.display()),
    )
}

/// Open `path` for reading, refusing FIFOs, sockets and devices (see the module
/// documentation); never blocks on the file's type. Returns the file and its metadata
/// (from the open descriptor). Directories are returned too: check `is_dir()`.
pub fn open_file(path: &Path) -> io::Result<(File, Metadata)> {
    if let Some(what) = kind(&std::fs::metadata(path)?) {
        return Err(refuse(path, what));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let md = f.metadata()?;
    if let Some(what) = kind(&md) {
        return Err(refuse(path, what));
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: reading and setting the status flags of a descriptor we own.
    let cleared = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !cleared {
        return Err(io::Error::last_os_error());
    }
    Ok((f, md))
}

/// Read a whole text file that must be a regular file (index CSV, META JSON).
pub fn read_to_string(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let (mut f, md) = open_file(path)?;
    if md.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            format!("{} is a directory, not a file", path.display()),
        ));
    }
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    fn mkfifo(p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path in a temp dir.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn fifos_sockets_and_devices_are_refused_by_name_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("x.h4mk");
        mkfifo(&fifo);
        let e = open_file(&fifo).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            e.to_string().contains("x.h4mk is a FIFO (named pipe)"),
            "{e}"
        );
        let sock = d.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(
            open_file(&sock)
                .unwrap_err()
                .to_string()
                .contains("a socket")
        );
        let e = open_file(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        assert!(read_to_string(&fifo).is_err());
    }

    #[test]
    fn regular_files_and_directories_open_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let (f, md) = open_file(&p).unwrap();
        assert_eq!(md.len(), 3);
        // SAFETY: F_GETFL on a descriptor we own.
        let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0, "O_NONBLOCK cleared");
        assert_eq!(read_to_string(&p).unwrap(), "abc");
        assert!(open_file(d.path()).unwrap().1.is_dir());
        assert!(read_to_string(d.path()).is_err());
        assert_eq!(
            open_file(&d.path().join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
