// Lists of group ranges are what the verifier returns; a list of one range is meant.
#![allow(clippy::single_range_in_vec_init)]

use super::*;
use proptest::prelude::*;

/// Deterministic pseudo-random bytes (xorshift64*).
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Group ranges of the nodes in pre-order, computed independently of the tree code by
/// splitting the way BLAKE3 splits: left = largest power of two below the count.
fn node_groups(first: u64, count: u64, out: &mut Vec<Range<u64>>) {
    if count < 2 {
        return;
    }
    out.push(first..first + count);
    let mut p = 1;
    while p * 2 < count {
        p *= 2;
    }
    node_groups(first, p, out);
    node_groups(first + p, count - p, out);
}

const G: usize = 1 << 14;

fn lengths() -> Vec<usize> {
    vec![
        0,
        1,
        1023,
        1024,
        1025,
        G - 1,
        G,
        G + 1,
        2 * G,
        2 * G + 1,
        3 * G,
        5 * G + 7,
        8 * G,
        16 * G - 1,
        17 * G + 1000,
        100 * G + 3,
    ]
}

#[test]
fn root_is_blake3_of_the_stream_for_many_lengths() {
    for len in lengths() {
        let data = bytes(len, len as u64);
        for log in [10, 11, 14] {
            let t = Tree::compute(log, &data).unwrap();
            assert_eq!(t.root, blake3::hash(&data), "len {len}, 2^{log}");
            assert_eq!(
                t.outboard.as_bytes().len() as u64,
                t.outboard.shape().outboard_len()
            );
        }
    }
}

#[test]
fn builder_fed_in_pieces_gives_the_same_tree() {
    for len in lengths() {
        let data = bytes(len, 99 + len as u64);
        let whole = Tree::compute(14, &data).unwrap();
        for piece in [1, 1000, 4096, G, 3 * G + 5] {
            if piece == 1 && len > 4 * G {
                continue; // byte by byte is slow in debug builds; short lengths cover it
            }
            let mut b = TreeBuilder::new(14).unwrap();
            for p in data.chunks(piece) {
                b.update(p);
            }
            b.update(&[]);
            assert_eq!(b.len(), len as u64);
            assert_eq!(b.finish(), whole, "len {len}, pieces of {piece}");
        }
    }
}

#[test]
fn outboard_size_is_64_bytes_per_group_but_one() {
    for len in lengths()
        .into_iter()
        .map(|l| l as u64)
        .chain([1 << 30, (1 << 40) + 1, u64::MAX])
    {
        let s = Shape::new(14, len).unwrap();
        let groups = len.div_ceil(1 << 14);
        assert_eq!(s.group_count(), groups);
        assert_eq!(s.outboard_len(), 64 * groups.saturating_sub(1));
        // At most 64 / 16384 = 0.39 % of the stream, so under the 0.5 % target.
        assert!(
            s.outboard_len() as u128 * 16384 <= len as u128 * 64,
            "{len}"
        );
        assert!(s.outboard_len() as u128 * 200 <= len as u128, "{len}");
    }
    assert_eq!(
        Shape::new(14, 1 << 30).unwrap().outboard_len(),
        4 * 1024 * 1024 - 64
    );
}

#[test]
fn absurd_group_sizes_are_refused() {
    for log in [0, 9, 25, 64, 255] {
        assert_eq!(Shape::new(log, 1), Err(TreeError::GroupLog(log)));
        assert!(TreeBuilder::new(log).is_err());
        assert!(Tree::compute(log, b"x").is_err());
    }
}

