//! The AMQP confirm window slides across batches: with `window` W and
//! `[delivery] batch` B < W, the messages of several batches are published
//! and awaiting confirms at once, so the broker is never idle while the
//! deliverer records one round and fetches the next. Shown on a private
//! RabbitMQ node frozen with SIGSTOP once publishing has started (no
//! confirm can come while it is frozen): at the sink (several `submit`s
//! return with nothing answered) and under the real daemon (its in-flight
//! gauge passes a batch while nothing more is recorded delivered). After
//! SIGCONT every charge arrives exactly once, in order, none dead.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chargetail::sink::amqp::{AmqpConfig, AmqpSink};
use chargetail::sink::{Outcome, Sink};
use support::rabbit::{NodeOptions, RabbitNode};
use support::*;

async fn private_node() -> RabbitNode {
    tokio::task::spawn_blocking(|| RabbitNode::start(NodeOptions::default()))
        .await
        .unwrap()
        .expect("private rabbitmq node (is rabbitmq-server installed?)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_return_with_several_batches_unconfirmed() {
    const WINDOW: usize = 200;
    const BATCH: usize = 50;
    let node = private_node().await;
    let _guard = node.guard();
    let url = node.amqp_url();
    let (ex, q) = (unique("window-x"), unique("window-q"));
    declare(&url, &ex, Some((&q, false, "charge.#"))).await;
    let mut c = AmqpConfig::new(url.clone(), ex.clone());
    c.window = WINDOW;
    // Far longer than the freeze: nothing may time out meanwhile.
    c.timeout_ms = 120_000;
    let mut sink = AmqpSink::new(c, "pc-window".into()).unwrap();
    let all = envelopes("window", 1 + WINDOW);

    // Connected, and the window opened by a first ack (a new connection
    // probes one message at a time).
    assert_eq!(sink.send(&all[..1]).await, [Outcome::Delivered]);

    node.freeze();
    // Four batches fill the window; every submit returns without waiting
    // for a confirm, and none can be answered.
    let mut answered = Vec::new();
    for b in all[1..].chunks(BATCH) {
        let out = sink.submit(b).await;
        answered.extend(out);
    }
    assert!(
        answered.is_empty(),
        "the frozen broker cannot have confirmed anything: {answered:?}"
    );
    // A fifth submit would wait for the oldest confirm: thaw first.
    node.thaw();
    let out = sink.flush().await;
    assert_eq!(out.len(), WINDOW, "one outcome per envelope carried");
    assert!(
        out.iter().all(|o| *o == Outcome::Delivered),
        "every carried charge confirmed: {out:?}"
    );
    assert!(sink.flush().await.is_empty(), "nothing is carried any more");
    sink.close().await;

    let got = drain(&url, &q).await;
    let ids: Vec<String> = got
        .iter()
        .map(|d| d.properties.message_id().clone().unwrap().to_string())
        .collect();
    let want: Vec<String> = all.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, want, "every charge exactly once, in order");
    for (d, e) in got.iter().zip(&all) {
        assert_eq!(d.data, e.payload, "the bytes as handed over");
    }
}

/// A daemon following `tx.log` (its first line written) into a private,
/// freezable node, with its `/metrics` on a port of its own.
struct Rig {
    rt: tokio::runtime::Runtime,
    node: RabbitNode,
    _guard: support::rabbit::NodeGuard,
    url: String,
    q: String,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    cfg: std::path::PathBuf,
    port: u16,
}

