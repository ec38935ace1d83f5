//! `chargetail replay`: read historical files once (plain or `.gz`), queue
//! exactly the charges never delivered, deliver them, and reckon.
//!
//! Safe beside a running daemon: every charge goes through the same outbox,
//! whose unique charge id is the one gate against doubles. When a daemon
//! holds the run lock, it delivers what the replay queued (it looks at the
//! outbox at least every second) and the replay waits for that; otherwise
//! the replay takes the lock and delivers itself.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::charge::Totals;
use crate::config::{Config, SourceConfig};
use crate::deliver::{Deliverer, Drained, Handoff};
use crate::format::{FormatSettings, LineParser, Parsed};
use crate::ingest::{Batch, Pushed};
use crate::run_lock::RunLock;
use crate::sink::Sink;
use crate::source::historical::read_lines;
use crate::stats::Stats;
use crate::store::Store;

/// As the follower's scan (`glob::glob`) matches: `*` stays in a directory.
const SCAN_MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

pub struct ReplayOptions {
    pub dry_run: bool,
    pub json: bool,
    /// Stop waiting for delivery after this long without progress.
    pub give_up_after: Duration,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub dry_run: bool,
    pub files: Vec<String>,
    pub lines: u64,
    pub charges_read: u64,
    /// Known from an earlier run or the daemon (delivered, or queued).
    pub already_delivered: u64,
    pub already_queued: u64,
    /// Dead letters (never delivered) read again: queued once more.
    pub requeued_dead: u64,
    /// The same charge more than once in the input (a file and its copy).
    pub repeated_in_input: u64,
    pub newly_queued: u64,
    pub newly_delivered: u64,
    pub still_pending: u64,
    pub dead_letters: u64,
    pub bad_lines: u64,
    pub totals_read: Totals,
    pub totals_newly_delivered: Totals,
}

/// Sort files oldest first: by the time of the first charge, then by name.
/// A file with no charge at all sorts by name among the rest.
fn order_files(
    files: Vec<PathBuf>,
    settings: &Arc<FormatSettings>,
    max_line: usize,
) -> Vec<PathBuf> {
    let mut keyed: Vec<(Option<i64>, PathBuf)> = files
        .into_iter()
        .map(|f| {
            let mut parser = LineParser::new(settings.clone(), String::new());
            let mut first = None;
            // Stop reading at the first charge; an error just ends the peek.
            let _ = read_first(&f, max_line, |line| {
                if let Parsed::Charge(c) = parser.parse(line) {
                    first = Some(c.time.timestamp());
                    return true;
                }
                false
            });
            (first, f)
        })
        .collect();
    keyed.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.1.cmp(&b.1)),
        _ => a.1.cmp(&b.1),
    });
    keyed.into_iter().map(|(_, f)| f).collect()
}

/// Read lines until `stop` says so (a peek at a file's head).
fn read_first(
    path: &Path,
    max_line: usize,
    mut stop: impl FnMut(&crate::source::Line) -> bool,
) -> std::io::Result<()> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut reader: Box<dyn Read> = if crate::source::historical::is_gzip(path) {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        )))
    } else {
        Box::new(file)
    };
    let mut splitter = crate::source::LineSplitter::new(max_line, 0, 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = Vec::new();
    for _ in 0..64 {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            splitter.finish(&mut lines);
        } else {
            splitter.feed(&buf[..n], &mut lines);
        }
        for l in lines.drain(..) {
            if stop(&l) {
                return Ok(());
            }
        }
        if n == 0 {
            break;
        }
    }
    Ok(())
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_log: Instant,
    total_bytes: u64,
}

