#!/usr/bin/env bash
# Benchmark `h4fs mount` of containers on S3 against rclone mounting the same bucket and
# the store's own delivery rate (curl), one run, loopback, same machine.
#
# A private SeaweedFS (from target/test-venv, installed by scripts/setup.sh) holds, in
# bucket `bench`: SIZE random bytes `data.bin` and its container `data.h4mk` (1 MiB
# blocks); an H.264 MP4 of MEDIA_SECONDS `media.mp4` and its container `media.h4mk`
# (pack --media); and PREFIX_COUNT small containers under `many/`. Then, for each reader:
#   * first sequential read: `cat` of the whole file after dropping the page cache and
#     mounting afresh (rclone: data.bin with --vfs-cache-mode off, and full with an
#     empty cache; h4fs: `stream` of data.h4mk, verifying every byte; curl: one GET of
#     data.bin, SigV4-signed, and four range GETs of a quarter each at once: the store's
#     ceiling on this machine);
#   * 64 KiB preads at RANDOM random offsets (same offsets for all; fresh mount, caches
#     dropped): median and p90 latency; curl: a range GET of the same bytes each;
#   * SEEKS `ffmpeg -ss T` seeks into the MP4 (rclone: media.mp4, off; h4fs:
#     stream.mp4), each decoding one frame: median latency, and for h4fs the requests
#     and bytes fetched per seek from its own statistics, for rclone its GETs counted in
#     its --dump headers log; and the same seeks into the MP4 on local disk, the floor
#     that ffmpeg's own work sets;
#   * mount time of the prefix of PREFIX_COUNT containers (from `h4fs mount` starting to
#     its return, the mount ready), and `ls` of its root.
# Prints markdown with the ratios and the issue's targets. Needs root (drop_caches,
# FUSE), rclone, ffmpeg, curl, python3, fusermount3. Every server and mount it starts is
# stopped and unmounted on exit, also on failure or Ctrl-C.
#
#   scripts/bench-remote.sh [--size 1G] [--random 20] [--seeks 20] [--media-seconds 150]
#                           [--prefix-count 10000] [--work-dir DIR] [--h4fs BINARY]
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$PWD

SIZE=1G
RANDOM_READS=20
SEEKS=20
MEDIA_SECONDS=150
PREFIX_COUNT=10000
WORK=/var/tmp/h4fs-bench-remote
H4FS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE=$2; shift 2 ;;
    --random) RANDOM_READS=$2; shift 2 ;;
    --seeks) SEEKS=$2; shift 2 ;;
    --media-seconds) MEDIA_SECONDS=$2; shift 2 ;;
    --prefix-count) PREFIX_COUNT=$2; shift 2 ;;
    --work-dir) WORK=$2; shift 2 ;;
    --h4fs) H4FS=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "bench-remote: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$RANDOM_READS" "$SEEKS" "$MEDIA_SECONDS" "$PREFIX_COUNT"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "bench-remote: not a whole number: $n" >&2; exit 2; }
