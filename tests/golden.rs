//! Golden files and byte-level checks of the format.
//!
//! * `tests/golden/*.h4mk` are small containers made by `h4fs pack`. Packing the same
//!   inputs today must give byte-identical files (`H4FS_REGEN_GOLDEN=1` rewrites them
//!   after an intended format change; review the diff and docs/FORMAT.md together).
//! * Every golden file is read by a minimal parser written here from SEED-FACTS alone,
//!   behaving like the reference's: walk the chunks, check each CRC, skip unknown tags,
//!   check VERI = SHA-256 of every chunk before it, decode CORE with the engine META
//!   names. This is the evidence that the reference reads h4fs containers.
//! * The worked example in docs/FORMAT.md (its hex dump and every annotated field) is
//!   compared with the golden file it describes, so the document cannot drift.
//! * The reference's sample files decode to their `.payload` files.
//! * Packing with one or two threads gives the same bytes.

mod common;

use common::{fix_crc, h4fs, pack, sha256};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden_dir() -> PathBuf {
    root().join("tests/golden")
}

fn seed(name: &str) -> PathBuf {
    root().join("tests/fixtures/seed").join(name)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it), written out bit by bit so the
/// check does not share code with the crate.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------------------
// A minimal reference parser (layout A), written from SEED-FACTS.

#[derive(Debug, Clone)]
struct RefChunk {
    tag: [u8; 4],
    offset: usize,
    payload: Vec<u8>,
}

#[derive(Debug)]
struct RefFile {
    chunks: Vec<RefChunk>,
    /// Whether VERI equals SHA-256 of every chunk before it (header excluded).
    veri_ok: bool,
    /// Tags the reference does not know, in file order.
    unknown: Vec<String>,
}

impl RefFile {
    fn all(&self, tag: &[u8; 4]) -> Vec<&RefChunk> {
        self.chunks.iter().filter(|c| &c.tag == tag).collect()
    }

    fn one(&self, tag: &[u8; 4]) -> &RefChunk {
        let v = self.all(tag);
        assert_eq!(
            v.len(),
            1,
            "exactly one {} chunk",
            String::from_utf8_lossy(tag)
        );
        v[0]
    }

    fn meta(&self) -> serde_json::Value {
        serde_json::from_slice(&self.one(b"META").payload).expect("META is JSON")
    }

    /// The decoded stream, with the engine META names (identity or the run-length
    /// "geometric-reference"); `None` for any other engine.
    fn decode(&self) -> Option<Vec<u8>> {
        let engine = self.meta()["compression"]["engine"]
            .as_str()
            .unwrap_or("identity")
            .to_string();
        let mut out = Vec::new();
        for c in self.all(b"CORE") {
            match engine.as_str() {
                "identity" => out.extend_from_slice(&c.payload),
                "geometric-reference" => {
                    assert!(c.payload.len() % 2 == 0, "run-length pairs");
                    for p in c.payload.chunks_exact(2) {
                        assert!(p[1] >= 1, "runs are 1..=255");
                        out.extend(std::iter::repeat_n(p[0], p[1] as usize));
                    }
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// SEEK as (pts_us, stream offset) pairs.
    fn seek(&self) -> Vec<(u64, u64)> {
        let p = &self.one(b"SEEK").payload;
        let n = be32(p, 0) as usize;
        assert_eq!(p.len(), 4 + 16 * n, "SEEK length matches its count");
        (0..n)
            .map(|i| (be64(p, 4 + 16 * i), be64(p, 12 + 16 * i)))
            .collect()
    }
}

/// Parse like the reference's reader: magic and version checked, chunks walked by length,
/// every CRC checked, unknown tags skipped, 1..=11 trailing bytes ignored.
fn ref_parse(b: &[u8]) -> Result<RefFile, String> {
    if b.len() < 8 || &b[..4] != b"H4MK" {
        return Err("bad magic".into());
    }
    if u16::from_be_bytes([b[4], b[5]]) != 1 {
        return Err("version != 1".into());
    }
    let known: [&[u8; 4]; 5] = [b"CORE", b"SEEK", b"META", b"SAFE", b"VERI"];
    let mut pos = 8;
    let mut chunks = Vec::new();
    let mut unknown = Vec::new();
    let mut veri_ok = false;
    while b.len() - pos >= 12 {
        let tag: [u8; 4] = b[pos..pos + 4].try_into().unwrap();
        let len = be32(b, pos + 4) as usize;
        let crc = be32(b, pos + 8);
        let end = pos + 12 + len;
        if end > b.len() {
            return Err(format!("chunk at {pos} runs past the end"));
        }
        let payload = &b[pos + 12..end];
        if crc32(payload) != crc {
            return Err(format!("CRC mismatch in chunk at {pos}"));
        }
        if &tag == b"VERI" {
            veri_ok = payload == sha256(&b[8..pos]);
        }
        if !known.contains(&&tag) {
            unknown.push(String::from_utf8_lossy(&tag).into_owned());
        }
        chunks.push(RefChunk {
            tag,
            offset: pos,
            payload: payload.to_vec(),
        });
        pos = end;
    }
    Ok(RefFile {
        chunks,
        veri_ok,
        unknown,
    })
}

// ---------------------------------------------------------------------------------------
// Golden cases: inputs generated here, packed by the real binary.

struct Case {
    file: &'static str,
    /// Writes the inputs into the directory; returns the input file name.
    setup: fn(&Path) -> &'static str,
    args: &'static [&'static str],
}

const CASES: &[Case] = &[
    // The worked example of docs/FORMAT.md.
    Case {
        file: "identity-3blocks.h4mk",
        setup: |d| {
            std::fs::write(d.join("in.bin"), b"abcdefghij").unwrap();
            "in.bin"
        },
        args: &[
            "--format",
            "v1",
            "--block-size",
            "4",
            "--fps",
            "2",
            "--gop",
            "2",
        ],
    },
    // The reference's own sample stream, with the reference's export parameters.
    Case {
        file: "georef-small10.h4mk",
        setup: |d| {
            std::fs::copy(seed("a_small10.payload"), d.join("a_small10.payload")).unwrap();
            "a_small10.payload"
        },
        args: &[
            "--format",
            "v1",
            "--block-size",
            "256",
            "--fps",
            "30",
            "--gop",
            "5",
            "--engine",
            "geometric-reference",
        ],
    },
    // Index CSV: uneven blocks, an empty block, non-keyframes, user META keys, created.
    Case {
        file: "indexed-meta.h4mk",
        setup: |d| {
            std::fs::write(d.join("clip.bin"), b"KEYFRAME-0 p1 p2 KEY3 x").unwrap();
            std::fs::write(
                d.join("clip.csv"),
                "offset,size,pts_us,keyframe,duration_us\n\
                 0,10,0,1,40000\n10,3,40000,0,40000\n13,0,80000,0,0\n\
                 13,4,80000,0,40000\n17,5,120000,1,40000\n22,1,160000,0,40000\n",
            )
            .unwrap();
            "clip.bin"
        },
        args: &[
            "--format",
            "v1",
            "--index",
            "{dir}/clip.csv",
            "--project",
            "golden",
            "--meta",
            "camera=cam-2",
            "--meta",
            "take=3",
            "--created",
            "2026-01-01T00:00:00Z",
        ],
    },
];

/// Pack `case` in a fresh directory with extra CLI arguments; returns (bytes, input).
fn pack_case(case: &Case, extra: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let input = (case.setup)(dir.path());
    let out = dir.path().join("out.h4mk");
    let dir_s = dir.path().to_str().unwrap();
    let args: Vec<String> = case
        .args
        .iter()
        .map(|a| a.replace("{dir}", dir_s))
        .collect();
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect();
    pack(&dir.path().join(input), &out, &args);
    let input = std::fs::read(dir.path().join(input)).unwrap();
    (std::fs::read(&out).unwrap(), input)
}

fn golden(name: &str) -> Vec<u8> {
    let p = golden_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with H4FS_REGEN_GOLDEN=1 to create it",
            p.display()
        )
    })
}

