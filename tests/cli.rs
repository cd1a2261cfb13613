//! End-to-end tests of the `h4fs` binary: the three pack input forms, META, atomic output,
//! reading every reference layout, seek, cat and extract.

mod common;

use common::{BIN, arg, h4fs, h4fs_ok, h4fs_run, noise};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seed")
        .join(name)
}

fn inspect_json(file: &Path) -> Value {
    let o = h4fs_ok(&["inspect", "--json", arg(file)]);
    serde_json::from_slice(&o.stdout).expect("inspect --json prints JSON")
}

fn seek_json(file: &Path, pts: u64, extra: &[&str]) -> Value {
    let pts = pts.to_string();
    let mut args = vec!["seek", "--json", arg(file), &pts];
    args.extend_from_slice(extra);
    serde_json::from_slice(&h4fs_ok(&args).stdout).expect("seek --json prints JSON")
}

#[test]
fn fixed_blocks_round_trip_with_meta() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(1_000_003, 7);
    let src = dir.path().join("clip.raw");
    std::fs::write(&src, &data).unwrap();
    let out = dir.path().join("clip.h4mk");
    let o = h4fs_ok(&[
        "pack",
        arg(&src),
        "--block-size",
        "64K",
        "--fps",
        "25",
        "--gop",
        "4",
        "-o",
        arg(&out),
    ]);
    // Not a terminal: no progress bar escape sequences, just the summary line.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains('\r') && !err.contains('\x1b'),
        "progress output on a pipe: {err:?}"
    );
    assert!(err.contains("packed 16 blocks"), "{err}");

    let back = dir.path().join("clip.out");
    h4fs_ok(&["extract", arg(&out), "-o", arg(&back)]);
    assert_eq!(std::fs::read(&back).unwrap(), data);

    let doc = inspect_json(&out);
    assert_eq!(doc["layout"], "h4fs");
    assert_eq!(doc["blocks"], 16);
    let meta = &doc["meta"];
    assert_eq!(meta["source"]["name"], "clip.raw");
    assert_eq!(meta["source"]["size"], 1_000_003);
    // v2 (the default) records the source's BLAKE3; v1 its SHA-256 (tests/golden.rs).
    assert_eq!(
        meta["source"]["blake3"],
        blake3::hash(&data).to_hex().as_str()
    );
    assert_eq!(meta["block_count"], 16);
    assert_eq!(meta["block_size"], 65536);
    assert_eq!(meta["fps_hint"], 25.0);
    assert_eq!(meta["gop"], 4);
    assert_eq!(meta["duration_us"], 16 * 40_000);
    assert_eq!(meta["compression"]["engine"], "identity");
    assert_eq!(meta["compression"]["sealed"], true);
    assert!(
        meta.get("created").is_none(),
        "no wall-clock time unless asked"
    );
    // The compression section comes last, as in the reference.
    let keys: Vec<&String> = meta.as_object().unwrap().keys().collect();
    assert_eq!(keys.last().unwrap().as_str(), "compression");
    assert_eq!(doc["safe"]["scope"], "container+transport-only");
    assert_eq!(doc["safe"]["no_visual_ml"], true);
    assert_eq!(doc["tracks"][0]["seek"]["count"], 4);

    // pts = i * floor(1e6 / fps); a keyframe every gop blocks.
    let s = seek_json(&out, 250_000, &[]);
    assert_eq!(s["containing"]["block"], 6);
    assert_eq!(s["keyframe"]["block"], 4);
    assert_eq!(s["keyframe"]["pts_us"], 160_000);
    assert_eq!(s["decode_chain"], serde_json::json!([4, 5, 6]));

    h4fs_ok(&["verify", "--full", arg(&out)]);
}

#[test]
fn packing_is_deterministic_and_records_only_given_time() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    std::fs::write(&src, noise(300_000, 3)).unwrap();
    let a = dir.path().join("a.h4mk");
    let b = dir.path().join("sub/b.h4mk");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    h4fs_ok(&["pack", arg(&src), "--block-size", "10000", "-o", arg(&a)]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    h4fs_ok(&[
        "pack",
        arg(&src),
        "--block-size",
        "10000",
        "-o",
        arg(&b),
        "--threads",
        "1",
    ]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let c = dir.path().join("c.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&src),
        "--block-size",
        "10000",
        "-o",
        arg(&c),
        "--created",
        "2026-01-02T03:04:05Z",
    ]);
    assert_eq!(inspect_json(&c)["meta"]["created"], "2026-01-02T03:04:05Z");
}