done
for t in rclone ffmpeg ffprobe curl python3 fusermount3; do
  command -v "$t" >/dev/null || { echo "bench-remote: $t is needed (apt-get install rclone ffmpeg curl python3 fuse3)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "bench-remote: run as root (drops the page cache, mounts FUSE)" >&2; exit 1; }
WEED=${H4FS_TEST_WEED:-$REPO/target/test-venv/bin/weed}
[ -x "$WEED" ] || { echo "bench-remote: SeaweedFS not found at $WEED (run scripts/setup.sh)" >&2; exit 1; }
if [ -z "$H4FS" ]; then
  cargo build --release --quiet
  H4FS=$REPO/target/release/h4fs
fi
SIZE_BYTES=$(python3 -c "import sys;s=sys.argv[1];m={'K':1<<10,'M':1<<20,'G':1<<30};print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$SIZE")

log() { printf '[bench-remote %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
KEY=h4fsbenchkey
SECRET=h4fs-bench-secret-0123456789
mkdir -p "$WORK"
RUN=$(mktemp -d "$WORK/run.XXXXXX")
MP=$RUN/mnt
mkdir -p "$MP" "$RUN/data" "$RUN/rclone-cache"
WEED_PID=""
RCLONE_PID=""

cleanup() {
  set +e
  for m in "$MP"; do
    if grep -q " $m " /proc/self/mounts; then
      "$H4FS" umount "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || umount -l "$m"
    fi
  done
  [ -n "$RCLONE_PID" ] && kill "$RCLONE_PID" 2>/dev/null
  if [ -n "$WEED_PID" ]; then
    kill "$WEED_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$WEED_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$WEED_PID" 2>/dev/null
  fi
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port below 55000 whose port + 10000 (SeaweedFS's gRPC port) is free too.
free_port() {
  python3 - <<'PY'
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p >= 55000:
        continue
    g = socket.socket()
    try:
        g.bind(("127.0.0.1", p + 10000))
    except OSError:
        continue
    finally:
        g.close()
    print(p); break
PY
}
P_MASTER=$(free_port); P_VOLUME=$(free_port); P_FILER=$(free_port); P_S3=$(free_port)
cat >"$RUN/ids.json" <<EOF
{"identities":[{"name":"b","credentials":[{"accessKey":"$KEY","secretKey":"$SECRET"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
EOF
log "starting SeaweedFS on 127.0.0.1:$P_S3"
"$WEED" server -dir="$RUN/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$P_MASTER" \
  -volume.port="$P_VOLUME" -filer.port="$P_FILER" -s3 -s3.port="$P_S3" -s3.port.iceberg=0 \
  -s3.port.lance=0 -s3.config="$RUN/ids.json" >"$RUN/weed.log" 2>&1 &
WEED_PID=$!
for _ in $(seq 360); do
  if curl -s -o /dev/null "http://127.0.0.1:$P_S3/" &&
     curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary x "http://127.0.0.1:$P_FILER/buckets/ready/probe" | grep -q '^2'; then
    break
  fi
  kill -0 "$WEED_PID" 2>/dev/null || { tail -20 "$RUN/weed.log" >&2; exit 1; }
  sleep 0.25
done
ENDPOINT=http://127.0.0.1:$P_S3
put() { curl -sf -o /dev/null -X PUT -T "$2" "http://127.0.0.1:$P_FILER/buckets/bench/$1"; }

# ---------------------------------------------------------------- data
SRC=$WORK/data-$SIZE_BYTES.bin
if [ ! -f "$SRC" ] || [ "$(stat -c %s "$SRC")" != "$SIZE_BYTES" ]; then
  log "writing $SIZE_BYTES random bytes"
  head -c "$SIZE_BYTES" /dev/urandom >"$SRC.tmp" && mv "$SRC.tmp" "$SRC"
fi
log "packing"
"$H4FS" pack -q "$SRC" --block-size 1MiB -o "$RUN/data.h4mk"
MEDIA=$WORK/media-$MEDIA_SECONDS.mp4
if [ ! -f "$MEDIA" ]; then
  log "encoding a $MEDIA_SECONDS s H.264 MP4"
  ffmpeg -v error -nostdin -y -f lavfi -i "testsrc2=duration=$MEDIA_SECONDS:size=1280x720:rate=25" \
    -c:v libx264 -preset veryfast -g 50 -bf 2 -pix_fmt yuv420p "$MEDIA.tmp.mp4" && mv "$MEDIA.tmp.mp4" "$MEDIA"
fi
"$H4FS" pack -q "$MEDIA" --media -o "$RUN/media.h4mk"
log "uploading"
put data.bin "$SRC"
put data.h4mk "$RUN/data.h4mk"
put media.mp4 "$MEDIA"
put media.h4mk "$RUN/media.h4mk"
head -c 4096 /dev/urandom >"$RUN/small.bin"
"$H4FS" pack -q "$RUN/small.bin" --block-size 1024 -o "$RUN/small.h4mk"
log "uploading $PREFIX_COUNT small containers under many/"
python3 - "$P_FILER" "$RUN/small.h4mk" "$PREFIX_COUNT" <<'PY'
import http.client, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = open(path, "rb").read()
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    c.request("PUT", f"/buckets/bench/many/c{i:05d}.h4mk", body)
    r = c.getresponse(); r.read()
    if r.status >= 300:
        sys.exit(f"upload {i}: HTTP {r.status}")
PY

export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1
unset AWS_PROFILE AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3
cat >"$RUN/rclone.conf" <<EOF
[sw]
type = s3
provider = SeaweedFS
endpoint = $ENDPOINT
access_key_id = $KEY
secret_access_key = $SECRET
EOF

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
wait_mounted() { for _ in $(seq 200); do grep -q " $MP " /proc/self/mounts && return 0; sleep 0.05; done; echo "bench-remote: $1 did not mount" >&2; exit 1; }
rclone_mount() { # MODE
  rm -rf "$RUN/rclone-cache"; mkdir -p "$RUN/rclone-cache"
  env -u AWS_CA_BUNDLE rclone mount "sw:bench" "$MP" --config "$RUN/rclone.conf" \
    --vfs-cache-mode "$1" --cache-dir "$RUN/rclone-cache" --read-only \
    --dump headers --log-file "$RUN/rclone.log" --log-level DEBUG &
  RCLONE_PID=$!
  wait_mounted "rclone"
}
rclone_umount() { fusermount3 -u "$MP"; wait "$RCLONE_PID" 2>/dev/null || true; RCLONE_PID=""; }
h4fs_mount() { # OBJECT
  "$H4FS" mount --endpoint "$ENDPOINT" "s3://bench/$1" "$MP"
}
h4fs_stat() { # JSON path under .remote, e.g. requests
  getfattr --absolute-names --only-values -n user.h4fs.stats "$MP" 2>/dev/null |
    python3 -c "import json,sys;d=json.load(sys.stdin);print(d['remote']['$1'])"
}
secs() { python3 -c "import time;print(time.monotonic())"; }
# CPU time of the whole machine, busy and total (jiffies of all cores, from /proc/stat):
# how many cores a read kept busy, store and client together, is then
# (busy1 - busy0) / (total1 - total0) * cores.
cpu_mark() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
cores_busy() { # "BUSY0 TOTAL0" "BUSY1 TOTAL1"
  python3 -c "b0,t0=map(int,'$1'.split());b1,t1=map(int,'$2'.split());print(f'{(b1-b0)/(t1-t0)*$(nproc):.2f}')"
}
rate() { python3 -c "print(round($1/1048576/($3-$2)))"; }
# pread latencies (ms) of 64 KiB at the offsets in $RUN/offsets, one per line.
preads() {
  python3 - "$1" "$RUN/offsets" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
for line in open(sys.argv[2]):
    off = int(line)
    t = time.monotonic()
    b = os.pread(fd, 65536, off)
    dt = (time.monotonic() - t) * 1000
    assert len(b) == 65536, (off, len(b))
    print(f"{dt:.3f}")
PY
}
stats() { python3 -c "
import statistics,sys
v=sorted(float(x) for x in open(sys.argv[1]))
print(f'{statistics.median(v):.2f} {v[int(0.9*(len(v)-1))]:.2f}')" "$1"; }
python3 -c "
import random
r=random.Random(4242)
for _ in range($RANDOM_READS): print(r.randrange(0, $SIZE_BYTES - 65536))" >"$RUN/offsets"
python3 -c "
import random
r=random.Random(77)
for _ in range($SEEKS): print(round(r.uniform(1, $MEDIA_SECONDS - 2), 2))" >"$RUN/times"
# GET requests rclone sent (its --dump headers log has one "GET /bench/KEY HTTP/1.1" line each).
gets() { { grep -c 'GET /bench/' "$RUN/rclone.log" 2>/dev/null || true; } | head -1; }

# ---------------------------------------------------------------- curl
log "curl: GET of data.bin and range GETs"
SIG=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$KEY:$SECRET")
drop
c0=$(cpu_mark); t0=$(secs); curl -sf "${SIG[@]}" -o /dev/null "$ENDPOINT/bench/data.bin"; t1=$(secs); c1=$(cpu_mark)
CURL_GET=$(rate "$SIZE_BYTES" "$t0" "$t1"); declare -A BUSY; BUSY[curl]=$(cores_busy "$c0" "$c1")
# The store's ceiling with several requests in flight, as h4fs and rclone send them: four
# range GETs of a quarter each, at once.
drop
q=$((SIZE_BYTES / 4))
pids=()
c0=$(cpu_mark); t0=$(secs)
for i in 0 1 2 3; do
  end=$(( i == 3 ? SIZE_BYTES - 1 : (i + 1) * q - 1 ))
  curl -sf "${SIG[@]}" -o /dev/null -r "$((i * q))-$end" "$ENDPOINT/bench/data.bin" &
  pids+=($!)
done
wait "${pids[@]}" # not a bare wait: SeaweedFS is a child too
t1=$(secs); c1=$(cpu_mark)
CURL_PAR=$(rate "$SIZE_BYTES" "$t0" "$t1"); BUSY[curl4]=$(cores_busy "$c0" "$c1")
: >"$RUN/curl.lat"
while read -r off; do
  curl -sf "${SIG[@]}" -o /dev/null -r "$off-$((off + 65535))" -w '%{time_total}\n' "$ENDPOINT/bench/data.bin" |
    python3 -c "import sys;print(f'{float(sys.stdin.read())*1000:.3f}')" >>"$RUN/curl.lat"
done <"$RUN/offsets"
read -r CURL_MED CURL_P90 < <(stats "$RUN/curl.lat")

# ---------------------------------------------------------------- first reads
declare -A FIRST
for mode in off full; do
  log "rclone ($mode): first read of data.bin"
  drop; rclone_mount "$mode"
  c0=$(cpu_mark); t0=$(secs); cat "$MP/data.bin" >/dev/null; t1=$(secs); c1=$(cpu_mark)
  FIRST[rclone-$mode]=$(rate "$SIZE_BYTES" "$t0" "$t1"); BUSY[rclone-$mode]=$(cores_busy "$c0" "$c1")
  rclone_umount
done
log "h4fs: first read of stream"
drop; h4fs_mount data.h4mk
c0=$(cpu_mark); t0=$(secs); cat "$MP/stream" >/dev/null; t1=$(secs); c1=$(cpu_mark)
FIRST[h4fs]=$(rate "$SIZE_BYTES" "$t0" "$t1"); BUSY[h4fs]=$(cores_busy "$c0" "$c1")
H_SEQ_REQ=$(h4fs_stat requests); H_SEQ_BYTES=$(h4fs_stat bytes_fetched)
"$H4FS" umount "$MP"

# ---------------------------------------------------------------- random 64 KiB
log "random 64 KiB reads"
drop; rclone_mount off; preads "$MP/data.bin" >"$RUN/rclone.lat"; rclone_umount
read -r RC_MED RC_P90 < <(stats "$RUN/rclone.lat")
drop; h4fs_mount data.h4mk
r0=$(h4fs_stat requests); b0=$(h4fs_stat bytes_fetched)
preads "$MP/stream" >"$RUN/h4fs.lat"
H_RAND_REQ=$(( $(h4fs_stat requests) - r0 )); H_RAND_BYTES=$(( $(h4fs_stat bytes_fetched) - b0 ))
"$H4FS" umount "$MP"
read -r H_MED H_P90 < <(stats "$RUN/h4fs.lat")

# ---------------------------------------------------------------- ffmpeg -ss
seek_run() { # FILE OUT
  : >"$2"
  while read -r t; do
    s0=$(secs)
    ffmpeg -v error -nostdin -ss "$t" -i "$1" -frames:v 1 -f null - </dev/null
    s1=$(secs)
    python3 -c "print(f'{($s1-$s0)*1000:.3f}')" >>"$2"
  done <"$RUN/times"
}
log "ffmpeg -ss seeks"
# The floor: the same seeks into the MP4 on local disk (page cache dropped), no network.
drop; seek_run "$MEDIA" "$RUN/local.seek"
read -r LOCAL_SEEK_MED _ < <(stats "$RUN/local.seek")
drop; rclone_mount off; g0=$(gets); seek_run "$MP/media.mp4" "$RUN/rclone.seek"; RC_SEEK_GETS=$(( $(gets) - g0 )); rclone_umount
read -r RC_SEEK_MED _ < <(stats "$RUN/rclone.seek")
drop; h4fs_mount media.h4mk
r0=$(h4fs_stat requests); b0=$(h4fs_stat bytes_fetched)
seek_run "$MP/stream.mp4" "$RUN/h4fs.seek"
H_SEEK_REQ=$(( $(h4fs_stat requests) - r0 )); H_SEEK_BYTES=$(( $(h4fs_stat bytes_fetched) - b0 ))
"$H4FS" umount "$MP"
read -r H_SEEK_MED _ < <(stats "$RUN/h4fs.seek")

# ---------------------------------------------------------------- prefix mount
log "mounting the prefix of $PREFIX_COUNT containers"
: >"$RUN/mount.ms"
for _ in 1 2 3; do
  drop
  t0=$(secs); "$H4FS" mount --endpoint "$ENDPOINT" "s3://bench/many/" "$MP"; t1=$(secs)
  python3 -c "print(f'{($t1-$t0)*1000:.1f}')" >>"$RUN/mount.ms"
  LISTED=$(ls "$MP" | wc -l)
  OPENED=$(getfattr --absolute-names --only-values -n user.h4fs.stats "$MP" | python3 -c "import json,sys;print(json.load(sys.stdin).get('containers_opened','?'))")
  "$H4FS" umount "$MP"
done
read -r MOUNT_MED _ < <(stats "$RUN/mount.ms")

# ---------------------------------------------------------------- report
r() { python3 -c "print(f'{$1/$2:.2f}')"; }
cat <<EOF
## Remote: h4fs against rclone and curl (SeaweedFS on loopback)

Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); load average $(cut -d' ' -f1-3 /proc/loadavg) at the end.
Versions: $(rclone version 2>/dev/null | head -1); $(curl --version | head -1 | cut -d' ' -f1-2); SeaweedFS $("$WEED" version 2>/dev/null | head -1 | awk '{print $3}'); h4fs $("$H4FS" --version | awk '{print $2}').
Data: $SIZE_BYTES random bytes (h4fs: 1 MiB blocks, every byte verified); a $MEDIA_SECONDS s 1280x720 H.264 MP4 (pack --media); $PREFIX_COUNT containers under one prefix.

| first sequential read | MiB/s | cores busy (of $(nproc); store and client) |
|---|---:|---:|
| curl GET (the store's delivery rate) | $CURL_GET | ${BUSY[curl]} |
| curl, 4 range GETs of a quarter at once (the store's ceiling) | $CURL_PAR | ${BUSY[curl4]} |
| rclone mount, --vfs-cache-mode off | ${FIRST[rclone-off]} | ${BUSY[rclone-off]} |
| rclone mount, --vfs-cache-mode full | ${FIRST[rclone-full]} | ${BUSY[rclone-full]} |
| h4fs mount, \`stream\` | ${FIRST[h4fs]} ($H_SEQ_REQ requests, $H_SEQ_BYTES bytes fetched) | ${BUSY[h4fs]} |

| $RANDOM_READS reads of 64 KiB at random offsets | median ms | p90 ms |
|---|---:|---:|
| curl range GET | $CURL_MED | $CURL_P90 |
| rclone mount (off) | $RC_MED | $RC_P90 |
| h4fs mount | $H_MED | $H_P90 |

h4fs fetched $H_RAND_REQ requests, $H_RAND_BYTES bytes for the $RANDOM_READS reads.

| $SEEKS \`ffmpeg -ss\` seeks, one frame each | median ms | requests | bytes fetched |
|---|---:|---:|---:|
| local file, media.mp4 (the floor: ffmpeg alone) | $LOCAL_SEEK_MED | - | - |
| rclone mount (off), media.mp4 | $RC_SEEK_MED | $RC_SEEK_GETS GETs (its log) | - |
| h4fs mount, stream.mp4 | $H_SEEK_MED | $H_SEEK_REQ | $H_SEEK_BYTES |

Prefix mount of $PREFIX_COUNT containers: median $MOUNT_MED ms over 3 cold mounts (\`ls\` of the root listed $LISTED, containers opened after it: $OPENED).

| target | measured | |
|---|---|---|
| first read >= 2x rclone (off) | $(r "${FIRST[h4fs]}" "${FIRST[rclone-off]}")x | $(python3 -c "print('met' if ${FIRST[h4fs]} >= 2*${FIRST[rclone-off]} else 'missed')") |
| first read >= 2x rclone (full) | $(r "${FIRST[h4fs]}" "${FIRST[rclone-full]}")x | $(python3 -c "print('met' if ${FIRST[h4fs]} >= 2*${FIRST[rclone-full]} else 'missed')") |
| first read >= 0.7x curl GET | $(r "${FIRST[h4fs]}" "$CURL_GET")x | $(python3 -c "print('met' if ${FIRST[h4fs]} >= 0.7*$CURL_GET else 'missed')") |
| bound: 2x rclone (off) against the store's ceiling | $(r "$((2 * ${FIRST[rclone-off]}))" "$CURL_PAR")x of 4 parallel GETs | $(python3 -c "print('within the store' if 2*${FIRST[rclone-off]} <= $CURL_PAR else 'beyond the store on this machine')") |
| random 64 KiB median <= 0.5x rclone | $(r "$H_MED" "$RC_MED")x | $(python3 -c "print('met' if $H_MED <= 0.5*$RC_MED else 'missed')") |
| random 64 KiB median <= 3x range GET | $(r "$H_MED" "$CURL_MED")x | $(python3 -c "print('met' if $H_MED <= 3*$CURL_MED else 'missed')") |
| ffmpeg -ss median <= 0.5x rclone | $(r "$H_SEEK_MED" "$RC_SEEK_MED")x | $(python3 -c "print('met' if $H_SEEK_MED <= 0.5*$RC_SEEK_MED else 'missed')") |
| bound: ffmpeg -ss on a local file against rclone | $(r "$LOCAL_SEEK_MED" "$RC_SEEK_MED")x | $(python3 -c "print('0.5x is possible' if $LOCAL_SEEK_MED <= 0.5*$RC_SEEK_MED else 'below 0.5x is beyond ffmpeg itself')") |
| prefix of $PREFIX_COUNT mounted < 1 s | $MOUNT_MED ms | $(python3 -c "print('met' if $MOUNT_MED < 1000 else 'missed')") |
EOF
