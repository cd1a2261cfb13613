//! Key rotation: re-wrap an encrypted container's data key under a new master key.
//!
//! Only the HENC payload changes (it has a fixed length, so no other chunk moves), and
//! with it HENC's CRC, the structure root in the footer and VERI. Blocks, index and
//! metadata stay byte for byte the same. The result is written through
//! [`crate::output`] (an unnamed file in the destination directory), checked by opening
//! it with the new key, and only then put in place, so an interrupted rotation leaves the
//! original untouched and no temporary file.
//! Rotating costs one copy of the file and one SHA-256 pass over it (for VERI).

use crate::crypto::{Henc, MasterKey};
use crate::error::{Error, Result, Tag};
use crate::format::h4fs as hf;
use crate::format::layout_a::ChunkHeader;
use crate::integrity;
use crate::output::Output;
use crate::reader::{Archive, BlockTable, Layout, OpenCheck};
use crate::source::FileSource;
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
/// writing the result to `out`, a regular-file [`Output`] (which may replace `path`
/// itself: the caller decides, through its [`crate::output::OutputOptions`]). `old`
/// must open the container ([`Error::WrongKey`] otherwise) and its structure must
/// authenticate. `out` is committed only once the result opens with `new`.
pub fn rekey(path: &Path, old: &MasterKey, new: &MasterKey, out: Output) -> Result<RekeySummary> {
    let mut a = Archive::open(path)?;
    let (Layout::H4fs, Some((tail_at, footer)), Some(enc)) =
        (a.layout, a.footer, a.encryption.as_ref())
    else {
        return Err(Error::BadInput(format!(
            "{} is not an encrypted h4fs container: nothing to re-key",
            path.display()
        )));
    };
    if footer.henc_offset == 0 {
        return Err(Error::BadInput(format!(
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
        return Err(Error::Internal(
            "an h4fs container has one indexed track".into(),
        ));
    };
    let part =
        |j: &Option<crate::reader::JsonChunk>| j.as_ref().map_or(Vec::new(), |j| j.raw.clone());
    let seek = a.seek_raw.as_ref().map_or(Vec::new(), |s| s.1.clone());
    let digest = integrity::index_digest(index);
    let root = match a.outboard_header() {
        // v2: HB3T follows HENC, whose length does not change, so it stays in place.
        Some(ob) => integrity::root_hash_v2(
            &footer.prefix(),
            &seek,
            &part(&a.meta),
            &part(&a.safe),
            &new_henc,
            &ob,
            &digest,
        ),
        None => integrity::root_hash(
            &footer.prefix(),
            &seek,
            &part(&a.meta),
            &part(&a.safe),
            &new_henc,
            &digest,
        ),
    };
    let new_footer = hf::Footer { root, ..footer };

    let Some(f) = out.file() else {
        return Err(Error::Output(format!(
            "the re-keyed container must go to a regular file, not {}",
            out.path().display()
        )));
    };
    let (mut src, _) =
        crate::input::open_file(path).map_err(|e| Error::io_path("cannot read", path, e))?;
    let copied = std::io::copy(&mut (&mut src).take(a.file_len + 1), &mut &*f)
        .map_err(|e| Error::io_path("cannot copy", path, e))?;
    if copied != a.file_len {
        return Err(Error::Changed(format!(
            "{} changed while it was re-keyed",
            path.display()
        )));
    }
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
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 8;
    while at < veri_at {
        let n = ((veri_at - at) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], at)
            .map_err(|e| Error::io("hashing the re-keyed container", e))?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    let veri = h.finish();
    write(&ChunkHeader::encode(Tag::VERI, &veri), veri_at)?;
    write(&veri, veri_at + 12)?;
    // Check the result before it replaces anything.
    let copy = f
        .try_clone()
        .map_err(|e| Error::io("reading back the re-keyed container", e))?;
    let shown = out.path().to_path_buf();
    let mut check = Archive::from_source(
        Box::new(FileSource::from_file(copy, &shown)?),
        OpenCheck::Structure,
    )?;
    check.attach_key(new)?;
    check.check_veri(&|_| {})?;
    drop(check);
    out.commit()?;
    Ok(RekeySummary {
        root,
        old_key_id: crate::crypto::container::key_id_hex(old),
        new_key_id: crate::crypto::container::key_id_hex(new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::OutputOptions;
    use crate::reader::tests::{open, pack_encrypted};

    fn out(path: &Path, force: bool) -> Output {
        let opts = OutputOptions {
            force,
            ..OutputOptions::default()
        };
        Output::create(path, &opts).unwrap()
    }

    #[test]
    fn rekey_rewraps_only_henc_and_the_new_key_opens_it() {
        let d = tempfile::tempdir().unwrap();
        let (bytes, old) = pack_encrypted(3);
        let src = d.path().join("c.h4mk");
        std::fs::write(&src, &bytes).unwrap();
        let new = MasterKey::from_bytes([5; 32]);
        let dst = d.path().join("rekeyed.h4mk");
        let s = rekey(&src, &old, &new, out(&dst, false)).unwrap();
        assert_eq!(s.old_key_id, old.id_hex());
        assert_eq!(s.new_key_id, new.id_hex());
        let after = std::fs::read(&dst).unwrap();
        assert_eq!(after.len(), bytes.len());
        let mut b = open(&after).unwrap();
        assert_eq!(b.footer.unwrap().1.root, s.root);
        // Blocks and index are byte for byte the same; only HENC, the footer and VERI
        // changed.
        let (henc, footer) = (
            b.footer.unwrap().1.henc_offset as usize,
            b.footer.unwrap().0 as usize,
        );
        assert_eq!(after[..henc], bytes[..henc]);
        assert_ne!(
            after[henc..henc + 12 + crate::crypto::container::HENC_PAYLOAD_LEN],
            bytes[henc..henc + 12 + crate::crypto::container::HENC_PAYLOAD_LEN]
        );
        assert_eq!(
            after[henc + 12 + crate::crypto::container::HENC_PAYLOAD_LEN..footer],
            bytes[henc + 12 + crate::crypto::container::HENC_PAYLOAD_LEN..footer]
        );
        assert!(matches!(b.attach_key(&old), Err(Error::WrongKey { .. })));
        b.attach_key(&new).unwrap();
        b.check_veri(&|_| {}).unwrap();
        let mut a = open(&bytes).unwrap();
        a.attach_key(&old).unwrap();
        for n in 0..3 {
            assert_eq!(b.read_block(0, n).unwrap(), a.read_block(0, n).unwrap());
        }
    }

    #[test]
    fn a_wrong_old_key_or_a_plain_container_is_refused_and_nothing_is_written() {
        let d = tempfile::tempdir().unwrap();
        let (bytes, _) = pack_encrypted(2);
        let src = d.path().join("c.h4mk");
        std::fs::write(&src, &bytes).unwrap();
        let dst = d.path().join("rekeyed.h4mk");
        let wrong = MasterKey::from_bytes([1; 32]);
        let e = rekey(&src, &wrong, &wrong, out(&dst, false)).unwrap_err();
        assert!(matches!(e, Error::WrongKey { .. }), "{e}");
        assert!(!dst.exists());

        let plain = d.path().join("plain.h4mk");
        std::fs::write(
            &plain,
            crate::reader::tests::pack_h4fs(&[3, 4], 1, crate::engine::Engine::Identity),
        )
        .unwrap();
        let e = rekey(&plain, &wrong, &wrong, out(&dst, false)).unwrap_err();
        assert!(matches!(e, Error::BadInput(_)), "{e}");
        assert!(
            e.to_string().contains("is not an encrypted h4fs container"),
            "{e}"
        );
        assert!(!dst.exists());
    }
}
