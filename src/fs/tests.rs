//! The filesystem core against containers built in memory and the reference samples.

use super::*;
use crate::blocks::{BlockKey, ContainerId};
use crate::engine::Engine;
use crate::error::Error;
use crate::reader::OpenCheck;
use crate::writer::{BlockMeta, Writer};
use serde_json::Map;
use serde_json::{Value, json};
use status::STATS_XATTR_MAX;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seed")
        .join(name)
}

/// Blocks of the given sizes with distinct contents; block i at pts i*1000, keyframe
/// every `gop` blocks.
fn blocks(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|k| (i * 31 + k * 7 % 251) as u8).collect())
        .collect()
}

fn pack(
    data: &[Vec<u8>],
    gop: usize,
    first_pts: u64,
    engine: Engine,
    meta: Map<String, Value>,
) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), engine).unwrap();
    for (i, b) in data.iter().enumerate() {
        w.add_block(
            b,
            BlockMeta {
                pts_us: first_pts + i as u64 * 1000,
                keyframe: i % gop == 0,
            },
        )
        .unwrap();
    }
    let (bytes, _) = w.finish(meta, &crate::writer::default_safe()).unwrap();
    bytes
}

fn source(bytes: Vec<u8>, name: &str) -> Source {
    Source {
        name: name.into(),
        path: PathBuf::from(format!("/mem/{name}.h4mk")),
        archive: Archive::from_source(Box::new(bytes), OpenCheck::Structure).unwrap(),
        mtime: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        level: VerifyLevel::Structure,
        checked_at: UNIX_EPOCH,
        full_blocks: None,
        remote: None,
    }
}

fn quiet() -> FsConfig {
    FsConfig {
        log: Arc::new(|_| {}),
        ..FsConfig::default()
    }
}

fn fs_of(bytes: Vec<u8>) -> Fs {
    Fs::new(vec![source(bytes, "demo")], false, UNIX_EPOCH, quiet())
}

fn path_ino(fs: &Fs, path: &str) -> std::result::Result<u64, FsError> {
    let mut ino = fs.root_ino();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(ino, part)?.ino;
    }
    Ok(ino)
}

fn list(fs: &Fs, path: &str) -> Vec<String> {
    let ino = path_ino(fs, path).unwrap();
    let mut names = Vec::new();
    fs.readdir(ino, 0, &mut |e| {
        names.push(e.name);
        false
    })
    .unwrap();
    names
}

/// The live counters: the value of the root's [`STATS_XATTR`].
fn root_stats(fs: &Fs) -> Value {
    let XattrReply::Data(v) = fs.getxattr(fs.root_ino(), STATS_XATTR, 65536).unwrap() else {
        panic!("no data for {STATS_XATTR}")
    };
    serde_json::from_slice(&v).unwrap()
}

fn read_all(fs: &Fs, path: &str) -> std::result::Result<Vec<u8>, FsError> {
    let ino = path_ino(fs, path)?;
    let o = fs.open(ino, false)?;
    let mut out = Vec::new();
    loop {
        let d = fs.read(ino, o.fh, out.len() as u64, 4096)?;
        if d.as_slice().is_empty() {
            break;
        }
        out.extend_from_slice(d.as_slice());
    }
    fs.release(o.fh);
    Ok(out)
}

#[test]
fn tree_of_one_container() {
    let data = blocks(&[100, 0, 1, 300, 50]);
    let fs = fs_of(pack(&data, 2, 0, Engine::Identity, Map::new()));
    assert_eq!(
        list(&fs, ""),
        [
            ".",
            "..",
            "meta.json",
            "safe.json",
            "seek.csv",
            "index.csv",
            "veri.json",
            "manifest.json",
            "stream",
            "blocks",
            "by-pts",
        ]
    );
    assert_eq!(
        list(&fs, "blocks"),
        [".", "..", "000000", "000001", "000002", "000003", "000004"]
    );
    assert_eq!(list(&fs, "by-pts"), [".", "..", "0", "2000", "4000"]);
    let root = fs.getattr(1).unwrap();
    assert_eq!((root.kind, root.perm), (Kind::Dir, 0o555));
    let stream = fs.getattr(path_ino(&fs, "stream").unwrap()).unwrap();
    assert_eq!(stream.size, 451);
    assert_eq!(stream.blocks, 1);
    assert!(stream.blksize >= 1 << 20);
    assert_eq!(
        fs.getattr(path_ino(&fs, "blocks/000001").unwrap())
            .unwrap()
            .size,
        0
    );
    assert!(matches!(fs.lookup(1, "nope"), Err(FsError::NotFound)));
    assert!(matches!(path_ino(&fs, "blocks/1"), Err(FsError::NotFound)));
    assert!(matches!(
        path_ino(&fs, "blocks/000005"),
        Err(FsError::NotFound)
    ));
    assert!(matches!(path_ino(&fs, "stream/x"), Err(FsError::NotDir)));
}

