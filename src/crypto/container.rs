//! h4fs's own encryption: AES-256-GCM per block under a per-container key.
//!
//! Every value below is fixed by this file; docs/FORMAT.md (section 9) gives the same
//! at byte level and docs/SECURITY.md the reasoning.
//!
//! ```text
//! prk_m        = HKDF-Extract(salt = "h4fs/v1/master", ikm = master key)
//! key_id       = HKDF-Expand(prk_m, "h4fs/v1/key-id", 8)                      public
//! content      = SHA-256 of the source stream hash, engine id and block plan  (ContentHasher)
//! container_id = HKDF-Expand(prk_m, "h4fs/v1/container-id" 00 | content, 32)
//! data_key     = HKDF-Expand(prk_m, "h4fs/v1/data-key" 00 | container_id, 32)
//! wrap_key     = HKDF-Expand(prk_m, "h4fs/v1/wrap-key", 32)
//! wrap_nonce   = HKDF-Expand(prk_m, "h4fs/v1/wrap-nonce" 00 | container_id | data_key, 12)
//! wrapped_key  = AES-256-GCM(wrap_key, wrap_nonce, aad = "h4fs/v1/HENC" | container_id,
//!                            data_key)                       32 bytes + 16-byte tag
//! prk_d        = HKDF-Extract(salt = "h4fs/v1/data", ikm = data_key)
//! block_key    = HKDF-Expand(prk_d, "h4fs/v1/block-key" 00 | container_id, 32)
//! mac_key      = HKDF-Expand(prk_d, "h4fs/v1/structure-mac" 00 | container_id, 32)
//! structure    = SHA-256("h4fs/v1/structure" 00 | u32be footer flags | u64be block_count
//!                        | u64be stream_len | H(SEEK) | H(META) | H(SAFE)
//!                        | H(index header | entries without their sha256))
//! structure_mac = HMAC-SHA256(mac_key, structure | 01)        (= HKDF-Expand, 32 bytes)
//! nonce(b)     = u32be track | u64be index                              12 bytes
//! aad(b)       = "h4fs/v1/block" | container_id | u32be track | u64be index
//!              | u64be pts_us | u8 flags (bit 0 keyframe) | u64be plaintext_len
//!              | u64be decoded_len                                      82 bytes
//! stored(b)    = AES-256-GCM(block_key, nonce(b), aad(b), plaintext) | tag[16]
//! ```
//!
//! Invariants:
//! * Nonce uniqueness: under one `block_key` a nonce names exactly one (track, index).
//!   `block_key` is a function of `container_id`, which is a PRF of everything that
//!   determines a block's plaintext and AAD (source bytes, engine, block plan); so a
//!   (key, nonce) pair repeats only when the plaintext and AAD repeat too, and then the
//!   output is identical bytes, never a second message under one nonce.
//! * Determinism: every value above is a function of the master key and the content;
//!   nothing random, nothing from the clock.
//! * Random access: opening a block needs the one `block_key` (derived once per
//!   container) and its index entry; no chain to walk.
//! * Key check: the wrapped data key's GCM tag authenticates the master key, so a wrong
//!   key is refused when the container is opened, before any block is read; `key_id`
//!   tells "another key" apart from "damaged HENC".
//! * Structure: `structure_mac` (in HENC) authenticates SEEK, META, SAFE, the block
//!   index and the footer's flags and totals under the key, so an attacker who rewrites
//!   them and recomputes every unkeyed hash (CRCs, root, VERI) is still caught by a
//!   reader holding the key.
//! * Rotation: the data key never changes; [`Henc::rewrap`] re-encrypts it under a new
//!   master key, so only the fixed-length HENC payload changes.

