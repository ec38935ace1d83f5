//! Billing: account mapping (`data.billing`), held charges, `reconcile`
//! (totals to the cent against sums computed here from the raw lines,
//! `--against` a PaperCut export, the sink down), daily statements and
//! their digest. Real files, real processes, a real state database; the
//! week in tests/fixtures/billing-week crosses the start of daylight saving
//! in Melbourne (2026-10-04, a 23-hour day).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use support::{bin, free_http_port, http_get, metric, wait_timeout};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/billing-week");

/// One raw line of the fixture files, as the test reads it itself.
#[derive(Debug, Clone)]
struct Raw {
    day: String,
    time: String,
    tx: String,
    user: String,
    account: String,
    /// Billed: PaperCut writes a debit negative.
    billed: Decimal,
}

fn raw_lines() -> Vec<Raw> {
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

fn cents(d: Decimal) -> String {
    let mut d = d.round_dp(2);
    d.rescale(2);
    d.to_string()
}

const FULL_MAPPING: &str = "papercut,customer_id,team_id\nAcme Design,cus_acme,team_acme\nKoala Labs,cus_koala,\nmaya.chen@harbourworks.com.au,cus_maya,\nliam.ng@harbourworks.com.au,cus_liam,team_solo\nava.patel@harbourworks.com.au,cus_ava,\nnoah.kim@harbourworks.com.au,cus_noah,\n";

fn customer_of(account: &str) -> Option<&'static str> {
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
fn setup(mapping: &str, sink: &str, billing: &str) -> (tempfile::TempDir, PathBuf) {
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

fn cli(dir: &Path, args: &[&str]) -> (i32, String) {
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

fn reconcile(dir: &Path, cfg: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["reconcile", "--config", cfg.to_str().unwrap(), "--json"];
    a.extend_from_slice(args);
    let (code, out) = cli(dir, &a);
    (
        code,
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")),
    )
}

fn replay_all(dir: &Path, cfg: &Path, extra: &[&str]) -> (i32, Vec<serde_json::Value>) {
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

#[test]
fn reconcile_totals_equal_sums_of_the_raw_lines() {
    let raw = raw_lines();
    let (dir, cfg) = setup(FULL_MAPPING, "[sink]\nkind = \"stdout\"", "");
    let (code, events) = replay_all(dir.path(), &cfg, &[]);
    assert_eq!(code, 0);
    assert_eq!(events.len(), raw.len());
    // Every message says who pays.
    for e in &events {
        let account = e["data"]["account"].as_str().unwrap();
        assert_eq!(
            e["data"]["billing"]["customer_id"].as_str(),
            customer_of(account),
            "{e}"
        );
        assert_eq!(e["data"]["billing"]["via"], "mapping");
    }
    let liam = events
        .iter()
        .find(|e| e["data"]["account"] == "liam.ng@harbourworks.com.au")
        .unwrap();
    assert_eq!(liam["data"]["billing"]["team_id"], "team_solo");

    // By account: counts and sums computed here from the raw lines.
    let mut want: BTreeMap<String, (u64, Decimal)> = BTreeMap::new();
    for r in &raw {
        let e = want.entry(r.account.clone()).or_default();
        e.0 += 1;
        e.1 += r.billed;
    }
    let (code, rep) = reconcile(dir.path(), &cfg, &["--by", "account"]);
    assert_eq!(code, 0, "{rep}");
    let groups = rep["groups"].as_array().unwrap();
    assert_eq!(groups.len(), want.len());
    for g in groups {
        let (n, sum) = want[g["key"].as_str().unwrap()];
        assert_eq!(g["read"], n, "{g}");
        assert_eq!(g["delivered"], n, "{g}");
        assert_eq!(g["pending"], 0);
        assert_eq!(g["dead"], 0);
        assert_eq!(g["amount_read"], cents(sum), "{g}");
        assert_eq!(g["amount_delivered"], cents(sum), "{g}");
        assert_eq!(g["currency"], "AUD");
    }
    let total: Decimal = raw.iter().map(|r| r.billed).sum();
    assert_eq!(rep["totals"]["read"], raw.len() as u64);
    assert_eq!(rep["totals"]["amount_read"], cents(total));
    assert_eq!(rep["totals"]["amount_delivered"], cents(total));
    // Refunds are there: the total is below the sum of the debits.
    let debits: Decimal = raw
        .iter()
        .map(|r| r.billed)
        .filter(|a| *a > Decimal::ZERO)
        .sum();
    assert!(total < debits);

    // By day, in the source's zone: the DST day keeps its jobs on both
    // sides of the jump and at both ends of the day.
    let (_, rep) = reconcile(dir.path(), &cfg, &["--by", "day"]);
    let days: BTreeMap<String, (u64, String)> = rep["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_string(),
                (
                    g["read"].as_u64().unwrap(),
                    g["amount_read"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(days.len(), 7);
    for (day, (n, amount)) in &days {
        let mine: Vec<&Raw> = raw.iter().filter(|r| &r.day == day).collect();
        assert_eq!(*n, mine.len() as u64, "{day}");
        assert_eq!(*amount, cents(mine.iter().map(|r| r.billed).sum()), "{day}");
    }
    assert!(raw.iter().any(|r| r.time == "2026-10-04 23:59:59"));
    assert!(raw.iter().any(|r| r.time == "2026-10-04 00:10:00"));

    // A period: two days only.
    let (_, rep) = reconcile(
        dir.path(),
        &cfg,
        &["--from", "2026-10-03", "--to", "2026-10-04"],
    );
    let mine: Vec<&Raw> = raw
        .iter()
        .filter(|r| r.day.as_str() >= "2026-10-03" && r.day.as_str() <= "2026-10-04")
        .collect();
    assert_eq!(rep["totals"]["read"], mine.len() as u64);
    assert_eq!(
        rep["totals"]["amount_read"],
        cents(mine.iter().map(|r| r.billed).sum())
    );

    // By user and by customer.
    let (_, rep) = reconcile(dir.path(), &cfg, &["--by", "customer"]);
    let mut by_customer: BTreeMap<&str, Decimal> = BTreeMap::new();
    for r in &raw {
        *by_customer
            .entry(customer_of(&r.account).unwrap())
            .or_default() += r.billed;
    }
    for g in rep["groups"].as_array().unwrap() {
        assert_eq!(
            g["amount_read"],
            cents(by_customer[g["key"].as_str().unwrap()]),
            "{g}"
        );
    }
    let (_, rep) = reconcile(dir.path(), &cfg, &["--by", "user"]);
    let users: BTreeSet<&str> = raw.iter().map(|r| r.user.as_str()).collect();
    assert_eq!(rep["groups"].as_array().unwrap().len(), users.len());

    // The table names the accounts and the totals.
    let (code, table) = cli(
        dir.path(),
        &["reconcile", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(code, 0);
    assert!(
        table.contains("Acme Design") && table.contains(&cents(total)),
        "{table}"
    );
    // A bad date is a usage error.
    let (code, _) = cli(
        dir.path(),
        &[
            "reconcile",
            "--config",
            cfg.to_str().unwrap(),
            "--from",
            "03/10/2026",
        ],
    );
    assert_eq!(code, 2);

    // Against the PaperCut export: the job it lacks, the one only it has,
    // the refunds (a job log export has no adjustments), totals side by side.
    let export = format!("{FIXTURES}/papercut-export.csv");
    let (code, rep) = reconcile(dir.path(), &cfg, &["--against", &export]);
    assert_eq!(code, 1, "the export does not match");
    let a = &rep["against"];
    let only_export: Vec<&str> = a["only_in_export"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["transaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(only_export, ["tx-099999"]);
    let only_read: BTreeSet<String> = a["only_read"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let id_of = |tx: &str| {
        events
            .iter()
            .find(|e| e["data"]["transaction_id"] == tx)
            .map(|e| e["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let mut want_only_read: BTreeSet<String> = raw
        .iter()
        .filter(|r| r.billed < Decimal::ZERO)
        .map(|r| id_of(&r.tx))
        .collect();
    want_only_read.insert(id_of("tx-007005"));
    assert_eq!(only_read, want_only_read);
    // The export's total, summed here from its Cost column.
    let text = std::fs::read_to_string(&export).unwrap();
    let export_total: Decimal = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap().parse::<Decimal>().unwrap())
        .sum();
    assert_eq!(a["totals"][0]["export"], cents(export_total));
    assert_eq!(a["totals"][0]["read"], cents(total));
    assert_eq!(a["totals"][0]["delivered"], cents(total));
    assert_eq!(
        a["matched"].as_u64().unwrap(),
        (text.lines().count() - 2) as u64
    );
}

#[test]
fn reconcile_with_the_sink_down_exits_1_and_names_what_is_pending() {
    let raw = raw_lines();
    // Nothing listens on port 1.
    let (dir, cfg) = setup(
        FULL_MAPPING,
        "[sink]\nkind = \"amqp\"\n[sink.amqp]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\nexchange = \"x\"\ntimeout_ms = 300",
        "",
    );
    let (code, _) = replay_all(dir.path(), &cfg, &["--give-up-after", "2"]);
    assert_ne!(code, 0);
    let (code, rep) = reconcile(dir.path(), &cfg, &[]);
    assert_eq!(code, 1, "{rep}");
    assert_eq!(rep["totals"]["read"], raw.len() as u64);
    assert_eq!(rep["totals"]["pending"], raw.len() as u64);
    assert_eq!(rep["totals"]["delivered"], 0);
    assert_eq!(rep["totals"]["amount_delivered"], "0.00");
    let listed = rep["undelivered"].as_array().unwrap();
    assert_eq!(listed.len(), raw.len().min(100));
    assert!(listed.iter().all(|u| u["state"] == "pending"));
    let (code, table) = cli(
        dir.path(),
        &["reconcile", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(
        table.contains(&format!("not delivered ({})", raw.len()))
            && table.contains(listed[0]["id"].as_str().unwrap()),
        "{table}"
    );
}

/// `chargetail run` with stdout collected and logs in a file.
struct Run {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<serde_json::Value>,
    log: PathBuf,
}

impl Run {
    fn start(dir: &Path, cfg: &Path) -> Run {
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

    fn wait_until(&mut self, within: Duration, done: impl Fn(&[serde_json::Value]) -> bool) {
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

    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    fn stop(&mut self) -> Option<i32> {
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

fn charges(seen: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    seen.iter()
        .filter(|e| e["type"] == "papercut.charge")
        .collect()
}

#[test]
fn unmapped_charges_are_held_until_a_mapping_names_them() {
    let raw = raw_lines();
    let port = free_http_port();
    let (dir, cfg) = setup(
        "papercut,customer_id\nAcme Design,cus_acme\n",
        &format!("[sink]\nkind = \"stdout\"\n\n[http]\nlisten = \"127.0.0.1:{port}\""),
        "unmapped = \"hold\"",
    );
    let acme = raw.iter().filter(|r| r.account == "Acme Design").count();
    let mut run = Run::start(dir.path(), &cfg);
    run.wait_until(Duration::from_secs(30), |s| charges(s).len() >= acme);
    std::thread::sleep(Duration::from_millis(800));
    run.wait_until(Duration::from_secs(1), |_| true);
    assert_eq!(
        charges(&run.seen).len(),
        acme,
        "only the mapped account is sent"
    );
    assert!(charges(&run.seen)
        .iter()
        .all(|e| e["data"]["account"] == "Acme Design"
            && e["data"]["billing"]["customer_id"] == "cus_acme"
            && e["data"]["billing"]["team_id"].is_null()));

    // Held: counted by status, listed by `held list`, and in reconcile.
    let c = cfg.to_str().unwrap();
    let (_, status) = cli(dir.path(), &["status", "--config", c, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["held"], (raw.len() - acme) as u64);
    let (code, list) = cli(dir.path(), &["held", "list", "--config", c, "--json"]);
    assert_eq!(code, 0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(list.len(), raw.len() - acme);
    assert!(list.iter().all(|h| h["account"] != "Acme Design"));
    let (code, rep) = reconcile(dir.path(), &cfg, &[]);
    assert_eq!(code, 1);
    assert_eq!(rep["totals"]["held"], (raw.len() - acme) as u64);
    // ...and by /metrics, with the source label.
    let metrics = http_get(port, "/metrics");
    assert!(
        metrics.contains(&format!(
            "chargetail_billing_held{{source=\"hw\"}} {}",
            raw.len() - acme
        )),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "chargetail_billing_released_total"),
        Some(0.0)
    );

    // A broken mapping (a duplicate) is refused, naming file and line; the
    // one in force stays and nothing is released or lost.
    std::fs::write(
        dir.path().join("accounts.csv"),
        "papercut,customer_id\nAcme Design,cus_acme\nKoala Labs,cus_koala\nkoala labs,cus_other\n",
    )
    .unwrap();
    run.signal("-HUP");
    std::thread::sleep(Duration::from_millis(1500));
    run.wait_until(Duration::from_millis(10), |_| true);
    assert_eq!(charges(&run.seen).len(), acme);
    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(
        log.contains("accounts.csv, line 4") && log.contains("mapped twice"),
        "{log}"
    );

    // Everyone but noah mapped: released at once (the file changed), each
    // with its customer, each sent once.
    std::fs::write(
        dir.path().join("accounts.csv"),
        FULL_MAPPING.replace("noah.kim@harbourworks.com.au,cus_noah,\n", ""),
    )
    .unwrap();
    let noah = raw
        .iter()
        .filter(|r| r.account == "noah.kim@harbourworks.com.au")
        .count();
    assert!(noah > 0);
    run.wait_until(Duration::from_secs(20), |s| {
        charges(s).len() >= raw.len() - noah
    });
    let sent = charges(&run.seen);
    let ids: BTreeSet<&str> = sent.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), sent.len(), "no charge sent twice");
    for e in &sent {
        assert_eq!(
            e["data"]["billing"]["customer_id"].as_str(),
            customer_of(e["data"]["account"].as_str().unwrap()),
            "{e}"
        );
    }
    let (_, status) = cli(dir.path(), &["status", "--config", c, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["held"], noah as u64);
    let metrics = http_get(port, "/metrics");
    assert_eq!(
        metric(&metrics, "chargetail_billing_held"),
        Some(noah as f64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "chargetail_billing_released_total"),
        Some((raw.len() - acme - noah) as f64),
        "{metrics}"
    );
    assert_eq!(run.stop(), Some(0));

    // After a restart noah's charges are still held, and a mapping read at
    // start releases them.
    std::fs::write(dir.path().join("accounts.csv"), FULL_MAPPING).unwrap();
    let mut run = Run::start(dir.path(), &cfg);
    run.wait_until(Duration::from_secs(20), |s| charges(s).len() >= noah);
    assert!(charges(&run.seen)
        .iter()
        .all(|e| e["data"]["billing"]["customer_id"] == "cus_noah"));
    assert_eq!(run.stop(), Some(0));
    let (code, rep) = reconcile(dir.path(), &cfg, &[]);
    assert_eq!(code, 0, "{rep}");
    assert_eq!(rep["totals"]["delivered"], raw.len() as u64);
}

fn digest(ids: &[&str]) -> String {
    let mut v = ids.to_vec();
    v.sort();
    let mut h = Sha256::new();
    for id in v {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[test]
fn statements_digest_the_charge_ids_received_per_account_and_day() {
    let raw = raw_lines();
    let (dir, cfg) = setup(
        FULL_MAPPING,
        "[sink]\nkind = \"stdout\"",
        "statements = true\nstatement_grace_secs = 0",
    );
    let pairs: BTreeSet<(String, String)> = raw
        .iter()
        .map(|r| (r.account.clone(), r.day.clone()))
        .collect();
    let mut run = Run::start(dir.path(), &cfg);
    run.wait_until(Duration::from_secs(40), |s| {
        charges(s).len() >= raw.len()
            && s.iter()
                .filter(|e| e["type"] == "papercut.statement")
                .count()
                >= pairs.len()
    });
    assert_eq!(run.stop(), Some(0));
    let statements: Vec<&serde_json::Value> = run
        .seen
        .iter()
        .filter(|e| e["type"] == "papercut.statement")
        .collect();
    assert_eq!(statements.len(), pairs.len());
    let received = charges(&run.seen);
    for s in &statements {
        let d = &s["data"];
        let (account, day) = (d["account"].as_str().unwrap(), d["day"].as_str().unwrap());
        let mine: Vec<&serde_json::Value> = received
            .iter()
            .copied()
            .filter(|e| {
                e["data"]["account"] == account && e["time"].as_str().unwrap()[..10] == *day
            })
            .collect();
        let ids: Vec<&str> = mine.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(d["charge_ids_digest"], digest(&ids), "{s}");
        assert_eq!(d["count"], ids.len() as u64);
        let sum: Decimal = raw
            .iter()
            .filter(|r| r.account == account && r.day == day)
            .map(|r| r.billed)
            .sum();
        assert_eq!(d["totals"][0]["amount"], cents(sum), "{s}");
        assert_eq!(d["totals"][0]["currency"], "AUD");
        assert_eq!(s["subject"], account);
        assert!(s["id"].as_str().unwrap().starts_with("stm_"));
    }
    // The DST day is 23 hours long.
    let dst = statements
        .iter()
        .find(|s| s["data"]["day"] == "2026-10-04")
        .unwrap();
    assert_eq!(dst["data"]["from"], "2026-10-04T00:00:00+10:00");
    assert_eq!(dst["data"]["to"], "2026-10-05T00:00:00+11:00");
    // A restart queues none again.
    let mut run = Run::start(dir.path(), &cfg);
    std::thread::sleep(Duration::from_secs(2));
    run.wait_until(Duration::from_millis(10), |_| true);
    assert!(run.seen.is_empty(), "{:?}", run.seen);
    assert_eq!(run.stop(), Some(0));
}

/// SIGHUP re-reads the mapping even when the file looks unchanged (same
/// size, inode and mtime, so the once-a-second look cannot see it): the
/// daemon is stopped (SIGSTOP) while the file is rewritten in place and its
/// mtime put back.
#[test]
fn sighup_reloads_a_mapping_the_file_watch_cannot_see() {
    use std::io::{Seek, Write};
    let raw = raw_lines();
    let (dir, cfg) = setup(
        "papercut,customer_id\nAcme Design,cus_acme\n",
        "[sink]\nkind = \"stdout\"",
        "unmapped = \"hold\"",
    );
    let acme = raw.iter().filter(|r| r.account == "Acme Design").count();
    let koala = raw.iter().filter(|r| r.account == "Koala Labs").count();
    let mut run = Run::start(dir.path(), &cfg);
    run.wait_until(Duration::from_secs(30), |s| charges(s).len() >= acme);
    let map = dir.path().join("accounts.csv");
    let before = std::fs::metadata(&map).unwrap();
    run.signal("-STOP");
    let saved = dir.path().join("mtime-ref");
    std::fs::write(&saved, "").unwrap();
    assert!(Command::new("touch")
        .arg("-r")
        .arg(&map)
        .arg(&saved)
        .status()
        .unwrap()
        .success());
    // Same length, written over in place (no truncation): same inode.
    let mut f = std::fs::OpenOptions::new().write(true).open(&map).unwrap();
    f.rewind().unwrap();
    f.write_all(b"papercut,customer_id\nKoala Labs,cus_koala\n")
        .unwrap();
    drop(f);
    assert!(Command::new("touch")
        .arg("-r")
        .arg(&saved)
        .arg(&map)
        .status()
        .unwrap()
        .success());
    let after = std::fs::metadata(&map).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (before.len(), before.ino(), before.modified().unwrap()),
            (after.len(), after.ino(), after.modified().unwrap())
        );
    }
    run.signal("-CONT");
    // Unseen by the file watch: nothing released.
    std::thread::sleep(Duration::from_millis(2500));
    run.wait_until(Duration::from_millis(10), |_| true);
    assert_eq!(charges(&run.seen).len(), acme);
    run.signal("-HUP");
    run.wait_until(Duration::from_secs(20), |s| {
        charges(s).len() >= acme + koala
    });
    let koalas: Vec<_> = charges(&run.seen)
        .into_iter()
        .filter(|e| e["data"]["account"] == "Koala Labs")
        .collect();
    assert_eq!(koalas.len(), koala);
    assert!(koalas
        .iter()
        .all(|e| e["data"]["billing"]["customer_id"] == "cus_koala"));
    assert_eq!(run.stop(), Some(0));
    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(log.contains("account mapping (re)loaded"), "{log}");
}

/// A job refunded, cancelled or denied (PaperCut's job status) is read and
/// delivered but bills 0: reconcile counts it as not billed and leaves it
/// out of the amounts.
#[test]
fn reconcile_counts_refunded_cancelled_and_denied_jobs_as_not_billed() {
    let (dir, cfg) = setup(FULL_MAPPING, "[sink]\nkind = \"stdout\"", "");
    for f in std::fs::read_dir(dir.path().join("tx")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let liam = "liam.ng@harbourworks.com.au";
    let ava = "ava.patel@harbourworks.com.au";
    std::fs::write(
        dir.path().join("tx/tx-2026-10-08.log"),
        format!(
            "time\ttransaction_id\tuser\taccount\tamount\tstatus\n\
             2026-10-08 09:00:00\ttx-9001\t{liam}\t{liam}\t-1.20\tprinted\n\
             2026-10-08 09:05:00\ttx-9002\t{liam}\t{liam}\t-2.40\trefunded\n\
             2026-10-08 09:10:00\ttx-9003\t{ava}\tKoala Labs\t-3.60\tcancelled\n\
             2026-10-08 09:15:00\ttx-9004\t{ava}\tKoala Labs\t-4.80\tdenied\n"
        ),
    )
    .unwrap();
    let (code, events) = replay_all(dir.path(), &cfg, &[]);
    assert_eq!((code, events.len()), (0, 4));
    let statuses: BTreeSet<&str> = events
        .iter()
        .map(|e| e["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["cancelled", "charged", "denied", "refunded"])
    );
    let (code, rep) = reconcile(dir.path(), &cfg, &["--by", "account"]);
    assert_eq!(code, 0, "{rep}");
    let t = &rep["totals"];
    assert_eq!(
        (t["read"].as_u64(), t["delivered"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(t["not_billed"], 3, "{rep}");
    assert_eq!(t["amount_read"], "1.20", "{rep}");
    assert_eq!(t["amount_delivered"], "1.20", "{rep}");
    let koala = rep["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "Koala Labs")
        .unwrap();
    assert_eq!(
        (koala["read"].as_u64(), koala["not_billed"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(koala["amount_read"], "0.00", "{koala}");
}
