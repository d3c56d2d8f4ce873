#!/usr/bin/env bash
# Builds the gridraft binary of an earlier release, for the rolling-upgrade test
# (cluster-tests/rolling_upgrade.py), and prints its path.
#
#   scripts/build-previous.sh [COMMIT]
#
# COMMIT defaults to the last commit before peer streams (members of that build talk HTTP to
# each other). The source is taken from this repository's history with `git archive`, built in
# debug into target/previous (its own target directory, so this build's binaries are never
# overwritten), and the binary kept as target/previous/gridraft-COMMIT.
set -euo pipefail
cd "$(dirname "$0")/.."
COMMIT="${1:-0e38022c48df57bfd758275f99c3e772bf753b00}"
OUT="target/previous"
BIN="$OUT/gridraft-${COMMIT:0:12}"
if [ ! -x "$BIN" ]; then
  src="$OUT/src-${COMMIT:0:12}"
  rm -rf "$src"
  mkdir -p "$src"
  git archive "$COMMIT" | tar -x -C "$src"
  # No debug info: the binary is only run, and it keeps the build's disk small.
  CARGO_PROFILE_DEV_DEBUG=false CARGO_TARGET_DIR="$PWD/$OUT/target" cargo build --locked --quiet --manifest-path "$src/Cargo.toml" --bin gridraft >&2
  cp "$OUT/target/debug/gridraft" "$BIN"
  rm -rf "$src"
fi
echo "$BIN"
