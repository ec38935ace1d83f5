//! The commit path: charges, bad lines, their ledger entries and held
//! charges, and the file position read from a batch of lines, in one
//! transaction.

use rusqlite::{params, TransactionBehavior};

use super::ledger::{id_key, insert_entries, insert_held};
use super::{classify_with, now_ms, Held, LedgerEntry, Store, StoreError};
use crate::source::Checkpoint;

/// A parsed charge ready for the outbox.
#[derive(Debug, Clone)]
pub struct NewCharge {
    pub id: String,
    pub payload: Vec<u8>,
    pub job_type: String,
    pub account_type: String,
    pub account: String,
    /// Decimal string of the billed amount, if the file had one.
    pub amount: Option<String>,
    pub currency: String,
    pub file: String,
    pub offset: u64,
    pub line: u64,
    /// The replay run that queues it (0: the daemon).
    pub run: i64,
}

/// A line that could not be parsed.
#[derive(Debug, Clone)]
pub struct BadLine {
    pub file: String,
    pub offset: u64,
    pub line: u64,
    pub raw: Vec<u8>,
    pub reason: String,
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    /// New charges put in the outbox.
    pub inserted: u64,
    /// Charges whose id was already known (re-read copy, replay): ignored.
    pub duplicates: u64,
    pub bad_lines: u64,
    /// Indexes (into the committed slice) of the ignored charges.
    pub ignored: Vec<usize>,
    /// The outbox `seq` of each inserted charge, in order (for the hand-off
    /// to the deliverer).
    pub seqs: Vec<i64>,
    /// The inserted rows' `created_ms`.
    pub created_ms: i64,
    /// Held charges new in `billing_held` (unmapped, papercut).
    pub held: [u64; 2],
}

/// What a batch writes besides the position.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rows<'a> {
    pub charges: &'a [NewCharge],
    pub bad: &'a [BadLine],
    /// Ledger entries (`billing_ledger`), one per charge read.
    pub ledger: &'a [LedgerEntry],
    /// Charges held back instead of queued (`billing_held`).
    pub held: &'a [Held],
}

impl Store {
    /// Commit a batch: the charges and bad lines read, and (when following)
    /// the position after them, in one transaction.
    pub fn commit(
        &mut self,
        checkpoint: Option<&Checkpoint>,
        charges: &[NewCharge],
        bad: &[BadLine],
    ) -> Result<Committed, StoreError> {
        self.commit_rows(
            checkpoint,
            Rows {
                charges,
                bad,
                ..Rows::default()
            },
        )
    }

    /// `commit` with the batch's ledger entries and held charges: one
    /// transaction (one WAL commit) for everything a batch writes.
    pub fn commit_rows(
        &mut self,
        checkpoint: Option<&Checkpoint>,
        rows: Rows<'_>,
    ) -> Result<Committed, StoreError> {
        let Rows {
            charges,
            bad,
            ledger,
            held,
        } = rows;
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify_with(&self.path, e))?;
        let mut done = Committed {
            created_ms: now,
            ..Committed::default()
        };
        {
            insert_entries(&tx, ledger, now).map_err(|e| classify_with(&self.path, e))?;
            done.held = insert_held(&tx, held, now).map_err(|e| classify_with(&self.path, e))?;
            // One row per charge id: inserted unless a row with the same
            // key AND the same text id is there (ids that share a key are
            // two charges). The write lock is held, so nothing inserts the
            // id between the look and the insert. Two statements, not one
            // `INSERT ... SELECT ... WHERE NOT EXISTS`: SQLite runs an
            // INSERT that reads its own table through a temporary table,
            // which cost more than the unique text index it replaces.
            let mut known = tx
                .prepare_cached("SELECT 1 FROM outbox WHERE id_key = ?1 AND id = ?2")
                .map_err(|e| classify_with(&self.path, e))?;
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO outbox
                     (id_key, id, state, payload, job_type, account_type, account, amount, currency, file, offset, line, created_ms, run)
                     VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .map_err(|e| classify_with(&self.path, e))?;
            for (i, c) in charges.iter().enumerate() {
                let key = id_key(&c.id);
                if known
                    .exists(params![key, c.id])
                    .map_err(|e| classify_with(&self.path, e))?
                {
                    done.duplicates += 1;
                    done.ignored.push(i);
                    continue;
                }
                ins.execute(params![
                    key,
                    c.id,
                    c.payload,
                    c.job_type,
                    c.account_type,
                    c.account,
                    c.amount,
                    c.currency,
                    c.file,
                    c.offset as i64,
                    c.line as i64,
                    now,
                    c.run
                ])
                .map_err(|e| classify_with(&self.path, e))?;
                done.inserted += 1;
                done.seqs.push(tx.last_insert_rowid());
            }
            let mut ins_bad = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO bad_lines (key, file, offset, line, raw, reason, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| classify_with(&self.path, e))?;
            for b in bad {
                // The same line of the same file read again (after a crash,
                // by a replay): one dead letter. Another file with an equal
                // bad line is its own dead letter: better two than none.
                let key = bad_line_key(&b.file, &b.raw, b.line);
                let n = ins_bad
                    .execute(params![
                        key,
                        b.file,
                        b.offset as i64,
                        b.line as i64,
                        b.raw,
                        b.reason,
                        now
                    ])
                    .map_err(|e| classify_with(&self.path, e))?;
                done.bad_lines += n as u64;
            }
            if let Some(cp) = checkpoint {
                tx.prepare_cached(
                    "INSERT INTO files (generation, path, dev, ino, fp_len, fingerprint, offset, line, size, finished, updated_ms, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (generation) DO UPDATE SET path = ?2, dev = ?3, ino = ?4, fp_len = ?5,
                       fingerprint = ?6, offset = ?7, line = ?8, size = ?9, finished = ?10, updated_ms = ?11,
                       source = ?12",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        cp.generation as i64,
                        cp.path.to_string_lossy(),
                        cp.dev as i64,
                        cp.ino as i64,
                        cp.fp_len as i64,
                        cp.fingerprint,
                        cp.offset as i64,
                        cp.line as i64,
                        cp.size as i64,
                        cp.finished,
                        now,
                        cp.source
                    ])
                })
                .map_err(|e| classify_with(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| classify_with(&self.path, e))?;
        Ok(done)
    }
}

fn bad_line_key(file: &str, raw: &[u8], line: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(file.as_bytes());
    h.update(b"\0");
    h.update(raw);
    h.update(b"\0");
    h.update(line.to_string());
    hex::encode(&h.finalize()[..16])
}
