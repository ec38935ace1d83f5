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

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/rpc/api/xmlrpc", self.port)
    }

    /// The shared accounts the server knows (before `start`: it reads
    /// them once).
    fn shared_accounts(dir: &Path, accounts: serde_json::Value) {
        let control = dir.join("pc");
        std::fs::create_dir_all(&control).unwrap();
        std::fs::write(control.join("shared.json"), accounts.to_string()).unwrap();
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

/// The daemon on the week, with `[http]` on a free port; its messages go
/// to a file, its log to another.
struct Daemon {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, cfg: &Path, log: &str) -> Daemon {
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
    fn metrics_when(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
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
    fn stop(mut self) -> Vec<serde_json::Value> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        assert_eq!(
            support::wait_timeout(&mut self.child, Duration::from_secs(20)),
            Some(0)
        );
        std::fs::read_to_string(&self.out)
            .unwrap()
            .lines()
            .map(|l| {
                support::schema::check(l.as_bytes());
                serde_json::from_str(l).unwrap()
            })
            .collect()
    }
}

/// Run the daemon on the week with `[http]`; the /metrics text once all
/// charges are delivered, and the messages it wrote.
fn run_until_delivered(dir: &Path, cfg: &Path, log: &str) -> (String, Vec<serde_json::Value>) {
    let d = Daemon::start(dir, cfg, log);
    let m = d.metrics_when("not all delivered", |m| {
        metric(m, "chargetail_delivered_total") == Some(CHARGES as f64)
    });
    (m, d.stop())
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
    // One call per user (4) and per shared account (2), each timed;
    // noah.kim is unknown, not an error.
    assert_eq!(
        metric(&m, "chargetail_papercut_calls_total"),
        Some(6.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "chargetail_papercut_calls_total"),
        Some(
            (server.total("api.getUserProperties") + server.total("api.getSharedAccountProperties"))
                as f64
        )
    );
    assert_eq!(
        metric(&m, "chargetail_papercut_call_seconds_count"),
        Some(6.0),
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
        metric(&m, "chargetail_papercut_cache_hits_total").unwrap() >= 6.0,
        "{m}"
    );
    assert_eq!(server.total("api.getUserProperties"), 4);
    assert_eq!(server.total("api.getSharedAccountProperties"), 2);
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

/// A charge on a shared account carries the account's properties
/// (`api.getSharedAccountProperties`, cached like users'), and
/// `customer_property` read from the account bills it; an account
/// PaperCut does not know is a fault, said as "unknown", and the user is
/// not billed for it.
#[test]
fn shared_accounts_get_their_properties_once_per_ttl_and_bill_the_account() {
    let dir0 = tempfile::tempdir().unwrap();
    Server::shared_accounts(
        dir0.path(),
        serde_json::json!({"Acme Design": {"account-id": "1001", "notes": "cus_acme_pc"}}),
    );
    let server = Server::start(dir0.path());
    let (dir, cfg) = setup(&server.url(), TOKEN, "");
    // No mapping at all: every customer comes from PaperCut's "notes".
    std::fs::write(dir.path().join("accounts.csv"), "papercut,customer_id\n").unwrap();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"department\"]", "\"notes\"]")
        .replace(
            "customer_property = \"department\"",
            "customer_property = \"notes\"",
        );
    std::fs::write(&cfg, text).unwrap();
    let (code, events, _) = replay(dir.path(), &cfg, "replay.log");
    assert_eq!(code, 0);
    assert_eq!(events.len(), CHARGES);
    let mut seen = BTreeMap::new();
    for e in &events {
        let d = &e["data"];
        let (user, account) = (d["user"].as_str().unwrap(), d["account"].as_str().unwrap());
        *seen.entry(account).or_insert(0) += 1;
        let (enrichment, customer, via) = match (account, user) {
            ("Acme Design", _) => {
                assert_eq!(d["papercut"]["shared_account"]["account-id"], "1001", "{e}");
                assert_eq!(d["papercut"]["shared_account"]["notes"], "cus_acme_pc");
                // The user's properties beside the account's.
                assert_eq!(d["papercut"]["email"], user, "{e}");
                ("ok", Some("cus_acme_pc"), Some("papercut"))
            }
            ("Koala Labs", _) => {
                // Unknown to PaperCut: no account properties, and ava's
                // own "notes" does not bill the team's charge.
                assert!(d["papercut"].get("shared_account").is_none(), "{e}");
                assert_eq!(d["papercut"]["notes"], "cus_ava_notes", "{e}");
                ("unknown", None, None)
            }
            (_, "liam.ng@harbourworks.com.au") => ("ok", Some("cus_liam_notes"), Some("papercut")),
            (_, "ava.patel@harbourworks.com.au") => ("ok", Some("cus_ava_notes"), Some("papercut")),
            (_, "noah.kim@harbourworks.com.au") => ("unknown", None, None),
            _ => ("ok", None, None),
        };
        assert_eq!(d["enrichment"], enrichment, "{e}");
        if !account.contains('@') {
            assert_eq!(d["account_type"], "shared", "{e}");
        } else {
            assert!(d["papercut"].get("shared_account").is_none(), "{e}");
        }
        assert_eq!(d["billing"]["customer_id"].as_str(), customer, "{e}");
        assert_eq!(d["billing"]["via"].as_str(), via, "{e}");
    }
    assert!(
        seen["Acme Design"] > 1 && seen["Koala Labs"] > 1,
        "{seen:?}"
    );
    // One call per account for the week, the unknown one included.
    let calls = server.calls();
    assert_eq!(
        calls.get("api.getSharedAccountProperties Acme Design"),
        Some(&1),
        "{calls:?}"
    );
    assert_eq!(
        calls.get("api.getSharedAccountProperties Koala Labs"),
        Some(&1),
        "{calls:?}"
    );
    assert_no_token(dir.path(), "replay.log");
    // New charges (a new source name) within the TTL: from the cache.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("name = \"hw\"", "name = \"hw2\"");
    std::fs::write(&cfg, text).unwrap();
    let (code, events, _) = replay(dir.path(), &cfg, "replay2.log");
    assert_eq!((code, events.len()), (0, CHARGES));
    assert_eq!(server.total("api.getSharedAccountProperties"), 2);
    // An empty list asks about no shared account.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("name = \"hw2\"", "name = \"hw3\"")
        .replace(
            "customer_property = \"notes\"",
            "customer_property = \"notes\"\nshared_account_properties = []",
        );
    std::fs::write(&cfg, text).unwrap();
    let (code, events, _) = replay(dir.path(), &cfg, "replay3.log");
    assert_eq!((code, events.len()), (0, CHARGES));
    assert!(events
        .iter()
        .all(|e| e["data"]["papercut"].get("shared_account").is_none()));
    assert_eq!(server.total("api.getSharedAccountProperties"), 2);
}

fn held_list(dir: &Path, cfg: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(bin())
        .args(["held", "list", "--json", "--config", cfg.to_str().unwrap()])
        .env_remove("CHARGETAIL_PAPERCUT_TOKEN")
        .stderr(std::fs::File::create(dir.join("held.log")).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status(dir: &Path, cfg: &Path) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["status", "--json", "--config", cfg.to_str().unwrap()])
        .stderr(std::fs::File::create(dir.join("status.log")).unwrap())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `on_unavailable = "hold"`: while PaperCut is down nothing is sent and
/// every charge is held (counted, listed, its reason kept); once PaperCut
/// answers again each is released enriched, once.
#[test]
fn papercut_down_with_hold_keeps_charges_until_it_answers_again() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    server.mode("down");
    let (dir, cfg) = setup(
        &server.url(),
        TOKEN,
        "on_unavailable = \"hold\"\nretry_secs = 1\nwait_ms = 1000\n",
    );
    let d = Daemon::start(dir.path(), &cfg, "run.log");
    let m = d.metrics_when("not all held", |m| {
        metric(m, "chargetail_papercut_held") == Some(CHARGES as f64)
    });
    assert_eq!(metric(&m, "chargetail_billing_held"), Some(CHARGES as f64));
    assert_eq!(metric(&m, "chargetail_delivered_total"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "chargetail_papercut_down"), Some(1.0), "{m}");
    // Asked again while down (every retry_secs), still held.
    let before = server.total("down");
    assert!(before >= 1);
    let m = d.metrics_when("not asked again", |_| server.total("down") > before);
    assert_eq!(metric(&m, "chargetail_papercut_held"), Some(CHARGES as f64));
    let list = held_list(dir.path(), &cfg);
    assert_eq!(list.len(), CHARGES);
    assert!(list.iter().all(|h| h["reason"] == "papercut"), "{list:?}");
    let st = status(dir.path(), &cfg);
    assert_eq!(
        (st["held"].as_u64(), st["held_papercut"].as_u64()),
        (Some(CHARGES as u64), Some(CHARGES as u64))
    );

    server.mode("normal");
    let m = d.metrics_when("not all released", |m| {
        metric(m, "chargetail_delivered_total") == Some(CHARGES as f64)
    });
    assert_eq!(metric(&m, "chargetail_papercut_held"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "chargetail_billing_held"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "chargetail_papercut_down"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "chargetail_billing_released_total"),
        Some(CHARGES as f64)
    );
    let events = d.stop();
    assert_eq!(events.len(), CHARGES, "each sent once");
    let ids: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), CHARGES);
    for e in &events {
        let d = &e["data"];
        let want = if d["user"] == "noah.kim@harbourworks.com.au" {
            "unknown"
        } else {
            "ok"
        };
        assert_eq!(d["enrichment"], want, "{e}");
        if d["user"] == "liam.ng@harbourworks.com.au" && d["account_type"] == "personal" {
            assert_eq!(d["billing"]["customer_id"], "cus_liam_pc", "{e}");
            assert_eq!(d["billing"]["via"], "papercut", "{e}");
        }
        if d["account"] == "Acme Design" {
            assert_eq!(d["billing"]["customer_id"], "cus_acme", "{e}");
            assert_eq!(d["papercut"]["shared_account"]["account-id"], "1001");
        }
    }
    assert!(held_list(dir.path(), &cfg).is_empty());
    // reconcile: everything read is delivered, with its customer.
    let out = Command::new(bin())
        .args([
            "reconcile",
            "--json",
            "--by",
            "customer",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rep["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["key"] == "cus_liam_pc"),
        "{rep}"
    );
    assert_no_token(dir.path(), "run.log");
}

/// Held for PaperCut, but never longer than `hold_max_secs`: then sent
/// unenriched, saying so.
#[test]
fn charges_held_for_papercut_go_unenriched_after_hold_max_secs() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    server.mode("down");
    let (dir, cfg) = setup(
        &server.url(),
        TOKEN,
        "on_unavailable = \"hold\"\nretry_secs = 1\nhold_max_secs = 2\n",
    );
    let d = Daemon::start(dir.path(), &cfg, "run.log");
    let m = d.metrics_when("not all delivered", |m| {
        metric(m, "chargetail_delivered_total") == Some(CHARGES as f64)
    });
    assert_eq!(metric(&m, "chargetail_papercut_held"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "chargetail_billing_released_total"),
        Some(CHARGES as f64),
        "{m}"
    );
    assert_eq!(
        metric(&m, "chargetail_papercut_unenriched_total"),
        Some(CHARGES as f64),
        "{m}"
    );
    let events = d.stop();
    assert_eq!(events.len(), CHARGES);
    for e in &events {
        assert_eq!(e["data"]["enrichment"], "unavailable", "{e}");
        if e["data"]["account"] == "Acme Design" {
            assert_eq!(e["data"]["billing"]["customer_id"], "cus_acme");
        }
    }
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap();
    assert!(
        log.contains("PaperCut unavailable (on_unavailable"),
        "{log}"
    );
    assert!(server.total("down") >= 1);
}