#[test]
fn stream_and_blocks_read_back_exactly() {
    let data = blocks(&[100, 0, 1, 300, 50, 4096, 1]);
    let whole: Vec<u8> = data.concat();
    let fs = fs_of(pack(&data, 3, 0, Engine::GeometricReference, Map::new()));
    assert_eq!(read_all(&fs, "stream").unwrap(), whole);
    for (i, b) in data.iter().enumerate() {
        assert_eq!(&read_all(&fs, &format!("blocks/{i:06}")).unwrap(), b);
    }
    // Reads straddling block boundaries, at every offset with a few sizes.
    let ino = path_ino(&fs, "stream").unwrap();
    for off in (0..whole.len() as u64 + 3).step_by(7) {
        for size in [1u32, 2, 99, 101, 400, 5000] {
            let got = fs.read(ino, 0, off, size).unwrap();
            let lo = (off as usize).min(whole.len());
            let hi = (off as usize + size as usize).min(whole.len());
            assert_eq!(got.as_slice(), &whole[lo..hi], "offset {off} size {size}");
        }
    }
    let s = fs.cache_stats();
    assert!(s.hits > 0 && s.misses > 0);
    let stats = root_stats(&fs);
    assert!(stats["bytes_served"].as_u64().unwrap() > whole.len() as u64);
    assert_eq!(stats["verification_failures"], 0);
}

#[test]
fn by_pts_resolves_lazily_to_the_keyframe_at_or_before() {
    let data = blocks(&[10; 7]);
    let fs = fs_of(pack(&data, 3, 5000, Engine::Identity, Map::new()));
    // Keyframes: blocks 0, 3, 6 at pts 5000, 8000, 11000 (the end: META has no
    // duration). A time before the first keyframe gives the first keyframe.
    let by = path_ino(&fs, "by-pts").unwrap();
    for (name, want) in [
        ("0", 0u64),
        ("4999", 0),
        ("5000", 0),
        ("7999", 0),
        ("8000", 3),
        ("8ms", 3),
        ("0.010999s", 3),
        ("11000", 6),
        ("0:00.011", 6),
    ] {
        let a = fs.lookup(by, name).unwrap();
        assert_eq!(a.kind, Kind::Symlink);
        assert_eq!(
            fs.readlink(a.ino).unwrap(),
            format!("../blocks/{want:06}"),
            "{name}"
        );
    }
    for name in ["11001", "99999999", "-1", "1e3", "1.5", "x"] {
        assert!(
            matches!(fs.lookup(by, name), Err(FsError::NotFound)),
            "{name}"
        );
    }
    assert!(matches!(fs.readlink(1), Err(FsError::NotSymlink)));
}

#[test]
fn by_pts_finds_a_time_shared_by_a_thousand_blocks_without_a_listing() {
    // Raw H.264 indexes with every pts 0: 1000 blocks at one time, a keyframe every 10th.
    let mut w = Writer::new(Vec::new(), Engine::Identity).unwrap();
    for i in 0..1000u64 {
        let pts_us = if i < 990 { 0 } else { 40_000 };
        w.add_block(
            &[i as u8],
            BlockMeta {
                pts_us,
                keyframe: i % 10 == 0,
            },
        )
        .unwrap();
    }
    let (bytes, _) = w
        .finish(Map::new(), &crate::writer::default_safe())
        .unwrap();
    let fs = fs_of(bytes);
    let by = path_ino(&fs, "by-pts").unwrap();
    // A fresh tree: look-ups before any listing.
    let a = fs.lookup(by, "0").unwrap();
    assert_eq!(fs.readlink(a.ino).unwrap(), "../blocks/000000");
    let a = fs.lookup(by, "40000").unwrap();
    assert_eq!(fs.readlink(a.ino).unwrap(), "../blocks/000990");
    assert_eq!(list(&fs, "by-pts"), [".", "..", "0", "40000"]);
    let a = fs.lookup(by, "0").unwrap();
    assert_eq!(fs.readlink(a.ino).unwrap(), "../blocks/000000");
    // Every SEEK entry names its block in seek.csv.
    let seek = String::from_utf8(read_all(&fs, "seek.csv").unwrap()).unwrap();
    let rows: Vec<&str> = seek.lines().skip(1).collect();
    assert_eq!(rows.len(), 100);
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(
            row.split(',').nth(1),
            Some((k * 10).to_string().as_str()),
            "{row}"
        );
    }
}

#[test]
fn csv_tables_and_json_files() {
    let data = blocks(&[3; 600]);
    let fs = fs_of(pack(&data, 4, 0, Engine::Identity, Map::new()));
    let index = String::from_utf8(read_all(&fs, "index.csv").unwrap()).unwrap();
    let lines: Vec<&str> = index.lines().collect();
    assert_eq!(
        lines[0],
        "block,pts_us,keyframe,track,offset,stored_size,size,sha256,name"
    );
    assert_eq!(lines.len(), 601);
    let row: Vec<&str> = lines[5].split(',').collect();
    assert_eq!(&row[..7], ["4", "4000", "1", "0", "12", "3", "3"]);
    assert_eq!(row[7], hex::encode(crate::integrity::sha256(&data[4])));
    assert_eq!(row[8], "", "no recorded names, an empty name column");
    // Its size is exact and reads at any offset agree with the whole.
    let ino = path_ino(&fs, "index.csv").unwrap();
    assert_eq!(fs.getattr(ino).unwrap().size, index.len() as u64);
    for off in [0u64, 10, 61, 5000, 20_000, index.len() as u64 - 5] {
        let got = fs.read(ino, 0, off, 777).unwrap();
        let end = (off as usize + 777).min(index.len());
        assert_eq!(got.as_slice(), &index.as_bytes()[off as usize..end]);
    }
    let seek = String::from_utf8(read_all(&fs, "seek.csv").unwrap()).unwrap();
    assert_eq!(seek.lines().next(), Some("pts_us,block,offset"));
    assert_eq!(seek.lines().nth(2), Some("4000,4,12"));
    assert_eq!(seek.lines().count(), 151);
    let manifest: Value = serde_json::from_slice(&read_all(&fs, "manifest.json").unwrap()).unwrap();
    assert_eq!(manifest["blocks"], 600);
    assert_eq!(
        manifest["seek"][1],
        json!({"pts_us": 4000, "block": 4, "offset": 12})
    );
    assert_eq!(manifest["safe"]["scope"], "container+transport-only");
    let meta: Value = serde_json::from_slice(&read_all(&fs, "meta.json").unwrap()).unwrap();
    assert_eq!(meta["compression"]["engine"], "identity");
    assert!(meta.get("h4fs_status").is_none());
}

