//! The XML-RPC client of PaperCut's Web Services API: dxr renders and
//! parses the XML, reqwest carries it. Every call's first argument is the
//! auth token, which never appears in a log line or an error.

use std::time::Duration;

use dxr::{MethodCall, TryFromValue, TryToValue};

use super::{EnrichError, PapercutConfig};

/// The environment variable that holds the token (wins over `token_file`).
pub const TOKEN_ENV: &str = "CHARGETAIL_PAPERCUT_TOKEN";

/// The auth token; its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// From `CHARGETAIL_PAPERCUT_TOKEN`, else the token file.
    pub fn load(cfg: &PapercutConfig) -> Result<Token, EnrichError> {
        if let Ok(t) = std::env::var(TOKEN_ENV) {
            let t = t.trim().to_string();
            if !t.is_empty() {
                return Ok(Token(t));
            }
        }
        let Some(p) = &cfg.token_file else {
            return Err(EnrichError::Token(format!(
                "no token_file and {TOKEN_ENV} is empty"
            )));
        };
        let t = std::fs::read_to_string(p)
            .map_err(|e| EnrichError::Token(format!("cannot read {}: {e}", p.display())))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            return Err(EnrichError::Token(format!("{} is empty", p.display())));
        }
        Ok(Token(t))
    }
}

/// What a call to PaperCut gave, short of an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// An XML-RPC fault: PaperCut answered, and said no.
    #[error("PaperCut fault {code}: {message}")]
    Fault { code: i32, message: String },
    /// No answer: refused, reset, timed out, not HTTP 200.
    #[error("PaperCut unreachable: {0}")]
    Network(String),
    /// An answer that is not the XML-RPC expected.
    #[error("PaperCut answer not understood: {0}")]
    Protocol(String),
}

impl CallError {
    /// A fault about the user or account asked for (not the token).
    pub fn is_unknown(&self) -> bool {
        match self {
            CallError::Fault { message, .. } => {
                let m = message.to_ascii_lowercase();
                !is_auth(&m)
                    && (m.contains("not exist")
                        || m.contains("unknown user")
                        || m.contains("no such")
                        || m.contains("not found"))
            }
            _ => false,
        }
    }

    /// A fault refusing the token (or the calling address).
    pub fn is_auth(&self) -> bool {
        match self {
            CallError::Fault { message, .. } => is_auth(&message.to_ascii_lowercase()),
            _ => false,
        }
    }
}

fn is_auth(m: &str) -> bool {
    m.contains("auth") || m.contains("token") || m.contains("permission")
}

/// An XML-RPC client of PaperCut's Web Services API (dxr for the XML,
/// reqwest for HTTP).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    token: Token,
}

impl Client {
    pub fn new(cfg: &PapercutConfig, token: Token) -> Result<Client, EnrichError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms))
            .user_agent(concat!("chargetail/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EnrichError::Setup(e.to_string()))?;
        Ok(Client {
            http,
            url: cfg.url.clone(),
            token,
        })
    }

    async fn call(&self, method: &str, args: Vec<dxr::Value>) -> Result<dxr::Value, CallError> {
        let mut params = vec![dxr::Value::String(self.token.0.clone())];
        params.extend(args);
        let call = MethodCall {
            name: method.into(),
            params,
        };
        let body = dxr_client::utils::request_to_body(&call)
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let resp = self
            .http
            .post(&self.url)
            .header("Content-Type", "text/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::Network(net_reason(&e)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CallError::Network(net_reason(&e)))?;
        if !status.is_success() {
            return Err(CallError::Network(format!("HTTP {status}")));
        }
        match dxr_client::utils::response_to_result(&text) {
            Ok(Ok(r)) => Ok(r.value),
            Ok(Err(f)) => Err(CallError::Fault {
                code: f.fault.code(),
                message: f.fault.string().to_string(),
            }),
            Err(e) => Err(CallError::Protocol(shorten(&e.to_string()))),
        }
    }

    /// `api.getUserProperties(token, user, [props])`: the values in order.
    pub async fn user_properties(
        &self,
        user: &str,
        props: &[String],
    ) -> Result<Vec<String>, CallError> {
        self.properties("api.getUserProperties", user, props).await
    }

    /// `api.getSharedAccountProperties(token, account, [props])`.
    pub async fn shared_account_properties(
        &self,
        account: &str,
        props: &[String],
    ) -> Result<Vec<String>, CallError> {
        self.properties("api.getSharedAccountProperties", account, props)
            .await
    }

    /// One property call (`method(token, name, [props])`): one value per
    /// property asked, in order.
    async fn properties(
        &self,
        method: &str,
        name: &str,
        props: &[String],
    ) -> Result<Vec<String>, CallError> {
        let names = props
            .to_vec()
            .try_to_value()
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let v = self
            .call(method, vec![dxr::Value::String(name.into()), names])
            .await?;
        let values =
            Vec::<String>::try_from_value(&v).map_err(|e| CallError::Protocol(e.to_string()))?;
        if values.len() != props.len() {
            return Err(CallError::Protocol(format!(
                "{} values for {} properties",
                values.len(),
                props.len()
            )));
        }
        Ok(values)
    }

    /// `api.isUserExists(token, user)`: what `chargetail check` asks.
    pub async fn user_exists(&self, user: &str) -> Result<bool, CallError> {
        let v = self
            .call("api.isUserExists", vec![dxr::Value::String(user.into())])
            .await?;
        bool::try_from_value(&v).map_err(|e| CallError::Protocol(e.to_string()))
    }
}

fn net_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        // reqwest's message names the URL, never the body (the token).
        shorten(&e.to_string())
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(200).collect()
}

/// `chargetail check`: does PaperCut accept the token? Asks
/// `api.isUserExists` for a user name; any answer that is not a fault
/// means the token works.
pub fn check(cfg: &PapercutConfig) -> Result<(), String> {
    let token = Token::load(cfg).map_err(|e| e.to_string())?;
    let client = Client::new(cfg, token).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match rt.block_on(client.user_exists("chargetail-check")) {
        Ok(_) => Ok(()),
        Err(e) if e.is_auth() => Err(format!("{} refused the token: {e}", cfg.url)),
        Err(e) => Err(format!("{}: {e}", cfg.url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_never_shown() {
        assert!(!format!("{:?}", Token("s3cret".into())).contains("s3cret"));
    }

    #[test]
    fn faults_are_told_apart() {
        let f = |m: &str| CallError::Fault {
            code: 1,
            message: m.into(),
        };
        assert!(f("User does not exist: bob").is_unknown());
        assert!(!f("User does not exist: bob").is_auth());
        assert!(f("Invalid authentication token").is_auth());
        assert!(!f("Invalid authentication token").is_unknown());
        assert!(!CallError::Network("x".into()).is_unknown());
    }
}
