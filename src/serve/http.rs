//! HTTP rules that need no I/O: `Range`, conditional requests, dates, content types,
//! request paths. Everything here is a pure function, unit-tested beside it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// More ranges than this in one `Range` header and the header is ignored (the whole
/// representation is sent with 200, as RFC 9110 §14.2 allows).
pub const MAX_RANGES: usize = 64;

/// Longest request target accepted (longer: 414).
pub const MAX_TARGET: usize = 4096;

/// How a `Range` header applies to a representation of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// No usable `Range`: send everything with 200 (absent, not `bytes`, malformed, or
    /// more than [`MAX_RANGES`] ranges).
    Full,
    /// One range, inclusive `[first, last]`: 206.
    One(u64, u64),
    /// Several disjoint ranges in ascending order: 206 `multipart/byteranges`.
    Many(Vec<(u64, u64)>),
    /// Well-formed, but no range overlaps the representation: 416.
    Unsatisfiable,
}

/// Parse a decimal number; more digits than fit saturate at `u64::MAX`.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

/// Interpret a `Range` header value (RFC 9110 §14.1.2) against `len` bytes. Ranges that
/// overlap or touch are merged; a header whose ranges all merge into one answers with a
/// single part.
pub fn parse_range(value: &str, len: u64) -> Ranges {
    let Some((unit, set)) = value.split_once('=') else {
        return Ranges::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ranges::Full;
    }
    let specs: Vec<&str> = set.split(',').map(str::trim).collect();
    if specs.len() > MAX_RANGES {
        return Ranges::Full;
    }
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(specs.len());
    let mut any = false;
    for spec in specs {
        if spec.is_empty() {
            continue; // empty list elements are allowed by the list syntax
        }
        let Some((a, b)) = spec.split_once('-') else {
            return Ranges::Full;
        };
        let (a, b) = (a.trim(), b.trim());
        any = true;
        if a.is_empty() {
            // suffix-range: the last b bytes
            let Some(n) = number(b) else {
                return Ranges::Full;
            };
            if n > 0 && len > 0 {
                out.push((len - n.min(len), len - 1));
            }
            continue;
        }
        let Some(first) = number(a) else {
            return Ranges::Full;
        };
        let last = if b.is_empty() {
            u64::MAX
        } else {
            match number(b) {
                Some(l) if l >= first => l,
                _ => return Ranges::Full,
            }
        };
        if first < len {
            out.push((first, last.min(len - 1)));
        }
    }
    if !any {
        return Ranges::Full;
    }
    if out.is_empty() {
        return Ranges::Unsatisfiable;
    }
    out.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
    for (a, b) in out {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    if merged.len() == 1 {
        Ranges::One(merged[0].0, merged[0].1)
    } else {
        Ranges::Many(merged)
    }
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, RFC 9110 §13.1.2).
pub fn none_match(value: &str, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
}

/// Whether an `If-Match` value matches `etag` (strong comparison).
pub fn strong_match(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || (!t.starts_with("W/") && t == etag))
}

