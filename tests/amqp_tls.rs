//! `amqps://` against a private node whose TLS listener uses a CA made in
//! the test: trusted via `ca_file` it connects (with a client certificate,
//! which the listener demands); not trusted, it is refused.

mod support;

use std::path::Path;

use chargetail::sink::amqp::{AmqpConfig, AmqpSink, QueueType};
use chargetail::sink::{Outcome, Sink};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rcgen13 as rcgen;
use support::rabbit::{NodeOptions, RabbitNode, TlsFiles};
use support::*;

struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

fn ca(name: &str) -> Pki {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Pki {
        ca_pem: cert.pem(),
        ca: cert,
        ca_key: key,
    }
}

/// (cert PEM, key PEM) signed by `pki`.
fn leaf(pki: &Pki, names: &[&str], cn: &str) -> (String, String) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &pki.ca, &pki.ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_configured_ca_and_client_cert() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ca("chargetail test CA");
    let (srv_cert, srv_key) = leaf(&pki, &["localhost"], "localhost");
    let (cli_cert, cli_key) = leaf(&pki, &[], "chargetail");
    let ca_file = write(dir.path(), "ca.pem", &pki.ca_pem);
    let tls = TlsFiles {
        ca: ca_file.clone(),
        cert: write(dir.path(), "server.pem", &srv_cert),
        key: write(dir.path(), "server.key", &srv_key),
        require_client_cert: true,
    };
    let node = tokio::task::spawn_blocking(move || {
        RabbitNode::start(NodeOptions {
            tls: Some(tls),
            ..Default::default()
        })
    })
    .await
    .unwrap()
    .expect("private rabbitmq node with TLS");
    let url = node.amqps_url().unwrap();
    let cert_file = write(dir.path(), "client.pem", &cli_cert);
    let key_file = write(dir.path(), "client.key", &cli_key);

    let ex = unique("tls");
    let q = unique("tls-q");
    let mut c = AmqpConfig::new(url.clone(), ex.clone());
    c.timeout_ms = 5_000;
    c.reconnect_initial_ms = 10;
    c.reconnect_max_ms = 20;
    c.declare_exchange = true;
    c.queue = Some(q.clone());
    c.queue_type = QueueType::Classic;
    c.ca_file = Some(ca_file.clone());
    c.client_cert_file = Some(cert_file.clone());
    c.client_key_file = Some(key_file.clone());

    // Trusted CA + client certificate: delivered over TLS.
    let mut sink = AmqpSink::new(c.clone(), "pc".into()).unwrap();
    let envs = envelopes("tls", 10);
    let out = sink.send(&envs).await;
    assert!(out.iter().all(|o| *o == Outcome::Delivered), "{out:?}");
    assert!(sink.check().await.unwrap().contains("amqps://"));
    sink.close().await;
    let got = drain(&node.amqp_url(), &q).await;
    assert_eq!(got.len(), 10);

    // CA not trusted: the server certificate is refused.
    let mut untrusted = c.clone();
    untrusted.ca_file = None;
    let mut sink = AmqpSink::new(untrusted, "pc".into()).unwrap();
    let out = sink.send(&envs[..2]).await;
    for o in &out {
        match o {
            Outcome::Retry { error, .. } => {
                eprintln!("untrusted: {error}");
                assert!(error.contains("cannot connect"), "{error}");
                assert!(
                    error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"),
                    "{error}"
                );
            }
            Outcome::NotSent => {}
            other => panic!("untrusted CA must not deliver: {other:?}"),
        }
    }
    assert!(!sink.health().connected);
    assert!(
        sink.health().alert.is_some(),
        "a TLS trust failure needs an operator"
    );
    assert!(sink.check().await.is_err());

    // A different CA configured: still refused.
    let other = ca("some other CA");
    let mut wrong = c.clone();
    wrong.ca_file = Some(write(dir.path(), "other-ca.pem", &other.ca_pem));
    let mut sink = AmqpSink::new(wrong, "pc".into()).unwrap();
    assert!(sink.check().await.is_err());

    // No client certificate: the listener demands one.
    let mut anon = c.clone();
    anon.client_cert_file = None;
    anon.client_key_file = None;
    let mut sink = AmqpSink::new(anon, "pc".into()).unwrap();
    let e = sink.check().await.unwrap_err().to_string();
    eprintln!("no client cert: {e}");
    // The broker refuses; under load it sometimes resets the connection
    // before its TLS alert (CertificateRequired) reaches us. Both refuse.
    assert!(
        e.contains("CertificateRequired") || e.contains("reset by peer"),
        "{e}"
    );

    // Name mismatch: same listener by IP, which the certificate does not name.
    let mut by_ip = c.clone();
    by_ip.url = url.replace("@localhost:", "@127.0.0.1:");
    let mut sink = AmqpSink::new(by_ip, "pc".into()).unwrap();
    let e = sink.check().await.unwrap_err().to_string();
    eprintln!("name mismatch: {e}");
    assert!(e.contains("not valid for name"), "{e}");
    drop(node);
}
