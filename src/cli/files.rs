//! The commands that read PaperCut files without the daemon: `parse`,
//! `inspect`, `replay`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};

use super::UsageError;
use crate::config::Config;
use crate::format::{LineParser, Parsed, Profile};

/// Expand globs; keep plain paths as given (so a missing file is an error
/// naming it, not silently nothing).
fn expand(paths: &[String]) -> anyhow::Result<Vec<PathBuf>> {
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

pub(super) fn parse(
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
    let mut out = std::io::stdout().lock();
    // Messages are rendered straight into one output buffer, written out
    // when it is full: no copy through a second buffer, nothing per line.
    const FLUSH_AT: usize = 128 * 1024;
    let mut bytes = Vec::with_capacity(FLUSH_AT + 4096);
    let mut bad = 0u64;
    let mut charges = 0u64;
    for file in files {
        let canonical =
            std::fs::canonicalize(&file).with_context(|| format!("{}", file.display()))?;
        let name = canonical.to_string_lossy().into_owned();
        let mut parser = LineParser::new(settings.clone(), name.clone());
        let mut write_err = None;
        crate::source::historical::read_lines(&canonical, max_line, |line, _| {
            let rendered = parser.parse_with(line, |c| {
                c.write_event_json(&settings.source_name, &mut bytes);
                bytes.push(b'\n');
            });
            match rendered {
                Parsed::Skip => {}
                Parsed::Charge(()) => {
                    charges += 1;
                    if bytes.len() >= FLUSH_AT {
                        if write_err.is_none() {
                            write_err = out.write_all(&bytes).err();
                        }
                        bytes.clear();
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
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    tracing::debug!(charges, bad, "parsed");
    Ok(if bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) fn inspect(
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

pub(super) fn replay(
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
