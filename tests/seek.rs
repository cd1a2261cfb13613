//! Seeking by time through the CLI (`seek`, `cat --pts`) and a real mount (`by-pts/`):
//! many blocks sharing one time, times before the first keyframe and past the end, the
//! forms of time people type, and the media's start time.

mod common;

use common::{TestMount, arg, h4fs, h4fs_run, noise, ok, pack};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Pack `rows` (offset and size are filled in: 10 bytes a block, 40 ms each) with an optional
/// `# start_time_us=` line; return (container, input bytes).
fn pack_rows(dir: &Path, rows: &[(u64, bool)], start: Option<i64>) -> (PathBuf, Vec<u8>) {
    let data = noise(rows.len() * 10, 7);
    let input = dir.join("media.bin");
    std::fs::write(&input, &data).unwrap();
    let mut csv = String::new();
    if let Some(s) = start {
        csv.push_str(&format!("# start_time_us={s}\n"));
    }
    csv.push_str("offset,size,pts_us,keyframe,duration_us\n");
    for (i, (pts, key)) in rows.iter().enumerate() {
        csv.push_str(&format!("{},10,{pts},{},40000\n", i * 10, u8::from(*key)));
    }
    let index = dir.join("media.csv");
    std::fs::write(&index, csv).unwrap();
    let out = dir.join("media.h4mk");
    pack(&input, &out, &["--index", arg(&index)]);
    (out, data)
}