pub use super::key::KEY_ID_LEN;
use super::key::{MasterKey, key_id};
use crate::error::{Error, Result, Tag};
use crate::format::h4fs as hf;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The cipher name recorded in HENC (and shown by `inspect`).
pub const CIPHER: &str = "h4fs-aes-256-gcm-v1";
/// How encryption and compression compose.
pub const MODE: &str = "compress-then-encrypt";
/// The key derivation recorded in HENC.
pub const KDF: &str = "hkdf-sha256";
/// Bytes the tag adds to every block.
pub const TAG_LEN: usize = 16;
/// Length of a block nonce.
pub const NONCE_LEN: usize = 12;
/// Length of a block's associated data.
pub const AAD_LEN: usize = BLOCK_LABEL.len() + 32 + 4 + 8 + 8 + 1 + 8 + 8;
/// Length of the wrapped data key (ciphertext and tag).
pub const WRAPPED_LEN: usize = 32 + TAG_LEN;
/// Length of every HENC payload (all its values are fixed-length).
pub const HENC_PAYLOAD_LEN: usize = 429;

const DATA_SALT: &[u8] = b"h4fs/v1/data";
const CONTAINER_ID_LABEL: &[u8] = b"h4fs/v1/container-id";
const DATA_KEY_LABEL: &[u8] = b"h4fs/v1/data-key";
const WRAP_KEY_LABEL: &[u8] = b"h4fs/v1/wrap-key";
const WRAP_NONCE_LABEL: &[u8] = b"h4fs/v1/wrap-nonce";
const BLOCK_KEY_LABEL: &[u8] = b"h4fs/v1/block-key";
const WRAP_AAD_LABEL: &[u8] = b"h4fs/v1/HENC";
const BLOCK_LABEL: &[u8] = b"h4fs/v1/block";
const CONTENT_LABEL: &[u8] = b"h4fs/v1/content\0";
const STRUCTURE_MAC_LABEL: &[u8] = b"h4fs/v1/structure-mac";
const STRUCTURE_LABEL: &[u8] = b"h4fs/v1/structure\0";

/// HKDF-Expand of `parts` concatenated, into `N` bytes held in zeroizing memory.
fn expand<const N: usize>(prk: &Hkdf<Sha256>, parts: &[&[u8]]) -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    prk.expand_multi_info(parts, &mut out[..])
        .expect("HKDF-SHA256 can expand up to 8160 bytes");
    out
}

fn master_prk(master: &MasterKey) -> Hkdf<Sha256> {
    master.prk()
}

/// The public identifier of a master key, as lowercase hex (16 digits)
/// ([`MasterKey::id_hex`]).
pub fn key_id_hex(master: &MasterKey) -> String {
    master.id_hex()
}

/// A digest of everything that determines a container's block plaintexts and
/// associated data. Built only by [`ContentHasher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentDigest([u8; 32]);

impl ContentDigest {
    /// The digest bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Builds a [`ContentDigest`]:
///
/// ```text
/// SHA-256("h4fs/v1/content\0" | source_sha256[32] | u32be len(engine_id) | engine_id
///         | per block: u32be track | u64be decoded_len | u64be pts_us | u8 keyframe
///         | u64be block_count)
/// ```
///
/// Feed it the whole plan before sealing any block: the packer hashes the source (a
/// first pass over the input) and lists the blocks, then derives the container id.
#[derive(Clone)]
pub struct ContentHasher {
    h: Sha256,
    blocks: u64,
}

impl ContentHasher {
    /// Start with the SHA-256 of the whole source stream and the engine's versioned
    /// identifier (`Engine::engine_id()`).
    pub fn new(source_sha256: &[u8; 32], engine_id: &str) -> ContentHasher {
        let mut h = Sha256::new();
        h.update(CONTENT_LABEL);
        h.update(source_sha256);
        h.update((engine_id.len() as u32).to_be_bytes());
        h.update(engine_id.as_bytes());
        ContentHasher { h, blocks: 0 }
    }

    /// Add the next block of the plan, in container order.
    pub fn block(&mut self, track: u32, decoded_len: u64, pts_us: u64, keyframe: bool) {
        self.h.update(track.to_be_bytes());
        self.h.update(decoded_len.to_be_bytes());
        self.h.update(pts_us.to_be_bytes());
        self.h.update([keyframe as u8]);
        self.blocks += 1;
    }

