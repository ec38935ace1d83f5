//! Signing secrets (`whsec_…`) and extra headers: where they are read from,
//! how they are decoded, and the signer that uses them. Never logged.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use super::*;

/// Where the signing secrets came from, for messages.
#[derive(Debug, Clone)]
pub(super) enum SecretSource {
    File(PathBuf),
    Credential(PathBuf),
    Env(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "[sink.webhook] secret_file {}", p.display()),
            SecretSource::Credential(p) => write!(f, "systemd credential {}", p.display()),
            SecretSource::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// The HMAC keys of the active secrets, keyed once and cloned per message.
#[derive(Clone)]
pub(super) struct Signer {
    pub(super) macs: Vec<Hmac<Sha256>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} secret(s), redacted)", self.macs.len())
    }
}

impl Signer {
    /// `v1,<sig>` entries, space-separated, over `id.timestamp.body`.
    pub(super) fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let ts = timestamp.to_string();
        let mut out = String::new();
        for mac in &self.macs {
            let mut m = mac.clone();
            m.update(id.as_bytes());
            m.update(b".");
            m.update(ts.as_bytes());
            m.update(b".");
            m.update(body);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            base64::engine::general_purpose::STANDARD
                .encode_string(m.finalize().into_bytes(), &mut out);
        }
        out
    }
}

/// Decode `whsec_<base64>` secrets. Messages name the source and the
/// secret's position, never its content.
pub(super) fn parse_secrets<'a>(
    source: &SecretSource,
    secrets: impl Iterator<Item = &'a str>,
) -> Result<Signer, WebhookError> {
    // Padding is optional in the wild; accept both.
    let b64 = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let mut macs = Vec::new();
    for (i, s) in secrets.enumerate() {
        let bad = |problem: String| WebhookError::BadSecret {
            what: source.to_string(),
            problem: format!("secret {}: {problem}", i + 1),
        };
        let Some(b) = s.strip_prefix("whsec_") else {
            return Err(bad(
                "does not start with whsec_ (expected whsec_<base64>)".into()
            ));
        };
        let key = b64
            .decode(b)
            .map_err(|_| bad("the part after whsec_ is not valid base64".into()))?;
        if key.is_empty() {
            return Err(bad("the key after whsec_ is empty".into()));
        }
        if !(24..=64).contains(&key.len()) {
            tracing::warn!(
                source = %source,
                secret = i + 1,
                bytes = key.len(),
                "webhook secret length is outside the 24-64 bytes Standard Webhooks recommends"
            );
        }
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|_| bad("unusable as an HMAC key".into()))?;
        macs.push(mac);
    }
    if macs.is_empty() {
        return Err(WebhookError::BadSecret {
            what: source.to_string(),
            problem: "no secret found (expected whsec_<base64>)".into(),
        });
    }
    Ok(Signer { macs })
}

pub(super) fn secrets_from_file(
    source: &SecretSource,
    path: &Path,
) -> Result<Signer, WebhookError> {
    let text = std::fs::read_to_string(path).map_err(|e| WebhookError::Read {
        what: source.to_string(),
        source: e,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = std::fs::metadata(path) {
            if md.permissions().mode() & 0o004 != 0 {
                tracing::warn!(file = %path.display(), "webhook secret file is readable by everyone");
            }
        }
    }
    // One secret per line; blank lines and # comments allowed.
    parse_secrets(
        source,
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#')),
    )
}

/// Pick the secrets' source: `secret_file`, else an explicit `secrets_env`,
/// else the systemd credential, else `CHARGETAIL_WEBHOOK_SECRET`.
pub(super) fn load_signer(
    cfg: &WebhookConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Signer, WebhookError> {
    if let Some(p) = &cfg.secret_file {
        return secrets_from_file(&SecretSource::File(p.clone()), p);
    }
    if cfg.secrets_env.is_none() {
        if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
            let p = Path::new(&dir).join(CREDENTIAL_NAME);
            if p.exists() {
                return secrets_from_file(&SecretSource::Credential(p.clone()), &p);
            }
        }
    }
    let var = cfg.secrets_env.as_deref().unwrap_or(DEFAULT_SECRETS_ENV);
    let source = SecretSource::Env(var.into());
    match env(var) {
        Some(v) => parse_secrets(&source, v.split_whitespace()),
        None => Err(WebhookError::BadSecret {
            what: "[sink.webhook]".into(),
            problem: format!(
                "no signing secret: set secret_file, or the environment variable {var}, \
                 or a systemd credential named {CREDENTIAL_NAME}"
            ),
        }),
    }
}

pub(super) fn load_headers(
    cfg: &WebhookConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HeaderMap, WebhookError> {
    let mut map = HeaderMap::new();
    for (name, setting) in &cfg.headers {
        let hn = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            WebhookError::Config(format!(
                "[sink.webhook.headers] {name:?} is not a valid header name"
            ))
        })?;
        let (raw, from) = match setting {
            HeaderSetting::Value(v) => (v.clone(), "the config".to_string()),
            HeaderSetting::From(HeaderFrom { env: Some(var), .. }) => (
                env(var).ok_or_else(|| {
                    WebhookError::Config(format!(
                        "[sink.webhook.headers] {name:?}: environment variable {var} is not set"
                    ))
                })?,
                format!("environment variable {var}"),
            ),
            HeaderSetting::From(HeaderFrom {
                file: Some(path), ..
            }) => (
                std::fs::read_to_string(path)
                    .map_err(|e| WebhookError::Read {
                        what: format!("[sink.webhook.headers] {name:?} file {}", path.display()),
                        source: e,
                    })?
                    .trim()
                    .to_string(),
                format!("file {}", path.display()),
            ),
            HeaderSetting::From(_) => {
                return Err(WebhookError::Config(format!(
                    "[sink.webhook.headers] {name:?}: give exactly one of env or file"
                )))
            }
        };
        let mut hv = HeaderValue::from_str(&raw).map_err(|_| {
            WebhookError::Config(format!(
                "[sink.webhook.headers] {name:?}: the value from {from} is not a valid header value"
            ))
        })?;
        // Keeps it out of reqwest's and hyper's debug output.
        hv.set_sensitive(true);
        map.insert(hn, hv);
    }
    Ok(map)
}
