//! Verification cost, v1 block hashes against the draft v2 BLAKE3 tree
//! (docs/PERFORMANCE.md, "BLAKE3 and SHA-256 on this machine"):
//!
//! * `random_read/*`: what verifying one random 4 KiB read costs. v1 hashes the whole
//!   1 MiB block with SHA-256; v2 hashes the 16 KiB group that holds the read, plus either
//!   the nodes on its path (`blake3_group_path`, `Outboard::verify`: a reader with no
//!   cached tree) or nothing else (`blake3_group_checked`, `CheckedTree::verify`: the tree
//!   was checked once at open).
//! * `open/check_tree`: checking every node of the tree against the root once
//!   (`Outboard::check`, what an open would do), including copying the outboard.
//! * `sequential/*`: verifying a whole 1 GiB stream, SHA-256 per 1 MiB block against
//!   BLAKE3 per 16 KiB group (with every node of the tree), on 1 and on 2 threads.
//!
//! Run: `cargo bench --bench tree` (needs about 1.1 GiB of memory).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use h4fs::integrity::sha256;
use h4fs::integrity::tree::{DEFAULT_GROUP_LOG, Tree};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

/// Full sizes under `cargo bench` (which passes `--bench`); a small stream when `cargo
/// test --all-targets` runs each benchmark once as a smoke test.
fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

const BLOCK: usize = 1 << 20;
const GROUP: usize = 1 << DEFAULT_GROUP_LOG;

/// Deterministic pseudo-random bytes (xorshift64*), 8 at a time.
fn stream(len: usize) -> Vec<u8> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Offsets of random 4 KiB reads (aligned to 4 KiB, as a page-cache read is).
fn read_offsets(len: usize, n: usize) -> Vec<usize> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x9e37_79b9_7f4a_7c15) as usize % (len / 4096)) * 4096
        })
        .collect()
}

fn verification(c: &mut Criterion) {
    let len = if full_size() { 1 << 30 } else { 1 << 24 };
    let data = stream(len);
    let tree = Tree::compute(DEFAULT_GROUP_LOG, &data).unwrap();
    let checked = tree.outboard.clone().check(&tree.root).unwrap();
    let offsets = read_offsets(len, 4096);

    let mut g = c.benchmark_group("random_read");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("sha256_1MiB_block", |b| {
        let mut i = 0;
        b.iter(|| {
            let at = offsets[i % offsets.len()] / BLOCK * BLOCK;
            i += 1;
            black_box(sha256(&data[at..at + BLOCK]))
        })
    });
    g.bench_function("blake3_group_path", |b| {
        let mut i = 0;
        b.iter(|| {
            let at = offsets[i % offsets.len()] / GROUP * GROUP;
            i += 1;
            tree.outboard
                .verify(&tree.root, at as u64, &data[at..at + GROUP])
                .unwrap()
        })
    });
    g.bench_function("blake3_group_checked", |b| {
        let mut i = 0;
        b.iter(|| {
            let at = offsets[i % offsets.len()] / GROUP * GROUP;
            i += 1;
            checked.verify(at as u64, &data[at..at + GROUP]).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("open");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("check_tree", |b| {
        b.iter(|| tree.outboard.clone().check(&tree.root).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("sequential");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(len as u64));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        g.bench_with_input(
            BenchmarkId::new("sha256_1MiB_blocks", threads),
            &threads,
            |b, _| {
                b.iter(|| {
                    pool.install(|| {
                        data.par_chunks(BLOCK)
                            .map(sha256)
                            .collect::<Vec<[u8; 32]>>()
                    })
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("blake3_16KiB_groups", threads),
            &threads,
            |b, _| b.iter(|| pool.install(|| tree.outboard.verify(&tree.root, 0, &data).unwrap())),
        );
    }
    g.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