#[test]
fn xattrs_on_blocks_and_root() {
    let data = blocks(&[5, 6]);
    let fs = fs_of(pack(&data, 1, 0, Engine::Identity, Map::new()));
    let b1 = path_ino(&fs, "blocks/000001").unwrap();
    let names = match fs.listxattr(b1, 4096).unwrap() {
        XattrReply::Data(d) => d,
        XattrReply::Size(_) => panic!("asked for data"),
    };
    assert_eq!(
        names,
        b"user.h4mk.pts_us\0user.h4mk.keyframe\0user.h4mk.sha256\0user.h4mk.offset\0"
    );
    assert_eq!(
        fs.getxattr(b1, "user.h4mk.pts_us", 100).unwrap(),
        XattrReply::Data(b"1000".to_vec())
    );
    assert_eq!(
        fs.getxattr(b1, "user.h4mk.offset", 100).unwrap(),
        XattrReply::Data(b"5".to_vec())
    );
    assert_eq!(
        fs.getxattr(b1, "user.h4mk.keyframe", 0).unwrap(),
        XattrReply::Size(1)
    );
    assert!(matches!(
        fs.getxattr(b1, "user.h4mk.sha256", 10),
        Err(FsError::Range)
    ));
    assert!(matches!(
        fs.getxattr(b1, "user.other", 10),
        Err(FsError::NoXattr)
    ));
    let XattrReply::Data(v) = fs.getxattr(1, "user.h4mk.veri", 4096).unwrap() else {
        panic!()
    };
    let v: Value = serde_json::from_slice(&v).unwrap();
    assert_eq!(v["structure"], "ok");
    assert_eq!(v["block_failures"], 0);
}

#[test]
fn read_only_everywhere() {
    let fs = fs_of(pack(&blocks(&[5]), 1, 0, Engine::Identity, Map::new()));
    for p in ["stream", "meta.json", "blocks/000000", "veri.json"] {
        let ino = path_ino(&fs, p).unwrap();
        assert_eq!(fs.open(ino, true).unwrap_err().errno(), libc::EROFS, "{p}");
    }
    assert_eq!(fs.open(1, false).unwrap_err().errno(), libc::EISDIR);
}

#[test]
fn damaged_block_is_eio_logged_and_never_served() {
    let data = blocks(&[64, 64, 64]);
    let mut bytes = pack(&data, 1, 0, Engine::Identity, Map::new());
    // Block 1's payload starts at 8 + (12 + 64) + 12.
    let at = 8 + 76 + 12 + 10;
    bytes[at] ^= 0xff;
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = logged.clone();
    let cfg = FsConfig {
        log: Arc::new(move |m| l2.lock().unwrap().push(m.to_string())),
        ..FsConfig::default()
    };
    let fs = Fs::new(vec![source(bytes, "demo")], false, UNIX_EPOCH, cfg);
    assert_eq!(read_all(&fs, "blocks/000000").unwrap(), data[0]);
    let e = read_all(&fs, "blocks/000001").unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert_eq!(read_all(&fs, "stream").unwrap_err().errno(), libc::EIO);
    // Bytes before the bad block are still served by offset.
    let s = path_ino(&fs, "stream").unwrap();
    assert_eq!(fs.read(s, 0, 0, 64).unwrap().as_slice(), &data[0][..]);
    assert_eq!(fs.read(s, 0, 128, 64).unwrap().as_slice(), &data[2][..]);
    let log = logged.lock().unwrap().join("\n");
    assert!(log.contains("block 1 at file offset 84"), "{log}");
    let veri: Value = serde_json::from_slice(&read_all(&fs, "veri.json").unwrap()).unwrap();
    let f = &veri["blocks"]["failures"];
    assert_eq!(f.as_array().unwrap().len(), 1);
    assert_eq!(f[0]["block"], 1);
    assert_eq!(f[0]["file_offset"], 84);
    assert!(f[0]["error"].as_str().unwrap().contains("SHA-256 mismatch"));
    let stats = root_stats(&fs);
    assert_eq!(stats["verification_failures"], 1);
}

#[test]
fn reference_container_checks_veri_once_on_first_data_open() {
    let bytes = std::fs::read(fixture("a_small10.h4mk")).unwrap();
    let payload = std::fs::read(fixture("a_small10.payload")).unwrap();
    let fs = fs_of(bytes.clone());
    let veri: Value = serde_json::from_slice(&read_all(&fs, "veri.json").unwrap()).unwrap();
    assert_eq!(veri["veri"]["status"], "unchecked");
    assert_eq!(read_all(&fs, "stream").unwrap(), payload);
    let veri: Value = serde_json::from_slice(&read_all(&fs, "veri.json").unwrap()).unwrap();
    assert_eq!(veri["veri"]["status"], "ok");
    assert_eq!(veri["veri"]["computed"], veri["veri"]["expected"]);

    // A VERI that does not match: every data file fails with EIO; metadata still reads.
    let mut bad = bytes;
    let veri_payload = bad.len() - 32;
    bad[veri_payload] ^= 1;
    // Keep the VERI chunk's own CRC right so the file still opens.
    let crc = crc32fast::hash(&bad[veri_payload..]);
    bad[veri_payload - 4..veri_payload].copy_from_slice(&crc.to_be_bytes());
    let fs = fs_of(bad);
    assert_eq!(read_all(&fs, "stream").unwrap_err().errno(), libc::EIO);
    assert_eq!(
        read_all(&fs, "blocks/000000").unwrap_err().errno(),
        libc::EIO
    );
    assert!(read_all(&fs, "meta.json").is_ok());
    let veri: Value = serde_json::from_slice(&read_all(&fs, "veri.json").unwrap()).unwrap();
    assert_eq!(veri["veri"]["status"], "mismatch");
}

