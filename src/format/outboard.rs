//! The BLAKE3 outboard chunk (`HB3T`) of the h4fs v2 layout: bytes <-> struct.
//!
//! The hashing side is `integrity::tree`; `docs/FORMAT.md` §10 specifies the chunk byte by
//! byte, where it goes in a container and how the structure root binds it, and gives the
//! reasons for each choice.
//!
//! The stored stream (the CORE payloads in index order, concatenated) is cut into hash
//! groups of `2^group_log` bytes (the last one may be short) and hashed as a BLAKE3 tree,
//! so `root` is exactly `blake3(stored stream)`. The chunk keeps the tree's parent nodes
//! in pre-order (a node, then its left subtree, then its right subtree), as bao does:
//!
//! ```text
//! HB3T payload = u32 version (1)
//!              | u8  group_log        10 ..= 24 (1 KiB ..= 16 MiB groups)
//!              | [3] zero
//!              | u64 stream_len       bytes of the stored stream the tree covers
//!              | u64 node_count       max(groups, 1) - 1, groups = ceil(stream_len / 2^group_log)
//!              | [32] root            BLAKE3 hash of the stored stream
//!              | node_count × (left chaining value [32] | right chaining value [32])
//! ```
//!
//! Integers are big-endian, like the rest of layout A. Everything is fixed by the header,
//! so the payload length is exactly `HEADER_LEN + NODE_LEN * node_count`; a payload that
//! is shorter, longer, or whose `node_count` does not follow from `stream_len` and
//! `group_log` is refused before any node is looked at. Parsing borrows the nodes and never
//! allocates.

use super::be64;
use crate::error::{Error, Result, Tag};

/// Chunk tag of the outboard.
pub const TAG: Tag = Tag::HB3T;
/// Version in the outboard header; others are refused.
pub const VERSION: u32 = 1;
/// Fixed header before the nodes.
pub const HEADER_LEN: usize = 56;
/// One parent node: the chaining values of its left and right child.
pub const NODE_LEN: usize = 64;
/// Smallest hash group: one BLAKE3 chunk (1 KiB).
pub const MIN_GROUP_LOG: u8 = 10;
/// Largest hash group: 16 MiB. Bigger groups would make a small read hash as much as
/// the v1 block hashes it replaces; a reader may allocate one group.
pub const MAX_GROUP_LOG: u8 = 24;
/// Default hash group: 16 KiB, sixteen BLAKE3 chunks, which AVX-512 hashes side by side.
pub const DEFAULT_GROUP_LOG: u8 = 14;

/// Number of hash groups of a stream: `ceil(stream_len / 2^group_log)` (0 for an empty
/// stream). `group_log` must be at most 63.
pub fn group_count(group_log: u8, stream_len: u64) -> u64 {
    let whole = stream_len >> group_log;
    let partial = stream_len & ((1u64 << group_log) - 1) != 0;
    whole + u64::from(partial)
}

/// Parent nodes of the tree over `groups` hash groups: one fewer than the groups (a tree
/// of one group is its own root; an empty stream has no group and no node).
pub fn node_count(groups: u64) -> u64 {
    groups.saturating_sub(1)
}

/// The outboard header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboardHeader {
    /// Hash groups are `2^group_log` bytes.
    pub group_log: u8,
    /// Bytes of the stored stream covered by the tree.
    pub stream_len: u64,
    /// Parent nodes that follow the header.
    pub node_count: u64,
    /// BLAKE3 hash of the stored stream.
    pub root: [u8; 32],
}

impl OutboardHeader {
    /// Hash group size in bytes.
    pub fn group_len(&self) -> u64 {
        1 << self.group_log
    }

    /// Number of hash groups.
    pub fn group_count(&self) -> u64 {
        group_count(self.group_log, self.stream_len)
    }

    /// Payload length this header implies: header plus every node.
    pub fn payload_len(&self) -> u64 {
        // node_count < 2^54 once checked (stream_len < 2^64, groups >= 2^10 bytes).
        HEADER_LEN as u64 + NODE_LEN as u64 * self.node_count
    }

