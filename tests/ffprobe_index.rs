//! `scripts/ffprobe-index.sh` on real media: clips made with ffmpeg's test sources are
//! indexed, packed with `h4fs pack --index`, extracted and compared byte for byte, and
//! the container's blocks are checked against ffprobe's own packet list (cut positions,
//! keyframes, decode timestamps) and against `h4fs seek`.
//!
//! Needs `ffmpeg` and `ffprobe` on PATH (`.ci/run` installs them).

mod common;

use common::{ok, run};
use h4fs::Archive;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ffprobe-index.sh")
}

/// Run ffmpeg with whitespace-separated `args`, writing `dir/name`.
fn ffmpeg(dir: &Path, args: &str, name: &str) -> PathBuf {
    let path = dir.join(name);
    ok(Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args.split_whitespace())
        .arg(&path));
    path
}

fn h4fs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_h4fs"))
}

/// One packet of the indexed stream, as ffprobe lists it.
#[derive(Debug, Clone)]
struct Packet {
    pos: u64,
    dts: Option<i64>,
    key: bool,
}

/// The first non-picture video stream's packets and its time base (num, den).
fn video_packets(media: &Path) -> (Vec<Packet>, (i128, i128)) {
    let out = ok(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "V:0"])
        .args(["-show_entries", "stream=time_base", "-of", "csv=p=0"])
        .arg(media));
    let tb = String::from_utf8(out.stdout).unwrap();
    // MPEG-TS lists the stream once per program too: take the first line.
    let first = tb
        .lines()
        .find(|l| !l.trim().is_empty())
        .expect("a time base");
    let (num, den) = first.trim().split_once('/').expect("time base num/den");
    let tb = (num.parse().unwrap(), den.parse().unwrap());
    let out = ok(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "V:0"])
        .args([
            "-show_entries",
            "packet=pos,dts,flags",
            "-of",
            "compact=p=0",
        ])
        .arg(media));
    let mut packets = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (mut pos, mut dts, mut key) = (None, None, false);
        for kv in line.split('|') {
            match kv.split_once('=') {
                Some(("pos", v)) => pos = v.parse().ok(),
                Some(("dts", v)) => dts = v.parse().ok(),
                Some(("flags", v)) => key = v.contains('K'),
                _ => {}
            }
        }
        if let Some(pos) = pos {
            packets.push(Packet { pos, dts, key });
        }
    }
    packets.sort_by_key(|p| p.pos);
    assert!(
        !packets.is_empty(),
        "ffprobe lists no video packets in {}",
        media.display()
    );
    (packets, tb)
}

/// Index, pack, verify and extract `media`; return the opened container.
fn pack_and_roundtrip(media: &Path) -> Archive {
    let csv = media.with_extension("csv");
    let out = ok(Command::new(script()).arg(media));
    std::fs::write(&csv, &out.stdout).unwrap();
    let rows = h4fs::writer::parse_index_csv(&String::from_utf8(out.stdout).unwrap(), "csv")
        .expect("the script writes a CSV the packer accepts");
    let len = std::fs::metadata(media).unwrap().len();
    let last = rows.last().expect("at least one row");
    assert_eq!(rows[0].offset, 0, "the first block starts at byte 0");
    assert_eq!(last.offset + last.size, len, "the last block ends at EOF");

    let container = media.with_extension("h4mk");
    ok(h4fs()
        .arg("pack")
        .arg(media)
        .arg("--index")
        .arg(&csv)
        .arg("-o")
        .arg(&container));
    ok(h4fs().arg("verify").arg(&container));
    let extracted = media.with_extension("extracted");
    ok(h4fs()
        .arg("extract")
        .arg(&container)
        .arg("-o")
        .arg(&extracted));
    assert!(
        std::fs::read(media).unwrap() == std::fs::read(&extracted).unwrap(),
        "extracting {} does not give back the original bytes",
        container.display()
    );
    Archive::open(&container).unwrap()
}

fn dts_us(dts: i64, (num, den): (i128, i128)) -> u64 {
    (i128::from(dts.max(0)) * num * 1_000_000 / den) as u64
}