#[test]
fn packing_today_reproduces_the_golden_files() {
    let regen = std::env::var_os("H4FS_REGEN_GOLDEN").is_some_and(|v| v == "1");
    for case in CASES {
        let (bytes, _) = pack_case(case, &[]);
        let path = golden_dir().join(case.file);
        if regen {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let want = golden(case.file);
        if bytes != want {
            let at = bytes
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(bytes.len().min(want.len()));
            panic!(
                "{}: packing today gives {} bytes, the golden file has {}; first difference at \
                 offset {at}. If the format changed on purpose, regenerate with \
                 H4FS_REGEN_GOLDEN=1 and update docs/FORMAT.md",
                case.file,
                bytes.len(),
                want.len()
            );
        }
    }
}

#[test]
fn the_reference_parser_reads_every_golden_file() {
    for case in CASES {
        let b = golden(case.file);
        let (_, input) = pack_case(case, &[]);
        let f = ref_parse(&b).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        assert!(
            f.veri_ok,
            "{}: VERI is SHA-256 of the chunks before it",
            case.file
        );
        assert_eq!(
            f.unknown,
            ["HIDX", "HFTR"],
            "{}: extension chunks",
            case.file
        );
        let tags: Vec<&[u8]> = f.chunks.iter().map(|c| &c.tag[..]).collect();
        let n = tags.iter().filter(|t| *t == b"CORE").count();
        assert!(tags[..n].iter().all(|t| *t == b"CORE"), "CORE chunks first");
        assert_eq!(
            &tags[n..],
            [&b"SEEK"[..], b"META", b"SAFE", b"HIDX", b"HFTR", b"VERI"],
            "{}: chunk order",
            case.file
        );
        let last = f.chunks.last().unwrap();
        assert_eq!(last.offset + 12 + 32, b.len(), "VERI ends the file");
        assert_eq!(
            f.decode().as_deref(),
            Some(&input[..]),
            "{}: decoded",
            case.file
        );
        // SEEK: sorted; each entry's offset is the stream offset of a block start.
        let seek = f.seek();
        assert!(seek.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(seek.first().map(|e| e.1), Some(0));
        let meta = f.meta();
        assert_eq!(meta["source"]["size"], input.len());
        assert_eq!(meta["source"]["sha256"], hex::encode(sha256(&input)));
        assert_eq!(meta["block_count"], n);
        let safe: serde_json::Value = serde_json::from_slice(&f.one(b"SAFE").payload).unwrap();
        assert_eq!(safe["scope"], "container+transport-only");
    }
}

#[test]
fn a_damaged_golden_file_is_refused_by_the_reference_parser() {
    // The independent parser is not a rubber stamp: one flipped bit in the index is a
    // CRC failure, and one in VERI's own payload is a CRC failure too.
    let b = golden("identity-3blocks.h4mk");
    for at in [20, 800, b.len() - 1] {
        let mut d = b.clone();
        d[at] ^= 0x10;
        assert!(ref_parse(&d).is_err(), "flip at {at} detected");
    }
    let mut d = b.clone();
    d[4..6].copy_from_slice(&2u16.to_be_bytes());
    assert!(ref_parse(&d).is_err());
}

#[test]
fn geometric_reference_blocks_match_the_reference_byte_for_byte() {
    // Same stream, same export parameters: the CORE chunks and SEEK that h4fs writes are
    // the very bytes the reference wrote (META differs: h4fs records more).
    let ours = ref_parse(&golden("georef-small10.h4mk")).unwrap();
    let theirs = ref_parse(&std::fs::read(seed("a_small10.h4mk")).unwrap()).unwrap();
    for tag in [b"CORE", b"SEEK"] {
        let a: Vec<_> = ours
            .all(tag)
            .iter()
            .map(|c| (c.offset, &c.payload))
            .collect();
        let b: Vec<_> = theirs
            .all(tag)
            .iter()
            .map(|c| (c.offset, &c.payload))
            .collect();
        assert_eq!(a, b, "{}", String::from_utf8_lossy(tag));
    }
    assert_eq!(theirs.unknown, Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// The h4fs extension, recomputed independently.

/// Everything the tail and index say, parsed at the documented offsets.
struct Tail {
    footer_at: usize,
    veri_at: usize,
    seek_offset: usize,
    meta_offset: usize,
    safe_offset: usize,
    index_offset: usize,
    henc_offset: usize,
    block_count: u64,
    stream_len: u64,
    root: [u8; 32],
}

fn parse_tail(b: &[u8]) -> Tail {
    let footer_at = b.len() - 152;
    let veri_at = b.len() - 44;
    assert_eq!(&b[footer_at..footer_at + 4], b"HFTR");
    assert_eq!(be32(b, footer_at + 4), 96);
    assert_eq!(be32(b, footer_at + 8), crc32(&b[footer_at + 12..veri_at]));
    assert_eq!(&b[veri_at..veri_at + 4], b"VERI");
    assert_eq!(be32(b, veri_at + 4), 32);
    let f = &b[footer_at + 12..veri_at];
    assert_eq!(be32(f, 0), 1, "footer version");
    assert_eq!(be32(f, 4), 0, "footer flags: not encrypted");
    Tail {
        footer_at,
        veri_at,
        seek_offset: be64(f, 8) as usize,
        meta_offset: be64(f, 16) as usize,
        safe_offset: be64(f, 24) as usize,
        index_offset: be64(f, 32) as usize,
        henc_offset: be64(f, 40) as usize,
        block_count: be64(f, 48),
        stream_len: be64(f, 56),
        root: f[64..96].try_into().unwrap(),
    }
}

fn payload_at(b: &[u8], at: usize, tag: &[u8; 4]) -> Vec<u8> {
    assert_eq!(&b[at..at + 4], tag, "chunk tag at {at}");
    let len = be32(b, at + 4) as usize;
    b[at + 12..at + 12 + len].to_vec()
}

/// The structure root as docs/FORMAT.md defines it.
fn documented_root(b: &[u8], t: &Tail) -> [u8; 32] {
    let index = payload_at(b, t.index_offset, b"HIDX");
    let (head, entries) = index.split_at(16);
    let mut d = Sha256::new();
    d.update(b"h4fs-index-v1\0");
    d.update(head);
    for page in entries.chunks(1024 * 72) {
        d.update(sha256(page));
    }
    let index_digest: [u8; 32] = d.finalize().into();
    let henc = if t.henc_offset == 0 {
        Vec::new()
    } else {
        payload_at(b, t.henc_offset, b"HENC")
    };
    let mut r = Sha256::new();
    r.update(b"h4fs-root-v1\0");
    r.update(&b[t.footer_at + 12..t.footer_at + 12 + 64]);
    r.update(sha256(&payload_at(b, t.seek_offset, b"SEEK")));
    r.update(sha256(&payload_at(b, t.meta_offset, b"META")));
    r.update(sha256(&payload_at(b, t.safe_offset, b"SAFE")));
    r.update(sha256(&henc));
    r.update(index_digest);
    r.finalize().into()
}

#[test]
fn footer_index_and_root_are_as_documented() {
    for case in CASES {
        let b = golden(case.file);
        let (_, input) = pack_case(case, &[]);
        let t = parse_tail(&b);
        assert_eq!(t.veri_at, t.footer_at + 108);
        assert_eq!(t.henc_offset, 0);
        assert_eq!(t.stream_len, input.len() as u64);
        assert_eq!(documented_root(&b, &t), t.root, "{}: root", case.file);
        // Chunk order: SEEK, META, SAFE, HIDX adjacent, HFTR right after the index.
        let next = |at: usize| at + 12 + be32(&b, at + 4) as usize;
        assert_eq!(next(t.seek_offset), t.meta_offset);
        assert_eq!(next(t.meta_offset), t.safe_offset);
        assert_eq!(next(t.safe_offset), t.index_offset);
        assert_eq!(next(t.index_offset), t.footer_at);
        // Index header and entries.
        let idx = payload_at(&b, t.index_offset, b"HIDX");
        assert_eq!(be32(&idx, 0), 1, "index version");
        assert_eq!(be32(&idx, 4), 72, "entry length");
        assert_eq!(be64(&idx, 8), t.block_count);
        assert_eq!(idx.len(), 16 + 72 * t.block_count as usize);
        let mut stream = 0u64;
        let mut chunk = 8usize;
        for i in 0..t.block_count as usize {
            let e = &idx[16 + 72 * i..16 + 72 * (i + 1)];
            assert_eq!(be64(e, 0) as usize, chunk, "block {i} chunk_offset");
            let stored = payload_at(&b, chunk, b"CORE");
            assert_eq!(be32(e, 8) as usize, stored.len(), "stored_len");
            assert_eq!(be64(e, 16), stream, "stream_offset");
            assert_eq!(be32(e, 32), 0, "track");
            assert!(be32(e, 36) <= 1, "flags: keyframe bit only");
            assert_eq!(&e[40..72], sha256(&stored), "block {i} sha256");
            stream += be32(e, 12) as u64;
            chunk += 12 + stored.len();
        }
        assert_eq!(chunk, t.seek_offset, "CORE chunks end where SEEK starts");
        assert_eq!(stream, t.stream_len);
    }
}

#[test]
fn the_library_opens_golden_files_and_recovers_the_input() {
    for case in CASES {
        let path = golden_dir().join(case.file);
        let (_, input) = pack_case(case, &[]);
        let a = h4fs::Archive::open(&path).unwrap();
        assert!(a.root_checked);
        let mut out = Vec::new();
        h4fs::extract::write_stream(&a, 0, 0, u64::MAX, &mut out, &|_| {}).unwrap();
        assert_eq!(out, input, "{}", case.file);
        assert!(h4fs::verify::verify(&a, true, &|_| {}).ok());
    }
}

#[test]
fn indexed_golden_records_the_csv_timing() {
    let b = golden("indexed-meta.h4mk");
    let f = ref_parse(&b).unwrap();
    let t = parse_tail(&b);
    let idx = payload_at(&b, t.index_offset, b"HIDX");
    let rows: Vec<(u64, u32, u32)> = (0..t.block_count as usize)
        .map(|i| {
            let e = &idx[16 + 72 * i..];
            (be64(e, 24), be32(e, 36), be32(e, 12))
        })
        .collect();
    assert_eq!(
        rows,
        [
            (0, 1, 10),
            (40000, 0, 3),
            (80000, 0, 0),
            (80000, 0, 4),
            (120000, 1, 5),
            (160000, 0, 1)
        ]
    );
    assert_eq!(f.seek(), [(0, 0), (120000, 17)]);
    let meta = f.meta();
    let keys: Vec<&str> = meta
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "project",
            "domain",
            "masked",
            "source",
            "block_count",
            "duration_us",
            "created",
            "h4fs",
            "camera",
            "take",
            "compression"
        ]
    );
    assert_eq!(meta["duration_us"], 200000);
    assert_eq!(meta["take"], 3);
    assert_eq!(meta["camera"], "cam-2");
}

// ---------------------------------------------------------------------------------------
// The worked example of docs/FORMAT.md against its golden file.

const EXAMPLE: &str = "identity-3blocks.h4mk";

/// The section of FORMAT.md between the worked-example markers.
fn example_section() -> String {
    let doc = std::fs::read_to_string(root().join("docs/FORMAT.md")).unwrap();
    let start = doc
        .find("<!-- worked-example: begin -->")
        .expect("FORMAT.md has the worked-example begin marker");
    let end = doc
        .find("<!-- worked-example: end -->")
        .expect("FORMAT.md has the worked-example end marker");
    doc[start..end].to_string()
}

#[test]
fn format_md_hex_dump_is_the_golden_file() {
    let section = example_section();
    let mut dumped = Vec::new();
    for line in section.lines() {
        let is_dump = line.len() > 10
            && line.as_bytes()[8] == b':'
            && line[..8].bytes().all(|c| c.is_ascii_hexdigit());
        if !is_dump {
            continue;
        }
        let at = usize::from_str_radix(&line[..8], 16).unwrap();
        assert_eq!(at, dumped.len(), "dump line offsets are contiguous");
        let hex_part = &line[10..line.len().min(58)];
        for tok in hex_part.split_whitespace() {
            dumped.push(u8::from_str_radix(tok, 16).expect("hex byte"));
        }
    }
    assert_eq!(dumped, golden(EXAMPLE), "the dump in docs/FORMAT.md");
}

/// Parse "48 34 4d 4b" or "7b 22 70 …" (a prefix); `…` marks an elided rest.
fn parse_hex_cell(cell: &str) -> Option<(Vec<u8>, bool)> {
    let cell = cell.trim().trim_matches('`');
    let elided = cell.ends_with('…');
    let body = cell.trim_end_matches('…').trim();
    let mut v = Vec::new();
    for tok in body.split_whitespace() {
        if tok.len() != 2 {
            return None;
        }
        v.push(u8::from_str_radix(tok, 16).ok()?);
    }
    (!v.is_empty()).then_some((v, elided))
}

#[test]
fn format_md_annotations_match_the_golden_file() {
    // Table rows `| 0x0000 | 4 | 48 34 4d 4b | ... |`: offset, length, bytes.
    let b = golden(EXAMPLE);
    let mut checked = 0;
    for line in example_section().lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("0x") {
            continue;
        }
        let at = usize::from_str_radix(&cells[1][2..], 16)
            .unwrap_or_else(|_| panic!("offset cell in {line:?}"));
        let len: usize = cells[2]
            .parse()
            .unwrap_or_else(|_| panic!("length cell in {line:?}"));
        let (bytes, elided) =
            parse_hex_cell(cells[3]).unwrap_or_else(|| panic!("hex cell in {line:?}"));
        assert!(at + len <= b.len(), "{line:?} lies inside the file");
        let field = &b[at..at + len];
        if elided {
            assert!(bytes.len() < len, "{line:?}");
            assert_eq!(&field[..bytes.len()], &bytes[..], "{line:?}");
        } else {
            assert_eq!(bytes.len(), len, "{line:?}: length cell");
            assert_eq!(field, &bytes[..], "{line:?}");
        }
        // The value column, where it states a number, a hash or a short string.
        let value = cells[5];
        if let Ok(n) = value.parse::<u64>() {
            let mut be = [0u8; 8];
            be[8 - len..].copy_from_slice(field);
            assert_eq!(u64::from_be_bytes(be), n, "{line:?}: value");
        } else if value.len() == 64 && value.bytes().all(|c| c.is_ascii_hexdigit()) {
            assert_eq!(hex::encode(field), value, "{line:?}: value");
        } else if let Some(text) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            assert_eq!(field, text.as_bytes(), "{line:?}: value");
        } else if let Some(crc) = value.rsplit("0x").next().filter(|_| value.contains("0x")) {
            assert_eq!(format!("{:08x}", be32(field, 0)), crc, "{line:?}: value");
        }
        checked += 1;
    }
    assert!(checked >= 60, "only {checked} annotated fields found");
}

