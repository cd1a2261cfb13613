//! Key rotation: re-wrap an encrypted container's data key under a new master key.
//!
//! Only the HENC payload changes (it has a fixed length, so no other chunk moves), and
//! with it HENC's CRC, the structure root in the footer and VERI. Blocks, index and
//! metadata stay byte for byte the same. The result is written to a temporary file
//! beside the destination, checked by opening it with the new key, and only then
//! renamed into place, so an interrupted rotation leaves the original untouched.
//! Rotating costs one copy of the file and one SHA-256 pass over it (for VERI).

use crate::crypto::{Henc, MasterKey};
use crate::error::{Error, Result, Tag};
use crate::format::h4fs as hf;
use crate::format::layout_a::ChunkHeader;
use crate::integrity;
use crate::reader::{Archive, BlockTable, Layout};
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What [`rekey`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeySummary {
    /// The new structure root.
    pub root: [u8; 32],
    /// Key ids before and after (hex).
    pub old_key_id: String,
    pub new_key_id: String,
}

/// Re-wrap the data key of the encrypted h4fs container at `path` from `old` to `new`,
/// writing the result to `out` (which may be `path` itself). `old` must open the
/// container ([`Error::WrongKey`] otherwise) and its structure must authenticate.
pub fn rekey(path: &Path, old: &MasterKey, new: &MasterKey, out: &Path) -> Result<RekeySummary> {
    let mut a = Archive::open(path)?;
    let (Layout::H4fs, Some((tail_at, footer)), Some(enc)) =
        (a.layout, a.footer, a.encryption.as_ref())
    else {
        return Err(Error::Invalid(format!(
            "{} is not an encrypted h4fs container: nothing to re-key",
            path.display()
        )));
    };
    if footer.henc_offset == 0 {
        return Err(Error::Invalid(format!(
            "{} has no HENC chunk: nothing to re-key",
            path.display()
        )));
    }
    let henc = Henc::from_value(&enc.record, footer.henc_offset)?;
    // Proves `old` is the key and the structure is what its holder wrote.
    a.attach_key(old)?;
    let new_henc = henc.rewrap(old, new)?.to_bytes();
    let old_len = a
        .chunks
        .iter()
        .find(|c| c.tag == Tag::HENC)
        .map(|c| c.payload_len);
    if old_len != Some(new_henc.len() as u64) {
        return Err(Error::Chunk {
            tag: Tag::HENC,
            offset: footer.henc_offset,
            msg: format!(
                "payload of {old_len:?} bytes cannot be replaced in place by {} bytes",
                new_henc.len()
            ),
        });
    }
    let Some(BlockTable::Index { payload: index, .. }) = a.tracks.first().map(|t| &t.blocks) else {
        return Err(Error::Invalid(
            "an h4fs container has one indexed track".into(),
        ));
    };
    let part =
        |j: &Option<crate::reader::JsonChunk>| j.as_ref().map_or(Vec::new(), |j| j.raw.clone());
    let seek = a.seek_raw.as_ref().map_or(Vec::new(), |s| s.1.clone());
    let root = integrity::root_hash(
        &footer.prefix(),
        &seek,
        &part(&a.meta),
        &part(&a.safe),
        &new_henc,
        &integrity::index_digest(index),
    );
    let new_footer = hf::Footer { root, ..footer };

    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".h4fs-rekey-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io_path("cannot create a temporary file in", dir, e))?;
    std::fs::copy(path, tmp.path()).map_err(|e| Error::io_path("cannot copy", path, e))?;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path())
        .map_err(|e| Error::io_path("cannot open", tmp.path(), e))?;
    let write = |bytes: &[u8], at: u64| {
        f.write_all_at(bytes, at)
            .map_err(|e| Error::io(format!("writing the re-keyed container at offset {at}"), e))
    };
    write(
        &ChunkHeader::encode(Tag::HENC, &new_henc),
        footer.henc_offset,
    )?;
    write(&new_henc, footer.henc_offset + 12)?;
    let fbytes = new_footer.encode();
    write(&ChunkHeader::encode(Tag::HFTR, &fbytes), tail_at)?;
    write(&fbytes, tail_at + 12)?;
    let len = a.file_len;
    let veri_at = len - 44;
    let mut h = integrity::VeriHasher::new();
    let mut r = std::io::BufReader::with_capacity(4 << 20, &f);
    std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(8))
        .map_err(|e| Error::io("seeking in the re-keyed container", e))?;
    let mut left = veri_at - 8;
    let mut buf = vec![0u8; 4 << 20];
    while left > 0 {
        let n = (left as usize).min(buf.len());
        r.read_exact(&mut buf[..n])
            .map_err(|e| Error::io("hashing the re-keyed container", e))?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    let veri = h.finish();
    write(&ChunkHeader::encode(Tag::VERI, &veri), veri_at)?;
    write(&veri, veri_at + 12)?;
    f.sync_all()
        .map_err(|e| Error::io("syncing the re-keyed container", e))?;
    drop(f);
    // Check the result before it replaces anything.
    let mut check = Archive::open(tmp.path())?;
    check.attach_key(new)?;
    check.check_veri(&|_| {})?;
    tmp.persist(out)
        .map_err(|e| Error::io_path("cannot move the re-keyed container to", out, e.error))?;
    Ok(RekeySummary {
        root,
        old_key_id: crate::crypto::container::key_id_hex(old),
        new_key_id: crate::crypto::container::key_id_hex(new),
    })
}
