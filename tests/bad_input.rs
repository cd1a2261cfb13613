//! Bad input, one test per case: truncation, wrong magic, unknown versions, lengths past
//! the end or absurdly large, CRC/VERI/root mismatches, bad JSON, missing or unsorted
//! SEEK, index entries outside the file, empty containers, unknown engines, missing input,
//! unwritable destinations and bad arguments.
//!
//! Each damaged file is made from a good one, an h4fs container written by
//! `h4fs::writer` or a reference sample from `tests/fixtures/seed/`, by patching bytes
//! at offsets computed from the good file. Each case checks the library's error and the
//! binary: the message names what and where (chunk tag, byte offset), the exit code is
//! the documented one (1 damaged, 2 usage, 3 other), nothing panics or dies of a signal,
//! and no output file (or temporary file) is left behind.

mod common;

use common::fix_crc;
use h4fs::engine::Engine;
use h4fs::error::Error;
use h4fs::format::h4fs::{self as hf, Footer};
use h4fs::integrity;
use h4fs::reader::{Archive, OpenCheck};
use h4fs::writer::{BlockMeta, Writer, default_safe};
use std::path::{Path, PathBuf};
use std::process::Command;

const DAMAGED: i32 = 1;
const USAGE: i32 = 2;
const OTHER: i32 = 3;

// ---------------------------------------------------------------------------------------
// Good containers and where their parts are.

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seed")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The reference's layout A sample (geometric-reference engine, 10 blocks).
fn seed_a() -> Vec<u8> {
    fixture("a_small10.h4mk")
}

/// The reference's layout C sample.
fn seed_c() -> Vec<u8> {
    fixture("d_mt_build_demo.h4mk")
}

fn block_data(i: u64) -> Vec<u8> {
    (0..60 + 40 * i)
        .map(|k| ((k / 3) * 7 + i * 13) as u8)
        .collect()
}

/// A small h4fs container: 6 blocks of 60..260 bytes, a keyframe every 2 blocks.
fn h4fs_container(engine: Engine) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), engine).expect("writer");
    for i in 0..6u64 {
        let meta = BlockMeta {
            pts_us: i * 40_000,
            keyframe: i % 2 == 0,
        };
        w.add_block(&block_data(i), meta).expect("add block");
    }
    let mut meta = serde_json::Map::new();
    meta.insert("project".into(), "bad-input".into());
    w.finish(meta, &default_safe()).expect("finish").0
}

fn good() -> Vec<u8> {
    h4fs_container(Engine::Identity)
}

fn open(bytes: &[u8]) -> h4fs::Result<Archive> {
    Archive::from_source(Box::new(bytes.to_vec()), OpenCheck::Structure)
}

/// Offsets of the chunks and blocks of a good layout-A container.
struct Layout {
    chunks: Vec<(String, u64, u64)>,
    blocks: Vec<(u64, u64)>,
}

impl Layout {
    fn of(bytes: &[u8]) -> Layout {
        let a = open(bytes).expect("the good container opens");
        let t = &a.tracks[0];
        Layout {
            chunks: a
                .chunks
                .iter()
                .map(|c| (c.tag.to_string(), c.offset, c.payload_len))
                .collect(),
            blocks: (0..t.blocks.len())
                .map(|n| {
                    let e = t.blocks.get(n).expect("block");
                    (e.chunk_offset, e.stored_len)
                })
                .collect(),
        }
    }

    /// File offset of the chunk `tag`.
    fn at(&self, tag: &str) -> usize {
        self.chunks
            .iter()
            .find(|c| c.0 == tag)
            .unwrap_or_else(|| panic!("no {tag} chunk"))
            .1 as usize
    }

    /// File offset of block `n`'s CORE chunk.
    fn block(&self, n: usize) -> usize {
        self.blocks[n].0 as usize
    }
}

/// Layout C chunks: (tag, offset, payload length).
fn chunks_c(b: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 16;
    while pos + 12 <= b.len() - 4 {
        let n = u32::from_le_bytes(b[pos + 8..pos + 12].try_into().unwrap()) as usize;
        out.push((
            String::from_utf8_lossy(&b[pos..pos + 4]).into_owned(),
            pos,
            n,
        ));
        pos += 16 + n;
    }
    out
}

fn chunk_c(b: &[u8], tag: &str) -> (usize, usize) {
    let c = chunks_c(b).into_iter().find(|c| c.0 == tag).expect("chunk");
    (c.1, c.2)
}

// ---------------------------------------------------------------------------------------
// Patching.

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn set_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn set_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn payload_a(b: &[u8], at: usize) -> &[u8] {
    &b[at + 12..at + 12 + be32(b, at + 4) as usize]
}

/// Replace `from` by `to` (same length) inside the payload of the chunk at `at`.
fn replace_in_payload(b: &mut [u8], at: usize, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let p = at + 12;
    let end = p + be32(b, at + 4) as usize;
    let i = b[p..end]
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in the chunk", String::from_utf8_lossy(from)));
    b[p + i..p + i + to.len()].copy_from_slice(to);
}

/// After an in-place edit of SEEK, META, SAFE or the index of an h4fs container, make
/// everything that guards them agree again (their CRCs, the structure root, the footer's
/// CRC, VERI), so that the check behind them is what sees the edit.
fn reseal(b: &mut [u8]) {
    let tail = b.len() - hf::TAIL_LEN as usize;
    let f = Footer::parse(&b[tail + 12..tail + 12 + hf::FOOTER_PAYLOAD_LEN], 0).expect("footer");
    let offs = [f.seek_offset, f.meta_offset, f.safe_offset, f.index_offset].map(|o| o as usize);
    for o in offs {
        fix_crc(b, o);
    }
    let [seek, meta, safe, index] = offs.map(|o| payload_a(b, o).to_vec());
    let root = integrity::root_hash(
        &f.prefix(),
        &seek,
        &meta,
        &safe,
        &[],
        &integrity::index_digest(&index),
    );
    let root_at = tail + 12 + hf::FOOTER_PREFIX_LEN;
    b[root_at..root_at + 32].copy_from_slice(&root);
    fix_crc(b, tail);
    reseal_veri(b, b.len() - 44);
}

/// Recompute the VERI chunk at `at` (and its CRC) over every chunk before it.
fn reseal_veri(b: &mut [u8], at: usize) {
    let veri = integrity::sha256(&b[8..at]);
    b[at + 12..at + 44].copy_from_slice(&veri);
    fix_crc(b, at);
}

/// Recompute every chunk CRC and the file CRC of a layout C file.
fn reseal_c(b: &mut [u8]) {
    for (_, at, n) in chunks_c(b) {
        let crc = crc32fast::hash(&b[at..at + 12 + n]);
        b[at + 12 + n..at + 16 + n].copy_from_slice(&crc.to_le_bytes());
    }
    let end = b.len() - 4;
    let crc = crc32fast::hash(&b[..end]);
    b[end..].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------------------------------
// Running the binary.

/// A directory for one test's files.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    /// An empty directory for outputs that must not appear.
    fn out_dir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir(&p).expect("mkdir");
        p
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// One run of the binary: exit code and everything it printed.
struct Run {
    code: i32,
    stdout: Vec<u8>,
    text: String,
}

fn run_cmd(mut cmd: Command, what: &str) -> Run {
    let o = cmd.output().expect("run h4fs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let code = o
        .status
        .code()
        .unwrap_or_else(|| panic!("{what} was killed by a signal ({:?}): {text}", o.status));
    assert!(
        code != 101 && !text.contains("panicked"),
        "{what} panicked: {text}"
    );
    Run {
        code,
        stdout: o.stdout,
        text,
    }
}

fn run(args: &[&str]) -> Run {
    let mut cmd = common::h4fs();
    cmd.args(args);
    run_cmd(cmd, &format!("h4fs {args:?}"))
}

#[track_caller]
fn expect(args: &[&str], code: i32, needles: &[&str]) -> Run {
    check_run(run(args), args, code, needles)
}

#[track_caller]
fn check_run(r: Run, args: &[&str], code: i32, needles: &[&str]) -> Run {
    assert_eq!(r.code, code, "h4fs {args:?} exit code; it said: {}", r.text);
    for n in needles {
        assert!(
            r.text.contains(n),
            "h4fs {args:?} should say {n:?}; it said: {}",
            r.text
        );
    }
    r
}

#[track_caller]
fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        left.is_empty(),
        "{} should be empty, holds {left:?}",
        dir.display()
    );
}

/// Every command that reads a container, with `extract` writing into `out`.
fn read_commands(file: &Path, out: &Path) -> Vec<Vec<String>> {
    let f = s(file).to_string();
    let o = out.join("stream.bin");
    [
        vec!["inspect", &f],
        vec!["inspect", "--json", &f],
        vec!["verify", &f],
        vec!["verify", "--full", &f],
        vec!["seek", &f, "0"],
        vec!["cat", &f],
        vec!["cat", "--block", "0", &f],
        vec!["extract", &f, "-o", s(&o)],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_string).collect())
    .collect()
}

