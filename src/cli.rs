//! The command line (docs/commands.md). Each command is a small function;
//! the daemon, store and stages do the work.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::format::{LineParser, Parsed, Profile};
use crate::logging::LogFormat;
use crate::store::{now_ms, Store};

#[derive(Debug, Parser)]
#[command(
    name = "chargetail",
    version,
    about = "Follow PaperCut transaction files and deliver every charge exactly once in effect"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: follow the source, deliver to the sink, until SIGTERM/SIGINT.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read historical files (paths or globs, .gz too) once, oldest first; deliver what was never delivered; print a summary.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// Parse and reckon everything; send and record nothing.
        #[arg(long)]
        dry_run: bool,
        /// The summary as JSON (on stdout, or stderr when the sink is stdout).
        #[arg(long)]
        json: bool,
        /// Override the source's input profile.
        #[arg(long, value_enum)]
        profile: Option<Profile>,
        /// Which [[source]] the files are from (default: the only one, or the one whose path matches them).
        #[arg(long)]
        source: Option<String>,
        /// Stop waiting for delivery after this many seconds without progress.
        #[arg(long, default_value_t = 120)]
        give_up_after: u64,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Print each charge of the files as one JSON line; bad lines to stderr. Touches no state.
    Parse {
        /// Input profile (default: the config's, else transaction-file).
        #[arg(long, value_enum)]
        profile: Option<Profile>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Which [[source]] of the config (default: the only one).
        #[arg(long)]
        source: Option<String>,
        /// Files or globs.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Find how an undocumented file reads (profile, encoding, columns, time, sign, dead letters); print a ready [source] section.
    Inspect {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Which [[source]] of the config (default: the only one).
        #[arg(long)]
        source: Option<String>,
        /// The findings as one JSON object per file on stdout (section included).
        #[arg(long)]
        json: bool,
        /// Files or globs.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Per-file position and lag, outbox backlog, dead letters, last delivery.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Inspect and act on charges that could not be delivered and lines that could not be parsed.
    DeadLetters {
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        action: DeadAction,
    },
    /// Validate the config and reach the sink; exit 0 only if both are fine.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Charges read over a period, grouped, against what was delivered, to the cent; exit 0 only if all were delivered.
    Reconcile {
        #[arg(long, short)]
        config: PathBuf,
        /// First local day (YYYY-MM-DD, the source's zone), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Last local day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value_t = crate::reconcile::GroupBy::Account)]
        by: crate::reconcile::GroupBy,
        /// A PaperCut CSV export of the same period to compare with.
        #[arg(long)]
        against: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Charges held back for want of an account mapping (`[billing] unmapped = "hold"`).
    Held {
        #[command(subcommand)]
        action: HeldAction,
    },
    /// Write shell completions to stdout (for packaging).
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Write the man page (roff) to stdout, or with --out every page (one per command) into a directory (for packaging).
    #[command(hide = true)]
    Man {
        /// Directory for chargetail.1, chargetail-run.1, … (every page the main page names).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HeldAction {
    /// List held charges (oldest first).
    List {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadAction {
    /// List dead letters.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Put dead charges back in the outbox (the given ids, or all with --all).
    Retry {
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        ids: Vec<String>,
    },
    /// Delete dead letters for good.
    Drop {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Confirm: dropped charges are never billed.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs the command; maps errors to the contract's exit codes (2: bad usage
/// or config, 1: runtime failure).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    quiet_on_closed_stdout();
    // Under JSON logs or journald an error is a log record; else one line.
    let as_log = matches!(cli.log_format, crate::logging::LogFormat::Json)
        || std::env::var_os("JOURNAL_STREAM").is_some();
    crate::logging::init(cli.log_format);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) if is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let usage = e.chain().any(|c| {
                c.downcast_ref::<ConfigError>().is_some()
                    || c.downcast_ref::<UsageError>().is_some()
            });
            // Said once: as a log record, or as one plain line.
            if as_log {
                tracing::error!("{e:#}");
            } else {
                eprintln!("chargetail: {e:#}");
            }
            if usage {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The reader of our stdout went away (`chargetail parse … | head`): not an
/// error of ours.
fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` (and clap's writers) panic when stdout is a closed pipe; such
/// a panic ends the command quietly with status 0 instead (every other panic
/// is reported as usual).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") || msg.contains("BrokenPipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// A usage error discovered after argument parsing (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn dispatch(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            crate::daemon::run(cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            config,
            dry_run,
            json,
            profile,
            source,
            give_up_after,
            paths,
        } => replay(
            &config,
            dry_run,
            json,
            profile,
            source.as_deref(),
            give_up_after,
            &paths,
        ),
        Command::Parse {
            profile,
            config,
            source,
            paths,
        } => parse(profile, config.as_deref(), source.as_deref(), &paths),
        Command::Inspect {
            config,
            source,
            json,
            paths,
        } => inspect(config.as_deref(), source.as_deref(), json, &paths),
        Command::Status { config, json } => status(&Config::load(&config)?, json),
        Command::DeadLetters { config, action } => dead_letters(&Config::load(&config)?, action),
        Command::Check { config } => check(&Config::load(&config)?),
        Command::Reconcile {
            config,
            from,
            to,
            by,
            against,
            json,
        } => {
            let cfg = Config::load(&config)?;
            for d in [&from, &to].into_iter().flatten() {
                if chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() {
                    return Err(UsageError(format!("{d:?} is not a date like 2026-11-20")).into());
                }
            }
            let period = crate::reconcile::Period { from, to };
            migrate_if_there(&cfg)?;
            let report =
                crate::reconcile::reconcile(&cfg.state.path, &period, by, against.as_deref())?;
            let mut out = std::io::stdout().lock();
            if json {
                let _ = writeln!(out, "{}", serde_json::to_string_pretty(&report)?);
            } else {
                let _ = crate::reconcile::print_table(&report, &mut out);
            }
            Ok(if report.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Held {
            action: HeldAction::List { config, json },
        } => held_list(&Config::load(&config)?, json),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "chargetail",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => {
            use clap::CommandFactory;
            // No `help` subcommand in the pages: the main page would name a
            // chargetail-help(1) that is not worth shipping.
            let cmd = Cli::command().disable_help_subcommand(true);
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    clap_mangen::generate_to(cmd, &dir)
                        .with_context(|| format!("writing the man pages into {}", dir.display()))?;
                }
                None => clap_mangen::Man::new(cmd)
                    .render(&mut std::io::stdout())
                    .context("writing the man page")?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Expand globs; keep plain paths as given (so a missing file is an error
/// naming it, not silently nothing).
pub fn expand(paths: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.contains(['*', '?', '[']) {
            let mut matched: Vec<PathBuf> = glob::glob(p)
                .map_err(|e| UsageError(format!("bad glob {p:?}: {e}")))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if matched.is_empty() {
                return Err(UsageError(format!("{p:?} matches no file")).into());
            }
            matched.sort();
            out.extend(matched);
        } else {
            if !Path::new(p).is_file() {
                return Err(UsageError(format!("{p}: no such file")).into());
            }
            out.push(PathBuf::from(p));
        }
    }
    Ok(out)
}

/// Settings for `parse` without a config: the profile's defaults, UTC.
fn default_source() -> crate::config::SourceConfig {
    let text = "name = \"papercut\"\npath = \"-\"\n";
    // A constant that parses: only the defaults are filled in.
    let mut src: crate::config::SourceConfig =
        toml::from_str(text).unwrap_or_else(|_| unreachable!("constant source config parses"));
    src.timezone_from_system = true;
    src
}

fn parse(
    profile: Option<Profile>,
    config: Option<&Path>,
    source: Option<&str>,
    paths: &[String],
) -> anyhow::Result<ExitCode> {
    let (src, max_line) = match config {
        Some(c) => {
            let src = Config::load(c)?.source(source)?.clone();
            let max = src.max_line_bytes;
            (src, max)
        }
        None => (default_source(), 64 * 1024),
    };
    let profile = profile.unwrap_or(src.profile);
    let settings = Arc::new(src.format_settings_as(profile).map_err(UsageError)?);
    let files = expand(paths)?;
    eprintln!(
        "chargetail: local times are read in {}",
        crate::config::describe_timezone(&src)
    );
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut bad = 0u64;
    let mut charges = 0u64;
    for file in files {
        let canonical =
            std::fs::canonicalize(&file).with_context(|| format!("{}", file.display()))?;
        let name = canonical.to_string_lossy().into_owned();
        let mut parser = LineParser::new(settings.clone(), name.clone());
        let mut write_err = None;
        // One buffer for every message (an allocation per line showed).
        let mut bytes = Vec::with_capacity(2048);
        crate::source::historical::read_lines(&canonical, max_line, |line, _| {
            match parser.parse(&line) {
                Parsed::Skip => {}
                Parsed::Charge(c) => {
                    charges += 1;
                    bytes.clear();
                    c.write_event_json(&settings.source_name, &mut bytes);
                    bytes.push(b'\n');
                    if let Err(e) = out.write_all(&bytes) {
                        write_err.get_or_insert(e);
                    }
                }
                Parsed::Error(reason) => {
                    bad += 1;
                    eprintln!(
                        "{name}:{}: {reason} (byte offset {})",
                        line.number, line.offset
                    );
                }
            }
        })
        .with_context(|| format!("reading {name}"))?;
        if let Some(e) = write_err {
            return Err(anyhow!(e).context("writing to stdout"));
        }
    }
    out.flush().context("writing to stdout")?;
    tracing::debug!(charges, bad, "parsed");
    Ok(if bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn inspect(
    config: Option<&Path>,
    source: Option<&str>,
    json: bool,
    paths: &[String],
) -> anyhow::Result<ExitCode> {
    let (src, max_line, zone_configured) = match config {
        Some(c) => {
            let src = Config::load(c)?.source(source)?.clone();
            let max = src.max_line_bytes;
            let configured = !src.timezone_from_system;
            (src, max, configured)
        }
        None => (default_source(), 64 * 1024, false),
    };
    let mut clean = true;
    let mut out = std::io::stdout().lock();
    for file in expand(paths)? {
        // The trial parses would each log what `auto` detected: the report says it once.
        let report = tracing::subscriber::with_default(
            tracing::subscriber::NoSubscriber::default(),
            || crate::inspect::inspect(&src, &file, max_line, zone_configured),
        )?;
        clean &= report.clean();
        let _ = crate::inspect::print_diagnostics(&report, &mut std::io::stderr().lock());
        if json {
            writeln!(out, "{}", serde_json::to_string(&report)?).context("writing to stdout")?;
        } else {
            writeln!(out, "{}", report.section).context("writing to stdout")?;
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn replay(
    config: &Path,
    dry_run: bool,
    json: bool,
    profile: Option<Profile>,
    source: Option<&str>,
    give_up_after: u64,
    paths: &[String],
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let files = expand(paths)?;
    let mut src = crate::replay::source_of(&cfg, source, &files)?.clone();
    if let Some(p) = profile {
        src.profile = p;
    }
    let opts = crate::replay::ReplayOptions {
        dry_run,
        json,
        give_up_after: std::time::Duration::from_secs(give_up_after),
    };
    let summary = crate::replay::replay(&cfg, &src, files, &opts)?;
    let text = if json {
        serde_json::to_string_pretty(&summary)?
    } else {
        summary.render()
    };
    // Data goes to stdout, except when the charges themselves do.
    let charges_on_stdout = cfg.sink.kind == crate::config::SinkKind::Stdout && !dry_run;
    if json && !charges_on_stdout {
        println!("{text}");
    } else {
        eprint!("{text}");
    }
    if !summary.complete() {
        eprintln!(
            "chargetail: replay incomplete: {} not delivered, {} dead letters, {} unparsable lines",
            summary.still_pending, summary.dead_letters, summary.bad_lines
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn ago(ms: Option<i64>) -> String {
    match ms {
        Some(t) => format!("{}s ago", ((now_ms() - t) / 1000).max(0)),
        None => "never".into(),
    }
}

fn status(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    if !cfg.state.path.exists() {
        return Err(anyhow!(
            "no state database at {} (chargetail has not run yet)",
            cfg.state.path.display()
        ));
    }
    let store = Store::open_unchecked(&cfg.state.path)?;
    let totals = store.totals()?;
    let running = crate::run_lock::RunLock::is_held(&cfg.state.path);
    let checkpoints = store.checkpoints()?;
    // A database from before sources had names: its rows belong to the
    // only source (the daemon records that at its next start).
    let owner = |c: &crate::source::Checkpoint| match (c.source.as_str(), cfg.sources.as_slice()) {
        ("", [one]) => one.name.clone(),
        (name, _) => name.to_string(),
    };
    let file_json = |c: &crate::source::Checkpoint| {
        let size = std::fs::metadata(&c.path).ok().map(|m| m.len());
        serde_json::json!({
            "source": owner(c), "path": c.path, "generation": c.generation, "offset": c.offset,
            "line": c.line, "size": size, "lag_bytes": size.map(|s| s.saturating_sub(c.offset)),
        })
    };
    let files: Vec<serde_json::Value> = checkpoints
        .iter()
        .filter(|c| !c.finished)
        .map(file_json)
        .collect();
    let sources: Vec<serde_json::Value> = cfg
        .sources
        .iter()
        .map(|src| {
            let mine: Vec<&serde_json::Value> =
                files.iter().filter(|f| f["source"] == src.name).collect();
            let lag: u64 = mine.iter().filter_map(|f| f["lag_bytes"].as_u64()).sum();
            serde_json::json!({
                "name": src.name, "path": src.path, "profile": src.profile.as_str(),
                "timezone": src.timezone, "timezone_from_system": src.timezone_from_system,
                "lag_bytes": lag, "files": mine,
            })
        })
        .collect();
    let (held_unmapped, held_papercut) =
        match crate::billing::Ledger::open_existing(&cfg.state.path)? {
            Some(l) => l.held_by_reason()?,
            None => (0, 0),
        };
    let held = held_unmapped + held_papercut;
    if json {
        let v = serde_json::json!({
            "daemon_running": running,
            "timezone": cfg.sources[0].timezone,
            "timezone_from_system": cfg.sources[0].timezone_from_system,
            "sources": sources,
            "files": files,
            "outbox": totals,
            "held": held,
            "held_papercut": held_papercut,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "daemon:        {}",
        if running { "running" } else { "not running" }
    );
    println!("state:         {}", cfg.state.path.display());
    for (src, view) in cfg.sources.iter().zip(&sources) {
        if cfg.sources.len() > 1 {
            println!("source:        {} ({})", src.name, src.path);
        }
        println!("time zone:     {}", crate::config::describe_timezone(src));
        println!("files:");
        let mine = view["files"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if mine.is_empty() {
            println!("  (none followed yet)");
        }
        for f in mine {
            println!(
                "  {}  offset {}  line {}  lag {} bytes",
                f["path"].as_str().unwrap_or("?"),
                f["offset"],
                f["line"],
                f["lag_bytes"]
            );
        }
    }
    println!(
        "backlog:       {} pending (oldest read {})",
        totals.pending,
        ago(totals.oldest_pending_ms)
    );
    println!(
        "delivered:     {} (last {})",
        totals.delivered,
        ago(totals.last_delivered_ms)
    );
    println!(
        "dead letters:  {} charges, {} unparsable lines",
        totals.dead_charges, totals.bad_lines
    );
    if held_unmapped > 0 {
        println!(
            "held:          {held_unmapped} charges without an account mapping (`chargetail held list`)"
        );
    }
    if held_papercut > 0 {
        println!(
            "held:          {held_papercut} charges waiting for PaperCut (`chargetail held list`)"
        );
    }
    if let Some(e) = totals.last_error {
        println!("last error:    {e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Migrate the state database, if there is one, before reading the
/// ledger (a state last written by an older release has its old tables).
fn migrate_if_there(cfg: &Config) -> anyhow::Result<()> {
    if cfg.state.path.exists() {
        Store::open_unchecked(&cfg.state.path)?;
    }
    Ok(())
}

fn held_list(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    migrate_if_there(cfg)?;
    let ledger = match crate::billing::Ledger::open_existing(&cfg.state.path)? {
        Some(l) => l,
        None => {
            println!("no held charges");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let held = ledger.held(0, usize::MAX, None)?;
    if json {
        let v: Vec<_> = held
            .iter()
            .map(|(_, h)| {
                serde_json::json!({
                    "id": h.charge.id, "user": h.user, "account": h.charge.account,
                    "account_type": h.charge.account_type, "amount": h.charge.amount,
                    "currency": h.charge.currency, "file": h.charge.file, "line": h.charge.line,
                    "held_ms": h.created_ms, "reason": h.reason.as_str(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if held.is_empty() {
        println!("no held charges");
    } else {
        for (_, h) in &held {
            println!(
                "{}\t{}\t{}\t{} ({})\t{} {}\t{}:{}",
                h.reason.as_str(),
                h.charge.id,
                h.user,
                h.charge.account,
                h.charge.account_type,
                h.charge.amount.as_deref().unwrap_or("-"),
                h.charge.currency,
                h.charge.file,
                h.charge.line
            );
        }
        let papercut = held
            .iter()
            .filter(|(_, h)| h.reason == crate::billing::HoldReason::Papercut)
            .count();
        println!(
            "{} held: {} unmapped (add their accounts to the mapping file), {papercut} waiting for PaperCut",
            held.len(),
            held.len() - papercut
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn dead_letters(cfg: &Config, action: DeadAction) -> anyhow::Result<ExitCode> {
    let mut store = Store::open(&cfg.state.path)?;
    match action {
        DeadAction::List { json } => {
            let list = store.dead_letters()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no dead letters");
            } else {
                for d in list {
                    println!(
                        "{}\t{}:{} (offset {})\tattempts {}\t{}\t{}",
                        d.id, d.file, d.line, d.offset, d.attempts, d.reason, d.preview
                    );
                }
            }
        }
        DeadAction::Retry { all, ids } => {
            if !all && ids.is_empty() {
                return Err(UsageError("name the ids to retry, or --all".into()).into());
            }
            let n = store.retry_dead(&ids)?;
            // Also tells a running daemon to lift a paused endpoint.
            store.bump_resume_token()?;
            println!("{n} charges back in the outbox");
        }
        DeadAction::Drop { ids, yes } => {
            if !yes {
                return Err(UsageError(
                    "dropping dead letters loses those charges for good; add --yes".into(),
                )
                .into());
            }
            let n = store.drop_dead(&ids)?;
            println!("{n} dead letters dropped");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(cfg: &Config) -> anyhow::Result<ExitCode> {
    println!("config {}: ok", cfg.file.display());
    for src in &cfg.sources {
        if let Some(w) = source_path_warning(&src.path) {
            println!("warning: {w}");
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        use crate::sink::Sink;
        cfg.make_sink()?.check().await
    })?;
    println!("{report}");
    if let Some(p) = &cfg.papercut {
        // api.isUserExists: PaperCut answers only a valid token from an
        // allowed address.
        crate::billing::enrich::check(p).map_err(|e| anyhow::anyhow!("[papercut] {e}"))?;
        println!("papercut {}: token accepted", p.url);
    }
    Ok(ExitCode::SUCCESS)
}

/// `[source] path` matching nothing in a directory that does not exist is
/// most likely a typo (the daemon would wait for it forever).
fn source_path_warning(pattern: &str) -> Option<String> {
    let matched = glob::glob(pattern).ok()?.filter_map(Result::ok).next();
    if matched.is_some() {
        return None;
    }
    // The directory part before the first glob character.
    let cut = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
    let dir = Path::new(&pattern[..cut]);
    let dir = if pattern[..cut].ends_with('/') {
        dir
    } else {
        dir.parent().unwrap_or(Path::new("/"))
    };
    (!dir.is_dir()).then(|| {
        format!(
            "[source] path {pattern:?} matches no file and its directory {} does not exist",
            dir.display()
        )
    })
}
