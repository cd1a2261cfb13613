//! The crypto layer on its own: known answers for the reference's Living Cipher v3, the
//! reference's encrypted sample decrypted and decoded, and every block-level attack of
//! the threat model against h4fs's construction.

mod common;

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
    let e = a
        .attach_shared_secret(&SharedSecret::from_bytes([3; 32]))
        .unwrap_err();
    assert!(matches!(e, Error::WrongKey { .. }), "{e}");
    assert!(!a.has_key());
    let e = a.attach_key(&key(1)).unwrap_err().to_string();
    assert!(e.contains("--shared-secret-file"), "{e}");

    a.attach_shared_secret(&SharedSecret::reference_default())
        .unwrap();
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
    let e = a
        .attach_shared_secret(&SharedSecret::reference_default())
        .unwrap_err();
    assert!(e.to_string().contains("not encrypted"), "{e}");
    assert!(a.attach_key(&key(1)).is_err());
}

/// Known answers for h4fs's own construction, computed by an independent
/// implementation of docs/FORMAT.md (section 9) (Python `hashlib`, `hmac` and
/// `cryptography`'s AESGCM), so the code and the specification cannot drift apart.
#[test]
fn h4fs_construction_known_answers() {
    let master = MasterKey::from_bytes(std::array::from_fn(|i| i as u8));
    let source = h4fs::integrity::sha256(b"h4fs test source");
    let mut h = ContentHasher::new(&source, "h4fs-identity-1");
    h.block(0, 5, 0, true);
    h.block(0, 3, 40_000, false);
    let content = h.finish();
    assert_eq!(
        hex::encode(content.bytes()),
        "6fe36c27a80ba95b6aa0f12593bc54350afa942912410ad849375ff9271b2c26"
    );
    let (c, henc) = ContainerCrypto::new(&master, &content);
    assert_eq!(hex::encode(henc.key_id), "459130cb879f9124");
    assert_eq!(
        hex::encode(henc.container_id),
        "df8668ae095c64d99e799afc1995fcaf9c4f05dcc70343a1eada371230a2204c"
    );
    assert_eq!(hex::encode(henc.wrap_nonce), "8437bdae297f64c3f1c34833");
    assert_eq!(
        hex::encode(henc.wrapped_key),
        "c91902a3ceb689a323f1cb03d9f326608665981eed29946daf1bc73c11f932a0\
         8283653afcc5bd3077533a47f84dd3c4"
    );
    let ctx = BlockContext {
        index: 1,
        track: 0,
        pts_us: 40_000,
        keyframe: false,
        decoded_len: 3,
        chunk_offset: 0,
    };
    assert_eq!(
        hex::encode(c.seal(&ctx, b"abc").unwrap()),
        "2cd42f34b5b0b4249e5f4644d5aa0f64fd13b7"
    );
    assert_eq!(
        hex::encode(c.structure_mac(&h4fs::integrity::sha256(b"structure"))),
        "01ea6175e21b72c49e993295900795d99acd56146e6eb7accea202bf6e56f2ac"
    );
}

#[test]
fn writer_api_seals_blocks_and_structure() {
    use h4fs::reader::OpenCheck;
    use h4fs::writer::{BlockMeta, Writer};
    let blocks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000 + i as usize]).collect();
    let source: Vec<u8> = blocks.concat();
    let mut h = ContentHasher::new(
        &h4fs::integrity::sha256(&source),
        &Engine::GeometricReference.engine_id(),
    );
    let metas: Vec<BlockMeta> = (0..4u64)
        .map(|i| BlockMeta {
            pts_us: i * 40_000,
            keyframe: i % 2 == 0,
        })
        .collect();
    for (b, m) in blocks.iter().zip(&metas) {
        h.block(0, b.len() as u64, m.pts_us, m.keyframe);
    }
    let digest = h.finish();
    let mut w =
        Writer::new_encrypted(Vec::new(), Engine::GeometricReference, &key(4), &digest).unwrap();
    for (b, m) in blocks.iter().zip(&metas) {
        w.add_block(b, *m).unwrap();
    }
    let (bytes, summary) = w
        .finish(serde_json::Map::new(), &serde_json::json!({}))
        .unwrap();
    assert_eq!(summary.blocks, 4);
    let mut a = h4fs::Archive::from_source(Box::new(bytes.clone()), OpenCheck::Structure).unwrap();
    assert_eq!(a.encryption.as_ref().unwrap().cipher, container::CIPHER);
    assert!(a.footer.unwrap().1.encrypted());
    assert!(matches!(a.read_block(0, 1), Err(Error::Encrypted { .. })));
    assert!(matches!(a.attach_key(&key(5)), Err(Error::WrongKey { .. })));
    a.attach_key(&key(4)).unwrap();
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(a.read_block(0, i as u64).unwrap().bytes(), &b[..]);
    }
    // Compressed runs are not visible: the stored bytes are ciphertext.
    let stored = a.read_stored(0, 0).unwrap();
    assert_eq!(
        stored.len(),
        2 * 4 + TAG_LEN,
        "1000 zero bytes: 4 runs, then the tag"
    );
    assert_ne!(&stored[..8], &[0, 255, 0, 255, 0, 255, 0, 235]);
}

