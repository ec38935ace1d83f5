#!/usr/bin/env bash
# The whole test suite, with its set-up: build tools, a RabbitMQ broker on
# 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432 (installed and started if
# absent), systemd-analyze, cargo-deb (tests/package.rs); then
# formatting, lints and every test. Fault tests start brokers of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
need_build_tools
need_broker
need_systemd_analyze
need_postgres
need_cargo_deb
need_chromium
command -v rustfmt >/dev/null && cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --no-fail-fast 2>&1 | tee target/test-output.txt
# The closing line CI reads.
python3 - <<'PY'
import re
passed=failed=ignored=0
for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", open("target/test-output.txt").read()):
    passed+=int(m[1]); failed+=int(m[2]); ignored+=int(m[3])
print(f"{passed} passed, {failed} failed, {ignored} skipped")
PY
