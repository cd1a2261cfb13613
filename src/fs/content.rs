//! Generated files: the JSON documents and the CSV tables of each container or track.
//!
//! CSV tables can have a row per block (a million rows and more), so they are never
//! held whole: [`RowFile`] formats rows on demand and, the first time its size is
//! asked for, records the byte offset of every [`ROWS_PER_MARK`]-th row, so a read at
//! any offset formats at most that many rows before the ones it returns.

use crate::reader::{Archive, Layout, Track};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::{Arc, OnceLock};

/// Rows between two recorded offsets.
pub const ROWS_PER_MARK: u64 = 256;

/// Which table a [`RowFile`] renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// `index.csv`: one row per block, with the recorded file names of a directory pack
    /// (checked by [`crate::naming`]) in its last column.
    Index(Option<Arc<Vec<Option<String>>>>),
    /// `seek.csv`: one row per SEEK entry.
    Seek,
}

impl Table {
    fn header(&self) -> &'static [u8] {
        match self {
            Table::Index(_) => b"block,pts_us,keyframe,track,offset,stored_size,size,sha256,name\n",
            Table::Seek => b"pts_us,block,offset\n",
        }
    }

    fn rows(&self, t: &Track) -> u64 {
        match self {
            Table::Index(_) => t.blocks.len(),
            Table::Seek => t.seek.len() as u64,
        }
    }

    fn write_row(&self, t: &Track, i: u64, out: &mut Vec<u8>) {
        match self {
            Table::Index(names) => {
                let Some(e) = t.blocks.get(i) else { return };
                let _ = write!(
                    out,
                    "{},{},{},{},{},{},{},",
                    e.number,
                    e.pts_us,
                    u8::from(e.keyframe),
                    t.id,
                    e.stream_offset,
                    e.stored_len,
                    e.decoded_len
                );
                if let Some(h) = e.sha256() {
                    let mut hex = [0u8; 64];
                    let _ = hex::encode_to_slice(h, &mut hex);
                    out.extend_from_slice(&hex);
                }
                out.push(b',');
                let name = names
                    .as_ref()
                    .and_then(|v| v.get(usize::try_from(i).ok()?)?.as_deref());
                if let Some(name) = name {
                    csv_field(name, out);
                }
                out.push(b'\n');
            }
            Table::Seek => {
                let Some(p) = t.seek.get(i as usize) else {
                    return;
                };
                let _ = write!(out, "{},", p.pts_us);
                if let Some(b) = t.resolve_seek(p) {
                    let _ = write!(out, "{b}");
                }
                let _ = writeln!(out, ",{}", p.offset);
            }
        }
    }
}

/// `field` as a CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma,
/// a quote or a line break.
fn csv_field(field: &str, out: &mut Vec<u8>) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

/// A CSV table rendered on demand.
#[derive(Debug)]
pub struct RowFile {
    table: Table,
    /// Byte offset of row `k * ROWS_PER_MARK` for every k, then the total size.
    marks: OnceLock<Vec<u64>>,
}

impl RowFile {
    pub fn new(table: Table) -> RowFile {
        RowFile {
            table,
            marks: OnceLock::new(),
        }
    }

    fn marks(&self, t: &Track) -> &[u64] {
        self.marks.get_or_init(|| {
            let rows = self.table.rows(t);
            let mut marks = Vec::with_capacity((rows / ROWS_PER_MARK + 2) as usize);
            let mut pos = self.table.header().len() as u64;
            let mut buf = Vec::with_capacity(160);
            for i in 0..rows {
                if i % ROWS_PER_MARK == 0 {
                    marks.push(pos);
                }
                buf.clear();
                self.table.write_row(t, i, &mut buf);
                pos += buf.len() as u64;
            }
            marks.push(pos);
            marks
        })
    }

    /// Size in bytes.
    pub fn len(&self, t: &Track) -> u64 {
        *self.marks(t).last().expect("at least the total")
    }

