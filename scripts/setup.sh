#!/usr/bin/env bash
# Install what the tests need, and only what is missing: the system packages (FUSE,
# ffmpeg, attr, rsync, python3, util-linux's setpriv, b3sum, and for the tests of h4fs serve curl, chromium, nodejs and npm), rustfmt and clippy, and
# cargo-fuzz for the fuzz build. Idempotent, and quick when everything is present.
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
  [nodejs]=node [npm]=npm
)
need=()
for p in fuse3 ffmpeg attr rsync python3 util-linux b3sum curl chromium nodejs npm; do
  if command -v dpkg >/dev/null 2>&1; then
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  else
    command -v "${provides[$p]}" >/dev/null 2>&1 || need+=("$p")
  fi
done
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