#[test]
fn a_flipped_byte_fails_exactly_its_group() {
    let data = bytes(21 * G + 100, 1);
    let t = Tree::compute(14, &data).unwrap();
    let checked = t.outboard.clone().check(&t.root).unwrap();
    for g in [0u64, 1, 7, 15, 16, 20, 21] {
        for at in [0, 1, 1023, 1024, G - 1] {
            let i = g as usize * G + at;
            if i >= data.len() {
                continue;
            }
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            let want = [g..g + 1];
            let e = t.outboard.verify(&t.root, 0, &bad).unwrap_err();
            assert!(matches!(e, TreeError::Groups { .. }), "{e}");
            assert_eq!(e.bad_groups(), &want[..], "byte {i}");
            assert_eq!(checked.verify(0, &bad).unwrap_err().bad_groups(), &want[..]);
            // The group alone, and a run around it, fail the same way.
            let span = t.outboard.shape().group_bytes(g);
            let one = &bad[span.start as usize..span.end as usize];
            assert_eq!(
                t.outboard
                    .verify(&t.root, span.start, one)
                    .unwrap_err()
                    .bad_groups(),
                &want[..]
            );
            // Every other group still verifies on its own.
            for h in (0..22).filter(|&h| h != g) {
                let s = t.outboard.shape().group_bytes(h);
                let d = &bad[s.start as usize..s.end as usize];
                t.outboard.verify(&t.root, s.start, d).unwrap();
                checked.verify(s.start, d).unwrap();
            }
        }
    }
    let e = t.outboard.verify(&t.root, 0, &{
        let mut b = data.clone();
        b[3 * G] ^= 1;
        b[4 * G + 9] ^= 1;
        b[9 * G] ^= 1;
        b
    });
    let e = e.unwrap_err();
    assert_eq!(e.bad_groups(), &[3..5, 9..10][..]);
    assert!(
        e.to_string()
            .contains("hash groups 3..5 (from stream byte 49152), hash group 9"),
        "{e}"
    );
}

#[test]
fn a_flipped_node_fails_exactly_the_groups_below_it() {
    let data = bytes(13 * G + 5, 2);
    let t = Tree::compute(14, &data).unwrap();
    let mut under = Vec::new();
    node_groups(0, 14, &mut under);
    assert_eq!(under.len(), 13);
    for (node, groups) in under.iter().enumerate() {
        for at in [0, 31, 32, 63] {
            let mut nodes = t.outboard.as_bytes().to_vec();
            nodes[node * 64 + at] ^= 1;
            let ob = Outboard::new(t.outboard.shape(), &nodes[..]).unwrap();
            let e = ob.verify(&t.root, 0, &data).unwrap_err();
            assert!(matches!(e, TreeError::Nodes { .. }), "{e}");
            assert_eq!(e.bad_groups(), std::slice::from_ref(groups), "node {node}");
            let e = ob.clone().check(&t.root).unwrap_err();
            assert_eq!(e.bad_groups(), std::slice::from_ref(groups), "node {node}");
            assert!(e.to_string().starts_with("damaged hash tree"), "{e}");
            // Groups outside the node's subtree still verify through the damaged outboard.
            for g in (0..14).filter(|g| !groups.contains(g)) {
                let s = ob.shape().group_bytes(g);
                ob.verify(&t.root, s.start, &data[s.start as usize..s.end as usize])
                    .unwrap();
            }
        }
    }
}

#[test]
fn a_wrong_root_fails_every_group() {
    let data = bytes(5 * G, 3);
    let t = Tree::compute(14, &data).unwrap();
    let wrong = blake3::hash(b"another stream");
    let e = t.outboard.verify(&wrong, 0, &data).unwrap_err();
    assert_eq!(e.bad_groups(), &[0..5][..]);
    assert_eq!(
        t.outboard.clone().check(&wrong).unwrap_err().bad_groups(),
        &[0..5][..]
    );
    // One group: the group is the root.
    let small = bytes(G, 4);
    let t = Tree::compute(14, &small).unwrap();
    assert_eq!(t.outboard.as_bytes().len(), 0);
    t.outboard.verify(&t.root, 0, &small).unwrap();
    let e = t.outboard.verify(&wrong, 0, &small).unwrap_err();
    assert_eq!(e.bad_groups(), &[0..1][..]);
    let c = t.outboard.clone().check(&wrong).unwrap(); // nothing to check without data
    assert_eq!(c.verify(0, &small).unwrap_err().bad_groups(), &[0..1][..]);
    // Empty stream: the root must be BLAKE3 of nothing.
    let t = Tree::compute(14, &[]).unwrap();
    t.outboard.clone().check(&t.root).unwrap();
    let e = t.outboard.check(&wrong).unwrap_err();
    assert!(matches!(e, TreeError::EmptyRoot { .. }), "{e}");
}

