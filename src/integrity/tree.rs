//! A BLAKE3 hash tree over the stored stream, verified in hash groups of `2^k` bytes
//! (the h4fs v2 layout, docs/FORMAT.md §10).
//!
//! The stream is cut into groups of `2^group_log` bytes (default 16 KiB,
//! [`DEFAULT_GROUP_LOG`]; the last group may be short). Each group is a BLAKE3 subtree,
//! and the groups are joined exactly as BLAKE3 joins chunks (a left subtree always holds
//! the largest power of two of groups below the total), so [`Tree::root`] is
//! `blake3::hash(stream)`: `b3sum` of the original file for an identity container. All
//! hashing goes through the `blake3` crate's `hazmat` API
//! ([`HasherExt::set_input_offset`], [`merge_subtrees_non_root`], [`merge_subtrees_root`]);
//! this module only decides which subtrees to join, in the shape `hazmat` documents.
//!
//! The outboard keeps every parent node (the chaining values of its two children, 64
//! bytes) in pre-order: a node, its left subtree, its right subtree. The group chaining
//! values are the children of the lowest parents, so they are stored too, and a tree of
//! `n >= 1` groups has `n - 1` nodes: `64 * (n - 1)` bytes, under `64 / 2^group_log` of
//! the stream (0.39 % at 16 KiB groups). In pre-order the node of a subtree of `m`
//! groups starting at node `i` has its left child at `i + 1` and its right child at
//! `i + p`, `p` = the groups of the left subtree, so a reader walks from the root to any
//! group with index arithmetic only.
//!
//! Two ways to verify, for two kinds of reader:
//! * [`Outboard::verify`] checks the groups of one read against the root, walking down the
//!   path and hashing every node on it (`log2 n` merges): for readers that fetch nodes
//!   lazily ([`Outboard::path_nodes`] names the ones a range needs).
//! * [`Outboard::check`] checks every node against the root once (`n - 1` merges, no
//!   stream bytes) and returns a [`CheckedTree`] whose group chaining values are trusted,
//!   so each later read hashes only its own groups: the whole path is cached.
//!
//! Both report damage precisely: a changed byte fails exactly its group; a changed node
//! fails exactly the groups below it (which cannot be vouched for without it).

use crate::format::outboard::{self as fmt, NODE_LEN};
use blake3::Hasher;
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use rayon::prelude::*;
use std::ops::Range;

pub use crate::format::outboard::{DEFAULT_GROUP_LOG, MAX_GROUP_LOG, MIN_GROUP_LOG};
/// The BLAKE3 hash type of roots (constant-time equality), re-exported so callers need
/// no direct `blake3` dependency.
pub use blake3::Hash;

/// Why a tree cannot be built or a range of groups does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// A group size outside [`MIN_GROUP_LOG`]`..=`[`MAX_GROUP_LOG`].
    #[error(
        "hash group size 2^{0} is out of range (2^{MIN_GROUP_LOG} = 1 KiB ..= 2^{MAX_GROUP_LOG} = 16 MiB)"
    )]
    GroupLog(u8),
    /// The outboard's length does not match the stream's tree.
    #[error(
        "outboard is {have} bytes, but a tree of {groups} hash groups over {stream_len} stream bytes has {need} ({NODE_LEN} per parent node)"
    )]
    OutboardLen {
        have: u64,
        need: u64,
        groups: u64,
        stream_len: u64,
    },
    /// The data handed to a verification is not the bytes of whole groups of this tree.
    #[error(
        "{len} bytes from stream offset {offset} are not whole hash groups of this tree ({groups} groups of {group_len} bytes over {stream_len} stream bytes)"
    )]
    Span {
        offset: u64,
        len: u64,
        groups: u64,
        group_len: u64,
        stream_len: u64,
    },
    /// Groups whose bytes do not hash to what the tree records.
    #[error("BLAKE3 mismatch in {}", describe(.bad, *.group_log))]
    Groups { bad: Vec<Range<u64>>, group_log: u8 },
    /// Tree nodes that do not hash to their parent (or to the root): the groups below
    /// them cannot be verified.
    #[error("damaged hash tree: the nodes above {} do not hash to the root", describe(.bad, *.group_log))]
    Nodes { bad: Vec<Range<u64>>, group_log: u8 },
    /// The root of a tree without nodes (empty stream) is not BLAKE3 of nothing.
    #[error("hash tree root {found} does not match the empty stream's {expected}")]
    EmptyRoot { found: String, expected: String },
}

