//! `chargetail run` with the webhook sink, as a real process over real files,
//! against a real HTTP receiver on loopback that the test scripts: end to
//! end bytes and signatures, kill -9 during retries, 410 and 401/403 pauses,
//! 400 dead letters and their retry, and no secret in the logs.

mod support;
mod webhook_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{append, bin, free_http_port, run_cli, wait_timeout, write_config, HEADER};
use webhook_support::{new_secret, serve, verify, Hit, Reply, Server};

/// Generous: two busy cores are shared with other test runs.
const T: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn wall_ms(h: &Hit) -> i64 {
    h.wall.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Poll `f` until it holds; fail naming `what` after `within`.
fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One transaction line; the transaction id fixes the charge id.
fn line(n: u64) -> String {
    support::tx_line(n)
}

/// A receiver on loopback, a source file and a config for the webhook sink.
struct Rig {
    // Dropped first: the server's task lives on `rt`.
    server: Server,
    /// What the receiver answers to every request (unless a test decides
    /// otherwise); switched while the daemon runs.
    reply: Arc<Mutex<Reply>>,
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    secret: String,
    file: PathBuf,
    cfg: PathBuf,
    /// `[http] listen`, when asked for.
    http: Option<String>,
}

type Decide = dyn Fn(&Hit) -> Reply + Send + Sync;

struct Opts<'a> {
    /// Extra keys of `[sink.webhook]`.
    webhook: &'a str,
    /// Keys of `[delivery]`.
    delivery: &'a str,
    http: bool,
    /// Decides answers from the request (else `reply` does).
    decide: Option<Box<Decide>>,
    /// Query string of the URL (a token some receivers want).
    query: &'a str,
    /// `user:password@` in the URL (sent as basic auth).
    userinfo: &'a str,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            webhook: "",
            delivery: "retry_initial_ms = 100\nretry_max_ms = 1000",
            http: false,
            decide: None,
            query: "",
            userinfo: "",
        }
    }
}

impl Rig {
    fn new(opts: Opts) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let reply = Arc::new(Mutex::new(Reply::status(204)));
        let server = {
            let reply = reply.clone();
            let decide = opts.decide;
            rt.block_on(serve(move |h| match &decide {
                Some(d) => d(h),
                None => reply.lock().unwrap().clone(),
            }))
        };
        let dir = tempfile::tempdir().unwrap();
        let secret = new_secret();
        let secret_file = dir.path().join("webhook-secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        let http = opts.http.then(|| format!("127.0.0.1:{}", free_http_port()));
        let http_table = match &http {
            Some(a) => format!("\n[http]\nlisten = \"{a}\"\n"),
            None => String::new(),
        };
        // The source in a directory of its own: the logs the daemon writes
        // in `dir` must not wake its watcher (at trace level, each inotify
        // event is a log line, which is an inotify event...).
        std::fs::create_dir(dir.path().join("in")).unwrap();
        let file = dir.path().join("in/tx.log");
        let cfg = write_config(
            dir.path(),
            "in/tx.log",
            &format!(
                "\n[sink]\nkind = \"webhook\"\n\n[sink.webhook]\nurl = \"http://{}{}/hook{}\"\nsecret_file = \"{}\"\nconnect_timeout_ms = 2000\ntimeout_ms = 5000\n{}\n\n[delivery]\n{}\n{http_table}",
                opts.userinfo,
                server.addr,
                opts.query,
                secret_file.display(),
                opts.webhook,
                opts.delivery,
            ),
        );
        Rig {
            server,
            reply,
            _rt: rt,
            dir,
            secret,
            file,
            cfg,
            http,
        }
    }

    fn set(&self, r: Reply) {
        *self.reply.lock().unwrap() = r;
    }

    fn cfg(&self) -> &str {
        self.cfg.to_str().unwrap()
    }

    /// Start the daemon and wait until it is up (state open), so that the
    /// CLI commands a test runs next find the state database made.
    fn start(&self) -> Run {
        self.start_logging(&self.dir.path().join("daemon.log"), "info")
    }