    /// Parse and check the first [`HEADER_LEN`] bytes of an HB3T payload at file offset
    /// `offset` (the payload's). Checks everything the header alone can say; the nodes
    /// are checked by [`parse`]. A reader that fetches nodes lazily starts here.
    pub fn parse(bytes: &[u8], offset: u64) -> Result<OutboardHeader> {
        let bad = |msg: String| Error::Chunk {
            tag: TAG,
            offset,
            msg,
        };
        if bytes.len() < HEADER_LEN {
            return Err(bad(format!(
                "outboard header is {} bytes, needs {HEADER_LEN}",
                bytes.len()
            )));
        }
        let version = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(bad(format!(
                "outboard version {version} is not supported (expected {VERSION})"
            )));
        }
        let group_log = bytes[4];
        if !(MIN_GROUP_LOG..=MAX_GROUP_LOG).contains(&group_log) {
            return Err(bad(format!(
                "hash group size 2^{group_log} is out of range (2^{MIN_GROUP_LOG} = 1 KiB ..= 2^{MAX_GROUP_LOG} = 16 MiB)"
            )));
        }
        if bytes[5..8] != [0; 3] {
            return Err(bad(format!(
                "reserved header bytes 5..8 must be zero, found {:02x?}",
                &bytes[5..8]
            )));
        }
        let stream_len = be64(bytes, 8);
        let node_count = be64(bytes, 16);
        let groups = group_count(group_log, stream_len);
        let expected = self::node_count(groups);
        if node_count != expected {
            return Err(bad(format!(
                "header claims {node_count} tree nodes, but {groups} hash groups of 2^{group_log} bytes over {stream_len} stream bytes have {expected}"
            )));
        }
        Ok(OutboardHeader {
            group_log,
            stream_len,
            node_count,
            root: bytes[24..56].try_into().expect("32 bytes"),
        })
    }

    /// The [`HEADER_LEN`] bytes of this header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&VERSION.to_be_bytes());
        b[4] = self.group_log;
        b[8..16].copy_from_slice(&self.stream_len.to_be_bytes());
        b[16..24].copy_from_slice(&self.node_count.to_be_bytes());
        b[24..56].copy_from_slice(&self.root);
        b
    }

    /// Check that the tree covers exactly the `stream_len` bytes the index describes:
    /// a tree over fewer (or more) bytes cannot vouch for the stream.
    pub fn check_covers(&self, stream_len: u64, offset: u64) -> Result<()> {
        if self.stream_len == stream_len {
            return Ok(());
        }
        Err(Error::Chunk {
            tag: TAG,
            offset,
            msg: format!(
                "the hash tree covers {} stream bytes, but the block index describes {stream_len}",
                self.stream_len
            ),
        })
    }
}

/// A parsed outboard: the header and the nodes, borrowed from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboardChunk<'a> {
    /// The checked header.
    pub header: OutboardHeader,
    /// `header.node_count` nodes of [`NODE_LEN`] bytes, in pre-order.
    pub nodes: &'a [u8],
}

/// Parse a whole HB3T payload found at file offset `offset` (the payload's). The length
/// must be exactly what the header implies.
pub fn parse(payload: &[u8], offset: u64) -> Result<OutboardChunk<'_>> {
    let header = OutboardHeader::parse(payload, offset)?;
    let need = header.payload_len();
    let have = payload.len() as u64;
    if have != need {
        let (what, by) = if have < need {
            ("truncated", need - have)
        } else {
            ("too long", have - need)
        };
        return Err(Error::Chunk {
            tag: TAG,
            offset,
            msg: format!(
                "outboard {what} by {by} bytes: {} nodes need a payload of {need} bytes ({HEADER_LEN} + {NODE_LEN} per node), found {have}",
                header.node_count
            ),
        });
    }
    Ok(OutboardChunk {
        header,
        nodes: &payload[HEADER_LEN..],
    })
}

