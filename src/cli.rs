//! The command line (docs/commands.md): the arguments, and each command
//! dispatched to a small function (`files`: parse, inspect, replay;
//! `state`: status, held, dead letters; `check`); the daemon, store and
//! stages do the work.

mod check;
mod files;
mod state;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::format::Profile;
use crate::logging::LogFormat;
use check::check;
use files::{inspect, parse, replay};
use state::{dead_letters, held_list, status};

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
            state::migrate_if_there(&cfg)?;
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