    /// The digest.
    pub fn finish(mut self) -> ContentDigest {
        self.h.update(self.blocks.to_be_bytes());
        ContentDigest(self.h.finalize().into())
    }
}

/// Where a block sits: everything its associated data binds, plus its file offset for
/// messages (the offset is not authenticated: the index, covered by the structure root,
/// may place blocks anywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockContext {
    /// Block number within its track.
    pub index: u64,
    pub track: u32,
    pub pts_us: u64,
    pub keyframe: bool,
    /// Length after decryption and decompression (the index's `decoded_len`).
    pub decoded_len: u64,
    /// File offset of the block's CORE chunk, for error messages only.
    pub chunk_offset: u64,
}

impl BlockContext {
    /// The 12-byte nonce: `u32be track | u64be index`.
    pub fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[..4].copy_from_slice(&self.track.to_be_bytes());
        n[4..].copy_from_slice(&self.index.to_be_bytes());
        n
    }

    /// The associated data for a block of `plaintext_len` bytes in `container_id`.
    pub fn aad(&self, container_id: &[u8; 32], plaintext_len: u64) -> [u8; AAD_LEN] {
        let mut a = [0u8; AAD_LEN];
        let mut at = 0;
        for part in [
            BLOCK_LABEL,
            container_id,
            &self.track.to_be_bytes(),
            &self.index.to_be_bytes(),
            &self.pts_us.to_be_bytes(),
            &[self.keyframe as u8],
            &plaintext_len.to_be_bytes(),
            &self.decoded_len.to_be_bytes(),
        ] {
            a[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        debug_assert_eq!(at, AAD_LEN);
        a
    }
}

/// The HENC chunk's record: which container, which key, and the wrapped data key.
///
/// Its payload is compact JSON with the keys in this order (every value fixed-length,
/// so the payload length never changes, not even on rotation):
///
/// ```text
/// {"cipher":"h4fs-aes-256-gcm-v1","mode":"compress-then-encrypt","kdf":"hkdf-sha256",
///  "container_id":"<64 hex>","key_id":"<16 hex>","wrap_nonce":"<24 hex>",
///  "wrapped_key":"<96 hex>","structure_mac":"<64 hex>"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Henc {
    pub container_id: [u8; 32],
    pub key_id: [u8; KEY_ID_LEN],
    pub wrap_nonce: [u8; NONCE_LEN],
    pub wrapped_key: [u8; WRAPPED_LEN],
    /// Set by [`ContainerCrypto::seal_structure`] once the container's structure is known.
    pub structure_mac: [u8; 32],
}

impl Henc {
    /// The JSON value of the record.
    pub fn to_json(&self) -> Value {
        json!({
            "cipher": CIPHER,
            "mode": MODE,
            "kdf": KDF,
            "container_id": hex::encode(self.container_id),
            "key_id": hex::encode(self.key_id),
            "wrap_nonce": hex::encode(self.wrap_nonce),
            "wrapped_key": hex::encode(self.wrapped_key),
            "structure_mac": hex::encode(self.structure_mac),
        })
    }

