#!/usr/bin/env bash
# AMQP throughput of the daemon beside a raw lapin publisher (issue #10):
#
#   scripts/bench_amqp.sh                  run to classic and quorum, drain
#   scripts/bench_amqp.sh classic drain    only those
#
# Builds the daemon (bench profile), then runs benches/amqp_run.rs (see its
# header for what is measured and the CT_* knobs): `chargetail run` from a
# pre-written file of 200,000 charges to a durable classic and a quorum
# queue, and the drain of a 200,000-charge backlog after an outage, each
# followed by a raw lapin publisher sending the same bytes (persistent,
# confirms, same window) to the same queue. Every figure is a FIGURE line
# with the load average. Uses the shared broker on 127.0.0.1:5672 with
# unique exchange and queue names, deleted afterwards. A few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
need_build_tools
need_broker

echo "== build (bench profile)" >&2
cargo bench --bench amqp_run --no-run --quiet 2>/dev/null

echo "== $(uptime)"
start=$(date +%s)
cargo bench --quiet --bench amqp_run -- "$@"
echo "== done in $(( $(date +%s) - start )) s; $(uptime)"
