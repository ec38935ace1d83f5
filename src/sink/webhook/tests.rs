use super::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn table(s: &str) -> toml::Table {
    s.parse().unwrap()
}

#[test]
fn config_defaults_and_errors() {
    let c = WebhookConfig::from_table(&table("url = 'https://x.example/h'")).unwrap();
    assert_eq!(c.connect_timeout_ms, 10_000);
    assert_eq!(c.timeout_ms, 30_000);
    assert_eq!(c.concurrency, 1);
    assert_eq!(c.max_4xx_attempts, 3);
    assert!(!c.follow_redirects);
    let e = WebhookConfig::from_table(&table("url = 'https://x/h'\ntimout_ms = 5")).unwrap_err();
    assert!(e.contains("timout_ms"), "{e}");
    let e = WebhookConfig::from_table(&table("url = 'ftp://x/h'")).unwrap_err();
    assert!(e.contains("ftp"), "{e}");
    let e = WebhookConfig::from_table(&table(
        "url = 'https://x/h'\nsecret_file='a'\nsecrets_env='B'",
    ))
    .unwrap_err();
    assert!(e.contains("not both"), "{e}");
    let e = WebhookConfig::from_table(&table("url = 'https://x/h'\n[headers]\nwebhook-id = 'x'"))
        .unwrap_err();
    assert!(e.contains("webhook-id"), "{e}");
    let c = WebhookConfig::from_table(&table(
        "url = 'https://x/h'\n[headers]\nx-api-key = { env = 'K' }\nx-other = 'v'",
    ))
    .unwrap();
    assert_eq!(c.headers.len(), 2);
}

#[test]
fn debug_shows_no_secret() {
    let mut cfg = WebhookConfig::from_table(&table(
        "url = 'https://user:hunter2@x.example/h?token=tok123'\n[headers]\nx-api-key = 'key-abc'",
    ))
    .unwrap();
    let d = format!("{cfg:?}");
    for s in ["hunter2", "tok123", "key-abc"] {
        assert!(!d.contains(s), "{d}");
    }
    cfg.secrets_env = Some("S".into());
    let sink = WebhookSink::with_env(cfg, &|k| (k == "S").then(|| SECRET.to_string())).unwrap();
    let d = format!("{sink:?}");
    for s in ["hunter2", "tok123", "key-abc", "MfKQ9r8", SECRET] {
        assert!(!d.contains(s), "{d}");
    }
}

#[test]
fn secret_sources_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = WebhookConfig::for_url("https://x.example/h");
    // Default env var.
    let s = load_signer(&cfg, &|k| {
        (k == DEFAULT_SECRETS_ENV).then(|| format!("{SECRET} {SECRET}"))
    })
    .unwrap();
    assert_eq!(s.macs.len(), 2);
    // systemd credential wins over the default env var.
    std::fs::write(
        dir.path().join(CREDENTIAL_NAME),
        format!("# rotated\n{SECRET}\n"),
    )
    .unwrap();
    let d = dir.path().to_string_lossy().to_string();
    let env = |k: &str| match k {
        "CREDENTIALS_DIRECTORY" => Some(d.clone()),
        DEFAULT_SECRETS_ENV => Some("whsec_!!!".into()),
        _ => None,
    };
    assert_eq!(load_signer(&cfg, &env).unwrap().macs.len(), 1);
    // Malformed: names the source, never shows the secret.
    let bad = "whsec_not*base64*secretvalue";
    cfg.secrets_env = Some("MY_SECRET".into());
    let e = load_signer(&cfg, &|k| (k == "MY_SECRET").then(|| bad.to_string()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("MY_SECRET") && e.contains("base64"), "{e}");
    assert!(!e.contains("secretvalue"), "{e}");
    let e = load_signer(&cfg, &|k| {
        (k == "MY_SECRET").then(|| "plainpassword".to_string())
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("whsec_") && !e.contains("plainpassword"), "{e}");
    let e = load_signer(&cfg, &|_| None).unwrap_err().to_string();
    assert!(e.contains("MY_SECRET"), "{e}");
    // File, with the path in the message.
    cfg.secrets_env = None;
    let f = dir.path().join("secret");
    std::fs::write(&f, "whsec_????\n").unwrap();
    cfg.secret_file = Some(f.clone());
    let e = load_signer(&cfg, &|_| None).unwrap_err().to_string();
    assert!(
        e.contains(&f.display().to_string()) && !e.contains("????"),
        "{e}"
    );
    std::fs::write(&f, "\n").unwrap();
    let e = load_signer(&cfg, &|_| None).unwrap_err().to_string();
    assert!(e.contains("no secret"), "{e}");
}

#[test]
fn signature_matches_standard_webhooks_example() {
    // The example from the Standard Webhooks reference libraries.
    let s = parse_secrets(
        &SecretSource::Env("T".into()),
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"].into_iter(),
    )
    .unwrap();
    let sig = s.sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

#[test]
fn retry_after_forms() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
        Some(Duration::from_secs(0))
    );
    assert_eq!(
        parse_retry_after(
            "Sun, 06 Nov 1994 08:49:37 GMT",
            now - Duration::from_secs(30)
        ),
        Some(Duration::from_secs(30))
    );
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
}

// The daemon spawns the worker on a multi-thread runtime.
#[allow(dead_code)]
fn send_future_is_send(s: &mut WebhookSink, b: &[Envelope]) {
    fn is_send<T: Send>(_: T) {}
    is_send(s.send(b));
    is_send(s.check());
}

#[test]
fn shown_url_hides_credentials() {
    assert_eq!(
        shown_url_str("https://u:p@h.example:8443/a/b?token=x"),
        "https://h.example:8443/a/b?…"
    );
}