impl Progress {
    fn new(total_bytes: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total_bytes);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            last_log: Instant::now(),
            total_bytes,
        }
    }

    fn update(&mut self, bytes: u64, charges: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(bytes);
                bar.set_message(format!("{charges} charges"));
            }
            None if self.last_log.elapsed() >= Duration::from_secs(5) => {
                self.last_log = Instant::now();
                tracing::info!(
                    bytes,
                    total_bytes = self.total_bytes,
                    charges,
                    "replay progress"
                );
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Which source historical files belong to: the one named, else the
/// config's only one, else the one source whose path matches every file.
/// With several sources and no clear answer, an error: the source's name is
/// part of every charge id, so guessing would queue the charges again under
/// other ids.
pub fn source_of<'a>(
    cfg: &'a Config,
    name: Option<&str>,
    files: &[PathBuf],
) -> Result<&'a SourceConfig, crate::config::ConfigError> {
    if name.is_some() || cfg.sources.len() == 1 {
        return cfg.source(name);
    }
    let matching = |f: &PathBuf| -> Vec<&'a SourceConfig> {
        let f = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        cfg.sources
            .iter()
            .filter(|s| {
                glob::Pattern::new(&s.path).is_ok_and(|p| p.matches_path_with(&f, SCAN_MATCH))
            })
            .collect()
    };
    let mut found: Option<&SourceConfig> = None;
    let all_one = !files.is_empty()
        && files.iter().all(|f| match matching(f).as_slice() {
            [one] if found.is_none_or(|s| s.name == one.name) => {
                found = Some(one);
                true
            }
            _ => false,
        });
    match found {
        Some(s) if all_one => Ok(s),
        _ => cfg.source(None),
    }
}

