//! The reading side of `chargetail run`: one thread follows every
//! source's files, parses and commits charges + position, and hands the
//! committed charges to delivery.

use super::*;

/// Longest sleep of the source loop when nothing else is due (a safety
/// net: inotify, the stat poll and the other deadlines come first).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// One `[[source]]` as the source loop follows it.
pub(super) struct Followed {
    cfg: SourceConfig,
    settings: Arc<FormatSettings>,
    follower: Follower,
    /// Per live generation: header and ordinal state.
    parsers: HashMap<u64, LineParser>,
    /// Events of one poll wait here while the backlog is at this source's
    /// bound, so the outbox overshoots by one read batch at most; memory
    /// holds one poll's worth (the follower bounds it).
    queued: VecDeque<SourceEvent>,
    paused: bool,
    last_check: Instant,
    statements: crate::billing::statements::Cursor,
    stats: Arc<SourceStats>,
}

/// What the reading side tells delivery through: committed charges, and
/// other processes' changes it notices on its poll.
pub(super) struct Delivery {
    pub(super) handoff: Arc<Handoff>,
    pub(super) other_writers: OtherWriters,
}

/// The reading side: follow every source's files, parse, commit charges +
/// position. One thread for all sources: each batch is one source's lines
/// and that source's position in one transaction, and the sources share
/// the billing state and the one SQLite connection without locks.
///
/// It sleeps until the earliest of its deadlines (each follower's stat
/// poll or rotation grace, the watchdog, billing, statements, pruning, the
/// source check) or until `bell` rings (inotify, SIGHUP, shutdown): an idle
/// daemon wakes once per poll (every `idle_poll_secs` once its files are
/// idle).
#[allow(clippy::too_many_arguments)]
pub(super) fn source_loop(
    cfg: &Config,
    mut store: Store,
    mut billing: crate::billing::Billing,
    sources: Vec<(SourceConfig, Arc<FormatSettings>, Arc<SourceStats>)>,
    stats: Arc<Stats>,
    delivery: Delivery,
    bell: crate::source::Bell,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let Delivery {
        handoff,
        mut other_writers,
    } = delivery;
    let names: Vec<(String, String)> = sources
        .iter()
        .map(|(s, _, _)| (s.name.clone(), s.path.clone()))
        .collect();
    let adopted = store.adopt_files(&names)?;
    let unnamed = adopted.iter().filter(|a| a.from.is_none()).count();
    if unnamed > 0 {
        tracing::info!(
            files = unnamed,
            "positions written before sources had names now belong to the source whose path matches"
        );
    }
    for a in adopted.iter().filter(|a| a.from.is_some()) {
        tracing::warn!(
            from = a.from.as_deref().unwrap_or(""), to = %a.to, file = %a.file,
            "a file followed for a source the config no longer names matches this source's path: \
             it resumes where it was (its lines are not billed again); new lines get this source's \
             charge ids"
        );
    }
    let all = store.checkpoints()?;
    // Generation numbers are the files table's key: one counter for all.
    let generations = crate::source::Generations::after(&all);
    let mut orphans: Vec<&Checkpoint> = all
        .iter()
        .filter(|c| !c.finished && !names.iter().any(|(n, _)| *n == c.source))
        .collect();
    orphans.dedup_by(|a, b| a.source == b.source);
    for c in orphans {
        tracing::warn!(
            source = %c.source, file = %c.path.display(),
            "the state database follows files for a source the config no longer names, \
             at paths no source matches: they are not read"
        );
    }
    let mut runs = Vec::new();
    for (src, settings, own_stats) in sources {
        let opts = src.follow_options();
        let own = all
            .iter()
            .filter(|c| c.source == src.name)
            .cloned()
            .collect();
        let mut follower = Follower::new(opts, own)?;
        follower.share_generations(&generations);
        follower.set_bell(bell.clone());
        runs.push(Followed {
            cfg: src,
            settings,
            follower,
            parsers: HashMap::new(),
            queued: VecDeque::new(),
            paused: false,
            last_check: Instant::now() - Duration::from_secs(3600),
            statements: Default::default(),
            stats: own_stats,
        });
    }
    // State open, positions recovered: tell systemd we are up.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut watchdog = ticks::Watchdog::new();
    // Pending charges: counted when they may have changed, plus what we
    // queued since.
    let mut backlog = ticks::Backlog::new();
    let min_limit = runs
        .iter()
        .map(|r| r.cfg.backlog_limit)
        .min()
        .unwrap_or(u64::MAX);
    let mut last_prune = Instant::now() - Duration::from_secs(86_400);
    let retention = Duration::from_secs(u64::from(cfg.state.retention_days) * 86_400);
    let mut last_statements = Instant::now() - Duration::from_secs(3600);
    while !shutdown.is_triggered() {
        Stats::add(&stats.source_wakeups, 1);
        watchdog.tick(&stats);
        // The mapping file changed or SIGHUP: reload; release held charges
        // a new mapping covers; queue the daily statements that are due.
        if billing.tick(&mut store).context("releasing held charges")? > 0 {
            handoff.store_changed();
        }
        if let Some(b) = billing.config().filter(|b| b.statements) {
            if last_statements.elapsed() >= Duration::from_secs(5) {
                let grace = b.statement_grace_secs;
                for r in &mut runs {
                    let n = crate::billing::statements::queue_due(
                        &billing.ledger,
                        &mut r.statements,
                        &mut store,
                        &r.settings.source_name,
                        r.cfg.timezone(),
                        grace,
                        chrono::Utc::now(),
                    )
                    .context("queueing daily statements")?;
                    if n > 0 {
                        handoff.store_changed();
                    }
                }
                last_statements = Instant::now();
            }
        }
        if runs
            .iter()
            .any(|r| r.last_check.elapsed() >= r.follower.scan_every(Instant::now()))
        {
            check_sources(&mut runs, &stats);
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            let mut n = 0;
            loop {
                let chunk = store.prune(retention, 10_000)?;
                n += chunk;
                watchdog.tick(&stats);
                if chunk < 10_000 || shutdown.is_triggered() {
                    break;
                }
            }
            if n > 0 {
                tracing::info!(
                    rows = n,
                    "pruned delivered ids and finished files past the retention"
                );
            }
            last_prune = Instant::now();
        }
        // Backpressure: while the outbox is over a source's bound, leave
        // its data in the source file (it is durable there) instead of
        // growing SQLite.
        let any_paused = runs.iter().any(|r| r.paused);
        let force = any_paused || backlog.estimate >= min_limit;
        if let Some(backlog) = backlog.refresh(&store, &stats, force)? {
            for r in &mut runs {
                let over = backlog >= r.cfg.backlog_limit;
                if over != r.paused {
                    if over {
                        tracing::warn!(
                            source = %r.cfg.name,
                            backlog,
                            limit = r.cfg.backlog_limit,
                            "outbox backlog over its bound: reading paused"
                        );
                    } else {
                        tracing::info!(source = %r.cfg.name, backlog, "outbox backlog below its bound: reading resumed");
                    }
                    r.paused = over;
                    r.stats
                        .reading_paused
                        .store(u64::from(over), std::sync::atomic::Ordering::Relaxed);
                }
            }
            let paused = runs.iter().filter(|r| r.paused).count() as u64;
            stats
                .reading_paused
                .store(paused.min(1), std::sync::atomic::Ordering::Relaxed);
            if runs.iter().all(|r| r.paused) {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let mut progressed = false;
        for r in runs.iter_mut().filter(|r| !r.paused) {
            progressed |= read_source(r, &mut store, &mut billing, &stats, &handoff, &mut backlog)?;
        }
        if !progressed {
            let now = Instant::now();
            let statements = billing
                .config()
                .filter(|b| b.statements)
                .map(|_| last_statements + Duration::from_secs(5));
            let due = [
                watchdog.next_due(),
                billing.next_due(),
                statements,
                Some(last_prune + Duration::from_secs(3600)),
                backlog.next_due(),
            ]
            .into_iter()
            .flatten()
            .chain(
                runs.iter()
                    .map(|r| r.last_check + r.follower.scan_every(now)),
            )
            .map(|t| t.saturating_duration_since(now));
            let limit = runs
                .iter()
                .map(|r| r.follower.wait_limit(MAX_SLEEP))
                .chain(due)
                .min()
                .unwrap_or(MAX_SLEEP);
            // Shutdown rings the bell: it is never missed while asleep.
            if !limit.is_zero() && !shutdown.is_triggered() {
                bell.wait(limit);
            }
            // Another process's change to the outbox (a replay,
            // `dead-letters retry`): noticed here, on the poll we make
            // anyway, so an idle deliverer needs no timer of its own.
            if other_writers.changed(&store)? {
                handoff.others_changed();
            }
        }
    }
    Ok(())
}

/// One poll of one source: hand its lines to format and store. Returns
/// whether anything was done (else the loop may wait).
fn read_source(
    r: &mut Followed,
    store: &mut Store,
    billing: &mut crate::billing::Billing,
    stats: &Stats,
    handoff: &Handoff,
    backlog: &mut ticks::Backlog,
) -> anyhow::Result<bool> {
    if r.queued.is_empty() {
        r.queued.extend(r.follower.poll()?);
    }
    let source_name = r.settings.source_name.clone();
    let mut progressed = false;
    while let Some(event) = r.queued.pop_front() {
        if backlog.estimate >= r.cfg.backlog_limit {
            r.queued.push_front(event);
            progressed = true;
            break;
        }
        match event {
            SourceEvent::Lines {
                checkpoint,
                lines,
                prefix,
            } => {
                let parser = r.parsers.entry(checkpoint.generation).or_insert_with(|| {
                    LineParser::new(
                        r.settings.clone(),
                        checkpoint.path.to_string_lossy().into_owned(),
                    )
                });
                if prefix {
                    // Already delivered before a restart: only rebuild the
                    // parser's header and ordinal state.
                    for line in &lines {
                        let _ = parser.parse(line);
                    }
                    continue;
                }
                let t_parse = Instant::now();
                let mut batch = Batch::new(checkpoint.path.to_string_lossy().into_owned(), 0);
                for line in &lines {
                    batch.push(parser, line, &source_name);
                }
                // Billing (ledger, data.billing, held charges) comes
                // before the commit, which writes its rows too: the bytes
                // are fixed from here on.
                batch
                    .bill(billing, store, &source_name)
                    .context("billing the charges read")?;
                let t_commit = Instant::now();
                // A failed commit stops reading: the error propagates and
                // the daemon exits non-zero; nothing is skipped.
                let done = batch
                    .commit_and_hand_off(store, Some(&checkpoint), handoff)
                    .inspect_err(|_| {
                        stats
                            .store_failed
                            .store(1, std::sync::atomic::Ordering::Relaxed)
                    })
                    .context("committing charges and position")?;
                billing
                    .committed(&done)
                    .context("counting the charges held")?;
                // Where an appended line's time goes before delivery.
                tracing::trace!(
                    lines = lines.len(),
                    parse_bill_us = (t_commit - t_parse).as_micros() as u64,
                    commit_us = t_commit.elapsed().as_micros() as u64,
                    "committed"
                );
                let own = &r.stats;
                for (total, mine, n) in [
                    (&stats.lines_read, &own.lines_read, lines.len() as u64),
                    (&stats.charges_read, &own.charges_read, done.inserted),
                    (
                        &stats.duplicates_ignored,
                        &own.duplicates_ignored,
                        done.duplicates,
                    ),
                    (&stats.bad_lines, &own.bad_lines, batch.bad.len() as u64),
                ] {
                    Stats::add(total, n);
                    Stats::add(mine, n);
                }
                backlog.added(done.inserted);
                if checkpoint.finished {
                    r.parsers.remove(&checkpoint.generation);
                }
                progressed |= !lines.is_empty();
            }
            SourceEvent::Notice(Notice::Unterminated {
                path,
                generation,
                offset,
                len,
                line,
                bytes,
            }) => {
                // Following never takes a line without its end; but a
                // finished file's last bytes must not vanish silently:
                // keep them as a dead letter (replay takes such lines).
                tracing::error!(
                    source = %source_name, file = %path.display(), generation, offset, line, len,
                    "finished file ends with a line that has no line end: kept as a dead letter, \
                     not billed; check it and `chargetail replay` the file if it is a complete record"
                );
                store
                    .commit(
                        None,
                        &[],
                        &[BadLine {
                            file: path.to_string_lossy().into_owned(),
                            offset,
                            line,
                            raw: bytes,
                            reason: format!(
                                "last line of a finished file has no line end ({len} bytes)"
                            ),
                        }],
                    )
                    .context("recording an unterminated line")?;
                Stats::add(&stats.bad_lines, 1);
                Stats::add(&r.stats.bad_lines, 1);
            }
            SourceEvent::Notice(n) => log_notice(&n, stats, &r.stats),
        }
    }
    Ok(progressed)
}

/// Count the files the sources' paths match and how many of them cannot
/// be read (for /healthz).
fn check_sources(runs: &mut [Followed], stats: &Stats) {
    let (mut found, mut unreadable) = (0, 0);
    for r in runs.iter_mut() {
        let (f, u) = ticks::check_source(&r.cfg.path);
        found += f;
        unreadable += u;
        r.stats
            .files
            .store(f - u, std::sync::atomic::Ordering::Relaxed);
        r.stats
            .unreadable
            .store(u, std::sync::atomic::Ordering::Relaxed);
        r.last_check = Instant::now();
    }
    stats
        .source_files
        .store(found - unreadable, std::sync::atomic::Ordering::Relaxed);
    stats
        .source_unreadable
        .store(unreadable, std::sync::atomic::Ordering::Relaxed);
}

fn log_notice(n: &Notice, stats: &Stats, own: &SourceStats) {
    match n {
        Notice::Opened { path, generation } => {
            tracing::debug!(file = %path.display(), generation, "following file")
        }
        Notice::Truncated { path, offset, size } => {
            Stats::add(&stats.truncations, 1);
            Stats::add(&own.truncations, 1);
            tracing::warn!(
                file = %path.display(), offset, size,
                "file was truncated below our position: reading it again from the start \
                 (lines written just before the truncation are only kept if a copy matches the path)"
            )
        }
        Notice::Rotated { path, generation } => {
            Stats::add(&stats.rotations, 1);
            Stats::add(&own.rotations, 1);
            tracing::info!(file = %path.display(), generation, "file rotated: finishing the old one")
        }
        Notice::Finished { path, generation } => {
            tracing::info!(file = %path.display(), generation, "file finished")
        }
        Notice::Lost { path, generation } => tracing::warn!(
            file = %path.display(), generation,
            "file disappeared while chargetail was stopped and was not found renamed; its unread end (if any) is lost — replay it from a backup if needed"
        ),
        Notice::Unterminated { .. } => {}
        Notice::Unreadable { path, error } => {
            Stats::add(&stats.source_unreadable, 1);
            Stats::add(&own.unreadable, 1);
            tracing::error!(file = %path.display(), %error, "cannot read file")
        }
    }
}
