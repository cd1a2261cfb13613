//! The block layer against containers built in memory.

use super::*;
use crate::engine::Engine;
use crate::reader::{Archive, OpenCheck};
use crate::source::ReadAt;
use crate::writer::{BlockMeta, Writer};
use serde_json::Map;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Blocks of the given sizes with distinct contents.
fn blocks(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|k| (i * 31 + k * 7 % 251) as u8).collect())
        .collect()
}

fn pack(data: &[Vec<u8>], engine: Engine) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), engine).unwrap();
    for (i, b) in data.iter().enumerate() {
        let meta = BlockMeta {
            pts_us: i as u64 * 1000,
            keyframe: true,
        };
        w.add_block(b, meta).unwrap();
    }
    w.finish(Map::new(), &crate::writer::default_safe())
        .unwrap()
        .0
}

fn config(cache_bytes: u64, log: Arc<dyn Fn(&str) + Send + Sync>) -> BlocksConfig {
    BlocksConfig {
        cache_bytes,
        prefetch_bytes: 8 << 20,
        log,
    }
}

fn quiet() -> Arc<dyn Fn(&str) + Send + Sync> {
    Arc::new(|_| {})
}

fn layer_over(src: Box<dyn ReadAt>, cfg: BlocksConfig) -> Blocks {
    let archive = Archive::from_source(src, OpenCheck::Structure).unwrap();
    let served = Served::new(archive, PathBuf::from("/mem/x.h4mk"), None, UNIX_EPOCH);
    Blocks::new(vec![served], cfg)
}

fn layer(bytes: Vec<u8>, cache_bytes: u64) -> Blocks {
    layer_over(Box::new(bytes), config(cache_bytes, quiet()))
}

const C: ContainerId = ContainerId(0);
const T: TrackId = TrackId(0);

/// Read the whole stream through `handle` in requests of `step` bytes.
fn read_all(b: &Blocks, handle: Option<&ReadHandle>, step: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let d = b.read(C, T, out.len() as u64, step, handle).unwrap();
        if d.as_slice().is_empty() {
            return out;
        }
        out.extend_from_slice(d.as_slice());
    }
}

/// Wait (bounded) until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Bytes in memory whose reads of one range stop until released, counting those reads.
struct Gated {
    bytes: Vec<u8>,
    range: std::ops::Range<u64>,
    open: AtomicBool,
    entered: AtomicU64,
}

impl ReadAt for Arc<Gated> {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        if offset < self.range.end && end > self.range.start {
            self.entered.fetch_add(1, Ordering::SeqCst);
            wait_until("the gate opens", || self.open.load(Ordering::SeqCst));
        }
        self.bytes.as_slice().read_exact_at(buf, offset)
    }
    fn name(&self) -> String {
        "<gated>".into()
    }
}

#[test]
fn two_readers_of_one_block_load_it_once() {
    let data = blocks(&[5000, 5000]);
    let bytes = pack(&data, Engine::Identity);
    let probe = Archive::from_source(Box::new(bytes.clone()), OpenCheck::Structure).unwrap();
    let e = probe.entry(0, 1).unwrap();
    let gated = Arc::new(Gated {
        bytes,
        range: e.chunk_offset..e.data_offset + e.stored_len,
        open: AtomicBool::new(false),
        entered: AtomicU64::new(0),
    });
    let b = Arc::new(layer_over(
        Box::new(gated.clone()),
        config(1 << 20, quiet()),
    ));
    let key = BlockKey::new(0, 0, 1);
    let reader = |b: Arc<Blocks>| {
        std::thread::spawn(move || {
            b.read_block(C, T, BlockIndex(1), 0, 5000, None)
                .unwrap()
                .as_slice()
                .to_vec()
        })
    };
    let first = reader(b.clone());
    wait_until("the first reader reads", || {
        gated.entered.load(Ordering::SeqCst) == 1
    });
    let second = reader(b.clone());
    wait_until("the second reader waits", || b.waiters(&key) == 1);
    gated.open.store(true, Ordering::SeqCst);
    assert_eq!(first.join().unwrap(), data[1]);
    assert_eq!(second.join().unwrap(), data[1]);
    assert_eq!(gated.entered.load(Ordering::SeqCst), 1);
    assert_eq!(b.container(C).blocks_verified(), 1);
}

