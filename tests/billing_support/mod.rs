//! The rig of the billing tests (tests/billing.rs, tests/reconcile.rs): the
//! week (`support::week`) read by the test itself, a config around it, the
//! CLI, and the daemon with its stdout collected.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use crate::support::{self, wait_timeout, week};

pub use crate::support::week::FIXTURES;

/// One raw line of the fixture files, as the test reads it itself.
#[derive(Debug, Clone)]
pub struct Raw {
    pub day: String,
    pub time: String,
    pub tx: String,
    pub user: String,
    pub account: String,
    /// Billed: PaperCut writes a debit negative.
    pub billed: Decimal,
}

pub fn raw_lines() -> Vec<Raw> {
    let mut out = Vec::new();
    for day in 1..=7 {
        let text = std::fs::read_to_string(format!("{FIXTURES}/tx-2026-10-{day:02}.log")).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split('\t').collect();
            let amount: Decimal = f[4].parse().unwrap();
            out.push(Raw {
                day: f[0][..10].to_string(),
                time: f[0].to_string(),
                tx: f[1].to_string(),
                user: f[2].to_string(),
                account: f[3].to_string(),
                billed: -amount,
            });
        }
    }
    out
}

pub fn cents(d: Decimal) -> String {
    let mut d = d.round_dp(2);
    d.rescale(2);
    d.to_string()
}

pub const FULL_MAPPING: &str = "papercut,customer_id,team_id\nAcme Design,cus_acme,team_acme\nKoala Labs,cus_koala,\nmaya.chen@harbourworks.com.au,cus_maya,\nliam.ng@harbourworks.com.au,cus_liam,team_solo\nava.patel@harbourworks.com.au,cus_ava,\nnoah.kim@harbourworks.com.au,cus_noah,\n";

pub fn customer_of(account: &str) -> Option<&'static str> {
    Some(match account {
        "Acme Design" => "cus_acme",
        "Koala Labs" => "cus_koala",
        "maya.chen@harbourworks.com.au" => "cus_maya",
        "liam.ng@harbourworks.com.au" => "cus_liam",
        "ava.patel@harbourworks.com.au" => "cus_ava",
        "noah.kim@harbourworks.com.au" => "cus_noah",
        _ => return None,
    })
}

/// The week with `mapping`, a `[sink]` table (`sink`, and whatever else
/// goes before `[billing]`) and `[billing]` keys beside its mapping file.
pub fn setup(mapping: &str, sink: &str, billing: &str) -> (tempfile::TempDir, PathBuf) {
    week::setup(
        mapping,
        &format!("{sink}\n\n[billing]\nmapping_file = \"accounts.csv\"\n{billing}"),
    )
}

pub use crate::support::week::cli;

pub fn reconcile(dir: &Path, cfg: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["reconcile", "--config", cfg.to_str().unwrap(), "--json"];
    a.extend_from_slice(args);
    let (code, out) = cli(dir, &a);
    (
        code,
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")),
    )
}

pub fn replay_all(dir: &Path, cfg: &Path, extra: &[&str]) -> (i32, Vec<serde_json::Value>) {
    week::replay(dir, cfg, extra, "replay.log", "warn")
}

/// `chargetail run` (`support::Daemon`: stdout collected, each message
/// checked, logs in `daemon.log` beside the config), its messages as JSON.
pub struct Run {
    daemon: support::Daemon,
    pub seen: Vec<serde_json::Value>,
    pub log: PathBuf,
}

impl Run {
    pub fn start(dir: &Path, cfg: &Path) -> Run {
        Run {
            daemon: support::Daemon::start(cfg),
            seen: Vec::new(),
            log: dir.join("daemon.log"),
        }
    }

    pub fn wait_until(&mut self, within: Duration, done: impl Fn(&[serde_json::Value]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let new = std::mem::take(&mut self.daemon.seen);
            self.seen
                .extend(new.iter().map(|l| serde_json::from_str(l).unwrap()));
            if done(&self.seen) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out with {} events; log:\n{}",
                self.seen.len(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            self.daemon
                .wait_for(1, left.min(Duration::from_millis(200)));
        }
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.daemon.child.id().to_string()])
            .status()
            .unwrap();
    }

    pub fn stop(&mut self) -> Option<i32> {
        self.signal("-TERM");
        wait_timeout(&mut self.daemon.child, Duration::from_secs(20))
    }
}

pub fn charges(seen: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    seen.iter()
        .filter(|e| e["type"] == "papercut.charge")
        .collect()
}
