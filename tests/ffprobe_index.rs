//! `scripts/ffprobe-index.sh` on real media: clips made with ffmpeg's test sources are
//! indexed, packed with `h4fs pack --index`, extracted and compared byte for byte, and
//! the container's blocks are checked against ffprobe's own packet list (cut positions,
//! keyframes, decode timestamps) and against `h4fs seek`.
//!
//! Needs `ffmpeg` and `ffprobe` on PATH (`.ci/run` installs them).

mod common;

use common::{arg, h4fs, ok, pack, run};
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

/// One packet of the indexed stream, as ffprobe lists it.
#[derive(Debug, Clone)]
struct Packet {
    pos: u64,
    /// Presentation time in microseconds from the format's start time (unclamped).
    pts: Option<i64>,
    key: bool,
}

/// `key=value|...` fields of one line of ffprobe's compact output.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split('|')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The format's start time in microseconds (0 when ffprobe does not know it).
fn start_time_us(media: &Path) -> i64 {
    let out = ok(Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=start_time"])
        .args(["-of", "csv=p=0"])
        .arg(media));
    let s = String::from_utf8(out.stdout).unwrap();
    match s.trim().parse::<f64>() {
        Ok(secs) => (secs * 1e6).round() as i64,
        Err(_) => 0,
    }
}

/// The first non-picture video stream's packets, sorted by position, with presentation
/// times relative to the format's start.
fn video_packets(media: &Path) -> Vec<Packet> {
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
    let (num, den): (i128, i128) = (num.parse().unwrap(), den.parse().unwrap());
    let start = start_time_us(media);
    let out = ok(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "V:0"])
        .args([
            "-show_entries",
            "packet=pos,pts,flags",
            "-of",
            "compact=p=0",
        ])
        .arg(media));
    let mut packets = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let Some(pos) = field(line, "pos").and_then(|v| v.parse().ok()) else {
            continue;
        };
        let pts = field(line, "pts")
            .and_then(|v| v.parse::<i128>().ok())
            .map(|t| (t * num * 1_000_000).div_euclid(den) as i64 - start);
        let key = field(line, "flags").is_some_and(|f| f.contains('K'));
        packets.push(Packet { pos, pts, key });
    }
    packets.sort_by_key(|p| p.pos);
    assert!(
        !packets.is_empty(),
        "ffprobe lists no video packets in {}",
        media.display()
    );
    packets
}

