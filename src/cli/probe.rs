//! `pack --media`: the block plan of a media file from ffprobe's packet list.
//!
//! A Rust copy of the rules of `scripts/ffprobe-index.sh` (which stays for pipelines
//! that want the CSV; its header comment and docs/FORMAT.md section 4.3 are the
//! contract): `pack --media` and the script followed by `pack --index` give the same
//! container byte for byte (`tests/cli.rs` checks it). Change the two together.
//!
//! * Input: refused unless ffprobe reads it as media with a video or audio stream; text
//!   (format `tty`, codec `ansi`) and still images (format `image2` or `*_pipe`) are
//!   refused too.
//! * Stream: the first video stream that is not an attached picture (cover art), else
//!   the first audio stream. Packets of other streams stay inside the block of the
//!   preceding packet of the chosen stream.
//! * Cut points: the byte position (`pos`) of every packet of that stream, sorted by
//!   position; packets without a position (or past the end) are skipped; packets sharing
//!   a position form one block (keyframe if any is one, earliest time, latest end).
//!   Block 0 starts at byte 0 and extends through the first keyframe packet, whose time
//!   it takes.
//! * Start: the format's start time (what players and `ffmpeg -ss` count from), in
//!   microseconds, 0 when unknown; recorded in META as `start_time_us`.
//! * Times: a packet's PRESENTATION time (pts; dts when it has no pts), converted to
//!   microseconds exactly (rounded down), minus the start, clamped at 0. A keyframe
//!   block records its own time; any other block the earliest time of itself and every
//!   later block (B-frames present before packets stored ahead of them). A time below
//!   the previous block's is raised to it, so times never decrease; a block with no
//!   time takes the previous block's (0 at the start).
//! * Durations: how long after its time the block's packets finish presenting (the
//!   latest pts + duration, minus the block's time, at least 0); none when unknown.

use crate::writer::{IndexRow, MAX_BLOCK};
use anyhow::{Context, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

/// What the probe found: the block plan and the media's start time.
#[derive(Debug)]
pub struct MediaPlan {
    pub rows: Vec<IndexRow>,
    /// The format's start time in microseconds (may be negative).
    pub start_time_us: i64,
    /// "video" or "audio".
    pub codec_type: String,
    pub codec_name: String,
}

/// One packet of the chosen stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packet {
    pos: u64,
    /// Presentation time (dts when pts is unknown), in time-base units.
    time: Option<i64>,
    /// Duration in time-base units (not negative).
    duration: Option<i64>,
    key: bool,
}

/// A time base `num/den`, both positive.
#[derive(Debug, Clone, Copy)]
struct TimeBase {
    num: i128,
    den: i128,
}

impl TimeBase {
    fn parse(s: &str) -> Option<TimeBase> {
        let (n, d) = s.split_once('/')?;
        let (num, den) = (n.parse::<i128>().ok()?, d.parse::<i128>().ok()?);
        (num > 0 && den > 0 && num < 1 << 40 && den < 1 << 40).then_some(TimeBase { num, den })
    }

    /// `floor(t * num * 1e6 / den)`.
    fn to_us_wide(self, t: i128) -> i128 {
        t.saturating_mul(self.num)
            .saturating_mul(1_000_000)
            .div_euclid(self.den)
    }
}

fn ffprobe(args: &[&str], media: &Path) -> Command {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error"]).args(args).arg("--").arg(media);
    cmd
}

fn not_found(e: &std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "--media runs ffprobe, which is not installed (install ffmpeg, e.g. \
             `apt-get install ffmpeg`), or pass --index FILE.csv"
        )
    } else {
        anyhow::anyhow!("cannot run ffprobe: {e}")
    }
}

/// The format's start time in microseconds, as the script reads it: decimal seconds
/// with exactly six decimals ("1.400000", "-0.007000") or whole seconds; 0 otherwise
/// ("N/A").
fn parse_start_us(s: &str) -> i64 {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, "000000"));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) || frac.len() != 6 {
        return 0;
    }
    let us = int
        .parse::<i64>()
        .ok()
        .and_then(|w| w.checked_mul(1_000_000))
        .and_then(|w| w.checked_add(frac.parse().ok()?));
    match us {
        Some(us) if neg => -us,
        Some(us) => us,
        None => 0,
    }
}

