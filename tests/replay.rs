//! `chargetail replay` with the stdout sink: real files (plain and gzip),
//! a real state database, real processes.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rust_decimal::Decimal;
use support::*;

/// Run replay; returns (exit code, charges printed on stdout, summary JSON).
fn replay(cfg: &Path, args: &[&str]) -> (i32, Vec<String>, serde_json::Value) {
    let out = Command::new(bin())
        .arg("replay")
        .arg("--config")
        .arg(cfg)
        .arg("--json")
        .args(args)
        .env("CHARGETAIL_LOG", "off")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // With the stdout sink the summary goes to stderr (the data owns stdout).
    let summary: serde_json::Value = serde_json::Deserializer::from_str(&stderr)
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no summary in stderr: {stderr}"));
    (
        out.status.code().unwrap_or(-1),
        stdout.lines().map(String::from).collect(),
        summary,
    )
}

fn write_day(path: &Path, from: u64, to: u64) {
    let mut text = HEADER.to_string();
    for n in from..to {
        text.push_str(&tx_line(n));
    }
    std::fs::write(path, text).unwrap();
}

fn gzip(src: &Path, dst: &Path) {
    let data = std::fs::read(src).unwrap();
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(dst).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
}

/// Sum amounts per account from the delivered events themselves.
fn sums(lines: &[String]) -> BTreeMap<String, Decimal> {
    let mut m = BTreeMap::new();
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let a: Decimal = v["data"]["amount"].as_str().unwrap().parse().unwrap();
        *m.entry(v["data"]["account"].as_str().unwrap().to_string())
            .or_default() += a;
    }
    m
}

#[test]
fn replay_twice_delivers_nothing_new_and_totals_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let arch = dir.path().join("archive");
    std::fs::create_dir(&arch).unwrap();
    write_day(&arch.join("tx-b.log"), 100, 160);
    write_day(&arch.join("tx-a.log"), 0, 100);
    gzip(&arch.join("tx-a.log"), &arch.join("tx-a.log.gz"));
    std::fs::remove_file(arch.join("tx-a.log")).unwrap();
    write_day(&arch.join("tx-c.log"), 160, 200);
    let cfg = write_config(dir.path(), "live/*.log", "");

    // Out of order on the command line, a glob, plain and .gz mixed.
    let (code, lines, s) = replay(
        &cfg,
        &[
            arch.join("tx-c.log").to_str().unwrap(),
            &format!("{}/tx-[ab].log*", arch.display()),
        ],
    );
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["charges_read"], 200);
    assert_eq!(s["newly_delivered"], 200);
    assert_eq!(s["already_delivered"], 0);
    // Oldest first: by the time of each file's first charge.
    let expected: Vec<String> = (0..200).map(|n| format!("tx-{n:06}")).collect();
    assert_eq!(tx_ids(&lines), expected);
    // The reckoning equals an independent sum of what was delivered.
    let by_account = sums(&lines);
    let total: Decimal = by_account.values().sum();
    assert_eq!(
        s["totals_newly_delivered"]["by_currency"]["AUD"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        total
    );
    assert_eq!(
        s["totals_read"]["by_currency"]["AUD"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        total
    );
    assert_eq!(
        s["totals_read"]["by_account"]["AUD"]["Acme Design"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        by_account["Acme Design"]
    );

    let (code, lines, s) = replay(&cfg, &[&format!("{}/*", arch.display())]);
    assert_eq!(code, 0);
    assert!(
        lines.is_empty(),
        "second replay delivered {} charges",
        lines.len()
    );
    assert_eq!(s["already_delivered"], 200);
    assert_eq!(s["newly_delivered"], 0);
}

#[test]
fn replay_of_files_the_daemon_followed_delivers_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("live")).unwrap();
    let file = dir.path().join("live/tx.log");
    write_day(&file, 0, 80);
    let cfg = write_config(dir.path(), "live/*.log", "");
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(80, Duration::from_secs(20)), 80);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    // An archived copy of the same file: same ids.
    std::fs::copy(&file, dir.path().join("copy.log")).unwrap();
    let (code, lines, s) = replay(&cfg, &[dir.path().join("copy.log").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(lines.is_empty());
    assert_eq!(s["already_delivered"], 80);
}

#[test]
fn bad_lines_exit_1_and_the_rest_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("old.log");
    write_day(&f, 0, 10);
    let mut text = std::fs::read_to_string(&f).unwrap();
    text.push_str("2026-11-20 10:00:00\ttx-bad\tbob\tAcme\tnot-money\t1\tPRINT\t1\td\tx\n");
    // A closed historical file: its last line counts without a line end.
    text.push_str(tx_line(10).trim_end());
    std::fs::write(&f, text).unwrap();
    let cfg = write_config(dir.path(), "live/*.log", "");
    let (code, lines, s) = replay(&cfg, &[f.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 11);
    assert_eq!(s["bad_lines"], 1);
    assert_eq!(tx_ids(&lines).last().unwrap(), "tx-000010");
    let v = dead_letters(&cfg);
    assert_eq!(v[0]["line"], 12);
    assert!(v[0]["reason"].as_str().unwrap().contains("not-money"));
}

#[test]
fn dry_run_sends_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("old.log");
    write_day(&f, 0, 30);
    let cfg = write_config(dir.path(), "live/*.log", "");
    let out = Command::new(bin())
        .args(["replay", "--dry-run", "--json", "--config"])
        .arg(&cfg)
        .arg(&f)
        .env("CHARGETAIL_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["charges_read"], 30);
    assert_eq!(s["newly_queued"], 30);
    assert!(
        !dir.path().join("state/state.db").exists(),
        "a dry run creates no state"
    );
    let (_, lines, _) = replay(&cfg, &[f.to_str().unwrap()]);
    assert_eq!(
        lines.len(),
        30,
        "nothing was recorded as delivered by the dry run"
    );
}

#[test]
fn replay_killed_halfway_then_rerun_delivers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.log");
    write_day(&f, 0, 20_000);
    let cfg = write_config(dir.path(), "live/*.log", "");
    let mut child = Command::new(bin())
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg(&f)
        .env("CHARGETAIL_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Kill it once some charges are out.
    let mut first = Vec::new();
    let mut buf = [0u8; 65536];
    while first.len() < 150_000 {
        use std::io::Read;
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => first.extend_from_slice(&buf[..n]),
        }
    }
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
    {
        use std::io::Read;
        let _ = stdout.read_to_end(&mut first);
    }
    let first = String::from_utf8_lossy(&first);
    // Only whole lines: the killed replay may have left a fragment.
    let whole = match first.rfind('\n') {
        Some(i) => &first[..=i],
        None => "",
    };
    let got_first: Vec<String> = whole.lines().map(String::from).collect();
    assert!(
        !got_first.is_empty() && got_first.len() < 20_000,
        "killed mid-way: {}",
        got_first.len()
    );
    let (code, rest, _) = replay(&cfg, &[f.to_str().unwrap()]);
    assert_eq!(code, 0);
    let all: HashSet<String> = tx_ids(&got_first)
        .into_iter()
        .chain(tx_ids(&rest))
        .collect();
    assert_eq!(all.len(), 20_000, "every charge delivered across the kill");
    eprintln!(
        "replay kill -9: {} before, {} after, {} repeated",
        got_first.len(),
        rest.len(),
        got_first.len() + rest.len() - 20_000
    );
}