#[test]
fn reference_container_without_veri_serves_no_data() {
    // Cut exactly before VERI: it opens (the reference's parser reads it too), but
    // nothing shows its blocks are the ones written, so no data file is served.
    let bytes = std::fs::read(fixture("a_small10.h4mk")).unwrap();
    let fs = fs_of(bytes[..bytes.len() - 44].to_vec());
    assert_eq!(read_all(&fs, "stream").unwrap_err().errno(), libc::EIO);
    assert_eq!(
        read_all(&fs, "blocks/000000").unwrap_err().errno(),
        libc::EIO
    );
    assert!(read_all(&fs, "meta.json").is_ok());
    let veri: Value = serde_json::from_slice(&read_all(&fs, "veri.json").unwrap()).unwrap();
    assert_eq!(veri["veri"]["status"], "absent");
    assert!(veri["veri"]["detail"].as_str().unwrap().contains("EIO"));
}

#[test]
fn unknown_engine_mounts_but_data_fails() {
    let mut meta = Map::new();
    meta.insert("project".into(), json!("p"));
    let bytes = pack(&blocks(&[256, 256]), 1, 0, Engine::Identity, meta);
    // Rewrite the engine name in META, keeping its length, then repair CRC and root by
    // re-reading with OpenCheck::None (the structure root covers META).
    let needle = b"\"engine\":\"identity\"";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + 10;
    let mut bytes = bytes;
    bytes[at..at + 8].copy_from_slice(b"mystery8");
    let archive = Archive::from_source(Box::new(bytes), OpenCheck::None).unwrap();
    let src = Source {
        archive,
        level: VerifyLevel::None,
        ..source(pack(&blocks(&[1]), 1, 0, Engine::Identity, Map::new()), "x")
    };
    let fs = Fs::new(vec![src], false, UNIX_EPOCH, quiet());
    assert_eq!(list(&fs, "blocks").len(), 4);
    assert_eq!(read_all(&fs, "stream").unwrap_err().errno(), libc::EIO);
    let meta: Value = serde_json::from_slice(&read_all(&fs, "meta.json").unwrap()).unwrap();
    let reason = meta["h4fs_status"]["reason"].as_str().unwrap();
    assert!(reason.contains("mystery8"), "{reason}");
    let veri: Value = serde_json::from_slice(&read_all(&fs, "veri.json").unwrap()).unwrap();
    assert_eq!(veri["data"]["readable"], false);
}

#[test]
fn encrypted_without_key_is_eacces() {
    let bytes = std::fs::read(fixture("e_encrypted5.h4mk")).unwrap();
    let fs = fs_of(bytes);
    assert_eq!(read_all(&fs, "stream").unwrap_err().errno(), libc::EACCES);
    assert!(read_all(&fs, "meta.json").is_ok());
}

#[test]
fn multitrack_has_a_directory_per_track() {
    let bytes = std::fs::read(fixture("d_mt_build_demo.h4mk")).unwrap();
    let fs = fs_of(bytes.clone());
    assert_eq!(
        list(&fs, ""),
        [
            ".",
            "..",
            "meta.json",
            "safe.json",
            "veri.json",
            "manifest.json",
            "tracks.json",
            "main",
            "safety",
        ]
    );
    assert!(list(&fs, "main").contains(&"track.json".to_string()));
    let a = Archive::from_source(Box::new(bytes), OpenCheck::Structure).unwrap();
    let mut want = Vec::new();
    for n in 0..a.tracks[0].blocks.len() {
        want.extend_from_slice(a.read_block(0, n).unwrap().bytes());
    }
    assert_eq!(read_all(&fs, "main/stream").unwrap(), want);
    assert_eq!(read_all(&fs, "safety/stream").unwrap(), b"");
    let by = list(&fs, "main/by-pts");
    assert_eq!(by.len(), 4, "{by:?}");
    // Parent links point the right way.
    let main = path_ino(&fs, "main").unwrap();
    let mut dotdot = 0;
    fs.readdir(main, 1, &mut |e| {
        dotdot = e.ino;
        true
    })
    .unwrap();
    assert_eq!(dotdot, 1);
}

#[test]
fn directory_mount_and_stable_inodes() {
    let make = || {
        vec![
            source(
                pack(&blocks(&[4, 4]), 1, 0, Engine::Identity, Map::new()),
                "alpha",
            ),
            source(
                pack(&blocks(&[9]), 1, 0, Engine::Identity, Map::new()),
                "beta",
            ),
        ]
    };
    let fs1 = Fs::new(make(), true, UNIX_EPOCH, quiet());
    let fs2 = Fs::new(make(), true, UNIX_EPOCH, quiet());
    assert_eq!(list(&fs1, ""), [".", "..", "alpha", "beta"]);
    let paths = [
        "alpha",
        "beta/stream",
        "alpha/blocks/000001",
        "beta/by-pts/0",
    ];
    let mut seen = std::collections::HashSet::new();
    for p in paths {
        let a = path_ino(&fs1, p).unwrap();
        assert_eq!(a, path_ino(&fs2, p).unwrap(), "{p}");
        assert!(seen.insert(a), "{p} shares an inode");
        assert_eq!(fs1.getattr(a).unwrap().ino, a);
    }
    assert_eq!(
        read_all(&fs1, "beta/blocks/000000").unwrap(),
        blocks(&[9])[0]
    );
    assert!(fs1.statfs().blocks >= 1);
}

