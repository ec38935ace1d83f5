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
//!   `poll_interval` without inotify (`idle_poll_interval` for a file idle
//!   for `idle_after`).
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
//!
//! Parts: `scan` (the glob, where each generation is now, new files),
//! `read` (identity check, reading lines within the poll's budget),
//! `finish` (truncated and rotated generations ending, idle files closed).

mod finish;
mod read;
mod scan;

use super::fingerprint::{file_id, FileId, StatKey};
use super::watcher::{Bell, Watch};
use super::{Checkpoint, FollowOptions, Line, LineSplitter, Notice, SourceError, SourceEvent};
use read::Budget;
use scan::{find_renamed, open_checked, same_content};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io;
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
    /// Last identity check (`look`): an idle generation is looked at only
    /// every `idle_poll_interval`.
    last_look: Option<Instant>,
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
                if std::os::unix::fs::FileExt::read_at(f, &mut head, 0).is_ok_and(|n| n == 2) {
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
            last_look: None,
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

    /// Nothing to do for it but notice a change: still at its path, all
    /// read and handed over, not grown for `idle_after`.
    fn idle(&self, now: Instant, opts: &FollowOptions) -> bool {
        self.state == State::Active
            && !self.backlog
            && !self.unsent
            && !self.error
            && self.queue.is_empty()
            && self.prefix.is_none()
            && now.duration_since(self.last_change) >= opts.idle_after
    }

    /// Is an identity check due on this poll? Always, unless it is idle,
    /// was looked at within `idle_poll_interval` and no write to it was seen.
    fn look_due(&self, now: Instant, opts: &FollowOptions, written: bool) -> bool {
        written
            || !self.idle(now, opts)
            || self
                .last_look
                .is_none_or(|t| now.duration_since(t) >= opts.idle_poll_interval)
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

/// The next generation number to hand out.
#[derive(Debug, Clone, Default)]
pub struct Generations(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Generations {
    /// Numbers after every generation in `known`.
    pub fn after(known: &[Checkpoint]) -> Generations {
        let next = known.iter().map(|c| c.generation).max().unwrap_or(0) + 1;
        Generations(std::sync::Arc::new(next.into()))
    }

    fn next(&self) -> u64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
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
    next_generation: Generations,
    /// Events produced outside `poll` (by `new`), handed out first.
    pending: Vec<SourceEvent>,
    watch: Option<Watch>,
    last_scan: Option<Instant>,
    /// Last event handed out (or the start): the follower is *quiet* (glob
    /// at `idle_poll_interval`) once this is `idle_after` ago.
    last_activity: Instant,
    /// Identity checks (fstat) done: how much an idle follower still works.
    looks: u64,
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
            next_generation: Generations::after(&checkpoints),
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
            last_activity: Instant::now(),
            looks: 0,
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

    /// Draw generation numbers from `g`, shared by the followers of one
    /// state database (the number is the files table's key across sources).
    pub fn share_generations(&mut self, g: &Generations) {
        g.0.fetch_max(
            self.next_generation
                .0
                .load(std::sync::atomic::Ordering::Relaxed),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.next_generation = g.clone();
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
        let every = self.scan_every(now);
        let due = self
            .last_scan
            .is_none_or(|t| now.duration_since(t) >= every);
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
            self.read_pass(now, &seen.dirty, &mut events, &mut budget);
            if !self.force_scan {
                break;
            }
            scan = true;
        }
        self.limit_open_files();
        if !events.is_empty() {
            self.last_activity = now;
        }
        Ok(events)
    }

    /// The glob's period: `poll_interval`, or `idle_poll_interval` (if
    /// longer) once nothing has happened for `idle_after` and every file is
    /// idle.
    pub fn scan_every(&self, now: Instant) -> Duration {
        let quiet = now.duration_since(self.last_activity) >= self.opts.idle_after
            && self.live.iter().all(|g| g.idle(now, &self.opts));
        if quiet {
            self.opts.poll_interval.max(self.opts.idle_poll_interval)
        } else {
            self.opts.poll_interval
        }
    }

    /// Block until the watcher reports a change or `timeout` passes. Returns
    /// earlier when there is work already (backlog, a scan or a rotation
    /// grace period due), so a long timeout never delays the stat poll.
    pub fn wait(&mut self, timeout: Duration) {
        let limit = self.wait_limit(timeout);
        if limit.is_zero() {
            return;
        }
        match &self.watch {
            Some(w) => w.wait(limit),
            None => std::thread::sleep(limit),
        }
    }

    /// Also ring `bell` when this follower's watcher sees a change: one
    /// thread following several sources waits on the bell (`Bell::wait`
    /// for the least `wait_limit` of them).
    pub fn set_bell(&mut self, bell: Bell) {
        if let Some(w) = &self.watch {
            w.set_bell(bell);
        }
    }

    /// How long `wait` may block at most: zero when there is work already
    /// (backlog, a scan or a rotation grace period due).
    pub fn wait_limit(&self, timeout: Duration) -> Duration {
        let now = Instant::now();
        if !self.pending.is_empty() || self.force_scan || self.live.iter().any(|g| g.backlog) {
            return Duration::ZERO;
        }
        let mut limit = timeout;
        if let Some(t) = self.last_scan {
            limit = limit.min((t + self.scan_every(now)).saturating_duration_since(now));
        }
        for g in &self.live {
            if g.rotated_from().is_some() {
                let due = g.last_change + self.opts.rotate_grace;
                limit = limit.min(due.saturating_duration_since(now));
            }
        }
        limit
    }

    /// Identity checks (one fstat each) done so far.
    pub fn looks(&self) -> u64 {
        self.looks
    }

    /// The current checkpoint of every generation known (for status/lag).
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        let mut all: Vec<Checkpoint> = self.finished.values().cloned().collect();
        all.extend(self.live.iter().map(|g| g.cp.clone()));
        all.sort_by_key(|c| c.generation);
        all
    }
}
