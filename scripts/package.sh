#!/usr/bin/env bash
# Build the .deb: release binary, man page and completions generated from
# the CLI, then `cargo deb` (installed if missing). Output: target/debian/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
need_build_tools
cargo build --release --quiet
mkdir -p target/assets
BIN=target/release/chargetail
"$BIN" man | gzip -9n > target/assets/chargetail.1.gz
"$BIN" completions bash > target/assets/chargetail.bash
"$BIN" completions zsh > target/assets/_chargetail
"$BIN" completions fish > target/assets/chargetail.fish
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
cargo deb --no-build
ls -l target/debian/*.deb
