//! inotify (via `notify`) as a hint, never as the truth: events only say
//! "look now". The follower's periodic stat poll works without them, which is
//! what NFS/SMB need (inotify is silent for remote writes, notify-rs #475).
//! A failed watch is logged and retried on later scans.

use super::fingerprint::{file_id, FileId};
use notify::event::ModifyKind;
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the watcher saw since the last `take`.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Files appeared, disappeared or were renamed: re-glob.
    pub scan: bool,
    /// Matching files written to.
    pub dirty: HashSet<PathBuf>,
    /// Anything relevant at all (wakes `wait`).
    signalled: bool,
}

struct Shared {
    seen: Mutex<Seen>,
    cond: Condvar,
    /// Rung too, for a thread that waits on several followers at once.
    bell: std::sync::OnceLock<Bell>,
}

/// Wakes a thread that follows several sources when any of their watchers
/// sees a change (each follower's own `wait` watches only its own).
#[derive(Clone, Default)]
pub struct Bell(Arc<(Mutex<bool>, Condvar)>);

impl Bell {
    /// Wake the waiting thread (a watcher saw a change, or the daemon is
    /// stopping).
    pub fn ring(&self) {
        let mut rung = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        *rung = true;
        self.0 .1.notify_all();
    }

    /// Block until a watcher rang since the last `wait`, or `timeout`.
    pub fn wait(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut rung = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        while !*rung {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            rung = match self.0 .1.wait_timeout(rung, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        *rung = false;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Seen> {
        // A panic in the callback cannot leave `Seen` inconsistent.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Watch {
    shared: Arc<Shared>,
    watcher: RecommendedWatcher,
    root: PathBuf,
    mode: RecursiveMode,
    /// (dev, ino) of `root` when the watch was added; a directory replaced
    /// since needs a new watch.
    watched: Option<FileId>,
    warned: bool,
}

impl Watch {
    /// `None` when the pattern gives nothing sensible to watch or inotify is
    /// unavailable: the follower then relies on its stat poll.
    pub fn start(pattern: &str) -> Option<Watch> {
        let Some((root, mode)) = watch_root(pattern) else {
            tracing::info!(pattern, "no directory to watch; relying on the stat poll");
            return None;
        };
        let glob = match glob::Pattern::new(pattern) {
            Ok(g) => g,
            Err(_) => return None,
        };
        let shared = Arc::new(Shared {
            seen: Mutex::new(Seen::default()),
            cond: Condvar::new(),
            bell: std::sync::OnceLock::new(),
        });
        let cb_shared = Arc::clone(&shared);
        let cb_root = root.clone();
        let recursive = mode == RecursiveMode::Recursive;
        let handler = move |res: notify::Result<Event>| {
            on_event(&cb_shared, &glob, &cb_root, recursive, res);
        };
        let watcher = match RecommendedWatcher::new(handler, notify::Config::default()) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the file watcher; relying on the stat poll");
                return None;
            }
        };
        let mut w = Watch {
            shared,
            watcher,
            root,
            mode,
            watched: None,
            warned: false,
        };
        w.ensure();
        Some(w)
    }

    /// (Re)add the watch if it is missing or its directory was replaced.
    /// Cheap (one stat); called on every scan.
    pub fn ensure(&mut self) {
        let current = std::fs::metadata(&self.root).ok().map(|m| file_id(&m));
        if current.is_some() && current == self.watched {
            return;
        }
        if self.watched.is_some() {
            let _ = self.watcher.unwatch(&self.root);
            self.watched = None;
        }
        if current.is_none() {
            self.warn_once("directory does not exist (yet)".to_string());
            return;
        }
        match self.watcher.watch(&self.root, self.mode) {
            Ok(()) => {
                tracing::debug!(root = %self.root.display(), "watching");
                self.watched = current;
                self.warned = false;
                // Whatever happened before the watch was in place.
                self.shared.lock().scan = true;
            }
            Err(e) => self.warn_once(e.to_string()),
        }
    }

    fn warn_once(&mut self, error: String) {
        if !self.warned {
            tracing::warn!(root = %self.root.display(), %error,
                "cannot watch; relying on the stat poll until it can");
            self.warned = true;
        }
    }

    pub fn set_bell(&self, bell: Bell) {
        let _ = self.shared.bell.set(bell);
    }

    pub fn take(&self) -> Seen {
        std::mem::take(&mut *self.shared.lock())
    }

    /// Block until something relevant is seen or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = self.shared.lock();
        while !seen.signalled {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            seen = match self.shared.cond.wait_timeout(seen, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

fn on_event(
    shared: &Shared,
    glob: &glob::Pattern,
    root: &Path,
    recursive: bool,
    res: notify::Result<Event>,
) {
    let ev = match res {
        Ok(ev) => ev,
        Err(e) => {
            tracing::debug!(error = %e, "watcher error; rescanning");
            let mut seen = shared.lock();
            seen.scan = true;
            seen.signalled = true;
            shared.cond.notify_all();
            if let Some(b) = shared.bell.get() {
                b.ring();
            }
            return;
        }
    };
    let matching = || ev.paths.iter().any(|p| glob.matches_path(p));
    let (scan, dirty) = match ev.kind {
        // Our own opens and reads show up as access events: ignore them, or
        // every read would wake us for another read. A close after writing
        // follows the write's own modify event.
        EventKind::Access(_) => (false, false),
        EventKind::Modify(ModifyKind::Data(_)) => (false, true),
        // Create, remove, rename, attributes (link count), unknown kinds.
        _ => {
            let structural = (recursive
                && matches!(
                    ev.kind,
                    EventKind::Create(_)
                        | EventKind::Remove(_)
                        | EventKind::Modify(ModifyKind::Name(_))
                ))
                || ev.paths.is_empty()
                || ev.paths.iter().any(|p| p == root)
                || matching();
            (structural, false)
        }
    };
    let scan = scan || ev.need_rescan();
    let dirty_paths: Vec<&PathBuf> = if dirty {
        ev.paths.iter().filter(|p| glob.matches_path(p)).collect()
    } else {
        Vec::new()
    };
    if !scan && dirty_paths.is_empty() {
        return;
    }
    let mut seen = shared.lock();
    seen.scan |= scan;
    for p in dirty_paths {
        seen.dirty.insert(p.clone());
    }
    seen.signalled = true;
    shared.cond.notify_all();
    drop(seen);
    if let Some(b) = shared.bell.get() {
        b.ring();
    }
}

/// The directory to watch for a pattern: its literal parent, or, when the
/// directory part has wildcards, the longest literal prefix recursively (not
/// the root: that would watch the whole filesystem).
pub(crate) fn watch_root(pattern: &str) -> Option<(PathBuf, RecursiveMode)> {
    let path = Path::new(pattern);
    let wild = |c: &Component| {
        c.as_os_str()
            .to_str()
            .is_none_or(|s| s.contains(['*', '?', '[']))
    };
    let comps: Vec<Component> = path.components().collect();
    let (last, dir) = comps.split_last()?;
    let _ = last;
    let literal = dir.iter().take_while(|c| !wild(c)).count();
    let mut root: PathBuf = dir[..literal].iter().collect();
    if root.as_os_str().is_empty() {
        root = PathBuf::from(".");
    }
    if literal == dir.len() {
        Some((root, RecursiveMode::NonRecursive))
    } else if root.parent().is_none() || root == Path::new(".") {
        None
    } else {
        Some((root, RecursiveMode::Recursive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots() {
        assert_eq!(
            watch_root("/var/log/pc/*.log"),
            Some((PathBuf::from("/var/log/pc"), RecursiveMode::NonRecursive))
        );
        assert_eq!(
            watch_root("/var/log/pc/tx.log"),
            Some((PathBuf::from("/var/log/pc"), RecursiveMode::NonRecursive))
        );
        assert_eq!(
            watch_root("/var/log/*/tx.log"),
            Some((PathBuf::from("/var/log"), RecursiveMode::Recursive))
        );
        assert_eq!(watch_root("/*/tx.log"), None);
        assert_eq!(
            watch_root("tx.log"),
            Some((PathBuf::from("."), RecursiveMode::NonRecursive))
        );
    }
}