#[test]
fn format_md_root_steps_are_the_golden_values() {
    let b = golden(EXAMPLE);
    let t = parse_tail(&b);
    let section = example_section();
    let idx = payload_at(&b, t.index_offset, b"HIDX");
    let page0 = sha256(&idx[16..]);
    let mut d = Sha256::new();
    d.update(b"h4fs-index-v1\0");
    d.update(&idx[..16]);
    d.update(page0);
    let index_digest: [u8; 32] = d.finalize().into();
    let values = [
        sha256(&payload_at(&b, t.seek_offset, b"SEEK")),
        sha256(&payload_at(&b, t.meta_offset, b"META")),
        sha256(&payload_at(&b, t.safe_offset, b"SAFE")),
        sha256(b""),
        page0,
        index_digest,
        documented_root(&b, &t),
        sha256(&b[8..t.veri_at]),
    ];
    for v in values {
        assert!(
            section.contains(&format!("| {} |", hex::encode(v))),
            "FORMAT.md's worked example shows {}",
            hex::encode(v)
        );
    }
    let meta = payload_at(&b, t.meta_offset, b"META");
    assert!(
        section.contains(std::str::from_utf8(&meta).unwrap()),
        "META shown verbatim"
    );
}

// ---------------------------------------------------------------------------------------
// The reference's sample files.