#[test]
fn the_cache_stays_within_its_byte_bound() {
    let data = blocks(&[10_000; 30]);
    let cap = 5 * (10_000 + cache::ENTRY_OVERHEAD);
    let b = layer(pack(&data, Engine::Identity), cap);
    let h = ReadHandle::new();
    assert_eq!(read_all(&b, Some(&h), 4096), data.concat());
    let s = b.stats();
    assert!(s.bytes + s.blocks * cache::ENTRY_OVERHEAD <= cap, "{s:?}");
    assert_eq!(s.blocks, 5, "{s:?}");
    assert_eq!(s.evictions, 25, "{s:?}");
    // Each block was loaded once: every later request for it was a hit.
    assert_eq!(b.container(C).blocks_verified(), 30);
    assert_eq!(h.held_bytes(), 0);
}

#[test]
fn each_handle_keeps_its_own_sequential_window() {
    let data = blocks(&[1000; 200]);
    let b = Arc::new(layer(pack(&data, Engine::Identity), 1 << 20));
    b.start_prefetch(1);
    let (h1, h2) = (ReadHandle::new(), ReadHandle::new());
    // Two readers of one stream, far apart, reading in turn.
    for k in 0..4u64 {
        let d1 = b.read(C, T, 1000 + k * 1000, 1000, Some(&h1)).unwrap();
        assert_eq!(d1.as_slice(), &data[1 + k as usize][..]);
        let d2 = b.read(C, T, 100_000 + k * 1000, 1000, Some(&h2)).unwrap();
        assert_eq!(d2.as_slice(), &data[100 + k as usize][..]);
    }
    let (seq1, to1) = h1.window();
    let (seq2, to2) = h2.window();
    assert!(seq1 && seq2, "both readers are sequential");
    // Each window reaches ahead of its own reader (read up to block 4 and 103).
    assert!((6..=5 + 64).contains(&to1), "{to1}");
    assert!((105..=104 + 64).contains(&to2), "{to2}");
    b.stop_prefetch();
}

#[test]
fn a_damaged_block_fails_alone() {
    let data = blocks(&[3000, 3000, 3000]);
    let mut bytes = pack(&data, Engine::Identity);
    let probe = Archive::from_source(Box::new(bytes.clone()), OpenCheck::Structure).unwrap();
    bytes[probe.entry(0, 1).unwrap().data_offset as usize + 7] ^= 1;
    let b = layer(bytes, 1 << 20);
    let read = |n| b.read_block(C, T, BlockIndex(n), 0, 3000, None);
    assert_eq!(read(0).unwrap().as_slice(), &data[0][..]);
    assert!(matches!(
        read(1),
        Err(ReadError::Archive(crate::Error::BlockHash { block: 1, .. }))
    ));
    assert_eq!(read(2).unwrap().as_slice(), &data[2][..]);
    // A range across it fails; ranges around it are served.
    assert!(b.read(C, T, 2000, 2000, None).is_err());
    assert_eq!(
        b.read(C, T, 6000, 3000, None).unwrap().as_slice(),
        &data[2][..]
    );
    assert!(read(1).is_err());
    let failures = b.container(C).failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, (0, 1));
    assert_eq!(failures[0].1.count, 3);
    assert!(!b.is_cached(&BlockKey::new(0, 0, 1)));
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/seed")
            .join(name),
    )
    .unwrap()
}

