//! `[http] token_file`: `/`, `/status` and `/metrics` answer only a request
//! carrying `Authorization: Bearer <token>`; `/healthz` stays open (systemd,
//! load balancers and probes must not need a secret).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::HttpState;

/// The token: the file's content without surrounding whitespace (a
/// trailing newline from `echo` is not part of it). An empty or unreadable
/// file is an error, never "no token".
pub fn read_token(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("[http] token_file {}: cannot read it: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "[http] token_file {}: the file is empty",
            path.display()
        ));
    }
    Ok(token.as_bytes().to_vec())
}

/// Whether `header_value` is `Bearer <token>`, compared in constant time
/// (the length of the token is not secret; its bytes are).
pub fn authorized(header_value: Option<&[u8]>, token: &[u8]) -> bool {
    let Some(v) = header_value else {
        return false;
    };
    let Some(given) = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))
    else {
        return false;
    };
    let given = given.trim_ascii();
    given.len() == token.len() && bool::from(given.ct_eq(token))
}

pub async fn require_token(
    State(state): State<Arc<HttpState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if authorized(given, token) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"chargetail\"")],
        "a bearer token is needed (Authorization: Bearer <token from [http] token_file>)\n",
    )
        .into_response()
}

/// Whether `listen` is reachable only from this machine.
pub fn is_loopback(listen: &str) -> bool {
    listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let t = b"s3cret-token";
        assert!(authorized(Some(b"Bearer s3cret-token"), t));
        assert!(!authorized(None, t));
        assert!(!authorized(Some(b"Bearer s3cret-tokem"), t));
        assert!(!authorized(Some(b"Bearer s3cret"), t));
        assert!(!authorized(Some(b"Basic s3cret-token"), t));
        assert!(!authorized(Some(b"s3cret-token"), t));
    }

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1:9464"));
        assert!(is_loopback("[::1]:9464"));
        assert!(!is_loopback("0.0.0.0:9464"));
        assert!(!is_loopback("192.168.1.5:9464"));
    }
}
