#!/usr/bin/env bash
# The main job on the embedded default: follow sample-data/ with SQLite state
# and the stdout sink. Charges go to stdout as CloudEvents JSON lines; when
# every sample file is read and delivered, the daemon is stopped with
# SIGTERM (as systemd would), `chargetail status` is shown, and the demo
# ends with the `chargetail reconcile` table (totals per account).
# Usage: scripts/demo.sh            (fresh state each time)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
need_build_tools
cargo build --release --quiet
BIN=target/release/chargetail
CONFIG=sample-data/demo.toml
rm -rf target/demo-state
"$BIN" check --config "$CONFIG" >&2
"$BIN" run --config "$CONFIG" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true' EXIT
# Wait until nothing is pending and the positions stop moving.
last=""
for _ in $(seq 1 120); do
    sleep 0.5
    now=$("$BIN" status --config "$CONFIG" --json 2>/dev/null | python3 -c '
import json,sys
s=json.load(sys.stdin)
print(s["outbox"]["pending"], sum(f["offset"] for f in s["files"]), len(s["files"]))' 2>/dev/null || true)
    case "$now" in "0 "*) if [ "$now" = "$last" ]; then break; fi;; esac
    last="$now"
done
kill -TERM $PID
wait $PID
trap - EXIT
"$BIN" status --config "$CONFIG" >&2
"$BIN" dead-letters --config "$CONFIG" list >&2
# Totals per account, read vs delivered, to the cent (exit 1 if anything
# read is not delivered).
echo >&2
"$BIN" reconcile --config "$CONFIG" --by account
