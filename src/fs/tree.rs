//! The tree: which node an inode number names, its parent, its children, names of
//! blocks and symlink targets. Inode numbers are computed from tree positions
//! ([`super::inode`]), so they are stable.

use super::inode::{Local, Place, What};
use super::{Fs, FsError};
use crate::blocks::{ContainerId, TrackId};

/// Where a place lives, resolved against the containers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Node {
    /// The root of a directory mount.
    Top,
    /// A container or track directory.
    Dir(ContainerId, Option<TrackId>),
    /// A generated file of a container (track `None`) or track.
    Gen(ContainerId, Option<TrackId>, Local),
    Stream(ContainerId, TrackId),
    BlocksDir(ContainerId, TrackId),
    ByPtsDir(ContainerId, TrackId),
    ByNameDir(ContainerId, TrackId),
    /// Block files and symlinks carry the block number.
    Block(ContainerId, TrackId, u64),
    Link(ContainerId, TrackId, u64),
    NameLink(ContainerId, TrackId, u64),
    StreamLink(ContainerId, TrackId),
}

pub(super) fn valid_dir_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// Files of a container directory of a multitrack container (besides track dirs).
pub(super) const CONTAINER_FILES: [(&str, Local); 5] = [
    ("meta.json", Local::Meta),
    ("safe.json", Local::Safe),
    ("veri.json", Local::Veri),
    ("manifest.json", Local::Manifest),
    ("tracks.json", Local::Tracks),
];

/// Entries of a track directory (the container directory of a single-track container).
pub(super) const TRACK_FILES: [(&str, Local); 9] = [
    ("meta.json", Local::Meta),
    ("safe.json", Local::Safe),
    ("seek.csv", Local::SeekCsv),
    ("index.csv", Local::IndexCsv),
    ("veri.json", Local::Veri),
    ("manifest.json", Local::Manifest),
    ("stream", Local::Stream),
    ("blocks", Local::Blocks),
    ("by-pts", Local::ByPts),
];

impl Fs {
    // ---- places and nodes -------------------------------------------------------

    pub(super) fn cslot(&self, c: ContainerId) -> u16 {
        (c.index() + usize::from(self.multi)) as u16
    }

    pub(super) fn place(&self, node: Node) -> Place {
        let (container_slot, track_slot, what) = match node {
            Node::Top => (0, 0, What::Fixed(Local::Dir)),
            Node::Dir(c, t) => (self.cslot(c), self.tslot(c, t), What::Fixed(Local::Dir)),
            Node::Gen(c, t, l) => (self.cslot(c), self.tslot(c, t), What::Fixed(l)),
            Node::Stream(c, t) => (
                self.cslot(c),
                self.tslot(c, Some(t)),
                What::Fixed(Local::Stream),
            ),
            Node::BlocksDir(c, t) => (
                self.cslot(c),
                self.tslot(c, Some(t)),
                What::Fixed(Local::Blocks),
            ),
            Node::ByPtsDir(c, t) => (
                self.cslot(c),
                self.tslot(c, Some(t)),
                What::Fixed(Local::ByPts),
            ),
            Node::ByNameDir(c, t) => (
                self.cslot(c),
                self.tslot(c, Some(t)),
                What::Fixed(Local::ByName),
            ),
            Node::StreamLink(c, t) => (
                self.cslot(c),
                self.tslot(c, Some(t)),
                What::Fixed(Local::StreamLink),
            ),
            Node::NameLink(c, t, n) => (self.cslot(c), self.tslot(c, Some(t)), What::NameLink(n)),
            Node::Block(c, t, n) => (self.cslot(c), self.tslot(c, Some(t)), What::Block(n)),
            Node::Link(c, t, n) => (self.cslot(c), self.tslot(c, Some(t)), What::Link(n)),
        };
        Place {
            container_slot,
            track_slot,
            what,
        }
    }

    pub(super) fn tslot(&self, c: ContainerId, t: Option<TrackId>) -> u16 {
        match t {
            Some(t) if self.container(c).multitrack => (t.index() + 1) as u16,
            _ => 0,
        }
    }

    pub(super) fn ino(&self, node: Node) -> u64 {
        self.place(node).ino()
    }

