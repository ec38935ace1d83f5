//! The message properties and `cloudEvents_*` headers of a charge.

use std::borrow::Cow;

use super::*;

/// The CloudEvents attributes copied into `cloudEvents_*` headers,
/// borrowed from the message bytes (no copy of the JSON, `data` skipped);
/// a non-string attribute is left out.
#[derive(Deserialize, Default)]
pub(super) struct CeAttrs<'a> {
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) specversion: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) source: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type", default, deserialize_with = "text")]
    pub(super) ty: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) subject: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) time: Option<Cow<'a, str>>,
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

pub(super) fn as_text<'b>(v: &'b Option<Cow<'_, str>>) -> Option<&'b str> {
    v.as_deref()
}

impl AmqpSink {
    pub(super) fn properties(&self, e: &Envelope) -> BasicProperties {
        let ce: CeAttrs = serde_json::from_slice(&e.payload).unwrap_or_default();
        let mut headers = FieldTable::default();
        let id = as_text(&ce.id).unwrap_or(&e.id);
        for (k, v) in [
            ("cloudEvents_specversion", as_text(&ce.specversion)),
            ("cloudEvents_id", Some(id)),
            ("cloudEvents_source", as_text(&ce.source)),
            ("cloudEvents_type", as_text(&ce.ty)),
            ("cloudEvents_subject", as_text(&ce.subject)),
            ("cloudEvents_time", as_text(&ce.time)),
        ] {
            if let Some(v) = v {
                headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
            }
        }
        // The charge's own time, so every attempt carries identical
        // properties; publish time only when the event has none.
        let ts = as_text(&ce.time)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| u64::try_from(t.timestamp()).ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            });
        BasicProperties::default()
            .with_message_id(e.id.as_str().into())
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_timestamp(ts)
            .with_app_id(APP_ID.into())
            .with_headers(headers)
    }
}