/// Blocks start exactly at the packet positions (block 0 at byte 0 instead of the first
/// packet), keyframes are the K packets, pts are the clamped, non-decreasing dts.
fn check_against_packets(a: &Archive, media: &Path) {
    let (packets, tb) = video_packets(media);
    assert!(packets[0].key, "test clips start with a keyframe");
    let blocks = &a.tracks[0].blocks;
    let starts: Vec<u64> = (0..blocks.len())
        .map(|n| blocks.get(n).unwrap().stream_offset)
        .collect();
    let mut want: BTreeSet<u64> = packets.iter().map(|p| p.pos).collect();
    want.remove(&packets[0].pos);
    want.insert(0);
    assert_eq!(
        starts.iter().copied().collect::<BTreeSet<_>>(),
        want,
        "block starts of {} are not the packet positions",
        media.display()
    );
    assert_eq!(starts.len(), want.len(), "one block per packet position");

    let keyframes = (0..blocks.len())
        .filter(|&n| blocks.get(n).unwrap().keyframe)
        .count();
    let key_packets = packets.iter().filter(|p| p.key).count();
    assert_eq!(
        keyframes,
        key_packets,
        "keyframe blocks vs K packets in {}",
        media.display()
    );
    assert!(
        key_packets >= 10,
        "a 10 s clip with -g 25 at 25 fps has 10 keyframes"
    );

    assert_eq!(
        packets.len() as u64,
        blocks.len(),
        "test clips have distinct packet positions"
    );
    let mut prev = 0u64;
    for (n, p) in packets.iter().enumerate() {
        let e = blocks.get(n as u64).unwrap();
        let want = p.dts.map_or(prev, |d| dts_us(d, tb).max(prev));
        assert_eq!(e.pts_us, want, "block {n} pts vs packet dts {:?}", p.dts);
        assert_eq!(e.keyframe, p.key || n == 0, "block {n} keyframe flag");
        prev = want;
    }
}

fn seek_json(container: &Path, pts: u64) -> Value {
    let out = ok(h4fs()
        .arg("seek")
        .arg("--json")
        .arg(container)
        .arg(pts.to_string()));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check_seek_5s(media: &Path) {
    let doc = seek_json(&media.with_extension("h4mk"), 5_000_000);
    let key = &doc["keyframe"];
    assert_eq!(
        key["keyframe"],
        Value::Bool(true),
        "seek result is a keyframe block: {doc}"
    );
    let pts = key["pts_us"].as_u64().expect("keyframe pts");
    assert!(pts <= 5_000_000, "keyframe at {pts} us is after 5 s");
    // Keyframes come every second; the one at or before 5 s is the 5 s frame (its dts
    // may be a few frames earlier).
    assert!(
        pts > 4_000_000,
        "keyframe at {pts} us is not the latest one before 5 s"
    );
    let containing = doc["containing"]["pts_us"]
        .as_u64()
        .expect("containing pts");
    assert!(pts <= containing && containing <= 5_000_000, "{doc}");
}

#[test]
fn mp4_h264_aac_clip_is_cut_at_packets() {
    let dir = tempfile::tempdir().unwrap();
    let media = ffmpeg(
        dir.path(),
        "-f lavfi -i testsrc=duration=10:size=320x240:rate=25 -f lavfi -i sine=frequency=440:duration=10 -c:v libx264 -g 25 -pix_fmt yuv420p -c:a aac -shortest",
        "clip.mp4",
    );
    let a = pack_and_roundtrip(&media);
    check_against_packets(&a, &media);
    check_seek_5s(&media);
    // MP4 edit lists give the first packets negative dts: they are clamped to 0.
    assert_eq!(a.tracks[0].blocks.get(0).unwrap().pts_us, 0);
}

#[test]
fn mkv_clip_with_b_frames_is_cut_at_packets() {
    let dir = tempfile::tempdir().unwrap();
    let media = ffmpeg(
        dir.path(),
        "-f lavfi -i testsrc2=duration=10:size=320x240:rate=25 -f lavfi -i sine=frequency=1000:duration=10 -c:v libx264 -g 25 -bf 2 -pix_fmt yuv420p -c:a aac -shortest",
        "clip.mkv",
    );
    let a = pack_and_roundtrip(&media);
    check_against_packets(&a, &media);
    check_seek_5s(&media);
}

#[test]
fn stream_starting_mid_gop_gets_a_keyframe_block_0() {
    let dir = tempfile::tempdir().unwrap();
    let ts = ffmpeg(
        dir.path(),
        "-f lavfi -i testsrc=duration=4:size=160x120:rate=25 -c:v libx264 -g 25 -f mpegts",
        "whole.ts",
    );
    // Drop the first 40 transport packets: the stream now starts inside the first GOP.
    let bytes = std::fs::read(&ts).unwrap();
    let cut = dir.path().join("cut.ts");
    std::fs::write(&cut, &bytes[188 * 40..]).unwrap();
    let (packets, _) = video_packets(&cut);
    assert!(
        !packets[0].key,
        "the cut stream must not start with a keyframe"
    );
    let first_key = packets
        .iter()
        .position(|p| p.key)
        .expect("a keyframe remains");

    let a = pack_and_roundtrip(&cut);
    let blocks = &a.tracks[0].blocks;
    let b0 = blocks.get(0).unwrap();
    assert!(b0.keyframe);
    // Block 0 holds everything up to and including the first keyframe packet.
    assert_eq!(
        blocks.get(1).unwrap().stream_offset,
        packets[first_key + 1].pos
    );
    let keyframes = (0..blocks.len())
        .filter(|&n| blocks.get(n).unwrap().keyframe)
        .count();
    assert_eq!(keyframes, packets.iter().filter(|p| p.key).count());
}

#[test]
fn audio_only_file_uses_the_audio_stream() {
    let dir = tempfile::tempdir().unwrap();
    let media = ffmpeg(
        dir.path(),
        "-f lavfi -i sine=duration=2 -c:a libmp3lame",
        "tone.mp3",
    );
    let a = pack_and_roundtrip(&media);
    let blocks = &a.tracks[0].blocks;
    assert!(
        blocks.len() > 50,
        "a 2 s MP3 has one block per frame, got {}",
        blocks.len()
    );
    let last = blocks.get(blocks.len() - 1).unwrap();
    assert!(
        last.pts_us > 1_900_000 && last.pts_us < 2_100_000,
        "last pts {}",
        last.pts_us
    );
}

#[test]
fn bad_input_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mp4");
    let out = run(Command::new(script()).arg(&missing));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    assert!(out.stdout.is_empty());

    // (Not a .txt: ffmpeg reads any text file as an ANSI-art video.)
    let text = dir.path().join("notes.json");
    std::fs::write(&text, "{\"not\": \"media\"}\n").unwrap();
    let out = run(Command::new(script()).arg(&text));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notes.json") && err.contains("cannot read it as media"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let empty = dir.path().join("empty.mkv");
    std::fs::write(&empty, b"").unwrap();
    let out = run(Command::new(script()).arg(&empty));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty file"));

    let out = run(Command::new(script()).arg(dir.path()));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));

    let out = run(&mut Command::new(script()));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

