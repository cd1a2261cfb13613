#!/usr/bin/env bash
# ffprobe-index.sh MEDIA > MEDIA.csv
#
# Write the block index CSV that `h4fs pack MEDIA --index MEDIA.csv -o OUT.h4mk` reads,
# so a real MP4/MKV/TS file is cut at packet boundaries with real timestamps and real
# keyframes.
#
# Output: a header line `offset,size,pts_us,keyframe,duration_us`, then one row per block,
# in file order. The rows tile the whole file: the first starts at byte 0, each starts
# where the previous ended, the last ends at EOF.
#
# How the blocks are chosen:
#   * Stream: the first video stream that is not an attached picture (cover art); if the
#     file has none, the first audio stream. Packets of other streams stay inside the
#     block of the preceding packet of the chosen stream.
#   * Cut points: the byte position (`pos`) of every packet of that stream, sorted by
#     position. Packets without a position are skipped; packets sharing a position form
#     one block (keyframe if any of them is one, earliest timestamp).
#   * Block 0 starts at byte 0, so it holds the container header as well as the first
#     packet. The packer requires block 0 to be a keyframe: when the first packets are not
#     keyframes, they are merged into block 0 up to and including the first keyframe
#     packet. If the stream has no keyframe at all, block 0 is marked as one anyway (it
#     starts the file, so decoding from it is as good as it gets).
#   * pts_us: the packet's DECODE timestamp (dts), because it is non-decreasing in file
#     order where presentation timestamps are not (B-frames). It is converted to
#     microseconds with the stream's time base (exact integer arithmetic, rounded down),
#     clamped at 0 (MP4 edit lists give negative dts to the first packets). A packet with
#     no dts takes the previous block's value (0 at the start), and a dts that goes back
#     in time is raised to the previous block's value, so pts never decreases.
#   * keyframe: the packet's K flag. duration_us: the packet duration in the same time
#     base, empty when ffprobe does not know it.
#
# Needs: bash, ffprobe (from ffmpeg), awk, sort, stat.
# Exit status: 0 on success; 1 when the file cannot be read as media or has no usable
# packets; 2 on a usage error or a missing file or tool. Errors go to stderr.
set -euo pipefail

