//! The BLAKE3 outboard chunk (`format::outboard::parse`) and the tree verifier
//! (`integrity::tree`) on arbitrary bytes.
//!
//! * Parser: an accepted payload re-encodes to the same bytes, and checking or verifying
//!   against its (almost always wrong) root gives an error, never a panic or a hang.
//! * Verifier: the tree of the input (after 3 control bytes) has the same root whether
//!   computed at once or fed in pieces, verifies its own bytes, and with one byte of the
//!   stream changed fails exactly that byte's group; with one node byte changed it fails
//!   only groups below that node, and at least one.
#![no_main]

use h4fs::format::outboard::{self, NODE_LEN};
use h4fs::integrity::tree::{Hash, Outboard, Tree, TreeBuilder, TreeError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = outboard::parse(data, 0) {
        assert_eq!(outboard::encode(&c.header, c.nodes), data);
        let ob = Outboard::from_chunk(&c).expect("a parsed chunk is a valid outboard");
        let root = Hash::from_bytes(c.header.root);
        let n = ob.shape().group_count();
        let path = ob.path_nodes(0..n);
        assert_eq!(path.len() as u64, ob.shape().node_count());
        let span = ob.shape().group_bytes(0);
        let take = ((span.end - span.start) as usize).min(data.len());
        let _ = ob.verify(&root, 0, &data[..take]);
        let _ = ob.check(&root);
    }

    let [log, a, b, stream @ ..] = data else {
        return;
    };
    let log = 10 + log % 3;
    let t = Tree::compute(log, stream).expect("group size in range");
    let mut builder = TreeBuilder::new(log).expect("group size in range");
    for piece in stream.chunks(1 + *a as usize * 37) {
        builder.update(piece);
    }
    assert_eq!(builder.finish(), t);
    if stream.is_empty() {
        assert!(t.outboard.clone().check(&t.root).is_ok());
        return;
    }
    t.outboard
        .verify(&t.root, 0, stream)
        .expect("own bytes verify");
    let at = u16::from_le_bytes([*a, *b]) as usize % stream.len();
    let mut bad = stream.to_vec();
    bad[at] ^= 1;
    let g = (at >> log) as u64;
    let e = t.outboard.verify(&t.root, 0, &bad).unwrap_err();
    assert!(matches!(e, TreeError::Groups { .. }));
    assert_eq!(e.bad_groups(), &[g..g + 1][..]);
    let nodes = t.outboard.as_bytes();
    if !nodes.is_empty() {
        let mut bad_nodes = nodes.to_vec();
        let i = at % nodes.len();
        bad_nodes[i] ^= 1;
        let ob = Outboard::new(t.outboard.shape(), bad_nodes).expect("same length");
        let e = ob.verify(&t.root, 0, stream).unwrap_err();
        assert!(matches!(e, TreeError::Nodes { .. }));
        // Exactly the groups below the changed node: one run, not all groups unless the
        // node is the top one.
        assert_eq!(e.bad_groups().len(), 1);
        let all = 0..t.outboard.shape().group_count();
        assert!(i < NODE_LEN || e.bad_groups()[0] != all);
    }
});