#[test]
fn what_can_be_served_is_decided_once() {
    // A reference file whose VERI does not match: checked on the first read only.
    let mut bad = fixture("a_small10.h4mk");
    let at = bad.len() - 32;
    bad[at] ^= 1;
    let crc = crc32fast::hash(&bad[at..]);
    bad[at - 4..at].copy_from_slice(&crc.to_be_bytes());
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = logged.clone();
    let b = layer_over(
        Box::new(bad),
        config(
            1 << 20,
            Arc::new(move |m| l2.lock().unwrap().push(m.into())),
        ),
    );
    assert!(b.container(C).veri().is_none());
    for _ in 0..3 {
        assert!(matches!(
            b.read(C, T, 0, 100, None),
            Err(ReadError::VeriFailed { .. })
        ));
        assert!(b.read_block(C, T, BlockIndex(0), 0, 10, None).is_err());
    }
    assert!(!b.container(C).veri().unwrap().ok);
    assert_eq!(logged.lock().unwrap().len(), 1, "{:?}", logged.lock());
    assert_eq!(b.container(C).blocks_verified(), 0);

    // An unknown engine: refused before any block is read, and said why. (The engine
    // name in META is rewritten in place; OpenCheck::None skips the structure root.)
    let mut bytes = pack(&blocks(&[256, 256]), Engine::Identity);
    let needle = b"\"engine\":\"identity\"";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + 10;
    bytes[at..at + 8].copy_from_slice(b"mystery8");
    let archive = Archive::from_source(Box::new(bytes), OpenCheck::None).unwrap();
    let served = Served::new(archive, PathBuf::from("/mem/x.h4mk"), None, UNIX_EPOCH);
    let b = Blocks::new(vec![served], config(1 << 20, quiet()));
    assert!(b.container(C).unreadable().unwrap().contains("mystery8"));
    assert!(matches!(
        b.read(C, T, 0, 300, None),
        Err(ReadError::Archive(crate::Error::UnknownEngine { .. }))
    ));
    assert_eq!(b.container(C).blocks_verified(), 0);
}

/// Blocks larger than the whole cache (four geometric-reference blocks that decode to
/// 4 MiB each from a few KiB, under a 1 MiB cache), read sequentially in 128 KiB
/// requests: each is read, checked and decoded once, and memory stays at the cache
/// plus the two blocks the handle keeps.
#[test]
fn blocks_larger_than_the_cache_load_once_per_handle() {
    let data: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 4 << 20]).collect();
    let bytes = pack(&data, Engine::GeometricReference);
    assert!(bytes.len() < 1 << 20, "{}", bytes.len());
    let b = layer(bytes, 1 << 20);
    let h = ReadHandle::new();
    let got = read_all(&b, Some(&h), 128 << 10);
    assert!(got == data.concat(), "stream differs");
    assert_eq!(b.container(C).blocks_verified(), 4);
    assert_eq!(b.stats().blocks, 0);
    assert!(h.held_bytes() <= 2 * (4 << 20));
    // Block files too: one load for a whole read of block 2 in small pieces.
    let h2 = ReadHandle::new();
    let mut off = 0;
    while off < 4 << 20 {
        let d = b
            .read_block(C, T, BlockIndex(2), off, 128 << 10, Some(&h2))
            .unwrap();
        assert!(d.as_slice().iter().all(|&x| x == 2));
        off += d.as_slice().len() as u64;
    }
    assert_eq!(b.container(C).blocks_verified(), 5);
    // Without a handle there is nowhere to keep it: each read loads it again.
    b.read_block(C, T, BlockIndex(3), 0, 10, None).unwrap();
    b.read_block(C, T, BlockIndex(3), 10, 10, None).unwrap();
    assert_eq!(b.container(C).blocks_verified(), 7);
}

// ---- v2: hash groups ------------------------------------------------------------------

/// Bytes in memory counting the reads and bytes read from them.
#[derive(Default)]
struct Counting {
    bytes: Vec<u8>,
    reads: AtomicU64,
    read_bytes: AtomicU64,
}

impl Counting {
    fn reset(&self) {
        self.reads.store(0, Ordering::SeqCst);
        self.read_bytes.store(0, Ordering::SeqCst);
    }
    fn counts(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::SeqCst),
            self.read_bytes.load(Ordering::SeqCst),
        )
    }
}

impl ReadAt for Arc<Counting> {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.read_bytes
            .fetch_add(buf.len() as u64, Ordering::SeqCst);
        self.bytes.as_slice().read_exact_at(buf, offset)
    }
    fn name(&self) -> String {
        "<counting>".into()
    }
}

const MIB: usize = 1 << 20;
const GROUP: u64 = 16 << 10;

/// A v2 container (16 KiB groups, identity engine) of `data`'s blocks.
fn pack_v2(data: &[Vec<u8>]) -> Vec<u8> {
    pack_v2_with(data, Engine::Identity)
}