#[test]
fn index_csv_input_with_zero_length_and_one_byte_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(10_000, 11);
    let src = dir.path().join("media.bin");
    std::fs::write(&src, &data).unwrap();
    let csv = dir.path().join("media.csv");
    std::fs::write(
        &csv,
        "offset,size,pts_us,keyframe,duration_us\n\
         0,4000,0,1,40000\n\
         4000,0,40000,0,40000\n\
         4000,1,80000,0,40000\n\
         4001,2999,120000,1,40000\n\
         7000,3000,160000,0,40000\n",
    )
    .unwrap();
    let out = dir.path().join("media.h4mk");
    h4fs_ok(&["pack", arg(&src), "--index", arg(&csv), "-o", arg(&out)]);
    let doc = inspect_json(&out);
    assert_eq!(doc["blocks"], 5);
    assert_eq!(doc["meta"]["duration_us"], 200_000);
    assert!(doc["meta"].get("block_size").is_none());

    assert_eq!(h4fs_ok(&["cat", arg(&out), "--block", "1"]).stdout, b"");
    assert_eq!(
        h4fs_ok(&["cat", arg(&out), "--block", "2"]).stdout,
        &data[4000..4001]
    );
    assert_eq!(
        h4fs_ok(&["cat", arg(&out), "--block", "3"]).stdout,
        &data[4001..7000]
    );
    // Ranges are inclusive and may straddle blocks, including the empty one.
    assert_eq!(
        h4fs_ok(&["cat", arg(&out), "--range", "3990-4010"]).stdout,
        &data[3990..=4010]
    );
    assert_eq!(
        h4fs_ok(&["cat", arg(&out), "--range", "9000-"]).stdout,
        &data[9000..]
    );
    assert_eq!(h4fs_ok(&["cat", arg(&out)]).stdout, data);
    // --pts gives the keyframe block at or before the time, --chain up to the block.
    assert_eq!(
        h4fs_ok(&["cat", arg(&out), "--pts", "100000"]).stdout,
        &data[..4000]
    );
    assert_eq!(
        h4fs_ok(&["cat", arg(&out), "--pts", "100000", "--chain"]).stdout,
        &data[..4001]
    );
    assert_eq!(
        h4fs_ok(&["cat", arg(&out), "--pts", "170000"]).stdout,
        &data[4001..7000]
    );

    let s = seek_json(&out, 130_000, &[]);
    assert_eq!(s["keyframe"]["block"], 3);
    assert_eq!(s["containing"]["block"], 3);
}

#[test]
fn index_csv_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.bin");
    std::fs::write(&src, noise(100, 1)).unwrap();
    let out = dir.path().join("m.h4mk");
    for (csv, needle) in [
        (
            "offset,size,pts_us,keyframe\n0,50,0,1\n60,40,1,0\n",
            ":3: block starts at 60",
        ),
        (
            "offset,size,pts_us,keyframe\n0,50,0,1\n50,40,1,0\n",
            "covers 90 bytes",
        ),
        (
            "offset,size,pts_us,keyframe\n0,50,0,1\n50,x,1,0\n",
            ":3: size \"x\"",
        ),
        ("offset,size,pts\n", "header must name"),
        (
            "offset,size,pts_us,keyframe\n0,100,0,maybe\n",
            "keyframe must be 1 or 0",
        ),
    ] {
        let f = dir.path().join("bad.csv");
        std::fs::write(&f, csv).unwrap();
        let o = h4fs_run(&["pack", arg(&src), "--index", arg(&f), "-o", arg(&out)]);
        assert_eq!(o.status.code(), Some(3), "{csv}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert!(!out.exists());
    }
}

#[test]
fn failed_pack_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.bin");
    std::fs::write(&src, noise(200_000, 5)).unwrap();
    // pts decreasing at the last block: the packer fails after writing earlier blocks.
    let mut csv = String::from("offset,size,pts_us,keyframe\n");
    for i in 0..19u64 {
        csv += &format!("{},10000,{},{}\n", i * 10000, i * 1000, u8::from(i == 0));
    }
    csv += "190000,10000,5,0\n";
    let f = dir.path().join("i.csv");
    std::fs::write(&f, csv).unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("m.h4mk");
    let o = h4fs_run(&["pack", arg(&src), "--index", arg(&f), "-o", arg(&out)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("block 19 has pts 5 us"));
    assert_eq!(
        std::fs::read_dir(&outdir).unwrap().count(),
        0,
        "no partial or temp file"
    );

    // An existing destination is left untouched by a failed pack.
    std::fs::write(&out, b"previous").unwrap();
    assert_eq!(
        h4fs_run(&["pack", arg(&src), "--index", arg(&f), "-o", arg(&out)])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    assert_eq!(std::fs::read_dir(&outdir).unwrap().count(), 1);
}

#[test]
fn directory_input_one_block_per_file_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let names = ["b.bin", "a.bin", "c-empty.bin", "d.bin"];
    let contents: Vec<Vec<u8>> = vec![noise(500, 1), noise(700, 2), vec![], vec![42]];
    for (n, c) in names.iter().zip(&contents) {
        std::fs::write(frames.join(n), c).unwrap();
    }
    std::fs::create_dir(frames.join("subdir-ignored")).unwrap();
    let out = dir.path().join("frames.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&frames),
        "--fps",
        "10",
        "--gop",
        "2",
        "-o",
        arg(&out),
    ]);
    let doc = inspect_json(&out);
    assert_eq!(doc["blocks"], 4);
    assert_eq!(doc["meta"]["source"]["name"], "frames");
    // Sorted: a.bin, b.bin, c-empty.bin, d.bin.
    let sorted = [&contents[1], &contents[0], &contents[2], &contents[3]];
    for (i, c) in sorted.iter().enumerate() {
        assert_eq!(
            &h4fs_ok(&["cat", arg(&out), "--block", &i.to_string()]).stdout,
            *c,
            "block {i}"
        );
    }
    let s = seek_json(&out, 250_000, &[]);
    assert_eq!(s["keyframe"]["block"], 2);
    assert_eq!(s["containing"]["block"], 2);
}

