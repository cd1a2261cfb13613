#!/usr/bin/env bash
# ffprobe-index.sh MEDIA > MEDIA.csv
#
# Write the block index CSV that `h4fs pack MEDIA --index MEDIA.csv -o OUT.h4mk` reads,
# so a real MP4/MKV/TS file is cut at packet boundaries with real timestamps and real
# keyframes.
#
# Output (the contract `h4fs pack --index` reads, docs/FORMAT.md section 4.3):
#   # start_time_us=S                      where the media's clock starts (see pts_us)
#   offset,size,pts_us,keyframe,duration_us
#   one row per block, in file order
# The rows tile the whole file: the first starts at byte 0, each starts where the
# previous ended, the last ends at EOF.
#
# How the blocks are chosen:
#   * Input: refused unless ffprobe sees audio or video in it (text files, which ffprobe
#     reads as ANSI art, and single still images are refused).
#   * Stream: the first video stream that is not an attached picture (cover art); if the
#     file has none, the first audio stream. Packets of other streams stay inside the
#     block of the preceding packet of the chosen stream.
#   * Cut points: the byte position (`pos`) of every packet of that stream, sorted by
#     position. Packets without a position are skipped; packets sharing a position form
#     one block (keyframe if any of them is one, earliest timestamp). What a block holds
#     is what lies between two positions: in MP4 and MPEG-TS, a packet's position is
#     where its bytes (MP4 sample, first TS packet of its PES) begin; in Matroska/WebM it
#     is inside the packet's (Simple)Block element, past the element ID and size, and in
#     AVI past the chunk's 8-byte header, so there a block ends with the next packet's
#     element ID and size (and any cluster or other streams' data before it).
#   * Block 0 starts at byte 0, so it holds the container header as well as the first
#     packet. The packer requires block 0 to be a keyframe: when the first packets are not
#     keyframes, they are merged into block 0 up to and including the first keyframe
#     packet, whose time block 0 takes. If the stream has no keyframe at all, block 0 is
#     marked as one anyway (it starts the file, so decoding from it is as good as it gets).
#   * start_time_us: the format's start time (ffprobe `format=start_time`, what players
#     and `ffmpeg -ss` count from), in microseconds, may be negative; 0 when unknown.
#   * pts_us: PRESENTATION times in microseconds from that start (the packet's pts, or its
#     dts when it has no pts; converted with the stream's time base by exact integer
#     arithmetic, rounded down; the start subtracted; clamped at 0). A keyframe block
#     records its own packet's time. Any other block records the earliest time of itself
#     and every later packet (B-frames present before packets stored ahead of them), so
#     the last block whose pts_us is at or before T is the last one to decode to show T.
#     Either way a value below the previous block's is raised to it, so pts_us never
#     decreases; blocks with no time at all take the previous block's (0 at the start).
#   * keyframe: the packet's K flag. duration_us: how long after pts_us the block's
#     packets finish presenting (pts + duration - pts_us; the packet duration when the
#     stream has no B-frames), empty when ffprobe does not know the duration.
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
  if ! ffprobe -v error -select_streams "$spec" -show_entries stream=index,time_base,codec_name \
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
codec=$(printf '%s\n' "$stream" | tr '|' '\n' | sed -n 's/^codec_name=//p')
case "$time_base" in
  [0-9]*/[0-9]*) ;;
  *) die 1 "$media: stream $index has no usable time base (\"$time_base\")" ;;
esac
tb_num=${time_base%/*}
tb_den=${time_base#*/}
if [ "$tb_num" -le 0 ] || [ "$tb_den" -le 0 ]; then
  die 1 "$media: stream $index has time base $time_base"
fi

# The container format and its start time (where players' time 0 is).
if ! ffprobe -v error -show_entries format=format_name,start_time -of compact=p=0 -- "$media" \
  >"$tmp/format" 2>"$tmp/err"; then
  msg=$(head -c 400 "$tmp/err" | tr '\n' ' ')
  die 1 "$media: ffprobe cannot read it as media: ${msg:-unknown error}"
fi
format=$(tr '|' '\n' <"$tmp/format" | sed -n 's/^format_name=//p' | head -n 1)
start_time=$(tr '|' '\n' <"$tmp/format" | sed -n 's/^start_time=//p' | head -n 1)

# ffprobe opens nearly anything: text as ANSI art (tty), a single picture as a one-frame
# video (image2, *_pipe). Those are not audio or video.
case "$format,$codec" in
  tty,* | *,ansi) die 1 "$media: not audio or video (ffprobe reads it as text, format \"$format\")" ;;
  image2,* | *_pipe,*) die 1 "$media: not audio or video (a still image, format \"$format\")" ;;
esac

