//! h4fs: H4MK media containers as ordinary directories.
//!
//! Layers, each importing only from those before it:
//!
//! ```text
//! format, output, time  ->  integrity, engine, crypto  ->  source, remote  ->  reader, writer, rekey, verify  ->  blocks  ->  extract, fs  ->  fuse, serve  ->  cli
//! ```
//!
//! * [`mod@format`]: bytes <-> structs for the three layouts; no I/O.
//! * [`integrity`]: VERI, the structure root, block hashes.
//! * [`engine`]: compression engines (identity, geometric-reference).
//! * [`crypto`]: keys, per-block AES-256-GCM under per-container keys, and reading the
//!   reference's Living Cipher v3.
//! * [`remote`]: containers on S3 and HTTP(S): a [`source::ReadAt`] over range GETs.
//! * [`reader`]: [`reader::Archive`], a lazy view of any container, and the one read
//!   path that checks a block and alone builds a [`reader::VerifiedBlock`].
//! * [`blocks`]: the block layer: verified ranges of the served containers, what can be
//!   served (decided once per container), the LRU of verified blocks, single-flight
//!   loads, paired hashing, per-handle prefetch.
//! * [`fs`]: the mounted tree as plain Rust (no `fuser`); [`fuse`]: the adapter and
//!   [`fuse::session`] (mounting, serving, unmounting).
//! * [`output`]: every file h4fs writes: atomic, never replacing a device, an input or
//!   (without `force`) an existing file.
//! * [`writer`]: the deterministic packer.
//! * [`naming`]: recorded file names and the source's extension, checked before a
//!   mount shows them.
//! * [`rekey`]: key rotation of encrypted containers.
//! * [`time`]: times as people type them (`12.5s`, `1500ms`, `00:01:30.5`).
//! * [`serve`]: the filesystem core over HTTP (`h4fs serve`), beside the FUSE adapter.
//! * [`cli`]: the `h4fs` command.

pub mod blocks;
pub mod cli;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod extract;
pub mod format;
pub mod fs;
pub mod fuse;
pub mod input;
pub mod integrity;
pub mod naming;
pub mod output;
pub mod reader;
pub mod rekey;
pub mod remote;
pub mod serve;
pub mod source;
pub mod time;
pub mod verify;
pub mod writer;

pub use error::{Error, Result};
pub use reader::Archive;
