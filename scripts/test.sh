#!/usr/bin/env bash
# The full test suite: formatting, lints, unit and integration tests (including tests
# that really mount), docs without warnings, and a build of the fuzz targets.
# First installs whatever of that is missing (scripts/setup.sh), so it runs as it is on
# a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
cargo fmt --check --manifest-path fuzz/Cargo.toml
scripts/fuzz.sh  # builds every fuzz target (stable toolchain, no sanitizer)