    /// The HENC chunk payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).expect("JSON values serialize")
    }

    /// Parse an HENC payload; `offset` (the chunk's file offset) is for messages.
    pub fn parse(payload: &[u8], offset: u64) -> Result<Henc> {
        let bad = |msg: String| Error::Chunk {
            tag: Tag::HENC,
            offset,
            msg,
        };
        let v: Value = serde_json::from_slice(payload)
            .map_err(|e| bad(format!("not a JSON encryption record: {e}")))?;
        Henc::from_value(&v, offset)
    }

    /// Interpret an already parsed HENC payload (see [`parse`](Self::parse)).
    pub fn from_value(v: &Value, offset: u64) -> Result<Henc> {
        let bad = |msg: String| Error::Chunk {
            tag: Tag::HENC,
            offset,
            msg,
        };
        let Some(obj) = v.as_object() else {
            return Err(bad("the encryption record is not a JSON object".into()));
        };
        let text = |k: &str| -> Result<String> {
            obj.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("no \"{k}\" string in the encryption record")))
        };
        let cipher = text("cipher")?;
        if cipher != CIPHER {
            return Err(bad(format!(
                "cipher \"{cipher}\" is not known to h4fs (expected \"{CIPHER}\")"
            )));
        }
        for (k, want) in [("mode", MODE), ("kdf", KDF)] {
            let got = text(k)?;
            if got != want {
                return Err(bad(format!("\"{k}\" is \"{got}\", expected \"{want}\"")));
            }
        }
        const FIELDS: [&str; 8] = [
            "cipher",
            "mode",
            "kdf",
            "container_id",
            "key_id",
            "wrap_nonce",
            "wrapped_key",
            "structure_mac",
        ];
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown field \"{k}\" in the encryption record"
            )));
        }
        let hex_field = |k: &str, out: &mut [u8]| -> Result<()> {
            hex::decode_to_slice(text(k)?, out).map_err(|_| {
                bad(format!(
                    "\"{k}\" must be {} hexadecimal digits",
                    2 * out.len()
                ))
            })
        };
        let mut h = Henc {
            container_id: [0; 32],
            key_id: [0; KEY_ID_LEN],
            wrap_nonce: [0; NONCE_LEN],
            wrapped_key: [0; WRAPPED_LEN],
            structure_mac: [0; 32],
        };
        hex_field("container_id", &mut h.container_id)?;
        hex_field("key_id", &mut h.key_id)?;
        hex_field("wrap_nonce", &mut h.wrap_nonce)?;
        hex_field("wrapped_key", &mut h.wrapped_key)?;
        hex_field("structure_mac", &mut h.structure_mac)?;
        Ok(h)
    }

    fn wrap_aad(container_id: &[u8; 32]) -> Vec<u8> {
        [WRAP_AAD_LABEL, container_id].concat()
    }

    /// Wrap `data_key` for `container_id` under the master key behind `prk`.
    fn wrap(prk: &Hkdf<Sha256>, container_id: [u8; 32], data_key: &[u8; 32]) -> Henc {
        let wrap_key = expand::<32>(prk, &[WRAP_KEY_LABEL]);
        let nonce = expand::<NONCE_LEN>(prk, &[WRAP_NONCE_LABEL, &[0], &container_id, data_key]);
        let cipher = Aes256Gcm::new_from_slice(&wrap_key[..]).expect("32-byte key");
        let mut buf = Zeroizing::new(data_key.to_vec());
        let tag = cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce[..]),
                &Self::wrap_aad(&container_id),
                &mut buf,
            )
            .expect("32 bytes encrypt");
        let mut wrapped_key = [0u8; WRAPPED_LEN];
        wrapped_key[..32].copy_from_slice(&buf);
        wrapped_key[32..].copy_from_slice(&tag);
        Henc {
            container_id,
            key_id: key_id(prk),
            wrap_nonce: *nonce,
            wrapped_key,
            structure_mac: [0; 32],
        }
    }

    /// Recover the data key with `master`; [`Error::WrongKey`] when it is another key.
    fn unwrap(&self, master: &MasterKey) -> Result<Zeroizing<[u8; 32]>> {
        let prk = master_prk(master);
        let given = key_id(&prk);
        if given != self.key_id {
            return Err(Error::WrongKey {
                detail: format!(
                    " (it was encrypted with key id {}; the key given has id {})",
                    hex::encode(self.key_id),
                    hex::encode(given)
                ),
            });
        }
        let wrap_key = expand::<32>(&prk, &[WRAP_KEY_LABEL]);
        let cipher = Aes256Gcm::new_from_slice(&wrap_key[..]).expect("32-byte key");
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&self.wrapped_key[..32]);
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&self.wrap_nonce),
                &Self::wrap_aad(&self.container_id),
                &mut key[..],
                self.wrapped_key[32..].into(),
            )
            .map_err(|_| Error::WrongKey {
                detail: format!(
                    " (key id {} matches, but the wrapped data key fails authentication: \
                     the HENC record is damaged or was made with another key)",
                    hex::encode(self.key_id)
                ),
            })?;
        Ok(key)
    }

    /// Key rotation: the same record with its data key re-wrapped under `new`. Fails
    /// with [`Error::WrongKey`] when `old` does not open it. The container id, the data
    /// key and so every block stay as they are; the payload length does not change.
    pub fn rewrap(&self, old: &MasterKey, new: &MasterKey) -> Result<Henc> {
        let data_key = self.unwrap(old)?;
        Ok(Henc {
            structure_mac: self.structure_mac,
            ..Henc::wrap(&master_prk(new), self.container_id, &data_key)
        })
    }
}