/// Index, pack, verify and extract `media`; return the opened container.
fn pack_and_roundtrip(media: &Path) -> Archive {
    let csv = media.with_extension("csv");
    let out = ok(Command::new(script()).arg(media));
    std::fs::write(&csv, &out.stdout).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let rows = h4fs::writer::parse_index_csv(&text, "csv")
        .expect("the script writes a CSV the packer accepts");
    assert_eq!(
        h4fs::writer::index_csv_start_time(&text, "csv").unwrap(),
        Some(start_time_us(media)),
        "the CSV records the format's start time"
    );
    let len = std::fs::metadata(media).unwrap().len();
    let last = rows.last().expect("at least one row");
    assert_eq!(rows[0].offset, 0, "the first block starts at byte 0");
    assert_eq!(last.offset + last.size, len, "the last block ends at EOF");

    let container = media.with_extension("h4mk");
    pack(media, &container, &["--index", arg(&csv)]);
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

/// Blocks start exactly at the packet positions (block 0 at byte 0 instead of the first
/// packet), keyframes are the K packets, a keyframe block's pts is its packet's
/// presentation time from the start of the media, and pts never decrease.
fn check_against_packets(a: &Archive, media: &Path) -> Vec<Packet> {
    let packets = video_packets(media);
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
    assert_eq!(
        packets.len() as u64,
        blocks.len(),
        "test clips have distinct packet positions"
    );
    let key_packets = packets.iter().filter(|p| p.key).count();
    assert!(
        key_packets >= 4,
        "a clip of 4 s or more with -g 25 at 25 fps has a keyframe a second"
    );
    let mut prev = 0;
    for (n, p) in packets.iter().enumerate() {
        let e = blocks.get(n as u64).unwrap();
        assert_eq!(e.keyframe, p.key, "block {n} keyframe flag");
        if p.key {
            let pts = p.pts.expect("keyframes have a pts").max(0) as u64;
            assert_eq!(e.pts_us, pts, "keyframe block {n}: its packet's pts");
        }
        assert!(e.pts_us >= prev, "block {n}: pts decreases");
        prev = e.pts_us;
    }
    packets
}

/// For times across the whole clip (every 10 ms), the keyframe found is the keyframe
/// packet presenting latest at or before the time (the first keyframe for a time before
/// it), and the decode chain reaches every packet presenting at or before the time.
fn check_seeks_by_presentation_time(a: &Archive, packets: &[Packet]) {
    let t = &a.tracks[0];
    let keys: Vec<(u64, i64)> = packets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.key)
        .map(|(n, p)| (n as u64, p.pts.unwrap()))
        .collect();
    let end = packets.iter().filter_map(|p| p.pts).max().unwrap() + 40_000;
    for time in (0..end).step_by(10_000) {
        let want = keys
            .iter()
            .rev()
            .find(|(_, pts)| *pts <= time)
            .unwrap_or(&keys[0])
            .0;
        let (_, got) = t.keyframe_at_or_before(time as u64).expect("a keyframe");
        assert_eq!(got, want, "keyframe for {time} us");
        let chain = t.decode_chain(time as u64).unwrap();
        assert_eq!(
            chain[0], want,
            "decode chain for {time} us starts at its keyframe"
        );
        let needed = packets
            .iter()
            .rposition(|p| p.pts.is_some_and(|pts| pts <= time))
            .map_or(want, |n| n as u64);
        assert!(
            *chain.last().unwrap() >= needed,
            "decode chain for {time} us ends at {:?}, before block {needed} that presents by then",
            chain.last()
        );
    }
}

fn seek_json(container: &Path, time: &str) -> Value {
    let out = ok(h4fs().arg("seek").arg("--json").arg(container).arg(time));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Make a 5 s clip with ffmpeg, index, pack and round-trip it, and check its blocks and
/// seeks against ffprobe's packets; also check the CLI's `seek` agrees at a few times
/// (typed as people type them) and that time 0 is the first keyframe.
fn check_clip(dir: &Path, args: &str, name: &str) -> (Archive, PathBuf, Vec<Packet>) {
    let media = ffmpeg(dir, args, name);
    let a = pack_and_roundtrip(&media);
    let packets = check_against_packets(&a, &media);
    check_seeks_by_presentation_time(&a, &packets);
    let container = media.with_extension("h4mk");
    let start = start_time_us(&media);
    let doc = inspect_json(&container);
    assert_eq!(
        doc["meta"]["start_time_us"], start,
        "META records the start"
    );
    assert_eq!(doc["start_time_us"], start);
    let t = &a.tracks[0];
    for (time, us) in [
        ("0", 0),
        ("2.5s", 2_500_000),
        ("1950ms", 1_950_000),
        ("0:04", 4_000_000),
    ] {
        let doc = seek_json(&container, time);
        let (_, want) = t.keyframe_at_or_before(us).unwrap();
        assert_eq!(
            doc["keyframe"]["block"], want,
            "seek {time} in {name}: {doc}"
        );
        assert_eq!(doc["pts_us"], us);
        assert_eq!(doc["past_end"], false);
    }
    let doc = seek_json(&container, "0");
    assert_eq!(
        doc["keyframe"]["block"], 0,
        "time 0 is the first keyframe: {doc}"
    );
    (a, container, packets)
}

fn inspect_json(container: &Path) -> Value {
    let out = ok(h4fs().arg("inspect").arg("--json").arg(container));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn mp4_with_b_frames_seeks_by_presentation_time() {
    let dir = tempfile::tempdir().unwrap();
    let (a, container, _) = check_clip(
        dir.path(),
        "-f lavfi -i testsrc=duration=5:size=160x120:rate=25 -f lavfi -i sine=frequency=440:duration=5 -c:v libx264 -g 25 -bf 3 -pix_fmt yuv420p -c:a aac -shortest",
        "clip.mp4",
    );
    // MP4 edit lists give the first packets negative dts; presentation starts at 0.
    assert_eq!(a.tracks[0].blocks.get(0).unwrap().pts_us, 0);
    // The keyframe at or before 1.95 s is the one at 1 s, not the one at 2 s whose
    // decode time is a few frames earlier.
    let doc = seek_json(&container, "1950000");
    assert_eq!(doc["keyframe"]["pts_us"], 1_000_000, "{doc}");
    let doc = seek_json(&container, "2s");
    assert_eq!(doc["keyframe"]["pts_us"], 2_000_000, "{doc}");
}

#[test]
fn fragmented_mp4_with_b_frames_seeks_by_presentation_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_, container, _) = check_clip(
        dir.path(),
        "-f lavfi -i testsrc2=duration=5:size=160x120:rate=25 -c:v libx264 -g 25 -bf 2 -pix_fmt yuv420p -movflags frag_keyframe+empty_moov",
        "clip.mp4",
    );
    let doc = seek_json(&container, "1.95s");
    assert_eq!(doc["keyframe"]["pts_us"], 1_000_000, "{doc}");
}

