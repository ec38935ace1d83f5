//! Shared test harness: real daemon processes, real files, real signals.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_chargetail")
}

pub const HEADER: &str =
    "time\ttransaction_id\tuser\taccount\tamount\tbalance\tjob_type\tpages\tdevice\tdocument\n";

/// One transaction-file line with a unique transaction id.
pub fn tx_line(n: u64) -> String {
    format!(
        "2026-11-20 09:{:02}:{:02}\ttx-{n:06}\tmember{}@harbourworks.com.au\tAcme Design\t-{}.{:02}\t10.00\tPRINT\t{}\tfloor2-mfd\tdoc {n}.pdf\n",
        (n / 60) % 60,
        n % 60,
        n % 7,
        n % 5,
        n % 100,
        n % 30 + 1
    )
}

/// Write a config for a transaction-file source in `dir`.
pub fn write_config(dir: &Path, pattern: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"test\"\npath = \"{}\"\ntimezone = \"Australia/Melbourne\"\ncurrency = \"AUD\"\npoll_interval_ms = 200\nrotate_grace_ms = 300\n\n[state]\npath = \"{}\"\n{extra}",
            dir.join(pattern).display(),
            dir.join("state/state.db").display()
        ),
    )
    .unwrap();
    cfg
}

pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A running `chargetail run` whose stdout lines are collected.
pub struct Daemon {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            .env("CHARGETAIL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start chargetail");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Daemon {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Collect stdout lines until `n` have been seen in total or the
    /// deadline passes; returns how many were seen.
    pub fn wait_for(&mut self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => break,
            }
        }
        self.seen.len()
    }

    /// Gather whatever arrives within `quiet`.
    pub fn drain(&mut self, quiet: Duration) {
        while let Ok(l) = self.lines.recv_timeout(quiet) {
            self.seen.push(l);
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe_kill(self.child.id() as i32, sig);
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(mut self) -> (Option<i32>, Vec<String>) {
        self.signal(15);
        let status = wait_timeout(&mut self.child, Duration::from_secs(20));
        self.drain(Duration::from_millis(100));
        (status, std::mem::take(&mut self.seen))
    }

    pub fn kill9(mut self) -> Vec<String> {
        self.signal(9);
        let _ = self.child.wait();
        self.drain(Duration::from_millis(50));
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unsafe_kill(pid: i32, sig: i32) {
    // `kill` from coreutils: no libc dependency needed for one call.
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The `id` of each event line.
pub fn ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
            v["id"].as_str().unwrap().to_string()
        })
        .collect()
}

pub fn tx_ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["data"]["transaction_id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

pub fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run chargetail")
}
