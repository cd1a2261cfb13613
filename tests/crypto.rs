//! The crypto layer on its own: known answers for the reference's Living Cipher v3, the
//! reference's encrypted sample decrypted and decoded, and every block-level attack of
//! the threat model against h4fs's construction.

use h4fs::Error;
use h4fs::crypto::container::{self, TAG_LEN};
use h4fs::crypto::living::{self, Transcript};
use h4fs::crypto::{
    BlockContext, ContainerCrypto, ContentDigest, ContentHasher, Henc, LivingCipher, MasterKey,
    SharedSecret,
};
use h4fs::engine::Engine;
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seed")
        .join(name)
}

// ---------------------------------------------------------------- Living Cipher v3

#[test]
fn living_cipher_known_answers() {
    let ss = SharedSecret::reference_default();
    assert_eq!(
        hex::encode(ss.expose()),
        "1154c312078cf50cee166c9b2479c949dc4ebbc7e3668ce549aa45bb34cf629c"
    );
    let root = living::root_key(&ss);
    assert_eq!(
        hex::encode(*root),
        "0474247e19ce68823366d15ef29a2c93ad9f62ca2c4e98a3fde54529cfe190a9"
    );
    let ck0 = living::first_chain_key(&root);
    assert_eq!(
        hex::encode(*ck0),
        "3bb6cb5952c6f52d59202bc44b9eacc1aecb42d66b6fb05075ec219a1285dac4"
    );
    let (mk0, nonce0) = living::message_key(&ck0, 0);
    assert_eq!(
        hex::encode(*mk0),
        "8b135f0d9af7e765041bc6d9ec4ab3c22215566872d0776b969dd7ccb58ff9d4"
    );
    assert_eq!(hex::encode(nonce0), "87e15a8d5a7ff682cf9b094e");
    assert_eq!(
        hex::encode(*living::next_chain_key(&ck0, 0)),
        "c311a31ef4ea34d8f0f230e9b8d6e6f6499b63dbf01da103597916a776da35b2"
    );
}

/// The CORE payloads of the sample, read through the archive (CRC-checked).
fn sample_payloads() -> (h4fs::Archive, Vec<(u64, Vec<u8>)>) {
    let a = h4fs::Archive::open(&fixture("e_encrypted5.h4mk")).unwrap();
    let enc = a.encryption.as_ref().expect("the sample is encrypted");
    assert_eq!(enc.cipher, living::CIPHER);
    let t = &a.tracks[0];
    let payloads = (0..t.blocks.len())
        .map(|i| {
            (
                t.blocks.get(i).unwrap().chunk_offset,
                a.read_stored(0, i).unwrap(),
            )
        })
        .collect();
    (a, payloads)
}

fn decode_geometric(compressed: Vec<u8>) -> Vec<u8> {
    let e = Engine::GeometricReference;
    let len = e.decoded_len(&compressed).unwrap();
    e.decode(compressed, len).unwrap()
}

#[test]
fn decrypts_the_reference_sample() {
    let (a, payloads) = sample_payloads();
    assert_eq!(a.engine.name(), "geometric-reference");
    assert_eq!(payloads.len(), 5);
    let lc = LivingCipher::new(&SharedSecret::reference_default());
    assert!(lc.uses_reference_default());
    let mut stream = Vec::new();
    for (i, (off, p)) in payloads.iter().enumerate() {
        stream.extend(decode_geometric(
            lc.decrypt_block(i as u64, *off, p).unwrap(),
        ));
    }
    assert_eq!(
        stream,
        std::fs::read(fixture("e_encrypted5.payload")).unwrap()
    );

    // Any order, any number of times, same bytes.
    let lc = LivingCipher::new(&SharedSecret::reference_default());
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); 5];
    for i in [4usize, 1, 3, 0, 2, 4, 0] {
        let (off, p) = &payloads[i];
        out[i] = decode_geometric(lc.decrypt_block(i as u64, *off, p).unwrap());
    }
    assert_eq!(out.concat(), stream);
}

#[test]
fn reference_sample_transcript_chain_holds_and_catches_reordering() {
    let (_, payloads) = sample_payloads();
    let mut t = Transcript::new();
    for (off, p) in &payloads {
        t.check_next(p, *off).unwrap();
    }
    let mut t = Transcript::new();
    t.check_next(&payloads[0].1, 0).unwrap();
    let e = t.check_next(&payloads[2].1, 0).unwrap_err().to_string();
    assert!(
        e.contains("transcript mismatch") && e.contains("block 1"),
        "{e}"
    );
}

