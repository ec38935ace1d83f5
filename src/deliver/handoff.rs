//! Committed charges handed from the reader to the deliverer in memory, so
//! that a fresh charge is not read back from SQLite before it is sent. The
//! outbox row stays the durable record: the deliverer reads the outbox only
//! at start, after a failed attempt (retries), after another process changed
//! it, and when this queue overflowed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::store::{Pending, Store, StoreError};

/// The bounded queue between the reader (which pushes the rows it has just
/// committed, in outbox order) and the deliverer (which takes them).
pub struct Handoff {
    inner: Mutex<Inner>,
    /// Another process changed the outbox or the tokens (`others_changed`).
    others: AtomicBool,
    wake: Notify,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    rows: VecDeque<Pending>,
    /// Pending rows exist that are not in `rows` (the queue was full, or a
    /// row was written without a hand-off): the deliverer reads the outbox.
    /// Reported once `rows` is empty, so the rows held go first.
    store_dirty: bool,
}

impl Handoff {
    /// A queue holding at most `capacity` charges (0: none, every charge is
    /// read back from the outbox).
    pub fn new(capacity: usize) -> Handoff {
        Handoff {
            inner: Mutex::new(Inner::default()),
            others: AtomicBool::new(false),
            wake: Notify::new(),
            capacity,
        }
    }

    /// Hand over rows just committed (ascending `seq`, after every row
    /// pushed before). What does not fit is dropped: it is in the outbox and
    /// the deliverer reads it from there.
    pub fn push(&self, rows: impl IntoIterator<Item = Pending>) {
        {
            let mut g = self.lock();
            for r in rows {
                if g.rows.len() >= self.capacity {
                    g.store_dirty = true;
                    break;
                }
                g.rows.push_back(r);
            }
        }
        self.wake.notify_one();
    }

    /// Pending rows were written without a hand-off (released held charges,
    /// statements, another process): the deliverer reads the outbox.
    pub fn store_changed(&self) {
        self.lock().store_dirty = true;
        self.wake.notify_one();
    }

    /// Another process changed the outbox (`OtherWriters`, on the source's
    /// poll): the deliverer reads its change tokens and the outbox. The
    /// only way the deliverer learns of it between its own records, so that
    /// it never polls the database itself.
    pub fn others_changed(&self) {
        self.others.store(true, Ordering::Release);
        self.store_changed();
    }

    /// Whether `others_changed` was called since the last call.
    pub fn take_others_changed(&self) -> bool {
        self.others.swap(false, Ordering::AcqRel)
    }

    /// Up to `max` rows, oldest first, and whether the outbox must be read
    /// after them.
    pub fn take(&self, max: usize) -> (Vec<Pending>, bool) {
        let mut g = self.lock();
        let n = max.min(g.rows.len());
        let rows: Vec<Pending> = g.rows.drain(..n).collect();
        let dirty = g.rows.is_empty() && std::mem::take(&mut g.store_dirty);
        (rows, dirty)
    }

    /// Resolves after the next push or `store_changed` (or at once if one
    /// happened since the last wait).
    pub fn notified(&self) -> Notified<'_> {
        self.wake.notified()
    }

    /// Charges held now.
    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind: go on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Notices, cheaply, that another process changed pending charges: on a
/// connection's `PRAGMA data_version` (which reads no page), and only when
/// that moved, the change tokens (`Store::change_tokens`).
#[derive(Debug)]
pub struct OtherWriters {
    data_version: i64,
    tokens: (i64, i64),
}

impl OtherWriters {
    /// Start looking from now: made before the deliverer starts, so that
    /// nothing another process does after the deliverer's first read of the
    /// outbox goes unnoticed.
    pub fn new(store: &Store) -> Result<OtherWriters, StoreError> {
        Ok(OtherWriters {
            data_version: store.data_version()?,
            tokens: store.change_tokens()?,
        })
    }

    /// Whether a token moved since the last call.
    pub fn changed(&mut self, store: &Store) -> Result<bool, StoreError> {
        let v = store.data_version()?;
        if self.data_version == v {
            return Ok(false);
        }
        self.data_version = v;
        let t = store.change_tokens()?;
        let moved = self.tokens != t;
        self.tokens = t;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Envelope;

    fn row(seq: i64) -> Pending {
        Pending {
            envelope: Envelope {
                seq,
                id: format!("c{seq}"),
                payload: vec![b'x'],
                job_type: "PRINT".into(),
                account_type: "personal".into(),
                attempts: 0,
                attrs: Default::default(),
            },
            next_ms: 0,
            first_fail_ms: None,
            wait_ms: 0,
            created_ms: 0,
        }
    }

    #[test]
    fn overflow_drops_the_rest_and_says_so_after_the_rows_held() {
        let h = Handoff::new(3);
        h.push((1..=5).map(row));
        assert_eq!(h.len(), 3);
        let (rows, dirty) = h.take(2);
        assert_eq!(
            rows.iter().map(|r| r.envelope.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(!dirty, "rows still held go first");
        let (rows, dirty) = h.take(10);
        assert_eq!(rows.iter().map(|r| r.envelope.seq).collect::<Vec<_>>(), [3]);
        assert!(dirty, "4 and 5 are only in the outbox");
        let (rows, dirty) = h.take(10);
        assert!(rows.is_empty() && !dirty, "reported once");
        h.store_changed();
        assert!(h.take(10).1, "a write without a hand-off is reported");
    }
}