#[test]
fn user_meta_fields_and_reserved_keys() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("x.bin");
    std::fs::write(&src, noise(1000, 9)).unwrap();
    let out = dir.path().join("x.h4mk");
    let mf = dir.path().join("m.json");
    std::fs::write(&mf, r#"{"rig": {"id": 7}}"#).unwrap();
    h4fs_ok(&[
        "pack",
        arg(&src),
        "--block-size",
        "100",
        "-o",
        arg(&out),
        "--meta",
        "camera=\"cam-2\"",
        "--meta",
        "take=3",
        "--meta",
        "note=plain text",
        "--meta-file",
        arg(&mf),
        "--project",
        "proj",
    ]);
    let meta = inspect_json(&out)["meta"].clone();
    assert_eq!(meta["camera"], "cam-2");
    assert_eq!(meta["take"], 3);
    assert_eq!(meta["note"], "plain text");
    assert_eq!(meta["rig"]["id"], 7);
    assert_eq!(meta["project"], "proj");
    let o = h4fs_run(&[
        "pack",
        arg(&src),
        "--block-size",
        "100",
        "-o",
        arg(&dir.path().join("y.h4mk")),
        "--meta",
        "compression=1",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"compression\" is set by h4fs"));
}

#[test]
fn geometric_reference_engine_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 5000];
    data.extend(noise(777, 4));
    let src = dir.path().join("g.bin");
    std::fs::write(&src, &data).unwrap();
    let out = dir.path().join("g.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&src),
        "--block-size",
        "1000",
        "--engine",
        "geometric-reference",
        "-o",
        arg(&out),
    ]);
    let doc = inspect_json(&out);
    assert_eq!(doc["engine"], "geometric-reference");
    assert_eq!(h4fs_ok(&["cat", arg(&out)]).stdout, data);
    // The run-length form of 1000 zero bytes: 3 x (00 ff) + (00 f1).
    let raw = h4fs_ok(&["cat", "--raw", "--block", "0", arg(&out)]).stdout;
    assert_eq!(raw, [0, 255, 0, 255, 0, 255, 0, 235]);
    h4fs_ok(&["verify", "--full", arg(&out)]);
}

#[test]
fn reads_reference_layout_a() {
    let f = fixture("a_small10.h4mk");
    let payload = std::fs::read(fixture("a_small10.payload")).unwrap();
    assert_eq!(h4fs_ok(&["cat", arg(&f)]).stdout, payload);
    assert_eq!(
        h4fs_ok(&["cat", arg(&f), "--block", "3"]).stdout,
        &payload[768..1024]
    );
    let o = h4fs_ok(&["verify", "--full", arg(&f)]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("VERI ok"));
    let doc = inspect_json(&f);
    assert_eq!(doc["layout"], "reference-a");
    assert_eq!(doc["meta"]["project"], "HarmonyØ4");
    // fps 30 -> 33333 us per block; gop 5.
    let s = seek_json(&f, 200_000, &[]);
    assert_eq!(s["keyframe"]["block"], 5);
    assert_eq!(s["keyframe"]["pts_us"], 166_665);
    assert_eq!(s["keyframe"]["seek_entry"]["offset"], 1280);
    assert_eq!(s["containing"]["block"], 6);
}

