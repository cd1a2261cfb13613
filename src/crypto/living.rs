//! Reading the reference's encrypted containers: Living Cipher v3.
//!
//! The reference encrypts block `i` as message `n = i` of a hash ratchet (all HKDF is
//! HKDF-SHA256 with an empty salt; `C` and `S` below are byte strings):
//!
//! ```text
//! C        = "Harmony" C3 98 "4|LivingCipher|v3"
//! S        = "H4-LIVING-AESGCM-HKDF-SHA256-v3"                    (31 bytes)
//! R        = S | "|ratchet"
//! root     = HKDF(secret, C | "|root", 32)
//! ck[0]    = HKDF(root, C | "|ck_send", 32)
//! mk[n]    = HKDF(ck[n], R | "|mk|" | u64be n, 32)
//! nonce[n] = HKDF(mk[n], "nonce|" | u64be n, 12)
//! ck[n+1]  = HKDF(ck[n], R | "|ck|" | u64be n, 32)
//! payload  = header[78] | ciphertext | tag[16]
//! header   = "H4LC3" | u8 31 | S | u64be n | transcript[32] | u8 flags
//! aad      = "H4MK|unknown|unknown|" | hex(sha256("temp")) | "|unknown|0|" | decimal i
//!            | header
//! T[0]     = 32 zero bytes;  T[n+1] = SHA256(T[n] | SHA256(header) | SHA256(ct | tag))
//! ```
//!
//! Reaching block `i` costs `i` chain steps; [`LivingCipher`] caches every chain key it
//! has computed, so reading all blocks in any order costs O(blocks) in total. Flag bit 0
//! (a 110-byte header carrying an X25519 public key) marks a DH ratchet step the
//! reference takes at messages 1024, 2048, ...; its peer key is not in the file, so
//! blocks from 1024 on cannot be decrypted by anyone: a reference bug, reported as such.
//! The reference's default secret is public; [`LivingCipher::uses_reference_default`]
//! lets callers warn.

use super::key::SharedSecret;
use crate::error::{Error, Result};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// The cipher name the reference records in META's `encryption.cipher`.
pub const CIPHER: &str = "living-cipher-v3";
/// The context string `C`.
pub const CONTEXT: &[u8] = b"Harmony\xc3\x984|LivingCipher|v3";
/// The suite string `S`.
pub const SUITE: &[u8; 31] = b"H4-LIVING-AESGCM-HKDF-SHA256-v3";
/// Magic at the start of every header.
pub const HEADER_MAGIC: &[u8; 5] = b"H4LC3";
/// Length of a header without a ratchet public key.
pub const HEADER_LEN: usize = 78;
/// Bytes of the GCM tag at the end of a payload.
pub const TAG_LEN: usize = 16;
/// Messages reachable by the hash chain alone: the reference takes an undecryptable
/// DH ratchet step at message 1024.
pub const MAX_MESSAGES: u64 = 1024;
/// Header flag: a 32-byte X25519 public key follows.
pub const FLAG_RATCHET_KEY: u8 = 1;

/// HKDF-SHA256 with an empty salt, as the reference uses it everywhere.
fn hkdf<const N: usize>(ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    Hkdf::<Sha256>::new(Some(&[]), ikm)
        .expand_multi_info(info, &mut out[..])
        .expect("HKDF-SHA256 output of at most 32 bytes");
    out
}

fn ratchet_label() -> Vec<u8> {
    [&SUITE[..], b"|ratchet"].concat()
}

/// `root = HKDF(secret, C | "|root", 32)` (exposed for known-answer tests).
pub fn root_key(secret: &SharedSecret) -> Zeroizing<[u8; 32]> {
    hkdf(secret.expose(), &[CONTEXT, b"|root"])
}

/// `ck[0] = HKDF(root, C | "|ck_send", 32)` (exposed for known-answer tests).
pub fn first_chain_key(root: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    hkdf(root, &[CONTEXT, b"|ck_send"])
}

/// Message key and nonce of message `n` from its chain key `ck`.
pub fn message_key(ck: &[u8; 32], n: u64) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let nb = n.to_be_bytes();
    let mk = hkdf::<32>(ck, &[&ratchet_label(), b"|mk|", &nb]);
    let nonce = *hkdf::<12>(&mk[..], &[b"nonce|", &nb]);
    (mk, nonce)
}

/// The chain key after message `n`.
pub fn next_chain_key(ck: &[u8; 32], n: u64) -> Zeroizing<[u8; 32]> {
    hkdf(ck, &[&ratchet_label(), b"|ck|", &n.to_be_bytes()])
}