/// The unkeyed digest of a container's structure that `structure_mac` authenticates:
///
/// ```text
/// SHA-256("h4fs/v1/structure" 00 | u32be footer flags | u64be block_count
///         | u64be stream_len | SHA-256(SEEK) | SHA-256(META) | SHA-256(SAFE)
///         | SHA-256(index header | each entry without its sha256, i.e. bytes 0..40))
/// ```
///
/// Payloads are the chunk payloads as stored. The entries' SHA-256 column is left out
/// on purpose: each block's content is authenticated by its own GCM tag, so a damaged
/// block is reported as that block (and the others stay readable) instead of making the
/// whole structure fail. Everything else of the index (where blocks are, their lengths,
/// pts, flags) is covered, as are the block count and stream length, so dropping or
/// reordering blocks is caught too.
pub fn structure_digest(
    flags: u32,
    block_count: u64,
    stream_len: u64,
    seek: &[u8],
    meta: &[u8],
    safe: &[u8],
    index: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(STRUCTURE_LABEL);
    h.update(flags.to_be_bytes());
    h.update(block_count.to_be_bytes());
    h.update(stream_len.to_be_bytes());
    for part in [seek, meta, safe] {
        h.update(Sha256::digest(part));
    }
    let split = hf::INDEX_HEADER_LEN.min(index.len());
    let mut ih = Sha256::new();
    ih.update(&index[..split]);
    for e in index[split..].chunks(hf::ENTRY_LEN) {
        ih.update(&e[..e.len().min(ENTRY_SHA_AT)]);
    }
    h.update(ih.finalize());
    h.finalize().into()
}

/// Offset of the SHA-256 within an index entry.
const ENTRY_SHA_AT: usize = 40;

/// Seals and opens the blocks of one container. Holds only the block cipher (whose key
/// schedule is zeroized on drop), the structure MAC key and the public container id.
#[derive(Clone)]
pub struct ContainerCrypto {
    container_id: [u8; 32],
    cipher: Aes256Gcm,
    mac_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ContainerCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerCrypto")
            .field("container_id", &hex::encode(self.container_id))
            .finish_non_exhaustive()
    }
}

impl ContainerCrypto {
    /// Keys for a new container with `content`, and its HENC record; once the container's
    /// structure is final, [`seal_structure`](Self::seal_structure) fills in the
    /// record's `structure_mac` before it is written.
    pub fn new(master: &MasterKey, content: &ContentDigest) -> (ContainerCrypto, Henc) {
        let prk = master_prk(master);
        let container_id = *expand::<32>(&prk, &[CONTAINER_ID_LABEL, &[0], content.bytes()]);
        let data_key = expand::<32>(&prk, &[DATA_KEY_LABEL, &[0], &container_id]);
        let henc = Henc::wrap(&prk, container_id, &data_key);
        (
            ContainerCrypto::from_data_key(container_id, &data_key),
            henc,
        )
    }

    /// Keys of an existing container. A wrong master key gives [`Error::WrongKey`]
    /// ("the key does not match this container") before any block is touched.
    pub fn open(master: &MasterKey, henc: &Henc) -> Result<ContainerCrypto> {
        let data_key = henc.unwrap(master)?;
        Ok(ContainerCrypto::from_data_key(henc.container_id, &data_key))
    }

