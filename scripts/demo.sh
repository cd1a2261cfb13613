#!/usr/bin/env bash
# The main job on a built-in sample: build h4fs, generate a sample media file, pack it,
# inspect and verify the container, extract it and compare with the source.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
h4fs=target/release/h4fs
work=$(mktemp -d "${TMPDIR:-/tmp}/h4fs-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A deterministic 8 MiB sample: a counter pattern, so every block differs.
python3 - "$work/sample.bin" <<'PY' 2>/dev/null || head -c 8388608 /dev/urandom > "$work/sample.bin"
import sys, hashlib
with open(sys.argv[1], "wb") as f:
    seed = b"h4fs-demo"
    for i in range(8 * 1024 * 1024 // 32):
        seed = hashlib.sha256(seed).digest()
        f.write(seed)
PY
echo "== pack"
$h4fs pack "$work/sample.bin" --block-size 256K --fps 25 --gop 10 -o "$work/sample.h4mk"
echo "== inspect"
$h4fs inspect "$work/sample.h4mk" | sed -n '1,20p'
echo "== seek 1000000 us"
$h4fs seek "$work/sample.h4mk" 1000000
echo "== verify --full"
$h4fs verify --full "$work/sample.h4mk"
echo "== extract and compare"
$h4fs extract "$work/sample.h4mk" -o "$work/sample.out"
cmp "$work/sample.bin" "$work/sample.out" && echo "extracted stream is byte-identical to the source"
sha256sum "$work/sample.bin" | cut -c1-64