/// Every reading command fails on `file` with `code` and all of `needles`, and extract
/// leaves nothing behind.
#[track_caller]
fn every_reader_fails(scratch: &Scratch, file: &Path, code: i32, needles: &[&str]) {
    let out = scratch.out_dir(&format!(
        "out-{}",
        file.file_name().unwrap().to_string_lossy()
    ));
    for args in read_commands(file, &out) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        expect(&args, code, needles);
    }
    assert_empty(&out);
}

/// The library refuses `bytes` with a message holding `needles`, classified as damage
/// exactly when `code` is [`DAMAGED`]; every reading command does the same.
#[track_caller]
fn rejected(scratch: &Scratch, name: &str, bytes: &[u8], code: i32, needles: &[&str]) -> Error {
    let err = open(bytes).expect_err("the damaged container must not open");
    let msg = err.to_string();
    for n in needles {
        assert!(
            msg.contains(n),
            "{name}: the error should say {n:?}; it says: {msg}"
        );
    }
    assert_eq!(err.is_integrity(), code == DAMAGED, "{name}: {msg}");
    let file = scratch.write(name, bytes);
    every_reader_fails(scratch, &file, code, needles);
    err
}

// ---------------------------------------------------------------------------------------
// The cases.

#[test]
fn truncated_inside_the_header() {
    let sc = Scratch::new();
    for (name, file) in [("h4fs", good()), ("seed-a", seed_a())] {
        for cut in [1, 3, 4, 6, 7] {
            rejected(
                &sc,
                &format!("{name}-{cut}.h4mk"),
                &file[..cut],
                DAMAGED,
                &[
                    "truncated: H4MK header at offset 0 needs 8 bytes",
                    &format!("ends at {cut}"),
                ],
            );
        }
    }
    for cut in [8, 15] {
        rejected(
            &sc,
            &format!("c-{cut}.h4mk"),
            &seed_c()[..cut],
            DAMAGED,
            &["truncated: layout C header at offset 0 needs 16 bytes"],
        );
    }
}

#[test]
fn truncated_inside_a_chunk_header() {
    let sc = Scratch::new();
    let g = good();
    let l = Layout::of(&g);
    for at in [l.block(0), l.block(3), l.at("SEEK"), l.at("SAFE")] {
        for into in [1, 6, 11] {
            rejected(
                &sc,
                &format!("h4fs-{at}-{into}.h4mk"),
                &g[..at + into],
                DAMAGED,
                &[&format!(
                    "truncated: chunk header at offset {at} needs 12 bytes, but the file ends at {}",
                    at + into
                )],
            );
        }
    }
    let a = seed_a();
    let l = Layout::of(&a);
    for at in [l.block(0), l.at("META"), l.at("VERI")] {
        rejected(
            &sc,
            &format!("seed-a-{at}.h4mk"),
            &a[..at + 5],
            DAMAGED,
            &[&format!("chunk header at offset {at} needs 12 bytes")],
        );
    }
    let c = seed_c();
    let (tsek, _) = chunk_c(&c, "TSEK");
    rejected(
        &sc,
        "seed-c.h4mk",
        &c[..tsek + 7],
        DAMAGED,
        &[&format!(
            "truncated: layout C chunk header at offset {tsek} needs 12 bytes"
        )],
    );
}

#[test]
fn truncated_inside_a_payload() {
    let sc = Scratch::new();
    let g = good();
    let l = Layout::of(&g);
    let (core2, len2) = l.blocks[2];
    for (name, at, tag) in [
        ("core", core2 as usize, "CORE"),
        ("meta", l.at("META"), "META"),
        ("index", l.at("HIDX"), "HIDX"),
    ] {
        let plen = be32(&g, at + 4) as u64;
        let cut = at + 12 + plen as usize / 2;
        rejected(
            &sc,
            &format!("h4fs-{name}.h4mk"),
            &g[..cut],
            DAMAGED,
            &[&format!(
                "truncated: chunk {tag} (payload length {plen}) at offset {at} needs {} bytes, but the file ends at {cut}",
                plen + 12
            )],
        );
    }
    assert!(len2 > 2);
    let a = seed_a();
    let l = Layout::of(&a);
    let at = l.block(4);
    rejected(
        &sc,
        "seed-a.h4mk",
        &a[..at + 20],
        DAMAGED,
        &["truncated: chunk CORE", &format!("at offset {at}")],
    );
    let c = seed_c();
    let (core, _) = chunk_c(&c, "CORE");
    rejected(
        &sc,
        "seed-c.h4mk",
        &c[..core + 14],
        DAMAGED,
        &["truncated: chunk CORE", &format!("at offset {core}")],
    );
}

#[test]
fn truncated_inside_the_h4fs_footer() {
    let sc = Scratch::new();
    let g = good();
    let l = Layout::of(&g);
    let (hftr, veri) = (l.at("HFTR"), l.at("VERI"));
    assert_eq!((hftr, veri), (g.len() - 152, g.len() - 44));
    // Inside the footer's payload and inside VERI's: the cut chunk is named.
    for (cut, tag, at) in [
        (hftr + 12 + 40, "HFTR", hftr),
        (hftr + 107, "HFTR", hftr),
        (veri + 30, "VERI", veri),
    ] {
        rejected(
            &sc,
            &format!("cut-{cut}.h4mk"),
            &g[..cut],
            DAMAGED,
            &[
                "truncated",
                &format!("chunk {tag}"),
                &format!("at offset {at}"),
                &format!("ends at {cut}"),
            ],
        );
    }
    // Inside the footer's chunk header.
    rejected(
        &sc,
        "cut-hdr.h4mk",
        &g[..hftr + 7],
        DAMAGED,
        &[&format!("truncated: chunk header at offset {hftr}")],
    );
    // Exactly before the footer or before VERI: the rest would pass as a reference file
    // if the h4fs chunks before the cut were not noticed.
    let hidx = l.at("HIDX");
    for cut in [hftr, veri] {
        rejected(
            &sc,
            &format!("cut-{cut}.h4mk"),
            &g[..cut],
            DAMAGED,
            &[
                &format!("chunk HIDX at offset {hidx}"),
                "does not end with the h4fs tail",
                "truncated",
            ],
        );
    }
    // Cut before the index: META still says h4fs.
    let meta = l.at("META");
    rejected(
        &sc,
        "cut-index.h4mk",
        &g[..hidx],
        DAMAGED,
        &[&format!("chunk META at offset {meta}"), "h4fs tail"],
    );
}

#[test]
fn wrong_magic() {
    let sc = Scratch::new();
    let mut g = good();
    g[3] = b'X';
    rejected(
        &sc,
        "h4fs.h4mk",
        &g,
        OTHER,
        &[
            "not an H4MK container",
            "\"H4MK\" at offset 0",
            "48, 34, 4d, 58",
        ],
    );
    let mut a = seed_a();
    a[0] = b'h';
    rejected(
        &sc,
        "seed.h4mk",
        &a,
        OTHER,
        &["not an H4MK container", "at offset 0"],
    );
    rejected(
        &sc,
        "png.h4mk",
        b"\x89PNG\r\n\x1a\n0000",
        OTHER,
        &["not an H4MK container", "89, 50, 4e, 47"],
    );
}

#[test]
fn unknown_version() {
    let sc = Scratch::new();
    let mut g = good();
    g[5] = 2;
    rejected(
        &sc,
        "a2.h4mk",
        &g,
        OTHER,
        &["unsupported H4MK version 2 (layout A) at offset 4"],
    );
    let mut a = seed_a();
    a[4..6].copy_from_slice(&[0, 0]);
    rejected(
        &sc,
        "a0.h4mk",
        &a,
        OTHER,
        &["unsupported H4MK version 0 (layout A) at offset 4"],
    );
    let mut c = seed_c();
    c[4] = 7;
    rejected(
        &sc,
        "c7.h4mk",
        &c,
        OTHER,
        &["unsupported H4MK version 7 (layout C) at offset 4"],
    );
    // The h4fs footer carries its own version.
    let mut g = good();
    let hftr = g.len() - 152;
    set_be32(&mut g, hftr + 12, 9);
    fix_crc(&mut g, hftr);
    rejected(
        &sc,
        "footer9.h4mk",
        &g,
        OTHER,
        &[
            "unsupported H4MK version 9",
            &format!("at offset {}", hftr + 12),
        ],
    );
    // So does the block index.
    let mut g = good();
    let hidx = Layout::of(&g).at("HIDX");
    set_be32(&mut g, hidx + 12, 5);
    reseal(&mut g);
    rejected(
        &sc,
        "index5.h4mk",
        &g,
        DAMAGED,
        &[&format!(
            "chunk HIDX at offset {hidx}: unsupported index version 5"
        )],
    );
}

