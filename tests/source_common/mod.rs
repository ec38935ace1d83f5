//! Shared harness for the source tests: a follower over real files in a
//! temporary directory, a "store" of the last checkpoint per generation, and
//! invariant checks on every event.
#![allow(dead_code)]

use chargetail::source::{Checkpoint, FollowOptions, Follower, Notice, SourceEvent};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn opts(pattern: &Path) -> FollowOptions {
    FollowOptions {
        source: "pc".into(),
        pattern: pattern.to_string_lossy().into_owned(),
        poll_interval: Duration::from_millis(50),
        idle_after: Duration::from_secs(60),
        idle_poll_interval: Duration::from_secs(10),
        rotate_grace: Duration::from_millis(100),
        max_line_bytes: 1024,
        // Small, so that lines straddle reads.
        read_chunk: 13,
        max_batch_lines: 3,
    }
}

pub fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

pub fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

pub fn ino(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

/// What one generation handed over.
#[derive(Debug, Default, Clone)]
pub struct GenLog {
    pub lines: Vec<String>,
    pub prefix: Vec<String>,
    pub too_long: Vec<Option<u64>>,
}

pub struct Run {
    pub opts: FollowOptions,
    pub f: Follower,
    pub polling_only: bool,
    /// Last checkpoint per generation, as the store would persist it.
    pub store: BTreeMap<u64, Checkpoint>,
    /// Every event in order (lines as (generation, text, prefix)).
    pub events: Vec<SourceEvent>,
    pub gens: BTreeMap<u64, GenLog>,
    /// Order of non-prefix lines across generations.
    pub order: Vec<(u64, String)>,
    pub notices: Vec<Notice>,
    /// Generations resumed at offset > 0 whose prefix is not complete yet.
    pub resuming: BTreeMap<u64, u64>,
}

impl Run {
    pub fn new(opts: FollowOptions) -> Run {
        let f = Follower::new(opts.clone(), Vec::new()).unwrap();
        Run::with(opts, f, false)
    }

    pub fn polling(opts: FollowOptions) -> Run {
        let f = Follower::new_polling(opts.clone(), Vec::new()).unwrap();
        Run::with(opts, f, true)
    }

    fn with(opts: FollowOptions, f: Follower, polling_only: bool) -> Run {
        Run {
            opts,
            f,
            polling_only,
            store: BTreeMap::new(),
            events: Vec::new(),
            gens: BTreeMap::new(),
            order: Vec::new(),
            notices: Vec::new(),
            resuming: BTreeMap::new(),
        }
    }

    /// A new follower from the stored checkpoints (the old one is dropped:
    /// its handles closed, as after a crash).
    pub fn restart(&mut self) {
        let cps: Vec<Checkpoint> = self.store.values().cloned().collect();
        let f = if self.polling_only {
            Follower::new_polling(self.opts.clone(), cps)
        } else {
            Follower::new(self.opts.clone(), cps)
        };
        self.f = f.unwrap();
        for g in self.gens.values_mut() {
            g.prefix.clear();
        }
        self.resuming = self
            .store
            .values()
            .filter(|c| !c.finished && c.line > 0)
            .map(|c| (c.generation, c.line))
            .collect();
    }

    pub fn poll(&mut self) -> usize {
        let evs = self.f.poll().unwrap();
        let n = evs.len();
        for ev in evs {
            self.record(ev);
        }
        n
    }

    /// Poll (with short waits) until `done` holds; panics after 5 s.
    pub fn until(&mut self, what: &str, done: impl Fn(&Run) -> bool) {
        let start = Instant::now();
        loop {
            self.poll();
            if done(self) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out waiting for {what}; notices {:?}; order {:?}",
                self.notices,
                self.order
            );
            self.f.wait(Duration::from_millis(10));
        }
    }

    /// Poll for a while (lets grace periods and scans pass).
    pub fn settle(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            self.poll();
            self.f.wait(Duration::from_millis(10));
        }
        self.poll();
    }

    pub fn lines(&self, generation: u64) -> Vec<String> {
        self.gens
            .get(&generation)
            .map(|g| g.lines.clone())
            .unwrap_or_default()
    }

    pub fn all_lines(&self) -> Vec<String> {
        self.order.iter().map(|(_, l)| l.clone()).collect()
    }

    pub fn has_notice(&self, pred: impl Fn(&Notice) -> bool) -> bool {
        self.notices.iter().any(pred)
    }

    pub fn finished(&self, generation: u64) -> bool {
        self.store.get(&generation).is_some_and(|c| c.finished)
    }

    fn record(&mut self, ev: SourceEvent) {
        match &ev {
            SourceEvent::Lines {
                checkpoint: cp,
                lines,
                prefix,
            } => {
                let g = self.gens.entry(cp.generation).or_default();
                if *prefix {
                    // Unchanged checkpoint; lines numbered from 1.
                    let stored = self
                        .store
                        .get(&cp.generation)
                        .expect("prefix of unknown gen");
                    assert_eq!(stored.offset, cp.offset, "prefix moved the checkpoint");
                    for l in lines {
                        assert_eq!(l.number as usize, g.prefix.len() + 1, "prefix numbering");
                        let text = String::from_utf8(l.bytes.clone()).unwrap();
                        // The same lines as handed over before.
                        assert_eq!(Some(&text), g.lines.get(g.prefix.len()), "prefix content");
                        g.prefix.push(text);
                    }
                    assert!(g.prefix.len() as u64 <= cp.line);
                } else {
                    if let Some(n) = self.resuming.remove(&cp.generation) {
                        // The whole prefix comes before anything else.
                        assert!(
                            cp.finished || g.prefix.len() as u64 == n,
                            "gen {}: event before its prefix was complete",
                            cp.generation
                        );
                    }
                    let prev = self.store.get(&cp.generation);
                    assert!(!prev.is_some_and(|p| p.finished), "event after finished");
                    let (mut off, mut num) = prev.map_or((0, 1), |p| (p.offset, p.line + 1));
                    for l in lines {
                        assert_eq!(l.offset, off, "gap or overlap in gen {}", cp.generation);
                        assert_eq!(l.number, num, "numbering in gen {}", cp.generation);
                        assert!(l.offset + (l.bytes.len() as u64) < cp.offset);
                        let text = String::from_utf8(l.bytes.clone()).unwrap();
                        // Past this line and its line end (CRLF not used here).
                        off = l.offset + l.too_long.unwrap_or(l.bytes.len() as u64) + 1;
                        num += 1;
                        g.lines.push(text.clone());
                        g.too_long.push(l.too_long);
                        self.order.push((cp.generation, text));
                    }
                    assert_eq!(cp.offset, off, "checkpoint offset after the last line");
                    assert_eq!(cp.line, num - 1);
                    self.store.insert(cp.generation, cp.clone());
                }
            }
            SourceEvent::Notice(n) => self.notices.push(n.clone()),
        }
        self.events.push(ev);
    }
}

pub fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

pub fn open(path: &Path) -> File {
    File::open(path).unwrap()
}
