//! `/NAME/index.m3u8`: an HLS playlist over `stream` for MPEG-TS streams, one segment
//! per keyframe interval as an `EXT-X-BYTERANGE` of `stream` (no remuxing), named
//! `stream.ts` in the playlist (an alias of `stream`: HLS clients such as ffmpeg accept
//! only segment URLs with a media extension).
//!
//! Segment i runs from keyframe block k(i) to keyframe block k(i+1) (the last to the end
//! of the stream); its duration is the difference of their times. The last segment lasts
//! from its keyframe to the last block plus one average block duration.

use super::{Refusal, Server, fs_status, refuse};
use crate::fs::{FsError, Kind, XattrReply};
use ::http::StatusCode;
use std::fmt::Write;

/// One segment: byte range of `stream` and duration in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
    pub duration_us: u64,
}

/// Segments from keyframes `(pts_us, stream offset)` (ascending), the stream length and
/// the times of the first and last blocks and the block count.
pub fn segments(
    keyframes: &[(u64, u64)],
    stream_len: u64,
    first_pts: u64,
    last_pts: u64,
    blocks: u64,
) -> Vec<Segment> {
    let per_block = if blocks > 1 {
        last_pts.saturating_sub(first_pts) / (blocks - 1)
    } else {
        0
    };
    let mut out: Vec<Segment> = Vec::with_capacity(keyframes.len());
    for (i, &(pts, off)) in keyframes.iter().enumerate() {
        let (end, end_pts) = match keyframes.get(i + 1) {
            Some(&(p, o)) => (o, p),
            None => (stream_len, last_pts.saturating_add(per_block)),
        };
        if end <= off {
            continue;
        }
        out.push(Segment {
            offset: off,
            len: end - off,
            duration_us: end_pts.saturating_sub(pts),
        });
    }
    out
}

/// The playlist text for `segments` of the file `uri`.
pub fn playlist(segments: &[Segment], uri: &str) -> String {
    let target = segments
        .iter()
        .map(|s| s.duration_us.div_ceil(1_000_000))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    );
    for seg in segments {
        let _ = write!(
            s,
            "#EXTINF:{}.{:06},\n#EXT-X-BYTERANGE:{}@{}\n{uri}\n",
            seg.duration_us / 1_000_000,
            seg.duration_us % 1_000_000,
            seg.len,
            seg.offset
        );
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

/// Whether bytes start like an MPEG transport stream (sync bytes 188 apart).
pub fn looks_like_ts(head: &[u8]) -> bool {
    head.len() >= 189 && head[0] == 0x47 && head[188] == 0x47
}

impl Server {
    /// Build the playlist of the track directory `dir` (blocking).
    pub(super) fn hls(&self, dir: &[String], media_type: &str) -> Result<Vec<u8>, Refusal> {
        let fs = &self.fs;
        let err = |e: FsError| refuse(fs_status(&e), e.to_string());
        let not_found = || refuse(StatusCode::NOT_FOUND, "no such file or directory");
        let mut track_dir = fs.root_ino();
        for s in dir {
            let a = fs.lookup(track_dir, s).map_err(|_| not_found())?;
            if a.kind != Kind::Dir {
                return Err(not_found());
            }
            track_dir = a.ino;
        }
        let stream = fs.lookup(track_dir, "stream").map_err(|_| not_found())?;
        // The format: the recorded extension, else the first two TS packets.
        if media_type != "video/mp2t" {
            let o = fs.open(stream.ino, false).map_err(err)?;
            let head = fs.read(stream.ino, o.fh, 0, 189);
            fs.release(o.fh);
            let head = head.map_err(err)?;
            if !looks_like_ts(head.as_slice()) {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    format!(
                        "index.m3u8 is offered for MPEG-TS streams; this stream is {media_type}"
                    ),
                ));
            }
        }
        let blocks_dir = fs.lookup(track_dir, "blocks").map_err(err)?.ino;
        let by_pts = fs.lookup(track_dir, "by-pts").map_err(err)?.ino;
        let xattr_num = |ino: u64, k: &str| -> Option<u64> {
            match fs.getxattr(ino, k, 64) {
                Ok(XattrReply::Data(v)) => std::str::from_utf8(&v).ok()?.parse().ok(),
                _ => None,
            }
        };
        let mut links = Vec::new();
        fs.readdir(by_pts, 2, &mut |e| {
            links.push(e.ino);
            false
        })
        .map_err(err)?;
        let mut keyframes: Vec<(u64, u64)> = Vec::with_capacity(links.len());
        for link in links {
            let target = fs.readlink(link).map_err(err)?;
            let name = target.rsplit('/').next().unwrap_or("");
            let b = fs.lookup(blocks_dir, name).map_err(err)?.ino;
            if let (Some(p), Some(o)) = (
                xattr_num(b, "user.h4mk.pts_us"),
                xattr_num(b, "user.h4mk.offset"),
            ) {
                if keyframes.last().is_none_or(|l| l.1 < o) {
                    keyframes.push((p, o));
                }
            }
        }
        // First and last block times, for the last segment's duration.
        let mut count = 0u64;
        let mut last_name = String::new();
        let mut first_name = None;
        fs.readdir(blocks_dir, 2, &mut |e| {
            count += 1;
            if first_name.is_none() {
                first_name = Some(e.name.clone());
            }
            last_name = e.name;
            false
        })
        .map_err(err)?;
        let pts_of = |name: &str| {
            fs.lookup(blocks_dir, name)
                .ok()
                .and_then(|a| xattr_num(a.ino, "user.h4mk.pts_us"))
                .unwrap_or(0)
        };
        let first = first_name.as_deref().map_or(0, pts_of);
        let last = pts_of(&last_name);
        let segs = segments(&keyframes, stream.size, first, last, count);
        Ok(playlist(&segs, "stream.ts").into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_keyframes() {
        // Keyframes at blocks with offsets 0, 500, 900; stream of 1200 bytes; 12 blocks
        // 40 ms apart (0 .. 440 ms).
        let s = segments(
            &[(0, 0), (160_000, 500), (320_000, 900)],
            1200,
            0,
            440_000,
            12,
        );
        assert_eq!(
            s,
            vec![
                Segment {
                    offset: 0,
                    len: 500,
                    duration_us: 160_000
                },
                Segment {
                    offset: 500,
                    len: 400,
                    duration_us: 160_000
                },
                Segment {
                    offset: 900,
                    len: 300,
                    duration_us: 160_000
                },
            ]
        );
        let p = playlist(&s, "stream");
        assert!(p.starts_with("#EXTM3U\n#EXT-X-VERSION:4\n"));
        assert!(p.contains("#EXT-X-TARGETDURATION:1\n"));
        assert!(p.contains("#EXTINF:0.160000,\n#EXT-X-BYTERANGE:400@500\nstream\n"));
        assert!(p.ends_with("#EXT-X-ENDLIST\n"));
        // One block, one segment.
        assert_eq!(segments(&[(0, 0)], 10, 0, 0, 1).len(), 1);
        assert!(looks_like_ts(&{
            let mut v = vec![0u8; 200];
            v[0] = 0x47;
            v[188] = 0x47;
            v
        }));
        assert!(!looks_like_ts(b"\0\0\0 ftypisom"));
    }
}