    fn start_logging(&self, log: &Path, level: &str) -> Run {
        let up = |log: &Path| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("chargetail running")
                .count()
        };
        let before = up(log);
        let mut run = Run::start(&self.cfg, log, level);
        wait_until("the daemon to start", T, || {
            if let Ok(Some(st)) = run.child.try_wait() {
                panic!(
                    "the daemon exited with {st}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            up(log) > before
        });
        run
    }

    fn hits(&self) -> Vec<Hit> {
        self.server.hits()
    }

    /// Requests answered 2xx, in order of arrival.
    fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.reply.code()))
            .collect()
    }

    fn count_status(&self, code: u16) -> usize {
        self.hits()
            .iter()
            .filter(|h| h.reply.code() == code)
            .count()
    }

    /// `chargetail parse` of the source file with the same config: the
    /// exact bytes every charge must be sent as.
    fn parsed(&self) -> Vec<Vec<u8>> {
        let out = run_cli(&["parse", "--config", self.cfg(), self.file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The delivered requests are the parsed charges, once each, in file
    /// order, byte for byte, each validly signed.
    fn assert_delivered_exactly_parsed(&self) {
        let parsed = self.parsed();
        let got = self.delivered();
        assert_eq!(
            got.len(),
            parsed.len(),
            "delivered {:?}",
            got.iter().map(|h| h.id().to_string()).collect::<Vec<_>>()
        );
        for (h, want) in got.iter().zip(&parsed) {
            assert_eq!(
                h.body.as_ref(),
                want.as_slice(),
                "body of {} differs from `chargetail parse`",
                h.id()
            );
            let v: serde_json::Value = serde_json::from_slice(want).unwrap();
            assert_eq!(h.id(), v["id"].as_str().unwrap());
            verify(&self.secret, &h.headers, &h.body)
                .unwrap_or_else(|e| panic!("signature of {}: {e}", h.id()));
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let out = run_cli(&["status", "--config", self.cfg(), "--json"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn dead_letters(&self) -> Vec<serde_json::Value> {
        support::dead_letters(Path::new(self.cfg()))
    }

    fn retry_dead_letters(&self) -> String {
        let out = run_cli(&["dead-letters", "--config", self.cfg(), "retry", "--all"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `/healthz` of the running daemon: (status, body).
    fn healthz(&self) -> Option<(u16, String)> {
        http_get(self.http.as_deref().unwrap(), "/healthz")
    }

    fn wait_health(&self, code: u16, containing: &str) -> String {
        let deadline = Instant::now() + T;
        loop {
            let last = self.healthz();
            if let Some((c, b)) = &last {
                if *c == code && b.contains(containing) {
                    return b.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "/healthz never answered {code} with {containing:?}: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The head of the outbox: (charge id, attempts, next attempt ms).
    fn db_head(&self) -> Option<(String, i64, i64)> {
        let db = rusqlite::Connection::open_with_flags(
            self.dir.path().join("state/state.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        db.busy_timeout(Duration::from_secs(10)).ok()?;
        db.query_row(
            "SELECT id, attempts, next_ms FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ok()
    }

    fn db_attempts(&self, id: &str) -> i64 {
        let db = rusqlite::Connection::open_with_flags(
            self.dir.path().join("state/state.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        db.query_row("SELECT attempts FROM outbox WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// A `chargetail run` whose stderr goes to a file (kept for inspection).
struct Run {
    child: Child,
}

impl Run {
    fn start(cfg: &Path, log: &Path, level: &str) -> Run {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(cfg)
            .env("CHARGETAIL_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start chargetail");
        Run { child }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// SIGTERM; the exit code.
    fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        wait_timeout(&mut self.child, T)
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn appended_lines_arrive_as_parse_prints_them_signed_in_file_order() {
    let rig = Rig::new(Opts::default());
    append(&rig.file, HEADER);
    for n in 0..30 {
        append(&rig.file, &line(n));
    }
    let d = rig.start();
    wait_until("the first 30 charges", T, || rig.delivered().len() >= 30);
    // Appended while running, in bursts.
    for burst in 0..7 {
        for n in 30 + burst * 10..40 + burst * 10 {
            append(&rig.file, &line(n));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until("100 charges", T, || rig.delivered().len() >= 100);
    assert_eq!(d.stop(), Some(0), "clean exit on SIGTERM");
    let hits = rig.hits();
    assert_eq!(hits.len(), 100, "no retries, no duplicates");
    for h in &hits {
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/hook");
        assert_eq!(
            h.header("content-type"),
            Some("application/cloudevents+json")
        );
    }
    rig.assert_delivered_exactly_parsed();
    // A restart on the same state sends nothing again.
    let d = rig.start();
    append(&rig.file, &line(100));
    wait_until("charge 101", T, || rig.delivered().len() >= 101);
    assert_eq!(d.stop(), Some(0));
    rig.assert_delivered_exactly_parsed();
}

#[test]
fn kill9_while_retrying_loses_nothing_and_keeps_the_schedule() {
    let rig = Rig::new(Opts::default());
    // The endpoint is down and asks for 5 s between tries.
    rig.set(Reply::with_header(503, "Retry-After", "5"));
    append(&rig.file, HEADER);
    for n in 0..5 {
        append(&rig.file, &line(n));
    }
    let d = rig.start();
    wait_until("two tries", T, || rig.hits().len() >= 2);
    let hits = rig.hits();
    assert_eq!(hits[0].id(), hits[1].id(), "the head charge, tried again");
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_millis(4900),
        "Retry-After: 5 honoured, waited {gap:?}"
    );
    // Wait for the second failure to be recorded, then kill -9 while the
    // charges wait for their next try.
    wait_until("the second failure recorded", T, || {
        rig.db_head().is_some_and(|(_, a, _)| a >= 2)
    });
    let (head, attempts, next_ms) = rig.db_head().unwrap();
    assert_eq!(head, hits[0].id());
    assert_eq!(attempts, 2);
    d.kill9();
    let killed_at = now_ms();
    assert_eq!(rig.hits().len(), 2);
    assert!(
        next_ms - killed_at > 1000,
        "killed well before the next try was due ({} ms before)",
        next_ms - killed_at
    );
    let s = rig.status_json();
    assert_eq!(s["outbox"]["pending"], 5);
    let err = s["outbox"]["last_error"].as_str().unwrap_or("");
    assert!(err.contains("503"), "status shows the failure: {err}");
    // More lines arrive while the daemon is down; the endpoint recovers.
    for n in 5..8 {
        append(&rig.file, &line(n));
    }
    rig.set(Reply::status(204));
    let d = rig.start();
    let restarted_at = now_ms();
    wait_until("all 8 charges", T, || rig.delivered().len() >= 8);
    assert_eq!(d.stop(), Some(0));
    let hits = rig.hits();
    let third = &hits[2];
    assert_eq!(third.id(), head, "the same charge, the same id");
    // The stored next try was respected across the crash: not sent at
    // restart, and not before the time the endpoint asked for.
    assert!(
        wall_ms(third) >= next_ms,
        "sent {} ms before its stored next attempt (restart was {} ms before it)",
        next_ms - wall_ms(third),
        next_ms - restarted_at
    );
    // Attempts kept counting: 2 failures before the crash, 1 delivery.
    assert_eq!(rig.db_attempts(&head), 3);
    assert_eq!(hits.len(), 2 + 8, "nothing sent twice once delivered");
    rig.assert_delivered_exactly_parsed();
    let s = rig.status_json();
    assert_eq!(s["outbox"]["pending"], 0);
    assert_eq!(s["outbox"]["delivered"], 8);
    assert_eq!(s["outbox"]["dead_charges"], 0);
}

#[test]
fn gone_pauses_until_dead_letters_retry_sighup_or_restart() {
    let rig = Rig::new(Opts {
        http: true,
        ..Opts::default()
    });
    rig.set(Reply::status(410));
    append(&rig.file, HEADER);
    for n in 0..3 {
        append(&rig.file, &line(n));
    }
    let d = rig.start();
    wait_until("the first try", T, || !rig.hits().is_empty());
    let body = rig.wait_health(503, "410");
    assert!(body.contains("paused"), "{body}");
    let out = run_cli(&["status", "--config", rig.cfg()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("410") && text.contains("paused"), "{text}");
    let s = rig.status_json();
    assert_eq!(s["outbox"]["pending"], 3);
    // Paused: new charges wait, nothing reaches the endpoint.
    append(&rig.file, &line(3));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rig.hits().len(), 1, "no request while paused");
    assert!(rig.dead_letters().is_empty(), "410 makes no dead letters");
    assert!(
        rig.log().contains("410 Gone"),
        "alert in the logs:\n{}",
        rig.log()
    );

    // 1. `dead-letters retry` (another process) resumes the running daemon.
    rig.set(Reply::status(204));
    let said = rig.retry_dead_letters();
    assert!(said.contains("0 charges back"), "{said}");
    wait_until("4 charges after retry", T, || rig.delivered().len() >= 4);
    rig.wait_health(200, "ok");

    // 2. SIGHUP resumes too.
    rig.set(Reply::status(410));
    append(&rig.file, &line(4));
    wait_until("the 2nd 410", T, || rig.count_status(410) >= 2);
    rig.wait_health(503, "410");
    rig.set(Reply::status(204));
    d.signal("HUP");
    wait_until("5 charges after SIGHUP", T, || rig.delivered().len() >= 5);
    rig.wait_health(200, "ok");

    // 3. And a restart.
    rig.set(Reply::status(410));
    append(&rig.file, &line(5));
    wait_until("the 3rd 410", T, || rig.count_status(410) >= 3);
    assert_eq!(d.stop(), Some(0));
    rig.set(Reply::status(204));
    let d = rig.start();
    wait_until("6 charges after restart", T, || rig.delivered().len() >= 6);
    assert_eq!(d.stop(), Some(0));
    assert_eq!(rig.count_status(410), 3, "one request per pause");
    rig.assert_delivered_exactly_parsed();
    assert!(rig.dead_letters().is_empty());
}

#[test]
fn bad_request_becomes_a_dead_letter_and_retry_delivers_it_once_fixed() {
    let rig = Rig::new(Opts {
        webhook: "max_4xx_attempts = 2",
        delivery: "retry_initial_ms = 50\nretry_max_ms = 200",
        ..Opts::default()
    });
    let answer = format!("invalid charge: unknown account\n{}", "x".repeat(1000));
    rig.set(Reply::Answer {
        status: 400,
        headers: vec![],
        body: answer,
    });
    append(&rig.file, HEADER);
    for n in 0..3 {
        append(&rig.file, &line(n));
    }
    let d = rig.start();
    wait_until("3 dead letters", T, || rig.dead_letters().len() >= 3);
    let dead = rig.dead_letters();
    assert_eq!(dead.len(), 3);
    let parsed = rig.parsed();
    for (i, (dl, want)) in dead.iter().zip(&parsed).enumerate() {
        let v: serde_json::Value = serde_json::from_slice(want).unwrap();
        assert_eq!(dl["id"], v["id"]);
        assert_eq!(dl["kind"], "charge");
        assert_eq!(dl["line"], i as u64 + 2);
        assert!(dl["file"].as_str().unwrap().ends_with("tx.log"));
        let reason = dl["reason"].as_str().unwrap();
        assert!(
            reason.contains("400") && reason.contains("invalid charge: unknown account"),
            "status and the start of the answer: {reason}"
        );
        assert!(reason.len() < 600, "only the first bytes: {reason}");
        assert!(dl["attempts"].as_u64().unwrap() >= 2);
    }
    assert_eq!(rig.hits().len(), 6, "max_4xx_attempts = 2 tries each");
    let s = rig.status_json();
    assert_eq!(s["outbox"]["dead_charges"], 3);
    assert_eq!(s["outbox"]["pending"], 0);

    // The receiver is fixed; an operator puts them back.
    rig.set(Reply::status(204));
    let said = rig.retry_dead_letters();
    assert!(said.contains("3 charges back"), "{said}");
    wait_until("3 delivered", T, || rig.delivered().len() >= 3);
    assert_eq!(d.stop(), Some(0));
    rig.assert_delivered_exactly_parsed();
    assert!(rig.dead_letters().is_empty());
}

#[test]
fn wrong_api_key_pauses_instead_of_dead_lettering_the_backlog() {
    // The receiver knows two keys; which one it accepts changes.
    let accepted = Arc::new(Mutex::new("k1".to_string()));
    let decide = {
        let accepted = accepted.clone();
        move |h: &Hit| match h.header("x-api-key") {
            Some(k) if *k == *accepted.lock().unwrap() => Reply::status(204),
            Some("k1" | "k2") => Reply::status(403),
            _ => Reply::status(401),
        }
    };
    let rig = Rig::new(Opts {
        webhook: "max_4xx_attempts = 1\n[sink.webhook.headers]\nx-api-key = { file = \"api-key\" }",
        http: true,
        decide: Some(Box::new(decide)),
        ..Opts::default()
    });
    let key = rig.dir.path().join("api-key");
    std::fs::write(&key, "typo\n").unwrap();
    append(&rig.file, HEADER);
    for n in 0..3 {
        append(&rig.file, &line(n));
    }
    let d = rig.start();
    // 401: paused with an alert, not a dead letter after one try.
    wait_until("the first try", T, || !rig.hits().is_empty());
    rig.wait_health(503, "401");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rig.hits().len(), 1, "no request while paused");
    assert!(rig.dead_letters().is_empty(), "the backlog is kept");
    assert_eq!(rig.status_json()["outbox"]["pending"], 3);

    // The key is fixed and SIGHUP re-reads it.
    std::fs::write(&key, "k1\n").unwrap();
    d.signal("HUP");
    wait_until("3 delivered", T, || rig.delivered().len() >= 3);
    rig.wait_health(200, "ok");

    // 403: the receiver revokes the key's rights; paused again.
    *accepted.lock().unwrap() = "k2".into();
    for n in 3..5 {
        append(&rig.file, &line(n));
    }
    wait_until("a 403", T, || rig.count_status(403) >= 1);
    rig.wait_health(503, "403");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rig.count_status(403), 1, "no request while paused");
    assert!(rig.dead_letters().is_empty());
    // Rights restored on the receiver's side; an operator resumes.
    *accepted.lock().unwrap() = "k1".into();
    rig.retry_dead_letters();
    wait_until("5 delivered", T, || rig.delivered().len() >= 5);
    assert_eq!(d.stop(), Some(0));
    rig.assert_delivered_exactly_parsed();
    assert!(rig.dead_letters().is_empty());
}

#[test]
fn no_secret_in_trace_logs() {
    let rig = Rig::new(Opts {
        webhook: "[sink.webhook.headers]\nx-api-key = \"apikey-LITERAL-7f3a\"",
        query: "?token=urltoken-9c1e",
        userinfo: "billing:pw-5d2b@",
        ..Opts::default()
    });
    // Failures first (they log the most), then a 410 pause, then success.
    rig.set(Reply::Answer {
        status: 500,
        headers: vec![],
        body: "oops".into(),
    });
    append(&rig.file, HEADER);
    for n in 0..3 {
        append(&rig.file, &line(n));
    }
    let log_path = rig.dir.path().join("trace.log");
    let d = rig.start_logging(&log_path, "trace");
    wait_until("3 tries", T, || rig.hits().len() >= 3);
    rig.set(Reply::status(410));
    wait_until("a 410", T, || rig.count_status(410) >= 1);
    rig.set(Reply::status(204));
    // SIGHUP re-reads the secret and the header.
    d.signal("HUP");
    wait_until("3 delivered", T, || rig.delivered().len() >= 3);
    assert_eq!(d.stop(), Some(0));
    rig.assert_delivered_exactly_parsed();
    let h = &rig.delivered()[0];
    assert_eq!(h.header("x-api-key"), Some("apikey-LITERAL-7f3a"));
    assert!(
        h.header("authorization")
            .is_some_and(|a| a.starts_with("Basic ")),
        "URL user info sent as basic auth"
    );

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("TRACE") && log.lines().count() > 50,
        "trace logging was on:\n{log}"
    );
    let key_b64 = rig.secret.strip_prefix("whsec_").unwrap();
    for (what, s) in [
        ("secret", rig.secret.as_str()),
        ("secret key", key_b64),
        ("API key header", "apikey-LITERAL-7f3a"),
        ("URL token", "urltoken-9c1e"),
        ("URL password", "pw-5d2b"),
    ] {
        if let Some(at) = log.find(s) {
            let from = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let to = log[at..].find('\n').map_or(log.len(), |i| at + i);
            panic!("{what} in the log: {}", &log[from..to]);
        }
    }
    // Neither the signatures (they are per message, but no need to show).
    let sig = h.header("webhook-signature").unwrap();
    assert!(!log.contains(sig.trim_start_matches("v1,")));
}
