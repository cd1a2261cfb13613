#!/usr/bin/env bash
# Benchmark `h4fs mount` against a native read, squashfuse and ratarmount.
#
# On the same data (default 1 GiB of random bytes) in one run it measures, for every target:
#   * the first sequential read after a fresh mount (page cache dropped first), with
#     `cat FILE > /dev/null` and `dd if=FILE of=/dev/null bs=1M`;
#   * the re-read right after it (warm page cache / warm daemon);
#   * random 4 KiB reads with fio (psync, direct=0, same seed and offsets for every target,
#     fresh mount and dropped caches): IOPS, mean, p50 and p99 latency;
#   * the bounds no daemon can beat here: the device (cold reads of the source), the FUSE
#     path (h4fs serving blocks it has already verified from memory), hashing (`h4fs
#     verify`), and how the page cache holds each file (4 KiB pages or large folios);
# and for h4fs alone:
#   * the time to mount a 1,000,000-block container (`h4fs pack --block-size 256` of a
#     256,000,000-byte file), cold and warm, from `h4fs mount` starting to the mount being
#     ready, over several runs;
#   * the serving daemon's memory (VmRSS, VmHWM from /proc/PID/status) on that container.
#
# Targets compared (the data is identical in each; checked with cmp):
#   native          the source file on the local file system
#   h4fs-<BS>       `stream` of an h4fs container packed with --block-size BS (identity engine)
#   squashfuse      the file inside an uncompressed squashfs image (mksquashfs -noI -noD -noF -noX)
#   squashfuse_ll   the same image through squashfuse's low-level daemon
#   ratarmount      the file inside an uncompressed tar
#
# It prints markdown tables on stdout (progress goes to stderr), checks the product's targets
# (first sequential read >= 1.5x squashfuse, re-read >= 0.5x native page cache, random 4 KiB
# latency <= squashfuse, mount of 1,000,000 blocks < 100 ms), and unmounts everything it
# mounted on exit, also after a failure or Ctrl-C.
#
# Needs root (to drop the page cache and mount FUSE). Run `scripts/bench-mount.sh --help`.
# Results, the machine they were measured on and what they mean: docs/PERFORMANCE.md, "Mount".

set -euo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

# ---------------------------------------------------------------- parameters
SIZE=1GiB
BLOCK_SIZES="1MiB 256KiB"
WORK_DIR=/var/tmp/h4fs-bench
RUNS=5
READ_AHEAD_KB=""
RAND_IOS=20000
RAND_SEED=4242
MOUNT_RUNS=10
MILLION_BYTES=256000000
MILLION_BLOCK=256
H4FS_BIN=""
H4FS_OPTS=""
TARGETS=""
OUTPUT=""
SKIP_H4FS=0
SKIP_MILLION=0
SQFS_BLOCK=128K

usage() {
    cat <<'EOF'
Usage: scripts/bench-mount.sh [OPTIONS]

Compare `h4fs mount` (reading `stream`) with a native read, squashfuse and ratarmount on the
same data: first sequential read after mount (cat, dd bs=1M), re-read, random 4 KiB reads
(fio), and the mount time and memory of a 1,000,000-block container. Prints markdown.

Options (defaults in brackets):
  --size SIZE            data size, bytes or with K/M/G/KiB/MiB/GiB [1GiB]
  --block-sizes "A B"    h4fs block sizes to pack the data with, one target each ["1MiB 256KiB"]
  --dir DIR              work directory for data, images and mount points [/var/tmp/h4fs-bench]
                         (data is reused across runs when its size matches)
  --runs N               sequential-read repetitions per target (best and median reported) [5]
  --rand-ios N           number of random 4 KiB reads per target [20000]
  --seed N               fio random seed, the same for every target [4242]
  --mount-runs N         runs of the 1,000,000-block mount timing, cold and warm each [10]
  --million-bytes N      size of the file packed for the mount test [256000000]
  --million-block N      its block size; bytes / block = block count [256]
  --h4fs PATH            h4fs binary [target/release/h4fs, built with cargo build --release]
  --h4fs-opts "OPTS"     extra options for `h4fs mount` (e.g. "--cache-size 512MiB") [none]
  --targets "T ..."      subset of: native h4fs-<BS>... squashfuse squashfuse_ll ratarmount
  --read-ahead-kb N      set read_ahead_kb of every FUSE mount's bdi after mounting (the kernel
                         caps FUSE readahead at 128 KiB whatever the daemon asks) [unchanged]
  --sqfs-block SIZE      squashfs data block size (mksquashfs -b) [128K, mksquashfs default]
  --no-h4fs              skip every h4fs measurement (to test the other targets)
  --no-million           skip the 1,000,000-block mount test
  --output FILE          also write the markdown report to FILE
  -h, --help             this help

Example (a quick smoke run):
  scripts/bench-mount.sh --size 64MiB --runs 1 --rand-ios 2000 --mount-runs 2 \
      --million-bytes 2560000
EOF
}