/// The application AAD the reference's export binds to block `i`.
pub fn app_aad(i: u64) -> String {
    format!(
        "H4MK|unknown|unknown|{}|unknown|0|{i}",
        hex::encode(Sha256::digest(b"temp"))
    )
}

/// A parsed 78-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message number (the block index in files the reference's export wrote).
    pub n: u64,
    /// The transcript hash before this message.
    pub transcript: [u8; 32],
    pub flags: u8,
}

/// Parse the header at the start of block `block`'s payload (`offset`, its chunk's file
/// offset, is for messages). Rejects anything but a well-formed 78-byte header.
pub fn parse_header(payload: &[u8], block: u64, offset: u64) -> Result<Header> {
    let bad = |msg: String| Error::Block { block, offset, msg };
    if payload.len() < HEADER_LEN {
        return Err(bad(format!(
            "{} bytes is shorter than the {HEADER_LEN}-byte Living Cipher v3 header",
            payload.len()
        )));
    }
    if &payload[..5] != HEADER_MAGIC {
        return Err(bad(format!(
            "Living Cipher header magic is {:02x?}, expected \"H4LC3\"",
            &payload[..5]
        )));
    }
    if payload[5] as usize != SUITE.len() || &payload[6..37] != SUITE {
        return Err(bad(format!(
            "cipher suite is not \"{}\"",
            String::from_utf8_lossy(SUITE)
        )));
    }
    let n = u64::from_be_bytes(payload[37..45].try_into().expect("8 bytes"));
    let flags = payload[77];
    if flags & FLAG_RATCHET_KEY != 0 {
        return Err(bad(format!(
            "message {n} carries a new ratchet public key (110-byte header): containers \
             with more than {MAX_MESSAGES} blocks are not decryptable (reference bug: the \
             matching private key is never stored)"
        )));
    }
    if flags != 0 {
        return Err(bad(format!(
            "unknown Living Cipher header flags {flags:#04x}"
        )));
    }
    Ok(Header {
        n,
        transcript: payload[45..77].try_into().expect("32 bytes"),
        flags,
    })
}

/// Decrypts blocks of one reference container, in any order, caching chain keys.
pub struct LivingCipher {
    /// `chain[n]` is the chain key before message `n`; grows on demand.
    chain: Mutex<Vec<Zeroizing<[u8; 32]>>>,
    default_secret: bool,
}

impl std::fmt::Debug for LivingCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivingCipher")
            .field("reference_default_secret", &self.default_secret)
            .finish_non_exhaustive()
    }
}

impl LivingCipher {
    /// Prepare to decrypt with `secret`.
    pub fn new(secret: &SharedSecret) -> LivingCipher {
        let root = root_key(secret);
        LivingCipher {
            chain: Mutex::new(vec![first_chain_key(&root)]),
            default_secret: secret.is_reference_default(),
        }
    }

    /// True when the secret is the reference's public default: such files are not
    /// confidential, and callers should say so.
    pub fn uses_reference_default(&self) -> bool {
        self.default_secret
    }

    /// Message key and nonce of message `n`, walking (and caching) the chain as needed.
    fn keys(&self, n: u64, block: u64, offset: u64) -> Result<(Zeroizing<[u8; 32]>, [u8; 12])> {
        if n >= MAX_MESSAGES {
            return Err(Error::Block {
                block,
                offset,
                msg: format!(
                    "message {n}: containers with more than {MAX_MESSAGES} blocks are not \
                     decryptable (reference bug: a DH ratchet step at message \
                     {MAX_MESSAGES} whose private key is never stored)"
                ),
            });
        }
        let mut chain = self.chain.lock().unwrap_or_else(|e| e.into_inner());
        while chain.len() as u64 <= n {
            let k = chain.len() as u64 - 1;
            let next = next_chain_key(chain.last().expect("starts with ck[0]"), k);
            chain.push(next);
        }
        Ok(message_key(&chain[n as usize], n))
    }

