#!/usr/bin/env bash
# Benchmark encrypted containers against unencrypted ones and against OpenSSL, in one run.
#
# On the same random input (default 1 GiB) it measures, each as the best of RUNS:
#   * `openssl speed -evp aes-256-gcm` at 16 KiB: the AES-256-GCM speed of one core;
#   * `h4fs pack` (identity engine) without and with --encrypt;
#   * `h4fs extract` of each container to /dev/null;
#   * the first sequential read of `stream` through a fresh mount (page cache dropped
#     first, so the container is read from disk) with `dd bs=1M`;
# and prints a markdown table with MB/s (10^6 bytes/s) and the ratios the issue asks for:
# encrypted / unencrypted and encrypted / OpenSSL. It checks that the encrypted mount
# read reaches at least 70% of the unencrypted one and exits 1 if not. Every output is
# compared with the input (cmp) so a fast wrong answer cannot pass.
#
# Needs root (drop_caches, FUSE). Usage: scripts/bench-encrypt.sh [SIZE_MIB [BLOCK]]

set -euo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
SIZE_MIB=${1:-1024}
BLOCK=${2:-1MiB}
RUNS=${RUNS:-3}
WORK=${WORK_DIR:-/var/tmp/h4fs-bench-encrypt}
BIN=${H4FS_BIN:-$REPO_DIR/target/release/h4fs}

[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN missing)" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 2; }

mkdir -p "$WORK"
MNT="$WORK/mnt"
mkdir -p "$MNT"
cleanup() {
    mountpoint -q "$MNT" 2>/dev/null && "$BIN" umount --lazy "$MNT" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# Seconds (with nanoseconds) a command takes.
timed() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

# Best (lowest) time of RUNS runs of "$@".
best() {
    local b="" t
    for _ in $(seq "$RUNS"); do
        t=$(timed "$@")
        if [[ -z $b ]] || (( $(echo "$t < $b" | bc -l) )); then b=$t; fi
    done
    echo "$b"
}

mbps() { echo "scale=1; $BYTES / $1 / 1000000" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

IN="$WORK/input.bin"
KEY="$WORK/bench.key"
BYTES=$((SIZE_MIB * 1048576))
if [[ ! -f $IN || $(stat -c %s "$IN") -ne $BYTES ]]; then
    echo "writing $SIZE_MIB MiB of random input" >&2
    head -c "$BYTES" /dev/urandom > "$IN"
fi
[[ -f $KEY ]] || "$BIN" keygen -o "$KEY" 2>/dev/null

echo "openssl speed" >&2
OSSL_KB=$(openssl speed -evp aes-256-gcm -bytes 16384 -seconds 3 2>/dev/null \
    | awk '/^AES-256-GCM/ {sub(/k$/, "", $2); print $2}')
OSSL=$(echo "scale=1; $OSSL_KB * 1000 / 1000000" | bc -l)

pack_plain() { "$BIN" pack "$IN" --block-size "$BLOCK" -q -o "$WORK/plain.h4mk"; }
pack_enc() { "$BIN" pack "$IN" --block-size "$BLOCK" -q --encrypt --key-file "$KEY" -o "$WORK/enc.h4mk"; }
echo "pack" >&2
T_PACK_P=$(best pack_plain)
T_PACK_E=$(best pack_enc)

extract_plain() { "$BIN" extract "$WORK/plain.h4mk" -q -o - > /dev/null; }
extract_enc() { "$BIN" extract --key-file "$KEY" "$WORK/enc.h4mk" -q -o - > /dev/null; }
echo "extract (and a correctness check)" >&2
"$BIN" extract --key-file "$KEY" "$WORK/enc.h4mk" -q -o - | cmp - "$IN"
T_EXT_P=$(best extract_plain)
T_EXT_E=$(best extract_enc)

# First sequential read of the mounted stream, page cache dropped before the mount.
mount_read() {
    local file=$1
    shift
    drop_caches
    "$BIN" mount "$@" "$file" "$MNT"
    local t
    t=$(timed dd if="$MNT/stream" of=/dev/null bs=1M status=none)
    "$BIN" umount "$MNT"
    echo "$t"
}
best_mount() {
    local b="" t
    for _ in $(seq "$RUNS"); do
        t=$(mount_read "$@")
        if [[ -z $b ]] || (( $(echo "$t < $b" | bc -l) )); then b=$t; fi
    done
    echo "$b"
}
echo "mount" >&2
"$BIN" mount --key-file "$KEY" "$WORK/enc.h4mk" "$MNT"
cmp "$MNT/stream" "$IN"
"$BIN" umount "$MNT"
T_MNT_P=$(best_mount "$WORK/plain.h4mk")
T_MNT_E=$(best_mount "$WORK/enc.h4mk" --key-file "$KEY")

echo "| operation ($SIZE_MIB MiB, blocks of $BLOCK) | unencrypted MB/s | encrypted MB/s | encrypted / unencrypted | encrypted / openssl |"
echo "|---|---:|---:|---:|---:|"
row() {
    local name=$1 tp=$2 te=$3
    local p e
    p=$(mbps "$tp")
    e=$(mbps "$te")
    echo "| $name | $p | $e | $(ratio "$e" "$p") | $(ratio "$e" "$OSSL") |"
}
row "pack" "$T_PACK_P" "$T_PACK_E"
row "extract" "$T_EXT_P" "$T_EXT_E"
row "mount: first sequential read of stream" "$T_MNT_P" "$T_MNT_E"
echo
echo "openssl speed -evp aes-256-gcm, 16 KiB blocks, one core: $OSSL MB/s"
echo "container sizes: $(stat -c %s "$WORK/plain.h4mk") bytes unencrypted, $(stat -c %s "$WORK/enc.h4mk") encrypted"

MOUNT_RATIO=$(ratio "$(mbps "$T_MNT_E")" "$(mbps "$T_MNT_P")")
if (( $(echo "$MOUNT_RATIO < 0.70" | bc -l) )); then
    echo "FAIL: encrypted mount read is $MOUNT_RATIO of unencrypted (target >= 0.70)" >&2
    exit 1
fi
echo "ok: encrypted mount read is $MOUNT_RATIO of unencrypted (target >= 0.70)" >&2
