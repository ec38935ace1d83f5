#!/usr/bin/env bash
# Whole-daemon benchmarks; prints figures (nothing here is a pass/fail test).
#
#   scripts/bench.sh                    latency, memory (+ drain), replay, idle
#   scripts/bench.sh latency replay     only those
#   scripts/bench.sh idle               stdout write→out p50/p99 quiet and beside a
#                                       disk neighbour, idle CPU/wake-ups/RSS, each
#                                       beside `tail -F` (benches/idle.rs)
#   CT_LAT_RATE=100 scripts/bench.sh latency   AMQP p99 at 100 lines/s
#   cargo bench --bench webhook_e2e     webhook p99 at 100 lines/s
#
# Builds the daemon (bench profile), then runs benches/pipeline.rs, which
# drives it (target/release/chargetail) as a user would (see its header for what each
# benchmark does and the CT_* knobs). Every figure is one `FIGURE` line with
# the load average at the time: the machine may be shared, so re-run a
# figure taken under high load. Needs RabbitMQ on 127.0.0.1:5672 (started
# if missing) and rabbitmq-server for the private node of the memory
# benchmark. Takes about 6-8 minutes. Temp dirs, queues and the private
# node are removed afterwards (CT_KEEP=1 keeps the temp dirs and logs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
need_build_tools
need_broker
command -v /usr/bin/time >/dev/null || apt_install time

# The daemon the benchmarks drive is built by `cargo bench` with
# [profile.bench]: release optimisations plus symbols (for CT_WRAP=perf);
# the shipped release profile strips them.
echo "== build (bench profile)" >&2
cargo bench --bench pipeline --bench idle --no-run --quiet 2>/dev/null

echo "== $(uptime)"
start=$(date +%s)
pipeline=()
idle=0
for a in "$@"; do
  if [ "$a" = idle ]; then idle=1; else pipeline+=("$a"); fi
done
if [ $# -eq 0 ]; then
  idle=1
  cargo bench --quiet --bench pipeline
elif [ ${#pipeline[@]} -gt 0 ]; then
  cargo bench --quiet --bench pipeline -- "${pipeline[@]}"
fi
if [ $idle = 1 ]; then
  cargo bench --quiet --bench idle
fi
echo "== done in $(( $(date +%s) - start )) s; $(uptime)"
