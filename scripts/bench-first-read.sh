#!/usr/bin/env bash
# First sequential read of `stream` against squashfuse, with the bounds in the same run.
#
# On one file of random bytes (default 1 GiB) packed as a v2 container (1 MiB blocks) and
# as an uncompressed squashfs image, it measures in interleaved rounds, for each h4fs
# binary given and for squashfuse:
#   * warm: the container (image) in the page cache, a fresh mount, `cat` of the file;
#   * cold: the page cache dropped (`echo 3 > drop_caches`), a fresh mount, `cat`;
# reporting the median and range of MiB/s, the serving daemon's CPU seconds (user +
# system, /proc/PID/stat), `cat`'s CPU seconds, the cores busy during the read and the
# CPU time the hypervisor took from this machine meanwhile (steal, /proc/stat: on a
# shared host, the noise in every other column). Then, in the same run, the bounds:
#   * device: `cat` of the source file with the page cache dropped;
#   * FUSE path: the first h4fs binary serving `stream` from groups it has already
#     verified and holds in memory (page cache dropped), so each byte only crosses the
#     FUSE device: what any daemon here could do with no disk read and no hash;
#   * hashing: `b3sum --num-threads 1` (when installed) and `openssl dgst -sha256` of
#     the source file in the page cache.
# Prints markdown on stdout; progress on stderr. Unmounts what it mounted on exit.
#
# Needs root (drop_caches, FUSE), squashfuse and mksquashfs (squashfs-tools), jq.
# Results and the machine: docs/PERFORMANCE.md.

set -euo pipefail
export LC_ALL=C

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# fill_daemon_cache FILE
# shellcheck source=scripts/bench-lib.sh
source "$REPO_DIR/scripts/bench-lib.sh"
SIZE_MIB=1024
ROUNDS=8
WORK_DIR=/var/tmp/h4fs-first-read
BINS=()

usage() {
    cat <<'EOF'
Usage: scripts/bench-first-read.sh [OPTIONS] [H4FS_BINARY ...]

Compare the first sequential read of an h4fs mount's `stream` with squashfuse, the
container warm (in the page cache) and cold, with the device, FUSE-path and hashing bounds
measured in the same run. Binaries default to target/release/h4fs; give several (e.g. a
build of an older commit) to compare them in the same rounds.

Options (defaults in brackets):
  --size-mib N     data size in MiB [1024]
  --rounds N       interleaved rounds, warm and cold each [8]
  --dir DIR        work directory (data, container, image, mount point) [/var/tmp/h4fs-first-read]
  -h, --help       this help

Example:
  scripts/bench-first-read.sh --rounds 3 target/release/h4fs /tmp/h4fs-old
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mib) SIZE_MIB=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --dir) WORK_DIR=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "bench-first-read: unknown option '$1' (see --help)" >&2; exit 2 ;;
        *) BINS+=("$1"); shift ;;
    esac
done

log() { printf '[bench-first-read %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench-first-read: error: %s\n' "$*" >&2; exit 1; }

