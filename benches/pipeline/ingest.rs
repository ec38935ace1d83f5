//! ingest: file → committed outbox, beside the raw SQLite ceiling of the
//! same writes, in the same run.
//!
//! - `chargetail run` (CT_BENCH_BIN, else this build's binary) follows a
//!   pre-written file of `lines` transaction lines with its sink down (a
//!   webhook to a closed port, retries 10 minutes apart, so nothing is
//!   delivered or re-read); timed from its start until the committed
//!   position is at the end of the file. Wall and CPU (the daemon's own
//!   utime + stime), peak RSS.
//! - the ceiling: the very rows that run committed (its outbox and ledger
//!   rows, read back), inserted by this process with rusqlite into a fresh
//!   database with the schema that binary made, the store's pragmas and its
//!   statements, in transactions of the daemon's read batch (2,000 lines)
//!   with a position upsert each: what SQLite alone costs for the writes.
//!   Also the outbox rows alone (as `scripts/bench_throughput.sh`'s
//!   Python ceiling inserts them).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection};

use super::common::{env_num, figure};
use super::{mb, note, rss, workdir, write_lines, Run};

/// The daemon's read batch (`FollowOptions::max_batch_lines`).
const BATCH: usize = 2000;

/// CPU seconds (user + system) of a process or, with "thread-self", of
/// the calling thread, from /proc.
fn cpu_secs(which: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{which}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after ')'.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

/// The committed position (largest offset in `files`), 0 before any.
fn committed(db: &Path) -> u64 {
    let Ok(conn) = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row("SELECT coalesce(max(offset), 0) FROM files", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as u64)
    .unwrap_or(0)
}

pub async fn ingest(lines: u64) -> Result<()> {
    let dir = workdir("ct-bench-ingest-")?;
    let file = dir.path().join("tx.log");
    write_lines(&file, lines)?;
    let size = std::fs::metadata(&file)?.len();
    let secret = dir.path().join("webhook-secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")?;
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let cfg = super::config(
        dir.path(),
        &file,
        "backlog_limit = 100000000\n",
        &format!(
            "[sink]\nkind = \"webhook\"\n\n[sink.webhook]\nurl = \"http://127.0.0.1:9/\"\n\
             secret_file = \"{}\"\n\n[delivery]\nretry_initial_ms = 600000\nretry_max_ms = 600000\n",
            secret.display()
        ),
    );
    let db = dir.path().join("state/state.db");
    let t0 = Instant::now();
    let mut daemon = Run::start(&cfg, dir.path())?;
    let pid = daemon.pid();
    while committed(&db) < size {
        if !daemon.alive() {
            bail!("daemon exited:\n{}", daemon.log_tail());
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("not all committed after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(&pid.to_string());
    let hwm = rss(pid).map(|r| r.1).unwrap_or(0);
    let _ = daemon.stop();

    let db2 = dir.path().join("raw.db");
    let (raw, outbox_only) = tokio::task::spawn_blocking({
        let (db, db2) = (db.clone(), db2.clone());
        move || raw_ceiling(&db, &db2)
    })
    .await??;
    let keyed = if raw.keyed {
        "integer id_key"
    } else {
        "unique text id"
    };
    note(&format!(
        "ingest: {lines} lines, {} charges and {} ledger rows committed; outbox key: {keyed}",
        raw.charges, raw.ledger
    ));
    figure(
        "ingest.raw_outbox",
        &format!(
            "{:.0} rows/s wall ({:.2} s), {:.0} rows/s CPU: rusqlite, the outbox rows alone, {BATCH} a transaction",
            outbox_only.charges as f64 / outbox_only.wall,
            outbox_only.wall,
            outbox_only.charges as f64 / outbox_only.cpu.max(0.001)
        ),
    );
    figure(
        "ingest.raw_ceiling",
        &format!(
            "{:.0} lines/s wall ({:.2} s), {:.0} lines/s CPU: rusqlite, the same outbox + ledger rows and positions, the store's statements, {BATCH} a transaction",
            lines as f64 / raw.wall,
            raw.wall,
            lines as f64 / raw.cpu.max(0.001)
        ),
    );
    figure(
        "ingest",
        &format!(
            "{:.0} lines/s wall ({wall:.2} s), {:.0} lines/s CPU ({cpu:.2} s), peak RSS {:.1} MB: {:.2}x the ceiling (wall), {:.2}x (CPU)",
            lines as f64 / wall,
            lines as f64 / cpu.max(0.001),
            mb(hwm),
            raw.wall / wall,
            raw.cpu / cpu.max(0.001)
        ),
    );
    Ok(())
}

/// What a raw insert run did and took.
struct Raw {
    keyed: bool,
    charges: u64,
    ledger: u64,
    wall: f64,
    cpu: f64,
}

/// One outbox row as the store inserts it.
struct OutRow {
    id: String,
    id_key: Option<i64>,
    payload: Vec<u8>,
    cols: [String; 5],
    amount: Option<String>,
    offset: i64,
    line: i64,
}

/// The schema `src` was made with, in a new database at `dst`, with the
/// store's pragmas.
fn fresh_copy_of_schema(src: &Connection, dst: &Path) -> Result<Connection> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", dst.display()));
    }
    let conn = Connection::open(dst)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -16384;
         PRAGMA wal_autocheckpoint = 8192;",
    )?;
    let mut st = src.prepare(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'
         ORDER BY type = 'index', rowid",
    )?;
    let ddl: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for sql in ddl {
        conn.execute_batch(&sql)?;
    }
    Ok(conn)
}

/// Insert what `db`'s daemon committed into fresh copies of its schema:
/// (outbox + ledger + positions, outbox alone).
fn raw_ceiling(db: &Path, dst: &Path) -> Result<(Raw, Raw)> {
    let src = Connection::open(db)?;
    let keyed: bool = src
        .prepare("SELECT 1 FROM pragma_table_info('outbox') WHERE name = 'id_key'")?
        .exists([])?;
    let key_col = if keyed { "id_key" } else { "NULL" };
    let rows: Vec<OutRow> = src
        .prepare(&format!(
            "SELECT id, {key_col}, payload, job_type, account_type, account, currency, file, amount,
             offset, line FROM outbox ORDER BY seq"
        ))?
        .query_map([], |r| {
            Ok(OutRow {
                id: r.get(0)?,
                id_key: r.get(1)?,
                payload: r.get(2)?,
                cols: [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?],
                amount: r.get(8)?,
                offset: r.get(9)?,
                line: r.get(10)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    const LEDGER: &str = "id_key, id, source, time, day, user, account, account_type, status,
        amount, cost, currency, customer_id, team_id, transaction_id, created_ms";
    let ledger: Vec<Vec<rusqlite::types::Value>> = src
        .prepare(&format!("SELECT {LEDGER} FROM billing_ledger ORDER BY seq"))?
        .query_map([], |r| (0..16).map(|i| r.get(i)).collect())?
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        bail!("the daemon committed no charge");
    }
    let batches = rows.len().div_ceil(BATCH);
    let per = ledger.len().div_ceil(batches);
    let with_ledger = insert_all(&src, dst, &rows, &ledger, per, keyed).context("raw insert")?;
    let alone = insert_all(&src, dst, &rows, &[], 0, keyed).context("raw insert")?;
    Ok((with_ledger, alone))
}

fn insert_all(
    src: &Connection,
    dst: &Path,
    rows: &[OutRow],
    ledger: &[Vec<rusqlite::types::Value>],
    ledger_per_batch: usize,
    keyed: bool,
) -> Result<Raw> {
    let mut conn = fresh_copy_of_schema(src, dst)?;
    let (wall0, cpu0) = (Instant::now(), cpu_secs("thread-self"));
    let mut ledger_batches = ledger.chunks(ledger_per_batch.max(1));
    for (n, batch) in rows.chunks(BATCH).enumerate() {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            if let Some(entries) = ledger_batches.next() {
                // As store::ledger::insert_entries.
                let mut known = tx
                    .prepare_cached("SELECT 1 FROM billing_ledger WHERE id_key = ?1 AND id = ?2")?;
                let mut ins = tx.prepare_cached(
                    "INSERT INTO billing_ledger (id_key, id, source, time, day, user, account,
                     account_type, status, amount, cost, currency, customer_id, team_id,
                     transaction_id, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )?;
                for e in entries {
                    if !known.exists(params![e[0], e[1]])? {
                        ins.execute(rusqlite::params_from_iter(e))?;
                    }
                }
            }
            // As store::commit (this schema's statements).
            let mut known = match keyed {
                true => {
                    Some(tx.prepare_cached("SELECT 1 FROM outbox WHERE id_key = ?1 AND id = ?2")?)
                }
                false => None,
            };
            let mut ins = tx.prepare_cached(if keyed {
                "INSERT INTO outbox (id_key, id, state, payload, job_type, account_type, account,
                 currency, file, amount, offset, line, created_ms, run)
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, 0)"
            } else {
                "INSERT OR IGNORE INTO outbox (id, state, payload, job_type, account_type,
                 account, currency, file, amount, offset, line, created_ms, run)
                 VALUES (?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, 0)"
            })?;
            for r in batch {
                if let Some(known) = known.as_mut() {
                    if known.exists(params![r.id_key, r.id])? {
                        continue;
                    }
                }
                ins.execute(params![
                    r.id_key, r.id, r.payload, r.cols[0], r.cols[1], r.cols[2], r.cols[3],
                    r.cols[4], r.amount, r.offset, r.line
                ])?;
            }
            if !ledger.is_empty() {
                tx.prepare_cached(
                    "INSERT INTO files (generation, path, dev, ino, fp_len, fingerprint, offset,
                     line, size, finished, updated_ms, source)
                     VALUES (1, 'f', 1, 1, 1, 'x', ?1, ?2, ?1, 0, 1, 's')
                     ON CONFLICT (generation) DO UPDATE SET offset = ?1, line = ?2, size = ?1",
                )?
                .execute(params![batch[batch.len() - 1].offset, n as i64])?;
            }
        }
        tx.commit()?;
    }
    Ok(Raw {
        keyed,
        charges: rows.len() as u64,
        ledger: ledger.len() as u64,
        wall: wall0.elapsed().as_secs_f64(),
        cpu: cpu_secs("thread-self") - cpu0,
    })
}

/// CT_INGEST_LINES, else CT_BENCH_LINES scaled down (ingest is quick).
pub fn lines(default: u64) -> u64 {
    env_num("CT_INGEST_LINES", default.min(300_000))
}