#[test]
fn reads_reference_layout_c_tracks_and_decode_chain() {
    let f = fixture("d_mt_build_demo.h4mk");
    let doc = inspect_json(&f);
    assert_eq!(doc["layout"], "multitrack-c");
    assert_eq!(doc["tracks"][0]["id"], 1);
    assert_eq!(doc["tracks"][0]["blocks"], 5);
    assert_eq!(doc["tracks"][1]["name"], "safety");
    let s = seek_json(&f, 100_000, &["--track", "1"]);
    assert_eq!(s["keyframe"]["block"], 0);
    assert_eq!(s["containing"]["block"], 3);
    assert_eq!(s["decode_chain"], serde_json::json!([0, 1, 2, 3]));
    let s = seek_json(&f, 400_000, &["--track", "1"]);
    assert_eq!(s["decode_chain"], serde_json::json!([4]));
    assert_eq!(
        h4fs_ok(&["cat", arg(&f), "--track", "1", "--block", "4"]).stdout,
        b"I10_main_audio_keyframe_ghi"
    );
    assert_eq!(
        h4fs_ok(&["cat", arg(&f), "--track", "1", "--pts", "70000", "--chain"]).stdout,
        b"I0_main_audio_keyframe_12345P1_main_audio_predictive_67890B2_main_audio_bidirectional_abc"
    );
    h4fs_ok(&["verify", "--full", arg(&f)]);
    let o = h4fs_run(&["cat", arg(&f), "--track", "9", "--block", "0"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no track 9; tracks: 1, 2"));
}

#[test]
fn encrypted_reference_is_recognised_not_decoded() {
    let f = fixture("e_encrypted5.h4mk");
    let doc = inspect_json(&f);
    assert_eq!(doc["encryption"]["cipher"], "living-cipher-v3");
    let o = h4fs_run(&["cat", arg(&f), "--block", "0"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty(), "no garbage on stdout");
    assert!(String::from_utf8_lossy(&o.stderr).contains("encrypted (living-cipher-v3)"));
    // Integrity without the key still works.
    h4fs_ok(&["verify", "--full", arg(&f)]);
}

/// `inspect --chunks` lists every block; the listing is written as it is produced, so
/// its memory does not grow with the block count: 200,000 one-byte blocks list under a
/// 200 MB address-space limit (building the listing first took about 2 KB per block,
/// and aborted under it).
#[test]
fn inspect_chunks_of_many_blocks_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bytes.bin");
    let blocks = 200_000;
    std::fs::write(&src, noise(blocks, 5)).unwrap();
    let f = dir.path().join("many.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&src),
        "--block-size",
        "1",
        "--format",
        "v1",
        "-o",
        arg(&f),
    ]);
    let limit = 200_000;
    let o = common::ok(common::limited(limit).args(["inspect", "--chunks", arg(&f)]));
    let text = String::from_utf8(o.stdout).unwrap();
    let cores: Vec<&str> = text.lines().filter(|l| l.contains(" CORE ")).collect();
    assert_eq!(cores.len(), blocks);
    assert!(cores[blocks - 1].ends_with(&format!("block {} track 0", blocks - 1)));
    assert!(
        text.contains("  VERI            "),
        "the summary is still there"
    );

    let o = common::ok(common::limited(limit).args(["inspect", "--json", "--chunks", arg(&f)]));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let chunks = doc["chunks"].as_array().unwrap();
    let tags: Vec<&str> = chunks.iter().map(|c| c["tag"].as_str().unwrap()).collect();
    assert_eq!(tags.len(), blocks + 6);
    assert!(tags[..blocks].iter().all(|t| *t == "CORE"));
    assert_eq!(
        tags[blocks..],
        ["SEEK", "META", "SAFE", "HIDX", "HFTR", "VERI"]
    );
    let offsets: Vec<u64> = chunks
        .iter()
        .map(|c| c["offset"].as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "in file order");
    assert_eq!(chunks[7]["block"], 7);
    assert_eq!(chunks[7]["payload_len"], 1);
    assert_eq!(doc["blocks"], blocks);
}

/// `pack --block-size`, `mount --cache-size` and `mount -o cache_size=` read sizes with
/// the same parser: the same forms, and the same message for a bad one.
#[test]
fn sizes_are_read_alike_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, noise(3000, 7)).unwrap();
    let out = dir.path().join("out.h4mk");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let want = "\"12Q\": unknown size suffix \"q\" (use K, M, G or T)";
    let runs = [
        (
            vec!["pack", arg(&input), "--block-size", "12Q", "-o", arg(&out)],
            2,
        ),
        (
            vec!["mount", arg(&input), arg(&mnt), "--cache-size", "12Q"],
            2,
        ),
        (
            vec!["mount", arg(&input), arg(&mnt), "-o", "cache_size=12Q"],
            3,
        ),
    ];
    for (args, code) in runs {
        let o = h4fs_run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!out.exists());
    // The same spellings of one size give one container.
    h4fs_ok(&["pack", arg(&input), "--block-size", "1KiB", "-o", arg(&out)]);
    let a = std::fs::read(&out).unwrap();
    for spelling in ["1k", "1024", "1 KB"] {
        h4fs_ok(&[
            "pack",
            arg(&input),
            "--block-size",
            spelling,
            "-o",
            arg(&out),
            "--force",
        ]);
        assert_eq!(std::fs::read(&out).unwrap(), a, "{spelling}");
    }
}