proptest::proptest! {
    /// Hostile bytes never panic a parser or a decryption: they give errors.
    #[test]
    fn hostile_input_gives_errors_not_panics(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700),
        flip in 0usize..429,
    ) {
        let _ = Henc::parse(&bytes, 0);
        let _ = living::parse_header(&bytes, 0, 0);
        let lc = LivingCipher::new(&SharedSecret::reference_default());
        proptest::prop_assert!(lc.decrypt_block(0, 0, &bytes).is_err());
        let (henc, blocks, _) = seal_all(&key(1), 1);
        let c = ContainerCrypto::open(&key(1), &henc).unwrap();
        proptest::prop_assert!(c.open_block(&blocks[0].ctx, &bytes).is_err());
        // A valid HENC payload with one byte changed parses to an error or to a record
        // that the key either still opens identically or refuses.
        let mut h = henc.to_bytes();
        h[flip] ^= 0x01;
        if let Ok(r) = Henc::parse(&h, 0) {
            if let Ok(c2) = ContainerCrypto::open(&key(1), &r) {
                proptest::prop_assert_eq!(c2.container_id(), c.container_id());
            }
        }
    }
}

// ---------------------------------------------------------------- the command, end to end

mod cli {
    use super::common::{fix_crc, h4fs, h4fs_ok, h4fs_run, noise, pack};
    use super::fixture;
    use h4fs::format::h4fs::{self as hf, Footer, IndexEntry};
    use h4fs::format::layout_a::ChunkHeader;
    use h4fs::integrity;
    use std::path::{Path, PathBuf};
    use std::process::Output;

    const BLOCK: usize = 4096;

    fn run(args: &[&str], env_key: Option<&Path>) -> Output {
        let mut c = h4fs();
        c.args(args);
        if let Some(k) = env_key {
            c.env("H4FS_KEY_FILE", k);
        }
        super::common::run(&mut c)
    }

    fn s(p: &Path) -> &str {
        p.to_str().expect("utf-8 path")
    }

    fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    struct Setup {
        dir: tempfile::TempDir,
        key: PathBuf,
        input: Vec<u8>,
        /// Encrypted container of `input`, 6 blocks of 4 KiB (the last shorter).
        enc: PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("media.key");
        h4fs_ok(&["keygen", "-o", s(&key)]);
        let input = noise(5 * BLOCK + 1000, 42);
        let enc = pack_encrypted(&dir, "a", &input, &key);
        Setup {
            dir,
            key,
            input,
            enc,
        }
    }

    fn pack_encrypted(dir: &tempfile::TempDir, name: &str, data: &[u8], key: &Path) -> PathBuf {
        let input = dir.path().join(format!("{name}.bin"));
        std::fs::write(&input, data).unwrap();
        let out = dir.path().join(format!("{name}.h4mk"));
        pack_file(&input, &out, key);
        out
    }

    /// Packs v1: these tests edit blocks, the index and the footer and reseal the v1
    /// structure root (tests/v2.rs covers encrypted v2 containers).
    fn pack_file(input: &Path, out: &Path, key: &Path) {
        let args = [
            "--format",
            "v1",
            "--block-size",
            "4096",
            "--gop",
            "2",
            "--encrypt",
            "--key-file",
        ];
        pack(input, out, &[&args[..], &[s(key)]].concat());
    }

    /// Where things are in an h4fs container.
    struct Layout {
        footer_at: usize,
        footer: Footer,
        index_at: usize,
        entries: Vec<IndexEntry>,
    }

