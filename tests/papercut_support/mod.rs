//! The rig of the PaperCut tests (tests/papercut.rs, tests/papercut_outage.rs):
//! tests/papercut_server.py, Python's standard `xmlrpc.server` with
//! PaperCut's semantics (faults for a wrong token and an unknown user or
//! shared account), a slow mode and a down mode; the week of
//! tests/fixtures/billing-week with a config; replay and the daemon.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, bin, free_http_port, http_get, metric, week};

pub const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/papercut_server.py");
pub const TOKEN: &str = "pc-t0ken-s3cret-4711";
/// Charges in the week (4 users; noah.kim is unknown to the server).
pub const CHARGES: usize = 72;

pub struct Server {
    child: Child,
    pub port: u16,
    control: PathBuf,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        let control = dir.join("pc");
        std::fs::create_dir_all(&control).unwrap();
        let users = serde_json::json!({
            "liam.ng@harbourworks.com.au": {"full-name": "Liam Ng", "email": "liam.ng@harbourworks.com.au", "department": "cus_liam_pc", "notes": "cus_liam_notes"},
            "ava.patel@harbourworks.com.au": {"full-name": "Ava Patel", "email": "ava.patel@harbourworks.com.au", "department": "cus_ava_pc", "notes": "cus_ava_notes"},
            "maya.chen@harbourworks.com.au": {"full-name": "Maya Chen", "email": "maya.chen@harbourworks.com.au", "department": ""},
        });
        let users_file = control.join("users.json");
        std::fs::write(&users_file, users.to_string()).unwrap();
        let mut child = Command::new("python3")
            .arg(SERVER)
            .arg(TOKEN)
            .arg(&users_file)
            .arg(&control)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(control.join("server.log")).unwrap())
            .spawn()
            .expect("python3 (tests need it: scripts/test.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        Server {
            child,
            port,
            control,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/rpc/api/xmlrpc", self.port)
    }

    /// The shared accounts the server knows (before `start`: it reads
    /// them once).
    pub fn shared_accounts(dir: &Path, accounts: serde_json::Value) {
        let control = dir.join("pc");
        std::fs::create_dir_all(&control).unwrap();
        std::fs::write(control.join("shared.json"), accounts.to_string()).unwrap();
    }

    pub fn mode(&self, mode: &str) {
        std::fs::write(self.control.join("mode"), mode).unwrap();
    }

    pub fn calls(&self) -> BTreeMap<String, u64> {
        std::fs::read_to_string(self.control.join("calls.json"))
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap_or_default()
    }

    pub fn total(&self, method: &str) -> u64 {
        self.calls()
            .iter()
            .filter(|(k, _)| k.starts_with(method))
            .map(|(_, v)| v)
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on (bound, then closed).
pub fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The week with its shared accounts mapped (personal ones get their
/// customer from PaperCut's "department"), stdout, and `[papercut]` at
/// `url` with `token` in a file, plus `papercut_extra`.
pub fn setup(url: &str, token: &str, papercut_extra: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, cfg) = week::setup(
        "papercut,customer_id,team_id\nAcme Design,cus_acme,team_acme\nKoala Labs,cus_koala,\n",
        &format!(
            "[sink]\nkind = \"stdout\"\n\n[billing]\nmapping_file = \"accounts.csv\"\n\n\
             [papercut]\nurl = \"{url}\"\ntoken_file = \"pc-token\"\n\
             user_properties = [\"full-name\", \"email\", \"department\"]\n\
             customer_property = \"department\"\n{papercut_extra}"
        ),
    );
    std::fs::write(dir.path().join("pc-token"), format!("{token}\n")).unwrap();
    (dir, cfg)
}

/// Replay the week (log at trace, to show the token never appears).
pub fn replay(dir: &Path, cfg: &Path, log: &str) -> (i32, Vec<serde_json::Value>) {
    week::replay(dir, cfg, &[], log, "trace")
}

pub fn assert_no_token(dir: &Path, log: &str) {
    let text = std::fs::read_to_string(dir.join(log)).unwrap();
    assert!(!text.contains(TOKEN), "the token is in {log}:\n{text}");
}

/// The daemon on the week, with `[http]` on a free port; its messages go
/// to a file, its log to another.
pub struct Daemon {
    child: Child,
    pub port: u16,
    out: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path, cfg: &Path, log: &str) -> Daemon {
        let port = free_http_port();
        let text = std::fs::read_to_string(cfg).unwrap();
        let with_http = dir.join(format!("{log}.toml"));
        std::fs::write(
            &with_http,
            format!("{text}\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
        )
        .unwrap();
        let out = dir.join(format!("{log}.out"));
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&with_http)
            .env("CHARGETAIL_LOG", "info")
            .env_remove("CHARGETAIL_PAPERCUT_TOKEN")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.join(log)).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, port, out }
    }

    /// /metrics once `done` holds for it (within a minute).
    pub fn metrics_when(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = http_get(self.port, "/metrics");
            if done(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "{what}:\n{m}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, exit 0; the messages it wrote.
    pub fn stop(mut self) -> Vec<serde_json::Value> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        assert_eq!(
            support::wait_timeout(&mut self.child, Duration::from_secs(20)),
            Some(0)
        );
        support::schema::messages(&std::fs::read(&self.out).unwrap())
    }
}

/// Run the daemon on the week with `[http]`; the /metrics text once all
/// charges are delivered, and the messages it wrote.
pub fn run_until_delivered(dir: &Path, cfg: &Path, log: &str) -> (String, Vec<serde_json::Value>) {
    let d = Daemon::start(dir, cfg, log);
    let m = d.metrics_when("not all delivered", |m| {
        metric(m, "chargetail_delivered_total") == Some(CHARGES as f64)
    });
    (m, d.stop())
}

pub fn held_list(dir: &Path, cfg: &Path) -> Vec<serde_json::Value> {
    let (code, out) = week::cli(
        dir,
        &["held", "list", "--json", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(code, 0);
    serde_json::from_str(&out).unwrap()
}

pub fn status(dir: &Path, cfg: &Path) -> serde_json::Value {
    let (_, out) = week::cli(
        dir,
        &["status", "--json", "--config", cfg.to_str().unwrap()],
    );
    serde_json::from_str(&out).unwrap()
}