#[test]
fn reference_sample_rejects_wrong_secret_moves_and_flips() {
    let (_, payloads) = sample_payloads();
    let lc = LivingCipher::new(&SharedSecret::from_bytes([7; 32]));
    assert!(!lc.uses_reference_default());
    let e = lc.decrypt_block(0, 8, &payloads[0].1).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BlockAuth {
                block: 0,
                offset: 8,
                ..
            }
        ),
        "{e}"
    );

    let lc = LivingCipher::new(&SharedSecret::reference_default());
    // Block 1's payload presented as block 2: the header names message 1.
    let e = lc
        .decrypt_block(2, 0, &payloads[1].1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of order"), "{e}");
    // Every single-bit flip after the header fails authentication; in the header it is
    // either a parse error or an authentication failure, never plaintext.
    let p = &payloads[3].1;
    for byte in 0..p.len() {
        let mut q = p.clone();
        q[byte] ^= 0x10;
        assert!(
            lc.decrypt_block(3, 0, &q).is_err(),
            "flip at byte {byte} went unnoticed"
        );
    }
    assert!(lc.decrypt_block(3, 0, &p[..p.len() - 1]).is_err());
    assert!(
        lc.decrypt_block(3, 0, &p[..living::HEADER_LEN + 10])
            .is_err()
    );
}

// ---------------------------------------------------------------- h4fs construction

struct Block {
    ctx: BlockContext,
    plain: Vec<u8>,
}

/// A container's worth of blocks: contents from `seed`, a plan of five blocks.
fn plan(seed: u8) -> (ContentDigest, Vec<Block>) {
    let blocks: Vec<Block> = (0..5u64)
        .map(|i| {
            let plain: Vec<u8> = (0..100 + i as usize * 37)
                .map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed ^ i as u8))
                .collect();
            Block {
                ctx: BlockContext {
                    index: i,
                    track: 0,
                    pts_us: i * 33_333,
                    keyframe: i % 2 == 0,
                    decoded_len: plain.len() as u64,
                    chunk_offset: 8 + i * 1000,
                },
                plain,
            }
        })
        .collect();
    let source = h4fs::integrity::sha256(
        &blocks
            .iter()
            .flat_map(|b| b.plain.clone())
            .collect::<Vec<_>>(),
    );
    let mut h = ContentHasher::new(&source, &Engine::Identity.engine_id());
    for b in &blocks {
        h.block(b.ctx.track, b.ctx.decoded_len, b.ctx.pts_us, b.ctx.keyframe);
    }
    (h.finish(), blocks)
}

fn seal_all(master: &MasterKey, seed: u8) -> (Henc, Vec<Block>, Vec<Vec<u8>>) {
    let (digest, blocks) = plan(seed);
    let (c, henc) = ContainerCrypto::new(master, &digest);
    let stored = blocks
        .iter()
        .map(|b| c.seal(&b.ctx, &b.plain).unwrap())
        .collect();
    (henc, blocks, stored)
}

fn key(b: u8) -> MasterKey {
    MasterKey::from_bytes([b; 32])
}

fn is_auth_failure(r: h4fs::Result<Vec<u8>>, block: u64) -> bool {
    matches!(r, Err(Error::BlockAuth { block: b, .. }) if b == block)
}

#[test]
fn round_trip_in_any_order() {
    let m = key(1);
    let (henc, blocks, stored) = seal_all(&m, 1);
    let c = ContainerCrypto::open(&m, &Henc::parse(&henc.to_bytes(), 0).unwrap()).unwrap();
    for i in [3usize, 0, 4, 4, 1, 2] {
        assert_eq!(
            c.open_block(&blocks[i].ctx, &stored[i]).unwrap(),
            blocks[i].plain
        );
        assert_eq!(stored[i].len(), blocks[i].plain.len() + TAG_LEN);
    }
    // An empty block is a bare tag, still authenticated.
    let ctx = BlockContext {
        decoded_len: 0,
        ..blocks[0].ctx
    };
    let s = c.seal(&ctx, &[]).unwrap();
    assert_eq!(s.len(), TAG_LEN);
    assert!(c.open_block(&ctx, &s).unwrap().is_empty());
    assert!(is_auth_failure(c.open_block(&ctx, &s[..TAG_LEN - 1]), 0));
}

#[test]
fn deterministic_same_inputs_same_bytes() {
    let (h1, _, s1) = seal_all(&key(1), 1);
    let (h2, _, s2) = seal_all(&key(1), 1);
    assert_eq!(h1.to_bytes(), h2.to_bytes());
    assert_eq!(s1, s2);
    // Different content or a different key: a different container id and key.
    let (h3, _, s3) = seal_all(&key(1), 2);
    assert_ne!(h1.container_id, h3.container_id);
    assert_ne!(s1[0][..50], s3[0][..50]);
    let (h4, _, _) = seal_all(&key(2), 1);
    assert_ne!(h1.container_id, h4.container_id);
    assert_ne!(h1.key_id, h4.key_id);
}