    fn layout(b: &[u8]) -> Layout {
        let footer_at = b.len() - hf::TAIL_LEN as usize;
        let footer = Footer::parse(&b[footer_at + 12..footer_at + 12 + 96], 0).unwrap();
        let index_at = footer.index_offset as usize;
        let count = footer.block_count as usize;
        let entries = (0..count)
            .map(|i| {
                let at = index_at + 12 + hf::INDEX_HEADER_LEN + i * hf::ENTRY_LEN;
                IndexEntry::parse(&b[at..at + hf::ENTRY_LEN])
            })
            .collect();
        Layout {
            footer_at,
            footer,
            index_at,
            entries,
        }
    }

    fn payload_range(b: &[u8], chunk_at: usize) -> std::ops::Range<usize> {
        let h = ChunkHeader::parse(b[chunk_at..chunk_at + 12].try_into().unwrap());
        chunk_at + 12..chunk_at + 12 + h.len as usize
    }

    /// What an attacker without the key can do after editing: recompute every unkeyed
    /// check (block SHA-256s in the index, all CRCs, the structure root, VERI).
    fn reseal(b: &mut [u8]) {
        let l = layout(b);
        for (i, e) in l.entries.iter().enumerate() {
            let at = e.chunk_offset as usize;
            fix_crc(b, at);
            let sha = integrity::sha256(&b[payload_range(b, at)]);
            let entry_at = l.index_at + 12 + hf::INDEX_HEADER_LEN + i * hf::ENTRY_LEN;
            b[entry_at + 40..entry_at + 72].copy_from_slice(&sha);
        }
        let f = l.footer;
        for at in [
            f.seek_offset,
            f.meta_offset,
            f.safe_offset,
            f.henc_offset,
            f.index_offset,
        ] {
            if at != 0 {
                fix_crc(b, at as usize);
            }
        }
        let part = |at: u64| -> Vec<u8> {
            if at == 0 {
                Vec::new()
            } else {
                b[payload_range(b, at as usize)].to_vec()
            }
        };
        let index = part(f.index_offset);
        let root = integrity::root_hash(
            &f.prefix(),
            &part(f.seek_offset),
            &part(f.meta_offset),
            &part(f.safe_offset),
            &part(f.henc_offset),
            &integrity::index_digest(&index),
        );
        let footer = Footer { root, ..f };
        b[l.footer_at + 12..l.footer_at + 12 + 96].copy_from_slice(&footer.encode());
        fix_crc(b, l.footer_at);
        let veri_at = b.len() - 44;
        let veri = integrity::sha256(&b[8..veri_at]);
        b[veri_at + 12..].copy_from_slice(&veri);
        fix_crc(b, veri_at);
    }

    fn block_payload(b: &[u8], l: &Layout, i: usize) -> std::ops::Range<usize> {
        payload_range(b, l.entries[i].chunk_offset as usize)
    }