pub fn replay(
    cfg: &Config,
    src: &SourceConfig,
    files: Vec<PathBuf>,
    opts: &ReplayOptions,
) -> anyhow::Result<Summary> {
    let settings = Arc::new(
        src.format_settings()
            .map_err(|e| anyhow::anyhow!("[source {:?}]: {e}", src.name))?,
    );
    let max_line = src.max_line_bytes;
    let files = order_files(files, &settings, max_line);
    // A dry run must not create state; it only looks at it if it exists.
    let mut store = if opts.dry_run && !cfg.state.path.exists() {
        None
    } else {
        Some(Store::open(&cfg.state.path)?)
    };
    // Replayed charges are billed like the daemon's (ledger, data.billing,
    // held when unmapped) before they reach the outbox.
    let mut billing = match (&store, opts.dry_run) {
        (Some(_), false) => Some(
            crate::billing::Billing::open(cfg.billing.as_ref(), &cfg.state.path)
                .and_then(|b| b.with_papercut(cfg.papercut.as_ref(), &cfg.state.path))
                .map_err(|e| anyhow::anyhow!("[billing]: {e}"))?,
        ),
        _ => None,
    };
    let run: i64 = rand::random_range(1..i64::MAX);
    let mut summary = Summary {
        dry_run: opts.dry_run,
        ..Summary::default()
    };
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let mut progress = Progress::new(total_bytes);
    let mut done_bytes = 0u64;

    for file in &files {
        let canonical = std::fs::canonicalize(file).with_context(|| file.display().to_string())?;
        let name = canonical.to_string_lossy().into_owned();
        summary.files.push(name.clone());
        let mut parser = LineParser::new(settings.clone(), name.clone());
        let mut batch = Batch::new(name.clone(), run);
        let mut failure: Option<anyhow::Error> = None;
        let compressed_len = std::fs::metadata(&canonical).map(|m| m.len()).unwrap_or(0);
        let is_gz = crate::source::historical::is_gzip(&canonical);
        let mut flush = |batch: &mut Batch, summary: &mut Summary| -> anyhow::Result<()> {
            if let Some(store) = store.as_mut() {
                if opts.dry_run {
                    for c in batch.charges.iter() {
                        match store.known(&c.id)?.as_deref() {
                            Some("delivered") => summary.already_delivered += 1,
                            // A dead letter was never delivered: a replay
                            // would send it again.
                            Some("dead") => summary.requeued_dead += 1,
                            Some(_) => summary.already_queued += 1,
                            None => summary.newly_queued += 1,
                        }
                    }
                } else {
                    // The commit does not say whether an id it ignored
                    // was delivered or queued: insert first; only the ids
                    // the outbox already had need a look at how they stand.
                    if let Some(b) = billing.as_mut() {
                        batch.bill(b, store, &settings.source_name)?;
                    }
                    let done = batch.commit(store, None)?;
                    if let Some(b) = billing.as_ref() {
                        b.committed(&done)?;
                    }
                    summary.newly_queued += done.inserted;
                    let mut known = 0;
                    for &i in &done.ignored {
                        let c = &batch.charges[i];
                        match store.known(&c.id)?.as_deref() {
                            Some("delivered") => summary.already_delivered += 1,
                            Some("pending") => {
                                // Queued by an interrupted replay or the
                                // daemon: this run sees it through.
                                if store.adopt(&c.id, run)? {
                                    summary.already_queued += 1;
                                } else if store.known(&c.id)?.as_deref() == Some("delivered") {
                                    // The daemon delivered it between the
                                    // look-up and the adoption.
                                    summary.already_delivered += 1;
                                } else {
                                    // This run's own: repeated in the input.
                                    continue;
                                }
                            }
                            Some("dead") => {
                                if store.requeue_dead(&c.id, run, &c.payload)? {
                                    summary.requeued_dead += 1;
                                }
                            }
                            Some(_) => summary.already_queued += 1,
                            None => continue,
                        }
                        known += 1;
                    }
                    summary.repeated_in_input += done.duplicates.saturating_sub(known);
                }
            } else {
                summary.newly_queued += batch.charges.len() as u64;
            }
            batch.clear();
            Ok(())
        };
        read_lines(&canonical, max_line, |line, bytes| {
            if failure.is_some() {
                return;
            }
            summary.lines += 1;
            match batch.push(&mut parser, line, &settings.source_name) {
                Pushed::Skip => {}
                Pushed::Charge(c) => {
                    summary.charges_read += 1;
                    summary.totals_read.add(c.amount, &c.currency, &c.account);
                }
                Pushed::Bad => summary.bad_lines += 1,
            }
            // Large transactions: per-commit costs spread over more charges
            // (1000 → 4096: replay CPU -31% in scripts/bench_throughput.sh).
            if batch.len() >= 4096 {
                if let Err(e) = flush(&mut batch, &mut summary) {
                    failure = Some(e);
                }
            }
            // For a .gz file, scale uncompressed progress to its size.
            let pos = if is_gz {
                bytes.min(compressed_len)
            } else {
                bytes
            };
            progress.update(done_bytes + pos, summary.charges_read);
        })
        .with_context(|| format!("reading {name}"))?;
        if let Some(e) = failure {
            return Err(e);
        }
        flush(&mut batch, &mut summary)?;
        done_bytes += compressed_len;
    }
    progress.finish();

    if opts.dry_run {
        return Ok(summary);
    }
    let Some(store) = store else {
        return Ok(summary);
    };
    deliver_run(cfg, store, run, opts, &mut summary)?;
    Ok(summary)
}