impl TreeError {
    /// The groups that failed, for [`TreeError::Groups`] and [`TreeError::Nodes`].
    pub fn bad_groups(&self) -> &[Range<u64>] {
        match self {
            TreeError::Groups { bad, .. } | TreeError::Nodes { bad, .. } => bad,
            _ => &[],
        }
    }
}

fn describe(bad: &[Range<u64>], group_log: u8) -> String {
    let mut parts: Vec<String> = bad
        .iter()
        .take(8)
        .map(|r| {
            let at = r.start << group_log;
            if r.end - r.start == 1 {
                format!("hash group {} (from stream byte {at})", r.start)
            } else {
                format!("hash groups {}..{} (from stream byte {at})", r.start, r.end)
            }
        })
        .collect();
    if bad.len() > 8 {
        parts.push(format!("{} more ranges", bad.len() - 8));
    }
    parts.join(", ")
}

/// Append `r` to a sorted list of ranges, joining it to the last one when they touch.
fn push_range(list: &mut Vec<Range<u64>>, r: Range<u64>) {
    if r.is_empty() {
        return;
    }
    match list.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => list.push(r),
    }
}

/// Groups in the left subtree of a subtree of `count >= 2` groups: the largest power of
/// two strictly below `count` (BLAKE3's `left_subtree_len`, counted in groups).
fn left_groups(count: u64) -> u64 {
    debug_assert!(count >= 2);
    1 << (63 - (count - 1).leading_zeros())
}

/// The size of a stream's tree: group size and stream length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    group_log: u8,
    stream_len: u64,
}

impl Shape {
    /// The tree over `stream_len` bytes in groups of `2^group_log` bytes.
    pub fn new(group_log: u8, stream_len: u64) -> Result<Shape, TreeError> {
        if !(MIN_GROUP_LOG..=MAX_GROUP_LOG).contains(&group_log) {
            return Err(TreeError::GroupLog(group_log));
        }
        Ok(Shape {
            group_log,
            stream_len,
        })
    }
    /// `log2` of the group size.
    pub fn group_log(&self) -> u8 {
        self.group_log
    }
    /// Group size in bytes.
    pub fn group_len(&self) -> u64 {
        1 << self.group_log
    }
    /// Bytes of stream the tree covers.
    pub fn stream_len(&self) -> u64 {
        self.stream_len
    }
    /// Number of groups: `ceil(stream_len / group_len)`.
    pub fn group_count(&self) -> u64 {
        fmt::group_count(self.group_log, self.stream_len)
    }
    /// Number of parent nodes: `max(groups, 1) - 1`.
    pub fn node_count(&self) -> u64 {
        fmt::node_count(self.group_count())
    }
    /// Outboard size in bytes: `64 * node_count`.
    pub fn outboard_len(&self) -> u64 {
        NODE_LEN as u64 * self.node_count()
    }
    /// Stream bytes of group `g` (the last group may be short).
    pub fn group_bytes(&self, g: u64) -> Range<u64> {
        let start = g << self.group_log;
        start..(start + self.group_len()).min(self.stream_len)
    }
    /// The groups that hold any of the stream bytes `bytes` (clamped to the stream), and
    /// the stream bytes those whole groups span: what a read of `bytes` must verify.
    pub fn groups_for(&self, bytes: Range<u64>) -> (Range<u64>, Range<u64>) {
        let end = bytes.end.min(self.stream_len);
        let start = bytes.start.min(end);
        if start == end {
            let g = start >> self.group_log;
            return (g..g, start..start);
        }
        let groups = (start >> self.group_log)..fmt::group_count(self.group_log, end);
        let span =
            (groups.start << self.group_log)..(groups.end << self.group_log).min(self.stream_len);
        (groups, span)
    }

