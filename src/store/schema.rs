//! The database schema: migrations applied in order.

pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migrations, applied in order; `user_version` records how many ran. Never
/// edit a released one: add a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    // 2: the delay asked for at the last failure (an endpoint's Retry-After
    // may exceed retry_max_ms): a stored next attempt is read back capped
    // by the larger of the two, so a wall clock stepped back cannot stall
    // delivery for longer than was asked.
    "ALTER TABLE outbox ADD COLUMN wait_ms INTEGER NOT NULL DEFAULT 0;",
    // 3: answers of PaperCut's Web Services API ([papercut]), kept for
    // cache_ttl_secs. `props` is a JSON object of the properties read, NULL
    // when PaperCut knows no such name; `props_key` the property list asked.
    r#"
CREATE TABLE papercut_cache (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    props_key  TEXT NOT NULL,
    props      TEXT,
    fetched_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
"#,
    // 4: what /status and the status page read stays an index lookup as
    // the outbox grows: today's and since-start job statistics (a range of
    // created_ms), and the last error of a pending charge (a scan of every
    // pending row when none has one).
    r#"
CREATE INDEX outbox_created_ms ON outbox (created_ms);
CREATE INDEX outbox_pending_error ON outbox (seq) WHERE state = 'pending' AND last_error IS NOT NULL;
"#,
    // 5: which [[source]] follows a generation. NULL in a database written
    // before sources had names: `Store::adopt_files` gives those rows to
    // the configured source at start.
    "ALTER TABLE files ADD COLUMN source TEXT;",
];