/// Deliver (or wait for the daemon to deliver) this run's charges.
fn deliver_run(
    cfg: &Config,
    store: Store,
    run: i64,
    opts: &ReplayOptions,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let lock = match RunLock::acquire(&cfg.state.path) {
        Ok(l) => Some(l),
        Err(_) if RunLock::is_held(&cfg.state.path) => {
            tracing::info!(
                "a chargetail daemon is running on this state: it delivers the replayed charges"
            );
            None
        }
        Err(e) => return Err(e),
    };
    let mut last_progress = Instant::now();
    let mut last_done = u64::MAX;
    if lock.is_some() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let sink = cfg.make_sink()?;
        // Nothing is handed over in memory: the charges are in the outbox.
        let mut d = Deliverer::new(
            store,
            sink,
            cfg.delivery.retry_policy(),
            cfg.delivery.batch,
            Arc::new(Handoff::new(0)),
            Arc::new(Stats::default()),
        );
        match rt.block_on(d.drain(opts.give_up_after))? {
            Drained::Empty => {}
            Drained::Stalled => {
                tracing::error!("no delivery progress; giving up (the charges stay in the outbox)")
            }
            Drained::Paused => tracing::error!(
                alert = ?d.sink.health().alert,
                "the endpoint refused us and delivery is paused; the charges stay in the outbox"
            ),
        }
        let store = d.store();
        tally(&store, run, summary)?;
    } else {
        loop {
            let (pending, delivered, dead) = store.run_states(run)?;
            if pending == 0 {
                break;
            }
            if delivered + dead != last_done {
                last_done = delivered + dead;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > opts.give_up_after {
                tracing::error!(
                    pending,
                    "the daemon made no delivery progress; giving up waiting"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        tally(&store, run, summary)?;
    }
    drop(lock);
    Ok(())
}

fn tally(store: &Store, run: i64, summary: &mut Summary) -> anyhow::Result<()> {
    let (pending, delivered, dead) = store.run_states(run)?;
    summary.newly_delivered = delivered;
    summary.still_pending = pending;
    summary.dead_letters = dead;
    let mut totals = Totals::default();
    store.run_delivered(run, |amount, currency, account| {
        let amount = amount.and_then(|a| a.parse::<Decimal>().ok());
        totals.add(amount, &currency, &account);
    })?;
    summary.totals_newly_delivered = totals;
    Ok(())
}

impl Summary {
    /// Exit 0 only when every charge read is delivered (now or before) and
    /// every line parsed.
    pub fn complete(&self) -> bool {
        self.still_pending == 0 && self.dead_letters == 0 && self.bad_lines == 0
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let verb = if self.dry_run { "would be " } else { "" };
        s.push_str(&format!(
            "replay{}: {} files, {} lines, {} charges read\n",
            if self.dry_run {
                " (dry run: nothing sent or recorded)"
            } else {
                ""
            },
            self.files.len(),
            self.lines,
            self.charges_read
        ));
        s.push_str(&format!(
            "  already delivered:  {}\n",
            self.already_delivered
        ));
        if self.already_queued > 0 {
            s.push_str(&format!(
                "  already queued:     {} (pending in the outbox)\n",
                self.already_queued
            ));
        }
        if self.requeued_dead > 0 {
            s.push_str(&format!(
                "  {}dead letters re-queued: {}\n",
                verb, self.requeued_dead
            ));
        }
        if self.repeated_in_input > 0 {
            s.push_str(&format!(
                "  repeated in input:  {} (same charge id twice)\n",
                self.repeated_in_input
            ));
        }
        s.push_str(&format!("  {}queued:        {}\n", verb, self.newly_queued));
        if !self.dry_run {
            s.push_str(&format!("  newly delivered:    {}\n", self.newly_delivered));
            if self.still_pending > 0 {
                s.push_str(&format!(
                    "  NOT delivered yet:  {} (still in the outbox; the daemon or a new replay sends them)\n",
                    self.still_pending
                ));
            }
            if self.dead_letters > 0 {
                s.push_str(&format!(
                    "  dead letters:       {} (see `chargetail dead-letters list`)\n",
                    self.dead_letters
                ));
            }
        }
        if self.bad_lines > 0 {
            s.push_str(&format!(
                "  unparsable lines:   {}{}\n",
                self.bad_lines,
                if self.dry_run {
                    ""
                } else {
                    " (see `chargetail dead-letters list`)"
                }
            ));
        }
        let money = |t: &Totals, title: &str, s: &mut String| {
            s.push_str(&format!("  {title}: {} charges\n", t.charges));
            for (cur, sum) in &t.by_currency {
                s.push_str(&format!("    {cur} {sum}\n"));
                for (acct, a) in t.by_account.get(cur).into_iter().flatten() {
                    s.push_str(&format!("      {acct}: {a}\n"));
                }
            }
        };
        money(&self.totals_read, "all read", &mut s);
        if !self.dry_run {
            money(&self.totals_newly_delivered, "newly delivered", &mut s);
        }
        s
    }
}
