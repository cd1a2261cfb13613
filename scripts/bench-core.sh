#!/usr/bin/env bash
# bench-core.sh: whole-command benchmarks of the h4fs core, for docs/PERFORMANCE.md.
#
#   scripts/bench-core.sh [WORKDIR]
#
# Measures, with the release binary and a warm page cache:
#   1. opening a 1,000,000-block container: `h4fs inspect` wall time (hyperfine) and peak
#      RSS (/usr/bin/time -v) next to the size of its block index;
#   2. pack and verify throughput on 2 GiB of random data in 1 MiB blocks, in ONE
#      hyperfine run side by side with `sha256sum` and `openssl dgst -sha256` of the same
#      bytes, reported as GB/s (10^9 bytes per second) of payload;
#   3. determinism: the same input packed with --threads 1, 2 and 4 gives
#      byte-identical containers.
#
# WORKDIR (default: /dev/shm/h4fs-bench, a tmpfs, so numbers measure the CPU and page
# cache, not the disk) needs about 5 GiB free; set SIZE_MIB to change the 2048 MiB
# throughput input. The files are left there for reruns; delete the directory after.
# Needs: cargo, hyperfine, GNU time (/usr/bin/time), sha256sum, openssl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

work=${1:-/dev/shm/h4fs-bench}
size_mib=${SIZE_MIB:-2048}
runs=${RUNS:-5}
for tool in hyperfine /usr/bin/time sha256sum openssl python3; do
  command -v "$tool" >/dev/null || { echo "bench-core.sh: $tool is required" >&2; exit 2; }
done
mkdir -p "$work"

echo "## Machine"
echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(nproc) cores"
echo "- RAM: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "- kernel: $(uname -r)"
echo "- rustc: $(rustc --version)"
echo "- sha256sum: $(sha256sum --version | head -n 1); $(openssl version)"
echo "- work dir: $work ($(df -h --output=fstype "$work" | tail -n 1 | tr -d ' '))"
echo

cargo build --release --quiet
h4fs=$PWD/target/release/h4fs

echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "## 1. Opening a 1,000,000-block container"
m1=$work/1m.bin
if [ ! -f "$m1" ] || [ "$(stat -c %s "$m1")" -ne 256000000 ]; then
  head -c 256000000 /dev/urandom >"$m1"
fi
rm -f "$work/1m.h4mk"
"$h4fs" pack -q "$m1" --block-size 256 -o "$work/1m.h4mk"
read -r blocks index_bytes < <("$h4fs" inspect --json "$work/1m.h4mk" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["blocks"], next(c["payload_len"] for c in d["chunks"] if c["tag"] == "HIDX"))')
echo "container: $(stat -c %s "$work/1m.h4mk") bytes, $blocks blocks, index $index_bytes bytes"
echo '$ hyperfine --warmup 3 --runs 20 "h4fs inspect 1m.h4mk"'
hyperfine -N --warmup 3 --runs 20 --style basic --export-json "$work/open.json" \
  "$h4fs inspect $work/1m.h4mk"
echo '$ /usr/bin/time -v h4fs inspect 1m.h4mk (3 runs)'
for _ in 1 2 3; do
  /usr/bin/time -v "$h4fs" inspect "$work/1m.h4mk" 2>&1 >/dev/null |
    awk -v idx="$index_bytes" '/Maximum resident set size/ {
      printf "peak RSS %d KiB = %.1f MB; index %.1f MB; RSS / index = %.2f\n", $6, $6 * 1024 / 1e6, idx / 1e6, $6 * 1024 / idx }'
done
echo

echo "## 2. Pack and verify throughput vs sha256sum ($size_mib MiB, 1 MiB blocks)"
big=$work/data.bin
bytes=$((size_mib * 1048576))
if [ ! -f "$big" ] || [ "$(stat -c %s "$big")" -ne "$bytes" ]; then
  head -c "$bytes" /dev/urandom >"$big"
fi
rm -f "$work/data.h4mk"
"$h4fs" pack -q "$big" --block-size 1MiB -o "$work/data.h4mk"
cat "$big" "$work/data.h4mk" >/dev/null # warm the page cache
echo "\$ hyperfine --warmup 1 --runs $runs (the five commands below, one run)"
hyperfine -N --warmup 1 --runs "$runs" --style basic --export-json "$work/throughput.json" \
  --command-name "h4fs pack" --prepare "rm -f $work/out.h4mk" \
  "$h4fs pack -q $big --block-size 1MiB -o $work/out.h4mk" \
  --command-name "h4fs verify" "$h4fs verify $work/data.h4mk" \
  --command-name "h4fs verify --full" "$h4fs verify --full $work/data.h4mk" \
  --command-name "sha256sum" "sha256sum $big" \
  --command-name "openssl dgst -sha256" "openssl dgst -sha256 $big"
python3 - "$work/throughput.json" "$bytes" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
n = int(sys.argv[2])
print(f"\n| command | wall mean s | wall min s | user s | sys s | GB/s (mean) | GB/s (best) |")
print("|---|---|---|---|---|---|---|")
for r in res:
    print(f"| {r['command']} | {r['mean']:.3f} ± {r['stddev']:.3f} | {r['min']:.3f} "
          f"| {r['user']:.2f} | {r['system']:.2f} "
          f"| {n / r['mean'] / 1e9:.2f} | {n / r['min'] / 1e9:.2f} |")
EOF
echo

echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "## 3. Determinism: --threads 1, 2 and 4"
for t in 1 2 4; do
  rm -f "$work/t$t.h4mk"
  "$h4fs" pack -q "$big" --block-size 1MiB --threads "$t" -o "$work/t$t.h4mk"
done
if cmp "$work/t1.h4mk" "$work/t2.h4mk" && cmp "$work/t1.h4mk" "$work/t4.h4mk" &&
  cmp "$work/t1.h4mk" "$work/data.h4mk"; then
  echo "identical: $(sha256sum "$work/t1.h4mk" | cut -c1-64)"
else
  echo "DIFFERENT: packing depends on the thread count" >&2
  exit 1
fi
rm -f "$work"/t[124].h4mk "$work/out.h4mk"
