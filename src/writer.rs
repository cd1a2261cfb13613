//! The deterministic packer.
//!
//! Output is a function of the input bytes, the block plan (sizes, pts, keyframes) and
//! the options, nothing else: no wall-clock time (unless the caller passes `created`),
//! no thread-count dependence (blocks are prepared in parallel but written in order),
//! no host names or absolute paths (only the source's file name is recorded).
//!
//! Pipeline: a reader thread, a writer thread and (with more than two threads) helpers,
//! around one bounded queue of batches of blocks:
//!
//! ```text
//! reader: read blocks, hash the source stream, queue the batch ──┐
//!                                                                ▼
//!   queue of batches (oldest first): Raw → Claimed → Ready(encoded, SHA-256, CRC-32)
//!                                                                │
//! writer: take the oldest batch (preparing it itself if nobody ◀┘
//!         has), write its chunks in order, hash VERI, build the index
//! ```
//!
//! A batch is prepared (encoded, sealed, hashed) by whichever thread gets to it: the
//! writer takes the oldest, while the reader (when the queue is full, and after the end
//! of the input) and any helper threads take the newest. On two cores that keeps both
//! busy without more runnable threads than cores: the two serial hashes (source, VERI)
//! each own a thread and the per-block hashes fill the gaps. Output does not depend on
//! which thread prepared what.
//!
//! [`pack`] and [`pack_into`] write through [`crate::output`]: the container appears only
//! after `finish` succeeded, so a failed or interrupted pack leaves nothing behind.

use crate::crypto::{
    self, BlockContext, ContainerCrypto, ContentDigest, ContentHasher, Henc, MasterKey,
};
use crate::engine::Engine;
use crate::error::{Error, Result, Tag};
use crate::format::h4fs::{self as hf, Footer, IndexEntry};
use crate::format::layout_a::{self as la, ChunkHeader, SeekEntry};
use crate::integrity::{self, VeriHasher};
use crate::output::{Output, OutputOptions};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Largest decoded block h4fs writes (see [`crate::engine::MAX_BLOCK`]).
pub const MAX_BLOCK: u64 = crate::engine::MAX_BLOCK;

/// The reference's default SAFE scopes.
pub fn default_safe() -> Value {
    json!({
        "scope": "container+transport-only",
        "no_video_synthesis": true,
        "no_pixel_semantics": true,
        "no_visual_ml": true,
    })
}

/// META keys h4fs sets itself; users cannot override them.
pub const RESERVED_META_KEYS: &[&str] = &[
    "compression",
    "encryption",
    "source",
    "block_count",
    "duration_us",
    "start_time_us",
    "h4fs",
    "block_size",
    "fps_hint",
    "gop",
    "masked",
    "names",
];

/// Timing of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMeta {
    pub pts_us: u64,
    pub keyframe: bool,
}

/// A block ready to be written: encoded and (unless `sha256` is `None`, which leaves
/// it to the writer to hash alongside VERI) hashed.
struct Prepared {
    stored: Vec<u8>,
    sha256: Option<[u8; 32]>,
    crc: u32,
    decoded_len: u64,
    meta: BlockMeta,
}

/// Encode `data` and, in an encrypted container, seal it as block number `seal.1`;
/// with `hash`, also take the SHA-256 of the stored bytes.
fn prepare(
    engine: Engine,
    data: Vec<u8>,
    meta: BlockMeta,
    seal: Option<(&ContainerCrypto, u64)>,
    hash: bool,
) -> Result<Prepared> {
    let decoded_len = data.len() as u64;
    let mut stored = match engine {
        Engine::Identity => data,
        e => {
            let mut v = Vec::new();
            e.encode_into(&data, &mut v);
            v
        }
    };
    if let Some((c, index)) = seal {
        let ctx = BlockContext {
            index,
            track: 0,
            pts_us: meta.pts_us,
            keyframe: meta.keyframe,
            decoded_len,
            chunk_offset: 0,
        };
        c.seal_in_place(&ctx, &mut stored)?;
    }
    Ok(Prepared {
        sha256: hash.then(|| integrity::sha256(&stored)),
        crc: crc32fast::hash(&stored),
        stored,
        decoded_len,
        meta,
    })
}

/// Writes an h4fs container to any `Write`, one block at a time, in order.
pub struct Writer<W: Write> {
    out: W,
    pos: u64,
    veri: VeriHasher,
    engine: Engine,
    index: Vec<u8>,
    count: u64,
    stream: u64,
    seek: Vec<SeekEntry>,
    last_pts: Option<u64>,
    first_pts: Option<u64>,
    /// Block sealing and the HENC record, for an encrypted container.
    crypto: Option<(ContainerCrypto, Henc)>,
}