fn pack_v2_with(data: &[Vec<u8>], engine: Engine) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), engine).unwrap();
    w.set_format(crate::writer::Format::V2 { group_log: 14 })
        .unwrap();
    for (i, b) in data.iter().enumerate() {
        let meta = BlockMeta {
            pts_us: i as u64 * 1000,
            keyframe: true,
        };
        w.add_block(b, meta).unwrap();
    }
    w.finish(Map::new(), &crate::writer::default_safe())
        .unwrap()
        .0
}

/// A layer over `bytes` read through a counter (zeroed after the open).
fn counted_layer(bytes: Vec<u8>, cache_bytes: u64) -> (Blocks, Arc<Counting>) {
    let src = Arc::new(Counting {
        bytes,
        ..Counting::default()
    });
    let b = layer_over(Box::new(src.clone()), config(cache_bytes, quiet()));
    src.reset();
    (b, src)
}

fn stream(data: &[Vec<u8>]) -> Vec<u8> {
    data.concat()
}

#[test]
fn v2_small_read_verifies_only_the_groups_it_touches() {
    let data = blocks(&[MIB, MIB, MIB, MIB]);
    let all = stream(&data);
    let (b, src) = counted_layer(pack_v2(&data), 64 << 20);
    assert!(b.container(C).by_groups(0));
    // 4 KiB inside group 70 (in block 1): one group read and hashed, not the block.
    let at = 70 * GROUP + 1696;
    let d = b.read(C, T, at, 4096, None).unwrap();
    assert_eq!(d.as_slice(), &all[at as usize..at as usize + 4096]);
    assert_eq!(b.container(C).groups_verified(), 1);
    assert_eq!(b.container(C).blocks_verified(), 0);
    assert_eq!(src.counts(), (1, GROUP));
    // Across a group boundary (and the block boundary at 1 MiB): two groups, the
    // chunk header between them read along.
    src.reset();
    let at = MIB as u64 - 2048;
    let d = b.read(C, T, at, 4096, None).unwrap();
    assert_eq!(d.as_slice(), &all[at as usize..at as usize + 4096]);
    assert_eq!(b.container(C).groups_verified(), 3);
    assert_eq!(src.counts(), (1, 2 * GROUP + 12));
    // Again: from the cache, nothing read.
    src.reset();
    let d = b.read(C, T, at + 100, 4096, None).unwrap();
    assert_eq!(d.as_slice(), &all[at as usize + 100..at as usize + 4196]);
    assert_eq!(src.counts(), (0, 0));
    assert_eq!(b.container(C).groups_verified(), 3);
    // A block file's range goes by groups too.
    let d = b.read_block(C, T, BlockIndex(2), 5000, 100, None).unwrap();
    assert_eq!(d.as_slice(), &data[2][5000..5100]);
    assert_eq!(b.container(C).groups_verified(), 4);
}

#[test]
fn v2_flipped_byte_fails_exactly_the_reads_of_its_group() {
    let data = blocks(&[MIB, MIB, MIB]);
    let all = stream(&data);
    let mut bytes = pack_v2(&data);
    let probe = Archive::from_source(Box::new(bytes.clone()), OpenCheck::Structure).unwrap();
    // Group 70 is in block 1, at 6 groups into it.
    let bad = 70 * GROUP;
    let e1 = probe.entry(0, 1).unwrap();
    bytes[(e1.data_offset + bad - MIB as u64 + 5) as usize] ^= 1;
    let b = layer(bytes, 64 << 20);
    let read = |at: u64, len: u64| b.read(C, T, at, len, None);
    assert!(read(bad + 5, 1).is_err());
    assert!(read(bad - 10, 20).is_err());
    assert!(read(bad + GROUP - 1, 4096).is_err());
    // The rest of the same block is served.
    for at in [MIB as u64, bad - 4096, bad + GROUP, 2 * MIB as u64 - 4096] {
        let d = read(at, 4096).unwrap();
        assert_eq!(
            d.as_slice(),
            &all[at as usize..at as usize + 4096],
            "at {at}"
        );
    }
    let failures = b.container(C).failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, (0, 1));
    assert_eq!(failures[0].1.count, 3);
    assert!(!b.is_cached(&BlockKey::new(0, 0, 70)));
    // A sequential reader, whose loads are runs (RUN_BYTES) that include the bad group, gets
    // every byte before it, then EIO for the read that touches it.
    let mut bytes = pack_v2(&data);
    bytes[(e1.data_offset + bad - MIB as u64 + 5) as usize] ^= 1;
    let b = layer(bytes, 64 << 20);
    let h = ReadHandle::new();
    let mut at = 0;
    while at + 4096 <= bad {
        let d = b.read(C, T, at, 4096, Some(&h)).unwrap();
        assert_eq!(d.as_slice(), &all[at as usize..at as usize + 4096]);
        at += 4096;
    }
    assert!(b.read(C, T, at, 4096, Some(&h)).is_err());
}