#[test]
fn a_tree_covering_fewer_bytes_than_claimed_fails() {
    let data = bytes(10 * G, 5);
    // A tree over the first 9 groups, presented as the tree of all 10.
    let short = Tree::compute(14, &data[..9 * G]).unwrap();
    let full_shape = Shape::new(14, data.len() as u64).unwrap();
    let e = Outboard::new(full_shape, short.outboard.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "outboard is 512 bytes, but a tree of 10 hash groups over 163840 stream bytes has 576 (64 per parent node)"
    );
    // Padded to the right length, it still cannot vouch for the full stream.
    let mut padded = short.outboard.as_bytes().to_vec();
    padded.resize(576, 0);
    let ob = Outboard::new(full_shape, padded).unwrap();
    assert!(ob.verify(&short.root, 0, &data).is_err());
    assert!(ob.check(&short.root).is_err());
    // Same group count, one byte fewer: the last group fails, the others verify.
    let short = Tree::compute(14, &data[..10 * G - 1]).unwrap();
    let ob = Outboard::new(full_shape, short.outboard.as_bytes()).unwrap();
    let e = ob.verify(&short.root, 0, &data).unwrap_err();
    assert_eq!(e.bad_groups(), &[9..10][..]);
    // Bytes beyond the tree are refused as a span error, not read as verified.
    let e = short.outboard.verify(&short.root, 0, &data).unwrap_err();
    assert!(matches!(e, TreeError::Span { .. }), "{e}");
}

#[test]
fn data_that_is_not_whole_groups_is_refused() {
    let data = bytes(5 * G + 10, 6);
    let t = Tree::compute(14, &data).unwrap();
    let ob = &t.outboard;
    let c = ob.clone().check(&t.root).unwrap();
    let cases: [(u64, &[u8]); 6] = [
        (0, &[]),                      // empty
        (1, &data[1..G + 1]),          // unaligned start
        (0, &data[..G + 1]),           // ends inside a group that is not the last
        (0, &data[..5 * G + 9]),       // ends one byte before the stream
        (6 * G as u64, &data[..10]),   // beyond the stream
        (!(G as u64 - 1), &data[..G]), // offset overflow
    ];
    for (offset, d) in cases {
        let e = ob.verify(&t.root, offset, d).unwrap_err();
        assert!(matches!(e, TreeError::Span { .. }), "{offset}: {e}");
        assert!(c.verify(offset, d).is_err());
    }
    assert_eq!(
        ob.verify(&t.root, 1, &data[1..G + 1])
            .unwrap_err()
            .to_string(),
        "16384 bytes from stream offset 1 are not whole hash groups of this tree \
         (6 groups of 16384 bytes over 81930 stream bytes)"
    );
    ob.verify(&t.root, 5 * G as u64, &data[5 * G..]).unwrap();
    c.verify(4 * G as u64, &data[4 * G..]).unwrap();
}

#[test]
fn path_nodes_are_all_a_range_needs() {
    let data = bytes(37 * G + 1, 7);
    let t = Tree::compute(14, &data).unwrap();
    let shape = t.outboard.shape();
    for groups in [0..1, 5..6, 36..38, 3..20, 0..38, 31..33] {
        let path = t.outboard.path_nodes(groups.clone());
        assert!(path.windows(2).all(|w| w[0] < w[1]));
        // Keep only the path; zero every other node.
        let mut nodes = vec![0u8; t.outboard.as_bytes().len()];
        for &i in &path {
            let at = i as usize * 64;
            nodes[at..at + 64].copy_from_slice(&t.outboard.as_bytes()[at..at + 64]);
        }
        let sparse = Outboard::new(shape, nodes).unwrap();
        let start = groups.start * G as u64;
        let end = (groups.end * G as u64).min(data.len() as u64);
        sparse
            .verify(&t.root, start, &data[start as usize..end as usize])
            .unwrap();
    }
    // One group of 38 = 2^5 + 6: its path is at most 6 nodes deep.
    assert_eq!(t.outboard.path_nodes(0..1).len(), 6);
    assert!(t.outboard.path_nodes(40..50).is_empty());
}