ORIG_ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
        --size) SIZE=$2; shift 2 ;;
        --block-sizes) BLOCK_SIZES=$2; shift 2 ;;
        --dir) WORK_DIR=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --rand-ios) RAND_IOS=$2; shift 2 ;;
        --seed) RAND_SEED=$2; shift 2 ;;
        --mount-runs) MOUNT_RUNS=$2; shift 2 ;;
        --million-bytes) MILLION_BYTES=$2; shift 2 ;;
        --million-block) MILLION_BLOCK=$2; shift 2 ;;
        --h4fs) H4FS_BIN=$2; shift 2 ;;
        --h4fs-opts) H4FS_OPTS=$2; shift 2 ;;
        --targets) TARGETS=$2; shift 2 ;;
        --sqfs-block) SQFS_BLOCK=$2; shift 2 ;;
        --read-ahead-kb) READ_AHEAD_KB=$2; shift 2 ;;
        --no-h4fs) SKIP_H4FS=1; shift ;;
        --no-million) SKIP_MILLION=1; shift ;;
        --output) OUTPUT=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench-mount: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[bench-mount %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench-mount: error: %s\n' "$*" >&2; exit 1; }

# "1GiB" -> 1073741824. Binary multiples for K/M/G with or without "iB".
parse_size() {
    local s=$1 num unit
    [[ $s =~ ^([0-9]+)([KkMmGg]?)(i?B?)$ ]] || die "bad size '$s' (use e.g. 1073741824, 512MiB, 1G)"
    num=${BASH_REMATCH[1]}
    unit=${BASH_REMATCH[2]}
    case "$unit" in
        "") echo "$num" ;;
        [Kk]) echo $((num * 1024)) ;;
        [Mm]) echo $((num * 1024 * 1024)) ;;
        [Gg]) echo $((num * 1024 * 1024 * 1024)) ;;
    esac
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# fill_daemon_cache FILE
# shellcheck source=scripts/bench-lib.sh
source "$SCRIPT_DIR/bench-lib.sh"

SIZE_BYTES=$(parse_size "$SIZE")
read -ra H4FS_OPT_LIST <<<"$H4FS_OPTS"
for v in RUNS RAND_IOS RAND_SEED MOUNT_RUNS MILLION_BYTES MILLION_BLOCK; do
    is_uint "${!v}" || die "--$(tr '[:upper:]_' '[:lower:]-' <<<"$v") wants a non-negative integer, got '${!v}'"
done
((RUNS >= 1)) || die "--runs must be at least 1"
[[ -z $READ_AHEAD_KB ]] || is_uint "$READ_AHEAD_KB" || die "--read-ahead-kb wants an integer, got '$READ_AHEAD_KB'"
((SIZE_BYTES >= 4096 * 16)) || die "--size must be at least 64 KiB"
((RAND_IOS * 4096 <= SIZE_BYTES)) || die "--rand-ios $RAND_IOS x 4 KiB is more than --size $SIZE"
((MILLION_BLOCK >= 1)) || die "--million-block must be at least 1"
MILLION_BLOCKS=$(((MILLION_BYTES + MILLION_BLOCK - 1) / MILLION_BLOCK))

# ---------------------------------------------------------------- prerequisites
[[ $(id -u) -eq 0 ]] || die "must run as root (drops the page cache via /proc/sys/vm/drop_caches and mounts FUSE)"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable (a container without CAP_SYS_ADMIN?)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing: load the fuse module (modprobe fuse)"

# Install a missing tool from the distribution's packages, or fail saying what is missing.
need_apt() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    log "installing $pkg (for $cmd)"
    command -v apt-get >/dev/null 2>&1 || die "$cmd is missing and apt-get is not available: install $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >&2 ||
        die "$cmd is missing and 'apt-get install $pkg' failed"
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still missing after installing $pkg"
}

want_target() { [[ " $TARGETS " == *" $1 "* ]]; }

if [[ -z $TARGETS ]]; then
    TARGETS="native"
    if ((SKIP_H4FS == 0)); then
        for bs in $BLOCK_SIZES; do TARGETS+=" h4fs-$bs"; done
    fi
    TARGETS+=" squashfuse squashfuse_ll ratarmount"
fi
for t in $TARGETS; do
    case "$t" in
        native | squashfuse | squashfuse_ll | ratarmount) ;;
        h4fs-*) ((SKIP_H4FS == 0)) || die "--no-h4fs with target $t" ;;
        *) die "unknown target '$t' (native h4fs-<BS> squashfuse squashfuse_ll ratarmount)" ;;
    esac
done

need_apt fio fio
need_apt jq jq
need_apt fusermount3 fuse3
need_apt mountpoint util-linux
if want_target squashfuse || want_target squashfuse_ll; then
    need_apt mksquashfs squashfs-tools
    need_apt squashfuse squashfuse
    want_target squashfuse_ll && need_apt squashfuse_ll squashfuse
fi
if want_target ratarmount; then
    if ! command -v ratarmount >/dev/null 2>&1; then
        log "installing ratarmount with pip"
        PIP=$(command -v pip3 || command -v pip || true)
        [[ -n $PIP ]] || die "ratarmount is missing and there is no pip to install it: pip install ratarmount"
        "$PIP" install -q ratarmount >&2 || die "ratarmount is missing and 'pip install ratarmount' failed"
        hash -r
        command -v ratarmount >/dev/null 2>&1 || die "ratarmount still not on PATH after pip install (check pip's bin directory)"
    fi
fi