#[test]
fn mkv_with_b_frames_seeks_by_presentation_time() {
    let dir = tempfile::tempdir().unwrap();
    check_clip(
        dir.path(),
        "-f lavfi -i testsrc2=duration=5:size=160x120:rate=25 -f lavfi -i sine=frequency=1000:duration=5 -c:v libx264 -g 25 -bf 2 -pix_fmt yuv420p -c:a aac -shortest",
        "clip.mkv",
    );
}

#[test]
fn mpeg_ts_starting_at_1_4_s_seeks_from_the_start_of_the_media() {
    let dir = tempfile::tempdir().unwrap();
    let (a, container, packets) = check_clip(
        dir.path(),
        "-f lavfi -i testsrc2=duration=5:size=160x120:rate=25 -f lavfi -i sine=duration=5 -c:v libx264 -g 25 -bf 2 -pix_fmt yuv420p -c:a aac -shortest -f mpegts",
        "clip.ts",
    );
    let start = a.start_time_us();
    assert!(start >= 1_400_000, "MPEG-TS clocks start at 1.4 s: {start}");
    // The first keyframe presents a little after the start (audio starts first).
    assert!(packets[0].pts.unwrap() < 100_000);
    // Time 0 and a time before the first keyframe both give it; exit 0.
    let doc = seek_json(&container, "0");
    assert_eq!(doc["before_first_keyframe"], a.tracks[0].seek[0].pts_us > 0);
    assert_eq!(doc["start_time_us"], start);
    // The stream's absolute clock is not what people type: 3 s means 3 s into the media.
    let doc = seek_json(&container, "3s");
    let key = doc["keyframe"]["pts_us"].as_u64().unwrap();
    assert!((2_000_000..=3_000_000).contains(&key), "{doc}");
}