prog=${0##*/}
die() {
  local code=$1
  shift
  printf '%s: error: %s\n' "$prog" "$*" >&2
  exit "$code"
}

if [ $# -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  printf 'usage: %s MEDIA > MEDIA.csv\n' "$prog" >&2
  printf 'Write the block index CSV for: h4fs pack MEDIA --index MEDIA.csv -o OUT.h4mk\n' >&2
  [ $# -eq 1 ] && exit 0
  exit 2
fi

media=$1
command -v ffprobe >/dev/null 2>&1 || die 2 "ffprobe not found (install ffmpeg)"
[ -e "$media" ] || die 2 "$media: no such file"
[ -f "$media" ] || die 2 "$media: not a regular file"
[ -r "$media" ] || die 2 "$media: permission denied"
size=$(stat -L -c %s -- "$media")
[ "$size" -gt 0 ] || die 1 "$media: empty file, not media"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ffprobe-index.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Pick the stream: first non-picture video stream, else first audio stream.
stream=""
for spec in V:0 a:0; do
  if ! ffprobe -v error -select_streams "$spec" -show_entries stream=index,time_base \
    -of compact=p=0 -- "$media" >"$tmp/stream" 2>"$tmp/err"; then
    msg=$(head -c 400 "$tmp/err" | tr '\n' ' ')
    die 1 "$media: ffprobe cannot read it as media: ${msg:-unknown error}"
  fi
  if [ -s "$tmp/stream" ]; then
    stream=$(head -n 1 "$tmp/stream")
    break
  fi
done
[ -n "$stream" ] || die 1 "$media: no video or audio stream"

index=$(printf '%s\n' "$stream" | tr '|' '\n' | sed -n 's/^index=//p')
time_base=$(printf '%s\n' "$stream" | tr '|' '\n' | sed -n 's/^time_base=//p')
case "$time_base" in
  [0-9]*/[0-9]*) ;;
  *) die 1 "$media: stream $index has no usable time base (\"$time_base\")" ;;
esac
tb_num=${time_base%/*}
tb_den=${time_base#*/}
if [ "$tb_num" -le 0 ] || [ "$tb_den" -le 0 ]; then
  die 1 "$media: stream $index has time base $time_base"
fi

# One line per packet with a byte position: pos dts duration key.
if ! ffprobe -v error -select_streams "$index" -show_entries packet=pos,dts,duration,flags \
  -of compact=p=0 -- "$media" >"$tmp/packets" 2>"$tmp/err"; then
  msg=$(head -c 400 "$tmp/err" | tr '\n' ' ')
  die 1 "$media: ffprobe failed to list packets: ${msg:-unknown error}"
fi

awk -F'|' -v size="$size" '
  {
    pos = "N/A"; dts = "N/A"; dur = "N/A"; key = 0
    for (i = 1; i <= NF; i++) {
      eq = index($i, "=")
      k = substr($i, 1, eq - 1); v = substr($i, eq + 1)
      if (k == "pos") pos = v
      else if (k == "dts") dts = v
      else if (k == "duration") dur = v
      else if (k == "flags") key = (index(v, "K") > 0)
    }
    if (pos !~ /^[0-9]+$/ || pos + 0 >= size + 0) next
    if (dts !~ /^-?[0-9]+$/) dts = "N/A"
    if (dur !~ /^[0-9]+$/) dur = "N/A"
    # Packet order (NR) breaks ties so equal positions keep their decode order.
    printf "%s %d %s %s %d\n", pos, NR, dts, dur, key
  }' "$tmp/packets" | sort -k1,1n -k2,2n >"$tmp/sorted"

[ -s "$tmp/sorted" ] || die 1 "$media: stream $index has no packets with byte positions"

awk -v size="$size" -v num="$tb_num" -v den="$tb_den" '
  # floor(t * num * 1e6 / den) for t >= 0, in exact integer steps while t * num and the
  # result stay below 2^53: whole time-base units first, then the remainder.
  function to_us(t,    a, q, r, f, g) {
    a = t * num
    q = int(a / den)
    r = a - q * den
    if (r < 0) { q -= 1; r += den }
    else if (r >= den) { q += 1; r -= den }
    f = int(r * 1000000 / den)
    g = r * 1000000 - f * den
    if (g < 0) f -= 1
    else if (g >= den) f += 1
    return q * 1000000 + f
  }
  {
    pos = $1 + 0; dts = $3; dur = $4; key = $5 + 0
    if (n > 0 && pos == p_pos[n]) {
      # Same position as the previous packet: one block.
      if (key) p_key[n] = 1
      if (dts != "N/A" && (p_dts[n] == "N/A" || dts + 0 < p_dts[n] + 0)) p_dts[n] = dts
      if (p_dur[n] == "N/A") p_dur[n] = dur
      next
    }
    n++
    p_pos[n] = pos; p_dts[n] = dts; p_dur[n] = dur; p_key[n] = key
    if (key && first_key == 0) first_key = n
  }
  END {
    # Blocks start at packet positions; block 0 starts at byte 0 and, when the stream
    # does not start with a keyframe, extends through the first keyframe packet.
    start = (first_key > 0) ? first_key : 1
    print "offset,size,pts_us,keyframe,duration_us"
    prev_us = 0
    for (i = start; i <= n; i++) {
      off = (i == start) ? 0 : p_pos[i]
      end = (i < n) ? p_pos[i + 1] : size
      if (i == start) {
        # Earliest timestamp of the packets merged into block 0.
        t = "N/A"
        for (j = 1; j <= start; j++)
          if (p_dts[j] != "N/A" && (t == "N/A" || p_dts[j] + 0 < t + 0)) t = p_dts[j]
        k = 1
      } else {
        t = p_dts[i]
        k = p_key[i]
      }
      us = prev_us
      if (t != "N/A") {
        us = (t + 0 < 0) ? 0 : to_us(t + 0)
        if (us < prev_us) us = prev_us
      }
      prev_us = us
      d = (p_dur[i] == "N/A") ? "" : sprintf("%.0f", to_us(p_dur[i] + 0))
      printf "%.0f,%.0f,%.0f,%d,%s\n", off, end - off, us, k, d
    }
  }' "$tmp/sorted"