    /// The groups that `data`, starting at stream offset `offset`, holds exactly.
    fn span(&self, offset: u64, data: &[u8]) -> Result<Range<u64>, TreeError> {
        self.span_of(offset, data.len() as u64)
    }

    /// The groups that `len` bytes starting at stream offset `offset` hold exactly.
    fn span_of(&self, offset: u64, len: u64) -> Result<Range<u64>, TreeError> {
        let end = offset.checked_add(len);
        let whole = offset & (self.group_len() - 1) == 0
            && len > 0
            && end.is_some_and(|e| {
                e <= self.stream_len && (e == self.stream_len || e & (self.group_len() - 1) == 0)
            });
        if !whole {
            return Err(TreeError::Span {
                offset,
                len,
                groups: self.group_count(),
                group_len: self.group_len(),
                stream_len: self.stream_len,
            });
        }
        let first = offset >> self.group_log;
        Ok(first..first + fmt::group_count(self.group_log, len))
    }
}

/// The chaining value of group `g` whose bytes are `bytes` (at most one group, never
/// empty). Hashes the group's chunks side by side (BLAKE3's SIMD across chunks).
fn group_cv(group_log: u8, g: u64, bytes: &[u8]) -> ChainingValue {
    let mut h = Hasher::new();
    h.set_input_offset(g << group_log);
    h.update(bytes);
    h.finalize_non_root()
}

/// Chaining values of the whole groups `data` holds, the first being group `first`: on
/// every core of the current rayon pool when there are more than two groups.
pub fn group_cvs(group_log: u8, first: u64, data: &[u8]) -> Vec<ChainingValue> {
    let len = 1usize << group_log;
    if data.len() <= 2 * len {
        data.chunks(len)
            .enumerate()
            .map(|(i, c)| group_cv(group_log, first + i as u64, c))
            .collect()
    } else {
        data.par_chunks(len)
            .enumerate()
            .map(|(i, c)| group_cv(group_log, first + i as u64, c))
            .collect()
    }
}

/// What a node must hash to: the root hash at the top, a chaining value below.
#[derive(Clone, Copy)]
enum Expect<'a> {
    Root(&'a Hash),
    Cv(&'a ChainingValue),
}

impl Expect<'_> {
    fn matches_parent(&self, left: &ChainingValue, right: &ChainingValue) -> bool {
        match self {
            Expect::Root(h) => merge_subtrees_root(left, right, Mode::Hash) == **h,
            Expect::Cv(cv) => merge_subtrees_non_root(left, right, Mode::Hash) == **cv,
        }
    }
}

/// A stream's tree: its root and its outboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// `blake3::hash` of the stream.
    pub root: Hash,
    /// The parent nodes in pre-order.
    pub outboard: Outboard,
}

impl Tree {
    /// The tree of a whole stream in memory, hashing groups on every core of the current
    /// rayon pool.
    pub fn compute(group_log: u8, stream: &[u8]) -> Result<Tree, TreeError> {
        let shape = Shape::new(group_log, stream.len() as u64)?;
        Ok(match shape.group_count() {
            0 | 1 => Tree {
                root: blake3::hash(stream),
                outboard: Outboard::empty(shape),
            },
            _ => Tree::from_group_cvs(shape, &group_cvs(group_log, 0, stream)),
        })
    }

    /// Build the tree from the chaining values of all (at least two) groups.
    fn from_group_cvs(shape: Shape, cvs: &[ChainingValue]) -> Tree {
        debug_assert!(cvs.len() >= 2 && cvs.len() as u64 == shape.group_count());
        let mut nodes = Vec::with_capacity(shape.outboard_len() as usize);
        let (left, right) = build(cvs, &mut nodes);
        Tree {
            root: merge_subtrees_root(&left, &right, Mode::Hash),
            outboard: Outboard { shape, nodes },
        }
    }
}