#[test]
fn groups_for_a_read() {
    let s = Shape::new(14, 5 * G as u64 + 10).unwrap();
    let g = G as u64;
    assert_eq!(s.groups_for(0..1), (0..1, 0..g));
    assert_eq!(s.groups_for(g - 1..g + 1), (0..2, 0..2 * g));
    assert_eq!(s.groups_for(4096..8192), (0..1, 0..g));
    assert_eq!(s.groups_for(5 * g..u64::MAX), (5..6, 5 * g..5 * g + 10));
    assert_eq!(s.groups_for(9 * g..10 * g), (5..5, 5 * g + 10..5 * g + 10));
    assert_eq!(s.groups_for(3..3), (0..0, 3..3));
}

#[test]
fn outboard_from_a_parsed_chunk() {
    use crate::format::outboard::{self as fo, OutboardHeader};
    let data = bytes(9 * G + 1, 8);
    let t = Tree::compute(14, &data).unwrap();
    let h = OutboardHeader {
        group_log: 14,
        stream_len: data.len() as u64,
        node_count: t.outboard.shape().node_count(),
        root: *t.root.as_bytes(),
    };
    let payload = fo::encode(&h, t.outboard.as_bytes());
    let chunk = fo::parse(&payload, 0).unwrap();
    let ob = Outboard::from_chunk(&chunk).unwrap();
    let checked = ob.check(&Hash::from_bytes(chunk.header.root)).unwrap();
    checked.verify(0, &data).unwrap();
    assert_eq!(checked.root(), &t.root);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_lengths_and_ranges(
        len in 0usize..(70 << 10),
        log in 10u8..=12,
        seed in any::<u64>(),
        a in any::<u64>(),
        b in any::<u64>(),
        flip in any::<u64>(),
    ) {
        let data = bytes(len, seed);
        let t = Tree::compute(log, &data).unwrap();
        prop_assert_eq!(t.root, blake3::hash(&data));
        let mut builder = TreeBuilder::new(log).unwrap();
        for p in data.chunks(1 + (seed % 5000) as usize) {
            builder.update(p);
        }
        prop_assert_eq!(&builder.finish(), &t);
        let shape = t.outboard.shape();
        let n = shape.group_count();
        prop_assume!(n > 0);
        let (g0, g1) = ((a % n).min(b % n), (a % n).max(b % n) + 1);
        let start = g0 << log;
        let end = shape.group_bytes(g1 - 1).end;
        let mut read = data[start as usize..end as usize].to_vec();
        t.outboard.verify(&t.root, start, &read).unwrap();
        let checked = t.outboard.clone().check(&t.root).unwrap();
        checked.verify(start, &read).unwrap();
        let i = (flip % read.len() as u64) as usize;
        read[i] ^= 1 << (flip % 8);
        let g = g0 + (i as u64 >> log);
        let e = t.outboard.verify(&t.root, start, &read).unwrap_err();
        prop_assert_eq!(e.bad_groups(), &[g..g + 1][..]);
        let e = checked.verify(start, &read).unwrap_err();
        prop_assert_eq!(e.bad_groups(), &[g..g + 1][..]);
    }
}

