//! Enrichment from PaperCut's Web Services API (`[papercut]`), against a
//! real XML-RPC server the project did not write the protocol of
//! (tests/papercut_server.py, see tests/papercut_support): user and
//! shared-account properties, the cache, the metrics, the token, bounded
//! concurrency, the settings. PaperCut down or slow: tests/papercut_outage.rs.
//! The week of tests/fixtures/billing-week is replayed through a stdout
//! sink; every message is checked against docs/charge.schema.json.

mod papercut_support;
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use papercut_support::*;
use support::{bin, metric};

#[test]
fn properties_land_in_the_message_once_per_user_per_ttl() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    let (dir, cfg) = setup(&server.url(), TOKEN, "");
    let (code, events) = replay(dir.path(), &cfg, "replay.log");
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
    let (code, events) = replay(dir.path(), &cfg, "replay2.log");
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
    let (code, events) = replay(dir.path(), &cfg, "replay3.log");
    assert_eq!(code, 0);
    assert_eq!(events.len(), CHARGES);
    assert!(server.total("api.getUserProperties") > 4);
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
    assert!(m.contains("\nchargetail_papercut_cache_hits_total "), "{m}");

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
    let (code, events) = replay(dir.path(), &cfg, "replay.log");
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
    let (code, events) = replay(dir.path(), &cfg, "replay.log");
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
    let (code, events) = replay(dir.path(), &cfg, "replay2.log");
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
    let (code, events) = replay(dir.path(), &cfg, "replay3.log");
    assert_eq!((code, events.len()), (0, CHARGES));
    assert!(events
        .iter()
        .all(|e| e["data"]["papercut"].get("shared_account").is_none()));
    assert_eq!(server.total("api.getSharedAccountProperties"), 2);
}

/// At most `concurrency` calls in flight, whatever a batch needs: the
/// server (answering each call after 0.3 s) counts the most it answered at
/// once.
#[test]
fn calls_in_flight_never_exceed_concurrency() {
    for conc in [1u64, 2] {
        let dir0 = tempfile::tempdir().unwrap();
        let server = Server::start(dir0.path());
        server.mode("slow 0.3");
        let (dir, cfg) = setup(
            &server.url(),
            TOKEN,
            &format!("concurrency = {conc}\nwait_ms = 60000\ntimeout_ms = 60000\n"),
        );
        let (code, events) = replay(dir.path(), &cfg, "replay.log");
        assert_eq!((code, events.len()), (0, CHARGES));
        assert!(events.iter().any(|e| e["data"]["enrichment"] == "ok"));
        let calls = server.calls();
        // 6 distinct subjects; several in the first batch.
        assert_eq!(calls.get("max_in_flight"), Some(&conc), "{calls:?}");
        assert_eq!(
            server.total("api.getUserProperties") + server.total("api.getSharedAccountProperties"),
            6,
            "{calls:?}"
        );
    }
}

/// `unmapped = "hold"` with `[papercut]`: a charge neither the mapping nor
/// PaperCut's `customer_property` bills is held with the enrichment it was
/// read with, and released carrying it once a mapping names its account.
#[test]
fn a_charge_held_for_a_mapping_keeps_its_enrichment() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    let (dir, cfg) = setup(&server.url(), TOKEN, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[billing]\n", "[billing]\nunmapped = \"hold\"\n");
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start(dir.path(), &cfg, "run.log");
    // maya.chen (empty department) and noah.kim (unknown to PaperCut) on
    // their personal accounts: held; everyone else delivered.
    let m = d.metrics_when("not settled", |m| {
        metric(m, "chargetail_billing_held").unwrap_or(0.0) > 0.0
            && metric(m, "chargetail_billing_held").unwrap_or(0.0)
                + metric(m, "chargetail_delivered_total").unwrap_or(0.0)
                == CHARGES as f64
    });
    let held = held_list(dir.path(), &cfg);
    assert_eq!(
        held.len() as f64,
        metric(&m, "chargetail_billing_held").unwrap()
    );
    assert!(held.iter().all(|h| h["reason"] == "unmapped"
        && (h["account"] == "maya.chen@harbourworks.com.au"
            || h["account"] == "noah.kim@harbourworks.com.au")));
    std::fs::write(
        dir.path().join("accounts.csv"),
        "papercut,customer_id\nAcme Design,cus_acme\nKoala Labs,cus_koala\nmaya.chen@harbourworks.com.au,cus_maya\nnoah.kim@harbourworks.com.au,cus_noah\n",
    )
    .unwrap();
    d.metrics_when("not all delivered", |m| {
        metric(m, "chargetail_delivered_total") == Some(CHARGES as f64)
    });
    let calls = server.total("api.getUserProperties");
    let events = d.stop();
    assert_eq!(events.len(), CHARGES);
    for e in &events {
        let data = &e["data"];
        match data["account"].as_str().unwrap() {
            "maya.chen@harbourworks.com.au" => {
                assert_eq!(data["billing"]["customer_id"], "cus_maya", "{e}");
                assert_eq!(data["enrichment"], "ok", "{e}");
                assert_eq!(data["papercut"]["full-name"], "Maya Chen", "{e}");
            }
            "noah.kim@harbourworks.com.au" => {
                assert_eq!(data["billing"]["customer_id"], "cus_noah", "{e}");
                assert_eq!(data["enrichment"], "unknown", "{e}");
            }
            _ => {}
        }
    }
    // Released without asking PaperCut again.
    assert_eq!(calls, 4);
}
