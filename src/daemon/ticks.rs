//! What the source loop does besides reading, each on a deadline of its
//! own, so that the loop sleeps until the earliest one (or an inotify
//! event) instead of turning on a short tick: the systemd watchdog and
//! STATUS line, the source-file check for `/healthz`, and the backlog
//! count behind backpressure.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::stats::Stats;
use crate::store::{Store, StoreError};

/// systemd watchdog pings from the source loop, so that a hung loop gets
/// the service restarted; with each ping a STATUS= line.
pub(super) struct Watchdog {
    /// Half the watchdog period when systemd asks for pings.
    interval: Option<Duration>,
    /// Under systemd without a watchdog: STATUS= lines only, this often.
    status_every: Option<Duration>,
    last: Instant,
}

impl Watchdog {
    pub(super) fn new() -> Watchdog {
        let mut usec = 0u64;
        let interval =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
        // Not under systemd: nobody reads STATUS=, so no wake-ups for it.
        let status_every = std::env::var_os("NOTIFY_SOCKET").map(|_| Duration::from_secs(10));
        Watchdog {
            interval,
            status_every,
            last: Instant::now(),
        }
    }

    fn every(&self) -> Option<Duration> {
        self.interval.or(self.status_every)
    }

    /// When the next ping or STATUS= line is due (`None`: never).
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.every().map(|e| self.last + e)
    }

    pub(super) fn tick(&mut self, stats: &Stats) {
        let Some(every) = self.every() else { return };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let last = stats.last_delivery_ms.load(Ordering::Relaxed);
        let status = format!(
            "backlog {} | delivered {} | last delivery {}",
            Stats::get(&stats.backlog),
            Stats::get(&stats.delivered),
            if last == 0 {
                "never".to_string()
            } else {
                format!("{}s ago", (crate::store::now_ms() - last) / 1000)
            }
        );
        let mut states = vec![sd_notify::NotifyState::Status(&status)];
        if self.interval.is_some() {
            states.push(sd_notify::NotifyState::Watchdog);
        }
        let _ = sd_notify::notify(false, &states);
    }
}

/// How many files a source path matches, and how many of them this process
/// may not read. `access(2)`, not `open(2)`: an open is an inotify event
/// (IN_OPEN) that would wake the watcher of the very directory we watch.
pub(super) fn check_source(pattern: &str) -> (u64, u64) {
    let (mut found, mut unreadable) = (0, 0);
    if let Ok(paths) = glob::glob(pattern) {
        for p in paths.flatten().filter(|p| p.is_file()) {
            found += 1;
            if !readable(&p) {
                unreadable += 1;
            }
        }
    }
    (found, unreadable)
}

fn readable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path that outlives the call; faccessat only
    // reads it. AT_EACCESS: checked as the effective user, as open would.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::R_OK, libc::AT_EACCESS) == 0 }
}

/// The outbox backlog as the source loop knows it: counted again only
/// when it can have changed — our own commits, or another connection's
/// (the deliverer's, a `replay`, `dead-letters retry`: SQLite's
/// `data_version` moves) — and then at most every 200 ms. An idle daemon
/// runs no count.
pub(super) struct Backlog {
    pub(super) estimate: u64,
    last_count: Option<Instant>,
    version: Option<i64>,
    /// Committed since the last count.
    dirty: bool,
}

const RECOUNT_EVERY: Duration = Duration::from_millis(200);

impl Backlog {
    pub(super) fn new() -> Backlog {
        Backlog {
            estimate: 0,
            last_count: None,
            version: None,
            dirty: true,
        }
    }

    /// Our commit added `n` pending charges.
    pub(super) fn added(&mut self, n: u64) {
        self.estimate += n;
        self.dirty = true;
    }

    /// Count now if `force` or it may have changed and the last count is
    /// 200 ms old. Returns the count when one ran.
    pub(super) fn refresh(
        &mut self,
        store: &Store,
        stats: &Stats,
        force: bool,
    ) -> Result<Option<u64>, StoreError> {
        if !force && self.last_count.is_some_and(|t| t.elapsed() < RECOUNT_EVERY) {
            return Ok(None);
        }
        let version = store.data_version()?;
        if !force && !self.dirty && self.version == Some(version) {
            return Ok(None);
        }
        let n = store.backlog()?;
        self.estimate = n;
        self.version = Some(version);
        self.dirty = false;
        self.last_count = Some(Instant::now());
        stats.backlog.store(n, Ordering::Relaxed);
        Ok(Some(n))
    }

    /// After our own commits, one more count is due (the deliverer's
    /// progress alone is seen on the next wake-up).
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.dirty.then(|| {
            self.last_count
                .map_or_else(Instant::now, |t| t + RECOUNT_EVERY)
        })
    }
}
