//! The broker password never shows: not in errors, health, Debug output,
//! nor in any log line at any level (lapin's trace logs included: this
//! binary captures everything with a global TRACE subscriber).

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use chargetail::sink::amqp::{AmqpConfig, AmqpSink};
use chargetail::sink::{Outcome, Sink};
use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let c = Captured::default();
        let w = c.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::set_global_default(sub).expect("global subscriber");
        c
    })
}

fn cfg(exchange: &str) -> AmqpConfig {
    let mut c = AmqpConfig::new(shared_url(), exchange);
    c.timeout_ms = 5_000;
    c.reconnect_initial_ms = 10;
    c.reconnect_max_ms = 20;
    c
}

const SECRET: &str = "Sup3r-S3cret-pw";

fn assert_masked(text: &str) {
    assert!(!text.contains(SECRET), "password leaked: {text}");
    assert!(!text.contains("Sup3r-S3cret"), "password leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_never_appears_in_errors_logs_or_debug() {
    let logs = logs();
    let ex = unique("mask");
    // Wrong password in the URL: the broker refuses the login.
    let url = shared_url().replacen("guest:guest@", &format!("guest:{SECRET}@"), 1);
    assert!(url.contains(SECRET));
    let mut c = cfg(&ex);
    c.url = url.clone();
    let mut sink = AmqpSink::new(c.clone(), "pc".into()).unwrap();
    assert_masked(&format!("{sink:?}"));
    assert_masked(&format!("{c:?}"));
    let out = sink.send(&envelopes("mask", 2)).await;
    for o in &out {
        match o {
            Outcome::Retry { error, .. } => {
                assert_masked(error);
                assert!(error.contains("guest:****@"), "{error}");
            }
            // Behind the first failure: not attempted.
            Outcome::NotSent => {}
            other => panic!("{other:?}"),
        }
    }
    let h = sink.health();
    assert!(!h.connected);
    if let Some(a) = &h.alert {
        assert_masked(a);
    }
    let e = sink.check().await.unwrap_err().to_string();
    eprintln!("masked: {e}");
    assert_masked(&e);

    // The same from password_file, and with nothing listening.
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{SECRET}\n")).unwrap();
    let port = support::rabbit::free_port();
    let mut c = cfg(&ex);
    c.url = format!("amqp://guest@127.0.0.1:{port}/%2f");
    c.password_file = Some(pw);
    let mut sink = AmqpSink::new(c, "pc".into()).unwrap();
    for o in sink.send(&envelopes("mask2", 1)).await {
        assert!(matches!(&o, Outcome::Retry { .. }));
        if let Outcome::Retry { error, .. } = o {
            assert_masked(&error);
        }
    }
    let e = sink.check().await.unwrap_err().to_string();
    eprintln!("masked: {e}");
    assert_masked(&e);

    // Bad URLs never echo their password.
    for bad in [
        format!("amqp://guest:{SECRET}@127.0.0.1:notaport/"),
        format!("http://guest:{SECRET}@127.0.0.1/"),
    ] {
        let mut c = cfg(&ex);
        c.url = bad;
        assert_masked(&AmqpSink::new(c, "pc".into()).unwrap_err().to_string());
    }

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("Connecting."),
        "lapin trace logs were not captured"
    );
    assert!(
        text.contains("AMQP connect failed"),
        "our warn log was not captured"
    );
    assert_masked(&text);
}