    fn from_data_key(container_id: [u8; 32], data_key: &[u8; 32]) -> ContainerCrypto {
        let prk = Hkdf::<Sha256>::new(Some(DATA_SALT), data_key);
        let block_key = expand::<32>(&prk, &[BLOCK_KEY_LABEL, &[0], &container_id]);
        ContainerCrypto {
            container_id,
            cipher: Aes256Gcm::new_from_slice(&block_key[..]).expect("32-byte key"),
            mac_key: expand::<32>(&prk, &[STRUCTURE_MAC_LABEL, &[0], &container_id]),
        }
    }

    /// `HMAC-SHA256(mac_key, digest | 01)` of a [`structure_digest`].
    pub fn structure_mac(&self, digest: &[u8; 32]) -> [u8; 32] {
        let mac = Hkdf::<Sha256>::from_prk(&self.mac_key[..]).expect("32-byte PRK");
        let mut out = [0u8; 32];
        mac.expand(digest, &mut out).expect("32 bytes");
        out
    }

    /// Record the MAC of the finished container's structure in its HENC record.
    pub fn seal_structure(&self, henc: &mut Henc, digest: &[u8; 32]) {
        henc.structure_mac = self.structure_mac(digest);
    }

    /// Check HENC's `structure_mac` against the structure as read (`henc_offset` is for
    /// messages). A mismatch means SEEK, META, SAFE, the index or the footer's flags or
    /// totals changed since the key holder wrote the container.
    pub fn check_structure(&self, henc: &Henc, digest: &[u8; 32], henc_offset: u64) -> Result<()> {
        let want = self.structure_mac(digest);
        let diff = want
            .iter()
            .zip(&henc.structure_mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(Error::Chunk {
                tag: Tag::HENC,
                offset: henc_offset,
                msg: "structure authentication failed: SEEK, META, SAFE, the block index or \
                      the footer differ from what the key holder wrote"
                    .into(),
            });
        }
        Ok(())
    }

    /// The public container identifier.
    pub fn container_id(&self) -> &[u8; 32] {
        &self.container_id
    }

    /// Encrypt a block's plaintext (its compressed bytes): ciphertext followed by the tag.
    pub fn seal(&self, ctx: &BlockContext, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(ctx, &mut buf)?;
        Ok(buf)
    }