    /// The node an inode number names, if it exists.
    pub(super) fn node(&self, ino: u64) -> std::result::Result<Node, FsError> {
        let p = Place::from_ino(ino).ok_or(FsError::NotFound)?;
        let top_level = self.multi && p.container_slot == 0;
        if top_level {
            return match (p.track_slot, p.what) {
                (0, What::Fixed(Local::Dir)) => Ok(Node::Top),
                _ => Err(FsError::NotFound),
            };
        }
        let index = p.container_slot as usize - usize::from(self.multi);
        let c = ContainerId(index as u32);
        // A prefix mount's container opens here at the latest (an inode of it reached
        // without a lookup of its directory, e.g. after the kernel forgot it).
        self.ensure_open(c)?;
        let cont = self.container(c);
        // Which track the place's directory shows, if any.
        let track = if cont.multitrack {
            match p.track_slot {
                0 => None,
                s => {
                    let t = s as usize - 1;
                    if t >= cont.tracks.len() {
                        return Err(FsError::NotFound);
                    }
                    Some(TrackId(t as u32))
                }
            }
        } else if p.track_slot == 0 {
            Some(TrackId(0))
        } else {
            return Err(FsError::NotFound);
        };
        let dir_t = if cont.multitrack { track } else { None };
        match (track, p.what) {
            (_, What::Fixed(Local::Dir)) => Ok(Node::Dir(c, dir_t)),
            (_, What::Fixed(l @ (Local::Meta | Local::Safe | Local::Veri | Local::Manifest))) => {
                Ok(Node::Gen(c, dir_t, l))
            }
            (None, What::Fixed(Local::Tracks)) => Ok(Node::Gen(c, None, Local::Tracks)),
            (Some(t), What::Fixed(Local::Tracks)) if cont.multitrack => {
                Ok(Node::Gen(c, Some(t), Local::Tracks))
            }
            (Some(t), What::Fixed(l @ (Local::SeekCsv | Local::IndexCsv))) => {
                Ok(Node::Gen(c, Some(t), l))
            }
            (Some(t), What::Fixed(Local::Stream)) => Ok(Node::Stream(c, t)),
            (Some(t), What::Fixed(Local::Blocks)) => Ok(Node::BlocksDir(c, t)),
            (Some(t), What::Fixed(Local::ByPts)) => Ok(Node::ByPtsDir(c, t)),
            (Some(t), What::Fixed(Local::ByName)) if cont.tracks[t.index()].names.is_some() => {
                Ok(Node::ByNameDir(c, t))
            }
            (Some(t), What::Fixed(Local::StreamLink))
                if cont.tracks[t.index()].stream_ext.is_some() =>
            {
                Ok(Node::StreamLink(c, t))
            }
            (Some(t), What::NameLink(n)) if self.block_file_name(c, t, n).is_some() => {
                Ok(Node::NameLink(c, t, n))
            }
            (Some(t), What::Block(n)) if n < self.track(c, t).blocks.len() => {
                Ok(Node::Block(c, t, n))
            }
            (Some(t), What::Link(n)) if n < self.track(c, t).blocks.len() => {
                Ok(Node::Link(c, t, n))
            }
            _ => Err(FsError::NotFound),
        }
    }

    /// The track a generated file or directory of container `c` shows: the given one,
    /// or track 0 of a single-track container.
    pub(super) fn data_track(&self, c: ContainerId, t: Option<TrackId>) -> Option<TrackId> {
        match t {
            Some(t) => Some(t),
            None if !self.container(c).multitrack && !self.container(c).tracks.is_empty() => {
                Some(TrackId(0))
            }
            None => None,
        }
    }

    pub(super) fn parent(&self, node: Node) -> Node {
        match node {
            Node::Top => Node::Top,
            Node::Dir(c, None) => {
                if self.multi {
                    Node::Top
                } else {
                    Node::Dir(c, None)
                }
            }
            Node::Dir(c, Some(_)) => Node::Dir(c, None),
            Node::Gen(c, t, _) => Node::Dir(c, t),
            Node::Stream(c, t)
            | Node::StreamLink(c, t)
            | Node::BlocksDir(c, t)
            | Node::ByPtsDir(c, t)
            | Node::ByNameDir(c, t) => Node::Dir(c, self.dir_track(c, t)),
            Node::Block(c, t, _) => Node::BlocksDir(c, t),
            Node::Link(c, t, _) => Node::ByPtsDir(c, t),
            Node::NameLink(c, t, _) => Node::ByNameDir(c, t),
        }
    }