    /// Write `bytes` as a new container next to the setup's and return its path.
    fn variant(st: &Setup, name: &str, bytes: &[u8]) -> PathBuf {
        let p = st.dir.path().join(format!("{name}.h4mk"));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// verify with the key exits 1 and names `block`; cat of that block fails with
    /// nothing on stdout; the other blocks still decrypt to the right bytes.
    #[track_caller]
    fn assert_block_rejected(st: &Setup, file: &Path, block: usize) {
        let k = s(&st.key);
        let o = h4fs_run(&["verify", "--key-file", k, s(file)]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
        assert!(
            out.contains(&format!("block {block} ")),
            "verify must name block {block}: {out}"
        );
        let b = block.to_string();
        let o = h4fs_run(&["cat", "--key-file", k, s(file), "--block", &b]);
        assert_ne!(o.status.code(), Some(0));
        assert!(o.stdout.is_empty(), "no bytes of a rejected block");
        let other = if block == 0 { 4 } else { 0 };
        let o = h4fs_ok(&[
            "cat",
            "--key-file",
            k,
            s(file),
            "--block",
            &other.to_string(),
        ]);
        assert_eq!(o.stdout, st.input[other * BLOCK..(other + 1) * BLOCK]);
    }

    #[test]
    fn round_trip_determinism_and_key_handling() {
        let st = setup();
        let k = s(&st.key);
        // Deterministic: the same input, options and key give the same bytes.
        let again = st.dir.path().join("again.h4mk");
        pack_file(&st.dir.path().join("a.bin"), &again, &st.key);
        assert_eq!(
            std::fs::read(&again).unwrap(),
            std::fs::read(&st.enc).unwrap()
        );
        // ... whatever the number of threads.
        let one = st.dir.path().join("one-thread.h4mk");
        let a_bin = st.dir.path().join("a.bin");
        h4fs_ok(&[
            "pack",
            s(&a_bin),
            "--format",
            "v1",
            "--block-size",
            "4096",
            "--gop",
            "2",
            "--encrypt",
            "--key-file",
            s(&st.key),
            "--threads",
            "1",
            "-q",
            "-o",
            s(&one),
        ]);
        assert_eq!(
            std::fs::read(&one).unwrap(),
            std::fs::read(&st.enc).unwrap()
        );
        // The plaintext appears nowhere in the container.
        let c = std::fs::read(&st.enc).unwrap();
        assert!(!c.windows(32).any(|w| w == &st.input[100..132]));
        // Integrity without the key; authentication with it.
        let o = h4fs_ok(&["verify", "--full", s(&st.enc)]);
        assert!(String::from_utf8_lossy(&o.stdout).contains("encrypted: integrity only"));
        let o = h4fs_ok(&["verify", "--full", "--key-file", k, s(&st.enc)]);
        assert!(String::from_utf8_lossy(&o.stdout).contains("authenticated with the key"));
        // Extract with --key-file and with H4FS_KEY_FILE.
        let out = st.dir.path().join("out.bin");
        h4fs_ok(&["extract", "--key-file", k, s(&st.enc), "-o", s(&out), "-q"]);
        assert_eq!(std::fs::read(&out).unwrap(), st.input);
        let o = run(&["cat", s(&st.enc), "--range", "4000-4199"], Some(&st.key));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(o.stdout, st.input[4000..4200]);
        // Without the key: metadata yes, data no.
        let o = h4fs_run(&["inspect", "--json", s(&st.enc)]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(doc["encryption"]["cipher"], "h4fs-aes-256-gcm-v1");
        assert!(
            doc["meta"]["source"].get("sha256").is_none(),
            "no plaintext hash in META"
        );
        let o = h4fs_run(&["cat", s(&st.enc), "--block", "0"]);
        assert_eq!(o.status.code(), Some(3));
        assert!(o.stdout.is_empty() && stderr(&o).contains("needs the key"));
        // The key never shows up in output.
        let key_hex = std::fs::read_to_string(&st.key).unwrap();
        for args in [
            vec!["inspect", "--key-file", k, s(&st.enc)],
            vec!["verify", "--key-file", k, s(&st.enc)],
        ] {
            let o = h4fs_ok(&args);
            for text in [
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
            ] {
                assert!(!text.contains(key_hex.trim()), "{text}");
                assert!(!text.contains(&key_hex[..16]), "{text}");
            }
        }
    }

    #[test]
    fn keygen_and_key_file_errors() {
        let st = setup();
        let o = h4fs_run(&["keygen", "-o", s(&st.key)]);
        assert_eq!(o.status.code(), Some(3));
        assert!(stderr(&o).contains("refusing to overwrite"));
        let bad = st.dir.path().join("bad.key");
        std::fs::write(&bad, "not a key\n").unwrap();
        let o = h4fs_run(&["cat", "--key-file", s(&bad), s(&st.enc), "--block", "0"]);
        assert_eq!(o.status.code(), Some(3));
        assert!(stderr(&o).contains("bad.key") && stderr(&o).contains("10 bytes is not a key"));
        // Loose permissions: a warning, and it still works.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&st.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = h4fs_ok(&["cat", "--key-file", s(&st.key), s(&st.enc), "--block", "0"]);
        assert!(stderr(&o).contains("accessible by group or others"));
        // --encrypt without a key.
        let input = st.dir.path().join("x.bin");
        std::fs::write(&input, b"abc").unwrap();
        let out = st.dir.path().join("x.h4mk");
        let o = h4fs_run(&[
            "pack",
            s(&input),
            "--block-size",
            "4096",
            "--encrypt",
            "-o",
            s(&out),
        ]);
        assert_eq!(o.status.code(), Some(3));
        assert!(stderr(&o).contains("--encrypt needs --key-file"));
        assert!(!out.exists());
    }

    #[test]
    fn wrong_key_is_refused_up_front() {
        let st = setup();
        let other = st.dir.path().join("other.key");
        h4fs_ok(&["keygen", "-o", s(&other)]);
        for cmd in [
            vec!["cat", "--block", "0"],
            vec!["extract", "-o", "/dev/null"],
            vec!["verify"],
            vec!["inspect"],
        ] {
            let mut args = cmd.clone();
            args.extend(["--key-file", s(&other), s(&st.enc)]);
            let o = h4fs_run(&args);
            assert_eq!(o.status.code(), Some(3), "{cmd:?}");
            assert!(o.stdout.is_empty(), "{cmd:?}");
            assert!(
                stderr(&o).contains("the key does not match this container"),
                "{cmd:?}: {}",
                stderr(&o)
            );
        }
    }

    #[test]
    fn transplanted_block_from_another_container_is_rejected() {
        let st = setup();
        let b_input = noise(st.input.len(), 7);
        let other = pack_encrypted(&st.dir, "b", &b_input, &st.key);
        let mut a = std::fs::read(&st.enc).unwrap();
        let b = std::fs::read(&other).unwrap();
        let (la, lb) = (layout(&a), layout(&b));
        let (ra, rb) = (block_payload(&a, &la, 2), block_payload(&b, &lb, 2));
        a[ra].copy_from_slice(&b[rb]);
        reseal(&mut a);
        let f = variant(&st, "transplant", &a);
        h4fs_ok(&["verify", "--full", s(&f)]); // passes without the key: hashes were redone
        assert_block_rejected(&st, &f, 2);
    }

    #[test]
    fn swapped_and_copied_blocks_are_rejected() {
        let st = setup();
        let orig = std::fs::read(&st.enc).unwrap();
        let l = layout(&orig);
        let (r1, r2, r3) = (
            block_payload(&orig, &l, 1),
            block_payload(&orig, &l, 2),
            block_payload(&orig, &l, 3),
        );
        let mut swapped = orig.clone();
        swapped[r1.clone()].copy_from_slice(&orig[r2.clone()]);
        swapped[r2.clone()].copy_from_slice(&orig[r1.clone()]);
        reseal(&mut swapped);
        let f = variant(&st, "swapped", &swapped);
        assert_block_rejected(&st, &f, 1);
        let o = h4fs_run(&["verify", "--key-file", s(&st.key), s(&f)]);
        assert!(String::from_utf8_lossy(&o.stdout).contains("block 2 "));

        let mut copied = orig.clone();
        copied[r3].copy_from_slice(&orig[r1]);
        reseal(&mut copied);
        assert_block_rejected(&st, &variant(&st, "copied", &copied), 3);
    }

    #[test]
    fn flipped_bits_in_ciphertext_and_tag_are_rejected() {
        let st = setup();
        let orig = std::fs::read(&st.enc).unwrap();
        let l = layout(&orig);
        let r = block_payload(&orig, &l, 2);
        for (what, at) in [("ciphertext", r.start + 10), ("tag", r.end - 1)] {
            let mut b = orig.clone();
            b[at] ^= 0x04;
            // As is: the block hash catches it, even without the key.
            let f = variant(&st, what, &b);
            let o = h4fs_run(&["verify", s(&f)]);
            assert_eq!(o.status.code(), Some(1), "{what}");
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("block 2 "),
                "{what}"
            );
            // Hashes recomputed: only the key catches it.
            reseal(&mut b);
            let f = variant(&st, &format!("{what}-resealed"), &b);
            h4fs_ok(&["verify", s(&f)]);
            assert_block_rejected(&st, &f, 2);
        }
    }

    #[test]
    fn edited_index_entries_are_rejected() {
        let st = setup();
        let orig = std::fs::read(&st.enc).unwrap();
        let l = layout(&orig);
        let entry_at = |i: usize| l.index_at + 12 + hf::INDEX_HEADER_LEN + i * hf::ENTRY_LEN;
        // Keyframe flag of block 3 (flags at entry bytes 36..40).
        let mut b = orig.clone();
        b[entry_at(3) + 39] ^= 1;
        let f = variant(&st, "flag-raw", &b);
        assert_eq!(
            h4fs_run(&["verify", s(&f)]).status.code(),
            Some(1),
            "root catches it"
        );
        reseal(&mut b);
        let f = variant(&st, "flag", &b);
        let o = h4fs_run(&["verify", "--key-file", s(&st.key), s(&f)]);
        assert_eq!(o.status.code(), Some(1));
        // pts of block 2 (entry bytes 24..32) moved by one microsecond.
        let mut b = orig.clone();
        let pts_at = entry_at(2) + 24;
        let pts = u64::from_be_bytes(b[pts_at..pts_at + 8].try_into().unwrap()) + 1;
        b[pts_at..pts_at + 8].copy_from_slice(&pts.to_be_bytes());
        reseal(&mut b);
        let f = variant(&st, "pts", &b);
        h4fs_ok(&["verify", s(&f)]);
        let o = h4fs_run(&["verify", "--key-file", s(&st.key), s(&f)]);
        assert_eq!(o.status.code(), Some(1));
    }

    #[test]
    fn meta_and_footer_edits_are_rejected() {
        let st = setup();
        let orig = std::fs::read(&st.enc).unwrap();
        let l = layout(&orig);
        let meta = payload_range(&orig, l.footer.meta_offset as usize);
        let text = String::from_utf8(orig[meta.clone()].to_vec()).unwrap();
        let at = meta.start + text.find("\"encryption\"").expect("META names encryption");
        // META claims "not encrypted" (key renamed, same length).
        let mut b = orig.clone();
        b[at + 1] = b'x';
        let f = variant(&st, "meta-raw", &b);
        let o = h4fs_run(&["verify", s(&f)]);
        assert_eq!(o.status.code(), Some(1), "the CRC and root cover META");
        assert!(String::from_utf8_lossy(&o.stdout).contains("META"));
        reseal(&mut b);
        let f = variant(&st, "meta", &b);
        // Still encrypted (HENC is authoritative), and the key holder sees the edit.
        let o = h4fs_run(&["cat", s(&f), "--block", "0"]);
        assert!(o.stdout.is_empty() && stderr(&o).contains("needs the key"));
        let o = h4fs_run(&["verify", "--key-file", s(&st.key), s(&f)]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stdout).contains("structure authentication failed"));

        // Footer: the encrypted flag cleared (bytes 4..8 of its payload), root redone.
        let mut b = orig.clone();
        b[l.footer_at + 12 + 7] &= !1;
        let f = variant(&st, "flag-raw2", &b);
        assert_eq!(h4fs_run(&["verify", s(&f)]).status.code(), Some(1));
        reseal(&mut b);
        let f = variant(&st, "footer", &b);
        let o = h4fs_run(&["cat", s(&f), "--block", "0"]);
        assert!(o.stdout.is_empty(), "ciphertext is never served as data");
        let o = h4fs_run(&["verify", "--key-file", s(&st.key), s(&f)]);
        assert_eq!(o.status.code(), Some(1));

        // Footer: flag cleared and HENC unlinked (henc_offset, bytes 40..48), root redone.
        // META still says "encrypted": nothing is served as data, and the key holder is
        // told the container was altered.
        let mut b = orig.clone();
        b[l.footer_at + 12 + 7] &= !1;
        b[l.footer_at + 12 + 40..l.footer_at + 12 + 48].fill(0);
        reseal(&mut b);
        let f = variant(&st, "unlinked", &b);
        let o = h4fs_run(&["cat", s(&f), "--block", "0"]);
        assert!(o.stdout.is_empty() && stderr(&o).contains("needs the key"));
        let o = h4fs_run(&["verify", "--key-file", s(&st.key), s(&f)]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stdout).contains("the container was altered"));
    }