/// A stand-in `ffprobe` that reports a fixed stream and packet list, to drive the
/// script through cases real encoders rarely produce.
fn fake_ffprobe(dir: &Path, time_base: &str, packets: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(dir.join("packets.txt"), packets).unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n  *V:0*stream=*) echo 'index=0|time_base={time_base}' ;;\n  *stream=*) ;;\n  *packet=*) cat '{}' ;;\nesac\n",
        dir.join("packets.txt").display()
    );
    let path = bin.join("ffprobe");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn run_with_fake(dir: &Path, time_base: &str, packets: &str, media_len: usize) -> String {
    let bin = fake_ffprobe(dir, time_base, packets);
    let media = dir.join("media.bin");
    std::fs::write(&media, vec![0u8; media_len]).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = ok(Command::new(script()).arg(&media).env("PATH", path));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn packets_without_positions_shared_positions_and_odd_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    // Out of file order; no position; position past EOF; two packets at one position;
    // a negative dts; a missing dts; a dts that goes back; the first packet not a
    // keyframe.
    let packets = "\
pos=N/A|dts=0|duration=40|flags=K_
pos=100|dts=-80|duration=40|flags=__
pos=300|dts=0|duration=40|flags=K_

pos=500|dts=N/A|duration=N/A|flags=__
pos=500|dts=40|duration=40|flags=K_
pos=900|dts=120|duration=40|flags=__
pos=700|dts=80|duration=40|flags=__
pos=1100|dts=100|duration=40|flags=__
pos=5000|dts=200|duration=40|flags=K_
";
    let csv = run_with_fake(dir.path(), "1/1000", packets, 2000);
    assert_eq!(
        csv,
        "offset,size,pts_us,keyframe,duration_us\n\
         0,500,0,1,40000\n\
         500,200,40000,1,40000\n\
         700,200,80000,0,40000\n\
         900,200,120000,0,40000\n\
         1100,900,120000,0,40000\n"
    );
}

#[test]
fn timestamps_convert_exactly_with_the_stream_time_base() {
    let dir = tempfile::tempdir().unwrap();
    // NTSC time base; 2,000,000,010 is a dts where floor(dts * 1001e6 / 30000) in
    // floating point comes out one too high.
    let dts = [0i64, 1, 123_456_789, 2_000_000_010, 2_999_999_999];
    let packets: String = dts
        .iter()
        .enumerate()
        .map(|(i, d)| format!("pos={}|dts={d}|duration=1|flags=K_\n", i * 10))
        .collect();
    let csv = run_with_fake(dir.path(), "1001/30000", &packets, 100);
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    for (row, d) in rows.iter().zip(dts) {
        let want = i128::from(d) * 1001 * 1_000_000 / 30000;
        let got = row.split(',').nth(2).unwrap();
        assert_eq!(got, want.to_string(), "dts {d}: {row}");
        assert_eq!(
            row.split(',').nth(4).unwrap(),
            "33366",
            "duration: one tick of 1001/30000 s"
        );
    }
    assert_eq!(rows.len(), dts.len());
}
