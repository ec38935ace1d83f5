//! Reading: the identity check of each open generation on every poll, and
//! reading its complete lines (a resumed generation's prefix first) within
//! the poll's budget, handed over as `Lines` batches.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use super::super::fingerprint::{self, Check, StatKey};
use super::{
    Checkpoint, FollowOptions, Follower, Gen, Line, LineSplitter, Look, Notice, SourceEvent,
    MAX_BATCHES_PER_GEN, MAX_BATCHES_PER_POLL, MAX_BYTES_PER_POLL,
};

impl Follower {
    /// `written`: paths the watcher saw written to since the last poll.
    pub(super) fn read_pass(
        &mut self,
        now: Instant,
        written: &HashSet<PathBuf>,
        events: &mut Vec<SourceEvent>,
        budget: &mut Budget,
    ) {
        let mut i = 0;
        while i < self.live.len() {
            let g = &self.live[i];
            if g.file.is_none() || !g.look_due(now, &self.opts, written.contains(&g.cp.path)) {
                i += 1;
                continue;
            }
            match self.look(i, now) {
                Look::Fine => {}
                Look::Truncated { size } => {
                    self.truncated(i, size, events);
                    continue;
                }
                Look::Failed(e) => {
                    self.read_failed(i, &e, events);
                    if !self.maybe_finish(i, now, events) {
                        i += 1;
                    }
                    continue;
                }
            }
            let g = &mut self.live[i];
            match read_gen(g, &self.opts, &mut self.buf, now, events, budget) {
                Ok(()) => g.error = false,
                Err(e) => self.read_failed(i, &e, events),
            }
            let g = &mut self.live[i];
            // Not in the middle of a prefix re-read: the consumer may treat
            // the first non-prefix event as the end of the prefix.
            if g.unsent && g.prefix.is_none() {
                g.unsent = false;
                events.push(lines_event(&g.cp, Vec::new(), false));
            }
            if !self.maybe_finish(i, now, events) {
                i += 1;
            }
        }
    }

    /// Identity check of an open generation, when its stat changed.
    pub(super) fn look(&mut self, i: usize, now: Instant) -> Look {
        if self.live[i].file.is_some() {
            self.looks += 1;
        }
        let g = &mut self.live[i];
        let Some(file) = g.file.as_ref() else {
            return Look::Fine;
        };
        g.last_look = Some(now);
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Look::Failed(e),
        };
        let key = StatKey::of(&meta);
        if g.last_stat == Some(key) {
            return Look::Fine;
        }
        let size = meta.len();
        // Files only ever shrink by truncation: fewer bytes than we read,
        // committed or saw is a truncation even if it has regrown since.
        if size < g.read_pos().max(g.cp.offset).max(g.cp.size) {
            return Look::Truncated { size };
        }
        match fingerprint::check(file, size, g.cp.fp_len, &g.cp.fingerprint) {
            Ok(Check::Same) => {}
            Ok(Check::Grown(fp)) => {
                g.cp.fp_len = fp.len;
                g.cp.fingerprint = fp.hash;
                g.unsent = true;
            }
            // Truncated and rewritten past our offset (copy-truncate caught
            // late), or rewritten in place.
            Ok(Check::Differs) => return Look::Truncated { size },
            Err(e) => return Look::Failed(e),
        }
        if size > g.cp.size {
            g.last_change = now;
        }
        g.cp.size = size;
        g.last_stat = Some(key);
        Look::Fine
    }

    pub(super) fn read_failed(&mut self, i: usize, e: &io::Error, events: &mut Vec<SourceEvent>) {
        let g = &mut self.live[i];
        if !g.error {
            g.error = true;
            tracing::warn!(path = %g.cp.path.display(), generation = g.cp.generation,
                error = %e, "cannot read; retrying");
            events.push(SourceEvent::Notice(Notice::Unreadable {
                path: g.cp.path.clone(),
                error: e.to_string(),
            }));
        }
    }
}

pub(super) fn lines_event(cp: &Checkpoint, lines: Vec<Line>, prefix: bool) -> SourceEvent {
    SourceEvent::Lines {
        checkpoint: cp.clone(),
        lines,
        prefix,
    }
}

/// Hand over up to `max` queued lines; the checkpoint moves past them.
pub(super) fn emit_batch(g: &mut Gen, max: usize, events: &mut Vec<SourceEvent>) {
    let n = g.queue.len().min(max);
    let lines: Vec<Line> = g.queue.drain(..n).collect();
    let Some(last) = lines.last() else { return };
    g.cp.line = last.number;
    g.cp.offset = g.queue.front().map_or(g.splitter.offset(), |l| l.offset);
    g.cp.size = g.cp.size.max(g.read_pos());
    g.unsent = false;
    events.push(lines_event(&g.cp, lines, false));
}