/// Whether an `If-Range` value allows the range to be served: a strong match of the
/// ETag, or exactly the `Last-Modified` date.
pub fn if_range_holds(value: &str, etag: Option<&str>, mtime: SystemTime) -> bool {
    let v = value.trim();
    if v.starts_with('"') || v.starts_with("W/") {
        return etag.is_some_and(|e| !v.starts_with("W/") && v == e);
    }
    parse_date(v).is_some_and(|d| d == truncate(mtime))
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`), any of the three formats.
pub fn parse_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s).ok()
}

/// The IMF-fixdate of `t`.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(truncate(t))
}

/// `t` rounded down to whole seconds, as HTTP dates carry it.
pub fn truncate(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A time in the common log format (`10/Oct/2000:13:55:36 +0000`), UTC.
pub fn clf_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The media type of a file named `name`, by its extension, as the mount's
/// `user.h4mk.mime` gives it ([`crate::naming::mime_type`]): what browsers and players
/// need to play `stream`. Unknown extensions are `application/octet-stream`.
pub fn media_type(name: &str) -> &'static str {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => crate::naming::mime_type(ext),
        _ => "application/octet-stream",
    }
}

/// Why a request path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Longer than [`MAX_TARGET`].
    TooLong,
    /// Not a clean absolute path: `.`/`..` segments, encoded `/` or NUL, empty
    /// segments, invalid percent-encoding or UTF-8.
    Bad(String),
}

/// Split a request path into decoded segments. A trailing `/` is allowed (it names a
/// directory); nothing may climb (`..`), stay (`.`), be empty, or decode to `/`, `\`
/// or NUL.
pub fn segments(path: &str) -> Result<Vec<String>, PathError> {
    if path.len() > MAX_TARGET {
        return Err(PathError::TooLong);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::Bad("the path must start with /".into()));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for raw in rest.split('/') {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
        let seg = String::from_utf8(bytes)
            .map_err(|_| PathError::Bad(format!("segment {raw:?} is not UTF-8")))?;
        if seg.is_empty() {
            return Err(PathError::Bad("empty path segment (//)".into()));
        }
        if seg == "." || seg == ".." {
            return Err(PathError::Bad(format!("segment {raw:?} ({seg})")));
        }
        if seg.contains(['/', '\\', '\0']) {
            return Err(PathError::Bad(format!(
                "segment {raw:?} decodes to a separator or NUL"
            )));
        }
        if raw.len() > 255 * 3 {
            return Err(PathError::Bad(
                "a path segment is longer than 255 bytes".into(),
            ));
        }
        out.push(seg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ranges::One(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Ranges::One(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Ranges::One(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), Ranges::One(0, 99));
        assert_eq!(parse_range("bytes=50-1000", 100), Ranges::One(50, 99));
        assert_eq!(parse_range("BYTES = 0-0", 100), Ranges::One(0, 0));
        assert_eq!(parse_range("bytes=100-", 100), Ranges::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Ranges::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Ranges::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999999999-", 100),
            Ranges::Unsatisfiable
        );
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999999", 100),
            Ranges::One(0, 99)
        );
        assert_eq!(
            parse_range("bytes=0-1,10-11", 100),
            Ranges::Many(vec![(0, 1), (10, 11)])
        );
        assert_eq!(
            parse_range("bytes=10-11,0-1", 100),
            Ranges::Many(vec![(0, 1), (10, 11)])
        );
        // overlapping and adjacent ranges merge
        assert_eq!(parse_range("bytes=0-5,3-9,10-12", 100), Ranges::One(0, 12));
        // malformed: ignored
        for bad in [
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=",
            "bytes=,",
            "items=0-1",
            "0-1",
            "bytes=--1",
            "bytes=+1-2",
            "bytes=-",
        ] {
            assert_eq!(parse_range(bad, 100), Ranges::Full, "{bad}");
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(parse_range(&many, 100), Ranges::Full);
    }

    #[test]
    fn conditionals() {
        let e = "\"abc\"";
        assert!(none_match("\"abc\"", e));
        assert!(none_match("W/\"abc\"", e));
        assert!(none_match("\"x\", \"abc\"", e));
        assert!(none_match("*", e));
        assert!(!none_match("\"abd\"", e));
        assert!(strong_match("\"abc\"", e));
        assert!(!strong_match("W/\"abc\"", e));
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert!(if_range_holds("\"abc\"", Some(e), t));
        assert!(!if_range_holds("W/\"abc\"", Some(e), t));
        assert!(!if_range_holds("\"abd\"", Some(e), t));
        assert!(if_range_holds("Sun, 06 Nov 1994 08:49:37 GMT", None, t));
        assert!(!if_range_holds("Sun, 06 Nov 1994 08:49:38 GMT", None, t));
        assert!(!if_range_holds("garbage", None, t));
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn clf() {
        let t = UNIX_EPOCH + Duration::from_secs(971_186_136);
        assert_eq!(clf_time(t), "10/Oct/2000:13:55:36 +0000");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(clf_time(leap), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn paths() {
        assert_eq!(segments("/"), Ok(vec![]));
        assert_eq!(segments("/a/b"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(segments("/a/b/"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(segments("/a%20b"), Ok(vec!["a b".into()]));
        for bad in [
            "/../etc/passwd",
            "/a/../b",
            "/a/%2e%2e/b",
            "/a/%2E%2E",
            "/a/.",
            "/a//b",
            "/a%2fb",
            "/a%5cb",
            "/a%00b",
            "/%ff",
            "a/b",
            "//etc/passwd",
        ] {
            assert!(
                matches!(segments(bad), Err(PathError::Bad(_))),
                "{bad}: {:?}",
                segments(bad)
            );
        }
        assert_eq!(segments(&"/a".repeat(3000)), Err(PathError::TooLong));
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type("movie.MP4"), "video/mp4");
        assert_eq!(media_type("clip.ts"), "video/mp2t");
        assert_eq!(media_type("page.html"), "application/octet-stream");
        assert_eq!(media_type("noext"), "application/octet-stream");
    }
}
