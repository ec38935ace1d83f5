//! `chargetail run`: wires source → format → store → deliver → sink and
//! runs until SIGTERM/SIGINT.
//!
//! Threads: the source loop is blocking file I/O and SQLite, so it runs on
//! its own thread; delivery runs on a small tokio runtime (the sinks are
//! async). They share the SQLite file (each has a connection), the
//! `Handoff` that carries committed charges to delivery in memory (and wakes
//! it), the stats and the shutdown.

mod source_loop;
mod ticks;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{Config, SourceConfig};
use crate::deliver::{DeliverSettings, Deliverer, Handoff, OtherWriters};
use crate::format::{FormatSettings, LineParser};
use crate::ingest::Batch;
use crate::run_lock::RunLock;
use crate::shutdown::Shutdown;
use crate::sink::Sink;
use crate::source::{Checkpoint, Follower, Notice, SourceEvent};
use crate::stats::{SourceStats, Stats};
use crate::store::{BadLine, Store};
use source_loop::{source_loop, Delivery};

pub fn run(cfg: Config) -> anyhow::Result<()> {
    // Registered before anything else (the lock included, which `status`
    // reports as "running"): a SIGTERM during start-up is then held for the
    // signal thread and ends the daemon cleanly, instead of killing it
    // with the default action.
    let signals = {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .context("installing signal handlers")?
    };
    let _lock = RunLock::acquire(&cfg.state.path)?;
    let store = Store::open(&cfg.state.path)?;
    // No commit of the daemon runs a checkpoint (its fsync would hold up
    // the line behind it): a thread of their own does, between bursts.
    let checkpointer = crate::store::Checkpointer::start(&cfg.state.path)?;
    checkpointer.attach(&store)?;
    let mut sources = Vec::new();
    for src in &cfg.sources {
        let settings = src
            .format_settings()
            .map_err(|e| anyhow!("[source {:?}]: {e}", src.name))?;
        sources.push((src.clone(), Arc::new(settings)));
    }
    if let Some(level) = &cfg.log.level {
        crate::logging::set_log_level(level)
            .map_err(|e| anyhow!("config {}: [log] {e}", cfg.file.display()))?;
    }
    let shutdown = Shutdown::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let billing = crate::billing::Billing::open(cfg.billing.as_ref(), &cfg.state.path)
        .and_then(|b| b.with_papercut(cfg.papercut.as_ref(), &cfg.state.path))
        .map_err(|e| anyhow!("[billing]: {e}"))?;
    // Rung by every source's watcher, by SIGHUP and by shutdown: the source
    // loop sleeps until its next deadline or this.
    let bell = crate::source::Bell::default();
    {
        let bell = bell.clone();
        shutdown.on_trigger(move || bell.ring());
    }
    install_signal_handlers(
        signals,
        shutdown.clone(),
        cfg.clone(),
        reload_tx,
        billing.reload_flag(),
        bell.clone(),
    )?;

    let stats = Arc::new(Stats::default());
    // Registered before the HTTP listener starts, so every source has its
    // series from the first scrape.
    let sources: Vec<_> = sources
        .into_iter()
        .map(|(src, settings)| {
            let own = stats.add_source(&src.name);
            (src, settings, own)
        })
        .collect();
    let handoff = Arc::new(Handoff::new(cfg.delivery.queue));
    // Before delivery starts (see `OtherWriters::new`).
    let other_writers = OtherWriters::new(&store)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("chargetail-deliver")
        .build()
        .context("starting the async runtime")?;

    // Checked above; a second full scan would only double the start time.
    let deliver_store = Store::open_unchecked(&cfg.state.path)?;
    checkpointer.attach(&deliver_store)?;
    let reader = Store::open_unchecked(&cfg.state.path)?;
    let sink = cfg.make_sink()?;
    let policy = cfg.delivery.retry_policy();
    let deliver = {
        let (stats, handoff, shutdown, cfg) = (
            stats.clone(),
            handoff.clone(),
            shutdown.clone(),
            cfg.clone(),
        );
        runtime.spawn(async move {
            let d = Deliverer::new(
                deliver_store,
                sink,
                policy,
                cfg.delivery.batch,
                handoff,
                stats,
            )
            .with_reader(reader)
            .with_reload(reload_rx);
            run_deliverer(d, shutdown).await
        })
    };

    // If delivery ends early (a panic, a failing database), stop reading
    // too: the daemon exits non-zero and systemd restarts it, rather than
    // reading on with nothing delivering.
    let deliver = {
        let shutdown = shutdown.clone();
        runtime.spawn(async move {
            let r = deliver.await;
            shutdown.trigger();
            r
        })
    };

    let http = match &cfg.http {
        Some(h) => {
            let token = match &h.token_file {
                Some(f) => Some(crate::http::auth::read_token(f).map_err(|message| {
                    crate::config::ConfigError::Invalid {
                        path: cfg.file.clone(),
                        message,
                    }
                })?),
                None => None,
            };
            if token.is_none() && !crate::http::auth::is_loopback(&h.listen) {
                tracing::warn!(
                    listen = %h.listen,
                    "[http] listens beyond this machine without a token_file: anyone who can reach it \
                     reads the status page, /status and /metrics; set [http] token_file"
                );
            }
            let listener = runtime.block_on(crate::http::bind(&h.listen))?;
            let state = Arc::new(
                crate::http::HttpState::new(
                    stats.clone(),
                    Store::open_unchecked(&cfg.state.path)?,
                    cfg.clone(),
                    token,
                )
                .with_billing(billing.stats.clone()),
            );
            tracing::info!(listen = %h.listen, token = state.token.is_some(), "serving /, /healthz, /metrics, /status");
            Some(runtime.spawn(crate::http::serve(listener, state, shutdown.clone())))
        }
        None => None,
    };

    for src in &cfg.sources {
        tracing::info!(
            source = %src.name,
            path = %src.path,
            profile = src.profile.as_str(),
            state = %cfg.state.path.display(),
            timezone = %crate::config::describe_timezone(src),
            "chargetail running"
        );
    }
    let source_result = {
        let (stats, handoff, shutdown, cfg) = (
            stats.clone(),
            handoff.clone(),
            shutdown.clone(),
            cfg.clone(),
        );
        std::thread::Builder::new()
            .name("chargetail-source".into())
            .spawn(move || {
                let delivery = Delivery {
                    handoff,
                    other_writers,
                };
                source_loop(
                    &cfg, store, billing, sources, stats, delivery, bell, shutdown,
                )
            })
            .context("starting the source thread")?
            .join()
            .map_err(|_| anyhow!("the source thread panicked"))?
    };
    // Whatever ended the reader (shutdown or a failure), stop delivery too:
    // the in-flight batch finishes and is recorded; the rest stays pending.
    shutdown.trigger();
    let deliver_result = runtime
        .block_on(deliver)
        .map_err(|e| anyhow!("the delivery task failed: {e}"))?
        .map_err(|e| anyhow!("the delivery task failed: {e}"))?;
    if let Some(h) = http {
        match runtime.block_on(h) {
            Ok(Err(e)) => tracing::warn!("{e:#}"),
            Err(e) => tracing::warn!("HTTP task: {e}"),
            Ok(Ok(())) => {}
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    source_result?;
    deliver_result?;
    tracing::info!("chargetail stopped cleanly");
    Ok(())
}

async fn run_deliverer<S: Sink>(d: Deliverer<S>, shutdown: Shutdown) -> anyhow::Result<()> {
    let res = d.run(shutdown.clone()).await;
    if res.is_err() {
        // The reader must stop too: the state database is failing.
        shutdown.trigger();
    }
    Ok(res?)
}

fn install_signal_handlers(
    mut signals: signal_hook::iterator::Signals,
    shutdown: Shutdown,
    current: Config,
    reload: UnboundedSender<DeliverSettings>,
    billing_reload: Arc<std::sync::atomic::AtomicBool>,
    bell: crate::source::Bell,
) -> anyhow::Result<()> {
    use signal_hook::consts::SIGHUP;
    std::thread::Builder::new()
        .name("chargetail-signals".into())
        .spawn(move || {
            let mut current = current;
            for sig in signals.forever() {
                if sig == SIGHUP {
                    billing_reload.store(true, std::sync::atomic::Ordering::Relaxed);
                    bell.ring();
                    if let Some(next) = reload_config(&current) {
                        let _ = reload.send(next.deliver_settings());
                        current = next;
                    }
                    continue;
                }
                tracing::info!(signal = sig, "stopping: finishing in-flight work");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                shutdown.trigger();
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// SIGHUP: re-read the config. Apply here what this thread can (log level);
/// the deliverer applies retry settings and sink secrets; everything else is
/// logged as needing a restart. A config that does not load changes nothing.
fn reload_config(current: &Config) -> Option<Config> {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    let next = match Config::load(&current.file) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload: {e}; keeping the running configuration");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            return None;
        }
    };
    tracing::info!(config = %current.file.display(), "reload: configuration re-read");
    if next.log.level != current.log.level {
        let level = next.log.level.as_deref().unwrap_or("info");
        match crate::logging::set_log_level(level) {
            Ok(()) => tracing::info!(level, "reload: log level applied"),
            Err(e) => tracing::error!("reload: {e}"),
        }
    }
    let restart = |what: &str, changed: bool| {
        if changed {
            tracing::warn!("reload: {what} changed; it takes effect after a restart");
        }
    };
    restart(
        "[source]",
        format!("{:?}", next.sources) != format!("{:?}", current.sources),
    );
    restart(
        "[state]",
        format!("{:?}", next.state) != format!("{:?}", current.state),
    );
    restart(
        "[http]",
        format!("{:?}", next.http) != format!("{:?}", current.http),
    );
    restart("[sink] kind", next.sink.kind != current.sink.kind);
    restart(
        "[sink.amqp]",
        format!("{:?}", next.sink.amqp) != format!("{:?}", current.sink.amqp),
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    Some(next)
}
