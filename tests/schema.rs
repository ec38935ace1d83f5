//! `docs/charge.schema.json` describes the messages chargetail really sends:
//! every charge `chargetail parse` makes of the sample data and of the test
//! fixtures validates, and the schema refuses the mistakes it is there to
//! catch. (The shared harnesses also validate every message a daemon test
//! receives: tests/support/mod.rs, tests/webhook_support/mod.rs.)

mod support;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::schema;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every data file under `dir` (recursively), skipping scripts and docs.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(data_files(&p));
        } else if !matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("py" | "md" | "toml" | "rs" | "json" | "yaml" | "pem" | "key")
        ) {
            out.push(p);
        }
    }
    out.sort();
    out
}

const PROFILES: [&str; 4] = [
    "transaction-file",
    "print-log",
    "print-logger-csv",
    "job-details",
];

/// The messages `chargetail parse` prints for `file` with `profile`
/// (whatever it cannot parse goes to stderr and is not a message).
fn parse(profile: &str, file: &Path) -> Vec<Vec<u8>> {
    let cfg = root().join("sample-data/demo.toml");
    let out = std::process::Command::new(support::bin())
        .args(["parse", "--profile", profile, "--config"])
        .arg(&cfg)
        .arg(file)
        .output()
        .expect("run chargetail parse");
    out.stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn every_message_of_the_samples_and_fixtures_validates() {
    let mut files = data_files(&root().join("sample-data"));
    files.extend(data_files(&root().join("tests/fixtures")));
    assert!(files.len() >= 10, "sample data missing: {files:?}");
    let mut messages = 0usize;
    let mut failures = Vec::new();
    let mut profiles_seen = std::collections::BTreeSet::new();
    for file in &files {
        // Each file as every profile: a profile that does not fit makes
        // dead letters (stderr), but whatever it does make is a message.
        for profile in PROFILES {
            for m in parse(profile, file) {
                messages += 1;
                profiles_seen.insert(profile);
                let problems = schema::problems(&m);
                if !problems.is_empty() {
                    failures.push(format!(
                        "{} as {profile}: {}\n  {}",
                        file.display(),
                        problems.join("; "),
                        String::from_utf8_lossy(&m)
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {messages} messages do not validate:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    assert_eq!(
        profiles_seen.len(),
        PROFILES.len(),
        "every profile made messages: {profiles_seen:?}"
    );
    assert!(messages > 200, "only {messages} messages");
}

fn valid() -> Value {
    json!({
        "specversion": "1.0",
        "id": "chg_5c0e4a1f0b8e4f0d9a6c3b2e1d7f8a90",
        "source": "papercut/pc-main",
        "type": "papercut.charge",
        "subject": "Acme Design",
        "time": "2026-11-20T09:14:03+11:00",
        "datacontenttype": "application/json",
        "data": {
            "user": "alice", "account": "Acme Design", "account_type": "shared",
            "amount": "1.20", "status": "charged", "currency": "AUD", "job_type": "print",
            "pages": 12, "color_pages": 2, "copies": 1, "duplex": true, "grayscale": null,
            "device": "floor2-mfd", "server": null, "client": null,
            "document": "Q3 board pack.pdf", "paper_size": null, "comment": null,
            "transaction_id": "tx-000118", "balance_after": "18.80", "extra": {},
            "origin": { "file": "/var/log/papercut/tx.log", "offset": 4182, "line": 57 }
        }
    })
}

fn problems(v: &Value) -> Vec<String> {
    schema::problems(&serde_json::to_vec(v).unwrap())
}

#[test]
fn the_schema_accepts_the_documented_message_and_the_planned_fields() {
    assert_eq!(problems(&valid()), Vec::<String>::new());
    let mut v = valid();
    let d = v["data"].as_object_mut().unwrap();
    d.insert("status".into(), json!("refunded"));
    d.insert("amount".into(), json!("0"));
    d.insert("cost".into(), json!("3.60"));
    d.insert("time_source".into(), json!("read"));
    d.insert(
        "billing".into(),
        json!({"customer_id": "cus_42", "team_id": null, "via": "mapping"}),
    );
    d.insert(
        "papercut".into(),
        json!({"full-name": "Alice Example", "email": "alice@example.com"}),
    );
    d.insert("enrichment".into(), json!("ok"));
    assert_eq!(problems(&v), Vec::<String>::new());
    // Print Logger CSV: no cost at all.
    let mut v = valid();
    v["data"]["amount"] = Value::Null;
    assert_eq!(problems(&v), Vec::<String>::new());
}

type Mutation = Box<dyn Fn(&mut Value)>;

#[test]
fn the_schema_catches_mistakes() {
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "amount as a float",
            Box::new(|v| v["data"]["amount"] = json!(1.2)),
        ),
        (
            "amount with a currency sign",
            Box::new(|v| v["data"]["amount"] = json!("$1.20")),
        ),
        (
            "a random id",
            Box::new(|v| v["id"] = json!("3f2a1c9e-7e3b-4c51-9d7a-0b1f2e3d4c5b")),
        ),
        (
            "a misspelt field",
            Box::new(|v| v["data"]["acount"] = json!("Acme")),
        ),
        (
            "an unknown top-level attribute",
            Box::new(|v| v["traceparent"] = json!("00-…")),
        ),
        (
            "no origin",
            Box::new(|v| {
                v["data"].as_object_mut().unwrap().remove("origin");
            }),
        ),
        // No `status` is valid: the first release's queued messages lack it
        // and are resent unchanged after an upgrade (tests/migration.rs).
        (
            "an unknown status",
            Box::new(|v| v["data"]["status"] = json!("void")),
        ),
        (
            "upper-case job type",
            Box::new(|v| v["data"]["job_type"] = json!("PRINT")),
        ),
        (
            "time without offset",
            Box::new(|v| v["time"] = json!("2026-11-20T09:14:03")),
        ),
        (
            "a lower-case currency",
            Box::new(|v| v["data"]["currency"] = json!("aud")),
        ),
        (
            "billing with a misspelt key",
            Box::new(|v| {
                v["data"]["billing"] = json!({"customer_id": "c", "via": "mapping", "team": "t"})
            }),
        ),
        (
            "negative pages",
            Box::new(|v| v["data"]["pages"] = json!(-1)),
        ),
        (
            "extra value not a string",
            Box::new(|v| v["data"]["extra"] = json!({"Cost centre": 12})),
        ),
    ];
    for (what, mutate) in cases {
        let mut v = valid();
        mutate(&mut v);
        assert!(!problems(&v).is_empty(), "schema accepted {what}: {v}");
    }
    assert!(!schema::problems(b"{not json").is_empty());
}

#[test]
fn the_test_envelopes_are_valid_messages() {
    // The synthetic charges the sink tests publish are checked by the same
    // hooks, so they must be well-formed too.
    for i in 0..8 {
        schema::check(&support::envelope("schema", i).payload);
    }
}