#[test]
fn length_running_past_the_end() {
    let sc = Scratch::new();
    let mut a = seed_a();
    let at = Layout::of(&a).block(3);
    let len = be32(&a, at + 4);
    set_be32(&mut a, at + 4, len + 1000);
    rejected(
        &sc,
        "seed-core.h4mk",
        &a,
        DAMAGED,
        &[&format!(
            "truncated: chunk CORE (payload length {}) at offset {at} needs {} bytes, but the file ends at {}",
            len + 1000,
            len + 1012,
            a.len()
        )],
    );
    // In an h4fs container the footer says where META lies; its length must keep it
    // before the footer.
    let mut g = good();
    let meta = Layout::of(&g).at("META");
    let len = be32(&g, meta + 4);
    set_be32(&mut g, meta + 4, len + 5000);
    rejected(
        &sc,
        "h4fs-meta.h4mk",
        &g,
        DAMAGED,
        &[&format!(
            "chunk META at offset {meta}: payload length {} runs past",
            len + 5000
        )],
    );
    let mut c = seed_c();
    let (core, len) = chunk_c(&c, "CORE");
    c[core + 8..core + 12].copy_from_slice(&(len as u32 + 4000).to_le_bytes());
    rejected(
        &sc,
        "seed-c.h4mk",
        &c,
        DAMAGED,
        &["truncated: chunk CORE", &format!("at offset {core}")],
    );
}

/// A block's CORE length changed in an h4fs container: the index no longer matches the
/// chunk, which reading that block (and verify) report; the other blocks still read.
#[test]
fn block_length_disagreeing_with_the_index() {
    let sc = Scratch::new();
    let mut g = good();
    let l = Layout::of(&g);
    let (at, len) = l.blocks[1];
    set_be32(&mut g, at as usize + 4, len as u32 + 9);
    let f = sc.write("b.h4mk", &g);
    let want = format!(
        "block 1 (chunk at offset {at}): index points at a CORE chunk of {} bytes, expected CORE of {len}",
        len + 9
    );
    expect(&["verify", s(&f)], DAMAGED, &[&want]);
    expect(&["cat", "--block", "1", s(&f)], DAMAGED, &[&want]);
    let r = expect(&["cat", "--block", "0", s(&f)], 0, &[]);
    assert_eq!(r.stdout, block_data(0));
}

/// Runs `args` with the address space limited to 1 GiB: an allocation sized from a
/// 0xFFFFFFFF length would abort.
fn run_limited(args: &[&str]) -> Run {
    let mut cmd = common::limited(1 << 20);
    cmd.args(args);
    run_cmd(cmd, &format!("h4fs {args:?} under ulimit -v 1 GiB"))
}

#[test]
fn huge_length_field_does_not_allocate() {
    // The limit is real: 4 GiB cannot be allocated under it.
    if Command::new("python3").arg("--version").output().is_ok() {
        let mut cmd = Command::new("bash");
        cmd.args([
            "-c",
            "ulimit -v 1048576 && exec python3 -c 'bytearray(4 << 30)'",
        ]);
        let o = cmd.output().expect("python3");
        assert!(
            !o.status.success(),
            "a 4 GiB allocation succeeded under the limit"
        );
    }
    let sc = Scratch::new();
    let huge = u32::MAX;
    let mut cases: Vec<(&str, Vec<u8>, String)> = Vec::new();

    let mut a = seed_a();
    set_be32(&mut a, 8 + 4, huge);
    cases.push((
        "seed-core",
        a,
        format!("truncated: chunk CORE (payload length {huge}) at offset 8 needs 4294967307 bytes"),
    ));

    let mut a = seed_a();
    let seek = Layout::of(&a).at("SEEK");
    set_be32(&mut a, seek + 12, huge);
    fix_crc(&mut a, seek);
    cases.push((
        "seed-seek-count",
        a,
        format!("chunk SEEK at offset {seek}: count {huge} needs 68719476720 bytes of entries"),
    ));

    let g = good();
    let l = Layout::of(&g);
    for tag in ["SEEK", "META", "HIDX"] {
        let mut b = g.clone();
        let at = l.at(tag);
        set_be32(&mut b, at + 4, huge);
        cases.push((
            tag,
            b,
            format!("chunk {tag} at offset {at}: payload length {huge} runs past"),
        ));
    }

    let mut b = g.clone();
    let hidx = l.at("HIDX");
    set_be64(&mut b, hidx + 12 + 8, u64::MAX);
    reseal(&mut b);
    cases.push((
        "index-count",
        b,
        format!(
            "chunk HIDX at offset {hidx}: index holds {} entries, footer says 6 blocks",
            u64::MAX
        ),
    ));

    let mut b = g.clone();
    set_be32(&mut b, hidx + 12 + 16 + 72 * 2 + 8, huge);
    reseal(&mut b);
    cases.push(("entry-stored-len", b, format!("block index entry 2: chunk at offset {} with {huge} stored bytes lies outside the block region", l.block(2))));

    let mut b = g.clone();
    let hftr = g.len() - 152;
    set_be32(&mut b, hftr + 4, huge);
    cases.push((
        "footer-len",
        b,
        format!("chunk HFTR at offset {hftr}: length {huge}, expected 96"),
    ));

    let mut c = seed_c();
    let (core, _) = chunk_c(&c, "CORE");
    c[core + 8..core + 12].copy_from_slice(&huge.to_le_bytes());
    cases.push((
        "seed-c-core",
        c,
        format!("truncated: chunk CORE (payload length {huge}) at offset {core}"),
    ));

    for (name, bytes, want) in cases {
        let err = open(&bytes).expect_err(name);
        assert!(err.to_string().contains(&want), "{name}: {err}");
        let f = sc.write(&format!("{name}.h4mk"), &bytes);
        for args in [
            vec!["inspect", s(&f)],
            vec!["verify", "--full", s(&f)],
            vec!["cat", s(&f)],
        ] {
            check_run(run_limited(&args), &args, DAMAGED, &[&want]);
        }
    }
}

#[test]
fn crc_mismatch() {
    let sc = Scratch::new();
    let a = seed_a();
    let l = Layout::of(&a);
    let meta = l.at("META");
    let mut b = a.clone();
    b[meta + 12 + 20] ^= 0x01;
    rejected(
        &sc,
        "seed-meta.h4mk",
        &b,
        DAMAGED,
        &[&format!(
            "chunk META at offset {meta}: CRC-32 mismatch (stored {:08x}, computed",
            be32(&a, meta + 8)
        )],
    );

    // A reference block's CRC is checked when the block is read, but its VERI no longer
    // matches either, and a reference file is served only with its VERI intact: no
    // block of it is output.
    let at = l.block(4);
    let mut b = a.clone();
    b[at + 12 + 2] ^= 0x40; // a run's value byte: the decoded length is unchanged
    let f = sc.write("seed-core.h4mk", &b);
    let want = format!("block 4 (chunk at offset {at}): CRC-32 mismatch");
    expect(&["inspect", s(&f)], 0, &[]);
    expect(
        &["verify", s(&f)],
        DAMAGED,
        &[&want, "VERI mismatch", "2 problem(s)"],
    );
    for n in ["4", "3"] {
        let r = expect(&["cat", "--block", n, s(&f)], DAMAGED, &["VERI mismatch"]);
        assert!(r.stdout.is_empty());
    }
    let out = sc.out_dir("out");
    expect(
        &["extract", s(&f), "-o", s(&out.join("x"))],
        DAMAGED,
        &[&want],
    );
    assert_empty(&out);
    // With VERI recomputed (as anyone can), the CRC still catches it, block by block.
    let mut b2 = b.clone();
    reseal_veri(&mut b2, l.at("VERI"));
    let f = sc.write("seed-core-resealed.h4mk", &b2);
    expect(&["verify", s(&f)], DAMAGED, &[&want, "1 problem(s)"]);
    expect(&["cat", "--block", "4", s(&f)], DAMAGED, &[&want]);
    let r = expect(&["cat", "--block", "3", s(&f)], 0, &[]);
    assert_eq!(r.stdout, &fixture("a_small10.payload")[3 * 256..4 * 256]);

    let mut g = good();
    let safe = Layout::of(&g).at("SAFE");
    g[safe + 12 + 3] ^= 0x20;
    rejected(
        &sc,
        "h4fs-safe.h4mk",
        &g,
        DAMAGED,
        &[&format!("chunk SAFE at offset {safe}: CRC-32 mismatch")],
    );

    let mut c = seed_c();
    let (trak, _) = chunk_c(&c, "TRAK");
    c[trak + 12 + 5] ^= 0x01;
    rejected(
        &sc,
        "seed-c.h4mk",
        &c,
        DAMAGED,
        &[&format!("chunk TRAK at offset {trak}: CRC-32 mismatch")],
    );
    // Layout C's whole-file CRC.
    let mut c = seed_c();
    let end = c.len() - 4;
    c[end] ^= 0x01;
    rejected(
        &sc,
        "seed-c-file.h4mk",
        &c,
        DAMAGED,
        &[&format!("at offset {end}: file CRC-32 mismatch")],
    );
}

