//! Errors of the filesystem core and the one place they become errno values.
//!
//! [`FsError::errno`] is an exhaustive `match` over [`FsError`] and over the library's
//! [`Error`], with no catch-all arm: a new variant anywhere fails to compile until
//! someone decides what a reader sees for it.

use crate::blocks::ReadError;
use crate::error::Error;

/// Why a filesystem operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such name, inode or by-pts time.
    #[error("no such file or directory")]
    NotFound,
    /// A directory operation on something that is not a directory.
    #[error("not a directory")]
    NotDir,
    /// A file operation on a directory.
    #[error("is a directory")]
    IsDir,
    /// Anything that would modify the tree.
    #[error("read-only file system")]
    ReadOnly,
    /// readlink on something that is not a symlink.
    #[error("not a symbolic link")]
    NotSymlink,
    /// No extended attribute of that name.
    #[error("no such extended attribute")]
    NoXattr,
    /// The caller's buffer is too small for the attribute or list.
    #[error("buffer too small")]
    Range,
    /// A file handle the core did not hand out.
    #[error("bad file handle {0}")]
    BadHandle(u64),
    /// The container's whole-file VERI did not match, so no data of it is served.
    #[error("{path}: whole-file VERI mismatch ({detail}); data reads are refused")]
    VeriFailed { path: String, detail: String },
    /// A library error while reading or verifying (block hash, CRC, truncation, unknown
    /// engine, encryption without key, I/O).
    #[error(transparent)]
    Archive(#[from] Error),
}

impl From<ReadError> for FsError {
    fn from(e: ReadError) -> FsError {
        match e {
            ReadError::VeriFailed { path, detail } => FsError::VeriFailed { path, detail },
            ReadError::Archive(e) => FsError::Archive(e),
        }
    }
}

impl FsError {
    /// The errno a reader sees.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotSymlink => libc::EINVAL,
            FsError::NoXattr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::VeriFailed { .. } => libc::EIO,
            FsError::Archive(e) => library_errno(e),
        }
    }
}

/// Errno for a library error met while serving data.
fn library_errno(e: &Error) -> i32 {
    match e {
        Error::Io { .. } => libc::EIO,
        // Damaged or unreadable structure or block: EIO, never bytes.
        Error::BadMagic { .. }
        | Error::UnsupportedVersion { .. }
        | Error::Truncated { .. }
        | Error::CrcMismatch { .. }
        | Error::Chunk { .. }
        | Error::Json { .. }
        | Error::VeriMismatch { .. }
        | Error::RootMismatch { .. }
        | Error::BlockHash { .. }
        | Error::BlockCrc { .. }
        | Error::Block { .. }
        | Error::Index { .. } => libc::EIO,
        // h4fs will not guess how to decode: the data cannot be produced.
        Error::UnknownEngine { .. } => libc::EIO,
        // Needs a key the mount does not have.
        Error::Encrypted { .. } => libc::EACCES,
        // AES-GCM rejected a block: an integrity failure like any other.
        Error::BlockAuth { .. } => libc::EIO,
        // A key that does not open the container, or an unusable key file.
        Error::WrongKey { .. } | Error::KeyFile { .. } => libc::EACCES,
        // Refusals of arguments, outputs and sizes, a file changed under h4fs, a broken
        // invariant: the data cannot be produced.
        Error::BadInput(_)
        | Error::NotFound(_)
        | Error::NotContainer(_)
        | Error::Output(_)
        | Error::Changed(_)
        | Error::Limit(_)
        | Error::Internal(_) => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        assert_eq!(FsError::NotFound.errno(), libc::ENOENT);
        let hash = Error::BlockHash {
            block: 3,
            offset: 100,
            expected: "a".into(),
            computed: "b".into(),
        };
        assert_eq!(FsError::from(hash).errno(), libc::EIO);
        let enc = Error::Encrypted {
            cipher: "c".into(),
            what: "w".into(),
        };
        assert_eq!(FsError::from(enc).errno(), libc::EACCES);
        let eng = Error::UnknownEngine { engine: "x".into() };
        assert_eq!(FsError::from(eng).errno(), libc::EIO);
    }
}