/// The worked example of docs/FORMAT.md §10: 4097 bytes `i % 251` (the input pattern of
/// the BLAKE3 test vectors) in groups of 1 KiB. The root is `b3sum`'s output for the same
/// bytes (b3sum 1.2.0), computed outside this code.
#[test]
fn worked_example_of_the_format_doc() {
    let data: Vec<u8> = (0..4097u32).map(|i| (i % 251) as u8).collect();
    let t = Tree::compute(10, &data).unwrap();
    assert_eq!(
        t.root.to_hex().as_str(),
        "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"
    );
    let nodes: Vec<String> = t.outboard.as_bytes().chunks(32).map(hex::encode).collect();
    assert_eq!(
        nodes,
        [
            "7de819387cc4a00a473ed9b0f7802fa8d3b38d18a5e49ff3f034dd77be59af62",
            "809187020fb739eff22a86412de600c2d171052ee5a3cf5ff792e8dad1fd0eb8",
            "811f7d4f1735258e27c68b9214ff7c4aac866d47f73deef1fd8908b5e38f804f",
            "0442fb717e48cfb822322404f01bed7f13e2ed168408f1b5e6307b3c1b7a1ab7",
            "5c9e654411e393d1f4bec710ccd5bc5669ab177d610a0eb691fcfee92fb4e8b1",
            "5b1f23b8390368a2c15095910389d1b716eb52a6dfd34d0aa66a22a21b761ca7",
            "31af34be96abc0f78f175c2b7af34754a2011916b9d343582c74d06f07153ca8",
            "2384956f6c5c4cd565731e113eda8c592474646eb299b5d90b7b6899689b726e",
        ]
    );
    // The last group is one byte at offset 4096: its chaining value is node 0's right half.
    assert_eq!(nodes[1], hex::encode(group_cv(10, 4, &data[4096..])));
}

/// `verify_parts` over any split of the data answers exactly as `verify` of the data in
/// one piece: the same groups fail, whatever straddles a boundary.
#[test]
fn verify_in_parts_answers_as_verify_in_one_piece() {
    for len in [G, 3 * G, 5 * G + 7, 17 * G + 1000] {
        let data = bytes(len, 3);
        let t = Tree::compute(14, &data).unwrap();
        let checked = t.outboard.clone().check(&t.root).unwrap();
        let mut flipped = data.clone();
        let flip_at = [0, G + 5, len - 1];
        for i in flip_at.into_iter().filter(|&i| i < len) {
            flipped[i] ^= 0x10;
        }
        for d in [&data, &flipped] {
            let whole = checked.verify(0, d);
            // Cuts: none, at every 1000 bytes, at group edges +-1, empty parts.
            let cut_sets: Vec<Vec<usize>> = vec![
                vec![],
                (1..len).step_by(1000).collect(),
                vec![G - 1, G + 1, 2 * G, 2 * G, 3 * G - 1],
                vec![0, 7, len],
            ];
            for cuts in cut_sets {
                let mut parts = Vec::new();
                let mut at = 0;
                for &c in cuts.iter().filter(|&&c| c <= len) {
                    parts.push(&d[at..c.max(at)]);
                    at = c.max(at);
                }
                parts.push(&d[at..]);
                let split = checked.verify_parts(0, &parts);
                assert_eq!(
                    whole.as_ref().err().map(|e| e.bad_groups().to_vec()),
                    split.as_ref().err().map(|e| e.bad_groups().to_vec()),
                    "len {len}, cuts {cuts:?}"
                );
            }
            // A span starting at a later group.
            if len < 2 * G {
                continue;
            }
            let tail = &d[G..];
            let (a, b) = tail.split_at(tail.len() / 2 + 3);
            assert_eq!(
                checked
                    .verify(G as u64, tail)
                    .err()
                    .map(|e| e.bad_groups().to_vec()),
                checked
                    .verify_parts(G as u64, &[a, b])
                    .err()
                    .map(|e| e.bad_groups().to_vec()),
            );
        }
    }
    // Parts that are not whole groups are refused like a piece that is not.
    let data = bytes(3 * G, 4);
    let t = Tree::compute(14, &data).unwrap();
    let checked = t.outboard.clone().check(&t.root).unwrap();
    assert!(
        checked
            .verify_parts(0, &[&data[..G], &data[G..2 * G + 1]])
            .is_err()
    );
}