#[test]
fn veri_mismatch() {
    let sc = Scratch::new();
    for (name, mut b) in [("seed", seed_a()), ("h4fs", good())] {
        let veri = Layout::of(&b).at("VERI");
        b[veri + 12] ^= 0x80;
        fix_crc(&mut b, veri);
        let f = sc.write(&format!("{name}.h4mk"), &b);
        let want = format!(
            "VERI mismatch: the VERI chunk at offset {veri} records {}",
            hex::encode(&b[veri + 12..veri + 44])
        );
        // Plain verify checks VERI where nothing else protects the blocks.
        match name {
            "seed" => expect(&["verify", s(&f)], DAMAGED, &[&want]),
            _ => expect(&["verify", s(&f)], 0, &[]),
        };
        expect(&["verify", "--full", s(&f)], DAMAGED, &[&want]);
        let a = open(&b).expect("opens: VERI is only checked on request");
        let err = a.check_veri(&|_| {}).expect_err("VERI mismatch");
        assert!(
            matches!(err, Error::VeriMismatch { offset, .. } if offset == veri as u64),
            "{err}"
        );
    }
    // A CORE chunk's CRC field is covered by neither the block's SHA-256 nor the root in
    // an h4fs container, but the reference's parser checks it, and so does plain verify.
    let mut g = good();
    let at = Layout::of(&g).block(2);
    g[at + 8] ^= 0x01;
    let f = sc.write("core-crc.h4mk", &g);
    let want = format!(
        "block 2 (chunk at offset {at}): the CORE chunk's CRC-32 field is {:08x}",
        be32(&g, at + 8)
    );
    expect(&["verify", s(&f)], DAMAGED, &[&want, "1 problem(s)"]);
    expect(
        &["verify", "--full", s(&f)],
        DAMAGED,
        &[
            &want,
            &format!("VERI mismatch: the VERI chunk at offset {}", g.len() - 44),
        ],
    );
    // Its payload is intact (SHA-256), so reads serve it: the bytes are right.
    let r = expect(&["cat", "--block", "2", s(&f)], 0, &[]);
    assert_eq!(r.stdout, block_data(2));
    // No VERI at all (a reference file cut exactly before it).
    let a = seed_a();
    let veri = Layout::of(&a).at("VERI");
    let f = sc.write("no-veri.h4mk", &a[..veri]);
    for args in [vec!["verify", s(&f)], vec!["verify", "--full", s(&f)]] {
        expect(
            &args,
            DAMAGED,
            &[&format!("chunk VERI at offset {veri}: not found")],
        );
    }
}

/// Header bytes 6-7 are reserved (zero): nothing reads them and VERI does not cover
/// them, so verify checks them, for h4fs and reference files alike.
#[test]
fn reserved_header_bytes() {
    let sc = Scratch::new();
    for (name, mut b) in [("seed", seed_a()), ("h4fs", good())] {
        b[7] = 0x01;
        let f = sc.write(&format!("{name}.h4mk"), &b);
        expect(
            &["verify", s(&f)],
            DAMAGED,
            &["chunk H4MK at offset 6: header bytes 6-7 (reserved) are 00 01, expected 00 00"],
        );
    }
}

/// Bytes between the chunks of an h4fs container (here a well-formed unknown chunk
/// before SEEK, with the footer, root and VERI made to agree): nothing h4fs wrote, and
/// verify says where.
#[test]
fn bytes_between_h4fs_chunks() {
    let sc = Scratch::new();
    let g = good();
    let seek = Layout::of(&g).at("SEEK");
    let mut b = g[..seek].to_vec();
    b.extend_from_slice(b"JUNK\0\0\0\0\0\0\0\0");
    b.extend_from_slice(&g[seek..]);
    let footer = b.len() - hf::TAIL_LEN as usize + 12;
    for field in [8, 16, 24, 32] {
        let at = footer + field;
        let v = u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
        set_be64(&mut b, at, v + 12);
    }
    reseal(&mut b);
    let a = open(&b).expect("opens: the structure is consistent");
    assert_eq!(a.read_block(0, 5).unwrap().bytes(), block_data(5));
    let f = sc.write("gap.h4mk", &b);
    expect(
        &["verify", s(&f)],
        DAMAGED,
        &[&format!(
            "chunk SEEK at offset {}: the chunk before it ends at {seek}",
            seek + 12
        )],
    );
}

/// Every single-byte change of the samples and of h4fs containers is refused at open
/// or reported by plain `verify` (no `--full`): "ok" holds for no damaged byte.
#[test]
fn every_byte_flip_fails_open_or_plain_verify() {
    let files = [
        ("seed-a", seed_a()),
        ("seed-c", seed_c()),
        ("seed-e", fixture("e_encrypted5.h4mk")),
        ("h4fs", good()),
        ("h4fs-georef", h4fs_container(Engine::GeometricReference)),
    ];
    for (name, f) in files {
        for i in 0..f.len() {
            for x in [0x01, 0xa5] {
                let mut b = f.clone();
                b[i] ^= x;
                if let Ok(a) = open(&b) {
                    let r = h4fs::verify::verify(&a, false, &|_| {});
                    assert!(!r.ok(), "{name}: byte {i} ^ {x:#x} passes plain verify");
                }
            }
        }
    }
}

/// One changed byte in the tag of any CORE chunk of a reference file makes the reference
/// walk skip that chunk as an unknown one, with every CRC still right; only VERI shows
/// it. No command outputs a byte of such a file or calls it intact: all 40 tag bytes of
/// the sample, through every reading command. The untouched file still works.
#[test]
fn reference_core_tag_flips_output_nothing() {
    let sc = Scratch::new();
    let a = seed_a();
    let payload = fixture("a_small10.payload");
    let l = Layout::of(&a);
    assert_eq!(l.blocks.len(), 10);
    let out = sc.out_dir("out");
    let o = out.join("stream.bin");
    let commands = |f: &str| -> Vec<Vec<String>> {
        [
            vec!["verify", f],
            vec!["verify", "--full", f],
            vec!["extract", f, "-o", s(&o)],
            vec!["extract", f, "-o", "-"],
            vec!["cat", f],
            vec!["cat", "--range", "0-99", f],
            vec!["cat", "--block", "0", f],
            vec!["cat", "--raw", "--block", "0", f],
            vec!["cat", "--pts", "0", f],
            vec!["seek", f, "0"],
            vec!["seek", "--json", f, "200000"],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(str::to_string).collect())
        .collect()
    };
    let mut runs = 0;
    for n in 0..10 {
        for k in 0..4 {
            let mut b = a.clone();
            b[l.block(n) + k] ^= 0x01;
            // The premise: it still opens, one block short.
            assert_eq!(open(&b).expect("opens").block_count(), 9);
            let f = sc.write(&format!("flip-{n}-{k}.h4mk"), &b);
            for args in commands(s(&f)) {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let r = expect(&args, DAMAGED, &["VERI mismatch"]);
                if args[0] != "verify" {
                    assert!(r.stdout.is_empty(), "h4fs {args:?} printed data");
                }
                assert!(!r.text.contains("\nok "), "h4fs {args:?}: {}", r.text);
                runs += 1;
            }
            assert_empty(&out);
        }
    }
    assert_eq!(runs, 40 * 11);

    let f = sc.write("good.h4mk", &a);
    for args in commands(s(&f)) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = expect(&args, 0, &[]);
        match (args[0], args[1]) {
            ("verify", _) => assert!(r.text.contains("10 blocks"), "{}", r.text),
            ("extract", _) if args[3] == "-" => assert_eq!(r.stdout, payload),
            ("cat", "--range") => assert_eq!(r.stdout, &payload[..100]),
            ("cat", "--block" | "--pts") => assert_eq!(r.stdout, &payload[..256]),
            ("cat", _) if args.len() == 2 => assert_eq!(r.stdout, payload),
            _ => {}
        }
    }
    assert_eq!(std::fs::read(&o).unwrap(), payload);
}