/// Append the pre-order nodes of the subtree over `cvs` (at least two groups) and return
/// its top node's two children.
fn build(cvs: &[ChainingValue], nodes: &mut Vec<u8>) -> (ChainingValue, ChainingValue) {
    let at = nodes.len();
    nodes.extend_from_slice(&[0; NODE_LEN]);
    let p = left_groups(cvs.len() as u64) as usize;
    let mut side = |part: &[ChainingValue]| match part {
        [one] => *one,
        _ => {
            let (l, r) = build(part, nodes);
            merge_subtrees_non_root(&l, &r, Mode::Hash)
        }
    };
    let left = side(&cvs[..p]);
    let right = side(&cvs[p..]);
    nodes[at..at + 32].copy_from_slice(&left);
    nodes[at + 32..at + NODE_LEN].copy_from_slice(&right);
    (left, right)
}

/// Incremental tree of a stream fed in order, in pieces of any size: the packer feeds
/// each block's stored bytes as it writes them and takes the tree at the end. Pieces that
/// are whole groups hash fastest (all chunks of a group side by side). Memory: one
/// chaining value (32 bytes) per group until [`TreeBuilder::finish`].
#[derive(Debug, Clone)]
pub struct TreeBuilder {
    group_log: u8,
    len: u64,
    group: Hasher,
    in_group: u64,
    cvs: Vec<ChainingValue>,
}

impl TreeBuilder {
    /// A builder for groups of `2^group_log` bytes.
    pub fn new(group_log: u8) -> Result<TreeBuilder, TreeError> {
        Shape::new(group_log, 0)?;
        Ok(TreeBuilder {
            group_log,
            len: 0,
            group: Hasher::new(),
            in_group: 0,
            cvs: Vec::new(),
        })
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feed the next bytes of the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        let group_len = 1u64 << self.group_log;
        while !data.is_empty() {
            if self.in_group == group_len {
                // A full group, and more follows: it is not the only group, so its
                // chaining value is final.
                self.cvs.push(self.group.finalize_non_root());
                self.group = Hasher::new();
                self.group.set_input_offset(self.len);
                self.in_group = 0;
            }
            let take = ((group_len - self.in_group) as usize).min(data.len());
            self.group.update(&data[..take]);
            self.in_group += take as u64;
            self.len += take as u64;
            data = &data[take..];
        }
    }

    /// The tree of everything fed.
    pub fn finish(mut self) -> Tree {
        let shape = Shape {
            group_log: self.group_log,
            stream_len: self.len,
        };
        if self.cvs.is_empty() {
            // Zero or one group: the group is the root (offset 0, so `finalize` is valid).
            return Tree {
                root: self.group.finalize(),
                outboard: Outboard::empty(shape),
            };
        }
        self.cvs.push(self.group.finalize_non_root());
        Tree::from_group_cvs(shape, &self.cvs)
    }
}

/// The parent nodes of a stream's tree, in pre-order, owned (`Vec<u8>`, the default) or
/// borrowed from a parsed chunk (`&[u8]`, see [`Outboard::from_chunk`]). Its length always
/// matches its [`Shape`]; nothing is trusted until checked against a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outboard<B = Vec<u8>> {
    shape: Shape,
    nodes: B,
}

impl Outboard {
    fn empty(shape: Shape) -> Outboard {
        Outboard {
            shape,
            nodes: Vec::new(),
        }
    }
}

impl<'a> Outboard<&'a [u8]> {
    /// The outboard of a parsed HB3T chunk, borrowing its nodes. The chunk's root is in
    /// `chunk.header.root`.
    pub fn from_chunk(chunk: &fmt::OutboardChunk<'a>) -> Result<Self, TreeError> {
        let shape = Shape::new(chunk.header.group_log, chunk.header.stream_len)?;
        Outboard::new(shape, chunk.nodes)
    }
}

