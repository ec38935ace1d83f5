#!/usr/bin/env bash
# Throughput benchmarks: parse, store ceiling, ingest, run, replay, peak RSS.
# Prints figures (nothing here is a pass/fail test), each beside baselines
# measured in the same run, with the load average at the time.
#
#   scripts/bench_throughput.sh            everything (300,000 lines, a 1 GB file)
#   CT_TP_LINES=100000 CT_TP_BIG_MB=0 scripts/bench_throughput.sh   smaller, no 1 GB file
#
# Knobs: CT_TP_LINES (300000), CT_TP_BIG_MB (1000; 0 skips the large file),
# CT_TP_BATCH (2000: the daemon's read batch, used by the raw SQLite
# ceiling), CT_TP_CALLGRIND_LINES (20000; 0 skips instruction counts),
# CT_TP_BIN (target/release/chargetail; built when not given), CT_KEEP=1
# keeps the temp dir.
#
# What is measured (wall time, and CPU time = user + sys, since the machine
# may be shared; instruction counts from callgrind are the repeatable ones):
# - baselines: `wc -l`; a ten-line Python script (csv.reader + json.dumps per
#   line to /dev/null);
# - `chargetail parse` to /dev/null;
# - raw SQLite: the same rows (ids, messages and columns `parse` produced)
#   inserted by Python's sqlite3 with the store's own schema (created by
#   chargetail), statement and pragmas, in transactions of CT_TP_BATCH rows:
#   the ceiling for what the store can do on this disk;
# - ingest: `chargetail run` whose sink is down (webhook to a closed port,
#   retries 10 minutes apart), timed from start until the committed position
#   is at the end of the file: file -> committed outbox;
# - run: `chargetail run` with the stdout sink (to /dev/null), timed until
#   the whole file is committed and nothing is pending;
# - replay: `chargetail replay` to the stdout sink, fresh state;
# - peak RSS of each (VmHWM), and of parse and replay on a ~1 GB file.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/setup.sh
command -v /usr/bin/time >/dev/null || apt_install time
command -v valgrind >/dev/null || apt_install valgrind
command -v sqlite3 >/dev/null || apt_install sqlite3

LINES=${CT_TP_LINES:-300000}
BIG_MB=${CT_TP_BIG_MB:-1000}
BATCH=${CT_TP_BATCH:-2000}
CG_LINES=${CT_TP_CALLGRIND_LINES:-20000}
BIN=${CT_TP_BIN:-}
if [ -z "$BIN" ]; then
    need_build_tools
    echo "== build (release)" >&2
    cargo build --release --quiet
    BIN=$root/target/release/chargetail
fi

dir=$(mktemp -d /tmp/ct-bench-tp-XXXXXX)
cleanup() { [ -n "${CT_KEEP:-}" ] && echo "kept $dir" >&2 || rm -rf "$dir"; }
trap cleanup EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }
figure() { printf 'FIGURE %-26s %s   [load %s]\n' "$1" "$2" "$(load)"; }

# ---------------------------------------------------------------- input
cat >"$dir/gen.py" <<'EOF'
import sys
n = int(sys.argv[1])
users = ["maya.chen", "arjun.patel", "liam.oconnor", "sofia.rossi", "noah.kim", "tom.nguyen", "jack.wilson", "zoe.martin"]
accts = ["Acme Design", "Studio Nine", "Koala Labs", None]
docs = ["Q4 board pack.pdf", "Invoice 2026-118.pdf", "Lease agreement v3.docx", "Floor plan L2.pdf", "Menu – Café Sète.pdf"]
out = open(sys.argv[2], "w", encoding="utf-8", buffering=1 << 20)
out.write("time\ttransaction_id\tuser\taccount\tamount\tbalance\tjob_type\tpages\tcolor_pages\tcopies\tduplex\tdevice\tdocument\tcomment\n")
for i in range(n):
    u = users[i % 8] + "@hw.com.au"
    a = accts[i % 4] or u
    # One line in ten has a quoted field (a comma and doubled quotes).
    doc = '"Wireframes ""v2"", round 2.pdf"' if i % 10 == 0 else docs[i % 5]
    s = i % 86400
    out.write(f"2026-11-{20 + i // 86400 % 8} {s // 3600:02}:{s // 60 % 60:02}:{s % 60:02}\ttx-{i:07}\t{u}\t{a}\t-{i % 7}.{i % 100:02}\t-{i % 50}.{i % 10}0\tPRINT\t{i % 30 + 1}\t{i % 3}\t1\t{'TRUE' if i % 2 else 'FALSE'}\tl2-mfd\t{doc}\t\n")