/// `extract` into a FIFO cannot take bytes back, so a reference file's VERI is checked
/// before the first one: a damaged file sends the reader nothing, an intact one its
/// whole stream.
#[test]
fn reference_extract_into_a_fifo_checks_veri_first() {
    let sc = Scratch::new();
    let a = seed_a();
    let mut bad = a.clone();
    bad[Layout::of(&a).block(3)] ^= 0x01;
    for (name, bytes, code, want) in [
        ("bad", bad, DAMAGED, Vec::new()),
        ("good", a, 0, fixture("a_small10.payload")),
    ] {
        let f = sc.write(&format!("{name}.h4mk"), &bytes);
        let fifo = sc.path(&format!("{name}.fifo"));
        let c = std::ffi::CString::new(s(&fifo)).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let r = run(&["extract", s(&f), "-o", s(&fifo)]);
        // Should extract not have opened the FIFO, open it once so the reader ends.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        assert_eq!(r.code, code, "{name}: {}", r.text);
        assert_eq!(reader.join().unwrap(), want, "{name}");
    }
}

/// The other reference samples keep working with the VERI checks: layout C (no VERI;
/// its CRCs are checked at open) and the encrypted layout A sample (VERI checked, then
/// decrypted with its secret), including `extract` to a file.
#[test]
fn reference_samples_still_read_with_veri_checks() {
    let sc = Scratch::new();
    let c = sc.write("c.h4mk", &seed_c());
    expect(&["verify", s(&c)], 0, &["ok "]);
    expect(&["seek", s(&c), "0"], 0, &["keyframe"]);
    let r = expect(&["cat", s(&c), "--block", "0"], 0, &[]);
    assert!(!r.stdout.is_empty());
    let out = sc.path("c.bin");
    expect(&["extract", s(&c), "-o", s(&out)], 0, &[]);
    assert!(std::fs::metadata(&out).unwrap().len() > 0);

    let e = sc.write("e.h4mk", &fixture("e_encrypted5.h4mk"));
    let payload = fixture("e_encrypted5.payload");
    let ss = sc.write(
        "ss",
        b"1154c312078cf50cee166c9b2479c949dc4ebbc7e3668ce549aa45bb34cf629c\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ss, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = ["--shared-secret-file", s(&ss)];
    expect(&["verify", s(&e)], 0, &["VERI ok"]);
    let out = sc.path("e.bin");
    expect(
        &[&["extract"][..], &key, &[s(&e), "-o", s(&out)]].concat(),
        0,
        &[],
    );
    assert_eq!(std::fs::read(&out).unwrap(), payload);
    let r = expect(&[&["cat"][..], &key, &[s(&e)]].concat(), 0, &[]);
    assert_eq!(r.stdout, payload);
    expect(&["seek", s(&e), "0"], 0, &["keyframe"]);
    // Its VERI changed: refused like the plain sample.
    let mut b = fixture("e_encrypted5.h4mk");
    let veri = b.len() - 32;
    b[veri] ^= 1;
    let crc = crc32fast::hash(&b[veri..]);
    set_be32(&mut b, veri - 4, crc);
    let e = sc.write("e-bad.h4mk", &b);
    let dir = sc.out_dir("e-out");
    let out = dir.join("e.bin");
    let r = expect(
        &[&["extract"][..], &key, &[s(&e), "-o", s(&out)]].concat(),
        DAMAGED,
        &["VERI mismatch"],
    );
    assert!(r.stdout.is_empty());
    assert_empty(&dir);
}

/// A reference file without VERI (cut exactly before it: the reference's parser reads
/// it) has nothing showing its chunks are the ones written, so it is refused like one
/// whose VERI does not match; a chunk after VERI is covered by nothing and refused too.
#[test]
fn reference_file_without_a_final_veri_is_refused() {
    let sc = Scratch::new();
    let a = seed_a();
    let veri = Layout::of(&a).at("VERI");
    let cut = sc.write("no-veri.h4mk", &a[..veri]);
    // A copy of block 0's chunk appended after VERI: block 10, whose CRC is right.
    let mut b = a.clone();
    b.extend_from_slice(&a[8..8 + 12 + be32(&a, 8 + 4) as usize]);
    assert_eq!(open(&b).unwrap().block_count(), 11);
    let appended = sc.write("appended.h4mk", &b);
    for (f, want) in [
        (&cut, format!("chunk VERI at offset {veri}: not found")),
        (
            &appended,
            format!("chunk CORE at offset {}: follows the VERI chunk", a.len()),
        ),
    ] {
        let out = sc.out_dir(&format!("out-{}", f.file_name().unwrap().to_string_lossy()));
        for args in [
            vec!["verify", s(f)],
            vec!["cat", s(f)],
            vec!["cat", "--block", "0", s(f)],
            vec!["seek", s(f), "0"],
            vec!["extract", s(f), "-o", "-"],
            vec!["extract", s(f), "-o", s(&out.join("x"))],
        ] {
            let r = expect(&args, DAMAGED, &[&want]);
            if args[0] != "verify" {
                assert!(r.stdout.is_empty(), "h4fs {args:?} printed data");
            }
        }
        assert_empty(&out);
    }
}

#[test]
fn invalid_json_in_meta() {
    let sc = Scratch::new();
    let mut a = seed_a();
    let meta = Layout::of(&a).at("META");
    a[meta + 12] = b'[';
    fix_crc(&mut a, meta);
    rejected(
        &sc,
        "seed.h4mk",
        &a,
        DAMAGED,
        &[
            &format!("invalid JSON in META chunk at offset {meta}: "),
            "line 1 column",
        ],
    );
    let mut g = good();
    let meta = Layout::of(&g).at("META");
    replace_in_payload(&mut g, meta, b"\"project\":", b"\"project\";");
    reseal(&mut g);
    rejected(
        &sc,
        "h4fs.h4mk",
        &g,
        DAMAGED,
        &[&format!(
            "invalid JSON in META chunk at offset {meta}: expected `:`"
        )],
    );
    // Valid JSON that is not an object.
    let mut g = good();
    let len = be32(&g, meta + 4) as usize;
    let arr = format!("[{}]", " ".repeat(len - 2));
    g[meta + 12..meta + 12 + len].copy_from_slice(arr.as_bytes());
    reseal(&mut g);
    rejected(
        &sc,
        "array.h4mk",
        &g,
        DAMAGED,
        &[&format!(
            "META chunk at offset {meta}: META is not a JSON object"
        )],
    );
}

#[test]
fn non_utf8_json_in_meta() {
    let sc = Scratch::new();
    let mut a = seed_a();
    let meta = Layout::of(&a).at("META");
    // "HarmonyØ4": break the two-byte "Ø".
    replace_in_payload(&mut a, meta, "Ø".as_bytes(), b"\xff\xfe");
    fix_crc(&mut a, meta);
    rejected(
        &sc,
        "seed.h4mk",
        &a,
        DAMAGED,
        &[&format!(
            "invalid JSON in META chunk at offset {meta}: not UTF-8"
        )],
    );
    let mut g = good();
    let meta = Layout::of(&g).at("META");
    replace_in_payload(&mut g, meta, b"bad-input", b"bad\xc0input");
    reseal(&mut g);
    rejected(
        &sc,
        "h4fs.h4mk",
        &g,
        DAMAGED,
        &[&format!(
            "invalid JSON in META chunk at offset {meta}: not UTF-8"
        )],
    );
}

#[test]
fn missing_seek() {
    let sc = Scratch::new();
    let a = seed_a();
    let l = Layout::of(&a);
    let (seek, meta) = (l.at("SEEK"), l.at("META"));
    let mut b = a[..seek].to_vec();
    b.extend_from_slice(&a[meta..]);
    rejected(
        &sc,
        "seed.h4mk",
        &b,
        DAMAGED,
        &[
            &format!("chunk SEEK at offset {}: not found", b.len()),
            "seek table",
        ],
    );
    // The same for META.
    let safe = l.at("SAFE");
    let mut b = a[..meta].to_vec();
    b.extend_from_slice(&a[safe..]);
    rejected(
        &sc,
        "seed-meta.h4mk",
        &b,
        DAMAGED,
        &[&format!("chunk META at offset {}: not found", b.len())],
    );
    // In an h4fs container the footer names where SEEK is.
    let mut g = good();
    let seek = Layout::of(&g).at("SEEK");
    g[seek + 3] = b'X';
    rejected(
        &sc,
        "h4fs.h4mk",
        &g,
        DAMAGED,
        &[&format!(
            "chunk SEEK at offset {seek}: expected a SEEK chunk here, found tag SEEX"
        )],
    );
}

#[test]
fn unsorted_seek() {
    let sc = Scratch::new();
    let mut a = seed_a();
    let seek = Layout::of(&a).at("SEEK");
    // Two entries: (0, 0) and (166665, 1280); swap them.
    let p = seek + 16;
    let (e0, e1) = (a[p..p + 16].to_vec(), a[p + 16..p + 32].to_vec());
    a[p..p + 16].copy_from_slice(&e1);
    a[p + 16..p + 32].copy_from_slice(&e0);
    fix_crc(&mut a, seek);
    rejected(
        &sc,
        "seed.h4mk",
        &a,
        DAMAGED,
        &[&format!(
            "chunk SEEK at offset {seek}: entry 1 has pts 0 after pts 166665: SEEK is not sorted"
        )],
    );
    let mut g = good();
    let seek = Layout::of(&g).at("SEEK");
    // Three keyframes at 0, 80000, 160000: make the last one 1.
    set_be64(&mut g, seek + 16 + 32, 1);
    reseal(&mut g);
    rejected(
        &sc,
        "h4fs.h4mk",
        &g,
        DAMAGED,
        &[&format!(
            "chunk SEEK at offset {seek}: entry 2 has pts 1 after pts 80000"
        )],
    );
    // Layout C's per-track seek table.
    let mut c = seed_c();
    let (tsek, n) = chunk_c(&c, "TSEK");
    assert!(n >= 32, "the sample's first TSEK has at least two entries");
    let e = tsek + 12 + 16;
    c[e..e + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal_c(&mut c);
    rejected(
        &sc,
        "seed-c.h4mk",
        &c,
        DAMAGED,
        &[&format!(
            "chunk TSEK at offset {tsek}: entries are not sorted by pts"
        )],
    );
}

#[test]
fn index_entry_pointing_outside_the_file() {
    let sc = Scratch::new();
    let g = good();
    let l = Layout::of(&g);
    let hidx = l.at("HIDX");
    let seek = l.at("SEEK");
    let entry = |n: usize| hidx + 12 + 16 + 72 * n;
    for (name, offset) in [
        ("past-end", g.len() as u64 + 4096),
        ("into-meta", l.at("META") as u64),
        ("far", u64::MAX - 3),
    ] {
        let mut b = g.clone();
        set_be64(&mut b, entry(2), offset);
        reseal(&mut b);
        rejected(
            &sc,
            &format!("{name}.h4mk"),
            &b,
            DAMAGED,
            &[&format!(
                "block index entry 2: chunk at offset {offset} with {} stored bytes lies outside the block region [8, {seek})",
                l.blocks[2].1
            )],
        );
        // The bounds are checked even when the structure root is not.
        let err = Archive::from_source(Box::new(b.clone()), OpenCheck::None).expect_err(name);
        assert!(matches!(err, Error::Index { block: 2, .. }), "{err}");
    }
    // Layout C's seek tables hold file offsets of I-block payloads.
    let c = seed_c();
    let (tsek, _) = chunk_c(&c, "TSEK");
    for (name, off, want) in [
        ("c-past-end", u32::MAX - 255, "past the end of the file"),
        (
            "c-into-trak",
            20,
            "which is not the payload of a CORE chunk of track 1",
        ),
    ] {
        let mut b = c.clone();
        let e = tsek + 12 + 16 + 8 + 4; // entry 1's offset
        b[e..e + 4].copy_from_slice(&off.to_le_bytes());
        reseal_c(&mut b);
        rejected(
            &sc,
            &format!("{name}.h4mk"),
            &b,
            DAMAGED,
            &[&format!(
                "chunk TSEK at offset {tsek}: entry 1 (pts 333 ms) points at file offset {off}, {want}"
            )],
        );
    }
    // The footer's own offsets: the index placed past the end.
    let mut b = g.clone();
    let hftr = g.len() - 152;
    set_be64(&mut b, hftr + 12 + 32, g.len() as u64 * 2);
    fix_crc(&mut b, hftr);
    rejected(
        &sc,
        "footer-index.h4mk",
        &b,
        DAMAGED,
        &[
            "truncated: HIDX chunk header",
            &format!("at offset {}", g.len() * 2),
        ],
    );
}

#[test]
fn empty_container() {
    let sc = Scratch::new();
    rejected(
        &sc,
        "zero.h4mk",
        b"",
        OTHER,
        &["empty file: not an H4MK container (0 bytes)"],
    );
    rejected(
        &sc,
        "header-a.h4mk",
        &good()[..8],
        DAMAGED,
        &[
            "truncated: empty container (an H4MK header and no chunk): chunk header at offset 8 needs 12 bytes, but the file ends at 8",
        ],
    );
    let c = seed_c();
    rejected(
        &sc,
        "header-c.h4mk",
        &c[..16],
        DAMAGED,
        &["truncated: layout C file CRC at offset 16"],
    );
    let mut hc = c[..16].to_vec();
    hc.extend_from_slice(&crc32fast::hash(&hc).to_le_bytes());
    rejected(
        &sc,
        "header-c-crc.h4mk",
        &hc,
        DAMAGED,
        &["chunk TRAK at offset 16: not found"],
    );
    // A container with no blocks at all is valid and empty: everything works on it.
    let w = Writer::new(Vec::new(), Engine::Identity).expect("writer");
    let (empty, _) = w
        .finish(serde_json::Map::new(), &default_safe())
        .expect("finish");
    let f = sc.write("no-blocks.h4mk", &empty);
    expect(&["verify", "--full", s(&f)], 0, &["0 blocks"]);
    let r = expect(&["cat", s(&f)], 0, &[]);
    assert!(r.stdout.is_empty());
    expect(&["cat", "--block", "0", s(&f)], OTHER, &["no block 0"]);
}

#[test]
fn unknown_engine() {
    let sc = Scratch::new();
    let mut a = seed_a();
    let l = Layout::of(&a);
    let meta = l.at("META");
    replace_in_payload(
        &mut a,
        meta,
        b"\"geometric-reference\"",
        b"\"holographic-coder-9\"",
    );
    fix_crc(&mut a, meta);
    reseal_veri(&mut a, l.at("VERI"));
    let mut g = good();
    let gmeta = Layout::of(&g).at("META");
    replace_in_payload(
        &mut g,
        gmeta,
        b"\"engine\":\"identity\"",
        b"\"engine\":\"zstd-v99\"",
    );
    reseal(&mut g);
    for (name, bytes, engine, block0) in [
        (
            "seed",
            a.clone(),
            "holographic-coder-9",
            payload_a(&a, l.block(0)).to_vec(),
        ),
        ("h4fs", g, "zstd-v99", block_data(0)),
    ] {
        let f = sc.write(&format!("{name}.h4mk"), &bytes);
        let want = format!("compression engine \"{engine}\" is not known to h4fs");
        let a = open(&bytes).expect("opens: the engine matters only for decoding");
        let err = a.read_block(0, 0).expect_err("decoding must fail");
        assert!(
            matches!(&err, Error::UnknownEngine { engine: e } if e == engine),
            "{err}"
        );
        expect(&["inspect", s(&f)], 0, &[engine]);
        expect(&["verify", s(&f)], 0, &[]);
        expect(&["cat", "--block", "0", s(&f)], OTHER, &[&want]);
        let out = sc.out_dir(&format!("out-{name}"));
        expect(
            &["extract", s(&f), "-o", s(&out.join("x"))],
            OTHER,
            &[&want],
        );
        assert_empty(&out);
        // The stored bytes stay available, still checked.
        let r = expect(&["cat", "--raw", "--block", "0", s(&f)], 0, &[]);
        assert_eq!(r.stdout, block0);
    }
}

#[test]
fn missing_input_file() {
    let sc = Scratch::new();
    let missing = sc.path("nope.h4mk");
    let out = sc.out_dir("out");
    let dest = out.join("x.h4mk");
    expect(
        &["pack", s(&missing), "--block-size", "4K", "-o", s(&dest)],
        OTHER,
        &["does not exist", s(&missing)],
    );
    let input = sc.write("in.bin", &[7u8; 1000]);
    let csv = sc.path("nope.csv");
    expect(
        &["pack", s(&input), "--index", s(&csv), "-o", s(&dest)],
        OTHER,
        &["cannot read index", s(&csv)],
    );
    assert_empty(&out);
    every_reader_fails(
        &sc,
        &missing,
        OTHER,
        &["cannot open", s(&missing), "No such file or directory"],
    );
    // A directory where a container file is expected.
    let dir = sc.out_dir("a-dir.h4mk");
    every_reader_fails(
        &sc,
        &dir,
        OTHER,
        &[&format!("{} is a directory, not a container file", s(&dir))],
    );
    let err = Archive::open(&missing).expect_err("missing file");
    assert!(
        matches!(&err, Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
}

/// A directory nothing can be created in, even by root: immutable while it lives.
struct ReadOnlyDir {
    path: PathBuf,
    immutable: bool,
}

impl ReadOnlyDir {
    fn new(path: PathBuf) -> ReadOnlyDir {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        let immutable = Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .output()
            .is_ok_and(|o| o.status.success());
        ReadOnlyDir { path, immutable }
    }

    /// Whether creating a file inside fails (the chmod suffices for other users; root
    /// needs the immutable flag, which some filesystems lack).
    fn effective(&self) -> bool {
        std::fs::write(self.path.join("probe"), b"").is_err()
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.path).output();
        }
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn unwritable_destination() {
    let sc = Scratch::new();
    let input = sc.write("in.bin", &[5u8; 3000]);
    let good = sc.write("good.h4mk", &good());
    // Under a regular file: fails for everyone, root included.
    let under_file = "/dev/null/x.h4mk";
    expect(
        &["pack", s(&input), "--block-size", "1K", "-o", under_file],
        OTHER,
        &[
            "cannot create a temporary file in /dev/null",
            "Not a directory",
        ],
    );
    expect(
        &["extract", s(&good), "-o", under_file],
        OTHER,
        &["cannot create a temporary file in /dev/null"],
    );
    // A read-only directory: fails, and nothing appears in it.
    let ro = ReadOnlyDir::new(sc.path("ro"));
    if ro.effective() {
        let dest = ro.path.join("out.h4mk");
        expect(
            &["pack", s(&input), "--block-size", "1K", "-o", s(&dest)],
            OTHER,
            &["cannot create a temporary file in", s(&ro.path)],
        );
        expect(
            &["extract", s(&good), "-o", s(&dest)],
            OTHER,
            &["cannot create a temporary file in", s(&ro.path)],
        );
        assert_empty(&ro.path);
    } else {
        eprintln!(
            "note: cannot make a directory read-only for this user here; tested /dev/null only"
        );
    }
    // The destination is a directory.
    let dir = sc.out_dir("a-dir");
    expect(
        &["pack", s(&input), "--block-size", "1K", "-o", s(&dir)],
        OTHER,
        &["is a directory"],
    );
    assert_empty(&dir);
}

#[test]
fn bad_arguments() {
    let sc = Scratch::new();
    let f = sc.write("good.h4mk", &good());
    let f = s(&f);
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["inspect"],
        vec!["inspect", f, "--no-such-flag"],
        vec!["seek", f],
        vec!["seek", f, "soon"],
        vec!["seek", f, "-5"],
        vec!["cat", f, "--block", "two"],
        vec!["cat", f, "--raw"],
        vec!["cat", f, "--block", "1", "--range", "0-9"],
        vec!["pack", f],
        vec!["pack", f, "-o", "x.h4mk", "--block-size", "12 parsecs"],
        vec!["pack", f, "-o", "x.h4mk", "--engine", "zip"],
        vec!["extract", f],
        vec!["verify", f, "--full=maybe"],
    ] {
        let r = expect(&args, USAGE, &["--help"]);
        assert!(
            r.stdout.is_empty(),
            "h4fs {args:?} printed to stdout: {}",
            r.text
        );
    }
    assert!(!Path::new("x.h4mk").exists());
    // Values that parse but make no sense are usage errors of another kind.
    let input = sc.write("in.bin", &[1u8; 100]);
    let out = sc.out_dir("out");
    let dest = out.join("x.h4mk");
    for (extra, want) in [
        (vec!["--block-size", "0"], "block size must be"),
        (
            vec!["--block-size", "1K", "--gop", "0"],
            "--gop must be at least 1",
        ),
        (
            vec!["--block-size", "1K", "--fps=-3"],
            "fps must be a positive number",
        ),
        (
            vec!["--block-size", "1K", "--meta", "novalue"],
            "must be KEY=VALUE",
        ),
    ] {
        let mut args = vec!["pack", s(&input), "-o", s(&dest)];
        args.extend(extra);
        expect(&args, OTHER, &[want]);
    }
    assert_empty(&out);
    expect(
        &["cat", f, "--range", "9-3"],
        OTHER,
        &["--range end 3 is before its start 9"],
    );
    expect(
        &["cat", f, "--block", "6"],
        OTHER,
        &["no block 6: the track has 6 blocks (0..5)"],
    );
    expect(&["cat", f, "--track", "4"], OTHER, &["no track 4"]);
}

#[test]
fn structure_root_mismatch() {
    let sc = Scratch::new();
    let g = good();
    let l = Layout::of(&g);
    let hftr = g.len() - 152;
    let want = format!("structure root mismatch: footer at offset {hftr} records");
    // META edited (its CRC made to match): only the root can tell.
    let mut b = g.clone();
    let meta = l.at("META");
    replace_in_payload(&mut b, meta, b"bad-input", b"bad-inpuT");
    fix_crc(&mut b, meta);
    let err = rejected(&sc, "meta.h4mk", &b, DAMAGED, &[&want]);
    assert!(matches!(err, Error::RootMismatch { offset, .. } if offset == hftr as u64));
    // The index edited: a block's recorded pts.
    let mut b = g.clone();
    set_be64(&mut b, l.at("HIDX") + 12 + 16 + 72 + 24, 40_001);
    rejected(&sc, "index.h4mk", &b, DAMAGED, &[&want]);

    // A block edited: verify names it and its chunk, the other blocks still read.
    let mut b = g.clone();
    let (at, len) = l.blocks[3];
    b[at as usize + 12 + len as usize / 2] ^= 0x08;
    let f = sc.write("block.h4mk", &b);
    let bad = format!("block 3 (chunk at offset {at}): SHA-256 mismatch");
    expect(&["inspect", s(&f)], 0, &[]);
    expect(
        &["verify", s(&f)],
        DAMAGED,
        &[&format!("BAD {bad}"), "1 problem(s) in 6 blocks checked"],
    );
    expect(&["cat", "--block", "3", s(&f)], DAMAGED, &[&bad]);
    for n in [0u64, 2, 4, 5] {
        let r = expect(&["cat", "--block", &n.to_string(), s(&f)], 0, &[]);
        assert_eq!(r.stdout, block_data(n), "block {n}");
    }
    let out = sc.out_dir("out");
    expect(
        &["extract", s(&f), "-o", s(&out.join("x"))],
        DAMAGED,
        &[&bad],
    );
    assert_empty(&out);
    let a = open(&b).expect("opens");
    let err = a.read_block(0, 3).expect_err("bad block");
    assert!(
        matches!(err, Error::BlockHash { block: 3, offset, .. } if offset == at),
        "{err}"
    );
}

/// Every cut and every single-byte change of the samples and of a small h4fs container
/// (both engines): opening, reading every block, seeking and verifying never panic, and
/// whatever opens still keeps every block inside the file.
#[test]
fn every_truncation_and_byte_flip_is_handled() {
    let files = [
        seed_a(),
        seed_c(),
        fixture("e_encrypted5.h4mk"),
        good(),
        h4fs_container(Engine::GeometricReference),
    ];
    let mut opened = 0;
    let mut refused = 0;
    for f in &files {
        let mut variants: Vec<Vec<u8>> = (0..f.len()).map(|n| f[..n].to_vec()).collect();
        for i in 0..f.len() {
            let mut b = f.clone();
            b[i] ^= 0xa5;
            variants.push(b);
        }
        for b in variants {
            for check in [OpenCheck::Structure, OpenCheck::None] {
                match Archive::from_source(Box::new(b.clone()), check) {
                    Err(e) => {
                        refused += 1;
                        assert!(!e.to_string().is_empty());
                    }
                    Ok(a) => {
                        opened += 1;
                        exercise(&a);
                    }
                }
            }
        }
    }
    assert!(
        opened > 0 && refused > opened,
        "opened {opened}, refused {refused}"
    );
}

fn exercise(a: &Archive) {
    for (ti, t) in a.tracks.iter().enumerate() {
        for n in 0..t.blocks.len() {
            let e = t.blocks.get(n).expect("n < len");
            assert!(e.data_offset + e.stored_len <= a.file_len);
            let _ = a.read_block(ti, n);
        }
        let _ = t.keyframe_at_or_before(u64::MAX);
        let _ = t.decode_chain(100_000);
        let _ = t.segments(0, u64::MAX).count();
    }
    // Verification on its threads only when there is something to verify.
    if a.block_count() > 0 && a.block_count() < 16 {
        let _ = a.check_veri(&|_| {});
    }
}

/// `pack --index` with a row at the largest pts and a duration: the duration is clipped,
/// not overflowed (it used to panic with an arithmetic overflow in debug builds), and
/// seeking and reading at that pts work.
#[test]
fn index_csv_at_the_pts_limit() {
    let sc = Scratch::new();
    let input = sc.write("in.bin", &[3u8; 100]);
    let csv = sc.write(
        "in.csv",
        format!(
            "offset,size,pts_us,keyframe,duration_us\n0,50,0,1,5\n50,50,{},1,5\n",
            u64::MAX
        )
        .as_bytes(),
    );
    let out = sc.path("x.h4mk");
    expect(
        &["pack", s(&input), "--index", s(&csv), "-q", "-o", s(&out)],
        0,
        &[],
    );
    let a = Archive::open(&out).expect("opens");
    assert_eq!(
        a.meta.as_ref().unwrap().value["duration_us"],
        serde_json::json!(u64::MAX)
    );
    expect(&["verify", s(&out)], 0, &[]);
    expect(&["inspect", s(&out)], 0, &[]);
    let max = u64::MAX.to_string();
    expect(&["seek", s(&out), &max], 0, &["containing block 1"]);
    let r = expect(&["cat", "--pts", &max, s(&out)], 0, &[]);
    assert_eq!(r.stdout, [3u8; 50]);
}

// ---------------------------------------------------------------------------------------
// The v2 layout: the HB3T outboard and the hash groups (docs/FORMAT.md §10).

/// A v2 container with 1 KiB hash groups: 6 blocks of 900..1150 bytes, 7 groups.
fn v2_container() -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), Engine::Identity).expect("writer");
    w.set_format(h4fs::writer::Format::V2 { group_log: 10 })
        .expect("v2");
    for i in 0..6u64 {
        let data: Vec<u8> = (0..900 + 50 * i).map(|k| (k * 7 + i * 13) as u8).collect();
        let meta = BlockMeta {
            pts_us: i * 40_000,
            keyframe: i % 2 == 0,
        };
        w.add_block(&data, meta).expect("add block");
    }
    w.finish(serde_json::Map::new(), &default_safe())
        .expect("finish")
        .0
}

