//! Enrichment from PaperCut's Web Services API (`[papercut]`), against a
//! real XML-RPC server the project did not write the protocol of:
//! tests/papercut_server.py, Python's standard `xmlrpc.server`, with
//! PaperCut's semantics (faults for a wrong token and an unknown user), a
//! slow mode, and "down" as a loopback port nobody listens on. The week of
//! tests/fixtures/billing-week is replayed through a stdout sink; every
//! message is checked against docs/charge.schema.json.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{bin, free_http_port, http_get, metric};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/billing-week");
const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/papercut_server.py");
const TOKEN: &str = "pc-t0ken-s3cret-4711";
/// Charges in the week (4 users; noah.kim is unknown to the server).
const CHARGES: usize = 72;

struct Server {
    child: Child,
    port: u16,
    control: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let control = dir.join("pc");
        std::fs::create_dir_all(&control).unwrap();
        let users = serde_json::json!({
            "liam.ng@harbourworks.com.au": {"full-name": "Liam Ng", "email": "liam.ng@harbourworks.com.au", "department": "cus_liam_pc"},
            "ava.patel@harbourworks.com.au": {"full-name": "Ava Patel", "email": "ava.patel@harbourworks.com.au", "department": "cus_ava_pc"},
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

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/rpc/api/xmlrpc", self.port)
    }

    fn mode(&self, mode: &str) {
        std::fs::write(self.control.join("mode"), mode).unwrap();
    }

    fn calls(&self) -> BTreeMap<String, u64> {
        std::fs::read_to_string(self.control.join("calls.json"))
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap_or_default()
    }

    fn total(&self, method: &str) -> u64 {
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
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn setup(url: &str, token: &str, papercut_extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tx = dir.path().join("tx");
    std::fs::create_dir(&tx).unwrap();
    for day in 1..=7 {
        let name = format!("tx-2026-10-{day:02}.log");
        std::fs::copy(format!("{FIXTURES}/{name}"), tx.join(&name)).unwrap();
    }
    // Only the shared accounts are mapped: personal ones get their
    // customer from PaperCut's "department".
    std::fs::write(
        dir.path().join("accounts.csv"),
        "papercut,customer_id,team_id\nAcme Design,cus_acme,team_acme\nKoala Labs,cus_koala,\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("pc-token"), format!("{token}\n")).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"hw\"\npath = \"tx/*.log\"\ntimezone = \"Australia/Melbourne\"\ncurrency = \"AUD\"\n\n[state]\npath = \"state/state.db\"\n\n[sink]\nkind = \"stdout\"\n\n[billing]\nmapping_file = \"accounts.csv\"\n\n[papercut]\nurl = \"{url}\"\ntoken_file = \"pc-token\"\nuser_properties = [\"full-name\", \"email\", \"department\"]\ncustomer_property = \"department\"\n{papercut_extra}\n"
        ),
    )
    .unwrap();
    (dir, cfg)
}

/// Replay the week; every message checked against the schema.
fn replay(dir: &Path, cfg: &Path, log: &str) -> (i32, Vec<serde_json::Value>, Duration) {
    let t0 = Instant::now();
    let out = Command::new(bin())
        .args(["replay", "--config", cfg.to_str().unwrap()])
        .arg(dir.join("tx/*.log").to_str().unwrap())
        .env("CHARGETAIL_LOG", "debug")
        .env_remove("CHARGETAIL_PAPERCUT_TOKEN")
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .output()
        .unwrap();
    let took = t0.elapsed();
    let events = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            support::schema::check(l.as_bytes());
            serde_json::from_str(l).unwrap()
        })
        .collect();
    (out.status.code().unwrap_or(-1), events, took)
}

fn assert_no_token(dir: &Path, log: &str) {
    let text = std::fs::read_to_string(dir.join(log)).unwrap();
    assert!(!text.contains(TOKEN), "the token is in {log}:\n{text}");
}

