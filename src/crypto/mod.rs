//! Encryption of blocks: h4fs's own construction and the reference's Living Cipher v3.
//!
//! Why a module of its own: the reader, the writer, `verify` and the mount all need the
//! same three things — load a key without leaking it, turn a block's stored bytes into
//! authenticated plaintext given only its index entry, and refuse a wrong key before
//! touching data — and none of them should know how.
//!
//! * [`key`]: [`MasterKey`] and [`SharedSecret`] (zeroized on drop, no `Debug` of the
//!   bytes), key files (64 hex digits + newline, or 32 raw bytes), [`keygen`] (mode 0600,
//!   never overwrites), a warning for group/other-readable files.
//! * [`container`]: h4fs containers. AES-256-GCM per block under a per-container data
//!   key derived with HKDF-SHA256 from the master key and a content-derived container
//!   id; nonce = (track, block index); AAD binds container id, position, pts, keyframe
//!   and lengths. The data key is stored wrapped under the master key in the `HENC`
//!   chunk, which doubles as the key check and allows rotation by re-wrapping.
//! * [`living`]: decryption of reference files (hash-ratchet chain keys, cached so all
//!   blocks cost O(blocks) in total), transcript check, default-secret detection.
//!
//! Encryption happens after compression and the ciphertext is what CORE stores, so the
//! per-block SHA-256, the index and the structure root cover ciphertext: `verify`
//! checks integrity without the key and authenticates blocks with it.

pub mod container;
pub mod key;
pub mod living;

pub use container::{BlockContext, ContainerCrypto, ContentDigest, ContentHasher, Henc};
pub use key::{MasterKey, SharedSecret, disable_core_dumps, keygen};
pub use living::LivingCipher;

/// The key material attached to an opened container: what turns its stored bytes
/// into compressed plaintext.
#[derive(Debug)]
pub enum Decryptor {
    /// An h4fs container opened with its master key.
    H4fs(Box<ContainerCrypto>),
    /// A reference container opened with its shared secret.
    Living(LivingCipher),
}

impl Decryptor {
    /// Authenticate and decrypt the stored bytes of the block `ctx` describes.
    pub fn open(&self, ctx: &BlockContext, stored: Vec<u8>) -> crate::Result<Vec<u8>> {
        match self {
            Decryptor::H4fs(c) => c.open_in_place(ctx, stored),
            Decryptor::Living(l) => l.decrypt_block(ctx.index, ctx.chunk_offset, &stored),
        }
    }
}