#[test]
fn reference_layout_a_sample_decodes_to_its_payload() {
    let want = std::fs::read(seed("a_small10.payload")).unwrap();
    let raw = std::fs::read(seed("a_small10.h4mk")).unwrap();
    let f = ref_parse(&raw).unwrap();
    assert!(f.veri_ok, "VERI as SEED-FACTS defines it");
    assert_eq!(f.decode().unwrap(), want, "independent decoder");
    let a = h4fs::Archive::open(&seed("a_small10.h4mk")).unwrap();
    let mut out = Vec::new();
    h4fs::extract::write_stream(&a, 0, 0, u64::MAX, &mut out, &|_| {}).unwrap();
    assert_eq!(out, want, "h4fs");
    a.check_veri(&|_| {}).unwrap();
    assert_eq!(f.seek(), [(0, 0), (166_665, 1280)]);
}

#[test]
fn reference_encrypted_sample_decodes_to_its_payload_only_with_its_secret() {
    let raw = std::fs::read(seed("e_encrypted5.h4mk")).unwrap();
    let f = ref_parse(&raw).unwrap();
    assert!(f.veri_ok);
    assert_eq!(f.all(b"CORE").len(), 5);
    for c in f.all(b"CORE") {
        assert_eq!(&c.payload[..5], b"H4LC3", "Living Cipher v3 header");
    }
    let payload = std::fs::read(seed("e_encrypted5.payload")).unwrap();
    assert_eq!(payload.len(), 1792);
    let mut a = h4fs::Archive::open(&seed("e_encrypted5.h4mk")).unwrap();
    let err = a.read_block(0, 0).unwrap_err();
    assert!(
        matches!(&err, h4fs::Error::Encrypted { cipher, .. } if cipher == "living-cipher-v3"),
        "{err}"
    );
    // The reference's public default secret opens it.
    a.attach_shared_secret(&h4fs::crypto::SharedSecret::reference_default())
        .unwrap();
    let mut out = Vec::new();
    h4fs::extract::write_stream(&a, 0, 0, u64::MAX, &mut out, &|_| {}).unwrap();
    assert_eq!(out, payload);
}