/// The HB3T payload for `header` and its `nodes` (which must be `header.node_count`
/// nodes long).
pub fn encode(header: &OutboardHeader, nodes: &[u8]) -> Vec<u8> {
    assert_eq!(
        nodes.len() as u64,
        NODE_LEN as u64 * header.node_count,
        "nodes must match the header's node count"
    );
    let mut out = Vec::with_capacity(HEADER_LEN + nodes.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(nodes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(group_log: u8, stream_len: u64) -> OutboardHeader {
        OutboardHeader {
            group_log,
            stream_len,
            node_count: node_count(group_count(group_log, stream_len)),
            root: [7; 32],
        }
    }

    fn payload(h: &OutboardHeader) -> Vec<u8> {
        encode(h, &vec![0xab; NODE_LEN * h.node_count as usize])
    }

    fn err(payload: &[u8]) -> String {
        parse(payload, 1000)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn group_and_node_counts() {
        assert_eq!(group_count(14, 0), 0);
        assert_eq!(group_count(14, 1), 1);
        assert_eq!(group_count(14, 16384), 1);
        assert_eq!(group_count(14, 16385), 2);
        assert_eq!(group_count(10, u64::MAX), 1 << 54);
        assert_eq!(node_count(0), 0);
        assert_eq!(node_count(1), 0);
        assert_eq!(node_count(5), 4);
    }

    #[test]
    fn round_trip() {
        for (log, len) in [(10, 0), (14, 1), (14, 16384), (14, 100_000), (24, 1 << 26)] {
            let h = header(log, len);
            let p = payload(&h);
            let c = parse(&p, 0).unwrap();
            assert_eq!(c.header, h);
            assert_eq!(c.nodes.len() as u64, h.node_count * NODE_LEN as u64);
            assert_eq!(encode(&c.header, c.nodes), p);
        }
    }

    #[test]
    fn truncated_header() {
        let p = payload(&header(14, 100_000));
        for n in [0, 1, 55] {
            let e = err(&p[..n]);
            assert!(e.contains("HB3T at offset 1000"), "{e}");
            assert!(e.contains(&format!("header is {n} bytes, needs 56")), "{e}");
        }
    }

    #[test]
    fn truncated_and_too_long_payloads() {
        let h = header(14, 100_000); // 7 groups, 6 nodes, 56 + 384 bytes
        let p = payload(&h);
        assert_eq!(p.len(), 440);
        let e = err(&p[..439]);
        assert!(e.contains("truncated by 1 bytes"), "{e}");
        assert!(e.contains("payload of 440 bytes"), "{e}");
        let mut long = p.clone();
        long.extend_from_slice(&[0; 64]);
        let e = err(&long);
        assert!(e.contains("too long by 64 bytes"), "{e}");
    }

    #[test]
    fn header_lying_about_its_size() {
        let h = header(14, 100_000);
        // One node fewer or more than the stream length implies, with a payload that
        // matches the lie: refused from the header alone.
        for lie in [5u64, 7, u64::MAX] {
            let mut p = h.encode().to_vec();
            p[16..24].copy_from_slice(&lie.to_be_bytes());
            p.resize(HEADER_LEN + NODE_LEN * 6, 0);
            let e = err(&p);
            assert!(
                e.contains(&format!("claims {lie} tree nodes")) && e.contains("have 6"),
                "{e}"
            );
        }
        // A stream length that implies an enormous tree is a length error, with no
        // allocation: the payload is checked against the header, never the reverse.
        let mut p = header(10, u64::MAX).encode().to_vec();
        p.extend_from_slice(&[0; 64]);
        let e = err(&p);
        assert!(e.contains("truncated"), "{e}");
        assert!(e.contains(&format!("{} nodes", (1u64 << 54) - 1)), "{e}");
    }

    #[test]
    fn absurd_group_sizes_version_and_reserved_bytes() {
        let p = payload(&header(14, 100));
        for log in [0u8, 9, 25, 63, 64, 255] {
            let mut q = p.clone();
            q[4] = log;
            let e = err(&q);
            assert!(e.contains(&format!("2^{log} is out of range")), "{e}");
        }
        let mut q = p.clone();
        q[3] = 2;
        assert!(err(&q).contains("version 2 is not supported"));
        let mut q = p.clone();
        q[6] = 1;
        assert!(err(&q).contains("reserved header bytes"));
    }

    #[test]
    fn covers_exactly_the_index() {
        let h = header(14, 100_000);
        h.check_covers(100_000, 5).unwrap();
        let e = h.check_covers(100_001, 5).unwrap_err().to_string();
        assert!(
            e.contains("covers 100000 stream bytes, but the block index describes 100001"),
            "{e}"
        );
    }
}