#[test]
fn replay_beside_a_running_daemon_neither_loses_nor_doubles() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("live")).unwrap();
    let live = dir.path().join("live/tx.log");
    write_day(&live, 0, 300);
    let cfg = write_config(dir.path(), "live/*.log", "");
    let mut d = Daemon::start(&cfg);
    // The daemon is running (it holds the state's run lock) once it has
    // delivered what it follows: a replay started before that would find no
    // daemon and deliver by itself, which is right but not this test.
    assert_eq!(d.wait_for(300, Duration::from_secs(30)), 300);
    // An archive overlapping what the daemon follows (0..300) plus older
    // charges (1000..1500) it never saw.
    let arch = dir.path().join("archive.log");
    let mut text = HEADER.to_string();
    for n in (0..300).chain(1000..1500) {
        text.push_str(&tx_line(n));
    }
    std::fs::write(&arch, text).unwrap();
    let (code, replay_out, s) = replay(&cfg, &[arch.to_str().unwrap()]);
    assert_eq!(code, 0, "{s}");
    assert!(
        replay_out.is_empty(),
        "the running daemon delivers; the replay only queues and waits"
    );
    assert_eq!(s["charges_read"], 800);
    assert_eq!(d.wait_for(800, Duration::from_secs(30)), 800);
    d.drain(Duration::from_millis(500));
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    let txs = tx_ids(&lines);
    let unique: HashSet<&String> = txs.iter().collect();
    assert_eq!(txs.len(), 800, "no charge delivered twice");
    assert_eq!(unique.len(), 800);
    // The reckoning: every charge read is either newly delivered by this
    // replay (adopted ones included) or was delivered before it.
    assert_eq!(
        s["newly_delivered"].as_u64().unwrap() + s["already_delivered"].as_u64().unwrap(),
        800,
        "{s}"
    );
}

#[test]
fn replay_requeues_dead_letters_and_delivers_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("old.log");
    write_day(&f, 0, 20);
    let cfg = write_config(dir.path(), "live/*.log", "");
    let (code, lines, _) = replay(&cfg, &[f.to_str().unwrap()]);
    assert_eq!((code, lines.len()), (0, 20));
    // Three of them became dead letters (a sink refused them).
    let dead: Vec<String> = ids(&lines)[5..8].to_vec();
    let db = rusqlite::Connection::open(dir.path().join("state/state.db")).unwrap();
    for id in &dead {
        db.execute(
            "UPDATE outbox SET state = 'dead', last_error = '400' WHERE id = ?1",
            [id],
        )
        .unwrap();
    }
    drop(db);
    let (code, lines, s) = replay(&cfg, &[f.to_str().unwrap()]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(ids(&lines), dead, "exactly the dead letters are sent again");
    assert_eq!(s["requeued_dead"], 3);
    assert_eq!(s["already_delivered"], 17);
    assert_eq!(s["newly_delivered"], 3);
}

#[test]
fn absurd_amounts_do_not_crash_the_reckoning() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("old.log");
    let huge = "-79228162514264337593543950335";
    let mut text = HEADER.to_string();
    for n in 0..2 {
        text.push_str(&tx_line(n).replacen(&format!("-{}.{:02}", n % 5, n % 100), huge, 1));
    }
    std::fs::write(&f, text).unwrap();
    let cfg = write_config(dir.path(), "live/*.log", "");
    let out = Command::new(bin())
        .args(["replay", "--dry-run", "--json", "--config"])
        .arg(&cfg)
        .arg(&f)
        .env("CHARGETAIL_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["charges_read"], 2);
    // The total is capped at the bound, not wrapped or panicked.
    assert_eq!(
        s["totals_read"]["by_currency"]["AUD"],
        "79228162514264337593543950335"
    );
}
