//! Model test, after Vector's file-source model: random file operations on
//! real files against a deliberately simple model of what must come out.
//!
//! The model. Every line written is unique ("L<n>", "P<n>-end") except the
//! header "#hdr" and "DUP", which repeat. A charge id downstream is (line
//! content, ordinal among identical lines in that generation), so the output
//! is compared as a set of such ids:
//!
//! * possible: every id of a complete line that ever existed in any file
//!   (glob-matching or renamed away; copies have the ids of their original);
//! * must: every id of a complete line that was in a glob-matching file when
//!   a `poll` op started, or at the end.
//!
//! A `poll` op polls until the follower has nothing more to say, with
//! `poll_interval` and `rotate_grace` zero, so it is caught up when it
//! returns. must ⊆ emitted ⊆ possible. Loss is legitimately allowed (not in
//! `must`) only for bytes that were appended and then destroyed — truncated
//! away without a copy, or deleted (or renamed out of the glob) while the
//! follower was down or had never seen the file — before any poll saw them.
//!
//! Also checked on every event (see the harness): lines of a generation come
//! in file order, each exactly once (offsets and numbers contiguous), the
//! checkpoint follows them, `prefix` re-reads repeat what was handed over;
//! lines from files outside the glob never appear; a partial line is never
//! emitted (it would not be in `possible`).
//!
//! Files outside the glob have a header of their own. With the same header,
//! a file outside the glob that reuses the inode of a file followed before a
//! restart (deleted while down) is taken for that file renamed while down:
//! a documented residual of identity by inode + first bytes (`find_renamed`).

mod source_common;

