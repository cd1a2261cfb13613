#!/usr/bin/env bash
# The main job on a built-in sample: build h4fs, generate a sample media file, pack it,
# inspect and verify the container, mount it and show the tree, read it through the
# mount, extract it and compare with the source.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v fusermount3 >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing fuse3"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
  else
    echo "fuse3 is needed to mount: install it (apt-get install fuse3) and run again" >&2
    exit 1
  fi
fi
cargo build --release --quiet
h4fs=target/release/h4fs
work=$(mktemp -d "${TMPDIR:-/tmp}/h4fs-demo.XXXXXX")
mnt="$work/mnt"
mkdir "$mnt"
cleanup() {
  "$h4fs" umount "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

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
echo "== mount"
"$h4fs" mount "$work/sample.h4mk" "$mnt"
echo "\$ ls $mnt"
ls "$mnt"
echo "\$ ls -l $mnt/blocks | head -4"
ls -l "$mnt/blocks" | head -4
echo "\$ head -3 $mnt/seek.csv"
head -3 "$mnt/seek.csv"
echo "\$ readlink $mnt/by-pts/1000000"
readlink "$mnt/by-pts/1000000"
echo "\$ getfattr -d $mnt/blocks/000010"
getfattr -d "$mnt/blocks/000010" 2>/dev/null || true
echo "\$ sha256sum $mnt/stream sample.bin"
sha256sum "$mnt/stream" "$work/sample.bin" | sed "s|$work/||"
cmp "$mnt/stream" "$work/sample.bin" && echo "stream through the mount is byte-identical to the source"
echo "\$ h4fs stats $mnt"
"$h4fs" stats "$mnt"
"$h4fs" umount "$mnt"
echo "== extract and compare"
$h4fs extract "$work/sample.h4mk" -o "$work/sample.out"
cmp "$work/sample.bin" "$work/sample.out" && echo "extracted stream is byte-identical to the source"
sha256sum "$work/sample.bin" | cut -c1-64