#[test]
fn v2_sequential_reads_verify_whole_runs() {
    let data = blocks(&[MIB, MIB, MIB, MIB / 2 + 77]);
    let all = stream(&data);
    let groups = (all.len() as u64).div_ceil(GROUP);
    let (b, src) = counted_layer(pack_v2(&data), 64 << 20);
    let h = ReadHandle::new();
    assert_eq!(read_all(&b, Some(&h), 4096), all);
    // Each group verified once, in runs of RUN_BYTES: a handful of reads, not one per
    // request or per group.
    assert_eq!(b.container(C).groups_verified(), groups);
    let (reads, read_bytes) = src.counts();
    assert!(reads <= 6, "{reads} reads");
    assert!(
        read_bytes <= all.len() as u64 + 4 * 12,
        "{read_bytes} bytes read"
    );
    // With prefetch threads, runs ahead of the reader are loaded by them: two reads in
    // order make it a sequential reader, which then pauses (so the threads, not the
    // reader, reach the runs ahead, however the machine schedules them).
    let b = Arc::new(layer(pack_v2(&data), 64 << 20));
    b.start_prefetch(2);
    let h = ReadHandle::new();
    for at in [0, 64 << 10] {
        let d = b.read(C, T, at, 64 << 10, Some(&h)).unwrap();
        assert_eq!(d.as_slice(), &all[at as usize..(at + (64 << 10)) as usize]);
    }
    wait_until("a run is prefetched", || b.stats().prefetches > 0);
    assert_eq!(read_all(&b, Some(&h), 64 << 10), all);
    b.stop_prefetch();
}

#[test]
fn v2_block_file_readers_load_nothing_past_their_block() {
    let data = blocks(&[64 << 10; 16]);
    let b = Arc::new(layer(pack_v2(&data), 64 << 20));
    b.start_prefetch(1);
    let h = ReadHandle::new();
    for at in (0..64 << 10).step_by(4096) {
        let d = b
            .read_block(C, T, BlockIndex(3), at, 4096, Some(&h))
            .unwrap();
        assert_eq!(d.as_slice(), &data[3][at as usize..at as usize + 4096]);
    }
    b.stop_prefetch();
    // Block 3's four groups, verified in one run; none of blocks 4.. (a sequential
    // reader of the stream would have loaded 1 MiB).
    assert_eq!(b.container(C).groups_verified(), 4);
    assert_eq!(b.stats().prefetches, 0);
}

#[test]
fn v2_group_cache_stays_within_its_byte_bound() {
    let data = blocks(&[MIB, MIB]);
    let all = stream(&data);
    let cap = 5 * (GROUP + cache::ENTRY_OVERHEAD) + 100;
    let b = layer(pack_v2(&data), cap);
    let h = ReadHandle::new();
    // Sequential and random reads alike.
    assert_eq!(read_all(&b, Some(&h), 8192), all);
    for i in 0..200u64 {
        let at = (i * 7919 * 4096) % (all.len() as u64 - 4096);
        let d = b.read(C, T, at, 4096, None).unwrap();
        assert_eq!(d.as_slice(), &all[at as usize..at as usize + 4096]);
        let s = b.stats();
        assert!(s.bytes + s.blocks * cache::ENTRY_OVERHEAD <= cap, "{s:?}");
        assert!(s.blocks <= 5);
    }
    assert!(b.stats().evictions > 0);
}

