//! Finishing: a generation ends when it was truncated, or rotated away and
//! read to its end with no growth for the grace period; its last
//! checkpoint is handed over, then the notice. Also closing idle files.

use std::time::Instant;

use super::read::emit_batch;
use super::read::lines_event;
use super::{Checkpoint, Follower, Notice, SourceEvent, State};

impl Follower {
    pub(super) fn truncated(&mut self, i: usize, size: u64, events: &mut Vec<SourceEvent>) {
        let mut g = self.live.remove(i);
        // Lines already read were complete in the file: hand them over.
        while !g.queue.is_empty() {
            emit_batch(&mut g, self.opts.max_batch_lines, events);
        }
        tracing::warn!(path = %g.cp.path.display(), generation = g.cp.generation,
            offset = g.cp.offset, size, "file truncated; reading it again from the start");
        let notice = Notice::Truncated {
            path: g.cp.path.clone(),
            offset: g.cp.offset,
            size,
        };
        let pending = g.splitter.pending_len();
        if pending > 0 {
            events.push(SourceEvent::Notice(Notice::Unterminated {
                path: g.cp.path.clone(),
                generation: g.cp.generation,
                offset: g.cp.offset,
                len: pending,
                line: g.cp.line + 1,
                bytes: g.splitter.pending_bytes().to_vec(),
            }));
        }
        // The truncated file is found again by the scan as a new generation
        // (its size or first bytes no longer match the finished one).
        self.finish_cp(g.cp, notice, events);
        self.force_scan = true;
    }

    /// Finish a rotated generation read to its end with no growth for the
    /// grace period (or failing for that long). Returns whether it finished.
    pub(super) fn maybe_finish(
        &mut self,
        i: usize,
        now: Instant,
        events: &mut Vec<SourceEvent>,
    ) -> bool {
        let g = &self.live[i];
        if g.rotated_from().is_none()
            || now.duration_since(g.last_change) < self.opts.rotate_grace
            || !(g.error || (!g.backlog && g.queue.is_empty() && g.prefix.is_none()))
        {
            return false;
        }
        let g = self.live.remove(i);
        let path = g.cp.path.clone();
        let generation = g.cp.generation;
        let pending = g.splitter.pending_len();
        if pending > 0 {
            // Never completed: never handed over (it is not a whole line).
            tracing::warn!(path = %path.display(), generation, offset = g.cp.offset,
                len = pending, "finished with an incomplete last line; not emitted");
            events.push(SourceEvent::Notice(Notice::Unterminated {
                path: path.clone(),
                generation,
                offset: g.cp.offset,
                len: pending,
                line: g.cp.line + 1,
                bytes: g.splitter.pending_bytes().to_vec(),
            }));
        }
        let notice = if g.error {
            Notice::Lost { path, generation }
        } else {
            tracing::info!(path = %path.display(), generation, "finished");
            Notice::Finished { path, generation }
        };
        self.finish_cp(g.cp, notice, events);
        // The path it was rotated from may hold a new file waiting for us.
        self.force_scan = true;
        true
    }

    /// Mark finished, hand over the final checkpoint, then the notice.
    pub(super) fn finish_cp(
        &mut self,
        mut cp: Checkpoint,
        notice: Notice,
        events: &mut Vec<SourceEvent>,
    ) {
        cp.finished = true;
        events.push(lines_event(&cp, Vec::new(), false));
        events.push(SourceEvent::Notice(notice));
        self.add_finished(cp);
    }

    pub(super) fn add_finished(&mut self, cp: Checkpoint) {
        self.finished_ids
            .entry((cp.dev, cp.ino))
            .or_default()
            .push(cp.generation);
        self.finished.insert(cp.generation, cp);
    }

    /// Close the least recently grown idle files beyond `max_open`.
    pub(super) fn limit_open_files(&mut self) {
        let open = self.live.iter().filter(|g| g.file.is_some()).count();
        if open <= self.max_open {
            return;
        }
        let mut idle: Vec<usize> = (0..self.live.len())
            .filter(|&i| {
                let g = &self.live[i];
                g.file.is_some()
                    && g.state == State::Active
                    && !g.backlog
                    && g.queue.is_empty()
                    && g.prefix.is_none()
            })
            .collect();
        idle.sort_by_key(|&i| self.live[i].last_change);
        for i in idle.into_iter().take(open - self.max_open) {
            let g = &mut self.live[i];
            tracing::debug!(path = %g.cp.path.display(), "closing idle file");
            g.file = None;
        }
    }
}