#[test]
fn help_has_examples_and_exit_codes() {
    let o = h4fs_ok(&["--help"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("Exit codes: 0 ok, 1 container damaged, 2 bad usage, 3 other error"));
    for cmd in ["pack", "inspect", "seek", "verify", "cat", "extract"] {
        let o = h4fs_ok(&[cmd, "--help"]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Examples:"),
            "{cmd}"
        );
    }
    assert_eq!(h4fs_run(&["pack"]).status.code(), Some(2));
    assert_eq!(h4fs_run(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn broken_pipe_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, noise(4 << 20, 8)).unwrap();
    let out = dir.path().join("big.h4mk");
    h4fs_ok(&["pack", arg(&src), "--block-size", "64K", "-o", arg(&out)]);
    let o = Command::new("bash")
        .args([
            "-c",
            &format!(
                "{BIN} cat {} | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}",
                arg(&out)
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn explicit_key_for_a_plain_container_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("p.bin");
    std::fs::write(&src, noise(5000, 2)).unwrap();
    let out = dir.path().join("p.h4mk");
    h4fs_ok(&["pack", arg(&src), "--block-size", "1000", "-o", arg(&out)]);
    let key = dir.path().join("k.key");
    h4fs_ok(&["keygen", "-o", arg(&key)]);
    // A container stripped of its encryption must not have its bytes served as plaintext
    // to a user who expects decryption.
    let o = h4fs()
        .args(["cat", arg(&out), "--key-file", arg(&key)])
        .env_remove("H4FS_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not encrypted, although a key was given")
    );
    // The same key from the environment only earns a note.
    let o = h4fs()
        .args(["cat", arg(&out)])
        .env("H4FS_KEY_FILE", &key)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout, noise(5000, 2));
}

/// The write end of a pipe whose read end is already closed: every write to it fails
/// with EPIPE, whatever the timing.
fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, which are owned here from then on.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write.into()
}

/// Every command that writes to stdout ends quietly with status 0 when its reader has
/// gone (`h4fs inspect --json X | head -1`), with no message and no panic.
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.bin");
    std::fs::write(&src, noise(300_000, 4)).unwrap();
    let c = dir.path().join("s.h4mk");
    h4fs_ok(&["pack", arg(&src), "--block-size", "10000", "-o", arg(&c)]);
    let c = arg(&c);
    let commands: [&[&str]; 11] = [
        &["inspect", c],
        &["inspect", "--json", c],
        &["inspect", "--chunks", c],
        &["seek", c, "0"],
        &["seek", "--json", c, "0"],
        &["verify", "-q", c],
        &["verify", "-q", "--full", c],
        &["cat", c],
        &["cat", c, "--block", "1"],
        &["cat", "--raw", c, "--block", "1"],
        &["--help"],
    ];
    for args in commands {
        let o = h4fs().args(args).stdout(closed_pipe()).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "h4fs {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stderr.is_empty(),
            "h4fs {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Each error prints its cause once: `h4fs: error: <what and where>: <OS error>`.
#[test]
fn error_messages_say_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nosuch.h4mk");
    let m = arg(&missing);
    let enoent = "No such file or directory (os error 2)";
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["inspect", m], format!("cannot open {m}: {enoent}")),
        (
            vec!["inspect", "--json", m],
            format!("cannot open {m}: {enoent}"),
        ),
        (vec!["seek", m, "0"], format!("cannot open {m}: {enoent}")),
        (vec!["verify", m], format!("cannot open {m}: {enoent}")),
        (
            vec!["cat", m, "--block", "0"],
            format!("cannot open {m}: {enoent}"),
        ),
        (
            vec!["extract", m, "-o", "x"],
            format!("cannot open {m}: {enoent}"),
        ),
        (
            vec!["mount", "-f", m, arg(dir.path())],
            format!("cannot mount: {m}: cannot open it: {enoent}"),
        ),
        (
            vec!["inspect", arg(dir.path())],
            format!(
                "cannot open {d}: {d} is a directory, not a container file",
                d = arg(dir.path())
            ),
        ),
    ];
    for (args, want) in cases {
        let o = h4fs_run(&args);
        assert_eq!(o.status.code(), Some(3), "h4fs {args:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            format!("h4fs: error: {want}\n"),
            "h4fs {args:?}"
        );
    }
}

