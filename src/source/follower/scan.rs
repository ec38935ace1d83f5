//! Scanning: run the glob, tell which live generation each matching file
//! is (renamed, displaced, closed while idle), start following new files,
//! and find a file again by its identity.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::super::fingerprint::{self, file_id, Check, FileId, Fingerprint, StatKey};
use super::{Checkpoint, Follower, Gen, Notice, SourceEvent, State};

impl Follower {
    pub(super) fn scan(&mut self, now: Instant, events: &mut Vec<SourceEvent>) {
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
    pub(super) fn displace(
        &mut self,
        i: usize,
        now: Instant,
        events: &mut Vec<SourceEvent>,
    ) -> bool {
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

    pub(super) fn glob(&mut self, events: &mut Vec<SourceEvent>) -> Vec<(PathBuf, Metadata)> {
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
    pub(super) fn is_finished_file(&self, id: FileId, key: StatKey, path: &Path) -> bool {
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

    pub(super) fn open_new(
        &mut self,
        path: &Path,
        id: FileId,
        now: Instant,
        events: &mut Vec<SourceEvent>,
    ) {
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
        let generation = self.next_generation.next();
        let cp = Checkpoint {
            generation,
            source: self.opts.source.clone(),
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
    pub(super) fn reopen(
        &mut self,
        i: usize,
        path: PathBuf,
        meta: &Metadata,
        events: &mut Vec<SourceEvent>,
    ) {
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
    pub(super) fn reopen_dirty(&mut self, dirty: &HashSet<PathBuf>) {
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

    pub(super) fn report_unreadable(
        &mut self,
        path: &Path,
        e: &io::Error,
        events: &mut Vec<SourceEvent>,
    ) {
        if self.unreadable.insert(path.to_path_buf()) {
            tracing::warn!(path = %path.display(), error = %e, "unreadable; going on with the others");
            events.push(SourceEvent::Notice(Notice::Unreadable {
                path: path.to_path_buf(),
                error: e.to_string(),
            }));
        }
    }
}

/// Open `path` if it still is the file `id` (`None` if it is another one).
pub(super) fn open_checked(path: &Path, id: FileId) -> io::Result<Option<File>> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    Ok((file_id(&meta) == id).then_some(file))
}

/// Does the file at `path` start with the checkpoint's fingerprinted bytes
/// and hold at least its offset?
pub(super) fn same_content(path: &Path, cp: &Checkpoint) -> bool {
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
pub(super) fn find_in_dir(path: &Path, id: FileId) -> Option<PathBuf> {
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
pub(super) fn find_renamed(cp: &Checkpoint, glob: &glob::Pattern) -> Option<(PathBuf, File)> {
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
