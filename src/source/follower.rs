//! Following files: glob, inotify watch, stat poll, reading.
//!
//! Each *generation* (a file as identified by (dev, ino) and its first
//! bytes, see `fingerprint`) is live until it is finished. A live generation
//! is either `Active` (still at a path the pattern matches) or `Rotated`
//! (renamed away, deleted, or displaced by another file at its path): a
//! rotated one is read to its end through the handle we hold, then finished
//! once it has not grown for `rotate_grace`. A new file at a path waits until
//! the generation rotated away from that path is finished, so that per path
//! lines come out in the order they were written.
//!
//! Reading only ever happens in `poll`; the watcher merely says when to
//! look. Every `poll` fstat()s the open handles (finds appends and
//! truncations even with no inotify at all); the glob is re-run when the
//! watcher saw a create/remove/rename or `poll_interval` has passed.
//!
//! Identity on each look (see `fingerprint`): same (dev, ino), first bytes
//! unchanged and no shrinking → same generation; shrunk below what we saw,
//! or first bytes changed → `Truncated`, finished, and the file is found
//! again by the scan as a new generation read from 0. A file at a matching
//! path is skipped only if it is a finished generation unchanged (same
//! inode, size and first bytes); anything else is read — a duplicate read is
//! removed downstream by charge id, a wrongly skipped file would be lost.
//!
//! Where lines can still be lost or misread (each reported where it can be):
//! * bytes appended and then truncated away before we read them, with no
//!   copy matching the glob (copy-then-truncate to a name outside the
//!   glob): `Truncated`. The window is one inotify event, or one
//!   `poll_interval` without inotify.
//! * truncated and rewritten beyond our offset with the same first
//!   `FINGERPRINT_BYTES` bytes between two looks: taken for growth (the
//!   size and first-bytes checks both pass). New PaperCut content starts
//!   with new timestamps within its first KiB, so only a header-only
//!   fingerprint can hide it, and then the offset is within the header.
//! * a rotated file written to after it was finished (no growth for
//!   `rotate_grace`): read again as a new generation if it matches the
//!   glob, else not read.
//! * a file renamed to another directory, or deleted, while we were down
//!   (or closed for being idle) before we read its end: `Lost`.
//! * a file outside the glob reusing the inode of one deleted while we were
//!   down and starting with all of its fingerprinted bytes: taken for it
//!   renamed (see `find_renamed`).
//! * after a restart a generation renamed to another matching name is
//!   followed as an ordinary file (the rotated state is not persisted):
//!   read to its end all the same, just never finished.