#[test]
fn webm_starting_at_7_ms_seeks_from_the_start_of_the_media() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _, _) = check_clip(
        dir.path(),
        "-f lavfi -i testsrc2=duration=5:size=160x120:rate=25 -f lavfi -i sine=duration=5 -c:v libvpx-vp9 -g 25 -deadline realtime -c:a libopus -shortest",
        "clip.webm",
    );
    assert_ne!(a.start_time_us(), 0, "WebM with Opus starts off 0");
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
    let packets = video_packets(&cut);
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

    // Text that ffprobe reads as ANSI art (format "tty"): the README itself, and a .txt.
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "some notes\n".repeat(500)).unwrap();
    for text in [readme.as_path(), txt.as_path()] {
        let out = run(Command::new(script()).arg(text));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", text.display());
        assert!(out.stdout.is_empty(), "no CSV for {}", text.display());
        assert!(
            err.contains("not audio or video") || err.contains("cannot read it as media"),
            "{err}"
        );
    }
    let out = run(Command::new(script()).arg(&txt));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notes.txt: not audio or video") && err.contains("\"tty\""),
        "{err}"
    );
    // A still picture is not video either.
    let png = ffmpeg(
        dir.path(),
        "-f lavfi -i testsrc=size=64x48 -frames:v 1",
        "still.png",
    );
    let out = run(Command::new(script()).arg(&png));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("still.png: not audio or video (a still image"),
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

/// A stand-in `ffprobe` that reports a fixed stream, format and packet list, to drive
/// the script through cases real encoders rarely produce.
fn fake_ffprobe(dir: &Path, time_base: &str, format: &str, packets: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(dir.join("packets.txt"), packets).unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n  *V:0*stream=*) echo 'index=0|codec_name=h264|time_base={time_base}' ;;\n  *stream=*) ;;\n  *format=*) echo '{format}' ;;\n  *packet=*) cat '{}' ;;\nesac\n",
        dir.join("packets.txt").display()
    );
    let path = bin.join("ffprobe");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn run_with_fake(
    dir: &Path,
    time_base: &str,
    format: &str,
    packets: &str,
    media_len: usize,
) -> String {
    let bin = fake_ffprobe(dir, time_base, format, packets);
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
    // a negative time; a missing time; a time that goes back; the first packet not a
    // keyframe; no pts at all (the dts stands in); no start time.
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
    let csv = run_with_fake(
        dir.path(),
        "1/1000",
        "format_name=mpegts|start_time=N/A",
        packets,
        2000,
    );
    // Block 900 presents at 120 ms, but the packet after it at 100 ms: the block records
    // 100 ms (the earliest time from it on), and its packets finish at 160 ms.
    assert_eq!(
        csv,
        "# start_time_us=0\n\
         offset,size,pts_us,keyframe,duration_us\n\
         0,500,0,1,40000\n\
         500,200,40000,1,40000\n\
         700,200,80000,0,40000\n\
         900,200,100000,0,60000\n\
         1100,900,100000,0,40000\n"
    );
}

#[test]
fn presentation_times_with_b_frames_a_start_time_and_an_open_gop() {
    let dir = tempfile::tempdir().unwrap();
    // Decode order I P B B | I(open GOP) B B P, 40 ms frames, clock starting at 1 s.
    // The second keyframe is followed by two B-frames that present before it.
    let packets = "\
pos=0|pts=1000|dts=960|duration=40|flags=K_
pos=10|pts=1120|dts=1000|duration=40|flags=__
pos=20|pts=1040|dts=1040|duration=40|flags=__
pos=30|pts=1080|dts=1080|duration=40|flags=__
pos=40|pts=1240|dts=1120|duration=40|flags=K_
pos=50|pts=1160|dts=1160|duration=40|flags=__
pos=60|pts=1200|dts=1200|duration=40|flags=__
pos=70|pts=1280|dts=1240|duration=40|flags=__
";
    let csv = run_with_fake(
        dir.path(),
        "1/1000",
        "format_name=mpegts|start_time=1.000000",
        packets,
        80,
    );
    assert_eq!(
        csv,
        "# start_time_us=1000000\n\
         offset,size,pts_us,keyframe,duration_us\n\
         0,10,0,1,40000\n\
         10,10,40000,0,120000\n\
         20,10,40000,0,40000\n\
         30,10,80000,0,40000\n\
         40,10,240000,1,40000\n\
         50,10,240000,0,0\n\
         60,10,240000,0,0\n\
         70,10,280000,0,40000\n"
    );
    // A negative start time (Opus pre-skip in WebM) counts the same way.
    let csv = run_with_fake(
        dir.path(),
        "1/1000",
        "format_name=matroska,webm|start_time=-0.007000",
        "pos=0|pts=7|duration=40|flags=K_\n",
        10,
    );
    assert_eq!(
        csv,
        "# start_time_us=-7000\noffset,size,pts_us,keyframe,duration_us\n0,10,14000,1,40000\n"
    );
}

