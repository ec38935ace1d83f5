//! Test support for the webhook sink: a real HTTP(S) receiver on loopback
//! whose answers a test scripts, and an independent Standard Webhooks
//! verifier written from the spec (it shares no code with the sender).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use chargetail::sink::Envelope;

// Also loaded by tests/support (a test using both compiles it twice).
#[allow(clippy::duplicate_mod)]
#[path = "../support/schema.rs"]
pub mod schema;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// 0-based order of arrival.
    pub n: usize,
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    pub wall: SystemTime,
    /// What the receiver did (filled in once decided).
    pub reply: Reply,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn id(&self) -> &str {
        self.header("webhook-id").unwrap_or("")
    }
}

/// What the receiver does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Wait, then answer: past the client's timeout, the client is gone.
    Slow {
        delay: Duration,
        status: u16,
    },
    /// Close the connection without an answer.
    Drop,
    Pending,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Answer {
            status,
            headers: vec![],
            body: String::new(),
        }
    }
    pub fn with_header(status: u16, name: &str, value: &str) -> Reply {
        Reply::Answer {
            status,
            headers: vec![(name.into(), value.into())],
            body: String::new(),
        }
    }
    pub fn code(&self) -> u16 {
        match self {
            Reply::Answer { status, .. } | Reply::Slow { status, .. } => *status,
            Reply::Drop | Reply::Pending => 0,
        }
    }
}

type Decide = dyn Fn(&Hit) -> Reply + Send + Sync;

pub struct Server {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    /// Bodies that do not validate against docs/charge.schema.json.
    invalid: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        if !std::thread::panicking() {
            self.assert_valid();
        }
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
    pub fn hits(&self) -> Vec<Hit> {
        self.assert_valid();
        self.hits.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.assert_valid();
        self.hits.lock().unwrap().len()
    }
    /// Every message received so far validated against the schema.
    pub fn assert_valid(&self) {
        let invalid = self.invalid.lock().unwrap();
        assert!(invalid.is_empty(), "{}", invalid.join("\n"));
    }
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

/// A plain-HTTP receiver answering as `decide` says.
pub async fn serve(decide: impl Fn(&Hit) -> Reply + Send + Sync + 'static) -> Server {
    serve_with(Arc::new(decide), None).await
}

pub async fn serve_tls(
    decide: impl Fn(&Hit) -> Reply + Send + Sync + 'static,
    tls: tokio_rustls::TlsAcceptor,
) -> Server {
    serve_with(Arc::new(decide), Some(tls)).await
}

async fn serve_with(decide: Arc<Decide>, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
    let in_flight: Arc<AtomicUsize> = Arc::default();
    let max_in_flight: Arc<AtomicUsize> = Arc::default();
    let invalid: Arc<Mutex<Vec<String>>> = Arc::default();
    let ctx = Ctx {
        decide,
        hits: hits.clone(),
        in_flight: in_flight.clone(),
        max_in_flight: max_in_flight.clone(),
        invalid: invalid.clone(),
    };
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let ctx = ctx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        // A refused handshake (unknown CA on the client) is
                        // expected in some tests.
                        if let Ok(s) = acceptor.accept(tcp).await {
                            serve_conn(s, ctx).await;
                        }
                    }
                    None => serve_conn(tcp, ctx).await,
                }
            });
        }
    });
    Server {
        addr,
        hits,
        in_flight,
        max_in_flight,
        invalid,
        task,
    }
}