impl<B: AsRef<[u8]>> Outboard<B> {
    /// Wrap `nodes`, which must be exactly `shape.outboard_len()` bytes.
    pub fn new(shape: Shape, nodes: B) -> Result<Self, TreeError> {
        let have = nodes.as_ref().len() as u64;
        if have != shape.outboard_len() {
            return Err(TreeError::OutboardLen {
                have,
                need: shape.outboard_len(),
                groups: shape.group_count(),
                stream_len: shape.stream_len,
            });
        }
        Ok(Outboard { shape, nodes })
    }

    /// The tree's shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The nodes' bytes, in pre-order.
    pub fn as_bytes(&self) -> &[u8] {
        self.nodes.as_ref()
    }

    fn node(&self, i: u64) -> (ChainingValue, ChainingValue) {
        let at = i as usize * NODE_LEN;
        let n = &self.nodes.as_ref()[at..at + NODE_LEN];
        (
            n[..32].try_into().expect("32 bytes"),
            n[32..].try_into().expect("32 bytes"),
        )
    }

    /// Verify `data`, the bytes of whole groups starting at stream offset `offset`,
    /// against `root`, hashing the nodes on their paths. On failure the error names
    /// exactly the groups of `data` that do not verify; the others are good.
    pub fn verify(&self, root: &Hash, offset: u64, data: &[u8]) -> Result<(), TreeError> {
        let want = self.shape.span(offset, data)?;
        let group_log = self.shape.group_log;
        if self.shape.group_count() == 1 {
            return if blake3::hash(data) == *root {
                Ok(())
            } else {
                Err(TreeError::Groups {
                    bad: vec![want],
                    group_log,
                })
            };
        }
        let cvs = group_cvs(group_log, want.start, data);
        let mut walk = Walk {
            outboard: self,
            want: want.clone(),
            cvs: &cvs,
            bad_nodes: Vec::new(),
            bad_groups: Vec::new(),
            visited: None,
        };
        walk.subtree(0, 0, self.shape.group_count(), Expect::Root(root));
        walk.into_result(group_log)
    }

    /// The indices of the nodes that [`Outboard::verify`] reads for `groups`: a reader
    /// that fetches nodes lazily fetches these (sorted; node `i` is at byte `64 * i`).
    pub fn path_nodes(&self, groups: Range<u64>) -> Vec<u64> {
        let n = self.shape.group_count();
        let groups = groups.start.min(n)..groups.end.min(n);
        let mut visited = Vec::new();
        if n < 2 || groups.is_empty() {
            return visited;
        }
        let mut walk = Walk {
            outboard: self,
            want: groups,
            cvs: &[],
            bad_nodes: Vec::new(),
            bad_groups: Vec::new(),
            visited: Some(&mut visited),
        };
        walk.subtree(0, 0, n, Expect::Root(&Hash::from_bytes([0; 32])));
        visited
    }

    /// Check every node against `root` (`node_count` merges, no stream bytes). On success
    /// the group chaining values are trusted and later reads hash only their own groups.
    /// On failure the error names the groups under damaged nodes.
    pub fn check(self, root: &Hash) -> Result<CheckedTree<B>, TreeError> {
        let n = self.shape.group_count();
        if n == 0 {
            let empty = blake3::hash(&[]);
            if *root != empty {
                return Err(TreeError::EmptyRoot {
                    found: root.to_hex().to_string(),
                    expected: empty.to_hex().to_string(),
                });
            }
        }
        if n >= 2 {
            let mut bad = Vec::new();
            self.check_subtree(0, 0, n, Expect::Root(root), &mut bad);
            if !bad.is_empty() {
                return Err(TreeError::Nodes {
                    bad,
                    group_log: self.shape.group_log,
                });
            }
        }
        Ok(CheckedTree {
            outboard: self,
            root: *root,
        })
    }

    fn check_subtree(
        &self,
        node: u64,
        first: u64,
        count: u64,
        expect: Expect<'_>,
        bad: &mut Vec<Range<u64>>,
    ) {
        if count == 1 {
            return;
        }
        let (l, r) = self.node(node);
        if !expect.matches_parent(&l, &r) {
            push_range(bad, first..first + count);
            return;
        }
        let p = left_groups(count);
        self.check_subtree(node + 1, first, p, Expect::Cv(&l), bad);
        self.check_subtree(node + p, first + p, count - p, Expect::Cv(&r), bad);
    }
}

