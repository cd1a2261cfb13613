//! Keys: attaching them checks them before any data is served.

use super::table::BlockTable;
use super::{Archive, JsonChunk, Layout};
use crate::crypto::{self, Decryptor, MasterKey, SharedSecret};
use crate::error::{Error, Result, Tag};
use crate::integrity;
use rayon::prelude::*;

impl Archive {
    /// True when blocks can be decoded as far as keys go: the container is not
    /// encrypted, or its key is attached.
    pub fn has_key(&self) -> bool {
        self.encryption.is_none() || self.decryptor.is_some()
    }

    /// True when a key or secret is attached.
    pub fn key_attached(&self) -> bool {
        self.decryptor.is_some()
    }

    /// Attach the master key of an h4fs-encrypted container. A different key gives
    /// [`Error::WrongKey`] ("the key does not match this container") here, before any
    /// block is read.
    pub fn attach_key(&mut self, key: &MasterKey) -> Result<()> {
        let Some(enc) = &self.encryption else {
            return Err(Error::BadInput(
                "the container is not encrypted: it needs no key".into(),
            ));
        };
        let henc_offset = match (self.layout, self.footer) {
            (Layout::H4fs, Some((_, f))) if f.henc_offset != 0 => f.henc_offset,
            (Layout::H4fs, Some((at, _))) => {
                return Err(Error::Chunk {
                    tag: Tag::HFTR,
                    offset: at,
                    msg: format!(
                        "META says the blocks are encrypted ({}), but the footer names no \
                         HENC chunk holding their key: the container was altered",
                        enc.cipher
                    ),
                });
            }
            _ => {
                return Err(Error::BadInput(format!(
                    "the container is encrypted with {}, not with an h4fs key; a reference \
                     file needs its shared secret (--shared-secret-file)",
                    enc.cipher
                )));
            }
        };
        let henc = crypto::Henc::from_value(&enc.record, henc_offset)?;
        let c = crypto::ContainerCrypto::open(key, &henc)?;
        // With the key, the structure is authenticated too, not just hashed.
        let (Some(BlockTable::Index { payload, .. }), Some((_, footer))) =
            (self.tracks.first().map(|t| &t.blocks), self.footer)
        else {
            return Err(Error::Internal(
                "an h4fs container has a footer and one indexed track".into(),
            ));
        };
        fn raw(j: &Option<JsonChunk>) -> &[u8] {
            j.as_ref().map_or(&[][..], |j| &j.raw[..])
        }
        let structure = crypto::container::structure_digest(
            footer.flags,
            footer.block_count,
            footer.stream_len,
            self.seek_raw.as_ref().map_or(&[][..], |s| &s.1[..]),
            raw(&self.meta),
            raw(&self.safe),
            payload,
        );
        c.check_structure(&henc, &structure, henc_offset)?;
        self.decryptor = Some(Decryptor::H4fs(Box::new(c)));
        Ok(())
    }

    /// Attach the shared secret of a container written by the reference's encrypted
    /// export (Living Cipher v3). Decrypts every block once (in parallel) to learn the
    /// decoded sizes and check the transcript chain; a secret that does not
    /// authenticate block 0 gives [`Error::WrongKey`], any other bad block an error
    /// naming it. Whether the secret is the reference's public default is
    /// [`SharedSecret::is_reference_default`].
    pub fn attach_shared_secret(&mut self, secret: &SharedSecret) -> Result<()> {
        let cipher = self.encryption.as_ref().map(|e| e.cipher.as_str());
        if self.layout != Layout::ReferenceA || cipher != Some(crypto::living::CIPHER) {
            return Err(Error::BadInput(format!(
                "a shared secret opens reference files encrypted with {}; this container is {}",
                crypto::living::CIPHER,
                match cipher {
                    None => "not encrypted".to_string(),
                    Some(c) => format!("encrypted with {c} (use --key-file)"),
                }
            )));
        }
        let lc = crypto::LivingCipher::new(secret);
        let Some(BlockTable::List(blocks)) = self.tracks.first().map(|t| &t.blocks) else {
            return Err(Error::Internal(
                "a reference container has one listed track".into(),
            ));
        };
        if let Some(e0) = blocks.first() {
            let stored = self.read_stored_entry(e0)?;
            if let Err(Error::BlockAuth { .. }) = lc.decrypt_block(0, e0.chunk_offset, &stored) {
                return Err(Error::WrongKey {
                    detail: " (the shared secret does not authenticate block 0)".into(),
                });
            }
        }
        let engine = self.engine.known().ok();
        let hdr = crypto::living::HEADER_LEN;
        // Decoded length, recorded transcript, SHA-256 of header and of the rest.
        type Scanned = (Option<u64>, [u8; 32], [u8; 32], [u8; 32]);
        let found: Vec<Result<Scanned>> = blocks
            .par_iter()
            .map(|e| {
                let stored = self.read_stored_entry(e)?;
                let h = crypto::living::parse_header(&stored, e.number, e.chunk_offset)?;
                let plain = lc.decrypt_block(e.number, e.chunk_offset, &stored)?;
                let decoded = match engine {
                    Some(en) => Some(en.decoded_len(&plain).map_err(|msg| Error::Block {
                        block: e.number,
                        offset: e.chunk_offset,
                        msg,
                    })?),
                    None => None,
                };
                Ok((
                    decoded,
                    h.transcript,
                    integrity::sha256(&stored[..hdr]),
                    integrity::sha256(&stored[hdr..]),
                ))
            })
            .collect();
        let mut transcript = crypto::living::Transcript::new();
        let mut relaid = blocks.clone();
        let mut stream = 0u64;
        for (e, r) in relaid.iter_mut().zip(found) {
            let (decoded, recorded, hh, bh) = r?;
            transcript.advance(e.number, e.chunk_offset, &recorded, &hh, &bh)?;
            if let Some(n) = decoded {
                e.decoded_len = n;
                e.stream_offset = stream;
                stream += n;
            }
        }
        if engine.is_some() {
            self.tracks[0].blocks = BlockTable::List(relaid);
            self.sizes_exact = true;
        }
        self.decryptor = Some(Decryptor::Living(lc));
        Ok(())
    }
}