    /// Authenticate and decrypt the CORE payload of block `block` (chunk at `offset`):
    /// returns the compressed block, to be decoded with the engine META names.
    pub fn decrypt_block(&self, block: u64, offset: u64, payload: &[u8]) -> Result<Vec<u8>> {
        let h = parse_header(payload, block, offset)?;
        if h.n != block {
            return Err(Error::Block {
                block,
                offset,
                msg: format!(
                    "Living Cipher header is for message {}, expected {block}: blocks are \
                     out of order",
                    h.n
                ),
            });
        }
        let body = &payload[HEADER_LEN..];
        let Some(ct_len) = body.len().checked_sub(TAG_LEN) else {
            return Err(Error::Block {
                block,
                offset,
                msg: "no room for the 16-byte tag after the Living Cipher header".into(),
            });
        };
        let (mk, nonce) = self.keys(h.n, block, offset)?;
        let mut aad = app_aad(block).into_bytes();
        aad.extend_from_slice(&payload[..HEADER_LEN]);
        let mut buf = body[..ct_len].to_vec();
        Aes256Gcm::new_from_slice(&mk[..])
            .expect("32-byte key")
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &aad,
                &mut buf,
                body[ct_len..].into(),
            )
            .map_err(|_| Error::BlockAuth {
                block,
                offset,
                why: "Living Cipher v3 tag mismatch: wrong shared secret, or the block was \
                      altered or moved"
                    .into(),
            })?;
        Ok(buf)
    }
}

/// Checks the transcript chain over blocks fed in order: each header must carry the
/// hash of every header and ciphertext before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    hash: [u8; 32],
    next: u64,
}

impl Transcript {
    /// The chain before message 0.
    pub fn new() -> Transcript {
        Transcript::default()
    }

    /// The current transcript hash.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// Check the next block's payload against the chain and advance it.
    pub fn check_next(&mut self, payload: &[u8], offset: u64) -> Result<()> {
        let block = self.next;
        let h = parse_header(payload, block, offset)?;
        self.advance(
            block,
            offset,
            &h.transcript,
            &Sha256::digest(&payload[..HEADER_LEN]).into(),
            &Sha256::digest(&payload[HEADER_LEN..]).into(),
        )
    }

    /// [`check_next`](Self::check_next) from digests computed elsewhere (in parallel):
    /// the transcript the block's header records, SHA-256 of its header and SHA-256 of
    /// its ciphertext and tag.
    pub fn advance(
        &mut self,
        block: u64,
        offset: u64,
        recorded: &[u8; 32],
        header_sha256: &[u8; 32],
        body_sha256: &[u8; 32],
    ) -> Result<()> {
        if *recorded != self.hash {
            return Err(Error::Block {
                block,
                offset,
                msg: format!(
                    "Living Cipher transcript mismatch: the header records {}, the blocks \
                     before it hash to {} (a block was removed, inserted or reordered)",
                    hex::encode(recorded),
                    hex::encode(self.hash)
                ),
            });
        }
        let mut t = Sha256::new();
        t.update(self.hash);
        t.update(header_sha256);
        t.update(body_sha256);
        self.hash = t.finalize().into();
        self.next += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_aad_matches_the_reference() {
        assert_eq!(
            app_aad(3),
            "H4MK|unknown|unknown|\
             a6864eb339b0e1f6e00d75293a8840abf069a2c0fe82e6e53af6ac099793c1d5|unknown|0|3"
        );
        assert!(app_aad(1023).ends_with("|unknown|0|1023"));
    }

    #[test]
    fn header_rejections() {
        let mut p = vec![0u8; HEADER_LEN + TAG_LEN];
        p[..5].copy_from_slice(HEADER_MAGIC);
        p[5] = 31;
        p[6..37].copy_from_slice(SUITE);
        assert_eq!(parse_header(&p, 0, 8).unwrap().n, 0);
        let mut r = p.clone();
        r[77] = 1;
        let e = parse_header(&r, 1024, 8).unwrap_err().to_string();
        assert!(
            e.contains("more than 1024 blocks") && e.contains("reference bug"),
            "{e}"
        );
        r[77] = 2;
        assert!(
            parse_header(&r, 0, 8)
                .unwrap_err()
                .to_string()
                .contains("flags")
        );
        assert!(
            parse_header(&p[..77], 0, 8)
                .unwrap_err()
                .to_string()
                .contains("shorter")
        );
        let mut m = p.clone();
        m[0] = b'X';
        assert!(
            parse_header(&m, 0, 8)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        let mut s = p.clone();
        s[5] = 30;
        assert!(
            parse_header(&s, 0, 8)
                .unwrap_err()
                .to_string()
                .contains("suite")
        );
    }

    #[test]
    fn block_beyond_the_chain_is_refused() {
        let lc = LivingCipher::new(&SharedSecret::reference_default());
        let e = lc.keys(1024, 1024, 0).unwrap_err().to_string();
        assert!(e.contains("more than 1024 blocks"), "{e}");
        assert!(lc.keys(1023, 1023, 0).is_ok());
        assert_eq!(lc.chain.lock().unwrap().len(), 1024);
    }
}