/// One walk from the root down to the groups `want`.
struct Walk<'o, 'c, 'v, B> {
    outboard: &'o Outboard<B>,
    want: Range<u64>,
    /// Chaining values of the groups `want`, or empty when only listing nodes.
    cvs: &'c [ChainingValue],
    bad_nodes: Vec<Range<u64>>,
    bad_groups: Vec<Range<u64>>,
    /// When set, only record the nodes visited; hash nothing.
    visited: Option<&'v mut Vec<u64>>,
}

impl<B: AsRef<[u8]>> Walk<'_, '_, '_, B> {
    /// The subtree of `count` groups from group `first`, whose top node (when `count >=
    /// 2`) is node `node`.
    fn subtree(&mut self, node: u64, first: u64, count: u64, expect: Expect<'_>) {
        if count == 1 {
            if self.visited.is_none() {
                let Expect::Cv(cv) = expect else {
                    unreachable!("a tree of two or more groups has a parent at its root")
                };
                if self.cvs[(first - self.want.start) as usize] != *cv {
                    push_range(&mut self.bad_groups, first..first + 1);
                }
            }
            return;
        }
        let (l, r) = self.outboard.node(node);
        if let Some(v) = self.visited.as_mut() {
            v.push(node);
        } else if !expect.matches_parent(&l, &r) {
            let under = first.max(self.want.start)..(first + count).min(self.want.end);
            push_range(&mut self.bad_nodes, under);
            return;
        }
        let p = left_groups(count);
        if self.want.start < first + p {
            self.subtree(node + 1, first, p, Expect::Cv(&l));
        }
        if self.want.end > first + p {
            self.subtree(node + p, first + p, count - p, Expect::Cv(&r));
        }
    }

    fn into_result(self, group_log: u8) -> Result<(), TreeError> {
        if !self.bad_nodes.is_empty() {
            // Report every group that failed; damaged nodes explain the most.
            let mut bad = self.bad_nodes;
            bad.extend(self.bad_groups);
            bad.sort_by_key(|r| r.start);
            let mut joined = Vec::new();
            for r in bad {
                push_range(&mut joined, r);
            }
            return Err(TreeError::Nodes {
                bad: joined,
                group_log,
            });
        }
        if !self.bad_groups.is_empty() {
            return Err(TreeError::Groups {
                bad: self.bad_groups,
                group_log,
            });
        }
        Ok(())
    }
}

/// `Ok` when no group failed, else the groups that did.
fn groups_result(bad: Vec<Range<u64>>, group_log: u8) -> Result<(), TreeError> {
    if bad.is_empty() {
        Ok(())
    } else {
        Err(TreeError::Groups { bad, group_log })
    }
}

/// An outboard whose every node hashes up to the root: only [`Outboard::check`] builds
/// one. Verifying a read hashes its groups and compares each to its recorded chaining
/// value; no node is hashed again.
#[derive(Debug, Clone)]
pub struct CheckedTree<B = Vec<u8>> {
    outboard: Outboard<B>,
    root: Hash,
}

impl<B: AsRef<[u8]>> CheckedTree<B> {
    /// The root the nodes were checked against.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The tree's shape.
    pub fn shape(&self) -> Shape {
        self.outboard.shape
    }

    /// The recorded chaining value of group `g` (`g < groups`, two or more groups): found
    /// by walking from the root with index arithmetic, hashing nothing.
    fn recorded_cv(&self, g: u64) -> ChainingValue {
        let (mut node, mut first, mut count) = (0, 0, self.shape().group_count());
        loop {
            let p = left_groups(count);
            let (l, r) = self.outboard.node(node);
            if g < first + p {
                if p == 1 {
                    return l;
                }
                node += 1;
                count = p;
            } else {
                if count - p == 1 {
                    return r;
                }
                node += p;
                first += p;
                count -= p;
            }
        }
    }

