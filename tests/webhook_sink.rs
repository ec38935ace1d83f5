//! The webhook sink against a real HTTP receiver on loopback.

mod webhook_support;

use std::time::{Duration, Instant, SystemTime};

use chargetail::sink::webhook::{HeaderFrom, HeaderSetting, WebhookConfig, WebhookSink};
use chargetail::sink::{Outcome, Sink};
use webhook_support::{envelope, new_secret, secret_file, serve, verify, Reply};

fn sink(
    url: &str,
    secrets: &[&str],
    tweak: impl FnOnce(&mut WebhookConfig),
) -> (WebhookSink, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = WebhookConfig::for_url(url);
    cfg.secret_file = Some(secret_file(dir.path(), secrets));
    cfg.connect_timeout_ms = 1000;
    cfg.timeout_ms = 2000;
    tweak(&mut cfg);
    (WebhookSink::new(cfg).unwrap(), dir)
}

fn is_retry(o: &Outcome) -> bool {
    matches!(o, Outcome::Retry { .. })
}

fn retry_after(o: &Outcome) -> Option<Duration> {
    match o {
        Outcome::Retry { retry_after, .. } => *retry_after,
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_an_independent_verifier() {
    let server = serve(|_| Reply::status(204)).await;
    let (a, b) = (new_secret(), new_secret());
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("api-key");
    std::fs::write(&key_file, "k-123\n").unwrap();
    let (mut s, _d) = sink(&server.url("/hooks/papercut"), &[&a, &b], |c| {
        c.headers.insert(
            "x-api-key".into(),
            HeaderSetting::From(HeaderFrom {
                env: None,
                file: Some(key_file.clone()),
            }),
        );
        c.headers
            .insert("x-tenant".into(), HeaderSetting::Value("acme".into()));
    });
    let batch: Vec<_> = (1..=3).map(envelope).collect();
    let before = SystemTime::now();
    let out = s.send(&batch).await;
    assert_eq!(out, vec![Outcome::Delivered; 3]);

    let hits = server.hits();
    assert_eq!(hits.len(), 3);
    for (hit, env) in hits.iter().zip(&batch) {
        assert_eq!(hit.method, "POST");
        assert_eq!(hit.path, "/hooks/papercut");
        assert_eq!(hit.body.as_ref(), env.payload.as_slice(), "body unchanged");
        assert_eq!(hit.id(), env.id);
        assert_eq!(
            hit.header("content-type"),
            Some("application/cloudevents+json")
        );
        assert_eq!(hit.header("x-api-key"), Some("k-123"));
        assert_eq!(hit.header("x-tenant"), Some("acme"));
        let ts: u64 = hit.header("webhook-timestamp").unwrap().parse().unwrap();
        let b4 = before
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(ts >= b4 && ts <= b4 + 5, "timestamp of this attempt");
        let sig = hit.header("webhook-signature").unwrap();
        assert_eq!(
            sig.split(' ').count(),
            2,
            "one entry per active secret: {sig}"
        );
        // Each active secret verifies on its own.
        verify(&a, &hit.headers, &hit.body).unwrap();
        verify(&b, &hit.headers, &hit.body).unwrap();
        // A stranger's secret does not, nor does a tampered body.
        assert!(verify(&new_secret(), &hit.headers, &hit.body).is_err());
        let mut tampered = hit.body.to_vec();
        let pos = tampered.iter().position(|&c| c == b'1').unwrap();
        tampered[pos] = b'9';
        assert!(verify(&a, &hit.headers, &tampered).is_err());
        assert!(verify(&b, &hit.headers, &tampered).is_err());
        // Nor another id with the same body.
        let mut h = hit.headers.clone();
        h.insert("webhook-id", "chg_other".parse().unwrap());
        assert!(verify(&a, &h, &hit.body).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_keeps_the_id_and_signs_again() {
    let server = serve(|h| {
        if h.n == 0 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let secret = new_secret();
    let (mut s, _d) = sink(&server.url("/"), &[&secret], |_| {});
    let mut env = envelope(7);
    assert!(is_retry(&s.send(std::slice::from_ref(&env)).await[0]));
    env.attempts += 1;
    assert_eq!(
        s.send(std::slice::from_ref(&env)).await,
        vec![Outcome::Delivered]
    );
    let hits = server.hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].id(), hits[1].id());
    for h in &hits {
        verify(&secret, &h.headers, &h.body).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_holds_back_the_rest_of_the_batch() {
    // The third request fails with 503 and Retry-After: 7.
    let server = serve(|h| {
        if h.n == 2 {
            Reply::with_header(503, "Retry-After", "7")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let (mut s, _d) = sink(&server.url("/"), &[&new_secret()], |_| {});
    let batch: Vec<_> = (1..=10).map(envelope).collect();
    let out = s.send(&batch).await;
    assert_eq!(out.len(), 10);
    assert_eq!(&out[..2], &[Outcome::Delivered, Outcome::Delivered]);
    assert!(is_retry(&out[2]), "{:?}", out[2]);
    assert_eq!(retry_after(&out[2]), Some(Duration::from_secs(7)));
    // Held back behind the failure: not attempted, not blamed.
    assert!(out[3..].iter().all(|o| *o == Outcome::NotSent), "{out:?}");
    assert_eq!(server.count(), 3, "nothing sent after the failure");
    let ids: Vec<String> = server.hits().iter().map(|h| h.id().to_string()).collect();
    assert_eq!(
        ids,
        vec![
            batch[0].id.clone(),
            batch[1].id.clone(),
            batch[2].id.clone()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_statuses_and_retry_after_forms() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let replies = vec![
        Reply::status(408),
        Reply::with_header(429, "Retry-After", "3"),
        Reply::with_header(503, "Retry-After", &date),
        Reply::status(500),
        Reply::status(502),
        Reply::with_header(429, "Retry-After", "garbage"),
    ];
    let r2 = replies.clone();
    let server = serve(move |h| r2[h.n].clone()).await;
    let (mut s, _d) = sink(&server.url("/"), &[&new_secret()], |_| {});
    let mut got = Vec::new();
    for i in 0..replies.len() {
        let o = s.send(&[envelope(i as i64)]).await.remove(0);
        assert!(is_retry(&o), "{o:?}");
        got.push(retry_after(&o));
    }
    assert_eq!(got[0], None);
    assert_eq!(got[1], Some(Duration::from_secs(3)));
    let d = got[2].unwrap();
    assert!(
        d > Duration::from_secs(27) && d <= Duration::from_secs(30),
        "{d:?}"
    );
    assert_eq!(&got[3..], &[None, None, None]);
    assert!(s.health().connected, "an HTTP answer means reachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_unauthorized_and_forbidden_pause_the_endpoint() {
    for code in [410u16, 401, 403] {
        // A Retry-After on the refusal is kept for the charge's next try.
        let server = serve(move |h| {
            if h.n == 0 {
                Reply::with_header(code, "Retry-After", "7")
            } else {
                Reply::status(code)
            }
        })
        .await;
        // One 4xx would otherwise make a dead letter: a refusal must not.
        let (mut s, _d) = sink(&server.url("/"), &[&new_secret()], |c| {
            c.max_4xx_attempts = 1
        });
        let batch: Vec<_> = (1..=5).map(envelope).collect();
        let out = s.send(&batch).await;
        assert_eq!(out.len(), 5);
        assert!(is_retry(&out[0]), "{code}: {:?}", out[0]);
        assert_eq!(retry_after(&out[0]), Some(Duration::from_secs(7)), "{code}");
        assert!(out[1..].iter().all(|o| *o == Outcome::NotSent), "{out:?}");
        assert_eq!(server.count(), 1);
        let h = s.health();
        assert!(
            h.alert
                .as_deref()
                .is_some_and(|a| a.contains(&code.to_string()) && a.contains("paused")),
            "{h:?}"
        );
        assert!(!h.connected);
        assert!(Sink::is_paused(&s));
        // Paused: nothing reaches the server any more, whatever is sent;
        // the charges wait on the worker's backoff, not a fixed hour.
        for _ in 0..3 {
            let out = s.send(&batch).await;
            assert!(is_retry(&out[0]) && retry_after(&out[0]).is_none());
            assert!(out[1..].iter().all(|o| *o == Outcome::NotSent));
        }
        assert_eq!(server.count(), 1, "{code}: no request while paused");
        assert!(s.is_paused());
        // An operator resumes it.
        s.resume();
        assert!(s.health().alert.is_none());
        assert!(!s.is_paused());
        s.send(&batch[..1]).await;
        assert_eq!(server.count(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_4xx_is_rejected_after_max_attempts() {
    let long_body = format!("invalid charge: {}", "x".repeat(500));
    let lb = long_body.clone();
    let server = serve(move |_| Reply::Answer {
        status: 400,
        headers: vec![],
        body: lb.clone(),
    })
    .await;
    let (mut s, _d) = sink(&server.url("/"), &[&new_secret()], |c| {
        c.max_4xx_attempts = 3
    });
    let mut env = envelope(1);
    for _ in 0..2 {
        let o = s.send(std::slice::from_ref(&env)).await.remove(0);
        assert!(is_retry(&o), "{o:?}");
        env.attempts += 1;
    }
    let o = s.send(std::slice::from_ref(&env)).await.remove(0);
    let Outcome::Reject { error } = o else {
        panic!("expected Reject, got {o:?}");
    };
    assert!(error.contains("400"), "{error}");
    assert!(error.contains(&long_body[..200]), "{error}");
    assert!(
        !error.contains(&long_body[..201]),
        "only the first 200 bytes: {error}"
    );
    assert_eq!(server.count(), 3);
    // A charge held back behind a failing one did not use up its tries: it
    // gets its own three.
    let a = envelope(2);
    let mut b = envelope(3);
    b.attempts = 5; // rounds held back behind `a`
    let out = s.send(&[a.clone(), b.clone()]).await;
    assert!(is_retry(&out[0]) && out[1] == Outcome::NotSent, "{out:?}");
    assert_eq!(server.count(), 4, "b not sent behind a failing a");
    let o = s.send(std::slice::from_ref(&b)).await.remove(0);
    assert!(is_retry(&o), "first 400 for b is a retry: {o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let server = serve(|h| {
        if h.path == "/elsewhere" {
            Reply::status(200)
        } else {
            Reply::with_header(302, "Location", "/elsewhere")
        }
    })
    .await;
    let (mut s, _d) = sink(&server.url("/hook"), &[&new_secret()], |_| {});
    for _ in 0..2 {
        let o = s.send(&[envelope(1)]).await.remove(0);
        let Outcome::Retry { error, .. } = &o else {
            panic!("3xx must be a failure: {o:?}");
        };
        assert!(error.contains("302"), "{error}");
    }
    assert!(server.hits().iter().all(|h| h.path == "/hook"));
    assert_eq!(server.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out() {
    let server = serve(|_| Reply::Slow {
        delay: Duration::from_secs(3),
        status: 200,
    })
    .await;
    let (mut s, _d) = sink(&server.url("/"), &[&new_secret()], |c| c.timeout_ms = 200);
    let t = Instant::now();
    let out = s.send(&[envelope(1), envelope(2)]).await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(is_retry(&out[0]) && out[1] == Outcome::NotSent, "{out:?}");
    assert!(format!("{out:?}").contains("timed out"), "{out:?}");
    assert_eq!(server.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_and_refused_connection_are_retries() {
    let server = serve(|_| Reply::Drop).await;
    let (mut s, _d) = sink(&server.url("/"), &[&new_secret()], |_| {});
    let o = s.send(&[envelope(1)]).await.remove(0);
    assert!(is_retry(&o) && retry_after(&o).is_none(), "{o:?}");
    assert!(!s.health().connected);

    // Nobody listening.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let (mut s, _d) = sink(&format!("http://{addr}/"), &[&new_secret()], |_| {});
    let o = s.send(&[envelope(1)]).await.remove(0);
    let Outcome::Retry { error, .. } = &o else {
        panic!("{o:?}")
    };
    assert!(error.contains("connection"), "{error}");
    let e = s.check().await.unwrap_err().to_string();
    assert!(e.contains("connection"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_any_http_answer() {
    let server = serve(|h| {
        if h.method == "OPTIONS" {
            Reply::status(405)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let (mut s, _d) = sink(&server.url("/hook?token=sekrit"), &[&new_secret()], |_| {});
    let msg = s.check().await.unwrap();
    assert!(msg.contains("405") && msg.contains("reachable"), "{msg}");
    assert!(!msg.contains("sekrit"), "{msg}");
    assert_eq!(server.hits()[0].method, "OPTIONS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_sends_several_at_once() {
    let server = serve(|_| Reply::Slow {
        delay: Duration::from_millis(150),
        status: 200,
    })
    .await;
    let (mut s, _d) = sink(&server.url("/"), &[&new_secret()], |c| c.concurrency = 8);
    let batch: Vec<_> = (1..=16).map(envelope).collect();
    let t = Instant::now();
    let out = s.send(&batch).await;
    let took = t.elapsed();
    assert_eq!(out, vec![Outcome::Delivered; 16]);
    assert!(took < Duration::from_millis(1200), "{took:?}");
    assert!(server.max_in_flight() > 1 && server.max_in_flight() <= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_holds_back_after_a_failure() {
    // The first request fails at once; the others are slow successes.
    let server = serve(|h| {
        if h.n == 0 {
            Reply::with_header(429, "Retry-After", "2")
        } else {
            Reply::Slow {
                delay: Duration::from_millis(100),
                status: 200,
            }
        }
    })
    .await;
    let (mut s, _d) = sink(&server.url("/"), &[&new_secret()], |c| c.concurrency = 4);
    let batch: Vec<_> = (1..=40).map(envelope).collect();
    let out = s.send(&batch).await;
    assert_eq!(out.len(), 40);
    let sent = server.count();
    assert!(sent <= 8, "stopped soon after the failure, sent {sent}");
    let delivered = out.iter().filter(|o| **o == Outcome::Delivered).count();
    assert_eq!(delivered, sent - 1);
    assert!(out
        .iter()
        .filter(|o| is_retry(o))
        .all(|o| retry_after(o) == Some(Duration::from_secs(2))));
}

#[test]
fn malformed_secret_fails_at_startup_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = WebhookConfig::for_url("https://billing.example/h");
    let f = secret_file(dir.path(), &[&new_secret(), "whsec_%%%%topsecret%%%%"]);
    cfg.secret_file = Some(f.clone());
    let e = WebhookSink::new(cfg).unwrap_err().to_string();
    assert!(e.contains(&f.display().to_string()), "{e}");
    assert!(e.contains("secret 2"), "{e}");
    assert!(!e.contains("topsecret"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_cannot_be_a_header_is_rejected_unsent() {
    let server = serve(|_| Reply::status(200)).await;
    let (mut s, _d) = sink(&server.url("/"), &[&new_secret()], |_| {});
    let mut bad = envelope(1);
    bad.id = "chg_bad\nid".into();
    let out = s.send(&[bad, envelope(2)]).await;
    assert!(matches!(out[0], Outcome::Reject { .. }), "{out:?}");
    assert_eq!(
        out[1],
        Outcome::Delivered,
        "a rejected charge does not block the next"
    );
    assert_eq!(server.count(), 1);
}