#[test]
fn prefetch_loads_ahead_of_a_sequential_reader() {
    let data = blocks(&[1000; 40]);
    let fs = Arc::new(Fs::new(
        vec![source(pack(&data, 1, 0, Engine::Identity, Map::new()), "d")],
        false,
        UNIX_EPOCH,
        FsConfig {
            prefetch_bytes: 8000,
            ..quiet()
        },
    ));
    fs.start_prefetch(1);
    let ino = path_ino(&fs, "stream").unwrap();
    // A read at offset 0 starts a sequential reader: its miss reads blocks 0 and 1
    // together, and blocks 2..=8 are queued for the prefetch thread.
    assert_eq!(fs.read(ino, 0, 0, 1000).unwrap().as_slice(), &data[0][..]);
    let t = std::time::Instant::now();
    while fs.cache_stats().prefetches < 7 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{:?}",
            fs.cache_stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = fs.cache_stats();
    assert_eq!(before.prefetches, 7, "{before:?}");
    assert_eq!(before.blocks, 9, "{before:?}");
    assert_eq!(
        fs.read(ino, 0, 1000, 8000).unwrap().as_slice(),
        &data[1..9].concat()[..]
    );
    let after = fs.cache_stats();
    assert_eq!(after.hits - before.hits, 8, "{after:?}");
    assert_eq!(after.misses, before.misses);
    fs.stop_prefetch();
}

#[test]
fn full_verification_at_mount_is_reported() {
    let bytes = std::fs::read(fixture("a_small10.h4mk")).unwrap();
    let src = Source {
        level: VerifyLevel::Full,
        full_blocks: Some(10),
        ..source(bytes, "demo")
    };
    let fs = Fs::new(vec![src], false, UNIX_EPOCH, quiet());
    let veri: Value = serde_json::from_slice(&read_all(&fs, "veri.json").unwrap()).unwrap();
    assert_eq!(veri["verify"], "full");
    assert_eq!(veri["veri"]["status"], "ok");
    assert_eq!(veri["blocks"]["verified_full_at_mount"], 10);
}

mod model {
    //! The core against a simple model: the stream is the concatenation of the blocks,
    //! every block file is its block, every CSV read is a slice of the whole table.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn reads_match_the_model(
            sizes in proptest::collection::vec(0usize..300, 1..24),
            gop in 1usize..5,
            engine in prop_oneof![Just(Engine::Identity), Just(Engine::GeometricReference)],
            reads in proptest::collection::vec((0u64..8000, 0u32..1500), 1..24),
            cache in 0u64..2000,
        ) {
            let data = blocks(&sizes);
            let whole = data.concat();
            let fs = Fs::new(
                vec![source(pack(&data, gop, 0, engine, Map::new()), "m")],
                false,
                UNIX_EPOCH,
                FsConfig { cache_bytes: cache, ..quiet() },
            );
            let stream = path_ino(&fs, "stream").unwrap();
            prop_assert_eq!(fs.getattr(stream).unwrap().size, whole.len() as u64);
            for &(off, size) in &reads {
                let got = fs.read(stream, 0, off, size).unwrap();
                let lo = (off as usize).min(whole.len());
                let hi = (off as usize + size as usize).min(whole.len());
                prop_assert_eq!(got.as_slice(), &whole[lo..hi]);
            }
            let names = list(&fs, "blocks");
            prop_assert_eq!(names.len(), sizes.len() + 2);
            for (i, b) in data.iter().enumerate() {
                let p = format!("blocks/{i:06}");
                prop_assert_eq!(fs.getattr(path_ino(&fs, &p).unwrap()).unwrap().size, b.len() as u64);
                prop_assert_eq!(&read_all(&fs, &p).unwrap(), b);
            }
            let index = read_all(&fs, "index.csv").unwrap();
            let ino = path_ino(&fs, "index.csv").unwrap();
            for &(off, size) in &reads {
                let got = fs.read(ino, 0, off % (index.len() as u64 + 10), size).unwrap();
                let off = (off % (index.len() as u64 + 10)) as usize;
                let lo = off.min(index.len());
                let hi = (off + size as usize).min(index.len());
                prop_assert_eq!(got.as_slice(), &index[lo..hi]);
            }
            // by-pts: every keyframe's pts names itself, a time just before the next
            // keyframe names the previous one.
            let by = path_ino(&fs, "by-pts").unwrap();
            let last = (sizes.len() as u64 - 1) * 1000;
            for k in (0..sizes.len()).step_by(gop) {
                let t = (k as u64 * 1000 + 999).min(last);
                let l = fs.lookup(by, &t.to_string()).unwrap();
                prop_assert_eq!(fs.readlink(l.ino).unwrap(), format!("../blocks/{k:06}"));
            }
        }
    }
}

