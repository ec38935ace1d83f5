//! The consumer example (`examples/pg_consumer.rs`) against a real daemon, a
//! real RabbitMQ and a real PostgreSQL (127.0.0.1:5432, trust auth, user
//! postgres; scripts/test.sh starts one where none answers): the daemon
//! streams charges, the consumer is killed mid-stream and started again,
//! and every charge ends in the table exactly once.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tokio_postgres::{Client, NoTls};

const PG: &str = "host=127.0.0.1 port=5432 user=postgres";

async fn pg(dbname: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(&format!("{PG} dbname={dbname}"), NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL on 127.0.0.1:5432 (user postgres, trust): {e}; scripts/test.sh starts one")
        });
    tokio::spawn(conn);
    client
}

/// The example's binary. `cargo test` builds examples with everything else;
/// when only this test was built (`cargo test --test pg_consumer`), build
/// it here.
fn example() -> PathBuf {
    // target/debug/deps/pg_consumer-… → target/debug/examples/pg_consumer
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples/pg_consumer"))
        .expect("target dir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pg_consumer.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&path) < modified(&source) {
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "--example", "pg_consumer"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // Without the variables cargo sets for tests: they would make this
        // build's fingerprints differ from the outer one's (a rebuild of the
        // crate each way).
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
                build.env_remove(k);
            }
        }
        let status = build.status().expect("cargo build --example pg_consumer");
        assert!(status.success());
    }
    assert!(path.is_file(), "{} missing", path.display());
    path
}

fn consumer(bin: &PathBuf, queue: &str, db: &str, idle: Option<u64>) -> std::process::Child {
    let mut c = Command::new(bin);
    c.args(["--amqp", &shared_url(), "--queue", queue])
        .args(["--pg", &format!("{PG} dbname={db}")])
        .args(["--prefetch", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(s) = idle {
        c.args(["--exit-when-idle", &s.to_string()]);
    }
    c.spawn().expect("start pg_consumer")
}

async fn rows(db: &Client) -> i64 {
    match db.query_one("SELECT count(*) FROM charges", &[]).await {
        Ok(r) => r.get(0),
        Err(_) => 0, // the consumer has not created the table yet
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_charge_once_across_a_consumer_killed_mid_stream() {
    const N: u64 = 3000;
    let bin = example();

    // A private database for this run.
    let admin = pg("postgres").await;
    let db_name = format!(
        "ct_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await
        .expect("create database");
    let db = pg(&db_name).await;

    // Own exchange and quorum queue on the shared broker.
    let url = shared_url();
    let ex = unique("pgc");
    let queue = format!("{ex}.q");
    declare(&url, &ex, Some((&queue, true, "charge.#"))).await;

    let dir = tempfile::tempdir().unwrap();
    let tx = dir.path().join("tx.log");
    let cfg = write_config(
        dir.path(),
        "tx.log",
        &format!(
            "[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{url}\"\nexchange = \"{ex}\"\nwindow = 100\n"
        ),
    );
    append(&tx, HEADER);
    let daemon = Daemon::start(&cfg);

    // The consumer runs while the daemon streams.
    let mut first = consumer(&bin, &queue, &db_name, None);
    let mut written = 0;
    let mut rows_at_kill = None;
    while written < N {
        let chunk: String = (written..written + 100).map(tx_line).collect();
        append(&tx, &chunk);
        written += 100;
        tokio::time::sleep(Duration::from_millis(40)).await;
        if rows_at_kill.is_none() && rows(&db).await >= (N / 3) as i64 {
            first.kill().unwrap();
            first.wait().unwrap();
            rows_at_kill = Some(rows(&db).await);
        }
    }
    // If it was too slow to reach a third while we wrote, kill it now,
    // still mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows_at_kill.is_none() {
        if rows(&db).await >= (N / 3) as i64 {
            first.kill().unwrap();
            first.wait().unwrap();
            rows_at_kill = Some(rows(&db).await);
        }
        assert!(
            Instant::now() < deadline,
            "the consumer stored only {} rows in 60 s",
            rows(&db).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_kill = rows_at_kill.unwrap();
    let _ = first.wait(); // reaped above; this keeps every path waiting
    assert!(
        at_kill < N as i64,
        "killed mid-stream: {at_kill} of {N} stored"
    );

    // Restarted, it takes up where the queue is and stops once idle.
    let second = consumer(&bin, &queue, &db_name, Some(5));
    let out = tokio::task::spawn_blocking(move || second.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "second consumer: {:?}", out.status);
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();

    let (status, _) = daemon.stop();
    assert_eq!(status, Some(0));

    // Exactly the charges the file holds, each once.
    let parsed = run_cli(&[
        "parse",
        "--config",
        cfg.to_str().unwrap(),
        tx.to_str().unwrap(),
    ]);
    assert!(parsed.status.success());
    let mut expected: Vec<String> = ids(&String::from_utf8_lossy(&parsed.stdout)
        .lines()
        .map(String::from)
        .collect::<Vec<_>>());
    expected.sort();
    assert_eq!(expected.len(), N as usize);
    let stored: Vec<String> = db
        .query("SELECT id FROM charges ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), expected.len(), "rows: {summary}");
    assert_eq!(stored, expected, "the stored ids are the file's charges");
    // Amounts as the daemon billed them: the sum of `-N.NN` debits, exact.
    let total: String = db
        .query_one("SELECT sum(amount)::text FROM charges", &[])
        .await
        .unwrap()
        .get(0);
    let want: rust_decimal::Decimal = (0..N)
        .map(|n| rust_decimal::Decimal::new(((n % 5) * 100 + n % 100) as i64, 2))
        .sum();
    assert_eq!(total.parse::<rust_decimal::Decimal>().unwrap(), want);
    assert_eq!(message_count(&url, &queue).await, 0, "queue drained");
    for r in db
        .query("SELECT body::text FROM charges", &[])
        .await
        .unwrap()
    {
        let body: String = r.get(0);
        schema::check(body.as_bytes());
    }

    cleanup(&url, &ex, Some(&queue)).await;
    drop(db);
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await;
}
