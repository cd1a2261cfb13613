//! Opening a reference layout-A file: it has no index, so every chunk header is scanned
//! once (and, for the geometric-reference engine, each block's runs, to learn its decoded
//! length).

use super::io::{json_chunk, read_array, read_vec};
use super::table::{BlockCheck, BlockEntry, BlockTable};
use super::{Archive, ChunkInfo, Layout, OpenCheck, SeekPoint, Track, Veri};
use crate::engine::EngineChoice;
use crate::error::{Error, Result, Tag};
use crate::format::h4fs as hf;
use crate::format::layout_a::{self as la, ChunkHeader};
use crate::source::ReadAt;
use rayon::prelude::*;
use serde_json::Value;

/// An h4fs chunk (or META's `h4fs` record) found by the reference scan: the file is an
/// h4fs container whose fixed tail is missing.
fn broken_h4fs_tail(tag: Tag, offset: u64, file_len: u64) -> Error {
    Error::Chunk {
        tag,
        offset,
        msg: format!(
            "this is an h4fs container, but it does not end with the h4fs tail (HFTR at \
             offset {}, VERI at {}): it was truncated or has bytes appended",
            file_len.saturating_sub(hf::TAIL_LEN),
            file_len.saturating_sub(44)
        ),
    }
}

impl Archive {
    /// Scan a reference layout-A file: every chunk header once.
    pub(super) fn scan_reference(src: Box<dyn ReadAt>, check: OpenCheck) -> Result<Archive> {
        let len = src.len();
        let mut a = Archive::blank(src, Layout::ReferenceA);
        let src = &*a.src;
        let mut pos = la::HEADER_LEN as u64;
        // (chunk offset, payload len, crc)
        let mut cores: Vec<(u64, u32, u32)> = Vec::new();
        // The first chunk only h4fs writes (HIDX, HFTR, HENC, HB3T), if any.
        let mut h4fs_chunk: Option<(Tag, u64)> = None;
        // The reference ignores 1-11 trailing bytes after the last whole chunk.
        while len - pos >= la::CHUNK_HEADER_LEN as u64 {
            let h = ChunkHeader::parse(&read_array(src, pos, "chunk header")?);
            let end = pos + la::CHUNK_HEADER_LEN as u64 + h.len as u64;
            if end > len {
                return Err(Error::Truncated {
                    what: format!("chunk {} (payload length {})", h.tag, h.len),
                    offset: pos,
                    need: la::CHUNK_HEADER_LEN as u64 + h.len as u64,
                    file_len: len,
                });
            }
            let payload_at = pos + la::CHUNK_HEADER_LEN as u64;
            let dup = |first: u64| Error::Chunk {
                tag: h.tag,
                offset: pos,
                msg: format!("duplicate chunk (the first is at offset {first})"),
            };
            let read_checked = || -> Result<Vec<u8>> {
                let p = read_vec(src, payload_at, h.len as u64, &format!("{} payload", h.tag))?;
                if check == OpenCheck::Structure {
                    la::check_crc(&h, pos, &p)?;
                }
                Ok(p)
            };
            match h.tag {
                Tag::CORE => cores.push((pos, h.len, h.crc)),
                // Only h4fs writes these, and always with the fixed tail; without it the
                // file was cut or appended to, and must not pass as a reference file.
                // Reported after the scan, so a cut inside a later chunk is named exactly.
                Tag::HIDX | Tag::HFTR | Tag::HENC | Tag::HB3T => {
                    h4fs_chunk.get_or_insert((h.tag, pos));
                }
                Tag::SEEK => {
                    if let Some((first, _)) = a.seek_raw {
                        return Err(dup(first));
                    }
                    a.seek_raw = Some((pos, read_checked()?));
                }
                Tag::META | Tag::SAFE => {
                    let slot = if h.tag == Tag::META {
                        &mut a.meta
                    } else {
                        &mut a.safe
                    };
                    if let Some(first) = slot.as_ref().map(|j| j.offset) {
                        return Err(dup(first));
                    }
                    *slot = Some(json_chunk(h.tag, pos, read_checked()?)?);
                }
                Tag::VERI => {
                    if let Some(v) = a.veri {
                        return Err(dup(v.offset));
                    }
                    let p = read_checked()?;
                    let expected: [u8; 32] = p.as_slice().try_into().map_err(|_| Error::Chunk {
                        tag: Tag::VERI,
                        offset: pos,
                        msg: format!("payload is {} bytes, expected 32", p.len()),
                    })?;
                    a.veri = Some(Veri {
                        offset: pos,
                        expected,
                    });
                }
                _ => {}
            }
            if h.tag != Tag::CORE {
                a.chunks.push(ChunkInfo {
                    tag: h.tag,
                    offset: pos,
                    payload_len: h.len as u64,
                    total_len: end - pos,
                });
            }
            pos = end;
        }
        // 1-11 bytes after the last whole chunk are a cut chunk header unless the file
        // is complete (the reference writes VERI last); say so before anything is missed.
        let cut = pos < len && a.chunks.last().is_none_or(|c| c.tag != Tag::VERI);
        if cut || (cores.is_empty() && a.chunks.is_empty()) {
            return Err(Error::Truncated {
                what: match cut {
                    true => "chunk header".into(),
                    false => "empty container (an H4MK header and no chunk): chunk header".into(),
                },
                offset: pos,
                need: la::CHUNK_HEADER_LEN as u64,
                file_len: len,
            });
        }
        if let Some((tag, at)) = h4fs_chunk {
            return Err(broken_h4fs_tail(tag, at, len));
        }
        let missing = |tag: Tag, why: &str| Error::Chunk {
            tag,
            offset: pos,
            msg: format!("not found: the chunks end at this offset without one; {why}"),
        };
        let Some((seek_offset, seek_payload)) = &a.seek_raw else {
            return Err(missing(
                Tag::SEEK,
                "a layout A container needs its seek table",
            ));
        };
        let seek = la::parse_seek(seek_payload, *seek_offset)?;
        if a.meta.is_none() {
            return Err(missing(
                Tag::META,
                "without it the engine that wrote the blocks is unknown",
            ));
        }
        // h4fs's writer marks META (`pack` adds an "h4fs" record; every h4fs engine id
        // starts "h4fs-") and always ends the file with its tail.
        let h4fs_meta = |v: &Value| {
            v.get("h4fs").is_some()
                || v.pointer("/compression/engine_id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.starts_with("h4fs-"))
        };
        if let Some(m) = a.meta.as_ref().filter(|m| h4fs_meta(&m.value)) {
            return Err(broken_h4fs_tail(Tag::META, m.offset, len));
        }
        a.finish_meta(None)?;
        let meta = a
            .meta
            .as_ref()
            .map(|m| m.value.clone())
            .unwrap_or(Value::Null);

        // Decoded lengths: known without reading for identity, by scanning runs for the
        // geometric-reference engine, unknown for other engines or encrypted blocks.
        let engine = match (&a.engine, &a.encryption) {
            (EngineChoice::Known(e), None) => Some(*e),
            _ => None,
        };
        a.sizes_exact = engine.is_some();
        let decoded: Vec<u64> = match engine {
            Some(crate::engine::Engine::Identity) | None => {
                cores.iter().map(|c| c.1 as u64).collect()
            }
            Some(e) => cores
                .par_iter()
                .enumerate()
                .map(|(i, &(off, plen, _))| {
                    let p = read_vec(&*a.src, off + 12, plen as u64, "CORE payload")?;
                    e.decoded_len(&p).map_err(|msg| Error::Block {
                        block: i as u64,
                        offset: off,
                        msg,
                    })
                })
                .collect::<Result<_>>()?,
        };

        // Per-block pts and keyframes: from META's fps_hint/gop as the reference's
        // export computes them, else from SEEK.
        let frame_us = meta
            .get("fps_hint")
            .and_then(Value::as_f64)
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(|fps| (1e6 / fps).floor() as u64);
        let gop = meta.get("gop").and_then(Value::as_u64).filter(|g| *g > 0);
        let mut blocks = Vec::with_capacity(cores.len());
        let mut stream = 0u64;
        let mut seek_i = 0usize;
        let mut cur_pts = 0u64;
        for (i, &(off, plen, crc)) in cores.iter().enumerate() {
            let mut on_seek = false;
            while seek_i < seek.len() && seek[seek_i].offset <= stream {
                on_seek = seek[seek_i].offset == stream;
                cur_pts = seek[seek_i].pts_us;
                seek_i += 1;
            }
            let pts_us = match frame_us {
                Some(f) => f.saturating_mul(i as u64),
                None => cur_pts,
            };
            let keyframe = match gop {
                Some(g) => i as u64 % g == 0,
                None => on_seek,
            };
            blocks.push(BlockEntry {
                number: i as u64,
                chunk_offset: off,
                data_offset: off + 12,
                stored_len: plen as u64,
                decoded_len: decoded[i],
                stream_offset: stream,
                pts_us,
                keyframe,
                track: 0,
                check: BlockCheck::CrcPayload(crc),
                block_type: None,
            });
            stream += decoded[i];
        }
        a.tracks.push(Track {
            id: 0,
            name: "main".into(),
            info: Value::Null,
            blocks: BlockTable::List(blocks),
            seek: seek
                .iter()
                .map(|e| SeekPoint {
                    pts_us: e.pts_us,
                    offset: e.offset,
                })
                .collect(),
            seek_is_file_offset: false,
        });
        Ok(a)
    }
}