/// What [`Writer::finish`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSummary {
    pub blocks: u64,
    pub keyframes: u64,
    pub stream_len: u64,
    pub file_len: u64,
    pub root: [u8; 32],
    pub veri: [u8; 32],
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, engine: Engine) -> Result<Self> {
        out.write_all(&la::header())
            .map_err(|e| Error::io("writing the container header", e))?;
        Ok(Writer {
            out,
            pos: la::HEADER_LEN as u64,
            veri: VeriHasher::new(),
            engine,
            index: hf::index_header(0).to_vec(),
            count: 0,
            stream: 0,
            seek: Vec::new(),
            last_pts: None,
            first_pts: None,
            crypto: None,
        })
    }

    /// A writer that encrypts every block under `key` (see [`crate::crypto::container`]).
    /// `content` must describe exactly the blocks that will be added — source stream
    /// hash, engine and plan, built with [`ContentHasher`] — since the per-container key
    /// and so the uniqueness of nonces rest on it.
    pub fn new_encrypted(
        out: W,
        engine: Engine,
        key: &MasterKey,
        content: &ContentDigest,
    ) -> Result<Self> {
        let mut w = Writer::new(out, engine)?;
        w.crypto = Some(ContainerCrypto::new(key, content));
        Ok(w)
    }

    fn write_chunk_parts(&mut self, header: &[u8; 12], payload: &[u8]) -> Result<()> {
        self.veri.update(header);
        self.veri.update(payload);
        self.write_unhashed(header, payload)
    }

    /// Write a chunk whose bytes the caller has already added to VERI.
    fn write_unhashed(&mut self, header: &[u8; 12], payload: &[u8]) -> Result<()> {
        self.out
            .write_all(header)
            .and_then(|_| self.out.write_all(payload))
            .map_err(|e| Error::io(format!("writing chunk at offset {}", self.pos), e))?;
        self.pos += 12 + payload.len() as u64;
        Ok(())
    }

    fn write_chunk(&mut self, tag: Tag, payload: &[u8]) -> Result<u64> {
        let at = self.pos;
        let len = u32::try_from(payload.len()).map_err(|_| {
            Error::Invalid(format!(
                "{tag} chunk of {} bytes exceeds 4 GiB",
                payload.len()
            ))
        })?;
        let h = ChunkHeader::encode_with_crc(tag, len, crc32fast::hash(payload));
        self.write_chunk_parts(&h, payload)?;
        Ok(at)
    }

    /// Encode and append one block.
    pub fn add_block(&mut self, data: &[u8], meta: BlockMeta) -> Result<()> {
        let seal = self.crypto.as_ref().map(|(c, _)| (c, self.count));
        let p = prepare(self.engine, data.to_vec(), meta, seal, false)?;
        self.add_prepared(p)
    }

    fn add_prepared(&mut self, p: Prepared) -> Result<()> {
        let n = self.count;
        if p.decoded_len > MAX_BLOCK {
            return Err(Error::Invalid(format!(
                "block {n} is {} bytes; the largest block h4fs writes is {MAX_BLOCK} bytes",
                p.decoded_len
            )));
        }
        if let Some(last) = self.last_pts
            && p.meta.pts_us < last
        {
            return Err(Error::Invalid(format!(
                "block {n} has pts {} us, before the previous block's {last} us: pts must not decrease",
                p.meta.pts_us
            )));
        }
        if n == 0 && !p.meta.keyframe {
            return Err(Error::Invalid(
                "block 0 is not a keyframe: a stream must start with one".into(),
            ));
        }
        let stored_len = u32::try_from(p.stored.len())
            .map_err(|_| Error::Invalid(format!("block {n} encodes to more than 4 GiB")))?;
        let chunk_offset = self.pos;
        let h = ChunkHeader::encode_with_crc(Tag::CORE, stored_len, p.crc);
        let sha256 = match p.sha256 {
            Some(sha) => {
                self.write_chunk_parts(&h, &p.stored)?;
                sha
            }
            None => {
                // The block's own hash and VERI over it, in lockstep (integrity::lanes).
                let mut block = integrity::lanes::Sha256::new();
                self.veri.update(&h);
                self.veri.update2(&p.stored, &mut block, &p.stored);
                self.write_unhashed(&h, &p.stored)?;
                block.finalize()
            }
        };
        IndexEntry {
            chunk_offset,
            stored_len,
            decoded_len: p.decoded_len as u32,
            stream_offset: self.stream,
            pts_us: p.meta.pts_us,
            track: 0,
            flags: if p.meta.keyframe {
                hf::FLAG_KEYFRAME
            } else {
                0
            },
            sha256,
        }
        .encode(&mut self.index);
        if p.meta.keyframe {
            self.seek.push(SeekEntry {
                pts_us: p.meta.pts_us,
                offset: self.stream,
            });
        }
        self.first_pts.get_or_insert(p.meta.pts_us);
        self.last_pts = Some(p.meta.pts_us);
        self.stream += p.decoded_len;
        self.count += 1;
        Ok(())
    }

    pub fn blocks(&self) -> u64 {
        self.count
    }

    pub fn stream_len(&self) -> u64 {
        self.stream
    }

    /// Write SEEK, META (with the compression section appended), SAFE, index, footer and
    /// VERI. `meta` holds the caller's keys in the order they should appear.
    pub fn finish(
        mut self,
        mut meta: Map<String, Value>,
        safe: &Value,
    ) -> Result<(W, PackSummary)> {
        meta.insert("compression".into(), self.engine.compression_meta());
        if self.crypto.is_some() {
            meta.insert(
                "encryption".into(),
                json!({"cipher": crypto::container::CIPHER, "mode": crypto::container::MODE}),
            );
        }
        let meta_bytes = serde_json::to_vec(&Value::Object(meta)).expect("JSON values serialize");
        let safe_bytes = serde_json::to_vec(safe).expect("JSON values serialize");
        let seek_bytes = la::encode_seek(&self.seek);
        let seek_offset = self.write_chunk(Tag::SEEK, &seek_bytes)?;
        let meta_offset = self.write_chunk(Tag::META, &meta_bytes)?;
        let safe_offset = self.write_chunk(Tag::SAFE, &safe_bytes)?;
        let mut index = std::mem::take(&mut self.index);
        index[..hf::INDEX_HEADER_LEN].copy_from_slice(&hf::index_header(self.count));
        let digest = integrity::index_digest(&index);
        let henc_bytes = match &self.crypto {
            Some((c, henc)) => {
                let structure = crypto::container::structure_digest(
                    hf::FOOTER_FLAG_ENCRYPTED,
                    self.count,
                    self.stream,
                    &seek_bytes,
                    &meta_bytes,
                    &safe_bytes,
                    &index,
                );
                let mut henc = henc.clone();
                c.seal_structure(&mut henc, &structure);
                henc.to_bytes()
            }
            None => Vec::new(),
        };
        let henc_offset = match self.crypto {
            Some(_) => self.write_chunk(Tag::HENC, &henc_bytes)?,
            None => 0,
        };
        let index_offset = self.write_chunk(Tag::HIDX, &index)?;
        let mut footer = Footer {
            flags: match self.crypto {
                Some(_) => hf::FOOTER_FLAG_ENCRYPTED,
                None => 0,
            },
            seek_offset,
            meta_offset,
            safe_offset,
            index_offset,
            henc_offset,
            block_count: self.count,
            stream_len: self.stream,
            root: [0; 32],
        };
        footer.root = integrity::root_hash(
            &footer.prefix(),
            &seek_bytes,
            &meta_bytes,
            &safe_bytes,
            &henc_bytes,
            &digest,
        );
        self.write_chunk(Tag::HFTR, &footer.encode())?;
        let veri = self.veri.clone().finish();
        self.write_chunk(Tag::VERI, &veri)?;
        self.out
            .flush()
            .map_err(|e| Error::io("flushing the container", e))?;
        let summary = PackSummary {
            blocks: self.count,
            keyframes: self.seek.len() as u64,
            stream_len: self.stream,
            file_len: self.pos,
            root: footer.root,
            veri,
        };
        Ok((self.out, summary))
    }
}