/// Read a generation's share for this poll: its prefix first (after a
/// restart), then new complete lines.
pub(super) fn read_gen(
    g: &mut Gen,
    opts: &FollowOptions,
    buf: &mut [u8],
    now: Instant,
    events: &mut Vec<SourceEvent>,
    budget: &mut Budget,
) -> io::Result<()> {
    // Taken out so that `g` can be borrowed whole while reading.
    let Some(file) = g.file.take() else {
        return Ok(());
    };
    let r = read_share(g, &file, opts, buf, now, events, budget);
    g.file = Some(file);
    r
}

pub(super) fn read_share(
    g: &mut Gen,
    file: &File,
    opts: &FollowOptions,
    buf: &mut [u8],
    now: Instant,
    events: &mut Vec<SourceEvent>,
    budget: &mut Budget,
) -> io::Result<()> {
    let max = opts.max_batch_lines;
    let mut batches = 0;
    g.backlog = false;
    if budget.spent() {
        g.backlog = true;
        return Ok(());
    }
    // One more batch handed over: is this generation's share used up?
    let over = |batches: usize, budget: &mut Budget| {
        budget.batches = budget.batches.saturating_sub(1);
        batches >= MAX_BATCHES_PER_GEN || budget.spent()
    };
    if let Some(p) = g.prefix.as_mut() {
        loop {
            let end = Some(p.end);
            let eof = fill(file, &mut p.splitter, &mut p.queue, end, max, buf, budget)?;
            if !p.queue.is_empty() {
                let n = p.queue.len().min(max);
                let lines: Vec<Line> = p.queue.drain(..n).collect();
                events.push(lines_event(&g.cp, lines, true));
                batches += 1;
                if over(batches, budget) && !(eof && p.queue.is_empty()) {
                    g.backlog = true;
                    return Ok(());
                }
            }
            if eof && p.queue.is_empty() {
                g.prefix = None;
                break;
            }
            if budget.bytes == 0 {
                g.backlog = true;
                return Ok(());
            }
        }
        if batches >= MAX_BATCHES_PER_GEN || budget.spent() {
            g.backlog = true;
            return Ok(());
        }
    }
    loop {
        let before = g.read_pos();
        // Only up to the size the identity check saw: then the fingerprint
        // always covers the first min(offset, FINGERPRINT_BYTES) bytes, and
        // bytes written meanwhile are checked by the next look first.
        let end = Some(g.cp.size);
        let eof = fill(file, &mut g.splitter, &mut g.queue, end, max, buf, budget)?;
        if g.read_pos() > before {
            g.last_change = now;
        }
        let mut stop = false;
        if !g.queue.is_empty() {
            emit_batch(g, max, events);
            batches += 1;
            stop = over(batches, budget);
        }
        if eof && g.queue.is_empty() {
            break;
        }
        if stop || budget.bytes == 0 {
            g.backlog = true;
            break;
        }
    }
    g.cp.size = g.cp.size.max(g.read_pos());
    Ok(())
}

/// Read chunks into the splitter until `want` lines are queued, the end of
/// the file (or `end`) is reached — returns true — or the budget is spent.
pub(super) fn fill(
    file: &File,
    splitter: &mut LineSplitter,
    queue: &mut VecDeque<Line>,
    end: Option<u64>,
    want: usize,
    buf: &mut [u8],
    budget: &mut Budget,
) -> io::Result<bool> {
    let mut out = Vec::new();
    while queue.len() < want {
        if budget.bytes == 0 {
            return Ok(false);
        }
        let pos = splitter.offset() + splitter.pending_len();
        let mut n = buf.len();
        if let Some(end) = end {
            if pos >= end {
                return Ok(true);
            }
            n = n.min(usize::try_from(end - pos).unwrap_or(usize::MAX));
        }
        let got = match file.read_at(&mut buf[..n], pos) {
            Ok(0) => return Ok(true),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        budget.bytes = budget.bytes.saturating_sub(got as u64);
        splitter.feed(&buf[..got], &mut out);
        queue.extend(out.drain(..));
    }
    Ok(false)
}

/// What one `poll` may still read.
pub(super) struct Budget {
    batches: usize,
    bytes: u64,
}

impl Budget {
    pub(super) fn new() -> Budget {
        Budget {
            batches: MAX_BATCHES_PER_POLL,
            bytes: MAX_BYTES_PER_POLL,
        }
    }

    pub(super) fn spent(&self) -> bool {
        self.batches == 0 || self.bytes == 0
    }
}
