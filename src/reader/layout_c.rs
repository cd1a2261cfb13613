//! Opening a layout C (multitrack) file: it is read whole once, checking every chunk
//! CRC and the file CRC.

use super::io::{json_chunk, read_array, read_vec};
use super::table::{BlockCheck, BlockEntry, BlockTable};
use super::{Archive, ChunkInfo, Layout, SeekPoint, Track};
use crate::engine::EngineChoice;
use crate::error::{Error, Result, Tag};
use crate::format::layout_c::{self as lc, BlockType};
use crate::source::ReadAt;
use serde_json::Value;

impl Archive {
    /// Read a layout C file whole, checking every chunk CRC and the file CRC.
    pub(super) fn scan_layout_c(src: Box<dyn ReadAt>) -> Result<Archive> {
        let len = src.len();
        let mut a = Archive::blank(src, Layout::MultitrackC);
        let src = &*a.src;
        let head: [u8; lc::HEADER_LEN] = read_array(src, 0, "layout C header")?;
        let header = lc::parse_header(&head)?;
        a.timestamp = Some(header.timestamp);
        if len < (lc::HEADER_LEN + 4) as u64 {
            return Err(Error::Truncated {
                what: "layout C file CRC".into(),
                offset: lc::HEADER_LEN as u64,
                need: 4,
                file_len: len,
            });
        }
        let body_end = len - 4;
        let mut file_crc = crc32fast::Hasher::new();
        file_crc.update(&head);
        let mut pos = lc::HEADER_LEN as u64;
        // (chunk offset, header, crc) of CORE chunks
        let mut cores: Vec<(u64, lc::ChunkHeader, u32, u16)> = Vec::new();
        // (chunk offset, parsed TSEK)
        let mut tseks: Vec<(u64, lc::TrackSeek)> = Vec::new();
        while pos < body_end {
            let hb: [u8; 12] = read_array(src, pos, "layout C chunk header")?;
            let h = lc::ChunkHeader::parse(&hb);
            let total = 12 + h.len as u64 + 4;
            if pos + total > body_end {
                return Err(Error::Truncated {
                    what: format!("chunk {} (payload length {})", h.tag, h.len),
                    offset: pos,
                    need: total,
                    file_len: len,
                });
            }
            let payload = read_vec(src, pos + 12, h.len as u64, &format!("{} payload", h.tag))?;
            let crc_bytes: [u8; 4] = read_array(src, pos + 12 + h.len as u64, "chunk CRC")?;
            let stored = u32::from_le_bytes(crc_bytes);
            let mut c = crc32fast::Hasher::new();
            c.update(&hb);
            c.update(&payload);
            let computed = c.finalize();
            if stored != computed {
                return Err(Error::CrcMismatch {
                    tag: h.tag,
                    offset: pos,
                    stored,
                    computed,
                });
            }
            file_crc.update(&hb);
            file_crc.update(&payload);
            file_crc.update(&crc_bytes);
            match h.tag {
                Tag::CORE => {
                    let track = lc::parse_block_prefix(&payload, pos)?;
                    if h.block_type().is_none() {
                        return Err(Error::Chunk {
                            tag: Tag::CORE,
                            offset: pos,
                            msg: "block type 3 in flags bits 28-29 is not defined".into(),
                        });
                    }
                    cores.push((pos, h, stored, track));
                }
                Tag::TSEK => tseks.push((pos, lc::parse_tsek(&payload, pos)?)),
                Tag::TRAK => a.trak = Some(json_chunk(h.tag, pos, payload)?),
                Tag::META => a.meta = Some(json_chunk(h.tag, pos, payload)?),
                Tag::SAFE => a.safe = Some(json_chunk(h.tag, pos, payload)?),
                _ => {}
            }
            if h.tag != Tag::CORE {
                a.chunks.push(ChunkInfo {
                    tag: h.tag,
                    offset: pos,
                    payload_len: h.len as u64,
                    total_len: total,
                });
            }
            pos += total;
        }
        let stored: [u8; 4] = read_array(src, body_end, "file CRC")?;
        let stored = u32::from_le_bytes(stored);
        let computed = file_crc.finalize();
        if stored != computed {
            return Err(Error::Chunk {
                tag: Tag(*b"FCRC"),
                offset: body_end,
                msg: format!("file CRC-32 mismatch (stored {stored:08x}, computed {computed:08x})"),
            });
        }
        a.finish_meta(None)?;
        a.sizes_exact = matches!(a.engine, EngineChoice::Known(_));
        let trak = a.trak.as_ref().ok_or_else(|| Error::Chunk {
            tag: Tag::TRAK,
            offset: lc::HEADER_LEN as u64,
            msg:
                "not found: a layout C file lists its tracks in a TRAK chunk, and this one has none"
                    .into(),
        })?;
        let list = trak
            .value
            .get("tracks")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Json {
                tag: Tag::TRAK,
                offset: trak.offset,
                msg: "no \"tracks\" array".into(),
            })?;
        let mut tracks = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let id = t
                .get("track_id")
                .and_then(Value::as_u64)
                .filter(|id| *id <= u16::MAX as u64)
                .ok_or_else(|| Error::Json {
                    tag: Tag::TRAK,
                    offset: trak.offset,
                    msg: format!("track {i} has no valid \"track_id\""),
                })? as u32;
            if tracks.iter().any(|t: &Track| t.id == id) {
                return Err(Error::Json {
                    tag: Tag::TRAK,
                    offset: trak.offset,
                    msg: format!("track_id {id} listed twice"),
                });
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("track{id}"));
            let mut blocks = Vec::new();
            let mut stream = 0;
            for &(off, h, crc, track) in cores.iter().filter(|c| c.3 as u32 == id) {
                let stored_len = h.len as u64 - lc::BLOCK_PREFIX_LEN as u64;
                blocks.push(BlockEntry {
                    number: blocks.len() as u64,
                    chunk_offset: off,
                    data_offset: off + 12 + lc::BLOCK_PREFIX_LEN as u64,
                    stored_len,
                    decoded_len: stored_len,
                    stream_offset: stream,
                    pts_us: h.pts_ms() as u64 * 1000,
                    keyframe: h.block_type() == Some(BlockType::I),
                    track: track as u32,
                    check: BlockCheck::CrcChunkC(crc),
                    block_type: h.block_type(),
                });
                stream += stored_len;
            }
            // Each seek entry must name the payload of one of this track's blocks.
            let seek = match tseks.iter().find(|(_, s)| s.track as u32 == id) {
                None => Vec::new(),
                Some((at, s)) => s
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(i, &(pts, off))| {
                        let off = off as u64;
                        let prefix_at = |b: &BlockEntry| b.data_offset - lc::BLOCK_PREFIX_LEN as u64;
                        if blocks.binary_search_by_key(&off, prefix_at).is_err() {
                            return Err(Error::Chunk {
                                tag: Tag::TSEK,
                                offset: *at,
                                msg: match off >= len {
                                    true => format!(
                                        "entry {i} (pts {pts} ms) points at file offset {off}, past the end of the file ({len} bytes)"
                                    ),
                                    false => format!(
                                        "entry {i} (pts {pts} ms) points at file offset {off}, which is not the payload of a CORE chunk of track {id}"
                                    ),
                                },
                            });
                        }
                        Ok(SeekPoint {
                            pts_us: pts as u64 * 1000,
                            offset: off,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            };
            tracks.push(Track {
                id,
                name,
                info: t.clone(),
                blocks: BlockTable::List(blocks),
                seek,
                seek_is_file_offset: true,
            });
        }
        if let Some(&(off, _, _, track)) = cores
            .iter()
            .find(|c| !tracks.iter().any(|t| t.id == c.3 as u32))
        {
            return Err(Error::Chunk {
                tag: Tag::CORE,
                offset: off,
                msg: format!("block names track {track}, which TRAK does not list"),
            });
        }
        a.tracks = tracks;
        Ok(a)
    }
}
