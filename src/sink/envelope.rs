//! The envelope a charge travels in from the outbox to a sink, and the
//! CloudEvents attributes a sink may need beside the body.

use std::borrow::Cow;
use std::sync::OnceLock;

use serde::Deserialize;

/// One charge taken from the outbox for delivery.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Outbox order (file order within a file).
    pub seq: i64,
    /// The charge id (message id, webhook id).
    pub id: String,
    /// The exact CloudEvents JSON bytes, identical on every attempt.
    pub payload: Vec<u8>,
    /// For routing-key templates.
    pub job_type: String,
    pub account_type: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The message's attributes, read from `payload` the first time a sink
    /// asks (see [`Envelope::attrs`]) and kept: a sink that publishes the
    /// envelope again, or carries it across calls, does not parse the JSON
    /// again. Empty when made; `Default::default()` at construction.
    pub attrs: OnceLock<MessageAttrs>,
}

impl Envelope {
    pub fn new(
        seq: i64,
        id: String,
        payload: Vec<u8>,
        job_type: String,
        account_type: String,
        attempts: u32,
    ) -> Envelope {
        Envelope {
            seq,
            id,
            payload,
            job_type,
            account_type,
            attempts,
            attrs: OnceLock::new(),
        }
    }

    /// The CloudEvents attributes of the message, parsed once per envelope.
    /// They come from the bytes alone, so every attempt of a charge (a new
    /// envelope read back from the outbox) gets the same ones.
    pub fn attrs(&self) -> &MessageAttrs {
        self.attrs.get_or_init(|| MessageAttrs::of(&self.payload))
    }
}

/// The CloudEvents context attributes of a message (the strings as in the
/// body; a missing or non-string attribute is `None`), and `time` in
/// seconds since the epoch when it is an RFC 3339 time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageAttrs {
    pub specversion: Option<String>,
    pub id: Option<String>,
    pub source: Option<String>,
    pub ty: Option<String>,
    pub subject: Option<String>,
    pub time: Option<String>,
    pub unix_time: Option<u64>,
}

impl MessageAttrs {
    /// Read from the message bytes (the `data` member skipped, not
    /// decoded). Bytes that are not a JSON object give no attributes.
    pub fn of(payload: &[u8]) -> MessageAttrs {
        let ce: CeAttrs = serde_json::from_slice(payload).unwrap_or_default();
        let own = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned);
        let unix_time = ce
            .time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| u64::try_from(t.timestamp()).ok());
        MessageAttrs {
            specversion: own(ce.specversion),
            id: own(ce.id),
            source: own(ce.source),
            ty: own(ce.ty),
            subject: own(ce.subject),
            time: own(ce.time),
            unix_time,
        }
    }

    /// The source name of a chargetail message (`papercut/NAME`).
    pub fn source_name(&self) -> Option<&str> {
        self.source.as_deref()?.strip_prefix("papercut/")
    }
}

/// The attributes borrowed from the message bytes while parsing (no copy of
/// the JSON, `data` skipped).
#[derive(Deserialize, Default)]
struct CeAttrs<'a> {
    #[serde(borrow, default, deserialize_with = "text")]
    specversion: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type", default, deserialize_with = "text")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    time: Option<Cow<'a, str>>,
}

/// A string attribute, or `None` for any other JSON value.
fn text<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text<'a> {
        S(#[serde(borrow)] Cow<'a, str>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Text::deserialize(d)? {
        Text::S(s) => Some(s),
        Text::Other(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_once_and_kept() {
        let payload = br#"{"specversion":"1.0","id":"chg_1","source":"papercut/pc\"1","type":"papercut.charge","subject":7,"time":"2026-11-20T09:14:03+11:00","data":{"source":"no"}}"#;
        let e = Envelope::new(
            1,
            "chg_1".into(),
            payload.to_vec(),
            "print".into(),
            "shared".into(),
            0,
        );
        assert!(e.attrs.get().is_none(), "nothing parsed until asked");
        let a = e.attrs();
        assert_eq!(a.id.as_deref(), Some("chg_1"));
        assert_eq!(a.source_name(), Some("pc\"1"));
        assert_eq!(a.subject, None, "a non-string attribute is left out");
        assert_eq!(a.unix_time, Some(1_795_126_443));
        assert!(e.attrs.get().is_some());
        let copy = e.clone();
        assert_eq!(copy.attrs.get(), Some(a), "a clone keeps them");
        assert_eq!(MessageAttrs::of(b"not json"), MessageAttrs::default());
    }
}