#[test]
fn paired_block_reads_match_single_reads_and_keep_failures_apart() {
    let data = blocks(&[0, 1, 100, 5000, 70_000, 131_075]);
    let mut bytes = pack(&data, 1, 0, Engine::Identity, Map::new());
    let good = Archive::from_source(Box::new(bytes.clone()), OpenCheck::Structure).unwrap();
    let entry = |n| good.entry(0, n).unwrap();
    for a in 0..data.len() as u64 {
        for b in 0..data.len() as u64 {
            let [ra, rb] = good.read_block_entry_pair(&entry(a), &entry(b));
            assert_eq!(ra.unwrap().bytes(), &data[a as usize][..], "{a} {b}");
            assert_eq!(rb.unwrap().bytes(), &data[b as usize][..], "{a} {b}");
        }
    }
    // One damaged block fails alone; its partner is still served.
    let at = entry(4).data_offset as usize + 12_345;
    bytes[at] ^= 1;
    let fs = fs_of(bytes);
    let archive = fs.archive(ContainerId(0));
    let [ok, bad] = archive.read_block_entry_pair(&entry(3), &entry(4));
    assert_eq!(ok.unwrap().bytes(), &data[3][..]);
    assert!(
        matches!(bad, Err(crate::Error::BlockHash { block: 4, .. })),
        "{bad:?}"
    );
    // Through the prefetcher: the good block is cached, the bad one recorded, not cached.
    let key = |n| BlockKey::new(0, 0, n);
    fs.blocks.prefetch_pair(key(5), key(4));
    assert_eq!(fs.cache_stats().prefetches, 1);
    assert!(fs.blocks.is_cached(&key(5)));
    assert!(!fs.blocks.is_cached(&key(4)));
    assert_eq!(fs.served(ContainerId(0)).failures().len(), 1);
    let ino = path_ino(&fs, "blocks/000004").unwrap();
    let err = fs.read(ino, 0, 0, 10).map(|_| ()).unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
}

/// The counters are an extended attribute of the root that `listxattr` does not list
/// (so tools copying xattrs leave it), and no file of the tree.
#[test]
fn counters_are_an_unlisted_xattr_of_the_root() {
    let data = blocks(&[100, 200]);
    let fs = fs_of(pack(&data, 1, 0, Engine::Identity, Map::new()));
    let root = fs.root_ino();
    assert!(matches!(
        fs.lookup(root, "stats.json"),
        Err(FsError::NotFound)
    ));
    let XattrReply::Data(names) = fs.listxattr(root, 4096).unwrap() else {
        panic!()
    };
    assert_eq!(names, b"user.h4mk.veri\0");
    let before = root_stats(&fs);
    assert_eq!(before["bytes_served"], 0);
    read_all(&fs, "stream").unwrap();
    let after = root_stats(&fs);
    assert_eq!(after["bytes_served"], 300);
    assert_eq!(after["blocks_verified"], 2);
    assert_eq!(after["per_container"][0]["name"], "demo");
    assert_eq!(after["per_container"][0]["blocks_verified"], 2);
    // The size-only query, and a buffer too small.
    let XattrReply::Size(n) = fs.getxattr(root, STATS_XATTR, 0).unwrap() else {
        panic!()
    };
    assert!(n > 100);
    assert!(matches!(
        fs.getxattr(root, STATS_XATTR, 10),
        Err(FsError::Range)
    ));
    // Only the root answers.
    let stream = path_ino(&fs, "stream").unwrap();
    assert!(matches!(
        fs.getxattr(stream, STATS_XATTR, 65536),
        Err(FsError::NoXattr)
    ));
}

/// With very many containers left out, the counters still fit one extended attribute.
#[test]
fn counters_fit_one_xattr() {
    let skipped: Vec<SourceError> = (0..3000)
        .map(|i| SourceError {
            path: PathBuf::from(format!("/lib/container-{i:05}.h4mk")),
            error: Error::Internal("x".repeat(100)),
        })
        .collect();
    let fs = fs_of(pack(&blocks(&[5]), 1, 0, Engine::Identity, Map::new())).with_skipped(&skipped);
    assert!(fs.stats().to_string().len() > STATS_XATTR_MAX);
    let XattrReply::Data(v) = fs.getxattr(fs.root_ino(), STATS_XATTR, 65536).unwrap() else {
        panic!()
    };
    assert!(v.len() <= STATS_XATTR_MAX);
    let v: Value = serde_json::from_slice(&v).unwrap();
    let kept = v["skipped"].as_array().unwrap().len() as u64;
    assert!(kept > 100, "{kept}");
    assert_eq!(kept + v["omitted"]["skipped"].as_u64().unwrap(), 3000);
    assert_eq!(v["containers"], 1);
}

fn stat_of(fs: &Fs, path: &str) -> (u64, SystemTime, Vec<u8>) {
    let a = fs.getattr(path_ino(fs, path).unwrap()).unwrap();
    (a.size, a.mtime, read_all(fs, path).unwrap())
}