/// The HB3T chunk's offset and payload.
fn hb3t(b: &[u8]) -> (usize, Vec<u8>) {
    let at = Layout::of(b).at("HB3T");
    (at, payload_a(b, at).to_vec())
}

/// Replace the HB3T payload (any length), then make every guard agree again: the chunk's
/// CRC, the footer's index offset, the structure root, the footer CRC and VERI. What is
/// left is exactly what the outboard checks must see.
fn with_outboard(b: &[u8], payload: &[u8]) -> Vec<u8> {
    let (at, old) = hb3t(b);
    let mut v = b[..at].to_vec();
    v.extend_from_slice(b"HB3T");
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    v.extend_from_slice(payload);
    v.extend_from_slice(&b[at + 12 + old.len()..]);
    let tail = v.len() - hf::TAIL_LEN as usize;
    let mut f = Footer::parse(&v[tail + 12..tail + 12 + hf::FOOTER_PAYLOAD_LEN], 0).unwrap();
    f.index_offset = (f.index_offset as i64 + payload.len() as i64 - old.len() as i64) as u64;
    let p = |o: u64| payload_a(&v, o as usize).to_vec();
    let mut head = [0u8; 56];
    let n = payload.len().min(56);
    head[..n].copy_from_slice(&payload[..n]);
    f.root = integrity::root_hash_v2(
        &f.prefix(),
        &p(f.seek_offset),
        &p(f.meta_offset),
        &p(f.safe_offset),
        &[],
        &head,
        &integrity::index_digest(&p(f.index_offset)),
    );
    v[tail + 12..tail + 12 + hf::FOOTER_PAYLOAD_LEN].copy_from_slice(&f.encode());
    fix_crc(&mut v, tail);
    let veri_at = v.len() - 44;
    reseal_veri(&mut v, veri_at);
    v
}

