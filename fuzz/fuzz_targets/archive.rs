//! Open arbitrary bytes as a container, with and without the structure check, then use
//! every read path on what opened: block reads (stored and decoded, and decrypted when a
//! key opens it), seek lookups, decode chains, stream segments and a full verify. Nothing may panic, hang or read
//! outside the bytes, and the reader's documented invariants must hold.
#![no_main]

use h4fs::crypto::{MasterKey, SharedSecret};
use h4fs::reader::{Archive, OpenCheck, Track};
use libfuzzer_sys::fuzz_target;

/// Blocks read per track: enough to reach every path, few enough to keep runs fast.
const MAX_BLOCKS: u64 = 64;

/// The master key `scripts/fuzz.sh` encrypts its seed container with.
const FUZZ_KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    for check in [OpenCheck::None, OpenCheck::Structure] {
        if let Ok(mut a) = Archive::from_source(Box::new(data.to_vec()), check) {
            exercise(&a);
            // Encrypted: with the seed's key (h4fs) or the reference's default secret
            // (Living Cipher v3), the decryption paths parse the cipher headers too.
            if a.encryption.is_some()
                && (a.attach_key(&MasterKey::from_bytes(FUZZ_KEY)).is_ok()
                    || a.attach_shared_secret(&SharedSecret::reference_default())
                        .is_ok())
            {
                exercise(&a);
            }
        }
    }
});

fn exercise(a: &Archive) {
    for (ti, t) in a.tracks.iter().enumerate() {
        check_track(a, t);
        for n in 0..t.blocks.len().min(MAX_BLOCKS) {
            let e = t.blocks.get(n).expect("n < len");
            if let Ok(raw) = a.read_stored(ti, n) {
                assert_eq!(raw.len() as u64, e.stored_len);
            }
            if let Ok(block) = a.read_block(ti, n) {
                assert_eq!(block.len() as u64, e.decoded_len);
            }
        }
        assert!(a.read_block(ti, t.blocks.len()).is_err());
    }
    let report = h4fs::verify::verify(a, true, &|_| {});
    assert!(report.blocks_checked <= a.block_count());
}

/// The invariants `reader` promises after a successful open.
fn check_track(a: &Archive, t: &Track) {
    let mut stream = 0u64;
    let mut pts = 0u64;
    for n in 0..t.blocks.len().min(MAX_BLOCKS) {
        let e = t.blocks.get(n).expect("n < len");
        assert_eq!(e.number, n);
        let end = e
            .data_offset
            .checked_add(e.stored_len)
            .expect("no overflow");
        assert!(
            e.chunk_offset < e.data_offset && end <= a.file_len,
            "block {n} outside the file"
        );
        assert_eq!(e.stream_offset, stream, "stream offsets are contiguous");
        assert!(e.pts_us >= pts, "pts never decreases");
        stream += e.decoded_len;
        pts = e.pts_us;
    }
    let last_pts = t
        .blocks
        .len()
        .checked_sub(1)
        .and_then(|n| t.blocks.get(n))
        .map_or(0, |e| e.pts_us);
    for target in [0, 1, pts, last_pts, last_pts.saturating_add(1), u64::MAX] {
        if let Some(n) = t.block_at(target) {
            assert!(t.blocks.get(n).expect("found").pts_us <= target);
        }
        if let Some((p, n)) = t.keyframe_at_or_before(target) {
            // At or before the target, or the first entry for a target before it.
            assert!((p.pts_us <= target || p.pts_us == t.seek[0].pts_us) && n < t.blocks.len());
        }
        if let Some(chain) = t.decode_chain(target) {
            assert!(!chain.is_empty() && chain.windows(2).all(|w| w[1] == w[0] + 1));
        }
    }
    let len = t.stream_len();
    for (offset, want) in [
        (0, len),
        (len / 2, len.div_ceil(2)),
        (len, 0),
        (u64::MAX, 0),
    ] {
        let got: u64 = t.segments(offset, u64::MAX).take(4096).map(|s| s.len).sum();
        if t.blocks.len() <= 4096 {
            assert_eq!(
                got, want,
                "segments from {offset} cover the rest of the stream"
            );
        }
    }
}