#[test]
fn reference_layout_c_sample_matches_an_independent_walk() {
    let b = std::fs::read(seed("d_mt_build_demo.h4mk")).unwrap();
    assert_eq!(&b[..5], b"H4MK\x01");
    let body_end = b.len() - 4;
    assert_eq!(le32(&b, body_end), crc32(&b[..body_end]), "file CRC");
    let mut pos = 16;
    let mut blobs: std::collections::BTreeMap<u16, Vec<u8>> = Default::default();
    let mut cores = 0;
    while pos < body_end {
        let flags = le32(&b, pos + 4);
        let len = le32(&b, pos + 8) as usize;
        let crc_at = pos + 12 + len;
        assert_eq!(
            le32(&b, crc_at),
            crc32(&b[pos..crc_at]),
            "chunk CRC at {pos}"
        );
        if &b[pos..pos + 4] == b"CORE" {
            let p = &b[pos + 12..crc_at];
            assert_eq!(&p[..4], b"H4TB");
            assert!((flags >> 28) & 3 < 3, "block type I, P or B");
            let track = u16::from_le_bytes([p[4], p[5]]);
            blobs.entry(track).or_default().extend_from_slice(&p[8..]);
            cores += 1;
        }
        pos = crc_at + 4;
    }
    assert_eq!(pos, body_end);
    let a = h4fs::Archive::open(&seed("d_mt_build_demo.h4mk")).unwrap();
    assert_eq!(a.block_count(), cores);
    for (i, t) in a.tracks.iter().enumerate() {
        let mut out = Vec::new();
        h4fs::extract::write_stream(&a, i, 0, u64::MAX, &mut out, &|_| {}).unwrap();
        let want = blobs.get(&(t.id as u16)).cloned().unwrap_or_default();
        assert_eq!(out, want, "track {}", t.id);
    }
}

// ---------------------------------------------------------------------------------------
// Determinism across thread counts.

