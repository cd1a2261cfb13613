#!/usr/bin/env python3
# Independent implementation of docs/FORMAT-encryption.md (h4fs-aes-256-gcm-v1), printing the
# known-answer values that tests/crypto.rs (h4fs_construction_known_answers) pins.
# Needs the `cryptography` package.
import hashlib, hmac, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
H = lambda b: hashlib.sha256(b).digest()
def extract(salt, ikm): return hmac.new(salt, ikm, hashlib.sha256).digest()
def expand(prk, info, L):
    assert L <= 32
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:L]
master = bytes(range(32))
src = H(b"h4fs test source")
engine = b"h4fs-identity-1"
plan = [(0, 5, 0, 1), (0, 3, 40000, 0)]
c = b"h4fs/v1/content\0" + src + struct.pack(">I", len(engine)) + engine
for t, l, p, k in plan: c += struct.pack(">IQQB", t, l, p, k)
c += struct.pack(">Q", len(plan))
content = H(c)
prk_m = extract(b"h4fs/v1/master", master)
key_id = expand(prk_m, b"h4fs/v1/key-id", 8)
cid = expand(prk_m, b"h4fs/v1/container-id\0" + content, 32)
dk = expand(prk_m, b"h4fs/v1/data-key\0" + cid, 32)
wk = expand(prk_m, b"h4fs/v1/wrap-key", 32)
wn = expand(prk_m, b"h4fs/v1/wrap-nonce\0" + cid + dk, 12)
wrapped = AESGCM(wk).encrypt(wn, dk, b"h4fs/v1/HENC" + cid)
prk_d = extract(b"h4fs/v1/data", dk)
bk = expand(prk_d, b"h4fs/v1/block-key\0" + cid, 32)
mk = expand(prk_d, b"h4fs/v1/structure-mac\0" + cid, 32)
nonce = struct.pack(">IQ", 0, 1)
pt = b"abc"
aad = b"h4fs/v1/block" + cid + struct.pack(">IQQBQQ", 0, 1, 40000, 0, len(pt), 3)
assert len(aad) == 82
stored = AESGCM(bk).encrypt(nonce, pt, aad)
smac = hmac.new(mk, H(b"structure") + b"\x01", hashlib.sha256).digest()
for n, v in [("content", content), ("key_id", key_id), ("container_id", cid), ("wrap_nonce", wn), ("wrapped_key", wrapped), ("block1", stored), ("structure_mac", smac)]:
    print(n, v.hex())
