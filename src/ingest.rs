//! The format → store step, one implementation for the daemon (following)
//! and `replay` (historical files): parse a batch of one file's lines into
//! outbox rows and dead letters, and commit them (with the position, when
//! following) in one transaction.

use crate::billing::{Entry, Held};
use crate::charge::Charge;
use crate::deliver::Handoff;
use crate::format::{LineParser, Parsed};
use crate::sink::Envelope;
use crate::source::{Checkpoint, Line};
use crate::store::{BadLine, Committed, NewCharge, Pending, Rows, Store, StoreError};

/// Turn a parsed charge into its outbox row (rendering the message once).
pub fn new_charge(charge: &Charge, source_name: &str) -> NewCharge {
    NewCharge {
        id: charge.id.clone(),
        payload: charge.to_event_json(source_name),
        job_type: charge.job_type.as_str().to_string(),
        account_type: charge.account_type.as_str().to_string(),
        account: charge.account.clone(),
        amount: charge.amount.map(|a| a.to_string()),
        currency: charge.currency.clone(),
        file: charge.origin.file.clone(),
        offset: charge.origin.offset,
        line: charge.origin.line,
        run: 0,
    }
}

/// What one line added to a batch.
pub enum Pushed {
    /// Not a record (a header, a banner, a blank line).
    Skip,
    /// A charge: its outbox row is in the batch.
    Charge(Box<Charge>),
    /// Unparsable: a dead letter is in the batch.
    Bad,
}

/// The parsed lines of one file, not yet committed.
pub struct Batch {
    /// The file as charges and dead letters name it.
    file: String,
    /// The replay run that queues these charges (0: the daemon).
    run: i64,
    pub charges: Vec<NewCharge>,
    pub bad: Vec<BadLine>,
    /// From `bill`: the charges' ledger entries and the held ones, written
    /// in the same commit.
    pub ledger: Vec<Entry>,
    pub held: Vec<Held>,
}

impl Batch {
    pub fn new(file: String, run: i64) -> Batch {
        Batch {
            file,
            run,
            charges: Vec::new(),
            bad: Vec::new(),
            ledger: Vec::new(),
            held: Vec::new(),
        }
    }

    /// Parse one line (lines of a file in order, from its first) into the
    /// batch. An unparsable line is logged and kept as a dead letter.
    pub fn push(&mut self, parser: &mut LineParser, line: &Line, source_name: &str) -> Pushed {
        match parser.parse(line) {
            Parsed::Skip => Pushed::Skip,
            Parsed::Charge(c) => {
                let mut row = new_charge(&c, source_name);
                row.run = self.run;
                self.charges.push(row);
                Pushed::Charge(c)
            }
            Parsed::Error(reason) => {
                tracing::warn!(
                    file = %self.file,
                    line = line.number,
                    offset = line.offset,
                    %reason,
                    "unparsable line: kept as a dead letter"
                );
                self.bad.push(BadLine {
                    file: self.file.clone(),
                    offset: line.offset,
                    line: line.number,
                    raw: line.bytes.clone(),
                    reason,
                });
                Pushed::Bad
            }
        }
    }

    /// Charges and dead letters held.
    pub fn len(&self) -> usize {
        self.charges.len() + self.bad.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The billing step (ledger entries, `data.billing`, held charges; see
    /// `billing`): run it before `commit`, since the outbox row's bytes are
    /// what every delivery attempt sends. Held charges leave `charges` for
    /// `held`; `commit` writes them and the ledger entries with the rest.
    pub fn bill(
        &mut self,
        billing: &mut crate::billing::Billing,
        store: &Store,
        source_name: &str,
    ) -> Result<(), crate::billing::BillingError> {
        let p = billing.prepare(store, source_name, std::mem::take(&mut self.charges))?;
        self.charges = p.charges;
        self.ledger = p.ledger;
        self.held = p.held;
        Ok(())
    }

    /// Commit the batch, and `position` (when following) in the same
    /// transaction: a charge is never recorded without the position after
    /// it, nor the position without the charge. Known ids are ignored (see
    /// `Committed::ignored`).
    pub fn commit(
        &self,
        store: &mut Store,
        position: Option<&Checkpoint>,
    ) -> Result<Committed, StoreError> {
        let done = store.commit_rows(
            position,
            Rows {
                charges: &self.charges,
                bad: &self.bad,
                ledger: &self.ledger,
                held: &self.held,
            },
        )?;
        if self.run != 0 && done.inserted > 0 {
            // A replay: a daemon running on this state (another process)
            // learns of these charges from the token.
            store.bump_outbox_token()?;
        }
        Ok(done)
    }

    /// `commit`, then hand the charges inserted to the deliverer in memory
    /// (their message bytes move out of the batch): it sends them without
    /// reading them back. The outbox rows stay the durable record.
    pub fn commit_and_hand_off(
        &mut self,
        store: &mut Store,
        position: Option<&Checkpoint>,
        handoff: &Handoff,
    ) -> Result<Committed, StoreError> {
        let done = self.commit(store, position)?;
        let mut ignored = done.ignored.iter().peekable();
        let mut seqs = done.seqs.iter();
        let mut rows = Vec::with_capacity(done.seqs.len());
        for (i, c) in self.charges.iter_mut().enumerate() {
            if ignored.peek() == Some(&&i) {
                ignored.next();
                continue;
            }
            let Some(&seq) = seqs.next() else { break };
            rows.push(Pending {
                envelope: Envelope {
                    seq,
                    id: c.id.clone(),
                    payload: std::mem::take(&mut c.payload),
                    job_type: c.job_type.clone(),
                    account_type: c.account_type.clone(),
                    attempts: 0,
                    attrs: Default::default(),
                },
                next_ms: 0,
                first_fail_ms: None,
                wait_ms: 0,
                created_ms: done.created_ms,
            });
        }
        if !rows.is_empty() {
            handoff.push(rows);
        }
        Ok(done)
    }

    /// Empty the batch for the next lines of the same file.
    pub fn clear(&mut self) {
        self.charges.clear();
        self.bad.clear();
        self.ledger.clear();
        self.held.clear();
    }
}
