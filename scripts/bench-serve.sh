#!/usr/bin/env bash
# Benchmark `h4fs serve` against nginx serving the original media file, with wrk.
#
# Same machine, same run, loopback only. The data: SIZE random bytes (default 256 MiB)
# written to a file; nginx serves that file from disk; h4fs serves `stream` of a
# container packed from it (identity engine, --block-size BS, default 1 MiB), verifying
# every block before sending it. Both are checked to give the same bytes (cmp) first.
#
# For each server, with 1 and 64 connections, for DURATION seconds each:
#   * range: GETs of 64 KiB at random offsets (wrk Lua script, same seed for both);
#   * whole: GETs of the whole file.
# wrk reports requests/s, transfer/s and latency percentiles; the script prints a
# markdown table with both servers side by side and the ratios h4fs/nginx, and checks the
# target (h4fs >= 0.8x nginx's requests/s and throughput, p99 <= 2x nginx's).
#
# Needs: wrk, nginx (Debian: apt-get install wrk nginx-light), curl, a release build
# (built if missing). Not run by the tests. Results: docs/PERFORMANCE.md, "Serve".
#
#   scripts/bench-serve.sh [--size 256M] [--block-size 1M] [--duration 10] [--work-dir DIR]
#                          [--h4fs BINARY] (default: target/release/h4fs, built if missing)

set -euo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
SIZE=256M
BS=1M
DURATION=10
WORK_DIR=/var/tmp/h4fs-bench-serve
H4FS=""
THREADS=2

while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE=$2; shift 2 ;;
        --block-size) BS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --work-dir) WORK_DIR=$2; shift 2 ;;
        --h4fs) H4FS=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

for t in wrk nginx curl; do
    command -v "$t" >/dev/null || { echo "bench-serve: $t is needed (apt-get install wrk nginx-light curl)" >&2; exit 1; }
done

if [ -z "$H4FS" ]; then
    H4FS="$REPO_DIR/target/release/h4fs"
    [ -x "$H4FS" ] || (cd "$REPO_DIR" && cargo build --release >&2)
fi

mkdir -p "$WORK_DIR"
chmod 755 "$WORK_DIR"
DATA="$WORK_DIR/media.bin"
C="$WORK_DIR/media.h4mk"
NGINX_PID=""
H4FS_PID=""
cleanup() {
    [ -n "$H4FS_PID" ] && kill "$H4FS_PID" 2>/dev/null && wait "$H4FS_PID" 2>/dev/null || true
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

bytes=$(numfmt --from=iec "$SIZE")
if [ ! -f "$DATA" ] || [ "$(stat -c %s "$DATA")" != "$bytes" ]; then
    echo "bench-serve: writing $SIZE of random data" >&2
    head -c "$bytes" /dev/urandom > "$DATA"
fi
chmod 644 "$DATA"
"$H4FS" pack "$DATA" --block-size "$BS" -o "$C" --force >&2

# A free port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

NPORT=$(free_port)
cat > "$WORK_DIR/nginx.conf" <<EOF
daemon off;
worker_processes $THREADS;
pid $WORK_DIR/nginx.pid;
error_log $WORK_DIR/nginx-error.log;
user root;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$NPORT; root $WORK_DIR; }
}
EOF
nginx -c "$WORK_DIR/nginx.conf" &
NGINX_PID=$!

"$H4FS" serve "$C" --listen 127.0.0.1:0 --cache-size 512M > "$WORK_DIR/h4fs.url" 2>/dev/null &
H4FS_PID=$!
for _ in $(seq 100); do
    [ -s "$WORK_DIR/h4fs.url" ] && curl -fs "http://127.0.0.1:$NPORT/media.bin" -r 0-0 -o /dev/null && break
    sleep 0.1
done
H4FS_URL="$(head -1 "$WORK_DIR/h4fs.url")media/stream"
NGINX_URL="http://127.0.0.1:$NPORT/media.bin"

echo "bench-serve: checking both serve the same bytes" >&2
cmp <(curl -fs "$NGINX_URL") <(curl -fs "$H4FS_URL")
cmp <(curl -fs -r 1000000-1065535 "$NGINX_URL") <(curl -fs -r 1000000-1065535 "$H4FS_URL")

cat > "$WORK_DIR/range.lua" <<EOF
local size = $bytes
local len = 65536
local n = 0
init = function(args) math.randomseed(4242 + (id or 0)) end
setup = function(thread) thread:set("id", n); n = n + 1 end
request = function()
    local a = math.random(0, size - len)
    return wrk.format("GET", nil, { ["Range"] = "bytes=" .. a .. "-" .. (a + len - 1) })
end
EOF

# run NAME URL CONNS MODE -> "rps mib_s p50_ms p99_ms errors"
run() {
    local url=$2 conns=$3 mode=$4 threads=$THREADS out
    [ "$conns" -lt "$threads" ] && threads=$conns
    local script=()
    [ "$mode" = range ] && script=(-s "$WORK_DIR/range.lua")
    out=$(wrk -t "$threads" -c "$conns" -d "${DURATION}s" --timeout 60s --latency "${script[@]}" "$url" 2>&1)
    echo "$out" > "$WORK_DIR/wrk-$1-$mode-$conns.txt"
    awk -v want="$mode" '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        function mib(v) { if (v ~ /GB$/) return v*1024; if (v ~ /MB$/) return v+0; if (v ~ /KB$/) return v/1024; return v/1048576 }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
        /^Requests\/sec/ { rps = $2 } /^Transfer\/sec/ { tps = mib($2) }
        /Non-2xx|Socket errors/ { err = err $0 " " }
        END { printf "%.0f %.1f %.2f %.2f %s\n", rps, tps, p50, p99, (err == "" ? "-" : "errors") }' <<< "$out"
}

echo "bench-serve: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $SIZE file, h4fs blocks $BS, ${DURATION}s per run" >&2
printf '| load | conns | nginx req/s | h4fs req/s | ratio | nginx MiB/s | h4fs MiB/s | ratio | nginx p50/p99 ms | h4fs p50/p99 ms | p99 ratio |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
fail=0
for mode in range whole; do
    for conns in 1 64; do
        read -r nr nt n50 n99 nerr < <(run nginx "$NGINX_URL" "$conns" "$mode")
        read -r hr ht h50 h99 herr < <(run h4fs "$H4FS_URL" "$conns" "$mode")
        rr=$(awk -v a="$hr" -v b="$nr" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        tr=$(awk -v a="$ht" -v b="$nt" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        pr=$(awk -v a="$h99" -v b="$n99" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        printf '| %s 64 KiB | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s |\n' \
            "$([ "$mode" = range ] && echo "random" || echo "whole-file")" "$conns" "$nr" "$hr" "$rr" "$nt" "$ht" "$tr" "$n50" "$n99" "$h50" "$h99" "$pr" \
            | sed 's/whole-file 64 KiB/whole file/'
        if [ "$nerr" != "-" ] || [ "$herr" != "-" ]; then echo "bench-serve: errors in $mode/$conns (see $WORK_DIR/wrk-*.txt)" >&2; fail=1; fi
        awk -v r="$rr" -v t="$tr" -v p="$pr" 'BEGIN { exit !(r >= 0.8 && t >= 0.8 && p <= 2.0) }' \
            || { echo "bench-serve: target missed for $mode with $conns connections (req/s $rr, MiB/s $tr, p99 $pr)" >&2; fail=1; }
    done
done
exit $fail