/// The chosen stream: (index, time base, codec type, codec name), and the start time.
fn choose_stream(media: &Path) -> anyhow::Result<(u64, TimeBase, String, String, i64)> {
    let out = ffprobe(
        &[
            "-show_entries",
            "format=format_name,start_time:stream=index,codec_type,codec_name,time_base:stream_disposition=attached_pic",
            "-of",
            "json",
        ],
        media,
    )
    .output()
    .map_err(|e| not_found(&e))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg: String = msg.trim().chars().take(400).collect();
        bail!(
            "{}: ffprobe cannot read it as media: {}",
            media.display(),
            if msg.is_empty() {
                "unknown error"
            } else {
                &msg
            }
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("ffprobe printed invalid JSON")?;
    let format = v["format"]["format_name"].as_str().unwrap_or("");
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let is = |s: &Value, kind: &str| {
        s["codec_type"] == kind && s["disposition"]["attached_pic"].as_i64() != Some(1)
    };
    let chosen = streams
        .iter()
        .find(|s| is(s, "video"))
        .or_else(|| streams.iter().find(|s| is(s, "audio")))
        .with_context(|| {
            format!(
                "{}: not audio or video: ffprobe finds no video or audio stream in it",
                media.display()
            )
        })?;
    let codec = chosen["codec_name"].as_str().unwrap_or("");
    // ffprobe opens nearly anything: text as ANSI art (tty), a single picture as a
    // one-frame video (image2, *_pipe). Those are not audio or video.
    let format_codec = format!("{format},{codec}");
    if format_codec.starts_with("tty,") || format_codec.ends_with(",ansi") {
        bail!(
            "{}: not audio or video (ffprobe reads it as text, format \"{format}\")",
            media.display()
        );
    }
    if format_codec.starts_with("image2,") || format_codec.contains("_pipe,") {
        bail!(
            "{}: not audio or video (a still image, format \"{format}\")",
            media.display()
        );
    }
    let index = chosen["index"]
        .as_u64()
        .context("ffprobe gave a stream without an index")?;
    let tb_text = chosen["time_base"].as_str().unwrap_or("");
    let tb = TimeBase::parse(tb_text).with_context(|| {
        format!(
            "{}: stream {index} has no usable time base (\"{tb_text}\")",
            media.display()
        )
    })?;
    let start = v["format"]["start_time"].as_str().map_or(0, parse_start_us);
    Ok((
        index,
        tb,
        chosen["codec_type"].as_str().unwrap_or("").to_string(),
        chosen["codec_name"].as_str().unwrap_or("").to_string(),
        start,
    ))
}

/// Parse one line of `-of compact=p=0` packet output (`pts=..|dts=..|...`).
fn parse_packet(line: &str, size: u64) -> Option<Packet> {
    let (mut pos, mut pts, mut dts, mut dur, mut key) = (None, None, None, None, false);
    for field in line.split('|') {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        match k {
            "pos" => pos = v.parse::<u64>().ok(),
            "pts" => pts = v.parse::<i64>().ok(),
            "dts" => dts = v.parse::<i64>().ok(),
            "duration" => dur = v.parse::<i64>().ok().filter(|d| *d >= 0),
            "flags" => key = v.contains('K'),
            _ => {}
        }
    }
    let pos = pos.filter(|p| *p < size)?;
    Some(Packet {
        pos,
        time: pts.or(dts),
        duration: dur,
        key,
    })
}

/// Probe `media` (of `size` bytes) and build its block plan.
pub fn plan(media: &Path, size: u64) -> anyhow::Result<MediaPlan> {
    if size == 0 {
        bail!("{}: empty file, not media", media.display());
    }
    let (index, tb, codec_type, codec_name, start_us) = choose_stream(media)?;
    let idx = index.to_string();
    let mut child = ffprobe(
        &[
            "-select_streams",
            &idx,
            "-show_entries",
            "packet=pts,dts,duration,pos,flags",
            "-of",
            "compact=p=0",
        ],
        media,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .map_err(|e| not_found(&e))?;
    let mut packets: Vec<(Packet, usize)> = Vec::new();
    let stdout = child.stdout.take().expect("piped");
    // Its messages are read alongside, so a chatty ffprobe never blocks on a full pipe;
    // only the first 64 KiB are kept.
    let mut stderr = child.stderr.take().expect("piped");
    let errs = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut kept);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        kept
    });
    let mut read_err = None;
    for (n, line) in BufReader::new(stdout).lines().enumerate() {
        match line {
            Ok(line) => {
                if let Some(p) = parse_packet(&line, size) {
                    packets.push((p, n));
                }
            }
            Err(e) => {
                read_err = Some(e);
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().context("waiting for ffprobe")?;
    let stderr = errs.join().unwrap_or_default();
    if let Some(e) = read_err {
        return Err(anyhow::Error::new(e).context("reading ffprobe's packet list"));
    }
    if !status.success() {
        let msg = String::from_utf8_lossy(&stderr);
        let msg: String = msg.trim().chars().take(400).collect();
        bail!(
            "{}: ffprobe failed to list packets: {}",
            media.display(),
            if msg.is_empty() {
                "unknown error"
            } else {
                &msg
            }
        );
    }
    packets.sort_by_key(|(p, n)| (p.pos, *n));
    let packets: Vec<Packet> = packets.into_iter().map(|(p, _)| p).collect();
    let rows = build_rows(&packets, size, tb, start_us).with_context(|| {
        format!(
            "{}: stream {index} ({codec_type} {codec_name})",
            media.display()
        )
    })?;
    Ok(MediaPlan {
        rows,
        start_time_us: start_us,
        codec_type,
        codec_name,
    })
}

/// A block being formed: packets at one position.
#[derive(Debug, Clone, Copy)]
struct Merged {
    pos: u64,
    key: bool,
    /// Earliest presentation time, µs from the start.
    us: Option<u64>,
    /// Latest end of presentation (time + duration), µs from the start.
    end: Option<u64>,
}

/// Blocks from packets sorted by position; see the module docs for the rules.
fn build_rows(
    packets: &[Packet],
    size: u64,
    tb: TimeBase,
    start_us: i64,
) -> anyhow::Result<Vec<IndexRow>> {
    let rel = |t: i128| -> u64 {
        (tb.to_us_wide(t) - i128::from(start_us)).clamp(0, i128::from(i64::MAX)) as u64
    };
    let mut merged: Vec<Merged> = Vec::new();
    // The first block whose first packet is a keyframe (as the script counts it).
    let mut first_key = None;
    for p in packets {
        let us = p.time.map(|t| rel(t.into()));
        let end = match (p.time, p.duration) {
            (Some(t), Some(d)) => Some(rel(i128::from(t) + i128::from(d))),
            _ => None,
        };
        match merged.last_mut() {
            Some(m) if m.pos == p.pos => {
                m.key |= p.key;
                m.us = match (m.us, us) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                m.end = match (m.end, end) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
            _ => {
                if p.key && first_key.is_none() {
                    first_key = Some(merged.len());
                }
                merged.push(Merged {
                    pos: p.pos,
                    key: p.key,
                    us,
                    end,
                });
            }
        }
    }
    if merged.is_empty() {
        bail!("no packets with byte positions");
    }
    // Block 0 runs from byte 0 through the first keyframe packet.
    let first = first_key.unwrap_or(0);
    let blocks = &merged[first..];
    // Earliest time of each block and every later one.
    let mut later: Vec<Option<u64>> = vec![None; blocks.len()];
    let mut min: Option<u64> = None;
    for (i, b) in blocks.iter().enumerate().rev() {
        if let Some(u) = b.us {
            min = Some(min.map_or(u, |m| m.min(u)));
        }
        later[i] = min;
    }
    let mut rows: Vec<IndexRow> = Vec::with_capacity(blocks.len());
    let mut prev_us = 0u64;
    for (i, b) in blocks.iter().enumerate() {
        let offset = if i == 0 { 0 } else { b.pos };
        let stop = blocks.get(i + 1).map_or(size, |n| n.pos);
        let key = i == 0 || b.key;
        let want = match (key, b.us) {
            (true, Some(u)) => Some(u),
            _ => later[i],
        };
        let us = want.map_or(prev_us, |w| w.max(prev_us));
        prev_us = us;
        let len = stop - offset;
        if len > MAX_BLOCK {
            bail!(
                "a packet block of {len} bytes at offset {offset} exceeds the {MAX_BLOCK}-byte limit"
            );
        }
        rows.push(IndexRow {
            offset,
            size: len,
            pts_us: us,
            keyframe: key,
            duration_us: b.end.map(|e| e.saturating_sub(us)),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(pos: u64, time: i64, key: bool) -> Packet {
        Packet {
            pos,
            time: Some(time),
            duration: Some(1),
            key,
        }
    }

    const TB_25: TimeBase = TimeBase { num: 1, den: 25 };

    #[test]
    fn start_time_parses_as_the_script_does() {
        assert_eq!(parse_start_us("1.400000"), 1_400_000);
        assert_eq!(parse_start_us("-0.041016"), -41_016);
        assert_eq!(parse_start_us("12"), 12_000_000);
        assert_eq!(parse_start_us("0.007"), 0, "six decimals or none");
        assert_eq!(parse_start_us("N/A"), 0);
        assert_eq!(parse_start_us("1.2e3"), 0);
        assert_eq!(parse_start_us("99999999999999999999"), 0);
    }

    #[test]
    fn packet_lines_parse_and_bad_positions_are_skipped() {
        let p = parse_packet("pts=1024|dts=512|duration=512|pos=48|flags=K__", 100).unwrap();
        assert_eq!(
            p,
            Packet {
                pos: 48,
                time: Some(1024),
                duration: Some(512),
                key: true
            }
        );
        let p = parse_packet("pts=N/A|dts=7|duration=N/A|pos=0|flags=___", 100).unwrap();
        assert_eq!((p.time, p.duration, p.key), (Some(7), None, false));
        assert!(parse_packet("pts=1|dts=1|duration=1|pos=N/A|flags=K_", 100).is_none());
        assert!(parse_packet("pts=1|dts=1|duration=1|pos=100|flags=K_", 100).is_none());
    }

    /// Decode order I0 P3 B1 B2 I6 B4 (B-frames): keyframes keep their presentation
    /// time, other blocks take the earliest time of themselves and all later blocks,
    /// raised so that times never decrease.
    #[test]
    fn presentation_times_with_b_frames() {
        let packets = [
            pk(10, 0, true),
            pk(20, 3, false),
            pk(30, 1, false),
            pk(40, 2, false),
            pk(50, 6, true),
            pk(60, 4, false),
        ];
        let rows = build_rows(&packets, 70, TB_25, 0).unwrap();
        let got: Vec<(u64, u64, u64, bool)> = rows
            .iter()
            .map(|r| (r.offset, r.size, r.pts_us, r.keyframe))
            .collect();
        assert_eq!(
            got,
            [
                (0, 20, 0, true),
                (20, 10, 40_000, false),
                (30, 10, 40_000, false),
                (40, 10, 80_000, false),
                (50, 10, 240_000, true),
                (60, 10, 240_000, false),
            ]
        );
        assert_eq!(rows[0].duration_us, Some(40_000));
        // P3 presents until 4 (160 ms), 120 ms after the block's time.
        assert_eq!(rows[1].duration_us, Some(120_000));
        assert_eq!(
            rows[5].duration_us,
            Some(0),
            "B4 ends at 200 ms, before 240 ms"
        );
    }

    /// Times count from the format's start (MPEG-TS starts at 1.4 s); leading
    /// non-keyframes merge into block 0, which takes the keyframe's time; equal
    /// positions are one block.
    #[test]
    fn start_offset_leading_non_keyframes_and_shared_positions() {
        let tb = TimeBase {
            num: 1,
            den: 90_000,
        };
        let packets = [
            pk(0, 126_000, false),
            pk(188, 129_600, true),
            pk(376, 133_200, false),
            pk(376, 136_800, false),
            pk(564, 140_400, true),
        ];
        let rows = build_rows(&packets, 700, tb, 1_400_000).unwrap();
        let got: Vec<(u64, u64, u64, bool)> = rows
            .iter()
            .map(|r| (r.offset, r.size, r.pts_us, r.keyframe))
            .collect();
        assert_eq!(
            got,
            [
                (0, 376, 40_000, true),
                (376, 188, 80_000, false),
                (564, 136, 160_000, true),
            ]
        );
    }

    #[test]
    fn no_packets_is_an_error() {
        assert!(build_rows(&[], 10, TB_25, 0).is_err());
    }
}
