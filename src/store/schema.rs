//! The database schema: migrations applied in order.

use rusqlite::functions::FunctionFlags;
use rusqlite::Transaction;

pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One migration: SQL, or code for what SQL alone cannot say (a table
/// that may or may not exist, keys computed by [`super::id_key`]).
pub(super) enum Migration {
    Sql(&'static str),
    Code(fn(&Transaction<'_>) -> rusqlite::Result<()>),
}

use Migration::{Code, Sql};

/// Migrations, applied in order; `user_version` records how many ran. Never
/// edit a released one: add a new one.
pub(super) const MIGRATIONS: &[Migration] = &[
    Sql(r#"
CREATE TABLE files (
    generation  INTEGER PRIMARY KEY,
    path        TEXT NOT NULL,
    dev         INTEGER NOT NULL,
    ino         INTEGER NOT NULL,
    fp_len      INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    offset      INTEGER NOT NULL,
    line        INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    finished    INTEGER NOT NULL DEFAULT 0,
    updated_ms  INTEGER NOT NULL
);
-- The outbox and the delivered-ids ledger in one table: a charge id is
-- inserted once (UNIQUE), whatever file or replay it is read from again.
-- Delivered rows drop their payload and stay as the ledger until pruned.
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    payload      BLOB,
    job_type     TEXT NOT NULL,
    account_type TEXT NOT NULL,
    account      TEXT NOT NULL,
    amount       TEXT,
    currency     TEXT NOT NULL,
    file         TEXT NOT NULL,
    offset       INTEGER NOT NULL,
    line         INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_ms      INTEGER NOT NULL DEFAULT 0,
    first_fail_ms INTEGER,
    last_error   TEXT,
    created_ms   INTEGER NOT NULL,
    delivered_ms INTEGER,
    -- Which replay run queued it (0: the daemon), for a replay's reckoning.
    run          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_run ON outbox (run) WHERE run != 0;
CREATE INDEX outbox_pending ON outbox (seq) WHERE state = 'pending';
CREATE INDEX outbox_dead ON outbox (seq) WHERE state = 'dead';
CREATE INDEX outbox_delivered_ms ON outbox (delivered_ms) WHERE state = 'delivered';
-- Lines that could not be parsed. `key` (file, line number, bytes) makes a
-- re-read of the same line (after a crash, a replay) not a second one.
CREATE TABLE bad_lines (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    key        TEXT NOT NULL UNIQUE,
    file       TEXT NOT NULL,
    offset     INTEGER NOT NULL,
    line       INTEGER NOT NULL,
    raw        BLOB NOT NULL,
    reason     TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#),
    // 2: the delay asked for at the last failure (an endpoint's Retry-After
    // may exceed retry_max_ms): a stored next attempt is read back capped
    // by the larger of the two, so a wall clock stepped back cannot stall
    // delivery for longer than was asked.
    Sql("ALTER TABLE outbox ADD COLUMN wait_ms INTEGER NOT NULL DEFAULT 0;"),
    // 3: answers of PaperCut's Web Services API ([papercut]), kept for
    // cache_ttl_secs. `props` is a JSON object of the properties read, NULL
    // when PaperCut knows no such name; `props_key` the property list asked.
    Sql(r#"
CREATE TABLE papercut_cache (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    props_key  TEXT NOT NULL,
    props      TEXT,
    fetched_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
"#),
    // 4: what /status and the status page read stays an index lookup as
    // the outbox grows: today's and since-start job statistics (a range of
    // created_ms), and the last error of a pending charge (a scan of every
    // pending row when none has one).
    Sql(r#"
CREATE INDEX outbox_created_ms ON outbox (created_ms);
CREATE INDEX outbox_pending_error ON outbox (seq) WHERE state = 'pending' AND last_error IS NOT NULL;
"#),
    // 5: which [[source]] follows a generation. NULL in a database written
    // before sources had names: `Store::adopt_files` gives those rows to
    // the configured source at start.
    Sql("ALTER TABLE files ADD COLUMN source TEXT;"),
    // 6: the billing tables are the store's (`billing` created them on
    // open before), so a batch's ledger rows and held charges are written
    // in the outbox's transaction; the ledger becomes a rowid table found
    // by `id_key` (an integer index) instead of WITHOUT ROWID on the text
    // id, whose random inserts rewrote a page of rows each.
    Code(billing_tables),
    // 7: the outbox found by `id_key` (a plain integer index, see
    // super::id_key; the text id compared beside it, so ids that share a
    // key are two rows) instead of a UNIQUE index on the text id: the index
    // is about a third the size (1,371 pages against 3,694 for 300,000
    // ids), so a batch's random inserts rewrite fewer of its pages in the
    // WAL. The table is rebuilt with the same `seq`s and AUTOINCREMENT mark.
    Code(outbox_keyed),
];

/// Register `chargetail_id_key(id)` ([`super::id_key`]) on the migrating
/// connection, for moving rows over.
fn id_key_function(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.create_scalar_function(
        "chargetail_id_key",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(super::id_key(&ctx.get::<String>(0)?)),
    )
}

fn table_exists(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<bool> {
    tx.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .exists([name])
}

const LEDGER_COLUMNS: &str =
    "id, source, time, day, user, account, account_type, status, amount, cost,
    currency, customer_id, team_id, transaction_id, created_ms";

fn billing_tables(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
-- Charges kept back (see billing::held), with the message as rendered.
CREATE TABLE IF NOT EXISTS billing_held (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    payload      BLOB NOT NULL,
    job_type     TEXT NOT NULL,
    account_type TEXT NOT NULL,
    account      TEXT NOT NULL,
    user         TEXT NOT NULL,
    amount       TEXT,
    currency     TEXT NOT NULL,
    file         TEXT NOT NULL,
    offset       INTEGER NOT NULL,
    line         INTEGER NOT NULL,
    run          INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    reason       TEXT NOT NULL DEFAULT 'unmapped'
);
CREATE INDEX IF NOT EXISTS billing_held_created ON billing_held (created_ms);
-- Which daily statements were queued.
CREATE TABLE IF NOT EXISTS billing_statements (
    source     TEXT NOT NULL,
    account    TEXT NOT NULL,
    day        TEXT NOT NULL,
    id         TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (source, account, day)
) WITHOUT ROWID;
"#,
    )?;
    // A billing_held from before `reason` existed (its rows: unmapped).
    let has_reason = tx
        .prepare("SELECT 1 FROM pragma_table_info('billing_held') WHERE name = 'reason'")?
        .exists([])?;
    if !has_reason {
        tx.execute_batch(
            "ALTER TABLE billing_held ADD COLUMN reason TEXT NOT NULL DEFAULT 'unmapped'",
        )?;
    }
    let old = table_exists(tx, "billing_ledger")?;
    if old {
        tx.execute_batch(
            "ALTER TABLE billing_ledger RENAME TO billing_ledger_old;
             DROP INDEX IF EXISTS billing_ledger_day;
             DROP INDEX IF EXISTS billing_ledger_created;",
        )?;
    }
    tx.execute_batch(
        r#"
-- One row per charge id read (billing::ledger), for reconcile and the
-- daily statements. `id_key`: see store::id_key; the text id is compared
-- on every lookup.
CREATE TABLE billing_ledger (
    seq          INTEGER PRIMARY KEY,
    id_key       INTEGER NOT NULL,
    id           TEXT NOT NULL,
    source       TEXT NOT NULL,
    time         TEXT NOT NULL,   -- RFC 3339 with the source zone's offset
    day          TEXT NOT NULL,   -- local date in the source's zone, YYYY-MM-DD
    user         TEXT NOT NULL,
    account      TEXT NOT NULL,
    account_type TEXT NOT NULL,
    status       TEXT NOT NULL,   -- charged | refunded | cancelled | denied
    amount       TEXT,            -- decimal string as billed
    cost         TEXT,
    currency     TEXT NOT NULL,
    customer_id  TEXT,
    team_id      TEXT,
    transaction_id TEXT,
    created_ms   INTEGER NOT NULL
);
"#,
    )?;
    if old {
        id_key_function(tx)?;
        tx.execute_batch(&format!(
            "INSERT INTO billing_ledger (id_key, {LEDGER_COLUMNS})
             SELECT chargetail_id_key(id), {LEDGER_COLUMNS} FROM billing_ledger_old
             ORDER BY created_ms, id;
             DROP TABLE billing_ledger_old;"
        ))?;
    }
    tx.execute_batch(
        "CREATE INDEX billing_ledger_id_key ON billing_ledger (id_key);
         CREATE INDEX billing_ledger_day ON billing_ledger (day);
         CREATE INDEX billing_ledger_created ON billing_ledger (created_ms);",
    )
}

/// The outbox's columns as migration 2 left them (all but `id_key`).
const OUTBOX_COLUMNS: &str = "seq, id, state, payload, job_type, account_type, account, amount,
    currency, file, offset, line, attempts, next_ms, first_fail_ms, last_error, created_ms,
    delivered_ms, run, wait_ms";

fn outbox_keyed(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    // The AUTOINCREMENT high mark is above every seq ever handed out,
    // including rows pruned or dropped since (it can exceed max(seq)). A
    // seq names a charge to the deliverer and in replay runs' reckoning:
    // the new table must never hand one out again.
    let mark: i64 = tx.query_row(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)",
        [],
        |r| r.get(0),
    )?;
    tx.execute_batch(
        r#"
-- The outbox and the delivered-ids ledger in one table: a charge id is
-- inserted once (`Store::commit_rows` looks it up by id_key and id first),
-- whatever file or replay it is read from again. Delivered rows drop their
-- payload and stay as the ledger until pruned.
CREATE TABLE outbox_keyed (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id_key       INTEGER NOT NULL,  -- store::id_key(id): not unique
    id           TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    payload      BLOB,
    job_type     TEXT NOT NULL,
    account_type TEXT NOT NULL,
    account      TEXT NOT NULL,
    amount       TEXT,
    currency     TEXT NOT NULL,
    file         TEXT NOT NULL,
    offset       INTEGER NOT NULL,
    line         INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_ms      INTEGER NOT NULL DEFAULT 0,
    first_fail_ms INTEGER,
    last_error   TEXT,
    created_ms   INTEGER NOT NULL,
    delivered_ms INTEGER,
    -- Which replay run queued it (0: the daemon), for a replay's reckoning.
    run          INTEGER NOT NULL DEFAULT 0,
    -- The delay asked for at the last failure (see migration 2).
    wait_ms      INTEGER NOT NULL DEFAULT 0
);
"#,
    )?;
    id_key_function(tx)?;
    tx.execute_batch(&format!(
        "INSERT INTO outbox_keyed (id_key, {OUTBOX_COLUMNS})
         SELECT chargetail_id_key(id), {OUTBOX_COLUMNS} FROM outbox ORDER BY seq;
         DROP TABLE outbox;
         ALTER TABLE outbox_keyed RENAME TO outbox;"
    ))?;
    // The rename carried the new table's sqlite_sequence row (made by the
    // copy, if it copied any row) over to `outbox`; DROP removed the old.
    let raised = tx.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'outbox'",
        [mark],
    )?;
    if raised == 0 && mark > 0 {
        tx.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?1)",
            [mark],
        )?;
    }
    tx.execute_batch(
        "CREATE INDEX outbox_id_key ON outbox (id_key);
         CREATE INDEX outbox_run ON outbox (run) WHERE run != 0;
         CREATE INDEX outbox_pending ON outbox (seq) WHERE state = 'pending';
         CREATE INDEX outbox_dead ON outbox (seq) WHERE state = 'dead';
         CREATE INDEX outbox_delivered_ms ON outbox (delivered_ms) WHERE state = 'delivered';
         CREATE INDEX outbox_created_ms ON outbox (created_ms);
         CREATE INDEX outbox_pending_error ON outbox (seq)
             WHERE state = 'pending' AND last_error IS NOT NULL;",
    )
}
