//! The commands that read or change the state database: `status`,
//! `held list`, `dead-letters`.

use std::process::ExitCode;

use anyhow::anyhow;

use super::{DeadAction, UsageError};
use crate::config::Config;
use crate::store::{now_ms, Store};

fn ago(ms: Option<i64>) -> String {
    match ms {
        Some(t) => format!("{}s ago", ((now_ms() - t) / 1000).max(0)),
        None => "never".into(),
    }
}

pub(super) fn status(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
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
pub(super) fn migrate_if_there(cfg: &Config) -> anyhow::Result<()> {
    if cfg.state.path.exists() {
        Store::open_unchecked(&cfg.state.path)?;
    }
    Ok(())
}

pub(super) fn held_list(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
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

pub(super) fn dead_letters(cfg: &Config, action: DeadAction) -> anyhow::Result<ExitCode> {
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