/// `pack --help` keeps its list of input forms one per line; every container argument is
/// described; the top-level examples include mounting.
#[test]
fn help_texts_list_forms_describe_file_and_show_mount() {
    let pack = String::from_utf8(h4fs_ok(&["pack", "--help"]).stdout).unwrap();
    for form in [
        "\n  * FILE --media:",
        "\n  * FILE --index CSV:",
        "\n  * FILE --block-size SIZE:",
        "\n  * DIRECTORY:",
    ] {
        assert!(
            pack.contains(form),
            "pack --help lacks line {form:?}:\n{pack}"
        );
    }
    for cmd in ["inspect", "verify", "cat", "extract"] {
        let help = String::from_utf8(h4fs_ok(&[cmd, "--help"]).stdout).unwrap();
        // `--help` puts an argument's description on the line after its name.
        let line: String = help
            .lines()
            .skip_while(|l| !l.starts_with("Arguments:"))
            .skip(1)
            .take(2)
            .collect();
        assert!(
            line.contains("<FILE>") && line.contains("The container"),
            "{cmd} --help does not describe FILE: {line:?}"
        );
    }
    let top = String::from_utf8(h4fs_ok(&["--help"]).stdout).unwrap();
    assert!(
        top.contains("\n  h4fs mount movie.h4mk /mnt/movie"),
        "{top}"
    );
    assert!(top.contains("\n  h4fs umount /mnt/movie"), "{top}");
}