    /// [`seal`](Self::seal) without copying: `buf` holds the plaintext and becomes the
    /// stored bytes.
    pub fn seal_in_place(&self, ctx: &BlockContext, buf: &mut Vec<u8>) -> Result<()> {
        let aad = ctx.aad(&self.container_id, buf.len() as u64);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&ctx.nonce()), &aad, buf)
            .map_err(|_| {
                Error::Limit(format!(
                    "block {} of {} bytes is too large for AES-GCM",
                    ctx.index,
                    buf.len()
                ))
            })?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Authenticate and decrypt a block's stored bytes. Any change to the bytes, to the
    /// block's position (track, index), to its index entry (pts, keyframe, lengths) or
    /// a block from another container gives [`Error::BlockAuth`]; never wrong bytes.
    pub fn open_block(&self, ctx: &BlockContext, stored: &[u8]) -> Result<Vec<u8>> {
        self.open_in_place(ctx, stored.to_vec())
    }

    /// [`open_block`](Self::open_block) reusing the stored bytes' buffer.
    pub fn open_in_place(&self, ctx: &BlockContext, mut stored: Vec<u8>) -> Result<Vec<u8>> {
        let fail = |why: &str| Error::BlockAuth {
            block: ctx.index,
            offset: ctx.chunk_offset,
            why: why.to_string(),
        };
        let Some(ct_len) = stored.len().checked_sub(TAG_LEN) else {
            return Err(fail("stored bytes are shorter than the 16-byte tag"));
        };
        let tag: [u8; TAG_LEN] = stored[ct_len..].try_into().expect("16 bytes");
        stored.truncate(ct_len);
        let aad = ctx.aad(&self.container_id, ct_len as u64);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&ctx.nonce()),
                &aad,
                &mut stored,
                (&tag).into(),
            )
            .map_err(|_| {
                fail(
                    "AES-GCM tag mismatch: the block was altered, moved from another \
                     position or container, or its index entry was edited",
                )
            })?;
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(seed: u8) -> ContentDigest {
        let mut h = ContentHasher::new(&[seed; 32], "h4fs-identity-1");
        h.block(0, 10, 0, true);
        h.finish()
    }

    fn ctx(index: u64) -> BlockContext {
        BlockContext {
            index,
            track: 0,
            pts_us: index * 33_333,
            keyframe: index % 2 == 0,
            decoded_len: 5,
            chunk_offset: 8,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let m = MasterKey::from_bytes([1; 32]);
        let (c, henc) = ContainerCrypto::new(&m, &digest(1));
        let stored = c.seal(&ctx(3), b"hello").unwrap();
        assert_eq!(stored.len(), 5 + TAG_LEN);
        assert_ne!(&stored[..5], b"hello");
        let c2 = ContainerCrypto::open(&m, &Henc::parse(&henc.to_bytes(), 0).unwrap()).unwrap();
        assert_eq!(c2.open_block(&ctx(3), &stored).unwrap(), b"hello");
        assert_eq!(c2.container_id(), c.container_id());
    }

    #[test]
    fn aad_and_nonce_layout() {
        let c = BlockContext {
            index: 0x0102,
            track: 7,
            pts_us: 0x0a0b,
            keyframe: true,
            decoded_len: 0x99,
            chunk_offset: 1234,
        };
        assert_eq!(hex::encode(c.nonce()), "000000070000000000000102");
        let a = c.aad(&[0xee; 32], 0x55);
        assert_eq!(a.len(), 82);
        assert_eq!(&a[..13], b"h4fs/v1/block");
        assert_eq!(a[13..45], [0xee; 32]);
        assert_eq!(
            hex::encode(&a[45..]),
            "00000007\
             0000000000000102\
             0000000000000a0b\
             01\
             0000000000000055\
             0000000000000099"
        );
    }

    #[test]
    fn henc_payload_is_fixed_length_json() {
        let (_, h1) = ContainerCrypto::new(&MasterKey::from_bytes([1; 32]), &digest(1));
        let (_, h2) = ContainerCrypto::new(&MasterKey::from_bytes([2; 32]), &digest(9));
        let b = h1.to_bytes();
        assert_eq!(b.len(), HENC_PAYLOAD_LEN);
        assert_eq!(h2.to_bytes().len(), HENC_PAYLOAD_LEN);
        let text = std::str::from_utf8(&b).unwrap();
        assert!(text.starts_with(r#"{"cipher":"h4fs-aes-256-gcm-v1","mode":"compress-then-encrypt","kdf":"hkdf-sha256","container_id":""#), "{text}");
        assert_eq!(Henc::parse(&b, 0).unwrap(), h1);
    }

    #[test]
    fn henc_parse_errors_name_the_problem() {
        let (_, h) = ContainerCrypto::new(&MasterKey::from_bytes([1; 32]), &digest(1));
        let mut v = h.to_json();
        v["cipher"] = json!("living-cipher-v3");
        let e = Henc::parse(&serde_json::to_vec(&v).unwrap(), 77)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HENC") && e.contains("77") && e.contains("living-cipher-v3"),
            "{e}"
        );
        let mut v = h.to_json();
        v["key_id"] = json!("abc");
        let e = Henc::parse(&serde_json::to_vec(&v).unwrap(), 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"key_id\" must be 16 hexadecimal digits"),
            "{e}"
        );
        let mut v = h.to_json();
        v["extra"] = json!(1);
        let e = Henc::parse(&serde_json::to_vec(&v).unwrap(), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field \"extra\""), "{e}");
        assert!(Henc::parse(b"[1]", 0).is_err());
        assert!(Henc::parse(b"\xff", 0).is_err());
    }

    #[test]
    fn key_id_is_public_and_stable() {
        let m = MasterKey::from_bytes([1; 32]);
        assert_eq!(key_id_hex(&m).len(), 16);
        assert_eq!(key_id_hex(&m), key_id_hex(&m.clone()));
        assert_ne!(key_id_hex(&m), key_id_hex(&MasterKey::from_bytes([2; 32])));
        assert!(format!("{m:?}").contains(&key_id_hex(&m)));
    }
}
