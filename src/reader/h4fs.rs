//! Opening an h4fs container: the fixed tail, the footer, the chunks it names and the
//! block index (checked against the structure root), without visiting any block.

use super::io::{json_chunk, read_array, read_chunk_a, read_index_chunk};
use super::table::BlockTable;
use super::{Archive, ChunkInfo, Layout, OpenCheck, SeekPoint, Track, Veri};
use crate::error::{Error, Result, Tag};
use crate::format::h4fs::{self as hf, Footer};
use crate::format::layout_a::{self as la, ChunkHeader};
use crate::format::outboard as ob;
use crate::integrity;
use crate::integrity::tree::{Hash, Outboard, Shape};
use crate::source::ReadAt;
use serde_json::Value;
use std::sync::Arc;

impl Archive {
    /// Open an h4fs container from its footer; gives the source back when the tail is
    /// not an h4fs tail (a reference file).
    pub(super) fn try_h4fs(
        src: Box<dyn ReadAt>,
        check: OpenCheck,
    ) -> Result<std::result::Result<Archive, Box<dyn ReadAt>>> {
        let len = src.len();
        if len < la::HEADER_LEN as u64 + hf::TAIL_LEN {
            return Ok(Err(src));
        }
        let tail_at = len - hf::TAIL_LEN;
        let tail: [u8; hf::TAIL_LEN as usize] = read_array(&*src, tail_at, "file tail")?;
        let fh = ChunkHeader::parse(tail[..12].try_into().expect("12"));
        let veri_at = 12 + hf::FOOTER_PAYLOAD_LEN;
        let vh = ChunkHeader::parse(tail[veri_at..veri_at + 12].try_into().expect("12"));
        if fh.tag != Tag::HFTR || vh.tag != Tag::VERI || vh.len != 32 {
            return Ok(Err(src));
        }
        let fpayload = &tail[12..12 + hf::FOOTER_PAYLOAD_LEN];
        if fh.len as usize != hf::FOOTER_PAYLOAD_LEN {
            return Err(Error::Chunk {
                tag: Tag::HFTR,
                offset: tail_at,
                msg: format!("length {}, expected {}", fh.len, hf::FOOTER_PAYLOAD_LEN),
            });
        }
        la::check_crc(&fh, tail_at, fpayload)?;
        let footer = Footer::parse(fpayload, tail_at)?;
        let mut a = Archive::blank(src, Layout::H4fs);
        let src = &*a.src;
        let veri_offset = len - 44;
        la::check_crc(&vh, veri_offset, &tail[veri_at + 12..])?;
        a.veri = Some(Veri {
            offset: veri_offset,
            expected: tail[veri_at + 12..].try_into().expect("32"),
        });
        let crc = check == OpenCheck::Structure;
        // SEEK, META, SAFE, HENC and HIDX lie between the blocks and the footer: one span,
        // which a remote source fetches in one request before the reads below.
        let first = [
            footer.seek_offset,
            footer.meta_offset,
            footer.safe_offset,
            footer.index_offset,
        ]
        .into_iter()
        .chain((footer.henc_offset != 0).then_some(footer.henc_offset))
        .min()
        .unwrap_or(tail_at)
        .min(tail_at);
        src.will_read(&[(first, tail_at - first)]);
        let seek = read_chunk_a(src, footer.seek_offset, Tag::SEEK, tail_at, crc)?;
        let meta = read_chunk_a(src, footer.meta_offset, Tag::META, tail_at, crc)?;
        let safe = read_chunk_a(src, footer.safe_offset, Tag::SAFE, tail_at, crc)?;
        let henc = if footer.henc_offset != 0 {
            read_chunk_a(src, footer.henc_offset, Tag::HENC, tail_at, crc)?
        } else {
            Vec::new()
        };
        // The index is covered by the root hash, which is stronger than its CRC; `verify`
        // checks the CRC too.
        let (index, digest) = read_index_chunk(
            src,
            footer.index_offset,
            tail_at,
            check == OpenCheck::Structure,
        )?;
        let count = hf::check_index(&index, footer.index_offset, footer.block_count)?;
        // v2: the HB3T chunk follows HENC (or SAFE) at once and ends where HIDX starts.
        let outboard = if footer.is_v2() {
            let at = match footer.henc_offset {
                0 => footer.safe_offset + 12 + safe.len() as u64,
                h => h + 12 + henc.len() as u64,
            };
            let payload = read_chunk_a(src, at, Tag::HB3T, footer.index_offset, crc)?;
            let end = at + 12 + payload.len() as u64;
            if end != footer.index_offset {
                return Err(Error::Chunk {
                    tag: Tag::HB3T,
                    offset: at,
                    msg: format!(
                        "the chunk ends at offset {end}, but the index starts at {}: the bytes between belong to no chunk",
                        footer.index_offset
                    ),
                });
            }
            Some((at, payload))
        } else {
            None
        };
        if let Some(digest) = digest {
            let root = match &outboard {
                Some((_, payload)) => {
                    let head: [u8; ob::HEADER_LEN] = payload
                        .get(..ob::HEADER_LEN)
                        .and_then(|h| h.try_into().ok())
                        .unwrap_or([0; ob::HEADER_LEN]);
                    integrity::root_hash_v2(
                        &footer.prefix(),
                        &seek,
                        &meta,
                        &safe,
                        &henc,
                        &head,
                        &digest,
                    )
                }
                None => integrity::root_hash(&footer.prefix(), &seek, &meta, &safe, &henc, &digest),
            };
            if root != footer.root {
                return Err(Error::RootMismatch {
                    offset: tail_at,
                    expected: hex::encode(footer.root),
                    computed: hex::encode(root),
                });
            }
            a.root_checked = true;
        }
        hf::validate_index(&index, count, footer.seek_offset, footer.stream_len)?;
        if let Some((at, payload)) = &outboard {
            let stored_len = hf::check_back_to_back(&index, count, footer.seek_offset)?;
            let chunk = ob::parse(payload, at + 12)?;
            chunk.header.check_covers(stored_len, at + 12)?;
            let tree_err = |e: crate::integrity::tree::TreeError| Error::Chunk {
                tag: Tag::HB3T,
                offset: *at,
                msg: e.to_string(),
            };
            let shape =
                Shape::new(chunk.header.group_log, chunk.header.stream_len).map_err(tree_err)?;
            let tree = Outboard::new(shape, chunk.nodes.to_vec())
                .and_then(|o| o.check(&Hash::from_bytes(chunk.header.root)))
                .map_err(tree_err)?;
            a.tree = Some(Arc::new(tree));
        }

        for (tag, off, plen) in [
            (Tag::SEEK, footer.seek_offset, seek.len()),
            (Tag::META, footer.meta_offset, meta.len()),
            (Tag::SAFE, footer.safe_offset, safe.len()),
            (Tag::HENC, footer.henc_offset, henc.len()),
            (
                Tag::HB3T,
                outboard.as_ref().map_or(0, |o| o.0),
                outboard.as_ref().map_or(0, |o| o.1.len()),
            ),
            (Tag::HIDX, footer.index_offset, index.len()),
            (Tag::HFTR, tail_at, hf::FOOTER_PAYLOAD_LEN),
            (Tag::VERI, veri_offset, 32),
        ] {
            if (tag == Tag::HENC || tag == Tag::HB3T) && off == 0 {
                continue;
            }
            a.chunks.push(ChunkInfo {
                tag,
                offset: off,
                payload_len: plen as u64,
                total_len: plen as u64 + 12,
            });
        }
        a.chunks.sort_by_key(|c| c.offset);
        let seek_entries = la::parse_seek(&seek, footer.seek_offset)?;
        a.meta = Some(json_chunk(Tag::META, footer.meta_offset, meta)?);
        a.safe = Some(json_chunk(Tag::SAFE, footer.safe_offset, safe)?);
        a.seek_raw = Some((footer.seek_offset, seek));
        a.footer = Some((tail_at, footer));
        // An HENC chunk means encrypted even if the flag was cleared: never serve
        // ciphertext as data.
        let encrypted = footer.encrypted() || footer.henc_offset != 0;
        a.finish_meta(if encrypted { Some(henc) } else { None })?;
        a.tracks.push(Track {
            id: 0,
            name: "main".into(),
            info: Value::Null,
            blocks: BlockTable::Index {
                payload: Arc::new(index),
                count,
            },
            seek: seek_entries
                .iter()
                .map(|e| SeekPoint {
                    pts_us: e.pts_us,
                    offset: e.offset,
                })
                .collect(),
            seek_is_file_offset: false,
        });
        Ok(Ok(a))
    }
}
