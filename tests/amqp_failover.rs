//! `[sink.amqp] urls`: the daemon goes on with the next node when one is
//! unreachable. Here the first node is a port nothing listens on and the
//! second is the shared broker: every charge arrives, in file order.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn unreachable_first_node_fails_over_to_the_next() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ex, q) = (unique("ct-fo-x"), unique("ct-fo-q"));
    rt.block_on(declare(&shared_url(), &ex, Some((&q, false, "charge.#"))));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    tx_file(dir.path(), 300);
    let cfg = write_config(
        dir.path(),
        "tx.log",
        &format!(
            "[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurls = [\"amqp://guest:guest@127.0.0.1:{dead}/%2f\", \"{}\"]\nexchange = \"{ex}\"\n",
            shared_url()
        ),
    );
    let d = Daemon::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.block_on(message_count(&shared_url(), &q)) < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    let got = rt.block_on(drain(&shared_url(), &q));
    let ids: Vec<String> = got
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
            v["data"]["transaction_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        (0..300).map(|n| format!("tx-{n:06}")).collect::<Vec<_>>()
    );
}

#[test]
fn url_and_urls_are_one_or_the_other() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("tx.log"), HEADER);
    for (sink, want) in [
        ("url = \"amqp://h\"\nurls = [\"amqp://a\"]\n", "not both"),
        ("urls = []\n", "url (one broker) or urls"),
    ] {
        let cfg = write_config(
            dir.path(),
            "tx.log",
            &format!("[sink]\nkind = \"amqp\"\n\n[sink.amqp]\n{sink}exchange = \"x\"\n"),
        );
        let out = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
    }
}