/// veri.json keeps its bytes, size and mtime while reads succeed or repeat a known
/// failure; a new failure changes its bytes, its size and (later) its mtime.
#[test]
fn veri_json_changes_only_with_a_verification_result() {
    let data = blocks(&[64, 64, 64, 64]);
    let mut bytes = pack(&data, 1, 0, Engine::Identity, Map::new());
    bytes[8 + 76 + 12 + 10] ^= 0xff; // block 1
    bytes[8 + 3 * 76 + 12 + 10] ^= 0xff; // block 3
    let fs = fs_of(bytes);
    let v0 = stat_of(&fs, "veri.json");
    assert_eq!(v0.0, v0.2.len() as u64);
    // veri.json dates from the checks at mount (the test's sources: the container's
    // mtime, which is later than their checked_at).
    assert_eq!(v0.1, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    // Good reads, again and again: nothing changes.
    for _ in 0..3 {
        assert_eq!(read_all(&fs, "blocks/000000").unwrap(), data[0]);
        assert_eq!(read_all(&fs, "blocks/000002").unwrap(), data[2]);
    }
    assert_eq!(stat_of(&fs, "veri.json"), v0);
    assert!(
        fs.getattr(path_ino(&fs, "veri.json").unwrap())
            .unwrap()
            .dynamic
    );
    // A block fails: new content, new size, later mtime.
    assert!(read_all(&fs, "blocks/000001").is_err());
    let v1 = stat_of(&fs, "veri.json");
    assert_ne!(v1.2, v0.2);
    assert_eq!(v1.0, v1.2.len() as u64);
    assert_ne!(v1.0, v0.0);
    assert!(v1.1 > v0.1);
    // The same failure again (and good reads): unchanged.
    for _ in 0..3 {
        assert!(read_all(&fs, "blocks/000001").is_err());
        assert_eq!(read_all(&fs, "blocks/000000").unwrap(), data[0]);
    }
    assert_eq!(stat_of(&fs, "veri.json"), v1);
    assert_eq!(root_stats(&fs)["failed_reads"], 4);
    // Another block fails: changes again, the mtime moves on.
    assert!(read_all(&fs, "blocks/000003").is_err());
    let v2 = stat_of(&fs, "veri.json");
    assert!(v2.0 > v1.0 && v2.1 > v1.1);
    let veri: Value = serde_json::from_slice(&v2.2).unwrap();
    assert_eq!(veri["blocks"]["failures"].as_array().unwrap().len(), 2);
    // The rest of the tree never changed.
    let XattrReply::Data(summary) = fs.getxattr(1, "user.h4mk.veri", 4096).unwrap() else {
        panic!()
    };
    assert_eq!(
        serde_json::from_slice::<Value>(&summary).unwrap()["block_failures"],
        2
    );
}

/// A reference container's veri.json changes once, when its whole-file VERI is checked
/// on the first open of a data file.
#[test]
fn reference_veri_json_changes_once_when_checked() {
    let bytes = std::fs::read(fixture("a_small10.h4mk")).unwrap();
    let fs = fs_of(bytes);
    let v0 = stat_of(&fs, "veri.json");
    assert_eq!(stat_of(&fs, "veri.json"), v0);
    read_all(&fs, "stream").unwrap();
    let v1 = stat_of(&fs, "veri.json");
    assert!(v1.0 != v0.0 && v1.1 > v0.1);
    let veri: Value = serde_json::from_slice(&v1.2).unwrap();
    assert_eq!(veri["veri"]["status"], "ok");
    read_all(&fs, "stream").unwrap();
    read_all(&fs, "blocks/000001").unwrap();
    assert_eq!(stat_of(&fs, "veri.json"), v1);
}

/// A directory pack's recorded names: `by-name/` symlinks, an xattr on each block, the
/// `name` column of index.csv (CSV-quoted). Hostile names in a crafted META (`..`, `/`,
/// NUL, control characters, too long, duplicates, not strings) are left out; the blocks
/// stay reachable by number.
#[test]
fn recorded_names_by_name_xattr_and_index_column() {
    let data = blocks(&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    let mut meta = Map::new();
    meta.insert(
        "names".into(),
        json!([
            "f0001.jpg",
            "a,b \"quoted\".jpg",
            "..",
            "sub/dir.jpg",
            "nul\u{0}.jpg",
            "line\nbreak.jpg",
            "x".repeat(256),
            "f0001.jpg",
            7,
            "z.jpg"
        ]),
    );
    let fs = fs_of(pack(&data, 2, 0, Engine::Identity, meta));
    let root = list(&fs, "");
    assert!(root.contains(&"by-name".to_string()), "{root:?}");
    assert!(!root.iter().any(|n| n.starts_with("stream.")), "{root:?}");
    assert_eq!(
        list(&fs, "by-name"),
        [".", "..", "a,b \"quoted\".jpg", "f0001.jpg", "z.jpg"]
    );
    let ino = path_ino(&fs, "by-name/f0001.jpg").unwrap();
    assert_eq!(fs.readlink(ino).unwrap(), "../blocks/000000");
    assert_eq!(fs.getattr(ino).unwrap().kind, Kind::Symlink);
    let ino = path_ino(&fs, "by-name/z.jpg").unwrap();
    assert_eq!(fs.readlink(ino).unwrap(), "../blocks/000009");
    for bad in ["..", "sub", "nul", "x", "missing.jpg"] {
        assert!(
            matches!(
                path_ino(&fs, &format!("by-name/{bad}")),
                Err(FsError::NotFound)
            ),
            "{bad}"
        );
    }
    let xattr = |path: &str| {
        let ino = path_ino(&fs, path).unwrap();
        match fs.getxattr(ino, "user.h4mk.name", 4096) {
            Ok(XattrReply::Data(v)) => Some(String::from_utf8(v).unwrap()),
            Err(FsError::NoXattr) => None,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        xattr("blocks/000001").as_deref(),
        Some("a,b \"quoted\".jpg")
    );
    assert_eq!(xattr("blocks/000002"), None);
    assert_eq!(xattr("blocks/000007"), None, "duplicate of block 0's name");
    let index = String::from_utf8(read_all(&fs, "index.csv").unwrap()).unwrap();
    let lines: Vec<&str> = index.lines().collect();
    assert!(lines[1].ends_with(",f0001.jpg"), "{}", lines[1]);
    assert!(
        lines[2].ends_with(",\"a,b \"\"quoted\"\".jpg\""),
        "{}",
        lines[2]
    );
    assert!(lines[3].ends_with(','), "{}", lines[3]);
    assert!(lines[10].ends_with(",z.jpg"), "{}", lines[10]);
    // Inode numbers of by-name links are distinct from blocks and by-pts links.
    let a = path_ino(&fs, "by-name/z.jpg").unwrap();
    let b = path_ino(&fs, "blocks/000009").unwrap();
    assert_ne!(a, b);
    assert_eq!(fs.getattr(a).unwrap().ino, a);
}

/// A list of names whose length is not the block count is ignored as a whole.
#[test]
fn names_of_the_wrong_count_are_ignored() {
    let data = blocks(&[10, 20]);
    let mut meta = Map::new();
    meta.insert("names".into(), json!(["only-one.jpg"]));
    let fs = fs_of(pack(&data, 1, 0, Engine::Identity, meta));
    assert!(!list(&fs, "").contains(&"by-name".to_string()));
    assert!(matches!(path_ino(&fs, "by-name"), Err(FsError::NotFound)));
}

/// `stream.EXT` names the source's extension and links to `stream`; `stream` carries
/// the MIME type. Odd extensions give no link.
#[test]
fn stream_link_with_the_source_extension_and_mime_xattr() {
    let data = blocks(&[10, 20]);
    let mut meta = Map::new();
    meta.insert("source".into(), json!({"name": "movie.mp4", "size": 30}));
    let fs = fs_of(pack(&data, 1, 0, Engine::Identity, meta));
    let root = list(&fs, "");
    let at = root.iter().position(|n| n == "stream").unwrap();
    assert_eq!(root[at + 1], "stream.mp4");
    let ino = path_ino(&fs, "stream.mp4").unwrap();
    assert_eq!(fs.readlink(ino).unwrap(), "stream");
    let st = path_ino(&fs, "stream").unwrap();
    match fs.getxattr(st, "user.h4mk.mime", 100).unwrap() {
        XattrReply::Data(v) => assert_eq!(v, b"video/mp4"),
        other => panic!("{other:?}"),
    }
    for odd in [
        "movie",
        ".hidden",
        "a.b/c",
        "x.tar gz",
        "x.verylongextension",
    ] {
        let mut meta = Map::new();
        meta.insert("source".into(), json!({"name": odd, "size": 30}));
        let fs = fs_of(pack(&data, 1, 0, Engine::Identity, meta));
        let root = list(&fs, "");
        assert!(
            !root.iter().any(|n| n.starts_with("stream.")),
            "{odd}: {root:?}"
        );
        let st = path_ino(&fs, "stream").unwrap();
        assert!(matches!(
            fs.getxattr(st, "user.h4mk.mime", 100),
            Err(FsError::NoXattr)
        ));
    }
}

#[test]
fn prefix_containers_open_on_first_lookup_only() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let opens = Arc::new(AtomicUsize::new(0));
    let bytes = pack(&blocks(&[5, 7]), 1, 0, Engine::Identity, Map::new());
    let pending = |name: &str, good: bool| {
        let (opens, bytes, n) = (opens.clone(), bytes.clone(), name.to_string());
        Pending {
            name: name.into(),
            shown: format!("s3://b/{name}.h4mk"),
            listed_mtime: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            open: Box::new(move || {
                opens.fetch_add(1, Ordering::SeqCst);
                match good {
                    true => Ok(source(bytes.clone(), &n)),
                    false => Err(Error::NotContainer("not an H4MK container".into())),
                }
            }),
        }
    };
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = logged.clone();
    let cfg = FsConfig {
        log: Arc::new(move |m| l2.lock().unwrap().push(m.to_string())),
        ..FsConfig::default()
    };
    let fs = Fs::new_lazy(
        vec![
            (pending("a", true), None),
            (pending("b", true), None),
            (pending("junk", false), None),
        ],
        UNIX_EPOCH,
        cfg,
        Some(Arc::new(RemoteStats::default())),
    );
    // Listing the root, with attributes as readdirplus gives them, opens nothing.
    assert_eq!(list(&fs, ""), [".", "..", "a", "b", "junk"]);
    fs.readdir(fs.root_ino(), 0, &mut |e| {
        let a = fs.entry_attr(e.ino).unwrap();
        assert_eq!(a.kind, Kind::Dir);
        false
    })
    .unwrap();
    assert_eq!(opens.load(Ordering::SeqCst), 0);
    assert_eq!(root_stats(&fs)["containers_opened"], 0);
    // A lookup opens that container once; reading it serves its bytes.
    assert_eq!(read_all(&fs, "b/stream").unwrap().len(), 12);
    assert_eq!(read_all(&fs, "b/blocks/000001").unwrap().len(), 7);
    assert_eq!(opens.load(Ordering::SeqCst), 1);
    let stats = root_stats(&fs);
    assert_eq!(stats["containers_opened"], 1);
    assert_eq!(stats["per_container"][0]["name"], "b");
    // One that fails to open is EIO on lookup, logged, listed, and not retried at once;
    // the others are unaffected.
    let e = path_ino(&fs, "junk").unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert!(path_ino(&fs, "junk").is_err());
    assert_eq!(opens.load(Ordering::SeqCst), 2);
    assert!(
        logged
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("s3://b/junk.h4mk"))
    );
    assert_eq!(root_stats(&fs)["failed_to_open"][0]["name"], "junk");
    assert_eq!(read_all(&fs, "a/stream").unwrap().len(), 12);
    assert_eq!(opens.load(Ordering::SeqCst), 3);
}