#[test]
fn v2_resealed_unchanged_outboard_still_opens() {
    // The helper itself changes nothing when the payload is the same.
    let g = v2_container();
    let (_, ob) = hb3t(&g);
    assert_eq!(with_outboard(&g, &ob), g);
    assert!(open(&g).unwrap().tree().is_some());
}

#[test]
fn v2_outboard_truncated_too_long_or_lying_about_its_size() {
    let sc = Scratch::new();
    let g = v2_container();
    let (at, ob) = hb3t(&g);
    let payload_at = (at + 12).to_string();
    // 7 groups, 6 nodes: 56 + 384 bytes.
    assert_eq!(ob.len(), 56 + 6 * 64);
    let cut = with_outboard(&g, &ob[..ob.len() - 64]);
    rejected(
        &sc,
        "cut",
        &cut,
        DAMAGED,
        &["HB3T", &payload_at, "truncated by 64 bytes"],
    );
    let mut long = ob.clone();
    long.extend_from_slice(&[0; 64]);
    let long = with_outboard(&g, &long);
    rejected(
        &sc,
        "long",
        &long,
        DAMAGED,
        &["HB3T", "too long by 64 bytes"],
    );
    let mut lying = ob.clone();
    set_be64(&mut lying, 16, 7);
    lying.extend_from_slice(&[0; 64]);
    let lying = with_outboard(&g, &lying);
    rejected(
        &sc,
        "lying",
        &lying,
        DAMAGED,
        &["HB3T", "claims 7 tree nodes", "have 6"],
    );
}