#[test]
fn timestamps_convert_exactly_with_the_stream_time_base() {
    let dir = tempfile::tempdir().unwrap();
    // NTSC time base; 2,000,000,010 is a pts where floor(pts * 1001e6 / 30000) in
    // floating point comes out one too high.
    let pts = [0i64, 1, 123_456_789, 2_000_000_010, 2_999_999_999];
    let packets: String = pts
        .iter()
        .enumerate()
        .map(|(i, p)| format!("pos={}|pts={p}|duration=1|flags=K_\n", i * 10))
        .collect();
    let csv = run_with_fake(dir.path(), "1001/30000", "", &packets, 100);
    let rows: Vec<&str> = csv.lines().skip(2).collect();
    let us = |t: i64| i128::from(t) * 1001 * 1_000_000 / 30000;
    for (row, p) in rows.iter().zip(pts) {
        let got = row.split(',').nth(2).unwrap();
        assert_eq!(got, us(p).to_string(), "pts {p}: {row}");
        assert_eq!(
            row.split(',').nth(4).unwrap(),
            (us(p + 1) - us(p)).to_string(),
            "duration: to the end of one tick of 1001/30000 s"
        );
    }
    assert_eq!(rows.len(), pts.len());
}

/// The README's line containing `needle`, without its trailing comment.
fn readme_line(needle: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("the README has no line with {needle:?}"));
    line.split(" # ").next().unwrap().trim().to_string()
}

/// Run a shell command line in `dir` with the h4fs under test first on PATH.
fn shell(dir: &Path, line: &str) -> std::process::Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_h4fs")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("PATH", path)
        .stdin(std::process::Stdio::null()))
}

#[test]
fn readme_examples_of_decoding_from_a_time_work() {
    let dir = tempfile::tempdir().unwrap();
    // MPEG-TS: the decode chain from a time is itself a stream ffprobe reads.
    let ts = ffmpeg(
        dir.path(),
        "-f lavfi -i testsrc2=duration=5:size=160x120:rate=25 -f lavfi -i sine=duration=5 -c:v libx264 -g 25 -bf 2 -pix_fmt yuv420p -c:a aac -shortest -f mpegts",
        "clip.ts",
    );
    pack_and_roundtrip(&ts);
    let line = readme_line("h4fs cat clip.h4mk --pts 2s --chain | ffprobe -");
    assert!(line.starts_with("h4fs cat clip.h4mk --pts"), "{line}");
    let out = shell(dir.path(), &line);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{line}: {err}");
    assert!(err.contains("Video: h264"), "{line}: {err}");

    // Any format: ffmpeg seeks in the mount's stream.
    for name in ["clip.mp4", "clip.mkv"] {
        let sub = dir.path().join(name.replace('.', "-"));
        std::fs::create_dir(&sub).unwrap();
        let media = ffmpeg(
            &sub,
            "-f lavfi -i testsrc2=duration=5:size=160x120:rate=25 -c:v libx264 -g 25 -bf 2 -pix_fmt yuv420p",
            name,
        );
        let a = pack_and_roundtrip(&media);
        drop(a);
        let m = common::TestMount::new(&media.with_extension("h4mk"), &[]);
        let line = readme_line("ffmpeg -ss 2 -i /mnt/clip/stream");
        let line = line.replace(
            "/mnt/clip",
            m.path("").to_str().unwrap().trim_end_matches('/'),
        );
        let out = shell(&sub, &line);
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let png = std::fs::metadata(sub.join("frame.png")).unwrap();
        assert!(png.len() > 100, "{name}: frame.png has {} bytes", png.len());
    }
}
