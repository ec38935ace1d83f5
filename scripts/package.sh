#!/usr/bin/env bash
# Build the .deb: the release binary (stripped: see [profile.release]), a man
# page per command and the completions generated from the CLI, then
# `cargo deb` (installed if missing). Output: target/debian/.
#
# For tests/package.rs: CT_PACKAGE_BIN=FILE packages that binary instead of
# building the release one (cargo-deb strips it), and CARGO_TARGET_DIR puts
# the work and the .deb elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
need_build_tools
need_cargo_deb
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/release/chargetail"
if [ -n "${CT_PACKAGE_BIN:-}" ]; then
    mkdir -p "$TARGET/release"
    cp "$CT_PACKAGE_BIN" "$BIN"
    FAST=--fast
else
    cargo build --release --quiet
    FAST=
fi
ASSETS="$TARGET/release/assets"
rm -rf "$ASSETS"
mkdir -p "$ASSETS/man"
"$BIN" man --out "$ASSETS/man"
gzip -9n "$ASSETS"/man/*.1
"$BIN" completions bash > "$ASSETS/chargetail.bash"
"$BIN" completions zsh > "$ASSETS/_chargetail"
"$BIN" completions fish > "$ASSETS/chargetail.fish"
cargo deb --no-build --strip --no-dbgsym $FAST --output "$TARGET/debian/"
ls -l "$TARGET"/debian/*.deb
