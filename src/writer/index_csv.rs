//! The block index CSV of `pack --index`: byte ranges of the input with their timing.

use super::builder::MAX_BLOCK;
use crate::error::{Error, Result};

/// One row of a block index CSV: a byte range of the input and its timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRow {
    pub offset: u64,
    pub size: u64,
    pub pts_us: u64,
    pub keyframe: bool,
    pub duration_us: Option<u64>,
}

/// Parse a block index CSV: a header line naming at least `offset,size,pts_us,keyframe`
/// (optionally `duration_us`), then one row per block. Rows must tile the input: each
/// starts where the previous ended, the first at 0.
pub fn parse_index_csv(text: &str, origin: &str) -> Result<Vec<IndexRow>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let (_, header) = lines
        .next()
        .ok_or_else(|| Error::BadInput(format!("{origin}: empty index, expected a header line")))?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(c_off), Some(c_size), Some(c_pts), Some(c_key)) =
        (col("offset"), col("size"), col("pts_us"), col("keyframe"))
    else {
        return Err(Error::BadInput(format!(
            "{origin}:1: header must name offset,size,pts_us,keyframe (found \"{header}\")"
        )));
    };
    let c_dur = col("duration_us");
    let mut rows: Vec<IndexRow> = Vec::new();
    for (i, line) in lines {
        let lineno = i + 1;
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let num = |c: usize, name: &str| -> Result<u64> {
            let v = f.get(c).ok_or_else(|| {
                Error::BadInput(format!("{origin}:{lineno}: missing column {name}"))
            })?;
            v.parse::<u64>().map_err(|_| {
                Error::BadInput(format!(
                    "{origin}:{lineno}: {name} \"{v}\" is not a non-negative integer"
                ))
            })
        };
        let keyframe = match f.get(c_key).copied() {
            Some("1") | Some("true") | Some("K") => true,
            Some("0") | Some("false") | Some("") => false,
            other => {
                return Err(Error::BadInput(format!(
                    "{origin}:{lineno}: keyframe must be 1 or 0, found {:?}",
                    other.unwrap_or("nothing")
                )));
            }
        };
        let row = IndexRow {
            offset: num(c_off, "offset")?,
            size: num(c_size, "size")?,
            pts_us: num(c_pts, "pts_us")?,
            keyframe,
            duration_us: match c_dur {
                Some(c) if f.get(c).is_some_and(|v| !v.is_empty()) => Some(num(c, "duration_us")?),
                _ => None,
            },
        };
        let want = rows.last().map_or(0, |r| r.offset + r.size);
        if row.offset != want {
            return Err(Error::BadInput(format!(
                "{origin}:{lineno}: block starts at {} but the previous block ended at {want}: rows must tile the input",
                row.offset
            )));
        }
        if row.size > MAX_BLOCK {
            return Err(Error::BadInput(format!(
                "{origin}:{lineno}: block of {} bytes exceeds the {MAX_BLOCK}-byte limit",
                row.size
            )));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The start time an index CSV records: a line `# start_time_us=N` (N a decimal
/// integer, may be negative; spaces around `=` allowed) before its header line.
/// `scripts/ffprobe-index.sh` writes it from the format's start time; block pts in the
/// CSV count from it. Other `#` lines are comments. `None` when there is no such line.
pub fn index_csv_start_time(text: &str, origin: &str) -> Result<Option<i64>> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let Some(comment) = l.strip_prefix('#') else {
            break; // the header: properties come before it
        };
        let Some((key, value)) = comment.split_once('=') else {
            continue;
        };
        if key.trim() != "start_time_us" {
            continue;
        }
        let lineno = i + 1;
        if found.is_some() {
            return Err(Error::BadInput(format!(
                "{origin}:{lineno}: a second start_time_us line"
            )));
        }
        let v = value.trim();
        let n = v.parse::<i64>().map_err(|_| {
            Error::BadInput(format!(
                "{origin}:{lineno}: start_time_us \"{v}\" is not an integer (microseconds)"
            ))
        })?;
        found = Some(n);
    }
    Ok(found)
}