#[test]
fn properties_land_in_the_message_once_per_user_per_ttl() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    let (dir, cfg) = setup(&server.url(), TOKEN, "");
    let (code, events, _) = replay(dir.path(), &cfg, "replay.log");
    assert_eq!(code, 0);
    assert_eq!(events.len(), CHARGES);
    for e in &events {
        let d = &e["data"];
        let user = d["user"].as_str().unwrap();
        let account = d["account"].as_str().unwrap();
        match user {
            "noah.kim@harbourworks.com.au" => {
                assert_eq!(d["enrichment"], "unknown", "{e}");
                assert!(d.get("papercut").is_none(), "{e}");
            }
            _ => {
                assert_eq!(d["enrichment"], "ok", "{e}");
                assert_eq!(d["papercut"]["email"], user, "{e}");
                assert!(d["papercut"]["full-name"].as_str().unwrap().contains(' '));
            }
        }
        let (want, via) = match (account, user) {
            ("Acme Design", _) => (Some("cus_acme"), Some("mapping")),
            ("Koala Labs", _) => (Some("cus_koala"), Some("mapping")),
            (_, "liam.ng@harbourworks.com.au") => (Some("cus_liam_pc"), Some("papercut")),
            (_, "ava.patel@harbourworks.com.au") => (Some("cus_ava_pc"), Some("papercut")),
            // An empty property gives no customer; an unknown user neither.
            _ => (None, None),
        };
        assert_eq!(d["billing"]["customer_id"].as_str(), want, "{e}");
        assert_eq!(d["billing"]["via"].as_str(), via, "{e}");
    }
    // One call per user for the whole week (7 files, 72 charges).
    let calls = server.calls();
    for u in ["liam.ng", "ava.patel", "maya.chen", "noah.kim"] {
        let key = format!("api.getUserProperties {u}@harbourworks.com.au");
        assert_eq!(calls.get(&key), Some(&1), "{calls:?}");
    }
    assert_no_token(dir.path(), "replay.log");

    // A second replay of the same files (new ids? no: the same ones, all
    // known) and a fresh set of files under a new source name read the
    // cache, not PaperCut, within the TTL.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("name = \"hw\"", "name = \"hw2\"");
    std::fs::write(&cfg, text).unwrap();
    let (code, events, _) = replay(dir.path(), &cfg, "replay2.log");
    assert_eq!(code, 0);
    assert_eq!(events.len(), CHARGES);
    assert_eq!(
        server.total("api.getUserProperties"),
        4,
        "{:?}",
        server.calls()
    );

    // With a TTL of 1 s, the cache goes stale and PaperCut is asked again.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("name = \"hw2\"", "name = \"hw3\"")
        + "cache_ttl_secs = 1\n";
    std::fs::write(&cfg, text).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let (code, events, _) = replay(dir.path(), &cfg, "replay3.log");
    assert_eq!(code, 0);
    assert_eq!(events.len(), CHARGES);
    assert!(server.total("api.getUserProperties") > 4);
}

/// Run the daemon on the week with `[http]`; the /metrics text once all
/// charges are delivered, and the messages it wrote.
fn run_until_delivered(dir: &Path, cfg: &Path, log: &str) -> (String, Vec<serde_json::Value>) {
    let port = free_http_port();
    let text = std::fs::read_to_string(cfg).unwrap();
    let with_http = dir.join(format!("{log}.toml"));
    std::fs::write(
        &with_http,
        format!("{text}\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let out = dir.join(format!("{log}.out"));
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&with_http)
        .env("CHARGETAIL_LOG", "info")
        .env_remove("CHARGETAIL_PAPERCUT_TOKEN")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = http_get(port, "/metrics");
        if metric(&m, "chargetail_delivered_total") == Some(CHARGES as f64) {
            break m;
        }
        assert!(Instant::now() < deadline, "not all delivered:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert_eq!(
        support::wait_timeout(&mut child, Duration::from_secs(20)),
        Some(0)
    );
    let events = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (metrics, events)
}

#[test]
fn metrics_count_papercut_calls_cache_hits_and_unenriched_charges() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    let (dir, cfg) = setup(&server.url(), TOKEN, "");
    let (m, events) = run_until_delivered(dir.path(), &cfg, "run1.log");
    assert_eq!(events.len(), CHARGES);
    let unenriched = events
        .iter()
        .filter(|e| e["data"]["enrichment"] != "ok")
        .count();
    assert!(unenriched > 0);
    // One call per user (4), each timed; noah.kim is unknown, not an error.
    assert_eq!(
        metric(&m, "chargetail_papercut_calls_total"),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "chargetail_papercut_calls_total"),
        Some(server.total("api.getUserProperties") as f64)
    );
    assert_eq!(
        metric(&m, "chargetail_papercut_call_seconds_count"),
        Some(4.0),
        "{m}"
    );
    assert!(metric(&m, "chargetail_papercut_call_seconds_sum").unwrap() > 0.0);
    assert_eq!(
        metric(&m, "chargetail_papercut_errors_total"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(metric(&m, "chargetail_papercut_down"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "chargetail_papercut_unenriched_total"),
        Some(unenriched as f64),
        "{m}"
    );
    assert!(
        m.contains("chargetail_papercut_cache_hits_total{source=\"hw\"}"),
        "{m}"
    );

    // Copies of the files under a new source name (new charges, same
    // state): every user is answered from the cache; PaperCut is not called.
    std::fs::create_dir(dir.path().join("tx2")).unwrap();
    for f in std::fs::read_dir(dir.path().join("tx")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join("tx2").join(f.file_name().unwrap())).unwrap();
    }
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("name = \"hw\"", "name = \"hw2\"")
        .replace("tx/*.log", "tx2/*.log");
    std::fs::write(&cfg, text).unwrap();
    let (m, _) = run_until_delivered(dir.path(), &cfg, "run2.log");
    assert_eq!(
        metric(&m, "chargetail_papercut_calls_total"),
        Some(0.0),
        "{m}"
    );
    assert!(
        metric(&m, "chargetail_papercut_cache_hits_total").unwrap() >= 4.0,
        "{m}"
    );
    assert_eq!(server.total("api.getUserProperties"), 4);
    assert_no_token(dir.path(), "run1.log");
    assert_no_token(dir.path(), "run2.log");
}

