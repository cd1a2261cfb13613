//! Core benchmarks behind docs/PERFORMANCE.md ("## Core"):
//!
//! * `open/1m_blocks`: `Archive::open` of a 1,000,000-block h4fs container (target < 50 ms);
//! * `pts_lookup/*`: `BlockTable::find_pts` over a 10,000,000-entry index and
//!   `layout_a::seek_lookup` over 10,000,000 SEEK entries (target < 1 µs per lookup);
//! * `pack_to_sink` and `hash/*`: the packer's CPU cost without file I/O, and the
//!   primitives it spends it on (SHA-256, CRC-32, two SHA-256 streams in lockstep),
//!   per byte of payload.
//!
//! Run: `cargo bench --bench core` (or `cargo bench --bench core -- open` for one group).
//! Whole-command numbers (pack, verify, sha256sum side by side) come from
//! scripts/bench-core.sh.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use h4fs::engine::Engine;
use h4fs::format::h4fs::{self as hf, IndexEntry};
use h4fs::format::layout_a::{SeekEntry, seek_lookup};
use h4fs::integrity::lanes::{Sha256, update2};
use h4fs::reader::{Archive, BlockTable};
use h4fs::writer::{self, BlockMeta, Input, PackOptions, Writer};
use std::hint::black_box;
use std::io::BufWriter;
use std::sync::Arc;
use std::time::Duration;

/// Full sizes under `cargo bench` (which passes `--bench`); small ones when `cargo test
/// --all-targets` runs each benchmark once as a smoke test, so the suite stays quick.
fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Deterministic pseudo-random numbers (xorshift64*), so runs look up the same targets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Write a container of `blocks` blocks of 256 bytes (pts 40 ms apart, a keyframe every
/// 25 blocks) with the library's `Writer`, as `h4fs pack --block-size 256` would.
fn build_container(path: &std::path::Path, blocks: u64) {
    let file = std::fs::File::create(path).expect("create bench container");
    let mut w = Writer::new(BufWriter::with_capacity(1 << 20, file), Engine::Identity).unwrap();
    let mut data = [0u8; 256];
    for i in 0..blocks {
        data[..8].copy_from_slice(&i.to_be_bytes());
        let meta = BlockMeta {
            pts_us: i * 40_000,
            keyframe: i % 25 == 0,
        };
        w.add_block(&data, meta).unwrap();
    }
    let mut meta = serde_json::Map::new();
    meta.insert("project".into(), "bench".into());
    w.finish(meta, &writer::default_safe()).unwrap();
}

fn open_1m(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1m.h4mk");
    let blocks = if full_size() { 1_000_000 } else { 10_000 };
    build_container(&path, blocks);
    // Warm the page cache the way a second open would find it.
    let a = Archive::open(&path).unwrap();
    assert_eq!(a.tracks[0].blocks.len(), blocks);
    drop(a);
    let mut g = c.benchmark_group("open");
    g.sample_size(30).measurement_time(Duration::from_secs(10));
    g.bench_function("1m_blocks", |b| {
        b.iter(|| {
            let a = Archive::open(black_box(&path)).unwrap();
            black_box(a.tracks[0].blocks.len())
        })
    });
    g.finish();
}

/// Entries of the lookup tables (10,000,000 under `cargo bench`).
fn lookup_entries() -> u64 {
    if full_size() { 10_000_000 } else { 100_000 }
}
/// Lookups per iteration, so the per-lookup time is the iteration time / this.
const LOOKUPS: u64 = 1024;

fn pts_lookup(c: &mut Criterion) {
    // A 10,000,000-entry HIDX payload (720 MB), pts 40 ms apart.
    let entries = lookup_entries();
    let mut payload = hf::index_header(entries).to_vec();
    payload.reserve(entries as usize * hf::ENTRY_LEN);
    for i in 0..entries {
        IndexEntry {
            chunk_offset: 8 + i * 268,
            stored_len: 256,
            decoded_len: 256,
            stream_offset: i * 256,
            pts_us: i * 40_000,
            track: 0,
            flags: u32::from(i % 25 == 0),
            sha256: [0; 32],
        }
        .encode(&mut payload);
    }
    let table = BlockTable::Index {
        payload: Arc::new(payload),
        count: entries,
    };
    let seek: Vec<SeekEntry> = (0..entries)
        .map(|i| SeekEntry {
            pts_us: i * 40_000,
            offset: i * 256,
        })
        .collect();
    let end = entries * 40_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let targets: Vec<u64> = (0..LOOKUPS).map(|_| rng.next() % end).collect();
    // The answers are right before they are timed.
    for &t in &targets {
        assert_eq!(table.find_pts(t), Some(t / 40_000));
        assert_eq!(seek_lookup(&seek, t), Some((t / 40_000) as usize));
    }

    let mut g = c.benchmark_group("pts_lookup");
    g.throughput(Throughput::Elements(LOOKUPS));
    g.bench_function(BenchmarkId::new("BlockTable::find_pts", "10M"), |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &t in &targets {
                sum += table.find_pts(black_box(t)).unwrap();
            }
            sum
        })
    });
    g.bench_function(BenchmarkId::new("layout_a::seek_lookup", "10M"), |b| {
        b.iter(|| {
            let mut sum = 0usize;
            for &t in &targets {
                sum += seek_lookup(black_box(&seek), black_box(t)).unwrap();
            }
            sum
        })
    });
    g.finish();
}

fn pack_to_sink(c: &mut Criterion) {
    let len: u64 = if full_size() { 256 << 20 } else { 4 << 20 };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.bin");
    let mut rng = Rng(1);
    let data: Vec<u8> = (0..len / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    std::fs::write(&path, &data).unwrap();
    let input = Input::Fixed {
        path,
        block_size: 1 << 20,
        fps: 25.0,
        gop: 25,
    };
    let opts = PackOptions::default();
    let mut g = c.benchmark_group("pack_to_sink");
    g.sample_size(10).throughput(Throughput::Bytes(len));
    g.bench_function("256MiB_1MiB_blocks", |b| {
        b.iter(|| {
            writer::pack_to(&input, std::io::sink(), &opts, &|_| {})
                .unwrap()
                .1
        })
    });
    g.finish();
}

fn hash(c: &mut Criterion) {
    let mut rng = Rng(2);
    let data: Vec<u8> = (0..(1 << 20) / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha256_1MiB", |b| {
        b.iter(|| h4fs::integrity::sha256(black_box(&data)))
    });
    g.bench_function("crc32_1MiB", |b| {
        b.iter(|| crc32fast::hash(black_box(&data)))
    });
    // Two 1 MiB messages: one after the other, then in lockstep (integrity::lanes).
    let other: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
    g.throughput(Throughput::Bytes(2 * data.len() as u64));
    g.bench_function("sha256_2x1MiB_sequential", |b| {
        b.iter(|| {
            let (mut x, mut y) = (Sha256::new(), Sha256::new());
            x.update(black_box(&data));
            y.update(black_box(&other));
            (x.finalize(), y.finalize())
        })
    });
    g.bench_function("sha256_2x1MiB_lockstep", |b| {
        b.iter(|| {
            let (mut x, mut y) = (Sha256::new(), Sha256::new());
            update2(&mut x, black_box(&data), &mut y, black_box(&other));
            (x.finalize(), y.finalize())
        })
    });
    g.finish();
}

criterion_group!(benches, open_1m, pts_lookup, pack_to_sink, hash);
criterion_main!(benches);
