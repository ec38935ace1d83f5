//! Keeping the broker password out of what is shown: URLs masked for
//! messages, any text that may reach a log redacted, and SASL PLAIN
//! credentials held apart from the URI (which libraries may print).

use std::fmt;

use lapin::auth::AuthProvider;
use lapin::types::{LongString, ShortString};

/// The URL with any password replaced by `****`; unparsable URLs are not
/// echoed at all (they may hold a password we cannot locate).
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("****"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable url>".into(),
    }
}

/// Replaces known secrets in any text that may reach a log or an error:
/// lapin's and the broker's messages are not ours to trust.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub(super) fn new(passwords: &[&str]) -> Redactor {
        let mut secrets = Vec::new();
        for password in passwords.iter().filter(|p| !p.is_empty()) {
            secrets.push(password.to_string());
            let encoded: String = url::form_urlencoded::byte_serialize(password.as_bytes())
                .collect::<String>()
                .replace('+', "%20");
            if encoded != *password {
                secrets.push(encoded);
            }
        }
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "****");
            }
        }
        out
    }
}

/// SASL PLAIN with credentials held apart from the URI.
#[derive(Clone)]
pub struct PlainAuth {
    pub(super) user: String,
    pub(super) password: String,
}

impl fmt::Debug for PlainAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl AuthProvider for PlainAuth {
    fn mechanism(&self) -> ShortString {
        "PLAIN".into()
    }

    fn auth_starter(&self) -> Result<LongString, String> {
        Ok(format!("\0{}\0{}", self.user, self.password).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::amqp::AmqpConfig;

    #[test]
    fn url_password_is_masked() {
        let m = mask_url("amqp://bob:s3cr%2Ft@host:5672/%2f");
        assert!(!m.contains("s3cr"), "{m}");
        assert!(m.contains("bob:****@host"), "{m}");
        assert_eq!(mask_url("not a url s3cret"), "<unparsable url>");
        let dbg = format!("{:?}", AmqpConfig::new("amqp://bob:hunter22@h/%2f", "x"));
        assert!(!dbg.contains("hunter22"), "{dbg}");
    }

    #[test]
    fn redactor_masks_plain_and_encoded() {
        let r = Redactor::new(&["p@ss/word"]);
        assert_eq!(r.redact("a p@ss/word b"), "a **** b");
        assert_eq!(r.redact("a p%40ss%2Fword b"), "a **** b");
        assert_eq!(Redactor::new(&[""]).redact("x"), "x");
    }
}