EOF
cat >"$dir/baseline.py" <<'EOF'
import csv, json, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f, open("/dev/null", "w") as out:
    rows = csv.reader(f, delimiter="\t")
    header = next(rows)
    for row in rows:
        out.write(json.dumps(dict(zip(header, row))) + "\n")
EOF
python3 "$dir/gen.py" "$LINES" "$dir/tx.log"
bytes=$(stat -c %s "$dir/tx.log")
echo "== $LINES lines, $bytes bytes ($(( bytes / (LINES + 1) )) bytes/line); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== $(uptime)"

config() { # $1 dir, $2 file, $3 sink section
    mkdir -p "$1"
    # backlog_limit: reading must not pause at the outbox bound while the
    # sink is down (the ingest figure).
    printf '[source]\nname = "bench"\npath = "%s"\ntimezone = "Australia/Melbourne"\ncurrency = "AUD"\nbacklog_limit = 100000000\n\n[state]\npath = "%s"\n\n%s\n' \
        "$2" "$1/state.db" "$3" >"$1/config.toml"
    echo "$1/config.toml"
}
STDOUT_SINK='[sink]
kind = "stdout"'

# timed CMD...: runs it under /usr/bin/time; sets WALL CPU RSS_MB.
timed() {
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f '%e %U %S %M' -o "$dir/time.out" "$@"
    t1=$(date +%s.%N)
    read -r _ U S RSS <"$dir/time.out"
    WALL=$(echo "$t1 - $t0" | bc -l)
    CPU=$(echo "$U + $S" | bc -l)
    # /usr/bin/time counts CPU in 10 ms ticks.
    [ "$(echo "$CPU < 0.01" | bc -l)" = 1 ] && CPU=0.005
    RSS_MB=$(echo "scale=1; $RSS / 1024" | bc -l)
}
rate() { echo "scale=0; $1 / $2" | bc -l; }  # lines / seconds
# report NAME LINES: a figure from WALL/CPU/RSS_MB, beside the baselines.
report() {
    local w c
    w=$(rate "$2" "$WALL"); c=$(rate "$2" "$CPU")
    local extra=""
    [ -n "${PY_CPU_RATE:-}" ] && extra=" = $(echo "scale=1; $c / $PY_CPU_RATE" | bc -l)x the Python script (CPU)"
    figure "$1" "$(printf '%9s lines/s wall (%6.2f s), %9s lines/s CPU (%6.2f s)%s, peak RSS %s MB' "$w" "$WALL" "$c" "$CPU" "$extra" "$RSS_MB")"
}

# ---------------------------------------------------------------- baselines
timed wc -l "$dir/tx.log" >/dev/null
report baseline.wc-l "$LINES"
timed python3 "$dir/baseline.py" "$dir/tx.log"
PY_CPU_RATE=$(rate "$LINES" "$CPU")
PY_WALL_RATE=$(rate "$LINES" "$WALL")
PY_CPU_RATE_SAVED=$PY_CPU_RATE
PY_CPU_RATE=
report baseline.python-csv-json "$LINES"
PY_CPU_RATE=$PY_CPU_RATE_SAVED

# ---------------------------------------------------------------- parse
cfg=$(config "$dir/parse" "$dir/tx.log" "$STDOUT_SINK")
timed "$BIN" parse --config "$cfg" "$dir/tx.log" >/dev/null
report parse "$LINES"