    /// Bytes `[offset, offset + size)`, clipped to the end.
    pub fn read(&self, t: &Track, offset: u64, size: usize) -> Vec<u8> {
        let marks = self.marks(t);
        let total = *marks.last().expect("total");
        let end = offset.saturating_add(size as u64).min(total);
        if offset >= end {
            return Vec::new();
        }
        let header = self.table.header();
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos;
        let mut row;
        if offset < header.len() as u64 {
            let h_end = (end as usize).min(header.len());
            out.extend_from_slice(&header[offset as usize..h_end]);
            pos = header.len() as u64;
            row = 0;
        } else {
            let k = marks[..marks.len() - 1].partition_point(|&m| m <= offset);
            let k = k.saturating_sub(1);
            pos = marks[k];
            row = k as u64 * ROWS_PER_MARK;
        }
        let rows = self.table.rows(t);
        let mut buf = Vec::with_capacity(160);
        while pos < end && row < rows {
            buf.clear();
            self.table.write_row(t, row, &mut buf);
            let row_end = pos + buf.len() as u64;
            if row_end > offset {
                let lo = offset.saturating_sub(pos) as usize;
                let hi = (end.min(row_end) - pos) as usize;
                out.extend_from_slice(&buf[lo..hi]);
            }
            pos = row_end;
            row += 1;
        }
        out
    }
}

/// Pretty JSON with a trailing newline.
pub fn pretty(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("JSON values serialize");
    out.push(b'\n');
    out
}

/// `meta.json`: META as recorded, plus an `h4fs_status` note when the data cannot be
/// served (unknown engine, encrypted without key), saying why.
pub fn meta_json(a: &Archive, unreadable: Option<&str>) -> Vec<u8> {
    let mut v = a
        .meta
        .as_ref()
        .map(|m| m.value.clone())
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let (Some(reason), Value::Object(m)) = (unreadable, &mut v) {
        m.insert(
            "h4fs_status".into(),
            json!({"data_readable": false, "reason": reason}),
        );
    }
    pretty(&v)
}

/// `safe.json`: SAFE as recorded (`{}` when the container has none).
pub fn safe_json(a: &Archive) -> Vec<u8> {
    pretty(
        &a.safe
            .as_ref()
            .map(|m| m.value.clone())
            .unwrap_or_else(|| Value::Object(Map::new())),
    )
}

/// `manifest.json`: the reference video app's manifest for one track.
pub fn manifest_json(a: &Archive, container: &str, t: &Track) -> Vec<u8> {
    let meta = a.meta.as_ref().map(|m| &m.value);
    let field = |k: &str| meta.and_then(|m| m.get(k)).cloned().unwrap_or(Value::Null);
    let seek: Vec<Value> = t
        .seek
        .iter()
        .map(|p| json!({"pts_us": p.pts_us, "block": t.resolve_seek(p), "offset": p.offset}))
        .collect();
    let mut m = Map::new();
    m.insert("container".into(), json!(container));
    m.insert("project".into(), field("project"));
    m.insert("domain".into(), field("domain"));
    if a.layout == Layout::MultitrackC {
        m.insert("track".into(), json!({"id": t.id, "name": t.name}));
    }
    m.insert("blocks".into(), json!(t.blocks.len()));
    m.insert("stream_size".into(), json!(t.stream_len()));
    m.insert("seek".into(), Value::Array(seek));
    m.insert("compression".into(), field("compression"));
    m.insert(
        "safe".into(),
        a.safe
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or(Value::Null),
    );
    pretty(&Value::Object(m))
}

/// `tracks.json` (container of a multitrack file) or `track.json` (one track).
pub fn tracks_json(a: &Archive, track: Option<&Track>) -> Vec<u8> {
    match track {
        Some(t) => pretty(&json!({
            "id": t.id,
            "name": t.name,
            "blocks": t.blocks.len(),
            "stream_size": t.stream_len(),
            "trak": t.info,
        })),
        None => pretty(
            &a.trak
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or(Value::Null),
        ),
    }
}

/// A UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn iso8601(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