    #[test]
    fn truncated_container_is_rejected() {
        let st = setup();
        let orig = std::fs::read(&st.enc).unwrap();
        for cut in [1usize, 44, 200, orig.len() / 2] {
            let f = variant(&st, &format!("cut{cut}"), &orig[..orig.len() - cut]);
            let o = h4fs_run(&["verify", "--key-file", s(&st.key), s(&f)]);
            assert_eq!(o.status.code(), Some(1), "cut {cut}: {}", stderr(&o));
            let o = h4fs_run(&["extract", "--key-file", s(&st.key), s(&f), "-o", "-"]);
            assert_ne!(o.status.code(), Some(0));
            assert!(o.stdout.len() < st.input.len());
        }
    }

    #[test]
    fn reference_encrypted_file_with_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture("e_encrypted5.h4mk");
        let payload = std::fs::read(fixture("e_encrypted5.payload")).unwrap();
        // The public default secret, as a hex file.
        let ss = dir.path().join("ss");
        std::fs::write(
            &ss,
            "1154c312078cf50cee166c9b2479c949dc4ebbc7e3668ce549aa45bb34cf629c\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ss, std::fs::Permissions::from_mode(0o600)).unwrap();
        let o = h4fs_ok(&["extract", "--shared-secret-file", s(&ss), s(&f), "-o", "-"]);
        assert_eq!(o.stdout, payload);
        assert!(
            stderr(&o).contains("public default secret"),
            "{}",
            stderr(&o)
        );
        let o = h4fs_ok(&["verify", "--full", "--shared-secret-file", s(&ss), s(&f)]);
        assert!(String::from_utf8_lossy(&o.stdout).contains("authenticated"));
        let o = h4fs_ok(&["cat", "--shared-secret-file", s(&ss), s(&f), "--block", "4"]);
        assert!(o.stdout.starts_with(b"enc-block-4"));
        assert_eq!(o.stdout, payload[payload.len() - o.stdout.len()..]);
        // Without the secret: refused, with a note that the secret is public.
        let o = h4fs_run(&["cat", s(&f), "--block", "0"]);
        assert_eq!(o.status.code(), Some(3));
        assert!(stderr(&o).contains("public default secret"));
        // A wrong secret (raw 32 bytes).
        let bad = dir.path().join("bad");
        std::fs::write(&bad, [9u8; 32]).unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let o = h4fs_run(&[
            "cat",
            "--shared-secret-file",
            s(&bad),
            s(&f),
            "--block",
            "0",
        ]);
        assert_eq!(o.status.code(), Some(3));
        assert!(stderr(&o).contains("the key does not match this container"));
        // A damaged block under the right secret (CRC redone): verify names it.
        let mut b = std::fs::read(&f).unwrap();
        let a = h4fs::Archive::open(&f).unwrap();
        let e = a.entry(0, 3).unwrap();
        let at = (e.data_offset + e.stored_len - 3) as usize;
        b[at] ^= 1;
        let r = e.data_offset as usize..(e.data_offset + e.stored_len) as usize;
        let crc = crc32fast::hash(&b[r]);
        let c = e.chunk_offset as usize;
        b[c + 8..c + 12].copy_from_slice(&crc.to_be_bytes());
        let g = dir.path().join("damaged.h4mk");
        std::fs::write(&g, &b).unwrap();
        let o = h4fs_run(&["verify", "--shared-secret-file", s(&ss), s(&g)]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stdout).contains("block 3 "));
    }

    #[test]
    fn rekey_rotates_without_touching_blocks() {
        let st = setup();
        let orig = std::fs::read(&st.enc).unwrap();
        let new = st.dir.path().join("new.key");
        h4fs_ok(&["keygen", "-o", s(&new)]);
        let (k, f) = (s(&st.key), s(&st.enc));
        h4fs_ok(&["rekey", f, "--key-file", k, "--new-key-file", s(&new)]);
        let rekeyed = std::fs::read(&st.enc).unwrap();
        assert_eq!(rekeyed.len(), orig.len());
        // Only HENC, the footer and VERI differ.
        let l = layout(&orig);
        let henc = l.footer.henc_offset as usize;
        for (i, (a, b)) in orig.iter().zip(&rekeyed).enumerate() {
            if a != b {
                assert!(
                    (henc..henc + 12 + 429).contains(&i) || i >= l.footer_at,
                    "byte {i} changed outside HENC, footer and VERI"
                );
            }
        }
        let o = h4fs_run(&["cat", "--key-file", k, f, "--block", "0"]);
        assert!(stderr(&o).contains("the key does not match this container"));
        h4fs_ok(&["verify", "--full", "--key-file", s(&new), f]);
        let o = h4fs_ok(&["extract", "--key-file", s(&new), f, "-o", "-", "-q"]);
        assert_eq!(o.stdout, st.input);
        // The wrong old key is refused and nothing changes; rotating back restores the
        // original bytes exactly (wrapping is deterministic).
        let o = h4fs_run(&["rekey", f, "--key-file", k, "--new-key-file", s(&new)]);
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(std::fs::read(&st.enc).unwrap(), rekeyed);
        let back = st.dir.path().join("back.h4mk");
        h4fs_ok(&[
            "rekey",
            f,
            "--key-file",
            s(&new),
            "--new-key-file",
            k,
            "-o",
            s(&back),
        ]);
        assert_eq!(std::fs::read(&back).unwrap(), orig);
    }

    // ------------------------------------------------------------ through the mount

    mod mount {
        use super::*;
        use std::path::{Path, PathBuf};

        /// A mount that is unmounted when dropped.
        struct Mounted(PathBuf);

        impl Drop for Mounted {
            fn drop(&mut self) {
                let _ = h4fs_run(&["umount", "--lazy", s(&self.0)]);
            }
        }

        fn mount(args: &[&str], mp: &Path) -> Result<Mounted, String> {
            let mut all = vec!["mount"];
            all.extend_from_slice(args);
            all.push(s(mp));
            let o = h4fs_run(&all);
            if o.status.success() {
                Ok(Mounted(mp.to_path_buf()))
            } else {
                Err(stderr(&o))
            }
        }

        fn errno(r: std::io::Result<Vec<u8>>) -> Option<i32> {
            r.err().and_then(|e| e.raw_os_error())
        }

        #[test]
        fn encrypted_mount_with_and_without_key() {
            if !Path::new("/dev/fuse").exists() {
                eprintln!("skipped: no /dev/fuse");
                return;
            }
            let st = setup();
            let mp = st.dir.path().join("mnt");
            std::fs::create_dir(&mp).unwrap();
            {
                let _m = mount(&["--key-file", s(&st.key), s(&st.enc)], &mp).unwrap();
                assert_eq!(std::fs::read(mp.join("stream")).unwrap(), st.input);
                let b1 = std::fs::read(mp.join("blocks/000001")).unwrap();
                assert_eq!(b1, st.input[BLOCK..2 * BLOCK]);
            }
            {
                // No key: metadata yes, data EACCES.
                let _m = mount(&[s(&st.enc)], &mp).unwrap();
                let meta: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(mp.join("meta.json")).unwrap()).unwrap();
                assert_eq!(meta["encryption"]["cipher"], "h4fs-aes-256-gcm-v1");
                assert_eq!(errno(std::fs::read(mp.join("stream"))), Some(libc::EACCES));
                assert_eq!(
                    errno(std::fs::read(mp.join("blocks/000000"))),
                    Some(libc::EACCES)
                );
            }
            // A wrong key: the mount is refused up front.
            let other = st.dir.path().join("other.key");
            h4fs_ok(&["keygen", "-o", s(&other)]);
            let e = mount(&["--key-file", s(&other), s(&st.enc)], &mp)
                .err()
                .unwrap();
            assert!(e.contains("the key does not match this container"), "{e}");
            // A block transplanted from another container: EIO for it, the rest served.
            let mut a = std::fs::read(&st.enc).unwrap();
            let b = std::fs::read(pack_encrypted(
                &st.dir,
                "b",
                &noise(st.input.len(), 9),
                &st.key,
            ))
            .unwrap();
            let (la, lb) = (layout(&a), layout(&b));
            let (ra, rb) = (block_payload(&a, &la, 2), block_payload(&b, &lb, 2));
            a[ra].copy_from_slice(&b[rb]);
            reseal(&mut a);
            let f = variant(&st, "transplant-mount", &a);
            let _m = mount(&["--key-file", s(&st.key), s(&f)], &mp).unwrap();
            assert_eq!(
                errno(std::fs::read(mp.join("blocks/000002"))),
                Some(libc::EIO)
            );
            assert_eq!(
                std::fs::read(mp.join("blocks/000003")).unwrap(),
                st.input[3 * BLOCK..4 * BLOCK]
            );
            assert_eq!(errno(std::fs::read(mp.join("stream"))), Some(libc::EIO));
        }

        #[test]
        fn reference_encrypted_mount_with_its_secret() {
            if !Path::new("/dev/fuse").exists() {
                eprintln!("skipped: no /dev/fuse");
                return;
            }
            let dir = tempfile::tempdir().unwrap();
            let f = fixture("e_encrypted5.h4mk");
            let payload = std::fs::read(fixture("e_encrypted5.payload")).unwrap();
            let ss = dir.path().join("ss");
            let secret = h4fs::crypto::SharedSecret::reference_default();
            std::fs::write(&ss, hex::encode(secret.expose())).unwrap();
            let mp = dir.path().join("mnt");
            std::fs::create_dir(&mp).unwrap();
            {
                let _m = mount(&["--shared-secret-file", s(&ss), s(&f)], &mp).unwrap();
                assert_eq!(std::fs::read(mp.join("stream")).unwrap(), payload);
            }
            let _m = mount(&[s(&f)], &mp).unwrap();
            assert_eq!(errno(std::fs::read(mp.join("stream"))), Some(libc::EACCES));
        }
    }
}