#[test]
fn pack_json_says_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    std::fs::write(&src, noise(10_000, 4)).unwrap();
    let out = dir.path().join("in.h4mk");
    let o = h4fs_ok(&[
        "pack",
        arg(&src),
        "--block-size",
        "3000",
        "--gop",
        "2",
        "-o",
        arg(&out),
        "--json",
    ]);
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("pack --json prints JSON");
    assert_eq!(v["output"], arg(&out));
    assert_eq!(v["file_size"], std::fs::metadata(&out).unwrap().len());
    assert_eq!(v["stream_size"], 10_000);
    assert_eq!(v["blocks"], 4);
    assert_eq!(v["keyframes"], 2);
    assert_eq!(v["engine"], "identity");
    assert_eq!(v["encrypted"], false);
    let doc = inspect_json(&out);
    let root = v["root"].as_str().unwrap();
    assert_eq!(root.len(), 64);
    assert!(
        doc.to_string().contains(root),
        "inspect does not show root {root}"
    );
    // Standard output cannot carry both the container and the JSON.
    let o = h4fs_run(&[
        "pack",
        arg(&src),
        "--block-size",
        "3000",
        "-o",
        "-",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--json prints to standard output"));
    // Encrypted: the key id, as the summary line gives it.
    let key = dir.path().join("k.key");
    h4fs_ok(&["keygen", "-o", arg(&key)]);
    let enc = dir.path().join("enc.h4mk");
    let o = h4fs_ok(&[
        "pack",
        arg(&src),
        "--block-size",
        "3000",
        "--encrypt",
        "--key-file",
        arg(&key),
        "-o",
        arg(&enc),
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["encrypted"], true);
    let id = v["key_id"].as_str().unwrap();
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(v["file_size"], std::fs::metadata(&enc).unwrap().len());
}

#[test]
fn verify_json_per_check_and_per_failing_block() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    std::fs::write(&src, noise(8_000, 5)).unwrap();
    let out = dir.path().join("in.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&src),
        "--block-size",
        "1000",
        "--format",
        "v1",
        "-o",
        arg(&out),
    ]);
    let o = h4fs_ok(&["verify", "--json", "--full", "-q", arg(&out)]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("verify --json prints JSON");
    assert_eq!(v["ok"], true);
    let checks: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["structure", "blocks", "chunks", "veri"]);
    assert_eq!(v["checks"][1]["checked"], 8);
    assert_eq!(v["failures"].as_array().unwrap().len(), 0);
    // Damage blocks 2 and 5 (the payload of block n starts 12 bytes into its chunk).
    let mut bytes = std::fs::read(&out).unwrap();
    let a = h4fs::Archive::open(&out).unwrap();
    let offs: Vec<u64> = [2, 5]
        .iter()
        .map(|&n| a.tracks[0].blocks.get(n).unwrap().data_offset)
        .collect();
    drop(a);
    for o in &offs {
        bytes[*o as usize + 10] ^= 0x40;
    }
    std::fs::write(&out, &bytes).unwrap();
    let o = h4fs_run(&["verify", "--json", "-q", arg(&out)]);
    assert_eq!(o.status.code(), Some(1), "exit code as without --json");
    let v: Value = serde_json::from_slice(&o.stdout).expect("verify --json prints JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["checks"][1]["ok"], false);
    assert_eq!(v["checks"][1]["failed"], 2);
    let f = v["failures"].as_array().unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f[0]["block"], 2);
    assert_eq!(f[1]["block"], 5);
    assert_eq!(f[0]["kind"], "sha256");
    assert!(f[0]["offset"].as_u64().unwrap() < offs[0]);
    assert!(f[1]["message"].as_str().unwrap().contains("block 5"));
    // A damaged structure is a failing "structure" check, still exit 1.
    let meta_at = bytes
        .windows(9)
        .position(|w| w == b"\"project\"")
        .expect("META in the file");
    bytes[meta_at + 2] ^= 1;
    std::fs::write(&out, &bytes).unwrap();
    let o = h4fs_run(&["verify", "--json", "-q", arg(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("verify --json prints JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["checks"][0]["check"], "structure");
    assert_eq!(v["checks"][0]["ok"], false);
    assert_eq!(v["failures"].as_array().unwrap().len(), 1);
}

/// Run ffmpeg with whitespace-separated `args`, writing `dir/name`.
fn ffmpeg(dir: &Path, args: &str, name: &str) -> PathBuf {
    let path = dir.join(name);
    common::ok(
        Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-y"])
            .args(args.split_whitespace())
            .arg(&path),
    );
    path
}

/// Presentation times (µs, relative to the format start) of the keyframes of the first
/// video stream, as ffprobe lists them.
fn keyframe_pts_us(media: &Path) -> Vec<u64> {
    let o = common::ok(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "V:0", "-of", "json"])
            .args([
                "-show_entries",
                "packet=pts,flags:stream=time_base:format=start_time",
            ])
            .arg(media),
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let tb = v["streams"][0]["time_base"].as_str().unwrap();
    let (num, den) = tb.split_once('/').unwrap();
    let (num, den): (i128, i128) = (num.parse().unwrap(), den.parse().unwrap());
    let start: f64 = v["format"]["start_time"].as_str().unwrap().parse().unwrap();
    let start_us = (start * 1e6).round() as i128;
    let mut out: Vec<u64> = v["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["flags"].as_str().unwrap().contains('K'))
        .map(|p| {
            let pts = p["pts"].as_i64().unwrap() as i128;
            ((pts * num * 1_000_000).div_euclid(den) - start_us).max(0) as u64
        })
        .collect();
    out.sort();
    out
}

/// `pack --media` on an H.264 MP4 with B-frames: keyframe blocks carry the keyframes'
/// presentation times, so a seek lands on the keyframe a player starts from; the stream
/// extracts byte for byte.
#[test]
fn pack_media_uses_presentation_times_of_b_frame_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let clip = ffmpeg(
        dir.path(),
        "-f lavfi -i testsrc=duration=4:size=160x120:rate=25 -c:v libx264 -preset ultrafast \
         -bf 3 -g 25 -pix_fmt yuv420p",
        "bframes.mp4",
    );
    let out = dir.path().join("bframes.h4mk");
    let o = h4fs_ok(&["pack", arg(&clip), "--media", "-o", arg(&out), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["media"]["codec_name"], "h264");
    let a = h4fs::Archive::open(&out).unwrap();
    let blocks = &a.tracks[0].blocks;
    let keys: Vec<u64> = (0..blocks.len())
        .map(|n| blocks.get(n).unwrap())
        .filter(|e| e.keyframe)
        .map(|e| e.pts_us)
        .collect();
    let want = keyframe_pts_us(&clip);
    assert_eq!(keys, want);
    assert_eq!(want[..2], [0, 1_000_000]);
    // The keyframe at or before 1.95 s presents at 1.0 s.
    let s = seek_json(&out, 1_950_000, &[]);
    assert_eq!(s["keyframe"]["pts_us"], 1_000_000);
    let back = dir.path().join("back.mp4");
    h4fs_ok(&["extract", arg(&out), "-o", arg(&back)]);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&clip).unwrap());
}

/// MPEG-TS starts at 1.4 s: times count from there, the start is recorded in META, and
/// time 0 is block 0.
#[test]
fn pack_media_counts_mpeg_ts_times_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let clip = ffmpeg(
        dir.path(),
        "-f lavfi -i testsrc=duration=3:size=160x120:rate=25 -c:v libx264 -preset ultrafast \
         -bf 2 -g 25 -pix_fmt yuv420p -f mpegts",
        "clip.ts",
    );
    let out = dir.path().join("clip.h4mk");
    h4fs_ok(&["pack", arg(&clip), "--media", "-q", "-o", arg(&out)]);
    let doc = inspect_json(&out);
    let start = doc["meta"]["start_time_us"]
        .as_i64()
        .expect("start_time_us");
    assert!(start >= 1_000_000, "start {start}");
    let s = seek_json(&out, 0, &[]);
    assert_eq!(s["keyframe"]["block"], 0);
    let a = h4fs::Archive::open(&out).unwrap();
    let keys: Vec<u64> = (0..a.tracks[0].blocks.len())
        .map(|n| a.tracks[0].blocks.get(n).unwrap())
        .filter(|e| e.keyframe)
        .map(|e| e.pts_us)
        .collect();
    assert_eq!(keys, keyframe_pts_us(&clip));
    assert_eq!(keys[0], 0);
}

/// `pack --media` is the script's rules in Rust: on every kind of media, it gives the
/// same container, byte for byte, as `scripts/ffprobe-index.sh` followed by
/// `pack --index` (B-frames, a start offset, fragmented MP4, Matroska, WebM, audio).
#[test]
fn pack_media_equals_the_script_and_pack_index() {
    let dir = tempfile::tempdir().unwrap();
    let v = "-f lavfi -i testsrc=duration=3:size=160x120:rate=25";
    let x264 = "-c:v libx264 -preset ultrafast -bf 3 -g 25 -pix_fmt yuv420p";
    let clips = [
        ffmpeg(dir.path(), &format!("{v} {x264}"), "b.mp4"),
        ffmpeg(dir.path(), &format!("{v} {x264} -f mpegts"), "b.ts"),
        ffmpeg(
            dir.path(),
            &format!("{v} {x264} -movflags frag_keyframe+empty_moov"),
            "frag.mp4",
        ),
        ffmpeg(dir.path(), &format!("{v} {x264}"), "b.mkv"),
        ffmpeg(
            dir.path(),
            &format!("{v} -c:v libvpx -b:v 200k -g 25"),
            "v.webm",
        ),
        ffmpeg(
            dir.path(),
            "-f lavfi -i sine=duration=2 -c:a libmp3lame",
            "a.mp3",
        ),
    ];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ffprobe-index.sh");
    for clip in &clips {
        let name = clip.file_name().unwrap().to_str().unwrap();
        let csv = dir.path().join(format!("{name}.csv"));
        let o = common::ok(Command::new(&script).arg(clip));
        std::fs::write(&csv, &o.stdout).unwrap();
        let via_csv = dir.path().join(format!("{name}.csv.h4mk"));
        let via_media = dir.path().join(format!("{name}.media.h4mk"));
        h4fs_ok(&[
            "pack",
            arg(clip),
            "--index",
            arg(&csv),
            "-q",
            "-o",
            arg(&via_csv),
        ]);
        h4fs_ok(&["pack", arg(clip), "--media", "-q", "-o", arg(&via_media)]);
        assert!(
            std::fs::read(&via_csv).unwrap() == std::fs::read(&via_media).unwrap(),
            "{name}: pack --media differs from ffprobe-index.sh + pack --index"
        );
    }
}

/// Text and still images are not media; without ffprobe `--media` says what to
/// install. None leaves an output file.
#[test]
fn pack_media_refuses_text_and_needs_ffprobe() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "# Notes\n\nNot a movie.\n".repeat(50)).unwrap();
    let out = dir.path().join("out.h4mk");
    let o = h4fs_run(&["pack", arg(&text), "--media", "-o", arg(&out)]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not audio or video"), "{err}");
    assert!(!out.exists());
    let png = ffmpeg(
        dir.path(),
        "-f lavfi -i testsrc=size=64x48 -frames:v 1",
        "still.png",
    );
    let o = h4fs_run(&["pack", arg(&png), "--media", "-o", arg(&out)]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not audio or video (a still image"), "{err}");
    assert!(!out.exists());
    let clip = ffmpeg(
        dir.path(),
        "-f lavfi -i testsrc=duration=1:size=64x48:rate=5 -c:v mpeg4",
        "c.mp4",
    );
    let o = h4fs()
        .args(["pack", arg(&clip), "--media", "-o", arg(&out)])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ffprobe, which is not installed"), "{err}");
    assert!(!out.exists());
}

/// A directory pack records each file's name (META "names", in block order); names a
/// reader could not show safely are refused at pack time, naming the file.
#[test]
fn directory_pack_records_names_and_refuses_unsafe_ones() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for (n, c) in [("f0002.jpg", 2), ("f0001.jpg", 1), ("a,b.jpg", 3)] {
        std::fs::write(frames.join(n), noise(100, c)).unwrap();
    }
    let out = dir.path().join("frames.h4mk");
    h4fs_ok(&["pack", arg(&frames), "-o", arg(&out)]);
    let doc = inspect_json(&out);
    assert_eq!(
        doc["meta"]["names"],
        serde_json::json!(["a,b.jpg", "f0001.jpg", "f0002.jpg"])
    );
    assert_eq!(
        h4fs_ok(&["cat", arg(&out), "--block", "1"]).stdout,
        noise(100, 1),
        "block 1 is f0001.jpg"
    );
    // A file name with a line break, then one that is not UTF-8.
    for bad in [&b"evil\nname.jpg"[..], &b"latin1-\xe9.jpg"[..]] {
        let p = frames.join(std::ffi::OsStr::from_bytes(bad));
        std::fs::write(&p, b"x").unwrap();
        let out2 = dir.path().join("bad.h4mk");
        let o = h4fs_run(&["pack", arg(&frames), "-o", arg(&out2)]);
        assert_eq!(o.status.code(), Some(3));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("cannot be recorded"), "{err}");
        assert!(!out2.exists());
        std::fs::remove_file(&p).unwrap();
    }
}