#[test]
fn v1_and_encoded_v2_keep_the_block_path() {
    let data = blocks(&[3000, 3000]);
    let v1 = layer(pack(&data, Engine::Identity), 1 << 20);
    assert!(!v1.container(C).by_groups(0));
    // The geometric engine's stored bytes are not the stream: blocks are decoded whole.
    let geo = layer(pack_v2_with(&data, Engine::GeometricReference), 1 << 20);
    assert!(!geo.container(C).by_groups(0));
    assert_eq!(read_all(&geo, None, 1000), stream(&data));
    assert_eq!(geo.container(C).blocks_verified(), 2);
    assert_eq!(geo.container(C).groups_verified(), 0);
    assert!(layer(pack_v2(&data), 1 << 20).container(C).by_groups(0));
}

/// `try_read_cached` answers only from cached blocks, with the bytes `read` gives, and
/// never reads, hashes or counts a miss; what it cannot answer without work is `None`.
#[test]
fn try_read_cached_answers_only_from_the_cache() {
    let data = blocks(&[1000, 1000, 1000]);
    let all: Vec<u8> = data.concat();
    let b = layer(pack(&data, Engine::Identity), 1 << 20);
    // Nothing cached: no answer, nothing counted, nothing verified.
    assert!(b.try_read_cached(C, T, 500, 1000).is_none());
    assert!(b.try_read_cached(C, T, 10, 20).is_none());
    let s = b.stats();
    assert_eq!((s.hits, s.misses), (0, 0));
    assert_eq!(b.container(C).blocks_verified(), 0);
    // Block 0 cached: a range within it is answered; one reaching block 1 only if that
    // was loaded with it (blocks are loaded in pairs).
    assert_eq!(b.read(C, T, 0, 10, None).unwrap().as_slice(), &all[..10]);
    let d = b.try_read_cached(C, T, 10, 20).unwrap().unwrap();
    assert_eq!(d.as_slice(), &all[10..30]);
    let misses = b.stats().misses;
    assert_eq!(
        b.try_read_cached(C, T, 500, 1000).is_some(),
        b.is_cached(&BlockKey::new(0, 0, 1))
    );
    assert!(
        b.try_read_cached(C, T, 500, 2000).is_none(),
        "block 2 is not cached"
    );
    assert_eq!(b.stats().misses, misses, "no miss counted");
    // Blocks 0 and 1 cached: the range across them, gathered.
    b.read(C, T, 1000, 10, None).unwrap();
    let d = b.try_read_cached(C, T, 500, 1000).unwrap().unwrap();
    assert_eq!(d.as_slice(), &all[500..1500]);
    // Past the end: empty, as `read` says.
    assert!(
        b.try_read_cached(C, T, 5000, 10)
            .unwrap()
            .unwrap()
            .as_slice()
            .is_empty()
    );

    // A reference file whose whole-file VERI is not checked yet: no answer (the check
    // reads the whole file), and the check is not started.
    let b = layer(fixture("a_small10.h4mk"), 1 << 20);
    assert!(b.try_read_cached(C, T, 0, 10).is_none());
    assert!(b.container(C).veri().is_none());
    // Checked, and the block cached: answered.
    let want = b.read(C, T, 0, 10, None).unwrap().as_slice().to_vec();
    assert!(b.container(C).veri().unwrap().ok);
    let d = b.try_read_cached(C, T, 0, 10).unwrap().unwrap();
    assert_eq!(d.as_slice(), &want[..]);

    // A container refused without reading (unknown engine): the refusal, at once.
    let mut bytes = pack(&blocks(&[256, 256]), Engine::Identity);
    let needle = b"\"engine\":\"identity\"";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + 10;
    bytes[at..at + 8].copy_from_slice(b"mystery8");
    let archive = Archive::from_source(Box::new(bytes), OpenCheck::None).unwrap();
    let served = Served::new(archive, PathBuf::from("/mem/x.h4mk"), None, UNIX_EPOCH);
    let b = Blocks::new(vec![served], config(1 << 20, quiet()));
    assert!(matches!(
        b.try_read_cached(C, T, 0, 10),
        Some(Err(ReadError::Archive(crate::Error::UnknownEngine { .. })))
    ));
}