#[test]
fn content_digest_covers_every_plan_field() {
    let base = || ContentHasher::new(&[1; 32], "h4fs-identity-1");
    let d = |f: &dyn Fn(&mut ContentHasher)| {
        let mut h = base();
        f(&mut h);
        h.finish()
    };
    let reference = d(&|h| h.block(0, 10, 5, true));
    for other in [
        d(&|h| h.block(1, 10, 5, true)),
        d(&|h| h.block(0, 11, 5, true)),
        d(&|h| h.block(0, 10, 6, true)),
        d(&|h| h.block(0, 10, 5, false)),
        d(&|h| {
            h.block(0, 10, 5, true);
            h.block(0, 0, 5, false)
        }),
        ContentHasher::new(&[2; 32], "h4fs-identity-1").finish(),
        {
            let mut h = ContentHasher::new(&[1; 32], "h4fs-geometric-reference-1");
            h.block(0, 10, 5, true);
            h.finish()
        },
    ] {
        assert_ne!(other, reference);
    }
}

#[test]
fn wrong_key_is_rejected_up_front() {
    let (henc, _, _) = seal_all(&key(1), 1);
    let e = ContainerCrypto::open(&key(2), &henc).unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }));
    let msg = e.to_string();
    assert!(
        msg.starts_with("the key does not match this container"),
        "{msg}"
    );
    assert!(msg.contains(&container::key_id_hex(&key(1))), "{msg}");
    // Key material never appears in the message.
    assert!(
        !msg.contains(&hex::encode([2u8; 32])) && !msg.contains("0202"),
        "{msg}"
    );
}

#[test]
fn damaged_henc_is_not_mistaken_for_the_right_key() {
    let m = key(1);
    let (henc, _, _) = seal_all(&m, 1);
    for flip in [0usize, 31, 32, 47] {
        let mut h = henc.clone();
        h.wrapped_key[flip] ^= 1;
        let e = ContainerCrypto::open(&m, &h).unwrap_err().to_string();
        assert!(e.contains("fails authentication"), "{e}");
    }
    let mut h = henc.clone();
    h.wrap_nonce[0] ^= 1;
    assert!(ContainerCrypto::open(&m, &h).is_err());
    // The wrapped key is bound to its container id.
    let mut h = henc.clone();
    h.container_id[5] ^= 1;
    assert!(ContainerCrypto::open(&m, &h).is_err());
}

#[test]
fn block_from_another_container_with_the_same_key_fails() {
    let m = key(1);
    let (h1, blocks, _) = seal_all(&m, 1);
    let (_, _, other) = seal_all(&m, 2);
    let c = ContainerCrypto::open(&m, &h1).unwrap();
    for i in 0..5 {
        assert!(is_auth_failure(
            c.open_block(&blocks[i].ctx, &other[i]),
            i as u64
        ));
    }
}

#[test]
fn swapped_or_copied_blocks_fail() {
    let m = key(1);
    let (h, blocks, stored) = seal_all(&m, 1);
    let c = ContainerCrypto::open(&m, &h).unwrap();
    // Swap 1 and 2 (with their index entries kept in place).
    assert!(is_auth_failure(c.open_block(&blocks[1].ctx, &stored[2]), 1));
    assert!(is_auth_failure(c.open_block(&blocks[2].ctx, &stored[1]), 2));
    // Block 3 copied over block 4, index entry included except the position.
    let moved = BlockContext {
        index: 4,
        ..blocks[3].ctx
    };
    assert!(is_auth_failure(c.open_block(&moved, &stored[3]), 4));
    // Same block, other track.
    let other_track = BlockContext {
        track: 1,
        ..blocks[3].ctx
    };
    assert!(c.open_block(&other_track, &stored[3]).is_err());
}

#[test]
fn edited_index_fields_fail() {
    let m = key(1);
    let (h, blocks, stored) = seal_all(&m, 1);
    let c = ContainerCrypto::open(&m, &h).unwrap();
    let b = &blocks[2];
    let edits = [
        BlockContext {
            pts_us: b.ctx.pts_us + 1,
            ..b.ctx
        },
        BlockContext {
            keyframe: !b.ctx.keyframe,
            ..b.ctx
        },
        BlockContext {
            decoded_len: b.ctx.decoded_len + 1,
            ..b.ctx
        },
        BlockContext {
            decoded_len: b.ctx.decoded_len - 1,
            ..b.ctx
        },
    ];
    for ctx in edits {
        assert!(
            is_auth_failure(c.open_block(&ctx, &stored[2]), 2),
            "{ctx:?}"
        );
    }
    // The chunk offset is not authenticated: blocks may sit anywhere the index says.
    let moved_in_file = BlockContext {
        chunk_offset: 99_999,
        ..b.ctx
    };
    assert_eq!(c.open_block(&moved_in_file, &stored[2]).unwrap(), b.plain);
    // Truncated or extended stored bytes.
    let s = &stored[2];
    assert!(is_auth_failure(c.open_block(&b.ctx, &s[..s.len() - 1]), 2));
    let mut longer = s.clone();
    longer.push(0);
    assert!(is_auth_failure(c.open_block(&b.ctx, &longer), 2));
}