use chargetail::source::{Notice, SourceEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use source_common::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

type Id = (String, u64);

struct MFile {
    path: PathBuf,
    /// Renamed away or a copy: never written again.
    archived: bool,
}

struct Model {
    dir: PathBuf,
    glob: glob::Pattern,
    files: Vec<MFile>,
    n: u64,
    possible: HashSet<Id>,
    must: HashSet<Id>,
}

/// Ids of the complete lines of `data`.
fn ids(data: &[u8]) -> Vec<Id> {
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut out = Vec::new();
    let complete = match data.iter().rposition(|&b| b == b'\n') {
        Some(i) => &data[..i],
        None => return out,
    };
    for l in complete.split(|&b| b == b'\n') {
        let l = String::from_utf8(l.to_vec()).unwrap();
        let k = seen.entry(l.clone()).or_insert(0);
        *k += 1;
        out.push((l, *k));
    }
    out
}

impl Model {
    fn matching(&self, p: &Path) -> bool {
        self.glob.matches_path(p)
    }

    fn next(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    fn pick(&self, rng: &mut StdRng, f: impl Fn(&MFile) -> bool) -> Option<usize> {
        let c: Vec<usize> = (0..self.files.len())
            .filter(|&i| f(&self.files[i]))
            .collect();
        (!c.is_empty()).then(|| c[rng.random_range(0..c.len())])
    }

    fn data(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap_or_default()
    }

    /// After every op: whatever is complete anywhere is possible.
    fn note_possible(&mut self) {
        for f in &self.files {
            self.possible.extend(ids(&Model::data(&f.path)));
        }
    }

    fn note_must(&mut self) {
        for f in &self.files {
            if self.matching(&f.path) {
                self.must.extend(ids(&Model::data(&f.path)));
            }
        }
    }

    fn line(&mut self, rng: &mut StdRng, p: &Path) -> String {
        if !self.matching(p) {
            return format!("X{}\n", self.next());
        }
        if rng.random_bool(0.1) {
            "DUP\n".into()
        } else {
            format!("L{}\n", self.next())
        }
    }

    fn create(&mut self, rng: &mut StdRng) {
        let n = self.next();
        let path = if rng.random_bool(0.92) {
            self.dir.join(format!("f{n}.log"))
        } else {
            self.dir.join(format!("x{n}.txt"))
        };
        // Files outside the glob start with bytes of their own: see
        // `find_renamed` for a file outside the glob reusing the inode of
        // one we followed and starting with all of its bytes.
        let outside = !self.matching(&path);
        let body: &[u8] = match (rng.random_range(0..4), outside) {
            (0, _) => b"",
            (1, false) => b"#h",
            (_, false) => b"#hdr\n",
            (1, true) => b"#x",
            (_, true) => b"#xhdr\n",
        };
        write(&path, body);
        self.files.push(MFile {
            path,
            archived: false,
        });
    }
}

/// Poll until the follower is caught up.
fn drain(r: &mut Run) {
    for _ in 0..1000 {
        if r.poll() == 0 {
            return;
        }
    }
    panic!("follower never quiet");
}

fn run(seed: u64, ops: usize) {
    let (_d, dir) = tmp();
    let mut rng = StdRng::seed_from_u64(seed);
    let pattern = dir.join("*.log");
    let mut o = opts(&pattern);
    o.poll_interval = Duration::ZERO;
    o.rotate_grace = Duration::ZERO;
    o.read_chunk = [5, 64, 4096][rng.random_range(0..3)];
    o.max_batch_lines = [1, 3, 100][rng.random_range(0..3)];
    let watch = rng.random_bool(0.5);
    let mut r = if watch {
        Run::new(o.clone())
    } else {
        Run::polling(o.clone())
    };
    let few_handles = rng.random_bool(0.3);
    if few_handles {
        r.f.set_max_open_files(2);
    }
    let mut m = Model {
        glob: glob::Pattern::new(&pattern.to_string_lossy()).unwrap(),
        dir: dir.clone(),
        files: Vec::new(),
        n: 0,
        possible: HashSet::new(),
        must: HashSet::new(),
    };
    let mut log = Vec::new();
    for _ in 0..ops {
        let op = rng.random_range(0..100);
        let live = |f: &MFile| !f.archived;
        match op {
            0..=29 => {
                if let Some(i) = m.pick(&mut rng, live) {
                    let p = m.files[i].path.clone();
                    if Model::data(&p).last().is_some_and(|&b| b != b'\n') {
                        // A writer finishes its partial line first.
                        append(&p, b"-end\n");
                    }
                    for _ in 0..rng.random_range(1..4) {
                        let l = m.line(&mut rng, &p);
                        append(&p, l.as_bytes());
                    }
                    log.push(format!("append {}", p.display()));
                } else {
                    m.create(&mut rng);
                }
            }
            30..=37 => {
                if let Some(i) = m.pick(&mut rng, live) {
                    let p = m.files[i].path.clone();
                    let data = Model::data(&p);
                    if data.last().is_none_or(|&b| b == b'\n') {
                        let n = m.next();
                        let c = if m.matching(&p) { 'P' } else { 'X' };
                        append(&p, format!("{c}{n}").as_bytes());
                        log.push(format!("partial {}", p.display()));
                    }
                }
            }
            38..=45 => {
                if let Some(i) = m.pick(&mut rng, live) {
                    let p = m.files[i].path.clone();
                    if Model::data(&p).last().is_some_and(|&b| b != b'\n') {
                        append(&p, b"-end\n");
                        log.push(format!("complete {}", p.display()));
                    }
                }
            }
            46..=52 => {
                // Rename rotation, maybe with a new file at the path.
                if let Some(i) = m.pick(&mut rng, |f| live(f) && m.matching(&f.path)) {
                    let p = m.files[i].path.clone();
                    let n = m.next();
                    let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
                    let to = if rng.random_bool(0.5) {
                        dir.join(format!("{stem}-r{n}.log"))
                    } else {
                        dir.join(format!("{stem}.log.{n}"))
                    };
                    std::fs::rename(&p, &to).unwrap();
                    m.files[i].path = to.clone();
                    m.files[i].archived = true;
                    if rng.random_bool(0.7) {
                        write(&p, b"#hdr\n");
                        m.files.push(MFile {
                            path: p.clone(),
                            archived: false,
                        });
                    }
                    log.push(format!("rotate {} -> {}", p.display(), to.display()));
                }
            }
            53..=58 => {
                // Copy then truncate; the copy matches the glob.
                if let Some(i) = m.pick(&mut rng, |f| live(f) && m.matching(&f.path)) {
                    let p = m.files[i].path.clone();
                    let n = m.next();
                    let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
                    let to = dir.join(format!("{stem}-c{n}.log"));
                    std::fs::copy(&p, &to).unwrap();
                    truncate(&p, 0);
                    if rng.random_bool(0.5) {
                        append(&p, b"#hdr\n");
                    }
                    m.files.push(MFile {
                        path: to.clone(),
                        archived: true,
                    });
                    log.push(format!("copytruncate {} -> {}", p.display(), to.display()));
                }
            }
            59..=61 => {
                if let Some(i) = m.pick(&mut rng, live) {
                    let p = m.files[i].path.clone();
                    truncate(&p, 0);
                    if rng.random_bool(0.5) {
                        append(&p, b"#hdr\n");
                    }
                    log.push(format!("truncate {}", p.display()));
                }
            }
            62..=67 => {
                // Mostly archived files; live ones now and then.
                let any = rng.random_bool(0.3);
                if let Some(i) = m.pick(&mut rng, |f| f.archived || any) {
                    let f = m.files.remove(i);
                    std::fs::remove_file(&f.path).unwrap();
                    log.push(format!("delete {}", f.path.display()));
                }
            }
            68..=73 => {
                m.create(&mut rng);
                log.push(format!("create {}", m.files.last().unwrap().path.display()));
            }
            74..=77 => {
                r.restart();
                if few_handles {
                    r.f.set_max_open_files(2);
                }
                log.push("restart".into());
            }
            _ => {
                m.note_possible();
                m.note_must();
                drain(&mut r);
                log.push("poll".into());
            }
        }
        m.note_possible();
    }
    m.note_possible();
    drain(&mut r);
    m.note_must();

    // Emitted ids, ordinals counted within each generation.
    let mut emitted: HashSet<Id> = HashSet::new();
    for g in r.gens.values() {
        let mut seen: HashMap<&str, u64> = HashMap::new();
        for l in &g.lines {
            let k = seen.entry(l).or_insert(0);
            *k += 1;
            emitted.insert((l.clone(), *k));
        }
    }
    let ctx = || {
        format!(
            "seed {seed}: ops {:?}",
            &log[log.len().saturating_sub(30)..]
        )
    };
    let stray: Vec<&Id> = emitted.difference(&m.possible).collect();
    assert!(
        stray.is_empty(),
        "emitted but never written whole: {stray:?}; {}",
        ctx()
    );
    let missing: Vec<&Id> = m.must.difference(&emitted).collect();
    assert!(missing.is_empty(), "lost: {missing:?}; {}", ctx());
    let outside: Vec<&Id> = emitted.iter().filter(|(l, _)| l.starts_with('X')).collect();
    if !outside.is_empty() {
        for (g, log) in &r.gens {
            if log.lines.iter().any(|l| l.starts_with('X')) {
                eprintln!("gen {g}: {:?} {:?}", log.lines, r.store.get(g));
                eprintln!(
                    "{:?}",
                    r.notices
                        .iter()
                        .filter(|n| format!("{n:?}").contains(&format!("generation: {g} ")))
                        .collect::<Vec<_>>()
                );
            }
        }
    }
    assert!(
        outside.is_empty(),
        "read from outside the glob: {outside:?}; {}",
        ctx()
    );
    // Generation ids are never reused; finished ones stay finished.
    let mut finished = BTreeMap::new();
    for ev in &r.events {
        if let SourceEvent::Lines { checkpoint: c, .. } = ev {
            if c.finished {
                assert!(
                    finished.insert(c.generation, ()).is_none(),
                    "finished twice"
                );
            }
        }
    }
    let opened: Vec<u64> = r
        .notices
        .iter()
        .filter_map(|n| match n {
            Notice::Opened { generation, .. } => Some(*generation),
            _ => None,
        })
        .collect();
    let unique: HashSet<&u64> = opened.iter().collect();
    assert_eq!(unique.len(), opened.len(), "generation opened twice");
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for n in &r.notices {
        let k = format!("{n:?}");
        *kinds
            .entry(k[..k.find(' ').unwrap_or(k.len())].to_string())
            .or_default() += 1;
    }
    let prefixed = r
        .events
        .iter()
        .filter(|e| matches!(e, SourceEvent::Lines { prefix: true, .. }))
        .count();
    eprintln!(
        "seed {seed}: {} generations, {} ids emitted, {} must, {} possible (outside the glob: {}); {prefixed} prefix batches; {kinds:?}",
        r.gens.len(),
        emitted.len(),
        m.must.len(),
        m.possible.len(),
        m.possible.iter().filter(|(l, _)| l.starts_with('X')).count(),
    );
}

#[test]
fn model_seeds() {
    // CHARGETAIL_MODEL_{SEEDS,FIRST,OPS} for a longer soak.
    let seeds = std::env::var("CHARGETAIL_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let first = std::env::var("CHARGETAIL_MODEL_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let ops = std::env::var("CHARGETAIL_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for seed in first..first + seeds {
        run(seed, ops);
    }
}