/// For a track served by hash groups the cache holds groups keyed by group number:
/// `try_read_cached` answers from those groups, with the bytes `read` gives, never from
/// a key that only looks like a block's.
#[test]
fn try_read_cached_of_a_v2_track_answers_from_its_groups() {
    let data = blocks(&[MIB, MIB]);
    let all = stream(&data);
    let b = layer(pack_v2(&data), 64 << 20);
    assert!(b.container(C).by_groups(0));
    // Nothing cached yet.
    let at = 70 * GROUP + 100;
    assert!(b.try_read_cached(C, T, at, 4096).is_none());
    // Group 70 loaded by a random read: a range inside it is answered.
    b.read(C, T, at, 10, None).unwrap();
    let d = b.try_read_cached(C, T, at, 4096).unwrap().unwrap();
    assert_eq!(d.as_slice(), &all[at as usize..at as usize + 4096]);
    // Block 1 starts in a group that is not cached: no answer, not group 1's bytes.
    assert!(b.try_read_cached(C, T, MIB as u64, 100).is_none());
    // Both groups of a range across a group boundary cached: gathered.
    let at = 71 * GROUP - 50;
    b.read(C, T, at, 100, None).unwrap();
    let d = b.try_read_cached(C, T, at, 100).unwrap().unwrap();
    assert_eq!(d.as_slice(), &all[at as usize..at as usize + 100]);
}

#[test]
fn v2_a_sequential_reader_of_the_mount_leaves_nothing_behind_in_the_cache() {
    let data = blocks(&[MIB, MIB, MIB, MIB / 2 + 77]);
    let all = stream(&data);
    let groups = (all.len() as u64).div_ceil(GROUP);
    // An open file read in order (a handle): what it was served leaves the cache (the
    // kernel's page cache holds it), each group verified once.
    for step in [4096, 64 << 10, 1 << 20] {
        let b = layer(pack_v2(&data), 64 << 20);
        let h = ReadHandle::new();
        assert_eq!(read_all(&b, Some(&h), step), all, "step {step}");
        assert_eq!(b.container(C).groups_verified(), groups, "step {step}");
        let s = b.stats();
        assert_eq!((s.blocks, s.bytes), (0, 0), "step {step}: {s:?}");
    }
    // Reads without a handle (serve, cat --range) keep what they loaded for the next
    // client.
    let b = layer(pack_v2(&data), 64 << 20);
    assert_eq!(read_all(&b, None, 64 << 10), all);
    assert_eq!(b.stats().blocks, groups);
    // A handle read at random (each read more than the kernel's readahead away from
    // the one before) keeps its groups too.
    let b = layer(pack_v2(&data), 64 << 20);
    let h = ReadHandle::new();
    for at in [3 * MIB as u64, 5 * GROUP, 5 * MIB as u64 / 2] {
        b.read(C, T, at, GROUP, Some(&h)).unwrap();
    }
    assert_eq!(b.stats().blocks, 3);
}

#[test]
fn v2_a_run_queued_for_a_reader_is_not_loaded_once_it_has_read_past_it() {
    let run_len = super::service::RUN_BYTES as usize;
    let rg = super::service::RUN_BYTES / GROUP;
    let data = blocks(&[run_len, run_len, run_len]);
    let b = layer(pack_v2(&data), 64 << 20);
    let run = |r: u64| BlockKey::new(0, 0, r * rg);
    let h = ReadHandle::new();
    b.read(C, T, 0, 4096, Some(&h)).unwrap();
    b.read(C, T, run_len as u64 + 4096, 4096, Some(&h)).unwrap();
    let before = b.container(C).groups_verified();
    // The reader has read into the second run: the first run is behind it.
    b.prefetch_run(run(0), Some(&h.progress()));
    assert_eq!(b.container(C).groups_verified(), before);
    // The third run is ahead of it: loaded.
    b.prefetch_run(run(2), Some(&h.progress()));
    assert_eq!(b.container(C).groups_verified(), before + rg);
    // Once its file is closed, nothing queued for it is loaded.
    let p = h.progress();
    drop(h);
    b.prefetch_run(run(1), Some(&p));
    assert_eq!(b.container(C).groups_verified(), before + rg);
}
