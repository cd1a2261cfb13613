//! The operations the kernel can ask for, as methods of [`Fs`] returning
//! `Result<_, FsError>`.

use super::inode::{Local, Place, What};
use super::reply::{Attr, BLKSIZE, DirEntry, Kind, Opened, ReadData, StatFs, XattrReply};
use super::status::STATS_XATTR;
use super::tree::{CONTAINER_FILES, Node, TRACK_FILES, parse_decimal};
use super::{Fs, FsError, Handle};
use crate::blocks::{BlockIndex, ReadHandle};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

impl Fs {
    // ---- operations ---------------------------------------------------------------

    /// Find `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> std::result::Result<Attr, FsError> {
        let node = self.node(parent)?;
        let child = match node {
            Node::BlocksDir(c, t) => {
                let n = parse_decimal(name).ok_or(FsError::NotFound)?;
                if n >= self.track(c, t).blocks.len() || self.block_name(c, t, n) != name {
                    return Err(FsError::NotFound);
                }
                Node::Block(c, t, n)
            }
            Node::ByPtsDir(c, t) => {
                // Any time people type (12s, 1500ms, 00:01:30.5, microseconds) up to the
                // end of the media; before the first keyframe means the first keyframe.
                let pts = crate::time::parse_time(name).map_err(|_| FsError::NotFound)?;
                if self.archive(c).is_past_end(t.index(), pts) {
                    return Err(FsError::NotFound);
                }
                let (_, n) = self
                    .track(c, t)
                    .keyframe_at_or_before(pts)
                    .ok_or(FsError::NotFound)?;
                Node::Link(c, t, n)
            }
            Node::ByNameDir(c, t) => {
                let list = &self.container(c).tracks[t.index()].by_name;
                let k = list
                    .binary_search_by(|(n, _)| n.as_str().cmp(name))
                    .map_err(|_| FsError::NotFound)?;
                Node::NameLink(c, t, list[k].1)
            }
            Node::Top | Node::Dir(..) => {
                let child = self
                    .small_children(node)
                    .into_iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, n)| n)
                    .ok_or(FsError::NotFound)?;
                if let Node::Dir(c, None) = child {
                    // The first lookup of a prefix mount's container opens it.
                    self.ensure_open(c)?;
                }
                child
            }
            _ => return Err(FsError::NotDir),
        };
        self.attr(child)
    }

    /// Attributes of a directory entry for `readdirplus`: [`Fs::getattr`], except that
    /// a prefix mount's container not opened yet is shown as a directory with the
    /// listing's mtime and no attribute caching, without opening it, so listing the
    /// root costs no request and a container that fails to open does not end the
    /// listing (it fails on its lookup).
    pub fn entry_attr(&self, ino: u64) -> std::result::Result<Attr, FsError> {
        let unopened = Place::from_ino(ino)
            .filter(|p| {
                self.multi
                    && p.container_slot > 0
                    && p.track_slot == 0
                    && p.what == What::Fixed(Local::Dir)
            })
            .and_then(|p| self.containers.get(p.container_slot as usize - 1))
            .filter(|slot| slot.open.get().is_none())
            .and_then(|slot| slot.pending.as_ref());
        let Some(pending) = unopened else {
            return self.getattr(ino);
        };
        Ok(Attr {
            ino,
            kind: Kind::Dir,
            size: 0,
            blocks: 0,
            perm: 0o555,
            nlink: 2,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            mtime: pending.listed_mtime,
            blksize: BLKSIZE,
            dynamic: true,
        })
    }

    /// `stat` of an inode.
    pub fn getattr(&self, ino: u64) -> std::result::Result<Attr, FsError> {
        self.attr(self.node(ino)?)
    }

    pub(super) fn mtime(&self, node: Node) -> SystemTime {
        match node {
            Node::Top => self.root_mtime,
            Node::Gen(c, _, Local::Veri) => self.served(c).results_mtime(),
            Node::Dir(c, _)
            | Node::Gen(c, ..)
            | Node::Stream(c, _)
            | Node::BlocksDir(c, _)
            | Node::ByPtsDir(c, _)
            | Node::ByNameDir(c, _)
            | Node::StreamLink(c, _)
            | Node::Block(c, ..)
            | Node::Link(c, ..)
            | Node::NameLink(c, ..) => self.container(c).mtime,
        }
    }

    pub(super) fn attr(&self, node: Node) -> std::result::Result<Attr, FsError> {
        let (kind, size, dynamic, nlink) = match node {
            Node::Top => (Kind::Dir, 0, false, 2 + self.containers.len() as u32),
            Node::Dir(c, t) => {
                let subdirs = if self.container(c).multitrack && t.is_none() {
                    self.container(c).tracks.len() as u32
                } else {
                    2
                };
                (Kind::Dir, 0, false, 2 + subdirs)
            }
            Node::BlocksDir(..) | Node::ByPtsDir(..) | Node::ByNameDir(..) => {
                (Kind::Dir, 0, false, 2)
            }
            Node::Gen(c, _, Local::Veri) => (Kind::File, self.veri_json(c).len() as u64, true, 1),
            Node::Gen(c, t, l) => (Kind::File, self.gen_len(c, t, l), false, 1),
            Node::Stream(c, t) => (Kind::File, self.track(c, t).stream_len(), false, 1),
            Node::Block(c, t, n) => {
                let e = self.track(c, t).blocks.get(n).ok_or(FsError::NotFound)?;
                (Kind::File, e.decoded_len, false, 1)
            }
            Node::Link(..) | Node::NameLink(..) | Node::StreamLink(..) => {
                let len = self.symlink_target(node).map_or(0, |s| s.len() as u64);
                (Kind::Symlink, len, false, 1)
            }
        };
        let perm = match kind {
            Kind::Dir => 0o555,
            Kind::File => 0o444,
            Kind::Symlink => 0o777,
        };
        Ok(Attr {
            ino: self.ino(node),
            kind,
            size,
            blocks: size.div_ceil(512),
            perm,
            nlink,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            mtime: self.mtime(node),
            blksize: BLKSIZE,
            dynamic,
        })
    }

    /// Entries of directory `ino` from cookie `offset`: `add` returns true when its
    /// buffer is full.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> std::result::Result<(), FsError> {
        let node = self.node(ino)?;
        let parent = self.ino(self.parent(node));
        let dot = [
            (".".to_string(), ino, Kind::Dir),
            ("..".to_string(), parent, Kind::Dir),
        ];
        let mut i = offset;
        while i < 2 {
            let (name, ino, kind) = dot[i as usize].clone();
            if add(DirEntry {
                ino,
                next: i + 1,
                kind,
                name,
            }) {
                return Ok(());
            }
            i += 1;
        }
        match node {
            Node::BlocksDir(c, t) => {
                let count = self.track(c, t).blocks.len();
                let mut n = i - 2;
                while n < count {
                    let e = DirEntry {
                        ino: self.ino(Node::Block(c, t, n)),
                        next: n + 3,
                        kind: Kind::File,
                        name: self.block_name(c, t, n),
                    };
                    if add(e) {
                        break;
                    }
                    n += 1;
                }
            }
            Node::ByPtsDir(c, t) => {
                let list = self.by_pts(c, t);
                for (k, &(pts, n)) in list.iter().enumerate().skip((i - 2) as usize) {
                    let e = DirEntry {
                        ino: self.ino(Node::Link(c, t, n)),
                        next: k as u64 + 3,
                        kind: Kind::Symlink,
                        name: pts.to_string(),
                    };
                    if add(e) {
                        break;
                    }
                }
            }
            Node::ByNameDir(c, t) => {
                let list = &self.container(c).tracks[t.index()].by_name;
                for (k, (name, n)) in list.iter().enumerate().skip((i - 2) as usize) {
                    let e = DirEntry {
                        ino: self.ino(Node::NameLink(c, t, *n)),
                        next: k as u64 + 3,
                        kind: Kind::Symlink,
                        name: name.clone(),
                    };
                    if add(e) {
                        break;
                    }
                }
            }
            Node::Top | Node::Dir(..) => {
                let kids = self.small_children(node);
                for (k, (name, child)) in kids.into_iter().enumerate().skip((i - 2) as usize) {
                    let kind = match child {
                        Node::Top
                        | Node::Dir(..)
                        | Node::BlocksDir(..)
                        | Node::ByPtsDir(..)
                        | Node::ByNameDir(..) => Kind::Dir,
                        Node::Link(..) | Node::NameLink(..) | Node::StreamLink(..) => Kind::Symlink,
                        Node::Gen(..) | Node::Stream(..) | Node::Block(..) => Kind::File,
                    };
                    let e = DirEntry {
                        ino: self.ino(child),
                        next: k as u64 + 3,
                        kind,
                        name,
                    };
                    if add(e) {
                        break;
                    }
                }
            }
            _ => return Err(FsError::NotDir),
        }
        Ok(())
    }

    /// Check a directory can be opened.
    pub fn opendir(&self, ino: u64) -> std::result::Result<(), FsError> {
        match self.node(ino)? {
            Node::Top
            | Node::Dir(..)
            | Node::BlocksDir(..)
            | Node::ByPtsDir(..)
            | Node::ByNameDir(..) => Ok(()),
            _ => Err(FsError::NotDir),
        }
    }

    /// Open a file for reading (`write`: the caller asked for write access).
    pub fn open(&self, ino: u64, write: bool) -> std::result::Result<Opened, FsError> {
        let node = self.node(ino)?;
        if write {
            return Err(FsError::ReadOnly);
        }
        let handle = match node {
            Node::Top
            | Node::Dir(..)
            | Node::BlocksDir(..)
            | Node::ByPtsDir(..)
            | Node::ByNameDir(..) => {
                return Err(FsError::IsDir);
            }
            Node::Link(..) | Node::NameLink(..) | Node::StreamLink(..) => {
                return Err(FsError::NotFound);
            }
            Node::Gen(c, _, Local::Veri) => Handle::Snapshot(Arc::new(self.veri_json(c))),
            Node::Gen(..) => {
                return Ok(Opened {
                    fh: 0,
                    keep_cache: true,
                    direct_io: false,
                });
            }
            Node::Stream(c, _) | Node::Block(c, ..) => {
                self.blocks.check(c)?;
                Handle::Data(Arc::new(ReadHandle::new()))
            }
        };
        // Data files are immutable: the kernel keeps their pages across opens. veri.json
        // is a snapshot per open, read around the page cache.
        let snapshot = matches!(handle, Handle::Snapshot(_));
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, handle);
        Ok(Opened {
            fh,
            keep_cache: !snapshot,
            direct_io: snapshot,
        })
    }

    /// The block layer's state of an open data file, if `fh` is one.
    fn data_handle(&self, fh: u64) -> Option<Arc<ReadHandle>> {
        if fh == 0 {
            return None;
        }
        match self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
        {
            Some(Handle::Data(h)) => Some(h.clone()),
            _ => None,
        }
    }

    /// Forget a handle from [`Fs::open`].
    pub fn release(&self, fh: u64) {
        if fh != 0 {
            self.handles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&fh);
        }
    }

    /// Read `size` bytes at `offset` of file `ino` opened as `fh`.
    pub fn read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> std::result::Result<ReadData, FsError> {
        let node = self.node(ino)?;
        self.read_requests.fetch_add(1, Ordering::Relaxed);
        self.largest_read.fetch_max(size as u64, Ordering::Relaxed);
        let size = size as usize;
        let data = match node {
            Node::Top
            | Node::Dir(..)
            | Node::BlocksDir(..)
            | Node::ByPtsDir(..)
            | Node::ByNameDir(..) => {
                return Err(FsError::IsDir);
            }
            Node::Link(..) | Node::NameLink(..) | Node::StreamLink(..) => {
                return Err(FsError::NotFound);
            }
            Node::Gen(_, _, Local::Veri) => {
                let snap = match self
                    .handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&fh)
                {
                    Some(Handle::Snapshot(s)) => s.clone(),
                    _ => return Err(FsError::BadHandle(fh)),
                };
                let (lo, hi) = clip(offset, size, snap.len() as u64);
                ReadData::Shared(snap, lo, hi)
            }
            Node::Gen(c, t, l @ (Local::IndexCsv | Local::SeekCsv)) => {
                let dt = self.data_track(c, t).ok_or(FsError::NotFound)?;
                let tv = &self.container(c).tracks[dt.index()];
                let rf = if l == Local::IndexCsv {
                    &tv.index_csv
                } else {
                    &tv.seek_csv
                };
                ReadData::Owned(rf.read(self.track(c, dt), offset, size))
            }
            Node::Gen(c, t, l) => {
                let v = self.generated(c, t, l);
                let (lo, hi) = clip(offset, size, v.len() as u64);
                ReadData::Shared(v, lo, hi)
            }
            Node::Block(c, t, n) => {
                let h = self.data_handle(fh);
                self.blocks
                    .read_block(c, t, BlockIndex(n), offset, size as u64, h.as_deref())?
                    .into()
            }
            Node::Stream(c, t) => {
                let h = self.data_handle(fh);
                self.blocks
                    .read(c, t, offset, size as u64, h.as_deref())?
                    .into()
            }
        };
        self.bytes_served
            .fetch_add(data.as_slice().len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    /// A read of `stream` that needs no I/O and no hashing (every block it covers is in
    /// the cache, hence verified), without a file handle; `None` when it would (then use
    /// [`Fs::read`]) or for any other file. For callers that must not block.
    pub fn try_read_cached(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
    ) -> Option<std::result::Result<ReadData, FsError>> {
        let Ok(Node::Stream(c, t)) = self.node(ino) else {
            return None;
        };
        let data = match self.blocks.try_read_cached(c, t, offset, size as u64)? {
            Ok(d) => ReadData::from(d),
            Err(e) => return Some(Err(e.into())),
        };
        self.read_requests.fetch_add(1, Ordering::Relaxed);
        self.largest_read.fetch_max(size as u64, Ordering::Relaxed);
        self.bytes_served
            .fetch_add(data.as_slice().len() as u64, Ordering::Relaxed);
        Some(Ok(data))
    }

    /// Target of a `by-pts/` symlink.
    pub fn readlink(&self, ino: u64) -> std::result::Result<String, FsError> {
        self.symlink_target(self.node(ino)?)
            .ok_or(FsError::NotSymlink)
    }

    pub(super) fn xattrs(&self, node: Node) -> Vec<(&'static str, Vec<u8>)> {
        match node {
            Node::Block(c, t, n) => {
                let Some(e) = self.track(c, t).blocks.get(n) else {
                    return Vec::new();
                };
                let mut v = vec![
                    ("user.h4mk.pts_us", e.pts_us.to_string().into_bytes()),
                    (
                        "user.h4mk.keyframe",
                        if e.keyframe {
                            b"1".to_vec()
                        } else {
                            b"0".to_vec()
                        },
                    ),
                ];
                if let Some(h) = e.sha256() {
                    v.push(("user.h4mk.sha256", hex::encode(h).into_bytes()));
                }
                v.push(("user.h4mk.offset", e.stream_offset.to_string().into_bytes()));
                if let Some(name) = self.block_file_name(c, t, n) {
                    v.push(("user.h4mk.name", name.as_bytes().to_vec()));
                }
                v
            }
            Node::Stream(c, t) => {
                let mut v = match &self.container(c).tracks[t.index()].stream_ext {
                    Some(ext) => vec![(
                        "user.h4mk.mime",
                        crate::naming::mime_type(ext).as_bytes().to_vec(),
                    )],
                    None => Vec::new(),
                };
                // The tree root is the BLAKE3 of `stream` only when the stream is the
                // stored stream (plain v2, identity engine): then it equals `b3sum` of
                // the original file. An encrypted or encoded container's root covers
                // other bytes, so it is not shown here (`inspect` shows it).
                let served = self.blocks.container(c);
                if served.by_groups(t.index())
                    && let Some(tree) = served.archive.tree()
                {
                    v.push(("user.h4mk.blake3", tree.root().to_hex().as_bytes().to_vec()));
                }
                v
            }
            Node::Dir(c, None) => vec![("user.h4mk.veri", self.veri_summary(c).into_bytes())],
            _ => Vec::new(),
        }
    }

    /// Extended attribute `name` of `ino`, fitted to a buffer of `size` bytes.
    pub fn getxattr(
        &self,
        ino: u64,
        name: &str,
        size: u32,
    ) -> std::result::Result<XattrReply, FsError> {
        let node = self.node(ino)?;
        if name == STATS_XATTR && ino == self.root_ino() {
            return XattrReply::fit(self.stats_xattr(), size);
        }
        let value = self
            .xattrs(node)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or(FsError::NoXattr)?;
        XattrReply::fit(value, size)
    }

    /// Names of the extended attributes of `ino`, NUL-terminated.
    pub fn listxattr(&self, ino: u64, size: u32) -> std::result::Result<XattrReply, FsError> {
        let node = self.node(ino)?;
        let mut list = Vec::new();
        for (n, _) in self.xattrs(node) {
            list.extend_from_slice(n.as_bytes());
            list.push(0);
        }
        XattrReply::fit(list, size)
    }

    /// Filesystem numbers: size of all decoded data, node count.
    pub fn statfs(&self) -> StatFs {
        let bsize = 4096u32;
        let mut bytes = 0u64;
        let mut files = 2u64;
        for (id, c) in self.opened() {
            for (t, tv) in self.archive(id).tracks.iter().zip(&c.tracks) {
                bytes += t.stream_len();
                files += 2 * t.blocks.len() + TRACK_FILES.len() as u64 + 1;
                files += tv.by_name.len() as u64 + 2;
            }
            files += CONTAINER_FILES.len() as u64 + 1;
        }
        StatFs {
            blocks: bytes.div_ceil(bsize as u64),
            files,
            bsize,
            namelen: 255,
        }
    }

    /// Inode of the root.
    pub fn root_ino(&self) -> u64 {
        self.ino(self.root_node())
    }
}

fn clip(offset: u64, size: usize, len: u64) -> (usize, usize) {
    let lo = offset.min(len);
    let hi = offset.saturating_add(size as u64).min(len);
    (lo as usize, hi as usize)
}
