//! The library's one error type.
//!
//! Every variant carries what a user needs to act on it: which chunk or block, at which
//! byte offset of which file, and what was expected. The FUSE layer maps these to errno
//! in one exhaustive `match` (`fs::errno`), so adding a variant forces a decision there.

use std::io;

/// A four-byte chunk tag, printed as text when it is ASCII.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(pub [u8; 4]);

impl Tag {
    pub const CORE: Tag = Tag(*b"CORE");
    pub const SEEK: Tag = Tag(*b"SEEK");
    pub const META: Tag = Tag(*b"META");
    pub const SAFE: Tag = Tag(*b"SAFE");
    pub const VERI: Tag = Tag(*b"VERI");
    pub const TRAK: Tag = Tag(*b"TRAK");
    pub const TSEK: Tag = Tag(*b"TSEK");
    pub const NOTE: Tag = Tag(*b"NOTE");
    /// h4fs block index.
    pub const HIDX: Tag = Tag(*b"HIDX");
    /// h4fs fixed-size footer.
    pub const HFTR: Tag = Tag(*b"HFTR");
    /// h4fs encryption header.
    pub const HENC: Tag = Tag(*b"HENC");
    /// h4fs v2 BLAKE3 outboard (hash tree over the stored stream).
    pub const HB3T: Tag = Tag(*b"HB3T");
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic()) {
            f.write_str(std::str::from_utf8(&self.0).unwrap_or("????"))
        } else {
            write!(f, "0x{}", hex::encode(self.0))
        }
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tag({self})")
    }
}

/// Errors of the h4fs library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error; `context` names the action and the path. The OS error is part of
    /// the message and deliberately not a [`std::error::Error::source`], so a cause
    /// chain printed with `{:#}` says it once.
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },

    #[error("not an H4MK container: expected magic \"H4MK\" at offset 0, found {found:02x?}")]
    BadMagic { found: Vec<u8> },

    #[error("unsupported H4MK version {version} (layout {layout}) at offset {offset}")]
    UnsupportedVersion {
        layout: char,
        version: u32,
        offset: u64,
    },

    #[error(
        "truncated: {what} at offset {offset} needs {need} bytes, but the file ends at {file_len}"
    )]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        file_len: u64,
    },

    #[error(
        "chunk {tag} at offset {offset}: CRC-32 mismatch (stored {stored:08x}, computed {computed:08x})"
    )]
    CrcMismatch {
        tag: Tag,
        offset: u64,
        stored: u32,
        computed: u32,
    },

    #[error("chunk {tag} at offset {offset}: {msg}")]
    Chunk { tag: Tag, offset: u64, msg: String },

    #[error("invalid JSON in {tag} chunk at offset {offset}: {msg}")]
    Json { tag: Tag, offset: u64, msg: String },

    #[error(
        "VERI mismatch: the VERI chunk at offset {offset} records {expected}, the chunks before it hash to {computed}"
    )]
    VeriMismatch {
        offset: u64,
        expected: String,
        computed: String,
    },

    #[error(
        "structure root mismatch: footer at offset {offset} records {expected}, SEEK/META/SAFE/index hash to {computed}"
    )]
    RootMismatch {
        offset: u64,
        expected: String,
        computed: String,
    },

    #[error(
        "block {block} (chunk at offset {offset}): SHA-256 mismatch (index records {expected}, stored bytes hash to {computed})"
    )]
    BlockHash {
        block: u64,
        offset: u64,
        expected: String,
        computed: String,
    },

    #[error(
        "block {block} (chunk at offset {offset}): CRC-32 mismatch (stored {stored:08x}, computed {computed:08x})"
    )]
    BlockCrc {
        block: u64,
        offset: u64,
        stored: u32,
        computed: u32,
    },

    #[error("block {block} (chunk at offset {offset}): {msg}")]
    Block {
        block: u64,
        offset: u64,
        msg: String,
    },

    #[error("block index entry {block}: {msg}")]
    Index { block: u64, msg: String },

    #[error(
        "compression engine \"{engine}\" is not known to h4fs; refusing to guess (the stored bytes are still available raw)"
    )]
    UnknownEngine { engine: String },

    #[error("the container is encrypted ({cipher}); {what} needs the key")]
    Encrypted { cipher: String, what: String },

    /// The key given does not open this container (checked before any block is read).
    #[error("the key does not match this container{detail}")]
    WrongKey { detail: String },

    /// AES-GCM authentication of a block failed: its bytes were altered, it was moved
    /// from another position or container, or its index entry was edited.
    #[error("block {block} (chunk at offset {offset}): authentication failed ({why})")]
    BlockAuth {
        block: u64,
        offset: u64,
        why: String,
    },

    /// A key or shared-secret file that cannot be used. Never carries key bytes.
    #[error("key file {path}: {msg}")]
    KeyFile { path: String, msg: String },

    /// An argument or input h4fs refuses before writing anything: a pack option out of
    /// range, an index CSV or a directory that cannot be packed, a reserved META key, a
    /// key or secret that does not apply to this kind of container.
    #[error("{0}")]
    BadInput(String),

    /// A track or block number that the container does not have.
    #[error("{0}")]
    NotFound(String),

    /// The file is not a container at all (empty, or a directory).
    #[error("{0}")]
    NotContainer(String),

    /// An output h4fs refuses to write: it exists, is an input, a directory, a
    /// symbolic link, a device, or not a regular file where one is needed.
    #[error("{0}")]
    Output(String),

    /// A file changed while h4fs read or wrote it (an input that grew, shrank or was
    /// swapped, an output replaced under it); nothing was written.
    #[error("{0}")]
    Changed(String),

    /// Beyond what the format or a mount allows: a block or chunk too large, too many
    /// containers, tracks or blocks for one mount.
    #[error("{0}")]
    Limit(String),

    /// A state the library never produces (a broken invariant between its own parts),
    /// reported instead of a panic.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, cause: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause,
        }
    }

    pub(crate) fn io_path(action: &str, path: &std::path::Path, source: io::Error) -> Self {
        Error::io(format!("{action} {}", path.display()), source)
    }

    /// True when the error says the data is damaged or fails authentication, as opposed
    /// to a usage error or a missing capability.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            Error::CrcMismatch { .. }
                | Error::VeriMismatch { .. }
                | Error::RootMismatch { .. }
                | Error::BlockHash { .. }
                | Error::BlockCrc { .. }
                | Error::Block { .. }
                | Error::Chunk { .. }
                | Error::Json { .. }
                | Error::Truncated { .. }
                | Error::Index { .. }
                | Error::BlockAuth { .. }
        )
    }
}
