//! HTTPS: a CA made by the test signs the receiver's certificate. Trusted
//! with `ca_file`, refused without (certificate verification is on).

mod webhook_support;

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use chargetail::sink::webhook::{WebhookConfig, WebhookSink};
use chargetail::sink::{Outcome, Sink};
use webhook_support::{envelope, new_secret, secret_file, serve_tls, verify, Reply, Server};

struct Pki {
    ca_pem: String,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "chargetail test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
    Pki {
        ca_pem: ca.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

fn config(server: &Server, dir: &std::path::Path, secret: &str) -> WebhookConfig {
    let mut cfg = WebhookConfig::for_url(&server.https_url("/hook"));
    cfg.secret_file = Some(secret_file(dir, &[secret]));
    cfg.connect_timeout_ms = 2000;
    cfg.timeout_ms = 3000;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_trusted_with_ca_file() {
    let pki = pki();
    let server = serve_tls(|_| Reply::status(200), pki.acceptor.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = new_secret();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let mut cfg = config(&server, dir.path(), &secret);
    cfg.ca_file = Some(ca);
    let mut sink = WebhookSink::new(cfg).unwrap();

    let msg = sink.check().await.unwrap();
    assert!(msg.contains("reachable"), "{msg}");
    let batch: Vec<_> = (1..=3).map(envelope).collect();
    assert_eq!(sink.send(&batch).await, vec![Outcome::Delivered; 3]);
    let hits = server.hits();
    assert_eq!(hits.len(), 4);
    for h in hits.iter().filter(|h| h.method == "POST") {
        verify(&secret, &h.headers, &h.body).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_refused_without_ca_file() {
    let pki = pki();
    let server = serve_tls(|_| Reply::status(200), pki.acceptor.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sink = WebhookSink::new(config(&server, dir.path(), &new_secret())).unwrap();

    let out = sink.send(&[envelope(1), envelope(2)]).await;
    let Outcome::Retry { error, .. } = &out[0] else {
        panic!("an untrusted certificate must not deliver: {out:?}");
    };
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(out[1], Outcome::NotSent, "held back, not attempted");
    assert_eq!(server.count(), 0, "nothing reached the receiver");
    let e = sink.check().await.unwrap_err().to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    assert!(!sink.health().connected);
}

#[test]
fn unreadable_or_empty_ca_file_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = WebhookConfig::for_url("https://127.0.0.1:1/hook");
    cfg.secret_file = Some(secret_file(dir.path(), &[&new_secret()]));
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    cfg.ca_file = Some(ca.clone());
    let e = WebhookSink::new(cfg.clone()).unwrap_err().to_string();
    assert!(
        e.contains("ca_file") && e.contains(&ca.display().to_string()),
        "{e}"
    );
    cfg.ca_file = Some(dir.path().join("missing.pem"));
    let e = WebhookSink::new(cfg).unwrap_err().to_string();
    assert!(e.contains("missing.pem"), "{e}");
}