/// One row of a block index CSV: a byte range of the input and its timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRow {
    pub offset: u64,
    pub size: u64,
    pub pts_us: u64,
    pub keyframe: bool,
    pub duration_us: Option<u64>,
}

/// Parse a block index CSV: a header line naming at least `offset,size,pts_us,keyframe`
/// (optionally `duration_us`), then one row per block. Rows must tile the input: each
/// starts where the previous ended, the first at 0.
pub fn parse_index_csv(text: &str, origin: &str) -> Result<Vec<IndexRow>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let (_, header) = lines
        .next()
        .ok_or_else(|| Error::Invalid(format!("{origin}: empty index, expected a header line")))?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(c_off), Some(c_size), Some(c_pts), Some(c_key)) =
        (col("offset"), col("size"), col("pts_us"), col("keyframe"))
    else {
        return Err(Error::Invalid(format!(
            "{origin}:1: header must name offset,size,pts_us,keyframe (found \"{header}\")"
        )));
    };
    let c_dur = col("duration_us");
    let mut rows: Vec<IndexRow> = Vec::new();
    for (i, line) in lines {
        let lineno = i + 1;
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let num = |c: usize, name: &str| -> Result<u64> {
            let v = f.get(c).ok_or_else(|| {
                Error::Invalid(format!("{origin}:{lineno}: missing column {name}"))
            })?;
            v.parse::<u64>().map_err(|_| {
                Error::Invalid(format!(
                    "{origin}:{lineno}: {name} \"{v}\" is not a non-negative integer"
                ))
            })
        };
        let keyframe = match f.get(c_key).copied() {
            Some("1") | Some("true") | Some("K") => true,
            Some("0") | Some("false") | Some("") => false,
            other => {
                return Err(Error::Invalid(format!(
                    "{origin}:{lineno}: keyframe must be 1 or 0, found {:?}",
                    other.unwrap_or("nothing")
                )));
            }
        };
        let row = IndexRow {
            offset: num(c_off, "offset")?,
            size: num(c_size, "size")?,
            pts_us: num(c_pts, "pts_us")?,
            keyframe,
            duration_us: match c_dur {
                Some(c) if f.get(c).is_some_and(|v| !v.is_empty()) => Some(num(c, "duration_us")?),
                _ => None,
            },
        };
        let want = rows.last().map_or(0, |r| r.offset + r.size);
        if row.offset != want {
            return Err(Error::Invalid(format!(
                "{origin}:{lineno}: block starts at {} but the previous block ended at {want}: rows must tile the input",
                row.offset
            )));
        }
        if row.size > MAX_BLOCK {
            return Err(Error::Invalid(format!(
                "{origin}:{lineno}: block of {} bytes exceeds the {MAX_BLOCK}-byte limit",
                row.size
            )));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The start time an index CSV records: a line `# start_time_us=N` (N a decimal
/// integer, may be negative; spaces around `=` allowed) before its header line.
/// `scripts/ffprobe-index.sh` writes it from the format's start time; block pts in the
/// CSV count from it. Other `#` lines are comments. `None` when there is no such line.
pub fn index_csv_start_time(text: &str, origin: &str) -> Result<Option<i64>> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let Some(comment) = l.strip_prefix('#') else {
            break; // the header: properties come before it
        };
        let Some((key, value)) = comment.split_once('=') else {
            continue;
        };
        if key.trim() != "start_time_us" {
            continue;
        }
        let lineno = i + 1;
        if found.is_some() {
            return Err(Error::Invalid(format!(
                "{origin}:{lineno}: a second start_time_us line"
            )));
        }
        let v = value.trim();
        let n = v.parse::<i64>().map_err(|_| {
            Error::Invalid(format!(
                "{origin}:{lineno}: start_time_us \"{v}\" is not an integer (microseconds)"
            ))
        })?;
        found = Some(n);
    }
    Ok(found)
}

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

/// Options of a pack that are not about the input.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub engine: Engine,
    pub project: String,
    pub domain: String,
    /// Extra META keys, in order, appended after h4fs's own.
    pub meta_extra: Map<String, Value>,
    pub safe: Value,
    /// A creation time to record (never taken from the clock).
    pub created: Option<String>,
    /// Encrypt every block under this master key (AES-256-GCM, see [`crate::crypto`]).
    pub key: Option<MasterKey>,
    /// Where the media's own clock starts (META `start_time_us`; block pts count from
    /// it). From an index CSV's `# start_time_us=` line ([`index_csv_start_time`]),
    /// or from ffprobe for `pack --media`.
    pub start_time_us: Option<i64>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            engine: Engine::Identity,
            project: "h4fs".into(),
            domain: "video-transport".into(),
            meta_extra: Map::new(),
            safe: default_safe(),
            created: None,
            key: None,
            start_time_us: None,
        }
    }
}

