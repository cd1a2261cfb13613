//! The reference's whole-file VERI: which containers need it before any byte is served,
//! and the check itself.

use super::{Archive, Layout};
use crate::error::{Error, Result, Tag};
use crate::format::layout_a as la;
use crate::integrity;

impl Archive {
    /// True when no byte of this container may be output (or called intact) before its
    /// whole-file VERI was checked: a reference layout-A file, whose blocks carry only
    /// CRC-32 and whose chunk walk nothing else protects (a CORE chunk whose tag was
    /// damaged is skipped as an unknown chunk, and its block silently disappears). `cat`,
    /// `seek` and `verify` check VERI first, `extract` while it writes, the mount on the
    /// first open of a data file.
    pub fn needs_veri(&self) -> bool {
        self.layout == Layout::ReferenceA
    }

    /// Check the reference VERI over the whole file (every chunk before VERI), which must
    /// be the file's last chunk: a chunk after it would be covered by nothing.
    /// `progress` is called with byte counts as they are hashed.
    pub fn check_veri(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
        let v = self.veri.ok_or_else(|| Error::Chunk {
            tag: Tag::VERI,
            offset: self.chunks_end(),
            msg: "not found: the file ends here without the whole-file hash the reference \
                  writes as its last chunk, so nothing shows that its chunks are the ones \
                  written"
                .into(),
        })?;
        let veri_end = v.offset + la::CHUNK_HEADER_LEN as u64 + 32;
        if self.chunks_end() > veri_end {
            let (tag, at) = self
                .chunks
                .iter()
                .find(|c| c.offset >= veri_end)
                .map(|c| (c.tag, c.offset))
                .unwrap_or((Tag::CORE, veri_end));
            return Err(Error::Chunk {
                tag,
                offset: at,
                msg: format!(
                    "follows the VERI chunk at offset {}, which covers only the bytes before \
                     it; the reference writes VERI last",
                    v.offset
                ),
            });
        }
        let computed = self.hash_range(la::HEADER_LEN as u64, v.offset, progress)?;
        if computed != v.expected {
            return Err(Error::VeriMismatch {
                offset: v.offset,
                expected: hex::encode(v.expected),
                computed: hex::encode(computed),
            });
        }
        Ok(())
    }

    /// Where the last chunk ends (CORE chunks included); trailing bytes too short to be
    /// a chunk header are not counted.
    fn chunks_end(&self) -> u64 {
        let chunks = self.chunks.iter().map(|c| c.offset + c.total_len);
        let blocks = self.tracks.iter().filter_map(|t| {
            let e = t.blocks.get(t.blocks.len().checked_sub(1)?)?;
            Some(e.data_offset + e.stored_len)
        });
        chunks.chain(blocks).max().unwrap_or(la::HEADER_LEN as u64)
    }

    /// SHA-256 of the file bytes `[start, end)`, reading ahead on a second thread.
    pub fn hash_range(
        &self,
        start: u64,
        end: u64,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<[u8; 32]> {
        const BUF: u64 = 4 << 20;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(2);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut pos = start;
                while pos < end {
                    let n = BUF.min(end - pos);
                    let mut buf = free_rx.try_recv().unwrap_or_default();
                    buf.resize(n as usize, 0);
                    let r = self
                        .src
                        .read_exact_at(&mut buf, pos)
                        .map(|_| buf)
                        .map_err(|e| {
                            Error::io(format!("reading {} at offset {pos}", self.name()), e)
                        });
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        return;
                    }
                    pos += n;
                }
            });
            let mut h = integrity::VeriHasher::new();
            for buf in rx {
                let buf = buf?;
                h.update(&buf);
                progress(buf.len() as u64);
                let _ = free_tx.send(buf);
            }
            Ok(h.finish())
        })
    }
}
