//! The rig of the billing tests (tests/billing.rs, tests/reconcile.rs): the
//! week in tests/fixtures/billing-week (refunds, shared and personal
//! accounts, the start of daylight saving in Melbourne on 2026-10-04, a
//! 23-hour day) read by the test itself, a config around it, the CLI, and
//! the daemon with its stdout collected.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use crate::support::{self, bin, wait_timeout};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/billing-week");

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

/// A directory with the week's files, a mapping and a config.
pub fn setup(mapping: &str, sink: &str, billing: &str) -> (tempfile::TempDir, PathBuf) {
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
            "[source]\nname = \"hw\"\npath = \"tx/*.log\"\ntimezone = \"Australia/Melbourne\"\ncurrency = \"AUD\"\npoll_interval_ms = 200\n\n[state]\npath = \"state/state.db\"\n\n{sink}\n\n[billing]\nmapping_file = \"accounts.csv\"\n{billing}\n"
        ),
    )
    .unwrap();
    (dir, cfg)
}

pub fn cli(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .env("CHARGETAIL_LOG", "warn")
        .stderr(std::fs::File::create(dir.join("cli.log")).unwrap())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

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
    let out = Command::new(bin())
        .args(["replay", "--config", cfg.to_str().unwrap()])
        .args(extra)
        .arg(dir.join("tx/*.log").to_str().unwrap())
        .env("CHARGETAIL_LOG", "warn")
        .stderr(std::fs::File::create(dir.join("replay.log")).unwrap())
        .output()
        .unwrap();
    let events = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            support::schema::check(l.as_bytes());
            serde_json::from_str(l).unwrap()
        })
        .collect();
    (out.status.code().unwrap_or(-1), events)
}

/// `chargetail run` with stdout collected and logs in a file.
pub struct Run {
    child: Child,
    lines: Receiver<String>,
    pub seen: Vec<serde_json::Value>,
    pub log: PathBuf,
}

impl Run {
    pub fn start(dir: &Path, cfg: &Path) -> Run {
        let log = dir.join("daemon.log");
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(cfg)
            .env("CHARGETAIL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Run {
            child,
            lines: rx,
            seen: Vec::new(),
            log,
        }
    }

    pub fn wait_until(&mut self, within: Duration, done: impl Fn(&[serde_json::Value]) -> bool) {
        let deadline = Instant::now() + within;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out with {} events; log:\n{}",
                self.seen.len(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            if let Ok(l) = self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                support::schema::check(l.as_bytes());
                self.seen.push(serde_json::from_str(&l).unwrap());
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    pub fn stop(&mut self) -> Option<i32> {
        self.signal("-TERM");
        wait_timeout(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn charges(seen: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    seen.iter()
        .filter(|e| e["type"] == "papercut.charge")
        .collect()
}