    /// Verify `data`, the bytes of whole groups starting at stream offset `offset`. On
    /// failure the error names exactly the groups of `data` that do not verify.
    pub fn verify(&self, offset: u64, data: &[u8]) -> Result<(), TreeError> {
        let shape = self.shape();
        let want = shape.span(offset, data)?;
        let bad = if shape.group_count() == 1 {
            if blake3::hash(data) == self.root {
                Vec::new()
            } else {
                vec![want]
            }
        } else {
            let mut bad = Vec::new();
            for (g, cv) in want
                .clone()
                .zip(group_cvs(shape.group_log, want.start, data))
            {
                if cv != self.recorded_cv(g) {
                    push_range(&mut bad, g..g + 1);
                }
            }
            bad
        };
        groups_result(bad, shape.group_log)
    }

    /// [`CheckedTree::verify`] of bytes held in pieces: `parts`, back to back, are the
    /// bytes of whole groups starting at stream offset `offset`. Groups that lie within
    /// one part are hashed where they are; only a group that straddles parts is copied
    /// (one group at most at a time), so callers need not gather the parts first. Runs
    /// of more than two groups are hashed on the current rayon pool.
    pub fn verify_parts(&self, offset: u64, parts: &[&[u8]]) -> Result<(), TreeError> {
        self.verify_parts_in(offset, parts, true)
    }

    /// [`CheckedTree::verify_parts`] hashing every group on the calling thread, for
    /// callers that already run side by side (the mount's readers and prefetch
    /// threads): handing their runs to the rayon pool cost more in wake-ups than
    /// it gained there.
    pub fn verify_parts_here(&self, offset: u64, parts: &[&[u8]]) -> Result<(), TreeError> {
        self.verify_parts_in(offset, parts, false)
    }

    fn verify_parts_in(&self, offset: u64, parts: &[&[u8]], pool: bool) -> Result<(), TreeError> {
        let shape = self.shape();
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let want = shape.span_of(offset, len)?;
        let mut bad = Vec::new();
        if shape.group_count() == 1 {
            let mut h = Hasher::new();
            for p in parts {
                h.update(p);
            }
            if h.finalize() != self.root {
                bad.push(want);
            }
        } else {
            let log = shape.group_log;
            let group_len = shape.group_len() as usize;
            let mut check = |g: u64, cv: ChainingValue| {
                if cv != self.recorded_cv(g) {
                    push_range(&mut bad, g..g + 1);
                }
            };
            let mut parts = parts.iter().copied().filter(|p| !p.is_empty());
            let mut rest: &[u8] = &[];
            let mut scratch = Vec::new();
            let mut g = want.start;
            while g < want.end {
                if rest.is_empty() {
                    rest = parts
                        .next()
                        .expect("the parts hold every group of the span");
                }
                let whole = ((rest.len() / group_len) as u64).min(want.end - g);
                if whole > 0 {
                    let (run, tail) = rest.split_at(whole as usize * group_len);
                    if pool {
                        for (k, cv) in group_cvs(log, g, run).into_iter().enumerate() {
                            check(g + k as u64, cv);
                        }
                    } else {
                        for (k, c) in run.chunks(group_len).enumerate() {
                            let gk = g + k as u64;
                            check(gk, group_cv(log, gk, c));
                        }
                    }
                    g += whole;
                    rest = tail;
                    continue;
                }
                // Group g starts here and goes on in the next parts (or is the stream's
                // short last group).
                let need = (shape.stream_len() - (g << log)).min(group_len as u64) as usize;
                scratch.clear();
                while scratch.len() < need {
                    if rest.is_empty() {
                        rest = parts
                            .next()
                            .expect("the parts hold every group of the span");
                    }
                    let take = rest.len().min(need - scratch.len());
                    scratch.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                }
                check(g, group_cv(log, g, &scratch));
                g += 1;
            }
        }
        groups_result(bad, shape.group_log)
    }
}

#[cfg(test)]
mod tests;