[[ $SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "--size-mib wants a positive integer, got '$SIZE_MIB'"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive integer, got '$ROUNDS'"
((EUID == 0)) || die "run as root (it drops the page cache and mounts FUSE)"
for tool in squashfuse mksquashfs jq; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install squashfuse squashfs-tools jq)"
done
if ((${#BINS[@]} == 0)); then
    (cd "$REPO_DIR" && cargo build --release --quiet) || die "cargo build --release failed"
    BINS=("$REPO_DIR/target/release/h4fs")
fi
for b in "${BINS[@]}"; do
    [[ -x $b ]] || die "not an executable: $b"
done

mkdir -p "$WORK_DIR"
DATA=$WORK_DIR/data.bin
CONT=$WORK_DIR/data.h4mk
IMG=$WORK_DIR/data.sqfs
MP=$WORK_DIR/mnt
mkdir -p "$MP"

cleanup() {
    if grep -qs " $MP " /proc/mounts; then umount "$MP" 2>/dev/null || umount -l "$MP" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ ! -f $DATA || $(stat -c %s "$DATA") -ne $((SIZE_MIB << 20)) ]]; then
    log "writing $SIZE_MIB MiB of random bytes"
    head -c $((SIZE_MIB << 20)) /dev/urandom >"$DATA.tmp"
    mv "$DATA.tmp" "$DATA"
    rm -f "$CONT" "$IMG"
fi
if [[ ! -f $CONT ]]; then
    log "packing the container (v2, 1 MiB blocks)"
    "${BINS[0]}" pack "$DATA" --block-size 1MiB -o "$CONT" >/dev/null
fi
if [[ ! -f $IMG ]]; then
    log "making the squashfs image (uncompressed, 128 KiB blocks)"
    d=$(mktemp -d "$WORK_DIR/sq.XXXXXX")
    ln "$DATA" "$d/data.bin"
    mksquashfs "$d" "$IMG.tmp" -noI -noD -noF -noX -no-fragments -b 128K -quiet -no-progress >/dev/null
    rm -rf "$d"
    mv "$IMG.tmp" "$IMG"
fi

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # clock ticks
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
steal_ticks() { awk '/^cpu / { print $9 }' /proc/stat; }
TICK=$(getconf CLK_TCK)

# mount TARGET: sets FILE and PID. TARGET is "sq" or an index into BINS.
mount_target() {
    if [[ $1 == sq ]]; then
        squashfuse "$IMG" "$MP"
        FILE=$MP/data.bin
        PID=$(pgrep -n -x squashfuse)
    else
        "${BINS[$1]}" mount "$CONT" "$MP"
        FILE=$MP/stream
        PID=$(pgrep -n -f -- "--ready-fd 3 $CONT $MP")
    fi
    [[ -n $PID ]] || die "no daemon found for target $1"
}

# one TARGET warm|cold: prints "mibs daemon_s cat_s busy_cores stolen_s"
one() {
    local t=$1 mode=$2 c0 c1 b0 b1 s0 s1 t0 t1 ct
    if [[ $mode == cold ]]; then drop_caches; else cat "$CONT" "$IMG" >/dev/null; fi
    mount_target "$t"
    c0=$(cpu_of "$PID")
    b0=$(busy_ticks)
    s0=$(steal_ticks)
    t0=$(date +%s.%N)
    ct=$( { /usr/bin/time -f '%U %S' cat "$FILE" >/dev/null; } 2>&1 )
    t1=$(date +%s.%N)
    b1=$(busy_ticks)
    s1=$(steal_ticks)
    c1=$(cpu_of "$PID")
    umount "$MP"
    awk -v s="$SIZE_MIB" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v b0="$b0" \
        -v b1="$b1" -v hz="$TICK" -v ct="$ct" -v s0="$s0" -v s1="$s1" 'BEGIN {
            split(ct, c, " "); w = t1 - t0
            printf "%.0f %.2f %.2f %.2f %.2f\n", s / w, (c1 - c0) / hz, c[1] + c[2], (b1 - b0) / hz / w, (s1 - s0) / hz }'
}

name_of() { if [[ $1 == sq ]]; then echo squashfuse; else echo "h4fs ${BINS[$1]}"; fi; }

declare -A RES=()
TARGETS=()
for i in "${!BINS[@]}"; do TARGETS+=("$i"); done
TARGETS+=(sq)
for ((r = 1; r <= ROUNDS; r++)); do
    for mode in warm cold; do
        for t in "${TARGETS[@]}"; do
            log "round $r/$ROUNDS, $mode: $(name_of "$t")"
            RES["$mode $t"]+="$(one "$t" "$mode")"$'\n'
        done
    done
done

# median and range of column 1, medians of the others
summary() {
    printf '%s' "$1" | sort -n -k1,1 | awk '
        { m[NR] = $1; d[NR] = $2; c[NR] = $3; b[NR] = $4; st[NR] = $5 }
        function med(a, n,   i, j, t, x) {
            for (i = 1; i <= n; i++) x[i] = a[i]
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
            return (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
        }
        END { printf "%.0f|%.0f-%.0f|%.2f|%.2f|%.2f|%.2f\n", med(m, NR), m[1], m[NR], med(d, NR), med(c, NR), med(b, NR), med(st, NR) }'
}

log "bounds: device, FUSE path, hashing"
DEV=""
for ((r = 1; r <= 3; r++)); do
    drop_caches
    t0=$(date +%s.%N); cat "$DATA" >/dev/null; t1=$(date +%s.%N)
    DEV+=$(awk -v s="$SIZE_MIB" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", s / (b - a) }')$'\n'
done
FUSE=""
"${BINS[0]}" mount --cache-size $(((SIZE_MIB + SIZE_MIB / 8 + 64) << 20)) "$CONT" "$MP"
verified() { "${BINS[0]}" stats --json "$MP" | jq '.blocks_verified + .groups_verified'; }
for ((r = 1; r <= 3; r++)); do
    fill_daemon_cache "$MP/stream"
    echo 1 >/proc/sys/vm/drop_caches
    v0=$(verified)
    t0=$(date +%s.%N); cat "$MP/stream" >/dev/null; t1=$(date +%s.%N)
    [[ $(verified) -eq $v0 ]] || die "the FUSE-path run verified bytes again (cache too small?)"
    FUSE+=$(awk -v s="$SIZE_MIB" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", s / (b - a) }')$'\n'
done
umount "$MP"
cat "$DATA" >/dev/null
hash_time() { # command... -> seconds, best of 3
    local best="" t0 t1 d
    for ((r = 1; r <= 3; r++)); do
        t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
        d=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        if [[ -z $best ]] || awk -v d="$d" -v b="$best" 'BEGIN { exit !(d < b) }'; then best=$d; fi
    done
    echo "$best"
}
SHA=$(hash_time openssl dgst -sha256 "$DATA")
B3="not installed"
B3S=""
if command -v b3sum >/dev/null; then
    B3S=$(hash_time b3sum --num-threads 1 "$DATA")
    B3="$B3S s"
fi
best() { printf '%s' "$1" | sort -n | tail -1; }

echo "Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, $(uname -r); data in $WORK_DIR ($(df --output=fstype "$WORK_DIR" | tail -1)); $SIZE_MIB MiB, $ROUNDS interleaved rounds."
echo
echo "| target | mode | median MiB/s | range | daemon CPU s | cat CPU s | cores busy | CPU s stolen by the host | ratio to squashfuse (medians) |"
echo "|---|---|---|---|---|---|---|---|---|"
for mode in warm cold; do
    sq=$(summary "${RES["$mode sq"]}" | cut -d'|' -f1)
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r med range d c b st <<<"$(summary "${RES["$mode $t"]}")"
        ratio=$(awk -v a="$med" -v b="$sq" 'BEGIN { printf "%.2fx", a / b }')
        echo "| $(name_of "$t") | $mode | $med | $range | $d | $c | $b | $st | $ratio |"
    done
done
echo
echo "| bound | best MiB/s |"
echo "|---|---|"
echo "| device: \`cat\` of the source file, page cache dropped | $(best "$DEV") |"
echo "| FUSE path: \`stream\` from groups already verified in memory | $(best "$FUSE") |"
echo
echo "Hashing the $SIZE_MIB MiB in the page cache: \`openssl dgst -sha256\` $SHA s, \`b3sum --num-threads 1\` $B3."
if [[ -n $B3S ]]; then
    # What any daemon that does squashfuse's work (its copies, its CPU per byte) plus
    # one BLAKE3 pass could reach with every core busy: the CPU seconds of the whole
    # read (squashfuse's daemon + cat, medians, + b3sum) spread over all cores. Warm
    # only: a cold read also waits on the device (its bound is the line above).
    ncpu=$(nproc)
    for mode in warm; do
        IFS='|' read -r med _ d c _ _ <<<"$(summary "${RES["$mode sq"]}")"
        awk -v s="$SIZE_MIB" -v d="$d" -v c="$c" -v h="$B3S" -v n="$ncpu" -v m="$med" -v mode="$mode" 'BEGIN {
            w = (d + c + h) / n
            printf "Bound, %s: squashfuse'"'"'s CPU (daemon %.2f s + cat %.2f s) plus b3sum'"'"'s %.3f s on %d fully busy cores: %.3f s, %.0f MiB/s, %.2fx squashfuse.\n", mode, d, c, h, n, w, s / w, s / w / m }'
    done
fi