#[test]
fn every_flipped_bit_fails() {
    let m = key(1);
    let (h, blocks, stored) = seal_all(&m, 1);
    let c = ContainerCrypto::open(&m, &h).unwrap();
    let s = &stored[1];
    for byte in 0..s.len() {
        for bit in [0u8, 7] {
            let mut t = s.clone();
            t[byte] ^= 1 << bit;
            assert!(
                is_auth_failure(c.open_block(&blocks[1].ctx, &t), 1),
                "flip of bit {bit} at byte {byte} ({}) went unnoticed",
                if byte >= s.len() - TAG_LEN {
                    "tag"
                } else {
                    "ciphertext"
                }
            );
        }
    }
    let e = c.open_block(&blocks[1].ctx, &{
        let mut t = s.clone();
        t[0] ^= 1;
        t
    });
    let msg = e.unwrap_err().to_string();
    assert!(
        msg.contains("block 1") && msg.contains("offset 1008"),
        "{msg}"
    );
}

#[test]
fn rotation_rewraps_without_touching_blocks() {
    let (old, new) = (key(1), key(9));
    let (h, blocks, stored) = seal_all(&old, 1);
    let h2 = h.rewrap(&old, &new).unwrap();
    assert_eq!(h2.container_id, h.container_id);
    assert_eq!(h2.to_bytes().len(), h.to_bytes().len());
    assert_ne!(h2.wrapped_key, h.wrapped_key);
    let c = ContainerCrypto::open(&new, &h2).unwrap();
    for (b, s) in blocks.iter().zip(&stored) {
        assert_eq!(c.open_block(&b.ctx, s).unwrap(), b.plain);
    }
    assert!(matches!(
        ContainerCrypto::open(&old, &h2),
        Err(Error::WrongKey { .. })
    ));
    assert!(matches!(h.rewrap(&new, &old), Err(Error::WrongKey { .. })));
    // Re-wrapping is deterministic and reversible.
    assert_eq!(h2.rewrap(&new, &old).unwrap(), h);
    assert_eq!(h.rewrap(&old, &new).unwrap(), h2);
}

// ---------------------------------------------------------------- through the archive

#[test]
fn archive_reads_the_reference_sample_with_its_secret() {
    let mut a = h4fs::Archive::open(&fixture("e_encrypted5.h4mk")).unwrap();
    assert!(!a.has_key());
    let e = a.read_block(0, 0).unwrap_err();
    assert!(matches!(e, Error::Encrypted { .. }), "{e}");
    let e = a.attach_shared_secret(&SharedSecret::from_bytes([3; 32])).unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
    assert!(!a.has_key());
    let e = a.attach_key(&key(1)).unwrap_err().to_string();
    assert!(e.contains("--shared-secret-file"), "{e}");

    a.attach_shared_secret(&SharedSecret::reference_default()).unwrap();
    assert!(a.has_key() && a.sizes_exact);
    let payload = std::fs::read(fixture("e_encrypted5.payload")).unwrap();
    assert_eq!(a.tracks[0].stream_len(), payload.len() as u64);
    let mut out = Vec::new();
    h4fs::extract::write_stream(&a, 0, 0, payload.len() as u64, &mut out, &|_| {}).unwrap();
    assert_eq!(out, payload);
    // Random access by block, and seek points resolve to the right blocks.
    let b3 = a.read_block(0, 3).unwrap();
    let e3 = a.entry(0, 3).unwrap();
    let at = e3.stream_offset as usize;
    assert_eq!(b3.bytes(), &payload[at..at + b3.len()]);
    let t = &a.tracks[0];
    for p in &t.seek {
        let n = t.resolve_seek(p).expect("seek point names a block");
        assert_eq!(t.blocks.get(n).unwrap().stream_offset, p.offset);
    }
}

#[test]
fn shared_secret_is_refused_for_unencrypted_files() {
    let mut a = h4fs::Archive::open(&fixture("a_small10.h4mk")).unwrap();
    let e = a.attach_shared_secret(&SharedSecret::reference_default()).unwrap_err();
    assert!(e.to_string().contains("not encrypted"), "{e}");
    assert!(a.attach_key(&key(1)).is_err());
}