    pub(super) fn dir_track(&self, c: ContainerId, t: TrackId) -> Option<TrackId> {
        self.container(c).multitrack.then_some(t)
    }

    /// Children of a directory other than blocks/ and by-pts/.
    pub(super) fn small_children(&self, node: Node) -> Vec<(String, Node)> {
        let mut out = Vec::new();
        match node {
            Node::Top => {
                // Names only: listing the root opens no container.
                for (c, slot) in self.containers.iter().enumerate() {
                    out.push((slot.name.clone(), Node::Dir(ContainerId(c as u32), None)));
                }
            }
            Node::Dir(c, t) => {
                let cont = self.container(c);
                if cont.multitrack && t.is_none() {
                    for (name, l) in CONTAINER_FILES {
                        out.push((name.to_string(), Node::Gen(c, None, l)));
                    }
                    for (i, tv) in cont.tracks.iter().enumerate() {
                        out.push((tv.dir_name.clone(), Node::Dir(c, Some(TrackId(i as u32)))));
                    }
                } else if let Some(dt) = self.data_track(c, t) {
                    let tv = &cont.tracks[dt.index()];
                    for (name, l) in TRACK_FILES {
                        let n = match l {
                            Local::Stream => Node::Stream(c, dt),
                            Local::Blocks => Node::BlocksDir(c, dt),
                            Local::ByPts => Node::ByPtsDir(c, dt),
                            l => Node::Gen(c, t, l),
                        };
                        out.push((name.to_string(), n));
                        if let (Local::Stream, Some(ext)) = (l, &tv.stream_ext) {
                            out.push((format!("stream.{ext}"), Node::StreamLink(c, dt)));
                        }
                        if l == Local::ByPts && tv.names.is_some() {
                            out.push(("by-name".to_string(), Node::ByNameDir(c, dt)));
                        }
                    }
                    if cont.multitrack {
                        out.push(("track.json".to_string(), Node::Gen(c, t, Local::Tracks)));
                    }
                }
            }
            _ => {}
        }
        out
    }

    pub(super) fn root_node(&self) -> Node {
        if self.multi {
            Node::Top
        } else {
            Node::Dir(ContainerId(0), None)
        }
    }

    pub(super) fn block_name(&self, c: ContainerId, t: TrackId, n: u64) -> String {
        format!("{n:0w$}", w = self.container(c).tracks[t.index()].width)
    }

    pub(super) fn link_target(&self, c: ContainerId, t: TrackId, n: u64) -> String {
        format!("../blocks/{}", self.block_name(c, t, n))
    }

    /// The recorded file name of block `n` (directory packs), if it has one.
    pub(super) fn block_file_name(&self, c: ContainerId, t: TrackId, n: u64) -> Option<&str> {
        self.container(c).tracks[t.index()]
            .names
            .as_ref()?
            .get(usize::try_from(n).ok()?)?
            .as_deref()
    }

    /// Target of a symlink node.
    pub(super) fn symlink_target(&self, node: Node) -> Option<String> {
        match node {
            Node::Link(c, t, n) | Node::NameLink(c, t, n) => Some(self.link_target(c, t, n)),
            Node::StreamLink(..) => Some("stream".to_string()),
            _ => None,
        }
    }

    pub(super) fn by_pts(&self, c: ContainerId, t: TrackId) -> &[(u64, u64)] {
        self.container(c).tracks[t.index()].by_pts.get_or_init(|| {
            let tr = self.track(c, t);
            let mut v: Vec<(u64, u64)> = Vec::with_capacity(tr.seek.len());
            for p in &tr.seek {
                if v.last().is_some_and(|l| l.0 == p.pts_us) {
                    continue;
                }
                if let Some(b) = tr.resolve_seek(p) {
                    v.push((p.pts_us, b));
                }
            }
            v
        })
    }
}

pub(super) fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// A non-negative decimal integer, digits only.
pub(super) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
