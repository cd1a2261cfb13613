//! What the operations of [`super::Fs`] answer: attributes, directory entries, open
//! flags, read data, extended attribute replies, `statfs` numbers.

use super::FsError;
use crate::blocks::Data;
use crate::reader::VerifiedBlock;
use std::sync::Arc;
use std::time::SystemTime;

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

impl From<Data> for ReadData {
    fn from(d: Data) -> ReadData {
        match d {
            Data::Block(b, lo, hi) => ReadData::Block(b, lo, hi),
            Data::Owned(v) => ReadData::Owned(v),
        }
    }
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
    pub(super) fn fit(value: Vec<u8>, size: u32) -> std::result::Result<XattrReply, FsError> {
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