has_h4fs_target() { [[ " $TARGETS " == *" h4fs-"* ]] || { ((SKIP_H4FS == 0)) && ((SKIP_MILLION == 0)); }; }
if has_h4fs_target; then
    if [[ -z $H4FS_BIN ]]; then
        H4FS_BIN=$REPO_DIR/target/release/h4fs
        log "building h4fs (cargo build --release)"
        (cd "$REPO_DIR" && cargo build --release --quiet) >&2 || die "cargo build --release failed"
    fi
    [[ -x $H4FS_BIN ]] || die "h4fs binary '$H4FS_BIN' is not executable"
    "$H4FS_BIN" mount --help >/dev/null 2>&1 || die "'$H4FS_BIN mount --help' failed: this h4fs has no mount command"
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$WORK_DIR"
WORK_DIR=$(cd "$WORK_DIR" && pwd -P)
MNT_ROOT=$WORK_DIR/mnt
mkdir -p "$MNT_ROOT"
# Mounts left under our own mount root by a run that was killed with SIGKILL.
for d in "$MNT_ROOT"/*; do
    if grep -qF " $d " /proc/self/mounts; then
        log "removing a mount left by an earlier run: $d"
        fusermount3 -u "$d" 2>/dev/null || fusermount3 -uz "$d" 2>/dev/null || umount -l "$d" ||
            die "cannot unmount $d, left by an earlier run"
    fi
done

# ---------------------------------------------------------------- mounts and cleanup
declare -A MOUNTED=()    # mount point -> target name, for every mount this script made
declare -A DAEMON_PIDS=() # mount point -> pids serving it (found from their command lines)

# Pids of processes whose command line has MNT as one argument: the daemon serving it (all
# of h4fs, squashfuse and ratarmount keep the mount point in argv after going to background).
pids_for_mount() {
    local mnt=$1 d pid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        if { tr '\0' '\n' <"$d/cmdline"; } 2>/dev/null | grep -qxF -- "$mnt"; then
            echo "$pid"
        fi
    done
}

wait_pids_gone() {
    local deadline=$((SECONDS + $2)) pid alive
    while :; do
        alive=0
        for pid in $1; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive == 0)) && return 0
        ((SECONDS >= deadline)) && return 1
        sleep 0.02
    done
}

unmount_point() {
    local mnt=$1 target=${MOUNTED[$1]:-} pids
    pids=${DAEMON_PIDS[$mnt]:-$(pids_for_mount "$mnt")}
    if mountpoint -q "$mnt" 2>/dev/null || grep -qF " $mnt " /proc/self/mounts; then
        if [[ $target == h4fs-* || $target == million ]]; then
            "$H4FS_BIN" umount "$mnt" >/dev/null 2>&1 || fusermount3 -u "$mnt" 2>/dev/null || true
        else
            fusermount3 -u "$mnt" 2>/dev/null || true
        fi
        if grep -qF " $mnt " /proc/self/mounts; then
            log "normal unmount of $mnt failed; detaching it lazily"
            fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
        fi
    fi
    if [[ -n $pids ]] && ! wait_pids_gone "$pids" 10; then
        log "daemon(s) $pids of $mnt still running after unmount; sending SIGTERM"
        local -a pid_list
        read -ra pid_list <<<"$pids"
        kill "${pid_list[@]}" 2>/dev/null || true
        wait_pids_gone "$pids" 5 || { kill -KILL "${pid_list[@]}" 2>/dev/null || true; }
    fi
    unset "MOUNTED[$mnt]" "DAEMON_PIDS[$mnt]"
}

cleanup() {
    local rc=$? mnt
    trap - EXIT INT TERM
    for mnt in "${!MOUNTED[@]}"; do unmount_point "$mnt"; done
    ((rc == 0)) || log "failed (exit $rc); every mount made was removed"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

# Wait until MNT is a mount point and PATH exists under it.
wait_ready() {
    local mnt=$1 path=$2 deadline=$((SECONDS + 60))
    until mountpoint -q "$mnt" && [[ -e $path ]]; do
        ((SECONDS < deadline)) || die "mount at $mnt not ready after 60 s ($path missing)"
        sleep 0.01
    done
}

# The data file of a target (where it appears once mounted).
target_mnt() { echo "$MNT_ROOT/$1"; }
target_path() {
    local t=$1 mnt
    mnt=$(target_mnt "$t")
    case "$t" in
        native) echo "$DATA" ;;
        h4fs-*)
            # A single container mounts its tree at the root; a directory source one level down.
            if [[ -e $mnt/stream ]]; then echo "$mnt/stream"; else echo "$mnt/data/stream"; fi ;;
        squashfuse | squashfuse_ll | ratarmount) echo "$mnt/data.bin" ;;
    esac
}

# Mount target T (fresh); echoes nothing, records the mount for cleanup.
mount_target() {
    local t=$1 mnt
    [[ $t == native ]] && return 0
    mnt=$(target_mnt "$t")
    mkdir -p "$mnt"
    MOUNTED[$mnt]=$t
    case "$t" in
        h4fs-*)
            "$H4FS_BIN" mount "${H4FS_OPT_LIST[@]}" "$WORK_DIR/data-${t#h4fs-}.h4mk" "$mnt" >&2 ||
                die "h4fs mount of data-${t#h4fs-}.h4mk failed"
            ;;
        squashfuse) squashfuse "$WORK_DIR/data.sqfs" "$mnt" >&2 || die "squashfuse failed" ;;
        squashfuse_ll) squashfuse_ll "$WORK_DIR/data.sqfs" "$mnt" >&2 || die "squashfuse_ll failed" ;;
        ratarmount) ratarmount --index-file "$WORK_DIR/data.tar.index.sqlite" "$WORK_DIR/data.tar" "$mnt" \
            >/dev/null 2>&1 || die "ratarmount failed" ;;
    esac
    if [[ $t == h4fs-* ]]; then
        wait_ready "$mnt" "$mnt"
        [[ -e $mnt/stream || -e $mnt/data/stream ]] || die "no stream under the h4fs mount at $mnt"
    fi
    wait_ready "$mnt" "$(target_path "$t")"
    DAEMON_PIDS[$mnt]=$(pids_for_mount "$mnt" | tr '\n' ' ')
    [[ -z $READ_AHEAD_KB ]] || set_read_ahead "$mnt"
}

# Write READ_AHEAD_KB to the read_ahead_kb of the bdi behind the mount at MNT.
set_read_ahead() {
    local dev
    dev=$(awk -v m="$1" '$5 == m { print $3 }' /proc/self/mountinfo | tail -n 1)
    [[ -n $dev && -w /sys/class/bdi/$dev/read_ahead_kb ]] || die "no bdi read_ahead_kb for the mount at $1"
    echo "$READ_AHEAD_KB" >"/sys/class/bdi/$dev/read_ahead_kb"
}

umount_target() {
    [[ $1 == native ]] && return 0
    unmount_point "$(target_mnt "$1")"
}

# VmRSS and VmHWM (MiB) of the daemon(s) serving T, summed: "rss hwm".
daemon_mem() {
    local mnt pid rss=0 hwm=0 r h
    mnt=$(target_mnt "$1")
    for pid in ${DAEMON_PIDS[$mnt]:-}; do
        r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        rss=$((rss + ${r:-0}))
        hwm=$((hwm + ${h:-0}))
    done
    awk -v r="$rss" -v h="$hwm" 'BEGIN { printf "%.1f %.1f", r / 1024, h / 1024 }'
}

# CPU seconds (user + system, all threads) used so far by the daemon(s) serving T; 0 for native.
CLK_TCK=$(getconf CLK_TCK)
daemon_cpu() {
    local mnt pid ticks=0 v
    mnt=$(target_mnt "$1")
    for pid in ${DAEMON_PIDS[$mnt]:-}; do
        # Fields after the parenthesised command name: utime and stime are 12th and 13th.
        v=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }') || v=0
        ticks=$((ticks + ${v:-0}))
    done
    awk -v t="$ticks" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minmax() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s %s", lo, hi }'; }
mibs() { awk -v b="$SIZE_BYTES" -v s="$1" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "nan" || b == "nan") print "nan"; else printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" -v goal="$2" -v dir="$3" 'BEGIN { if (r == "nan") print "n/a"; else if ((dir == "ge" && r >= goal) || (dir == "le" && r <= goal)) print "**met**"; else print "**missed**" }'; }

# ---------------------------------------------------------------- data preparation
DATA=$WORK_DIR/src/data.bin
mkdir -p "$WORK_DIR/src"
if [[ ! -f $DATA || $(stat -c %s "$DATA") -ne $SIZE_BYTES ]]; then
    log "writing $SIZE_BYTES random bytes to $DATA"
    rm -f "$DATA" "$WORK_DIR"/data*.h4mk "$WORK_DIR/data.sqfs" "$WORK_DIR/data.tar" "$WORK_DIR"/data.tar.index.sqlite
    head -c "$SIZE_BYTES" /dev/urandom >"$DATA.tmp"
    mv "$DATA.tmp" "$DATA"
fi

# (Re)build ARTIFACT with the command after it when missing or older than the data (h4fs
# containers also when older than the h4fs binary, whose format they must match).
build_if_stale() {
    local out=$1
    shift
    if [[ ! -s $out || $out -ot $DATA || ($1 == "$H4FS_BIN" && $out -ot $H4FS_BIN) ]]; then
        log "building $(basename "$out")"
        rm -f "$out"
        "$@" || die "building $out failed: $*"
    fi
}

if want_target squashfuse || want_target squashfuse_ll; then
    build_if_stale "$WORK_DIR/data.sqfs" \
        mksquashfs "$WORK_DIR/src" "$WORK_DIR/data.sqfs" -noI -noD -noF -noX -no-fragments \
        -b "$SQFS_BLOCK" -noappend -all-root -quiet -no-progress
fi
if want_target ratarmount; then
    if [[ ! -s $WORK_DIR/data.tar || $WORK_DIR/data.tar -ot $DATA ]]; then
        rm -f "$WORK_DIR/data.tar.index.sqlite"
    fi
    build_if_stale "$WORK_DIR/data.tar" tar -C "$WORK_DIR/src" -cf "$WORK_DIR/data.tar" data.bin
    if [[ ! -s $WORK_DIR/data.tar.index.sqlite ]]; then
        # ratarmount writes its index on the first mount; do that now, outside the timings.
        log "building ratarmount's index of data.tar"
        mount_target ratarmount
        umount_target ratarmount
    fi
fi
for t in $TARGETS; do
    if [[ $t == h4fs-* ]]; then
        build_if_stale "$WORK_DIR/data-${t#h4fs-}.h4mk" \
            "$H4FS_BIN" pack "$DATA" --block-size "${t#h4fs-}" -q -o "$WORK_DIR/data-${t#h4fs-}.h4mk"
    fi
done

# Every target must serve exactly the source bytes, or its timings mean nothing.
log "checking that every target serves the source bytes"
for t in $TARGETS; do
    mount_target "$t"
    p=$(target_path "$t")
    [[ $(stat -L -c %s "$p") -eq $SIZE_BYTES ]] || die "$t: $p has size $(stat -L -c %s "$p"), expected $SIZE_BYTES"
    cmp -s "$DATA" "$p" || die "$t: $p differs from $DATA"
    umount_target "$t"
done

# ---------------------------------------------------------------- sequential reads
declare -A SEQ=() # "target tool first|warm" -> newline-separated seconds
declare -A MEM=() # target -> "rss hwm" of the daemon after the reads
RAW_SEQ=$WORK_DIR/sequential.tsv # every run's seconds, for a look at the spread
printf 'run\ttarget\ttool\tfirst_s\treread_s\tthird_s\tdaemon_cpu_first_s\n' >"$RAW_SEQ"

read_with() {
    case "$1" in
        cat) cat "$2" >/dev/null ;;
        dd) dd if="$2" of=/dev/null bs=1M status=none ;;
    esac
}

for ((run = 1; run <= RUNS; run++)); do
    for t in $TARGETS; do
        for tool in cat dd; do
            log "sequential run $run/$RUNS: $t, $tool"
            umount_target "$t"
            drop_caches
            mount_target "$t"
            p=$(target_path "$t")
            c0=$(daemon_cpu "$t")
            t0=$(now)
            read_with "$tool" "$p"
            t1=$(now)
            c1=$(daemon_cpu "$t")
            read_with "$tool" "$p"
            t2=$(now)
            read_with "$tool" "$p"
            t3=$(now)
            SEQ["$t $tool first"]+="$(elapsed "$t0" "$t1")"$'\n'
            SEQ["$t $tool warm"]+="$(elapsed "$t1" "$t2")"$'\n'
            SEQ["$t $tool third"]+="$(elapsed "$t2" "$t3")"$'\n'
            SEQ["$t $tool cpu"]+="$(elapsed "$c0" "$c1")"$'\n'
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$t" "$tool" "$(elapsed "$t0" "$t1")" \
                "$(elapsed "$t1" "$t2")" "$(elapsed "$t2" "$t3")" "$(elapsed "$c0" "$c1")" >>"$RAW_SEQ"
            [[ $t == native ]] || MEM[$t]=$(daemon_mem "$t")
            umount_target "$t"
        done
    done
done

# MiB/s of target $1, tool $2, phase $3 (first|warm): the median run, or with $4 = best the
# fastest (least disturbed by other processes on the machine).
seq_mibs() {
    if [[ ${4:-median} == best ]]; then
        mibs "$(printf '%s' "${SEQ["$1 $2 $3"]}" | minmax | awk '{ print $1 }')"
    else
        mibs "$(printf '%s' "${SEQ["$1 $2 $3"]}" | median)"
    fi
}
seq_cell() { echo "$(seq_mibs "$1" "$2" "$3" best) ($(seq_mibs "$1" "$2" "$3"))"; }

# ---------------------------------------------------------------- bounds
# What no daemon can beat on this machine, measured on the same data in the same run:
#   device   the source read cold by one `cat` and by two readers of one half each;
#   fuse     h4fs `stream` read with every block already verified in the daemon's memory
#            (page cache dropped, so every byte crosses the FUSE device: no disk, no hash);
#   hash     `h4fs verify` of the container in the page cache: every block's SHA-256 on
#            all cores, without FUSE;
#   folios   how the page cache holds the file: 4 KiB pages or large folios (kpageflags),
#            which bounds how fast a re-read from the page cache copies;
#   requests read requests that reach the daemon during a re-read (`h4fs stats`).
declare -A BOUND=() # "what target" -> newline-separated seconds, or a value
FOLIO_PY=$(mktemp)
cat >"$FOLIO_PY" <<'PY'
# Print the share of the first 64 MiB of a file's pages that sit in large folios.
import ctypes, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
n = min(os.fstat(fd).st_size, 64 << 20) // 4096
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
addr = libc.mmap(None, n * 4096, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
if addr in (None, ctypes.c_void_p(-1).value):
    sys.exit("mmap failed")
for i in range(n):
    ctypes.c_ubyte.from_address(addr + i * 4096).value
large = 0
with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
    for i in range(n):
        pm.seek((addr // 4096 + i) * 8)
        pfn = int.from_bytes(pm.read(8), "little") & ((1 << 55) - 1)
        kf.seek(pfn * 8)
        flags = int.from_bytes(kf.read(8), "little")
        large += (flags >> 15) & 1 or (flags >> 16) & 1  # compound head or tail
print(f"{100.0 * large / n:.0f}")
PY
if [[ " $TARGETS " == *" h4fs-"* ]]; then
    need_apt python3 python3
    for ((run = 1; run <= RUNS; run++)); do
        log "bounds run $run/$RUNS: device"
        drop_caches
        t0=$(now); cat "$DATA" >/dev/null; t1=$(now)
        BOUND["device cat"]+="$(elapsed "$t0" "$t1")"$'\n'
        half=$((SIZE_BYTES / 2 / 1048576))
        drop_caches
        t0=$(now)
        dd if="$DATA" of=/dev/null bs=1M count="$half" status=none &
        dd if="$DATA" of=/dev/null bs=1M skip="$half" status=none &
        wait
        t1=$(now)
        BOUND["device two"]+="$(elapsed "$t0" "$t1")"$'\n'
    done
    cat "$DATA" >/dev/null
    BOUND["folios native"]=$(python3 "$FOLIO_PY" "$DATA")
    for t in $TARGETS; do
        [[ $t == h4fs-* ]] || continue
        cont=$WORK_DIR/data-${t#h4fs-}.h4mk
        cat "$cont" >/dev/null
        for ((run = 1; run <= RUNS; run++)); do
            log "bounds run $run/$RUNS: $t, hashing and the FUSE path"
            t0=$(now); "$H4FS_BIN" verify -q "$cont" >/dev/null || die "h4fs verify $cont failed"; t1=$(now)
            BOUND["hash $t"]+="$(elapsed "$t0" "$t1")"$'\n'
        done
        umount_target "$t"
        saved_opts=("${H4FS_OPT_LIST[@]}")
        H4FS_OPT_LIST+=(--cache-size "$((SIZE_BYTES + SIZE_BYTES / 8 + (64 << 20)))")
        mount_target "$t"
        H4FS_OPT_LIST=("${saved_opts[@]}")
        p=$(target_path "$t")
        mnt=$(target_mnt "$t")
        counter() { "$H4FS_BIN" stats --json "$mnt" | jq "$1"; }
        verified() { counter '.blocks_verified + .groups_verified'; }
        for ((run = 1; run <= RUNS; run++)); do
            # A reader that reads on leaves nothing behind in the daemon's cache (the
            # kernel's page cache holds it), so the cache is filled by direct 1 MiB reads
            # 4 MiB apart, which no reader continues; then only the timed `cat` runs.
            fill_daemon_cache "$p"
            echo 1 >/proc/sys/vm/drop_caches
            verified=$(verified)
            t0=$(now); cat "$p" >/dev/null; t1=$(now)
            BOUND["fuse $t"]+="$(elapsed "$t0" "$t1")"$'\n'
            [[ $(verified) -eq $verified ]] ||
                die "$t: bytes were verified again during the FUSE-path run (cache too small?)"
        done
        req0=$(counter .read_requests)
        cat "$p" >/dev/null
        BOUND["requests $t"]=$(($(counter .read_requests) - req0))
        BOUND["folios $t"]=$(python3 "$FOLIO_PY" "$p")
        umount_target "$t"
    done
fi
rm -f "$FOLIO_PY"
best_mibs() { mibs "$(printf '%s' "$1" | minmax | awk '{ print $1 }')"; }

# ---------------------------------------------------------------- random 4 KiB reads
declare -A RAND=() # target -> "iops mean_us p50_us p99_us"
FIO_LOG=$WORK_DIR/fio
mkdir -p "$FIO_LOG"
for t in $TARGETS; do
    log "random 4 KiB reads: $t ($RAND_IOS reads, seed $RAND_SEED)"
    umount_target "$t"
    drop_caches
    mount_target "$t"
    p=$(target_path "$t")
    fio --name=rand4k --filename="$p" --readonly --rw=randread --bs=4k --ioengine=psync \
        --direct=0 --size="$SIZE_BYTES" --io_size=$((RAND_IOS * 4096)) --randrepeat=0 \
        --randseed="$RAND_SEED" --invalidate=1 --output-format=json >"$FIO_LOG/$t.json" ||
        die "fio failed on $t ($p); see $FIO_LOG/$t.json"
    RAND[$t]=$(jq -r '.jobs[0].read | [.iops, .lat_ns.mean / 1000,
        .clat_ns.percentile["50.000000"] / 1000, .clat_ns.percentile["99.000000"] / 1000]
        | map(tostring) | join(" ")' "$FIO_LOG/$t.json")
    [[ $(jq -r '.jobs[0].read.total_ios' "$FIO_LOG/$t.json") -eq $RAND_IOS ]] ||
        die "fio on $t did $(jq -r '.jobs[0].read.total_ios' "$FIO_LOG/$t.json") reads, expected $RAND_IOS"
    if [[ $t == h4fs-* ]]; then
        "$H4FS_BIN" stats --json "$(target_mnt "$t")" >"$FIO_LOG/$t.stats.json" 2>/dev/null || true
    fi
    umount_target "$t"
done

# ---------------------------------------------------------------- 1,000,000-block mount
MOUNT_REPORT=""
if ((SKIP_H4FS == 0 && SKIP_MILLION == 0)); then
    MSRC=$WORK_DIR/million-src.bin
    MCONT=$WORK_DIR/million.h4mk
    MMNT=$MNT_ROOT/million
    if [[ ! -f $MSRC || $(stat -c %s "$MSRC") -ne $MILLION_BYTES ]]; then
        log "writing $MILLION_BYTES random bytes to $MSRC"
        rm -f "$MCONT"
        head -c "$MILLION_BYTES" /dev/urandom >"$MSRC.tmp"
        mv "$MSRC.tmp" "$MSRC"
    fi
    if [[ ! -s $MCONT || $MCONT -ot $MSRC || $MCONT -ot $H4FS_BIN ]]; then
        log "packing $MILLION_BLOCKS blocks of $MILLION_BLOCK bytes into $MCONT"
        "$H4FS_BIN" pack "$MSRC" --block-size "$MILLION_BLOCK" -q -o "$MCONT" || die "packing $MCONT failed"
    fi
    mkdir -p "$MMNT"

    # One timed mount; sets MT_RET (seconds until `h4fs mount` returned) and MT_READY (until
    # the first `stat stream` answered).
    # Extra arguments go to `h4fs mount`.
    timed_million_mount() {
        local t0 t1 t2
        MOUNTED[$MMNT]=million
        t0=$(now)
        "$H4FS_BIN" mount "${H4FS_OPT_LIST[@]}" "$@" "$MCONT" "$MMNT" >&2 || die "h4fs mount of $MCONT failed"
        t1=$(now)
        stat "$MMNT/stream" >/dev/null || die "$MMNT/stream missing after h4fs mount returned"
        t2=$(now)
        mountpoint -q "$MMNT" || die "$MMNT is not a mount point after h4fs mount returned"
        DAEMON_PIDS[$MMNT]=$(pids_for_mount "$MMNT" | tr '\n' ' ')
        MT_RET=$(elapsed "$t0" "$t1")
        MT_READY=$(elapsed "$t0" "$t2")
    }
    declare -A MT=()
    for ((run = 1; run <= MOUNT_RUNS; run++)); do
        for mode in cold warm cold-none warm-none; do
            log "mount timing run $run/$MOUNT_RUNS ($mode): $MILLION_BLOCKS blocks"
            [[ $mode == cold* ]] && drop_caches
            if [[ $mode == *-none ]]; then timed_million_mount --verify none; else timed_million_mount; fi
            MT["$mode ret"]+="$MT_RET"$'\n'
            MT["$mode ready"]+="$MT_READY"$'\n'
            unmount_point "$MMNT"
        done
    done
    ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }
    mt_row() {
        local mode=$1 what=$2 label=$3 med lo hi
        med=$(printf '%s' "${MT["$mode $what"]}" | median)
        read -r lo hi < <(printf '%s' "${MT["$mode $what"]}" | minmax)
        printf '| %s | %s | %s | %s | %s |\n' "$label" "$(ms "$med")" "$(ms "$lo")" "$(ms "$hi")" \
            "$(verdict "$(ms "$med")" 100 le)"
    }

    log "daemon memory while serving $MILLION_BLOCKS blocks"
    drop_caches
    MOUNTED[$MMNT]=million
    "$H4FS_BIN" mount "${H4FS_OPT_LIST[@]}" "$MCONT" "$MMNT" >&2 || die "h4fs mount of $MCONT failed"
    wait_ready "$MMNT" "$MMNT/stream"
    DAEMON_PIDS[$MMNT]=$(pids_for_mount "$MMNT" | tr '\n' ' ')
    [[ -n ${DAEMON_PIDS[$MMNT]} ]] || die "could not find the h4fs daemon serving $MMNT"
    mem_row() {
        local label=$1 secs=$2 rss hwm mem
        mem=$(daemon_mem million)
        read -r rss hwm <<<"$mem"
        printf '| %s | %s | %s | %s |\n' "$label" "$secs" "$rss" "$hwm"
    }
    MEMROWS=$(mem_row "mounted, idle" "" )$'\n'
    t0=$(now)
    nblocks=$(find "$MMNT/blocks" -mindepth 1 -maxdepth 1 | wc -l)
    t1=$(now)
    ((nblocks == MILLION_BLOCKS)) || die "blocks/ lists $nblocks entries, expected $MILLION_BLOCKS"
    MEMROWS+=$(mem_row "after listing blocks/ ($nblocks entries)" \
        "$(awk -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.2f s", s }')")$'\n'
    t0=$(now)
    cmp -s "$MSRC" "$MMNT/stream" || die "$MMNT/stream differs from $MSRC"
    t1=$(now)
    MEMROWS+=$(mem_row "after reading stream once (cmp with the source)" \
        "$(awk -v b="$MILLION_BYTES" -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.2f s, %.0f MiB/s", s, b / 1048576 / s }')")$'\n'
    unmount_point "$MMNT"

    MOUNT_REPORT+="### Mounting a $MILLION_BLOCKS-block container"$'\n\n'
    MOUNT_REPORT+="\`h4fs pack --block-size $MILLION_BLOCK\` of a $MILLION_BYTES-byte file ($(stat -c %s "$MCONT") bytes on disk). "
    MOUNT_REPORT+="Time from starting \`h4fs mount\` to its return (the mount is ready then) and to the first \`stat stream\` answering; $MOUNT_RUNS runs each, cold = page cache dropped before the mount; the default \`--verify structure\` hashes the whole index, \`--verify none\` (bounds checks only; blocks are still verified when read) shows what that costs."$'\n\n'
    MOUNT_REPORT+="| mount | median ms | min ms | max ms | < 100 ms |"$'\n'
    MOUNT_REPORT+="|---|---:|---:|---:|---|"$'\n'
    MOUNT_REPORT+=$(mt_row cold ret "cold: \`h4fs mount\` returned")$'\n'
    MOUNT_REPORT+=$(mt_row cold ready "cold: \`stat stream\` answered")$'\n'
    MOUNT_REPORT+=$(mt_row warm ret "warm: \`h4fs mount\` returned")$'\n'
    MOUNT_REPORT+=$(mt_row warm ready "warm: \`stat stream\` answered")$'\n'
    MOUNT_REPORT+=$(mt_row cold-none ret "cold, \`--verify none\`: returned")$'\n'
    MOUNT_REPORT+=$(mt_row warm-none ret "warm, \`--verify none\`: returned")$'\n\n'
    MOUNT_REPORT+="Daemon memory serving it (from /proc/PID/status):"$'\n\n'
    MOUNT_REPORT+="| state | time | VmRSS MiB | VmHWM MiB |"$'\n'
    MOUNT_REPORT+="|---|---|---:|---:|"$'\n'
    MOUNT_REPORT+=$MEMROWS
fi

# ---------------------------------------------------------------- report
first_line() { "$@" 2>&1 | head -n 1 || true; }
report() {
    local t
    echo "## Mount benchmark results"
    echo
    echo "Command: \`scripts/bench-mount.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}\` ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "Machine: $(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(nproc) cores," \
        "$(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)," \
        "data on $(df -T "$WORK_DIR" | awk 'NR == 2 { print $2 " (" $1 ")" }');" \
        "load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo
    echo "Versions: $(first_line fio --version); $(first_line squashfuse --version 2>/dev/null | awk '{ print $1, $2 }' || true);" \
        "$(first_line mksquashfs -version | awk '{ print $1, $2, $3 }'); $(first_line ratarmount --version);" \
        "$( [[ -n $H4FS_BIN ]] && first_line "$H4FS_BIN" --version || echo 'h4fs not measured')" \
        "($(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo 'no git'))${H4FS_OPTS:+, h4fs mount options: \`$H4FS_OPTS\`}."
    echo
    [[ -z $READ_AHEAD_KB ]] || { echo "FUSE readahead: read_ahead_kb set to $READ_AHEAD_KB on every FUSE mount."; echo; }
    echo "Data: $SIZE_BYTES random bytes; h4fs containers packed with \`--block-size\` $(for t in $TARGETS; do [[ $t == h4fs-* ]] && printf '%s ' "${t#h4fs-}"; done)(identity engine);" \
        "squashfs image with \`-noI -noD -noF -noX -no-fragments -b $SQFS_BLOCK\` (nothing compressed); plain tar for ratarmount."
    echo
    echo "### Sequential reads (MiB/s: best of $RUNS (median))"
    echo
    echo "First read: unmount, \`sync; echo 3 > /proc/sys/vm/drop_caches\`, mount, read the whole file. Re-read: the same read again right after; 3rd read: once more (the page cache's LRU bookkeeping is settled by then). Daemon CPU: user + system seconds the serving process used during the first read (median over the \`cat\` and \`dd\` runs; less sensitive than wall time to other load on the machine)."
    echo
    echo "| target | first \`cat\` | first \`dd bs=1M\` | re-read \`cat\` | re-read \`dd bs=1M\` | 3rd read \`dd bs=1M\` | daemon CPU s per first read | daemon VmHWM MiB |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for t in $TARGETS; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$(seq_cell "$t" cat first)" "$(seq_cell "$t" dd first)" \
            "$(seq_cell "$t" cat warm)" "$(seq_cell "$t" dd warm)" "$(seq_cell "$t" dd third)" \
            "$(if [[ $t == native ]]; then echo -; else printf '%s' "${SEQ["$t cat cpu"]}${SEQ["$t dd cpu"]}" | median; fi)" \
            "$(if [[ $t == native ]]; then echo -; else awk '{ print $2 }' <<<"${MEM[$t]:-nan nan}"; fi)"
    done
    echo
    echo "### Random 4 KiB reads"
    echo
    echo "fio: \`--rw=randread --bs=4k --ioengine=psync --direct=0 --randseed=$RAND_SEED --io_size=$((RAND_IOS * 4))k\`," \
        "one job, queue depth 1, the same $RAND_IOS offsets for every target, on a fresh mount after dropping the page cache."
    echo
    echo "| target | IOPS | mean µs | p50 µs | p99 µs |"
    echo "|---|---:|---:|---:|---:|"
    for t in $TARGETS; do
        read -r iops mean p50 p99 <<<"${RAND[$t]}"
        printf '| %s | %.0f | %.1f | %.1f | %.1f |\n' "$t" "$iops" "$mean" "$p50" "$p99"
    done
    echo
    if [[ -n ${BOUND["device cat"]:-} ]]; then
        echo "### Bounds on this machine (MiB/s, best of $RUNS)"
        echo
        echo "What limits a first read and a re-read, whatever the daemon does. Device: the source file read cold. FUSE path: h4fs \`stream\` with every block already verified in the daemon's memory and the page cache dropped, so each byte only crosses the FUSE device (no disk read, no hash). Hashing: \`h4fs verify\` of the container in the page cache, every block's SHA-256 on all $(nproc) cores, no FUSE. The first-read goal is 1.5x squashfuse's best \`cat\`."
        echo
        echo "| bound | MiB/s |"
        echo "|---|---:|"
        echo "| device: one \`cat\`, cold | $(best_mibs "${BOUND["device cat"]}") |"
        echo "| device: two readers of one half each, cold | $(best_mibs "${BOUND["device two"]}") |"
        for t in $TARGETS; do
            [[ $t == h4fs-* ]] || continue
            echo "| FUSE path, $t: \`cat stream\` from verified blocks in the daemon's memory | $(best_mibs "${BOUND["fuse $t"]}") |"
            echo "| hashing, $t: \`h4fs verify\` (SHA-256 of every block, container in page cache) | $(best_mibs "${BOUND["hash $t"]}") |"
        done
        if want_target squashfuse; then
            echo "| goal: 1.5x squashfuse's first \`cat\` | $(awk -v m="$(seq_mibs squashfuse cat first best)" 'BEGIN { printf "%.0f", 1.5 * m }') |"
        fi
        echo
        echo "Re-reads are served by the kernel from its page cache: read requests reaching the h4fs daemon during a whole re-read:" \
            "$(for t in $TARGETS; do [[ $t == h4fs-* ]] && printf '%s %s; ' "$t" "${BOUND["requests $t"]}"; done)" \
            "share of the first 64 MiB held in large folios (the rest in 4 KiB pages, each copied separately): native $(printf '%s' "${BOUND["folios native"]}")%;" \
            "$(for t in $TARGETS; do [[ $t == h4fs-* ]] && printf '%s %s%%; ' "$t" "${BOUND["folios $t"]}"; done)"
        echo
    fi
    [[ -n $MOUNT_REPORT ]] && printf '%s\n' "$MOUNT_REPORT"
    local have_sq=0 have_native=0
    want_target squashfuse && have_sq=1
    want_target native && have_native=1
    echo "### Targets"
    echo
    if [[ " $TARGETS " != *" h4fs-"* ]]; then
        echo "No h4fs target was measured."
        echo
        echo "Raw fio output: $FIO_LOG/*.json."
        return 0
    fi
    echo "Sequential ratios use the best runs (the median ratio in parentheses)."
    echo
    echo "| h4fs target | goal | measured | |"
    echo "|---|---|---:|---|"
    for t in $TARGETS; do
        [[ $t == h4fs-* ]] || continue
        local tool r m sq_mean sq_p99 mean p99
        for tool in cat dd; do
            if ((have_sq)); then
                r=$(ratio "$(seq_mibs "$t" "$tool" first best)" "$(seq_mibs squashfuse "$tool" first best)")
                m=$(ratio "$(seq_mibs "$t" "$tool" first)" "$(seq_mibs squashfuse "$tool" first)")
                printf '| %s | first read (%s) >= 1.5x squashfuse | %sx (median %sx) | %s |\n' "$t" "\`$tool\`" "$r" "$m" "$(verdict "$r" 1.5 ge)"
            fi
        done
        for tool in cat dd; do
            if ((have_native)); then
                r=$(ratio "$(seq_mibs "$t" "$tool" warm best)" "$(seq_mibs native "$tool" warm best)")
                m=$(ratio "$(seq_mibs "$t" "$tool" warm)" "$(seq_mibs native "$tool" warm)")
                printf '| %s | re-read (%s) >= 0.5x native page cache | %sx (median %sx) | %s |\n' "$t" "\`$tool\`" "$r" "$m" "$(verdict "$r" 0.5 ge)"
            fi
        done
        if ((have_native)); then
            r=$(ratio "$(seq_mibs "$t" dd third best)" "$(seq_mibs native dd third best)")
            m=$(ratio "$(seq_mibs "$t" dd third)" "$(seq_mibs native dd third)")
            printf '| %s | 3rd read (%s) >= 0.5x native page cache | %sx (median %sx) | %s |\n' "$t" "\`dd\`" "$r" "$m" "$(verdict "$r" 0.5 ge)"
        fi
        if ((have_sq)); then
            read -r _ mean _ p99 <<<"${RAND[$t]}"
            read -r _ sq_mean _ sq_p99 <<<"${RAND[squashfuse]}"
            r=$(ratio "$mean" "$sq_mean")
            printf '| %s | random 4 KiB mean latency <= squashfuse | %sx (%.1f vs %.1f µs) | %s |\n' "$t" "$r" "$mean" "$sq_mean" "$(verdict "$r" 1 le)"
            r=$(ratio "$p99" "$sq_p99")
            printf '| %s | random 4 KiB p99 latency <= squashfuse | %sx (%.1f vs %.1f µs) | %s |\n' "$t" "$r" "$p99" "$sq_p99" "$(verdict "$r" 1 le)"
        fi
    done
    echo
    echo "Raw fio output: $FIO_LOG/*.json; every sequential run: $RAW_SEQ."
}

if [[ -n $OUTPUT ]]; then
    report | tee "$OUTPUT"
else
    report
fi
log "done; all mounts removed"
