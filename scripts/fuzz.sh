#!/usr/bin/env bash
# Fuzz targets of fuzz/ (one per parser entry point).
#
#   scripts/fuzz.sh                  build every target (unoptimised: proves they compile)
#   scripts/fuzz.sh TARGET [SECONDS] build, then run TARGET for SECONDS (default 60)
#   scripts/fuzz.sh all [SECONDS]    run every target in turn, SECONDS split between them
#   scripts/fuzz.sh list             name the targets
#
# Targets build on the stable toolchain: `cargo fuzz build --sanitizer none` gives
# libFuzzer's coverage instrumentation without a sanitizer (which would need nightly);
# in safe Rust, bounds checks and overflow checks (debug assertions are on) catch most
# of what a sanitizer would. cargo-fuzz is installed with `cargo install --locked cargo-fuzz` when missing.
#
# A run starts from a corpus seeded with the reference samples, containers packed by
# h4fs, and the chunks cut out of them (fuzz/corpus/TARGET, not committed). A crash
# leaves its input in fuzz/artifacts/TARGET/; add it to tests/bad_input.rs as a
# regression test once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi

FUZZ=(cargo fuzz build --sanitizer none --debug-assertions)
targets() { cargo fuzz list; }

if [ $# -eq 0 ]; then
  # The test command only checks that every target builds: an unoptimised build does
  # that in a fraction of the time (cargo-fuzz's optimised builds use one codegen unit).
  "${FUZZ[@]}" --dev
  exit 0
fi
case "$1" in
  list) targets; exit 0 ;;
  -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
esac

what=$1
secs=${2:-60}
case "$secs" in
  ''|*[!0-9]*) echo "fuzz: SECONDS must be a whole number, not \"$secs\"" >&2; exit 2 ;;
esac
if [ "$what" = all ]; then
  mapfile -t run < <(targets)
  secs=$(( secs / ${#run[@]} ))
  [ "$secs" -ge 1 ] || secs=1
else
  list=$(targets)
  if ! grep -qx -- "$what" <<<"$list"; then
    echo "fuzz: no target \"$what\"; targets: $(tr '\n' ' ' <<<"$list")" >&2
    exit 2
  fi
  run=("$what")
fi

"${FUZZ[@]}"
# Seeds: the reference samples and two small h4fs containers, whole and cut into chunks.
cargo build --quiet --bin h4fs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 700 /dev/zero | tr '\0' 'h' > "$work/in.bin"
printf 'h4fs fuzz seed %s\n' {1..20} >> "$work/in.bin"
target/debug/h4fs pack "$work/in.bin" --block-size 100 --gop 2 -q -o "$work/identity.h4mk"
target/debug/h4fs pack "$work/in.bin" --block-size 128 --gop 3 --engine geometric-reference \
  -q -o "$work/geometric.h4mk"
# v2: an HB3T tree of 1 KiB groups (several groups, several nodes).
target/debug/h4fs pack "$work/in.bin" --block-size 100 --gop 2 --format v2 --group-size 1KiB \
  -q -o "$work/v2.h4mk"
# Encrypted with the key the archive target tries (FUZZ_KEY: 32 bytes of 07).
(umask 077; printf '07%.0s' {1..32} > "$work/fuzz.key"; echo >> "$work/fuzz.key")
target/debug/h4fs pack "$work/in.bin" --block-size 150 --gop 2 --encrypt \
  --key-file "$work/fuzz.key" -q -o "$work/encrypted.h4mk"
python3 - "$work" tests/fixtures/seed/*.h4mk "$work"/*.h4mk <<'EOF'
import os, struct, sys
out, files = sys.argv[1], sys.argv[2:]
def put(target, name, data):
    d = os.path.join("fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
for path in files:
    data = open(path, "rb").read()
    base = os.path.basename(path)
    put("archive", base, data)
    if data[4] == 1:  # layout C: 16-byte header, chunks with a trailing CRC
        put("layout_c", base + ".header", data[:16])
        pos = 16
        while pos + 12 <= len(data) - 4:
            tag = data[pos:pos + 4]
            (n,) = struct.unpack("<I", data[pos + 8:pos + 12])
            if tag in (b"TSEK", b"CORE"):
                put("layout_c", "%s.%d.%s" % (base, pos, tag.decode()), data[pos + 12:pos + 12 + n])
            if tag == b"TRAK":
                put("json", "%s.%d" % (base, pos), data[pos + 12:pos + 12 + n])
            pos += 16 + n
        continue
    pos = 8
    while pos + 12 <= len(data):
        tag = data[pos:pos + 4]
        (n,) = struct.unpack(">I", data[pos + 4:pos + 8])
        payload = data[pos + 12:pos + 12 + n]
        name = "%s.%d" % (base, pos)
        if tag == b"SEEK":
            put("seek", name, payload)
        elif tag in (b"META", b"SAFE"):
            put("json", name, payload)
        elif tag in (b"HIDX", b"HFTR"):
            put("h4fs_tail", name, payload)
        elif tag == b"HENC" or (tag == b"CORE" and b"living-cipher" in data):
            put("crypto_headers", name, payload)
        elif tag == b"CORE" and pos < 400:
            # engine_decode reads the expected decoded length from 8 leading bytes.
            runs = sum(payload[1::2]) if b"geometric" in data else len(payload)
            put("engine_decode", name, struct.pack("<Q", runs) + payload)
        pos += 12 + n
EOF
mkdir -p fuzz/corpus/index_csv
printf 'offset,size,pts_us,keyframe,duration_us\n0,100,0,1,33333\n100,0,33333,0,\n100,7,66666,K,1\n' \
  > fuzz/corpus/index_csv/seed.csv
# outboard: an HB3T payload (3 groups of 1 KiB, 2 nodes), and a stream for the verifier.
mkdir -p fuzz/corpus/outboard
python3 - <<'EOF'
import struct
hdr = struct.pack(">IB3xQQ", 1, 10, 3000, 2) + bytes(range(32))
open("fuzz/corpus/outboard/hb3t", "wb").write(hdr + bytes(range(128)))
open("fuzz/corpus/outboard/stream", "wb").write(b"\x00\x05\x01" + b"h4fs" * 1300)
EOF
for t in "${run[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  echo "fuzz: $t for ${secs}s" >&2
  cargo fuzz run --sanitizer none --debug-assertions "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 2>&1 |
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|.*panicked at)' || true
  if compgen -G "fuzz/artifacts/$t/*" >/dev/null; then
    echo "fuzz: $t found crashes: $(ls fuzz/artifacts/"$t")" >&2
    exit 1
  fi
done