# ---------------------------------------------------------------- raw SQLite ceiling
"$BIN" parse --config "$cfg" "$dir/tx.log" >"$dir/messages.jsonl"
cfg=$(config "$dir/raw" "$dir/tx.log" "$STDOUT_SINK")
head -1 "$dir/tx.log" >"$dir/raw/empty.log"
"$BIN" replay --config "$cfg" "$dir/raw/empty.log" >/dev/null 2>&1  # creates the schema
cat >"$dir/raw.py" <<'EOF'
import hashlib, json, re, sqlite3, sys, time
db, msgs, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
HEX = re.compile(r"[0-9a-f]{15}")
def id_key(i):
    # store::id_key: 15 hex digits after the 4-byte prefix, else 60 bits
    # of the id's SHA-256.
    h = i[4:19]
    if len(h) == 15 and HEX.fullmatch(h):
        return int(h, 16)
    return int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") >> 4
rows = []
with open(msgs, "rb") as f:
    for line in f:
        payload = line.rstrip(b"\n")
        e = json.loads(payload)
        d = e["data"]
        rows.append((id_key(e["id"]), e["id"], payload, d["job_type"], d["account_type"], d["account"], d["amount"],
                     d["currency"], d["origin"]["file"], d["origin"]["offset"], d["origin"]["line"], 0, 0))
con = sqlite3.connect(db, isolation_level=None)
# The store's settings (see src/store/mod.rs).
for p in ["journal_mode = WAL", "synchronous = NORMAL", "cache_size = -16384", "wal_autocheckpoint = 8192"]:
    con.execute("PRAGMA " + p)
cols = [r[1] for r in con.execute("PRAGMA table_info(outbox)")]
# The store's own writes (src/store/commit.rs) for the schema it made: with
# id_key, a look-up by (id_key, id) then a plain insert (the look-ups of a
# batch in one statement here, so that Python's per-call cost stays out of
# the ceiling); before it, INSERT OR IGNORE on the unique text id.
keyed = "id_key" in cols
if keyed:
    sql = ("INSERT INTO outbox (id_key, id, state, payload, job_type, account_type, account, amount, currency, file, offset, line, created_ms, run) "
           "VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)")
    look = ("SELECT o.id FROM json_each(?1) AS k JOIN outbox AS o "
            "ON o.id_key = k.value ->> 0 AND o.id = k.value ->> 1")
else:
    sql = ("INSERT OR IGNORE INTO outbox (id, state, payload, job_type, account_type, account, amount, currency, file, offset, line, created_ms, run) "
           "VALUES (?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)")
t = time.perf_counter(); c = time.process_time()
for i in range(0, len(rows), batch):
    con.execute("BEGIN IMMEDIATE")
    part = rows[i:i + batch]
    if keyed:
        known = {r[0] for r in con.execute(look, (json.dumps([[r[0], r[1]] for r in part]),))}
        part = [r for r in part if r[1] not in known]
    con.executemany(sql, part)
    con.execute("COMMIT")
print(time.perf_counter() - t, time.process_time() - c)
EOF
read -r WALL CPU < <(python3 "$dir/raw.py" "$dir/raw/state.db" "$dir/messages.jsonl" "$BATCH")
RSS_MB="-"
saved=$PY_CPU_RATE; PY_CPU_RATE=
report "sqlite.raw-insert(py,b=$BATCH)" "$LINES"
PY_CPU_RATE=$saved
RAW_WALL=$WALL
rm -f "$dir/messages.jsonl"

# ---------------------------------------------------------------- ingest / run
# wait_done DB SIZE PENDING_TOO: until the committed position is SIZE (and,
# when asked, nothing is pending); prints seconds since $t0.
wait_done() {
    local q="SELECT coalesce(max(offset), 0) FROM files"
    [ "$3" = 1 ] && q="SELECT coalesce(max(offset), 0) * NOT EXISTS (SELECT 1 FROM outbox WHERE state = 'pending') FROM files"
    while :; do
        local off
        off=$(sqlite3 -readonly "file:$1?mode=ro" "$q" 2>/dev/null || echo 0)
        [ "${off:-0}" -ge "$2" ] && break
        sleep 0.02
    done
}
# daemon NAME SINK PENDING_TOO: `run` on a fresh state, timed until done.
daemon() {
    local d="$dir/$1"
    cfg=$(config "$d" "$dir/tx.log" "$2")
    local t0 t1 pid
    t0=$(date +%s.%N)
    "$BIN" run --config "$cfg" >/dev/null 2>"$d/daemon.log" &
    pid=$!
    wait_done "$d/state.db" "$bytes" "$3"
    t1=$(date +%s.%N)
    read -r ut st < <(awk '{print $14, $15}' "/proc/$pid/stat")
    local hwm
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill -TERM "$pid"; wait "$pid" || true
    WALL=$(echo "$t1 - $t0" | bc -l)
    CPU=$(echo "($ut + $st) / $(getconf CLK_TCK)" | bc -l)
    RSS_MB=$(echo "scale=1; $hwm / 1024" | bc -l)
}
export CT_BENCH_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
daemon ingest '[sink]
kind = "webhook"