#[test]
fn v2_tree_covering_fewer_bytes_than_the_index() {
    let sc = Scratch::new();
    let g = v2_container();
    let (_, ob) = hb3t(&g);
    // One group fewer: the first 6 KiB, with a tree of 6 groups (5 nodes).
    let mut fewer = ob[..56 + 5 * 64].to_vec();
    set_be64(&mut fewer, 8, 6 * 1024);
    set_be64(&mut fewer, 16, 5);
    let b = with_outboard(&g, &fewer);
    rejected(
        &sc,
        "fewer",
        &b,
        DAMAGED,
        &["HB3T", "covers 6144 stream bytes", "describes 6150"],
    );
}

#[test]
fn v2_root_or_node_that_does_not_match() {
    let sc = Scratch::new();
    let g = v2_container();
    let (_, ob) = hb3t(&g);
    let mut root = ob.clone();
    root[30] ^= 1;
    let b = with_outboard(&g, &root);
    rejected(
        &sc,
        "root",
        &b,
        DAMAGED,
        &["HB3T", "damaged hash tree", "hash groups 0..7"],
    );
    // A flipped group chaining value in the last node (groups 4 and 5): the groups below it.
    let mut node = ob.clone();
    let last = node.len() - 64;
    node[last + 3] ^= 1;
    let b = with_outboard(&g, &node);
    rejected(
        &sc,
        "node",
        &b,
        DAMAGED,
        &["HB3T", "damaged hash tree", "hash groups 4..6"],
    );
    // The chunk's own CRC is checked at open, before the tree.
    let (at, _) = hb3t(&g);
    let mut b = g.clone();
    b[at + 12 + 100] ^= 1;
    rejected(&sc, "crc", &b, DAMAGED, &["HB3T", &at.to_string(), "CRC"]);
}

#[test]
fn v2_a_flipped_stored_byte_fails_exactly_its_group() {
    let g = v2_container();
    let l = Layout::of(&g);
    // Blocks span stream bytes 0..900, ..1850, ..2850, ..3900, ..5000, ..6150. Stream
    // byte 2100 is in group 2 (2048..3072), which blocks 2 and 3 share: exactly those fail.
    let mut b = g.clone();
    b[l.block(2) + 12 + (2100 - 1850)] ^= 1;
    let a = open(&b).expect("stored bytes are not checked at open");
    for n in 0..6u64 {
        let r = a.read_block(0, n);
        if n == 2 || n == 3 {
            let e = r.expect_err("the damaged group").to_string();
            assert!(
                e.contains(&format!("block {n} ")) && e.contains("hash group 2 "),
                "{e}"
            );
        } else {
            assert!(r.is_ok(), "block {n}: {:?}", r.err());
        }
    }
    let r = h4fs::verify::verify(&a, false, &|_| {});
    let bad: Vec<String> = r.failures.iter().map(|e| e.to_string()).collect();
    for n in [2, 3] {
        assert!(
            bad.iter()
                .any(|m| m.contains(&format!("block {n} ")) && m.contains("hash group 2 ")),
            "{bad:?}"
        );
    }
    assert!(
        bad.iter()
            .all(|m| m.contains("block 2 ") || m.contains("block 3 ")),
        "{bad:?}"
    );
    // Stream byte 1900 is in group 1 (1024..2048), shared by blocks 1 and 2.
    let mut b = g.clone();
    b[l.block(2) + 12 + (1900 - 1850)] ^= 1;
    let a = open(&b).unwrap();
    assert!(a.read_block(0, 1).is_err() && a.read_block(0, 2).is_err());
    assert!(a.read_block(0, 0).is_ok() && a.read_block(0, 3).is_ok());
    let sc = Scratch::new();
    let f = sc.write("flipped.h4mk", &b);
    expect(
        &["cat", "--block", "1", s(&f)],
        DAMAGED,
        &["block 1", "hash group 1 "],
    );
    expect(&["cat", "--block", "3", s(&f)], 0, &[]);
}

#[test]
fn v2_every_byte_flip_fails_open_or_plain_verify() {
    let f = v2_container();
    for i in 0..f.len() {
        for x in [0x01, 0xa5] {
            let mut b = f.clone();
            b[i] ^= x;
            if let Ok(a) = open(&b) {
                let r = h4fs::verify::verify(&a, false, &|_| {});
                assert!(!r.ok(), "v2: byte {i} ^ {x:#x} passes plain verify");
            }
        }
    }
}