fn seek_json(container: &Path, time: &str) -> Value {
    let out = ok(h4fs().args(["seek", "--json", arg(container), time]));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// 1000 blocks at time 0 (a keyframe every 10th, as raw H.264 indexes), then 100 blocks
/// 40 ms apart from 1 s, a keyframe every 25th.
fn many_at_zero() -> Vec<(u64, bool)> {
    let mut rows: Vec<(u64, bool)> = (0..1000).map(|i| (0, i % 10 == 0)).collect();
    rows.extend((0..100u64).map(|i| (1_000_000 + i * 40_000, i % 25 == 0)));
    rows
}

#[test]
fn a_thousand_blocks_at_one_time_seek_from_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (c, data) = pack_rows(dir.path(), &many_at_zero(), None);
    let doc = seek_json(&c, "0");
    assert_eq!(doc["keyframe"]["block"], 0, "{doc}");
    assert_eq!(doc["containing"]["block"], 999, "{doc}");
    let chain = doc["decode_chain"].as_array().unwrap();
    assert_eq!((chain.len(), &chain[0]), (1000, &Value::from(0)));
    let out = h4fs_run(&["seek", arg(&c), "0"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("keyframe   block 0 "), "{text}");
    assert!(!text.contains("none"), "{text}");
    let doc = seek_json(&c, "1.1s");
    assert_eq!(doc["keyframe"]["block"], 1000, "{doc}");
    // cat --pts 0 gives block 0; with --chain everything up to the last block at 0.
    let out = ok(h4fs().args(["cat", arg(&c), "--pts", "0"]));
    assert_eq!(out.stdout, data[..10]);
    let out = ok(h4fs().args(["cat", arg(&c), "--pts", "0", "--chain"]));
    assert_eq!(out.stdout, data[..10_000]);

    // A fresh mount: look the time up without listing by-pts/ first.
    let m = TestMount::new(&c, &[]);
    let target = std::fs::read_link(m.path("by-pts/0")).unwrap();
    assert_eq!(target, Path::new("../blocks/000000"));
    assert_eq!(std::fs::read(m.path("by-pts/0")).unwrap(), data[..10]);
    let target = std::fs::read_link(m.path("by-pts/1s")).unwrap();
    assert_eq!(target, Path::new("../blocks/001000"));
    // seek.csv names a block in every row.
    let seek = std::fs::read_to_string(m.path("seek.csv")).unwrap();
    let rows: Vec<&str> = seek.lines().skip(1).collect();
    assert_eq!(rows.len(), 100 + 4, "{seek}");
    for row in rows {
        let block = row.split(',').nth(1).unwrap();
        assert!(block.parse::<u64>().is_ok(), "row without a block: {row}");
    }
    // Listing shows one name per time, and the same block as the look-up.
    let mut names: Vec<String> = std::fs::read_dir(m.path("by-pts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["0", "1000000", "2000000", "3000000", "4000000"]);
    let target = std::fs::read_link(m.path("by-pts/0")).unwrap();
    assert_eq!(target, Path::new("../blocks/000000"));
}

#[test]
fn times_in_every_form_and_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    // 100 blocks 40 ms apart, a keyframe every 25th: 4 s of media.
    let rows: Vec<(u64, bool)> = (0..100u64).map(|i| (i * 40_000, i % 25 == 0)).collect();
    let (c, data) = pack_rows(dir.path(), &rows, None);
    for (time, block) in [
        ("2000000", 50),
        ("2s", 50),
        ("1.999999s", 25),
        ("2.5s", 50),
        ("1500ms", 25),
        ("00:00:03.5", 75),
        ("0:03", 75),
    ] {
        let doc = seek_json(&c, time);
        assert_eq!(doc["keyframe"]["block"], block, "{time}: {doc}");
        let out = ok(h4fs().args(["cat", arg(&c), "--pts", time]));
        assert_eq!(
            out.stdout,
            data[block * 10..block * 10 + 10],
            "cat --pts {time}"
        );
    }
    // Bad times are usage errors naming the text.
    for bad in ["abc", "-1s", "1.5", "99999999999999999999", "1:75"] {
        for args in [
            vec!["seek", arg(&c), bad],
            vec!["cat", arg(&c), "--pts", bad],
        ] {
            let out = h4fs_run(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("\"{bad}\" is not a time")), "{err}");
            assert!(out.stdout.is_empty());
        }
    }
    // Within the last frame (3.96 s + 40 ms) is not past the end; 4 s and later are.
    let out = h4fs_run(&["seek", arg(&c), "3.999s"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = h4fs_run(&["seek", "--json", arg(&c), "5s"]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: 5000000 us is past the end of the media (4000000 us)"),
        "{err}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc["past_end"].clone(), doc["keyframe"]["block"].clone()),
        (Value::Bool(true), Value::from(75))
    );
    for args in [
        vec!["seek", "--strict", arg(&c), "5s"],
        vec!["cat", arg(&c), "--pts", "5s", "--strict"],
    ] {
        let out = h4fs_run(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("past the end of the media"), "{err}");
    }
    let out = h4fs_run(&["cat", arg(&c), "--pts", "5s"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, data[750..760]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("past the end"));

    let m = TestMount::new(&c, &[]);
    for (name, block) in [
        ("2s", "000050"),
        ("1500ms", "000025"),
        ("00:00:03.5", "000075"),
        ("3999999", "000075"),
    ] {
        let target = std::fs::read_link(m.path(&format!("by-pts/{name}"))).unwrap();
        assert_eq!(
            target,
            Path::new(&format!("../blocks/{block}")),
            "by-pts/{name}"
        );
    }
    for name in ["4s", "5000000", "abc", "-1", "1.5"] {
        let e = std::fs::symlink_metadata(m.path(&format!("by-pts/{name}"))).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "by-pts/{name}");
    }
}

#[test]
fn media_starting_off_zero_count_from_their_start() {
    let dir = tempfile::tempdir().unwrap();
    // As an MPEG-TS clip indexes: the clock starts at 1.456778 s, the first keyframe
    // presents 23.222 ms into the media.
    let rows: Vec<(u64, bool)> = (0..50u64)
        .map(|i| (23_222 + i * 40_000, i % 25 == 0))
        .collect();
    let (c, data) = pack_rows(dir.path(), &rows, Some(1_456_778));
    let doc = seek_json(&c, "0");
    assert_eq!(doc["keyframe"]["block"], 0, "{doc}");
    assert_eq!(doc["before_first_keyframe"], true);
    assert_eq!(doc["start_time_us"], 1_456_778);
    let out = ok(h4fs().args(["cat", arg(&c), "--pts", "10ms"]));
    assert_eq!(out.stdout, data[..10]);
    let out = ok(h4fs().args(["inspect", arg(&c)]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("start     1456778 us"), "{text}");

    let m = TestMount::new(&c, &[]);
    assert_eq!(
        std::fs::read_link(m.path("by-pts/0")).unwrap(),
        Path::new("../blocks/000000")
    );
    assert_eq!(
        std::fs::read_link(m.path("by-pts/23221")).unwrap(),
        Path::new("../blocks/000000")
    );
    let meta: Value = serde_json::from_slice(&std::fs::read(m.path("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["start_time_us"], 1_456_778);
    drop(m);

    // Without a start time (older containers): start 0, and a time before the first
    // keyframe still gives the first keyframe.
    let older = dir.path().join("older");
    std::fs::create_dir(&older).unwrap();
    let (c, _) = pack_rows(&older, &rows, None);
    let doc = seek_json(&c, "0");
    assert_eq!(
        (
            doc["keyframe"]["block"].clone(),
            doc["start_time_us"].clone()
        ),
        (Value::from(0), Value::from(0))
    );
    let inspect = ok(h4fs().args(["inspect", "--json", arg(&c)]));
    let doc: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(doc["meta"].get("start_time_us").is_none());
}

#[test]
fn a_bad_start_time_line_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("media.bin");
    std::fs::write(&input, [0u8; 10]).unwrap();
    let index = dir.path().join("media.csv");
    for (csv, want) in [
        (
            "# start_time_us=1.5\noffset,size,pts_us,keyframe\n0,10,0,1\n",
            "media.csv:1: start_time_us \"1.5\" is not an integer",
        ),
        (
            "# start_time_us=1\n# start_time_us=2\noffset,size,pts_us,keyframe\n0,10,0,1\n",
            "media.csv:2: a second start_time_us line",
        ),
    ] {
        std::fs::write(&index, csv).unwrap();
        let out = dir.path().join("x.h4mk");
        let r = h4fs_run(&["pack", arg(&input), "--index", arg(&index), "-o", arg(&out)]);
        assert_eq!(r.status.code(), Some(3));
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains(want), "{err}");
        assert!(!out.exists());
    }
}