use super::fingerprint::{self, file_id, Check, FileId, Fingerprint, StatKey};
use super::watcher::Watch;
use super::{Checkpoint, FollowOptions, Line, LineSplitter, Notice, SourceError, SourceEvent};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{DirEntryExt, FileExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Per generation and poll, at most this many `Lines` batches (so that one
/// file catching up does not hold up the others)...
const MAX_BATCHES_PER_GEN: usize = 4;
/// ...and per poll in all, at most this many batches and bytes read: bounds
/// the memory of one `poll` however many files are behind (e.g. a first
/// start over a year of daily files). The rest comes with the next poll.
const MAX_BATCHES_PER_POLL: usize = 16;
const MAX_BYTES_PER_POLL: u64 = 16 << 20;
/// Open handles kept on idle files still at their path; beyond this the
/// least recently grown are closed and reopened by path when they change.
pub const MAX_OPEN_FILES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Active,
    /// No longer at `from` (the path it was followed at).
    Rotated {
        from: PathBuf,
    },
}

/// Re-reading bytes `0..end` of a resumed generation for `prefix` events.
struct Prefix {
    splitter: LineSplitter,
    queue: VecDeque<Line>,
    end: u64,
}

struct Gen {
    cp: Checkpoint,
    file: Option<File>,
    state: State,
    /// Continues at `cp.offset`; may hold an incomplete last line.
    splitter: LineSplitter,
    /// Complete lines read but not handed over yet (batch limit).
    queue: VecDeque<Line>,
    prefix: Option<Prefix>,
    /// Stat of the open file at the last identity check.
    last_stat: Option<StatKey>,
    /// Last growth or rotation: the grace period counts from here.
    last_change: Instant,
    /// `cp` changed (new, fingerprint grown, moved) and was not handed over.
    unsent: bool,
    /// More to read right now than one poll's share.
    backlog: bool,
    /// An I/O error was reported (once) and not cleared by a success since.
    error: bool,
}

impl Gen {
    fn new(cp: Checkpoint, file: Option<File>, state: State, max_line: usize, now: Instant) -> Gen {
        let prefix = (cp.offset > 0).then(|| Prefix {
            splitter: LineSplitter::new(max_line, 0, 1),
            queue: VecDeque::new(),
            end: cp.offset,
        });
        let mut splitter = LineSplitter::new(max_line, cp.offset, cp.line + 1);
        if cp.offset > 0 {
            // Resumed past the head: how lines end (UTF-16) is in the
            // file's first bytes.
            if let Some(f) = &file {
                let mut head = [0u8; 2];
                if f.read_at(&mut head, 0).is_ok_and(|n| n == 2) {
                    splitter.set_unit(super::LineUnit::from_head(&head));
                }
            }
        }
        Gen {
            splitter,
            cp,
            file,
            state,
            queue: VecDeque::new(),
            prefix,
            last_stat: None,
            last_change: now,
            unsent: false,
            backlog: false,
            error: false,
        }
    }

    fn id(&self) -> FileId {
        (self.cp.dev, self.cp.ino)
    }

    /// Next byte to read.
    fn read_pos(&self) -> u64 {
        self.splitter.offset() + self.splitter.pending_len()
    }

    fn rotated_from(&self) -> Option<&Path> {
        match &self.state {
            State::Rotated { from } => Some(from),
            State::Active => None,
        }
    }
}

enum Look {
    Fine,
    /// Shrank below what we saw, or its first bytes changed.
    Truncated {
        size: u64,
    },
    Failed(io::Error),
}

pub struct Follower {
    opts: FollowOptions,
    matcher: glob::Pattern,
    /// Live generations, in generation order.
    live: Vec<Gen>,
    finished: BTreeMap<u64, Checkpoint>,
    finished_ids: HashMap<FileId, Vec<u64>>,
    /// Files at matching paths known to be finished generations, with the
    /// stat that was checked (skip re-checking them until they change).
    ignored: HashMap<FileId, StatKey>,
    next_generation: u64,
    /// Events produced outside `poll` (by `new`), handed out first.
    pending: Vec<SourceEvent>,
    watch: Option<Watch>,
    last_scan: Option<Instant>,
    force_scan: bool,
    /// Paths reported unreadable (reported again only after a success).
    unreadable: HashSet<PathBuf>,
    max_open: usize,
    buf: Vec<u8>,
}

impl Follower {
    /// Start from the persisted checkpoints (unfinished generations are
    /// resumed at their offset, finished ones are never read again).
    pub fn new(opts: FollowOptions, checkpoints: Vec<Checkpoint>) -> Result<Follower, SourceError> {
        Follower::build(opts, checkpoints, true)
    }

    /// Like `new` but without inotify: only the stat poll (for filesystems
    /// where inotify misbehaves, and for tests).
    pub fn new_polling(
        opts: FollowOptions,
        checkpoints: Vec<Checkpoint>,
    ) -> Result<Follower, SourceError> {
        Follower::build(opts, checkpoints, false)
    }

    fn build(
        mut opts: FollowOptions,
        checkpoints: Vec<Checkpoint>,
        watch: bool,
    ) -> Result<Follower, SourceError> {
        let matcher = match glob::Pattern::new(&opts.pattern) {
            Ok(m) => m,
            Err(e) => {
                return Err(SourceError::Pattern {
                    pattern: opts.pattern.clone(),
                    reason: e.to_string(),
                })
            }
        };
        if opts.pattern.is_empty() {
            return Err(SourceError::Pattern {
                pattern: opts.pattern.clone(),
                reason: "empty".into(),
            });
        }
        opts.read_chunk = opts.read_chunk.max(1);
        opts.max_batch_lines = opts.max_batch_lines.max(1);
        opts.max_line_bytes = opts.max_line_bytes.max(1);
        let mut f = Follower {
            next_generation: checkpoints.iter().map(|c| c.generation).max().unwrap_or(0) + 1,
            buf: vec![0; opts.read_chunk],
            opts,
            matcher,
            live: Vec::new(),
            finished: BTreeMap::new(),
            finished_ids: HashMap::new(),
            ignored: HashMap::new(),
            pending: Vec::new(),
            watch: None,
            last_scan: None,
            force_scan: true,
            unreadable: HashSet::new(),
            max_open: MAX_OPEN_FILES,
        };
        let mut cps = checkpoints;
        // Newest first: should two unfinished generations claim one file,
        // the newer one is the real one.
        cps.sort_by_key(|c| std::cmp::Reverse(c.generation));
        let now = Instant::now();
        let mut events = Vec::new();
        for cp in cps {
            if cp.finished {
                f.add_finished(cp);
            } else {
                f.resume(cp, now, &mut events);
            }
        }
        f.live.sort_by_key(|g| g.cp.generation);
        f.pending = events;
        if watch {
            f.watch = Watch::start(&f.opts.pattern);
        }
        Ok(f)
    }

    /// For tests and tuning: how many idle files may stay open.
    pub fn set_max_open_files(&mut self, n: usize) {
        self.max_open = n.max(1);
    }

    /// Bring back an unfinished generation after a restart.
    fn resume(&mut self, mut cp: Checkpoint, now: Instant, events: &mut Vec<SourceEvent>) {
        let id = (cp.dev, cp.ino);
        let max_line = self.opts.max_line_bytes;
        if self.live.iter().any(|g| g.id() == id) {
            tracing::warn!(path = %cp.path.display(), generation = cp.generation,
                "two unfinished generations for one file; the older is given up");
            let notice = Notice::Lost {
                path: cp.path.clone(),
                generation: cp.generation,
            };
            return self.finish_cp(cp, notice, events);
        }
        match std::fs::metadata(&cp.path) {
            Ok(m) if file_id(&m) == id => {
                // Still where it was; the first look verifies its content.
                let (file, error) = match open_checked(&cp.path, id) {
                    Ok(f) => (f, None),
                    Err(e) => (None, Some(e)),
                };
                let mut g = Gen::new(cp, file, State::Active, max_line, now);
                if let Some(e) = error {
                    // Retried on every scan; reported once.
                    g.error = true;
                    self.report_unreadable(&g.cp.path, &e, events);
                }
                self.live.push(g);
                return;
            }
            Ok(m)
                if file_id(&m).1 == cp.ino
                    && file_id(&m).0 != cp.dev
                    && same_content(&cp.path, &cp) =>
            {
                // NFS renumbers devices on remount; same path, inode and
                // first bytes is the same file.
                tracing::info!(path = %cp.path.display(), "device number changed; same file");
                cp.dev = file_id(&m).0;
                let file = open_checked(&cp.path, (cp.dev, cp.ino)).ok().flatten();
                self.live
                    .push(Gen::new(cp, file, State::Active, max_line, now));
                return;
            }
            _ => {}
        }
        // Renamed while we were down?
        if let Some((path, file)) = find_renamed(&cp, &self.matcher) {
            let from = std::mem::replace(&mut cp.path, path);
            events.push(SourceEvent::Notice(Notice::Rotated {
                path: from.clone(),
                generation: cp.generation,
            }));
            let mut g = Gen::new(cp, Some(file), State::Rotated { from }, max_line, now);
            g.unsent = true;
            self.live.push(g);
            return;
        }
        tracing::warn!(path = %cp.path.display(), generation = cp.generation, offset = cp.offset,
            "file followed before the restart is gone");
        let notice = Notice::Lost {
            path: cp.path.clone(),
            generation: cp.generation,
        };
        self.finish_cp(cp, notice, events);
    }

    /// One pass: rescan the glob when due or when the watcher saw a change,
    /// detect rotation/truncation, read whatever complete lines are there
    /// (bounded per call), finish rotated files past their grace period.
    /// Never blocks waiting for data.
    pub fn poll(&mut self) -> Result<Vec<SourceEvent>, SourceError> {
        let now = Instant::now();
        let mut events = std::mem::take(&mut self.pending);
        let seen = self.watch.as_ref().map(|w| w.take()).unwrap_or_default();
        let due = self
            .last_scan
            .is_none_or(|t| now.duration_since(t) >= self.opts.poll_interval);
        let mut scan = due || seen.scan || self.force_scan;
        let mut budget = Budget::new();
        // A finish can unblock a path, a truncation needs the file found
        // again: a few rounds so that happens within this call.
        for _ in 0..3 {
            if scan {
                self.force_scan = false;
                self.last_scan = Some(now);
                if let Some(w) = self.watch.as_mut() {
                    w.ensure();
                }
                self.scan(now, &mut events);
            } else {
                self.reopen_dirty(&seen.dirty);
            }
            self.read_pass(now, &mut events, &mut budget);
            if !self.force_scan {
                break;
            }
            scan = true;
        }
        self.limit_open_files();
        Ok(events)
    }

    /// Block until the watcher reports a change or `timeout` passes. Returns
    /// earlier when there is work already (backlog, a scan or a rotation
    /// grace period due), so a long timeout never delays the stat poll.
    pub fn wait(&mut self, timeout: Duration) {
        let now = Instant::now();
        if !self.pending.is_empty() || self.force_scan || self.live.iter().any(|g| g.backlog) {
            return;
        }
        let mut limit = timeout;
        if let Some(t) = self.last_scan {
            limit = limit.min((t + self.opts.poll_interval).saturating_duration_since(now));
        }
        for g in &self.live {
            if g.rotated_from().is_some() {
                let due = g.last_change + self.opts.rotate_grace;
                limit = limit.min(due.saturating_duration_since(now));
            }
        }
        match &self.watch {
            Some(w) => w.wait(limit),
            None => std::thread::sleep(limit),
        }
    }

    /// The current checkpoint of every generation known (for status/lag).
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        let mut all: Vec<Checkpoint> = self.finished.values().cloned().collect();
        all.extend(self.live.iter().map(|g| g.cp.clone()));
        all.sort_by_key(|c| c.generation);
        all
    }

    // ---- scanning ------------------------------------------------------

    fn scan(&mut self, now: Instant, events: &mut Vec<SourceEvent>) {
        let found = self.glob(events);
        let mut by_id: HashMap<FileId, Vec<usize>> = HashMap::new();
        for (i, (_, m)) in found.iter().enumerate() {
            by_id.entry(file_id(m)).or_default().push(i);
        }
        let mut claimed: HashSet<FileId> = HashSet::new();

        // 1. Where are the live generations now?
        let mut i = 0;
        while i < self.live.len() {
            let id = self.live[i].id();
            if let Some(ix) = by_id.get(&id) {
                claimed.insert(id);
                let g = &mut self.live[i];
                let here = ix.iter().any(|&k| found[k].0 == g.cp.path);
                if !here {
                    // Renamed to another matching name: same generation,
                    // never read again from 0.
                    let to = found[ix[0]].0.clone();
                    let from = std::mem::replace(&mut g.cp.path, to);
                    g.unsent = true;
                    if g.state == State::Active {
                        g.state = State::Rotated { from: from.clone() };
                        g.last_change = now;
                        events.push(SourceEvent::Notice(Notice::Rotated {
                            path: from,
                            generation: g.cp.generation,
                        }));
                    }
                }
                if g.file.is_none() {
                    let (path, meta) = &found[ix[0]];
                    self.reopen(i, path.clone(), meta, events);
                }
                i += 1;
                continue;
            }
            if self.live[i].state != State::Active && self.live[i].file.is_some() {
                i += 1;
                continue;
            }
            if self.displace(i, now, events) {
                i += 1;
            }
        }

        // 2. New files.
        let mut ignored = HashMap::new();
        for (path, meta) in &found {
            let id = file_id(meta);
            if !claimed.insert(id) {
                continue;
            }
            let key = StatKey::of(meta);
            if self.is_finished_file(id, key, path) {
                ignored.insert(id, key);
                continue;
            }
            if self
                .live
                .iter()
                .any(|g| g.rotated_from() == Some(path.as_path()))
            {
                // Wait for the generation rotated away from this path.
                continue;
            }
            self.open_new(path, id, now, events);
        }
        self.ignored = ignored;
    }

    /// A live generation is no longer at any matching path. Returns whether
    /// it is still live.
    fn displace(&mut self, i: usize, now: Instant, events: &mut Vec<SourceEvent>) -> bool {
        let g = &mut self.live[i];
        if g.file.is_some() {
            // We hold it open: read it to its end. Where did it go (for
            // status, and for a restart in the meantime)?
            let from = g.cp.path.clone();
            if let Some(p) = find_in_dir(&from, g.id()) {
                g.cp.path = p;
            }
            tracing::info!(path = %from.display(), generation = g.cp.generation,
                now_at = %g.cp.path.display(), "rotated");
            events.push(SourceEvent::Notice(Notice::Rotated {
                path: from.clone(),
                generation: g.cp.generation,
            }));
            g.state = State::Rotated { from };
            g.last_change = now;
            g.unsent = true;
            return true;
        }
        // Closed while idle (or unreadable): look for it by identity.
        if let Some((p, file)) = find_renamed(&g.cp, &self.matcher) {
            let from = std::mem::replace(&mut g.cp.path, p);
            events.push(SourceEvent::Notice(Notice::Rotated {
                path: from.clone(),
                generation: g.cp.generation,
            }));
            if g.state == State::Active {
                g.state = State::Rotated { from };
            }
            g.file = Some(file);
            g.last_stat = None;
            g.last_change = now;
            g.unsent = true;
            return true;
        }
        let g = self.live.remove(i);
        let notice = if g.cp.size <= g.cp.offset && g.splitter.pending_len() == 0 {
            // Nothing was left unread when we last saw it.
            Notice::Finished {
                path: g.cp.path.clone(),
                generation: g.cp.generation,
            }
        } else {
            tracing::warn!(path = %g.cp.path.display(), generation = g.cp.generation,
                "file gone before it was read to its end");
            Notice::Lost {
                path: g.cp.path.clone(),
                generation: g.cp.generation,
            }
        };
        self.finish_cp(g.cp, notice, events);
        self.force_scan = true;
        false
    }

    fn glob(&mut self, events: &mut Vec<SourceEvent>) -> Vec<(PathBuf, Metadata)> {
        let mut found = Vec::new();
        let paths = match glob::glob(&self.opts.pattern) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(pattern = %self.opts.pattern, error = %e, "bad pattern");
                return found;
            }
        };
        for entry in paths {
            match entry {
                Ok(path) => match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => found.push((path, m)),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => self.report_unreadable(&path, &e, events),
                },
                Err(e) => tracing::warn!(error = %e, "cannot list part of the pattern; going on"),
            }
        }
        found
    }

    /// Is the file at `path` a finished generation, unchanged? Same inode,
    /// same size, same first bytes. Anything else that reuses the inode is a
    /// new generation (read from 0; duplicates are dropped downstream by
    /// charge id, while a file wrongly skipped would be lost).
    fn is_finished_file(&self, id: FileId, key: StatKey, path: &Path) -> bool {
        let Some(gens) = self.finished_ids.get(&id) else {
            return false;
        };
        if self.ignored.get(&id) == Some(&key) {
            return true;
        }
        let file = match open_checked(path, id) {
            Ok(Some(f)) => f,
            _ => return false,
        };
        gens.iter().filter_map(|g| self.finished.get(g)).any(|cp| {
            cp.size == key.size
                && matches!(
                    fingerprint::check(&file, key.size, cp.fp_len, &cp.fingerprint),
                    Ok(Check::Same | Check::Grown(_))
                )
        })
    }

    fn open_new(&mut self, path: &Path, id: FileId, now: Instant, events: &mut Vec<SourceEvent>) {
        let file = match open_checked(path, id) {
            Ok(Some(f)) => f,
            Ok(None) => {
                // Replaced between glob and open: look again soon.
                self.force_scan = true;
                return;
            }
            Err(e) => return self.report_unreadable(path, &e, events),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return self.report_unreadable(path, &e, events),
        };
        let fp = match Fingerprint::of_file(&file, meta.len()) {
            Ok(fp) => fp,
            Err(e) => return self.report_unreadable(path, &e, events),
        };
        self.unreadable.remove(path);
        let generation = self.next_generation;
        self.next_generation += 1;
        let cp = Checkpoint {
            generation,
            path: path.to_path_buf(),
            dev: id.0,
            ino: id.1,
            fp_len: fp.len,
            fingerprint: fp.hash,
            offset: 0,
            line: 0,
            size: meta.len(),
            finished: false,
        };
        tracing::info!(path = %path.display(), generation, "following");
        events.push(SourceEvent::Notice(Notice::Opened {
            path: path.to_path_buf(),
            generation,
        }));
        let mut g = Gen::new(cp, Some(file), State::Active, self.opts.max_line_bytes, now);
        g.unsent = true;
        self.live.push(g);
    }

    /// Reopen an idle generation (closed by `limit_open_files`, or
    /// unreadable so far) when its file changed.
    fn reopen(&mut self, i: usize, path: PathBuf, meta: &Metadata, events: &mut Vec<SourceEvent>) {
        let g = &mut self.live[i];
        if g.last_stat == Some(StatKey::of(meta)) {
            return;
        }
        match open_checked(&path, g.id()) {
            Ok(Some(f)) => {
                g.file = Some(f);
                // Verify it from scratch on the next look.
                g.last_stat = None;
                self.unreadable.remove(&path);
            }
            Ok(None) => self.force_scan = true,
            Err(e) => {
                let generation = g.cp.generation;
                if !g.error {
                    g.error = true;
                    tracing::warn!(path = %path.display(), generation, error = %e, "unreadable");
                    events.push(SourceEvent::Notice(Notice::Unreadable {
                        path,
                        error: e.to_string(),
                    }));
                }
            }
        }
    }

    /// Without a scan: reopen closed generations whose path was written to.
    fn reopen_dirty(&mut self, dirty: &HashSet<PathBuf>) {
        if dirty.is_empty() {
            return;
        }
        for i in 0..self.live.len() {
            let g = &self.live[i];
            if g.file.is_none() && dirty.contains(&g.cp.path) {
                let path = g.cp.path.clone();
                if let Ok(m) = std::fs::metadata(&path) {
                    if file_id(&m) == g.id() {
                        let mut ignore = Vec::new();
                        self.reopen(i, path, &m, &mut ignore);
                        continue;
                    }
                }
                // Gone from its path: the scan sorts it out.
                self.force_scan = true;
            }
        }
    }

    // ---- reading -------------------------------------------------------

    fn read_pass(&mut self, now: Instant, events: &mut Vec<SourceEvent>, budget: &mut Budget) {
        let mut i = 0;
        while i < self.live.len() {
            if self.live[i].file.is_none() {
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
    fn look(&mut self, i: usize, now: Instant) -> Look {
        let g = &mut self.live[i];
        let Some(file) = g.file.as_ref() else {
            return Look::Fine;
        };
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

    fn truncated(&mut self, i: usize, size: u64, events: &mut Vec<SourceEvent>) {
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

    fn read_failed(&mut self, i: usize, e: &io::Error, events: &mut Vec<SourceEvent>) {
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

    /// Finish a rotated generation read to its end with no growth for the
    /// grace period (or failing for that long). Returns whether it finished.
    fn maybe_finish(&mut self, i: usize, now: Instant, events: &mut Vec<SourceEvent>) -> bool {
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
    fn finish_cp(&mut self, mut cp: Checkpoint, notice: Notice, events: &mut Vec<SourceEvent>) {
        cp.finished = true;
        events.push(lines_event(&cp, Vec::new(), false));
        events.push(SourceEvent::Notice(notice));
        self.add_finished(cp);
    }

    fn add_finished(&mut self, cp: Checkpoint) {
        self.finished_ids
            .entry((cp.dev, cp.ino))
            .or_default()
            .push(cp.generation);
        self.finished.insert(cp.generation, cp);
    }

    fn report_unreadable(&mut self, path: &Path, e: &io::Error, events: &mut Vec<SourceEvent>) {
        if self.unreadable.insert(path.to_path_buf()) {
            tracing::warn!(path = %path.display(), error = %e, "unreadable; going on with the others");
            events.push(SourceEvent::Notice(Notice::Unreadable {
                path: path.to_path_buf(),
                error: e.to_string(),
            }));
        }
    }

    /// Close the least recently grown idle files beyond `max_open`.
    fn limit_open_files(&mut self) {
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

fn lines_event(cp: &Checkpoint, lines: Vec<Line>, prefix: bool) -> SourceEvent {
    SourceEvent::Lines {
        checkpoint: cp.clone(),
        lines,
        prefix,
    }
}

/// Hand over up to `max` queued lines; the checkpoint moves past them.
fn emit_batch(g: &mut Gen, max: usize, events: &mut Vec<SourceEvent>) {
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
fn read_gen(
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

fn read_share(
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

/// What one `poll` may still read.
struct Budget {
    batches: usize,
    bytes: u64,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            batches: MAX_BATCHES_PER_POLL,
            bytes: MAX_BYTES_PER_POLL,
        }
    }

    fn spent(&self) -> bool {
        self.batches == 0 || self.bytes == 0
    }
}

/// Read chunks into the splitter until `want` lines are queued, the end of
/// the file (or `end`) is reached — returns true — or the budget is spent.
fn fill(
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

/// Open `path` if it still is the file `id` (`None` if it is another one).
fn open_checked(path: &Path, id: FileId) -> io::Result<Option<File>> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    Ok((file_id(&meta) == id).then_some(file))
}

/// Does the file at `path` start with the checkpoint's fingerprinted bytes
/// and hold at least its offset?
fn same_content(path: &Path, cp: &Checkpoint) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    meta.len() >= cp.offset
        && matches!(
            fingerprint::check(&file, meta.len(), cp.fp_len, &cp.fingerprint),
            Ok(Check::Same | Check::Grown(_))
        )
}

/// A file with identity `id` in the directory of `path`, other than `path`.
fn find_in_dir(path: &Path, id: FileId) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        // d_ino first: no stat for the other files.
        if entry.ino() != id.1 {
            continue;
        }
        let p = entry.path();
        if p == path {
            continue;
        }
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            if m.is_file() && file_id(&m) == id {
                return Some(p);
            }
        }
    }
    None
}

/// The checkpoint's file renamed within its directory (we were down, or it
/// was closed while idle): same (dev, ino), same first bytes, at least the
/// offset. Returns the new path and an open handle.
///
/// ext4 hands a freed inode to the next file created, so the file found may
/// instead be a new one that starts with the same bytes as ours (all of
/// them when ours was under `FINGERPRINT_BYTES`, e.g. a header only). Inside
/// the glob that is harmless: it would be read anyway, and the same bytes
/// give the same charge ids. Outside the glob its lines would be taken for
/// ours: a residual risk we accept, as in a PaperCut directory a file with
/// the same header is a transaction file too — except with an empty
/// fingerprint, which proves nothing.
fn find_renamed(cp: &Checkpoint, glob: &glob::Pattern) -> Option<(PathBuf, File)> {
    let id = (cp.dev, cp.ino);
    let p = find_in_dir(&cp.path, id)?;
    if cp.fp_len == 0 && !glob.matches_path(&p) {
        tracing::warn!(path = %cp.path.display(), candidate = %p.display(),
            "a file outside the pattern has the inode of an empty file we followed; not taken for it");
        return None;
    }
    let file = open_checked(&p, id).ok().flatten()?;
    let meta = file.metadata().ok()?;
    let same = meta.len() >= cp.offset
        && matches!(
            fingerprint::check(&file, meta.len(), cp.fp_len, &cp.fingerprint),
            Ok(Check::Same | Check::Grown(_))
        );
    same.then_some((p, file))
}