[sink.webhook]
url = "http://127.0.0.1:9/"
secrets_env = "CT_BENCH_SECRET"

[delivery]
retry_initial_ms = 600000
retry_max_ms = 600000' 0
report ingest "$LINES"
daemon run "$STDOUT_SINK" 1
report run.stdout "$LINES"

# ---------------------------------------------------------------- replay
cfg=$(config "$dir/replay" "$dir/tx.log" "$STDOUT_SINK")
timed "$BIN" replay --config "$cfg" "$dir/tx.log" >/dev/null 2>"$dir/replay/replay.log"
report replay.stdout "$LINES"

# ---------------------------------------------------------------- 1 GB
if [ "$BIG_MB" -gt 0 ]; then
    big=$(( BIG_MB * 1000000 / (bytes / (LINES + 1)) ))
    python3 "$dir/gen.py" "$big" "$dir/big.log"
    echo "== large file: $big lines, $(stat -c %s "$dir/big.log") bytes"
    cfg=$(config "$dir/bigparse" "$dir/big.log" "$STDOUT_SINK")
    timed "$BIN" parse --config "$cfg" "$dir/big.log" >/dev/null
    report "parse.${BIG_MB}MB" "$big"
    cfg=$(config "$dir/bigreplay" "$dir/big.log" "$STDOUT_SINK")
    timed "$BIN" replay --config "$cfg" "$dir/big.log" >/dev/null 2>"$dir/bigreplay/replay.log"
    report "replay.stdout.${BIG_MB}MB" "$big"
    rm -rf "$dir/big.log" "$dir/bigreplay"
fi

# ---------------------------------------------------------------- instructions
if [ "$CG_LINES" -gt 0 ]; then
    python3 "$dir/gen.py" "$CG_LINES" "$dir/small.log"
    # instr NAME CMD...: instructions per line, from callgrind's total.
    instr() {
        local name=$1; shift
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" >/dev/null 2>"$dir/cg.err" || true
        local n
        n=$(grep -o 'Collected : [0-9]*' "$dir/cg.err" | awk '{print $3}' || true)
        if [ -z "$n" ]; then
            figure "instructions.$name" "not counted (callgrind said: $(tail -1 "$dir/cg.err"))"
            return
        fi
        figure "instructions.$name" "$(printf '%12s instructions, %8s per line (%s lines)' "$n" "$(( n / CG_LINES ))" "$CG_LINES")"
    }
    instr wc-l wc -l "$dir/small.log"
    # The interpreter itself: valgrind does not follow the exec of a
    # wrapper such as pyenv's `python3` shim, and would count only the shim.
    py=$(python3 -c 'import sys; print(sys.executable)')
    instr python-csv-json "$py" "$dir/baseline.py" "$dir/small.log"
    cfg=$(config "$dir/cgparse" "$dir/small.log" "$STDOUT_SINK")
    instr parse "$BIN" parse --config "$cfg" "$dir/small.log"
    cfg=$(config "$dir/cgreplay" "$dir/small.log" "$STDOUT_SINK")
    instr replay.stdout "$BIN" replay --config "$cfg" "$dir/small.log"
fi
echo "== python baseline: $PY_WALL_RATE lines/s wall, $PY_CPU_RATE lines/s CPU; raw SQLite $RAW_WALL s"
echo "== done; $(uptime)"