/// Microseconds per frame as the reference computes it: `floor(1e6 / fps)`.
pub fn frame_us(fps: f64) -> Result<u64> {
    if !(fps.is_finite() && fps > 0.0) {
        return Err(Error::Invalid(format!(
            "fps must be a positive number, not {fps}"
        )));
    }
    Ok((1e6 / fps).floor() as u64)
}

fn fixed_meta(i: u64, frame: u64, gop: u64) -> BlockMeta {
    BlockMeta {
        pts_us: i.saturating_mul(frame),
        keyframe: i % gop == 0,
    }
}

/// A block source: yields blocks in order.
type BlockIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, BlockMeta)>> + Send + 'a>;

fn open_input(path: &Path) -> Result<(File, u64)> {
    let f = File::open(path).map_err(|e| Error::io_path("cannot open input", path, e))?;
    let md = f
        .metadata()
        .map_err(|e| Error::io_path("cannot stat input", path, e))?;
    if md.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is a directory; pass a file, or a directory with --fps for one block per file",
            path.display()
        )));
    }
    Ok((f, md.len()))
}

fn read_exact_block(f: &mut File, len: u64, path: &Path, offset: u64) -> Result<Vec<u8>> {
    // Room for the tag, so sealing in place does not reallocate.
    let mut buf = Vec::with_capacity(len as usize + crypto::container::TAG_LEN);
    buf.resize(len as usize, 0);
    f.read_exact(&mut buf).map_err(|e| {
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
        .map_err(|_| Error::Invalid(format!("{} has a NUL byte", dir.display())))?;
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
                return Err(Error::Invalid(format!(
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
                return Err(Error::Invalid(format!(
                    "{} is {}; pack takes regular files only",
                    p.display(),
                    kind_of(m)
                )));
            }
        }
        let len = st.st_size as u64;
        if len > MAX_BLOCK {
            return Err(Error::Invalid(format!(
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
                return Err(Error::Invalid(format!(
                    "{} became a symbolic link while it was packed; pack does not follow \
                     links out of the directory",
                    p.display()
                )));
            }
            return Err(Error::io_path("cannot open input", p, e));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let mut f = unsafe { File::from_raw_fd(fd) };
        let md = f
            .metadata()
            .map_err(|e| Error::io_path("cannot stat input", p, e))?;
        if !md.is_file() {
            return Err(Error::Invalid(format!(
                "{} is no longer a regular file; pack takes regular files only",
                p.display()
            )));
        }
        if md.len() != *len {
            return Err(Error::Invalid(format!(
                "{} changed size while it was packed ({len} bytes, now {})",
                p.display(),
                md.len()
            )));
        }
        read_exact_block(&mut f, *len, p, 0)
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
                _ => Err(Error::Invalid(format!(
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

impl Input {
    pub fn path(&self) -> &Path {
        match self {
            Input::Fixed { path, .. }
            | Input::Indexed { path, .. }
            | Input::Directory { path, .. } => path,
        }
    }

    /// Check the input and return its total size in bytes.
    pub fn total_len(&self) -> Result<u64> {
        match self {
            Input::Fixed {
                path, block_size, ..
            } => {
                if *block_size == 0 || *block_size > MAX_BLOCK {
                    return Err(Error::Invalid(format!(
                        "block size must be 1..={MAX_BLOCK} bytes, not {block_size}"
                    )));
                }
                Ok(open_input(path)?.1)
            }
            Input::Indexed { path, rows } => {
                let len = open_input(path)?.1;
                let covered = rows.last().map_or(0, |r| r.offset + r.size);
                if covered != len {
                    return Err(Error::Invalid(format!(
                        "the index covers {covered} bytes but {} has {len}: rows must tile the whole input",
                        path.display()
                    )));
                }
                Ok(len)
            }
            Input::Directory {
                path,
                follow_symlinks,
                ..
            } => {
                let listing = directory_files(path, *follow_symlinks)?;
                directory_names(&listing)?;
                Ok(listing.files.iter().map(|f| f.2).sum())
            }
        }
    }

    fn blocks(&self) -> Result<BlockIter<'_>> {
        Ok(self.blocks_and_names()?.0)
    }

    /// The blocks, and for a directory the names recorded for them (META `names`), from
    /// the one listing the blocks are read by, so names and blocks cannot disagree.
    fn blocks_and_names(&self) -> Result<(BlockIter<'_>, Option<Vec<String>>)> {
        let iter: BlockIter<'_> = match self {
            Input::Fixed {
                path,
                block_size,
                fps,
                gop,
            } => {
                let (mut f, len) = open_input(path)?;
                let (frame, gop, bs) = (frame_us(*fps)?, (*gop).max(1), *block_size);
                let n = len.div_ceil(bs);
                Box::new((0..n).map(move |i| {
                    let size = bs.min(len - i * bs);
                    let data = read_exact_block(&mut f, size, path, i * bs)?;
                    Ok((data, fixed_meta(i, frame, gop)))
                }))
            }
            Input::Indexed { path, rows } => {
                let (mut f, _) = open_input(path)?;
                Box::new(rows.iter().map(move |r| {
                    let data = read_exact_block(&mut f, r.size, path, r.offset)?;
                    Ok((
                        data,
                        BlockMeta {
                            pts_us: r.pts_us,
                            keyframe: r.keyframe,
                        },
                    ))
                }))
            }
            Input::Directory {
                path,
                fps,
                gop,
                follow_symlinks,
            } => {
                let listing = directory_files(path, *follow_symlinks)?;
                let names = directory_names(&listing)?;
                let (frame, gop) = (frame_us(*fps)?, (*gop).max(1));
                let iter = Box::new((0..listing.files.len()).map(move |i| {
                    let data = listing.read(i)?;
                    Ok((data, fixed_meta(i as u64, frame, gop)))
                }));
                return Ok((iter, Some(names)));
            }
        };
        Ok((iter, None))
    }

    /// META keys describing the input, in the reference's order.
    fn meta_keys(&self, opts: &PackOptions, names: Option<Vec<String>>) -> Map<String, Value> {
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

    fn duration_us(&self, blocks: u64, first: Option<u64>, last: Option<u64>) -> u64 {
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

/// Input bytes per batch of the pack pipeline: small enough that the two threads of a
/// two-core machine trade work finely, large enough that the queue is not the cost.
const BATCH_BYTES: u64 = 4 << 20;
const BATCH_BLOCKS: usize = 1024;
/// Batches queued at most (read and not yet written).
const MAX_PENDING: usize = 16;

/// Blocks as read: data and timing.
type RawBlocks = Vec<(Vec<u8>, BlockMeta)>;
/// What prepares a batch: (number of its first block, blocks) -> prepared blocks.
/// The flag says whether to hash the blocks too (the writer hashes its own alongside VERI).
type PrepFn<'a> = dyn Fn(u64, RawBlocks, bool) -> Result<Vec<Prepared>> + Sync + 'a;

/// One batch of blocks in the pack queue.
enum Slot {
    /// Read, not yet prepared; `base` is the number of its first block.
    Raw { base: u64, blocks: RawBlocks },
    /// Being prepared by a thread other than the writer.
    Claimed,
    /// Prepared (or failed to).
    Ready(Result<Vec<Prepared>>),
}

/// The pack queue; see the module docs.
#[derive(Default)]
struct Queue {
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    front_seq: u64,
    /// Set by the reader: `Ok` at the end of the input, `Err` on a read error.
    end: Option<Result<()>>,
    /// Set by the writer when it fails: everyone stops.
    abort: bool,
}

impl Queue {
    /// Take the newest raw batch, leaving the oldest for the writer.
    fn claim_newest(&mut self) -> Option<(u64, u64, RawBlocks)> {
        let i = (1..self.slots.len())
            .rev()
            .find(|&i| matches!(self.slots[i], Slot::Raw { .. }))?;
        match std::mem::replace(&mut self.slots[i], Slot::Claimed) {
            Slot::Raw { base, blocks } => Some((self.front_seq + i as u64, base, blocks)),
            _ => unreachable!("slot {i} was raw"),
        }
    }

    /// Record the result for a claimed batch (the writer waits for claimed batches, so
    /// it is still queued).
    fn store(&mut self, seq: u64, r: Result<Vec<Prepared>>) {
        let i = (seq - self.front_seq) as usize;
        self.slots[i] = Slot::Ready(r);
    }
}

#[derive(Default)]
struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// Prepare queued batches until the input has ended and none is left to claim.
    fn help(&self, prep: &PrepFn<'_>) {
        let mut q = self.lock();
        while !q.abort {
            match q.claim_newest() {
                Some((seq, base, raw)) => {
                    drop(q);
                    let r = prep(base, raw, true);
                    q = self.lock();
                    q.store(seq, r);
                    self.cv.notify_all();
                }
                None if q.end.is_some() => break,
                None => q = self.wait(q),
            }
        }
    }
}

/// Pack `input` into an h4fs container written to `out` (any `Write`). `progress` is
/// called with the number of input bytes consumed so far, as they are.
pub fn pack_to<W: Write + Send>(
    input: &Input,
    out: W,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(W, PackSummary)> {
    for k in opts.meta_extra.keys() {
        if RESERVED_META_KEYS.contains(&k.as_str()) || k == "project" || k == "domain" {
            return Err(Error::Invalid(format!(
                "META key \"{k}\" is set by h4fs and cannot be given as an extra field"
            )));
        }
    }
    let source_len = input.total_len()?;
    // An encrypted pack first reads the input once to learn its content digest: the
    // per-container key must be known before the first block is sealed.
    let (sealing, planned_sha) = match &opts.key {
        Some(key) => {
            let (digest, sha) = content_digest(input, opts.engine)?;
            (Some(ContainerCrypto::new(key, &digest)), Some(sha))
        }
        None => (None, None),
    };
    let writer_crypto = sealing.clone();
    let (mut blocks, names) = input.blocks_and_names()?;
    let engine = opts.engine;
    let prep = |base: u64, blocks: RawBlocks, hash: bool| -> Result<Vec<Prepared>> {
        blocks
            .into_iter()
            .enumerate()
            .map(|(k, (data, meta))| {
                let seal = sealing.as_ref().map(|(c, _)| (c, base + k as u64));
                prepare(engine, data, meta, seal, hash)
            })
            .collect()
    };
    // Stored bytes are the input bytes: the reader can hash blocks as it reads them.
    let stored_is_input = engine == Engine::Identity && sealing.is_none();
    let shared = Shared::default();
    let helpers = rayon::current_num_threads().saturating_sub(2);

    std::thread::scope(|s| -> Result<(W, PackSummary)> {
        let (shared, prep) = (&shared, &prep);
        let reader = s.spawn(move || -> [u8; 32] {
            let mut source = integrity::lanes::Sha256::new();
            let (mut done, mut next_block) = (0u64, 0u64);
            // Whether the writer was behind when the last batch was queued: then this
            // one is hashed here, in lockstep with the source hash, and queued ready.
            let mut writer_behind = false;
            loop {
                let mut batch = Vec::new();
                let mut ready = Vec::new();
                let hash_here = stored_is_input && writer_behind;
                let mut bytes = 0u64;
                let mut err = None;
                while bytes < BATCH_BYTES && batch.len() + ready.len() < BATCH_BLOCKS {
                    match blocks.next() {
                        None => break,
                        Some(Ok((data, meta))) if hash_here => {
                            let mut block = integrity::lanes::Sha256::new();
                            integrity::lanes::update2(&mut source, &data, &mut block, &data);
                            bytes += data.len() as u64;
                            ready.push(Prepared {
                                sha256: Some(block.finalize()),
                                crc: crc32fast::hash(&data),
                                decoded_len: data.len() as u64,
                                stored: data,
                                meta,
                            });
                        }
                        Some(Ok((data, meta))) => {
                            source.update(&data);
                            bytes += data.len() as u64;
                            batch.push((data, meta));
                        }
                        Some(Err(e)) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                done += bytes;
                let at_end = (batch.is_empty() && ready.is_empty()) || err.is_some();
                let mut q = shared.lock();
                if q.abort {
                    break;
                }
                if !batch.is_empty() {
                    let n = batch.len() as u64;
                    q.slots.push_back(Slot::Raw {
                        base: next_block,
                        blocks: batch,
                    });
                    next_block += n;
                } else if !ready.is_empty() {
                    next_block += ready.len() as u64;
                    q.slots.push_back(Slot::Ready(Ok(ready)));
                }
                writer_behind = q.slots.len() >= MAX_PENDING / 2;
                if at_end {
                    q.end = Some(err.map_or(Ok(()), Err));
                    shared.cv.notify_all();
                    drop(q);
                    // Help prepare what is still queued.
                    shared.help(prep);
                    break;
                }
                shared.cv.notify_all();
                // At most MAX_PENDING batches in flight; while full, prepare the newest.
                while q.slots.len() >= MAX_PENDING && !q.abort {
                    match q.claim_newest() {
                        Some((seq, base, raw)) => {
                            drop(q);
                            let r = prep(base, raw, true);
                            q = shared.lock();
                            q.store(seq, r);
                            shared.cv.notify_all();
                        }
                        None => q = shared.wait(q),
                    }
                }
                drop(q);
                progress(done);
            }
            source.finalize()
        });
        for _ in 0..helpers {
            s.spawn(move || shared.help(prep));
        }
        let writer = s.spawn(move || -> Result<Writer<W>> {
            let run = || -> Result<Writer<W>> {
                let mut w = Writer::new(out, engine)?;
                w.crypto = writer_crypto;
                loop {
                    let mut q = shared.lock();
                    let slot = loop {
                        match q.slots.front() {
                            None if q.end.is_some() => return Ok(w),
                            None | Some(Slot::Claimed) => q = shared.wait(q),
                            Some(_) => {
                                q.front_seq += 1;
                                let slot = q.slots.pop_front().expect("front exists");
                                shared.cv.notify_all();
                                break slot;
                            }
                        }
                    };
                    drop(q);
                    let prepared = match slot {
                        Slot::Ready(r) => r?,
                        Slot::Raw { base, blocks } => prep(base, blocks, false)?,
                        Slot::Claimed => unreachable!("claimed slots are waited for"),
                    };
                    for p in prepared {
                        w.add_prepared(p)?;
                    }
                }
            };
            let r = run();
            if r.is_err() {
                shared.lock().abort = true;
                shared.cv.notify_all();
            }
            r
        });
        let source_sha = reader.join().expect("reader thread does not panic");
        let w = writer.join().expect("writer thread does not panic")?;
        if let Some(Err(e)) = shared.lock().end.take() {
            return Err(e);
        }
        if planned_sha.is_some_and(|p| p != source_sha) {
            return Err(Error::Invalid(
                "the input changed between the two passes of an encrypted pack".into(),
            ));
        }
        if w.stream_len() != source_len {
            return Err(Error::Invalid(format!(
                "read {} bytes but the input had {source_len} when the pack began: it changed during the pack",
                w.stream_len()
            )));
        }
        let mut meta = input.meta_keys(opts, names);
        let name = input
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // An encrypted container does not record the source hash: it would let anyone
        // confirm a guess of the plaintext.
        let source = match opts.key {
            Some(_) => json!({"name": name, "size": source_len}),
            None => json!({"name": name, "size": source_len, "sha256": hex::encode(source_sha)}),
        };
        meta.insert("source".into(), source);
        meta.insert("block_count".into(), json!(w.blocks()));
        let duration = input.duration_us(w.blocks(), w.first_pts, w.last_pts);
        meta.insert("duration_us".into(), json!(duration));
        if let Some(start) = opts.start_time_us {
            meta.insert("start_time_us".into(), json!(start));
        }
        if let Some(c) = &opts.created {
            meta.insert("created".into(), json!(c));
        }
        meta.insert(
            "h4fs".into(),
            json!({"format": 1, "index": "HIDX", "footer": "HFTR"}),
        );
        for (k, v) in &opts.meta_extra {
            meta.insert(k.clone(), v.clone());
        }
        w.finish(meta, &opts.safe)
    })
}

/// Pack into the file `out` through [`crate::output`]: it appears only when complete,
/// an existing file is never replaced and the input is never overwritten. (The CLI
/// passes its own [`OutputOptions`] to [`pack_into`].)
pub fn pack(
    input: &Input,
    out: &Path,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackSummary> {
    let o = Output::create(
        out,
        &OutputOptions {
            inputs: vec![input.path().to_path_buf()],
            ..OutputOptions::default()
        },
    )?;
    pack_into(input, o, opts, progress)
}

/// Pack into `out`, committing it only after the container is complete.
pub fn pack_into(
    input: &Input,
    out: Output,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackSummary> {
    let buf = BufWriter::with_capacity(1 << 20, out);
    let (buf, summary) = pack_to(input, buf, opts, progress)?;
    let out = buf
        .into_inner()
        .map_err(|e| Error::io("writing the container", e.into_error()))?;
    out.commit()?;
    Ok(summary)
}

/// The first pass of an encrypted pack: the SHA-256 of the source stream and the
/// content digest (source hash, engine, block plan) the container id derives from.
fn content_digest(input: &Input, engine: Engine) -> Result<(ContentDigest, [u8; 32])> {
    let mut source = Sha256::new();
    let mut plan: Vec<(u64, BlockMeta)> = Vec::new();
    for b in input.blocks()? {
        let (data, meta) = b?;
        source.update(&data);
        plan.push((data.len() as u64, meta));
    }
    let sha: [u8; 32] = source.finalize().into();
    let mut h = ContentHasher::new(&sha, &engine.engine_id());
    for (len, m) in plan {
        h.block(0, len, m.pts_us, m.keyframe);
    }
    Ok((h.finish(), sha))
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

    /// The pack queue with 0, 1 and 2 helper threads, enough batches to fill it (so the
    /// reader prepares and hashes batches too), and an engine that encodes: the same
    /// bytes every time, and a container whose every hash checks.
    #[test]
    fn output_does_not_depend_on_the_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.bin");
        // 20,000 blocks of 256 bytes: 20 batches; the last block is short.
        let data: Vec<u8> = (0..20_000u32 * 256 - 100)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0xf0)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let input = Input::Fixed {
            path,
            block_size: 256,
            fps: 25.0,
            gop: 25,
        };
        for engine in [Engine::Identity, Engine::GeometricReference] {
            let opts = PackOptions {
                engine,
                ..PackOptions::default()
            };
            let packs: Vec<Vec<u8>> = [1, 3, 4]
                .into_iter()
                .map(|threads| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap()
                        .install(|| pack_to(&input, Vec::new(), &opts, &|_| {}).unwrap().0)
                })
                .collect();
            assert!(packs[0] == packs[1] && packs[0] == packs[2], "{engine:?}");
            let a = crate::reader::Archive::from_source(
                Box::new(packs[0].clone()),
                crate::reader::OpenCheck::Structure,
            )
            .unwrap();
            assert_eq!(a.tracks[0].blocks.len(), 20_000);
            let report = crate::verify::verify(&a, true, &|_| {});
            assert!(report.ok(), "{engine:?}: {:?}", report.failures);
        }
    }
}