#[test]
fn a_bad_token_is_rejected_not_unavailable_and_not_retried_per_charge() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    let (dir, cfg) = setup(&server.url(), "wrong-token", "");
    let (code, events, _) = replay(dir.path(), &cfg, "replay.log");
    assert_eq!(code, 0);
    assert_eq!(events.len(), CHARGES, "nothing lost");
    for e in &events {
        assert_eq!(e["data"]["enrichment"], "rejected", "{e}");
        assert!(e["data"].get("papercut").is_none());
    }
    // The first batch's users at most, then PaperCut is left alone.
    assert!(
        server.total("api.getUserProperties") <= 4,
        "{:?}",
        server.calls()
    );
    let log = std::fs::read_to_string(dir.path().join("replay.log")).unwrap();
    assert!(log.contains("refused the token"), "{log}");

    // `check` tests the token: refused here...
    let out = Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .env_remove("CHARGETAIL_PAPERCUT_TOKEN")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the token"), "{err}");
    assert!(!err.contains("wrong-token"), "{err}");
    // ...accepted from the environment, which wins over the file.
    let out = Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .env("CHARGETAIL_PAPERCUT_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("token accepted"), "{text}");
    assert!(!text.contains(TOKEN));
    assert!(server.total("api.isUserExists") >= 2);
}

#[test]
fn papercut_down_delivers_unenriched_at_once() {
    let url = format!("http://127.0.0.1:{}/rpc/api/xmlrpc", dead_port());
    let (dir, cfg) = setup(&url, TOKEN, "");
    let (code, events, took) = replay(dir.path(), &cfg, "replay.log");
    assert_eq!(code, 0);
    assert_eq!(events.len(), CHARGES, "nothing lost");
    for e in &events {
        assert_eq!(e["data"]["enrichment"], "unavailable", "{e}");
        assert!(e["data"].get("papercut").is_none());
        // The mapping still applies.
        if e["data"]["account"] == "Acme Design" {
            assert_eq!(e["data"]["billing"]["customer_id"], "cus_acme");
        }
    }
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_no_token(dir.path(), "replay.log");
    // `check` says PaperCut cannot be reached.
    let out = Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));
}

#[test]
fn papercut_slow_past_the_bound_delivers_unenriched_within_it() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    server.mode("slow 30");
    let (dir, cfg) = setup(&server.url(), TOKEN, "wait_ms = 500\ntimeout_ms = 60000\n");
    let (code, events, took) = replay(dir.path(), &cfg, "replay.log");
    assert_eq!(code, 0);
    assert_eq!(events.len(), CHARGES, "nothing lost");
    for e in &events {
        assert_eq!(e["data"]["enrichment"], "unavailable", "{e}");
    }
    // One bound (0.5 s) for the first batch, then none: far below one
    // slow answer (30 s).
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(server.total("api.getUserProperties") <= 4);
}

#[test]
fn bad_papercut_settings_exit_2_naming_the_key() {
    for (extra, key) in [
        ("cache_ttl_secs = 0\n", "cache_ttl_secs"),
        ("concurrency = 0\n", "concurrency"),
        ("colour = 1\n", "colour"),
    ] {
        let (dir, cfg) = setup("http://127.0.0.1:1/rpc/api/xmlrpc", TOKEN, extra);
        let out = Command::new(bin())
            .args(["check", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(key),
            "{extra}"
        );
        drop(dir);
    }
    let (dir, cfg) = setup("http://127.0.0.1:1/rpc/api/xmlrpc", TOKEN, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "customer_property = \"department\"",
        "customer_property = \"office\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("customer_property"));
    drop(dir);

    // A token file that is missing, unreadable (here: a directory, which
    // even root cannot read as a file) or empty: exit 2 naming the key, for
    // `check` and for `run` alike, before anything is read.
    for case in ["missing", "unreadable", "empty"] {
        let (dir, cfg) = setup("http://127.0.0.1:1/rpc/api/xmlrpc", TOKEN, "");
        let token = dir.path().join("pc-token");
        std::fs::remove_file(&token).unwrap();
        match case {
            "unreadable" => std::fs::create_dir(&token).unwrap(),
            "empty" => std::fs::write(&token, "\n").unwrap(),
            _ => {}
        }
        for cmd in ["check", "run"] {
            let out = Command::new(bin())
                .args([cmd, "--config", cfg.to_str().unwrap()])
                .env_remove("CHARGETAIL_PAPERCUT_TOKEN")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{case} {cmd}: {err}");
            assert!(
                err.contains("[papercut] token_file") && err.contains("pc-token"),
                "{case} {cmd}: {err}"
            );
        }
        // The environment variable wins over the file.
        let out = Command::new(bin())
            .args(["check", "--config", cfg.to_str().unwrap()])
            .env("CHARGETAIL_PAPERCUT_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("token_file"),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