#[test]
fn pack_output_does_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.bin");
    // 3 MiB: runs (compressible) and xorshift noise, so blocks differ in stored size.
    let mut data = Vec::with_capacity(3 << 20);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while data.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let run = (x % 700) as usize;
        if x & 1 == 0 {
            data.extend(std::iter::repeat_n((x >> 8) as u8, run));
        } else {
            data.extend((0..run).map(|i| (x >> (i % 56)) as u8));
        }
    }
    data.truncate(3 << 20);
    std::fs::write(&input, &data).unwrap();
    // 256-byte blocks: 12288 blocks, more than one pipeline batch.
    for engine in ["identity", "geometric-reference"] {
        let mut outs = Vec::new();
        for threads in ["1", "2"] {
            let out = dir.path().join(format!("{engine}-{threads}.h4mk"));
            let o = h4fs()
                .arg("pack")
                .arg(&input)
                .arg("-o")
                .arg(&out)
                .args(["--block-size", "256", "--fps", "25", "--gop", "12"])
                .args(["--engine", engine, "--threads", threads, "--quiet"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            outs.push(std::fs::read(&out).unwrap());
        }
        assert!(outs[0] == outs[1], "{engine}: --threads 1 and 2 differ");
        let f = ref_parse(&outs[0]).unwrap();
        assert!(f.veri_ok);
        assert_eq!(f.all(b"CORE").len(), 12288);
        assert_eq!(f.decode().unwrap(), data, "{engine}");
    }
}

// ---------------------------------------------------------------------------------------
// Recognition: an h4fs container that lost its tail is never read as a reference file.

#[test]
fn a_cut_or_extended_h4fs_container_is_refused() {
    let b = golden(EXAMPLE);
    let open = |bytes: Vec<u8>| {
        h4fs::Archive::from_source(Box::new(bytes), h4fs::reader::OpenCheck::Structure)
    };
    assert!(open(b.clone()).is_ok());
    // Every proper prefix: at a chunk boundary the reference scan would otherwise
    // accept it (it ignores up to 11 trailing bytes), silently without index or VERI.
    for cut in 0..b.len() {
        let r = open(b[..cut].to_vec());
        assert!(r.is_err(), "the first {cut} of {} bytes opened", b.len());
    }
    // Appended bytes: 12 zero bytes even form a valid empty chunk (CRC of nothing is 0).
    for extra in [1usize, 11, 12, 20, 44, 152] {
        for fill in [0u8, 0xA5] {
            let mut d = b.clone();
            d.resize(b.len() + extra, fill);
            let err = open(d).expect_err("appended bytes are refused");
            assert!(err.is_integrity(), "{extra} bytes of {fill:#x}: {err}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The detection table of docs/SECURITY.md, case by case.

/// Recompute VERI (and its CRC) over the chunks before it, as anyone can.
fn fix_veri(b: &mut [u8]) {
    let v = b.len() - 44;
    let h = sha256(&b[8..v]);
    b[v + 12..].copy_from_slice(&h);
    fix_crc(b, v);
}

fn open_bytes(b: &[u8]) -> h4fs::Result<h4fs::Archive> {
    h4fs::Archive::from_source(Box::new(b.to_vec()), h4fs::reader::OpenCheck::Structure)
}

#[test]
fn security_md_detection_table_holds() {
    let base = golden(EXAMPLE);
    let t = parse_tail(&base);
    let entry = |i: usize| t.index_offset + 12 + 16 + 72 * i;

    // A block's bytes changed, its CRC and VERI recomputed: the block hash catches it on
    // read; the other blocks still read.
    let mut b = base.clone();
    b[20] = b'X';
    fix_crc(&mut b, 8);
    fix_veri(&mut b);
    let a = open_bytes(&b).unwrap();
    assert!(matches!(
        a.read_block(0, 0),
        Err(h4fs::Error::BlockHash { block: 0, .. })
    ));
    assert_eq!(a.read_block(0, 1).unwrap().bytes(), b"efgh");
    let r = h4fs::verify::verify(&a, true, &|_| {});
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);

    // Two blocks of equal size swapped, chunks whole: both fail their hashes.
    let mut b = base.clone();
    let (c0, c1) = (base[8..24].to_vec(), base[24..40].to_vec());
    b[8..24].copy_from_slice(&c1);
    b[24..40].copy_from_slice(&c0);
    fix_veri(&mut b);
    let a = open_bytes(&b).unwrap();
    assert!(matches!(
        a.read_block(0, 0),
        Err(h4fs::Error::BlockHash { .. })
    ));
    assert!(matches!(
        a.read_block(0, 1),
        Err(h4fs::Error::BlockHash { .. })
    ));

    // An index entry edited (pts), META edited (engine name), the footer's encrypted
    // flag set: CRCs and VERI recomputed, the root refuses the open.
    let mut edits: Vec<Vec<u8>> = Vec::new();
    let mut b = base.clone();
    b[entry(1) + 31] ^= 1;
    fix_crc(&mut b, t.index_offset);
    edits.push(b);
    let mut b = base.clone();
    let meta = t.meta_offset + 12;
    let at = meta + find(&b[meta..t.safe_offset], b"\"identity\"").unwrap();
    b[at + 8] = b'x';
    fix_crc(&mut b, t.meta_offset);
    edits.push(b);
    let mut b = base.clone();
    b[t.footer_at + 12 + 7] |= 1;
    fix_crc(&mut b, t.footer_at);
    edits.push(b);
    for (i, mut b) in edits.into_iter().enumerate() {
        fix_veri(&mut b);
        let err = open_bytes(&b).expect_err("edited structure is refused");
        assert!(
            matches!(err, h4fs::Error::RootMismatch { .. }),
            "edit {i}: {err}"
        );
    }

    // A CORE chunk's CRC field changed: not covered by the root or the block hash; the
    // reference's parser refuses the file, plain verify checks that field too, and VERI
    // (verify --full) covers it. The block's bytes are intact and still read.
    let mut b = base.clone();
    b[16] ^= 0xFF;
    let a = open_bytes(&b).unwrap();
    let r = h4fs::verify::verify(&a, false, &|_| {});
    assert!(
        matches!(r.failures[..], [h4fs::Error::Block { block: 0, .. }]),
        "{:?}",
        r.failures
    );
    assert_eq!(a.read_block(0, 0).unwrap().bytes(), b"abcd");
    let r = h4fs::verify::verify(&a, true, &|_| {});
    assert!(
        r.failures
            .iter()
            .any(|e| matches!(e, h4fs::Error::VeriMismatch { .. })),
        "{:?}",
        r.failures
    );
    assert!(ref_parse(&b).is_err());

    // A whole-file rewrite that recomputes everything passes every check in the file;
    // only the root differs from the one printed when the original was packed.
    let mut b = base.clone();
    b[20..24].copy_from_slice(b"ABCD");
    fix_crc(&mut b, 8);
    let h = sha256(b"ABCD");
    b[entry(0) + 40..entry(0) + 72].copy_from_slice(&h);
    fix_crc(&mut b, t.index_offset);
    let root = documented_root(&b, &t);
    b[t.footer_at + 12 + 64..t.veri_at].copy_from_slice(&root);
    fix_crc(&mut b, t.footer_at);
    fix_veri(&mut b);
    let a = open_bytes(&b).unwrap();
    assert!(h4fs::verify::verify(&a, true, &|_| {}).ok());
    assert_eq!(a.read_block(0, 0).unwrap().bytes(), b"ABCD");
    let pinned = h4fs::Archive::open(&golden_dir().join(EXAMPLE)).unwrap();
    assert_ne!(a.footer.unwrap().1.root, pinned.footer.unwrap().1.root);
}

/// "verify ok" means the reference's parser reads the file too: for every single-byte
/// change of every golden file and of the reference sample, whatever opens and passes
/// plain `verify` (no `--full`) is read by the independent reference parser above.
#[test]
fn plain_verify_ok_means_the_reference_parser_reads_it() {
    let mut files: Vec<Vec<u8>> = CASES.iter().map(|c| golden(c.file)).collect();
    files.push(std::fs::read(seed("a_small10.h4mk")).unwrap());
    for f in files {
        for i in 0..f.len() {
            let mut b = f.clone();
            b[i] ^= 0x10;
            let Ok(a) = open_bytes(&b) else { continue };
            if h4fs::verify::verify(&a, false, &|_| {}).ok() {
                let r = ref_parse(&b);
                assert!(r.is_ok(), "byte {i}: verify ok, reference parser {r:?}");
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn format_md_chunk_map_is_the_golden_layout() {
    // Rows `| SEEK | 54 | 66 | 36 | 102 |`: header at, payload at, payload_len, end; a
    // cell may go on with an explanation ("996 = 1148 − 152"), the first number counts.
    let b = golden(EXAMPLE);
    let chunks = ref_parse(&b).unwrap().chunks;
    let section = example_section();
    let map = &section[section.find("### Chunk map").expect("chunk map")..];
    let map = &map[..map[4..].find("###").map_or(map.len(), |i| i + 4)];
    let first_num = |c: &str| -> usize {
        c.split(|ch: char| !ch.is_ascii_digit())
            .find(|t| !t.is_empty())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("number in {c:?}"))
    };
    let mut rows = 0;
    for line in map.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 6
            || cells[1].len() < 4
            || !cells[1].as_bytes()[..4].iter().all(u8::is_ascii_uppercase)
        {
            continue;
        }
        let c = &chunks[rows];
        assert_eq!(&cells[1].as_bytes()[..4], &c.tag, "{line:?}");
        assert_eq!(first_num(cells[2]), c.offset, "{line:?}");
        assert_eq!(first_num(cells[3]), c.offset + 12, "{line:?}");
        assert_eq!(first_num(cells[4]), c.payload.len(), "{line:?}");
        assert_eq!(
            first_num(cells[5]),
            c.offset + 12 + c.payload.len(),
            "{line:?}"
        );
        rows += 1;
    }
    assert_eq!(rows, chunks.len(), "one row per chunk");
}

// ---------------------------------------------------------------------------------------
// The v2 layout (docs/FORMAT.md §10): golden files, read by the same reference parser.

const V2_CASES: &[Case] = &[
    // The worked example of FORMAT.md §10.7: 4097 bytes `i mod 251`, 1 KiB groups.
    Case {
        file: "v2-4097.h4mk",
        setup: |d| {
            let v: Vec<u8> = (0..4097u32).map(|i| (i % 251) as u8).collect();
            std::fs::write(d.join("in.bin"), v).unwrap();
            "in.bin"
        },
        args: &[
            "--format",
            "v2",
            "--group-size",
            "1KiB",
            "--block-size",
            "1000",
            "--fps",
            "2",
            "--gop",
            "2",
        ],
    },
    // Uneven blocks with an empty one, the default 16 KiB group (one group).
    Case {
        file: "v2-indexed.h4mk",
        setup: |d| {
            std::fs::write(d.join("clip.bin"), b"KEYFRAME-0 p1 p2 KEY3 x").unwrap();
            std::fs::write(
                d.join("clip.csv"),
                "offset,size,pts_us,keyframe\n0,10,0,1\n10,3,40000,0\n13,0,80000,0\n\
                 13,4,80000,0\n17,5,120000,1\n22,1,160000,0\n",
            )
            .unwrap();
            "clip.bin"
        },
        args: &["--format", "v2", "--index", "{dir}/clip.csv"],
    },
];

#[test]
fn packing_today_reproduces_the_v2_golden_files() {
    let regen = std::env::var_os("H4FS_REGEN_GOLDEN").is_some_and(|v| v == "1");
    for case in V2_CASES {
        let (bytes, _) = pack_case(case, &[]);
        if regen {
            std::fs::write(golden_dir().join(case.file), &bytes).unwrap();
            continue;
        }
        assert!(
            bytes == golden(case.file),
            "{}: packing today differs from the golden file; regenerate with \
             H4FS_REGEN_GOLDEN=1 if the format changed on purpose",
            case.file
        );
    }
}

/// The structure root of a v2 container as FORMAT.md §10.5 defines it.
fn documented_root_v2(b: &[u8], t: &Tail, hb3t_header: &[u8]) -> [u8; 32] {
    let index = payload_at(b, t.index_offset, b"HIDX");
    let (head, entries) = index.split_at(16);
    let mut d = Sha256::new();
    d.update(b"h4fs-index-v1\0");
    d.update(head);
    for page in entries.chunks(1024 * 72) {
        d.update(sha256(page));
    }
    let index_digest: [u8; 32] = d.finalize().into();
    let mut r = Sha256::new();
    r.update(b"h4fs-root-v2\0");
    r.update(&b[t.footer_at + 12..t.footer_at + 12 + 64]);
    r.update(sha256(&payload_at(b, t.seek_offset, b"SEEK")));
    r.update(sha256(&payload_at(b, t.meta_offset, b"META")));
    r.update(sha256(&payload_at(b, t.safe_offset, b"SAFE")));
    r.update(sha256(b""));
    r.update(sha256(hb3t_header));
    r.update(index_digest);
    r.finalize().into()
}

#[test]
fn the_reference_parser_reads_v2_golden_files_and_the_tree_is_as_documented() {
    for case in V2_CASES {
        let b = golden(case.file);
        let (_, input) = pack_case(case, &[]);
        let f = ref_parse(&b).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        assert!(f.veri_ok, "{}: VERI", case.file);
        assert_eq!(f.unknown, ["HB3T", "HIDX", "HFTR"], "{}", case.file);
        assert_eq!(f.decode().as_deref(), Some(&input[..]), "{}", case.file);
        let tags: Vec<&[u8]> = f.chunks.iter().map(|c| &c.tag[..]).collect();
        let n = tags.iter().filter(|t| *t == b"CORE").count();
        assert_eq!(
            &tags[n..],
            [
                &b"SEEK"[..],
                b"META",
                b"SAFE",
                b"HB3T",
                b"HIDX",
                b"HFTR",
                b"VERI"
            ]
        );
        // Footer version 2; HB3T right after SAFE, ending where HIDX starts.
        let footer_at = b.len() - 152;
        assert_eq!(be32(&b, footer_at + 12), 2, "footer version");
        let mut v1 = b.clone();
        v1[footer_at + 15] = 1; // parse_tail insists on version 1
        fix_crc(&mut v1, footer_at);
        let t = parse_tail(&v1);
        let hb3t_at = t.safe_offset + 12 + be32(&b, t.safe_offset + 4) as usize;
        let ob = payload_at(&b, hb3t_at, b"HB3T");
        assert_eq!(hb3t_at + 12 + ob.len(), t.index_offset);
        assert_eq!(be32(&ob, 0), 1, "outboard version");
        let k = ob[4] as u32;
        assert_eq!(&ob[5..8], [0, 0, 0]);
        assert_eq!(be64(&ob, 8), input.len() as u64, "stream_len: identity");
        let groups = (input.len() as u64).div_ceil(1 << k);
        assert_eq!(be64(&ob, 16), groups.max(1) - 1, "node_count");
        assert_eq!(ob.len() as u64, 56 + 64 * (groups.max(1) - 1));
        assert_eq!(&ob[24..56], blake3::hash(&input).as_bytes(), "root = b3sum");
        assert_eq!(
            documented_root_v2(&b, &t, &ob[..56]),
            t.root,
            "{}",
            case.file
        );
        // Block hashes stay SHA-256 of the stored bytes; CORE chunks back to back.
        let idx = payload_at(&b, t.index_offset, b"HIDX");
        let mut chunk = 8usize;
        for i in 0..t.block_count as usize {
            let e = &idx[16 + 72 * i..16 + 72 * (i + 1)];
            assert_eq!(be64(e, 0) as usize, chunk);
            let stored = payload_at(&b, chunk, b"CORE");
            assert_eq!(&e[40..72], sha256(&stored), "block {i} sha256");
            chunk += 12 + stored.len();
        }
        assert_eq!(chunk, t.seek_offset);
        if case.file == "v2-4097.h4mk" {
            // The nodes of FORMAT.md §10.7, as printed there.
            let doc = std::fs::read_to_string(root().join("docs/FORMAT.md")).unwrap();
            let sec = &doc[doc.find("### 10.7").unwrap()..];
            let hexes: String = sec
                .lines()
                .skip_while(|l| !l.starts_with("node 0"))
                .take(8)
                .map(|l| {
                    l.split_whitespace()
                        .find(|w| w.len() == 64)
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(hex::encode(&ob[56..]), hexes, "FORMAT.md §10.7 nodes");
        }
        // The library opens it and its BLAKE3 root is b3sum of the input.
        let a = open_bytes(&b).unwrap();
        assert_eq!(a.format_version(), Some(2));
        assert_eq!(
            a.tree().unwrap().root().as_bytes(),
            blake3::hash(&input).as_bytes()
        );
    }
}
