//! The reader against containers of every layout: h4fs ones built in memory, and the
//! reference's own samples (layout A and layout C).

use super::*;
use crate::engine::Engine;
use crate::writer::{BlockMeta, PackOptions, Writer, default_safe};
use serde_json::Map;

/// Block `i` of the in-memory containers: `sizes[i]` bytes of a pattern of its own.
fn block_data(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 31 + k * 7 % 251) as u8).collect()
}

/// An h4fs container of blocks of `sizes` bytes, block `i` at pts `i * 1000` (blocks
/// 2 and 3 share a pts), a keyframe every `gop` blocks.
pub(crate) fn pack_h4fs(sizes: &[usize], gop: usize, engine: Engine) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), engine).unwrap();
    for (i, &n) in sizes.iter().enumerate() {
        let pts_us = if i == 3 { 2000 } else { i as u64 * 1000 };
        let meta = BlockMeta {
            pts_us,
            keyframe: i % gop == 0,
        };
        w.add_block(&block_data(i, n), meta).unwrap();
    }
    w.finish(Map::new(), &default_safe()).unwrap().0
}

/// An encrypted h4fs container of `blocks` blocks of 100 bytes, and its key.
pub(crate) fn pack_encrypted(blocks: usize) -> (Vec<u8>, crate::crypto::MasterKey) {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("in.bin");
    std::fs::write(
        &path,
        (0..blocks * 100).map(|i| i as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let key = crate::crypto::MasterKey::from_bytes([9; 32]);
    let input = crate::writer::Input::Fixed {
        path,
        block_size: 100,
        fps: 25.0,
        gop: 2,
    };
    let opts = PackOptions {
        key: Some(key.clone()),
        ..PackOptions::default()
    };
    let bytes = crate::writer::pack_to(&input, Vec::new(), &opts, &|_| {})
        .unwrap()
        .0;
    (bytes, key)
}

pub(crate) fn open(bytes: &[u8]) -> Result<Archive> {
    Archive::from_source(Box::new(bytes.to_vec()), OpenCheck::Structure)
}

fn fixture(name: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed");
    std::fs::read(dir.join(name)).unwrap()
}

const SIZES: [usize; 6] = [300, 0, 70_000, 5, 1, 64];

/// Every block of every track, read one by one, as one byte string per track.
fn streams(a: &Archive) -> Vec<Vec<u8>> {
    (0..a.tracks.len())
        .map(|t| {
            (0..a.tracks[t].blocks.len())
                .flat_map(|n| a.read_block(t, n).unwrap().into_bytes())
                .collect()
        })
        .collect()
}

#[test]
fn each_layout_opens() {
    for engine in [Engine::Identity, Engine::GeometricReference] {
        let a = open(&pack_h4fs(&SIZES, 2, engine)).unwrap();
        assert_eq!(a.layout, Layout::H4fs);
        assert!(a.root_checked && a.sizes_exact);
        assert_eq!(a.block_count(), SIZES.len() as u64);
        let want: Vec<u8> = SIZES
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| block_data(i, n))
            .collect();
        assert_eq!(streams(&a), [want]);
    }

    let a = open(&fixture("a_small10.h4mk")).unwrap();
    assert_eq!(a.layout, Layout::ReferenceA);
    assert!(a.needs_veri());
    a.check_veri(&|_| {}).unwrap();
    assert_eq!(a.block_count(), 10);
    assert_eq!(streams(&a), [fixture("a_small10.payload")]);

    let a = open(&fixture("d_mt_build_demo.h4mk")).unwrap();
    assert_eq!(a.layout, Layout::MultitrackC);
    let ids: Vec<u32> = a.tracks.iter().map(|t| t.id).collect();
    assert_eq!(ids, [1, 2]);
    let s = streams(&a);
    assert_eq!((s[0].len(), s[1].len()), (144, 0));
    assert_eq!(s[0].len() as u64, a.tracks[0].stream_len());
}

#[test]
fn lookups() {
    let a = open(&pack_h4fs(&SIZES, 2, Engine::Identity)).unwrap();
    let t = &a.tracks[0];
    let ends: Vec<u64> = SIZES
        .iter()
        .scan(0, |s, &n| {
            *s += n as u64;
            Some(*s)
        })
        .collect();
    assert_eq!(t.stream_len(), ends[5]);
    // Byte 300 is the first of block 2 (block 1 is empty and skipped).
    assert_eq!(t.blocks.find_stream_offset(0), Some(0));
    assert_eq!(t.blocks.find_stream_offset(299), Some(0));
    assert_eq!(t.blocks.find_stream_offset(300), Some(2));
    assert_eq!(t.blocks.find_stream_offset(ends[5] - 1), Some(5));
    assert_eq!(t.blocks.find_stream_offset(ends[5]), None);
    // pts: 0, 1000, 2000, 2000, 4000, 5000.
    assert_eq!(t.blocks.find_pts(0), Some(0));
    assert_eq!(t.blocks.find_pts(2500), Some(3));
    assert_eq!(t.blocks.find_pts(u64::MAX), Some(5));
    assert_eq!(t.block_at(4999), Some(4));
    assert_eq!(t.last_pts(), Some(5000));
    // Keyframes 0, 2 and 4: pts 2500 decodes from block 2 through block 3.
    assert_eq!(t.keyframe_at_or_before(2500).map(|k| k.1), Some(2));
    assert_eq!(t.decode_chain(2500), Some(vec![2, 3]));
    assert_eq!(t.decode_chain(4000), Some(vec![4]));
    // A range across blocks: pieces with their entries, clipped at the end.
    let segs: Vec<Segment> = t.segments(250, 70_100).collect();
    let pieces: Vec<(u64, u64, u64)> = segs.iter().map(|s| (s.block, s.start, s.len)).collect();
    assert_eq!(
        pieces,
        [
            (0, 250, 50),
            (2, 0, 70_000),
            (3, 0, 5),
            (4, 0, 1),
            (5, 0, 44)
        ]
    );
    for s in &segs {
        assert_eq!(s.entry, a.entry(0, s.block).unwrap());
    }
    assert!(matches!(a.entry(0, 6), Err(Error::NotFound(_))));
    assert!(matches!(a.entry(1, 0), Err(Error::NotFound(_))));
    assert_eq!(
        a.entry(0, 6).unwrap_err().to_string(),
        "no block 6: the track has 6 blocks (0..5)"
    );
}

/// Flip one stored byte of block `n` in `bytes`.
fn flip_block_byte(bytes: &mut [u8], a: &Archive, n: u64) {
    let e = a.entry(0, n).unwrap();
    bytes[(e.data_offset + e.stored_len / 2) as usize] ^= 0x40;
}

#[test]
fn a_flipped_byte_fails_that_block_only() {
    let good = pack_h4fs(&SIZES, 2, Engine::Identity);
    let a = open(&good).unwrap();
    for n in [0u64, 2, 5] {
        let mut bad = good.clone();
        flip_block_byte(&mut bad, &a, n);
        // The index and the root do not cover the blocks: it still opens.
        let b = open(&bad).unwrap();
        for m in 0..SIZES.len() as u64 {
            let r = b.read_block(0, m);
            match (m == n, &r) {
                (true, Err(Error::BlockHash { block, .. })) => assert_eq!(*block, n),
                (false, Ok(v)) => assert_eq!(v.bytes(), a.read_block(0, m).unwrap().bytes()),
                _ => panic!("block {m} with block {n} damaged: {r:?}"),
            }
            assert_eq!(b.read_stored(0, m).is_ok(), m != n);
        }
        // The pair read and the caller-read check agree with the single read.
        let (e, f) = (b.entry(0, n).unwrap(), b.entry(0, (n + 1) % 6).unwrap());
        let [rn, rf] = b.read_block_entry_pair(&e, &f);
        assert!(matches!(rn, Err(Error::BlockHash { .. })));
        assert_eq!(rf.unwrap(), a.read_block_entry(&f).unwrap());
        let raw = &bad[e.chunk_offset as usize..(e.data_offset + e.stored_len) as usize];
        assert!(matches!(
            b.check_stored(&e, raw),
            Err(Error::BlockHash { .. })
        ));
        let raw = &good[e.chunk_offset as usize..(e.data_offset + e.stored_len) as usize];
        assert_eq!(
            b.check_stored(&e, raw).unwrap(),
            a.read_block_entry(&e).unwrap()
        );
    }

    // Reference layout A: the block's CRC-32 fails, and only its own.
    let good = fixture("a_small10.h4mk");
    let a = open(&good).unwrap();
    let mut bad = good.clone();
    flip_block_byte(&mut bad, &a, 4);
    let b = open(&bad).unwrap();
    for m in 0..10 {
        match b.read_block(0, m) {
            Err(Error::BlockCrc { block: 4, .. }) => assert_eq!(m, 4),
            Ok(v) => assert_eq!(v.bytes(), a.read_block(0, m).unwrap().bytes()),
            r => panic!("block {m}: {r:?}"),
        }
    }
    assert!(matches!(
        b.check_veri(&|_| {}),
        Err(Error::VeriMismatch { .. })
    ));

    // Layout C checks every chunk CRC at open.
    let good = fixture("d_mt_build_demo.h4mk");
    let a = open(&good).unwrap();
    let e = a.entry(0, 2).unwrap();
    let mut bad = good.clone();
    bad[e.data_offset as usize] ^= 0x40;
    assert!(matches!(
        open(&bad),
        Err(Error::CrcMismatch { tag: Tag::CORE, .. })
    ));
}

#[test]
fn a_sealed_block_is_authenticated_with_the_key_and_refused_without() {
    let (good, key) = pack_encrypted(4);
    let mut a = open(&good).unwrap();
    assert!(matches!(a.read_block(0, 1), Err(Error::Encrypted { .. })));
    a.attach_key(&key).unwrap();
    assert_eq!(
        a.read_block(0, 1).unwrap().bytes(),
        &(100..200).map(|i| i as u8).collect::<Vec<_>>()[..]
    );
    let mut bad = good.clone();
    flip_block_byte(&mut bad, &a, 1);
    let mut b = open(&bad).unwrap();
    b.attach_key(&key).unwrap();
    assert!(matches!(
        b.read_block(0, 1),
        Err(Error::BlockAuth { block: 1, .. })
    ));
    assert!(b.read_block(0, 0).is_ok() && b.read_block(0, 2).is_ok());
    // Bytes the caller read are hashed too, with the key attached.
    let e = b.entry(0, 1).unwrap();
    let raw = &bad[e.chunk_offset as usize..(e.data_offset + e.stored_len) as usize];
    assert!(matches!(
        b.check_stored(&e, raw),
        Err(Error::BlockHash { .. })
    ));
}

/// Every chunk boundary of the file (and the block boundaries inside CORE runs).
fn boundaries(a: &Archive) -> Vec<u64> {
    let mut v: Vec<u64> = a
        .chunks
        .iter()
        .flat_map(|c| [c.offset, c.offset + c.total_len])
        .chain(a.tracks.iter().flat_map(|t| {
            (0..t.blocks.len()).flat_map(|n| {
                let e = t.blocks.get(n).unwrap();
                [e.chunk_offset, e.data_offset + e.stored_len]
            })
        }))
        .chain([0, 8])
        .filter(|&b| b < a.file_len)
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn truncated_at_every_chunk_boundary() {
    let h4fs = pack_h4fs(&SIZES, 2, Engine::Identity);
    let a = open(&h4fs).unwrap();
    for cut in boundaries(&a) {
        let e = open(&h4fs[..cut as usize]).expect_err("a cut h4fs container must not open");
        assert!(
            matches!(
                e,
                Error::Truncated { .. } | Error::Chunk { .. } | Error::NotContainer(_)
            ),
            "cut at {cut}: {e}"
        );
    }
    // A reference file cut at a boundary may open (the reference reader accepts a cut
    // before SAFE or VERI), but then its VERI check fails and nothing is served.
    let reference = fixture("a_small10.h4mk");
    let a = open(&reference).unwrap();
    for cut in boundaries(&a) {
        match open(&reference[..cut as usize]) {
            Err(_) => {}
            Ok(b) => assert!(b.check_veri(&|_| {}).is_err(), "cut at {cut}"),
        }
    }
    let c = fixture("d_mt_build_demo.h4mk");
    let a = open(&c).unwrap();
    for cut in boundaries(&a) {
        assert!(open(&c[..cut as usize]).is_err(), "layout C cut at {cut}");
    }
}

/// A source that serves damaged bytes until the damaged range is invalidated (as a
/// remote source's cache would), then the good ones; counts invalidations.
struct Healing {
    bad: Vec<u8>,
    good: Vec<u8>,
    at: u64,
    healed: std::sync::atomic::AtomicBool,
    drops: std::sync::atomic::AtomicU64,
}

impl crate::source::ReadAt for std::sync::Arc<Healing> {
    fn len(&self) -> u64 {
        self.good.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let from = if self.healed.load(Ordering::SeqCst) {
            &self.good
        } else {
            &self.bad
        };
        from.read_exact_at(buf, offset)
    }
    fn name(&self) -> String {
        "<healing>".into()
    }
    fn invalidate(&self, range: std::ops::Range<u64>) -> bool {
        use std::sync::atomic::Ordering;
        let hit = range.contains(&self.at) && !self.healed.swap(true, Ordering::SeqCst);
        if hit {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }
}

#[test]
fn bytes_that_fail_are_read_again_once_when_the_source_dropped_its_copy() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let healing = |good: &[u8], at: u64| {
        let mut bad = good.to_vec();
        bad[at as usize] ^= 0x40;
        Arc::new(Healing {
            bad,
            good: good.to_vec(),
            at,
            healed: false.into(),
            drops: 0.into(),
        })
    };
    // Plain h4fs blocks (one read, the pair read, stored bytes), then v2 hash groups.
    let good = pack_h4fs(&SIZES, 2, Engine::Identity);
    let a = open(&good).unwrap();
    let e = a.entry(0, 2).unwrap();
    let want = a.read_block(0, 2).unwrap();
    let at = e.data_offset + e.stored_len / 2;
    for read in 0..3 {
        let src = healing(&good, at);
        let b = Archive::from_source(Box::new(Arc::clone(&src)), OpenCheck::Structure).unwrap();
        match read {
            0 => assert_eq!(b.read_block(0, 2).unwrap(), want),
            1 => {
                let f = b.entry(0, 3).unwrap();
                let [r2, r3] = b.read_block_entry_pair(&e, &f);
                assert_eq!(r2.unwrap(), want);
                assert_eq!(r3.unwrap(), a.read_block(0, 3).unwrap());
            }
            _ => assert_eq!(b.read_stored(0, 2).unwrap(), want.bytes()),
        }
        assert_eq!(src.drops.load(Ordering::SeqCst), 1);
    }
    let good =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v2-4097.h4mk"))
            .unwrap();
    let a = open(&good).unwrap();
    let e = a.entry(0, 0).unwrap();
    let src = healing(&good, e.data_offset + e.stored_len / 2);
    let b = Archive::from_source(Box::new(Arc::clone(&src)), OpenCheck::Structure).unwrap();
    assert_eq!(b.read_block(0, 0).unwrap(), a.read_block(0, 0).unwrap());
    assert_eq!(src.drops.load(Ordering::SeqCst), 1);
    // A source that keeps no copy (a file) is not read again: the damage is reported.
    let mut bad = good.clone();
    bad[(e.data_offset + e.stored_len / 2) as usize] ^= 0x40;
    assert!(
        open(&bad)
            .unwrap()
            .read_block(0, 0)
            .unwrap_err()
            .is_integrity()
    );
}
