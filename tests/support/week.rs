//! The billing week, tests/fixtures/billing-week (refunds, shared and
//! personal accounts, the start of daylight saving in Melbourne on
//! 2026-10-04, a 23-hour day), as the billing, reconcile and PaperCut tests
//! set it up: its files copied, an account mapping, a config; and a replay
//! over it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{bin, schema};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/billing-week");

/// A directory with the week's files in `tx/`, `mapping` as `accounts.csv`
/// and a config reading them as source "hw" (Melbourne, AUD; a 200 ms
/// poll), `rest` after its `[state]`: (the directory, the config).
pub fn setup(mapping: &str, rest: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tx = dir.path().join("tx");
    std::fs::create_dir(&tx).unwrap();
    for day in 1..=7 {
        let name = format!("tx-2026-10-{day:02}.log");
        std::fs::copy(format!("{FIXTURES}/{name}"), tx.join(&name)).unwrap();
    }
    std::fs::write(dir.path().join("accounts.csv"), mapping).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"hw\"\npath = \"tx/*.log\"\ntimezone = \"Australia/Melbourne\"\n\
             currency = \"AUD\"\npoll_interval_ms = 200\n\n[state]\npath = \"state/state.db\"\n\n\
             {rest}\n"
        ),
    )
    .unwrap();
    (dir, cfg)
}

/// A `chargetail` command: (exit code, stdout); its log (warnings) in
/// `dir/cli.log`. The PaperCut token comes from the config's file only.
pub fn cli(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .env("CHARGETAIL_LOG", "warn")
        .env_remove("CHARGETAIL_PAPERCUT_TOKEN")
        .stderr(std::fs::File::create(dir.join("cli.log")).unwrap())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// `chargetail replay` of the week's files with `extra` arguments, its log
/// (at `level`) in `dir/log`: (exit code, the messages it wrote). The
/// PaperCut token comes from the config's file only.
pub fn replay(
    dir: &Path,
    cfg: &Path,
    extra: &[&str],
    log: &str,
    level: &str,
) -> (i32, Vec<serde_json::Value>) {
    let out = Command::new(bin())
        .args(["replay", "--config", cfg.to_str().unwrap()])
        .args(extra)
        .arg(dir.join("tx/*.log").to_str().unwrap())
        .env("CHARGETAIL_LOG", level)
        .env_remove("CHARGETAIL_PAPERCUT_TOKEN")
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        schema::messages(&out.stdout),
    )
}
