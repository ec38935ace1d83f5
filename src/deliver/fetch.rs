//! Where a round's charges come from: the hand-off while it continues the
//! outbox without a gap, else the outbox itself.

use super::*;

impl<S: Sink> Deliverer<S> {
    /// Forget what is known in memory: the next round reads the outbox from
    /// the start (an operator's change, another process's). Only with
    /// nothing in flight (see `reread_due`), or the charges in flight would
    /// be read back as pending and sent again.
    pub(super) fn reread(&mut self) {
        debug_assert!(self.inflight.is_empty());
        self.queue.clear();
        self.known_to = 0;
        self.behind = true;
        self.head = None;
    }

    /// Fill `queue` up to a batch: from the hand-off while it continues the
    /// outbox without a gap, else from the outbox.
    pub(super) async fn fill(&mut self) -> Result<(), StoreError> {
        if !self.behind {
            let room = self.batch.saturating_sub(self.queue.len());
            if room > 0 {
                let (rows, dirty) = self.handoff.take(room);
                self.behind |= dirty;
                for r in rows {
                    let seq = r.envelope.seq;
                    if seq <= self.known_to {
                        // Already read from the outbox.
                        continue;
                    }
                    if seq != self.known_to + 1 {
                        // Another writer's row may sit in the gap: the
                        // outbox has it (and these).
                        self.behind = true;
                        break;
                    }
                    self.known_to = seq;
                    self.queue.push_back(r);
                }
            }
        }
        if self.behind && self.queue.len() < self.batch {
            let limit = self.batch - self.queue.len();
            // The rows after every seq being recorded can be read beside
            // the record; anything else waits for it (a retry's schedule).
            let beside = self
                .recording
                .as_ref()
                .is_some_and(|r| r.last_seq <= self.known_to);
            let after = self.known_to;
            let read = move |st: &mut Store| st.pending_after(after, limit);
            let (rows, top) = match &self.reader {
                Some(reader) if beside => on_blocking(reader, read).await?,
                _ => {
                    self.settle().await?;
                    self.blocking(read).await?
                }
            };
            Stats::add(&self.stats.deliver_store_reads, 1);
            if rows.len() < limit {
                self.known_to = self.known_to.max(top);
                self.behind = false;
            } else if let Some(last) = rows.last() {
                self.known_to = last.envelope.seq;
            }
            self.queue.extend(rows);
        }
        Ok(())
    }
}