# start_time is decimal seconds with 6 digits (exact microseconds), or N/A.
start_us=0
if [[ "$start_time" =~ ^(-?)([0-9]+)\.([0-9]{6})$ ]]; then
  start_us=$((10#${BASH_REMATCH[2]} * 1000000 + 10#${BASH_REMATCH[3]}))
  [ -n "${BASH_REMATCH[1]}" ] && start_us=$((-start_us))
elif [[ "$start_time" =~ ^-?[0-9]+$ ]]; then
  start_us=$((start_time * 1000000))
fi

# One line per packet with a byte position: pos pts dts duration key.
if ! ffprobe -v error -select_streams "$index" -show_entries packet=pos,pts,dts,duration,flags \
  -of compact=p=0 -- "$media" >"$tmp/packets" 2>"$tmp/err"; then
  msg=$(head -c 400 "$tmp/err" | tr '\n' ' ')
  die 1 "$media: ffprobe failed to list packets: ${msg:-unknown error}"
fi

awk -F'|' -v size="$size" '
  {
    pos = "N/A"; pts = "N/A"; dts = "N/A"; dur = "N/A"; key = 0
    for (i = 1; i <= NF; i++) {
      eq = index($i, "=")
      k = substr($i, 1, eq - 1); v = substr($i, eq + 1)
      if (k == "pos") pos = v
      else if (k == "pts") pts = v
      else if (k == "dts") dts = v
      else if (k == "duration") dur = v
      else if (k == "flags") key = (index(v, "K") > 0)
    }
    if (pos !~ /^[0-9]+$/ || pos + 0 >= size + 0) next
    # Presentation time; the decode time only when a packet has no pts.
    t = (pts ~ /^-?[0-9]+$/) ? pts : ((dts ~ /^-?[0-9]+$/) ? dts : "N/A")
    if (dur !~ /^[0-9]+$/) dur = "N/A"
    # Packet order (NR) breaks ties so equal positions keep their decode order.
    printf "%s %d %s %s %d\n", pos, NR, t, dur, key
  }' "$tmp/packets" | sort -k1,1n -k2,2n >"$tmp/sorted"

[ -s "$tmp/sorted" ] || die 1 "$media: stream $index has no packets with byte positions"

awk -v size="$size" -v num="$tb_num" -v den="$tb_den" -v start_us="$start_us" '
  # floor(t * num * 1e6 / den) for any integer t, in exact integer steps while |t * num|
  # and the result stay below 2^53: whole time-base units first, then the remainder.
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
  # Microseconds from the start of the media, never below 0.
  function rel(t,    u) {
    u = to_us(t) - start_us
    return (u < 0) ? 0 : u
  }
  {
    pos = $1 + 0; t = $3; dur = $4; key = $5 + 0
    us = (t == "N/A") ? "N/A" : rel(t + 0)
    end = (us == "N/A" || dur == "N/A") ? "N/A" : rel(t + dur)
    if (n > 0 && pos == p_pos[n]) {
      # Same position as the previous packet: one block.
      if (key) p_key[n] = 1
      if (us != "N/A" && (p_us[n] == "N/A" || us < p_us[n])) p_us[n] = us
      if (end != "N/A" && (p_end[n] == "N/A" || end > p_end[n])) p_end[n] = end
      next
    }
    n++
    p_pos[n] = pos; p_us[n] = us; p_end[n] = end; p_key[n] = key
    if (key && first_key == 0) first_key = n
  }
  END {
    # Blocks start at packet positions; block 0 starts at byte 0 and, when the stream
    # does not start with a keyframe, extends through the first keyframe packet (whose
    # time it takes: the packets before it cannot be shown).
    start = (first_key > 0) ? first_key : 1
    # Earliest presentation time of this block and every later one (B-frames present
    # before packets that precede them in the file).
    later = "N/A"
    for (i = n; i >= start; i--) {
      if (p_us[i] != "N/A" && (later == "N/A" || p_us[i] < later)) later = p_us[i]
      s_us[i] = later
    }
    printf "# start_time_us=%.0f\n", start_us
    print "offset,size,pts_us,keyframe,duration_us"
    prev_us = 0
    for (i = start; i <= n; i++) {
      off = (i == start) ? 0 : p_pos[i]
      stop = (i < n) ? p_pos[i + 1] : size
      k = (i == start) ? 1 : p_key[i]
      w = (k && p_us[i] != "N/A") ? p_us[i] : s_us[i]
      us = prev_us
      if (w != "N/A" && w > prev_us) us = w
      prev_us = us
      d = ""
      if (p_end[i] != "N/A") d = sprintf("%.0f", (p_end[i] > us) ? p_end[i] - us : 0)
      printf "%.0f,%.0f,%.0f,%d,%s\n", off, stop - off, us, k, d
    }
  }' "$tmp/sorted"