#[derive(Clone)]
struct Ctx {
    decide: Arc<Decide>,
    hits: Arc<Mutex<Vec<Hit>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    invalid: Arc<Mutex<Vec<String>>>,
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S, ctx: Ctx) {
    let svc = service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        async move { handle(req, ctx).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

async fn handle(req: Request<Incoming>, ctx: Ctx) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let now_in = ctx.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    ctx.max_in_flight.fetch_max(now_in, Ordering::SeqCst);
    let res = answer(req, &ctx).await;
    ctx.in_flight.fetch_sub(1, Ordering::SeqCst);
    res
}

async fn answer(
    req: Request<Incoming>,
    ctx: &Ctx,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    // Arrival, before the schema check below (latency benchmarks read it).
    let (at, wall) = (Instant::now(), SystemTime::now());
    if parts.method == hyper::Method::POST && !body.is_empty() {
        let problems = schema::problems(&body);
        if !problems.is_empty() {
            ctx.invalid.lock().unwrap().push(format!(
                "a webhook body does not validate against docs/charge.schema.json:\n  {}\nbody: {}",
                problems.join("\n  "),
                String::from_utf8_lossy(&body)
            ));
        }
    }
    let mut hit = Hit {
        n: 0,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
        at,
        wall,
        reply: Reply::Pending,
    };
    // Decide and record under one lock, so `n` is the order of arrival.
    let reply = {
        let mut hits = ctx.hits.lock().unwrap();
        hit.n = hits.len();
        let reply = (ctx.decide)(&hit);
        hit.reply = reply.clone();
        hits.push(hit);
        reply
    };
    match reply {
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(k, v);
            }
            Ok(b.body(Full::new(Bytes::from(body))).unwrap())
        }
        Reply::Slow { delay, status } => {
            tokio::time::sleep(delay).await;
            Ok(Response::builder()
                .status(status)
                .body(Full::new(Bytes::new()))
                .unwrap())
        }
        // An error from the service makes hyper close the connection
        // without writing an answer.
        Reply::Drop | Reply::Pending => Err(std::io::Error::other("dropped on purpose")),
    }
}

// ---------------------------------------------------------------------------
// Independent Standard Webhooks verification, from the spec:
// signed content = `{webhook-id}.{webhook-timestamp}.{body}`; signature
// header = space-delimited `v1,<base64 HMAC-SHA256>`; key = base64 decoding
// of the secret after `whsec_`; timestamps more than 5 minutes off refused.

pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("missing header {n}"))
    };
    let id = get("webhook-id")?;
    let ts = get("webhook-timestamp")?;
    let sigs = get("webhook-signature")?;
    let ts_num: i64 = ts.parse().map_err(|_| format!("bad timestamp {ts:?}"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - ts_num).abs() > 300 {
        return Err(format!("timestamp {ts_num} too far from now {now}"));
    }
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("secret without whsec_")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| e.to_string())?;
    for entry in sigs.split(' ') {
        let Some((version, sig)) = entry.split_once(',') else {
            continue;
        };
        if version != "v1" {
            continue;
        }
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(sig) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&raw).is_ok() {
            return Ok(());
        }
    }
    Err("no v1 signature matches".into())
}

/// A fresh `whsec_` secret of 32 random bytes.
pub fn new_secret() -> String {
    let key: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// A CloudEvents-shaped charge, as the outbox would hold it.
pub fn envelope(seq: i64) -> Envelope {
    // A well-formed charge id (the schema checks every body received).
    let id = format!("chg_{:016x}{:016x}", 0x7e57u64, seq as u64);
    let payload = format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"papercut/pc-test","type":"papercut.charge","subject":"Acme Design","time":"2026-11-20T09:14:03+11:00","datacontenttype":"application/json","data":{{"user":"alice","account":"Acme Design","account_type":"shared","amount":"1.20","status":"charged","currency":"AUD","job_type":"print","pages":12,"color_pages":2,"copies":1,"duplex":true,"device":"floor2-mfd","document":"Q3 board pack.pdf","transaction_id":"tx-{seq}","origin":{{"file":"/var/log/papercut/tx.log","offset":{},"line":{}}}}}}}"#,
        seq * 300,
        seq + 1
    );
    Envelope {
        seq,
        id,
        payload: payload.into_bytes(),
        job_type: "print".into(),
        account_type: "shared".into(),
        attempts: 0,
        attrs: Default::default(),
    }
}

/// Write secrets (one per line) to a file in `dir`.
pub fn secret_file(dir: &std::path::Path, secrets: &[&str]) -> std::path::PathBuf {
    let p = dir.join("webhook-secret");
    std::fs::write(&p, secrets.join("\n") + "\n").unwrap();
    p
}
