//! The billing rows the store writes in a batch's commit: the ledger entry
//! of every charge read (`billing_ledger`) and the charges held back
//! (`billing_held`). Billing decides what they hold; the store owns their
//! tables and writes them in the same transaction as the outbox rows and
//! the position, so a batch is one commit and a crash leaves all or none.
//!
//! Ids are found by `id_key`, an integer derived from the id (see
//! [`id_key`]), in an integer index beside the text id, which every lookup
//! also compares: two ids with the same key are two rows, never one.

use rusqlite::{params, Transaction};
use sha2::{Digest, Sha256};

use super::NewCharge;

/// The billing facts of one charge, as read from its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: String,
    pub source: String,
    pub time: String,
    pub day: String,
    pub user: String,
    pub account: String,
    pub account_type: String,
    pub status: String,
    pub amount: Option<String>,
    pub cost: Option<String>,
    pub currency: String,
    pub customer_id: Option<String>,
    pub team_id: Option<String>,
    pub transaction_id: Option<String>,
}

/// Why a charge is held (`billing_held.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// No mapping names its account (`unmapped = "hold"`).
    Unmapped,
    /// PaperCut could not be asked (`on_unavailable = "hold"`).
    Papercut,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Unmapped => "unmapped",
            HoldReason::Papercut => "papercut",
        }
    }

    pub fn parse(s: &str) -> HoldReason {
        match s {
            "papercut" => HoldReason::Papercut,
            _ => HoldReason::Unmapped,
        }
    }
}

/// A held charge.
#[derive(Debug, Clone)]
pub struct Held {
    pub charge: NewCharge,
    pub user: String,
    pub created_ms: i64,
    pub reason: HoldReason,
}

/// The integer an id is looked up by: the first 15 hex digits (60 bits,
/// so never negative) after the 4-byte prefix of the ids chargetail makes
/// (`chg_`/`stm_` + 32 hex digits of a SHA-256), else 60 bits of the id's
/// own SHA-256. Not unique: ids that share a key are told apart by the
/// text id, stored beside it.
pub fn id_key(id: &str) -> i64 {
    let b = id.as_bytes();
    if let Some(hex) = b.get(4..19) {
        let mut k: i64 = 0;
        let mut ok = true;
        for &c in hex {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => {
                    ok = false;
                    break;
                }
            };
            k = (k << 4) | i64::from(d);
        }
        if ok {
            return k;
        }
    }
    let d = Sha256::digest(b);
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first) >> 4) as i64
}

/// Insert the ledger entries not recorded yet (one row per id). `now` is
/// their `created_ms`.
pub(super) fn insert_entries(
    tx: &Transaction<'_>,
    entries: &[LedgerEntry],
    now: i64,
) -> rusqlite::Result<()> {
    let mut known =
        tx.prepare_cached("SELECT 1 FROM billing_ledger WHERE id_key = ?1 AND id = ?2")?;
    let mut ins = tx.prepare_cached(
        "INSERT INTO billing_ledger (id_key, id, source, time, day, user, account, account_type,
         status, amount, cost, currency, customer_id, team_id, transaction_id, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    for e in entries {
        let key = id_key(&e.id);
        if known.exists(params![key, e.id])? {
            continue;
        }
        ins.execute(params![
            key,
            e.id,
            e.source,
            e.time,
            e.day,
            e.user,
            e.account,
            e.account_type,
            e.status,
            e.amount,
            e.cost,
            e.currency,
            e.customer_id,
            e.team_id,
            e.transaction_id,
            now
        ])?;
    }
    Ok(())
}

/// Insert the held charges not held yet; returns how many were new, by
/// reason (unmapped, papercut).
pub(super) fn insert_held(
    tx: &Transaction<'_>,
    held: &[Held],
    now: i64,
) -> rusqlite::Result<[u64; 2]> {
    let mut new = [0u64; 2];
    let mut hold = tx.prepare_cached(
        "INSERT OR IGNORE INTO billing_held (id, payload, job_type, account_type, account, user,
         amount, currency, file, offset, line, run, created_ms, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    for h in held {
        let c = &h.charge;
        let n = hold.execute(params![
            c.id,
            c.payload,
            c.job_type,
            c.account_type,
            c.account,
            h.user,
            c.amount,
            c.currency,
            c.file,
            c.offset as i64,
            c.line as i64,
            c.run,
            now,
            h.reason.as_str()
        ])?;
        new[(h.reason == HoldReason::Papercut) as usize] += n as u64;
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_first_15_hex_digits_or_a_digest() {
        assert_eq!(
            id_key("chg_0123456789abcdef0123456789abcdef"),
            0x0123456789abcde
        );
        assert_eq!(
            id_key("stm_fffffffffffffff00000000000000000"),
            (1 << 60) - 1
        );
        for odd in ["chg_1", "", "chg_0123456789ABCDEF0123456789abcdef", "x"] {
            let k = id_key(odd);
            assert!((0..1 << 60).contains(&k), "{odd}: {k}");
        }
        assert_ne!(id_key("chg_1"), id_key("chg_2"));
    }
}