impl Rig {
    fn start(tag: &str, batch: u64, window: u64) -> (Rig, Daemon) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let node = rt.block_on(private_node());
        let _guard = node.guard();
        let url = node.amqp_url();
        let (ex, q) = (unique(&format!("{tag}-x")), unique(&format!("{tag}-q")));
        rt.block_on(declare(&url, &ex, Some((&q, false, "charge.#"))));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tx.log");
        append(&file, HEADER);
        append(&file, &tx_line(0));
        let port = free_http_port();
        let cfg = write_config(
            dir.path(),
            "tx.log",
            &format!(
                "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[delivery]\nbatch = {batch}\n\n\
                 [sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{url}\"\nexchange = \"{ex}\"\n\
                 window = {window}\ntimeout_ms = 120000\n"
            ),
        );
        let d = Daemon::start(&cfg);
        let rig = Rig {
            rt,
            node,
            _guard,
            url,
            q,
            _dir: dir,
            file,
            cfg,
            port,
        };
        (rig, d)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.cfg.with_file_name("daemon.log")).unwrap_or_default()
    }

    /// (delivered, in flight) from `/metrics`.
    fn scrape(&self) -> (u64, u64) {
        let m = http_get(self.port, "/metrics");
        let get = |name| metric(&m, name).unwrap_or_else(|| panic!("{name} in /metrics"));
        (
            get("chargetail_delivered_total") as u64,
            get("chargetail_delivery_in_flight") as u64,
        )
    }

    /// Scrapes until `done` (thawing the node before failing).
    fn wait_for(&self, what: &str, done: impl Fn((u64, u64)) -> bool) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.scrape();
            if done(now) {
                return now;
            }
            if Instant::now() > deadline {
                self.node.thaw();
                panic!("{what}: (delivered, in flight) = {now:?}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Until the outbox has `total` delivered and nothing pending or dead.
    fn wait_all_delivered(&self, total: u64) {
        wait_for_outbox(
            &self.cfg,
            120,
            |(delivered, pending, dead)| {
                assert_eq!(dead, 0, "no dead letters\n{}", self.log());
                delivered == total && pending == 0
            },
            || self.log(),
        );
    }

    /// The transaction ids the queue received, in order.
    fn received(&self) -> Vec<String> {
        let msgs = self.rt.block_on(drain(&self.url, &self.q));
        msgs.iter()
            .map(|m| {
                let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
                v["data"]["transaction_id"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

#[test]
fn the_daemon_keeps_several_batches_in_flight_while_confirms_are_outstanding() {
    const WINDOW: u64 = 500;
    const BATCH: u64 = 50;
    const LATER: u64 = 2_000;
    let (rig, d) = Rig::start("window-d", BATCH, WINDOW);
    // Publishing has started: the first charge is confirmed (the window is
    // open; a new connection sends one message at a time until an ack).
    rig.wait_for("first charge delivered", |(delivered, _)| delivered >= 1);

    rig.node.freeze();
    append(&rig.file, &(1..=LATER).map(tx_line).collect::<String>());
    // Batch after batch goes out while no confirm can come back.
    let (delivered, in_flight) = rig.wait_for("more than one batch in flight", |(_, f)| f > BATCH);
    rig.node.thaw();
    eprintln!("frozen broker: {in_flight} charges in flight (batch {BATCH}, window {WINDOW})");
    assert_eq!(
        delivered, 1,
        "nothing confirmed while the broker was frozen"
    );
    assert!(
        in_flight <= WINDOW,
        "never more than the window unconfirmed"
    );

    rig.wait_all_delivered(1 + LATER);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    let tx = rig.received();
    let want: Vec<String> = (0..=LATER).map(|n| format!("tx-{n:06}")).collect();
    assert_eq!(tx.len(), want.len(), "every charge exactly once");
    assert_eq!(
        tx.iter().collect::<HashSet<_>>().len(),
        tx.len(),
        "no charge twice"
    );
    assert_eq!(tx, want, "in file order");
    assert_eq!(
        rig.log().matches("AMQP connected").count(),
        1,
        "one connection throughout: nothing timed out or was resent\n{}",
        rig.log()
    );
}

/// With nothing more to send and confirms outstanding, the deliverer waits
/// for the next confirm *or* new charges, whichever comes first: charges
/// committed meanwhile go out behind those in flight instead of waiting
/// until every confirm is in (the window never drains while work waits).
/// Two appends to a frozen broker, each smaller than a batch: both end up
/// in flight at once.
#[test]
fn new_charges_go_out_while_the_last_ones_await_their_confirms() {
    const FIRST: u64 = 20;
    const SECOND: u64 = 30;
    let (rig, d) = Rig::start("window-w", 100, 1000);
    // The window is open once the first charge is confirmed.
    rig.wait_for("first charge delivered", |(delivered, _)| delivered >= 1);

    rig.node.freeze();
    let lines = |from: u64, n: u64| (from..from + n).map(tx_line).collect::<String>();
    append(&rig.file, &lines(1, FIRST));
    rig.wait_for("the first append in flight", |(_, f)| f == FIRST);
    append(&rig.file, &lines(1 + FIRST, SECOND));
    let (delivered, _) = rig.wait_for("both appends in flight at once", |(_, f)| {
        f == FIRST + SECOND
    });
    rig.node.thaw();
    assert_eq!(
        delivered, 1,
        "nothing confirmed while the broker was frozen"
    );

    let total = 1 + FIRST + SECOND;
    rig.wait_all_delivered(total);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    let want: Vec<String> = (0..total).map(|n| format!("tx-{n:06}")).collect();
    assert_eq!(
        rig.received(),
        want,
        "every charge exactly once, in file order"
    );
}
